//! Routing equivalence, checked like policy equivalence (`enforcement`): for every request class of a
//! translated VirtualService (host x path x method x headers x query), the destinations and their weights
//! before the migration (the VirtualService and its DestinationRule subsets, as a sidecar routes) and after
//! it (the generated HTTPRoute and per-version Services, as the waypoint routes), per moment.
//!
//! Moments: `0` before the migration (sidecar callers use the VirtualService); `1-4` from step 1, when the
//! HTTPRoute exists beside the VirtualService, to step 5 (sidecar callers still use the VirtualService,
//! ambient callers the HTTPRoute through the waypoint: upstream calls mixing both for the same workload
//! undefined, istio.io docs/ambient/migrate); `5` after step 5 deleted the VirtualService (every caller
//! uses the HTTPRoute: sidecars apply an HTTPRoute attached to a Service when no VirtualService covers the
//! host, istio.io docs/ambient/usage/l7-features).
//!
//! Semantics copied from upstream: VirtualService rules are first-match in order (istio.io
//! virtual-service reference); an HTTPRoute's matches are sorted by istiod's `sortHTTPRoutes`
//! (`pilot/pkg/config/kube/gateway/conversion.go`: Exact > PathPrefix > RegularExpression, then longer
//! value, method, more headers, more query params; rules without matches last), a match without a path is
//! `PathPrefix /` (the CRD default), PathPrefix matches whole segments, regexes match the whole value (RE2).

use super::objects::{VirtualService, converted};
use super::routes::{self, Generated};
use super::{Finding, Severity, Snapshot, json};
use crate::steps::ObjRef;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Finding codes.
pub mod codes {
    /// A request class whose destination (or weights, or answer) changes with the generated HTTPRoute.
    pub const ROUTING_DIFFERENCE: &str = "routing-difference";
    /// The window in which the VirtualService and its HTTPRoute both route the same host.
    pub const ROUTING_MIXED_WINDOW: &str = "routing-mixed-window";
}

/// Moment labels.
pub const MOMENTS: [&str; 3] = ["0", "1-4", "5"];

/// One request class.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// Service (short name) addressed.
    pub host: String,
    /// Method.
    pub method: String,
    /// Path (without query).
    pub path: String,
    /// Headers (lower-case names).
    pub headers: BTreeMap<String, String>,
    /// Query parameters.
    pub query: BTreeMap<String, String>,
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}{}", self.method, self.host, self.path)?;
        if !self.query.is_empty() {
            let q: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            write!(f, "?{}", q.join("&"))?;
        }
        for (k, v) in &self.headers {
            write!(f, " [{k}: {v}]")?;
        }
        Ok(())
    }
}

/// Where a request goes: weighted destinations (the pods' labels and port), or an answer by the proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Outcome {
    /// Forwarded: per destination (`labels` as `k=v,...` and port), its share in per mille.
    Forward {
        /// `(destination, per mille)`.
        shares: Vec<(String, u32)>,
    },
    /// Redirected by the proxy.
    Redirect {
        /// Status and target (`301 -> host/path`).
        to: String,
    },
    /// Answered by the proxy (404: no route; 500: no valid backend).
    Status {
        /// HTTP status.
        code: u16,
    },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Forward { shares } => {
                let s: Vec<String> = shares.iter().map(|(d, w)| format!("{d} ({w}‰)")).collect();
                write!(f, "{}", s.join(" + "))
            }
            Outcome::Redirect { to } => write!(f, "redirect {to}"),
            Outcome::Status { code } => write!(f, "answered {code}"),
        }
    }
}

/// A class routed differently at a moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingDifference {
    /// The VirtualService.
    pub virtual_service: ObjRef,
    /// The request class.
    pub request: Request,
    /// Moments at which it differs from moment 0 (for ambient callers at `1-4`, everyone at `5`).
    pub moments: Vec<String>,
    /// The path continues a VirtualService prefix inside a segment (`/v2x` for `/v2`) or stops at its
    /// trailing slash (`/v2` for `/v2/`): the one case PathPrefix cannot express (it matches whole
    /// segments). Reported as a warning.
    pub segment: bool,
    /// Before (VirtualService).
    pub before: Outcome,
    /// After (HTTPRoute).
    pub after: Outcome,
}

/// The routing table of a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingTable {
    /// Moment labels.
    pub moments: Vec<String>,
    /// Request classes evaluated.
    pub classes: usize,
    /// Classes routed differently.
    pub differences: Vec<RoutingDifference>,
    /// VirtualServices whose HTTPRoute coexists with them from step 1 to step 5.
    pub mixed: Vec<ObjRef>,
}

/// Checks every translated VirtualService of the snapshot.
pub fn check(s: &Snapshot, mode: super::plan::PolicyMigration) -> RoutingTable {
    let t = routes::translate(s, mode);
    let mut table = RoutingTable {
        moments: MOMENTS.iter().map(|m| m.to_string()).collect(),
        ..Default::default()
    };
    let created: Vec<Value> = t.objects();
    for g in &t.generated {
        let Some((_, vs)) = converted(&s.virtual_services).find(|(v, _)| v.name() == g.vs.name) else {
            continue;
        };
        let classes = classes(vs, g);
        table.classes += classes.len();
        for r in classes {
            let before = route_vs(s, vs, &r);
            let after = route_http(s, &created, &g.route, &r);
            if before != after {
                table.differences.push(RoutingDifference {
                    virtual_service: g.vs.clone(),
                    segment: mid_segment(vs, &r.path),
                    request: r,
                    moments: vec!["1-4".into(), "5".into()],
                    before,
                    after,
                });
            }
        }
        table.mixed.push(g.vs.clone());
    }
    table
}

/// Findings of the table: per VirtualService with differences (the first few classes named) a blocker when
/// the migration creates the HTTPRoute (`apply`), a warning when it only writes it (`generate`); a warning
/// per mixed window.
pub fn findings(t: &RoutingTable, mode: super::plan::PolicyMigration) -> Vec<Finding> {
    let severity = if mode == super::plan::PolicyMigration::Apply {
        Severity::Blocker
    } else {
        Severity::Warning
    };
    let mut out = Vec::new();
    let by_vs: BTreeSet<&ObjRef> = t.differences.iter().map(|d| &d.virtual_service).collect();
    for vs in by_vs.iter().copied() {
        let segs: Vec<&RoutingDifference> = t
            .differences
            .iter()
            .filter(|d| &d.virtual_service == vs && d.segment)
            .collect();
        if segs.is_empty() {
            continue;
        }
        let paths: BTreeSet<&str> = segs.iter().map(|d| d.request.path.as_str()).collect();
        out.push(Finding::new(
            Severity::Warning,
            codes::ROUTING_DIFFERENCE,
            vs.clone(),
            format!(
                "the HTTPRoute generated for VirtualService {} uses PathPrefix, which matches whole path segments: paths that continue a prefix inside a segment or stop at its trailing slash ({}) are routed differently",
                vs.name,
                paths.into_iter().collect::<Vec<_>>().join(", ")
            ),
            "nothing when no client sends such paths; otherwise end the VirtualService prefixes at a segment boundary",
        ));
    }
    for vs in by_vs {
        let ds: Vec<&RoutingDifference> = t
            .differences
            .iter()
            .filter(|d| &d.virtual_service == vs && !d.segment)
            .collect();
        if ds.is_empty() {
            continue;
        }
        let shown: Vec<String> = ds
            .iter()
            .take(3)
            .map(|d| format!("{}: {} before, {} after", d.request, d.before, d.after))
            .collect();
        out.push(Finding::new(
            severity,
            codes::ROUTING_DIFFERENCE,
            vs.clone(),
            format!(
                "the HTTPRoute generated for VirtualService {} routes {} request class(es) differently ({}{}); an HTTPRoute sorts its matches by specificity (Exact, PathPrefix, RegularExpression, then length, method, headers, query), not in the VirtualService's order, and PathPrefix matches whole path segments",
                vs.name,
                ds.len(),
                shown.join("; "),
                if ds.len() > 3 { "; ..." } else { "" }
            ),
            "reorder or tighten the VirtualService's matches so the most specific come first (then the generated HTTPRoute routes the same), or write the HTTPRoute by hand",
        ));
    }
    for vs in t
        .mixed
        .iter()
        .filter(|_| mode == super::plan::PolicyMigration::Apply)
    {
        out.push(Finding::new(
            Severity::Warning,
            codes::ROUTING_MIXED_WINDOW,
            vs.clone(),
            format!("from step 1 to step 5 VirtualService {} and its generated HTTPRoute both route its hosts: sidecar callers use the VirtualService, ambient callers (through the waypoint) the HTTPRoute; upstream calls mixing them undefined, so the window is kept short (step 5 deletes the VirtualService)", vs.name),
            "nothing to do when the routing table shows no difference; otherwise fix the differences first",
        ));
    }
    out
}

/// Does `path` meet a prefix of the VirtualService only inside a segment or at its trailing slash?
fn mid_segment(vs: &VirtualService, path: &str) -> bool {
    vs.http
        .iter()
        .flat_map(|r| r["match"].as_array().cloned().unwrap_or_default())
        .filter_map(|m| {
            m.pointer("/uri/prefix")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .any(|p| {
            let bare = p.trim_end_matches('/');
            let rest = path.strip_prefix(bare).unwrap_or("/");
            let inside =
                path.starts_with(&p) && !bare.is_empty() && !rest.is_empty() && !rest.starts_with('/');
            let at_slash = p.ends_with('/') && p.len() > 1 && path == bare;
            inside || at_slash
        })
}

// --- request classes -----------------------------------------------------------------------------------

/// A value satisfying a VirtualService string match (for a regex, one string it matches, when one can be
/// derived).
fn sample(m: &Value) -> Option<String> {
    m["exact"]
        .as_str()
        .or_else(|| m["prefix"].as_str())
        .map(str::to_string)
        .or_else(|| m["regex"].as_str().and_then(regex_sample))
}

/// One string the RE2 regex `re` matches in full: literals as written, the first character of each class,
/// the first branch of each alternation, each repetition its minimum number of times (at least once for
/// `+`). `None` when the regex does not parse or the derived string does not match (look-around free RE2
/// has no such case, but the check keeps the sample honest).
pub fn regex_sample(re: &str) -> Option<String> {
    use regex_syntax::hir::{Class, Hir, HirKind};
    fn walk(h: &Hir, out: &mut String) -> Option<()> {
        match h.kind() {
            HirKind::Empty | HirKind::Look(_) => {}
            HirKind::Literal(l) => out.push_str(std::str::from_utf8(&l.0).ok()?),
            HirKind::Class(Class::Unicode(c)) => out.push(c.ranges().first()?.start()),
            HirKind::Class(Class::Bytes(c)) => out.push(char::from(c.ranges().first()?.start())),
            HirKind::Repetition(r) => {
                for _ in 0..r.min {
                    walk(&r.sub, out)?;
                }
            }
            HirKind::Capture(c) => walk(&c.sub, out)?,
            HirKind::Concat(hs) => {
                for x in hs {
                    walk(x, out)?;
                }
            }
            HirKind::Alternation(hs) => walk(hs.first()?, out)?,
        }
        Some(())
    }
    let hir = regex_syntax::Parser::new().parse(re).ok()?;
    let mut out = String::new();
    walk(&hir, &mut out)?;
    full_match(re, &out).then_some(out)
}

/// Request classes for a VirtualService: every path the matches name (and, for a prefix, the path one
/// segment below and one character past it), crossed with every method and header / query set the
/// matches name (and none), on every host.
pub fn classes(vs: &VirtualService, g: &Generated) -> Vec<Request> {
    let mut paths: BTreeSet<String> = ["/".to_string(), "/other".to_string()].into();
    let mut methods: BTreeSet<String> = ["GET".to_string()].into();
    let mut header_sets: BTreeSet<BTreeMap<String, String>> = [BTreeMap::new()].into();
    let mut query_sets: BTreeSet<BTreeMap<String, String>> = [BTreeMap::new()].into();
    for m in vs
        .http
        .iter()
        .flat_map(|r| r["match"].as_array().cloned().unwrap_or_default())
    {
        if let Some(e) = m.pointer("/uri/exact").and_then(Value::as_str) {
            paths.insert(e.to_string());
        }
        if let Some(p) = m
            .pointer("/uri/regex")
            .and_then(Value::as_str)
            .and_then(regex_sample)
        {
            paths.insert(p);
        }
        if let Some(p) = m.pointer("/uri/prefix").and_then(Value::as_str) {
            let bare = p.trim_end_matches('/');
            paths.insert(p.to_string());
            paths.insert(format!("{bare}/x"));
            paths.insert(format!("{p}x"));
            if !bare.is_empty() {
                paths.insert(bare.to_string());
            }
        }
        if let Some(x) = m.pointer("/method/exact").and_then(Value::as_str) {
            methods.insert(x.to_string());
        }
        let set = |key: &str| -> BTreeMap<String, String> {
            m[key]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.to_ascii_lowercase(), sample(v)?)))
                .collect()
        };
        let h = set("headers");
        if !h.is_empty() {
            header_sets.insert(h);
        }
        let q = set("queryParams");
        if !q.is_empty() {
            query_sets.insert(q);
        }
    }
    let mut out = Vec::new();
    for host in &g.hosts {
        for p in &paths {
            for m in &methods {
                for h in &header_sets {
                    for q in &query_sets {
                        out.push(Request {
                            host: host.clone(),
                            method: m.clone(),
                            path: p.clone(),
                            headers: h.clone(),
                            query: q.clone(),
                        });
                    }
                }
            }
        }
    }
    out
}

// --- VirtualService semantics -----------------------------------------------------------------------------

fn full_match(re: &str, v: &str) -> bool {
    regex::Regex::new(&format!("^(?:{re})$")).is_ok_and(|r| r.is_match(v))
}

fn vs_string(m: &Value, v: Option<&str>) -> bool {
    let Some(v) = v else { return false };
    if let Some(e) = m["exact"].as_str() {
        return v == e;
    }
    if let Some(p) = m["prefix"].as_str() {
        return v.starts_with(p);
    }
    m["regex"].as_str().is_some_and(|re| full_match(re, v))
}

fn vs_matches(m: &Value, r: &Request) -> bool {
    let kv = |key: &str, map: &BTreeMap<String, String>| {
        m[key].as_object().into_iter().flatten().all(|(k, sm)| {
            let k = if key == "headers" {
                k.to_ascii_lowercase()
            } else {
                k.clone()
            };
            vs_string(sm, map.get(&k).map(String::as_str))
        })
    };
    m.get("uri").is_none_or(|u| vs_string(u, Some(&r.path)))
        && m.get("method").is_none_or(|x| vs_string(x, Some(&r.method)))
        && kv("headers", &r.headers)
        && kv("queryParams", &r.query)
}

/// The pods a Service (and subset labels) selects, as `k=v,...:port`.
fn destination(
    s: &Snapshot,
    created: &[Value],
    svc: &str,
    extra: &BTreeMap<String, String>,
    port: Option<u64>,
) -> Option<String> {
    let mut sel = s
        .services
        .iter()
        .find(|x| x.metadata.name.as_deref() == Some(svc))
        .map(|x| {
            x.spec
                .as_ref()
                .and_then(|sp| sp.selector.clone())
                .unwrap_or_default()
        })
        .or_else(|| {
            created
                .iter()
                .find(|o| o["kind"] == "Service" && json::name(o) == svc)
                .map(|o| json::str_map(o, "/spec/selector"))
        })?;
    sel.extend(extra.clone());
    let labels: Vec<String> = sel.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Some(format!(
        "{}:{}",
        labels.join(","),
        port.map_or("*".into(), |p| p.to_string())
    ))
}

fn shares(list: Vec<(Option<String>, u64)>) -> Outcome {
    let total: u64 = list.iter().map(|(_, w)| w).sum();
    if total == 0 || list.iter().any(|(d, w)| d.is_none() && *w > 0) {
        return Outcome::Status { code: 500 };
    }
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    for (d, w) in list {
        if let Some(d) = d {
            *merged.entry(d).or_default() += w;
        }
    }
    Outcome::Forward {
        shares: merged
            .into_iter()
            .filter(|(_, w)| *w > 0)
            .map(|(d, w)| (d, (w * 1000 / total) as u32))
            .collect(),
    }
}

/// Port of a VirtualService destination without one: the Service's only port (as the translation does).
fn only_port(s: &Snapshot, svc: &str) -> Option<u64> {
    let ports: Vec<u64> = s
        .services
        .iter()
        .find(|x| x.metadata.name.as_deref() == Some(svc))
        .and_then(|x| x.spec.as_ref()?.ports.clone())
        .unwrap_or_default()
        .iter()
        .map(|p| p.port as u64)
        .collect();
    (ports.len() == 1).then(|| ports[0])
}

fn route_vs(s: &Snapshot, vs: &VirtualService, r: &Request) -> Outcome {
    let ns = s.ns();
    for rule in &vs.http {
        let ms = rule["match"].as_array().cloned().unwrap_or_default();
        if !(ms.is_empty() || ms.iter().any(|m| vs_matches(m, r))) {
            continue;
        }
        if let Some(rd) = rule.get("redirect") {
            let code = rd["redirectCode"].as_u64().unwrap_or(301);
            let host = rd["authority"].as_str().unwrap_or(&r.host);
            let path = rd["uri"].as_str().unwrap_or(&r.path);
            return Outcome::Redirect {
                to: format!("{code} -> {host}{path}"),
            };
        }
        let dests = rule["route"].as_array().cloned().unwrap_or_default();
        let n = dests.len();
        let list = dests
            .iter()
            .map(|d| {
                let svc = super::preflight::short_host(
                    d.pointer("/destination/host")
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                    ns,
                );
                let subset = d
                    .pointer("/destination/subset")
                    .and_then(Value::as_str)
                    .map(|sub| subset_labels(s, &svc, sub));
                let port = d
                    .pointer("/destination/port/number")
                    .and_then(Value::as_u64)
                    .or_else(|| only_port(s, &svc));
                let dest = match subset {
                    Some(None) => None,
                    Some(Some(l)) => destination(s, &[], &svc, &l, port),
                    None => destination(s, &[], &svc, &BTreeMap::new(), port),
                };
                (dest, d["weight"].as_u64().unwrap_or(if n == 1 { 100 } else { 0 }))
            })
            .collect();
        return shares(list);
    }
    Outcome::Status { code: 404 }
}

fn subset_labels(s: &Snapshot, svc: &str, subset: &str) -> Option<BTreeMap<String, String>> {
    converted(&s.destination_rules).find_map(|(_, dr)| {
        let host = super::preflight::short_host(&dr.host, s.ns());
        (host == svc).then_some(())?;
        dr.subsets
            .iter()
            .find(|x| x["name"] == subset)
            .map(|x| json::str_map(x, "/labels"))
    })
}

// --- HTTPRoute semantics -----------------------------------------------------------------------------------

/// istiod's rank of a path match (`getURIRank`): Exact 3, PathPrefix 2, RegularExpression 1.
fn rank(m: &Value) -> (i32, usize) {
    let ty = m
        .pointer("/path/type")
        .and_then(Value::as_str)
        .unwrap_or("PathPrefix");
    let len = m
        .pointer("/path/value")
        .and_then(Value::as_str)
        .unwrap_or("/")
        .len();
    let r = match ty {
        "Exact" => 3,
        "PathPrefix" => 2,
        _ => 1,
    };
    (r, len)
}

fn path_matches(m: &Value, path: &str) -> bool {
    let ty = m
        .pointer("/path/type")
        .and_then(Value::as_str)
        .unwrap_or("PathPrefix");
    let v = m.pointer("/path/value").and_then(Value::as_str).unwrap_or("/");
    match ty {
        "Exact" => path == v,
        "PathPrefix" => {
            let v = v.trim_end_matches('/');
            v.is_empty() || path == v || path.starts_with(&format!("{v}/"))
        }
        _ => full_match(v, path),
    }
}

fn value_matches(list: &Value, map: &BTreeMap<String, String>, lower: bool) -> bool {
    list.as_array().into_iter().flatten().all(|h| {
        let name = h["name"].as_str().unwrap_or("");
        let name = if lower {
            name.to_ascii_lowercase()
        } else {
            name.to_string()
        };
        let want = h["value"].as_str().unwrap_or("");
        match (h["type"].as_str().unwrap_or("Exact"), map.get(&name)) {
            (_, None) => false,
            ("Exact", Some(v)) => v == want,
            (_, Some(v)) => full_match(want, v),
        }
    })
}

fn http_matches(m: &Value, r: &Request) -> bool {
    path_matches(m, &r.path)
        && m["method"].as_str().is_none_or(|x| x == r.method)
        && value_matches(&m["headers"], &r.headers, true)
        && value_matches(&m["queryParams"], &r.query, false)
}

/// Routes a request with an HTTPRoute as istiod programs it: one entry per match, sorted.
fn route_http(s: &Snapshot, created: &[Value], route: &Value, r: &Request) -> Outcome {
    let mut entries: Vec<(Option<Value>, &Value)> = Vec::new();
    for rule in route
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match rule["matches"].as_array() {
            Some(ms) if !ms.is_empty() => entries.extend(ms.iter().map(|m| (Some(m.clone()), rule))),
            // The API server defaults a rule without matches to one `PathPrefix /` match.
            _ => entries.push((
                Some(serde_json::json!({"path": {"type": "PathPrefix", "value": "/"}})),
                rule,
            )),
        }
    }
    entries.sort_by(|(a, _), (b, _)| match (a, b) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (Some(_), None) => std::cmp::Ordering::Less,
        (Some(a), Some(b)) => {
            let key = |m: &Value| {
                let (rk, len) = rank(m);
                let n = |k: &str| m[k].as_array().map_or(0, Vec::len);
                (rk, len, m["method"].is_string(), n("headers"), n("queryParams"))
            };
            key(b).cmp(&key(a))
        }
    });
    for (m, rule) in entries {
        if m.as_ref().is_some_and(|m| !http_matches(m, r)) {
            continue;
        }
        let filters = rule["filters"].as_array().cloned().unwrap_or_default();
        if let Some(rd) = filters.iter().find(|f| f["type"] == "RequestRedirect") {
            let rd = &rd["requestRedirect"];
            let code = rd["statusCode"].as_u64().unwrap_or(302);
            let host = rd["hostname"].as_str().unwrap_or(&r.host);
            let path = rd
                .pointer("/path/replaceFullPath")
                .and_then(Value::as_str)
                .unwrap_or(&r.path);
            return Outcome::Redirect {
                to: format!("{code} -> {host}{path}"),
            };
        }
        let list = rule["backendRefs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                let name = b["name"].as_str().unwrap_or("");
                (
                    destination(s, created, name, &BTreeMap::new(), b["port"].as_u64()),
                    b["weight"].as_u64().unwrap_or(1),
                )
            })
            .collect();
        return shares(list);
    }
    Outcome::Status { code: 404 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assess::plan::{PlanOptions, PolicyMigration, plan_namespace};
    use crate::assess::routes::tests::with_vs;
    use serde_json::json;

    fn table(spec: Value) -> RoutingTable {
        check(&with_vs(spec), PolicyMigration::Apply)
    }

    #[test]
    fn an_ordered_translation_routes_every_class_the_same() {
        // Ordered most specific first (exact, then the header on prefix "/", then the prefix /v2, then the
        // default): the HTTPRoute's sort keeps that order.
        let t = table(json!({"hosts": ["api"], "http": [
            {"match": [{"uri": {"exact": "/old"}}], "redirect": {"uri": "/new"}},
            {"match": [{"headers": {"x-canary": {"exact": "1"}}, "uri": {"prefix": "/"}}],
             "route": [{"destination": {"host": "api", "subset": "v2"}}]},
            {"match": [{"uri": {"prefix": "/v2"}}], "route": [{"destination": {"host": "api", "subset": "v2"}}]},
            {"route": [{"destination": {"host": "api", "subset": "v1"}, "weight": 80},
                       {"destination": {"host": "api", "subset": "v2"}, "weight": 20}]}]}));
        // Paths /, /other, /x, /old, /v2, /v2/x, /v2x; with and without the canary header.
        assert_eq!(t.classes, 14);
        let real: Vec<&RoutingDifference> = t.differences.iter().filter(|d| !d.segment).collect();
        assert!(real.is_empty(), "{real:#?}");
        // Only the path PathPrefix cannot express: /v2x (inside the segment; with the header both pick v2).
        let seg: Vec<String> = t.differences.iter().map(|d| d.request.to_string()).collect();
        assert_eq!(seg, vec!["GET api/v2x"]);
        assert_eq!(t.mixed.len(), 1);
    }

    #[test]
    fn the_httproute_sort_changing_first_match_is_a_difference() {
        // The VirtualService sends /api/special to v1 (the prefix rule comes first); istiod sorts the
        // HTTPRoute's Exact match before the prefix, so it would reach v2.
        let t = table(json!({"hosts": ["api"], "http": [
            {"match": [{"uri": {"prefix": "/api"}}], "route": [{"destination": {"host": "api", "subset": "v1"}}]},
            {"match": [{"uri": {"exact": "/api/special"}}], "route": [{"destination": {"host": "api", "subset": "v2"}}]}]}));
        let real: Vec<&str> = t
            .differences
            .iter()
            .filter(|d| !d.segment)
            .map(|d| d.request.path.as_str())
            .collect();
        assert_eq!(real, vec!["/api/special"]);
        // `/apix` matches the VirtualService prefix inside a segment: a PathPrefix difference, a warning.
        let seg: Vec<&str> = t
            .differences
            .iter()
            .filter(|d| d.segment)
            .map(|d| d.request.path.as_str())
            .collect();
        assert_eq!(seg, vec!["/apix"]);
        let diff = t.differences.iter().find(|d| !d.segment).unwrap();
        assert_eq!(diff.before.to_string(), "app=api,version=v1:8080 (1000‰)");
        assert_eq!(diff.after.to_string(), "app=api,version=v2:8080 (1000‰)");
        let f = findings(&t, PolicyMigration::Apply);
        let sev: Vec<(Severity, &str)> = f.iter().map(|f| (f.severity, f.code.as_str())).collect();
        assert_eq!(
            sev,
            vec![
                (Severity::Warning, codes::ROUTING_DIFFERENCE),
                (Severity::Blocker, codes::ROUTING_DIFFERENCE),
                (Severity::Warning, codes::ROUTING_MIXED_WINDOW)
            ]
        );
        assert!(f[0].message.contains("(/apix)"), "{}", f[0].message);
        assert!(f[1].message.contains("GET api/api/special"), "{}", f[1].message);
        // Only written, not applied: warnings.
        assert!(
            findings(&t, PolicyMigration::Generate)
                .iter()
                .all(|f| f.severity == Severity::Warning)
        );
    }

    #[test]
    fn a_prefix_rewrite_needs_path_prefix_and_loses_mid_segment_paths() {
        let t = table(json!({"hosts": ["api"], "http": [
            {"match": [{"uri": {"prefix": "/v2"}}], "rewrite": {"uri": "/"}, "route": [{"destination": {"host": "api", "subset": "v2"}}]},
            {"route": [{"destination": {"host": "api", "subset": "v1"}}]}]}));
        let d: Vec<(&str, bool)> = t
            .differences
            .iter()
            .map(|d| (d.request.path.as_str(), d.segment))
            .collect();
        assert_eq!(d, vec![("/v2x", true)]);
    }

    #[test]
    fn a_longer_prefix_outranks_an_earlier_header_match() {
        // Without a path a match is PathPrefix "/" (length 1): istiod puts the PathPrefix /a (length 2) first,
        // so a canary request under /a no longer reaches v2.
        let t = table(json!({"hosts": ["api"], "http": [
            {"match": [{"headers": {"x-canary": {"exact": "1"}}}], "route": [{"destination": {"host": "api", "subset": "v2"}}]},
            {"match": [{"uri": {"prefix": "/a"}}], "route": [{"destination": {"host": "api", "subset": "v1"}}]}]}));
        let real: Vec<String> = t
            .differences
            .iter()
            .filter(|d| !d.segment)
            .map(|d| d.request.to_string())
            .collect();
        assert_eq!(real, vec!["GET api/a [x-canary: 1]", "GET api/a/x [x-canary: 1]"]);
    }

    #[test]
    fn regex_rules_get_a_class_and_a_catch_all_outranking_them_is_caught() {
        assert_eq!(regex_sample("/u/[0-9]+").as_deref(), Some("/u/0"));
        assert_eq!(regex_sample("^/(a|b)x?/z{2,3}$").as_deref(), Some("/a/zz"));
        assert_eq!(regex_sample("(").as_deref(), None);
        // The API server gives the catch-all `PathPrefix /`, which istiod ranks above every regex: the regex
        // rule of the VirtualService becomes unreachable for /u/0.
        let t = table(json!({"hosts": ["api"], "http": [
            {"match": [{"uri": {"regex": "/u/[0-9]+"}}], "route": [{"destination": {"host": "api", "subset": "v2"}}]},
            {"route": [{"destination": {"host": "api", "subset": "v1"}}]}]}));
        let real: Vec<String> = t
            .differences
            .iter()
            .filter(|d| !d.segment)
            .map(|d| d.request.path.clone())
            .collect();
        assert_eq!(real, vec!["/u/0"]);
    }

    #[test]
    fn the_plan_carries_the_table_and_its_findings() {
        let s = with_vs(
            json!({"hosts": ["api"], "http": [{"route": [{"destination": {"host": "api", "subset": "v1"}}]}]}),
        );
        let p = plan_namespace(
            &s,
            &PlanOptions {
                policy_migration: PolicyMigration::Apply,
                ..Default::default()
            },
        );
        assert!(p.routing.differences.is_empty());
        assert!(
            p.findings
                .iter()
                .any(|f| f.code == codes::ROUTING_MIXED_WINDOW && f.severity == Severity::Warning)
        );
        assert!(!p.blocked(), "{:?}", p.findings);
        let twins: Vec<String> = p.twins.iter().map(|t| t.object.to_string()).collect();
        assert_eq!(twins, vec!["Service/app/api-v1", "HTTPRoute/app/api"]);
        let del: Vec<String> = p.delete_at_step5.iter().map(ToString::to_string).collect();
        assert_eq!(del, vec!["VirtualService/app/api", "DestinationRule/app/api"]);
        // generate: the YAML only, nothing created or deleted.
        let p = plan_namespace(
            &s,
            &PlanOptions {
                policy_migration: PolicyMigration::Generate,
                ..Default::default()
            },
        );
        assert!(p.twins.is_empty());
        assert!(p.delete_at_step5.is_empty());
        assert!(
            p.findings
                .iter()
                .any(|f| f.code == crate::assess::routes::codes::VS_TRANSLATED && f.fix_yaml.is_some())
        );
    }
}
