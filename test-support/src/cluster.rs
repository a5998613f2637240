//! A meshsim plus the product's `Cluster`, for tests of the cluster layer, journal, lease and backups.
//!
//! - [`start`] / [`start_with`]: start meshsim in-process (API server + controllers + probe proxy) and
//!   build a [`Cluster`] **from the kubeconfig file meshsim produced** (so kubeconfig loading is tested on
//!   the way); returns an [`Env`].
//! - [`Env::cluster_with`]: another `Cluster` on the same simulated cluster with other options (dry run).
//! - [`Env::requests`]: meshsim's request log (`GET /meshsim/requests`), to assert what was (not) sent.
//! - [`Env::store_rv`]: the store's resourceVersion (unchanged = nothing was written).
//! - [`deadline`]: `Instant::now() + secs`.

use std::time::Duration;

use ambient_migrate::cluster::{Cluster, ClusterOptions, ConnectOptions};
use meshsim::{Running, Settings, StartOptions};

pub use crate::SEED;

/// Settings with small latencies (controllers act within tens of ms).
pub fn fast_settings() -> Settings {
    crate::Latencies::Instant.settings()
}

/// A running meshsim plus a `Cluster` connected to it through a kubeconfig file.
pub struct Env {
    pub running: Running,
    pub cluster: Cluster,
    /// Holds the kubeconfig file; removed on drop.
    pub dir: tempfile::TempDir,
}

/// Options used by tests: short retries so failures surface quickly.
pub fn test_options() -> ClusterOptions {
    ClusterOptions {
        request_timeout: Duration::from_secs(5),
        max_retries: 2,
        ..ClusterOptions::default()
    }
}

/// Starts meshsim with `fixtures` (YAML texts) and fast settings.
pub async fn start(fixtures: &[&str]) -> Env {
    start_with(StartOptions {
        fixture_texts: fixtures.iter().map(|s| s.to_string()).collect(),
        settings: fast_settings(),
        proxy_listen: Some("127.0.0.1:0".parse().expect("address")),
        ..Default::default()
    })
    .await
}

/// Starts meshsim with full options.
pub async fn start_with(opts: StartOptions) -> Env {
    let running = meshsim::start(opts).await.expect("meshsim starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, running.kubeconfig_yaml()).expect("write kubeconfig");
    let conn = ConnectOptions {
        kubeconfig: Some(path),
        context: Some("meshsim".into()),
    };
    let cluster = Cluster::connect(&conn, test_options())
        .await
        .expect("cluster from kubeconfig");
    Env {
        running,
        cluster,
        dir,
    }
}

impl Env {
    /// Another `Cluster` on the same simulated cluster, with `opts`.
    pub async fn cluster_with(&self, opts: ClusterOptions) -> Cluster {
        let conn = ConnectOptions {
            kubeconfig: Some(self.dir.path().join("kubeconfig")),
            context: None,
        };
        Cluster::connect(&conn, opts)
            .await
            .expect("cluster from kubeconfig")
    }

    /// The simulation.
    pub fn sim(&self) -> &meshsim::Sim {
        &self.running.sim
    }

    /// The store's resourceVersion.
    pub fn store_rv(&self) -> u64 {
        self.running.sim.store.resource_version()
    }

    /// meshsim's request log (`GET /meshsim/requests` -> `log`).
    pub async fn requests(&self) -> Vec<serde_json::Value> {
        let v: serde_json::Value = reqwest::get(format!("{}/meshsim/requests", self.running.url()))
            .await
            .expect("GET /meshsim/requests")
            .json()
            .await
            .expect("JSON");
        v["log"].as_array().cloned().unwrap_or_default()
    }

    /// How many requests in meshsim's log wrote (any verb but get, list and watch).
    pub async fn writes(&self) -> usize {
        self.requests()
            .await
            .into_iter()
            .filter(|r| !["get", "list", "watch"].contains(&r["verb"].as_str().unwrap_or("")))
            .count()
    }

    /// A `Cluster` in dry-run mode on the same simulated cluster (writes sent with `dryRun=All`).
    pub async fn dry_run_cluster(&self) -> Cluster {
        self.cluster_with(ClusterOptions {
            dry_run: true,
            ..test_options()
        })
        .await
    }

    /// Clears meshsim's request log.
    pub async fn reset_requests(&self) {
        reqwest::Client::new()
            .delete(format!("{}/meshsim/requests", self.running.url()))
            .send()
            .await
            .expect("DELETE /meshsim/requests");
    }
}

/// `Instant::now() + secs`.
pub fn deadline(secs: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(secs)
}
