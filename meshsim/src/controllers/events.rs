//! core/v1 Events for the main transitions, as `client-go/tools/record` writes them (name
//! `<object>.<hex>`, `involvedObject`, `source.component`, `count: 1`). Volume is kept moderate: one event
//! per transition, no repeats.

use serde_json::{Value, json};

use super::util::{name, ns, uid};
use crate::Sim;
use crate::resources;

/// Records an event about `obj` (cluster-scoped objects get their events in `default`, as kubectl shows).
pub fn emit(sim: &Sim, obj: &Value, warning: bool, reason: &str, message: &str, component: &str) {
    let namespace = if ns(obj).is_empty() { "default" } else { ns(obj) };
    let now = super::util::now_ts();
    let ev = json!({
        "metadata": {
            "name": format!("{}.{:016x}", name(obj), rand::random::<u64>()),
            "namespace": namespace,
        },
        "involvedObject": {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": name(obj),
            "namespace": ns(obj),
            "uid": uid(obj),
            "resourceVersion": obj["metadata"]["resourceVersion"],
        },
        "reason": reason,
        "message": message,
        "source": {"component": component},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "type": if warning { "Warning" } else { "Normal" },
        "reportingComponent": component,
        "reportingInstance": "",
    });
    super::util::create(sim, resources::core("events"), ev, component);
}
