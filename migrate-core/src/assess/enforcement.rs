//! Enforcement equivalence: what the mesh decides for every request class at every moment of a namespace's
//! plan, compared with what the policies ask for.
//!
//! Pure (no I/O). Three parts:
//! - the data-plane model ([`View::decide`], [`View::intent`]): the destination sidecar evaluates its
//!   selector and namespace policies in full; ztunnel enforces the L4 translation of the same policies; a
//!   waypoint enforces `targetRefs` policies with the caller's identity and presents its own identity
//!   downstream; sidecar callers bypass waypoints; STRICT mTLS rejects callers without a mesh identity. Each
//!   rule cites the upstream code path it follows.
//! - request classes ([`callers`], [`requests`]) derived from the policies and the namespace: every identity,
//!   namespace and service account a rule names plus one that none names and "no mesh identity"; every
//!   Service port; every method, path and header a rule names plus one that none names.
//! - the moments of the plan ([`moments`]): before anything, after each step, each restart batch of step 4
//!   (old sidecar pods beside new ambient ones) and, when fleet callers migrate after this namespace, the end
//!   of the fleet; [`check`] evaluates every class at every moment against the intent.

use super::objects::{self, Obj, converted};
use super::plan::{ActivationOrder, NamespacePlan, PolicyMigration};
use super::policy::{Action, Attachment, AuthzPolicy, Identity, L4_WHEN_KEYS};
use super::preflight::namespace_on_sidecars;
use super::{Snapshot, labels_match};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The data plane of a workload or caller at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataPlane {
    /// An `istio-proxy` sidecar.
    Sidecar,
    /// Enrolled in ambient (ztunnel).
    Ambient,
    /// Not in the mesh: plaintext, no identity.
    None,
}

impl DataPlane {
    /// Name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            DataPlane::Sidecar => "sidecar",
            DataPlane::Ambient => "ambient",
            DataPlane::None => "no mesh",
        }
    }
}

/// A workload of the namespace (a pod template).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// `Kind/name`.
    pub name: String,
    /// Pod template labels.
    pub labels: BTreeMap<String, String>,
    /// Pod ServiceAccount.
    pub service_account: String,
    /// Container ports `(name, port)`.
    pub ports: Vec<(Option<String>, u16)>,
}

/// A Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvcPort {
    /// Service port.
    pub port: u16,
    /// Target port: a number or a container port name.
    pub target: Result<u16, String>,
}

/// A Service of the namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Svc {
    /// Name.
    pub name: String,
    /// Selector (Services without one are not modelled).
    pub selector: BTreeMap<String, String>,
    /// Ports.
    pub ports: Vec<SvcPort>,
}

/// What the model reads from the snapshot once.
#[derive(Clone, Debug)]
pub struct Mesh {
    /// Namespace.
    pub namespace: String,
    /// Trust domain.
    pub trust_domain: String,
    /// Root namespace.
    pub root_namespace: String,
    /// Services (waypoint Services excluded).
    pub services: Vec<Svc>,
    /// Workloads (waypoint Deployments excluded).
    pub workloads: Vec<Workload>,
    /// Waypoint Gateways usable for Services: name (class `istio-waypoint`, `istio.io/waypoint-for` service
    /// or all).
    pub waypoints: BTreeSet<String>,
    /// PeerAuthentications of the namespace and of the root namespace.
    pub peer_authentications: Vec<Obj<objects::PeerAuthentication>>,
    /// Root-namespace AuthorizationPolicies (mesh-wide).
    pub root_policies: Vec<Compiled>,
    /// STRICT mTLS per (workload, port), for every port a Service reaches.
    strict: BTreeMap<(String, u16), bool>,
}

fn u16_of(v: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString) -> Result<u16, String> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match v {
        IntOrString::Int(n) => Ok(*n as u16),
        IntOrString::String(s) => s.parse::<u16>().map_err(|_| s.clone()),
    }
}

impl Mesh {
    /// Reads the snapshot.
    pub fn from_snapshot(s: &Snapshot) -> Mesh {
        let services = s
            .services
            .iter()
            .filter(|svc| {
                !svc.metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key("gateway.networking.k8s.io/gateway-name"))
            })
            .filter_map(|svc| {
                let spec = svc.spec.as_ref()?;
                let selector = spec.selector.clone().unwrap_or_default();
                if selector.is_empty() {
                    return None;
                }
                let ports = spec
                    .ports
                    .iter()
                    .flatten()
                    .map(|p| SvcPort {
                        port: p.port as u16,
                        target: p.target_port.as_ref().map(u16_of).unwrap_or(Ok(p.port as u16)),
                    })
                    .collect();
                Some(Svc {
                    name: svc.metadata.name.clone().unwrap_or_default(),
                    selector,
                    ports,
                })
            })
            .collect();
        let mut workloads = Vec::new();
        let mut add = |kind: &str, name: &Option<String>, t: &k8s_openapi::api::core::v1::PodTemplateSpec| {
            let labels = t
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            if labels.contains_key("gateway.networking.k8s.io/gateway-name") {
                return;
            }
            let spec = t.spec.clone().unwrap_or_default();
            let ports = spec
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .map(|p| (p.name.clone(), p.container_port as u16))
                .collect();
            workloads.push(Workload {
                name: format!("{kind}/{}", name.clone().unwrap_or_default()),
                labels,
                service_account: spec
                    .service_account_name
                    .or(spec.service_account)
                    .unwrap_or_else(|| "default".into()),
                ports,
            });
        };
        for d in &s.deployments {
            add("Deployment", &d.metadata.name, &d.spec.template);
        }
        for d in &s.statefulsets {
            add("StatefulSet", &d.metadata.name, &d.spec.template);
        }
        for d in &s.daemonsets {
            add("DaemonSet", &d.metadata.name, &d.spec.template);
        }
        let waypoints = converted(&s.gateways)
            .filter(|(_, spec)| spec.gateway_class_name == crate::gates::waypoint::WAYPOINT_CLASS)
            .filter(|(g, _)| {
                // istio.io/waypoint-for: service (default) and all carry Service traffic
                // (pilot/pkg/serviceregistry/ambient/waypoints.go).
                matches!(
                    g.labels()
                        .get("istio.io/waypoint-for")
                        .map(String::as_str)
                        .unwrap_or("service"),
                    "service" | "all"
                )
            })
            .map(|(g, _)| g.name().to_string())
            .collect();
        let mut m = Mesh {
            namespace: s.ns().to_string(),
            trust_domain: s.cluster.trust_domain.clone(),
            root_namespace: s.cluster.root_namespace.clone(),
            services,
            workloads,
            waypoints,
            peer_authentications: converted(&s.peer_authentications)
                .chain(converted(&s.cluster.root_peer_authentications))
                .map(|(o, _)| o.clone())
                .collect(),
            root_policies: compile_all(&s.cluster.root_authorization_policies),
            strict: BTreeMap::new(),
        };
        let mut strict = BTreeMap::new();
        for svc in &m.services {
            for w in m.endpoints(svc) {
                for p in &svc.ports {
                    let port = m.target_port(p, w);
                    strict.insert((w.name.clone(), port), strict_mtls(&m, &w.labels, port));
                }
            }
        }
        m.strict = strict;
        m
    }

    /// STRICT mTLS for workload `w` on `port`.
    pub fn strict(&self, w: &Workload, port: u16) -> bool {
        self.strict
            .get(&(w.name.clone(), port))
            .copied()
            .unwrap_or_else(|| strict_mtls(self, &w.labels, port))
    }

    /// The container port a Service port reaches on `w`.
    pub fn target_port(&self, p: &SvcPort, w: &Workload) -> u16 {
        match &p.target {
            Ok(n) => *n,
            Err(name) => w
                .ports
                .iter()
                .find(|(n, _)| n.as_deref() == Some(name.as_str()))
                .map(|(_, p)| *p)
                .unwrap_or(p.port),
        }
    }

    /// Workloads a Service selects.
    pub fn endpoints<'a>(&'a self, svc: &'a Svc) -> impl Iterator<Item = &'a Workload> + 'a {
        self.workloads
            .iter()
            .filter(move |w| labels_match(&svc.selector, &w.labels))
    }
}

// ---------------------------------------------------------------------------------------------------
// Policy evaluation.

/// Istio string match: `*` is presence (non-empty), `prefix*`, `*suffix`, exact. Upstream:
/// pilot/pkg/security/authz/matcher/string.go (`StringMatcherWithPrefix`: `*` becomes the regex `.+`).
pub fn string_match(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        return !value.is_empty();
    }
    if let Some(s) = pattern.strip_prefix('*') {
        return value.ends_with(s);
    }
    if let Some(p) = pattern.strip_suffix('*') {
        return value.starts_with(p);
    }
    pattern == value
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn owned(v: &Value) -> Vec<String> {
    strs(v).into_iter().map(str::to_string).collect()
}

fn non_empty(v: &Value) -> bool {
    v.as_array().is_some_and(|a| !a.is_empty())
}

/// A positive list (when non-empty) must match the value, a negative list (when non-empty) must not; an
/// absent value matches no pattern. Upstream: pilot/pkg/security/authz/model/model.go (`values` are OR-ed,
/// `notValues` negated, fields AND-ed).
#[derive(Clone, Debug, Default, PartialEq)]
struct PosNeg {
    pos: Vec<String>,
    neg: Vec<String>,
}

impl PosNeg {
    fn of(v: &Value, pos: &str, neg: &str) -> PosNeg {
        PosNeg {
            pos: owned(&v[pos]),
            neg: owned(&v[neg]),
        }
    }

    fn matches(&self, value: Option<&str>) -> bool {
        let any = |l: &[String]| value.is_some_and(|v| l.iter().any(|p| string_match(p, v)));
        (self.pos.is_empty() || any(&self.pos)) && (self.neg.is_empty() || !any(&self.neg))
    }
}

/// What an Envoy (sidecar or waypoint) knows of a request.
#[derive(Clone, Debug)]
pub struct Attrs<'a> {
    /// Peer identity from mTLS, `None` for plaintext.
    pub peer: Option<&'a Identity>,
    /// Port the enforcing proxy sees.
    pub port: u16,
    /// Method.
    pub method: &'a str,
    /// Path.
    pub path: &'a str,
    /// Host.
    pub host: &'a str,
    /// Request headers (lower-case names).
    pub headers: &'a [(String, String)],
}

/// `serviceAccounts` entries are `<ns>/<sa>` or `<sa>` in the policy's namespace.
fn sa_pairs(v: &Value, ns: &str) -> Vec<(String, String)> {
    strs(v)
        .iter()
        .map(|e| match e.split_once('/') {
            Some((n, s)) => (n.to_string(), s.to_string()),
            None => (ns.to_string(), e.to_string()),
        })
        .collect()
}

fn sa_in(list: &[(String, String)], peer: Option<&Identity>) -> bool {
    peer.is_some_and(|p| {
        list.iter()
            .any(|(n, s)| *n == p.namespace && *s == p.service_account)
    })
}

/// `from.source`, read once.
#[derive(Clone, Debug)]
struct Src {
    principals: PosNeg,
    request_principals: PosNeg,
    namespaces: PosNeg,
    service_accounts: Vec<(String, String)>,
    not_service_accounts: Vec<(String, String)>,
    ip_blocks: PosNeg,
    remote_ip_blocks: PosNeg,
}

/// `to.operation`, read once.
#[derive(Clone, Debug)]
struct Op {
    hosts: Vec<String>,
    not_hosts: Vec<String>,
    ports: PosNeg,
    methods: PosNeg,
    paths: PosNeg,
}

/// One `when` condition.
#[derive(Clone, Debug)]
struct Cond {
    key: String,
    values: PosNeg,
}

/// A rule as Envoy evaluates it.
#[derive(Clone, Debug)]
struct Rule {
    from: Vec<Src>,
    to: Vec<Op>,
    when: Vec<Cond>,
}

impl Rule {
    fn of(r: &Value, ns: &str) -> Rule {
        Rule {
            from: r["from"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    let s = &f["source"];
                    Src {
                        principals: PosNeg::of(s, "principals", "notPrincipals"),
                        request_principals: PosNeg::of(s, "requestPrincipals", "notRequestPrincipals"),
                        namespaces: PosNeg::of(s, "namespaces", "notNamespaces"),
                        service_accounts: sa_pairs(&s["serviceAccounts"], ns),
                        not_service_accounts: sa_pairs(&s["notServiceAccounts"], ns),
                        ip_blocks: PosNeg::of(s, "ipBlocks", "notIpBlocks"),
                        remote_ip_blocks: PosNeg::of(s, "remoteIpBlocks", "notRemoteIpBlocks"),
                    }
                })
                .collect(),
            to: r["to"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let o = &t["operation"];
                    Op {
                        hosts: owned(&o["hosts"]),
                        not_hosts: owned(&o["notHosts"]),
                        ports: PosNeg::of(o, "ports", "notPorts"),
                        methods: PosNeg::of(o, "methods", "notMethods"),
                        paths: PosNeg::of(o, "paths", "notPaths"),
                    }
                })
                .collect(),
            when: r["when"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| Cond {
                    key: c["key"].as_str().unwrap_or("").to_string(),
                    values: PosNeg::of(c, "values", "notValues"),
                })
                .collect(),
        }
    }

    /// Does the rule match in full (Envoy RBAC as istiod builds it: pilot/pkg/security/authz/builder/
    /// builder.go; `from`, `to` and each `when` AND-ed, entries of `from`/`to` OR-ed)?
    fn matches(&self, a: &Attrs<'_>, principal: Option<&str>) -> bool {
        let ns = a.peer.map(|p| p.namespace.as_str());
        // No JWT and no source IP are modelled: requestPrincipals and ip blocks match no value.
        let src_ok = |s: &Src| {
            s.principals.matches(principal)
                && s.request_principals.matches(None)
                && s.namespaces.matches(ns)
                && (s.service_accounts.is_empty() || sa_in(&s.service_accounts, a.peer))
                && !sa_in(&s.not_service_accounts, a.peer)
                && s.ip_blocks.matches(None)
                && s.remote_ip_blocks.matches(None)
        };
        let port = a.port.to_string();
        let op_ok = |o: &Op| {
            (o.hosts.is_empty() || o.hosts.iter().any(|p| host_match(p, a.host)))
                && !o.not_hosts.iter().any(|p| host_match(p, a.host))
                && o.ports.matches(Some(&port))
                && o.methods.matches(Some(a.method))
                && o.paths.matches(Some(a.path))
        };
        (self.from.is_empty() || self.from.iter().any(src_ok))
            && (self.to.is_empty() || self.to.iter().any(op_ok))
            && self.when.iter().all(|c| {
                let v = condition_value(&c.key, a, principal);
                c.values.matches(v.as_deref())
            })
    }
}

fn host_match(pattern: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let bare = host.split(':').next().unwrap_or(&host).to_string();
    let p = pattern.to_ascii_lowercase();
    string_match(&p, &host) || string_match(&p, &bare)
}

fn condition_value(key: &str, a: &Attrs<'_>, principal: Option<&str>) -> Option<String> {
    if let Some(h) = key
        .strip_prefix("request.headers[")
        .and_then(|k| k.strip_suffix(']'))
    {
        return a
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(h))
            .map(|(_, v)| v.clone());
    }
    match key {
        "source.namespace" => a.peer.map(|p| p.namespace.clone()),
        "source.principal" => principal.map(str::to_string),
        "source.serviceAccount" => a.peer.map(|p| format!("{}/{}", p.namespace, p.service_account)),
        "destination.port" => Some(a.port.to_string()),
        // IPs, SNI and JWT claims are not modelled: no value.
        _ => None,
    }
}

/// A policy read once for both enforcement points: its rules as Envoy evaluates them and, for selector and
/// namespace-wide ALLOW/DENY policies, the L4 translation ztunnel receives.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The policy.
    pub policy: AuthzPolicy,
    rules: Vec<Rule>,
    /// `None`: not sent to ztunnel (targetRefs, CUSTOM, AUDIT, dry-run).
    l4: Option<Vec<Vec<Vec<L4Match>>>>,
}

impl Compiled {
    /// Reads a policy.
    pub fn new(policy: AuthzPolicy) -> Compiled {
        let rules = policy
            .rules
            .iter()
            .map(|r| Rule::of(r, &policy.namespace))
            .collect();
        // convertAuthorizationPolicy: targetRefs, CUSTOM, AUDIT and dry-run policies are not sent.
        let deny = match policy.action {
            Action::Deny => Some(true),
            Action::Allow => Some(false),
            Action::Custom | Action::Audit => None,
        };
        let l4 = deny
            .filter(|_| !policy.dry_run && policy.is_workload_scoped())
            .map(|deny| {
                policy
                    .rules
                    .iter()
                    .filter_map(|r| l4_rule(deny, r, &policy.namespace))
                    .collect()
            });
        Compiled { policy, rules, l4 }
    }

    fn fires(&self, a: &Attrs<'_>, principal: Option<&str>) -> bool {
        self.rules.iter().any(|r| r.matches(a, principal))
    }
}

/// Envoy's decision over the policies applying to it: DENY first, then ALLOW (when any ALLOW policy applies,
/// one of its rules must match). CUSTOM and AUDIT do not decide; dry-run policies are not enforced.
/// Upstream: builder.go builds the DENY filter before the ALLOW filter; istio.io authorization-policy
/// reference ("Authorization Policy" evaluation order).
pub fn envoy_allows(policies: &[&Compiled], a: &Attrs<'_>) -> bool {
    let principal = a.peer.map(Identity::principal);
    let principal = principal.as_deref();
    let live = || policies.iter().filter(|p| !p.policy.dry_run);
    if live().any(|p| p.policy.action == Action::Deny && p.fires(a, principal)) {
        return false;
    }
    let mut allows = live().filter(|p| p.policy.action == Action::Allow).peekable();
    allows.peek().is_none() || allows.any(|p| p.fires(a, principal))
}

/// One `istio.workload.Authorization` match after istiod's L4 translation.
#[derive(Clone, Debug, Default, PartialEq)]
struct L4Match {
    namespaces: Vec<String>,
    not_namespaces: Vec<String>,
    principals: Vec<String>,
    not_principals: Vec<String>,
    service_accounts: Vec<(String, String)>,
    not_service_accounts: Vec<(String, String)>,
    ip_blocks: bool,
    not_ip_blocks: bool,
    ports: Vec<u16>,
    not_ports: Vec<u16>,
}

impl L4Match {
    /// ztunnel `RbacMatch::is_empty`: an empty match is skipped, it never matches
    /// (istio/ztunnel src/rbac.rs).
    fn is_empty(&self) -> bool {
        *self == L4Match::default()
    }
}

fn ports_of(v: &Value) -> Vec<u16> {
    strs(v).iter().filter_map(|p| p.parse().ok()).collect()
}

const HTTP_OPERATION: [&str; 6] = ["hosts", "notHosts", "methods", "notMethods", "paths", "notPaths"];
const HTTP_SOURCE: [&str; 4] = [
    "requestPrincipals",
    "notRequestPrincipals",
    "remoteIpBlocks",
    "notRemoteIpBlocks",
];

/// istiod's `handleRule` (pilot/pkg/serviceregistry/ambient/authorization.go): a rule becomes clauses (the
/// `to` list, the `from` list, one per `when` condition) of matches keeping only L4 fields. An ALLOW rule
/// with any HTTP attribute is dropped (`None`); a DENY rule keeps its clauses with the HTTP parts emptied.
fn l4_rule(deny: bool, rule: &Value, ns: &str) -> Option<Vec<Vec<L4Match>>> {
    let mut http = false;
    let mut clauses = Vec::new();
    let to: Vec<L4Match> = rule["to"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let o = &t["operation"];
            http |= HTTP_OPERATION.iter().any(|f| non_empty(&o[*f]));
            L4Match {
                ports: ports_of(&o["ports"]),
                not_ports: ports_of(&o["notPorts"]),
                ..Default::default()
            }
        })
        .collect();
    if !to.is_empty() {
        clauses.push(to);
    }
    let from: Vec<L4Match> = rule["from"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let s = &f["source"];
            http |= HTTP_SOURCE.iter().any(|f| non_empty(&s[*f]));
            L4Match {
                namespaces: owned(&s["namespaces"]),
                not_namespaces: owned(&s["notNamespaces"]),
                principals: owned(&s["principals"]),
                not_principals: owned(&s["notPrincipals"]),
                service_accounts: sa_pairs(&s["serviceAccounts"], ns),
                not_service_accounts: sa_pairs(&s["notServiceAccounts"], ns),
                ip_blocks: non_empty(&s["ipBlocks"]),
                not_ip_blocks: non_empty(&s["notIpBlocks"]),
                ..Default::default()
            }
        })
        .collect();
    if !from.is_empty() {
        clauses.push(from);
    }
    for c in rule["when"].as_array().into_iter().flatten() {
        let key = c["key"].as_str().unwrap_or("");
        http |= !L4_WHEN_KEYS.contains(&key);
        let pick = |k: &str, f: &str| if key == k { owned(&c[f]) } else { Vec::new() };
        let ip = |f: &str| (key == "source.ip" || key == "destination.ip") && non_empty(&c[f]);
        let port = |f: &str| {
            if key == "destination.port" {
                ports_of(&c[f])
            } else {
                Vec::new()
            }
        };
        clauses.push(vec![L4Match {
            namespaces: pick("source.namespace", "values"),
            not_namespaces: pick("source.namespace", "notValues"),
            principals: pick("source.principal", "values"),
            not_principals: pick("source.principal", "notValues"),
            ports: port("values"),
            not_ports: port("notValues"),
            ip_blocks: ip("values"),
            not_ip_blocks: ip("notValues"),
            ..Default::default()
        }]);
    }
    if !deny && http {
        return None;
    }
    Some(clauses)
}

/// ztunnel's match of one translated match against a connection (istio/ztunnel src/rbac.rs
/// `Authorization::matches`): principals without the `spiffe://` prefix, a plaintext peer has none.
fn l4_match(m: &L4Match, peer: Option<&Identity>, principal: &str, port: u16) -> bool {
    if m.is_empty() {
        return false;
    }
    let ns = peer.map(|p| p.namespace.as_str()).unwrap_or_default();
    let strings = |pos: &[String], neg: &[String], v: &str| {
        let any = |l: &[String]| l.iter().any(|p| string_match(p, v));
        (pos.is_empty() || any(pos)) && (neg.is_empty() || !any(neg))
    };
    // No source IP is known: a positive ip block never matches, a negative one always passes.
    !m.ip_blocks
        && (m.ports.is_empty() || m.ports.contains(&port))
        && !m.not_ports.contains(&port)
        && (m.service_accounts.is_empty() || sa_in(&m.service_accounts, peer))
        && (m.not_service_accounts.is_empty() || !sa_in(&m.not_service_accounts, peer))
        && (peer.is_some() || m.principals.is_empty())
        && strings(&m.principals, &m.not_principals, principal)
        && strings(&m.namespaces, &m.not_namespaces, ns)
}

fn l4_policy_matches(
    rules: &[Vec<Vec<L4Match>>],
    peer: Option<&Identity>,
    principal: &str,
    port: u16,
) -> bool {
    rules.iter().any(|rule| {
        rule.iter()
            .all(|clause| clause.is_empty() || clause.iter().any(|m| l4_match(m, peer, principal, port)))
    })
}

/// ztunnel's inbound authorization of the L4 translation of `policies` (istio/ztunnel src/state.rs
/// `assert_rbac`: DENY first, then ALLOW).
pub fn ztunnel_allows(policies: &[&Compiled], peer: Option<&Identity>, port: u16) -> bool {
    let principal = peer.map(Identity::principal).unwrap_or_default();
    let sent = || {
        policies
            .iter()
            .filter_map(|p| Some((p.policy.action, p.l4.as_ref()?)))
    };
    if sent().any(|(a, r)| a == Action::Deny && l4_policy_matches(r, peer, &principal, port)) {
        return false;
    }
    let mut allows = sent().filter(|(a, _)| *a == Action::Allow).peekable();
    allows.peek().is_none() || allows.any(|(_, r)| l4_policy_matches(r, peer, &principal, port))
}

/// STRICT mTLS for a workload port: mesh (root, no selector), namespace, then workload PeerAuthentication;
/// UNSET inherits; the oldest wins at each level; the workload policy's port-level mode overrides. Upstream:
/// pilot/pkg/security/authn/policy_applier.go (`ComposePeerAuthentication`).
pub fn strict_mtls(m: &Mesh, labels: &BTreeMap<String, String>, port: u16) -> bool {
    /// Which policies a level takes: the object and its selector's labels.
    type Level<'a> = &'a dyn Fn(&Obj<objects::PeerAuthentication>, &BTreeMap<String, String>) -> bool;
    let oldest = |f: Level| {
        converted(&m.peer_authentications)
            .filter(|(p, spec)| f(p, &spec.selector_labels()))
            .min_by_key(|(p, _)| p.meta().creation_timestamp.clone())
            .map(|(_, spec)| spec)
    };
    let root = m.root_namespace.as_str();
    let ns = m.namespace.as_str();
    let mesh = oldest(&|p, sel| p.namespace() == root && sel.is_empty());
    let nsp = oldest(&|p, sel| p.namespace() == ns && ns != root && sel.is_empty());
    let wl =
        oldest(&|p, sel| p.namespace() == ns && ns != root && !sel.is_empty() && labels_match(sel, labels));
    let mut strict = false;
    for p in [mesh, nsp, wl].into_iter().flatten() {
        match p.mode() {
            Some("UNSET") | None => {}
            Some(mode) => strict = mode == "STRICT",
        }
    }
    if let Some(w) = wl
        && let Some(mode) = w
            .port_level_mtls
            .get(&port.to_string())
            .and_then(|m| m.mode.as_deref())
        && mode != "UNSET"
    {
        strict = mode == "STRICT";
    }
    strict
}

// ---------------------------------------------------------------------------------------------------
// Moments.

/// The namespace at one moment of its plan.
#[derive(Clone, Debug)]
pub struct Moment {
    /// Short label: `0`, `1`, `2`, `3`, `4.1(Deployment/web)` (during restart batch 1, only that
    /// workload's pods new), `4.1` (after restart batch 1), `4`, `5`, `fleet`.
    pub label: String,
    /// Namespace labels.
    pub ns_labels: BTreeMap<String, String>,
    /// `istio.io/use-waypoint` labels set on Services.
    pub service_waypoint: BTreeMap<String, String>,
    /// The namespace's AuthorizationPolicies that exist.
    pub policies: Vec<Compiled>,
    /// Data plane of each workload.
    pub workloads: BTreeMap<String, DataPlane>,
    /// Data plane of a new pod of the namespace (a caller that is not one of the workloads).
    pub new_pods: DataPlane,
    /// Data planes callers in other namespaces may have (absent or empty: no mesh identity from there). One
    /// entry per namespace of the cluster that a rule names (the namespaces caller classes come from, see
    /// [`callers`]), shared by the moments that agree on it (all but the fleet's end).
    pub caller_namespaces: Arc<BTreeMap<String, Vec<DataPlane>>>,
    /// Data planes of a caller in a namespace no rule names.
    pub elsewhere: Vec<DataPlane>,
}

/// Where other namespaces stand in the fleet relative to this one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetPosition {
    /// Fleet namespaces that finish before this one starts (ambient throughout).
    pub before: BTreeSet<String>,
    /// Fleet namespaces that start after this one finished (current data plane, ambient at the fleet's end).
    pub after: BTreeSet<String>,
    /// Fleet namespaces that may run at the same time (either data plane).
    pub concurrent: BTreeSet<String>,
}

/// The data plane of a namespace's new pods from its labels: an injection label wins (sidecar), then
/// `istio.io/dataplane-mode=ambient`; otherwise not in the mesh.
pub fn namespace_dataplane(labels: &BTreeMap<String, String>) -> DataPlane {
    if namespace_on_sidecars(labels) {
        DataPlane::Sidecar
    } else if labels.get("istio.io/dataplane-mode").map(String::as_str) == Some("ambient") {
        DataPlane::Ambient
    } else {
        DataPlane::None
    }
}

fn meshed(dp: DataPlane) -> Vec<DataPlane> {
    if dp == DataPlane::None {
        Vec::new()
    } else {
        vec![dp]
    }
}

/// The policies of `list` that converted, compiled (one that did not is a preflight blocker).
fn compile_all(list: &[Obj<AuthzPolicy>]) -> Vec<Compiled> {
    converted(list).map(|(_, p)| Compiled::new(p.clone())).collect()
}

/// The moments of `plan`: before anything (`0`), after each step, inside and after each restart batch of
/// step 4, and the end of the fleet when callers of this namespace migrate after it.
pub fn moments(s: &Snapshot, m: &Mesh, plan: &NamespacePlan, fleet: &FleetPosition) -> Vec<Moment> {
    let ns = s.ns();
    let restarted: BTreeSet<String> = plan
        .restart_batches
        .iter()
        .flatten()
        .map(|w| format!("{}/{}", w.kind, w.name))
        .collect();
    let labels = s.ns_labels();
    let ns_ambient = labels.get("istio.io/dataplane-mode").map(String::as_str) == Some("ambient");
    let start_dp = |w: &Workload| {
        if restarted.contains(&w.name) {
            DataPlane::Sidecar
        } else if ns_ambient {
            DataPlane::Ambient
        } else {
            DataPlane::None
        }
    };
    // Where a caller from another namespace may stand: ambient once that namespace finished before this
    // one, either data plane while it may run alongside, as it is now otherwise. Asked only for the
    // namespaces the rules name (below), not for every namespace of the cluster: each namespace of a
    // large fleet is checked, so a map of the whole cluster per check grew with the square of the fleet.
    let caller_dataplanes = |other: &str, l: &BTreeMap<String, String>| {
        let now = namespace_dataplane(l);
        if fleet.before.contains(other) {
            vec![DataPlane::Ambient]
        } else if fleet.concurrent.contains(other) {
            let mut v = meshed(now);
            v.push(DataPlane::Ambient);
            v.dedup();
            v
        } else {
            meshed(now)
        }
    };
    // A caller in a namespace no rule names may be in any namespace outside the fleet. The cluster's
    // namespaces and the fleet's are both in name order: one walk over them together finds those outside.
    let mut elsewhere: BTreeSet<DataPlane> = [DataPlane::Ambient].into();
    let mut fleet_names = [&fleet.before, &fleet.after, &fleet.concurrent].map(|x| x.iter().peekable());
    for (other, l) in s.cluster.namespace_labels.iter() {
        let mut in_fleet = false;
        for names in &mut fleet_names {
            while names.next_if(|n| *n < other).is_some() {}
            in_fleet |= names.peek() == Some(&other);
        }
        if other != ns && !in_fleet {
            elsewhere.extend(meshed(namespace_dataplane(l)));
        }
    }
    let service_waypoint = s
        .services
        .iter()
        .filter_map(|svc| {
            let v = svc.metadata.labels.as_ref()?.get("istio.io/use-waypoint")?;
            Some((svc.metadata.name.clone().unwrap_or_default(), v.clone()))
        })
        .collect();
    let mut cur = Moment {
        label: "0".into(),
        ns_labels: labels.clone(),
        service_waypoint,
        policies: compile_all(&s.authorization_policies),
        workloads: m
            .workloads
            .iter()
            .map(|w| (w.name.clone(), start_dp(w)))
            .collect(),
        new_pods: namespace_dataplane(&labels),
        caller_namespaces: Arc::default(),
        elsewhere: elsewhere.into_iter().collect(),
    };
    let mut out = vec![cur.clone()];
    let add = |cur: &mut Moment, objs: &[super::plan::PlannedObject]| {
        for o in objs {
            if let Ok(p) = AuthzPolicy::parse(&o.manifest)
                && !cur.policies.iter().any(|x| x.policy.name == p.name)
            {
                cur.policies.push(Compiled::new(p));
            }
        }
    };
    let bind = |cur: &mut Moment| {
        for l in &plan.waypoint_labels {
            if l.target.kind == "Namespace" {
                cur.ns_labels.insert(l.key.clone(), l.value.clone());
            } else {
                cur.service_waypoint
                    .insert(l.target.name.clone(), l.value.clone());
            }
        }
    };
    let before_ambient = plan.options.activation_order == ActivationOrder::BeforeAmbient;
    // Step 1: twins (apply mode), then bridges and the waypoint label (engine: activate_waypoint).
    if plan.options.policy_migration == PolicyMigration::Apply {
        add(&mut cur, &plan.twins);
    }
    if before_ambient {
        add(&mut cur, &plan.bridges);
        bind(&mut cur);
    }
    cur.label = "1".into();
    out.push(cur.clone());
    // Step 2: pods without a sidecar are enrolled at once; sidecars take precedence.
    cur.ns_labels
        .insert(plan.ambient_label.key.clone(), plan.ambient_label.value.clone());
    for dp in cur.workloads.values_mut() {
        if *dp == DataPlane::None {
            *dp = DataPlane::Ambient;
        }
    }
    cur.new_pods = namespace_dataplane(&cur.ns_labels);
    cur.label = "2".into();
    out.push(cur.clone());
    // Step 3: new pods start without a sidecar.
    for (k, _) in plan.injection.pairs() {
        cur.ns_labels.remove(k);
    }
    cur.new_pods = namespace_dataplane(&cur.ns_labels);
    cur.label = "3".into();
    out.push(cur.clone());
    // Step 4: batch by batch.
    let order: Vec<Vec<String>> = plan
        .restart_batches
        .iter()
        .map(|b| b.iter().map(|w| format!("{}/{}", w.kind, w.name)).collect())
        .collect();
    let n = order.len();
    for (i, batch) in order.iter().enumerate() {
        // Inside a batch the rollouts run in parallel: any workload of it may already have new (ambient)
        // pods while another still has only old (sidecar) ones. A request has one caller pod and one
        // destination pod, so one moment per workload with only that workload's pods new covers every
        // (new caller, old destination) and (old caller, new destination) pair within the batch.
        if batch.len() > 1 {
            for w in batch {
                let mut mid = cur.clone();
                mid.workloads.insert(w.clone(), DataPlane::Ambient);
                mid.label = format!("4.{}({w})", i + 1);
                out.push(mid);
            }
        }
        for w in batch {
            cur.workloads.insert(w.clone(), DataPlane::Ambient);
        }
        if i + 1 < n || !before_ambient {
            cur.label = format!("4.{}", i + 1);
            out.push(cur.clone());
        }
    }
    if !before_ambient {
        add(&mut cur, &plan.bridges);
        bind(&mut cur);
    }
    cur.label = "4".into();
    out.push(cur.clone());
    // Step 5: deletions.
    cur.policies.retain(|p| {
        !plan
            .delete_at_step5
            .iter()
            .any(|d| d.kind == "AuthorizationPolicy" && d.name == p.policy.name)
    });
    cur.label = "5".into();
    out.push(cur.clone());
    // The callers' namespaces: those a rule of these moments' policies (or of the root namespace's) names,
    // the only ones a caller class comes from (`callers`, `Origin::Namespace`).
    let all: Vec<&AuthzPolicy> = out
        .iter()
        .flat_map(|x| x.policies.iter())
        .chain(m.root_policies.iter())
        .map(|c| &c.policy)
        .collect();
    let named: BTreeSet<String> = callers(m, &all)
        .into_iter()
        .filter_map(|c| match c.origin {
            Origin::Namespace(n) => Some(n),
            _ => None,
        })
        .collect();
    let known: BTreeMap<String, Vec<DataPlane>> = named
        .into_iter()
        .filter(|n| n != ns)
        .filter_map(|n| {
            let dps = caller_dataplanes(&n, s.cluster.namespace_labels.get(&n)?);
            Some((n, dps))
        })
        .collect();
    let known = Arc::new(known);
    for x in &mut out {
        x.caller_namespaces = known.clone();
    }
    // The fleet's end: namespaces after this one are ambient. A moment of its own whenever a fleet
    // namespace runs later, named by a rule or not (the table shows the fleet's end either way).
    let later: Vec<&String> = fleet.after.iter().chain(fleet.concurrent.iter()).collect();
    if later
        .iter()
        .any(|n| n.as_str() != ns && s.cluster.namespace_labels.contains_key(*n))
    {
        cur.caller_namespaces = known;
        let callers = Arc::make_mut(&mut cur.caller_namespaces);
        for n in later {
            if let Some(v) = callers.get_mut(n) {
                *v = vec![DataPlane::Ambient];
            }
        }
        cur.label = "fleet".into();
        out.push(cur);
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// Decisions.

/// The waypoint a Service uses at a moment: its own `istio.io/use-waypoint` label, else the namespace's;
/// `none` opts out; only waypoints of this namespace are modelled. Upstream: istio/api labels.yaml,
/// pilot/pkg/serviceregistry/ambient/waypoints.go.
pub fn waypoint_of<'a>(m: &'a Mesh, at: &'a Moment, svc: &Svc) -> Option<&'a str> {
    let name = at
        .service_waypoint
        .get(&svc.name)
        .or_else(|| at.ns_labels.get("istio.io/use-waypoint"))?;
    if at.ns_labels.contains_key("istio.io/use-waypoint-namespace")
        && !at.service_waypoint.contains_key(&svc.name)
    {
        return None;
    }
    m.waypoints.get(name.as_str()).map(String::as_str)
}

/// Selector, namespace-wide and root policies that apply to workload `w` (sidecar or ztunnel).
fn workload_policies<'a>(m: &'a Mesh, at: &'a Moment, w: &Workload) -> Vec<&'a Compiled> {
    at.policies
        .iter()
        .chain(m.root_policies.iter())
        .filter(|p| match &p.policy.attachment {
            Attachment::Selector { match_labels } => labels_match(match_labels, &w.labels),
            Attachment::NamespaceWide => true,
            Attachment::TargetRefs { .. } => false,
        })
        .collect()
}

/// Policies a waypoint enforces for traffic to `svc`: targetRefs to the Service, to the waypoint Gateway, and
/// to the `istio-waypoint` GatewayClass in the root namespace (istio.io docs/ambient/usage/l7-features).
fn waypoint_policies<'a>(m: &'a Mesh, at: &'a Moment, svc: &Svc, gw: Option<&str>) -> Vec<&'a Compiled> {
    let targets = |p: &Compiled, f: &dyn Fn(&super::policy::TargetRef) -> bool| match &p.policy.attachment {
        Attachment::TargetRefs { refs } => refs.iter().any(f),
        _ => false,
    };
    let mut out: Vec<&Compiled> = at
        .policies
        .iter()
        .filter(|p| targets(p, &|r| r.is_service() && r.name == svc.name))
        .collect();
    if let Some(g) = gw {
        out.extend(
            at.policies
                .iter()
                .filter(|p| targets(p, &|r| r.kind == "Gateway" && r.name == g)),
        );
        out.extend(
            m.root_policies
                .iter()
                .filter(|p| targets(p, &|r| r.kind == "GatewayClass" && r.name == "istio-waypoint")),
        );
    }
    out.dedup_by(|a, b| a.policy.namespace == b.policy.namespace && a.policy.name == b.policy.name);
    out
}

/// A request of a class.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Request {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Headers (lower-case names).
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// `GET /path [h=v]`.
    pub fn describe(&self) -> String {
        let mut t = format!("{} {}", self.method, self.path);
        for (k, v) in &self.headers {
            t.push_str(&format!(" [{k}: {v}]"));
        }
        t
    }
}

/// Where a decision was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hop {
    /// The waypoint's targetRefs policies.
    Waypoint,
    /// The destination sidecar's RBAC.
    Sidecar,
    /// ztunnel at the destination.
    Ztunnel,
    /// STRICT mTLS refused a caller without identity.
    Mtls,
    /// Nothing enforced (destination not in the mesh).
    Nothing,
}

/// The mesh's decision for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The destination application is reached.
    pub allowed: bool,
    /// Which hop decided (the last one when allowed).
    pub hop: Hop,
    /// The request went through the waypoint.
    pub via_waypoint: bool,
}

/// A moment prepared for many decisions: the policies each workload's proxy enforces, the waypoint each
/// Service uses (with the policies it enforces) and the policies the intent reads.
pub struct View<'a> {
    /// The namespace.
    pub mesh: &'a Mesh,
    /// The moment.
    pub at: &'a Moment,
    workload: BTreeMap<&'a str, Vec<&'a Compiled>>,
    waypoint: BTreeMap<&'a str, Option<(Identity, Vec<&'a Compiled>)>>,
    intent: BTreeMap<(&'a str, &'a str), Vec<&'a Compiled>>,
    host: BTreeMap<&'a str, String>,
}

impl<'a> View<'a> {
    /// Prepares moment `at` of `m`.
    pub fn new(m: &'a Mesh, at: &'a Moment) -> View<'a> {
        let workload: BTreeMap<&str, Vec<&Compiled>> = m
            .workloads
            .iter()
            .map(|w| (w.name.as_str(), workload_policies(m, at, w)))
            .collect();
        let mut waypoint = BTreeMap::new();
        let mut intent = BTreeMap::new();
        let mut host = BTreeMap::new();
        for svc in &m.services {
            let gw = waypoint_of(m, at, svc);
            waypoint.insert(
                svc.name.as_str(),
                gw.map(|g| {
                    let id = Identity {
                        trust_domain: m.trust_domain.clone(),
                        namespace: m.namespace.clone(),
                        service_account: g.to_string(),
                    };
                    (id, waypoint_policies(m, at, svc, Some(g)))
                }),
            );
            let wp = waypoint_policies(m, at, svc, gw);
            for w in m.endpoints(svc) {
                let mut pols = workload[w.name.as_str()].clone();
                pols.extend(wp.iter().copied());
                intent.insert((svc.name.as_str(), w.name.as_str()), pols);
            }
            host.insert(
                svc.name.as_str(),
                format!("{}.{}.svc.cluster.local", svc.name, m.namespace),
            );
        }
        View {
            mesh: m,
            at,
            workload,
            waypoint,
            intent,
            host,
        }
    }

    /// One request as the mesh handles it at this moment: a caller with `identity` on `caller` data plane
    /// sends `req` to `svc:port`, landing on workload `dest`. Paths follow istio.io docs/ambient/migrate
    /// (sidecar callers route themselves and bypass waypoints) and docs/ambient/usage/l4-policy (a waypoint
    /// does not impersonate the caller: the destination sees the waypoint's identity).
    #[allow(clippy::too_many_arguments)]
    pub fn decide(
        &self,
        identity: Option<&Identity>,
        caller: DataPlane,
        svc: &Svc,
        port: &SvcPort,
        req: &Request,
        dest: &Workload,
    ) -> Verdict {
        let m = self.mesh;
        let host = self.host.get(svc.name.as_str()).map(String::as_str).unwrap_or("");
        let tport = m.target_port(port, dest);
        let mut via_waypoint = false;
        let mut peer = if caller == DataPlane::None { None } else { identity };
        if caller == DataPlane::Ambient
            && let Some(Some((wp_id, wp_pols))) = self.waypoint.get(svc.name.as_str())
        {
            via_waypoint = true;
            // The waypoint authorizes with the caller's identity on the Service port.
            let a = Attrs {
                peer,
                port: port.port,
                method: &req.method,
                path: &req.path,
                host,
                headers: &req.headers,
            };
            if !envoy_allows(wp_pols, &a) {
                return Verdict {
                    allowed: false,
                    hop: Hop::Waypoint,
                    via_waypoint,
                };
            }
            peer = Some(wp_id);
        }
        let dp = self
            .at
            .workloads
            .get(&dest.name)
            .copied()
            .unwrap_or(DataPlane::None);
        let verdict = |allowed, hop| Verdict {
            allowed,
            hop,
            via_waypoint,
        };
        if dp == DataPlane::None {
            return verdict(true, Hop::Nothing);
        }
        // PeerAuthentication is enforced by the destination's proxy (sidecar or ztunnel).
        if peer.is_none() && m.strict(dest, tport) {
            return verdict(false, Hop::Mtls);
        }
        let empty = Vec::new();
        let pols = self.workload.get(dest.name.as_str()).unwrap_or(&empty);
        match dp {
            DataPlane::Sidecar => {
                let a = Attrs {
                    peer,
                    port: tport,
                    method: &req.method,
                    path: &req.path,
                    host,
                    headers: &req.headers,
                };
                verdict(envoy_allows(pols, &a), Hop::Sidecar)
            }
            _ => verdict(ztunnel_allows(pols, peer, tport), Hop::Ztunnel),
        }
    }

    /// What the policies ask for, reading this moment as the baseline: every policy that applies to the
    /// destination (selector, namespace-wide, root, targetRefs of the Service and, when the Service uses a
    /// waypoint, of the waypoint) in full with the real caller identity, and STRICT mTLS against a caller
    /// without identity.
    pub fn intent(
        &self,
        identity: Option<&Identity>,
        svc: &Svc,
        port: &SvcPort,
        req: &Request,
        dest: &Workload,
    ) -> bool {
        let m = self.mesh;
        let tport = m.target_port(port, dest);
        if identity.is_none() && m.strict(dest, tport) {
            return false;
        }
        let empty = Vec::new();
        let pols = self
            .intent
            .get(&(svc.name.as_str(), dest.name.as_str()))
            .unwrap_or(&empty);
        let a = Attrs {
            peer: identity,
            port: tport,
            method: &req.method,
            path: &req.path,
            host: self.host.get(svc.name.as_str()).map(String::as_str).unwrap_or(""),
            headers: &req.headers,
        };
        envoy_allows(pols, &a)
    }
}

// ---------------------------------------------------------------------------------------------------
// Classes.

/// Where a caller class lives (decides its data plane at each moment).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// Pods of these workloads of the namespace.
    Workloads(Vec<String>),
    /// A new pod of the namespace.
    OwnNamespace,
    /// Another namespace.
    Namespace(String),
    /// A namespace no rule names.
    Elsewhere,
    /// Outside the mesh.
    NoMesh,
}

/// A caller class.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Caller {
    /// For reports.
    pub label: String,
    /// Its identity (`None`: no mesh identity).
    pub identity: Option<Identity>,
    /// Where it lives.
    pub origin: Origin,
}

impl Caller {
    /// The data planes it may have at `at`.
    pub fn dataplanes(&self, at: &Moment) -> Vec<DataPlane> {
        match &self.origin {
            Origin::Workloads(ws) => {
                let mut v: Vec<DataPlane> = ws
                    .iter()
                    .filter_map(|w| at.workloads.get(w).copied())
                    .flat_map(meshed)
                    .collect();
                v.sort();
                v.dedup();
                v
            }
            Origin::OwnNamespace => meshed(at.new_pods),
            Origin::Namespace(n) => at.caller_namespaces.get(n).cloned().unwrap_or_default(),
            Origin::Elsewhere => at.elsewhere.clone(),
            Origin::NoMesh => vec![DataPlane::None],
        }
    }
}

/// Name used for a namespace, service account, method or path no rule names.
pub const UNNAMED: &str = "unnamed";

/// A concrete value matching an Istio pattern (`None` for `*`).
fn concrete(pattern: &str, fill: &str) -> Option<String> {
    if pattern == "*" || pattern.is_empty() {
        return None;
    }
    if let Some(p) = pattern.strip_suffix('*') {
        return Some(format!("{p}{fill}"));
    }
    if let Some(s) = pattern.strip_prefix('*') {
        return Some(format!("{fill}{s}"));
    }
    Some(pattern.to_string())
}

/// Every policy rule's sources and conditions, visited.
fn for_each_rule(policies: &[&AuthzPolicy], mut f: impl FnMut(&AuthzPolicy, &Value)) {
    for p in policies {
        for r in &p.rules {
            f(p, r);
        }
    }
}

/// The caller classes: identities, namespaces and service accounts named by any rule, the workloads of the
/// namespace, another identity of the namespace, an identity in a namespace no rule names, no identity.
pub fn callers(m: &Mesh, policies: &[&AuthzPolicy]) -> Vec<Caller> {
    let td = m.trust_domain.clone();
    let id = |ns: &str, sa: &str| Identity {
        trust_domain: td.clone(),
        namespace: ns.to_string(),
        service_account: sa.to_string(),
    };
    let mut ids: BTreeSet<Identity> = BTreeSet::new();
    let principal = |p: &str, ids: &mut BTreeSet<Identity>| {
        let fills = [
            UNNAMED.to_string(),
            format!("{UNNAMED}/sa/{UNNAMED}"),
            format!("ns/{UNNAMED}/sa/{UNNAMED}"),
            format!("/ns/{UNNAMED}/sa/{UNNAMED}"),
            format!("{td}/ns/{UNNAMED}"),
            format!("{td}/ns/{UNNAMED}/sa/"),
        ];
        if let Some(i) = fills
            .iter()
            .filter_map(|f| concrete(p, f))
            .find_map(|c| Identity::parse(&c))
        {
            ids.insert(i);
        }
    };
    for_each_rule(policies, |p, r| {
        for f in r["from"].as_array().into_iter().flatten() {
            let s = &f["source"];
            for k in ["principals", "notPrincipals"] {
                for v in strs(&s[k]) {
                    principal(v, &mut ids);
                }
            }
            for k in ["namespaces", "notNamespaces"] {
                for v in strs(&s[k]) {
                    if let Some(n) = concrete(v, UNNAMED) {
                        ids.insert(id(&n, "default"));
                    }
                }
            }
            for k in ["serviceAccounts", "notServiceAccounts"] {
                for v in strs(&s[k]) {
                    let (n, sa) = v.split_once('/').unwrap_or((&p.namespace, v));
                    ids.insert(id(n, sa));
                }
            }
        }
        for c in r["when"].as_array().into_iter().flatten() {
            let key = c["key"].as_str().unwrap_or("");
            for v in strs(&c["values"]).into_iter().chain(strs(&c["notValues"])) {
                match key {
                    "source.principal" => principal(v, &mut ids),
                    "source.namespace" => {
                        if let Some(n) = concrete(v, UNNAMED) {
                            ids.insert(id(&n, "default"));
                        }
                    }
                    _ => {}
                }
            }
        }
    });
    for w in &m.workloads {
        ids.insert(id(&m.namespace, &w.service_account));
    }
    ids.insert(id(&m.namespace, UNNAMED));
    ids.insert(id(&format!("{UNNAMED}-ns"), UNNAMED));
    let mut out: Vec<Caller> = ids
        .into_iter()
        // The waypoint's own identity is held by the waypoint only: it is a hop, not a caller.
        .filter(|i| {
            i.trust_domain == td && !(i.namespace == m.namespace && m.waypoints.contains(&i.service_account))
        })
        .map(|i| {
            let origin = if i.namespace == m.namespace {
                let ws: Vec<String> = m
                    .workloads
                    .iter()
                    .filter(|w| w.service_account == i.service_account)
                    .map(|w| w.name.clone())
                    .collect();
                if ws.is_empty() {
                    Origin::OwnNamespace
                } else {
                    Origin::Workloads(ws)
                }
            } else if i.namespace == format!("{UNNAMED}-ns") {
                Origin::Elsewhere
            } else {
                Origin::Namespace(i.namespace.clone())
            };
            Caller {
                label: format!("{}/{}", i.namespace, i.service_account),
                identity: Some(i),
                origin,
            }
        })
        .collect();
    out.push(Caller {
        label: "no mesh identity".into(),
        identity: None,
        origin: Origin::NoMesh,
    });
    out
}

/// The requests: every method, path and header value a rule names plus a method and path none names.
pub fn requests(policies: &[&AuthzPolicy]) -> Vec<Request> {
    let mut methods: BTreeSet<String> = BTreeSet::new();
    let mut paths: BTreeSet<String> = BTreeSet::new();
    let mut headers: BTreeSet<(String, String)> = BTreeSet::new();
    for_each_rule(policies, |_, r| {
        for t in r["to"].as_array().into_iter().flatten() {
            let o = &t["operation"];
            for v in strs(&o["methods"]).into_iter().chain(strs(&o["notMethods"])) {
                methods.extend(concrete(v, "X"));
            }
            for v in strs(&o["paths"]).into_iter().chain(strs(&o["notPaths"])) {
                let fill = if v.ends_with("/*") {
                    UNNAMED.to_string()
                } else {
                    format!("/{UNNAMED}")
                };
                paths.extend(concrete(v, &fill));
            }
        }
        for c in r["when"].as_array().into_iter().flatten() {
            let key = c["key"].as_str().unwrap_or("");
            if let Some(h) = key
                .strip_prefix("request.headers[")
                .and_then(|k| k.strip_suffix(']'))
            {
                for v in strs(&c["values"]).into_iter().chain(strs(&c["notValues"])) {
                    headers.insert((
                        h.to_ascii_lowercase(),
                        concrete(v, UNNAMED).unwrap_or(UNNAMED.into()),
                    ));
                }
            }
        }
    });
    let unnamed_method = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
        .iter()
        .find(|m| !methods.contains(**m))
        .map(|m| m.to_string())
        .unwrap_or_else(|| "PROPFIND".into());
    methods.insert(unnamed_method);
    paths.insert(format!("/{UNNAMED}"));
    let mut header_sets: Vec<Vec<(String, String)>> = vec![Vec::new()];
    header_sets.extend(headers.into_iter().map(|h| vec![h]));
    let mut out = Vec::new();
    for m in &methods {
        for p in &paths {
            for h in &header_sets {
                out.push(Request {
                    method: m.clone(),
                    path: p.clone(),
                    headers: h.clone(),
                });
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// The check.

string_enum! {
    /// Outage (intended allow, denied) or gap (intended deny, allowed); `migration.policies.accept_differences`
    /// names the kinds a namespace may migrate with.
    #[derive(PartialOrd, Ord)]
    DifferenceKind {
        /// A request the policies allow is denied.
        Outage = "outage",
        /// A request the policies deny reaches the application.
        Gap = "gap",
    }
}

/// One row of the enforcement table: a class whose decision differs from the intent at some moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Difference {
    /// Caller class (`ns/sa` or `no mesh identity`).
    pub caller: String,
    /// Caller data planes for which it differs.
    pub caller_dataplanes: Vec<DataPlane>,
    /// `service:port` (and the workload when the Service selects several).
    pub destination: String,
    /// Method, path and headers.
    pub request: String,
    /// The intended decision.
    pub intent: bool,
    /// Decision per moment (same order as the table's moments): `allow`, `deny`, or `allow/deny` when the
    /// caller's data plane decides.
    pub decisions: Vec<String>,
    /// Moments during which it differs.
    pub steps: Vec<String>,
    /// Outage or gap.
    pub kind: DifferenceKind,
    /// Differs already before the migration (not caused by it).
    pub pre_existing: bool,
    /// Why: the hop that decided and the path.
    pub cause: String,
    /// What removes it.
    pub fix: String,
}

/// The enforcement table of a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnforcementTable {
    /// Moment labels (`0` = before the migration).
    pub moments: Vec<String>,
    /// Classes evaluated (caller x destination x request).
    pub classes: usize,
    /// Classes whose decision equals the intent at every moment.
    pub equal: usize,
    /// The classes that differ.
    pub differences: Vec<Difference>,
}

impl EnforcementTable {
    /// Differences the migration causes (not pre-existing).
    pub fn caused(&self) -> impl Iterator<Item = &Difference> {
        self.differences.iter().filter(|d| !d.pre_existing)
    }
}

fn fix_for(kind: DifferenceKind, caller: DataPlane, v: &Verdict, allow_policies: &[&str]) -> String {
    let fix = match (kind, caller, v.via_waypoint, v.hop) {
        (DifferenceKind::Gap, DataPlane::Ambient, true, _) if !allow_policies.is_empty() => {
            return format!(
                "enforce {} at the waypoint: a targetRefs twin (generated; policy_migration = \"apply\" creates it before step 1)",
                allow_policies.join(", ")
            );
        }
        (DifferenceKind::Gap, DataPlane::Ambient, true, _) => {
            "enforce the destination's policy at the waypoint: a targetRefs policy with the same rules"
        }
        (DifferenceKind::Gap, DataPlane::Sidecar, _, _) => {
            "migrate the calling namespace first (fleet.order = \"callers-first\"), or keep the bridges (keep_bridges = true) so ztunnel admits only the waypoint"
        }
        (DifferenceKind::Gap, _, _, _) => {
            "keep an L4 policy admitting only the waypoint at the destination (keep_bridges = true), or STRICT mTLS for callers without identity"
        }
        (DifferenceKind::Outage, _, true, Hop::Waypoint) => {
            "give the waypoint the policy's rules (targetRefs twin with the same rules as the selector policy)"
        }
        (DifferenceKind::Outage, _, true, _) => {
            "admit the waypoint identity at the destination (bridges = true, or the generated waypoint admission)"
        }
        (DifferenceKind::Outage, DataPlane::Sidecar, false, _) => {
            "restart the namespace's callers before the destination, or migrate the calling namespace first (callers-first)"
        }
        (DifferenceKind::Outage, _, _, _) => {
            "bind the Service to a waypoint with a targetRefs twin (ztunnel drops HTTP rules), or enable bridges"
        }
    };
    fix.to_string()
}

fn word(b: bool) -> &'static str {
    if b { "allow" } else { "deny" }
}

/// Evaluates every class at every moment against the intent.
pub fn check(s: &Snapshot, plan: &NamespacePlan, fleet: &FleetPosition) -> EnforcementTable {
    let m = Mesh::from_snapshot(s);
    let ms = moments(s, &m, plan, fleet);
    let mut all: Vec<&AuthzPolicy> = ms
        .iter()
        .flat_map(|x| x.policies.iter())
        .chain(m.root_policies.iter())
        .map(|c| &c.policy)
        .collect();
    all.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    all.dedup_by(|a, b| a.namespace == b.namespace && a.name == b.name);
    let classes = callers(&m, &all);
    let reqs = requests(&all);
    let mut table = EnforcementTable {
        moments: ms.iter().map(|x| x.label.clone()).collect(),
        ..Default::default()
    };
    let views: Vec<View<'_>> = ms.iter().map(|at| View::new(&m, at)).collect();
    // Moments with the same policies, the same waypoint binding and the same destination data plane decide
    // every request alike: each class is decided once per distinct state (the policy set changes at step 1
    // and step 5 only, data planes at steps 2 and 4).
    let mut policy_version = Vec::with_capacity(ms.len());
    for (i, at) in ms.iter().enumerate() {
        let names = |x: &Moment| {
            x.policies
                .iter()
                .map(|c| c.policy.name.clone())
                .collect::<Vec<_>>()
        };
        let same = i > 0 && names(&ms[i - 1]) == names(at);
        let v = if same { policy_version[i - 1] } else { i };
        policy_version.push(v);
    }
    let dps_of: Vec<Vec<Vec<DataPlane>>> = classes
        .iter()
        .map(|c| ms.iter().map(|at| c.dataplanes(at)).collect())
        .collect();
    for svc in &m.services {
        let dests: Vec<&Workload> = m.endpoints(svc).collect();
        for port in &svc.ports {
            for dest in &dests {
                // The selector ALLOW policies of the destination before the migration (named in fixes).
                let allow_names: Vec<&str> = views[0]
                    .workload
                    .get(dest.name.as_str())
                    .into_iter()
                    .flatten()
                    .filter(|p| p.policy.action == Action::Allow)
                    .map(|p| p.policy.name.as_str())
                    .collect();
                let state: Vec<(usize, bool, DataPlane)> = ms
                    .iter()
                    .enumerate()
                    .map(|(i, at)| {
                        (
                            policy_version[i],
                            waypoint_of(&m, at, svc).is_some(),
                            at.workloads.get(&dest.name).copied().unwrap_or(DataPlane::None),
                        )
                    })
                    .collect();
                let dest_label = if dests.len() > 1 {
                    format!("{}:{} ({})", svc.name, port.port, dest.name)
                } else {
                    format!("{}:{}", svc.name, port.port)
                };
                for (c, class_dps) in classes.iter().zip(&dps_of) {
                    for r in &reqs {
                        table.classes += 1;
                        let want = views[0].intent(c.identity.as_ref(), svc, port, r, dest);
                        let mut decisions: Vec<&'static str> = Vec::with_capacity(ms.len());
                        let mut steps: Vec<usize> = Vec::new();
                        let mut dps: Vec<DataPlane> = Vec::new();
                        // The verdict explaining the difference: the first moment the migration changes.
                        let mut first_new: Option<(DataPlane, Verdict)> = None;
                        let mut first_any: Option<(DataPlane, Verdict)> = None;
                        let mut base_bad = false;
                        let mut memo: Vec<((usize, bool, DataPlane), DataPlane, Verdict)> = Vec::new();
                        for (i, view) in views.iter().enumerate() {
                            let (mut allow, mut deny) = (false, false);
                            let mut bad: Option<(DataPlane, Verdict)> = None;
                            for &dp in &class_dps[i] {
                                let v = match memo.iter().find(|(k, d, _)| *k == state[i] && *d == dp) {
                                    Some((_, _, v)) => *v,
                                    None => {
                                        let v = view.decide(c.identity.as_ref(), dp, svc, port, r, dest);
                                        memo.push((state[i], dp, v));
                                        v
                                    }
                                };
                                allow |= v.allowed;
                                deny |= !v.allowed;
                                if v.allowed != want {
                                    bad.get_or_insert((dp, v));
                                    if !dps.contains(&dp) {
                                        dps.push(dp);
                                    }
                                }
                            }
                            decisions.push(match (allow, deny) {
                                (true, true) => "allow/deny",
                                (true, false) => "allow",
                                (false, true) => "deny",
                                (false, false) => "-",
                            });
                            let Some((dp, v)) = bad else {
                                continue;
                            };
                            steps.push(i);
                            first_any.get_or_insert((dp, v));
                            if i == 0 {
                                base_bad = true;
                            } else if !base_bad || decisions[i] != decisions[0] {
                                first_new.get_or_insert((dp, v));
                            }
                        }
                        let later_new = first_new.is_some();
                        let first_bad = first_new.or(first_any);
                        let Some((dp, v)) = first_bad else {
                            table.equal += 1;
                            continue;
                        };
                        let kind = if want {
                            DifferenceKind::Outage
                        } else {
                            DifferenceKind::Gap
                        };
                        let path = if v.via_waypoint {
                            "through the waypoint"
                        } else {
                            "direct"
                        };
                        dps.sort();
                        table.differences.push(Difference {
                            caller: c.label.clone(),
                            caller_dataplanes: dps,
                            destination: dest_label.clone(),
                            request: r.describe(),
                            intent: want,
                            decisions: decisions.into_iter().map(str::to_string).collect(),
                            steps: steps.into_iter().map(|i| ms[i].label.clone()).collect(),
                            kind,
                            pre_existing: base_bad && !later_new,
                            cause: format!(
                                "{} caller, {path}: {} decides {}",
                                dp.as_str(),
                                match v.hop {
                                    Hop::Waypoint => "the waypoint",
                                    Hop::Sidecar => "the destination sidecar",
                                    Hop::Ztunnel => "ztunnel at the destination",
                                    Hop::Mtls => "STRICT mTLS",
                                    Hop::Nothing => "nothing (destination outside the mesh)",
                                },
                                word(v.allowed)
                            ),
                            fix: fix_for(kind, dp, &v, &allow_names),
                        });
                    }
                }
            }
        }
    }
    table
}

/// Finding codes of the equivalence check.
pub mod codes {
    /// A request the policies deny reaches the application at some moment of the plan.
    pub const GAP: &str = "enforcement-gap";
    /// A request the policies allow is denied at some moment of the plan.
    pub const OUTAGE: &str = "enforcement-outage";
    /// The decision differs from the policies already before the migration (not caused by it).
    pub const PRE_EXISTING: &str = "enforcement-differs-before-migration";
}

/// Every code [`findings`] emits.
pub const FINDING_CODES: [&str; 3] = [codes::GAP, codes::OUTAGE, codes::PRE_EXISTING];

fn steps_text(steps: &[String]) -> String {
    let named: Vec<String> = steps
        .iter()
        .map(|s| match s.as_str() {
            "0" => "before the migration".to_string(),
            "fleet" => "until the fleet's later namespaces migrate".to_string(),
            s if s.starts_with("4.") => match s[2..].split_once('(') {
                Some((batch, w)) => format!(
                    "step 4 during restart batch {batch} (only {}'s pods new)",
                    w.trim_end_matches(')')
                ),
                None => format!("step 4 after restart batch {}", &s[2..]),
            },
            s => format!("after step {s}"),
        })
        .collect();
    named.join(", ")
}

/// The findings of a table, one per (caller, destination, kind): blockers for differences the migration
/// causes, warnings when `accept` lists their kind, infos for differences that exist before it.
pub fn findings(namespace: &str, table: &EnforcementTable, accept: &[DifferenceKind]) -> Vec<super::Finding> {
    use super::{Finding, Severity};
    let mut groups: BTreeMap<(bool, DifferenceKind, String, String), Vec<&Difference>> = BTreeMap::new();
    for d in &table.differences {
        groups
            .entry((d.pre_existing, d.kind, d.destination.clone(), d.caller.clone()))
            .or_default()
            .push(d);
    }
    groups
        .into_iter()
        .map(|((pre, kind, dest, caller), ds)| {
            let first = ds[0];
            let (code, severity) = match (pre, kind) {
                (true, _) => (codes::PRE_EXISTING, Severity::Info),
                (false, DifferenceKind::Gap) => (codes::GAP, Severity::Blocker),
                (false, DifferenceKind::Outage) => (codes::OUTAGE, Severity::Blocker),
            };
            let severity = if severity == Severity::Blocker && accept.contains(&kind) {
                Severity::Warning
            } else {
                severity
            };
            let mut steps: Vec<String> = ds.iter().flat_map(|d| d.steps.iter().cloned()).collect();
            steps.sort_by_key(|s| table.moments.iter().position(|m| m == s));
            steps.dedup();
            let dps: BTreeSet<&str> = ds
                .iter()
                .flat_map(|d| d.caller_dataplanes.iter().map(|p| p.as_str()))
                .collect();
            let reqs: Vec<&str> = ds.iter().map(|d| d.request.as_str()).collect();
            let what = match kind {
                DifferenceKind::Gap => "reach(es) the application although the policies deny it",
                DifferenceKind::Outage => "is/are denied although the policies allow it",
            };
            let svc = dest.split(':').next().unwrap_or(&dest);
            Finding::new(
                severity,
                code,
                crate::steps::ObjRef::new("v1", "Service", namespace, svc),
                format!(
                    "{kind:?} for caller {caller} ({}) to {namespace}/{dest}: {} {what}, {} ({})",
                    dps.into_iter().collect::<Vec<_>>().join("/"),
                    reqs.join(", "),
                    steps_text(&steps),
                    first.cause
                )
                .replacen("Gap", "gap", 1)
                .replacen("Outage", "outage", 1),
                if accept.contains(&kind) && !pre {
                    format!(
                        "accepted (migration.policies.accept_differences); to remove it: {}",
                        first.fix
                    )
                } else {
                    first.fix.clone()
                },
            )
        })
        .collect()
}

/// Rows shown per namespace in text and Markdown (the JSON report has them all).
pub const SHOWN_ROWS: usize = 40;

impl EnforcementTable {
    /// One sentence: classes, moments, how many stay equal.
    pub fn summary(&self) -> String {
        let caused = self.caused().count();
        format!(
            "{} request classes x {} moments ({}): {} equal to the intent throughout, {} differ ({} caused by the migration, {} already before it)",
            self.classes,
            self.moments.len(),
            self.moments.join(" "),
            self.equal,
            self.differences.len(),
            caused,
            self.differences.len() - caused
        )
    }

    /// Plain-text table (the plan command's output).
    pub fn text(&self, indent: &str) -> String {
        let mut t = format!(
            "{indent}enforcement: {}
",
            self.summary()
        );
        if self.differences.is_empty() {
            return t;
        }
        // One column per moment, as wide as its label (a decision is at most 5 wide), one space apart.
        let widths: Vec<usize> = self.moments.iter().map(|m| m.len().max(5) + 1).collect();
        t.push_str(&format!(
            "{indent}  {:<28} {:<16} {:<28} {:<6} {}  kind\n",
            "caller",
            "destination",
            "request",
            "intent",
            self.moments
                .iter()
                .zip(&widths)
                .map(|(m, w)| format!("{m:>w$}"))
                .collect::<String>()
        ));
        for d in self.differences.iter().take(SHOWN_ROWS) {
            t.push_str(&format!(
                "{indent}  {:<28} {:<16} {:<28} {:<6} {}  {}{}\n",
                d.caller,
                d.destination,
                d.request,
                word(d.intent),
                d.decisions
                    .iter()
                    .zip(&widths)
                    .map(|(x, w)| format!("{:>w$}", short(x)))
                    .collect::<String>(),
                d.kind.as_str(),
                if d.pre_existing { " (before migration)" } else { "" }
            ));
        }
        if self.differences.len() > SHOWN_ROWS {
            t.push_str(&format!(
                "{indent}  ... {} more in the JSON output\n",
                self.differences.len() - SHOWN_ROWS
            ));
        }
        t
    }

    /// Markdown table (the run report).
    pub fn markdown(&self) -> String {
        let mut m = format!("{}\n", self.summary());
        if self.differences.is_empty() {
            return m;
        }
        m.push_str(&format!(
            "\n| Caller | Destination | Request | Intent | {} | Kind | Fix |\n|---|---|---|---|{}---|---|\n",
            self.moments.join(" | "),
            "---|".repeat(self.moments.len())
        ));
        for d in self.differences.iter().take(SHOWN_ROWS) {
            m.push_str(&format!(
                "| `{}` ({}) | `{}` | `{}` | {} | {} | {}{} | {} |\n",
                d.caller,
                d.caller_dataplanes
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join("/"),
                d.destination,
                d.request,
                word(d.intent),
                d.decisions.join(" | "),
                if d.kind == DifferenceKind::Gap {
                    "gap"
                } else {
                    "outage"
                },
                if d.pre_existing { " (before migration)" } else { "" },
                d.fix.replace('|', "\\|")
            ));
        }
        if self.differences.len() > SHOWN_ROWS {
            m.push_str(&format!(
                "\n{} more rows in the JSON report.\n",
                self.differences.len() - SHOWN_ROWS
            ));
        }
        m
    }
}

fn short(decision: &str) -> &str {
    match decision {
        "allow/deny" => "both",
        d => d,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::assess::Severity;
    use crate::assess::plan::{PlanOptions, plan_namespace};
    use serde_json::json;

    fn app(name: &str) -> (Value, Value) {
        (
            json!({"metadata": {"name": name, "namespace": "shop"},
                "spec": {"selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}},
                "spec": {"serviceAccountName": name, "containers": [{"name": name, "ports": [{"containerPort": 8080, "name": "http"}]}]}}}}),
            json!({"metadata": {"name": name, "namespace": "shop"},
                "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
        )
    }

    fn ready(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "istio-system"}, "spec": {"selector": {}, "template": {}},
               "status": {"desiredNumberScheduled": 1, "numberReady": 1, "currentNumberScheduled": 1,
                          "numberMisscheduled": 0}})
    }

    fn policy(name: &str, spec: Value) -> Value {
        json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
               "metadata": {"name": name, "namespace": "shop"}, "spec": spec})
    }

    /// The seed's `shop`: web, api, db; an L7 ALLOW on api with its twin; an L4 ALLOW on db that admits the
    /// waypoint and has no twin.
    pub(crate) fn shop(waypoint: bool, policies: Vec<Value>) -> Snapshot {
        let (d, s): (Vec<Value>, Vec<Value>) = ["web", "api", "db"].iter().map(|n| app(n)).unzip();
        let gws = if waypoint {
            vec![
                json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": "waypoint", "namespace": "shop"}, "spec": {"gatewayClassName": "istio-waypoint"}}),
            ]
        } else {
            Vec::new()
        };
        serde_json::from_value(json!({
            "namespace": {"metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}}},
            "services": s, "deployments": d, "gateways": gws, "authorizationPolicies": policies,
            "cluster": {"ztunnel": ready("ztunnel"), "istioCni": ready("istio-cni-node")},
        }))
        .unwrap()
    }

    pub(crate) fn db_admits_waypoint() -> Value {
        policy(
            "db-allow-api",
            json!({"selector": {"matchLabels": {"app": "db"}}, "action": "ALLOW", "rules": [
            {"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/api", "cluster.local/ns/shop/sa/waypoint"]}}]}]}),
        )
    }

    fn blockers(p: &NamespacePlan) -> Vec<String> {
        p.findings
            .iter()
            .filter(|f| f.severity == Severity::Blocker)
            .map(|f| format!("{}: {}", f.code, f.message))
            .collect()
    }

    #[test]
    fn l4_allow_admitting_the_waypoint_without_twin_is_a_gap_until_apply_twins_it() {
        let s = shop(true, vec![db_admits_waypoint()]);
        let p = plan_namespace(&s, &PlanOptions::default());
        let gaps: Vec<&Difference> = p.enforcement.caused().collect();
        assert!(
            gaps.iter().any(|d| d.kind == DifferenceKind::Gap
                && d.caller == "shop/web"
                && d.destination == "db:80"
                && d.caller_dataplanes == vec![DataPlane::Ambient]
                && d.steps.contains(&"5".to_string())),
            "{:#?}",
            p.enforcement
        );
        assert!(p.blocked());
        let b = blockers(&p);
        assert!(
            b.iter()
                .any(|m| m.starts_with(codes::GAP) && m.contains("shop/web")),
            "{b:#?}"
        );
        let web = gaps.iter().find(|d| d.caller == "shop/web").unwrap();
        assert!(
            web.fix.contains("db-allow-api") && web.fix.contains("targetRefs twin"),
            "{}",
            web.fix
        );
        // The text table shows the class and its decision at every moment.
        let text = p.enforcement.text("");
        assert!(
            text.contains("shop/web") && text.contains("db:80") && text.contains("gap"),
            "{text}"
        );
        // Every decision sits in its moment's column, with space between neighbours ("deny allow",
        // never "denyallow"): the header's moment labels and the decisions have the same width.
        let lines: Vec<&str> = text.lines().collect();
        let header = lines
            .iter()
            .find(|l| l.trim_start().starts_with("caller"))
            .expect("header");
        let web_row = lines.iter().find(|l| l.contains("shop/web")).expect("row");
        for m in &p.enforcement.moments {
            let end = header
                .find(&format!(" {m} "))
                .or_else(|| header.find(&format!(" {m}  kind")));
            let end = end.expect("moment in header") + 1 + m.len();
            let cell = &web_row[end - 6..end];
            assert!(cell.starts_with(' '), "cell {cell:?} under moment {m} in\n{text}");
            assert!(
                matches!(cell.trim(), "allow" | "deny" | "-"),
                "cell {cell:?} in\n{text}"
            );
        }
        let hazard = p
            .findings
            .iter()
            .find(|f| f.code == crate::assess::preflight::codes::L4_ADMITS_WAYPOINT_NO_TWIN)
            .expect("hazard explains it");
        let yaml = hazard.fix_yaml.as_deref().unwrap();
        assert!(
            yaml.contains("db-allow-api-waypoint") && yaml.contains("targetRefs"),
            "{yaml}"
        );
        // The twin removes the gap: planned before step 1 in apply mode.
        let apply = PlanOptions {
            policy_migration: PolicyMigration::Apply,
            ..Default::default()
        };
        let p = plan_namespace(&s, &apply);
        assert!(p.twins.iter().any(|t| t.object.name == "db-allow-api-waypoint"));
        assert_eq!(p.enforcement.caused().count(), 0, "{:#?}", p.enforcement);
        assert!(!p.blocked(), "{:#?}", blockers(&p));
        // Accepting gaps turns the blocker into a warning.
        let accept = PlanOptions {
            accept_differences: vec![DifferenceKind::Gap],
            ..Default::default()
        };
        assert!(!plan_namespace(&s, &accept).blocked());
    }

    #[test]
    fn every_moment_of_the_plan_is_listed() {
        let s = shop(true, vec![db_admits_waypoint()]);
        let p = plan_namespace(
            &s,
            &PlanOptions {
                batch_size: 1,
                ..Default::default()
            },
        );
        assert_eq!(
            p.enforcement.moments,
            vec!["0", "1", "2", "3", "4.1", "4.2", "4", "5"]
        );
        assert!(p.enforcement.classes > p.enforcement.differences.len());
        assert_eq!(
            p.enforcement.equal + p.enforcement.differences.len(),
            p.enforcement.classes
        );
    }

    fn seed_policies() -> Vec<Value> {
        let l7 = json!({"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/web"]}}],
                        "to": [{"operation": {"methods": ["GET"]}}]});
        vec![
            policy(
                "api-allow-web-get",
                json!({"selector": {"matchLabels": {"app": "api"}}, "rules": [l7.clone()]}),
            ),
            policy(
                "api-allow-web-get-waypoint",
                json!({"targetRefs": [{"kind": "Service", "group": "", "name": "api"}], "rules": [l7]}),
            ),
            db_admits_waypoint(),
        ]
    }

    #[test]
    fn seed_namespace_is_equivalent_with_twins_and_kept_bridges() {
        let s = shop(true, seed_policies());
        let apply = PlanOptions {
            policy_migration: PolicyMigration::Apply,
            ..Default::default()
        };
        // Without kept bridges, once step 5 deletes the L7 policy and its bridge, ztunnel at api admits
        // callers without identity: nothing sends them through the waypoint.
        let p = plan_namespace(&s, &apply);
        let caused: Vec<&Difference> = p.enforcement.caused().collect();
        assert!(!caused.is_empty());
        assert!(
            caused.iter().all(|d| d.caller == "no mesh identity"
                && d.destination == "api:80"
                && d.kind == DifferenceKind::Gap
                && d.steps == vec!["5".to_string()]
                && d.fix.contains("keep_bridges")),
            "{caused:#?}"
        );
        let kept = PlanOptions {
            keep_bridges: true,
            ..apply
        };
        let p = plan_namespace(&s, &kept);
        assert_eq!(p.enforcement.caused().count(), 0, "{:#?}", p.enforcement);
        assert!(!p.blocked(), "{:#?}", blockers(&p));
        assert_eq!(p.enforcement.equal, p.enforcement.classes);
        assert!(p.enforcement.classes >= 36, "{}", p.enforcement.classes);
    }

    #[test]
    fn namespace_without_waypoint_has_no_waypoint_findings_and_is_not_blocked() {
        use crate::assess::preflight::codes as h;
        // Only an L4 policy that does not admit a waypoint; no Gateway, nothing L7.
        let only_api = policy(
            "db-allow-api",
            json!({"selector": {"matchLabels": {"app": "db"}}, "rules": [
                {"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/api"]}}]}]}),
        );
        let mut s = shop(false, vec![only_api]);
        std::sync::Arc::make_mut(&mut s.cluster.namespace_labels).insert(
            "front".into(),
            [("istio-injection".to_string(), "enabled".to_string())].into(),
        );
        let p = plan_namespace(&s, &PlanOptions::default());
        assert!(p.waypoint_labels.is_empty());
        assert!(!p.blocked(), "{:#?}", blockers(&p));
        for code in [
            h::L4_DENIES_WAYPOINT,
            h::L4_ADMITS_WAYPOINT_NO_TWIN,
            h::SIDECAR_CALLERS,
            h::L4_DENY_BYPASSED,
        ] {
            assert!(
                p.findings.iter().all(|f| f.code != code),
                "{code}: {:#?}",
                p.findings
            );
        }
        let nw = p.findings.iter().find(|f| f.code == h::NO_WAYPOINT).unwrap();
        assert_eq!(nw.severity, Severity::Info);
        assert_eq!(p.enforcement.caused().count(), 0, "{:#?}", p.enforcement);
    }

    #[test]
    fn plan_restarts_bridged_workloads_last() {
        let s = shop(true, seed_policies());
        let p = plan_namespace(
            &s,
            &PlanOptions {
                batch_size: 3,
                ..Default::default()
            },
        );
        let names: Vec<Vec<String>> = p
            .restart_batches
            .iter()
            .map(|b| b.iter().map(|w| w.name.clone()).collect())
            .collect();
        assert_eq!(
            names,
            vec![vec!["db".to_string(), "web".to_string()], vec!["api".to_string()]]
        );
        // The moments follow that order: api (bridged) is still on its sidecar after the first batch.
        let ms = moments(&s, &Mesh::from_snapshot(&s), &p, &FleetPosition::default());
        let m41 = ms.iter().find(|m| m.label == "4.1").unwrap();
        assert_eq!(m41.workloads["Deployment/api"], DataPlane::Sidecar);
        assert_eq!(m41.workloads["Deployment/web"], DataPlane::Ambient);
    }

    #[test]
    fn moments_hold_the_data_planes_of_the_namespaces_rules_name_and_the_fleet_end_either_way() {
        // `front` is named by a rule; `a` .. `z` are fleet namespaces no rule names; `far` is outside the
        // fleet, on sidecars.
        let named = policy(
            "api-allow-front",
            json!({"selector": {"matchLabels": {"app": "api"}}, "rules": [
                {"from": [{"source": {"principals": ["cluster.local/ns/front/sa/web"]}}]}]}),
        );
        let mut s = shop(false, vec![named]);
        let sidecars: BTreeMap<String, String> =
            [("istio-injection".to_string(), "enabled".to_string())].into();
        let labels = Arc::make_mut(&mut s.cluster.namespace_labels);
        for n in ["front", "far"].into_iter().chain(["a", "b", "z"]) {
            labels.insert(n.to_string(), sidecars.clone());
        }
        let p = plan_namespace(&s, &PlanOptions::default());
        let m = Mesh::from_snapshot(&s);
        let fleet = |before: &[&str], after: &[&str], concurrent: &[&str]| FleetPosition {
            before: before.iter().map(|n| n.to_string()).collect(),
            after: after.iter().map(|n| n.to_string()).collect(),
            concurrent: concurrent.iter().map(|n| n.to_string()).collect(),
        };
        let front = |at: &Moment| at.caller_namespaces.get("front").cloned();
        // Only `front` is kept; `far` (outside the fleet, on sidecars) is what an unnamed caller may be.
        let ms = moments(&s, &m, &p, &fleet(&["front"], &["a", "b", "z"], &[]));
        assert!(ms.iter().all(|at| at.caller_namespaces.keys().eq(["front"])));
        assert!(ms.iter().all(|at| front(at) == Some(vec![DataPlane::Ambient])));
        assert!(
            ms.iter()
                .all(|at| at.elsewhere == vec![DataPlane::Sidecar, DataPlane::Ambient])
        );
        // Later fleet namespaces no rule names still give the fleet's end its moment.
        assert_eq!(ms.last().map(|x| x.label.as_str()), Some("fleet"));
        // `front` later: on sidecars throughout, ambient at the fleet's end only.
        let ms = moments(&s, &m, &p, &fleet(&[], &["front", "a"], &[]));
        let (end, rest) = ms.split_last().unwrap();
        assert_eq!(end.label, "fleet");
        assert_eq!(front(end), Some(vec![DataPlane::Ambient]));
        assert!(rest.iter().all(|at| front(at) == Some(vec![DataPlane::Sidecar])));
        // Alongside: either data plane until the fleet's end. Nobody later: no fleet moment.
        let ms = moments(&s, &m, &p, &fleet(&["a", "b", "z"], &[], &["front"]));
        let (end, rest) = ms.split_last().unwrap();
        assert_eq!(
            (end.label.as_str(), front(end)),
            ("fleet", Some(vec![DataPlane::Ambient]))
        );
        assert!(
            rest.iter()
                .all(|at| front(at) == Some(vec![DataPlane::Sidecar, DataPlane::Ambient]))
        );
        let ms = moments(&s, &m, &p, &fleet(&["front", "a", "b", "z"], &[], &[]));
        assert_ne!(ms.last().map(|x| x.label.as_str()), Some("fleet"));
        // With `far` in the fleet too, an unnamed caller is ambient or has no identity.
        let ms = moments(&s, &m, &p, &fleet(&["a"], &["far"], &["front", "b", "z"]));
        assert!(ms.iter().all(|at| at.elsewhere == vec![DataPlane::Ambient]));
        let ms = moments(&s, &m, &p, &fleet(&["a", "z"], &[], &["b"]));
        assert!(
            ms.iter()
                .all(|at| at.elsewhere == vec![DataPlane::Sidecar, DataPlane::Ambient])
        );
    }

    #[test]
    fn moments_inside_a_batch_mix_old_and_new_pods() {
        // Without bridges web and api restart together: while only api's pods are new, web's old sidecar
        // pod bypasses the waypoint and api's ztunnel drops the L7 rule, a state neither the moment
        // before the batch (both sidecars) nor after it (both ambient) shows.
        let s = shop(true, seed_policies());
        let opts = PlanOptions {
            bridges: false,
            ..Default::default()
        };
        let p = plan_namespace(&s, &opts);
        assert_eq!(p.restart_batches.len(), 1, "{:?}", p.restart_batches);
        let labels: Vec<&str> = p.enforcement.moments.iter().map(String::as_str).collect();
        assert_eq!(
            labels,
            vec![
                "0",
                "1",
                "2",
                "3",
                "4.1(Deployment/api)",
                "4.1(Deployment/db)",
                "4.1(Deployment/web)",
                "4",
                "5"
            ]
        );
        let m = Mesh::from_snapshot(&s);
        let ms = moments(&s, &m, &p, &FleetPosition::default());
        let mid = ms.iter().find(|x| x.label == "4.1(Deployment/api)").unwrap();
        assert_eq!(mid.workloads["Deployment/api"], DataPlane::Ambient);
        assert_eq!(mid.workloads["Deployment/web"], DataPlane::Sidecar);
        let web = m.workloads.iter().find(|w| w.name == "Deployment/web").unwrap();
        let id = Identity {
            trust_domain: "cluster.local".into(),
            namespace: "shop".into(),
            service_account: web.service_account.clone(),
        };
        let api = m.services.iter().find(|x| x.name == "api").unwrap();
        let get = Request {
            method: "GET".into(),
            path: "/".into(),
            headers: vec![],
        };
        let dest = m.workloads.iter().find(|w| w.name == "Deployment/api").unwrap();
        let v = View::new(&m, mid).decide(Some(&id), DataPlane::Sidecar, api, &api.ports[0], &get, dest);
        assert!(!v.allowed, "{v:?}");
        assert_eq!(v.hop, Hop::Ztunnel);
        let before = ms.iter().find(|x| x.label == "3").unwrap();
        let v = View::new(&m, before).decide(Some(&id), DataPlane::Sidecar, api, &api.ports[0], &get, dest);
        assert!(v.allowed, "{v:?}");
        // The plan reports that moment in words and in an aligned table column.
        let web_api = p
            .enforcement
            .differences
            .iter()
            .find(|d| d.caller == "shop/web" && d.destination == "api:80" && d.request == "GET /unnamed")
            .expect("web -> api GET differs");
        assert!(
            web_api.steps.iter().any(|x| x == "4.1(Deployment/api)"),
            "{web_api:?}"
        );
        let b = blockers(&p);
        assert!(
            b.iter()
                .any(|f| f.contains("step 4 during restart batch 1 (only Deployment/api's pods new)")),
            "{b:#?}"
        );
        let text = p.enforcement.text("");
        let lines: Vec<&str> = text.lines().skip(1).collect();
        let width = lines[0].len() - "  kind".len();
        for row in &lines[1..] {
            let cut = row.rfind("  ").unwrap();
            assert_eq!(cut, width, "columns aligned:\n{text}");
        }
    }
}
