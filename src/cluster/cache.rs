//! Fleet-wide watch caches: one list+watch per kind for the whole run (kube-runtime reflectors, as a
//! controller's informers), so the preflight, every namespace's snapshot and backup, and the gates read
//! memory instead of sending a list per namespace per kind. The caches are cluster-wide: the reader
//! ClusterRole grants list and watch on every kind they hold (`ci/k8s/clusterrole.yaml`, proven before
//! the run by `assess::permissions`).
//!
//! Memory: each cached object is trimmed as it arrives (`managedFields` dropped: the biggest part of most
//! objects and read by nothing here; the `last-applied-configuration` annotation of Pods and ReplicaSets,
//! which nothing here reads either). Configuration objects keep everything else, as the backup needs them
//! whole.
//!
//! A kind whose CRD is not installed (404 on the first list) is "none of them", as the per-namespace
//! lists treat it; a kind the runner may not list or watch (403) fails every read with the API's answer.
//! Every applied event bumps [`FleetCache::changes`], so a wait re-evaluates its gate on the event that
//! may satisfy it, without a timer.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::DynamicObject;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{Store, store::Writer};
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

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

/// The annotation `kubectl apply` leaves on objects: a full copy of the object, read by nothing here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// One kind's reflector: its store and its state.
struct Kind<K: kube::Resource + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    state: watch::Receiver<CacheState>,
    what: String,
}

/// The run's watch caches of every kind the assessment, the backup and the gates read.
pub struct FleetCache {
    namespaces: Kind<Namespace>,
    services: Kind<Service>,
    deployments: Kind<Deployment>,
    statefulsets: Kind<StatefulSet>,
    daemonsets: Kind<DaemonSet>,
    replicasets: Kind<ReplicaSet>,
    pods: Kind<Pod>,
    jobs: Kind<Job>,
    cronjobs: Kind<CronJob>,
    dynamic: BTreeMap<DynKind, Kind<DynamicObject>>,
    changes: watch::Sender<u64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FleetCache {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn trim_meta(m: &mut kube::api::ObjectMeta, drop_last_applied: bool) {
    m.managed_fields = None;
    if drop_last_applied && let Some(a) = m.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

/// A pod as the gates and the assessment read it: identity, labels, annotations, owners, container names,
/// images and ports, its service account, and its status. Volumes, environment, mounts, resources,
/// commands and health probes of its containers are dropped: in a real cluster they are most of a pod's
/// bytes, and nothing here reads them.
fn trim_pod(p: &mut Pod) {
    trim_meta(&mut p.metadata, true);
    if let Some(spec) = p.spec.as_mut() {
        spec.volumes = None;
        spec.affinity = None;
        spec.tolerations = None;
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
        }
    }
}

/// Starts the reflector of one kind (cluster-wide) on `tasks`.
fn start<K>(
    api: kube::Api<K>,
    dyntype: K::DynamicType,
    what: String,
    trim: fn(&mut K),
    changes: &watch::Sender<u64>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Kind<K>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let writer = Writer::new(dyntype);
    let store = writer.as_reader();
    let (state_tx, state) = watch::channel(CacheState::Syncing);
    let changes = changes.clone();
    let kind = what.clone();
    let stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(trim)
        .reflect(writer);
    tasks.push(tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(Event::InitDone) => {
                    state_tx.send_replace(CacheState::Ready);
                    changes.send_modify(|n| *n += 1);
                }
                Ok(Event::Init | Event::InitApply(_)) => {}
                Ok(Event::Apply(_) | Event::Delete(_)) => changes.send_modify(|n| *n += 1),
                Err(watcher::Error::InitialListFailed(kube::Error::Api(s)))
                    if s.code == 404 && *state_tx.borrow() == CacheState::Syncing =>
                {
                    state_tx.send_replace(CacheState::Absent);
                    changes.send_modify(|n| *n += 1);
                    return;
                }
                Err(watcher::Error::InitialListFailed(kube::Error::Api(s)))
                    if s.code == 403 && *state_tx.borrow() == CacheState::Syncing =>
                {
                    state_tx.send_replace(CacheState::Failed(format!(
                        "list {kind} in all namespaces: API server answered 403 {}: {}; grant list and watch on it cluster-wide (RBAC: ci/k8s/clusterrole.yaml)",
                        s.reason, s.message
                    )));
                    changes.send_modify(|n| *n += 1);
                    return;
                }
                Err(e) => tracing::debug!(kind = %kind, error = %e, "watch error, retrying"),
            }
        }
    }));
    Kind { store, state, what }
}

impl<K> Kind<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
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

    /// The cached objects of namespace `ns` (clones: the store keeps its own), sorted by name as the API
    /// server lists them (etcd key order): the store's own order is arbitrary, and a plan must not depend
    /// on it (restart batches keep the listed order).
    fn in_ns(&self, ns: &str) -> Vec<K> {
        let mut v: Vec<K> = self
            .store
            .state()
            .into_iter()
            .filter(|o| o.meta().namespace.as_deref() == Some(ns))
            .map(|o| (*o).clone())
            .collect();
        v.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
        v
    }
}

impl FleetCache {
    /// Starts one reflector per kind, cluster-wide. Nothing is listed until the tasks run; call
    /// [`FleetCache::ready`] before reading.
    pub fn start(cluster: &Cluster) -> Arc<FleetCache> {
        let (changes, _) = watch::channel(0u64);
        let mut tasks = Vec::new();
        let c = cluster.client().clone();
        macro_rules! typed {
            ($t:ty, $what:expr, $trim:expr) => {
                start::<$t>(
                    kube::Api::all(c.clone()),
                    (),
                    $what.into(),
                    $trim,
                    &changes,
                    &mut tasks,
                )
            };
        }
        let namespaces = typed!(Namespace, "Namespaces", |o: &mut Namespace| trim_meta(
            &mut o.metadata,
            true
        ));
        let services = typed!(Service, "Services", |o: &mut Service| trim_meta(
            &mut o.metadata,
            true
        ));
        let deployments = typed!(Deployment, "Deployments", |o: &mut Deployment| trim_meta(
            &mut o.metadata,
            true
        ));
        let statefulsets = typed!(StatefulSet, "StatefulSets", |o: &mut StatefulSet| trim_meta(
            &mut o.metadata,
            true
        ));
        let daemonsets = typed!(DaemonSet, "DaemonSets", |o: &mut DaemonSet| trim_meta(
            &mut o.metadata,
            true
        ));
        let replicasets = typed!(ReplicaSet, "ReplicaSets", |o: &mut ReplicaSet| trim_meta(
            &mut o.metadata,
            true
        ));
        let pods = typed!(Pod, "Pods", trim_pod);
        let jobs = typed!(Job, "Jobs", |o: &mut Job| trim_meta(&mut o.metadata, true));
        let cronjobs = typed!(CronJob, "CronJobs", |o: &mut CronJob| trim_meta(
            &mut o.metadata,
            true
        ));
        let dynamic = DynKind::ALL
            .iter()
            .map(|k| {
                let ar = k.api_resource();
                let api: kube::Api<DynamicObject> = kube::Api::all_with(c.clone(), &ar);
                // Configuration objects go into backups whole: only managedFields is dropped.
                let kind = start(
                    api,
                    ar,
                    format!("{k}s"),
                    |o: &mut DynamicObject| trim_meta(&mut o.metadata, false),
                    &changes,
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
            changes,
            tasks,
        })
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

    /// A receiver that changes on every event any cache applied.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Every namespace's labels, as cached now.
    pub fn namespace_labels(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.namespaces
            .store
            .state()
            .iter()
            .filter_map(|n| {
                Some((
                    n.metadata.name.clone()?,
                    n.metadata.labels.clone().unwrap_or_default(),
                ))
            })
            .collect()
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
            .store
            .get(&kube::runtime::reflector::ObjectRef::new(ns))
            .map(|n| (*n).clone())
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
}

impl FleetCache {
    /// One cached object, by its key in the store (no scan).
    fn get<K>(kind: &Kind<K>, dyntype: K::DynamicType, ns: &str, name: &str) -> Option<K>
    where
        K: kube::Resource + Clone + 'static,
        K::DynamicType: Eq + Hash + Clone,
    {
        let key = kube::runtime::reflector::ObjectRef::new_with(name, dyntype).within(ns);
        kind.store.get(&key).map(|o| (*o).clone())
    }

    /// A cached Deployment.
    pub fn deployment(&self, ns: &str, name: &str) -> Option<Deployment> {
        Self::get(&self.deployments, (), ns, name)
    }

    /// A cached StatefulSet.
    pub fn statefulset(&self, ns: &str, name: &str) -> Option<StatefulSet> {
        Self::get(&self.statefulsets, (), ns, name)
    }

    /// A cached DaemonSet.
    pub fn daemonset(&self, ns: &str, name: &str) -> Option<DaemonSet> {
        Self::get(&self.daemonsets, (), ns, name)
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
        let k = self.dynamic.get(&kind)?;
        Self::get(k, kind.api_resource(), ns, name)
            .map(|o| super::dynamic::with_types(kind, o))
            .and_then(|o| serde_json::to_value(o).ok())
    }

    /// The cached pods of `ns` whose labels include every pair of `selector` (a workload's
    /// `matchLabels`).
    pub fn pods_matching(&self, ns: &str, selector: &BTreeMap<String, String>) -> Vec<Pod> {
        self.pods
            .store
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
            .filter(|p| {
                let labels = p.metadata.labels.as_ref();
                selector
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
            })
            .map(|p| (*p).clone())
            .collect()
    }

    /// Waits until `check`, evaluated on the caches now and again on every event they apply, is done: the
    /// wait ends on the watch event that satisfies it, with no timer. Timeout at `until`, carrying the last
    /// observed state.
    pub async fn wait<F>(&self, what: &str, until: Instant, mut check: F) -> Result<(), ClusterError>
    where
        F: FnMut(&FleetCache) -> super::Check,
    {
        let started = Instant::now();
        let mut changes = self.changes();
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
        self.wait(&what, until, |c| {
            let seen = match kind {
                super::WorkloadKind::Deployment => c.deployment(ns, name).map(|o| {
                    let g = o.status.as_ref().and_then(|s| s.observed_generation);
                    (rollout::deployment_status(&o, min), g)
                }),
                super::WorkloadKind::StatefulSet => c.statefulset(ns, name).map(|o| {
                    let g = o.status.as_ref().and_then(|s| s.observed_generation);
                    (rollout::statefulset_status(&o, min), g)
                }),
                super::WorkloadKind::DaemonSet => c.daemonset(ns, name).map(|o| {
                    let g = o.status.as_ref().and_then(|s| s.observed_generation);
                    (rollout::daemonset_status(&o, min), g)
                }),
            };
            match seen {
                None => super::Check::Failed("object has been deleted".into()),
                Some((RolloutStatus::Done(message), g)) => {
                    done = Some(super::RolloutDone {
                        message,
                        observed_generation: g.unwrap_or(0),
                    });
                    super::Check::Done
                }
                Some((RolloutStatus::Waiting(m), _)) => super::Check::Pending(m),
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
        self.wait(&what, until, |c| {
            pods = c.pods_matching(ns, selector);
            check(&pods)
        })
        .await?;
        Ok(super::PodsWait { pods })
    }
}
