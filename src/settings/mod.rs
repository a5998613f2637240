//! Layered, validated configuration.
//!
//! Layers, lowest first: the built-in `config/default.toml` (embedded, so the file documents and IS the
//! defaults) < `--config FILE` (TOML or YAML) < environment (`AMBIENT_MIGRATE_<KEY>`, nested with `__`) <
//! command-line overrides (`(key, value)` pairs from [`crate::cli::Cli::to_overrides`]).
//! Every struct rejects unknown keys, and [`Settings::load`] validates the result before anything touches
//! the cluster: every error names the key path, the bad value and the fix (exit code 2).
//!
//! This module is the model (the types the configuration deserializes into; enums shared with the plan
//! and reports come from `migrate-core`); [`layers`] reads and merges the layers, [`validate`] checks what
//! the types cannot express.

mod layers;
mod validate;

pub use layers::{LoadOptions, Problem, SettingsError};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use migrate_core::string_enum;
use serde::{Deserialize, Serialize};

pub use crate::assess::enforcement::DifferenceKind;
pub use crate::assess::plan::PolicyMigration;
pub use crate::assess::sidecar_only::Loss;

/// The embedded defaults: the lowest configuration layer.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Prefix of environment variables read as settings (`AMBIENT_MIGRATE_FLEET__CONCURRENCY=4`).
pub const ENV_PREFIX: &str = "AMBIENT_MIGRATE_";

/// Environment variables with the prefix that are not settings (read by the CLI instead).
const ENV_RESERVED: &[&str] = &["AMBIENT_MIGRATE_CONFIG"];

/// Keys whose value is a list; from the environment and the command line they are comma separated.
pub const LIST_KEYS: &[&str] = &[
    "fleet.namespaces",
    "fleet.exclude",
    "fleet.canary",
    "migration.waypoint.services",
    "migration.accept_loss",
    "migration.policies.accept_differences",
];

pub use crate::probes::spec::ProbeSpec;

string_enum! {
    /// Order of the fleet's waves after the canaries.
    FleetOrder { AsListed = "as-listed", CallersFirst = "callers-first" }
}
string_enum! {
    /// What a namespace blocked by preflight does to the fleet.
    OnBlocked { Skip = "skip", Stop = "stop" }
}
string_enum! {
    /// Where the `istio.io/use-waypoint` label goes in step 1.
    WaypointScope { Namespace = "namespace", Services = "services" }
}
string_enum! {
    /// When step 1 (activate waypoint) runs relative to the other steps.
    WaypointActivation {
        BeforeAmbient = "before-ambient",
        AfterRestart = "after-restart",
        WhenCallersAmbient = "when-callers-ambient",
    }
}
pub use crate::steps::OnGateFailure;
string_enum! {
    /// Log line format on stderr.
    LogFormat { Text = "text", Json = "json" }
}

pub use crate::probes::spec::parse_duration;

/// Formats a duration the way [`parse_duration`] reads it (`"2m"`, `"1500ms"`).
pub fn format_duration(d: Duration) -> String {
    crate::probes::spec::Dur(d).to_string()
}

/// serde adapter: durations as human strings.
pub mod human_duration {
    use super::*;

    /// Writes `"1m30s"`.
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    /// Reads `"1m30s"`.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map_err(|e| serde::de::Error::custom(e.to_string()))
    }
}

/// The whole configuration after layering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Namespace of the journals, backups and Lease.
    pub state_namespace: String,
    /// Field manager of every write.
    pub field_manager: String,
    /// Which namespaces, in which order.
    pub fleet: Fleet,
    /// How each namespace is migrated.
    pub migration: Migration,
    /// Deadlines.
    pub timeouts: Timeouts,
    /// Probes run as gates in every namespace.
    #[serde(default)]
    pub probes: Vec<ProbeSpec>,
    /// Per-namespace overrides, by namespace name.
    #[serde(default)]
    pub namespaces: BTreeMap<String, NamespaceOverrides>,
    /// What a Job probe may run as: its service account and image must be allow-listed here.
    #[serde(default)]
    pub job_probes: JobProbes,
    /// Report files.
    pub reports: Reports,
    /// Logging.
    pub log: Log,
}

/// Fleet selection and waves (docs/design.md §6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// Explicit namespaces, in order.
    pub namespaces: Vec<String>,
    /// Label selector for namespaces ("" = none).
    pub selector: String,
    /// Never touched.
    pub exclude: Vec<String>,
    /// Migrated first, alone.
    pub canary: Vec<String>,
    /// Parallel namespaces per wave.
    pub concurrency: u32,
    /// Failures tolerated before no new namespace starts.
    pub max_failed_namespaces: u32,
    /// Wave order.
    pub order: FleetOrder,
    /// A blocked namespace is skipped (the others migrate) or stops the whole fleet.
    #[serde(default = "default_on_blocked")]
    pub on_blocked: OnBlocked,
}

fn default_on_blocked() -> OnBlocked {
    OnBlocked::Skip
}

/// How one namespace is migrated (overridable per namespace).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Migration {
    /// Waypoint binding.
    pub waypoint: Waypoint,
    /// Step 4 restarts.
    pub restart: Restart,
    /// Rollback or hold on a failed gate.
    pub on_gate_failure: OnGateFailure,
    /// Allow deleting L7 policies with no waypoint replacement.
    pub allow_unreplaced_l7: bool,
    /// Bridges and twins (docs/design.md §3.1).
    pub policies: Policies,
    /// Security controls the sidecars enforced whose loss is accepted (they then warn, not block).
    #[serde(default)]
    pub accept_loss: Vec<Loss>,
}

/// Waypoint settings of step 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Waypoint {
    /// Gateway name.
    pub name: String,
    /// Namespace label or Service labels.
    pub scope: WaypointScope,
    /// Services bound when scope = services. (Defaulted: the config crate drops empty lists when it
    /// re-reads the global `migration` to merge a namespace's overrides over it.)
    #[serde(default)]
    pub services: Vec<String>,
    /// When step 1 runs.
    pub activation: WaypointActivation,
}

/// Workload kinds restarted in step 4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    /// Restart Deployments.
    pub deployments: bool,
    /// Restart StatefulSets.
    pub statefulsets: bool,
    /// Restart DaemonSets.
    pub daemonsets: bool,
    /// Workloads restarted at once.
    pub batch_size: u32,
}

/// Policy bridges and twins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// Temporary L4 bridge policies, created at step 1 before the waypoint is bound.
    pub bridges: bool,
    /// Keep bridges after step 5.
    pub keep_bridges: bool,
    /// The policy phase (twins, VirtualService to HTTPRoute): off, generate, apply.
    pub migration: PolicyMigration,
    /// Enforcement differences (outage, gap) that do not block the namespace.
    #[serde(default)]
    pub accept_differences: Vec<DifferenceKind>,
}

/// Deadlines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Waypoint ready.
    #[serde(with = "human_duration")]
    pub waypoint_ready: Duration,
    /// One rollout.
    #[serde(with = "human_duration")]
    pub rollout: Duration,
    /// One step, gates included.
    #[serde(with = "human_duration")]
    pub step: Duration,
    /// One namespace's rollback.
    #[serde(with = "human_duration")]
    pub rollback: Duration,
    /// One API request.
    #[serde(with = "human_duration")]
    pub api_request: Duration,
    /// Duration of the fleet Lease (renewed every third of it). A run killed without releasing it blocks
    /// the next run (exit 5) until it expires; whole seconds, at least 1.
    #[serde(with = "human_duration", default = "default_lease")]
    pub lease: Duration,
    /// How long a SIGTERM may take to bring in-flight namespaces to a safe state (their running step is
    /// abandoned and they roll back within it); then the process exits with code 3.
    #[serde(with = "human_duration", default = "default_shutdown")]
    pub shutdown: Duration,
}

fn default_lease() -> Duration {
    Duration::from_secs(30)
}

fn default_shutdown() -> Duration {
    Duration::from_secs(120)
}

/// Report files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reports {
    /// Output directory.
    pub dir: PathBuf,
    /// Write the JSON report.
    pub json: bool,
    /// Write the JUnit XML report.
    pub junit: bool,
    /// Write the Markdown summary.
    pub markdown: bool,
    /// Append the Markdown summary to `$GITHUB_STEP_SUMMARY` when set.
    pub github_step_summary: bool,
    /// Minimum interval between unchanged progress lines per namespace.
    #[serde(with = "human_duration")]
    pub progress_interval: Duration,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// text or json.
    pub format: LogFormat,
    /// Level or filter directive.
    pub level: String,
}

/// `job_probes`: allow lists checked at config validation, before any request. A probe Job runs code (its
/// image) as an identity (its service account) in its source namespace; whoever can edit the config must
/// not be able to pick any identity or image the runner's RBAC could create Jobs with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobProbes {
    /// Service accounts a probe Job may use: `name` (in any probe namespace) or `namespace/name`.
    pub allowed_service_accounts: Vec<String>,
    /// Images a probe Job may use: an entry without tag or digest allows any tag or digest of that
    /// repository (`curlimages/curl` allows `curlimages/curl:8.11.1` and `curlimages/curl@sha256:...`);
    /// an entry with a tag or digest allows exactly that reference.
    pub allowed_images: Vec<String>,
}

impl Default for JobProbes {
    fn default() -> Self {
        JobProbes {
            allowed_service_accounts: vec!["default".into()],
            allowed_images: vec![image_repository(crate::probes::spec::DEFAULT_JOB_IMAGE).to_string()],
        }
    }
}

/// The repository of an image reference (tag and digest removed; a registry port is kept).
pub fn image_repository(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

impl JobProbes {
    /// Whether a probe Job in `namespace` may run as `service_account`.
    pub fn allows_service_account(&self, namespace: &str, service_account: &str) -> bool {
        self.allowed_service_accounts
            .iter()
            .any(|a| a == service_account || *a == format!("{namespace}/{service_account}"))
    }

    /// Whether a probe Job may run `image`.
    pub fn allows_image(&self, image: &str) -> bool {
        self.allowed_images
            .iter()
            .any(|a| a == image || (image_repository(a) == a.as_str() && image_repository(image) == a))
    }
}

/// `namespaces.<ns>`: what differs for one namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceOverrides {
    /// Any subset of `migration`, as written. The config crate merges it key by key over the global
    /// `migration` when the settings load (`layers::merge_migration`); the result is
    /// [`NamespaceOverrides::effective_migration`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<serde_json::Value>,
    /// Probes added to the global ones for this namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ProbeSpec>,
    /// The global `migration` with this namespace's overrides merged in (set by [`Settings::load`];
    /// `None` when the namespace overrides nothing in `migration`).
    #[serde(skip)]
    pub effective_migration: Option<Migration>,
}

/// The settings that apply to one namespace: globals with its `namespaces.<ns>` overrides merged in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EffectiveSettings {
    /// The namespace.
    pub namespace: String,
    /// Whether it is a canary.
    pub canary: bool,
    /// Merged migration settings.
    pub migration: Migration,
    /// Deadlines (global).
    pub timeouts: Timeouts,
    /// Global probes followed by the namespace's own.
    pub probes: Vec<ProbeSpec>,
    /// State namespace (global).
    pub state_namespace: String,
    /// Field manager (global).
    pub field_manager: String,
}

impl EffectiveSettings {
    /// The options of `assess::plan` for this namespace. `when-callers-ambient` plans step 1 in the seed's
    /// position; deferring it until the callers are ambient is the fleet runner's job.
    pub fn plan_options(&self) -> crate::assess::plan::PlanOptions {
        use crate::assess::plan as p;
        let m = &self.migration;
        let mut extra_callers: Vec<String> = self
            .probes
            .iter()
            .filter_map(|probe| match probe.caller_and_target() {
                (Some(caller), Some(target)) if target == self.namespace && caller != self.namespace => {
                    Some(caller)
                }
                _ => None,
            })
            .collect();
        extra_callers.sort();
        extra_callers.dedup();
        p::PlanOptions {
            waypoint_name: m.waypoint.name.clone(),
            waypoint_scope: match m.waypoint.scope {
                WaypointScope::Namespace => p::WaypointScope::Namespace,
                WaypointScope::Services => p::WaypointScope::Services(m.waypoint.services.clone()),
            },
            activation_order: match m.waypoint.activation {
                WaypointActivation::AfterRestart => p::ActivationOrder::AfterRestart,
                WaypointActivation::BeforeAmbient | WaypointActivation::WhenCallersAmbient => {
                    p::ActivationOrder::BeforeAmbient
                }
            },
            restart_kinds: p::RestartKinds {
                deployments: m.restart.deployments,
                statefulsets: m.restart.statefulsets,
                daemonsets: m.restart.daemonsets,
            },
            batch_size: m.restart.batch_size as usize,
            allow_unreplaced_l7: m.allow_unreplaced_l7,
            bridges: m.policies.bridges,
            keep_bridges: m.policies.keep_bridges,
            policy_migration: m.policies.migration,
            extra_callers,
            accept_loss: m.accept_loss.clone(),
            accept_differences: m.policies.accept_differences.clone(),
        }
    }
}

impl Settings {
    /// The settings for namespace `ns`: globals plus its overrides (probes are added, not replaced).
    pub fn for_namespace(&self, ns: &str) -> EffectiveSettings {
        let o = self.namespaces.get(ns);
        let migration = o
            .and_then(|o| o.effective_migration.clone())
            .unwrap_or_else(|| self.migration.clone());
        let mut probes = self.probes.clone();
        if let Some(o) = o {
            probes.extend(o.probes.iter().cloned());
        }
        EffectiveSettings {
            namespace: ns.to_string(),
            canary: self.fleet.canary.iter().any(|c| c == ns),
            migration,
            timeouts: self.timeouts.clone(),
            probes,
            state_namespace: self.state_namespace.clone(),
            field_manager: self.field_manager.clone(),
        }
    }

    /// Short stable digest of the effective settings (FNV-1a 64 of their JSON), recorded in reports so two
    /// runs can be compared.
    pub fn digest(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in json.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("fnv1a64:{h:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        for (s, d) in [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5s", Duration::from_millis(1500)),
            ("5 minutes", Duration::from_secs(300)),
        ] {
            assert_eq!(parse_duration(s).unwrap(), d, "{s}");
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        for bad in ["", "30", "m5", "-3s", "10x", "2d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn job_probe_allow_lists_match_names_and_image_repositories() {
        let a = JobProbes {
            allowed_service_accounts: vec!["default".into(), "web/prober".into()],
            allowed_images: vec!["curlimages/curl".into(), "registry:5000/tools/curl:8.1".into()],
        };
        assert!(a.allows_service_account("any", "default"));
        assert!(a.allows_service_account("web", "prober"));
        assert!(!a.allows_service_account("kube-system", "prober"));
        assert!(a.allows_image("curlimages/curl"));
        assert!(a.allows_image("curlimages/curl:8.11.1"));
        assert!(a.allows_image("curlimages/curl@sha256:0123"));
        assert!(a.allows_image("registry:5000/tools/curl:8.1"));
        assert!(!a.allows_image("registry:5000/tools/curl:8.2"));
        assert!(!a.allows_image("evil/curl"));
        assert!(!a.allows_image("curlimages/curl-evil"));
        assert_eq!(
            image_repository("registry:5000/tools/curl"),
            "registry:5000/tools/curl"
        );
        assert!(JobProbes::default().allows_image(crate::probes::spec::DEFAULT_JOB_IMAGE));
    }

    #[test]
    fn embedded_defaults_are_valid_and_complete() {
        let s = Settings::defaults();
        assert_eq!(s.state_namespace, "ambient-migrate");
        assert_eq!(s.fleet.concurrency, 2);
        assert_eq!(s.timeouts.rollout, Duration::from_secs(600));
        assert_eq!(s.migration.waypoint.activation, WaypointActivation::BeforeAmbient);
        assert!(s.probes.is_empty());
        assert!(s.digest().starts_with("fnv1a64:"));
    }
}
