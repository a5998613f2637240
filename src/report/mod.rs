//! Run reports: one model ([`RunReport`]) rendered as JSON (stable schema, `schema_version: 1`, described by
//! `docs/report.schema.json`), JUnit XML (CI test publishers) and Markdown (with a Mermaid Gantt timeline),
//! plus rate-limited terminal progress lines ([`progress`]).
//!
//! What users of progressive-delivery tools ask reports for (docs/reference/progressive-delivery-peers.md §5):
//! every gate's measured values, failures kept, the error text propagated to the final status, and why each
//! failed unit failed. The model carries exactly that: per step, every [`GateResult`] with its `measured`
//! JSON; per namespace, the reason, the rollback and the preflight findings.

pub mod behaviour;
pub mod json;
pub mod junit;
pub mod markdown;
pub mod progress;
pub mod spool;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::assess::sidecar_only::BehaviourChange;
use crate::assess::{Finding, Severity};
use crate::gates::{GateOutcome, GateResult};
use crate::steps::{Change, ObjRef, Phase, Step};

/// Version of the JSON report schema; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Base name of the report files (`.json`, `.xml`, `.md`).
pub const REPORT_BASENAME: &str = "ambient-migrate-report";

/// The whole run. `N` holds the namespaces' sections: decoded ([`NamespaceReport`]s, the default), or, for a
/// fleet, as [`Section`]s that stay packed until each is rendered (see [`Sections`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport<N = Vec<NamespaceReport>> {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Unique id of the run (also in logs, Events and journals).
    pub run_id: String,
    /// Subcommand (`run`, `plan`, `rollback`, `demo`, ...).
    pub command: String,
    /// Start time.
    pub started: Timestamp,
    /// End time (`None` while running).
    pub ended: Option<Timestamp>,
    /// Whether mutations were server-side dry runs.
    pub dry_run: bool,
    /// API server URL.
    pub cluster: String,
    /// `Settings::digest()` of the configuration used.
    pub settings_digest: String,
    /// One entry per selected namespace, in fleet order.
    pub namespaces: N,
    /// Process exit code (docs/design.md §7).
    pub exit_code: i32,
    /// Counts per outcome and a one-line verdict.
    pub summary: Summary,
    /// Synthetic traffic per destination and path during the run (a rehearsal's, or the demo's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<migrate_core::rehearse::TrafficTable>,
}

/// Final outcome of one namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NamespaceOutcome {
    /// Every step done and validated.
    Migrated,
    /// A gate failed; the rollback completed and was verified.
    RolledBack,
    /// A gate failed and the rollback failed: a human is needed.
    RollbackFailed,
    /// A gate failed and `on_gate_failure = "hold"` left it as it was.
    Held,
    /// Preflight found a blocker; nothing touched.
    Blocked,
    /// Already migrated, excluded, or skipped by the fleet (e.g. failure budget).
    Skipped,
    /// Not reached (the run stopped first).
    NotStarted,
}

impl NamespaceOutcome {
    /// Kebab-case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            NamespaceOutcome::Migrated => "migrated",
            NamespaceOutcome::RolledBack => "rolled-back",
            NamespaceOutcome::RollbackFailed => "rollback-failed",
            NamespaceOutcome::Held => "held",
            NamespaceOutcome::Blocked => "blocked",
            NamespaceOutcome::Skipped => "skipped",
            NamespaceOutcome::NotStarted => "not-started",
        }
    }

    /// True for the outcomes that make the run fail.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            NamespaceOutcome::RolledBack
                | NamespaceOutcome::RollbackFailed
                | NamespaceOutcome::Held
                | NamespaceOutcome::Blocked
        )
    }
}

/// A finished namespace's report held as its compact JSON until the run's report is rendered. A fleet keeps
/// every finished namespace's report to the end of the run; as values (gate measurements as
/// `serde_json::Value` trees, strings in their own allocations) one took about 34 KB of heap at 5
/// Deployments, as JSON about 12 KB (BENCHMARKS.md §2b). The JSON is the report's own serialisation, so
/// [`PackedReport::unpack`] gives back an equal report (`float_roundtrip` keeps every number exact).
/// A fleet keeps them in a [`spool::Spool`] (a file), this in memory.
#[derive(Debug)]
pub struct PackedReport {
    outcome: NamespaceOutcome,
    bytes: spool::Stored,
}

impl PackedReport {
    /// Serialises `r`, in memory.
    pub fn pack(r: &NamespaceReport) -> PackedReport {
        PackedReport {
            outcome: r.outcome,
            bytes: spool::Stored::Memory(
                serde_json::to_vec(r)
                    .expect("a report always serializes")
                    .into_boxed_slice(),
            ),
        }
    }

    /// The report again.
    pub fn unpack(&self) -> NamespaceReport {
        serde_json::from_slice(&self.bytes.read()).expect("a packed report reads back as it was written")
    }

    /// The namespace's outcome, without unpacking.
    pub fn outcome(&self) -> NamespaceOutcome {
        self.outcome
    }
}

/// One namespace's section of a fleet's report: decoded (blocked or not-started namespaces, whose sections
/// are small), or packed (finished namespaces).
#[derive(Debug)]
pub enum Section {
    /// Held as a value (boxed: a fleet holds one section per namespace, most of them packed).
    Open(Box<NamespaceReport>),
    /// Held as its JSON, unpacked when read.
    Packed(PackedReport),
}

impl Section {
    /// The section as a value (unpacked for the time the caller holds it).
    pub fn get(&self) -> Cow<'_, NamespaceReport> {
        match self {
            Section::Open(r) => Cow::Borrowed(r),
            Section::Packed(p) => Cow::Owned(p.unpack()),
        }
    }

    /// Its outcome, without unpacking.
    pub fn outcome(&self) -> NamespaceOutcome {
        match self {
            Section::Open(r) => r.outcome,
            Section::Packed(p) => p.outcome(),
        }
    }
}

/// The namespace sections of a run report, read one at a time: the renderers go through a fleet's sections
/// unpacking each in turn, so the end of a run never holds every namespace's report decoded at once (at
/// 1,000 namespaces about 34 MB as values against 12 MB packed).
pub trait Sections {
    /// Each namespace's section, in fleet order.
    fn each(&self) -> impl Iterator<Item = Cow<'_, NamespaceReport>>;
    /// Each namespace's outcome, in fleet order (without decoding the sections).
    fn outcomes(&self) -> impl Iterator<Item = NamespaceOutcome>;
}

impl Sections for Vec<NamespaceReport> {
    fn each(&self) -> impl Iterator<Item = Cow<'_, NamespaceReport>> {
        self.iter().map(Cow::Borrowed)
    }
    fn outcomes(&self) -> impl Iterator<Item = NamespaceOutcome> {
        self.iter().map(|n| n.outcome)
    }
}

impl Sections for Vec<Section> {
    fn each(&self) -> impl Iterator<Item = Cow<'_, NamespaceReport>> {
        self.iter().map(Section::get)
    }
    fn outcomes(&self) -> impl Iterator<Item = NamespaceOutcome> {
        self.iter().map(Section::outcome)
    }
}

/// Serialised as the array of the decoded sections, one unpacked at a time: the same JSON as the
/// `Vec<NamespaceReport>` it stands for.
impl Serialize for Section {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match self {
            Section::Open(r) => r.serialize(ser),
            Section::Packed(p) => p.unpack().serialize(ser),
        }
    }
}

/// One namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamespaceReport {
    /// Namespace name.
    pub name: String,
    /// Migrated as a canary.
    pub canary: bool,
    /// Wave number (0 = canaries).
    pub wave: u32,
    /// Final outcome.
    pub outcome: NamespaceOutcome,
    /// Last journaled phase.
    pub phase: Option<Phase>,
    /// When work on it started.
    pub started: Option<Timestamp>,
    /// When work on it ended.
    pub ended: Option<Timestamp>,
    /// Why it did not migrate (the failed gate's message, the blocker, the rollback error).
    pub reason: Option<String>,
    /// Backup reference (ConfigMap name and local file).
    pub backup: Option<String>,
    /// Preflight findings (blockers, warnings, info).
    pub findings: Vec<Finding>,
    /// Steps in execution order.
    pub steps: Vec<StepReport>,
    /// The rollback, if one ran.
    pub rollback: Option<RollbackReport>,
    /// What monitoring must change after the migration.
    pub observability: Option<ObservabilityReport>,
    /// Behaviour that changes: sidecar-only settings ambient ignores, accepted losses marked (from the plan).
    #[serde(default)]
    pub behaviour_changes: Vec<BehaviourChange>,
    /// Enforcement equivalence: the request classes whose decision differs from the intent at some moment
    /// of the plan, and how many stay equal (`None` when the namespace was not assessed).
    #[serde(default)]
    pub enforcement: Option<crate::assess::enforcement::EnforcementTable>,
}

impl NamespaceReport {
    /// A namespace not yet started.
    pub fn new(name: &str, canary: bool, wave: u32) -> Self {
        NamespaceReport {
            name: name.to_string(),
            canary,
            wave,
            outcome: NamespaceOutcome::NotStarted,
            phase: None,
            started: None,
            ended: None,
            reason: None,
            backup: None,
            findings: Vec::new(),
            steps: Vec::new(),
            rollback: None,
            observability: None,
            behaviour_changes: Vec::new(),
            enforcement: None,
        }
    }

    /// The first failing gate of the steps, if any.
    pub fn first_failed_gate(&self) -> Option<(Step, &GateResult)> {
        self.steps
            .iter()
            .flat_map(|s| s.gates.iter().map(move |g| (s.step, g)))
            .find(|(_, g)| g.outcome != GateOutcome::Pass)
    }

    /// One sentence saying why the namespace did not migrate (`None` when it did).
    pub fn why(&self) -> Option<String> {
        if !self.outcome.is_failure() {
            return self.reason.clone();
        }
        if let Some(r) = &self.reason {
            return Some(r.clone());
        }
        if let Some((step, g)) = self.first_failed_gate() {
            return Some(format!(
                "step {} ({}): gate {} {}: {}",
                step.number(),
                step.name(),
                g.gate,
                outcome_str(g.outcome),
                g.message
            ));
        }
        let blockers: Vec<String> = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Blocker)
            .map(|f| format!("{}: {}", f.object, f.message))
            .collect();
        if !blockers.is_empty() {
            return Some(blockers.join("; "));
        }
        None
    }
}

/// Outcome of one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepOutcome {
    /// Applied and every gate passed.
    Pass,
    /// A gate failed.
    Fail,
    /// The mutation or a gate could not be carried out (API error).
    Error,
    /// A gate's deadline passed.
    Timeout,
    /// Not applicable (e.g. nothing to delete in step 5) or not reached.
    Skipped,
}

impl StepOutcome {
    /// Kebab-case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            StepOutcome::Pass => "pass",
            StepOutcome::Fail => "fail",
            StepOutcome::Error => "error",
            StepOutcome::Timeout => "timeout",
            StepOutcome::Skipped => "skipped",
        }
    }

    /// The step outcome implied by its gates: the worst of them (Fail > Timeout > Error > Pass).
    pub fn from_gates(gates: &[GateResult]) -> StepOutcome {
        let has = |o| gates.iter().any(|g| g.outcome == o);
        if has(GateOutcome::Fail) {
            StepOutcome::Fail
        } else if has(GateOutcome::Timeout) {
            StepOutcome::Timeout
        } else if has(GateOutcome::Error) {
            StepOutcome::Error
        } else {
            StepOutcome::Pass
        }
    }
}

/// Kebab-case name of a gate outcome.
pub fn outcome_str(o: GateOutcome) -> &'static str {
    match o {
        GateOutcome::Pass => "pass",
        GateOutcome::Fail => "fail",
        GateOutcome::Error => "error",
        GateOutcome::Timeout => "timeout",
    }
}

/// One step of one namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Which step.
    pub step: Step,
    /// Start of the mutation.
    pub started: Timestamp,
    /// End of the last gate.
    pub ended: Option<Timestamp>,
    /// Result.
    pub outcome: StepOutcome,
    /// Every gate evaluation, with what it measured.
    pub gates: Vec<GateResult>,
    /// Mutations made (as journaled).
    pub changes: Vec<Change>,
}

/// Result of a rollback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RollbackOutcome {
    /// Undone and verified (sidecars back and ready, probes green, config equal to the backup).
    Verified,
    /// Could not be completed or verified.
    Failed,
}

/// One namespace's rollback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RollbackReport {
    /// The step whose gate failed (or the last one reached).
    pub from: Step,
    /// Steps undone, in the order they were undone.
    pub undone: Vec<Step>,
    /// Start.
    pub started: Timestamp,
    /// End.
    pub ended: Option<Timestamp>,
    /// Result.
    pub outcome: RollbackOutcome,
    /// Verification gates.
    pub gates: Vec<GateResult>,
    /// Error text when it failed.
    pub message: Option<String>,
}

/// What dashboards and scrape configs must follow after the migration (issue part 4; facts in
/// docs/reference/istio-ambient-facts.md §3h).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ObservabilityReport {
    /// Pods whose Prometheus scraping went through the sidecar's merged endpoint (:15020/stats/prometheus).
    pub merged_metrics_pods: Vec<String>,
    /// PodMonitor/ServiceMonitor objects scraping the merged endpoint.
    pub monitors: Vec<MonitorNote>,
    /// `reporter` label changes for dashboards and alerts.
    pub reporter_changes: Vec<ReporterChange>,
}

/// A monitor object to fix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MonitorNote {
    /// The PodMonitor/ServiceMonitor.
    pub object: ObjRef,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub fix: String,
}

/// One metric family whose `reporter` label changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReporterChange {
    /// Metric names.
    pub metrics: String,
    /// Selector used with sidecars.
    pub before: String,
    /// Selector to use in ambient mode.
    pub after: String,
    /// Why.
    pub note: String,
}

impl ObservabilityReport {
    /// The standard `reporter` changes of a sidecar-to-ambient move (istio/istio#51313, #61815; ztunnel's
    /// `Reporter` enum: `source` outbound, `destination` inbound).
    pub fn standard_reporter_changes(with_waypoint: bool) -> Vec<ReporterChange> {
        let mut v = vec![ReporterChange {
            metrics: "istio_tcp_connections_opened_total, istio_tcp_connections_closed_total, istio_tcp_sent_bytes_total, istio_tcp_received_bytes_total".into(),
            before: "reporter=\"destination\" (sidecar)".into(),
            after: "reporter=\"destination\" (ztunnel, inbound) / reporter=\"source\" (ztunnel, outbound)".into(),
            note: "ztunnel reports TCP metrics only, from port 15020 of the ztunnel pods; scrape them as their own target".into(),
        }];
        if with_waypoint {
            v.push(ReporterChange {
                metrics: "istio_requests_total, istio_request_duration_milliseconds, istio_request_bytes, istio_response_bytes".into(),
                before: "reporter=\"destination\" or reporter=\"source\" (sidecar)".into(),
                after: "reporter=\"waypoint\"".into(),
                note: "HTTP metrics now come only from the waypoint; use reporter=~\"destination|waypoint\" in dashboards during the migration".into(),
            });
        } else {
            v.push(ReporterChange {
                metrics: "istio_requests_total and the other HTTP metrics".into(),
                before: "reporter=\"destination\" (sidecar)".into(),
                after: "none".into(),
                note: "without a waypoint no L7 metrics exist in ambient mode".into(),
            });
        }
        v
    }

    /// Builds the report from preflight findings: `prometheus-merge` (pods scraped through the sidecar; the
    /// pod names are read from the finding's message, `pods ["a", "b"] expose ...`) and
    /// `monitor-merged-endpoint` (one per monitor object).
    pub fn from_findings(findings: &[Finding], with_waypoint: bool) -> Self {
        use crate::assess::preflight::codes;
        let monitors = findings
            .iter()
            .filter(|f| f.code == codes::MONITOR_MERGED_ENDPOINT)
            .map(|f| MonitorNote {
                object: f.object.clone(),
                message: f.message.clone(),
                fix: f.fix.clone(),
            })
            .collect();
        let mut merged_metrics_pods: Vec<String> = findings
            .iter()
            .filter(|f| f.code == codes::PROMETHEUS_MERGE)
            .filter_map(|f| {
                let list = f.message.split_once('[')?.1.split_once(']')?.0;
                Some(
                    list.split(',')
                        .map(|p| p.trim().trim_matches('"').to_string())
                        .filter(|p| !p.is_empty()),
                )
            })
            .flatten()
            .collect();
        merged_metrics_pods.sort();
        merged_metrics_pods.dedup();
        ObservabilityReport {
            merged_metrics_pods,
            monitors,
            reporter_changes: Self::standard_reporter_changes(with_waypoint),
        }
    }

    /// Replaces the merged-metrics pod list (e.g. with [`ObservabilityReport::merged_metrics_pods`] of the
    /// pods seen before the restart).
    pub fn with_merged_pods(mut self, pods: Vec<String>) -> Self {
        self.merged_metrics_pods = pods;
        self
    }

    /// Pods (JSON objects) whose scrape annotations point at the sidecar's merged endpoint: the webhook
    /// overwrites `prometheus.io/port=15020` and `prometheus.io/path=/stats/prometheus` at injection.
    pub fn merged_metrics_pods(pods: &[serde_json::Value]) -> Vec<String> {
        let mut out: Vec<String> = pods
            .iter()
            .filter(|p| {
                let port = p
                    .pointer("/metadata/annotations/prometheus.io~1port")
                    .and_then(|v| v.as_str());
                let path = p
                    .pointer("/metadata/annotations/prometheus.io~1path")
                    .and_then(|v| v.as_str());
                port == Some("15020") || path == Some("/stats/prometheus")
            })
            .filter_map(|p| {
                p.pointer("/metadata/name")
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            })
            .collect();
        out.sort();
        out
    }
}

/// Counts per outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Namespaces in the report.
    pub total: u32,
    /// Migrated.
    pub migrated: u32,
    /// Rolled back.
    pub rolled_back: u32,
    /// Rollback failed.
    pub rollback_failed: u32,
    /// Held.
    pub held: u32,
    /// Blocked in preflight.
    pub blocked: u32,
    /// Skipped.
    pub skipped: u32,
    /// Not started.
    pub not_started: u32,
    /// One line, e.g. "3 of 4 namespaces migrated; 1 rolled back".
    pub message: String,
}

impl Summary {
    /// Counts `outcomes` (one per namespace).
    pub fn of_outcomes(outcomes: impl Iterator<Item = NamespaceOutcome>) -> Summary {
        let mut s = Summary::default();
        for o in outcomes {
            s.total += 1;
            match o {
                NamespaceOutcome::Migrated => s.migrated += 1,
                NamespaceOutcome::RolledBack => s.rolled_back += 1,
                NamespaceOutcome::RollbackFailed => s.rollback_failed += 1,
                NamespaceOutcome::Held => s.held += 1,
                NamespaceOutcome::Blocked => s.blocked += 1,
                NamespaceOutcome::Skipped => s.skipped += 1,
                NamespaceOutcome::NotStarted => s.not_started += 1,
            }
        }
        let mut parts = vec![format!("{} of {} namespaces migrated", s.migrated, s.total)];
        for (n, what) in [
            (s.rolled_back, "rolled back"),
            (s.rollback_failed, "rollback failed (needs a human)"),
            (s.held, "held"),
            (s.blocked, "blocked in preflight"),
            (s.skipped, "skipped"),
            (s.not_started, "not started"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        s.message = parts.join("; ");
        s
    }
}

/// Exit code implied by the namespace outcomes: see [`crate::exit::for_outcomes`].
pub fn exit_code_for(namespaces: &[NamespaceReport]) -> i32 {
    crate::exit::for_outcomes(namespaces.iter().map(|n| n.outcome))
}

impl RunReport {
    /// An empty report for a starting run.
    pub fn new(run_id: &str, command: &str, cluster: &str, settings_digest: &str, dry_run: bool) -> Self {
        RunReport {
            schema_version: SCHEMA_VERSION,
            run_id: run_id.to_string(),
            command: command.to_string(),
            started: Timestamp::now(),
            ended: None,
            dry_run,
            cluster: cluster.to_string(),
            settings_digest: settings_digest.to_string(),
            namespaces: Vec::new(),
            exit_code: 0,
            summary: Summary::default(),
            traffic: None,
        }
    }

    /// The same report with its namespaces held as `namespaces` (e.g. a fleet's packed [`Section`]s).
    pub fn with_namespaces<M>(self, namespaces: M) -> RunReport<M> {
        RunReport {
            schema_version: self.schema_version,
            run_id: self.run_id,
            command: self.command,
            started: self.started,
            ended: self.ended,
            dry_run: self.dry_run,
            cluster: self.cluster,
            settings_digest: self.settings_digest,
            namespaces,
            exit_code: self.exit_code,
            summary: self.summary,
            traffic: self.traffic,
        }
    }
}

impl<N: Sections> RunReport<N> {
    /// Sets `ended`, the summary and the exit code from the namespace outcomes.
    pub fn finish(&mut self) {
        self.ended = Some(Timestamp::now());
        self.summary = Summary::of_outcomes(self.namespaces.outcomes());
        self.exit_code = crate::exit::for_outcomes(self.namespaces.outcomes());
    }
}

/// Which report files to write.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// Directory (created if missing).
    pub dir: PathBuf,
    /// Write `<base>.json`.
    pub json: bool,
    /// Write `<base>.xml` (JUnit).
    pub junit: bool,
    /// Write `<base>.md`.
    pub markdown: bool,
    /// Append the Markdown to this file (the value of `$GITHUB_STEP_SUMMARY`, read by the caller).
    pub step_summary: Option<PathBuf>,
}

impl WriteOptions {
    /// From the settings; `step_summary` is `$GITHUB_STEP_SUMMARY` when `reports.github_step_summary` is on.
    pub fn from_settings(r: &crate::settings::Reports, github_step_summary: Option<PathBuf>) -> Self {
        WriteOptions {
            dir: r.dir.clone(),
            json: r.json,
            junit: r.junit,
            markdown: r.markdown,
            step_summary: if r.github_step_summary {
                github_step_summary
            } else {
                None
            },
        }
    }
}

/// Report I/O failures.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file could not be written.
    #[error(
        "cannot write report {path}: {source}; check that the report directory (reports.dir / --report-dir) is writable"
    )]
    Write {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

fn write_file(path: &Path, text: &str) -> Result<(), ReportError> {
    std::fs::write(path, text).map_err(|source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the selected report files and returns their paths. The JSON and the JUnit XML go straight to their
/// files, and a fleet's sections are unpacked one at a time by each renderer.
pub fn write_all<N: Sections + Serialize>(
    report: &RunReport<N>,
    opts: &WriteOptions,
) -> Result<Vec<PathBuf>, ReportError> {
    let mut written = Vec::new();
    if opts.json || opts.junit || opts.markdown {
        std::fs::create_dir_all(&opts.dir).map_err(|source| ReportError::Write {
            path: opts.dir.clone(),
            source,
        })?;
    }
    if opts.json {
        let p = opts.dir.join(format!("{REPORT_BASENAME}.json"));
        json::write(report, &p).map_err(|source| ReportError::Write {
            path: p.clone(),
            source,
        })?;
        written.push(p);
    }
    if opts.junit {
        let p = opts.dir.join(format!("{REPORT_BASENAME}.xml"));
        junit::write(report, &p).map_err(|source| ReportError::Write {
            path: p.clone(),
            source,
        })?;
        written.push(p);
    }
    // Rendering reads every namespace's section again (from the spool for a fleet): only when wanted.
    if !opts.markdown && opts.step_summary.is_none() {
        return Ok(written);
    }
    let md = markdown::render(report);
    if opts.markdown {
        let p = opts.dir.join(format!("{REPORT_BASENAME}.md"));
        write_file(&p, &md)?;
        written.push(p);
    }
    if let Some(p) = &opts.step_summary {
        markdown::append_step_summary(p, &md)?;
        written.push(p.clone());
    }
    Ok(written)
}

/// Seconds between two timestamps (0 when `end` is missing or earlier).
pub fn seconds_between(start: Timestamp, end: Option<Timestamp>) -> f64 {
    match end {
        Some(e) => {
            let d = e.as_millisecond() - start.as_millisecond();
            if d > 0 { d as f64 / 1000.0 } else { 0.0 }
        }
        None => 0.0,
    }
}
