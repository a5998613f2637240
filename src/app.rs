//! The commands behind the CLI (docs/design.md §7): configuration, cluster connection, fleet selection, and the
//! mapping of outcomes to exit codes and reports. `main` only parses, sets up logging and calls [`run`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::ListParams;
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use crate::assess::enforcement::FleetPosition;
use crate::assess::permissions::{self, Permission};
use crate::assess::plan::{NamespacePlan, check_enforcement};
use crate::assess::{Severity, Snapshot};
use crate::backup::{self, Backup};
use crate::cli::{Cli, Command, OutputFormat};
use crate::cluster::{Cluster, ClusterOptions, ConnectOptions};
use crate::engine::{Engine, NamespaceOptions, NamespaceRun, Timeouts};
use crate::fleet::{self, FleetOptions, NsOutcome};
use crate::journal::Journal;
use crate::lease::{self, LeaseConfig, LeaseError};
use crate::report::{
    self, NamespaceOutcome, NamespaceReport, RollbackOutcome, RollbackReport, RunReport, Section, Sections,
    StepOutcome, StepReport,
};
use crate::settings::{self, EffectiveSettings, LoadOptions, Settings};
use crate::steps::Phase;

pub use crate::exit;
use crate::exit::{CmdResult, Failure};

mod preflight;

/// Prints results: text lines or one JSON document on stdout; progress on stdout in text mode and on
/// stderr in JSON mode (so stdout stays one parseable document).
#[derive(Clone)]
pub struct Out {
    pub format: OutputFormat,
    /// The command runs inside another one (`rehearse` runs `run`): its report goes to the files only, and
    /// stdout carries the outer command's result.
    pub embedded: bool,
}

impl Out {
    pub fn progress(&self) -> Arc<dyn Fn(&str) + Send + Sync> {
        let json = self.format == OutputFormat::Json;
        Arc::new(move |line: &str| {
            let stamp = jiff::Timestamp::now().strftime("%H:%M:%S");
            if json {
                eprintln!("{stamp} {line}");
            } else {
                println!("{stamp} {line}");
            }
        })
    }
}

impl Out {
    /// Where rate-limited progress lines go: stdout in text mode, stderr in JSON mode.
    pub fn progress_writer(&self) -> Box<dyn std::io::Write + Send> {
        match self.format {
            OutputFormat::Json => Box::new(std::io::stderr()),
            OutputFormat::Text => Box::new(std::io::stdout()),
        }
    }
}

/// Loads layered settings (exit 2 with every problem named on failure).
pub fn load_settings(cli: &Cli) -> Result<Settings, Failure> {
    let mut overrides = cli.to_overrides();
    // rollback/backup/restore/status schedule no fleet: the config's canaries (which must be part of the
    // fleet) would otherwise turn `-n NS` into a configuration error. An explicit --canary/--set still wins.
    if !matches!(
        cli.command,
        Command::Run | Command::Plan { .. } | Command::Rehearse { .. }
    ) && !cli.namespaces.is_empty()
    {
        overrides.insert(0, ("fleet.canary".into(), String::new()));
    }
    if let Some(dir) = &cli.report_dir {
        overrides.push(("reports.dir".into(), dir.display().to_string()));
    }
    Settings::load(LoadOptions {
        config_file: cli.config.clone(),
        env: None,
        cli_overrides: overrides,
    })
    .map_err(|e| Failure::Usage(e.to_string()))
}

/// Maps the settings of one namespace onto the engine's options.
pub fn namespace_options(eff: &EffectiveSettings) -> NamespaceOptions {
    NamespaceOptions {
        plan: eff.plan_options(),
        on_gate_failure: eff.migration.on_gate_failure,
        resume: Default::default(),
        timeouts: Timeouts {
            waypoint_ready: eff.timeouts.waypoint_ready,
            rollout: eff.timeouts.rollout,
            probes: eff.timeouts.step,
            rollback: eff.timeouts.rollback,
            step: eff.timeouts.step,
            shutdown: eff.timeouts.shutdown,
        },
        probes: eff.probes.clone(),
        retry_rolled_back: true,
        force_rollback: false,
    }
}

/// Connects to the cluster the command line names (exit 2 with the reason when it cannot).
pub async fn connect(cli: &Cli, s: &Settings) -> Result<Cluster, Failure> {
    let opts = ClusterOptions {
        dry_run: cli.dry_run,
        field_manager: s.field_manager.clone(),
        request_timeout: s.timeouts.api_request,
        ..ClusterOptions::default()
    };
    let conn = ConnectOptions {
        kubeconfig: cli.kubeconfig.clone(),
        context: cli.context.clone(),
    };
    Cluster::connect(&conn, opts)
        .await
        .map_err(|e| Failure::Usage(e.to_string()))
}

/// The namespaces of the fleet: explicit list plus label selector, minus exclusions, canaries first.
pub async fn resolve_fleet(cluster: &Cluster, s: &Settings) -> Result<Vec<String>, Failure> {
    let mut out: Vec<String> = Vec::new();
    for c in &s.fleet.canary {
        if !out.contains(c) {
            out.push(c.clone());
        }
    }
    for n in &s.fleet.namespaces {
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    let api: kube::Api<Namespace> = cluster.all();
    if !s.fleet.selector.is_empty() {
        let lp = ListParams::default().labels(&s.fleet.selector);
        let list = cluster
            .call(&format!("list Namespaces {}", s.fleet.selector), || api.list(&lp))
            .await
            .map_err(|e| Failure::Usage(e.to_string()))?;
        for n in list.items.into_iter().filter_map(|n| n.metadata.name) {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out.retain(|n| !s.fleet.exclude.contains(n) && *n != s.state_namespace);
    if out.is_empty() {
        return Err(Failure::Usage("no namespace selected: pass -n NS (repeatable), --selector, or set fleet.namespaces / fleet.selector in the config".into()));
    }
    // Each namespace must exist: one list of the Namespaces answers for the whole fleet (a read per
    // namespace cost a fleet of hundreds as many round trips before anything else began).
    let all = ListParams::default();
    let existing: BTreeSet<String> = cluster
        .call("list Namespaces", || api.list(&all))
        .await
        .map_err(|e| Failure::Usage(e.to_string()))?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    if let Some(n) = out.iter().find(|n| !existing.contains(*n)) {
        return Err(Failure::Usage(format!(
            "namespace {n} does not exist in the cluster: fix fleet.namespaces / -n"
        )));
    }
    Ok(out)
}

/// The fleet Lease settings (`timeouts.lease` is its duration).
fn lease_config(s: &Settings) -> LeaseConfig {
    let mut c = LeaseConfig::new(&s.state_namespace);
    c.duration = s.timeouts.lease;
    c
}

fn engine(cluster: &Cluster, s: &Settings, out: &Out, run_id: &str, stop: watch::Receiver<bool>) -> Engine {
    Engine {
        cluster: cluster.clone(),
        state_namespace: s.state_namespace.clone(),
        run_id: run_id.to_string(),
        backup_dir: Some(s.reports.dir.join("backups")),
        lease: None,
        stop,
        progress: out.progress(),
        cluster_info: Default::default(),
        waits: Some(Arc::new(Mutex::new(crate::report::progress::Progress::new(
            out.progress_writer(),
            s.reports.progress_interval,
        )))),
        cache: None,
    }
}

/// Runs a parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    if matches!(cli.command, Command::Demo) {
        #[cfg(feature = "demo")]
        return crate::demo::run(&cli).await;
        #[cfg(not(feature = "demo"))]
        {
            return Failure::Usage(
                "this build has no simulator: the demo needs the `demo` feature (build with default features)".into(),
            )
            .report();
        }
    }
    if matches!(cli.command, Command::Rehearse { .. }) {
        #[cfg(feature = "demo")]
        return crate::rehearse::run(&cli).await;
        #[cfg(not(feature = "demo"))]
        {
            return Failure::Usage(
                "this build has no simulator: rehearse needs the `demo` feature (build with default features)".into(),
            )
            .report();
        }
    }
    exit::finish(connect_and_run(cli).await)
}

/// The commands that need a cluster: settings, connection, then the command.
async fn connect_and_run(cli: Cli) -> CmdResult {
    let s = load_settings(&cli)?;
    let cluster = connect(&cli, &s).await?;
    let out = Out {
        format: cli.output,
        embedded: false,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    spawn_signal_handler(stop_tx, s.timeouts.shutdown);
    run_with(&cli, &s, &cluster, &out, stop_rx).await
}

/// Turns SIGTERM / SIGINT (a CI cancellation) into the stop signal; a second one ends the process at once.
///
/// The first signal starts nothing new and lets in-flight namespaces reach a safe state. A second signal
/// means whoever sent it cannot wait: the process exits immediately with [`exit::HUMAN_NEEDED`]. That is
/// safe because every mutation is journaled before it is sent (`docs/design.md` §4), so a namespace left
/// mid-step is resumed or rolled back by the next run; the Lease is left to expire.
pub fn spawn_signal_handler(stop_tx: watch::Sender<bool>, shutdown: std::time::Duration) {
    tokio::spawn(async move {
        let Some(mut signals) = Signals::new() else { return };
        if signals.next().await.is_none() {
            return;
        }
        tracing::warn!(
            "stop requested: no new namespace starts; in-flight namespaces abandon their step and roll back within {shutdown:?} (a second signal stops at once)"
        );
        let _ = stop_tx.send(true);
        let why = tokio::select! {
            s = signals.next() => match s {
                Some(()) => "at once by a second signal",
                None => return,
            },
            () = tokio::time::sleep(shutdown) => "when timeouts.shutdown ran out",
        };
        eprintln!(
            "error: stopped {why}; namespaces in flight are left mid-step with current journals: run ambient-migrate again to resume or roll them back"
        );
        std::process::exit(exit::HUMAN_NEEDED);
    });
}

/// SIGTERM and SIGINT, registered once so that no signal between two waits is missed.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Option<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Some(Signals {
                term: signal(SignalKind::terminate()).ok()?,
                int: signal(SignalKind::interrupt()).ok()?,
            })
        }
        #[cfg(not(unix))]
        {
            Some(Signals {})
        }
    }

    /// The next signal; `None` when no more can arrive.
    async fn next(&mut self) -> Option<()> {
        #[cfg(unix)]
        {
            tokio::select! {
                r = self.term.recv() => r,
                r = self.int.recv() => r,
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.ok()
        }
    }
}

/// The commands that need a cluster, with settings and connection in hand (the demo reuses it).
pub async fn run_with(
    cli: &Cli,
    s: &Settings,
    cluster: &Cluster,
    out: &Out,
    stop: watch::Receiver<bool>,
) -> CmdResult {
    let run_id = format!("run-{}", &uuid::Uuid::new_v4().to_string()[..8]);
    match &cli.command {
        Command::Plan { fixes_dir } => cmd_plan(s, cluster, out, &run_id, fixes_dir.as_deref()).await,
        Command::Run => cmd_run(cli, s, cluster, out, &run_id, stop).await,
        Command::Status => cmd_status(s, cluster, out).await,
        Command::Rollback { to_step, force } => {
            let req = RollbackRequest {
                to_step: *to_step,
                force: *force,
            };
            cmd_rollback(cli, s, cluster, out, &run_id, req, stop).await
        }
        Command::Backup { file } => cmd_backup(cli, s, cluster, file, &run_id).await,
        Command::Restore { file } => cmd_restore(cli, s, cluster, out, file).await,
        Command::Demo | Command::Rehearse { .. } => Err(Failure::Usage(
            "demo and rehearse run their own simulator: they take no cluster".into(),
        )),
    }
}

fn findings_text(ns: &str, plan: &NamespacePlan) -> String {
    let mut t = String::new();
    let state = if plan.blocked() { "BLOCKED" } else { "ready" };
    t.push_str(&format!("namespace {ns}: {state}\n"));
    for f in &plan.findings {
        let sev = match f.severity {
            Severity::Blocker => "blocker",
            Severity::Warning => "warning",
            _ => "info",
        };
        t.push_str(&format!("  [{sev}] {} {}: {}\n", f.code, f.object, f.message));
        if !f.fix.is_empty() {
            t.push_str(&format!("      fix: {}\n", f.fix));
        }
    }
    t
}

fn plan_text(ns: &str, plan: &NamespacePlan) -> String {
    let mut t = findings_text(ns, plan);
    // Twins (and, with policies.migration = apply, the generated HTTPRoutes and per-version Services) are
    // created at the start of step 1 (engine/exec.rs, `activate_waypoint`).
    if plan.options.policy_migration == crate::assess::plan::PolicyMigration::Apply {
        for o in &plan.twins {
            t.push_str(&format!("  step 1: create {} (role {})\n", o.object, o.role));
        }
    }
    // Bridges go in just before the waypoint is bound, in whichever step binds it (engine/exec.rs,
    // `create_bridges`): step 1 in the seed's order, the end of step 4 when activation follows the restart.
    let bind_step = match plan.options.activation_order {
        crate::assess::plan::ActivationOrder::BeforeAmbient => 1,
        crate::assess::plan::ActivationOrder::AfterRestart => 4,
    };
    let bind = |t: &mut String| {
        for b in &plan.bridges {
            t.push_str(&format!(
                "  step {bind_step}: create bridge {} (before the waypoint is bound)\n",
                b.object
            ));
        }
        for l in &plan.waypoint_labels {
            t.push_str(&format!(
                "  step {bind_step}: label {} {}={}\n",
                l.target, l.key, l.value
            ));
        }
    };
    if bind_step == 1 {
        bind(&mut t);
    }
    t.push_str(&format!(
        "  step 2: label {} {}={}\n",
        plan.ambient_label.target, plan.ambient_label.key, plan.ambient_label.value
    ));
    for (k, v) in plan.injection.pairs() {
        t.push_str(&format!(
            "  step 3: remove label {k} (was {v}; restored on rollback)\n"
        ));
    }
    for (i, batch) in plan.restart_batches.iter().enumerate() {
        let names: Vec<String> = batch.iter().map(|w| w.to_string()).collect();
        t.push_str(&format!(
            "  step 4: restart batch {}: {}\n",
            i + 1,
            names.join(", ")
        ));
    }
    if bind_step == 4 {
        bind(&mut t);
    }
    for d in &plan.delete_at_step5 {
        t.push_str(&format!("  step 5: delete {d}\n"));
    }
    for k in &plan.kept_policies {
        t.push_str(&format!("  kept: {k}\n"));
    }
    t.push_str(&report::behaviour::text(ns, &plan.behaviour_changes));
    t.push_str(&plan.enforcement.text("  "));
    for d in &plan.routing.differences {
        t.push_str(&format!(
            "  routing {}: {} -> {} before, {} after (moments {}){}\n",
            d.virtual_service.name,
            d.request,
            d.before,
            d.after,
            d.moments.join(", "),
            if d.segment {
                " [PathPrefix segment: warning]"
            } else {
                ""
            }
        ));
    }
    t
}

/// Source namespaces of the Job probes the targets' settings define: all of them, and those where a
/// probe has secret headers.
fn probe_namespaces(s: &Settings, targets: &[String]) -> (Vec<String>, Vec<String>) {
    let mut all: Vec<String> = Vec::new();
    let mut secret: Vec<String> = Vec::new();
    for ns in targets {
        for p in &s.for_namespace(ns).probes {
            if let crate::probes::spec::ProbeKind::Job(j) = &p.kind {
                if !all.contains(&j.source_namespace) {
                    all.push(j.source_namespace.clone());
                }
                if crate::probes::job::secret_header_file(j).is_some()
                    && !secret.contains(&j.source_namespace)
                {
                    secret.push(j.source_namespace.clone());
                }
            }
        }
    }
    (all, secret)
}

/// Asks the API server (SelfSubjectAccessReview) for every permission `command` needs on `targets`;
/// returns the missing ones, or exit 3 when the API cannot answer.
async fn missing_permissions(
    cluster: &Cluster,
    s: &Settings,
    command: permissions::Command,
    targets: &[String],
) -> Result<Vec<Permission>, Failure> {
    let (probes, secret_probes) = probe_namespaces(s, targets);
    let needed = permissions::required(&permissions::Scope {
        command,
        targets,
        state_namespace: &s.state_namespace,
        probe_namespaces: &probes,
        secret_probe_namespaces: &secret_probes,
    });
    cluster
        .missing_permissions(&needed)
        .await
        .map_err(|e| Failure::HumanNeeded(format!("cannot check the runner's permissions: {e}")))
}

/// What to tell a platform engineer about missing permissions: each one, then the RBAC rules to add.
fn missing_permissions_text(command: &str, missing: &[Permission]) -> String {
    let mut t = format!(
        "the identity running ambient-migrate lacks {} permission(s) that `{command}` needs (asked with SelfSubjectAccessReview):\n",
        missing.len()
    );
    for p in missing {
        t.push_str(&format!("  - {} ({})\n", permissions::describe(p), p.why));
    }
    t.push_str("Add these RBAC rules (ci/k8s/ has the shipped roles):\n");
    t.push_str(&permissions::rbac_rules(missing));
    t
}

/// Stops a writing command before its first write when permissions are missing (exit 4, nothing
/// changed); `Ok` when every permission is granted.
async fn prove_permissions(
    cluster: &Cluster,
    s: &Settings,
    command: permissions::Command,
    name: &str,
    targets: &[String],
) -> Result<(), Failure> {
    let missing = missing_permissions(cluster, s, command, targets).await?;
    if missing.is_empty() {
        return Ok(());
    }
    Err(Failure::Blocked(format!(
        "{}nothing was changed.",
        missing_permissions_text(name, &missing)
    )))
}

async fn cmd_plan(
    s: &Settings,
    cluster: &Cluster,
    out: &Out,
    run_id: &str,
    fixes_dir: Option<&Path>,
) -> CmdResult {
    let namespaces = resolve_fleet(cluster, s).await?;
    let missing = missing_permissions(cluster, s, permissions::Command::Run, &namespaces).await?;
    if !missing.is_empty() {
        eprint!("warning: {}", missing_permissions_text("run", &missing));
    }
    let (_tx, rx) = watch::channel(false);
    let mut eng = engine(cluster, s, out, run_id, rx);
    // With run's permissions the fleet is read as run reads it: one list per kind, every namespace's
    // snapshot taken from those lists and dropped after its assessment (read one namespace at a time, a
    // fleet of 1,000 namespaces took 1,000 rounds of lists and held every snapshot until the fleet's
    // decisions). Without them (a role scoped to some namespaces) each namespace is read on its own.
    if missing.is_empty() {
        let cache = crate::cluster::FleetCache::start(cluster);
        let (synced, _) = tokio::join!(caches_synced(s, &cache), eng.cluster_info());
        synced?;
        eng.cache = Some(cache);
    }
    let cached = eng.cache.is_some();
    // Every namespace is assessed against the same view of the others' labels.
    let labels = preflight_labels(&eng);
    let mut plans = Vec::new();
    let mut snapshots: BTreeMap<String, Snapshot> = BTreeMap::new();
    let mut callers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ns in &namespaces {
        let opts = namespace_options(&s.for_namespace(ns));
        let (snap, plan) = eng
            .assess_seeing(ns, &opts, labels.as_ref())
            .await
            .map_err(|e| Failure::HumanNeeded(format!("namespace {ns}: {e}")))?;
        callers.insert(ns.clone(), plan.callers.clone());
        if !cached {
            snapshots.insert(ns.clone(), snap);
        }
        plans.push((ns.clone(), plan));
    }
    // The enforcement check sees the fleet order the run would use.
    let order = if s.fleet.order == settings::FleetOrder::CallersFirst {
        fleet::callers_first(&namespaces, &callers)
    } else {
        namespaces.clone()
    };
    let blocked = !fleet_enforcement(s, &order, &callers, &mut plans, |ns| match snapshots.get(ns) {
        Some(snap) => Some(std::borrow::Cow::Borrowed(snap)),
        None => eng
            .cached_snapshot(ns, labels.as_ref())
            .map(std::borrow::Cow::Owned),
    })
    .is_empty();
    if let Some(dir) = fixes_dir {
        write_fixes(dir, &plans).map_err(Failure::Usage)?;
    }
    match out.format {
        OutputFormat::Json => {
            let doc = json!({
                "namespaces": plans.iter().map(|(ns, p)| json!({"namespace": ns, "blocked": p.blocked(), "plan": p})).collect::<Vec<_>>(),
                "missingPermissions": missing,
            });
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        OutputFormat::Text => {
            for (ns, p) in &plans {
                print!("{}", plan_text(ns, p));
            }
        }
    }
    Ok(if blocked { exit::BLOCKED } else { exit::OK })
}

/// Writes each finding's fix YAML as `<namespace>-<code>-<object>.yaml`.
pub fn write_fixes(dir: &Path, plans: &[(String, NamespacePlan)]) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for (ns, p) in plans {
        for f in &p.findings {
            if let Some(y) = &f.fix_yaml {
                let path = dir.join(format!("{ns}-{}-{}.yaml", f.code, f.object.name));
                std::fs::write(&path, y).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                written.push(path);
            }
        }
    }
    Ok(written)
}

async fn cmd_run(
    cli: &Cli,
    s: &Settings,
    cluster: &Cluster,
    out: &Out,
    run_id: &str,
    stop: watch::Receiver<bool>,
) -> CmdResult {
    // Where the time before the first start goes (logged): the fleet's caches, the journals, the preflight.
    let t0 = tokio::time::Instant::now();
    let namespaces = resolve_fleet(cluster, s).await?;
    // The fleet is read once: one list+watch per kind feeds the preflight, every namespace's snapshot and
    // backup, for the whole run. The caches only read, so their first lists start now and overlap the
    // permission proof; a run refused below drops them, and with them their watches.
    let cache = crate::cluster::FleetCache::start(cluster);
    let mut report = RunReport::new(run_id, "run", &cluster_url(cluster), &s.digest(), cli.dry_run);
    let mut eng = engine(cluster, s, out, run_id, stop.clone());
    // While the permissions are proven and the caches sync, the journals and the cluster-wide facts every
    // assessment needs are read too: all of them only read, and none needs another's answer (a failure of
    // the cluster-wide reads is reported by the first assessment, as before). A refused proof ends the
    // run at once, dropping the reads still in flight.
    let reads = async {
        tokio::join!(
            caches_synced(s, &cache),
            Journal::load_all(cluster, &s.state_namespace),
            eng.cluster_info(),
        )
    };
    let proof = prove_permissions(cluster, s, permissions::Command::Run, "run", &namespaces);
    let proven = futures::future::try_join(proof, async { Ok(reads.await) }).await;
    let (synced, journals, _) = match proven {
        Ok(((), reads)) => reads,
        Err(f) => {
            for ns in &namespaces {
                let mut r = NamespaceReport::new(ns, s.fleet.canary.contains(ns), 0);
                r.outcome = NamespaceOutcome::NotStarted;
                r.reason = Some(
                    "the fleet did not start: the runner lacks RBAC permissions (see the error output)"
                        .into(),
                );
                report.namespaces.push(r);
            }
            report.finish();
            report.exit_code = f.code();
            finish_report(s, out, &report);
            return Err(f);
        }
    };
    synced?;
    // The first lists' pages (every kind at once, as bodies and as decoded objects) are freed by now.
    crate::memory::release_free_pages();
    eng.cache = Some(cache);
    tracing::info!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        namespaces = namespaces.len(),
        "fleet selected, permissions proven, watch caches synced, journals read"
    );
    let journals = journals
        .map_err(|e| Failure::HumanNeeded(format!("reading the journals in {}: {e}", s.state_namespace)))?;

    // Preflight, read-only: a blocked namespace is never written to; with `fleet.on_blocked = "stop"` (or a
    // blocked canary) nothing starts. Streamed where that is safe (`preflight`): a namespace starts as soon
    // as its own assessment proves it is not blocked, while the rest of the fleet is still assessed.
    let fresh: BTreeSet<String> = namespaces
        .iter()
        .filter(|ns| {
            matches!(
                journals.get(*ns).map(|r| r.phase),
                None | Some(Phase::Pending | Phase::Preflight | Phase::RolledBack)
            )
        })
        .cloned()
        .collect();
    let streamed = match preflight::may_stream(s) {
        true => stream_preflight(&eng, s, run_id, &namespaces, &fresh).await,
        false => None,
    };
    let (namespaces, after, verdicts) = match streamed {
        Some(mut rx) => {
            let _ = rx.wait_for(preflight::Verdicts::settled_enough).await;
            let v = rx.borrow().clone();
            tracing::info!(
                elapsed_ms = t0.elapsed().as_millis() as u64,
                "streamed fleet preflight: a namespace may start"
            );
            if !v.of.values().any(|x| matches!(x, preflight::Verdict::Go)) {
                if let Some(failure) = v.failed {
                    return Err(Failure::HumanNeeded(failure));
                }
                // Every namespace is blocked: nothing to run, so no lease is taken and nothing is written.
                report.namespaces = namespaces
                    .iter()
                    .filter_map(|n| match v.of.get(n) {
                        Some(preflight::Verdict::Blocked(r)) => Some((**r).clone()),
                        _ => None,
                    })
                    .collect();
                report.finish();
                finish_report(s, out, &report);
                return Ok(report.exit_code);
            }
            (namespaces, BTreeMap::new(), Some(rx))
        }
        None => match full_preflight(s, &eng, out, run_id, namespaces, &fresh, &mut report).await? {
            Preflighted::Run(namespaces, after) => (namespaces, after, None),
            Preflighted::Done(code) => return Ok(code),
        },
    };

    // The fleet lease (exit 5, nothing written, when another run holds it).
    let guard = Arc::new(take_lease(cluster, s).await?);
    eng.hold(guard.clone());
    let preflight = verdicts.clone();
    let mut report = run_fleet(s, &eng, &namespaces, &after, report, stop, verdicts).await;
    let code = report.exit_code;
    // A namespace could not be assessed: the ones that had not started did not, and a human looks.
    let failed = preflight.and_then(|v| v.borrow().failed.clone());
    if failed.is_some() {
        report.exit_code = exit::HUMAN_NEEDED;
    }
    finish_report(s, out, &report);
    drop(eng);
    if let Ok(g) = Arc::try_unwrap(guard) {
        let _ = g.release().await;
    }
    match failed {
        Some(failure) => Err(Failure::HumanNeeded(failure)),
        None => Ok(code),
    }
}

/// What the full fleet preflight leaves to do.
enum Preflighted {
    /// Run these namespaces, in order, each after the callers listed for it.
    Run(Vec<String>, BTreeMap<String, Vec<String>>),
    /// Nothing runs; the report is written and the run ends with this code.
    Done(i32),
}

/// The full fleet preflight: every namespace assessed before the first one starts (`fleet.on_blocked =
/// "stop"`, `fleet.order = "callers-first"`, or a canary that does not pass at once: see `preflight`).
/// Returns the namespaces to run, in order, and each one's callers it waits for, or the exit code when
/// nothing runs (the report is then written); an assessment that fails is a failure, before any write.
async fn full_preflight(
    s: &Settings,
    eng: &Engine,
    out: &Out,
    run_id: &str,
    namespaces: Vec<String>,
    fresh: &BTreeSet<String>,
    report: &mut RunReport,
) -> Result<Preflighted, Failure> {
    // Only the plans are kept: a snapshot is read again from the caches when the fleet decisions need it,
    // so the preflight of a large fleet does not hold a copy of every namespace's objects.
    let mut assessed: Vec<(String, NamespacePlan)> = Vec::new();
    let mut callers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut too_large: BTreeMap<String, String> = BTreeMap::new();
    let labels = preflight_labels(eng);
    for ns in namespaces.iter().filter(|n| fresh.contains(*n)) {
        match preflight::assess(eng, s, run_id, labels.as_ref(), ns).await {
            Ok(a) => {
                callers.insert(ns.clone(), a.plan.callers.clone());
                if let Some(e) = a.too_large {
                    too_large.insert(ns.clone(), e);
                }
                assessed.push((a.ns, a.plan));
            }
            Err(e) => return Err(Failure::HumanNeeded(format!("assessing namespace {ns}: {e}"))),
        }
    }
    let namespaces = if s.fleet.order == settings::FleetOrder::CallersFirst {
        let ordered = fleet::callers_first(&namespaces, &callers);
        (eng.progress)(&format!("fleet order (callers first): {}", ordered.join(", ")));
        ordered
    } else {
        namespaces
    };
    let mut blocked = fleet_enforcement(s, &namespaces, &callers, &mut assessed, |ns| {
        eng.cached_snapshot(ns, labels.as_ref())
            .map(std::borrow::Cow::Owned)
    });
    blocked.extend(too_large.keys().cloned());
    let mut blocked_reports = Vec::new();
    for (ns, plan) in assessed.iter().filter(|(ns, _)| blocked.contains(ns)) {
        (eng.progress)(&format!("{ns}: preflight BLOCKED"));
        blocked_reports.push(preflight::blocked_report(s, ns, plan, too_large.get(ns)));
    }
    let canary_blocked = blocked.iter().any(|n| s.fleet.canary.contains(n));
    if !blocked.is_empty() && (s.fleet.on_blocked == settings::OnBlocked::Stop || canary_blocked) {
        let why = if canary_blocked {
            "the fleet did not start: preflight blocked a canary namespace"
        } else {
            "the fleet did not start: preflight blocked another namespace (fleet.on_blocked = \"stop\")"
        };
        for ns in &namespaces {
            if !blocked.contains(ns) {
                let mut r = NamespaceReport::new(ns, s.fleet.canary.contains(ns), 0);
                r.outcome = NamespaceOutcome::NotStarted;
                r.reason = Some(why.into());
                blocked_reports.push(r);
            }
        }
        report.namespaces = blocked_reports;
        report.finish();
        report.exit_code = exit::BLOCKED;
        finish_report(s, out, report);
        return Ok(Preflighted::Done(exit::BLOCKED));
    }
    if !blocked.is_empty() {
        (eng.progress)(&format!(
            "skipping blocked namespace(s) {} (fleet.on_blocked = \"skip\"); the others migrate",
            blocked.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    let namespaces: Vec<String> = namespaces.into_iter().filter(|n| !blocked.contains(n)).collect();
    drop(assessed);
    report.namespaces = blocked_reports;
    if namespaces.is_empty() && !report.namespaces.is_empty() {
        // Every namespace is blocked: nothing to run, so no lease is taken and nothing is written.
        report.finish();
        finish_report(s, out, report);
        return Ok(Preflighted::Done(report.exit_code));
    }
    // callers-first: a namespace also waits for its in-fleet callers to finish (see run_fleet).
    let after = if s.fleet.order == settings::FleetOrder::CallersFirst {
        callers
    } else {
        BTreeMap::new()
    };
    Ok(Preflighted::Run(namespaces, after))
}

/// Starts the streamed preflight (`preflight`): the canaries are assessed first, before anything starts;
/// when each of them passes whatever the rest of the fleet turns out to be, the rest is assessed in the
/// background and the receiver hands each namespace its verdict. `None`: the full preflight must run
/// (a canary did not pass at once, or could not be assessed; the full preflight reports why).
async fn stream_preflight(
    eng: &Engine,
    s: &Settings,
    run_id: &str,
    namespaces: &[String],
    fresh: &BTreeSet<String>,
) -> Option<watch::Receiver<preflight::Verdicts>> {
    let mut verdicts = preflight::Verdicts::default();
    // Nothing is written before every canary has its verdict: the labels read now are the fleet's before.
    let labels = preflight_labels(eng);
    for ns in namespaces.iter().filter(|n| s.fleet.canary.contains(*n)) {
        if fresh.contains(ns) {
            let a = preflight::assess(eng, s, run_id, labels.as_ref(), ns)
                .await
                .ok()?;
            if !preflight::passes_whatever_others_do(s, namespaces, &a) {
                return None;
            }
        }
        verdicts.of.insert(ns.clone(), preflight::Verdict::Go);
    }
    let (tx, rx) = watch::channel(verdicts);
    tokio::spawn(preflight::stream(
        eng.clone(),
        Arc::new(s.clone()),
        run_id.to_string(),
        namespaces.to_vec(),
        fresh.clone(),
        labels,
        tx,
    ));
    Some(rx)
}

/// Waits for the fleet caches' first lists, for as long as three API requests may take (every kind is
/// listed at once, in pages); caches that cannot sync (refused, timed out) stop the command.
async fn caches_synced(s: &Settings, cache: &crate::cluster::FleetCache) -> Result<(), Failure> {
    cache
        .ready(tokio::time::Instant::now() + s.timeouts.api_request * 3)
        .await
        .map_err(|e| Failure::HumanNeeded(format!("reading the fleet: {e}")))
}

/// The namespaces' labels now, from the fleet's caches (`run` always starts them; without them each
/// assessment reads the labels from the API itself).
fn preflight_labels(eng: &Engine) -> Option<preflight::Labels> {
    eng.cache.as_ref().map(|c| c.namespace_labels())
}

/// Where every other fleet namespace stands relative to `ns` in the run order: with one namespace at a time
/// (and for canaries, which run alone) earlier ones finish before and later ones start after; with more,
/// only callers that callers-first makes `ns` wait for are certainly done, the others may overlap.
pub fn fleet_position(
    s: &Settings,
    order: &[String],
    callers: &BTreeMap<String, Vec<String>>,
    ns: &str,
) -> FleetPosition {
    let queue = fleet::queue(order, &s.fleet.canary);
    let mut pos = FleetPosition::default();
    let Some(me) = queue.iter().position(|n| *n == ns) else {
        return pos;
    };
    let canary = |n: &String| s.fleet.canary.contains(n);
    let serial = s.fleet.concurrency <= 1 || canary(queue[me]);
    let waits_for = |n: &String| {
        s.fleet.order == settings::FleetOrder::CallersFirst && callers.get(ns).is_some_and(|c| c.contains(n))
    };
    let (mut before, mut after, mut concurrent) = (Vec::new(), Vec::new(), Vec::new());
    for (j, other) in queue.into_iter().enumerate() {
        if j == me {
            continue;
        }
        let set = if j < me && (serial || canary(other) || waits_for(other)) {
            &mut before
        } else if j > me && (serial || canary(other)) {
            &mut after
        } else {
            &mut concurrent
        };
        set.push(other);
    }
    let owned = |v: Vec<&String>| v.into_iter().cloned().collect();
    pos.before = owned(before);
    pos.after = owned(after);
    pos.concurrent = owned(concurrent);
    pos
}

/// Re-evaluates each plan's enforcement with its fleet position; a blocked namespace is not migrated, so
/// the others are checked again without it (it stays as it is) until nothing changes. Returns the blocked
/// namespaces. `snapshot(ns)` gives the namespace's objects (held by the caller, or read again from the
/// watch caches so that a large fleet's preflight does not hold them all); a namespace without one keeps
/// its plan's enforcement as assessed.
pub fn fleet_enforcement<'a>(
    s: &Settings,
    order: &[String],
    callers: &BTreeMap<String, Vec<String>>,
    assessed: &mut [(String, NamespacePlan)],
    mut snapshot: impl FnMut(&str) -> Option<std::borrow::Cow<'a, Snapshot>>,
) -> BTreeSet<String> {
    let mut blocked: BTreeSet<String> = BTreeSet::new();
    for _ in 0..=assessed.len() {
        let running: Vec<String> = order.iter().filter(|n| !blocked.contains(*n)).cloned().collect();
        let mut now = BTreeSet::new();
        for (ns, plan) in assessed.iter_mut() {
            if blocked.contains(ns) {
                now.insert(ns.clone());
                continue;
            }
            if let Some(snap) = snapshot(ns) {
                check_enforcement(&snap, plan, &fleet_position(s, &running, callers, ns));
            }
            if plan.blocked() {
                now.insert(ns.clone());
            }
        }
        if now == blocked {
            break;
        }
        blocked = now;
    }
    blocked
}

fn blocker_reason(plan: &NamespacePlan) -> String {
    plan.findings
        .iter()
        .filter(|f| f.severity == Severity::Blocker)
        .map(|f| format!("{}: {}", f.object, f.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs the fleet with the engine and fills the report; returns the exit code.
/// `after[ns]` lists namespaces (its callers) that must finish before `ns` starts; only those starting
/// before `ns` count (no wait on a later one, so no deadlock): with concurrency > 1 the order alone would
/// let a caller and its callee migrate at the same time, and the callee's waypoint be bypassed.
pub async fn run_fleet(
    s: &Settings,
    eng: &Engine,
    namespaces: &[String],
    after: &BTreeMap<String, Vec<String>>,
    report: RunReport,
    stop: watch::Receiver<bool>,
    verdicts: Option<watch::Receiver<preflight::Verdicts>>,
) -> RunReport<Vec<Section>> {
    let fopts = FleetOptions {
        canaries: s.fleet.canary.clone(),
        concurrency: s.fleet.concurrency.max(1) as usize,
        max_failed_namespaces: s.fleet.max_failed_namespaces as usize,
    };
    let waves = fleet::waves(namespaces, &fopts);
    let wave_of: BTreeMap<String, u32> = waves
        .iter()
        .enumerate()
        .flat_map(|(i, w)| w.iter().map(move |n| (n.clone(), i as u32)))
        .collect();
    let queue: Vec<String> = waves.iter().flatten().cloned().collect();
    let deps: Arc<BTreeMap<String, Vec<String>>> = Arc::new(
        queue
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let earlier = &queue[..i];
                let d = after.get(ns).into_iter().flatten();
                (ns.clone(), d.filter(|c| earlier.contains(c)).cloned().collect())
            })
            .collect(),
    );
    let (done_tx, done_rx) = watch::channel(std::collections::BTreeSet::<String>::new());
    let done_tx = Arc::new(done_tx);
    // A finished namespace is kept as its packed report only (its run holds its whole plan), in a spool file
    // in the report directory (where backups are written too) rather than in memory.
    let runs: Arc<Mutex<BTreeMap<String, report::PackedReport>>> = Arc::default();
    let spool = report::spool::Spool::in_dir(&s.reports.dir);
    // A finished namespace's task frees its memory at once; every `concurrency` finished namespaces (one
    // slot-full) the heap's free pages go back to the kernel instead of staying resident until reused.
    let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let trim_every = fopts.concurrency;
    // What the streamed preflight decided for the namespaces that did not run (blocked, not started).
    let decided: Arc<Mutex<BTreeMap<String, preflight::Verdict>>> = Arc::default();
    let settings = Arc::new(s.clone());
    let eng2 = eng.clone();
    let runs2 = runs.clone();
    let decided2 = decided.clone();
    let job_stop = stop.clone();
    let wave_of = Arc::new(wave_of);
    let wave_of2 = wave_of.clone();
    let result = fleet::run(namespaces, &fopts, stop, move |ns, _canary| {
        let eng = eng2.clone();
        let runs = runs2.clone();
        let decided = decided2.clone();
        let spool = spool.clone();
        let finished = finished.clone();
        let wave = wave_of2.get(&ns).copied().unwrap_or(0);
        let canary = settings.fleet.canary.contains(&ns);
        let opts = namespace_options(&settings.for_namespace(&ns));
        let wait_for = deps.get(&ns).cloned().unwrap_or_default();
        let (mut done, done_tx, mut stop) = (done_rx.clone(), done_tx.clone(), job_stop.clone());
        let mut verdicts = verdicts.clone();
        async move {
            let _finished = fleet::DoneGuard::new(&ns, done_tx);
            // A streamed preflight: the namespace starts once its own verdict is known.
            if let Some(rx) = verdicts.as_mut() {
                let verdict = preflight::verdict_for(rx, &ns, &mut stop).await;
                let outcome = match &verdict {
                    preflight::Verdict::Go => None,
                    preflight::Verdict::Blocked(_) => Some(NsOutcome::Blocked),
                    preflight::Verdict::NotStarted(_) => Some(NsOutcome::NotStarted),
                };
                if let Some(outcome) = outcome {
                    decided
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(ns.clone(), verdict);
                    return outcome;
                }
            }
            if !wait_for.is_empty() {
                (eng.progress)(&format!(
                    "{ns}: waiting for its callers {} to finish (callers first)",
                    wait_for.join(", ")
                ));
                if !fleet::wait_for_callers(&mut done, &wait_for, &mut stop).await {
                    (eng.progress)(&format!("{ns}: not started: the run was asked to stop"));
                    return NsOutcome::NotStarted;
                }
            }
            let r = eng.run_namespace(&ns, &opts).await;
            let outcome = r.outcome;
            let report = spool.pack(&namespace_report(&r, canary, wave));
            runs.lock().unwrap_or_else(|e| e.into_inner()).insert(ns, report);
            drop(r);
            if finished.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % trim_every == trim_every - 1 {
                crate::memory::release_free_pages();
            }
            outcome
        }
    })
    .await;
    if let Some(why) = &result.stopped {
        (eng.progress)(&format!("fleet stopped: {why}"));
    }
    // Every namespace is done, so nothing reads the watch caches any more: their objects are freed before
    // the reports are rendered.
    if let Some(cache) = &eng.cache {
        cache.release();
    }
    // The renderers' large buffers (the Markdown's parts, the JUnit document's suites) are mapped of their
    // own (`src/main.rs`, mmap threshold) and cannot reuse the caches' freed heap: give its pages back first.
    crate::memory::release_free_pages();
    let mut runs = std::mem::take(&mut *runs.lock().unwrap_or_else(|e| e.into_inner()));
    let mut decided = std::mem::take(&mut *decided.lock().unwrap_or_else(|e| e.into_inner()));
    // The finished namespaces' reports stay packed: the renderers unpack them one at a time.
    let (head, earlier) = {
        let mut report = report;
        let earlier = std::mem::take(&mut report.namespaces);
        (report, earlier)
    };
    let mut sections: Vec<Section> = earlier.into_iter().map(|r| Section::Open(Box::new(r))).collect();
    for (ns, outcome) in &result.outcomes {
        let canary = s.fleet.canary.contains(ns);
        let wave = wave_of.get(ns).copied().unwrap_or(0);
        let r = match (runs.remove(ns), decided.remove(ns)) {
            (Some(r), _) => Section::Packed(r),
            (None, Some(preflight::Verdict::Blocked(r))) => Section::Open(r),
            (None, other) => {
                let mut r = NamespaceReport::new(ns, canary, wave);
                r.outcome = map_outcome(*outcome);
                r.reason = match other {
                    Some(preflight::Verdict::NotStarted(why)) => Some(why),
                    _ => result.stopped.clone(),
                };
                Section::Open(Box::new(r))
            }
        };
        sections.push(r);
    }
    let mut report = head.with_namespaces(sections);
    report.finish();
    report
}

fn map_outcome(o: NsOutcome) -> NamespaceOutcome {
    match o {
        NsOutcome::Migrated => NamespaceOutcome::Migrated,
        NsOutcome::AlreadyMigrated => NamespaceOutcome::Skipped,
        NsOutcome::RolledBack => NamespaceOutcome::RolledBack,
        NsOutcome::Held => NamespaceOutcome::Held,
        NsOutcome::RollbackFailed | NsOutcome::Aborted => NamespaceOutcome::RollbackFailed,
        NsOutcome::Blocked => NamespaceOutcome::Blocked,
        NsOutcome::NotStarted => NamespaceOutcome::NotStarted,
    }
}

/// A namespace's report section from its run.
pub fn namespace_report(run: &NamespaceRun, canary: bool, wave: u32) -> NamespaceReport {
    let mut r = NamespaceReport::new(&run.namespace, canary, wave);
    r.outcome = map_outcome(run.outcome);
    r.phase = run.phase;
    r.started = Some(run.started);
    r.ended = run.ended;
    r.reason = run.reason.clone();
    r.backup = run.backup_file.as_ref().map(|p| p.display().to_string());
    r.findings = run.findings.clone();
    r.behaviour_changes = run
        .plan
        .as_ref()
        .map(|p| p.behaviour_changes.clone())
        .unwrap_or_default();
    r.enforcement = run.plan.as_ref().map(|p| p.enforcement.clone());
    r.steps = run
        .steps
        .iter()
        .map(|st| StepReport {
            step: st.step,
            started: st.started,
            ended: st.ended,
            outcome: StepOutcome::from_gates(&st.gates),
            gates: st.gates.clone(),
            changes: st.changes.clone(),
        })
        .collect();
    r.rollback = run.rollback.as_ref().map(|rb| RollbackReport {
        from: rb.from,
        undone: (1..=rb.from.number())
            .rev()
            .filter_map(crate::steps::Step::from_number)
            .collect(),
        started: rb.started,
        ended: rb.ended,
        outcome: if rb.ok {
            RollbackOutcome::Verified
        } else {
            RollbackOutcome::Failed
        },
        gates: rb.gates.clone(),
        message: Some(match &rb.error {
            Some(e) => e.clone(),
            None => rb.actions.join("; "),
        }),
    });
    if run.outcome == NsOutcome::Migrated {
        let with_waypoint = run.plan.as_ref().is_some_and(|p| !p.waypoint_labels.is_empty());
        r.observability = Some(report::ObservabilityReport::from_findings(
            &run.findings,
            with_waypoint,
        ));
    }
    r
}

fn cluster_url(cluster: &Cluster) -> String {
    cluster.server_url().to_string()
}

/// Writes the report files, and the CI step summary when `step_summary` and `GITHUB_STEP_SUMMARY` is set.
pub fn write_reports<N: Sections + Serialize>(s: &Settings, report: &RunReport<N>, step_summary: bool) {
    let step_summary = std::env::var_os("GITHUB_STEP_SUMMARY")
        .filter(|_| step_summary)
        .map(PathBuf::from);
    let wopts = report::WriteOptions::from_settings(&s.reports, step_summary);
    match report::write_all(report, &wopts) {
        Ok(paths) => {
            for p in paths {
                tracing::info!(path = %p.display(), "report written");
            }
        }
        Err(e) => eprintln!("warning: {e}"),
    }
}

/// Writes the report files and prints the summary (text) or the report (JSON) on stdout; an embedded run
/// writes its files only (the outer command completes them and prints its own result).
pub fn finish_report<N: Sections + Serialize>(s: &Settings, out: &Out, report: &RunReport<N>) {
    write_reports(s, report, !out.embedded);
    if out.embedded {
        return;
    }
    match out.format {
        OutputFormat::Json => {
            // Streamed to stdout (a fleet's report is tens of megabytes), then the blank line `println!`
            // of the rendered text gave.
            let mut stdout = std::io::stdout().lock();
            let _ = report::json::to_writer(report, &mut stdout).and_then(|_| {
                use std::io::Write;
                stdout.write_all(b"\n")
            });
        }
        OutputFormat::Text => {
            println!();
            println!("{:<24} {:<16} why", "NAMESPACE", "OUTCOME");
            // One pass over the sections (a fleet's are read back from the spool): the table now, the
            // behaviour changes gathered for after it.
            let mut behaviour = String::new();
            for n in report.namespaces.each() {
                println!(
                    "{:<24} {:<16} {}",
                    n.name,
                    n.outcome.as_str(),
                    n.why().or_else(|| n.reason.clone()).unwrap_or_default()
                );
                behaviour.push_str(&report::behaviour::text(&n.name, &n.behaviour_changes));
            }
            print!("{behaviour}");
            println!("{}", report.summary.message);
            println!(
                "exit code {}: {}",
                report.exit_code,
                report::markdown::exit_code_meaning(report.exit_code)
            );
        }
    }
}

async fn cmd_status(s: &Settings, cluster: &Cluster, out: &Out) -> CmdResult {
    let records = Journal::list_all(cluster, &s.state_namespace)
        .await
        .map_err(|e| Failure::HumanNeeded(e.to_string()))?;
    let filter = &s.fleet.namespaces;
    let records: Vec<_> = records
        .into_iter()
        .filter(|r| filter.is_empty() || filter.contains(&r.namespace))
        .collect();
    match out.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&records).unwrap_or_default()),
        OutputFormat::Text => {
            println!("{:<24} {:<28} {:<10} outcome", "NAMESPACE", "PHASE", "RUN");
            for r in &records {
                println!(
                    "{:<24} {:<28} {:<10} {}",
                    r.namespace,
                    crate::journal::phase_label(&r.phase),
                    r.run_id,
                    r.outcome.clone().unwrap_or_default()
                );
            }
        }
    }
    Ok(exit::OK)
}

/// Takes the fleet Lease for an operator command, or says why not and returns its exit code (5 when
/// another run holds it; nothing was written either way).
async fn take_lease(cluster: &Cluster, s: &Settings) -> Result<lease::LeaseGuard, Failure> {
    lease::acquire(cluster, lease_config(s))
        .await
        .map_err(|e| match e {
            LeaseError::HeldBy { holder, .. } => Failure::Locked(format!(
                "another ambient-migrate run ({holder}) holds the lease {}/ambient-migrate; nothing was changed. Wait for it to finish, or delete the Lease if that run is dead and the lease has not expired",
                s.state_namespace
            )),
            e => Failure::HumanNeeded(format!("cannot take the fleet lease: {e}")),
        })
}

/// What an operator's `rollback` asks for.
struct RollbackRequest {
    /// Undo only the steps after this one.
    to_step: Option<u8>,
    /// Overwrite changes made after the migration instead of reporting them as conflicts.
    force: bool,
}

async fn cmd_rollback(
    cli: &Cli,
    s: &Settings,
    cluster: &Cluster,
    out: &Out,
    run_id: &str,
    req: RollbackRequest,
    stop: watch::Receiver<bool>,
) -> CmdResult {
    let RollbackRequest { to_step, force } = req;
    let ns = cli.namespaces[0].clone();
    let targets = [ns.clone()];
    prove_permissions(cluster, s, permissions::Command::Rollback, "rollback", &targets).await?;
    let guard = Arc::new(take_lease(cluster, s).await?);
    let mut eng = engine(cluster, s, out, run_id, stop);
    eng.hold(guard.clone());
    let opts = NamespaceOptions {
        force_rollback: force,
        ..namespace_options(&s.for_namespace(&ns))
    };
    let run = eng
        .rollback_namespace(&ns, &opts, to_step.filter(|k| *k > 0))
        .await;
    let mut report = RunReport::new(
        run_id,
        "rollback",
        &cluster_url(cluster),
        &s.digest(),
        cli.dry_run,
    );
    report.namespaces.push(namespace_report(&run, false, 0));
    report.finish();
    finish_report(s, out, &report);
    drop(eng);
    if let Ok(g) = Arc::try_unwrap(guard) {
        let _ = g.release().await;
    }
    Ok(match run.outcome {
        NsOutcome::RolledBack => exit::OK,
        _ => exit::HUMAN_NEEDED,
    })
}

async fn cmd_backup(cli: &Cli, s: &Settings, cluster: &Cluster, file: &Path, run_id: &str) -> CmdResult {
    let ns = &cli.namespaces[0];
    let targets = [ns.clone()];
    prove_permissions(cluster, s, permissions::Command::Backup, "backup", &targets).await?;
    // Mid-migration, the backup that matters is the one the migration started from (the truth a rollback
    // restores); otherwise the namespace as it is now. Nothing is written to the cluster either way: a
    // stored copy would be taken for the truth by a later run.
    let recorded = crate::journal::Journal::load(cluster, &s.state_namespace, ns)
        .await
        .map_err(|e| Failure::HumanNeeded(e.to_string()))?
        .filter(|r| !r.phase.nothing_to_undo())
        .and_then(|r| r.backup)
        .and_then(|b| b.identity());
    let b = match &recorded {
        Some(id) => backup::load_recorded(cluster, &s.state_namespace, ns, id).await,
        None => Backup::read_live(cluster, ns, Some(run_id)).await,
    }
    .map_err(|e| Failure::HumanNeeded(e.to_string()))?;
    if recorded.is_some() {
        eprintln!(
            "{ns} is being migrated: writing the backup it was migrated from (taken {})",
            b.taken_at
        );
    }
    let res = if file.as_os_str() == "-" {
        b.to_yaml().map(|y| print!("{y}"))
    } else {
        b.write_file(file).map(|_| {
            println!(
                "backup of {ns} written to {} ({} objects)",
                file.display(),
                b.objects.len()
            )
        })
    };
    res.map(|()| exit::OK).map_err(|e| Failure::Usage(e.to_string()))
}

async fn cmd_restore(cli: &Cli, s: &Settings, cluster: &Cluster, out: &Out, file: &Path) -> CmdResult {
    // Every document is validated before the first write (Backup::from_yaml).
    let b: Backup = Backup::load_file(file).map_err(|e| Failure::Usage(e.to_string()))?;
    if let Some(ns) = cli.namespaces.first()
        && (cli.namespaces.len() > 1 || *ns != b.namespace)
    {
        return Err(Failure::Usage(format!(
            "{} is a backup of namespace {}, not of {}; pass -n {} (or no -n) to restore it",
            file.display(),
            b.namespace,
            cli.namespaces.join(","),
            b.namespace
        )));
    }
    let targets = [b.namespace.clone()];
    prove_permissions(cluster, s, permissions::Command::Restore, "restore", &targets).await?;
    // Like every command that writes: one run at a time on the fleet.
    let guard = take_lease(cluster, s).await?;
    let fenced = cluster.fenced(guard.fence());
    // Extra objects are deleted only when the namespace's journal records the migration created them.
    let created = match crate::journal::Journal::load(&fenced, &s.state_namespace, &b.namespace).await {
        Ok(j) => j.map(|r| backup::created_objects(&r.changes)).unwrap_or_default(),
        Err(e) => {
            let _ = guard.release().await;
            return Err(Failure::HumanNeeded(e.to_string()));
        }
    };
    let restored = backup::restore(&fenced, &b, &created).await;
    let _ = guard.release().await;
    let r = restored.map_err(|e| Failure::HumanNeeded(e.to_string()))?;
    match out.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default()),
        OutputFormat::Text => {
            println!(
                "restored {}: {} labels, {} created, {} replaced, {} deleted; {}",
                b.namespace,
                r.labels_changed.len(),
                r.created.len(),
                r.replaced.len(),
                r.deleted.len(),
                if r.equal {
                    "verified equal to the backup"
                } else {
                    "DIFFERENCES REMAIN"
                }
            );
            for d in &r.differences {
                println!("  differs: {d}");
            }
        }
    }
    Ok(if r.equal { exit::OK } else { exit::HUMAN_NEEDED })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::LoadOptions;

    fn load(overrides: &[(&str, &str)]) -> Result<Settings, String> {
        Settings::load(LoadOptions {
            config_file: None,
            env: Some(Default::default()),
            cli_overrides: overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
        .map_err(|e| e.to_string())
    }

    fn settings(overrides: &[(&str, &str)]) -> Settings {
        load(overrides).expect("settings")
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fleet_position_one_at_a_time_is_before_and_after() {
        let s = settings(&[("fleet.namespaces", "a,b,c"), ("fleet.concurrency", "1")]);
        let p = fleet_position(&s, &names(&["a", "b", "c"]), &BTreeMap::new(), "b");
        assert_eq!(p.before, ["a".to_string()].into());
        assert_eq!(p.after, ["c".to_string()].into());
        assert!(p.concurrent.is_empty());
    }

    #[test]
    fn fleet_position_in_parallel_only_waited_callers_are_before() {
        let s = settings(&[
            ("fleet.namespaces", "front,other,store,late"),
            ("fleet.concurrency", "2"),
            ("fleet.order", "callers-first"),
        ]);
        let callers = BTreeMap::from([("store".to_string(), names(&["front"]))]);
        let p = fleet_position(
            &s,
            &names(&["front", "other", "store", "late"]),
            &callers,
            "store",
        );
        assert_eq!(p.before, ["front".to_string()].into());
        assert!(p.after.is_empty());
        assert_eq!(p.concurrent, ["late".to_string(), "other".to_string()].into());
        // A canary runs alone: everything else comes after it.
        let s = settings(&[
            ("fleet.namespaces", "front,other,store"),
            ("fleet.concurrency", "2"),
            ("fleet.canary", "store"),
        ]);
        let p = fleet_position(
            &s,
            &names(&["front", "other", "store"]),
            &BTreeMap::new(),
            "store",
        );
        assert_eq!(p.after, ["front".to_string(), "other".to_string()].into());
        assert!(p.before.is_empty() && p.concurrent.is_empty());
    }

    #[test]
    fn accept_differences_and_on_blocked_load_and_validate() {
        let s = load(&[("fleet.namespaces", "a")]).unwrap();
        assert_eq!(s.fleet.on_blocked, crate::settings::OnBlocked::Skip);
        assert!(s.for_namespace("a").plan_options().accept_differences.is_empty());
        let s = load(&[
            ("fleet.namespaces", "a"),
            ("migration.policies.accept_differences", "gap,outage"),
            ("fleet.on_blocked", "stop"),
        ])
        .unwrap();
        assert_eq!(s.fleet.on_blocked, crate::settings::OnBlocked::Stop);
        assert_eq!(
            s.for_namespace("a").plan_options().accept_differences,
            vec![
                crate::assess::enforcement::DifferenceKind::Gap,
                crate::assess::enforcement::DifferenceKind::Outage
            ]
        );
        let e = load(&[
            ("fleet.namespaces", "a"),
            ("migration.policies.accept_differences", "leaks"),
        ])
        .unwrap_err();
        assert!(e.contains("accept_differences") && e.contains("leaks"), "{e}");
        let e = load(&[("fleet.namespaces", "a"), ("fleet.on_blocked", "maybe")]).unwrap_err();
        assert!(e.contains("on_blocked") && e.contains("maybe"), "{e}");
    }
}
