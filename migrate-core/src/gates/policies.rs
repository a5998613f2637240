//! Step 5 gate: no selector AuthorizationPolicy left that ztunnel rejects or translates lossily
//! (`docs/reference/istio-ambient-facts.md` §3f: status condition `ZtunnelAccepted` with reason `UnsupportedValue`,
//! and our own classification of the spec, for clusters that do not report the condition).

use super::{GateOutcome, GateResult, json_condition};
use crate::assess::policy::{AuthzPolicy, ZtunnelEffect};
use serde_json::{Value, json};

/// Evaluate the namespace's remaining AuthorizationPolicies (as read after step 5). Policies named in
/// `allowed` (e.g. kept bridges, or policies the user allowed to stay) are ignored.
pub fn no_ztunnel_rejected_policy(policies: &[Value], allowed: &[String]) -> GateResult {
    let gate = crate::steps::gate_names::NO_ZTUNNEL_REJECTED_POLICY;
    let mut bad = Vec::new();
    for v in policies {
        let Ok(p) = AuthzPolicy::parse(v) else { continue };
        if allowed.contains(&p.name) || !p.is_workload_scoped() {
            continue;
        }
        let status = json_condition(v, "ZtunnelAccepted");
        let rejected_by_status =
            status.is_some_and(|c| c["reason"] == "UnsupportedValue" || c["status"] == "False");
        let effect = p.ztunnel_effect();
        if rejected_by_status || !matches!(effect, ZtunnelEffect::Exact) {
            bad.push(json!({"policy": p.obj_ref().to_string(), "effect": effect,
                            "ztunnelAccepted": status.cloned().unwrap_or(Value::Null)}));
        }
    }
    if bad.is_empty() {
        GateResult::new(
            gate,
            GateOutcome::Pass,
            json!({"offending": []}),
            "no selector policy with L7 content left",
        )
    } else {
        let names: Vec<String> = bad
            .iter()
            .filter_map(|b| b["policy"].as_str().map(str::to_string))
            .collect();
        GateResult::new(
            gate,
            GateOutcome::Fail,
            json!({"offending": bad}),
            format!(
                "selector policies ztunnel cannot enforce as written remain: {}; delete them once a bound targetRefs twin exists",
                names.join(", ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ap(name: &str, spec: Value, status: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "app"}, "spec": spec, "status": status})
    }

    #[test]
    fn gate_cases() {
        let l4 = ap(
            "l4",
            json!({"selector": {"matchLabels": {"app": "db"}}, "rules": [{"from": [{"source": {"namespaces": ["app"]}}]}]}),
            json!({}),
        );
        let twin = ap(
            "t",
            json!({"targetRefs": [{"kind": "Service", "name": "api"}], "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}),
            json!({}),
        );
        assert!(no_ztunnel_rejected_policy(&[l4.clone(), twin.clone()], &[]).passed());
        let l7 = ap(
            "l7",
            json!({"selector": {"matchLabels": {"app": "api"}}, "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}),
            json!({}),
        );
        let r = no_ztunnel_rejected_policy(&[l4.clone(), l7.clone()], &[]);
        assert_eq!(r.outcome, GateOutcome::Fail);
        assert!(r.message.contains("AuthorizationPolicy/app/l7"));
        assert!(no_ztunnel_rejected_policy(&[l7], &["l7".into()]).passed());
        let flagged = ap(
            "s",
            json!({"selector": {"matchLabels": {"app": "db"}}, "rules": [{}]}),
            json!({"conditions": [{"type": "ZtunnelAccepted", "status": "False", "reason": "UnsupportedValue"}]}),
        );
        assert!(!no_ztunnel_rejected_policy(&[flagged], &[]).passed());
    }
}
