//! kubectl 1.32 against meshsim: the commands the seed runbook uses, unmodified.

use test_support::sim as common;

use meshsim::resources;

use common::start_sim;

const FIXTURE: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    istio-injection: enabled
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: shop
  labels:
    app: web
spec:
  nodeName: node-1
  containers:
  - name: app
    image: echo
  initContainers:
  - name: istio-proxy
    image: proxyv2
    restartPolicy: Always
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: shop
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-web
  namespace: shop
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/shop/sa/web"]
"#;

fn ns_labels(ts: &common::TestSim, ns: &str) -> serde_json::Value {
    ts.sim()
        .store
        .get(resources::core("namespaces"), "", ns)
        .map(|o| o["metadata"]["labels"].clone())
        .unwrap_or_default()
}

fn ok(r: &(i32, String, String)) {
    assert_eq!(r.0, 0, "kubectl failed: stdout {}\nstderr {}", r.1, r.2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_get_and_label() {
    let ts = start_sim(FIXTURE).await;
    let r = ts.kubectl(&["api-resources"]).await;
    ok(&r);
    for want in ["gateways", "authorizationpolicies", "deployments", "namespaces"] {
        assert!(r.1.contains(want), "api-resources lacks {want}: {}", r.1);
    }
    let po = r.1.lines().find(|l| l.starts_with("pods ")).expect("pods row");
    assert!(
        po.contains(" po ") && po.contains("true") && po.contains("Pod"),
        "{po}"
    );

    let r = ts.kubectl(&["get", "ns"]).await;
    ok(&r);
    assert!(r.1.starts_with("NAME"), "{}", r.1);
    let shop = r.1.lines().find(|l| l.starts_with("shop ")).expect("shop row");
    assert!(shop.contains("Active"), "{shop}");

    let r = ts
        .kubectl(&["label", "namespace", "shop", "istio.io/use-waypoint=waypoint"])
        .await;
    ok(&r);
    assert_eq!(ns_labels(&ts, "shop")["istio.io/use-waypoint"], "waypoint");
    let r = ts.kubectl(&["label", "ns", "shop", "istio-injection-"]).await;
    ok(&r);
    assert!(ns_labels(&ts, "shop").get("istio-injection").is_none());

    // Server-side dry run changes nothing.
    let rv = ts.sim().store.resource_version();
    let r = ts
        .kubectl(&[
            "label",
            "ns",
            "shop",
            "istio.io/dataplane-mode=ambient",
            "--dry-run=server",
        ])
        .await;
    ok(&r);
    assert!(ns_labels(&ts, "shop").get("istio.io/dataplane-mode").is_none());
    let (backlog, _rx) = ts.sim().store.watch_from(rv).unwrap();
    let ns_id = resources::core("namespaces");
    assert!(
        !backlog.iter().any(|e| e.res == ns_id),
        "dry run wrote a namespace"
    );
    let kubectl_patches = ts
        .sim()
        .accounting
        .log()
        .into_iter()
        .filter(|r| r.verb == "patch" && r.user_agent.starts_with("kubectl"))
        .collect::<Vec<_>>();
    assert_eq!(kubectl_patches.len(), 3);
    assert!(kubectl_patches[2].dry_run && !kubectl_patches[2].is_mutating());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_columns_for_pods_and_gateways() {
    let ts = start_sim(FIXTURE).await;
    let r = ts.kubectl(&["get", "pods", "-n", "shop"]).await;
    ok(&r);
    let mut lines = r.1.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    let row: Vec<&str> = lines
        .find(|l| l.starts_with("web-1 "))
        .expect("web-1 row")
        .split_whitespace()
        .collect();
    // Expected total from the stored spec (an injector, when present, may add containers).
    let pod = ts
        .sim()
        .store
        .get(resources::core("pods"), "shop", "web-1")
        .unwrap();
    let spec = &pod["spec"];
    let native = spec["initContainers"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|c| c["restartPolicy"] == "Always").count());
    let total = spec["containers"].as_array().unwrap().len() + native;
    assert!(native >= 1 && total >= 2);
    assert!(
        row[1].ends_with(&format!("/{total}")),
        "READY counts native sidecars: {row:?}"
    );

    let r = ts.kubectl(&["get", "pods", "-n", "shop", "-o", "wide"]).await;
    ok(&r);
    assert!(r.1.lines().next().unwrap().contains("NODE"), "{}", r.1);
    assert!(r.1.contains("node-1"));

    let r = ts.kubectl(&["get", "gateway", "waypoint", "-n", "shop"]).await;
    ok(&r);
    let header: Vec<&str> = r.1.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "CLASS", "ADDRESS", "PROGRAMMED", "AGE"]);
    assert!(r.1.contains("istio-waypoint"));

    let r = ts.kubectl(&["get", "pods", "-A", "-o", "name"]).await;
    ok(&r);
    assert!(r.1.lines().any(|l| l == "pod/web-1"), "{}", r.1);

    let r = ts.kubectl(&["get", "gateway", "nope", "-n", "shop"]).await;
    assert_ne!(r.0, 0);
    assert!(r.2.contains("NotFound") || r.2.contains("not found"), "{}", r.2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_create_get_and_delete() {
    let ts = start_sim(FIXTURE).await;
    let manifest = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: extra
  labels:
    a: "1"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-all
  namespace: shop
spec:
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/admin"]
"#;
    let file = ts.dir.path().join("m.yaml");
    std::fs::write(&file, manifest).unwrap();
    let r = ts.kubectl(&["apply", "-f", file.to_str().unwrap()]).await;
    ok(&r);
    assert!(r.1.contains("created"), "{}", r.1);
    let ap = resources::id("security.istio.io", "authorizationpolicies");
    let obj = ts.sim().store.get(ap, "shop", "deny-all").expect("created");
    assert_eq!(obj["spec"]["action"], "DENY");
    assert!(obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].is_string());

    // Re-apply with changes: the patch path (strategic for Namespace, merge for the custom kind).
    std::fs::write(
        &file,
        manifest
            .replace("a: \"1\"", "a: \"2\"")
            .replace("/admin", "/private"),
    )
    .unwrap();
    let r = ts.kubectl(&["apply", "-f", file.to_str().unwrap()]).await;
    ok(&r);
    assert!(r.1.contains("configured"), "{}", r.1);
    assert_eq!(ns_labels(&ts, "extra")["a"], "2");
    let obj = ts.sim().store.get(ap, "shop", "deny-all").unwrap();
    assert_eq!(
        obj["spec"]["rules"][0]["to"][0]["operation"]["paths"][0],
        "/private"
    );
    // Unchanged re-apply.
    let r = ts.kubectl(&["apply", "-f", file.to_str().unwrap()]).await;
    ok(&r);
    assert!(r.1.contains("unchanged"), "{}", r.1);

    // create + get -o yaml.
    let r = ts
        .kubectl_stdin(
            &["create", "-f", "-"],
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: shop\ndata:\n  k: v\n",
        )
        .await;
    ok(&r);
    let r = ts
        .kubectl(&["get", "configmap", "cfg", "-n", "shop", "-o", "yaml"])
        .await;
    ok(&r);
    assert!(r.1.contains("kind: ConfigMap") && r.1.contains("k: v"), "{}", r.1);
    let r = ts
        .kubectl_stdin(
            &["create", "-f", "-"],
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: shop\n",
        )
        .await;
    assert_ne!(r.0, 0);
    assert!(
        r.2.contains("AlreadyExists") || r.2.contains("already exists"),
        "{}",
        r.2
    );

    // Typed-client generators send protobuf bodies.
    ok(&ts.kubectl(&["create", "namespace", "made-by-kubectl"]).await);
    assert!(
        ts.sim()
            .store
            .get(resources::core("namespaces"), "", "made-by-kubectl")
            .is_some()
    );
    ok(&ts
        .kubectl(&["create", "configmap", "lit", "-n", "shop", "--from-literal=a=b"])
        .await);
    let lit = ts
        .sim()
        .store
        .get(resources::core("configmaps"), "shop", "lit")
        .unwrap();
    assert_eq!(lit["data"]["a"], "b");
    ok(&ts
        .kubectl(&["create", "serviceaccount", "sa1", "-n", "shop"])
        .await);
    let r = ts
        .kubectl(&["create", "deployment", "d", "--image=x", "-n", "shop"])
        .await;
    assert_ne!(r.0, 0, "protobuf Deployments are not decoded: {}", r.1);

    // delete waits for the object to be gone (GET, list + watch).
    let r = ts
        .kubectl(&["delete", "authorizationpolicy", "allow-web", "-n", "shop"])
        .await;
    ok(&r);
    assert!(r.1.contains("deleted"), "{}", r.1);
    assert!(ts.sim().store.get(ap, "shop", "allow-web").is_none());

    // Server-side dry run of a delete keeps the object.
    let r = ts
        .kubectl(&[
            "delete",
            "authorizationpolicy",
            "deny-all",
            "-n",
            "shop",
            "--dry-run=server",
        ])
        .await;
    ok(&r);
    assert!(ts.sim().store.get(ap, "shop", "deny-all").is_some());
}
