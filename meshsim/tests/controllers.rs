//! Controller behaviour through the library: rollouts, injection, CNI enrollment, waypoints,
//! AuthorizationPolicy status and Jobs. Latencies are a few milliseconds so each test runs fast.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meshsim::faults::{FaultKind, FaultSpec};
use meshsim::resources;
use meshsim::settings::{Latencies, NodeSettings};
use meshsim::store::{Target, WriteOpts};
use meshsim::{Settings, Sim, controllers, fixtures};
use serde_json::{Value, json};

fn settings() -> Settings {
    Settings {
        latency: Latencies {
            controller_tick_ms: 5,
            pod_start_ms: 10,
            pod_ready_ms: 10,
            pod_terminate_ms: 10,
            cni_enroll_ms: 5,
            waypoint_program_ms: 10,
            job_run_ms: 10,
            api_ms: 0,
        },
        ..Settings::default()
    }
}

struct Env {
    sim: Arc<Sim>,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for t in &self._tasks {
            t.abort();
        }
    }
}

fn start(settings: Settings, faults: Vec<FaultSpec>, yaml: &str) -> Env {
    let sim = Sim::new(settings, faults);
    controllers::install(&sim).unwrap();
    if !yaml.is_empty() {
        sim.store
            .load(fixtures::parse_text(yaml, "test").unwrap())
            .unwrap();
    }
    let tasks = controllers::spawn(sim.clone());
    Env { sim, _tasks: tasks }
}

fn get(sim: &Sim, group: &str, plural: &str, ns: &str, name: &str) -> Option<Value> {
    let r = if group.is_empty() {
        resources::core(plural)
    } else {
        resources::id(group, plural)
    };
    sim.store.get(r, ns, name)
}

fn list(sim: &Sim, group: &str, plural: &str, ns: &str) -> Vec<Value> {
    let r = if group.is_empty() {
        resources::core(plural)
    } else {
        resources::id(group, plural)
    };
    sim.store.list(r, Some(ns)).0
}

async fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

fn cond<'a>(o: &'a Value, t: &str) -> Option<&'a Value> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)
}

/// `kubectl rollout status` for a Deployment (kubectl `DeploymentStatusViewer`): Ok(done) or Err(message).
fn rollout_status(d: &Value) -> Result<bool, String> {
    let s = &d["status"];
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    if n(&d["metadata"]["generation"]) > n(&s["observedGeneration"]) {
        return Ok(false);
    }
    if cond(d, "Progressing").is_some_and(|c| c["reason"] == "ProgressDeadlineExceeded") {
        return Err(format!(
            "deployment {:?} exceeded its progress deadline",
            d["metadata"]["name"]
        ));
    }
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
    if n(&s["updatedReplicas"]) < replicas
        || n(&s["replicas"]) > n(&s["updatedReplicas"])
        || n(&s["availableReplicas"]) < n(&s["updatedReplicas"])
    {
        return Ok(false);
    }
    Ok(true)
}

fn restart(sim: &Sim, ns: &str, name: &str, at: &str) {
    sim.store
        .update_with(
            resources::id("apps", "deployments"),
            ns,
            name,
            Target::Main,
            &WriteOpts::default(),
            |o| {
                let mut o = o.clone();
                o["metadata"].as_object_mut().unwrap().remove("resourceVersion");
                o["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] =
                    json!(at);
                Ok(o)
            },
        )
        .unwrap();
}

fn deployment_yaml(ns: &str, name: &str, replicas: u32, extra_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  replicas: {replicas}\n{extra_spec}  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - name: app\n        image: echo:1\n"
    )
}

fn active_pods(sim: &Sim, ns: &str, app: &str) -> Vec<Value> {
    list(sim, "", "pods", ns)
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["app"] == app && p["metadata"].get("deletionTimestamp").is_none())
        .collect()
}

fn ready(p: &Value) -> bool {
    cond(p, "Ready").is_some_and(|c| c["status"] == "True") && p["status"]["phase"] == "Running"
}

#[tokio::test]
async fn rollout_restart_completes_with_surge_and_unavailable_bounds() {
    let env = start(
        settings(),
        vec![],
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop}}\n---\n{}",
            deployment_yaml("shop", "web", 3, "")
        ),
    );
    let sim = &env.sim;
    wait_until("initial rollout", 10, || {
        get(sim, "apps", "deployments", "shop", "web").is_some_and(|d| rollout_status(&d) == Ok(true))
    })
    .await;
    let d = get(sim, "apps", "deployments", "shop", "web").unwrap();
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    assert_eq!(
        cond(&d, "Available").unwrap()["reason"],
        "MinimumReplicasAvailable"
    );
    assert_eq!(
        cond(&d, "Progressing").unwrap()["reason"],
        "NewReplicaSetAvailable"
    );
    let first_rs = list(sim, "apps", "replicasets", "shop");
    assert_eq!(first_rs.len(), 1);
    let pod = &active_pods(sim, "shop", "web")[0];
    assert_eq!(pod["spec"]["serviceAccountName"], "default");
    assert!(pod["spec"]["nodeName"].is_string());
    assert!(pod["status"]["podIP"].as_str().unwrap().starts_with("10.244."));
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");

    restart(sim, "shop", "web", "2026-01-01T00:00:00Z");
    let mut saw_waiting = false;
    let mut reasons = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = get(sim, "apps", "deployments", "shop", "web").unwrap();
        let pods = active_pods(sim, "shop", "web");
        // maxSurge 25% of 3 rounds up to 1, maxUnavailable 25% rounds down to 0.
        assert!(pods.len() <= 4, "surge bound: {} pods", pods.len());
        assert!(
            pods.iter().filter(|p| ready(p)).count() >= 3,
            "availability bound"
        );
        let r = cond(&d, "Progressing").unwrap()["reason"]
            .as_str()
            .unwrap()
            .to_string();
        if reasons.last() != Some(&r) {
            reasons.push(r);
        }
        match rollout_status(&d) {
            Ok(false) => saw_waiting = true,
            Ok(true) if saw_waiting => break,
            Ok(true) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "restart rollout did not complete");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(reasons.contains(&"ReplicaSetUpdated".to_string()), "{reasons:?}");
    assert_eq!(reasons.last().unwrap(), "NewReplicaSetAvailable");
    let d = get(sim, "apps", "deployments", "shop", "web").unwrap();
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    assert_eq!(d["status"]["observedGeneration"], d["metadata"]["generation"]);
    assert_eq!(d["status"]["updatedReplicas"], 3);
    assert_eq!(d["status"]["availableReplicas"], 3);
    assert_eq!(d["status"].get("unavailableReplicas"), Some(&json!(0)));
    let rss = list(sim, "apps", "replicasets", "shop");
    assert_eq!(rss.len(), 2);
    let new = rss.iter().find(|r| r["spec"]["replicas"] == 3).unwrap();
    assert!(
        cond(&d, "Progressing").unwrap()["message"]
            .as_str()
            .unwrap()
            .contains(new["metadata"]["name"].as_str().unwrap())
    );
    assert_eq!(
        new["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    wait_until("old pods gone", 5, || {
        list(sim, "", "pods", "shop").iter().all(|p| {
            p["metadata"]["labels"]["pod-template-hash"] == new["metadata"]["labels"]["pod-template-hash"]
        })
    })
    .await;
    let events = list(sim, "", "events", "shop");
    assert!(events.iter().any(|e| e["reason"] == "ScalingReplicaSet"));
}

#[tokio::test]
async fn crashloop_rollout_exceeds_progress_deadline() {
    let env = start(
        settings(),
        vec![],
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop}}\n---\n{}",
            deployment_yaml("shop", "web", 2, "  progressDeadlineSeconds: 1\n")
        ),
    );
    let sim = &env.sim;
    wait_until("initial rollout", 10, || {
        get(sim, "apps", "deployments", "shop", "web").is_some_and(|d| rollout_status(&d) == Ok(true))
    })
    .await;
    let mut f = FaultSpec::new(FaultKind::PodsCrashloopAfterRestart, Some("shop"));
    f.name = Some("web".into());
    sim.faults.add(f);
    restart(sim, "shop", "web", "2026-01-01T00:00:00Z");
    wait_until("ProgressDeadlineExceeded", 10, || {
        get(sim, "apps", "deployments", "shop", "web").is_some_and(|d| rollout_status(&d).is_err())
    })
    .await;
    let d = get(sim, "apps", "deployments", "shop", "web").unwrap();
    let p = cond(&d, "Progressing").unwrap();
    assert_eq!(p["status"], "False");
    assert!(
        p["message"]
            .as_str()
            .unwrap()
            .ends_with("has timed out progressing.")
    );
    // maxUnavailable 25% of 2 rounds to 0: the old pods keep serving.
    assert_eq!(d["status"]["availableReplicas"], 2);
    assert_eq!(cond(&d, "Available").unwrap()["status"], "True");
    let crashing: Vec<Value> = active_pods(sim, "shop", "web")
        .into_iter()
        .filter(|p| !ready(p))
        .collect();
    assert!(!crashing.is_empty());
    wait_until("restarts counted", 5, || {
        active_pods(sim, "shop", "web").iter().any(|p| {
            p["status"]["containerStatuses"][0]["restartCount"]
                .as_u64()
                .unwrap_or(0)
                >= 1
                && p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        })
    })
    .await;
}

fn ns_yaml(name: &str, labels: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\n---\n")
}

fn make_pod(
    sim: &Sim,
    ns: &str,
    name: &str,
    labels: Value,
    annotations: Value,
    extra: Value,
) -> Result<Value, u16> {
    let mut spec = json!({"containers": [{"name": "app", "image": "echo:1"}]});
    if let Some(m) = extra.as_object() {
        for (k, v) in m {
            spec[k] = v.clone();
        }
    }
    let pod = json!({"metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations}, "spec": spec});
    sim.store
        .create(resources::core("pods"), pod, &WriteOpts::default())
        .map_err(|e| e.code())
}

fn injected_rev(p: &Value) -> Option<String> {
    p["metadata"]["annotations"]["sidecar.istio.io/status"].as_str()?;
    Some(
        p["metadata"]["annotations"]["istio.io/rev"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

fn proxy_kind(p: &Value) -> &'static str {
    let has = |k: &str| {
        p["spec"][k]
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c["name"] == "istio-proxy"))
    };
    if has("initContainers") {
        "native"
    } else if has("containers") {
        "classic"
    } else {
        "none"
    }
}

#[test]
fn injection_follows_webhook_selectors() {
    let mut s = settings();
    s.istio.revisions = vec!["default".into(), "canary".into()];
    s.istio.tags.insert("prod".into(), "canary".into());
    let sim = Sim::new(s, vec![]);
    controllers::install(&sim).unwrap();
    let yaml = [
        ns_yaml("inj", "istio-injection: enabled"),
        ns_yaml("noinj", "istio-injection: disabled"),
        ns_yaml("rev", "istio.io/rev: canary"),
        ns_yaml("tag", "istio.io/rev: prod"),
        ns_yaml("both", "istio-injection: enabled, istio.io/rev: canary"),
        ns_yaml("plain", ""),
    ]
    .concat();
    sim.store.load(fixtures::parse_text(&yaml, "t").unwrap()).unwrap();
    let none = json!({});
    let cases: Vec<(&str, Value, Value, Value, Option<&str>)> = vec![
        ("inj", json!({}), none.clone(), none.clone(), Some("default")),
        (
            "inj",
            json!({"sidecar.istio.io/inject": "false"}),
            none.clone(),
            none.clone(),
            None,
        ),
        (
            "inj",
            json!({}),
            json!({"sidecar.istio.io/inject": "false"}),
            none.clone(),
            None,
        ),
        ("inj", json!({}), none.clone(), json!({"hostNetwork": true}), None),
        (
            "noinj",
            json!({"istio.io/rev": "default"}),
            none.clone(),
            none.clone(),
            None,
        ),
        (
            "noinj",
            json!({"sidecar.istio.io/inject": "true"}),
            none.clone(),
            none.clone(),
            None,
        ),
        ("rev", json!({}), none.clone(), none.clone(), Some("canary")),
        (
            "rev",
            json!({"istio.io/rev": "default"}),
            none.clone(),
            none.clone(),
            Some("canary"),
        ),
        ("tag", json!({}), none.clone(), none.clone(), Some("canary")),
        ("both", json!({}), none.clone(), none.clone(), Some("default")),
        ("plain", json!({}), none.clone(), none.clone(), None),
        (
            "plain",
            json!({"sidecar.istio.io/inject": "true"}),
            none.clone(),
            none.clone(),
            Some("default"),
        ),
        (
            "plain",
            json!({"istio.io/rev": "canary"}),
            none.clone(),
            none.clone(),
            Some("canary"),
        ),
        (
            "plain",
            json!({"istio.io/rev": "prod"}),
            none.clone(),
            none.clone(),
            Some("canary"),
        ),
        (
            "plain",
            json!({"istio.io/rev": "canary", "sidecar.istio.io/inject": "false"}),
            none.clone(),
            none.clone(),
            None,
        ),
        (
            "kube-system",
            json!({"sidecar.istio.io/inject": "true"}),
            none.clone(),
            none.clone(),
            None,
        ),
    ];
    for (i, (ns, labels, ann, extra, want)) in cases.into_iter().enumerate() {
        let p = make_pod(&sim, ns, &format!("p{i}"), labels.clone(), ann, extra).unwrap();
        assert_eq!(
            injected_rev(&p).as_deref(),
            want,
            "case {i}: ns {ns} labels {labels}"
        );
        if want.is_some() {
            assert_eq!(p["metadata"]["labels"]["security.istio.io/tlsMode"], "istio");
            assert_eq!(p["metadata"]["labels"]["networking.istio.io/tunnel"], "http");
            // Default nodes are 1.32 and 1.33, the pod is not scheduled yet: auto means classic.
            assert_eq!(proxy_kind(&p), "classic", "case {i}");
        } else {
            assert_eq!(proxy_kind(&p), "none", "case {i}");
        }
    }
    // Native sidecars per node kubelet version (the node named in spec.nodeName) and per-pod override.
    let p = make_pod(
        &sim,
        "inj",
        "n1",
        json!({}),
        json!({}),
        json!({"nodeName": "node-2"}),
    )
    .unwrap();
    assert_eq!(proxy_kind(&p), "native");
    let init = &p["spec"]["initContainers"];
    assert_eq!(init[1]["name"], "istio-proxy");
    assert_eq!(init[1]["restartPolicy"], "Always");
    let p = make_pod(
        &sim,
        "inj",
        "n2",
        json!({}),
        json!({}),
        json!({"nodeName": "node-1"}),
    )
    .unwrap();
    assert_eq!(proxy_kind(&p), "classic");
    let p = make_pod(
        &sim,
        "inj",
        "n3",
        json!({}),
        json!({"sidecar.istio.io/nativeSidecar": "true"}),
        json!({}),
    )
    .unwrap();
    assert_eq!(proxy_kind(&p), "native");
    // Prometheus merge.
    let p = make_pod(
        &sim,
        "inj",
        "prom",
        json!({"app": "shop"}),
        json!({"prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics"}),
        json!({}),
    )
    .unwrap();
    let a = &p["metadata"]["annotations"];
    assert_eq!(a["prometheus.io/port"], "15020");
    assert_eq!(a["prometheus.io/path"], "/stats/prometheus");
    assert_eq!(p["metadata"]["labels"]["service.istio.io/canonical-name"], "shop");
    let proxy = p["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "istio-proxy")
        .unwrap();
    let env = proxy["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "ISTIO_PROMETHEUS_ANNOTATIONS")
        .unwrap();
    let orig: Value = serde_json::from_str(env["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        orig,
        json!({"scrape": "true", "port": "8080", "path": "/metrics"})
    );
    let p = make_pod(
        &sim,
        "inj",
        "noprom",
        json!({}),
        json!({"prometheus.io/scrape": "false"}),
        json!({}),
    )
    .unwrap();
    assert!(p["metadata"]["annotations"].get("prometheus.io/port").is_none());
    let status: Value = serde_json::from_str(
        p["metadata"]["annotations"]["sidecar.istio.io/status"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(status["containers"], json!(["istio-proxy"]));
    assert_eq!(status["revision"], "default");
}

#[test]
fn native_auto_when_every_node_is_new_enough() {
    let mut s = settings();
    s.nodes = vec![
        NodeSettings {
            name: "a".into(),
            kubelet_version: "v1.33.1".into(),
        },
        NodeSettings {
            name: "b".into(),
            kubelet_version: "v1.34.0".into(),
        },
    ];
    let sim = Sim::new(s, vec![]);
    controllers::install(&sim).unwrap();
    sim.store
        .load(fixtures::parse_text(&ns_yaml("inj", "istio-injection: enabled"), "t").unwrap())
        .unwrap();
    let p = make_pod(&sim, "inj", "p", json!({}), json!({}), json!({})).unwrap();
    assert_eq!(proxy_kind(&p), "native");
    let p = make_pod(
        &sim,
        "inj",
        "q",
        json!({}),
        json!({"sidecar.istio.io/nativeSidecar": "false"}),
        json!({}),
    )
    .unwrap();
    assert_eq!(proxy_kind(&p), "classic");
}

#[tokio::test]
async fn injector_down_fails_intercepted_pods_only() {
    let env = start(
        settings(),
        vec![],
        &[ns_yaml("inj", "istio-injection: enabled"), ns_yaml("plain", "")].concat(),
    );
    let sim = &env.sim;
    sim.faults.add(FaultSpec::new(FaultKind::InjectorDown, None));
    tokio::time::sleep(Duration::from_millis(40)).await;
    let err = sim
        .store
        .create(
            resources::core("pods"),
            json!({"metadata": {"name": "x", "namespace": "inj"}, "spec": {"containers": [{"name": "a"}]}}),
            &WriteOpts::default(),
        )
        .unwrap_err();
    assert_eq!(err.code(), 500);
    assert!(
        err.to_string()
            .contains("failed calling webhook \"namespace.sidecar-injector.istio.io\""),
        "{err}"
    );
    assert!(make_pod(sim, "plain", "y", json!({}), json!({}), json!({})).is_ok());
    // A Deployment in the injected namespace cannot create pods: FailedCreate and ReplicaFailure.
    sim.store
        .load(fixtures::parse_text(&deployment_yaml("inj", "web", 1, ""), "t").unwrap())
        .unwrap();
    wait_until("ReplicaFailure", 5, || {
        get(sim, "apps", "deployments", "inj", "web")
            .is_some_and(|d| cond(&d, "ReplicaFailure").is_some_and(|c| c["reason"] == "FailedCreate"))
    })
    .await;
}

fn redirection(p: &Value) -> Option<&str> {
    p["metadata"]["annotations"]["ambient.istio.io/redirection"].as_str()
}

#[tokio::test]
async fn cni_enrolls_running_pods_and_follows_relabels() {
    let yaml = [
        ns_yaml("amb", "istio.io/dataplane-mode: ambient"),
        ns_yaml(
            "mixed",
            "istio.io/dataplane-mode: ambient, istio-injection: enabled",
        ),
        ns_yaml("stuck", "istio.io/dataplane-mode: ambient"),
        deployment_yaml("amb", "web", 2, ""),
        "---\n".into(),
        deployment_yaml("mixed", "web", 1, ""),
        "---\n".into(),
        deployment_yaml("stuck", "web", 1, ""),
    ]
    .concat();
    let env = start(
        settings(),
        vec![FaultSpec::new(FaultKind::CniPending, Some("stuck"))],
        &yaml,
    );
    let sim = &env.sim;
    wait_until("ambient pods enabled", 10, || {
        let p = active_pods(sim, "amb", "web");
        p.len() == 2 && p.iter().all(|p| redirection(p) == Some("enabled"))
    })
    .await;
    wait_until("stuck pod pending", 10, || {
        active_pods(sim, "stuck", "web")
            .iter()
            .any(|p| redirection(p) == Some("pending"))
    })
    .await;
    wait_until("sidecar pod ready", 10, || {
        active_pods(sim, "mixed", "web").iter().any(ready)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(
        active_pods(sim, "mixed", "web")
            .iter()
            .all(|p| redirection(p).is_none()),
        "sidecar pods are never enrolled"
    );
    // Removing the namespace label unenrolls running pods.
    sim.store
        .update_with(
            resources::core("namespaces"),
            "",
            "amb",
            Target::Main,
            &WriteOpts::default(),
            |o| {
                let mut o = o.clone();
                o["metadata"]["labels"]
                    .as_object_mut()
                    .unwrap()
                    .remove("istio.io/dataplane-mode");
                o["metadata"].as_object_mut().unwrap().remove("resourceVersion");
                Ok(o)
            },
        )
        .unwrap();
    wait_until("unenrolled", 5, || {
        active_pods(sim, "amb", "web")
            .iter()
            .all(|p| redirection(p).is_none())
    })
    .await;
    // Clearing the CNI fault lets the stuck pod finish enrollment.
    sim.faults.clear();
    wait_until("stuck pod enabled", 5, || {
        active_pods(sim, "stuck", "web")
            .iter()
            .all(|p| redirection(p) == Some("enabled"))
    })
    .await;
}

/// A pod created in an ambient namespace is enrolled before it runs, however slowly the node agent
/// enrolls running pods: istio-cni's CNI ADD (`cni/pkg/plugin/plugin.go`, `doAddRun`) pushes the pod to
/// the node agent synchronously and fails the sandbox until it is enrolled, so the application never runs
/// (never is Ready, never sends or receives) outside the mesh. Only pods already running when their
/// namespace is labelled wait `cni_enroll_ms` (the node agent's informer path).
#[tokio::test]
async fn cni_enrolls_new_pods_before_they_run() {
    let mut s = settings();
    s.latency.cni_enroll_ms = 60_000;
    let yaml = [
        ns_yaml("amb", "istio.io/dataplane-mode: ambient"),
        deployment_yaml("amb", "web", 2, ""),
    ]
    .concat();
    let env = start(s, vec![], &yaml);
    let sim = &env.sim;
    wait_until("web pods ready", 10, || {
        let p = active_pods(sim, "amb", "web");
        p.len() == 2 && p.iter().all(ready)
    })
    .await;
    // Every version of every pod the store ever held: none ran without the annotation.
    let (history, _rx) = sim.store.watch_from(0).expect("history kept");
    let pods = resources::core("pods");
    let ran_unenrolled: Vec<String> = history
        .iter()
        .filter(|e| e.res == pods && e.namespace == "amb")
        .filter(|e| e.object["status"]["phase"] == "Running" && redirection(&e.object) != Some("enabled"))
        .map(|e| format!("{} rv {}", e.object["metadata"]["name"], e.rv))
        .collect();
    assert!(
        ran_unenrolled.is_empty(),
        "pods ran before istio-cni enrolled them: {ran_unenrolled:?}"
    );
    assert!(
        active_pods(sim, "amb", "web")
            .iter()
            .all(|p| redirection(p) == Some("enabled"))
    );
}

fn gateway_yaml(ns: &str, name: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{istio.io/waypoint-for: service}}\nspec:\n  gatewayClassName: istio-waypoint\n  listeners:\n  - name: mesh\n    port: 15008\n    protocol: HBONE\n"
    )
}

fn service_yaml(ns: &str, name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{{labels}}}\nspec:\n  selector: {{app: {name}}}\n  ports:\n  - port: 80\n"
    )
}

#[tokio::test]
async fn waypoint_programs_and_binds_services() {
    let yaml = [
        ns_yaml("shop", "istio.io/use-waypoint: waypoint"),
        ns_yaml("slow", ""),
        gateway_yaml("shop", "waypoint"),
        "---\n".into(),
        gateway_yaml("slow", "waypoint"),
        "---\n".into(),
        service_yaml("shop", "web", ""),
        "---\n".into(),
        service_yaml("shop", "optout", "istio.io/use-waypoint: none"),
        "---\n".into(),
        service_yaml("shop", "other", "istio.io/use-waypoint: missing"),
        "---\n".into(),
        service_yaml("slow", "web", "istio.io/use-waypoint: waypoint"),
    ]
    .concat();
    let mut never = FaultSpec::new(FaultKind::WaypointNeverReady, Some("slow"));
    never.name = Some("waypoint".into());
    let env = start(settings(), vec![never], &yaml);
    let sim = &env.sim;
    wait_until("waypoint programmed", 10, || {
        get(sim, "gateway.networking.k8s.io", "gateways", "shop", "waypoint")
            .is_some_and(|g| cond(&g, "Programmed").is_some_and(|c| c["status"] == "True"))
    })
    .await;
    let gw = get(sim, "gateway.networking.k8s.io", "gateways", "shop", "waypoint").unwrap();
    assert_eq!(cond(&gw, "Accepted").unwrap()["status"], "True");
    assert_eq!(
        cond(&gw, "Programmed").unwrap()["observedGeneration"],
        gw["metadata"]["generation"]
    );
    let svc = get(sim, "", "services", "shop", "waypoint").unwrap();
    assert_eq!(gw["status"]["addresses"][0]["type"], "IPAddress");
    assert_eq!(gw["status"]["addresses"][0]["value"], svc["spec"]["clusterIP"]);
    assert_eq!(
        svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["port"] == 15008)
            .count(),
        1
    );
    let dep = get(sim, "apps", "deployments", "shop", "waypoint").unwrap();
    assert_eq!(
        dep["metadata"]["ownerReferences"][0]["uid"],
        gw["metadata"]["uid"]
    );
    assert!(dep["status"]["readyReplicas"].as_i64().unwrap() >= 1);
    let wp_pod = list(sim, "", "pods", "shop")
        .into_iter()
        .find(|p| p["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"] == "waypoint")
        .unwrap();
    assert_eq!(
        wp_pod["metadata"]["labels"]["gateway.istio.io/managed"],
        "istio.io-mesh-controller"
    );
    assert_eq!(wp_pod["spec"]["serviceAccountName"], "waypoint");
    assert!(get(sim, "", "serviceaccounts", "shop", "waypoint").is_some());
    wait_until("web bound", 5, || {
        get(sim, "", "services", "shop", "web").is_some_and(|s| {
            cond(&s, "istio.io/WaypointBound").is_some_and(|c| {
                c["status"] == "True"
                    && c["reason"] == "WaypointAccepted"
                    && c["message"] == "Successfully attached to waypoint shop/waypoint"
            })
        })
    })
    .await;
    wait_until("missing waypoint reported", 5, || {
        get(sim, "", "services", "shop", "other").is_some_and(|s| {
            cond(&s, "istio.io/WaypointBound")
                .is_some_and(|c| c["status"] == "False" && c["reason"] == "WaypointIsNotReady")
        })
    })
    .await;
    assert!(
        cond(
            &get(sim, "", "services", "shop", "optout").unwrap(),
            "istio.io/WaypointBound"
        )
        .is_none()
    );
    assert!(
        cond(
            &get(sim, "", "services", "shop", "waypoint").unwrap(),
            "istio.io/WaypointBound"
        )
        .is_none()
    );
    // The never-ready waypoint stays unprogrammed, and Services pointing at it are not bound.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let slow = get(sim, "gateway.networking.k8s.io", "gateways", "slow", "waypoint").unwrap();
    assert_eq!(cond(&slow, "Programmed").unwrap()["status"], "False");
    assert!(slow["status"].get("addresses").is_none());
    let s = get(sim, "", "services", "slow", "web").unwrap();
    assert_eq!(
        cond(&s, "istio.io/WaypointBound").unwrap()["reason"],
        "WaypointIsNotReady"
    );
    // Removing the label removes the condition.
    sim.store
        .update_with(
            resources::core("namespaces"),
            "",
            "shop",
            Target::Main,
            &WriteOpts::default(),
            |o| {
                let mut o = o.clone();
                o["metadata"]["labels"] = json!({});
                o["metadata"].as_object_mut().unwrap().remove("resourceVersion");
                Ok(o)
            },
        )
        .unwrap();
    wait_until("condition removed", 5, || {
        get(sim, "", "services", "shop", "web").is_some_and(|s| cond(&s, "istio.io/WaypointBound").is_none())
    })
    .await;
}

#[tokio::test]
async fn authorization_policy_status() {
    let yaml = format!(
        "{}{}---\n{}---\n{}",
        ns_yaml("shop", "istio.io/use-waypoint: waypoint"),
        gateway_yaml("shop", "waypoint"),
        service_yaml("shop", "web", ""),
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: l4, namespace: shop}
spec:
  action: ALLOW
  rules: [{from: [{source: {principals: ["cluster.local/ns/shop/sa/a"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: l7, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: ALLOW
  rules: [{to: [{operation: {methods: ["GET"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: custom, namespace: shop}
spec:
  action: CUSTOM
  provider: {name: ext}
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: wp, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: web}]
  action: ALLOW
  rules: [{to: [{operation: {methods: ["GET"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: nowhere, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: ghost}]
"#
    );
    let env = start(settings(), vec![], &yaml);
    let sim = &env.sim;
    let pol = |n: &str| get(sim, "security.istio.io", "authorizationpolicies", "shop", n).unwrap();
    wait_until("waypoint policy accepted", 10, || {
        cond(&pol("wp"), "WaypointAccepted").is_some_and(|c| c["status"] == "True")
    })
    .await;
    let c = pol("l4");
    let z = cond(&c, "ZtunnelAccepted").unwrap();
    assert_eq!(
        (z["status"].as_str(), z["reason"].as_str(), z["message"].as_str()),
        (Some("True"), Some("Accepted"), Some("attached to ztunnel"))
    );
    let c = pol("l7");
    let z = cond(&c, "ZtunnelAccepted").unwrap();
    assert_eq!(z["reason"], "UnsupportedValue");
    assert!(z["message"].as_str().unwrap().contains("(found: methods)"));
    let c = pol("custom");
    let z = cond(&c, "ZtunnelAccepted").unwrap();
    assert_eq!(z["status"], "False");
    assert_eq!(z["message"], "ztunnel does not support the CUSTOM action");
    let c = pol("wp");
    assert!(cond(&c, "ZtunnelAccepted").is_none());
    assert_eq!(
        cond(&c, "WaypointAccepted").unwrap()["message"],
        "bound to shop/waypoint"
    );
    assert_eq!(
        cond(&pol("nowhere"), "WaypointAccepted").unwrap()["reason"],
        "TargetNotFound"
    );
}

#[tokio::test]
async fn jobs_run_commands_and_honour_backoff() {
    let job = |ns: &str, name: &str, cmd: &str, backoff: u32| {
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  backoffLimit: {backoff}\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: probe\n        image: busybox\n        command: [sh, -c, \"{cmd}\"]\n---\n"
        )
    };
    let yaml = [
        ns_yaml("probe", ""),
        ns_yaml("meshed", "istio-injection: enabled"),
        job("probe", "ok", "echo hello; exit 0", 0),
        job("probe", "bad", "echo nope; exit 1", 1),
        job("meshed", "side", "echo via sidecar", 0),
    ]
    .concat();
    let env = start(settings(), vec![], &yaml);
    let sim = &env.sim;
    let complete = |ns: &str, n: &str, t: &str| {
        get(sim, "batch", "jobs", ns, n).is_some_and(|j| cond(&j, t).is_some_and(|c| c["status"] == "True"))
    };
    wait_until("ok complete", 10, || complete("probe", "ok", "Complete")).await;
    wait_until("side complete", 10, || complete("meshed", "side", "Complete")).await;
    wait_until("bad failed", 10, || complete("probe", "bad", "Failed")).await;
    let ok = get(sim, "batch", "jobs", "probe", "ok").unwrap();
    assert_eq!(ok["status"]["succeeded"], 1);
    assert!(ok["status"]["completionTime"].is_string());
    assert!(cond(&ok, "SuccessCriteriaMet").is_some());
    let pods = list(sim, "", "pods", "probe");
    let okpod = pods
        .iter()
        .find(|p| p["metadata"]["labels"]["job-name"] == "ok")
        .unwrap();
    assert_eq!(okpod["status"]["phase"], "Succeeded");
    assert_eq!(okpod["metadata"]["labels"]["batch.kubernetes.io/job-name"], "ok");
    assert_eq!(
        sim.logs
            .get("probe", okpod["metadata"]["name"].as_str().unwrap())
            .as_deref(),
        Some("hello\n")
    );
    let bad = get(sim, "batch", "jobs", "probe", "bad").unwrap();
    assert_eq!(bad["status"]["failed"], 2, "backoffLimit 1 allows one retry");
    assert_eq!(cond(&bad, "Failed").unwrap()["reason"], "BackoffLimitExceeded");
    let side = list(sim, "", "pods", "meshed")
        .into_iter()
        .find(|p| p["metadata"]["labels"]["job-name"] == "side")
        .unwrap();
    assert_eq!(proxy_kind(&side), "classic");
    assert_eq!(side["status"]["phase"], "Succeeded");
}

#[tokio::test]
async fn system_daemonsets_and_statefulsets() {
    let yaml = format!(
        "{}{}",
        ns_yaml("db", ""),
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: pg, namespace: db}\nspec:\n  replicas: 3\n  serviceName: pg\n  selector: {matchLabels: {app: pg}}\n  template:\n    metadata: {labels: {app: pg}}\n    spec:\n      containers: [{name: pg, image: postgres}]\n"
    );
    let mut down = FaultSpec::new(FaultKind::ZtunnelDown, None);
    down.node = Some("node-2".into());
    let env = start(settings(), vec![down], &yaml);
    let sim = &env.sim;
    wait_until("istio-cni ready", 10, || {
        get(sim, "apps", "daemonsets", "istio-system", "istio-cni-node")
            .is_some_and(|d| d["status"]["numberReady"] == 2)
    })
    .await;
    wait_until("ztunnel scheduled", 10, || {
        get(sim, "apps", "daemonsets", "istio-system", "ztunnel")
            .is_some_and(|d| d["status"]["currentNumberScheduled"] == 2 && d["status"]["numberReady"] == 1)
    })
    .await;
    let zt = list(sim, "", "pods", "istio-system")
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "ztunnel")
        .collect::<Vec<_>>();
    assert_eq!(zt.len(), 2);
    for p in &zt {
        assert_eq!(
            ready(p),
            p["spec"]["nodeName"] == "node-1",
            "ztunnel on node-2 is down"
        );
    }
    wait_until("statefulset ready", 10, || {
        get(sim, "apps", "statefulsets", "db", "pg").is_some_and(|s| s["status"]["readyReplicas"] == 3)
    })
    .await;
    assert!(get(sim, "", "pods", "db", "pg-2").is_some());
    let s = get(sim, "apps", "statefulsets", "db", "pg").unwrap();
    let rev0 = s["status"]["updateRevision"].clone();
    sim.store
        .update_with(
            resources::id("apps", "statefulsets"),
            "db",
            "pg",
            Target::Main,
            &WriteOpts::default(),
            |o| {
                let mut o = o.clone();
                o["metadata"].as_object_mut().unwrap().remove("resourceVersion");
                o["spec"]["template"]["metadata"]["annotations"] =
                    json!({"kubectl.kubernetes.io/restartedAt": "x"});
                Ok(o)
            },
        )
        .unwrap();
    wait_until("statefulset rolled", 10, || {
        get(sim, "apps", "statefulsets", "db", "pg").is_some_and(|s| {
            s["status"]["updateRevision"] != rev0
                && s["status"]["currentRevision"] == s["status"]["updateRevision"]
                && s["status"]["updatedReplicas"] == 3
                && s["status"]["readyReplicas"] == 3
        })
    })
    .await;
    assert!(
        get(sim, "", "nodes", "", "node-2").unwrap()["status"]["nodeInfo"]["kubeletVersion"] == "v1.33.2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_of_250_deployments_becomes_ready() {
    let yaml = fixtures::generate_fleet(50, 5, 2);
    let t0 = Instant::now();
    let env = start(settings(), vec![], &yaml);
    let sim = &env.sim;
    wait_until("fleet ready", 60, || {
        let (ds, _) = sim.store.list(resources::id("apps", "deployments"), None);
        ds.iter()
            .filter(|d| {
                d["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("fleet-")
            })
            .count()
            == 250
            && ds.iter().all(|d| rollout_status(d) == Ok(true))
    })
    .await;
    let took = t0.elapsed();
    eprintln!("fleet of 250 deployments / 500 pods ready in {took:?}");
    assert!(took < Duration::from_secs(30), "too slow: {took:?}");
}

#[tokio::test]
async fn recreate_and_paused_deployments() {
    let yaml = format!(
        "{}{}---\n{}",
        ns_yaml("app", ""),
        deployment_yaml("app", "rec", 2, "  strategy: {type: Recreate}\n"),
        deployment_yaml("app", "held", 1, "")
    );
    let env = start(settings(), vec![], &yaml);
    let sim = &env.sim;
    for n in ["rec", "held"] {
        wait_until("initial rollout", 10, || {
            get(sim, "apps", "deployments", "app", n).is_some_and(|d| rollout_status(&d) == Ok(true))
        })
        .await;
    }
    // Recreate: never old and new pods at once.
    restart(sim, "app", "rec", "2026-01-01T00:00:00Z");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pods = list(sim, "", "pods", "app");
        let hashes: std::collections::BTreeSet<String> = pods
            .iter()
            .filter(|p| p["metadata"]["labels"]["app"] == "rec")
            .map(|p| {
                p["metadata"]["labels"]["pod-template-hash"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert!(
            hashes.len() <= 1,
            "Recreate mixed pods of two templates: {hashes:?}"
        );
        let d = get(sim, "apps", "deployments", "app", "rec").unwrap();
        if d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
            && rollout_status(&d) == Ok(true)
        {
            break;
        }
        assert!(Instant::now() < deadline, "recreate did not finish");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Paused: a template change makes no new ReplicaSet until resumed.
    let set_paused = |v: bool| {
        sim.store
            .update_with(
                resources::id("apps", "deployments"),
                "app",
                "held",
                Target::Main,
                &WriteOpts::default(),
                |o| {
                    let mut o = o.clone();
                    o["metadata"].as_object_mut().unwrap().remove("resourceVersion");
                    o["spec"]["paused"] = json!(v);
                    Ok(o)
                },
            )
            .unwrap();
    };
    set_paused(true);
    restart(sim, "app", "held", "2026-01-01T00:00:00Z");
    wait_until("paused condition", 5, || {
        get(sim, "apps", "deployments", "app", "held")
            .is_some_and(|d| cond(&d, "Progressing").is_some_and(|c| c["reason"] == "DeploymentPaused"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let held_rs = |sim: &Sim| {
        list(sim, "apps", "replicasets", "app")
            .into_iter()
            .filter(|r| r["metadata"]["name"].as_str().unwrap().starts_with("held-"))
            .count()
    };
    assert_eq!(held_rs(sim), 1);
    set_paused(false);
    wait_until("resumed rollout", 10, || {
        get(sim, "apps", "deployments", "app", "held").is_some_and(|d| {
            d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
                && rollout_status(&d) == Ok(true)
        })
    })
    .await;
    assert_eq!(held_rs(sim), 2);
}

#[tokio::test]
async fn curl_job_calls_a_service_through_the_traffic_model() {
    let yaml = format!(
        "{}{}---\n{}",
        ns_yaml("shop", ""),
        deployment_yaml("shop", "web", 1, ""),
        service_yaml("shop", "web", ""),
    );
    let job = String::from(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: probe, namespace: shop}\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: curl\n        image: curlimages/curl\n        command: [curl, -s, -o, /dev/null, -w, '%{http_code}', 'http://web.shop.svc.cluster.local/']\n",
    );
    let env = start(settings(), vec![], &yaml);
    let sim = &env.sim;
    wait_until("web ready", 10, || {
        active_pods(sim, "shop", "web").iter().any(ready)
    })
    .await;
    // The probe starts once the backend serves (a probe started earlier would fail, as on a cluster).
    sim.store
        .load(fixtures::parse_text(&job, "job").unwrap())
        .unwrap();
    wait_until("probe finished", 10, || {
        get(sim, "batch", "jobs", "shop", "probe").is_some_and(|j| {
            ["Complete", "Failed"]
                .iter()
                .any(|t| cond(&j, t).is_some_and(|c| c["status"] == "True"))
        })
    })
    .await;
    let pod = list(sim, "", "pods", "shop")
        .into_iter()
        .find(|p| p["metadata"]["labels"]["job-name"] == "probe")
        .unwrap();
    let log = sim
        .logs
        .get("shop", pod["metadata"]["name"].as_str().unwrap())
        .unwrap_or_default();
    let job = get(sim, "batch", "jobs", "shop", "probe").unwrap();
    let again = meshsim::traffic::curl::run(
        sim,
        meshsim::traffic::Source::Pod {
            namespace: "shop".into(),
            name: pod["metadata"]["name"].as_str().unwrap().into(),
        },
        &[
            "curl".into(),
            "-sS".into(),
            "-i".into(),
            "http://web.shop.svc.cluster.local/".into(),
        ],
    );
    assert_eq!(log, "200", "curl output; again: {again:?}");
    assert!(cond(&job, "Complete").is_some(), "job status: {}", job["status"]);
    assert_eq!(pod["status"]["phase"], "Succeeded");
}
