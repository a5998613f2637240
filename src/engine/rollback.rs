//! Rollback execution: the ordered undo actions of `steps::plan::rollback_plan` (the seed's rollback table
//! done in reverse, docs/design.md §3), each idempotent, then verified: labels and config equal to the backup,
//! every restarted workload's pods with `istio-proxy` present and ready, probes green.
//!
//! Every action is attempted even when an earlier one failed (a half-done rollback is worse than a
//! complete one with one failed check); the rollback is `ok` only when every action and check succeeded.

use std::collections::BTreeMap;

use serde_json::json;

use super::exec::{pods_sidecar, workload_kind};
use super::primitives::{created_manifest_key, label_target};
use super::{NsCtx, RollbackRun, deadline, probing};
use crate::cluster::DynKind;
use crate::cluster::restarted_at_now;
use crate::gates::{GateOutcome, GateResult};
use crate::steps::gate_names as g;
use crate::steps::plan::{LabelUndo, UndoAction, label_undo, rollback_plan};
use crate::steps::{Change, LabelChange, ObjRef, Step};

const ROLLBACK_RESTART_KEY: &str = "rollbackRestartedAt";

pub(crate) async fn execute(ctx: &mut NsCtx<'_>, from: Step, to_step: Option<u8>) -> RollbackRun {
    let mut run = RollbackRun {
        from,
        started: jiff::Timestamp::now(),
        ended: None,
        ok: true,
        actions: Vec::new(),
        gates: Vec::new(),
        error: None,
        lease_lost: false,
    };
    let changes = ctx.journal.record().changes.clone();
    let actions = match rollback_plan(&changes, from, to_step) {
        Ok(a) => a,
        Err(e) => {
            run.ok = false;
            run.error = Some(e.to_string());
            run.ended = Some(jiff::Timestamp::now());
            return run;
        }
    };
    let until = ctx.rollback_deadline();
    let mut errors: Vec<String> = Vec::new();
    let mut generations: BTreeMap<ObjRef, i64> = BTreeMap::new();
    for action in &actions {
        if let Err(e) = ctx.engine.check_lease().await {
            errors.push(format!("lease lost during rollback: {e}"));
            run.lease_lost = true;
            break;
        }
        let label = describe(action);
        ctx.engine.say(&format!("{}: rollback: {label}", ctx.ns));
        run.actions.push(label.clone());
        let res: Result<(), String> = match action {
            UndoAction::RestoreLabel { change, .. } => restore_label(ctx, change).await,
            UndoAction::DeleteCreated { object, .. } => delete_created(ctx, object).await,
            UndoAction::RestoreFromBackup { object, .. } => {
                // Objects the migration created (bridges) are not in the backup; see the arms below.
                let created_at = changes.iter().find_map(|c| match c {
                    Change::Created { object: o, step, .. } if o == object => Some(*step),
                    _ => None,
                });
                match created_at {
                    // Created by a step being undone too: its own DeleteCreated removes it.
                    Some(st) if st.number() > to_step.unwrap_or(0) => Ok(()),
                    // Created by a step that stays (a bridge from step 1, deleted at step 5, rolled back to
                    // step 4): put it back from the journaled manifest.
                    Some(_) => recreate_created(ctx, object).await,
                    None => restore_object(ctx, object).await,
                }
            }
            UndoAction::RestartWorkloads { workloads, .. } => {
                let value = match ctx
                    .journal
                    .record()
                    .extra
                    .get(ROLLBACK_RESTART_KEY)
                    .and_then(|v| v.as_str())
                {
                    Some(v) => v.to_string(),
                    None => {
                        let mut v = restarted_at_now();
                        if changes.iter().any(
                            |c| matches!(c, Change::Restarted { restarted_at, .. } if *restarted_at == v),
                        ) {
                            // Step 4 restarted in this same second: the same value would leave the pod
                            // templates unchanged and nothing would roll back to sidecars.
                            v = jiff::Timestamp::now().to_string();
                        }
                        let vv = v.clone();
                        if let Err(e) = ctx
                            .journal
                            .update(|r| {
                                r.extra.insert(ROLLBACK_RESTART_KEY.into(), json!(vv));
                            })
                            .await
                        {
                            errors.push(e.to_string());
                        }
                        v
                    }
                };
                let mut errs = Vec::new();
                for w in workloads {
                    let Some(kind) = workload_kind(w) else { continue };
                    match ctx.engine.cluster.restart(kind, &ctx.ns, &w.name, &value).await {
                        Ok(o) => {
                            generations.insert(w.clone(), o.generation);
                        }
                        Err(e) => errs.push(e.to_string()),
                    }
                }
                if errs.is_empty() {
                    Ok(())
                } else {
                    Err(errs.join("; "))
                }
            }
            // A dry run's restarts were not persisted: there is no rollout to wait for.
            UndoAction::WaitRollouts { .. } | UndoAction::RequireSidecars { .. }
                if ctx.engine.cluster.dry_run() =>
            {
                Ok(())
            }
            UndoAction::WaitRollouts { workloads, .. } => {
                let waits = workloads.iter().filter_map(|w| {
                    let kind = workload_kind(w)?;
                    let engine = ctx.engine;
                    let ns = ctx.ns.clone();
                    let gen_ = generations.get(w).copied().unwrap_or(0);
                    Some(async move {
                        (
                            w.clone(),
                            engine.wait_rollout(kind, &ns, &w.name, gen_, until).await,
                        )
                    })
                });
                let errs: Vec<String> = futures::future::join_all(waits)
                    .await
                    .into_iter()
                    .filter_map(|(w, r)| r.err().map(|e| format!("{w}: {e}")))
                    .collect();
                let outcome = if errs.is_empty() {
                    GateOutcome::Pass
                } else {
                    GateOutcome::Fail
                };
                run.gates.push(GateResult::new(
                    g::ROLLOUT,
                    outcome,
                    json!({"errors": errs}),
                    if errs.is_empty() {
                        "rollouts complete".to_string()
                    } else {
                        errs.join("; ")
                    },
                ));
                if errs.is_empty() {
                    Ok(())
                } else {
                    Err(errs.join("; "))
                }
            }
            UndoAction::RequireSidecars { workloads, .. } => {
                let mut errs = Vec::new();
                for w in workloads {
                    match pods_sidecar(ctx, w, until).await {
                        Ok(gate) => {
                            if !gate.passed() {
                                errs.push(format!("{w}: {}", gate.message));
                            }
                            run.gates.push(gate);
                        }
                        Err(e) => errs.push(format!("{w}: {e}")),
                    }
                }
                if errs.is_empty() {
                    Ok(())
                } else {
                    Err(errs.join("; "))
                }
            }
            UndoAction::VerifyBackup { objects } => verify(ctx, objects, to_step, &actions, &mut run).await,
            UndoAction::RunProbes => {
                let probes: Vec<_> = ctx
                    .opts
                    .probes
                    .iter()
                    .filter(|p| p.runs_after_rollback())
                    .cloned()
                    .collect();
                if probes.is_empty() {
                    Ok(())
                } else {
                    let gate = probing::run_gate(
                        &ctx.engine.cluster,
                        &probes,
                        g::PROBES,
                        deadline(ctx.opts.timeouts.probes),
                    )
                    .await;
                    let ok = gate.passed();
                    let msg = gate.message.clone();
                    run.gates.push(gate);
                    if ok {
                        Ok(())
                    } else {
                        Err(format!("probes after rollback: {msg}"))
                    }
                }
            }
        };
        if let Err(e) = res {
            errors.push(format!("{label}: {e}"));
        }
    }
    // Config identical to the backup is checked after every rollback, not only when objects were restored.
    if !actions
        .iter()
        .any(|a| matches!(a, UndoAction::VerifyBackup { .. }))
        && let Err(e) = verify(ctx, &[], to_step, &actions, &mut run).await
    {
        errors.push(format!("verify labels and config equal the backup: {e}"));
    }
    run.ok = errors.is_empty();
    if !run.ok {
        run.error = Some(errors.join("; "));
    }
    run.ended = Some(jiff::Timestamp::now());
    run
}

/// Labels and config identical to the backup. After a full rollback the whole backup is compared (labels
/// the migration manages and every backed-up object; objects the tool created must be gone). After a
/// partial one (`--to-step K`) only what was undone is compared: the restored objects and the restored
/// labels (the steps up to K legitimately differ from the backup).
async fn verify(
    ctx: &NsCtx<'_>,
    objects: &[ObjRef],
    to_step: Option<u8>,
    actions: &[UndoAction],
    run: &mut RollbackRun,
) -> Result<(), String> {
    if ctx.engine.cluster.dry_run() {
        return Ok(());
    }
    let created = crate::backup::created_objects(&ctx.journal.record().changes);
    let mut diffs = crate::backup::verify(&ctx.engine.cluster, &ctx.backup, &created)
        .await
        .map_err(|e| e.to_string())?;
    let partial = to_step.is_some_and(|k| k > 0);
    if partial {
        let labels: Vec<(ObjRef, String)> = actions
            .iter()
            .filter_map(|a| match a {
                UndoAction::RestoreLabel { change, .. } => Some((change.target.clone(), change.key.clone())),
                _ => None,
            })
            .collect();
        let k = to_step.unwrap_or(0);
        let kept_ours: Vec<ObjRef> = ctx
            .journal
            .record()
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Created { object, step, .. } if step.number() <= k => Some(object.clone()),
                _ => None,
            })
            .collect();
        diffs.retain(|d| !(d.what == "unexpected" && kept_ours.contains(&d.object)));
        diffs.retain(|d| {
            objects.contains(&d.object)
                || labels.iter().any(|(t, k)| {
                    t.kind == d.object.kind && t.name == d.object.name && d.what == format!("label {k}")
                })
        });
    }
    let outcome = if diffs.is_empty() {
        GateOutcome::Pass
    } else {
        GateOutcome::Fail
    };
    let scope = if partial {
        "what was undone"
    } else {
        "labels and config"
    };
    let msg = if diffs.is_empty() {
        format!(
            "namespace {}: {scope} equal the backup ({} restored objects checked)",
            ctx.ns,
            objects.len()
        )
    } else {
        format!(
            "namespace {} differs from its backup: {}",
            ctx.ns,
            diffs.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("; ")
        )
    };
    run.gates.push(GateResult::new(
        g::BACKUP_EQUAL,
        outcome,
        json!({"differences": diffs.iter().map(|d| d.to_string()).collect::<Vec<_>>()}),
        msg.clone(),
    ));
    if diffs.is_empty() { Ok(()) } else { Err(msg) }
}

/// Re-creates an object the migration created (a bridge), from the manifest journaled at its creation.
async fn recreate_created(ctx: &NsCtx<'_>, object: &ObjRef) -> Result<(), String> {
    let key = created_manifest_key(object);
    let Some(manifest) = ctx.journal.record().extra.get(&key).cloned() else {
        return Err(format!(
            "the journal has no manifest for {object}: cannot re-create it"
        ));
    };
    let kind = DynKind::from_group_kind(&object.api_version, &object.kind)
        .ok_or_else(|| format!("cannot re-create {object}: unsupported kind"))?;
    let obj: kube::api::DynamicObject = serde_json::from_value(manifest).map_err(|e| e.to_string())?;
    match ctx.engine.cluster.create_dyn(kind, &ctx.ns, &obj).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_already_exists() => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Puts one backed-up object back: re-created when missing (server fields stripped), replaced when it
/// differs; nothing when it is already equal. Only that object: `--to-step` rollbacks must not reset labels.
/// Deletes an object the migration created, unless someone changed it since: its spec is compared with
/// the journaled manifest, and a different one is a conflict (only `--force` deletes it). A journal from
/// before manifests were recorded has nothing to compare with: the object is deleted as before.
async fn delete_created(ctx: &NsCtx<'_>, object: &ObjRef) -> Result<(), String> {
    let kind = DynKind::from_group_kind(&object.api_version, &object.kind)
        .ok_or_else(|| format!("cannot delete {object}: unsupported kind"))?;
    let cluster = &ctx.engine.cluster;
    let Some(live) = cluster
        .get_dyn(kind, &ctx.ns, &object.name)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    let created = ctx.journal.record().extra.get(&created_manifest_key(object));
    if let Some(manifest) = created
        && !ctx.opts.force_rollback
        && !unchanged_since_created(kind, manifest.get("spec"), live.data.get("spec"))
    {
        return Err(format!(
            "conflict: {object}, created by the migration, was changed since (its spec differs from what was created): not deleted; keep it, or run `ambient-migrate rollback -n {} --force` to delete it",
            ctx.ns
        ));
    }
    cluster
        .delete_dyn(kind, &ctx.ns, &object.name)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Is the live spec what the migration created? Services and HTTPRoutes get defaults from the API server
/// (`clusterIP`, `type`, port `protocol`; the HTTPRoute CRD's defaults), so for them only the fields the
/// manifest set are compared; every other kind must be equal.
fn unchanged_since_created(
    kind: DynKind,
    created: Option<&serde_json::Value>,
    live: Option<&serde_json::Value>,
) -> bool {
    match kind {
        DynKind::Service | DynKind::HttpRoute => defaulted_from(created, live),
        _ => created == live,
    }
}

/// Is `live` what the migration created (`created`), give or take the fields the API server fills in?
/// Every field the manifest sets must be unchanged; fields it left out may have been added (a Service's
/// `clusterIP`, `type`, port `protocol`, an HTTPRoute's CRD defaults), since nobody but the server adds
/// them to an object nobody edited. Lists must keep their length (an added rule is a change).
fn defaulted_from(created: Option<&serde_json::Value>, live: Option<&serde_json::Value>) -> bool {
    use serde_json::Value;
    match (created, live) {
        (None, _) => true,
        (Some(c), None) => c.is_null(),
        (Some(Value::Object(c)), Some(Value::Object(l))) => {
            c.iter().all(|(k, v)| defaulted_from(Some(v), l.get(k)))
        }
        (Some(Value::Array(c)), Some(Value::Array(l))) => {
            c.len() == l.len() && c.iter().zip(l).all(|(a, b)| defaulted_from(Some(a), Some(b)))
        }
        (Some(c), Some(l)) => c == l,
    }
}

/// Puts a label back to its journaled `before` value, unless someone changed it after the migration did
/// (see [`label_undo`]): that is a conflict, reported with the fix, and only `--force` overwrites it.
async fn restore_label(ctx: &NsCtx<'_>, change: &LabelChange) -> Result<(), String> {
    let t = label_target(&change.target).map_err(|e| e.to_string())?;
    let cluster = &ctx.engine.cluster;
    let live = cluster.labels_of(&t).await.map_err(|e| e.to_string())?;
    let write = match label_undo(change, live.get(&change.key).map(String::as_str)) {
        LabelUndo::AlreadyUndone => false,
        LabelUndo::Restore => true,
        LabelUndo::Conflict { .. } if ctx.opts.force_rollback => true,
        LabelUndo::Conflict { live } => {
            return Err(format!(
                "conflict: label {} on {} is {} but the migration left it {}: changed by someone since, so it was not reverted to {}; keep it and finish by hand, or run `ambient-migrate rollback -n {} --force` to overwrite it",
                change.key,
                change.target,
                shown(live.as_deref()),
                shown(change.after.as_deref()),
                shown(change.before.as_deref()),
                ctx.ns
            ));
        }
    };
    if !write {
        return Ok(());
    }
    cluster
        .set_label(&t, &change.key, change.before.as_deref())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn shown(v: Option<&str>) -> String {
    v.map_or_else(|| "absent".to_string(), |v| format!("{v:?}"))
}

async fn restore_object(ctx: &NsCtx<'_>, object: &ObjRef) -> Result<(), String> {
    let Some(saved) = ctx
        .backup
        .objects
        .iter()
        .find(|o| ObjRef::from_value(o).kind == object.kind && ObjRef::from_value(o).name == object.name)
    else {
        return Err(format!(
            "{object} is not in the backup of {}: cannot restore it",
            ctx.ns
        ));
    };
    let kind = DynKind::from_group_kind(&object.api_version, &object.kind)
        .ok_or_else(|| format!("cannot restore {object}: unsupported kind"))?;
    let mut want = saved.clone();
    crate::backup::strip(&mut want);
    let cluster = &ctx.engine.cluster;
    let live = cluster
        .get_dyn(kind, &ctx.ns, &object.name)
        .await
        .map_err(|e| e.to_string())?;
    match live {
        None => {
            let obj: kube::api::DynamicObject = serde_json::from_value(want).map_err(|e| e.to_string())?;
            match cluster.create_dyn(kind, &ctx.ns, &obj).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_already_exists() => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        }
        Some(live) => {
            let mut live_v = serde_json::to_value(&live).map_err(|e| e.to_string())?;
            let rv = live.metadata.resource_version.clone();
            crate::backup::strip(&mut live_v);
            if live_v == want {
                return Ok(());
            }
            // The migration deleted it; someone created it again since. Replacing it would revert their
            // version silently.
            if !ctx.opts.force_rollback {
                return Err(format!(
                    "conflict: {object} was deleted by the migration and exists again with other content: not overwritten with the backup; keep it, or run `ambient-migrate rollback -n {} --force` to restore the backed-up version",
                    ctx.ns
                ));
            }
            want["metadata"]["resourceVersion"] = json!(rv);
            let obj: kube::api::DynamicObject = serde_json::from_value(want).map_err(|e| e.to_string())?;
            cluster
                .replace_dyn(kind, &ctx.ns, &obj)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }
}

fn describe(a: &UndoAction) -> String {
    match a {
        UndoAction::RestoreLabel { change, .. } => match &change.before {
            Some(v) => format!("set label {}={} on {}", change.key, v, change.target),
            None => format!("remove label {} from {}", change.key, change.target),
        },
        UndoAction::DeleteCreated { object, .. } => format!("delete {object} (created by the migration)"),
        UndoAction::RestoreFromBackup { object, .. } => format!("restore {object} from the backup"),
        UndoAction::RestartWorkloads { workloads, .. } => format!("restart {} workloads", workloads.len()),
        UndoAction::WaitRollouts { workloads, .. } => format!("wait for {} rollouts", workloads.len()),
        UndoAction::RequireSidecars { workloads, .. } => {
            format!(
                "require istio-proxy ready in every pod of {} workloads",
                workloads.len()
            )
        }
        UndoAction::VerifyBackup { .. } => "verify labels and config equal the backup".to_string(),
        UndoAction::RunProbes => "run the rollback probes".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{defaulted_from, unchanged_since_created};
    use crate::cluster::DynKind;
    use serde_json::json;

    #[test]
    fn server_defaults_are_not_a_change_but_edits_are() {
        let created =
            json!({"selector": {"app": "api", "version": "v1"}, "ports": [{"name": "http", "port": 8080}]});
        let defaulted = json!({"selector": {"app": "api", "version": "v1"}, "type": "ClusterIP", "clusterIP": "10.0.0.9",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP", "targetPort": 8080}]});
        assert!(defaulted_from(Some(&created), Some(&defaulted)));
        let edited =
            json!({"selector": {"app": "api", "version": "v2"}, "ports": [{"name": "http", "port": 8080}]});
        assert!(!defaulted_from(Some(&created), Some(&edited)));
        let more_ports = json!({"selector": {"app": "api", "version": "v1"},
            "ports": [{"name": "http", "port": 8080}, {"name": "grpc", "port": 9090}]});
        assert!(!defaulted_from(Some(&created), Some(&more_ports)));
        assert!(!defaulted_from(Some(&created), None));
        // Only Services and HTTPRoutes are defaulted by the server: an added field elsewhere is an edit.
        assert!(unchanged_since_created(
            DynKind::Service,
            Some(&created),
            Some(&defaulted)
        ));
        assert!(!unchanged_since_created(
            DynKind::AuthorizationPolicy,
            Some(&created),
            Some(&defaulted)
        ));
        assert!(unchanged_since_created(
            DynKind::AuthorizationPolicy,
            Some(&created),
            Some(&created)
        ));
    }
}
