//! Layered, validated configuration.
//!
//! Layers, lowest first: the built-in `config/default.toml` (embedded, so the file documents and IS the
//! defaults) < `--config FILE` (TOML or YAML) < environment (`AMBIENT_MIGRATE_<KEY>`, nested with `__`) <
//! command-line overrides (`(key, value)` pairs from [`crate::cli::Cli::to_overrides`]).
//! Every struct rejects unknown keys, and [`Settings::load`] validates the result before anything touches
//! the cluster: every error names the key path, the bad value and the fix (exit code 2).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, ConfigError, FileFormat, Map, Source, Value, ValueKind};
use serde::{Deserialize, Serialize};

/// The embedded defaults: the lowest configuration layer.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

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

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "&'static str")]
        pub enum $name { $($(#[$vm])* $var),+ }

        impl $name {
            /// Every accepted spelling, for error messages and docs.
            pub const VALUES: &'static [&'static str] = &[$($s),+];
            /// The spelling used in configuration files.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $s),+ }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                match s.as_str() {
                    $($s => Ok($name::$var),)+
                    other => Err(format!("invalid value {other:?}: expected one of {}", quoted_list($name::VALUES))),
                }
            }
        }

        impl From<$name> for &'static str {
            fn from(v: $name) -> &'static str { v.as_str() }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

fn quoted_list(values: &[&str]) -> String {
    values
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

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
string_enum! {
    /// What a failed gate does to its namespace.
    OnGateFailure { Rollback = "rollback", Hold = "hold" }
}
string_enum! {
    /// What happens to the policy phase's generated objects: targetRefs twins of sidecar-only policies
    /// (AuthorizationPolicy, RequestAuthentication, WasmPlugin, Telemetry), and HTTPRoutes with per-version
    /// Services translated from VirtualServices and DestinationRule subsets.
    PolicyMigration { Off = "off", Generate = "generate", Apply = "apply" }
}
string_enum! {
    /// A security control whose loss with the sidecars is accepted (`migration.accept_loss`); each value is
    /// documented in config/default.toml.
    AcceptLoss {
        EgressLockdown = "egress-lockdown",
        JwtValidation = "jwt-validation",
        EnvoyfilterAuth = "envoyfilter-auth",
        WasmAuth = "wasm-auth",
    }
}
string_enum! {
    /// A kind of enforcement difference a namespace may migrate with (`migration.policies.accept_differences`).
    AcceptDifference { Outage = "outage", Gap = "gap" }
}
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
    pub accept_loss: Vec<AcceptLoss>,
}

/// Waypoint settings of step 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Waypoint {
    /// Gateway name.
    pub name: String,
    /// Namespace label or Service labels.
    pub scope: WaypointScope,
    /// Services bound when scope = services.
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
    pub accept_differences: Vec<AcceptDifference>,
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

/// `namespaces.<ns>`: what differs for one namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceOverrides {
    /// Migration settings replacing the global ones key by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationOverrides>,
    /// Probes added to the global ones for this namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ProbeSpec>,
}

/// Optional counterpart of [`Migration`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationOverrides {
    #[allow(missing_docs)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waypoint: Option<WaypointOverrides>,
    #[allow(missing_docs)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartOverrides>,
    #[allow(missing_docs)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_gate_failure: Option<OnGateFailure>,
    #[allow(missing_docs)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_unreplaced_l7: Option<bool>,
    #[allow(missing_docs)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<PoliciesOverrides>,
    #[allow(missing_docs)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_loss: Option<Vec<AcceptLoss>>,
}

/// Optional counterpart of [`Waypoint`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct WaypointOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<WaypointScope>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<WaypointActivation>,
}

/// Optional counterpart of [`Restart`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RestartOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployments: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statefulsets: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemonsets: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
}

/// Optional counterpart of [`Policies`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct PoliciesOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridges: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_bridges: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<PolicyMigration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_differences: Option<Vec<AcceptDifference>>,
}

impl Migration {
    fn overridden(&self, o: &MigrationOverrides) -> Migration {
        let mut m = self.clone();
        if let Some(w) = &o.waypoint {
            if let Some(v) = &w.name {
                m.waypoint.name = v.clone();
            }
            if let Some(v) = w.scope {
                m.waypoint.scope = v;
            }
            if let Some(v) = &w.services {
                m.waypoint.services = v.clone();
            }
            if let Some(v) = w.activation {
                m.waypoint.activation = v;
            }
        }
        if let Some(r) = &o.restart {
            m.restart.deployments = r.deployments.unwrap_or(m.restart.deployments);
            m.restart.statefulsets = r.statefulsets.unwrap_or(m.restart.statefulsets);
            m.restart.daemonsets = r.daemonsets.unwrap_or(m.restart.daemonsets);
            m.restart.batch_size = r.batch_size.unwrap_or(m.restart.batch_size);
        }
        if let Some(v) = o.on_gate_failure {
            m.on_gate_failure = v;
        }
        if let Some(v) = o.allow_unreplaced_l7 {
            m.allow_unreplaced_l7 = v;
        }
        if let Some(p) = &o.policies {
            m.policies.bridges = p.bridges.unwrap_or(m.policies.bridges);
            m.policies.keep_bridges = p.keep_bridges.unwrap_or(m.policies.keep_bridges);
            m.policies.migration = p.migration.unwrap_or(m.policies.migration);
            if let Some(v) = &p.accept_differences {
                m.policies.accept_differences = v.clone();
            }
        }
        if let Some(v) = &o.accept_loss {
            m.accept_loss = v.clone();
        }
        m
    }
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
            policy_migration: match m.policies.migration {
                PolicyMigration::Off => p::PolicyMigration::Off,
                PolicyMigration::Generate => p::PolicyMigration::Generate,
                PolicyMigration::Apply => p::PolicyMigration::Apply,
            },
            extra_callers,
            accept_loss: m
                .accept_loss
                .iter()
                .map(|l| {
                    use crate::assess::sidecar_only::Loss;
                    match l {
                        AcceptLoss::EgressLockdown => Loss::EgressLockdown,
                        AcceptLoss::JwtValidation => Loss::JwtValidation,
                        AcceptLoss::EnvoyfilterAuth => Loss::EnvoyfilterAuth,
                        AcceptLoss::WasmAuth => Loss::WasmAuth,
                    }
                })
                .collect(),
            accept_differences: m
                .policies
                .accept_differences
                .iter()
                .map(|a| match a {
                    AcceptDifference::Outage => crate::assess::enforcement::DifferenceKind::Outage,
                    AcceptDifference::Gap => crate::assess::enforcement::DifferenceKind::Gap,
                })
                .collect(),
        }
    }
}

/// Inputs of [`Settings::load`]; `Default` = built-in defaults and the process environment.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// Environment to read; `None` = the process environment (tests inject a map instead).
    pub env: Option<HashMap<String, String>>,
    /// Top layer, e.g. from [`crate::cli::Cli::to_overrides`]; later pairs win.
    pub cli_overrides: Vec<(String, String)>,
}

/// One configuration problem: the key path, what is wrong, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `fleet.concurrency` or `namespaces.shop.probes[0]`.
    pub key: String,
    /// What is wrong, with the offending value.
    pub message: String,
    /// Where the value came from (file, environment variable, command line), when known.
    pub origin: Option<String>,
    /// What to do.
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)?;
        if let Some(o) = &self.origin {
            write!(f, " (from {o})")?;
        }
        if !self.fix.is_empty() {
            write!(f, "; fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// Why the configuration was refused. Exit code 2; nothing was touched.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file could not be read or parsed.
    #[error("config file {path}: {reason}; fix the file or pass another one with --config")]
    File {
        /// The file.
        path: PathBuf,
        /// Parser or I/O message.
        reason: String,
    },
    /// One or more settings are invalid.
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

impl SettingsError {
    /// The problems, empty for file errors.
    pub fn problems(&self) -> &[Problem] {
        match self {
            SettingsError::Invalid(p) => p,
            SettingsError::File { .. } => &[],
        }
    }

    /// The process exit code for this error (docs/design.md §7: 2, usage or configuration).
    pub fn exit_code(&self) -> i32 {
        2
    }
}

/// A layer of flat `(key, value, origin)` entries (environment or command line); list keys are split on `,`.
#[derive(Debug, Clone)]
struct FlatLayer {
    entries: Vec<(String, String, String)>,
}

fn is_list_key(key: &str) -> bool {
    LIST_KEYS.contains(&key)
        || (key.starts_with("namespaces.")
            && (key.ends_with(".migration.waypoint.services") || key.ends_with(".migration.accept_loss")))
}

impl Source for FlatLayer {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, ConfigError> {
        let mut m = Map::new();
        for (key, value, origin) in &self.entries {
            let origin = Some(origin);
            let v = if is_list_key(key) {
                let items: Vec<Value> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::new(origin, s))
                    .collect();
                Value::new(origin, ValueKind::Array(items))
            } else {
                Value::new(origin, value.as_str())
            };
            m.insert(key.clone(), v);
        }
        Ok(m)
    }
}

fn env_layer(env: Option<HashMap<String, String>>) -> FlatLayer {
    let vars: Vec<(String, String)> = match env {
        Some(m) => m.into_iter().collect(),
        None => std::env::vars().collect(),
    };
    let mut entries: Vec<(String, String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !ENV_RESERVED.contains(&k.as_str()))
        .map(|(k, v)| {
            let key = k[ENV_PREFIX.len()..].to_lowercase().replace("__", ".");
            (key, v, format!("environment variable {k}"))
        })
        .collect();
    entries.sort();
    FlatLayer { entries }
}

fn cli_layer(overrides: &[(String, String)]) -> FlatLayer {
    FlatLayer {
        entries: overrides
            .iter()
            .map(|(k, v)| (k.trim().to_string(), v.clone(), format!("command line {k}={v}")))
            .collect(),
    }
}

/// Turns a config-crate error into a [`Problem`] naming the key path.
fn problem_from_config(e: &ConfigError) -> Problem {
    let mut p = problem_from_config_raw(e);
    p.key = dotted(&p.key);
    p
}

/// The config crate joins a list index and a field without a dot (`probes[0]source_namespace`).
fn dotted(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 2);
    let mut prev = ' ';
    for c in key.chars() {
        if prev == ']' && c != '.' && c != '[' {
            out.push('.');
        }
        out.push(c);
        prev = c;
    }
    out
}

fn problem_from_config_raw(e: &ConfigError) -> Problem {
    let (key, origin, inner) = match e {
        ConfigError::At { error, origin, key } => (key.clone(), origin.clone(), error.as_ref()),
        other => (None, None, other),
    };
    match inner {
        ConfigError::Type {
            origin: o2,
            unexpected,
            expected,
            key: k2,
        } => {
            let key = k2.clone().or(key).unwrap_or_default();
            let positive = ["fleet.concurrency", "restart.batch_size"]
                .iter()
                .any(|k| key.ends_with(k));
            let expected = match *expected {
                "an integer" | "an unsigned 32 bit integer" | "u32" if positive => "a positive integer",
                "an integer" | "an unsigned 32 bit integer" | "u32" => "a non-negative integer",
                other => other,
            };
            let shown = unexpected.to_string();
            let shown = shown.strip_prefix("string ").unwrap_or(&shown).to_string();
            Problem {
                message: format!("invalid value {shown}: expected {expected}"),
                fix: format!("set {key} to {expected}"),
                key,
                origin: o2.clone().or(origin),
            }
        }
        ConfigError::NotFound(k) => Problem {
            key: k.clone(),
            message: "missing setting".into(),
            origin,
            fix: "add it (see config/default.toml)".into(),
        },
        other => {
            let msg = other.to_string();
            let mut key = key.unwrap_or_default();
            if let Some(field) = msg
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
            {
                key = if key.is_empty() {
                    field.to_string()
                } else {
                    format!("{key}.{field}")
                };
                let expected = msg
                    .split_once(", expected ")
                    .map(|(_, e)| e.to_string())
                    .unwrap_or_default();
                return Problem {
                    key,
                    message: "unknown setting".into(),
                    origin,
                    fix: if expected.is_empty() {
                        "remove it (see config/default.toml for every setting)".into()
                    } else {
                        format!("remove it or use a known key: {expected}")
                    },
                };
            }
            let fix = if msg.contains("duration") {
                "write a duration like \"30s\", \"5m\" or \"500ms\"".to_string()
            } else if msg.contains("expected one of") {
                "use one of the listed values".to_string()
            } else {
                "see config/default.toml".to_string()
            };
            Problem {
                key,
                message: msg,
                origin,
                fix,
            }
        }
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl Settings {
    /// Loads all layers and validates them; the `Err` is a complete, printable explanation (exit 2).
    pub fn load(opts: LoadOptions) -> Result<Settings, SettingsError> {
        let mut b = Config::builder().add_source(config::File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(path) = &opts.config_file {
            let text = std::fs::read_to_string(path).map_err(|e| SettingsError::File {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let format = Self::file_format(path)?;
            b = b.add_source(config::File::from_str(&text, format));
        }
        b = b
            .add_source(env_layer(opts.env))
            .add_source(cli_layer(&opts.cli_overrides));
        let cfg = b.build().map_err(|e| match (&opts.config_file, &e) {
            (Some(path), ConfigError::FileParse { .. } | ConfigError::Foreign(_)) => SettingsError::File {
                path: path.clone(),
                reason: e.to_string(),
            },
            _ => SettingsError::Invalid(vec![problem_from_config(&e)]),
        })?;
        let raw: serde_json::Value = cfg
            .clone()
            .try_deserialize()
            .map_err(|e| SettingsError::Invalid(vec![problem_from_config(&e)]))?;
        let raw_problems = validate_raw_probes(&raw);
        if !raw_problems.is_empty() {
            return Err(SettingsError::Invalid(raw_problems));
        }
        let settings: Settings = cfg
            .try_deserialize()
            .map_err(|e| SettingsError::Invalid(vec![problem_from_config(&e)]))?;
        let problems = settings.validate();
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(SettingsError::Invalid(problems))
        }
    }

    /// Only the built-in defaults (what `-n NS` alone runs with).
    pub fn defaults() -> Settings {
        Settings::load(LoadOptions {
            env: Some(HashMap::new()),
            ..Default::default()
        })
        .expect("the embedded config/default.toml is valid")
    }

    fn file_format(path: &Path) -> Result<FileFormat, SettingsError> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("toml") => Ok(FileFormat::Toml),
            Some("yaml" | "yml") => Ok(FileFormat::Yaml),
            other => Err(SettingsError::File {
                path: path.to_path_buf(),
                reason: format!(
                    "unsupported extension {:?}: use .toml, .yaml or .yml",
                    other.unwrap_or("")
                ),
            }),
        }
    }

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
            if let Some(m) = &o.migration {
                validate_migration(
                    &format!("namespaces.{ns}.migration"),
                    &self.migration.overridden(m),
                    &mut p,
                );
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

    /// The settings for namespace `ns`: globals plus its overrides (probes are added, not replaced).
    pub fn for_namespace(&self, ns: &str) -> EffectiveSettings {
        let o = self.namespaces.get(ns);
        let migration = match o.and_then(|o| o.migration.as_ref()) {
            Some(m) => self.migration.overridden(m),
            None => self.migration.clone(),
        };
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
fn validate_raw_probes(raw: &serde_json::Value) -> Vec<Problem> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys_get_their_dot_after_an_index() {
        assert_eq!(
            dotted("namespaces.a.probes[0]source_namespace"),
            "namespaces.a.probes[0].source_namespace"
        );
        assert_eq!(dotted("probes[1].name"), "probes[1].name");
        assert_eq!(dotted("x[0][1]"), "x[0][1]");
    }

    #[test]
    fn durations_round_trip() {
        for (s, d) in [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("1m30s", Duration::from_secs(90)),
        ] {
            assert_eq!(parse_duration(s).unwrap(), d, "{s}");
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        for bad in ["", "30", "5 minutes", "m5", "1.5s", "-3s", "10x"] {
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
