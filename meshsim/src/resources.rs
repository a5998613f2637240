//! The kinds meshsim serves, with the discovery facts kubectl and kube-rs need (plural, short names, scope,
//! verbs, subresources). One static table so the API layer, the store and the controllers agree on names.

/// One served resource type (a row of `kubectl api-resources`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    /// Has a `status` subresource: writes to the main resource keep the stored status, and the status
    /// endpoint only changes status (plus, for pods, metadata, as the real pod status strategy allows).
    pub has_status: bool,
    /// Served as a custom resource (CRD) rather than a built-in kind: no strategic merge patch.
    pub custom: bool,
    /// Categories shown in discovery (`kubectl get all`, `kubectl get istio-io`).
    pub categories: &'static [&'static str],
}

impl ResourceType {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Index of this type in [`REGISTRY`], the store's key for it. Found by address (every lookup answers
    /// a reference into the registry; comparing whole types field by field was a measurable part of every
    /// request and controller pass), then by value for a copy.
    pub fn id(&self) -> ResId {
        REGISTRY
            .iter()
            .position(|r| std::ptr::eq(r, self))
            .or_else(|| REGISTRY.iter().position(|r| r == self))
            .expect("resource type comes from the registry")
    }
}

/// Index into [`REGISTRY`].
pub type ResId = usize;

macro_rules! rt {
    ($g:expr, $v:expr, $k:expr, $p:expr, $s:expr, [$($sn:expr),*], $ns:expr, $st:expr, $cr:expr, [$($cat:expr),*]) => {
        ResourceType {
            group: $g,
            version: $v,
            kind: $k,
            plural: $p,
            singular: $s,
            short_names: &[$($sn),*],
            namespaced: $ns,
            has_status: $st,
            custom: $cr,
            categories: &[$($cat),*],
        }
    };
}

/// A kind of `rbac.authorization.k8s.io/v1`: built in, no short names, no status subresource.
const fn rbac(
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
) -> ResourceType {
    ResourceType {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind,
        plural,
        singular,
        short_names: &[],
        namespaced,
        has_status: false,
        custom: false,
        categories: &[],
    }
}

/// Every kind meshsim serves.
pub static REGISTRY: &[ResourceType] = &[
    rt!(
        "",
        "v1",
        "Namespace",
        "namespaces",
        "namespace",
        ["ns"],
        false,
        true,
        false,
        []
    ),
    rt!("", "v1", "Node", "nodes", "node", ["no"], false, true, false, []),
    rt!("", "v1", "Pod", "pods", "pod", ["po"], true, true, false, ["all"]),
    rt!(
        "",
        "v1",
        "Service",
        "services",
        "service",
        ["svc"],
        true,
        true,
        false,
        ["all"]
    ),
    rt!(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        ["sa"],
        true,
        false,
        false,
        []
    ),
    rt!(
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        "configmap",
        ["cm"],
        true,
        false,
        false,
        []
    ),
    rt!(
        "",
        "v1",
        "Secret",
        "secrets",
        "secret",
        [],
        true,
        false,
        false,
        []
    ),
    rt!(
        "",
        "v1",
        "Event",
        "events",
        "event",
        ["ev"],
        true,
        false,
        false,
        []
    ),
    rt!(
        "events.k8s.io",
        "v1",
        "Event",
        "events",
        "event",
        ["ev"],
        true,
        false,
        false,
        []
    ),
    rt!(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        "deployment",
        ["deploy"],
        true,
        true,
        false,
        ["all"]
    ),
    rt!(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        ["rs"],
        true,
        true,
        false,
        ["all"]
    ),
    rt!(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        "statefulset",
        ["sts"],
        true,
        true,
        false,
        ["all"]
    ),
    rt!(
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        "daemonset",
        ["ds"],
        true,
        true,
        false,
        ["all"]
    ),
    rt!(
        "batch",
        "v1",
        "Job",
        "jobs",
        "job",
        [],
        true,
        true,
        false,
        ["all"]
    ),
    // CronJobs are stored and served (the CronJob manifest users copy is applied to meshsim); no controller
    // creates Jobs from their schedule. Short name, category and status subresource as registered in
    // kubernetes `pkg/registry/batch/cronjob/storage/storage.go`.
    rt!(
        "batch",
        "v1",
        "CronJob",
        "cronjobs",
        "cronjob",
        ["cj"],
        true,
        true,
        false,
        ["all"]
    ),
    rt!(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        "lease",
        [],
        true,
        false,
        false,
        []
    ),
    rt!(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        "mutatingwebhookconfiguration",
        [],
        false,
        false,
        false,
        []
    ),
    // RBAC objects (rbac.authorization.k8s.io/v1), evaluated by `api::auth` on every request. Scopes as in
    // kubernetes `pkg/registry/rbac/*/storage/storage.go` (no short names, no status subresource).
    rbac("ClusterRole", "clusterroles", "clusterrole", false),
    rbac(
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        false,
    ),
    rbac("Role", "roles", "role", true),
    rbac("RoleBinding", "rolebindings", "rolebinding", true),
    rt!(
        "gateway.networking.k8s.io",
        "v1",
        "Gateway",
        "gateways",
        "gateway",
        ["gtw"],
        true,
        true,
        true,
        ["gateway-api"]
    ),
    rt!(
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
        "httproutes",
        "httproute",
        [],
        true,
        true,
        true,
        ["gateway-api"]
    ),
    rt!(
        "security.istio.io",
        "v1",
        "AuthorizationPolicy",
        "authorizationpolicies",
        "authorizationpolicy",
        ["ap"],
        true,
        true,
        true,
        ["istio-io", "security-istio-io"]
    ),
    rt!(
        "security.istio.io",
        "v1",
        "PeerAuthentication",
        "peerauthentications",
        "peerauthentication",
        ["pa"],
        true,
        true,
        true,
        ["istio-io", "security-istio-io"]
    ),
    rt!(
        "security.istio.io",
        "v1",
        "RequestAuthentication",
        "requestauthentications",
        "requestauthentication",
        ["ra"],
        true,
        true,
        true,
        ["istio-io", "security-istio-io"]
    ),
    rt!(
        "networking.istio.io",
        "v1",
        "VirtualService",
        "virtualservices",
        "virtualservice",
        ["vs"],
        true,
        true,
        true,
        ["istio-io", "networking-istio-io"]
    ),
    rt!(
        "networking.istio.io",
        "v1",
        "DestinationRule",
        "destinationrules",
        "destinationrule",
        ["dr"],
        true,
        true,
        true,
        ["istio-io", "networking-istio-io"]
    ),
    rt!(
        "networking.istio.io",
        "v1",
        "Sidecar",
        "sidecars",
        "sidecar",
        [],
        true,
        true,
        true,
        ["istio-io", "networking-istio-io"]
    ),
    rt!(
        "networking.istio.io",
        "v1",
        "ServiceEntry",
        "serviceentries",
        "serviceentry",
        ["se"],
        true,
        true,
        true,
        ["istio-io", "networking-istio-io"]
    ),
    rt!(
        "networking.istio.io",
        "v1",
        "EnvoyFilter",
        "envoyfilters",
        "envoyfilter",
        [],
        true,
        true,
        true,
        ["istio-io", "networking-istio-io"]
    ),
    rt!(
        "telemetry.istio.io",
        "v1",
        "Telemetry",
        "telemetries",
        "telemetry",
        ["telemetry"],
        true,
        true,
        true,
        ["istio-io"]
    ),
    rt!(
        "networking.istio.io",
        "v1beta1",
        "ProxyConfig",
        "proxyconfigs",
        "proxyconfig",
        [],
        true,
        true,
        true,
        ["istio-io", "networking-istio-io"]
    ),
    rt!(
        "extensions.istio.io",
        "v1alpha1",
        "WasmPlugin",
        "wasmplugins",
        "wasmplugin",
        [],
        true,
        true,
        true,
        ["istio-io"]
    ),
    rt!(
        "monitoring.coreos.com",
        "v1",
        "PodMonitor",
        "podmonitors",
        "podmonitor",
        ["pmon"],
        true,
        false,
        true,
        []
    ),
    rt!(
        "monitoring.coreos.com",
        "v1",
        "ServiceMonitor",
        "servicemonitors",
        "servicemonitor",
        ["smon"],
        true,
        false,
        true,
        []
    ),
    // Install-phase objects the preflight reads: the Gateway API CRDs themselves and the waypoint
    // GatewayClass istiod creates (both cluster-scoped).
    rt!(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        "customresourcedefinition",
        ["crd", "crds"],
        false,
        true,
        false,
        []
    ),
    rt!(
        "gateway.networking.k8s.io",
        "v1",
        "GatewayClass",
        "gatewayclasses",
        "gatewayclass",
        ["gc"],
        false,
        true,
        true,
        ["gateway-api"]
    ),
];

/// A create-only kind that is answered, never stored (reviews: `kubectl auth can-i`, `kubectl auth whoami`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReviewType {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
}

/// The review kinds meshsim answers (`authorization.k8s.io/v1` and `authentication.k8s.io/v1`).
pub static REVIEWS: &[ReviewType] = &[
    ReviewType {
        group: "authorization.k8s.io",
        version: "v1",
        kind: "SelfSubjectAccessReview",
        plural: "selfsubjectaccessreviews",
    },
    ReviewType {
        group: "authorization.k8s.io",
        version: "v1",
        kind: "SelfSubjectRulesReview",
        plural: "selfsubjectrulesreviews",
    },
    ReviewType {
        group: "authentication.k8s.io",
        version: "v1",
        kind: "SelfSubjectReview",
        plural: "selfsubjectreviews",
    },
];

/// A review kind by URL group, version and plural.
pub fn review_by_plural(group: &str, version: &str, plural: &str) -> Option<&'static ReviewType> {
    REVIEWS
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Looks a type up the way URLs name it: group ("" for core), version and plural.
pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    REGISTRY
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Looks a type up the way manifests name it: `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    REGISTRY
        .iter()
        .find(|r| r.api_version() == api_version && r.kind == kind)
}

/// The type at a store index.
pub fn get(id: ResId) -> &'static ResourceType {
    &REGISTRY[id]
}

/// Shorthand for the core kinds controllers use all the time.
pub fn core(plural: &str) -> ResId {
    by_plural("", "v1", plural).expect("core kind in registry").id()
}

/// Shorthand: resource id by group and plural (version v1 for everything meshsim serves).
pub fn id(group: &str, plural: &str) -> ResId {
    by_plural(group, "v1", plural)
        .unwrap_or_else(|| panic!("{group}/{plural} is not in the registry"))
        .id()
}

/// The API groups in discovery order (stored kinds first, then the review-only groups).
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for g in REGISTRY
        .iter()
        .map(|r| r.group)
        .chain(REVIEWS.iter().map(|r| r.group))
    {
        if !g.is_empty() && !out.contains(&g) {
            out.push(g);
        }
    }
    out
}

/// Whether `group/version` is served (by a stored kind or a review kind).
pub fn serves_version(group: &str, version: &str) -> bool {
    REGISTRY.iter().any(|r| r.group == group && r.version == version)
        || REVIEWS.iter().any(|r| r.group == group && r.version == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_names_are_unique() {
        for (i, r) in REGISTRY.iter().enumerate() {
            assert_eq!(r.id(), i);
            let copy = *r;
            assert_eq!(
                copy.id(),
                i,
                "a copy outside the registry finds its index by value"
            );
            assert_eq!(by_plural(r.group, r.version, r.plural).unwrap().id(), i);
            assert_eq!(by_kind(&r.api_version(), r.kind).unwrap().id(), i);
        }
        assert_eq!(core("pods"), by_kind("v1", "Pod").unwrap().id());
    }
}
