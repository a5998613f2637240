//! istio-cni's node agent: ambient enrollment of running pods.
//!
//! A pod is enrolled when the default `ambient.enablementSelectors` match
//! (`manifests/charts/istio-cni/values.yaml`): pod label `istio.io/dataplane-mode=ambient`, or namespace
//! label `istio.io/dataplane-mode=ambient` and the pod not labelled `istio.io/dataplane-mode=none`; and
//! `CompiledEnablementSelectors.Matches` (`cni/pkg/util/enablement_selector.go`) does not exclude it:
//! hostNetwork pods and pods with `sidecar.istio.io/status` (a sidecar) are never enrolled.
//! Enrolled pods get `ambient.istio.io/redirection=enabled` `latency.cni_enroll_ms` after they run (or
//! after they start matching: namespace relabels act on running pods, as the node agent's informer
//! does); the value is `pending` while a `cni-pending` fault holds for the namespace or the ztunnel of
//! the pod's node is down (`ztunnel-down`), as istio-cni reports a pod whose rules are set but that no
//! ztunnel has accepted (`cni/pkg/util/podutil.go`, value added in 1.25). When a pod stops matching, the
//! annotation is removed (unenrollment). istio-cni writes it through `pods/status`.

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

pub fn reconcile(sim: &Sim, snap: &Snap, state: &mut State) {
    if !sim.settings.istio.install {
        return;
    }
    let now = state.now;
    for p in &snap.pods {
        let current = annotation(p, REDIRECTION);
        let running = p["status"]["phase"] == "Running" && !terminating(p);
        let want = running && enrolled(p, &snap.ns.labels(ns(p)));
        let Some(track) = state.pods.get_mut(uid(p)) else {
            continue;
        };
        let desired: Option<&str> = if want {
            let since = *track.enroll_since.get_or_insert(now);
            let node = p["spec"]["nodeName"].as_str().unwrap_or("");
            let blocked = snap.fault(FaultKind::CniPending, ns(p), |_| true) || snap.ztunnel_down(node);
            if blocked {
                Some("pending")
            } else if current == Some("enabled")
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
        util::update(sim, res("", "pods"), ns(p), name(p), "istio-cni", |o| match d {
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
