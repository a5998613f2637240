//! kubectl 1.32 applies the repository's install manifests (`ci/k8s/`) to meshsim: a server-side dry run
//! stores nothing, a real apply stores every object as written, one `kubectl apply -f ci/k8s/` installs on a
//! cluster that has never seen them, and a kind meshsim does not serve fails with kubectl's own message
//! (what the CI lint relies on).

use test_support::sim as common;

use std::path::PathBuf;

use meshsim::resources;
use serde_json::Value;

use common::start_sim;

fn manifests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ci/k8s")
}

fn dir_arg() -> String {
    manifests_dir().display().to_string()
}

/// Every document of the files directly in `ci/k8s/` (what `kubectl apply -f ci/k8s/` reads: it does not
/// recurse without `-R`, so the per-namespace templates under `ci/k8s/per-namespace/` are not part of it),
/// with its store id, namespace ("" for cluster-scoped kinds) and name.
fn manifest_objects() -> Vec<(usize, String, String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifests_dir())
        .expect("ci/k8s")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let objs: Vec<(usize, Value)> = files
        .iter()
        .flat_map(|f| meshsim::fixtures::load_path(f).expect("ci/k8s parses and every kind is served"))
        .collect();
    objs.into_iter()
        .map(|(res, doc)| {
            let ns = if resources::get(res).namespaced {
                doc["metadata"]["namespace"].as_str().unwrap_or("").to_string()
            } else {
                String::new()
            };
            let name = doc["metadata"]["name"]
                .as_str()
                .expect("manifest name")
                .to_string();
            (res, ns, name, doc)
        })
        .collect()
}

fn ok(r: &(i32, String, String)) {
    assert_eq!(r.0, 0, "kubectl failed: stdout {}\nstderr {}", r.1, r.2);
}

/// Asserts the stored object carries the manifest's content: every top-level field but the metadata, and
/// the manifest's labels.
fn assert_stored_as_written(ts: &common::TestSim, res: usize, ns: &str, name: &str, doc: &Value) {
    let kind = resources::get(res).kind;
    let stored = ts
        .sim()
        .store
        .get(res, ns, name)
        .unwrap_or_else(|| panic!("{kind} {ns}/{name} was not stored"));
    for (field, want) in doc.as_object().expect("manifest is a map") {
        if matches!(field.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        assert_eq!(&stored[field], want, "{kind} {ns}/{name}: field {field}");
    }
    for (k, v) in doc["metadata"]["labels"].as_object().into_iter().flatten() {
        assert_eq!(
            &stored["metadata"]["labels"][k], v,
            "{kind} {ns}/{name}: label {k}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_of_ci_manifests_stores_nothing_and_apply_stores_them() {
    let objects = manifest_objects();
    let kinds: Vec<&str> = objects.iter().map(|o| resources::get(o.0).kind).collect();
    for kind in [
        "CronJob",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
    ] {
        assert!(kinds.contains(&kind), "ci/k8s has no {kind}: {kinds:?}");
    }
    // The namespaces exist, as on a cluster where the install namespace was created first: a dry run
    // creates nothing, so namespaced objects would otherwise be rejected (404), as the real apiserver does.
    let ns_doc =
        std::fs::read_to_string(manifests_dir().join("00-namespace.yaml")).expect("00-namespace.yaml");
    let ts = start_sim(&ns_doc).await;
    let rv = ts.sim().store.resource_version();

    let r = ts.kubectl(&["apply", "--dry-run=server", "-f", &dir_arg()]).await;
    ok(&r);
    let lines: Vec<&str> = r.1.lines().collect();
    assert_eq!(lines.len(), objects.len(), "one line per object: {}", r.1);
    assert!(
        lines.iter().all(|l| l.ends_with("(server dry run)")),
        "every object went through the server's dry run: {}",
        r.1
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("cronjob.batch/ambient-migrate created")),
        "{}",
        r.1
    );
    // Controllers keep writing their own objects (pods of the Istio install); none of the manifests' kinds
    // may have changed.
    let (backlog, _rx) = ts.sim().store.watch_from(rv).expect("history since the dry run");
    let written: Vec<String> = backlog
        .iter()
        .filter(|e| objects.iter().any(|o| o.0 == e.res))
        .map(|e| format!("{} {}", resources::get(e.res).kind, e.object["metadata"]["name"]))
        .collect();
    assert!(written.is_empty(), "the dry run wrote {written:?}");
    for (res, ns, name, _) in &objects {
        if resources::get(*res).kind != "Namespace" {
            assert!(
                ts.sim().store.get(*res, ns, name).is_none(),
                "dry run stored {} {ns}/{name}",
                resources::get(*res).kind
            );
        }
    }
    let kubectl_writes = ts
        .sim()
        .accounting
        .log()
        .into_iter()
        .filter(|r| r.user_agent.starts_with("kubectl") && r.verb == "create")
        .collect::<Vec<_>>();
    assert!(!kubectl_writes.is_empty());
    assert!(kubectl_writes.iter().all(|w| w.dry_run && !w.is_mutating()));

    let r = ts.kubectl(&["apply", "-f", &dir_arg()]).await;
    ok(&r);
    for (res, ns, name, doc) in &objects {
        assert_stored_as_written(&ts, *res, ns, name, doc);
    }
    let cronjob = ts
        .sim()
        .store
        .get(
            resources::id("batch", "cronjobs"),
            "ambient-migrate",
            "ambient-migrate",
        )
        .expect("cronjob");
    let pod_security = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(
        pod_security["runAsUser"], 65532,
        "the runner's numeric non-root UID"
    );
    assert_eq!(pod_security["runAsNonRoot"], true);

    // kubectl reads CronJobs and RBAC objects back like any served kind.
    let r = ts
        .kubectl(&[
            "get",
            "cj,roles,rolebindings",
            "-n",
            "ambient-migrate",
            "-o",
            "name",
        ])
        .await;
    ok(&r);
    let names: Vec<&str> = r.1.lines().collect();
    assert_eq!(
        names,
        [
            "cronjob.batch/ambient-migrate",
            "role.rbac.authorization.k8s.io/ambient-migrate-state",
            "rolebinding.rbac.authorization.k8s.io/ambient-migrate-state",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_apply_installs_ci_manifests_on_a_fresh_cluster() {
    // kubectl applies a directory's files in name order; the namespace file sorts first.
    let ts = start_sim("").await;
    let r = ts.kubectl(&["apply", "-f", &dir_arg()]).await;
    ok(&r);
    for (res, ns, name, doc) in manifest_objects() {
        assert_stored_as_written(&ts, res, &ns, &name, &doc);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_meshsim_does_not_serve_fails_the_dry_run() {
    let ts = start_sim("").await;
    let pdb = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: runner, namespace: default}\nspec:\n  maxUnavailable: 1\n";
    let r = ts
        .kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], pdb)
        .await;
    assert_ne!(r.0, 0, "an unserved kind was accepted: {}", r.1);
    assert!(
        r.2.contains(r#"no matches for kind "PodDisruptionBudget" in version "policy/v1""#),
        "kubectl names the kind it could not map: {}",
        r.2
    );
}
