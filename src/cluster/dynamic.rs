//! Istio, Gateway API and Prometheus-operator kinds, accessed as `DynamicObject`s through fixed
//! `ApiResource`s (no discovery round trips; typed crates for these kinds do not support kube 5 yet).
//! A missing CRD (404 on list) means "none of them", not an error.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch};
use serde::{Deserialize, Serialize};

use super::{Cluster, ClusterError, obj_name};

/// The custom kinds the tool reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DynKind {
    Gateway,
    HttpRoute,
    AuthorizationPolicy,
    PeerAuthentication,
    RequestAuthentication,
    VirtualService,
    DestinationRule,
    Sidecar,
    ServiceEntry,
    EnvoyFilter,
    Telemetry,
    WasmPlugin,
    ProxyConfig,
    PodMonitor,
    ServiceMonitor,
    /// Core Services, only for the per-version Services the policy phase creates (VirtualService subsets
    /// to Services); not in [`DynKind::ALL`]: snapshots and backups read Services typed.
    Service,
}

impl DynKind {
    /// Every kind, in a stable order.
    pub const ALL: [DynKind; 15] = [
        DynKind::Gateway,
        DynKind::HttpRoute,
        DynKind::AuthorizationPolicy,
        DynKind::PeerAuthentication,
        DynKind::RequestAuthentication,
        DynKind::VirtualService,
        DynKind::DestinationRule,
        DynKind::Sidecar,
        DynKind::ServiceEntry,
        DynKind::EnvoyFilter,
        DynKind::Telemetry,
        DynKind::WasmPlugin,
        DynKind::ProxyConfig,
        DynKind::PodMonitor,
        DynKind::ServiceMonitor,
    ];

    /// (group, version, kind, plural).
    pub fn gvkp(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            DynKind::Gateway => ("gateway.networking.k8s.io", "v1", "Gateway", "gateways"),
            DynKind::HttpRoute => ("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"),
            DynKind::AuthorizationPolicy => (
                "security.istio.io",
                "v1",
                "AuthorizationPolicy",
                "authorizationpolicies",
            ),
            DynKind::PeerAuthentication => (
                "security.istio.io",
                "v1",
                "PeerAuthentication",
                "peerauthentications",
            ),
            DynKind::RequestAuthentication => (
                "security.istio.io",
                "v1",
                "RequestAuthentication",
                "requestauthentications",
            ),
            DynKind::VirtualService => ("networking.istio.io", "v1", "VirtualService", "virtualservices"),
            DynKind::DestinationRule => ("networking.istio.io", "v1", "DestinationRule", "destinationrules"),
            DynKind::Sidecar => ("networking.istio.io", "v1", "Sidecar", "sidecars"),
            DynKind::ServiceEntry => ("networking.istio.io", "v1", "ServiceEntry", "serviceentries"),
            DynKind::EnvoyFilter => ("networking.istio.io", "v1", "EnvoyFilter", "envoyfilters"),
            DynKind::Telemetry => ("telemetry.istio.io", "v1", "Telemetry", "telemetries"),
            DynKind::WasmPlugin => ("extensions.istio.io", "v1alpha1", "WasmPlugin", "wasmplugins"),
            DynKind::ProxyConfig => ("networking.istio.io", "v1beta1", "ProxyConfig", "proxyconfigs"),
            DynKind::PodMonitor => ("monitoring.coreos.com", "v1", "PodMonitor", "podmonitors"),
            DynKind::ServiceMonitor => ("monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors"),
            DynKind::Service => ("", "v1", "Service", "services"),
        }
    }

    /// The kind name (`AuthorizationPolicy`).
    pub fn kind(self) -> &'static str {
        self.gvkp().2
    }

    /// `group/version` (`version` alone for the core group).
    pub fn api_version(self) -> String {
        let (g, v, _, _) = self.gvkp();
        if g.is_empty() {
            v.to_string()
        } else {
            format!("{g}/{v}")
        }
    }

    /// The fixed ApiResource (no discovery).
    pub fn api_resource(self) -> ApiResource {
        let (g, v, k, p) = self.gvkp();
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), p)
    }

    /// The kind for an `apiVersion` group and kind name (any version of the group is accepted, since
    /// older objects may say `v1beta1`).
    pub fn from_group_kind(api_version: &str, kind: &str) -> Option<DynKind> {
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        DynKind::ALL.into_iter().chain([DynKind::Service]).find(|k| {
            let (g, _, kn, _) = k.gvkp();
            g == group && kn == kind
        })
    }
}

impl std::fmt::Display for DynKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

impl Cluster {
    /// A dynamic API for `kind` in namespace `ns`.
    pub fn dynamic(&self, kind: DynKind, ns: &str) -> kube::Api<DynamicObject> {
        kube::Api::namespaced_with(self.client().clone(), ns, &kind.api_resource())
    }

    /// Lists `kind` in `ns` with `apiVersion`/`kind` filled in; a missing CRD yields an empty list.
    pub async fn list_dyn(&self, kind: DynKind, ns: &str) -> Result<Vec<DynamicObject>, ClusterError> {
        let api = self.dynamic(kind, ns);
        let what = format!("list {} in {ns}", kind.kind());
        let lp = ListParams::default();
        match self.call(&what, || api.list(&lp)).await {
            Ok(list) => Ok(list.items.into_iter().map(|o| with_types(kind, o)).collect()),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Reads one object, `None` when it (or its CRD) does not exist.
    pub async fn get_dyn(
        &self,
        kind: DynKind,
        ns: &str,
        name: &str,
    ) -> Result<Option<DynamicObject>, ClusterError> {
        let api = self.dynamic(kind, ns);
        let what = format!("get {}", obj_name(kind.kind(), Some(ns), name));
        Ok(self
            .call(&what, || api.get_opt(name))
            .await?
            .map(|o| with_types(kind, o)))
    }

    /// Creates an object (must not carry a resourceVersion).
    pub async fn create_dyn(
        &self,
        kind: DynKind,
        ns: &str,
        obj: &DynamicObject,
    ) -> Result<DynamicObject, ClusterError> {
        let api = self.dynamic(kind, ns);
        let name = obj.metadata.name.clone().unwrap_or_default();
        let what = format!("create {}", obj_name(kind.kind(), Some(ns), &name));
        let pp = self.post_params();
        self.call(&what, || api.create(&pp, obj)).await
    }

    /// Replaces an object; its `metadata.resourceVersion` is the precondition.
    pub async fn replace_dyn(
        &self,
        kind: DynKind,
        ns: &str,
        obj: &DynamicObject,
    ) -> Result<DynamicObject, ClusterError> {
        let api = self.dynamic(kind, ns);
        let name = obj.metadata.name.clone().unwrap_or_default();
        let what = format!("replace {}", obj_name(kind.kind(), Some(ns), &name));
        let pp = self.post_params();
        self.call(&what, || api.replace(&name, &pp, obj)).await
    }

    /// JSON merge patch of an object (custom resources do not take strategic merge patches).
    pub async fn merge_patch_dyn(
        &self,
        kind: DynKind,
        ns: &str,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<DynamicObject, ClusterError> {
        let api = self.dynamic(kind, ns);
        let what = format!("patch {}", obj_name(kind.kind(), Some(ns), name));
        let pp = self.patch_params();
        let p = Patch::Merge(patch);
        self.call(&what, || api.patch(name, &pp, &p)).await
    }

    /// Deletes an object; `Ok(false)` when it was already gone.
    pub async fn delete_dyn(&self, kind: DynKind, ns: &str, name: &str) -> Result<bool, ClusterError> {
        let api = self.dynamic(kind, ns);
        let what = format!("delete {}", obj_name(kind.kind(), Some(ns), name));
        let dp = self.delete_params();
        match self.call(&what, || api.delete(name, &dp)).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Fills `apiVersion`/`kind`, which the API server omits on list items.
pub fn with_types(kind: DynKind, mut o: DynamicObject) -> DynamicObject {
    if o.types.is_none() {
        o.types = Some(kube::api::TypeMeta {
            api_version: kind.api_version(),
            kind: kind.kind().to_string(),
        });
    }
    o
}
