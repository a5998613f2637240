//! Small helpers shared by the controllers: metadata accessors, label selectors, condition lists (with the
//! `SetDeploymentCondition` semantics of kube-controller-manager), time, and store writes as the system.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::Sim;
use crate::faults::NsLabels;
use crate::resources::ResId;
use crate::store::{Shared, Target, WriteOpts};

/// Wall clock in milliseconds since the epoch (time-based transitions compare against it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Now as an RFC 3339 timestamp with seconds, truncated (not rounded) like `metav1.Time`.
pub fn now_ts() -> String {
    let ts = jiff::Timestamp::now();
    jiff::Timestamp::from_second(ts.as_second())
        .unwrap_or(ts)
        .to_string()
}

/// Milliseconds since the epoch of an RFC 3339 timestamp.
pub fn ts_ms(s: &str) -> Option<u64> {
    s.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond().max(0) as u64)
}

pub fn meta<'a>(o: &'a Value, field: &str) -> &'a str {
    o["metadata"][field].as_str().unwrap_or("")
}

pub fn name(o: &Value) -> &str {
    meta(o, "name")
}

pub fn ns(o: &Value) -> &str {
    meta(o, "namespace")
}

pub fn uid(o: &Value) -> &str {
    meta(o, "uid")
}

pub fn label<'a>(o: &'a Value, k: &str) -> Option<&'a str> {
    o["metadata"]["labels"][k].as_str()
}

pub fn annotation<'a>(o: &'a Value, k: &str) -> Option<&'a str> {
    o["metadata"]["annotations"][k].as_str()
}

pub fn generation(o: &Value) -> i64 {
    o["metadata"]["generation"].as_i64().unwrap_or(1)
}

pub fn terminating(o: &Value) -> bool {
    o["metadata"]
        .get("deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

/// The controller owner reference's uid, if any.
pub fn controller_uid(o: &Value) -> Option<&str> {
    o["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"].as_bool() == Some(true))
        .and_then(|r| r["uid"].as_str())
}

/// An ownerReference with `controller: true` (what `metav1.NewControllerRef` builds).
pub fn owner_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": name(owner),
        "uid": uid(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// `metav1.LabelSelector` matching (matchLabels and matchExpressions). An empty selector matches everything.
pub fn selector_matches(selector: &Value, labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    if let Some(ml) = selector["matchLabels"].as_object() {
        for (k, v) in ml {
            if get(k) != v.as_str() {
                return false;
            }
        }
    }
    if let Some(exprs) = selector["matchExpressions"].as_array() {
        for e in exprs {
            let key = e["key"].as_str().unwrap_or("");
            let values: Vec<&str> = e["values"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let v = get(key);
            let ok = match e["operator"].as_str().unwrap_or("") {
                "In" => v.is_some_and(|v| values.contains(&v)),
                "NotIn" => v.is_none_or(|v| !values.contains(&v)),
                "Exists" => v.is_some(),
                "DoesNotExist" => v.is_none(),
                _ => false,
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

/// Sets a condition in `conds` as `SetDeploymentCondition` does (kubernetes
/// `pkg/controller/deployment/util/deployment_util.go`): a condition with the same status and reason is
/// left alone; a status change moves `lastTransitionTime`; otherwise it is kept. `update_time` adds
/// `lastUpdateTime` (Deployments have it, most kinds do not). Returns whether anything changed.
pub fn set_condition(
    conds: &mut Vec<Value>,
    ctype: &str,
    status: &str,
    reason: &str,
    message: &str,
    update_time: bool,
    observed_generation: Option<i64>,
) -> bool {
    let pos = conds.iter().position(|c| c["type"] == ctype);
    if let Some(i) = pos {
        let c = &conds[i];
        if c["status"] == status
            && c["reason"] == reason
            && (update_time || c["message"] == message)
            && observed_generation.is_none_or(|g| c["observedGeneration"].as_i64() == Some(g))
        {
            return false;
        }
    }
    // Formatted only for a condition that changes (most calls find it as it is).
    let now = now_ts();
    let mut c = Map::new();
    c.insert("type".into(), json!(ctype));
    c.insert("status".into(), json!(status));
    if let Some(g) = observed_generation {
        c.insert("observedGeneration".into(), json!(g));
    }
    if update_time {
        c.insert("lastUpdateTime".into(), json!(now));
    }
    let transition = match pos {
        Some(i) if conds[i]["status"] == status => conds[i]["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    c.insert("lastTransitionTime".into(), transition);
    c.insert("reason".into(), json!(reason));
    c.insert("message".into(), json!(message));
    match pos {
        Some(i) => conds[i] = Value::Object(c),
        None => conds.push(Value::Object(c)),
    }
    true
}

pub fn get_condition<'a>(o: &'a Value, ctype: &str) -> Option<&'a Value> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ctype)
}

pub fn conditions(o: &Value) -> Vec<Value> {
    o["status"]["conditions"].as_array().cloned().unwrap_or_default()
}

/// Write options naming the field manager.
pub fn opts(manager: &str) -> WriteOpts {
    WriteOpts {
        field_manager: Some(manager.to_string()),
        ..Default::default()
    }
}

/// Read-modify-write of the current stored object as the system (`Target::Internal`). Errors (object gone,
/// admission refusal) are logged and dropped: every controller is level-triggered and retries next pass.
/// `f` may run more than once: again on the newer object when another write came between its read and
/// the commit ([`crate::store::Store::update_shared`]).
pub fn update(
    sim: &Sim,
    res: ResId,
    namespace: &str,
    obj_name: &str,
    manager: &str,
    mut f: impl FnMut(&mut Value),
) -> Option<Shared> {
    let r = sim.store.update_shared(
        res,
        namespace,
        obj_name,
        Target::Internal,
        &opts(manager),
        |old| {
            let mut new = old.clone();
            f(&mut new);
            if let Some(m) = new["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            Ok(new)
        },
    );
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::debug!(%namespace, name = %obj_name, error = %e, "controller update failed");
            None
        }
    }
}

/// Creates an object as the system; `None` (logged) on error.
pub fn create(sim: &Sim, res: ResId, obj: Value, manager: &str) -> Option<Shared> {
    match sim.store.create_shared(res, obj, &opts(manager)) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::debug!(error = %e, "controller create failed");
            None
        }
    }
}

/// Pod is Ready: Ready condition True, phase Running, not terminating.
pub fn pod_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && !terminating(p)
        && get_condition(p, "Ready").is_some_and(|c| c["status"] == "True")
}

/// Pod counts for its controller: not terminating and not finished (`controller.FilterActivePods`).
pub fn pod_active(p: &Value) -> bool {
    let phase = p["status"]["phase"].as_str().unwrap_or("");
    !terminating(p) && phase != "Succeeded" && phase != "Failed"
}

/// The moment (ms) a pod becomes available (`podutil.IsPodAvailable`: Ready for at least
/// `min_ready_seconds`); None while not Ready.
pub fn available_from(p: &Value, min_ready_seconds: i64) -> Option<u64> {
    if !pod_ready(p) {
        return None;
    }
    if min_ready_seconds <= 0 {
        return Some(0);
    }
    let since = get_condition(p, "Ready")
        .and_then(|c| c["lastTransitionTime"].as_str())
        .and_then(ts_ms)
        .unwrap_or(0);
    Some(since + (min_ready_seconds as u64) * 1000)
}

/// Namespace labels from the controllers' snapshot. Faults are evaluated against it rather than the
/// store, so no controller ever takes the store lock while holding the faults lock.
#[derive(Default)]
pub struct NsSnapshot(pub HashMap<String, Shared>);

impl NsLabels for NsSnapshot {
    fn ns_labels(&self, ns: &str) -> Option<Value> {
        self.0.contains_key(ns).then(|| self.labels(ns).clone())
    }
}

impl NsSnapshot {
    /// The labels of `ns` as the pass read them, borrowed (a pass asks once per pod): `{}` for a
    /// namespace without labels, `null` for one outside the snapshot.
    pub fn labels(&self, ns: &str) -> &Value {
        static NULL: Value = Value::Null;
        static EMPTY: std::sync::LazyLock<Value> =
            std::sync::LazyLock::new(|| Value::Object(Default::default()));
        match self.0.get(ns) {
            Some(o) => o["metadata"].get("labels").unwrap_or(&EMPTY),
            None => &NULL,
        }
    }
}

/// Stable hash as `controller.ComputeHash` encodes it: FNV-1a 32 of the template, printed in decimal and
/// mapped through `rand.SafeEncodeString`'s alphabet (so it looks like `56f487d8f8`).
pub fn template_hash(template: &Value, collision: u64) -> String {
    let text = format!("{}{}", canonical(template), collision);
    let mut h: u32 = 0x811c9dc5;
    for b in text.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[(b as usize) % ALPHANUMS.len()] as char)
        .collect()
}

/// JSON with sorted keys (serde_json maps are sorted already unless preserve_order is on).
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<_> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", json!(k), canonical(&m[k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// Resolves an int-or-percent (`intstr.GetScaledValueFromIntOrPercent`).
pub fn scaled(v: &Value, total: i64, round_up: bool, default: &str) -> i64 {
    let v = if v.is_null() { json!(default) } else { v.clone() };
    if let Some(i) = v.as_i64() {
        return i;
    }
    let s = v.as_str().unwrap_or(default);
    match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
        Some(p) => {
            let x = p * total;
            if round_up { (x + 99) / 100 } else { x / 100 }
        }
        None => s.parse().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_follow_label_selector_semantics() {
        let labels = json!({"a": "1", "b": "2"});
        assert!(selector_matches(&json!({}), &labels));
        assert!(selector_matches(&json!({"matchLabels": {"a": "1"}}), &labels));
        assert!(!selector_matches(&json!({"matchLabels": {"a": "2"}}), &labels));
        let e = |op: &str, vals: Value| json!({"matchExpressions": [{"key": "c", "operator": op, "values": vals}]});
        assert!(selector_matches(&e("NotIn", json!(["false"])), &labels));
        assert!(!selector_matches(&e("In", json!(["x"])), &labels));
        assert!(selector_matches(&e("DoesNotExist", json!([])), &labels));
        assert!(!selector_matches(&e("Exists", json!([])), &labels));
    }

    #[test]
    fn fenceposts_round_like_intstr() {
        assert_eq!(scaled(&Value::Null, 3, true, "25%"), 1);
        assert_eq!(scaled(&Value::Null, 3, false, "25%"), 0);
        assert_eq!(scaled(&json!(2), 3, false, "25%"), 2);
        assert_eq!(scaled(&json!("50%"), 5, true, "25%"), 3);
    }

    #[test]
    fn conditions_keep_transition_time_when_status_holds() {
        let mut c = vec![];
        assert!(set_condition(&mut c, "Progressing", "True", "A", "m", true, None));
        assert!(!set_condition(
            &mut c,
            "Progressing",
            "True",
            "A",
            "m2",
            true,
            None
        ));
        let t = c[0]["lastTransitionTime"].clone();
        assert!(set_condition(&mut c, "Progressing", "True", "B", "m", true, None));
        assert_eq!(c[0]["lastTransitionTime"], t);
        assert_eq!(c.len(), 1);
        assert!(template_hash(&json!({"a": 1}), 0).len() >= 8);
    }
}
