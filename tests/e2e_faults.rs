//! End-to-end acceptance (issue 3): for each step 1-5, a meshsim fault that fails that step's gate ends the
//! run with exit 1 and the namespace RolledBack: labels, policies and routes identical to the backup (the
//! file the run wrote and the state before the run), every workload pod with a ready sidecar.
//!
//! Each fault's trigger is chosen so that it no longer holds once the rollback has restored the labels
//! (rollback order: reverse; the injection label is restored before the restart), so the rollback itself
//! can succeed and be verified.

mod e2e_common;

use e2e_common::*;
use meshsim::{FaultKind, FaultSpec};

/// `web` answers 503 once `shop` carries the ambient label: step 2's probes fail (a rollback, removing the
/// label, ends the fault).
fn web_fails_when_ambient() -> FaultSpec {
    let mut f = fault(
        FaultKind::ServiceErrors,
        "shop",
        Some("istio.io/dataplane-mode=ambient"),
    );
    f.service = Some("web".into());
    f
}

/// The seed namespace, ready, with [`web_fails_when_ambient`]; a config named `name` with the seed's
/// probes, a 3 s step and `extra` appended.
async fn shop_failing_at_step2(name: &str, extra: &str) -> (Env, std::path::PathBuf) {
    let env = start(&[SEED], vec![web_fails_when_ambient()]).await;
    env.wait_ready("shop").await;
    let mut cfg = Cfg::new(&["shop"]).probes("shop", &seed_probes("shop", &env.proxy()));
    cfg.step = "3s";
    cfg.extra = extra.into();
    let config = env.write_config(name, &cfg.toml());
    (env, config)
}

/// The writes (mutating requests) sent after the first `from`, the fleet Lease's left out.
fn writes_since(env: &Env, from: usize) -> Vec<String> {
    env.mutating_requests()[from..]
        .iter()
        .filter(|w| !w.contains("leases"))
        .cloned()
        .collect()
}

/// Runs the seed namespace (plus `extra` fixture documents) with `faults`, expecting the gate of `step` to
/// fail and the rollback to restore the namespace exactly.
async fn fails_at_and_rolls_back(
    step: &str,
    faults: Vec<FaultSpec>,
    extra: &str,
    tweak: impl FnOnce(&mut Cfg),
    waypoint_ready_before: bool,
) -> Output {
    let fixture = format!("{SEED}\n---\n{extra}");
    let fixtures: Vec<&str> = if extra.is_empty() {
        vec![SEED]
    } else {
        vec![fixture.as_str()]
    };
    let env = start(&fixtures, faults).await;
    env.wait_ready_opts("shop", waypoint_ready_before).await;
    let before = env.config_dump("shop");
    let mut cfg = Cfg::new(&["shop"]).probes("shop", &seed_probes("shop", &env.proxy()));
    tweak(&mut cfg);
    let config = env.write_config(step, &cfg.toml());

    let out = env.run(&config, step, &["run"]).await;
    assert_eq!(out.code, 1, "a failed gate + verified rollback is exit 1\n{out}");
    let nsr = out.ns_report("shop");
    assert_eq!(nsr["outcome"], "rolled-back", "{nsr}");
    assert_eq!(
        nsr["rollback"]["from"], step,
        "the gate of step {step} failed\n{out}"
    );
    assert_eq!(nsr["rollback"]["outcome"], "verified", "{nsr}");
    let failed: Vec<&serde_json::Value> = nsr["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["outcome"] != "pass")
        .collect();
    assert_eq!(failed.len(), 1, "exactly one step failed: {nsr}");
    assert_eq!(failed[0]["step"], step, "{nsr}");
    assert_eq!(env.journal_phase("shop").as_deref(), Some("rolled-back"));
    env.assert_rolled_back("shop", &before, &out.backup_file("shop"));
    // The in-cluster backup is still there (a rerun compares against it).
    assert!(
        env.store()
            .get(meshsim::resources::core("configmaps"), STATE_NS, "backup-shop")
            .is_some()
    );
    out
}

/// Step 1: the waypoint never becomes ready (Programmed False, pod unready) -> waypoint gate times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step1_waypoint_never_ready_rolls_back() {
    let out = fails_at_and_rolls_back(
        "activate-waypoint",
        vec![fault(FaultKind::WaypointNeverReady, "shop", None)],
        "",
        |c| c.waypoint_ready = "2s",
        false,
    )
    .await;
    assert!(out.stdout.contains("waypoint"), "{out}");
}

/// `timeouts.step` is a hard limit: with the waypoint never ready, a 60 s waypoint timeout still ends
/// the step after the 3 s step limit, and the namespace rolls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_limit_ends_a_longer_gate_wait() {
    let t0 = std::time::Instant::now();
    let out = fails_at_and_rolls_back(
        "activate-waypoint",
        vec![fault(FaultKind::WaypointNeverReady, "shop", None)],
        "",
        |c| {
            c.waypoint_ready = "60s";
            c.step = "3s";
        },
        false,
    )
    .await;
    // Well under the 60 s the waypoint gate alone would have waited (setup and rollback included).
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(30),
        "the step ran past its limit: {:?}\n{out}",
        t0.elapsed()
    );
    assert!(out.stdout.contains("step 1 gate failed: waypoint-ready"), "{out}");
}

/// Step 2: the `web` application answers 503 once the namespace is ambient -> step 2's probes fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step2_service_errors_when_ambient_rolls_back() {
    fails_at_and_rolls_back(
        "enable-ambient",
        vec![web_fails_when_ambient()],
        "",
        |c| c.step = "3s",
        true,
    )
    .await;
}

/// Step 3: `web` answers 503 once the injection label is gone -> step 3's probes fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step3_service_errors_without_injection_rolls_back() {
    let mut f = fault(FaultKind::ServiceErrors, "shop", Some("!istio-injection"));
    f.service = Some("web".into());
    fails_at_and_rolls_back("remove-injection", vec![f], "", |c| c.step = "3s", true).await;
}

/// Step 4: istio-cni leaves new pods `pending` (not redirected) -> the pods-ambient gate fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step4_cni_pending_rolls_back() {
    let f = fault(FaultKind::CniPending, "shop", Some("!istio-injection"));
    fails_at_and_rolls_back("restart", vec![f], "", |c| c.rollout = "3s", true).await;
}

/// Step 4: pods created after the restart crash-loop -> the rollout gate fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step4_crashloop_after_restart_rolls_back() {
    let f = fault(
        FaultKind::PodsCrashloopAfterRestart,
        "shop",
        Some("!istio-injection"),
    );
    fails_at_and_rolls_back("restart", vec![f], "", |c| c.rollout = "3s", true).await;
}

/// Step 5: a second targetRefs policy at the waypoint also allows DELETE from web, so once the sidecar
/// policy is gone the L7 probe "DELETE must get 403" gets 200 -> step 5's L7 gate fails. (On sidecars the
/// targetRefs policy does not apply, so the rollback's probes see 403 again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step5_l7_probe_allowed_rolls_back() {
    let extra = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: api-allow-web-delete-waypoint, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: api}]
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/web"]}}]
    to: [{operation: {methods: ["DELETE"]}}]
"#;
    let out =
        fails_at_and_rolls_back("remove-sidecar-policies", vec![], extra, |c| c.step = "3s", true).await;
    assert!(
        out.stdout.contains("web-delete-api-denied"),
        "the failing probe is named\n{out}"
    );
}

/// `on_gate_failure = "hold"`: step 2's gate fails, the namespace is left as it is (Held, exit 1); an
/// operator's `rollback -n` then restores it to the backup with ready sidecars.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_leaves_the_namespace_then_operator_rollback_restores_it() {
    let (env, config) = shop_failing_at_step2("hold", "[migration]\non_gate_failure = \"hold\"\n").await;
    let before = env.config_dump("shop");

    let out = env.run(&config, "hold", &["run"]).await;
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(out.ns_report("shop")["outcome"], "held", "{out}");
    assert_eq!(env.journal_phase("shop").as_deref(), Some("held:enable-ambient"));
    let labels = env.ns_labels("shop");
    assert_eq!(
        labels.get("istio.io/dataplane-mode").map(String::as_str),
        Some("ambient"),
        "left as it was"
    );
    // A rerun does not touch a held namespace.
    let again = env.run(&config, "again", &["run"]).await;
    assert_eq!(again.code, 1, "{again}");
    assert_eq!(env.journal_phase("shop").as_deref(), Some("held:enable-ambient"));

    let rb = env.run(&config, "rollback", &["rollback", "-n", "shop"]).await;
    assert_eq!(rb.code, 0, "{rb}");
    env.assert_rolled_back("shop", &before, &out.backup_file("shop"));
    assert_eq!(env.journal_phase("shop").as_deref(), Some("rolled-back"));

    // The same rollback again (a CI retry): nothing to do, exit 0, and no write but the Lease's.
    let writes_before = env.mutating_requests().len();
    let again = env
        .run(&config, "rollback-again", &["rollback", "-n", "shop"])
        .await;
    assert_eq!(again.code, 0, "{again}");
    assert!(again.stdout.contains("nothing to roll back"), "{again}");
    let writes = writes_since(&env, writes_before);
    assert!(writes.is_empty(), "a repeated rollback wrote {writes:?}");
    env.assert_rolled_back("shop", &before, &out.backup_file("shop"));
}

/// After a rollback, the operator changes the namespace's config and runs again: the new attempt backs up
/// the config as it is now (not the first attempt's backup), so a second rollback keeps the operator's
/// change instead of reverting it (or failing its verification).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_rollback_backs_up_the_current_config() {
    let env = start(&[SEED], vec![web_fails_when_ambient()]).await;
    env.wait_ready("shop").await;
    let mut cfg = Cfg::new(&["shop"]).probes("shop", &seed_probes("shop", &env.proxy()));
    cfg.step = "3s";
    let config = env.write_config("retry", &cfg.toml());
    let first = env.run(&config, "first", &["run"]).await;
    assert_eq!(first.code, 1, "{first}");

    // The operator's change between the attempts: the L4 policy also admits web.
    let ap = meshsim::resources::id("security.istio.io", "authorizationpolicies");
    env.edit(ap, "shop", "db-allow-api", |o| {
        o["spec"]["rules"][0]["from"][0]["source"]["principals"]
            .as_array_mut()
            .expect("principals")
            .push("cluster.local/ns/shop/sa/web".into());
    });
    let before = env.config_dump("shop");

    let second = env.run(&config, "second", &["run"]).await;
    assert_eq!(second.code, 1, "{second}");
    assert_eq!(second.ns_report("shop")["outcome"], "rolled-back", "{second}");
    env.assert_rolled_back("shop", &before, &second.backup_file("shop"));
    let cm = env
        .store()
        .get(meshsim::resources::core("configmaps"), STATE_NS, "backup-shop")
        .expect("backup ConfigMap");
    let stored = env.dir.path().join("stored-backup.yaml");
    std::fs::write(&stored, cm["data"]["backup.yaml"].as_str().expect("yaml")).expect("write");
    assert_eq!(
        backup_dump(&stored)["objects"],
        before["objects"],
        "the in-cluster backup holds the operator's change"
    );
}

const BRIDGE: &str = "api-allow-web-get-bridge-waypoint";

fn authz() -> meshsim::resources::ResId {
    meshsim::resources::id("security.istio.io", "authorizationpolicies")
}

/// A bridge that already exists before the run (applied by hand from `plan --fixes-dir`) is adopted, not
/// created: the rollback after a failed gate leaves it in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_bridge_survives_the_rollback() {
    let env = start(&[SEED], vec![web_fails_when_ambient()]).await;
    env.wait_ready("shop").await;
    let by_hand = serde_json::json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": BRIDGE, "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "api"}}, "action": "ALLOW",
                 "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/waypoint"]}}]}]}
    });
    env.store()
        .create(authz(), by_hand, &meshsim::store::WriteOpts::default())
        .expect("operator applies the bridge");
    let before = env.config_dump("shop");
    let mut cfg = Cfg::new(&["shop"]).probes("shop", &seed_probes("shop", &env.proxy()));
    cfg.step = "3s";
    let config = env.write_config("adopt", &cfg.toml());
    let out = env.run(&config, "run", &["run"]).await;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stdout.contains("already exists"), "{out}");
    assert!(env.exists("security.istio.io", "authorizationpolicies", "shop", BRIDGE));
    env.assert_rolled_back("shop", &before, &out.backup_file("shop"));
}

/// A bridge the migration created and an operator edited afterwards is a conflict for the rollback (kept,
/// exit 3, `--force` named); `rollback --force` deletes it and the namespace equals its backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_bridge_is_a_rollback_conflict_unless_forced() {
    let (env, config) =
        shop_failing_at_step2("edit-bridge", "[migration]\non_gate_failure = \"hold\"\n").await;
    let before = env.config_dump("shop");
    let out = env.run(&config, "hold", &["run"]).await;
    assert_eq!(out.code, 1, "{out}");
    assert!(env.exists("security.istio.io", "authorizationpolicies", "shop", BRIDGE));

    env.edit(authz(), "shop", BRIDGE, |o| {
        o["spec"]["rules"][0]["from"][0]["source"]["principals"]
            .as_array_mut()
            .expect("principals")
            .push("cluster.local/ns/shop/sa/web".into());
    });

    let rb = env.run(&config, "rollback", &["rollback", "-n", "shop"]).await;
    assert_eq!(rb.code, 3, "{rb}");
    let text = format!("{}{}", rb.stdout, rb.stderr);
    assert!(
        text.contains("was changed since") && text.contains("--force"),
        "{rb}"
    );
    assert!(env.exists("security.istio.io", "authorizationpolicies", "shop", BRIDGE));

    let forced = env
        .run(&config, "rollback-force", &["rollback", "-n", "shop", "--force"])
        .await;
    assert_eq!(forced.code, 0, "{forced}");
    assert!(!env.exists("security.istio.io", "authorizationpolicies", "shop", BRIDGE));
    env.assert_rolled_back("shop", &before, &out.backup_file("shop"));
}

/// A backup stored before this attempt (an old tool's `backup -n`, a leftover after a journal was
/// deleted) is stale: the run backs up the live namespace before its first mutation, so the rollback
/// restores the state the run found, not the stale one. `backup -n` itself writes nothing to the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_stored_backup_is_never_the_truth() {
    let env = start(&[SEED], vec![web_fails_when_ambient()]).await;
    env.wait_ready("shop").await;
    let stale_policy = serde_json::json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "gone-since", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "db"}}, "action": "DENY",
                 "rules": [{"from": [{"source": {"namespaces": ["nowhere"]}}]}]}
    });
    env.store()
        .create(authz(), stale_policy, &meshsim::store::WriteOpts::default())
        .expect("policy");
    let mut cfg = Cfg::new(&["shop"]).probes("shop", &seed_probes("shop", &env.proxy()));
    cfg.step = "3s";
    let config = env.write_config("stale", &cfg.toml());
    let file = env.dir.path().join("month-old.yaml");
    let writes = env.mutating_requests().len();
    let b = env
        .run(
            &config,
            "backup",
            &["backup", "-n", "shop", "-o", file.to_str().expect("utf-8")],
        )
        .await;
    assert_eq!(b.code, 0, "{b}");
    let wrote: Vec<String> = env.mutating_requests()[writes..].to_vec();
    assert!(wrote.is_empty(), "`backup -n` wrote to the cluster: {wrote:?}");

    // That month-old backup sits in the cluster as if stored, then the policy goes away.
    let _ = env.store().create(
        meshsim::resources::core("namespaces"),
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": STATE_NS}}),
        &meshsim::store::WriteOpts::default(),
    );
    env.store()
        .create(
            meshsim::resources::core("configmaps"),
            serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "backup-shop", "namespace": STATE_NS,
                             "labels": {"app.kubernetes.io/managed-by": "ambient-migrate"}},
                "data": {"backup.yaml": std::fs::read_to_string(&file).expect("backup file")}
            }),
            &meshsim::store::WriteOpts::default(),
        )
        .expect("stale backup stored");
    env.store()
        .delete(
            authz(),
            "shop",
            "gone-since",
            meshsim::store::Propagation::Background,
            false,
            None,
        )
        .expect("operator deletes the policy");
    let before = env.config_dump("shop");

    let out = env.run(&config, "run", &["run"]).await;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        !env.exists("security.istio.io", "authorizationpolicies", "shop", "gone-since"),
        "the rollback restored the stale backup"
    );
    env.assert_rolled_back("shop", &before, &out.backup_file("shop"));
}

/// The backup a migration started from goes missing mid-way: the rollback refuses (exit 3) naming the
/// file to restore from, and does not treat the half-migrated live state as the backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_backup_mid_migration_stops_the_rollback_with_the_fix() {
    let (env, config) = shop_failing_at_step2("lost", "[migration]\non_gate_failure = \"hold\"\n").await;
    let out = env.run(&config, "hold", &["run"]).await;
    assert_eq!(out.code, 1, "{out}");
    env.store()
        .delete(
            meshsim::resources::core("configmaps"),
            STATE_NS,
            "backup-shop",
            meshsim::store::Propagation::Background,
            false,
            None,
        )
        .expect("backup lost");
    let writes = env.mutating_requests().len();
    let rb = env.run(&config, "rollback", &["rollback", "-n", "shop"]).await;
    assert_eq!(rb.code, 3, "{rb}");
    let text = format!("{}{}", rb.stdout, rb.stderr);
    assert!(
        text.contains("is missing from ConfigMap") && text.contains("backup-shop.yaml"),
        "{rb}"
    );
    let wrote = writes_since(&env, writes);
    assert!(
        wrote.is_empty(),
        "nothing may be written without the backup: {wrote:?}"
    );
    assert!(
        env.store()
            .get(meshsim::resources::core("configmaps"), STATE_NS, "backup-shop")
            .is_none(),
        "the live state must not be stored as the backup"
    );
}

/// A journal edited to reach outside its namespace (here: a label change on kube-system) is refused before
/// anything acts on it: the rollback exits 3 naming the entry, and kube-system keeps its labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_journal_is_refused_before_the_rollback_acts() {
    let (env, config) = shop_failing_at_step2("tamper", "[migration]\non_gate_failure = \"hold\"\n").await;
    let out = env.run(&config, "hold", &["run"]).await;
    assert_eq!(out.code, 1, "{out}");
    let cms = meshsim::resources::core("configmaps");
    env.edit(cms, STATE_NS, "journal-shop", |o| {
        let mut j: serde_json::Value =
            serde_json::from_str(o["data"]["journal.json"].as_str().expect("journal")).expect("json");
        j["changes"]
            .as_array_mut()
            .expect("changes")
            .push(serde_json::json!({
                "type": "label", "step": "enable-ambient",
                "target": {"apiVersion": "v1", "kind": "Namespace", "name": "kube-system"},
                "key": "istio-injection", "before": null, "after": "enabled"
            }));
        o["data"]["journal.json"] = j.to_string().into();
    });
    let writes = env.mutating_requests().len();
    let rb = env.run(&config, "rollback", &["rollback", "-n", "shop"]).await;
    assert_eq!(rb.code, 3, "{rb}");
    let text = format!("{}{}", rb.stdout, rb.stderr);
    assert!(
        text.contains("is not a valid journal") && text.contains("kube-system"),
        "{rb}"
    );
    let wrote = writes_since(&env, writes);
    assert!(wrote.is_empty(), "{wrote:?}");
}

/// The waypoint gate is watch-driven: while it waits (the waypoint never becomes ready), the runner sends
/// nothing but watches and the lists that (re)start them; the fleet Lease's renewals aside, no read on a
/// timer. The wait is the longest quiet stretch between two writes of the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waypoint_wait_sends_only_watches() {
    let env = start(&[SEED], vec![fault(FaultKind::WaypointNeverReady, "shop", None)]).await;
    env.wait_ready_opts("shop", false).await;
    let mut cfg = Cfg::new(&["shop"]);
    cfg.waypoint_ready = "5s";
    let config = env.write_config("waypoint-wait", &cfg.toml());
    let out = env.run(&config, "waypoint-wait", &["run"]).await;
    assert_eq!(out.code, 1, "{out}");
    let log: Vec<meshsim::accounting::RequestRecord> = env
        .requests()
        .into_iter()
        .filter(|r| r.agent() == "ambient-migrate" && r.resource != "leases")
        .collect();
    let at = |r: &meshsim::accounting::RequestRecord| {
        r.time
            .parse::<jiff::Timestamp>()
            .expect("RFC 3339 time in the request log")
    };
    let writes: Vec<jiff::Timestamp> = log.iter().filter(|r| r.is_mutating()).map(at).collect();
    let (from, to) = writes
        .windows(2)
        .map(|w| (w[0], w[1]))
        .max_by_key(|(a, b)| b.duration_since(*a))
        .expect("writes before and after the wait");
    let waited = to.duration_since(from).as_secs_f64();
    assert!(
        waited >= 4.5,
        "the longest quiet stretch is the 5 s waypoint wait: {waited:.1} s\n{out}"
    );
    let inside: Vec<String> = log
        .iter()
        .filter(|r| at(r) > from && at(r) < to)
        .filter(|r| r.verb != "watch" && r.verb != "list")
        .map(|r| format!("{} {} {}", r.time, r.verb, r.path))
        .collect();
    assert!(
        inside.is_empty(),
        "requests on a timer during the waypoint wait: {inside:#?}"
    );
    let polls = log
        .iter()
        .filter(|r| at(r) > from && at(r) < to && r.verb == "list")
        .count();
    assert!(
        polls <= 2,
        "{polls} lists during the wait: a watch restarted that often is a poll"
    );
}
