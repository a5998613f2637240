//! Field ownership for server-side apply (simplified from `sigs.k8s.io/structured-merge-diff` as the
//! apiserver's field manager uses it, `k8s.io/apimachinery/pkg/util/managedfields`): each
//! `metadata.managedFields` entry owns a set of leaf paths, kept as `fieldsV1` (`{"f:data": {"f:key": {}}}`).
//! An Update (create, PUT, non-apply PATCH) takes the leaves whose value it changed away from every other
//! manager; an Apply owns exactly the leaves of the applied configuration. An Apply that would change a
//! leaf another manager owns is a conflict (409) unless `force=true`, which takes the leaf over. Lists are
//! atomic leaves here (the real field manager merges keyed lists element by element).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// A leaf path (`["data", "key"]`).
pub type FieldPath = Vec<String>;

/// Top-level and metadata fields nobody owns (identity and server-set fields).
fn skipped(path: &[String]) -> bool {
    match path {
        [top] => matches!(top.as_str(), "apiVersion" | "kind"),
        [top, ..] if top == "status" => false,
        [m, f, ..] if m == "metadata" => !matches!(
            f.as_str(),
            "labels" | "annotations" | "ownerReferences" | "finalizers"
        ),
        _ => false,
    }
}

/// The leaf paths of an object or applied configuration (empty maps and lists are leaves).
pub fn leaves(v: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    leaves_against(v, None, false, &mut Vec::new(), &mut out);
    out
}

fn at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.get(k))
}

/// Leaves whose value differs between `old` and `new` (added, changed or removed): the leaves of `new`
/// whose value in `old` differs, plus the leaves of `old` absent from `new`. Subtrees equal in both are
/// skipped whole, so a write costs what it changed, not the size of the object.
pub fn changed(old: Option<&Value>, new: &Value) -> BTreeSet<FieldPath> {
    let Some(old) = old else {
        return leaves(new);
    };
    let mut out = BTreeSet::new();
    leaves_against(new, Some(old), false, &mut Vec::new(), &mut out);
    leaves_against(old, Some(new), true, &mut Vec::new(), &mut out);
    out
}

/// The leaves of `v` (the subtree at `prefix`) whose value in `other` (the other object's subtree at
/// `prefix`) differs; with `only_absent`, only those with no value there at all.
fn leaves_against(
    v: &Value,
    other: Option<&Value>,
    only_absent: bool,
    prefix: &mut FieldPath,
    out: &mut BTreeSet<FieldPath>,
) {
    if other == Some(v) {
        return;
    }
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                prefix.push(k.clone());
                if !skipped(prefix) {
                    leaves_against(x, other.and_then(|o| o.get(k)), only_absent, prefix, out);
                }
                prefix.pop();
            }
        }
        _ => {
            if !prefix.is_empty() && (!only_absent || other.is_none()) {
                out.insert(prefix.clone());
            }
        }
    }
}

/// `fieldsV1` of a set of leaves.
pub fn to_fields_v1(set: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for p in set {
        let mut node = &mut root;
        for k in p {
            node = node
                .entry(format!("f:{k}"))
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("fieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

/// The leaves of a `fieldsV1` tree (only `f:` keys are read).
pub fn from_fields_v1(v: &Value) -> BTreeSet<FieldPath> {
    fn go(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        let Some(m) = v.as_object() else { return };
        let children: Vec<(&String, &Value)> = m.iter().filter(|(k, _)| k.starts_with("f:")).collect();
        if children.is_empty() && !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        for (k, x) in children {
            prefix.push(k[2..].to_string());
            go(x, prefix, out);
            prefix.pop();
        }
    }
    let mut out = BTreeSet::new();
    go(v, &mut Vec::new(), &mut out);
    out
}

/// Whether the `fieldsV1` tree has `path` as a leaf (what [`from_fields_v1`] would list), looked up without
/// decoding the tree.
fn owns(fields_v1: &Value, path: &[String]) -> bool {
    let node = path
        .iter()
        .try_fold(fields_v1, |cur, k| cur.as_object()?.get(&format!("f:{k}")));
    node.is_some_and(|n| {
        !path.is_empty()
            && n.as_object()
                .is_none_or(|m| !m.keys().any(|k| k.starts_with("f:")))
    })
}

/// `.data.key`, as conflict messages print a path.
pub fn path_string(p: &[String]) -> String {
    p.iter().map(|k| format!(".{k}")).collect()
}

/// `printManager` of `conflict.go`: `"name"` for an Apply entry, `"name" using v1 at <time>` for an
/// Update entry.
fn print_manager(entry: &Value) -> String {
    let name = format!("{:?}", entry["manager"].as_str().unwrap_or(""));
    if entry["operation"] == "Update" {
        let api = entry["apiVersion"].as_str().unwrap_or("");
        match entry["time"].as_str() {
            Some(t) => format!("{name} using {api} at {t}"),
            None => format!("{name} using {api}"),
        }
    } else {
        name
    }
}

/// The conflicts of applying `applied` as `manager` to `live`: leaves the applied configuration sets to a
/// value other than the live one while another manager owns them. `None` when there are none; otherwise
/// the message `getConflictMessage` (`k8s.io/apimachinery/pkg/util/managedfields/internal/conflict.go`)
/// writes.
pub fn apply_conflicts(live: &Value, applied: &Value, manager: &str) -> Option<String> {
    let entries = live["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut found: Vec<(String, String)> = Vec::new();
    for p in leaves(applied) {
        if at(live, &p) == at(applied, &p) || at(live, &p).is_none() {
            continue;
        }
        for e in entries.iter().filter(|e| e["manager"] != manager) {
            if from_fields_v1(&e["fieldsV1"]).contains(&p) {
                found.push((print_manager(e), path_string(&p)));
            }
        }
    }
    match found.len() {
        0 => None,
        1 => Some(format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            found[0].0, found[0].1
        )),
        n => {
            let mut managers: Vec<&String> = found.iter().map(|(m, _)| m).collect();
            managers.sort();
            managers.dedup();
            let mut lines = Vec::new();
            for m in managers {
                lines.push(format!("conflicts with {m}:"));
                lines.extend(
                    found
                        .iter()
                        .filter(|(x, _)| x == m)
                        .map(|(_, p)| format!("- {p}")),
                );
            }
            Some(format!("Apply failed with {n} conflicts: {}", lines.join("\n")))
        }
    }
}

/// Rewrites `obj`'s `managedFields` after a write by `manager`: an Apply owns `applied`'s leaves (and,
/// when forced, takes them from every other manager); an Update adds the leaves it changed (from `old`)
/// and takes them from every other manager. Entries left owning nothing are dropped.
#[allow(clippy::too_many_arguments)]
pub fn record(
    obj: &mut Value,
    old: Option<&Value>,
    manager: &str,
    applied: Option<&Value>,
    force: bool,
    api_version: &str,
    time: &str,
    subresource: Option<&str>,
) {
    let operation = if applied.is_some() { "Apply" } else { "Update" };
    // What the write changed, read while `obj` still holds its entries (they are compared too).
    let ch = applied.is_none().then(|| changed(old, obj));
    // The entries are replaced below: taken out of `obj`, not copied.
    let mut entries: Vec<Value> = match obj["metadata"].get_mut("managedFields").map(Value::take) {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    let own = entries
        .iter()
        .position(|e| e["manager"] == manager && e["operation"] == operation);
    let (mine, taken): (Value, BTreeSet<FieldPath>) = match (applied, ch) {
        (Some(a), _) => {
            let set = leaves(a);
            let taken = if force { set.clone() } else { BTreeSet::new() };
            (to_fields_v1(&set), taken)
        }
        (None, ch) => {
            let ch = ch.unwrap_or_default();
            let mine = match own {
                // The usual write (a controller rewriting fields it already owns): the manager's set is
                // unchanged, so its encoding is kept rather than decoded and encoded again.
                Some(i) if ch.iter().all(|p| owns(&entries[i]["fieldsV1"], p)) => {
                    entries[i]["fieldsV1"].take()
                }
                Some(i) => {
                    let before = from_fields_v1(&entries[i]["fieldsV1"]);
                    to_fields_v1(&before.union(&ch).cloned().collect())
                }
                None => to_fields_v1(&ch),
            };
            (mine, ch)
        }
    };
    entries.retain(|e| !(e["manager"] == manager && e["operation"] == operation));
    for e in entries.iter_mut() {
        // Most writes take nothing from the other managers: look the taken leaves up before decoding.
        if !taken.iter().any(|p| owns(&e["fieldsV1"], p)) {
            continue;
        }
        let owned = from_fields_v1(&e["fieldsV1"]);
        let left: BTreeSet<FieldPath> = owned.difference(&taken).cloned().collect();
        if left.len() != owned.len() {
            e["fieldsV1"] = to_fields_v1(&left);
        }
    }
    entries.retain(|e| e["fieldsV1"].as_object().is_none_or(|m| !m.is_empty()));
    let mut entry = json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": mine,
    });
    if let Some(s) = subresource {
        entry["subresource"] = json!(s);
    }
    entries.push(entry);
    obj["metadata"]["managedFields"] = Value::Array(entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition `changed` implements without listing every leaf of both objects.
    fn changed_by_definition(old: &Value, new: &Value) -> BTreeSet<FieldPath> {
        let mut out: BTreeSet<FieldPath> = leaves(new)
            .into_iter()
            .filter(|p| at(old, p) != at(new, p))
            .collect();
        out.extend(leaves(old).into_iter().filter(|p| at(new, p).is_none()));
        out
    }

    #[test]
    fn changed_leaves_match_the_definition() {
        let base = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "resourceVersion": "7", "labels": {"a": "1", "b": "2"},
                "annotations": {}, "ownerReferences": [{"uid": "u"}]},
            "spec": {"containers": [{"name": "app"}], "nodeName": "n1", "x": {"y": {"z": 1}}},
            "status": {"phase": "Pending", "conditions": [], "podIP": "10.0.0.1"}});
        let edits: Vec<fn(&mut Value)> = vec![
            |_| {},
            |v| v["status"]["phase"] = json!("Running"),
            |v| v["metadata"]["labels"]["a"] = json!("9"),
            |v| {
                v["metadata"]["labels"].as_object_mut().unwrap().remove("b");
            },
            |v| v["metadata"]["resourceVersion"] = json!("8"),
            |v| v["metadata"]["annotations"] = json!({"k": "v"}),
            |v| v["spec"]["x"] = json!(3),
            |v| v["spec"]["nodeName"] = json!({"deep": {"er": true}}),
            |v| v["spec"]["x"]["y"] = json!({}),
            |v| {
                v.as_object_mut().unwrap().remove("status");
            },
            |v| v["status"]["conditions"] = json!([{"type": "Ready"}]),
            |v| v["kind"] = json!("Other"),
        ];
        for (i, a) in edits.iter().enumerate() {
            for (j, b) in edits.iter().enumerate() {
                let (mut old, mut new) = (base.clone(), base.clone());
                a(&mut old);
                b(&mut new);
                assert_eq!(
                    changed(Some(&old), &new),
                    changed_by_definition(&old, &new),
                    "edits {i} -> {j}"
                );
            }
        }
        let mut relabeled = base.clone();
        relabeled["metadata"]["labels"]["a"] = json!("9");
        let expected: BTreeSet<FieldPath> = [vec![
            "metadata".to_string(),
            "labels".to_string(),
            "a".to_string(),
        ]]
        .into();
        assert_eq!(changed(Some(&base), &relabeled), expected);
    }

    #[test]
    fn owns_finds_exactly_the_decoded_leaves() {
        let tree = json!({"f:data": {"f:k": {}, "f:j": {".": {}}}, "f:metadata": {"f:labels": {"f:a": {}}}});
        let decoded = from_fields_v1(&tree);
        let p = |s: &str| s.split('.').map(String::from).collect::<FieldPath>();
        for path in [
            "data.k",
            "data.j",
            "metadata.labels.a",
            "data",
            "metadata.labels",
            "data.x",
            "x",
        ] {
            assert_eq!(owns(&tree, &p(path)), decoded.contains(&p(path)), "{path}");
        }
        assert!(owns(&tree, &p("data.k")));
        assert!(!owns(&tree, &p("data")));
    }

    #[test]
    fn fields_v1_round_trips_and_conflicts_name_the_owner() {
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"k": "v", "j": "w"}});
        let set = leaves(&obj);
        assert!(set.contains(&vec!["data".to_string(), "k".to_string()]));
        assert!(!set.contains(&vec!["metadata".to_string(), "name".to_string()]));
        assert_eq!(from_fields_v1(&to_fields_v1(&set)), set);
        assert_eq!(to_fields_v1(&set)["f:data"]["f:k"], json!({}));

        let mut live = obj.clone();
        record(
            &mut live,
            None,
            "creator",
            None,
            false,
            "v1",
            "2026-01-01T00:00:00Z",
            None,
        );
        // Same value: shared, no conflict; a different value owned by the creator: conflict.
        let same = json!({"data": {"k": "v"}});
        assert_eq!(apply_conflicts(&live, &same, "ci"), None);
        let other = json!({"data": {"k": "x", "j": "y"}});
        assert_eq!(
            apply_conflicts(&live, &other, "ci").unwrap(),
            "Apply failed with 2 conflicts: conflicts with \"creator\" using v1 at 2026-01-01T00:00:00Z:\n- .data.j\n- .data.k"
        );
        // A forced apply takes the leaves over.
        let mut forced = live.clone();
        forced["data"] = json!({"k": "x", "j": "y"});
        record(
            &mut forced,
            Some(&live),
            "ci",
            Some(&other),
            true,
            "v1",
            "t",
            None,
        );
        assert_eq!(apply_conflicts(&forced, &json!({"data": {"k": "z"}}), "ci"), None);
        assert!(apply_conflicts(&forced, &json!({"metadata": {"labels": {"a": "2"}}}), "ci").is_some());
    }

    /// An Update's entry owns what the manager owned plus what the write changed, and the leaves it
    /// changed leave every other manager, whether or not the manager's set grows (a set that does not grow
    /// keeps its encoding).
    #[test]
    fn an_update_owns_its_changes_and_takes_them_from_the_others() {
        let p = |s: &str| s.split('.').map(String::from).collect::<FieldPath>();
        let entry = |obj: &Value, manager: &str| -> BTreeSet<FieldPath> {
            obj["metadata"]["managedFields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["manager"] == manager)
                .map(|e| from_fields_v1(&e["fieldsV1"]))
                .unwrap_or_default()
        };
        let mut v1 = json!({"metadata": {"name": "p"}, "status": {"phase": "Pending"}});
        record(&mut v1, None, "kubelet", None, false, "v1", "t1", Some("status"));
        let mut v2 = v1.clone();
        v2["status"]["phase"] = json!("Running");
        v2["spec"] = json!({"nodeName": "n1"});
        record(&mut v2, Some(&v1), "scheduler", None, false, "v1", "t2", None);
        assert_eq!(
            entry(&v2, "scheduler"),
            [p("spec.nodeName"), p("status.phase")].into()
        );
        assert!(entry(&v2, "kubelet").is_empty());
        assert_eq!(
            v2["metadata"]["managedFields"].as_array().unwrap().len(),
            1,
            "an entry left owning nothing is dropped"
        );
        // The scheduler rewrites a field it owns: same set, same encoding, a new time, moved to the end.
        let mut v3 = v2.clone();
        v3["status"]["phase"] = json!("Succeeded");
        record(
            &mut v3,
            Some(&v2),
            "kubelet",
            None,
            false,
            "v1",
            "t3",
            Some("status"),
        );
        let mut v4 = v3.clone();
        v4["spec"]["nodeName"] = json!("n2");
        record(&mut v4, Some(&v3), "scheduler", None, false, "v1", "t4", None);
        let entries = v4["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0]["manager"], "kubelet");
        assert_eq!(entries[1]["manager"], "scheduler");
        assert_eq!(entries[1]["time"], "t4");
        assert_eq!(entries[1]["fieldsV1"], to_fields_v1(&[p("spec.nodeName")].into()));
        assert_eq!(entry(&v4, "kubelet"), [p("status.phase")].into());
    }
}
