//! One measurement of a `job` probe: a Kubernetes Job running curl in the source namespace as the given
//! service account, so the request carries that workload's mesh identity (needed for L7
//! AuthorizationPolicy expectations such as "DELETE gets 403").
//!
//! The Job (`probe-<name>-<random>`, labels managed-by / role=probe, `backoffLimit: 0`,
//! `ttlSecondsAfterFinished: 300`, `activeDeadlineSeconds` = the probe timeout) runs
//! `curl -sS -o /dev/null -w '\n__ambient_migrate__ %{http_code} %{exitcode}' -X METHOD -H ... --max-time T URL`
//! (`-i` instead of `-o /dev/null` when the expectation looks at headers or body). The runner waits for
//! the Job's `Complete` or `Failed` condition with a watch and a deadline, reads the pod log, parses the
//! status code and curl's exit code, and always deletes the Job (propagation Background).
//!
//! Classification: a status code -> `Observed::Response`; `000` with curl exit 6/7/28/52/56 (DNS, refused,
//! timeout, empty reply, reset) -> `Observed::NoResponse` (a Failure unless status 0 is expected); a Job
//! that cannot run (create refused, no pod, no output, curl usage error, deadline) -> `Measurement::Error`.
//!
//! Secret header values (see `spec::Header`) are not in the Job: they go into a Secret named like the Job
//! and owned by it, mounted read-only at [`SECRET_MOUNT`], and curl reads them with `-H @file`; deleting the
//! Job deletes the Secret. Other header values are curl arguments.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, Pod, PodSpec, PodTemplateSpec, SecretVolumeSource, Volume, VolumeMount,
};
use kube::api::{ListParams, LogParams, ObjectMeta};
use tokio::time::Instant;

use super::policy::{Measurement, Observed, check};
use super::spec::{Expectation, JobProbe};
use crate::cluster::{Check, Cluster, ClusterError, MANAGED_BY_LABEL, MANAGED_BY_VALUE, ROLE_LABEL};

/// Label naming the probe on its Jobs.
pub const PROBE_LABEL: &str = "ambient-migrate.io/probe";
const MARKER: &str = "__ambient_migrate__";
/// Bytes of a probe pod's log read (`limitBytes`).
const MAX_LOG_BYTES: i64 = 1024 * 1024;

/// A DNS-1123 Job name `probe-<name>-<random>` (at most 63 characters).
pub fn job_name(probe_name: &str) -> String {
    let mut clean: String = probe_name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    clean.truncate(45);
    let clean = clean.trim_matches('-');
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    if clean.is_empty() {
        format!("probe-{suffix}")
    } else {
        format!("probe-{clean}-{suffix}")
    }
}

/// Where a probe Job's secret header lines are mounted from its Secret (the kubelet's secret volume: one
/// file per data key), so their values never appear in the Job object (stored in etcd, shown by
/// `kubectl get job -o yaml`).
pub const SECRET_MOUNT: &str = "/etc/ambient-migrate/probe";
/// The Secret's data key, and the file name under [`SECRET_MOUNT`].
pub const SECRET_KEY: &str = "headers";

/// The secret header lines (`Name: value`, one per line, curl's `-H @file` format); `None` when no header
/// of the probe is secret.
pub fn secret_header_file(probe: &JobProbe) -> Option<String> {
    let lines: String = probe
        .headers
        .0
        .iter()
        .filter(|h| h.secret)
        .map(|h| format!("{}: {}\n", h.name, h.expose()))
        .collect();
    (!lines.is_empty()).then_some(lines)
}

/// The Secret holding a probe Job's secret headers, owned by the Job so that deleting the Job (or its TTL)
/// deletes it too (garbage collection by owner reference).
pub fn secret_object(job: &Job, probe: &JobProbe) -> Option<k8s_openapi::api::core::v1::Secret> {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    let lines = secret_header_file(probe)?;
    Some(k8s_openapi::api::core::v1::Secret {
        metadata: ObjectMeta {
            name: job.metadata.name.clone(),
            namespace: job.metadata.namespace.clone(),
            labels: job.metadata.labels.clone(),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name: job.metadata.name.clone().unwrap_or_default(),
                uid: job.metadata.uid.clone().unwrap_or_default(),
                block_owner_deletion: Some(true),
                controller: Some(false),
            }]),
            ..Default::default()
        },
        data: Some(
            [(
                SECRET_KEY.to_string(),
                k8s_openapi::ByteString(lines.into_bytes()),
            )]
            .into(),
        ),
        type_: Some("Opaque".into()),
        ..Default::default()
    })
}

/// The curl argv (without the leading `curl`).
pub fn curl_args(probe: &JobProbe, expect: &Expectation) -> Vec<String> {
    let mut a: Vec<String> = vec!["-sS".into()];
    if expect.body_contains.is_some() || !expect.header_present.is_empty() || !expect.header_absent.is_empty()
    {
        a.push("-i".into());
    } else {
        a.extend(["-o".into(), "/dev/null".into()]);
    }
    a.extend([
        "-w".into(),
        format!("\\n{MARKER} %{{http_code}} %{{exitcode}}\\n"),
    ]);
    a.extend(["-X".into(), probe.method.clone()]);
    for h in probe.headers.0.iter().filter(|h| !h.secret) {
        a.extend(["-H".into(), format!("{}: {}", h.name, h.expose())]);
    }
    if secret_header_file(probe).is_some() {
        // curl reads one header per line from a file given as `-H @file` (curl 7.55+).
        a.extend(["-H".into(), format!("@{SECRET_MOUNT}/{SECRET_KEY}")]);
    }
    a.extend(["--max-time".into(), probe.timeout.0.as_secs().max(1).to_string()]);
    a.push(probe.url.clone());
    a
}

/// The Job object for one measurement.
pub fn job_object(name: &str, probe_name: &str, probe: &JobProbe, expect: &Expectation) -> Job {
    let labels: BTreeMap<String, String> = [
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
        (ROLE_LABEL.to_string(), "probe".to_string()),
        (PROBE_LABEL.to_string(), label_value(probe_name)),
    ]
    .into();
    let secs = i64::try_from(probe.timeout.0.as_secs().max(1)).unwrap_or(i64::MAX);
    let secret = secret_header_file(probe).is_some();
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(probe.source_namespace.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            ttl_seconds_after_finished: Some(300),
            active_deadline_seconds: Some(secs + 30),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(probe.service_account.clone()),
                    restart_policy: Some("Never".into()),
                    containers: vec![Container {
                        name: "curl".into(),
                        image: Some(probe.image.clone()),
                        command: Some(vec!["curl".into()]),
                        args: Some(curl_args(probe, expect)),
                        volume_mounts: secret.then(|| {
                            vec![VolumeMount {
                                name: "headers".into(),
                                mount_path: SECRET_MOUNT.into(),
                                read_only: Some(true),
                                ..Default::default()
                            }]
                        }),
                        ..Default::default()
                    }],
                    // The Secret is created right after the Job (it is owned by it); the kubelet waits for
                    // it before starting the container.
                    volumes: secret.then(|| {
                        vec![Volume {
                            name: "headers".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(name.to_string()),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }]
                    }),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn label_value(s: &str) -> String {
    let mut v: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    v.truncate(63);
    v.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}

/// What curl's exit code means when no status was received.
pub fn curl_exit_reason(code: i32) -> Option<&'static str> {
    Some(match code {
        6 => "could not resolve host (curl exit 6)",
        7 => "connection refused (curl exit 7)",
        28 => "timeout (curl exit 28)",
        52 => "empty reply (curl exit 52)",
        56 => "connection reset (curl exit 56)",
        35 => "TLS handshake failed (curl exit 35)",
        _ => return None,
    })
}

/// Parses the pod log: `Ok(observation)` or `Err(reason)` when curl's output is not usable.
pub fn parse_output(log: &str) -> Result<Observed, String> {
    let Some(pos) = log.rfind(MARKER) else {
        return Err(format!("no curl result in the pod log: {:?}", tail(log)));
    };
    let before = &log[..pos];
    let mut fields = log[pos + MARKER.len()..].split_whitespace();
    let code: u16 = fields
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("unparsable curl result {:?}", tail(log)))?;
    let exit: i32 = fields.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    if code == 0 {
        return match curl_exit_reason(exit) {
            Some(r) => Ok(Observed::NoResponse {
                reason: r.to_string(),
            }),
            None => Err(format!("curl failed with exit code {exit}: {:?}", tail(before))),
        };
    }
    let (headers, body) = split_included(before);
    Ok(Observed::Response {
        status: code,
        headers,
        body,
    })
}

/// Splits `curl -i` output into headers and body (empty when `-o /dev/null` was used).
fn split_included(out: &str) -> (Vec<(String, String)>, String) {
    let text = out.trim_start_matches(['\r', '\n']);
    if !text.starts_with("HTTP/") {
        return (Vec::new(), String::new());
    }
    let norm = text.replace("\r\n", "\n");
    let (head, body) = norm.split_once("\n\n").unwrap_or((norm.as_str(), ""));
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    (headers, body.trim_end_matches('\n').to_string())
}

fn tail(s: &str) -> String {
    let t = s.trim();
    let start = t.char_indices().rev().nth(300).map(|(i, _)| i).unwrap_or(0);
    t[start..].to_string()
}

/// Runs one measurement; the Job is deleted afterwards whatever happened.
pub async fn measure(
    cluster: &Cluster,
    probe_name: &str,
    probe: &JobProbe,
    expect: &Expectation,
) -> Measurement {
    if cluster.dry_run() {
        return Measurement::Error("dry run: job probes are not run (they would create a Job)".into());
    }
    let name = job_name(probe_name);
    let ns = probe.source_namespace.as_str();
    let api: kube::Api<Job> = cluster.namespaced(ns);
    let job = job_object(&name, probe_name, probe, expect);
    let pp = cluster.post_params();
    let created = match cluster
        .call(&format!("create probe Job {ns}/{name}"), || api.create(&pp, &job))
        .await
    {
        Ok(j) => j,
        Err(e) => {
            return Measurement::Error(format!("probe {probe_name}: cannot create Job {ns}/{name}: {e}"));
        }
    };
    let res = match secret_object(&created, probe) {
        None => run(cluster, &name, probe).await,
        Some(secret) => {
            let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> = cluster.namespaced(ns);
            match cluster
                .call(&format!("create probe Secret {ns}/{name}"), || {
                    secrets.create(&pp, &secret)
                })
                .await
            {
                Ok(_) => run(cluster, &name, probe).await,
                Err(e) => Err(format!(
                    "cannot create the Secret holding its secret headers: {e}"
                )),
            }
        }
    };
    let dp = kube::api::DeleteParams::background();
    if let Err(e) = cluster
        .call(&format!("delete probe Job {ns}/{name}"), || {
            api.delete(&name, &dp)
        })
        .await
        && !e.is_not_found()
    {
        tracing::warn!(job = %name, namespace = ns, error = %e, "could not delete the probe Job (ttlSecondsAfterFinished removes it later)");
    }
    match res {
        Ok(observed) => check(expect, &observed),
        Err(reason) => Measurement::Error(format!("probe {probe_name} (Job {ns}/{name}): {reason}")),
    }
}

async fn run(cluster: &Cluster, name: &str, probe: &JobProbe) -> Result<Observed, String> {
    let ns = probe.source_namespace.as_str();
    let api: kube::Api<Job> = cluster.namespaced(ns);
    let deadline = Instant::now() + probe.timeout.0 + std::time::Duration::from_secs(30);
    let what = format!("probe Job {ns}/{name}");
    cluster
        .wait_until(api, &what, name, deadline, |j: Option<&Job>| {
            let Some(j) = j else {
                return Check::Pending("not created yet".into());
            };
            let conds = j.status.as_ref().and_then(|s| s.conditions.as_ref());
            let has = |t: &str| {
                conds
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == t && c.status == "True")
            };
            if has("Complete") || has("Failed") {
                Check::Done
            } else {
                let active = j.status.as_ref().and_then(|s| s.active).unwrap_or(0);
                Check::Pending(format!("Job not finished ({active} active pods)"))
            }
        })
        .await
        .map_err(|e| e.to_string())?;
    let pods: kube::Api<Pod> = cluster.namespaced(ns);
    let lp = ListParams::default().labels(&format!("job-name={name}"));
    let list = cluster
        .call(&format!("list pods of {what}"), || pods.list(&lp))
        .await
        .map_err(|e| e.to_string())?;
    let pod = list
        .items
        .into_iter()
        .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))
        .ok_or_else(|| "the Job finished without a pod".to_string())?;
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    // Capped like an http probe's body: curl's answer (with `-i`, the response) could be any size. A log
    // cut by the cap loses the result marker and is reported as "no curl result".
    let logp = LogParams {
        container: Some("curl".into()),
        limit_bytes: Some(MAX_LOG_BYTES),
        ..Default::default()
    };
    let log = match cluster
        .call(&format!("read log of pod {ns}/{pod_name}"), || {
            pods.logs(&pod_name, &logp)
        })
        .await
    {
        Ok(l) => l,
        Err(ClusterError::NotFound { .. }) => String::new(),
        Err(e) => return Err(e.to_string()),
    };
    parse_output(&log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_exit() {
        let o = parse_output(&format!("\n{MARKER} 403 0\n")).unwrap();
        assert_eq!(
            o,
            Observed::Response {
                status: 403,
                headers: vec![],
                body: String::new()
            }
        );
        let o = parse_output(&format!("curl: (56) Recv failure\n{MARKER} 000 56\n")).unwrap();
        assert!(matches!(o, Observed::NoResponse { reason } if reason.contains("reset")));
        assert!(parse_output(&format!("{MARKER} 000 2\n")).is_err());
        assert!(parse_output("exec format error").is_err());
    }

    #[test]
    fn parses_included_headers() {
        let log = format!(
            "HTTP/1.1 200 OK\r\nx-request-id: abc\r\ncontent-type: text/plain\r\n\r\nHostname=api-1\n\n{MARKER} 200 0\n"
        );
        match parse_output(&log).unwrap() {
            Observed::Response {
                status,
                headers,
                body,
            } => {
                assert_eq!(status, 200);
                assert!(headers.iter().any(|(k, v)| k == "x-request-id" && v == "abc"));
                assert_eq!(body, "Hostname=api-1");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn job_names_are_dns_labels() {
        let n = job_name("Shop API / DELETE denied!!");
        assert!(n.starts_with("probe-shop-api---delete-denied-"), "{n}");
        assert!(n.len() <= 63);
        assert!(
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert_eq!(label_value("a/b c"), "a-b-c");
    }
}
