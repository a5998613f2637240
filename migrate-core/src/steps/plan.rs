//! Rollback planning as data: from the journal's changes and the step reached, the ordered undo actions.
//!
//! Follows the seed's rollback table (`docs/reference/seed-enable-ambient-mode.txt`) and docs/design.md §3: undo in reverse order;
//! undoing step 4 means "restore the injection label, restart, wait, require sidecars ready" (so the step-3
//! label comes back *before* the restart); step 5 is undone by re-applying from the backup and verifying.

use super::{Change, LabelChange, ObjRef, Step};
use serde::{Deserialize, Serialize};

/// One rollback action; the executor performs them in order, each idempotently.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum UndoAction {
    /// Set `change.key` on `change.target` back to `change.before` (remove it when `None`).
    RestoreLabel {
        /// The step being undone.
        undoes: Step,
        /// The (collapsed) label change; restore `before`.
        #[serde(flatten)]
        change: LabelChange,
    },
    /// Delete an object we created (bridge or twin); absent is fine.
    DeleteCreated {
        /// The step being undone.
        undoes: Step,
        /// The object.
        object: ObjRef,
    },
    /// Re-create a deleted object from the backup (server-side apply of the backed-up manifest).
    RestoreFromBackup {
        /// The step being undone.
        undoes: Step,
        /// The object.
        object: ObjRef,
    },
    /// Rollout-restart these workloads (after the injection label is back).
    RestartWorkloads {
        /// The step being undone.
        undoes: Step,
        /// Workloads restarted by the migration.
        workloads: Vec<ObjRef>,
    },
    /// Wait for kubectl rollout-status "done" on these workloads.
    WaitRollouts {
        /// The step being undone.
        undoes: Step,
        /// Workloads.
        workloads: Vec<ObjRef>,
    },
    /// Require `istio-proxy` present and ready in every current pod of these workloads, redirection absent.
    RequireSidecars {
        /// The step being undone.
        undoes: Step,
        /// Workloads.
        workloads: Vec<ObjRef>,
    },
    /// Compare restored objects with the backup.
    VerifyBackup {
        /// Objects restored from the backup.
        objects: Vec<ObjRef>,
    },
    /// Run the namespace's traffic probes (rollback-enabled ones) and require them green.
    RunProbes,
}

/// Why a rollback cannot be planned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RollbackPlanError {
    /// `--to-step K` keeps the injection label removed while undoing the restart: pods would come back
    /// without sidecars.
    #[error(
        "cannot roll back to step {to} while undoing the restart (step 4): re-injecting sidecars needs the \
         injection label removed at step 3 restored; use --to-step 2 or lower"
    )]
    RestartNeedsInjectionLabel {
        /// Requested target step.
        to: u8,
    },
    /// `--to-step K` with K at or beyond the step reached: nothing to undo.
    #[error("nothing to roll back: the namespace reached step {reached}, requested --to-step {to}")]
    NothingToUndo {
        /// Step reached.
        reached: u8,
        /// Requested target step.
        to: u8,
    },
}

/// Is this label change the namespace injection label (`istio-injection` / `istio.io/rev`)?
fn is_injection_label(c: &LabelChange) -> bool {
    c.target.kind == "Namespace" && (c.key == "istio-injection" || c.key == "istio.io/rev")
}

/// Ordered undo actions for the journaled `changes` (in journal order) of a namespace that reached `reached`,
/// rolling back to the state after step `to_step` (`None` or `Some(0)` = everything; `--to-step K`).
///
/// Order: reverse journal order, except that when restarts are undone, the injection-label restore comes
/// first, followed by restart, rollout wait and the sidecar check; repeated changes of the same label
/// collapse into one restore of the earliest `before`. Ends with `VerifyBackup` (if anything was restored)
/// and `RunProbes`.
pub fn rollback_plan(
    changes: &[Change],
    reached: Step,
    to_step: Option<u8>,
) -> Result<Vec<UndoAction>, RollbackPlanError> {
    let to = to_step.unwrap_or(0);
    if to >= reached.number() {
        return Err(RollbackPlanError::NothingToUndo {
            reached: reached.number(),
            to,
        });
    }
    let undone: Vec<&Change> = changes.iter().filter(|c| c.step().number() > to).collect();

    // Collapse label changes per (target, key): earliest `before`, position of the latest change.
    let mut label_first: Vec<(ObjRef, String, Option<String>, Step)> = Vec::new();
    for c in &undone {
        if let Change::Label { step, change } = c
            && !label_first
                .iter()
                .any(|(t, k, _, _)| *t == change.target && *k == change.key)
        {
            label_first.push((
                change.target.clone(),
                change.key.clone(),
                change.before.clone(),
                *step,
            ));
        }
    }
    let restarted: Vec<ObjRef> = {
        let mut v: Vec<ObjRef> = Vec::new();
        for c in &undone {
            if let Change::Restarted { workload, .. } = c
                && !v.contains(workload)
            {
                v.push(workload.clone());
            }
        }
        v
    };
    let injection_undone = undone
        .iter()
        .any(|c| matches!(c, Change::Label { change, .. } if is_injection_label(change)));
    if !restarted.is_empty() && !injection_undone {
        // Restarts are undone but the injection label stays removed (or was never journaled).
        let injection_ever = changes
            .iter()
            .any(|c| matches!(c, Change::Label { change, .. } if is_injection_label(change)));
        if injection_ever {
            return Err(RollbackPlanError::RestartNeedsInjectionLabel { to });
        }
    }

    let mut actions = Vec::new();
    let mut emitted_labels: Vec<(ObjRef, String)> = Vec::new();
    let mut restored: Vec<ObjRef> = Vec::new();
    let mut restart_done = false;
    let restore_label =
        |target: &ObjRef, key: &str, actions: &mut Vec<UndoAction>, emitted: &mut Vec<(ObjRef, String)>| {
            if emitted.iter().any(|(t, k)| t == target && k == key) {
                return;
            }
            let (t, k, before, step) = label_first
                .iter()
                .find(|(t, k, _, _)| t == target && k == key)
                .expect("collected");
            let after = undone.iter().rev().find_map(|c| match c {
                Change::Label { change, .. } if change.target == *t && change.key == *k => {
                    Some(change.after.clone())
                }
                _ => None,
            });
            actions.push(UndoAction::RestoreLabel {
                undoes: *step,
                change: LabelChange {
                    target: t.clone(),
                    key: k.clone(),
                    before: before.clone(),
                    after: after.flatten(),
                },
            });
            emitted.push((t.clone(), k.clone()));
        };

    for c in undone.iter().rev() {
        match c {
            Change::Label { change, .. } => {
                restore_label(&change.target, &change.key, &mut actions, &mut emitted_labels)
            }
            Change::Restarted { step, .. } => {
                if restart_done {
                    continue;
                }
                restart_done = true;
                // Injection label(s) first, then restart, wait, require sidecars.
                for (t, k, _, _) in label_first.iter().filter(|(t, k, _, _)| {
                    t.kind == "Namespace" && (k == "istio-injection" || k == "istio.io/rev")
                }) {
                    restore_label(t, k, &mut actions, &mut emitted_labels);
                }
                actions.push(UndoAction::RestartWorkloads {
                    undoes: *step,
                    workloads: restarted.clone(),
                });
                actions.push(UndoAction::WaitRollouts {
                    undoes: *step,
                    workloads: restarted.clone(),
                });
                actions.push(UndoAction::RequireSidecars {
                    undoes: *step,
                    workloads: restarted.clone(),
                });
            }
            Change::Created { step, object, .. } => {
                let a = UndoAction::DeleteCreated {
                    undoes: *step,
                    object: object.clone(),
                };
                if !actions.contains(&a) {
                    actions.push(a);
                }
            }
            Change::Deleted { step, object } => {
                if !restored.contains(object) {
                    restored.push(object.clone());
                    actions.push(UndoAction::RestoreFromBackup {
                        undoes: *step,
                        object: object.clone(),
                    });
                }
            }
        }
    }
    if !restored.is_empty() {
        actions.push(UndoAction::VerifyBackup { objects: restored });
    }
    actions.push(UndoAction::RunProbes);
    Ok(actions)
}

/// What undoing a journaled label change does, given the label's live value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelUndo {
    /// The label still holds what the migration wrote: write `before` back.
    Restore,
    /// The label already holds `before` (an earlier, interrupted rollback got this far): nothing to write.
    AlreadyUndone,
    /// Someone changed the label after the migration did: restoring would silently revert their change.
    /// Only an explicit `--force` overwrites it.
    Conflict {
        /// The live value (`None` = absent).
        live: Option<String>,
    },
}

/// Compares the live value of a label with the journaled change: the rollback only undoes what the
/// migration itself left.
pub fn label_undo(change: &LabelChange, live: Option<&str>) -> LabelUndo {
    if live == change.before.as_deref() {
        LabelUndo::AlreadyUndone
    } else if live == change.after.as_deref() {
        LabelUndo::Restore
    } else {
        LabelUndo::Conflict {
            live: live.map(str::to_string),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_is_restored_only_from_the_value_the_migration_left() {
        let change = LabelChange {
            target: ObjRef::namespace("shop"),
            key: "istio-injection".into(),
            before: Some("enabled".into()),
            after: None,
        };
        assert_eq!(label_undo(&change, None), LabelUndo::Restore);
        assert_eq!(label_undo(&change, Some("enabled")), LabelUndo::AlreadyUndone);
        assert_eq!(
            label_undo(&change, Some("disabled")),
            LabelUndo::Conflict {
                live: Some("disabled".into())
            }
        );
        let added = LabelChange {
            target: ObjRef::namespace("shop"),
            key: "istio.io/dataplane-mode".into(),
            before: None,
            after: Some("ambient".into()),
        };
        assert_eq!(label_undo(&added, Some("ambient")), LabelUndo::Restore);
        assert_eq!(label_undo(&added, None), LabelUndo::AlreadyUndone);
        assert_eq!(
            label_undo(&added, Some("none")),
            LabelUndo::Conflict {
                live: Some("none".into())
            }
        );
    }

    fn ns() -> ObjRef {
        ObjRef::namespace("app")
    }
    fn label(step: Step, key: &str, before: Option<&str>, after: Option<&str>) -> Change {
        Change::Label {
            step,
            change: LabelChange {
                target: ns(),
                key: key.into(),
                before: before.map(Into::into),
                after: after.map(Into::into),
            },
        }
    }
    fn ap(name: &str) -> ObjRef {
        ObjRef::new("security.istio.io/v1", "AuthorizationPolicy", "app", name)
    }
    fn dep(name: &str) -> ObjRef {
        ObjRef::new("apps/v1", "Deployment", "app", name)
    }
    fn journal() -> Vec<Change> {
        vec![
            label(
                Step::ActivateWaypoint,
                "istio.io/use-waypoint",
                None,
                Some("waypoint"),
            ),
            label(
                Step::EnableAmbient,
                "istio.io/dataplane-mode",
                None,
                Some("ambient"),
            ),
            label(Step::RemoveInjection, "istio.io/rev", Some("canary"), None),
            Change::Created {
                step: Step::Restart,
                object: ap("p-bridge-waypoint"),
                role: "bridge".into(),
            },
            Change::Restarted {
                step: Step::Restart,
                workload: dep("api"),
                restarted_at: "t1".into(),
                generation: Some(2),
            },
            Change::Restarted {
                step: Step::Restart,
                workload: dep("web"),
                restarted_at: "t1".into(),
                generation: Some(5),
            },
            Change::Deleted {
                step: Step::RemoveSidecarPolicies,
                object: ap("p"),
            },
            Change::Deleted {
                step: Step::RemoveSidecarPolicies,
                object: ap("p-bridge-waypoint"),
            },
        ]
    }

    fn restore_keys(actions: &[UndoAction]) -> Vec<(String, Option<String>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                UndoAction::RestoreLabel { change, .. } => Some((change.key.clone(), change.before.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn full_rollback_order() {
        let a = rollback_plan(&journal(), Step::RemoveSidecarPolicies, None).unwrap();
        // Step 5 first (reverse): restore the bridge, then the policy.
        assert_eq!(
            a[0],
            UndoAction::RestoreFromBackup {
                undoes: Step::RemoveSidecarPolicies,
                object: ap("p-bridge-waypoint")
            }
        );
        assert_eq!(
            a[1],
            UndoAction::RestoreFromBackup {
                undoes: Step::RemoveSidecarPolicies,
                object: ap("p")
            }
        );
        // Then the injection label, before the restart.
        assert!(
            matches!(&a[2], UndoAction::RestoreLabel { change, .. } if change.key == "istio.io/rev" && change.before.as_deref() == Some("canary"))
        );
        assert_eq!(
            a[3],
            UndoAction::RestartWorkloads {
                undoes: Step::Restart,
                workloads: vec![dep("api"), dep("web")]
            }
        );
        assert!(matches!(a[4], UndoAction::WaitRollouts { .. }));
        assert!(matches!(a[5], UndoAction::RequireSidecars { .. }));
        // The bridge created at step 4 is deleted after the sidecars are back.
        assert_eq!(
            a[6],
            UndoAction::DeleteCreated {
                undoes: Step::Restart,
                object: ap("p-bridge-waypoint")
            }
        );
        // Then step 2 and step 1 labels, injection not repeated.
        assert_eq!(
            restore_keys(&a),
            vec![
                ("istio.io/rev".into(), Some("canary".into())),
                ("istio.io/dataplane-mode".into(), None),
                ("istio.io/use-waypoint".into(), None)
            ]
        );
        assert_eq!(
            a[a.len() - 2],
            UndoAction::VerifyBackup {
                objects: vec![ap("p-bridge-waypoint"), ap("p")]
            }
        );
        assert_eq!(a.last(), Some(&UndoAction::RunProbes));
    }

    #[test]
    fn rollback_after_step_two_only_labels() {
        let j: Vec<Change> = journal().into_iter().take(2).collect();
        let a = rollback_plan(&j, Step::EnableAmbient, None).unwrap();
        assert_eq!(
            restore_keys(&a),
            vec![
                ("istio.io/dataplane-mode".into(), None),
                ("istio.io/use-waypoint".into(), None)
            ]
        );
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn rollback_after_step_three_restores_exact_label() {
        let j: Vec<Change> = journal().into_iter().take(3).collect();
        let a = rollback_plan(&j, Step::RemoveInjection, None).unwrap();
        assert!(!a.iter().any(|x| matches!(x, UndoAction::RestartWorkloads { .. })));
        assert_eq!(
            restore_keys(&a)[0],
            ("istio.io/rev".into(), Some("canary".into()))
        );
    }

    #[test]
    fn to_step_partial() {
        // Back to "after step 4": only step 5 is undone.
        let a = rollback_plan(&journal(), Step::RemoveSidecarPolicies, Some(4)).unwrap();
        assert_eq!(a.len(), 4);
        assert!(restore_keys(&a).is_empty());
        // Back to "after step 2": step 5, 4, 3 undone, labels of steps 1-2 kept.
        let a = rollback_plan(&journal(), Step::RemoveSidecarPolicies, Some(2)).unwrap();
        assert_eq!(
            restore_keys(&a),
            vec![("istio.io/rev".into(), Some("canary".into()))]
        );
        assert!(a.iter().any(|x| matches!(x, UndoAction::RequireSidecars { .. })));
        // Back to "after step 3" while undoing the restart is refused.
        let e = rollback_plan(&journal(), Step::RemoveSidecarPolicies, Some(3)).unwrap_err();
        assert_eq!(e, RollbackPlanError::RestartNeedsInjectionLabel { to: 3 });
        assert!(e.to_string().contains("--to-step 2"));
        let e = rollback_plan(&journal(), Step::EnableAmbient, Some(2)).unwrap_err();
        assert!(matches!(e, RollbackPlanError::NothingToUndo { .. }));
    }

    #[test]
    fn repeated_label_changes_collapse_to_earliest_before() {
        let j = vec![
            label(
                Step::ActivateWaypoint,
                "istio.io/use-waypoint",
                Some("old"),
                Some("waypoint"),
            ),
            label(
                Step::ActivateWaypoint,
                "istio.io/use-waypoint",
                Some("waypoint"),
                Some("waypoint"),
            ),
        ];
        let a = rollback_plan(&j, Step::ActivateWaypoint, None).unwrap();
        assert_eq!(
            restore_keys(&a),
            vec![("istio.io/use-waypoint".into(), Some("old".into()))]
        );
    }

    #[test]
    fn serde_shape() {
        let a = rollback_plan(&journal(), Step::RemoveSidecarPolicies, Some(4)).unwrap();
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v[0]["action"], "restore-from-backup");
        assert_eq!(v[0]["undoes"], "remove-sidecar-policies");
    }
}
