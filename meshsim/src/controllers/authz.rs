//! AuthorizationPolicy status as istiod writes it in ambient mode.
//!
//! - Policies without `targetRefs` are translated for ztunnel (`convertAuthorizationPolicy` / `handleRule`
//!   in `pilot/pkg/serviceregistry/kube/controller/ambient/authorization.go`) and get condition
//!   `ZtunnelAccepted` (`WorkloadAuthorization.GetConditions`): CUSTOM/AUDIT -> False, UnsupportedValue,
//!   "ztunnel does not support the X action"; rules with HTTP attributes -> True, UnsupportedValue,
//!   "ztunnel does not support HTTP attributes (found: ...). In ambient mode you must use a waypoint proxy
//!   to enforce HTTP rules. <ALLOW or DENY boilerplate>"; otherwise True, Accepted, "attached to ztunnel".
//! - Policies with `targetRefs` are not sent to ztunnel; they get `WaypointAccepted` (reasons from
//!   `pilot/pkg/model/service.go`): Accepted "bound to ns/waypoint" when each target (a Service bound to a
//!   ready waypoint, or a waypoint Gateway with addresses) resolves, else AncestorNotBound (target exists
//!   but has no usable waypoint) or TargetNotFound. (meshsim approximation: the message wording of the
//!   failure cases is not taken from istiod.)

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::util::{self, generation, name, ns, set_condition};
use super::{Snap, res};
use crate::Sim;

/// `when` keys ztunnel enforces (`l4WhenAttributes`); every other key is an HTTP attribute.
pub const L4_WHEN_KEYS: &[&str] = &[
    "source.ip",
    "source.namespace",
    "source.principal",
    "destination.ip",
    "destination.port",
];

const HTTP_RULE_FMT_TAIL: &str = "In ambient mode you must use a waypoint proxy to enforce HTTP rules.";
const DENY_BOILERPLATE: &str = "DENY policy with HTTP attributes is enforced without the HTTP rules. This will be more restrictive than requested.";
const ALLOW_BOILERPLATE: &str = "Within an ALLOW policy, rules matching HTTP attributes are omitted. This will be more restrictive than requested.";

fn non_empty(v: &Value) -> bool {
    v.as_array().is_some_and(|a| !a.is_empty())
}

/// The HTTP attributes a rule uses, as `handleRule` names them (`httpOperations`, `httpSources`, non-L4
/// `when` keys). Empty means ztunnel can enforce the rule as written. Shared with the traffic model.
pub fn rule_http_attributes(rule: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for to in rule["to"].as_array().into_iter().flatten() {
        let op = &to["operation"];
        for f in ["hosts", "notHosts", "methods", "notMethods", "paths", "notPaths"] {
            if non_empty(&op[f]) {
                found.push(f.to_string());
            }
        }
    }
    for from in rule["from"].as_array().into_iter().flatten() {
        let s = &from["source"];
        for f in [
            "remoteIpBlocks",
            "notRemoteIpBlocks",
            "requestPrincipals",
            "notRequestPrincipals",
        ] {
            if non_empty(&s[f]) {
                found.push(f.to_string());
            }
        }
    }
    for w in rule["when"].as_array().into_iter().flatten() {
        let k = w["key"].as_str().unwrap_or("");
        if !L4_WHEN_KEYS.contains(&k) {
            found.push(k.to_string());
        }
    }
    found
}

/// `(bound, reason, message)` of the ZtunnelAccepted condition for a policy spec without targetRefs.
pub fn ztunnel_status(spec: &Value) -> (bool, &'static str, String) {
    let action = spec["action"].as_str().unwrap_or("ALLOW");
    let boilerplate = match action {
        "ALLOW" => ALLOW_BOILERPLATE,
        "DENY" => DENY_BOILERPLATE,
        other => {
            return (
                false,
                "UnsupportedValue",
                format!("ztunnel does not support the {other} action"),
            );
        }
    };
    let found: BTreeSet<String> = spec["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(rule_http_attributes)
        .collect();
    if found.is_empty() {
        return (true, "Accepted", "attached to ztunnel".into());
    }
    let list: Vec<String> = found.into_iter().collect();
    (
        true,
        "UnsupportedValue",
        format!(
            "ztunnel does not support HTTP attributes (found: {}). {HTTP_RULE_FMT_TAIL} {boilerplate}",
            list.join(", ")
        ),
    )
}

fn target_refs(spec: &Value) -> Vec<Value> {
    let mut refs: Vec<Value> = spec["targetRefs"].as_array().cloned().unwrap_or_default();
    if spec["targetRef"].is_object() {
        refs.push(spec["targetRef"].clone());
    }
    refs
}

/// WaypointAccepted for a policy with targetRefs.
fn waypoint_status(snap: &Snap, pol: &Value, refs: &[Value]) -> (bool, &'static str, String) {
    let pns = ns(pol);
    let mut bound = Vec::new();
    for r in refs {
        let kind = r["kind"].as_str().unwrap_or("");
        let tname = r["name"].as_str().unwrap_or("");
        match kind {
            "Service" => {
                let Some(svc) = snap.services.iter().find(|s| ns(s) == pns && name(s) == tname) else {
                    return (
                        false,
                        "TargetNotFound",
                        format!("not bound: Service {pns}/{tname} not found"),
                    );
                };
                match super::waypoint::binding(snap, svc) {
                    Some((true, _, msg)) => bound.push(
                        msg.trim_start_matches("Successfully attached to waypoint ")
                            .to_string(),
                    ),
                    _ => {
                        return (
                            false,
                            "AncestorNotBound",
                            format!("not bound: Service {pns}/{tname} is not bound to a ready waypoint"),
                        );
                    }
                }
            }
            "Gateway" => {
                let Some(gw) = snap.gateways.iter().find(|g| ns(g) == pns && name(g) == tname) else {
                    return (
                        false,
                        "TargetNotFound",
                        format!("not bound: Gateway {pns}/{tname} not found"),
                    );
                };
                if gw["status"]["addresses"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
                {
                    bound.push(format!("{pns}/{tname}"));
                } else {
                    return (
                        false,
                        "AncestorNotBound",
                        format!("not bound: waypoint {pns}/{tname} is not ready"),
                    );
                }
            }
            // GatewayClass / ServiceEntry targets: accepted as declared (not modelled further).
            _ => bound.push(format!("{pns}/{tname}")),
        }
    }
    (true, "Accepted", format!("bound to {}", bound.join(", ")))
}

pub(crate) fn reconcile(sim: &Sim, snap: &Snap) {
    if !sim.settings.istio.install {
        return;
    }
    for pol in &snap.authz {
        let spec = &pol["spec"];
        let refs = target_refs(spec);
        let g = generation(pol);
        let mut conds = util::conditions(pol);
        let (ctype, other, (ok, reason, msg)) = if refs.is_empty() {
            ("ZtunnelAccepted", "WaypointAccepted", ztunnel_status(spec))
        } else {
            (
                "WaypointAccepted",
                "ZtunnelAccepted",
                waypoint_status(snap, pol, &refs),
            )
        };
        conds.retain(|c| c["type"] != other);
        set_condition(
            &mut conds,
            ctype,
            if ok { "True" } else { "False" },
            reason,
            &msg,
            false,
            Some(g),
        );
        if conds == util::conditions(pol) {
            continue;
        }
        util::update(
            sim,
            res("security.istio.io", "authorizationpolicies"),
            ns(pol),
            name(pol),
            "istiod",
            |o| {
                o["status"] = json!({"conditions": conds});
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(v: Value) -> Vec<String> {
        rule_http_attributes(&v)
    }

    #[test]
    fn every_http_field_is_flagged() {
        for f in ["hosts", "notHosts", "methods", "notMethods", "paths", "notPaths"] {
            assert_eq!(
                rule(json!({"to": [{"operation": {f: ["x"]}}]})),
                vec![f.to_string()],
                "{f}"
            );
        }
        for f in [
            "requestPrincipals",
            "notRequestPrincipals",
            "remoteIpBlocks",
            "notRemoteIpBlocks",
        ] {
            assert_eq!(
                rule(json!({"from": [{"source": {f: ["x"]}}]})),
                vec![f.to_string()],
                "{f}"
            );
        }
        for k in [
            "request.headers[x-user]",
            "source.serviceAccount",
            "connection.sni",
            "request.auth.claims[iss]",
        ] {
            assert_eq!(
                rule(json!({"when": [{"key": k, "values": ["x"]}]})),
                vec![k.to_string()],
                "{k}"
            );
        }
    }

    #[test]
    fn l4_fields_are_not_flagged() {
        for k in L4_WHEN_KEYS {
            assert!(
                rule(json!({"when": [{"key": k, "values": ["x"]}]})).is_empty(),
                "{k}"
            );
        }
        let l4 = json!({"from": [{"source": {"principals": ["a"], "notPrincipals": ["b"], "namespaces": ["n"],
            "notNamespaces": ["m"], "ipBlocks": ["1.2.3.4"], "notIpBlocks": ["5.6.7.8"],
            "serviceAccounts": ["sa"], "notServiceAccounts": ["x"]}}],
            "to": [{"operation": {"ports": ["80"], "notPorts": ["81"]}}]});
        assert!(rule(l4).is_empty());
        assert!(
            rule(json!({"to": [{"operation": {"methods": []}}]})).is_empty(),
            "empty lists do not count"
        );
    }

    #[test]
    fn status_messages_match_istiod() {
        let (ok, reason, msg) = ztunnel_status(&json!({"action": "CUSTOM", "provider": {"name": "x"}}));
        assert!(!ok);
        assert_eq!(reason, "UnsupportedValue");
        assert_eq!(msg, "ztunnel does not support the CUSTOM action");
        let (ok, reason, msg) = ztunnel_status(&json!({"rules": [
            {"to": [{"operation": {"paths": ["/a"], "methods": ["GET"]}}]},
            {"when": [{"key": "request.auth.presenter", "values": ["p"]}]}]}));
        assert!(ok);
        assert_eq!(reason, "UnsupportedValue");
        assert_eq!(
            msg,
            "ztunnel does not support HTTP attributes (found: methods, paths, request.auth.presenter). In ambient mode you must use a waypoint proxy to enforce HTTP rules. Within an ALLOW policy, rules matching HTTP attributes are omitted. This will be more restrictive than requested."
        );
        let (_, _, msg) = ztunnel_status(
            &json!({"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}),
        );
        assert!(msg.ends_with("DENY policy with HTTP attributes is enforced without the HTTP rules. This will be more restrictive than requested."));
        assert_eq!(
            ztunnel_status(
                &json!({"action": "ALLOW", "rules": [{"from": [{"source": {"principals": ["a"]}}]}]})
            ),
            (true, "Accepted", "attached to ztunnel".to_string())
        );
    }
}
