//! Runs one measurement of any probe kind: `http` from the runner, `job` as a curl Job in the cluster.

use super::policy::Measurement;
use super::spec::{ProbeKind, ProbeSpec};
use crate::cluster::Cluster;

/// One measurement of `spec` (per-request timeout: `spec.policy.timeout` for http probes, the Job
/// probe's own `timeout` for job probes).
pub async fn run_once(cluster: &Cluster, spec: &ProbeSpec) -> Measurement {
    let m = match &spec.kind {
        ProbeKind::Http(h) => super::http::measure(h, &spec.expect, spec.policy.timeout.0).await,
        ProbeKind::Job(j) => super::job::measure(cluster, &spec.name, j, &spec.expect).await,
    };
    tracing::debug!(probe = %spec.name, measurement = ?m, "probe measured");
    m
}
