//! `meta.k8s.io/v1` Table answers for `kubectl get` (Accept `...;as=Table;v=v1;g=meta.k8s.io`).
//!
//! Columns follow the apiserver's printers (`kubernetes/pkg/printers/internalversion/printers.go`:
//! `printPod`, `printDeployment`, `printService`, `printJob`, `printNamespace`) and the CRDs'
//! `additionalPrinterColumns` (Gateway API `gateways`: Class, Address, Programmed, Age; Istio
//! `authorizationpolicies`: Action, Age). AGE uses `k8s.io/apimachinery/pkg/util/duration.HumanDuration`.

use std::borrow::Borrow;

use serde_json::{Value, json};

use crate::resources::ResourceType;

/// Whether an Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|part| part.contains("as=Table"))
}

/// `includeObject` query values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

fn col(name: &str, ty: &str, format: &str, priority: u8) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": name, "priority": priority})
}

fn columns(rt: &ResourceType) -> Vec<Value> {
    let name = col("Name", "string", "name", 0);
    let age = col("Age", "string", "", 0);
    let mut cols = vec![name];
    match (rt.group, rt.kind) {
        ("", "Pod") => cols.extend([
            col("Ready", "string", "", 0),
            col("Status", "string", "", 0),
            col("Restarts", "string", "", 0),
            age,
            col("IP", "string", "", 1),
            col("Node", "string", "", 1),
        ]),
        ("apps", "Deployment") => cols.extend([
            col("Ready", "string", "", 0),
            col("Up-to-date", "string", "", 0),
            col("Available", "string", "", 0),
            age,
        ]),
        ("gateway.networking.k8s.io", "Gateway") => cols.extend([
            col("Class", "string", "", 0),
            col("Address", "string", "", 0),
            col("Programmed", "string", "", 0),
            age,
        ]),
        ("", "Service") => cols.extend([
            col("Type", "string", "", 0),
            col("Cluster-IP", "string", "", 0),
            col("External-IP", "string", "", 0),
            col("Port(s)", "string", "", 0),
            age,
            col("Selector", "string", "", 1),
        ]),
        ("batch", "Job") => cols.extend([
            col("Status", "string", "", 0),
            col("Completions", "string", "", 0),
            col("Duration", "string", "", 0),
            age,
        ]),
        ("", "Namespace") => cols.extend([col("Status", "string", "", 0), age]),
        ("security.istio.io", "AuthorizationPolicy") => cols.extend([col("Action", "string", "", 0), age]),
        _ => cols.push(age),
    }
    cols
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn num(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn parse_ts(v: &Value) -> Option<jiff::Timestamp> {
    v.as_str().and_then(|t| t.parse().ok())
}

/// `HumanDuration` from apimachinery: `5s`, `3m20s`, `3m`, `2h5m`, `2d3h`, ...
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let secs = secs.max(0);
    let minutes = secs / 60;
    let hours = minutes / 60;
    if secs < 120 {
        format!("{secs}s")
    } else if minutes < 10 {
        let s = secs % 60;
        if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        }
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        }
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let d = (hours / 24) % 365;
        if d == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{d}d", hours / 24 / 365)
        }
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

fn age(obj: &Value) -> String {
    match parse_ts(&obj["metadata"]["creationTimestamp"]) {
        Some(t) => human_duration(jiff::Timestamp::now().as_second() - t.as_second()),
        None => "<unknown>".into(),
    }
}

/// READY, STATUS and RESTARTS of a pod as `printPod` computes them (native sidecars — init containers with
/// `restartPolicy: Always` — count as containers).
pub fn pod_summary(pod: &Value) -> (String, String, i64) {
    let spec = &pod["spec"];
    let status = &pod["status"];
    let sidecar_names: Vec<&str> = spec["initContainers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["restartPolicy"] == "Always")
                .map(|c| s(&c["name"]))
                .collect()
        })
        .unwrap_or_default();
    let containers = spec["containers"].as_array().map_or(0, Vec::len);
    let total = containers + sidecar_names.len();
    let mut ready = 0;
    let mut restarts = 0;
    let mut reason = status["phase"].as_str().unwrap_or("Pending").to_string();
    if let Some(r) = status["reason"].as_str() {
        reason = r.to_string();
    }
    let mut initializing = false;
    let init_statuses = status["initContainerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let init_total = spec["initContainers"].as_array().map_or(0, Vec::len);
    for (i, cs) in init_statuses.iter().enumerate() {
        let sidecar = sidecar_names.contains(&s(&cs["name"]));
        restarts += num(&cs["restartCount"]);
        if sidecar {
            if cs["ready"] == true {
                ready += 1;
            }
            if cs["started"] == true || cs["ready"] == true {
                continue;
            }
        }
        if cs["state"]["terminated"]["exitCode"] == 0 && cs["state"]["terminated"].is_object() {
            continue;
        }
        if let Some(r) = cs["state"]["terminated"]["reason"].as_str() {
            reason = format!("Init:{r}");
        } else if let Some(r) = cs["state"]["waiting"]["reason"]
            .as_str()
            .filter(|r| *r != "PodInitializing")
        {
            reason = format!("Init:{r}");
        } else if !sidecar {
            reason = format!("Init:{i}/{init_total}");
        } else {
            continue;
        }
        initializing = true;
        break;
    }
    if !initializing {
        let mut has_running = false;
        for cs in status["containerStatuses"].as_array().into_iter().flatten().rev() {
            restarts += num(&cs["restartCount"]);
            if let Some(r) = cs["state"]["waiting"]["reason"]
                .as_str()
                .filter(|r| !r.is_empty())
            {
                reason = r.to_string();
            } else if let Some(r) = cs["state"]["terminated"]["reason"]
                .as_str()
                .filter(|r| !r.is_empty())
            {
                reason = r.to_string();
            } else if cs["state"]["running"].is_object() && cs["ready"] == true {
                has_running = true;
                ready += 1;
            } else if cs["state"]["running"].is_object() {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            reason = "Running".into();
        }
    }
    if pod["metadata"]["deletionTimestamp"].is_string() {
        reason = "Terminating".into();
    }
    (format!("{ready}/{total}"), reason, restarts)
}

fn condition<'a>(obj: &'a Value, ty: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

fn cells(rt: &ResourceType, obj: &Value) -> Vec<Value> {
    let name = json!(s(&obj["metadata"]["name"]));
    let status = &obj["status"];
    let spec = &obj["spec"];
    match (rt.group, rt.kind) {
        ("", "Pod") => {
            let (ready, reason, restarts) = pod_summary(obj);
            let ip = status["podIP"].as_str().unwrap_or("<none>");
            let node = spec["nodeName"].as_str().unwrap_or("<none>");
            vec![
                name,
                json!(ready),
                json!(reason),
                json!(restarts.to_string()),
                json!(age(obj)),
                json!(ip),
                json!(node),
            ]
        }
        ("apps", "Deployment") => {
            let desired = spec["replicas"].as_i64().unwrap_or(1);
            vec![
                name,
                json!(format!("{}/{desired}", num(&status["readyReplicas"]))),
                json!(num(&status["updatedReplicas"]).to_string()),
                json!(num(&status["availableReplicas"]).to_string()),
                json!(age(obj)),
            ]
        }
        ("gateway.networking.k8s.io", "Gateway") => {
            let address = status["addresses"]
                .as_array()
                .and_then(|a| a.first())
                .map(|a| s(&a["value"]).to_string())
                .unwrap_or_default();
            let programmed = condition(obj, "Programmed")
                .map(|c| s(&c["status"]).to_string())
                .unwrap_or_else(|| "Unknown".into());
            vec![
                name,
                json!(s(&spec["gatewayClassName"])),
                json!(address),
                json!(programmed),
                json!(age(obj)),
            ]
        }
        ("", "Service") => {
            let ty = spec["type"].as_str().unwrap_or("ClusterIP");
            let cluster_ip = spec["clusterIP"].as_str().unwrap_or("<none>");
            let external = match ty {
                "LoadBalancer" => status["loadBalancer"]["ingress"]
                    .as_array()
                    .and_then(|a| a.first())
                    .map(|i| {
                        i["ip"]
                            .as_str()
                            .or(i["hostname"].as_str())
                            .unwrap_or("")
                            .to_string()
                    })
                    .unwrap_or_else(|| "<pending>".into()),
                "ExternalName" => s(&spec["externalName"]).to_string(),
                _ => "<none>".into(),
            };
            let ports: Vec<String> = spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let proto = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_i64() {
                        Some(np) => format!("{}:{np}/{proto}", num(&p["port"])),
                        None => format!("{}/{proto}", num(&p["port"])),
                    }
                })
                .collect();
            let ports = if ports.is_empty() {
                "<none>".to_string()
            } else {
                ports.join(",")
            };
            let selector = spec["selector"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", s(v)))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_else(|| "<none>".into());
            vec![
                name,
                json!(ty),
                json!(cluster_ip),
                json!(external),
                json!(ports),
                json!(age(obj)),
                json!(selector),
            ]
        }
        ("batch", "Job") => {
            let completions = spec["completions"].as_i64().unwrap_or(1);
            let st = if condition(obj, "Complete").is_some_and(|c| c["status"] == "True") {
                "Complete"
            } else if condition(obj, "Failed").is_some_and(|c| c["status"] == "True") {
                "Failed"
            } else if spec["suspend"] == true {
                "Suspended"
            } else {
                "Running"
            };
            let duration = match (
                parse_ts(&status["startTime"]),
                parse_ts(&status["completionTime"]),
            ) {
                (Some(a), Some(b)) => human_duration(b.as_second() - a.as_second()),
                (Some(a), None) => human_duration(jiff::Timestamp::now().as_second() - a.as_second()),
                _ => String::new(),
            };
            vec![
                name,
                json!(st),
                json!(format!("{}/{completions}", num(&status["succeeded"]))),
                json!(duration),
                json!(age(obj)),
            ]
        }
        ("", "Namespace") => {
            vec![
                name,
                json!(status["phase"].as_str().unwrap_or("Active")),
                json!(age(obj)),
            ]
        }
        ("security.istio.io", "AuthorizationPolicy") => {
            vec![
                name,
                json!(spec["action"].as_str().unwrap_or("ALLOW")),
                json!(age(obj)),
            ]
        }
        _ => vec![name, json!(age(obj))],
    }
}

fn row_object(obj: &Value, include: IncludeObject) -> Option<Value> {
    match include {
        IncludeObject::None => None,
        IncludeObject::Object => Some(obj.clone()),
        IncludeObject::Metadata => {
            let mut meta = obj["metadata"].clone();
            if let Some(m) = meta.as_object_mut() {
                m.remove("managedFields");
            }
            Some(json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}))
        }
    }
}

/// A Table of `objects` (list metadata such as resourceVersion and continue go in `list_meta`).
pub fn table<O: Borrow<Value>>(
    rt: &ResourceType,
    objects: &[O],
    list_meta: Value,
    include: IncludeObject,
) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let o = o.borrow();
            let mut row = json!({"cells": cells(rt, o)});
            if let Some(obj) = row_object(o, include) {
                row["object"] = obj;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns(rt),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(3 * 3600), "3h");
        assert_eq!(human_duration(3 * 3600 + 600), "3h10m");
        assert_eq!(human_duration(50 * 3600), "2d2h");
    }

    #[test]
    fn pod_ready_counts_native_sidecars_and_crashloop() {
        let pod = json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "app"}],
                     "initContainers": [{"name": "istio-proxy", "restartPolicy": "Always"}]},
            "status": {"phase": "Running",
                "initContainerStatuses": [{"name": "istio-proxy", "ready": true, "started": true, "restartCount": 0,
                    "state": {"running": {}}}],
                "containerStatuses": [{"name": "app", "ready": false, "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
        });
        assert_eq!(pod_summary(&pod), ("1/2".into(), "CrashLoopBackOff".into(), 3));
        let mut ok = pod.clone();
        ok["status"]["containerStatuses"][0] = json!({"name": "app", "ready": true, "restartCount": 0,
            "state": {"running": {}}});
        assert_eq!(pod_summary(&ok), ("2/2".into(), "Running".into(), 0));
        ok["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        assert_eq!(pod_summary(&ok).1, "Terminating");
    }
}
