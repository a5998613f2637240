//! Shared helpers for the end-to-end fleet tests (`e2e_fleet`, `e2e_cli`, `rbac_coverage`); use with
//! `mod fleet_common;`.
//!
//! - [`Fleet`]: meshsim started in-process with a fleet fixture, a kubeconfig and a report directory in a
//!   temp dir, and the REAL binary run as a child process against it ([`Fleet::run`], [`Fleet::spawn`]).
//! - [`fixture`]: small sidecar namespaces (from `ambient_migrate::demo::plain_namespace`), some of them
//!   made to fail (crash loop after the restart, short progress deadline) with [`crashloop`].
//! - [`fleet_config`]: a config TOML for a fleet with short timeouts.
//! - Request-log helpers: the product's requests ([`Fleet::product_log`]), the ones concerning a namespace
//!   ([`concerns`]), in-flight intervals and their maximum overlap ([`in_flight`], [`max_overlap`]).
//! - [`NsState`]: what a namespace looks like in meshsim's store (labels, resourceVersions, pods), to
//!   prove "nothing touched" and "config equal to the backup".
//! - [`assert_report_matches_schema`]: the report checked against docs/report.schema.json (the
//!   `jsonschema` crate, shared with tests/report_formats.rs), and [`check_junit`]: structural JUnit checks (the schema CI publishers accept).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use jiff::Timestamp;
use meshsim::accounting::RequestRecord;
use meshsim::{FaultKind, FaultSpec, Running, Settings};
use serde_json::Value;

pub use crate::pods::has_sidecar;
pub use crate::sa as sa_common;
pub use sa_common::{SERVICE_ACCOUNT_USER, remove_verb, shipped_namespace_bindings, shipped_rbac};

/// The product's user agent, first word (`ambient-migrate/0.1.0`).
pub const PRODUCT_AGENT: &str = "ambient-migrate";

/// meshsim latencies: fast, but slow enough that namespaces overlap in time.
pub fn sim_settings() -> Settings {
    crate::Latencies::Fleet.settings()
}

/// A fleet fixture: one plain sidecar namespace per entry (`(name, faulty)`), each with one Deployment
/// (2 replicas) behind a Service; faulty namespaces get `progressDeadlineSeconds: 2` so their crash loop
/// (see [`crashloop`]) fails the rollout gate quickly.
pub fn fixture(namespaces: &[(&str, bool)]) -> String {
    namespaces
        .iter()
        .map(|(ns, faulty)| {
            let extra = if *faulty {
                "  progressDeadlineSeconds: 2\n"
            } else {
                ""
            };
            ambient_migrate::demo::plain_namespace(ns, &["app"], extra)
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Pods created while `ns` has no `istio-injection` label (after step 3) crash-loop; once a rollback
/// restores the label, new pods are healthy (as in src/demo.rs).
pub fn crashloop(ns: &str) -> FaultSpec {
    let mut f = FaultSpec::new(FaultKind::PodsCrashloopAfterRestart, Some(ns));
    f.trigger = Some(meshsim::faults::Trigger {
        namespace: ns.into(),
        label: "!istio-injection".into(),
    });
    f
}

/// A config TOML: the fleet, canaries, concurrency, budget, short timeouts, and `extra` appended.
pub fn fleet_config(
    namespaces: &[&str],
    canary: &[&str],
    concurrency: u32,
    max_failed: u32,
    extra: &str,
) -> String {
    let list = |v: &[&str]| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "[fleet]\nnamespaces = [{}]\ncanary = [{}]\nconcurrency = {concurrency}\nmax_failed_namespaces = {max_failed}\n\n\
         [timeouts]\nwaypoint_ready = \"5s\"\nrollout = \"8s\"\nstep = \"15s\"\nrollback = \"20s\"\napi_request = \"5s\"\n\n\
         [reports]\nprogress_interval = \"1s\"\n\n{extra}",
        list(namespaces),
        list(canary)
    )
}

/// A running meshsim with a fleet, plus a temp dir holding the kubeconfig, config files and reports.
pub struct Fleet {
    pub running: Running,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub reports: PathBuf,
}

impl Fleet {
    /// Starts meshsim with `fixture` and `faults`, waits until every pod of the fixture is Ready.
    pub async fn start(fixture: &str, faults: Vec<FaultSpec>) -> Fleet {
        Self::start_with(vec![fixture.to_string()], faults, sim_settings()).await
    }

    /// Starts meshsim with several fixture texts and explicit settings.
    pub async fn start_with(fixtures: Vec<String>, faults: Vec<FaultSpec>, settings: Settings) -> Fleet {
        let (dir, kubeconfig, running) = sa_common::start_sim(fixtures, faults, settings).await;
        let reports = dir.path().join("reports");
        let f = Fleet {
            running,
            dir,
            kubeconfig,
            reports,
        };
        // The binary runs as the shipped ServiceAccount (see sa_common).
        let rbac = sa_common::shipped_rbac_for(&f.running);
        f.use_service_account(&rbac).await;
        f.wait_pods_ready(Duration::from_secs(20)).await;
        f
    }

    /// The simulation.
    pub fn sim(&self) -> &meshsim::Sim {
        &self.running.sim
    }

    /// Waits (bounded) until every pod outside istio-system is Ready; panics on timeout.
    pub async fn wait_pods_ready(&self, within: Duration) {
        let pods = meshsim::resources::core("pods");
        let until = tokio::time::Instant::now() + within;
        let mut changes = self.running.sim.store.changes();
        loop {
            let (list, _) = self.running.sim.store.list(pods, None);
            let fleet: Vec<_> = list
                .iter()
                .filter(|p| p["metadata"]["namespace"] != "istio-system")
                .collect();
            if !fleet.is_empty() && fleet.iter().all(|p| crate::pods::ready_condition(p)) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "fleet pods not ready within {within:?}"
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
        }
    }

    /// Writes a config file into the temp dir; returns its path.
    pub fn write_config(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write config");
        p
    }

    /// `ambient-migrate <args> --kubeconfig K --report-dir R` (env cleared of AMBIENT_MIGRATE_*).
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(crate::bin());
        c.args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--report-dir")
            .arg(&self.reports)
            .env("RUST_LOG", "info,kube=warn")
            .env_remove("GITHUB_STEP_SUMMARY")
            .env_remove("KUBECONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AMBIENT_MIGRATE_") {
                c.env_remove(k);
            }
        }
        c
    }

    /// Runs the binary to completion (bounded by `limit`); returns its output.
    pub async fn run(&self, args: &[&str], limit: Duration) -> Output {
        run_cmd(self.command(args), limit).await
    }

    /// The product's requests in meshsim's log (user agent `ambient-migrate/...`), oldest first.
    pub fn product_log(&self) -> Vec<RequestRecord> {
        self.running
            .sim
            .accounting
            .log()
            .into_iter()
            .filter(|r| r.agent() == PRODUCT_AGENT)
            .collect()
    }

    /// The product's writes that reached the store (`verb path`), oldest first.
    pub fn product_writes(&self) -> Vec<String> {
        self.product_log()
            .iter()
            .filter(|r| r.is_mutating())
            .map(|r| format!("{} {}", r.verb, r.path))
            .collect()
    }

    /// The JSON report of the last run (panics when missing or invalid JSON).
    pub fn report(&self) -> Value {
        let p = self.reports.join("ambient-migrate-report.json");
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).expect("report is JSON")
    }

    /// `namespace -> outcome` from the JSON report.
    pub fn outcomes(&self) -> BTreeMap<String, String> {
        outcomes_of(&self.report())
    }

    /// A namespace's current state in the store.
    pub fn ns_state(&self, ns: &str) -> NsState {
        NsState::read(&self.running.sim.store, ns)
    }

    /// The journal record of `ns` (ConfigMap `journal-<ns>` in `ambient-migrate`), parsed from the store.
    pub fn journal(&self, ns: &str) -> Option<Value> {
        let cms = meshsim::resources::core("configmaps");
        let cm = self
            .running
            .sim
            .store
            .get(cms, "ambient-migrate", &format!("journal-{ns}"))?;
        let data = cm["data"].as_object()?;
        data.values()
            .filter_map(Value::as_str)
            .find_map(|t| serde_json::from_str::<Value>(t).ok())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        sa_common::assert_nothing_forbidden(&self.running);
    }
}

impl Fleet {
    /// Re-installs `rbac` (the shipped documents, edited) and a fresh ServiceAccount token; later runs of
    /// the binary use it.
    pub async fn use_service_account(&self, rbac: &[Value]) {
        sa_common::install(&self.running, self.dir.path(), &self.kubeconfig, rbac).await;
    }
}

/// Runs a command to completion within `limit` (panics on timeout; the child is killed on drop).
pub use crate::run as run_cmd;

/// Text of stdout + stderr, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `namespace -> outcome` of a JSON report.
pub fn outcomes_of(report: &Value) -> BTreeMap<String, String> {
    report["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or_default().to_string(),
                n["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Whether a request concerns namespace `ns`: sent to it, to the Namespace object itself, or to its
/// journal/backup ConfigMaps in the state namespace.
pub fn concerns(r: &RequestRecord, ns: &str) -> bool {
    if r.namespace.as_deref() == Some(ns) {
        return true;
    }
    if r.resource == "namespaces" && r.name.as_deref() == Some(ns) {
        return true;
    }
    r.namespace.as_deref() == Some("ambient-migrate")
        && r.resource == "configmaps"
        && (r.name.as_deref() == Some(&format!("journal-{ns}"))
            || r.name.as_deref() == Some(&format!("backup-{ns}")))
}

/// Per namespace, the interval from the first to the last mutating request concerning it.
pub fn in_flight(log: &[RequestRecord], namespaces: &[&str]) -> BTreeMap<String, (Timestamp, Timestamp)> {
    let mut out = BTreeMap::new();
    for ns in namespaces {
        let times: Vec<Timestamp> = log
            .iter()
            .filter(|r| r.is_mutating() && concerns(r, ns))
            .map(|r| {
                r.time
                    .parse::<Timestamp>()
                    .expect("RFC 3339 time in the request log")
            })
            .collect();
        if let (Some(first), Some(last)) = (times.iter().min(), times.iter().max()) {
            out.insert(ns.to_string(), (*first, *last));
        }
    }
    out
}

/// Most intervals open at the same instant (closed intervals; an end at the same instant as a start
/// counts as over first).
pub fn max_overlap(intervals: &BTreeMap<String, (Timestamp, Timestamp)>) -> usize {
    let mut points: Vec<(Timestamp, i32)> = Vec::new();
    for (a, b) in intervals.values() {
        points.push((*a, 1));
        points.push((*b, -1));
    }
    points.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.cmp(&y.1)));
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in points {
        cur += d;
        max = max.max(cur);
    }
    max as usize
}

/// What a namespace looks like in the store: enough to prove it was not touched or was restored.
#[derive(Debug, Clone, PartialEq)]
pub struct NsState {
    pub labels: Value,
    pub ns_rv: String,
    /// Pod name -> resourceVersion.
    pub pods: BTreeMap<String, String>,
    /// Deployment name -> (generation, spec): controllers keep writing status, the product writes spec.
    pub deployments: BTreeMap<String, Value>,
    /// Service name -> labels.
    pub service_labels: BTreeMap<String, Value>,
    /// `kind/name` -> spec of every Istio / Gateway API object in the namespace.
    pub config: BTreeMap<String, Value>,
}

/// Kinds whose specs make up a namespace's mesh configuration (the kinds the backup holds).
const CONFIG_KINDS: &[(&str, &str)] = &crate::e2e::BACKED_UP;

impl NsState {
    /// Reads `ns` from the store.
    pub fn read(store: &meshsim::Store, ns: &str) -> NsState {
        let nsobj = store
            .get(meshsim::resources::core("namespaces"), "", ns)
            .unwrap_or_else(|| panic!("namespace {ns} exists"));
        let names_rvs = |res| {
            let (l, _) = store.list(res, Some(ns));
            l.iter()
                .map(|o| {
                    (
                        o["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                        o["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    )
                })
                .collect::<BTreeMap<_, _>>()
        };
        let (svcs, _) = store.list(meshsim::resources::core("services"), Some(ns));
        let mut config = BTreeMap::new();
        for (g, plural) in CONFIG_KINDS {
            let Some(res) = meshsim::resources::REGISTRY
                .iter()
                .find(|r| r.group == *g && r.plural == *plural)
                .map(|r| r.id())
            else {
                continue;
            };
            for o in store.list(res, Some(ns)).0 {
                config.insert(
                    format!("{plural}/{}", o["metadata"]["name"].as_str().unwrap_or_default()),
                    o["spec"].clone(),
                );
            }
        }
        NsState {
            labels: nsobj["metadata"]["labels"].clone(),
            ns_rv: nsobj["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            pods: names_rvs(meshsim::resources::core("pods")),
            deployments: store
                .list(meshsim::resources::id("apps", "deployments"), Some(ns))
                .0
                .iter()
                .map(|d| {
                    (
                        d["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                        serde_json::json!([d["metadata"]["generation"], d["spec"]]),
                    )
                })
                .collect(),
            service_labels: svcs
                .iter()
                .map(|s| {
                    (
                        s["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                        s["metadata"]["labels"].clone(),
                    )
                })
                .collect(),
            config,
        }
    }

    /// The configuration part (labels of the namespace and Services, Istio objects), without versions.
    pub fn config_view(&self) -> (Value, BTreeMap<String, Value>, BTreeMap<String, Value>) {
        (
            self.labels.clone(),
            self.service_labels.clone(),
            self.config.clone(),
        )
    }
}

/// Asserts that the store holds `ns` with the configuration of the backup file `backup-<ns>.yaml` in the
/// report dir (Namespace and Service labels, every backed-up object's spec) and with ready sidecar pods.
pub fn assert_restored(fleet: &Fleet, ns: &str, before: &NsState) {
    let now = fleet.ns_state(ns);
    assert_eq!(
        now.config_view(),
        before.config_view(),
        "{ns}: configuration after the rollback differs from before the run"
    );
    let path = fleet.reports.join("backups").join(format!("backup-{ns}.yaml"));
    let b = ambient_migrate::backup::Backup::load_file(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let labels: BTreeMap<String, String> =
        serde_json::from_value(now.labels.clone()).expect("namespace labels are strings");
    assert_eq!(b.namespace_labels, labels, "{ns}: namespace labels vs backup");
    for (svc, want) in &b.service_labels {
        let live: BTreeMap<String, String> =
            serde_json::from_value(now.service_labels[svc].clone()).expect("service labels");
        assert_eq!(&live, want, "{ns}: labels of Service {svc} vs backup");
    }
    for o in &b.objects {
        let key = format!(
            "{}/{}",
            plural_of(o["kind"].as_str().unwrap_or_default()),
            o["metadata"]["name"].as_str().unwrap_or_default()
        );
        assert_eq!(now.config.get(&key), Some(&o["spec"]), "{ns}: {key} vs backup");
    }
    let live = live_pods(fleet, ns);
    assert!(!live.is_empty(), "{ns}: pods exist after the rollback");
    for p in &live {
        assert!(
            has_sidecar(p) && crate::pods::ready_condition(p),
            "{ns}: pod {} is back on a ready sidecar",
            p["metadata"]["name"]
        );
    }
}

/// The pods of `ns` that are not terminating.
fn live_pods(fleet: &Fleet, ns: &str) -> Vec<Value> {
    let (pods, _) = fleet
        .running
        .sim
        .store
        .list(meshsim::resources::core("pods"), Some(ns));
    pods.into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

/// The number of the step named `name` in reports (0 for an unknown name).
fn step_number(name: &str) -> u8 {
    ambient_migrate::steps::Step::ALL
        .iter()
        .find(|s| s.name() == name)
        .map(|s| s.number())
        .unwrap_or(0)
}

fn plural_of(kind: &str) -> String {
    meshsim::resources::REGISTRY
        .iter()
        .find(|r| r.kind == kind)
        .map(|r| r.plural.to_string())
        .unwrap_or_else(|| format!("{}s", kind.to_lowercase()))
}

/// Asserts that `ns` is migrated in the store: ambient label, no injection label, pods without sidecars
/// enrolled in ambient, journal phase migrated.
pub fn assert_migrated(fleet: &Fleet, ns: &str) {
    let st = fleet.ns_state(ns);
    assert_eq!(
        st.labels["istio.io/dataplane-mode"], "ambient",
        "{ns}: ambient label; labels {}",
        st.labels
    );
    assert!(
        st.labels.get("istio-injection").is_none(),
        "{ns}: injection label removed; labels {}",
        st.labels
    );
    let live = live_pods(fleet, ns);
    assert!(!live.is_empty(), "{ns}: pods exist");
    for p in &live {
        assert!(
            !has_sidecar(p),
            "{ns}: pod {} still has a sidecar",
            p["metadata"]["name"]
        );
        assert_eq!(
            p["metadata"]["annotations"]["ambient.istio.io/redirection"], "enabled",
            "{ns}: pod {} enrolled in ambient",
            p["metadata"]["name"]
        );
    }
}

// ---- report checks ----

use crate::schema as schema_check;

/// docs/report.schema.json.
pub fn report_schema() -> Value {
    let p = crate::workspace_root().join("docs/report.schema.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("schema file")).expect("schema JSON")
}

/// Validates the report JSON file in `dir` against docs/report.schema.json; panics with the violations.
pub fn assert_report_matches_schema(dir: &Path) {
    let text = std::fs::read_to_string(dir.join("ambient-migrate-report.json")).expect("JSON report");
    let v: Value = serde_json::from_str(&text).expect("JSON");
    let s = report_schema();
    let errs = schema_check::violations(&s, &v);
    assert!(
        errs.is_empty(),
        "report violates docs/report.schema.json: {errs:#?}"
    );
    ambient_migrate::report::json::parse(&text).expect("the product reads its own report back");
}

fn attr<'a>(n: &roxmltree::Node<'a, 'a>, name: &str) -> &'a str {
    n.attribute(name)
        .unwrap_or_else(|| panic!("<{}> lacks {name}", n.tag_name().name()))
}

fn allowed_attrs(n: &roxmltree::Node, allowed: &[&str]) {
    for a in n.attributes() {
        assert!(
            allowed.contains(&a.name()),
            "<{}> has attribute {} outside the JUnit schema",
            n.tag_name().name(),
            a.name()
        );
    }
}

/// Checks the JUnit file in `dir` against the JUnit XML schema CI publishers accept (Jenkins' junit-10
/// XSD / the common "JUnit.xsd": `testsuites > testsuite > testcase > failure|error|skipped|system-out|
/// system-err`, with their attributes, counts consistent with the children) and against the JSON report:
/// one testsuite per namespace and, for namespaces that ran, one testcase for preflight, per step, per
/// gate, per rollback and per rollback gate; every failed gate's `<failure>` carries its measurements.
pub fn check_junit(dir: &Path) {
    let xml = std::fs::read_to_string(dir.join("ambient-migrate-report.xml")).expect("JUnit report");
    let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("ambient-migrate-report.json")).expect("JSON report"),
    )
    .expect("JSON");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    allowed_attrs(
        &root,
        &[
            "name",
            "tests",
            "failures",
            "errors",
            "skipped",
            "disabled",
            "time",
            "timestamp",
        ],
    );
    let suites: Vec<_> = root.children().filter(|n| n.is_element()).collect();
    let namespaces = report["namespaces"].as_array().expect("namespaces");
    assert_eq!(suites.len(), namespaces.len(), "one testsuite per namespace");
    let (mut tests, mut failures, mut errors) = (0usize, 0usize, 0usize);
    for s in &suites {
        assert_eq!(s.tag_name().name(), "testsuite");
        allowed_attrs(
            s,
            &[
                "name",
                "tests",
                "failures",
                "errors",
                "skipped",
                "disabled",
                "time",
                "timestamp",
                "hostname",
                "id",
                "package",
                "file",
            ],
        );
        let name = attr(s, "name");
        let ns = namespaces
            .iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("testsuite {name} is a namespace of the report"));
        let cases: Vec<_> = s
            .children()
            .filter(|n| n.is_element() && n.has_tag_name("testcase"))
            .collect();
        for other in s.children().filter(|n| n.is_element()) {
            assert!(
                ["testcase", "properties", "system-out", "system-err"].contains(&other.tag_name().name()),
                "unexpected <{}> in testsuite",
                other.tag_name().name()
            );
        }
        let count = |tag: &str| {
            cases
                .iter()
                .filter(|c| c.children().any(|x| x.has_tag_name(tag)))
                .count()
        };
        assert_eq!(attr(s, "tests").parse::<usize>().expect("tests"), cases.len());
        assert_eq!(
            attr(s, "failures").parse::<usize>().expect("failures"),
            count("failure")
        );
        assert_eq!(
            attr(s, "errors").parse::<usize>().expect("errors"),
            count("error")
        );
        assert_eq!(
            attr(s, "skipped").parse::<usize>().expect("skipped"),
            count("skipped")
        );
        attr(s, "time").parse::<f64>().expect("time is a number");
        for c in &cases {
            allowed_attrs(
                c,
                &[
                    "name",
                    "classname",
                    "time",
                    "assertions",
                    "status",
                    "file",
                    "line",
                ],
            );
            attr(c, "name");
            assert!(attr(c, "classname").starts_with(&format!("{name}.")));
            attr(c, "time").parse::<f64>().expect("time is a number");
            let kids: Vec<_> = c.children().filter(|n| n.is_element()).collect();
            assert!(kids.len() <= 1, "at most one verdict per testcase");
            for k in kids {
                let tag = k.tag_name().name();
                assert!(
                    ["failure", "error", "skipped", "system-out", "system-err"].contains(&tag),
                    "unexpected <{tag}> in testcase"
                );
                if tag == "failure" || tag == "error" {
                    allowed_attrs(&k, &["message", "type"]);
                    attr(&k, "message");
                    attr(&k, "type");
                }
            }
        }
        // One testcase per preflight, step, gate, rollback and rollback gate of this namespace.
        let steps = ns["steps"].as_array().cloned().unwrap_or_default();
        let expected_names: Vec<String> = if steps.is_empty() && ns["rollback"].is_null() {
            if ["not-started", "skipped"].contains(&ns["outcome"].as_str().unwrap_or_default()) {
                vec!["migration".into()]
            } else {
                vec!["preflight".into()]
            }
        } else {
            let mut v = vec!["preflight".to_string()];
            for st in &steps {
                let step = st["step"].as_str().unwrap_or_default();
                let number = step_number(step);
                v.push(format!("step {number} {step}"));
                for g in st["gates"].as_array().into_iter().flatten() {
                    v.push(format!("gate {}", g["gate"].as_str().unwrap_or_default()));
                }
            }
            if let Some(rb) = ns["rollback"].as_object() {
                let from = rb["from"].as_str().unwrap_or_default();
                let number = step_number(from);
                v.push(format!("rollback from step {number}"));
                for g in rb["gates"].as_array().into_iter().flatten() {
                    v.push(format!("gate {}", g["gate"].as_str().unwrap_or_default()));
                }
            }
            v
        };
        let got: Vec<String> = cases.iter().map(|c| attr(c, "name").to_string()).collect();
        assert_eq!(got, expected_names, "testcases of {name}");
        // Failed gates carry their measurements.
        let all_gates = steps
            .iter()
            .flat_map(|st| st["gates"].as_array().cloned().unwrap_or_default())
            .chain(ns["rollback"]["gates"].as_array().cloned().unwrap_or_default());
        for g in all_gates.filter(|g| g["outcome"] != "pass") {
            let gname = format!("gate {}", g["gate"].as_str().unwrap_or_default());
            let case = cases
                .iter()
                .find(|c| c.attribute("name") == Some(gname.as_str()))
                .expect("testcase of the failed gate");
            let verdict = case
                .children()
                .find(|x| x.has_tag_name("failure") || x.has_tag_name("error"))
                .unwrap_or_else(|| panic!("{name}: {gname} failed but its testcase has no failure"));
            let text = verdict.text().unwrap_or_default();
            assert!(text.contains("measured:"), "{name}: {gname}: {text}");
            let measured = serde_json::to_string_pretty(&g["measured"]).expect("JSON");
            assert!(
                text.contains(&measured),
                "{name}: {gname}: the failure lacks the measurements {measured}: {text}"
            );
        }
        tests += cases.len();
        failures += count("failure");
        errors += count("error");
    }
    assert_eq!(attr(&root, "tests").parse::<usize>().expect("tests"), tests);
    assert_eq!(
        attr(&root, "failures").parse::<usize>().expect("failures"),
        failures
    );
    if let Some(e) = root.attribute("errors") {
        assert_eq!(e.parse::<usize>().expect("errors"), errors);
    }
}
