//! The API server's size limits and optimistic concurrency: ConfigMap/Secret data over 1 MiB is 422 with the
//! apiserver's wording, request bodies over 3 MiB are 413, a stale resourceVersion is 409.

use test_support::sim as common;

use common::start_sim;
use serde_json::{Value, json};

const NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: state\n";

async fn send(ts: &common::TestSim, method: &str, path: &str, ct: &str, body: &Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .request(
            method.parse().expect("method"),
            format!("{}{path}", ts.running.url()),
        )
        .header("Content-Type", ct)
        .body(serde_json::to_vec(body).expect("json"))
        .send()
        .await
        .expect("request");
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

fn cm(name: &str, bytes: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
        "data": {"a": "x".repeat(bytes / 2), "b": "y".repeat(bytes - bytes / 2)}})
}

const CMS: &str = "/api/v1/namespaces/state/configmaps";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_and_secret_data_is_limited_to_one_mebibyte() {
    let ts = start_sim(NS).await;
    let mib = meshsim::store::MAX_DATA_BYTES;
    assert_eq!(mib, 1_048_576);
    let (code, body) = send(&ts, "POST", CMS, "application/json", &cm("full", mib)).await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = send(&ts, "POST", CMS, "application/json", &cm("over", mib + 1)).await;
    assert_eq!(code, 422);
    assert_eq!(body["reason"], "Invalid");
    assert_eq!(
        body["message"],
        "ConfigMap \"over\" is invalid: []: Too long: must have at most 1048576 bytes"
    );
    // Growing an existing ConfigMap past the limit by a patch is refused the same way, and changes nothing.
    let patch = json!({"data": {"c": "z"}});
    let (code, body) = send(
        &ts,
        "PATCH",
        &format!("{CMS}/full"),
        "application/merge-patch+json",
        &patch,
    )
    .await;
    assert_eq!(code, 422, "{body}");
    let stored = ts
        .sim()
        .store
        .get(meshsim::resources::core("configmaps"), "state", "full")
        .expect("full");
    assert!(stored["data"].get("c").is_none());
    // Secrets count decoded bytes, on field `data`.
    let b64 = "QUFB".repeat(mib / 3 + 1);
    let secret =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "big"}, "data": {"k": b64}});
    let (code, body) = send(
        &ts,
        "POST",
        "/api/v1/namespaces/state/secrets",
        "application/json",
        &secret,
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(
        body["message"],
        "Secret \"big\" is invalid: data: Too long: must have at most 1048576 bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_three_mebibytes_are_413_and_stale_updates_409() {
    let ts = start_sim(NS).await;
    let (code, body) = send(&ts, "POST", CMS, "application/json", &cm("huge", 3 * 1024 * 1024)).await;
    assert_eq!(code, 413, "{body}");
    assert_eq!(body["reason"], "RequestEntityTooLarge");
    assert_eq!(body["message"], "Request entity too large: limit is 3145728");
    assert!(
        ts.sim()
            .store
            .get(meshsim::resources::core("configmaps"), "state", "huge")
            .is_none()
    );

    let (code, created) = send(&ts, "POST", CMS, "application/json", &cm("j", 10)).await;
    assert_eq!(code, 201);
    let mut first = created.clone();
    first["data"]["a"] = json!("first");
    let (code, _) = send(&ts, "PUT", &format!("{CMS}/j"), "application/json", &first).await;
    assert_eq!(code, 200);
    // The same (now stale) resourceVersion again: 409 Conflict.
    let mut second = created;
    second["data"]["a"] = json!("second");
    let (code, body) = send(&ts, "PUT", &format!("{CMS}/j"), "application/json", &second).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["reason"], "Conflict");
    let stored = ts
        .sim()
        .store
        .get(meshsim::resources::core("configmaps"), "state", "j")
        .expect("j");
    assert_eq!(stored["data"]["a"], "first");
}

const CM_V1: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: mesh\n  namespace: state\ndata:\n  mode: sidecar\n";
const CM_V2: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: mesh\n  namespace: state\ndata:\n  mode: ambient\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_conflicts_are_409_unless_forced() {
    let ts = start_sim(NS).await;
    let ok = |r: &(i32, String, String)| assert_eq!(r.0, 0, "kubectl failed: {r:?}");
    ok(&ts
        .kubectl_stdin(
            &["apply", "--server-side", "--field-manager=ci", "-f", "-"],
            CM_V1,
        )
        .await);
    // Someone else changes the field with a plain patch (operation Update): they own it now.
    ok(&ts
        .kubectl(&[
            "patch",
            "configmap",
            "mesh",
            "-n",
            "state",
            "--type=merge",
            "-p",
            r#"{"data":{"mode":"hand-edited"}}"#,
        ])
        .await);
    // Re-applying a different value is a conflict, named as kube-apiserver names it.
    let r = ts
        .kubectl_stdin(
            &["apply", "--server-side", "--field-manager=ci", "-f", "-"],
            CM_V2,
        )
        .await;
    assert_ne!(r.0, 0, "{r:?}");
    assert!(
        r.2.contains("Apply failed with 1 conflict: conflict with \"kubectl-patch\" using v1 at ")
            && r.2.contains(": .data.mode"),
        "{}",
        r.2
    );
    let cm = |ts: &common::TestSim| {
        ts.sim()
            .store
            .get(meshsim::resources::core("configmaps"), "state", "mesh")
            .expect("mesh")
    };
    assert_eq!(cm(&ts)["data"]["mode"], "hand-edited");
    // The same over raw HTTP: 409 Conflict.
    let (code, body) = send(
        &ts,
        "PATCH",
        "/api/v1/namespaces/state/configmaps/mesh?fieldManager=ci",
        "application/apply-patch+yaml",
        &serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mesh"}, "data": {"mode": "ambient"}}),
    )
    .await;
    assert_eq!((code, body["reason"].as_str()), (409, Some("Conflict")), "{body}");
    // --force-conflicts takes the field over; the hand edit's manager no longer owns it.
    ok(&ts
        .kubectl_stdin(
            &[
                "apply",
                "--server-side",
                "--field-manager=ci",
                "--force-conflicts",
                "-f",
                "-",
            ],
            CM_V2,
        )
        .await);
    let now = cm(&ts);
    assert_eq!(now["data"]["mode"], "ambient");
    let owners: Vec<&str> = now["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .filter(|e| e["fieldsV1"]["f:data"]["f:mode"].is_object())
        .filter_map(|e| e["manager"].as_str())
        .collect();
    assert_eq!(owners, vec!["ci"]);
    // Applying the value the field already has is no conflict (shared ownership).
    ok(&ts
        .kubectl_stdin(
            &["apply", "--server-side", "--field-manager=other", "-f", "-"],
            CM_V2,
        )
        .await);
}
