//! `ambient-migrate`: parse the command line, set up logging (stderr), run, exit with the docs/design.md §7 code.

use std::io::IsTerminal;
use std::process::ExitCode;

use ambient_migrate::cli::{Cli, LogFormat};
use ambient_migrate::exit;

fn init_tracing(cli: &Cli) {
    let level = match (cli.verbose, cli.quiet) {
        (0, 0) => "info",
        (1, _) => "debug",
        (v, _) if v >= 2 => "trace",
        (_, 1) => "warn",
        _ => "error",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},kube=warn,hyper=warn,tower=warn,rustls=warn"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_format == Some(LogFormat::Json) {
        builder.json().flatten_event(true).with_current_span(false).init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// Caps glibc's malloc at two arenas. glibc gives threads that allocate at once their own arenas (up to
/// eight per core) and keeps each arena's freed pages: the burst of the watch caches' first lists, decoded
/// on several runtime threads, then stays resident long after it is freed (BENCHMARKS.md §2b: one arena
/// took a 1,000-namespace run's peak RSS from 167 to 126 MiB). The runner's own CPU is a small part of a
/// run, so arena contention costs little. A limit the user set (`MALLOC_ARENA_MAX`, `GLIBC_TUNABLES`) wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() || std::env::var_os("GLIBC_TUNABLES").is_some() {
        return;
    }
    // SAFETY: mallopt only sets an allocator parameter; it runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    limit_malloc_arenas();
    let cli = Cli::parse_checked();
    init_tracing(&cli);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::HUMAN_NEEDED as u8);
        }
    };
    let code = rt.block_on(ambient_migrate::app::run(cli));
    ExitCode::from(u8::try_from(code).unwrap_or(exit::HUMAN_NEEDED as u8))
}
