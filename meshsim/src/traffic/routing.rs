//! L7 routing by an Envoy: VirtualService + DestinationRule subsets (sidecar clients), and Gateway API
//! HTTPRoute attached to a Service (GAMMA; applied by waypoints, and by sidecars when no VirtualService
//! covers the host). Sources: istio.io docs/reference/config/networking/virtual-service and
//! destination-rule; gateway-api.sigs.k8s.io HTTPRoute reference and GAMMA ("mesh" routing with a Service
//! parentRef); istio.io docs/ambient/usage/l7-features.
//!
//! HTTPRoute matches are tried in istiod's order, not the list's: `pilot/pkg/config/kube/gateway/
//! conversion.go` turns every match into its own Envoy route and `sortHTTPRoutes` orders them Exact >
//! PathPrefix > RegularExpression (`getURIRank`), then longer path value, then with a method, then more
//! headers, then more query params (stable otherwise); a rule or match without a path is the CRD default
//! `PathPrefix /` (`apis/v1/httproute_types.go`). Regexes (VirtualService `regex`, HTTPRoute
//! `RegularExpression`) are RE2 and must match the whole value (Envoy `safe_regex`), modelled with the
//! `regex` crate (RE2 syntax).
//!
//! Simplifications (documented in MODEL.md): weights are applied deterministically by a request sequence
//! number (a weighted round-robin), as is abort `percentage`; redirects answer the redirect status without
//! following it; rewrites, header changes, mirrors, timeouts and retries do not change where a request
//! goes and are not modelled.

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
        match &self.regex {
            Some(re) => full_match(re, v),
            None => true,
        }
    }
}

/// An RE2 regex matching the whole value (Envoy `safe_regex` matchers are full matches); an invalid one
/// matches nothing (istiod rejects it at validation).
fn full_match(re: &str, v: &str) -> bool {
    regex::Regex::new(&format!("^(?:{re})$")).is_ok_and(|r| r.is_match(v))
}

/// The value of query parameter `name` in a raw query string (no percent-decoding).
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
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
#[serde(rename_all = "camelCase")]
pub struct HttpMatch {
    pub uri: Option<StringMatch>,
    pub method: Option<StringMatch>,
    pub headers: BTreeMap<String, StringMatch>,
    pub query_params: BTreeMap<String, StringMatch>,
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

/// VirtualService `redirect` (istio.io virtual-service reference: `redirectCode` defaults to 301).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct VsRedirect {
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub redirect_code: Option<u16>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRouteRule {
    #[serde(rename = "match")]
    pub matches: Vec<HttpMatch>,
    pub route: Vec<RouteDestination>,
    pub fault: Option<Fault>,
    pub redirect: Option<VsRedirect>,
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
    /// Raw query string (without `?`).
    pub query: &'a str,
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
        && m.query_params
            .iter()
            .all(|(k, sm)| query_param(r.query, k).is_some_and(|v| sm.matches(v)))
}

/// The answer of a redirect: its status and the `location` it would send.
fn redirect(status: u16, host: Option<&str>, path: Option<&str>, r: &RouteInput<'_>) -> RouteResult {
    RouteResult::Respond {
        status,
        body: format!(
            "location: {}{}",
            host.unwrap_or("(same host)"),
            path.unwrap_or(r.path)
        ),
    }
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
        if let Some(rd) = &rule.redirect {
            return redirect(
                rd.redirect_code.unwrap_or(301),
                rd.authority.as_deref(),
                rd.uri.as_deref(),
                r,
            );
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
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    pub path: Option<PathMatch>,
    pub method: Option<String>,
    pub headers: Vec<HeaderMatch>,
    pub query_params: Vec<HeaderMatch>,
}

/// HTTPRoute `RequestRedirect` filter (`statusCode` defaults to 302).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RequestRedirect {
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
    pub status_code: Option<u16>,
}

/// HTTPRoute path modifier (`ReplaceFullPath` is what a redirect's target path is).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PathModifier {
    pub replace_full_path: Option<String>,
}

/// An HTTPRoute filter; only redirects change where a request goes.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteFilter {
    #[serde(rename = "type")]
    pub kind: String,
    pub request_redirect: Option<RequestRedirect>,
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
    pub filters: Vec<RouteFilter>,
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
                "RegularExpression" => full_match(v, r.path),
                _ => false,
            }
        }
    };
    let value_ok = |h: &HeaderMatch, v: Option<&str>| match (h.kind.as_deref().unwrap_or("Exact"), v) {
        (_, None) => false,
        ("Exact", Some(v)) => v == h.value,
        ("RegularExpression", Some(v)) => full_match(&h.value, v),
        _ => false,
    };
    path_ok
        && m.method.as_deref().is_none_or(|x| x == r.method)
        && m.headers.iter().all(|h| value_ok(h, r.header(&h.name)))
        && m.query_params
            .iter()
            .all(|q| value_ok(q, query_param(r.query, &q.name)))
}

/// istiod's order key of a match (`sortHTTPRoutes`): path rank (Exact 3, PathPrefix 2, regex 1), path
/// length, has a method, header count, query count; larger first.
fn match_rank(m: &RouteMatch) -> (u8, usize, bool, usize, usize) {
    let (kind, value) = match &m.path {
        None => ("PathPrefix", "/"),
        Some(p) => (
            p.kind.as_deref().unwrap_or("PathPrefix"),
            p.value.as_deref().unwrap_or("/"),
        ),
    };
    let rank = match kind {
        "Exact" => 3,
        "PathPrefix" => 2,
        _ => 1,
    };
    (
        rank,
        value.len(),
        m.method.is_some(),
        m.headers.len(),
        m.query_params.len(),
    )
}

/// Applies an HTTPRoute attached to the Service.
pub fn route_http(route: &HttpRoute, r: &RouteInput<'_>) -> RouteResult {
    let catch_all = RouteMatch::default();
    let mut entries: Vec<(&RouteMatch, &RouteRule)> = Vec::new();
    for rule in &route.spec.rules {
        if rule.matches.is_empty() {
            entries.push((&catch_all, rule));
        }
        entries.extend(rule.matches.iter().map(|m| (m, rule)));
    }
    entries.sort_by_key(|(m, _)| std::cmp::Reverse(match_rank(m)));
    for (m, rule) in entries {
        if !route_match(m, r) {
            continue;
        }
        if let Some(rd) = rule
            .filters
            .iter()
            .find(|f| f.kind == "RequestRedirect")
            .and_then(|f| f.request_redirect.as_ref())
        {
            return redirect(
                rd.status_code.unwrap_or(302),
                rd.hostname.as_deref(),
                rd.path.as_ref().and_then(|p| p.replace_full_path.as_deref()),
                r,
            );
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
            query: "",
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

    #[test]
    fn http_route_matches_are_tried_in_istiod_order() {
        // Listed catch-all first, then a regex, a prefix and an exact path: istiod sorts Exact > PathPrefix
        // (longer first) > RegularExpression, whatever the list order.
        let r = HttpRoute {
            namespace: "app".into(),
            name: "r".into(),
            spec: serde_saphyr::from_str(
                "parentRefs: [{group: \"\", kind: Service, name: api}]\nrules:\n- backendRefs: [{name: all, port: 80}]\n- matches: [{path: {type: RegularExpression, value: \"/u/[0-9]+\"}}]\n  backendRefs: [{name: re, port: 80}]\n- matches: [{path: {type: PathPrefix, value: /u}, queryParams: [{name: debug, value: \"1\"}]}]\n  backendRefs: [{name: dbg, port: 80}]\n- matches: [{path: {type: Exact, value: /u/7}}]\n  filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /seven}, statusCode: 301}}]\n",
            )
            .unwrap(),
        };
        let svc = |path: &str, query: &str| match route_http(
            &r,
            &RouteInput {
                method: "GET",
                path,
                query,
                port: 80,
                headers: &[],
                seq: 0,
            },
        ) {
            RouteResult::Forward { service, .. } => service,
            RouteResult::Respond { status, body } => format!("{status} {body}"),
        };
        assert_eq!(svc("/u/7", ""), "301 location: (same host)/seven");
        assert_eq!(svc("/u/8", "debug=1"), "dbg");
        // The catch-all (PathPrefix /, length 1) outranks every regex: the regex rule is unreachable.
        assert_eq!(svc("/u/8", ""), "all");
        assert_eq!(svc("/x", "debug=1"), "all");
    }

    #[test]
    fn virtual_service_regex_query_and_redirect() {
        let vs = VirtualService {
            namespace: "app".into(),
            name: "api".into(),
            spec: serde_saphyr::from_str(
                "hosts: [api]\nhttp:\n- match: [{uri: {regex: \"/u/[0-9]+\"}, queryParams: {debug: {exact: \"1\"}}}]\n  route: [{destination: {host: api, subset: v2}}]\n- match: [{uri: {exact: /old}}]\n  redirect: {uri: /new}\n- route: [{destination: {host: api, subset: v1}}]\n",
            )
            .unwrap(),
        };
        let go = |path: &str, query: &str| {
            route_vs(
                &vs,
                &RouteInput {
                    method: "GET",
                    path,
                    query,
                    port: 80,
                    headers: &[],
                    seq: 0,
                },
            )
        };
        let subset = |r: RouteResult| match r {
            RouteResult::Forward { subset, .. } => subset.unwrap_or_default(),
            RouteResult::Respond { status, body } => format!("{status} {body}"),
        };
        assert_eq!(subset(go("/u/42", "a=b&debug=1")), "v2");
        assert_eq!(subset(go("/u/42x", "debug=1")), "v1");
        assert_eq!(subset(go("/u/42", "")), "v1");
        assert_eq!(subset(go("/old", "")), "301 location: (same host)/new");
    }
}
