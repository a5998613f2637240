//! End-to-end tests of the command line against meshsim: every invalid configuration input
//! (config file, environment variable, `--set`, flag) gives exit code 2 with a message naming the key, and
//! no request at all reaches the cluster; each configuration layer overrides the previous one, seen
//! through what `plan` reads; `plan` reads each kind once for the whole fleet; `ambient-migrate demo` runs
//! the whole scenario and exits 0.

use test_support::fleet as fleet_common;

use std::time::Duration;

use fleet_common::*;

const LIMIT: Duration = Duration::from_secs(60);

async fn fleet() -> Fleet {
    Fleet::start(
        &fixture(&[("ns-a", false), ("ns-b", false), ("ns-c", false), ("ns-d", false)]),
        vec![],
    )
    .await
}

/// One invalid input: how it is given and the key the error must name.
struct Bad {
    what: &'static str,
    file: Option<&'static str>,
    env: Vec<(&'static str, &'static str)>,
    args: Vec<&'static str>,
    key: &'static str,
}

fn bad_inputs() -> Vec<Bad> {
    let fleet = "[fleet]\nnamespaces = [\"ns-a\"]\n";
    vec![
        Bad {
            what: "config file: concurrency 0",
            file: Some("[fleet]\nnamespaces = [\"ns-a\"]\nconcurrency = 0\n"),
            env: vec![],
            args: vec![],
            key: "fleet.concurrency",
        },
        Bad {
            what: "config file: unknown key (typo)",
            file: Some("[fleet]\nnamespaces = [\"ns-a\"]\nconcurency = 2\n"),
            env: vec![],
            args: vec![],
            key: "concurency",
        },
        Bad {
            what: "config file: bad duration",
            file: Some("[fleet]\nnamespaces = [\"ns-a\"]\n[timeouts]\nrollout = \"ten minutes\"\n"),
            env: vec![],
            args: vec![],
            key: "timeouts.rollout",
        },
        Bad {
            what: "config file: canary outside the fleet",
            file: Some("[fleet]\nnamespaces = [\"ns-a\"]\ncanary = [\"ns-z\"]\n"),
            env: vec![],
            args: vec![],
            key: "fleet.canary",
        },
        Bad {
            what: "config file: bad enum value",
            file: Some("[fleet]\nnamespaces = [\"ns-a\"]\n[migration]\non_gate_failure = \"explode\"\n"),
            env: vec![],
            args: vec![],
            key: "migration.on_gate_failure",
        },
        Bad {
            what: "config file: probe without expectation",
            file: Some(
                "[fleet]\nnamespaces = [\"ns-a\"]\n[[probes]]\nname = \"p\"\nkind = \"http\"\nurl = \"http://app.ns-a/\"\n",
            ),
            env: vec![],
            args: vec![],
            key: "probes[0]",
        },
        Bad {
            what: "config file: job probe without source namespace",
            file: Some(
                "[fleet]\nnamespaces = [\"ns-a\"]\n[[namespaces.ns-a.probes]]\nname = \"p\"\nkind = \"job\"\nurl = \"http://app.ns-a/\"\nexpect = { status = \"200\" }\n",
            ),
            env: vec![],
            args: vec![],
            key: "source_namespace",
        },
        Bad {
            what: "env: concurrency 0",
            file: Some(fleet),
            env: vec![("AMBIENT_MIGRATE_FLEET__CONCURRENCY", "0")],
            args: vec![],
            key: "fleet.concurrency",
        },
        Bad {
            what: "env: not a number",
            file: Some(fleet),
            env: vec![("AMBIENT_MIGRATE_FLEET__MAX_FAILED_NAMESPACES", "many")],
            args: vec![],
            key: "fleet.max_failed_namespaces",
        },
        Bad {
            what: "env: bad duration",
            file: Some(fleet),
            env: vec![("AMBIENT_MIGRATE_TIMEOUTS__ROLLOUT", "soon")],
            args: vec![],
            key: "timeouts.rollout",
        },
        Bad {
            what: "--set: bad duration",
            file: Some(fleet),
            env: vec![],
            args: vec!["--set", "timeouts.waypoint_ready=banana"],
            key: "timeouts.waypoint_ready",
        },
        Bad {
            what: "--set: unknown key",
            file: Some(fleet),
            env: vec![],
            args: vec!["--set", "fleet.concurrencyy=3"],
            key: "fleet.concurrencyy",
        },
        Bad {
            what: "--set: concurrency 0",
            file: Some(fleet),
            env: vec![],
            args: vec!["--set", "fleet.concurrency=0"],
            key: "fleet.concurrency",
        },
        Bad {
            what: "--concurrency 0",
            file: Some(fleet),
            env: vec![],
            args: vec!["--concurrency", "0"],
            key: "fleet.concurrency",
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_input_exits_2_naming_the_key_and_sends_no_request() {
    let fleet = fleet().await;
    fleet.sim().accounting.reset();
    let mut problems = Vec::new();
    for (i, bad) in bad_inputs().into_iter().enumerate() {
        for cmd in ["run", "plan"] {
            let mut args = vec![cmd];
            let cfg;
            if let Some(text) = bad.file {
                cfg = fleet.write_config(&format!("bad-{i}.toml"), text);
                args.push("--config");
                args.push(cfg.to_str().expect("utf-8"));
            }
            args.extend(bad.args.iter().copied());
            let mut c = fleet.command(&args);
            for (k, v) in &bad.env {
                c.env(k, v);
            }
            let out = run_cmd(c, LIMIT).await;
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.code() != Some(2) {
                problems.push(format!(
                    "{} ({cmd}): exit {:?}\n{}",
                    bad.what,
                    out.status.code(),
                    show(&out)
                ));
            } else if !stderr.contains(bad.key) {
                problems.push(format!(
                    "{} ({cmd}): stderr does not name {}:\n{stderr}",
                    bad.what, bad.key
                ));
            } else if stderr.matches("error:").count() != 1 {
                // A failure is printed once, by the one place that ends the process.
                problems.push(format!(
                    "{} ({cmd}): stderr does not carry exactly one error:\n{stderr}",
                    bad.what
                ));
            }
            let total = fleet.sim().accounting.total();
            if total != 0 {
                let log: Vec<String> = fleet
                    .sim()
                    .accounting
                    .log()
                    .iter()
                    .map(|r| format!("{} {} ({})", r.method, r.path, r.user_agent))
                    .collect();
                problems.push(format!(
                    "{} ({cmd}): {total} requests reached the cluster: {log:#?}",
                    bad.what
                ));
                fleet.sim().accounting.reset();
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    assert!(
        !fleet.reports.exists(),
        "no report directory is created for a configuration error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_namespace_that_does_not_exist_exits_2_naming_it_and_writes_nothing() {
    let fleet = fleet().await;
    for cmd in ["run", "plan"] {
        fleet.sim().accounting.reset();
        let out = run_cmd(fleet.command(&[cmd, "-n", "ns-a", "-n", "ns-gone"]), LIMIT).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", show(&out));
        assert!(
            stderr.contains("namespace ns-gone does not exist in the cluster"),
            "{cmd}: {stderr}"
        );
        assert_eq!(stderr.matches("error:").count(), 1, "{cmd}: {stderr}");
        assert_eq!(
            fleet.sim().accounting.mutating_count(|_| true),
            0,
            "{cmd}: nothing is written"
        );
    }
}

/// Which of the fixture's namespaces `plan` planned (its text output has one `namespace X:` line each).
fn planned(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("namespace "))
        .filter_map(|l| l.split(':').next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_layer_overrides_the_previous_one() {
    let fleet = fleet().await;
    // Layer 2 (file) picks ns-a and sets an invalid concurrency that layer 3 (env) repairs.
    let cfg = fleet.write_config(
        "layers.toml",
        "[fleet]\nnamespaces = [\"ns-a\"]\nconcurrency = 0\n",
    );
    let cfg = cfg.to_str().expect("utf-8");
    type Case = (
        &'static str,
        Vec<(&'static str, &'static str)>,
        Vec<&'static str>,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "file",
            vec![("AMBIENT_MIGRATE_FLEET__CONCURRENCY", "3")],
            vec![],
            "ns-a",
        ),
        (
            "env over file",
            vec![
                ("AMBIENT_MIGRATE_FLEET__CONCURRENCY", "3"),
                ("AMBIENT_MIGRATE_FLEET__NAMESPACES", "ns-b"),
            ],
            vec![],
            "ns-b",
        ),
        (
            "flag over env",
            vec![
                ("AMBIENT_MIGRATE_FLEET__CONCURRENCY", "3"),
                ("AMBIENT_MIGRATE_FLEET__NAMESPACES", "ns-b"),
            ],
            vec!["-n", "ns-c"],
            "ns-c",
        ),
        (
            "--set over flag",
            vec![("AMBIENT_MIGRATE_FLEET__NAMESPACES", "ns-b")],
            vec![
                "-n",
                "ns-c",
                "--concurrency",
                "2",
                "--set",
                "fleet.namespaces=ns-d",
            ],
            "ns-d",
        ),
    ];
    for (what, env, flags, want) in cases {
        let mut args = vec!["plan", "--config", cfg];
        args.extend(flags);
        let mut c = fleet.command(&args);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = run_cmd(c, LIMIT).await;
        assert_eq!(out.status.code(), Some(0), "{what}: {}", show(&out));
        let got = planned(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(got, vec![want.to_string()], "{what}: {}", show(&out));
    }
    // Layer 1 (built-in defaults) is below the file: without the env repair the file's 0 wins and fails.
    let out = fleet.run(&["plan", "--config", cfg], LIMIT).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let writes = fleet.product_log().iter().filter(|r| r.is_mutating()).count();
    assert_eq!(writes, 0, "plan writes nothing");
}

/// `plan` reads the fleet as `run` does: one list per kind for the whole fleet, whatever its size, and
/// no read of its own per namespace; what it prints does not depend on how the fleet was read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_reads_each_kind_once_for_the_whole_fleet() {
    let fleet = fleet().await;
    let mut lists = Vec::new();
    let mut planned_namespaces = Vec::new();
    for namespaces in [vec!["ns-a"], vec!["ns-a", "ns-b", "ns-c", "ns-d"]] {
        let cfg = fleet.write_config("plan.toml", &fleet_config(&namespaces, &[], 2, 4, ""));
        fleet.sim().accounting.reset();
        let out = fleet
            .run(&["plan", "--config", cfg.to_str().expect("utf-8")], LIMIT)
            .await;
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let log = fleet.product_log();
        let per_namespace: Vec<String> = log
            .iter()
            .filter(|r| r.namespace.as_deref().is_some_and(|n| n.starts_with("ns-")))
            .map(|r| format!("{} {}", r.verb, r.path))
            .collect();
        assert!(
            per_namespace.is_empty(),
            "reads of single namespaces: {per_namespace:#?}"
        );
        assert!(
            log.iter()
                .all(|r| !r.is_mutating() || r.resource.ends_with("accessreviews"))
        );
        lists.push(log.iter().filter(|r| r.verb == "list").count());
        planned_namespaces.push(planned(&String::from_utf8_lossy(&out.stdout)));
    }
    assert_eq!(lists[0], lists[1], "lists for 1 and for 4 namespaces");
    assert_eq!(planned_namespaces[1], vec!["ns-a", "ns-b", "ns-c", "ns-d"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_the_whole_scenario_and_exits_0() {
    let dir = tempfile::tempdir().expect("temp dir");
    let reports = dir.path().join("reports");
    let mut c = tokio::process::Command::new(test_support::bin());
    c.args(["demo", "--report-dir"])
        .arg(&reports)
        .env_remove("GITHUB_STEP_SUMMARY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let out = run_cmd(c, Duration::from_secs(85)).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = std::fs::read_to_string(reports.join("ambient-migrate-report.json")).expect("report");
    let report: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let outcomes = outcomes_of(&report);
    for (ns, want) in ambient_migrate::demo::EXPECTED {
        assert_eq!(
            outcomes.get(*ns).map(String::as_str),
            Some(want.as_str()),
            "{ns}: {outcomes:?}"
        );
    }
    assert_eq!(outcomes.len(), ambient_migrate::demo::EXPECTED.len());
    assert_eq!(
        report["exit_code"], 1,
        "the run inside the demo rolled payments back"
    );
    for ns in ["canary", "shop", "orders", "payments", "inventory"] {
        assert!(
            reports
                .join("backups")
                .join(format!("backup-{ns}.yaml"))
                .is_file(),
            "backup of {ns}"
        );
    }
    assert_report_matches_schema(&reports);
    check_junit(&reports);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("demo outcome as expected"), "{}", show(&out));
}
