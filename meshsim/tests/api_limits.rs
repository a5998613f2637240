//! The API server's size limits and optimistic concurrency: ConfigMap/Secret data over 1 MiB is 422 with the
//! apiserver's wording, request bodies over 3 MiB are 413, a stale resourceVersion is 409.

mod common;

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
