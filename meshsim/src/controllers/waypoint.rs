//! istiod's waypoint handling and Service bookkeeping:
//! - ClusterIP allocation for Services without one (what the apiserver's service IP allocator does;
//!   10.96.0.0/12).
//! - Gateway deployment controller (`pilot/pkg/config/kube/gatewaycommon`, class `istio-waypoint`,
//!   `DisableNameSuffix`): ServiceAccount, Deployment (1 replica) and Service (port 15008) named like the
//!   Gateway and owned by it; pods labelled `gateway.networking.k8s.io/gateway-name`,
//!   `gateway.istio.io/managed=istio.io-mesh-controller`, `istio.io/dataplane-mode=none`,
//!   `sidecar.istio.io/inject=false`.
//! - Gateway status (`reportGatewayStatus`, `pilot/pkg/config/kube/gateway/conversion.go`): Accepted at
//!   once; Programmed and `status.addresses` (the Service's cluster IP) once the Deployment has a ready
//!   pod plus `latency.waypoint_program_ms` ("should only be populated once the Waypoint's deployment has
//!   at least 1 ready pod", `pilot/pkg/serviceregistry/kube/controller/ambient/waypoints.go`);
//!   `waypoint-never-ready` keeps Programmed False / AddressNotAssigned and no addresses.
//! - Service condition `istio.io/WaypointBound` (`fetchWaypointForService`/`fetchWaypointForTarget` in
//!   waypoints.go, messages from `ReportWaypoint*`): Service label `istio.io/use-waypoint` (value `none`
//!   opts out) else the Namespace label, with `istio.io/use-waypoint-namespace`; True/WaypointAccepted
//!   "Successfully attached to waypoint ns/name" when the Gateway has addresses; False/WaypointIsNotReady
//!   otherwise; AttachmentDenied across namespaces unless the mesh listener allows them;
//!   UnsupportedTrafficType when the waypoint is `istio.io/waypoint-for: workload|none`.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Value, json};

use super::queue::Indexes;
use super::util::{self, NsSnapshot, generation, label, name, ns, owner_ref, set_condition, uid};
use super::{Snap, State, res};
use crate::Sim;
use crate::faults::FaultKind;
use crate::store::Shared;

const ISTIOD: &str = "istiod";
/// Condition type on Services bound to a waypoint.
pub const WAYPOINT_BOUND: &str = "istio.io/WaypointBound";

pub fn reconcile(sim: &Sim, snap: &Snap, state: &mut State) {
    allocate_cluster_ips(sim, snap, &state.fleet.index);
    let deployments: HashMap<(&str, &str), &Value> = snap
        .deployments
        .iter()
        .map(|d| ((ns(d), name(d)), &**d))
        .collect();
    let services: HashMap<(&str, &str), &Value> =
        snap.services.iter().map(|s| ((ns(s), name(s)), &**s)).collect();
    for gw in &snap.gateways {
        if gw["spec"]["gatewayClassName"].as_str() != Some("istio-waypoint") || util::terminating(gw) {
            state.ns.waypoint_ready_since.remove(uid(gw));
            continue;
        }
        ensure_resources(sim, gw, &deployments, &services);
        let dep = deployments.get(&(ns(gw), name(gw)));
        let ready = dep.is_some_and(|d| d["status"]["readyReplicas"].as_i64().unwrap_or(0) >= 1);
        let never = snap.fault(FaultKind::WaypointNeverReady, ns(gw), |f| {
            f.name.as_deref().is_none_or(|n| n == name(gw))
        });
        if ready && !never {
            state
                .ns
                .waypoint_ready_since
                .entry(uid(gw).to_string())
                .or_insert(state.now);
        } else {
            state.ns.waypoint_ready_since.remove(uid(gw));
        }
        let programmed = state
            .ns
            .waypoint_ready_since
            .get(uid(gw))
            .is_some_and(|t| snap.due(ns(gw), t + sim.settings.latency.waypoint_program_ms));
        let ip = services
            .get(&(ns(gw), name(gw)))
            .and_then(|s| s["spec"]["clusterIP"].as_str())
            .filter(|ip| !ip.is_empty() && *ip != "None")
            .map(str::to_string);
        gateway_status(sim, gw, programmed && ip.is_some(), ip);
    }
    waypoint_bound(sim, snap);
}

/// Gives Services without one a free cluster IP; the index holds the IPs taken fleet-wide, and the ones
/// given here are added to it (under its lock, so workers reconciling other namespaces at the same time
/// never give the same IP twice).
fn allocate_cluster_ips(sim: &Sim, snap: &Snap, index: &Mutex<Indexes>) {
    let missing: Vec<&Value> = snap
        .services
        .iter()
        .map(|s| &**s)
        .filter(|s| {
            s["spec"]["clusterIP"].as_str().is_none_or(str::is_empty)
                && s["spec"]["type"].as_str() != Some("ExternalName")
        })
        .collect();
    if missing.is_empty() {
        return;
    }
    let given: Vec<(&Value, String)> = {
        let mut index = index.lock().unwrap_or_else(|e| e.into_inner());
        let used = &mut index.ips_used;
        used.extend(snap.services.iter().filter_map(|s| {
            s["spec"]["clusterIP"]
                .as_str()
                .filter(|ip| !ip.is_empty())
                .map(str::to_string)
        }));
        let mut n: u32 = 10;
        missing
            .into_iter()
            .map(|s| {
                loop {
                    let ip = format!("10.96.{}.{}", n / 250, n % 250 + 1);
                    n += 1;
                    if used.insert(ip.clone()) {
                        break (s, ip);
                    }
                }
            })
            .collect()
    };
    for (s, ip) in given {
        util::update(sim, res("", "services"), ns(s), name(s), "kube-apiserver", |o| {
            o["spec"]["clusterIP"] = json!(ip);
            o["spec"]["clusterIPs"] = json!([ip]);
            if o["spec"]["type"].is_null() {
                o["spec"]["type"] = json!("ClusterIP");
            }
            if o["spec"]["ipFamilies"].is_null() {
                o["spec"]["ipFamilies"] = json!(["IPv4"]);
                o["spec"]["ipFamilyPolicy"] = json!("SingleStack");
            }
            if o["status"]["loadBalancer"].is_null() {
                o["status"]["loadBalancer"] = json!({});
            }
        });
    }
}

fn ensure_resources(
    sim: &Sim,
    gw: &Value,
    deployments: &HashMap<(&str, &str), &Value>,
    services: &HashMap<(&str, &str), &Value>,
) {
    let (gns, gname) = (ns(gw), name(gw));
    let owner = owner_ref(gw);
    let managed = json!({
        "gateway.networking.k8s.io/gateway-name": gname,
        "gateway.istio.io/managed": "istio.io-mesh-controller",
    });
    if sim
        .store
        .get_shared(res("", "serviceaccounts"), gns, gname)
        .is_none()
    {
        util::create(
            sim,
            res("", "serviceaccounts"),
            json!({"metadata": {"name": gname, "namespace": gns, "labels": managed, "ownerReferences": [owner]}}),
            ISTIOD,
        );
    }
    if !deployments.contains_key(&(gns, gname)) {
        let mut pod_labels = managed.clone();
        pod_labels["istio.io/dataplane-mode"] = json!("none");
        pod_labels["sidecar.istio.io/inject"] = json!("false");
        pod_labels["service.istio.io/canonical-name"] = json!(gname);
        pod_labels["service.istio.io/canonical-revision"] = json!("latest");
        util::create(
            sim,
            res("apps", "deployments"),
            json!({
                "metadata": {"name": gname, "namespace": gns, "labels": managed, "ownerReferences": [owner],
                    "annotations": {"gateway.istio.io/controller-version": "5"}},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"gateway.networking.k8s.io/gateway-name": gname}},
                    "template": {
                        "metadata": {"labels": pod_labels, "annotations": {"istio.io/rev": "default"}},
                        "spec": {"serviceAccountName": gname, "containers": [{
                            "name": "istio-proxy",
                            "image": format!("docker.io/istio/proxyv2:{}", super::ISTIO_VERSION),
                            "args": ["proxy", "waypoint", "--domain", "$(POD_NAMESPACE).svc.cluster.local",
                                "--serviceCluster", format!("{gname}.$(POD_NAMESPACE)"),
                                "--proxyLogLevel", "warning", "--proxyComponentLogLevel", "misc:error",
                                "--log_output_level", "default:info"],
                            "ports": [{"containerPort": 15020, "name": "metrics", "protocol": "TCP"},
                                {"containerPort": 15021, "name": "status-port", "protocol": "TCP"},
                                {"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
                            "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}},
                        }]},
                    },
                },
            }),
            ISTIOD,
        );
    }
    if !services.contains_key(&(gns, gname)) {
        util::create(
            sim,
            res("", "services"),
            json!({
                "metadata": {"name": gname, "namespace": gns, "labels": managed, "ownerReferences": [owner]},
                "spec": {
                    "type": "ClusterIP",
                    "selector": {"gateway.networking.k8s.io/gateway-name": gname},
                    "ports": [
                        {"name": "status-port", "port": 15021, "protocol": "TCP", "appProtocol": "tcp"},
                        {"name": "mesh", "port": 15008, "protocol": "TCP", "appProtocol": "all"},
                    ],
                },
            }),
            ISTIOD,
        );
    }
}

fn gateway_status(sim: &Sim, gw: &Value, programmed: bool, ip: Option<String>) {
    let g = generation(gw);
    let mut conds = util::conditions(gw);
    set_condition(
        &mut conds,
        "Accepted",
        "True",
        "Accepted",
        "Resource accepted",
        false,
        Some(g),
    );
    let host = format!("{}.{}.svc.cluster.local", name(gw), ns(gw));
    if programmed {
        set_condition(
            &mut conds,
            "Programmed",
            "True",
            "Programmed",
            &format!("Resource programmed, assigned to service(s) {host}:15008"),
            false,
            Some(g),
        );
    } else {
        set_condition(
            &mut conds,
            "Programmed",
            "False",
            "AddressNotAssigned",
            &format!(
                "Assigned to service(s) {host}:15008, but failed to assign to all requested addresses: waypoint has no ready pods"
            ),
            false,
            Some(g),
        );
    }
    conds.retain(|c| c["type"] == "Accepted" || c["type"] == "Programmed");
    let listeners: Vec<Value> = gw["spec"]["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            let prog = if programmed { "True" } else { "False" };
            let prog_reason = if programmed { "Programmed" } else { "Pending" };
            json!({
                "name": l["name"],
                "attachedRoutes": 0,
                "supportedKinds": [],
                "conditions": [
                    {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "No errors found",
                        "observedGeneration": g, "lastTransitionTime": first_ts(gw, "Accepted")},
                    {"type": "Conflicted", "status": "False", "reason": "NoConflicts", "message": "No errors found",
                        "observedGeneration": g, "lastTransitionTime": first_ts(gw, "Accepted")},
                    {"type": "Programmed", "status": prog, "reason": prog_reason, "message": "No errors found",
                        "observedGeneration": g, "lastTransitionTime": first_ts(gw, "Programmed")},
                    {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs", "message": "No errors found",
                        "observedGeneration": g, "lastTransitionTime": first_ts(gw, "Accepted")},
                ],
            })
        })
        .collect();
    let mut status = json!({"conditions": conds});
    if programmed && let Some(ip) = ip {
        status["addresses"] = json!([{"type": "IPAddress", "value": ip}]);
    }
    if !listeners.is_empty() {
        status["listeners"] = json!(listeners);
    }
    // The condition's own transition time keeps listener entries stable between passes.
    let st = status.clone();
    if gw["status"] != st {
        util::update(
            sim,
            res("gateway.networking.k8s.io", "gateways"),
            ns(gw),
            name(gw),
            ISTIOD,
            |o| {
                let mut s = st.clone();
                fix_listener_times(&mut s);
                o["status"] = s;
            },
        );
    }
}

fn first_ts(gw: &Value, t: &str) -> Value {
    util::get_condition(gw, t)
        .map(|c| c["lastTransitionTime"].clone())
        .unwrap_or(Value::Null)
}

fn fix_listener_times(s: &mut Value) {
    let times: HashMap<String, Value> = s["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["type"].as_str().unwrap_or("").to_string(),
                c["lastTransitionTime"].clone(),
            )
        })
        .collect();
    for l in s["listeners"].as_array_mut().into_iter().flatten() {
        for c in l["conditions"].as_array_mut().into_iter().flatten() {
            if c["lastTransitionTime"].is_null() {
                let key = if c["type"] == "Programmed" {
                    "Programmed"
                } else {
                    "Accepted"
                };
                c["lastTransitionTime"] = times.get(key).cloned().unwrap_or(json!(util::now_ts()));
            }
        }
    }
}

/// `getUseWaypoint`: (name, namespace) or None; `Err(())` for the reserved `none`.
fn use_waypoint(labels: &Value, default_ns: &str) -> Result<Option<(String, String)>, ()> {
    match labels["istio.io/use-waypoint"].as_str() {
        Some("none") => Err(()),
        Some(w) => {
            let wns = labels["istio.io/use-waypoint-namespace"]
                .as_str()
                .unwrap_or(default_ns);
            Ok(Some((w.to_string(), wns.to_string())))
        }
        None => Ok(None),
    }
}

/// The waypoint a Service uses, as (name, namespace): its own `istio.io/use-waypoint` label, else its
/// namespace's (`none` on the Service opts out).
fn waypoint_of(svc: &Value, namespaces: &NsSnapshot) -> Option<(String, String)> {
    let sns = ns(svc);
    match use_waypoint(&svc["metadata"]["labels"], sns) {
        Err(()) => None,
        Ok(Some(t)) => Some(t),
        Ok(None) => use_waypoint(namespaces.labels(sns), sns).ok().flatten(),
    }
}

/// Waypoints in other namespaces that the Services of a pass bind to, read from the store so their
/// binding status is right; each such namespace pair is remembered so that a change to the waypoint
/// queues the Services' namespace.
pub(crate) fn foreign_waypoints(
    sim: &Sim,
    services: &[Shared],
    namespaces: &NsSnapshot,
    gateways: &[Shared],
    state: &mut State,
) -> Vec<Shared> {
    let mut out: Vec<Shared> = Vec::new();
    for svc in services {
        if label(svc, "gateway.istio.io/managed") == Some("istio.io-mesh-controller") {
            continue;
        }
        let Some((wname, wns)) = waypoint_of(svc, namespaces) else {
            continue;
        };
        if wns == ns(svc) {
            continue;
        }
        state
            .fleet
            .index()
            .waypoint_users
            .entry(wns.clone())
            .or_default()
            .insert(ns(svc).to_string());
        let known = |g: &Shared| ns(g) == wns && name(g) == wname;
        if gateways.iter().chain(&out).any(known) {
            continue;
        }
        if let Some(gw) = sim
            .store
            .get_shared(res("gateway.networking.k8s.io", "gateways"), &wns, &wname)
        {
            out.push(gw);
        }
    }
    out
}

/// The WaypointBound outcome for a Service: None = no condition; Some((status, reason, message)).
pub(crate) fn binding(snap: &Snap, svc: &Value) -> Option<(bool, &'static str, String)> {
    if label(svc, "gateway.istio.io/managed") == Some("istio.io-mesh-controller") {
        return None;
    }
    let sns = ns(svc);
    let (wname, wns) = waypoint_of(svc, &snap.ns)?;
    let rn = format!("{wns}/{wname}");
    let gw = snap
        .gateway(&wns, &wname)
        .filter(|g| g["status"]["addresses"].as_array().is_some_and(|a| !a.is_empty()));
    let Some(gw) = gw else {
        return Some((
            false,
            "WaypointIsNotReady",
            format!("waypoint {rn:?} is not ready"),
        ));
    };
    // allowedRoutes of the HBONE listener (default Same).
    let from = gw["spec"]["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["protocol"] == "HBONE" && l["port"] == 15008))
        .map(|l| l["allowedRoutes"]["namespaces"].clone())
        .unwrap_or(Value::Null);
    let allowed = match from["from"].as_str().unwrap_or("Same") {
        "All" => true,
        "Selector" => util::selector_matches(&from["selector"], snap.ns.labels(sns)),
        _ => wns == sns,
    };
    if !allowed {
        return Some((
            false,
            "AttachmentDenied",
            format!("we are not permitted to attach to waypoint {rn:?} (missing allowedRoutes?)"),
        ));
    }
    let traffic = label(gw, "istio.io/waypoint-for").unwrap_or("service");
    if traffic != "service" && traffic != "all" {
        return Some((
            false,
            "UnsupportedTrafficType",
            format!(
                "attempting to bind to traffic type \"service\" which the waypoint {rn:?} does not support"
            ),
        ));
    }
    Some((
        true,
        "WaypointAccepted",
        format!("Successfully attached to waypoint {rn}"),
    ))
}

fn waypoint_bound(sim: &Sim, snap: &Snap) {
    for svc in &snap.services {
        let outcome = binding(snap, svc);
        let mut conds = util::conditions(svc);
        match &outcome {
            Some((ok, reason, msg)) => {
                set_condition(
                    &mut conds,
                    WAYPOINT_BOUND,
                    if *ok { "True" } else { "False" },
                    reason,
                    msg,
                    false,
                    Some(generation(svc)),
                );
            }
            None => conds.retain(|c| c["type"] != WAYPOINT_BOUND),
        }
        let current = util::conditions(svc);
        if conds == current {
            continue;
        }
        util::update(sim, res("", "services"), ns(svc), name(svc), ISTIOD, |o| {
            if conds.is_empty() {
                if let Some(s) = o["status"].as_object_mut() {
                    s.remove("conditions");
                }
            } else {
                o["status"]["conditions"] = json!(conds);
            }
            if o["status"]["loadBalancer"].is_null() {
                o["status"]["loadBalancer"] = json!({});
            }
        });
    }
}
