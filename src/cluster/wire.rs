//! What the watch caches decode list items and watch events into: the fields a cache keeps, and nothing
//! else. Decoding into the full `k8s_openapi` types and trimming afterwards built every field first, and
//! most of a watched object is what the caches drop: `metadata.managedFields` (a tree of field paths per
//! writer, many small allocations per object), the `last-applied-configuration` annotation, and for pods
//! everything the projection does not read. A field an item does not declare is skipped by serde while
//! parsing (`IgnoredAny`: a scan of the bytes, no allocation).
//!
//! [`Item`] is generic over the kind it stands for (whose group, version, kind and plural it answers to the
//! watcher), the spec and status types to decode, and which annotations to keep ([`Annotations`]). Its
//! metadata is a full `ObjectMeta` (the watcher reads `resourceVersion` from it to resume) without
//! `managedFields`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::marker::PhantomData;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetStatus, Deployment, DeploymentSpec, DeploymentStatus, ReplicaSet,
    StatefulSet, StatefulSetSpec, StatefulSetStatus,
};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, CronJobStatus, Job, JobSpec, JobStatus};
use k8s_openapi::api::core::v1::{
    Namespace, NamespaceSpec, NamespaceStatus, Pod, Service, ServiceSpec, ServiceStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

/// The annotation `kubectl apply` leaves on objects: a full copy of the object, read by nothing here.
pub(super) const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The annotations of a pod whose values something reads: the ambient redirection (`sidecar_ready` and
/// `sidecar_free_and_enrolled` report its value) and Prometheus' scrape port (the merged-metrics finding
/// compares it with `15020`). Every other annotation is read for its presence only.
pub(super) const POD_ANNOTATION_VALUES: [&str; 2] = ["ambient.istio.io/redirection", "prometheus.io/port"];

/// What a cache keeps of one annotation.
pub(super) enum Keep {
    /// Key and value.
    Whole,
    /// The key, with an empty value: read for its presence only.
    Key,
    /// Nothing.
    Drop,
}

/// Which annotations a kind's cache keeps, decided per key while decoding, so a dropped value is never
/// allocated.
pub(super) trait Annotations: Clone + Debug + Send + Sync + 'static {
    fn keep(key: &str) -> Keep;
}

/// Every annotation but `last-applied-configuration` (workloads, Services, Jobs, Namespaces: readers may
/// read any other, and the backup writes them back).
#[derive(Clone, Debug)]
pub(super) struct AllButLastApplied;

impl Annotations for AllButLastApplied {
    fn keep(key: &str) -> Keep {
        if key == LAST_APPLIED {
            Keep::Drop
        } else {
            Keep::Whole
        }
    }
}

/// A pod's annotations as `PodView` keeps them: the values of [`POD_ANNOTATION_VALUES`], the other keys
/// with empty values, no `last-applied-configuration`.
#[derive(Clone, Debug)]
pub(super) struct PodAnnotations;

impl Annotations for PodAnnotations {
    fn keep(key: &str) -> Keep {
        match AllButLastApplied::keep(key) {
            Keep::Whole if !POD_ANNOTATION_VALUES.contains(&key) => Keep::Key,
            k => k,
        }
    }
}

/// No annotations (ReplicaSets: their projection keeps none).
#[derive(Clone, Debug)]
pub(super) struct NoAnnotations;

impl Annotations for NoAnnotations {
    fn keep(_: &str) -> Keep {
        Keep::Drop
    }
}

/// An annotation map decoded through `A`.
struct Filtered<A>(BTreeMap<String, String>, PhantomData<A>);

impl<'de, A: Annotations> Deserialize<'de> for Filtered<A> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<A>(PhantomData<A>);
        impl<'de, A: Annotations> Visitor<'de> for V<A> {
            type Value = Filtered<A>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of annotations")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut out = BTreeMap::new();
                while let Some(k) = map.next_key::<String>()? {
                    match A::keep(&k) {
                        Keep::Whole => {
                            out.insert(k, map.next_value::<String>()?);
                        }
                        Keep::Key => {
                            map.next_value::<IgnoredAny>()?;
                            out.insert(k, String::new());
                        }
                        Keep::Drop => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Filtered(out, PhantomData))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// `ObjectMeta` as the API sends it, less `managedFields` (skipped unparsed) and the annotations `A` drops.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "A: Annotations"))]
struct WireMeta<A> {
    annotations: Option<Filtered<A>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

/// An object's metadata decoded through [`WireMeta`].
#[derive(Clone, Debug)]
pub(super) struct Meta<A>(pub ObjectMeta, PhantomData<A>);

impl<'de, A: Annotations> Deserialize<'de> for Meta<A> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = WireMeta::<A>::deserialize(d)?;
        Ok(Meta(
            ObjectMeta {
                annotations: m.annotations.map(|a| a.0),
                creation_timestamp: m.creation_timestamp,
                deletion_grace_period_seconds: m.deletion_grace_period_seconds,
                deletion_timestamp: m.deletion_timestamp,
                finalizers: m.finalizers,
                generate_name: m.generate_name,
                generation: m.generation,
                labels: m.labels,
                managed_fields: None,
                name: m.name,
                namespace: m.namespace,
                owner_references: m.owner_references,
                resource_version: m.resource_version,
                self_link: m.self_link,
                uid: m.uid,
            },
            PhantomData,
        ))
    }
}

/// A list item or watch event's object of kind `K`, decoded as `Spec` and `Status` with metadata through
/// [`Meta`]: what a cache's watcher lists and watches instead of `K` itself. It answers to the watcher as
/// `K` (same group, version, kind and plural), so the requests are the same.
#[derive(Deserialize, Clone, Debug)]
#[serde(bound(deserialize = "Spec: Deserialize<'de>, Status: Deserialize<'de>, A: Annotations"))]
pub(super) struct Item<K, Spec, Status, A> {
    pub metadata: Meta<A>,
    pub spec: Option<Spec>,
    pub status: Option<Status>,
    #[serde(skip)]
    kind: PhantomData<fn() -> K>,
}

impl<K, Spec, Status, A> k8s_openapi::Resource for Item<K, Spec, Status, A>
where
    K: k8s_openapi::Resource,
{
    const API_VERSION: &'static str = K::API_VERSION;
    const GROUP: &'static str = K::GROUP;
    const KIND: &'static str = K::KIND;
    const VERSION: &'static str = K::VERSION;
    const URL_PATH_SEGMENT: &'static str = K::URL_PATH_SEGMENT;
    type Scope = K::Scope;
}

impl<K, Spec, Status, A> k8s_openapi::Metadata for Item<K, Spec, Status, A>
where
    K: k8s_openapi::Resource,
{
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata.0
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata.0
    }
}

/// A kind whose cache keeps the whole object (less `managedFields` and `last-applied-configuration`):
/// its spec and status are decoded as the `k8s_openapi` types, and put back together into one.
pub(super) trait Whole: k8s_openapi::Resource + Sized {
    type Spec: for<'de> Deserialize<'de> + Clone + Debug + Send;
    type Status: for<'de> Deserialize<'de> + Clone + Debug + Send;
    fn assemble(metadata: ObjectMeta, spec: Option<Self::Spec>, status: Option<Self::Status>) -> Self;
}

/// The item that decodes a [`Whole`] kind.
pub(super) type WholeItem<K> = Item<K, <K as Whole>::Spec, <K as Whole>::Status, AllButLastApplied>;

impl<K: Whole> WholeItem<K> {
    /// The object, as `K`.
    pub(super) fn into_whole(self) -> K {
        K::assemble(self.metadata.0, self.spec, self.status)
    }
}

/// A spec the type requires: an object without one gets the default one, as `k8s_openapi` decodes it.
fn required<S: Default>(spec: Option<S>) -> S {
    spec.unwrap_or_default()
}

fn optional<S>(spec: Option<S>) -> Option<S> {
    spec
}

macro_rules! whole {
    ($k:ty, $spec:ty, $status:ty, $kept:ident) => {
        impl Whole for $k {
            type Spec = $spec;
            type Status = $status;
            fn assemble(metadata: ObjectMeta, spec: Option<$spec>, status: Option<$status>) -> Self {
                Self {
                    metadata,
                    spec: $kept(spec),
                    status,
                }
            }
        }
    };
}

whole!(Deployment, DeploymentSpec, DeploymentStatus, required);
whole!(StatefulSet, StatefulSetSpec, StatefulSetStatus, required);
whole!(DaemonSet, DaemonSetSpec, DaemonSetStatus, required);
whole!(CronJob, CronJobSpec, CronJobStatus, required);
whole!(Namespace, NamespaceSpec, NamespaceStatus, optional);
whole!(Service, ServiceSpec, ServiceStatus, optional);
whole!(Job, JobSpec, JobStatus, optional);

/// A ReplicaSet as its projection reads it: metadata only (spec and status skipped unparsed).
pub(super) type ReplicaSetItem = Item<ReplicaSet, IgnoredAny, IgnoredAny, NoAnnotations>;

/// A pod as its projection (`PodView`) reads it.
pub(super) type PodItem = Item<Pod, PodSpecItem, PodStatusItem, PodAnnotations>;

/// The parts of a pod's spec `PodView` keeps.
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct PodSpecItem {
    pub containers: Option<Vec<ContainerItem>>,
    pub init_containers: Option<Vec<ContainerItem>>,
    pub node_name: Option<String>,
}

/// A container's name and restart policy (set on native sidecars, init containers that keep running).
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct ContainerItem {
    #[serde(default)]
    pub name: String,
    pub restart_policy: Option<String>,
}

/// The parts of a pod's status `PodView` keeps.
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct PodStatusItem {
    pub phase: Option<String>,
    pub conditions: Option<Vec<ConditionItem>>,
    pub container_statuses: Option<Vec<ContainerStatusItem>>,
    pub init_container_statuses: Option<Vec<ContainerStatusItem>>,
}

/// A pod condition's type and status.
#[derive(Deserialize, Clone, Debug, Default)]
pub(super) struct ConditionItem {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub status: String,
}

/// A container status's name and readiness.
#[derive(Deserialize, Clone, Debug, Default)]
pub(super) struct ContainerStatusItem {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub ready: bool,
}
