//! The namespace plan: what the six steps will do to one namespace, computed from a [`Snapshot`].

use super::{Finding, Snapshot};
use crate::steps::ObjRef;
use serde::{Deserialize, Serialize};

/// Where step 1 puts `istio.io/use-waypoint`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case", tag = "scope", content = "services")]
pub enum WaypointScope {
    /// Label the Namespace.
    #[default]
    Namespace,
    /// Label only these Services.
    Services(Vec<String>),
}

/// When step 1 runs relative to the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ActivationOrder {
    /// The seed's order: step 1 before step 2.
    #[default]
    BeforeAmbient,
    /// Upstream's other guidance: activate the waypoint after the restart (avoids double processing while
    /// sidecars remain).
    AfterRestart,
}

string_enum! {
    /// What happens to the policy phase's generated objects (`migration.policies.migration`): targetRefs
    /// twins of sidecar-only policies (AuthorizationPolicy, RequestAuthentication, WasmPlugin, Telemetry),
    /// and HTTPRoutes with per-version Services translated from VirtualServices and DestinationRule subsets.
    #[derive(Default)]
    PolicyMigration {
        /// Report only.
        #[default]
        Off = "off",
        /// Generate the YAML into findings / report (`plan --fixes-dir`).
        Generate = "generate",
        /// Create them (journaled, role `twin`) at the start of step 1; step 5 deletes the translated
        /// VirtualServices.
        Apply = "apply",
    }
}

/// Which workload kinds step 4 restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", default)]
pub struct RestartKinds {
    /// Restart Deployments (default true).
    pub deployments: bool,
    /// Restart StatefulSets (default false).
    pub statefulsets: bool,
    /// Restart DaemonSets (default false).
    pub daemonsets: bool,
}

impl Default for RestartKinds {
    fn default() -> Self {
        RestartKinds {
            deployments: true,
            statefulsets: false,
            daemonsets: false,
        }
    }
}

/// Plan options; the main crate's `settings` module maps the configuration onto these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", default)]
pub struct PlanOptions {
    /// Waypoint Gateway name (default `waypoint`).
    pub waypoint_name: String,
    /// Namespace or listed Services.
    pub waypoint_scope: WaypointScope,
    /// Step 1 before ambient (default) or after the restart.
    pub activation_order: ActivationOrder,
    /// Workload kinds restarted at step 4.
    pub restart_kinds: RestartKinds,
    /// Workloads per restart batch (>= 1).
    pub batch_size: usize,
    /// Allow step 5 to delete L7 selector policies that have no bound twin (default false: refuse).
    pub allow_unreplaced_l7: bool,
    /// Create bridge policies at step 1, before the waypoint is bound (default true).
    pub bridges: bool,
    /// Keep bridges after step 5 as waypoint-bypass protection (default false).
    pub keep_bridges: bool,
    /// Policy migration mode.
    pub policy_migration: PolicyMigration,
    /// Namespaces known to call this one besides those named in policies (e.g. from probe definitions:
    /// `ProbeSpec::caller_and_target`), for the sidecar-caller check.
    pub extra_callers: Vec<String>,
    /// Security controls whose loss is accepted (`migration.accept_loss`): their findings warn instead of
    /// blocking, and are reported as accepted.
    pub accept_loss: Vec<super::sidecar_only::Loss>,
    /// Enforcement differences the migration may cause without blocking the namespace (default none: every
    /// outage or gap the plan does not remove blocks it).
    pub accept_differences: Vec<super::enforcement::DifferenceKind>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            waypoint_name: "waypoint".into(),
            waypoint_scope: WaypointScope::Namespace,
            activation_order: ActivationOrder::BeforeAmbient,
            restart_kinds: RestartKinds::default(),
            batch_size: 5,
            allow_unreplaced_l7: false,
            bridges: true,
            keep_bridges: false,
            policy_migration: PolicyMigration::Off,
            extra_callers: Vec::new(),
            accept_loss: Vec::new(),
            accept_differences: Vec::new(),
        }
    }
}

/// A label the plan sets on an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedLabel {
    /// Labelled object (Namespace or Service).
    pub target: ObjRef,
    /// Key.
    pub key: String,
    /// New value.
    pub value: String,
    /// Current value (what rollback restores).
    pub before: Option<String>,
}

/// An object the plan creates (bridge or twin), with its manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedObject {
    /// The object.
    pub object: ObjRef,
    /// `ambient-migrate.io/role` (`bridge`, `twin`).
    pub role: String,
    /// Full manifest to create.
    pub manifest: serde_json::Value,
}

/// The plan for one namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespacePlan {
    /// Namespace name.
    pub namespace: String,
    /// Options the plan was made with.
    pub options: PlanOptions,
    /// Step 1 labels (`istio.io/use-waypoint`).
    pub waypoint_labels: Vec<PlannedLabel>,
    /// Step 2 label (`istio.io/dataplane-mode=ambient`).
    pub ambient_label: PlannedLabel,
    /// Step 3: the injection label to remove, recorded to restore exactly.
    pub injection: super::injection::InjectionLabel,
    /// Step 4: workloads to restart, in batches.
    pub restart_batches: Vec<Vec<ObjRef>>,
    /// Created before step 1 in `apply` mode: `targetRefs` twins and waypoint-admission policies.
    pub twins: Vec<PlannedObject>,
    /// Created at step 1, before the waypoint is bound: bridges.
    pub bridges: Vec<PlannedObject>,
    /// Deleted at step 5: selector L7 AuthorizationPolicies with bound twins, replaced VirtualServices and
    /// DestinationRules, and bridges unless kept.
    pub delete_at_step5: Vec<ObjRef>,
    /// L4 selector policies kept as they are.
    pub kept_policies: Vec<ObjRef>,
    /// Namespaces that call this one (caller graph for `fleet.order = "callers-first"`).
    #[serde(default)]
    pub callers: Vec<String>,
    /// Preflight findings.
    pub findings: Vec<Finding>,
    /// Behaviour that changes: sidecar-only settings ambient ignores (also among `findings`).
    #[serde(default)]
    pub behaviour_changes: Vec<super::sidecar_only::BehaviourChange>,
    /// Every request class at every moment of the plan against the intent (only the classes that differ).
    #[serde(default)]
    pub enforcement: super::enforcement::EnforcementTable,
    /// Every request class of a translated VirtualService, before and after (only the classes that differ).
    #[serde(default)]
    pub routing: super::routing_equiv::RoutingTable,
}

impl NamespacePlan {
    /// True when any finding is a blocker: the namespace must not be touched.
    pub fn blocked(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.severity == super::Severity::Blocker)
    }
}

/// Build the plan for the snapshot's namespace.
pub fn plan_namespace(s: &Snapshot, opts: &PlanOptions) -> NamespacePlan {
    let ns = s.ns().to_string();
    let nsl = s.ns_labels();
    let a = super::preflight::analyze(s, opts);
    let ns_ref = ObjRef::namespace(&ns);
    let no_waypoint = super::preflight::waypoint_gateway(s, opts).is_none();
    let waypoint_labels = match &opts.waypoint_scope {
        _ if no_waypoint => Vec::new(),
        WaypointScope::Namespace => vec![PlannedLabel {
            target: ns_ref.clone(),
            key: "istio.io/use-waypoint".into(),
            value: opts.waypoint_name.clone(),
            before: nsl.get("istio.io/use-waypoint").cloned(),
        }],
        WaypointScope::Services(list) => list
            .iter()
            .map(|n| {
                let before = s
                    .services
                    .iter()
                    .find(|x| x.metadata.name.as_deref() == Some(n.as_str()))
                    .and_then(|x| x.metadata.labels.as_ref())
                    .and_then(|l| l.get("istio.io/use-waypoint").cloned());
                PlannedLabel {
                    target: ObjRef::new("v1", "Service", &ns, n),
                    key: "istio.io/use-waypoint".into(),
                    value: opts.waypoint_name.clone(),
                    before,
                }
            })
            .collect(),
    };
    let ambient_label = PlannedLabel {
        target: ns_ref,
        key: "istio.io/dataplane-mode".into(),
        value: "ambient".into(),
        before: nsl.get("istio.io/dataplane-mode").cloned(),
    };
    let mut delete_at_step5 = a.delete_policies.clone();
    for r in &a.delete_routing {
        if !delete_at_step5.contains(r) {
            delete_at_step5.push(r.clone());
        }
    }
    let mut plan = NamespacePlan {
        namespace: ns.clone(),
        options: opts.clone(),
        waypoint_labels,
        ambient_label,
        injection: super::injection::InjectionLabel::from_labels(&nsl),
        restart_batches: bridged_last(s, restart_batches(s, opts), &a.bridges),
        twins: a.twins,
        bridges: a.bridges,
        delete_at_step5,
        kept_policies: a.kept_policies,
        callers: a.callers.iter().cloned().collect(),
        findings: a.findings,
        behaviour_changes: a.behaviour_changes,
        enforcement: Default::default(),
        routing: super::routing_equiv::check(s, opts.policy_migration),
    };
    plan.findings.extend(super::routing_equiv::findings(
        &plan.routing,
        opts.policy_migration,
    ));
    check_enforcement(s, &mut plan, &super::enforcement::FleetPosition::default());
    plan
}

/// (Re)evaluates the plan's enforcement table for a fleet position and replaces its enforcement findings:
/// the fleet runner calls it again once the order is known (callers migrating first are ambient).
pub fn check_enforcement(s: &Snapshot, plan: &mut NamespacePlan, fleet: &super::enforcement::FleetPosition) {
    let table = super::enforcement::check(s, plan, fleet);
    plan.findings
        .retain(|f| !super::enforcement::FINDING_CODES.contains(&f.code.as_str()));
    plan.findings.extend(super::enforcement::findings(
        &plan.namespace,
        &table,
        &plan.options.accept_differences,
    ));
    plan.enforcement = table;
}

/// Step 4's order: workloads selected by a bridged selector policy restart last, in their own batches. A
/// caller still on its sidecar bypasses the waypoint (istio.io docs/ambient/migrate), so an old caller pod
/// reaching a new ambient pod of such a workload is denied by ztunnel (the policy's HTTP rules are dropped,
/// the bridge admits only the waypoint). Restarting the namespace's callers first means that when the
/// protected workload's new pods appear, its callers here are ambient and go through the waypoint. The
/// order depends only on the plan and the pod templates, so a resumed run computes the same one.
pub fn bridged_last(s: &Snapshot, batches: Vec<Vec<ObjRef>>, bridges: &[PlannedObject]) -> Vec<Vec<ObjRef>> {
    let selectors: Vec<std::collections::BTreeMap<String, String>> = bridges
        .iter()
        .map(|b| super::json::str_map(&b.manifest, "/spec/selector/matchLabels"))
        .filter(|m| !m.is_empty())
        .collect();
    if selectors.is_empty() {
        return batches;
    }
    let template = |w: &ObjRef| {
        let t = match w.kind.as_str() {
            "Deployment" => s
                .deployments
                .iter()
                .find(|d| d.metadata.name.as_deref() == Some(w.name.as_str()))
                .map(|d| &d.spec.template),
            "StatefulSet" => s
                .statefulsets
                .iter()
                .find(|d| d.metadata.name.as_deref() == Some(w.name.as_str()))
                .map(|d| &d.spec.template),
            _ => s
                .daemonsets
                .iter()
                .find(|d| d.metadata.name.as_deref() == Some(w.name.as_str()))
                .map(|d| &d.spec.template),
        };
        t.and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default()
    };
    let size = batches.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let (protected, others): (Vec<ObjRef>, Vec<ObjRef>) = batches.iter().flatten().cloned().partition(|w| {
        let labels = template(w);
        selectors.iter().any(|sel| super::labels_match(sel, &labels))
    });
    if protected.is_empty() || others.is_empty() {
        return batches;
    }
    let mut out: Vec<Vec<ObjRef>> = others.chunks(size).map(<[ObjRef]>::to_vec).collect();
    out.extend(protected.chunks(size).map(<[ObjRef]>::to_vec));
    out
}

/// Workloads step 4 restarts, in batches of `batch_size`: enabled kinds whose pods have sidecars (or whose
/// template the current namespace labels inject), excluding waypoint Deployments; Deployments first, then
/// StatefulSets, then DaemonSets, by name.
pub fn restart_batches(s: &Snapshot, opts: &PlanOptions) -> Vec<Vec<ObjRef>> {
    use super::injection::{Injectors, injection};
    let ns = s.ns().to_string();
    let nsl = s.ns_labels();
    let inj = Injectors {
        revisions: s.cluster.revisions.clone(),
        tags: s.cluster.tags.clone(),
        enable_namespaces_by_default: s.cluster.enable_namespaces_by_default,
    };
    let has_sidecar_pod = |tl: &std::collections::BTreeMap<String, String>| {
        s.pods.iter().any(|p| {
            let pl = p.metadata.labels.clone().unwrap_or_default();
            !tl.is_empty()
                && super::labels_match(tl, &pl)
                && (crate::gates::pods::proxy_placement(p).is_some()
                    || p.metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key(crate::gates::pods::SIDECAR_STATUS)))
        })
    };
    let wants = |t: &k8s_openapi::api::core::v1::PodTemplateSpec| {
        let m = t.metadata.clone().unwrap_or_default();
        let (l, an) = (m.labels.unwrap_or_default(), m.annotations.unwrap_or_default());
        if l.contains_key("gateway.networking.k8s.io/gateway-name") {
            return false;
        }
        injection(&ns, &nsl, &l, &an, &inj).injected || has_sidecar_pod(&l)
    };
    let mut all: Vec<ObjRef> = Vec::new();
    let mut push = |kind: &str, names: Vec<String>| {
        let mut names = names;
        names.sort();
        all.extend(names.iter().map(|n| ObjRef::new("apps/v1", kind, &ns, n)));
    };
    if opts.restart_kinds.deployments {
        push(
            "Deployment",
            s.deployments
                .iter()
                .filter(|d| wants(&d.spec.template))
                .filter_map(|d| d.metadata.name.clone())
                .collect(),
        );
    }
    if opts.restart_kinds.statefulsets {
        push(
            "StatefulSet",
            s.statefulsets
                .iter()
                .filter(|d| wants(&d.spec.template))
                .filter_map(|d| d.metadata.name.clone())
                .collect(),
        );
    }
    if opts.restart_kinds.daemonsets {
        push(
            "DaemonSet",
            s.daemonsets
                .iter()
                .filter(|d| wants(&d.spec.template))
                .filter_map(|d| d.metadata.name.clone())
                .collect(),
        );
    }
    all.chunks(opts.batch_size.max(1)).map(|c| c.to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assess::preflight::tests::{l4_db, p_l7, snapshot, t_twin};

    #[test]
    fn plan_for_vector_namespace() {
        let mut s = snapshot(vec![p_l7(), t_twin()]);
        s.namespace
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("istio.io/rev".into(), "default".into());
        let p = plan_namespace(
            &s,
            &PlanOptions {
                batch_size: 2,
                ..Default::default()
            },
        );
        assert!(!p.blocked(), "{:?}", p.findings);
        assert_eq!(p.waypoint_labels.len(), 1);
        assert_eq!(p.waypoint_labels[0].target.to_string(), "Namespace/app");
        assert_eq!(p.waypoint_labels[0].value, "waypoint");
        assert_eq!(p.ambient_label.before, None);
        assert_eq!(p.injection.istio_injection.as_deref(), Some("enabled"));
        assert_eq!(p.injection.rev.as_deref(), Some("default"));
        let batches: Vec<Vec<String>> = p
            .restart_batches
            .iter()
            .map(|b| b.iter().map(|r| r.name.clone()).collect())
            .collect();
        // api is behind the bridged L7 policy: it restarts last, in its own batch.
        assert_eq!(
            batches,
            vec![vec!["db".to_string(), "web".to_string()], vec!["api".to_string()]]
        );
        assert_eq!(p.bridges.len(), 1);
        assert_eq!(p.delete_at_step5.len(), 2);
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["options"]["waypoint_scope"]["scope"], "namespace");
    }

    #[test]
    fn plan_blocked_and_service_scope() {
        let s = snapshot(vec![l4_db()]);
        let p = plan_namespace(&s, &PlanOptions::default());
        assert!(p.blocked());
        let opts = PlanOptions {
            waypoint_scope: WaypointScope::Services(vec!["api".into()]),
            ..Default::default()
        };
        let p = plan_namespace(&s, &opts);
        assert!(!p.blocked(), "{:?}", p.findings);
        assert_eq!(p.waypoint_labels[0].target.to_string(), "Service/app/api");
        assert_eq!(p.kept_policies[0].name, "db-allow-api");
    }

    #[test]
    fn restart_selection() {
        let mut s = snapshot(vec![]);
        // Namespace not injected and no sidecar pods: nothing to restart.
        s.namespace.metadata.labels = None;
        assert!(restart_batches(&s, &PlanOptions::default()).is_empty());
        // A running sidecar pod of `api` makes it a restart candidate.
        s.pods.push(
            serde_json::from_value(
                serde_json::json!({"metadata": {"name": "api-1", "labels": {"app": "api"},
            "annotations": {"sidecar.istio.io/status": "{}"}}, "spec": {"containers": [{"name": "app"}]}}),
            )
            .unwrap(),
        );
        let b = restart_batches(&s, &PlanOptions::default());
        assert_eq!(b, vec![vec![ObjRef::new("apps/v1", "Deployment", "app", "api")]]);
        let off = PlanOptions {
            restart_kinds: RestartKinds {
                deployments: false,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(restart_batches(&s, &off).is_empty());
        let opts: PlanOptions = serde_json::from_value(serde_json::json!({"batch_size": 3})).unwrap();
        assert_eq!(opts.waypoint_name, "waypoint");
        assert!(opts.bridges);
    }
}
