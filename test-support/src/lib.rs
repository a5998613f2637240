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
//! - [`pods`]: what a test asks of a pod (ready, serving, sidecar, ambient);
//! - [`traffic`]: requests through meshsim's data plane model (the traffic-model vectors).
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
pub mod traffic;

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
    bin_beside(&std::env::current_exe().expect("the test executable's path"))
}

/// Where cargo puts the binary relative to a test or example executable: the profile directory above
/// `deps/` or `examples/`, or the executable's own directory.
fn bin_beside(exe: &Path) -> PathBuf {
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

/// meshsim latency profiles, the only place tests and benchmarks set them. Pick a profile and take its
/// [`Latencies::settings`]; a test that needs one delay changed sets it on the result
/// (`settings.latency.pod_start_ms = 500`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latencies {
    /// Controllers act within a tick or two: API and controller tests that do not care about ordering.
    Instant,
    /// One namespace migrates in a few seconds, with pods still taking several ticks (engine tests).
    E2e,
    /// Slow enough that a fleet's namespaces overlap in time (fleet tests).
    Fleet,
    /// Policy carry-over tests: real ordering between restarts and the waypoint.
    Policies,
    /// The demo's latencies (a fast real cluster), so benchmark windows are in realistic units.
    Demo,
}

impl Latencies {
    /// The profile's delays, in meshsim's own type.
    pub fn latencies(self) -> meshsim::settings::Latencies {
        //                      tick start ready term  cni  waypoint job
        let (t, s, r, x, c, w, j) = match self {
            Latencies::Instant => (10, 10, 10, 10, 5, 10, 10),
            Latencies::E2e => (10, 30, 30, 20, 10, 20, 10),
            Latencies::Fleet => (10, 40, 40, 20, 10, 20, 20),
            Latencies::Policies => (10, 40, 40, 30, 10, 30, 20),
            Latencies::Demo => (20, 250, 250, 150, 80, 200, 100),
        };
        meshsim::settings::Latencies {
            controller_tick_ms: t,
            pod_start_ms: s,
            pod_ready_ms: r,
            pod_terminate_ms: x,
            cni_enroll_ms: c,
            waypoint_program_ms: w,
            job_run_ms: j,
            api_ms: 0,
        }
    }

    /// meshsim settings with these latencies (everything else at meshsim's defaults).
    pub fn settings(self) -> meshsim::Settings {
        meshsim::Settings {
            latency: self.latencies(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_reach_meshsim_settings() {
        let s = Latencies::Fleet.settings();
        assert_eq!(s.latency.pod_start_ms, 40);
        assert_eq!(s.latency.api_ms, 0);
        assert_eq!(Latencies::Demo.settings().latency.pod_ready_ms, 250);
        assert_eq!(s.istio.install, meshsim::Settings::default().istio.install);
    }

    #[test]
    fn the_binary_is_found_in_the_profile_directory() {
        let exe = std::env::consts::EXE_SUFFIX;
        let want = |p: &str| PathBuf::from(format!("{p}/ambient-migrate{exe}"));
        assert_eq!(bin_beside(Path::new("/t/debug/deps/e2e-1a2b")), want("/t/debug"));
        assert_eq!(
            bin_beside(Path::new("/t/release/examples/bench")),
            want("/t/release")
        );
        assert_eq!(bin_beside(Path::new("/t/debug/other")), want("/t/debug"));
    }
}
