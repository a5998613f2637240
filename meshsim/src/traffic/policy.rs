//! AuthorizationPolicy and PeerAuthentication evaluation, the way each Istio proxy does it.
//!
//! - [`envoy_decision`]: an Envoy (sidecar or waypoint) evaluates the policy in full (L7 included):
//!   DENY first, then ALLOW (if any ALLOW policy applies, one of its rules must match). CUSTOM and AUDIT
//!   have no effect in meshsim (CUSTOM needs an external authorizer we do not model; AUDIT only logs).
//!   Source: istio.io docs/reference/config/security/authorization-policy ("Authorization Policy" action
//!   order and rule semantics).
//! - [`ztunnel_decision`]: ztunnel enforces the L4 translation istiod sends it. The translation follows
//!   istio/istio `pilot/pkg/serviceregistry/ambient/authorization.go` (`convertAuthorizationPolicy`,
//!   `handleRule`) and the matching follows istio/ztunnel `src/rbac.rs` (`Authorization::matches`):
//!   targetRefs policies are not sent; CUSTOM/AUDIT are rejected; an ALLOW rule with any HTTP attribute is
//!   dropped (a policy left without rules matches nothing); a DENY rule keeps its shape with the HTTP parts
//!   emptied, and ztunnel skips empty matches, so a clause made only of emptied matches never matches.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

/// `spec.selector` of Istio security policies.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Selector {
    pub match_labels: BTreeMap<String, String>,
}

impl Selector {
    /// Whether every label of the selector is on the workload.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// A `targetRef` / `targetRefs` entry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct TargetRef {
    pub group: String,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
}

/// `rules[].from[].source`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Source {
    pub principals: Vec<String>,
    pub not_principals: Vec<String>,
    pub request_principals: Vec<String>,
    pub not_request_principals: Vec<String>,
    pub namespaces: Vec<String>,
    pub not_namespaces: Vec<String>,
    pub service_accounts: Vec<String>,
    pub not_service_accounts: Vec<String>,
    pub ip_blocks: Vec<String>,
    pub not_ip_blocks: Vec<String>,
    pub remote_ip_blocks: Vec<String>,
    pub not_remote_ip_blocks: Vec<String>,
}

/// `rules[].to[].operation`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Operation {
    pub hosts: Vec<String>,
    pub not_hosts: Vec<String>,
    pub ports: Vec<String>,
    pub not_ports: Vec<String>,
    pub methods: Vec<String>,
    pub not_methods: Vec<String>,
    pub paths: Vec<String>,
    pub not_paths: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct From {
    pub source: Source,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct To {
    pub operation: Operation,
}

/// `rules[].when[]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Condition {
    pub key: String,
    pub values: Vec<String>,
    pub not_values: Vec<String>,
}

/// One rule: all of from/to/when must match (an absent part matches).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Rule {
    pub from: Vec<From>,
    pub to: Vec<To>,
    pub when: Vec<Condition>,
}

/// AuthorizationPolicy `spec`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthzSpec {
    pub selector: Option<Selector>,
    pub target_ref: Option<TargetRef>,
    pub target_refs: Vec<TargetRef>,
    pub action: Option<String>,
    pub rules: Vec<Rule>,
}

/// Policy actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    Audit,
    Custom,
}

/// An AuthorizationPolicy as the traffic model needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthzPolicy {
    pub namespace: String,
    pub name: String,
    pub spec: AuthzSpec,
    /// Annotation `istio.io/dry-run: "true"`: logged, never enforced (Envoy shadow rules; ztunnel only
    /// with `EnableWdsDryRunAuthzPol`, off by default).
    pub dry_run: bool,
}

impl AuthzPolicy {
    /// Action, `ALLOW` when absent (proto default).
    pub fn action(&self) -> Action {
        match self.spec.action.as_deref().unwrap_or("ALLOW") {
            "DENY" => Action::Deny,
            "AUDIT" => Action::Audit,
            "CUSTOM" => Action::Custom,
            _ => Action::Allow,
        }
    }

    /// All target references (`targetRef` and `targetRefs`).
    pub fn target_refs(&self) -> Vec<&TargetRef> {
        self.spec
            .target_ref
            .iter()
            .chain(self.spec.target_refs.iter())
            .collect()
    }
}

impl Attached for AuthzPolicy {
    fn namespace(&self) -> &str {
        &self.namespace
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn selector(&self) -> Option<&Selector> {
        self.spec.selector.as_ref()
    }
    fn target_refs(&self) -> Vec<&TargetRef> {
        AuthzPolicy::target_refs(self)
    }
}

/// How an Istio security policy (AuthorizationPolicy, RequestAuthentication) attaches: a workload
/// `selector` (or none: namespace-wide; in the root namespace: mesh-wide), or `targetRefs`. Both kinds
/// share the attachment rules. Source: istio.io docs/reference/config/type/workload-selector and the
/// `targetRefs` fields of the authorization-policy and request_authentication references.
pub trait Attached {
    fn namespace(&self) -> &str;
    fn name(&self) -> &str;
    fn selector(&self) -> Option<&Selector>;
    fn target_refs(&self) -> Vec<&TargetRef>;

    /// Whether the policy targets the Service `name` (group "" or "core", same namespace).
    fn targets_service(&self, name: &str) -> bool {
        let own = self.namespace();
        self.target_refs().iter().any(|t| {
            t.kind == "Service"
                && (t.group.is_empty() || t.group == "core")
                && t.name == name
                && t.namespace.as_deref().is_none_or(|n| n == own)
        })
    }

    /// Whether the policy targets the Gateway `name` in its namespace.
    fn targets_gateway(&self, name: &str) -> bool {
        let own = self.namespace();
        self.target_refs()
            .iter()
            .any(|t| t.kind == "Gateway" && t.name == name && t.namespace.as_deref().is_none_or(|n| n == own))
    }

    /// Whether the policy targets the GatewayClass `name` (root namespace only).
    fn targets_gateway_class(&self, name: &str) -> bool {
        self.target_refs()
            .iter()
            .any(|t| t.kind == "GatewayClass" && t.name == name)
    }

    /// Whether this policy (a selector or namespace-wide one, no targetRefs) applies to a workload with
    /// `labels` in `namespace`: same namespace, or the root namespace (mesh-wide), selector matching.
    /// Source: istio.io authorization-policy reference ("workload selector ... in the root namespace
    /// applies to all namespaces").
    fn selects_workload(&self, root_ns: &str, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        if !self.target_refs().is_empty() {
            return false;
        }
        if self.namespace() != namespace && self.namespace() != root_ns {
            return false;
        }
        self.selector().is_none_or(|s| s.matches(labels))
    }
}

/// What an Envoy knows about one request when it evaluates policy.
#[derive(Debug, Clone, Default)]
pub struct RequestAttrs {
    /// Peer identity from mTLS (`cluster.local/ns/x/sa/y`), `None` for plaintext.
    pub principal: Option<String>,
    pub source_ip: Option<IpAddr>,
    pub destination_ip: Option<IpAddr>,
    /// Port the destination workload listens on (Service targetPort).
    pub port: u16,
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub host: String,
    /// Lower-case header names.
    pub headers: Vec<(String, String)>,
    /// `<iss>/<sub>` of the JWT a RequestAuthentication validated; `None` without a (validated) token.
    pub request_principal: Option<String>,
    /// Claims of that JWT: a string claim as one value, a list of strings as its elements.
    pub claims: BTreeMap<String, Vec<String>>,
}

impl RequestAttrs {
    fn namespace(&self) -> Option<&str> {
        let p = self.principal.as_deref()?;
        let rest = p.split_once("/ns/")?.1;
        Some(rest.split_once("/sa/").map(|(ns, _)| ns).unwrap_or(rest))
    }

    fn service_account(&self) -> Option<(&str, &str)> {
        let p = self.principal.as_deref()?;
        let rest = p.split_once("/ns/")?.1;
        rest.split_once("/sa/")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Istio string match: `*` (presence), `*suffix`, `prefix*`, exact.
pub fn string_match(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        return !value.is_empty();
    }
    if let Some(suf) = pattern.strip_prefix('*') {
        return value.ends_with(suf);
    }
    if let Some(pre) = pattern.strip_suffix('*') {
        return value.starts_with(pre);
    }
    pattern == value
}

fn any_match(patterns: &[String], value: Option<&str>) -> bool {
    match value {
        Some(v) => patterns.iter().any(|p| string_match(p, v)),
        None => false,
    }
}

/// Positive list must match (if present) and negative list must not match (if present).
fn pos_neg(pos: &[String], neg: &[String], value: Option<&str>) -> bool {
    (pos.is_empty() || any_match(pos, value)) && (neg.is_empty() || !any_match(neg, value))
}

/// CIDR or single address containment.
pub fn ip_in(block: &str, ip: IpAddr) -> bool {
    let (addr, len) = match block.split_once('/') {
        Some((a, l)) => (a, l.parse::<u32>().ok()),
        None => (block, None),
    };
    let Ok(net) = addr.parse::<IpAddr>() else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let len = len.unwrap_or(32).min(32);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            (u32::from(n) & mask) == (u32::from(i) & mask)
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let len = len.unwrap_or(128).min(128);
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            (u128::from(n) & mask) == (u128::from(i) & mask)
        }
        _ => false,
    }
}

fn ip_pos_neg(pos: &[String], neg: &[String], ip: Option<IpAddr>) -> bool {
    let any = |l: &[String]| ip.is_some_and(|ip| l.iter().any(|b| ip_in(b, ip)));
    (pos.is_empty() || any(pos)) && (neg.is_empty() || !any(neg))
}

fn sa_match(entry: &str, policy_ns: &str, attrs: &RequestAttrs) -> bool {
    let (ns, sa) = entry.split_once('/').unwrap_or((policy_ns, entry));
    attrs.service_account() == Some((ns, sa))
}

fn envoy_source(s: &Source, policy_ns: &str, a: &RequestAttrs) -> bool {
    let principal = a.principal.as_deref();
    // requestPrincipals match the `<iss>/<sub>` of a validated JWT (see `super::jwt`); a request without
    // one has no request principal, so `notRequestPrincipals: ["*"]` matches it.
    pos_neg(&s.principals, &s.not_principals, principal)
        && pos_neg(
            &s.request_principals,
            &s.not_request_principals,
            a.request_principal.as_deref(),
        )
        && pos_neg(&s.namespaces, &s.not_namespaces, a.namespace())
        && (s.service_accounts.is_empty() || s.service_accounts.iter().any(|e| sa_match(e, policy_ns, a)))
        && !s.not_service_accounts.iter().any(|e| sa_match(e, policy_ns, a))
        && ip_pos_neg(&s.ip_blocks, &s.not_ip_blocks, a.source_ip)
        && ip_pos_neg(&s.remote_ip_blocks, &s.not_remote_ip_blocks, a.source_ip)
}

fn host_match(pattern: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let bare = host.split(':').next().unwrap_or(&host).to_string();
    let p = pattern.to_ascii_lowercase();
    string_match(&p, &host) || string_match(&p, &bare)
}

fn envoy_operation(o: &Operation, a: &RequestAttrs) -> bool {
    let port = a.port.to_string();
    let hosts_ok = (o.hosts.is_empty() || o.hosts.iter().any(|p| host_match(p, &a.host)))
        && !o.not_hosts.iter().any(|p| host_match(p, &a.host));
    hosts_ok
        && pos_neg(&o.ports, &o.not_ports, Some(&port))
        && pos_neg(&o.methods, &o.not_methods, Some(&a.method))
        && pos_neg(&o.paths, &o.not_paths, Some(&a.path))
}

fn condition_value(key: &str, a: &RequestAttrs) -> Option<String> {
    if let Some(h) = key
        .strip_prefix("request.headers[")
        .and_then(|k| k.strip_suffix(']'))
    {
        return a.header(h).map(str::to_string);
    }
    match key {
        "source.namespace" => a.namespace().map(str::to_string),
        "source.principal" => a.principal.clone(),
        "source.serviceAccount" => a.service_account().map(|(ns, sa)| format!("{ns}/{sa}")),
        "source.ip" | "remote.ip" => a.source_ip.map(|i| i.to_string()),
        "destination.ip" => a.destination_ip.map(|i| i.to_string()),
        "destination.port" => Some(a.port.to_string()),
        "connection.sni" => None,
        "request.auth.principal" => a.request_principal.clone(),
        // request.auth.audiences / presenter and experimental keys: not modelled.
        _ => None,
    }
}

fn envoy_condition(c: &Condition, a: &RequestAttrs) -> bool {
    let ip_key = matches!(c.key.as_str(), "source.ip" | "remote.ip" | "destination.ip");
    if ip_key {
        let ip = match c.key.as_str() {
            "destination.ip" => a.destination_ip,
            _ => a.source_ip,
        };
        return ip_pos_neg(&c.values, &c.not_values, ip);
    }
    // `request.auth.claims[name]`: a list claim matches when any element does (istio.io
    // docs/reference/config/security/conditions).
    if let Some(name) = c
        .key
        .strip_prefix("request.auth.claims[")
        .and_then(|k| k.strip_suffix(']'))
    {
        let vals = a.claims.get(name).map(Vec::as_slice).unwrap_or_default();
        let any = |l: &[String]| vals.iter().any(|v| any_match(l, Some(v)));
        return (c.values.is_empty() || any(&c.values)) && (c.not_values.is_empty() || !any(&c.not_values));
    }
    let v = condition_value(&c.key, a);
    pos_neg(&c.values, &c.not_values, v.as_deref())
}

/// Whether a rule matches in full (Envoy semantics).
pub fn envoy_rule_matches(rule: &Rule, policy_ns: &str, a: &RequestAttrs) -> bool {
    (rule.from.is_empty() || rule.from.iter().any(|f| envoy_source(&f.source, policy_ns, a)))
        && (rule.to.is_empty() || rule.to.iter().any(|t| envoy_operation(&t.operation, a)))
        && rule.when.iter().all(|c| envoy_condition(c, a))
}

/// Result of evaluating a set of policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied, naming the deciding policy (`ns/name`) or why.
    Deny(String),
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

/// Full L7 evaluation by an Envoy over the policies that apply to it.
pub fn envoy_decision<'a>(policies: impl IntoIterator<Item = &'a AuthzPolicy>, a: &RequestAttrs) -> Decision {
    let policies: Vec<&AuthzPolicy> = policies.into_iter().filter(|p| !p.dry_run).collect();
    for p in policies.iter().filter(|p| p.action() == Action::Deny) {
        if p.spec
            .rules
            .iter()
            .any(|r| envoy_rule_matches(r, &p.namespace, a))
        {
            return Decision::Deny(format!("{}/{}", p.namespace, p.name));
        }
    }
    let allows: Vec<&&AuthzPolicy> = policies.iter().filter(|p| p.action() == Action::Allow).collect();
    if allows.is_empty() {
        return Decision::Allow;
    }
    if allows.iter().any(|p| {
        p.spec
            .rules
            .iter()
            .any(|r| envoy_rule_matches(r, &p.namespace, a))
    }) {
        Decision::Allow
    } else {
        Decision::Deny(format!(
            "no ALLOW policy matched ({})",
            allows
                .iter()
                .map(|p| format!("{}/{}", p.namespace, p.name))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

// ---------------------------------------------------------------------------------------------------
// ztunnel: the L4 translation (istiod) and the matcher (ztunnel).

/// `istio.workload.Match` as ztunnel receives it (only the fields the translation fills).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct L4Match {
    pub namespaces: Vec<String>,
    pub not_namespaces: Vec<String>,
    pub principals: Vec<String>,
    pub not_principals: Vec<String>,
    pub service_accounts: Vec<(String, String)>,
    pub not_service_accounts: Vec<(String, String)>,
    pub source_ips: Vec<String>,
    pub not_source_ips: Vec<String>,
    pub destination_ips: Vec<String>,
    pub not_destination_ips: Vec<String>,
    pub destination_ports: Vec<u16>,
    pub not_destination_ports: Vec<u16>,
}

impl L4Match {
    /// ztunnel `RbacMatch::is_empty`: such a match is skipped (never matches).
    pub fn is_empty(&self) -> bool {
        *self == L4Match::default()
    }
}

/// A translated policy: rules (OR) of clauses (AND) of matches (OR).
#[derive(Debug, Clone, PartialEq)]
pub struct L4Policy {
    pub namespace: String,
    pub name: String,
    pub deny: bool,
    pub rules: Vec<Vec<Vec<L4Match>>>,
    /// HTTP attributes that were dropped (for status / explanations).
    pub http_attributes: Vec<String>,
}

fn ports(v: &[String]) -> Vec<u16> {
    v.iter().filter_map(|p| p.parse::<u16>().ok()).collect()
}

fn sa_list(v: &[String], ns: &str) -> Vec<(String, String)> {
    v.iter()
        .map(|e| match e.split_once('/') {
            Some((n, s)) => (n.to_string(), s.to_string()),
            None => (ns.to_string(), e.to_string()),
        })
        .collect()
}

const L4_WHEN_KEYS: &[&str] = &[
    "source.ip",
    "source.namespace",
    "source.principal",
    "destination.ip",
    "destination.port",
];

/// `handleRule`: the clauses of one rule and the HTTP attributes found; `None` when an ALLOW rule is
/// dropped because it has HTTP attributes.
fn handle_rule(deny: bool, rule: &Rule, ns: &str) -> (Option<Vec<Vec<L4Match>>>, Vec<String>) {
    let mut http = Vec::new();
    let mut to_matches = Vec::new();
    for t in &rule.to {
        let o = &t.operation;
        for (name, l) in [
            ("hosts", &o.hosts),
            ("notHosts", &o.not_hosts),
            ("methods", &o.methods),
            ("notMethods", &o.not_methods),
            ("paths", &o.paths),
            ("notPaths", &o.not_paths),
        ] {
            if !l.is_empty() {
                http.push(name.to_string());
            }
        }
        to_matches.push(L4Match {
            destination_ports: ports(&o.ports),
            not_destination_ports: ports(&o.not_ports),
            ..Default::default()
        });
    }
    let mut from_matches = Vec::new();
    for f in &rule.from {
        let s = &f.source;
        for (name, l) in [
            ("remoteIpBlocks", &s.remote_ip_blocks),
            ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
            ("requestPrincipals", &s.request_principals),
            ("notRequestPrincipals", &s.not_request_principals),
        ] {
            if !l.is_empty() {
                http.push(name.to_string());
            }
        }
        from_matches.push(L4Match {
            source_ips: s.ip_blocks.clone(),
            not_source_ips: s.not_ip_blocks.clone(),
            namespaces: s.namespaces.clone(),
            not_namespaces: s.not_namespaces.clone(),
            service_accounts: sa_list(&s.service_accounts, ns),
            not_service_accounts: sa_list(&s.not_service_accounts, ns),
            principals: s.principals.clone(),
            not_principals: s.not_principals.clone(),
            ..Default::default()
        });
    }
    let mut clauses = Vec::new();
    if !to_matches.is_empty() {
        clauses.push(to_matches);
    }
    if !from_matches.is_empty() {
        clauses.push(from_matches);
    }
    for c in &rule.when {
        if !L4_WHEN_KEYS.contains(&c.key.as_str()) {
            http.push(c.key.clone());
        }
        let pick = |k: &str, v: &Vec<String>| if c.key == k { v.clone() } else { Vec::new() };
        clauses.push(vec![L4Match {
            namespaces: pick("source.namespace", &c.values),
            principals: pick("source.principal", &c.values),
            source_ips: pick("source.ip", &c.values),
            destination_ports: ports(&pick("destination.port", &c.values)),
            destination_ips: pick("destination.ip", &c.values),
            not_namespaces: pick("source.namespace", &c.not_values),
            not_principals: pick("source.principal", &c.not_values),
            not_source_ips: pick("source.ip", &c.not_values),
            not_destination_ports: ports(&pick("destination.port", &c.not_values)),
            not_destination_ips: pick("destination.ip", &c.not_values),
            ..Default::default()
        }]);
    }
    if !deny && !http.is_empty() {
        // "L7 policies never match for ALLOW"
        return (None, http);
    }
    (Some(clauses), http)
}

/// `convertAuthorizationPolicy`: `None` when the policy is not sent to ztunnel (targetRefs, CUSTOM,
/// AUDIT, dry-run).
pub fn to_ztunnel(p: &AuthzPolicy) -> Option<L4Policy> {
    if p.dry_run || !p.target_refs().is_empty() {
        return None;
    }
    let deny = match p.action() {
        Action::Allow => false,
        Action::Deny => true,
        Action::Audit | Action::Custom => return None,
    };
    let mut rules = Vec::new();
    let mut http = Vec::new();
    for r in &p.spec.rules {
        let (clauses, found) = handle_rule(deny, r, &p.namespace);
        if let Some(c) = clauses {
            rules.push(c);
        }
        http.extend(found);
    }
    http.sort();
    http.dedup();
    Some(L4Policy {
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        deny,
        rules,
        http_attributes: http,
    })
}

/// The L4 facts of one connection as ztunnel sees them.
#[derive(Debug, Clone, Default)]
pub struct ConnAttrs {
    /// Peer identity (`cluster.local/ns/x/sa/y`), `None` for plaintext.
    pub principal: Option<String>,
    pub source_ip: Option<IpAddr>,
    pub destination_ip: Option<IpAddr>,
    pub port: u16,
}

fn l4_strings(pos: &[String], neg: &[String], v: &str) -> bool {
    // StringMatch::matches; Presence matches a non-empty value.
    let m = |l: &[String]| l.iter().any(|p| string_match(p, v));
    (pos.is_empty() || m(pos)) && (neg.is_empty() || !m(neg))
}

/// `Authorization::matches` of ztunnel's rbac.rs.
pub fn l4_matches(p: &L4Policy, c: &ConnAttrs) -> bool {
    let id = c.principal.clone().unwrap_or_default();
    let (ns, sa) = match id.split_once("/ns/").and_then(|(_, r)| r.split_once("/sa/")) {
        Some((n, s)) => (n.to_string(), Some(s.to_string())),
        None => (String::new(), None),
    };
    if p.rules.is_empty() {
        return false;
    }
    p.rules.iter().any(|rule| {
        rule.iter().all(|clause| {
            if clause.is_empty() {
                return true;
            }
            clause.iter().any(|m| {
                if m.is_empty() {
                    return false; // "empty clause": skipped, never matches
                }
                let sa_ok = |l: &[(String, String)]| {
                    sa.as_ref()
                        .is_some_and(|s| l.iter().any(|(n, a)| *n == ns && a == s))
                };
                ip_pos_neg(&m.destination_ips, &m.not_destination_ips, c.destination_ip)
                    && ip_pos_neg(&m.source_ips, &m.not_source_ips, c.source_ip)
                    && (m.destination_ports.is_empty() || m.destination_ports.contains(&c.port))
                    && !m.not_destination_ports.contains(&c.port)
                    && (m.service_accounts.is_empty() || sa_ok(&m.service_accounts))
                    && (m.not_service_accounts.is_empty() || !sa_ok(&m.not_service_accounts))
                    // principals are compared without the spiffe:// prefix; a plaintext peer has ""
                    && (c.principal.is_some() || m.principals.is_empty())
                    && l4_strings(&m.principals, &m.not_principals, &id)
                    && l4_strings(&m.namespaces, &m.not_namespaces, &ns)
            })
        })
    })
}

/// ztunnel's inbound authorization: DENY policies first, then ALLOW (at least one must match if any
/// applies). Source: istio/ztunnel `src/state.rs` `assert_rbac`.
pub fn ztunnel_decision<'a>(policies: impl IntoIterator<Item = &'a AuthzPolicy>, c: &ConnAttrs) -> Decision {
    let l4: Vec<L4Policy> = policies.into_iter().filter_map(to_ztunnel).collect();
    for p in l4.iter().filter(|p| p.deny) {
        if l4_matches(p, c) {
            return Decision::Deny(format!("{}/{}", p.namespace, p.name));
        }
    }
    let allows: Vec<&L4Policy> = l4.iter().filter(|p| !p.deny).collect();
    if allows.is_empty() || allows.iter().any(|p| l4_matches(p, c)) {
        Decision::Allow
    } else {
        Decision::Deny(format!(
            "no ALLOW policy matched at ztunnel ({})",
            allows
                .iter()
                .map(|p| format!("{}/{}", p.namespace, p.name))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

// ---------------------------------------------------------------------------------------------------
// PeerAuthentication.

/// A PeerAuthentication as the model needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerAuth {
    pub namespace: String,
    pub name: String,
    /// `metadata.creationTimestamp` (RFC 3339; the oldest wins a conflict).
    pub created: String,
    pub selector: Option<Selector>,
    /// `spec.mtls.mode`: STRICT, PERMISSIVE, DISABLE, UNSET (or absent).
    pub mode: Option<String>,
    /// `spec.portLevelMtls`: workload port -> mode.
    pub port_level: BTreeMap<u16, String>,
}

fn is_set(m: &Option<String>) -> bool {
    m.as_deref().is_some_and(|m| m != "UNSET")
}

/// Whether STRICT mTLS applies to a workload on `port`. Mesh (root namespace, no selector), then
/// namespace, then workload policy; UNSET inherits; the oldest policy wins at each level; port-level
/// modes of the workload policy override. Source: istio/istio authorization.go
/// `convertedSelectorPeerAuthentications` and istio.io PeerAuthentication reference.
pub fn strict_mtls(
    policies: &[&PeerAuth],
    root_ns: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    port: u16,
) -> bool {
    let oldest = |f: &dyn Fn(&PeerAuth) -> bool| {
        policies
            .iter()
            .filter(|p| f(p))
            .min_by(|a, b| a.created.cmp(&b.created))
            .copied()
    };
    let no_sel = |p: &PeerAuth| p.selector.as_ref().is_none_or(|s| s.match_labels.is_empty());
    let mesh = oldest(&|p| p.namespace == root_ns && no_sel(p));
    let ns = oldest(&|p| p.namespace == namespace && p.namespace != root_ns && no_sel(p));
    let wl = oldest(&|p| {
        p.namespace == namespace
            && p.namespace != root_ns
            && !no_sel(p)
            && p.selector.as_ref().is_some_and(|s| s.matches(labels))
    });
    let mut strict = false;
    for p in [mesh, ns, wl].into_iter().flatten() {
        if is_set(&p.mode) {
            strict = p.mode.as_deref() == Some("STRICT");
        }
    }
    if let Some(w) = wl
        && let Some(m) = w.port_level.get(&port)
        && m != "UNSET"
    {
        strict = m == "STRICT";
    }
    strict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pol(ns: &str, name: &str, yaml: &str) -> AuthzPolicy {
        AuthzPolicy {
            namespace: ns.into(),
            name: name.into(),
            spec: serde_saphyr::from_str(yaml).unwrap(),
            dry_run: false,
        }
    }

    fn req(principal: Option<&str>, method: &str, path: &str) -> RequestAttrs {
        RequestAttrs {
            principal: principal.map(str::to_string),
            port: 8080,
            method: method.into(),
            path: path.into(),
            host: "api.app.svc.cluster.local".into(),
            ..Default::default()
        }
    }

    fn conn(principal: Option<&str>) -> ConnAttrs {
        ConnAttrs {
            principal: principal.map(str::to_string),
            port: 8080,
            ..Default::default()
        }
    }

    const WEB: &str = "cluster.local/ns/app/sa/web";
    const OTHER: &str = "cluster.local/ns/other/sa/other";

    #[test]
    fn envoy_allow_deny_order_and_l7_fields() {
        // istio.io authorization-policy reference: DENY is evaluated before ALLOW.
        let allow = pol(
            "app",
            "a",
            "action: ALLOW\nrules:\n- from: [{source: {principals: [\"cluster.local/ns/app/sa/web\"]}}]\n  to: [{operation: {methods: [GET], paths: [\"/api*\"]}}]\n",
        );
        let deny = pol(
            "app",
            "d",
            "action: DENY\nrules:\n- to: [{operation: {paths: [\"*/admin\"]}}]\n",
        );
        let ps = [allow.clone(), deny];
        assert_eq!(
            envoy_decision(&ps, &req(Some(WEB), "GET", "/api/x")),
            Decision::Allow
        );
        assert!(!envoy_decision(&ps, &req(Some(WEB), "POST", "/api/x")).allowed());
        assert!(!envoy_decision(&ps, &req(Some(OTHER), "GET", "/api/x")).allowed());
        assert_eq!(
            envoy_decision(&ps, &req(Some(WEB), "GET", "/api/admin")),
            Decision::Deny("app/d".into())
        );
        assert!(
            !envoy_decision(&ps, &req(None, "GET", "/api/x")).allowed(),
            "plaintext has no principal"
        );
        // No policies: allow. ALLOW without rules: deny all.
        assert!(envoy_decision(&[], &req(None, "GET", "/")).allowed());
        let empty_allow = pol("app", "e", "action: ALLOW\n");
        assert!(!envoy_decision([&empty_allow], &req(Some(WEB), "GET", "/")).allowed());
        let allow_all = pol("app", "all", "rules:\n- {}\n");
        assert!(envoy_decision([&allow_all], &req(None, "GET", "/")).allowed());
    }

    #[test]
    fn envoy_when_and_namespaces_and_hosts() {
        let p = pol(
            "app",
            "w",
            "action: ALLOW\nrules:\n- from: [{source: {namespaces: [app]}}]\n  when:\n  - key: request.headers[x-user]\n    values: [\"admin*\"]\n",
        );
        let mut r = req(Some(WEB), "GET", "/");
        assert!(!envoy_decision([&p], &r).allowed());
        r.headers.push(("x-user".into(), "admin-1".into()));
        assert!(envoy_decision([&p], &r).allowed());
        let h = pol(
            "app",
            "h",
            "action: DENY\nrules:\n- to: [{operation: {hosts: [\"api.app*\"], ports: [\"8080\"]}}]\n",
        );
        assert!(!envoy_decision([&h], &req(Some(WEB), "GET", "/")).allowed());
        let audit = pol("app", "au", "action: AUDIT\nrules:\n- {}\n");
        let custom = pol("app", "cu", "action: CUSTOM\nrules:\n- {}\n");
        assert!(envoy_decision([&audit, &custom], &req(None, "GET", "/")).allowed());
    }

    #[test]
    fn ztunnel_translation_follows_handle_rule() {
        // [ztun] ALLOW rule with an HTTP attribute is dropped: the policy matches nothing.
        let p = pol(
            "app",
            "p",
            "action: ALLOW\nrules:\n- from: [{source: {principals: [\"cluster.local/ns/app/sa/web\"]}}]\n  to: [{operation: {methods: [GET]}}]\n",
        );
        let l4 = to_ztunnel(&p).unwrap();
        assert!(l4.rules.is_empty());
        assert_eq!(l4.http_attributes, vec!["methods".to_string()]);
        assert!(!ztunnel_decision([&p], &conn(Some(WEB))).allowed());
        // L7-only DENY: the to-clause keeps an empty match, which ztunnel skips: no effect.
        let d7 = pol(
            "app",
            "d7",
            "action: DENY\nrules:\n- to: [{operation: {methods: [DELETE]}}]\n",
        );
        assert!(ztunnel_decision([&d7], &conn(Some(WEB))).allowed());
        // DENY from namespace + methods: same empty to-clause, still no effect (rbac.rs: all clauses
        // must match and a clause of empty matches never does).
        let dm = pol(
            "app",
            "dm",
            "action: DENY\nrules:\n- from: [{source: {namespaces: [other]}}]\n  to: [{operation: {methods: [DELETE]}}]\n",
        );
        assert!(ztunnel_decision([&dm], &conn(Some(OTHER))).allowed());
        // A mixed rule whose to-operation keeps a port denies more than asked: every method.
        let dp = pol(
            "app",
            "dp",
            "action: DENY\nrules:\n- from: [{source: {namespaces: [other]}}]\n  to: [{operation: {methods: [DELETE], ports: [\"8080\"]}}]\n",
        );
        assert!(!ztunnel_decision([&dp], &conn(Some(OTHER))).allowed());
        assert!(ztunnel_decision([&dp], &conn(Some(WEB))).allowed());
        // targetRefs, AUDIT and CUSTOM never reach ztunnel.
        let t = pol(
            "app",
            "t",
            "targetRefs: [{kind: Service, group: \"\", name: api}]\naction: DENY\nrules:\n- {}\n",
        );
        assert!(to_ztunnel(&t).is_none());
        // L4 ALLOW works; STRICT-like notPrincipals DENY matches plaintext only.
        let l4p = pol(
            "app",
            "l4",
            "rules:\n- from: [{source: {principals: [\"cluster.local/ns/app/sa/api\"]}}]\n",
        );
        assert!(ztunnel_decision([&l4p], &conn(Some("cluster.local/ns/app/sa/api"))).allowed());
        assert!(!ztunnel_decision([&l4p], &conn(Some(WEB))).allowed());
        let np = pol(
            "app",
            "np",
            "action: DENY\nrules:\n- from: [{source: {notPrincipals: [\"*\"]}}]\n",
        );
        assert!(!ztunnel_decision([&np], &conn(None)).allowed());
        assert!(ztunnel_decision([&np], &conn(Some(WEB))).allowed());
        // when with an L4 key is kept; with an L7 key in ALLOW the rule is dropped.
        let w = pol(
            "app",
            "w",
            "rules:\n- when: [{key: source.namespace, values: [app]}]\n",
        );
        assert!(ztunnel_decision([&w], &conn(Some(WEB))).allowed());
        assert!(!ztunnel_decision([&w], &conn(Some(OTHER))).allowed());
    }

    #[test]
    fn peer_authentication_inheritance() {
        let pa = |ns: &str, sel: Option<&str>, mode: Option<&str>, created: &str| PeerAuth {
            namespace: ns.into(),
            name: "x".into(),
            created: created.into(),
            selector: sel.map(|s| Selector {
                match_labels: [("app".to_string(), s.to_string())].into(),
            }),
            mode: mode.map(str::to_string),
            port_level: BTreeMap::new(),
        };
        let labels: BTreeMap<String, String> = [("app".to_string(), "api".to_string())].into();
        let mesh = pa("istio-system", None, Some("STRICT"), "1");
        let ns_perm = pa("app", None, Some("PERMISSIVE"), "1");
        let wl_unset = pa("app", Some("api"), Some("UNSET"), "1");
        assert!(strict_mtls(&[&mesh], "istio-system", "app", &labels, 80));
        assert!(!strict_mtls(
            &[&mesh, &ns_perm],
            "istio-system",
            "app",
            &labels,
            80
        ));
        assert!(!strict_mtls(
            &[&mesh, &ns_perm, &wl_unset],
            "istio-system",
            "app",
            &labels,
            80
        ));
        let mut wl_port = pa("app", Some("api"), None, "1");
        wl_port.port_level.insert(8080, "STRICT".into());
        assert!(strict_mtls(
            &[&ns_perm, &wl_port],
            "istio-system",
            "app",
            &labels,
            8080
        ));
        assert!(!strict_mtls(
            &[&ns_perm, &wl_port],
            "istio-system",
            "app",
            &labels,
            9090
        ));
    }

    #[test]
    fn ip_blocks() {
        assert!(ip_in("10.0.0.0/8", "10.1.2.3".parse().unwrap()));
        assert!(!ip_in("10.0.0.0/8", "11.1.2.3".parse().unwrap()));
        assert!(ip_in("10.1.2.3", "10.1.2.3".parse().unwrap()));
    }
}
