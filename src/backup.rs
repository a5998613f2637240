//! Backup, restore and verification of a namespace's Istio configuration (docs/design.md §4).
//!
//! What is saved: the Namespace's labels, every Service's labels, and the AuthorizationPolicy,
//! PeerAuthentication, RequestAuthentication, VirtualService, DestinationRule, Sidecar, Telemetry, HTTPRoute
//! and Gateway objects of the namespace, with server-set fields stripped (`resourceVersion`, `uid`,
//! `generation`, `creationTimestamp`, `managedFields`, `selfLink`, `deletionTimestamp`,
//! `deletionGracePeriodSeconds`, `status`; `ownerReferences` and annotations such as
//! `kubectl.kubernetes.io/last-applied-configuration` are kept) and `apiVersion`/`kind` filled in.
//!
//! File format: multi-document YAML, a comment header, then a `v1/Namespace` document (name, labels, and
//! the annotations `ambient-migrate.io/backup-taken-at` / `-run-id`), one `v1/Service` document per Service
//! (name, namespace, labels only), then the objects sorted by kind and name.
//!
//! In-cluster copy: ConfigMap `backup-<ns>` in the state namespace, data key `backup.yaml`, labels
//! managed-by / role=backup / `ambient-migrate.io/namespace=<ns>`; created once and never overwritten: a
//! resumed run loads it (the first backup is the truth).
//!
//! Restore semantics (idempotent; a second restore sends nothing):
//! - labels: only the Istio keys the tool manages ([`ISTIO_LABEL_KEYS`]) are set back to the backed-up
//!   values (added keys removed, removed keys re-added, changed values reverted) on the Namespace and on
//!   each backed-up Service that still exists; unrelated labels are left alone (other tools own them).
//! - objects: a missing object is re-created (without resourceVersion/uid); an object whose content
//!   differs is replaced by the backed-up one (with the live resourceVersion as precondition); objects not
//!   in the backup that the namespace's journal records as created by the migration (bridges, twins) are
//!   deleted. Everything else created after the backup is left alone, even with our managed-by label
//!   (a twin applied by hand from `plan --fixes-dir` carries it).
//! - "content" compared by [`verify`]: every top-level field except `metadata` and `status` (the spec),
//!   plus `metadata.labels`. Annotations are restored on re-creation but not compared, because
//!   controllers add their own (for example Istio's gateway controller).

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{DynamicObject, ListParams, ObjectMeta};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::assess::Snapshot;
use crate::assess::objects::raw_values;
use crate::cluster::{
    Cluster, ClusterError, DynKind, LabelTarget, MANAGED_BY_LABEL, MANAGED_BY_VALUE, ROLE_LABEL,
};
use crate::journal::NAMESPACE_LABEL;
use crate::steps::ObjRef;

/// Data key of the backup ConfigMap.
pub const BACKUP_KEY: &str = "backup.yaml";
/// Kinds saved and restored.
pub const BACKED_UP_KINDS: [DynKind; 9] = [
    DynKind::AuthorizationPolicy,
    DynKind::PeerAuthentication,
    DynKind::RequestAuthentication,
    DynKind::VirtualService,
    DynKind::DestinationRule,
    DynKind::Sidecar,
    DynKind::Telemetry,
    DynKind::HttpRoute,
    DynKind::Gateway,
];
/// The most a ConfigMap's data may hold: kube-apiserver's ConfigMap validation refuses more than
/// `MaxSecretSize` (1 MiB, `pkg/apis/core/validation/validation.go` `ValidateConfigMap`). The in-cluster
/// backup is one ConfigMap.
pub const MAX_CONFIGMAP_DATA_BYTES: usize = 1024 * 1024;
/// Each Service's labels by name, as a backup keeps them.
fn service_labels(services: &[Service]) -> BTreeMap<String, BTreeMap<String, String>> {
    services
        .iter()
        .map(|s| {
            (
                s.metadata.name.clone().unwrap_or_default(),
                s.metadata.labels.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// Label keys restore sets back on the Namespace and Services.
pub const ISTIO_LABEL_KEYS: [&str; 6] = [
    "istio-injection",
    "istio.io/rev",
    "istio.io/dataplane-mode",
    "istio.io/use-waypoint",
    "istio.io/use-waypoint-namespace",
    "istio.io/ingress-use-waypoint",
];
const TAKEN_AT_ANNOTATION: &str = "ambient-migrate.io/backup-taken-at";
const RUN_ID_ANNOTATION: &str = "ambient-migrate.io/backup-run-id";
const SERVER_FIELDS: [&str; 8] = [
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Backup errors.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Cluster access failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Reading or writing the local file failed.
    #[error("backup file {path}: {message}")]
    File { path: String, message: String },
    /// The YAML is not a backup this tool wrote.
    #[error("{source_name} is not a valid ambient-migrate backup: {message}")]
    Invalid { source_name: String, message: String },
    /// The backup would not fit in its ConfigMap.
    #[error(
        "the backup of namespace {namespace} is {bytes} bytes of YAML, more than the {limit} bytes a ConfigMap can hold (the API server would refuse it with 422 Invalid); nothing was changed in {namespace}. Shrink its Istio configuration (for example drop kubectl.kubernetes.io/last-applied-configuration annotations from its policies, or consolidate large AuthorizationPolicies) or migrate it by hand"
    )]
    TooLarge {
        namespace: String,
        bytes: usize,
        limit: usize,
    },
    /// No backup exists in the cluster.
    #[error(
        "no backup of namespace {namespace} in ConfigMap {state_namespace}/backup-{namespace}; take one with `ambient-migrate backup -n {namespace}`"
    )]
    Missing {
        namespace: String,
        state_namespace: String,
    },
    /// The migration started from a backup that is no longer stored: the pre-migration state cannot be
    /// read back from the cluster, and the live state must not take its place.
    #[error(
        "the backup namespace {namespace} was migrated from ({recorded}) is missing from ConfigMap {state_namespace}/backup-{namespace}; nothing was replaced: restore it from its file ({file}) with `ambient-migrate restore -f FILE -n {namespace}`, or re-create the ConfigMap from that file"
    )]
    Lost {
        namespace: String,
        state_namespace: String,
        /// When the recorded backup was taken, and its digest.
        recorded: String,
        file: String,
    },
    /// The stored backup is not the one the journal recorded (replaced or edited since).
    #[error(
        "ConfigMap {state_namespace}/backup-{namespace} holds a backup ({found}) that is not the one namespace {namespace} was migrated from ({recorded}); nothing was rolled back from it: put the recorded backup back from its file ({file})"
    )]
    Mismatch {
        namespace: String,
        state_namespace: String,
        /// When the recorded backup was taken, and its digest.
        recorded: String,
        /// The same for the stored one.
        found: String,
        file: String,
    },
}

/// A namespace's saved configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backup {
    /// The namespace.
    pub namespace: String,
    /// When it was taken (RFC 3339).
    pub taken_at: String,
    /// Run that took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// All labels of the Namespace.
    pub namespace_labels: BTreeMap<String, String>,
    /// All labels of each Service, by Service name.
    pub service_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// The saved objects (stripped, with apiVersion/kind), sorted by kind and name.
    pub objects: Vec<Value>,
}

/// One difference between the cluster and a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Difference {
    /// The object.
    pub object: ObjRef,
    /// What differs: `label <key>`, `missing`, `content`, `unexpected`.
    pub what: String,
    /// The backed-up value.
    pub expected: Option<Value>,
    /// The live value.
    pub actual: Option<Value>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.object, self.what)?;
        if self.what.starts_with("label") {
            write!(f, " (backup {:?}, live {:?})", self.expected, self.actual)?;
        }
        Ok(())
    }
}

/// What [`restore`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    /// Namespace restored.
    pub namespace: String,
    /// Label keys changed, as `<object>: <key>`.
    pub labels_changed: Vec<String>,
    /// Objects re-created.
    pub created: Vec<ObjRef>,
    /// Objects replaced by their backed-up version.
    pub replaced: Vec<ObjRef>,
    /// Tool-created objects deleted.
    pub deleted: Vec<ObjRef>,
    /// Things not restored and why (Service gone).
    pub skipped: Vec<String>,
    /// Remaining differences after the restore (empty = verified).
    pub differences: Vec<Difference>,
    /// True when the cluster now matches the backup.
    pub equal: bool,
}

impl RestoreReport {
    /// True when the restore changed nothing.
    pub fn is_noop(&self) -> bool {
        self.labels_changed.is_empty()
            && self.created.is_empty()
            && self.replaced.is_empty()
            && self.deleted.is_empty()
    }
}

/// Name of the backup ConfigMap of `ns`.
pub fn config_map_name(ns: &str) -> String {
    format!("backup-{ns}")
}

/// Removes server-set fields and status, keeping what a create needs.
pub fn strip(obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        m.remove("status");
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            for f in SERVER_FIELDS {
                meta.remove(f);
            }
            if meta
                .get("annotations")
                .and_then(Value::as_object)
                .is_some_and(|a| a.is_empty())
            {
                meta.remove("annotations");
            }
        }
    }
}

/// The compared content of an object: top-level fields except metadata/status, plus labels.
fn content(obj: &Value) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            if k != "metadata" && k != "status" && k != "apiVersion" && k != "kind" {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    let labels = obj
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    out.insert("labels".into(), labels);
    Value::Object(out)
}

fn obj_key(v: &Value) -> (String, String) {
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
    (s("/kind"), s("/metadata/name"))
}

fn kind_of(v: &Value) -> Option<DynKind> {
    let av = v.get("apiVersion")?.as_str()?;
    let k = v.get("kind")?.as_str()?;
    DynKind::from_group_kind(av, k)
}

impl Backup {
    /// Reads the live configuration of `ns` (no writes).
    pub async fn read_live(cluster: &Cluster, ns: &str, run_id: Option<&str>) -> Result<Backup, BackupError> {
        let namespace_labels = cluster
            .labels_of(&LabelTarget::Namespace { name: ns.to_string() })
            .await?;
        let svc_api: kube::Api<Service> = cluster.namespaced(ns);
        let lp = ListParams::default();
        let services = cluster
            .call(&format!("list Services in {ns}"), || svc_api.list(&lp))
            .await?;
        let service_labels = service_labels(&services.items);
        let lists =
            futures::future::try_join_all(BACKED_UP_KINDS.iter().map(|k| cluster.list_dyn(*k, ns))).await?;
        let mut objects = Vec::new();
        for obj in lists.into_iter().flatten() {
            let mut v = serde_json::to_value(&obj).map_err(|e| BackupError::Invalid {
                source_name: format!("namespace {ns}"),
                message: e.to_string(),
            })?;
            strip(&mut v);
            objects.push(v);
        }
        objects.sort_by_key(obj_key);
        Ok(Backup {
            namespace: ns.to_string(),
            taken_at: jiff::Timestamp::now().to_string(),
            run_id: run_id.map(str::to_string),
            namespace_labels,
            service_labels,
            objects,
        })
    }

    /// The backup `read_live` would take, built from the preflight's snapshot of the namespace (same
    /// objects, same stripping), so its size is known before anything is written.
    pub fn from_snapshot(snap: &Snapshot, run_id: Option<&str>) -> Backup {
        let ns = snap.namespace.metadata.name.clone().unwrap_or_default();
        let service_labels = service_labels(&snap.services);
        let mut objects: Vec<Value> = [
            raw_values(&snap.authorization_policies),
            raw_values(&snap.peer_authentications),
            raw_values(&snap.request_authentications),
            raw_values(&snap.virtual_services),
            raw_values(&snap.destination_rules),
            raw_values(&snap.sidecars),
            raw_values(&snap.telemetries),
            raw_values(&snap.http_routes),
            raw_values(&snap.gateways),
        ]
        .into_iter()
        .flatten()
        .map(|o| {
            let mut v = o.clone();
            strip(&mut v);
            v
        })
        .collect();
        objects.sort_by_key(obj_key);
        Backup {
            namespace: ns,
            taken_at: jiff::Timestamp::now().to_string(),
            run_id: run_id.map(str::to_string),
            namespace_labels: snap.namespace.metadata.labels.clone().unwrap_or_default(),
            service_labels,
            objects,
        }
    }

    /// The size of the backup's YAML, or [`BackupError::TooLarge`] when it would not fit in its
    /// ConfigMap ([`MAX_CONFIGMAP_DATA_BYTES`]).
    pub fn check_fits(&self) -> Result<usize, BackupError> {
        let bytes = self.to_yaml()?.len();
        if bytes > MAX_CONFIGMAP_DATA_BYTES {
            return Err(BackupError::TooLarge {
                namespace: self.namespace.clone(),
                bytes,
                limit: MAX_CONFIGMAP_DATA_BYTES,
            });
        }
        Ok(bytes)
    }

    /// Multi-document YAML with a comment header (see the module docs).
    pub fn to_yaml(&self) -> Result<String, BackupError> {
        let mut docs = Vec::new();
        let mut annotations = serde_json::Map::new();
        annotations.insert(TAKEN_AT_ANNOTATION.into(), json!(self.taken_at));
        if let Some(r) = &self.run_id {
            annotations.insert(RUN_ID_ANNOTATION.into(), json!(r));
        }
        docs.push(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": self.namespace, "labels": self.namespace_labels, "annotations": annotations}
        }));
        for (name, labels) in &self.service_labels {
            docs.push(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": self.namespace, "labels": labels}
            }));
        }
        docs.extend(self.objects.iter().cloned());
        let body = serde_saphyr::to_string_multiple(&docs).map_err(|e| BackupError::Invalid {
            source_name: format!("backup of {}", self.namespace),
            message: e.to_string(),
        })?;
        Ok(format!(
            "# ambient-migrate backup of namespace {ns}, taken {at}{run}\n# Namespace and Service documents carry labels only; restore with `ambient-migrate restore -f <file>`.\n{body}",
            ns = self.namespace,
            at = self.taken_at,
            run = self
                .run_id
                .as_deref()
                .map(|r| format!(" by run {r}"))
                .unwrap_or_default(),
        ))
    }

    /// Parses the YAML written by [`Backup::to_yaml`]; `source_name` names the input in errors.
    pub fn from_yaml(text: &str, source_name: &str) -> Result<Backup, BackupError> {
        let invalid = |message: String| BackupError::Invalid {
            source_name: source_name.to_string(),
            message,
        };
        let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| invalid(e.to_string()))?;
        let mut ns_doc = None;
        let mut service_labels = BTreeMap::new();
        let mut objects = Vec::new();
        // Every document is checked before anything is returned, so a restore never starts from a file
        // that would stop it half way: labels must be a string map (a malformed one would otherwise read
        // as "no labels" and strip every Istio label), names present, and every object in the backed-up
        // namespace.
        for (i, d) in docs.into_iter().filter(|d| !d.is_null()).enumerate() {
            let what = format!("document {} ({})", i + 1, ObjRef::from_value(&d));
            let labels = |d: &Value| -> Result<BTreeMap<String, String>, BackupError> {
                match d.pointer("/metadata/labels") {
                    None | Some(Value::Null) => Ok(BTreeMap::new()),
                    Some(l) => serde_json::from_value(l.clone()).map_err(|e| {
                        invalid(format!("{what}: metadata.labels must map names to strings: {e}"))
                    }),
                }
            };
            let name = d
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| invalid(format!("{what}: no metadata.name")))?
                .to_string();
            match (
                d.get("apiVersion").and_then(Value::as_str),
                d.get("kind").and_then(Value::as_str),
            ) {
                (Some("v1"), Some("Namespace")) => {
                    labels(&d)?;
                    if ns_doc.replace(d).is_some() {
                        return Err(invalid(format!("{what}: a second Namespace document")));
                    }
                }
                (Some("v1"), Some("Service")) => {
                    service_labels.insert(name, labels(&d)?);
                }
                _ => {
                    if kind_of(&d).is_none() {
                        return Err(invalid(format!("unexpected {what}")));
                    }
                    labels(&d)?;
                    objects.push(d);
                }
            }
        }
        let ns_doc = ns_doc.ok_or_else(|| invalid("no Namespace document".into()))?;
        let ns_name = ns_doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        for o in &objects {
            if let Some(other) = o.pointer("/metadata/namespace").and_then(Value::as_str)
                && other != ns_name
            {
                return Err(invalid(format!(
                    "{} is in namespace {other}, not in the backed-up namespace {ns_name}",
                    ObjRef::from_value(o)
                )));
            }
        }
        let s = |p: &str| ns_doc.pointer(p).and_then(Value::as_str).map(str::to_string);
        let namespace_labels = serde_json::from_value(
            ns_doc
                .pointer("/metadata/labels")
                .cloned()
                .unwrap_or_else(|| json!({})),
        )
        .map_err(|e| invalid(e.to_string()))?;
        objects.sort_by_key(obj_key);
        Ok(Backup {
            namespace: s("/metadata/name").ok_or_else(|| invalid("Namespace document has no name".into()))?,
            taken_at: s(&format!(
                "/metadata/annotations/{}",
                TAKEN_AT_ANNOTATION.replace('/', "~1")
            ))
            .unwrap_or_default(),
            run_id: s(&format!(
                "/metadata/annotations/{}",
                RUN_ID_ANNOTATION.replace('/', "~1")
            )),
            namespace_labels,
            service_labels,
            objects,
        })
    }

    /// Writes the YAML to `path` (atomically: temp file then rename).
    pub fn write_file(&self, path: &Path) -> Result<(), BackupError> {
        let file_err = |e: std::io::Error| BackupError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let text = self.to_yaml()?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(file_err)?;
        std::fs::rename(&tmp, path).map_err(file_err)
    }

    /// Reads a backup file.
    pub fn load_file(path: &Path) -> Result<Backup, BackupError> {
        let text = std::fs::read_to_string(path).map_err(|e| BackupError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Backup::from_yaml(&text, &path.display().to_string())
    }

    /// Loads the in-cluster backup of `ns`, `None` when there is none.
    pub async fn load_from_cluster(
        cluster: &Cluster,
        state_ns: &str,
        ns: &str,
    ) -> Result<Option<Backup>, BackupError> {
        let api: kube::Api<ConfigMap> = cluster.namespaced(state_ns);
        let name = config_map_name(ns);
        let what = format!("get backup ConfigMap {state_ns}/{name}");
        let cm = match cluster.get_opt(&api, &what, &name).await {
            Ok(cm) => cm,
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        let Some(cm) = cm else { return Ok(None) };
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get(BACKUP_KEY))
            .ok_or_else(|| BackupError::Invalid {
                source_name: format!("ConfigMap {state_ns}/{name}"),
                message: format!("no data key {BACKUP_KEY}"),
            })?;
        Ok(Some(Backup::from_yaml(
            text,
            &format!("ConfigMap {state_ns}/{name}"),
        )?))
    }

    /// SHA-256 of the backup's YAML, `sha256:<hex>`: its identity in the journal.
    pub fn digest(&self) -> Result<String, BackupError> {
        let yaml = self.to_yaml()?;
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, yaml.as_bytes());
        let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Ok(format!("sha256:{hex}"))
    }

    /// The objects as `(kind, name) -> object`.
    fn object_map(&self) -> BTreeMap<(DynKind, String), &Value> {
        self.objects
            .iter()
            .filter_map(|o| {
                Some((
                    (kind_of(o)?, o.pointer("/metadata/name")?.as_str()?.to_string()),
                    o,
                ))
            })
            .collect()
    }
}

/// What the journal records of the backup a migration started from: enough to tell it from any other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupIdentity {
    /// When it was taken.
    pub taken_at: String,
    /// SHA-256 of its YAML ([`Backup::digest`]).
    pub digest: String,
    /// The local copy written, if any (named in errors: it is how a person gets the truth back).
    pub file: Option<String>,
}

/// Loads the stored backup of `ns` and checks that it is the one the migration started from. A missing or
/// different backup is an error: the live, half-migrated state must never silently stand in for it.
pub async fn load_recorded(
    cluster: &Cluster,
    state_ns: &str,
    ns: &str,
    recorded: &BackupIdentity,
) -> Result<Backup, BackupError> {
    let file = recorded
        .file
        .clone()
        .unwrap_or_else(|| "the CI artifact backup-<ns>.yaml of the run that migrated it".into());
    let describe = |taken_at: &str, digest: &str| format!("taken {taken_at}, {digest}");
    let Some(stored) = Backup::load_from_cluster(cluster, state_ns, ns).await? else {
        return Err(BackupError::Lost {
            namespace: ns.to_string(),
            state_namespace: state_ns.to_string(),
            recorded: describe(&recorded.taken_at, &recorded.digest),
            file,
        });
    };
    let found = stored.digest()?;
    if found != recorded.digest {
        return Err(BackupError::Mismatch {
            namespace: ns.to_string(),
            state_namespace: state_ns.to_string(),
            recorded: describe(&recorded.taken_at, &recorded.digest),
            found: describe(&stored.taken_at, &found),
            file,
        });
    }
    Ok(stored)
}

/// Takes the backup of `ns` from the live cluster and stores it, replacing whatever backup is stored.
/// Call it only before the migration's first mutation: the live state is then the truth, and a stored
/// backup (an old `backup -n`, one left by an earlier attempt) is stale. In dry-run mode nothing is
/// stored.
pub async fn take_fresh(
    cluster: &Cluster,
    state_ns: &str,
    ns: &str,
    run_id: Option<&str>,
) -> Result<Backup, BackupError> {
    let backup = Backup::read_live(cluster, ns, run_id).await?;
    store_fresh(cluster, state_ns, backup).await
}

/// Stores a backup just taken (replacing a stale stored one): the part of [`take_fresh`] after the read,
/// for a caller that took the backup from a watch cache.
pub async fn store_fresh(cluster: &Cluster, state_ns: &str, backup: Backup) -> Result<Backup, BackupError> {
    let ns = backup.namespace.clone();
    let ns = ns.as_str();
    backup.check_fits()?;
    if cluster.dry_run() {
        return Ok(backup);
    }
    cluster.ensure_namespace(state_ns).await?;
    let name = config_map_name(ns);
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(state_ns.to_string()),
            labels: Some(
                [
                    (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
                    (ROLE_LABEL.to_string(), "backup".to_string()),
                    (NAMESPACE_LABEL.to_string(), ns.to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        data: Some([(BACKUP_KEY.to_string(), backup.to_yaml()?)].into()),
        ..Default::default()
    };
    let api: kube::Api<ConfigMap> = cluster.namespaced(state_ns);
    let pp = cluster.post_params();
    match cluster
        .call(&format!("create backup ConfigMap {state_ns}/{name}"), || {
            api.create(&pp, &cm)
        })
        .await
    {
        Ok(_) => Ok(backup),
        Err(e) if e.is_already_exists() => {
            let what = format!("replace stale backup ConfigMap {state_ns}/{name}");
            let mut cm = cm;
            cm.metadata.resource_version = cluster
                .call(&what, || api.get(&name))
                .await?
                .metadata
                .resource_version;
            cluster.call(&what, || api.replace(&name, &pp, &cm)).await?;
            tracing::info!(
                namespace = ns,
                "replaced a stale stored backup with the live state"
            );
            Ok(backup)
        }
        Err(e) => Err(e.into()),
    }
}

fn istio_label_changes(
    want: &BTreeMap<String, String>,
    live: &BTreeMap<String, String>,
) -> Vec<(String, Option<String>)> {
    ISTIO_LABEL_KEYS
        .iter()
        .filter(|k| want.get(**k) != live.get(**k))
        .map(|k| (k.to_string(), want.get(*k).cloned()))
        .collect()
}

fn to_dynamic(v: &Value) -> Result<DynamicObject, ClusterError> {
    serde_json::from_value(v.clone()).map_err(|e| ClusterError::Decode {
        what: ObjRef::from_value(v).to_string(),
        message: e.to_string(),
    })
}

/// Restores `backup` (see the module docs for the exact semantics), then verifies.
/// Whether the journal recorded `kind/name` as created by the migration.
fn created_by_migration(created: &[ObjRef], kind: DynKind, name: &str) -> bool {
    created.iter().any(|o| o.kind == kind.kind() && o.name == name)
}

/// The objects a journal records as created by the migration (the only extra objects a restore or a
/// rollback deletes, and the only ones its verification counts as unexpected).
pub fn created_objects(changes: &[crate::steps::Change]) -> Vec<ObjRef> {
    changes
        .iter()
        .filter_map(|c| match c {
            crate::steps::Change::Created { object, .. } => Some(object.clone()),
            _ => None,
        })
        .collect()
}

pub async fn restore(
    cluster: &Cluster,
    backup: &Backup,
    created: &[ObjRef],
) -> Result<RestoreReport, BackupError> {
    let ns = backup.namespace.as_str();
    let mut report = RestoreReport {
        namespace: ns.to_string(),
        ..Default::default()
    };
    // Labels.
    let ns_target = LabelTarget::Namespace { name: ns.to_string() };
    let live = cluster.labels_of(&ns_target).await?;
    let changes = istio_label_changes(&backup.namespace_labels, &live);
    if !changes.is_empty() {
        for o in cluster
            .set_labels(&ns_target, &changes)
            .await?
            .into_iter()
            .filter(|o| o.changed)
        {
            report.labels_changed.push(format!("Namespace/{ns}: {}", o.key));
        }
    }
    let svc_api: kube::Api<Service> = cluster.namespaced(ns);
    for (name, want) in &backup.service_labels {
        let what = format!("get Service {ns}/{name}");
        let Some(svc) = cluster.get_opt(&svc_api, &what, name).await? else {
            report
                .skipped
                .push(format!("Service {ns}/{name}: no longer exists"));
            continue;
        };
        let live = svc.metadata.labels.unwrap_or_default();
        let changes = istio_label_changes(want, &live);
        if changes.is_empty() {
            continue;
        }
        let target = LabelTarget::Service {
            namespace: ns.to_string(),
            name: name.clone(),
        };
        for o in cluster
            .set_labels(&target, &changes)
            .await?
            .into_iter()
            .filter(|o| o.changed)
        {
            report
                .labels_changed
                .push(format!("Service/{ns}/{name}: {}", o.key));
        }
    }
    // Objects.
    let wanted = backup.object_map();
    for kind in BACKED_UP_KINDS {
        let live = cluster.list_dyn(kind, ns).await?;
        let mut live_by_name = BTreeMap::new();
        for o in live {
            live_by_name.insert(o.metadata.name.clone().unwrap_or_default(), o);
        }
        for ((k, name), want) in wanted.iter().filter(|((k, _), _)| *k == kind) {
            let mut desired = (*want).clone();
            strip(&mut desired);
            if let Some(m) = desired.pointer_mut("/metadata").and_then(Value::as_object_mut) {
                m.insert("namespace".into(), json!(ns));
            }
            match live_by_name.get(name) {
                None => {
                    cluster.create_dyn(*k, ns, &to_dynamic(&desired)?).await?;
                    report.created.push(ObjRef::from_value(&desired));
                }
                Some(l) => {
                    let lv = serde_json::to_value(l).unwrap_or_default();
                    if content(&lv) != content(&desired) {
                        let mut obj = to_dynamic(&desired)?;
                        obj.metadata.resource_version = l.metadata.resource_version.clone();
                        cluster.replace_dyn(*k, ns, &obj).await?;
                        report.replaced.push(ObjRef::from_value(&desired));
                    }
                }
            }
        }
        for (name, l) in &live_by_name {
            if wanted.contains_key(&(kind, name.clone())) {
                continue;
            }
            let labelled = l
                .metadata
                .labels
                .as_ref()
                .and_then(|m| m.get(MANAGED_BY_LABEL))
                .map(String::as_str)
                == Some(MANAGED_BY_VALUE);
            let obj = ObjRef::new(&kind.api_version(), kind.kind(), ns, name);
            if created_by_migration(created, kind, name) {
                if cluster.delete_dyn(kind, ns, name).await? {
                    report.deleted.push(obj);
                }
            } else if labelled {
                // Carries our label but no recorded migration created it (applied by hand from
                // `plan --fixes-dir`, say): someone else's object now, left as it is.
                report.skipped.push(format!(
                    "{obj}: not in the backup and not created by a recorded migration; left as it is"
                ));
            }
        }
    }
    report.differences = verify(cluster, backup, created).await?;
    report.equal = report.differences.is_empty();
    tracing::info!(
        namespace = ns,
        equal = report.equal,
        noop = report.is_noop(),
        "restore finished"
    );
    Ok(report)
}

/// Compares the live namespace with `backup`: Istio label keys of the Namespace and Services, and the
/// content of the backed-up kinds (missing, changed, and tool-created extra objects).
pub async fn verify(
    cluster: &Cluster,
    backup: &Backup,
    created: &[ObjRef],
) -> Result<Vec<Difference>, BackupError> {
    let ns = backup.namespace.as_str();
    let mut diffs = Vec::new();
    let label_diffs = |obj: ObjRef,
                       want: &BTreeMap<String, String>,
                       live: &BTreeMap<String, String>,
                       out: &mut Vec<Difference>| {
        for k in ISTIO_LABEL_KEYS {
            if want.get(k) != live.get(k) {
                out.push(Difference {
                    object: obj.clone(),
                    what: format!("label {k}"),
                    expected: want.get(k).map(|v| json!(v)),
                    actual: live.get(k).map(|v| json!(v)),
                });
            }
        }
    };
    let live_ns = cluster
        .labels_of(&LabelTarget::Namespace { name: ns.to_string() })
        .await?;
    label_diffs(
        ObjRef::namespace(ns),
        &backup.namespace_labels,
        &live_ns,
        &mut diffs,
    );
    let svc_api: kube::Api<Service> = cluster.namespaced(ns);
    for (name, want) in &backup.service_labels {
        let what = format!("get Service {ns}/{name}");
        if let Some(svc) = cluster.get_opt(&svc_api, &what, name).await? {
            let live = svc.metadata.labels.unwrap_or_default();
            label_diffs(ObjRef::new("v1", "Service", ns, name), want, &live, &mut diffs);
        }
    }
    let wanted = backup.object_map();
    for kind in BACKED_UP_KINDS {
        let live = cluster.list_dyn(kind, ns).await?;
        let mut live_by_name = BTreeMap::new();
        for o in live {
            let name = o.metadata.name.clone().unwrap_or_default();
            live_by_name.insert(name, serde_json::to_value(&o).unwrap_or_default());
        }
        for ((_, name), want) in wanted.iter().filter(|((k, _), _)| *k == kind) {
            let obj = ObjRef::new(&kind.api_version(), kind.kind(), ns, name);
            match live_by_name.get(name) {
                None => diffs.push(Difference {
                    object: obj,
                    what: "missing".into(),
                    expected: Some(content(want)),
                    actual: None,
                }),
                Some(l) if content(l) != content(want) => diffs.push(Difference {
                    object: obj,
                    what: "content".into(),
                    expected: Some(content(want)),
                    actual: Some(content(l)),
                }),
                Some(_) => {}
            }
        }
        for (name, l) in &live_by_name {
            if created_by_migration(created, kind, name) && !wanted.contains_key(&(kind, name.clone())) {
                diffs.push(Difference {
                    object: ObjRef::new(&kind.api_version(), kind.kind(), ns, name),
                    what: "unexpected".into(),
                    expected: None,
                    actual: Some(content(l)),
                });
            }
        }
    }
    Ok(diffs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n    istio-injection: enabled\n";

    fn parse(extra: &str) -> Result<Backup, String> {
        Backup::from_yaml(&format!("{NS}{extra}"), "shop.yaml").map_err(|e| e.to_string())
    }

    #[test]
    fn a_valid_file_parses() {
        let b = parse(
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: api\n  namespace: shop\n  labels:\n    istio.io/use-waypoint: waypoint\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  namespace: shop\nspec: {}\n",
        )
        .unwrap();
        assert_eq!(b.service_labels["api"]["istio.io/use-waypoint"], "waypoint");
        assert_eq!(b.objects.len(), 1);
    }

    #[test]
    fn the_backup_from_a_snapshot_holds_each_object_as_served_converted_or_not() {
        // One policy that does not convert (unknown field), one DestinationRule with a field this tool does not
        // know: both are backed up exactly as listed, less the server's fields.
        let ap = serde_json::json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "odd", "namespace": "shop", "resourceVersion": "9", "uid": "u1"},
            "spec": {"rules": [{"to": [{"operation": {"verbs": ["GET"]}}]}]}, "status": {"x": 1}});
        let dr = serde_json::json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "db", "namespace": "shop", "labels": {"a": "b"}},
            "spec": {"host": "db", "newField": {"n": [1, 2]}}});
        let snap: Snapshot = serde_json::from_value(serde_json::json!({
            "namespace": {"metadata": {"name": "shop"}},
            "authorizationPolicies": [ap], "destinationRules": [dr],
        }))
        .unwrap();
        assert!(snap.authorization_policies[0].error().is_some());
        assert_eq!(snap.destination_rules[0].unknown_fields(), ["spec.newField"]);
        let b = Backup::from_snapshot(&snap, None);
        let mut want_ap = ap.clone();
        strip(&mut want_ap);
        assert_eq!(b.objects, vec![want_ap, dr.clone()]);
        // The snapshot's own serde form is unchanged: each object as listed.
        let again = serde_json::to_value(&snap).unwrap();
        assert_eq!(again["authorizationPolicies"][0], ap);
        assert_eq!(again["destinationRules"][0], dr);
    }

    #[test]
    fn every_document_is_checked_before_a_restore_can_start() {
        let cases = [
            // Malformed labels must not read as "no labels" (which would strip every Istio label).
            (
                "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: api\n  labels: [a, b]\n",
                "metadata.labels must map names to strings",
            ),
            (
                "---\napiVersion: v1\nkind: Service\nmetadata:\n  labels: {}\n",
                "no metadata.name",
            ),
            (
                "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  namespace: kube-system\nspec: {}\n",
                "not in the backed-up namespace shop",
            ),
            (
                "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n",
                "unexpected document 2",
            ),
            (
                "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: other\n",
                "a second Namespace document",
            ),
        ];
        for (doc, why) in cases {
            let err = parse(doc).unwrap_err();
            assert!(err.contains("shop.yaml") && err.contains(why), "{why}: {err}");
        }
    }
}
