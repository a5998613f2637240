//! Shared pieces of the policy carry-over tests (`tests/e2e_policies.rs`) and benchmark programs
//! (`examples/bench_*.rs`):
//!
//! - [`policy_fleet`]: the carry-over fleet: `store` (an L7 selector ALLOW policy on `api` and its targetRefs
//!   twin, a waypoint), `front` (cross-namespace callers of `store`, on sidecars, no policy of its own) and
//!   `ledger` (the L4 trap: a selector ALLOW on `books` that admits `writer` but not the waypoint).
//! - [`paths`]: one legitimate and one illegitimate caller per protected path.
//! - [`Traffic`]: a background generator calling `meshsim::traffic::handle` for every path every
//!   `interval`, recording time, outcome and meshsim's `wrongly_allowed`/`wrongly_denied` flags; its
//!   [`TrafficSummary`] gives failed legitimate requests, allowed illegitimate requests and the outage
//!   window (first to last failure).
//! - [`run_cli`]: runs the real `ambient-migrate` binary; [`config_toml`]: the run's configuration.
//! - [`seed_runbook_kubectl`]: the seed runbook's commands (steps 1-5), run with the real kubectl.

pub use crate::sa as sa_common;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshsim::traffic::{Outcome, Request, Source};
use meshsim::{Settings, Sim};
use serde_json::Value;

/// Test latencies: small, but with real ordering (pods take a few ticks to start and become ready).
pub fn test_settings() -> Settings {
    crate::Latencies::Policies.settings()
}

/// meshsim serving `fixture` with [`test_settings`] and a probe proxy, and the binary's `kubeconfig` (in the
/// returned temp dir) authenticating as the shipped ServiceAccount with the shipped RBAC, so a test runs
/// the binary with exactly the permissions a user installs.
pub async fn start_as_shipped_sa(fixture: String) -> (meshsim::Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    let running = meshsim::start(meshsim::StartOptions {
        fixture_texts: vec![fixture],
        settings: test_settings(),
        proxy_listen: Some("127.0.0.1:0".parse().expect("address")),
        kubeconfig_out: Some(kubeconfig.clone()),
        ..Default::default()
    })
    .await
    .expect("meshsim starts");
    let rbac = sa_common::shipped_rbac_for(&running);
    sa_common::install(&running, dir.path(), &kubeconfig, &rbac).await;
    (running, dir)
}

/// Benchmark latencies: the demo's (a fast cluster), so windows are measured in realistic units.
pub fn bench_settings() -> Settings {
    crate::Latencies::Demo.settings()
}

/// A namespace on sidecars (`istio-injection=enabled`) with one ServiceAccount, Deployment and Service per
/// app (echo on 8080, Service port 80).
pub fn namespace(ns: &str, apps: &[&str], replicas: u32) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    istio-injection: enabled\n"
    );
    for app in apps {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {app}, namespace: {ns}}}\n\
             ---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {app}, namespace: {ns}, labels: {{app: {app}}}}}\n\
             spec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {app}}}}}\n  template:\n    metadata: {{labels: {{app: {app}, version: v1}}}}\n    spec:\n      serviceAccountName: {app}\n      containers:\n      - name: {app}\n        image: example/echo:1\n        ports: [{{containerPort: 8080, name: http}}]\n\
             ---\napiVersion: v1\nkind: Service\nmetadata: {{name: {app}, namespace: {ns}, labels: {{app: {app}}}}}\n\
             spec:\n  selector: {{app: {app}}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n"
        ));
    }
    y
}

/// A waypoint Gateway named `waypoint` (class `istio-waypoint`).
pub fn waypoint(ns: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: waypoint\n  namespace: {ns}\n  labels: {{istio.io/waypoint-for: service}}\nspec:\n  gatewayClassName: istio-waypoint\n  listeners:\n  - {{name: mesh, port: 15008, protocol: HBONE}}\n"
    )
}

/// The L7 selector ALLOW policy of `store` (GET from front/web and store/web only).
pub const STORE_L7: &str = "api-allow-get";
/// Its targetRefs twin.
pub const STORE_TWIN: &str = "api-allow-get-waypoint";
/// The L4 trap of `ledger`.
pub const LEDGER_L4: &str = "books-allow-writer";

fn policy(ns: &str, name: &str, attach: &str, rules: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  {attach}\n  action: ALLOW\n  rules:\n{rules}"
    )
}

/// The three namespaces of the issue-5 fleet (replicas per Deployment).
pub fn policy_fleet(replicas: u32) -> String {
    let l7_rules = "  - from: [{source: {principals: [\"cluster.local/ns/front/sa/web\", \"cluster.local/ns/store/sa/web\"]}}]\n    to: [{operation: {methods: [\"GET\"]}}]\n";
    let mut y = namespace("front", &["web", "other"], replicas);
    y.push_str("---\n");
    y.push_str(&namespace("store", &["web", "api"], replicas));
    y.push_str(&waypoint("store"));
    y.push_str(&policy(
        "store",
        STORE_L7,
        "selector: {matchLabels: {app: api}}",
        l7_rules,
    ));
    y.push_str(&policy(
        "store",
        STORE_TWIN,
        "targetRefs: [{kind: Service, group: \"\", name: api}]",
        l7_rules,
    ));
    y.push_str("---\n");
    y.push_str(&namespace("ledger", &["writer", "intruder", "books"], replicas));
    y.push_str(&waypoint("ledger"));
    y.push_str(&policy(
        "ledger",
        LEDGER_L4,
        "selector: {matchLabels: {app: books}}",
        "  - from: [{source: {principals: [\"cluster.local/ns/ledger/sa/writer\"]}}]\n",
    ));
    y
}

/// The L4 selector ALLOW of `vault` that already admits the waypoint (upstream's migration guide) but has
/// no targetRefs twin.
pub const VAULT_L4: &str = "safe-allow-teller";
/// Its generated twin.
pub const VAULT_TWIN: &str = "safe-allow-teller-waypoint";

/// The two namespaces of the enforcement-equivalence holes: `vault` (waypoint; its L4 policy admits the
/// waypoint without a twin, so waypoint-routed callers it does not admit would reach `safe`) and `plain`
/// (no waypoint and nothing L7: step 1 binds nothing; its L4 policy does not admit a waypoint and needs not).
pub fn holes_fleet(replicas: u32) -> String {
    let mut y = namespace("vault", &["teller", "thief", "safe"], replicas);
    y.push_str(&waypoint("vault"));
    y.push_str(&policy(
        "vault",
        VAULT_L4,
        "selector: {matchLabels: {app: safe}}",
        "  - from: [{source: {principals: [\"cluster.local/ns/vault/sa/teller\", \"cluster.local/ns/vault/sa/waypoint\"]}}]\n",
    ));
    y.push_str("---\n");
    y.push_str(&namespace("plain", &["client", "other", "data"], replicas));
    y.push_str(&policy(
        "plain",
        "data-allow-client",
        "selector: {matchLabels: {app: data}}",
        "  - from: [{source: {principals: [\"cluster.local/ns/plain/sa/client\"]}}]\n",
    ));
    y
}

/// The caller paths of [`holes_fleet`].
pub fn holes_paths() -> Vec<CallPath> {
    let p = |name, namespace, workload, url, legit| CallPath {
        name,
        namespace,
        workload,
        method: "GET",
        url,
        legit,
    };
    let safe = "http://safe.vault.svc.cluster.local/";
    let data = "http://data.plain.svc.cluster.local/";
    vec![
        p("vault/teller GET safe.vault", "vault", "teller", safe, true),
        p("vault/thief GET safe.vault", "vault", "thief", safe, false),
        p("plain/client GET data.plain", "plain", "client", data, true),
        p("plain/other GET data.plain", "plain", "other", data, false),
    ]
}

/// One caller path: who calls what, and whether the policies mean to allow it.
#[derive(Debug, Clone)]
pub struct CallPath {
    pub name: &'static str,
    pub namespace: &'static str,
    pub workload: &'static str,
    pub method: &'static str,
    pub url: &'static str,
    pub legit: bool,
}

/// The caller paths of [`policy_fleet`]: per protected Service one legitimate and one illegitimate caller
/// (cross-namespace and in-namespace).
pub fn paths() -> Vec<CallPath> {
    let p = |name, namespace, workload, method, url, legit| CallPath {
        name,
        namespace,
        workload,
        method,
        url,
        legit,
    };
    let api = "http://api.store.svc.cluster.local/";
    let books = "http://books.ledger.svc.cluster.local/";
    vec![
        p("front/web GET api.store", "front", "web", "GET", api, true),
        p("store/web GET api.store", "store", "web", "GET", api, true),
        p("front/other GET api.store", "front", "other", "GET", api, false),
        p("front/web DELETE api.store", "front", "web", "DELETE", api, false),
        p(
            "ledger/writer GET books.ledger",
            "ledger",
            "writer",
            "GET",
            books,
            true,
        ),
        p(
            "ledger/intruder GET books.ledger",
            "ledger",
            "intruder",
            "GET",
            books,
            false,
        ),
    ]
}

/// One request of the generator.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Since the generator started.
    pub at: Duration,
    pub path: usize,
    pub outcome: String,
    /// The destination application answered 2xx (the request got through).
    pub allowed: bool,
    pub intended_allow: bool,
    pub wrongly_allowed: bool,
    pub wrongly_denied: bool,
    /// Enforcement hops meshsim reported (`waypoint`, `sidecar`, `ztunnel`, `none`).
    pub enforcement: Vec<String>,
}

/// A background traffic generator (a thread: `handle` is synchronous).
pub struct Traffic {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    paths: Vec<CallPath>,
}

impl Traffic {
    /// Starts calling every path every `interval`.
    pub fn start(sim: Arc<Sim>, paths: Vec<CallPath>, interval: Duration) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s2, st2, p2) = (samples.clone(), stop.clone(), paths.clone());
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            while !st2.load(Ordering::Relaxed) {
                for (i, p) in p2.iter().enumerate() {
                    let r = meshsim::traffic::handle(
                        &sim,
                        &Request {
                            source: Source::Pod {
                                namespace: p.namespace.into(),
                                name: p.workload.into(),
                            },
                            method: p.method.into(),
                            url: p.url.into(),
                            headers: Vec::new(),
                        },
                    );
                    let allowed = matches!(r.outcome, Outcome::Http(c) if (200..300).contains(&c));
                    s2.lock().unwrap().push(Sample {
                        at: t0.elapsed(),
                        path: i,
                        outcome: meshsim::traffic::outcome_key(&r.outcome),
                        allowed,
                        intended_allow: r.intended_allow,
                        wrongly_allowed: r.wrongly_allowed,
                        wrongly_denied: r.wrongly_denied,
                        enforcement: r.enforcement.clone(),
                    });
                }
                std::thread::sleep(interval);
            }
        });
        Traffic {
            stop,
            samples,
            thread: Some(thread),
            paths,
        }
    }

    /// Stops the generator and summarises what it saw.
    pub fn finish(mut self) -> TrafficSummary {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let samples = std::mem::take(&mut *self.samples.lock().unwrap());
        TrafficSummary::new(&self.paths, samples)
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Per-path figures.
#[derive(Debug, Clone, Default)]
pub struct PathSummary {
    pub name: String,
    pub legit: bool,
    pub requests: usize,
    /// Legitimate requests that did not get a 2xx.
    pub failed: usize,
    /// Illegitimate requests that got a 2xx.
    pub wrongly_allowed: usize,
    /// meshsim's own flags.
    pub sim_wrongly_denied: usize,
    pub sim_wrongly_allowed: usize,
    /// Requests whose meshsim intent disagrees with the path's expectation: the caller had no identity
    /// at that instant (meshsim marks a restarted pod Ready a moment before istio-cni enrolls it; real
    /// istio-cni enrolls in the pod sandbox, before the app runs). Counted apart, not as failures.
    pub intent_mismatch: usize,
    /// First to last bad request (failure or wrongly allowed), with their times.
    pub window: Option<(Duration, Duration)>,
    /// Outcomes seen, with counts.
    pub outcomes: std::collections::BTreeMap<String, usize>,
}

impl PathSummary {
    /// Bad requests on this path (failed legitimate or allowed illegitimate).
    pub fn bad(&self) -> usize {
        self.failed + self.wrongly_allowed
    }

    /// Window length in ms (0 without bad requests).
    pub fn window_ms(&self) -> u128 {
        self.window.map(|(a, b)| (b - a).as_millis()).unwrap_or(0)
    }
}

/// What the generator saw.
#[derive(Debug, Clone, Default)]
pub struct TrafficSummary {
    pub paths: Vec<PathSummary>,
    pub samples: Vec<Sample>,
}

impl TrafficSummary {
    fn new(paths: &[CallPath], samples: Vec<Sample>) -> Self {
        let mut out: Vec<PathSummary> = paths
            .iter()
            .map(|p| PathSummary {
                name: p.name.to_string(),
                legit: p.legit,
                ..Default::default()
            })
            .collect();
        for s in &samples {
            let ps = &mut out[s.path];
            ps.requests += 1;
            *ps.outcomes.entry(s.outcome.clone()).or_default() += 1;
            ps.sim_wrongly_denied += s.wrongly_denied as usize;
            ps.sim_wrongly_allowed += s.wrongly_allowed as usize;
            if s.intended_allow != ps.legit {
                // meshsim's intent differs from the path's: the caller pod had no mesh identity at that
                // instant (a restarted pod Ready before istio-cni enrolled it); not a policy outcome.
                ps.intent_mismatch += 1;
                continue;
            }
            let bad = if ps.legit { !s.allowed } else { s.allowed };
            if bad {
                if ps.legit {
                    ps.failed += 1;
                } else {
                    ps.wrongly_allowed += 1;
                }
                ps.window = Some(match ps.window {
                    None => (s.at, s.at),
                    Some((a, _)) => (a, s.at),
                });
            }
        }
        TrafficSummary { paths: out, samples }
    }

    /// Failed legitimate requests, all paths.
    pub fn failed(&self) -> usize {
        self.paths.iter().map(|p| p.failed).sum()
    }

    /// Allowed illegitimate requests, all paths.
    pub fn wrongly_allowed(&self) -> usize {
        self.paths.iter().map(|p| p.wrongly_allowed).sum()
    }

    /// Requests, all paths.
    pub fn requests(&self) -> usize {
        self.paths.iter().map(|p| p.requests).sum()
    }

    /// The overall window: first to last bad request on any path, in ms.
    pub fn window_ms(&self) -> u128 {
        let w: Vec<(Duration, Duration)> = self.paths.iter().filter_map(|p| p.window).collect();
        match (w.iter().map(|x| x.0).min(), w.iter().map(|x| x.1).max()) {
            (Some(a), Some(b)) => (b - a).as_millis(),
            _ => 0,
        }
    }

    /// Bad or surprising requests (failure, wrongly allowed, or meshsim's intent differing from the
    /// path's), at most `max`, one line each.
    pub fn anomalies(&self, max: usize) -> String {
        let mut t = String::new();
        for s in self
            .samples
            .iter()
            .filter(|s| {
                let legit = self.paths[s.path].legit;
                (legit && !s.allowed) || (!legit && s.allowed) || s.intended_allow != legit
            })
            .take(max)
        {
            t.push_str(&format!(
                "  {:>7} ms {:<34} {:<6} intended_allow={} hops={:?}\n",
                s.at.as_millis(),
                self.paths[s.path].name,
                s.outcome,
                s.intended_allow,
                s.enforcement
            ));
        }
        t
    }

    /// A table, one line per path.
    pub fn table(&self) -> String {
        let mut t = format!(
            "{:<34} {:>6} {:>5} {:>6} {:>7} {:>10} {:>8}  outcomes\n",
            "path", "expect", "reqs", "failed", "allowed", "window_ms", "no_id"
        );
        for p in &self.paths {
            t.push_str(&format!(
                "{:<34} {:>6} {:>5} {:>6} {:>7} {:>10} {:>8}  {:?}\n",
                p.name,
                if p.legit { "allow" } else { "deny" },
                p.requests,
                p.failed,
                p.wrongly_allowed,
                p.window_ms(),
                p.intent_mismatch,
                p.outcomes
            ));
        }
        t.push_str(&self.anomalies(12));
        t
    }
}

/// Waits (bounded) until every pod of `namespaces` is Ready (as a cluster is before a migration).
pub async fn wait_pods_ready(sim: &Sim, namespaces: &[&str], want_min: usize, secs: u64) -> bool {
    let pods = meshsim::resources::core("pods");
    let until = Instant::now() + Duration::from_secs(secs);
    let mut changes = sim.store.changes();
    loop {
        let (list, _) = sim.store.list(pods, None);
        let fleet: Vec<&Value> = list
            .iter()
            .filter(|p| namespaces.iter().any(|ns| p["metadata"]["namespace"] == *ns))
            .collect();
        let ready = fleet.len() >= want_min
            && fleet.iter().all(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            });
        if ready {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
    }
}

/// Runs the real binary with `args`; returns (exit code, stdout, stderr).
pub async fn run_cli(bin: &Path, args: &[String]) -> (i32, String, String) {
    let mut c = tokio::process::Command::new(bin);
    c.args(args)
        .env("RUST_LOG", "warn")
        .env_remove("GITHUB_STEP_SUMMARY");
    let out = crate::run(c, Duration::from_secs(600)).await;
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `run` command line.
pub fn run_args(config: &Path, kubeconfig: &Path, report_dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "run".into(),
        "--config".into(),
        config.display().to_string(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--report-dir".into(),
        report_dir.display().to_string(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// The configuration of a policy run: the fleet, order, concurrency, bridges, policy migration, probes
/// (curl Jobs with mesh identities: legitimate expecting 200, illegitimate expecting a denial).
pub struct RunConfig<'a> {
    pub namespaces: &'a [&'a str],
    pub order: &'a str,
    pub concurrency: u32,
    pub bridges: bool,
    pub migration: &'a str,
    /// `migration.policies.keep_bridges`.
    pub keep_bridges: bool,
    /// `migration.policies.accept_differences`, as TOML list items (`"\"gap\""`), empty for none.
    pub accept: &'a str,
    /// `fleet.on_blocked`.
    pub on_blocked: &'a str,
    pub job_probes: bool,
    /// Extra TOML appended as is (per-namespace overrides, more probes).
    pub extra: String,
}

/// A job probe table for `[[namespaces.<ns>.probes]]`.
pub fn job_probe(
    table_ns: &str,
    name: &str,
    (src_ns, sa): (&str, &str),
    method: &str,
    url: &str,
    status: &str,
    after_steps: &str,
) -> String {
    format!(
        "[[namespaces.{table_ns}.probes]]\nname = \"{name}\"\nkind = \"job\"\nsource_namespace = \"{src_ns}\"\nservice_account = \"{sa}\"\nurl = \"{url}\"\nmethod = \"{method}\"\ntimeout = \"10s\"\nexpect = {{ status = \"{status}\" }}\npolicy = {{ interval = \"50ms\", count = 1, error_limit = 2, timeout = \"10s\" }}\nschedule = {{ after_steps = [{after_steps}], after_rollback = true }}\n\n"
    )
}

impl<'a> RunConfig<'a> {
    /// A run of `namespaces` in the given order, one at a time, with bridges, no policy migration, no
    /// accepted difference, nothing started when one is blocked, no probe Job: each test changes what it
    /// is about.
    pub fn new(namespaces: &'a [&'a str]) -> Self {
        RunConfig {
            namespaces,
            order: "as-listed",
            concurrency: 1,
            bridges: true,
            migration: "off",
            keep_bridges: false,
            accept: "",
            on_blocked: "stop",
            job_probes: false,
            extra: String::new(),
        }
    }

    /// The seed runbook's order on purpose (no bridge, no policy migration), its known outage and gap
    /// accepted so that the run measures them instead of being blocked.
    pub fn seed(namespaces: &'a [&'a str]) -> Self {
        RunConfig {
            bridges: false,
            accept: "\"outage\", \"gap\"",
            on_blocked: "skip",
            ..RunConfig::new(namespaces)
        }
    }

    /// The strategy: callers first, bridges kept, the policy migration applied.
    pub fn strategy(namespaces: &'a [&'a str]) -> Self {
        RunConfig {
            order: "callers-first",
            migration: "apply",
            keep_bridges: true,
            ..RunConfig::new(namespaces)
        }
    }

    /// Writes the TOML as `<dir>/<name>.toml` and returns its path.
    pub fn write(&self, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, self.toml()).expect("write the config");
        path
    }

    /// The TOML text.
    pub fn toml(&self) -> String {
        let list = self
            .namespaces
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut t = format!(
            "[fleet]\nnamespaces = [{list}]\nconcurrency = {}\nmax_failed_namespaces = 10\norder = \"{}\"\non_blocked = \"{}\"\n\n\
             [timeouts]\nwaypoint_ready = \"8s\"\nrollout = \"15s\"\nstep = \"30s\"\nrollback = \"30s\"\napi_request = \"5s\"\n\n\
             [migration.policies]\nbridges = {}\nkeep_bridges = {}\nmigration = \"{}\"\naccept_differences = [{}]\n\n[reports]\nprogress_interval = \"1s\"\n\n",
            self.concurrency,
            self.order,
            self.on_blocked,
            self.bridges,
            self.keep_bridges,
            self.migration,
            self.accept
        );
        if self.job_probes {
            let steps = "\"enable-ambient\", \"remove-injection\", \"remove-sidecar-policies\", \"validate\"";
            let api = "http://api.store.svc.cluster.local/";
            let books = "http://books.ledger.svc.cluster.local/";
            if self.namespaces.contains(&"store") {
                t.push_str(&job_probe(
                    "store",
                    "front-web-get-api",
                    ("front", "web"),
                    "GET",
                    api,
                    "200",
                    steps,
                ));
                t.push_str(&job_probe(
                    "store",
                    "front-other-get-api-denied",
                    ("front", "other"),
                    "GET",
                    api,
                    "403,503,0",
                    steps,
                ));
            }
            if self.namespaces.contains(&"ledger") {
                t.push_str(&job_probe(
                    "ledger",
                    "writer-get-books",
                    ("ledger", "writer"),
                    "GET",
                    books,
                    "200",
                    steps,
                ));
                t.push_str(&job_probe(
                    "ledger",
                    "intruder-get-books-denied",
                    ("ledger", "intruder"),
                    "GET",
                    books,
                    "403,503,0",
                    steps,
                ));
            }
        }
        t.push_str(&self.extra);
        // The probe Jobs' identities of these scenarios, allow-listed as an operator would.
        t.push_str(
            "\n[job_probes]\nallowed_service_accounts = [\"front/web\", \"front/other\", \"ledger/writer\", \"ledger/intruder\"]\nallowed_images = [\"curlimages/curl\"]\n",
        );
        t
    }
}

/// Objects as `(name, labels, spec)`.
pub type Objects = Vec<(String, Value, Value)>;

/// Objects of a kind in a namespace as `(name, labels, spec)`, sorted by name (for "identical to the
/// backup" comparisons).
pub fn objects(sim: &Sim, group: &str, plural: &str, ns: &str) -> Objects {
    let res = if group.is_empty() {
        meshsim::resources::core(plural)
    } else {
        meshsim::resources::id(group, plural)
    };
    let (list, _) = sim.store.list(res, Some(ns));
    let mut v: Vec<(String, Value, Value)> = list
        .iter()
        .map(|o| {
            (
                o["metadata"]["name"].as_str().unwrap_or("").to_string(),
                o["metadata"]["labels"].clone(),
                o["spec"].clone(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Labels of a namespace.
pub fn ns_labels(sim: &Sim, ns: &str) -> Value {
    sim.store
        .get(meshsim::resources::core("namespaces"), "", ns)
        .map(|o| o["metadata"]["labels"].clone())
        .unwrap_or(Value::Null)
}

/// Runs kubectl against `kubeconfig`; returns (exit code, stdout+stderr).
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs");
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), s)
}

/// The seed runbook (docs/reference/seed-enable-ambient-mode.txt) on one namespace with the real kubectl, steps 1
/// to 6 in the seed's order, waiting as the runbook says (`kubectl get gateway` READY, `kubectl rollout
/// status`); `l7_policies` are the selector policies step 5 deletes (the runbook keeps L4 ones "safe to
/// keep"); `routing` the VirtualServices/DestinationRules to delete; without `waypoint` step 1 is skipped
/// (the runbook activates "waypoints deployed in the previous step"). Returns the kubectl invocations.
pub fn seed_runbook_kubectl(
    kubeconfig: &Path,
    ns: &str,
    waypoint: bool,
    l7_policies: &[&str],
    routing: &[(&str, &str)],
) -> Result<usize, String> {
    let mut calls = 0usize;
    let mut ok = |args: &[&str]| -> Result<String, String> {
        calls += 1;
        let (code, out) = kubectl(kubeconfig, args);
        if code != 0 {
            return Err(format!("kubectl {} -> {code}: {out}", args.join(" ")));
        }
        Ok(out)
    };
    // Step 1: activate the waypoint, then check READY (polled, as an operator would).
    if waypoint {
        ok(&[
            "label",
            "namespace",
            ns,
            "istio.io/use-waypoint=waypoint",
            "--overwrite",
        ])?;
    }
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if !waypoint {
            break;
        }
        let out = ok(&[
            "get",
            "gateway",
            "waypoint",
            "-n",
            ns,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Programmed\")].status}",
        ])?;
        if out.trim() == "True" {
            break;
        }
        if Instant::now() >= until {
            return Err(format!("waypoint in {ns} not programmed"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Step 2: ambient.
    ok(&[
        "label",
        "namespace",
        ns,
        "istio.io/dataplane-mode=ambient",
        "--overwrite",
    ])?;
    // Step 3: remove injection.
    ok(&["label", "namespace", ns, "istio-injection-"])?;
    // Step 4: restart and wait.
    ok(&["rollout", "restart", "deployment", "-n", ns])?;
    ok(&["rollout", "status", "deployment", "-n", ns, "--timeout=60s"])?;
    // Step 5: delete the L7 selector policies and replaced routing.
    for p in l7_policies {
        ok(&["delete", "authorizationpolicy", p, "-n", ns])?;
    }
    for (kind, name) in routing {
        ok(&["delete", kind, name, "-n", ns])?;
    }
    // Step 6: validate (read-only).
    ok(&["get", "pods", "-n", ns])?;
    Ok(calls)
}

/// A fresh temp directory path for reports etc.
pub fn subdir(base: &Path, name: &str) -> PathBuf {
    let p = base.join(name);
    std::fs::create_dir_all(&p).expect("create dir");
    p
}

/// Reads the JSON report of a run.
pub fn report(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("ambient-migrate-report.json")).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Runs `ambient-migrate <args>` in this process (the same pipeline as the binary: settings layering,
/// kubeconfig, fleet preflight, lease, engine, reports); returns the exit code. Benchmarks use it so that
/// the process's peak memory includes the runner.
pub async fn run_in_process(args: &[String]) -> i32 {
    use ambient_migrate::{app, cli::Cli};
    let mut full = vec!["ambient-migrate".to_string()];
    full.extend(args.iter().cloned());
    match Cli::try_parse_checked(full) {
        Ok(cli) => app::run(cli).await,
        Err(e) => {
            eprintln!("usage: {e}");
            app::exit::USAGE
        }
    }
}

/// Peak resident set size of this process (`VmHWM` of /proc/self/status), in KiB.
pub fn vm_hwm_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
