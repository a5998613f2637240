//! Traffic-model rules not covered by the vectors: routing (VirtualService on sidecar clients, HTTPRoute
//! at the waypoint), service-errors, DNS, endpoints, ztunnel-down, STRICT at a sidecar, counters, and
//! the seed's warning: steps applied out of order show up as unenforced or failed requests.

use test_support::traffic as traffic_common;

use meshsim::traffic::{Outcome, Source};
use meshsim::{FaultKind, FaultSpec};
use serde_json::json;
use traffic_common::*;

const API: &str = "http://api.app.svc.cluster.local/";

/// app: api v1+v2 (`dp`), web (`dp`); other: other (`dp`).
fn cluster(dp: &str) -> std::sync::Arc<meshsim::Sim> {
    let s = sim();
    namespace(&s, "app", json!({}));
    namespace(&s, "other", json!({}));
    pod(
        &s,
        "app",
        "api-v1-1",
        json!({"app": "api", "version": "v1"}),
        "api",
        dp,
        true,
    );
    pod(
        &s,
        "app",
        "api-v2-1",
        json!({"app": "api", "version": "v2"}),
        "api",
        dp,
        true,
    );
    pod(&s, "app", "web-1", json!({"app": "web"}), "web", dp, true);
    pod(&s, "other", "other-1", json!({"app": "other"}), "other", dp, true);
    service(&s, "app", "api", "api");
    s
}

const P: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: api-allow-web-get, namespace: app}\nspec:\n  selector: {matchLabels: {app: api}}\n  action: ALLOW\n  rules:\n  - from: [{source: {principals: [\"cluster.local/ns/app/sa/web\"]}}]\n    to: [{operation: {methods: [\"GET\"]}}]\n";
const T: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: api-allow-web-get-waypoint, namespace: app}\nspec:\n  targetRefs: [{kind: Service, group: \"\", name: api}]\n  action: ALLOW\n  rules:\n  - from: [{source: {principals: [\"cluster.local/ns/app/sa/web\"]}}]\n    to: [{operation: {methods: [\"GET\"]}}]\n";

fn version(body: &str) -> &str {
    body.lines()
        .find_map(|l| l.strip_prefix("ServiceVersion="))
        .unwrap_or("")
}

#[test]
fn sidecar_client_applies_virtual_service_subsets_and_faults() {
    // istio.io virtual-service / destination-rule reference: match on headers/uri, subsets by labels.
    let s = cluster("sidecar");
    apply_yaml(
        &s,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api, namespace: app}\nspec:\n  hosts: [api]\n  http:\n  - match: [{headers: {x-canary: {exact: \"yes\"}}}]\n    route: [{destination: {host: api, subset: v2}}]\n  - match: [{uri: {prefix: /teapot}}]\n    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}\n    route: [{destination: {host: api, subset: v1}}]\n  - route: [{destination: {host: api.app.svc.cluster.local, subset: v1}}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: api, namespace: app}\nspec:\n  host: api\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n",
    );
    for _ in 0..4 {
        let r = send(&s, from("app", "web"), "GET", API, &[("x-canary", "yes")]);
        assert_eq!(r.outcome, Outcome::Http(200));
        assert_eq!(version(&r.body), "v2", "{}", r.body);
        let r = send(&s, from("app", "web"), "GET", API, &[]);
        assert_eq!(version(&r.body), "v1");
    }
    let r = send(
        &s,
        from("app", "web"),
        "GET",
        "http://api.app.svc.cluster.local/teapot",
        &[],
    );
    assert_eq!(r.outcome, Outcome::Http(418));
    assert!(!r.wrongly_denied, "a fault abort is not a policy denial");
    // Ambient and un-meshed callers have no Envoy: no VirtualService, both versions answer.
    let s2 = cluster("ambient");
    apply_yaml(
        &s2,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api, namespace: app}\nspec:\n  hosts: [api]\n  http:\n  - route: [{destination: {host: api, subset: v1}}]\n",
    );
    let versions: std::collections::BTreeSet<String> = (0..4)
        .map(|_| version(&send(&s2, from("app", "web"), "GET", API, &[]).body).to_string())
        .collect();
    assert_eq!(versions.len(), 2, "round robin over both versions: {versions:?}");
    // A subset without DestinationRule: Envoy has no such cluster.
    let s3 = cluster("sidecar");
    apply_yaml(
        &s3,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api, namespace: app}\nspec:\n  hosts: [api]\n  http:\n  - route: [{destination: {host: api, subset: v9}}]\n",
    );
    let r = send(&s3, from("app", "web"), "GET", API, &[]);
    assert_eq!(r.outcome, Outcome::Http(503));
    assert_eq!(r.body, "no healthy upstream");
}

#[test]
fn waypoint_applies_http_route_and_target_ref_policies_with_the_caller_identity() {
    let s = cluster("ambient");
    namespace(&s, "app", json!({"istio.io/use-waypoint": "waypoint"}));
    waypoint(&s, "app", "waypoint", "ready");
    load(
        &s,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api-v2", "namespace": "app"},
               "spec": {"selector": {"app": "api", "version": "v2"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
    );
    apply_yaml(
        &s,
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: api, namespace: app}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: api, port: 80}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /v2}}]\n    backendRefs: [{name: api-v2, port: 80}]\n  - backendRefs: [{name: api, port: 80}]\n",
    );
    apply_yaml(&s, T);
    for _ in 0..3 {
        let r = send(
            &s,
            from("app", "web"),
            "GET",
            "http://api.app.svc.cluster.local/v2/items",
            &[],
        );
        assert_eq!(r.outcome, Outcome::Http(200));
        assert_eq!(version(&r.body), "v2");
        assert_eq!(r.enforcement, vec!["waypoint", "ztunnel"]);
        assert!(
            r.body.contains("RequestHeader=X-Request-Id:"),
            "the waypoint is an Envoy [env]"
        );
    }
    // The twin denies by the caller's identity at the waypoint.
    let r = send(&s, from("other", "other"), "GET", API, &[]);
    assert_eq!(r.outcome, Outcome::Http(403));
    assert_eq!(r.body, "RBAC: access denied");
    assert_eq!(r.enforcement, vec!["waypoint"]);
    assert!(!r.intended_allow && !r.wrongly_allowed);
    // `istio.io/use-waypoint: none` on the Service opts out: direct, twin skipped (security gap).
    load(
        &s,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "app", "labels": {"istio.io/use-waypoint": "none"}},
               "spec": {"selector": {"app": "api"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
    );
    let r = send(&s, from("other", "other"), "GET", API, &[]);
    assert_eq!(r.outcome, Outcome::Http(200));
    assert_eq!(r.enforcement, vec!["ztunnel"]);
    assert!(r.wrongly_allowed);
}

#[test]
fn waypoint_with_address_but_no_ready_pod_is_unreachable() {
    let s = cluster("ambient");
    namespace(&s, "app", json!({"istio.io/use-waypoint": "waypoint"}));
    waypoint(&s, "app", "waypoint", "no-pod");
    let r = send(&s, from("app", "web"), "GET", API, &[]);
    assert_eq!(r.outcome, Outcome::Reset);
    assert!(r.wrongly_denied);
}

#[test]
fn service_errors_fault_makes_the_app_answer_its_status() {
    let s = cluster("sidecar");
    let mut f = FaultSpec::new(FaultKind::ServiceErrors, Some("app"));
    f.service = Some("api".into());
    f.status = Some(500);
    s.faults.add(f);
    let r = send(&s, from("app", "web"), "GET", API, &[]);
    assert_eq!(r.outcome, Outcome::Http(500));
    assert!(r.header("x-request-id").is_some(), "the app still echoes the id");
    assert!(!r.wrongly_denied && !r.wrongly_allowed, "an app error is neither");
    let c = s.traffic.snapshot();
    assert_eq!(c["allowed"], 1, "the app was reached: {c}");
    assert_eq!(c["by_destination"]["app/api"]["by_outcome"]["500"], 1);
    // Default status 503, other services unaffected.
    let mut f = FaultSpec::new(FaultKind::ServiceErrors, Some("app"));
    f.id = Some("db".into());
    f.service = Some("db".into());
    s.faults.add(f);
    service(&s, "app", "db", "api");
    assert_eq!(
        send(&s, from("app", "web"), "GET", "http://db.app/", &[]).outcome,
        Outcome::Http(503)
    );
}

#[test]
fn names_resolve_like_cluster_dns_and_unknown_hosts_fail() {
    let s = cluster("none");
    for url in [
        "http://api/",
        "http://api.app/",
        "http://api.app.svc/",
        API,
        "api.app.svc.cluster.local:80/x",
    ] {
        assert_eq!(
            send(&s, from("app", "web"), "GET", url, &[]).outcome,
            Outcome::Http(200),
            "{url}"
        );
    }
    assert_eq!(
        send(&s, from("other", "other"), "GET", "http://api/", &[]).outcome,
        Outcome::DnsFailure
    );
    assert_eq!(
        send(&s, Source::External, "GET", "http://api/", &[]).outcome,
        Outcome::DnsFailure
    );
    assert_eq!(
        send(&s, Source::External, "GET", "http://nope.app/", &[]).outcome,
        Outcome::DnsFailure
    );
    assert_eq!(
        send(&s, Source::External, "GET", "http://example.com/", &[]).outcome,
        Outcome::DnsFailure
    );
    assert_eq!(
        send(&s, Source::External, "GET", "http://api.app:9999/", &[]).outcome,
        Outcome::Refused
    );
    let r = send(
        &s,
        Source::External,
        "GET",
        "http://api.app/p?q=1",
        &[("X-Trace", "t1")],
    );
    assert!(
        r.body.contains("URL=/p?q=1") && r.body.contains("RequestHeader=X-Trace:t1"),
        "{}",
        r.body
    );
    assert!(r.body.contains("Hostname=api-v"), "{}", r.body);
    assert!(r.header("x-request-id").is_none(), "no Envoy on the path");
    let c = s.traffic.snapshot();
    assert_eq!(c["by_outcome"]["dns"], 4, "{c}");
    assert_eq!(c["errors"], 5);
}

#[test]
fn no_ready_endpoint_without_an_envoy_is_refused_or_reset() {
    let s = sim();
    namespace(&s, "app", json!({}));
    pod(&s, "app", "api-1", json!({"app": "api"}), "api", "none", false);
    pod(&s, "app", "amb-1", json!({"app": "amb"}), "amb", "ambient", true);
    pod(
        &s,
        "app",
        "side-1",
        json!({"app": "side"}),
        "side",
        "sidecar",
        true,
    );
    service(&s, "app", "api", "api");
    assert_eq!(
        send(&s, Source::External, "GET", API, &[]).outcome,
        Outcome::Refused
    );
    assert_eq!(
        send(&s, from("app", "amb"), "GET", API, &[]).outcome,
        Outcome::Reset
    );
    let r = send(&s, from("app", "side"), "GET", API, &[]);
    assert_eq!(
        (r.outcome, r.body.as_str()),
        (Outcome::Http(503), "no healthy upstream")
    );
    assert_eq!(s.traffic.snapshot()["wrongly_denied"], 0);
}

#[test]
fn ztunnel_down_cuts_ambient_pods_on_that_node() {
    let s = cluster("ambient");
    let mut f = FaultSpec::new(FaultKind::ZtunnelDown, None);
    f.node = Some("node-1".into());
    s.faults.add(f);
    // caller on node-1
    assert_eq!(
        send(&s, from("app", "web"), "GET", API, &[]).outcome,
        Outcome::Reset
    );
    // External caller to ambient pods on node-1
    let r = send(&s, Source::External, "GET", API, &[]);
    assert_eq!(r.outcome, Outcome::Reset);
    assert!(r.wrongly_denied, "a data-plane gap denies an allowed request");
    // a pod on node-2 still answers
    load(
        &s,
        pod_obj(
            "app",
            "api-v3-1",
            json!({"app": "api", "version": "v3"}),
            "api",
            "ambient",
            true,
            "node-2",
        ),
    );
    let outcomes: Vec<Outcome> = (0..3)
        .map(|_| send(&s, Source::External, "GET", API, &[]).outcome)
        .collect();
    assert!(outcomes.contains(&Outcome::Http(200)), "{outcomes:?}");
    // the ztunnel pod itself not ready: same effect
    let s2 = cluster("ambient");
    load(
        &s2,
        pod_obj(
            "istio-system",
            "ztunnel-node-1",
            json!({"app": "ztunnel"}),
            "ztunnel",
            "none",
            false,
            "node-1",
        ),
    );
    assert_eq!(
        send(&s2, Source::External, "GET", API, &[]).outcome,
        Outcome::Reset
    );
}

#[test]
fn strict_mtls_at_a_sidecar_rejects_plaintext_only() {
    let s = cluster("sidecar");
    apply_yaml(
        &s,
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n",
    );
    let r = send(&s, Source::External, "GET", API, &[]);
    assert_eq!(r.outcome, Outcome::Reset);
    assert!(!r.intended_allow);
    assert_eq!(
        send(&s, from("app", "web"), "GET", API, &[]).outcome,
        Outcome::Http(200)
    );
    // a namespace PERMISSIVE policy overrides the mesh default
    apply_yaml(
        &s,
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: app}\nspec: {mtls: {mode: PERMISSIVE}}\n",
    );
    assert_eq!(
        send(&s, Source::External, "GET", API, &[]).outcome,
        Outcome::Http(200)
    );
}

#[test]
fn native_sidecars_and_pending_callers() {
    let s = cluster("sidecar-native");
    let r = send(&s, from("app", "web"), "GET", API, &[]);
    assert_eq!(r.outcome, Outcome::Http(200));
    assert_eq!(r.enforcement, vec!["sidecar"]);
    assert!(r.header("x-request-id").is_some());
    let s = cluster("pending");
    assert_eq!(
        send(&s, from("app", "web"), "GET", API, &[]).outcome,
        Outcome::Reset
    );
    let s = cluster("sidecar");
    assert_eq!(
        send(&s, from("app", "nosuchpod"), "GET", API, &[]).outcome,
        Outcome::Refused
    );
}

#[test]
fn counters_count_paths_destinations_and_reset() {
    let s = cluster("sidecar");
    apply_yaml(&s, P);
    send(&s, from("app", "web"), "GET", API, &[]);
    send(&s, from("app", "web"), "DELETE", API, &[]);
    send(&s, from("app", "web"), "GET", "http://nothere.app/", &[]);
    let c = s.traffic.snapshot();
    assert_eq!(c["total"], 3);
    assert_eq!(c["allowed"], 1);
    assert_eq!(c["denied"], 1);
    assert_eq!(c["errors"], 1);
    assert_eq!(c["by_path"]["sidecar"], 2);
    assert_eq!(c["by_path"]["ztunnel"], 0);
    assert_eq!(c["by_destination"]["app/api"]["total"], 2);
    assert_eq!(c["by_destination"]["app/api"]["by_outcome"]["403"], 1);
    assert_eq!(c["by_destination"]["unresolved"]["total"], 1);
    s.traffic.reset();
    assert_eq!(s.traffic.snapshot()["total"], 0);
}

/// The seed's warning: the steps must run in order. Out of order, requests pass with nothing
/// enforcing them, or fail, and the counters show it.
#[test]
fn steps_out_of_order_show_up_in_the_counters() {
    // 1. Removing sidecars before enabling ambient: the L7 ALLOW is enforced by nobody.
    let s = cluster("sidecar");
    apply_yaml(&s, P);
    let r = send(&s, from("other", "other"), "DELETE", API, &[]);
    assert_eq!(r.outcome, Outcome::Http(403));
    for v in ["v1", "v2"] {
        pod(
            &s,
            "app",
            &format!("api-{v}-1"),
            json!({"app": "api", "version": v}),
            "api",
            "none",
            true,
        );
    }
    let r = send(&s, from("other", "other"), "DELETE", API, &[]);
    assert_eq!(r.outcome, Outcome::Http(200));
    assert!(r.wrongly_allowed);
    let c = s.traffic.snapshot();
    assert_eq!(c["wrongly_allowed"], 1, "{c}");
    assert_eq!(c["by_path"]["none"], 1);
    assert_eq!(c["by_path"]["sidecar"], 1);

    // 2. Deleting the L7 policy before the waypoint is bound (the Gateway has no address yet):
    //    the twin is skipped and ztunnel has nothing to enforce.
    let s = cluster("ambient");
    namespace(&s, "app", json!({"istio.io/use-waypoint": "waypoint"}));
    waypoint(&s, "app", "waypoint", "no-address");
    apply_yaml(&s, T);
    let r = send(&s, from("other", "other"), "DELETE", API, &[]);
    assert_eq!(r.outcome, Outcome::Http(200));
    assert!(r.wrongly_allowed);
    assert_eq!(s.traffic.snapshot()["by_path"]["ztunnel"], 1);
    // In order (waypoint ready first), the same request is denied at the waypoint.
    waypoint(&s, "app", "waypoint", "ready");
    let r = send(&s, from("other", "other"), "DELETE", API, &[]);
    assert_eq!(r.outcome, Outcome::Http(403));
    assert_eq!(s.traffic.snapshot()["by_path"]["waypoint"], 1);

    // 3. Enabling ambient while the L7 selector policy is still there and no waypoint: an outage.
    let s = cluster("ambient");
    apply_yaml(&s, P);
    let r = send(&s, from("app", "web"), "GET", API, &[]);
    assert_eq!(r.outcome, Outcome::Reset);
    assert_eq!(s.traffic.snapshot()["wrongly_denied"], 1);
}

#[test]
fn egress_registry_only_is_enforced_by_sidecars_not_by_ztunnel() {
    // istio/istio issue 34632 (REGISTRY_ONLY: BlackHoleCluster, 502) and 54281 (ztunnel ignores it).
    let s = sim_with(meshsim::Settings {
        external_hosts: vec!["api.partner.example".into(), "allowed.partner.example".into()],
        ..Default::default()
    });
    namespace(&s, "app", json!({}));
    namespace(&s, "amb", json!({}));
    pod(&s, "app", "web-1", json!({"app": "web"}), "web", "sidecar", true);
    pod(&s, "amb", "web-1", json!({"app": "web"}), "web", "ambient", true);
    let out = "http://api.partner.example/v1";
    let allowed = "http://allowed.partner.example/";
    // Without a lockdown every caller goes through; unknown external names still fail DNS.
    assert_eq!(
        send(&s, from("app", "web"), "GET", out, &[]).outcome,
        Outcome::Http(200)
    );
    assert_eq!(
        send(&s, from("app", "web"), "GET", "http://unknown.example/", &[]).outcome,
        Outcome::DnsFailure
    );
    // The mesh config's REGISTRY_ONLY (ConfigMap istio, key mesh) and a ServiceEntry for one host.
    apply_yaml(
        &s,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: \"outboundTrafficPolicy:\\n  mode: REGISTRY_ONLY\\n\"\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: partner, namespace: app}\nspec:\n  hosts: [allowed.partner.example]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n",
    );
    let r = send(&s, from("app", "web"), "GET", out, &[]);
    assert_eq!(r.outcome, Outcome::Http(502), "{r:?}");
    assert!(!r.intended_allow && !r.wrongly_denied);
    assert_eq!(
        send(&s, from("app", "web"), "GET", allowed, &[]).outcome,
        Outcome::Http(200)
    );
    let r = send(&s, from("amb", "web"), "GET", out, &[]);
    assert_eq!(r.outcome, Outcome::Http(200));
    assert!(
        r.wrongly_allowed,
        "the lockdown the mesh asks for is gone for the ambient pod"
    );
    // A Sidecar resource of the namespace overrides the mesh: ALLOW_ANY lets it through again.
    apply_yaml(
        &s,
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: app}\nspec:\n  outboundTrafficPolicy: {mode: ALLOW_ANY}\n",
    );
    assert_eq!(
        send(&s, from("app", "web"), "GET", out, &[]).outcome,
        Outcome::Http(200)
    );
    let c = s.traffic.snapshot();
    assert_eq!(
        c["by_destination"]["external/api.partner.example"]["denied"], 1,
        "{c}"
    );
}

#[test]
fn jwt_is_validated_by_the_sidecar_and_the_waypoint_never_by_ztunnel() {
    use meshsim::traffic::jwt::{VALID_SIGNATURE, token};
    let ra = |attach: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: app}}\nspec:\n  {attach}\n  jwtRules: [{{issuer: x}}]\n"
        )
    };
    let forged = format!("Bearer {}", token("x", "alice", None, "forged"));
    let valid = format!("Bearer {}", token("x", "alice", None, VALID_SIGNATURE));
    let get = |s: &meshsim::Sim, auth: &str| {
        let h: Vec<(&str, &str)> = [("Authorization", auth)]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect();
        send(s, from("app", "web"), "GET", API, &h)
    };
    // Sidecar: a selector RequestAuthentication; invalid token 401 (counted as denied), none passes.
    let s = cluster("sidecar");
    apply_yaml(&s, &ra("selector: {matchLabels: {app: api}}"));
    let r = get(&s, &forged);
    assert_eq!(
        (r.outcome.clone(), r.body.as_str()),
        (Outcome::Http(401), "Jwt verification fails")
    );
    assert_eq!(r.enforcement, vec!["sidecar"]);
    assert!(!r.intended_allow && !r.wrongly_denied);
    assert_eq!(get(&s, "").outcome, Outcome::Http(200));
    assert_eq!(get(&s, &valid).outcome, Outcome::Http(200));
    assert_eq!(s.traffic.snapshot()["denied"], 1);
    // requestPrincipals now match the validated `<iss>/<sub>`; notRequestPrincipals ["*"] the anonymous.
    apply_yaml(
        &s,
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: need-jwt, namespace: app}\nspec:\n  selector: {matchLabels: {app: api}}\n  action: DENY\n  rules: [{from: [{source: {notRequestPrincipals: [\"*\"]}}]}]\n",
    );
    assert_eq!(get(&s, "").outcome, Outcome::Http(403));
    assert_eq!(get(&s, &valid).outcome, Outcome::Http(200));
    // ztunnel (ambient, no waypoint) applies no RequestAuthentication: the forged token gets through,
    // which the intended decision calls a security gap.
    let s = cluster("ambient");
    apply_yaml(&s, &ra("selector: {matchLabels: {app: api}}"));
    let r = get(&s, &forged);
    assert_eq!(r.outcome, Outcome::Http(200));
    assert_eq!(r.enforcement, vec!["ztunnel"]);
    assert!(r.wrongly_allowed);
    // The waypoint applies a targetRefs RequestAuthentication, before its authorization.
    namespace(&s, "app", json!({"istio.io/use-waypoint": "waypoint"}));
    waypoint(&s, "app", "waypoint", "ready");
    apply_yaml(
        &s,
        &ra("targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]"),
    );
    let r = get(&s, &forged);
    assert_eq!(
        (r.outcome.clone(), r.body.as_str()),
        (Outcome::Http(401), "Jwt verification fails")
    );
    assert_eq!(r.enforcement, vec!["waypoint"]);
    assert_eq!(get(&s, &valid).outcome, Outcome::Http(200));
}
