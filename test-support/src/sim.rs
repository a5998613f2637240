//! A meshsim with a kube-rs client and a kubectl setup, for meshsim's own API and controller tests.
//!
//! - [`fast_settings`]: `Settings::default()` with every latency small (tests stay fast).
//! - [`start_sim`] / [`start_sim_with`]: start a simulated cluster from inline fixture YAML (or full
//!   `StartOptions`) and return a [`TestSim`]: the `Running` cluster, a kube-rs `Client` for it, and a temp
//!   directory holding a kubeconfig and a kubectl discovery cache.
//! - [`TestSim::kubectl`] / [`TestSim::kubectl_stdin`]: run `/usr/bin/kubectl` against the cluster
//!   (async, so the server keeps running on the test's runtime); returns `(exit code, stdout, stderr)`.
//! - [`client_for`]: a kube-rs `Client` for any `Running`.
//! - [`kubectl`]: one-off kubectl against any `Running` (fresh temp kubeconfig and cache).
//! - [`wait_for`]: poll an async condition with a timeout (instead of sleeps).

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use meshsim::{Running, Settings, StartOptions};

/// Settings with small latencies so controllers (when present) act within tens of milliseconds.
pub fn fast_settings() -> Settings {
    crate::Latencies::Instant.settings()
}

/// A running simulated cluster with a kube-rs client and a kubectl setup.
pub struct TestSim {
    pub running: Running,
    pub client: kube::Client,
    /// Holds `kubeconfig` and `kubectl-cache/`; removed on drop.
    pub dir: tempfile::TempDir,
}

impl TestSim {
    /// The simulation behind the server (store, faults, accounting...).
    pub fn sim(&self) -> &meshsim::Sim {
        &self.running.sim
    }

    /// Path of the kubeconfig file written for this cluster.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Runs kubectl with `args` against this cluster; `(exit code, stdout, stderr)`.
    pub async fn kubectl(&self, args: &[&str]) -> (i32, String, String) {
        run_kubectl(self.dir.path(), args, None).await
    }

    /// Runs kubectl with `input` on stdin (for `apply -f -`, `create -f -`).
    pub async fn kubectl_stdin(&self, args: &[&str], input: &str) -> (i32, String, String) {
        run_kubectl(self.dir.path(), args, Some(input)).await
    }
}

/// A kube-rs client for a running cluster (built from its kubeconfig, as the product does).
pub async fn client_for(running: &Running) -> kube::Client {
    let kc = Kubeconfig::from_yaml(&running.kubeconfig_yaml()).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kube config");
    kube::Client::try_from(config).expect("kube client")
}

/// Starts a cluster with default-but-fast settings and the given fixture YAML (may be empty).
pub async fn start_sim(fixture_yaml: &str) -> TestSim {
    let mut opts = StartOptions {
        settings: fast_settings(),
        ..Default::default()
    };
    if !fixture_yaml.trim().is_empty() {
        opts.fixture_texts.push(fixture_yaml.to_string());
    }
    start_sim_with(opts).await
}

/// Starts a cluster from full options.
pub async fn start_sim_with(opts: StartOptions) -> TestSim {
    let running = meshsim::start(opts).await.expect("meshsim starts");
    let client = client_for(&running).await;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("kubeconfig"), running.kubeconfig_yaml()).expect("write kubeconfig");
    TestSim { running, client, dir }
}

async fn run_kubectl(dir: &std::path::Path, args: &[&str], input: Option<&str>) -> (i32, String, String) {
    crate::kubectl(dir, &dir.join("kubeconfig"), args, input).await
}

/// One-off kubectl against any running cluster (fresh kubeconfig and cache in a temp dir).
pub async fn kubectl(running: &Running, args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("kubeconfig"), running.kubeconfig_yaml()).expect("write kubeconfig");
    run_kubectl(dir.path(), args, None).await
}

/// Polls `cond` every 10 ms until it returns true; panics with `what` after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
