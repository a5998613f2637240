//! meshsim: a simulated Kubernetes cluster running Istio (sidecar and ambient), served over the real
//! Kubernetes HTTP API so that kubectl and kube-rs drive it unmodified. It exists because our build machines
//! cannot run a Kubernetes API server; every end-to-end test, benchmark and `ambient-migrate demo` stands on
//! it. `MODEL.md` lists each modelled behaviour with the Istio or Kubernetes source it follows.

pub mod accounting;
pub mod api;
pub mod controllers;
pub mod faults;
pub mod fields;
pub mod fixtures;
pub mod resources;
pub mod settings;
pub mod store;
pub mod traffic;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use faults::{FaultKind, FaultSpec, Faults};
pub use settings::Settings;
pub use store::Store;

/// Everything the simulation shares: the store, settings, faults, request accounting and traffic counters.
/// Controllers, the API server and the traffic model all hold an `Arc<Sim>`.
pub struct Sim {
    pub store: Arc<Store>,
    pub settings: Settings,
    pub faults: Faults,
    pub accounting: accounting::Accounting,
    pub traffic: traffic::Counters,
    /// Container logs by (namespace, pod), served at `pods/<name>/log` (curl Jobs write their output here).
    pub logs: PodLogs,
    /// ServiceAccount tokens issued through `serviceaccounts/token` (TokenRequest).
    pub tokens: api::auth::Tokens,
}

impl Sim {
    /// A simulation with an empty store (Istio system objects and nodes are added by
    /// [`controllers::install`] when settings ask for them).
    pub fn new(settings: Settings, faults: Vec<FaultSpec>) -> Arc<Self> {
        let store = Arc::new(Store::new(settings.watch_history));
        Arc::new(Sim {
            store,
            settings,
            faults: Faults::new(faults),
            accounting: accounting::Accounting::default(),
            traffic: traffic::Counters::default(),
            logs: PodLogs::default(),
            tokens: api::auth::Tokens::default(),
        })
    }
}

/// Pod logs kept outside the objects (a kubelet keeps them on the node, not in the API).
#[derive(Debug, Default)]
pub struct PodLogs {
    inner: std::sync::Mutex<std::collections::HashMap<(String, String), String>>,
}

impl PodLogs {
    /// Appends text to a pod's log.
    pub fn append(&self, namespace: &str, pod: &str, text: &str) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.entry((namespace.to_string(), pod.to_string()))
            .or_default()
            .push_str(text);
    }

    /// The log of a pod (`None` when the pod never wrote any).
    pub fn get(&self, namespace: &str, pod: &str) -> Option<String> {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&(namespace.to_string(), pod.to_string())).cloned()
    }
}

/// How to start a simulated cluster.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Fixture files or directories (plain Kubernetes YAML, multi-document).
    pub fixtures: Vec<PathBuf>,
    /// Fixture objects given inline (already parsed YAML text, multi-document).
    pub fixture_texts: Vec<String>,
    pub settings: Settings,
    pub faults: Vec<FaultSpec>,
    /// API listen address (`127.0.0.1:0` picks a port).
    pub listen: Option<SocketAddr>,
    /// HTTP proxy listen address for probes (`127.0.0.1:0` picks a port); no proxy when `None`.
    pub proxy_listen: Option<SocketAddr>,
    /// Write a kubeconfig pointing at the API server here once it is ready.
    pub kubeconfig_out: Option<PathBuf>,
}

/// A running simulated cluster. Dropping it stops the server and controllers.
pub struct Running {
    pub sim: Arc<Sim>,
    /// Address of the Kubernetes API.
    pub addr: SocketAddr,
    /// Address of the HTTP proxy for probes, when started.
    pub proxy_addr: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig (YAML) pointing at this cluster, context `meshsim`.
    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig_yaml(&self.url())
    }

    /// `http://127.0.0.1:<port>` of the probe proxy, when started.
    pub fn proxy_url(&self) -> Option<String> {
        self.proxy_addr.map(|a| format!("http://{a}"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A kubeconfig for `server`, with context, cluster and user all named `meshsim`; the user is the cluster
/// administrator ([`api::auth::ADMIN_TOKEN`], group `system:masters`).
pub fn kubeconfig_yaml(server: &str) -> String {
    let token = api::auth::ADMIN_TOKEN;
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: meshsim\n  cluster:\n    server: {server}\ncontexts:\n- name: meshsim\n  context:\n    cluster: meshsim\n    user: meshsim\n    namespace: default\ncurrent-context: meshsim\nusers:\n- name: meshsim\n  user:\n    token: {token}\npreferences: {{}}\n"
    )
}

/// Starts a simulated cluster: loads settings-driven system objects and fixtures, starts the controllers,
/// the API server and (optionally) the probe proxy; writes the kubeconfig last, once it can answer.
pub async fn start(opts: StartOptions) -> anyhow::Result<Running> {
    let sim = Sim::new(opts.settings.clone(), opts.faults.clone());
    controllers::install(&sim)?;
    let mut objects = Vec::new();
    for path in &opts.fixtures {
        objects.extend(fixtures::load_path(path)?);
    }
    for text in &opts.fixture_texts {
        objects.extend(fixtures::parse_text(text, "inline fixture")?);
    }
    sim.store
        .load(objects)
        .map_err(|e| anyhow::anyhow!("loading fixtures: {e}"))?;
    let mut tasks = controllers::spawn(sim.clone());
    let listen = opts
        .listen
        .unwrap_or_else(|| "127.0.0.1:0".parse().expect("valid address"));
    let (addr, server) = api::serve(sim.clone(), listen).await?;
    tasks.push(server);
    let proxy_addr = match opts.proxy_listen {
        Some(l) => {
            let (a, t) = traffic::proxy::serve(sim.clone(), l).await?;
            tasks.push(t);
            Some(a)
        }
        None => None,
    };
    let running = Running {
        sim,
        addr,
        proxy_addr,
        tasks,
    };
    if let Some(path) = &opts.kubeconfig_out {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, running.kubeconfig_yaml())?;
        std::fs::rename(&tmp, path)?;
    }
    Ok(running)
}
