//! curl command lines (output and exit codes as curl's) and the probe proxy over real HTTP (reqwest
//! through `reqwest::Proxy::http`).

use test_support::traffic as traffic_common;

use meshsim::traffic::{self, Source};
use serde_json::json;
use traffic_common::*;

fn cluster() -> std::sync::Arc<meshsim::Sim> {
    let s = sim();
    namespace(&s, "app", json!({}));
    namespace(&s, "amb", json!({}));
    pod(&s, "app", "api-1", json!({"app": "api"}), "api", "sidecar", true);
    pod(&s, "app", "web-1", json!({"app": "web"}), "web", "sidecar", true);
    pod(
        &s,
        "app",
        "curl-job-x1",
        json!({"job-name": "curl-job"}),
        "default",
        "sidecar",
        true,
    );
    pod(&s, "amb", "db-1", json!({"app": "db"}), "db", "ambient", true);
    pod(
        &s,
        "amb",
        "client-1",
        json!({"app": "client"}),
        "client",
        "ambient",
        true,
    );
    service(&s, "app", "api", "api");
    service(&s, "amb", "db", "db");
    // api: only GET from web; db: L7 ALLOW left on a selector (fails closed at ztunnel)
    apply_yaml(
        &s,
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: api, namespace: app}\nspec:\n  selector: {matchLabels: {app: api}}\n  rules:\n  - to: [{operation: {methods: [GET, HEAD, POST]}}]\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: db, namespace: amb}\nspec:\n  selector: {matchLabels: {app: db}}\n  rules:\n  - to: [{operation: {methods: [GET]}}]\n",
    );
    s
}

fn curl(s: &meshsim::Sim, from_pod: (&str, &str), args: &[&str]) -> traffic::curl::CurlOutput {
    let argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    traffic::curl::run(s, from(from_pod.0, from_pod.1), &argv)
}

const JOB: (&str, &str) = ("app", "curl-job-x1");
const AMB: (&str, &str) = ("amb", "client-1");

#[test]
fn curl_prints_like_curl() {
    let s = cluster();
    let o = curl(
        &s,
        JOB,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://api.app/",
        ],
    );
    assert_eq!(
        (o.exit_code, o.stdout.as_str(), o.stderr.as_str()),
        (0, "200", "")
    );
    let o = curl(&s, JOB, &["curl", "-s", "http://api.app.svc.cluster.local/hello"]);
    assert_eq!(o.exit_code, 0);
    assert!(
        o.stdout.contains("Hostname=api-1") && o.stdout.contains("URL=/hello"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("RequestHeader=User-Agent:curl/"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("RequestHeader=X-Request-Id:"),
        "sidecar caller adds x-request-id"
    );
    // 403 without -f: exit 0, body printed; with -f: exit 22
    let o = curl(
        &s,
        JOB,
        &[
            "curl",
            "-sS",
            "-X",
            "DELETE",
            "-w",
            "\\n%{http_code}\\n",
            "http://api.app/",
        ],
    );
    assert_eq!(
        (o.exit_code, o.stdout.as_str()),
        (0, "RBAC: access denied\n403\n")
    );
    let o = curl(
        &s,
        JOB,
        &[
            "curl",
            "-sSf",
            "--request",
            "DELETE",
            "-w",
            "%{http_code}",
            "http://api.app/",
        ],
    );
    assert_eq!(o.exit_code, 22);
    assert_eq!(o.stdout, "403");
    assert_eq!(o.stderr, "curl: (22) The requested URL returned error: 403\n");
    let o = curl(&s, JOB, &["curl", "-sf", "-XDELETE", "http://api.app/"]);
    assert_eq!(
        (o.exit_code, o.stderr.as_str()),
        (22, ""),
        "-s hides the error without -S"
    );
    // -i and -I
    let o = curl(&s, JOB, &["curl", "-si", "http://api.app/"]);
    assert!(
        o.stdout.starts_with("HTTP/1.1 200 OK\r\n") && o.stdout.contains("x-request-id: "),
        "{}",
        o.stdout
    );
    let o = curl(&s, JOB, &["curl", "-sI", "http://api.app/"]);
    assert!(
        o.stdout.starts_with("HTTP/1.1 200 OK\r\n") && !o.stdout.contains("Hostname="),
        "{}",
        o.stdout
    );
    // -d posts, -H adds headers
    let o = curl(
        &s,
        JOB,
        &["curl", "-s", "-d", "a=1", "-H", "X-Thing: yes", "http://api.app/"],
    );
    assert!(
        o.stdout.contains("Method=POST") && o.stdout.contains("RequestHeader=X-Thing:yes"),
        "{}",
        o.stdout
    );
    // ignored options
    let o = curl(
        &s,
        JOB,
        &[
            "curl",
            "-sSL",
            "-v",
            "--retry",
            "3",
            "-m",
            "5",
            "--connect-timeout",
            "2",
            "http://api.app/",
        ],
    );
    assert_eq!(o.exit_code, 0);
}

#[test]
fn curl_exit_codes_for_failures() {
    let s = cluster();
    // reset (ztunnel fails closed on the L7 ALLOW) without an Envoy at the caller
    let o = curl(&s, AMB, &["curl", "-sS", "-w", "%{http_code}", "http://db.amb/"]);
    assert_eq!(o.exit_code, 56);
    assert_eq!(o.stdout, "000");
    assert_eq!(o.stderr, "curl: (56) Recv failure: Connection reset by peer\n");
    // the same from a sidecar caller: 503 from its Envoy
    let o = curl(
        &s,
        JOB,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://db.amb/",
        ],
    );
    assert_eq!((o.exit_code, o.stdout.as_str()), (0, "503"));
    // DNS
    let o = curl(&s, JOB, &["curl", "http://nope.app/"]);
    assert_eq!(o.exit_code, 6);
    assert_eq!(o.stderr, "curl: (6) Could not resolve host: nope.app\n");
    // refused (no such port)
    let o = curl(
        &s,
        AMB,
        &["curl", "-s", "-w", "%{http_code}", "http://db.amb:81/"],
    );
    assert_eq!((o.exit_code, o.stdout.as_str()), (7, "000"));
    // usage errors
    let o = curl(&s, JOB, &["curl", "--bogus", "http://api.app/"]);
    assert_eq!(o.exit_code, 2);
    assert!(o.stderr.starts_with("curl: option --bogus: is unknown\n"));
    let o = curl(&s, JOB, &["curl", "-s"]);
    assert_eq!(o.exit_code, 2);
    // counters saw the curl requests
    assert!(s.traffic.snapshot()["total"].as_u64().unwrap() >= 3);
}

#[tokio::test]
async fn proxy_serves_probes_over_http() {
    let s = cluster();
    let (addr, task) = traffic::proxy::serve(s.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{addr}")).unwrap())
        .build()
        .unwrap();
    // External probe: plaintext, the api sidecar admits GET
    let r = client
        .get("http://api.app.svc.cluster.local/ping")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-meshsim-enforcement"], "sidecar");
    assert!(
        r.headers().contains_key("x-request-id"),
        "the destination sidecar added one"
    );
    let body = r.text().await.unwrap();
    assert!(
        body.contains("Hostname=api-1") && body.contains("URL=/ping"),
        "{body}"
    );
    // 403 passes through
    let r = client
        .delete("http://api.app.svc.cluster.local/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.text().await.unwrap(), "RBAC: access denied");
    // with a source pod; the header does not reach the app
    let r = client
        .get("http://api.app/")
        .header("x-meshsim-source", "app/web")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(!body.to_ascii_lowercase().contains("x-meshsim-source"), "{body}");
    // Reset: the connection closes without a response
    let e = client
        .get("http://db.amb/")
        .header("x-meshsim-source", "amb/client")
        .send()
        .await
        .expect_err("reset is a connection error");
    assert!(e.status().is_none(), "{e:?}");
    // DNS and refused
    let r = client.get("http://nope.app/").send().await.unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["x-meshsim-error"].to_str().unwrap()
        ),
        (502, "dns")
    );
    let r = client.get("http://api.app:81/").send().await.unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["x-meshsim-error"].to_str().unwrap()
        ),
        (502, "refused")
    );
    // bad source header
    let r = client
        .get("http://api.app/")
        .header("x-meshsim-source", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let c = s.traffic.snapshot();
    assert_eq!(c["by_destination"]["app/api"]["by_outcome"]["403"], 1, "{c}");
    task.abort();
    let _ = Source::External;
}
