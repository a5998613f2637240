//! The per-namespace migration steps, the phase state machine and the change records journaled for rollback.
//!
//! Pure data: the seed procedure's six steps (`docs/reference/seed-enable-ambient-mode.txt`) and the step table of
//! `docs/design.md` §3, as values the executor and the reports read. Rollback planning from a journal is in [`plan`].

pub mod plan;

use serde::{Deserialize, Serialize};
use std::fmt;

/// One of the six seed steps, numbered as in the seed and docs/design.md §3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Step 1: label the namespace (or Services) `istio.io/use-waypoint=<name>`.
    ActivateWaypoint = 1,
    /// Step 2: label the namespace `istio.io/dataplane-mode=ambient`.
    EnableAmbient = 2,
    /// Step 3: remove `istio-injection` / `istio.io/rev` from the namespace.
    RemoveInjection = 3,
    /// Step 4: rollout-restart the workloads.
    Restart = 4,
    /// Step 5: delete replaced selector L7 policies, VirtualServices and DestinationRules.
    RemoveSidecarPolicies = 5,
    /// Step 6: read-only validation.
    Validate = 6,
}

impl Step {
    /// All steps in execution order.
    pub const ALL: [Step; 6] = [
        Step::ActivateWaypoint,
        Step::EnableAmbient,
        Step::RemoveInjection,
        Step::Restart,
        Step::RemoveSidecarPolicies,
        Step::Validate,
    ];

    /// The seed's step number (1..=6).
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The step with this number, if any.
    pub fn from_number(n: u8) -> Option<Step> {
        Step::ALL.get((n as usize).checked_sub(1)?).copied()
    }

    /// The following step, `None` after `Validate`.
    pub fn next(self) -> Option<Step> {
        Step::from_number(self.number() + 1)
    }

    /// The preceding step, `None` before `ActivateWaypoint`.
    pub fn prev(self) -> Option<Step> {
        Step::from_number(self.number().checked_sub(1)?)
    }

    /// Stable kebab-case name (same as serde).
    pub fn name(self) -> &'static str {
        match self {
            Step::ActivateWaypoint => "activate-waypoint",
            Step::EnableAmbient => "enable-ambient",
            Step::RemoveInjection => "remove-injection",
            Step::Restart => "restart",
            Step::RemoveSidecarPolicies => "remove-sidecar-policies",
            Step::Validate => "validate",
        }
    }

    /// The docs/design.md §3 table row of this step.
    pub fn info(self) -> &'static StepInfo {
        &STEP_TABLE[self as usize - 1]
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.number(), self.name())
    }
}

/// One row of docs/design.md §3's step table: what the step does, what gates it, how it is undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StepInfo {
    /// The step this row describes.
    pub step: Step,
    /// Human description of the action.
    pub action: &'static str,
    /// Gate names (as they appear in `GateResult.gate`) that must all pass before the next step.
    pub gates: &'static [&'static str],
    /// Human description of the rollback action (`None` for read-only steps).
    pub rollback: Option<&'static str>,
}

/// Gate names; shared by executors, reports and tests.
pub mod gate_names {
    /// Waypoint Gateway accepted, programmed, addressed, Deployment ready, Services bound.
    pub const WAYPOINT_READY: &str = "waypoint-ready";
    /// Namespace carries the expected labels.
    pub const NAMESPACE_LABELS: &str = "namespace-labels";
    /// ztunnel DaemonSet rolled out and ready.
    pub const ZTUNNEL_READY: &str = "ztunnel-ready";
    /// Traffic probes (non-L7) green.
    pub const PROBES: &str = "probes";
    /// kubectl rollout status rules per workload.
    pub const ROLLOUT: &str = "rollout";
    /// Every new pod sidecar-free, enrolled (`ambient.istio.io/redirection=enabled`) and Ready.
    pub const PODS_AMBIENT: &str = "pods-ambient";
    /// Continuous probes within the error budget during the restart.
    pub const PROBES_CONTINUOUS: &str = "continuous-probes";
    /// L7 probes (allowed and denied requests).
    pub const PROBES_L7: &str = "probes-l7";
    /// No selector policy that ztunnel would reject or translate lossily remains.
    pub const NO_ZTUNNEL_REJECTED_POLICY: &str = "no-ztunnel-rejected-policy";
    /// Rollback: every pod has `istio-proxy` present and ready.
    pub const PODS_SIDECAR: &str = "pods-sidecar";
    /// Rollback: restored objects equal the backup.
    pub const BACKUP_EQUAL: &str = "backup-equal";
    /// Any step: its action could not be applied (an API error that is not a gate verdict).
    pub const STEP_ACTION: &str = "step-action";

    /// Gates any step may report besides its own (see [`super::StepInfo::gates`]).
    pub const ANY_STEP: &[&str] = &[STEP_ACTION];
    /// Gates a rollback reports.
    pub const ROLLBACK: &[&str] = &[ROLLOUT, PODS_SIDECAR, PROBES, BACKUP_EQUAL];
    /// Every gate name.
    pub const ALL: &[&str] = &[
        WAYPOINT_READY,
        NAMESPACE_LABELS,
        ZTUNNEL_READY,
        PROBES,
        ROLLOUT,
        PODS_AMBIENT,
        PROBES_CONTINUOUS,
        PROBES_L7,
        NO_ZTUNNEL_REJECTED_POLICY,
        PODS_SIDECAR,
        BACKUP_EQUAL,
        STEP_ACTION,
    ];
}

/// The gate names of `reported` that `step`'s table row does not list (nor [`gate_names::ANY_STEP`]): a
/// gate the executor reports must have its rule here first.
pub fn unlisted_gates<'a>(step: Step, reported: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    reported
        .into_iter()
        .filter(|g| !step.info().gates.contains(g) && !gate_names::ANY_STEP.contains(g))
        .collect()
}

use gate_names as g;

/// docs/design.md §3's table as data.
pub static STEP_TABLE: [StepInfo; 6] = [
    StepInfo {
        step: Step::ActivateWaypoint,
        action: "create bridge policies (and, with policies.migration = apply, twins), then label the \
                 namespace (or listed Services) istio.io/use-waypoint=<waypoint>",
        // Probes run when twins were applied (policies.migration = apply).
        gates: &[g::WAYPOINT_READY, g::PROBES],
        rollback: Some(
            "remove istio.io/use-waypoint (restore the prior value if any), delete the bridges and twins it \
             created",
        ),
    },
    StepInfo {
        step: Step::EnableAmbient,
        action: "label the namespace istio.io/dataplane-mode=ambient",
        gates: &[g::NAMESPACE_LABELS, g::ZTUNNEL_READY, g::PROBES],
        rollback: Some("remove istio.io/dataplane-mode (restore the prior value if any)"),
    },
    StepInfo {
        step: Step::RemoveInjection,
        action: "remove the namespace injection label (istio-injection or istio.io/rev), remembering it",
        gates: &[g::NAMESPACE_LABELS, g::PROBES],
        rollback: Some("restore the exact original injection label"),
    },
    StepInfo {
        step: Step::Restart,
        action: "rollout-restart workloads in bounded batches, those behind a bridged policy last",
        // The waypoint is activated here instead of at step 1 with activation_order = after-restart.
        gates: &[
            g::ROLLOUT,
            g::PODS_AMBIENT,
            g::WAYPOINT_READY,
            g::PROBES_CONTINUOUS,
        ],
        rollback: Some(
            "restore the injection label, restart the restarted workloads, require istio-proxy present and \
             ready in every pod, probes green",
        ),
    },
    StepInfo {
        step: Step::RemoveSidecarPolicies,
        action: "delete replaced selector L7 AuthorizationPolicies (and bridges), and VirtualServices / \
                 DestinationRules replaced by an HTTPRoute",
        gates: &[g::PROBES_L7, g::NO_ZTUNNEL_REJECTED_POLICY],
        rollback: Some("re-apply the deleted objects from the backup, verify equality"),
    },
    StepInfo {
        step: Step::Validate,
        action: "read-only validation",
        gates: &[g::PODS_AMBIENT, g::PROBES, g::PROBES_L7],
        rollback: None,
    },
];

string_enum! {
    /// What a failed gate does to its namespace (`migration.on_gate_failure`): read from the settings and
    /// acted on by the engine, one type for both.
    #[derive(Default)]
    OnGateFailure {
        /// Undo the steps done so far, in reverse, and verify (default).
        #[default]
        Rollback = "rollback",
        /// Stop and leave the namespace as it is, recording why (a human decides).
        Hold = "hold",
    }
}

/// Where a namespace is in the migration (journaled; serde kebab-case, externally tagged:
/// `"pending"`, `{"in-step":"restart"}`, `{"rolling-back":{"from":"restart"}}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Nothing done yet.
    Pending,
    /// Preflight assessment running or passed.
    Preflight,
    /// Backup taken; next is step 1.
    BackedUp,
    /// The step's mutation is being applied or gated.
    InStep(Step),
    /// The step's gates passed.
    StepDone(Step),
    /// All steps done and validated.
    Migrated,
    /// A gate failed at `from`; undoing `from..=1` in reverse.
    RollingBack {
        /// The step whose gate failed (or the last step reached).
        from: Step,
    },
    /// Rollback finished and verified.
    RolledBack,
    /// Rollback could not be completed or verified: a human is needed.
    RollbackFailed,
    /// Stopped on a gate failure at step `at` with `on_gate_failure = "hold"`.
    Held {
        /// The step whose gate failed.
        at: Step,
    },
}

/// What happened, fed to [`next`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    /// Preflight found no blocker.
    PreflightPassed,
    /// The backup was written.
    BackedUp,
    /// The current step's mutation begins.
    StepStarted,
    /// All gates of the current step passed.
    GatesPassed,
    /// A gate failed (or timed out); the run rolls back.
    GateFailed,
    /// A gate failed and `on_gate_failure = "hold"`.
    GateFailedHold,
    /// The rollback is done and verified.
    RollbackDone,
    /// The rollback failed.
    RollbackError,
    /// An operator asked for a rollback (`ambient-migrate rollback`).
    RollbackRequested,
}

/// Errors of the state machine.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StepError {
    /// The event makes no sense in this phase.
    #[error(
        "event {event:?} is not valid in phase {phase:?}; the journal may be inconsistent: inspect it with `ambient-migrate status`"
    )]
    InvalidTransition {
        /// Current phase.
        phase: Phase,
        /// Offending event.
        event: Event,
    },
}

impl Phase {
    /// The last step whose mutation may have been applied (for rollback); `None` before step 1 started.
    pub fn reached_step(self) -> Option<Step> {
        match self {
            Phase::InStep(s)
            | Phase::StepDone(s)
            | Phase::RollingBack { from: s }
            | Phase::Held { at: s } => Some(s),
            Phase::Migrated => Some(Step::Validate),
            _ => None,
        }
    }

    /// True when the namespace carries none of our changes: nothing was mutated yet, or a rollback
    /// already undid everything and was verified. An operator rollback there has nothing to do, and a
    /// repeated one (a CI retry) must succeed rather than page someone.
    pub fn nothing_to_undo(self) -> bool {
        matches!(
            self,
            Phase::Pending | Phase::Preflight | Phase::BackedUp | Phase::RolledBack
        )
    }

    /// True for phases where nothing more happens without a human or a new run.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Migrated | Phase::RolledBack | Phase::RollbackFailed | Phase::Held { .. }
        )
    }
}

/// The phase state machine of docs/design.md §3.
///
/// `Pending -> Preflight -> BackedUp -> InStep(1) -> StepDone(1) -> InStep(2) ... -> StepDone(6) -> Migrated`;
/// a failed gate in `InStep(k)` moves to `RollingBack{from: k}`, then `RolledBack` or `RollbackFailed`;
/// `GateFailedHold` moves to `Held{at: k}`. `RollbackRequested` is accepted from any step phase, `Held`
/// and `Migrated` (operator rollback).
pub fn next(phase: Phase, event: Event) -> Result<Phase, StepError> {
    use Event as E;
    use Phase as P;
    let invalid = Err(StepError::InvalidTransition { phase, event });
    Ok(match (phase, event) {
        (P::Pending, E::PreflightPassed) => P::Preflight,
        (P::Preflight, E::BackedUp) => P::BackedUp,
        (P::BackedUp, E::StepStarted) => P::InStep(Step::ActivateWaypoint),
        (P::StepDone(s), E::StepStarted) => match s.next() {
            Some(n) => P::InStep(n),
            None => return invalid,
        },
        (P::InStep(s), E::GatesPassed) => {
            if s == Step::Validate {
                P::Migrated
            } else {
                P::StepDone(s)
            }
        }
        (P::InStep(s), E::GateFailed) => P::RollingBack { from: s },
        (P::InStep(s), E::GateFailedHold) => P::Held { at: s },
        (P::InStep(s) | P::StepDone(s), E::RollbackRequested) => P::RollingBack { from: s },
        (P::Migrated, E::RollbackRequested) => P::RollingBack { from: Step::Validate },
        (P::Held { at }, E::RollbackRequested) => P::RollingBack { from: at },
        (P::RollingBack { .. }, E::RollbackDone) => P::RolledBack,
        (P::RollingBack { .. }, E::RollbackError) => P::RollbackFailed,
        // An operator retries a failed rollback once its cause is fixed (`rollback -n NS`, `--force` for
        // conflicts): every journaled change is undone again; each undo is idempotent.
        (P::RollbackFailed, E::RollbackRequested) => P::RollingBack { from: Step::Validate },
        _ => return invalid,
    })
}

/// A reference to a Kubernetes object; Display as `kind/namespace/name` (or `kind/name` when cluster-scoped).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjRef {
    /// `apiVersion`, e.g. `security.istio.io/v1`.
    pub api_version: String,
    /// `kind`, e.g. `AuthorizationPolicy`.
    pub kind: String,
    /// Namespace, `None` for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Object name.
    pub name: String,
}

impl ObjRef {
    /// A namespaced object reference.
    pub fn new(api_version: &str, kind: &str, namespace: &str, name: &str) -> Self {
        ObjRef {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }

    /// A cluster-scoped object reference.
    pub fn cluster(api_version: &str, kind: &str, name: &str) -> Self {
        ObjRef {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: None,
            name: name.into(),
        }
    }

    /// The Namespace object `name`.
    pub fn namespace(name: &str) -> Self {
        ObjRef::cluster("v1", "Namespace", name)
    }

    /// Built from an object's JSON (`apiVersion`, `kind`, `metadata.namespace`, `metadata.name`).
    pub fn from_value(v: &serde_json::Value) -> Self {
        let s = |p: &str| v.pointer(p).and_then(|x| x.as_str()).map(str::to_string);
        ObjRef {
            api_version: s("/apiVersion").unwrap_or_default(),
            kind: s("/kind").unwrap_or_default(),
            namespace: s("/metadata/namespace"),
            name: s("/metadata/name").unwrap_or_default(),
        }
    }
}

impl fmt::Display for ObjRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{}/{}", self.kind, ns, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// A label set, changed or removed on a Namespace or Service; `before` is what rollback restores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelChange {
    /// The labelled object.
    pub target: ObjRef,
    /// Label key.
    pub key: String,
    /// Value before the change (`None` = absent).
    pub before: Option<String>,
    /// Value after the change (`None` = removed).
    pub after: Option<String>,
}

/// One journaled mutation, with what rollback needs to undo it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Change {
    /// A label set or removed at `step`.
    Label {
        /// Step that made the change.
        step: Step,
        /// What changed.
        #[serde(flatten)]
        change: LabelChange,
    },
    /// A workload restarted (`kubectl.kubernetes.io/restartedAt` set to `restarted_at`).
    Restarted {
        /// Step that made the change.
        step: Step,
        /// Deployment / StatefulSet / DaemonSet.
        workload: ObjRef,
        /// The restartedAt annotation value we wrote.
        restarted_at: String,
        /// The generation returned by the restart patch (the rollout gate's `min_generation`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        generation: Option<i64>,
    },
    /// An object we created (bridge or twin policy).
    Created {
        /// Step that made the change.
        step: Step,
        /// The created object.
        object: ObjRef,
        /// `ambient-migrate.io/role` value (`bridge`, `twin`).
        role: String,
    },
    /// An object we deleted; restorable from the backup.
    Deleted {
        /// Step that made the change.
        step: Step,
        /// The deleted object.
        object: ObjRef,
    },
}

impl Change {
    /// The step that recorded this change.
    pub fn step(&self) -> Step {
        match self {
            Change::Label { step, .. }
            | Change::Restarted { step, .. }
            | Change::Created { step, .. }
            | Change::Deleted { step, .. } => *step,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_phases_without_our_changes_have_nothing_to_undo() {
        for p in [
            Phase::Pending,
            Phase::Preflight,
            Phase::BackedUp,
            Phase::RolledBack,
        ] {
            assert!(p.nothing_to_undo(), "{p:?}");
        }
        for p in [
            Phase::InStep(Step::ActivateWaypoint),
            Phase::StepDone(Step::Restart),
            Phase::Migrated,
            Phase::RollingBack { from: Step::Restart },
            Phase::RollbackFailed,
            Phase::Held {
                at: Step::EnableAmbient,
            },
        ] {
            assert!(!p.nothing_to_undo(), "{p:?}");
        }
    }

    #[test]
    fn step_numbers_and_order() {
        assert_eq!(Step::ActivateWaypoint.number(), 1);
        assert_eq!(Step::Validate.number(), 6);
        assert_eq!(Step::from_number(4), Some(Step::Restart));
        assert_eq!(Step::from_number(0), None);
        assert_eq!(Step::from_number(7), None);
        assert_eq!(Step::Restart.next(), Some(Step::RemoveSidecarPolicies));
        assert_eq!(Step::Validate.next(), None);
        assert_eq!(Step::ActivateWaypoint.prev(), None);
        assert!(Step::EnableAmbient < Step::Restart);
        for s in Step::ALL {
            assert_eq!(s.info().step, s);
            assert_eq!(serde_json::to_value(s).unwrap(), json!(s.name()));
        }
        assert_eq!(Step::Restart.to_string(), "4 (restart)");
        assert!(Step::Validate.info().rollback.is_none());
        assert!(Step::Restart.info().gates.contains(&gate_names::PODS_AMBIENT));
    }

    #[test]
    fn every_gate_name_is_a_gate_of_a_step_or_of_the_rollback() {
        for name in gate_names::ALL {
            let used = STEP_TABLE.iter().any(|r| r.gates.contains(name))
                || gate_names::ANY_STEP.contains(name)
                || gate_names::ROLLBACK.contains(name);
            assert!(used, "{name} is not in the step table");
        }
        for r in &STEP_TABLE {
            for g in r.gates {
                assert!(
                    gate_names::ALL.contains(g),
                    "{g} of step {} is not a gate name",
                    r.step.number()
                );
            }
        }
        assert_eq!(
            unlisted_gates(Step::EnableAmbient, ["ztunnel-ready", "step-action"]),
            Vec::<&str>::new()
        );
        assert_eq!(
            unlisted_gates(Step::EnableAmbient, ["pods-ambient"]),
            vec!["pods-ambient"]
        );
    }

    #[test]
    fn phase_serde_kebab() {
        assert_eq!(serde_json::to_value(Phase::Pending).unwrap(), json!("pending"));
        assert_eq!(
            serde_json::to_value(Phase::InStep(Step::Restart)).unwrap(),
            json!({"in-step": "restart"})
        );
        assert_eq!(
            serde_json::to_value(Phase::RollingBack {
                from: Step::RemoveInjection
            })
            .unwrap(),
            json!({"rolling-back": {"from": "remove-injection"}})
        );
        let p: Phase = serde_json::from_value(json!({"step-done": "validate"})).unwrap();
        assert_eq!(p, Phase::StepDone(Step::Validate));
        let p: Phase = serde_json::from_value(json!("rollback-failed")).unwrap();
        assert_eq!(p, Phase::RollbackFailed);
    }

    #[test]
    fn happy_path_transitions() {
        let mut p = Phase::Pending;
        p = next(p, Event::PreflightPassed).unwrap();
        p = next(p, Event::BackedUp).unwrap();
        for s in Step::ALL {
            p = next(p, Event::StepStarted).unwrap();
            assert_eq!(p, Phase::InStep(s));
            p = next(p, Event::GatesPassed).unwrap();
        }
        assert_eq!(p, Phase::Migrated);
        assert!(p.is_terminal());
        assert!(next(p, Event::StepStarted).is_err());
    }

    #[test]
    fn failure_transitions() {
        let p = next(Phase::InStep(Step::Restart), Event::GateFailed).unwrap();
        assert_eq!(p, Phase::RollingBack { from: Step::Restart });
        assert_eq!(p.reached_step(), Some(Step::Restart));
        assert_eq!(next(p, Event::RollbackDone).unwrap(), Phase::RolledBack);
        assert_eq!(next(p, Event::RollbackError).unwrap(), Phase::RollbackFailed);
        assert_eq!(
            next(Phase::RollbackFailed, Event::RollbackRequested).unwrap(),
            Phase::RollingBack { from: Step::Validate },
            "an operator may retry a failed rollback"
        );
        let held = next(Phase::InStep(Step::EnableAmbient), Event::GateFailedHold).unwrap();
        assert_eq!(
            held,
            Phase::Held {
                at: Step::EnableAmbient
            }
        );
        assert_eq!(
            next(held, Event::RollbackRequested).unwrap(),
            Phase::RollingBack {
                from: Step::EnableAmbient
            }
        );
        assert_eq!(
            next(Phase::StepDone(Step::RemoveInjection), Event::RollbackRequested).unwrap(),
            Phase::RollingBack {
                from: Step::RemoveInjection
            }
        );
        assert_eq!(
            next(Phase::Migrated, Event::RollbackRequested).unwrap(),
            Phase::RollingBack { from: Step::Validate }
        );
        let err = next(Phase::Pending, Event::GatesPassed).unwrap_err();
        assert!(err.to_string().contains("Pending"));
        assert!(next(Phase::BackedUp, Event::GateFailed).is_err());
        assert!(next(Phase::StepDone(Step::Validate), Event::StepStarted).is_err());
        assert_eq!(Phase::BackedUp.reached_step(), None);
    }

    #[test]
    fn objref_display_and_from_value() {
        let r = ObjRef::new("security.istio.io/v1", "AuthorizationPolicy", "app", "p");
        assert_eq!(r.to_string(), "AuthorizationPolicy/app/p");
        assert_eq!(ObjRef::namespace("app").to_string(), "Namespace/app");
        let v =
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "app"}});
        assert_eq!(ObjRef::from_value(&v), ObjRef::new("v1", "Service", "app", "api"));
        let s = serde_json::to_value(&r).unwrap();
        assert_eq!(s["apiVersion"], "security.istio.io/v1");
    }

    #[test]
    fn change_serde_roundtrip() {
        let changes = vec![
            Change::Label {
                step: Step::RemoveInjection,
                change: LabelChange {
                    target: ObjRef::namespace("app"),
                    key: "istio.io/rev".into(),
                    before: Some("canary".into()),
                    after: None,
                },
            },
            Change::Restarted {
                step: Step::Restart,
                workload: ObjRef::new("apps/v1", "Deployment", "app", "api"),
                restarted_at: "2026-01-01T00:00:00Z".into(),
                generation: Some(3),
            },
            Change::Created {
                step: Step::Restart,
                object: ObjRef::new(
                    "security.istio.io/v1",
                    "AuthorizationPolicy",
                    "app",
                    "p-bridge-waypoint",
                ),
                role: "bridge".into(),
            },
            Change::Deleted {
                step: Step::RemoveSidecarPolicies,
                object: ObjRef::new("security.istio.io/v1", "AuthorizationPolicy", "app", "p"),
            },
        ];
        let v = serde_json::to_value(&changes).unwrap();
        assert_eq!(v[0]["type"], "label");
        assert_eq!(v[0]["key"], "istio.io/rev");
        assert_eq!(v[1]["type"], "restarted");
        let back: Vec<Change> = serde_json::from_value(v).unwrap();
        assert_eq!(back, changes);
        assert_eq!(back[3].step(), Step::RemoveSidecarPolicies);
    }
}
