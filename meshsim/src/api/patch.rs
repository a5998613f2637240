//! Patch formats: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch for built-in
//! kinds, and server-side apply (simplified, see `MODEL.md`).
//!
//! Strategic merge follows `k8s.io/apimachinery/pkg/util/strategicpatch/patch.go` for the lists whose
//! `patchMergeKey` matters to us (from the `patchStrategy:"merge" patchMergeKey:"..."` struct tags of
//! `k8s.io/api/core/v1/types.go` and `apps/v1/types.go`).

use serde_json::{Map, Value};

/// The patch flavours the API accepts (by `Content-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchKind {
    /// From a Content-Type header value (parameters ignored).
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/merge-patch+json" => Some(PatchKind::Merge),
            "application/json-patch+json" => Some(PatchKind::Json),
            "application/strategic-merge-patch+json" => Some(PatchKind::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(PatchKind::Apply),
            _ => None,
        }
    }
}

/// Merge key of a list field, by field name (None: the list is replaced atomically).
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "hostAliases" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "conditions" => Some("type"),
        "ports" => {
            // Container ports merge by containerPort, Service ports by port.
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                Some("containerPort")
            } else {
                Some("port")
            }
        }
        _ => None,
    }
}

/// Applies a strategic merge patch to `target` in place. Directives other than `$patch: delete` on list
/// elements and `$patch: replace` on maps are ignored (`$retainKeys`, `$setElementOrder/...`,
/// `$deleteFromPrimitiveList/...`).
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(pm) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut clean = patch.clone();
        strip_directives(&mut clean);
        *target = clean;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let tm = target.as_object_mut().expect("object");
    for (k, v) in pm {
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            tm.remove(k);
            continue;
        }
        match v {
            Value::Array(items) => {
                let existing = tm.get(k).and_then(Value::as_array).cloned();
                match (merge_key(k, items), existing) {
                    (Some(key), Some(mut cur)) => {
                        merge_list(&mut cur, items, key);
                        tm.insert(k.clone(), Value::Array(cur));
                    }
                    _ => {
                        let mut clean = v.clone();
                        strip_directives(&mut clean);
                        if let Value::Array(a) = &mut clean {
                            a.retain(|i| i.get("$patch").is_none());
                        }
                        tm.insert(k.clone(), clean);
                    }
                }
            }
            Value::Object(_) => {
                let slot = tm.entry(k.clone()).or_insert(Value::Null);
                strategic_merge(slot, v);
            }
            _ => {
                tm.insert(k.clone(), v.clone());
            }
        }
    }
}

fn merge_list(cur: &mut Vec<Value>, patch_items: &[Value], key: &str) {
    for item in patch_items {
        let Some(kv) = item.get(key).cloned() else {
            continue;
        };
        let pos = cur.iter().position(|c| c.get(key) == Some(&kv));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                cur.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut cur[i], item),
            (None, false) => {
                let mut clean = item.clone();
                strip_directives(&mut clean);
                cur.push(clean);
            }
        }
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            for (_, x) in m.iter_mut() {
                strip_directives(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// Applies a JSON merge patch (RFC 7386: `null` deletes).
pub fn merge(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// Applies a JSON patch document; the error text is what the 422 answer says.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let p: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| e.to_string())?;
    json_patch::patch(target, &p).map_err(|e| e.to_string())
}

/// Server-side apply merge (simplified): the applied configuration is merged into the live object like a
/// strategic merge patch for built-in kinds and like a merge patch for custom kinds (lists atomic, as CRD
/// lists are by default). Fields the manager applied before and omits now are NOT removed. Conflicts with
/// other managers are checked before the merge (`crate::fields::apply_conflicts`).
pub fn apply(target: &mut Value, applied: &Value, custom: bool) {
    if custom {
        merge(target, applied);
    } else {
        strategic_merge(target, applied);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "side", "image": "s:1"}]}}}});
        strategic_merge(
            &mut d,
            &json!({"spec": {"template": {"metadata": {"annotations": {"r": "1"}}, "spec": {"containers": [
                {"name": "app", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
                {"name": "side", "$patch": "delete"}],
                "$setElementOrder/containers": [{"name": "app"}]}}}}),
        );
        let cs = d["spec"]["template"]["spec"]["containers"].as_array().unwrap();
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0]["image"], "a:2");
        assert_eq!(cs[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(d["spec"]["template"]["metadata"]["annotations"]["r"], "1");
        assert!(
            d["spec"]["template"]["spec"]
                .get("$setElementOrder/containers")
                .is_none()
        );
    }

    #[test]
    fn merge_and_json_patch() {
        let mut o = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"l": [1, 2]}});
        merge(
            &mut o,
            &json!({"metadata": {"labels": {"a": null}}, "spec": {"l": [3]}}),
        );
        assert_eq!(o, json!({"metadata": {"labels": {"b": "2"}}, "spec": {"l": [3]}}));
        json_patch(&mut o, &json!([{"op": "remove", "path": "/metadata/labels/b"}])).unwrap();
        assert_eq!(o["metadata"]["labels"], json!({}));
        assert!(json_patch(&mut o, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert_eq!(
            PatchKind::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchKind::Merge)
        );
    }
}
