//! What the tests, the benchmarks and meshsim's own tests share: one set of meshsim latency profiles
//! ([`Latencies`]), one way to find and run the `ambient-migrate` binary ([`bin`], [`run`], always under a
//! time limit), the seed fixture, and the harnesses of each test family:
//!
//! - [`sim`]: a meshsim with a kube-rs client and kubectl (meshsim's API tests);
//! - [`cluster`]: a meshsim plus the product's `Cluster` built from the kubeconfig meshsim wrote;
//! - [`e2e`]: the binary driven end to end on the seed namespace, with faults, backups and probes;
//! - [`fleet`]: the fleet job on generated fleets (schedule, overlap, restore, reports);
//! - [`policies`]: policy carry-over fleets and continuous traffic through meshsim's data plane;
//! - [`sa`]: the shipped RBAC installed and the run made as the ServiceAccount;
//! - [`chaos`]: kills, fault matrices and split brain;
//! - [`schema`]: reports checked against `docs/report.schema.json`;
//! - [`pods`]: what a test asks of a pod (ready, serving, sidecar, ambient).
//!
//! A crate of its own (a dev-dependency of the workspace's packages) so each test binary links what it
//! uses and nothing is compiled as dead code in the others.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

pub mod chaos;
pub mod cluster;
pub mod e2e;
pub mod fleet;
pub mod pods;
pub mod policies;
pub mod sa;
pub mod schema;
pub mod sim;

/// meshsim's seed fixture: namespace `shop` on sidecars (web/api/db Deployments and Services, a waypoint
/// Gateway, L4/L7 AuthorizationPolicies, a VirtualService/DestinationRule pair, an HTTPRoute).
pub const SEED: &str = include_str!("../../meshsim/fixtures/seed.yaml");

/// The workspace root (the repository), for files the tests read: `ci/k8s`, `docs/`, `config/`.
pub fn workspace_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The `ambient-migrate` binary of the running build: beside the test or example executable's directory
/// (`target/<profile>/deps/<test>` or `target/<profile>/examples/<example>` -> `target/<profile>/`), where
/// cargo puts it for integration tests. `AMBIENT_MIGRATE_BIN` overrides it.
pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("AMBIENT_MIGRATE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut dir = exe.parent().expect("executable in a directory").to_path_buf();
    if matches!(
        dir.file_name().and_then(|n| n.to_str()),
        Some("deps" | "examples")
    ) {
        dir.pop();
    }
    dir.join(format!("ambient-migrate{}", std::env::consts::EXE_SUFFIX))
}

/// Runs `cmd` to completion, killing it after `limit` (a hung child must fail the test, not the CI job).
pub async fn run(mut cmd: tokio::process::Command, limit: Duration) -> Output {
    cmd.kill_on_drop(true);
    let what = format!("{:?}", cmd.as_std());
    match tokio::time::timeout(limit, cmd.output()).await {
        Ok(out) => out.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

/// Runs the real kubectl with `kubeconfig`, a discovery cache and `HOME` in `dir`, and `input` on stdin;
/// `(exit code, stdout, stderr)`, within 60 s.
pub async fn kubectl(
    dir: &Path,
    kubeconfig: &Path,
    args: &[&str],
    input: Option<&str>,
) -> (i32, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.arg("--cache-dir")
        .arg(dir.join("kubectl-cache"))
        .arg("--request-timeout=20s")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", dir)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("kubectl runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.unwrap_or("").as_bytes())
        .await
        .expect("write stdin");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kubectl finishes within 60 s")
        .expect("kubectl output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// meshsim latency profiles, the only place tests and benchmarks set them. Pick a profile, change what
/// a test needs with the `with_*` methods, and take [`Latencies::settings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latencies {
    /// Controller pass period.
    pub controller_tick_ms: u64,
    /// Pod creation to running.
    pub pod_start_ms: u64,
    /// Running to ready.
    pub pod_ready_ms: u64,
    /// Deletion to gone.
    pub pod_terminate_ms: u64,
    /// istio-cni enrolment of an ambient pod.
    pub cni_enroll_ms: u64,
    /// Waypoint programming.
    pub waypoint_program_ms: u64,
    /// A probe Job's run.
    pub job_run_ms: u64,
    /// Added to every API request (`None` = meshsim's default).
    pub api_ms: Option<u64>,
}

impl Latencies {
    /// Controllers act within a tick or two: API and controller tests that do not care about ordering.
    pub const INSTANT: Latencies = Latencies::new(10, 10, 10, 10, 5, 10, 10, Some(0));
    /// One namespace migrates in a few seconds, with pods still taking several ticks (engine tests).
    pub const E2E: Latencies = Latencies::new(10, 30, 30, 20, 10, 20, 10, Some(0));
    /// Slow enough that a fleet's namespaces overlap in time (fleet tests).
    pub const FLEET: Latencies = Latencies::new(10, 40, 40, 20, 10, 20, 20, Some(0));
    /// Policy carry-over tests: real ordering between restarts and the waypoint.
    pub const POLICIES: Latencies = Latencies::new(10, 40, 40, 30, 10, 30, 20, Some(0));
    /// The demo's latencies (a fast real cluster), so benchmark windows are in realistic units.
    pub const DEMO: Latencies = Latencies::new(20, 250, 250, 150, 80, 200, 100, None);

    #[allow(clippy::too_many_arguments)]
    const fn new(
        controller_tick_ms: u64,
        pod_start_ms: u64,
        pod_ready_ms: u64,
        pod_terminate_ms: u64,
        cni_enroll_ms: u64,
        waypoint_program_ms: u64,
        job_run_ms: u64,
        api_ms: Option<u64>,
    ) -> Latencies {
        Latencies {
            controller_tick_ms,
            pod_start_ms,
            pod_ready_ms,
            pod_terminate_ms,
            cni_enroll_ms,
            waypoint_program_ms,
            job_run_ms,
            api_ms,
        }
    }

    /// Pods take `ms` to start.
    pub const fn with_pod_start_ms(mut self, ms: u64) -> Latencies {
        self.pod_start_ms = ms;
        self
    }

    /// Pods take `ms` from running to ready.
    pub const fn with_pod_ready_ms(mut self, ms: u64) -> Latencies {
        self.pod_ready_ms = ms;
        self
    }

    /// Every API request takes at least `ms`.
    pub const fn with_api_ms(mut self, ms: u64) -> Latencies {
        self.api_ms = Some(ms);
        self
    }

    /// meshsim settings with these latencies (everything else at meshsim's defaults).
    pub fn settings(self) -> meshsim::Settings {
        let mut s = meshsim::Settings::default();
        let l = &mut s.latency;
        l.controller_tick_ms = self.controller_tick_ms;
        l.pod_start_ms = self.pod_start_ms;
        l.pod_ready_ms = self.pod_ready_ms;
        l.pod_terminate_ms = self.pod_terminate_ms;
        l.cni_enroll_ms = self.cni_enroll_ms;
        l.waypoint_program_ms = self.waypoint_program_ms;
        l.job_run_ms = self.job_run_ms;
        if let Some(api) = self.api_ms {
            l.api_ms = api;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_reach_meshsim_settings() {
        let s = Latencies::FLEET.with_pod_start_ms(7).settings();
        assert_eq!(s.latency.pod_start_ms, 7);
        assert_eq!(s.latency.pod_ready_ms, 40);
        assert_eq!(s.latency.api_ms, 0);
        let demo = Latencies::DEMO.settings();
        assert_eq!(demo.latency.api_ms, meshsim::Settings::default().latency.api_ms);
    }

    #[test]
    fn the_binary_is_found_beside_the_test_executable() {
        let b = bin();
        assert!(b.ends_with("ambient-migrate"), "{}", b.display());
    }
}
