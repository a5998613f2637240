//! Command-line definitions (clap derive). Parsing only: `main` executes the commands.
//!
//! The flags are the top configuration layer: [`Cli::to_overrides`] turns them into `(key, value)` pairs that
//! [`crate::settings::Settings::load`] applies above the config file and the environment, so every flag has a
//! setting with the same meaning (`--concurrency 3` is `fleet.concurrency = 3`).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{ArgAction, CommandFactory, Parser, Subcommand, ValueEnum};

/// Exit code for usage and configuration errors; clap's own usage errors use the same code.
pub const EXIT_USAGE: i32 = crate::exit::USAGE;

/// `ambient-migrate`: move Istio namespaces from sidecars to ambient mode, gated and reversible.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ambient-migrate",
    version,
    about = "Moves Istio namespaces from sidecars to ambient mode with health gates, backups and automatic rollback",
    after_help = "Exit codes: 0 all migrated and validated; 1 a namespace failed a gate and was rolled back (or held) \
                  cleanly; 2 usage or configuration error, nothing touched; 3 rollback failed or state \
                  inconsistent, a human is needed; 4 preflight blocked, nothing touched; 5 another run holds the lock."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,

    /// Configuration file (TOML or YAML, by extension); layered over the built-in defaults.
    #[arg(long, global = true, env = "AMBIENT_MIGRATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster service account).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use (default: the current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,

    /// Namespace to migrate (repeatable, or comma separated); sets `fleet.namespaces`.
    #[arg(
        short = 'n',
        long = "namespace",
        global = true,
        value_name = "NS",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,

    /// Label selector choosing the fleet's namespaces (e.g. `mesh-migration=wave1`); sets `fleet.selector`.
    #[arg(long, short = 'l', global = true, value_name = "SELECTOR")]
    pub selector: Option<String>,

    /// Canary namespace, migrated first and alone (repeatable); sets `fleet.canary`.
    #[arg(long, global = true, value_name = "NS", value_delimiter = ',')]
    pub canary: Vec<String>,

    /// Namespaces migrated at the same time after the canaries; sets `fleet.concurrency`.
    #[arg(long, global = true, value_name = "N")]
    pub concurrency: Option<u32>,

    /// Format of the result printed on stdout.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Format of the logs written to stderr; sets `log.format`.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// More logs (-v debug, -vv trace); sets `log.level`.
    #[arg(short = 'v', long = "verbose", global = true, action = ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Fewer logs (-q warnings only, -qq errors only); sets `log.level`.
    #[arg(short = 'q', long = "quiet", global = true, action = ArgAction::Count)]
    pub quiet: u8,

    /// Server-side dry run of every mutation (`dryRun=All`): admission runs, nothing is persisted.
    #[arg(long, global = true)]
    pub dry_run: bool,

    /// Directory for the JSON, JUnit and Markdown reports; sets `reports.dir`.
    #[arg(long, global = true, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,

    /// Any setting, by its key path (repeatable), e.g. `--set timeouts.rollout=15m`. Applied last.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
}

/// The subcommands (docs/design.md §7).
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Assess the fleet and print the plan, blockers and warnings; writes nothing to the cluster.
    Plan {
        /// Also write every generated fix (targetRefs twins, waypoint admission, a missing waypoint Gateway)
        /// as YAML files to this directory.
        #[arg(long, value_name = "DIR")]
        fixes_dir: Option<PathBuf>,
    },
    /// Migrate the fleet: canaries first, then waves; roll back a namespace when a gate fails.
    Run,
    /// Print the journal of every namespace of the fleet (or the ones given with -n).
    Status,
    /// Roll a namespace back (requires -n), to the state before step K or completely.
    Rollback {
        /// Undo the steps after K (1..=6); without it, undo every step.
        #[arg(long, value_name = "K", value_parser = clap::value_parser!(u8).range(0..=6))]
        to_step: Option<u8>,
        /// Overwrite labels and objects that someone changed after the migration (without it, such a
        /// change is reported as a conflict, left as it is, and the rollback exits 3).
        #[arg(long)]
        force: bool,
    },
    /// Write a backup of a namespace's labels and Istio configuration to a file (requires -n).
    Backup {
        /// Output file (multi-document YAML); `-` for stdout.
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        file: PathBuf,
    },
    /// Restore a namespace from a backup file and verify the result.
    Restore {
        /// Backup file written by `backup` or by a run.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
    },
    /// Run the whole pipeline on an embedded simulated fleet, one namespace failing on purpose.
    Demo,
    /// Rehearse the migration on a simulated copy of the fleet (read from the cluster without writing, or
    /// from YAML files) under continuous traffic, and report per path the failed and leaked requests.
    Rehearse {
        /// Read the fleet from this directory (or file) of Kubernetes YAML instead of the cluster.
        #[arg(long, value_name = "DIR")]
        from_files: Option<PathBuf>,
        /// Inject a fault into the rehearsal (repeatable): `waypoint-never-ready`,
        /// `pods-crashloop-after-restart`, `cni-pending`, `ztunnel-down` or `injector-down`, optionally
        /// limited to one namespace with `:NAMESPACE`.
        #[arg(long = "fault", value_name = "KIND[:NAMESPACE]")]
        faults: Vec<String>,
    },
}

impl Command {
    /// Name of the subcommand as typed, for logs and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Plan { .. } => "plan",
            Command::Run => "run",
            Command::Status => "status",
            Command::Rollback { .. } => "rollback",
            Command::Backup { .. } => "backup",
            Command::Restore { .. } => "restore",
            Command::Demo => "demo",
            Command::Rehearse { .. } => "rehearse",
        }
    }
}

/// Result output format on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable lines.
    Text,
    /// One JSON document.
    Json,
}

/// Log line format on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// NDJSON, one object per event.
    Json,
}

impl LogFormat {
    fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE (e.g. fleet.concurrency=3), got {s:?}"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!(
            "empty key in {s:?}; expected KEY=VALUE (e.g. fleet.concurrency=3)"
        ));
    }
    Ok((key.to_string(), value.to_string()))
}

impl Cli {
    /// Parses `args` (the first item is the program name) and checks the per-subcommand requirements
    /// clap cannot express for global flags (`rollback`/`backup` need exactly one `-n`).
    /// Errors are clap errors: `err.exit()` prints them and exits with code 2.
    pub fn try_parse_checked<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let cli = Cli::try_parse_from(args)?;
        cli.check()?;
        Ok(cli)
    }

    /// Parses the process arguments; on error prints the message and exits with code 2 (0 for --help).
    pub fn parse_checked() -> Cli {
        match Cli::try_parse_checked(std::env::args_os()) {
            Ok(cli) => cli,
            Err(e) => e.exit(),
        }
    }

    fn check(&self) -> Result<(), clap::Error> {
        let needs_one_ns = matches!(self.command, Command::Rollback { .. } | Command::Backup { .. });
        if needs_one_ns && self.namespaces.len() != 1 {
            return Err(Cli::command().error(
                ErrorKind::MissingRequiredArgument,
                format!(
                    "`{}` works on exactly one namespace; got {}. Pass it with -n NS",
                    self.command.name(),
                    self.namespaces.len()
                ),
            ));
        }
        Ok(())
    }

    /// The flags as configuration overrides, in precedence order (later wins), for the top config layer.
    /// List settings are comma-joined (the loader splits them again).
    pub fn to_overrides(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !self.namespaces.is_empty() {
            out.push(("fleet.namespaces".to_string(), self.namespaces.join(",")));
        }
        if let Some(sel) = &self.selector {
            out.push(("fleet.selector".to_string(), sel.clone()));
        }
        if !self.canary.is_empty() {
            out.push(("fleet.canary".to_string(), self.canary.join(",")));
        }
        if let Some(c) = self.concurrency {
            out.push(("fleet.concurrency".to_string(), c.to_string()));
        }
        if let Some(f) = self.log_format {
            out.push(("log.format".to_string(), f.as_str().to_string()));
        }
        let level = match (self.verbose, self.quiet) {
            (0, 0) => None,
            (1, _) => Some("debug"),
            (v, _) if v >= 2 => Some("trace"),
            (_, 1) => Some("warn"),
            _ => Some("error"),
        };
        if let Some(level) = level {
            out.push(("log.level".to_string(), level.to_string()));
        }
        if let Some(dir) = &self.report_dir {
            out.push(("reports.dir".to_string(), dir.display().to_string()));
        }
        out.extend(self.set.iter().cloned());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_become_overrides_in_order() {
        let cli = Cli::try_parse_checked([
            "ambient-migrate",
            "run",
            "-n",
            "shop,payments",
            "-n",
            "web",
            "--canary",
            "web",
            "--concurrency",
            "3",
            "-vv",
            "--set",
            "fleet.concurrency=4",
            "--report-dir",
            "out",
        ])
        .unwrap();
        let o = cli.to_overrides();
        assert_eq!(o[0], ("fleet.namespaces".into(), "shop,payments,web".into()));
        assert!(o.contains(&("fleet.canary".into(), "web".into())));
        assert!(o.contains(&("log.level".into(), "trace".into())));
        assert!(o.contains(&("reports.dir".into(), "out".into())));
        // --set comes after --concurrency so it wins
        let pos_flag = o
            .iter()
            .position(|(k, v)| k == "fleet.concurrency" && v == "3")
            .unwrap();
        let pos_set = o
            .iter()
            .position(|(k, v)| k == "fleet.concurrency" && v == "4")
            .unwrap();
        assert!(pos_set > pos_flag);
    }

    #[test]
    fn usage_errors_exit_with_code_2() {
        let e = Cli::try_parse_checked(["ambient-migrate", "rollback"]).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_USAGE);
        assert!(e.to_string().contains("-n NS"), "{e}");
        let e = Cli::try_parse_checked(["ambient-migrate", "run", "--set", "novalue"]).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_USAGE);
        let e = Cli::try_parse_checked(["ambient-migrate", "frobnicate"]).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_USAGE);
        let e =
            Cli::try_parse_checked(["ambient-migrate", "rollback", "-n", "a", "--to-step", "9"]).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_USAGE);
    }

    #[test]
    fn subcommand_arguments() {
        let cli =
            Cli::try_parse_checked(["ambient-migrate", "backup", "-n", "shop", "-o", "b.yaml"]).unwrap();
        match cli.command {
            Command::Backup { file } => assert_eq!(file, PathBuf::from("b.yaml")),
            other => panic!("unexpected {other:?}"),
        }
        let cli =
            Cli::try_parse_checked(["ambient-migrate", "rollback", "-n", "shop", "--to-step", "2"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Rollback {
                to_step: Some(2),
                force: false
            }
        ));
        let cli = Cli::try_parse_checked(["ambient-migrate", "-q", "plan", "--output", "json"]).unwrap();
        assert_eq!(cli.output, OutputFormat::Json);
        assert_eq!(
            cli.to_overrides(),
            vec![("log.level".to_string(), "warn".to_string())]
        );
    }
}
