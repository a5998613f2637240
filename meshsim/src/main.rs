//! `meshsim serve`: run the simulated cluster until killed; `meshsim generate`: print a fleet fixture.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "meshsim",
    about = "A simulated Kubernetes cluster with Istio sidecar and ambient behaviour"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the Kubernetes API (and optionally the probe proxy) until killed.
    Serve {
        /// Fixture file or directory (plain Kubernetes YAML); repeatable.
        #[arg(long)]
        fixture: Vec<PathBuf>,
        /// meshsim settings file (YAML).
        #[arg(long)]
        settings: Option<PathBuf>,
        /// Faults file (YAML list of fault specs).
        #[arg(long)]
        faults: Option<PathBuf>,
        /// API listen address.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Probe proxy listen address (no proxy when absent).
        #[arg(long)]
        proxy_listen: Option<SocketAddr>,
        /// Write a kubeconfig here once the API answers.
        #[arg(long)]
        kubeconfig_out: Option<PathBuf>,
    },
    /// Print a fleet fixture (namespaces with injected Deployments and Services) as YAML.
    Generate {
        #[arg(long, default_value_t = 3)]
        namespaces: usize,
        /// Deployments per namespace.
        #[arg(long, default_value_t = 2)]
        deployments: usize,
        #[arg(long, default_value_t = 1)]
        replicas: u32,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Generate {
            namespaces,
            deployments,
            replicas,
        } => {
            print!(
                "{}",
                meshsim::fixtures::generate_fleet(namespaces, deployments, replicas)
            );
            Ok(())
        }
        Cmd::Serve {
            fixture,
            settings,
            faults,
            listen,
            proxy_listen,
            kubeconfig_out,
        } => {
            let settings = match settings {
                Some(p) => meshsim::Settings::from_file(&p)?,
                None => meshsim::Settings::default(),
            };
            let faults = match faults {
                Some(p) => meshsim::Faults::from_file(&p)?,
                None => Vec::new(),
            };
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async move {
                // Listen for SIGTERM before the URL is printed: a supervisor that stops meshsim as soon
                // as it answers must get a clean exit, not the default disposition's kill.
                let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                let running = meshsim::start(meshsim::StartOptions {
                    fixtures: fixture,
                    fixture_texts: Vec::new(),
                    settings,
                    faults,
                    listen: Some(listen),
                    proxy_listen,
                    kubeconfig_out,
                })
                .await?;
                println!("{}", running.url());
                if let Some(p) = running.proxy_url() {
                    println!("proxy {p}");
                }
                tracing::info!(api = %running.url(), "meshsim serving");
                wait_for_signal(term).await;
                tracing::info!("meshsim stopping");
                drop(running);
                anyhow::Ok(())
            })?;
            rt.shutdown_timeout(std::time::Duration::from_millis(200));
            Ok(())
        }
    }
}

async fn wait_for_signal(term: Option<tokio::signal::unix::Signal>) {
    let Some(mut term) = term else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
