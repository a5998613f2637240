//! L7 routing by an Envoy: VirtualService + DestinationRule subsets (sidecar clients), and Gateway API
//! HTTPRoute attached to a Service (GAMMA; applied by waypoints, and by sidecars when no VirtualService
//! covers the host). Sources: istio.io docs/reference/config/networking/virtual-service and
//! destination-rule; gateway-api.sigs.k8s.io HTTPRoute reference and GAMMA ("mesh" routing with a Service
//! parentRef); istio.io docs/ambient/usage/l7-features.
//!
//! Simplifications (documented in MODEL.md): regex matches never match; weights are applied
//! deterministically by a request sequence number (a weighted round-robin), as is abort `percentage`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// VirtualService / HTTPRoute string match.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct StringMatch {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub regex: Option<String>,
}

impl StringMatch {
    fn matches(&self, v: &str) -> bool {
        if let Some(e) = &self.exact {
            return v == e;
        }
        if let Some(p) = &self.prefix {
            return v.starts_with(p.as_str());
        }
        // Regex matching is not modelled: a regex match never matches.
        self.regex.is_none()
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct PortSelector {
    pub number: Option<u16>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Destination {
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<PortSelector>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct RouteDestination {
    pub destination: Destination,
    pub weight: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct HttpMatch {
    pub uri: Option<StringMatch>,
    pub method: Option<StringMatch>,
    pub headers: BTreeMap<String, StringMatch>,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Percent {
    pub value: f64,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Abort {
    pub http_status: Option<u16>,
    pub percentage: Option<Percent>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Fault {
    pub abort: Option<Abort>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRouteRule {
    #[serde(rename = "match")]
    pub matches: Vec<HttpMatch>,
    pub route: Vec<RouteDestination>,
    pub fault: Option<Fault>,
}

/// VirtualService `spec`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct VsSpec {
    pub hosts: Vec<String>,
    pub gateways: Vec<String>,
    pub http: Vec<HttpRouteRule>,
}

/// A VirtualService.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualService {
    pub namespace: String,
    pub name: String,
    pub spec: VsSpec,
}

/// Resolves a host as Istio does in VirtualService/DestinationRule: short names are relative to the
/// config's namespace. Returns (service, namespace) for `*.svc.cluster.local` style names.
pub fn resolve_host(host: &str, config_ns: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = host.split('.').collect();
    match parts.as_slice() {
        [svc] => Some((svc.to_string(), config_ns.to_string())),
        [svc, ns] | [svc, ns, "svc"] | [svc, ns, "svc", "cluster", "local"] => {
            Some((svc.to_string(), ns.to_string()))
        }
        _ => None,
    }
}

impl VirtualService {
    /// Whether the VirtualService applies to mesh traffic for the Service `svc.ns`.
    pub fn covers(&self, svc: &str, ns: &str) -> bool {
        let mesh = self.spec.gateways.is_empty() || self.spec.gateways.iter().any(|g| g == "mesh");
        mesh && self
            .spec
            .hosts
            .iter()
            .any(|h| resolve_host(h, &self.namespace).is_some_and(|(s, n)| s == svc && n == ns))
    }

    /// Namespaces the route destinations point to.
    pub fn referenced_namespaces(&self) -> Vec<String> {
        self.spec
            .http
            .iter()
            .flat_map(|r| r.route.iter())
            .filter_map(|d| resolve_host(&d.destination.host, &self.namespace).map(|(_, n)| n))
            .collect()
    }
}

/// DestinationRule subset.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Subset {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// DestinationRule `spec`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct DrSpec {
    pub host: String,
    pub subsets: Vec<Subset>,
}

/// A DestinationRule.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationRule {
    pub namespace: String,
    pub name: String,
    pub spec: DrSpec,
}

impl DestinationRule {
    /// Whether the rule is for Service `svc.ns`.
    pub fn covers(&self, svc: &str, ns: &str) -> bool {
        resolve_host(&self.spec.host, &self.namespace).is_some_and(|(s, n)| s == svc && n == ns)
    }
}

/// What an Envoy decided to do with a request after routing.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteResult {
    /// Forward to Service `name` in `namespace`, port (Service port), restricted to pods with `labels`.
    Forward {
        namespace: String,
        service: String,
        port: Option<u16>,
        subset: Option<String>,
    },
    /// The Envoy answers itself (fault abort, no route, invalid backend).
    Respond { status: u16, body: String },
}

/// The request facts routing looks at.
#[derive(Debug, Clone)]
pub struct RouteInput<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub port: u16,
    /// Lower-case names.
    pub headers: &'a [(String, String)],
    /// Sequence number for deterministic weights and percentages.
    pub seq: u64,
}

impl RouteInput<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn vs_match(m: &HttpMatch, r: &RouteInput<'_>) -> bool {
    m.uri.as_ref().is_none_or(|u| u.matches(r.path))
        && m.method.as_ref().is_none_or(|u| u.matches(r.method))
        && m.port.is_none_or(|p| p == r.port)
        && m.headers
            .iter()
            .all(|(k, sm)| r.header(k).is_some_and(|v| sm.matches(v)))
}

/// Weighted deterministic pick: walks the cumulative weights with `seq`.
pub fn pick_weighted(weights: &[u32], seq: u64) -> usize {
    let total: u64 = weights.iter().map(|w| *w as u64).sum();
    if total == 0 {
        return 0;
    }
    let mut x = seq % total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w as u64 {
            return i;
        }
        x -= *w as u64;
    }
    0
}

/// Applies a VirtualService (sidecar client). `None` when the VirtualService has no effect.
pub fn route_vs(vs: &VirtualService, r: &RouteInput<'_>) -> RouteResult {
    for rule in &vs.spec.http {
        if !(rule.matches.is_empty() || rule.matches.iter().any(|m| vs_match(m, r))) {
            continue;
        }
        if let Some(a) = rule.fault.as_ref().and_then(|f| f.abort.as_ref())
            && let Some(status) = a.http_status
        {
            let pct = a.percentage.as_ref().map(|p| p.value).unwrap_or(100.0);
            if ((r.seq % 10_000) as f64) < pct * 100.0 {
                return RouteResult::Respond {
                    status,
                    body: "fault filter abort".into(),
                };
            }
        }
        if rule.route.is_empty() {
            continue;
        }
        let weights: Vec<u32> = rule
            .route
            .iter()
            .map(|d| d.weight.unwrap_or(if rule.route.len() == 1 { 100 } else { 0 }))
            .collect();
        let d = &rule.route[pick_weighted(&weights, r.seq)].destination;
        return match resolve_host(&d.host, &vs.namespace) {
            Some((service, namespace)) => RouteResult::Forward {
                namespace,
                service,
                port: d.port.as_ref().and_then(|p| p.number),
                subset: d.subset.clone(),
            },
            None => RouteResult::Respond {
                status: 503,
                body: "no healthy upstream".into(),
            },
        };
    }
    // Istio's generated route table has no catch-all when the VirtualService matches nothing: Envoy
    // answers 404 (response flag NR).
    RouteResult::Respond {
        status: 404,
        body: String::new(),
    }
}

// ---------------------------------------------------------------------------------------------------
// Gateway API HTTPRoute (GAMMA).

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ParentRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct PathMatch {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct HeaderMatch {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct RouteMatch {
    pub path: Option<PathMatch>,
    pub method: Option<String>,
    pub headers: Vec<HeaderMatch>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct BackendRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub port: Option<u16>,
    pub weight: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteRule {
    pub matches: Vec<RouteMatch>,
    pub backend_refs: Vec<BackendRef>,
}

/// HTTPRoute `spec`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRouteSpec {
    pub parent_refs: Vec<ParentRef>,
    pub rules: Vec<RouteRule>,
}

/// An HTTPRoute.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRoute {
    pub namespace: String,
    pub name: String,
    pub spec: HttpRouteSpec,
}

impl HttpRoute {
    /// Whether the route is attached to Service `svc.ns` (parentRef kind Service, group "" or core),
    /// for `port` when the parentRef names one.
    pub fn attached_to_service(&self, svc: &str, ns: &str, port: u16) -> bool {
        self.spec.parent_refs.iter().any(|p| {
            p.kind.as_deref() == Some("Service")
                && p.group.as_deref().is_none_or(|g| g.is_empty() || g == "core")
                && p.name == svc
                && p.namespace.as_deref().unwrap_or(&self.namespace) == ns
                && p.port.is_none_or(|pp| pp == port)
        })
    }

    /// Namespaces named by backendRefs.
    pub fn referenced_namespaces(&self, own: &str) -> Vec<String> {
        self.spec
            .rules
            .iter()
            .flat_map(|r| r.backend_refs.iter())
            .map(|b| b.namespace.clone().unwrap_or_else(|| own.to_string()))
            .collect()
    }
}

fn route_match(m: &RouteMatch, r: &RouteInput<'_>) -> bool {
    let path_ok = match &m.path {
        None => true,
        Some(p) => {
            let v = p.value.as_deref().unwrap_or("/");
            match p.kind.as_deref().unwrap_or("PathPrefix") {
                "Exact" => r.path == v,
                "PathPrefix" => {
                    let v = v.trim_end_matches('/');
                    v.is_empty() || r.path == v || r.path.starts_with(&format!("{v}/"))
                }
                _ => false, // RegularExpression: not modelled
            }
        }
    };
    path_ok
        && m.method.as_deref().is_none_or(|x| x == r.method)
        && m.headers
            .iter()
            .all(|h| match h.kind.as_deref().unwrap_or("Exact") {
                "Exact" => r.header(&h.name) == Some(h.value.as_str()),
                _ => false,
            })
}

/// Applies an HTTPRoute attached to the Service.
pub fn route_http(route: &HttpRoute, r: &RouteInput<'_>) -> RouteResult {
    for rule in &route.spec.rules {
        if !(rule.matches.is_empty() || rule.matches.iter().any(|m| route_match(m, r))) {
            continue;
        }
        let backends: Vec<&BackendRef> = rule
            .backend_refs
            .iter()
            .filter(|b| b.kind.as_deref().unwrap_or("Service") == "Service")
            .collect();
        if backends.is_empty() {
            // Gateway API: a rule whose backendRefs are all invalid or absent answers 500.
            return RouteResult::Respond {
                status: 500,
                body: String::new(),
            };
        }
        let weights: Vec<u32> = backends.iter().map(|b| b.weight.unwrap_or(1)).collect();
        let b = backends[pick_weighted(&weights, r.seq)];
        return RouteResult::Forward {
            namespace: b.namespace.clone().unwrap_or_else(|| route.namespace.clone()),
            service: b.name.clone(),
            port: b.port,
            subset: None,
        };
    }
    RouteResult::Respond {
        status: 404,
        body: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(
        method: &'a str,
        path: &'a str,
        headers: &'a [(String, String)],
        seq: u64,
    ) -> RouteInput<'a> {
        RouteInput {
            method,
            path,
            port: 80,
            headers,
            seq,
        }
    }

    #[test]
    fn virtual_service_matches_weights_and_faults() {
        let vs = VirtualService {
            namespace: "app".into(),
            name: "api".into(),
            spec: serde_saphyr::from_str(
                "hosts: [api]\nhttp:\n- match: [{headers: {x-canary: {exact: \"1\"}}}]\n  route: [{destination: {host: api, subset: v2}}]\n- match: [{uri: {prefix: /broken}}]\n  fault: {abort: {httpStatus: 418}}\n  route: [{destination: {host: api}}]\n- route:\n  - {destination: {host: api, subset: v1}, weight: 75}\n  - {destination: {host: api.app.svc.cluster.local, subset: v2}, weight: 25}\n",
            )
            .unwrap(),
        };
        assert!(vs.covers("api", "app"));
        assert!(!vs.covers("api", "other"));
        let h = vec![("x-canary".to_string(), "1".to_string())];
        let fwd = |subset: &str| RouteResult::Forward {
            namespace: "app".into(),
            service: "api".into(),
            port: None,
            subset: Some(subset.into()),
        };
        assert_eq!(route_vs(&vs, &input("GET", "/", &h, 0)), fwd("v2"));
        assert!(matches!(
            route_vs(&vs, &input("GET", "/broken", &[], 0)),
            RouteResult::Respond { status: 418, .. }
        ));
        let picks: Vec<RouteResult> = (0..100)
            .map(|s| route_vs(&vs, &input("GET", "/", &[], s)))
            .collect();
        assert_eq!(picks.iter().filter(|p| **p == fwd("v2")).count(), 25);
    }

    #[test]
    fn http_route_attached_to_service() {
        let r = HttpRoute {
            namespace: "app".into(),
            name: "r".into(),
            spec: serde_saphyr::from_str(
                "parentRefs: [{group: \"\", kind: Service, name: api, port: 80}]\nrules:\n- matches: [{path: {type: PathPrefix, value: /v2}}]\n  backendRefs: [{name: api-v2, port: 80}]\n- matches: [{path: {type: Exact, value: /gone}}]\n- backendRefs: [{name: api, port: 80}]\n",
            )
            .unwrap(),
        };
        assert!(r.attached_to_service("api", "app", 80));
        assert!(!r.attached_to_service("api", "app", 8080));
        assert!(matches!(
            route_http(&r, &input("GET", "/v2/x", &[], 0)),
            RouteResult::Forward { ref service, .. } if service == "api-v2"
        ));
        assert!(matches!(
            route_http(&r, &input("GET", "/v2x", &[], 0)),
            RouteResult::Forward { ref service, .. } if service == "api"
        ));
        assert!(matches!(
            route_http(&r, &input("GET", "/gone", &[], 0)),
            RouteResult::Respond { status: 500, .. }
        ));
    }
}
