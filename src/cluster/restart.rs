//! `kubectl rollout restart`, made idempotent for resumed runs: the engine chooses (and journals) the
//! `restartedAt` value before patching; a template that already carries it is not patched again.
//! The patch is the strategic merge patch kubectl sends (kubectl pkg/polymorphichelpers/objectrestarter.go,
//! observed on the wire in docs/reference/kubectl-wire.md).

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::Patch;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Cluster, ClusterError, obj_name};

/// The pod-template annotation kubectl sets on restart.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";

/// Workload kinds that can be restarted and waited on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl WorkloadKind {
    /// The kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Result of [`Cluster::restart`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartOutcome {
    /// `metadata.generation` after the patch (or now, when nothing was sent): wait for
    /// `status.observedGeneration >= generation`.
    pub generation: i64,
    /// False when the template already carried the `restartedAt` value.
    pub patched: bool,
}

/// kubectl's value: RFC 3339 with second precision (UTC).
pub fn restarted_at_now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Whether a pod template already carries `restartedAt` = `restarted_at` (the restart was sent before).
pub(crate) fn template_carries(t: &k8s_openapi::api::core::v1::PodTemplateSpec, restarted_at: &str) -> bool {
    t.metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(RESTARTED_AT_ANNOTATION))
        .map(String::as_str)
        == Some(restarted_at)
}

impl Cluster {
    /// Sends the restart patch without reading the workload first, for a caller that already knows it
    /// (from a watch cache): not paused, template not yet carrying `restarted_at`. Returns the generation
    /// after the patch.
    pub async fn patch_restart(
        &self,
        kind: WorkloadKind,
        ns: &str,
        name: &str,
        restarted_at: &str,
    ) -> Result<RestartOutcome, ClusterError> {
        let patch_what = format!("restart {}", obj_name(kind.as_str(), Some(ns), name));
        let body =
            json!({"spec":{"template":{"metadata":{"annotations":{RESTARTED_AT_ANNOTATION: restarted_at}}}}});
        let pp = self.patch_params();
        let p = Patch::Strategic(&body);
        tracing::info!(workload = %obj_name(kind.as_str(), Some(ns), name), restarted_at, dry_run = self.dry_run(), "restarting");
        macro_rules! go {
            ($t:ty) => {{
                let api: kube::Api<$t> = self.namespaced(ns);
                let new = self.call(&patch_what, || api.patch(name, &pp, &p)).await?;
                new.metadata.generation.unwrap_or(0)
            }};
        }
        let generation = match kind {
            WorkloadKind::Deployment => go!(Deployment),
            WorkloadKind::StatefulSet => go!(StatefulSet),
            WorkloadKind::DaemonSet => go!(DaemonSet),
        };
        Ok(RestartOutcome {
            generation,
            patched: true,
        })
    }

    /// Restarts a workload by setting `spec.template.metadata.annotations[restartedAt] = restarted_at`,
    /// unless the template already has that value. A paused Deployment is refused, as kubectl does.
    pub async fn restart(
        &self,
        kind: WorkloadKind,
        ns: &str,
        name: &str,
        restarted_at: &str,
    ) -> Result<RestartOutcome, ClusterError> {
        let get_what = format!("get {}", obj_name(kind.as_str(), Some(ns), name));
        macro_rules! read {
            ($t:ty, $paused:expr) => {{
                let api: kube::Api<$t> = self.namespaced(ns);
                let cur = self.call(&get_what, || api.get(name)).await?;
                let paused: fn(&$t) -> bool = $paused;
                (
                    cur.metadata.generation.unwrap_or(0),
                    template_carries(&cur.spec.template, restarted_at),
                    paused(&cur),
                )
            }};
        }
        let (generation, carries, paused) = match kind {
            WorkloadKind::Deployment => read!(Deployment, |d| d.spec.paused.unwrap_or(false)),
            WorkloadKind::StatefulSet => read!(StatefulSet, |_| false),
            WorkloadKind::DaemonSet => read!(DaemonSet, |_| false),
        };
        if carries {
            return Ok(RestartOutcome {
                generation,
                patched: false,
            });
        }
        if paused {
            return Err(ClusterError::Refused {
                what: format!("restart {}", obj_name(kind.as_str(), Some(ns), name)),
                message: "can't restart paused deployment (run `kubectl rollout resume` first)".into(),
            });
        }
        self.patch_restart(kind, ns, name, restarted_at).await
    }
}
