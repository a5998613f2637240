//! The journaled primitives of the steps: label, create, delete (restarts are journaled per batch in the
//! restart step). Each records what a rollback needs in the journal before it sends its write, checks the
//! fleet Lease first, and is idempotent, so a rerun after a crash converges.

use std::collections::BTreeMap;

use kube::api::DynamicObject;

use super::{EngineError, NsCtx};
use crate::cluster::{DynKind, LabelTarget};
use crate::steps::{Change, LabelChange, ObjRef, Step};

/// The label target of an object reference (Namespace or Service).
pub(crate) fn label_target(r: &ObjRef) -> Result<LabelTarget, EngineError> {
    match (r.kind.as_str(), &r.namespace) {
        ("Namespace", _) => Ok(LabelTarget::Namespace { name: r.name.clone() }),
        ("Service", Some(ns)) => Ok(LabelTarget::Service {
            namespace: ns.clone(),
            name: r.name.clone(),
        }),
        _ => Err(EngineError::Unsupported {
            action: "label",
            object: r.to_string(),
            why: "only Namespaces and Services are labelled",
        }),
    }
}

/// Sets (or removes, with `None`) a label, journaling `before` first. Re-running after a crash keeps the
/// `before` recorded by the first attempt, so rollback restores the original value, not ours. Returns the
/// target's labels after the change as the API server answered it (the patch response, or the read when
/// the label already had the value), which the step's labels gate checks without reading again.
///
/// One read, one journal write, one patch: the patch tests that the labels are still the ones read
/// ([`crate::cluster::Cluster::set_labels_seen`]), so a label change made by anyone in between is decided
/// again on a fresh read rather than overwritten, while the journal's own state annotation, written to the
/// same Namespace in the background, does not get in its way.
pub(crate) async fn apply_label(
    ctx: &mut NsCtx<'_>,
    step: Step,
    target: &ObjRef,
    key: &str,
    value: Option<&str>,
) -> Result<BTreeMap<String, String>, EngineError> {
    let lt = label_target(target)?;
    let recorded = journaled(
        ctx,
        |c| matches!(c, Change::Label { step: s, change } if *s == step && change.target == *target && change.key == key),
    );
    let seen = ctx.engine.cluster.read_labels(&lt).await?;
    if !recorded {
        let before = seen.labels.get(key).cloned();
        if before.as_deref() == value {
            return Ok(seen.labels);
        }
        let change = Change::Label {
            step,
            change: LabelChange {
                target: target.clone(),
                key: key.to_string(),
                before,
                after: value.map(str::to_string),
            },
        };
        ctx.engine.check_lease().await?;
        ctx.journal.update(|r| r.changes.push(change.clone())).await?;
    }
    ctx.engine.check_lease().await?;
    let set = ctx
        .engine
        .cluster
        .set_labels_seen(&lt, &seen, &[(key.to_string(), value.map(str::to_string))])
        .await?;
    Ok(set.labels)
}

/// The dynamic kind of a planned object, or why the executor cannot `action` it.
fn dyn_kind(object: &ObjRef, action: &'static str) -> Result<DynKind, EngineError> {
    DynKind::from_group_kind(&object.api_version, &object.kind).ok_or_else(|| EngineError::Unsupported {
        action,
        object: object.to_string(),
        why: "unsupported kind",
    })
}

/// Whether the journal already records a change matching `is` (a resumed run does not journal it again).
fn journaled(ctx: &NsCtx<'_>, is: impl Fn(&Change) -> bool) -> bool {
    ctx.journal.record().changes.iter().any(is)
}

/// Creates a planned object (bridge or twin), journaled first; an object that already exists is adopted:
/// left alone and not journaled, so a rollback never deletes what the migration did not create.
pub(crate) async fn create_planned(
    ctx: &mut NsCtx<'_>,
    step: Step,
    object: &ObjRef,
    role: &str,
    manifest: &serde_json::Value,
) -> Result<(), EngineError> {
    let kind = dyn_kind(object, "create")?;
    let recorded = journaled(
        ctx,
        |c| matches!(c, Change::Created { object: o, .. } if o == object),
    );
    if !recorded {
        // An object that exists before we create it (applied by hand from `plan --fixes-dir`, or by
        // another tool) is adopted, not created: it is not journaled, so no rollback ever deletes it.
        if ctx
            .engine
            .cluster
            .get_dyn(kind, &ctx.ns, &object.name)
            .await?
            .is_some()
        {
            ctx.engine.say(&format!(
                "{}: {object} already exists: used as it is and never deleted by a rollback",
                ctx.ns
            ));
            return Ok(());
        }
        ctx.engine.check_lease().await?;
        let change = Change::Created {
            step,
            object: object.clone(),
            role: role.to_string(),
        };
        // The manifest is journaled too: a partial rollback (`--to-step`) that restores the policy a bridge
        // stood beside must re-create the bridge, which is not in the backup.
        let key = created_manifest_key(object);
        ctx.journal
            .update(|r| {
                r.changes.push(change.clone());
                r.extra.insert(key.clone(), manifest.clone());
            })
            .await?;
    }
    let obj: DynamicObject =
        serde_json::from_value(manifest.clone()).map_err(|e| EngineError::InvalidManifest {
            object: object.to_string(),
            message: e.to_string(),
        })?;
    ctx.engine.check_lease().await?;
    match ctx.engine.cluster.create_dyn(kind, &ctx.ns, &obj).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_already_exists() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Journal `extra` key of the manifest of an object the migration created.
pub(crate) fn created_manifest_key(object: &ObjRef) -> String {
    format!("manifest:{}/{}", object.kind, object.name)
}

/// Creates the planned bridge policies (when enabled).
pub(crate) async fn create_bridges(ctx: &mut NsCtx<'_>, step: Step) -> Result<(), EngineError> {
    if ctx.opts.plan.bridges {
        for b in ctx.plan.bridges.clone() {
            create_planned(ctx, step, &b.object, &b.role, &b.manifest).await?;
        }
    }
    Ok(())
}

/// Deletes an object, journaled first (restorable from the backup); absent is fine.
pub(crate) async fn delete_object(
    ctx: &mut NsCtx<'_>,
    step: Step,
    object: &ObjRef,
) -> Result<(), EngineError> {
    let kind = dyn_kind(object, "delete")?;
    let recorded = journaled(
        ctx,
        |c| matches!(c, Change::Deleted { object: o, .. } if o == object),
    );
    if !recorded {
        ctx.engine.check_lease().await?;
        let change = Change::Deleted {
            step,
            object: object.clone(),
        };
        ctx.journal.update(|r| r.changes.push(change.clone())).await?;
    }
    ctx.engine.check_lease().await?;
    ctx.engine.cluster.delete_dyn(kind, &ctx.ns, &object.name).await?;
    Ok(())
}
