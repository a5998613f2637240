//! Probe measurements against meshsim: http probes through meshsim's probe proxy (caller identity via
//! `x-meshsim-source`), job probes as curl Jobs run by meshsim's Job controller and traffic model.

use test_support::cluster as common;

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

/// A one-route HTTP/1.1 server on loopback: answers every request with `reply(path)` and records the
/// request heads it received. Returns its `host:port` and the record.
async fn raw_server(
    reply: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let reply = std::sync::Arc::new(reply);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let record = record.clone();
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                record.lock().unwrap().push(head);
                let _ = sock.write_all(&reply(&path)).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (addr, seen)
}

fn redirect_to(location: &str) -> Vec<u8> {
    format!("HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .into_bytes()
}

fn ok_body(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A redirect to another origin is not followed: the secret header never reaches the other host and the
/// probe observes the 302 itself. A redirect within the origin is followed.
#[tokio::test]
async fn http_probe_follows_redirects_only_within_its_origin() {
    let (other, other_seen) = raw_server(|_| ok_body("other")).await;
    let target = format!("http://{other}/steal");
    let (addr, seen) = raw_server(move |path| match path {
        "/away" => redirect_to(&target),
        "/here" => redirect_to("/final"),
        _ => ok_body("final"),
    })
    .await;
    let away: ambient_migrate::probes::spec::HttpProbe = serde_json::from_value(json!({
        "url": format!("http://{addr}/away"), "headers": {"x-api-key": "s3cret"}
    }))
    .unwrap();
    match http::observe(&away, Duration::from_secs(5)).await.unwrap() {
        Observed::Response { status, .. } => assert_eq!(status, 302),
        other => panic!("expected the 302 itself, got {other:?}"),
    }
    assert!(
        other_seen.lock().unwrap().is_empty(),
        "the other origin was contacted"
    );

    let here: ambient_migrate::probes::spec::HttpProbe = serde_json::from_value(json!({
        "url": format!("http://{addr}/here"), "headers": {"x-api-key": "s3cret"}
    }))
    .unwrap();
    match http::observe(&here, Duration::from_secs(5)).await.unwrap() {
        Observed::Response { status, body, .. } => assert_eq!((status, body.as_str()), (200, "final")),
        other => panic!("expected the redirect to be followed, got {other:?}"),
    }
    assert!(seen.lock().unwrap().iter().any(|h| h.starts_with("GET /final")));
}

/// A huge body is read only up to the cap.
#[tokio::test]
async fn http_probe_reads_at_most_the_body_cap() {
    let big = "x".repeat(4 * 1024 * 1024);
    let (addr, _) = raw_server(move |_| ok_body(&big)).await;
    let p: ambient_migrate::probes::spec::HttpProbe =
        serde_json::from_value(json!({"url": format!("http://{addr}/")})).unwrap();
    match http::observe(&p, Duration::from_secs(10)).await.unwrap() {
        Observed::Response { status, body, .. } => {
            assert_eq!(status, 200);
            assert_eq!(body.len(), http::MAX_BODY);
        }
        other => panic!("expected a response, got {other:?}"),
    }
}

/// A job probe's secret header reaches the destination, but its value is in no Job object: it is mounted
/// from a Secret the Job owns (curl `-H @file`), and that Secret goes away with the Job.
#[tokio::test]
async fn job_probe_secret_headers_live_in_a_secret_owned_by_the_job() {
    let env = start(&[SEED]).await;
    settle(&env).await;
    // Record every Job the store sees while the probe runs (the Job is deleted afterwards).
    let jobs_res = meshsim::resources::id("batch", "jobs");
    let rv = env.running.sim.store.resource_version();
    let p = spec(json!({
        "name": "web-get-api-secret", "kind": "job", "source_namespace": "shop", "service_account": "web",
        "url": "http://api.shop.svc.cluster.local/get", "timeout": "20s",
        "headers": {"x-api-key": "s3cret-value", "x-trace": "plain"},
        "expect": {"status": 200, "body_contains": "s3cret-value"}
    }));
    assert_eq!(run_once(&env.cluster, &p).await, Measurement::Success);
    let (events, _rx) = env.running.sim.store.watch_from(rv).expect("history");
    let jobs: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e.res == jobs_res)
        .map(|e| &e.object)
        .collect();
    assert!(!jobs.is_empty(), "the probe created a Job");
    for j in &jobs {
        let text = j.to_string();
        assert!(
            !text.contains("s3cret-value"),
            "a secret value is in the Job: {text}"
        );
        assert!(
            text.contains("x-trace: plain"),
            "plain headers stay curl arguments: {text}"
        );
    }
    // The Secret was owned by the Job and went with it.
    let secrets = meshsim::resources::core("secrets");
    let owned: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e.res == secrets)
        .map(|e| &e.object)
        .collect();
    assert!(
        owned
            .iter()
            .all(|s| s["metadata"]["ownerReferences"][0]["kind"] == "Job"),
        "{owned:?}"
    );
    assert!(!owned.is_empty(), "the headers were in a Secret");
    let left = env.running.sim.store.list(secrets, Some("shop")).0;
    let left: Vec<_> = left
        .iter()
        .filter(|s| s["metadata"]["labels"][job::PROBE_LABEL].is_string())
        .collect();
    assert!(left.is_empty(), "the Secret outlived its Job: {left:?}");
}
