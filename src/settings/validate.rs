//! Semantic checks the types cannot express, on the merged settings; every problem, not just the first.

use super::*;
use migrate_core::names::quoted_list;

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl Settings {
    /// Semantic checks the types cannot express; every problem, not just the first.
    pub fn validate(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut push = |key: String, message: String, fix: &str| {
            p.push(Problem {
                key,
                message,
                origin: None,
                fix: fix.to_string(),
            })
        };
        if !is_dns_label(&self.state_namespace) {
            push(
                "state_namespace".into(),
                format!(
                    "invalid value {:?}: expected a namespace name",
                    self.state_namespace
                ),
                "use lowercase letters, digits and '-' (at most 63)",
            );
        }
        if self.field_manager.trim().is_empty() {
            push(
                "field_manager".into(),
                "must not be empty".into(),
                "set a name, e.g. \"ambient-migrate\"",
            );
        }
        let f = &self.fleet;
        for (list, name) in [
            (&f.namespaces, "namespaces"),
            (&f.exclude, "exclude"),
            (&f.canary, "canary"),
        ] {
            for (i, ns) in list.iter().enumerate() {
                if !is_dns_label(ns) {
                    push(
                        format!("fleet.{name}[{i}]"),
                        format!("invalid value {ns:?}: expected a namespace name"),
                        "use lowercase letters, digits and '-' (at most 63)",
                    );
                }
                if list[..i].contains(ns) {
                    push(
                        format!("fleet.{name}[{i}]"),
                        format!("{ns:?} is listed twice"),
                        "list it once",
                    );
                }
            }
        }
        if f.concurrency == 0 {
            push(
                "fleet.concurrency".into(),
                "invalid value 0: expected a positive integer".into(),
                "set fleet.concurrency to 1 or more (1 = one namespace at a time)",
            );
        }
        for (i, c) in f.canary.iter().enumerate() {
            if f.exclude.contains(c) {
                push(
                    format!("fleet.canary[{i}]"),
                    format!("canary {c:?} is also in fleet.exclude"),
                    "remove it from one of the two lists",
                );
            } else if !f.namespaces.is_empty() && !f.namespaces.contains(c) {
                push(
                    format!("fleet.canary[{i}]"),
                    format!(
                        "canary {c:?} is not in the fleet (fleet.namespaces = {:?})",
                        f.namespaces
                    ),
                    "add it to fleet.namespaces (or -n) or remove it from fleet.canary",
                );
            }
        }
        for (ns, _) in self.namespaces.iter() {
            if !is_dns_label(ns) {
                push(
                    format!("namespaces.{ns}"),
                    format!("invalid namespace name {ns:?}"),
                    "use lowercase letters, digits and '-' (at most 63)",
                );
            }
        }
        for (key, d) in [
            ("waypoint_ready", self.timeouts.waypoint_ready),
            ("rollout", self.timeouts.rollout),
            ("step", self.timeouts.step),
            ("rollback", self.timeouts.rollback),
            ("api_request", self.timeouts.api_request),
            ("lease", self.timeouts.lease),
            ("shutdown", self.timeouts.shutdown),
        ] {
            if d.is_zero() {
                push(
                    format!("timeouts.{key}"),
                    "invalid duration \"0s\": must be longer than zero".into(),
                    "set a duration like \"30s\" or \"5m\"",
                );
            }
        }
        if self.reports.dir.as_os_str().is_empty() {
            push(
                "reports.dir".into(),
                "must not be empty".into(),
                "set a directory, e.g. \"reports\"",
            );
        }
        if self.log.level.trim().is_empty() {
            push(
                "log.level".into(),
                "must not be empty".into(),
                "use \"info\", \"debug\", ...",
            );
        }
        validate_migration("migration", &self.migration, &mut p);
        validate_probes("probes", &self.probes, &mut p);
        validate_job_probes("probes", &self.probes, &self.job_probes, &mut p);
        for (ns, o) in &self.namespaces {
            if let Some(m) = &o.effective_migration {
                validate_migration(&format!("namespaces.{ns}.migration"), m, &mut p);
            }
            validate_job_probes(
                &format!("namespaces.{ns}.probes"),
                &o.probes,
                &self.job_probes,
                &mut p,
            );
            if !o.probes.is_empty() {
                let all: Vec<ProbeSpec> = self.probes.iter().chain(&o.probes).cloned().collect();
                let mut q = Vec::new();
                validate_probes(&format!("namespaces.{ns}.probes"), &all, &mut q);
                // indexes past the global list refer to the namespace's own list
                let n = self.probes.len();
                for mut problem in q {
                    if let Some(rest) = problem.key.strip_prefix(&format!("namespaces.{ns}.probes[")) {
                        let (idx, tail) = rest.split_once(']').unwrap_or(("0", ""));
                        let idx: usize = idx.parse().unwrap_or(0);
                        if idx < n {
                            continue; // already reported for the global list
                        }
                        problem.key = format!("namespaces.{ns}.probes[{}]{tail}", idx - n);
                    }
                    p.push(problem);
                }
            }
        }
        p
    }
}

/// Job probes whose service account or image is not allow-listed.
fn validate_job_probes(prefix: &str, probes: &[ProbeSpec], allow: &JobProbes, p: &mut Vec<Problem>) {
    for (i, probe) in probes.iter().enumerate() {
        let crate::probes::spec::ProbeKind::Job(j) = &probe.kind else {
            continue;
        };
        if !allow.allows_service_account(&j.source_namespace, &j.service_account) {
            p.push(Problem {
                key: format!("{prefix}[{i}].service_account"),
                message: format!(
                    "probe {:?} runs as service account {:?} in {:?}, which is not in job_probes.allowed_service_accounts {:?}",
                    probe.name, j.service_account, j.source_namespace, allow.allowed_service_accounts
                ),
                origin: None,
                fix: "use an allowed service account, or add it (`name` or `namespace/name`) to job_probes.allowed_service_accounts".into(),
            });
        }
        if !allow.allows_image(&j.image) {
            p.push(Problem {
                key: format!("{prefix}[{i}].image"),
                message: format!(
                    "probe {:?} uses image {:?}, which is not in job_probes.allowed_images {:?}",
                    probe.name, j.image, allow.allowed_images
                ),
                origin: None,
                fix: "use an allowed image, or add it (repository, or an exact tag/digest) to job_probes.allowed_images".into(),
            });
        }
    }
}

fn validate_migration(prefix: &str, m: &Migration, p: &mut Vec<Problem>) {
    if !is_dns_label(&m.waypoint.name) {
        p.push(Problem {
            key: format!("{prefix}.waypoint.name"),
            message: format!("invalid value {:?}: expected a Gateway name", m.waypoint.name),
            origin: None,
            fix: "use lowercase letters, digits and '-' (at most 63)".into(),
        });
    }
    if m.waypoint.scope == WaypointScope::Services && m.waypoint.services.is_empty() {
        p.push(Problem {
            key: format!("{prefix}.waypoint.services"),
            message: "scope is \"services\" but no Service is listed".into(),
            origin: None,
            fix: format!("list the Services in {prefix}.waypoint.services or set scope = \"namespace\""),
        });
    }
    for (i, s) in m.waypoint.services.iter().enumerate() {
        if !is_dns_label(s) {
            p.push(Problem {
                key: format!("{prefix}.waypoint.services[{i}]"),
                message: format!("invalid value {s:?}: expected a Service name"),
                origin: None,
                fix: "use lowercase letters, digits and '-' (at most 63)".into(),
            });
        }
    }
    if m.restart.batch_size == 0 {
        p.push(Problem {
            key: format!("{prefix}.restart.batch_size"),
            message: "invalid value 0: expected a positive integer".into(),
            origin: None,
            fix: "set it to 1 or more".into(),
        });
    }
    if m.policies.keep_bridges && !m.policies.bridges {
        p.push(Problem {
            key: format!("{prefix}.policies.keep_bridges"),
            message: "keep_bridges = true needs bridges = true".into(),
            origin: None,
            fix: "enable policies.bridges or disable policies.keep_bridges".into(),
        });
    }
}

/// Keys a probe may carry (docs/design.md §5; `probes::spec::ProbeSpec` and its `http` / `job` kinds). The probe
/// types use `#[serde(flatten)]`, which cannot deny unknown fields, so the raw tree is checked here.
const PROBE_KEYS_COMMON: &[&str] = &["name", "kind", "expect", "policy", "l7", "schedule"];
const PROBE_KEYS_HTTP: &[&str] = &[
    "url",
    "method",
    "headers",
    "body",
    "proxy",
    "source",
    "secret_headers",
];
const PROBE_KEYS_JOB: &[&str] = &[
    "source_namespace",
    "service_account",
    "url",
    "method",
    "headers",
    "image",
    "timeout",
    "secret_headers",
];
const EXPECT_KEYS: &[&str] = &["status", "body_contains", "header_present", "header_absent"];
const POLICY_KEYS: &[&str] = &[
    "interval",
    "count",
    "consecutive_successes",
    "failure_limit",
    "consecutive_failure_limit",
    "error_limit",
    "timeout",
    "initial_delay",
];
const SCHEDULE_KEYS: &[&str] = &["after_steps", "during_restart", "after_rollback"];

fn unknown_keys(
    key: &str,
    obj: &serde_json::Map<String, serde_json::Value>,
    known: &[&str],
    p: &mut Vec<Problem>,
) {
    for k in obj.keys() {
        if !known.contains(&k.as_str()) {
            p.push(Problem {
                key: format!("{key}.{k}"),
                message: "unknown setting".into(),
                origin: None,
                fix: format!("remove it or use a known key: one of {}", quoted_list(known)),
            });
        }
    }
}

/// Checks the probe lists of the merged, untyped configuration: structure, unknown keys, and an explicit
/// expectation on every probe (a probe that expects nothing would pass on any answer).
pub(super) fn validate_raw_probes(raw: &serde_json::Value) -> Vec<Problem> {
    let mut p = Vec::new();
    let mut lists = vec![("probes".to_string(), raw.get("probes"))];
    if let Some(nss) = raw.get("namespaces").and_then(|n| n.as_object()) {
        for (ns, o) in nss {
            lists.push((format!("namespaces.{ns}.probes"), o.get("probes")));
        }
    }
    for (prefix, list) in lists {
        let Some(list) = list else { continue };
        let Some(items) = list.as_array() else {
            p.push(Problem {
                key: prefix,
                message: "expected a list of probes".into(),
                origin: None,
                fix: "write probes as [[probes]] tables (TOML) or a YAML list".into(),
            });
            continue;
        };
        for (i, probe) in items.iter().enumerate() {
            let key = format!("{prefix}[{i}]");
            let Some(obj) = probe.as_object() else {
                p.push(Problem {
                    key,
                    message: "expected a table with name, kind, url and expect".into(),
                    origin: None,
                    fix: "see the [[probes]] documentation in config/default.toml".into(),
                });
                continue;
            };
            let name = obj.get("name").and_then(|n| n.as_str()).unwrap_or("").to_string();
            let kind = obj.get("kind").and_then(|k| k.as_str()).unwrap_or("");
            let kind_keys = match kind {
                "http" => PROBE_KEYS_HTTP,
                "job" => PROBE_KEYS_JOB,
                other => {
                    p.push(Problem {
                        key: format!("{key}.kind"),
                        message: if other.is_empty() {
                            format!("probe {name:?} has no kind")
                        } else {
                            format!("invalid value {other:?}: expected one of \"http\", \"job\"")
                        },
                        origin: None,
                        fix: "set kind = \"http\" (request from the runner) or \"job\" (curl Job inside the mesh)"
                            .into(),
                    });
                    &[][..]
                }
            };
            if !kind_keys.is_empty() {
                let known: Vec<&str> = PROBE_KEYS_COMMON.iter().chain(kind_keys).copied().collect();
                unknown_keys(&key, obj, &known, &mut p);
            }
            for (sub, known) in [
                ("policy", POLICY_KEYS),
                ("schedule", SCHEDULE_KEYS),
                ("expect", EXPECT_KEYS),
            ] {
                if let Some(o) = obj.get(sub).and_then(|v| v.as_object()) {
                    unknown_keys(&format!("{key}.{sub}"), o, known, &mut p);
                }
            }
            let has_expectation = obj.get("expect").and_then(|e| e.as_object()).is_some_and(|e| {
                EXPECT_KEYS
                    .iter()
                    .any(|k| e.get(*k).is_some_and(|v| !v.is_null()))
            });
            if !has_expectation {
                p.push(Problem {
                    key: key.clone(),
                    message: format!("probe {name:?} has no expectation"),
                    origin: None,
                    fix: "set expect.status, expect.body_contains, expect.header_present or expect.header_absent"
                        .into(),
                });
            }
        }
    }
    p
}

/// Typed probe checks: names present and unique within the list a namespace runs.
fn validate_probes(prefix: &str, probes: &[ProbeSpec], p: &mut Vec<Problem>) {
    let mut names: Vec<&str> = Vec::new();
    for (i, probe) in probes.iter().enumerate() {
        let key = format!("{prefix}[{i}].name");
        if probe.name.trim().is_empty() {
            p.push(Problem {
                key,
                message: "probe has no name".into(),
                origin: None,
                fix: "give every probe a unique name".into(),
            });
        } else if names.contains(&probe.name.as_str()) {
            p.push(Problem {
                key,
                message: format!("probe name {:?} is used twice", probe.name),
                origin: None,
                fix: "give every probe a unique name (global and per-namespace probes run together)".into(),
            });
        }
        names.push(&probe.name);
    }
}
