//! What a rehearsal sends and how it is judged: the caller-to-Service paths derived from a fleet's
//! objects (policies, routes, probes), and the per-path traffic table built from the answers.
//!
//! A rehearsal copies the fleet into a simulated cluster and runs the real pipeline against it under
//! continuous traffic on these paths. Which requests are legitimate is decided once, before the migration
//! starts, from the simulated data plane's own evaluation of the policies with the real caller identity
//! (`docs/design.md` §8 on enforcement equivalence): a legitimate request that is later refused is a
//! failure, an illegitimate one that later reaches the application is a leak.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::assess::objects::{Obj, VirtualService, converted};
use crate::assess::policy::{Attachment, AuthzPolicy};
use crate::probes::spec::{ProbeKind, ProbeSpec};

/// One caller-to-Service path of synthetic traffic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CallPath {
    /// The calling workload as `namespace/name` (a Deployment, StatefulSet or DaemonSet); `None` for a
    /// caller outside the mesh (the runner's own HTTP probes).
    pub caller: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Full URL, e.g. `http://api.store.svc.cluster.local/`.
    pub url: String,
    /// The destination as `namespace/host` (host is the Service name, or a VirtualService host).
    pub destination: String,
    /// Why the path is exercised: `namespace`, `policy`, `policy-method`, `route`, `probe`.
    pub reason: String,
}

impl CallPath {
    /// `front/web GET` (or `external GET`): the caller side of the table row.
    pub fn caller_label(&self) -> String {
        format!("{} {}", self.caller.as_deref().unwrap_or("external"), self.method)
    }
}

/// A workload as the path derivation sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Workload {
    namespace: String,
    name: String,
    service_account: String,
    labels: BTreeMap<String, String>,
}

/// A Service as the path derivation sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Svc {
    namespace: String,
    name: String,
    selector: BTreeMap<String, String>,
    port: Option<i64>,
}

impl Svc {
    fn url(&self) -> String {
        match self.port {
            Some(p) if p != 80 => format!("http://{}.{}.svc.cluster.local:{p}/", self.name, self.namespace),
            _ => format!("http://{}.{}.svc.cluster.local/", self.name, self.namespace),
        }
    }

    fn selects(&self, w: &Workload) -> bool {
        w.namespace == self.namespace
            && !self.selector.is_empty()
            && self.selector.iter().all(|(k, v)| w.labels.get(k) == Some(v))
    }
}

fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn meta<'a>(o: &'a Value, field: &str) -> &'a str {
    o["metadata"][field].as_str().unwrap_or("")
}

fn workloads(objects: &[Value]) -> Vec<Workload> {
    objects
        .iter()
        .filter(|o| {
            matches!(
                o["kind"].as_str(),
                Some("Deployment" | "StatefulSet" | "DaemonSet")
            )
        })
        .map(|o| {
            let pod = &o["spec"]["template"];
            Workload {
                namespace: meta(o, "namespace").to_string(),
                name: meta(o, "name").to_string(),
                service_account: pod["spec"]["serviceAccountName"]
                    .as_str()
                    .unwrap_or("default")
                    .to_string(),
                labels: str_map(&pod["metadata"]["labels"]),
            }
        })
        .collect()
}

fn services(objects: &[Value]) -> Vec<Svc> {
    objects
        .iter()
        .filter(|o| o["kind"] == "Service")
        .map(|o| Svc {
            namespace: meta(o, "namespace").to_string(),
            name: meta(o, "name").to_string(),
            selector: str_map(&o["spec"]["selector"]),
            port: o["spec"]["ports"][0]["port"].as_i64(),
        })
        .collect()
}

/// The Services an AuthorizationPolicy protects: by `targetRefs` (Service names), by `selector` (Services
/// whose pods carry the selected labels), or every Service of its namespace when it has neither.
fn protected<'a>(ap: &AuthzPolicy, svcs: &'a [Svc], wls: &[Workload]) -> Vec<&'a Svc> {
    let ns = ap.namespace.as_str();
    let in_ns = svcs.iter().filter(move |s| s.namespace == ns);
    if let Attachment::TargetRefs { refs } = &ap.attachment {
        let services: BTreeSet<&str> = refs
            .iter()
            .filter(|r| r.kind == "Service")
            .map(|r| r.name.as_str())
            .collect();
        if !services.is_empty() {
            return in_ns.filter(|s| services.contains(s.name.as_str())).collect();
        }
    }
    let selector = ap.selector().unwrap_or_default();
    if selector.is_empty() {
        return in_ns.collect();
    }
    let selected: Vec<&Workload> = wls
        .iter()
        .filter(|w| w.namespace == ns && selector.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
        .collect();
    in_ns.filter(|s| selected.iter().any(|w| s.selects(w))).collect()
}

/// The workloads a rule's `from` names: by principal (`<trust domain>/ns/<ns>/sa/<sa>`) or by namespace
/// (the first workload of it, so that a namespace-wide admission is exercised once).
fn named_callers<'a>(rule: &Value, wls: &'a [Workload]) -> (Vec<&'a Workload>, BTreeSet<String>) {
    let mut callers = Vec::new();
    let mut namespaces = BTreeSet::new();
    for from in rule["from"].as_array().into_iter().flatten() {
        let source = &from["source"];
        for p in source["principals"].as_array().into_iter().flatten() {
            let Some(p) = p.as_str() else { continue };
            let parts: Vec<&str> = p.split('/').collect();
            if let [_, "ns", ns, "sa", sa] = parts.as_slice() {
                namespaces.insert(ns.to_string());
                callers.extend(
                    wls.iter()
                        .filter(|w| w.namespace == *ns && w.service_account == *sa),
                );
            }
        }
        for ns in source["namespaces"].as_array().into_iter().flatten() {
            let Some(ns) = ns.as_str() else { continue };
            namespaces.insert(ns.to_string());
            callers.extend(wls.iter().find(|w| w.namespace == ns));
        }
    }
    (callers, namespaces)
}

/// A method outside a rule's `to.operation.methods` (to exercise L7 enforcement), when the rule lists any.
fn other_method(rule: &Value) -> Option<(String, String)> {
    let methods: Vec<&str> = rule["to"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["operation"]["methods"].as_array())
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let first = methods.first()?;
    let other = ["DELETE", "POST", "PUT"]
        .into_iter()
        .find(|m| !methods.contains(m))?;
    Some((first.to_string(), other.to_string()))
}

/// The caller-to-Service paths of a fleet, deduplicated and sorted.
///
/// - every workload of a fleet namespace calls every Service of its namespace that does not select it;
/// - each AuthorizationPolicy rule's named callers (principals, namespaces) call the Services it protects,
///   with the first method it allows and, when it restricts methods, one it does not (the L7 check); one
///   other workload of each named caller namespace calls them too (the caller the rule does not admit);
/// - each workload of a VirtualService's namespace calls each of its hosts;
/// - each probe's caller (a Job probe's service account, or the runner) calls the probe's URL.
///
/// `objects` are plain Kubernetes objects (namespaces, workloads, Services, Istio objects); `fleet` the
/// namespaces being migrated; `probes` the run's probes.
pub fn derive_paths(objects: &[Value], fleet: &[String], probes: &[ProbeSpec]) -> Vec<CallPath> {
    let wls = workloads(objects);
    let svcs = services(objects);
    let in_fleet = |ns: &str| fleet.iter().any(|f| f == ns);
    let wl_id = |w: &Workload| format!("{}/{}", w.namespace, w.name);
    let mut out = BTreeSet::new();
    let mut add = |caller: Option<String>, method: &str, url: String, destination: String, reason: &str| {
        out.insert(CallPath {
            caller,
            method: method.to_string(),
            url,
            destination,
            reason: reason.to_string(),
        });
    };
    let dest = |s: &Svc| format!("{}/{}", s.namespace, s.name);
    for w in wls.iter().filter(|w| in_fleet(&w.namespace)) {
        for s in svcs
            .iter()
            .filter(|s| s.namespace == w.namespace && !s.selects(w))
        {
            add(Some(wl_id(w)), "GET", s.url(), dest(s), "namespace");
        }
    }
    // Istio objects are converted here, where the fleet's objects come in; one that does not convert adds no
    // path (the rehearsal's preflight blocks its namespace, naming the object and the field).
    let policies: Vec<Obj<AuthzPolicy>> = objects
        .iter()
        .filter(|o| o["kind"] == "AuthorizationPolicy" && in_fleet(meta(o, "namespace")))
        .map(|o| Obj::from(o.clone()))
        .collect();
    for (_, ap) in converted(&policies) {
        let targets = protected(ap, &svcs, &wls);
        for rule in &ap.rules {
            let (callers, namespaces) = named_callers(rule, &wls);
            let methods = other_method(rule);
            let allowed_method = methods.as_ref().map_or("GET", |(m, _)| m.as_str());
            // One workload per named namespace that the rule does not name and that is not behind a
            // protected Service itself (a workload calling its own Service says nothing about callers).
            let outsiders = namespaces.iter().filter_map(|ns| {
                wls.iter().find(|w| {
                    &w.namespace == ns && !callers.contains(w) && !targets.iter().any(|s| s.selects(w))
                })
            });
            for s in &targets {
                for c in &callers {
                    add(Some(wl_id(c)), allowed_method, s.url(), dest(s), "policy");
                    if let Some((_, other)) = &methods {
                        add(Some(wl_id(c)), other, s.url(), dest(s), "policy-method");
                    }
                }
                for o in outsiders.clone() {
                    add(Some(wl_id(o)), allowed_method, s.url(), dest(s), "policy");
                }
            }
        }
    }
    let routes: Vec<Obj<VirtualService>> = objects
        .iter()
        .filter(|o| o["kind"] == "VirtualService" && in_fleet(meta(o, "namespace")))
        .map(|o| Obj::from(o.clone()))
        .collect();
    for (vs, spec) in converted(&routes) {
        let ns = vs.namespace();
        for host in &spec.hosts {
            if host.contains('*') {
                continue;
            }
            let short = host.split('.').next().unwrap_or(host);
            for w in wls.iter().filter(|w| w.namespace == ns) {
                add(
                    Some(wl_id(w)),
                    "GET",
                    format!("http://{host}/"),
                    format!("{ns}/{short}"),
                    "route",
                );
            }
        }
    }
    for p in probes {
        let (caller, method, url) = match &p.kind {
            ProbeKind::Http(h) => (None, h.method.as_str(), h.url.as_str()),
            ProbeKind::Job(j) => {
                let w = wls
                    .iter()
                    .find(|w| w.namespace == j.source_namespace && w.service_account == j.service_account);
                let Some(w) = w else { continue };
                (Some(wl_id(w)), j.method.as_str(), j.url.as_str())
            }
        };
        if let Some(d) = destination_of(url) {
            add(caller, method, url.to_string(), d, "probe");
        }
    }
    // Several reasons can yield the same request: keep one (the first in sort order).
    let mut seen = BTreeSet::new();
    out.into_iter()
        .filter(|p| seen.insert((p.caller.clone(), p.method.clone(), p.url.clone())))
        .collect()
}

/// `namespace/service` of a cluster-local URL (`http://svc.ns.svc.cluster.local[:port]/...`, `svc.ns`).
fn destination_of(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', ':', '?']).next()?;
    let mut parts = host.split('.');
    let svc = parts.next()?;
    let ns = parts.next()?;
    Some(format!("{ns}/{svc}"))
}

/// What the traffic of one path did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathStats {
    /// Requests sent.
    pub sent: u64,
    /// Requests that reached the application with a 2xx.
    pub allowed: u64,
    /// Requests refused (policy, data-plane gap) or failed (no endpoint, reset).
    pub denied: u64,
    /// Illegitimate requests that reached the application: a leak.
    pub wrongly_allowed: u64,
    /// Legitimate requests refused or failed: an outage.
    pub wrongly_denied: u64,
    /// Requests sent while the caller had no mesh identity (its pod was being replaced): judged by
    /// neither rule, counted apart.
    pub no_identity: u64,
    /// First and last wrong request, in ms since the rehearsal's traffic started.
    pub window_ms: Option<(u64, u64)>,
}

/// One row of the traffic table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRow {
    pub path: CallPath,
    /// Whether the policies admit this caller (decided before the migration started).
    pub legitimate: bool,
    pub stats: PathStats,
}

/// One answer, as the traffic generator saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Since the traffic started.
    pub at_ms: u64,
    /// The application answered 2xx.
    pub allowed: bool,
    /// The policies, evaluated in full with the caller's identity at that instant, admit the request.
    pub intended_allow: bool,
}

/// The traffic of a rehearsal (or of the demo), per path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficTable {
    pub rows: Vec<PathRow>,
}

impl TrafficTable {
    /// A table for `paths` with their legitimacy (from a request each before the migration).
    pub fn new(paths: Vec<(CallPath, bool)>) -> Self {
        TrafficTable {
            rows: paths
                .into_iter()
                .map(|(path, legitimate)| PathRow {
                    path,
                    legitimate,
                    stats: PathStats::default(),
                })
                .collect(),
        }
    }

    /// Counts one answer on row `i`.
    pub fn record(&mut self, i: usize, o: Observation) {
        let Some(row) = self.rows.get_mut(i) else { return };
        let s = &mut row.stats;
        s.sent += 1;
        if o.allowed {
            s.allowed += 1;
        } else {
            s.denied += 1;
        }
        if o.intended_allow != row.legitimate {
            // The caller's identity differs from the one the legitimacy was decided with (a replaced pod
            // not yet enrolled): not a policy outcome.
            s.no_identity += 1;
            return;
        }
        let wrong = if row.legitimate {
            s.wrongly_denied += u64::from(!o.allowed);
            !o.allowed
        } else {
            s.wrongly_allowed += u64::from(o.allowed);
            o.allowed
        };
        if wrong {
            s.window_ms = Some(match s.window_ms {
                None => (o.at_ms, o.at_ms),
                Some((a, _)) => (a, o.at_ms),
            });
        }
    }

    /// Leaked illegitimate requests, all paths.
    pub fn wrongly_allowed(&self) -> u64 {
        self.rows.iter().map(|r| r.stats.wrongly_allowed).sum()
    }

    /// Failed legitimate requests, all paths.
    pub fn wrongly_denied(&self) -> u64 {
        self.rows.iter().map(|r| r.stats.wrongly_denied).sum()
    }

    /// Requests sent, all paths.
    pub fn sent(&self) -> u64 {
        self.rows.iter().map(|r| r.stats.sent).sum()
    }

    /// Rows sorted by destination then caller, for display.
    fn sorted(&self) -> Vec<&PathRow> {
        let mut rows: Vec<&PathRow> = self.rows.iter().collect();
        rows.sort_by(|a, b| {
            (&a.path.destination, a.path.caller_label()).cmp(&(&b.path.destination, b.path.caller_label()))
        });
        rows
    }

    /// The rows as display cells (destination, path, expected, sent, allowed, denied, wrongly allowed,
    /// wrongly denied, window).
    fn cells(&self) -> Vec<[String; 9]> {
        self.sorted()
            .into_iter()
            .map(|r| {
                let s = &r.stats;
                [
                    r.path.destination.clone(),
                    r.path.caller_label(),
                    if r.legitimate { "allow" } else { "deny" }.to_string(),
                    s.sent.to_string(),
                    s.allowed.to_string(),
                    s.denied.to_string(),
                    s.wrongly_allowed.to_string(),
                    s.wrongly_denied.to_string(),
                    window_text(s.window_ms),
                ]
            })
            .collect()
    }

    /// A fixed-width text table, one line per path, grouped by destination.
    pub fn text(&self) -> String {
        let mut rows = vec![HEADERS.map(str::to_string)];
        rows.extend(self.cells());
        let widths: Vec<usize> = (0..HEADERS.len())
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut t = String::new();
        let mut last_dest = String::new();
        for (i, r) in rows.iter().enumerate() {
            // The destination is printed once per group.
            let dest = if i > 0 && r[0] == last_dest {
                ""
            } else {
                r[0].as_str()
            };
            last_dest = r[0].clone();
            let mut line = String::new();
            for (c, cell) in r.iter().enumerate() {
                let cell = if c == 0 { dest } else { cell.as_str() };
                if c < 3 {
                    line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
                } else {
                    line.push_str(&format!("{cell:>w$}  ", w = widths[c]));
                }
            }
            t.push_str(line.trim_end());
            t.push('\n');
        }
        t
    }

    /// The same table in Markdown.
    pub fn markdown(&self) -> String {
        let mut t = format!("| {} |\n", HEADERS.join(" | "));
        t.push_str(&format!("|{}\n", "---|".repeat(HEADERS.len())));
        for r in self.cells() {
            let escaped: Vec<String> = r.iter().map(|c| c.replace('|', "\\|")).collect();
            t.push_str(&format!("| {} |\n", escaped.join(" | ")));
        }
        t
    }
}

const HEADERS: [&str; 9] = [
    "destination",
    "path",
    "expect",
    "sent",
    "allowed",
    "denied",
    "wrongly allowed",
    "wrongly denied",
    "window",
];

/// `12.3s-14.1s`, or `-` when nothing went wrong.
fn window_text(w: Option<(u64, u64)>) -> String {
    match w {
        None => "-".into(),
        Some((a, b)) => format!("{:.1}s-{:.1}s", a as f64 / 1000.0, b as f64 / 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(docs: &str) -> Vec<Value> {
        serde_saphyr::from_multiple(docs).unwrap()
    }

    fn app(ns: &str, name: &str) -> String {
        format!(
            "---\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{serviceAccountName: {name}}}\n---\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{selector: {{app: {name}}}, ports: [{{port: 80}}]}}\n"
        )
    }

    fn fleet() -> Vec<Value> {
        let mut y =
            app("front", "web") + &app("front", "other") + &app("store", "api") + &app("store", "web");
        y.push_str(
            "---\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: store}\nspec:\n  selector: {matchLabels: {app: api}}\n  action: ALLOW\n  rules:\n  - from: [{source: {principals: [cluster.local/ns/front/sa/web]}}]\n    to: [{operation: {methods: [GET]}}]\n",
        );
        yaml(&y)
    }

    fn labels(paths: &[CallPath]) -> Vec<String> {
        paths
            .iter()
            .map(|p| format!("{} -> {} ({})", p.caller_label(), p.destination, p.reason))
            .collect()
    }

    #[test]
    fn paths_cover_namespace_policy_callers_outsiders_and_other_methods() {
        let fleet_ns = vec!["front".to_string(), "store".to_string()];
        let got = labels(&derive_paths(&fleet(), &fleet_ns, &[]));
        for want in [
            "front/web GET -> front/other (namespace)",
            "front/other GET -> front/web (namespace)",
            "store/web GET -> store/api (namespace)",
            "store/api GET -> store/web (namespace)",
            "front/web GET -> store/api (policy)",
            "front/web DELETE -> store/api (policy-method)",
            "front/other GET -> store/api (policy)",
        ] {
            assert!(got.contains(&want.to_string()), "{want} missing from {got:#?}");
        }
        assert_eq!(got.len(), 7, "{got:#?}");
        assert!(
            !got.iter().any(|p| p.starts_with("store/api GET -> store/api")),
            "no workload calls its own Service: {got:#?}"
        );
    }

    #[test]
    fn namespaces_outside_the_fleet_send_only_what_policies_name() {
        let got = labels(&derive_paths(&fleet(), &["store".to_string()], &[]));
        assert!(!got.iter().any(|p| p.contains("-> front/")), "{got:#?}");
        assert!(got.contains(&"front/web GET -> store/api (policy)".to_string()));
    }

    #[test]
    fn probes_and_routes_add_paths() {
        let mut objs = fleet();
        objs.extend(yaml(
            "kind: VirtualService\nmetadata: {name: r, namespace: store}\nspec: {hosts: [api-alias], http: [{route: [{destination: {host: api}}]}]}\n",
        ));
        let probes: Vec<ProbeSpec> = serde_json::from_value(serde_json::json!([
            {"name": "ext", "kind": "http", "url": "http://web.front.svc.cluster.local/healthz"},
            {"name": "job", "kind": "job", "source_namespace": "front", "service_account": "other",
             "url": "http://api.store.svc.cluster.local/", "method": "POST"}
        ]))
        .unwrap();
        let got = labels(&derive_paths(&objs, &["store".to_string()], &probes));
        for want in [
            "store/web GET -> store/api-alias (route)",
            "external GET -> front/web (probe)",
            "front/other POST -> store/api (probe)",
        ] {
            assert!(got.contains(&want.to_string()), "{want} missing from {got:#?}");
        }
    }

    fn path(dest: &str) -> CallPath {
        CallPath {
            caller: Some("a/b".into()),
            method: "GET".into(),
            url: format!("http://{dest}/"),
            destination: dest.into(),
            reason: "namespace".into(),
        }
    }

    #[test]
    fn table_counts_leaks_failures_windows_and_unjudged_requests() {
        let mut t = TrafficTable::new(vec![(path("x/legit"), true), (path("x/secret"), false)]);
        let obs = |at_ms, allowed, intended_allow| Observation {
            at_ms,
            allowed,
            intended_allow,
        };
        t.record(0, obs(100, true, true));
        t.record(0, obs(200, false, true));
        t.record(0, obs(300, false, true));
        t.record(0, obs(400, false, false)); // no identity: not judged
        t.record(1, obs(150, false, false));
        t.record(1, obs(1250, true, false));
        assert_eq!(t.wrongly_denied(), 2);
        assert_eq!(t.wrongly_allowed(), 1);
        assert_eq!(t.sent(), 6);
        assert_eq!(t.rows[0].stats.window_ms, Some((200, 300)));
        assert_eq!(t.rows[0].stats.no_identity, 1);
        assert_eq!(t.rows[0].stats.denied, 3);
        let text = t.text();
        assert!(text.lines().next().unwrap().starts_with("destination"), "{text}");
        assert!(text.contains("0.2s-0.3s") && text.contains("1.2s-1.2s"), "{text}");
        let md = t.markdown();
        assert_eq!(md.lines().count(), 4, "{md}");
        assert!(
            md.contains("| x/secret | a/b GET | deny | 2 | 1 | 1 | 1 | 0 | 1.2s-1.2s |"),
            "{md}"
        );
    }
}
