//! Step 5 gate: no selector AuthorizationPolicy left that ztunnel rejects or translates lossily
//! (`docs/reference/istio-ambient-facts.md` §3f: status condition `ZtunnelAccepted` with reason `UnsupportedValue`,
//! and our own classification of the spec, for clusters that do not report the condition).

use super::{GateOutcome, GateResult, json_condition};
use crate::assess::objects::{Obj, Spec};
use crate::assess::policy::{AuthzPolicy, ZtunnelEffect};
use crate::steps::ObjRef;
use serde_json::{Value, json};

/// Evaluate the namespace's remaining AuthorizationPolicies (as read after step 5). Policies named in
/// `allowed` (kept bridges, policies a dry run's step 5 did not really delete) are ignored. A policy fails
/// the gate when ztunnel rejects it (its `ZtunnelAccepted` condition is False, or, for clusters that do not
/// report the condition, a CUSTOM/AUDIT selector policy) or, unless `allow_unreplaced_l7`, when it is a
/// selector policy whose L7 rules ztunnel drops. A policy that did not convert fails it too: what ztunnel
/// does with it cannot be judged (the preflight blocks such a policy; this one appeared during the run).
pub fn no_ztunnel_rejected_policy(
    policies: &[Obj<AuthzPolicy>],
    allowed: &[String],
    allow_unreplaced_l7: bool,
) -> GateResult {
    let gate = crate::steps::gate_names::NO_ZTUNNEL_REJECTED_POLICY;
    let mut bad = Vec::new();
    for o in policies {
        if allowed.iter().any(|n| n == o.name()) {
            continue;
        }
        let Some(p) = o.spec() else {
            let r = ObjRef::new("security.istio.io/v1", AuthzPolicy::KIND, o.namespace(), o.name());
            let why = o.error().map(|e| e.message.as_str()).unwrap_or_default();
            bad.push(
                json!({"policy": r.to_string(), "why": format!("cannot be judged: {why}"),
                            "ztunnelAccepted": Value::Null}),
            );
            continue;
        };
        let status = json_condition(o.raw(), "ZtunnelAccepted");
        let rejected_by_status =
            status.is_some_and(|c| c["reason"] == "UnsupportedValue" || c["status"] == "False");
        let effect = p.ztunnel_effect();
        let rejected = rejected_by_status || matches!(effect, ZtunnelEffect::Rejected);
        let lossy = !matches!(
            effect,
            ZtunnelEffect::Exact | ZtunnelEffect::NotSent | ZtunnelEffect::Rejected
        );
        if rejected || (lossy && !allow_unreplaced_l7) {
            let why = if rejected {
                "is rejected by ztunnel (ZtunnelAccepted=False)"
            } else {
                "has L7 rules ztunnel cannot enforce"
            };
            bad.push(
                json!({"policy": p.obj_ref().to_string(), "why": why, "effect": effect,
                            "ztunnelAccepted": status.cloned().unwrap_or(Value::Null)}),
            );
        }
    }
    if bad.is_empty() {
        GateResult::new(
            gate,
            GateOutcome::Pass,
            json!({"offending": []}),
            "no selector policy left that ztunnel rejects or enforces partially",
        )
    } else {
        let names: Vec<String> = bad
            .iter()
            .map(|b| {
                format!(
                    "{} {}",
                    b["policy"].as_str().unwrap_or(""),
                    b["why"].as_str().unwrap_or("")
                )
            })
            .collect();
        GateResult::new(
            gate,
            GateOutcome::Fail,
            json!({"offending": bad}),
            format!(
                "{}: move the L7 rules to a targetRefs policy on the waypoint",
                names.join("; ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ap(name: &str, spec: Value, status: Value) -> Obj<AuthzPolicy> {
        json!({"metadata": {"name": name, "namespace": "app"}, "spec": spec, "status": status}).into()
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
        assert!(no_ztunnel_rejected_policy(&[l4.clone(), twin.clone()], &[], false).passed());
        let l7 = ap(
            "l7",
            json!({"selector": {"matchLabels": {"app": "api"}}, "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}),
            json!({}),
        );
        let r = no_ztunnel_rejected_policy(&[l4.clone(), l7.clone()], &[], false);
        assert_eq!(r.outcome, GateOutcome::Fail);
        assert!(r.message.contains("AuthorizationPolicy/app/l7"));
        assert!(no_ztunnel_rejected_policy(std::slice::from_ref(&l7), &["l7".into()], false).passed());
        // Allowed to stay unreplaced: the lossy policy passes, a rejected one still fails.
        assert!(no_ztunnel_rejected_policy(&[l7], &[], true).passed());
        let flagged = ap(
            "s",
            json!({"selector": {"matchLabels": {"app": "db"}}, "rules": [{}]}),
            json!({"conditions": [{"type": "ZtunnelAccepted", "status": "False", "reason": "UnsupportedValue"}]}),
        );
        assert!(!no_ztunnel_rejected_policy(std::slice::from_ref(&flagged), &[], false).passed());
        assert!(!no_ztunnel_rejected_policy(&[flagged], &[], true).passed());
        let custom = ap(
            "c",
            json!({"selector": {"matchLabels": {"app": "db"}}, "action": "CUSTOM", "provider": {"name": "ext"}, "rules": [{}]}),
            json!({}),
        );
        let r = no_ztunnel_rejected_policy(&[custom], &[], true);
        assert!(r.message.contains("rejected by ztunnel"), "{}", r.message);
    }

    #[test]
    fn a_policy_that_does_not_convert_fails_the_gate_by_name_and_field() {
        let odd = ap(
            "odd",
            json!({"selector": {"matchLabels": {"app": "db"}}, "rules": [{"to": [{"operation": {"verbs": ["GET"]}}]}]}),
            json!({}),
        );
        let r = no_ztunnel_rejected_policy(std::slice::from_ref(&odd), &[], true);
        assert_eq!(r.outcome, GateOutcome::Fail);
        assert!(r.message.contains("AuthorizationPolicy/app/odd"), "{}", r.message);
        assert!(
            r.message.contains("spec.rules[0].to[0].operation.verbs"),
            "{}",
            r.message
        );
        // A policy step 5 was to delete (a dry run's) is still ignored, converted or not.
        assert!(no_ztunnel_rejected_policy(&[odd], &["odd".into()], false).passed());
    }
}
