//! Shared parts of the fault, crash and split-brain acceptance programs (`examples/bench_faults.rs`) and
//! their CI sample (`tests/e2e_chaos.rs`). Built on [`crate::e2e`] (meshsim in-process, the real binary as a
//! child process).
//!
//! - [`run_cell`]: one cell of the fault matrix: a fault injected when the run enters step k (its state
//!   annotation on the Namespace or its journal says so), lifted when it leaves step k; then the end state
//!   is classified ([`End`]).
//! - [`Proc`]: a spawned run whose output is drained in the background, so it can be killed at any
//!   instant ([`Proc::kill`]) or awaited ([`Proc::output`]).
//! - [`classify`]: Migrated, RolledBack (config equal to the stored backup and to the state before), or
//!   RollbackFailed with its message; anything else is [`End::Elsewhere`].
//! - [`Forwarder`] and [`lease_violations`]: which runner sent each request (by client address) and
//!   whether a runner's write landed while the other held the Lease.

use std::collections::{BTreeMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshsim::{FaultKind, FaultSpec};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::e2e::*;

/// The journal name of migration step `n` (1..=6).
pub fn step_name(n: u8) -> &'static str {
    ambient_migrate::steps::Step::from_number(n)
        .unwrap_or_else(|| panic!("no step {n}: steps are 1-6"))
        .name()
}

/// The meshsim fault kinds of the matrix, by contract name.
pub const KINDS: [&str; 9] = [
    "api-error",
    "api-latency",
    "watch-drop",
    "waypoint-never-ready",
    "pods-crashloop-after-restart",
    "cni-pending",
    "ztunnel-down",
    "service-errors",
    "injector-down",
];

/// How a cell disturbs the run when it enters its step.
#[derive(Debug, Clone)]
pub enum Inject {
    /// A meshsim fault on namespace `shop`, lifted when the journal leaves the step.
    Fault(Box<FaultSpec>),
    /// Every API request answers 500 for 20 s (not lifted: it ends on its own).
    Brownout,
    /// Another identity overwrites the fleet Lease.
    LostLease,
}

impl Inject {
    /// The matrix column: a fault kind's contract name, `api-brownout` or `lost-lease`.
    pub fn for_column(column: &str) -> Inject {
        match column {
            "api-brownout" => return Inject::Brownout,
            "lost-lease" => return Inject::LostLease,
            _ => {}
        }
        let kind: FaultKind =
            serde_json::from_value(Value::String(column.into())).unwrap_or_else(|e| panic!("{column}: {e}"));
        let mut f = FaultSpec::new(kind, Some("shop"));
        match kind {
            // Every request on the namespace and its objects fails; the client's retries do not outlast it.
            FaultKind::ApiError => f.code = Some(500),
            FaultKind::ApiLatency => f.latency_ms = Some(400),
            FaultKind::WatchDrop => f.after_ms = Some(0),
            // ztunnel is per node, not per namespace.
            FaultKind::ZtunnelDown => f.namespace = None,
            FaultKind::ServiceErrors => f.service = Some("web".into()),
            _ => {}
        }
        Inject::Fault(Box::new(f))
    }
}

/// Where a namespace ended.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// Journal `migrated`, every workload pod sidecar-free, enrolled and Ready, labels as planned.
    Migrated,
    /// Journal `rolled-back`, labels and Istio objects equal to the stored backup and to the state before
    /// the run, every workload pod with a ready sidecar.
    RolledBack,
    /// Journal `rollback-failed`, with the message the run gave a person.
    RollbackFailed(String),
    /// Anything else (the acceptance allows none).
    Elsewhere(String),
}

impl End {
    /// Short name for tables.
    pub fn short(&self) -> String {
        match self {
            End::Migrated => "Migrated".into(),
            End::RolledBack => "RolledBack".into(),
            End::RollbackFailed(_) => "RollbackFailed".into(),
            End::Elsewhere(w) => format!("ELSEWHERE({})", w.lines().next().unwrap_or("")),
        }
    }

    /// One of the three accepted ends.
    pub fn accepted(&self) -> bool {
        !matches!(self, End::Elsewhere(_))
    }
}

/// The text of a panic raised by an e2e_common assertion.
fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "assertion failed".into())
}

/// Runs one of e2e_common's asserting checks, turning its panic into an error message.
fn check(f: impl FnOnce()) -> Result<(), String> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(panic_text)
}

/// Writes the in-cluster backup of `ns` (ConfigMap `backup-<ns>`) to a file, for [`backup_dump`].
pub fn stored_backup(env: &Env, ns: &str, tag: &str) -> Option<PathBuf> {
    let cm = env.store().get(
        meshsim::resources::core("configmaps"),
        STATE_NS,
        &format!("backup-{ns}"),
    )?;
    let p = env.dir.path().join(format!("stored-backup-{ns}-{tag}.yaml"));
    std::fs::write(&p, cm["data"]["backup.yaml"].as_str()?).ok()?;
    Some(p)
}

/// Where `ns` ended: `before` is its [`Env::config_dump`] before the run; `out` is the last run's output
/// (for a rollback failure's message).
pub fn classify(env: &Env, ns: &str, before: &Value, out: &Output, tag: &str) -> End {
    let phase = env.journal_phase(ns).unwrap_or_else(|| "no journal".into());
    match phase.as_str() {
        "migrated" => match check(|| env.assert_migrated_pods(ns)) {
            Ok(()) => End::Migrated,
            Err(e) => End::Elsewhere(format!("journal migrated but {e}")),
        },
        "rolled-back" => {
            let Some(backup) = stored_backup(env, ns, tag) else {
                return End::Elsewhere("rolled-back without a stored backup".into());
            };
            match check(|| env.assert_rolled_back(ns, before, &backup)) {
                Ok(()) => End::RolledBack,
                Err(e) => End::Elsewhere(format!("rolled-back but {e}")),
            }
        }
        p if p.starts_with("rollback-failed") => match failed_message(out, ns) {
            Some(m) => End::RollbackFailed(m),
            None => End::Elsewhere(format!("{p} without a message in the report")),
        },
        // The run could not record its end (the API failed it): what it reported decides, and a
        // rollback-failed report must say what to do.
        other => match failed_message(out, ns) {
            Some(m) => End::RollbackFailed(format!("{m} [journal: {other}]")),
            None => End::Elsewhere(format!("journal {other}")),
        },
    }
}

/// The message of a `rollback-failed` namespace in the run's report (rollback message, else reason).
fn failed_message(out: &Output, ns: &str) -> Option<String> {
    let t = std::fs::read_to_string(out.report_dir.join("ambient-migrate-report.json")).ok()?;
    let r: Value = serde_json::from_str(&t).ok()?;
    let n = r["namespaces"].as_array()?.iter().find(|n| n["name"] == ns)?;
    if n["outcome"] != "rollback-failed" {
        return None;
    }
    let m = n["rollback"]["message"].as_str().or(n["reason"].as_str())?;
    (!m.is_empty()).then(|| m.to_string())
}

/// A spawned run: stdout and stderr are drained in the background (a full pipe would stall it).
pub struct Proc {
    child: tokio::process::Child,
    out: tokio::task::JoinHandle<(String, String)>,
    report_dir: PathBuf,
    pub started: Instant,
}

impl Proc {
    /// Spawns the binary like [`Env::spawn`].
    pub fn spawn(env: &Env, config: &Path, tag: &str, args: &[&str]) -> Proc {
        let (mut child, report_dir) = env.spawn(config, tag, args);
        let mut so = child.stdout.take().expect("stdout piped");
        let mut se = child.stderr.take().expect("stderr piped");
        let out = tokio::spawn(async move {
            let (mut a, mut b) = (String::new(), String::new());
            let _ = tokio::join!(so.read_to_string(&mut a), se.read_to_string(&mut b));
            (a, b)
        });
        Proc {
            child,
            out,
            report_dir,
            started: Instant::now(),
        }
    }

    /// The exit code once it has exited.
    pub fn exited(&mut self) -> Option<i32> {
        self.child
            .try_wait()
            .ok()
            .flatten()
            .map(|s| s.code().unwrap_or(-1))
    }

    /// SIGKILL; true when it was still running.
    pub async fn kill(mut self) -> bool {
        let running = self.exited().is_none();
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        running
    }

    /// Waits (at most `limit`) and collects the output; a run still going after `limit` is killed.
    pub async fn output(mut self, limit: Duration) -> Output {
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(s) => s.ok().and_then(|s| s.code()).unwrap_or(-1),
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                -2
            }
        };
        let (stdout, stderr) = self.out.await.unwrap_or_default();
        Output {
            code: status,
            stdout,
            stderr,
            report_dir: self.report_dir,
        }
    }
}

/// Waits for the next store change, at most `max`.
pub async fn next_change(env: &Env, max: Duration) {
    let mut changes = env.store().changes();
    changes.borrow_and_update();
    let _ = tokio::time::timeout(max, changes.changed()).await;
}

/// Runs `args` until it stops answering exit 5 ("another run holds the lock": the killed or ousted run's
/// Lease has not expired yet), at most `limit` in all; returns the last output and how many runs it took.
pub async fn rerun(env: &Env, config: &Path, tag: &str, args: &[&str], limit: Duration) -> (Output, u32) {
    let until = Instant::now() + limit;
    let mut i = 0;
    loop {
        i += 1;
        let out = Proc::spawn(env, config, &format!("{tag}-{i}"), args)
            .output(Duration::from_secs(120))
            .await;
        if out.code != 5 || Instant::now() >= until {
            return (out, i);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Overwrites the fleet Lease as another holder would (a second runner that judged it expired, or an
/// operator): holder `intruder`, renewed now, for `secs` seconds.
pub fn steal_lease(env: &Env, secs: i64) -> bool {
    let leases = meshsim::resources::id("coordination.k8s.io", "leases");
    env.store()
        .update_with(
            leases,
            STATE_NS,
            "ambient-migrate",
            meshsim::store::Target::Main,
            &meshsim::store::WriteOpts::default(),
            |o| {
                let mut o = o.clone();
                let now = meshsim::store::now_micro();
                o["spec"]["holderIdentity"] = "intruder".into();
                o["spec"]["acquireTime"] = now.clone().into();
                o["spec"]["renewTime"] = now.into();
                o["spec"]["leaseDurationSeconds"] = secs.into();
                if let Some(m) = o["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                Ok(o)
            },
        )
        .is_ok()
}

/// What one matrix cell produced.
#[derive(Debug, Clone)]
pub struct Cell {
    pub step: String,
    pub column: String,
    /// The disturbance happened (the run entered the step).
    pub injected: bool,
    /// Exit code of the first run.
    pub first_exit: i32,
    /// Further runs it took to reach the end (a run that lost its Lease stops and is rerun, as the
    /// CronJob would).
    pub reruns: u32,
    pub end: End,
    /// Where the first run left it (before any rerun).
    pub first_end: End,
    /// Lost Lease: the first run's successful writes (Events and the Lease aside) that landed after the
    /// Lease was overwritten (the runner learns of it at its next renew, as client-go's leader election).
    pub writes_after_steal: Option<usize>,
    pub secs: f64,
    /// What the first run said about the namespace (its report's `reason`), or its last output line.
    pub note: String,
}

/// The first run's word on `ns`: the report's `reason`, else the last line of stderr or stdout.
pub fn run_note(out: &Output, ns: &str) -> String {
    let reason = std::fs::read_to_string(out.report_dir.join("ambient-migrate-report.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|r| {
            r["namespaces"].as_array()?.iter().find(|n| n["name"] == ns)?["reason"]
                .as_str()
                .map(str::to_string)
        });
    reason.unwrap_or_else(|| {
        let last = |t: &str| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .to_string()
        };
        let e = last(&out.stderr);
        if e.is_empty() { last(&out.stdout) } else { e }
    })
}

/// The config of a matrix cell: the seed namespace, its probes, e2e_common's short timeouts.
pub fn cell_config(env: &Env) -> PathBuf {
    let cfg = Cfg::new(&["shop"]).probes("shop", &seed_probes("shop", &env.proxy()));
    env.write_config("cell", &cfg.toml())
}

/// One cell: the seed namespace migrated with `inject` applied when the run enters `step`.
pub async fn run_cell(step: &str, column: &str) -> Cell {
    let t0 = Instant::now();
    let inject = Inject::for_column(column);
    let env = start(&[SEED], vec![]).await;
    env.wait_ready("shop").await;
    let before = env.config_dump("shop");
    let config = cell_config(&env);
    let in_step = format!("in-step:{step}");
    let mut fault_id: Option<String> = None;
    let mut injected = false;
    let mut entered = false;
    // A waypoint exists only from step 1 on, so a waypoint fault switched on before the run is the same
    // cell as one switched on when the run enters step 1, without the race: the run creates the
    // waypoint right after that journal write, and meshsim can make it ready (tens of ms at these
    // latencies) before an observer of the journal reacts.
    if step == "activate-waypoint"
        && let Inject::Fault(f) = &inject
        && f.kind == FaultKind::WaypointNeverReady
    {
        fault_id = Some(env.running.sim.faults.add((**f).clone()));
        injected = true;
    }
    let mut proc = Proc::spawn(&env, &config, "run", &["run"]);
    let mut stolen_at: Option<usize> = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while proc.exited().is_none() && Instant::now() < deadline {
        let at_step = env.run_phases("shop").contains(&in_step);
        if at_step {
            entered = true;
        }
        if !injected && at_step {
            injected = true;
            match &inject {
                Inject::Fault(f) => fault_id = Some(env.running.sim.faults.add((**f).clone())),
                Inject::Brownout => {
                    let mut f = FaultSpec::new(FaultKind::ApiError, None);
                    f.code = Some(500);
                    f.for_ms = Some(20_000);
                    env.running.sim.faults.add(f);
                }
                Inject::LostLease => {
                    stolen_at = Some(env.requests().len());
                    injected = steal_lease(&env, 3);
                }
            }
        } else if injected
            && entered
            && !at_step
            && let Some(id) = fault_id.take()
        {
            env.running.sim.faults.remove(&id);
        }
        next_change(&env, Duration::from_millis(20)).await;
    }
    let first = proc.output(Duration::from_secs(5)).await;
    if let Some(id) = fault_id.take() {
        env.running.sim.faults.remove(&id);
    }
    let note = run_note(&first, "shop");
    let writes_after_steal = stolen_at.map(|i| {
        let writes: Vec<String> = env.requests()[i..]
            .iter()
            .filter(|r| r.is_mutating() && r.code < 300 && r.resource != "leases" && r.resource != "events")
            .map(|r| format!("{} {} {} {:?}", r.time, r.verb, r.resource, r.name))
            .collect();
        if std::env::var_os("BENCH_SHOW_WRITES").is_some() {
            println!("writes after the steal:\n  {}", writes.join("\n  "));
        }
        writes.len()
    });
    let first_end = classify(&env, "shop", &before, &first, "first");
    let mut last = first;
    let first_exit = last.code;
    let mut reruns = 0;
    // A run that stopped with the namespace between steps (Lease lost, brownout) is resumed by the next
    // run, as the CronJob would; at most three times.
    // RollbackFailed counts as accepted only for a message; the namespace itself may still be resumable.
    while reruns < 3
        && !matches!(
            classify(&env, "shop", &before, &last, "probe"),
            End::Migrated | End::RolledBack
        )
    {
        let (out, n) = rerun(
            &env,
            &config,
            &format!("rerun{reruns}"),
            &["run"],
            Duration::from_secs(60),
        )
        .await;
        reruns += n;
        last = out;
    }
    let end = classify(&env, "shop", &before, &last, "end");
    Cell {
        step: step.into(),
        column: column.into(),
        injected,
        first_exit,
        reruns,
        end,
        first_end,
        writes_after_steal,
        secs: t0.elapsed().as_secs_f64(),
        note,
    }
}

/// A small seeded PRNG (xorshift64*), so a soak replays from its printed seed without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The crash soak's fleet: three copies of the seed namespace; `soak-c`'s `web` fails once the
/// namespace is ambient, so each run also rolls a namespace back.
pub const SOAK_NS: [&str; 3] = ["soak-a", "soak-b", "soak-c"];

/// Starts meshsim with the soak fleet and waits until it runs on sidecars.
pub async fn soak_env() -> Env {
    let docs: Vec<String> = SOAK_NS
        .iter()
        .map(|ns| seed_as(ns, "istio-injection: enabled"))
        .collect();
    let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
    let mut f = fault(
        FaultKind::ServiceErrors,
        "soak-c",
        Some("istio.io/dataplane-mode=ambient"),
    );
    f.service = Some("web".into());
    let env = start(&refs, vec![f]).await;
    for ns in SOAK_NS {
        env.wait_ready(ns).await;
    }
    env
}

/// The soak's config: the fleet with its probes (two at a time), a short Lease so a rerun after a kill
/// waits little.
pub fn soak_config(env: &Env) -> PathBuf {
    let mut cfg = Cfg::new(&SOAK_NS);
    for ns in SOAK_NS {
        cfg = cfg.probes(ns, &seed_probes(ns, &env.proxy()));
    }
    cfg.lease = "2s";
    cfg.step = "4s";
    env.write_config("soak", &cfg.toml())
}

/// One kill: `args` killed `after` its start (if still running), then rerun until it is not refused by
/// the killed run's Lease. Returns the journal phases at the kill (`None`: it had already ended) and the
/// converging run's output.
pub async fn kill_and_rerun(
    env: &Env,
    config: &Path,
    tag: &str,
    args: &[&str],
    after: Duration,
) -> (Option<BTreeMap<String, String>>, Output) {
    let mut p = Proc::spawn(env, config, &format!("{tag}-k"), args);
    let at = p.started + after;
    while Instant::now() < at && p.exited().is_none() {
        tokio::time::sleep(Duration::from_millis(5).min(at.saturating_duration_since(Instant::now()))).await;
    }
    let phases: BTreeMap<String, String> = SOAK_NS
        .iter()
        .map(|ns| {
            (
                ns.to_string(),
                env.journal_phase(ns).unwrap_or_else(|| "-".into()),
            )
        })
        .collect();
    let killed = p.kill().await;
    let (out, _) = rerun(env, config, &format!("{tag}-r"), args, Duration::from_secs(60)).await;
    (killed.then_some(phases), out)
}

/// A TCP forwarder in front of meshsim's API: every connection it opens to meshsim is recorded, so the
/// request log's `peer` tells which runner sent a request.
pub struct Forwarder {
    pub addr: std::net::SocketAddr,
    pub peers: Arc<Mutex<HashSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    pub async fn start(upstream: std::net::SocketAddr) -> Forwarder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let peers: Arc<Mutex<HashSet<String>>> = Arc::default();
        let seen = peers.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                if let Ok(local) = outbound.local_addr() {
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(local.to_string());
                }
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        Forwarder { addr, peers, task }
    }

    /// A kubeconfig like `env`'s pointing at this forwarder.
    pub fn kubeconfig(&self, env: &Env, name: &str) -> PathBuf {
        let text = std::fs::read_to_string(&env.kubeconfig).expect("kubeconfig");
        let p = env.dir.path().join(format!("kubeconfig-{name}"));
        std::fs::write(
            &p,
            text.replace(&env.running.url(), &format!("http://{}", self.addr)),
        )
        .expect("write");
        p
    }

    /// Did this request come through this forwarder?
    pub fn sent(&self, r: &meshsim::accounting::RequestRecord) -> bool {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&r.peer)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A successful write by one runner that landed while the other held the Lease.
#[derive(Debug, Clone)]
pub struct Violation {
    pub runner: usize,
    pub request: String,
}

/// Walks meshsim's request log in order: the holder is the runner whose last successful Lease write
/// (create, update, patch) landed last; every other successful write by the other runner is a violation.
/// `runners[i]` tells whether a request came from runner `i`. Also returns how many times the holder
/// changed hands.
pub fn lease_violations(
    log: &[meshsim::accounting::RequestRecord],
    runners: &[&dyn Fn(&meshsim::accounting::RequestRecord) -> bool],
) -> (Vec<Violation>, u32) {
    let mut holder: Option<usize> = None;
    let mut handovers = 0;
    let mut out = Vec::new();
    for r in log.iter().filter(|r| r.is_mutating() && r.code < 300) {
        let Some(who) = runners.iter().position(|f| f(r)) else {
            continue;
        };
        if r.resource == "leases" {
            if holder.is_some_and(|h| h != who) {
                handovers += 1;
            }
            holder = Some(who);
            continue;
        }
        // Before anyone holds it, a runner creates the state namespace the Lease lives in.
        let state_namespace = holder.is_none() && r.verb == "create" && r.resource == "namespaces";
        if holder != Some(who) && !state_namespace {
            out.push(Violation {
                runner: who,
                request: format!(
                    "{} {} {} {}/{} -> {}",
                    r.time,
                    r.verb,
                    r.resource,
                    r.namespace.as_deref().unwrap_or(""),
                    r.name.as_deref().unwrap_or(""),
                    r.code
                ),
            });
        }
    }
    (out, handovers)
}

/// One split-brain round: what each runner's runs exited with, the violations found in the request log,
/// how often the Lease changed hands between the runners, and where the namespace ended.
#[derive(Debug)]
pub struct SplitRound {
    pub exits: [Vec<i32>; 2],
    /// What runs that exited with neither 0, 1 nor 5 said (runner, exit, note).
    pub notes: Vec<(usize, i32, String)>,
    pub violations: Vec<Violation>,
    pub handovers: u32,
    pub end: End,
}

/// The API latency of a split-brain round.
#[derive(Debug, Clone, Copy)]
pub struct SplitOpts {
    /// Extra delay of a delayed Lease request.
    pub lease_delay_ms: u64,
    /// Fraction of Lease requests delayed.
    pub lease_delay_rate: f64,
    /// Extra delay of a delayed `patch` in the migrated namespace (0: none); longer than the request
    /// timeout, it lands after the client gave up and retried (as a slow apiserver commits late).
    pub slow_write_ms: u64,
    /// Fraction of those patches delayed.
    pub slow_write_rate: f64,
}

/// Two runners started together on the seed namespace under API latency (20 ms on every request, some
/// Lease requests delayed so a renew can miss its deadline and the other runner take over, optionally
/// slow writes). A runner refused by the Lease (exit 5) or stopped by losing it is started again while
/// the other has not finished, as two CronJobs would.
pub async fn split_brain_round(o: SplitOpts) -> SplitRound {
    let mut all = FaultSpec::new(FaultKind::ApiLatency, None);
    all.latency_ms = Some(20);
    let mut lease = FaultSpec::new(FaultKind::ApiLatency, None);
    lease.resource = Some("leases".into());
    lease.latency_ms = Some(o.lease_delay_ms);
    lease.rate = Some(o.lease_delay_rate);
    let mut faults = vec![all, lease];
    if o.slow_write_ms > 0 {
        let mut w = FaultSpec::new(FaultKind::ApiLatency, Some("shop"));
        w.verb = Some("patch".into());
        w.latency_ms = Some(o.slow_write_ms);
        w.rate = Some(o.slow_write_rate);
        faults.push(w);
    }
    let mut env = start(&[SEED], faults).await;
    env.wait_ready("shop").await;
    let before = env.config_dump("shop");
    let fw = [
        Forwarder::start(env.running.addr).await,
        Forwarder::start(env.running.addr).await,
    ];
    let kcs = [fw[0].kubeconfig(&env, "a"), fw[1].kubeconfig(&env, "b")];
    let config = cell_config(&env);
    env.running.sim.accounting.reset();
    let own = env.kubeconfig.clone();
    let mut spawned = 0;
    let mut spawn = |env: &mut Env, i: usize| {
        spawned += 1;
        env.kubeconfig = kcs[i].clone();
        let p = Proc::spawn(env, &config, &format!("runner{i}-{spawned}"), &["run"]);
        env.kubeconfig = own.clone();
        p
    };
    let mut procs = [Some(spawn(&mut env, 0)), Some(spawn(&mut env, 1))];
    let mut exits: [Vec<i32>; 2] = [Vec::new(), Vec::new()];
    let mut finished = [false, false];
    let mut notes = Vec::new();
    let mut last: Option<Output> = None;
    let deadline = Instant::now() + Duration::from_secs(150);
    while procs.iter().any(Option::is_some) && Instant::now() < deadline {
        for i in 0..2 {
            let Some(code) = procs[i].as_mut().and_then(Proc::exited) else {
                continue;
            };
            let out = procs[i]
                .take()
                .expect("running")
                .output(Duration::from_secs(5))
                .await;
            exits[i].push(code);
            if ![0, 1, 5].contains(&code) {
                notes.push((i, code, run_note(&out, "shop")));
            }
            let refused = code == 5 || out.stderr.contains("lost Lease") || out.stdout.contains("lost Lease");
            last = Some(out);
            if refused && !finished[1 - i] {
                tokio::time::sleep(Duration::from_millis(200)).await;
                procs[i] = Some(spawn(&mut env, i));
            } else {
                finished[i] = !refused;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for p in procs.into_iter().flatten() {
        p.kill().await;
    }
    let log = env.requests();
    let a = |r: &meshsim::accounting::RequestRecord| fw[0].sent(r);
    let b = |r: &meshsim::accounting::RequestRecord| fw[1].sent(r);
    let (violations, handovers) = lease_violations(&log, &[&a, &b]);
    let mut out = last.expect("a run finished");
    if !classify(&env, "shop", &before, &out, "split").accepted() {
        out = rerun(&env, &config, "split-final", &["run"], Duration::from_secs(60))
            .await
            .0;
    }
    let end = classify(&env, "shop", &before, &out, "split-end");
    SplitRound {
        exits,
        notes,
        violations,
        handovers,
        end,
    }
}

/// What a crash soak found.
#[derive(Debug, Default)]
pub struct Soak {
    /// SIGKILLs that hit a running process.
    pub kills: usize,
    /// Kills after which the rerun converged.
    pub converged: usize,
    /// Kills after which it did not (the soak stops at the first).
    pub failures: Vec<String>,
    /// Journal phase of the namespaces at each kill instant (`soak-a=in-step:restart`), counted.
    pub phases: BTreeMap<String, usize>,
    pub secs: f64,
}

/// Checks that every namespace in `names` converged (Migrated or RolledBack equal to `before`).
fn converged(
    env: &Env,
    names: &[&str],
    before: &BTreeMap<String, Value>,
    out: &Output,
    tag: &str,
) -> Result<(), String> {
    for ns in names {
        match classify(env, ns, &before[*ns], out, tag) {
            End::Migrated | End::RolledBack => {}
            other => return Err(format!("{ns}: {other:?}\n{out}")),
        }
    }
    Ok(())
}

fn dumps(env: &Env) -> BTreeMap<String, Value> {
    SOAK_NS
        .iter()
        .map(|ns| (ns.to_string(), env.config_dump(ns)))
        .collect()
}

/// The crash soak: cycles of a fleet `run` killed at a random instant and rerun, then an operator
/// `rollback -n` of each migrated namespace killed at a random instant and rerun, until `kills` kills hit
/// a running process. Instants are drawn from `seed` below the duration of an unkilled run (measured
/// first), so they fall on mutations, waits, rollbacks and journal writes alike.
pub async fn soak(seed: u64, kills: usize, verbose: bool) -> Soak {
    let t0 = Instant::now();
    let mut rng = Rng::new(seed);
    let mut s = Soak::default();
    let env = soak_env().await;
    let config = soak_config(&env);
    let start_state = dumps(&env);
    let t = Instant::now();
    let cal = Proc::spawn(&env, &config, "cal-run", &["run"])
        .output(Duration::from_secs(120))
        .await;
    let run_ms = t.elapsed().as_millis() as u64;
    if let Err(e) = converged(&env, &SOAK_NS, &start_state, &cal, "cal") {
        s.failures.push(format!("unkilled calibration run: {e}"));
        return s;
    }
    let mut rb_ms = 0;
    for ns in SOAK_NS
        .iter()
        .filter(|ns| env.journal_phase(ns).as_deref() == Some("migrated"))
    {
        let t = Instant::now();
        let out = Proc::spawn(&env, &config, &format!("cal-rb-{ns}"), &["rollback", "-n", ns])
            .output(Duration::from_secs(120))
            .await;
        rb_ms = rb_ms.max(t.elapsed().as_millis() as u64);
        if let Err(e) = converged(&env, &[ns], &start_state, &out, "cal-rb") {
            s.failures.push(format!("unkilled calibration rollback: {e}"));
            return s;
        }
    }
    if verbose {
        println!("calibration: whole run {run_ms} ms, operator rollback {rb_ms} ms");
    }
    let mut cycle = 0;
    while s.kills < kills && s.failures.is_empty() {
        cycle += 1;
        let before = dumps(&env);
        let mut jobs: Vec<(Vec<String>, u64)> = vec![(vec!["run".into()], run_ms)];
        let mut i = 0;
        while i < jobs.len() && s.failures.is_empty() {
            let (args, span) = jobs[i].clone();
            i += 1;
            let after = rng.below(span);
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let tag = format!("c{cycle}-{i}");
            let (phases, out) =
                kill_and_rerun(&env, &config, &tag, &argv, Duration::from_millis(after)).await;
            let names: Vec<&str> = match argv.as_slice() {
                ["rollback", "-n", ns] => vec![*ns],
                _ => SOAK_NS.to_vec(),
            };
            let result = converged(&env, &names, &before, &out, &tag);
            if let Some(phases) = &phases {
                s.kills += 1;
                for (ns, p) in phases.iter().filter(|(ns, _)| names.contains(&ns.as_str())) {
                    *s.phases.entry(format!("{ns}={p}")).or_default() += 1;
                }
                match &result {
                    Ok(()) => s.converged += 1,
                    Err(e) => s.failures.push(format!(
                        "seed {seed} cycle {cycle}: `{}` killed at {after} ms (phases {phases:?}); the rerun did not converge: {e}",
                        args.join(" ")
                    )),
                }
            } else if let Err(e) = result {
                s.failures.push(format!(
                    "seed {seed} cycle {cycle}: unkilled `{}`: {e}",
                    args.join(" ")
                ));
            }
            if verbose {
                println!(
                    "kill {:>3} cycle {cycle:>3}: `{}` at {after:>5} ms {} -> rerun exit {}",
                    s.kills,
                    args.join(" "),
                    match &phases {
                        Some(p) => format!("{p:?}"),
                        None => "(had already ended: not counted)".into(),
                    },
                    out.code
                );
            }
            if argv == ["run"] {
                for ns in SOAK_NS {
                    if env.journal_phase(ns).as_deref() == Some("migrated") {
                        jobs.push((vec!["rollback".into(), "-n".into(), ns.into()], rb_ms));
                    }
                }
            }
        }
    }
    s.secs = t0.elapsed().as_secs_f64();
    s
}
