//! Per-namespace journal (docs/design.md §4): where a namespace is in the migration, every mutation made (with
//! what rollback needs), the original injection label, the backup reference, gate results and the outcome.
//!
//! Format: ConfigMap `journal-<ns>` in the state namespace, data key `journal.json` holding one
//! [`Record`] (camelCase JSON, `version: 1`), labels `app.kubernetes.io/managed-by=ambient-migrate`,
//! `ambient-migrate.io/role=journal`, `ambient-migrate.io/namespace=<ns>`. For humans, the Namespace gets
//! the annotation `ambient-migrate.io/state=<phase>` (best effort). Nothing reads it back, so it is written
//! off the migration's path: a per-journal writer sends the latest phase once the previous patch is
//! answered (phases that came and went meanwhile are skipped), and a terminal phase waits for its own
//! patch, so a namespace's final state is on it when the namespace ends.
//!
//! Fencing: every write is a `replace` carrying the resourceVersion this handle last read or wrote. A 409
//! means someone else wrote in between: [`JournalError::Fenced`], the run must stop. (If the stored record
//! is exactly the one we tried to write, our own earlier attempt landed and its answer was lost; that is
//! accepted.) The writer's run id (the Lease holder identity) is recorded in every write.
//!
//! Staging: a phase change that need not be stored before anything else happens (a step's gates passed and
//! the next step started) is staged in the handle ([`Journal::stage`]) and goes out with the next write,
//! which is the write-ahead record of the next mutation, or the terminal phase. A run that dies first
//! resumes at the phase last written and redoes the idempotent work since. A step that sends nothing then
//! costs no journal write; the state annotation still shows it as it starts.
//!
//! Dry runs never write the journal (nothing may be persisted, and the state namespace may not exist):
//! the handle keeps the record in memory.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, ObjectMeta};
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, ClusterError, MANAGED_BY_LABEL, MANAGED_BY_VALUE, ROLE_LABEL};
use crate::gates::GateResult;
use crate::steps::{Change, Phase, Step};

/// Data key of the journal ConfigMap.
pub const JOURNAL_KEY: &str = "journal.json";
/// Label naming the migrated namespace on state objects.
pub const NAMESPACE_LABEL: &str = "ambient-migrate.io/namespace";
/// Annotation on the Namespace showing the phase.
pub const STATE_ANNOTATION: &str = "ambient-migrate.io/state";
/// Gate results kept per record (the oldest are dropped; the ConfigMap must stay far below 1 MiB).
pub const MAX_GATE_RESULTS: usize = 100;

/// Journal errors.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Another writer changed the journal since we read it.
    #[error(
        "journal of namespace {namespace} was written by another run ({writer}) since this run read it; stopping (check `ambient-migrate status` and that only one run is active)"
    )]
    Fenced { namespace: String, writer: String },
    /// The stored journal cannot be parsed.
    #[error(
        "journal ConfigMap {state_namespace}/{name} is not a valid journal: {message}; inspect it, fix or delete it"
    )]
    Corrupt {
        state_namespace: String,
        name: String,
        message: String,
    },
    /// The record would not fit in its ConfigMap even without gate results.
    #[error(
        "journal of namespace {namespace} would be {bytes} bytes, more than the {limit} bytes a ConfigMap can hold (the API server would refuse it with 422), even without gate results; the namespace has too many recorded changes for one journal: migrate it in parts (exclude workloads) or by hand"
    )]
    TooLarge {
        namespace: String,
        bytes: usize,
        limit: usize,
    },
    /// Cluster access failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// The injection label found on the namespace before the migration (restored on rollback).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InjectionLabel {
    /// `istio-injection` or `istio.io/rev`.
    pub key: String,
    /// Its value (`enabled`, a revision or a tag).
    pub value: String,
}

/// Where the backup of the namespace is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupRef {
    /// `<state ns>/backup-<ns>`.
    pub config_map: String,
    /// Local file written, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// When it was taken.
    pub taken_at: String,
    /// SHA-256 of the backup ([`crate::backup::Backup::digest`]): every later use checks the stored
    /// backup is this one. Absent in journals written before identities were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl BackupRef {
    /// The identity to check the stored backup against (`None` for a journal without a digest).
    pub fn identity(&self) -> Option<crate::backup::BackupIdentity> {
        Some(crate::backup::BackupIdentity {
            taken_at: self.taken_at.clone(),
            digest: self.digest.clone()?,
            file: self.file.clone(),
        })
    }
}

/// One namespace's journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Format version (1).
    pub version: u32,
    /// The migrated namespace.
    pub namespace: String,
    /// Current phase.
    pub phase: Phase,
    /// Steps whose gates passed, in order.
    #[serde(default)]
    pub steps_done: Vec<Step>,
    /// Mutations made, in order (rollback undoes them in reverse).
    #[serde(default)]
    pub changes: Vec<Change>,
    /// The injection label before step 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_injection: Option<InjectionLabel>,
    /// The backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupRef>,
    /// Gate results (newest last, at most [`MAX_GATE_RESULTS`]).
    #[serde(default)]
    pub gates: Vec<GateResult>,
    /// Final or current outcome in words ("migrated", "rolled back: probe api failed at step 4").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Run id (Lease holder identity) of the last writer.
    pub run_id: String,
    /// Every run id that wrote this record, oldest first.
    #[serde(default)]
    pub runs: Vec<String>,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Last write time (RFC 3339).
    pub updated: String,
    /// Free-form extra data for the engine (settings hash, resume hints).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Record {
    /// A fresh record in phase `Pending`.
    pub fn new(namespace: &str, run_id: &str) -> Self {
        let now = jiff::Timestamp::now().to_string();
        Record {
            version: 1,
            namespace: namespace.to_string(),
            phase: Phase::Pending,
            steps_done: Vec::new(),
            changes: Vec::new(),
            original_injection: None,
            backup: None,
            gates: Vec::new(),
            outcome: None,
            run_id: run_id.to_string(),
            runs: vec![run_id.to_string()],
            created: now.clone(),
            updated: now,
            extra: BTreeMap::new(),
        }
    }

    /// Appends a gate result, dropping the oldest beyond [`MAX_GATE_RESULTS`].
    pub fn push_gate(&mut self, g: GateResult) {
        self.gates.push(g);
        if self.gates.len() > MAX_GATE_RESULTS {
            let excess = self.gates.len() - MAX_GATE_RESULTS;
            self.gates.drain(..excess);
        }
    }
}

/// Makes a record fit in its ConfigMap ([`crate::backup::MAX_CONFIGMAP_DATA_BYTES`]) before it is written:
/// the oldest gate results go first (they are diagnostics, also in the reports); the changes, which
/// rollback needs, are never dropped. Returns how many gate results were dropped, or the size without
/// any gate result when even that does not fit.
pub fn fit(rec: &mut Record) -> Result<usize, usize> {
    let size = |r: &Record| {
        serde_json::to_string_pretty(r)
            .map(|t| t.len())
            .unwrap_or(usize::MAX)
    };
    let limit = crate::backup::MAX_CONFIGMAP_DATA_BYTES;
    let mut dropped = 0;
    while size(rec) > limit {
        if rec.gates.is_empty() {
            return Err(size(rec));
        }
        rec.gates.remove(0);
        dropped += 1;
    }
    Ok(dropped)
}

/// Short text for the phase (`pending`, `in-step:restart`, `rolling-back:restart`), used in the Namespace
/// annotation and in status tables.
pub fn phase_label(p: &Phase) -> String {
    fn flat(v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(m) => m
                .iter()
                .map(|(k, v)| {
                    if k == "from" || k == "at" {
                        flat(v)
                    } else {
                        format!("{k}:{}", flat(v))
                    }
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        }
    }
    flat(&serde_json::to_value(p).unwrap_or_default())
}

/// Name of the journal ConfigMap of `ns`.
pub fn config_map_name(ns: &str) -> String {
    format!("journal-{ns}")
}

/// A handle on one namespace's journal, fenced by the resourceVersion it last read or wrote.
#[derive(Debug)]
pub struct Journal {
    cluster: Cluster,
    state_ns: String,
    run_id: String,
    resource_version: Option<String>,
    record: Record,
    /// A write sent whose answer never arrived (the caller's future was dropped mid-request, e.g. a step
    /// abandoned on shutdown). It may or may not have landed; the next update settles it first.
    pending: Option<Record>,
    /// The writer of the state annotation, started on the first phase to show.
    annotator: Option<StateAnnotator>,
    /// The record as last written while `record` holds changes staged since ([`Journal::stage`]);
    /// `None` when `record` is what is stored.
    written: Option<Record>,
    /// The phase last handed to the state annotation (staged phases too: the annotation shows where the
    /// run is, the journal what a resumed run needs).
    shown: Option<Phase>,
}

/// Writes the Namespace's state annotation in the background, in order, latest value only: a phase
/// handed over while a patch is in flight replaces any value not yet sent. Dropping the sender ends the
/// writer after it has sent the last value it was handed.
#[derive(Debug)]
struct StateAnnotator {
    latest: tokio::sync::watch::Sender<String>,
    writer: tokio::task::JoinHandle<()>,
}

impl StateAnnotator {
    fn start(cluster: Cluster, ns: String, first: String) -> StateAnnotator {
        let (latest, mut rx) = tokio::sync::watch::channel(first);
        rx.mark_changed();
        let writer = tokio::spawn(async move {
            // `changed` reports a value not yet seen even after the sender is gone, then the closure.
            while rx.changed().await.is_ok() {
                let v = rx.borrow_and_update().clone();
                if let Err(e) = cluster.annotate_namespace(&ns, STATE_ANNOTATION, &v).await {
                    tracing::warn!(namespace = %ns, error = %e, "could not annotate the namespace with its state");
                }
            }
        });
        StateAnnotator { latest, writer }
    }
}

fn parse(state_ns: &str, cm: &ConfigMap) -> Result<Record, JournalError> {
    let name = cm.metadata.name.clone().unwrap_or_default();
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(JOURNAL_KEY))
        .ok_or_else(|| JournalError::Corrupt {
            state_namespace: state_ns.to_string(),
            name: name.clone(),
            message: format!("no data key {JOURNAL_KEY}"),
        })?;
    serde_json::from_str(text).map_err(|e| JournalError::Corrupt {
        state_namespace: state_ns.to_string(),
        name,
        message: e.to_string(),
    })
}

/// Checks that a stored journal only speaks of namespace `ns` and of what the migration itself touches,
/// before anything acts on it: whoever can edit a ConfigMap in the state namespace must not be able to
/// make a rollback of `ns` relabel another namespace, strip a label the tool never manages, or delete
/// objects of kinds it never creates. Returns the first offending entry.
pub fn validate(record: &Record, ns: &str) -> Result<(), String> {
    if record.namespace != ns {
        return Err(format!(
            "it is the journal of namespace {:?}, not of {ns}",
            record.namespace
        ));
    }
    let in_ns = |o: &crate::steps::ObjRef| o.namespace.as_deref().is_none_or(|n| n == ns);
    for (i, c) in record.changes.iter().enumerate() {
        let bad = |why: String| Err(format!("changes[{i}]: {why}"));
        match c {
            Change::Label { change, .. } => {
                let t = &change.target;
                let target_ok = match t.kind.as_str() {
                    "Namespace" => t.name == ns && t.namespace.is_none(),
                    "Service" => t.namespace.as_deref() == Some(ns),
                    _ => false,
                };
                if !target_ok {
                    return bad(format!(
                        "label target {t} is not namespace {ns} or one of its Services"
                    ));
                }
                if !crate::backup::ISTIO_LABEL_KEYS.contains(&change.key.as_str()) {
                    return bad(format!(
                        "label key {:?} is not one the migration changes",
                        change.key
                    ));
                }
            }
            Change::Restarted { workload, .. } => {
                if !matches!(workload.kind.as_str(), "Deployment" | "StatefulSet" | "DaemonSet")
                    || !in_ns(workload)
                {
                    return bad(format!("restarted workload {workload} is not a workload of {ns}"));
                }
            }
            Change::Created { object, .. } | Change::Deleted { object, .. } => {
                let known = crate::cluster::DynKind::from_group_kind(&object.api_version, &object.kind);
                if known.is_none() || !in_ns(object) {
                    return bad(format!("{object} is not an Istio or Gateway API object of {ns}"));
                }
            }
        }
    }
    if let Some(inj) = &record.original_injection
        && !matches!(inj.key.as_str(), "istio-injection" | "istio.io/rev")
    {
        return Err(format!(
            "originalInjection key {:?} is not an injection label",
            inj.key
        ));
    }
    Ok(())
}

fn checked(state_ns: &str, ns: &str, record: Record) -> Result<Record, JournalError> {
    validate(&record, ns).map_err(|message| JournalError::Corrupt {
        state_namespace: state_ns.to_string(),
        name: config_map_name(ns),
        message,
    })?;
    Ok(record)
}

impl Journal {
    /// Loads the journal of `ns`, or creates it (phase `Pending`) when none exists. `run_id` is the Lease
    /// holder identity of this run.
    pub async fn load_or_create(
        cluster: &Cluster,
        state_ns: &str,
        ns: &str,
        run_id: &str,
    ) -> Result<Journal, JournalError> {
        if let Some(j) = Journal::open(cluster, state_ns, ns, run_id).await? {
            return Ok(j);
        }
        Journal::create(cluster, state_ns, ns, run_id).await
    }

    /// The journal of `ns` as a handle to write with, or `None` when there is none (one read).
    pub async fn open(
        cluster: &Cluster,
        state_ns: &str,
        ns: &str,
        run_id: &str,
    ) -> Result<Option<Journal>, JournalError> {
        let api: kube::Api<ConfigMap> = cluster.namespaced(state_ns);
        let name = config_map_name(ns);
        let what = format!("get journal ConfigMap {state_ns}/{name}");
        let existing = match cluster.get_opt(&api, &what, &name).await {
            Ok(x) => x,
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        let Some(cm) = existing else { return Ok(None) };
        let record = checked(state_ns, ns, parse(state_ns, &cm)?)?;
        Ok(Some(Journal {
            cluster: cluster.clone(),
            state_ns: state_ns.to_string(),
            run_id: run_id.to_string(),
            resource_version: cm.metadata.resource_version.clone(),
            shown: Some(record.phase),
            record,
            pending: None,
            annotator: None,
            written: None,
        }))
    }

    /// Creates the journal of `ns` (phase `Pending`), which [`Journal::open`] found absent. A journal that
    /// appeared meanwhile is another run's: fenced, unless it is our own create that landed.
    pub async fn create(
        cluster: &Cluster,
        state_ns: &str,
        ns: &str,
        run_id: &str,
    ) -> Result<Journal, JournalError> {
        let api: kube::Api<ConfigMap> = cluster.namespaced(state_ns);
        let name = config_map_name(ns);
        let what = format!("get journal ConfigMap {state_ns}/{name}");
        let mut j = Journal {
            cluster: cluster.clone(),
            state_ns: state_ns.to_string(),
            run_id: run_id.to_string(),
            resource_version: None,
            record: Record::new(ns, run_id),
            pending: None,
            annotator: None,
            written: None,
            shown: None,
        };
        if cluster.dry_run() {
            return Ok(j);
        }
        cluster.ensure_namespace(state_ns).await?;
        let cm = j.config_map(&j.record)?;
        let pp = cluster.post_params();
        match cluster
            .call(&format!("create journal ConfigMap {state_ns}/{name}"), || {
                api.create(&pp, &cm)
            })
            .await
        {
            Ok(created) => {
                j.resource_version = created.metadata.resource_version;
                j.annotate();
                Ok(j)
            }
            Err(e) if e.is_already_exists() => {
                // Another run created it first: fenced unless it is our own create that landed.
                let cm = cluster.call(&what, || api.get(&name)).await?;
                let stored = parse(state_ns, &cm)?;
                if stored == j.record {
                    j.resource_version = cm.metadata.resource_version;
                    Ok(j)
                } else {
                    Err(JournalError::Fenced {
                        namespace: ns.to_string(),
                        writer: stored.run_id,
                    })
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the journal of `ns` without creating it.
    pub async fn load(cluster: &Cluster, state_ns: &str, ns: &str) -> Result<Option<Record>, JournalError> {
        let api: kube::Api<ConfigMap> = cluster.namespaced(state_ns);
        let name = config_map_name(ns);
        let what = format!("get journal ConfigMap {state_ns}/{name}");
        match cluster.get_opt(&api, &what, &name).await {
            Ok(Some(cm)) => Ok(Some(checked(state_ns, ns, parse(state_ns, &cm)?)?)),
            Ok(None) => Ok(None),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every journal in the state namespace (for `status`), sorted by namespace.
    pub async fn list_all(cluster: &Cluster, state_ns: &str) -> Result<Vec<Record>, JournalError> {
        let api: kube::Api<ConfigMap> = cluster.namespaced(state_ns);
        let lp = ListParams::default().labels(&format!("{ROLE_LABEL}=journal"));
        let list = match cluster
            .call(&format!("list journals in {state_ns}"), || api.list(&lp))
            .await
        {
            Ok(l) => l.items,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut out = list
            .iter()
            .map(|cm| parse(state_ns, cm))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| a.namespace.cmp(&b.namespace));
        Ok(out)
    }

    /// Every journal in the state namespace by namespace, each checked as [`Journal::load`] checks it:
    /// one list for a whole fleet's preflight instead of one read per namespace.
    pub async fn load_all(
        cluster: &Cluster,
        state_ns: &str,
    ) -> Result<BTreeMap<String, Record>, JournalError> {
        Journal::list_all(cluster, state_ns)
            .await?
            .into_iter()
            .map(|r| {
                let ns = r.namespace.clone();
                Ok((ns.clone(), checked(state_ns, &ns, r)?))
            })
            .collect()
    }

    /// The current record.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// The resourceVersion this handle is fenced on.
    pub fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }

    /// Applies `f` to the record without writing it: the change goes out with the next
    /// [`Journal::update`]. For phase changes that need not be stored before anything else happens: a
    /// run that dies before the next write resumes from the phase last written, which the staged one
    /// follows from, so it must only stage what redoing from there reaches again (a step whose gates
    /// passed, with nothing sent since). Every write to the cluster is preceded by a journal write of
    /// its own, which carries what was staged.
    pub fn stage<F>(&mut self, f: F)
    where
        F: FnOnce(&mut Record),
    {
        if self.cluster.dry_run() {
            f(&mut self.record);
            return;
        }
        if self.written.is_none() {
            self.written = Some(self.record.clone());
        }
        f(&mut self.record);
        self.annotate();
    }

    /// Applies `f` to a copy of the record (with what was staged) and writes it with the fencing
    /// precondition. On success the handle holds the new record; on error it keeps the old one.
    pub async fn update<F>(&mut self, f: F) -> Result<&Record, JournalError>
    where
        F: FnOnce(&mut Record),
    {
        if let Some(pending) = self.pending.take() {
            self.settle(pending).await?;
        }
        let mut next = self.record.clone();
        f(&mut next);
        next.updated = jiff::Timestamp::now().to_string();
        next.run_id = self.run_id.clone();
        if next.runs.last() != Some(&self.run_id) && !next.runs.contains(&self.run_id) {
            next.runs.push(self.run_id.clone());
        }
        match fit(&mut next) {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                namespace = %next.namespace,
                dropped = n,
                "journal near the ConfigMap size limit: dropped the oldest gate results"
            ),
            Err(bytes) => {
                return Err(JournalError::TooLarge {
                    namespace: next.namespace.clone(),
                    bytes,
                    limit: crate::backup::MAX_CONFIGMAP_DATA_BYTES,
                });
            }
        }
        if self.cluster.dry_run() {
            self.record = next;
            return Ok(&self.record);
        }
        let ns = next.namespace.clone();
        let name = config_map_name(&ns);
        let api: kube::Api<ConfigMap> = self.cluster.namespaced(&self.state_ns);
        let mut cm = self.config_map(&next)?;
        cm.metadata.resource_version = self.resource_version.clone();
        let pp = self.cluster.post_params();
        let what = format!("write journal ConfigMap {}/{name}", self.state_ns);
        self.pending = Some(next.clone());
        let sent = self.cluster.call(&what, || api.replace(&name, &pp, &cm)).await;
        self.pending = None;
        match sent {
            Ok(written) => {
                self.resource_version = written.metadata.resource_version;
            }
            Err(e) if e.is_conflict() || e.is_not_found() => {
                let current = self.cluster.get_opt(&api, &what, &name).await?;
                match current {
                    Some(c) if parse(&self.state_ns, &c).ok().as_ref() == Some(&next) => {
                        self.resource_version = c.metadata.resource_version;
                    }
                    Some(c) => {
                        let writer = parse(&self.state_ns, &c)
                            .map(|r| r.run_id)
                            .unwrap_or_else(|_| "unknown".into());
                        return Err(JournalError::Fenced {
                            namespace: ns,
                            writer,
                        });
                    }
                    None => {
                        return Err(JournalError::Fenced {
                            namespace: ns,
                            writer: "deleted by someone".into(),
                        });
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
        self.record = next;
        self.written = None;
        if self.annotate() && self.record.phase.is_terminal() {
            self.flush_annotation().await;
        }
        Ok(&self.record)
    }

    /// Settles a write whose answer never arrived: the stored journal says whether it landed. Ours (the
    /// pending record) is adopted; the previous one means it never landed; anything else is another
    /// writer.
    async fn settle(&mut self, pending: Record) -> Result<(), JournalError> {
        let ns = pending.namespace.clone();
        let name = config_map_name(&ns);
        let api: kube::Api<ConfigMap> = self.cluster.namespaced(&self.state_ns);
        let what = format!(
            "read journal ConfigMap {}/{name} after an interrupted write",
            self.state_ns
        );
        let cm = self.cluster.call(&what, || api.get(&name)).await?;
        let stored = parse(&self.state_ns, &cm)?;
        if stored == pending {
            self.record = pending;
            self.written = None;
        } else if stored != *self.written.as_ref().unwrap_or(&self.record) {
            return Err(JournalError::Fenced {
                namespace: ns,
                writer: stored.run_id,
            });
        }
        self.resource_version = cm.metadata.resource_version;
        Ok(())
    }

    /// Hands the current phase to the state-annotation writer (started on first use) unless it is the
    /// one last handed over; true when it was handed over.
    fn annotate(&mut self) -> bool {
        if self.shown == Some(self.record.phase) {
            return false;
        }
        self.shown = Some(self.record.phase);
        let v = phase_label(&self.record.phase);
        match &self.annotator {
            Some(a) if !a.writer.is_finished() => {
                a.latest.send_replace(v);
            }
            _ => {
                self.annotator = Some(StateAnnotator::start(
                    self.cluster.clone(),
                    self.record.namespace.clone(),
                    v,
                ))
            }
        }
        true
    }

    /// Waits until the state annotation shows the last phase handed over (or its patch failed, which is
    /// logged): a namespace's final state is on it before the run moves on.
    pub async fn flush_annotation(&mut self) {
        if let Some(a) = self.annotator.take() {
            drop(a.latest);
            if let Err(e) = a.writer.await {
                tracing::warn!(namespace = %self.record.namespace, error = %e, "the state annotation writer failed");
            }
        }
    }

    fn config_map(&self, rec: &Record) -> Result<ConfigMap, JournalError> {
        let text = serde_json::to_string_pretty(rec).map_err(|e| JournalError::Corrupt {
            state_namespace: self.state_ns.clone(),
            name: config_map_name(&rec.namespace),
            message: e.to_string(),
        })?;
        Ok(ConfigMap {
            metadata: ObjectMeta {
                name: Some(config_map_name(&rec.namespace)),
                namespace: Some(self.state_ns.clone()),
                labels: Some(
                    [
                        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
                        (ROLE_LABEL.to_string(), "journal".to_string()),
                        (NAMESPACE_LABEL.to_string(), rec.namespace.clone()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            data: Some([(JOURNAL_KEY.to_string(), text)].into()),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::{LabelChange, ObjRef};

    fn label(target: ObjRef, key: &str) -> Change {
        Change::Label {
            step: Step::EnableAmbient,
            change: LabelChange {
                target,
                key: key.into(),
                before: None,
                after: Some("ambient".into()),
            },
        }
    }

    fn with(changes: Vec<Change>) -> Record {
        let mut r = Record::new("shop", "run-1");
        r.changes = changes;
        r
    }

    #[test]
    fn a_journal_that_stays_within_its_namespace_is_accepted() {
        let r = with(vec![
            label(ObjRef::namespace("shop"), "istio.io/dataplane-mode"),
            label(
                ObjRef::new("v1", "Service", "shop", "api"),
                "istio.io/use-waypoint",
            ),
            Change::Created {
                step: Step::ActivateWaypoint,
                object: ObjRef::new("security.istio.io/v1", "AuthorizationPolicy", "shop", "b"),
                role: "bridge".into(),
            },
            Change::Restarted {
                step: Step::Restart,
                workload: ObjRef::new("apps/v1", "Deployment", "shop", "web"),
                restarted_at: "t".into(),
                generation: None,
            },
        ]);
        assert_eq!(validate(&r, "shop"), Ok(()));
    }

    #[test]
    fn entries_reaching_outside_the_namespace_or_its_managed_labels_are_refused() {
        let cases = [
            (
                label(ObjRef::namespace("kube-system"), "istio-injection"),
                "not namespace shop",
            ),
            (
                label(
                    ObjRef::new("v1", "Service", "other", "api"),
                    "istio.io/use-waypoint",
                ),
                "not namespace shop",
            ),
            (
                label(ObjRef::namespace("shop"), "team"),
                "not one the migration changes",
            ),
            (
                Change::Deleted {
                    step: Step::RemoveSidecarPolicies,
                    object: ObjRef::new("v1", "Secret", "shop", "creds"),
                },
                "not an Istio",
            ),
            (
                Change::Created {
                    step: Step::ActivateWaypoint,
                    object: ObjRef::new("security.istio.io/v1", "AuthorizationPolicy", "prod", "x"),
                    role: "twin".into(),
                },
                "not an Istio",
            ),
            (
                Change::Restarted {
                    step: Step::Restart,
                    workload: ObjRef::new("apps/v1", "Deployment", "kube-system", "coredns"),
                    restarted_at: "t".into(),
                    generation: None,
                },
                "not a workload of shop",
            ),
        ];
        for (c, why) in cases {
            let err = validate(&with(vec![c.clone()]), "shop").unwrap_err();
            assert!(
                err.starts_with("changes[0]: ") && err.contains(why),
                "{c:?}: {err}"
            );
        }
        let err = validate(&with(vec![]), "payments").unwrap_err();
        assert!(err.contains("not of payments"), "{err}");
        let mut r = with(vec![]);
        r.original_injection = Some(InjectionLabel {
            key: "team".into(),
            value: "x".into(),
        });
        assert!(validate(&r, "shop").unwrap_err().contains("originalInjection"));
    }
}
