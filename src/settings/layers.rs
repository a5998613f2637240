//! The layers (built-in defaults < `--config FILE` < environment < command line), merged by the config
//! crate, and its errors turned into [`Problem`]s that name the key, the value, where it came from and the
//! fix.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use config::{Config, ConfigError, FileFormat, Map, Source, Value, ValueKind};

use super::*;

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
        crate::exit::USAGE
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
        let raw_problems = super::validate::validate_raw_probes(&raw);
        if !raw_problems.is_empty() {
            return Err(SettingsError::Invalid(raw_problems));
        }
        let mut settings: Settings = cfg
            .clone()
            .try_deserialize()
            .map_err(|e| SettingsError::Invalid(vec![problem_from_config(&e)]))?;
        let mut problems = Vec::new();
        let names: Vec<String> = settings.namespaces.keys().cloned().collect();
        for ns in names {
            match merge_migration(&cfg, &settings.migration, &ns) {
                Ok(m) => {
                    settings
                        .namespaces
                        .get_mut(&ns)
                        .expect("listed above")
                        .effective_migration = m
                }
                Err(p) => problems.push(p),
            }
        }
        if !problems.is_empty() {
            return Err(SettingsError::Invalid(problems));
        }
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
}

/// A table of configuration values (with their origins) as a layer of its own.
#[derive(Debug, Clone)]
struct Table(Map<String, Value>);

impl Source for Table {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, ConfigError> {
        Ok(self.0.clone())
    }
}

/// `namespaces.<ns>.migration` merged key by key over the global `migration` by the config crate (the
/// same merge as the layers: tables merge, scalars and lists replace), then deserialized into
/// [`Migration`], so an override has exactly the keys and types of `migration` and its errors name the
/// full key and the layer the value came from. `None` when the namespace overrides nothing there.
fn merge_migration(cfg: &Config, global: &Migration, ns: &str) -> Result<Option<Migration>, Problem> {
    let prefix = format!("namespaces.{ns}.migration");
    let problem = |e: ConfigError| {
        let mut p = problem_from_config(&e);
        p.key = if p.key.is_empty() {
            prefix.clone()
        } else {
            format!("{prefix}.{}", p.key)
        };
        p
    };
    let table = match cfg.get::<Value>(&prefix) {
        Ok(v) => v.into_table().map_err(problem)?,
        Err(ConfigError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(problem(e)),
    };
    let base = Config::try_from(global).map_err(problem)?;
    Config::builder()
        .add_source(base)
        .add_source(Table(table))
        .build()
        .and_then(Config::try_deserialize::<Migration>)
        .map(Some)
        .map_err(problem)
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
}
