//! Sidecar-only settings that ambient mode ignores: every one found in the namespace becomes a
//! [`BehaviourChange`] (and a preflight [`Finding`]) naming the object, what stops working, the upstream
//! source and the ambient equivalent, so nothing is silently dropped by the migration.
//!
//! Severity follows the consequence: a lost security control ([`Loss`]) blocks the namespace unless its
//! ambient twin exists or `migration.accept_loss` names the loss (then it is reported as accepted); every
//! other change warns. The codes, with their upstream sources, are listed in `docs/findings.md`:
//!
//! | code | loss | upstream source |
//! |---|---|---|
//! | `sidecar-egress-registry-only` | `egress-lockdown` | istio/api PR 3517; istio/istio issue 54281 |
//! | `mesh-registry-only` | `egress-lockdown` | istio/istio issue 54281 |
//! | `sidecar-resource-ignored` | - | istio/api PR 3517 |
//! | `request-authentication-without-twin` | `jwt-validation` | istio.io docs/ambient/migrate/migrate-policies |
//! | `jwt-policy-without-twin` | `jwt-validation` | istio.io docs/ambient/migrate/migrate-policies |
//! | `wasmplugin-without-twin` | `wasm-auth` (AUTHN/AUTHZ phase) | istio.io docs/ambient/migrate/migrate-policies |
//! | `telemetry-without-twin` | - | istio.io docs/ambient/migrate; istio/api telemetry.proto `targetRefs` |
//! | `envoyfilter-auth` | `envoyfilter-auth` | istio.io docs/ambient/migrate/migrate-policies |
//! | `envoyfilter-unsupported` | - | istio.io docs/ambient/migrate/migrate-policies |
//! | `capture-exclusion-annotation` | - | istio/istio issue 49829; Istio 1.24.0 change notes |
//! | `sidecar-proxy-annotation` | - | istio/istio issue 49829 (no ambient equivalent of per-pod proxy settings) |
//! | `proxyconfig-selects-workloads` | - | istio/api networking/v1beta1/proxy_config.proto (`selector`) |
//! | `destinationrule-policy-without-waypoint` | - | istio.io docs/ambient/migrate/migrate-policies |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::objects::{self, Attach, Obj, Spec, converted};
use super::plan::PlanOptions;
use super::policy::AuthzPolicy;
use super::preflight::{
    MANAGED_BY, ROLE, bound_services, is_twin, services_selecting, short_host, twin_bound, waypoint_gateway,
};
use super::{Finding, Severity, Snapshot, json};
use crate::steps::ObjRef;

/// Stable codes of the behaviour-change findings.
pub mod codes {
    /// A Sidecar resource whose outbound policy is REGISTRY_ONLY (own or the mesh's): egress lockdown lost.
    pub const SIDECAR_EGRESS_REGISTRY_ONLY: &str = "sidecar-egress-registry-only";
    /// The mesh config sets `outboundTrafficPolicy.mode: REGISTRY_ONLY`; ztunnel does not enforce it.
    pub const MESH_REGISTRY_ONLY: &str = "mesh-registry-only";
    /// Any other Sidecar resource setting (egress scope under ALLOW_ANY, ingress listeners).
    pub const SIDECAR_RESOURCE_IGNORED: &str = "sidecar-resource-ignored";
    /// A workload-scoped RequestAuthentication without a `targetRefs` twin at the waypoint.
    pub const REQUEST_AUTHN_WITHOUT_TWIN: &str = "request-authentication-without-twin";
    /// A workload-scoped AuthorizationPolicy on `requestPrincipals` / `request.auth.*` without a bound twin.
    pub const JWT_POLICY_WITHOUT_TWIN: &str = "jwt-policy-without-twin";
    /// A workload-scoped WasmPlugin without a `targetRefs` twin.
    pub const WASM_WITHOUT_TWIN: &str = "wasmplugin-without-twin";
    /// A Telemetry with a workload `selector` without a `targetRefs` twin.
    pub const TELEMETRY_WITHOUT_TWIN: &str = "telemetry-without-twin";
    /// An EnvoyFilter inserting an authentication/authorization filter.
    pub const ENVOYFILTER_AUTH: &str = "envoyfilter-auth";
    /// Any other EnvoyFilter.
    pub const ENVOYFILTER: &str = "envoyfilter-unsupported";
    /// A pod template with `traffic.sidecar.istio.io/*` capture annotations.
    pub const CAPTURE_ANNOTATION: &str = "capture-exclusion-annotation";
    /// A pod template with per-proxy annotations (`proxy.istio.io/config`, `sidecar.istio.io/*`).
    pub const PROXY_ANNOTATION: &str = "sidecar-proxy-annotation";
    /// A ProxyConfig selecting workloads, whose proxies go away.
    pub const PROXYCONFIG_SELECTOR: &str = "proxyconfig-selects-workloads";
    /// A DestinationRule traffic policy on a host that gets no waypoint.
    pub const DR_POLICY_WITHOUT_WAYPOINT: &str = "destinationrule-policy-without-waypoint";
}

string_enum! {
    /// A security control lost with the sidecars; `migration.accept_loss` names the ones accepted.
    #[derive(PartialOrd, Ord)]
    Loss {
        /// Outbound traffic restricted to registered hosts (REGISTRY_ONLY, Sidecar egress hosts).
        EgressLockdown = "egress-lockdown",
        /// JWT validation (RequestAuthentication) and the authorization rules that depend on it.
        JwtValidation = "jwt-validation",
        /// An EnvoyFilter inserting ext_authz, jwt_authn or RBAC filters.
        EnvoyfilterAuth = "envoyfilter-auth",
        /// A WasmPlugin running in the AUTHN or AUTHZ phase.
        WasmAuth = "wasm-auth",
    }
}

/// Upstream sources quoted in the changes.
pub mod sources {
    /// Sidecar resources do nothing in ambient mode.
    pub const SIDECAR: &str =
        "istio/api PR 3517 (networking/v1alpha3/sidecar.proto: \"Sidecar only applies to sidecar mode\")";
    /// ztunnel and REGISTRY_ONLY.
    pub const REGISTRY_ONLY: &str = "istio/istio issue 54281 (ztunnel does not respect meshConfig.outboundTrafficPolicy.mode REGISTRY_ONLY)";
    /// The migration guide's policy page.
    pub const MIGRATE_POLICIES: &str = "istio.io docs/ambient/migrate/migrate-policies";
    /// The migration guide's overview table.
    pub const MIGRATE: &str = "istio.io docs/ambient/migrate (resource migration overview)";
    /// Capture annotations in ambient mode.
    pub const CAPTURE: &str = "istio/istio issue 49829 (the traffic.sidecar.istio.io capture annotations do not work in ambient mode); Istio 1.24.0 change notes (ambient.istio.io/bypass-inbound-capture)";
}

/// One sidecar-only setting the migration drops: what stops working, why, and what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BehaviourChange {
    /// Stable code (see [`codes`]).
    pub code: String,
    /// The object carrying the setting.
    pub object: ObjRef,
    /// Blocker (a security control is lost), warning, or warning with the loss accepted.
    pub severity: Severity,
    /// The security control lost, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<Loss>,
    /// The loss is named in `migration.accept_loss`.
    #[serde(default)]
    pub accepted: bool,
    /// What stops working after the migration.
    pub stops_working: String,
    /// The ambient equivalent to put in place.
    pub fix: String,
    /// Upstream source of the fact.
    pub source: String,
    /// Generated ambient equivalent, when one can be generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix_yaml: Option<String>,
    /// The `targetRefs` twin at the waypoint, when the change is one a twin removes (RequestAuthentication,
    /// WasmPlugin, Telemetry); `policies.migration = apply` creates it before step 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twin: Option<Value>,
}

impl BehaviourChange {
    fn new(
        code: &str,
        object: ObjRef,
        loss: Option<Loss>,
        opts: &PlanOptions,
        stops_working: String,
        fix: String,
        source: &str,
    ) -> Self {
        let accepted = loss.is_some_and(|l| opts.accept_loss.contains(&l));
        let severity = match loss {
            Some(_) if !accepted => Severity::Blocker,
            _ => Severity::Warning,
        };
        BehaviourChange {
            code: code.into(),
            object,
            severity,
            loss,
            accepted,
            stops_working,
            fix,
            source: source.into(),
            fix_yaml: None,
            twin: None,
        }
    }

    /// The change with its `targetRefs` twin as fix YAML, and as the object `apply` creates.
    fn with_twin(self, twin: Value) -> Self {
        let mut c = self.with_yaml(std::slice::from_ref(&twin));
        c.twin = Some(twin);
        c
    }

    fn with_yaml(mut self, docs: &[Value]) -> Self {
        let text = docs
            .iter()
            .map(|d| serde_saphyr::to_string(d).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("---\n");
        self.fix_yaml = Some(text);
        self
    }

    /// The preflight finding: the message says what stops working, the source, and whether the loss was
    /// accepted.
    pub fn finding(&self) -> Finding {
        let accepted = match (self.loss, self.accepted) {
            (Some(l), true) => format!(" [loss {} accepted by migration.accept_loss]", l.as_str()),
            (Some(l), false) => format!(
                " [security control lost: {}; accept with migration.accept_loss = [\"{}\"]]",
                l.as_str(),
                l.as_str()
            ),
            _ => String::new(),
        };
        let f = Finding::new(
            self.severity,
            &self.code,
            self.object.clone(),
            format!("{} (source: {}){accepted}", self.stops_working, self.source),
            self.fix.clone(),
        );
        match &self.fix_yaml {
            Some(y) => f.with_yaml(y.clone()),
            None => f,
        }
    }
}

/// Every sidecar-only setting of the snapshot's namespace, in a stable order (by check, then object).
pub fn assess(s: &Snapshot, opts: &PlanOptions) -> Vec<BehaviourChange> {
    let mut out = Vec::new();
    egress(s, opts, &mut out);
    request_authentications(s, opts, &mut out);
    jwt_policies(s, opts, &mut out);
    wasm_plugins(s, opts, &mut out);
    telemetries(s, opts, &mut out);
    envoy_filters(s, opts, &mut out);
    annotations(s, opts, &mut out);
    proxy_configs(s, opts, &mut out);
    destination_rules(s, opts, &mut out);
    if opts.policy_migration == super::plan::PolicyMigration::Apply && waypoint_gateway(s, opts).is_some() {
        for c in out.iter_mut().filter(|c| c.twin.is_some()) {
            // The twin is created before step 1: nothing is lost, the change is recorded.
            c.severity = Severity::Info;
            c.stops_working = format!(
                "{} - its targetRefs twin {} is created at the waypoint before step 1 (policies.migration = apply)",
                c.stops_working,
                c.twin
                    .as_ref()
                    .map(|t| json::name(t).to_string())
                    .unwrap_or_default()
            );
        }
    }
    out
}

/// The outbound mode a Sidecar resource sets itself.
fn own_mode(sidecar: &objects::Sidecar) -> Option<&str> {
    sidecar.outbound_traffic_policy.as_ref()?.mode.as_deref()
}

fn egress(s: &Snapshot, opts: &PlanOptions, out: &mut Vec<BehaviourChange>) {
    let ns = s.ns();
    let mesh = s.cluster.outbound_traffic_policy.as_deref();
    for (sc, spec) in converted(&s.sidecars) {
        let r = sc.obj_ref();
        let hosts: Vec<String> = spec
            .egress
            .iter()
            .flat_map(|e| json::str_list(e, "/hosts"))
            .collect();
        let scoped = !hosts.is_empty() && !hosts.iter().any(|h| h == "*/*");
        // Its own mode, else the mesh's.
        let registry_only = own_mode(spec).or(mesh) == Some("REGISTRY_ONLY");
        let whom = match &spec.workload_selector {
            Some(sel) => format!("workloads {:?}", sel.labels),
            None => format!("every workload of {ns}"),
        };
        if registry_only {
            let reach = if scoped {
                format!("egress hosts {hosts:?}")
            } else {
                "the mesh registry (Services and ServiceEntries)".to_string()
            };
            out.push(BehaviourChange::new(
                codes::SIDECAR_EGRESS_REGISTRY_ONLY,
                r,
                Some(Loss::EgressLockdown),
                opts,
                format!("Sidecar {} limits {whom} to {reach} (outbound REGISTRY_ONLY; anything else answers 502 from the BlackHoleCluster); ambient ignores Sidecar resources and ztunnel passes traffic to any host, so this egress lockdown stops", sc.name()),
                "control egress in ambient before migrating: ServiceEntries for the allowed hosts bound to an egress waypoint (label istio.io/use-waypoint) with AuthorizationPolicies there, plus a Kubernetes NetworkPolicy denying other egress; then accept the loss of the sidecar lockdown with migration.accept_loss = [\"egress-lockdown\"]".into(),
                &format!("{}; {}", sources::SIDECAR, sources::REGISTRY_ONLY),
            ));
        }
        let ingress = !spec.ingress.is_empty();
        let mut ignored = Vec::new();
        if scoped && !registry_only {
            ignored.push(format!("egress hosts {hosts:?} (outbound ALLOW_ANY)"));
        }
        if ingress {
            ignored.push("ingress listeners".to_string());
        }
        if spec.inbound_connection_pool.is_some() {
            ignored.push("inboundConnectionPool".to_string());
        }
        if !ignored.is_empty() {
            out.push(BehaviourChange::new(
                codes::SIDECAR_RESOURCE_IGNORED,
                sc.obj_ref(),
                None,
                opts,
                format!("Sidecar {} sets {} for {whom}; ambient ignores Sidecar resources, so after the restart these settings no longer apply", sc.name(), ignored.join(", ")),
                "move what must stay to ambient equivalents (a waypoint for L7 settings, ServiceEntries/egress waypoint for egress), then delete the Sidecar once every workload it selects is ambient".into(),
                sources::SIDECAR,
            ));
        }
    }
    // A namespace-wide Sidecar with its own mode overrides the mesh's for every workload here.
    let overridden =
        converted(&s.sidecars).any(|(_, sc)| sc.workload_selector.is_none() && own_mode(sc).is_some());
    if mesh == Some("REGISTRY_ONLY") && !overridden {
        let sys = &s.cluster.system_namespace;
        out.push(BehaviourChange::new(
            codes::MESH_REGISTRY_ONLY,
            ObjRef::new("v1", "ConfigMap", sys, "istio"),
            Some(Loss::EgressLockdown),
            opts,
            format!("the mesh config (ConfigMap {sys}/istio, meshConfig.outboundTrafficPolicy.mode REGISTRY_ONLY) limits sidecars of {ns} to registered hosts; ztunnel does not enforce REGISTRY_ONLY, so after the migration workloads of {ns} reach any external host"),
            "control egress in ambient before migrating: ServiceEntries bound to an egress waypoint with AuthorizationPolicies there, plus a Kubernetes NetworkPolicy denying other egress; then accept with migration.accept_loss = [\"egress-lockdown\"]".into(),
            sources::REGISTRY_ONLY,
        ));
    }
}

/// Does `target` (a `targetRefs` object) attach to the namespace's waypoint for the workloads of
/// `selector`: the waypoint Gateway (existing), or a Service that selects them and will be bound?
fn targets_waypoint_for(
    s: &Snapshot,
    opts: &PlanOptions,
    target: &Attach,
    selector: &BTreeMap<String, String>,
) -> bool {
    if waypoint_gateway(s, opts).is_none() {
        return false;
    }
    let bound = bound_services(s, opts);
    let selecting = services_selecting(s, selector);
    let mut refs = target.target_refs.iter().chain(&target.target_ref);
    refs.any(|r| match r.kind.as_str() {
        "Gateway" => r.name == opts.waypoint_name,
        "Service" => bound.contains(&r.name) && selecting.contains(&r.name),
        _ => false,
    })
}

/// Is one of `twins` (the candidates with the same settings) a `targetRefs` copy bound to the waypoint for the
/// workloads `selector` selects?
fn has_twin<'a>(
    s: &Snapshot,
    opts: &PlanOptions,
    selector: &BTreeMap<String, String>,
    mut twins: impl Iterator<Item = &'a Attach>,
) -> bool {
    twins.any(|t| t.has_target_refs() && targets_waypoint_for(s, opts, t, selector))
}

/// The `targetRefs` copy of a workload-scoped object, attached to the waypoint Gateway: the `keep` fields
/// are copied as the API served them.
fn waypoint_twin<S: Spec>(o: &Obj<S>, opts: &PlanOptions, keep: &[&str]) -> Value {
    let v = o.raw();
    let mut spec = serde_json::Map::new();
    spec.insert(
        "targetRefs".into(),
        json!([{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": opts.waypoint_name}]),
    );
    for k in keep {
        if let Some(x) = v.pointer(&format!("/spec/{k}")) {
            spec.insert((*k).to_string(), x.clone());
        }
    }
    json!({"apiVersion": v["apiVersion"], "kind": v["kind"],
           "metadata": {"name": format!("{}-waypoint", json::name(v)), "namespace": json::namespace(v),
                        "labels": {MANAGED_BY.0: MANAGED_BY.1, ROLE: "twin"}},
           "spec": spec})
}

fn request_authentications(s: &Snapshot, opts: &PlanOptions, out: &mut Vec<BehaviourChange>) {
    let list = &s.request_authentications;
    for (ra, spec) in converted(list).filter(|(_, x)| !x.attach.has_target_refs()) {
        let same = converted(list).filter(|(_, t)| t.jwt_rules == spec.jwt_rules);
        let selector = spec.attach.selector_labels().cloned().unwrap_or_default();
        if has_twin(s, opts, &selector, same.map(|(_, t)| &t.attach)) {
            continue;
        }
        let issuers: Vec<String> = spec
            .jwt_rules
            .iter()
            .filter_map(|r| r["issuer"].as_str().map(str::to_string))
            .collect();
        out.push(
            BehaviourChange::new(
                codes::REQUEST_AUTHN_WITHOUT_TWIN,
                ra.obj_ref(),
                Some(Loss::JwtValidation),
                opts,
                format!("RequestAuthentication {} (issuers {issuers:?}) is workload-scoped and has no targetRefs twin at the waypoint: after the restart no proxy validates these JWTs, invalid tokens are no longer rejected and requestPrincipals / request.auth.* rules never match", ra.name()),
                "apply the generated RequestAuthentication with targetRefs to the waypoint (Services bound to it) before migrating; it is kept as a twin".into(),
                sources::MIGRATE_POLICIES,
            )
            .with_twin(waypoint_twin(ra, opts, &["jwtRules"])),
        );
    }
}

/// Does the policy read the authenticated request (`requestPrincipals`, `request.auth.*`)?
fn reads_jwt(p: &AuthzPolicy) -> bool {
    p.rules.iter().any(|r| {
        r["from"].as_array().into_iter().flatten().any(|f| {
            f["source"]["requestPrincipals"].is_array() || f["source"]["notRequestPrincipals"].is_array()
        }) || r["when"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|w| w["key"].as_str().is_some_and(|k| k.starts_with("request.auth.")))
    })
}

fn jwt_policies(s: &Snapshot, opts: &PlanOptions, out: &mut Vec<BehaviourChange>) {
    let parsed: Vec<&AuthzPolicy> = converted(&s.authorization_policies).map(|(_, p)| p).collect();
    // In apply mode the policy phase creates the `<name>-waypoint` twin of every selector L7 policy whose
    // Services get the waypoint (`preflight::analyze`), so the JWT check moves to the waypoint.
    let apply =
        opts.policy_migration == super::plan::PolicyMigration::Apply && waypoint_gateway(s, opts).is_some();
    let bound = bound_services(s, opts);
    for p in parsed.iter().filter(|p| p.is_workload_scoped() && reads_jwt(p)) {
        let twinned = parsed
            .iter()
            .filter(|t| !t.is_workload_scoped())
            .any(|t| is_twin(s, opts, p, t) && twin_bound(s, opts, t));
        if twinned {
            continue;
        }
        let generated = apply
            && services_selecting(s, &p.selector().unwrap_or_default())
                .iter()
                .any(|n| bound.contains(n));
        let mut change = BehaviourChange::new(
            codes::JWT_POLICY_WITHOUT_TWIN,
            p.obj_ref(),
            Some(Loss::JwtValidation),
            opts,
            format!("AuthorizationPolicy {} checks request principals (requestPrincipals / request.auth.*) with a workload selector and has no targetRefs twin bound to the waypoint: after the restart ztunnel cannot see JWT claims, so these checks stop", p.name),
            "create a targetRefs twin bound to the waypoint (policy_migration = \"generate\" writes it) together with a waypoint RequestAuthentication".into(),
            sources::MIGRATE_POLICIES,
        );
        if generated {
            change.severity = Severity::Info;
            change.stops_working = format!(
                "{} - its targetRefs twin {}-waypoint is created at the waypoint before step 1 (policies.migration = apply)",
                change.stops_working, p.name
            );
        }
        out.push(change);
    }
}

fn wasm_plugins(s: &Snapshot, opts: &PlanOptions, out: &mut Vec<BehaviourChange>) {
    let list = &s.wasm_plugins;
    for (w, spec) in converted(list).filter(|(_, x)| !x.attach.has_target_refs()) {
        let same = converted(list).filter(|(_, t)| t.url == spec.url);
        let selector = spec.attach.selector_labels().cloned().unwrap_or_default();
        if has_twin(s, opts, &selector, same.map(|(_, t)| &t.attach)) {
            continue;
        }
        let phase = spec.phase.as_deref().unwrap_or("UNSPECIFIED_PHASE");
        let auth = matches!(phase, "AUTHN" | "AUTHZ");
        let what = if auth {
            format!("an {phase} extension: the requests it authenticated or authorized are no longer checked")
        } else {
            "its extension no longer runs".to_string()
        };
        out.push(
            BehaviourChange::new(
                codes::WASM_WITHOUT_TWIN,
                w.obj_ref(),
                auth.then_some(Loss::WasmAuth),
                opts,
                format!("WasmPlugin {} is workload-scoped and has no targetRefs twin at the waypoint; after the restart no sidecar loads it: {what}", w.name()),
                "apply the generated WasmPlugin with targetRefs to the waypoint before migrating".into(),
                sources::MIGRATE_POLICIES,
            )
            .with_twin(waypoint_twin(
                w,
                opts,
                &["url", "phase", "priority", "pluginConfig", "pluginName", "sha256", "imagePullPolicy", "match"],
            )),
        );
    }
}

fn telemetries(s: &Snapshot, opts: &PlanOptions, out: &mut Vec<BehaviourChange>) {
    let list = &s.telemetries;
    for (t, spec) in
        converted(list).filter(|(_, x)| x.attach.selector.is_some() && !x.attach.has_target_refs())
    {
        let same = converted(list).filter(|(_, x)| {
            (&x.metrics, &x.tracing, &x.access_logging)
                == (&spec.metrics, &spec.tracing, &spec.access_logging)
        });
        let selector = spec.attach.selector_labels().cloned().unwrap_or_default();
        if has_twin(s, opts, &selector, same.map(|(_, x)| &x.attach)) {
            continue;
        }
        out.push(
            BehaviourChange::new(
                codes::TELEMETRY_WITHOUT_TWIN,
                t.obj_ref(),
                None,
                opts,
                format!("Telemetry {} selects workloads {selector:?}; the selector configures their sidecars only, so after the restart its metrics, tracing and access-log settings no longer apply (ztunnel reports L4 metrics only)", t.name()),
                "apply the generated Telemetry with targetRefs to the waypoint (L7 telemetry comes from the waypoint in ambient mode)".into(),
                &format!("{}; istio/api telemetry/v1/telemetry.proto (targetRefs)", sources::MIGRATE),
            )
            .with_twin(waypoint_twin(t, opts, &["metrics", "tracing", "accessLogging"])),
        );
    }
}

/// Envoy filter names (and type URLs) that authenticate or authorize requests.
const AUTH_FILTERS: [&str; 6] = [
    "ext_authz",
    "jwt_authn",
    "filters.http.rbac",
    "filters.network.rbac",
    "envoy.extensions.filters.http.rbac",
    "envoy.extensions.filters.network.rbac",
];

fn envoy_filters(s: &Snapshot, opts: &PlanOptions, out: &mut Vec<BehaviourChange>) {
    for (ef, spec) in converted(&s.envoy_filters) {
        let text = Value::from(spec.config_patches.clone()).to_string();
        let auth: Vec<&str> = AUTH_FILTERS
            .iter()
            .copied()
            .filter(|f| text.contains(f))
            .collect();
        let name = ef.name();
        if auth.is_empty() {
            out.push(BehaviourChange::new(
                codes::ENVOYFILTER,
                ef.obj_ref(),
                None,
                opts,
                format!("EnvoyFilter {name} patches sidecars; EnvoyFilter is not supported on waypoints and is silently ignored after the migration (upstream calls one without an ambient alternative a migration blocker)"),
                "re-implement it (WasmPlugin or TrafficExtension at the waypoint, or an HTTPRoute filter), or delete it if no longer needed, before migrating".into(),
                sources::MIGRATE_POLICIES,
            ));
        } else {
            out.push(BehaviourChange::new(
                codes::ENVOYFILTER_AUTH,
                ef.obj_ref(),
                Some(Loss::EnvoyfilterAuth),
                opts,
                format!("EnvoyFilter {name} inserts an authentication/authorization filter ({}); EnvoyFilter is not supported on waypoints, so after the migration these requests are no longer checked", auth.join(", ")),
                "move the control to the waypoint (AuthorizationPolicy CUSTOM with an ext_authz provider, RequestAuthentication with targetRefs) before migrating, then accept with migration.accept_loss = [\"envoyfilter-auth\"]".into(),
                sources::MIGRATE_POLICIES,
            ));
        }
    }
}

/// `traffic.sidecar.istio.io` capture annotations istio-cni does not honour for ambient pods.
pub const CAPTURE_ANNOTATIONS: [&str; 8] = [
    "traffic.sidecar.istio.io/excludeOutboundPorts",
    "traffic.sidecar.istio.io/excludeOutboundIPRanges",
    "traffic.sidecar.istio.io/excludeInboundPorts",
    "traffic.sidecar.istio.io/includeOutboundIPRanges",
    "traffic.sidecar.istio.io/includeInboundPorts",
    "traffic.sidecar.istio.io/includeOutboundPorts",
    "traffic.sidecar.istio.io/excludeInterfaces",
    "traffic.sidecar.istio.io/kubevirtInterfaces",
];

/// Is `key` a per-proxy setting that only a sidecar reads (injection itself is handled elsewhere)?
fn proxy_annotation(key: &str) -> bool {
    key == "proxy.istio.io/config"
        || key.starts_with("readiness.status.sidecar.istio.io/")
        || key.starts_with("status.sidecar.istio.io/")
        || (key.starts_with("sidecar.istio.io/")
            && !matches!(key, "sidecar.istio.io/inject" | "sidecar.istio.io/status"))
}

fn annotations<'a>(s: &'a Snapshot, opts: &PlanOptions, out: &mut Vec<BehaviourChange>) {
    let ns = s.ns();
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let named = |kind: &str, meta: &ObjectMeta, t: &'a PodTemplateSpec| {
        let name = meta.name.as_deref().unwrap_or("");
        (ObjRef::new("apps/v1", kind, ns, name), t)
    };
    let templates = (s.deployments.iter())
        .map(|d| named("Deployment", &d.metadata, &d.spec.template))
        .chain(
            s.statefulsets
                .iter()
                .map(|d| named("StatefulSet", &d.metadata, &d.spec.template)),
        )
        .chain(
            s.daemonsets
                .iter()
                .map(|d| named("DaemonSet", &d.metadata, &d.spec.template)),
        );
    for (r, t) in templates {
        let meta = t.metadata.clone().unwrap_or_default();
        if meta
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("gateway.networking.k8s.io/gateway-name"))
        {
            continue;
        }
        let ann = meta.annotations.unwrap_or_default();
        let capture: Vec<String> = ann
            .iter()
            .filter(|(k, _)| CAPTURE_ANNOTATIONS.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !capture.is_empty() {
            let inbound_only = capture.iter().all(|c| c.contains("InboundPorts"));
            let fix = if inbound_only {
                "ztunnel has no per-port exclusion: set the pod template annotation ambient.istio.io/bypass-inbound-capture: \"true\" (ztunnel then captures outbound traffic only), or keep the workload out of ambient with the pod label istio.io/dataplane-mode: none"
            } else {
                "ztunnel has no per-port or per-range exclusion: keep the workload out of ambient with the pod label istio.io/dataplane-mode: none, or make sure the excluded destinations accept mesh (HBONE) traffic; for inbound-only exclusions use ambient.istio.io/bypass-inbound-capture: \"true\""
            };
            out.push(BehaviourChange::new(
                codes::CAPTURE_ANNOTATION,
                r.clone(),
                None,
                opts,
                format!("{r}: pod template sets {}; istio-cni ignores these annotations for ambient pods, so traffic the team kept out of the mesh is captured by ztunnel after the restart", capture.join(", ")),
                fix.into(),
                sources::CAPTURE,
            ));
        }
        let proxy: Vec<String> = ann.keys().filter(|k| proxy_annotation(k)).cloned().collect();
        if !proxy.is_empty() {
            out.push(BehaviourChange::new(
                codes::PROXY_ANNOTATION,
                r.clone(),
                None,
                opts,
                format!("{r}: pod template sets {}; these configure the sidecar proxy only and have no effect once the pod runs without one", proxy.join(", ")),
                "remove them after the migration; settings that must stay belong on the waypoint (Gateway parameters) or in ztunnel's configuration".into(),
                sources::CAPTURE,
            ));
        }
    }
}

fn proxy_configs(s: &Snapshot, opts: &PlanOptions, out: &mut Vec<BehaviourChange>) {
    for (pc, spec) in converted(&s.proxy_configs) {
        let Some(selector) = spec.selector.as_ref().map(|s| &s.match_labels) else {
            continue;
        };
        if selector.contains_key("gateway.networking.k8s.io/gateway-name") {
            continue; // it configures a waypoint or gateway, which stays
        }
        let set = spec.set_fields();
        out.push(BehaviourChange::new(
            codes::PROXYCONFIG_SELECTOR,
            pc.obj_ref(),
            None,
            opts,
            format!("ProxyConfig {} sets {} for the proxies of workloads {selector:?}; after the restart those pods run no proxy, so it applies to nothing", pc.name(), set.join(", ")),
            format!("delete it after the migration; if the waypoint needs the same settings, select its pods (label gateway.networking.k8s.io/gateway-name={})", opts.waypoint_name),
            "istio/api networking/v1beta1/proxy_config.proto (selector: the workloads whose proxies it configures); istio/api PR 3517",
        ));
    }
}

/// Client-side traffic-policy fields only a waypoint (or sidecar) applies; TLS only when it originates TLS.
fn dr_policy_fields(policy: &Value) -> Vec<String> {
    let mut f = Vec::new();
    for k in ["loadBalancer", "outlierDetection", "connectionPool"] {
        if policy.get(k).is_some_and(|x| !x.is_null()) {
            f.push(k.to_string());
        }
    }
    if matches!(policy["tls"]["mode"].as_str(), Some("SIMPLE" | "MUTUAL")) {
        f.push(format!(
            "tls {} (TLS origination)",
            policy["tls"]["mode"].as_str().unwrap_or("")
        ));
    }
    for p in policy["portLevelSettings"].as_array().into_iter().flatten() {
        for x in dr_policy_fields(p) {
            let x = format!("portLevelSettings.{x}");
            if !f.contains(&x) {
                f.push(x);
            }
        }
    }
    f
}

fn destination_rules(s: &Snapshot, opts: &PlanOptions, out: &mut Vec<BehaviourChange>) {
    let ns = s.ns();
    let bound = bound_services(s, opts);
    let waypoint = waypoint_gateway(s, opts).is_some();
    for (dr, spec) in converted(&s.destination_rules) {
        let mut fields = spec
            .traffic_policy
            .as_ref()
            .map(dr_policy_fields)
            .unwrap_or_default();
        for sub in &spec.subsets {
            for x in dr_policy_fields(&sub["trafficPolicy"]) {
                let x = format!("subset {}: {x}", sub["name"].as_str().unwrap_or(""));
                fields.push(x);
            }
        }
        if fields.is_empty() {
            continue;
        }
        let host = short_host(&spec.host, ns);
        let local = s
            .services
            .iter()
            .any(|svc| svc.metadata.name.as_deref() == Some(host.as_str()));
        if local && waypoint && bound.contains(&host) {
            continue;
        }
        let why = if local {
            format!("Service {host} gets no waypoint")
        } else {
            format!(
                "host {host} is not a Service of {ns}; unless it has its own waypoint (e.g. an egress waypoint for a ServiceEntry)"
            )
        };
        out.push(BehaviourChange::new(
            codes::DR_POLICY_WITHOUT_WAYPOINT,
            dr.obj_ref(),
            None,
            opts,
            format!("DestinationRule {} sets {} for {host}; in ambient mode only a waypoint applies these client-side policies and {why}, so they stop applying to callers in {ns} after the restart", dr.name(), fields.join(", ")),
            format!("bind {host} to a waypoint (istio.io/use-waypoint) so the policies keep applying, or accept the change"),
            sources::MIGRATE_POLICIES,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assess::preflight::tests::{snapshot, t_twin};
    use crate::assess::preflight::{self};

    fn opts() -> PlanOptions {
        PlanOptions::default()
    }
    fn accepting(l: Loss) -> PlanOptions {
        PlanOptions {
            accept_loss: vec![l],
            ..Default::default()
        }
    }
    fn obj(api: &str, kind: &str, name: &str, spec: Value) -> Value {
        json!({"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": "app"}, "spec": spec})
    }
    fn only<'a>(c: &'a [BehaviourChange], code: &str) -> &'a BehaviourChange {
        let hits: Vec<&BehaviourChange> = c.iter().filter(|x| x.code == code).collect();
        assert_eq!(hits.len(), 1, "{code}: {c:#?}");
        hits[0]
    }
    fn sev(s: &Snapshot, o: &PlanOptions, code: &str) -> Severity {
        only(&assess(s, o), code).severity
    }
    fn restricted_sidecar() -> Value {
        obj(
            "networking.istio.io/v1",
            "Sidecar",
            "default",
            json!({"egress": [{"hosts": ["./*", "istio-system/*"]}],
                   "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}),
        )
    }

    #[test]
    fn clean_namespace_has_no_changes() {
        assert!(assess(&snapshot(vec![]), &opts()).is_empty());
    }

    #[test]
    fn sidecar_registry_only_blocks_and_acceptance_warns() {
        let mut s = snapshot(vec![]);
        s.sidecars.push(restricted_sidecar().into());
        let c = assess(&s, &opts());
        let x = only(&c, codes::SIDECAR_EGRESS_REGISTRY_ONLY);
        assert_eq!(x.severity, Severity::Blocker);
        assert_eq!(x.loss, Some(Loss::EgressLockdown));
        assert!(!x.accepted);
        assert!(x.stops_working.contains("./*"), "{}", x.stops_working);
        assert!(x.fix.contains("egress waypoint") && x.fix.contains("egress-lockdown"));
        assert!(x.source.contains("3517") && x.source.contains("54281"));
        let f = x.finding();
        assert_eq!(
            (f.severity, f.code.as_str()),
            (Severity::Blocker, codes::SIDECAR_EGRESS_REGISTRY_ONLY)
        );
        assert_eq!(f.object.kind, "Sidecar");
        let c = assess(&s, &accepting(Loss::EgressLockdown));
        let x = only(&c, codes::SIDECAR_EGRESS_REGISTRY_ONLY);
        assert_eq!(x.severity, Severity::Warning);
        assert!(x.accepted);
        assert!(x.finding().message.contains("accepted by migration.accept_loss"));
        // Another loss accepted does not cover this one.
        assert_eq!(
            sev(
                &s,
                &accepting(Loss::JwtValidation),
                codes::SIDECAR_EGRESS_REGISTRY_ONLY
            ),
            Severity::Blocker
        );
    }

    #[test]
    fn sidecar_scope_under_allow_any_only_warns() {
        let mut s = snapshot(vec![]);
        let mut sc = restricted_sidecar();
        sc["spec"]["outboundTrafficPolicy"]["mode"] = json!("ALLOW_ANY");
        s.sidecars.push(sc.into());
        let c = assess(&s, &opts());
        assert!(!c.iter().any(|x| x.code == codes::SIDECAR_EGRESS_REGISTRY_ONLY));
        let x = only(&c, codes::SIDECAR_RESOURCE_IGNORED);
        assert_eq!(x.severity, Severity::Warning);
        assert!(x.stops_working.contains("egress hosts"));
        assert!(x.fix.contains("delete the Sidecar"));
        // A Sidecar without mode inherits the mesh's REGISTRY_ONLY: lockdown, not mere scope.
        let mut s = snapshot(vec![]);
        let mut sc = restricted_sidecar();
        sc["spec"]
            .as_object_mut()
            .unwrap()
            .remove("outboundTrafficPolicy");
        s.sidecars.push(sc.into());
        s.cluster.outbound_traffic_policy = Some("REGISTRY_ONLY".into());
        assert_eq!(
            sev(&s, &opts(), codes::SIDECAR_EGRESS_REGISTRY_ONLY),
            Severity::Blocker
        );
    }

    #[test]
    fn mesh_registry_only_blocks() {
        let mut s = snapshot(vec![]);
        s.cluster.outbound_traffic_policy = Some("REGISTRY_ONLY".into());
        let c = assess(&s, &opts());
        let x = only(&c, codes::MESH_REGISTRY_ONLY);
        assert_eq!(x.severity, Severity::Blocker);
        assert_eq!(x.object.to_string(), "ConfigMap/istio-system/istio");
        assert!(x.source.contains("54281"));
        assert!(x.fix.contains("NetworkPolicy"));
        // A namespace-wide Sidecar with ALLOW_ANY overrides the mesh for the namespace.
        s.sidecars.push(
            obj(
                "networking.istio.io/v1",
                "Sidecar",
                "default",
                json!({"outboundTrafficPolicy": {"mode": "ALLOW_ANY"}}),
            )
            .into(),
        );
        assert!(
            !assess(&s, &opts())
                .iter()
                .any(|x| x.code == codes::MESH_REGISTRY_ONLY)
        );
    }

    fn ra(name: &str, attach: Value) -> Value {
        let mut spec = json!({"jwtRules": [{"issuer": "https://issuer.example", "jwksUri": "https://issuer.example/jwks"}]});
        for (k, v) in attach.as_object().unwrap() {
            spec[k] = v.clone();
        }
        obj("security.istio.io/v1", "RequestAuthentication", name, spec)
    }

    #[test]
    fn apply_creates_the_waypoint_twins_of_request_authentication_wasm_and_telemetry() {
        use crate::assess::plan::{PolicyMigration, plan_namespace};
        let mut s = snapshot(vec![]);
        let sel = json!({"selector": {"matchLabels": {"app": "api"}}});
        s.request_authentications.push(ra("api-jwt", sel.clone()).into());
        s.wasm_plugins.push(obj("extensions.istio.io/v1alpha1", "WasmPlugin", "api-authz",
            json!({"selector": {"matchLabels": {"app": "api"}}, "url": "oci://example/authz:1", "phase": "AUTHZ"})).into());
        s.telemetries.push(obj("telemetry.istio.io/v1", "Telemetry", "api-logs",
            json!({"selector": {"matchLabels": {"app": "api"}}, "accessLogging": [{"providers": [{"name": "envoy"}]}]})).into());
        let apply = PlanOptions {
            policy_migration: PolicyMigration::Apply,
            ..Default::default()
        };
        let p = plan_namespace(&s, &apply);
        let twins: Vec<String> = p.twins.iter().map(|t| t.object.to_string()).collect();
        assert_eq!(
            twins,
            vec![
                "RequestAuthentication/app/api-jwt-waypoint",
                "WasmPlugin/app/api-authz-waypoint",
                "Telemetry/app/api-logs-waypoint"
            ]
        );
        for t in &p.twins {
            assert_eq!(t.manifest["spec"]["targetRefs"][0]["kind"], "Gateway");
            assert_eq!(t.manifest["metadata"]["labels"][ROLE], "twin");
            assert!(t.manifest["spec"].get("selector").is_none());
        }
        for code in [
            codes::REQUEST_AUTHN_WITHOUT_TWIN,
            codes::WASM_WITHOUT_TWIN,
            codes::TELEMETRY_WITHOUT_TWIN,
        ] {
            let f = p.findings.iter().find(|f| f.code == code).unwrap();
            assert_eq!(f.severity, Severity::Info, "{code}");
            assert!(
                f.message.contains("created at the waypoint before step 1"),
                "{}",
                f.message
            );
        }
        assert!(!p.blocked(), "{:?}", p.findings);
        // generate: the YAML only; the lost controls still block.
        let gen_opts = PlanOptions {
            policy_migration: PolicyMigration::Generate,
            ..Default::default()
        };
        let p = plan_namespace(&s, &gen_opts);
        assert!(p.twins.is_empty());
        assert!(
            p.findings
                .iter()
                .any(|f| f.code == codes::REQUEST_AUTHN_WITHOUT_TWIN && f.severity == Severity::Blocker)
        );
        // No waypoint Gateway: nothing to attach the twins to.
        s.gateways.clear();
        assert!(plan_namespace(&s, &apply).twins.is_empty());
    }

    #[test]
    fn request_authentication_needs_a_waypoint_twin() {
        let mut s = snapshot(vec![]);
        s.request_authentications
            .push(ra("api-jwt", json!({"selector": {"matchLabels": {"app": "api"}}})).into());
        let c = assess(&s, &opts());
        let x = only(&c, codes::REQUEST_AUTHN_WITHOUT_TWIN);
        assert_eq!(x.severity, Severity::Blocker);
        assert_eq!(x.loss, Some(Loss::JwtValidation));
        assert!(x.fix.contains("targetRefs"));
        let y = x.fix_yaml.as_deref().unwrap();
        assert!(
            y.contains("api-jwt-waypoint") && y.contains("issuer.example") && y.contains("Gateway"),
            "{y}"
        );
        // The twin at the waypoint: no finding.
        s.request_authentications.push(ra(
            "api-jwt-waypoint",
            json!({"targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}]}),
        ).into());
        assert!(assess(&s, &opts()).is_empty());
        // A twin targeting a Service that opts out of the waypoint does not count.
        let mut s2 = snapshot(vec![]);
        s2.request_authentications
            .push(ra("api-jwt", json!({"selector": {"matchLabels": {"app": "api"}}})).into());
        s2.request_authentications.push(
            ra(
                "api-jwt-svc",
                json!({"targetRefs": [{"kind": "Service", "group": "", "name": "api"}]}),
            )
            .into(),
        );
        assert!(assess(&s2, &opts()).is_empty());
        s2.services[0].metadata.labels =
            Some([("istio.io/use-waypoint".to_string(), "none".to_string())].into());
        assert_eq!(
            sev(&s2, &opts(), codes::REQUEST_AUTHN_WITHOUT_TWIN),
            Severity::Blocker
        );
    }

    fn jwt_policy(name: &str, attach: Value) -> Value {
        let mut spec = json!({"action": "ALLOW", "rules": [{"from": [{"source": {"requestPrincipals": ["https://issuer.example/*"]}}]}]});
        for (k, v) in attach.as_object().unwrap() {
            spec[k] = v.clone();
        }
        obj("security.istio.io/v1", "AuthorizationPolicy", name, spec)
    }

    #[test]
    fn jwt_policy_needs_a_bound_twin() {
        let s = snapshot(vec![jwt_policy(
            "api-jwt-only",
            json!({"selector": {"matchLabels": {"app": "api"}}}),
        )]);
        let c = assess(&s, &opts());
        let x = only(&c, codes::JWT_POLICY_WITHOUT_TWIN);
        assert_eq!(x.severity, Severity::Blocker);
        assert!(x.fix.contains("twin"));
        assert_eq!(
            sev(
                &s,
                &accepting(Loss::JwtValidation),
                codes::JWT_POLICY_WITHOUT_TWIN
            ),
            Severity::Warning
        );
        // apply mode generates the twin (the policy's Service gets the waypoint): recorded, not blocking.
        let apply = PlanOptions {
            policy_migration: crate::assess::plan::PolicyMigration::Apply,
            ..Default::default()
        };
        let x = only(&assess(&s, &apply), codes::JWT_POLICY_WITHOUT_TWIN).clone();
        assert_eq!(x.severity, Severity::Info);
        assert!(
            x.stops_working.contains("api-jwt-only-waypoint is created"),
            "{}",
            x.stops_working
        );
        let p = crate::assess::plan::plan_namespace(&s, &apply);
        assert!(p.twins.iter().any(|t| t.object.name == "api-jwt-only-waypoint"));
        // request.auth.claims in `when` counts too; a bound twin clears it.
        let mut p = jwt_policy("api-claims", json!({"selector": {"matchLabels": {"app": "api"}}}));
        p["spec"]["rules"] = json!([{"when": [{"key": "request.auth.claims[groups]", "values": ["admin"]}]}]);
        let mut twin = p.clone();
        twin["metadata"]["name"] = json!("api-claims-waypoint");
        twin["spec"].as_object_mut().unwrap().remove("selector");
        twin["spec"]["targetRefs"] = json!([{"kind": "Service", "group": "", "name": "api"}]);
        assert_eq!(
            only(
                &assess(&snapshot(vec![p.clone()]), &opts()),
                codes::JWT_POLICY_WITHOUT_TWIN
            )
            .object
            .name,
            "api-claims"
        );
        assert!(assess(&snapshot(vec![p, twin]), &opts()).is_empty());
        // A principal-only policy is not about JWTs.
        assert!(assess(&snapshot(vec![t_twin()]), &opts()).is_empty());
    }

    #[test]
    fn wasm_plugin_auth_phase_blocks_others_warn() {
        let mut s = snapshot(vec![]);
        s.wasm_plugins.push(obj(
            "extensions.istio.io/v1alpha1",
            "WasmPlugin",
            "authz",
            json!({"selector": {"matchLabels": {"app": "api"}}, "url": "oci://example/authz:1", "phase": "AUTHZ"}),
        ).into());
        s.wasm_plugins.push(
            obj(
                "extensions.istio.io/v1alpha1",
                "WasmPlugin",
                "headers",
                json!({"selector": {"matchLabels": {"app": "api"}}, "url": "oci://example/headers:1"}),
            )
            .into(),
        );
        let c = assess(&s, &opts());
        let sev: Vec<(String, Severity, Option<Loss>)> = c
            .iter()
            .map(|x| (x.object.name.clone(), x.severity, x.loss))
            .collect();
        assert_eq!(
            sev,
            vec![
                ("authz".to_string(), Severity::Blocker, Some(Loss::WasmAuth)),
                ("headers".to_string(), Severity::Warning, None)
            ]
        );
        assert!(
            c.iter()
                .all(|x| x.code == codes::WASM_WITHOUT_TWIN && x.fix.contains("targetRefs"))
        );
        assert!(
            c[0].fix_yaml
                .as_deref()
                .unwrap()
                .contains("oci://example/authz:1")
        );
        // Twins at the waypoint clear both.
        let twins: Vec<Value> = c
            .iter()
            .map(|x| serde_saphyr::from_str(x.fix_yaml.as_deref().unwrap()).unwrap())
            .collect();
        s.wasm_plugins.extend(twins.into_iter().map(Obj::from));
        assert!(assess(&s, &opts()).is_empty());
    }

    #[test]
    fn telemetry_with_selector_warns() {
        let mut s = snapshot(vec![]);
        s.telemetries.push(obj(
            "telemetry.istio.io/v1",
            "Telemetry",
            "api-logs",
            json!({"selector": {"matchLabels": {"app": "api"}}, "accessLogging": [{"providers": [{"name": "envoy"}]}]}),
        ).into());
        // Namespace-wide Telemetry is not sidecar-only.
        s.telemetries
            .push(obj("telemetry.istio.io/v1", "Telemetry", "ns", json!({"tracing": []})).into());
        let c = assess(&s, &opts());
        let x = only(&c, codes::TELEMETRY_WITHOUT_TWIN);
        assert_eq!((x.severity, x.loss), (Severity::Warning, None));
        assert!(x.fix.contains("targetRefs"));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn envoy_filters_by_consequence() {
        let mut s = snapshot(vec![]);
        s.envoy_filters.push(
            obj(
                "networking.istio.io/v1alpha3",
                "EnvoyFilter",
                "extauth",
                json!({"configPatches": [{"applyTo": "HTTP_FILTER", "patch": {"operation": "INSERT_BEFORE",
                   "value": {"name": "envoy.filters.http.ext_authz"}}}]}),
            )
            .into(),
        );
        s.envoy_filters.push(obj(
            "networking.istio.io/v1alpha3",
            "EnvoyFilter",
            "lua",
            json!({"configPatches": [{"applyTo": "HTTP_FILTER", "patch": {"value": {"name": "envoy.filters.http.lua"}}}]}),
        ).into());
        let c = assess(&s, &opts());
        let a = only(&c, codes::ENVOYFILTER_AUTH);
        assert_eq!(
            (a.severity, a.loss),
            (Severity::Blocker, Some(Loss::EnvoyfilterAuth))
        );
        assert_eq!(a.object.name, "extauth");
        assert!(a.fix.contains("CUSTOM"));
        let l = only(&c, codes::ENVOYFILTER);
        assert_eq!((l.severity, l.object.name.as_str()), (Severity::Warning, "lua"));
        assert!(l.stops_working.contains("migration blocker"));
        assert!(l.fix.contains("WasmPlugin"), "{}", l.fix);
        assert_eq!(
            sev(&s, &accepting(Loss::EnvoyfilterAuth), codes::ENVOYFILTER_AUTH),
            Severity::Warning
        );
    }

    fn annotate(s: &mut Snapshot, ann: &[(&str, &str)]) {
        let m = s.deployments[1].spec.template.metadata.as_mut().unwrap();
        m.annotations = Some(ann.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    }

    #[test]
    fn capture_annotations_warn_with_the_ambient_equivalent() {
        let mut s = snapshot(vec![]);
        annotate(
            &mut s,
            &[("traffic.sidecar.istio.io/excludeInboundPorts", "9090")],
        );
        let c = assess(&s, &opts());
        let x = only(&c, codes::CAPTURE_ANNOTATION);
        assert_eq!(
            (x.severity, x.object.to_string().as_str()),
            (Severity::Warning, "Deployment/app/api")
        );
        assert!(
            x.fix.contains("ambient.istio.io/bypass-inbound-capture"),
            "{}",
            x.fix
        );
        for k in [
            "traffic.sidecar.istio.io/excludeOutboundPorts",
            "traffic.sidecar.istio.io/excludeOutboundIPRanges",
            "traffic.sidecar.istio.io/includeOutboundIPRanges",
        ] {
            annotate(&mut s, &[(k, "1")]);
            let c = assess(&s, &opts());
            let x = only(&c, codes::CAPTURE_ANNOTATION);
            assert!(x.stops_working.contains(k));
            assert!(x.fix.contains("istio.io/dataplane-mode: none"), "{}", x.fix);
        }
    }

    #[test]
    fn proxy_annotations_warn() {
        let mut s = snapshot(vec![]);
        annotate(
            &mut s,
            &[
                ("proxy.istio.io/config", "{holdApplicationUntilProxyStarts: true}"),
                ("sidecar.istio.io/proxyCPU", "500m"),
                ("sidecar.istio.io/inject", "true"),
            ],
        );
        let c = assess(&s, &opts());
        let x = only(&c, codes::PROXY_ANNOTATION);
        assert_eq!(x.severity, Severity::Warning);
        assert!(x.stops_working.contains("proxy.istio.io/config") && x.stops_working.contains("proxyCPU"));
        assert!(!x.stops_working.contains("inject"));
        assert!(x.fix.contains("remove them"));
    }

    #[test]
    fn proxy_config_selecting_workloads_warns() {
        let mut s = snapshot(vec![]);
        s.proxy_configs.push(
            obj(
                "networking.istio.io/v1beta1",
                "ProxyConfig",
                "api-concurrency",
                json!({"selector": {"matchLabels": {"app": "api"}}, "concurrency": 4}),
            )
            .into(),
        );
        // Namespace-wide and waypoint ProxyConfigs still apply (to the waypoint).
        s.proxy_configs.push(
            obj(
                "networking.istio.io/v1beta1",
                "ProxyConfig",
                "ns",
                json!({"concurrency": 2}),
            )
            .into(),
        );
        s.proxy_configs.push(obj(
            "networking.istio.io/v1beta1",
            "ProxyConfig",
            "wp",
            json!({"selector": {"matchLabels": {"gateway.networking.k8s.io/gateway-name": "waypoint"}}, "concurrency": 2}),
        ).into());
        let c = assess(&s, &opts());
        let x = only(&c, codes::PROXYCONFIG_SELECTOR);
        assert_eq!(
            (x.severity, x.object.name.as_str()),
            (Severity::Warning, "api-concurrency")
        );
        assert!(x.stops_working.contains("concurrency"), "{}", x.stops_working);
        assert!(
            x.fix.contains("gateway.networking.k8s.io/gateway-name=waypoint"),
            "{}",
            x.fix
        );
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn destination_rule_policy_needs_a_waypoint() {
        let dr = |host: &str| {
            obj(
                "networking.istio.io/v1",
                "DestinationRule",
                host,
                json!({"host": host, "trafficPolicy": {"outlierDetection": {"consecutive5xxErrors": 3},
                       "tls": {"mode": "ISTIO_MUTUAL"}}}),
            )
        };
        let mut s = snapshot(vec![]);
        s.destination_rules.push(dr("api").into());
        s.destination_rules.push(dr("payments.external.example").into());
        // api is bound to the waypoint (namespace scope): only the external host is reported.
        let c = assess(&s, &opts());
        let x = only(&c, codes::DR_POLICY_WITHOUT_WAYPOINT);
        assert_eq!(x.object.name, "payments.external.example");
        assert_eq!(x.severity, Severity::Warning);
        assert!(x.stops_working.contains("outlierDetection") && !x.stops_working.contains("ISTIO_MUTUAL"));
        // Without the waypoint api's policy stops too.
        s.gateways.clear();
        let c = assess(&s, &opts());
        assert_eq!(c.len(), 2);
        assert!(
            c.iter()
                .any(|x| x.object.name == "api" && x.fix.contains("bind api to a waypoint"))
        );
        // Only ISTIO_MUTUAL, nothing else: not a client-side policy ambient drops.
        let mut s = snapshot(vec![]);
        s.gateways.clear();
        s.destination_rules.push(
            obj(
                "networking.istio.io/v1",
                "DestinationRule",
                "db",
                json!({"host": "db", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}),
            )
            .into(),
        );
        assert!(assess(&s, &opts()).is_empty());
    }

    #[test]
    fn analyze_reports_changes_as_findings_and_plan_keeps_them() {
        let mut s = snapshot(vec![]);
        s.sidecars.push(restricted_sidecar().into());
        let a = preflight::analyze(&s, &opts());
        assert!(
            a.findings
                .iter()
                .any(|f| f.code == codes::SIDECAR_EGRESS_REGISTRY_ONLY && f.severity == Severity::Blocker)
        );
        assert_eq!(a.behaviour_changes.len(), 1);
        let p = crate::assess::plan::plan_namespace(&s, &opts());
        assert!(p.blocked());
        let p = crate::assess::plan::plan_namespace(&s, &accepting(Loss::EgressLockdown));
        assert!(!p.blocked(), "{:?}", p.findings);
        assert!(p.behaviour_changes[0].accepted);
    }
}
