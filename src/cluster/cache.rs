//! Fleet-wide watch caches: one list+watch per kind for the whole run (kube-runtime watchers feeding a
//! store indexed by namespace, as a controller's informers), so the preflight, every namespace's snapshot and backup, and the gates read
//! memory instead of sending a list per namespace per kind. The caches are cluster-wide: the reader
//! ClusterRole grants list and watch on every kind they hold (`ci/k8s/clusterrole.yaml`, proven before
//! the run by `assess::permissions`).
//!
//! Memory and CPU: each object is decoded off the wire as a [`wire`] item that declares only what its cache
//! keeps, so what is dropped is skipped while parsing, never built (`managedFields`: the biggest part of
//! most objects and read by nothing here; the `last-applied-configuration` annotation), then trimmed (the
//! parts of pod templates that nothing here reads) and kept as its JSON, decoded when a namespace's
//! objects are read.
//! Pods and ReplicaSets, the most numerous objects, are kept as projections of the fields their readers use
//! ([`PodView`], [`ReplicaSetView`]), rebuilt into typed objects when read. Configuration objects keep everything else, as the backup needs them whole. The
//! objects are indexed by namespace, so reading a namespace does not scan the fleet.
//!
//! A kind whose CRD is not installed (404 on the first list) is "none of them", as the per-namespace
//! lists treat it; a kind the runner may not list or watch (403) fails every read with the API's answer.
//! Every applied event bumps the counter of its namespace ([`FleetCache::changes_in`]), so a wait
//! re-evaluates its gate on the event in its namespace that may satisfy it, without a timer, and not on the
//! events of the rest of the fleet.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, Pod, PodSpec, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::DynamicObject;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use super::wire;
use super::{Cluster, ClusterError, DynKind};
use crate::assess::{ClusterInfo, Snapshot};

/// Where one kind's cache stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheState {
    /// The first list has not completed yet.
    Syncing,
    /// Listed and watching.
    Ready,
    /// The API server does not serve the kind (no CRD): none of them exist.
    Absent,
    /// The first list was refused; reads fail with this message.
    Failed(String),
}

/// Objects per page of a cache's first list (kube-runtime's default). A page is held twice while it is
/// decoded (its body and its objects as wire items), and the kinds list at once: when pages were decoded as
/// full typed objects, decoded pages of 500 pods were 20 of the 79 MB of heap at the peak at 1,000
/// namespaces, and pages were 100 objects; decoded as wire items they are a fraction of that, and the
/// pages come one after the other (the next is asked for once the last is consumed), so the first
/// namespace waits for the pods' list page by page: 110 pages of 100 at 1,000 namespaces (BENCHMARKS.md
/// §2b).
const LIST_PAGE: u32 = 500;

/// One kind's objects, by namespace (empty for cluster-scoped objects) then name: a namespace's objects are
/// read without scanning the fleet's, in the API server's list order (etcd key order, by name).
type ByNamespace<S> = HashMap<String, BTreeMap<String, S>>;

/// How a kind's objects are kept in memory. Most kinds are kept as the JSON of the trimmed object (pods
/// and ReplicaSets as projections) and decoded when read: the typed structs are mostly empty optional fields (a `k8s_openapi` `Container` is
/// 2,336 bytes before any of its strings, a `Pod` 2,464), so a fleet of pods as typed values is several
/// times the size of its JSON; reads are of one namespace at a time, so decoding is cheap.
///
/// `W` is what the watcher decodes (a [`wire`] item: the kept fields only), `K` what readers get.
struct Codec<W, K, S> {
    encode: fn(W) -> Option<S>,
    decode: fn(&S) -> Option<K>,
}

/// An object kept as its JSON. Shared, so that a wait can hold the version it evaluated and tell by
/// pointer whether the object changed since (every applied event stores a new one; while held, the old
/// allocation cannot be reused for another).
type Json = Arc<[u8]>;

fn to_json<K: Serialize>(o: K) -> Option<Json> {
    serde_json::to_vec(&o).ok().map(Json::from)
}

fn from_json<K: DeserializeOwned>(b: &[u8]) -> Option<K> {
    serde_json::from_slice(b).ok()
}

/// One kind's cache: its objects, its state, and what to call it in messages.
struct Kind<K, S> {
    objects: Arc<RwLock<ByNamespace<S>>>,
    /// Bumped after every change of `objects`: what was derived from them at an older value is stale.
    version: Arc<AtomicU64>,
    state: watch::Receiver<CacheState>,
    what: String,
    decode: fn(&S) -> Option<K>,
}

/// Wakes the waits of one namespace: a per-namespace counter, bumped by every event of an object in that
/// namespace (a Namespace object counts as in itself). A wait sleeps until its namespace changes, so the
/// events of the rest of the fleet do not re-run its check.
#[derive(Default)]
struct Notifier {
    by_ns: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Notifier {
    fn subscribe(&self, ns: &str) -> watch::Receiver<u64> {
        let mut m = self.by_ns.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(ns.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    fn bump(&self, ns: &str) {
        let m = self.by_ns.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = m.get(ns) {
            tx.send_modify(|n| *n += 1);
        }
    }

    fn bump_all(&self) {
        let m = self.by_ns.lock().unwrap_or_else(|e| e.into_inner());
        for tx in m.values() {
            tx.send_modify(|n| *n += 1);
        }
    }
}

/// Every namespace's labels, by namespace name.
pub type NamespaceLabels = Arc<BTreeMap<String, BTreeMap<String, String>>>;

/// The run's watch caches of every kind the assessment, the backup and the gates read.
pub struct FleetCache {
    namespaces: Kind<Namespace, Arc<Namespace>>,
    services: Kind<Service, Json>,
    deployments: Kind<Deployment, Json>,
    statefulsets: Kind<StatefulSet, Json>,
    daemonsets: Kind<DaemonSet, Json>,
    replicasets: Kind<ReplicaSet, ReplicaSetView>,
    pods: Kind<Pod, PodView>,
    jobs: Kind<Job, Json>,
    cronjobs: Kind<CronJob, Json>,
    dynamic: BTreeMap<DynKind, Kind<DynamicObject, Json>>,
    /// The last [`FleetCache::namespace_labels`] answer and the Namespace cache's version it was built at:
    /// handed out again until a Namespace changes.
    labels: Mutex<Option<(u64, NamespaceLabels)>>,
    notifier: Arc<Notifier>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FleetCache {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A workload's pod template spec as the restart and the assessment read it (cached pods are projections,
/// [`PodView`]): container names, images, ports and restart policies, the service account and the node. Volumes, scheduling constraints,
/// and the environment, mounts, resources, commands, security contexts and health probes of containers
/// are dropped: in a real cluster they are most of a pod's bytes (an injected sidecar's environment and
/// arguments alone), and nothing here reads them.
fn trim_pod_spec(spec: &mut PodSpec) {
    spec.volumes = None;
    spec.affinity = None;
    spec.tolerations = None;
    spec.topology_spread_constraints = None;
    spec.security_context = None;
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        c.env = None;
        c.env_from = None;
        c.volume_mounts = None;
        c.resources = None;
        c.command = None;
        c.args = None;
        c.liveness_probe = None;
        c.readiness_probe = None;
        c.startup_probe = None;
        c.security_context = None;
        c.lifecycle = None;
    }
}

/// The top bit of an entry of [`Packed::ends`]: the string's flag.
const FLAG: u32 = 1 << 31;

/// The next bit of an entry of [`Packed::ends`]: the string is [`COMMON`]'s entry at the entry's low bits,
/// not in the packed text.
const SHARED: u32 = 1 << 30;

/// Strings most cached pods carry, kept once for the fleet instead of once per pod: the keys of the
/// labels and annotations Istio's sidecar injector adds to every injected pod (istio/istio
/// `manifests/charts/istio-control/istio-discovery/files/injection-template.yaml`: `security.istio.io/
/// tlsMode`, the canonical name and revision, `istio.io/rev`, kubectl's default-container annotations, the
/// Prometheus merge annotations, `sidecar.istio.io/status`), their usual values, Kubernetes' well-known
/// labels and owner kinds (`pod-template-hash`, `app.kubernetes.io/*`), the injected containers' names, pod
/// phases and condition values. They were about half of a cached injected pod's bytes; a string that is
/// not here is packed as before.
const COMMON: [&str; 59] = [
    "app",
    "version",
    "v1",
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "security.istio.io/tlsMode",
    "istio",
    "service.istio.io/canonical-name",
    "service.istio.io/canonical-revision",
    "networking.istio.io/tunnel",
    "http",
    "istio.io/rev",
    "default",
    "istio.io/dataplane-mode",
    "ambient",
    "none",
    "istio.io/use-waypoint",
    "sidecar.istio.io/inject",
    "true",
    "false",
    "kubectl.kubernetes.io/default-container",
    "kubectl.kubernetes.io/default-logs-container",
    "kubectl.kubernetes.io/restartedAt",
    "prometheus.io/path",
    "/stats/prometheus",
    "prometheus.io/port",
    "15020",
    "prometheus.io/scrape",
    "sidecar.istio.io/status",
    "sidecar.istio.io/interceptionMode",
    "ambient.istio.io/redirection",
    "enabled",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Deployment",
    "Job",
    "istio-proxy",
    "istio-init",
    "istio-validation",
    "Always",
    "Running",
    "Pending",
    "Succeeded",
    "Failed",
    "Unknown",
    "Ready",
    "True",
    "False",
    "ztunnel",
];

/// A cached pod as the few fields its readers use, rebuilt into a `Pod` on read so that every reader keeps
/// reading `Pod`. At 1,000 namespaces the pods were the biggest part of the caches as trimmed JSON (about
/// 2.35 KB each, BENCHMARKS.md §2b). The fields' strings are kept back to back in one allocation, not one
/// `Box<str>` each: most are shorter than glibc malloc's smallest chunk (32 bytes), so a struct of boxed
/// strings took more bytes than the JSON.
///
/// The contract: what the readers of cached pods read (the pod gates in `migrate-core/src/gates/pods.rs`,
/// the executor's current-pod selection, and the assessment's `Snapshot::pods` readers in
/// `migrate-core/src/assess/`), and all that a decoded pod carries:
/// - `metadata.name` (gate messages, findings, the merged-metrics pod list) and `metadata.namespace`;
/// - `metadata.labels`, all of them (workload selectors: the pod gates' `matchLabels`, the assessment's
///   Service and policy selectors);
/// - `metadata.annotations`: every key (`sidecar.istio.io/status` is read for its presence only), the
///   values of [`wire::POD_ANNOTATION_VALUES`] only; other values are empty;
/// - `metadata.ownerReferences`: `kind` and `name` (the unowned-pod finding); `apiVersion` and `uid` are
///   empty;
/// - `metadata.deletionTimestamp` (a terminating pod is not a workload's current pod, nor Ready);
/// - `spec.containers[].name`, `spec.initContainers[].name` and `.restartPolicy` (where `istio-proxy` is:
///   classic, native sidecar, plain init container);
/// - `spec.nodeName` (the nodes a namespace's pods run on, for the ztunnel coverage check);
/// - `status.phase` and the `Ready` condition's `type` and `status` (no other condition is read);
/// - `status.containerStatuses[]` and `status.initContainerStatuses[]`: `name` and `ready` (whether
///   `istio-proxy` is ready).
///
/// Nothing else survives: images, ports, the service account, uid, resourceVersion, other conditions,
/// condition reasons and times, restart counts. An empty string reads as absent (`nodeName`, `phase`,
/// `restartPolicy`), as every reader treats an empty one. A new reader of another field of cached pods
/// must add it here and to the round-trip test.
#[derive(Debug, Clone, PartialEq)]
struct PodView {
    /// Every string of the pod: name, namespace, nodeName, phase, then the lists in the order of
    /// `counts`. A string's flag is a container status's `ready`.
    strings: Packed,
    /// Entries of each list: labels (key, value), annotations (key, value), owners (kind, name),
    /// containers (name), init containers (name, restartPolicy), Ready conditions (type, status),
    /// container statuses (name, flagged when ready), init container statuses (likewise).
    counts: [u32; 8],
    deletion: Option<Time>,
}

/// Strings back to back in one allocation, each with a flag bit: a cached object's strings cost two
/// allocations instead of one each, and a string of [`COMMON`] costs only its entry.
#[derive(Debug, Clone, PartialEq)]
struct Packed {
    text: Box<str>,
    /// Per string, where it ends in `text` (it starts where the one before ends), or with [`SHARED`] set
    /// its index in [`COMMON`]; the top bit ([`FLAG`]) is the string's flag.
    ends: Box<[u32]>,
}

/// Builds a [`Packed`].
#[derive(Default)]
struct Packer {
    text: String,
    ends: Vec<u32>,
}

impl Packer {
    fn push(&mut self, s: &str, flag: bool) {
        let entry = match COMMON.iter().position(|c| *c == s) {
            Some(i) => SHARED | i as u32,
            None => {
                self.text.push_str(s);
                // The API server caps an object at a few MiB (etcd's request limit), far below `SHARED`.
                u32::try_from(self.text.len())
                    .unwrap_or(SHARED - 1)
                    .min(SHARED - 1)
            }
        };
        self.ends.push(if flag { entry | FLAG } else { entry });
    }

    /// Pushes a list's entries, each by `each`, and gives how many there were.
    fn list<T>(&mut self, items: impl IntoIterator<Item = T>, mut each: impl FnMut(&mut Self, T)) -> u32 {
        let mut n = 0;
        for i in items {
            each(self, i);
            n += 1;
        }
        n
    }

    fn finish(self) -> Packed {
        Packed {
            text: self.text.into_boxed_str(),
            ends: self.ends.into_boxed_slice(),
        }
    }
}

impl PodView {
    /// The projection of a pod as the watcher decoded it ([`wire::PodItem`]: its annotations already
    /// filtered to what the contract keeps).
    fn encode(p: wire::PodItem) -> Option<PodView> {
        let m = &p.metadata.0;
        let spec = p.spec.unwrap_or_default();
        let status = p.status.unwrap_or_default();
        let mut w = Packer::default();
        for s in [&m.name, &m.namespace, &spec.node_name, &status.phase] {
            w.push(s.as_deref().unwrap_or_default(), false);
        }
        let status_of = |w: &mut Packer, c: &wire::ContainerStatusItem| w.push(&c.name, c.ready);
        let counts = [
            w.list(m.labels.iter().flatten(), |w, (k, v)| {
                w.push(k, false);
                w.push(v, false);
            }),
            w.list(m.annotations.iter().flatten(), |w, (k, v)| {
                w.push(k, false);
                w.push(v, false);
            }),
            w.list(m.owner_references.iter().flatten(), |w, o| {
                w.push(&o.kind, false);
                w.push(&o.name, false);
            }),
            w.list(spec.containers.iter().flatten(), |w, c| w.push(&c.name, false)),
            w.list(spec.init_containers.iter().flatten(), |w, c| {
                w.push(&c.name, false);
                w.push(c.restart_policy.as_deref().unwrap_or_default(), false);
            }),
            w.list(
                status.conditions.iter().flatten().filter(|c| c.type_ == "Ready"),
                |w, c| {
                    w.push(&c.type_, false);
                    w.push(&c.status, false);
                },
            ),
            w.list(status.container_statuses.iter().flatten(), status_of),
            w.list(status.init_container_statuses.iter().flatten(), status_of),
        ];
        Some(PodView {
            strings: w.finish(),
            counts,
            deletion: p.metadata.0.deletion_timestamp,
        })
    }

    /// Whether the pod's labels include every pair of `selector`, read from the packed strings.
    fn has_labels(&self, selector: &BTreeMap<String, String>) -> bool {
        let mut labels = Reader::new(&self.strings);
        // Name, namespace, nodeName and phase come first.
        for _ in 0..4 {
            labels.next();
        }
        selector.iter().all(|(k, v)| {
            let mut r = labels.clone();
            (0..self.counts[0]).any(|_| {
                let (key, value) = (r.next().0, r.next().0);
                key == k && value == v
            })
        })
    }

    fn decode(&self) -> Option<Pod> {
        use k8s_openapi::api::core::v1::{Container, ContainerStatus, PodCondition, PodStatus};
        let mut r = Reader::new(&self.strings);
        let (name, namespace) = (r.text(), r.text());
        let (node_name, phase) = (r.some(), r.some());
        let [
            labels,
            annotations,
            owners,
            containers,
            inits,
            conditions,
            statuses,
            init_statuses,
        ] = self.counts;
        let labels = r.pairs(labels).collect();
        let annotations = r.pairs(annotations).collect();
        let owners = r.owners(owners);
        let containers = r.list(containers, |r| Container {
            name: r.text(),
            ..Container::default()
        });
        let inits = r.list(inits, |r| Container {
            name: r.text(),
            restart_policy: r.some(),
            ..Container::default()
        });
        let conditions = r.list(conditions, |r| PodCondition {
            type_: r.text(),
            status: r.text(),
            ..PodCondition::default()
        });
        let status = |r: &mut Reader| {
            let (name, ready) = r.next();
            ContainerStatus {
                name: name.to_string(),
                ready,
                ..ContainerStatus::default()
            }
        };
        let statuses = r.list(statuses, status);
        let init_statuses = r.list(init_statuses, status);
        Some(Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(name),
                namespace: Some(namespace),
                labels: non_empty_map(labels),
                annotations: non_empty_map(annotations),
                owner_references: non_empty(owners),
                deletion_timestamp: self.deletion.clone(),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers,
                init_containers: non_empty(inits),
                node_name,
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase,
                conditions: non_empty(conditions),
                container_statuses: non_empty(statuses),
                init_container_statuses: non_empty(init_statuses),
                ..PodStatus::default()
            }),
        })
    }
}

/// Reads a [`Packed`]'s strings in the order they were packed.
#[derive(Clone)]
struct Reader<'a> {
    packed: &'a Packed,
    /// The next entry of `ends`.
    at: usize,
    /// Where the next string starts in `text`.
    start: usize,
}

impl<'a> Reader<'a> {
    fn new(packed: &'a Packed) -> Self {
        Reader {
            packed,
            at: 0,
            start: 0,
        }
    }

    /// How many strings are left.
    fn left(&self) -> usize {
        self.packed.ends.len().saturating_sub(self.at)
    }

    /// The next string and its flag (empty past the end).
    fn next(&mut self) -> (&'a str, bool) {
        let Some(&e) = self.packed.ends.get(self.at) else {
            return ("", false);
        };
        self.at += 1;
        let low = (e & !(FLAG | SHARED)) as usize;
        let s = if e & SHARED != 0 {
            COMMON.get(low).copied().unwrap_or_default()
        } else {
            let s = self.packed.text.get(self.start..low).unwrap_or_default();
            self.start = low;
            s
        };
        (s, e & FLAG != 0)
    }

    fn text(&mut self) -> String {
        self.next().0.to_string()
    }

    /// The next string, `None` when empty.
    fn some(&mut self) -> Option<String> {
        Some(self.text()).filter(|s| !s.is_empty())
    }

    fn pairs(&mut self, n: u32) -> impl Iterator<Item = (String, String)> {
        self.list(n, |r| (r.text(), r.text())).into_iter()
    }

    /// `n` owner references packed as kind and name, the rest of their fields empty.
    fn owners(&mut self, n: u32) -> Vec<OwnerReference> {
        self.list(n, |r| OwnerReference {
            kind: r.text(),
            name: r.text(),
            ..OwnerReference::default()
        })
    }

    fn list<T>(&mut self, n: u32, mut each: impl FnMut(&mut Self) -> T) -> Vec<T> {
        (0..n).map(|_| each(self)).collect()
    }
}

/// `None` for an empty list: every reader treats an absent list as an empty one.
fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

fn non_empty_map(m: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!m.is_empty()).then_some(m)
}

/// A cached ReplicaSet as its one reader uses it, rebuilt into a `ReplicaSet` on read: the assessment's
/// unowned-pod finding (`migrate-core/src/assess/preflight.rs`) looks up a pod's owning ReplicaSet by name
/// and asks whether a Deployment owns it. The contract: `metadata.name`, `metadata.namespace`, and each
/// owner reference's `kind` and `name` (`apiVersion` and `uid` empty). Labels, annotations, the spec and
/// the status are not kept; a new reader of them must add them here and to the round-trip test.
#[derive(Debug, Clone, PartialEq)]
struct ReplicaSetView {
    /// Name, namespace, then each owner's kind and name.
    strings: Packed,
}

impl ReplicaSetView {
    fn encode(rs: wire::ReplicaSetItem) -> Option<ReplicaSetView> {
        let m = &rs.metadata.0;
        let mut w = Packer::default();
        w.push(m.name.as_deref().unwrap_or_default(), false);
        w.push(m.namespace.as_deref().unwrap_or_default(), false);
        for o in m.owner_references.iter().flatten() {
            w.push(&o.kind, false);
            w.push(&o.name, false);
        }
        Some(ReplicaSetView { strings: w.finish() })
    }

    fn decode(&self) -> Option<ReplicaSet> {
        let mut r = Reader::new(&self.strings);
        let (name, namespace) = (r.text(), r.text());
        let owners = r.owners((r.left() / 2) as u32);
        Some(ReplicaSet {
            metadata: kube::api::ObjectMeta {
                name: Some(name),
                namespace: Some(namespace),
                owner_references: non_empty(owners),
                ..Default::default()
            },
            ..ReplicaSet::default()
        })
    }
}

/// A workload's pod template as the restart and the assessment read it: its spec trimmed as a pod's.
fn trim_template(t: &mut k8s_openapi::api::core::v1::PodTemplateSpec) {
    if let Some(spec) = t.spec.as_mut() {
        trim_pod_spec(spec);
    }
}

/// The function that gives a workload of kind `$t` as its cache keeps it: its pod template trimmed
/// ([`trim_template`]), and its status conditions without their messages and times (`$extra` names a
/// kind's further time field). The rollout gate reads a condition's `type` and `reason` only (kubectl's
/// `rollout_status.go` likewise), and the messages and times were a third of a cached Deployment.
macro_rules! keep_workload {
    ($name:ident, $t:ty $(, $extra:ident)?) => {
        fn $name(mut o: $t) -> $t {
            trim_template(&mut o.spec.template);
            for c in o.status.iter_mut().flat_map(|s| s.conditions.iter_mut().flatten()) {
                (c.message, c.last_transition_time) = (None, None);
                $(c.$extra = None;)?
            }
            o
        }
    };
}

keep_workload!(keep_deployment, Deployment, last_update_time);
keep_workload!(keep_statefulset, StatefulSet);
keep_workload!(keep_daemonset, DaemonSet);

/// Starts the reflector of one kind (cluster-wide) on `tasks`: a kube-runtime watcher (list, then watch
/// from the list's resourceVersion, relisting on expiry), whose objects are decoded as `W`, kept by
/// `codec`, and announced to the waits of their namespace.
fn start<W, K, S>(
    api: kube::Api<W>,
    what: String,
    codec: Codec<W, K, S>,
    notifier: &Arc<Notifier>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Kind<K, S>
where
    W: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    S: Send + Sync + 'static,
{
    let objects: Arc<RwLock<ByNamespace<S>>> = Arc::default();
    let version: Arc<AtomicU64> = Arc::default();
    let changed = version.clone();
    let (state_tx, state) = watch::channel(CacheState::Syncing);
    let notifier = notifier.clone();
    let kind = what.clone();
    let encode = codec.encode;
    let store = objects.clone();
    // The waits to wake: the object's namespace's, or a Namespace object's own.
    let wake = |o: &W| {
        let m = o.meta();
        m.namespace.clone().or_else(|| m.name.clone()).unwrap_or_default()
    };
    let scope = |o: &W| o.meta().namespace.clone().unwrap_or_default();
    let stream = watcher::watcher(api, watcher::Config::default().page_size(LIST_PAGE)).default_backoff();
    tasks.push(tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut relist: Option<ByNamespace<S>> = None;
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(Event::Init) => relist = Some(HashMap::new()),
                Ok(Event::InitApply(o)) => {
                    let (ns, name) = (scope(&o), o.meta().name.clone().unwrap_or_default());
                    if let (Some(m), Some(v)) = (relist.as_mut(), encode(o)) {
                        m.entry(ns).or_default().insert(name, v);
                    }
                }
                Ok(Event::InitDone) => {
                    if let Some(m) = relist.take() {
                        *store.write().unwrap_or_else(|e| e.into_inner()) = m;
                        changed.fetch_add(1, Ordering::Release);
                    }
                    state_tx.send_replace(CacheState::Ready);
                    notifier.bump_all();
                }
                Ok(Event::Apply(o)) => {
                    let (ns, name) = (scope(&o), o.meta().name.clone().unwrap_or_default());
                    let wake = wake(&o);
                    if let Some(v) = encode(o) {
                        let mut m = store.write().unwrap_or_else(|e| e.into_inner());
                        m.entry(ns).or_default().insert(name, v);
                        changed.fetch_add(1, Ordering::Release);
                    }
                    notifier.bump(&wake);
                }
                Ok(Event::Delete(o)) => {
                    let (ns, name) = (scope(&o), o.meta().name.clone().unwrap_or_default());
                    let wake = wake(&o);
                    {
                        let mut m = store.write().unwrap_or_else(|e| e.into_inner());
                        if let Some(objs) = m.get_mut(&ns) {
                            objs.remove(&name);
                            if objs.is_empty() {
                                m.remove(&ns);
                            }
                        }
                        changed.fetch_add(1, Ordering::Release);
                    }
                    notifier.bump(&wake);
                }
                Err(watcher::Error::InitialListFailed(kube::Error::Api(s)))
                    if s.code == 404 && *state_tx.borrow() == CacheState::Syncing =>
                {
                    state_tx.send_replace(CacheState::Absent);
                    notifier.bump_all();
                    return;
                }
                Err(watcher::Error::InitialListFailed(kube::Error::Api(s)))
                    if s.code == 403 && *state_tx.borrow() == CacheState::Syncing =>
                {
                    state_tx.send_replace(CacheState::Failed(format!(
                        "list {kind} in all namespaces: API server answered 403 {}: {}; grant list and watch on it cluster-wide (RBAC: ci/k8s/clusterrole.yaml)",
                        s.reason, s.message
                    )));
                    notifier.bump_all();
                    return;
                }
                Err(e) => tracing::debug!(kind = %kind, error = %e, "watch error, retrying"),
            }
        }
    }));
    Kind {
        objects,
        version,
        state,
        what,
        decode: codec.decode,
    }
}

impl<K, S> Kind<K, S> {
    /// Waits until the first list is in, at most until `until`.
    async fn ready(&self, until: Instant) -> Result<(), ClusterError> {
        let started = Instant::now();
        let mut state = self.state.clone();
        let wait = state.wait_for(|s| *s != CacheState::Syncing);
        match tokio::time::timeout_at(until, wait).await {
            Ok(Ok(s)) => match &*s {
                CacheState::Failed(m) => Err(ClusterError::Refused {
                    what: format!("watch cache of {}", self.what),
                    message: m.clone(),
                }),
                _ => Ok(()),
            },
            Ok(Err(_)) => Err(ClusterError::WaitFailed {
                what: format!("watch cache of {}", self.what),
                message: "the cache stopped".into(),
            }),
            Err(_) => Err(ClusterError::Timeout {
                what: format!("first list of {} for the watch cache", self.what),
                after: started.elapsed(),
                last: "still listing".into(),
            }),
        }
    }

    /// Drops every cached object (the map's memory with them).
    fn clear(&self) {
        *self.objects.write().unwrap_or_else(|e| e.into_inner()) = HashMap::new();
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The cached objects of namespace `ns`, sorted by name as the API server lists them (etcd key order):
    /// a plan must not depend on anything else (restart batches keep the listed order).
    fn in_ns(&self, ns: &str) -> Vec<K> {
        let m = self.objects.read().unwrap_or_else(|e| e.into_inner());
        m.get(ns)
            .into_iter()
            .flat_map(|objs| objs.values())
            .filter_map(self.decode)
            .collect()
    }

    /// One cached object (the namespace's own entry, no scan).
    fn get(&self, ns: &str, name: &str) -> Option<K> {
        let m = self.objects.read().unwrap_or_else(|e| e.into_inner());
        m.get(ns)?.get(name).and_then(self.decode)
    }
}

impl<K> Kind<K, Json> {
    /// One cached object as kept, not decoded.
    fn stored(&self, ns: &str, name: &str) -> Option<Json> {
        let m = self.objects.read().unwrap_or_else(|e| e.into_inner());
        m.get(ns)?.get(name).cloned()
    }
}

impl FleetCache {
    /// Starts one reflector per kind, cluster-wide. Nothing is listed until the tasks run; call
    /// [`FleetCache::ready`] before reading.
    pub fn start(cluster: &Cluster) -> Arc<FleetCache> {
        let notifier = Arc::new(Notifier::default());
        let mut tasks = Vec::new();
        let c = cluster.client().clone();
        /// A kind kept whole as JSON, decoded as [`wire::WholeItem`] and trimmed by `$trim`.
        macro_rules! json {
            ($t:ty, $what:expr, $trim:expr) => {
                start::<wire::WholeItem<$t>, $t, Json>(
                    kube::Api::all(c.clone()),
                    $what.into(),
                    Codec {
                        encode: |o| to_json(($trim)(o.into_whole())),
                        decode: |b| from_json(b),
                    },
                    &notifier,
                    &mut tasks,
                )
            };
        }
        let namespaces = start::<wire::WholeItem<Namespace>, Namespace, Arc<Namespace>>(
            kube::Api::all(c.clone()),
            "Namespaces".into(),
            Codec {
                encode: |o| Some(Arc::new(o.into_whole())),
                decode: |o| Some((**o).clone()),
            },
            &notifier,
            &mut tasks,
        );
        // The wire items leave out `managedFields` and `last-applied-configuration` already.
        let services = json!(Service, "Services", |o: Service| o);
        let deployments = json!(Deployment, "Deployments", keep_deployment);
        let statefulsets = json!(StatefulSet, "StatefulSets", keep_statefulset);
        let daemonsets = json!(DaemonSet, "DaemonSets", keep_daemonset);
        let replicasets = start::<wire::ReplicaSetItem, ReplicaSet, ReplicaSetView>(
            kube::Api::all(c.clone()),
            "ReplicaSets".into(),
            Codec {
                encode: ReplicaSetView::encode,
                decode: ReplicaSetView::decode,
            },
            &notifier,
            &mut tasks,
        );
        let pods = start::<wire::PodItem, Pod, PodView>(
            kube::Api::all(c.clone()),
            "Pods".into(),
            Codec {
                encode: PodView::encode,
                decode: PodView::decode,
            },
            &notifier,
            &mut tasks,
        );
        let jobs = json!(Job, "Jobs", |o: Job| o);
        let cronjobs = json!(CronJob, "CronJobs", |o: CronJob| o);
        let dynamic = DynKind::ALL
            .iter()
            .map(|k| {
                let ar = k.api_resource();
                let api: kube::Api<DynamicObject> = kube::Api::all_with(c.clone(), &ar);
                // Configuration objects go into backups whole: only managedFields is dropped.
                let kind = start(
                    api,
                    format!("{k}s"),
                    Codec {
                        encode: |mut o: DynamicObject| {
                            o.metadata.managed_fields = None;
                            to_json(o)
                        },
                        decode: |b| from_json(b),
                    },
                    &notifier,
                    &mut tasks,
                );
                (*k, kind)
            })
            .collect();
        Arc::new(FleetCache {
            namespaces,
            services,
            deployments,
            statefulsets,
            daemonsets,
            replicasets,
            pods,
            jobs,
            cronjobs,
            dynamic,
            labels: Mutex::default(),
            notifier,
            tasks,
        })
    }

    /// Stops every reflector and frees the cached objects, for when nothing will read the caches again (the
    /// fleet's namespaces have all finished): what the run builds afterwards (its report) then reuses their
    /// memory instead of adding to it. Reads after this see no objects (at most the few a reflector applied
    /// while it was being stopped).
    pub fn release(&self) {
        for t in &self.tasks {
            t.abort();
        }
        self.namespaces.clear();
        self.services.clear();
        self.deployments.clear();
        self.statefulsets.clear();
        self.daemonsets.clear();
        self.replicasets.clear();
        self.pods.clear();
        self.jobs.clear();
        self.cronjobs.clear();
        for k in self.dynamic.values() {
            k.clear();
        }
        *self.labels.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Waits until every kind is listed (or known absent), at most until `until`.
    pub async fn ready(&self, until: Instant) -> Result<(), ClusterError> {
        self.namespaces.ready(until).await?;
        self.services.ready(until).await?;
        self.deployments.ready(until).await?;
        self.statefulsets.ready(until).await?;
        self.daemonsets.ready(until).await?;
        self.replicasets.ready(until).await?;
        self.pods.ready(until).await?;
        self.jobs.ready(until).await?;
        self.cronjobs.ready(until).await?;
        for k in self.dynamic.values() {
            k.ready(until).await?;
        }
        Ok(())
    }

    /// A receiver that changes on every event applied to an object of namespace `ns` (or to the Namespace
    /// `ns` itself), and when a cache becomes ready.
    pub fn changes_in(&self, ns: &str) -> watch::Receiver<u64> {
        self.notifier.subscribe(ns)
    }

    /// Every namespace's labels, as cached now (one map, shared by the snapshots that read it).
    pub fn namespace_labels(&self) -> NamespaceLabels {
        let mut last = self.labels.lock().unwrap_or_else(|e| e.into_inner());
        // Read before the objects: a change landing meanwhile leaves the answer at an older version, so
        // the next call builds it again.
        let version = self.namespaces.version.load(Ordering::Acquire);
        if let Some((v, l)) = &*last
            && *v == version
        {
            return l.clone();
        }
        let m = self.namespaces.objects.read().unwrap_or_else(|e| e.into_inner());
        let current = || {
            m.values()
                .flat_map(|objs| objs.values())
                .filter_map(|n| Some((n.metadata.name.as_ref()?, n.metadata.labels.as_ref())))
        };
        // Most Namespace changes are not label changes (the runner's own state annotation, one patch per
        // phase): compared in place, the map is built again only when a label changed, not for each
        // snapshot taken while other namespaces' annotations move.
        if let Some((_, l)) = &*last {
            let mut seen = 0;
            let same = current().all(|(name, labels)| {
                seen += 1;
                l.get(name)
                    .is_some_and(|v| labels.map_or(v.is_empty(), |x| x == v))
            }) && seen == l.len();
            if same {
                let l = l.clone();
                *last = Some((version, l.clone()));
                return l;
            }
        }
        let labels: BTreeMap<_, _> = current()
            .map(|(name, labels)| (name.clone(), labels.cloned().unwrap_or_default()))
            .collect();
        drop(m);
        let l = Arc::new(labels);
        *last = Some((version, l.clone()));
        l
    }

    /// The cached objects of a custom kind in `ns`, as JSON (what the assessment and the backup read).
    pub fn dyn_values(&self, kind: DynKind, ns: &str) -> Vec<Value> {
        self.dynamic
            .get(&kind)
            .map(|k| k.in_ns(ns))
            .unwrap_or_default()
            .into_iter()
            .map(|o| super::dynamic::with_types(kind, o))
            .filter_map(|o| serde_json::to_value(o).ok())
            .collect()
    }

    /// The snapshot of `ns` the assessment reads, from the caches (what [`Cluster::read_snapshot`] lists).
    pub fn snapshot(&self, ns: &str, info: &ClusterInfo) -> Result<Snapshot, ClusterError> {
        let namespace = self
            .namespaces
            .get("", ns)
            .ok_or_else(|| ClusterError::NotFound {
                what: format!("get Namespace {ns}"),
            })?;
        let objects = super::snapshot::Objects {
            services: self.services.in_ns(ns),
            deployments: self.deployments.in_ns(ns),
            statefulsets: self.statefulsets.in_ns(ns),
            daemonsets: self.daemonsets.in_ns(ns),
            replicasets: self.replicasets.in_ns(ns),
            pods: self.pods.in_ns(ns),
            jobs: self.jobs.in_ns(ns),
            cronjobs: self.cronjobs.in_ns(ns),
        };
        Ok(super::snapshot::assemble(
            namespace,
            objects,
            |k| self.dyn_values(k, ns),
            info,
        ))
    }

    /// A cached Deployment.
    pub fn deployment(&self, ns: &str, name: &str) -> Option<Deployment> {
        self.deployments.get(ns, name)
    }

    /// A cached StatefulSet.
    pub fn statefulset(&self, ns: &str, name: &str) -> Option<StatefulSet> {
        self.statefulsets.get(ns, name)
    }

    /// A cached DaemonSet.
    pub fn daemonset(&self, ns: &str, name: &str) -> Option<DaemonSet> {
        self.daemonsets.get(ns, name)
    }

    /// What a restart needs to know of a cached workload: its generation, whether its pod template
    /// already carries `kubectl.kubernetes.io/restartedAt` = `restarted_at`, and whether it is a paused
    /// Deployment. `None` when the workload is not cached.
    pub fn restart_state(
        &self,
        kind: super::WorkloadKind,
        ns: &str,
        name: &str,
        restarted_at: &str,
    ) -> Option<(i64, bool, bool)> {
        let carries = |t: &k8s_openapi::api::core::v1::PodTemplateSpec| {
            super::restart::template_carries(t, restarted_at)
        };
        match kind {
            super::WorkloadKind::Deployment => self.deployment(ns, name).map(|d| {
                (
                    d.metadata.generation.unwrap_or(0),
                    carries(&d.spec.template),
                    d.spec.paused.unwrap_or(false),
                )
            }),
            super::WorkloadKind::StatefulSet => self.statefulset(ns, name).map(|d| {
                (
                    d.metadata.generation.unwrap_or(0),
                    carries(&d.spec.template),
                    false,
                )
            }),
            super::WorkloadKind::DaemonSet => self.daemonset(ns, name).map(|d| {
                (
                    d.metadata.generation.unwrap_or(0),
                    carries(&d.spec.template),
                    false,
                )
            }),
        }
    }

    /// The cached Services of `ns`.
    pub fn services(&self, ns: &str) -> Vec<Service> {
        self.services.in_ns(ns)
    }

    /// A cached custom object, as JSON.
    pub fn dyn_value(&self, kind: DynKind, ns: &str, name: &str) -> Option<Value> {
        self.dynamic
            .get(&kind)?
            .get(ns, name)
            .map(|o| super::dynamic::with_types(kind, o))
            .and_then(|o| serde_json::to_value(o).ok())
    }

    /// The cached pods of `ns` whose labels include every pair of `selector` (a workload's
    /// `matchLabels`).
    /// Matched on the kept labels, so only the matching pods are decoded (a wait reads them on every
    /// event of the namespace).
    pub fn pods_matching(&self, ns: &str, selector: &BTreeMap<String, String>) -> Vec<Pod> {
        let m = self.pods.objects.read().unwrap_or_else(|e| e.into_inner());
        m.get(ns)
            .into_iter()
            .flat_map(|objs| objs.values())
            .filter(|p| p.has_labels(selector))
            .filter_map(PodView::decode)
            .collect()
    }

    /// Waits until `check`, which reads the objects of namespace `ns`, is done: evaluated on the caches now
    /// and again on every event applied to an object of `ns`, so the wait ends on the watch event that
    /// satisfies it, with no timer, and events elsewhere in the fleet do not re-run it. Timeout at `until`,
    /// carrying the last observed state.
    pub async fn wait<F>(
        &self,
        what: &str,
        ns: &str,
        until: Instant,
        mut check: F,
    ) -> Result<(), ClusterError>
    where
        F: FnMut(&FleetCache) -> super::Check,
    {
        let started = Instant::now();
        let mut changes = self.changes_in(ns);
        let mut last: String;
        loop {
            changes.borrow_and_update();
            match check(self) {
                super::Check::Done => return Ok(()),
                super::Check::Pending(s) => last = s,
                super::Check::Failed(message) => {
                    return Err(ClusterError::WaitFailed {
                        what: what.to_string(),
                        message,
                    });
                }
            }
            match tokio::time::timeout_at(until, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(ClusterError::WaitFailed {
                        what: what.to_string(),
                        message: "the watch caches stopped".into(),
                    });
                }
                Err(_) => {
                    return Err(ClusterError::Timeout {
                        what: what.to_string(),
                        after: started.elapsed(),
                        last,
                    });
                }
            }
        }
    }

    /// [`Cluster::wait_rollout`] on the caches: kubectl's rollout rules (`gates::rollout`), at least
    /// `min_generation` observed; a deleted workload or an exceeded progress deadline fails at once.
    pub async fn wait_rollout(
        &self,
        kind: super::WorkloadKind,
        ns: &str,
        name: &str,
        min_generation: i64,
        until: Instant,
    ) -> Result<super::RolloutDone, ClusterError> {
        use crate::gates::rollout::{self, RolloutStatus};
        let what = format!("rollout of {}", super::obj_name(kind.as_str(), Some(ns), name));
        let min = Some(min_generation);
        let mut done = None;
        // The workload as last evaluated and its pending verdict: the wait wakes on every event of the
        // namespace (its pods', its ReplicaSets'), most of which leave the workload as it was, and is then
        // answered without decoding it again.
        let mut pending: Option<(Json, String)> = None;
        self.wait(&what, ns, until, |c| {
            let stored = match kind {
                super::WorkloadKind::Deployment => c.deployments.stored(ns, name),
                super::WorkloadKind::StatefulSet => c.statefulsets.stored(ns, name),
                super::WorkloadKind::DaemonSet => c.daemonsets.stored(ns, name),
            };
            if let (Some(now), Some((then, m))) = (&stored, &pending)
                && Arc::ptr_eq(now, then)
            {
                return super::Check::Pending(m.clone());
            }
            let seen = stored.as_deref().and_then(|b| match kind {
                super::WorkloadKind::Deployment => from_json::<Deployment>(b).map(|o| {
                    let g = o.status.as_ref().and_then(|s| s.observed_generation);
                    (rollout::deployment_status(&o, min), g)
                }),
                super::WorkloadKind::StatefulSet => from_json::<StatefulSet>(b).map(|o| {
                    let g = o.status.as_ref().and_then(|s| s.observed_generation);
                    (rollout::statefulset_status(&o, min), g)
                }),
                super::WorkloadKind::DaemonSet => from_json::<DaemonSet>(b).map(|o| {
                    let g = o.status.as_ref().and_then(|s| s.observed_generation);
                    (rollout::daemonset_status(&o, min), g)
                }),
            });
            match seen {
                None => super::Check::Failed("object has been deleted".into()),
                Some((RolloutStatus::Done(message), g)) => {
                    done = Some(super::RolloutDone {
                        message,
                        observed_generation: g.unwrap_or(0),
                    });
                    super::Check::Done
                }
                Some((RolloutStatus::Waiting(m), _)) => {
                    pending = stored.map(|s| (s, m.clone()));
                    super::Check::Pending(m)
                }
                Some((RolloutStatus::Failed(m), _)) => super::Check::Failed(m),
            }
        })
        .await?;
        done.ok_or_else(|| ClusterError::WaitFailed {
            what,
            message: "rollout wait ended without a verdict".into(),
        })
    }

    /// [`Cluster::wait_pods_set`] on the caches: the pods of `ns` matching `selector`, as a set.
    pub async fn wait_pods_set<F>(
        &self,
        ns: &str,
        selector: &BTreeMap<String, String>,
        until: Instant,
        mut check: F,
    ) -> Result<super::PodsWait, ClusterError>
    where
        F: FnMut(&[Pod]) -> super::Check,
    {
        let what = format!("pods of {ns} matching {selector:?}");
        let mut pods = Vec::new();
        self.wait(&what, ns, until, |c| {
            pods = c.pods_matching(ns, selector);
            check(&pods)
        })
        .await?;
        Ok(super::PodsWait { pods })
    }
}

#[cfg(test)]
mod tests {
    use super::wire::{LAST_APPLIED, POD_ANNOTATION_VALUES};
    use super::*;
    use crate::gates::pods::{pod_ready, proxy_placement, sidecar_free_and_enrolled, sidecar_ready};
    use serde_json::json;

    /// A pod as the injector and the kubelet leave it: a classic sidecar with its environment, arguments,
    /// mounts, probe and resources, the `istio-init` init container, the injector's annotations and
    /// labels, Prometheus' merged-metrics annotations, the kubelet's conditions and statuses, managed fields.
    fn injected_pod() -> Pod {
        let env: Vec<Value> = (0..20)
            .map(|i| json!({"name": format!("ISTIO_META_{i}"), "value": "x".repeat(40)}))
            .collect();
        let status_annotation = json!({
            "initContainers": ["istio-init"], "containers": ["istio-proxy"],
            "volumes": ["workload-socket", "credential-socket", "workload-certs", "istio-envoy",
                        "istio-data", "istio-podinfo", "istio-token", "istiod-ca-cert"],
            "imagePullSecrets": null, "revision": "default"
        })
        .to_string();
        let condition = |t: &str| {
            json!({"type": t, "status": "True", "lastProbeTime": null,
                                         "lastTransitionTime": "2026-01-01T00:00:00Z"})
        };
        serde_json::from_value(json!({
            "metadata": {
                "name": "app-0-5d9c7b8f6d-abcde", "generateName": "app-0-5d9c7b8f6d-",
                "namespace": "shop", "uid": "0b7c3a4e-5f1d-4c2a-9e8b-1a2b3c4d5e6f", "resourceVersion": "7",
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"app": "app-0", "pod-template-hash": "5d9c7b8f6d",
                           "security.istio.io/tlsMode": "istio",
                           "service.istio.io/canonical-name": "app-0",
                           "service.istio.io/canonical-revision": "latest"},
                "annotations": {
                    "sidecar.istio.io/status": status_annotation,
                    "kubectl.kubernetes.io/default-container": "app",
                    "kubectl.kubernetes.io/default-logs-container": "app",
                    "istio.io/rev": "default",
                    "prometheus.io/path": "/stats/prometheus",
                    "prometheus.io/port": "15020",
                    "prometheus.io/scrape": "true",
                    LAST_APPLIED: "{\"big\": true}"
                },
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "app-0-5d9c7b8f6d",
                                     "uid": "9f8e7d6c-5b4a-4f3e-8d2c-1b0a9f8e7d6c", "controller": true,
                                     "blockOwnerDeletion": true}],
                "managedFields": [{"manager": "kubelet", "operation": "Update",
                                   "fieldsV1": {"f:status": {"f:phase": {}}}}]
            },
            "spec": {
                "serviceAccountName": "app",
                "nodeName": "node-1",
                "volumes": [{"name": "istio-envoy", "emptyDir": {}}],
                "containers": [
                    {"name": "app", "image": "shop/app:1", "ports": [{"name": "http", "containerPort": 8080}]},
                    {"name": "istio-proxy", "image": "istio/proxyv2:1.30", "args": ["proxy", "sidecar"],
                     "env": env, "volumeMounts": [{"name": "istio-envoy", "mountPath": "/etc/istio"}],
                     "ports": [{"name": "http-envoy-prom", "containerPort": 15090}],
                     "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}},
                     "resources": {"limits": {"cpu": "2"}}}
                ],
                "initContainers": [{"name": "istio-init", "image": "istio/proxyv2:1.30", "args": ["-p", "15001"]}]
            },
            "status": {
                "phase": "Running", "hostIP": "10.0.0.1", "podIP": "10.1.0.5", "startTime": "2026-01-01T00:00:00Z",
                "qosClass": "Burstable",
                "conditions": [condition("PodReadyToStartContainers"), condition("Initialized"),
                               condition("Ready"), condition("ContainersReady"), condition("PodScheduled")],
                "initContainerStatuses": [
                    {"name": "istio-init", "ready": true, "restartCount": 0, "image": "istio/proxyv2:1.30",
                     "imageID": "sha256:2", "started": false,
                     "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
                ],
                "containerStatuses": [
                    {"name": "app", "ready": true, "restartCount": 0, "image": "shop/app:1", "imageID": "sha256:1",
                     "started": true, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}},
                    {"name": "istio-proxy", "ready": true, "restartCount": 1, "image": "istio/proxyv2:1.30",
                     "imageID": "sha256:2", "started": true,
                     "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}
                ]
            }
        }))
        .expect("pod fixture")
    }

    /// The injected pod with `istio-proxy` as a native sidecar: an init container with `restartPolicy:
    /// Always`, its status among the init containers'.
    fn native_sidecar_pod() -> Pod {
        let mut p = injected_pod();
        let spec = p.spec.as_mut().expect("spec");
        let proxy = spec.containers.pop().expect("proxy");
        spec.init_containers = Some(vec![k8s_openapi::api::core::v1::Container {
            restart_policy: Some("Always".into()),
            ..proxy
        }]);
        let st = p.status.as_mut().expect("status");
        let proxy = st
            .container_statuses
            .as_mut()
            .expect("statuses")
            .pop()
            .expect("proxy");
        st.init_container_statuses = Some(vec![proxy]);
        p
    }

    /// The pod after the migration: no sidecar, enrolled by istio-cni; `terminating` also gives it a
    /// deletionTimestamp.
    fn ambient_pod(terminating: bool) -> Pod {
        let mut p = injected_pod();
        let spec = p.spec.as_mut().expect("spec");
        spec.containers.retain(|c| c.name != "istio-proxy");
        spec.init_containers = None;
        let st = p.status.as_mut().expect("status");
        st.init_container_statuses = None;
        st.container_statuses
            .as_mut()
            .expect("statuses")
            .retain(|c| c.name != "istio-proxy");
        let a = p.metadata.annotations.as_mut().expect("annotations");
        a.retain(|k, _| k.starts_with("kubectl.kubernetes.io/"));
        a.insert("ambient.istio.io/redirection".into(), "enabled".into());
        if terminating {
            p.metadata.deletion_timestamp = Some(Time("2026-01-01T00:05:00Z".parse().expect("timestamp")));
        }
        p
    }

    /// What [`PodView`]'s contract says a cached pod's readers read, absent lists as empty ones,
    /// annotation values nobody reads blank, the Ready condition alone.
    fn contract(p: &Pod) -> Value {
        let m = &p.metadata;
        let spec = p.spec.clone().unwrap_or_default();
        let st = p.status.clone().unwrap_or_default();
        let annotations: BTreeMap<&String, &str> = m
            .annotations
            .iter()
            .flatten()
            .map(|(k, v)| {
                let read = POD_ANNOTATION_VALUES.contains(&k.as_str());
                (k, if read { v.as_str() } else { "" })
            })
            .collect();
        let statuses = |l: &Option<Vec<k8s_openapi::api::core::v1::ContainerStatus>>| {
            l.iter()
                .flatten()
                .map(|c| json!([c.name, c.ready]))
                .collect::<Vec<_>>()
        };
        json!({
            "name": m.name, "namespace": m.namespace,
            "labels": m.labels.clone().unwrap_or_default(),
            "annotations": annotations,
            "owners": m.owner_references.iter().flatten().map(|o| json!([o.kind, o.name])).collect::<Vec<_>>(),
            "deletion": m.deletion_timestamp,
            "containers": spec.containers.iter().map(|c| &c.name).collect::<Vec<_>>(),
            "initContainers": spec.init_containers.iter().flatten()
                .map(|c| json!([c.name, c.restart_policy])).collect::<Vec<_>>(),
            "nodeName": spec.node_name,
            "phase": st.phase,
            "conditions": st.conditions.iter().flatten().filter(|c| c.type_ == "Ready")
                .map(|c| json!([c.type_, c.status])).collect::<Vec<_>>(),
            "containerStatuses": statuses(&st.container_statuses),
            "initContainerStatuses": statuses(&st.init_container_statuses),
        })
    }

    /// The heap bytes of packed strings: their two allocations as glibc's malloc lays them out (the
    /// length plus an 8-byte header, in 16-byte steps, at least 32).
    fn packed_bytes(p: &Packed) -> usize {
        let alloc = |n: usize| {
            if n == 0 {
                0
            } else {
                (n + 8).next_multiple_of(16).max(32)
            }
        };
        alloc(p.text.len()) + alloc(std::mem::size_of_val(&*p.ends))
    }

    /// A pod as the cache kept it when it held pods as trimmed JSON: identity, labels, annotations, owners,
    /// the trimmed spec ([`trim_pod_spec`]), phase, conditions and which containers are ready. Its JSON is
    /// what the projection's size is measured against (BENCHMARKS.md §2b).
    fn former_trim(mut p: Pod) -> Pod {
        trim_meta(&mut p.metadata);
        if let Some(spec) = p.spec.as_mut() {
            trim_pod_spec(spec);
        }
        if let Some(st) = p.status.as_mut() {
            st.host_ip = None;
            st.host_ips = None;
            st.pod_ips = None;
            st.start_time = None;
            st.qos_class = None;
            for c in st.conditions.iter_mut().flatten() {
                c.last_probe_time = None;
                c.last_transition_time = None;
                c.message = None;
            }
            for c in st
                .container_statuses
                .iter_mut()
                .flatten()
                .chain(st.init_container_statuses.iter_mut().flatten())
            {
                c.image = String::new();
                c.image_id = String::new();
                c.container_id = None;
                c.last_state = None;
                c.state = None;
                c.resources = None;
                c.volume_mounts = None;
                c.allocated_resources = None;
                c.user = None;
            }
        }
        p
    }

    /// The cache's trim of a full object's metadata before the wire items: `managedFields` and the
    /// `last-applied-configuration` annotation dropped.
    fn trim_meta(m: &mut kube::api::ObjectMeta) {
        m.managed_fields = None;
        if let Some(a) = m.annotations.as_mut() {
            a.remove(LAST_APPLIED);
        }
    }

    /// `o` as a watcher decodes it off the wire: its JSON, decoded as `W`.
    fn on_the_wire<W: DeserializeOwned>(o: &impl Serialize) -> W {
        serde_json::from_slice(&serde_json::to_vec(o).expect("encodes")).expect("decodes as the wire item")
    }

    /// A pod as the cache keeps it (decoded off the wire, projected) and gives it back.
    fn kept(p: Pod) -> (Pod, PodView) {
        let view = PodView::encode(on_the_wire(&p)).expect("encodes");
        (view.decode().expect("decodes"), view)
    }

    /// A pod as the cache kept it before its projection: the full object without `managedFields` and the
    /// `last-applied-configuration` annotation.
    fn trim_pod(mut p: Pod) -> Pod {
        trim_meta(&mut p.metadata);
        p
    }

    fn every_pod() -> [Pod; 4] {
        [
            injected_pod(),
            native_sidecar_pod(),
            ambient_pod(false),
            ambient_pod(true),
        ]
    }

    #[test]
    fn a_kept_pod_keeps_every_field_of_the_contract() {
        for p in every_pod() {
            let (k, _) = kept(p.clone());
            assert_eq!(contract(&k), contract(&trim_pod(p)));
        }
        // The fixtures exercise every part of the contract.
        let c = contract(&injected_pod());
        assert_eq!(c["annotations"]["prometheus.io/port"], "15020");
        assert_eq!(c["annotations"]["sidecar.istio.io/status"], "");
        assert_eq!(c["owners"], json!([["ReplicaSet", "app-0-5d9c7b8f6d"]]));
        assert_eq!(c["conditions"], json!([["Ready", "True"]]));
        let native = contract(&kept(native_sidecar_pod()).0);
        assert_eq!(native["initContainers"], json!([["istio-proxy", "Always"]]));
        assert_eq!(native["initContainerStatuses"], json!([["istio-proxy", true]]));
        let ambient = contract(&kept(ambient_pod(true)).0);
        assert_eq!(ambient["annotations"]["ambient.istio.io/redirection"], "enabled");
        assert!(ambient["deletion"].is_string());
    }

    #[test]
    fn common_strings_are_packed_as_entries_and_read_back_in_order() {
        let distinct: std::collections::HashSet<&str> = COMMON.iter().copied().collect();
        assert_eq!(distinct.len(), COMMON.len(), "an entry of COMMON is listed twice");
        let strings = [
            ("app", false),
            ("my-app", false),
            ("istio-proxy", true),
            ("", false),
            ("ReplicaSet", false),
            ("x", true),
        ];
        let mut w = Packer::default();
        for (s, flag) in strings {
            w.push(s, flag);
        }
        let packed = w.finish();
        // Only the strings COMMON does not hold take bytes of the text.
        assert_eq!(&*packed.text, "my-appx");
        let mut r = Reader::new(&packed);
        for want in strings {
            assert_eq!(r.next(), want);
        }
        assert_eq!(r.left(), 0);
        assert_eq!(r.next(), ("", false));
        // An injected pod's packed text is what is not common to all injected pods: its own names.
        let (_, view) = kept(injected_pod());
        assert!(
            !view.strings.text.contains("security.istio.io"),
            "{}",
            view.strings.text
        );
        assert!(view.strings.text.contains("app-0-5d9c7b8f6d"));
    }

    #[test]
    fn a_kept_pod_gives_the_gates_and_the_assessment_the_same_answers() {
        let verdicts = |p: &Pod| {
            (
                sidecar_ready(p),
                sidecar_free_and_enrolled(p),
                proxy_placement(p),
                pod_ready(p),
            )
        };
        let mut seen = Vec::new();
        for p in every_pod() {
            let (k, _) = kept(p.clone());
            assert_eq!(verdicts(&k), verdicts(&p));
            seen.push((verdicts(&p).0.ok, verdicts(&p).1.ok, verdicts(&p).2));
        }
        // Sidecar ready (classic, native), ambient ready, ambient terminating: each gate both ways.
        use crate::gates::pods::ProxyPlacement::{Classic, Native};
        assert_eq!(
            seen,
            [
                (true, false, Some(Classic)),
                (true, false, Some(Native)),
                (false, true, None),
                (false, false, None)
            ]
        );
    }

    #[test]
    fn a_kept_pod_matches_a_selector_as_its_decoded_labels_do() {
        let (k, view) = kept(injected_pod());
        let selector = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let on_decoded = |s: &BTreeMap<String, String>| {
            let labels = k.metadata.labels.clone().unwrap_or_default();
            s.iter().all(|(k, v)| labels.get(k) == Some(v))
        };
        for (s, matches) in [
            (selector(&[("app", "app-0")]), true),
            (
                selector(&[("app", "app-0"), ("pod-template-hash", "5d9c7b8f6d")]),
                true,
            ),
            (selector(&[]), true),
            (selector(&[("app", "app-1")]), false),
            (selector(&[("app", "app-0"), ("tier", "web")]), false),
            // A label's value is not a key.
            (selector(&[("app-0", "app")]), false),
        ] {
            assert_eq!(view.has_labels(&s), matches, "{s:?}");
            assert_eq!(on_decoded(&s), matches, "{s:?}");
        }
    }

    #[test]
    fn a_kept_pod_drops_what_nothing_reads() {
        let (k, view) = kept(injected_pod());
        let a = k.metadata.annotations.clone().unwrap_or_default();
        assert!(!a.contains_key(LAST_APPLIED));
        assert_eq!(a.get("sidecar.istio.io/status").map(String::as_str), Some(""));
        assert!(k.metadata.managed_fields.is_none() && k.metadata.uid.is_none());
        let spec = k.spec.expect("spec");
        assert!(spec.volumes.is_none() && spec.service_account_name.is_none());
        let proxy = spec
            .containers
            .iter()
            .find(|c| c.name == "istio-proxy")
            .expect("proxy");
        assert!(proxy.image.is_none() && proxy.env.is_none() && proxy.ports.is_none());
        let json = to_json(former_trim(injected_pod())).expect("encodes").len();
        let bytes = std::mem::size_of::<PodView>() + packed_bytes(&view.strings);
        assert!(bytes * 10 < json * 4, "view {bytes} bytes, trimmed JSON {json}");
    }

    #[test]
    fn a_kept_replicaset_keeps_its_name_and_owners_and_nothing_else() {
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "app-0-5d9c7b8f6d", "namespace": "shop", "uid": "9f8e7d6c", "resourceVersion": "12",
                         "labels": {"app": "app-0", "pod-template-hash": "5d9c7b8f6d"},
                         "annotations": {"deployment.kubernetes.io/revision": "2",
                                         "deployment.kubernetes.io/desired-replicas": "2"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "app-0",
                                              "uid": "d1", "controller": true, "blockOwnerDeletion": true},
                                             {"apiVersion": "example.com/v1", "kind": "Rollout", "name": "app-0-r",
                                              "uid": "r1"}],
                         "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}]},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "app-0"}},
                     "template": {"metadata": {"labels": {"app": "app-0"}},
                                  "spec": {"containers": [{"name": "app", "image": "shop/app:1"}]}}},
            "status": {"replicas": 2, "readyReplicas": 2, "observedGeneration": 1}
        }))
        .expect("replicaset fixture");
        let view = ReplicaSetView::encode(on_the_wire(&rs)).expect("encodes");
        let k = view.decode().expect("decodes");
        let owners = |r: &ReplicaSet| {
            r.metadata
                .owner_references
                .iter()
                .flatten()
                .map(|o| (o.kind.clone(), o.name.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(owners(&k), owners(&rs));
        assert_eq!(owners(&k).len(), 2);
        assert_eq!(
            (&k.metadata.name, &k.metadata.namespace),
            (&rs.metadata.name, &rs.metadata.namespace)
        );
        assert!(k.metadata.labels.is_none() && k.metadata.annotations.is_none() && k.metadata.uid.is_none());
        assert!(k.spec.template.is_none() && k.spec.replicas.is_none() && k.status.is_none());
        // What the cache kept before: the trimmed object's JSON, in one allocation.
        let mut trimmed = rs.clone();
        trim_meta(&mut trimmed.metadata);
        (trimmed.metadata.annotations, trimmed.spec.template) = (None, None);
        let json = to_json(trimmed).expect("encodes").len();
        let bytes = std::mem::size_of::<ReplicaSetView>() + packed_bytes(&view.strings);
        assert!(bytes * 3 < json, "view {bytes} bytes, trimmed JSON {json}");
        let mut bare = rs;
        bare.metadata.owner_references = None;
        let k = ReplicaSetView::encode(on_the_wire(&bare))
            .and_then(|v| v.decode())
            .expect("round trip");
        assert!(k.metadata.owner_references.is_none());
    }

    #[test]
    fn a_wire_item_answers_to_the_watcher_as_its_kind_and_keeps_the_resource_version() {
        use kube::Resource;
        assert_eq!(
            wire::PodItem::url_path(&(), Some("shop")),
            Pod::url_path(&(), Some("shop"))
        );
        assert_eq!(
            wire::ReplicaSetItem::url_path(&(), None),
            "/apis/apps/v1/replicasets"
        );
        assert_eq!(
            (
                wire::WholeItem::<Deployment>::kind(&()),
                wire::WholeItem::<Deployment>::api_version(&())
            ),
            (Deployment::kind(&()), Deployment::api_version(&()))
        );
        // The watcher resumes from the resourceVersion of the last object it saw.
        let item: wire::PodItem = on_the_wire(&injected_pod());
        assert_eq!(item.meta().resource_version.as_deref(), Some("7"));
        assert!(item.meta().managed_fields.is_none());
        let rs: wire::ReplicaSetItem = on_the_wire(&injected_pod());
        assert_eq!(rs.meta().resource_version.as_deref(), Some("7"));
    }

    /// A Deployment as `kubectl apply` and the controllers leave it: `last-applied-configuration`, managed
    /// fields, a pod template with an environment and a volume, status conditions.
    fn applied_deployment() -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "app-0", "namespace": "shop", "uid": "d1", "resourceVersion": "40", "generation": 3,
                         "creationTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["example.com/keep"],
                         "labels": {"app": "app-0"},
                         "annotations": {"deployment.kubernetes.io/revision": "2", LAST_APPLIED: "{\"big\": true}"},
                         "ownerReferences": [{"apiVersion": "example.com/v1", "kind": "App", "name": "app", "uid": "a1"}],
                         "managedFields": [{"manager": "kubectl", "operation": "Apply",
                                            "fieldsV1": {"f:spec": {"f:replicas": {}}}}]},
            "spec": {"replicas": 2, "paused": false, "progressDeadlineSeconds": 600,
                     "selector": {"matchLabels": {"app": "app-0"}},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
                     "template": {"metadata": {"labels": {"app": "app-0"},
                                               "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:01:00Z"}},
                                  "spec": {"serviceAccountName": "app",
                                           "volumes": [{"name": "data", "emptyDir": {}}],
                                           "containers": [{"name": "app", "image": "shop/app:1",
                                                           "env": [{"name": "A", "value": "1"}],
                                                           "ports": [{"containerPort": 8080}]}]}}},
            "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
                       "availableReplicas": 2,
                       "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                                       "lastUpdateTime": "2026-01-01T00:02:00Z",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .expect("deployment fixture")
    }

    #[test]
    fn a_kept_workload_has_no_condition_messages_or_times_and_the_same_rollout_verdict() {
        use crate::gates::rollout::deployment_status;
        let mut d = applied_deployment();
        if let Some(c) = d.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            c[0].message = Some("ReplicaSet \"app-0-5d9c7b8f6d\" has successfully progressed.".into());
        }
        let kept = keep_deployment(d.clone());
        let c = &kept
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .expect("conditions")[0];
        assert_eq!(
            (c.type_.as_deref(), c.status.as_deref(), c.reason.as_deref()),
            (Some("Progressing"), Some("True"), Some("NewReplicaSetAvailable"))
        );
        assert!(c.message.is_none() && c.last_transition_time.is_none() && c.last_update_time.is_none());
        for min in [None, Some(3), Some(4)] {
            assert_eq!(deployment_status(&kept, min), deployment_status(&d, min));
        }
        // A deadline exceeded reads the same after the trim.
        let mut late = d.clone();
        if let Some(c) = late.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            c[0].reason = Some("ProgressDeadlineExceeded".into());
        }
        assert_eq!(
            deployment_status(&keep_deployment(late.clone()), None),
            deployment_status(&late, None)
        );
        assert!(!deployment_status(&late, None).is_done());
    }

    #[test]
    fn a_whole_kind_decoded_off_the_wire_is_the_object_less_what_the_trim_dropped() {
        let d = applied_deployment();
        let kept = wire::WholeItem::<Deployment>::into_whole(on_the_wire(&d));
        // The former path: the full object, then the trim.
        let mut trimmed = d.clone();
        trim_meta(&mut trimmed.metadata);
        assert_eq!(kept, trimmed);
        let a = kept.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            a.get("deployment.kubernetes.io/revision").map(String::as_str),
            Some("2")
        );
        assert!(!a.contains_key(LAST_APPLIED) && kept.metadata.managed_fields.is_none());
        // What the restart, the rollout gate and the assessment read is all there.
        assert_eq!(kept.metadata.generation, Some(3));
        assert_eq!(kept.spec.paused, Some(false));
        assert!(super::super::restart::template_carries(
            &kept.spec.template,
            "2026-01-01T00:01:00Z"
        ));
        let status = kept.status.as_ref().expect("status");
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.conditions.as_ref().map(Vec::len), Some(1));
        // A kind without a spec decodes as `k8s_openapi` does: the default one.
        let bare: Deployment = serde_json::from_value(json!({"metadata": {"name": "x"}})).expect("bare");
        assert_eq!(
            wire::WholeItem::<Deployment>::into_whole(on_the_wire(&bare)),
            bare
        );
        // The other whole kinds keep everything but the trimmed metadata too.
        let mut svc = Service {
            metadata: d.metadata.clone(),
            spec: Some(k8s_openapi::api::core::v1::ServiceSpec {
                selector: Some([("app".to_string(), "app-0".to_string())].into()),
                ..Default::default()
            }),
            status: None,
        };
        let kept = wire::WholeItem::<Service>::into_whole(on_the_wire(&svc));
        trim_meta(&mut svc.metadata);
        assert_eq!(kept, svc);
    }

    #[test]
    fn a_namespace_event_wakes_only_the_waits_of_that_namespace() {
        let n = Notifier::default();
        let mut shop = n.subscribe("shop");
        let mut other = n.subscribe("other");
        shop.borrow_and_update();
        other.borrow_and_update();
        n.bump("shop");
        n.bump("nobody-waits-here");
        assert!(shop.has_changed().expect("open"));
        assert!(!other.has_changed().expect("open"));
        n.bump_all();
        assert!(other.has_changed().expect("open"));
    }
}
