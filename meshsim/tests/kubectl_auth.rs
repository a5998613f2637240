//! Identities and RBAC with real kubectl: `kubectl create token`, requests as a ServiceAccount (allowed and
//! Forbidden, with the apiserver's message), impersonation with `--as`, `kubectl auth can-i` (one check
//! and `--list`) and `kubectl auth whoami`.

use test_support::sim as common;

use common::start_sim;
use serde_json::Value;

const FIXTURE: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: ci
---
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: runner
  namespace: ci
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: other
  namespace: ci
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: shop
spec:
  containers:
  - name: app
    image: echo
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: shop-reader
  namespace: shop
rules:
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  resourceNames: ["shop"]
  verbs: ["get", "patch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: runner-shop-reader
  namespace: shop
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: shop-reader
subjects:
- kind: ServiceAccount
  name: runner
  namespace: ci
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: namespace-lister
rules:
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: runner-namespace-lister
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: namespace-lister
subjects:
- kind: ServiceAccount
  name: runner
  namespace: ci
"#;

const RUNNER: &str = "system:serviceaccount:ci:runner";

fn ok(r: &(i32, String, String)) {
    assert_eq!(r.0, 0, "kubectl failed: stdout {}\nstderr {}", r.1, r.2);
}

/// A raw API request with a bearer token (kubectl sends no credentials over plain HTTP; kube-rs and this
/// helper do): `(status, body)`.
async fn call(
    ts: &common::TestSim,
    method: &str,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(
            method.parse().expect("method"),
            format!("{}{path}", ts.running.url()),
        )
        .bearer_auth(token);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_token_then_act_as_the_service_account() {
    let ts = start_sim(FIXTURE).await;
    let r = ts.kubectl(&["create", "token", "runner", "-n", "ci"]).await;
    ok(&r);
    let token = r.1.trim().to_string();
    assert!(
        !token.is_empty() && !token.contains(char::is_whitespace),
        "{token:?}"
    );

    // Allowed by the RoleBinding in shop (pods) and the ClusterRoleBinding (list namespaces).
    let (code, body) = call(&ts, "GET", "/api/v1/namespaces/shop/pods", &token, &[]).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["items"][0]["metadata"]["name"], "web-1");
    assert_eq!(call(&ts, "GET", "/api/v1/namespaces", &token, &[]).await.0, 200);
    // Nothing in default: the Forbidden Status as kube-apiserver words it.
    let (code, body) = call(&ts, "GET", "/api/v1/namespaces/default/pods", &token, &[]).await;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        format!(
            "pods is forbidden: User \"{RUNNER}\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        )
    );
    assert_eq!(body["reason"], "Forbidden");
    // Watches and subresources are authorised too.
    let (code, body) = call(&ts, "GET", "/apis/apps/v1/deployments?watch=true", &token, &[]).await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = call(&ts, "GET", "/api/v1/namespaces/shop/pods/web-1/log", &token, &[]).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("cannot get resource \"pods/log\""),
        "{body}"
    );
    // The token works through kube-rs as well (as the product uses it).
    let kc = ts
        .running
        .kubeconfig_yaml()
        .replace("token: meshsim", &format!("token: {token}"));
    let kc = kube::config::Kubeconfig::from_yaml(&kc).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(cfg).expect("client");
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client.clone(), "shop");
    assert_eq!(pods.list(&Default::default()).await.expect("list").items.len(), 1);
    let other: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client, "ci");
    match other.list(&Default::default()).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{e:?}"),
        x => panic!("expected 403, got {x:?}"),
    }
    // A ServiceAccount may not impersonate another one without the `impersonate` verb.
    let (code, body) = call(
        &ts,
        "GET",
        "/api/v1/namespaces/shop/pods",
        &token,
        &[("Impersonate-User", "system:serviceaccount:ci:other")],
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        format!(
            "serviceaccounts \"other\" is forbidden: User \"{RUNNER}\" cannot impersonate resource \"serviceaccounts\" in API group \"\" in the namespace \"ci\""
        )
    );
    // An unknown token is 401; a token outlives nothing: deleting the ServiceAccount revokes it.
    assert_eq!(
        call(&ts, "GET", "/api/v1/namespaces/shop/pods", "not-a-token", &[])
            .await
            .0,
        401
    );
    ok(&ts
        .kubectl(&["delete", "serviceaccount", "runner", "-n", "ci"])
        .await);
    assert_eq!(
        call(&ts, "GET", "/api/v1/namespaces/shop/pods", &token, &[])
            .await
            .0,
        401
    );

    // The request log says who asked.
    let log = ts.sim().accounting.log();
    assert!(
        log.iter()
            .any(|r| r.user == RUNNER && r.code == 403 && r.verb == "list")
    );
    assert!(
        log.iter()
            .any(|r| r.user == "kubernetes-admin" && r.resource == "serviceaccounts/token")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_as_a_service_account_is_forbidden_with_the_apiserver_message() {
    let ts = start_sim(FIXTURE).await;
    let as_runner = format!("--as={RUNNER}");
    let r = ts
        .kubectl(&[&as_runner, "get", "pods", "-n", "shop", "-o", "name"])
        .await;
    ok(&r);
    assert_eq!(r.1.trim(), "pod/web-1");
    let r = ts.kubectl(&[&as_runner, "get", "pods", "-n", "default"]).await;
    assert_eq!(r.0, 1, "{r:?}");
    assert!(
        r.2.contains(&format!(
            "Error from server (Forbidden): pods is forbidden: User \"{RUNNER}\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        )),
        "{}",
        r.2
    );
    // resourceNames: the label patch of shop is allowed, of ci is not (and changes nothing).
    ok(&ts
        .kubectl(&[&as_runner, "label", "namespace", "shop", "team=web"])
        .await);
    let r = ts
        .kubectl(&[&as_runner, "label", "namespace", "ci", "team=web"])
        .await;
    assert_ne!(r.0, 0);
    assert!(
        r.2.contains(&format!(
            "namespaces \"ci\" is forbidden: User \"{RUNNER}\" cannot get resource \"namespaces\" in API group \"\" in the namespace \"ci\""
        )),
        "{}",
        r.2
    );
    let labels = |ns: &str| {
        ts.sim()
            .store
            .get(meshsim::resources::core("namespaces"), "", ns)
            .map(|o| o["metadata"]["labels"].clone())
            .unwrap_or_default()
    };
    assert_eq!(labels("shop")["team"], "web");
    assert!(labels("ci").get("team").is_none());
    let r = ts
        .kubectl(&[
            &as_runner,
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .await;
    ok(&r);
    assert_eq!(r.1, RUNNER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_can_i_as_a_service_account() {
    let ts = start_sim(FIXTURE).await;
    let as_runner = format!("--as={RUNNER}");
    let r = ts
        .kubectl(&["auth", "can-i", "--list", &as_runner, "-n", "shop"])
        .await;
    ok(&r);
    let row = |name: &str| {
        r.1.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row in\n{}", r.1))
            .to_string()
    };
    assert!(row("pods").contains("[get list watch]"), "{}", r.1);
    let ns =
        r.1.lines()
            .filter(|l| l.starts_with("namespaces "))
            .collect::<Vec<_>>()
            .join("\n");
    assert!(ns.contains("[shop]") && ns.contains("[get patch]"), "{}", r.1);
    assert!(ns.contains("[list]"), "{}", r.1);
    assert!(row("selfsubjectaccessreviews.authorization.k8s.io").contains("[create]"));
    assert!(!r.1.contains("deployments"), "{}", r.1);

    for (args, want) in [
        (vec!["list", "pods", "-n", "shop"], "yes"),
        (vec!["get", "pods/web-1", "-n", "shop"], "yes"),
        (vec!["list", "namespaces"], "yes"),
        (vec!["patch", "namespaces"], "no"),
        (vec!["delete", "pods", "-n", "shop"], "no"),
        (vec!["get", "pods", "--subresource=log", "-n", "shop"], "no"),
        (vec!["create", "serviceaccounts/token", "-n", "ci"], "no"),
    ] {
        let mut a = vec!["auth", "can-i"];
        a.extend(args.iter().copied());
        a.push(&as_runner);
        let r = ts.kubectl(&a).await;
        assert_eq!(r.1.trim(), want, "{a:?}: {r:?}");
        assert_eq!(r.0, if want == "yes" { 0 } else { 1 }, "{a:?}: {r:?}");
    }
    // The administrator can do anything, impersonation included.
    let r = ts
        .kubectl(&["auth", "can-i", "impersonate", "serviceaccounts", "-n", "ci"])
        .await;
    assert_eq!(r.1.trim(), "yes", "{r:?}");
}
