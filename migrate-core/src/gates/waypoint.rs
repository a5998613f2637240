//! Waypoint readiness (docs/design.md §3 step 1 gate; `docs/reference/istio-ambient-facts.md` §0.3, §3b;
//! `progressive-delivery-peers.md` §4.4): Gateway `Accepted` and `Programmed` True with
//! `condition.observedGeneration == metadata.generation`, `status.addresses` non-empty (istiod ignores a
//! waypoint until then: `gatewayToWaypointTransform`), the generated Deployment has a ready pod (istiod's own
//! `Programmed` does not check it: TODO in `reportGatewayStatus`), and every Service that reports
//! `istio.io/WaypointBound` has it True.

use super::{GateOutcome, GateResult, json_condition};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use serde_json::{Value, json};

/// `gatewayClassName` of Istio waypoints.
pub const WAYPOINT_CLASS: &str = "istio-waypoint";

/// Service condition type set by istiod when a Service is bound to a waypoint.
pub const WAYPOINT_BOUND: &str = "istio.io/WaypointBound";

/// Is the Gateway JSON condition `type_` True and current (its observedGeneration equals the Gateway's
/// generation when the Gateway has one)? Returns a description of what is wrong otherwise.
fn condition_current_true(gw: &Value, type_: &str) -> Result<(), String> {
    let Some(c) = json_condition(gw, type_) else {
        return Err(format!("condition {type_} not reported"));
    };
    if c["status"] != "True" {
        return Err(format!(
            "{type_}={} ({}: {})",
            c["status"].as_str().unwrap_or("?"),
            c["reason"].as_str().unwrap_or(""),
            c["message"].as_str().unwrap_or("")
        ));
    }
    let generation = gw.pointer("/metadata/generation").and_then(Value::as_i64);
    let observed = c.get("observedGeneration").and_then(Value::as_i64);
    if let Some(g) = generation
        && observed != Some(g)
    {
        return Err(format!(
            "{type_} is stale: observedGeneration {observed:?} != generation {g}"
        ));
    }
    Ok(())
}

/// Evaluate waypoint readiness. `gateway` is the waypoint Gateway (`None` = not found), `deployment` its
/// generated Deployment (same name), `services` the Services that step 1 binds (only those reporting the
/// `istio.io/WaypointBound` condition are checked; after step 1 pass the bound ones, before it pass none).
pub fn waypoint_ready(
    namespace: &str,
    name: &str,
    gateway: Option<&Value>,
    deployment: Option<&Deployment>,
    services: &[Service],
) -> GateResult {
    let gate = crate::steps::gate_names::WAYPOINT_READY;
    let Some(gw) = gateway else {
        return GateResult::new(
            gate,
            GateOutcome::Fail,
            json!({"gateway": null}),
            format!(
                "Gateway {namespace}/{name} not found: create it (istioctl waypoint apply -n {namespace} --name {name}) \
                 before activating it"
            ),
        );
    };
    let mut problems = Vec::new();
    let class = gw
        .pointer("/spec/gatewayClassName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if class != WAYPOINT_CLASS {
        problems.push(format!(
            "gatewayClassName is {class:?}, expected {WAYPOINT_CLASS:?}"
        ));
    }
    let accepted = condition_current_true(gw, "Accepted");
    let programmed = condition_current_true(gw, "Programmed");
    for r in [&accepted, &programmed] {
        if let Err(e) = r {
            problems.push(e.clone());
        }
    }
    let addresses: Vec<Value> = gw
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if addresses.is_empty() {
        problems.push("status.addresses is empty (istiod does not use the waypoint yet)".into());
    }
    let ready = deployment
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    match deployment {
        None => problems.push(format!("Deployment {namespace}/{name} not found")),
        Some(_) if ready < 1 => problems.push(format!("Deployment {namespace}/{name} has no ready pod")),
        _ => {}
    }
    let mut bound = serde_json::Map::new();
    for s in services {
        let sname = s.metadata.name.clone().unwrap_or_default();
        let cond = s
            .status
            .as_ref()
            .and_then(|st| st.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == WAYPOINT_BOUND));
        match cond {
            None => {
                bound.insert(sname, json!("not-reported"));
            }
            Some(c) if c.status == "True" => {
                bound.insert(sname, json!("True"));
            }
            Some(c) => {
                problems.push(format!(
                    "Service {namespace}/{sname} {WAYPOINT_BOUND}={} ({}: {})",
                    c.status, c.reason, c.message
                ));
                bound.insert(sname, json!(format!("{}: {}", c.status, c.reason)));
            }
        }
    }
    let measured = json!({
        "gatewayClassName": class,
        "accepted": accepted.is_ok(),
        "programmed": programmed.is_ok(),
        "addresses": addresses,
        "readyReplicas": ready,
        "waypointBound": bound,
    });
    if problems.is_empty() {
        GateResult::new(
            gate,
            GateOutcome::Pass,
            measured,
            format!("waypoint {namespace}/{name} ready"),
        )
    } else {
        GateResult::new(
            gate,
            GateOutcome::Fail,
            measured,
            format!("waypoint {namespace}/{name} not ready: {}", problems.join("; ")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw(generation: i64, acc: (&str, i64), prog: (&str, i64), addrs: Value) -> Value {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": "waypoint", "namespace": "app", "generation": generation},
               "spec": {"gatewayClassName": "istio-waypoint"},
               "status": {"addresses": addrs, "conditions": [
                   {"type": "Accepted", "status": acc.0, "reason": "Accepted", "observedGeneration": acc.1},
                   {"type": "Programmed", "status": prog.0, "reason": "Programmed", "observedGeneration": prog.1}]}})
    }
    fn dep(ready: i32) -> Deployment {
        serde_json::from_value(
            json!({"metadata": {"name": "waypoint"}, "spec": {"selector": {}, "template": {}},
                                      "status": {"readyReplicas": ready}}),
        )
        .unwrap()
    }
    fn svc(bound: Option<&str>) -> Service {
        let mut v = json!({"metadata": {"name": "api"}});
        if let Some(b) = bound {
            v["status"] = json!({"conditions": [{"type": WAYPOINT_BOUND, "status": b, "reason": "WaypointIsNotReady",
                "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        }
        serde_json::from_value(v).unwrap()
    }
    fn addr() -> Value {
        json!([{"type": "IPAddress", "value": "10.0.0.9"}])
    }

    #[test]
    fn ready_waypoint_passes() {
        let g = gw(2, ("True", 2), ("True", 2), addr());
        let r = waypoint_ready(
            "app",
            "waypoint",
            Some(&g),
            Some(&dep(1)),
            &[svc(Some("True")), svc(None)],
        );
        assert!(r.passed(), "{}", r.message);
        assert_eq!(r.measured["readyReplicas"], 1);
        assert_eq!(r.measured["waypointBound"]["api"], "not-reported");
    }

    #[test]
    fn missing_gateway() {
        let r = waypoint_ready("app", "waypoint", None, None, &[]);
        assert_eq!(r.outcome, GateOutcome::Fail);
        assert!(r.message.contains("istioctl waypoint apply"));
    }

    #[test]
    fn stale_programmed() {
        let g = gw(3, ("True", 3), ("True", 2), addr());
        let r = waypoint_ready("app", "waypoint", Some(&g), Some(&dep(1)), &[]);
        assert_eq!(r.outcome, GateOutcome::Fail);
        assert!(r.message.contains("Programmed is stale"), "{}", r.message);
    }

    #[test]
    fn not_programmed_no_addresses_no_pod_unbound() {
        let g = gw(1, ("True", 1), ("False", 1), json!([]));
        let r = waypoint_ready("app", "waypoint", Some(&g), Some(&dep(0)), &[svc(Some("False"))]);
        assert!(r.message.contains("Programmed=False"));
        assert!(r.message.contains("status.addresses is empty"));
        assert!(r.message.contains("no ready pod"));
        assert!(r.message.contains("WaypointBound=False"));
        assert_eq!(r.measured["programmed"], false);
        let g = gw(1, ("True", 1), ("True", 1), addr());
        let r = waypoint_ready("app", "waypoint", Some(&g), None, &[]);
        assert!(r.message.contains("Deployment app/waypoint not found"));
    }

    #[test]
    fn wrong_class_and_missing_condition() {
        let mut g = gw(1, ("True", 1), ("True", 1), addr());
        g["spec"]["gatewayClassName"] = json!("istio");
        g["status"]["conditions"].as_array_mut().unwrap().remove(0);
        let r = waypoint_ready("app", "waypoint", Some(&g), Some(&dep(1)), &[]);
        assert!(r.message.contains("gatewayClassName"));
        assert!(r.message.contains("Accepted not reported"));
    }
}
