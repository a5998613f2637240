//! The acceptance set of the traffic model: every case of tests/vectors/traffic-model.yaml is built as a
//! store state and sent through `traffic::handle`; result, x-request-id presence, intended decision and the wrongly-allowed /
//! wrongly-denied flags are checked. Failures are reported by case id.

use test_support::traffic as traffic_common;

use meshsim::traffic::{Outcome, Source};
use serde_json::{Value, json};
use traffic_common::*;

const VECTORS: &str = include_str!("vectors/traffic-model.yaml");

struct Expect {
    result: String,
    x_request_id: Option<bool>,
    intended: String,
}

fn build(case: &Value, policies: &Value) -> std::sync::Arc<meshsim::Sim> {
    let sim = sim();
    let bound = case["waypoint"].as_str().unwrap();
    let app_labels = if bound == "none" {
        json!({})
    } else {
        json!({"istio.io/use-waypoint": "waypoint"})
    };
    namespace(&sim, "app", app_labels);
    namespace(&sim, "other", json!({}));
    namespace(&sim, "plain", json!({}));
    let (client_ns, client_name) = case["client"]["from"].as_str().unwrap().split_once('/').unwrap();
    let client_dp = case["client"]["dataplane"].as_str().unwrap();
    let server = case["server"]["to"].as_str().unwrap();
    let server_dp = case["server"]["dataplane"].as_str().unwrap();
    let server_ready = case["server"]["ready_endpoints"].as_u64() != Some(0);
    // workloads of the setup section
    let workloads: &[(&str, &str, &[&str])] = &[
        ("app", "web", &[""]),
        ("app", "api", &["v1", "v2"]),
        ("app", "db", &[""]),
        ("other", "other", &[""]),
        ("plain", "plain", &[""]),
    ];
    for (ns, name, versions) in workloads {
        let (dp, ready) = if *name == server {
            (server_dp, server_ready)
        } else if *ns == client_ns && *name == client_name {
            (client_dp, true)
        } else {
            ("none", true)
        };
        for v in *versions {
            let mut labels = json!({"app": name});
            let pod_name = if v.is_empty() {
                format!("{name}-7c9d8-x1")
            } else {
                labels["version"] = json!(v);
                format!("{name}-{v}-7c9d8-x1")
            };
            pod(&sim, ns, &pod_name, labels, name, dp, ready);
        }
    }
    service(&sim, "app", "api", "api");
    service(&sim, "app", "db", "db");
    match bound {
        "bound-ready" => waypoint(&sim, "app", "waypoint", "ready"),
        "bound-not-ready" => waypoint(&sim, "app", "waypoint", "no-address"),
        _ => {}
    }
    for p in case["policies"].as_array().unwrap() {
        let obj = policies[p.as_str().unwrap()].clone();
        assert!(!obj.is_null(), "unknown policy {p}");
        load(&sim, obj);
    }
    sim
}

#[test]
fn every_vector_passes() {
    let file: Value = serde_saphyr::from_str(VECTORS).expect("vectors parse");
    let cases = file["cases"].as_array().expect("cases");
    assert!(cases.len() >= 21, "the file has all cases");
    let mut failures = Vec::new();
    for case in cases {
        let id = case["id"].as_str().unwrap();
        let e = &case["expect"];
        let exp = Expect {
            result: match &e["result"] {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                other => panic!("{id}: result {other}"),
            },
            x_request_id: e["x_request_id"].as_bool(),
            intended: e["intended"].as_str().unwrap().to_string(),
        };
        let sim = build(case, &file["policies"]);
        let (cns, cname) = case["client"]["from"].as_str().unwrap().split_once('/').unwrap();
        let url = format!(
            "http://{}.app.svc.cluster.local/",
            case["server"]["to"].as_str().unwrap()
        );
        let method = case["request"]["method"].as_str().unwrap();
        let r = send(&sim, from(cns, cname), method, &url, &[]);
        let got = match r.outcome {
            Outcome::Http(s) => s.to_string(),
            Outcome::Reset => "reset".into(),
            Outcome::DnsFailure => "dns".into(),
            Outcome::Refused => "refused".into(),
        };
        let mut errs = Vec::new();
        if got != exp.result {
            errs.push(format!("result {got}, want {}", exp.result));
        }
        if got == "200"
            && let Some(want) = exp.x_request_id
        {
            let has = r.header("x-request-id").is_some() && r.body.contains("RequestHeader=X-Request-Id:");
            if has != want {
                errs.push(format!("x-request-id seen by the app: {has}, want {want}"));
            }
        }
        let intended = if r.intended_allow { "allow" } else { "deny" };
        if intended != exp.intended {
            errs.push(format!("intended {intended}, want {}", exp.intended));
        }
        let no_endpoint = case["server"]["ready_endpoints"].as_u64() == Some(0);
        let want_wa = exp.intended == "deny" && exp.result == "200";
        let want_wd = exp.intended == "allow" && exp.result != "200" && !no_endpoint;
        if r.wrongly_allowed != want_wa || r.wrongly_denied != want_wd {
            errs.push(format!(
                "wrongly_allowed {} (want {want_wa}), wrongly_denied {} (want {want_wd})",
                r.wrongly_allowed, r.wrongly_denied
            ));
        }
        if got == "403" && r.body != "RBAC: access denied" {
            errs.push(format!("403 body {:?}", r.body));
        }
        if !errs.is_empty() {
            failures.push(format!(
                "{id} ({}): {} [enforcement {:?}, body {:?}]",
                case["title"].as_str().unwrap_or(""),
                errs.join("; "),
                r.enforcement,
                r.body.lines().next().unwrap_or("")
            ));
        }
        // counters saw exactly this request
        let c = sim.traffic.snapshot();
        assert_eq!(c["total"], 1, "{id}");
        assert_eq!(c["wrongly_allowed"], json!(r.wrongly_allowed as u64), "{id}");
    }
    assert!(failures.is_empty(), "failing vectors:\n{}", failures.join("\n"));
}

/// The policy of vector V15 with a port next to its method: upstream makes it deny more than asked: the `to` operation keeps an L4 field
/// (the port), so the clause survives the translation without its method, and every request from
/// namespace `other` is refused, not only DELETE [ztun].
#[test]
fn mixed_deny_with_a_port_denies_more_than_asked() {
    let sim = sim();
    namespace(&sim, "app", json!({}));
    namespace(&sim, "other", json!({}));
    pod(
        &sim,
        "app",
        "api-v1-1",
        json!({"app": "api"}),
        "api",
        "ambient",
        true,
    );
    pod(
        &sim,
        "other",
        "other-1",
        json!({"app": "other"}),
        "other",
        "ambient",
        true,
    );
    pod(
        &sim,
        "app",
        "web-1",
        json!({"app": "web"}),
        "web",
        "ambient",
        true,
    );
    service(&sim, "app", "api", "api");
    apply_yaml(
        &sim,
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: api-other-no-delete, namespace: app}\nspec:\n  selector: {matchLabels: {app: api}}\n  action: DENY\n  rules:\n  - from: [{source: {namespaces: [other]}}]\n    to: [{operation: {methods: [DELETE], ports: [\"8080\"]}}]\n",
    );
    let r = send(
        &sim,
        from("other", "other"),
        "GET",
        "http://api.app.svc.cluster.local/",
        &[],
    );
    assert_eq!(r.outcome, Outcome::Reset);
    assert!(r.intended_allow && r.wrongly_denied);
    let r = send(
        &sim,
        from("app", "web"),
        "GET",
        "http://api.app.svc.cluster.local/",
        &[],
    );
    assert_eq!(r.outcome, Outcome::Http(200));
    let r = send(
        &sim,
        Source::External,
        "DELETE",
        "http://api.app.svc.cluster.local/",
        &[],
    );
    assert_eq!(
        r.outcome,
        Outcome::Http(200),
        "plaintext has no namespace: the DENY does not match"
    );
}
