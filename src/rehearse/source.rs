//! Where a rehearsal's fleet comes from: the live cluster (read with GET and LIST only, the same reads as
//! `plan`) or a directory of YAML; and what of it is copied into the simulation (the objects that decide
//! the data plane, without their server-side fields), plus how fast its pods start.

use std::collections::BTreeMap;
use std::path::Path;

use futures::StreamExt;
use serde_json::Value;

use crate::assess::Snapshot;
use crate::assess::objects::raw_values;
use crate::cluster::{Cluster, DynKind};

/// Kinds copied into the simulation besides the Istio and Gateway API ones: what a Deployment needs to run
/// and be reached. Pods and ReplicaSets are not copied: the simulation's controllers create them from
/// their Deployments, as the cluster's did.
const CORE_KINDS: [&str; 6] = [
    "Namespace",
    "ServiceAccount",
    "Service",
    "Deployment",
    "StatefulSet",
    "ConfigMap",
];

/// The fleet as read: every object (pods included, for their start times).
#[derive(Debug, Default)]
pub struct Fleet {
    pub objects: Vec<Value>,
}

/// Reads a file or directory of Kubernetes YAML (multi-document, `List`s flattened).
pub fn from_files(path: &Path) -> Result<Fleet, String> {
    let objs = meshsim::fixtures::load_path(path).map_err(|e| {
        format!("{e}; rehearse --from-files reads plain Kubernetes YAML (`kubectl get -o yaml` output works)")
    })?;
    Ok(Fleet {
        objects: objs.into_iter().map(|(_, v)| v).collect(),
    })
}

/// Sets `apiVersion` and `kind` on a listed object (list items from the API may omit them).
fn typed(mut v: Value, api_version: &str, kind: &str) -> Value {
    if v.get("kind").and_then(Value::as_str).is_none_or(str::is_empty) {
        v["apiVersion"] = Value::String(api_version.to_string());
        v["kind"] = Value::String(kind.to_string());
    }
    v
}

fn values<T: serde::Serialize>(items: &[T], api_version: &str, kind: &str) -> Vec<Value> {
    items
        .iter()
        .filter_map(|i| serde_json::to_value(i).ok())
        .map(|v| typed(v, api_version, kind))
        .collect()
}

/// The objects of one namespace's snapshot.
fn snapshot_objects(s: &Snapshot) -> Vec<Value> {
    let mut out = values(std::slice::from_ref(&s.namespace), "v1", "Namespace");
    out.extend(values(&s.services, "v1", "Service"));
    out.extend(values(&s.deployments, "apps/v1", "Deployment"));
    out.extend(values(&s.statefulsets, "apps/v1", "StatefulSet"));
    out.extend(values(&s.pods, "v1", "Pod"));
    let dynamic = [
        (
            DynKind::AuthorizationPolicy,
            raw_values(&s.authorization_policies),
        ),
        (DynKind::PeerAuthentication, raw_values(&s.peer_authentications)),
        (
            DynKind::RequestAuthentication,
            raw_values(&s.request_authentications),
        ),
        (DynKind::VirtualService, raw_values(&s.virtual_services)),
        (DynKind::DestinationRule, raw_values(&s.destination_rules)),
        (DynKind::Sidecar, raw_values(&s.sidecars)),
        (DynKind::ServiceEntry, raw_values(&s.service_entries)),
        (DynKind::Telemetry, raw_values(&s.telemetries)),
        (DynKind::WasmPlugin, raw_values(&s.wasm_plugins)),
        (DynKind::HttpRoute, raw_values(&s.http_routes)),
        (DynKind::Gateway, raw_values(&s.gateways)),
    ];
    for (k, items) in dynamic {
        out.extend(
            items
                .into_iter()
                .map(|v| typed(v.clone(), &k.api_version(), k.kind())),
        );
    }
    out
}

/// Namespaces whose snapshots are read at the same time from the live cluster (about 25 requests each).
const NAMESPACES_READ_AT_ONCE: usize = 4;

/// Reads the fleet's namespaces from the live cluster: the snapshot a namespace's assessment reads (GET and
/// LIST only), plus the mesh-wide policies of the root namespace.
pub async fn from_cluster(
    cluster: &Cluster,
    namespaces: &[String],
    system_ns: &str,
) -> Result<Fleet, String> {
    let info = cluster
        .read_cluster_info(system_ns)
        .await
        .map_err(|e| e.to_string())?;
    // A few namespaces are read at once (each is its Namespace and one list per kind, all in flight), in
    // the fleet's order: one after the other, a fleet of 1,000 namespaces took 1,000 rounds of lists.
    let info = &info;
    let mut snapshots = futures::stream::iter(namespaces)
        .map(|ns| async move {
            cluster
                .read_snapshot(ns, info)
                .await
                .map_err(|e| format!("namespace {ns}: {e}"))
        })
        .buffered(NAMESPACES_READ_AT_ONCE);
    let mut objects = Vec::new();
    while let Some(snap) = snapshots.next().await {
        objects.extend(snapshot_objects(&snap?));
    }
    let root = [
        (
            DynKind::AuthorizationPolicy,
            raw_values(&info.root_authorization_policies),
        ),
        (
            DynKind::PeerAuthentication,
            raw_values(&info.root_peer_authentications),
        ),
    ];
    for (k, items) in root {
        objects.extend(
            items
                .into_iter()
                .map(|v| typed(v.clone(), &k.api_version(), k.kind())),
        );
    }
    Ok(Fleet { objects })
}

/// Whether an object of this `apiVersion`/`kind` is copied into the simulation.
fn copied(api_version: &str, kind: &str) -> bool {
    let istio_or_gateway = DynKind::from_group_kind(api_version, kind).is_some()
        && !matches!(kind, "PodMonitor" | "ServiceMonitor");
    (CORE_KINDS.contains(&kind) || istio_or_gateway)
        && meshsim::resources::by_kind(api_version, kind).is_some()
}

/// An object without what the server owns (status, uid, resourceVersion, owner references, cluster IPs).
fn cleaned(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.retain(|k, _| matches!(k.as_str(), "name" | "namespace" | "labels" | "annotations"));
        if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
    if v["kind"] == "Service"
        && let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    v
}

/// What is copied into the simulation, and what was left out (kind -> count).
#[derive(Debug, Default)]
pub struct Copy {
    pub objects: Vec<Value>,
    pub skipped: BTreeMap<String, usize>,
}

/// The objects to load into the simulation: the copied kinds, cleaned, outside Istio's system namespace
/// (the simulation installs its own control plane there) except for its mesh-wide policies; a
/// ServiceAccount for every workload whose account is not among them (a pod cannot start without it).
pub fn to_copy(fleet: &Fleet, system_ns: &str) -> Copy {
    let mut c = Copy::default();
    for o in &fleet.objects {
        let api_version = o["apiVersion"].as_str().unwrap_or("");
        let kind = o["kind"].as_str().unwrap_or("");
        let ns = o["metadata"]["namespace"].as_str().unwrap_or("");
        let name = o["metadata"]["name"].as_str().unwrap_or("");
        let in_system = ns == system_ns || (kind == "Namespace" && name == system_ns);
        let mesh_wide = in_system && matches!(kind, "AuthorizationPolicy" | "PeerAuthentication");
        // A waypoint's Deployment is istiod's (from its Gateway); the simulation deploys its own.
        let waypoint = o["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"].is_string();
        if copied(api_version, kind) && (!in_system || mesh_wide) && !waypoint {
            c.objects.push(cleaned(o.clone()));
        } else {
            *c.skipped.entry(kind.to_string()).or_default() += 1;
        }
    }
    let mut accounts: Vec<(String, String)> = c
        .objects
        .iter()
        .filter(|o| matches!(o["kind"].as_str(), Some("Deployment" | "StatefulSet")))
        .map(|o| {
            let sa = o["spec"]["template"]["spec"]["serviceAccountName"]
                .as_str()
                .unwrap_or("default");
            (
                o["metadata"]["namespace"].as_str().unwrap_or("").to_string(),
                sa.to_string(),
            )
        })
        .collect();
    accounts.sort();
    accounts.dedup();
    for (ns, sa) in accounts {
        let exists = c.objects.iter().any(|o| {
            o["kind"] == "ServiceAccount" && o["metadata"]["namespace"] == *ns && o["metadata"]["name"] == *sa
        });
        if !exists && sa != "default" {
            c.objects.push(serde_json::json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": sa, "namespace": ns},
            }));
        }
    }
    c
}

/// The median time from scheduling to Ready of the pods that show both conditions, with how many pods
/// it is taken over; `None` without any such pod.
pub fn pod_start_time(fleet: &Fleet) -> Option<(std::time::Duration, usize)> {
    let at = |p: &Value, t: &str| -> Option<jiff::Timestamp> {
        p["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == t && c["status"] == "True")?["lastTransitionTime"]
            .as_str()?
            .parse()
            .ok()
    };
    let mut ms: Vec<i64> = fleet
        .objects
        .iter()
        .filter(|o| o["kind"] == "Pod")
        .filter_map(|p| {
            let d = at(p, "Ready")?.duration_since(at(p, "PodScheduled")?);
            let ms = d.as_millis() as i64;
            (ms >= 0).then_some(ms)
        })
        .collect();
    if ms.is_empty() {
        return None;
    }
    ms.sort_unstable();
    Some((
        std::time::Duration::from_millis(ms[ms.len() / 2] as u64),
        ms.len(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Fleet {
        Fleet {
            objects: serde_saphyr::from_multiple(y).unwrap(),
        }
    }

    #[test]
    fn copies_what_decides_the_data_plane_and_drops_server_fields() {
        let f = parse(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, uid: x, resourceVersion: '5'}\nstatus: {phase: Active}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: a}\nspec: {template: {spec: {serviceAccountName: d}}}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: d, namespace: a}\nspec: {clusterIP: 10.0.0.1, selector: {app: d}}\n---\n\
             apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: mesh, namespace: istio-system}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: istiod, namespace: istio-system}\n",
        );
        let c = to_copy(&f, "istio-system");
        let kinds: Vec<String> = c
            .objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "Namespace/a",
                "Deployment/d",
                "Service/d",
                "AuthorizationPolicy/mesh",
                "ServiceAccount/d"
            ],
            "{kinds:?}"
        );
        assert_eq!(c.objects[0]["metadata"], serde_json::json!({"name": "a"}));
        assert!(c.objects[0].get("status").is_none());
        assert!(c.objects[2]["spec"].get("clusterIP").is_none());
        assert_eq!(c.skipped.get("Pod"), Some(&1));
        assert_eq!(c.skipped.get("Deployment"), Some(&1), "istiod is not copied");
    }

    #[test]
    fn pod_start_time_is_the_median_scheduled_to_ready() {
        let pod = |s: &str, r: &str| {
            format!(
                "---\nkind: Pod\nstatus:\n  conditions:\n  - {{type: PodScheduled, status: 'True', lastTransitionTime: '2026-01-01T00:00:{s}Z'}}\n  - {{type: Ready, status: 'True', lastTransitionTime: '2026-01-01T00:00:{r}Z'}}\n"
            )
        };
        let f = parse(&(pod("00", "04") + &pod("10", "20") + &pod("30", "36")));
        assert_eq!(pod_start_time(&f), Some((std::time::Duration::from_secs(6), 3)));
        assert_eq!(pod_start_time(&parse("kind: Pod\n")), None);
    }
}
