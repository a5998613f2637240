//! kubectl's rollout-status rules, exactly (kubernetes/kubectl `pkg/polymorphichelpers/rollout_status.go`:
//! `DeploymentStatusViewer`, `StatefulSetStatusViewer`, `DaemonSetStatusViewer`; see
//! `docs/reference/progressive-delivery-peers.md` §4.1-4.2), plus a `min_generation` guard: the generation returned
//! by our restart patch must be the one observed, so a stale read of the object before the patch can never
//! look "done".

use super::{GateOutcome, GateResult};
use crate::steps::ObjRef;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use serde::{Deserialize, Serialize};

/// kubectl's verdict for one workload: done, still waiting (message), or failed (error message).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "message", rename_all = "kebab-case")]
pub enum RolloutStatus {
    /// Rolled out.
    Done(String),
    /// Not yet; keep watching until the deadline.
    Waiting(String),
    /// Will not finish by itself (progress deadline exceeded, unsupported strategy).
    Failed(String),
}

impl RolloutStatus {
    /// True when `Done`.
    pub fn is_done(&self) -> bool {
        matches!(self, RolloutStatus::Done(_))
    }
}

fn stale(generation: i64, min_generation: Option<i64>) -> bool {
    min_generation.is_some_and(|m| generation < m)
}

/// `kubectl rollout status deployment/<name>` (without `--revision`) on one read of the object.
pub fn deployment_status(d: &Deployment, min_generation: Option<i64>) -> RolloutStatus {
    let name = d.metadata.name.as_deref().unwrap_or("");
    let generation = d.metadata.generation.unwrap_or(0);
    if stale(generation, min_generation) {
        return RolloutStatus::Waiting(format!(
            "Waiting for deployment {name:?} restart to be visible (generation {generation} < {})...",
            min_generation.unwrap_or(0)
        ));
    }
    let st = d.status.clone().unwrap_or_default();
    if generation > st.observed_generation.unwrap_or(0) {
        return RolloutStatus::Waiting("Waiting for deployment spec update to be observed...".into());
    }
    let progressing = st
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_.as_deref() == Some("Progressing"));
    if progressing.is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded")) {
        return RolloutStatus::Failed(format!("deployment {name:?} exceeded its progress deadline"));
    }
    let updated = st.updated_replicas.unwrap_or(0);
    let replicas = st.replicas.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(0);
    if let Some(want) = d.spec.replicas
        && updated < want
    {
        return RolloutStatus::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {updated} out of {want} new replicas have been updated..."
        ));
    }
    if replicas > updated {
        return RolloutStatus::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
            replicas - updated
        ));
    }
    if available < updated {
        return RolloutStatus::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."
        ));
    }
    RolloutStatus::Done(format!("deployment {name:?} successfully rolled out"))
}

/// `kubectl rollout status statefulset/<name>`. An absent `updateStrategy.type` is treated as the API
/// default `RollingUpdate`.
pub fn statefulset_status(s: &StatefulSet, min_generation: Option<i64>) -> RolloutStatus {
    let name = s.metadata.name.as_deref().unwrap_or("");
    let generation = s.metadata.generation.unwrap_or(0);
    let spec = &s.spec;
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let ty = strategy.type_.as_deref().unwrap_or("RollingUpdate");
    if ty != "RollingUpdate" {
        return RolloutStatus::Failed(format!(
            "statefulset {name:?}: rollout status is only available for RollingUpdate strategy type (has {ty}); \
             pods are not replaced by a restart"
        ));
    }
    if stale(generation, min_generation) {
        return RolloutStatus::Waiting(format!(
            "Waiting for statefulset {name:?} restart to be visible (generation {generation} < {})...",
            min_generation.unwrap_or(0)
        ));
    }
    let st = s.status.clone().unwrap_or_default();
    let observed = st.observed_generation.unwrap_or(0);
    if observed == 0 || generation > observed {
        return RolloutStatus::Waiting("Waiting for statefulset spec update to be observed...".into());
    }
    let ready = st.ready_replicas.unwrap_or(0);
    let updated = st.updated_replicas.unwrap_or(0);
    if let Some(want) = spec.replicas
        && ready < want
    {
        return RolloutStatus::Waiting(format!("Waiting for {} pods to be ready...", want - ready));
    }
    if let Some(ru) = &strategy.rolling_update {
        if let (Some(want), Some(partition)) = (spec.replicas, ru.partition)
            && updated < want - partition
        {
            return RolloutStatus::Waiting(format!(
                "Waiting for partitioned roll out to finish: {updated} out of {} new pods have been updated...",
                want - partition
            ));
        }
        return RolloutStatus::Done(format!(
            "partitioned roll out complete: {updated} new pods have been updated..."
        ));
    }
    let update_rev = st.update_revision.clone().unwrap_or_default();
    if update_rev != st.current_revision.clone().unwrap_or_default() {
        return RolloutStatus::Waiting(format!(
            "waiting for statefulset rolling update to complete {updated} pods at revision {update_rev}..."
        ));
    }
    RolloutStatus::Done(format!(
        "statefulset rolling update complete {} pods at revision {update_rev}...",
        st.current_replicas.unwrap_or(0)
    ))
}

/// `kubectl rollout status daemonset/<name>`. An absent `updateStrategy.type` is treated as `RollingUpdate`.
pub fn daemonset_status(d: &DaemonSet, min_generation: Option<i64>) -> RolloutStatus {
    let name = d.metadata.name.as_deref().unwrap_or("");
    let generation = d.metadata.generation.unwrap_or(0);
    let ty = d
        .spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.clone())
        .unwrap_or_else(|| "RollingUpdate".into());
    if ty != "RollingUpdate" {
        return RolloutStatus::Failed(format!(
            "daemon set {name:?}: rollout status is only available for RollingUpdate strategy type (has {ty})"
        ));
    }
    if stale(generation, min_generation) {
        return RolloutStatus::Waiting(format!(
            "Waiting for daemon set {name:?} restart to be visible (generation {generation} < {})...",
            min_generation.unwrap_or(0)
        ));
    }
    let st = d.status.clone().unwrap_or_default();
    if generation > st.observed_generation.unwrap_or(0) {
        return RolloutStatus::Waiting("Waiting for daemon set spec update to be observed...".into());
    }
    let updated = st.updated_number_scheduled.unwrap_or(0);
    let desired = st.desired_number_scheduled;
    let available = st.number_available.unwrap_or(0);
    if updated < desired {
        return RolloutStatus::Waiting(format!(
            "Waiting for daemon set {name:?} rollout to finish: {updated} out of {desired} new pods have been updated..."
        ));
    }
    if available < desired {
        return RolloutStatus::Waiting(format!(
            "Waiting for daemon set {name:?} rollout to finish: {available} of {desired} updated pods are available..."
        ));
    }
    RolloutStatus::Done(format!("daemon set {name:?} successfully rolled out"))
}

/// Aggregate the per-workload ends of the rollout waits into the `rollout` gate: each workload's outcome
/// (Pass once kubectl's rules hold, Fail when they cannot any more, Timeout at the deadline) and message;
/// the gate takes the first outcome that is not a pass, and lists every message.
pub fn rollout_gate(results: &[(ObjRef, GateOutcome, String)]) -> GateResult {
    let worst = results
        .iter()
        .map(|(_, o, _)| *o)
        .find(|o| *o != GateOutcome::Pass)
        .unwrap_or(GateOutcome::Pass);
    GateResult::new(
        crate::steps::gate_names::ROLLOUT,
        worst,
        serde_json::Value::Array(
            results
                .iter()
                .map(|(w, o, m)| serde_json::json!({"workload": w.to_string(), "outcome": o, "message": m}))
                .collect(),
        ),
        results
            .iter()
            .map(|(_, _, m)| m.clone())
            .collect::<Vec<_>>()
            .join("; "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dep(v: serde_json::Value) -> Deployment {
        serde_json::from_value(v).unwrap()
    }
    fn d(generation: i64, replicas: i32, status: serde_json::Value) -> Deployment {
        dep(json!({"metadata": {"name": "api", "generation": generation},
                   "spec": {"replicas": replicas, "selector": {}, "template": {}}, "status": status}))
    }

    #[test]
    fn deployment_spec_not_observed() {
        let s = deployment_status(&d(3, 2, json!({"observedGeneration": 2})), None);
        assert_eq!(
            s,
            RolloutStatus::Waiting("Waiting for deployment spec update to be observed...".into())
        );
    }

    #[test]
    fn deployment_min_generation_guard() {
        let st =
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2});
        assert!(deployment_status(&d(2, 2, st.clone()), None).is_done());
        let s = deployment_status(&d(2, 2, st), Some(3));
        assert!(matches!(s, RolloutStatus::Waiting(m) if m.contains("restart to be visible")));
    }

    #[test]
    fn deployment_progress_deadline() {
        let s = deployment_status(
            &d(
                2,
                2,
                json!({"observedGeneration": 2, "conditions": [
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}),
            ),
            None,
        );
        assert_eq!(
            s,
            RolloutStatus::Failed("deployment \"api\" exceeded its progress deadline".into())
        );
    }

    #[test]
    fn deployment_updated_replicas() {
        let s = deployment_status(
            &d(
                2,
                3,
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1}),
            ),
            None,
        );
        assert!(
            matches!(s, RolloutStatus::Waiting(m) if m.contains("1 out of 3 new replicas have been updated"))
        );
    }

    #[test]
    fn deployment_old_replicas_pending() {
        let s = deployment_status(
            &d(
                2,
                2,
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}),
            ),
            None,
        );
        assert!(
            matches!(s, RolloutStatus::Waiting(m) if m.contains("1 old replicas are pending termination"))
        );
    }

    #[test]
    fn deployment_available() {
        let s = deployment_status(
            &d(
                2,
                2,
                json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}),
            ),
            None,
        );
        assert!(
            matches!(s, RolloutStatus::Waiting(m) if m.contains("1 of 2 updated replicas are available"))
        );
    }

    #[test]
    fn deployment_done_and_nil_replicas() {
        let s = deployment_status(
            &d(
                2,
                2,
                json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
            ),
            None,
        );
        assert_eq!(
            s,
            RolloutStatus::Done("deployment \"api\" successfully rolled out".into())
        );
        // spec.replicas unset: kubectl skips the updated-replicas check.
        let x = dep(
            json!({"metadata": {"name": "x", "generation": 1}, "spec": {"selector": {}, "template": {}},
                           "status": {"observedGeneration": 1}}),
        );
        assert!(deployment_status(&x, None).is_done());
    }

    fn sts(v: serde_json::Value) -> StatefulSet {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn statefulset_branches() {
        let on_delete = sts(json!({"metadata": {"name": "db", "generation": 1},
            "spec": {"replicas": 1, "selector": {}, "template": {}, "updateStrategy": {"type": "OnDelete"}}}));
        assert!(
            matches!(statefulset_status(&on_delete, None), RolloutStatus::Failed(m) if m.contains("RollingUpdate"))
        );
        let unobserved = sts(json!({"metadata": {"name": "db", "generation": 1},
            "spec": {"replicas": 1, "selector": {}, "template": {}}, "status": {"replicas": 1, "observedGeneration": 0}}));
        assert!(
            matches!(statefulset_status(&unobserved, None), RolloutStatus::Waiting(m) if m.contains("observed"))
        );
        let not_ready = sts(json!({"metadata": {"name": "db", "generation": 2},
            "spec": {"replicas": 3, "selector": {}, "template": {}},
            "status": {"replicas": 3, "observedGeneration": 2, "readyReplicas": 1}}));
        assert_eq!(
            statefulset_status(&not_ready, None),
            RolloutStatus::Waiting("Waiting for 2 pods to be ready...".into())
        );
        let partition = sts(json!({"metadata": {"name": "db", "generation": 2},
            "spec": {"replicas": 3, "selector": {}, "template": {},
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}},
            "status": {"replicas": 3, "observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 2}}));
        assert!(
            matches!(statefulset_status(&partition, None), RolloutStatus::Waiting(m) if m.contains("2 out of 3"))
        );
        let partition_done = sts(json!({"metadata": {"name": "db", "generation": 2},
            "spec": {"replicas": 3, "selector": {}, "template": {},
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}},
            "status": {"replicas": 3, "observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 2}}));
        assert!(
            matches!(statefulset_status(&partition_done, None), RolloutStatus::Done(m) if m.contains("partitioned"))
        );
        let revs = |cur: &str| {
            sts(json!({"metadata": {"name": "db", "generation": 2},
                "spec": {"replicas": 1, "selector": {}, "template": {}, "updateStrategy": {"type": "RollingUpdate"}},
                "status": {"replicas": 1, "observedGeneration": 2, "readyReplicas": 1, "updatedReplicas": 1,
                           "currentReplicas": 1, "currentRevision": cur, "updateRevision": "db-2"}}))
        };
        assert!(
            matches!(statefulset_status(&revs("db-1"), None), RolloutStatus::Waiting(m) if m.contains("db-2"))
        );
        assert!(statefulset_status(&revs("db-2"), None).is_done());
        assert!(!statefulset_status(&revs("db-2"), Some(3)).is_done());
    }

    fn ds(v: serde_json::Value) -> DaemonSet {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn daemonset_branches() {
        let mk = |generation: i64, st: serde_json::Value| {
            ds(json!({"metadata": {"name": "ztunnel", "generation": generation},
                      "spec": {"selector": {}, "template": {}}, "status": st}))
        };
        let on_delete = ds(json!({"metadata": {"name": "x", "generation": 1},
            "spec": {"selector": {}, "template": {}, "updateStrategy": {"type": "OnDelete"}}}));
        assert!(matches!(
            daemonset_status(&on_delete, None),
            RolloutStatus::Failed(_)
        ));
        let base = |obs: i64, upd: i32, avail: i32| {
            json!({"observedGeneration": obs, "desiredNumberScheduled": 3, "currentNumberScheduled": 3,
                   "numberMisscheduled": 0, "numberReady": avail, "updatedNumberScheduled": upd, "numberAvailable": avail})
        };
        assert!(
            matches!(daemonset_status(&mk(2, base(1, 3, 3)), None), RolloutStatus::Waiting(m) if m.contains("observed"))
        );
        assert!(
            matches!(daemonset_status(&mk(2, base(2, 2, 3)), None), RolloutStatus::Waiting(m) if m.contains("2 out of 3 new pods"))
        );
        assert!(
            matches!(daemonset_status(&mk(2, base(2, 3, 1)), None), RolloutStatus::Waiting(m) if m.contains("1 of 3 updated pods"))
        );
        assert!(daemonset_status(&mk(2, base(2, 3, 3)), None).is_done());
        assert!(!daemonset_status(&mk(2, base(2, 3, 3)), Some(3)).is_done());
    }

    #[test]
    fn gate_aggregation() {
        let a = ObjRef::new("apps/v1", "Deployment", "app", "a");
        let b = ObjRef::new("apps/v1", "Deployment", "app", "b");
        let g = rollout_gate(&[
            (a.clone(), GateOutcome::Pass, "a: rolled out".into()),
            (b.clone(), GateOutcome::Timeout, "b: 1 of 2 updated".into()),
        ]);
        assert_eq!(g.outcome, GateOutcome::Timeout);
        assert_eq!(g.message, "a: rolled out; b: 1 of 2 updated");
        assert_eq!(g.measured[1]["workload"], "Deployment/app/b");
        let g = rollout_gate(&[
            (a, GateOutcome::Pass, "ok".into()),
            (b, GateOutcome::Pass, "ok".into()),
        ]);
        assert!(g.passed());
        assert!(rollout_gate(&[]).passed());
    }
}
