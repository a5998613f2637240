//! batch/v1 Jobs (`pkg/controller/job/job_controller.go`), for probe Jobs running curl:
//! - one pod at a time (parallelism/completions 1), labelled `job-name`, `controller-uid`,
//!   `batch.kubernetes.io/job-name`, `batch.kubernetes.io/controller-uid`, owned by the Job; injection
//!   applies as to any pod;
//! - once the pod runs, its sidecar (if any) is ready, and an ambient pod is enrolled (istio-cni enrolls
//!   before the app starts, so the app waits for `ambient.istio.io/redirection`), the command runs: the
//!   first container whose command+args start with `curl` (or `sh -c "curl ..."`) is executed by the
//!   traffic model's curl with the pod as source; other commands go through a tiny shell (`echo`, `true`,
//!   `false`, `exit N`, `sleep`). Output goes to the pod log;
//! - `latency.job_run_ms` later the containers terminate with the exit code (a sidecar quits with the app:
//!   meshsim behaves as if native sidecars or `EXIT_ON_ZERO_ACTIVE_CONNECTIONS`/quit-on-exit were used),
//!   pod phase Succeeded/Failed;
//! - Job status: startTime, active, ready, succeeded, failed, terminating, conditions SuccessCriteriaMet +
//!   Complete (reason CompletionsReached) or FailureTarget + Failed (BackoffLimitExceeded) as the 1.31+
//!   controller writes them, completionTime; a failed pod is replaced while failures <= backoffLimit
//!   (default 6). `restartPolicy: OnFailure` is treated like Never (a new pod per retry).

use serde_json::{Value, json};

use super::events::emit;
use super::util::{self, annotation, name, ns, pod_active, set_condition, terminating, uid};
use super::{Snap, State, res};
use crate::Sim;

const JC: &str = "job-controller";

/// Output of one command run in a Job pod.
pub struct CommandOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The argv of the first container that runs curl (command + args; `sh -c "curl ..."` is split).
pub fn curl_argv(pod: &Value) -> Option<Vec<String>> {
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        let argv = container_argv(c);
        if argv.first().is_some_and(|a| a == "curl" || a.ends_with("/curl")) {
            return Some(argv);
        }
        if let Some(inner) = shell_inner(&argv) {
            let split = split_words(&inner);
            if split.first().is_some_and(|a| a == "curl" || a.ends_with("/curl")) {
                return Some(split);
            }
        }
    }
    None
}

fn container_argv(c: &Value) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for k in ["command", "args"] {
        for a in c[k].as_array().into_iter().flatten() {
            if let Some(s) = a.as_str() {
                v.push(s.to_string());
            }
        }
    }
    v
}

fn shell_inner(argv: &[String]) -> Option<String> {
    let sh = argv.first()?;
    if !(sh == "sh" || sh == "bash" || sh.ends_with("/sh") || sh.ends_with("/bash")) {
        return None;
    }
    let i = argv.iter().position(|a| a == "-c" || a == "-ec" || a == "-ce")?;
    argv.get(i + 1).cloned()
}

/// Splits a shell word list with single and double quotes (enough for `curl -s -o /dev/null "http://x"`).
pub fn split_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for ch in s.chars() {
        match quote {
            Some(q) if ch == q => quote = None,
            Some(_) => cur.push(ch),
            None if ch == '\'' || ch == '"' => {
                quote = Some(ch);
                any = true;
            }
            None if ch.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            None => cur.push(ch),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Runs curl from the pod through the traffic model (`traffic::curl`).
fn run_curl(sim: &Sim, namespace: &str, pod: &str, argv: &[String]) -> CommandOutput {
    let source = crate::traffic::Source::Pod {
        namespace: namespace.to_string(),
        name: pod.to_string(),
    };
    let out = crate::traffic::curl::run(sim, source, argv);
    CommandOutput {
        exit_code: out.exit_code,
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

/// A tiny shell for non-curl commands: `echo`, `true`, `false`, `exit N`, `sleep N`, joined by `;`/`&&`.
fn run_shell(argv: &[String]) -> CommandOutput {
    let script = match shell_inner(argv) {
        Some(s) => s,
        None => argv.join(" "),
    };
    let mut stdout = String::new();
    let mut code = 0;
    for part in script.split([';', '\n']).flat_map(|p| p.split("&&")) {
        let words = split_words(part.trim());
        let Some(cmd) = words.first() else {
            continue;
        };
        match cmd.as_str() {
            "echo" => {
                stdout.push_str(&words[1..].join(" "));
                stdout.push('\n');
                code = 0;
            }
            "true" | "sleep" | ":" => code = 0,
            "false" => code = 1,
            "exit" => {
                return CommandOutput {
                    exit_code: words.get(1).and_then(|c| c.parse().ok()).unwrap_or(0),
                    stdout,
                    stderr: String::new(),
                };
            }
            _ => code = 0,
        }
    }
    CommandOutput {
        exit_code: code,
        stdout,
        stderr: String::new(),
    }
}

/// The files a pod's containers see from its Secret volumes, by path (`mountPath/key`): the kubelet's
/// secret volume plugin writes each data key of the Secret as a file (pkg/volume/secret/secret.go).
/// `None` while a mounted Secret does not exist: the kubelet keeps retrying the mount and the container
/// does not start (`MountVolume.SetUp failed ... secret not found`).
fn secret_files(sim: &Sim, pod: &Value) -> Option<std::collections::BTreeMap<String, String>> {
    use base64::Engine as _;
    let mut files = std::collections::BTreeMap::new();
    let volumes = pod["spec"]["volumes"].as_array().cloned().unwrap_or_default();
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let Some(v) = volumes.iter().find(|v| v["name"] == m["name"]) else {
                continue;
            };
            let Some(secret_name) = v["secret"]["secretName"].as_str() else {
                continue;
            };
            let secret = sim.store.get(res("", "secrets"), ns(pod), secret_name)?;
            let dir = m["mountPath"].as_str().unwrap_or("").trim_end_matches('/');
            for (key, val) in secret["data"].as_object().into_iter().flatten() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(val.as_str().unwrap_or(""))
                    .unwrap_or_default();
                files.insert(
                    format!("{dir}/{key}"),
                    String::from_utf8_lossy(&bytes).into_owned(),
                );
            }
        }
    }
    Some(files)
}

/// curl's `-H @file` (curl 7.55+): one header per line of the file; the file comes from a mounted volume.
/// A file the pod cannot see is left as it is, and curl's emulation ignores a header without a colon.
fn expand_header_files(argv: &[String], files: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = argv.iter().peekable();
    while let Some(a) = it.next() {
        if (a == "-H" || a == "--header")
            && let Some(path) = it.peek().and_then(|v| v.strip_prefix('@'))
            && let Some(text) = files.get(path)
        {
            it.next();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                out.extend([a.clone(), line.to_string()]);
            }
            continue;
        }
        out.push(a.clone());
    }
    out
}

fn run_pod_command(
    sim: &Sim,
    pod: &Value,
    files: &std::collections::BTreeMap<String, String>,
) -> CommandOutput {
    if let Some(argv) = curl_argv(pod) {
        return run_curl(sim, ns(pod), name(pod), &expand_header_files(&argv, files));
    }
    let argv = pod["spec"]["containers"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] != "istio-proxy"))
        .map(container_argv)
        .unwrap_or_default();
    run_shell(&argv)
}

fn sidecar_ready(pod: &Value) -> bool {
    if !super::injector::has_sidecar(pod) {
        return true;
    }
    ["containerStatuses", "initContainerStatuses"].iter().any(|k| {
        pod["status"][*k]
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c["name"] == "istio-proxy" && c["ready"] == true))
    })
}

fn finished(job: &Value) -> bool {
    ["Complete", "Failed"]
        .iter()
        .any(|t| util::get_condition(job, t).is_some_and(|c| c["status"] == "True"))
}

pub fn reconcile(sim: &Sim, snap: &Snap, state: &mut State) {
    let now = state.now;
    for job in &snap.jobs {
        if terminating(job) {
            continue;
        }
        let pods = snap.owned_pods(uid(job));
        // Run and finish pods.
        for p in &pods {
            if !pod_active(p) || p["status"]["phase"] != "Running" || !sidecar_ready(p) {
                continue;
            }
            let wants_ambient = super::cni::enrolled(p, snap.ns.labels(ns(p)));
            if wants_ambient && sim.settings.istio.install && annotation(p, super::cni::REDIRECTION).is_none()
            {
                continue;
            }
            let Some(track) = state.ns.pods.get_mut(uid(p)) else {
                continue;
            };
            match (track.job_started, track.job_exit) {
                (None, _) => {
                    let Some(files) = secret_files(sim, p) else {
                        continue;
                    };
                    let out = run_pod_command(sim, p, &files);
                    let mut log = out.stdout;
                    log.push_str(&out.stderr);
                    sim.logs.append(ns(p), name(p), &log);
                    track.job_started = Some(now);
                    track.job_exit = Some(out.exit_code);
                    snap.wake(ns(p), now + sim.settings.latency.job_run_ms);
                }
                (Some(t), Some(code)) if snap.due(ns(p), t + sim.settings.latency.job_run_ms) => {
                    finish_pod(sim, p, code);
                }
                _ => {}
            }
        }
        let completions = job["spec"]["completions"].as_i64().unwrap_or(1);
        let backoff = job["spec"]["backoffLimit"].as_i64().unwrap_or(6);
        let succeeded = pods
            .iter()
            .filter(|p| p["status"]["phase"] == "Succeeded")
            .count() as i64;
        let failed = pods.iter().filter(|p| p["status"]["phase"] == "Failed").count() as i64;
        let active: Vec<&&Value> = pods.iter().filter(|p| pod_active(p)).collect();
        let ready = active.iter().filter(|p| util::pod_ready(p)).count();
        let mut conds = util::conditions(job);
        let mut completion_time = job["status"]["completionTime"].clone();
        if !finished(job) {
            if succeeded >= completions {
                let msg = "Reached expected number of succeeded pods";
                set_condition(
                    &mut conds,
                    "SuccessCriteriaMet",
                    "True",
                    "CompletionsReached",
                    msg,
                    false,
                    None,
                );
                set_condition(
                    &mut conds,
                    "Complete",
                    "True",
                    "CompletionsReached",
                    msg,
                    false,
                    None,
                );
                completion_time = json!(util::now_ts());
                emit(sim, job, false, "Completed", "Job completed", JC);
            } else if failed > backoff {
                let msg = "Job has reached the specified backoff limit";
                set_condition(
                    &mut conds,
                    "FailureTarget",
                    "True",
                    "BackoffLimitExceeded",
                    msg,
                    false,
                    None,
                );
                set_condition(
                    &mut conds,
                    "Failed",
                    "True",
                    "BackoffLimitExceeded",
                    msg,
                    false,
                    None,
                );
                emit(sim, job, true, "BackoffLimitExceeded", msg, JC);
            } else if active.is_empty() && job["spec"]["suspend"].as_bool() != Some(true) {
                create_pod(sim, job);
            }
        }
        for c in conds.iter_mut() {
            if c.get("lastProbeTime").is_none() {
                c["lastProbeTime"] = c["lastTransitionTime"].clone();
            }
        }
        let start = job["status"]["startTime"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(util::now_ts);
        let mut status = json!({
            "startTime": start,
            "active": active.len(),
            "ready": ready,
            "succeeded": succeeded,
            "failed": failed,
            "terminating": pods.iter().filter(|p| terminating(p)).count(),
            "uncountedTerminatedPods": {},
        });
        for k in ["active", "succeeded", "failed"] {
            if status[k] == 0 {
                status.as_object_mut().map(|m| m.remove(k));
            }
        }
        if !conds.is_empty() {
            status["conditions"] = json!(conds);
        }
        if !completion_time.is_null() {
            status["completionTime"] = completion_time;
        }
        if status != job["status"] {
            util::update(sim, res("batch", "jobs"), ns(job), name(job), JC, |o| {
                o["status"] = status.clone();
            });
        }
    }
}

fn create_pod(sim: &Sim, job: &Value) {
    let pod_name = format!("{}-{}", name(job), crate::store::random_suffix(5));
    let mut pod = super::workloads::pod_from_template(
        &job["spec"]["template"],
        ns(job),
        &pod_name,
        job,
        &format!("{}-", name(job)),
    );
    let l = &mut pod["metadata"]["labels"];
    l["job-name"] = json!(name(job));
    l["controller-uid"] = json!(uid(job));
    l["batch.kubernetes.io/job-name"] = json!(name(job));
    l["batch.kubernetes.io/controller-uid"] = json!(uid(job));
    if pod["spec"]["restartPolicy"] == "Always" {
        pod["spec"]["restartPolicy"] = json!("Never");
    }
    match sim.store.create(res("", "pods"), pod, &util::opts(JC)) {
        Ok(_) => emit(
            sim,
            job,
            false,
            "SuccessfulCreate",
            &format!("Created pod: {pod_name}"),
            JC,
        ),
        Err(e) => emit(
            sim,
            job,
            true,
            "FailedCreate",
            &format!("Error creating: {e}"),
            JC,
        ),
    }
}

fn finish_pod(sim: &Sim, p: &Value, code: i32) {
    let ts = util::now_ts();
    let phase = if code == 0 { "Succeeded" } else { "Failed" };
    let terminated = |c: i32, started: &Value| {
        json!({"terminated": {"exitCode": c, "reason": if c == 0 { "Completed" } else { "Error" },
            "startedAt": started, "finishedAt": ts}})
    };
    util::update(sim, res("", "pods"), ns(p), name(p), "kubelet", |o| {
        o["status"]["phase"] = json!(phase);
        for k in ["containerStatuses", "initContainerStatuses"] {
            for c in o["status"][k].as_array_mut().into_iter().flatten() {
                if c["state"].get("running").is_none() {
                    continue;
                }
                let started = c["state"]["running"]["startedAt"].clone();
                let exit = if c["name"] == "istio-proxy" { 0 } else { code };
                c["state"] = terminated(exit, &started);
                c["ready"] = json!(false);
                c["started"] = json!(false);
            }
        }
        for c in o["status"]["conditions"].as_array_mut().into_iter().flatten() {
            if c["type"] == "Ready" || c["type"] == "ContainersReady" {
                c["status"] = json!("False");
                c["reason"] = json!("PodCompleted");
                c["lastTransitionTime"] = json!(ts);
                c.as_object_mut().map(|m| m.remove("message"));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_files_expand_to_one_header_per_line() {
        let files: std::collections::BTreeMap<String, String> = [(
            "/etc/p/headers".to_string(),
            "X-Api-Key: s3cret\nAuthorization: Bearer t\n".to_string(),
        )]
        .into();
        let argv: Vec<String> = [
            "curl",
            "-H",
            "x-a: 1",
            "-H",
            "@/etc/p/headers",
            "-H",
            "@/missing",
            "http://a",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            expand_header_files(&argv, &files),
            [
                "curl",
                "-H",
                "x-a: 1",
                "-H",
                "X-Api-Key: s3cret",
                "-H",
                "Authorization: Bearer t",
                "-H",
                "@/missing",
                "http://a"
            ]
        );
    }

    #[test]
    fn finds_curl_in_command_args_and_shell() {
        let pod = |c: Value| json!({"spec": {"containers": [c]}});
        assert_eq!(
            curl_argv(&pod(json!({"command": ["curl"], "args": ["-s", "http://a.b"]}))).unwrap(),
            vec!["curl", "-s", "http://a.b"]
        );
        assert_eq!(
            curl_argv(&pod(
                json!({"command": ["sh", "-c", "curl -sS -o /dev/null -w '%{http_code}' \"http://x/y z\""]})
            ))
            .unwrap(),
            vec![
                "curl",
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://x/y z"
            ]
        );
        assert!(curl_argv(&pod(json!({"command": ["sleep", "1"]}))).is_none());
    }

    #[test]
    fn tiny_shell() {
        let s = |v: &[&str]| run_shell(&v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        let o = s(&["sh", "-c", "echo hi; exit 3"]);
        assert_eq!((o.exit_code, o.stdout.as_str()), (3, "hi\n"));
        assert_eq!(s(&["false"]).exit_code, 1);
        assert_eq!(s(&["true"]).exit_code, 0);
    }
}
