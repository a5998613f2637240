//! Cluster access against meshsim: kubeconfig loading, idempotent label patches, dry run, restarts with
//! rollout waits, pod waits, timeouts, snapshots, dynamic kinds and Events.

use test_support::cluster as common;

use std::time::Duration;

use ambient_migrate::cluster::{
    Check, Cluster, ClusterError, ClusterOptions, ConnectOptions, DynKind, EVENTS_NAMESPACE, EventType,
    LabelTarget, RESTARTED_AT_ANNOTATION, WorkloadKind, restarted_at_now,
};
use common::{SEED, deadline, start};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod};

fn ns_target() -> LabelTarget {
    LabelTarget::Namespace { name: "shop".into() }
}

#[tokio::test]
async fn kubeconfig_errors_name_the_file_and_context() {
    let missing = ConnectOptions {
        kubeconfig: Some("/nonexistent/kubeconfig".into()),
        context: None,
    };
    let err = Cluster::connect(&missing, ClusterOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::Kubeconfig { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/kubeconfig"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kc");
    std::fs::write(&path, meshsim::kubeconfig_yaml("http://127.0.0.1:1")).unwrap();
    let bad_ctx = ConnectOptions {
        kubeconfig: Some(path),
        context: Some("nope".into()),
    };
    let err = Cluster::connect(&bad_ctx, ClusterOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::Context { .. }), "{err}");
    assert!(
        err.to_string().contains("nope") && err.to_string().contains("--context"),
        "{err}"
    );
}

#[tokio::test]
async fn a_label_change_against_a_read_is_one_patch_that_only_a_label_change_can_refuse() {
    let env = start(&[SEED]).await;
    let c = &env.cluster;
    let mode = |v: &str| [("istio.io/dataplane-mode".to_string(), Some(v.to_string()))];

    // Another write to the Namespace (its annotations) between the read and the patch: the patch still
    // lands, in one request, and answers with the labels after it.
    let seen = c.read_labels(&ns_target()).await.unwrap();
    assert_eq!(seen.labels["istio-injection"], "enabled");
    c.annotate_namespace("shop", "note", "someone else")
        .await
        .unwrap();
    env.reset_requests().await;
    let set = c
        .set_labels_seen(&ns_target(), &seen, &mode("ambient"))
        .await
        .unwrap();
    assert_eq!(set.labels["istio.io/dataplane-mode"], "ambient");
    assert_eq!(set.labels["istio-injection"], "enabled");
    assert_eq!(
        (set.outcomes[0].before.as_deref(), set.outcomes[0].changed),
        (None, true)
    );
    let log = env.requests().await;
    assert_eq!(
        log.iter()
            .map(|r| r["verb"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["patch"],
        "{log:?}"
    );
    let ns: Namespace = c.all().get("shop").await.unwrap();
    assert_eq!(ns.metadata.annotations.unwrap()["note"], "someone else");

    // A label changed by someone between the read and the patch: the stale read is not acted on; the
    // change is decided again on a fresh read, whose value is the one returned as `before`.
    let stale = c.read_labels(&ns_target()).await.unwrap();
    c.set_label(&ns_target(), "istio.io/dataplane-mode", Some("none"))
        .await
        .unwrap();
    let set = c
        .set_labels_seen(&ns_target(), &stale, &mode("other"))
        .await
        .unwrap();
    assert_eq!(set.outcomes[0].before.as_deref(), Some("none"));
    assert_eq!(set.labels["istio.io/dataplane-mode"], "other");
    assert_eq!(
        c.labels_of(&ns_target()).await.unwrap()["istio.io/dataplane-mode"],
        "other"
    );

    // Nothing to change: nothing sent.
    let seen = c.read_labels(&ns_target()).await.unwrap();
    env.reset_requests().await;
    let set = c
        .set_labels_seen(&ns_target(), &seen, &mode("other"))
        .await
        .unwrap();
    assert!(!set.outcomes[0].changed);
    assert!(env.requests().await.is_empty());
}

#[tokio::test]
async fn label_changes_are_idempotent_and_return_the_previous_value() {
    let env = start(&[SEED]).await;
    let c = &env.cluster;
    let out = c
        .set_label(&ns_target(), "istio.io/dataplane-mode", Some("ambient"))
        .await
        .unwrap();
    assert_eq!(
        (out.before.as_deref(), out.after.as_deref(), out.changed),
        (None, Some("ambient"), true)
    );
    assert_eq!(
        c.labels_of(&ns_target()).await.unwrap()["istio.io/dataplane-mode"],
        "ambient"
    );

    // Same value again: nothing is written.
    env.reset_requests().await;
    let again = c
        .set_label(&ns_target(), "istio.io/dataplane-mode", Some("ambient"))
        .await
        .unwrap();
    assert!(!again.changed);
    assert_eq!(again.before.as_deref(), Some("ambient"));
    let log = env.requests().await;
    assert!(
        log.iter().all(|r| r["verb"] == "get"),
        "an unchanged label must not write: {log:?}"
    );
    env.reset_requests().await;

    // Removal returns the previous value, and a second removal is a no-op.
    let rm = c.set_label(&ns_target(), "istio-injection", None).await.unwrap();
    assert_eq!((rm.before.as_deref(), rm.changed), (Some("enabled"), true));
    assert!(
        !c.labels_of(&ns_target())
            .await
            .unwrap()
            .contains_key("istio-injection")
    );
    let rm2 = c.set_label(&ns_target(), "istio-injection", None).await.unwrap();
    assert!(!rm2.changed);

    // Services too, several keys at once.
    let svc = LabelTarget::Service {
        namespace: "shop".into(),
        name: "api".into(),
    };
    let outs = c
        .set_labels(
            &svc,
            &[
                ("istio.io/use-waypoint".into(), Some("waypoint".into())),
                ("app".into(), Some("api".into())),
            ],
        )
        .await
        .unwrap();
    assert!(outs[0].changed && !outs[1].changed);
    assert_eq!(
        c.labels_of(&svc).await.unwrap()["istio.io/use-waypoint"],
        "waypoint"
    );

    // The patches were JSON merge patches with our field manager.
    let log = env.requests().await;
    let patches: Vec<_> = log.iter().filter(|r| r["verb"] == "patch").collect();
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert!(patches.iter().all(|r| {
        r["user_agent"]
            .as_str()
            .unwrap_or("")
            .starts_with("ambient-migrate/")
    }));
}

#[tokio::test]
async fn dry_run_leaves_the_store_unchanged() {
    let env = start(&[SEED]).await;
    let dry = env.dry_run_cluster().await;
    let c = &env.cluster;
    // Controllers keep writing pod status, so compare the touched objects' resourceVersions and the
    // request log rather than the store-wide resourceVersion.
    let ns_rv = || async {
        c.all::<Namespace>()
            .get("shop")
            .await
            .unwrap()
            .metadata
            .resource_version
    };
    let dep_rv = || async {
        c.namespaced::<Deployment>("shop")
            .get("api")
            .await
            .unwrap()
            .metadata
            .generation
    };
    let (ns_before, gen_before) = (ns_rv().await, dep_rv().await);
    env.reset_requests().await;
    let out = dry
        .set_label(&ns_target(), "istio.io/dataplane-mode", Some("ambient"))
        .await
        .unwrap();
    assert!(out.changed);
    let r = dry
        .restart(WorkloadKind::Deployment, "shop", "api", &restarted_at_now())
        .await
        .unwrap();
    assert!(r.patched);
    assert!(
        dry.delete_dyn(DynKind::AuthorizationPolicy, "shop", "api-allow-web-get")
            .await
            .unwrap()
    );
    let log = env.requests().await;
    assert_eq!(
        (ns_rv().await, dep_rv().await),
        (ns_before, gen_before),
        "dry run must not persist anything"
    );
    assert!(
        !env.cluster
            .labels_of(&ns_target())
            .await
            .unwrap()
            .contains_key("istio.io/dataplane-mode")
    );
    assert!(
        env.cluster
            .get_dyn(DynKind::AuthorizationPolicy, "shop", "api-allow-web-get")
            .await
            .unwrap()
            .is_some()
    );
    let writes: Vec<_> = log
        .iter()
        .filter(|r| ["create", "update", "patch", "delete"].contains(&r["verb"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(writes.len(), 3, "{log:?}");
    assert!(
        writes.iter().all(|r| r["dry_run"] == true),
        "every write must be a dry run: {writes:?}"
    );
}

#[tokio::test]
async fn restart_then_wait_rollout_completes_and_is_idempotent() {
    let env = start(&[SEED]).await;
    let c = &env.cluster;
    // Let the fixture roll out first.
    c.wait_rollout(WorkloadKind::Deployment, "shop", "api", 1, deadline(20))
        .await
        .unwrap();
    let at = restarted_at_now();
    let r = c
        .restart(WorkloadKind::Deployment, "shop", "api", &at)
        .await
        .unwrap();
    assert!(r.patched);
    assert!(r.generation >= 2, "{r:?}");
    let d: Deployment = c.namespaced::<Deployment>("shop").get("api").await.unwrap();
    assert_eq!(
        d.spec.template.metadata.unwrap().annotations.unwrap()[RESTARTED_AT_ANNOTATION],
        at
    );

    let done = c
        .wait_rollout(
            WorkloadKind::Deployment,
            "shop",
            "api",
            r.generation,
            deadline(30),
        )
        .await
        .unwrap();
    assert!(done.observed_generation >= r.generation);
    assert!(
        done.message.contains("successfully rolled out"),
        "{}",
        done.message
    );

    // Resume: the same restartedAt is not patched again, generation unchanged.
    let again = c
        .restart(WorkloadKind::Deployment, "shop", "api", &at)
        .await
        .unwrap();
    assert_eq!((again.patched, again.generation), (false, r.generation));

    // Every api pod now carries the new template annotation and is Ready.
    let pods = c
        .wait_pods("shop", "app=api", deadline(30), |p: &Pod| {
            let ann = p.metadata.annotations.clone().unwrap_or_default();
            if ann.get(RESTARTED_AT_ANNOTATION) != Some(&at) {
                return Err("old pod".into());
            }
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if ready { Ok(()) } else { Err("not ready".into()) }
        })
        .await
        .unwrap();
    assert_eq!(pods.pods.len(), 2);
}

#[tokio::test]
async fn waits_time_out_with_the_last_observed_state() {
    let env = start(&[SEED]).await;
    let api = env.cluster.namespaced::<Deployment>("shop");
    let err = env
        .cluster
        .wait_until(api, "test wait", "api", deadline(1), |d: Option<&Deployment>| {
            Check::Pending(format!("replicas {:?}", d.and_then(|d| d.spec.replicas)))
        })
        .await
        .unwrap_err();
    match err {
        ClusterError::Timeout { last, .. } => assert!(last.contains("replicas Some(2)"), "{last}"),
        other => panic!("expected timeout, got {other}"),
    }
    let err = env
        .cluster
        .wait_rollout(WorkloadKind::Deployment, "shop", "absent", 1, deadline(5))
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::WaitFailed { .. }), "{err}");
}

#[tokio::test]
async fn snapshot_reads_the_namespace_and_cluster_facts() {
    let env = start(&[SEED]).await;
    // The waypoint controller makes the waypoint's Service shortly after the start.
    let services = meshsim::resources::core("services");
    test_support::sim::wait_for("the waypoint's Service", Duration::from_secs(5), || async {
        env.sim().store.get(services, "shop", "waypoint").is_some()
    })
    .await;
    let info = env.cluster.read_cluster_info("istio-system").await.unwrap();
    assert!(info.ztunnel.is_some(), "ztunnel DaemonSet");
    assert_eq!(info.trust_domain, "cluster.local");
    assert!(
        info.revisions.contains(&"default".to_string()),
        "{:?}",
        info.revisions
    );
    assert_eq!(info.namespace_labels["shop"]["istio-injection"], "enabled");
    let snap = env.cluster.read_snapshot("shop", &info).await.unwrap();
    assert_eq!(snap.ns(), "shop");
    let names: Vec<_> = snap
        .deployments
        .iter()
        .filter_map(|d| d.metadata.name.clone())
        .collect();
    for n in ["web", "api", "db"] {
        assert!(names.contains(&n.to_string()), "{names:?}");
    }
    // web, api, db and the waypoint's Service (made by the waypoint controller).
    assert_eq!(snap.services.len(), 4);
    assert_eq!(snap.authorization_policies.len(), 3);
    assert_eq!(snap.virtual_services.len(), 1);
    assert_eq!(snap.http_routes.len(), 1);
    assert_eq!(snap.gateways.len(), 1);
    assert_eq!(
        snap.authorization_policies[0].raw()["kind"],
        "AuthorizationPolicy"
    );
    assert_eq!(
        snap.authorization_policies[0].raw()["apiVersion"],
        "security.istio.io/v1"
    );
}

/// Istio objects are converted where the snapshot is read: one that does not convert is kept (for the
/// backup) with the field named, and a field this tool does not know is listed.
#[tokio::test]
async fn snapshot_converts_istio_objects_where_it_is_read() {
    const ODD: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: odd, namespace: shop}
spec: {hosts: api}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api-extra, namespace: shop}
spec: {host: api, trafficPolicyz: {loadBalancer: {simple: RANDOM}}}
";
    let env = start(&[SEED, ODD]).await;
    let info = env.cluster.read_cluster_info("istio-system").await.unwrap();
    let snap = env.cluster.read_snapshot("shop", &info).await.unwrap();
    let odd = snap
        .virtual_services
        .iter()
        .find(|v| v.name() == "odd")
        .expect("kept");
    let e = odd.error().expect("hosts is not a list");
    assert_eq!(e.field, "spec.hosts");
    assert!(e.message.contains("VirtualService shop/odd"), "{}", e.message);
    assert_eq!(odd.raw()["spec"]["hosts"], "api");
    let dr = snap
        .destination_rules
        .iter()
        .find(|d| d.name() == "api-extra")
        .expect("read");
    assert_eq!(dr.unknown_fields(), ["spec.trafficPolicyz"]);
    assert_eq!(dr.spec().unwrap().host, "api");
    // Every seed policy converted, with its kind and namespace from the API.
    assert!(
        snap.authorization_policies
            .iter()
            .all(|p| p.spec().is_some() && p.namespace() == "shop")
    );
}

#[tokio::test]
async fn events_are_recorded_for_the_namespace() {
    let env = start(&[SEED]).await;
    let ns: Namespace = env.cluster.all::<Namespace>().get("shop").await.unwrap();
    assert!(
        env.cluster
            .emit_event(&ns, "StepStarted", "step 1 activate waypoint", EventType::Normal)
            .await
    );
    let evs = env
        .cluster
        .namespaced::<Event>(EVENTS_NAMESPACE)
        .list(&Default::default())
        .await
        .unwrap();
    let ours: Vec<_> = evs
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("StepStarted"))
        .collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].involved_object.name.as_deref(), Some("shop"));
    assert_eq!(ours[0].involved_object.kind.as_deref(), Some("Namespace"));
    assert_eq!(ours[0].reporting_component.as_deref(), Some("ambient-migrate"));
}

fn fault(v: serde_json::Value) -> meshsim::FaultSpec {
    serde_json::from_value(v).expect("fault spec")
}

#[tokio::test]
async fn transient_errors_are_retried_and_client_errors_are_not() {
    let env = start(&[SEED]).await;
    // Two 503s on reading the namespace: retried with backoff, then it works.
    env.sim().faults.add(fault(serde_json::json!({
        "kind": "api-error", "verb": "get", "resource": "namespaces", "name": "shop", "code": 503, "count": 2
    })));
    env.reset_requests().await;
    let out = env
        .cluster
        .set_label(&ns_target(), "istio.io/dataplane-mode", Some("ambient"))
        .await
        .unwrap();
    assert!(out.changed);
    let gets = env
        .requests()
        .await
        .into_iter()
        .filter(|r| r["verb"] == "get" && r["resource"] == "namespaces")
        .count();
    assert_eq!(gets, 3, "two failed attempts and one success");

    // A 403 fails at once, naming the object and the fix.
    env.sim().faults.add(fault(serde_json::json!({
        "kind": "api-error", "verb": "patch", "resource": "namespaces", "name": "shop", "code": 403, "count": 1
    })));
    env.reset_requests().await;
    let err = env
        .cluster
        .set_label(&ns_target(), "istio.io/dataplane-mode", None)
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::Api { code: 403, .. }), "{err}");
    assert!(
        err.to_string().contains("Namespace shop") && err.to_string().contains("RBAC"),
        "{err}"
    );
    let patches = env
        .requests()
        .await
        .into_iter()
        .filter(|r| r["verb"] == "patch")
        .count();
    assert_eq!(patches, 1, "a 403 is not retried");

    // Persistent 503: bounded retries, then the error surfaces.
    env.sim().faults.add(fault(serde_json::json!({
        "kind": "api-error", "verb": "get", "resource": "services", "code": 503
    })));
    let started = std::time::Instant::now();
    let svc = LabelTarget::Service {
        namespace: "shop".into(),
        name: "api".into(),
    };
    let err = env.cluster.labels_of(&svc).await.unwrap_err();
    assert!(matches!(err, ClusterError::Api { code: 503, .. }), "{err}");
    assert!(err.is_transient());
    assert!(started.elapsed() < Duration::from_secs(5), "retries are bounded");
}

/// A fenced handle sends nothing once the Lease proof has ended, and cuts an attempt off at that instant
/// instead of retrying for minutes (here: a 3 s API latency against a fence 300 ms away).
#[tokio::test]
async fn a_fenced_cluster_sends_nothing_after_the_lease_proof_ends() {
    let env = start(&[SEED]).await;
    let sent = || {
        env.running
            .sim
            .accounting
            .count(|r| r.resource == "namespaces" && r.verb == "patch")
    };
    use ambient_migrate::cluster::{Fence, Proof};
    let lost: Fence = std::sync::Arc::new(|| Some(Proof::Lost));
    let t0 = std::time::Instant::now();
    let err = env
        .cluster
        .fenced(lost)
        .set_label(&ns_target(), "team", Some("a"))
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::Fenced { .. }), "{err}");
    assert_eq!(sent(), 0, "nothing may be sent once the Lease is lost");
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "a lost Lease is not waited for"
    );

    // An expired proof that the renewer refreshes 300 ms later: the request waits, then goes out.
    let refreshed_at = tokio::time::Instant::now() + Duration::from_millis(300);
    let expired_then_renewed: Fence = std::sync::Arc::new(move || {
        let now = tokio::time::Instant::now();
        Some(if now < refreshed_at {
            Proof::Until(now - Duration::from_millis(1))
        } else {
            Proof::Until(now + Duration::from_secs(10))
        })
    });
    env.cluster
        .fenced(expired_then_renewed)
        .set_label(&ns_target(), "team", Some("a"))
        .await
        .expect("sent once the proof was refreshed");
    assert_eq!(sent(), 1);

    // Slow answers: the attempt is cut at the fence, with no retry.
    let mut slow = meshsim::FaultSpec::new(meshsim::FaultKind::ApiLatency, None);
    slow.resource = Some("namespaces".into());
    slow.latency_ms = Some(3_000);
    env.running.sim.faults.add(slow);
    let until = tokio::time::Instant::now() + Duration::from_millis(300);
    let soon: Fence = std::sync::Arc::new(move || Some(Proof::Until(until)));
    let t0 = std::time::Instant::now();
    let err = env
        .cluster
        .fenced(soon)
        .set_label(&ns_target(), "team", Some("b"))
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::Fenced { .. }), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());

    // Unfenced, the same handle works.
    env.running.sim.faults.clear();
    env.cluster
        .set_label(&ns_target(), "team", Some("c"))
        .await
        .unwrap();
}

/// Label patches carry the resourceVersion they were decided on: a write to the Namespace in between
/// makes the API server answer 409, and the patch is decided again on a fresh read instead of landing
/// blindly; the other writer's change survives.
#[tokio::test]
async fn a_label_patch_racing_another_write_is_decided_again() {
    let env = start(&[SEED]).await;
    let mut slow = meshsim::FaultSpec::new(meshsim::FaultKind::ApiLatency, None);
    slow.resource = Some("namespaces".into());
    slow.verb = Some("patch".into());
    slow.latency_ms = Some(400);
    slow.count = Some(1);
    let id = env.running.sim.faults.add(slow);
    let store = env.running.sim.store.clone();
    let other = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        store
            .update_with(
                meshsim::resources::core("namespaces"),
                "",
                "shop",
                meshsim::store::Target::Main,
                &meshsim::store::WriteOpts::default(),
                |o| {
                    let mut o = o.clone();
                    o["metadata"]["labels"]["team"] = "payments".into();
                    o["metadata"].as_object_mut().unwrap().remove("resourceVersion");
                    Ok(o)
                },
            )
            .unwrap();
    });
    let out = env
        .cluster
        .set_label(&ns_target(), "istio.io/dataplane-mode", Some("ambient"))
        .await
        .unwrap();
    other.await.unwrap();
    env.running.sim.faults.remove(&id);
    assert!(out.changed);
    let labels = env.cluster.labels_of(&ns_target()).await.unwrap();
    assert_eq!(
        labels.get("istio.io/dataplane-mode").map(String::as_str),
        Some("ambient")
    );
    assert_eq!(labels.get("team").map(String::as_str), Some("payments"));
    let patches: Vec<u16> = env
        .running
        .sim
        .accounting
        .log()
        .iter()
        .filter(|r| r.resource == "namespaces" && r.verb == "patch")
        .map(|r| r.code)
        .collect();
    assert_eq!(
        patches,
        vec![409, 200],
        "the stale patch was refused, then decided again"
    );
}
