//! Install-phase checks: what Istio's migration guide asks to be in place before any namespace moves
//! ("Install ambient components", istio.io `docs/ambient/migrate/`): the Gateway API CRDs, the
//! `istio-waypoint` GatewayClass, ztunnel on every node that runs the namespace's pods, istio-cni with
//! ambient enabled, and a control plane whose version supports ambient, with the behaviours that differ
//! by version in one table ([`behaviours`]).
//!
//! The facts are read once per run by the executor (`cluster::snapshot`) into [`InstallFacts`]; `None`
//! (not read) skips every check here.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Finding, Severity, Snapshot};
use crate::steps::ObjRef;

/// Finding codes of this module.
pub mod codes {
    /// A Gateway API CRD the waypoint needs is missing or does not serve `v1`.
    pub const GATEWAY_API_CRDS: &str = "gateway-api-crds";
    /// The `istio-waypoint` GatewayClass does not exist.
    pub const WAYPOINT_CLASS_MISSING: &str = "waypoint-class-missing";
    /// A node runs the namespace's pods without a ready ztunnel pod.
    pub const ZTUNNEL_MISSING_ON_NODE: &str = "ztunnel-missing-on-node";
    /// istio-cni runs without ambient enabled.
    pub const CNI_AMBIENT_DISABLED: &str = "istio-cni-ambient-disabled";
    /// istiod's version does not support ambient, or could not be read.
    pub const ISTIO_VERSION: &str = "istio-version";
}

/// The Gateway API CRDs a waypoint needs: its Gateway, and the HTTPRoutes that route through it.
pub const GATEWAY_API_CRDS: [&str; 2] = [
    "gateways.gateway.networking.k8s.io",
    "httproutes.gateway.networking.k8s.io",
];

/// The GatewayClass of waypoints, which istiod creates at start when the Gateway API CRDs exist
/// (istio/istio `pilot/pkg/config/kube/gateway/gatewayclass.go`, `Classes`; the name is
/// `constants.WaypointGatewayClassName`).
pub const WAYPOINT_CLASS: &str = "istio-waypoint";

/// One Gateway API CRD as read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayCrd {
    /// `spec.versions[].name` with `served: true`.
    pub served: Vec<String>,
    /// The `gateway.networking.k8s.io/bundle-version` annotation every Gateway API CRD carries
    /// (gateway-api `site-src/guides/implementers.md`, "CRD definitions ... contain two specific annotations").
    pub bundle_version: Option<String>,
}

/// The cluster-wide install facts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallFacts {
    /// By CRD name ([`GATEWAY_API_CRDS`]): `None` when it does not exist.
    pub gateway_crds: BTreeMap<String, Option<GatewayCrd>>,
    /// Whether the [`WAYPOINT_CLASS`] GatewayClass exists.
    pub waypoint_class: bool,
    /// Nodes with a ztunnel pod, and whether that pod is Ready.
    pub ztunnel_nodes: BTreeMap<String, bool>,
    /// `AMBIENT_ENABLED` of the ConfigMap `istio-cni-config` (istio/istio
    /// `manifests/charts/istio-cni/templates/configmap-cni.yaml`, from the chart value `ambient.enabled`);
    /// `None` when the ConfigMap or key is absent.
    pub cni_ambient_enabled: Option<bool>,
    /// istiod's version, from its container image tag (`docker.io/istio/pilot:1.26.2`); `None` when it
    /// could not be read (no istiod Deployment, or a digest-only image).
    pub istiod_version: Option<String>,
}

/// A parsed `major.minor.patch` (pre-release suffixes ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    /// `1.26.2`, `1.26.2-distroless`, `v1.26`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim().trim_start_matches('v');
        let core = s.split(['-', '+', '_']).next()?;
        let mut it = core.split('.').map(str::parse::<u32>);
        let major = it.next()?.ok()?;
        let minor = it.next()?.ok()?;
        let patch = it.next().and_then(Result::ok).unwrap_or(0);
        Some(Version { major, minor, patch })
    }

    const fn at(major: u32, minor: u32) -> Version {
        Version {
            major,
            minor,
            patch: 0,
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The image tag of an image reference (`repo/pilot:1.26.2` -> `1.26.2`; none for `repo@sha256:...`).
pub fn image_tag(image: &str) -> Option<&str> {
    let name = image.split('@').next()?;
    let last = name.rsplit('/').next()?;
    last.split_once(':').map(|(_, t)| t)
}

/// What the migration relies on that differs by Istio version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Behaviours {
    /// ztunnel, waypoints and their APIs are Stable (GA in 1.24: istio.io blog "ambient-reaches-ga",
    /// 2024-11-07). Before it, ambient is beta and the migration is refused.
    pub ambient_stable: bool,
    /// istiod writes AuthorizationPolicy status conditions about waypoint and ztunnel attachment
    /// (`WaypointAccepted`, `ZtunnelAccepted`): added in 1.24 (1.24.0 change notes, "status conditions for
    /// binding AuthorizationPolicy to waypoint proxies", istio/istio#52699; condition names from istio/istio
    /// `pilot/pkg/model` `ConditionType`). Earlier, their absence proves nothing.
    pub policy_status_conditions: bool,
    /// Services report `istio.io/WaypointBound` (same `ConditionType` list; reported from 1.24 on by this
    /// table, the earliest line read).
    pub waypoint_bound_condition: bool,
    /// Sidecar callers are routed through the destination's waypoint. No release does this: sidecars
    /// bypass waypoints (istio.io `docs/ambient/migrate/`, "Mixed mode"; the opt-in
    /// `istio.io/sidecar-use-waypoint` of istio/istio#57729 was closed unmerged), so a caller must leave its
    /// sidecar before its callee's L7 policy moves to the waypoint: callers-first ordering stays necessary.
    pub sidecar_callers_use_waypoint: bool,
    /// Native sidecars (`ENABLE_NATIVE_SIDECARS=auto`) by default: 1.27 (istio/istio#56918); a rollback's
    /// sidecar is then an init container.
    pub native_sidecars_default: bool,
}

/// The behaviours of an Istio version (one table: each row cites where it comes from).
pub fn behaviours(v: Version) -> Behaviours {
    Behaviours {
        ambient_stable: v >= Version::at(1, 24),
        policy_status_conditions: v >= Version::at(1, 24),
        waypoint_bound_condition: v >= Version::at(1, 24),
        sidecar_callers_use_waypoint: false,
        native_sidecars_default: v >= Version::at(1, 27),
    }
}

/// The nodes the namespace's pods run on (`spec.nodeName` of scheduled pods).
fn pod_nodes(s: &Snapshot) -> BTreeSet<String> {
    s.pods
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect()
}

/// The install-phase findings of one namespace; `needs_waypoint` when its migration uses a waypoint (the
/// Gateway API and the waypoint class are then required, otherwise only noted).
pub fn findings(s: &Snapshot, needs_waypoint: bool) -> Vec<Finding> {
    let Some(f) = &s.cluster.install else {
        return Vec::new();
    };
    let sys = s.cluster.system_namespace.as_str();
    let ns = s.ns();
    let mut out = Vec::new();
    let waypoint_severity = if needs_waypoint {
        Severity::Blocker
    } else {
        Severity::Info
    };
    for name in GATEWAY_API_CRDS {
        let crd_ref = ObjRef::new("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", name);
        let problem = match f.gateway_crds.get(name) {
            None | Some(None) => Some("is not installed".to_string()),
            Some(Some(c)) if !c.served.iter().any(|v| v == "v1") => Some(format!(
                "does not serve v1 (serves {}; bundle {})",
                c.served.join(", "),
                c.bundle_version.as_deref().unwrap_or("unknown")
            )),
            Some(Some(_)) => None,
        };
        if let Some(why) = problem {
            out.push(Finding::new(
                waypoint_severity,
                codes::GATEWAY_API_CRDS,
                crd_ref,
                format!("Gateway API CRD {name} {why}: waypoints are Gateway API Gateways"),
                "install the standard Gateway API CRDs (kubectl apply -f https://github.com/kubernetes-sigs/gateway-api/releases/download/<version>/standard-install.yaml, a version your Istio release supports), then restart istiod so it creates the istio-waypoint GatewayClass",
            ));
        }
    }
    if !f.waypoint_class {
        out.push(Finding::new(
            waypoint_severity,
            codes::WAYPOINT_CLASS_MISSING,
            ObjRef::new("gateway.networking.k8s.io/v1", "GatewayClass", "", WAYPOINT_CLASS),
            format!("GatewayClass {WAYPOINT_CLASS} does not exist: no waypoint Gateway of {ns} can be programmed"),
            "istiod creates it at start when the Gateway API CRDs exist: install the CRDs, then restart istiod (kubectl rollout restart deployment/istiod -n istio-system)",
        ));
    }
    let missing: Vec<String> = pod_nodes(s)
        .into_iter()
        .filter(|n| f.ztunnel_nodes.get(n) != Some(&true))
        .map(|n| match f.ztunnel_nodes.get(&n) {
            Some(false) => format!("{n} (ztunnel not Ready)"),
            _ => format!("{n} (no ztunnel pod)"),
        })
        .collect();
    if !missing.is_empty() {
        out.push(Finding::new(
            Severity::Blocker,
            codes::ZTUNNEL_MISSING_ON_NODE,
            ObjRef::new("apps/v1", "DaemonSet", sys, "ztunnel"),
            format!(
                "pods of {ns} run on nodes without a ready ztunnel: {}; ambient pods there would get no traffic",
                missing.join(", ")
            ),
            "make the ztunnel DaemonSet schedule on those nodes (its nodeSelector and tolerations must cover every node that runs mesh pods) and wait for it to be Ready",
        ));
    }
    if f.cni_ambient_enabled == Some(false) {
        out.push(Finding::new(
            Severity::Blocker,
            codes::CNI_AMBIENT_DISABLED,
            ObjRef::new("v1", "ConfigMap", sys, "istio-cni-config"),
            "istio-cni runs with AMBIENT_ENABLED=false: it would not redirect ambient pods to ztunnel",
            "upgrade istio-cni with ambient enabled (Helm: --set ambient.enabled=true on the cni chart; istioctl: --set profile=ambient), and wait for the DaemonSet to roll out",
        ));
    }
    let istiod_ref = ObjRef::new("apps/v1", "Deployment", sys, "istiod");
    match f.istiod_version.as_deref().map(|t| (t, Version::parse(t))) {
        None | Some((_, None)) => out.push(Finding::new(
            Severity::Warning,
            codes::ISTIO_VERSION,
            istiod_ref,
            format!(
                "istiod's version could not be read ({}): version-dependent behaviours are assumed from the oldest supported release",
                f.istiod_version.as_deref().unwrap_or("no istiod Deployment or image tag")
            ),
            "run istiod from a tagged image (docker.io/istio/pilot:<version>)",
        )),
        Some((_, Some(v))) if !behaviours(v).ambient_stable => out.push(Finding::new(
            Severity::Blocker,
            codes::ISTIO_VERSION,
            istiod_ref,
            format!("istiod {v} predates ambient's stable release (1.24)"),
            "upgrade Istio to a supported release (1.24 or later) before migrating",
        )),
        Some((_, Some(v))) => {
            let b = behaviours(v);
            out.push(Finding::new(
                Severity::Info,
                codes::ISTIO_VERSION,
                istiod_ref,
                format!(
                    "istiod {v}: sidecar callers {} routed through waypoints{}; policy status conditions {}; native sidecars by default: {}",
                    if b.sidecar_callers_use_waypoint { "are" } else { "are not" },
                    if b.sidecar_callers_use_waypoint { "" } else { " (callers-first order needed for L7 policies)" },
                    if b.policy_status_conditions { "reported (ZtunnelAccepted, WaypointAccepted, istio.io/WaypointBound)" } else { "not reported" },
                    if b.native_sidecars_default { "yes" } else { "no" },
                ),
                "none",
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assess::ClusterInfo;

    fn snapshot(facts: Option<InstallFacts>, nodes: &[&str]) -> Snapshot {
        let pods: Vec<serde_json::Value> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| serde_json::json!({"metadata": {"name": format!("p{i}"), "namespace": "shop"}, "spec": {"nodeName": n, "containers": []}}))
            .collect();
        let mut s: Snapshot = serde_json::from_value(
            serde_json::json!({"namespace": {"metadata": {"name": "shop"}}, "pods": pods}),
        )
        .unwrap();
        s.cluster = ClusterInfo {
            install: facts,
            ..Default::default()
        };
        s
    }

    fn healthy() -> InstallFacts {
        let crd = GatewayCrd {
            served: vec!["v1".into(), "v1beta1".into()],
            bundle_version: Some("v1.4.0".into()),
        };
        InstallFacts {
            gateway_crds: GATEWAY_API_CRDS
                .iter()
                .map(|n| (n.to_string(), Some(crd.clone())))
                .collect(),
            waypoint_class: true,
            ztunnel_nodes: [("node-1".to_string(), true), ("node-2".to_string(), true)].into(),
            cni_ambient_enabled: Some(true),
            istiod_version: Some("1.26.2".into()),
        }
    }

    fn codes_of(f: &[Finding], sev: Severity) -> Vec<&str> {
        f.iter()
            .filter(|f| f.severity == sev)
            .map(|f| f.code.as_str())
            .collect()
    }

    #[test]
    fn a_complete_install_only_records_the_version_behaviours() {
        let f = findings(&snapshot(Some(healthy()), &["node-1", "node-2"]), true);
        assert!(codes_of(&f, Severity::Blocker).is_empty(), "{f:#?}");
        let info = f.iter().find(|f| f.code == codes::ISTIO_VERSION).unwrap();
        assert!(
            info.message.contains("istiod 1.26.2") && info.message.contains("callers-first"),
            "{info:?}"
        );
        assert!(
            findings(&snapshot(None, &["node-9"]), true).is_empty(),
            "facts not read: no check"
        );
    }

    #[test]
    fn each_missing_component_is_a_blocker_naming_its_fix() {
        let mut facts = healthy();
        facts.gateway_crds.insert(GATEWAY_API_CRDS[1].into(), None);
        facts.waypoint_class = false;
        facts.ztunnel_nodes.insert("node-2".into(), false);
        facts.cni_ambient_enabled = Some(false);
        facts.istiod_version = Some("1.23.4".into());
        let f = findings(&snapshot(Some(facts), &["node-1", "node-2", "node-3"]), true);
        assert_eq!(
            codes_of(&f, Severity::Blocker),
            [
                codes::GATEWAY_API_CRDS,
                codes::WAYPOINT_CLASS_MISSING,
                codes::ZTUNNEL_MISSING_ON_NODE,
                codes::CNI_AMBIENT_DISABLED,
                codes::ISTIO_VERSION
            ]
        );
        let zt = f
            .iter()
            .find(|f| f.code == codes::ZTUNNEL_MISSING_ON_NODE)
            .unwrap();
        assert!(
            zt.message.contains("node-2 (ztunnel not Ready)")
                && zt.message.contains("node-3 (no ztunnel pod)"),
            "{zt:?}"
        );
        assert!(!zt.message.contains("node-1"), "{zt:?}");
        assert!(f.iter().all(|f| !f.fix.is_empty()));
    }

    #[test]
    fn gateway_api_is_only_noted_when_no_waypoint_is_used() {
        let mut facts = healthy();
        facts.gateway_crds.clear();
        facts.waypoint_class = false;
        let f = findings(&snapshot(Some(facts), &["node-1"]), false);
        assert!(codes_of(&f, Severity::Blocker).is_empty(), "{f:#?}");
        assert_eq!(
            codes_of(&f, Severity::Info).len(),
            4,
            "two CRDs, the class, the version: {f:#?}"
        );
    }

    #[test]
    fn crds_without_v1_and_unreadable_versions() {
        let mut facts = healthy();
        facts.gateway_crds.insert(
            GATEWAY_API_CRDS[0].into(),
            Some(GatewayCrd {
                served: vec!["v1beta1".into()],
                bundle_version: Some("v0.8.0".into()),
            }),
        );
        facts.istiod_version = None;
        let f = findings(&snapshot(Some(facts), &[]), true);
        let crd = f.iter().find(|f| f.code == codes::GATEWAY_API_CRDS).unwrap();
        assert!(
            crd.message.contains("does not serve v1") && crd.message.contains("v0.8.0"),
            "{crd:?}"
        );
        assert_eq!(codes_of(&f, Severity::Warning), [codes::ISTIO_VERSION]);
    }

    #[test]
    fn versions_and_the_behaviour_table() {
        assert_eq!(
            Version::parse("1.26.2-distroless"),
            Some(Version {
                major: 1,
                minor: 26,
                patch: 2
            })
        );
        assert_eq!(
            Version::parse("v1.24"),
            Some(Version {
                major: 1,
                minor: 24,
                patch: 0
            })
        );
        assert_eq!(Version::parse("latest"), None);
        assert_eq!(image_tag("docker.io/istio/pilot:1.26.2"), Some("1.26.2"));
        assert_eq!(image_tag("localhost:5000/istio/pilot:1.25.0"), Some("1.25.0"));
        assert_eq!(image_tag("docker.io/istio/pilot@sha256:abc"), None);
        let old = behaviours(Version::parse("1.23.9").unwrap());
        let new = behaviours(Version::parse("1.27.0").unwrap());
        assert!(!old.ambient_stable && !old.policy_status_conditions && !old.native_sidecars_default);
        assert!(new.ambient_stable && new.waypoint_bound_condition && new.native_sidecars_default);
        assert!(
            !new.sidecar_callers_use_waypoint,
            "no release routes sidecar callers through waypoints"
        );
    }
}
