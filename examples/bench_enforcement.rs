//! Benchmark: the enforcement-equivalence check over a fleet, without a cluster. Builds N namespace snapshots
//! (default 100) shaped like real ones (4 apps behind Services, a waypoint, an L7 selector ALLOW with its
//! twin, an L4 ALLOW admitting the waypoint, an L7 DENY, a namespace-wide L4 ALLOW, STRICT mTLS on every
//! other namespace, callers named across namespaces), then times what `plan` and `run` do before touching
//! anything: every namespace's plan (preflight + equivalence check at every moment) and the fleet pass that
//! re-checks each plan with its callers-first position.
//!
//! Run: `cargo run --example bench_enforcement [N]`.

use std::collections::BTreeMap;
use std::time::Instant;

use ambient_migrate::app::fleet_enforcement;
use ambient_migrate::assess::Snapshot;
use ambient_migrate::assess::plan::plan_namespace;
use ambient_migrate::settings::{LoadOptions, Settings};
use serde_json::{Value, json};

fn snapshot(i: usize, n: usize) -> Snapshot {
    let ns = format!("team-{i:03}");
    let caller = format!("team-{:03}", (i + 1) % n);
    let apps = ["web", "api", "db", "cache"];
    let deployments: Vec<Value> = apps
        .iter()
        .map(|a| {
            json!({"metadata": {"name": a, "namespace": ns},
                "spec": {"selector": {"matchLabels": {"app": a}}, "template": {"metadata": {"labels": {"app": a, "version": "v1"}},
                "spec": {"serviceAccountName": a, "containers": [{"name": a, "ports": [{"containerPort": 8080, "name": "http"}]}]}}}})
        })
        .collect();
    let services: Vec<Value> = apps
        .iter()
        .map(|a| {
            json!({"metadata": {"name": a, "namespace": ns, "labels": {"app": a}},
                "spec": {"selector": {"app": a}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "grpc", "port": 9090, "targetPort": 9090}]}})
        })
        .collect();
    let ap = |name: &str, spec: Value| {
        json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
               "metadata": {"name": name, "namespace": ns}, "spec": spec})
    };
    let l7 = json!([{"from": [{"source": {"principals": [format!("cluster.local/ns/{ns}/sa/web"), format!("cluster.local/ns/{caller}/sa/web")]}}],
                     "to": [{"operation": {"methods": ["GET", "POST"], "paths": ["/api/*"]}}]}]);
    let mut policies = vec![
        ap(
            "api-l7",
            json!({"selector": {"matchLabels": {"app": "api"}}, "rules": l7}),
        ),
        ap(
            "api-l7-waypoint",
            json!({"targetRefs": [{"kind": "Service", "group": "", "name": "api"}], "rules": l7}),
        ),
        ap(
            "db-l4",
            json!({"selector": {"matchLabels": {"app": "db"}}, "rules": [{"from": [{"source": {"principals": [
            format!("cluster.local/ns/{ns}/sa/api"), format!("cluster.local/ns/{ns}/sa/waypoint")]}}]}]}),
        ),
        ap(
            "no-admin",
            json!({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]},
            {"when": [{"key": "request.headers[x-debug]", "values": ["1"]}]}]}),
        ),
        ap(
            "cache-ns",
            json!({"selector": {"matchLabels": {"app": "cache"}}, "rules": [{"from": [{"source": {"namespaces": [ns.clone(), caller.clone()]}}]}]}),
        ),
    ];
    if i.is_multiple_of(3) {
        policies.push(ap(
            "web-ports",
            json!({"selector": {"matchLabels": {"app": "web"}}, "rules": [{"to": [{"operation": {"ports": ["8080"]}}]}]}),
        ));
    }
    let pas = if i.is_multiple_of(2) {
        vec![
            json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "strict", "namespace": ns, "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"mtls": {"mode": "STRICT"}}}),
        ]
    } else {
        Vec::new()
    };
    let labels: BTreeMap<String, Value> = (0..n)
        .map(|j| (format!("team-{j:03}"), json!({"istio-injection": "enabled"})))
        .collect();
    let ready = |name: &str| {
        json!({"metadata": {"name": name, "namespace": "istio-system"}, "spec": {"selector": {}, "template": {}},
               "status": {"desiredNumberScheduled": 3, "numberReady": 3, "currentNumberScheduled": 3, "numberMisscheduled": 0}})
    };
    serde_json::from_value(json!({
        "namespace": {"metadata": {"name": ns, "labels": {"istio-injection": "enabled"}}},
        "services": services,
        "deployments": deployments,
        "gateways": [{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "waypoint", "namespace": ns}, "spec": {"gatewayClassName": "istio-waypoint"}}],
        "authorizationPolicies": policies,
        "peerAuthentications": pas,
        "cluster": {"ztunnel": ready("ztunnel"), "istioCni": ready("istio-cni-node"), "namespaceLabels": labels},
    }))
    .expect("snapshot")
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let names: Vec<String> = (0..n).map(|i| format!("team-{i:03}")).collect();
    let settings = Settings::load(LoadOptions {
        config_file: None,
        env: Some(Default::default()),
        cli_overrides: vec![
            ("fleet.namespaces".into(), names.join(",")),
            ("fleet.order".into(), "callers-first".into()),
            ("fleet.concurrency".into(), "4".into()),
            ("migration.policies.migration".into(), "apply".into()),
            ("migration.policies.keep_bridges".into(), "true".into()),
        ],
    })
    .expect("settings");
    let snapshots: Vec<Snapshot> = (0..n).map(|i| snapshot(i, n)).collect();

    let t0 = Instant::now();
    let mut assessed = Vec::new();
    let mut callers = BTreeMap::new();
    for (name, s) in names.iter().zip(&snapshots) {
        let opts = settings.for_namespace(name).plan_options();
        let plan = plan_namespace(s, &opts);
        callers.insert(name.clone(), plan.callers.clone());
        assessed.push((name.clone(), plan));
    }
    let planned = t0.elapsed();
    let order = ambient_migrate::fleet::callers_first(&names, &callers);
    let by_name: BTreeMap<&String, &Snapshot> = names.iter().zip(&snapshots).collect();
    let blocked = fleet_enforcement(&settings, &order, &callers, &mut assessed, |ns| {
        by_name
            .get(&ns.to_string())
            .map(|s| std::borrow::Cow::Borrowed(*s))
    });
    let total = t0.elapsed();

    let classes: usize = assessed.iter().map(|(_, p)| p.enforcement.classes).sum();
    let moments: usize = assessed.iter().map(|(_, p)| p.enforcement.moments.len()).sum();
    let differ: usize = assessed
        .iter()
        .map(|(_, p)| p.enforcement.differences.len())
        .sum();
    if std::env::var("BENCH_DEBUG").is_ok() {
        for d in assessed[1].1.enforcement.differences.iter().take(30) {
            println!(
                "{} {:?} {} {} {:?} {:?} pre={} {}",
                d.caller,
                d.caller_dataplanes,
                d.destination,
                d.request,
                d.decisions,
                d.kind,
                d.pre_existing,
                d.cause
            );
        }
    }
    println!("# bench_enforcement: {n} namespaces");
    println!(
        "request classes: {classes} ({} per namespace), moments per namespace: {:.1}, class x moment decisions per namespace: {}",
        classes / n.max(1),
        moments as f64 / n.max(1) as f64,
        classes * moments / n.max(1)
    );
    println!(
        "classes differing from the intent: {differ}; namespaces blocked: {}",
        blocked.len()
    );
    println!(
        "plans (preflight + equivalence check): {:.3} s; fleet pass (callers-first positions, re-check): {:.3} s; total {:.3} s",
        planned.as_secs_f64(),
        (total - planned).as_secs_f64(),
        total.as_secs_f64()
    );
}
