//! Waits driven by watches (list, then watch from the list's resourceVersion, as `kubectl rollout status`
//! does), never by sleep loops, always under a deadline. A timeout carries the last observed state.
//! Watch errors are retried with kube-runtime's default backoff until the deadline (the last error is
//! reported in the timeout message).

use std::collections::BTreeMap;
use std::fmt::Debug;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::{Cluster, ClusterError, WorkloadKind, obj_name};
use crate::gates::rollout::{self, RolloutStatus};

/// Verdict of a wait predicate on one observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The condition holds: stop waiting.
    Done,
    /// Not yet; the text describes the observed state (reported on timeout).
    Pending(String),
    /// The condition can no longer hold (for example ProgressDeadlineExceeded): stop with an error.
    Failed(String),
}

/// Result of a completed rollout wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutDone {
    /// kubectl's final message ("successfully rolled out").
    pub message: String,
    /// `status.observedGeneration` at completion.
    pub observed_generation: i64,
}

/// Result of a completed pod wait: the pods that satisfied the predicate.
#[derive(Debug, Clone)]
pub struct PodsWait {
    pub pods: Vec<Pod>,
}

impl Cluster {
    /// Waits until `check` accepts the object `name` (it sees `None` while the object does not exist).
    pub async fn wait_until<K, F>(
        &self,
        api: kube::Api<K>,
        what: &str,
        name: &str,
        deadline: Instant,
        mut check: F,
    ) -> Result<K, ClusterError>
    where
        K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
        F: FnMut(Option<&K>) -> Check,
    {
        let started = Instant::now();
        let mut last = String::from("nothing observed yet");
        let stream = watcher::watch_object(api, name).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let fut = async {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(obj) => match check(obj.as_ref()) {
                        Check::Done => {
                            if let Some(o) = obj {
                                return Ok(o);
                            }
                            last = "object absent".into();
                        }
                        Check::Pending(s) => last = s,
                        Check::Failed(message) => {
                            return Err(ClusterError::WaitFailed {
                                what: what.to_string(),
                                message,
                            });
                        }
                    },
                    Err(e) => {
                        tracing::debug!(wait = what, error = %e, "watch error, retrying");
                        last = format!("{last} (watch error: {e})");
                    }
                }
            }
            Err(ClusterError::WaitFailed {
                what: what.to_string(),
                message: "watch stream ended".into(),
            })
        };
        match tokio::time::timeout_at(deadline, fut).await {
            Ok(r) => r,
            Err(_) => Err(ClusterError::Timeout {
                what: what.to_string(),
                after: started.elapsed(),
                last,
            }),
        }
    }

    /// Waits until an object is gone (404 or DELETED).
    pub async fn wait_deleted<K>(
        &self,
        api: kube::Api<K>,
        what: &str,
        name: &str,
        deadline: Instant,
    ) -> Result<(), ClusterError>
    where
        K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    {
        let started = Instant::now();
        let stream = watcher::watch_object(api, name).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let fut = async {
            while let Some(item) = stream.next().await {
                if let Ok(None) = item {
                    return Ok(());
                }
            }
            Err(ClusterError::WaitFailed {
                what: what.to_string(),
                message: "watch stream ended".into(),
            })
        };
        match tokio::time::timeout_at(deadline, fut).await {
            Ok(r) => r,
            Err(_) => Err(ClusterError::Timeout {
                what: what.to_string(),
                after: started.elapsed(),
                last: "still present".into(),
            }),
        }
    }

    /// Waits until a workload has rolled out by kubectl's rules (`gates::rollout`), and its controller has observed at least
    /// `min_generation` (the generation returned by the restart patch). A deleted workload or an exceeded
    /// progress deadline fails at once.
    pub async fn wait_rollout(
        &self,
        kind: WorkloadKind,
        ns: &str,
        name: &str,
        min_generation: i64,
        deadline: Instant,
    ) -> Result<RolloutDone, ClusterError> {
        let what = format!("rollout of {}", obj_name(kind.as_str(), Some(ns), name));
        let min = Some(min_generation);
        macro_rules! go {
            ($t:ty, $eval:path) => {{
                let api: kube::Api<$t> = self.namespaced(ns);
                let mut msg = String::new();
                let obj = self
                    .wait_until(api, &what, name, deadline, |o: Option<&$t>| match o {
                        None => Check::Failed("object has been deleted".into()),
                        Some(o) => match $eval(o, min) {
                            RolloutStatus::Done(m) => {
                                msg = m;
                                Check::Done
                            }
                            RolloutStatus::Waiting(m) => Check::Pending(m),
                            RolloutStatus::Failed(m) => Check::Failed(m),
                        },
                    })
                    .await?;
                let observed_generation = obj
                    .status
                    .as_ref()
                    .and_then(|s| s.observed_generation)
                    .unwrap_or(0);
                Ok(RolloutDone {
                    message: msg,
                    observed_generation,
                })
            }};
        }
        match kind {
            WorkloadKind::Deployment => go!(Deployment, rollout::deployment_status),
            WorkloadKind::StatefulSet => go!(StatefulSet, rollout::statefulset_status),
            WorkloadKind::DaemonSet => go!(DaemonSet, rollout::daemonset_status),
        }
    }

    /// Waits until the pods matching `selector` in `ns` satisfy `check` as a set (it sees every current
    /// pod; an empty list is passed too, so the caller decides whether "no pods" is acceptable).
    pub async fn wait_pods_set<F>(
        &self,
        ns: &str,
        selector: &str,
        deadline: Instant,
        mut check: F,
    ) -> Result<PodsWait, ClusterError>
    where
        F: FnMut(&[Pod]) -> Check,
    {
        let what = format!("pods of {ns} matching {selector:?}");
        let started = Instant::now();
        let api: kube::Api<Pod> = self.namespaced(ns);
        let cfg = watcher::Config::default().labels(selector);
        let stream = watcher::watcher(api, cfg).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
        let mut init: Option<BTreeMap<String, Pod>> = None;
        let mut ready = false;
        let mut last = String::from("nothing observed yet");
        let fut = async {
            while let Some(item) = stream.next().await {
                let ev = match item {
                    Ok(ev) => ev,
                    Err(e) => {
                        last = format!("{last} (watch error: {e})");
                        continue;
                    }
                };
                match ev {
                    Event::Init => init = Some(BTreeMap::new()),
                    Event::InitApply(p) => {
                        if let Some(m) = init.as_mut() {
                            m.insert(p.metadata.name.clone().unwrap_or_default(), p);
                        }
                    }
                    Event::InitDone => {
                        pods = init.take().unwrap_or_default();
                        ready = true;
                    }
                    Event::Apply(p) => {
                        pods.insert(p.metadata.name.clone().unwrap_or_default(), p);
                    }
                    Event::Delete(p) => {
                        pods.remove(&p.metadata.name.clone().unwrap_or_default());
                    }
                }
                if !ready {
                    continue;
                }
                let list: Vec<Pod> = pods.values().cloned().collect();
                match check(&list) {
                    Check::Done => return Ok(PodsWait { pods: list }),
                    Check::Pending(s) => last = s,
                    Check::Failed(message) => {
                        return Err(ClusterError::WaitFailed {
                            what: what.clone(),
                            message,
                        });
                    }
                }
            }
            Err(ClusterError::WaitFailed {
                what: what.clone(),
                message: "watch stream ended".into(),
            })
        };
        match tokio::time::timeout_at(deadline, fut).await {
            Ok(r) => r,
            Err(_) => Err(ClusterError::Timeout {
                what: what.clone(),
                after: started.elapsed(),
                last,
            }),
        }
    }

    /// Waits until at least one pod matches `selector` and every matching pod satisfies `pred`;
    /// `pred` returns `Err(reason)` for a pod that does not (yet) satisfy it.
    pub async fn wait_pods<F>(
        &self,
        ns: &str,
        selector: &str,
        deadline: Instant,
        pred: F,
    ) -> Result<PodsWait, ClusterError>
    where
        F: Fn(&Pod) -> Result<(), String>,
    {
        self.wait_pods_set(ns, selector, deadline, |pods| {
            if pods.is_empty() {
                return Check::Pending("no pods match".into());
            }
            let bad: Vec<String> = pods
                .iter()
                .filter_map(|p| {
                    pred(p)
                        .err()
                        .map(|why| format!("{}: {why}", p.metadata.name.as_deref().unwrap_or("?")))
                })
                .collect();
            if bad.is_empty() {
                Check::Done
            } else {
                Check::Pending(format!(
                    "{} of {} pods not ready: {}",
                    bad.len(),
                    pods.len(),
                    bad.join("; ")
                ))
            }
        })
        .await
    }
}
