//! End-to-end acceptance of the migration engine against meshsim, driving the real binary:
//! the happy path on the seed namespace, a revision-labelled namespace migrated and rolled back, preflight
//! blockers (exit 4, nothing written), `--dry-run` (store unchanged), `status`, and `backup`/`restore`.

use test_support::e2e as e2e_common;

use e2e_common::*;
use serde_json::Value;

/// The seed namespace migrates: exit 0, labels, pods sidecar-free and enrolled, L4 policy kept, L7 policy
/// and the replaced VirtualService/DestinationRule gone, backup file and in-cluster backup present and
/// restorable; `status` shows the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_seed_namespace_migrates() {
    let env = start(&[SEED], vec![]).await;
    env.wait_ready("shop").await;
    let before = env.config_dump("shop");
    let cfg = Cfg::new(&["shop"]).probes("shop", &seed_probes("shop", &env.proxy()));
    let config = env.write_config("happy", &cfg.toml());

    // The plan lists the bridge at the step that creates it: step 1, before the waypoint label.
    let plan = env.run(&config, "plan", &["plan"]).await;
    assert_eq!(plan.code, 0, "{plan}");
    let bridge = plan
        .stdout
        .find("step 1: create bridge AuthorizationPolicy/shop/api-allow-web-get-bridge-waypoint")
        .unwrap_or_else(|| panic!("bridge at step 1: {plan}"));
    let label = plan
        .stdout
        .find("step 1: label Namespace/shop istio.io/use-waypoint=waypoint")
        .unwrap_or_else(|| panic!("waypoint label at step 1: {plan}"));
    assert!(bridge < label, "{plan}");

    let out = env.run(&config, "run", &["run", "--output", "json"]).await;
    assert_eq!(out.code, 0, "{out}");
    let nsr = out.ns_report("shop");
    assert_eq!(nsr["outcome"], "migrated", "{nsr}");
    let stdout_report: Value = serde_json::from_str(&out.stdout).expect("stdout is the JSON report");
    assert_eq!(stdout_report["exit_code"], 0);

    // Labels.
    let labels = env.ns_labels("shop");
    assert_eq!(
        labels.get("istio.io/use-waypoint").map(String::as_str),
        Some("waypoint")
    );
    env.assert_migrated_pods("shop");
    // Policies and routes.
    let aps = "security.istio.io";
    assert!(
        env.exists(aps, "authorizationpolicies", "shop", "db-allow-api"),
        "L4 policy kept"
    );
    assert!(
        env.exists(aps, "authorizationpolicies", "shop", "api-allow-web-get-waypoint"),
        "targetRefs twin kept"
    );
    assert!(
        !env.exists(aps, "authorizationpolicies", "shop", "api-allow-web-get"),
        "L7 selector policy deleted"
    );
    assert!(
        !env.exists("networking.istio.io", "virtualservices", "shop", "api"),
        "VirtualService deleted"
    );
    assert!(
        !env.exists("networking.istio.io", "destinationrules", "shop", "api"),
        "DestinationRule deleted"
    );
    assert!(
        env.exists("gateway.networking.k8s.io", "httproutes", "shop", "api"),
        "HTTPRoute kept"
    );
    // No bridge left behind (keep_bridges = false).
    let (left, _) = env
        .store()
        .list(meshsim::resources::id(aps, "authorizationpolicies"), Some("shop"));
    assert!(
        left.iter()
            .all(|p| p["metadata"]["labels"]["ambient-migrate.io/role"] != "bridge"),
        "bridges deleted at step 5: {left:?}"
    );
    assert_eq!(env.journal_phase("shop").as_deref(), Some("migrated"));
    // api (protected by the bridged L7 policy) restarts after its caller web: an old web pod on its
    // sidecar bypasses the waypoint and would be denied by ztunnel at a new api pod.
    let journal = env.journal("shop").expect("journal");
    let restarted: Vec<&str> = journal["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["type"] == "restarted")
        .filter_map(|c| c["workload"]["name"].as_str())
        .collect();
    assert_eq!(restarted.last(), Some(&"api"), "{restarted:?}");
    assert_eq!(restarted.len(), 3, "{restarted:?}");

    // Backups: the file and the in-cluster ConfigMap, both equal to the state before the run.
    let file = out.backup_file("shop");
    let dump = backup_dump(&file);
    assert_eq!(dump["namespaceLabels"], before["namespaceLabels"]);
    assert_eq!(
        dump["objects"], before["objects"],
        "backup file holds the original objects"
    );
    let cm = env
        .store()
        .get(meshsim::resources::core("configmaps"), STATE_NS, "backup-shop")
        .expect("in-cluster backup ConfigMap");
    assert!(
        cm["data"]["backup.yaml"]
            .as_str()
            .is_some_and(|y| y.contains("api-allow-web-get"))
    );

    // The probes' traffic was answered as the policies intend, and some of it went through the waypoint.
    let t = env.running.sim.traffic.snapshot();
    assert!(t["total"].as_u64().unwrap_or(0) > 0, "{t}");
    assert_eq!(t["wrongly_allowed"], 0, "{t}");
    assert_eq!(t["wrongly_denied"], 0, "{t}");
    assert!(t["by_path"]["waypoint"].as_u64().unwrap_or(0) > 0, "{t}");

    // status shows the journal.
    let st = env.run(&config, "status", &["status", "--output", "json"]).await;
    assert_eq!(st.code, 0, "{st}");
    let records: Value = serde_json::from_str(&st.stdout).expect("status JSON");
    let shop = records
        .as_array()
        .and_then(|a| a.iter().find(|r| r["namespace"] == "shop"))
        .unwrap_or_else(|| panic!("shop in status: {}", st.stdout));
    assert_eq!(shop["phase"], "migrated");
    assert_eq!(shop["stepsDone"].as_array().map(Vec::len), Some(6), "{shop}");
    let text = env.run(&config, "status-text", &["status"]).await;
    assert!(
        text.stdout.contains("shop") && text.stdout.contains("migrated"),
        "{text}"
    );

    // The backup is restorable: `restore -f` brings back the sidecar-era config, verified equal.
    let restored = env
        .run(
            &config,
            "restore",
            &["restore", "-f", file.to_str().expect("path")],
        )
        .await;
    assert_eq!(restored.code, 0, "{restored}");
    assert!(restored.stdout.contains("verified equal"), "{restored}");
    assert_config_eq(
        &before,
        &env.config_dump("shop"),
        "after restore of the run's backup",
    );

    // A second run skips the migrated namespace (journal).
    let again = env.run(&config, "again", &["run"]).await;
    assert_eq!(again.code, 0, "{again}");
}

/// A namespace on a non-default revision (`istio.io/rev=1-30`) and one on a revision tag
/// (`istio.io/rev=prod` -> 1-30) migrate; `rollback -n` then restores that exact label and the sidecars
/// (of that revision) come back ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revision_labelled_namespaces_migrate_and_roll_back() {
    let mut settings = sim_settings();
    settings.istio.revisions = vec!["default".into(), "1-30".into()];
    settings.istio.tags = [("prod".to_string(), "1-30".to_string())].into();
    let rev = seed_as("rev", "istio.io/rev: 1-30");
    let tagged = seed_as("tagged", "istio.io/rev: prod");
    let env = start_with(&[&rev, &tagged], vec![], settings).await;
    env.wait_ready("rev").await;
    env.wait_ready("tagged").await;
    for ns in ["rev", "tagged"] {
        for p in env.app_pods(ns) {
            assert_eq!(
                p["metadata"]["annotations"]["istio.io/rev"], "1-30",
                "{ns}: injected by 1-30"
            );
        }
    }
    let before_rev = env.config_dump("rev");
    let before_tagged = env.config_dump("tagged");
    let proxy = env.proxy();
    let cfg = Cfg::new(&["rev", "tagged"])
        .probes("rev", &seed_probes("rev", &proxy))
        .probes("tagged", &seed_probes("tagged", &proxy));
    let config = env.write_config("rev", &cfg.toml());

    let out = env.run(&config, "run", &["run"]).await;
    assert_eq!(out.code, 0, "{out}");
    for ns in ["rev", "tagged"] {
        assert_eq!(out.ns_report(ns)["outcome"], "migrated", "{out}");
        env.assert_migrated_pods(ns);
        let j = env.journal(ns).expect("journal");
        assert_eq!(j["originalInjection"]["key"], "istio.io/rev", "{j}");
    }
    assert_eq!(
        env.journal("rev").expect("journal")["originalInjection"]["value"],
        "1-30"
    );
    assert_eq!(
        env.journal("tagged").expect("journal")["originalInjection"]["value"],
        "prod"
    );

    for (ns, before, label) in [("rev", &before_rev, "1-30"), ("tagged", &before_tagged, "prod")] {
        let rb = env
            .run(&config, &format!("rollback-{ns}"), &["rollback", "-n", ns])
            .await;
        assert_eq!(rb.code, 0, "{rb}");
        let labels = env.ns_labels(ns);
        assert_eq!(
            labels.get("istio.io/rev").map(String::as_str),
            Some(label),
            "{labels:?}"
        );
        assert!(!labels.contains_key("istio-injection"), "{labels:?}");
        env.assert_rolled_back(ns, before, &out.backup_file(ns));
        for p in env.app_pods(ns) {
            assert_eq!(
                p["metadata"]["annotations"]["istio.io/rev"], "1-30",
                "{ns}: sidecar of revision 1-30"
            );
        }
        assert_eq!(env.journal_phase(ns).as_deref(), Some("rolled-back"));
    }
}

/// Restarted pods run only once istio-cni has enrolled them, however slowly its node agent enrolls pods
/// that were already running: no moment of step 4 has a new pod that is Ready (an endpoint, or a probe's
/// source) outside the mesh, which the enforcement model (`migrate_core::assess::enforcement`) assumes.
/// When meshsim let enrollment trail readiness, the controller loop sometimes produced that state under
/// CPU load: `web`'s new pod called `api`'s sidecar pods without identity (403 `RBAC: access denied` on
/// `web-get-api`) and `api`'s new pod reached `db`'s ztunnel without identity (reset on `api-get-db`).
/// A 5 s enrollment delay makes that window certain rather than rare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_pods_serve_only_once_enrolled_when_enrollment_is_slow() {
    let mut settings = sim_settings();
    settings.latency.cni_enroll_ms = 5_000;
    let env = start_with(&[SEED], vec![], settings).await;
    env.wait_ready("shop").await;
    let cfg = Cfg::new(&["shop"]).probes("shop", &seed_probes("shop", &env.proxy()));
    let config = env.write_config("slow-cni", &cfg.toml());

    let out = env.run(&config, "run", &["run"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.ns_report("shop")["outcome"], "migrated", "{out}");
    env.assert_migrated_pods("shop");
    let t = env.running.sim.traffic.snapshot();
    assert!(t["by_path"]["ztunnel"].as_u64().unwrap_or(0) > 0, "{t}");
    assert_eq!(t["wrongly_denied"], 0, "{t}");
    assert_eq!(t["wrongly_allowed"], 0, "{t}");
}

/// Preflight blockers: a pod template forcing injection (`sidecar.istio.io/inject: "true"`) and an L7
/// selector policy with no targetRefs twin each give exit 4 with a message naming the object, and the
/// binary sends no mutating request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_blockers_exit_4_and_write_nothing() {
    let inject = seed_as("inject", "istio-injection: enabled").replacen(
        "metadata: {labels: {app: web, version: v1}}",
        "metadata: {labels: {app: web, version: v1, sidecar.istio.io/inject: \"true\"}}",
        1,
    );
    assert!(inject.contains("sidecar.istio.io/inject"));
    let twin = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: api-allow-web-get-waypoint, namespace: notwin}";
    let notwin_full = seed_as("notwin", "istio-injection: enabled");
    let start_twin = notwin_full.find(twin).expect("twin in seed");
    let end_twin = start_twin + notwin_full[start_twin..].find("---").expect("next doc");
    let notwin = format!("{}{}", &notwin_full[..start_twin], &notwin_full[end_twin + 4..]);
    assert!(!notwin.contains("api-allow-web-get-waypoint"));

    let env = start(&[&inject, &notwin], vec![]).await;
    env.wait_ready("inject").await;
    env.wait_ready("notwin").await;
    for (ns, object) in [
        ("inject", "Deployment/inject/web"),
        ("notwin", "AuthorizationPolicy/notwin/api-allow-web-get"),
    ] {
        let (rv, objects) = env.store_dump();
        env.running.sim.accounting.reset();
        let cfg = Cfg::new(&[ns]).probes(ns, &seed_probes(ns, &env.proxy()));
        let config = env.write_config(ns, &cfg.toml());
        let out = env.run(&config, ns, &["run"]).await;
        assert_eq!(out.code, 4, "{out}");
        let text = format!("{}{}", out.stdout, out.stderr);
        assert!(text.contains(object), "the message names {object}\n{out}");
        assert_eq!(out.ns_report(ns)["outcome"], "blocked");
        assert!(env.requests().len() > 1, "the binary read the cluster");
        assert_eq!(
            env.mutating_requests(),
            Vec::<String>::new(),
            "{ns}: nothing written"
        );
        let (rv2, objects2) = env.store_dump();
        assert_eq!(rv, rv2, "{ns}: store unchanged");
        assert_eq!(objects, objects2);
        assert!(env.journal(ns).is_none());
    }
    // `plan --fixes-dir` writes the generated twin for the policy that lacks one, and still writes nothing
    // to the cluster.
    let fixes = env.report_dir("fixes");
    let cfg = Cfg::new(&["notwin"]);
    let config = env.write_config("plan-notwin", &cfg.toml());
    env.running.sim.accounting.reset();
    let plan = env
        .run(&config, "plan", &["plan", "--fixes-dir", fixes.to_str().unwrap()])
        .await;
    assert_eq!(plan.code, 4, "{plan}");
    assert!(
        plan.stdout
            .contains("AuthorizationPolicy/notwin/api-allow-web-get"),
        "{plan}"
    );

    let written: Vec<String> = std::fs::read_dir(&fixes)
        .expect("fixes dir")
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        written
            .iter()
            .any(|y| y.contains("targetRefs") && y.contains("api-allow-web-get")),
        "a targetRefs twin is generated: {written:?}"
    );
    assert_eq!(
        env.mutating_requests(),
        Vec::<String>::new(),
        "plan writes nothing"
    );
}

/// `run --dry-run` leaves the cluster byte-for-byte unchanged: every object in the store and the store's
/// resourceVersion are the same before and after; every mutation it sent was a server-side dry run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_leaves_the_cluster_unchanged() {
    let env = start(&[SEED], vec![]).await;
    env.wait_ready("shop").await;
    let cfg = Cfg::new(&["shop"]).probes("shop", &seed_probes("shop", &env.proxy()));
    let config = env.write_config("dry", &cfg.toml());
    let (rv, objects) = env.store_dump();
    env.running.sim.accounting.reset();

    let out = env.run(&config, "dry", &["run", "--dry-run"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.report()["dry_run"], true);
    let (rv2, objects2) = env.store_dump();
    assert_eq!(objects.len(), objects2.len());
    for (a, b) in objects.iter().zip(&objects2) {
        assert_eq!(a, b, "object changed by a dry run");
    }
    assert_eq!(rv, rv2, "store resourceVersion unchanged");
    assert_eq!(env.mutating_requests(), Vec::<String>::new());
    let dry: Vec<_> = env.requests().into_iter().filter(|r| r.dry_run).collect();
    assert!(!dry.is_empty(), "mutations were sent as server-side dry runs");
}

/// `backup -n NS -o FILE`, a hand-made change, then `restore -f FILE`: the namespace equals the backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_then_restore_round_trip() {
    let env = start(&[SEED], vec![]).await;
    env.wait_ready("shop").await;
    let before = env.config_dump("shop");
    let config = env.write_config("br", &Cfg::new(&["shop"]).toml());
    let file = env.dir.path().join("shop-backup.yaml");
    let out = env
        .run(
            &config,
            "backup",
            &["backup", "-n", "shop", "-o", file.to_str().expect("path")],
        )
        .await;
    assert_eq!(out.code, 0, "{out}");
    let dump = backup_dump(&file);
    assert_eq!(dump["namespaceLabels"], before["namespaceLabels"]);
    assert_eq!(dump["objects"], before["objects"]);
    assert_eq!(dump["serviceLabels"], before["serviceLabels"]);

    // Drift: relabel the namespace, delete the VirtualService, change the L4 policy.
    let store = env.store();
    let opts = meshsim::store::WriteOpts::default();
    store
        .update_with(
            meshsim::resources::core("namespaces"),
            "",
            "shop",
            meshsim::store::Target::Main,
            &opts,
            |o| {
                let mut o = o.clone();
                o["metadata"]["labels"]["istio.io/dataplane-mode"] = "ambient".into();
                o["metadata"]["labels"]
                    .as_object_mut()
                    .expect("labels")
                    .remove("istio-injection");
                o["metadata"]
                    .as_object_mut()
                    .expect("meta")
                    .remove("resourceVersion");
                Ok(o)
            },
        )
        .expect("relabel");
    let vs = meshsim::resources::id("networking.istio.io", "virtualservices");
    store
        .delete(
            vs,
            "shop",
            "api",
            meshsim::store::Propagation::Background,
            false,
            None,
        )
        .expect("delete vs");
    let ap = meshsim::resources::id("security.istio.io", "authorizationpolicies");
    store
        .update_with(
            ap,
            "shop",
            "db-allow-api",
            meshsim::store::Target::Main,
            &opts,
            |o| {
                let mut o = o.clone();
                o["spec"]["rules"] = serde_json::json!([]);
                o["metadata"]
                    .as_object_mut()
                    .expect("meta")
                    .remove("resourceVersion");
                Ok(o)
            },
        )
        .expect("edit policy");
    assert_ne!(env.config_dump("shop"), before);

    let out = env
        .run(
            &config,
            "restore",
            &["restore", "-f", file.to_str().expect("path")],
        )
        .await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("verified equal"), "{out}");
    assert_config_eq(&before, &env.config_dump("shop"), "after restore");
    // Idempotent: a second restore changes nothing. (Counted from the request log, not the store's
    // resourceVersion, which meshsim's own controllers may move at any time.)
    let writes = env.mutating_requests().len();
    let again = env
        .run(
            &config,
            "restore2",
            &["restore", "-f", file.to_str().expect("path")],
        )
        .await;
    assert_eq!(again.code, 0, "{again}");
    assert!(
        again
            .stdout
            .contains("0 labels, 0 created, 0 replaced, 0 deleted"),
        "{again}"
    );
    // Only the fleet Lease, which a restore takes like every writing command.
    let wrote: Vec<String> = env.mutating_requests()[writes..]
        .iter()
        .filter(|w| !w.contains("leases"))
        .cloned()
        .collect();
    assert!(wrote.is_empty(), "a no-op restore writes nothing: {wrote:?}");

    // -n must name the backed-up namespace: a mismatch is a usage error and nothing is sent.
    let writes = env.mutating_requests().len();
    let wrong = env
        .run(
            &config,
            "restore-wrong",
            &["restore", "-n", "payments", "-f", file.to_str().expect("path")],
        )
        .await;
    assert_eq!(wrong.code, 2, "{wrong}");
    assert!(
        wrong
            .stderr
            .contains("is a backup of namespace shop, not of payments"),
        "{wrong}"
    );
    assert_eq!(env.mutating_requests().len(), writes);
}

/// A dry run whose step-5 gate fails (an L7 probe expecting 200 where the sidecar answers 403) rolls back in
/// dry run too: exit 1, still nothing written, no wait for restarts that were never persisted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_with_a_failing_gate_rolls_back_without_writing() {
    let env = start(&[SEED], vec![]).await;
    env.wait_ready("shop").await;
    let wrong = format!(
        "[[namespaces.shop.probes]]\nname = \"web-delete-api-expects-200\"\nkind = \"http\"\nurl = \"http://api.shop.svc.cluster.local/\"\nmethod = \"DELETE\"\nproxy = \"{}\"\nsource = \"shop/web\"\nl7 = true\nexpect = {{ status = \"200\" }}\npolicy = {{ interval = \"50ms\", count = 1, failure_limit = 0, error_limit = 2, timeout = \"2s\" }}\nschedule = {{ after_steps = [\"remove-sidecar-policies\"], during_restart = false, after_rollback = false }}\n",
        env.proxy()
    );
    let cfg = Cfg::new(&["shop"])
        .probes("shop", &seed_probes("shop", &env.proxy()))
        .probes("shop", &wrong);
    let config = env.write_config("dry-fail", &cfg.toml());
    let (rv, objects) = env.store_dump();
    env.running.sim.accounting.reset();

    let out = env.run(&config, "dry-fail", &["run", "--dry-run"]).await;
    assert_eq!(out.code, 1, "{out}");
    let nsr = out.ns_report("shop");
    assert_eq!(nsr["outcome"], "rolled-back", "{nsr}");
    assert_eq!(nsr["rollback"]["from"], "remove-sidecar-policies", "{nsr}");
    assert_eq!(env.mutating_requests(), Vec::<String>::new());
    let (rv2, objects2) = env.store_dump();
    assert_eq!(objects, objects2, "a dry run changed an object");
    assert_eq!(rv, rv2);
}

/// `rollback --to-step 4` of a migrated namespace undoes only step 5: the deleted L7 policy, VirtualService
/// and DestinationRule come back from the backup, the bridge that stood beside the policy is re-created, the
/// labels and pods stay migrated, and the journal says "step 4 done" so a later `run` finishes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_rollback_to_step_4_then_run_again() {
    let seed = seed_as("part", "istio-injection: enabled");
    let env = start(&[&seed], vec![]).await;
    env.wait_ready("part").await;
    let proxy = env.proxy();
    let cfg = Cfg::new(&["part"]).probes("part", &seed_probes("part", &proxy));
    let config = env.write_config("part", &cfg.toml());
    let out = env.run(&config, "run", &["run"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(!env.exists(
        "security.istio.io",
        "authorizationpolicies",
        "part",
        "api-allow-web-get"
    ));

    let rb = env
        .run(&config, "rollback", &["rollback", "-n", "part", "--to-step", "4"])
        .await;
    assert_eq!(rb.code, 0, "{rb}");
    assert!(env.exists(
        "security.istio.io",
        "authorizationpolicies",
        "part",
        "api-allow-web-get"
    ));
    assert!(env.exists(
        "security.istio.io",
        "authorizationpolicies",
        "part",
        "api-allow-web-get-bridge-waypoint"
    ));
    assert!(env.exists("networking.istio.io", "virtualservices", "part", "api"));
    assert!(env.exists("networking.istio.io", "destinationrules", "part", "api"));
    let labels = env.ns_labels("part");
    assert_eq!(
        labels.get("istio.io/dataplane-mode").map(String::as_str),
        Some("ambient")
    );
    assert!(!labels.contains_key("istio-injection"), "{labels:?}");
    env.assert_migrated_pods("part");
    assert_eq!(env.journal_phase("part").as_deref(), Some("step-done:restart"));

    let again = env.run(&config, "run-again", &["run"]).await;
    assert_eq!(again.code, 0, "{again}");
    assert!(!env.exists(
        "security.istio.io",
        "authorizationpolicies",
        "part",
        "api-allow-web-get"
    ));
    assert!(!env.exists(
        "security.istio.io",
        "authorizationpolicies",
        "part",
        "api-allow-web-get-bridge-waypoint"
    ));
    assert_eq!(env.journal_phase("part").as_deref(), Some("migrated"));
}

/// An operator's change made after the migration survives an operator rollback: the label the operator
/// changed is reported as a conflict and left alone (exit 3, with the `--force` fix named), everything
/// else is rolled back; `rollback --force` then overwrites it and the namespace equals its backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_after_the_migration_survives_rollback_unless_forced() {
    let env = start(&[SEED], vec![]).await;
    env.wait_ready("shop").await;
    let before = env.config_dump("shop");
    let cfg = Cfg::new(&["shop"]).probes("shop", &seed_probes("shop", &env.proxy()));
    let config = env.write_config("edit", &cfg.toml());
    let out = env.run(&config, "run", &["run"]).await;
    assert_eq!(out.code, 0, "{out}");

    // The operator moves the namespace to another waypoint.
    env.edit(meshsim::resources::core("namespaces"), "", "shop", |o| {
        o["metadata"]["labels"]["istio.io/use-waypoint"] = "team-waypoint".into();
    });

    let rb = env.run(&config, "rollback", &["rollback", "-n", "shop"]).await;
    assert_eq!(rb.code, 3, "a conflict needs a human\n{rb}");
    let text = format!("{}{}", rb.stdout, rb.stderr);
    assert!(
        text.contains("conflict: label istio.io/use-waypoint") && text.contains("--force"),
        "{rb}"
    );
    let labels = env.ns_labels("shop");
    assert_eq!(
        labels.get("istio.io/use-waypoint").map(String::as_str),
        Some("team-waypoint"),
        "the operator's change is kept: {labels:?}"
    );
    // The rest was rolled back: injection is back, ambient is off.
    assert_eq!(
        labels.get("istio-injection").map(String::as_str),
        Some("enabled"),
        "{labels:?}"
    );
    assert!(!labels.contains_key("istio.io/dataplane-mode"), "{labels:?}");
    assert_eq!(env.journal_phase("shop").as_deref(), Some("rollback-failed"));

    let forced = env
        .run(&config, "rollback-force", &["rollback", "-n", "shop", "--force"])
        .await;
    assert_eq!(forced.code, 0, "{forced}");
    assert!(!env.ns_labels("shop").contains_key("istio.io/use-waypoint"));
    env.assert_rolled_back("shop", &before, &out.backup_file("shop"));
    assert_eq!(env.journal_phase("shop").as_deref(), Some("rolled-back"));
}
