//! The data-plane traffic model: one HTTP request from a workload (or from outside the mesh) to a
//! Service, routed and enforced as Istio would (sidecar, ambient/ztunnel, waypoint, un-meshed), with the
//! intended decision (every policy evaluated in full with the real caller identity) next to the actual
//! one, and counters per enforcement path. `MODEL.md` ("Traffic model") lists each rule and its source.
//!
//! Layout: [`snapshot`] reads the store into plain structs; [`model`] is the pure decision logic over
//! them; [`policy`] evaluates AuthorizationPolicy/PeerAuthentication (Envoy in full, ztunnel's L4
//! translation); [`jwt`] validates JWTs (RequestAuthentication); [`routing`] applies VirtualService/DestinationRule/HTTPRoute; [`egress`] decides requests
//! to hosts outside the cluster (the sidecar-only outbound policy); [`curl`] runs curl
//! command lines; [`proxy`] serves an HTTP forward proxy for probes.

pub mod curl;
pub mod egress;
pub mod jwt;
pub mod model;
pub mod policy;
pub mod proxy;
pub mod routing;
pub mod snapshot;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use crate::Sim;
use crate::faults::FaultKind;

/// Who sends a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A pod (by name; a Deployment-like workload name also works: the first ready pod named
    /// `<name>-...` or labelled `app=<name>`).
    Pod { namespace: String, name: String },
    /// Outside the mesh: no identity, plaintext (probes from the test runner).
    External,
}

/// One HTTP request.
#[derive(Debug, Clone)]
pub struct Request {
    pub source: Source,
    pub method: String,
    /// `http://svc.ns.svc.cluster.local[:port]/path`, also `svc.ns`, `svc.ns.svc` or `svc` (source ns).
    pub url: String,
    pub headers: Vec<(String, String)>,
}

/// What the caller observes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP response with this status.
    Http(u16),
    /// The connection was closed without a response (curl exit 56).
    Reset,
    /// The host does not resolve (curl exit 6).
    DnsFailure,
    /// Connection refused (curl exit 7).
    Refused,
}

/// The result of one request.
#[derive(Debug, Clone)]
pub struct Response {
    pub outcome: Outcome,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Hops that enforced policy: "waypoint", then the destination's "sidecar", "ztunnel" or "none".
    pub enforcement: Vec<String>,
    /// What the policies ask for, evaluated in full with the real caller identity.
    pub intended_allow: bool,
    /// Intended deny, yet the application was reached (a security gap).
    pub wrongly_allowed: bool,
    /// Intended allow, yet denied by policy or by a data-plane gap (an outage).
    pub wrongly_denied: bool,
}

impl Response {
    /// Value of a response header (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Routes and enforces one request against the current store, updates `sim.traffic` and returns what
/// the caller sees.
pub fn handle(sim: &Sim, req: &Request) -> Response {
    let seq = sim.traffic.next_seq();
    let src_ns = match &req.source {
        Source::Pod { namespace, .. } => Some(namespace.as_str()),
        Source::External => None,
    };
    let mut namespaces: Vec<String> = src_ns.iter().map(|s| s.to_string()).collect();
    if let Some(u) = model::parse_url(&req.url)
        && let Some((_, ns)) = model::target_of(&u.host, src_ns)
    {
        namespaces.push(ns);
    }
    let ns_refs: Vec<&str> = namespaces.iter().map(String::as_str).collect();
    let istio = &sim.settings.istio;
    let world = sim.store.read(|v| {
        let mut w = snapshot::load(v, &istio.trust_domain, &istio.system_namespace, &ns_refs);
        w.egress = egress::load(v, &istio.system_namespace, src_ns, &sim.settings.external_hosts);
        w
    });
    let env = SimEnv { sim, seq };
    let d = model::decide(&world, &env, req);
    sim.traffic.record(&d);
    d.response
}

/// The live parts of the model: faults (rolled per request) and the request sequence.
struct SimEnv<'a> {
    sim: &'a Sim,
    seq: u64,
}

impl model::Env for SimEnv<'_> {
    fn ztunnel_down(&self, node: Option<&str>, namespace: &str) -> bool {
        !self
            .sim
            .faults
            .matching(&*self.sim.store, FaultKind::ZtunnelDown, Some(namespace), |f| {
                f.node.is_none() || f.node.as_deref() == node
            })
            .is_empty()
    }

    fn app_error(&self, namespace: &str, service: &str) -> Option<u16> {
        self.sim
            .faults
            .matching(&*self.sim.store, FaultKind::ServiceErrors, Some(namespace), |f| {
                f.service.as_deref() == Some(service)
            })
            .first()
            .map(|f| f.status.unwrap_or(503))
    }

    fn seq(&self) -> u64 {
        self.seq
    }

    fn request_id(&self) -> String {
        uuid::Uuid::new_v4().to_string()
    }
}

#[derive(Debug, Default, Clone)]
struct Tally {
    total: u64,
    allowed: u64,
    denied: u64,
    errors: u64,
    wrongly_allowed: u64,
    wrongly_denied: u64,
    by_path: BTreeMap<String, u64>,
    by_outcome: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, d: &model::Decided) {
        self.total += 1;
        match d.class {
            model::Class::AppReached => self.allowed += 1,
            model::Class::Denied => self.denied += 1,
            model::Class::Error => self.errors += 1,
        }
        self.wrongly_allowed += d.response.wrongly_allowed as u64;
        self.wrongly_denied += d.response.wrongly_denied as u64;
        for hop in &d.response.enforcement {
            *self.by_path.entry(hop.clone()).or_default() += 1;
        }
        *self
            .by_outcome
            .entry(outcome_key(&d.response.outcome))
            .or_default() += 1;
    }

    fn json(&self) -> Value {
        let mut by_path = json!({"sidecar": 0, "ztunnel": 0, "waypoint": 0, "none": 0});
        for (k, v) in &self.by_path {
            by_path[k] = json!(v);
        }
        json!({
            "total": self.total,
            "allowed": self.allowed,
            "denied": self.denied,
            "errors": self.errors,
            "wrongly_allowed": self.wrongly_allowed,
            "wrongly_denied": self.wrongly_denied,
            "by_path": by_path,
            "by_outcome": self.by_outcome,
        })
    }
}

/// `"200"`, `"reset"`, `"dns"`, `"refused"`.
pub fn outcome_key(o: &Outcome) -> String {
    match o {
        Outcome::Http(s) => s.to_string(),
        Outcome::Reset => "reset".into(),
        Outcome::DnsFailure => "dns".into(),
        Outcome::Refused => "refused".into(),
    }
}

#[derive(Debug, Default)]
struct CountersInner {
    all: Tally,
    by_destination: BTreeMap<String, Tally>,
}

/// Request counters: totals, per enforcement path, per destination `namespace/service`, allowed
/// (application reached) / denied (by policy or a data-plane gap) / errors (DNS, no endpoint, routing),
/// wrongly allowed and wrongly denied. Thread-safe.
#[derive(Debug, Default)]
pub struct Counters {
    inner: Mutex<CountersInner>,
    seq: AtomicU64,
}

impl Counters {
    /// Everything counted so far:
    /// `{total, allowed, denied, errors, wrongly_allowed, wrongly_denied, by_path: {sidecar, ztunnel,
    /// waypoint, none}, by_outcome: {"200": n, "reset": n, ...}, by_destination: {"ns/svc": {same}}}`.
    pub fn snapshot(&self) -> Value {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut v = g.all.json();
        v["by_destination"] = Value::Object(
            g.by_destination
                .iter()
                .map(|(k, t)| (k.clone(), t.json()))
                .collect(),
        );
        v
    }

    /// Forgets every count.
    pub fn reset(&self) {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) = CountersInner::default();
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    fn record(&self, d: &model::Decided) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.all.add(d);
        let key = d.destination.clone().unwrap_or_else(|| "unresolved".into());
        g.by_destination.entry(key).or_default().add(d);
    }
}
