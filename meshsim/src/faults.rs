//! Fault injection: what can go wrong in a real cluster during a migration, switchable from a YAML file at
//! start and over HTTP at run time. Kind names are a contract shared with tests and the demo.
//!
//! A fault may carry a trigger on cluster state ("once namespace X has label k=v"); by default it is active
//! while the trigger holds, with `latch: true` it stays active once the trigger has held.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::resources;
use crate::store::{Store, StoreView};

/// The fault kinds (names are a contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// API requests matching verb/resource/namespace/name answer `code` (count- or rate-limited).
    ApiError,
    /// API requests matching verb/resource/namespace wait `latency_ms` first.
    ApiLatency,
    /// Watches on `resource` are closed after `after_ms` (or at once), forcing clients to re-watch.
    WatchDrop,
    /// The waypoint Gateway `name` (default: every waypoint of the namespace) never becomes Programmed.
    WaypointNeverReady,
    /// Pods created (by a rollout) after the trigger crash-loop: never Ready, restartCount grows.
    PodsCrashloopAfterRestart,
    /// istio-cni leaves new ambient pods at `ambient.istio.io/redirection=pending`.
    CniPending,
    /// The ztunnel pod on `node` (default: every node) is down: ambient pods there get no traffic.
    ZtunnelDown,
    /// The application behind `service` answers `status` (default 503) at `rate` (default 1.0).
    ServiceErrors,
    /// The sidecar injector webhook is down: pod creation in injected namespaces fails (failurePolicy Fail).
    InjectorDown,
}

/// A condition on cluster state that switches a fault on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// The namespace whose labels are tested.
    pub namespace: String,
    /// `key=value` (label has that value) or `key` (label present) or `!key` (label absent).
    pub label: String,
}

impl Trigger {
    /// Whether the trigger holds for the given namespace labels (`None`: namespace absent).
    pub fn holds(&self, labels: Option<&Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        if let Some(key) = self.label.strip_prefix('!') {
            return get(key).is_none();
        }
        match self.label.split_once('=') {
            Some((k, v)) => get(k) == Some(v),
            None => get(&self.label).is_some(),
        }
    }
}

/// One fault as written in a faults file or posted to `/meshsim/faults`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    pub kind: FaultKind,
    /// Name to refer to it (delete over HTTP); generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Namespace the fault applies to (every namespace when absent, where that makes sense).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// api-error / api-latency: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete` (any if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verb: Option<String>,
    /// api-error / api-latency / watch-drop: resource plural (`deployments`), any if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Object name (api-error), waypoint name (waypoint-never-ready), workload name (crashloop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// api-error: HTTP code answered (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// api-error: answer that many matching requests, then stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// api-error / service-errors: fraction of matching requests affected (0..=1, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// api-latency: delay per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// api-latency: wait after the request was applied instead of before, so a client that gives up
    /// waiting loses the answer of a write that landed (a lost answer, retried into a 409).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delay_answer: bool,
    /// watch-drop: close watches after this long (0 = right after the backlog).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_ms: Option<u64>,
    /// ztunnel-down: node name (all nodes when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// service-errors: the Service whose application fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// service-errors: HTTP status the application answers (default 503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// Stay active once the trigger has held, even if it stops holding.
    #[serde(default)]
    pub latch: bool,
    /// Active only for this long after the fault was added (from a faults file: after meshsim started),
    /// then never again: a bounded outage such as an API brownout (every request 500 for 20 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_ms: Option<u64>,
}

impl FaultSpec {
    /// A fault of `kind` in `namespace`, no trigger.
    pub fn new(kind: FaultKind, namespace: Option<&str>) -> Self {
        FaultSpec {
            kind,
            id: None,
            namespace: namespace.map(str::to_string),
            verb: None,
            resource: None,
            name: None,
            code: None,
            count: None,
            rate: None,
            latency_ms: None,
            delay_answer: false,
            after_ms: None,
            node: None,
            service: None,
            status: None,
            trigger: None,
            latch: false,
            for_ms: None,
        }
    }

    /// Checks the fields the kind needs.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(r) = self.rate
            && !(0.0..=1.0).contains(&r)
        {
            return Err(format!(
                "fault {:?}: rate must be between 0 and 1, got {r}",
                self.kind
            ));
        }
        match self.kind {
            FaultKind::ServiceErrors if self.service.is_none() => {
                Err("fault service-errors needs `service` (and usually `namespace`)".into())
            }
            FaultKind::ApiLatency if self.latency_ms.is_none() => {
                Err("fault api-latency needs `latency_ms`".into())
            }
            _ => Ok(()),
        }
    }

    fn applies_to_ns(&self, namespace: Option<&str>) -> bool {
        match (&self.namespace, namespace) {
            (None, _) => true,
            (Some(want), Some(ns)) => want == ns,
            (Some(_), None) => false,
        }
    }
}

#[derive(Debug)]
struct FaultState {
    spec: FaultSpec,
    /// How many times it fired (api-error count limit).
    fired: u32,
    latched: bool,
    /// When it was added (start of its `for_ms` window).
    added: std::time::Instant,
}

impl FaultState {
    /// Whether a `for_ms` window has ended.
    fn window_ended(&self) -> bool {
        self.spec
            .for_ms
            .is_some_and(|ms| self.added.elapsed() >= std::time::Duration::from_millis(ms))
    }
}

/// The live fault set.
#[derive(Debug, Default)]
pub struct Faults {
    inner: Mutex<Vec<FaultState>>,
    next: Mutex<u64>,
}

/// Reads namespace labels, from the store or from a locked view.
pub trait NsLabels {
    fn ns_labels(&self, ns: &str) -> Option<Value>;
}

impl NsLabels for Store {
    fn ns_labels(&self, ns: &str) -> Option<Value> {
        self.get(resources::core("namespaces"), "", ns).map(|o| {
            o["metadata"]
                .get("labels")
                .cloned()
                .unwrap_or(Value::Object(Default::default()))
        })
    }
}

impl NsLabels for StoreView<'_> {
    fn ns_labels(&self, ns: &str) -> Option<Value> {
        self.get(resources::core("namespaces"), "", ns).map(|o| {
            o["metadata"]
                .get("labels")
                .cloned()
                .unwrap_or(Value::Object(Default::default()))
        })
    }
}

impl Faults {
    pub fn new(specs: Vec<FaultSpec>) -> Self {
        let f = Faults::default();
        for s in specs {
            f.add(s);
        }
        f
    }

    /// Reads a faults file: a YAML list of [`FaultSpec`] (or `{faults: [...]}`).
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Vec<FaultSpec>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read faults file {}: {e}", path.display()))?;
        parse_specs(&text).map_err(|e| anyhow::anyhow!("faults file {}: {e}", path.display()))
    }

    /// Adds a fault; returns its id.
    pub fn add(&self, mut spec: FaultSpec) -> String {
        let id = match &spec.id {
            Some(id) => id.clone(),
            None => {
                let mut n = self.next.lock().unwrap_or_else(|e| e.into_inner());
                *n += 1;
                format!("fault-{n}")
            }
        };
        spec.id = Some(id.clone());
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.retain(|f| f.spec.id.as_deref() != Some(id.as_str()));
        inner.push(FaultState {
            spec,
            fired: 0,
            latched: false,
            added: std::time::Instant::now(),
        });
        id
    }

    /// Removes a fault by id; false when there was none.
    pub fn remove(&self, id: &str) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let before = inner.len();
        inner.retain(|f| f.spec.id.as_deref() != Some(id));
        inner.len() != before
    }

    pub fn clear(&self) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Every fault with its state, for `GET /meshsim/faults`: how often it fired, and `ended` once its
    /// `for_ms` window is over.
    pub fn list(&self) -> Vec<Value> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|f| {
                let mut v = serde_json::to_value(&f.spec).unwrap_or(Value::Null);
                v["fired"] = f.fired.into();
                if f.window_ended() {
                    v["ended"] = true.into();
                }
                v
            })
            .collect()
    }

    /// Active faults of `kind` that apply to `namespace` (a fault without namespace applies everywhere),
    /// with triggers evaluated against `labels`. Each returned fault counts as fired once.
    pub fn active(&self, labels: &dyn NsLabels, kind: FaultKind, namespace: Option<&str>) -> Vec<FaultSpec> {
        self.matching(labels, kind, namespace, |_| true)
    }

    /// Like [`Faults::active`] with an extra filter; count-limited faults are consumed only when they
    /// match (and are dropped from the answer once spent), and `rate` is rolled here.
    pub fn matching(
        &self,
        labels: &dyn NsLabels,
        kind: FaultKind,
        namespace: Option<&str>,
        filter: impl Fn(&FaultSpec) -> bool,
    ) -> Vec<FaultSpec> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for f in inner.iter_mut().filter(|f| f.spec.kind == kind) {
            if !f.spec.applies_to_ns(namespace) || !filter(&f.spec) || f.window_ended() {
                continue;
            }
            if let Some(t) = &f.spec.trigger {
                let holds = t.holds(labels.ns_labels(&t.namespace).as_ref());
                if holds && f.spec.latch {
                    f.latched = true;
                }
                if !holds && !f.latched {
                    continue;
                }
            }
            if let Some(max) = f.spec.count
                && f.fired >= max
            {
                continue;
            }
            if let Some(rate) = f.spec.rate
                && rand::random::<f64>() >= rate
            {
                continue;
            }
            f.fired += 1;
            out.push(f.spec.clone());
        }
        out
    }

    /// Whether any fault of `kind` is active for `namespace` (does not roll rates or consume counts).
    pub fn is_active(&self, labels: &dyn NsLabels, kind: FaultKind, namespace: Option<&str>) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .iter_mut()
            .filter(|f| f.spec.kind == kind && f.spec.applies_to_ns(namespace) && !f.window_ended())
            .any(|f| match &f.spec.trigger {
                None => true,
                Some(t) => {
                    let holds = t.holds(labels.ns_labels(&t.namespace).as_ref());
                    if holds && f.spec.latch {
                        f.latched = true;
                    }
                    holds || f.latched
                }
            })
    }

    /// Counts of fired faults by kind (for reports and tests).
    pub fn fired(&self) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        for f in self.inner.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let k = serde_json::to_value(f.spec.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            *out.entry(k).or_insert(0) += f.fired;
        }
        out
    }
}

/// Parses a YAML/JSON list of faults, or an object with a `faults` list.
pub fn parse_specs(text: &str) -> Result<Vec<FaultSpec>, String> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum File {
        List(Vec<FaultSpec>),
        Wrapped { faults: Vec<FaultSpec> },
    }
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let specs = match serde_saphyr::from_str::<File>(text).map_err(|e| e.to_string())? {
        File::List(l) => l,
        File::Wrapped { faults } => faults,
    };
    for s in &specs {
        s.validate()?;
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Labels(Value);
    impl NsLabels for Labels {
        fn ns_labels(&self, _ns: &str) -> Option<Value> {
            Some(self.0.clone())
        }
    }

    #[test]
    fn parses_file_and_applies_triggers_and_counts() {
        let specs = parse_specs(
            "- kind: api-error\n  verb: patch\n  resource: namespaces\n  code: 500\n  count: 1\n- kind: cni-pending\n  namespace: shop\n  trigger: {namespace: shop, label: istio.io/dataplane-mode=ambient}\n",
        )
        .unwrap();
        let faults = Faults::new(specs);
        let plain = Labels(json!({}));
        let ambient = Labels(json!({"istio.io/dataplane-mode": "ambient"}));
        assert!(!faults.is_active(&plain, FaultKind::CniPending, Some("shop")));
        assert!(faults.is_active(&ambient, FaultKind::CniPending, Some("shop")));
        assert!(!faults.is_active(&ambient, FaultKind::CniPending, Some("other")));
        assert_eq!(faults.active(&plain, FaultKind::ApiError, None).len(), 1);
        assert_eq!(
            faults.active(&plain, FaultKind::ApiError, None).len(),
            0,
            "count 1 is spent"
        );
    }

    #[test]
    fn latch_keeps_fault_on() {
        let mut spec = FaultSpec::new(FaultKind::ZtunnelDown, None);
        spec.trigger = Some(Trigger {
            namespace: "a".into(),
            label: "x=y".into(),
        });
        spec.latch = true;
        let faults = Faults::new(vec![spec]);
        assert!(!faults.is_active(&Labels(json!({})), FaultKind::ZtunnelDown, None));
        assert!(faults.is_active(&Labels(json!({"x": "y"})), FaultKind::ZtunnelDown, None));
        assert!(faults.is_active(&Labels(json!({})), FaultKind::ZtunnelDown, None));
    }

    #[test]
    fn a_window_ends_the_fault() {
        let mut brownout = FaultSpec::new(FaultKind::ApiError, None);
        brownout.for_ms = Some(150);
        let faults = Faults::new(vec![brownout]);
        let plain = Labels(json!({}));
        assert_eq!(faults.active(&plain, FaultKind::ApiError, Some("shop")).len(), 1);
        assert_eq!(
            faults.active(&plain, FaultKind::ApiError, None).len(),
            1,
            "every request"
        );
        assert!(faults.is_active(&plain, FaultKind::ApiError, None));
        assert!(faults.list()[0].get("ended").is_none());
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            faults
                .active(&plain, FaultKind::ApiError, Some("shop"))
                .is_empty()
        );
        assert!(!faults.is_active(&plain, FaultKind::ApiError, None));
        assert_eq!(faults.list()[0]["ended"], true);
        let spec = parse_specs("- kind: api-error\n  for_ms: 20000\n").unwrap();
        assert_eq!(spec[0].for_ms, Some(20_000));
    }

    #[test]
    fn invalid_specs_are_rejected() {
        assert!(parse_specs("- kind: service-errors\n").is_err());
        assert!(parse_specs("- kind: nope\n").is_err());
        assert!(parse_specs("- kind: api-error\n  rate: 2\n").is_err());
    }
}
