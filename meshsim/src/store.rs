//! The object store: what etcd plus the generic apiserver registry do for meshsim. Objects are kept as JSON
//! (`serde_json::Value`), every write bumps one global resourceVersion, and every change is an event that
//! watches replay from a bounded history (older resourceVersions answer 410 Gone, as a compacted etcd does).
//!
//! Server-set fields follow `k8s.io/apiserver/pkg/registry/rest` (`BeforeCreate`/`BeforeUpdate`): uid,
//! resourceVersion, creationTimestamp, generation (bumped only when something outside metadata and status
//! changes), and the status subresource split (main-resource writes keep the stored status).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

use bytes::Bytes;

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use crate::resources::{self, ResId};

/// Key of one stored object. Cluster-scoped objects have an empty namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjKey {
    pub res: ResId,
    pub namespace: String,
    pub name: String,
}

impl ObjKey {
    pub fn new(res: ResId, namespace: &str, name: &str) -> Self {
        let namespace = if resources::get(res).namespaced {
            namespace.to_string()
        } else {
            String::new()
        };
        ObjKey {
            res,
            namespace,
            name: name.to_string(),
        }
    }
}

/// Watch event type, as in the `type` field of a watch stream line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(&self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to the store. `object` is the object after the change (for deletes: as it was, with the
/// deletion's resourceVersion).
#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub rv: u64,
    pub res: ResId,
    pub namespace: String,
    pub kind: EventType,
    pub object: Value,
    /// The event's watch-stream lines by type, encoded once and shared by every watcher that sends them.
    lines: [OnceLock<Bytes>; 3],
}

impl WatchEvent {
    pub fn new(rv: u64, res: ResId, namespace: String, kind: EventType, object: Value) -> Self {
        WatchEvent {
            rv,
            res,
            namespace,
            kind,
            object,
            lines: Default::default(),
        }
    }

    /// The watch-stream line `{"type":...,"object":...}` for this event's object sent as `kind` (a
    /// watcher whose selector the object enters or leaves sends it as ADDED or DELETED). Encoded on first
    /// use: with many watchers, each event is serialised once per type rather than once per watcher, as
    /// the apiserver's watch cache shares one encoding across watchers (`cachingObject`,
    /// `k8s.io/apiserver/pkg/storage/cacher/caching_object.go`).
    pub fn line(&self, kind: EventType) -> Bytes {
        let i = match kind {
            EventType::Added => 0,
            EventType::Modified => 1,
            EventType::Deleted => 2,
        };
        self.lines[i]
            .get_or_init(|| watch_line(kind.as_str(), &self.object))
            .clone()
    }
}

/// One newline-terminated JSON watch event, `{"type":TYPE,"object":OBJECT}` (the order
/// `metav1.WatchEvent` serialises its fields in).
pub fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut v = Vec::with_capacity(256);
    v.extend_from_slice(b"{\"type\":\"");
    v.extend_from_slice(kind.as_bytes());
    v.extend_from_slice(b"\",\"object\":");
    if serde_json::to_writer(&mut v, object).is_err() {
        v.extend_from_slice(b"null");
    }
    v.extend_from_slice(b"}\n");
    Bytes::from(v)
}

/// What a watch starts from: the events it missed (to replay) and a receiver for the next ones.
pub type WatchStart = (Vec<Arc<WatchEvent>>, broadcast::Receiver<Arc<WatchEvent>>);

/// Errors with the reason and code a real apiserver would put in its Status object.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: String, name: String },
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: String, name: String },
    #[error("{message}")]
    Conflict {
        resource: String,
        name: String,
        message: String,
    },
    #[error("{message}")]
    Invalid {
        resource: String,
        name: String,
        message: String,
    },
    #[error("{message}")]
    Forbidden {
        resource: String,
        name: String,
        message: String,
    },
    #[error("{message}")]
    BadRequest { message: String },
    #[error("too old resource version: {requested} ({oldest})")]
    Gone { requested: u64, oldest: u64 },
    #[error("{message}")]
    Internal { message: String },
    /// An injected fault answering with an arbitrary code.
    #[error("{message}")]
    Injected {
        code: u16,
        reason: String,
        message: String,
    },
}

impl StoreError {
    /// HTTP status code of the Status object.
    pub fn code(&self) -> u16 {
        match self {
            StoreError::NotFound { .. } => 404,
            StoreError::AlreadyExists { .. } | StoreError::Conflict { .. } => 409,
            StoreError::Invalid { .. } => 422,
            StoreError::Forbidden { .. } => 403,
            StoreError::BadRequest { .. } => 400,
            StoreError::Gone { .. } => 410,
            StoreError::Internal { .. } => 500,
            StoreError::Injected { code, .. } => *code,
        }
    }

    /// `reason` of the Status object (`metav1.StatusReason`).
    pub fn reason(&self) -> &str {
        match self {
            StoreError::NotFound { .. } => "NotFound",
            StoreError::AlreadyExists { .. } => "AlreadyExists",
            StoreError::Conflict { .. } => "Conflict",
            StoreError::Invalid { .. } => "Invalid",
            StoreError::Forbidden { .. } => "Forbidden",
            StoreError::BadRequest { .. } => "BadRequest",
            StoreError::Gone { .. } => "Expired",
            StoreError::Internal { .. } => "InternalError",
            StoreError::Injected { reason, .. } => reason,
        }
    }

    /// `(group, kind-ish resource, name)` for Status `details`.
    pub fn details(&self) -> Option<(&str, &str)> {
        match self {
            StoreError::NotFound { resource, name }
            | StoreError::AlreadyExists { resource, name }
            | StoreError::Conflict { resource, name, .. }
            | StoreError::Invalid { resource, name, .. }
            | StoreError::Forbidden { resource, name, .. } => Some((resource.as_str(), name.as_str())),
            _ => None,
        }
    }

    /// The `meta.k8s.io/v1` Status body for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        if let Some((resource, name)) = self.details() {
            let (group, kind) = match resource.split_once('.') {
                Some((kind, group)) => (group, kind),
                None => ("", resource),
            };
            status["details"] = json!({"name": name, "group": group, "kind": kind});
        }
        status
    }

    fn not_found(res: ResId, name: &str) -> Self {
        StoreError::NotFound {
            resource: qualified(res),
            name: name.to_string(),
        }
    }
}

/// `plural` or `plural.group`, as apiserver messages name resources.
pub fn qualified(res: ResId) -> String {
    let r = resources::get(res);
    if r.group.is_empty() {
        r.plural.to_string()
    } else {
        format!("{}.{}", r.plural, r.group)
    }
}

/// Options every mutation takes.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    /// `dryRun=All`: run defaulting, admission and validation, persist nothing, emit no event.
    pub dry_run: bool,
    /// `fieldManager`, recorded in `metadata.managedFields`.
    pub field_manager: Option<String>,
    /// The operation recorded with the field manager (`Update` or `Apply`).
    pub apply: bool,
    /// The applied configuration of a server-side apply: the fields the manager then owns.
    pub applied: Option<Value>,
    /// `force=true` on an apply: take conflicting fields from their other managers.
    pub force: bool,
}

/// Delete propagation (`propagationPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    #[default]
    Background,
    Foreground,
    Orphan,
}

/// Which part of an object a write targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The main resource: spec and metadata; the stored status is kept for kinds with a status subresource.
    Main,
    /// The `status` subresource: only status (and, for pods, labels/annotations) change.
    Status,
    /// Controllers writing as the system: everything the new object says is kept.
    Internal,
}

/// Operation an admission plugin sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Update,
}

/// A mutating admission step run inside the store's write path (the sidecar injector is one). It sees the
/// store as it is at the moment of the write, so decisions depend on namespace labels at pod creation, as a
/// webhook's do.
pub trait Admission: Send + Sync {
    fn admit(&self, view: &StoreView<'_>, res: ResId, op: Op, obj: &mut Value) -> Result<(), StoreError>;
}

/// Read access to the store while it is locked (for admission plugins).
pub struct StoreView<'a> {
    inner: &'a Inner,
}

impl StoreView<'_> {
    pub fn get(&self, res: ResId, namespace: &str, name: &str) -> Option<&Value> {
        self.get_shared(res, namespace, name).map(|o| &**o)
    }

    pub fn list(&self, res: ResId, namespace: Option<&str>) -> Vec<&Value> {
        self.inner.list(res, namespace).map(|o| &**o).collect()
    }

    /// The stored object itself, shared: a reader that keeps it past the lock (a controller pass's
    /// snapshot) takes a reference, not a copy.
    pub fn get_shared(&self, res: ResId, namespace: &str, name: &str) -> Option<&Shared> {
        self.inner.objects.get(&ObjKey::new(res, namespace, name))
    }

    /// Like [`StoreView::list`], the stored objects themselves, shared.
    pub fn list_shared(&self, res: ResId, namespace: Option<&str>) -> impl Iterator<Item = &Shared> {
        self.inner.list(res, namespace)
    }
}

/// What an update makes of the object it read ([`Store::next_version`]).
enum Next {
    /// Nothing but managed fields would change: the stored object stands.
    Unchanged,
    /// A dry run's answer, never stored.
    DryRun(Value),
    /// The new version, to be committed if the object was not written meanwhile.
    Write(Value),
}

/// A stored object, shared. Objects are immutable once stored (a write stores a new one), so readers share
/// them: a read, a list page or a controller's snapshot costs a reference count, not a deep copy of a JSON
/// tree. The object is held by the event that wrote its current version, so the store and the watch
/// history hold one copy between them, as the apiserver's watch cache keeps one object per event
/// (`k8s.io/apiserver/pkg/storage/cacher/watch_cache.go`, `watchCacheEvent`).
#[derive(Debug, Clone)]
pub struct Shared(Arc<WatchEvent>);

impl Shared {
    /// An object that was not stored (a dry run's answer).
    fn detached(object: Value) -> Self {
        Shared(Arc::new(WatchEvent::new(
            0,
            0,
            String::new(),
            EventType::Added,
            object,
        )))
    }

    /// The object as an owned value (a copy unless nothing else holds it).
    pub fn into_value(self) -> Value {
        Arc::try_unwrap(self.0)
            .map(|ev| ev.object)
            .unwrap_or_else(|ev| ev.object.clone())
    }
}

impl std::ops::Deref for Shared {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.0.object
    }
}

impl AsRef<Value> for Shared {
    fn as_ref(&self) -> &Value {
        self
    }
}

impl std::borrow::Borrow<Value> for Shared {
    fn borrow(&self) -> &Value {
        self
    }
}

impl PartialEq for Shared {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl serde::Serialize for Shared {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

struct Inner {
    rv: u64,
    objects: BTreeMap<ObjKey, Shared>,
    /// The objects that name each uid in their `ownerReferences`: the garbage collector's owner graph
    /// (`pkg/controller/garbagecollector/graph.go`, `uidToNode`), so that a delete finds the dependents
    /// without reading every object of the namespace. Kept by [`Inner::put`] and [`Inner::take`].
    dependents: HashMap<String, BTreeSet<ObjKey>>,
    history: VecDeque<Arc<WatchEvent>>,
    history_limit: usize,
    /// Events with rv <= this have been compacted away.
    compacted: u64,
}

/// The owner uids an object names in `metadata.ownerReferences`.
fn owner_uids(obj: &Value) -> impl Iterator<Item = &str> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str())
}

impl Inner {
    /// Stores `obj` under `key`, keeping the owner graph.
    fn put(&mut self, key: ObjKey, obj: Shared) {
        fn refs(o: &Value) -> Option<&Value> {
            o["metadata"].get("ownerReferences")
        }
        let old = self.objects.get(&key);
        if old.is_none_or(|old| refs(old) != refs(&obj)) {
            if let Some(old) = old.cloned() {
                self.unlink(&key, &old);
            }
            for uid in owner_uids(&obj) {
                self.dependents
                    .entry(uid.to_string())
                    .or_default()
                    .insert(key.clone());
            }
        }
        self.objects.insert(key, obj);
    }

    /// Removes the object under `key`, keeping the owner graph.
    fn take(&mut self, key: &ObjKey) -> Option<Shared> {
        let obj = self.objects.remove(key)?;
        self.unlink(key, &obj);
        Some(obj)
    }

    fn unlink(&mut self, key: &ObjKey, obj: &Value) {
        for uid in owner_uids(obj) {
            if let Some(set) = self.dependents.get_mut(uid) {
                set.remove(key);
                if set.is_empty() {
                    self.dependents.remove(uid);
                }
            }
        }
    }

    /// What deleting `key` deletes, the object first: with a Namespace, everything in it; otherwise,
    /// unless orphaning, its dependents and theirs. Owners and dependents share a namespace
    /// (cluster-scoped ones: ""), as the garbage collector requires (`pkg/controller/garbagecollector`: a
    /// namespaced owner of an object in another namespace is treated as absent).
    fn doomed(&self, key: ObjKey, propagation: Propagation) -> Vec<(ObjKey, Shared)> {
        let mut doomed: Vec<(ObjKey, Shared)> = Vec::new();
        let mut seen = HashSet::new();
        // Breadth first, as found: the object, then its dependents, then theirs.
        let mut next = VecDeque::from([key]);
        while let Some(k) = next.pop_front() {
            if !seen.insert(k.clone()) {
                continue;
            }
            let Some(obj) = self.objects.get(&k) else {
                continue;
            };
            let first = doomed.is_empty();
            if k.res == resources::core("namespaces") {
                if !k.name.is_empty() {
                    next.extend(self.in_namespace(&k.name).map(|(ok, _)| ok.clone()));
                }
            } else if (propagation != Propagation::Orphan || !first)
                && let Some(deps) = meta_str(obj, "uid").and_then(|uid| self.dependents.get(uid))
            {
                next.extend(deps.iter().filter(|d| d.namespace == k.namespace).cloned());
            }
            doomed.push((k, obj.clone()));
        }
        doomed
    }

    fn list(&self, res: ResId, namespace: Option<&str>) -> impl Iterator<Item = &Shared> {
        let ns = namespace.unwrap_or("").to_string();
        let start = ObjKey {
            res,
            namespace: ns.clone(),
            name: String::new(),
        };
        self.objects
            .range(start..)
            .take_while(move |(k, _)| k.res == res && (namespace.is_none() || k.namespace == ns))
            .map(|(_, v)| v)
    }

    /// Whether an object may be created under `key`: its namespace exists and is not terminating, and the
    /// name is free. Checked when admission runs and again when the object is committed.
    fn may_create(&self, res: ResId, key: &ObjKey) -> Result<(), StoreError> {
        if resources::get(res).namespaced {
            let ns = &key.namespace;
            let Some(nsobj) = self
                .objects
                .get(&ObjKey::new(resources::core("namespaces"), "", ns))
            else {
                return Err(StoreError::NotFound {
                    resource: "namespaces".into(),
                    name: ns.clone(),
                });
            };
            if nsobj["metadata"].get("deletionTimestamp").is_some() {
                let name = &key.name;
                return Err(StoreError::Forbidden {
                    resource: qualified(res),
                    name: name.clone(),
                    message: format!(
                        "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        qualified(res)
                    ),
                });
            }
        }
        if self.objects.contains_key(key) {
            return Err(StoreError::AlreadyExists {
                resource: qualified(res),
                name: key.name.clone(),
            });
        }
        Ok(())
    }

    /// Every object in `namespace` (cluster-scoped ones for ""), of every kind: one range of the key order
    /// per kind, so a namespace's objects are found without walking the rest of the fleet.
    fn in_namespace<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = (&'a ObjKey, &'a Shared)> {
        (0..resources::REGISTRY.len()).flat_map(move |res| {
            let start = ObjKey {
                res,
                namespace: namespace.to_string(),
                name: String::new(),
            };
            self.objects
                .range(start..)
                .take_while(move |(k, _)| k.res == res && k.namespace == namespace)
        })
    }
}

/// One page of a list ([`Store::list_page`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    /// The page's objects, in key order.
    pub items: Vec<Shared>,
    /// How many more objects match after the page.
    pub remaining: usize,
    /// The store's resourceVersion at the read.
    pub rv: u64,
}

/// The store. Cheap to share (`Arc<Store>`); all methods take `&self`.
pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<WatchEvent>>,
    changed: watch::Sender<u64>,
    admission: RwLock<Vec<Arc<dyn Admission>>>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new(50_000)
    }
}

/// Now, as Kubernetes writes timestamps (RFC 3339, seconds).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

/// Now with microseconds, as `MicroTime` fields (Lease renewTime, events.k8s.io eventTime) carry it.
pub fn now_micro() -> String {
    let ts = jiff::Timestamp::now();
    ts.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
}

/// Whether two objects are equal in every top-level field except `skip` (compared in place: a write
/// compares its object with the stored one twice, and copies of whole objects are what a write costs most).
pub(crate) fn equal_except(a: &Value, b: &Value, skip: &[&str]) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let kept =
        |m: &'_ serde_json::Map<String, Value>| m.iter().filter(|(k, _)| !skip.contains(&k.as_str())).count();
    kept(a) == kept(b)
        && a.iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .all(|(k, v)| b.get(k) == Some(v))
}

/// Everything but metadata and status is the same: a change there bumps `metadata.generation`.
fn same_spec(old: &Value, new: &Value) -> bool {
    equal_except(old, new, &["metadata", "status", "apiVersion", "kind"])
}

/// The same object apart from `metadata.managedFields` (a write that changes only those is a no-op).
fn same_but_managed(a: &Value, b: &Value) -> bool {
    equal_except(a, b, &["metadata"]) && equal_except(&a["metadata"], &b["metadata"], &["managedFields"])
}

impl Store {
    /// A store that keeps `history_limit` events for watch resumption.
    pub fn new(history_limit: usize) -> Self {
        let (events, _) = broadcast::channel(65_536);
        let (changed, _) = watch::channel(0);
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: BTreeMap::new(),
                dependents: HashMap::new(),
                history: VecDeque::new(),
                history_limit,
                compacted: 0,
            }),
            events,
            changed,
            admission: RwLock::new(Vec::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a mutating admission step (run in registration order on every create and update).
    pub fn add_admission(&self, plugin: Arc<dyn Admission>) {
        self.admission
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(plugin);
    }

    /// The current resourceVersion (of the last write).
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// A receiver that is told the latest resourceVersion after every write: controllers wait on it.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The current resourceVersion and a receiver for every later change, taken atomically: the controllers
    /// list at that resourceVersion and then follow the stream (an informer's list-then-watch).
    pub fn subscribe(&self) -> (u64, broadcast::Receiver<Arc<WatchEvent>>) {
        let inner = self.lock();
        (inner.rv, self.events.subscribe())
    }

    /// Drops the history up to now, so watches from older resourceVersions get 410 Gone (tests use it to
    /// prove clients relist).
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.compacted = inner.rv;
        inner.history.clear();
    }

    pub fn get(&self, res: ResId, namespace: &str, name: &str) -> Option<Value> {
        self.get_shared(res, namespace, name).map(Shared::into_value)
    }

    /// The stored object itself, shared (see [`Shared`]).
    pub fn get_shared(&self, res: ResId, namespace: &str, name: &str) -> Option<Shared> {
        self.lock()
            .objects
            .get(&ObjKey::new(res, namespace, name))
            .cloned()
    }

    /// All objects of a type (in one namespace, or all), sorted by namespace and name, with the
    /// resourceVersion of the list.
    pub fn list(&self, res: ResId, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let namespace = namespace.filter(|_| resources::get(res).namespaced);
        (
            inner.list(res, namespace).map(|o| (**o).clone()).collect(),
            inner.rv,
        )
    }

    /// Like [`Store::list`], keeping only the objects `keep` accepts, shared rather than copied: a
    /// selector-filtered list costs a scan of the namespace (or the kind).
    pub fn list_matching(
        &self,
        res: ResId,
        namespace: Option<&str>,
        keep: impl Fn(&Value) -> bool,
    ) -> (Vec<Shared>, u64) {
        let inner = self.lock();
        let namespace = namespace.filter(|_| resources::get(res).namespaced);
        (
            inner.list(res, namespace).filter(|o| keep(o)).cloned().collect(),
            inner.rv,
        )
    }

    /// One page of a list: the objects `keep` accepts, in key order, after `after` (the namespace and name
    /// of the previous page's last object), at most `limit` of them; with how many more match after the
    /// page. Only the page is taken (shared, not copied), so paging through N objects costs N in all, as an
    /// API server serving pages from its watch cache does (`staging/src/k8s.io/apiserver/pkg/storage/cacher`),
    /// not N per page.
    pub fn list_page(
        &self,
        res: ResId,
        namespace: Option<&str>,
        after: Option<(&str, &str)>,
        limit: Option<usize>,
        keep: impl Fn(&Value) -> bool,
    ) -> ListPage {
        use std::ops::Bound;
        let inner = self.lock();
        let namespace = namespace.filter(|_| resources::get(res).namespaced);
        let first = ObjKey {
            res,
            namespace: namespace.unwrap_or("").to_string(),
            name: String::new(),
        };
        // The page starts after the previous page's last object, never before the listed namespace.
        let start = match after {
            Some((ns, name)) if (res, ns, name) >= (res, first.namespace.as_str(), "") => {
                Bound::Excluded(ObjKey {
                    res,
                    namespace: ns.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Bound::Included(first),
        };
        let mut matching = inner
            .objects
            .range((start, Bound::Unbounded))
            .take_while(|(k, _)| k.res == res && namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, v)| v)
            .filter(|o| keep(o));
        let items: Vec<Shared> = match limit {
            Some(l) => matching.by_ref().take(l).cloned().collect(),
            None => matching.by_ref().cloned().collect(),
        };
        ListPage {
            items,
            remaining: matching.count(),
            rv: inner.rv,
        }
    }

    /// Reads several things consistently.
    pub fn read<R>(&self, f: impl FnOnce(&StoreView<'_>) -> R) -> R {
        let inner = self.lock();
        f(&StoreView { inner: &inner })
    }

    /// Events after `since` (exclusive) plus a receiver for later ones, taken atomically so nothing is lost
    /// or doubled. `Gone` when `since` is older than the kept history.
    pub fn watch_from(&self, since: u64) -> Result<WatchStart, StoreError> {
        let inner = self.lock();
        if since < inner.compacted {
            return Err(StoreError::Gone {
                requested: since,
                oldest: inner.compacted + 1,
            });
        }
        // The history is in resourceVersion order: find the first event after `since` by bisection.
        let from = inner.history.partition_point(|e| e.rv <= since);
        let backlog = inner.history.range(from..).cloned().collect();
        Ok((backlog, self.events.subscribe()))
    }

    fn admit(&self, inner: &Inner, res: ResId, op: Op, obj: &mut Value) -> Result<(), StoreError> {
        let plugins = self.admission.read().unwrap_or_else(|e| e.into_inner()).clone();
        let view = StoreView { inner };
        for p in plugins {
            p.admit(&view, res, op, obj)?;
        }
        Ok(())
    }

    /// Records a change (history, subscribers) and answers its event, which holds the object.
    fn record(&self, inner: &mut Inner, res: ResId, kind: EventType, object: Value) -> Arc<WatchEvent> {
        let namespace = meta_str(&object, "namespace").unwrap_or("").to_string();
        let ev = Arc::new(WatchEvent::new(inner.rv, res, namespace, kind, object));
        inner.history.push_back(ev.clone());
        while inner.history.len() > inner.history_limit {
            if let Some(old) = inner.history.pop_front() {
                inner.compacted = old.rv;
            }
        }
        let _ = self.events.send(ev.clone());
        self.changed.send_replace(inner.rv);
        ev
    }

    /// Records the write in `managedFields` (field ownership, see [`crate::fields`]).
    fn managed_fields(obj: &mut Value, old: Option<&Value>, opts: &WriteOpts, subresource: Option<&str>) {
        let Some(manager) = opts.field_manager.as_deref() else {
            return;
        };
        let applied = if opts.apply {
            Some(opts.applied.clone().unwrap_or_else(|| json!({})))
        } else {
            None
        };
        let api_version = obj_api_version(obj).as_str().unwrap_or("").to_string();
        crate::fields::record(
            obj,
            old,
            manager,
            applied.as_ref(),
            opts.force,
            &api_version,
            &now_rfc3339(),
            subresource,
        );
    }

    /// Creates an object (`POST`). Fills kind/apiVersion, name from generateName, uid, resourceVersion,
    /// creationTimestamp and generation; runs admission; checks the namespace exists.
    pub fn create(&self, res: ResId, obj: Value, opts: &WriteOpts) -> Result<Value, StoreError> {
        self.create_shared(res, obj, opts).map(Shared::into_value)
    }

    /// [`Store::create`], answering with the stored object itself (shared, no copy).
    pub fn create_shared(&self, res: ResId, mut obj: Value, opts: &WriteOpts) -> Result<Shared, StoreError> {
        let rt = resources::get(res);
        if !obj.is_object() {
            return Err(StoreError::BadRequest {
                message: "the body of the request was not an object".into(),
            });
        }
        obj["apiVersion"] = json!(rt.api_version());
        obj["kind"] = json!(rt.kind);
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        if meta_str(&obj, "resourceVersion").is_some_and(|s| !s.is_empty()) {
            return Err(StoreError::Internal {
                message: "resourceVersion should not be set on objects to be created".into(),
            });
        }
        if meta_str(&obj, "name").is_none_or(str::is_empty) {
            match meta_str(&obj, "generateName") {
                Some(prefix) if !prefix.is_empty() => {
                    let name = format!("{prefix}{}", random_suffix(5));
                    obj["metadata"]["name"] = json!(name);
                }
                _ => {
                    return Err(StoreError::Invalid {
                        resource: qualified(res),
                        name: String::new(),
                        message: format!(
                            "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                            rt.kind
                        ),
                    });
                }
            }
        }
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        validate_name(res, &name)?;
        let namespace = if rt.namespaced {
            let ns = meta_str(&obj, "namespace").unwrap_or("").to_string();
            if ns.is_empty() {
                return Err(StoreError::BadRequest {
                    message: "the namespace of the object is required".into(),
                });
            }
            ns
        } else {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("namespace");
            }
            String::new()
        };
        let key = ObjKey::new(res, &namespace, &name);
        // Admission reads the store; the new object is built without the lock, then committed if the
        // checks still hold (the namespace may have gone or the name been taken meanwhile).
        {
            let inner = self.lock();
            inner.may_create(res, &key)?;
            self.admit(&inner, res, Op::Create, &mut obj)?;
        }
        validate_data_size(res, &name, &obj)?;
        obj["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
        obj["metadata"]["creationTimestamp"] = json!(now_rfc3339());
        obj["metadata"]["generation"] = json!(1);
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("deletionTimestamp");
        }
        Self::managed_fields(&mut obj, None, opts, None);
        let mut inner = self.lock();
        inner.may_create(res, &key)?;
        if opts.dry_run {
            obj["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
            return Ok(Shared::detached(obj));
        }
        inner.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        let obj = Shared(self.record(&mut inner, res, EventType::Added, obj));
        inner.put(key, obj.clone());
        Ok(obj)
    }

    /// Replaces an object (`PUT`). A non-empty `metadata.resourceVersion` in `obj` is a precondition
    /// (409 Conflict when stale), as in the real registry. Answers with the stored object itself (shared,
    /// no copy).
    pub fn replace(
        &self,
        res: ResId,
        namespace: &str,
        name: &str,
        obj: Value,
        target: Target,
        opts: &WriteOpts,
    ) -> Result<Shared, StoreError> {
        // A retried write replaces again with the same body.
        self.update_shared(res, namespace, name, target, opts, |_| Ok(obj.clone()))
    }

    /// Read-modify-write: `f` gets the current object and returns the new one. The new object's
    /// resourceVersion, if set, must match (optimistic concurrency); patches clear it first. Returns the
    /// stored result. An unchanged object is not written again (no event, same RV), as the real apiserver
    /// skips no-op updates.
    ///
    /// As the apiserver's `GuaranteedUpdate` (`k8s.io/apiserver/pkg/storage/etcd3/store.go`): `f` and
    /// everything that derives the new object from it (admission, generation, managed fields) run
    /// without the store lock, on the object as it was read; the lock is taken again only to commit, and
    /// only if the stored object is still the one `f` saw. If another write came first, `f` runs again on
    /// the newer object, so a write never undoes one it did not see. Writers on other objects, readers
    /// and watchers wait only for the commit, not for the copy and comparison of a whole object.
    pub fn update_with(
        &self,
        res: ResId,
        namespace: &str,
        name: &str,
        target: Target,
        opts: &WriteOpts,
        f: impl FnMut(&Value) -> Result<Value, StoreError>,
    ) -> Result<Value, StoreError> {
        self.update_shared(res, namespace, name, target, opts, f)
            .map(Shared::into_value)
    }

    /// [`Store::update_with`], answering with the stored object itself (shared, no copy).
    pub fn update_shared(
        &self,
        res: ResId,
        namespace: &str,
        name: &str,
        target: Target,
        opts: &WriteOpts,
        mut f: impl FnMut(&Value) -> Result<Value, StoreError>,
    ) -> Result<Shared, StoreError> {
        let key = ObjKey::new(res, namespace, name);
        loop {
            let Some(old) = self.lock().objects.get(&key).cloned() else {
                return Err(StoreError::not_found(res, name));
            };
            let next = self.next_version(res, name, target, opts, &old, &mut f)?;
            let mut inner = self.lock();
            match inner.objects.get(&key) {
                Some(current) if Arc::ptr_eq(&current.0, &old.0) => {}
                // Written since `f` read it: derive the new version again from the newer object (a
                // no-op too is one only on the current object).
                Some(_) => continue,
                None => return Err(StoreError::not_found(res, name)),
            }
            let mut new = match next {
                Next::Unchanged => return Ok(old),
                Next::DryRun(new) => return Ok(Shared::detached(new)),
                Next::Write(new) => new,
            };
            inner.rv += 1;
            new["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
            let new = Shared(self.record(&mut inner, res, EventType::Modified, new));
            inner.put(key, new.clone());
            return Ok(new);
        }
    }

    /// The version an update derives from `old` (the stored object it read): `f`'s answer with the
    /// server-owned fields restored, the generation bumped on a spec change, admission run and managed
    /// fields recorded. Runs without the store lock, apart from admission's read of the store.
    fn next_version(
        &self,
        res: ResId,
        name: &str,
        target: Target,
        opts: &WriteOpts,
        old: &Value,
        f: &mut impl FnMut(&Value) -> Result<Value, StoreError>,
    ) -> Result<Next, StoreError> {
        let rt = resources::get(res);
        let mut new = f(old)?;
        if !new.is_object() {
            return Err(StoreError::BadRequest {
                message: "the body of the request was not an object".into(),
            });
        }
        if let Some(rv) = meta_str(&new, "resourceVersion").filter(|s| !s.is_empty())
            && Some(rv) != meta_str(old, "resourceVersion")
        {
            return Err(StoreError::Conflict {
                resource: qualified(res),
                name: name.to_string(),
                message: format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    qualified(res)
                ),
            });
        }
        if let Some(n) = meta_str(&new, "name")
            && n != name
        {
            return Err(StoreError::BadRequest {
                message: format!("the name of the object ({n}) does not match the name on the URL ({name})"),
            });
        }
        new["apiVersion"] = json!(rt.api_version());
        new["kind"] = json!(rt.kind);
        if !new.get("metadata").is_some_and(Value::is_object) {
            new["metadata"] = json!({});
        }
        match target {
            Target::Main => {
                if rt.has_status {
                    match old.get("status") {
                        Some(s) => new["status"] = s.clone(),
                        None => {
                            if let Some(m) = new.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
            }
            Target::Status => {
                let status = new.get("status").cloned();
                let labels = new["metadata"].get("labels").cloned();
                let annotations = new["metadata"].get("annotations").cloned();
                let mut merged = old.clone();
                match status {
                    Some(s) => merged["status"] = s,
                    None => {
                        if let Some(m) = merged.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                if rt.kind == "Pod" && rt.group.is_empty() {
                    set_or_remove(&mut merged["metadata"], "labels", labels);
                    set_or_remove(&mut merged["metadata"], "annotations", annotations);
                }
                new = merged;
            }
            Target::Internal => {}
        }
        // Fields the server owns. Controllers (Internal) may mark an object as terminating.
        for field in ["uid", "creationTimestamp", "namespace", "name"] {
            set_or_remove(&mut new["metadata"], field, old["metadata"].get(field).cloned());
        }
        if target != Target::Internal {
            set_or_remove(
                &mut new["metadata"],
                "deletionTimestamp",
                old["metadata"].get("deletionTimestamp").cloned(),
            );
        }
        let mut generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
        if !same_spec(old, &new) {
            generation += 1;
        }
        new["metadata"]["generation"] = json!(generation);
        if target != Target::Status {
            let inner = self.lock();
            self.admit(&inner, res, Op::Update, &mut new)?;
        }
        validate_data_size(res, name, &new)?;
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if same_but_managed(&new, old) {
            return Ok(Next::Unchanged);
        }
        Self::managed_fields(
            &mut new,
            Some(old),
            opts,
            (target == Target::Status).then_some("status"),
        );
        Ok(if opts.dry_run {
            Next::DryRun(new)
        } else {
            Next::Write(new)
        })
    }

    /// Deletes an object and, unless orphaning, the objects it owns (garbage collection by
    /// `ownerReferences[].uid`, done at once). Deleting a Namespace deletes everything in it.
    /// `precondition_uid` / `precondition_rv` come from `DeleteOptions.preconditions`. Answers with the
    /// deleted object as its event holds it (shared, no copy).
    pub fn delete(
        &self,
        res: ResId,
        namespace: &str,
        name: &str,
        propagation: Propagation,
        dry_run: bool,
        precondition_rv: Option<&str>,
    ) -> Result<Shared, StoreError> {
        let key = ObjKey::new(res, namespace, name);
        loop {
            let (old, doomed) = {
                let inner = self.lock();
                let Some(old) = inner.objects.get(&key).cloned() else {
                    return Err(StoreError::not_found(res, name));
                };
                if let Some(rv) = precondition_rv
                    && Some(rv) != meta_str(&old, "resourceVersion")
                {
                    return Err(StoreError::Conflict {
                        resource: qualified(res),
                        name: name.to_string(),
                        message: format!(
                            "Operation cannot be fulfilled on {} \"{name}\": the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({}). The object might have been modified",
                            qualified(res),
                            meta_str(&old, "resourceVersion").unwrap_or("")
                        ),
                    });
                }
                if dry_run {
                    return Ok(old);
                }
                (old, inner.doomed(key.clone(), propagation))
            };
            // A deleted object's last version carries a new resourceVersion: copied without the lock,
            // committed if nothing in the set was written (nor a dependent added) meanwhile.
            let copies: Vec<Value> = doomed.iter().map(|(_, o)| Value::clone(o)).collect();
            let mut inner = self.lock();
            let now = inner.doomed(key.clone(), propagation);
            let same =
                |(ka, a): &(ObjKey, Shared), (kb, b): &(ObjKey, Shared)| ka == kb && Arc::ptr_eq(&a.0, &b.0);
            if now.len() != doomed.len() || !now.iter().zip(&doomed).all(|(a, b)| same(a, b)) {
                continue;
            }
            let mut first = None;
            for ((k, _), mut obj) in doomed.into_iter().zip(copies) {
                inner.take(&k);
                inner.rv += 1;
                obj["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
                let ev = self.record(&mut inner, k.res, EventType::Deleted, obj);
                if first.is_none() {
                    first = Some(Shared(ev));
                }
            }
            return Ok(first.unwrap_or(old));
        }
    }

    /// Loads objects as they are (fixtures), creating namespaces first. Objects that exist are replaced.
    pub fn load(&self, objects: Vec<(ResId, Value)>) -> Result<(), StoreError> {
        let ns_id = resources::core("namespaces");
        let (mut nss, rest): (Vec<_>, Vec<_>) = objects.into_iter().partition(|(r, _)| *r == ns_id);
        let opts = WriteOpts {
            field_manager: Some("meshsim-fixture".into()),
            ..Default::default()
        };
        // Namespaces named by objects but not declared are created, as `kubectl create ns` would be.
        for (r, o) in &rest {
            if resources::get(*r).namespaced
                && let Some(ns) = meta_str(o, "namespace")
                && !nss.iter().any(|(_, n)| meta_str(n, "name") == Some(ns))
                && self.get(ns_id, "", ns).is_none()
            {
                nss.push((ns_id, json!({"metadata": {"name": ns}})));
            }
        }
        for (r, o) in nss.into_iter().chain(rest) {
            let mut o = o;
            if let Some(m) = o["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            let ns = meta_str(&o, "namespace").unwrap_or("").to_string();
            let name = meta_str(&o, "name").unwrap_or("").to_string();
            if self.get(r, &ns, &name).is_some() {
                self.replace(r, &ns, &name, o, Target::Internal, &opts)?;
            } else {
                let status = o.get("status").cloned();
                let created = self.create(r, o, &opts)?;
                if let Some(s) = status {
                    let mut with_status = created;
                    with_status["status"] = s;
                    self.replace(r, &ns, &name, with_status, Target::Internal, &opts)?;
                }
            }
        }
        Ok(())
    }
}

fn obj_api_version(obj: &Value) -> Value {
    obj.get("apiVersion").cloned().unwrap_or(Value::Null)
}

fn set_or_remove(meta: &mut Value, field: &str, value: Option<Value>) {
    match value {
        Some(v) if !v.is_null() => meta[field] = v,
        _ => {
            if let Some(m) = meta.as_object_mut() {
                m.remove(field);
            }
        }
    }
}

/// Random lowercase alphanumerics, as generateName and pod-template-hash suffixes use.
pub fn random_suffix(n: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// The most a ConfigMap's or Secret's data may hold (`MaxSecretSize`, `pkg/apis/core/types.go`: 1 MiB).
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

/// Bytes a base64 string decodes to.
fn decoded_len(b64: &str) -> usize {
    let trimmed = b64.trim_end_matches('=');
    trimmed.len() * 3 / 4
}

/// `ValidateConfigMap` / `ValidateSecret` (`pkg/apis/core/validation/validation.go`): the values of `data`
/// and `binaryData` (Secrets: `data` decoded plus `stringData`) may total at most [`MAX_DATA_BYTES`];
/// more is 422 with `field.TooLong` ("Too long: must have at most 1048576 bytes", on field `[]` for a
/// ConfigMap and `data` for a Secret).
fn validate_data_size(res: ResId, name: &str, obj: &Value) -> Result<(), StoreError> {
    let rt = resources::get(res);
    if !rt.group.is_empty() || !matches!(rt.kind, "ConfigMap" | "Secret") {
        return Ok(());
    }
    let values = |field: &str| {
        obj.get(field)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(_, v)| v.as_str())
    };
    let (total, field): (usize, &str) = if rt.kind == "ConfigMap" {
        let text: usize = values("data").map(str::len).sum();
        (text + values("binaryData").map(decoded_len).sum::<usize>(), "[]")
    } else {
        let data: usize = values("data").map(decoded_len).sum();
        (data + values("stringData").map(str::len).sum::<usize>(), "data")
    };
    if total <= MAX_DATA_BYTES {
        return Ok(());
    }
    Err(StoreError::Invalid {
        resource: qualified(res),
        name: name.to_string(),
        message: format!(
            "{} \"{name}\" is invalid: {field}: Too long: must have at most {MAX_DATA_BYTES} bytes",
            rt.kind
        ),
    })
}

/// DNS-1123 subdomain check (what the apiserver requires of most names).
fn validate_name(res: ResId, name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        let rt = resources::get(res);
        Err(StoreError::Invalid {
            resource: qualified(res),
            name: name.to_string(),
            message: format!(
                "{} \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                rt.kind
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str) -> Value {
        json!({"metadata": {"name": name}})
    }

    #[test]
    fn create_sets_server_fields_and_rejects_duplicates() {
        let s = Store::default();
        let nsid = resources::core("namespaces");
        let created = s.create(nsid, ns("shop"), &WriteOpts::default()).unwrap();
        assert_eq!(created["kind"], "Namespace");
        assert!(created["metadata"]["uid"].is_string());
        assert_eq!(created["metadata"]["generation"], 1);
        let err = s.create(nsid, ns("shop"), &WriteOpts::default()).unwrap_err();
        assert_eq!(err.code(), 409);
        assert_eq!(err.reason(), "AlreadyExists");
    }

    #[test]
    fn list_pages_walk_every_match_once_across_namespaces() {
        let s = Store::default();
        let nsid = resources::core("namespaces");
        let cm = resources::core("configmaps");
        for n in ["a", "b", "c"] {
            s.create(nsid, ns(n), &WriteOpts::default()).unwrap();
            for i in 0..4 {
                let obj = json!({"metadata": {"name": format!("cm{i}"), "namespace": n,
                    "labels": {"even": (i % 2 == 0).to_string()}}});
                s.create(cm, obj, &WriteOpts::default()).unwrap();
            }
        }
        let even = |o: &Value| o["metadata"]["labels"]["even"] == "true";
        let key = |o: &Shared| {
            format!(
                "{}/{}",
                o["metadata"]["namespace"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        };
        // Cluster-wide, a selector, pages of 2: a/cm0 a/cm2 | b/cm0 b/cm2 | c/cm0 c/cm2.
        let mut seen = Vec::new();
        let mut after: Option<(String, String)> = None;
        let mut remaining = Vec::new();
        loop {
            let page = s.list_page(
                cm,
                None,
                after.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
                Some(2),
                even,
            );
            seen.extend(page.items.iter().map(key));
            remaining.push(page.remaining);
            let Some(last) = page.items.last() else { break };
            if page.remaining == 0 {
                break;
            }
            let m = &last["metadata"];
            after = Some((
                m["namespace"].as_str().unwrap().into(),
                m["name"].as_str().unwrap().into(),
            ));
        }
        assert_eq!(seen, ["a/cm0", "a/cm2", "b/cm0", "b/cm2", "c/cm0", "c/cm2"]);
        assert_eq!(remaining, [4, 2, 0]);
        // One namespace: a token from before it starts at its first object, never in another namespace.
        let page = s.list_page(cm, Some("b"), Some(("a", "cm3")), None, |_| true);
        assert_eq!(
            page.items.iter().map(key).collect::<Vec<_>>(),
            ["b/cm0", "b/cm1", "b/cm2", "b/cm3"]
        );
        let page = s.list_page(cm, Some("b"), Some(("b", "cm1")), Some(1), |_| true);
        assert_eq!(
            (page.items.iter().map(key).collect::<Vec<_>>(), page.remaining),
            (vec!["b/cm2".to_string()], 1)
        );
    }

    #[test]
    fn namespaced_create_needs_the_namespace() {
        let s = Store::default();
        let cm = resources::core("configmaps");
        let err = s.create(
            cm,
            json!({"metadata": {"name": "a", "namespace": "nope"}}),
            &WriteOpts::default(),
        );
        assert_eq!(err.unwrap_err().code(), 404);
    }

    #[test]
    fn stale_replace_conflicts_and_generation_tracks_spec_only() {
        let s = Store::default();
        s.create(resources::core("namespaces"), ns("a"), &WriteOpts::default())
            .unwrap();
        let dep = resources::id("apps", "deployments");
        let d = s
            .create(
                dep,
                json!({"metadata": {"name": "web", "namespace": "a"}, "spec": {"replicas": 1}}),
                &WriteOpts::default(),
            )
            .unwrap();
        let mut relabeled = d.clone();
        relabeled["metadata"]["labels"] = json!({"x": "y"});
        let r1 = s
            .replace(dep, "a", "web", relabeled, Target::Main, &WriteOpts::default())
            .unwrap();
        assert_eq!(r1["metadata"]["generation"], 1, "label change keeps generation");
        let mut stale = d.clone();
        stale["spec"]["replicas"] = json!(2);
        let err = s
            .replace(dep, "a", "web", stale, Target::Main, &WriteOpts::default())
            .unwrap_err();
        assert_eq!(err.code(), 409);
        let mut fresh = Value::clone(&r1);
        fresh["spec"]["replicas"] = json!(2);
        fresh["status"] = json!({"replicas": 99});
        let r2 = s
            .replace(dep, "a", "web", fresh, Target::Main, &WriteOpts::default())
            .unwrap();
        assert_eq!(r2["metadata"]["generation"], 2);
        assert!(
            r2.get("status").is_none(),
            "main resource writes keep the stored status"
        );
    }

    #[test]
    fn an_event_is_encoded_once_per_type_and_shared() {
        let s = Store::default();
        let (_, mut rx) = s.subscribe();
        s.create(resources::core("namespaces"), ns("a"), &WriteOpts::default())
            .unwrap();
        let ev = rx.try_recv().unwrap();
        let first = ev.line(EventType::Added);
        let second = ev.line(EventType::Added);
        assert_eq!(
            first.as_ptr(),
            second.as_ptr(),
            "the second watcher gets the same bytes"
        );
        let parsed: Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(parsed["type"], "ADDED");
        assert_eq!(parsed["object"]["metadata"]["name"], "a");
        assert!(first.ends_with(b"\n"));
        let deleted: Value = serde_json::from_slice(&ev.line(EventType::Deleted)).unwrap();
        assert_eq!(
            deleted["type"], "DELETED",
            "a watcher the object leaves gets it as DELETED"
        );
    }

    #[test]
    fn dry_run_writes_nothing() {
        let s = Store::default();
        let rv = s.resource_version();
        s.create(
            resources::core("namespaces"),
            ns("a"),
            &WriteOpts {
                dry_run: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.resource_version(), rv);
        assert!(s.get(resources::core("namespaces"), "", "a").is_none());
    }

    #[test]
    fn delete_cascades_to_owned_objects_and_watch_replays() {
        let s = Store::default();
        let start = s.resource_version();
        s.create(resources::core("namespaces"), ns("a"), &WriteOpts::default())
            .unwrap();
        let dep = resources::id("apps", "deployments");
        let d = s
            .create(
                dep,
                json!({"metadata": {"name": "web", "namespace": "a"}}),
                &WriteOpts::default(),
            )
            .unwrap();
        let owned = json!({"metadata": {"name": "web-1", "namespace": "a",
            "ownerReferences": [{"uid": d["metadata"]["uid"], "kind": "Deployment", "name": "web"}]}});
        s.create(resources::id("apps", "replicasets"), owned, &WriteOpts::default())
            .unwrap();
        s.delete(dep, "a", "web", Propagation::Background, false, None)
            .unwrap();
        assert!(
            s.get(resources::id("apps", "replicasets"), "a", "web-1")
                .is_none()
        );
        let (backlog, _rx) = s.watch_from(start).unwrap();
        let kinds: Vec<_> = backlog.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            vec![
                EventType::Added,
                EventType::Added,
                EventType::Added,
                EventType::Deleted,
                EventType::Deleted
            ]
        );
        s.compact();
        assert_eq!(s.watch_from(start).unwrap_err().code(), 410);
    }

    #[test]
    fn an_update_raced_by_another_write_is_derived_again_from_the_newer_object() {
        let s = Store::default();
        let opts = WriteOpts::default();
        let cm = resources::core("configmaps");
        s.create(resources::core("namespaces"), ns("a"), &opts).unwrap();
        let obj = json!({"metadata": {"name": "c", "namespace": "a"}, "data": {"x": "0"}});
        s.create(cm, obj, &opts).unwrap();
        let before = s.resource_version();
        let mut seen = Vec::new();
        let out = s
            .update_with(cm, "a", "c", Target::Main, &opts, |old| {
                seen.push(old["data"].clone());
                if seen.len() == 1 {
                    // Another writer commits between this read and the commit.
                    s.update_with(cm, "a", "c", Target::Main, &opts, |o| {
                        let mut o = o.clone();
                        o["data"]["y"] = json!("other");
                        Ok(o)
                    })
                    .unwrap();
                }
                let mut new = old.clone();
                new["data"]["x"] = json!("1");
                Ok(new)
            })
            .unwrap();
        // Run twice: first on the original, then on the version the other writer stored.
        assert_eq!(seen, vec![json!({"x": "0"}), json!({"x": "0", "y": "other"})]);
        assert_eq!(
            out["data"],
            json!({"x": "1", "y": "other"}),
            "neither write is lost"
        );
        assert_eq!(s.resource_version(), before + 2);
        assert_eq!(s.get(cm, "a", "c").unwrap()["data"], out["data"]);

        // A writer that sends the resourceVersion it read gets a conflict instead.
        let stale = s.get(cm, "a", "c").unwrap();
        let mut calls = 0;
        let err = s
            .update_with(cm, "a", "c", Target::Main, &opts, |_| {
                calls += 1;
                if calls == 1 {
                    let mut o = stale.clone();
                    o["data"]["z"] = json!("first");
                    s.replace(cm, "a", "c", o, Target::Main, &opts).unwrap();
                }
                Ok(stale.clone())
            })
            .unwrap_err();
        assert_eq!((calls, err.code()), (2, 409));
    }

    #[test]
    fn a_delete_follows_owner_references_as_they_are_now() {
        let s = Store::default();
        let opts = WriteOpts::default();
        let cm = resources::core("configmaps");
        for n in ["a", "b"] {
            s.create(resources::core("namespaces"), ns(n), &opts).unwrap();
        }
        let owner = json!({"metadata": {"name": "owner", "namespace": "a"}});
        let owner = s.create(cm, owner, &opts).unwrap();
        let refs_to = |o: &Value| json!([{"uid": o["metadata"]["uid"], "kind": "ConfigMap", "name": o["metadata"]["name"]}]);
        let owned_by = refs_to(&owner);
        let dependent = |name: &str, namespace: &str, refs: &Value| json!({"metadata": {"name": name, "namespace": namespace, "ownerReferences": refs}});
        // Owned from the start, owned no longer, owned later, owned from another namespace, and the
        // dependent of a dependent.
        let kept = s.create(cm, dependent("kept", "a", &owned_by), &opts).unwrap();
        s.create(cm, dependent("released", "a", &owned_by), &opts)
            .unwrap();
        s.create(
            cm,
            json!({"metadata": {"name": "adopted", "namespace": "a"}}),
            &opts,
        )
        .unwrap();
        s.create(cm, dependent("elsewhere", "b", &owned_by), &opts)
            .unwrap();
        s.create(cm, dependent("grandchild", "a", &refs_to(&kept)), &opts)
            .unwrap();
        let set_refs = |name: &str, refs: Option<&Value>| {
            s.update_with(cm, "a", name, Target::Main, &opts, |o| {
                let mut o = o.clone();
                let meta = o["metadata"].as_object_mut().unwrap();
                match refs {
                    Some(r) => meta.insert("ownerReferences".into(), r.clone()),
                    None => meta.remove("ownerReferences"),
                };
                Ok(o)
            })
            .unwrap();
        };
        set_refs("released", None);
        set_refs("adopted", Some(&owned_by));

        let start = s.resource_version();
        let first = s
            .delete(cm, "a", "owner", Propagation::Background, false, None)
            .unwrap();
        assert_eq!(first["metadata"]["name"], "owner");
        assert_eq!(first["metadata"]["resourceVersion"], (start + 1).to_string());
        let names = |objs: Vec<Value>| -> Vec<String> {
            objs.iter()
                .map(|o| meta_str(o, "name").unwrap_or("").to_string())
                .collect()
        };
        let left = |n: &str| names(s.list(cm, Some(n)).0);
        assert_eq!(left("a"), vec!["released"]);
        assert_eq!(
            left("b"),
            vec!["elsewhere"],
            "an owner in another namespace is not an owner"
        );
        let (backlog, _rx) = s.watch_from(start).unwrap();
        let deleted = names(backlog.iter().map(|e| e.object.clone()).collect());
        assert_eq!(
            deleted,
            vec!["owner", "adopted", "kept", "grandchild"],
            "breadth first, as found"
        );

        // Orphaning keeps the dependents; a namespace takes everything in it.
        let parent = json!({"metadata": {"name": "p", "namespace": "b"}});
        let parent = s.create(cm, parent, &opts).unwrap();
        s.create(cm, dependent("child", "b", &refs_to(&parent)), &opts)
            .unwrap();
        s.delete(cm, "b", "p", Propagation::Orphan, false, None).unwrap();
        assert_eq!(left("b"), vec!["child", "elsewhere"]);
        let nsid = resources::core("namespaces");
        s.delete(nsid, "", "b", Propagation::Background, false, None)
            .unwrap();
        assert!(left("b").is_empty());
        assert!(
            s.lock().dependents.is_empty(),
            "the owner graph forgets deleted objects"
        );
    }
}
