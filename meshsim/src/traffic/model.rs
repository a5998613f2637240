//! The pure decision logic: a [`World`] snapshot and an [`Env`] (faults, sequence) in, a [`Decided`]
//! out. Every rule names its source; the tags are those of the traffic-model vectors:
//! [l4] istio.io docs/ambient/usage/l4-policy, [ztun] istio/istio ambient/authorization.go + istio/ztunnel
//! src/rbac.rs, [mig] istio.io docs/ambient/migrate, [wpnr] istio.io PR 17520 + pilot waypoint status,
//! [cni] istio/api annotation ambient.istio.io/redirection, [pa] PeerAuthentication enforced by the
//! destination's proxy, [env] Envoy adds x-request-id and ztunnel does not, [jwt] RequestAuthentication
//! validated by the destination's sidecar (selector) or the waypoint (targetRefs), never by ztunnel
//! (istio.io docs/reference/config/security/request_authentication; see [`super::jwt`]).

use std::collections::BTreeMap;

use super::egress::{self, EgressCaller};
use super::jwt::{self, Authn, RequestAuthn};
use super::policy::{self, Attached, AuthzPolicy, ConnAttrs, Decision, RequestAttrs};
use super::routing::{self, RouteInput, RouteResult};
use super::snapshot::{DataPlane, Gateway, NsData, Pod, Service, World};
use super::{Outcome, Request, Response, Source};

/// Live inputs that are not part of the snapshot.
pub trait Env {
    /// Whether a `ztunnel-down` fault covers `node` (pods in `namespace`).
    fn ztunnel_down(&self, node: Option<&str>, namespace: &str) -> bool;
    /// Status a `service-errors` fault makes the application of `namespace/service` answer.
    fn app_error(&self, namespace: &str, service: &str) -> Option<u16>;
    /// Request sequence number (deterministic weights, endpoint round-robin).
    fn seq(&self) -> u64;
    /// A fresh x-request-id.
    fn request_id(&self) -> String;
    /// Unix time in seconds (JWT `exp`).
    fn now(&self) -> i64 {
        jiff::Timestamp::now().as_second()
    }
}

/// How a request ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The destination application handled the request (whatever status it answered).
    AppReached,
    /// Denied by a policy, or dropped by a data-plane gap (CNI pending, ztunnel down, waypoint without
    /// a ready pod, a sidecar that is not ready).
    Denied,
    /// Neither: DNS failure, unknown port, no ready endpoint, routing answer (fault abort, no route).
    Error,
}

/// The model's full answer.
#[derive(Debug, Clone)]
pub struct Decided {
    pub response: Response,
    pub class: Class,
    /// `namespace/service` of the addressed Service.
    pub destination: Option<String>,
}

/// Envoy's body for an RBAC denial.
pub const RBAC_DENIED: &str = "RBAC: access denied";
/// Envoy's body when the upstream connection was reset.
pub const UPSTREAM_RESET: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection termination";
/// Envoy's body when the cluster has no ready endpoint.
pub const NO_HEALTHY_UPSTREAM: &str = "no healthy upstream";

/// A parsed request URL.
#[derive(Debug, Clone, PartialEq)]
pub struct Url {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// Path and query (`/` at least).
    pub path_and_query: String,
}

impl Url {
    /// Path without the query.
    pub fn path(&self) -> &str {
        self.path_and_query.split('?').next().unwrap_or("/")
    }
}

/// Parses `http://host[:port]/path?q` (the scheme is optional; default port 80).
pub fn parse_url(url: &str) -> Option<Url> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("http".to_string(), url),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path
    };
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let default_port = if scheme == "https" { 443 } else { 80 };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => (h, p.parse().ok()?),
        _ => (authority, default_port),
    };
    if host.is_empty() {
        return None;
    }
    Some(Url {
        scheme,
        host: host.trim_end_matches('.').to_ascii_lowercase(),
        port,
        path_and_query: path,
    })
}

/// The Service a host names: `svc.ns.svc.cluster.local`, `svc.ns.svc`, `svc.ns`, or `svc` in the
/// source namespace (`default` for callers outside the cluster), as the pod's DNS search path resolves.
pub fn target_of(host: &str, source_ns: Option<&str>) -> Option<(String, String)> {
    let parts: Vec<&str> = host.split('.').collect();
    match parts.as_slice() {
        [svc] => Some((svc.to_string(), source_ns.unwrap_or("default").to_string())),
        [svc, ns] | [svc, ns, "svc"] | [svc, ns, "svc", "cluster", "local"] => {
            Some((svc.to_string(), ns.to_string()))
        }
        _ => None,
    }
}

/// The caller, as the data plane sees it.
#[derive(Debug, Clone)]
struct Caller {
    namespace: Option<String>,
    /// The source pod's labels (Sidecar `workloadSelector` for egress).
    labels: BTreeMap<String, String>,
    dataplane: Caller4,
    identity: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller4 {
    Sidecar,
    Ambient,
    Plain,
    External,
}

/// Finds the source pod: exact name, else a ready pod of the workload (`<name>-...` or `app=<name>`).
fn find_pod<'a>(w: &'a World, ns: &str, name: &str) -> Option<&'a Pod> {
    let d = w.ns(ns)?;
    if let Some(p) = d.pods.iter().find(|p| p.name == name) {
        return Some(p);
    }
    let mut cands: Vec<&Pod> = d
        .pods
        .iter()
        .filter(|p| {
            p.name.starts_with(&format!("{name}-")) || p.labels.get("app").map(String::as_str) == Some(name)
        })
        .collect();
    cands.sort_by_key(|p| (!p.ready, p.name.clone()));
    cands.first().copied()
}

fn canonical_header(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The state of a request as it travels.
struct Flight<'a> {
    w: &'a World,
    env: &'a dyn Env,
    method: String,
    url: Url,
    /// Lower-case header names, in order.
    headers: Vec<(String, String)>,
    enforcement: Vec<String>,
}

impl Flight<'_> {
    fn has_header(&self, name: &str) -> bool {
        self.headers.iter().any(|(k, _)| k == name)
    }

    /// Envoy's HTTP connection manager adds x-request-id when absent [env].
    fn envoy_touch(&mut self) {
        if !self.has_header("x-request-id") {
            let id = self.env.request_id();
            self.headers.push(("x-request-id".into(), id));
        }
    }

    fn route_input(&self) -> RouteInput<'_> {
        RouteInput {
            method: &self.method,
            path: self.url.path(),
            query: self.url.path_and_query.split_once('?').map_or("", |(_, q)| q),
            port: self.url.port,
            headers: &self.headers,
            seq: self.env.seq(),
        }
    }
}

/// What happened at the destination hop.
enum Delivery {
    NoEndpoint,
    /// Connection closed (by policy or by a data-plane gap).
    Reset,
    /// 403 from the destination sidecar.
    Forbidden,
    /// 401 from the destination sidecar: the JWT failed validation [jwt].
    Unauthorized(&'static str),
    /// The application answered.
    App {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
        pod: Box<Pod>,
    },
}

fn ready_endpoints<'a>(
    w: &'a World,
    svc: &Service,
    subset: Option<&BTreeMap<String, String>>,
) -> Vec<&'a Pod> {
    let Some(sel) = &svc.selector else {
        return Vec::new();
    };
    if sel.is_empty() {
        return Vec::new();
    }
    let mut eps: Vec<&Pod> = w
        .ns(&svc.namespace)
        .map(|d| {
            d.pods
                .iter()
                .filter(|p| p.ready && sel.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
                .filter(|p| subset.is_none_or(|s| s.iter().all(|(k, v)| p.labels.get(k) == Some(v))))
                .collect()
        })
        .unwrap_or_default();
    eps.sort_by(|a, b| a.name.cmp(&b.name));
    eps
}

fn target_port(svc_port: &routing::PortSelector, svc: &Service, pod: Option<&Pod>, url_port: u16) -> u16 {
    let sp = svc
        .ports
        .iter()
        .find(|p| Some(p.port) == svc_port.number)
        .or_else(|| svc.ports.iter().find(|p| p.port == url_port))
        .or(svc.ports.first());
    match sp.map(|p| &p.target) {
        Some(Ok(n)) => *n,
        Some(Err(name)) => pod
            .and_then(|p| {
                p.ports
                    .iter()
                    .find(|(n, _)| n.as_deref() == Some(name))
                    .map(|(_, p)| *p)
            })
            .unwrap_or(url_port),
        None => url_port,
    }
}

/// Policies applying to a workload at a sidecar or ztunnel: selector and namespace-wide policies of its
/// namespace and of the root namespace; never targetRefs ones.
fn workload_policies<'a>(w: &'a World, ns: &str, labels: &BTreeMap<String, String>) -> Vec<&'a AuthzPolicy> {
    workload_attached(w, ns, labels, |d| &d.authz)
}

/// RequestAuthentications a destination sidecar applies: the same attachment as AuthorizationPolicy [jwt].
fn workload_authn<'a>(w: &'a World, ns: &str, labels: &BTreeMap<String, String>) -> Vec<&'a RequestAuthn> {
    workload_attached(w, ns, labels, |d| &d.request_authn)
}

/// Selector and namespace-wide objects of `ns` and of the root namespace that select the workload.
fn workload_attached<'a, T: Attached>(
    w: &'a World,
    ns: &str,
    labels: &BTreeMap<String, String>,
    pick: impl Fn(&'a NsData) -> &'a [T],
) -> Vec<&'a T> {
    let mut out = Vec::new();
    for n in [ns, w.root_ns.as_str()] {
        if let Some(d) = w.ns(n) {
            out.extend(
                pick(d)
                    .iter()
                    .filter(|p| p.selects_workload(&w.root_ns, ns, labels)),
            );
        }
        if n == w.root_ns {
            break;
        }
    }
    out
}

fn strict_for(w: &World, ns: &str, labels: &BTreeMap<String, String>, port: u16) -> bool {
    let mut pas = Vec::new();
    for n in [ns, w.root_ns.as_str()] {
        if let Some(d) = w.ns(n) {
            pas.extend(d.peer_auth.iter());
        }
        if n == w.root_ns {
            break;
        }
    }
    policy::strict_mtls(&pas, &w.root_ns, ns, labels, port)
}

/// The waypoint a Service uses: Service label `istio.io/use-waypoint`, else the namespace label;
/// `none` opts out; `istio.io/use-waypoint-namespace` names another namespace. Source: istio/api
/// labels.yaml, pilot/pkg/serviceregistry/ambient/waypoints.go (§3g).
fn use_waypoint(w: &World, svc: &Service) -> Option<(String, String)> {
    let ns_labels = w.ns(&svc.namespace).map(|d| &d.labels);
    let (name, wns) = match svc.labels.get("istio.io/use-waypoint") {
        Some(n) => (
            n.clone(),
            svc.labels.get("istio.io/use-waypoint-namespace").cloned(),
        ),
        None => {
            let l = ns_labels?;
            (
                l.get("istio.io/use-waypoint")?.clone(),
                l.get("istio.io/use-waypoint-namespace").cloned(),
            )
        }
    };
    if name == "none" || name.is_empty() {
        return None;
    }
    Some((wns.unwrap_or_else(|| svc.namespace.clone()), name))
}

enum WaypointState<'a> {
    /// No usable waypoint: traffic goes direct [wpnr].
    Direct,
    /// Address assigned but no ready waypoint pod: the waypoint cannot be reached.
    Unreachable,
    Ready {
        gw: &'a Gateway,
        identity: String,
    },
}

fn waypoint_state<'a>(w: &'a World, svc: &Service) -> WaypointState<'a> {
    let Some((wns, name)) = use_waypoint(w, svc) else {
        return WaypointState::Direct;
    };
    let Some(d) = w.ns(&wns) else {
        return WaypointState::Direct;
    };
    let Some(gw) = d
        .gateways
        .iter()
        .find(|g| g.name == name && g.class == "istio-waypoint")
    else {
        return WaypointState::Direct;
    };
    // istio.io/waypoint-for: service (default), all, workload, none (§3b).
    let wfor = gw
        .labels
        .get("istio.io/waypoint-for")
        .map(String::as_str)
        .unwrap_or("service");
    if !matches!(wfor, "service" | "all") || !gw.has_address {
        return WaypointState::Direct;
    }
    let pod = d.pods.iter().find(|p| {
        p.ready
            && p.labels
                .get("gateway.networking.k8s.io/gateway-name")
                .map(String::as_str)
                == Some(name.as_str())
    });
    match pod {
        Some(p) => WaypointState::Ready {
            gw,
            identity: p.identity(&w.trust_domain),
        },
        None => WaypointState::Unreachable,
    }
}

/// Policies a waypoint enforces for traffic to `svc`: targetRefs to the Service, to the waypoint
/// Gateway, and to the `istio-waypoint` GatewayClass (root namespace). Source: istio.io
/// docs/ambient/usage/l7-features; authorization-policy reference (targetRefs).
fn waypoint_policies<'a>(w: &'a World, svc: &Service, gw: Option<(&str, &str)>) -> Vec<&'a AuthzPolicy> {
    waypoint_attached(w, svc, gw, |d| &d.authz)
}

/// RequestAuthentications a waypoint applies for `svc`: targetRefs to the Service, the Gateway or the
/// `istio-waypoint` GatewayClass, as for AuthorizationPolicy [jwt].
fn waypoint_authn<'a>(w: &'a World, svc: &Service, gw: Option<(&str, &str)>) -> Vec<&'a RequestAuthn> {
    waypoint_attached(w, svc, gw, |d| &d.request_authn)
}

fn waypoint_attached<'a, T: Attached>(
    w: &'a World,
    svc: &Service,
    gw: Option<(&str, &str)>,
    pick: impl Fn(&'a NsData) -> &'a [T],
) -> Vec<&'a T> {
    let mut out: Vec<&T> = Vec::new();
    if let Some(d) = w.ns(&svc.namespace) {
        out.extend(pick(d).iter().filter(|p| p.targets_service(&svc.name)));
    }
    if let Some((gns, gname)) = gw {
        if let Some(d) = w.ns(gns) {
            out.extend(pick(d).iter().filter(|p| p.targets_gateway(gname)));
        }
        if let Some(d) = w.ns(&w.root_ns) {
            out.extend(
                pick(d)
                    .iter()
                    .filter(|p| p.targets_gateway_class("istio-waypoint")),
            );
        }
    }
    out.dedup_by(|a, b| a.namespace() == b.namespace() && a.name() == b.name());
    out
}

/// Runs JWT validation [jwt] and puts the request principal and claims on `attrs`; `Err` is the 401 body.
fn authenticate(
    policies: &[&RequestAuthn],
    env: &dyn Env,
    attrs: &mut RequestAttrs,
) -> Result<(), &'static str> {
    match jwt::authenticate(policies, &attrs.headers, env.now()) {
        Authn::Anonymous => Ok(()),
        Authn::Principal { principal, claims } => {
            attrs.request_principal = Some(principal);
            attrs.claims = claims;
            Ok(())
        }
        Authn::Rejected(body) => Err(body),
    }
}

fn service<'a>(w: &'a World, ns: &str, name: &str) -> Option<&'a Service> {
    w.ns(ns)?.services.iter().find(|s| s.name == name)
}

fn subset_labels(
    w: &World,
    caller_ns: Option<&str>,
    svc: &Service,
    subset: &str,
) -> Option<BTreeMap<String, String>> {
    let mut nss: Vec<&str> = caller_ns.into_iter().collect();
    nss.extend([svc.namespace.as_str(), w.root_ns.as_str()]);
    for n in nss {
        if let Some(d) = w.ns(n) {
            for dr in d
                .destination_rules
                .iter()
                .filter(|dr| dr.covers(&svc.name, &svc.namespace))
            {
                if let Some(s) = dr.spec.subsets.iter().find(|s| s.name == subset) {
                    return Some(s.labels.clone());
                }
            }
        }
    }
    None
}

/// Echo application response body, in the style of Istio's echo server (pkg/test/echo).
fn echo_body(pod: &Pod, f: &Flight<'_>, status: u16, port: u16) -> String {
    let mut lines = vec![
        format!(
            "ServiceVersion={}",
            pod.labels.get("version").cloned().unwrap_or_default()
        ),
        format!("ServicePort={port}"),
        format!("Host={}", f.url.host),
        format!("URL={}", f.url.path_and_query),
        format!("Method={}", f.method),
        "Proto=HTTP/1.1".to_string(),
        format!("StatusCode={status}"),
    ];
    let mut hs: Vec<(String, String)> = f.headers.clone();
    hs.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, v) in hs {
        lines.push(format!("RequestHeader={}:{}", canonical_header(&k), v));
    }
    lines.push(format!("Hostname={}", pod.name));
    lines.join("\n") + "\n"
}

/// Delivers to a Service's endpoint: the destination hop (sidecar, ztunnel or nothing) and the app.
/// `peer` is the identity the destination sees (`None`: plaintext).
fn deliver(
    f: &mut Flight<'_>,
    svc: &Service,
    port: &routing::PortSelector,
    subset: Option<&BTreeMap<String, String>>,
    peer: Option<&str>,
) -> Delivery {
    let eps = ready_endpoints(f.w, svc, subset);
    if eps.is_empty() {
        return Delivery::NoEndpoint;
    }
    let pod = eps[(f.env.seq() % eps.len() as u64) as usize].clone();
    let tport = target_port(port, svc, Some(&pod), f.url.port);
    let w = f.w;
    match pod.dataplane() {
        DataPlane::Pending | DataPlane::SidecarNotReady => return Delivery::Reset, // [cni]
        DataPlane::Ambient => {
            if !w.ztunnel_ready_on(pod.node.as_deref())
                || f.env.ztunnel_down(pod.node.as_deref(), &pod.namespace)
            {
                return Delivery::Reset;
            }
            f.enforcement.push("ztunnel".into());
            // [pa] ztunnel enforces STRICT: a peer without identity is rejected.
            if peer.is_none() && strict_for(w, &pod.namespace, &pod.labels, tport) {
                return Delivery::Reset;
            }
            // [ztun] the L4 translation of selector/namespace/root policies, seen identity.
            let pols = workload_policies(w, &pod.namespace, &pod.labels);
            let conn = ConnAttrs {
                principal: peer.map(str::to_string),
                source_ip: None,
                destination_ip: pod.ip,
                port: tport,
            };
            if !policy::ztunnel_decision(pols, &conn).allowed() {
                return Delivery::Reset;
            }
        }
        DataPlane::Sidecar => {
            f.enforcement.push("sidecar".into());
            // [pa] the inbound sidecar rejects plaintext under STRICT (TLS handshake fails).
            if peer.is_none() && strict_for(w, &pod.namespace, &pod.labels, tport) {
                return Delivery::Reset;
            }
            f.envoy_touch();
            let pols = workload_policies(w, &pod.namespace, &pod.labels);
            let mut attrs = RequestAttrs {
                principal: peer.map(str::to_string),
                source_ip: None,
                destination_ip: pod.ip,
                port: tport,
                method: f.method.clone(),
                path: f.url.path().to_string(),
                host: f.url.host.clone(),
                headers: f.headers.clone(),
                ..Default::default()
            };
            if let Err(body) =
                authenticate(&workload_authn(w, &pod.namespace, &pod.labels), f.env, &mut attrs)
            {
                return Delivery::Unauthorized(body);
            }
            if !policy::envoy_decision(pols, &attrs).allowed() {
                return Delivery::Forbidden;
            }
        }
        DataPlane::None => f.enforcement.push("none".into()),
    }
    let status = f.env.app_error(&svc.namespace, &svc.name).unwrap_or(200);
    let body = if status == 200 {
        echo_body(&pod, f, status, tport)
    } else {
        format!("service-errors fault: {status}\n")
    };
    let mut headers = vec![(
        "content-type".to_string(),
        "text/plain; charset=utf-8".to_string(),
    )];
    if let Some((_, id)) = f.headers.iter().find(|(k, _)| k == "x-request-id") {
        headers.push(("x-request-id".into(), id.clone()));
    }
    Delivery::App {
        status,
        body,
        headers,
        pod: Box::new(pod),
    }
}

/// Intended decision: every policy that should apply to the destination workload (selector,
/// namespace-wide, root, and targetRefs of the Service and of its waypoint), in full, with the real
/// caller identity; plus STRICT mTLS against a plaintext caller.
/// `svcs`: the addressed Service and, when routing chose another, the routed one (the pod belongs to the
/// last).
fn intended(
    w: &World,
    svcs: &[&Service],
    pod: Option<&Pod>,
    caller_identity: Option<&str>,
    f: &Flight<'_>,
    tport: u16,
) -> bool {
    let last = svcs[svcs.len() - 1];
    let labels = pod
        .map(|p| p.labels.clone())
        .or_else(|| last.selector.clone())
        .unwrap_or_default();
    let ns = pod
        .map(|p| p.namespace.as_str())
        .unwrap_or(last.namespace.as_str());
    if caller_identity.is_none() && strict_for(w, ns, &labels, tport) {
        return false;
    }
    let mut pols = workload_policies(w, ns, &labels);
    let mut authn = workload_authn(w, ns, &labels);
    for svc in svcs {
        let gw = use_waypoint(w, svc);
        let gw = gw.as_ref().map(|(a, b)| (a.as_str(), b.as_str()));
        pols.extend(waypoint_policies(w, svc, gw));
        authn.extend(waypoint_authn(w, svc, gw));
    }
    let mut attrs = RequestAttrs {
        principal: caller_identity.map(str::to_string),
        source_ip: None,
        destination_ip: pod.and_then(|p| p.ip),
        port: tport,
        method: f.method.clone(),
        path: f.url.path().to_string(),
        host: f.url.host.clone(),
        headers: f.headers.clone(),
        ..Default::default()
    };
    // Every RequestAuthentication meant for the workload validates the token (one merged filter).
    if authenticate(&authn, f.env, &mut attrs).is_err() {
        return false;
    }
    policy::envoy_decision(pols, &attrs).allowed()
}

fn simple(outcome: Outcome, class: Class, destination: Option<String>) -> Decided {
    Decided {
        response: Response {
            outcome,
            headers: Vec::new(),
            body: String::new(),
            enforcement: Vec::new(),
            intended_allow: true,
            wrongly_allowed: false,
            wrongly_denied: false,
        },
        class,
        destination,
    }
}

fn envoy_reply(status: u16, body: &str) -> (Outcome, Vec<(String, String)>, String) {
    (
        Outcome::Http(status),
        vec![
            ("content-type".into(), "text/plain".into()),
            ("server".into(), "envoy".into()),
        ],
        body.to_string(),
    )
}

/// Routes and enforces one request.
pub fn decide(w: &World, env: &dyn Env, req: &Request) -> Decided {
    // --- the caller
    let caller = match &req.source {
        Source::External => Caller {
            namespace: None,
            labels: BTreeMap::new(),
            dataplane: Caller4::External,
            identity: None,
        },
        Source::Pod { namespace, name } => {
            let Some(pod) = find_pod(w, namespace, name) else {
                let mut d = simple(Outcome::Refused, Class::Error, None);
                d.response
                    .headers
                    .push(("x-meshsim-error".into(), "unknown-source".into()));
                d.response.body = format!("source pod {namespace}/{name} not found");
                return d;
            };
            let dp = pod.dataplane();
            let cls = match dp {
                DataPlane::Sidecar => Caller4::Sidecar,
                DataPlane::Ambient => Caller4::Ambient,
                DataPlane::None => Caller4::Plain,
                DataPlane::SidecarNotReady => {
                    // iptables sends outbound traffic to an Envoy that does not listen yet.
                    return simple(Outcome::Refused, Class::Denied, None);
                }
                DataPlane::Pending => return simple(Outcome::Reset, Class::Denied, None), // [cni]
            };
            if cls == Caller4::Ambient
                && (!w.ztunnel_ready_on(pod.node.as_deref())
                    || env.ztunnel_down(pod.node.as_deref(), namespace))
            {
                return simple(Outcome::Reset, Class::Denied, None);
            }
            Caller {
                namespace: Some(namespace.clone()),
                labels: pod.labels.clone(),
                identity: matches!(cls, Caller4::Sidecar | Caller4::Ambient)
                    .then(|| pod.identity(&w.trust_domain)),
                dataplane: cls,
            }
        }
    };
    // --- the target
    let Some(url) = parse_url(&req.url) else {
        return simple(Outcome::DnsFailure, Class::Error, None);
    };
    if url.scheme != "http" {
        return simple(Outcome::Refused, Class::Error, None);
    }
    // A host outside the cluster (not a Service): egress, decided by the caller's outbound policy.
    let in_cluster = target_of(&url.host, caller.namespace.as_deref())
        .is_some_and(|(name, ns)| service(w, &ns, &name).is_some());
    if !in_cluster && w.egress.is_external(&url.host) {
        let kind = match caller.dataplane {
            Caller4::Sidecar => EgressCaller::Sidecar,
            Caller4::Ambient => EgressCaller::Ambient,
            Caller4::Plain | Caller4::External => EgressCaller::Other,
        };
        let source = caller.namespace.as_deref().map(|ns| (ns, &caller.labels));
        return egress::decide(
            &w.egress,
            kind,
            source,
            &req.method.to_ascii_uppercase(),
            &url.host,
            &url.path_and_query,
            || env.request_id(),
        );
    }
    let Some((svc_name, svc_ns)) = target_of(&url.host, caller.namespace.as_deref()) else {
        return simple(Outcome::DnsFailure, Class::Error, None);
    };
    let Some(svc) = service(w, &svc_ns, &svc_name) else {
        return simple(Outcome::DnsFailure, Class::Error, None);
    };
    let dest_key = Some(format!("{svc_ns}/{svc_name}"));
    if !svc.ports.iter().any(|p| p.port == url.port) {
        // Nothing listens on that port of the ClusterIP (meshsim answers refused).
        return simple(Outcome::Refused, Class::Error, dest_key);
    }
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .filter(|(k, _)| k != "host")
        .collect();
    headers.insert(
        0,
        (
            "host".into(),
            if url.port == 80 {
                url.host.clone()
            } else {
                format!("{}:{}", url.host, url.port)
            },
        ),
    );
    let mut f = Flight {
        w,
        env,
        method: req.method.to_ascii_uppercase(),
        url: url.clone(),
        headers,
        enforcement: Vec::new(),
    };

    // --- the path
    let client_envoy;
    let delivery;
    let mut final_svc: &Service = svc;
    match caller.dataplane {
        Caller4::Sidecar => {
            // [mig] a sidecar caller routes itself (VirtualService, else GAMMA HTTPRoute) and bypasses
            // any waypoint.
            client_envoy = true;
            f.envoy_touch();
            match sidecar_route(w, &f, caller.namespace.as_deref(), svc) {
                Err((status, body)) => {
                    return finish(
                        w,
                        &mut f,
                        svc,
                        None,
                        caller.identity.as_deref(),
                        Err((status, body)),
                        dest_key,
                    );
                }
                Ok((target, port, subset)) => {
                    final_svc = target;
                    let labels = match &subset {
                        Some(s) => match subset_labels(w, caller.namespace.as_deref(), target, s) {
                            Some(l) => Some(l),
                            None => {
                                return finish(
                                    w,
                                    &mut f,
                                    target,
                                    None,
                                    caller.identity.as_deref(),
                                    Err((503, NO_HEALTHY_UPSTREAM.to_string())),
                                    dest_key,
                                );
                            }
                        },
                        None => None,
                    };
                    delivery = deliver(&mut f, target, &port, labels.as_ref(), caller.identity.as_deref());
                }
            }
        }
        Caller4::Ambient => match waypoint_state(w, svc) {
            WaypointState::Unreachable => {
                let mut d = simple(Outcome::Reset, Class::Denied, dest_key);
                let tport = target_port(
                    &routing::PortSelector {
                        number: Some(url.port),
                    },
                    svc,
                    None,
                    url.port,
                );
                d.response.intended_allow = intended(w, &[svc], None, caller.identity.as_deref(), &f, tport);
                d.response.wrongly_denied = d.response.intended_allow;
                return d;
            }
            WaypointState::Ready { gw, identity } => {
                client_envoy = true;
                f.envoy_touch();
                f.enforcement.push("waypoint".into());
                // The waypoint authorizes with the caller's identity, then routes [l4].
                let gw_ref = Some((gw.namespace.as_str(), gw.name.as_str()));
                let pols = waypoint_policies(w, svc, gw_ref);
                let mut attrs = RequestAttrs {
                    principal: caller.identity.clone(),
                    source_ip: None,
                    destination_ip: None,
                    port: url.port,
                    method: f.method.clone(),
                    path: url.path().to_string(),
                    host: url.host.clone(),
                    headers: f.headers.clone(),
                    ..Default::default()
                };
                // [jwt] jwt_authn runs before RBAC in the waypoint's filter chain.
                let denied = match authenticate(&waypoint_authn(w, svc, gw_ref), env, &mut attrs) {
                    Err(body) => Some((401, body.to_string())),
                    Ok(()) => match policy::envoy_decision(pols, &attrs) {
                        Decision::Deny(_) => Some((403, RBAC_DENIED.to_string())),
                        Decision::Allow => None,
                    },
                };
                if let Some(reply) = denied {
                    return finish(
                        w,
                        &mut f,
                        svc,
                        None,
                        caller.identity.as_deref(),
                        Err(reply),
                        dest_key,
                    );
                }
                let routed = w
                    .ns(&svc.namespace)
                    .and_then(|d| {
                        d.http_routes
                            .iter()
                            .find(|r| r.attached_to_service(&svc.name, &svc.namespace, url.port))
                    })
                    .map(|r| routing::route_http(r, &f.route_input()));
                let (target, port) = match routed {
                    None => (
                        svc,
                        routing::PortSelector {
                            number: Some(url.port),
                        },
                    ),
                    Some(RouteResult::Respond { status, body }) => {
                        return finish(
                            w,
                            &mut f,
                            svc,
                            None,
                            caller.identity.as_deref(),
                            Err((status, body)),
                            dest_key,
                        );
                    }
                    Some(RouteResult::Forward {
                        namespace,
                        service: s,
                        port,
                        ..
                    }) => match service(w, &namespace, &s) {
                        Some(t) => (
                            t,
                            routing::PortSelector {
                                number: port.or(Some(url.port)),
                            },
                        ),
                        None => {
                            return finish(
                                w,
                                &mut f,
                                svc,
                                None,
                                caller.identity.as_deref(),
                                Err((500, String::new())),
                                dest_key,
                            );
                        }
                    },
                };
                final_svc = target;
                // [l4] waypoints do not impersonate the caller: the destination sees the waypoint.
                delivery = deliver(&mut f, target, &port, None, Some(&identity));
            }
            WaypointState::Direct => {
                // [wpnr] no waypoint (or one without address): ztunnel to ztunnel, no L7.
                client_envoy = false;
                let port = routing::PortSelector {
                    number: Some(url.port),
                };
                delivery = deliver(&mut f, svc, &port, None, caller.identity.as_deref());
            }
        },
        Caller4::Plain | Caller4::External => {
            // [mig] un-meshed callers reach the pods directly, plaintext.
            client_envoy = false;
            let port = routing::PortSelector {
                number: Some(url.port),
            };
            delivery = deliver(&mut f, svc, &port, None, None);
        }
    }

    let tport_default = target_port(
        &routing::PortSelector {
            number: Some(url.port),
        },
        final_svc,
        None,
        url.port,
    );
    let (outcome, headers, body, class, pod) = match delivery {
        Delivery::App {
            status,
            body,
            mut headers,
            pod,
        } => {
            if client_envoy || f.enforcement.iter().any(|h| h == "sidecar") {
                headers.push(("server".into(), "istio-envoy".into()));
            }
            (
                Outcome::Http(status),
                headers,
                body,
                Class::AppReached,
                Some(*pod),
            )
        }
        Delivery::Forbidden => {
            let (o, h, b) = envoy_reply(403, RBAC_DENIED);
            (o, h, b, Class::Denied, None)
        }
        Delivery::Unauthorized(body) => {
            let (o, h, b) = envoy_reply(401, body);
            (o, h, b, Class::Denied, None)
        }
        Delivery::NoEndpoint => {
            if client_envoy {
                let (o, h, b) = envoy_reply(503, NO_HEALTHY_UPSTREAM);
                (o, h, b, Class::Error, None)
            } else if caller.dataplane == Caller4::Ambient {
                (Outcome::Reset, Vec::new(), String::new(), Class::Error, None)
            } else {
                // kube-proxy rejects connections to a Service without endpoints.
                (Outcome::Refused, Vec::new(), String::new(), Class::Error, None)
            }
        }
        Delivery::Reset => {
            if client_envoy {
                let (o, h, b) = envoy_reply(503, UPSTREAM_RESET);
                (o, h, b, Class::Denied, None)
            } else {
                (Outcome::Reset, Vec::new(), String::new(), Class::Denied, None)
            }
        }
    };
    let pod_for_intent = pod
        .clone()
        .or_else(|| ready_endpoints(w, final_svc, None).first().map(|p| (*p).clone()));
    // A named targetPort resolves on the endpoint (Kubernetes Service spec), also when the request was
    // denied before reaching the application.
    let tport = pod_for_intent
        .as_ref()
        .map(|p| {
            target_port(
                &routing::PortSelector {
                    number: Some(url.port),
                },
                final_svc,
                Some(p),
                url.port,
            )
        })
        .unwrap_or(tport_default);
    let svcs: Vec<&Service> = if std::ptr::eq(final_svc, svc) {
        vec![svc]
    } else {
        vec![svc, final_svc]
    };
    let intended_allow = intended(
        w,
        &svcs,
        pod_for_intent.as_ref(),
        caller.identity.as_deref(),
        &f,
        tport,
    );
    Decided {
        response: Response {
            outcome,
            headers,
            body,
            enforcement: f.enforcement.clone(),
            intended_allow,
            wrongly_allowed: !intended_allow && class == Class::AppReached,
            wrongly_denied: intended_allow && class == Class::Denied,
        },
        class,
        destination: dest_key,
    }
}

/// An Envoy answered before any destination (RBAC at the waypoint, fault abort, no route).
fn finish(
    w: &World,
    f: &mut Flight<'_>,
    svc: &Service,
    pod: Option<&Pod>,
    identity: Option<&str>,
    reply: Result<(), (u16, String)>,
    destination: Option<String>,
) -> Decided {
    let (status, body) = reply.err().unwrap_or((500, String::new()));
    let class = if (status == 403 && body == RBAC_DENIED) || jwt::is_rejection(status, &body) {
        Class::Denied
    } else {
        Class::Error
    };
    let pod_for_intent = pod
        .cloned()
        .or_else(|| ready_endpoints(w, svc, None).first().map(|p| (*p).clone()));
    let tport = target_port(
        &routing::PortSelector {
            number: Some(f.url.port),
        },
        svc,
        pod_for_intent.as_ref(),
        f.url.port,
    );
    let intended_allow = intended(w, &[svc], pod_for_intent.as_ref(), identity, f, tport);
    let (outcome, headers, body) = envoy_reply(status, &body);
    Decided {
        response: Response {
            outcome,
            headers,
            body,
            enforcement: f.enforcement.clone(),
            intended_allow,
            wrongly_allowed: false,
            wrongly_denied: intended_allow && class == Class::Denied,
        },
        class,
        destination,
    }
}

/// Routing by the caller's sidecar: the first VirtualService covering the Service (caller namespace,
/// then the Service's, then the root namespace), else an HTTPRoute attached to the Service.
#[allow(clippy::type_complexity)]
fn sidecar_route<'a>(
    w: &'a World,
    f: &Flight<'_>,
    caller_ns: Option<&str>,
    svc: &'a Service,
) -> Result<(&'a Service, routing::PortSelector, Option<String>), (u16, String)> {
    let mut nss: Vec<&str> = caller_ns.into_iter().collect();
    for n in [svc.namespace.as_str(), w.root_ns.as_str()] {
        if !nss.contains(&n) {
            nss.push(n);
        }
    }
    let input = f.route_input();
    let mut result = None;
    for n in &nss {
        if let Some(vs) = w.ns(n).and_then(|d| {
            d.virtual_services
                .iter()
                .find(|vs| vs.covers(&svc.name, &svc.namespace))
        }) {
            result = Some(routing::route_vs(vs, &input));
            break;
        }
    }
    if result.is_none() {
        for n in &nss {
            if let Some(r) = w.ns(n).and_then(|d| {
                d.http_routes
                    .iter()
                    .find(|r| r.attached_to_service(&svc.name, &svc.namespace, f.url.port))
            }) {
                result = Some(routing::route_http(r, &input));
                break;
            }
        }
    }
    match result {
        None => Ok((
            svc,
            routing::PortSelector {
                number: Some(f.url.port),
            },
            None,
        )),
        Some(RouteResult::Respond { status, body }) => Err((status, body)),
        Some(RouteResult::Forward {
            namespace,
            service: s,
            port,
            subset,
        }) => match service(w, &namespace, &s) {
            Some(t) => Ok((
                t,
                routing::PortSelector {
                    number: port
                        .or_else(|| t.ports.iter().find(|p| p.port == f.url.port).map(|p| p.port))
                        .or(t.ports.first().map(|p| p.port)),
                },
                subset,
            )),
            None => Err((503, NO_HEALTHY_UPSTREAM.into())),
        },
    }
}
