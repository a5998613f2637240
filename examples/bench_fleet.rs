//! Benchmark: the fleet runner out of process, as a user runs it, against `meshsim serve` holding a generated
//! fleet, with meshsim's own floor measured on the same server.
//!
//! For each row (N namespaces at concurrency c) it starts `target/release/meshsim serve` with the output of
//! `meshsim generate` (N runner namespaces plus the extra namespaces the other measurements use), waits for
//! every Deployment to be ready, and prints:
//!
//! - the bare restart (`kubectl rollout restart deployment -n X` + `kubectl rollout status deployment -n X`)
//!   of one namespace on a meshsim holding that namespace alone and on the row's meshsim (median of 3);
//! - the bare restart of c namespaces at once (the same two kubectl commands for each of the runner's first
//!   c namespaces, all in parallel; median of 3), with the CPU the kubectl processes and meshsim used: on a
//!   small machine meshsim does not restart c namespaces together as fast as one;
//! - the wall time of `target/release/ambient-migrate run --config ... --kubeconfig ...` over the N
//!   namespaces, and its ratio to the floor ceil(N / c) x bare restart at N and to the floor
//!   ceil(N / c) x bare restart of c namespaces at once;
//! - the runner's API requests per namespace by verb (meshsim's request counters, `GET /meshsim/requests`,
//!   user agent `ambient-migrate`);
//! - the runner's peak RSS (`VmHWM` of `/proc/<pid>/status`, polled until it exits);
//! - the seed runbook (label ambient, drop injection, rollout restart, rollout status, get pods) as a shell
//!   script run by `xargs -P 1` (sequential) and `xargs -P 10` over a sample of namespaces of the same
//!   server, and that time scaled to N namespaces (once per distinct N);
//! - gate failure to rollback: a `pods-crashloop-after-restart` fault in one namespace of a second, small
//!   run on the same server, whose Deployments get `progressDeadlineSeconds: 3`; from the watch event in
//!   which a Deployment of it reports `ProgressDeadlineExceeded` (observed by this process's own watch: the
//!   event that fails the rollout gate) to the runner's first write to that Namespace object after it
//!   (request log: the rollback's label restore or state annotation).
//!
//! Run (after `cargo build --release -p meshsim -p ambient-migrate`):
//! `cargo run --release --example bench_fleet -- [--deployments 5] [--replicas 2] [--runbook-sample 20] [N:c ...]`
//! (default rows `100:10 100:50 1000:50`; `--runbook-sample 0` skips the runbooks).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

/// Latencies of the issue's measurements (pod start 200 ms, ready 200 ms, terminate 100 ms, CNI 50 ms,
/// API 5 ms).
const SETTINGS: &str = "latency:\n  pod_start_ms: 200\n  pod_ready_ms: 200\n  pod_terminate_ms: 100\n  cni_enroll_ms: 50\n  api_ms: 5\n";

/// Namespaces of the gate-failure run (the first one carries the fault).
const LATENCY_FLEET: usize = 5;

/// The seed runbook for one namespace (no waypoint, no policies: steps 2, 3, 4 and 6).
const RUNBOOK: &str = r#"#!/bin/sh
set -e
ns="$1"
k() { kubectl --kubeconfig "$KUBECONFIG_FILE" "$@"; }
k label namespace "$ns" istio.io/dataplane-mode=ambient --overwrite >/dev/null
k label namespace "$ns" istio-injection- >/dev/null
k rollout restart deployment -n "$ns" >/dev/null
k rollout status deployment -n "$ns" --timeout=120s >/dev/null
k get pods -n "$ns" >/dev/null
"#;

struct Args {
    deployments: usize,
    replicas: u32,
    sample: usize,
    rows: Vec<(usize, usize)>,
}

fn parse_args() -> Args {
    let mut a = Args {
        deployments: 5,
        replicas: 2,
        sample: 20,
        rows: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |what: &str| -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} takes a number"))
        };
        match arg.as_str() {
            "--deployments" => a.deployments = num("--deployments"),
            "--replicas" => a.replicas = num("--replicas") as u32,
            "--runbook-sample" => a.sample = num("--runbook-sample"),
            row => {
                let (n, c) = row
                    .split_once(':')
                    .and_then(|(n, c)| Some((n.parse().ok()?, c.parse().ok()?)))
                    .unwrap_or_else(|| panic!("a row is N:c (namespaces:concurrency), got {row:?}"));
                a.rows.push((n, c));
            }
        }
    }
    if a.rows.is_empty() {
        a.rows = vec![(100, 10), (100, 50), (1000, 50)];
    }
    a
}

fn release_bin(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/release")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: cargo build --release -p meshsim -p ambient-migrate",
        p.display()
    );
    p
}

fn ns_name(i: usize) -> String {
    format!("fleet-{i:03}")
}

/// A running `meshsim serve`, killed on drop.
struct Server {
    child: Child,
    url: String,
    kubeconfig: PathBuf,
    http: reqwest::Client,
}

/// The runtime the HTTP calls run on (the benchmark itself is sequential and blocks on processes).
fn rt() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(dir: &Path, namespaces: usize, deployments: usize, replicas: u32) -> Server {
        std::fs::create_dir_all(dir).expect("bench dir");
        let meshsim = release_bin("meshsim");
        let fixture = dir.join("fleet.yaml");
        let out = Command::new(&meshsim)
            .args(["generate", "--namespaces", &namespaces.to_string()])
            .args(["--deployments", &deployments.to_string()])
            .args(["--replicas", &replicas.to_string()])
            .output()
            .expect("meshsim generate");
        assert!(out.status.success(), "meshsim generate failed");
        std::fs::write(&fixture, &out.stdout).expect("write fixture");
        let settings = dir.join("settings.yaml");
        std::fs::write(&settings, SETTINGS).expect("write settings");
        let kubeconfig = dir.join("kubeconfig");
        let mut child = Command::new(&meshsim)
            .arg("serve")
            .arg("--fixture")
            .arg(&fixture)
            .arg("--settings")
            .arg(&settings)
            .arg("--kubeconfig-out")
            .arg(&kubeconfig)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("meshsim serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("meshsim prints its URL");
        let server = Server {
            child,
            url: line.trim().to_string(),
            kubeconfig,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(600))
                .build()
                .expect("http client"),
        };
        server.wait_ready(namespaces * deployments, Duration::from_secs(600));
        server
    }

    fn get(&self, path: &str) -> Value {
        let req = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(meshsim::api::auth::ADMIN_TOKEN);
        rt().block_on(async move {
            match req.send().await {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            }
        })
    }

    /// Waits until `count` fleet Deployments report every replica updated and ready.
    fn wait_ready(&self, count: usize, limit: Duration) {
        let until = Instant::now() + limit;
        loop {
            let list = self.get("/apis/apps/v1/deployments");
            let ready = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| {
                    d["metadata"]["namespace"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("fleet-"))
                })
                .filter(|d| {
                    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
                    d["status"]["readyReplicas"].as_i64() == Some(want)
                        && d["status"]["updatedReplicas"].as_i64() == Some(want)
                })
                .count();
            if ready >= count {
                return;
            }
            assert!(
                Instant::now() < until,
                "fleet not ready: {ready}/{count} Deployments"
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    fn reset_requests(&self) {
        let req = self.http.delete(format!("{}/meshsim/requests", self.url));
        let answer = rt()
            .block_on(async move { req.send().await })
            .expect("DELETE /meshsim/requests");
        assert!(answer.status().is_success(), "request log not reset");
    }

    /// meshsim's request counters and log (control endpoint, not counted itself).
    fn requests(&self) -> Value {
        let v = self.get("/meshsim/requests");
        assert!(v.is_object(), "GET /meshsim/requests answered nothing");
        v
    }

    fn kubectl(&self, args: &[&str]) {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Bare restart of one namespace with kubectl: median of three.
    fn bare_restart(&self, ns: &str) -> Duration {
        let mut runs: Vec<Duration> = (0..3)
            .map(|_| {
                next_second();
                let t0 = Instant::now();
                self.kubectl(&["rollout", "restart", "deployment", "-n", ns]);
                self.kubectl(&["rollout", "status", "deployment", "-n", ns, "--timeout=120s"]);
                t0.elapsed()
            })
            .collect();
        runs.sort();
        runs[1]
    }

    /// The same restart of `names` at once from one light client in this process: one watch of all
    /// Deployments, then the `restartedAt` patch of every Deployment of the namespaces (what `kubectl
    /// rollout restart` sends), all in flight together, until each rollout is complete by `kubectl rollout
    /// status`'s rules. Median of three. Without a hundred kubectl processes competing with meshsim for the
    /// CPU, this is what meshsim itself needs for c namespaces restarting together.
    fn restart_at_once_one_client(&self, names: &[String]) -> Duration {
        let mut runs: Vec<Duration> = (0..3).map(|_| self.restart_once_one_client(names)).collect();
        runs.sort();
        runs[1]
    }

    fn restart_once_one_client(&self, names: &[String]) -> Duration {
        let targets: Vec<(String, String)> = names
            .iter()
            .flat_map(|ns| {
                let list = self.get(&format!("/apis/apps/v1/namespaces/{ns}/deployments"));
                list["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| Some((ns.clone(), d["metadata"]["name"].as_str()?.to_string())))
                    .collect::<Vec<_>>()
            })
            .collect();
        let (http, url) = (self.http.clone(), self.url.clone());
        let token = meshsim::api::auth::ADMIN_TOKEN;
        rt().block_on(async move {
            let mut watch = http
                .get(format!("{url}/apis/apps/v1/deployments?watch=true"))
                .bearer_auth(token)
                .send()
                .await
                .expect("watch Deployments");
            let t0 = Instant::now();
            let at = jiff::Timestamp::now().to_string();
            let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
                "kubectl.kubernetes.io/restartedAt": at}}}}});
            let sends = targets.iter().map(|(ns, name)| {
                let req = http
                    .patch(format!("{url}/apis/apps/v1/namespaces/{ns}/deployments/{name}"))
                    .bearer_auth(token)
                    .header("content-type", "application/merge-patch+json")
                    .body(patch.to_string());
                async move {
                    let d: Value = req.send().await.expect("patch").json().await.expect("patched");
                    ((ns.clone(), name.clone()), d)
                }
            });
            let mut pending: BTreeMap<(String, String), i64> = BTreeMap::new();
            let mut latest: BTreeMap<(String, String), Value> = BTreeMap::new();
            for (key, d) in futures::future::join_all(sends).await {
                pending.insert(key.clone(), d["metadata"]["generation"].as_i64().unwrap_or(0));
                latest.insert(key, d);
            }
            let mut buf: Vec<u8> = Vec::new();
            loop {
                pending
                    .retain(|k, generation| !latest.get(k).is_some_and(|d| rollout_complete(d, *generation)));
                if pending.is_empty() {
                    return t0.elapsed();
                }
                let chunk = watch.chunk().await.expect("watch").expect("watch ended");
                buf.extend_from_slice(&chunk);
                while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=i).collect();
                    let ev: Value = serde_json::from_slice(&line).unwrap_or(Value::Null);
                    let d = &ev["object"];
                    let key = (
                        d["metadata"]["namespace"].as_str().unwrap_or("").to_string(),
                        d["metadata"]["name"].as_str().unwrap_or("").to_string(),
                    );
                    if pending.contains_key(&key) {
                        latest.insert(key, d.clone());
                    }
                }
            }
        })
    }

    /// Bare restart of `names` at once (one `rollout restart` then `rollout status` per namespace, all
    /// namespaces in parallel), median of three: what meshsim can do with that many namespaces restarting
    /// together on this machine. Also returns the CPU seconds the kubectl processes and meshsim used in
    /// the median run (kubectl's own share is load the runner, one process, does not add).
    fn bare_restart_at_once(&self, names: &[String]) -> (Duration, f64, f64) {
        let mut runs: Vec<(Duration, f64, f64)> = (0..3)
            .map(|_| {
                next_second();
                let (kubectl0, meshsim0) = (children_cpu_s(), process_cpu_s(self.child.id()));
                let t0 = Instant::now();
                std::thread::scope(|sc| {
                    for ns in names {
                        sc.spawn(move || {
                            self.kubectl(&["rollout", "restart", "deployment", "-n", ns]);
                            self.kubectl(&["rollout", "status", "deployment", "-n", ns, "--timeout=300s"]);
                        });
                    }
                });
                let took = t0.elapsed();
                (
                    took,
                    children_cpu_s() - kubectl0,
                    process_cpu_s(self.child.id()) - meshsim0,
                )
            })
            .collect();
        runs.sort_by_key(|r| r.0);
        runs[1]
    }
}

/// Whether a Deployment's rollout is complete by `kubectl rollout status`'s rules
/// (kubernetes `staging/src/k8s.io/kubectl/pkg/polymorphichelpers/rollout_status.go`): the controller saw
/// generation `min_generation`, every replica is updated and available, and no old replica is left.
fn rollout_complete(d: &Value, min_generation: i64) -> bool {
    let st = &d["status"];
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let n = |k: &str| st[k].as_i64().unwrap_or(0);
    st["observedGeneration"].as_i64().unwrap_or(0) >= min_generation
        && n("updatedReplicas") >= want
        && n("replicas") <= n("updatedReplicas")
        && n("availableReplicas") >= n("updatedReplicas")
}

/// `/proc/<pid>/stat` fields 14-17 (utime, stime, cutime, cstime) in seconds: (own, waited-for children).
fn cpu_of(pid: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: count from the closing parenthesis.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // `rest` starts at field 3; clock ticks are 100 per second on Linux (`getconf CLK_TCK`).
    let tick = |i: usize| f.get(i - 3).copied().unwrap_or(0.0) / 100.0;
    (tick(14) + tick(15), tick(16) + tick(17))
}

/// CPU seconds of this process's waited-for children (the kubectl processes).
fn children_cpu_s() -> f64 {
    cpu_of("self").1
}

/// CPU seconds `pid` used itself.
fn process_cpu_s(pid: u32) -> f64 {
    cpu_of(&pid.to_string()).0
}

fn config(names: &[String], concurrency: usize) -> String {
    let list = names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[fleet]\nnamespaces = [{list}]\nconcurrency = {concurrency}\nmax_failed_namespaces = {}\n\n[timeouts]\nwaypoint_ready = \"30s\"\nrollout = \"60s\"\nstep = \"120s\"\nrollback = \"120s\"\napi_request = \"10s\"\n\n[reports]\nprogress_interval = \"5s\"\n",
        names.len()
    )
}

struct RunFigures {
    wall: Duration,
    code: i32,
    peak_rss_kib: u64,
    /// From its report: first namespace start, median namespace, median restart step (s).
    timeline: Option<(f64, f64, f64)>,
}

/// Runs the release runner over `names`, polling its peak RSS.
fn run_runner(server: &Server, dir: &Path, names: &[String], concurrency: usize) -> RunFigures {
    std::fs::create_dir_all(dir).expect("run dir");
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, config(names, concurrency)).expect("write config");
    let t0 = Instant::now();
    let mut child = Command::new(release_bin("ambient-migrate"))
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .arg("--kubeconfig")
        .arg(&server.kubeconfig)
        .arg("--report-dir")
        .arg(dir.join("reports"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).expect("stderr log"))
        .spawn()
        .expect("ambient-migrate runs");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let code = loop {
        if let Some(kib) = std::fs::read_to_string(&status_file)
            .ok()
            .as_deref()
            .and_then(vm_hwm_kib)
        {
            peak = peak.max(kib);
        }
        if let Some(st) = child.try_wait().expect("wait") {
            break st.code().unwrap_or(-1);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    RunFigures {
        wall: t0.elapsed(),
        code,
        peak_rss_kib: peak,
        timeline: timeline(&dir.join("reports")),
    }
}

/// From the runner's JSON report: seconds from the run's start to its first namespace's start, and the
/// median namespace duration and median step 4 (restart) duration in seconds.
fn timeline(report_dir: &Path) -> Option<(f64, f64, f64)> {
    let text = std::fs::read_to_string(report_dir.join("ambient-migrate-report.json")).ok()?;
    let r: Value = serde_json::from_str(&text).ok()?;
    let at = |v: &Value| v.as_str()?.parse::<jiff::Timestamp>().ok();
    let t0 = at(&r["started"])?;
    let since = |a: jiff::Timestamp, b: jiff::Timestamp| b.duration_since(a).as_secs_f64();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let nss: Vec<&Value> = r["namespaces"].as_array()?.iter().collect();
    let first = nss
        .iter()
        .filter_map(|n| at(&n["started"]))
        .map(|s| since(t0, s))
        .min_by(f64::total_cmp)?;
    let durations = nss
        .iter()
        .filter_map(|n| Some(since(at(&n["started"])?, at(&n["ended"])?)))
        .collect();
    let restarts = nss
        .iter()
        .flat_map(|n| n["steps"].as_array().into_iter().flatten())
        .filter(|st| st["step"] == "restart")
        .filter_map(|st| Some(since(at(&st["started"])?, at(&st["ended"])?)))
        .collect();
    Some((first, median(durations)?, median(restarts)?))
}

fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Requests by verb sent by the runner (meshsim's counters, which the log's size limit does not cut).
fn runner_verbs(requests: &Value) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for c in requests["counters"].as_array().into_iter().flatten() {
        if c["user_agent"]
            .as_str()
            .is_some_and(|ua| ua.starts_with("ambient-migrate"))
        {
            *m.entry(c["verb"].as_str().unwrap_or("?").to_string())
                .or_default() += c["count"].as_u64().unwrap_or(0);
        }
    }
    m
}

/// The seed runbook over `names` with `xargs -P parallel`; wall time.
fn runbook(server: &Server, dir: &Path, names: &[String], parallel: usize) -> Duration {
    let script = dir.join("runbook.sh");
    std::fs::write(&script, RUNBOOK).expect("write runbook");
    let t0 = Instant::now();
    let mut child = Command::new("xargs")
        .args(["-P", &parallel.to_string(), "-n", "1", "sh"])
        .arg(&script)
        .env("KUBECONFIG_FILE", &server.kubeconfig)
        .stdin(Stdio::piped())
        .spawn()
        .expect("xargs runs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(names.join("\n").as_bytes()).expect("write names");
    }
    let st = child.wait().expect("xargs");
    assert!(st.success(), "the runbook failed");
    t0.elapsed()
}

/// Sleeps (untimed) until the wall clock's next whole second. `kubectl rollout restart` stamps
/// `kubectl.kubernetes.io/restartedAt` to the second (RFC 3339, `polymorphichelpers/objectrestarter.go`) and
/// refuses a restart whose patch comes out empty because the stamp is already there ("if restart has already
/// been triggered within the past second, please wait before attempting to trigger another":
/// `pkg/cmd/rollout/rollout_restart.go`), so a restart of the same namespace that finished within a second
/// needs the next second before it can be repeated.
fn next_second() {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    std::thread::sleep(Duration::from_nanos(
        1_000_000_000 - u64::from(now.subsec_nanos()),
    ));
}

fn rfc3339_of(t: SystemTime) -> jiff::Timestamp {
    jiff::Timestamp::try_from(t).expect("timestamp")
}

/// Watches `path` (a collection, `?watch=true` appended) and records when the first event whose object
/// satisfies `hit` arrives. Started before the runner, so the event cannot be missed.
fn watch_first(server: &Server, path: &str, hit: fn(&Value) -> bool) -> Arc<Mutex<Option<SystemTime>>> {
    let seen = Arc::new(Mutex::new(None));
    let out = seen.clone();
    let req = server
        .http
        .get(format!("{}{path}?watch=true", server.url))
        .bearer_auth(meshsim::api::auth::ADMIN_TOKEN);
    let mut resp = rt().block_on(async move { req.send().await }).expect("watch");
    rt().spawn(async move {
        let mut buf: Vec<u8> = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            let now = SystemTime::now();
            buf.extend_from_slice(&chunk);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                let ev: Value = serde_json::from_slice(&line).unwrap_or(Value::Null);
                if hit(&ev["object"]) {
                    *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
                    return;
                }
            }
        }
    });
    seen
}

/// A Deployment whose rollout the controller gave up on: `Progressing=False`, `ProgressDeadlineExceeded`
/// (kubernetes `pkg/controller/deployment/progress.go`), the condition the runner's rollout gate fails on.
fn deadline_exceeded(d: &Value) -> bool {
    d["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| {
            c["type"] == "Progressing" && c["status"] == "False" && c["reason"] == "ProgressDeadlineExceeded"
        })
}

/// Gives the Deployments of `ns` a `progressDeadlineSeconds` of `secs` (a spec change outside the pod
/// template, so no rollout), so a crash loop after the restart ends in the condition above.
fn short_progress_deadline(server: &Server, ns: &str, secs: u32) {
    let list = server.get(&format!("/apis/apps/v1/namespaces/{ns}/deployments"));
    let patch = format!("{{\"spec\":{{\"progressDeadlineSeconds\":{secs}}}}}");
    for d in list["items"].as_array().into_iter().flatten() {
        let name = d["metadata"]["name"].as_str().unwrap_or("");
        server.kubectl(&[
            "-n",
            ns,
            "patch",
            "deployment",
            name,
            "--type=merge",
            "-p",
            &patch,
        ]);
    }
}

/// The gate-failure run: `names[0]` crash-loops after its restart and its Deployments give up after 3 s;
/// from the watch event in which the first of them reports `ProgressDeadlineExceeded` (the event that fails
/// the runner's rollout gate) to the runner's first write to that namespace after it (ms), and what that
/// write was.
fn gate_failure_latency(server: &Server, dir: &Path, names: &[String]) -> (Option<f64>, String, i32) {
    let ns = &names[0];
    let fault = format!(
        "kind: pods-crashloop-after-restart\nid: bench-crashloop\nnamespace: {ns}\ntrigger:\n  namespace: {ns}\n  label: \"!istio-injection\"\n"
    );
    let req = server
        .http
        .post(format!("{}/meshsim/faults", server.url))
        .body(fault);
    let posted = rt()
        .block_on(async move { req.send().await })
        .expect("POST /meshsim/faults");
    assert!(posted.status().is_success(), "fault not accepted");
    short_progress_deadline(server, ns, 3);
    server.reset_requests();
    let crash = watch_first(
        server,
        &format!("/apis/apps/v1/namespaces/{ns}/deployments"),
        deadline_exceeded,
    );
    let run = run_runner(server, dir, names, names.len());
    let Some(at) = *crash.lock().unwrap_or_else(|e| e.into_inner()) else {
        return (
            None,
            "no Deployment exceeded its progress deadline".into(),
            run.code,
        );
    };
    let at = rfc3339_of(at);
    let log = server.requests();
    let first = log["log"].as_array().into_iter().flatten().find(|r| {
        let mutating = matches!(
            r["verb"].as_str(),
            Some("create" | "update" | "patch" | "delete" | "deletecollection")
        );
        // The rollback's first write is to the Namespace (its labels or the runner's state annotation): a
        // restart of a Deployment still in step 4 is not one, and the runner writes the Namespace at no
        // other moment between the restart and the namespace's end.
        let target = r["resource"].as_str() == Some("namespaces") && r["name"].as_str() == Some(ns);
        mutating
            && target
            && r["user_agent"]
                .as_str()
                .is_some_and(|u| u.starts_with("ambient-migrate"))
            && r["time"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .is_some_and(|t| t > at)
    });
    match first {
        Some(r) => {
            let t: jiff::Timestamp = r["time"].as_str().unwrap_or("").parse().expect("time");
            let ms = t.duration_since(at).as_secs_f64() * 1000.0;
            let what = format!(
                "{} {} {}",
                r["verb"].as_str().unwrap_or(""),
                r["resource"].as_str().unwrap_or(""),
                r["name"].as_str().unwrap_or("")
            );
            (Some(ms), what, run.code)
        }
        None => (None, "no write after the failure".into(), run.code),
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn main() {
    let args = parse_args();
    let (d, r) = (args.deployments, args.replicas);
    let base = tempfile::tempdir().expect("temp dir");
    println!(
        "# bench_fleet: N namespaces x {d} Deployments x {r} replicas; meshsim latencies: pod start 200 ms, ready 200 ms, terminate 100 ms, CNI 50 ms, API 5 ms"
    );
    let one = {
        let server = Server::start(&base.path().join("one"), 1, d, r);
        server.bare_restart(&ns_name(0))
    };
    println!("\nbare restart, meshsim holding 1 namespace: {:.2} s", secs(one));

    let mut rows = Vec::new();
    let mut runbooks_done = std::collections::HashSet::new();
    let mut runbook_rows = Vec::new();
    for (i, &(n, c)) in args.rows.iter().enumerate() {
        let sample = if runbooks_done.insert(n) {
            args.sample.min(n)
        } else {
            0
        };
        // fleet-000.. the runner's N, then the runbook samples, the gate-failure fleet, the bare-restart one.
        let total = n + 2 * sample + LATENCY_FLEET + 1;
        let dir = base.path().join(format!("row{i}"));
        let t0 = Instant::now();
        let server = Server::start(&dir, total, d, r);
        eprintln!(
            "row {n}:{c}: meshsim with {total} namespaces ready in {:.1} s",
            secs(t0.elapsed())
        );
        let bare = server.bare_restart(&ns_name(total - 1));
        let names: Vec<String> = (0..n).map(ns_name).collect();
        // The runner's first c namespaces, restarted together before the runner runs (they stay on
        // sidecars, with new pods).
        let at_once = server.bare_restart_at_once(&names[..c.min(n)]);
        let one_client = server.restart_at_once_one_client(&names[..c.min(n)]);
        eprintln!(
            "row {n}:{c}: bare restart of {c} namespaces at once {:.2} s (kubectl CPU {:.1} s, meshsim CPU {:.1} s); from one client {:.2} s",
            secs(at_once.0),
            at_once.1,
            at_once.2,
            secs(one_client)
        );
        server.reset_requests();
        let (runner0, meshsim0) = (children_cpu_s(), process_cpu_s(server.child.id()));
        let run = run_runner(&server, &dir.join("run"), &names, c);
        let cpu = (
            children_cpu_s() - runner0,
            process_cpu_s(server.child.id()) - meshsim0,
        );
        eprintln!(
            "row {n}:{c}: during the run the runner used {:.1} s of CPU and meshsim {:.1} s, in {:.1} s on {} cores",
            cpu.0,
            cpu.1,
            secs(run.wall),
            std::thread::available_parallelism().map_or(0, |p| p.get())
        );
        let verbs = runner_verbs(&server.requests());
        let floor = bare.as_secs_f64() * n.div_ceil(c) as f64;
        if sample > 0 {
            let seq: Vec<String> = (n..n + sample).map(ns_name).collect();
            let par: Vec<String> = (n + sample..n + 2 * sample).map(ns_name).collect();
            let s = runbook(&server, &dir, &seq, 1);
            let p = runbook(&server, &dir, &par, 10);
            runbook_rows.push((n, sample, s, p));
        }
        let lat_names: Vec<String> = (n + 2 * sample..n + 2 * sample + LATENCY_FLEET)
            .map(ns_name)
            .collect();
        let latency = gate_failure_latency(&server, &dir.join("latency"), &lat_names);
        rows.push((n, c, bare, at_once, one_client, run, cpu, verbs, floor, latency));
    }

    println!(
        "\n| N | c | bare restart at N s | bare restart of c namespaces at once s (kubectl CPU s, meshsim CPU s) | runner exit | runner wall s | floor ceil(N/c) x bare s | wall / floor | floor ceil(N/c) x bare of c at once s | wall / that floor | the same restart from one client s | wall / ceil(N/c) x that | requests per namespace | by verb | peak RSS MiB | gate failure -> first rollback write ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (
        n,
        c,
        bare,
        (at_once, kubectl_cpu, meshsim_cpu),
        one_client,
        run,
        _,
        verbs,
        floor,
        (lat, what, lat_code),
    ) in &rows
    {
        let waves = n.div_ceil(*c) as f64;
        let floor_at_once = secs(*at_once) * waves;
        let floor_one_client = secs(*one_client) * waves;
        let total: u64 = verbs.values().sum();
        let per: Vec<String> = verbs
            .iter()
            .map(|(v, k)| format!("{v} {:.1}", *k as f64 / *n as f64))
            .collect();
        println!(
            "| {n} | {c} | {:.2} | {:.2} ({kubectl_cpu:.1}, {meshsim_cpu:.1}) | {} | {:.1} | {:.1} | {:.2} | {:.1} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {:.1} | {} ({what}; run exit {lat_code}) |",
            secs(*bare),
            secs(*at_once),
            run.code,
            secs(run.wall),
            floor,
            secs(run.wall) / floor,
            floor_at_once,
            secs(run.wall) / floor_at_once,
            secs(*one_client),
            secs(run.wall) / floor_one_client,
            total as f64 / *n as f64,
            per.join(", "),
            run.peak_rss_kib as f64 / 1024.0,
            lat.map(|ms| format!("{ms:.0}")).unwrap_or_else(|| "n/a".into()),
        );
    }
    println!(
        "\n| N | c | runner: first namespace starts after s | median namespace s | median restart step s | runner CPU s | meshsim CPU s | cores busy (both CPU / wall) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (n, c, _, _, _, run, (runner_cpu, meshsim_cpu), ..) in &rows {
        let cores = runner_cpu + meshsim_cpu;
        match run.timeline {
            Some((first, ns, restart)) => println!(
                "| {n} | {c} | {first:.2} | {ns:.2} | {restart:.2} | {runner_cpu:.1} | {meshsim_cpu:.1} | {:.2} |",
                cores / secs(run.wall)
            ),
            None => println!("| {n} | {c} | n/a | n/a | n/a | {runner_cpu:.1} | {meshsim_cpu:.1} | n/a |"),
        }
    }
    if !runbook_rows.is_empty() {
        println!(
            "\n| N | runbook sample | sequential s (sample) | sequential s scaled to N | xargs -P 10 s (sample) | xargs -P 10 s scaled to N |"
        );
        println!("|---|---|---|---|---|---|");
        for (n, k, s, p) in &runbook_rows {
            let scale = *n as f64 / *k as f64;
            println!(
                "| {n} | {k} | {:.1} | {:.0} | {:.1} | {:.0} |",
                secs(*s),
                secs(*s) * scale,
                secs(*p),
                secs(*p) * scale
            );
        }
    }
}
