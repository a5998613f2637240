//! What makes a controller pass cost what changed rather than what exists: a work queue of namespaces fed
//! by the store's change stream, timers that queue a namespace again when a time-based transition falls
//! due, and fleet-wide indexes (node load, cluster IPs in use) kept up to date from the same stream.
//!
//! The real controllers do the same with informers: list once, then follow the watch, keep indexes
//! (`cache.Indexer`, e.g. by namespace or owner) and queue keys whose objects changed
//! (`k8s.io/client-go/util/workqueue`; `AddAfter` for timers). Here the key is a namespace: every object
//! the controllers reconcile reads only its own namespace (plus nodes, which are few), so a pass over the
//! queued namespaces sees everything a per-object pass would, and its cost grows with the namespaces
//! that changed, not with the fleet.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

use super::{State, res, util};
use crate::resources::ResId;
use crate::store::{EventType, Store, WatchEvent};

/// Which namespaces a pass reconciles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Every namespace (the first pass, and after the change stream was lost).
    All,
    Namespaces(BTreeSet<String>),
}

/// Namespaces waiting for a pass: marked now, or at a future moment.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    all: bool,
    dirty: BTreeSet<String>,
    timers: BinaryHeap<Reverse<(u64, String)>>,
}

impl Queue {
    pub fn mark(&mut self, namespace: &str) {
        if !self.all && !self.dirty.contains(namespace) {
            self.dirty.insert(namespace.to_string());
        }
    }

    pub fn mark_all(&mut self) {
        self.all = true;
        self.dirty.clear();
    }

    /// Queues namespaces for the moments the last pass asked for.
    pub fn schedule(&mut self, wakes: HashMap<String, u64>) {
        for (ns, at) in wakes {
            self.timers.push(Reverse((at, ns)));
        }
    }

    /// Moves the namespaces whose moment has come into the queue.
    pub fn wake_due(&mut self, now: u64) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((_, ns))) = self.timers.pop() {
                self.mark(&ns);
            }
        }
    }

    /// The earliest pending timer.
    pub fn next_wake(&self) -> Option<u64> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// The scope of the next pass (None: nothing to do), emptying the queue.
    pub fn take(&mut self) -> Option<Scope> {
        if std::mem::take(&mut self.all) {
            self.dirty.clear();
            return Some(Scope::All);
        }
        if self.dirty.is_empty() {
            return None;
        }
        Some(Scope::Namespaces(std::mem::take(&mut self.dirty)))
    }
}

/// Fleet-wide facts a pass over a few namespaces still needs: how many active pods each node runs (the
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
}

impl Indexes {
    fn clear(&mut self) {
        let users = std::mem::take(&mut self.waypoint_users);
        *self = Indexes {
            waypoint_users: users,
            ..Default::default()
        };
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

/// The controllers' subscription to the store's change stream.
pub(crate) struct Events {
    rx: broadcast::Receiver<Arc<WatchEvent>>,
    /// Events at or below this resourceVersion are already in the indexes (from the list).
    listed: u64,
}

impl Events {
    /// Subscribes, then lists what the indexes need (list-then-watch, with no gap and no double count).
    pub fn start(store: &Store, state: &mut State) -> Events {
        let (rv, rx) = store.subscribe();
        let mut ev = Events { rx, listed: rv };
        ev.relist(store, state);
        ev
    }

    fn relist(&mut self, store: &Store, state: &mut State) {
        state.index.clear();
        let (pods, rv) = store.list(res("", "pods"), None);
        for p in &pods {
            state.index.pod(EventType::Added, p);
        }
        let (svcs, _) = store.list(res("", "services"), None);
        for s in &svcs {
            state.index.service(EventType::Added, s);
        }
        self.listed = self.listed.max(rv);
    }

    /// Applies every change that arrived since the last call to the indexes and the queue. When the
    /// stream lagged (events were lost), everything is listed again and every namespace queued.
    pub fn drain(&mut self, store: &Store, state: &mut State, queue: &mut Queue) {
        loop {
            match self.rx.try_recv() {
                Ok(ev) => {
                    if ev.rv > self.listed {
                        apply(&ev, state, queue);
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    self.rx = self.rx.resubscribe();
                    self.relist(store, state);
                    queue.mark_all();
                }
                Err(_) => return,
            }
        }
    }
}

/// One change: indexes updated, the namespaces it can affect queued.
fn apply(ev: &WatchEvent, state: &mut State, queue: &mut Queue) {
    let obj = &ev.object;
    if ev.res == res("", "pods") {
        state.index.pod(ev.kind, obj);
        if ev.kind == EventType::Deleted {
            state.pods.remove(util::uid(obj));
        }
    } else if ev.res == res("", "services") {
        state.index.service(ev.kind, obj);
    } else if ev.res == res("gateway.networking.k8s.io", "gateways") {
        if ev.kind == EventType::Deleted {
            state.waypoint_ready_since.remove(util::uid(obj));
        }
        if let Some(users) = state.index.waypoint_users.get(&ev.namespace) {
            for u in users {
                queue.mark(u);
            }
        }
    }
    if ev.res == res("", "nodes") {
        // Nodes are few; scheduling and DaemonSets everywhere read them.
        queue.mark_all();
    } else if ev.res == res("", "namespaces") {
        queue.mark(util::name(obj));
    } else if !ev.namespace.is_empty() && watched(ev.res) {
        queue.mark(&ev.namespace);
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

    #[test]
    fn queue_takes_changed_namespaces_once_and_timers_when_due() {
        let mut q = Queue::default();
        assert_eq!(q.take(), None, "nothing changed: no pass");
        q.mark("a");
        q.mark("b");
        q.mark("a");
        q.schedule(HashMap::from([("c".to_string(), 100)]));
        q.wake_due(99);
        assert_eq!(
            q.take(),
            Some(Scope::Namespaces(["a", "b"].map(String::from).into()))
        );
        assert_eq!(q.next_wake(), Some(100));
        q.wake_due(100);
        assert_eq!(q.take(), Some(Scope::Namespaces(["c"].map(String::from).into())));
        assert_eq!(q.next_wake(), None);
        q.mark("a");
        q.mark_all();
        q.mark("b");
        assert_eq!(q.take(), Some(Scope::All));
        assert_eq!(q.take(), None);
    }

    #[test]
    fn events_queue_their_namespace_and_keep_the_indexes() {
        let mut state = State::default();
        let mut q = Queue::default();
        let pod = |node: &str, phase: &str| {
            json!({"metadata": {"name": "p", "namespace": "shop", "uid": "u1"},
                   "spec": {"nodeName": node}, "status": {"phase": phase}})
        };
        apply(
            &ev(2, res("", "pods"), EventType::Added, pod("n1", "Running")),
            &mut state,
            &mut q,
        );
        assert_eq!(state.index.node_load.get("n1"), Some(&1));
        apply(
            &ev(3, res("", "pods"), EventType::Modified, pod("n1", "Succeeded")),
            &mut state,
            &mut q,
        );
        assert_eq!(
            state.index.node_load.get("n1"),
            Some(&0),
            "a finished pod frees its node"
        );
        let svc =
            json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": {"clusterIP": "10.96.0.11"}});
        apply(
            &ev(4, res("", "services"), EventType::Added, svc.clone()),
            &mut state,
            &mut q,
        );
        assert!(state.index.ips_used.contains("10.96.0.11"));
        apply(
            &ev(5, res("", "services"), EventType::Deleted, svc),
            &mut state,
            &mut q,
        );
        assert!(state.index.ips_used.is_empty());
        let cm = json!({"metadata": {"name": "journal", "namespace": "other"}});
        apply(
            &ev(6, res("", "configmaps"), EventType::Added, cm),
            &mut state,
            &mut q,
        );
        apply(
            &ev(
                7,
                res("", "namespaces"),
                EventType::Modified,
                json!({"metadata": {"name": "mesh"}}),
            ),
            &mut state,
            &mut q,
        );
        assert_eq!(
            q.take(),
            Some(Scope::Namespaces(["mesh", "shop"].map(String::from).into())),
            "a ConfigMap is read by no controller; a Namespace queues itself"
        );
        state
            .index
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
            &mut state,
            &mut q,
        );
        assert_eq!(
            q.take(),
            Some(Scope::Namespaces(["shop", "wp"].map(String::from).into())),
            "a waypoint's change queues the namespaces bound to it"
        );
        apply(
            &ev(
                9,
                res("", "nodes"),
                EventType::Modified,
                json!({"metadata": {"name": "n1"}}),
            ),
            &mut state,
            &mut q,
        );
        assert_eq!(q.take(), Some(Scope::All));
    }
}
