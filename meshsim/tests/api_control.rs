//! meshsim's control endpoints (`/meshsim/*`), raw HTTP details kube-rs hides (discovery, OpenAPI, Tables,
//! keep-alive, 404/405/415 Status answers), and the `meshsim` binary.

use test_support::sim as common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::start_sim;

/// A minimal HTTP/1.1 exchange (`Connection: close`): (status, content-type, body).
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: api-control-test/1\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    if header("transfer-encoding").eq_ignore_ascii_case("chunked") {
        body = dechunk(&body);
    }
    (status, header("content-type"), body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
}

fn js(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(b)))
}

const NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n";

#[tokio::test]
async fn control_endpoints() {
    let ts = start_sim(NS).await;
    let a = ts.running.addr;
    let (code, _, body) = http(a, "GET", "/meshsim/healthz", &[], "").await;
    assert_eq!((code, body.as_slice()), (200, b"ok".as_slice()));

    // Requests: one API call is counted; control calls are not.
    http(a, "GET", "/api/v1/namespaces/shop", &[], "").await;
    let (code, ct, body) = http(a, "GET", "/meshsim/requests", &[], "").await;
    assert_eq!((code, ct.as_str()), (200, "application/json"));
    let v = js(&body);
    let gets: Vec<&Value> = v["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["verb"] == "get" && r["resource"] == "namespaces")
        .collect();
    assert_eq!(gets.len(), 1);
    assert_eq!(gets[0]["user_agent"], "api-control-test/1");
    assert_eq!(gets[0]["code"], 200);
    let (code, _, _) = http(a, "DELETE", "/meshsim/requests", &[], "").await;
    assert_eq!(code, 200);
    assert_eq!(ts.sim().accounting.total(), 0);

    // Faults: YAML single, JSON list, bad input, delete.
    let (code, _, body) = http(
        a,
        "POST",
        "/meshsim/faults",
        &[("Content-Type", "application/yaml")],
        "kind: api-error\nid: boom\nverb: get\nresource: namespaces\ncode: 503\n",
    )
    .await;
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    assert_eq!(js(&body)["ids"], json!(["boom"]));
    let (code, _, body) = http(a, "GET", "/api/v1/namespaces/shop", &[], "").await;
    assert_eq!(code, 503);
    let status = js(&body);
    assert_eq!(
        (status["kind"].as_str(), status["code"].as_i64()),
        (Some("Status"), Some(503))
    );
    let (code, _, body) = http(
        a,
        "POST",
        "/meshsim/faults",
        &[("Content-Type", "application/json")],
        r#"[{"kind": "api-latency", "latency_ms": 1}, {"kind": "cni-pending", "namespace": "shop"}]"#,
    )
    .await;
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    assert_eq!(js(&body)["ids"].as_array().unwrap().len(), 2);
    let (code, _, body) = http(a, "POST", "/meshsim/faults", &[], "kind: service-errors\n").await;
    assert_eq!(code, 400);
    assert!(
        String::from_utf8_lossy(&body).contains("service"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (code, _, _) = http(a, "POST", "/meshsim/faults", &[], "kind: nope\n").await;
    assert_eq!(code, 400);
    let (_, _, body) = http(a, "GET", "/meshsim/faults", &[], "").await;
    assert_eq!(js(&body)["faults"].as_array().unwrap().len(), 3);
    assert_eq!(http(a, "DELETE", "/meshsim/faults/boom", &[], "").await.0, 200);
    assert_eq!(http(a, "DELETE", "/meshsim/faults/boom", &[], "").await.0, 404);
    assert_eq!(http(a, "GET", "/api/v1/namespaces/shop", &[], "").await.0, 200);
    assert_eq!(http(a, "DELETE", "/meshsim/faults", &[], "").await.0, 200);
    assert!(ts.sim().faults.list().is_empty());

    // Traffic: a request to a Service that does not exist, from outside the mesh.
    let (code, _, body) = http(
        a,
        "POST",
        "/meshsim/traffic/request",
        &[("Content-Type", "application/json")],
        r#"{"source": null, "method": "GET", "url": "http://nope.shop.svc.cluster.local/", "headers": {"x-a": "1"}}"#,
    )
    .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let v = js(&body);
    assert!(v["outcome"].is_string());
    assert_ne!(v["outcome"], "http", "no such service: {v}");
    let (code, _, body) = http(a, "GET", "/meshsim/traffic", &[], "").await;
    assert_eq!(code, 200);
    assert!(js(&body).is_object());
    assert_eq!(http(a, "DELETE", "/meshsim/traffic", &[], "").await.0, 200);
    let (code, _, _) = http(a, "POST", "/meshsim/traffic/request", &[], r#"{"source": "bad"}"#).await;
    assert_eq!(code, 400);
    assert_eq!(http(a, "GET", "/meshsim/nope", &[], "").await.0, 404);
}

#[tokio::test]
async fn raw_api_answers() {
    let ts = start_sim(NS).await;
    let a = ts.running.addr;
    let (code, ct, body) = http(a, "GET", "/version", &[], "").await;
    assert_eq!((code, ct.as_str()), (200, "application/json"));
    assert_eq!(js(&body)["gitVersion"], "v1.33.0-meshsim");
    let aggregated = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let (code, ct, body) = http(a, "GET", "/apis", &[("Accept", aggregated)], "").await;
    assert_eq!((code, ct.as_str()), (200, "application/json"));
    assert_eq!(js(&body)["kind"], "APIGroupList");
    let (_, _, body) = http(a, "GET", "/apis/security.istio.io/v1", &[], "").await;
    let v = js(&body);
    assert_eq!(v["groupVersion"], "security.istio.io/v1");
    assert!(
        v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "authorizationpolicies")
    );
    let (code, ct, body) = http(a, "GET", "/openapi/v2?timeout=32s", &[], "").await;
    assert_eq!(code, 200);
    assert_eq!(ct, "application/com.github.proto-openapi.spec.v2.v1.0+protobuf");
    assert_eq!(&body[..5], b"\x0a\x032.0");
    let (code, _, body) = http(a, "GET", "/openapi/v3", &[], "").await;
    assert_eq!((code, js(&body)["paths"].is_object()), (200, true));

    // Table answer.
    let table_accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    let (_, _, body) = http(
        a,
        "GET",
        "/api/v1/namespaces?limit=500",
        &[("Accept", table_accept)],
        "",
    )
    .await;
    let t = js(&body);
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Name", "Status", "Age"]);
    let row = t["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cells"][0] == "shop")
        .unwrap();
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(row["object"]["metadata"]["name"], "shop");

    // Errors: unknown path, wrong method, bad patch type, strategic merge on a custom kind.
    let (code, _, body) = http(a, "GET", "/apis/nope.io/v1/things", &[], "").await;
    assert_eq!((code, js(&body)["reason"].as_str()), (404, Some("NotFound")));
    let (code, _, body) = http(a, "POST", "/api/v1/namespaces/shop", &[], "{}").await;
    assert_eq!(
        (code, js(&body)["reason"].as_str()),
        (405, Some("MethodNotAllowed"))
    );
    let (code, _, _) = http(
        a,
        "PATCH",
        "/api/v1/namespaces/shop",
        &[("Content-Type", "text/plain")],
        "{}",
    )
    .await;
    assert_eq!(code, 415);
    let (code, _, _) = http(
        a,
        "POST",
        "/apis/security.istio.io/v1/namespaces/shop/authorizationpolicies",
        &[("Content-Type", "application/json")],
        r#"{"apiVersion":"security.istio.io/v1","kind":"AuthorizationPolicy","metadata":{"name":"p","namespace":"other"}}"#,
    )
    .await;
    assert_eq!(code, 400, "namespace mismatch");
    let (code, _, _) = http(
        a,
        "POST",
        "/api/v1/namespaces/shop/configmaps",
        &[("Content-Type", "application/json")],
        r#"{"metadata":{"name":"c","resourceVersion":"5"}}"#,
    )
    .await;
    assert_ne!(code, 201, "resourceVersion on create is rejected");

    // Watch with timeoutSeconds: synthetic ADDED for current state, then the stream ends.
    let (code, ct, body) = http(a, "GET", "/api/v1/namespaces?watch=1&timeoutSeconds=1", &[], "").await;
    assert_eq!((code, ct.as_str()), (200, "application/json"));
    let text = String::from_utf8(body).unwrap();
    let events: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(events.iter().all(|e| e["type"] == "ADDED"));
    assert!(events.iter().any(|e| e["object"]["metadata"]["name"] == "shop"));
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let ts = start_sim(NS).await;
    let mut s = tokio::net::TcpStream::connect(ts.running.addr).await.unwrap();
    let mut buf = vec![0u8; 65536];
    for _ in 0..3 {
        s.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("v1.33.0-meshsim"));
    }
}

#[tokio::test]
async fn binary_serves_until_sigterm_and_generates_fleets() {
    let exe = env!("CARGO_BIN_EXE_meshsim");
    let out = std::process::Command::new(exe)
        .args([
            "generate",
            "--namespaces",
            "2",
            "--deployments",
            "2",
            "--replicas",
            "1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let yaml = String::from_utf8(out.stdout).unwrap();
    let objs = meshsim::fixtures::parse_text(&yaml, "generated").unwrap();
    assert_eq!(objs.len(), 2 * (1 + 2 * 3));

    let dir = tempfile::tempdir().unwrap();
    let fixture = dir.path().join("fleet.yaml");
    std::fs::write(&fixture, &yaml).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = std::process::Command::new(exe)
        .args(["serve", "--fixture"])
        .arg(&fixture)
        .arg("--kubeconfig-out")
        .arg(&kubeconfig)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let url = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line.trim().to_string()
    })
    .await
    .unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let kc = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(kc.contains(&url));
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let (code, _, body) = http(addr, "GET", "/api/v1/namespaces/fleet-001", &[], "").await;
    assert_eq!(code, 200);
    assert_eq!(js(&body)["metadata"]["labels"]["istio-injection"], "enabled");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn watch_bookmarks_and_gone_error_event() {
    let mut settings = common::fast_settings();
    settings.bookmark_interval_ms = 100;
    let ts = common::start_sim_with(meshsim::StartOptions {
        settings,
        fixture_texts: vec![NS.to_string()],
        ..Default::default()
    })
    .await;
    let a = ts.running.addr;
    let rv = ts.sim().store.resource_version().to_string();
    let path = format!(
        "/api/v1/namespaces/shop/configmaps?watch=true&allowWatchBookmarks=true&timeoutSeconds=1&resourceVersion={rv}"
    );
    let (code, _, body) = http(a, "GET", &path, &[], "").await;
    assert_eq!(code, 200);
    let events: Vec<Value> = String::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.len() >= 3, "about one bookmark per 100 ms: {events:?}");
    // Controllers may write other kinds meanwhile: bookmarks carry the latest RV seen, never going back.
    let mut last: u64 = rv.parse().unwrap();
    for e in &events {
        assert_eq!(e["type"], "BOOKMARK");
        assert_eq!(e["object"]["kind"], "ConfigMap");
        let brv: u64 = e["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(brv >= last);
        last = brv;
    }
    // After compaction an old resourceVersion gets one ERROR event with a 410 Expired Status.
    ts.sim()
        .store
        .create(
            meshsim::resources::core("configmaps"),
            json!({"metadata": {"name": "c", "namespace": "shop"}}),
            &Default::default(),
        )
        .unwrap();
    ts.sim().store.compact();
    let path = format!("/api/v1/namespaces/shop/configmaps?watch=true&resourceVersion={rv}");
    let (code, _, body) = http(a, "GET", &path, &[], "").await;
    assert_eq!(code, 200);
    let text = String::from_utf8(body).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let e: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(e["type"], "ERROR");
    assert_eq!(
        (e["object"]["code"].as_i64(), e["object"]["reason"].as_str()),
        (Some(410), Some("Expired"))
    );
}
