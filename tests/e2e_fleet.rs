//! End-to-end acceptance of the fleet job (docs/design.md §6) on a meshsim fleet, driving the real
//! binary: a failed canary stops the fleet with nothing else touched; a namespace failing mid-fleet rolls
//! back while the others migrate; the failure budget stops new starts; at most `concurrency` namespaces
//! are in flight (measured from meshsim's request log); SIGTERM mid-run leaves every namespace Migrated,
//! RolledBack (config equal to the backup) or untouched, with the reports written. Every run's report
//! files are checked: the JSON against docs/report.schema.json, the JUnit file against the schema CI
//! publishers accept, with one testcase per step and gate and the measurements of failed gates.

use test_support::fleet as fleet_common;

use std::collections::BTreeMap;
use std::time::Duration;

use fleet_common::*;

const LIMIT: Duration = Duration::from_secs(80);

fn states(fleet: &Fleet, names: &[&str]) -> BTreeMap<String, NsState> {
    names.iter().map(|n| (n.to_string(), fleet.ns_state(n))).collect()
}

/// Asserts that `ns` is exactly as before (labels, resourceVersions of the Namespace, pods and
/// Deployments) and that the product sent no mutating request concerning it.
fn assert_untouched(fleet: &Fleet, ns: &str, before: &NsState) {
    assert_eq!(&fleet.ns_state(ns), before, "{ns} was touched");
    let writes: Vec<String> = fleet
        .product_log()
        .iter()
        .filter(|r| r.is_mutating() && concerns(r, ns))
        .map(|r| format!("{} {} {}", r.verb, r.path, r.code))
        .collect();
    assert!(writes.is_empty(), "mutating requests for {ns}: {writes:#?}");
    // Events are created in `default` (POST: no name in the URL), so look for them in the store.
    let (events, _) = fleet
        .sim()
        .store
        .list(meshsim::resources::core("events"), Some("default"));
    let about: Vec<_> = events
        .iter()
        .filter(|e| e["involvedObject"]["name"] == ns)
        .map(|e| e["reason"].clone())
        .collect();
    assert!(about.is_empty(), "events about {ns}: {about:?}");
}

fn assert_reports(fleet: &Fleet) {
    for ext in ["json", "xml", "md"] {
        assert!(
            fleet
                .reports
                .join(format!("ambient-migrate-report.{ext}"))
                .is_file(),
            "report .{ext} written"
        );
    }
    assert_report_matches_schema(&fleet.reports);
    check_junit(&fleet.reports);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_canary_stops_the_fleet_and_touches_nothing_else() {
    let all = ["cfail", "alpha", "beta", "gamma"];
    let fleet = Fleet::start(
        &fixture(&[
            ("cfail", true),
            ("alpha", false),
            ("beta", false),
            ("gamma", false),
        ]),
        vec![crashloop("cfail")],
    )
    .await;
    let before = states(&fleet, &all);
    let cfg = fleet.write_config("fleet.toml", &fleet_config(&all, &["cfail"], 2, 5, ""));
    let out = fleet
        .run(&["run", "--config", cfg.to_str().expect("utf-8")], LIMIT)
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));

    let outcomes = fleet.outcomes();
    assert_eq!(outcomes["cfail"], "rolled-back", "{outcomes:?}");
    for ns in ["alpha", "beta", "gamma"] {
        assert_eq!(outcomes[ns], "not-started", "{outcomes:?}");
        assert_untouched(&fleet, ns, &before[ns]);
    }
    let report = fleet.report();
    let reason = report["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .find(|n| n["name"] == "alpha")
        .expect("alpha")["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("canary"), "why alpha did not start: {reason}");
    assert_restored(&fleet, "cfail", &before["cfail"]);
    let (events, _) = fleet
        .sim()
        .store
        .list(meshsim::resources::core("events"), Some("default"));
    assert!(
        events
            .iter()
            .any(|e| e["involvedObject"]["name"] == "cfail" && e["reason"] == "RolledBack"),
        "the canary's rollback is recorded as an Event"
    );
    assert_eq!(fleet.journal("cfail").expect("journal")["phase"], "rolled-back");
    assert_reports(&fleet);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_namespace_mid_fleet_rolls_back_while_the_others_migrate_two_at_a_time() {
    let all = ["can", "n1", "n2", "bad", "n3", "n4"];
    let fleet = Fleet::start(
        &fixture(&[
            ("can", false),
            ("n1", false),
            ("n2", false),
            ("bad", true),
            ("n3", false),
            ("n4", false),
        ]),
        vec![crashloop("bad")],
    )
    .await;
    let before = states(&fleet, &all);
    let cfg = fleet.write_config("fleet.toml", &fleet_config(&all, &["can"], 2, 1, ""));
    let out = fleet
        .run(&["run", "--config", cfg.to_str().expect("utf-8")], LIMIT)
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));

    let outcomes = fleet.outcomes();
    for ns in ["can", "n1", "n2", "n3", "n4"] {
        assert_eq!(outcomes[ns], "migrated", "{ns}: {outcomes:?}");
        assert_migrated(&fleet, ns);
    }
    assert_eq!(outcomes["bad"], "rolled-back", "{outcomes:?}");
    assert_restored(&fleet, "bad", &before["bad"]);

    // In flight, from meshsim's request log: the canary alone, then at most 2 at once (and really 2).
    let log = fleet.product_log();
    let intervals = in_flight(&log, &all);
    assert_eq!(
        intervals.len(),
        all.len(),
        "every namespace was written: {intervals:?}"
    );
    let (can_start, can_end) = intervals["can"];
    for (ns, (s, e)) in &intervals {
        if ns != "can" {
            assert!(
                *s > can_end || *e < can_start,
                "{ns} in flight ({s}..{e}) while the canary was ({can_start}..{can_end})"
            );
        }
    }
    let overlap = max_overlap(&intervals);
    eprintln!("in flight: {intervals:?}, max overlap {overlap}");
    assert!(
        overlap <= 2,
        "{overlap} namespaces in flight at once: {intervals:#?}"
    );
    assert!(
        overlap > 1,
        "concurrency 2 never reached (the test could not fail): {intervals:#?}"
    );

    // The failed gate is in both reports, with its measurements.
    let report = fleet.report();
    let bad = report["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .find(|n| n["name"] == "bad")
        .expect("bad")
        .clone();
    let failed: Vec<_> = bad["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .flat_map(|s| s["gates"].as_array().cloned().unwrap_or_default())
        .filter(|g| g["outcome"] != "pass")
        .collect();
    assert!(!failed.is_empty(), "bad has a failed gate: {bad:#}");
    assert!(
        failed
            .iter()
            .all(|g| g["measured"].as_object().is_some_and(|m| !m.is_empty())
                || g["measured"].as_array().is_some_and(|m| !m.is_empty())),
        "failed gates carry measurements: {failed:#?}"
    );
    assert_eq!(bad["rollback"]["outcome"], "verified", "{bad:#}");
    assert_reports(&fleet);

    // A second run skips the migrated namespaces without writing to them, and retries the rolled-back one.
    fleet.sim().accounting.reset();
    let out = fleet
        .run(
            &[
                "run",
                "--config",
                cfg.to_str().expect("utf-8"),
                "--output",
                "json",
            ],
            LIMIT,
        )
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON document: {e}\n{}", show(&out)));
    assert_eq!(printed, fleet.report(), "--output json prints the report");
    let outcomes = fleet.outcomes();
    for ns in ["can", "n1", "n2", "n3", "n4"] {
        assert_eq!(outcomes[ns], "skipped", "{ns}: {outcomes:?}");
        let writes: Vec<String> = fleet
            .product_log()
            .iter()
            .filter(|r| r.is_mutating() && concerns(r, ns))
            .map(|r| format!("{} {}", r.verb, r.path))
            .collect();
        assert!(writes.is_empty(), "{ns} written on the rerun: {writes:?}");
    }
    assert_eq!(outcomes["bad"], "rolled-back", "{outcomes:?}");
    assert_restored(&fleet, "bad", &before["bad"]);
    assert_reports(&fleet);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_budget_stops_new_starts() {
    let all = ["f1", "f2", "later1", "later2"];
    let fleet = Fleet::start(
        &fixture(&[("f1", true), ("f2", true), ("later1", false), ("later2", false)]),
        vec![crashloop("f1"), crashloop("f2")],
    )
    .await;
    let before = states(&fleet, &all);
    // One failure is within the budget (f2 still starts); the second one spends it.
    let cfg = fleet.write_config("fleet.toml", &fleet_config(&all, &[], 1, 1, ""));
    let out = fleet
        .run(&["run", "--config", cfg.to_str().expect("utf-8")], LIMIT)
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let outcomes = fleet.outcomes();
    assert_eq!(outcomes["f1"], "rolled-back", "{outcomes:?}");
    assert_eq!(outcomes["f2"], "rolled-back", "{outcomes:?}");
    for ns in ["later1", "later2"] {
        assert_eq!(outcomes[ns], "not-started", "{outcomes:?}");
        assert_untouched(&fleet, ns, &before[ns]);
    }
    for ns in ["f1", "f2"] {
        assert_restored(&fleet, ns, &before[ns]);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("failure budget"), "{}", show(&out));
    assert_reports(&fleet);
}

/// When the SIGTERM is sent.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// A namespace carries the ambient label (step 2 applied).
    AmbientLabel,
    /// A namespace runs a pod without sidecar (step 4 restart in progress).
    Restart,
}

fn reached(store: &meshsim::Store, ns: &str, at: Moment) -> bool {
    match at {
        Moment::AmbientLabel => store
            .get(meshsim::resources::core("namespaces"), "", ns)
            .is_some_and(|o| o["metadata"]["labels"]["istio.io/dataplane-mode"] == "ambient"),
        Moment::Restart => store
            .list(meshsim::resources::core("pods"), Some(ns))
            .0
            .iter()
            .any(|p| !has_sidecar(p)),
    }
}

/// Waits (watching the store, 30 s at most) until one of `namespaces` reaches `at`; returns it.
async fn first_to_reach(fleet: &Fleet, namespaces: &[&str], at: Moment) -> String {
    let store = fleet.sim().store.clone();
    let mut changes = store.changes();
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(ns) = namespaces.iter().find(|ns| reached(&store, ns, at)) {
            return ns.to_string();
        }
        assert!(tokio::time::Instant::now() < until, "no namespace reached {at:?}");
        let _ = tokio::time::timeout(Duration::from_millis(50), changes.changed()).await;
    }
}

/// Sends SIGTERM to `pid`.
fn sigterm(pid: &str) {
    let kill = std::process::Command::new("kill")
        .args(["-TERM", pid])
        .status()
        .expect("kill");
    assert!(kill.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_after_step_2_leaves_every_namespace_safe_and_writes_the_reports() {
    sigterm_mid_run(Moment::AmbientLabel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_the_restart_leaves_every_namespace_safe_and_writes_the_reports() {
    sigterm_mid_run(Moment::Restart).await;
}

async fn sigterm_mid_run(at: Moment) {
    let all = ["s1", "s2", "s3", "s4"];
    let fleet = Fleet::start(
        &fixture(&[("s1", false), ("s2", false), ("s3", false), ("s4", false)]),
        vec![],
    )
    .await;
    let before = states(&fleet, &all);
    let cfg = fleet.write_config("fleet.toml", &fleet_config(&all, &[], 2, 5, ""));
    let child = fleet
        .command(&["run", "--config", cfg.to_str().expect("utf-8")])
        .spawn()
        .expect("spawn");
    let pid = child.id().expect("pid").to_string();
    // Wait until a namespace is mid-way.
    let mid = first_to_reach(&fleet, &all, at).await;
    sigterm(&pid);
    let out = match tokio::time::timeout(LIMIT, child.wait_with_output()).await {
        Ok(o) => o.expect("wait"),
        Err(_) => panic!("ambient-migrate did not exit after SIGTERM"),
    };
    let code = out.status.code();
    assert!(
        code.is_some(),
        "exited by itself (not killed by the signal): {}",
        show(&out)
    );

    let report = fleet.report();
    let outcomes = outcomes_of(&report);
    eprintln!("after SIGTERM at {at:?} in {mid}: exit {code:?}, outcomes {outcomes:?}");
    assert_eq!(outcomes.len(), all.len(), "{outcomes:?}");
    assert_eq!(
        code,
        Some(ambient_migrate::report::exit_code_for(
            &ambient_migrate::report::json::parse(&report.to_string())
                .expect("report")
                .namespaces
        )),
        "exit code follows the outcomes: {}",
        show(&out)
    );
    assert_ne!(outcomes[&mid], "not-started", "{mid} was in flight: {outcomes:?}");
    assert!(
        outcomes.values().any(|o| o == "not-started"),
        "the stop must keep namespaces from starting: {outcomes:?}"
    );
    for ns in all {
        match outcomes[ns].as_str() {
            "migrated" => assert_migrated(&fleet, ns),
            "rolled-back" => assert_restored(&fleet, ns, &before[ns]),
            "not-started" => {
                // Untouched, or (stopped right after the backup) with unchanged config.
                let now = fleet.ns_state(ns);
                assert_eq!(now.config_view(), before[ns].config_view(), "{ns} config changed");
                assert_eq!(now.pods, before[ns].pods, "{ns} pods changed");
            }
            other => panic!("{ns} ended {other} after SIGTERM: {}", show(&out)),
        }
    }
    assert_reports(&fleet);
}

/// A second SIGTERM does not wait for in-flight namespaces: the process exits at once with 3, leaving a
/// namespace mid-step or mid-rollback; its journal is current, so the next run converges every namespace
/// to Migrated or RolledBack equal to its state before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_stops_at_once_and_a_rerun_converges() {
    let all = ["s1", "s2"];
    let fleet = Fleet::start(&fixture(&[("s1", false), ("s2", false)]), vec![]).await;
    let before = states(&fleet, &all);
    let cfg = fleet.write_config(
        "fleet.toml",
        &fleet_config(&all, &[], 2, 5, "").replace("[timeouts]\n", "[timeouts]\nlease = \"2s\"\n"),
    );
    let child = fleet
        .command(&["run", "--config", cfg.to_str().expect("utf-8")])
        .spawn()
        .expect("spawn");
    let pid = child.id().expect("pid").to_string();
    first_to_reach(&fleet, &all, Moment::Restart).await;
    for _ in 0..2 {
        sigterm(&pid);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = tokio::time::timeout(Duration::from_secs(5), child.wait_with_output())
        .await
        .expect("a second SIGTERM ends the process at once")
        .expect("wait");
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("second signal"),
        "{}",
        show(&out)
    );

    // The rerun (once the 2 s Lease has expired and been watched for its duration) migrates both.
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    let rerun = loop {
        let o = fleet
            .run(&["run", "--config", cfg.to_str().expect("utf-8")], LIMIT)
            .await;
        if o.status.code() != Some(5) {
            break o;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the Lease never expired: {}",
            show(&o)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // The first signal turned the in-flight namespace to a rollback, which the second cut short: the rerun
    // finishes that rollback; the others migrate.
    assert!(matches!(rerun.status.code(), Some(0 | 1)), "{}", show(&rerun));
    let outcomes = outcomes_of(&fleet.report());
    for ns in all {
        match outcomes[ns].as_str() {
            "migrated" => assert_migrated(&fleet, ns),
            "rolled-back" => assert_restored(&fleet, ns, &before[ns]),
            other => panic!("{ns} ended {other}: {}", show(&rerun)),
        }
    }
}

/// A stop during a long step does not wait for the step: the namespace abandons it and rolls back at once
/// (here the restart would wait up to 60 s for crash-looping pods), well within `timeouts.shutdown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_mid_step_abandons_the_step_and_rolls_back() {
    let fleet = Fleet::start(&fixture(&[("s1", false)]), vec![crashloop("s1")]).await;
    let before = states(&fleet, &["s1"]);
    let cfg = fleet.write_config(
        "fleet.toml",
        &fleet_config(&["s1"], &[], 1, 5, "")
            .replace("rollout = \"8s\"", "rollout = \"60s\"")
            .replace("step = \"15s\"", "step = \"60s\"\nshutdown = \"40s\""),
    );
    let child = fleet
        .command(&["run", "--config", cfg.to_str().expect("utf-8")])
        .spawn()
        .expect("spawn");
    let pid = child.id().expect("pid").to_string();
    first_to_reach(&fleet, &["s1"], Moment::Restart).await;
    let stopped_at = std::time::Instant::now();
    sigterm(&pid);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the stop does not wait for the 60 s step")
        .expect("wait");
    assert!(
        stopped_at.elapsed() < Duration::from_secs(25),
        "{:?}\n{}",
        stopped_at.elapsed(),
        show(&out)
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let outcomes = outcomes_of(&fleet.report());
    assert_eq!(outcomes["s1"], "rolled-back", "{outcomes:?}\n{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("abandoning it and rolling back"),
        "{}",
        show(&out)
    );
    assert_restored(&fleet, "s1", &before["s1"]);
}
