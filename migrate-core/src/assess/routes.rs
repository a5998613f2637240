//! The policy phase for routing: a VirtualService for mesh traffic becomes a Gateway API HTTPRoute attached
//! to its Service (GAMMA: `parentRefs` kind Service, group ""), and DestinationRule subsets become
//! per-version Services (the Service's selector plus the subset labels, the same ports).
//!
//! Sources: istio.io `docs/ambient/migrate/migrate-policies` (the policy phase), Gateway API `HTTPRoute` v1
//! (`apis/v1/httproute_types.go`: matches, filters, timeouts, retry, backendRefs), GAMMA
//! (gateway-api.sigs.k8s.io/mesh: a Service parentRef routes the traffic addressed to that Service), and
//! how istiod turns an HTTPRoute back into Envoy routes (`pilot/pkg/config/kube/gateway/conversion.go`:
//! one route per match, sorted by `sortHTTPRoutes`, i.e. Exact > PathPrefix > RegularExpression, longer
//! value first, then method, header count, query count). Because of that sort an HTTPRoute does not keep
//! the VirtualService's first-match order; the translation keeps the rules in order and
//! `routing_equiv` checks, class by class, that the destinations did not change.
//!
//! Whatever has no HTTPRoute equivalent is a blocker naming the VirtualService, the field and the fix
//! (`virtualservice-unsupported`); a VirtualService is translated whole or not at all.

use super::objects::{self, Obj, converted};
use super::plan::PolicyMigration;
use super::preflight::{MANAGED_BY, ROLE, short_host};
use super::{Finding, Severity, Snapshot, json};
use crate::steps::ObjRef;
use k8s_openapi::api::core::v1::Service;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// Stable finding codes.
pub mod codes {
    /// A VirtualService was translated: the HTTPRoute and per-version Services are in the fix YAML
    /// (`generate`) or created before step 1 (`apply`).
    pub const VS_TRANSLATED: &str = "virtualservice-translated";
    /// A VirtualService field with no HTTPRoute equivalent.
    pub const VS_UNSUPPORTED: &str = "virtualservice-unsupported";
}

/// Where the fix for a VirtualService that cannot be translated is documented.
const FIX_DOC: &str = "istio.io docs/ambient/migrate/migrate-policies";

/// One field of a VirtualService the translation cannot carry over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// JSON-path-like field name (`http[0].fault`).
    pub field: String,
    /// Why it has no HTTPRoute equivalent.
    pub why: String,
    /// What the user should do.
    pub fix: String,
}

/// The ambient equivalent of one VirtualService.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    /// The VirtualService.
    pub vs: ObjRef,
    /// Services (short names) of its hosts: the HTTPRoute's parentRefs.
    pub hosts: Vec<String>,
    /// The HTTPRoute.
    pub route: Value,
    /// Per-version Services to create (those that do not already exist as wanted).
    pub services: Vec<Value>,
    /// DestinationRules whose subsets the per-version Services replace.
    pub subset_rules: Vec<ObjRef>,
}

/// Result for the namespace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Translation {
    /// `virtualservice-translated` (info) and `virtualservice-unsupported` (blocker) findings.
    pub findings: Vec<Finding>,
    /// VirtualServices translated whole.
    pub generated: Vec<Generated>,
    /// Objects step 5 deletes: translated VirtualServices, and DestinationRules that only defined subsets
    /// for them.
    pub replaced: Vec<ObjRef>,
}

impl Translation {
    /// Every generated object, per-version Services first (an HTTPRoute created before its backends
    /// answers 500 for them until they exist), deduplicated by kind and name.
    pub fn objects(&self) -> Vec<Value> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let services = self.generated.iter().flat_map(|g| g.services.iter());
        for o in services.chain(self.generated.iter().map(|g| &g.route)) {
            {
                let r = ObjRef::from_value(o);
                if seen.insert((r.kind.clone(), r.name.clone())) {
                    out.push(o.clone());
                }
            }
        }
        out
    }
}

/// Translates the namespace's mesh VirtualServices (nothing when `policies.migration` is `off`).
/// VirtualServices whose hosts already have an HTTPRoute are left to the `virtualservice-and-httproute`
/// check: the user has started this phase by hand.
pub fn translate(s: &Snapshot, mode: PolicyMigration) -> Translation {
    let mut t = Translation::default();
    if mode == PolicyMigration::Off {
        return t;
    }
    let routed = super::preflight::httproute_services(s);
    for (vs, spec) in converted(&s.virtual_services) {
        let vref = vs.obj_ref();
        let ns = s.ns();
        let hosts: Vec<String> = spec.hosts.iter().map(|h| short_host(h, ns)).collect();
        if hosts.iter().any(|h| routed.contains(h)) {
            continue;
        }
        match translate_one(s, vs) {
            Ok(g) => {
                let docs: Vec<&Value> = std::iter::once(&g.route).chain(g.services.iter()).collect();
                let verb = if mode == PolicyMigration::Apply {
                    "created before step 1 (policies.migration = apply); step 5 deletes the VirtualService"
                } else {
                    "apply the generated YAML (or set policies.migration = apply), then step 5 can delete the VirtualService"
                };
                t.findings.push(
                    Finding::new(
                        Severity::Info,
                        codes::VS_TRANSLATED,
                        vref.clone(),
                        format!(
                            "VirtualService {} (hosts {:?}) translates to HTTPRoute {} and {} per-version Service(s)",
                            vref.name,
                            g.hosts,
                            json::name(&g.route),
                            g.services.len()
                        ),
                        verb,
                    )
                    .with_yaml(yaml(&docs)),
                );
                t.generated.push(g);
            }
            Err(gaps) => {
                for gap in gaps {
                    t.findings.push(Finding::new(
                        Severity::Blocker,
                        codes::VS_UNSUPPORTED,
                        vref.clone(),
                        format!(
                            "VirtualService {} field {}: {} (no HTTPRoute is generated for it)",
                            vref.name, gap.field, gap.why
                        ),
                        format!("{} (see {FIX_DOC})", gap.fix),
                    ));
                }
            }
        }
    }
    // Step 5 deletes a translated VirtualService (its HTTPRoute covers every host by construction), and a
    // DestinationRule only when every VirtualService using its subsets is translated and it carries
    // nothing but subset labels (a trafficPolicy still applies at the waypoint: it is kept).
    let translated: BTreeSet<String> = t.generated.iter().map(|g| g.vs.name.clone()).collect();
    for g in &t.generated {
        t.replaced.push(g.vs.clone());
    }
    let mut drs: BTreeSet<ObjRef> = BTreeSet::new();
    for g in &t.generated {
        drs.extend(g.subset_rules.iter().cloned());
    }
    for dr in drs {
        let Some((_, v)) = converted(&s.destination_rules).find(|(d, _)| d.name() == dr.name) else {
            continue;
        };
        let host = short_host(&v.host, s.ns());
        let users_translated = converted(&s.virtual_services)
            .all(|(vs, spec)| !uses_subsets_of(spec, &host, s.ns()) || translated.contains(vs.name()));
        if users_translated && subsets_only(v) {
            t.replaced.push(dr);
        }
    }
    t
}

fn yaml(docs: &[&Value]) -> String {
    docs.iter()
        .map(|d| serde_saphyr::to_string(d).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Does the VirtualService route to a subset of `host`?
fn uses_subsets_of(vs: &objects::VirtualService, host: &str, ns: &str) -> bool {
    let dests = |r: &Value| -> Vec<Value> {
        let mut d: Vec<Value> = r["route"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| x["destination"].clone())
            .collect();
        d.extend(r.get("mirror").cloned());
        d.extend(
            r["mirrors"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| m["destination"].clone()),
        );
        d
    };
    vs.http
        .iter()
        .flat_map(dests)
        .any(|d| d["subset"].is_string() && short_host(d["host"].as_str().unwrap_or(""), ns) == host)
}

/// A DestinationRule with only `host`, `subsets` (names and labels) and perhaps `exportTo`.
fn subsets_only(dr: &objects::DestinationRule) -> bool {
    let spec_ok = dr.traffic_policy.is_none() && dr.workload_selector.is_none() && dr.extra.is_empty();
    let subsets_ok = dr.subsets.iter().all(|s| {
        s.as_object()
            .is_some_and(|m| m.keys().all(|k| k == "name" || k == "labels"))
    });
    spec_ok && subsets_ok
}

/// HTTP methods Gateway API accepts (`HTTPMethod` enum).
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Retry conditions inside Istio's default `retryOn` (`connect-failure,refused-stream,unavailable,
/// cancelled,retriable-status-codes`, istio/istio `pilot/pkg/networking/core/route/retry`), which istiod
/// also applies to an HTTPRoute `retry`: listing them changes nothing.
const DEFAULT_RETRY_ON: [&str; 5] = [
    "connect-failure",
    "refused-stream",
    "unavailable",
    "cancelled",
    "retriable-status-codes",
];

struct Ctx<'a> {
    s: &'a Snapshot,
    ns: &'a str,
    gaps: Vec<Gap>,
    services: BTreeMap<String, Value>,
    subset_rules: BTreeSet<ObjRef>,
}

impl Ctx<'_> {
    fn gap(&mut self, field: impl Into<String>, why: impl Into<String>, fix: impl Into<String>) {
        self.gaps.push(Gap {
            field: field.into(),
            why: why.into(),
            fix: fix.into(),
        });
    }

    fn service(&self, name: &str) -> Option<&Service> {
        self.s
            .services
            .iter()
            .find(|x| x.metadata.name.as_deref() == Some(name))
    }

    /// A destination host as a Service of this namespace.
    fn host_service(&mut self, field: &str, host: &str) -> Option<String> {
        let short = short_host(host, self.ns);
        if short.contains('.') || short.contains('*') {
            self.gap(
                field,
                format!("host {host:?} is not a Service of namespace {}", self.ns),
                "route to Services of the namespace only (a cross-namespace backendRef needs a ReferenceGrant, an external host a ServiceEntry route); keep that VirtualService and migrate it by hand",
            );
            return None;
        }
        if self.service(&short).is_none() {
            self.gap(
                field,
                format!("host {host:?} names no Service of namespace {}", self.ns),
                "create the Service or remove the host",
            );
            return None;
        }
        Some(short)
    }

    /// The port of a backendRef: the one named, else the Service's only port.
    fn backend_port(&mut self, field: &str, svc: &str, named: Option<u64>) -> Option<u64> {
        if let Some(p) = named {
            return Some(p);
        }
        let ports: Vec<u64> = self
            .service(svc)
            .and_then(|x| x.spec.as_ref())
            .and_then(|sp| sp.ports.as_ref())
            .map(|ps| ps.iter().map(|p| p.port as u64).collect())
            .unwrap_or_default();
        if let [p] = ports.as_slice() {
            return Some(*p);
        }
        self.gap(
            format!("{field}.port"),
            format!("Service {svc} has {} ports and the destination names none; an HTTPRoute backendRef to a Service needs a port", ports.len()),
            "name the port in the VirtualService destination (port.number)",
        );
        None
    }

    /// The backend Service for `host` (and `subset`): the Service itself, or its per-version Service.
    fn backend(&mut self, field: &str, dest: &Value) -> Option<(String, u64)> {
        let host = dest["host"].as_str().unwrap_or("");
        let svc = self.host_service(&format!("{field}.host"), host)?;
        let port = self.backend_port(field, &svc, dest.pointer("/port/number").and_then(Value::as_u64))?;
        match dest["subset"].as_str() {
            None => Some((svc, port)),
            Some(subset) => {
                let name = self.version_service(&format!("{field}.subset"), &svc, subset)?;
                Some((name, port))
            }
        }
    }

    /// The per-version Service `<svc>-<subset>` for a DestinationRule subset: selector = the Service's
    /// selector plus the subset labels, the same ports. An existing Service of that name is used when it
    /// selects exactly that; otherwise the name is taken and that is a gap.
    fn version_service(&mut self, field: &str, svc: &str, subset: &str) -> Option<String> {
        let found = converted(&self.s.destination_rules).find_map(|(dr, spec)| {
            if short_host(&spec.host, self.ns) != svc {
                return None;
            }
            spec.subsets
                .iter()
                .find(|x| x["name"] == subset)
                .map(|x| (dr.obj_ref(), json::str_map(x, "/labels")))
        });
        let Some((dr, labels)) = found else {
            self.gap(
                field,
                format!("subset {subset:?} of {svc} is defined by no DestinationRule of namespace {}", self.ns),
                "define the subset in a DestinationRule for the host, or route to the Service without a subset",
            );
            return None;
        };
        let base = self.service(svc).cloned().unwrap_or_default();
        let spec = base.spec.clone().unwrap_or_default();
        let mut selector = spec.selector.clone().unwrap_or_default();
        selector.extend(labels);
        let name = dns_label(&format!("{svc}-{subset}"));
        match self.service(&name) {
            Some(existing) => {
                let sel = existing
                    .spec
                    .as_ref()
                    .and_then(|x| x.selector.clone())
                    .unwrap_or_default();
                if sel != selector {
                    self.gap(
                        field,
                        format!("the per-version Service name {name} is taken by a Service selecting {sel:?}, not the subset's pods {selector:?}"),
                        "rename that Service, or create the per-version Service under that name by hand",
                    );
                    return None;
                }
            }
            None => {
                let ports: Vec<Value> = spec
                    .ports
                    .clone()
                    .unwrap_or_default()
                    .iter()
                    .map(|p| {
                        let mut v = serde_json::to_value(p).unwrap_or_default();
                        if let Some(m) = v.as_object_mut() {
                            m.remove("nodePort");
                        }
                        v
                    })
                    .collect();
                let manifest = json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": name, "namespace": self.ns, "labels": managed_labels()},
                    "spec": {"selector": selector, "ports": ports}});
                self.services.insert(name.clone(), manifest);
            }
        }
        self.subset_rules.insert(dr);
        Some(name)
    }
}

/// The HTTPRouteMatch path default (`apis/v1/httproute_types.go`: `PathPrefix /`).
fn default_path() -> Value {
    json!({"type": "PathPrefix", "value": "/"})
}

fn managed_labels() -> Value {
    json!({MANAGED_BY.0: MANAGED_BY.1, ROLE: "twin"})
}

/// `name` as a DNS-1035 label (lower case, `-` for anything else, at most 63 characters).
fn dns_label(name: &str) -> String {
    let s: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let s: String = s.chars().take(63).collect();
    s.trim_matches('-').to_string()
}

/// `text` as an RE2 literal.
pub fn regex_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A Gateway API Duration (GEP-2257: `^([0-9]{1,5}(h|m|s|ms)){1,4}$`) equal to an Istio duration, when
/// one exists.
fn gateway_duration(d: &str) -> Option<String> {
    let mut rest = d;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return None;
        }
        let unit = &rest[digits..];
        let ulen = if unit.starts_with("ms") {
            2
        } else if unit.starts_with('h') || unit.starts_with('m') || unit.starts_with('s') {
            1
        } else {
            return None;
        };
        rest = &unit[ulen..];
        parts += 1;
    }
    (1..=4).contains(&parts).then(|| d.to_string())
}

/// A VirtualService string match as a Gateway API value match (`Exact`, `RegularExpression`); a prefix
/// becomes the regex `<escaped prefix>.*` (Istio matches regexes against the whole value).
fn value_match(m: &Value) -> Option<(&'static str, String)> {
    if let Some(e) = m["exact"].as_str() {
        return Some(("Exact", e.to_string()));
    }
    if let Some(p) = m["prefix"].as_str() {
        return Some(("RegularExpression", format!("{}.*", regex_escape(p))));
    }
    m["regex"].as_str().map(|r| ("RegularExpression", r.to_string()))
}

fn translate_match(c: &mut Ctx<'_>, field: &str, m: &Value, ports: &mut BTreeSet<u64>) -> Value {
    // The CRD default, made explicit so that the object read back equals the one created.
    let mut out = Map::new();
    out.insert("path".into(), default_path());
    for (k, v) in m.as_object().into_iter().flatten() {
        let f = format!("{field}.{k}");
        match k.as_str() {
            "name" | "statPrefix" => {}
            "uri" => {
                let path = if let Some(e) = v["exact"].as_str() {
                    json!({"type": "Exact", "value": e})
                } else if let Some(p) = v["prefix"].as_str() {
                    // A PathPrefix, not the exact regex `<prefix>.*`: the API server gives every rule and match
                    // without a path `PathPrefix /`, and istiod ranks any PathPrefix above every regex
                    // (`getURIRank`), so a regex prefix would fall behind the catch-all. PathPrefix matches
                    // whole segments (`/v2` not `/v2x`): `routing_equiv` reports those paths.
                    json!({"type": "PathPrefix", "value": p})
                } else if let Some(r) = v["regex"].as_str() {
                    json!({"type": "RegularExpression", "value": r})
                } else {
                    c.gap(&f, "empty uri match", "give the match an exact, prefix or regex value");
                    continue;
                };
                out.insert("path".into(), path);
            }
            "method" => match v["exact"].as_str() {
                Some(x) if METHODS.contains(&x) => {
                    out.insert("method".into(), json!(x));
                }
                _ => c.gap(
                    &f,
                    format!("method match {v} is not an exact standard method; HTTPRoute matches one method exactly"),
                    "use method.exact with GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE or PATCH",
                ),
            },
            "headers" | "queryParams" => {
                let mut list = Vec::new();
                for (name, sm) in v.as_object().into_iter().flatten() {
                    if name.starts_with(':') {
                        c.gap(
                            format!("{f}.{name}"),
                            "pseudo-header matches have no HTTPRoute equivalent",
                            "match on path or method instead",
                        );
                        continue;
                    }
                    match value_match(sm) {
                        Some((t, value)) => list.push(json!({"type": t, "name": name, "value": value})),
                        None => c.gap(
                            format!("{f}.{name}"),
                            "a presence-only match (empty string match) has no HTTPRoute equivalent",
                            "match on a value (regex \".*\" accepts any present value)",
                        ),
                    }
                }
                out.insert(k.clone(), Value::Array(list));
            }
            "port" => {
                if let Some(p) = v.as_u64() {
                    ports.insert(p);
                }
            }
            "ignoreUriCase" if v == &json!(false) => {}
            "gateways" if v.as_array().is_some_and(|a| a.iter().all(|g| g == "mesh")) => {}
            "sourceLabels" | "sourceNamespace" | "gateways" => c.gap(
                &f,
                "an HTTPRoute attached to a Service applies to every caller: it cannot match on the caller",
                "split the callers into their own Services, or keep the VirtualService and migrate by hand",
            ),
            "withoutHeaders" => c.gap(
                &f,
                "HTTPRoute has no negative header match",
                "rewrite the rules so that positive matches come first",
            ),
            _ => c.gap(
                &f,
                "has no HTTPRoute match equivalent",
                "remove the match condition or migrate the rule by hand",
            ),
        }
    }
    Value::Object(out)
}

fn header_modifier(v: &Value) -> Value {
    let pairs = |x: &Value| -> Vec<Value> {
        x.as_object()
            .into_iter()
            .flatten()
            .map(|(n, v)| json!({"name": n, "value": v.as_str().unwrap_or("")}))
            .collect()
    };
    let mut out = Map::new();
    if v["set"].is_object() {
        out.insert("set".into(), Value::Array(pairs(&v["set"])));
    }
    if v["add"].is_object() {
        out.insert("add".into(), Value::Array(pairs(&v["add"])));
    }
    if let Some(r) = v["remove"].as_array() {
        out.insert("remove".into(), Value::Array(r.clone()));
    }
    Value::Object(out)
}

/// A mirror filter, with the percentage as an integer `percent` or a `fraction` (per million).
fn mirror_filter(c: &mut Ctx<'_>, field: &str, dest: &Value, pct: Option<f64>) -> Option<Value> {
    let (name, port) = c.backend(field, dest)?;
    let mut m = json!({"backendRef": {"group": "", "kind": "Service", "name": name, "port": port}});
    if let Some(p) = pct {
        if p.fract() == 0.0 {
            m["percent"] = json!(p as u64);
        } else {
            m["fraction"] = json!({"numerator": (p * 10_000.0).round() as u64, "denominator": 1_000_000});
        }
    }
    Some(json!({"type": "RequestMirror", "requestMirror": m}))
}

fn translate_rule(c: &mut Ctx<'_>, i: usize, r: &Value, ports: &mut BTreeSet<u64>) -> Value {
    let field = format!("http[{i}]");
    let mut rule = Map::new();
    let mut filters: Vec<Value> = Vec::new();
    let matches: Vec<Value> = r["match"].as_array().cloned().unwrap_or_default();
    let rewrite_uri = r.pointer("/rewrite/uri").and_then(Value::as_str);
    // A prefix rewrite replaces the matched prefix: every match must be a uri prefix (ReplacePrefixMatch),
    // or every match a uri exact (the whole path is replaced).
    let all_prefix = !matches.is_empty() && matches.iter().all(|m| m.pointer("/uri/prefix").is_some());
    let all_exact = !matches.is_empty() && matches.iter().all(|m| m.pointer("/uri/exact").is_some());
    let rewrite_prefix = rewrite_uri.is_some() && all_prefix;
    let ms: Vec<Value> = matches
        .iter()
        .enumerate()
        .map(|(j, m)| translate_match(c, &format!("{field}.match[{j}]"), m, ports))
        .collect();
    // A rule without matches is defaulted by the API server to one `PathPrefix /` match: written out.
    let ms = if ms.is_empty() {
        vec![json!({"path": default_path()})]
    } else {
        ms
    };
    rule.insert("matches".into(), Value::Array(ms));
    for (k, v) in r.as_object().into_iter().flatten() {
        let f = format!("{field}.{k}");
        match k.as_str() {
            "name" | "match" | "route" => {}
            "timeout" => match v.as_str().and_then(gateway_duration) {
                Some(d) => {
                    rule.entry("timeouts").or_insert_with(|| json!({}))["request"] = json!(d);
                }
                None => c.gap(&f, format!("timeout {v} is not a Gateway API duration"), "write it as e.g. 1500ms or 2s"),
            },
            "retries" => {
                let mut retry = Map::new();
                if let Some(a) = v["attempts"].as_u64() {
                    retry.insert("attempts".into(), json!(a));
                }
                if let Some(t) = v["perTryTimeout"].as_str() {
                    match gateway_duration(t) {
                        Some(d) => {
                            rule.entry("timeouts").or_insert_with(|| json!({}))["backendRequest"] = json!(d);
                        }
                        None => c.gap(
                            format!("{f}.perTryTimeout"),
                            format!("{t:?} is not a Gateway API duration"),
                            "write it as e.g. 500ms",
                        ),
                    }
                }
                let mut codes = Vec::new();
                for cond in v["retryOn"].as_str().unwrap_or("").split(',').map(str::trim).filter(|x| !x.is_empty()) {
                    if let Ok(code) = cond.parse::<u16>() {
                        codes.push(json!(code));
                    } else if !DEFAULT_RETRY_ON.contains(&cond) {
                        c.gap(
                            format!("{f}.retryOn"),
                            format!("retry condition {cond:?} has no HTTPRoute equivalent (retry.codes lists status codes only)"),
                            "list the status codes to retry on (e.g. 502,503,504) instead",
                        );
                    }
                }
                if !codes.is_empty() {
                    retry.insert("codes".into(), Value::Array(codes));
                }
                if v.get("retryRemoteLocalities").is_some() {
                    c.gap(format!("{f}.retryRemoteLocalities"), "no HTTPRoute equivalent", "remove it");
                }
                rule.insert("retry".into(), Value::Object(retry));
            }
            "rewrite" => {
                let mut rw = Map::new();
                if let Some(u) = rewrite_uri {
                    if rewrite_prefix {
                        rw.insert("path".into(), json!({"type": "ReplacePrefixMatch", "replacePrefixMatch": u}));
                    } else if all_exact {
                        rw.insert("path".into(), json!({"type": "ReplaceFullPath", "replaceFullPath": u}));
                    } else {
                        c.gap(
                            format!("{f}.uri"),
                            "a uri rewrite needs every match of the rule to be a uri prefix (ReplacePrefixMatch) or a uri exact (ReplaceFullPath)",
                            "split the rule so each has uri prefix or uri exact matches only",
                        );
                    }
                }
                if let Some(a) = v["authority"].as_str() {
                    rw.insert("hostname".into(), json!(a));
                }
                if v.get("uriRegexRewrite").is_some() {
                    c.gap(
                        format!("{f}.uriRegexRewrite"),
                        "HTTPRoute URLRewrite has no regex rewrite",
                        "rewrite with a prefix or full path, or in the application",
                    );
                }
                filters.push(json!({"type": "URLRewrite", "urlRewrite": rw}));
            }
            "redirect" => {
                let mut rd = Map::new();
                if let Some(u) = v["uri"].as_str() {
                    rd.insert("path".into(), json!({"type": "ReplaceFullPath", "replaceFullPath": u}));
                }
                if let Some(a) = v["authority"].as_str() {
                    rd.insert("hostname".into(), json!(a));
                }
                if let Some(s) = v["scheme"].as_str() {
                    rd.insert("scheme".into(), json!(s));
                }
                if let Some(p) = v["port"].as_u64() {
                    rd.insert("port".into(), json!(p));
                }
                let code = v["redirectCode"].as_u64().unwrap_or(301);
                if [301, 302, 303, 307, 308].contains(&code) {
                    rd.insert("statusCode".into(), json!(code));
                } else {
                    c.gap(format!("{f}.redirectCode"), format!("{code} is not a redirect code HTTPRoute supports"), "use 301, 302, 303, 307 or 308");
                }
                if v.get("derivePort").is_some() {
                    c.gap(format!("{f}.derivePort"), "no HTTPRoute equivalent", "name the port");
                }
                filters.push(json!({"type": "RequestRedirect", "requestRedirect": rd}));
            }
            "headers" => {
                for (side, ty, key) in [
                    ("request", "RequestHeaderModifier", "requestHeaderModifier"),
                    ("response", "ResponseHeaderModifier", "responseHeaderModifier"),
                ] {
                    if v[side].is_object() {
                        filters.push(json!({"type": ty, key: header_modifier(&v[side])}));
                    }
                }
            }
            "mirror" => {
                let pct = r.pointer("/mirrorPercentage/value").and_then(Value::as_f64);
                filters.extend(mirror_filter(c, &f, v, pct));
            }
            "mirrorPercentage" => {}
            "mirrors" => {
                for (j, m) in v.as_array().into_iter().flatten().enumerate() {
                    let pct = m.pointer("/percentage/value").and_then(Value::as_f64);
                    filters.extend(mirror_filter(c, &format!("{f}[{j}]"), &m["destination"], pct));
                }
            }
            "fault" => c.gap(
                &f,
                "fault injection has no HTTPRoute equivalent",
                "inject faults in a test environment or with a waypoint EnvoyFilter-free tool; remove the fault before migrating",
            ),
            "delegate" => c.gap(
                &f,
                "delegation has no HTTPRoute equivalent",
                "inline the delegate VirtualService's rules into this one",
            ),
            "corsPolicy" => c.gap(
                &f,
                "CORS is not a filter of HTTPRoute v1 (standard channel)",
                "handle CORS in the application, or keep the VirtualService and migrate by hand",
            ),
            "directResponse" => c.gap(
                &f,
                "HTTPRoute has no direct response",
                "serve the response from a backend",
            ),
            _ => c.gap(&f, "has no HTTPRoute equivalent", "remove it or migrate the rule by hand"),
        }
    }
    let mut backends = Vec::new();
    let dests = r["route"].as_array().cloned().unwrap_or_default();
    for (j, d) in dests.iter().enumerate() {
        let f = format!("{field}.route[{j}]");
        if d.get("headers").is_some() {
            c.gap(
                format!("{f}.headers"),
                "per-destination header changes are not carried over",
                "move the header changes to the rule's headers",
            );
        }
        if let Some((name, port)) = c.backend(&format!("{f}.destination"), &d["destination"]) {
            let weight = d["weight"]
                .as_u64()
                .unwrap_or(if dests.len() == 1 { 1 } else { 0 });
            backends
                .push(json!({"group": "", "kind": "Service", "name": name, "port": port, "weight": weight}));
        }
    }
    if !backends.is_empty() {
        rule.insert("backendRefs".into(), Value::Array(backends));
    }
    if !filters.is_empty() {
        rule.insert("filters".into(), Value::Array(filters));
    }
    Value::Object(rule)
}

/// Translates one VirtualService, or lists every field that has no HTTPRoute equivalent.
pub fn translate_one(s: &Snapshot, vs: &Obj<objects::VirtualService>) -> Result<Generated, Vec<Gap>> {
    let Some(spec) = vs.spec() else {
        let e = vs
            .error()
            .map(|e| (e.field.clone(), e.message.clone()))
            .unwrap_or_default();
        return Err(vec![Gap {
            field: e.0,
            why: e.1,
            fix: "fix the field".into(),
        }]);
    };
    let ns = s.ns();
    let mut c = Ctx {
        s,
        ns,
        gaps: Vec::new(),
        services: BTreeMap::new(),
        subset_rules: BTreeSet::new(),
    };
    // The fields set besides `hosts` and `http`, in the order of their names (the order they are reported).
    let mut set: Vec<(&str, Option<Value>)> = [
        ("gateways", spec.gateways.as_ref().map(|g| json!(g))),
        ("exportTo", spec.export_to.as_ref().map(|g| json!(g))),
        ("tcp", spec.tcp.as_ref().map(|g| json!(g))),
        ("tls", spec.tls.as_ref().map(|g| json!(g))),
    ]
    .into_iter()
    .chain(spec.extra.iter().map(|(k, v)| (k.as_str(), Some(v.clone()))))
    .collect();
    set.sort_by_key(|(k, _)| *k);
    for (k, v) in set {
        let Some(v) = v else { continue };
        match k {
            "gateways" if v.as_array().is_some_and(|a| a.iter().all(|g| g == "mesh")) => {}
            "gateways" => c.gap(
                "gateways",
                format!("the VirtualService also serves gateways {v}; the HTTPRoute generated here is for mesh traffic only, and step 5 would delete the gateway routing"),
                "split it: keep a VirtualService for the gateways and a mesh-only one (gateways: [mesh]) to migrate",
            ),
            "exportTo" if v.as_array().is_some_and(|a| a.iter().all(|x| x == "*")) => {}
            "exportTo" => c.gap(
                "exportTo",
                "an HTTPRoute attached to a Service applies to callers in every namespace (no exportTo)",
                "remove exportTo, or keep the VirtualService and migrate by hand",
            ),
            "tcp" | "tls" => c.gap(
                k,
                "only HTTP routes are translated (TCPRoute / TLSRoute are not generated)",
                "keep the VirtualService's TCP/TLS routing by hand",
            ),
            _ => c.gap(k, "has no HTTPRoute equivalent", "remove it or migrate by hand"),
        }
    }
    let mut hosts = Vec::new();
    for (i, h) in spec.hosts.iter().enumerate() {
        if let Some(svc) = c.host_service(&format!("hosts[{i}]"), h) {
            hosts.push(svc);
        }
    }
    let mut ports = BTreeSet::new();
    let rules: Vec<Value> = spec
        .http
        .iter()
        .enumerate()
        .map(|(i, r)| translate_rule(&mut c, i, r, &mut ports))
        .collect();
    if rules.is_empty() {
        c.gap(
            "http",
            "no HTTP routes",
            "nothing to translate: delete the VirtualService or migrate it by hand",
        );
    }
    if rules.len() > 16 {
        c.gap(
            "http",
            format!("{} rules; an HTTPRoute holds at most 16", rules.len()),
            "merge rules, or split the VirtualService",
        );
    }
    // A match on one port routes that port only: the HTTPRoute attaches to that port of the Service.
    let port = match ports.len() {
        0 => None,
        1 => {
            let all = spec.http.iter().all(|r| {
                r["match"]
                    .as_array()
                    .is_some_and(|ms| !ms.is_empty() && ms.iter().all(|m| m["port"].is_u64()))
            });
            if !all {
                c.gap(
                    "http[].match.port",
                    "some rules match a port and others do not",
                    "match the same port in every rule, or in none",
                );
            }
            ports.iter().next().copied()
        }
        _ => {
            c.gap(
                "http[].match.port",
                "rules match several ports; one HTTPRoute attaches to one port",
                "split the VirtualService by port",
            );
            None
        }
    };
    // The migration adopts an existing object of the same name instead of creating it (engine
    // `create_planned`): an unrelated HTTPRoute named like the VirtualService would be taken for its route.
    if s.http_routes.iter().any(|r| r.name() == vs.name()) {
        c.gap(
            "metadata.name",
            format!(
                "an HTTPRoute named {} already exists and routes other Services",
                vs.name()
            ),
            "rename that HTTPRoute, or write this VirtualService's HTTPRoute by hand",
        );
    }
    if !c.gaps.is_empty() {
        return Err(c.gaps);
    }
    let parents: Vec<Value> = hosts
        .iter()
        .map(|h| {
            let mut p = json!({"group": "", "kind": "Service", "name": h});
            if let Some(port) = port {
                p["port"] = json!(port);
            }
            p
        })
        .collect();
    let route = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": vs.name(), "namespace": ns, "labels": managed_labels()},
        "spec": {"parentRefs": parents, "rules": rules}});
    Ok(Generated {
        vs: vs.obj_ref(),
        hosts,
        route,
        services: c.services.into_values().collect(),
        subset_rules: c.subset_rules.into_iter().collect(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::assess::preflight::tests::snapshot;

    /// The test namespace: Service `api` (selector app=api, port 8080), `web` (port 80), a DestinationRule
    /// with subsets v1 / v2 of api, and the VirtualService `spec` given.
    pub(crate) fn with_vs(spec: Value) -> Snapshot {
        let mut s = snapshot(vec![]);
        s.services = serde_json::from_value(json!([
            {"metadata": {"name": "api", "namespace": "app"},
             "spec": {"selector": {"app": "api"}, "ports": [{"name": "http", "port": 8080, "targetPort": 8080}]}},
            {"metadata": {"name": "web", "namespace": "app"},
             "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}},
            {"metadata": {"name": "waypoint", "namespace": "app",
                          "labels": {"gateway.networking.k8s.io/gateway-name": "waypoint"}},
             "spec": {"selector": {"gateway.networking.k8s.io/gateway-name": "waypoint"}}}
        ]))
        .unwrap();
        s.destination_rules.push(
            json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "api", "namespace": "app"},
            "spec": {"host": "api.app.svc.cluster.local", "subsets": [
                {"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]}})
            .into(),
        );
        s.virtual_services.push(
            json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "api", "namespace": "app"}, "spec": spec})
            .into(),
        );
        s
    }

    fn one(spec: Value) -> Generated {
        let s = with_vs(spec);
        translate_one(&s, &s.virtual_services[0]).unwrap_or_else(|g| panic!("{g:?}"))
    }

    fn gaps(spec: Value) -> Vec<String> {
        let s = with_vs(spec);
        translate_one(&s, &s.virtual_services[0])
            .map(|g| g.route)
            .expect_err("a gap")
            .into_iter()
            .map(|g| g.field)
            .collect()
    }

    fn rule(g: &Generated) -> &Value {
        &g.route["spec"]["rules"][0]
    }

    #[test]
    fn hosts_become_service_parent_refs_and_subsets_per_version_services() {
        let g = one(
            json!({"hosts": ["api.app.svc.cluster.local"], "http": [{"route": [
            {"destination": {"host": "api", "subset": "v1"}, "weight": 90},
            {"destination": {"host": "api", "subset": "v2"}, "weight": 10}]}]}),
        );
        assert_eq!(g.route["kind"], "HTTPRoute");
        assert_eq!(g.route["metadata"]["name"], "api");
        assert_eq!(g.route["metadata"]["labels"][ROLE], "twin");
        assert_eq!(
            g.route["spec"]["parentRefs"],
            json!([{"group": "", "kind": "Service", "name": "api"}])
        );
        assert_eq!(
            rule(&g)["backendRefs"],
            json!([{"group": "", "kind": "Service", "name": "api-v1", "port": 8080, "weight": 90},
                   {"group": "", "kind": "Service", "name": "api-v2", "port": 8080, "weight": 10}])
        );
        assert_eq!(g.services.len(), 2);
        let v1 = &g.services[0];
        assert_eq!(v1["metadata"]["name"], "api-v1");
        assert_eq!(v1["spec"]["selector"], json!({"app": "api", "version": "v1"}));
        assert_eq!(v1["spec"]["ports"][0]["port"], 8080);
        assert_eq!(
            g.subset_rules,
            vec![ObjRef::new(
                "networking.istio.io/v1",
                "DestinationRule",
                "app",
                "api"
            )]
        );
    }

    #[test]
    fn matches_uri_method_headers_query_and_port() {
        let g = one(json!({"hosts": ["api"], "http": [{"match": [
            {"uri": {"exact": "/a"}, "method": {"exact": "POST"}, "port": 8080,
             "headers": {"x-user": {"exact": "bob"}, "x-tier": {"prefix": "gold"}, "x-re": {"regex": "a+"}},
             "queryParams": {"debug": {"exact": "1"}}},
            {"uri": {"prefix": "/v2"}, "port": 8080}, {"uri": {"prefix": "/"}, "port": 8080},
            {"uri": {"regex": "/u/[0-9]+"}, "port": 8080}],
            "route": [{"destination": {"host": "api"}}]}]}));
        let ms = &rule(&g)["matches"];
        assert_eq!(ms[0]["path"], json!({"type": "Exact", "value": "/a"}));
        assert_eq!(ms[0]["method"], "POST");
        assert_eq!(
            ms[0]["headers"],
            json!([{"type": "RegularExpression", "name": "x-re", "value": "a+"},
                   {"type": "RegularExpression", "name": "x-tier", "value": "gold.*"},
                   {"type": "Exact", "name": "x-user", "value": "bob"}])
        );
        assert_eq!(
            ms[0]["queryParams"],
            json!([{"type": "Exact", "name": "debug", "value": "1"}])
        );
        assert_eq!(ms[1]["path"], json!({"type": "PathPrefix", "value": "/v2"}));
        assert_eq!(ms[2]["path"], json!({"type": "PathPrefix", "value": "/"}));
        assert_eq!(
            ms[3]["path"],
            json!({"type": "RegularExpression", "value": "/u/[0-9]+"})
        );
        assert_eq!(g.route["spec"]["parentRefs"][0]["port"], 8080);
        assert_eq!(
            rule(&g)["backendRefs"],
            json!([{"group": "", "kind": "Service", "name": "api", "port": 8080, "weight": 1}])
        );
    }

    #[test]
    fn timeouts_and_retries() {
        let g = one(json!({"hosts": ["api"], "http": [{"timeout": "3s",
            "retries": {"attempts": 3, "perTryTimeout": "500ms", "retryOn": "connect-failure,503,504"},
            "route": [{"destination": {"host": "api"}}]}]}));
        assert_eq!(
            rule(&g)["timeouts"],
            json!({"request": "3s", "backendRequest": "500ms"})
        );
        assert_eq!(rule(&g)["retry"], json!({"attempts": 3, "codes": [503, 504]}));
        assert_eq!(
            gaps(
                json!({"hosts": ["api"], "http": [{"timeout": "0.5s", "route": [{"destination": {"host": "api"}}]}]})
            ),
            vec!["http[0].timeout"]
        );
        assert_eq!(
            gaps(
                json!({"hosts": ["api"], "http": [{"retries": {"attempts": 2, "retryOn": "5xx"}, "route": [{"destination": {"host": "api"}}]}]})
            ),
            vec!["http[0].retries.retryOn"]
        );
    }

    #[test]
    fn rewrites() {
        let g = one(
            json!({"hosts": ["api"], "http": [{"match": [{"uri": {"prefix": "/old"}}],
            "rewrite": {"uri": "/new", "authority": "api.internal"}, "route": [{"destination": {"host": "api"}}]}]}),
        );
        assert_eq!(
            rule(&g)["matches"][0]["path"],
            json!({"type": "PathPrefix", "value": "/old"})
        );
        assert_eq!(
            rule(&g)["filters"],
            json!([{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}, "hostname": "api.internal"}}])
        );
        let g = one(
            json!({"hosts": ["api"], "http": [{"match": [{"uri": {"exact": "/a"}}],
            "rewrite": {"uri": "/b"}, "route": [{"destination": {"host": "api"}}]}]}),
        );
        assert_eq!(
            rule(&g)["filters"][0]["urlRewrite"]["path"],
            json!({"type": "ReplaceFullPath", "replaceFullPath": "/b"})
        );
        assert_eq!(
            gaps(
                json!({"hosts": ["api"], "http": [{"rewrite": {"uriRegexRewrite": {"match": "a", "rewrite": "b"}}, "route": [{"destination": {"host": "api"}}]}]})
            ),
            vec!["http[0].rewrite.uriRegexRewrite"]
        );
        assert_eq!(
            gaps(
                json!({"hosts": ["api"], "http": [{"rewrite": {"uri": "/x"}, "route": [{"destination": {"host": "api"}}]}]})
            ),
            vec!["http[0].rewrite.uri"]
        );
    }

    #[test]
    fn redirects() {
        let g = one(
            json!({"hosts": ["api"], "http": [{"match": [{"uri": {"exact": "/old"}}],
            "redirect": {"uri": "/new", "authority": "web", "redirectCode": 308}}]}),
        );
        assert_eq!(
            rule(&g)["filters"],
            json!([{"type": "RequestRedirect", "requestRedirect": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/new"}, "hostname": "web", "statusCode": 308}}])
        );
        assert!(rule(&g).get("backendRefs").is_none());
        assert_eq!(
            gaps(json!({"hosts": ["api"], "http": [{"redirect": {"uri": "/n", "redirectCode": 399}}]})),
            vec!["http[0].redirect.redirectCode"]
        );
    }

    #[test]
    fn header_manipulation() {
        let g = one(json!({"hosts": ["api"], "http": [{"headers": {
            "request": {"set": {"x-a": "1"}, "add": {"x-b": "2"}, "remove": ["x-c"]},
            "response": {"remove": ["server"]}}, "route": [{"destination": {"host": "api"}}]}]}));
        assert_eq!(
            rule(&g)["filters"],
            json!([{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-a", "value": "1"}], "add": [{"name": "x-b", "value": "2"}], "remove": ["x-c"]}},
                   {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"remove": ["server"]}}])
        );
        assert_eq!(
            gaps(
                json!({"hosts": ["api"], "http": [{"route": [{"destination": {"host": "api"}, "headers": {"request": {"set": {"a": "b"}}}}]}]})
            ),
            vec!["http[0].route[0].headers"]
        );
    }

    #[test]
    fn mirrors() {
        let g = one(
            json!({"hosts": ["api"], "http": [{"route": [{"destination": {"host": "api", "subset": "v1"}}],
            "mirror": {"host": "api", "subset": "v2"}, "mirrorPercentage": {"value": 12.5}}]}),
        );
        assert_eq!(
            rule(&g)["filters"],
            json!([{"type": "RequestMirror", "requestMirror": {"backendRef": {"group": "", "kind": "Service", "name": "api-v2", "port": 8080},
                    "fraction": {"numerator": 125_000, "denominator": 1_000_000}}}])
        );
        let g = one(
            json!({"hosts": ["api"], "http": [{"route": [{"destination": {"host": "api"}}],
            "mirrors": [{"destination": {"host": "web"}, "percentage": {"value": 50}}]}]}),
        );
        assert_eq!(
            rule(&g)["filters"][0]["requestMirror"],
            json!({"backendRef": {"group": "", "kind": "Service", "name": "web", "port": 80}, "percent": 50})
        );
    }

    #[test]
    fn every_unsupported_field_is_a_blocker_naming_it() {
        let route = json!([{"destination": {"host": "api"}}]);
        let cases = [
            (
                json!({"hosts": ["api"], "http": [{"fault": {"abort": {"httpStatus": 500}}, "route": route}]}),
                "http[0].fault",
            ),
            (
                json!({"hosts": ["api"], "http": [{"delegate": {"name": "other"}}]}),
                "http[0].delegate",
            ),
            (
                json!({"hosts": ["api"], "http": [{"corsPolicy": {}, "route": route}]}),
                "http[0].corsPolicy",
            ),
            (
                json!({"hosts": ["api"], "http": [{"directResponse": {"status": 200}}]}),
                "http[0].directResponse",
            ),
            (
                json!({"hosts": ["api"], "http": [{"match": [{"sourceLabels": {"app": "web"}}], "route": route}]}),
                "http[0].match[0].sourceLabels",
            ),
            (
                json!({"hosts": ["api"], "http": [{"match": [{"gateways": ["ingress"]}], "route": route}]}),
                "http[0].match[0].gateways",
            ),
            (
                json!({"hosts": ["api"], "http": [{"match": [{"withoutHeaders": {"a": {"exact": "b"}}}], "route": route}]}),
                "http[0].match[0].withoutHeaders",
            ),
            (
                json!({"hosts": ["api"], "http": [{"match": [{"method": {"regex": "G.*"}}], "route": route}]}),
                "http[0].match[0].method",
            ),
            (
                json!({"hosts": ["api"], "http": [{"match": [{"ignoreUriCase": true, "uri": {"exact": "/a"}}], "route": route}]}),
                "http[0].match[0].ignoreUriCase",
            ),
            (
                json!({"hosts": ["api"], "gateways": ["istio-system/ingress"], "http": [{"route": route}]}),
                "gateways",
            ),
            (
                json!({"hosts": ["api"], "exportTo": ["."], "http": [{"route": route}]}),
                "exportTo",
            ),
            (json!({"hosts": ["api"], "tcp": [{"route": route}]}), "tcp"),
            (
                json!({"hosts": ["payments.example.com"], "http": [{"route": route}]}),
                "hosts[0]",
            ),
            (
                json!({"hosts": ["api"], "http": [{"route": [{"destination": {"host": "api", "subset": "v9"}}]}]}),
                "http[0].route[0].destination.subset",
            ),
            (
                json!({"hosts": ["api"], "http": [{"route": [{"destination": {"host": "db.other.svc.cluster.local"}}]}]}),
                "http[0].route[0].destination.host",
            ),
            (
                json!({"hosts": ["api"], "http": [{"match": [{"port": 8080}], "route": route}, {"route": route}]}),
                "http[].match.port",
            ),
        ];
        for (spec, field) in cases {
            let s = with_vs(spec);
            let t = translate(&s, PolicyMigration::Generate);
            assert!(t.generated.is_empty(), "{field}");
            let f = t
                .findings
                .iter()
                .find(|f| f.code == codes::VS_UNSUPPORTED && f.message.contains(&format!("field {field}:")))
                .unwrap_or_else(|| panic!("no blocker for {field}: {:?}", t.findings));
            assert_eq!(f.severity, Severity::Blocker);
            assert_eq!(f.object.to_string(), "VirtualService/app/api");
            assert!(!f.fix.is_empty());
        }
    }

    #[test]
    fn translation_modes_and_step5_deletions() {
        let spec = json!({"hosts": ["api"], "http": [{"route": [{"destination": {"host": "api", "subset": "v1"}}]}]});
        let s = with_vs(spec);
        assert_eq!(translate(&s, PolicyMigration::Off), Translation::default());
        let t = translate(&s, PolicyMigration::Apply);
        let f = &t.findings[0];
        assert_eq!(
            (f.severity, f.code.as_str()),
            (Severity::Info, codes::VS_TRANSLATED)
        );
        assert!(f.fix_yaml.as_deref().unwrap().contains("kind: HTTPRoute"));
        // The subsets-only DestinationRule goes with the VirtualService.
        let del: Vec<String> = t.replaced.iter().map(ToString::to_string).collect();
        assert_eq!(del, vec!["VirtualService/app/api", "DestinationRule/app/api"]);
        // Services first, then the route.
        let kinds: Vec<String> = t
            .objects()
            .iter()
            .map(|o| o["kind"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(kinds, vec!["Service", "HTTPRoute"]);
        // A DestinationRule with a traffic policy still applies at the waypoint: kept.
        let mut s2 = s.clone();
        let mut dr = s2.destination_rules[0].raw().clone();
        dr["spec"]["trafficPolicy"] = json!({"connectionPool": {"tcp": {"maxConnections": 10}}});
        s2.destination_rules[0] = dr.into();
        let del: Vec<String> = translate(&s2, PolicyMigration::Apply)
            .replaced
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(del, vec!["VirtualService/app/api"]);
        // A host already routed by an HTTPRoute: left to the existing check, not translated.
        let mut s3 = s.clone();
        s3.http_routes.push(json!({"metadata": {"name": "r", "namespace": "app"}, "spec": {"parentRefs": [{"kind": "Service", "name": "api"}]}}).into());
        assert!(translate(&s3, PolicyMigration::Apply).generated.is_empty());
    }

    #[test]
    fn an_unrelated_httproute_with_the_same_name_is_a_blocker() {
        let mut s =
            with_vs(json!({"hosts": ["api"], "http": [{"route": [{"destination": {"host": "api"}}]}]}));
        s.http_routes.push(
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "api", "namespace": "app"},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "web"}]}})
            .into(),
        );
        let t = translate(&s, PolicyMigration::Apply);
        assert!(t.generated.is_empty());
        assert!(
            t.findings
                .iter()
                .any(|f| f.severity == Severity::Blocker && f.message.contains("field metadata.name:"))
        );
    }

    #[test]
    fn an_existing_service_with_the_version_name_is_reused_or_refused() {
        let spec = json!({"hosts": ["api"], "http": [{"route": [{"destination": {"host": "api", "subset": "v1"}}]}]});
        let mut s = with_vs(spec.clone());
        s.services.push(
            serde_json::from_value(json!({"metadata": {"name": "api-v1", "namespace": "app"},
            "spec": {"selector": {"app": "api", "version": "v1"}, "ports": [{"port": 8080}]}}))
            .unwrap(),
        );
        let g = translate_one(&s, &s.virtual_services[0]).unwrap();
        assert!(g.services.is_empty());
        s.services.last_mut().unwrap().spec.as_mut().unwrap().selector =
            Some([("app".to_string(), "other".to_string())].into());
        let gaps = translate_one(&s, &s.virtual_services[0]).unwrap_err();
        assert_eq!(gaps[0].field, "http[0].route[0].destination.subset");
    }

    #[test]
    fn regex_escape_and_durations() {
        assert_eq!(regex_escape("/a.b+(c)"), "/a\\.b\\+\\(c\\)");
        assert_eq!(gateway_duration("1h30m"), Some("1h30m".into()));
        assert_eq!(gateway_duration("250ms"), Some("250ms".into()));
        assert_eq!(gateway_duration("1.5s"), None);
        assert_eq!(gateway_duration(""), None);
        assert_eq!(dns_label("API_v1.beta"), "api-v1-beta");
    }
}
