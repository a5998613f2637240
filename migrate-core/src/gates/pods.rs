//! Per-pod data-plane checks (docs/design.md §3 step 4 and rollback gates; `docs/reference/istio-ambient-facts.md` §0.2,
//! §0.5, §3a, §3d): detect the sidecar by the name `istio-proxy` in *both* container lists (native sidecars
//! are restartable init containers; "2/2" lies), and ambient enrollment by `ambient.istio.io/redirection`
//! (never by HBONE, which sidecar pods show too). Plus the selection of a workload's *current* pods
//! (current ReplicaSet / revision, not terminating).

use super::{GateOutcome, GateResult};
use crate::steps::ObjRef;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Sidecar container name.
pub const ISTIO_PROXY: &str = "istio-proxy";
/// Annotation written by the injector.
pub const SIDECAR_STATUS: &str = "sidecar.istio.io/status";
/// Annotation written by istio-cni.
pub const REDIRECTION: &str = "ambient.istio.io/redirection";

/// The result of checking one pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodCheck {
    /// Pod name.
    pub pod: String,
    /// All conditions hold.
    pub ok: bool,
    /// What does not hold.
    pub reasons: Vec<String>,
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

fn annotation<'a>(p: &'a Pod, key: &str) -> Option<&'a str> {
    p.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

/// Pod is Ready: condition Ready=True, phase Running, not terminating.
pub fn pod_ready(p: &Pod) -> bool {
    let st = p.status.as_ref();
    let ready = st
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let running = st.and_then(|s| s.phase.as_deref()) == Some("Running");
    ready && running && !is_terminating(p)
}

/// Pod has a deletionTimestamp.
pub fn is_terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

/// Where `istio-proxy` is declared: classic container, native sidecar (init container with
/// `restartPolicy: Always`), or a plain init container (not a sidecar that serves traffic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyPlacement {
    /// In `spec.containers`.
    Classic,
    /// In `spec.initContainers` with `restartPolicy: Always`.
    Native,
    /// In `spec.initContainers` without `restartPolicy: Always`.
    PlainInit,
}

/// Where `istio-proxy` is declared, if anywhere.
pub fn proxy_placement(p: &Pod) -> Option<ProxyPlacement> {
    let spec = p.spec.as_ref()?;
    if spec.containers.iter().any(|c| c.name == ISTIO_PROXY) {
        return Some(ProxyPlacement::Classic);
    }
    let init = spec
        .init_containers
        .as_ref()?
        .iter()
        .find(|c| c.name == ISTIO_PROXY)?;
    Some(if init.restart_policy.as_deref() == Some("Always") {
        ProxyPlacement::Native
    } else {
        ProxyPlacement::PlainInit
    })
}

/// Step 4 / step 6 per-pod check: no `istio-proxy` in containers or initContainers, no
/// `sidecar.istio.io/status`, `ambient.istio.io/redirection=enabled`, Ready.
pub fn sidecar_free_and_enrolled(p: &Pod) -> PodCheck {
    let mut reasons = Vec::new();
    if let Some(pl) = proxy_placement(p) {
        reasons.push(format!("has an {ISTIO_PROXY} container ({pl:?})"));
    }
    if annotation(p, SIDECAR_STATUS).is_some() {
        reasons.push(format!("has annotation {SIDECAR_STATUS} (sidecar injected)"));
    }
    match annotation(p, REDIRECTION) {
        Some("enabled") => {}
        Some(v) => reasons.push(format!(
            "{REDIRECTION}={v}, expected enabled (not passing traffic via ztunnel)"
        )),
        None => reasons.push(format!("{REDIRECTION} absent (not enrolled in ambient)")),
    }
    if !pod_ready(p) {
        reasons.push("not Ready".into());
    }
    PodCheck {
        pod: name(p),
        ok: reasons.is_empty(),
        reasons,
    }
}

/// Rollback per-pod check: `istio-proxy` in containers, or in initContainers with `restartPolicy: Always`,
/// ready in the matching status list; pod Ready; `ambient.istio.io/redirection` absent.
pub fn sidecar_ready(p: &Pod) -> PodCheck {
    let mut reasons = Vec::new();
    let st = p.status.as_ref();
    match proxy_placement(p) {
        None => reasons.push(format!("no {ISTIO_PROXY} container (sidecar not injected)")),
        Some(ProxyPlacement::PlainInit) => reasons.push(format!(
            "{ISTIO_PROXY} is an init container without restartPolicy Always"
        )),
        Some(pl) => {
            let list = match pl {
                ProxyPlacement::Classic => st.and_then(|s| s.container_statuses.as_ref()),
                _ => st.and_then(|s| s.init_container_statuses.as_ref()),
            };
            let ready = list
                .and_then(|l| l.iter().find(|c| c.name == ISTIO_PROXY))
                .is_some_and(|c| c.ready);
            if !ready {
                reasons.push(format!("{ISTIO_PROXY} not ready"));
            }
        }
    }
    if !pod_ready(p) {
        reasons.push("not Ready".into());
    }
    if let Some(v) = annotation(p, REDIRECTION) {
        reasons.push(format!("{REDIRECTION}={v} still set"));
    }
    PodCheck {
        pod: name(p),
        ok: reasons.is_empty(),
        reasons,
    }
}

fn owned_by(
    p_refs: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>,
    kind: &str,
    name: &str,
    uid: Option<&str>,
) -> bool {
    p_refs.is_some_and(|refs| {
        refs.iter()
            .any(|r| r.kind == kind && r.name == name && uid.is_none_or(|u| r.uid.is_empty() || r.uid == u))
    })
}

const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// The Deployment's current ReplicaSet: owned by it with the Deployment's revision annotation; when the
/// annotation is missing on the Deployment, the owned ReplicaSet with the highest revision.
pub fn current_replicaset<'a>(d: &Deployment, rss: &'a [ReplicaSet]) -> Option<&'a ReplicaSet> {
    let dname = d.metadata.name.as_deref().unwrap_or("");
    let uid = d.metadata.uid.as_deref();
    let owned: Vec<&ReplicaSet> = rss
        .iter()
        .filter(|rs| owned_by(rs.metadata.owner_references.as_ref(), "Deployment", dname, uid))
        .collect();
    let rev = |rs: &ReplicaSet| -> i64 {
        rs.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION_ANNOTATION))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let want = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION_ANNOTATION))
        .and_then(|v| v.parse::<i64>().ok());
    match want {
        Some(w) => owned.into_iter().find(|rs| rev(rs) == w),
        None => owned.into_iter().max_by_key(|rs| rev(rs)),
    }
}

/// The current, non-terminating pods of a Deployment (owned by its current ReplicaSet).
pub fn deployment_pods<'a>(d: &Deployment, rss: &[ReplicaSet], pods: &'a [Pod]) -> Vec<&'a Pod> {
    let Some(rs) = current_replicaset(d, rss) else {
        return Vec::new();
    };
    let rs_name = rs.metadata.name.as_deref().unwrap_or("");
    let uid = rs.metadata.uid.as_deref();
    pods.iter()
        .filter(|p| {
            !is_terminating(p) && owned_by(p.metadata.owner_references.as_ref(), "ReplicaSet", rs_name, uid)
        })
        .collect()
}

fn label<'a>(p: &'a Pod, key: &str) -> Option<&'a str> {
    p.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// The current, non-terminating pods of a StatefulSet: owned by it with `controller-revision-hash` equal to
/// `status.updateRevision` (all owned pods when the status has no update revision).
pub fn statefulset_pods<'a>(s: &StatefulSet, pods: &'a [Pod]) -> Vec<&'a Pod> {
    let sname = s.metadata.name.as_deref().unwrap_or("");
    let uid = s.metadata.uid.as_deref();
    let rev = s.status.as_ref().and_then(|st| st.update_revision.as_deref());
    pods.iter()
        .filter(|p| {
            !is_terminating(p) && owned_by(p.metadata.owner_references.as_ref(), "StatefulSet", sname, uid)
        })
        .filter(|p| rev.is_none_or(|r| label(p, "controller-revision-hash") == Some(r)))
        .collect()
}

/// The current, non-terminating pods of a DaemonSet: owned by it with `pod-template-generation` equal to the
/// DaemonSet's generation (all owned pods when that label is absent).
pub fn daemonset_pods<'a>(d: &DaemonSet, pods: &'a [Pod]) -> Vec<&'a Pod> {
    let dname = d.metadata.name.as_deref().unwrap_or("");
    let uid = d.metadata.uid.as_deref();
    let generation = d.metadata.generation.map(|g| g.to_string());
    pods.iter()
        .filter(|p| {
            !is_terminating(p) && owned_by(p.metadata.owner_references.as_ref(), "DaemonSet", dname, uid)
        })
        .filter(|p| match (label(p, "pod-template-generation"), &generation) {
            (Some(l), Some(g)) => l == g,
            _ => true,
        })
        .collect()
}

/// Apply `check` to the workload's current pods and aggregate into a gate result named `gate`: Pass when
/// every pod passes and there are at least `min_pods` of them.
pub fn pods_gate(
    gate: &str,
    workload: &ObjRef,
    pods: &[&Pod],
    min_pods: usize,
    check: fn(&Pod) -> PodCheck,
) -> GateResult {
    let checks: Vec<PodCheck> = pods.iter().map(|p| check(p)).collect();
    let bad: Vec<&PodCheck> = checks.iter().filter(|c| !c.ok).collect();
    let measured = json!({"workload": workload.to_string(), "pods": checks, "minPods": min_pods});
    if pods.len() < min_pods {
        return GateResult::new(
            gate,
            GateOutcome::Fail,
            measured,
            format!(
                "{workload}: {} current pod(s), expected at least {min_pods}",
                pods.len()
            ),
        );
    }
    if bad.is_empty() {
        GateResult::new(
            gate,
            GateOutcome::Pass,
            measured,
            format!("{workload}: {} pod(s) ok", pods.len()),
        )
    } else {
        let msg: Vec<String> = bad
            .iter()
            .map(|c| format!("{}: {}", c.pod, c.reasons.join(", ")))
            .collect();
        GateResult::new(
            gate,
            GateOutcome::Fail,
            measured,
            format!("{workload}: {}", msg.join("; ")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }
    fn ready_status(extra: Value) -> Value {
        let mut s = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                s[k] = v;
            }
        }
        s
    }
    fn ambient_pod() -> Value {
        json!({"metadata": {"name": "api-1", "annotations": {REDIRECTION: "enabled"}},
               "spec": {"containers": [{"name": "app"}]},
               "status": ready_status(json!({}))})
    }
    fn classic_sidecar(ready: bool) -> Value {
        json!({"metadata": {"name": "api-1", "annotations": {SIDECAR_STATUS: "{}"}},
               "spec": {"containers": [{"name": "app"}, {"name": ISTIO_PROXY}]},
               "status": ready_status(json!({"containerStatuses": [{"name": "app", "ready": true},
                                                                  {"name": ISTIO_PROXY, "ready": ready}]}))})
    }
    fn native_sidecar(policy: Option<&str>, ready: bool) -> Value {
        let mut c = json!({"name": ISTIO_PROXY});
        if let Some(p) = policy {
            c["restartPolicy"] = json!(p);
        }
        json!({"metadata": {"name": "api-1", "annotations": {SIDECAR_STATUS: "{}"}},
               "spec": {"containers": [{"name": "app"}], "initContainers": [c]},
               "status": ready_status(json!({"initContainerStatuses": [{"name": ISTIO_PROXY, "ready": ready}]}))})
    }

    #[test]
    fn ambient_pod_passes() {
        let c = sidecar_free_and_enrolled(&pod(ambient_pod()));
        assert!(c.ok, "{:?}", c.reasons);
        assert!(!sidecar_ready(&pod(ambient_pod())).ok);
    }

    #[test]
    fn ambient_checks_each_reason() {
        let mut v = ambient_pod();
        v["metadata"]["annotations"][REDIRECTION] = json!("pending");
        assert!(sidecar_free_and_enrolled(&pod(v)).reasons[0].contains("pending"));
        let mut v = ambient_pod();
        v["metadata"]["annotations"] = json!({});
        assert!(sidecar_free_and_enrolled(&pod(v)).reasons[0].contains("absent"));
        let mut v = ambient_pod();
        v["status"]["conditions"][0]["status"] = json!("False");
        assert_eq!(
            sidecar_free_and_enrolled(&pod(v)).reasons,
            vec!["not Ready".to_string()]
        );
        let mut v = ambient_pod();
        v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert!(!sidecar_free_and_enrolled(&pod(v)).ok);
        // Native sidecar hidden in initContainers is detected ("2/2" would look fine).
        let mut v = native_sidecar(Some("Always"), true);
        v["metadata"]["annotations"][REDIRECTION] = json!("enabled");
        let c = sidecar_free_and_enrolled(&pod(v));
        assert!(c.reasons.iter().any(|r| r.contains("Native")));
        assert!(c.reasons.iter().any(|r| r.contains(SIDECAR_STATUS)));
        // Annotation alone (container renamed?) is still a sidecar sign.
        let mut v = ambient_pod();
        v["metadata"]["annotations"][SIDECAR_STATUS] = json!("{}");
        assert!(!sidecar_free_and_enrolled(&pod(v)).ok);
    }

    #[test]
    fn sidecar_ready_classic_and_native() {
        assert!(sidecar_ready(&pod(classic_sidecar(true))).ok);
        let c = sidecar_ready(&pod(classic_sidecar(false)));
        assert_eq!(c.reasons, vec![format!("{ISTIO_PROXY} not ready")]);
        assert!(sidecar_ready(&pod(native_sidecar(Some("Always"), true))).ok);
        assert!(!sidecar_ready(&pod(native_sidecar(Some("Always"), false))).ok);
        assert!(sidecar_ready(&pod(native_sidecar(None, true))).reasons[0].contains("without restartPolicy"));
        let mut v = classic_sidecar(true);
        v["metadata"]["annotations"][REDIRECTION] = json!("enabled");
        assert!(sidecar_ready(&pod(v)).reasons[0].contains("still set"));
        assert_eq!(
            proxy_placement(&pod(classic_sidecar(true))),
            Some(ProxyPlacement::Classic)
        );
        assert_eq!(proxy_placement(&pod(ambient_pod())), None);
    }

    fn owned(name: &str, kind: &str, owner: &str, labels: Value, terminating: bool) -> Pod {
        let mut v = ambient_pod();
        v["metadata"]["name"] = json!(name);
        v["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "apps/v1", "kind": kind, "name": owner, "uid": ""}]);
        v["metadata"]["labels"] = labels;
        if terminating {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        pod(v)
    }

    #[test]
    fn deployment_current_pods() {
        let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "api", "uid": "d1",
            "annotations": {REVISION_ANNOTATION: "2"}}, "spec": {"selector": {}, "template": {}}}))
        .unwrap();
        let rs = |name: &str, rev: &str| -> ReplicaSet {
            serde_json::from_value(json!({"metadata": {"name": name, "uid": name,
                "annotations": {REVISION_ANNOTATION: rev},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "api", "uid": "d1"}]},
                "spec": {"selector": {}}}))
            .unwrap()
        };
        let rss = vec![rs("api-old", "1"), rs("api-new", "2")];
        assert_eq!(
            current_replicaset(&d, &rss).unwrap().metadata.name.as_deref(),
            Some("api-new")
        );
        let pods = vec![
            owned("a", "ReplicaSet", "api-old", json!({}), false),
            owned("b", "ReplicaSet", "api-new", json!({}), false),
            owned("c", "ReplicaSet", "api-new", json!({}), true),
        ];
        let cur: Vec<String> = deployment_pods(&d, &rss, &pods).iter().map(|p| name(p)).collect();
        assert_eq!(cur, vec!["b"]);
        // Without the revision annotation on the Deployment, the highest revision wins.
        let mut d2 = d.clone();
        d2.metadata.annotations = None;
        assert_eq!(
            current_replicaset(&d2, &rss).unwrap().metadata.name.as_deref(),
            Some("api-new")
        );
    }

    #[test]
    fn statefulset_and_daemonset_current_pods() {
        let s: StatefulSet = serde_json::from_value(json!({"metadata": {"name": "db"},
            "spec": {"selector": {}, "template": {}}, "status": {"replicas": 2, "updateRevision": "db-2"}}))
        .unwrap();
        let pods = vec![
            owned(
                "db-0",
                "StatefulSet",
                "db",
                json!({"controller-revision-hash": "db-2"}),
                false,
            ),
            owned(
                "db-1",
                "StatefulSet",
                "db",
                json!({"controller-revision-hash": "db-1"}),
                false,
            ),
        ];
        let cur: Vec<String> = statefulset_pods(&s, &pods).iter().map(|p| name(p)).collect();
        assert_eq!(cur, vec!["db-0"]);
        let d: DaemonSet = serde_json::from_value(json!({"metadata": {"name": "agent", "generation": 3},
            "spec": {"selector": {}, "template": {}}}))
        .unwrap();
        let pods = vec![
            owned(
                "x",
                "DaemonSet",
                "agent",
                json!({"pod-template-generation": "3"}),
                false,
            ),
            owned(
                "y",
                "DaemonSet",
                "agent",
                json!({"pod-template-generation": "2"}),
                false,
            ),
            owned(
                "z",
                "DaemonSet",
                "other",
                json!({"pod-template-generation": "3"}),
                false,
            ),
        ];
        let cur: Vec<String> = daemonset_pods(&d, &pods).iter().map(|p| name(p)).collect();
        assert_eq!(cur, vec!["x"]);
    }

    #[test]
    fn gate_aggregation() {
        let w = ObjRef::new("apps/v1", "Deployment", "app", "api");
        let good = pod(ambient_pod());
        let bad = pod(classic_sidecar(true));
        let r = pods_gate("pods-ambient", &w, &[&good], 1, sidecar_free_and_enrolled);
        assert!(r.passed());
        let r = pods_gate("pods-ambient", &w, &[&good, &bad], 1, sidecar_free_and_enrolled);
        assert_eq!(r.outcome, GateOutcome::Fail);
        assert!(r.message.contains("istio-proxy"));
        assert_eq!(r.measured["pods"][1]["ok"], false);
        let r = pods_gate("pods-ambient", &w, &[], 2, sidecar_free_and_enrolled);
        assert!(r.message.contains("expected at least 2"));
        let r = pods_gate("pods-sidecar", &w, &[&bad], 1, sidecar_ready);
        assert!(r.passed());
    }
}
