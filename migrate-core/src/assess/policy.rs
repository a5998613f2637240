//! AuthorizationPolicy parsing and ztunnel translation classification.
//!
//! Source of the rules: istio/istio `pilot/pkg/serviceregistry/ambient/authorization.go`
//! (`convertAuthorizationPolicy`, `handleRule`), summarised in `docs/reference/istio-ambient-facts.md` §3f:
//! - `targetRefs` policies are never sent to ztunnel; CUSTOM and AUDIT are rejected by ztunnel.
//! - L7 ("HTTP attributes"): `to.operation.{hosts,notHosts,methods,notMethods,paths,notPaths}`,
//!   `from.source.{requestPrincipals,notRequestPrincipals,remoteIpBlocks,notRemoteIpBlocks}`, and any `when`
//!   key other than `source.ip`, `source.namespace`, `source.principal`, `destination.ip`, `destination.port`.
//! - L4: `to.operation.{ports,notPorts}`, `from.source.{principals,notPrincipals,namespaces,notNamespaces,
//!   serviceAccounts,notServiceAccounts,ipBlocks,notIpBlocks}` and those five `when` keys.
//! - ALLOW: a rule with any L7 attribute is dropped (an ALLOW policy left with no rule denies everything).
//!   DENY: a rule loses its L7 attributes; a clause (`from`, `to`, each `when`) left with only emptied matches
//!   never matches, so the rule never fires (no effect, upstream `hasEffectiveRules`); only when every clause
//!   keeps an L4 field does it fire, and then it denies more than asked ([`deny_rule_fires_at_ztunnel`]).

use crate::assess::json;
use crate::steps::ObjRef;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// `to.operation` fields ztunnel cannot enforce.
pub const L7_OPERATION_FIELDS: [&str; 6] =
    ["hosts", "notHosts", "methods", "notMethods", "paths", "notPaths"];
/// `from.source` fields ztunnel cannot enforce.
pub const L7_SOURCE_FIELDS: [&str; 4] = [
    "requestPrincipals",
    "notRequestPrincipals",
    "remoteIpBlocks",
    "notRemoteIpBlocks",
];
/// `when` keys ztunnel enforces; every other key is L7.
pub const L4_WHEN_KEYS: [&str; 5] = [
    "source.ip",
    "source.namespace",
    "source.principal",
    "destination.ip",
    "destination.port",
];

/// Policy action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// ALLOW (the default when absent).
    Allow,
    /// DENY.
    Deny,
    /// CUSTOM (ext-authz).
    Custom,
    /// AUDIT.
    Audit,
}

/// A `targetRefs` entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TargetRef {
    /// API group (`""` for core).
    pub group: String,
    /// Kind (`Service`, `Gateway`, `GatewayClass`, `ServiceEntry`).
    pub kind: String,
    /// Name.
    pub name: String,
}

impl TargetRef {
    /// A core Service reference (group `""` or `core`).
    pub fn is_service(&self) -> bool {
        self.kind == "Service" && (self.group.is_empty() || self.group == "core")
    }
}

/// How the policy attaches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum Attachment {
    /// `selector.matchLabels` (workload selector; sent to ztunnel).
    Selector {
        /// matchLabels.
        match_labels: BTreeMap<String, String>,
    },
    /// No selector, no targetRefs: every workload of the namespace (mesh-wide in the root namespace).
    NamespaceWide,
    /// `targetRefs` (or legacy `targetRef`): enforced by the waypoint / gateway only.
    TargetRefs {
        /// The references.
        refs: Vec<TargetRef>,
    },
}

/// A parsed AuthorizationPolicy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuthzPolicy {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Action.
    pub action: Action,
    /// Attachment.
    pub attachment: Attachment,
    /// `spec.rules` as written (absent = empty list).
    pub rules: Vec<Value>,
    /// `istio.io/dry-run` annotation set to true.
    pub dry_run: bool,
    /// `spec.provider` as written (the ext-authz provider of a CUSTOM policy).
    pub provider: Option<Value>,
}

/// The fields of an AuthorizationPolicy this tool understands, as in istio/api
/// `security/v1beta1/authorization.proto` (JSON names). A field outside them (a newer API, a typo that the
/// cluster accepted) cannot be classified as L4 or L7, so the policy fails closed: it blocks the namespace
/// instead of being taken for L4 and passing preflight.
const SPEC_FIELDS: [&str; 6] = [
    "selector",
    "targetRef",
    "targetRefs",
    "action",
    "provider",
    "rules",
];
const RULE_FIELDS: [&str; 3] = ["from", "to", "when"];
const SOURCE_FIELDS: [&str; 12] = [
    "principals",
    "notPrincipals",
    "requestPrincipals",
    "notRequestPrincipals",
    "namespaces",
    "notNamespaces",
    "serviceAccounts",
    "notServiceAccounts",
    "ipBlocks",
    "notIpBlocks",
    "remoteIpBlocks",
    "notRemoteIpBlocks",
];
const OPERATION_FIELDS: [&str; 8] = [
    "hosts",
    "notHosts",
    "ports",
    "notPorts",
    "methods",
    "notMethods",
    "paths",
    "notPaths",
];
const CONDITION_FIELDS: [&str; 3] = ["key", "values", "notValues"];

/// The path of the first field of `spec` outside the known ones, e.g. `rules[0].to[0].operation.verbs`.
pub fn unknown_field(spec: &Value) -> Option<String> {
    let keys = |v: &Value, known: &[&str], at: &str| -> Option<String> {
        v.as_object()?
            .keys()
            .find(|k| !known.contains(&k.as_str()))
            .map(|k| {
                if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                }
            })
    };
    if let Some(f) = keys(spec, &SPEC_FIELDS, "") {
        return Some(f);
    }
    for (i, rule) in spec["rules"].as_array().into_iter().flatten().enumerate() {
        let at = format!("rules[{i}]");
        if let Some(f) = keys(rule, &RULE_FIELDS, &at) {
            return Some(f);
        }
        for (j, from) in rule["from"].as_array().into_iter().flatten().enumerate() {
            let at = format!("{at}.from[{j}]");
            if let Some(f) = keys(from, &["source"], &at)
                .or_else(|| keys(&from["source"], &SOURCE_FIELDS, &format!("{at}.source")))
            {
                return Some(f);
            }
        }
        for (j, to) in rule["to"].as_array().into_iter().flatten().enumerate() {
            let at = format!("{at}.to[{j}]");
            if let Some(f) = keys(to, &["operation"], &at)
                .or_else(|| keys(&to["operation"], &OPERATION_FIELDS, &format!("{at}.operation")))
            {
                return Some(f);
            }
        }
        for (j, when) in rule["when"].as_array().into_iter().flatten().enumerate() {
            if let Some(f) = keys(when, &CONDITION_FIELDS, &format!("{at}.when[{j}]")) {
                return Some(f);
            }
        }
    }
    None
}

/// Why a policy could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// A field this tool cannot classify.
    #[error(
        "AuthorizationPolicy {ns}/{name}: unknown field spec.{field}; its effect at ztunnel and at a waypoint cannot be judged, so the namespace is not migrated: fix the field, or migrate this policy by hand and remove it from the namespace first"
    )]
    UnknownField {
        /// Namespace.
        ns: String,
        /// Name.
        name: String,
        /// Path below `spec`.
        field: String,
    },
    /// Unknown action.
    #[error(
        "AuthorizationPolicy {ns}/{name}: unknown action {action:?}; fix the policy (ALLOW, DENY, CUSTOM, AUDIT)"
    )]
    UnknownAction {
        /// Namespace.
        ns: String,
        /// Name.
        name: String,
        /// Action text.
        action: String,
    },
}

impl AuthzPolicy {
    /// Parse from the object JSON.
    pub fn parse(v: &Value) -> Result<Self, PolicyError> {
        let ns = json::namespace(v).to_string();
        let name = json::name(v).to_string();
        let action = match v
            .pointer("/spec/action")
            .and_then(Value::as_str)
            .unwrap_or("ALLOW")
        {
            "ALLOW" => Action::Allow,
            "DENY" => Action::Deny,
            "CUSTOM" => Action::Custom,
            "AUDIT" => Action::Audit,
            other => {
                return Err(PolicyError::UnknownAction {
                    ns,
                    name,
                    action: other.into(),
                });
            }
        };
        if let Some(field) = v.get("spec").and_then(unknown_field) {
            return Err(PolicyError::UnknownField { ns, name, field });
        }
        let mut refs: Vec<TargetRef> = Vec::new();
        let mut push_ref = |r: &Value| {
            refs.push(TargetRef {
                group: r["group"].as_str().unwrap_or("").into(),
                kind: r["kind"].as_str().unwrap_or("").into(),
                name: r["name"].as_str().unwrap_or("").into(),
            })
        };
        if let Some(a) = v.pointer("/spec/targetRefs").and_then(Value::as_array) {
            a.iter().for_each(&mut push_ref);
        }
        if let Some(r) = v.pointer("/spec/targetRef").filter(|r| r.is_object()) {
            push_ref(r);
        }
        let attachment = if !refs.is_empty() {
            Attachment::TargetRefs { refs }
        } else if v.pointer("/spec/selector").is_some_and(|s| !s.is_null()) {
            Attachment::Selector {
                match_labels: json::str_map(v, "/spec/selector/matchLabels"),
            }
        } else {
            Attachment::NamespaceWide
        };
        let rules = v
            .pointer("/spec/rules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let dry_run = v
            .pointer("/metadata/annotations/istio.io~1dry-run")
            .and_then(Value::as_str)
            == Some("true");
        Ok(AuthzPolicy {
            namespace: ns,
            name,
            action,
            attachment,
            rules,
            dry_run,
            provider: v.pointer("/spec/provider").cloned(),
        })
    }

    /// The policy as an object again, from its typed form (an AuthorizationPolicy has no field outside it:
    /// [`AuthzPolicy::parse`] refuses any). A legacy `targetRef` is written as `targetRefs`, which istiod
    /// treats the same (pilot/pkg/model/policyattachment.go `GetTargetRefs`); labels are not kept.
    pub fn manifest(&self) -> Value {
        let mut spec = serde_json::json!({"action": self.action, "rules": self.rules});
        match &self.attachment {
            Attachment::Selector { match_labels } => {
                spec["selector"] = serde_json::json!({ "matchLabels": match_labels })
            }
            Attachment::TargetRefs { refs } => spec["targetRefs"] = serde_json::json!(refs),
            Attachment::NamespaceWide => {}
        }
        if let Some(p) = &self.provider {
            spec["provider"] = p.clone();
        }
        let mut metadata = serde_json::json!({"name": self.name, "namespace": self.namespace});
        if self.dry_run {
            metadata["annotations"] = serde_json::json!({"istio.io/dry-run": "true"});
        }
        serde_json::json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                           "metadata": metadata, "spec": spec})
    }

    /// ObjRef of the policy.
    pub fn obj_ref(&self) -> ObjRef {
        ObjRef::new(
            "security.istio.io/v1",
            "AuthorizationPolicy",
            &self.namespace,
            &self.name,
        )
    }

    /// Is the policy sent to ztunnel (selector or namespace-wide)?
    pub fn is_workload_scoped(&self) -> bool {
        !matches!(self.attachment, Attachment::TargetRefs { .. })
    }

    /// The selector labels (`{}` for namespace-wide), `None` for targetRefs policies.
    pub fn selector(&self) -> Option<BTreeMap<String, String>> {
        match &self.attachment {
            Attachment::Selector { match_labels } => Some(match_labels.clone()),
            Attachment::NamespaceWide => Some(BTreeMap::new()),
            Attachment::TargetRefs { .. } => None,
        }
    }

    /// Per-rule classification.
    pub fn rule_classes(&self) -> Vec<RuleClass> {
        self.rules.iter().map(classify_rule).collect()
    }

    /// Policy classification.
    pub fn class(&self) -> PolicyClass {
        if matches!(self.action, Action::Custom | Action::Audit) {
            return PolicyClass::Unsupported;
        }
        let fields: BTreeSet<String> = self
            .rule_classes()
            .into_iter()
            .flat_map(|r| r.l7_fields)
            .collect();
        if fields.is_empty() {
            PolicyClass::L4Only
        } else {
            PolicyClass::L7 {
                fields: fields.into_iter().collect(),
            }
        }
    }

    /// Has L7 content (any L7 field, or a CUSTOM/AUDIT action that needs a waypoint)?
    pub fn needs_waypoint(&self) -> bool {
        self.class() != PolicyClass::L4Only
    }

    /// What ztunnel does with this policy.
    pub fn ztunnel_effect(&self) -> ZtunnelEffect {
        if !self.is_workload_scoped() {
            return ZtunnelEffect::NotSent;
        }
        if matches!(self.action, Action::Custom | Action::Audit) {
            return ZtunnelEffect::Rejected;
        }
        let classes = self.rule_classes();
        let l7_rules: Vec<usize> = classes
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_l7())
            .map(|(i, _)| i)
            .collect();
        if l7_rules.is_empty() {
            return ZtunnelEffect::Exact;
        }
        match self.action {
            Action::Allow => {
                let remaining = classes.len() - l7_rules.len();
                ZtunnelEffect::AllowRulesDropped {
                    dropped: l7_rules,
                    remaining,
                    deny_all: remaining == 0,
                }
            }
            _ => {
                let fires = |i: &usize| self.rules.get(*i).is_some_and(deny_rule_fires_at_ztunnel);
                let broadened: Vec<usize> = l7_rules.iter().copied().filter(fires).collect();
                let no_effect: Vec<usize> = l7_rules.iter().copied().filter(|i| !fires(i)).collect();
                if broadened.is_empty() && no_effect.len() == classes.len() {
                    ZtunnelEffect::DenyNoEffect
                } else {
                    ZtunnelEffect::DenyDegraded { broadened, no_effect }
                }
            }
        }
    }
}

/// Classification of one rule.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RuleClass {
    /// L7 attributes found, as paths: `to.operation.methods`, `from.source.requestPrincipals`,
    /// `when[request.headers[x]]`.
    pub l7_fields: Vec<String>,
    /// Any L4 attribute present.
    pub has_l4: bool,
}

impl RuleClass {
    /// Has L7 attributes.
    pub fn is_l7(&self) -> bool {
        !self.l7_fields.is_empty()
    }
}

/// Classify one rule per §3f. Only known fields count as L4: an unknown one is not taken for an
/// enforceable match ([`AuthzPolicy::parse`] refuses it before any decision).
pub fn classify_rule(rule: &Value) -> RuleClass {
    let mut c = RuleClass::default();
    let clauses: [(&str, &str, &[&str], &[&str]); 2] = [
        ("from", "source", &L7_SOURCE_FIELDS, &SOURCE_FIELDS),
        ("to", "operation", &L7_OPERATION_FIELDS, &OPERATION_FIELDS),
    ];
    for (list, item, l7, l4) in clauses {
        for clause in rule[list].as_array().into_iter().flatten() {
            for k in clause[item].as_object().into_iter().flat_map(|o| o.keys()) {
                if l7.contains(&k.as_str()) {
                    push_unique(&mut c.l7_fields, format!("{list}.{item}.{k}"));
                } else if l4.contains(&k.as_str()) {
                    c.has_l4 = true;
                }
            }
        }
    }
    for w in rule["when"].as_array().into_iter().flatten() {
        let key = w["key"].as_str().unwrap_or("");
        if L4_WHEN_KEYS.contains(&key) {
            c.has_l4 = true;
        } else {
            push_unique(&mut c.l7_fields, format!("when[{key}]"));
        }
    }
    c
}

/// Whether a DENY rule still fires at ztunnel once its HTTP attributes are removed. istiod turns the rule
/// into clauses (`to`, `from`, one per `when` condition; `handleRule` in
/// pilot/pkg/serviceregistry/ambient/authorization.go) whose matches lose their HTTP fields; ztunnel skips
/// empty matches (`RbacMatch::is_empty`), so a clause left with only emptied matches never matches and the
/// whole rule never fires ("no enforceable rules ... no effect", `hasEffectiveRules`). A rule fires only when
/// every clause keeps at least one match with an L4 field: then it denies more than asked.
pub fn deny_rule_fires_at_ztunnel(rule: &Value) -> bool {
    let non_empty = |v: &Value| v.as_array().is_some_and(|a| !a.is_empty()) || v.as_str().is_some();
    let from_ok = |list: &Vec<Value>| {
        list.iter().any(|f| {
            f["source"].as_object().is_some_and(|src| {
                src.iter()
                    .any(|(k, v)| !L7_SOURCE_FIELDS.contains(&k.as_str()) && non_empty(v))
            })
        })
    };
    let to_ok = |list: &Vec<Value>| {
        list.iter().any(|t| {
            t["operation"].as_object().is_some_and(|op| {
                op.iter()
                    .any(|(k, v)| !L7_OPERATION_FIELDS.contains(&k.as_str()) && non_empty(v))
            })
        })
    };
    let from = rule["from"].as_array().filter(|a| !a.is_empty());
    let to = rule["to"].as_array().filter(|a| !a.is_empty());
    let when_ok = rule["when"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|w| L4_WHEN_KEYS.contains(&w["key"].as_str().unwrap_or("")));
    from.is_none_or(from_ok) && to.is_none_or(to_ok) && when_ok
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

/// Policy class for reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "class")]
pub enum PolicyClass {
    /// Only L4 attributes: ztunnel enforces it exactly.
    L4Only,
    /// Has L7 attributes (listed).
    L7 {
        /// The L7 attributes.
        fields: Vec<String>,
    },
    /// CUSTOM or AUDIT: needs a waypoint (ztunnel rejects it).
    Unsupported,
}

/// What ztunnel makes of a policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "effect")]
pub enum ZtunnelEffect {
    /// `targetRefs`: never sent to ztunnel.
    NotSent,
    /// CUSTOM/AUDIT: rejected (`UnsupportedValue`).
    Rejected,
    /// L4-only: enforced as written.
    Exact,
    /// ALLOW with L7 rules: those rules are dropped; `deny_all` when none remains.
    AllowRulesDropped {
        /// Indices of dropped rules.
        dropped: Vec<usize>,
        /// Rules left.
        remaining: usize,
        /// No rule left: the policy denies everything.
        deny_all: bool,
    },
    /// DENY whose every rule is L7-only: never fires.
    DenyNoEffect,
    /// DENY losing HTTP parts: rules in `broadened` deny more than asked, rules in `no_effect` never fire.
    DenyDegraded {
        /// Rules keeping L4 parts (deny more than asked).
        broadened: Vec<usize>,
        /// Rules with nothing L4 left.
        no_effect: Vec<usize>,
    },
}

/// Istio string match: exact, `*`, prefix `abc*`, suffix `*abc`.
pub fn istio_match(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(p) = pattern.strip_suffix('*') {
        return value.starts_with(p);
    }
    if let Some(s) = pattern.strip_prefix('*') {
        return value.ends_with(s);
    }
    pattern == value
}

fn any_match(list: &Value, value: &str) -> bool {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|p| istio_match(p, value))
}

/// A mesh identity (SPIFFE without the scheme): `<td>/ns/<ns>/sa/<sa>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identity {
    /// Trust domain.
    pub trust_domain: String,
    /// Namespace.
    pub namespace: String,
    /// Service account.
    pub service_account: String,
}

impl Identity {
    /// The principal string.
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }

    /// Parse `<td>/ns/<ns>/sa/<sa>` (also with `spiffe://`).
    pub fn parse(p: &str) -> Option<Identity> {
        let p = p.strip_prefix("spiffe://").unwrap_or(p);
        let parts: Vec<&str> = p.split('/').collect();
        match parts.as_slice() {
            [td, "ns", ns, "sa", sa] => Some(Identity {
                trust_domain: td.to_string(),
                namespace: ns.to_string(),
                service_account: sa.to_string(),
            }),
            _ => None,
        }
    }
}

/// Does one `from.source` admit `id` (L4 identity fields only; `ipBlocks` cannot be decided and count as
/// not admitting; L7 fields are ignored)?
fn source_admits(src: &Value, id: &Identity) -> bool {
    let principal = id.principal();
    let sa_full = format!("{}/{}", id.namespace, id.service_account);
    if src.get("principals").is_some() && !any_match(&src["principals"], &principal) {
        return false;
    }
    if any_match(&src["notPrincipals"], &principal) {
        return false;
    }
    if src.get("namespaces").is_some() && !any_match(&src["namespaces"], &id.namespace) {
        return false;
    }
    if any_match(&src["notNamespaces"], &id.namespace) {
        return false;
    }
    if src.get("serviceAccounts").is_some()
        && !any_match(&src["serviceAccounts"], &sa_full)
        && !any_match(&src["serviceAccounts"], &id.service_account)
    {
        return false;
    }
    if any_match(&src["notServiceAccounts"], &sa_full) {
        return false;
    }
    if src.get("ipBlocks").is_some() {
        return false;
    }
    true
}

/// Does `rule` (as ztunnel sees it: L4 parts only) admit traffic from `id`? `when` conditions on
/// `source.principal` / `source.namespace` are checked; the others do not depend on the caller identity.
pub fn rule_admits(rule: &Value, id: &Identity) -> bool {
    let from_ok = match rule["from"].as_array() {
        None => true,
        Some(froms) if froms.is_empty() => true,
        Some(froms) => froms.iter().any(|f| source_admits(&f["source"], id)),
    };
    if !from_ok {
        return false;
    }
    for w in rule["when"].as_array().into_iter().flatten() {
        let val = match w["key"].as_str() {
            Some("source.principal") => id.principal(),
            Some("source.namespace") => id.namespace.clone(),
            _ => continue,
        };
        if w.get("values").is_some() && !any_match(&w["values"], &val) {
            return false;
        }
        if any_match(&w["notValues"], &val) {
            return false;
        }
    }
    true
}

/// Does this L4 ALLOW policy, as ztunnel enforces it, admit `id` (some surviving rule admits it)?
pub fn allow_admits(p: &AuthzPolicy, id: &Identity) -> bool {
    p.rules
        .iter()
        .zip(p.rule_classes())
        .any(|(r, c)| !c.is_l7() && rule_admits(r, id))
}

/// Identities and namespaces a policy's `from` names (for the caller graph): namespaces from `principals`
/// (`<td>/ns/<ns>/sa/..`), `namespaces`, and `serviceAccounts` (`<ns>/<sa>`); wildcards are skipped.
pub fn caller_namespaces(p: &AuthzPolicy) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in &p.rules {
        for f in r["from"].as_array().into_iter().flatten() {
            let src = &f["source"];
            for pr in src["principals"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if let Some(id) = Identity::parse(pr)
                    && !id.namespace.contains('*')
                {
                    out.insert(id.namespace);
                }
            }
            for ns in src["namespaces"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !ns.contains('*') {
                    out.insert(ns.to_string());
                }
            }
            for sa in src["serviceAccounts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if let Some((ns, _)) = sa.split_once('/')
                    && !ns.contains('*')
                {
                    out.insert(ns.to_string());
                }
            }
        }
    }
    out
}

/// Do two policies' rules say the same thing? JSON equality of `spec.rules`, with absent = `[]`.
pub fn same_rules(a: &AuthzPolicy, b: &AuthzPolicy) -> bool {
    a.rules == b.rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_fail_closed_with_their_path() {
        let ap = |spec: Value| {
            AuthzPolicy::parse(&serde_json::json!({
                "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": "p", "namespace": "shop"}, "spec": spec
            }))
        };
        let known = serde_json::json!({"selector": {"matchLabels": {"app": "api"}}, "action": "DENY",
            "rules": [{"from": [{"source": {"serviceAccounts": ["shop/web"], "notIpBlocks": ["10.0.0.0/8"]}}],
                       "to": [{"operation": {"notPorts": ["9090"], "methods": ["GET"]}}],
                       "when": [{"key": "request.headers[x]", "notValues": ["y"]}]}]});
        assert!(ap(known).is_ok());
        for (spec, field) in [
            (
                serde_json::json!({"rules": [{"to": [{"operation": {"verbs": ["GET"]}}]}]}),
                "rules[0].to[0].operation.verbs",
            ),
            (
                serde_json::json!({"rules": [{"from": [{"source": {"principal": ["x"]}}]}]}),
                "rules[0].from[0].source.principal",
            ),
            (
                serde_json::json!({"rules": [{"when": [{"key": "source.ip", "value": ["1.2.3.4"]}]}]}),
                "rules[0].when[0].value",
            ),
            (serde_json::json!({"rules": [{"unless": []}]}), "rules[0].unless"),
            (serde_json::json!({"selectors": {}}), "selectors"),
        ] {
            match ap(spec) {
                Err(e @ PolicyError::UnknownField { .. }) => {
                    assert!(e.to_string().contains(&format!("spec.{field};")), "{e}")
                }
                other => panic!("{field}: expected UnknownField, got {other:?}"),
            }
        }
    }
    use serde_json::json;

    fn ap(spec: Value) -> AuthzPolicy {
        AuthzPolicy::parse(
            &json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "p", "namespace": "app"}, "spec": spec}),
        )
        .unwrap()
    }
    fn rule_l7(rule: Value) -> Vec<String> {
        classify_rule(&rule).l7_fields
    }

    #[test]
    fn the_typed_policy_round_trips_through_its_manifest() {
        let specs = [
            json!({"selector": {"matchLabels": {"app": "api"}}, "action": "DENY",
                   "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]}),
            json!({"targetRefs": [{"kind": "Service", "group": "", "name": "api"}], "action": "CUSTOM",
                   "provider": {"name": "ext-authz"}, "rules": [{}]}),
            json!({"targetRef": {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}}),
            json!({}),
        ];
        for spec in specs {
            let mut p = ap(spec.clone());
            p.dry_run = true;
            let again = AuthzPolicy::parse(&p.manifest()).unwrap();
            assert_eq!(again, p, "{spec}");
        }
    }

    #[test]
    fn l7_operation_fields_each() {
        for f in L7_OPERATION_FIELDS {
            let r = json!({"to": [{"operation": {f: ["x"]}}]});
            assert_eq!(rule_l7(r.clone()), vec![format!("to.operation.{f}")], "{f}");
            assert!(!classify_rule(&r).has_l4);
        }
    }

    #[test]
    fn l7_source_fields_each() {
        for f in L7_SOURCE_FIELDS {
            let r = json!({"from": [{"source": {f: ["x"]}}]});
            assert_eq!(rule_l7(r), vec![format!("from.source.{f}")], "{f}");
        }
    }

    #[test]
    fn l4_fields_each() {
        for f in ["ports", "notPorts"] {
            let r = json!({"to": [{"operation": {f: ["80"]}}]});
            assert!(rule_l7(r.clone()).is_empty(), "{f}");
            assert!(classify_rule(&r).has_l4);
        }
        for f in [
            "principals",
            "notPrincipals",
            "namespaces",
            "notNamespaces",
            "serviceAccounts",
            "notServiceAccounts",
            "ipBlocks",
            "notIpBlocks",
        ] {
            let r = json!({"from": [{"source": {f: ["x"]}}]});
            assert!(rule_l7(r.clone()).is_empty(), "{f}");
            assert!(classify_rule(&r).has_l4, "{f}");
        }
    }

    #[test]
    fn when_keys() {
        for k in L4_WHEN_KEYS {
            let r = json!({"when": [{"key": k, "values": ["x"]}]});
            assert!(rule_l7(r.clone()).is_empty(), "{k}");
            assert!(classify_rule(&r).has_l4);
        }
        for k in [
            "request.headers[x-user]",
            "request.auth.claims[iss]",
            "connection.sni",
            "source.serviceAccount",
            "remote.ip",
        ] {
            let r = json!({"when": [{"key": k, "values": ["x"]}]});
            assert_eq!(rule_l7(r), vec![format!("when[{k}]")], "{k}");
        }
    }

    #[test]
    fn parse_attachments_and_actions() {
        let p = ap(json!({"selector": {"matchLabels": {"app": "api"}}, "action": "DENY"}));
        assert_eq!(p.action, Action::Deny);
        assert_eq!(p.selector().unwrap()["app"], "api");
        let p = ap(json!({"targetRefs": [{"kind": "Service", "group": "", "name": "api"}]}));
        assert_eq!(p.action, Action::Allow);
        assert!(!p.is_workload_scoped());
        assert_eq!(p.ztunnel_effect(), ZtunnelEffect::NotSent);
        let Attachment::TargetRefs { refs } = &p.attachment else {
            panic!()
        };
        assert!(refs[0].is_service());
        let p = ap(
            json!({"targetRef": {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}}),
        );
        assert!(matches!(&p.attachment, Attachment::TargetRefs { refs } if !refs[0].is_service()));
        let p = ap(json!({}));
        assert_eq!(p.attachment, Attachment::NamespaceWide);
        assert_eq!(p.selector(), Some(BTreeMap::new()));
        let e = AuthzPolicy::parse(
            &json!({"metadata": {"name": "x", "namespace": "n"}, "spec": {"action": "NOPE"}}),
        );
        assert!(e.unwrap_err().to_string().contains("NOPE"));
        let p = AuthzPolicy::parse(&json!({"metadata": {"name": "x", "namespace": "n",
            "annotations": {"istio.io/dry-run": "true"}}, "spec": {}}))
        .unwrap();
        assert!(p.dry_run);
    }

    #[test]
    fn vector_policies() {
        // Policies P, L4, D7, DM of vectors/traffic-model.yaml.
        let p = ap(
            json!({"selector": {"matchLabels": {"app": "api"}}, "action": "ALLOW", "rules": [
            {"from": [{"source": {"principals": ["cluster.local/ns/app/sa/web"]}}],
             "to": [{"operation": {"methods": ["GET"]}}]}]}),
        );
        assert_eq!(
            p.class(),
            PolicyClass::L7 {
                fields: vec!["to.operation.methods".into()]
            }
        );
        assert_eq!(
            p.ztunnel_effect(),
            ZtunnelEffect::AllowRulesDropped {
                dropped: vec![0],
                remaining: 0,
                deny_all: true
            }
        );
        let l4 = ap(
            json!({"selector": {"matchLabels": {"app": "db"}}, "action": "ALLOW", "rules": [
            {"from": [{"source": {"principals": ["cluster.local/ns/app/sa/api"]}}]}]}),
        );
        assert_eq!(l4.class(), PolicyClass::L4Only);
        assert_eq!(l4.ztunnel_effect(), ZtunnelEffect::Exact);
        let d7 = ap(
            json!({"selector": {"matchLabels": {"app": "api"}}, "action": "DENY", "rules": [
            {"to": [{"operation": {"methods": ["DELETE"]}}]}]}),
        );
        assert_eq!(d7.ztunnel_effect(), ZtunnelEffect::DenyNoEffect);
        // Vector DM: the `to` clause keeps only an emptied match, so the rule never fires (upstream
        // hasEffectiveRules), even though its `from` part is L4.
        let dm = ap(
            json!({"selector": {"matchLabels": {"app": "api"}}, "action": "DENY", "rules": [
            {"from": [{"source": {"namespaces": ["other"]}}], "to": [{"operation": {"methods": ["DELETE"]}}]}]}),
        );
        assert_eq!(dm.ztunnel_effect(), ZtunnelEffect::DenyNoEffect);
        assert!(dm.needs_waypoint());
        // With a port next to the method the `to` clause survives: the DENY now covers every method.
        let dp = ap(
            json!({"selector": {"matchLabels": {"app": "api"}}, "action": "DENY", "rules": [
            {"from": [{"source": {"namespaces": ["other"]}}], "to": [{"operation": {"methods": ["DELETE"], "ports": ["8080"]}}]}]}),
        );
        assert_eq!(
            dp.ztunnel_effect(),
            ZtunnelEffect::DenyDegraded {
                broadened: vec![0],
                no_effect: vec![]
            }
        );
        // An L7 `when` condition empties its own clause.
        let dw = ap(json!({"action": "DENY", "rules": [
            {"from": [{"source": {"namespaces": ["other"]}}], "when": [{"key": "request.headers[x]", "values": ["1"]}]}]}));
        assert_eq!(dw.ztunnel_effect(), ZtunnelEffect::DenyNoEffect);
    }

    #[test]
    fn allow_partially_dropped_and_custom() {
        let p = ap(
            json!({"rules": [{"to": [{"operation": {"paths": ["/a"]}}]}, {"to": [{"operation": {"ports": ["80"]}}]}]}),
        );
        assert_eq!(
            p.ztunnel_effect(),
            ZtunnelEffect::AllowRulesDropped {
                dropped: vec![0],
                remaining: 1,
                deny_all: false
            }
        );
        let c = ap(json!({"action": "CUSTOM", "provider": {"name": "x"}, "rules": [{}]}));
        assert_eq!(c.class(), PolicyClass::Unsupported);
        assert_eq!(c.ztunnel_effect(), ZtunnelEffect::Rejected);
        assert!(c.needs_waypoint());
        let a = ap(json!({"action": "AUDIT"}));
        assert_eq!(a.ztunnel_effect(), ZtunnelEffect::Rejected);
        let d = ap(
            json!({"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["DELETE"]}}]},
            {"from": [{"source": {"namespaces": ["x"]}}]}]}),
        );
        assert_eq!(
            d.ztunnel_effect(),
            ZtunnelEffect::DenyDegraded {
                broadened: vec![],
                no_effect: vec![0]
            }
        );
    }

    #[test]
    fn waypoint_admission() {
        let wp = Identity::parse("cluster.local/ns/app/sa/waypoint").unwrap();
        assert_eq!(wp.principal(), "cluster.local/ns/app/sa/waypoint");
        let only_api =
            ap(json!({"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/app/sa/api"]}}]}]}));
        assert!(!allow_admits(&only_api, &wp));
        let with_wp = ap(
            json!({"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/app/sa/api"]}},
            {"source": {"principals": ["cluster.local/ns/app/sa/waypoint"]}}]}]}),
        );
        assert!(allow_admits(&with_wp, &wp));
        let ns_app = ap(json!({"rules": [{"from": [{"source": {"namespaces": ["app"]}}]}]}));
        assert!(allow_admits(&ns_app, &wp));
        let not_ns = ap(json!({"rules": [{"from": [{"source": {"notNamespaces": ["app"]}}]}]}));
        assert!(!allow_admits(&not_ns, &wp));
        let wildcard =
            ap(json!({"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/app/*"]}}]}]}));
        assert!(allow_admits(&wildcard, &wp));
        let sa = ap(json!({"rules": [{"from": [{"source": {"serviceAccounts": ["app/waypoint"]}}]}]}));
        assert!(allow_admits(&sa, &wp));
        let ip = ap(json!({"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/8"]}}]}]}));
        assert!(!allow_admits(&ip, &wp));
        let any = ap(json!({"rules": [{}]}));
        assert!(allow_admits(&any, &wp));
        let none = ap(json!({}));
        assert!(!allow_admits(&none, &wp));
        let ports_only = ap(json!({"rules": [{"to": [{"operation": {"ports": ["8080"]}}]}]}));
        assert!(allow_admits(&ports_only, &wp));
        let when = ap(json!({"rules": [{"when": [{"key": "source.namespace", "values": ["other"]}]}]}));
        assert!(!allow_admits(&when, &wp));
        let when_not =
            ap(json!({"rules": [{"when": [{"key": "source.principal", "notValues": ["*/sa/waypoint"]}]}]}));
        assert!(!allow_admits(&when_not, &wp));
        // An L7 rule admitting the waypoint does not count: ztunnel drops it.
        let l7 = ap(
            json!({"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/app/sa/waypoint"]}}],
            "to": [{"operation": {"methods": ["GET"]}}]}]}),
        );
        assert!(!allow_admits(&l7, &wp));
    }

    #[test]
    fn matching_and_callers() {
        assert!(istio_match("*", "x"));
        assert!(istio_match("a*", "abc"));
        assert!(istio_match("*c", "abc"));
        assert!(!istio_match("b", "abc"));
        assert!(Identity::parse("spiffe://td/ns/a/sa/b").is_some());
        assert!(Identity::parse("nope").is_none());
        let p = ap(json!({"rules": [{"from": [
            {"source": {"principals": ["cluster.local/ns/front/sa/web", "cluster.local/ns/*/sa/x"]}},
            {"source": {"namespaces": ["batch", "ops-*"]}},
            {"source": {"serviceAccounts": ["tools/runner"]}}]}]}));
        let ns: Vec<String> = caller_namespaces(&p).into_iter().collect();
        assert_eq!(ns, vec!["batch", "front", "tools"]);
    }
}
