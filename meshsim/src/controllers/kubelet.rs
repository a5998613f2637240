//! The scheduler and the kubelet, as far as the API shows them:
//! - scheduling: pods without `spec.nodeName` are bound to the least-loaded node (PodScheduled);
//! - start: `latency.pod_start_ms` after the pod is first seen it is Running with containerStatuses
//!   (running, not ready), classic init containers terminated `Completed`, native sidecars (init
//!   containers with `restartPolicy: Always`, KEP-753) running; podIP/hostIP assigned; a pod istio-cni
//!   must enroll starts only once it is annotated (the CNI ADD returned, `cni.rs`);
//! - readiness: `latency.pod_ready_ms` later, Ready/ContainersReady True and containers ready
//!   (conditions as `pkg/kubelet/status/generate.go` names them: ContainersNotReady with
//!   "containers with unready status: [..]");
//! - crash loop (fault `pods-crashloop-after-restart`, decided when the pod is first seen): app containers
//!   waiting `CrashLoopBackOff`, `lastState.terminated` exit 1, restartCount growing with exponential
//!   backoff, Ready False (the sidecar, if any, still becomes ready);
//! - ztunnel pods are not Ready while `ztunnel-down` holds for their node; waypoint pods are not Ready
//!   under `waypoint-never-ready`;
//! - graceful deletion: a pod with deletionTimestamp disappears `latency.pod_terminate_ms` after it was
//!   first seen terminating (event Killing).
//!
//! Pods in phase Succeeded/Failed are left alone (Jobs finish their pods, see `jobs.rs`).

use std::collections::HashMap;

use serde_json::{Value, json};

use super::events::emit;
use super::util::{self, label, name, ns, set_condition, terminating, uid};
use super::{PodTrack, Snap, State, res};
use crate::Sim;
use crate::faults::FaultKind;

const KUBELET: &str = "kubelet";

fn ms_ts(ms: u64) -> String {
    jiff::Timestamp::from_millisecond((ms / 1000 * 1000) as i64)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| util::now_ts())
}

/// Restarts after `elapsed` ms with a back-off doubling from `base` (kubelet's 10 s, 20 s, 40 s... scaled).
fn restarts(elapsed: u64, base: u64) -> u64 {
    let mut t = 0;
    let mut step = base.max(10);
    let mut n = 0;
    while t + step <= elapsed && n < 1000 {
        t += step;
        step = (step * 2).min(base.max(10) * 30);
        n += 1;
    }
    n
}

pub fn reconcile(sim: &Sim, snap: &Snap, state: &mut State) {
    let now = state.now;
    let lat = &sim.settings.latency;
    // Active pods per node across the fleet, from the controllers' index (the pass may see only a few
    // namespaces); pods scheduled in this pass are added as they are placed.
    let mut load: HashMap<String, usize> = {
        let index = state.fleet.index();
        snap.nodes
            .iter()
            .map(|n| {
                let name = name(n).to_string();
                let count = index.node_load.get(&name).copied().unwrap_or(0);
                (name, count)
            })
            .collect()
    };
    let node_ip: HashMap<&str, &str> = snap
        .nodes
        .iter()
        .map(|n| {
            let ip = n["status"]["addresses"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
                .and_then(|x| x["address"].as_str())
                .unwrap_or("172.18.0.2");
            (name(n), ip)
        })
        .collect();
    let sys = sim.settings.istio.system_namespace.as_str();
    for p in &snap.pods {
        let pod_uid = uid(p).to_string();
        let phase = p["status"]["phase"].as_str().unwrap_or("");
        let first = !state.ns.pods.contains_key(&pod_uid);
        if first {
            let mut t = PodTrack {
                seen: now,
                ..Default::default()
            };
            let managed = label(p, "job-name").is_some()
                || label(p, "gateway.networking.k8s.io/gateway-name").is_some()
                || ns(p) == sys;
            if (phase.is_empty() || phase == "Pending") && !managed {
                let pod_name = name(p).to_string();
                t.crash = !sim
                    .faults
                    .matching(&snap.ns, FaultKind::PodsCrashloopAfterRestart, Some(ns(p)), |f| {
                        f.name.as_deref().is_none_or(|n| pod_name.starts_with(n))
                    })
                    .is_empty();
            }
            if phase == "Running" {
                // Loaded with a status (fixtures): treat as started and ready long ago.
                t.running = Some(0);
                t.ready = util::pod_ready(p).then_some(0);
            }
            state.ns.pods.insert(pod_uid.clone(), t);
        }
        let track = state.ns.pods.get_mut(&pod_uid).expect("inserted above");
        if terminating(p) {
            let since = *track.terminating_since.get_or_insert_with(|| {
                emit(
                    sim,
                    p,
                    false,
                    "Killing",
                    &format!("Stopping container {}", first_container(p)),
                    KUBELET,
                );
                now
            });
            if snap.due(ns(p), since + lat.pod_terminate_ms) {
                let _ = sim.store.delete(
                    res("", "pods"),
                    ns(p),
                    name(p),
                    crate::store::Propagation::Background,
                    false,
                    None,
                );
            }
            continue;
        }
        if phase == "Succeeded" || phase == "Failed" {
            continue;
        }
        let node = p["spec"]["nodeName"].as_str().unwrap_or("").to_string();
        if node.is_empty() {
            // default-scheduler: least-loaded node, ties by name order.
            let Some(target) = snap
                .nodes
                .iter()
                .map(|n| name(n).to_string())
                .min_by_key(|n| load.get(n).copied().unwrap_or(0))
            else {
                continue;
            };
            *load.entry(target.clone()).or_default() += 1;
            let mut conds = util::conditions(p);
            set_condition(&mut conds, "PodScheduled", "True", "", "", false, None);
            strip_empty(&mut conds);
            let t = target.clone();
            // No Scheduled event: one event per pod (Started) keeps the event volume moderate.
            util::update(sim, res("", "pods"), ns(p), name(p), "default-scheduler", |o| {
                o["spec"]["nodeName"] = json!(t);
                o["status"]["phase"] = json!("Pending");
                o["status"]["conditions"] = json!(conds);
                o["status"]["qosClass"] = json!("BestEffort");
            });
            continue;
        }
        if track.running.is_none() {
            // An ambient pod's sandbox waits for istio-cni's CNI ADD (see `cni.rs`).
            let cni_wait = super::cni::awaiting_cni_add(sim, p, snap.ns.labels(ns(p)));
            if !snap.due(ns(p), track.seen + lat.pod_start_ms) || cni_wait {
                if phase.is_empty() {
                    let mut conds = util::conditions(p);
                    set_condition(&mut conds, "PodScheduled", "True", "", "", false, None);
                    strip_empty(&mut conds);
                    util::update(sim, res("", "pods"), ns(p), name(p), KUBELET, |o| {
                        o["status"]["phase"] = json!("Pending");
                        o["status"]["conditions"] = json!(conds);
                        o["status"]["qosClass"] = json!("BestEffort");
                    });
                }
                continue;
            }
            track.running = Some(now);
            emit(
                sim,
                p,
                false,
                "Started",
                &format!("Started container {}", first_container(p)),
                KUBELET,
            );
        }
        let running = track.running.unwrap_or(now);
        let timers_ready = snap.due(ns(p), running + lat.pod_ready_ms);
        let ztunnel_down = ns(p) == sys && label(p, "app") == Some("ztunnel") && snap.ztunnel_down(&node);
        let wp_down = label(p, "gateway.networking.k8s.io/gateway-name").is_some_and(|gw| {
            snap.fault(FaultKind::WaypointNeverReady, ns(p), |f| {
                f.name.as_deref().is_none_or(|n| n == gw)
            })
        });
        let app_ready = timers_ready && !track.crash && !ztunnel_down && !wp_down;
        if app_ready && track.ready.is_none() {
            track.ready = Some(now);
        }
        if !app_ready {
            track.ready = None;
        }
        let restart_count = if track.crash {
            // The restart count keeps growing: look again every tick, as the periodic sync does.
            snap.wake(ns(p), now + lat.controller_tick_ms.max(1));
            restarts(
                now.saturating_sub(running),
                lat.pod_ready_ms.max(lat.pod_start_ms),
            )
        } else {
            0
        };
        if track.crash && restart_count > 0 && track.last_restart == 0 {
            track.last_restart = restart_count;
            emit(
                sim,
                p,
                true,
                "BackOff",
                &format!(
                    "Back-off restarting failed container {} in pod {}",
                    first_container(p),
                    name(p)
                ),
                KUBELET,
            );
        }
        let ip = match p["status"]["podIP"].as_str() {
            Some(ip) => ip.to_string(),
            None if p["spec"]["hostNetwork"].as_bool() == Some(true) => node_ip
                .get(node.as_str())
                .copied()
                .unwrap_or("172.18.0.2")
                .to_string(),
            None => {
                let n = state.fleet.next_pod_ip() + 1;
                format!("10.244.{}.{}", n / 250, n % 250 + 2)
            }
        };
        let host_ip = node_ip
            .get(node.as_str())
            .copied()
            .unwrap_or("172.18.0.2")
            .to_string();
        let input = StatusInput {
            running,
            app_ready,
            sidecar_ready: timers_ready,
            crash: track.crash,
            restart_count,
            ip,
            host_ip,
        };
        // The status is a function of the pod and the inputs: a pass that changes neither has nothing
        // to build (most passes over a namespace, which any write in it queues).
        let rv = util::meta(p, "resourceVersion");
        if track
            .status_settled
            .as_ref()
            .is_some_and(|(at, settled)| at == rv && *settled == input)
        {
            continue;
        }
        let status = build_status(p, &input);
        if status != p["status"] {
            track.status_settled = None;
            util::update(sim, res("", "pods"), ns(p), name(p), KUBELET, |o| {
                o["status"] = status.clone();
            });
        } else {
            track.status_settled = Some((rv.to_string(), input));
        }
    }
}

fn first_container(p: &Value) -> String {
    p["spec"]["containers"][0]["name"]
        .as_str()
        .unwrap_or("app")
        .to_string()
}

/// The kubelet writes PodScheduled without reason/message; drop empty strings set_condition added.
fn strip_empty(conds: &mut [Value]) {
    for c in conds {
        if let Some(m) = c.as_object_mut() {
            m.retain(|_, v| v != "");
        }
    }
}

/// What the kubelet's status of a running pod depends on besides the pod itself.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StatusInput {
    running: u64,
    app_ready: bool,
    sidecar_ready: bool,
    crash: bool,
    restart_count: u64,
    ip: String,
    host_ip: String,
}

fn container_id(pod: &Value, c: &str) -> String {
    let h = util::template_hash(&json!([util::uid(pod), c]), 0);
    format!(
        "containerd://{}{}",
        h,
        "0".repeat(64usize.saturating_sub(h.len()))
    )
}

fn build_status(p: &Value, i: &StatusInput) -> Value {
    let started = ms_ts(i.running);
    let mut unready = Vec::new();
    let mut containers = Vec::new();
    for c in p["spec"]["containers"].as_array().into_iter().flatten() {
        let cname = c["name"].as_str().unwrap_or("");
        let is_proxy = cname == "istio-proxy";
        let crash = i.crash && !is_proxy;
        let ready = if is_proxy { i.sidecar_ready } else { i.app_ready };
        if !ready {
            unready.push(cname.to_string());
        }
        let mut s = json!({
            "name": cname,
            "image": c["image"],
            "imageID": "",
            "containerID": container_id(p, cname),
            "ready": ready,
            "started": !crash,
            "restartCount": if crash { i.restart_count } else { 0 },
            "state": {"running": {"startedAt": started}},
            "lastState": {},
        });
        if crash {
            s["state"] = json!({"waiting": {"reason": "CrashLoopBackOff",
                "message": format!("back-off 10s restarting failed container={cname} pod={}", name(p))}});
            if i.restart_count > 0 {
                s["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error",
                    "startedAt": started, "finishedAt": started,
                    "containerID": container_id(p, cname)}});
            }
        }
        containers.push(s);
    }
    let mut inits = Vec::new();
    for c in p["spec"]["initContainers"].as_array().into_iter().flatten() {
        let cname = c["name"].as_str().unwrap_or("");
        let native = c["restartPolicy"].as_str() == Some("Always");
        let s = if native {
            if !i.sidecar_ready {
                unready.push(cname.to_string());
            }
            json!({"name": cname, "image": c["image"], "imageID": "", "containerID": container_id(p, cname),
                "ready": i.sidecar_ready, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": started}}, "lastState": {}})
        } else {
            json!({"name": cname, "image": c["image"], "imageID": "", "containerID": container_id(p, cname),
                "ready": true, "started": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started,
                    "finishedAt": started, "containerID": container_id(p, cname)}}, "lastState": {}})
        };
        inits.push(s);
    }
    let all_ready = unready.is_empty();
    let mut conds = util::conditions(p);
    set_condition(
        &mut conds,
        "PodReadyToStartContainers",
        "True",
        "",
        "",
        false,
        None,
    );
    set_condition(&mut conds, "Initialized", "True", "", "", false, None);
    let msg = format!("containers with unready status: [{}]", unready.join(" "));
    if all_ready {
        set_condition(&mut conds, "Ready", "True", "", "", false, None);
        set_condition(&mut conds, "ContainersReady", "True", "", "", false, None);
    } else {
        set_condition(
            &mut conds,
            "Ready",
            "False",
            "ContainersNotReady",
            &msg,
            false,
            None,
        );
        set_condition(
            &mut conds,
            "ContainersReady",
            "False",
            "ContainersNotReady",
            &msg,
            false,
            None,
        );
    }
    set_condition(&mut conds, "PodScheduled", "True", "", "", false, None);
    strip_empty(&mut conds);
    let order = |c: &Value| match c["type"].as_str() {
        Some("PodReadyToStartContainers") => 0,
        Some("Initialized") => 1,
        Some("Ready") => 2,
        Some("ContainersReady") => 3,
        _ => 4,
    };
    conds.sort_by_key(order);
    let mut status = json!({
        "phase": "Running",
        "conditions": conds,
        "hostIP": i.host_ip,
        "hostIPs": [{"ip": i.host_ip}],
        "podIP": i.ip,
        "podIPs": [{"ip": i.ip}],
        "startTime": ms_ts(i.running),
        "qosClass": "BestEffort",
        "containerStatuses": containers,
    });
    if !inits.is_empty() {
        status["initContainerStatuses"] = json!(inits);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles() {
        assert_eq!(restarts(5, 10), 0);
        assert_eq!(restarts(10, 10), 1);
        assert_eq!(restarts(30, 10), 2);
        assert_eq!(restarts(70, 10), 3);
    }
}
