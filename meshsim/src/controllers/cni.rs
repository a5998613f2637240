//! istio-cni: ambient enrollment of pods (the CNI plugin and the node agent).
//!
//! A pod is enrolled when the default `ambient.enablementSelectors` match
//! (`manifests/charts/istio-cni/values.yaml`): pod label `istio.io/dataplane-mode=ambient`, or namespace
//! label `istio.io/dataplane-mode=ambient` and the pod not labelled `istio.io/dataplane-mode=none`; and
//! `CompiledEnablementSelectors.Matches` (`cni/pkg/util/enablement_selector.go`) does not exclude it:
//! hostNetwork pods and pods with `sidecar.istio.io/status` (a sidecar) are never enrolled.
//!
//! Two paths, as upstream:
//! - a pod that matches when its sandbox is created (bound to a node, not yet running) is enrolled at
//!   once: the CNI plugin's ADD (`cni/pkg/plugin/plugin.go`, `doAddRun`: `PushCNIEvent` to the node
//!   agent, whose `AddPodToMesh` sets up the redirection and annotates the pod) runs before any container
//!   starts and fails the sandbox until it succeeds, so the kubelet (`kubelet.rs`) starts such a pod only
//!   once the annotation is there: a new pod never runs, is never Ready, outside the mesh;
//! - a pod already running when it starts to match (namespace relabels: the node agent's informer,
//!   `cni/README.md` "enroll already-started-but-newly-enrolled pods") gets
//!   `ambient.istio.io/redirection=enabled` `latency.cni_enroll_ms` after it matches.
//!
//! The value is `pending` while a `cni-pending` fault holds for the namespace or the ztunnel of the pod's
//! node is down (`ztunnel-down`), as istio-cni reports a pod whose rules are set but that no ztunnel has
//! accepted (`cni/pkg/util/podutil.go`, value added in 1.25). When a pod stops matching, the annotation
//! is removed (unenrollment). istio-cni writes it through `pods/status`.

use serde_json::{Value, json};

use super::util::{self, annotation, label, name, ns, terminating, uid};
use super::{Snap, State, res};
use crate::Sim;
use crate::faults::FaultKind;

/// Annotation istio-cni sets on enrolled pods.
pub const REDIRECTION: &str = "ambient.istio.io/redirection";

/// Whether the pod matches the ambient enablement selectors (ignoring whether it runs).
pub fn enrolled(pod: &Value, ns_labels: &Value) -> bool {
    if pod["spec"]["hostNetwork"].as_bool() == Some(true) {
        return false;
    }
    if annotation(pod, "sidecar.istio.io/status").is_some() {
        return false;
    }
    let pod_mode = label(pod, "istio.io/dataplane-mode");
    if pod_mode == Some("ambient") {
        return true;
    }
    ns_labels["istio.io/dataplane-mode"].as_str() == Some("ambient") && pod_mode != Some("none")
}

/// Whether the pod is bound to a node and waits for its sandbox (the moment the CNI ADD runs).
fn sandbox_pending(pod: &Value) -> bool {
    pod["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty())
        && matches!(pod["status"]["phase"].as_str(), None | Some("" | "Pending"))
        && !terminating(pod)
}

/// Whether the kubelet must hold the pod's containers: it matches the enablement selectors and istio-cni
/// has not yet written its annotation (`enabled` or `pending`), i.e. the CNI ADD has not returned.
pub fn awaiting_cni_add(sim: &Sim, pod: &Value, ns_labels: &Value) -> bool {
    sim.settings.istio.install && enrolled(pod, ns_labels) && annotation(pod, REDIRECTION).is_none()
}

pub fn reconcile(sim: &Sim, snap: &Snap, state: &mut State) {
    if !sim.settings.istio.install {
        return;
    }
    let now = state.now;
    for p in &snap.pods {
        let current = annotation(p, REDIRECTION);
        let running = p["status"]["phase"] == "Running" && !terminating(p);
        let want = (running || sandbox_pending(p)) && enrolled(p, snap.ns.labels(ns(p)));
        let Some(track) = state.ns.pods.get_mut(uid(p)) else {
            continue;
        };
        let desired: Option<&str> = if want {
            let since = *track.enroll_since.get_or_insert(now);
            let node = p["spec"]["nodeName"].as_str().unwrap_or("");
            let blocked = snap.fault(FaultKind::CniPending, ns(p), |_| true) || snap.ztunnel_down(node);
            if blocked {
                Some("pending")
            } else if !running
                || current == Some("enabled")
                || snap.due(ns(p), since + sim.settings.latency.cni_enroll_ms)
            {
                Some("enabled")
            } else {
                current.filter(|c| *c == "pending")
            }
        } else {
            track.enroll_since = None;
            if terminating(p) { current } else { None }
        };
        if desired == current {
            continue;
        }
        let d = desired.map(str::to_string);
        util::update(sim, res("", "pods"), ns(p), name(p), "istio-cni", |o| match &d {
            Some(v) => {
                if !o["metadata"]["annotations"].is_object() {
                    o["metadata"]["annotations"] = json!({});
                }
                o["metadata"]["annotations"][REDIRECTION] = json!(v);
            }
            None => {
                if let Some(a) = o["metadata"]["annotations"].as_object_mut() {
                    a.remove(REDIRECTION);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enablement_selectors() {
        let ambient = json!({"istio.io/dataplane-mode": "ambient"});
        let pod = |labels: Value, ann: Value| json!({"metadata": {"labels": labels, "annotations": ann}, "spec": {}});
        assert!(enrolled(&pod(json!({}), json!({})), &ambient));
        assert!(!enrolled(
            &pod(json!({"istio.io/dataplane-mode": "none"}), json!({})),
            &ambient
        ));
        assert!(enrolled(
            &pod(json!({"istio.io/dataplane-mode": "ambient"}), json!({})),
            &json!({})
        ));
        assert!(!enrolled(&pod(json!({}), json!({})), &json!({})));
        assert!(!enrolled(
            &pod(json!({}), json!({"sidecar.istio.io/status": "{}"})),
            &ambient
        ));
        let mut host = pod(json!({}), json!({}));
        host["spec"]["hostNetwork"] = json!(true);
        assert!(!enrolled(&host, &ambient));
    }
}
