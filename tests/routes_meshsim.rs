//! Every VirtualService feature the policy phase translates, checked by running traffic through meshsim's
//! routing model: for each request class of the VirtualService (`routing_equiv::classes`), the pods that
//! answer (and how often) and the status, before (a sidecar caller, the VirtualService and its
//! DestinationRule subsets) and after (the generated HTTPRoute and per-version Services, the
//! VirtualService and DestinationRule deleted as step 5 does), for a sidecar caller (which applies an
//! HTTPRoute attached to the Service when no VirtualService covers it) and an ambient caller (through the
//! waypoint). Fields with no HTTPRoute equivalent are blockers, tested in `assess::routes`.

use std::collections::BTreeMap;

use ambient_migrate::assess::plan::PolicyMigration;
use ambient_migrate::assess::routing_equiv::{self, Request};
use ambient_migrate::assess::{Snapshot, routes};
use meshsim::traffic::{Outcome, Source};
use serde_json::{Value, json};
use test_support::traffic::*;

const DR: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: api, namespace: app}\nspec:\n  host: api.app.svc.cluster.local\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n";

fn api_service() -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "app"},
           "spec": {"selector": {"app": "api"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
}

fn vs(spec: Value) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
           "metadata": {"name": "api", "namespace": "app"}, "spec": spec})
}

/// The namespace as the product reads it.
fn snapshot(vs: &Value) -> Snapshot {
    let dr: Value = serde_saphyr::from_str(DR).unwrap();
    serde_json::from_value(json!({
        "namespace": {"metadata": {"name": "app", "labels": {"istio-injection": "enabled"}}},
        "services": [api_service(), {"metadata": {"name": "web", "namespace": "app"},
                     "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}}],
        "virtualServices": [vs],
        "destinationRules": [dr],
    }))
    .unwrap()
}

/// api v1 + v2 (sidecars), the sidecar caller web, an ambient caller in `other`.
fn cluster(app_labels: Value) -> std::sync::Arc<meshsim::Sim> {
    let s = sim();
    namespace(&s, "app", app_labels);
    namespace(&s, "other", json!({"istio.io/dataplane-mode": "ambient"}));
    pod(
        &s,
        "app",
        "api-v1-1",
        json!({"app": "api", "version": "v1"}),
        "api",
        "sidecar",
        true,
    );
    pod(
        &s,
        "app",
        "api-v2-1",
        json!({"app": "api", "version": "v2"}),
        "api",
        "sidecar",
        true,
    );
    pod(&s, "app", "web-1", json!({"app": "web"}), "web", "sidecar", true);
    pod(
        &s,
        "other",
        "amb-1",
        json!({"app": "amb"}),
        "amb",
        "ambient",
        true,
    );
    load(&s, api_service());
    s
}

/// Before the migration: the VirtualService and its DestinationRule.
fn before_cluster(vs: &Value) -> std::sync::Arc<meshsim::Sim> {
    let s = cluster(json!({"istio-injection": "enabled"}));
    load(&s, vs.clone());
    apply_yaml(&s, DR);
    s
}

/// After step 5: the generated objects, the Services bound to a ready waypoint, no VirtualService.
fn after_cluster(generated: &[Value]) -> std::sync::Arc<meshsim::Sim> {
    let s = cluster(json!({"istio-injection": "enabled", "istio.io/use-waypoint": "waypoint"}));
    waypoint(&s, "app", "waypoint", "ready");
    for o in generated {
        load(&s, o.clone());
    }
    s
}

/// What answered a request: `<status> <pod>` (the pod from the echo body, `-` when the proxy answered).
fn answer(sim: &meshsim::Sim, source: Source, r: &Request) -> String {
    let q: Vec<String> = r.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let url = format!(
        "http://api.app.svc.cluster.local{}{}{}",
        r.path,
        if q.is_empty() { "" } else { "?" },
        q.join("&")
    );
    let headers: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let resp = send(sim, source, &r.method, &url, &headers);
    let pod = resp
        .body
        .lines()
        .find_map(|l| l.strip_prefix("Hostname="))
        .unwrap_or("-")
        .to_string();
    let status = match resp.outcome {
        Outcome::Http(c) => c.to_string(),
        other => format!("{other:?}"),
    };
    format!("{status} {pod}")
}

/// How often each answer came back over `n` requests of the class, on a fresh cluster (weights are a
/// deterministic round-robin over the request sequence: a fresh cluster starts every run at the same point).
fn distribution(
    build: &dyn Fn() -> std::sync::Arc<meshsim::Sim>,
    source: &Source,
    r: &Request,
    n: usize,
) -> BTreeMap<String, usize> {
    let sim = build();
    let mut out = BTreeMap::new();
    for _ in 0..n {
        *out.entry(answer(&sim, source.clone(), r)).or_default() += 1;
    }
    out
}

/// Translates the VirtualService, then runs every class before and after, for both caller kinds; returns
/// the classes checked. Panics on the first class whose answers differ when the product's check says they
/// do not (or the other way round).
fn same_routing(spec: Value, n: usize) -> usize {
    let vs = vs(spec);
    let snap = snapshot(&vs);
    let t = routes::translate(&snap, PolicyMigration::Apply);
    assert!(
        t.findings.iter().all(|f| f.code == routes::codes::VS_TRANSLATED),
        "{:?}",
        t.findings
    );
    let g = &t.generated[0];
    let generated = t.objects();
    let before = || before_cluster(&vs);
    let after = || after_cluster(&generated);
    let classes = routing_equiv::classes(snap.virtual_services[0].spec().unwrap(), g);
    assert!(!classes.is_empty());
    // The product's own check: only the paths PathPrefix cannot express (mid-segment, trailing slash)
    // may differ, and meshsim must show exactly those differing.
    let table = routing_equiv::check(&snap, PolicyMigration::Apply);
    assert!(
        table.differences.iter().all(|d| d.segment),
        "{:?}",
        table.differences
    );
    let flagged: Vec<&Request> = table.differences.iter().map(|d| &d.request).collect();
    println!(
        "{} classes x {n} request(s), before and for 2 callers after; {} reported as PathPrefix segment paths",
        classes.len(),
        flagged.len()
    );
    for r in &classes {
        let want = distribution(&before, &from("app", "web-1"), r, n);
        for caller in [from("app", "web-1"), from("other", "amb-1")] {
            let got = distribution(&after, &caller, r, n);
            if flagged.contains(&r) {
                assert_ne!(
                    got, want,
                    "class {r} is reported as different but routes the same"
                );
            } else {
                assert_eq!(
                    got, want,
                    "class {r} from {caller:?}: before {want:?}, after {got:?}"
                );
            }
        }
    }
    classes.len()
}

#[test]
fn subsets_and_weights_keep_their_destinations_and_shares() {
    let n = same_routing(
        json!({"hosts": ["api"], "http": [{"route": [
            {"destination": {"host": "api", "subset": "v1"}, "weight": 80},
            {"destination": {"host": "api.app.svc.cluster.local", "subset": "v2"}, "weight": 20}]}]}),
        100,
    );
    assert_eq!(n, 2);
}

#[test]
fn uri_exact_prefix_and_regex_matches() {
    same_routing(
        json!({"hosts": ["api"], "http": [
            {"match": [{"uri": {"exact": "/v2/health"}}], "route": [{"destination": {"host": "api", "subset": "v1"}}]},
            {"match": [{"uri": {"prefix": "/v2/"}}], "route": [{"destination": {"host": "api", "subset": "v2"}}]},
            {"match": [{"uri": {"regex": "/u/[0-9]+"}}], "route": [{"destination": {"host": "api", "subset": "v2"}}]}]}),
        1,
    );
}

#[test]
fn a_catch_all_after_a_regex_rule_is_caught_by_traffic_and_by_the_check() {
    // The API server gives the catch-all `PathPrefix /`, which istiod ranks above any regex: /u/0 (the
    // sample the check derives from the regex) reaches v1 after the migration instead of v2.
    let v = vs(json!({"hosts": ["api"], "http": [
        {"match": [{"uri": {"regex": "/u/[0-9]+"}}], "route": [{"destination": {"host": "api", "subset": "v2"}}]},
        {"route": [{"destination": {"host": "api", "subset": "v1"}}]}]}));
    let snap = snapshot(&v);
    let table = routing_equiv::check(&snap, PolicyMigration::Apply);
    let d = table
        .differences
        .iter()
        .find(|d| !d.segment)
        .expect("a difference");
    assert_eq!(d.request.path, "/u/0");
    let generated = routes::translate(&snap, PolicyMigration::Apply).objects();
    let (before, after) = (before_cluster(&v), after_cluster(&generated));
    assert_eq!(answer(&before, from("app", "web-1"), &d.request), "200 api-v2-1");
    assert_eq!(answer(&after, from("other", "amb-1"), &d.request), "200 api-v1-1");
}

#[test]
fn method_and_header_matches() {
    same_routing(
        json!({"hosts": ["api"], "http": [
            {"match": [{"method": {"exact": "POST"}, "headers": {"x-canary": {"exact": "1"}}}],
             "route": [{"destination": {"host": "api", "subset": "v2"}}]},
            {"match": [{"headers": {"x-tier": {"prefix": "gold"}}}], "route": [{"destination": {"host": "api", "subset": "v2"}}]},
            {"route": [{"destination": {"host": "api", "subset": "v1"}}]}]}),
        1,
    );
}

#[test]
fn query_parameter_matches() {
    same_routing(
        json!({"hosts": ["api"], "http": [
            {"match": [{"queryParams": {"debug": {"exact": "1"}}}], "route": [{"destination": {"host": "api", "subset": "v2"}}]},
            {"route": [{"destination": {"host": "api", "subset": "v1"}}]}]}),
        1,
    );
}

#[test]
fn redirects_answer_the_same() {
    same_routing(
        json!({"hosts": ["api"], "http": [
            {"match": [{"uri": {"exact": "/old"}}], "redirect": {"uri": "/new", "redirectCode": 301}},
            {"route": [{"destination": {"host": "api", "subset": "v1"}}]}]}),
        1,
    );
}

#[test]
fn port_matches_attach_to_that_port() {
    same_routing(
        json!({"hosts": ["api"], "http": [
            {"match": [{"port": 80, "uri": {"prefix": "/v2/"}}], "route": [{"destination": {"host": "api", "subset": "v2"}}]},
            {"match": [{"port": 80}], "route": [{"destination": {"host": "api", "subset": "v1"}}]}]}),
        1,
    );
}

#[test]
fn rewrites_timeouts_retries_headers_and_mirrors_keep_the_destination() {
    // These change what the request carries or how often it is tried, not where it goes: the same pods
    // answer every class before and after.
    same_routing(
        json!({"hosts": ["api"], "http": [
            {"match": [{"uri": {"prefix": "/legacy/"}}], "rewrite": {"uri": "/", "authority": "api.internal"},
             "route": [{"destination": {"host": "api", "subset": "v2"}}]},
            {"timeout": "2s", "retries": {"attempts": 3, "perTryTimeout": "500ms", "retryOn": "503"},
             "headers": {"request": {"set": {"x-migrated": "1"}}, "response": {"remove": ["server"]}},
             "mirror": {"host": "api", "subset": "v2"}, "mirrorPercentage": {"value": 10},
             "route": [{"destination": {"host": "api", "subset": "v1"}}]}]}),
        1,
    );
}

#[test]
fn a_reordering_translation_is_caught_by_traffic_and_by_the_check() {
    // The prefix rule comes first in the VirtualService, so /api/special reaches v1; istiod sorts the
    // HTTPRoute's Exact match first: v2. The product reports it, and meshsim shows it.
    let spec = json!({"hosts": ["api"], "http": [
        {"match": [{"uri": {"prefix": "/api"}}], "route": [{"destination": {"host": "api", "subset": "v1"}}]},
        {"match": [{"uri": {"exact": "/api/special"}}], "route": [{"destination": {"host": "api", "subset": "v2"}}]}]});
    let v = vs(spec);
    let snap = snapshot(&v);
    let table = routing_equiv::check(&snap, PolicyMigration::Apply);
    let real: Vec<String> = table
        .differences
        .iter()
        .filter(|d| !d.segment)
        .map(|d| d.request.to_string())
        .collect();
    assert_eq!(real, vec!["GET api/api/special"]);
    let t = routes::translate(&snap, PolicyMigration::Apply);
    let generated = t.objects();
    let r = table
        .differences
        .iter()
        .find(|d| !d.segment)
        .unwrap()
        .request
        .clone();
    let (before, after) = (before_cluster(&v), after_cluster(&generated));
    assert_eq!(answer(&before, from("app", "web-1"), &r), "200 api-v1-1");
    assert_eq!(answer(&after, from("other", "amb-1"), &r), "200 api-v2-1");
}
