//! The e2e tests run the binary as the shipped ServiceAccount, against meshsim's RBAC: [`install`] applies
//! the identity and RBAC documents of `ci/k8s/` with kubectl (plus the per-namespace bindings of
//! `ci/k8s/per-namespace/` for every application namespace, as the README tells an operator to), issues a
//! token with `kubectl create token`, and rewrites the test's kubeconfig to use it. Every path a test
//! exercises is then checked by the API server against the shipped roles; a 403 fails the test.
//! Used by the [`crate::e2e`], [`crate::fleet`] and [`crate::policies`] harnesses.

use std::path::Path;

use meshsim::Running;
use serde_json::Value;

/// The user name of the shipped ServiceAccount (`ci/k8s/serviceaccount.yaml`).
pub const SERVICE_ACCOUNT_USER: &str = "system:serviceaccount:ambient-migrate:ambient-migrate";

/// Namespaces that are never fleet or probe namespaces (no per-namespace binding).
const SYSTEM_NAMESPACES: &[&str] = &[
    "default",
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "istio-system",
    "ambient-migrate",
];

/// The documents of the shipped install (`ci/k8s/*.yaml`) that carry identity and RBAC: the state
/// namespace, the ServiceAccount, the (Cluster)Roles and their bindings (the CronJob and its ConfigMap are
/// left out: meshsim serves no CronJobs).
pub fn shipped_rbac() -> Vec<Value> {
    let dir = crate::workspace_root().join("ci/k8s");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("ci/k8s")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let kinds = [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "Role",
        "ClusterRoleBinding",
        "RoleBinding",
    ];
    // In the order an apply needs them: the namespace before what lives in it.
    let rank = |d: &Value| kinds.iter().position(|k| d["kind"] == *k);
    let mut docs: Vec<Value> = files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            serde_saphyr::from_multiple::<Value>(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()))
        })
        .filter(|d| rank(d).is_some())
        .collect();
    docs.sort_by_key(rank);
    docs
}

/// The per-namespace bindings of `ci/k8s/per-namespace/` instantiated for fleet namespaces and Job probe
/// source namespaces.
pub fn shipped_namespace_bindings(fleet: &[&str], probes: &[&str]) -> Vec<Value> {
    let dir = crate::workspace_root().join("ci/k8s/per-namespace");
    let instantiate = |file: &str, placeholder: &str, namespaces: &[&str]| -> Vec<Value> {
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        namespaces
            .iter()
            .map(|ns| serde_saphyr::from_str(&text.replace(placeholder, ns)).expect("valid YAML"))
            .collect()
    };
    let mut out = instantiate("fleet-rolebinding.yaml", "FLEET_NAMESPACE", fleet);
    out.extend(instantiate("probe-rolebinding.yaml", "PROBE_NAMESPACE", probes));
    out
}

/// Removes `verb` from the rules of the (Cluster)Role `role` that grant `resource`; panics when no rule did.
pub fn remove_verb(docs: &mut [Value], role: &str, resource: &str, verb: &str) {
    let mut removed = false;
    for d in docs
        .iter_mut()
        .filter(|d| d["metadata"]["name"] == role && d["rules"].is_array())
    {
        for r in d["rules"].as_array_mut().into_iter().flatten() {
            let grants = r["resources"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == resource));
            if let (true, Some(verbs)) = (grants, r["verbs"].as_array_mut()) {
                let before = verbs.len();
                verbs.retain(|v| v != verb);
                removed |= verbs.len() < before;
            }
        }
    }
    assert!(removed, "no rule of {role} grants {verb} {resource}");
}

/// Runs kubectl as the cluster administrator (a kubeconfig in `dir`) with `input` on stdin;
/// `(exit code, stdout, stderr)`.
pub async fn kubectl(
    running: &Running,
    dir: &Path,
    args: &[&str],
    input: Option<&str>,
) -> (i32, String, String) {
    let admin = dir.join("admin-kubeconfig");
    std::fs::write(&admin, running.kubeconfig_yaml()).expect("write admin kubeconfig");
    crate::kubectl(dir, &admin, args, input).await
}

/// The application namespaces in the cluster now (every namespace but the system ones).
pub fn application_namespaces(running: &Running) -> Vec<String> {
    let (list, _) = running
        .sim
        .store
        .list(meshsim::resources::core("namespaces"), None);
    list.iter()
        .filter_map(|n| n["metadata"]["name"].as_str())
        .filter(|n| !SYSTEM_NAMESPACES.contains(n))
        .map(str::to_string)
        .collect()
}

/// The shipped RBAC with the fleet and probe bindings in every application namespace.
pub fn shipped_rbac_for(running: &Running) -> Vec<Value> {
    let apps = application_namespaces(running);
    let apps: Vec<&str> = apps.iter().map(String::as_str).collect();
    let mut rbac = shipped_rbac();
    rbac.extend(shipped_namespace_bindings(&apps, &apps));
    rbac
}

/// Applies `rbac` with `kubectl apply`, issues a token for the `ambient-migrate` ServiceAccount with
/// `kubectl create token`, and writes `kubeconfig` to use that token: the binary then acts as the
/// ServiceAccount and meets the API server's 403s where the RBAC says no.
pub async fn install(running: &Running, dir: &Path, kubeconfig: &Path, rbac: &[Value]) {
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": rbac});
    let r = kubectl(running, dir, &["apply", "-f", "-"], Some(&list.to_string())).await;
    assert_eq!(r.0, 0, "kubectl apply of the RBAC failed: {r:?}");
    let r = kubectl(
        running,
        dir,
        &[
            "create",
            "token",
            "ambient-migrate",
            "-n",
            "ambient-migrate",
            "--duration=2h",
        ],
        None,
    )
    .await;
    assert_eq!(r.0, 0, "kubectl create token failed: {r:?}");
    let token = r.1.trim();
    assert!(!token.is_empty(), "empty token");
    let text = running.kubeconfig_yaml().replace(
        &format!("token: {}", meshsim::api::auth::ADMIN_TOKEN),
        &format!("token: {token}"),
    );
    std::fs::write(kubeconfig, text).expect("write kubeconfig");
}

/// Fails the test when the API server refused the ServiceAccount anything: every path a test exercises
/// must be allowed by the shipped RBAC (best-effort writes such as Events included, whose 403 the binary
/// would only log). Called when a test's cluster is dropped; silent while the test is already failing.
pub fn assert_nothing_forbidden(running: &Running) {
    if std::thread::panicking() {
        return;
    }
    let refused: Vec<String> = running
        .sim
        .accounting
        .log()
        .iter()
        .filter(|r| r.user == SERVICE_ACCOUNT_USER && r.code == 403)
        .map(|r| format!("{} {} ({})", r.verb, r.path, r.user_agent))
        .collect();
    assert!(
        refused.is_empty(),
        "the shipped RBAC (ci/k8s/) refused {} request(s) of the ServiceAccount:\n{}",
        refused.len(),
        refused.join("\n")
    );
}

/// Runs [`assert_nothing_forbidden`] when dropped (for tests holding a bare `Running`).
pub struct NothingForbidden<'a>(pub &'a Running);

impl Drop for NothingForbidden<'_> {
    fn drop(&mut self) {
        assert_nothing_forbidden(self.0);
    }
}

/// Starts meshsim with `fixtures`, `faults` and `settings`, its probe proxy on a free port and its
/// kubeconfig written to `<dir>/kubeconfig`: the starting point of every harness that then runs the binary
/// as the shipped ServiceAccount ([`install`]).
pub async fn start_sim(
    fixtures: Vec<String>,
    faults: Vec<meshsim::FaultSpec>,
    settings: meshsim::Settings,
) -> (tempfile::TempDir, std::path::PathBuf, Running) {
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    let running = meshsim::start(meshsim::StartOptions {
        fixture_texts: fixtures,
        settings,
        faults,
        proxy_listen: Some("127.0.0.1:0".parse().expect("address")),
        kubeconfig_out: Some(kubeconfig.clone()),
        ..Default::default()
    })
    .await
    .expect("meshsim starts");
    (dir, kubeconfig, running)
}
