//! Idempotent label (and annotation) changes on Namespaces and Services, the way `kubectl label` does
//! them (JSON merge patch, `null` deletes), but reading first and sending only the keys that differ: a
//! resumed run sends nothing, and the previous value is returned for the journal.

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::Patch;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Cluster, ClusterError, obj_name};

/// The object whose labels change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "PascalCase")]
pub enum LabelTarget {
    /// A Namespace.
    Namespace { name: String },
    /// A Service.
    Service { namespace: String, name: String },
}

impl LabelTarget {
    /// `Namespace shop` / `Service shop/api`.
    pub fn describe(&self) -> String {
        match self {
            LabelTarget::Namespace { name } => obj_name("Namespace", None, name),
            LabelTarget::Service { namespace, name } => obj_name("Service", Some(namespace), name),
        }
    }
}

/// What a label change did to one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelOutcome {
    pub key: String,
    /// Value before the call (`None` = absent).
    pub before: Option<String>,
    /// Value asked for (`None` = removed).
    pub after: Option<String>,
    /// False when the object already had the wanted value (nothing sent for this key).
    pub changed: bool,
}

#[derive(Clone, Copy)]
enum Field {
    Labels,
    Annotations,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Labels => "labels",
            Field::Annotations => "annotations",
        }
    }

    /// This field of `meta` (empty when absent).
    fn of(self, meta: kube::api::ObjectMeta) -> BTreeMap<String, String> {
        match self {
            Field::Labels => meta.labels,
            Field::Annotations => meta.annotations,
        }
        .unwrap_or_default()
    }
}

/// An object's labels as one read saw them, with the resourceVersion of that read: a later change can
/// be sent against exactly this state ([`Cluster::set_labels_seen`]) without reading again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelsRead {
    /// The labels (empty when none).
    pub labels: BTreeMap<String, String>,
    /// The resourceVersion the labels were read at.
    pub resource_version: Option<String>,
}

/// What a label change did, and the object's labels after it as the API server answered (the patch
/// response, or the read when nothing had to change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelsSet {
    /// One outcome per key, in input order.
    pub outcomes: Vec<LabelOutcome>,
    /// The labels after the change.
    pub labels: BTreeMap<String, String>,
}

impl Cluster {
    /// Sets (`Some`) or removes (`None`) labels; returns one outcome per key, in input order.
    pub async fn set_labels(
        &self,
        target: &LabelTarget,
        changes: &[(String, Option<String>)],
    ) -> Result<Vec<LabelOutcome>, ClusterError> {
        Ok(self
            .set_meta_map(target, changes, Field::Labels, None)
            .await?
            .outcomes)
    }

    /// Sets or removes one label; see [`Cluster::set_labels`].
    pub async fn set_label(
        &self,
        target: &LabelTarget,
        key: &str,
        value: Option<&str>,
    ) -> Result<LabelOutcome, ClusterError> {
        let mut v = self
            .set_labels(target, &[(key.to_string(), value.map(str::to_string))])
            .await?;
        Ok(v.remove(0))
    }

    /// Sets or removes labels against the labels `seen` read earlier, in one request: a JSON patch
    /// (RFC 6902) whose first operation tests that the object's labels are still exactly `seen` (the
    /// apiserver applies the whole patch or nothing, and a failed `test` is refused with 422:
    /// `apiserver/pkg/endpoints/handlers/patch.go` `applyJSPatch`). Unlike a resourceVersion
    /// precondition, a concurrent write to something else of the object (its annotations) does not
    /// refuse it; a change to its labels does, and the change is then decided again on a fresh read, as
    /// [`Cluster::set_labels`] does. An object without labels has nothing to test against (a JSON patch
    /// cannot test for absence): it gets the resourceVersion precondition instead. Returns the labels
    /// after the change as the server answered.
    pub async fn set_labels_seen(
        &self,
        target: &LabelTarget,
        seen: &LabelsRead,
        changes: &[(String, Option<String>)],
    ) -> Result<LabelsSet, ClusterError> {
        if seen.labels.is_empty() {
            return self
                .set_meta_map(target, changes, Field::Labels, Some(seen))
                .await;
        }
        let (outcomes, ops) = decide(&seen.labels, changes);
        if ops.is_empty() {
            return Ok(LabelsSet {
                outcomes,
                labels: seen.labels.clone(),
            });
        }
        let mut patch = vec![json!({"op": "test", "path": "/metadata/labels", "value": seen.labels})];
        for (key, want) in ops {
            let path = format!("/metadata/labels/{}", pointer_escape(&key));
            patch.push(match want {
                Some(v) => json!({"op": "add", "path": path, "value": v}),
                None => json!({"op": "remove", "path": path}),
            });
        }
        let patch: json_patch::Patch =
            serde_json::from_value(serde_json::Value::Array(patch)).map_err(|e| ClusterError::Decode {
                what: format!("label patch of {}", target.describe()),
                message: e.to_string(),
            })?;
        let what = format!("patch labels of {}", target.describe());
        tracing::info!(target_object = %target.describe(), patch = ?patch, dry_run = self.dry_run(), "patching labels");
        match self.patch_meta(target, &what, &Patch::<()>::Json(patch)).await {
            Ok(meta) => Ok(LabelsSet {
                outcomes,
                labels: meta.labels.unwrap_or_default(),
            }),
            Err(e) if e.is_conflict() || e.is_invalid() => {
                tracing::info!(target_object = %target.describe(), "labels changed since they were read; reading them again");
                self.set_meta_map(target, changes, Field::Labels, None).await
            }
            Err(e) => Err(e),
        }
    }

    /// Sets or removes annotations (same semantics as labels).
    pub async fn set_annotations(
        &self,
        target: &LabelTarget,
        changes: &[(String, Option<String>)],
    ) -> Result<Vec<LabelOutcome>, ClusterError> {
        Ok(self
            .set_meta_map(target, changes, Field::Annotations, None)
            .await?
            .outcomes)
    }

    /// Sets one annotation of a Namespace with a single merge patch, without reading it first and without
    /// a resourceVersion precondition: for values that only inform people (the journal's phase), where the
    /// last writer may win and a read per write would double the requests.
    pub async fn annotate_namespace(&self, name: &str, key: &str, value: &str) -> Result<(), ClusterError> {
        let body = json!({ "metadata": { "annotations": { key: value } } });
        let what = format!("patch annotations of {}", obj_name("Namespace", None, name));
        let pp = self.patch_params();
        let p = Patch::Merge(&body);
        let api: kube::Api<Namespace> = self.all();
        self.call(&what, || api.patch(name, &pp, &p)).await?;
        Ok(())
    }

    /// The current labels of the target.
    pub async fn labels_of(&self, target: &LabelTarget) -> Result<BTreeMap<String, String>, ClusterError> {
        Ok(self.read_labels(target).await?.labels)
    }

    /// The current labels of the target with the resourceVersion they were read at.
    pub async fn read_labels(&self, target: &LabelTarget) -> Result<LabelsRead, ClusterError> {
        self.read_field(target, Field::Labels).await
    }

    /// One field (labels or annotations) of the target with the resourceVersion it was read at.
    async fn read_field(&self, target: &LabelTarget, field: Field) -> Result<LabelsRead, ClusterError> {
        let meta = self.read_meta(target).await?;
        Ok(LabelsRead {
            resource_version: meta.resource_version.clone(),
            labels: field.of(meta),
        })
    }

    /// Sends `patch` to the target; answers with the patched object's metadata.
    async fn patch_meta<P: Serialize + Debug>(
        &self,
        target: &LabelTarget,
        what: &str,
        patch: &Patch<P>,
    ) -> Result<kube::api::ObjectMeta, ClusterError> {
        let pp = self.patch_params();
        match target {
            LabelTarget::Namespace { name } => {
                let api: kube::Api<Namespace> = self.all();
                Ok(self.call(what, || api.patch(name, &pp, patch)).await?.metadata)
            }
            LabelTarget::Service { namespace, name } => {
                let api: kube::Api<Service> = self.namespaced(namespace);
                Ok(self.call(what, || api.patch(name, &pp, patch)).await?.metadata)
            }
        }
    }

    async fn read_meta(&self, target: &LabelTarget) -> Result<kube::api::ObjectMeta, ClusterError> {
        let what = format!("get {}", target.describe());
        match target {
            LabelTarget::Namespace { name } => {
                let api: kube::Api<Namespace> = self.all();
                Ok(self.call(&what, || api.get(name)).await?.metadata)
            }
            LabelTarget::Service { namespace, name } => {
                let api: kube::Api<Service> = self.namespaced(namespace);
                Ok(self.call(&what, || api.get(name)).await?.metadata)
            }
        }
    }

    /// Decides what to patch from a read and patches with that read's `resourceVersion` as a
    /// precondition (a merge patch carrying `metadata.resourceVersion` is refused with 409 when the object
    /// changed since: apiserver `patchResource`). A concurrent write between the read and the patch is then
    /// never overwritten blindly: the read and the decision are made again, a few times at most. The first
    /// attempt uses `seen` when given (a read the caller already made), later ones read afresh.
    async fn set_meta_map(
        &self,
        target: &LabelTarget,
        changes: &[(String, Option<String>)],
        field: Field,
        seen: Option<&LabelsRead>,
    ) -> Result<LabelsSet, ClusterError> {
        const ATTEMPTS: usize = 3;
        let mut attempt = 1;
        let mut seen = seen.cloned();
        loop {
            let read = match seen.take() {
                Some(r) => r,
                None => self.read_field(target, field).await?,
            };
            match self.set_meta_map_once(target, changes, field, read).await {
                Err(e) if e.is_conflict() && attempt < ATTEMPTS => {
                    tracing::info!(target_object = %target.describe(), "changed while being patched; reading it again");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn set_meta_map_once(
        &self,
        target: &LabelTarget,
        changes: &[(String, Option<String>)],
        field: Field,
        read: LabelsRead,
    ) -> Result<LabelsSet, ClusterError> {
        let current = read.labels;
        let (outcomes, ops) = decide(&current, changes);
        let patch_map: serde_json::Map<String, serde_json::Value> = ops
            .into_iter()
            .map(|(k, v)| (k, v.map_or(serde_json::Value::Null, serde_json::Value::String)))
            .collect();
        if patch_map.is_empty() {
            return Ok(LabelsSet {
                outcomes,
                labels: current,
            });
        }
        let body =
            json!({ "metadata": { "resourceVersion": read.resource_version, field.name(): patch_map } });
        let what = format!("patch {} of {}", field.name(), target.describe());
        tracing::info!(target_object = %target.describe(), patch = %body, dry_run = self.dry_run(), "patching {}", field.name());
        let meta = self.patch_meta(target, &what, &Patch::Merge(&body)).await?;
        Ok(LabelsSet {
            outcomes,
            labels: field.of(meta),
        })
    }
}

/// One outcome per wanted key, in input order, and the keys that differ from `current` with the value to
/// set (`None`: remove).
fn decide(
    current: &BTreeMap<String, String>,
    changes: &[(String, Option<String>)],
) -> (Vec<LabelOutcome>, Vec<(String, Option<String>)>) {
    let mut outcomes = Vec::with_capacity(changes.len());
    let mut ops = Vec::new();
    for (key, want) in changes {
        let before = current.get(key).cloned();
        let changed = before != *want;
        if changed {
            ops.push((key.clone(), want.clone()));
        }
        outcomes.push(LabelOutcome {
            key: key.clone(),
            before,
            after: want.clone(),
            changed,
        });
    }
    (outcomes, ops)
}

/// A label key as one JSON pointer segment (RFC 6901: `~` is `~0`, `/` is `~1`).
fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_are_escaped_as_json_pointer_segments() {
        assert_eq!(
            pointer_escape("istio.io/dataplane-mode"),
            "istio.io~1dataplane-mode"
        );
        assert_eq!(pointer_escape("a~b/c"), "a~0b~1c");
    }

    #[test]
    fn only_keys_that_differ_are_changed() {
        let current: BTreeMap<String, String> = [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        let (outcomes, ops) = decide(
            &current,
            &[
                ("a".into(), Some("1".into())),
                ("b".into(), None),
                ("c".into(), Some("3".into())),
            ],
        );
        assert_eq!(
            ops,
            vec![("b".to_string(), None), ("c".to_string(), Some("3".to_string()))]
        );
        assert_eq!(
            outcomes.iter().map(|o| o.changed).collect::<Vec<_>>(),
            vec![false, true, true]
        );
        assert_eq!(outcomes[1].before.as_deref(), Some("2"));
    }
}
