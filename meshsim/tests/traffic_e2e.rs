//! The traffic model over pods made by the real controllers (injection, kubelet, istio-cni, waypoint):
//! proves the pod conventions the model reads are the ones the controllers write.

use std::time::{Duration, Instant};

use meshsim::traffic::{self, Outcome, Request, Response, Source};
use meshsim::{StartOptions, start};

const FIXTURE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: side, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: amb, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: side}
spec:
  replicas: 1
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api, version: v1}}
    spec: {containers: [{name: app, image: echo, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: side}
spec: {selector: {app: api}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: db, namespace: amb}
spec:
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: app, image: echo, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: amb}
spec: {selector: {app: db}, ports: [{name: http, port: 80, targetPort: 8080}]}
"#;

fn get(sim: &meshsim::Sim, url: &str) -> Response {
    traffic::handle(
        sim,
        &Request {
            source: Source::External,
            method: "GET".into(),
            url: url.into(),
            headers: Vec::new(),
        },
    )
}

/// Sends until `ok` holds (re-trying on each store change), or 20 s have passed.
async fn until(sim: &meshsim::Sim, url: &str, ok: impl Fn(&Response) -> bool) -> Response {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = get(sim, url);
        if ok(&r) || Instant::now() > deadline {
            return r;
        }
        let mut ch = sim.store.changes();
        let _ = tokio::time::timeout(Duration::from_millis(200), ch.changed()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_made_pods_are_classified_as_sidecar_and_ambient() {
    let running = start(StartOptions {
        fixture_texts: vec![FIXTURE.into()],
        ..Default::default()
    })
    .await
    .expect("start");
    let sim = running.sim.clone();
    let r = until(&sim, "http://api.side.svc.cluster.local/", |r| {
        r.outcome == Outcome::Http(200)
    })
    .await;
    assert_eq!(r.outcome, Outcome::Http(200), "{r:?}");
    assert_eq!(
        r.enforcement,
        vec!["sidecar"],
        "injected pod is a sidecar workload"
    );
    assert!(r.header("x-request-id").is_some());
    // A pod created in an ambient namespace is enrolled before it runs (istio-cni's CNI ADD): the first
    // answer already went through ztunnel.
    let r = until(&sim, "http://db.amb.svc.cluster.local/", |r| {
        r.outcome == Outcome::Http(200)
    })
    .await;
    assert_eq!(r.outcome, Outcome::Http(200), "{r:?}");
    assert_eq!(
        r.enforcement,
        vec!["ztunnel"],
        "enrolled pod is an ambient workload"
    );
    assert!(r.header("x-request-id").is_none(), "ztunnel adds no header");
}
