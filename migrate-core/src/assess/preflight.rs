//! Preflight analysis of one namespace: blockers and warnings (docs/design.md §3 rules and §3.1 hazards), plus the
//! policy decisions the plan needs (twins, bridges, deletions). Every finding names the object and the fix.

use super::injection::{self, Injectors};
use super::install;
use super::objects::{self, Obj, Spec, converted};
use super::plan::{PlanOptions, PlannedObject, PolicyMigration, WaypointScope};
use super::policy::{Action, Attachment, AuthzPolicy, Identity, PolicyClass, ZtunnelEffect};
use super::{Finding, Severity, Snapshot, labels_match};
use crate::gates::ztunnel::daemonset_not_ready;
use crate::steps::ObjRef;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// Stable finding codes.
pub mod codes {
    /// ztunnel DaemonSet missing or not ready.
    pub const ZTUNNEL_NOT_READY: &str = "ztunnel-not-ready";
    /// istio-cni DaemonSet missing or not ready.
    pub const CNI_NOT_READY: &str = "istio-cni-not-ready";
    /// No waypoint Gateway named as configured.
    pub const NO_WAYPOINT: &str = "no-waypoint";
    /// L7 selector ALLOW policy without a bound targetRefs twin.
    pub const L7_WITHOUT_TWIN: &str = "l7-policy-without-twin";
    /// CUSTOM/AUDIT selector policy without a waypoint/twin.
    pub const CUSTOM_AUDIT: &str = "custom-audit-needs-waypoint";
    /// Pod template forces injection after step 3.
    pub const TEMPLATE_FORCES_INJECTION: &str = "template-forces-injection";
    /// Pod template carries an injection annotation current webhooks ignore.
    pub const TEMPLATE_INJECT_ANNOTATION: &str = "template-inject-annotation";
    /// PeerAuthentication with mode DISABLE.
    pub const PEER_AUTH_DISABLE: &str = "peer-authentication-disable";
    /// Injected pod without an owner: a restart does not replace it.
    pub const UNOWNED_POD: &str = "unowned-pod";
    /// Injected workload of a kind the restart step does not cover.
    pub const RESTART_KIND_DISABLED: &str = "restart-kind-disabled";
    /// Jobs / CronJobs pick up ambient on their next run.
    pub const JOBS_NOT_RESTARTED: &str = "jobs-not-restarted";
    /// VirtualService and HTTPRoute for the same host.
    pub const VS_AND_HTTPROUTE: &str = "virtualservice-and-httproute";
    /// DestinationRule subsets (not used by waypoints unless an HTTPRoute replaces them).
    pub const DR_SUBSETS: &str = "destinationrule-subsets";
    /// EnvoyFilter objects (not supported with waypoints; see `sidecar_only`).
    pub const ENVOYFILTER: &str = crate::assess::sidecar_only::codes::ENVOYFILTER;
    /// Pods relying on Prometheus metrics merging.
    pub const PROMETHEUS_MERGE: &str = "prometheus-merge";
    /// PodMonitor/ServiceMonitor scraping the merged endpoint.
    pub const MONITOR_MERGED_ENDPOINT: &str = "monitor-merged-endpoint";
    /// Dashboards using the `reporter` label.
    pub const REPORTER_LABEL: &str = "reporter-label-changes";
    /// §3.1 (a): L4 selector ALLOW denies waypoint-routed traffic.
    pub const L4_DENIES_WAYPOINT: &str = "l4-policy-denies-waypoint";
    /// An L4 selector ALLOW admitting the waypoint identity without a targetRefs twin: waypoint-routed
    /// callers it does not admit reach the destination.
    pub const L4_ADMITS_WAYPOINT_NO_TWIN: &str = "l4-policy-admits-waypoint-without-twin";
    /// §3.1 (a) resolved by generated twins (apply mode).
    pub const L4_TWINNED: &str = "l4-policy-twinned";
    /// §3.1 (b): outage window between steps 4 and 5 (no bridge).
    pub const L7_ALLOW_OUTAGE_WINDOW: &str = "l7-allow-outage-window";
    /// §3.1 (b): a bridge will close the window.
    pub const L7_ALLOW_BRIDGED: &str = "l7-allow-bridged";
    /// §3.1 (c): L7 DENY not enforced after migration.
    pub const L7_DENY_UNENFORCED: &str = "l7-deny-unenforced";
    /// A mixed DENY denies more than asked at ztunnel between steps 4 and 5.
    pub const L7_DENY_BROADENED: &str = "l7-deny-broadened-window";
    /// L7 selector DENY with a twin: ztunnel does not enforce it once pods are ambient (rule never fires).
    pub const L7_DENY_ZTUNNEL_GAP: &str = "l7-deny-ztunnel-gap";
    /// L4 DENY on caller identity no longer matches waypoint-routed traffic.
    pub const L4_DENY_BYPASSED: &str = "l4-deny-sees-waypoint-identity";
    /// §3.1 (d): sidecar callers bypass the waypoint.
    pub const SIDECAR_CALLERS: &str = "sidecar-callers-bypass-waypoint";
    /// A mesh-wide (root namespace) policy with L7 attributes.
    pub const MESH_WIDE_L7: &str = "mesh-wide-l7-policy";
    /// An AuthorizationPolicy that cannot be parsed.
    pub const INVALID_POLICY: &str = "invalid-policy";
    /// An Istio, Gateway API or monitoring object whose fields cannot be read.
    pub const INVALID_OBJECT: &str = "invalid-object";
    /// An Istio or Gateway API object with a spec field this tool does not know.
    pub const UNKNOWN_FIELD: &str = "unknown-field";
}

/// Labels our generated objects carry.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "ambient-migrate");
/// Role label key.
pub const ROLE: &str = "ambient-migrate.io/role";

/// Result of the policy analysis.
#[derive(Clone, Debug, Default)]
pub struct Analysis {
    /// Findings.
    pub findings: Vec<Finding>,
    /// Twins (and waypoint-admission policies) to create in apply mode.
    pub twins: Vec<PlannedObject>,
    /// Bridges to create at step 1, before the waypoint is bound (`docs/design.md` §3.1).
    pub bridges: Vec<PlannedObject>,
    /// Selector policies to delete at step 5.
    pub delete_policies: Vec<ObjRef>,
    /// Selector L4 policies kept.
    pub kept_policies: Vec<ObjRef>,
    /// VirtualServices / DestinationRules replaced by HTTPRoutes, deleted at step 5.
    pub delete_routing: Vec<ObjRef>,
    /// Namespaces on sidecars calling this one.
    pub sidecar_callers: BTreeSet<String>,
    /// Every other namespace calling this one (from policies' `from` and probe definitions).
    pub callers: BTreeSet<String>,
    /// Sidecar-only settings the migration drops (also in `findings`).
    pub behaviour_changes: Vec<super::sidecar_only::BehaviourChange>,
}

/// The waypoint Gateway of the options, if it exists in the snapshot.
pub fn waypoint_gateway<'a>(s: &'a Snapshot, opts: &PlanOptions) -> Option<&'a Obj<objects::Gateway>> {
    converted(&s.gateways)
        .find(|(g, spec)| {
            g.name() == opts.waypoint_name
                && spec.gateway_class_name == crate::gates::waypoint::WAYPOINT_CLASS
        })
        .map(|(g, _)| g)
}

/// The waypoint's identity: its ServiceAccount is named like the Gateway.
pub fn waypoint_identity(s: &Snapshot, opts: &PlanOptions) -> Identity {
    Identity {
        trust_domain: s.cluster.trust_domain.clone(),
        namespace: s.ns().to_string(),
        service_account: opts.waypoint_name.clone(),
    }
}

fn svc_name(svc: &k8s_openapi::api::core::v1::Service) -> String {
    svc.metadata.name.clone().unwrap_or_default()
}

fn is_waypoint_service(svc: &k8s_openapi::api::core::v1::Service) -> bool {
    svc.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key("gateway.networking.k8s.io/gateway-name"))
}

/// Services that will be bound to a waypoint after step 1 (their own `istio.io/use-waypoint` label wins;
/// `none` opts out; waypoint Services themselves are never bound).
pub fn bound_services(s: &Snapshot, opts: &PlanOptions) -> BTreeSet<String> {
    s.services
        .iter()
        .filter(|svc| !is_waypoint_service(svc))
        .filter(|svc| {
            let own = svc
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("istio.io/use-waypoint"));
            match own.map(String::as_str) {
                Some("none") => false,
                Some(_) => true,
                None => match &opts.waypoint_scope {
                    WaypointScope::Namespace => true,
                    WaypointScope::Services(list) => list.contains(&svc_name(svc)),
                },
            }
        })
        .map(svc_name)
        .collect()
}

/// Label sets of the namespace's workloads: pods and pod templates, keyed `Kind/name`.
fn workload_labels(s: &Snapshot) -> Vec<(String, BTreeMap<String, String>)> {
    let mut out = Vec::new();
    for p in &s.pods {
        out.push((
            format!("Pod/{}", p.metadata.name.clone().unwrap_or_default()),
            p.metadata.labels.clone().unwrap_or_default(),
        ));
    }
    let tpl = |t: &k8s_openapi::api::core::v1::PodTemplateSpec| {
        t.metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default()
    };
    for d in &s.deployments {
        out.push((
            format!("Deployment/{}", d.metadata.name.clone().unwrap_or_default()),
            tpl(&d.spec.template),
        ));
    }
    for d in &s.statefulsets {
        out.push((
            format!("StatefulSet/{}", d.metadata.name.clone().unwrap_or_default()),
            tpl(&d.spec.template),
        ));
    }
    for d in &s.daemonsets {
        out.push((
            format!("DaemonSet/{}", d.metadata.name.clone().unwrap_or_default()),
            tpl(&d.spec.template),
        ));
    }
    out
}

/// Services whose selector selects some of the workloads selected by `selector` (`{}` = all workloads).
///
/// Rule: a Service selects the policy's workloads when its (non-empty) selector is a subset of the policy's
/// `matchLabels`, or when some workload label set (pod or template) matches both selectors.
pub fn services_selecting(s: &Snapshot, selector: &BTreeMap<String, String>) -> Vec<String> {
    let workloads = workload_labels(s);
    let mut out = Vec::new();
    for svc in &s.services {
        if is_waypoint_service(svc) {
            continue;
        }
        let ssel: BTreeMap<String, String> = svc
            .spec
            .as_ref()
            .and_then(|sp| sp.selector.clone())
            .unwrap_or_default();
        if ssel.is_empty() {
            continue;
        }
        let subset = !selector.is_empty() && labels_match(&ssel, selector);
        let shared = workloads
            .iter()
            .any(|(_, l)| labels_match(selector, l) && labels_match(&ssel, l));
        if subset || shared {
            out.push(svc_name(svc));
        }
    }
    out
}

/// Does targetRefs policy `twin` cover the workloads of workload-scoped policy `p`?
///
/// Rule (documented in the report): same namespace, same action, same `rules` (JSON-equal); every target is a
/// core Service or the configured waypoint Gateway; and the targets cover `p`'s workloads: a targeted
/// Service selects them (see [`services_selecting`]) or the waypoint Gateway is targeted.
pub fn is_twin(s: &Snapshot, opts: &PlanOptions, p: &AuthzPolicy, twin: &AuthzPolicy) -> bool {
    let Attachment::TargetRefs { refs } = &twin.attachment else {
        return false;
    };
    if twin.namespace != p.namespace || twin.action != p.action || !super::policy::same_rules(p, twin) {
        return false;
    }
    let Some(sel) = p.selector() else { return false };
    let selecting = services_selecting(s, &sel);
    let valid = refs
        .iter()
        .all(|r| r.is_service() || (r.kind == "Gateway" && r.name == opts.waypoint_name));
    let covers = refs
        .iter()
        .any(|r| (r.is_service() && selecting.contains(&r.name)) || r.kind == "Gateway");
    valid && covers
}

/// Is the twin bound: every Service it targets will be bound after step 1 (a Gateway target: the waypoint
/// exists)?
pub fn twin_bound(s: &Snapshot, opts: &PlanOptions, twin: &AuthzPolicy) -> bool {
    let Attachment::TargetRefs { refs } = &twin.attachment else {
        return false;
    };
    let bound = bound_services(s, opts);
    let wp = waypoint_gateway(s, opts).is_some();
    wp && refs.iter().all(|r| {
        if r.is_service() {
            bound.contains(&r.name)
        } else {
            true
        }
    })
}

fn managed_labels(role: &str) -> Value {
    json!({MANAGED_BY.0: MANAGED_BY.1, ROLE: role})
}

fn ap_manifest(ns: &str, name: &str, role: &str, spec: Value) -> Value {
    json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
           "metadata": {"name": name, "namespace": ns, "labels": managed_labels(role)}, "spec": spec})
}

/// The `targetRefs` copy of a selector policy (`<policy>-waypoint`), targeting `services`.
pub fn twin_manifest(p: &AuthzPolicy, services: &[String]) -> Value {
    let refs: Vec<Value> = services
        .iter()
        .map(|n| json!({"kind": "Service", "group": "", "name": n}))
        .collect();
    let action = serde_json::to_value(p.action).unwrap_or(json!("ALLOW"));
    let mut spec = json!({"targetRefs": refs, "action": action, "rules": p.rules});
    if let Some(provider) = &p.provider {
        spec["provider"] = provider.clone();
    }
    ap_manifest(&p.namespace, &format!("{}-waypoint", p.name), "twin", spec)
}

/// An L4 selector ALLOW admitting the waypoint identity with `p`'s selector: a bridge (`<policy>-bridge-waypoint`,
/// role `bridge`) or a permanent waypoint admission (`<policy>-admit-waypoint`, role `twin`).
pub fn admission_manifest(p: &AuthzPolicy, waypoint: &Identity, role: &str) -> Value {
    let name = if role == "bridge" {
        format!("{}-bridge-waypoint", p.name)
    } else {
        format!("{}-admit-waypoint", p.name)
    };
    let mut spec =
        json!({"action": "ALLOW", "rules": [{"from": [{"source": {"principals": [waypoint.principal()]}}]}]});
    if let Some(sel) = p.selector().filter(|s| !s.is_empty()) {
        spec["selector"] = json!({"matchLabels": sel});
    }
    ap_manifest(&p.namespace, &name, role, spec)
}

fn yaml(docs: &[&Value]) -> String {
    docs.iter()
        .map(|d| serde_saphyr::to_string(d).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("---\n")
}

fn planned(v: Value, role: &str) -> PlannedObject {
    PlannedObject {
        object: ObjRef::from_value(&v),
        role: role.into(),
        manifest: v,
    }
}

/// Is a namespace (by its labels) still on sidecars: injection enabled and not ambient?
pub fn namespace_on_sidecars(labels: &BTreeMap<String, String>) -> bool {
    let injected = labels.get(injection::ISTIO_INJECTION).map(String::as_str) == Some("enabled")
        || labels.contains_key(injection::ISTIO_REV);
    injected && labels.get("istio.io/dataplane-mode").map(String::as_str) != Some("ambient")
}

/// What every section of the analysis reads: the snapshot, the options and the waypoint facts step 1
/// decides (the Gateway, its identity, the Services it binds).
struct Cx<'a> {
    s: &'a Snapshot,
    opts: &'a PlanOptions,
    ns: String,
    wp_gw: Option<&'a Obj<objects::Gateway>>,
    wp_id: Identity,
    /// Without a waypoint Gateway step 1 binds nothing (the plan has no waypoint label): no hazard that
    /// depends on waypoint-routed traffic applies.
    bound: BTreeSet<String>,
    gw_ref: ObjRef,
    apply: bool,
}

/// Run the preflight analysis: one section per concern, in the order the findings are reported.
pub fn analyze(s: &Snapshot, opts: &PlanOptions) -> Analysis {
    let mut a = Analysis::default();
    let ns = s.ns().to_string();
    let ns_ref = ObjRef::namespace(&ns);
    components(s, &mut a);
    let wp_gw = waypoint_gateway(s, opts);
    let cx = Cx {
        s,
        opts,
        ns: ns.clone(),
        wp_gw,
        wp_id: waypoint_identity(s, opts),
        bound: if wp_gw.is_some() {
            bound_services(s, opts)
        } else {
            BTreeSet::new()
        },
        gw_ref: ObjRef::new(
            "gateway.networking.k8s.io/v1",
            "Gateway",
            &ns,
            &opts.waypoint_name,
        ),
        apply: opts.policy_migration == PolicyMigration::Apply,
    };
    let (parsed, needs_waypoint) = policies(&cx, &mut a);
    mesh_wide_l7(s, &mut a);
    objects_not_understood(s, &mut a);
    let (route_hosts, routes) = waypoint_needs(&cx, needs_waypoint, &mut a);
    routing(&cx, &route_hosts, &routes, &mut a);
    // Sidecar-only settings ambient ignores (EnvoyFilters included): their own module.
    let changes = super::sidecar_only::assess(s, opts);
    a.findings.extend(changes.iter().map(|c| c.finding()));
    if cx.apply && cx.wp_gw.is_some() {
        a.twins.extend(
            changes
                .iter()
                .filter_map(|c| c.twin.clone())
                .map(|t| planned(t, "twin")),
        );
    }
    a.behaviour_changes = changes;

    peer_authentication(s, &mut a);
    workload_findings(s, opts, &mut a);
    monitoring_findings(s, &mut a);
    callers(&cx, &parsed, &ns_ref, &mut a);
    a.findings.push(Finding::new(
        Severity::Info,
        codes::REPORTER_LABEL,
        ns_ref,
        "after migration metrics come from ztunnel (reporter=source/destination, TCP only) and the waypoint (reporter=waypoint)",
        "update dashboards and alerts that filter on reporter=\"source\"/\"destination\" for HTTP metrics",
    ));
    a
}

/// Cluster components: ztunnel and istio-cni ready.
fn components(s: &Snapshot, a: &mut Analysis) {
    let sys = &s.cluster.system_namespace;
    if let Some(why) = daemonset_not_ready(s.cluster.ztunnel.as_ref()) {
        a.findings.push(Finding::new(
            Severity::Blocker,
            codes::ZTUNNEL_NOT_READY,
            ObjRef::new("apps/v1", "DaemonSet", sys, "ztunnel"),
            format!("ztunnel DaemonSet {sys}/ztunnel: {why}"),
            "install or repair ztunnel (istioctl install --set profile=ambient, or the ztunnel Helm chart) and wait for it to be ready",
        ));
    }
    if let Some(why) = daemonset_not_ready(s.cluster.istio_cni.as_ref()) {
        a.findings.push(Finding::new(
            Severity::Blocker,
            codes::CNI_NOT_READY,
            ObjRef::new("apps/v1", "DaemonSet", sys, "istio-cni-node"),
            format!("istio-cni DaemonSet {sys}/istio-cni-node: {why}"),
            "install or repair istio-cni (ambient profile) and wait for it to be ready",
        ));
    }
}

/// The namespace's AuthorizationPolicies: which are kept, twinned, bridged, or block; returns the parsed
/// policies and what needs the waypoint.
fn policies<'a>(cx: &Cx<'a>, a: &mut Analysis) -> (Vec<&'a AuthzPolicy>, Vec<String>) {
    let Cx {
        s,
        opts,
        wp_gw,
        wp_id,
        bound,
        ..
    } = cx;
    let mut parsed = Vec::new();
    for o in &s.authorization_policies {
        match o.spec() {
            Some(p) => parsed.push(p),
            None => invalid_policy(o, a),
        }
    }
    let twins_existing: Vec<&AuthzPolicy> = parsed
        .iter()
        .copied()
        .filter(|p| !p.is_workload_scoped())
        .collect();
    let mut needs_waypoint: Vec<String> = Vec::new();
    let apply = opts.policy_migration == PolicyMigration::Apply;

    for p in parsed.iter().copied().filter(|p| p.is_workload_scoped()) {
        let pref = p.obj_ref();
        let class = p.class();
        let sel = p.selector().unwrap_or_default();
        let svcs = services_selecting(s, &sel);
        let svcs_bound: Vec<String> = svcs.iter().filter(|n| bound.contains(*n)).cloned().collect();
        let twin = twins_existing.iter().find(|t| is_twin(s, opts, p, t));
        let twin_is_bound = twin.is_some_and(|t| twin_bound(s, opts, t));
        let gen_twin = twin_manifest(p, &svcs_bound);
        let can_generate = !svcs_bound.is_empty() && wp_gw.is_some();
        match class {
            PolicyClass::L4Only => {
                a.kept_policies.push(pref.clone());
                if svcs_bound.is_empty() {
                    continue;
                }
                if p.action == Action::Allow && !super::policy::allow_admits(p, wp_id) {
                    let adm = admission_manifest(p, wp_id, "twin");
                    let fix_yaml = yaml(&[&gen_twin, &adm]);
                    if apply && can_generate {
                        a.twins.push(planned(gen_twin.clone(), "twin"));
                        a.twins.push(planned(adm, "twin"));
                        a.findings.push(
                            Finding::new(
                                Severity::Info,
                                codes::L4_TWINNED,
                                pref.clone(),
                                format!("L4 ALLOW policy {pref} does not admit the waypoint {}; a targetRefs twin and a waypoint admission will be created", wp_id.principal()),
                                "none (policy_migration = apply)",
                            )
                            .with_yaml(fix_yaml),
                        );
                    } else {
                        a.findings.push(
                            Finding::new(
                                Severity::Blocker,
                                codes::L4_DENIES_WAYPOINT,
                                pref.clone(),
                                format!(
                                    "L4 ALLOW policy {pref} does not admit the waypoint identity {}: once step 1 binds Service(s) {} to the waypoint, ztunnel at the destination sees the waypoint, not the caller, and denies all waypoint-routed traffic",
                                    wp_id.principal(),
                                    svcs_bound.join(", ")
                                ),
                                "apply the generated YAML (a targetRefs twin enforcing the policy at the waypoint plus an L4 policy admitting the waypoint at ztunnel), set policy_migration = \"apply\", or label the Service(s) istio.io/use-waypoint=none",
                            )
                            .with_yaml(fix_yaml),
                        );
                    }
                } else if p.action == Action::Allow && twin.is_none() {
                    // The policy admits the waypoint, so ztunnel admits every caller the waypoint forwards,
                    // and nothing at the waypoint checks the original source.
                    if apply && can_generate {
                        a.twins.push(planned(gen_twin.clone(), "twin"));
                    }
                    a.findings.push(
                        Finding::new(
                            if apply && can_generate { Severity::Info } else { Severity::Warning },
                            codes::L4_ADMITS_WAYPOINT_NO_TWIN,
                            pref.clone(),
                            format!("L4 ALLOW policy {pref} admits the waypoint identity {} but has no targetRefs twin: once step 1 binds Service(s) {} to the waypoint, ztunnel at the destination admits every caller the waypoint forwards, and nothing at the waypoint checks the caller{}", wp_id.principal(), svcs_bound.join(", "), if apply && can_generate { "; the generated twin is created before step 1" } else { "" }),
                            "apply the generated targetRefs twin (it enforces the same rules at the waypoint with the caller's identity), or set policy_migration = \"apply\"",
                        )
                        .with_yaml(yaml(&[&gen_twin])),
                    );
                } else if p.action == Action::Deny
                    && p.rules
                        .iter()
                        .any(|r| r["from"].is_array() || r["when"].is_array())
                {
                    if apply && can_generate && twin.is_none() {
                        a.twins.push(planned(gen_twin.clone(), "twin"));
                    }
                    a.findings.push(
                        Finding::new(
                            Severity::Warning,
                            codes::L4_DENY_BYPASSED,
                            pref.clone(),
                            format!("L4 DENY policy {pref} matches caller identities; traffic routed through the waypoint reaches ztunnel with the waypoint identity {}, so the DENY no longer matches it", wp_id.principal()),
                            "add a targetRefs twin so the waypoint enforces the DENY with the caller identity (generated YAML)",
                        )
                        .with_yaml(yaml(&[&gen_twin])),
                    );
                }
            }
            PolicyClass::L7 { .. } | PolicyClass::Unsupported => {
                needs_waypoint.push(pref.to_string());
                let unsupported = class == PolicyClass::Unsupported;
                let will_twin = !twin_is_bound && apply && can_generate;
                if will_twin {
                    a.twins.push(planned(gen_twin.clone(), "twin"));
                }
                let replaced = twin_is_bound || will_twin;
                if replaced {
                    a.delete_policies.push(pref.clone());
                } else if wp_gw.is_some() || !unsupported {
                    let (code, sev) = match (p.action, unsupported) {
                        (_, true) => (codes::CUSTOM_AUDIT, Severity::Blocker),
                        (Action::Deny, _) => (codes::L7_DENY_UNENFORCED, Severity::Blocker),
                        _ => (codes::L7_WITHOUT_TWIN, Severity::Blocker),
                    };
                    let sev = if opts.allow_unreplaced_l7 {
                        Severity::Warning
                    } else {
                        sev
                    };
                    let what = match twin {
                        Some(_) => {
                            "its targetRefs twin targets Services that will not be bound to the waypoint"
                        }
                        None => "it has no targetRefs twin",
                    };
                    let consequence = match (p.action, p.ztunnel_effect()) {
                        (_, ZtunnelEffect::Rejected) => "ztunnel rejects CUSTOM/AUDIT policies".to_string(),
                        (Action::Deny, _) => "after the restart ztunnel drops its HTTP attributes, so the DENY is no longer enforced as written".to_string(),
                        (_, ZtunnelEffect::AllowRulesDropped { deny_all: true, .. }) => "after the restart ztunnel drops its L7 rules and denies all traffic".to_string(),
                        _ => "after the restart ztunnel drops its L7 rules".to_string(),
                    };
                    let mut f = Finding::new(
                        sev,
                        code,
                        pref.clone(),
                        format!(
                            "{pref} has L7 content ({}) and {what}: {consequence}",
                            class_fields(&class)
                        ),
                        "create a targetRefs twin bound to the waypoint (generated YAML, or policy_migration = \"apply\"); step 5 only deletes policies with a bound twin",
                    );
                    if !svcs_bound.is_empty() {
                        f = f.with_yaml(yaml(&[&gen_twin]));
                    }
                    a.findings.push(f);
                }
                if replaced && p.action == Action::Allow && !unsupported {
                    let bridge = admission_manifest(p, wp_id, "bridge");
                    if opts.bridges {
                        let bref = ObjRef::from_value(&bridge);
                        a.bridges.push(planned(bridge.clone(), "bridge"));
                        if !opts.keep_bridges {
                            a.delete_policies.push(bref);
                        }
                        a.findings.push(
                            Finding::new(
                                Severity::Info,
                                codes::L7_ALLOW_BRIDGED,
                                pref.clone(),
                                format!(
                                    "{pref}: a bridge admitting {} is created at step 1, before the waypoint is bound, and {} at step 5",
                                    wp_id.principal(),
                                    if opts.keep_bridges { "kept" } else { "deleted" }
                                ),
                                "none",
                            )
                            .with_yaml(yaml(&[&bridge])),
                        );
                    } else {
                        a.findings.push(
                            Finding::new(
                                Severity::Warning,
                                codes::L7_ALLOW_OUTAGE_WINDOW,
                                pref.clone(),
                                format!("{pref}: between step 4 (pods behind the waypoint) and step 5 (policy deleted) the destination sees the waypoint identity or drops the L7 rule, and denies traffic the waypoint allowed"),
                                "enable bridges, or apply the generated bridge before step 1",
                            )
                            .with_yaml(yaml(&[&bridge])),
                        );
                    }
                }
                let unenforced = match p.ztunnel_effect() {
                    ZtunnelEffect::DenyNoEffect => true,
                    ZtunnelEffect::DenyDegraded { no_effect, .. } => !no_effect.is_empty(),
                    _ => false,
                };
                if replaced && unenforced {
                    a.findings.push(Finding::new(
                        Severity::Warning,
                        codes::L7_DENY_ZTUNNEL_GAP,
                        pref.clone(),
                        format!("{pref}: once its pods are ambient, ztunnel does not enforce this DENY (its HTTP parts are dropped and the rule never fires); the twin at the waypoint enforces it for waypoint-routed traffic, callers that bypass the waypoint are not denied"),
                        "migrate the calling namespaces first (fleet.order = \"callers-first\") so no sidecar caller bypasses the waypoint",
                    ));
                }
                if replaced
                    && let ZtunnelEffect::DenyDegraded { broadened, .. } = p.ztunnel_effect()
                    && !broadened.is_empty()
                {
                    a.findings.push(Finding::new(
                        Severity::Warning,
                        codes::L7_DENY_BROADENED,
                        pref.clone(),
                        format!("{pref}: between step 4 and step 5 ztunnel enforces rule(s) {broadened:?} without their HTTP attributes and denies more than asked"),
                        "keep the window short (step 5 follows the restart), or delete the policy right after the restart",
                    ));
                }
            }
        }
    }

    (parsed, needs_waypoint)
}

/// An AuthorizationPolicy that did not convert blocks: its effect at ztunnel and at a waypoint cannot be
/// judged.
fn invalid_policy(o: &Obj<AuthzPolicy>, a: &mut Analysis) {
    if let Some(e) = o.error() {
        a.findings.push(Finding::new(
            Severity::Blocker,
            codes::INVALID_POLICY,
            o.obj_ref(),
            e.message.clone(),
            "fix or delete the policy",
        ));
    }
}

/// Mesh-wide (root namespace) policies with L7 content: ztunnel applies them with their L7 parts dropped. A
/// mesh-wide policy that does not convert blocks like a namespace's own: it applies to every ambient pod.
fn mesh_wide_l7(s: &Snapshot, a: &mut Analysis) {
    for o in &s.cluster.root_authorization_policies {
        let Some(p) = o.spec() else {
            invalid_policy(o, a);
            continue;
        };
        if p.is_workload_scoped() && p.class() != PolicyClass::L4Only {
            a.findings.push(Finding::new(
                Severity::Blocker,
                codes::MESH_WIDE_L7,
                p.obj_ref(),
                format!("mesh-wide policy {} has L7 content ({}); ztunnel applies it to every ambient pod with its L7 parts dropped", p.obj_ref(), class_fields(&p.class())),
                "rewrite it as L4-only, or move its L7 rules to waypoint targetRefs policies, before migrating namespaces",
            ));
        }
    }
}

/// Objects of the other kinds that did not convert block (what they do cannot be judged); spec fields this
/// tool does not know are reported, since an Istio field it does not understand may change enforcement.
/// AuthorizationPolicies are reported by [`policies`] and [`mesh_wide_l7`].
fn objects_not_understood(s: &Snapshot, a: &mut Analysis) {
    fn report<S: Spec>(list: &[Obj<S>], a: &mut Analysis) {
        for o in list {
            if let Some(e) = o.error() {
                a.findings.push(Finding::new(
                    Severity::Blocker,
                    codes::INVALID_OBJECT,
                    o.obj_ref(),
                    e.message.clone(),
                    format!(
                        "fix {} in {} {}/{}, or delete the object",
                        e.field,
                        o.kind(),
                        o.namespace(),
                        o.name()
                    ),
                ));
            }
            let unknown = o.unknown_fields();
            if !unknown.is_empty() {
                a.findings.push(Finding::new(
                    Severity::Warning,
                    codes::UNKNOWN_FIELD,
                    o.obj_ref(),
                    format!("{} {}/{} sets {} which this tool does not know; what it changes at a sidecar, ztunnel or waypoint is not judged", o.kind(), o.namespace(), o.name(), unknown.join(", ")),
                    "check what the field does in ambient mode before migrating (istio/api or Gateway API reference), or remove it",
                ));
            }
        }
    }
    report(&s.peer_authentications, a);
    report(&s.cluster.root_peer_authentications, a);
    report(&s.request_authentications, a);
    report(&s.virtual_services, a);
    report(&s.destination_rules, a);
    report(&s.sidecars, a);
    report(&s.service_entries, a);
    report(&s.envoy_filters, a);
    report(&s.telemetries, a);
    report(&s.wasm_plugins, a);
    report(&s.proxy_configs, a);
    report(&s.http_routes, a);
    report(&s.gateways, a);
    report(&s.pod_monitors, a);
    report(&s.service_monitors, a);
}

/// What needs the waypoint (L7 policies, HTTPRoutes, generated routes), whether it exists, and the ambient
/// components that depend on it; returns the Services HTTPRoutes attach to.
fn waypoint_needs(
    cx: &Cx,
    mut needs_waypoint: Vec<String>,
    a: &mut Analysis,
) -> (BTreeSet<String>, super::routes::Translation) {
    let Cx {
        s,
        opts,
        ns,
        wp_gw,
        bound,
        gw_ref,
        apply,
        ..
    } = cx;
    let apply = *apply;
    // HTTPRoutes attached to Services need the waypoint too.
    let route_hosts = httproute_services(s);
    if !route_hosts.is_empty() {
        needs_waypoint.push(format!(
            "HTTPRoutes for Service(s) {}",
            route_hosts.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    // VirtualServices translated to HTTPRoutes (policies.migration = generate | apply): the routes are
    // applied by the waypoint, so the hosts must be bound to it.
    let routes = super::routes::translate(s, opts.policy_migration);
    for g in &routes.generated {
        needs_waypoint.push(format!("the HTTPRoute generated for {}", g.vs));
        for h in g.hosts.iter().filter(|h| wp_gw.is_some() && !bound.contains(*h)) {
            a.findings.push(Finding::new(
                Severity::Blocker,
                super::routes::codes::VS_UNSUPPORTED,
                g.vs.clone(),
                format!("VirtualService {} routes Service {h}, which step 1 does not bind to the waypoint: its generated HTTPRoute would route no ambient caller", g.vs.name),
                format!("bind {h} to the waypoint (waypoint scope \"namespace\", or list it in the waypoint Services), or remove its istio.io/use-waypoint=none label"),
            ));
        }
    }
    a.findings.extend(routes.findings.iter().cloned());
    if apply {
        a.twins
            .extend(routes.objects().into_iter().map(|o| planned(o, "twin")));
        for r in &routes.replaced {
            if !a.delete_routing.contains(r) {
                a.delete_routing.push(r.clone());
            }
        }
    }
    if wp_gw.is_none() && needs_waypoint.is_empty() {
        // Nothing L7 in the namespace: ztunnel alone enforces everything, step 1 has nothing to activate.
        a.findings.push(Finding::new(
            Severity::Info,
            codes::NO_WAYPOINT,
            gw_ref.clone(),
            format!(
                "no waypoint Gateway {ns}/{} and no L7 policy or route needs one: step 1 is skipped, the namespace runs on ztunnel alone",
                opts.waypoint_name
            ),
            format!("to use L7 features later: istioctl waypoint apply -n {ns} --name {}", opts.waypoint_name),
        ));
    } else if wp_gw.is_none() {
        let why = if needs_waypoint.is_empty() {
            "step 1 activates it".to_string()
        } else {
            format!("step 1 activates it and {} need(s) it", needs_waypoint.join(", "))
        };
        a.findings.push(Finding::new(
            Severity::Blocker,
            codes::NO_WAYPOINT,
            gw_ref.clone(),
            format!("no waypoint Gateway {ns}/{} (class istio-waypoint): {why}", opts.waypoint_name),
            format!("istioctl waypoint apply -n {ns} --name {}", opts.waypoint_name),
        )
        .with_yaml(yaml(&[&json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": opts.waypoint_name, "namespace": ns, "labels": {"istio.io/waypoint-for": "service"}},
            "spec": {"gatewayClassName": "istio-waypoint", "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}})])));
    }

    // The ambient components the namespace relies on (the Gateway API only matters with a waypoint).
    a.findings.extend(install::findings(
        s,
        wp_gw.is_some() || !needs_waypoint.is_empty(),
    ));

    (route_hosts, routes)
}

/// VirtualServices and DestinationRules next to HTTPRoutes: what step 5 deletes and what differs.
fn routing(cx: &Cx, route_hosts: &BTreeSet<String>, routes: &super::routes::Translation, a: &mut Analysis) {
    let Cx { s, ns, .. } = cx;
    for (vs, spec) in converted(&s.virtual_services) {
        let hosts: Vec<String> = spec.hosts.iter().map(|h| short_host(h, ns)).collect();
        let overlap: Vec<&String> = hosts.iter().filter(|h| route_hosts.contains(*h)).collect();
        if !overlap.is_empty() {
            a.findings.push(Finding::new(
                Severity::Warning,
                codes::VS_AND_HTTPROUTE,
                vs.obj_ref(),
                format!("VirtualService {} and an HTTPRoute both route host(s) {:?}; sidecar callers use the VirtualService, the waypoint uses the HTTPRoute", vs.name(), overlap),
                "make sure both route the same way until every caller is ambient; step 5 deletes the VirtualService when the HTTPRoutes cover all its hosts",
            ));
        }
        if !hosts.is_empty() && hosts.iter().all(|h| route_hosts.contains(h)) {
            a.delete_routing.push(vs.obj_ref());
        }
    }
    for (dr, spec) in converted(&s.destination_rules) {
        let host = short_host(&spec.host, ns);
        let translated = routes
            .generated
            .iter()
            .any(|g| g.subset_rules.contains(&dr.obj_ref()));
        if !translated && !spec.subsets.is_empty() {
            a.findings.push(Finding::new(
                Severity::Warning,
                codes::DR_SUBSETS,
                dr.obj_ref(),
                format!("DestinationRule {} defines subsets for {host}; waypoints route with HTTPRoute backendRefs to per-version Services instead", dr.name()),
                "create per-version Services and an HTTPRoute with weighted backendRefs",
            ));
        }
        if route_hosts.contains(&host) {
            a.delete_routing.push(dr.obj_ref());
        }
    }
}

/// PeerAuthentication DISABLE: ambient always uses mTLS between ztunnels.
fn peer_authentication(s: &Snapshot, a: &mut Analysis) {
    for (pa, spec) in
        converted(&s.peer_authentications).chain(converted(&s.cluster.root_peer_authentications))
    {
        if spec.disables_mtls() {
            a.findings.push(Finding::new(
                Severity::Blocker,
                codes::PEER_AUTH_DISABLE,
                pa.obj_ref(),
                format!("PeerAuthentication {}/{} sets mTLS DISABLE; ambient always uses mTLS (HBONE) between ztunnels", pa.namespace(), pa.name()),
                "change the mode to PERMISSIVE or STRICT (or exclude the workload from the mesh) before migrating",
            ));
        }
    }
}

/// Calling namespaces (docs/design.md §3.1 d), and those still on sidecars.
fn callers(cx: &Cx, parsed: &[&AuthzPolicy], ns_ref: &ObjRef, a: &mut Analysis) {
    let Cx {
        s, opts, ns, bound, ..
    } = cx;
    let mut callers: BTreeSet<String> = opts.extra_callers.iter().cloned().collect();
    for p in parsed {
        callers.extend(super::policy::caller_namespaces(p));
    }
    callers.remove(ns);
    a.callers = callers.clone();
    a.sidecar_callers = callers
        .into_iter()
        .filter(|c| {
            s.cluster
                .namespace_labels
                .get(c)
                .is_some_and(namespace_on_sidecars)
        })
        .collect();
    if !a.sidecar_callers.is_empty() && !bound.is_empty() {
        let list: Vec<String> = a.sidecar_callers.iter().cloned().collect();
        a.findings.push(Finding::new(
            Severity::Warning,
            codes::SIDECAR_CALLERS,
            ns_ref.clone(),
            format!("callers in namespace(s) {} still use sidecars: their requests to {ns} bypass the waypoint, so L7 policies at the waypoint do not apply to them", list.join(", ")),
            "migrate the calling namespaces first (fleet order), or keep bridges as bypass protection (keep_bridges), or activate the waypoint once the callers are ambient",
        ));
    }
}

fn class_fields(c: &PolicyClass) -> String {
    match c {
        PolicyClass::L7 { fields } => fields.join(", "),
        PolicyClass::Unsupported => "CUSTOM/AUDIT action".into(),
        PolicyClass::L4Only => "none".into(),
    }
}

/// `api`, `api.ns`, `api.ns.svc`, `api.ns.svc.cluster.local` -> `api` when in namespace `ns`; other hosts as is.
pub fn short_host(h: &str, ns: &str) -> String {
    for suffix in [
        format!(".{ns}.svc.cluster.local"),
        format!(".{ns}.svc"),
        format!(".{ns}"),
    ] {
        if let Some(s) = h.strip_suffix(&suffix) {
            return s.to_string();
        }
    }
    h.to_string()
}

/// Services of the namespace that an HTTPRoute attaches to (`parentRefs` kind Service, same namespace).
pub fn httproute_services(s: &Snapshot) -> BTreeSet<String> {
    let ns = s.ns();
    let mut out = BTreeSet::new();
    for (_, r) in converted(&s.http_routes) {
        for p in &r.parent_refs {
            let kind = p.kind.as_deref().unwrap_or("Gateway");
            let pns = p.namespace.as_deref().unwrap_or(ns);
            if kind == "Service" && pns == ns && !p.name.is_empty() {
                out.insert(p.name.clone());
            }
        }
    }
    out
}

fn injectors(s: &Snapshot) -> Injectors {
    Injectors {
        revisions: s.cluster.revisions.clone(),
        tags: s.cluster.tags.clone(),
        enable_namespaces_by_default: s.cluster.enable_namespaces_by_default,
    }
}

fn pod_has_sidecar(p: &k8s_openapi::api::core::v1::Pod) -> bool {
    crate::gates::pods::proxy_placement(p).is_some()
        || p.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(crate::gates::pods::SIDECAR_STATUS))
}

/// A workload template: reference, labels, annotations, restart enabled for its kind.
type TemplateInfo = (ObjRef, BTreeMap<String, String>, BTreeMap<String, String>, bool);

fn workload_findings(s: &Snapshot, opts: &PlanOptions, a: &mut Analysis) {
    let ns = s.ns().to_string();
    let nsl = s.ns_labels();
    let inj = injectors(s);
    let tmpl = |t: &k8s_openapi::api::core::v1::PodTemplateSpec| {
        let m = t.metadata.clone().unwrap_or_default();
        (m.labels.unwrap_or_default(), m.annotations.unwrap_or_default())
    };
    let mut templates: Vec<TemplateInfo> = Vec::new();
    for d in &s.deployments {
        let (l, an) = tmpl(&d.spec.template);
        templates.push((
            ObjRef::new(
                "apps/v1",
                "Deployment",
                &ns,
                d.metadata.name.as_deref().unwrap_or(""),
            ),
            l,
            an,
            opts.restart_kinds.deployments,
        ));
    }
    for d in &s.statefulsets {
        let (l, an) = tmpl(&d.spec.template);
        templates.push((
            ObjRef::new(
                "apps/v1",
                "StatefulSet",
                &ns,
                d.metadata.name.as_deref().unwrap_or(""),
            ),
            l,
            an,
            opts.restart_kinds.statefulsets,
        ));
    }
    for d in &s.daemonsets {
        let (l, an) = tmpl(&d.spec.template);
        templates.push((
            ObjRef::new(
                "apps/v1",
                "DaemonSet",
                &ns,
                d.metadata.name.as_deref().unwrap_or(""),
            ),
            l,
            an,
            opts.restart_kinds.daemonsets,
        ));
    }
    for (r, labels, ann, enabled) in &templates {
        if labels.contains_key("gateway.networking.k8s.io/gateway-name") {
            continue;
        }
        if let Some(o) = injection::template_override(&ns, &nsl, labels, ann, &inj) {
            if o.still_injected {
                a.findings.push(Finding::new(
                    Severity::Blocker,
                    codes::TEMPLATE_FORCES_INJECTION,
                    r.clone(),
                    format!("{r}: pod template {} keeps injecting sidecars after the namespace label is removed (webhook rule {:?})", o.settings.join(", "), o.after_step3.by),
                    format!("remove {} from the pod template (or set the label sidecar.istio.io/inject=false)", o.settings.join(", ")),
                ));
            } else if !o.settings.is_empty() {
                a.findings.push(Finding::new(
                    Severity::Warning,
                    codes::TEMPLATE_INJECT_ANNOTATION,
                    r.clone(),
                    format!(
                        "{r}: pod template sets {}; current webhooks ignore it, older injectors honoured it",
                        o.settings.join(", ")
                    ),
                    "remove it from the pod template",
                ));
            }
        }
        let injected_now = injection::injection(&ns, &nsl, labels, ann, &inj).injected;
        if injected_now && !enabled {
            a.findings.push(Finding::new(
                Severity::Blocker,
                codes::RESTART_KIND_DISABLED,
                r.clone(),
                format!(
                    "{r} has sidecars but {}s are not restarted (restart kinds setting)",
                    r.kind
                ),
                format!("enable restarting {}s, or migrate it separately", r.kind),
            ));
        }
    }
    for p in &s.pods {
        let owners = p.metadata.owner_references.clone().unwrap_or_default();
        let owner_ok = owners.iter().any(|o| match o.kind.as_str() {
            "ReplicaSet" => s.replicasets.iter().any(|rs| {
                rs.metadata.name.as_deref() == Some(&o.name)
                    && rs
                        .metadata
                        .owner_references
                        .as_ref()
                        .is_some_and(|rr| rr.iter().any(|x| x.kind == "Deployment"))
            }),
            "StatefulSet" | "DaemonSet" | "Job" => true,
            _ => false,
        });
        if pod_has_sidecar(p) && !owner_ok {
            let name = p.metadata.name.clone().unwrap_or_default();
            a.findings.push(Finding::new(
                Severity::Blocker,
                codes::UNOWNED_POD,
                ObjRef::new("v1", "Pod", &ns, &name),
                format!("pod {ns}/{name} has a sidecar and no Deployment/StatefulSet/DaemonSet owner: a rollout restart does not replace it"),
                "delete and re-create it after step 3, or give it a controller",
            ));
        }
    }
    if !s.jobs.is_empty() || !s.cronjobs.is_empty() {
        a.findings.push(Finding::new(
            Severity::Info,
            codes::JOBS_NOT_RESTARTED,
            ObjRef::namespace(&ns),
            format!(
                "Jobs {:?} / CronJobs {:?} are not restarted; their next pods start without sidecars",
                s.jobs, s.cronjobs
            ),
            "none",
        ));
    }
}

fn monitoring_findings(s: &Snapshot, a: &mut Analysis) {
    let ns = s.ns().to_string();
    let merged: Vec<String> = s
        .pods
        .iter()
        .filter(|p| pod_has_sidecar(p))
        .filter(|p| {
            p.metadata
                .annotations
                .as_ref()
                .is_some_and(|an| an.get("prometheus.io/port").map(String::as_str) == Some("15020"))
        })
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    if !merged.is_empty() {
        a.findings.push(Finding::new(
            Severity::Warning,
            codes::PROMETHEUS_MERGE,
            ObjRef::namespace(&ns),
            format!("pods {merged:?} expose merged metrics on :15020/stats/prometheus (Istio metrics merging); after the restart Prometheus scrapes the application directly and the per-pod istio_* series disappear"),
            "scrape ztunnel and waypoint pods as separate targets and update dashboards",
        ));
    }
    for list in [&s.pod_monitors, &s.service_monitors] {
        for (m, spec) in converted(list) {
            let hit = spec.scrape_endpoints().any(|e| {
                e["path"] == "/stats/prometheus"
                    || e["targetPort"] == 15020
                    || e["targetPort"] == "15020"
                    || e["port"] == "http-envoy-prom"
            });
            if hit {
                a.findings.push(Finding::new(
                    Severity::Warning,
                    codes::MONITOR_MERGED_ENDPOINT,
                    m.obj_ref(),
                    format!("{} {} scrapes the sidecar's merged endpoint (:15020 /stats/prometheus), which disappears with the sidecar", m.kind(), m.name()),
                    "point it at the application's own metrics port and add monitors for ztunnel and the waypoint",
                ));
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    fn ready_ds(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "istio-system"}, "spec": {"selector": {}, "template": {}},
               "status": {"desiredNumberScheduled": 2, "numberReady": 2, "currentNumberScheduled": 2,
                          "numberMisscheduled": 0}})
    }
    fn deploy(name: &str, labels: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "app"},
               "spec": {"selector": {"matchLabels": labels.clone()}, "template": {"metadata": {"labels": labels}}}})
    }
    fn svc(name: &str, app: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "app"}, "spec": {"selector": {"app": app}}})
    }
    fn policy(name: &str, spec: Value) -> Value {
        json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
               "metadata": {"name": name, "namespace": "app"}, "spec": spec})
    }
    pub(crate) fn p_l7() -> Value {
        policy(
            "api-allow-web-get",
            json!({"selector": {"matchLabels": {"app": "api"}}, "action": "ALLOW", "rules": [
            {"from": [{"source": {"principals": ["cluster.local/ns/app/sa/web"]}}], "to": [{"operation": {"methods": ["GET"]}}]}]}),
        )
    }
    pub(crate) fn t_twin() -> Value {
        policy(
            "api-allow-web-get-waypoint",
            json!({"targetRefs": [{"kind": "Service", "group": "", "name": "api"}],
            "action": "ALLOW", "rules": [
            {"from": [{"source": {"principals": ["cluster.local/ns/app/sa/web"]}}], "to": [{"operation": {"methods": ["GET"]}}]}]}),
        )
    }
    pub(crate) fn l4_db() -> Value {
        policy(
            "db-allow-api",
            json!({"selector": {"matchLabels": {"app": "db"}}, "action": "ALLOW", "rules": [
            {"from": [{"source": {"principals": ["cluster.local/ns/app/sa/api"]}}]}]}),
        )
    }
    pub(crate) fn d7() -> Value {
        policy(
            "api-no-delete",
            json!({"selector": {"matchLabels": {"app": "api"}}, "action": "DENY", "rules": [
            {"to": [{"operation": {"methods": ["DELETE"]}}]}]}),
        )
    }
    pub(crate) fn waypoint() -> Value {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": "waypoint", "namespace": "app"}, "spec": {"gatewayClassName": "istio-waypoint"}})
    }

    /// The vectors' `app` namespace on sidecars, with a waypoint, ztunnel and CNI ready.
    pub(crate) fn snapshot(policies: Vec<Value>) -> Snapshot {
        let mut s: Snapshot = serde_json::from_value(json!({
            "namespace": {"metadata": {"name": "app", "labels": {"istio-injection": "enabled"}}},
            "services": [svc("api", "api"), svc("db", "db"),
                         {"metadata": {"name": "waypoint", "namespace": "app",
                                       "labels": {"gateway.networking.k8s.io/gateway-name": "waypoint"}},
                          "spec": {"selector": {"gateway.networking.k8s.io/gateway-name": "waypoint"}}}],
            "deployments": [deploy("web", json!({"app": "web"})), deploy("api", json!({"app": "api"})),
                            deploy("db", json!({"app": "db"})),
                            deploy("waypoint", json!({"gateway.networking.k8s.io/gateway-name": "waypoint"}))],
            "gateways": [waypoint()],
            "authorizationPolicies": policies,
            "cluster": {"ztunnel": ready_ds("ztunnel"), "istioCni": ready_ds("istio-cni-node")}
        }))
        .unwrap();
        std::sync::Arc::make_mut(&mut s.cluster.namespace_labels).insert(
            "other".into(),
            [("istio-injection".to_string(), "enabled".to_string())].into(),
        );
        s
    }

    fn codes_of(a: &Analysis) -> Vec<(Severity, String)> {
        a.findings.iter().map(|f| (f.severity, f.code.clone())).collect()
    }
    fn has(a: &Analysis, sev: Severity, code: &str) -> bool {
        a.findings.iter().any(|f| f.severity == sev && f.code == code)
    }

    #[test]
    fn clean_namespace_only_info() {
        let a = analyze(&snapshot(vec![]), &PlanOptions::default());
        assert!(
            a.findings.iter().all(|f| f.severity == Severity::Info),
            "{:?}",
            codes_of(&a)
        );
        assert!(has(&a, Severity::Info, codes::REPORTER_LABEL));
    }

    #[test]
    fn a_policy_that_does_not_convert_blocks_by_name_and_field() {
        let bad = policy(
            "odd",
            json!({"selector": {"matchLabels": {"app": "api"}}, "rules": [{"to": [{"operation": {"verbs": ["GET"]}}]}]}),
        );
        let mut s = snapshot(vec![bad.clone(), l4_db()]);
        let mut root = bad;
        root["metadata"]["namespace"] = json!("istio-system");
        s.cluster.root_authorization_policies.push(root.into());
        let a = analyze(&s, &PlanOptions::default());
        let invalid: Vec<&Finding> = a
            .findings
            .iter()
            .filter(|f| f.code == codes::INVALID_POLICY)
            .collect();
        assert_eq!(invalid.len(), 2, "{:?}", codes_of(&a));
        for (f, ns) in invalid.iter().zip(["app", "istio-system"]) {
            assert_eq!(f.severity, Severity::Blocker);
            assert_eq!(f.object.namespace.as_deref(), Some(ns));
            assert_eq!(f.object.name, "odd");
            assert!(
                f.message.contains(&format!(
                    "AuthorizationPolicy {ns}/odd: unknown field spec.rules[0].to[0].operation.verbs"
                )),
                "{}",
                f.message
            );
            assert_eq!(f.fix, "fix or delete the policy");
        }
        // The policy that converted is still judged.
        assert!(
            a.kept_policies.iter().any(|r| r.name == "db-allow-api"),
            "{:?}",
            a.kept_policies
        );
    }

    #[test]
    fn other_objects_that_do_not_convert_block_and_unknown_fields_warn() {
        let mut s = snapshot(vec![]);
        s.virtual_services.push(
            json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                   "metadata": {"name": "api", "namespace": "app"}, "spec": {"hosts": "api"}})
            .into(),
        );
        s.destination_rules.push(
            json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                   "metadata": {"name": "db", "namespace": "app"},
                   "spec": {"host": "db", "trafficPolicyz": {"loadBalancer": {"simple": "ROUND_ROBIN"}}}})
            .into(),
        );
        let a = analyze(&s, &PlanOptions::default());
        let f = a
            .findings
            .iter()
            .find(|f| f.code == codes::INVALID_OBJECT)
            .expect("invalid-object");
        assert_eq!(f.severity, Severity::Blocker);
        assert_eq!(
            f.object,
            ObjRef::new("networking.istio.io/v1", "VirtualService", "app", "api")
        );
        assert!(
            f.message
                .contains("VirtualService app/api: field spec.hosts cannot be read"),
            "{}",
            f.message
        );
        assert!(f.fix.contains("spec.hosts"), "{}", f.fix);
        let w = a
            .findings
            .iter()
            .find(|f| f.code == codes::UNKNOWN_FIELD)
            .expect("unknown-field");
        assert_eq!(w.severity, Severity::Warning);
        assert_eq!(w.object.name, "db");
        assert!(
            w.message
                .contains("DestinationRule app/db sets spec.trafficPolicyz"),
            "{}",
            w.message
        );
        assert_eq!(
            a.findings
                .iter()
                .filter(|f| f.code == codes::INVALID_OBJECT || f.code == codes::UNKNOWN_FIELD)
                .count(),
            2,
            "{:?}",
            codes_of(&a)
        );
    }

    #[test]
    fn cluster_components_missing() {
        let mut s = snapshot(vec![]);
        s.cluster.ztunnel = None;
        let mut cni = s.cluster.istio_cni.clone().unwrap();
        cni.status.as_mut().unwrap().number_ready = 1;
        s.cluster.istio_cni = Some(cni);
        let a = analyze(&s, &PlanOptions::default());
        assert!(has(&a, Severity::Blocker, codes::ZTUNNEL_NOT_READY));
        let f = a
            .findings
            .iter()
            .find(|f| f.code == codes::CNI_NOT_READY)
            .unwrap();
        assert!(f.message.contains("1 of 2"));
    }

    #[test]
    fn no_waypoint_blocks_with_yaml() {
        let mut s = snapshot(vec![p_l7()]);
        s.gateways.clear();
        let a = analyze(&s, &PlanOptions::default());
        let f = a.findings.iter().find(|f| f.code == codes::NO_WAYPOINT).unwrap();
        assert_eq!(f.severity, Severity::Blocker);
        assert!(f.message.contains("api-allow-web-get"));
        assert!(f.fix_yaml.as_ref().unwrap().contains("istio-waypoint"));
    }

    #[test]
    fn l7_allow_without_twin_blocks_and_generates_twin() {
        let a = analyze(&snapshot(vec![p_l7()]), &PlanOptions::default());
        let f = a
            .findings
            .iter()
            .find(|f| f.code == codes::L7_WITHOUT_TWIN)
            .unwrap();
        assert_eq!(f.severity, Severity::Blocker);
        assert!(f.message.contains("denies all traffic"));
        let y = f.fix_yaml.as_ref().unwrap();
        assert!(
            y.contains("api-allow-web-get-waypoint") && y.contains("targetRefs"),
            "{y}"
        );
        assert!(a.delete_policies.is_empty());
        let a = analyze(
            &snapshot(vec![p_l7()]),
            &PlanOptions {
                allow_unreplaced_l7: true,
                ..Default::default()
            },
        );
        assert!(has(&a, Severity::Warning, codes::L7_WITHOUT_TWIN));
    }

    #[test]
    fn l7_allow_with_bound_twin_gets_bridge_and_deletion() {
        let a = analyze(&snapshot(vec![p_l7(), t_twin()]), &PlanOptions::default());
        assert!(
            !a.findings.iter().any(|f| f.severity == Severity::Blocker),
            "{:?}",
            codes_of(&a)
        );
        assert!(has(&a, Severity::Info, codes::L7_ALLOW_BRIDGED));
        assert_eq!(a.bridges.len(), 1);
        let b = &a.bridges[0].manifest;
        assert_eq!(b["metadata"]["name"], "api-allow-web-get-bridge-waypoint");
        assert_eq!(b["metadata"]["labels"][ROLE], "bridge");
        assert_eq!(b["spec"]["selector"]["matchLabels"]["app"], "api");
        assert_eq!(
            b["spec"]["rules"][0]["from"][0]["source"]["principals"][0],
            "cluster.local/ns/app/sa/waypoint"
        );
        let names: Vec<&str> = a.delete_policies.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["api-allow-web-get", "api-allow-web-get-bridge-waypoint"]
        );
        // keep_bridges: the bridge stays.
        let a = analyze(
            &snapshot(vec![p_l7(), t_twin()]),
            &PlanOptions {
                keep_bridges: true,
                ..Default::default()
            },
        );
        assert_eq!(a.delete_policies.len(), 1);
        // bridges disabled: outage-window warning with the bridge YAML.
        let a = analyze(
            &snapshot(vec![p_l7(), t_twin()]),
            &PlanOptions {
                bridges: false,
                ..Default::default()
            },
        );
        let f = a
            .findings
            .iter()
            .find(|f| f.code == codes::L7_ALLOW_OUTAGE_WINDOW)
            .unwrap();
        assert_eq!(f.severity, Severity::Warning);
        assert!(f.fix_yaml.as_ref().unwrap().contains("bridge-waypoint"));
        assert!(a.bridges.is_empty());
    }

    #[test]
    fn twin_not_bound_when_service_opts_out() {
        let mut s = snapshot(vec![p_l7(), t_twin()]);
        s.services[0].metadata.labels =
            Some([("istio.io/use-waypoint".to_string(), "none".to_string())].into());
        let a = analyze(&s, &PlanOptions::default());
        let f = a
            .findings
            .iter()
            .find(|f| f.code == codes::L7_WITHOUT_TWIN)
            .unwrap();
        assert!(f.message.contains("will not be bound"));
        // Scope limited to other Services: same.
        let s = snapshot(vec![p_l7(), t_twin()]);
        let a = analyze(
            &s,
            &PlanOptions {
                waypoint_scope: WaypointScope::Services(vec!["db".into()]),
                ..Default::default()
            },
        );
        assert!(has(&a, Severity::Blocker, codes::L7_WITHOUT_TWIN));
    }

    #[test]
    fn twin_rules_must_match() {
        let mut t = t_twin();
        t["spec"]["rules"][0]["to"][0]["operation"]["methods"] = json!(["GET", "POST"]);
        let a = analyze(&snapshot(vec![p_l7(), t]), &PlanOptions::default());
        assert!(has(&a, Severity::Blocker, codes::L7_WITHOUT_TWIN));
    }

    #[test]
    fn apply_mode_generates_twins() {
        let opts = PlanOptions {
            policy_migration: PolicyMigration::Apply,
            ..Default::default()
        };
        let a = analyze(&snapshot(vec![p_l7(), l4_db()]), &opts);
        assert!(
            !a.findings.iter().any(|f| f.severity == Severity::Blocker),
            "{:?}",
            codes_of(&a)
        );
        let names: Vec<&str> = a.twins.iter().map(|t| t.object.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "api-allow-web-get-waypoint",
                "db-allow-api-waypoint",
                "db-allow-api-admit-waypoint"
            ]
        );
        assert_eq!(a.twins[0].manifest["spec"]["targetRefs"][0]["name"], "api");
        assert!(a.delete_policies.iter().any(|r| r.name == "api-allow-web-get"));
        assert!(has(&a, Severity::Info, codes::L4_TWINNED));
    }

    #[test]
    fn l4_allow_not_admitting_waypoint_blocks() {
        let a = analyze(&snapshot(vec![l4_db()]), &PlanOptions::default());
        let f = a
            .findings
            .iter()
            .find(|f| f.code == codes::L4_DENIES_WAYPOINT)
            .unwrap();
        assert_eq!(f.severity, Severity::Blocker);
        let y = f.fix_yaml.as_ref().unwrap();
        assert!(
            y.contains("db-allow-api-waypoint") && y.contains("db-allow-api-admit-waypoint"),
            "{y}"
        );
        assert!(y.contains("cluster.local/ns/app/sa/waypoint"));
        assert_eq!(a.kept_policies.len(), 1);
        // Admitting the waypoint: fine.
        let mut ok = l4_db();
        ok["spec"]["rules"][0]["from"]
            .as_array_mut()
            .unwrap()
            .push(json!({"source": {"principals": ["cluster.local/ns/app/sa/waypoint"]}}));
        let a = analyze(&snapshot(vec![ok]), &PlanOptions::default());
        assert!(!has(&a, Severity::Blocker, codes::L4_DENIES_WAYPOINT));
        // Service opted out of the waypoint: fine.
        let mut s = snapshot(vec![l4_db()]);
        s.services[1].metadata.labels =
            Some([("istio.io/use-waypoint".to_string(), "none".to_string())].into());
        assert!(!has(
            &analyze(&s, &PlanOptions::default()),
            Severity::Blocker,
            codes::L4_DENIES_WAYPOINT
        ));
    }

    #[test]
    fn l7_deny_without_twin_blocks() {
        let a = analyze(&snapshot(vec![d7()]), &PlanOptions::default());
        let f = a
            .findings
            .iter()
            .find(|f| f.code == codes::L7_DENY_UNENFORCED)
            .unwrap();
        assert_eq!(f.severity, Severity::Blocker);
        assert!(f.message.contains("no longer enforced"));
    }

    #[test]
    fn mixed_deny_with_twin_warns_of_the_ztunnel_gap() {
        let dm = policy(
            "api-other-no-delete",
            json!({"selector": {"matchLabels": {"app": "api"}}, "action": "DENY", "rules": [
            {"from": [{"source": {"namespaces": ["other"]}}], "to": [{"operation": {"methods": ["DELETE"]}}]}]}),
        );
        let mut twin = dm.clone();
        twin["metadata"]["name"] = json!("api-other-no-delete-waypoint");
        twin["spec"].as_object_mut().unwrap().remove("selector");
        twin["spec"]["targetRefs"] = json!([{"kind": "Service", "name": "api"}]);
        let a = analyze(&snapshot(vec![dm, twin]), &PlanOptions::default());
        // Upstream: the emptied `to` clause never matches, so ztunnel does not enforce it at all.
        assert!(
            has(&a, Severity::Warning, codes::L7_DENY_ZTUNNEL_GAP),
            "{:?}",
            codes_of(&a)
        );
        assert!(
            !has(&a, Severity::Warning, codes::L7_DENY_BROADENED),
            "{:?}",
            codes_of(&a)
        );
        assert!(a.bridges.is_empty());
        assert!(a.delete_policies.iter().any(|r| r.name == "api-other-no-delete"));
        // "other" is on sidecars and named in the policy.
        assert_eq!(a.sidecar_callers.iter().collect::<Vec<_>>(), vec!["other"]);
        assert!(has(&a, Severity::Warning, codes::SIDECAR_CALLERS));
    }

    #[test]
    fn custom_policy_needs_waypoint() {
        let c = policy(
            "ext",
            json!({"selector": {"matchLabels": {"app": "api"}}, "action": "CUSTOM",
                                     "provider": {"name": "oauth"}, "rules": [{}]}),
        );
        let a = analyze(&snapshot(vec![c.clone()]), &PlanOptions::default());
        assert!(has(&a, Severity::Blocker, codes::CUSTOM_AUDIT));
        let mut s = snapshot(vec![c]);
        s.gateways.clear();
        let a = analyze(&s, &PlanOptions::default());
        assert!(has(&a, Severity::Blocker, codes::NO_WAYPOINT));
    }

    #[test]
    fn template_injection_and_restart_kinds() {
        let mut s = snapshot(vec![]);
        s.deployments[0]
            .spec
            .template
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert("sidecar.istio.io/inject".into(), "true".into());
        s.statefulsets.push(
            serde_json::from_value(json!({"metadata": {"name": "cache", "namespace": "app"},
            "spec": {"selector": {}, "template": {"metadata": {"labels": {"app": "cache"}}}}}))
            .unwrap(),
        );
        let a = analyze(&s, &PlanOptions::default());
        let f = a
            .findings
            .iter()
            .find(|f| f.code == codes::TEMPLATE_FORCES_INJECTION)
            .unwrap();
        assert_eq!(f.object.name, "web");
        let f = a
            .findings
            .iter()
            .find(|f| f.code == codes::RESTART_KIND_DISABLED)
            .unwrap();
        assert_eq!(f.object.name, "cache");
        let opts = PlanOptions {
            restart_kinds: crate::assess::plan::RestartKinds {
                statefulsets: true,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(!has(
            &analyze(&s, &opts),
            Severity::Blocker,
            codes::RESTART_KIND_DISABLED
        ));
    }

    #[test]
    fn unowned_sidecar_pod_blocks() {
        let mut s = snapshot(vec![]);
        s.pods.push(
            serde_json::from_value(json!({"metadata": {"name": "debug", "namespace": "app",
            "annotations": {"sidecar.istio.io/status": "{}", "prometheus.io/port": "15020"}},
            "spec": {"containers": [{"name": "app"}, {"name": "istio-proxy"}]}}))
            .unwrap(),
        );
        let a = analyze(&s, &PlanOptions::default());
        assert!(has(&a, Severity::Blocker, codes::UNOWNED_POD));
        assert!(has(&a, Severity::Warning, codes::PROMETHEUS_MERGE));
    }

    #[test]
    fn peer_authentication_disable() {
        let mut s = snapshot(vec![]);
        s.peer_authentications.push(json!({"kind": "PeerAuthentication", "apiVersion": "security.istio.io/v1",
            "metadata": {"name": "default", "namespace": "app"}, "spec": {"portLevelMtls": {"8080": {"mode": "DISABLE"}}}}).into());
        s.cluster.root_peer_authentications.push(
            json!({"kind": "PeerAuthentication",
            "metadata": {"name": "mesh", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "DISABLE"}}})
            .into(),
        );
        let a = analyze(&s, &PlanOptions::default());
        assert_eq!(
            a.findings
                .iter()
                .filter(|f| f.code == codes::PEER_AUTH_DISABLE)
                .count(),
            2
        );
    }

    #[test]
    fn routing_objects() {
        let mut s = snapshot(vec![]);
        s.http_routes.push(
            json!({"kind": "HTTPRoute", "metadata": {"name": "api", "namespace": "app"},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "api"}]}})
            .into(),
        );
        s.virtual_services.push(json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "api", "namespace": "app"}, "spec": {"hosts": ["api.app.svc.cluster.local"]}}).into());
        s.virtual_services.push(
            json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "mixed", "namespace": "app"}, "spec": {"hosts": ["api", "db"]}})
            .into(),
        );
        s.destination_rules.push(json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "api", "namespace": "app"}, "spec": {"host": "api", "subsets": [{"name": "v1"}]}}).into());
        s.destination_rules.push(
            json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "db", "namespace": "app"}, "spec": {"host": "db.app.svc.cluster.local"}})
            .into(),
        );
        s.envoy_filters
            .push(json!({"kind": "EnvoyFilter", "metadata": {"name": "lua", "namespace": "app"}}).into());
        s.service_monitors.push(
            json!({"kind": "ServiceMonitor", "metadata": {"name": "m", "namespace": "app"},
            "spec": {"endpoints": [{"path": "/stats/prometheus"}]}})
            .into(),
        );
        let a = analyze(&s, &PlanOptions::default());
        assert_eq!(
            a.findings
                .iter()
                .filter(|f| f.code == codes::VS_AND_HTTPROUTE)
                .count(),
            2
        );
        let del: Vec<String> = a.delete_routing.iter().map(|r| r.to_string()).collect();
        assert_eq!(del, vec!["VirtualService/app/api", "DestinationRule/app/api"]);
        assert!(has(&a, Severity::Warning, codes::DR_SUBSETS));
        assert!(has(&a, Severity::Warning, codes::ENVOYFILTER));
        assert!(has(&a, Severity::Warning, codes::MONITOR_MERGED_ENDPOINT));
        assert_eq!(short_host("api.app.svc", "app"), "api");
        assert_eq!(short_host("api.other", "app"), "api.other");
    }

    #[test]
    fn mesh_wide_l7_and_extra_callers() {
        let mut s = snapshot(vec![]);
        s.cluster.root_authorization_policies.push(
            json!({"metadata": {"name": "global", "namespace": "istio-system"},
            "spec": {"rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]}})
            .into(),
        );
        let opts = PlanOptions {
            extra_callers: vec!["other".into(), "app".into(), "unknown".into()],
            ..Default::default()
        };
        let a = analyze(&s, &opts);
        assert!(has(&a, Severity::Blocker, codes::MESH_WIDE_L7));
        assert_eq!(a.sidecar_callers.iter().collect::<Vec<_>>(), vec!["other"]);
        let mut ambient = BTreeMap::new();
        ambient.insert("istio-injection".to_string(), "enabled".to_string());
        assert!(namespace_on_sidecars(&ambient));
        ambient.insert("istio.io/dataplane-mode".to_string(), "ambient".to_string());
        assert!(!namespace_on_sidecars(&ambient));
    }
}
