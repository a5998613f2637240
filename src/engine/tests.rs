//! Executor tests against a small in-memory API (meshsim, in process): what the engine sends, in which
//! order, decided by its own code rather than by an end-to-end run of the binary.

use std::sync::Arc;
use std::time::Duration;

use meshsim::accounting::RequestRecord;
use tokio::sync::watch;

use super::*;
use crate::cluster::{ClusterOptions, ConnectOptions};
use crate::lease::{self, LeaseConfig};

const STATE_NS: &str = "ambient-migrate";

struct Sim {
    running: meshsim::Running,
    _dir: tempfile::TempDir,
    cluster: Cluster,
}

/// meshsim with one sidecar namespace `shop` (one Deployment of 2 replicas behind a Service), ready.
async fn sim() -> Sim {
    let mut settings = meshsim::Settings::default();
    settings.latency.controller_tick_ms = 10;
    settings.latency.pod_start_ms = 20;
    settings.latency.pod_ready_ms = 20;
    settings.latency.pod_terminate_ms = 10;
    settings.latency.cni_enroll_ms = 10;
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    let running = meshsim::start(meshsim::StartOptions {
        fixture_texts: vec![crate::demo::plain_namespace("shop", &["app"], "")],
        settings,
        kubeconfig_out: Some(kubeconfig.clone()),
        ..Default::default()
    })
    .await
    .expect("meshsim starts");
    let conn = ConnectOptions {
        kubeconfig: Some(kubeconfig),
        context: None,
    };
    let cluster = Cluster::connect(&conn, ClusterOptions::default())
        .await
        .expect("client");
    let pods = meshsim::resources::core("pods");
    let mut changes = running.sim.store.changes();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let (list, _) = running.sim.store.list(pods, Some("shop"));
            let ready = |p: &serde_json::Value| {
                p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            };
            // The mesh's DaemonSets report their pods ready too: preflight blocks on a ztunnel or
            // istio-cni DaemonSet that is not (yet) ready.
            let (daemonsets, _) = running
                .sim
                .store
                .list(meshsim::resources::id("apps", "daemonsets"), None);
            let ds_ready = |d: &serde_json::Value| {
                let want = d["status"]["desiredNumberScheduled"].as_i64().unwrap_or(0);
                want > 0 && d["status"]["numberReady"].as_i64() == Some(want)
            };
            if list.len() == 2
                && list.iter().all(ready)
                && !daemonsets.is_empty()
                && daemonsets.iter().all(ds_ready)
            {
                return;
            }
            let _ = changes.changed().await;
        }
    })
    .await
    .expect("shop and the mesh DaemonSets ready");
    Sim {
        running,
        _dir: dir,
        cluster,
    }
}

fn engine(cluster: &Cluster, stop: watch::Receiver<bool>) -> Engine {
    Engine {
        cluster: cluster.clone(),
        state_namespace: STATE_NS.into(),
        run_id: "unit-test".into(),
        backup_dir: None,
        lease: None,
        stop,
        progress: Arc::new(|_| {}),
        cluster_info: Default::default(),
        waits: None,
        cache: None,
    }
}

fn opts() -> NamespaceOptions {
    let mut o = NamespaceOptions::default();
    o.timeouts.rollout = Duration::from_secs(20);
    o.timeouts.rollback = Duration::from_secs(30);
    o
}

/// The writes that reached the store, as `verb resource name` (journal, backup and Events left out:
/// they are the engine's bookkeeping, not its actions on the namespace).
fn actions(log: &[RequestRecord]) -> Vec<String> {
    log.iter()
        .filter(|r| r.is_mutating() && r.agent() == "ambient-migrate")
        .filter(|r| !matches!(r.resource.as_str(), "configmaps" | "events" | "leases"))
        .map(|r| format!("{} {} {}", r.verb, r.resource, r.name.clone().unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_undoes_the_steps_in_reverse_with_the_injection_label_before_the_restart() {
    let s = sim().await;
    let (_tx, stop) = watch::channel(false);
    let eng = engine(&s.cluster, stop);
    let run = eng.run_namespace("shop", &opts()).await;
    assert_eq!(run.outcome, NsOutcome::Migrated, "{:?}", run.reason);
    s.running.sim.accounting.reset();

    let rb = eng.rollback_namespace("shop", &opts(), None).await;
    assert_eq!(rb.outcome, NsOutcome::RolledBack, "{:?}", rb.reason);
    let sent = actions(&s.running.sim.accounting.log());
    let pos = |what: &str| {
        sent.iter()
            .position(|a| a.starts_with(what))
            .unwrap_or_else(|| panic!("no `{what}` in {sent:#?}"))
    };
    // The injection label comes back before the workloads restart (new pods get their sidecar again),
    // and the ambient label goes last, once every pod has its sidecar back.
    let labels: Vec<usize> = sent
        .iter()
        .enumerate()
        .filter(|(_, a)| a.starts_with("patch namespaces shop"))
        .map(|(i, _)| i)
        .collect();
    let restart = pos("patch deployments app");
    assert!(labels.len() >= 2, "{sent:#?}");
    assert!(
        labels[0] < restart,
        "injection label before the restart: {sent:#?}"
    );
    assert!(
        *labels.last().unwrap() > restart,
        "ambient label after the restart: {sent:#?}"
    );
    let ns = s
        .running
        .sim
        .store
        .get(meshsim::resources::core("namespaces"), "", "shop")
        .expect("shop");
    assert_eq!(ns["metadata"]["labels"]["istio-injection"], "enabled");
    assert!(
        ns["metadata"]["labels"].get("istio.io/dataplane-mode").is_none(),
        "{ns}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_stops_the_namespace_fenced_with_nothing_sent_to_it() {
    let s = sim().await;
    let (_tx, stop) = watch::channel(false);
    let mut eng = engine(&s.cluster, stop);
    let guard = Arc::new(
        lease::acquire(&s.cluster, LeaseConfig::new(STATE_NS))
            .await
            .expect("lease"),
    );
    eng.hold(guard.clone());
    // Someone else takes the Lease over.
    let api = s
        .cluster
        .namespaced::<k8s_openapi::api::coordination::v1::Lease>(STATE_NS);
    let mut stolen = api.get(lease::LEASE_NAME).await.expect("lease object");
    stolen.spec.as_mut().expect("spec").holder_identity = Some("intruder".into());
    api.replace(lease::LEASE_NAME, &Default::default(), &stolen)
        .await
        .expect("steal");
    // Once the last proof of ownership is stale, the next check reads the Lease and remembers the loss.
    tokio::time::sleep(lease::OWNERSHIP_FRESH + Duration::from_millis(50)).await;
    assert!(guard.check_held().await.is_err(), "the loss is noticed");
    assert!(guard.check().is_err(), "and remembered");
    s.running.sim.accounting.reset();

    let run = eng.run_namespace("shop", &opts()).await;
    assert_eq!(run.outcome, NsOutcome::Aborted, "{:?}", run.reason);
    let writes: Vec<String> = s
        .running
        .sim
        .accounting
        .log()
        .iter()
        .filter(|r| r.is_mutating() && r.agent() == "ambient-migrate")
        .map(|r| format!("{} {}", r.verb, r.path))
        .collect();
    assert!(writes.is_empty(), "writes after the Lease was lost: {writes:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_namespace_labels_map_is_shared_until_a_label_changes() {
    let s = sim().await;
    let cache = crate::cluster::FleetCache::start(&s.cluster);
    cache
        .ready(tokio::time::Instant::now() + Duration::from_secs(10))
        .await
        .expect("caches sync");
    let first = cache.namespace_labels();
    assert!(
        Arc::ptr_eq(&first, &cache.namespace_labels()),
        "no change: the same map"
    );

    let mut woken = cache.changes_in("shop");
    let target = crate::cluster::LabelTarget::Namespace { name: "shop".into() };
    s.cluster
        .set_label(&target, "team", Some("payments"))
        .await
        .expect("label the namespace");
    tokio::time::timeout(Duration::from_secs(10), async {
        while !cache.namespace_labels()["shop"].contains_key("team") {
            woken.changed().await.expect("cache running");
        }
    })
    .await
    .expect("the label reaches the cache");
    let after = cache.namespace_labels();
    assert!(!Arc::ptr_eq(&first, &after), "a label changed: a new map");
    assert_eq!(after["shop"]["team"], "payments");
    assert!(
        Arc::ptr_eq(&after, &cache.namespace_labels()),
        "then shared again"
    );
}
