//! `ambient-migrate rehearse`: the migration played on a simulated copy of the fleet before the real one.
//!
//! It reads the fleet (from the cluster with GET and LIST only, or from YAML files), copies the objects
//! that decide the data plane into an embedded meshsim with pod start times taken from what the cluster
//! shows, sends continuous synthetic traffic on every caller-to-Service path derived from the policies,
//! routes and probes ([`migrate_core::rehearse::derive_paths`]), runs the real `run` pipeline with the
//! user's configuration against the copy, and reports per path the failed legitimate and leaked
//! illegitimate requests with their windows, the predicted wall time, and what rolled back. It exits 0
//! only when nothing failed, leaked or rolled back.

pub mod source;
pub mod traffic;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;

use crate::app::{self, Out, exit};
use crate::cli::{Cli, Command, OutputFormat};
use crate::exit::{CmdResult, Failure};
use crate::report::{self, NamespaceOutcome, RunReport};
use crate::settings::Settings;
use migrate_core::rehearse::{TrafficTable, derive_paths};

/// The faults a rehearsal can inject (meshsim's kinds that need no parameter beyond a namespace).
pub const FAULTS: [meshsim::FaultKind; 5] = [
    meshsim::FaultKind::WaypointNeverReady,
    meshsim::FaultKind::PodsCrashloopAfterRestart,
    meshsim::FaultKind::CniPending,
    meshsim::FaultKind::ZtunnelDown,
    meshsim::FaultKind::InjectorDown,
];

/// Simulated scheduling-to-Ready time of a pod at most (a slower cluster is rehearsed faster, and its
/// times scaled back for the prediction).
const MAX_SIM_POD_START: Duration = Duration::from_millis(500);

/// Simulated scheduling-to-Ready time of a pod at least: a cluster that shows less (its condition times
/// have whole-second precision, so a fast one shows 0s) is rehearsed at this pace.
const MIN_SIM_POD_START: Duration = Duration::from_millis(200);

/// How often each path is sent.
const TRAFFIC_INTERVAL: Duration = Duration::from_millis(50);

fn fault_name(k: meshsim::FaultKind) -> String {
    serde_json::to_value(k)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Parses `KIND[:NAMESPACE]` into a meshsim fault. A crash loop hits the pods created while the namespace
/// has lost its sidecar injection label (`istio-injection`, or `istio.io/rev` when that is what `labels`, the
/// namespace's labels, carry): the restart of step 4; the sidecar pods the rehearsal starts with and the
/// ones a rollback recreates (label restored) are healthy.
pub fn parse_fault(
    text: &str,
    labels: impl Fn(&str) -> Option<serde_json::Value>,
) -> Result<meshsim::FaultSpec, String> {
    let (kind, ns) = match text.split_once(':') {
        Some((k, n)) if !n.is_empty() => (k, Some(n)),
        _ => (text, None),
    };
    let names: Vec<String> = FAULTS.iter().map(|k| fault_name(*k)).collect();
    let Some(k) = FAULTS.iter().copied().find(|k| fault_name(*k) == kind) else {
        return Err(format!(
            "--fault {text:?}: unknown fault kind {kind:?}; use one of {} (optionally :NAMESPACE)",
            names.join(", ")
        ));
    };
    let mut f = meshsim::FaultSpec::new(k, ns);
    if k == meshsim::FaultKind::PodsCrashloopAfterRestart {
        let Some(ns) = ns else {
            return Err(format!(
                "--fault {text:?}: a crash loop needs the namespace it happens in (pods-crashloop-after-restart:NAMESPACE)"
            ));
        };
        let injection = match labels(ns) {
            Some(l) if l.get("istio-injection").is_none() && l.get("istio.io/rev").is_some() => {
                "istio.io/rev"
            }
            _ => "istio-injection",
        };
        f.trigger = Some(meshsim::faults::Trigger {
            namespace: ns.into(),
            label: format!("!{injection}"),
        });
    }
    Ok(f)
}

/// How the rehearsal's clock relates to the cluster's.
#[derive(Debug, Clone, Copy)]
struct Clock {
    /// Cluster time per simulated time (>= 1).
    scale: f64,
    /// Simulated scheduling-to-Ready time of a pod.
    sim_pod_start: Duration,
    /// What the cluster shows, and over how many pods.
    observed: Option<(Duration, usize)>,
}

impl Clock {
    fn new(observed: Option<(Duration, usize)>) -> Self {
        let real = observed.map(|(d, _)| d);
        let sim_pod_start = real.map_or(MAX_SIM_POD_START, |d| {
            d.clamp(MIN_SIM_POD_START, MAX_SIM_POD_START)
        });
        let scale = match real {
            Some(d) if !sim_pod_start.is_zero() => (d.as_secs_f64() / sim_pod_start.as_secs_f64()).max(1.0),
            _ => 1.0,
        };
        Clock {
            scale,
            sim_pod_start,
            observed,
        }
    }

    /// meshsim latencies: the demo's fast cluster, with pod start and readiness from the observed time.
    fn sim_settings(&self) -> meshsim::Settings {
        let mut s = crate::demo::sim_settings();
        let half = (self.sim_pod_start.as_millis() as u64 / 2).max(1);
        s.latency.pod_start_ms = half;
        s.latency.pod_ready_ms = half;
        s
    }

    fn shrink(&self, d: Duration) -> Duration {
        d.div_f64(self.scale).max(Duration::from_secs(2)).min(d)
    }
}

/// Runs the rehearsal; returns the exit code (a failure printed once).
pub async fn run(cli: &Cli) -> i32 {
    exit::finish(rehearse(cli).await)
}

async fn rehearse(cli: &Cli) -> CmdResult {
    let Command::Rehearse { from_files, faults } = &cli.command else {
        return Err(Failure::Usage("not a rehearse command line".into()));
    };
    let mut s = app::load_settings(cli)?;
    let out = Out {
        format: cli.output,
        embedded: false,
    };
    let system_ns = "istio-system";
    // 1. The fleet as it is.
    let fleet = match from_files {
        Some(dir) => source::from_files(dir).map_err(Failure::Usage)?,
        None => read_live(cli, &s, system_ns).await?,
    };
    let copy = source::to_copy(&fleet, system_ns);
    let ns_labels = |ns: &str| {
        copy.objects
            .iter()
            .find(|o| o["kind"] == "Namespace" && o["metadata"]["name"] == ns)
            .map(|o| o["metadata"]["labels"].clone())
    };
    let mut fault_specs = Vec::new();
    for f in faults {
        fault_specs.push(parse_fault(f, ns_labels).map_err(|e| Failure::Usage(e.to_string()))?);
    }
    let clock = Clock::new(source::pod_start_time(&fleet));

    // 2. The simulated copy.
    let work = std::env::temp_dir().join(format!("ambient-migrate-rehearse-{}", std::process::id()));
    std::fs::create_dir_all(&work)
        .map_err(|e| Failure::Usage(format!("cannot create {}: {e}", work.display())))?;
    let kubeconfig = work.join("kubeconfig");
    let fixture: Vec<String> = copy
        .objects
        .iter()
        .map(|o| serde_json::to_string(o).unwrap_or_default())
        .collect();
    let running = match meshsim::start(meshsim::StartOptions {
        fixture_texts: vec![fixture.join("\n---\n")],
        settings: clock.sim_settings(),
        faults: fault_specs,
        proxy_listen: Some("127.0.0.1:0".parse().expect("address")),
        kubeconfig_out: Some(kubeconfig.clone()),
        ..Default::default()
    })
    .await
    {
        Ok(r) => r,
        Err(e) => {
            return Err(Failure::Usage(format!(
                "the fleet could not be copied into the simulation: {e}"
            )));
        }
    };
    let proxy = running.proxy_url().unwrap_or_default();
    let report_dir = cli
        .report_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports/rehearsal"));
    rehearsal_settings(&mut s, &clock, &proxy, &report_dir);
    let run_cli = Cli::try_parse_checked([
        "ambient-migrate".to_string(),
        "run".into(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
    ])
    .map_err(|e| Failure::Usage(e.to_string()))?;
    let sim_cluster = app::connect(&run_cli, &s).await?;
    let namespaces = app::resolve_fleet(&sim_cluster, &s).await?;
    let wanted = wanted_pods(&copy.objects, &namespaces);
    let ready = wait_pods_ready(&running.sim, &namespaces, wanted, Duration::from_secs(60)).await;
    let probes: Vec<_> = namespaces
        .iter()
        .flat_map(|ns| s.for_namespace(ns).probes)
        .collect();
    let paths = derive_paths(&copy.objects, &namespaces, &probes);
    let (rows, excluded) = traffic::settled_baseline(&running.sim, paths).await;
    let progress = out.progress();
    progress(&format!(
        "rehearsal: {} namespaces, {} objects copied, {} paths under traffic ({} left out), pods start in {} ({}){}",
        namespaces.len(),
        copy.objects.len(),
        rows.len(),
        excluded.len(),
        secs(clock.sim_pod_start),
        match clock.observed {
            Some((d, n)) => format!("{} on the cluster, median of {n} pods", secs(d)),
            None => "no pod start times in the input: a fast cluster assumed".into(),
        },
        if ready {
            ""
        } else {
            "; some pods were not Ready after 60s"
        },
    ));

    // 3. The real pipeline under traffic.
    let generator = traffic::Generator::start(running.sim.clone(), rows, TRAFFIC_INTERVAL);
    let started = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    app::spawn_signal_handler(stop_tx, s.timeouts.shutdown);
    // The pipeline's report is completed with the traffic and written below; stdout carries the rehearsal's.
    let run_out = Out {
        format: cli.output,
        embedded: true,
    };
    // The pipeline's own failure is printed here, as the CLI would; the rehearsal still gives its verdict.
    let code = exit::finish(Box::pin(app::run_with(&run_cli, &s, &sim_cluster, &run_out, stop_rx)).await);
    let elapsed = started.elapsed();
    // The end state counts too: a little more traffic after the run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let table = generator.finish();

    // 4. The verdict.
    let report_path = s.reports.dir.join(format!("{}.json", report::REPORT_BASENAME));
    let run_report = std::fs::read_to_string(&report_path)
        .ok()
        .and_then(|t| report::json::parse(&t).ok());
    let verdict = Verdict::new(code, run_report.as_ref(), &table);
    if let Some(mut r) = run_report {
        r.command = "rehearse".into();
        r.exit_code = verdict.exit_code;
        r.traffic = Some(table.clone());
        app::write_reports(&s, &r, true);
    }
    let predicted = elapsed.mul_f64(clock.scale);
    match out.format {
        OutputFormat::Json => {
            let doc = json!({
                "exit_code": verdict.exit_code,
                "run_exit_code": code,
                "namespaces": verdict.namespaces,
                "traffic": table,
                "excluded_paths": excluded.iter().map(|e| json!({"path": e.path, "why": e.why})).collect::<Vec<_>>(),
                "rehearsal_seconds": elapsed.as_secs_f64(),
                "predicted_wall_seconds": predicted.as_secs_f64(),
                "time_scale": clock.scale,
                "skipped_kinds": copy.skipped,
            });
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        OutputFormat::Text => {
            println!();
            println!("{:<24} {:<16} rolled back", "NAMESPACE", "OUTCOME");
            for n in &verdict.namespaces {
                println!("{:<24} {:<16} {}", n.name, n.outcome, n.rolled_back);
            }
            println!();
            print!("{}", table.text());
            for e in excluded.iter().take(20) {
                println!(
                    "left out: {} -> {}: {}",
                    e.path.caller_label(),
                    e.path.destination,
                    e.why
                );
            }
            println!();
            println!(
                "failed legitimate requests: {}; leaked illegitimate requests: {}; namespaces rolled back: {}",
                table.wrongly_denied(),
                table.wrongly_allowed(),
                verdict.rolled_back
            );
            println!(
                "rehearsal took {}; predicted wall time on the cluster: {} (x{:.1}, from pod start times)",
                secs(elapsed),
                secs(predicted),
                clock.scale
            );
            println!(
                "exit code {}: {}",
                verdict.exit_code,
                match verdict.exit_code {
                    exit::OK => "no failed or leaked request and no rollback",
                    exit::GATE_FAILED =>
                        "requests failed or leaked, or a namespace rolled back: see the table and the report",
                    other => report::markdown::exit_code_meaning(other),
                }
            );
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(verdict.exit_code)
}

/// Reads the live fleet with the user's connection (GET and LIST only).
async fn read_live(cli: &Cli, s: &Settings, system_ns: &str) -> Result<source::Fleet, Failure> {
    let cluster = app::connect(cli, s).await?;
    let namespaces = app::resolve_fleet(&cluster, s).await?;
    source::from_cluster(&cluster, &namespaces, system_ns)
        .await
        .map_err(Failure::Usage)
}

/// The user's settings, adapted to the copy: reports in their own directory, HTTP probes through the
/// simulation's proxy, deadlines shrunk with the clock (never below 2s, never above the user's).
fn rehearsal_settings(s: &mut Settings, clock: &Clock, proxy: &str, report_dir: &Path) {
    s.reports.dir = report_dir.to_path_buf();
    let t = &mut s.timeouts;
    t.waypoint_ready = clock.shrink(t.waypoint_ready);
    t.rollout = clock.shrink(t.rollout);
    t.step = clock.shrink(t.step);
    t.rollback = clock.shrink(t.rollback);
    let through_proxy = |probes: &mut Vec<crate::settings::ProbeSpec>| {
        for p in probes {
            if let migrate_core::probes::spec::ProbeKind::Http(h) = &mut p.kind {
                h.proxy = Some(proxy.to_string());
            }
        }
    };
    through_proxy(&mut s.probes);
    for o in s.namespaces.values_mut() {
        through_proxy(&mut o.probes);
    }
}

/// One namespace's line of the verdict.
#[derive(Debug, Clone, serde::Serialize)]
struct NsLine {
    name: String,
    outcome: String,
    /// The steps undone, or `-`.
    rolled_back: String,
}

/// What the rehearsal concludes.
struct Verdict {
    exit_code: i32,
    namespaces: Vec<NsLine>,
    rolled_back: usize,
}

impl Verdict {
    /// Exit 0 only when the run exited 0, nothing failed or leaked, and nothing rolled back; the run's own
    /// code when it is worse than a gate failure (blocked, usage, a human needed, locked); otherwise 1.
    fn new(run_code: i32, report: Option<&RunReport>, table: &TrafficTable) -> Self {
        let namespaces: Vec<NsLine> = report
            .map(|r| {
                r.namespaces
                    .iter()
                    .map(|n| NsLine {
                        name: n.name.clone(),
                        outcome: n.outcome.as_str().into(),
                        rolled_back: n
                            .rollback
                            .as_ref()
                            .map(|rb| {
                                let steps: Vec<String> =
                                    rb.undone.iter().map(|s| s.number().to_string()).collect();
                                format!("from step {} (undid {})", rb.from.number(), steps.join(","))
                            })
                            .unwrap_or_else(|| "-".into()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let rolled_back = report.map_or(0, |r| {
            r.namespaces
                .iter()
                .filter(|n| {
                    n.rollback.is_some()
                        || matches!(
                            n.outcome,
                            NamespaceOutcome::RolledBack | NamespaceOutcome::RollbackFailed
                        )
                })
                .count()
        });
        let bad = table.wrongly_allowed() + table.wrongly_denied() > 0 || rolled_back > 0 || report.is_none();
        let exit_code = match run_code {
            exit::OK if !bad => exit::OK,
            exit::OK | exit::GATE_FAILED => exit::GATE_FAILED,
            other => other,
        };
        Verdict {
            exit_code,
            namespaces,
            rolled_back,
        }
    }
}

/// `12.3s`.
fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Pods the fleet's Deployments and StatefulSets ask for (`spec.replicas`, default 1).
fn wanted_pods(objects: &[serde_json::Value], namespaces: &[String]) -> usize {
    objects
        .iter()
        .filter(|o| matches!(o["kind"].as_str(), Some("Deployment" | "StatefulSet")))
        .filter(|o| namespaces.iter().any(|ns| o["metadata"]["namespace"] == **ns))
        .map(|o| o["spec"]["replicas"].as_u64().unwrap_or(1) as usize)
        .sum()
}

/// Waits (bounded) until `wanted` pods of the fleet are Ready, as the cluster's were.
async fn wait_pods_ready(sim: &meshsim::Sim, namespaces: &[String], wanted: usize, max: Duration) -> bool {
    let pods = meshsim::resources::core("pods");
    let until = tokio::time::Instant::now() + max;
    let mut changes = sim.store.changes();
    loop {
        let (list, _) = sim.store.list(pods, None);
        let ready = list
            .iter()
            .filter(|p| namespaces.iter().any(|ns| p["metadata"]["namespace"] == **ns))
            .filter(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            })
            .count();
        if ready >= wanted {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), changes.changed()).await;
    }
}
