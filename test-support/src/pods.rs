//! What a test asks of a pod (as JSON from meshsim's store), each question in one place.

use serde_json::Value;

/// The pod's `Ready` condition is `True` (what `kubectl wait --for=condition=Ready` checks).
pub fn ready_condition(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// The pod serves: Ready, Running and not terminating (a terminating pod can still report Ready).
pub fn serving(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null() && p["status"]["phase"] == "Running" && ready_condition(p)
}

/// The pod runs an `istio-proxy` sidecar (classic container or native init container).
pub fn has_sidecar(p: &Value) -> bool {
    containers_named(p, "containers", "istio-proxy").is_some()
        || containers_named(p, "initContainers", "istio-proxy").is_some()
}

fn containers_named<'a>(p: &'a Value, list: &str, name: &str) -> Option<&'a Value> {
    p["spec"][list]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
}

/// The pod has an `istio-proxy` (classic or native) that is ready, and the pod serves.
pub fn sidecar_ready(p: &Value) -> bool {
    let present = has_sidecar(p);
    let ready = ["containerStatuses", "initContainerStatuses"].iter().any(|l| {
        p["status"][l]
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c["name"] == "istio-proxy" && c["ready"] == true))
    });
    present && ready && serving(p)
}

/// The pod is sidecar-free, enrolled in ambient (`redirection=enabled`) and serves.
pub fn ambient_pod(p: &Value) -> bool {
    !has_sidecar(p)
        && p["metadata"]["annotations"]["sidecar.istio.io/status"].is_null()
        && p["metadata"]["annotations"]["ambient.istio.io/redirection"] == "enabled"
        && serving(p)
}

/// A workload pod: not a waypoint pod, not a Job (probe) pod.
pub fn is_app_pod(p: &Value) -> bool {
    let l = &p["metadata"]["labels"];
    l["gateway.networking.k8s.io/gateway-name"].is_null() && l["job-name"].is_null()
}
