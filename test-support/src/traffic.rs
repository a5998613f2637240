//! Builders for traffic-model tests: write namespaces, pods (in the conventions of the controllers:
//! sidecar containers and statuses, ambient redirection annotation, Ready conditions), Services,
//! waypoints and policies straight into a `Store`, without the controllers.

use std::sync::Arc;

use meshsim::resources;
use meshsim::traffic::{self, Request, Response, Source};
use meshsim::{Settings, Sim};
use serde_json::{Value, json};

/// A simulation with an empty store and default settings (trust domain `cluster.local`, root
/// namespace `istio-system`).
pub fn sim() -> Arc<Sim> {
    sim_with(Settings::default())
}

/// [`sim`] with other settings (e.g. `external_hosts`).
pub fn sim_with(settings: Settings) -> Arc<Sim> {
    let s = Sim::new(settings, Vec::new());
    // ztunnel on both nodes, ready.
    for node in ["node-1", "node-2"] {
        load(
            &s,
            pod_obj(
                "istio-system",
                &format!("ztunnel-{node}"),
                json!({"app": "ztunnel"}),
                "ztunnel",
                "none",
                true,
                node,
            ),
        );
    }
    s
}

/// Loads one object (its kind from apiVersion/kind).
pub fn load(sim: &Sim, obj: Value) {
    let rt = resources::by_kind(obj["apiVersion"].as_str().unwrap(), obj["kind"].as_str().unwrap())
        .unwrap_or_else(|| panic!("unknown kind in {obj}"));
    sim.store.load(vec![(rt.id(), obj)]).expect("load object");
}

/// Loads every document of a YAML text.
pub fn apply_yaml(sim: &Sim, yaml: &str) {
    for doc in yaml.split("\n---") {
        if doc.trim().is_empty() {
            continue;
        }
        let v: Value = serde_saphyr::from_str(doc).expect("yaml");
        load(sim, v);
    }
}

/// A namespace with labels.
pub fn namespace(sim: &Sim, name: &str, labels: Value) {
    load(
        sim,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}),
    );
}

/// A pod object. `dataplane`: sidecar | sidecar-native | sidecar-not-ready | ambient | pending | none.
pub fn pod_obj(
    ns: &str,
    name: &str,
    labels: Value,
    sa: &str,
    dataplane: &str,
    ready: bool,
    node: &str,
) -> Value {
    let mut containers = vec![
        json!({"name": "app", "image": "istio/echo", "ports": [{"name": "http", "containerPort": 8080}]}),
    ];
    let mut init = Vec::new();
    let mut statuses = vec![json!({"name": "app", "ready": ready})];
    let mut init_statuses = Vec::new();
    let mut annotations = json!({});
    let mut labels = labels;
    match dataplane {
        "sidecar" | "sidecar-not-ready" => {
            containers.push(json!({"name": "istio-proxy", "image": "proxyv2"}));
            statuses.push(json!({"name": "istio-proxy", "ready": dataplane == "sidecar" && ready}));
            annotations["sidecar.istio.io/status"] = json!("{\"containers\":[\"istio-proxy\"]}");
            labels["security.istio.io/tlsMode"] = json!("istio");
        }
        "sidecar-native" => {
            init.push(json!({"name": "istio-proxy", "image": "proxyv2", "restartPolicy": "Always"}));
            init_statuses.push(json!({"name": "istio-proxy", "ready": ready}));
            annotations["sidecar.istio.io/status"] = json!("{\"initContainers\":[\"istio-proxy\"]}");
            labels["security.istio.io/tlsMode"] = json!("istio");
        }
        "ambient" => annotations["ambient.istio.io/redirection"] = json!("enabled"),
        "pending" => annotations["ambient.istio.io/redirection"] = json!("pending"),
        "none" => {}
        other => panic!("unknown dataplane {other}"),
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations},
        "spec": {"serviceAccountName": sa, "nodeName": node, "containers": containers, "initContainers": init},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            "containerStatuses": statuses,
            "initContainerStatuses": init_statuses,
        }
    })
}

/// Adds a pod.
pub fn pod(sim: &Sim, ns: &str, name: &str, labels: Value, sa: &str, dataplane: &str, ready: bool) {
    load(sim, pod_obj(ns, name, labels, sa, dataplane, ready, "node-1"));
}

/// A Service `name` selecting `app=<app>`, port 80 -> 8080 (named `http`).
pub fn service(sim: &Sim, ns: &str, name: &str, app: &str) {
    load(
        sim,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
               "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
    );
}

/// A waypoint Gateway `name` in `ns`: `ready` (address + ready pod), `no-address` (pod not ready, no
/// address), `no-pod` (address but no ready pod).
pub fn waypoint(sim: &Sim, ns: &str, name: &str, state: &str) {
    let mut gw = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": name, "namespace": ns, "labels": {"istio.io/waypoint-for": "service"}},
        "spec": {"gatewayClassName": "istio-waypoint", "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]},
    });
    if state != "no-address" {
        gw["status"] = json!({"addresses": [{"type": "IPAddress", "value": "10.96.0.15"}]});
    }
    load(sim, gw);
    let labels = json!({
        "gateway.networking.k8s.io/gateway-name": name,
        "gateway.istio.io/managed": "istio.io-mesh-controller",
        "istio.io/dataplane-mode": "none",
        "sidecar.istio.io/inject": "false",
    });
    load(
        sim,
        pod_obj(
            ns,
            &format!("{name}-5d9f7c-abcde"),
            labels,
            name,
            "none",
            state == "ready",
            "node-2",
        ),
    );
}

/// Sends one request.
pub fn send(sim: &Sim, source: Source, method: &str, url: &str, headers: &[(&str, &str)]) -> Response {
    traffic::handle(
        sim,
        &Request {
            source,
            method: method.into(),
            url: url.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        },
    )
}

/// `Source::Pod`.
pub fn from(ns: &str, name: &str) -> Source {
    Source::Pod {
        namespace: ns.into(),
        name: name.into(),
    }
}
