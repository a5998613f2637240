//! Reads the store into plain structs for the traffic model: the namespaces a request touches (caller,
//! destination, Istio root namespace and any namespace a route points to) and the ztunnel pods. The pod
//! conventions follow `docs/reference/istio-ambient-facts.md` §3(a)-(e).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;

use super::policy::{AuthzPolicy, AuthzSpec, PeerAuth, Selector};
use super::routing::{DestinationRule, HttpRoute, VirtualService};
use crate::resources;
use crate::store::StoreView;

/// Data-plane classification of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPlane {
    /// Has an `istio-proxy` (classic or native sidecar) that is ready.
    Sidecar,
    /// Has an `istio-proxy` that is not ready: its traffic is captured by iptables but nothing listens.
    SidecarNotReady,
    /// `ambient.istio.io/redirection=enabled` (and no sidecar: sidecar takes precedence, §3a).
    Ambient,
    /// `ambient.istio.io/redirection=pending`: no traffic in or out [cni].
    Pending,
    /// Not in the mesh.
    None,
}

impl DataPlane {
    /// Name used in responses and tests.
    pub fn as_str(&self) -> &'static str {
        match self {
            DataPlane::Sidecar => "sidecar",
            DataPlane::SidecarNotReady => "sidecar-not-ready",
            DataPlane::Ambient => "ambient",
            DataPlane::Pending => "pending",
            DataPlane::None => "none",
        }
    }
}

/// A pod, reduced to what the traffic model reads.
#[derive(Debug, Clone, Default)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub node: Option<String>,
    /// Ready condition True, phase Running, not terminating.
    pub ready: bool,
    /// `Some(ready)` when the pod has an `istio-proxy` container.
    pub sidecar: Option<bool>,
    /// `ambient.istio.io/redirection` annotation.
    pub redirection: Option<String>,
    pub ip: Option<IpAddr>,
    /// Container ports: (name, port).
    pub ports: Vec<(Option<String>, u16)>,
}

impl Pod {
    /// Data-plane class of the pod (without the ztunnel-on-node check, see `World::ztunnel_up`).
    pub fn dataplane(&self) -> DataPlane {
        match self.sidecar {
            Some(true) => DataPlane::Sidecar,
            Some(false) => DataPlane::SidecarNotReady,
            None => match self.redirection.as_deref() {
                Some("enabled") => DataPlane::Ambient,
                Some("pending") => DataPlane::Pending,
                _ => DataPlane::None,
            },
        }
    }

    /// SPIFFE identity without the scheme: `<td>/ns/<ns>/sa/<sa>`.
    pub fn identity(&self, trust_domain: &str) -> String {
        format!("{trust_domain}/ns/{}/sa/{}", self.namespace, self.service_account)
    }
}

/// A Service port.
#[derive(Debug, Clone, PartialEq)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    /// Number, or a container port name.
    pub target: Result<u16, String>,
}

/// A Service.
#[derive(Debug, Clone, Default)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub selector: Option<BTreeMap<String, String>>,
    pub ports: Vec<ServicePort>,
}

/// A Gateway (waypoints are those of class `istio-waypoint`).
#[derive(Debug, Clone, Default)]
pub struct Gateway {
    pub namespace: String,
    pub name: String,
    pub class: String,
    pub labels: BTreeMap<String, String>,
    /// `status.addresses` non-empty: istiod uses the waypoint only then (§3b).
    pub has_address: bool,
}

/// Everything of one namespace the model may read.
#[derive(Debug, Clone, Default)]
pub struct NsData {
    pub labels: BTreeMap<String, String>,
    pub services: Vec<Service>,
    pub pods: Vec<Pod>,
    pub gateways: Vec<Gateway>,
    pub authz: Vec<AuthzPolicy>,
    pub peer_auth: Vec<PeerAuth>,
    pub request_authn: Vec<super::jwt::RequestAuthn>,
    pub virtual_services: Vec<VirtualService>,
    pub destination_rules: Vec<DestinationRule>,
    pub http_routes: Vec<HttpRoute>,
}

/// The part of the cluster one request needs.
#[derive(Debug, Clone, Default)]
pub struct World {
    pub trust_domain: String,
    /// Istio root (system) namespace: mesh-wide policies live there; ztunnel pods too.
    pub root_ns: String,
    pub namespaces: BTreeMap<String, NsData>,
    /// ztunnel pods: (node, ready).
    pub ztunnels: Vec<(String, bool)>,
    /// External hosts, ServiceEntries, Sidecar resources and the mesh outbound mode (egress requests).
    pub egress: super::egress::Egress,
}

impl World {
    /// The namespace's data (empty when absent).
    pub fn ns(&self, ns: &str) -> Option<&NsData> {
        self.namespaces.get(ns)
    }

    /// Whether the ztunnel of `node` is running and ready. When no ztunnel pod exists at all (stores
    /// without the Istio install), ztunnel is assumed up; the `ztunnel-down` fault is checked by the caller.
    pub fn ztunnel_ready_on(&self, node: Option<&str>) -> bool {
        if self.ztunnels.is_empty() {
            return true;
        }
        match node {
            Some(n) => self.ztunnels.iter().any(|(zn, ready)| zn == n && *ready),
            None => false,
        }
    }
}

/// A JSON object of strings as a map (labels, selectors); other values are skipped.
pub(crate) fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn meta<'a>(o: &'a Value, f: &str) -> &'a str {
    o["metadata"][f].as_str().unwrap_or("")
}

/// Whether a pod object is Ready: condition Ready=True, phase Running, no deletionTimestamp.
pub fn pod_ready(o: &Value) -> bool {
    let cond = o["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
    cond && o["status"]["phase"] == "Running" && o["metadata"]["deletionTimestamp"].is_null()
}

/// Reads a pod object.
pub fn parse_pod(o: &Value) -> Pod {
    let spec = &o["spec"];
    let ready = pod_ready(o);
    let is_proxy = |c: &Value| c["name"] == "istio-proxy";
    let classic = spec["containers"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(is_proxy));
    let native = spec["initContainers"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| is_proxy(c) && c["restartPolicy"] == "Always"));
    let sidecar = if classic || native {
        let statuses = if native {
            &o["status"]["initContainerStatuses"]
        } else {
            &o["status"]["containerStatuses"]
        };
        let st = statuses
            .as_array()
            .and_then(|ss| ss.iter().find(|s| s["name"] == "istio-proxy"));
        Some(match st {
            Some(s) => s["ready"].as_bool().unwrap_or(false) && o["metadata"]["deletionTimestamp"].is_null(),
            None => ready,
        })
    } else {
        None
    };
    let mut ports = Vec::new();
    for c in spec["containers"].as_array().into_iter().flatten() {
        for p in c["ports"].as_array().into_iter().flatten() {
            if let Some(n) = p["containerPort"].as_u64() {
                ports.push((p["name"].as_str().map(str::to_string), n as u16));
            }
        }
    }
    Pod {
        namespace: meta(o, "namespace").to_string(),
        name: meta(o, "name").to_string(),
        labels: str_map(&o["metadata"]["labels"]),
        service_account: spec["serviceAccountName"]
            .as_str()
            .or(spec["serviceAccount"].as_str())
            .unwrap_or("default")
            .to_string(),
        node: spec["nodeName"].as_str().map(str::to_string),
        ready,
        sidecar,
        redirection: o["metadata"]["annotations"]["ambient.istio.io/redirection"]
            .as_str()
            .map(str::to_string),
        ip: o["status"]["podIP"].as_str().and_then(|s| s.parse().ok()),
        ports,
    }
}

fn parse_service(o: &Value) -> Service {
    let spec = &o["spec"];
    let ports = spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let port = p["port"].as_u64()? as u16;
            let target = match &p["targetPort"] {
                Value::Number(n) => Ok(n.as_u64().unwrap_or(port as u64) as u16),
                Value::String(s) => s.parse::<u16>().map_err(|_| s.clone()),
                _ => Ok(port),
            };
            Some(ServicePort {
                name: p["name"].as_str().map(str::to_string),
                port,
                target,
            })
        })
        .collect();
    Service {
        namespace: meta(o, "namespace").to_string(),
        name: meta(o, "name").to_string(),
        labels: str_map(&o["metadata"]["labels"]),
        selector: spec["selector"].as_object().map(|_| str_map(&spec["selector"])),
        ports,
    }
}

fn parse_gateway(o: &Value) -> Gateway {
    Gateway {
        namespace: meta(o, "namespace").to_string(),
        name: meta(o, "name").to_string(),
        class: o["spec"]["gatewayClassName"].as_str().unwrap_or("").to_string(),
        labels: str_map(&o["metadata"]["labels"]),
        has_address: o["status"]["addresses"].as_array().is_some_and(|a| !a.is_empty()),
    }
}

/// Reads an AuthorizationPolicy object (`None` when its spec does not parse).
pub fn parse_authz(o: &Value) -> Option<AuthzPolicy> {
    let spec: AuthzSpec = serde_json::from_value(o.get("spec").cloned().unwrap_or(Value::Null)).ok()?;
    Some(AuthzPolicy {
        namespace: meta(o, "namespace").to_string(),
        name: meta(o, "name").to_string(),
        spec,
        dry_run: o["metadata"]["annotations"]["istio.io/dry-run"]
            .as_str()
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
    })
}

fn parse_peer_auth(o: &Value) -> Option<PeerAuth> {
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Mtls {
        mode: Option<String>,
    }
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Spec {
        selector: Option<Selector>,
        mtls: Option<Mtls>,
        port_level_mtls: BTreeMap<String, Mtls>,
    }
    let spec: Spec = serde_json::from_value(o.get("spec").cloned().unwrap_or(Value::Null)).ok()?;
    Some(PeerAuth {
        namespace: meta(o, "namespace").to_string(),
        name: meta(o, "name").to_string(),
        created: meta(o, "creationTimestamp").to_string(),
        selector: spec.selector,
        mode: spec.mtls.and_then(|m| m.mode),
        port_level: spec
            .port_level_mtls
            .into_iter()
            .filter_map(|(p, m)| Some((p.parse().ok()?, m.mode?)))
            .collect(),
    })
}

fn parse_spec<T: for<'de> Deserialize<'de>>(o: &Value) -> Option<T> {
    serde_json::from_value(o.get("spec").cloned().unwrap_or(Value::Null)).ok()
}

/// Reads one namespace.
pub fn load_ns(view: &StoreView<'_>, ns: &str) -> NsData {
    let list = |plural: &str, group: &str| -> Vec<&Value> {
        let id = if group.is_empty() {
            resources::core(plural)
        } else {
            resources::id(group, plural)
        };
        view.list(id, Some(ns))
    };
    let labels = view
        .get(resources::core("namespaces"), "", ns)
        .map(|o| str_map(&o["metadata"]["labels"]))
        .unwrap_or_default();
    NsData {
        labels,
        services: list("services", "").into_iter().map(parse_service).collect(),
        pods: list("pods", "").into_iter().map(parse_pod).collect(),
        gateways: list("gateways", "gateway.networking.k8s.io")
            .into_iter()
            .map(parse_gateway)
            .collect(),
        authz: list("authorizationpolicies", "security.istio.io")
            .into_iter()
            .filter_map(parse_authz)
            .collect(),
        peer_auth: list("peerauthentications", "security.istio.io")
            .into_iter()
            .filter_map(parse_peer_auth)
            .collect(),
        request_authn: list("requestauthentications", "security.istio.io")
            .into_iter()
            .filter_map(super::jwt::RequestAuthn::parse)
            .collect(),
        virtual_services: list("virtualservices", "networking.istio.io")
            .into_iter()
            .filter_map(|o| {
                Some(VirtualService {
                    namespace: ns.to_string(),
                    name: meta(o, "name").to_string(),
                    spec: parse_spec(o)?,
                })
            })
            .collect(),
        destination_rules: list("destinationrules", "networking.istio.io")
            .into_iter()
            .filter_map(|o| {
                Some(DestinationRule {
                    namespace: ns.to_string(),
                    name: meta(o, "name").to_string(),
                    spec: parse_spec(o)?,
                })
            })
            .collect(),
        http_routes: list("httproutes", "gateway.networking.k8s.io")
            .into_iter()
            .filter_map(|o| {
                Some(HttpRoute {
                    namespace: ns.to_string(),
                    name: meta(o, "name").to_string(),
                    spec: parse_spec(o)?,
                })
            })
            .collect(),
    }
}

/// Builds the world for a request touching `namespaces`; namespaces that routes in them point to are
/// read too (one level, enough for a VirtualService or HTTPRoute to another namespace).
pub fn load(view: &StoreView<'_>, trust_domain: &str, root_ns: &str, namespaces: &[&str]) -> World {
    let mut w = World {
        trust_domain: trust_domain.to_string(),
        root_ns: root_ns.to_string(),
        ..Default::default()
    };
    let mut want: BTreeSet<String> = namespaces.iter().map(|s| s.to_string()).collect();
    want.insert(root_ns.to_string());
    for ns in &want {
        w.namespaces.insert(ns.clone(), load_ns(view, ns));
    }
    let mut extra = BTreeSet::new();
    for (ns, d) in &w.namespaces {
        for vs in &d.virtual_services {
            extra.extend(vs.referenced_namespaces());
        }
        for r in &d.http_routes {
            extra.extend(r.referenced_namespaces(ns));
        }
    }
    for ns in extra {
        if !w.namespaces.contains_key(&ns) && view.get(resources::core("namespaces"), "", &ns).is_some() {
            let d = load_ns(view, &ns);
            w.namespaces.insert(ns, d);
        }
    }
    for p in view.list(resources::core("pods"), Some(root_ns)) {
        if p["metadata"]["labels"]["app"] == "ztunnel" {
            let pod = parse_pod(p);
            if let Some(n) = pod.node.clone() {
                w.ztunnels.push((n, pod.ready));
            }
        }
    }
    w
}

/// Builds a world straight from objects, without a store: the same parsing as [`load`], for callers that
/// hold the objects of one moment (the product's differential test compares its enforcement model with
/// [`super::model::decide`] on generated namespaces this way). Gateways count as addressed (programmed).
pub fn world_from_objects(objects: &[Value], trust_domain: &str, root_ns: &str) -> World {
    let mut w = World {
        trust_domain: trust_domain.to_string(),
        root_ns: root_ns.to_string(),
        ..Default::default()
    };
    w.namespaces.entry(root_ns.to_string()).or_default();
    for o in objects {
        let kind = o["kind"].as_str().unwrap_or("");
        if kind == "Namespace" {
            w.namespaces
                .entry(meta(o, "name").to_string())
                .or_default()
                .labels = str_map(&o["metadata"]["labels"]);
            continue;
        }
        let d = w.namespaces.entry(meta(o, "namespace").to_string()).or_default();
        match kind {
            "Service" => d.services.push(parse_service(o)),
            "Pod" => d.pods.push(parse_pod(o)),
            "Gateway" => {
                let mut g = parse_gateway(o);
                g.has_address = true;
                d.gateways.push(g);
            }
            "AuthorizationPolicy" => d.authz.extend(parse_authz(o)),
            "PeerAuthentication" => d.peer_auth.extend(parse_peer_auth(o)),
            "RequestAuthentication" => d.request_authn.extend(super::jwt::RequestAuthn::parse(o)),
            _ => {}
        }
    }
    w
}
