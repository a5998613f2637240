//! What makes a controller pass cost what changed rather than what exists, and lets namespaces be
//! reconciled side by side: a work queue of namespaces fed by the store's change stream, timers that queue
//! a namespace again when a time-based transition falls due, and fleet-wide indexes (node load, cluster
//! IPs in use) kept up to date from the same stream.
//!
//! The real controllers do the same with informers: list once, then follow the watch, keep indexes
//! (`cache.Indexer`, e.g. by namespace or owner) and queue keys whose objects changed
//! (`k8s.io/client-go/util/workqueue`; `AddAfter` for timers). Here the key is a namespace: every object
//! the controllers reconcile reads only its own namespace (plus nodes, which are few), so a pass over one
//! namespace sees everything a per-object pass would, and its cost grows with what changed in it, not
//! with the fleet. Several workers take keys from one [`WorkQueue`] with client-go's guarantees: a key
//! queued many times is processed once, and never by two workers at once.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::broadcast;

use super::{res, util};
use crate::resources::ResId;
use crate::store::{EventType, Store, WatchEvent};

/// Namespaces waiting for a pass, with the semantics of client-go's work queue
/// (`k8s.io/client-go/util/workqueue/queue.go`, `Type`): `add` of a key already waiting is a no-op (the
/// `dirty` set); a key being processed is not handed to another worker, and if it is added meanwhile it
/// waits until the worker calls `done` (the `processing` set); keys come out in the order they were
/// first added. `add_after` is the delaying queue's `AddAfter` (`delaying_queue.go`): the key is added
/// when its moment comes, the earliest request per key winning.
#[derive(Debug, Default)]
pub(crate) struct WorkQueue {
    inner: Mutex<Wq>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct Wq {
    /// Keys ready for a worker, with the moment each was queued (its wait is traced).
    queue: VecDeque<(String, Instant)>,
    dirty: HashSet<String>,
    processing: HashSet<String>,
    timers: BinaryHeap<Reverse<(u64, String)>>,
    /// The moment each key's timer is due: one per key, the earliest asked for (client-go's
    /// `waitingEntryByData`); a heap entry for another moment is stale and skipped.
    waiting: HashMap<String, u64>,
    shut_down: bool,
}

impl Wq {
    fn add(&mut self, key: &str) -> bool {
        if self.shut_down || self.dirty.contains(key) {
            return false;
        }
        self.dirty.insert(key.to_string());
        if self.processing.contains(key) {
            return false;
        }
        self.queue.push_back((key.to_string(), Instant::now()));
        true
    }

    /// Moves the keys whose moment has come into the queue.
    fn fire_timers(&mut self, now: u64) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((at, key))) = self.timers.pop()
                && self.waiting.get(&key) == Some(&at)
            {
                self.waiting.remove(&key);
                self.add(&key);
            }
        }
    }
}

impl WorkQueue {
    fn lock(&self) -> MutexGuard<'_, Wq> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add_all<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        let mut q = self.lock();
        let mut n = 0;
        for k in keys {
            n += usize::from(q.add(k));
        }
        drop(q);
        match n {
            0 => {}
            1 => self.ready.notify_one(),
            _ => self.ready.notify_all(),
        }
    }

    /// Queues `key` at the moment `at` (ms since the epoch).
    pub fn add_after(&self, key: String, at: u64) {
        let mut q = self.lock();
        if q.waiting.get(&key).is_some_and(|due| *due <= at) {
            // Already due no later: a pass then asks again for what it still needs.
            return;
        }
        let earlier = q.timers.peek().is_none_or(|Reverse((first, _))| at < *first);
        q.waiting.insert(key.clone(), at);
        q.timers.push(Reverse((at, key)));
        drop(q);
        if earlier {
            // Waiting workers sleep until the earliest timer: wake them to look again.
            self.ready.notify_all();
        }
    }

    /// The next key to reconcile, marked as processing, and how long it waited in the queue; blocks
    /// until one is due. None once shut down.
    pub fn get(&self) -> Option<(String, Duration)> {
        let mut q = self.lock();
        loop {
            if q.shut_down {
                return None;
            }
            q.fire_timers(util::now_ms());
            if let Some((key, at)) = q.queue.pop_front() {
                q.dirty.remove(&key);
                q.processing.insert(key.clone());
                return Some((key, at.elapsed()));
            }
            let wait = q
                .timers
                .peek()
                .map(|Reverse((at, _))| Duration::from_millis(at.saturating_sub(util::now_ms()).max(1)));
            q = match wait {
                Some(d) => self.ready.wait_timeout(q, d).unwrap_or_else(|e| e.into_inner()).0,
                None => self.ready.wait(q).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    /// The worker finished `key`: if it was added while being processed, it is queued again.
    pub fn done(&self, key: &str) {
        let mut q = self.lock();
        q.processing.remove(key);
        if q.dirty.contains(key) {
            q.queue.push_back((key.to_string(), Instant::now()));
            drop(q);
            self.ready.notify_one();
        }
    }

    /// Wakes every worker with None: the controllers are stopping.
    pub fn shut_down(&self) {
        self.lock().shut_down = true;
        self.ready.notify_all();
    }
}

/// Namespaces a batch of changes queues: some, or every one.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Marks {
    pub all: bool,
    pub keys: BTreeSet<String>,
}

impl Marks {
    pub fn mark(&mut self, namespace: &str) {
        if !self.all && !self.keys.contains(namespace) {
            self.keys.insert(namespace.to_string());
        }
    }

    pub fn mark_all(&mut self) {
        self.all = true;
        self.keys.clear();
    }

    /// Queues the marked namespaces (every namespace holding an object when all are marked).
    pub fn queue(self, store: &Store, queue: &WorkQueue) {
        if self.all {
            let names = every_namespace(store);
            queue.add_all(names.iter().map(String::as_str));
        } else if !self.keys.is_empty() {
            queue.add_all(self.keys.iter().map(String::as_str));
        }
    }
}

/// Every namespace a pass could have work in: Namespace objects and the namespaces of the objects the
/// controllers reconcile (a fixture may hold objects without their Namespace).
fn every_namespace(store: &Store) -> BTreeSet<String> {
    store.read(|view| {
        let mut names: BTreeSet<String> = view
            .list_shared(res("", "namespaces"), None)
            .map(|n| util::name(n).to_string())
            .collect();
        for k in super::snapshot_kinds() {
            for o in view.list_shared(k, None) {
                let ns = util::ns(o);
                if !names.contains(ns) {
                    names.insert(ns.to_string());
                }
            }
        }
        names
    })
}

/// Fleet-wide facts a pass over one namespace still needs: how many active pods each node runs (the
/// scheduler's least-loaded choice) and which cluster IPs are taken (allocation must not repeat one).
#[derive(Debug, Default)]
pub(crate) struct Indexes {
    pod_node: HashMap<String, String>,
    pub node_load: HashMap<String, usize>,
    svc_ip: HashMap<(String, String), String>,
    pub ips_used: HashSet<String>,
    /// Namespaces whose Services bind to a waypoint in another namespace, by the waypoint's namespace: a
    /// change there queues them too.
    pub waypoint_users: HashMap<String, BTreeSet<String>>,
    /// Each Namespace's labels as last seen. The controllers read nothing else of a Namespace
    /// (`util::NsSnapshot`), so a write that leaves its labels as they were (an annotation: a client's
    /// bookkeeping, such as a migration tool's progress) changes no pass's answer and queues nothing, as
    /// istio-cni's node agent queues a Namespace update only when its `istio.io/dataplane-mode` label
    /// changed (`cni/pkg/nodeagent/informers.go`, `reconcileNamespace`).
    ns_labels: HashMap<String, Value>,
}

impl Indexes {
    fn clear(&mut self) {
        let users = std::mem::take(&mut self.waypoint_users);
        *self = Indexes {
            waypoint_users: users,
            ..Default::default()
        };
    }

    /// Follows one Namespace's labels; true when a pass may now answer differently (new, deleted, or its
    /// labels changed; no labels and empty labels are the same).
    fn namespace(&mut self, kind: EventType, ns: &Value) -> bool {
        let name = util::name(ns);
        if kind == EventType::Deleted {
            self.ns_labels.remove(name);
            return true;
        }
        let labels = match ns["metadata"].get("labels") {
            Some(Value::Object(m)) if !m.is_empty() => Value::Object(m.clone()),
            _ => Value::Null,
        };
        if self.ns_labels.get(name) == Some(&labels) {
            return false;
        }
        self.ns_labels.insert(name.to_string(), labels);
        true
    }

    /// Follows one pod: counted on its node while active and scheduled.
    fn pod(&mut self, kind: EventType, pod: &Value) {
        let uid = util::uid(pod).to_string();
        if let Some(old) = self.pod_node.remove(&uid)
            && let Some(n) = self.node_load.get_mut(&old)
        {
            *n = n.saturating_sub(1);
        }
        let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
        if kind != EventType::Deleted && !node.is_empty() && util::pod_active(pod) {
            *self.node_load.entry(node.to_string()).or_default() += 1;
            self.pod_node.insert(uid, node.to_string());
        }
    }

    /// Follows one Service's cluster IP.
    fn service(&mut self, kind: EventType, svc: &Value) {
        let key = (util::ns(svc).to_string(), util::name(svc).to_string());
        if let Some(old) = self.svc_ip.remove(&key) {
            self.ips_used.remove(&old);
        }
        if kind == EventType::Deleted {
            return;
        }
        if let Some(ip) = svc["spec"]["clusterIP"].as_str().filter(|ip| !ip.is_empty()) {
            self.ips_used.insert(ip.to_string());
            self.svc_ip.insert(key, ip.to_string());
        }
    }
}

/// Kinds whose changes can alter what a pass does in their namespace: everything a pass snapshots, plus
/// what reconcilers read straight from the store (a probe Job's header Secret, a waypoint's
/// ServiceAccount).
fn watched(r: ResId) -> bool {
    super::snapshot_kinds().contains(&r) || [res("", "secrets"), res("", "serviceaccounts")].contains(&r)
}

/// The controllers' subscription to the store's change stream (the informer).
pub(crate) struct Events {
    rx: broadcast::Receiver<Arc<WatchEvent>>,
    /// Events at or below this resourceVersion are already in the indexes (from the list).
    listed: u64,
}

impl Events {
    /// Subscribes, then lists what the indexes need (list-then-watch, with no gap and no double count).
    pub fn start(store: &Store, index: &Mutex<Indexes>) -> Events {
        let (rv, rx) = store.subscribe();
        let mut ev = Events { rx, listed: rv };
        ev.relist(store, index);
        ev
    }

    fn relist(&mut self, store: &Store, index: &Mutex<Indexes>) {
        // Shared, not copied: a relist follows a lagged stream, when the store is busiest.
        let (pods, rv) = store.list_matching(res("", "pods"), None, |_| true);
        let (svcs, _) = store.list_matching(res("", "services"), None, |_| true);
        let mut index = index.lock().unwrap_or_else(|e| e.into_inner());
        index.clear();
        for p in &pods {
            index.pod(EventType::Added, p);
        }
        for s in &svcs {
            index.service(EventType::Added, s);
        }
        self.listed = self.listed.max(rv);
    }

    /// Applies every change that arrived since the last call to the indexes and marks the namespaces they
    /// can affect. When the stream lagged (events were lost), everything is listed again and every
    /// namespace marked.
    pub fn drain(&mut self, store: &Store, index: &Mutex<Indexes>, marks: &mut Marks) {
        loop {
            match self.rx.try_recv() {
                Ok(ev) => {
                    if ev.rv > self.listed {
                        let mut index = index.lock().unwrap_or_else(|e| e.into_inner());
                        apply(&ev, &mut index, marks);
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    self.rx = self.rx.resubscribe();
                    self.relist(store, index);
                    marks.mark_all();
                }
                Err(_) => return,
            }
        }
    }
}

/// One change: indexes updated, the namespaces it can affect marked.
fn apply(ev: &WatchEvent, index: &mut Indexes, marks: &mut Marks) {
    let obj = &ev.object;
    if ev.res == res("", "pods") {
        index.pod(ev.kind, obj);
    } else if ev.res == res("", "services") {
        index.service(ev.kind, obj);
    } else if ev.res == res("gateway.networking.k8s.io", "gateways")
        && let Some(users) = index.waypoint_users.get(&ev.namespace)
    {
        for u in users {
            marks.mark(u);
        }
    }
    if ev.res == res("", "nodes") {
        // Nodes are few; scheduling and DaemonSets everywhere read them.
        marks.mark_all();
    } else if ev.res == res("", "namespaces") {
        if index.namespace(ev.kind, obj) {
            marks.mark(util::name(obj));
        }
    } else if !ev.namespace.is_empty() && watched(ev.res) {
        marks.mark(&ev.namespace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(rv: u64, res: ResId, kind: EventType, object: Value) -> WatchEvent {
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or("").to_string();
        WatchEvent::new(rv, res, namespace, kind, object)
    }

    impl WorkQueue {
        fn waiting(&self) -> Vec<String> {
            self.lock().queue.iter().map(|(k, _)| k.clone()).collect()
        }
    }

    fn key(q: &WorkQueue) -> Option<String> {
        q.get().map(|(k, _)| k)
    }

    #[test]
    fn a_key_queued_many_times_is_processed_once_and_never_by_two_workers() {
        let q = WorkQueue::default();
        q.add_all(["a", "b", "a"]);
        assert_eq!(q.waiting(), ["a", "b"], "queued once, in the order first added");
        assert_eq!(key(&q).as_deref(), Some("a"));
        q.add_all(["a", "a"]);
        assert_eq!(q.waiting(), ["b"], "a key being processed waits for its worker");
        assert_eq!(key(&q).as_deref(), Some("b"), "another worker takes another key");
        q.done("a");
        assert_eq!(q.waiting(), ["a"], "added while processed: queued again, once");
        q.done("b");
        assert_eq!(q.waiting(), ["a"], "b was not added meanwhile");
        assert_eq!(key(&q).as_deref(), Some("a"));
        q.done("a");
        assert!(q.waiting().is_empty());
    }

    #[test]
    fn a_timer_queues_its_key_when_due_and_shut_down_ends_the_workers() {
        let q = Arc::new(WorkQueue::default());
        let t0 = std::time::Instant::now();
        q.add_after("late".into(), util::now_ms() + 400);
        q.add_after("soon".into(), util::now_ms() + 40);
        assert_eq!(key(&q).as_deref(), Some("soon"), "the earliest timer first");
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(35),
            "not before its moment: {waited:?}"
        );
        let worker = {
            let q = q.clone();
            std::thread::spawn(move || key(&q))
        };
        q.shut_down();
        assert_eq!(
            worker.join().unwrap(),
            None,
            "a waiting worker returns on shut down"
        );
        assert_eq!(key(&q), None);
    }

    #[test]
    fn a_key_has_one_timer_the_earliest_asked_for() {
        let q = WorkQueue::default();
        q.add_after("a".into(), 1_300);
        q.add_after("a".into(), 1_030);
        q.add_after("a".into(), 1_200);
        q.lock().fire_timers(1_100);
        assert_eq!(q.waiting(), ["a"], "due at the earliest moment asked for");
        {
            // Taken as `get` takes it, without `get`'s own look at the clock.
            let mut w = q.lock();
            let (k, _) = w.queue.pop_front().expect("queued");
            w.dirty.remove(&k);
        }
        for now in [1_250, 2_000] {
            q.lock().fire_timers(now);
            assert!(
                q.waiting().is_empty(),
                "the later requests were folded into the earliest, not fired again at {now}"
            );
        }
    }

    /// Per-key independence: while one namespace's reconcile is held up, another worker reconciles another
    /// namespace as soon as it changes, and the held-up one is not started twice.
    #[test]
    fn a_slow_namespace_does_not_hold_up_another() {
        let q = Arc::new(WorkQueue::default());
        let (tx, rx) = std::sync::mpsc::channel::<(usize, String)>();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = Arc::new(Mutex::new(held));
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let (q, tx, held) = (q.clone(), tx.clone(), held.clone());
                std::thread::spawn(move || {
                    while let Some((key, _)) = q.get() {
                        tx.send((w, key.clone())).unwrap();
                        if key == "slow" {
                            // A reconcile that takes as long as the test wants.
                            held.lock().unwrap().recv().unwrap();
                        }
                        q.done(&key);
                    }
                })
            })
            .collect();
        let next = || rx.recv_timeout(Duration::from_secs(10)).expect("a reconcile");
        q.add_all(["slow"]);
        let (slow_worker, key) = next();
        assert_eq!(key, "slow");
        q.add_all(["slow", "fast"]);
        let (w, key) = next();
        assert_eq!(
            (w == slow_worker, key.as_str()),
            (false, "fast"),
            "the other worker reconciles the other namespace while the slow one runs, and the slow \
             one is not started again meanwhile"
        );
        release.send(()).unwrap();
        assert_eq!(next().1, "slow", "queued again once its first reconcile is done");
        release.send(()).unwrap();
        q.shut_down();
        for w in workers {
            w.join().unwrap();
        }
        assert!(rx.try_recv().is_err(), "no other reconcile");
    }

    fn marks<const N: usize>(keys: [&str; N]) -> Marks {
        Marks {
            all: false,
            keys: keys.map(String::from).into(),
        }
    }

    #[test]
    fn events_queue_their_namespace_and_keep_the_indexes() {
        let mut index = Indexes::default();
        let mut q = Marks::default();
        let pod = |node: &str, phase: &str| {
            json!({"metadata": {"name": "p", "namespace": "shop", "uid": "u1"},
                   "spec": {"nodeName": node}, "status": {"phase": phase}})
        };
        apply(
            &ev(2, res("", "pods"), EventType::Added, pod("n1", "Running")),
            &mut index,
            &mut q,
        );
        assert_eq!(index.node_load.get("n1"), Some(&1));
        apply(
            &ev(3, res("", "pods"), EventType::Modified, pod("n1", "Succeeded")),
            &mut index,
            &mut q,
        );
        assert_eq!(
            index.node_load.get("n1"),
            Some(&0),
            "a finished pod frees its node"
        );
        let svc =
            json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": {"clusterIP": "10.96.0.11"}});
        apply(
            &ev(4, res("", "services"), EventType::Added, svc.clone()),
            &mut index,
            &mut q,
        );
        assert!(index.ips_used.contains("10.96.0.11"));
        apply(
            &ev(5, res("", "services"), EventType::Deleted, svc),
            &mut index,
            &mut q,
        );
        assert!(index.ips_used.is_empty());
        let cm = json!({"metadata": {"name": "journal", "namespace": "other"}});
        apply(
            &ev(6, res("", "configmaps"), EventType::Added, cm),
            &mut index,
            &mut q,
        );
        apply(
            &ev(
                7,
                res("", "namespaces"),
                EventType::Modified,
                json!({"metadata": {"name": "mesh"}}),
            ),
            &mut index,
            &mut q,
        );
        assert_eq!(
            std::mem::take(&mut q),
            marks(["mesh", "shop"]),
            "a ConfigMap is read by no controller; a Namespace queues itself"
        );
        index
            .waypoint_users
            .insert("wp".into(), ["shop".to_string()].into());
        let gw = json!({"metadata": {"name": "waypoint", "namespace": "wp", "uid": "g"}});
        apply(
            &ev(
                8,
                res("gateway.networking.k8s.io", "gateways"),
                EventType::Modified,
                gw,
            ),
            &mut index,
            &mut q,
        );
        assert_eq!(
            std::mem::take(&mut q),
            marks(["shop", "wp"]),
            "a waypoint's change queues the namespaces bound to it"
        );
        let ns = |rv: u64, labels: Value, annotations: Value| {
            ev(
                rv,
                res("", "namespaces"),
                EventType::Modified,
                json!({"metadata": {"name": "mesh", "labels": labels, "annotations": annotations}}),
            )
        };
        apply(&ns(20, json!({}), json!({"progress": "1"})), &mut index, &mut q);
        assert_eq!(
            std::mem::take(&mut q),
            marks::<0>([]),
            "no labels and empty labels are the same labels: nothing to reconcile"
        );
        apply(
            &ns(21, json!({"istio.io/dataplane-mode": "ambient"}), json!({})),
            &mut index,
            &mut q,
        );
        assert_eq!(
            std::mem::take(&mut q),
            marks(["mesh"]),
            "a label change queues the namespace"
        );
        apply(
            &ns(
                22,
                json!({"istio.io/dataplane-mode": "ambient"}),
                json!({"progress": "2"}),
            ),
            &mut index,
            &mut q,
        );
        assert_eq!(
            std::mem::take(&mut q),
            marks::<0>([]),
            "an annotation-only write changes nothing the controllers read"
        );
        apply(
            &ev(
                23,
                res("", "namespaces"),
                EventType::Deleted,
                json!({"metadata": {"name": "mesh", "labels": {"istio.io/dataplane-mode": "ambient"}}}),
            ),
            &mut index,
            &mut q,
        );
        assert_eq!(
            std::mem::take(&mut q),
            marks(["mesh"]),
            "a deleted Namespace queues itself"
        );
        apply(
            &ev(
                9,
                res("", "nodes"),
                EventType::Modified,
                json!({"metadata": {"name": "n1"}}),
            ),
            &mut index,
            &mut q,
        );
        assert!(std::mem::take(&mut q).all);
    }
}
