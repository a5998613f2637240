//! The six step executors: each applies its mutation idempotently (journaling every change before it is
//! sent) and then evaluates the step's gates (docs/design.md §3 table).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use super::primitives::{apply_label, create_bridges, create_planned, delete_object};
use super::{EngineError, NsCtx, probing};
use crate::assess::objects::Obj;
use crate::assess::plan::{ActivationOrder, PolicyMigration};
use crate::assess::policy::AuthzPolicy;
use crate::cluster::Check;
use crate::cluster::DynKind;
use crate::cluster::LabelTarget;
use crate::cluster::{WorkloadKind, restarted_at_now};
use crate::gates::pods::{pods_gate, sidecar_free_and_enrolled, sidecar_ready};
use crate::gates::{GateOutcome, GateResult};
use crate::steps::gate_names as g;
use crate::steps::{Change, ObjRef, Step};

/// Applies `step` and evaluates its gates. A gate the step table (`steps::STEP_TABLE`) does not list
/// for the step is an error gate: the executor reports no verdict the core does not define.
pub(crate) async fn execute(ctx: &mut NsCtx<'_>, step: Step) -> Result<Vec<GateResult>, EngineError> {
    let gates = match step {
        Step::ActivateWaypoint => activate_waypoint(ctx).await,
        Step::EnableAmbient => enable_ambient(ctx).await,
        Step::RemoveInjection => remove_injection(ctx).await,
        Step::Restart => restart(ctx).await,
        Step::RemoveSidecarPolicies => remove_sidecar_policies(ctx).await,
        Step::Validate => validate(ctx).await,
    }?;
    Ok(only_listed(step, gates))
}

/// `gates`, with any gate the step's table row does not list turned into an error naming it.
fn only_listed(step: Step, gates: Vec<GateResult>) -> Vec<GateResult> {
    gates
        .into_iter()
        .map(|g| {
            if crate::steps::unlisted_gates(step, [g.gate.as_str()]).is_empty() {
                g
            } else {
                GateResult::new(
                    g::STEP_ACTION,
                    GateOutcome::Error,
                    json!({"gate": g.gate}),
                    format!(
                        "step {} reported gate {} that the step table does not list for it",
                        step.number(),
                        g.gate
                    ),
                )
            }
        })
        .collect()
}

fn probes_for(ctx: &NsCtx<'_>, step: Step) -> Vec<crate::probes::spec::ProbeSpec> {
    ctx.opts
        .probes
        .iter()
        .filter(|p| p.runs_after(step))
        .cloned()
        .collect()
}

async fn probe_gate(ctx: &NsCtx<'_>, step: Step, gate: &str) -> Option<GateResult> {
    let probes = probes_for(ctx, step);
    if probes.is_empty() {
        return None;
    }
    Some(
        probing::run_gate(
            &ctx.engine.cluster,
            &probes,
            gate,
            ctx.deadline(ctx.opts.timeouts.probes),
        )
        .await,
    )
}

fn stamp(mut g: GateResult, started: jiff::Timestamp) -> GateResult {
    g.started = Some(started);
    g.ended = Some(jiff::Timestamp::now());
    g
}

// === step 1 ===

async fn activate_waypoint(ctx: &mut NsCtx<'_>) -> Result<Vec<GateResult>, EngineError> {
    let step = Step::ActivateWaypoint;
    let mut gates = Vec::new();
    if ctx.opts.plan.policy_migration == PolicyMigration::Apply {
        for t in ctx.plan.twins.clone() {
            create_planned(ctx, step, &t.object, &t.role, &t.manifest).await?;
        }
    }
    if ctx.plan.waypoint_labels.is_empty() && ctx.plan.twins.is_empty() {
        return Ok(vec![GateResult::new(
            g::WAYPOINT_READY,
            GateOutcome::Pass,
            json!({"waypoint": null}),
            format!(
                "no waypoint to activate in {}: nothing in the namespace needs L7 processing",
                ctx.ns
            ),
        )]);
    }
    let bind = ctx.opts.plan.activation_order == ActivationOrder::BeforeAmbient;
    if bind {
        // Bridges go in before the waypoint is bound: from the moment a Service is bound, ambient callers
        // (migrated namespaces, or new pods here once injection is off) reach it through the waypoint, and
        // the destination (sidecar or ztunnel) sees the waypoint's identity, which the selector policy does
        // not admit (traffic-model vectors V05/V06).
        create_bridges(ctx, step).await?;
        for l in ctx.plan.waypoint_labels.clone() {
            apply_label(ctx, step, &l.target, &l.key, Some(&l.value)).await?;
        }
    }
    gates.push(waypoint_gate(ctx, bind).await?);
    if ctx.opts.plan.policy_migration == PolicyMigration::Apply
        && !ctx.plan.twins.is_empty()
        && let Some(p) = probe_gate(ctx, step, g::PROBES).await
    {
        gates.push(p);
    }
    Ok(gates)
}

/// Waits for the waypoint gate (Gateway accepted, programmed with current generation, addressed; its
/// Deployment ready; bound Services report `WaypointBound=True`), re-evaluated on every event of the fleet's
/// watch caches (no request of its own, no timer).
async fn waypoint_gate(ctx: &NsCtx<'_>, bound: bool) -> Result<GateResult, EngineError> {
    let started = jiff::Timestamp::now();
    let ns = ctx.ns.as_str();
    let name = ctx.opts.plan.waypoint_name.clone();
    let until = ctx.deadline(ctx.opts.timeouts.waypoint_ready);
    let Some(cache) = &ctx.engine.cache else {
        return Err(EngineError::NoFleetCache {
            namespace: ns.to_string(),
            what: "the waypoint gate",
        });
    };
    let bound_services: Vec<String> = if bound {
        ctx.plan
            .waypoint_labels
            .iter()
            .filter(|l| l.target.kind == "Service")
            .map(|l| l.target.name.clone())
            .collect()
    } else {
        Vec::new()
    };
    let evaluate = |c: &crate::cluster::FleetCache| {
        let gw = c.dyn_value(DynKind::Gateway, ns, &name);
        let dep = c.deployment(ns, &name);
        let services: Vec<Service> = if bound {
            c.services(ns)
                .into_iter()
                .filter(|s| {
                    let n = s.metadata.name.as_deref().unwrap_or("");
                    n != name && (bound_services.is_empty() || bound_services.iter().any(|b| b == n))
                })
                .collect()
        } else {
            Vec::new()
        };
        crate::gates::waypoint::waypoint_ready(ns, &name, gw.as_ref(), dep.as_ref(), &services)
    };
    let what = format!("waypoint {ns}/{name}");
    let waited = cache
        .wait(&what, ns, until, |c| {
            let r = evaluate(c);
            if r.passed() {
                Check::Done
            } else {
                Check::Pending(r.message)
            }
        })
        .await;
    let result = evaluate(cache);
    match waited {
        Ok(()) => Ok(stamp(result, started)),
        Err(e) if super::is_timeout(&e) && !result.passed() => Ok(stamp(result.timed_out(), started)),
        Err(_) if result.passed() => Ok(stamp(result, started)),
        Err(e) => Err(e.into()),
    }
}

// === step 2 ===

async fn enable_ambient(ctx: &mut NsCtx<'_>) -> Result<Vec<GateResult>, EngineError> {
    let step = Step::EnableAmbient;
    let l = ctx.plan.ambient_label.clone();
    let after = apply_label(ctx, step, &l.target, &l.key, Some(&l.value)).await?;
    // The gate's own time starts once the change is answered (its labels are the patch response).
    let started = jiff::Timestamp::now();
    let want = [(l.key.as_str(), Some(l.value.as_str()))];
    let labels_gate = if l.target == ObjRef::namespace(&ctx.ns) {
        labels_gate_on(ctx, &after, &want, started)
    } else {
        labels_gate(ctx, &want).await?
    };
    let mut gates = vec![labels_gate, ztunnel_gate(ctx).await?];
    if let Some(p) = probe_gate(ctx, step, g::PROBES).await {
        gates.push(p);
    }
    Ok(gates)
}

/// The `namespace-labels` gate (`gates::labels`) on the namespace's labels read back from the API.
async fn labels_gate(ctx: &NsCtx<'_>, want: &[(&str, Option<&str>)]) -> Result<GateResult, EngineError> {
    let started = jiff::Timestamp::now();
    let labels = ctx
        .engine
        .cluster
        .labels_of(&LabelTarget::Namespace { name: ctx.ns.clone() })
        .await?;
    Ok(labels_gate_on(ctx, &labels, want, started))
}

/// The `namespace-labels` gate on labels the API server answered with: the response to the step's own
/// label patch is the object as stored after it, so no second read is needed.
fn labels_gate_on(
    ctx: &NsCtx<'_>,
    labels: &BTreeMap<String, String>,
    want: &[(&str, Option<&str>)],
    started: jiff::Timestamp,
) -> GateResult {
    let gate = crate::gates::labels::namespace_labels(&ctx.ns, labels, want, ctx.engine.cluster.dry_run());
    stamp(gate, started)
}

async fn ztunnel_gate(ctx: &NsCtx<'_>) -> Result<GateResult, EngineError> {
    let started = jiff::Timestamp::now();
    let sysns = "istio-system";
    let ds = match &ctx.engine.cache {
        Some(c) => c.daemonset(sysns, "ztunnel"),
        None => {
            let api: kube::Api<DaemonSet> = ctx.engine.cluster.namespaced(sysns);
            ctx.engine
                .cluster
                .get_opt(&api, "get DaemonSet istio-system/ztunnel", "ztunnel")
                .await?
        }
    };
    Ok(stamp(
        crate::gates::ztunnel::ztunnel_ready(sysns, ds.as_ref()),
        started,
    ))
}

// === step 3 ===

async fn remove_injection(ctx: &mut NsCtx<'_>) -> Result<Vec<GateResult>, EngineError> {
    let step = Step::RemoveInjection;
    let ns_ref = ObjRef::namespace(&ctx.ns);
    let pairs: Vec<(String, String)> = ctx
        .plan
        .injection
        .pairs()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let mut after = None;
    for (k, _) in &pairs {
        after = Some(apply_label(ctx, step, &ns_ref, k, None).await?);
    }
    let started = jiff::Timestamp::now();
    let want: Vec<(&str, Option<&str>)> = vec![("istio-injection", None), ("istio.io/rev", None)];
    let mut gates = vec![match &after {
        Some(labels) => labels_gate_on(ctx, labels, &want, started),
        None => labels_gate(ctx, &want).await?,
    }];
    if let Some(p) = probe_gate(ctx, step, g::PROBES).await {
        gates.push(p);
    }
    Ok(gates)
}

// === step 4 ===

pub(crate) fn workload_kind(r: &ObjRef) -> Option<WorkloadKind> {
    match r.kind.as_str() {
        "Deployment" => Some(WorkloadKind::Deployment),
        "StatefulSet" => Some(WorkloadKind::StatefulSet),
        "DaemonSet" => Some(WorkloadKind::DaemonSet),
        _ => None,
    }
}

async fn restart(ctx: &mut NsCtx<'_>) -> Result<Vec<GateResult>, EngineError> {
    let step = Step::Restart;
    let mut gates = Vec::new();
    let continuous: Vec<_> = ctx
        .opts
        .probes
        .iter()
        .filter(|p| p.runs_during_restart())
        .cloned()
        .collect();
    let (stop_tx, stop_rx) = watch::channel(false);
    let probes_task = (!continuous.is_empty())
        .then(|| probing::spawn_continuous(ctx.engine.cluster.clone(), continuous, stop_rx));

    // The plan orders the batches (workloads behind a bridged policy last: `assess::plan::bridged_last`).
    let batches = ctx.plan.restart_batches.clone();
    let until = ctx.deadline(ctx.opts.timeouts.rollout);
    let mut rollout_results = Vec::new();
    let mut pod_results = Vec::new();
    for batch in &batches {
        // The batch's restarts are journaled in one write before the first is sent (a resumed run reuses
        // the recorded `restartedAt` values, so nothing is restarted twice).
        let restarted_at = |w: &ObjRef, changes: &[Change]| {
            changes.iter().find_map(|c| match c {
                Change::Restarted {
                    workload,
                    restarted_at,
                    ..
                } if workload == w => Some(restarted_at.clone()),
                _ => None,
            })
        };
        let new: Vec<Change> = batch
            .iter()
            .filter(|w| workload_kind(w).is_some())
            .filter(|w| restarted_at(w, &ctx.journal.record().changes).is_none())
            .map(|w| Change::Restarted {
                step,
                workload: w.clone(),
                restarted_at: restarted_at_now(),
                generation: None,
            })
            .collect();
        if !new.is_empty() {
            ctx.engine.check_lease().await?;
            ctx.journal.update(|r| r.changes.extend(new)).await?;
        }
        // The batch's restarts are sent together (each is journaled above and idempotent), so its rollouts
        // start together instead of one request round trip apart.
        ctx.engine.check_lease().await?;
        let sends = batch.iter().filter_map(|w| {
            let kind = workload_kind(w)?;
            let at = restarted_at(w, &ctx.journal.record().changes)?;
            let (engine, ns) = (ctx.engine, ctx.ns.as_str());
            Some(async move {
                let cached = engine
                    .cache
                    .as_ref()
                    .and_then(|c| c.restart_state(kind, ns, &w.name, &at));
                let generation = match cached {
                    // Already restarted with this value (a resumed run): nothing to send.
                    Some((generation, true, _)) => generation,
                    // Known, not paused: the patch alone (the read is the cache's).
                    Some((_, false, false)) => {
                        engine
                            .cluster
                            .patch_restart(kind, ns, &w.name, &at)
                            .await?
                            .generation
                    }
                    // Not cached, or paused (refused with kubectl's message): read and decide.
                    _ => engine.cluster.restart(kind, ns, &w.name, &at).await?.generation,
                };
                Ok::<_, EngineError>((w.clone(), kind, generation))
            })
        });
        let generations: Vec<(ObjRef, WorkloadKind, i64)> = futures::future::join_all(sends)
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        if ctx.engine.cluster.dry_run() {
            continue;
        }
        // Rollouts of the batch, in parallel, watch-driven (kubectl's rules).
        let waits = generations.iter().map(|(w, kind, gen_)| {
            let engine = ctx.engine;
            let ns = ctx.ns.clone();
            async move {
                (
                    w.clone(),
                    engine.wait_rollout(*kind, &ns, &w.name, *gen_, until).await,
                )
            }
        });
        for (w, res) in futures::future::join_all(waits).await {
            let (outcome, msg) = match &res {
                Ok(done) => (GateOutcome::Pass, format!("{w}: {}", done.message)),
                Err(e) if super::is_timeout(e) => (GateOutcome::Timeout, format!("{w}: {e}")),
                Err(e) => (GateOutcome::Fail, format!("{w}: {e}")),
            };
            rollout_results.push((w, outcome, msg));
        }
        if rollout_results.iter().any(|(_, o, _)| *o != GateOutcome::Pass) {
            break;
        }
        // Every new pod: no sidecar, enrolled, Ready.
        for (w, _, _) in &generations {
            pod_results.push(pods_ambient(ctx, w, until).await?);
        }
        if pod_results.iter().any(|r: &GateResult| !r.passed()) {
            break;
        }
    }
    let started = jiff::Timestamp::now();
    let rollout_ok = rollout_results.iter().all(|(_, o, _)| *o == GateOutcome::Pass);
    gates.push(stamp(
        crate::gates::rollout::rollout_gate(&rollout_results),
        started,
    ));
    if rollout_ok {
        gates.extend(pod_results);
    }
    if ctx.opts.plan.activation_order == ActivationOrder::AfterRestart && gates.iter().all(|g| g.passed()) {
        create_bridges(ctx, step).await?;
        for l in ctx.plan.waypoint_labels.clone() {
            apply_label(ctx, step, &l.target, &l.key, Some(&l.value)).await?;
        }
        gates.push(waypoint_gate(ctx, true).await?);
    }
    let _ = stop_tx.send(true);
    if let Some(t) = probes_task {
        match t.await {
            Ok(r) => gates.push(r),
            Err(e) => gates.push(GateResult::new(
                g::PROBES_CONTINUOUS,
                GateOutcome::Error,
                json!({}),
                format!("continuous probes crashed: {e}"),
            )),
        }
    }
    Ok(gates)
}

/// Waits (watch-driven) until every live pod of `w` passes `check` and there are as many as the workload
/// wants, reporting progress; the gate result lists each pod's failures. Timeout when the deadline passes.
async fn pods_wait_gate(
    ctx: &NsCtx<'_>,
    w: &ObjRef,
    until: Instant,
    gate: &str,
    (step, state_name): (Option<Step>, &str),
    check: fn(&Pod) -> crate::gates::pods::PodCheck,
) -> Result<GateResult, EngineError> {
    let started = jiff::Timestamp::now();
    let WorkloadInfo {
        selector,
        match_labels,
        replicas,
    } = workload_info(ctx, w).await?;
    let engine = ctx.engine;
    let ns = ctx.ns.clone();
    let detail = w.to_string();
    let check_set = |pods: &[Pod]| {
        let (good, state) = crate::gates::pods::pods_progress(pods, replicas, check);
        engine.wait_progress(&ns, step, state_name, (good as u32, replicas as u32), &detail);
        match state {
            Ok(()) => Check::Done,
            Err(missing) => Check::Pending(missing),
        }
    };
    let res = match &ctx.engine.cache {
        Some(c) => c.wait_pods_set(&ctx.ns, &match_labels, until, check_set).await,
        None => {
            ctx.engine
                .cluster
                .wait_pods_set(&ctx.ns, &selector, until, check_set)
                .await
        }
    };
    let pods: Vec<Pod> = match (&res, &ctx.engine.cache) {
        (Ok(p), _) => p.pods.clone(),
        (Err(_), Some(c)) => c.pods_matching(&ctx.ns, &match_labels),
        (Err(_), None) => list_pods(ctx, &selector).await?,
    };
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let gate = pods_gate(gate, w, &live, replicas, check);
    let gate = if res.as_ref().is_err_and(super::is_timeout) {
        gate.timed_out()
    } else {
        gate
    };
    Ok(stamp(gate, started))
}

/// The pods-ambient gate of one workload: every current pod sidecar-free, enrolled and Ready.
async fn pods_ambient(ctx: &NsCtx<'_>, w: &ObjRef, until: Instant) -> Result<GateResult, EngineError> {
    let what = (Some(Step::Restart), "waiting for ambient pods");
    pods_wait_gate(ctx, w, until, g::PODS_AMBIENT, what, sidecar_free_and_enrolled).await
}

async fn list_pods(ctx: &NsCtx<'_>, selector: &str) -> Result<Vec<Pod>, EngineError> {
    let api: kube::Api<Pod> = ctx.engine.cluster.namespaced(&ctx.ns);
    let lp = kube::api::ListParams::default().labels(selector);
    Ok(ctx
        .engine
        .cluster
        .call(&format!("list Pods {selector} in {}", ctx.ns), || api.list(&lp))
        .await?
        .items)
}

/// What the pod gates need of a workload, from one read of it.
pub(crate) struct WorkloadInfo {
    /// Its pods' label selector (`k=v,...`).
    pub selector: String,
    /// The same selector as pairs (`matchLabels`).
    pub match_labels: BTreeMap<String, String>,
    /// How many pods it wants (DaemonSets: how many nodes it is scheduled on).
    pub replicas: usize,
}

/// Reads a Deployment, StatefulSet or DaemonSet once: selector and desired pods.
pub(crate) async fn workload_info(ctx: &NsCtx<'_>, w: &ObjRef) -> Result<WorkloadInfo, EngineError> {
    let cluster = &ctx.engine.cluster;
    let what = format!("get {w}");
    let to_sel = |m: Option<BTreeMap<String, String>>| {
        m.unwrap_or_default()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let info = |sel: Option<BTreeMap<String, String>>, replicas: Option<i32>| WorkloadInfo {
        selector: to_sel(sel.clone()),
        match_labels: sel.unwrap_or_default(),
        replicas: replicas.unwrap_or(1).max(0) as usize,
    };
    if let Some(c) = &ctx.engine.cache {
        let found = match w.kind.as_str() {
            "Deployment" => c
                .deployment(&ctx.ns, &w.name)
                .map(|d| info(d.spec.selector.match_labels, d.spec.replicas)),
            "StatefulSet" => c
                .statefulset(&ctx.ns, &w.name)
                .map(|d| info(d.spec.selector.match_labels, d.spec.replicas)),
            "DaemonSet" => c.daemonset(&ctx.ns, &w.name).map(|d| {
                let want = d.status.as_ref().map(|s| s.desired_number_scheduled).unwrap_or(0);
                info(d.spec.selector.match_labels, Some(want))
            }),
            _ => None,
        };
        if let Some(i) = found {
            return Ok(i);
        }
    }
    match w.kind.as_str() {
        "Deployment" => {
            let api: kube::Api<Deployment> = cluster.namespaced(&ctx.ns);
            let spec = cluster.call(&what, || api.get(&w.name)).await?.spec;
            Ok(info(spec.selector.match_labels, spec.replicas))
        }
        "StatefulSet" => {
            let api: kube::Api<StatefulSet> = cluster.namespaced(&ctx.ns);
            let spec = cluster.call(&what, || api.get(&w.name)).await?.spec;
            Ok(info(spec.selector.match_labels, spec.replicas))
        }
        "DaemonSet" => {
            let api: kube::Api<DaemonSet> = cluster.namespaced(&ctx.ns);
            let d = cluster.call(&what, || api.get(&w.name)).await?;
            let want = d.status.as_ref().map(|s| s.desired_number_scheduled).unwrap_or(0);
            Ok(info(d.spec.selector.match_labels, Some(want)))
        }
        _ => Err(EngineError::Unsupported {
            action: "restart",
            object: w.to_string(),
            why: "only Deployments, StatefulSets and DaemonSets are restarted",
        }),
    }
}

/// The rollback check of one workload: `istio-proxy` present and ready in every current pod.
pub(crate) async fn pods_sidecar(
    ctx: &NsCtx<'_>,
    w: &ObjRef,
    until: Instant,
) -> Result<GateResult, EngineError> {
    let what = (None, "rollback: waiting for sidecars");
    pods_wait_gate(ctx, w, until, g::PODS_SIDECAR, what, sidecar_ready).await
}

// === step 5 ===

/// Journal `extra` key of the objects step 5 deletes, recorded as the step starts.
const STEP5_DELETES_KEY: &str = "step5:delete";

/// What a step records in the journal as it starts, in the same write: step 5 records the objects it will
/// delete. A run killed half-way through step 5 resumes with that list, not with a plan made from the
/// half-cleaned namespace (where a deleted policy no longer calls for deleting its bridge).
pub(crate) fn intent(
    step: Step,
    plan: &crate::assess::plan::NamespacePlan,
) -> impl FnOnce(&mut crate::journal::Record) + use<> {
    let deletes = (step == Step::RemoveSidecarPolicies).then(|| plan.delete_at_step5.clone());
    move |r: &mut crate::journal::Record| {
        if let Some(d) = deletes
            && !r.extra.contains_key(STEP5_DELETES_KEY)
        {
            r.extra.insert(STEP5_DELETES_KEY.into(), json!(d));
        }
    }
}

/// Forgets what the steps recorded as they started (a new attempt plans afresh).
pub(crate) fn forget_intents(r: &mut crate::journal::Record) {
    r.extra.remove(STEP5_DELETES_KEY);
}

async fn remove_sidecar_policies(ctx: &mut NsCtx<'_>) -> Result<Vec<GateResult>, EngineError> {
    let step = Step::RemoveSidecarPolicies;
    // The list recorded when the step first started (see `intent`), else the plan's.
    let recorded: Option<Vec<ObjRef>> = ctx
        .journal
        .record()
        .extra
        .get(STEP5_DELETES_KEY)
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    let deletes = recorded.unwrap_or_else(|| ctx.plan.delete_at_step5.clone());
    for o in deletes {
        delete_object(ctx, step, &o).await?;
    }
    let mut gates = Vec::new();
    if let Some(p) = probe_gate(ctx, step, g::PROBES_L7).await {
        gates.push(p);
    }
    gates.push(no_rejected_policy_gate(ctx).await?);
    Ok(gates)
}

/// The step 5 gate (`gates::policies::no_ztunnel_rejected_policy`) on the AuthorizationPolicies read
/// from the API now: the watch caches may not have seen step 5's deletes yet.
async fn no_rejected_policy_gate(ctx: &NsCtx<'_>) -> Result<GateResult, EngineError> {
    let started = jiff::Timestamp::now();
    let aps = ctx
        .engine
        .cluster
        .list_dyn(DynKind::AuthorizationPolicy, &ctx.ns)
        .await?;
    // Converted here, where they are read: the gate judges the typed policies.
    let policies: Vec<Obj<AuthzPolicy>> = aps
        .into_iter()
        .map(|o| crate::cluster::with_types(DynKind::AuthorizationPolicy, o))
        .filter_map(|o| serde_json::to_value(o).ok())
        .map(Obj::from)
        .collect();
    // A dry run's deletes were not persisted: the policies step 5 deletes are still listed.
    let allowed: Vec<String> = if ctx.engine.cluster.dry_run() {
        ctx.plan
            .delete_at_step5
            .iter()
            .filter(|o| o.kind == "AuthorizationPolicy")
            .map(|o| o.name.clone())
            .collect()
    } else {
        Vec::new()
    };
    let gate = crate::gates::policies::no_ztunnel_rejected_policy(
        &policies,
        &allowed,
        ctx.opts.plan.allow_unreplaced_l7,
    );
    Ok(stamp(gate, started))
}

// === step 6 ===

async fn validate(ctx: &mut NsCtx<'_>) -> Result<Vec<GateResult>, EngineError> {
    let step = Step::Validate;
    let mut gates = Vec::new();
    let until = ctx.deadline(ctx.opts.timeouts.rollout);
    if !ctx.engine.cluster.dry_run() {
        let workloads: Vec<ObjRef> = ctx.plan.restart_batches.iter().flatten().cloned().collect();
        let restarted: Vec<ObjRef> = ctx
            .journal
            .record()
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Restarted { workload, .. } => Some(workload.clone()),
                _ => None,
            })
            .collect();
        let mut all: Vec<ObjRef> = restarted;
        for w in workloads {
            if !all.contains(&w) {
                all.push(w);
            }
        }
        for w in &all {
            gates.push(pods_ambient(ctx, w, until).await?);
        }
    }
    let probes: Vec<_> = ctx
        .opts
        .probes
        .iter()
        .filter(|p| p.runs_after(step))
        .cloned()
        .collect();
    if !probes.is_empty() {
        gates.push(
            probing::run_gate(
                &ctx.engine.cluster,
                &probes,
                g::PROBES_L7,
                ctx.deadline(ctx.opts.timeouts.probes),
            )
            .await,
        );
    }
    if gates.is_empty() {
        gates.push(GateResult::new(
            g::PODS_AMBIENT,
            GateOutcome::Pass,
            json!({}),
            "nothing to validate (dry run)",
        ));
    }
    Ok(gates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_missing_from_the_step_table_is_an_error_not_a_verdict() {
        let pass = |name: &str| GateResult::new(name, GateOutcome::Pass, json!({}), "ok");
        let out = only_listed(
            Step::EnableAmbient,
            vec![pass(g::ZTUNNEL_READY), pass(g::PODS_SIDECAR)],
        );
        assert!(out[0].passed());
        assert_eq!(out[1].gate, g::STEP_ACTION);
        assert_eq!(out[1].outcome, GateOutcome::Error);
        assert!(out[1].message.contains("pods-sidecar"), "{}", out[1].message);
    }
}
