//! The migration engine: one namespace through the six steps of the seed runbook, each gated, with a
//! backup first and an automatic rollback in reverse when a gate fails (docs/design.md §3-§5).
//!
//! Crash safety: every mutation is journaled *before* it is sent (with what rollback needs to undo it),
//! every mutation is idempotent, and the phase is journaled with fenced writes; a rerun after a kill reads
//! the journal and continues the step it was in (or rolls back, per `resume`), converging to Migrated or
//! RolledBack. Before each mutation the fleet Lease must still be held.

mod exec;
#[cfg(all(test, feature = "demo"))]
#[path = "tests.rs"]
mod executor_tests;
mod primitives;
pub mod probing;
mod rollback;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::assess::plan::{NamespacePlan, PlanOptions};
use crate::assess::{Finding, Snapshot};
use crate::backup::{self, Backup};
use crate::cluster::Cluster;
use crate::cluster::EventType;
use crate::fleet::NsOutcome;
use crate::gates::GateResult;
use crate::journal::{Journal, JournalError};
use crate::lease::LeaseGuard;
use crate::probes::spec::ProbeSpec;
use crate::report::progress::{Progress, ProgressUpdate};
use crate::steps::{self, Change, Event, Phase, Step};

pub use crate::steps::OnGateFailure;

/// What a rerun does with a namespace that a dead run left mid-way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Resume {
    /// Re-run the step it was in (every step is idempotent) and go on.
    #[default]
    Continue,
    /// Roll it back.
    Rollback,
}

/// Deadlines of the waits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timeouts {
    pub waypoint_ready: Duration,
    pub rollout: Duration,
    pub probes: Duration,
    pub rollback: Duration,
    /// Hard limit of one step, action and gates: every wait inside a step ends by then at the latest
    /// (`timeouts.step`), so a gate with a longer own timeout still fails the step in time.
    pub step: Duration,
    /// Once a stop is requested, the namespace's rollback must end within this (`timeouts.shutdown`).
    pub shutdown: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            waypoint_ready: Duration::from_secs(120),
            rollout: Duration::from_secs(600),
            probes: Duration::from_secs(120),
            rollback: Duration::from_secs(600),
            step: Duration::from_secs(900),
            shutdown: Duration::from_secs(120),
        }
    }
}

/// Everything the engine needs to know about one namespace's migration.
#[derive(Debug, Clone)]
pub struct NamespaceOptions {
    pub plan: PlanOptions,
    pub on_gate_failure: OnGateFailure,
    pub resume: Resume,
    pub timeouts: Timeouts,
    pub probes: Vec<ProbeSpec>,
    /// Retry a namespace a previous run rolled back (its state was restored and verified).
    pub retry_rolled_back: bool,
    /// Rollback overwrites labels and objects that someone changed after the migration did (`rollback
    /// --force`); without it such a change is a conflict and the rollback stops short of it.
    pub force_rollback: bool,
}

impl Default for NamespaceOptions {
    fn default() -> Self {
        NamespaceOptions {
            plan: PlanOptions::default(),
            on_gate_failure: OnGateFailure::Rollback,
            resume: Resume::Continue,
            timeouts: Timeouts::default(),
            probes: Vec::new(),
            retry_rolled_back: true,
            force_rollback: false,
        }
    }
}

/// Rate-limited progress printer for long waits.
pub type WaitProgress = Progress<Box<dyn std::io::Write + Send>>;

/// Shared context of a run.
#[derive(Clone)]
pub struct Engine {
    pub cluster: Cluster,
    /// Namespace of the journal, backups and lease.
    pub state_namespace: String,
    /// Run id recorded in journals.
    pub run_id: String,
    /// Local directory for backup files (CI artifacts); none when `None`.
    pub backup_dir: Option<PathBuf>,
    /// The fleet lease; every mutation checks it first.
    pub lease: Option<Arc<LeaseGuard>>,
    /// Turns true on SIGTERM/Ctrl-C: a namespace abandons its running step and rolls back, within
    /// `Timeouts::shutdown`.
    pub stop: watch::Receiver<bool>,
    /// Where progress lines go (stdout in the CLI).
    pub progress: Arc<dyn Fn(&str) + Send + Sync>,
    /// Cluster-wide facts, read once per run (Istio install, revisions, other namespaces' labels).
    pub cluster_info: Arc<tokio::sync::OnceCell<crate::assess::ClusterInfo>>,
    /// Rate-limited progress of long waits ("pods ready 3/5"), one line per namespace per interval at most.
    pub waits: Option<Arc<std::sync::Mutex<WaitProgress>>>,
    /// The fleet's watch caches, when the command started them (`run`): snapshots, backups and gates read
    /// them instead of listing per namespace. `None`: every read goes to the API.
    pub cache: Option<Arc<crate::cluster::FleetCache>>,
}

/// One step as it ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRun {
    pub step: Step,
    pub started: jiff::Timestamp,
    pub ended: Option<jiff::Timestamp>,
    pub passed: bool,
    pub gates: Vec<GateResult>,
    pub changes: Vec<Change>,
}

/// A rollback as it ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollbackRun {
    pub from: Step,
    pub started: jiff::Timestamp,
    pub ended: Option<jiff::Timestamp>,
    pub ok: bool,
    pub actions: Vec<String>,
    pub gates: Vec<GateResult>,
    pub error: Option<String>,
    /// The rollback stopped because the fleet Lease could no longer be proven held.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lease_lost: bool,
}

/// The result of running one namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamespaceRun {
    pub namespace: String,
    pub outcome: NsOutcome,
    pub phase: Option<Phase>,
    pub findings: Vec<Finding>,
    pub plan: Option<NamespacePlan>,
    pub steps: Vec<StepRun>,
    pub rollback: Option<RollbackRun>,
    pub backup_file: Option<PathBuf>,
    /// Why it failed, in one line naming the object.
    pub reason: Option<String>,
    pub started: jiff::Timestamp,
    pub ended: Option<jiff::Timestamp>,
}

impl NamespaceRun {
    fn new(ns: &str) -> Self {
        NamespaceRun {
            namespace: ns.to_string(),
            outcome: NsOutcome::NotStarted,
            phase: None,
            findings: Vec::new(),
            plan: None,
            steps: Vec::new(),
            rollback: None,
            backup_file: None,
            reason: None,
            started: jiff::Timestamp::now(),
            ended: None,
        }
    }

    fn finish(mut self, outcome: NsOutcome, phase: Option<Phase>) -> Self {
        self.outcome = outcome;
        self.phase = phase;
        self.ended = Some(jiff::Timestamp::now());
        self
    }
}

/// Errors that end a namespace run without a verdict of its own.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Backup(#[from] backup::BackupError),
    #[error(transparent)]
    Lease(#[from] crate::lease::LeaseError),
    #[error("journal of namespace {namespace}: {source}")]
    State {
        namespace: String,
        #[source]
        source: steps::StepError,
    },
    /// The plan names an object the engine has no primitive for (a label on a kind other than Namespace
    /// or Service, a create of an unknown kind): a bug in the plan, nothing was sent.
    #[error("cannot {action} {object}: {why}")]
    Unsupported {
        action: &'static str,
        object: String,
        why: &'static str,
    },
    /// A manifest the plan generated does not parse as a Kubernetes object.
    #[error("generated manifest for {object} is invalid: {message}")]
    InvalidManifest { object: String, message: String },
    /// The local backup directory (CI artifacts) cannot be created.
    #[error("cannot create backup directory {}: {source}", path.display())]
    BackupDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The journal holds a phase this operation cannot continue from.
    #[error("namespace {namespace}: {message}; inspect with `ambient-migrate status -n {namespace}`")]
    UnexpectedPhase { namespace: String, message: String },
    /// `rollback` of a namespace without a journal.
    #[error(
        "namespace {namespace} has no journal in {state_namespace}: nothing to roll back (was it migrated by ambient-migrate?)"
    )]
    NoJournal {
        namespace: String,
        state_namespace: String,
    },
    /// The fleet Lease could no longer be proven held during a rollback: another run may own the fleet,
    /// so nothing more is sent.
    #[error("namespace {namespace}: rollback stopped, the fleet Lease was lost: {message}")]
    LeaseLost { namespace: String, message: String },
    /// A wait that reads the fleet's watch caches ran without them (only `run` starts them).
    #[error(
        "namespace {namespace}: {what} needs the fleet's watch caches, which only `ambient-migrate run` starts"
    )]
    NoFleetCache { namespace: String, what: &'static str },
}

impl EngineError {
    /// Lost the lease or was fenced: another run owns the fleet now; stop without touching anything.
    fn is_fenced(&self) -> bool {
        matches!(self, EngineError::Lease(_) | EngineError::LeaseLost { .. })
            || matches!(self, EngineError::Journal(JournalError::Fenced { .. }))
            || matches!(
                self,
                EngineError::Cluster(crate::cluster::ClusterError::Fenced { .. })
            )
            || matches!(
                self,
                EngineError::Journal(JournalError::Cluster(crate::cluster::ClusterError::Fenced { .. }))
            )
    }
}

/// What a person reads when a namespace run stopped on an error that is not a gate (an API that kept
/// failing, a journal that could not be written): the error, and what to do. Nothing was rolled back and
/// the journal still says where the run stopped, so a rerun resumes from there.
fn stopped_reason(ns: &str, e: &EngineError) -> String {
    format!(
        "{e}; the namespace is left where the journal says (`ambient-migrate status -n {ns}`): once the cause is fixed (or the API answers again), rerun `ambient-migrate run` to resume, or run `ambient-migrate rollback -n {ns}` to undo"
    )
}

/// Per-namespace working state while a run is in progress.
pub(crate) struct NsCtx<'a> {
    pub engine: &'a Engine,
    pub ns: String,
    pub opts: &'a NamespaceOptions,
    pub journal: Journal,
    pub plan: NamespacePlan,
    pub backup: Backup,
    /// End of the running step's hard limit (`Timeouts::step`); `None` outside a step (rollback has its
    /// own limit).
    pub step_until: Option<Instant>,
    /// End of the shutdown budget once a stop was requested (`Timeouts::shutdown`).
    pub shutdown_until: Option<Instant>,
}

impl NsCtx<'_> {
    /// The deadline of a wait of at most `d` inside the current step: never later than the step's own
    /// hard limit.
    pub fn deadline(&self, d: Duration) -> Instant {
        let own = deadline(d);
        self.step_until.map_or(own, |u| own.min(u))
    }

    /// The deadline of the rollback: `timeouts.rollback`, cut to the shutdown budget when stopping.
    pub fn rollback_deadline(&self) -> Instant {
        let own = deadline(self.opts.timeouts.rollback);
        self.shutdown_until.map_or(own, |u| own.min(u))
    }
}

/// `with`, then the phase `events` lead to from the journal's phase with the steps they complete, as one
/// change to a journal record (written or staged by the caller); an event the state machine refuses is
/// an error naming the namespace.
fn with_phase_changes<W: FnOnce(&mut crate::journal::Record)>(
    journal: &Journal,
    ns: &str,
    events: &[Event],
    with: W,
) -> Result<impl FnOnce(&mut crate::journal::Record) + use<W>, EngineError> {
    let mut phase = journal.record().phase;
    let mut done = Vec::new();
    for event in events {
        let next = steps::next(phase, *event).map_err(|source| EngineError::State {
            namespace: ns.to_string(),
            source,
        })?;
        // Step 6's gates passing moves straight to Migrated (no StepDone(6)): record it too.
        match next {
            Phase::StepDone(s) => done.push(s),
            Phase::Migrated if matches!(phase, Phase::InStep(_)) => done.push(Step::Validate),
            _ => {}
        }
        phase = next;
    }
    Ok(move |r: &mut crate::journal::Record| {
        with(r);
        r.phase = phase;
        for s in done {
            if !r.steps_done.contains(&s) {
                r.steps_done.push(s);
            }
        }
    })
}

/// Resolves when a stop is requested; never when the stop sender is gone without one (nobody can ask).
async fn stop_requested(mut stop: watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Engine {
    /// Works under `guard` from now on: every mutation checks it first, and every request the engine
    /// sends is fenced by it (none is sent or retried once the Lease can no longer be proven held).
    pub fn hold(&mut self, guard: Arc<LeaseGuard>) {
        self.cluster = self.cluster.fenced(guard.fence());
        self.lease = Some(guard);
    }

    fn say(&self, line: &str) {
        (self.progress)(line);
    }

    /// Reports progress of a long wait without flooding CI logs (see `report::progress`).
    pub(crate) fn wait_progress(
        &self,
        ns: &str,
        step: Option<Step>,
        state: &str,
        ready: (u32, u32),
        detail: &str,
    ) {
        if let Some(p) = &self.waits {
            let u = ProgressUpdate {
                namespace: ns.to_string(),
                step,
                state: state.to_string(),
                ready: Some(ready),
                detail: detail.to_string(),
            };
            p.lock().unwrap_or_else(|e| e.into_inner()).update(&u);
        }
    }

    /// Opens (a namespace starts) or closes (it has its outcome) the namespace's wait-progress lines.
    fn wait_progress_open(&self, ns: &str, open: bool) {
        if let Some(p) = &self.waits {
            p.lock().unwrap_or_else(|e| e.into_inner()).set_open(ns, open);
        }
    }

    /// Fails when the lease can no longer be proven held (a proof that only went stale gets one lease
    /// duration to be refreshed: [`crate::lease::LeaseGuard::check_held`]).
    pub(crate) async fn check_lease(&self) -> Result<(), EngineError> {
        if let Some(l) = &self.lease {
            l.check_held().await?;
        }
        Ok(())
    }

    /// Waits for a workload's rollout: on the fleet's watch caches when the run has them, else on a watch
    /// of its own (the same rules either way: `gates::rollout`).
    pub(crate) async fn wait_rollout(
        &self,
        kind: crate::cluster::WorkloadKind,
        ns: &str,
        name: &str,
        min_generation: i64,
        until: Instant,
    ) -> Result<crate::cluster::RolloutDone, crate::cluster::ClusterError> {
        match &self.cache {
            Some(c) => c.wait_rollout(kind, ns, name, min_generation, until).await,
            None => {
                self.cluster
                    .wait_rollout(kind, ns, name, min_generation, until)
                    .await
            }
        }
    }

    /// The cluster-wide facts every assessment needs, read once a run (the first caller reads them, the
    /// others wait for that read).
    pub async fn cluster_info(&self) -> Result<&crate::assess::ClusterInfo, crate::cluster::ClusterError> {
        self.cluster_info
            .get_or_try_init(|| Box::pin(self.cluster.read_cluster_info("istio-system")))
            .await
    }

    /// Reads the namespace and plans it (read-only: used by `plan` and the fleet preflight).
    pub async fn assess(
        &self,
        ns: &str,
        opts: &NamespaceOptions,
    ) -> Result<(Snapshot, NamespacePlan), EngineError> {
        self.assess_seeing(ns, opts, None).await
    }

    /// [`Engine::assess`], with the other namespaces' labels as given (`None`: as they are now). The fleet
    /// preflight passes the labels read before the run's first write: a namespace assessed while others
    /// already migrate must see them as they were (an ambient label on a namespace whose pods still have
    /// their sidecars would hide those sidecar callers), as when the whole fleet is assessed first.
    pub async fn assess_seeing(
        &self,
        ns: &str,
        opts: &NamespaceOptions,
        namespace_labels: Option<&crate::cluster::NamespaceLabels>,
    ) -> Result<(Snapshot, NamespacePlan), EngineError> {
        // The reads below are boxed: their futures are tens of KB (the uncached snapshot reads every kind,
        // the cluster info is read once a run), and an unboxed await would make every namespace's job
        // future that large for the whole of its run (50 jobs in flight held 5.5 MB at 1,000 namespaces).
        let info = self.cluster_info().await?;
        let snapshot = match &self.cache {
            Some(cache) => match namespace_labels {
                Some(l) => Self::snapshot_seeing(cache, ns, info, l.clone())?,
                None => Self::snapshot_from(cache, ns, info)?,
            },
            None => {
                let mut info = info.clone();
                info.namespace_labels = match namespace_labels {
                    Some(l) => l.clone(),
                    None => Arc::new(self.cluster.read_namespace_labels().await?),
                };
                Box::pin(self.cluster.read_snapshot(ns, &info)).await?
            }
        };
        let plan = crate::assess::plan::plan_namespace(&snapshot, &opts.plan);
        Ok((snapshot, plan))
    }

    /// The snapshot of `ns` from the fleet's watch caches, with the namespace labels as cached now.
    fn snapshot_from(
        cache: &crate::cluster::FleetCache,
        ns: &str,
        info: &crate::assess::ClusterInfo,
    ) -> Result<Snapshot, crate::cluster::ClusterError> {
        Self::snapshot_seeing(cache, ns, info, cache.namespace_labels())
    }

    /// The snapshot of `ns` from the fleet's watch caches, with the namespace labels as given.
    fn snapshot_seeing(
        cache: &crate::cluster::FleetCache,
        ns: &str,
        info: &crate::assess::ClusterInfo,
        labels: crate::cluster::NamespaceLabels,
    ) -> Result<Snapshot, crate::cluster::ClusterError> {
        let mut info = info.clone();
        info.namespace_labels = labels;
        cache.snapshot(ns, &info)
    }

    /// The snapshot [`Engine::assess`] read of `ns`, read again from the watch caches (no request), with the
    /// namespaces' labels as given (`None`: as cached now): `None` without caches, before the first
    /// assessment or when the namespace is gone. The fleet preflight keeps only plans and reads a snapshot
    /// again when a fleet decision needs it.
    pub fn cached_snapshot(
        &self,
        ns: &str,
        namespace_labels: Option<&crate::cluster::NamespaceLabels>,
    ) -> Option<Snapshot> {
        let info = self.cluster_info.get()?;
        let cache = self.cache.as_ref()?;
        match namespace_labels {
            Some(l) => Self::snapshot_seeing(cache, ns, info, l.clone()).ok(),
            None => Self::snapshot_from(cache, ns, info).ok(),
        }
    }

    /// Runs one namespace to a terminal state. Never panics on cluster trouble: errors become
    /// `RollbackFailed` (state unknown, a human is needed) or `Aborted` (lease lost / fenced).
    pub async fn run_namespace(&self, ns: &str, opts: &NamespaceOptions) -> NamespaceRun {
        let mut run = NamespaceRun::new(ns);
        self.wait_progress_open(ns, true);
        let result = self.run_namespace_inner(ns, opts, &mut run).await;
        // The namespace has its outcome: a wait still winding down prints no progress line after it.
        self.wait_progress_open(ns, false);
        match result {
            Ok((outcome, phase)) => run.finish(outcome, phase),
            Err(e) => {
                let fenced = e.is_fenced();
                run.reason = Some(if fenced {
                    e.to_string()
                } else {
                    stopped_reason(ns, &e)
                });
                tracing::error!(namespace = ns, error = %e, "namespace run stopped");
                if fenced {
                    run.finish(NsOutcome::Aborted, None)
                } else {
                    run.finish(NsOutcome::RollbackFailed, None)
                }
            }
        }
    }

    async fn run_namespace_inner(
        &self,
        ns: &str,
        opts: &NamespaceOptions,
        run: &mut NamespaceRun,
    ) -> Result<(NsOutcome, Option<Phase>), EngineError> {
        let existing = Journal::open(&self.cluster, &self.state_namespace, ns, &self.run_id).await?;
        let prior = existing.as_ref().map(|j| j.record().phase);
        match prior {
            Some(Phase::Migrated) => {
                self.say(&format!("{ns}: already migrated (journal), skipped"));
                return Ok((NsOutcome::AlreadyMigrated, prior));
            }
            Some(Phase::RollbackFailed) => {
                run.reason = Some(format!(
                    "namespace {ns}: a previous rollback failed; inspect `ambient-migrate status -n {ns}`, fix the cause, then run `ambient-migrate rollback -n {ns}` (add --force to overwrite changes made since the migration)"
                ));
                return Ok((NsOutcome::RollbackFailed, prior));
            }
            Some(Phase::Held { at }) => {
                run.reason = Some(format!(
                    "namespace {ns} is held at step {} after a gate failure; run `ambient-migrate rollback -n {ns}` or fix and resume",
                    at.number()
                ));
                return Ok((NsOutcome::Held, prior));
            }
            Some(Phase::RolledBack) if !opts.retry_rolled_back => {
                return Ok((NsOutcome::RolledBack, prior));
            }
            _ => {}
        }
        let fresh = matches!(
            prior,
            None | Some(Phase::Pending | Phase::Preflight | Phase::RolledBack)
        );

        // Preflight (read-only).
        let (snapshot, plan) = self.assess(ns, opts).await?;
        // The fresh backup's content, from the same read, when this attempt takes a fresh one (a fresh
        // start's journal is at Pending when `backup_for` runs; a resumed one loads the recorded backup);
        // the snapshot itself is dropped now, not held across the journal's and the lease's requests: the
        // typed objects of a namespace are far larger than its backup, and every namespace in flight held
        // one at the start of a wide fleet.
        let taken = (fresh && self.cache.is_some())
            .then(|| Backup::from_snapshot(&snapshot, Some(self.run_id.as_str())));
        drop(snapshot);
        run.findings = plan.findings.clone();
        run.plan = Some(plan.clone());
        if fresh && plan.blocked() {
            let blockers: Vec<String> = plan
                .findings
                .iter()
                .filter(|f| f.severity == crate::assess::Severity::Blocker)
                .map(|f| format!("{}: {}", f.object, f.message))
                .collect();
            run.reason = Some(blockers.join("; "));
            self.say(&format!("{ns}: preflight blocked: {}", blockers.join("; ")));
            return Ok((NsOutcome::Blocked, prior));
        }

        // From here on we write: lease first.
        self.check_lease().await?;
        let mut journal = match existing {
            Some(j) => j,
            None => Journal::create(&self.cluster, &self.state_namespace, ns, &self.run_id).await?,
        };
        if matches!(journal.record().phase, Phase::RolledBack) {
            // A new attempt after a verified rollback: the operator may have changed the namespace since,
            // so the old backup is stale (a rollback to it would revert those changes). The journal starts
            // over, and the backup is taken fresh before the first mutation (`backup_for`), replacing the
            // stored one.
            journal
                .update(|r| {
                    r.phase = Phase::Pending;
                    r.steps_done.clear();
                    r.changes.clear();
                    r.gates.clear();
                    r.outcome = None;
                    r.backup = None;
                    exec::forget_intents(r);
                })
                .await?;
        }
        if journal.record().phase == Phase::Pending {
            // Staged: Pending and Preflight both take a fresh backup on resume (`backup_for`), and the
            // write that records the backup carries it.
            self.stage_transitions(&mut journal, ns, &[Event::PreflightPassed], |_| {})?;
        }

        // Backup before the first mutation (a resumed run keeps the first backup: it is the truth).
        let backup = self.backup_for(&journal, ns, taken).await?;
        if let Some(dir) = &self.backup_dir {
            std::fs::create_dir_all(dir).map_err(|source| EngineError::BackupDir {
                path: dir.clone(),
                source,
            })?;
            let path = dir.join(format!("backup-{ns}.yaml"));
            backup.write_file(&path)?;
            run.backup_file = Some(path);
        }
        if journal.record().phase == Phase::Preflight {
            let digest = backup.digest()?;
            let cm = backup::config_map_name(ns);
            let file = run.backup_file.as_ref().map(|p| p.display().to_string());
            // Step 1 starts in the same journal write, unless a stop was asked for meanwhile (the namespace
            // then stops backed up, not started, as between two steps): a run that dies after the write
            // resumes step 1, which is idempotent and has sent nothing yet.
            let events: &[Event] = if *self.stop.borrow() {
                &[Event::BackedUp]
            } else {
                &[Event::BackedUp, Event::StepStarted]
            };
            let intent = (events.len() == 2).then(|| exec::intent(Step::ActivateWaypoint, &plan));
            self.transitions_with(&mut journal, ns, events, |r| {
                if let Some(i) = intent {
                    i(r);
                }
                r.backup = Some(crate::journal::BackupRef {
                    config_map: cm.clone(),
                    file: file.clone(),
                    taken_at: backup.taken_at.clone(),
                    digest: Some(digest.clone()),
                });
                if let Some(inj) = plan.injection.pairs().first() {
                    r.original_injection = Some(crate::journal::InjectionLabel {
                        key: inj.0.to_string(),
                        value: inj.1.clone(),
                    });
                }
            })
            .await?;
            self.event(
                ns,
                "BackupTaken",
                &format!("ambient-migrate backed up namespace {ns} before migrating"),
                EventType::Normal,
            )
            .await;
        }

        let mut ctx = NsCtx {
            engine: self,
            ns: ns.to_string(),
            opts,
            journal,
            plan,
            backup,
            step_until: None,
            shutdown_until: None,
        };

        // A rerun of a namespace that a dead run left in a rollback finishes the rollback.
        let phase = ctx.journal.record().phase;
        if let Phase::RollingBack { from } = phase {
            self.say(&format!("{ns}: resuming rollback from step {}", from.number()));
            return self.finish_rollback(&mut ctx, from, None, run).await;
        }
        if !fresh && opts.resume == Resume::Rollback && phase.reached_step().is_some() {
            let from = phase.reached_step().unwrap_or(Step::ActivateWaypoint);
            self.say(&format!(
                "{ns}: left mid-way by a previous run; rolling back (resume = rollback)"
            ));
            self.transition(&mut ctx.journal, ns, Event::RollbackRequested)
                .await?;
            return self.finish_rollback(&mut ctx, from, None, run).await;
        }

        // The steps, from where the journal says.
        loop {
            let phase = ctx.journal.record().phase;
            let step = match phase {
                Phase::BackedUp => Step::ActivateWaypoint,
                Phase::StepDone(s) => match s.next() {
                    Some(n) => n,
                    None => break,
                },
                Phase::InStep(s) => s,
                Phase::Migrated => break,
                other => {
                    return Err(EngineError::UnexpectedPhase {
                        namespace: ns.to_string(),
                        message: format!("unexpected journal phase {other:?}"),
                    });
                }
            };
            if *self.stop.borrow() && !matches!(phase, Phase::InStep(_)) {
                // Cancelled between steps: bring the namespace to a safe state (roll back what was done).
                self.say(&format!(
                    "{ns}: stop requested before step {}; rolling back",
                    step.number()
                ));
                let from = phase.reached_step().unwrap_or(Step::ActivateWaypoint);
                if phase == Phase::BackedUp {
                    return Ok((NsOutcome::NotStarted, Some(phase)));
                }
                ctx.shutdown_until = Some(deadline(opts.timeouts.shutdown));
                self.transition(&mut ctx.journal, ns, Event::RollbackRequested)
                    .await?;
                return self.finish_rollback(&mut ctx, from, None, run).await;
            }
            if !matches!(phase, Phase::InStep(_)) {
                let intent = exec::intent(step, &ctx.plan);
                self.transition_with(&mut ctx.journal, ns, Event::StepStarted, intent)
                    .await?;
            }
            self.say(&format!("{ns}: step {} {}", step.number(), step.name()));
            let mut step_run = StepRun {
                step,
                started: jiff::Timestamp::now(),
                ended: None,
                passed: false,
                gates: Vec::new(),
                changes: Vec::new(),
            };
            let before = ctx.journal.record().changes.len();
            ctx.step_until = Some(deadline(opts.timeouts.step));
            let executed = tokio::select! {
                r = exec::execute(&mut ctx, step) => Some(r),
                () = stop_requested(self.stop.clone()) => None,
            };
            ctx.step_until = None;
            let Some(executed) = executed else {
                // Stopped mid-step: the step is abandoned where it was (every mutation it sent is
                // journaled; an interrupted journal write is settled by the next one) and the namespace
                // rolls back within the shutdown budget.
                self.say(&format!(
                    "{ns}: stop requested during step {}; abandoning it and rolling back",
                    step.number()
                ));
                ctx.shutdown_until = Some(deadline(opts.timeouts.shutdown));
                run.reason = Some(format!(
                    "stop requested during step {} ({}): rolled back",
                    step.number(),
                    step.name()
                ));
                self.transition(&mut ctx.journal, ns, Event::RollbackRequested)
                    .await?;
                return self.finish_rollback(&mut ctx, step, None, run).await;
            };
            let gates = match executed {
                Ok(g) => g,
                Err(e) if e.is_fenced() => return Err(e),
                Err(e) => vec![GateResult::new(
                    crate::steps::gate_names::STEP_ACTION,
                    crate::gates::GateOutcome::Error,
                    serde_json::json!({"error": e.to_string()}),
                    format!("step {} could not be applied: {e}", step.number()),
                )],
            };
            step_run.changes = ctx.journal.record().changes[before..].to_vec();
            let record_gates = |r: &mut crate::journal::Record| {
                for g in &gates {
                    r.push_gate(g.clone());
                }
            };
            let failed: Vec<&GateResult> = gates.iter().filter(|g| !g.passed()).collect();
            step_run.passed = failed.is_empty();
            step_run.gates = gates.clone();
            step_run.ended = Some(jiff::Timestamp::now());
            run.steps.push(step_run);
            if failed.is_empty() {
                let last = step.next().is_none();
                // The next step starts in the same write, unless a stop was asked for meanwhile (then the
                // namespace stops between the steps, as below).
                let events: &[Event] = if last || *self.stop.borrow() {
                    &[Event::GatesPassed]
                } else {
                    &[Event::GatesPassed, Event::StepStarted]
                };
                let starts = step.next().filter(|_| events.len() == 2);
                let intent = starts.map(|n| exec::intent(n, &ctx.plan));
                let with = |r: &mut crate::journal::Record| {
                    record_gates(r);
                    if last {
                        r.outcome = Some("migrated".into());
                    }
                    if let Some(i) = intent {
                        i(r);
                    }
                };
                if last {
                    self.transitions_with(&mut ctx.journal, ns, events, with).await?;
                } else {
                    // Not written yet: a run that dies before the next write redoes this step, whose
                    // work is done and whose gates pass again; the next step's first write carries it.
                    self.stage_transitions(&mut ctx.journal, ns, events, with)?;
                }
                // No Event per step: the namespace's Events are aggregated to its milestones (backup
                // taken, migrated, gate failed, rollback), each naming the steps it covers; the journal
                // and the reports keep every step.
                continue;
            }
            let why = failed
                .iter()
                .map(|g| format!("{}: {}", g.gate, g.message))
                .collect::<Vec<_>>()
                .join("; ");
            run.reason = Some(format!("step {} ({}) failed: {why}", step.number(), step.name()));
            self.say(&format!("{ns}: step {} gate failed: {why}", step.number()));
            self.event(
                ns,
                "GateFailed",
                &format!("step {} ({}): {why}", step.number(), step.name()),
                EventType::Warning,
            )
            .await;
            if opts.on_gate_failure == OnGateFailure::Hold {
                self.transition_with(&mut ctx.journal, ns, Event::GateFailedHold, |r| {
                    record_gates(r);
                    r.outcome = Some(format!("held: {why}"));
                })
                .await?;
                return Ok((NsOutcome::Held, Some(ctx.journal.record().phase)));
            }
            self.transition_with(&mut ctx.journal, ns, Event::GateFailed, record_gates)
                .await?;
            return self.finish_rollback(&mut ctx, step, None, run).await;
        }
        if ctx.journal.record().outcome.as_deref() != Some("migrated") {
            // Resumed at Migrated by a run that died before recording the outcome.
            ctx.journal
                .update(|r| r.outcome = Some("migrated".into()))
                .await?;
        }
        self.event(
            ns,
            "Migrated",
            &format!(
                "namespace {ns} migrated to ambient mode and validated: steps {} done, gates green",
                run.steps
                    .iter()
                    .map(|s| s.step.number().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            EventType::Normal,
        )
        .await;
        self.say(&format!("{ns}: migrated"));
        Ok((NsOutcome::Migrated, Some(ctx.journal.record().phase)))
    }

    async fn finish_rollback(
        &self,
        ctx: &mut NsCtx<'_>,
        from: Step,
        to_step: Option<u8>,
        run: &mut NamespaceRun,
    ) -> Result<(NsOutcome, Option<Phase>), EngineError> {
        let ns = ctx.ns.clone();
        self.event(
            &ns,
            "RollbackStarted",
            &format!("rolling back from step {}", from.number()),
            EventType::Warning,
        )
        .await;
        let rb = rollback::execute(ctx, from, to_step).await;
        let ok = rb.ok;
        run.rollback = Some(rb.clone());
        if rb.lease_lost {
            return Err(EngineError::LeaseLost {
                namespace: ns.clone(),
                message: rb.error.unwrap_or_default(),
            });
        }
        if ok && let Some(k) = to_step.filter(|k| *k > 0).and_then(Step::from_number) {
            // A partial rollback leaves the namespace as if step K had just finished: the journal forgets
            // the undone steps and their changes, so a later `run` continues from step K+1.
            self.check_lease().await?;
            ctx.journal
                .update(|r| {
                    r.phase = Phase::StepDone(k);
                    r.steps_done.retain(|s| s.number() <= k.number());
                    r.changes.retain(|c| c.step().number() <= k.number());
                    r.outcome = Some(format!("rolled back to step {}", k.number()));
                })
                .await?;
            let msg = format!("rolled back to step {} ({}), verified", k.number(), k.name());
            self.event(&ns, "RolledBack", &msg, EventType::Warning).await;
            self.say(&format!("{ns}: {msg}"));
            return Ok((NsOutcome::RolledBack, Some(ctx.journal.record().phase)));
        }
        if ok {
            let outcome = format!("rolled back: {}", run.reason.clone().unwrap_or_default());
            self.transition_with(&mut ctx.journal, &ns, Event::RollbackDone, |r| {
                r.outcome = Some(outcome)
            })
            .await?;
            self.event(
                &ns,
                "RolledBack",
                "rollback done and verified: labels and config equal the backup, sidecars ready",
                EventType::Warning,
            )
            .await;
            self.say(&format!("{ns}: rolled back and verified"));
            Ok((NsOutcome::RolledBack, Some(ctx.journal.record().phase)))
        } else {
            let err = rb.error.clone().unwrap_or_default();
            self.transition_with(&mut ctx.journal, &ns, Event::RollbackError, |r| {
                r.outcome = Some(format!("rollback failed: {err}"))
            })
            .await?;
            self.event(
                &ns,
                "RollbackFailed",
                &format!("rollback failed, a human is needed: {err}"),
                EventType::Warning,
            )
            .await;
            self.say(&format!("{ns}: ROLLBACK FAILED: {err}"));
            run.reason = Some(format!(
                "{}; rollback failed: {err}",
                run.reason.clone().unwrap_or_default()
            ));
            Ok((NsOutcome::RollbackFailed, Some(ctx.journal.record().phase)))
        }
    }

    /// Operator rollback (`ambient-migrate rollback -n NS [--to-step K]`).
    pub async fn rollback_namespace(
        &self,
        ns: &str,
        opts: &NamespaceOptions,
        to_step: Option<u8>,
    ) -> NamespaceRun {
        let mut run = NamespaceRun::new(ns);
        let res: Result<(NsOutcome, Option<Phase>), EngineError> = async {
            let Some(rec) = Journal::load(&self.cluster, &self.state_namespace, ns).await? else {
                return Err(EngineError::NoJournal {
                    namespace: ns.to_string(),
                    state_namespace: self.state_namespace.clone(),
                });
            };
            if rec.phase.nothing_to_undo() {
                run.reason = Some(format!(
                    "nothing to roll back: namespace {ns} carries no ambient-migrate change (journal phase {})",
                    crate::journal::phase_label(&rec.phase)
                ));
                return Ok((NsOutcome::RolledBack, Some(rec.phase)));
            }
            // A failed rollback's step is not recorded: undo everything journaled (idempotently).
            let from = match rec.phase {
                Phase::RollbackFailed => Some(Step::Validate),
                p => p.reached_step(),
            };
            let Some(from) = from else {
                return Err(EngineError::UnexpectedPhase {
                    namespace: ns.to_string(),
                    message: format!("phase {:?} has no step to roll back", rec.phase),
                });
            };
            self.check_lease().await?;
            let mut journal = Journal::load_or_create(&self.cluster, &self.state_namespace, ns, &self.run_id).await?;
            let backup = self.backup_for(&journal, ns, None).await?;
            let (_, plan) = self.assess(ns, opts).await?;
            if !matches!(journal.record().phase, Phase::RollingBack { .. }) {
                self.transition(&mut journal, ns, Event::RollbackRequested).await?;
            }
            let mut ctx = NsCtx { engine: self, ns: ns.to_string(), opts, journal, plan, backup, step_until: None, shutdown_until: None };
            run.reason = Some("rollback requested by an operator".into());
            self.finish_rollback(&mut ctx, from, to_step, &mut run).await
        }
        .await;
        match res {
            Ok((o, p)) => run.finish(o, p),
            Err(e) => {
                run.reason = Some(e.to_string());
                run.finish(NsOutcome::RollbackFailed, None)
            }
        }
    }

    /// The backup this attempt works from. Before the first mutation (phase pending or preflight) it is
    /// taken fresh from the live namespace, replacing any stored one (an old `backup -n`, a leftover of
    /// an earlier attempt). From then on it is the recorded one, checked against the journal's identity:
    /// a missing or different backup is an error, never replaced by the half-migrated live state.
    /// With the fleet's watch caches, the fresh backup is `taken`, built from the namespace as the caches
    /// held it at the start of this attempt (the same objects `read_live` lists); without, it is read live.
    async fn backup_for(
        &self,
        journal: &Journal,
        ns: &str,
        taken: Option<Backup>,
    ) -> Result<Backup, EngineError> {
        let rec = journal.record();
        if matches!(rec.phase, Phase::Pending | Phase::Preflight) {
            let run_id = Some(self.run_id.as_str());
            let taken = match taken {
                Some(b) => b,
                None => Backup::read_live(&self.cluster, ns, run_id).await?,
            };
            return Ok(backup::store_fresh(&self.cluster, &self.state_namespace, taken).await?);
        }
        match rec.backup.as_ref().and_then(|b| b.identity()) {
            Some(id) => Ok(backup::load_recorded(&self.cluster, &self.state_namespace, ns, &id).await?),
            // A journal written before identities were recorded: the stored backup is all there is.
            None => Backup::load_from_cluster(&self.cluster, &self.state_namespace, ns)
                .await?
                .ok_or_else(|| {
                    backup::BackupError::Missing {
                        namespace: ns.to_string(),
                        state_namespace: self.state_namespace.clone(),
                    }
                    .into()
                }),
        }
    }

    pub(crate) async fn transition(
        &self,
        journal: &mut Journal,
        ns: &str,
        event: Event,
    ) -> Result<(), EngineError> {
        self.transition_with(journal, ns, event, |_| {}).await
    }

    /// A phase change and what goes with it (the step's gate measurements, the backup reference, the
    /// outcome) in one journal write: the journal is written once per phase change, never once per gate.
    pub(crate) async fn transition_with(
        &self,
        journal: &mut Journal,
        ns: &str,
        event: Event,
        with: impl FnOnce(&mut crate::journal::Record),
    ) -> Result<(), EngineError> {
        self.transitions_with(journal, ns, &[event], with).await
    }

    /// Several phase changes in a row (a step's gates passed and the next step started) as one journal
    /// write: a crash after it resumes in the later phase, which the earlier one leads to anyway.
    pub(crate) async fn transitions_with(
        &self,
        journal: &mut Journal,
        ns: &str,
        events: &[Event],
        with: impl FnOnce(&mut crate::journal::Record),
    ) -> Result<(), EngineError> {
        self.check_lease().await?;
        let change = with_phase_changes(journal, ns, events, with)?;
        journal.update(change).await?;
        Ok(())
    }

    /// Phase changes staged in the journal, written with its next write ([`Journal::stage`]): for the
    /// progress from one step to the next, which a run resumed from the earlier phase reaches again by
    /// redoing idempotent work. Whatever the next step sends is journaled first, in a write that carries
    /// these; a step that sends nothing costs no write at all.
    pub(crate) fn stage_transitions(
        &self,
        journal: &mut Journal,
        ns: &str,
        events: &[Event],
        with: impl FnOnce(&mut crate::journal::Record),
    ) -> Result<(), EngineError> {
        let change = with_phase_changes(journal, ns, events, with)?;
        journal.stage(change);
        Ok(())
    }

    pub(crate) async fn event(&self, ns: &str, reason: &str, message: &str, type_: EventType) {
        if self.cluster.dry_run() {
            return;
        }
        let nsobj = k8s_openapi::api::core::v1::Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(ns.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        let _ = self.cluster.emit_event(&nsobj, reason, message, type_).await;
    }
}

/// True for a wait that ran out of time (as opposed to a wait that saw a failure).
pub(crate) fn is_timeout(e: &crate::cluster::ClusterError) -> bool {
    matches!(e, crate::cluster::ClusterError::Timeout { .. })
}

/// A deadline `d` from now.
pub(crate) fn deadline(d: Duration) -> Instant {
    Instant::now() + d
}

/// The engine's result type: every failure is an [`EngineError`] variant, never a bare string.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_lease_stops_as_fenced_whatever_the_names_involved() {
        // A workload called `release-api` in the message must not matter: the variant decides.
        let lost = EngineError::LeaseLost {
            namespace: "shop".into(),
            message: "restore Deployment shop/release-api".into(),
        };
        assert!(lost.is_fenced());
        let other = EngineError::UnexpectedPhase {
            namespace: "shop".into(),
            message: "release-api lease".into(),
        };
        assert!(!other.is_fenced());
    }

    #[test]
    fn a_namespace_stopped_by_an_error_names_what_to_do() {
        let e = EngineError::Cluster(crate::cluster::ClusterError::Api {
            what: "write journal ConfigMap ambient-migrate/journal-shop".into(),
            code: 500,
            reason: "InternalError".into(),
            message: "etcd unavailable".into(),
            hint: "",
        });
        let r = stopped_reason("shop", &e);
        assert!(r.starts_with("write journal ConfigMap"), "{r}");
        assert!(r.contains("rerun `ambient-migrate run` to resume"), "{r}");
        assert!(r.contains("`ambient-migrate rollback -n shop`"), "{r}");
    }
}
