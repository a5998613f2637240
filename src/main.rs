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

/// Sets glibc's malloc for a process whose memory is a burst of large transient buffers (the watch caches'
/// first list pages, decoded on several runtime threads) followed by a long steady state:
/// - one arena: glibc otherwise gives threads that allocate at once their own arenas (up to eight per
///   core) and keeps each arena's freed pages, so the burst stays resident long after it is freed;
/// - a fixed mmap threshold of 128 KiB: glibc raises the threshold up to 32 MiB each time a mapped chunk is
///   freed (`mallopt(3)`, M_MMAP_THRESHOLD), after which list pages and response bodies are carved out of
///   the heap and leave holes the kernel never gets back; with the threshold fixed they are mapped and
///   unmapped whole.
///
/// Measured on a 1,000-namespace dry run (BENCHMARKS.md §2b): peak RSS 147 MiB with two arenas, 111 MiB
/// with one, 106 MiB with one and the fixed threshold. The runner's own CPU is a small part of a run, so
/// arena contention costs little. A limit the user set (`MALLOC_ARENA_MAX`, `GLIBC_TUNABLES`) wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() || std::env::var_os("GLIBC_TUNABLES").is_some() {
        return;
    }
    // SAFETY: mallopt only sets allocator parameters; it runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tune_malloc();
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
