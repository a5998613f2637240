//! meshsim's own settings (not Kubernetes objects): nodes and their kubelet versions, the Istio install
//! (revisions, tags, native sidecars, metrics merging), and every latency. Read from a YAML file with
//! defaults for everything; tests use small latencies, the demo somewhat larger ones.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Top-level settings file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub nodes: Vec<NodeSettings>,
    pub istio: IstioSettings,
    pub latency: Latencies,
    /// Watch events kept for resumption; older resourceVersions get 410 Gone.
    pub watch_history: usize,
    /// Interval of BOOKMARK events on watches that ask for them.
    pub bookmark_interval_ms: u64,
    /// DNS names outside the cluster that resolve and answer (an echo server): the destinations of egress
    /// requests (`traffic::egress`). Empty: every non-Service host fails DNS.
    pub external_hosts: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            nodes: vec![
                NodeSettings {
                    name: "node-1".into(),
                    kubelet_version: "v1.32.4".into(),
                },
                NodeSettings {
                    name: "node-2".into(),
                    kubelet_version: "v1.33.2".into(),
                },
            ],
            istio: IstioSettings::default(),
            latency: Latencies::default(),
            watch_history: 50_000,
            bookmark_interval_ms: 1_000,
            external_hosts: Vec::new(),
        }
    }
}

/// One simulated node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    pub name: String,
    /// `status.nodeInfo.kubeletVersion`; decides native sidecars under `native_sidecars: auto` (>= 1.33).
    pub kubelet_version: String,
}

/// How Istio is installed in the simulated cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IstioSettings {
    /// Istio's system namespace (ztunnel, istio-cni, istiod live here).
    pub system_namespace: String,
    /// Installed control-plane revisions. `default` serves `istio-injection=enabled`.
    pub revisions: Vec<String>,
    /// Revision tags: tag name -> revision (`istio-revision-tag-<tag>` webhooks).
    pub tags: BTreeMap<String, String>,
    /// `ENABLE_NATIVE_SIDECARS`: `auto` (default since 1.27: native when the node kubelet is >= 1.33),
    /// `true` or `false`.
    pub native_sidecars: NativeSidecars,
    /// `meshConfig.enablePrometheusMerge` (default on): the injector rewrites `prometheus.io/*` annotations.
    pub prometheus_merge: bool,
    /// `ISTIO_META_ENABLE_HBONE` (ambient profile): sidecar pods get `networking.istio.io/tunnel=http`.
    pub hbone: bool,
    /// `sidecarInjectorWebhook.enableNamespacesByDefault`.
    pub enable_namespaces_by_default: bool,
    /// Create the Istio system objects (istiod, ztunnel and istio-cni DaemonSets, webhooks) at start.
    pub install: bool,
    /// Trust domain used in SPIFFE identities (`cluster.local/ns/<ns>/sa/<sa>`).
    pub trust_domain: String,
    /// `meshConfig.outboundTrafficPolicy.mode` written to the mesh ConfigMap (`ALLOW_ANY`,
    /// `REGISTRY_ONLY`); `None` leaves it unset (Istio's default, ALLOW_ANY).
    pub outbound_traffic_policy: Option<String>,
}

impl Default for IstioSettings {
    fn default() -> Self {
        IstioSettings {
            system_namespace: "istio-system".into(),
            revisions: vec!["default".into()],
            tags: BTreeMap::new(),
            native_sidecars: NativeSidecars::Auto,
            prometheus_merge: true,
            hbone: true,
            enable_namespaces_by_default: false,
            install: true,
            trust_domain: "cluster.local".into(),
            outbound_traffic_policy: None,
        }
    }
}

/// `ENABLE_NATIVE_SIDECARS` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NativeSidecars {
    Auto,
    True,
    False,
}

/// Every delay the simulation applies, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Latencies {
    /// Controller loop period when nothing changes (controllers also wake on every store write).
    pub controller_tick_ms: u64,
    /// Pod created -> scheduled and Running (containers started).
    pub pod_start_ms: u64,
    /// Running -> Ready (readiness probe passes).
    pub pod_ready_ms: u64,
    /// Deletion requested -> pod gone (graceful termination).
    pub pod_terminate_ms: u64,
    /// Pod Running in an ambient namespace -> `ambient.istio.io/redirection=enabled`.
    pub cni_enroll_ms: u64,
    /// Waypoint Deployment ready -> Gateway `Programmed` and `status.addresses`.
    pub waypoint_program_ms: u64,
    /// curl Job pod Running -> Job complete.
    pub job_run_ms: u64,
    /// Extra delay on every API request (on top of `api-latency` faults).
    pub api_ms: u64,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            controller_tick_ms: 20,
            pod_start_ms: 60,
            pod_ready_ms: 60,
            pod_terminate_ms: 40,
            cni_enroll_ms: 20,
            waypoint_program_ms: 50,
            job_run_ms: 30,
            api_ms: 0,
        }
    }
}

impl Latencies {
    pub fn d(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }
}

impl Settings {
    /// Reads a settings file (YAML or JSON); absent fields take defaults, unknown ones are an error.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read settings file {}: {e}", path.display()))?;
        serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("settings file {}: {e}", path.display()))
    }

    /// Kubelet version of a node, if the node exists.
    pub fn kubelet_version(&self, node: &str) -> Option<&str> {
        self.nodes
            .iter()
            .find(|n| n.name == node)
            .map(|n| n.kubelet_version.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_file_takes_defaults_and_unknown_keys_fail() {
        let s: Settings = serde_saphyr::from_str("latency:\n  pod_start_ms: 5\n").unwrap();
        assert_eq!(s.latency.pod_start_ms, 5);
        assert_eq!(s.latency.pod_ready_ms, Latencies::default().pod_ready_ms);
        assert_eq!(s.istio.system_namespace, "istio-system");
        assert!(serde_saphyr::from_str::<Settings>("latncy: {}\n").is_err());
    }
}
