//! apps/v1 workload controllers, modelled on kube-controller-manager:
//! - Deployment (`pkg/controller/deployment/{sync,rolling,recreate,progress}.go`, `util/deployment_util.go`):
//!   a ReplicaSet per pod template (`pod-template-hash`), revisions, RollingUpdate fenceposts
//!   (`ResolveFenceposts`: surge rounds up, unavailable down, both zero -> unavailable 1), Recreate,
//!   paused, status counts from the ReplicaSets (`calculateStatus`), conditions Available and Progressing
//!   (`syncRolloutStatus`: NewReplicaSetCreated, FoundNewReplicaSet, ReplicaSetUpdated,
//!   NewReplicaSetAvailable, ProgressDeadlineExceeded measured from the condition's lastUpdateTime).
//! - ReplicaSet (`pkg/controller/replicaset/replica_set.go`): creates/deletes pods to match replicas;
//!   deletion is graceful (deletionTimestamp, the kubelet removes the pod later); status counts.
//! - StatefulSet (`pkg/controller/statefulset/stateful_set_control.go`): ordered pods `<name>-<i>`,
//!   OrderedReady, RollingUpdate from the highest ordinal one at a time, revisions.
//! - DaemonSet (`pkg/controller/daemon/`): one pod per node, RollingUpdate with maxUnavailable.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::events::emit;
use super::util::{
    self, annotation, conditions, controller_uid, generation, get_condition, label, name, ns, owner_ref,
    pod_active, pod_ready, scaled, set_condition, terminating, uid,
};
use super::{Snap, res};
use crate::Sim;

const DC: &str = "deployment-controller";
const RSC: &str = "replicaset-controller";
const REV: &str = "deployment.kubernetes.io/revision";

pub fn reconcile(sim: &Sim, snap: &Snap) {
    let mut rs_by_owner: HashMap<&str, Vec<&Value>> = HashMap::new();
    for rs in &snap.replicasets {
        if let Some(o) = controller_uid(rs) {
            rs_by_owner.entry(o).or_default().push(rs);
        }
    }
    for d in &snap.deployments {
        if terminating(d) {
            continue;
        }
        let rss = rs_by_owner.get(uid(d)).cloned().unwrap_or_default();
        // oldPodsRunning (recreate.go): any pod of a ReplicaSet not matching the template, terminating
        // ones included, that has not reached a terminal phase. Only the Recreate strategy reads it.
        let template = &d["spec"]["template"];
        let old_pods_running = d["spec"]["strategy"]["type"].as_str() == Some("Recreate")
            && rss
                .iter()
                .filter(|r| !same_template_ignoring_hash(&r["spec"]["template"], template))
                .flat_map(|r| snap.owned_pods(uid(r)))
                .any(|p| p["status"]["phase"] != "Succeeded" && p["status"]["phase"] != "Failed");
        deployment(sim, snap, d, rss, old_pods_running);
    }
    for rs in &snap.replicasets {
        replicaset(sim, snap, rs);
    }
    for s in &snap.statefulsets {
        statefulset(sim, snap, s);
    }
    for d in &snap.daemonsets {
        daemonset(sim, snap, d);
    }
}

fn spec_replicas(o: &Value) -> i64 {
    o["spec"]["replicas"].as_i64().unwrap_or(1)
}

fn st(o: &Value, f: &str) -> i64 {
    o["status"][f].as_i64().unwrap_or(0)
}

fn revision(rs: &Value) -> i64 {
    annotation(rs, REV).and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// The template without the `pod-template-hash` label (`EqualIgnoreHash`).
fn template_ignoring_hash(t: &Value) -> Value {
    let mut t = t.clone();
    if let Some(l) = t["metadata"]["labels"].as_object_mut() {
        l.remove("pod-template-hash");
        if l.is_empty() {
            t["metadata"].as_object_mut().map(|m| m.remove("labels"));
        }
    }
    if t["metadata"].as_object().is_some_and(|m| m.is_empty()) {
        t.as_object_mut().map(|m| m.remove("metadata"));
    }
    t
}

/// `EqualIgnoreHash` without copying the templates: everything but the metadata compared in place, then
/// the metadata key by key, its labels without the hash label. A pass compares every ReplicaSet's
/// template with its Deployment's, and a pod template is most of a ReplicaSet.
fn same_template_ignoring_hash(a: &Value, b: &Value) -> bool {
    a == b || (crate::store::equal_except(a, b, &["metadata"]) && same_metadata_ignoring_hash(a, b))
}

/// The templates' metadata equal once the `pod-template-hash` label is dropped ([`template_ignoring_hash`]
/// compared). When both templates carry labels (every Deployment's and ReplicaSet's template does: the
/// selector needs them), compared key by key without building the copies; otherwise through the copies.
/// Dropping the hash label can empty the labels (then dropped) and the metadata (then dropped): with labels
/// on both sides that happens to both alike, so the rest compares one to one.
fn same_metadata_ignoring_hash(a: &Value, b: &Value) -> bool {
    use crate::store::equal_except;
    let labelled = |t: &Value| t["metadata"]["labels"].is_object();
    if !(labelled(a) && labelled(b)) {
        return template_ignoring_hash(a)["metadata"] == template_ignoring_hash(b)["metadata"];
    }
    let (ma, mb) = (&a["metadata"], &b["metadata"]);
    equal_except(&ma["labels"], &mb["labels"], &["pod-template-hash"]) && equal_except(ma, mb, &["labels"])
}

/// maxSurge / maxUnavailable as `ResolveFenceposts` resolves them.
fn fenceposts(d: &Value) -> (i64, i64) {
    let replicas = spec_replicas(d);
    if d["spec"]["strategy"]["type"].as_str() == Some("Recreate") {
        return (0, 0);
    }
    let ru = &d["spec"]["strategy"]["rollingUpdate"];
    let surge = scaled(&ru["maxSurge"], replicas, true, "25%");
    let mut unavailable = scaled(&ru["maxUnavailable"], replicas, false, "25%");
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

/// `MaxUnavailable(deployment)`.
fn max_unavailable(d: &Value) -> i64 {
    let replicas = spec_replicas(d);
    if d["spec"]["strategy"]["type"].as_str() == Some("Recreate") || replicas == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas)
}

struct Rs<'a> {
    obj: &'a Value,
    replicas: i64,
}

fn scale_rs(sim: &Sim, d: &Value, rs: &Value, from: i64, to: i64) {
    let surge = fenceposts(d).0;
    let dr = spec_replicas(d);
    util::update(sim, res("apps", "replicasets"), ns(rs), name(rs), DC, |o| {
        o["spec"]["replicas"] = json!(to);
        let a = &mut o["metadata"]["annotations"];
        if !a.is_object() {
            *a = json!({});
        }
        a["deployment.kubernetes.io/desired-replicas"] = json!(dr.to_string());
        a["deployment.kubernetes.io/max-replicas"] = json!((dr + surge).to_string());
    });
    let dir = if to > from { "up" } else { "down" };
    emit(
        sim,
        d,
        false,
        "ScalingReplicaSet",
        &format!("Scaled {dir} replica set {} from {from} to {to}", name(rs)),
        DC,
    );
}

fn deployment(sim: &Sim, snap: &Snap, d: &Value, rss: Vec<&Value>, old_pods_running: bool) {
    let now = snap.now;
    let replicas = spec_replicas(d);
    let template = &d["spec"]["template"];
    let paused = d["spec"]["paused"].as_bool() == Some(true);
    let recreate = d["spec"]["strategy"]["type"].as_str() == Some("Recreate");
    let mut status_conds = conditions(d);
    let mut sorted = rss.clone();
    // Oldest first, by name among equals (the controller's `ReplicaSetsByCreationTimestamp`).
    fn created(r: &Value) -> (&str, &str) {
        (util::meta(r, "creationTimestamp"), name(r))
    }
    sorted.sort_by(|a, b| created(a).cmp(&created(b)));
    let new_idx = sorted
        .iter()
        .position(|r| same_template_ignoring_hash(&r["spec"]["template"], template));
    let mut all: Vec<Rs> = sorted
        .iter()
        .map(|r| Rs {
            obj: r,
            replicas: spec_replicas(r),
        })
        .collect();
    let max_rev = sorted
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != new_idx)
        .map(|(_, r)| revision(r))
        .max()
        .unwrap_or(0);
    // progressDeadlineSeconds defaults to 600; MaxInt32 means "no deadline" (HasProgressDeadline).
    let has_deadline = d["spec"]["progressDeadlineSeconds"].as_i64() != Some(i32::MAX as i64);
    let mut created: Option<crate::store::Shared> = None;

    // getNewReplicaSet: sync the revision of an existing new RS, or create it.
    if let Some(i) = new_idx {
        let rs = all[i].obj;
        if revision(rs) <= max_rev {
            let r = (max_rev + 1).to_string();
            util::update(sim, res("apps", "replicasets"), ns(rs), name(rs), DC, |o| {
                o["metadata"]["annotations"][REV] = json!(r);
            });
        }
        if get_condition(d, "Progressing").is_none() && has_deadline && !paused {
            set_condition(
                &mut status_conds,
                "Progressing",
                "True",
                "FoundNewReplicaSet",
                &format!("Found new replica set \"{}\"", name(rs)),
                true,
                None,
            );
        }
    } else if !paused && (!recreate || (all.iter().all(|r| r.replicas == 0) && !old_pods_running)) {
        let old_total: i64 = all.iter().map(|r| r.replicas).sum();
        let initial = if recreate {
            replicas
        } else {
            let (surge, _) = fenceposts(d);
            let max_total = replicas + surge;
            if old_total >= max_total {
                0
            } else {
                (max_total - old_total).min(replicas)
            }
        };
        let hash = util::template_hash(template, d["status"]["collisionCount"].as_u64().unwrap_or(0));
        let rs_name = format!("{}-{}", name(d), hash);
        let mut t = template.clone();
        if !t["metadata"]["labels"].is_object() {
            t["metadata"]["labels"] = json!({});
        }
        t["metadata"]["labels"]["pod-template-hash"] = json!(hash);
        let mut selector = d["spec"]["selector"].clone();
        if !selector["matchLabels"].is_object() {
            selector["matchLabels"] = json!({});
        }
        selector["matchLabels"]["pod-template-hash"] = json!(hash);
        let (surge, _) = fenceposts(d);
        let rs = json!({
            "metadata": {
                "name": rs_name,
                "namespace": ns(d),
                "labels": t["metadata"]["labels"],
                "annotations": {
                    REV: (max_rev + 1).to_string(),
                    "deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                    "deployment.kubernetes.io/max-replicas": (replicas + surge).to_string(),
                },
                "ownerReferences": [owner_ref(d)],
            },
            "spec": {
                "replicas": initial,
                "minReadySeconds": d["spec"]["minReadySeconds"].as_i64().unwrap_or(0),
                "selector": selector,
                "template": t,
            },
        });
        if let Some(c) = util::create(sim, res("apps", "replicasets"), rs, DC) {
            if initial > 0 {
                emit(
                    sim,
                    d,
                    false,
                    "ScalingReplicaSet",
                    &format!("Scaled up replica set {rs_name} from 0 to {initial}"),
                    DC,
                );
            }
            set_condition(
                &mut status_conds,
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                &format!("Created new replica set \"{rs_name}\""),
                true,
                None,
            );
            created = Some(c);
        }
    }
    let new_name = new_idx
        .map(|i| name(all[i].obj).to_string())
        .or_else(|| created.as_ref().map(|c| name(c).to_string()));
    let new_rev = match new_idx {
        Some(i) if revision(all[i].obj) > max_rev => Some(revision(all[i].obj)),
        Some(_) => Some(max_rev + 1),
        None => created.as_ref().map(|_| max_rev + 1),
    };

    // Scaling (one step per sync, as rolloutRolling / rolloutRecreate do).
    if !paused && created.is_none() {
        if let Some(ni) = new_idx {
            if recreate {
                recreate_step(sim, d, &mut all, ni, replicas, old_pods_running);
            } else {
                rolling_step(sim, d, &mut all, ni, replicas, now);
            }
        } else if recreate {
            for r in all.iter_mut().filter(|r| r.replicas > 0) {
                scale_rs(sim, d, r.obj, r.replicas, 0);
                r.replicas = 0;
            }
        }
    }
    if !paused && let Some(ni) = new_idx {
        // cleanupDeployment: keep revisionHistoryLimit old ReplicaSets with no replicas.
        let limit = d["spec"]["revisionHistoryLimit"].as_i64().unwrap_or(10).max(0) as usize;
        let dead: Vec<&Rs> = all
            .iter()
            .enumerate()
            .filter(|(i, r)| *i != ni && r.replicas == 0 && st(r.obj, "replicas") == 0)
            .map(|(_, r)| r)
            .collect();
        if dead.len() > limit {
            for r in &dead[..dead.len() - limit] {
                let _ = sim.store.delete(
                    res("apps", "replicasets"),
                    ns(r.obj),
                    name(r.obj),
                    crate::store::Propagation::Background,
                    false,
                    None,
                );
            }
        }
    }

    // calculateStatus
    let new_rs = new_idx.map(|i| all[i].obj);
    let sum = |f: &str| all.iter().map(|r| st(r.obj, f)).sum::<i64>();
    let total_spec: i64 =
        all.iter().map(|r| r.replicas).sum::<i64>() + created.as_ref().map(|c| spec_replicas(c)).unwrap_or(0);
    let available = sum("availableReplicas");
    let mut status = json!({
        "observedGeneration": generation(d),
        "replicas": sum("replicas"),
        "updatedReplicas": new_rs.map(|r| st(r, "replicas")).unwrap_or(0),
        "readyReplicas": sum("readyReplicas"),
        "availableReplicas": available,
        "unavailableReplicas": (total_spec - available).max(0),
    });
    if let Some(c) = d["status"].get("collisionCount") {
        status["collisionCount"] = c.clone();
    }
    if available >= replicas - max_unavailable(d) {
        set_condition(
            &mut status_conds,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            true,
            None,
        );
    } else {
        set_condition(
            &mut status_conds,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            true,
            None,
        );
    }
    let old = &d["status"];
    let cur = status_conds.iter().find(|c| c["type"] == "Progressing").cloned();
    if paused {
        // checkPausedConditions
        let timed_out = cur
            .as_ref()
            .is_some_and(|c| c["reason"] == "ProgressDeadlineExceeded");
        if !timed_out && cur.as_ref().is_none_or(|c| c["reason"] != "DeploymentPaused") {
            set_condition(
                &mut status_conds,
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused",
                true,
                None,
            );
        }
    } else {
        if cur.as_ref().is_some_and(|c| c["reason"] == "DeploymentPaused") {
            set_condition(
                &mut status_conds,
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed",
                true,
                None,
            );
        }
        let cur = status_conds.iter().find(|c| c["type"] == "Progressing").cloned();
        let s = |v: &Value, f: &str| v[f].as_i64().unwrap_or(0);
        let complete_already = s(&status, "replicas") == s(&status, "updatedReplicas")
            && cur
                .as_ref()
                .is_some_and(|c| c["reason"] == "NewReplicaSetAvailable");
        if has_deadline && !complete_already {
            let rs_name = new_name.clone().unwrap_or_default();
            let complete = s(&status, "updatedReplicas") == replicas
                && s(&status, "replicas") == replicas
                && s(&status, "availableReplicas") == replicas;
            let progressing = s(&status, "updatedReplicas") > s(old, "updatedReplicas")
                || (s(&status, "replicas") - s(&status, "updatedReplicas"))
                    < (s(old, "replicas") - s(old, "updatedReplicas"))
                || s(&status, "readyReplicas") > s(old, "readyReplicas")
                || s(&status, "availableReplicas") > s(old, "availableReplicas");
            let deadline = d["spec"]["progressDeadlineSeconds"].as_i64().unwrap_or(600);
            let timed_out = cur.as_ref().is_some_and(|c| {
                c["reason"] == "ProgressDeadlineExceeded"
                    || (c["reason"] != "NewReplicaSetAvailable"
                        && c["lastUpdateTime"]
                            .as_str()
                            .and_then(util::ts_ms)
                            .is_some_and(|t| snap.due(ns(d), t + (deadline as u64) * 1000 + 1)))
            });
            if complete {
                set_condition(
                    &mut status_conds,
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    &format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                    true,
                    None,
                );
            } else if progressing {
                // Every progress refreshes lastUpdateTime (the condition is replaced, transition kept).
                let transition = cur
                    .as_ref()
                    .filter(|c| c["status"] == "True")
                    .map(|c| c["lastTransitionTime"].clone());
                status_conds.retain(|c| c["type"] != "Progressing");
                set_condition(
                    &mut status_conds,
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    &format!("ReplicaSet \"{rs_name}\" is progressing."),
                    true,
                    None,
                );
                if let Some(t) = transition
                    && let Some(c) = status_conds.iter_mut().find(|c| c["type"] == "Progressing")
                {
                    c["lastTransitionTime"] = t;
                }
            } else if timed_out {
                set_condition(
                    &mut status_conds,
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    &format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                    true,
                    None,
                );
            }
        }
        // ReplicaFailure is copied from the ReplicaSets (getReplicaFailures).
        let failure = all
            .iter()
            .find_map(|r| get_condition(r.obj, "ReplicaFailure").filter(|c| c["status"] == "True"));
        match failure {
            Some(f) => {
                set_condition(
                    &mut status_conds,
                    "ReplicaFailure",
                    "True",
                    f["reason"].as_str().unwrap_or("FailedCreate"),
                    f["message"].as_str().unwrap_or(""),
                    true,
                    None,
                );
            }
            None => status_conds.retain(|c| c["type"] != "ReplicaFailure"),
        }
    }
    // Conditions in the order the controller creates them: Available, Progressing, ReplicaFailure.
    let order = |t: &Value| match t["type"].as_str() {
        Some("Available") => 0,
        Some("Progressing") => 1,
        _ => 2,
    };
    status_conds.sort_by_key(order);
    status["conditions"] = json!(status_conds);
    let rev = new_rev.map(|r| r.to_string());
    if status == d["status"] && rev.as_deref().is_none_or(|r| annotation(d, REV) == Some(r)) {
        return;
    }
    util::update(sim, res("apps", "deployments"), ns(d), name(d), DC, |o| {
        o["status"] = status.clone();
        if let Some(r) = &rev {
            if !o["metadata"]["annotations"].is_object() {
                o["metadata"]["annotations"] = json!({});
            }
            o["metadata"]["annotations"][REV] = json!(r);
        }
    });
}

/// rolloutRolling: reconcileNewReplicaSet, then reconcileOldReplicaSets.
fn rolling_step(sim: &Sim, d: &Value, all: &mut [Rs], ni: usize, replicas: i64, _now: u64) {
    let (surge, _) = fenceposts(d);
    let new_replicas = all[ni].replicas;
    if new_replicas > replicas {
        scale_rs(sim, d, all[ni].obj, new_replicas, replicas);
        all[ni].replicas = replicas;
        return;
    }
    if new_replicas < replicas {
        let current: i64 = all.iter().map(|r| r.replicas).sum();
        let max_total = replicas + surge;
        if current < max_total {
            let up = (max_total - current).min(replicas - new_replicas);
            if up > 0 {
                scale_rs(sim, d, all[ni].obj, new_replicas, new_replicas + up);
                all[ni].replicas += up;
                return;
            }
        }
    }
    // reconcileOldReplicaSets
    let old_count: i64 = all
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != ni)
        .map(|(_, r)| r.replicas)
        .sum();
    if old_count == 0 {
        return;
    }
    let all_count: i64 = all.iter().map(|r| r.replicas).sum();
    let min_available = replicas - max_unavailable(d);
    let new_unavailable = all[ni].replicas - st(all[ni].obj, "availableReplicas");
    let max_scaled_down = all_count - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return;
    }
    // cleanupUnhealthyReplicas (oldest first)
    let mut cleaned = 0;
    for (i, r) in all.iter_mut().enumerate() {
        if i == ni || cleaned >= max_scaled_down {
            continue;
        }
        let avail = st(r.obj, "availableReplicas");
        if r.replicas <= avail {
            continue;
        }
        let down = (max_scaled_down - cleaned).min(r.replicas - avail);
        if down > 0 {
            scale_rs(sim, d, r.obj, r.replicas, r.replicas - down);
            r.replicas -= down;
            cleaned += down;
        }
    }
    // scaleDownOldReplicaSetsForRollingUpdate
    let available: i64 = all.iter().map(|r| st(r.obj, "availableReplicas")).sum();
    if available <= min_available {
        return;
    }
    let total = available - min_available;
    let mut done = 0;
    for (i, r) in all.iter_mut().enumerate() {
        if i == ni || done >= total || r.replicas == 0 {
            continue;
        }
        let down = r.replicas.min(total - done);
        scale_rs(sim, d, r.obj, r.replicas, r.replicas - down);
        r.replicas -= down;
        done += down;
    }
}

/// rolloutRecreate: old ReplicaSets to zero, wait for their pods to go, then the new one to full size.
fn recreate_step(sim: &Sim, d: &Value, all: &mut [Rs], ni: usize, replicas: i64, old_pods_running: bool) {
    let mut scaled_down = false;
    for (i, r) in all.iter_mut().enumerate() {
        if i != ni && r.replicas > 0 {
            scale_rs(sim, d, r.obj, r.replicas, 0);
            r.replicas = 0;
            scaled_down = true;
        }
    }
    if scaled_down {
        return;
    }
    if old_pods_running {
        return;
    }
    if all[ni].replicas != replicas {
        scale_rs(sim, d, all[ni].obj, all[ni].replicas, replicas);
        all[ni].replicas = replicas;
    }
}

/// A pod from a template, owned by `owner` (the shape `controller.GetPodFromTemplate` builds).
pub fn pod_from_template(
    template: &Value,
    namespace: &str,
    pod_name: &str,
    owner: &Value,
    generate: &str,
) -> Value {
    let mut spec = template["spec"].clone();
    if !spec.is_object() {
        spec = json!({});
    }
    if spec["serviceAccountName"].as_str().is_none_or(str::is_empty) {
        spec["serviceAccountName"] = json!("default");
    }
    for (k, v) in [
        ("restartPolicy", json!("Always")),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("terminationGracePeriodSeconds", json!(30)),
    ] {
        if spec[k].is_null() {
            spec[k] = v;
        }
    }
    let mut meta = json!({
        "name": pod_name,
        "namespace": namespace,
        "labels": template["metadata"]["labels"].clone(),
        "ownerReferences": [owner_ref(owner)],
    });
    if !generate.is_empty() {
        meta["generateName"] = json!(generate);
    }
    if let Some(a) = template["metadata"]["annotations"].as_object() {
        meta["annotations"] = json!(a);
    }
    if meta["labels"].is_null() {
        meta["labels"] = json!({});
    }
    json!({"metadata": meta, "spec": spec})
}

/// Graceful deletion as the API does it for pods: set deletionTimestamp; the kubelet finishes it.
pub fn delete_pod_gracefully(sim: &Sim, p: &Value, manager: &str) {
    util::update(sim, res("", "pods"), ns(p), name(p), manager, |o| {
        o["metadata"]["deletionTimestamp"] = json!(util::now_ts());
        o["metadata"]["deletionGracePeriodSeconds"] = json!(30);
    });
}

fn replicaset(sim: &Sim, snap: &Snap, rs: &Value) {
    if terminating(rs) {
        return;
    }
    let want = spec_replicas(rs);
    let pods = snap.owned_pods(uid(rs));
    let active: Vec<&Value> = pods.iter().copied().filter(|p| pod_active(p)).collect();
    let diff = active.len() as i64 - want;
    let mut failure: Option<String> = None;
    if diff < 0 {
        let t = &rs["spec"]["template"];
        for _ in 0..(-diff).min(500) {
            let pod_name = format!("{}-{}", name(rs), crate::store::random_suffix(5));
            let pod = pod_from_template(t, ns(rs), &pod_name, rs, &format!("{}-", name(rs)));
            match sim.store.create_shared(res("", "pods"), pod, &util::opts(RSC)) {
                Ok(_) => emit(
                    sim,
                    rs,
                    false,
                    "SuccessfulCreate",
                    &format!("Created pod: {pod_name}"),
                    RSC,
                ),
                Err(e) => {
                    let msg = e.to_string();
                    if get_condition(rs, "ReplicaFailure").is_none_or(|c| c["message"] != msg.as_str()) {
                        emit(
                            sim,
                            rs,
                            true,
                            "FailedCreate",
                            &format!("Error creating: {msg}"),
                            RSC,
                        );
                    }
                    failure = Some(msg);
                    break;
                }
            }
        }
    } else if diff > 0 {
        // getPodsToDelete: unscheduled < pending < not ready < ready, then newest first.
        let mut ranked = active.clone();
        ranked.sort_by_key(|p| {
            (
                p["spec"]["nodeName"].as_str().is_some(),
                p["status"]["phase"] == "Running",
                pod_ready(p),
                std::cmp::Reverse(util::meta(p, "creationTimestamp").to_string()),
            )
        });
        for p in ranked.iter().take(diff as usize) {
            delete_pod_gracefully(sim, p, RSC);
            emit(
                sim,
                rs,
                false,
                "SuccessfulDelete",
                &format!("Deleted pod: {}", name(p)),
                RSC,
            );
        }
    }
    let min_ready = rs["spec"]["minReadySeconds"].as_i64().unwrap_or(0);
    let tmpl_labels = &rs["spec"]["template"]["metadata"]["labels"];
    let fully = active
        .iter()
        .filter(|p| {
            tmpl_labels
                .as_object()
                .is_none_or(|l| l.iter().all(|(k, v)| p["metadata"]["labels"][k] == *v))
        })
        .count();
    let mut conds = conditions(rs);
    match &failure {
        Some(m) => {
            set_condition(
                &mut conds,
                "ReplicaFailure",
                "True",
                "FailedCreate",
                m,
                false,
                None,
            );
        }
        None if diff >= 0 => conds.retain(|c| c["type"] != "ReplicaFailure"),
        None => {}
    }
    let mut status = json!({
        "replicas": active.len(),
        "fullyLabeledReplicas": fully,
        "readyReplicas": active.iter().filter(|p| pod_ready(p)).count(),
        "availableReplicas": active.iter().filter(|p| snap.available(p, min_ready)).count(),
        "observedGeneration": generation(rs),
    });
    if !conds.is_empty() {
        status["conditions"] = json!(conds);
    }
    if status != rs["status"] {
        util::update(sim, res("apps", "replicasets"), ns(rs), name(rs), RSC, |o| {
            o["status"] = status.clone();
        });
    }
}

fn statefulset(sim: &Sim, snap: &Snap, s: &Value) {
    const SSC: &str = "statefulset-controller";
    if terminating(s) {
        return;
    }
    let replicas = spec_replicas(s);
    let update_rev = format!("{}-{}", name(s), util::template_hash(&s["spec"]["template"], 0));
    let current_rev = s["status"]["currentRevision"]
        .as_str()
        .filter(|r| !r.is_empty())
        .unwrap_or(&update_rev)
        .to_string();
    let parallel = s["spec"]["podManagementPolicy"].as_str() == Some("Parallel");
    let pods = snap.owned_pods(uid(s));
    let ordinal = |p: &Value| -> Option<i64> { name(p).rsplit_once('-').and_then(|(_, o)| o.parse().ok()) };
    let by_ord: HashMap<i64, &Value> = pods.iter().filter_map(|p| ordinal(p).map(|o| (o, *p))).collect();
    let rev_of = |p: &Value| label(p, "controller-revision-hash").unwrap_or("").to_string();
    // Create missing pods in order.
    for i in 0..replicas {
        match by_ord.get(&i) {
            Some(p) if terminating(p) => {
                if !parallel {
                    break;
                }
            }
            Some(p) => {
                if !parallel && !pod_ready(p) {
                    break;
                }
            }
            None => {
                let pod_name = format!("{}-{i}", name(s));
                let mut pod = pod_from_template(&s["spec"]["template"], ns(s), &pod_name, s, "");
                let l = &mut pod["metadata"]["labels"];
                l["controller-revision-hash"] = json!(update_rev);
                l["statefulset.kubernetes.io/pod-name"] = json!(pod_name);
                l["apps.kubernetes.io/pod-index"] = json!(i.to_string());
                pod["spec"]["hostname"] = json!(pod_name);
                if let Some(svc) = s["spec"]["serviceName"].as_str() {
                    pod["spec"]["subdomain"] = json!(svc);
                }
                match sim.store.create(res("", "pods"), pod, &util::opts(SSC)) {
                    Ok(_) => emit(
                        sim,
                        s,
                        false,
                        "SuccessfulCreate",
                        &format!("create Pod {pod_name} in StatefulSet {} successful", name(s)),
                        SSC,
                    ),
                    Err(e) => {
                        emit(
                            sim,
                            s,
                            true,
                            "FailedCreate",
                            &format!("create Pod {pod_name} failed error: {e}"),
                            SSC,
                        );
                    }
                }
                if !parallel {
                    break;
                }
            }
        }
    }
    let all_ready = (0..replicas).all(|i| by_ord.get(&i).is_some_and(|p| pod_ready(p) && !terminating(p)));
    // Scale down from the highest ordinal.
    let mut extra: Vec<(&i64, &&Value)> = by_ord
        .iter()
        .filter(|(o, p)| **o >= replicas && !terminating(p))
        .collect();
    extra.sort_by_key(|(o, _)| std::cmp::Reverse(**o));
    if let Some((_, p)) = extra.first()
        && (parallel || all_ready)
    {
        delete_pod_gracefully(sim, p, SSC);
    }
    // RollingUpdate: replace the highest ordinal not at the update revision, one at a time.
    let rolling = s["spec"]["updateStrategy"]["type"]
        .as_str()
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let partition = s["spec"]["updateStrategy"]["rollingUpdate"]["partition"]
        .as_i64()
        .unwrap_or(0);
    if rolling
        && all_ready
        && extra.is_empty()
        && let Some(p) = (partition..replicas)
            .rev()
            .filter_map(|i| by_ord.get(&i))
            .find(|p| rev_of(p) != update_rev)
    {
        delete_pod_gracefully(sim, p, SSC);
    }
    let active: Vec<&Value> = pods.iter().copied().filter(|p| pod_active(p)).collect();
    let min_ready = s["spec"]["minReadySeconds"].as_i64().unwrap_or(0);
    let ready = active.iter().filter(|p| pod_ready(p)).count() as i64;
    let updated = active.iter().filter(|p| rev_of(p) == update_rev).count() as i64;
    let mut current = active.iter().filter(|p| rev_of(p) == current_rev).count() as i64;
    let mut cur_rev = current_rev.clone();
    if updated == replicas && ready == replicas && active.len() as i64 == replicas {
        cur_rev = update_rev.clone();
        current = updated;
    }
    let status = json!({
        "observedGeneration": generation(s),
        "replicas": active.len(),
        "readyReplicas": ready,
        "currentReplicas": current,
        "updatedReplicas": updated,
        "availableReplicas": active.iter().filter(|p| snap.available(p, min_ready)).count(),
        "currentRevision": cur_rev,
        "updateRevision": update_rev,
        "collisionCount": 0,
    });
    if status != s["status"] {
        util::update(sim, res("apps", "statefulsets"), ns(s), name(s), SSC, |o| {
            o["status"] = status.clone();
        });
    }
}

fn daemonset(sim: &Sim, snap: &Snap, d: &Value) {
    const DSC: &str = "daemonset-controller";
    if terminating(d) {
        return;
    }
    let hash = util::template_hash(&d["spec"]["template"], 0);
    let pods = snap.owned_pods(uid(d));
    let min_ready = d["spec"]["minReadySeconds"].as_i64().unwrap_or(0);
    let mut by_node: HashMap<&str, Vec<&Value>> = HashMap::new();
    for p in &pods {
        if let Some(n) = p["spec"]["nodeName"].as_str() {
            by_node.entry(n).or_default().push(p);
        }
    }
    let nodes: Vec<&str> = snap.nodes.iter().map(|n| name(n)).collect();
    let mut unavailable = 0;
    let mut old_pods: Vec<(&Value, bool)> = Vec::new();
    for node in &nodes {
        let on_node: Vec<&Value> = by_node.get(node).cloned().unwrap_or_default();
        let live: Vec<&Value> = on_node.iter().copied().filter(|p| !terminating(p)).collect();
        if live.is_empty() {
            unavailable += 1;
            if on_node.iter().any(|p| terminating(p)) {
                continue; // wait for the old pod to go
            }
            let pod_name = format!("{}-{}", name(d), crate::store::random_suffix(5));
            let mut pod = pod_from_template(
                &d["spec"]["template"],
                ns(d),
                &pod_name,
                d,
                &format!("{}-", name(d)),
            );
            pod["metadata"]["labels"]["controller-revision-hash"] = json!(hash);
            pod["metadata"]["labels"]["pod-template-generation"] = json!(generation(d).to_string());
            pod["spec"]["nodeName"] = json!(node);
            match sim.store.create(res("", "pods"), pod, &util::opts(DSC)) {
                Ok(_) => emit(
                    sim,
                    d,
                    false,
                    "SuccessfulCreate",
                    &format!("Created pod: {pod_name}"),
                    DSC,
                ),
                Err(e) => emit(sim, d, true, "FailedCreate", &format!("Error creating: {e}"), DSC),
            }
            continue;
        }
        for p in &live {
            let avail = snap.available(p, min_ready);
            if !avail {
                unavailable += 1;
            }
            if label(p, "controller-revision-hash") != Some(hash.as_str()) {
                old_pods.push((p, avail));
            }
        }
    }
    let rolling = d["spec"]["updateStrategy"]["type"]
        .as_str()
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    if rolling {
        let max_unavail = scaled(
            &d["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
            nodes.len() as i64,
            true,
            "1",
        )
        .max(1);
        // Old unavailable pods go at once; available ones within the budget.
        let mut budget = max_unavail - unavailable;
        for (p, avail) in &old_pods {
            if !avail {
                delete_pod_gracefully(sim, p, DSC);
            } else if budget > 0 {
                delete_pod_gracefully(sim, p, DSC);
                budget -= 1;
            }
        }
    }
    let active: Vec<&Value> = pods.iter().copied().filter(|p| pod_active(p)).collect();
    let scheduled = nodes
        .iter()
        .filter(|n| by_node.get(*n).is_some_and(|v| v.iter().any(|p| pod_active(p))))
        .count();
    let ready = active.iter().filter(|p| pod_ready(p)).count();
    let available = active.iter().filter(|p| snap.available(p, min_ready)).count();
    let updated = active
        .iter()
        .filter(|p| label(p, "controller-revision-hash") == Some(hash.as_str()))
        .count();
    let status = json!({
        "observedGeneration": generation(d),
        "desiredNumberScheduled": nodes.len(),
        "currentNumberScheduled": scheduled,
        "numberMisscheduled": 0,
        "numberReady": ready,
        "numberAvailable": available,
        "numberUnavailable": nodes.len().saturating_sub(available),
        "updatedNumberScheduled": updated,
    });
    if status != d["status"] {
        util::update(sim, res("apps", "daemonsets"), ns(d), name(d), DSC, |o| {
            o["status"] = status.clone();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_compare_like_equal_ignore_hash() {
        let t = |labels: Value, image: &str| json!({"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": image}]}});
        let base = t(json!({"app": "web"}), "v1");
        let cases = [
            (t(json!({"app": "web", "pod-template-hash": "abc"}), "v1"), true),
            (t(json!({"app": "web"}), "v2"), false),
            (t(json!({"app": "api", "pod-template-hash": "abc"}), "v1"), false),
            (t(json!({"pod-template-hash": "abc"}), "v1"), false),
            (base.clone(), true),
        ];
        for (other, same) in cases {
            let by_copies = template_ignoring_hash(&base) == template_ignoring_hash(&other);
            assert_eq!(by_copies, same, "{other}");
            assert_eq!(same_template_ignoring_hash(&base, &other), same, "{other}");
            assert_eq!(same_template_ignoring_hash(&other, &base), same, "{other}");
        }
        // Templates with no labels or no metadata at all: the same answer as comparing the copies.
        let variants = [
            json!({"spec": {"x": 1}}),
            json!({"metadata": {}, "spec": {"x": 1}}),
            json!({"metadata": {"labels": {"pod-template-hash": "h"}}, "spec": {"x": 1}}),
            json!({"metadata": {"labels": {}}, "spec": {"x": 1}}),
            json!({"metadata": {"name": "n"}, "spec": {"x": 1}}),
            json!({"metadata": {"name": "n", "labels": {"pod-template-hash": "g"}}, "spec": {"x": 1}}),
            json!({"metadata": {"labels": {"app": "a", "pod-template-hash": "h"}}, "spec": {"x": 1}}),
            json!({"metadata": {"labels": {"app": "a"}, "annotations": {"k": "v"}}, "spec": {"x": 1}}),
            json!({"metadata": {"labels": {"app": "b"}}, "spec": {"x": 1}}),
            json!({"metadata": null, "spec": {"x": 1}}),
            json!({"metadata": {"labels": null}, "spec": {"x": 1}}),
        ];
        for a in &variants {
            for b in &variants {
                assert_eq!(
                    same_template_ignoring_hash(a, b),
                    template_ignoring_hash(a) == template_ignoring_hash(b),
                    "{a} {b}"
                );
            }
        }
    }
}
