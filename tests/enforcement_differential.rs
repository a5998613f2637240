//! Differential test of the enforcement model (`assess::enforcement`) against meshsim's traffic model
//! (`meshsim::traffic::model::decide`): for seeded random namespaces (ALLOW/DENY policies on selectors,
//! the namespace and targetRefs; principals, namespaces, service accounts, ports, methods, paths, headers;
//! with and without a waypoint; sidecar, ambient and plaintext callers; STRICT mTLS), the model's decision
//! for every request class at every moment of the plan equals what meshsim answers for a request of that
//! class in a world built from the same objects at that moment, and the model's intent equals meshsim's
//! intended decision before the migration.

use ambient_migrate::assess::Snapshot;
use ambient_migrate::assess::enforcement::{self, DataPlane, FleetPosition, Mesh, Moment};
use ambient_migrate::assess::plan::{ActivationOrder, PlanOptions, PolicyMigration, plan_namespace};
use meshsim::traffic::model::{self, Class, Env};
use meshsim::traffic::snapshot::world_from_objects;
use meshsim::traffic::{Request as SimRequest, Source};
use serde_json::{Value, json};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
    fn some<'a>(&mut self, from: &[&'a str]) -> Vec<&'a str> {
        let n = 1 + self.below(2);
        let mut v: Vec<&str> = (0..n).map(|_| self.pick(from)).collect();
        v.sort();
        v.dedup();
        v
    }
}

const NS: &str = "app";
const APPS: [&str; 3] = ["a", "b", "c"];

fn source(r: &mut Rng) -> Value {
    let mut s = json!({});
    match r.below(7) {
        0 | 1 => {
            s["principals"] = json!(r.some(&[
                "cluster.local/ns/front/sa/web",
                "cluster.local/ns/app/sa/a",
                "cluster.local/ns/app/sa/b",
                "cluster.local/ns/app/*",
                "*/sa/web",
                "cluster.local/ns/app/sa/waypoint",
            ]))
        }
        2 => s["namespaces"] = json!(r.some(&["front", "app", "mesh", "f*"])),
        3 => s["notNamespaces"] = json!(r.some(&["front", "app"])),
        4 => s["serviceAccounts"] = json!(r.some(&["front/web", "a", "app/waypoint"])),
        5 => s["notPrincipals"] = json!(r.some(&["*", "cluster.local/ns/front/sa/web"])),
        _ => s["requestPrincipals"] = json!(["*"]),
    }
    s
}

fn operation(r: &mut Rng) -> Value {
    let mut o = json!({});
    if r.chance(40) {
        o["methods"] = json!(r.some(&["GET", "POST", "DELETE"]));
    }
    if r.chance(25) {
        o["paths"] = json!(r.some(&["/api*", "/admin", "*/x"]));
    }
    if r.chance(25) {
        o["ports"] = json!(r.some(&["8080", "9090"]));
    }
    if r.chance(10) {
        o["notMethods"] = json!(["DELETE"]);
    }
    if o.as_object().is_some_and(|m| m.is_empty()) {
        o["ports"] = json!(["8080"]);
    }
    o
}

fn rule(r: &mut Rng) -> Value {
    let mut rule = json!({});
    if r.chance(70) {
        let n = 1 + r.below(2);
        rule["from"] = json!((0..n).map(|_| json!({"source": source(r)})).collect::<Vec<_>>());
    }
    if r.chance(50) {
        rule["to"] = json!([{"operation": operation(r)}]);
    }
    if r.chance(15) {
        rule["when"] = json!([match r.below(3) {
            0 => json!({"key": "source.namespace", "values": r.some(&["front", "app"])}),
            1 => json!({"key": "request.headers[x-user]", "values": ["admin"]}),
            _ => json!({"key": "source.principal", "notValues": ["cluster.local/ns/front/*"]}),
        }]);
    }
    rule
}

fn policy(r: &mut Rng, i: usize, waypoint: bool) -> Vec<Value> {
    let mut spec = json!({});
    let attach = r.below(100);
    let target = r.pick(&APPS);
    if attach < 45 {
        spec["selector"] = json!({"matchLabels": {"app": target}});
    } else if attach < 60 {
        // namespace-wide
    } else if attach < 85 || !waypoint {
        spec["targetRefs"] = json!([{"kind": "Service", "group": "", "name": target}]);
    } else {
        spec["targetRefs"] =
            json!([{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}]);
    }
    spec["action"] = json!(if r.chance(65) { "ALLOW" } else { "DENY" });
    let n = if r.chance(8) { 0 } else { 1 + r.below(2) };
    spec["rules"] = json!((0..n).map(|_| rule(r)).collect::<Vec<_>>());
    let name = format!("p{i}");
    let mut out = vec![
        json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
               "metadata": {"name": name, "namespace": NS}, "spec": spec.clone()}),
    ];
    // Sometimes the user already wrote the targetRefs twin of a selector policy.
    if spec.get("selector").is_some() && r.chance(35) {
        let mut twin = spec.clone();
        twin.as_object_mut().unwrap().remove("selector");
        twin["targetRefs"] = json!([{"kind": "Service", "group": "", "name": target}]);
        out.push(
            json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                        "metadata": {"name": format!("{name}-waypoint"), "namespace": NS}, "spec": twin}),
        );
    }
    out
}

/// One generated namespace: the product's snapshot, options and fleet position.
struct Case {
    snapshot: Snapshot,
    opts: PlanOptions,
    fleet: FleetPosition,
}

fn generate(seed: u64) -> Case {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let napps = 2 + r.below(2);
    let apps = &APPS[..napps];
    let waypoint = r.chance(60);
    let mut services = Vec::new();
    let mut deployments = Vec::new();
    for a in apps {
        let target = if r.chance(30) { json!("http") } else { json!(8080) };
        services.push(
            json!({"metadata": {"name": a, "namespace": NS, "labels": {"app": a}},
            "spec": {"selector": {"app": a}, "ports": [{"name": "http", "port": 80, "targetPort": target}]}}),
        );
        deployments.push(json!({"metadata": {"name": a, "namespace": NS},
            "spec": {"selector": {"matchLabels": {"app": a}}, "template": {"metadata": {"labels": {"app": a}},
            "spec": {"serviceAccountName": a, "containers": [{"name": a, "ports": [{"containerPort": 8080, "name": "http"}]}]}}}}));
    }
    let gateways = if waypoint {
        vec![
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "waypoint", "namespace": NS, "labels": {"istio.io/waypoint-for": "service"}},
            "spec": {"gatewayClassName": "istio-waypoint"}}),
        ]
    } else {
        Vec::new()
    };
    let npol = r.below(5);
    let policies: Vec<Value> = (0..npol).flat_map(|i| policy(&mut r, i, waypoint)).collect();
    let mut pas = Vec::new();
    if r.chance(20) {
        pas.push(
            json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "strict", "namespace": NS, "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"mtls": {"mode": "STRICT"}}}),
        );
    }
    let front = if r.chance(50) {
        json!({"istio-injection": "enabled"})
    } else {
        json!({"istio.io/dataplane-mode": "ambient"})
    };
    let snapshot: Snapshot = serde_json::from_value(json!({
        "namespace": {"metadata": {"name": NS, "labels": {"istio-injection": "enabled"}}},
        "services": services,
        "deployments": deployments,
        "gateways": gateways,
        "authorizationPolicies": policies,
        "peerAuthentications": pas,
        "cluster": {"namespaceLabels": {
            "front": front,
            "mesh": {"istio.io/dataplane-mode": "ambient"},
            "outside": {},
        }},
    }))
    .expect("generated snapshot");
    let migration = [PolicyMigration::Off, PolicyMigration::Apply][r.below(2)];
    let bridges = r.chance(70);
    let opts = PlanOptions {
        policy_migration: migration,
        bridges,
        keep_bridges: bridges && r.chance(30),
        activation_order: if r.chance(75) {
            ActivationOrder::BeforeAmbient
        } else {
            ActivationOrder::AfterRestart
        },
        batch_size: 1 + r.below(2),
        ..Default::default()
    };
    let mut fleet = FleetPosition::default();
    match r.below(3) {
        0 => {
            fleet.before.insert("front".into());
        }
        1 => {
            fleet.after.insert("front".into());
        }
        _ => {}
    }
    Case {
        snapshot,
        opts,
        fleet,
    }
}

struct NoFaults;

impl Env for NoFaults {
    fn ztunnel_down(&self, _: Option<&str>, _: &str) -> bool {
        false
    }
    fn app_error(&self, _: &str, _: &str) -> Option<u16> {
        None
    }
    fn seq(&self) -> u64 {
        0
    }
    fn request_id(&self) -> String {
        "differential".into()
    }
}

fn pod(ns: &str, name: &str, labels: Value, sa: &str, dp: DataPlane) -> Value {
    let mut containers = vec![json!({"name": "app", "ports": [{"containerPort": 8080, "name": "http"}]})];
    let mut annotations = json!({});
    let mut statuses = Vec::new();
    match dp {
        DataPlane::Sidecar => {
            containers.push(json!({"name": "istio-proxy"}));
            statuses.push(json!({"name": "istio-proxy", "ready": true}));
        }
        DataPlane::Ambient => annotations["ambient.istio.io/redirection"] = json!("enabled"),
        DataPlane::None => {}
    }
    json!({"kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations},
        "spec": {"serviceAccountName": sa, "nodeName": "node-1", "containers": containers},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": statuses, "podIP": "10.0.0.9"}})
}

/// The objects of one moment, as meshsim reads them, plus one caller pod per (class, data plane).
fn world_objects(
    case: &Case,
    mesh: &Mesh,
    at: &Moment,
    callers: &[(String, String, String, DataPlane)],
) -> Vec<Value> {
    let s = &case.snapshot;
    let mut objs = vec![json!({"kind": "Namespace", "metadata": {"name": NS, "labels": at.ns_labels}})];
    for svc in &s.services {
        let mut v = serde_json::to_value(svc).unwrap();
        v["kind"] = json!("Service");
        let name = svc.metadata.name.clone().unwrap_or_default();
        if let Some(w) = at.service_waypoint.get(&name) {
            v["metadata"]["labels"]["istio.io/use-waypoint"] = json!(w);
        }
        objs.push(v);
    }
    for w in &mesh.workloads {
        let dp = at.workloads[&w.name];
        objs.push(pod(
            NS,
            &w.name.replace('/', "-").to_lowercase(),
            json!(w.labels),
            &w.service_account,
            dp,
        ));
    }
    for g in &s.gateways {
        objs.push(g.raw().clone());
        let name = g.name();
        objs.push(pod(
            NS,
            &format!("{name}-pod"),
            json!({"gateway.networking.k8s.io/gateway-name": name}),
            name,
            DataPlane::None,
        ));
    }
    for p in &at.policies {
        objs.push(p.policy.manifest());
    }
    objs.extend(s.peer_authentications.iter().map(|p| p.raw().clone()));
    for (ns, name, sa, dp) in callers {
        objs.push(pod(ns, name, json!({"role": "caller"}), sa, *dp));
    }
    objs
}

#[test]
fn model_matches_meshsim_on_generated_namespaces() {
    let namespaces = 520u64;
    let mut compared = 0usize;
    let mut mismatches = Vec::new();
    let mut with_difference = 0usize;
    for seed in 0..namespaces {
        let case = generate(seed);
        let plan = plan_namespace(&case.snapshot, &case.opts);
        let mesh = Mesh::from_snapshot(&case.snapshot);
        let moments = enforcement::moments(&case.snapshot, &mesh, &plan, &case.fleet);
        let all: Vec<_> = moments
            .iter()
            .flat_map(|m| m.policies.iter().map(|c| &c.policy))
            .collect();
        let classes = enforcement::callers(&mesh, &all);
        let reqs = enforcement::requests(&all);
        if !enforcement::check(&case.snapshot, &plan, &case.fleet)
            .differences
            .is_empty()
        {
            with_difference += 1;
        }
        for at in &moments {
            let view = enforcement::View::new(&mesh, at);
            let mut caller_pods = Vec::new();
            for (ci, c) in classes.iter().enumerate() {
                for dp in c.dataplanes(at) {
                    let (ns, sa) = match &c.identity {
                        Some(i) => (i.namespace.clone(), i.service_account.clone()),
                        None => ("outside".to_string(), "default".to_string()),
                    };
                    caller_pods.push((
                        ns,
                        format!("caller-{ci}-{}", dp.as_str().replace(' ', "-")),
                        sa,
                        dp,
                    ));
                }
            }
            let world = world_from_objects(
                &world_objects(&case, &mesh, at, &caller_pods),
                "cluster.local",
                "istio-system",
            );
            for svc in &mesh.services {
                for port in &svc.ports {
                    for dest in mesh.endpoints(svc) {
                        for (ci, c) in classes.iter().enumerate() {
                            for dp in c.dataplanes(at) {
                                let (ns, name, _, _) = caller_pods
                                    .iter()
                                    .find(|(_, n, _, d)| *d == dp && n.starts_with(&format!("caller-{ci}-")))
                                    .unwrap();
                                for req in &reqs {
                                    let sim = model::decide(
                                        &world,
                                        &NoFaults,
                                        &SimRequest {
                                            source: Source::Pod {
                                                namespace: ns.clone(),
                                                name: name.clone(),
                                            },
                                            method: req.method.clone(),
                                            url: format!(
                                                "http://{}.{NS}.svc.cluster.local:{}{}",
                                                svc.name, port.port, req.path
                                            ),
                                            headers: req.headers.clone(),
                                        },
                                    );
                                    let ours = view.decide(c.identity.as_ref(), dp, svc, port, req, dest);
                                    compared += 1;
                                    let theirs = sim.class == Class::AppReached;
                                    let mut bad = ours.allowed != theirs;
                                    let mut what = "decision";
                                    if at.label == "0" {
                                        let want = view.intent(c.identity.as_ref(), svc, port, req, dest);
                                        if want != sim.response.intended_allow {
                                            bad = true;
                                            what = "intent";
                                        }
                                    }
                                    if bad && mismatches.len() < 10 {
                                        mismatches.push(format!(
                                            "seed {seed} moment {} {what}: {} ({}) -> {}:{} {} : model {:?}, meshsim {:?} intended {} enforcement {:?}\n  policies: {}",
                                            at.label,
                                            c.label,
                                            dp.as_str(),
                                            svc.name,
                                            port.port,
                                            req.describe(),
                                            ours,
                                            sim.class,
                                            sim.response.intended_allow,
                                            sim.response.enforcement,
                                            serde_json::to_string(&at.policies.iter().map(|p| p.policy.manifest()["spec"].clone()).collect::<Vec<_>>()).unwrap()
                                        ));
                                    } else if bad {
                                        mismatches.push(String::new());
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "{namespaces} namespaces, {compared} requests compared, {with_difference} namespaces with a difference from the intent, {} mismatches",
        mismatches.len()
    );
    assert!(compared > 100_000, "too few requests compared: {compared}");
    assert!(with_difference > 0, "the generator never produced a difference");
    assert!(
        mismatches.is_empty(),
        "{} mismatches, first ones:\n{}",
        mismatches.len(),
        mismatches
            .iter()
            .filter(|m| !m.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The streamed fleet preflight lets a namespace start before the rest of the fleet is assessed when its
/// enforcement check passes with every other fleet namespace running and with none of them running: a
/// namespace blocked later leaves the run. That is sound only if passing at both extremes implies passing
/// for every set of other namespaces that may end up running. Checked here on the generated namespaces,
/// for every subset of the other namespaces, running alongside (concurrency > 1) or one at a time after.
#[test]
fn passing_with_all_and_with_none_of_the_others_passes_with_any_of_them() {
    let others = ["front", "mesh", "outside"];
    let position = |serial: bool, running: &[&str]| {
        let mut p = FleetPosition::default();
        for n in running {
            let set = if serial { &mut p.after } else { &mut p.concurrent };
            set.insert(n.to_string());
        }
        p
    };
    let passes = |case: &Case, plan: &ambient_migrate::assess::plan::NamespacePlan, pos: &FleetPosition| {
        enforcement::check(&case.snapshot, plan, pos)
            .differences
            .is_empty()
    };
    let (mut both_pass, mut extremes_differ) = (0usize, 0usize);
    let mut broken = Vec::new();
    for seed in 0..400u64 {
        let case = generate(seed);
        let plan = plan_namespace(&case.snapshot, &case.opts);
        for serial in [false, true] {
            let all = passes(&case, &plan, &position(serial, &others));
            let none = passes(&case, &plan, &position(serial, &[]));
            if all != none {
                extremes_differ += 1;
            }
            if !(all && none) {
                continue;
            }
            both_pass += 1;
            for mask in 1..(1u32 << others.len()) - 1 {
                let running: Vec<&str> = (0..others.len())
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| others[i])
                    .collect();
                if !passes(&case, &plan, &position(serial, &running)) {
                    broken.push(format!("seed {seed} serial {serial} running {running:?}"));
                }
            }
        }
    }
    assert!(
        both_pass > 0,
        "no generated namespace passed at both extremes: the check proves nothing"
    );
    assert!(
        broken.is_empty(),
        "passing with all and with none of the others running did not imply passing with some of them ({} of {both_pass} cases, {extremes_differ} where the extremes differ):\n{}",
        broken.len(),
        broken.join("\n")
    );
}
