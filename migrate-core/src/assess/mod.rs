//! Pure assessment: a cluster [`Snapshot`] of one namespace (plus cluster-wide bits) -> findings (blockers,
//! warnings) and a [`plan::NamespacePlan`]. No I/O: the main crate's `cluster` module fills the snapshot.
//!
//! Representation choice: core kinds are k8s-openapi 0.29 (`latest`) types; Istio, Gateway API and
//! Prometheus-operator objects are [`objects::Obj`]s: converted once, where the snapshot is built, into typed
//! metadata and spec (k8s-openapi has no types for them), with the object as served kept beside them (a
//! `DynamicObject` converts to `Value` losslessly) for backups and for the snapshot's serde form, which is
//! unchanged: each object serializes as served.

pub mod enforcement;
pub mod injection;
pub mod install;
pub mod objects;
pub mod permissions;
pub mod plan;
pub mod policy;
pub mod preflight;
pub mod routes;
pub mod routing_equiv;
pub mod sidecar_only;

use crate::steps::ObjRef;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use objects::Obj;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything the assessment reads for one namespace, plus the cluster-wide facts it needs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The namespace object (labels matter: injection, dataplane-mode, use-waypoint).
    pub namespace: Namespace,
    /// Services of the namespace.
    #[serde(default)]
    pub services: Vec<Service>,
    /// Deployments of the namespace (including waypoint Deployments, which the plan skips).
    #[serde(default)]
    pub deployments: Vec<Deployment>,
    /// StatefulSets of the namespace.
    #[serde(default)]
    pub statefulsets: Vec<StatefulSet>,
    /// DaemonSets of the namespace.
    #[serde(default)]
    pub daemonsets: Vec<DaemonSet>,
    /// ReplicaSets of the namespace (to find a Deployment's current pods and bare ReplicaSets).
    #[serde(default)]
    pub replicasets: Vec<ReplicaSet>,
    /// Pods of the namespace.
    #[serde(default)]
    pub pods: Vec<Pod>,
    /// Names of Jobs (their pods are not restarted; they pick up the new mode on their next run).
    #[serde(default)]
    pub jobs: Vec<String>,
    /// Names of CronJobs.
    #[serde(default)]
    pub cronjobs: Vec<String>,
    /// security.istio.io AuthorizationPolicy objects.
    #[serde(default)]
    pub authorization_policies: Vec<Obj<policy::AuthzPolicy>>,
    /// security.istio.io PeerAuthentication objects.
    #[serde(default)]
    pub peer_authentications: Vec<Obj<objects::PeerAuthentication>>,
    /// security.istio.io RequestAuthentication objects.
    #[serde(default)]
    pub request_authentications: Vec<Obj<objects::RequestAuthentication>>,
    /// networking.istio.io VirtualService objects.
    #[serde(default)]
    pub virtual_services: Vec<Obj<objects::VirtualService>>,
    /// networking.istio.io DestinationRule objects.
    #[serde(default)]
    pub destination_rules: Vec<Obj<objects::DestinationRule>>,
    /// networking.istio.io Sidecar objects.
    #[serde(default)]
    pub sidecars: Vec<Obj<objects::Sidecar>>,
    /// networking.istio.io ServiceEntry objects.
    #[serde(default)]
    pub service_entries: Vec<Obj<objects::ServiceEntry>>,
    /// networking.istio.io EnvoyFilter objects.
    #[serde(default)]
    pub envoy_filters: Vec<Obj<objects::EnvoyFilter>>,
    /// telemetry.istio.io Telemetry objects.
    #[serde(default)]
    pub telemetries: Vec<Obj<objects::Telemetry>>,
    /// extensions.istio.io WasmPlugin objects (sidecar-only when workload-scoped).
    #[serde(default)]
    pub wasm_plugins: Vec<Obj<objects::WasmPlugin>>,
    /// networking.istio.io ProxyConfig objects (sidecar-only when they select workloads).
    #[serde(default)]
    pub proxy_configs: Vec<Obj<objects::ProxyConfig>>,
    /// gateway.networking.k8s.io HTTPRoute objects.
    #[serde(default)]
    pub http_routes: Vec<Obj<objects::HttpRoute>>,
    /// gateway.networking.k8s.io Gateway objects (waypoints have `gatewayClassName: istio-waypoint`).
    #[serde(default)]
    pub gateways: Vec<Obj<objects::Gateway>>,
    /// monitoring.coreos.com PodMonitor objects (empty when the CRD is absent).
    #[serde(default)]
    pub pod_monitors: Vec<Obj<objects::Monitor>>,
    /// monitoring.coreos.com ServiceMonitor objects.
    #[serde(default)]
    pub service_monitors: Vec<Obj<objects::Monitor>>,
    /// Cluster-wide facts.
    #[serde(default)]
    pub cluster: ClusterInfo,
}

/// Cluster-wide facts read once per run and shared by every namespace's snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterInfo {
    /// Istio system namespace (where ztunnel and istio-cni run), default `istio-system`.
    pub system_namespace: String,
    /// Istio root namespace (mesh-wide policies), default `istio-system`.
    pub root_namespace: String,
    /// The ztunnel DaemonSet (`None` = not found).
    pub ztunnel: Option<DaemonSet>,
    /// The istio-cni DaemonSet `istio-cni-node` (`None` = not found).
    pub istio_cni: Option<DaemonSet>,
    /// AuthorizationPolicies in the root namespace (mesh-wide).
    pub root_authorization_policies: Vec<Obj<policy::AuthzPolicy>>,
    /// PeerAuthentications in the root namespace (mesh-wide).
    pub root_peer_authentications: Vec<Obj<objects::PeerAuthentication>>,
    /// Mesh trust domain, default `cluster.local`.
    pub trust_domain: String,
    /// Revisions with an injector webhook (`istio-sidecar-injector` = `default`, `istio-sidecar-injector-<rev>`).
    pub revisions: Vec<String>,
    /// Revision tags: tag -> revision (from `istio-revision-tag-<tag>` webhooks, labels `istio.io/tag`,
    /// `istio.io/rev`).
    pub tags: BTreeMap<String, String>,
    /// `sidecarInjectorWebhook.enableNamespacesByDefault`.
    pub enable_namespaces_by_default: bool,
    /// Labels of every other namespace (for the caller graph: sidecar vs ambient callers). Shared: every
    /// snapshot of a run reads the same fleet's labels, and a copy per snapshot made the memory of a fleet
    /// run grow with the square of its size.
    pub namespace_labels: std::sync::Arc<BTreeMap<String, BTreeMap<String, String>>>,
    /// The mesh config's `outboundTrafficPolicy.mode` (`ALLOW_ANY`, `REGISTRY_ONLY`; `None` = unset, which
    /// Istio treats as `ALLOW_ANY`): sidecars enforce it, ztunnel does not.
    #[serde(default)]
    pub outbound_traffic_policy: Option<String>,
    /// Install-phase facts (Gateway API CRDs, waypoint class, ztunnel per node, istio-cni, istiod's
    /// version); `None` when not read, which skips the install checks.
    #[serde(default)]
    pub install: Option<install::InstallFacts>,
}

impl Default for ClusterInfo {
    fn default() -> Self {
        ClusterInfo {
            system_namespace: "istio-system".into(),
            root_namespace: "istio-system".into(),
            ztunnel: None,
            istio_cni: None,
            root_authorization_policies: Vec::new(),
            root_peer_authentications: Vec::new(),
            trust_domain: "cluster.local".into(),
            revisions: vec!["default".into()],
            tags: BTreeMap::new(),
            enable_namespaces_by_default: false,
            namespace_labels: Default::default(),
            outbound_traffic_policy: None,
            install: None,
        }
    }
}

impl Snapshot {
    /// The namespace name.
    pub fn ns(&self) -> &str {
        self.namespace.metadata.name.as_deref().unwrap_or("")
    }

    /// The namespace labels (empty map when none).
    pub fn ns_labels(&self) -> BTreeMap<String, String> {
        self.namespace.metadata.labels.clone().unwrap_or_default()
    }
}

/// Finding severity: blockers stop the run for this namespace (exit code 4), warnings are reported, infos are
/// notes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Refuse to migrate the namespace.
    Blocker,
    /// Migrate, but a human should look.
    Warning,
    /// For the record.
    Info,
}

/// One preflight finding: what, on which object, and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Severity.
    pub severity: Severity,
    /// Stable kebab-case code (see `preflight::codes`).
    pub code: String,
    /// The object concerned.
    pub object: ObjRef,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub fix: String,
    /// Generated YAML that fixes it, when we can generate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix_yaml: Option<String>,
}

impl Finding {
    /// A finding without fix YAML.
    pub fn new(
        severity: Severity,
        code: &str,
        object: ObjRef,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            severity,
            code: code.into(),
            object,
            message: message.into(),
            fix: fix.into(),
            fix_yaml: None,
        }
    }

    /// The same finding with fix YAML.
    pub fn with_yaml(mut self, yaml: impl Into<String>) -> Self {
        self.fix_yaml = Some(yaml.into());
        self
    }
}

/// Helpers over JSON objects shared by the assess modules.
pub(crate) mod json {
    use serde_json::Value;
    use std::collections::BTreeMap;

    /// `metadata.name`.
    pub fn name(v: &Value) -> &str {
        v.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
    }

    /// `metadata.namespace`.
    pub fn namespace(v: &Value) -> &str {
        v.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// A string-to-string map at `pointer` (labels, matchLabels).
    pub fn str_map(v: &Value, pointer: &str) -> BTreeMap<String, String> {
        v.pointer(pointer)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, x)| Some((k.clone(), x.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A list of strings at `pointer`.
    pub fn str_list(v: &Value, pointer: &str) -> Vec<String> {
        v.pointer(pointer)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }
}

/// Does the label map `labels` satisfy every `selector` entry (a `matchLabels`-style equality selector)?
pub fn labels_match(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn snapshot_deserializes_with_defaults() {
        let s: Snapshot = serde_json::from_value(json!({
            "namespace": {"metadata": {"name": "app", "labels": {"istio-injection": "enabled"}}},
            "authorizationPolicies": [{"metadata": {"name": "p"}}]
        }))
        .unwrap();
        assert_eq!(s.ns(), "app");
        assert_eq!(s.ns_labels()["istio-injection"], "enabled");
        assert_eq!(s.cluster.trust_domain, "cluster.local");
        assert_eq!(s.cluster.system_namespace, "istio-system");
        assert_eq!(s.authorization_policies.len(), 1);
        assert!(s.pods.is_empty());
    }

    #[test]
    fn finding_serde() {
        let f =
            Finding::new(Severity::Blocker, "x-y", ObjRef::namespace("app"), "m", "f").with_yaml("a: b\n");
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["severity"], "blocker");
        assert_eq!(v["fixYaml"], "a: b\n");
        assert!(Severity::Blocker < Severity::Warning);
    }

    #[test]
    fn label_selector_subset() {
        let sel: BTreeMap<String, String> = [("app".to_string(), "api".to_string())].into();
        let mut l = sel.clone();
        l.insert("version".into(), "v1".into());
        assert!(labels_match(&sel, &l));
        assert!(!labels_match(&l, &sel));
        assert!(labels_match(&BTreeMap::new(), &sel));
    }
}
