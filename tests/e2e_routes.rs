//! The policy phase for routing, end to end against meshsim with the real binary: a namespace whose
//! VirtualService routes with DestinationRule subsets migrates under `policies.migration = "apply"`
//! while requests flow continuously (meshsim's traffic model, request by request): every request keeps
//! its destination (the version that answers) through the six steps, step 5 leaves the generated
//! HTTPRoute and per-version Services in place of the VirtualService and DestinationRule, and a rollback
//! restores the VirtualService and DestinationRule and removes what the migration created, again without
//! a request changing destination.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use meshsim::traffic::{Outcome, Request, Source};
use test_support::policies as pc;

const BIN: &str = env!("CARGO_BIN_EXE_ambient-migrate");

fn deployment(ns: &str, name: &str, labels: &str, sa: &str) -> String {
    format!(
        "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  replicas: 1\n  selector: {{matchLabels: {{{labels}}}}}\n  template:\n    metadata: {{labels: {{{labels}}}}}\n    spec:\n      serviceAccountName: {sa}\n      containers:\n      - name: app\n        image: example/echo:1\n        ports: [{{containerPort: 8080, name: http}}]\n"
    )
}

/// `shop`: web (caller), api v1 and v2 behind Service api, a waypoint, a VirtualService sending canary
/// requests to v2 and the rest to v1 (DestinationRule subsets). `front`: a sidecar caller that stays.
fn fixture() -> String {
    let mut y = String::new();
    for ns in ["shop", "front"] {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{istio-injection: enabled}}}}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: web, namespace: {ns}}}\n"
        ));
        y.push_str(&deployment(ns, "web", "app: web", "web"));
    }
    y.push_str("---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: api, namespace: shop}\n");
    y.push_str(&deployment("shop", "api-v1", "app: api, version: v1", "api"));
    y.push_str(&deployment("shop", "api-v2", "app: api, version: v2", "api"));
    y.push_str(
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: shop}\nspec:\n  selector: {app: api}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n",
    );
    y.push_str(&pc::waypoint("shop"));
    y.push_str(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api, namespace: shop}\nspec:\n  hosts: [api.shop.svc.cluster.local]\n  http:\n  - match: [{headers: {x-canary: {exact: \"1\"}}}]\n    route: [{destination: {host: api, subset: v2}}]\n  - match: [{uri: {prefix: /v2/}}]\n    route: [{destination: {host: api, subset: v2}}]\n  - route: [{destination: {host: api, subset: v1}}]\n",
    );
    y.push_str(
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: api, namespace: shop}\nspec:\n  host: api\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n",
    );
    y
}

/// A caller path and the version that must answer it.
struct RoutePath {
    ns: &'static str,
    path: &'static str,
    canary: bool,
    want: &'static str,
}

const PATHS: [RoutePath; 6] = [
    RoutePath {
        ns: "shop",
        path: "/",
        canary: false,
        want: "v1",
    },
    RoutePath {
        ns: "shop",
        path: "/",
        canary: true,
        want: "v2",
    },
    RoutePath {
        ns: "shop",
        path: "/v2/items",
        canary: false,
        want: "v2",
    },
    RoutePath {
        ns: "front",
        path: "/",
        canary: false,
        want: "v1",
    },
    RoutePath {
        ns: "front",
        path: "/",
        canary: true,
        want: "v2",
    },
    RoutePath {
        ns: "front",
        path: "/v2/items",
        canary: false,
        want: "v2",
    },
];

/// Calls every path every 5 ms until stopped; returns (requests, wrong answers described).
struct Routed {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl Routed {
    fn start(sim: Arc<meshsim::Sim>) -> Routed {
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut n, mut wrong) = (0, Vec::new());
            while !st.load(Ordering::Relaxed) {
                for p in &PATHS {
                    let headers = if p.canary {
                        vec![("x-canary".to_string(), "1".to_string())]
                    } else {
                        Vec::new()
                    };
                    let r = meshsim::traffic::handle(
                        &sim,
                        &Request {
                            source: Source::Pod {
                                namespace: p.ns.into(),
                                name: "web".into(),
                            },
                            method: "GET".into(),
                            url: format!("http://api.shop.svc.cluster.local{}", p.path),
                            headers,
                        },
                    );
                    n += 1;
                    let version = r
                        .body
                        .lines()
                        .find_map(|l| l.strip_prefix("ServiceVersion="))
                        .unwrap_or("");
                    if r.outcome != Outcome::Http(200) || version != p.want {
                        wrong.push(format!(
                            "{}/web GET {} canary={}: {:?} version {version:?}, want {}",
                            p.ns, p.path, p.canary, r.outcome, p.want
                        ));
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (n, wrong)
        });
        Routed { stop, thread }
    }

    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("traffic thread")
    }
}

/// Runs the binary with `args` plus `--config` and `--kubeconfig`: (exit code, stdout, stderr).
async fn cli(args: &[&str], config: &std::path::Path, kubeconfig: &std::path::Path) -> (i32, String, String) {
    let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    a.extend(["--config".to_string(), config.display().to_string()]);
    a.extend(["--kubeconfig".to_string(), kubeconfig.display().to_string()]);
    pc::run_cli(std::path::Path::new(BIN), &a).await
}

fn names(sim: &meshsim::Sim, group: &str, plural: &str, ns: &str) -> Vec<String> {
    pc::objects(sim, group, plural, ns)
        .into_iter()
        .map(|(n, _, _)| n)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_service_migrates_to_httproute_keeping_destinations_and_rolls_back() {
    let (running, dir) = pc::start_as_shipped_sa(fixture()).await;
    let kubeconfig = dir.path().join("kubeconfig");
    let _rbac = pc::sa_common::NothingForbidden(&running);
    let sim = running.sim.clone();
    assert!(
        pc::wait_pods_ready(&sim, &["shop", "front"], 4, 20).await,
        "pods ready"
    );

    // Before: the sidecars route with the VirtualService.
    let warmup = Routed::start(sim.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (n, wrong) = warmup.finish();
    assert!(n > 0 && wrong.is_empty(), "before the migration: {wrong:?}");

    let cfg = pc::RunConfig {
        migration: "apply",
        ..pc::RunConfig::new(&["shop"])
    };
    let cfg_path = cfg.write(dir.path(), "routes");

    // `plan --fixes-dir` writes the generated HTTPRoute and per-version Services, and writes nothing.
    let fixes = dir.path().join("fixes");
    let (code, stdout, stderr) = cli(
        &["plan", "--fixes-dir", &fixes.display().to_string()],
        &cfg_path,
        &kubeconfig,
    )
    .await;
    assert_eq!(code, 0, "plan\n{stdout}\n{stderr}");
    let fix =
        std::fs::read_to_string(fixes.join("shop-virtualservice-translated-api.yaml")).expect("fix YAML");
    assert!(
        fix.contains("kind: HTTPRoute") && fix.contains("name: api-v2"),
        "{fix}"
    );
    assert!(stdout.contains("routing-mixed-window"), "{stdout}");
    for line in [
        "step 1: create Service/shop/api-v1 (role twin)",
        "step 1: create Service/shop/api-v2 (role twin)",
        "step 1: create HTTPRoute/shop/api (role twin)",
        "step 5: delete VirtualService/shop/api",
        "step 5: delete DestinationRule/shop/api",
    ] {
        assert!(stdout.contains(line), "{line}\n{stdout}");
    }
    // The one difference: `/v2` (the prefix `/v2/` without its slash), which PathPrefix matches; a warning.
    assert!(
        stdout.contains("routing api: GET api/v2 -> app=api,version=v1:80 (1000‰) before, app=api,version=v2:80 (1000‰) after (moments 1-4, 5) [PathPrefix segment: warning]"),
        "{stdout}"
    );
    assert!(!stdout.contains("[blocker]"), "{stdout}");

    // The migration, under continuous traffic.
    let traffic = Routed::start(sim.clone());
    let rep_dir = pc::subdir(dir.path(), "run");
    let (code, stdout, stderr) = pc::run_cli(
        std::path::Path::new(BIN),
        &pc::run_args(&cfg_path, &kubeconfig, &rep_dir, &[]),
    )
    .await;
    let (n, wrong) = traffic.finish();
    println!("migration: {n} requests, {} changed destination", wrong.len());
    assert_eq!(code, 0, "run\n{stdout}\n{stderr}");
    assert!(n > 100, "{n} requests");
    assert!(
        wrong.is_empty(),
        "{} of {n} requests changed destination: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert!(names(&sim, "networking.istio.io", "virtualservices", "shop").is_empty());
    assert!(names(&sim, "networking.istio.io", "destinationrules", "shop").is_empty());
    assert_eq!(
        names(&sim, "gateway.networking.k8s.io", "httproutes", "shop"),
        vec!["api"]
    );
    let svcs = names(&sim, "", "services", "shop");
    assert!(
        svcs.contains(&"api-v1".to_string()) && svcs.contains(&"api-v2".to_string()),
        "{svcs:?}"
    );

    // Rollback, under continuous traffic: the VirtualService and DestinationRule come back, the generated
    // objects go.
    let traffic = Routed::start(sim.clone());
    let rb_dir = pc::subdir(dir.path(), "rollback").display().to_string();
    let (code, stdout, stderr) = cli(
        &["rollback", "-n", "shop", "--report-dir", &rb_dir],
        &cfg_path,
        &kubeconfig,
    )
    .await;
    let (n, wrong) = traffic.finish();
    println!("rollback: {n} requests, {} changed destination", wrong.len());
    assert_eq!(code, 0, "rollback\n{stdout}\n{stderr}");
    assert!(
        wrong.is_empty(),
        "{} of {n} requests changed destination during the rollback: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert_eq!(
        names(&sim, "networking.istio.io", "virtualservices", "shop"),
        vec!["api"]
    );
    assert_eq!(
        names(&sim, "networking.istio.io", "destinationrules", "shop"),
        vec!["api"]
    );
    assert!(names(&sim, "gateway.networking.k8s.io", "httproutes", "shop").is_empty());
    let svcs = names(&sim, "", "services", "shop");
    assert!(!svcs.iter().any(|s| s == "api-v1" || s == "api-v2"), "{svcs:?}");
}
