//! End-to-end crash safety (docs/design.md §4): the runner is killed with SIGKILL while it is in step k (its
//! state annotation on the Namespace or its journal says so: the annotation shows a step as it starts, the
//! journal records it with the step's first write, or not at all for a step that sends nothing), for each
//! step and once in the middle of a rollback, then run again: the namespace
//! converges to Migrated (or RolledBack, with its config identical to the backup). A second runner started
//! while another holds the fleet Lease exits 5 and writes nothing.
//!
//! The lease is short (`timeouts.lease = "3s"`), so the rerun waits at most that long for the killed run's
//! Lease to expire (it exits 5 until then).

use test_support::e2e as e2e_common;

use std::time::Duration;

use e2e_common::*;
use meshsim::FaultKind;

/// Slower API answers so each step lasts long enough to be caught and killed.
fn slow_settings() -> meshsim::Settings {
    let mut s = sim_settings();
    s.latency.api_ms = 3;
    s
}

/// Kills the runner (SIGKILL) as soon as the state annotation or the journal of `shop` shows `phase`.
async fn run_and_kill_at(env: &Env, config: &std::path::Path, phase: &str) {
    let (mut child, dir) = env.spawn(config, "killed", &["run"]);
    let failed_gates = || {
        let t = std::fs::read_to_string(dir.join("ambient-migrate-report.json")).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
        let mut out = Vec::new();
        for st in v["namespaces"][0]["steps"].as_array().into_iter().flatten() {
            for g in st["gates"].as_array().into_iter().flatten() {
                if g["outcome"] != "pass" {
                    out.push(format!("{}: {} {}", st["step"], g["gate"], g["message"]));
                }
            }
        }
        out
    };
    let mut seen = Vec::new();
    env.wait_until(&format!("state {phase}"), 40, || {
        let phases = env.run_phases("shop");
        for p in &phases {
            if seen.last() != Some(p) {
                seen.push(p.clone());
            }
        }
        if phases.iter().any(|p| p == phase) {
            return true;
        }
        // The run must not end (or pass the phase) before we kill it.
        assert!(
            !matches!(
                env.journal_phase("shop").as_deref(),
                Some("migrated" | "rolled-back" | "rollback-failed")
            ),
            "the run finished before reaching {phase}: phases seen {seen:?}; failed gates: {:?}",
            {
                std::thread::sleep(Duration::from_millis(500));
                failed_gates()
            }
        );
        false
    })
    .await;
    child.start_kill().expect("SIGKILL");
    let status = child.wait().await.expect("wait");
    assert!(!status.success(), "killed, not exited: {status:?}");
}

/// Reruns until the killed run's Lease has expired (exit 5 until then); returns the first other result.
async fn rerun(env: &Env, config: &std::path::Path) -> Output {
    let until = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut i = 0;
    loop {
        i += 1;
        let out = env.run(config, &format!("rerun-{i}"), &["run"]).await;
        if out.code != 5 {
            return out;
        }
        assert!(out.stderr.contains("holds the lease"), "{out}");
        assert!(
            tokio::time::Instant::now() < until,
            "the killed run's Lease never expired\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Kill at `in-step:<step>` (or at another phase), rerun, expect Migrated with the full end state.
async fn kill_in_step_then_converge(step: &str) {
    kill_at_phase_then_converge(&format!("in-step:{step}")).await
}

async fn kill_at_phase_then_converge(phase: &str) {
    let env = start_with(&[SEED], vec![], slow_settings()).await;
    env.wait_ready("shop").await;
    let before = env.config_dump("shop");
    let cfg = Cfg::new(&["shop"]).probes("shop", &seed_probes("shop", &env.proxy()));
    let config = env.write_config("resume", &cfg.toml());
    run_and_kill_at(&env, &config, phase).await;

    let out = rerun(&env, &config).await;
    match out.code {
        0 => {
            assert_eq!(out.ns_report("shop")["outcome"], "migrated", "{out}");
            assert_eq!(env.journal_phase("shop").as_deref(), Some("migrated"));
            env.assert_migrated_pods("shop");
            let aps = "security.istio.io";
            assert!(env.exists(aps, "authorizationpolicies", "shop", "db-allow-api"));
            assert!(!env.exists(aps, "authorizationpolicies", "shop", "api-allow-web-get"));
            assert!(!env.exists(
                aps,
                "authorizationpolicies",
                "shop",
                "api-allow-web-get-bridge-waypoint"
            ));
            assert!(!env.exists("networking.istio.io", "virtualservices", "shop", "api"));
            // The backup kept across the kill is the pre-migration state, not a mid-way one.
            let cm = env
                .store()
                .get(meshsim::resources::core("configmaps"), STATE_NS, "backup-shop")
                .expect("backup ConfigMap");
            let stored = env.dir.path().join("stored-backup.yaml");
            std::fs::write(&stored, cm["data"]["backup.yaml"].as_str().expect("yaml")).expect("write");
            let dump = backup_dump(&stored);
            assert_eq!(dump["namespaceLabels"], before["namespaceLabels"]);
            assert_eq!(dump["objects"], before["objects"]);
            // Every journaled run id: the killed one and the rerun.
            let j = env.journal("shop").expect("journal");
            assert!(j["runs"].as_array().is_some_and(|r| r.len() >= 2), "{j}");
        }
        1 => {
            assert_eq!(out.ns_report("shop")["outcome"], "rolled-back", "{out}");
            env.assert_rolled_back("shop", &before, &out.backup_file("shop"));
        }
        _ => panic!("the rerun did not converge\n{out}"),
    }
}

/// Killed while taking the backup (journal `preflight`): the rerun backs up (or reuses the backup of the
/// untouched namespace) and migrates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_backing_up_then_rerun_converges() {
    kill_at_phase_then_converge("preflight").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_step1_then_rerun_converges() {
    kill_in_step_then_converge("activate-waypoint").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_step2_then_rerun_converges() {
    kill_in_step_then_converge("enable-ambient").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_step3_then_rerun_converges() {
    kill_in_step_then_converge("remove-injection").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_step4_then_rerun_converges() {
    kill_in_step_then_converge("restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_step5_then_rerun_converges() {
    kill_in_step_then_converge("remove-sidecar-policies").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_step6_then_rerun_converges() {
    kill_in_step_then_converge("validate").await;
}

/// Killed in the middle of a rollback (step 4's pods crash-loop): the rerun finishes the rollback and the
/// namespace equals its backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_rollback_then_rerun_finishes_it() {
    let f = fault(
        FaultKind::PodsCrashloopAfterRestart,
        "shop",
        Some("!istio-injection"),
    );
    let env = start_with(&[SEED], vec![f], slow_settings()).await;
    env.wait_ready("shop").await;
    let before = env.config_dump("shop");
    let mut cfg = Cfg::new(&["shop"]).probes("shop", &seed_probes("shop", &env.proxy()));
    cfg.rollout = "3s";
    let config = env.write_config("rb", &cfg.toml());
    run_and_kill_at(&env, &config, "rolling-back:restart").await;

    let out = rerun(&env, &config).await;
    assert_eq!(out.code, 1, "{out}");
    let nsr = out.ns_report("shop");
    assert_eq!(nsr["outcome"], "rolled-back", "{nsr}");
    assert_eq!(env.journal_phase("shop").as_deref(), Some("rolled-back"));
    let first_backup = env.dir.path().join("reports-killed/backups/backup-shop.yaml");
    env.assert_rolled_back("shop", &before, &first_backup);
}

/// While one runner holds the Lease (it waits in step 1 for a waypoint that never gets ready), a second
/// runner exits 5, names the holder, and writes nothing: no mutating request besides the first runner's
/// Lease renewals, the Lease still held by the first runner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_runner_exits_5_while_the_lease_is_held() {
    let env = start(&[SEED], vec![fault(FaultKind::WaypointNeverReady, "shop", None)]).await;
    env.wait_ready_opts("shop", false).await;
    let mut cfg = Cfg::new(&["shop"]);
    cfg.waypoint_ready = "15s";
    let config = env.write_config("lock", &cfg.toml());
    let (mut first, _) = env.spawn(&config, "first", &["run"]);
    // In step 1's gate: the bridge is created and the namespace bound (the step's last mutation).
    env.wait_until("first runner waiting in step 1's gate", 20, || {
        env.journal_phase("shop").as_deref() == Some("in-step:activate-waypoint")
            && env
                .ns_labels("shop")
                .get("istio.io/use-waypoint")
                .map(String::as_str)
                == Some("waypoint")
    })
    .await;
    env.wait_settled(Duration::from_millis(200), 10).await;
    let lease = || {
        env.store()
            .get(
                meshsim::resources::id("coordination.k8s.io", "leases"),
                STATE_NS,
                "ambient-migrate",
            )
            .expect("Lease")
    };
    let holder = lease()["spec"]["holderIdentity"].clone();
    assert!(holder.is_string(), "{}", lease());
    let journal = env.journal("shop");
    env.running.sim.accounting.reset();

    let out = env.run(&config, "second", &["run"]).await;
    assert_eq!(out.code, 5, "{out}");
    assert!(
        out.stderr.contains(holder.as_str().unwrap_or("?")),
        "names the holder\n{out}"
    );
    let writes: Vec<String> = env
        .requests()
        .into_iter()
        .filter(|r| r.is_mutating() && r.resource != "leases")
        .map(|r| format!("{} {} {:?}", r.verb, r.resource, r.name))
        .collect();
    assert_eq!(writes, Vec::<String>::new(), "the second runner wrote nothing");
    assert_eq!(
        lease()["spec"]["holderIdentity"],
        holder,
        "the Lease still belongs to the first runner"
    );
    assert_eq!(
        env.journal("shop").map(|j| j["runs"].clone()),
        journal.map(|j| j["runs"].clone())
    );
    assert!(
        !out.report_dir.join("backups").exists(),
        "no backup written by the second runner"
    );

    first.start_kill().expect("kill first runner");
    let _ = first.wait().await;
}
