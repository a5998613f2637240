//! The seed runbook (docs/reference/seed-enable-ambient-mode.txt), every kubectl command of it, run with the real
//! kubectl against meshsim; then the runbook's rollback rows, including `kubectl apply -f` of a backup.
//! Asserts the cluster state after each phase, the way an operator would check it (and better: sidecars are
//! found by name, not by counting "2/2").

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use meshsim::settings::{Latencies, Settings};
use serde_json::Value;

struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    /// Runs kubectl; returns (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .output()
            .expect("kubectl runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs kubectl and requires exit 0.
    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "kubectl {} failed:\n{out}\n{err}", args.join(" "));
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("kubectl -o json prints JSON")
    }

    /// Polls `kubectl get ... -o json` until `pred` holds (as an operator re-running a command would).
    fn wait_for(&self, args: &[&str], what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.json(args);
            if pred(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last state:\n{v:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn settings() -> Settings {
    Settings {
        latency: Latencies {
            controller_tick_ms: 10,
            pod_start_ms: 30,
            pod_ready_ms: 30,
            pod_terminate_ms: 20,
            cni_enroll_ms: 10,
            waypoint_program_ms: 20,
            job_run_ms: 10,
            api_ms: 0,
        },
        ..Settings::default()
    }
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/seed.yaml")
}

fn containers(pod: &Value, list: &str) -> Vec<String> {
    pod["spec"][list]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn has_sidecar(pod: &Value) -> bool {
    containers(pod, "containers").iter().any(|n| n == "istio-proxy")
        || containers(pod, "initContainers")
            .iter()
            .any(|n| n == "istio-proxy")
}

fn sidecar_ready(pod: &Value) -> bool {
    ["containerStatuses", "initContainerStatuses"].iter().any(|list| {
        pod["status"][list]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s["name"] == "istio-proxy" && s["ready"] == true))
    })
}

fn pod_ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// App pods (not the waypoint) that are not terminating.
fn app_pods(list: &Value) -> Vec<Value> {
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| p["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"].is_null())
        .collect()
}

fn all_app_pods(list: &Value, want: usize, pred: impl Fn(&Value) -> bool) -> bool {
    let pods = app_pods(list);
    pods.len() == want && pods.iter().all(pred)
}

/// What `kubectl get ... -o yaml > backup.yaml` saved, with the server-set fields stripped (a real API
/// server refuses to create an object that carries a resourceVersion).
fn strip(mut obj: Value) -> Value {
    if let Some(m) = obj["metadata"].as_object_mut() {
        for f in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
        ] {
            m.remove(f);
        }
    }
    if let Some(m) = obj.as_object_mut() {
        m.remove("status");
    }
    obj
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_runbook_and_rollback_with_kubectl() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let running = meshsim::start(meshsim::StartOptions {
        fixtures: vec![fixture()],
        settings: settings(),
        kubeconfig_out: Some(kubeconfig.clone()),
        ..Default::default()
    })
    .await
    .expect("meshsim starts");
    let k = Kubectl {
        kubeconfig,
        cache: dir.path().join("cache"),
    };
    let pods_args = ["get", "pods", "-n", "shop"];

    // Before: 4 app pods (web, api x2, db), each with a ready sidecar.
    k.wait_for(&pods_args, "sidecar pods ready", |l| {
        all_app_pods(l, 4, |p| has_sidecar(p) && sidecar_ready(p) && pod_ready(p))
    });
    let table = k.ok(&pods_args);
    assert!(
        table.contains("READY") && table.contains("2/2"),
        "kubectl get pods shows 2/2:\n{table}"
    );

    // The backup the migration guide asks for (before-you-begin), saved as JSON and stripped.
    let kinds = "virtualservice,destinationrule,authorizationpolicy,requestauthentication,peerauthentication,gateway,httproute,telemetry";
    let backup = k.json(&["get", kinds, "-n", "shop"]);
    let raw_items = backup["items"].as_array().cloned().unwrap();
    assert_eq!(
        raw_items.len(),
        7,
        "3 policies, VS, DR, Gateway, HTTPRoute backed up"
    );
    let raw_backup = dir.path().join("istio-config-backup-raw.json");
    std::fs::write(
        &raw_backup,
        serde_json::to_string(&serde_json::json!({"apiVersion": "v1", "kind": "List", "items": raw_items}))
            .unwrap(),
    )
    .unwrap();
    let stripped: Vec<Value> = raw_items.into_iter().map(strip).collect();
    let backup_file = dir.path().join("istio-config-backup.json");
    std::fs::write(
        &backup_file,
        serde_json::to_string(&serde_json::json!({"apiVersion": "v1", "kind": "List", "items": stripped}))
            .unwrap(),
    )
    .unwrap();

    // Step 1: activate the waypoint; verify the Gateway (there is no READY column: PROGRAMMED is it).
    k.ok(&["label", "namespace", "shop", "istio.io/use-waypoint=waypoint"]);
    k.ok(&[
        "wait",
        "--for=condition=Programmed",
        "gateway/waypoint",
        "-n",
        "shop",
        "--timeout=60s",
    ]);
    let gw = k.ok(&["get", "gateway", "waypoint", "-n", "shop"]);
    assert!(
        gw.contains("PROGRAMMED") && gw.contains("True") && gw.contains("istio-waypoint"),
        "{gw}"
    );
    k.wait_for(
        &["get", "service", "api", "-n", "shop"],
        "api bound to the waypoint",
        |s| {
            s["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "istio.io/WaypointBound" && c["status"] == "True")
            })
        },
    );

    // Step 2: enable ambient. Pods keep their sidecars: the CNI skips injected pods.
    k.ok(&["label", "namespace", "shop", "istio.io/dataplane-mode=ambient"]);
    std::thread::sleep(Duration::from_millis(200));
    let l = k.json(&pods_args);
    assert!(
        all_app_pods(&l, 4, |p| has_sidecar(p)
            && p["metadata"]["annotations"]["ambient.istio.io/redirection"].is_null()),
        "sidecar pods are not enrolled: {l:#}"
    );

    // Step 3: remove injection.
    k.ok(&["label", "namespace", "shop", "istio-injection-"]);
    let ns = k.json(&["get", "namespace", "shop"]);
    assert!(ns["metadata"]["labels"]["istio-injection"].is_null());
    assert_eq!(ns["metadata"]["labels"]["istio.io/dataplane-mode"], "ambient");

    // Step 4: restart and wait, exactly the seed's commands.
    k.ok(&["rollout", "restart", "deployment", "-n", "shop"]);
    k.ok(&["rollout", "status", "deployment", "-n", "shop", "--timeout=60s"]);
    k.wait_for(&pods_args, "sidecar-free, enrolled pods", |l| {
        all_app_pods(l, 4, |p| {
            !has_sidecar(p)
                && p["metadata"]["annotations"]["sidecar.istio.io/status"].is_null()
                && p["metadata"]["annotations"]["ambient.istio.io/redirection"] == "enabled"
                && pod_ready(p)
        })
    });

    // Step 5: delete the replaced L7 selector policy, the VirtualService and the DestinationRule.
    k.ok(&["delete", "authorizationpolicy", "api-allow-web-get", "-n", "shop"]);
    k.ok(&["delete", "virtualservice", "api", "-n", "shop"]);
    k.ok(&["delete", "destinationrule", "api", "-n", "shop"]);
    let (code, _, err) = k.run(&["get", "authorizationpolicy", "api-allow-web-get", "-n", "shop"]);
    assert_ne!(code, 0);
    assert!(err.contains("NotFound") || err.contains("not found"), "{err}");
    let aps = k.json(&["get", "authorizationpolicy", "-n", "shop"]);
    let names: Vec<&str> = aps["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        names,
        vec!["api-allow-web-get-waypoint", "db-allow-api"],
        "L4 policy and twin kept"
    );

    // Step 6: validate (kubectl get pods shows 1/1 now).
    let table = k.ok(&pods_args);
    assert!(table.contains("1/1"), "{table}");

    // Rollback, reverse order. After step 5: apply the backup. An unstripped `kubectl get -o yaml` backup
    // carries resourceVersions: kubectl re-creates deleted objects (its create path clears the field), but
    // the patch of every object changed since the backup (status updates count) is refused with 409, as on
    // a real API server: the backup must be stripped first.
    let (code, _, err) = k.run(&["apply", "-f", raw_backup.to_str().unwrap()]);
    assert_ne!(
        code, 0,
        "unstripped backup must fail on objects modified since the backup"
    );
    assert!(err.contains("the object has been modified"), "{err}");
    k.ok(&["apply", "-f", backup_file.to_str().unwrap()]);
    for (kind, name) in [
        ("authorizationpolicy", "api-allow-web-get"),
        ("virtualservice", "api"),
        ("destinationrule", "api"),
    ] {
        let o = k.json(&["get", kind, name, "-n", "shop"]);
        assert_eq!(o["metadata"]["name"], name);
    }
    // After step 4 (and 3): re-add the injection label, restart.
    k.ok(&["label", "namespace", "shop", "istio-injection=enabled"]);
    // After step 2 and step 1: remove the labels.
    k.ok(&["label", "namespace", "shop", "istio.io/dataplane-mode-"]);
    k.ok(&["label", "namespace", "shop", "istio.io/use-waypoint-"]);
    k.ok(&["rollout", "restart", "deployment", "-n", "shop"]);
    k.ok(&["rollout", "status", "deployment", "-n", "shop", "--timeout=60s"]);
    // "verify that pods show 2/2": done right, the sidecar by name, ready, classic or native.
    let l = k.wait_for(&pods_args, "sidecars back and ready", |l| {
        all_app_pods(l, 4, |p| {
            has_sidecar(p)
                && sidecar_ready(p)
                && pod_ready(p)
                && p["metadata"]["annotations"]["ambient.istio.io/redirection"].is_null()
        })
    });
    let native = app_pods(&l)
        .iter()
        .filter(|p| containers(p, "initContainers").iter().any(|n| n == "istio-proxy"))
        .count();
    let classic = app_pods(&l)
        .iter()
        .filter(|p| containers(p, "containers").iter().any(|n| n == "istio-proxy"))
        .count();
    assert_eq!(
        native + classic,
        4,
        "every pod has the sidecar one way or the other"
    );
    let ns = k.json(&["get", "namespace", "shop"]);
    assert_eq!(ns["metadata"]["labels"]["istio-injection"], "enabled");
    assert!(ns["metadata"]["labels"]["istio.io/dataplane-mode"].is_null());
    assert!(ns["metadata"]["labels"]["istio.io/use-waypoint"].is_null());

    // "confirm traffic is flowing": web -> api through meshsim's traffic model.
    let resp: Value = reqwest_post(
        &format!("{}/meshsim/traffic/request", running.url()),
        serde_json::json!({"source": pod_name(&l, "web"), "method": "GET", "url": "http://api.shop.svc.cluster.local/"}),
    )
    .await;
    assert_eq!(resp["status"], 200, "web -> api after rollback: {resp:#}");
    drop(running);
}

fn pod_name(list: &Value, app: &str) -> String {
    let p = app_pods(list)
        .into_iter()
        .find(|p| p["metadata"]["labels"]["app"] == app)
        .expect("pod of app");
    format!("shop/{}", p["metadata"]["name"].as_str().unwrap())
}

/// A tiny HTTP/1.1 POST (meshsim has no reqwest dependency; a raw request keeps it that way).
async fn reqwest_post(url: &str, body: Value) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let body = body.to_string();
    let req = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    let (head, payload) = text.split_once("\r\n\r\n").expect("HTTP response");
    let payload = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(payload)
    } else {
        payload.to_string()
    };
    serde_json::from_str(&payload).unwrap_or_else(|e| panic!("JSON from {url}: {e}: {head}\n{payload}"))
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}
