//! Configuration layering and validation: defaults < file (TOML or YAML) < environment < command line, and
//! every invalid input refused with an error naming the key path and the fix.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use ambient_migrate::cli::Cli;
use ambient_migrate::settings::{
    LoadOptions, OnGateFailure, Settings, SettingsError, WaypointActivation, WaypointScope,
};

fn file(ext: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("config.{ext}"));
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    (dir, path)
}

fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn load(
    config_file: Option<PathBuf>,
    e: &[(&str, &str)],
    cli: &[(&str, &str)],
) -> Result<Settings, SettingsError> {
    Settings::load(LoadOptions {
        config_file,
        env: env(e),
        cli_overrides: cli.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    })
}

/// The single problem of a refused configuration, as a string.
fn one_problem(r: Result<Settings, SettingsError>) -> String {
    let e = r.expect_err("configuration should be refused");
    assert_eq!(e.exit_code(), 2);
    let p = e.problems();
    assert!(!p.is_empty(), "expected problems, got {e}");
    e.to_string()
}

const TOML: &str = r#"
[fleet]
namespaces = ["shop", "payments", "web"]
canary = ["web"]
concurrency = 3

[timeouts]
rollout = "12m"

[migration]
on_gate_failure = "hold"
"#;

#[test]
fn each_layer_overrides_the_previous() {
    // defaults only
    let s = load(None, &[], &[]).unwrap();
    assert_eq!(s.fleet.concurrency, 2);
    assert_eq!(s.timeouts.rollout, Duration::from_secs(600));
    assert_eq!(s.migration.on_gate_failure, OnGateFailure::Rollback);

    // file over defaults
    let (_d, path) = file("toml", TOML);
    let s = load(Some(path.clone()), &[], &[]).unwrap();
    assert_eq!(s.fleet.concurrency, 3);
    assert_eq!(s.fleet.namespaces, ["shop", "payments", "web"]);
    assert_eq!(s.timeouts.rollout, Duration::from_secs(720));
    assert_eq!(s.migration.on_gate_failure, OnGateFailure::Hold);
    // untouched keys keep their defaults
    assert_eq!(s.timeouts.step, Duration::from_secs(900));

    // environment over file
    let e = [
        ("AMBIENT_MIGRATE_FLEET__CONCURRENCY", "4"),
        ("AMBIENT_MIGRATE_TIMEOUTS__ROLLOUT", "90s"),
        ("AMBIENT_MIGRATE_FLEET__NAMESPACES", "shop, web"),
        ("AMBIENT_MIGRATE_CONFIG", "/ignored/by/settings.toml"),
        ("UNRELATED", "x"),
    ];
    let s = load(Some(path.clone()), &e, &[]).unwrap();
    assert_eq!(s.fleet.concurrency, 4);
    assert_eq!(s.timeouts.rollout, Duration::from_secs(90));
    assert_eq!(s.fleet.namespaces, ["shop", "web"]);
    assert_eq!(s.migration.on_gate_failure, OnGateFailure::Hold);

    // command line over environment
    let s = load(
        Some(path),
        &e,
        &[
            ("fleet.concurrency", "5"),
            ("migration.on_gate_failure", "rollback"),
        ],
    )
    .unwrap();
    assert_eq!(s.fleet.concurrency, 5);
    assert_eq!(s.migration.on_gate_failure, OnGateFailure::Rollback);
    assert_eq!(s.timeouts.rollout, Duration::from_secs(90));
}

#[test]
fn yaml_file_is_read_like_toml() {
    let yaml = r#"
fleet:
  namespaces: [shop, payments]
  canary: [shop]
  concurrency: 7
migration:
  waypoint:
    activation: after-restart
timeouts:
  waypoint_ready: 45s
namespaces:
  payments:
    migration:
      waypoint:
        scope: services
        services: [ledger]
      restart:
        statefulsets: true
"#;
    let (_d, path) = file("yaml", yaml);
    let s = load(Some(path), &[], &[]).unwrap();
    assert_eq!(s.fleet.concurrency, 7);
    assert_eq!(s.migration.waypoint.activation, WaypointActivation::AfterRestart);
    assert_eq!(s.timeouts.waypoint_ready, Duration::from_secs(45));
    let p = s.for_namespace("payments");
    assert_eq!(p.migration.waypoint.scope, WaypointScope::Services);
    assert_eq!(p.migration.waypoint.services, ["ledger"]);
    assert!(p.migration.restart.statefulsets);
    assert!(
        p.migration.restart.deployments,
        "not overridden keys keep the global value"
    );
    assert!(!p.canary);
    let shop = s.for_namespace("shop");
    assert!(shop.canary);
    assert_eq!(shop.migration.waypoint.scope, WaypointScope::Namespace);
}

#[test]
fn cli_flags_are_the_top_layer() {
    let cli = Cli::try_parse_checked([
        "ambient-migrate",
        "run",
        "-n",
        "a,b",
        "--canary",
        "a",
        "--concurrency",
        "9",
        "--set",
        "timeouts.step=20m",
        "--report-dir",
        "out/reports",
    ])
    .unwrap();
    let s = Settings::load(LoadOptions {
        config_file: None,
        env: env(&[("AMBIENT_MIGRATE_FLEET__CONCURRENCY", "4")]),
        cli_overrides: cli.to_overrides(),
    })
    .unwrap();
    assert_eq!(s.fleet.namespaces, ["a", "b"]);
    assert_eq!(s.fleet.canary, ["a"]);
    assert_eq!(s.fleet.concurrency, 9);
    assert_eq!(s.timeouts.step, Duration::from_secs(1200));
    assert_eq!(s.reports.dir, PathBuf::from("out/reports"));
}

#[test]
fn unknown_keys_are_refused_with_their_path() {
    let (_d, path) = file("toml", "[fleet]\nconcurency = 3\n");
    let msg = one_problem(load(Some(path), &[], &[]));
    assert!(msg.contains("fleet.concurency: unknown setting"), "{msg}");
    assert!(msg.contains("concurrency"), "the fix lists the known keys: {msg}");

    let (_d, path) = file("toml", "colour = \"blue\"\n");
    let msg = one_problem(load(Some(path), &[], &[]));
    assert!(msg.contains("colour: unknown setting"), "{msg}");

    let msg = one_problem(load(None, &[("AMBIENT_MIGRATE_TIMEOUTS__ROLOUT", "5m")], &[]));
    assert!(msg.contains("timeouts.rolout: unknown setting"), "{msg}");

    let msg = one_problem(load(
        None,
        &[],
        &[("namespaces.shop.migration.waypoint.nam", "wp")],
    ));
    assert!(
        msg.contains("namespaces.shop.migration.waypoint.nam: unknown setting"),
        "{msg}"
    );
}

#[test]
fn bad_values_name_the_key_and_the_value() {
    let msg = one_problem(load(None, &[], &[("timeouts.rollout", "10 fortnights")]));
    assert!(msg.contains("timeouts.rollout"), "{msg}");
    assert!(msg.contains("invalid duration \"10 fortnights\""), "{msg}");

    let msg = one_problem(load(None, &[("AMBIENT_MIGRATE_FLEET__CONCURRENCY", "x")], &[]));
    assert!(msg.contains("fleet.concurrency: invalid value"), "{msg}");
    assert!(msg.contains("\"x\"") || msg.contains("x"), "{msg}");
    assert!(
        msg.contains("AMBIENT_MIGRATE_FLEET__CONCURRENCY"),
        "names where the value came from: {msg}"
    );

    let msg = one_problem(load(None, &[], &[("fleet.concurrency", "0")]));
    assert!(
        msg.contains("fleet.concurrency: invalid value 0: expected a positive integer"),
        "{msg}"
    );

    let msg = one_problem(load(None, &[], &[("migration.on_gate_failure", "panic")]));
    assert!(msg.contains("migration.on_gate_failure"), "{msg}");
    assert!(msg.contains("\"rollback\", \"hold\""), "{msg}");
}

#[test]
fn canary_must_be_in_the_fleet() {
    let msg = one_problem(load(
        None,
        &[],
        &[("fleet.namespaces", "shop,web"), ("fleet.canary", "payments")],
    ));
    assert!(
        msg.contains("fleet.canary[0]: canary \"payments\" is not in the fleet"),
        "{msg}"
    );
    // with a selector and no list, canaries cannot be checked until the selector is resolved
    assert!(
        load(
            None,
            &[],
            &[("fleet.selector", "wave=1"), ("fleet.canary", "payments")]
        )
        .is_ok()
    );
}

#[test]
fn probe_without_expectation_is_refused() {
    let toml = r#"
[fleet]
namespaces = ["shop"]

[[namespaces.shop.probes]]
name = "api"
url = "http://api.shop.svc.cluster.local/health"
"#;
    let (_d, path) = file("toml", toml);
    let msg = one_problem(load(Some(path), &[], &[]));
    assert!(
        msg.contains("namespaces.shop.probes[0]: probe \"api\" has no expectation"),
        "{msg}"
    );
    assert!(msg.contains("expect.status"), "{msg}");
}

#[test]
fn several_problems_are_reported_together() {
    let e = load(
        None,
        &[],
        &[("fleet.concurrency", "0"), ("migration.restart.batch_size", "0")],
    )
    .unwrap_err();
    let keys: Vec<&str> = e.problems().iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"fleet.concurrency"), "{keys:?}");
    assert!(keys.contains(&"migration.restart.batch_size"), "{keys:?}");
}

#[test]
fn bad_files_are_refused() {
    let (_d, path) = file("toml", "[fleet\nnamespaces = 3");
    let e = load(Some(path.clone()), &[], &[]).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    let (_d, path) = file("ini", "a=b");
    let e = load(Some(path), &[], &[]).unwrap_err();
    assert!(e.to_string().contains("unsupported extension"), "{e}");
    let e = load(Some(PathBuf::from("/nonexistent/x.toml")), &[], &[]).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/x.toml"), "{e}");
}

#[test]
fn shipped_examples_are_valid() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if let Err(e) = load(Some(path.clone()), &[], &[]) {
            panic!("{} is invalid: {e}", path.display());
        }
        n += 1;
    }
    assert!(
        n >= 2,
        "expected the canary-first and per-Service waypoint examples"
    );
}

#[test]
fn probes_are_typed_and_merged_per_namespace() {
    use ambient_migrate::probes::spec::ProbeKind;
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/examples/canary-first-fleet.toml");
    let s = load(Some(path), &[], &[]).unwrap();
    assert_eq!(s.probes.len(), 1);
    let web = s.for_namespace("web");
    assert_eq!(web.probes.len(), 1, "global probes only");
    let pay = s.for_namespace("payments");
    assert_eq!(pay.probes.len(), 2, "global + the namespace's own");
    assert_eq!(pay.migration.on_gate_failure, OnGateFailure::Hold);
    assert_eq!(web.migration.on_gate_failure, OnGateFailure::Rollback);
    let job = &pay.probes[1];
    assert_eq!(job.name, "ledger-delete-denied");
    assert!(job.l7);
    assert!(job.expect.status.accepts(403) && !job.expect.status.accepts(200));
    match &job.kind {
        ProbeKind::Job(j) => {
            assert_eq!(j.source_namespace, "web");
            assert_eq!(j.method, "DELETE");
        }
        other => panic!("expected a job probe, got {other:?}"),
    }
    assert_eq!(s.probes[0].policy.count, Some(5));
    assert_eq!(s.probes[0].policy.interval.0, Duration::from_secs(2));
}

#[test]
fn probe_keys_are_checked() {
    let toml = r#"
[[probes]]
name = "a"
kind = "http"
url = "http://api.shop/x"
timout = "5s"
expect = { status = 200, bodycontains = "ok" }
"#;
    let (_d, path) = file("toml", toml);
    let e = load(Some(path), &[], &[]).unwrap_err();
    let keys: Vec<&str> = e.problems().iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"probes[0].timout"), "{e}");
    assert!(keys.contains(&"probes[0].expect.bodycontains"), "{e}");

    let toml = r#"
[[probes]]
name = "a"
kind = "http"
url = "http://api.shop/x"
expect = { status = 200 }

[[namespaces.shop.probes]]
name = "a"
kind = "http"
url = "http://api.shop/y"
expect = { status = 200 }
"#;
    let (_d, path) = file("toml", toml);
    let msg = one_problem(load(Some(path), &[], &[]));
    assert!(
        msg.contains("namespaces.shop.probes[0].name: probe name \"a\" is used twice"),
        "{msg}"
    );
}

#[test]
fn plan_options_follow_the_namespace_settings() {
    use ambient_migrate::assess::plan::{ActivationOrder, WaypointScope as PlanScope};
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/examples/per-service-waypoint.yaml");
    let s = load(Some(path), &[], &[]).unwrap();
    let o = s.for_namespace("payments").plan_options();
    assert_eq!(o.waypoint_name, "payments-waypoint");
    assert_eq!(
        o.waypoint_scope,
        PlanScope::Services(vec!["ledger".into(), "cards".into()])
    );
    assert_eq!(o.activation_order, ActivationOrder::BeforeAmbient);
    assert!(o.restart_kinds.statefulsets);
    assert_eq!(o.batch_size, 2);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/examples/canary-first-fleet.toml");
    let s = load(Some(path), &[], &[]).unwrap();
    assert_eq!(
        s.for_namespace("payments").plan_options().extra_callers,
        ["web"],
        "from the job probe's source"
    );
}

#[test]
fn shipped_ci_configs_are_valid() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    load(Some(root.join("ci/fleet.toml")), &[], &[]).unwrap();
    // the config embedded in the CronJob's ConfigMap
    let cm: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(root.join("ci/k8s/configmap.yaml")).unwrap())
            .unwrap();
    let text = cm["data"]["config.toml"].as_str().expect("data.config.toml");
    let (_d, path) = file("toml", text);
    let s = load(Some(path), &[], &[]).unwrap();
    assert_eq!(s.reports.dir, PathBuf::from("/reports"));
}

#[test]
fn accepted_losses_are_typed_merged_per_namespace_and_checked() {
    use ambient_migrate::assess::sidecar_only::Loss;
    let (_d, path) = file(
        "toml",
        "[migration]\naccept_loss = [\"egress-lockdown\"]\n[namespaces.shop.migration]\naccept_loss = [\"jwt-validation\", \"envoyfilter-auth\"]\n",
    );
    let s = load(Some(path), &[], &[]).unwrap();
    assert_eq!(
        s.for_namespace("web").plan_options().accept_loss,
        vec![Loss::EgressLockdown]
    );
    assert_eq!(
        s.for_namespace("shop").plan_options().accept_loss,
        vec![Loss::JwtValidation, Loss::EnvoyfilterAuth]
    );
    assert!(Settings::defaults().migration.accept_loss.is_empty());
    // Lists from the environment and the command line are comma separated.
    let s = load(
        None,
        &[(
            "AMBIENT_MIGRATE_MIGRATION__ACCEPT_LOSS",
            "wasm-auth,egress-lockdown",
        )],
        &[],
    )
    .unwrap();
    assert_eq!(
        s.for_namespace("x").plan_options().accept_loss,
        vec![Loss::WasmAuth, Loss::EgressLockdown]
    );
    // An unknown value: exit 2, the key, the value and the accepted values named.
    let msg = one_problem(load(None, &[], &[("migration.accept_loss", "egress")]));
    assert!(msg.contains("accept_loss"), "{msg}");
    assert!(msg.contains("\"egress\""), "{msg}");
    assert!(
        msg.contains("\"egress-lockdown\"") && msg.contains("\"jwt-validation\""),
        "{msg}"
    );
}
