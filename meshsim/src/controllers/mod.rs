//! Controllers: what kube-controller-manager, the kubelet, Istio's injector, istio-cni, ztunnel and istiod
//! do to the objects.
//!
//! Level-triggered like the real controllers: an informer task follows the store's change stream, keeps
//! the fleet-wide indexes, evaluates the faults and queues the namespaces that changed; worker threads
//! take one namespace at a time from the work queue (`queue::WorkQueue`, client-go's semantics: never the
//! same namespace on two workers), snapshot it and run each reconciler over it (workloads, kubelet, CNI,
//! waypoints, authorization status, Jobs). Writes go through `update_with` with `Target::Internal` on the
//! latest stored object, so users' writes in between are never lost. Time-based transitions (pod start,
//! readiness, termination, enrollment, waypoint programming, Job runs) compare millisecond timestamps kept
//! per namespace in [`State`] with the latencies from the settings. `MODEL.md` (section Controllers) lists
//! each modelled behaviour and its source.

pub mod authz;
mod cni;
mod events;
pub mod injector;
mod install;
mod jobs;
mod kubelet;
mod queue;
pub mod util;
mod waypoint;
mod workloads;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use serde_json::Value;

use crate::Sim;
use crate::faults::{FaultKind, FaultSpec, NsLabels};
use crate::resources::{self, ResId};
use crate::store::{Shared, Store};
use util::NsSnapshot;

pub use install::ISTIO_VERSION;

type DownFaults = Arc<RwLock<Vec<FaultSpec>>>;

/// Injector fault caches by store, handed from `install` (which registers the admission plugin) to
/// `spawn` (whose informer refreshes them). Keyed by the store's address, with the store itself (weak) so
/// that an entry a dropped simulation left behind (installed, never spawned) is not taken for a new
/// store allocated at the same address.
type Registry = HashMap<usize, (Weak<Store>, DownFaults)>;

fn injector_registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Creates the system objects the settings ask for (nodes, Istio install) and registers the sidecar
/// injector admission plugin.
pub fn install(sim: &Sim) -> anyhow::Result<()> {
    install::install(sim)?;
    let key = Arc::as_ptr(&sim.store) as usize;
    let mut reg = injector_registry().lock().unwrap_or_else(|e| e.into_inner());
    reg.retain(|_, (store, _)| store.strong_count() > 0);
    let installed = reg
        .get(&key)
        .is_some_and(|(store, _)| store.upgrade().is_some_and(|s| Arc::ptr_eq(&s, &sim.store)));
    if !installed {
        let inj = injector::Injector::new(sim.settings.clone());
        reg.insert(key, (Arc::downgrade(&sim.store), inj.down.clone()));
        sim.store.add_admission(Arc::new(inj));
    }
    Ok(())
}

/// How many workers reconcile namespaces side by side: one per core (passes are CPU work, no I/O), at
/// least two so that a slow namespace never holds up the others.
fn worker_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8)
}

/// Starts the controllers: the informer task (change stream, indexes, faults, the work queue's feed) and
/// the workers, threads that each take one namespace at a time from the work queue. The returned task
/// is the informer; aborting it shuts the queue down, which ends the workers.
pub fn spawn(sim: Arc<Sim>) -> Vec<tokio::task::JoinHandle<()>> {
    let key = Arc::as_ptr(&sim.store) as usize;
    let down = injector_registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&key)
        .filter(|(store, _)| store.upgrade().is_some_and(|s| Arc::ptr_eq(&s, &sim.store)))
        .map(|(_, down)| down);
    let fleet = Arc::new(Fleet::default());
    let events = queue::Events::start(&sim.store, &fleet.index);
    for i in 0..worker_count() {
        let (sim, fleet) = (sim.clone(), fleet.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("meshsim-controller-{i}"))
            .spawn(move || work(&sim, &fleet));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "controller worker thread");
        }
    }
    vec![tokio::spawn(inform(sim, fleet, events, down))]
}

/// Shuts the work queue down when the informer task ends (aborted with the simulation): the workers then
/// return.
struct ShutDownOnDrop(Arc<Fleet>);

impl Drop for ShutDownOnDrop {
    fn drop(&mut self) {
        self.0.queue.shut_down();
    }
}

/// The informer: follows the store's change stream into the indexes, evaluates the faults, and queues
/// the namespaces that changed (every namespace first, and when the active fault set changes).
async fn inform(sim: Arc<Sim>, fleet: Arc<Fleet>, mut events: queue::Events, down: Option<DownFaults>) {
    let _guard = ShutDownOnDrop(fleet.clone());
    let mut rx = sim.store.changes();
    let tick = Duration::from_millis(sim.settings.latency.controller_tick_ms.max(1));
    let gap = Duration::from_millis((sim.settings.latency.controller_tick_ms / 10).clamp(1, 5));
    let mut latched = HashSet::new();
    let mut signature: Option<String> = None;
    loop {
        rx.borrow_and_update();
        let mut marks = queue::Marks::default();
        events.drain(&sim.store, &fleet.index, &mut marks);
        let (faults, sig) = evaluate_faults(&sim, &mut latched);
        if signature.as_deref() != Some(sig.as_str()) {
            // Faults are few and change rarely; a change can affect any namespace.
            signature = Some(sig);
            marks.mark_all();
        }
        if let Some(d) = &down {
            *d.write().unwrap_or_else(|e| e.into_inner()) = active_of(&faults, FaultKind::InjectorDown);
        }
        // Published before the namespaces are queued: a pass sees faults at least as new as its changes.
        *fleet.faults.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(faults);
        marks.queue(&sim.store, &fleet.queue);
        tokio::select! {
            r = rx.changed() => { if r.is_err() { return; } }
            _ = tokio::time::sleep(tick) => {}
        }
        // Coalesce bursts of writes (a rollout writes many objects in a row).
        tokio::time::sleep(gap).await;
    }
}

/// One worker: takes a namespace, reconciles it, hands it back; a namespace is never on two workers at
/// once (the work queue's guarantee), so its per-pod state is taken out and put back without sharing.
fn work(sim: &Sim, fleet: &Fleet) {
    while let Some((namespace, waited)) = fleet.queue.get() {
        let t0 = std::time::Instant::now();
        let faults = fleet.faults.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut state = State {
            ns: fleet.take_parked(&namespace),
            now: util::now_ms(),
            fleet,
        };
        let snap = Snap::take(sim, &mut state, &namespace, faults);
        pass(sim, &snap, &mut state);
        for (ns, at) in snap.wakes.into_inner() {
            fleet.queue.add_after(ns, at);
        }
        fleet.park(&namespace, state.ns);
        fleet.queue.done(&namespace);
        tracing::trace!(namespace, ?waited, elapsed = ?t0.elapsed(), pods = snap.pods.len(), "controller pass");
    }
}

/// Every fault with whether it is active now (trigger holding or latched, window not ended), and a
/// signature of that set: when it changes, every namespace is reconciled again.
fn evaluate_faults(sim: &Sim, latched: &mut HashSet<String>) -> (Vec<(FaultSpec, bool)>, String) {
    // Triggers are evaluated here against namespace labels read from the store (never while the faults
    // lock is held), with `latch` remembered by the informer.
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
                    let labels = sim.store.ns_labels(&t.namespace);
                    let holds = t.holds(labels.as_ref());
                    if holds && spec.latch {
                        latched.insert(id.clone());
                    }
                    holds || latched.contains(&id)
                }
            };
        faults.push((spec, on));
    }
    let signature = serde_json::to_string(
        &faults
            .iter()
            .map(|(f, on)| (serde_json::to_value(f).unwrap_or(Value::Null), *on))
            .collect::<Vec<_>>(),
    )
    .unwrap_or_default();
    (faults, signature)
}

fn active_of(faults: &[(FaultSpec, bool)], kind: FaultKind) -> Vec<FaultSpec> {
    faults
        .iter()
        .filter(|(f, on)| *on && f.kind == kind)
        .map(|(f, _)| f.clone())
        .collect()
}

fn pass(sim: &Sim, snap: &Snap, state: &mut State) {
    workloads::reconcile(sim, snap);
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
    /// The pod's resourceVersion and the kubelet's inputs for which the status it would write was found
    /// equal to the pod's: the same pod with the same inputs needs no status built again.
    pub status_settled: Option<(String, kubelet::StatusInput)>,
}

/// What the controllers remember about one namespace between its passes (the real ones keep it in
/// informer caches and queues): parked in [`Fleet`] while no worker holds the namespace.
#[derive(Default)]
pub(crate) struct NsState {
    pub pods: HashMap<String, PodTrack>,
    pub waypoint_ready_since: HashMap<String, u64>,
}

/// What every worker shares: the fleet-wide indexes, the pod IP allocator, the faults the informer
/// evaluated last, the namespaces' parked state and the work queue.
#[derive(Default)]
pub(crate) struct Fleet {
    /// Fleet-wide indexes fed by the store's change stream (see [`queue::Indexes`]).
    pub index: Mutex<queue::Indexes>,
    next_pod_ip: AtomicU32,
    faults: RwLock<Arc<Vec<(FaultSpec, bool)>>>,
    parked: Mutex<HashMap<String, NsState>>,
    queue: queue::WorkQueue,
}

impl Fleet {
    /// The next pod IP number (1, 2, ...): unique across workers.
    pub fn next_pod_ip(&self) -> u32 {
        self.next_pod_ip.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn index(&self) -> std::sync::MutexGuard<'_, queue::Indexes> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_parked(&self, namespace: &str) -> NsState {
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        parked.remove(namespace).unwrap_or_default()
    }

    fn park(&self, namespace: &str, state: NsState) {
        if state.pods.is_empty() && state.waypoint_ready_since.is_empty() {
            return;
        }
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        parked.insert(namespace.to_string(), state);
    }
}

/// What a pass over one namespace works with: that namespace's state, taken out of [`Fleet`] for the
/// pass, the moment the pass runs, and the fleet-wide part.
pub(crate) struct State<'a> {
    pub ns: NsState,
    pub now: u64,
    pub fleet: &'a Fleet,
}

/// A consistent view of the objects of the namespace a pass reconciles, taken once per pass under one
/// store lock.
pub(crate) struct Snap {
    /// The moment the pass runs (ms since the epoch): time-based transitions compare against it.
    pub now: u64,
    pub nodes: Vec<Shared>,
    pub ns: NsSnapshot,
    pub pods: Vec<Shared>,
    /// Pod indices by controller owner uid.
    pub pods_by_owner: HashMap<String, Vec<usize>>,
    pub replicasets: Vec<Shared>,
    pub deployments: Vec<Shared>,
    pub statefulsets: Vec<Shared>,
    pub daemonsets: Vec<Shared>,
    pub jobs: Vec<Shared>,
    pub services: Vec<Shared>,
    pub gateways: Vec<Shared>,
    /// Waypoints in namespaces outside the pass that services inside it name (`istio.io/use-waypoint`
    /// with `istio.io/use-waypoint-namespace`): read for binding status only, never reconciled here.
    pub foreign_gateways: Vec<Shared>,
    pub authz: Vec<Shared>,
    pub faults: Arc<Vec<(FaultSpec, bool)>>,
    /// Earliest future moment each namespace must be looked at again (a timer that has not fired yet).
    pub wakes: RefCell<HashMap<String, u64>>,
}

pub(crate) fn res(group: &str, plural: &str) -> ResId {
    if group.is_empty() {
        resources::core(plural)
    } else {
        resources::id(group, plural)
    }
}

/// The namespaced kinds a pass reads into its [`Snap`], in the order of its fields; the work queue marks a
/// namespace on a change of any of them (`queue::watched`).
pub(crate) fn snapshot_kinds() -> [ResId; 9] {
    [
        res("", "pods"),
        res("apps", "replicasets"),
        res("apps", "deployments"),
        res("apps", "statefulsets"),
        res("apps", "daemonsets"),
        res("batch", "jobs"),
        res("", "services"),
        res("gateway.networking.k8s.io", "gateways"),
        res("security.istio.io", "authorizationpolicies"),
    ]
}

impl Snap {
    fn take(sim: &Sim, state: &mut State, namespace: &str, faults: Arc<Vec<(FaultSpec, bool)>>) -> Snap {
        let ns_id = res("", "namespaces");
        let kinds = snapshot_kinds();
        // Namespaces whose labels fault triggers read, besides the one in scope.
        let trigger_ns: Vec<&str> = faults
            .iter()
            .filter_map(|(f, _)| f.trigger.as_ref().map(|t| t.namespace.as_str()))
            .collect();
        let (lists, nodes, ns) = sim.store.read(|view| {
            // The stored objects are shared, not copied: a pass reads them and writes new ones.
            let lists: Vec<Vec<Shared>> = kinds
                .iter()
                .map(|k| view.list_shared(*k, Some(namespace)).cloned().collect())
                .collect();
            let mut ns = HashMap::new();
            for name in std::iter::once(namespace).chain(trigger_ns.iter().copied()) {
                if let Some(n) = view.get_shared(ns_id, "", name) {
                    ns.insert(name.to_string(), n.clone());
                }
            }
            let nodes: Vec<Shared> = view.list_shared(res("", "nodes"), None).cloned().collect();
            (lists, nodes, NsSnapshot(ns))
        });
        let [
            pods,
            replicasets,
            deployments,
            statefulsets,
            daemonsets,
            jobs,
            services,
            gateways,
            authz,
        ]: [Vec<Shared>; 9] = lists
            .try_into()
            .unwrap_or_else(|_| unreachable!("one list per kind"));
        let mut pods_by_owner: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in pods.iter().enumerate() {
            if let Some(o) = util::controller_uid(p) {
                pods_by_owner.entry(o.to_string()).or_default().push(i);
            }
        }
        // The pass sees every pod and Gateway of its namespace: what it does not see is gone.
        let live: HashSet<&str> = pods.iter().map(|p| util::uid(p)).collect();
        state.ns.pods.retain(|k, _| live.contains(k.as_str()));
        let live: HashSet<&str> = gateways.iter().map(|g| util::uid(g)).collect();
        state
            .ns
            .waypoint_ready_since
            .retain(|k, _| live.contains(k.as_str()));
        let foreign_gateways = waypoint::foreign_waypoints(sim, &services, &ns, &gateways, state);
        Snap {
            now: state.now,
            nodes,
            ns,
            pods_by_owner,
            pods,
            replicasets,
            deployments,
            statefulsets,
            daemonsets,
            jobs,
            services,
            gateways,
            foreign_gateways,
            authz,
            faults,
            wakes: RefCell::new(HashMap::new()),
        }
    }

    /// Whether the moment `at` has come; if not, `namespace` is queued again for then (how a timer-based
    /// transition gets its pass without rescanning the fleet: `workqueue.AddAfter` in client-go).
    pub fn due(&self, namespace: &str, at: u64) -> bool {
        if self.now >= at {
            return true;
        }
        self.wake(namespace, at);
        false
    }

    /// Queues `namespace` for a pass at `at` (the earliest request wins).
    pub fn wake(&self, namespace: &str, at: u64) {
        let mut w = self.wakes.borrow_mut();
        let e = w.entry(namespace.to_string()).or_insert(at);
        *e = (*e).min(at);
    }

    /// `podutil.IsPodAvailable` at this pass's moment; a Ready pod still inside `minReadySeconds` queues its
    /// namespace for the moment it becomes available.
    pub fn available(&self, pod: &Value, min_ready_seconds: i64) -> bool {
        util::available_from(pod, min_ready_seconds).is_some_and(|at| self.due(util::ns(pod), at))
    }

    /// A Gateway by namespace and name, in the pass's scope or among the waypoints it refers to.
    pub fn gateway(&self, namespace: &str, name: &str) -> Option<&Value> {
        self.gateways
            .iter()
            .chain(&self.foreign_gateways)
            .find(|g| util::ns(g) == namespace && util::name(g) == name)
            .map(|g| &**g)
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
            .map(|v| v.iter().map(|&i| &*self.pods[i]).collect())
            .unwrap_or_default()
    }

    /// Whether the ztunnel on `node` is down (`ztunnel-down` fault naming the node, or every node).
    pub fn ztunnel_down(&self, node: &str) -> bool {
        self.faults.iter().any(|(f, on)| {
            *on && f.kind == FaultKind::ZtunnelDown && f.node.as_deref().is_none_or(|n| n == node)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet_sim(namespaces: usize) -> Arc<Sim> {
        let sim = Sim::new(crate::Settings::default(), Vec::new());
        install(&sim).unwrap();
        let text = crate::fixtures::generate_fleet(namespaces, 2, 1);
        sim.store
            .load(crate::fixtures::parse_text(&text, "fleet").unwrap())
            .unwrap();
        sim
    }

    fn state(fleet: &Fleet, now: u64) -> State<'_> {
        State {
            ns: NsState::default(),
            now,
            fleet,
        }
    }

    #[test]
    fn a_pass_reads_only_its_namespace() {
        let sim = fleet_sim(3);
        let fleet = Fleet::default();
        let snap = Snap::take(&sim, &mut state(&fleet, 0), "fleet-001", Arc::default());
        let namespaces: HashSet<&str> = snap
            .deployments
            .iter()
            .chain(&snap.services)
            .chain(&snap.pods)
            .map(|o| util::ns(o))
            .collect();
        assert_eq!(namespaces, HashSet::from(["fleet-001"]));
        assert_eq!(snap.deployments.len(), 2);
        assert_eq!(snap.ns.0.keys().collect::<Vec<_>>(), vec!["fleet-001"]);
        assert!(!snap.nodes.is_empty(), "nodes are read by every pass");
    }

    #[test]
    fn a_pass_forgets_the_pods_its_namespace_no_longer_holds() {
        let sim = fleet_sim(1);
        let fleet = Fleet::default();
        let mut st = state(&fleet, 0);
        // Passes create the ReplicaSets, then their pods, then track them.
        for _ in 0..3 {
            let snap = Snap::take(&sim, &mut st, "fleet-000", Arc::default());
            pass(&sim, &snap, &mut st);
        }
        st.ns.pods.insert("gone".into(), PodTrack::default());
        let snap = Snap::take(&sim, &mut st, "fleet-000", Arc::default());
        pass(&sim, &snap, &mut st);
        let live: HashSet<&str> = snap.pods.iter().map(|p| util::uid(p)).collect();
        assert!(!live.is_empty(), "the fleet's pods are loaded");
        assert_eq!(
            st.ns.pods.keys().map(String::as_str).collect::<HashSet<_>>(),
            live,
            "tracks for the namespace's pods, none for a pod that is gone"
        );
    }

    #[test]
    fn due_queues_the_namespace_for_the_earliest_moment() {
        let sim = fleet_sim(1);
        let fleet = Fleet::default();
        let snap = Snap::take(&sim, &mut state(&fleet, 1_000), "fleet-000", Arc::default());
        assert!(snap.due("a", 1_000), "the moment has come");
        assert!(!snap.due("a", 1_300));
        assert!(!snap.due("a", 1_200));
        assert!(!snap.due("b", 1_500));
        let wakes = snap.wakes.into_inner();
        assert_eq!(wakes.get("a"), Some(&1_200));
        assert_eq!(wakes.get("b"), Some(&1_500));
        assert_eq!(wakes.len(), 2);
    }
}
