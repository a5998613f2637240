//! Shared helpers of the end-to-end acceptance tests (`tests/e2e_*.rs`): each test starts its own
//! meshsim in-process (fixture + faults, small latencies), writes a config TOML, runs the REAL
//! `ambient-migrate` binary as a child process and checks what it did through meshsim's store, request log
//! and the report files.
//!
//! - [`start`]: meshsim with fixtures, faults and [`sim_settings`]; [`Env::wait_ready`] waits until the
//!   namespace runs on ready sidecars (and its waypoint is programmed), as a cluster would before a migration.
//! - [`Cfg`]: the config TOML (fleet, short timeouts, a short lease, probes through meshsim's proxy);
//!   [`seed_probes`] are the probes of the seed namespace `shop`.
//! - [`Env::run`] / [`Env::spawn`]: the binary with `--kubeconfig`, `--config`, `--report-dir`.
//! - [`Env::config_dump`]: a namespace's labels, Service labels and Istio/Gateway API objects, normalized
//!   (server fields and status stripped), to compare with [`backup_dump`] of the backup file the run wrote.
//! - [`Env::pods`], [`Env::journal_phase`], [`Env::store_dump`]; pod predicates in [`crate::pods`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use meshsim::{FaultKind, FaultSpec, Running, Settings};
use serde_json::{Value, json};

pub use crate::SEED;
pub use crate::pods::{ambient_pod, is_app_pod, sidecar_ready};
pub use crate::sa as sa_common;

/// The tool's state namespace.
pub const STATE_NS: &str = "ambient-migrate";
/// Kinds the backup holds (apiVersion, kind, store group, plural).
pub const BACKED_UP: [(&str, &str); 9] = [
    ("security.istio.io", "authorizationpolicies"),
    ("security.istio.io", "peerauthentications"),
    ("security.istio.io", "requestauthentications"),
    ("networking.istio.io", "virtualservices"),
    ("networking.istio.io", "destinationrules"),
    ("networking.istio.io", "sidecars"),
    ("telemetry.istio.io", "telemetries"),
    ("gateway.networking.k8s.io", "httproutes"),
    ("gateway.networking.k8s.io", "gateways"),
];
/// Labels the migration manages on Namespaces and Services.
pub const ISTIO_LABELS: [&str; 4] = [
    "istio-injection",
    "istio.io/rev",
    "istio.io/dataplane-mode",
    "istio.io/use-waypoint",
];

/// Small latencies (5-30 ms) so a namespace migrates in a few seconds.
pub fn sim_settings() -> Settings {
    crate::Latencies::E2e.settings()
}

/// A fault of `kind` in `ns`, active while `label` (`k=v`, `k`, `!k`) holds on the namespace.
pub fn fault(kind: FaultKind, ns: &str, trigger: Option<&str>) -> FaultSpec {
    let mut f = FaultSpec::new(kind, Some(ns));
    if let Some(label) = trigger {
        f.trigger = Some(meshsim::faults::Trigger {
            namespace: ns.into(),
            label: label.into(),
        });
    }
    f
}

/// A running meshsim and a temp dir with its kubeconfig.
pub struct Env {
    pub running: Running,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        sa_common::assert_nothing_forbidden(&self.running);
    }
}

/// What a run of the binary produced.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The `--report-dir` of the run.
    pub report_dir: PathBuf,
}

impl Output {
    /// The JSON report (`ambient-migrate-report.json`).
    pub fn report(&self) -> Value {
        let p = self.report_dir.join("ambient-migrate-report.json");
        let t = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("report {}: {e}\n{self}", p.display()));
        serde_json::from_str(&t).expect("report JSON")
    }

    /// The report section of `ns`.
    pub fn ns_report(&self, ns: &str) -> Value {
        self.report()["namespaces"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["name"] == ns).cloned())
            .unwrap_or_else(|| panic!("no report section for {ns}\n{self}"))
    }

    /// The backup file the run wrote for `ns`.
    pub fn backup_file(&self, ns: &str) -> PathBuf {
        self.report_dir.join("backups").join(format!("backup-{ns}.yaml"))
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Starts meshsim with `fixtures`, `faults` and `settings`, and writes its kubeconfig.
pub async fn start_with(fixtures: &[&str], faults: Vec<FaultSpec>, settings: Settings) -> Env {
    let fixtures = fixtures.iter().map(|s| s.to_string()).collect();
    let (dir, kubeconfig, running) = sa_common::start_sim(fixtures, faults, settings).await;
    // The binary runs as the shipped ServiceAccount (see sa_common).
    let rbac = sa_common::shipped_rbac_for(&running);
    sa_common::install(&running, dir.path(), &kubeconfig, &rbac).await;
    Env {
        running,
        dir,
        kubeconfig,
    }
}

/// Starts meshsim with `fixtures` and `faults` and the small latencies.
pub async fn start(fixtures: &[&str], faults: Vec<FaultSpec>) -> Env {
    start_with(fixtures, faults, sim_settings()).await
}

fn res(group: &str, plural: &str) -> meshsim::resources::ResId {
    meshsim::resources::id(group, plural)
}

impl Env {
    /// The simulated cluster's store.
    pub fn store(&self) -> &meshsim::Store {
        &self.running.sim.store
    }

    /// An edit by someone else (an operator): `f` changes a copy of the stored object, which is written
    /// back without a resourceVersion precondition (`f` runs again on the newer object if the store
    /// was written in between).
    pub fn edit(&self, res: meshsim::resources::ResId, ns: &str, name: &str, mut f: impl FnMut(&mut Value)) {
        self.store()
            .update_with(
                res,
                ns,
                name,
                meshsim::store::Target::Main,
                &meshsim::store::WriteOpts::default(),
                |o| {
                    let mut o = o.clone();
                    f(&mut o);
                    if let Some(m) = o["metadata"].as_object_mut() {
                        m.remove("resourceVersion");
                    }
                    Ok(o)
                },
            )
            .unwrap_or_else(|e| panic!("edit {ns}/{name}: {e}"));
    }

    /// meshsim's probe proxy URL.
    pub fn proxy(&self) -> String {
        self.running.proxy_url().expect("proxy")
    }

    /// Waits (bounded, on store changes) until every workload pod of `ns` runs with a ready sidecar, each
    /// Deployment has all its replicas, and the namespace's waypoint (if any) is programmed.
    pub async fn wait_ready(&self, ns: &str) {
        self.wait_ready_opts(ns, true).await
    }

    /// [`Env::wait_ready`], optionally not waiting for the waypoint (a fault keeps it unready).
    pub async fn wait_ready_opts(&self, ns: &str, waypoint: bool) {
        let deps = res("apps", "deployments");
        let gws = res("gateway.networking.k8s.io", "gateways");
        self.wait_until(&format!("namespace {ns} ready on sidecars"), 20, || {
            let (d, _) = self.store().list(deps, Some(ns));
            let deps_ok = d
                .iter()
                .filter(|d| waypoint || d["metadata"]["ownerReferences"].is_null())
                .all(|d| {
                    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
                    d["status"]["readyReplicas"].as_i64() == Some(want)
                        && d["status"]["updatedReplicas"].as_i64() == Some(want)
                        && d["status"]["replicas"].as_i64() == Some(want)
                });
            let pods = self.pods(ns);
            let pods_ok = !pods.is_empty()
                && pods.iter().all(|p| {
                    if is_app_pod(p) {
                        sidecar_ready(p)
                    } else {
                        crate::pods::serving(p) || !waypoint
                    }
                });
            let (g, _) = self.store().list(gws, Some(ns));
            let gw_ok = !waypoint
                || g.iter()
                    .all(|g| g["status"]["addresses"].as_array().is_some_and(|a| !a.is_empty()));
            deps_ok && pods_ok && gw_ok
        })
        .await;
        // Let the controllers finish their status writes (nothing changes for a while).
        self.wait_settled(Duration::from_millis(150), 10).await;
    }

    /// Waits until no write reached the store for `quiet` (bounded by `max_secs`).
    pub async fn wait_settled(&self, quiet: Duration, max_secs: u64) {
        let until = tokio::time::Instant::now() + Duration::from_secs(max_secs);
        let mut changes = self.store().changes();
        loop {
            changes.borrow_and_update();
            match tokio::time::timeout(quiet, changes.changed()).await {
                Err(_) => return,
                Ok(_) if tokio::time::Instant::now() >= until => {
                    panic!("the store did not settle within {max_secs}s")
                }
                Ok(_) => {}
            }
        }
    }

    /// Waits (re-checking on every store change, at least every 100 ms) until `cond` holds; panics after
    /// `secs` with `what`.
    pub async fn wait_until(&self, what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
        let until = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut changes = self.store().changes();
        loop {
            changes.borrow_and_update();
            if cond() {
                return;
            }
            if tokio::time::Instant::now() >= until {
                panic!("timed out after {secs}s waiting for: {what}");
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
        }
    }

    /// Pods of `ns` (terminating ones excluded).
    pub fn pods(&self, ns: &str) -> Vec<Value> {
        let (list, _) = self.store().list(meshsim::resources::core("pods"), Some(ns));
        list.into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect()
    }

    /// Workload pods of `ns` (no waypoint or Job pods, none terminating).
    pub fn app_pods(&self, ns: &str) -> Vec<Value> {
        self.pods(ns).into_iter().filter(is_app_pod).collect()
    }

    /// Labels of a Namespace.
    pub fn ns_labels(&self, ns: &str) -> BTreeMap<String, String> {
        let o = self
            .store()
            .get(meshsim::resources::core("namespaces"), "", ns)
            .unwrap_or_else(|| panic!("namespace {ns}"));
        serde_json::from_value(o["metadata"]["labels"].clone()).unwrap_or_default()
    }

    /// The run's state annotation on the Namespace (`ambient-migrate.io/state`): where the run is, staged
    /// phases included (the journal shows the phase last written, which may lag by the steps that sent
    /// nothing).
    pub fn state_annotation(&self, ns: &str) -> Option<String> {
        let o = self.store().get(meshsim::resources::core("namespaces"), "", ns)?;
        o["metadata"]["annotations"][ambient_migrate::journal::STATE_ANNOTATION]
            .as_str()
            .map(str::to_string)
    }

    /// Where the run is in `ns`, as its two witnesses say: the state annotation (shows a step as it starts,
    /// latest phase only, so a short step may never be shown) and the journal (from a step's first write to
    /// the next step's; a step that sends nothing is never in it). The run is in a phase when either says so.
    pub fn run_phases(&self, ns: &str) -> Vec<String> {
        [self.state_annotation(ns), self.journal_phase(ns)]
            .into_iter()
            .flatten()
            .collect()
    }

    /// Does the object exist?
    pub fn exists(&self, group: &str, plural: &str, ns: &str, name: &str) -> bool {
        self.store().get(res(group, plural), ns, name).is_some()
    }

    /// A namespace's configuration as the migration sees it: all Namespace labels, all Service labels, and
    /// every object of the backed-up kinds with server fields and status stripped. Equal dumps = same config.
    pub fn config_dump(&self, ns: &str) -> Value {
        let mut objects = BTreeMap::new();
        for (group, plural) in BACKED_UP {
            let (list, _) = self.store().list(res(group, plural), Some(ns));
            for o in list {
                let n = normalize(&o);
                objects.insert(obj_key(&n), n);
            }
        }
        let (svcs, _) = self.store().list(meshsim::resources::core("services"), Some(ns));
        let services: BTreeMap<String, Value> = svcs
            .iter()
            .map(|s| {
                (
                    s["metadata"]["name"].as_str().unwrap_or("").to_string(),
                    s["metadata"]["labels"].clone(),
                )
            })
            .collect();
        json!({"namespaceLabels": self.ns_labels(ns), "serviceLabels": services, "objects": objects})
    }

    /// The journal record of `ns` (ConfigMap `journal-<ns>` in the state namespace), if any.
    pub fn journal(&self, ns: &str) -> Option<Value> {
        let cm = self.store().get(
            meshsim::resources::core("configmaps"),
            STATE_NS,
            &format!("journal-{ns}"),
        )?;
        serde_json::from_str(cm["data"]["journal.json"].as_str()?).ok()
    }

    /// The journal phase of `ns` as a short label: `pending`, `in-step:restart`, `step-done:restart`,
    /// `rolling-back:restart`, `migrated`, `rolled-back`, ...
    pub fn journal_phase(&self, ns: &str) -> Option<String> {
        let p = self.journal(ns)?["phase"].clone();
        Some(match &p {
            Value::String(s) => s.clone(),
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}:{s}"),
                    Value::Object(inner) => format!(
                        "{k}:{}",
                        inner.values().next().and_then(Value::as_str).unwrap_or("")
                    ),
                    other => format!("{k}:{other}"),
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        })
    }

    /// Every object in the store (all kinds, all namespaces) and the store's resourceVersion.
    pub fn store_dump(&self) -> (u64, Vec<Value>) {
        let rv = self.store().resource_version();
        let mut all = Vec::new();
        for (i, _) in meshsim::resources::REGISTRY.iter().enumerate() {
            let (list, _) = self.store().list(i, None);
            all.extend(list);
        }
        (rv, all)
    }

    /// meshsim's request log (every API request the binary sent).
    pub fn requests(&self) -> Vec<meshsim::accounting::RequestRecord> {
        self.running.sim.accounting.log()
    }

    /// Mutating requests (create/update/patch/delete without dry run) in the log.
    pub fn mutating_requests(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| r.is_mutating())
            .map(|r| {
                format!(
                    "{} {} {:?}/{:?} -> {}",
                    r.verb, r.resource, r.namespace, r.name, r.code
                )
            })
            .collect()
    }

    /// Writes `toml` as a config file; returns its path.
    pub fn write_config(&self, name: &str, toml: &str) -> PathBuf {
        let p = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&p, toml).expect("write config");
        p
    }

    /// A fresh report directory.
    pub fn report_dir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(format!("reports-{name}"));
        std::fs::create_dir_all(&p).expect("report dir");
        p
    }

    fn command(&self, config: &Path, report_dir: &Path, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(crate::bin());
        c.args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--config")
            .arg(config)
            .arg("--report-dir")
            .arg(report_dir)
            .env_remove("GITHUB_STEP_SUMMARY")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// Runs the binary with `args` (plus `--kubeconfig`, `--config`, `--report-dir <dir>/reports-<tag>`),
    /// bounded by 90 s.
    pub async fn run(&self, config: &Path, tag: &str, args: &[&str]) -> Output {
        let report_dir = self.report_dir(tag);
        let out = crate::run(self.command(config, &report_dir, args), Duration::from_secs(90)).await;
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            report_dir,
        }
    }

    /// Starts the binary without waiting (output piped; read it with `wait_with_output`).
    pub fn spawn(&self, config: &Path, tag: &str, args: &[&str]) -> (tokio::process::Child, PathBuf) {
        let report_dir = self.report_dir(tag);
        let child = self
            .command(config, &report_dir, args)
            .spawn()
            .expect("spawn binary");
        (child, report_dir)
    }

    /// Asserts that `ns` is back to its state before the migration: config equal to `before` (dump taken
    /// before the run) and to the backup file, every workload pod with a ready sidecar, none enrolled.
    pub fn assert_rolled_back(&self, ns: &str, before: &Value, backup_file: &Path) {
        let now = self.config_dump(ns);
        assert_config_eq(before, &now, &format!("{ns} after rollback vs before the run"));
        let backup = backup_dump(backup_file);
        assert_eq!(
            backup["namespaceLabels"], now["namespaceLabels"],
            "{ns}: namespace labels differ from the backup file"
        );
        for (svc, labels) in backup["serviceLabels"].as_object().into_iter().flatten() {
            assert_eq!(
                &now["serviceLabels"][svc], labels,
                "{ns}: labels of Service {svc} differ from the backup file"
            );
        }
        assert_eq!(
            backup["objects"], now["objects"],
            "{ns}: Istio objects differ from the backup file"
        );
        let pods = self.app_pods(ns);
        assert!(!pods.is_empty(), "{ns}: no pods");
        for p in &pods {
            assert!(
                sidecar_ready(p),
                "{ns}: pod {} has no ready sidecar after rollback: {}",
                p["metadata"]["name"],
                p["status"]
            );
            assert!(
                p["metadata"]["annotations"]["ambient.istio.io/redirection"].is_null(),
                "{ns}: pod {} still enrolled in ambient",
                p["metadata"]["name"]
            );
        }
    }

    /// Asserts the end state of a migrated namespace: labels, pods sidecar-free and enrolled.
    pub fn assert_migrated_pods(&self, ns: &str) {
        let labels = self.ns_labels(ns);
        assert_eq!(
            labels.get("istio.io/dataplane-mode").map(String::as_str),
            Some("ambient")
        );
        assert!(
            !labels.contains_key("istio-injection"),
            "{ns}: injection label left: {labels:?}"
        );
        assert!(
            !labels.contains_key("istio.io/rev"),
            "{ns}: istio.io/rev left: {labels:?}"
        );
        let pods = self.app_pods(ns);
        assert!(!pods.is_empty(), "{ns}: no pods");
        for p in &pods {
            assert!(
                ambient_pod(p),
                "{ns}: pod {} is not sidecar-free + enrolled + Ready: {} {}",
                p["metadata"]["name"],
                p["metadata"]["annotations"],
                p["status"]
            );
        }
    }
}

/// `(kind, name)` key of a normalized object.
fn obj_key(o: &Value) -> String {
    format!(
        "{}/{}",
        o["kind"].as_str().unwrap_or(""),
        o["metadata"]["name"].as_str().unwrap_or("")
    )
}

/// Keeps what the user configured: apiVersion, kind, name, namespace, labels, annotations (minus the
/// tool's own state annotations), spec (and the other top-level fields except status).
pub fn normalize(o: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for (k, v) in o.as_object().into_iter().flatten() {
        if k == "status" || k == "metadata" {
            continue;
        }
        out.insert(k.clone(), v.clone());
    }
    let m = &o["metadata"];
    let mut meta = serde_json::Map::new();
    meta.insert("name".into(), m["name"].clone());
    meta.insert("namespace".into(), m["namespace"].clone());
    if let Some(l) = m["labels"].as_object().filter(|l| !l.is_empty()) {
        meta.insert("labels".into(), Value::Object(l.clone()));
    }
    if let Some(a) = m["annotations"].as_object() {
        let a: serde_json::Map<String, Value> = a
            .iter()
            .filter(|(k, _)| !k.starts_with("ambient-migrate.io/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !a.is_empty() {
            meta.insert("annotations".into(), Value::Object(a));
        }
    }
    out.insert("metadata".into(), Value::Object(meta));
    Value::Object(out)
}

/// The backup file (multi-document YAML) in [`Env::config_dump`]'s shape.
pub fn backup_dump(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("backup file {}: {e}", path.display()));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("backup YAML");
    let mut ns_labels = Value::Null;
    let mut services = serde_json::Map::new();
    let mut objects = BTreeMap::new();
    for d in docs {
        if d.is_null() {
            continue;
        }
        match d["kind"].as_str() {
            Some("Namespace") => ns_labels = d["metadata"]["labels"].clone(),
            Some("Service") => {
                services.insert(
                    d["metadata"]["name"].as_str().unwrap_or("").to_string(),
                    d["metadata"]["labels"].clone(),
                );
            }
            _ => {
                let n = normalize(&d);
                objects.insert(obj_key(&n), n);
            }
        }
    }
    json!({"namespaceLabels": ns_labels, "serviceLabels": services, "objects": objects})
}

/// Asserts two config dumps are equal, naming the first difference.
pub fn assert_config_eq(want: &Value, got: &Value, what: &str) {
    if want == got {
        return;
    }
    for part in ["namespaceLabels", "serviceLabels"] {
        assert_eq!(want[part], got[part], "{what}: {part} differ");
    }
    let w = want["objects"].as_object().cloned().unwrap_or_default();
    let g = got["objects"].as_object().cloned().unwrap_or_default();
    for (k, v) in &w {
        assert_eq!(Some(v), g.get(k), "{what}: object {k} differs");
    }
    for k in g.keys() {
        assert!(w.contains_key(k), "{what}: unexpected object {k}: {}", g[k]);
    }
    panic!("{what}: dumps differ");
}

/// The configuration TOML of a test run.
#[derive(Debug, Clone)]
pub struct Cfg {
    pub namespaces: Vec<String>,
    pub waypoint_ready: &'static str,
    pub rollout: &'static str,
    pub step: &'static str,
    pub rollback: &'static str,
    pub lease: &'static str,
    /// Probes per namespace, as TOML `[[namespaces.<ns>.probes]]` tables.
    pub probes: BTreeMap<String, String>,
    /// Extra TOML appended verbatim.
    pub extra: String,
}

impl Cfg {
    /// Short timeouts and a 3 s lease for `namespaces`.
    pub fn new(namespaces: &[&str]) -> Self {
        Cfg {
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            waypoint_ready: "4s",
            rollout: "8s",
            step: "8s",
            rollback: "20s",
            lease: "3s",
            probes: BTreeMap::new(),
            extra: String::new(),
        }
    }

    /// Adds probe tables for `ns`.
    pub fn probes(mut self, ns: &str, tables: &str) -> Self {
        self.probes.entry(ns.to_string()).or_default().push_str(tables);
        self
    }

    /// The TOML text.
    pub fn toml(&self) -> String {
        let list = self
            .namespaces
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut t = format!(
            "[fleet]\nnamespaces = [{list}]\nconcurrency = 2\nmax_failed_namespaces = 5\n\n\
             [timeouts]\nwaypoint_ready = \"{}\"\nrollout = \"{}\"\nstep = \"{}\"\nrollback = \"{}\"\napi_request = \"5s\"\nlease = \"{}\"\n\n\
             [reports]\nprogress_interval = \"1s\"\n\n\
             # These tests exercise the engine on the seed, whose db policy admits the waypoint without a\n\
             # twin (an enforcement gap, tested in e2e_policies): accepted here so the seed migrates.\n\
             [migration.policies]\naccept_differences = [\"outage\", \"gap\"]\n\n",
            self.waypoint_ready, self.rollout, self.step, self.rollback, self.lease
        );
        for tables in self.probes.values() {
            t.push_str(tables);
            t.push('\n');
        }
        t.push_str(&self.extra);
        t
    }
}

/// An http probe through meshsim's proxy, from `source` (`ns/workload`, or `None` = outside the mesh).
#[allow(clippy::too_many_arguments)]
pub fn http_probe(
    ns: &str,
    name: &str,
    proxy: &str,
    source: Option<&str>,
    method: &str,
    url: &str,
    status: &str,
    l7: bool,
) -> String {
    let source = source.map(|s| format!("source = \"{s}\"\n")).unwrap_or_default();
    let schedule = if l7 {
        "schedule = { after_steps = [\"remove-sidecar-policies\", \"validate\"], during_restart = false, after_rollback = true }\n"
    } else {
        ""
    };
    format!(
        "[[namespaces.{ns}.probes]]\nname = \"{name}\"\nkind = \"http\"\nurl = \"{url}\"\nmethod = \"{method}\"\nproxy = \"{proxy}\"\n{source}l7 = {l7}\nexpect = {{ status = \"{status}\" }}\npolicy = {{ interval = \"50ms\", count = 2, failure_limit = 0, error_limit = 3, timeout = \"2s\" }}\n{schedule}\n"
    )
}

/// The seed namespace's probes: outside -> web 200; web -> api GET 200; api -> db GET 200 (the L4 policy);
/// and the L7 expectation web -> api DELETE 403.
pub fn seed_probes(ns: &str, proxy: &str) -> String {
    let url = |svc: &str| format!("http://{svc}.{ns}.svc.cluster.local/");
    let web_src = format!("{ns}/web");
    let api_src = format!("{ns}/api");
    [
        http_probe(ns, "web", proxy, None, "GET", &url("web"), "200", false),
        http_probe(
            ns,
            "web-get-api",
            proxy,
            Some(&web_src),
            "GET",
            &url("api"),
            "200",
            false,
        ),
        http_probe(
            ns,
            "api-get-db",
            proxy,
            Some(&api_src),
            "GET",
            &url("db"),
            "200",
            false,
        ),
        http_probe(
            ns,
            "web-delete-api-denied",
            proxy,
            Some(&web_src),
            "DELETE",
            &url("api"),
            "403",
            true,
        ),
    ]
    .concat()
}

/// The seed fixture with the namespace renamed (`shop` -> `ns`) and its namespace labels replaced by
/// `ns_labels` (YAML flow map content, e.g. `istio.io/rev: 1-30`).
pub fn seed_as(ns: &str, ns_labels: &str) -> String {
    let renamed = SEED
        .replace("namespace: shop", &format!("namespace: {ns}"))
        .replace("name: shop\n", &format!("name: {ns}\n"))
        .replace(".shop.svc.cluster.local", &format!(".{ns}.svc.cluster.local"))
        .replace("/ns/shop/", &format!("/ns/{ns}/"));
    renamed.replacen(
        "  labels:\n    istio-injection: enabled\n",
        &format!("  labels: {{{ns_labels}}}\n"),
        1,
    )
}
