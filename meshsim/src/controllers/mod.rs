//! Controllers: what kube-controller-manager, the kubelet, Istio's injector, istio-cni, ztunnel and istiod
//! do to the objects.
//!
//! One loop, level-triggered like the real controllers: it wakes on every store write
//! (`Store::changes`) or every `latency.controller_tick_ms`, takes a snapshot of the kinds it manages,
//! and runs each reconciler over it (workloads, kubelet, CNI, waypoints, authorization status, Jobs).
//! Writes go through `update_with` with `Target::Internal` on the latest stored object, so users' writes
//! in between are never lost. Time-based transitions (pod start, readiness, termination, enrollment,
//! waypoint programming, Job runs) compare millisecond timestamps kept in [`State`] with the latencies
//! from the settings. `MODEL.md` (section Controllers) lists each modelled behaviour and its source.

pub mod authz;
mod cni;
mod events;
pub mod injector;
mod install;
mod jobs;
mod kubelet;
pub mod util;
mod waypoint;
mod workloads;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use serde_json::Value;

use crate::Sim;
use crate::faults::{FaultKind, FaultSpec};
use crate::resources::{self, ResId};
use util::NsSnapshot;

pub use install::ISTIO_VERSION;

type DownFaults = Arc<RwLock<Vec<FaultSpec>>>;

/// Injector fault caches by store, handed from `install` (which registers the admission plugin) to
/// `spawn` (whose loop refreshes them).
fn injector_registry() -> &'static Mutex<HashMap<usize, DownFaults>> {
    static R: OnceLock<Mutex<HashMap<usize, DownFaults>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Creates the system objects the settings ask for (nodes, Istio install) and registers the sidecar
/// injector admission plugin.
pub fn install(sim: &Sim) -> anyhow::Result<()> {
    install::install(sim)?;
    let key = Arc::as_ptr(&sim.store) as usize;
    let mut reg = injector_registry().lock().unwrap_or_else(|e| e.into_inner());
    if let std::collections::hash_map::Entry::Vacant(e) = reg.entry(key) {
        let inj = injector::Injector::new(sim.settings.clone());
        e.insert(inj.down.clone());
        sim.store.add_admission(Arc::new(inj));
    }
    Ok(())
}

/// Starts the controller loop.
pub fn spawn(sim: Arc<Sim>) -> Vec<tokio::task::JoinHandle<()>> {
    let key = Arc::as_ptr(&sim.store) as usize;
    let down = injector_registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&key);
    vec![tokio::spawn(run(sim, down))]
}

async fn run(sim: Arc<Sim>, down: Option<DownFaults>) {
    let mut rx = sim.store.changes();
    let tick = Duration::from_millis(sim.settings.latency.controller_tick_ms.max(1));
    let gap = Duration::from_millis((sim.settings.latency.controller_tick_ms / 10).clamp(1, 5));
    let mut state = State::default();
    loop {
        rx.borrow_and_update();
        let snap = Snap::take(&sim, &mut state);
        if let Some(d) = &down {
            *d.write().unwrap_or_else(|e| e.into_inner()) = snap.faults_of(FaultKind::InjectorDown);
        }
        let t0 = std::time::Instant::now();
        pass(&sim, &snap, &mut state);
        tracing::trace!(elapsed = ?t0.elapsed(), pods = snap.pods.len(), "controller pass");
        tokio::select! {
            r = rx.changed() => { if r.is_err() { return; } }
            _ = tokio::time::sleep(tick) => {}
        }
        // Coalesce bursts of writes (a rollout writes many objects in a row).
        tokio::time::sleep(gap).await;
    }
}

fn pass(sim: &Sim, snap: &Snap, state: &mut State) {
    workloads::reconcile(sim, snap, state);
    kubelet::reconcile(sim, snap, state);
    jobs::reconcile(sim, snap, state);
    cni::reconcile(sim, snap, state);
    waypoint::reconcile(sim, snap, state);
    authz::reconcile(sim, snap);
}

/// Per-pod timestamps (ms) the kubelet model keeps, keyed by pod uid.
#[derive(Debug, Default, Clone)]
pub(crate) struct PodTrack {
    pub seen: u64,
    pub running: Option<u64>,
    pub ready: Option<u64>,
    pub crash: bool,
    pub last_restart: u64,
    pub terminating_since: Option<u64>,
    pub enroll_since: Option<u64>,
    pub job_started: Option<u64>,
    pub job_exit: Option<i32>,
}

/// What the controllers remember between passes (the real ones keep it in informer caches and queues).
#[derive(Default)]
pub(crate) struct State {
    pub pods: HashMap<String, PodTrack>,
    pub next_pod_ip: u32,
    pub waypoint_ready_since: HashMap<String, u64>,
    pub latched: HashSet<String>,
    pub now: u64,
}

/// A consistent view of the kinds the controllers manage, taken once per pass.
pub(crate) struct Snap {
    pub nodes: Vec<Value>,
    pub ns: NsSnapshot,
    pub pods: Vec<Value>,
    /// Pod indices by controller owner uid.
    pub pods_by_owner: HashMap<String, Vec<usize>>,
    pub replicasets: Vec<Value>,
    pub deployments: Vec<Value>,
    pub statefulsets: Vec<Value>,
    pub daemonsets: Vec<Value>,
    pub jobs: Vec<Value>,
    pub services: Vec<Value>,
    pub gateways: Vec<Value>,
    pub authz: Vec<Value>,
    pub faults: Vec<(FaultSpec, bool)>,
}

pub(crate) fn res(group: &str, plural: &str) -> ResId {
    if group.is_empty() {
        resources::core(plural)
    } else {
        resources::id(group, plural)
    }
}

impl Snap {
    fn take(sim: &Sim, state: &mut State) -> Snap {
        state.now = util::now_ms();
        let list = |g: &str, p: &str| sim.store.list(res(g, p), None).0;
        let pods = list("", "pods");
        let mut pods_by_owner: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in pods.iter().enumerate() {
            if let Some(o) = util::controller_uid(p) {
                pods_by_owner.entry(o.to_string()).or_default().push(i);
            }
        }
        let ns = NsSnapshot(
            list("", "namespaces")
                .into_iter()
                .map(|n| (util::name(&n).to_string(), n))
                .collect(),
        );
        // Faults as a list, triggers evaluated here against the snapshot (never against the store while
        // the faults lock is held), with `latch` remembered in the state.
        let mut faults = Vec::new();
        for mut v in sim.faults.list() {
            let mut ended = false;
            if let Some(m) = v.as_object_mut() {
                m.remove("fired");
                ended = m.remove("ended").is_some();
            }
            let Ok(spec) = serde_json::from_value::<FaultSpec>(v) else {
                continue;
            };
            let id = spec.id.clone().unwrap_or_default();
            let on = !ended
                && match &spec.trigger {
                    None => true,
                    Some(t) => {
                        let holds = t.holds(Some(&ns.labels(&t.namespace)).filter(|l| !l.is_null()));
                        if holds && spec.latch {
                            state.latched.insert(id.clone());
                        }
                        holds || state.latched.contains(&id)
                    }
                };
            faults.push((spec, on));
        }
        let live: HashSet<&str> = pods.iter().map(util::uid).collect();
        state.pods.retain(|k, _| live.contains(k.as_str()));
        Snap {
            nodes: list("", "nodes"),
            ns,
            pods_by_owner,
            pods,
            replicasets: list("apps", "replicasets"),
            deployments: list("apps", "deployments"),
            statefulsets: list("apps", "statefulsets"),
            daemonsets: list("apps", "daemonsets"),
            jobs: list("batch", "jobs"),
            services: list("", "services"),
            gateways: list("gateway.networking.k8s.io", "gateways"),
            authz: list("security.istio.io", "authorizationpolicies"),
            faults,
        }
    }

    /// Active faults of `kind` (trigger holding or latched).
    pub fn faults_of(&self, kind: FaultKind) -> Vec<FaultSpec> {
        self.faults
            .iter()
            .filter(|(f, on)| *on && f.kind == kind)
            .map(|(f, _)| f.clone())
            .collect()
    }

    /// Whether an active fault of `kind` applies to `namespace` and passes `filter`.
    pub fn fault(&self, kind: FaultKind, namespace: &str, filter: impl Fn(&FaultSpec) -> bool) -> bool {
        self.faults.iter().any(|(f, on)| {
            *on && f.kind == kind && f.namespace.as_deref().is_none_or(|n| n == namespace) && filter(f)
        })
    }

    pub fn owned_pods(&self, owner_uid: &str) -> Vec<&Value> {
        self.pods_by_owner
            .get(owner_uid)
            .map(|v| v.iter().map(|&i| &self.pods[i]).collect())
            .unwrap_or_default()
    }

    /// Whether the ztunnel on `node` is down (`ztunnel-down` fault naming the node, or every node).
    pub fn ztunnel_down(&self, node: &str) -> bool {
        self.faults.iter().any(|(f, on)| {
            *on && f.kind == FaultKind::ZtunnelDown && f.node.as_deref().is_none_or(|n| n == node)
        })
    }
}
