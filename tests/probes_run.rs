//! Probe measurements against meshsim: http probes through meshsim's probe proxy (caller identity via
//! `x-meshsim-source`), job probes as curl Jobs run by meshsim's Job controller and traffic model.

mod common;

use std::time::Duration;

use ambient_migrate::probes::policy::{Measurement, Observed};
use ambient_migrate::probes::runner::run_once;
use ambient_migrate::probes::spec::ProbeSpec;
use ambient_migrate::probes::{http, job};
use common::{SEED, deadline, start};
use k8s_openapi::api::batch::v1::Job;
use serde_json::json;

fn spec(v: serde_json::Value) -> ProbeSpec {
    serde_json::from_value(v).expect("probe spec")
}

async fn settle(env: &common::Env) {
    // Sidecars ready everywhere before measuring.
    for d in ["web", "api", "db"] {
        env.cluster
            .wait_rollout(
                ambient_migrate::cluster::WorkloadKind::Deployment,
                "shop",
                d,
                1,
                deadline(30),
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn http_probe_through_the_meshsim_proxy() {
    let env = start(&[SEED]).await;
    settle(&env).await;
    let proxy = env.running.proxy_url().unwrap();
    let ok = spec(json!({
        "name": "web-get-api", "kind": "http", "url": "http://api.shop.svc.cluster.local/get",
        "proxy": proxy, "source": "shop/web",
        "headers": {"authorization": "Bearer s3cret"},
        "expect": {"status": 200, "header_present": ["x-request-id"], "body_contains": "Method=GET"}
    }));
    assert_eq!(run_once(&env.cluster, &ok).await, Measurement::Success);

    // db may not call api with DELETE: the api sidecar's L7 policy answers 403.
    let denied = spec(json!({
        "name": "db-delete-api", "kind": "http", "url": "http://api.shop.svc.cluster.local/x", "method": "DELETE",
        "proxy": proxy, "source": "shop/db", "expect": {"status": 200}
    }));
    match run_once(&env.cluster, &denied).await {
        Measurement::Failure(why) => assert!(why.contains("403"), "{why}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    let expect_403 = spec(json!({
        "name": "db-delete-api-403", "kind": "http", "url": "http://api.shop.svc.cluster.local/x", "method": "DELETE",
        "proxy": proxy, "source": "shop/db", "expect": {"status": 403}
    }));
    assert_eq!(run_once(&env.cluster, &expect_403).await, Measurement::Success);

    // The probe cannot run when its proxy is unreachable: an Error, not a Failure.
    let no_proxy = spec(json!({
        "name": "bad-proxy", "kind": "http", "url": "http://api.shop.svc.cluster.local/get",
        "proxy": "http://127.0.0.1:1", "source": "shop/web"
    }));
    assert!(matches!(
        run_once(&env.cluster, &no_proxy).await,
        Measurement::Error(_)
    ));

    // Without a proxy, a closed port is "no response" (a Failure unless status 0 is expected).
    let p: ambient_migrate::probes::spec::HttpProbe =
        serde_json::from_value(json!({"url": "http://127.0.0.1:1/"})).unwrap();
    let obs = http::observe(&p, Duration::from_secs(2)).await.unwrap();
    assert!(matches!(obs, Observed::NoResponse { .. }), "{obs:?}");
}

#[tokio::test]
async fn job_probe_runs_curl_with_the_workload_identity() {
    let env = start(&[SEED]).await;
    settle(&env).await;
    let allowed = spec(json!({
        "name": "web-get-api-job", "kind": "job", "source_namespace": "shop", "service_account": "web",
        "url": "http://api.shop.svc.cluster.local/get", "timeout": "20s", "expect": {"status": 200}
    }));
    assert_eq!(run_once(&env.cluster, &allowed).await, Measurement::Success);

    let denied = spec(json!({
        "name": "web-delete-api-job", "kind": "job", "source_namespace": "shop", "service_account": "web",
        "url": "http://api.shop.svc.cluster.local/x", "method": "DELETE", "timeout": "20s",
        "expect": {"status": 403, "body_contains": "RBAC"}
    }));
    assert_eq!(run_once(&env.cluster, &denied).await, Measurement::Success);

    // Jobs are deleted after the measurement.
    let jobs = env
        .cluster
        .namespaced::<Job>("shop")
        .list(&Default::default())
        .await
        .unwrap();
    let left: Vec<_> = jobs
        .items
        .iter()
        .filter(|j| {
            j.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(job::PROBE_LABEL))
        })
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // A Job that cannot run in time is an Error (namespace does not exist: create refused).
    let broken = spec(json!({
        "name": "nowhere", "kind": "job", "source_namespace": "does-not-exist",
        "url": "http://api.shop.svc.cluster.local/get", "timeout": "5s"
    }));
    assert!(matches!(
        run_once(&env.cluster, &broken).await,
        Measurement::Error(_)
    ));
}
