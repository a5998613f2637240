//! The node-agent readiness rule (ztunnel, istio-cni), shared by the preflight (a finding) and step 2's
//! gate: the DaemonSet exists, is scheduled on at least one node and ready on every node it is scheduled on.

use k8s_openapi::api::apps::v1::DaemonSet;
use serde_json::json;

use super::{GateOutcome, GateResult};

/// Why the ztunnel DaemonSet is not ready, or `None` when it is.
pub fn daemonset_not_ready(ds: Option<&DaemonSet>) -> Option<String> {
    let Some(ds) = ds else {
        return Some("not found".into());
    };
    let st = ds.status.clone().unwrap_or_default();
    if st.desired_number_scheduled == 0 {
        return Some("no pods scheduled (desiredNumberScheduled 0)".into());
    }
    if st.number_ready < st.desired_number_scheduled {
        return Some(format!(
            "{} of {} pods ready",
            st.number_ready, st.desired_number_scheduled
        ));
    }
    None
}

/// The `ztunnel-ready` gate on the DaemonSet `system_ns/ztunnel` as observed now.
pub fn ztunnel_ready(system_ns: &str, ds: Option<&DaemonSet>) -> GateResult {
    let gate = crate::steps::gate_names::ZTUNNEL_READY;
    let Some(d) = ds else {
        return GateResult::new(
            gate,
            GateOutcome::Fail,
            json!({"daemonset": null}),
            format!(
                "DaemonSet {system_ns}/ztunnel not found: install ztunnel (istioctl install --set profile=ambient)"
            ),
        );
    };
    let st = d.status.clone().unwrap_or_default();
    let measured = json!({"desired": st.desired_number_scheduled, "ready": st.number_ready});
    match daemonset_not_ready(ds) {
        None => GateResult::new(
            gate,
            GateOutcome::Pass,
            measured,
            format!(
                "ztunnel ready on {}/{} nodes",
                st.number_ready, st.desired_number_scheduled
            ),
        ),
        Some(_) => GateResult::new(
            gate,
            GateOutcome::Fail,
            measured,
            format!(
                "ztunnel ready on only {}/{} nodes: ambient pods on the others get no traffic; check `kubectl -n {system_ns} get pods -l app=ztunnel`",
                st.number_ready, st.desired_number_scheduled
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DaemonSetStatus;

    fn ds(desired: i32, ready: i32) -> DaemonSet {
        DaemonSet {
            status: Some(DaemonSetStatus {
                desired_number_scheduled: desired,
                number_ready: ready,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ready_on_every_scheduled_node_and_scheduled_somewhere() {
        assert!(ztunnel_ready("istio-system", Some(&ds(3, 3))).passed());
        let partial = ztunnel_ready("istio-system", Some(&ds(3, 2)));
        assert_eq!(partial.outcome, GateOutcome::Fail);
        assert!(partial.message.contains("2/3"), "{}", partial.message);
        assert!(!ztunnel_ready("istio-system", Some(&ds(0, 0))).passed());
        let missing = ztunnel_ready("istio-system", None);
        assert!(missing.message.contains("not found"), "{}", missing.message);
        assert_eq!(
            daemonset_not_ready(Some(&ds(0, 0))).as_deref(),
            Some("no pods scheduled (desiredNumberScheduled 0)")
        );
    }
}
