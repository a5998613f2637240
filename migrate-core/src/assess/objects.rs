//! Istio, Gateway API and Prometheus-operator objects of a [`super::Snapshot`], converted once, where the
//! snapshot is built, into typed metadata and a typed spec ([`Obj`]).
//!
//! Why: every decision reads the same typed form, and an object that does not convert is known by name and
//! field once instead of being skipped quietly at each place that reads it. The object as the API served it
//! is kept beside the typed form ([`Obj::raw`]): backups and the rehearsal's copy write it back unchanged,
//! and the snapshot serializes to exactly what it was built from.
//!
//! The spec types hold the fields the assessment reads, typed, and every other field the istio/api protos
//! (and the Gateway API types) define as kept JSON; a field outside those, at any depth of the typed part,
//! is kept (top-level ones in `extra` too) and reported ([`Obj::unknown_fields`]): a field this tool does
//! not know may change enforcement. Inside the parts kept as JSON (routes, traffic policies, listeners)
//! nothing is checked. AuthorizationPolicy is stricter, as before: an unknown field anywhere in its spec
//! fails the conversion ([`super::policy::AuthzPolicy::parse`]), because its effect at ztunnel cannot be
//! judged.
//!
//! Field lists: istio/api `security/v1beta1/{peer_authentication,request_authentication}.proto`,
//! `networking/v1alpha3/{virtual_service,destination_rule,sidecar,service_entry,envoy_filter}.proto`,
//! `telemetry/v1alpha1/telemetry.proto`, `extensions/v1alpha1/wasm.proto`,
//! `networking/v1beta1/proxy_config.proto`; kubernetes-sigs/gateway-api `apis/v1/{gateway,httproute}_types.go`
//! (experimental channel fields included).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::steps::ObjRef;

/// Why an object did not convert: the field (a path from the object's root, e.g.
/// `spec.rules[0].to[0].operation.verbs`) and a message that names the object and the field (the object is
/// the [`Obj`] that holds the error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConvertError {
    /// The field that did not convert.
    pub field: String,
    /// What is wrong, naming the object and the field.
    pub message: String,
}

/// A kind's typed spec: how it is converted from the object as served, and which of its fields are unknown.
pub trait Spec: Sized + Clone + fmt::Debug {
    /// Kind, for messages.
    const KIND: &'static str;

    /// Converts the object (the whole object as served: some kinds read their annotations too).
    fn convert(raw: &Value) -> Result<Self, ConvertError>;

    /// The spec as this tool understood it (every field it knows, without the unknown ones): a field of the
    /// object's spec missing here is unknown and reported as a warning. `None` for kinds whose unknown
    /// fields change no Istio behaviour (Prometheus-operator monitors) and for AuthorizationPolicy, which
    /// refuses them in [`Spec::convert`].
    fn understood(&self) -> Option<Value> {
        None
    }
}

/// One object of a snapshot: as served, its typed metadata, and its typed spec or why it did not convert.
#[derive(Clone, Debug)]
pub struct Obj<S> {
    raw: Value,
    meta: ObjectMeta,
    spec: Result<S, ConvertError>,
    unknown: Vec<String>,
}

impl<S: Spec> From<Value> for Obj<S> {
    /// The one conversion of an object: never fails, a conversion error is kept for the preflight to report
    /// (and the object for the backup).
    fn from(raw: Value) -> Self {
        let object = ObjRef::from_value(&raw);
        let meta = match raw.get("metadata") {
            None | Some(Value::Null) => Ok(ObjectMeta::default()),
            Some(m) => serde_path_to_error::deserialize::<_, ObjectMeta>(m).map_err(|e| {
                conversion_error(&object, S::KIND, &format!("metadata.{}", e.path()), e.inner())
            }),
        };
        let (meta, spec) = match meta {
            Ok(meta) => (meta, S::convert(&raw)),
            Err(e) => (ObjectMeta::default(), Err(e)),
        };
        let mut unknown = Vec::new();
        if let Some(understood) = spec.as_ref().ok().and_then(Spec::understood) {
            fields_not_in(&raw["spec"], &understood, "spec", &mut unknown);
        }
        Obj {
            raw,
            meta,
            spec,
            unknown,
        }
    }
}

impl<S: Spec> Obj<S> {
    /// The object as the API served it (backups, the rehearsal's copy).
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// Typed metadata (default when the metadata did not convert).
    pub fn meta(&self) -> &ObjectMeta {
        &self.meta
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.meta.name.as_deref().unwrap_or("")
    }

    /// `metadata.namespace`.
    pub fn namespace(&self) -> &str {
        self.meta.namespace.as_deref().unwrap_or("")
    }

    /// `metadata.labels` (empty when none).
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.meta.labels.clone().unwrap_or_default()
    }

    /// `kind` as served (the spec type's kind when absent).
    pub fn kind(&self) -> &str {
        self.raw["kind"].as_str().unwrap_or(S::KIND)
    }

    /// The object's reference (`apiVersion` and `kind` as served).
    pub fn obj_ref(&self) -> ObjRef {
        ObjRef::from_value(&self.raw)
    }

    /// The typed spec; `None` when the object did not convert (see [`Obj::error`]).
    pub fn spec(&self) -> Option<&S> {
        self.spec.as_ref().ok()
    }

    /// Why the object did not convert.
    pub fn error(&self) -> Option<&ConvertError> {
        self.spec.as_ref().err()
    }

    /// Paths of the spec fields this tool does not know (see [`Spec::understood`]), e.g. `spec.mtls.level`.
    pub fn unknown_fields(&self) -> &[String] {
        &self.unknown
    }
}

/// Converts the objects of one kind as listed: the one conversion, where a snapshot is built.
pub fn convert_all<S: Spec>(listed: Vec<Value>) -> Vec<Obj<S>> {
    listed.into_iter().map(Obj::from).collect()
}

/// The objects of `list` as served.
pub fn raw_values<S: Spec>(list: &[Obj<S>]) -> Vec<&Value> {
    list.iter().map(Obj::raw).collect()
}

/// The objects of `list` that converted, with their typed spec.
pub fn converted<S: Spec>(list: &[Obj<S>]) -> impl Iterator<Item = (&Obj<S>, &S)> {
    list.iter().filter_map(|o| Some((o, o.spec()?)))
}

impl<S> Serialize for Obj<S> {
    /// The object as served: a snapshot serializes to what it was built from.
    fn serialize<Se: Serializer>(&self, s: Se) -> Result<Se::Ok, Se::Error> {
        self.raw.serialize(s)
    }
}

impl<'de, S: Spec> Deserialize<'de> for Obj<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(Obj::from)
    }
}

fn conversion_error(object: &ObjRef, kind: &str, field: &str, why: impl fmt::Display) -> ConvertError {
    let ns = object.namespace.as_deref().unwrap_or("");
    ConvertError {
        field: field.to_string(),
        message: format!(
            "{kind} {ns}/{}: field {field} cannot be read ({why}); fix the field or delete the object",
            object.name
        ),
    }
}

/// Converts `spec` (absent = `{}`) into `T`, naming the field that does not fit.
fn spec_of<T: DeserializeOwned>(raw: &Value, kind: &str) -> Result<T, ConvertError> {
    let empty = Value::Object(Default::default());
    let spec = match raw.get("spec") {
        None | Some(Value::Null) => &empty,
        Some(s) => s,
    };
    serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "spec".to_string()
        } else {
            format!("spec.{path}")
        };
        conversion_error(&ObjRef::from_value(raw), kind, &field, e.inner())
    })
}

/// `null` read as the field's default: a list or map written as `key:` with no value in YAML is `null`, and
/// the API server prunes such nulls from custom resources anyway (structural schema pruning), so they mean
/// "not set".
fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// The paths of the object keys of `raw` that `understood` does not have, at any depth.
fn fields_not_in(raw: &Value, understood: &Value, at: &str, out: &mut Vec<String>) {
    match (raw, understood) {
        (Value::Object(r), Value::Object(u)) => {
            for (k, v) in r {
                let path = format!("{at}.{k}");
                match u.get(k) {
                    Some(uv) => fields_not_in(v, uv, &path, out),
                    None => out.push(path),
                }
            }
        }
        (Value::Array(r), Value::Array(u)) => {
            for (i, (rv, uv)) in r.iter().zip(u).enumerate() {
                fields_not_in(rv, uv, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Implements [`Spec`] for a serde-derived spec whose unknown top-level fields land in `extra` (not
/// serialized, so they are missing from what it understood, like unknown fields of its nested types).
macro_rules! spec_kind {
    ($ty:ty, $kind:literal) => {
        impl Spec for $ty {
            const KIND: &'static str = $kind;
            fn convert(raw: &Value) -> Result<Self, ConvertError> {
                spec_of(raw, $kind)
            }
            fn understood(&self) -> Option<Value> {
                serde_json::to_value(self).ok()
            }
        }
    };
}

/// A workload selector: `selector` / `workloadSelector` with `matchLabels` (istio/api
/// `type/v1beta1/selector.proto` `WorkloadSelector`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MatchLabels {
    /// Labels a workload must carry.
    #[serde(default, deserialize_with = "null_as_default")]
    pub match_labels: BTreeMap<String, String>,
}

/// A Sidecar / DestinationRule / ServiceEntry `workloadSelector` (`labels`, istio/api
/// `networking/v1alpha3/sidecar.proto` `WorkloadSelector`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadLabels {
    /// Labels a workload must carry.
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
}

/// A policy target reference (`targetRef` / `targetRefs`, istio/api `type/v1beta1/selector.proto`
/// `PolicyTargetReference`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyTargetRef {
    /// API group (`""` for core).
    #[serde(default, deserialize_with = "null_as_default")]
    pub group: String,
    /// Kind.
    #[serde(default, deserialize_with = "null_as_default")]
    pub kind: String,
    /// Name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// Namespace (only the policy's own is allowed).
    #[serde(default)]
    pub namespace: Option<String>,
}

/// The attachment fields shared by the policy kinds that can target a waypoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attach {
    /// Workload selector (sidecars and ztunnel).
    #[serde(default)]
    pub selector: Option<MatchLabels>,
    /// Legacy single target reference.
    #[serde(default)]
    pub target_ref: Option<PolicyTargetRef>,
    /// Target references (waypoints, gateways).
    #[serde(default, deserialize_with = "null_as_default")]
    pub target_refs: Vec<PolicyTargetRef>,
}

impl Attach {
    /// Attached by `targetRef(s)` (to a waypoint or gateway), not by workload selector.
    pub fn has_target_refs(&self) -> bool {
        self.target_ref.is_some() || !self.target_refs.is_empty()
    }

    /// The selector's labels, `None` without a selector.
    pub fn selector_labels(&self) -> Option<&BTreeMap<String, String>> {
        self.selector.as_ref().map(|s| &s.match_labels)
    }
}

/// A PeerAuthentication mTLS setting.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mtls {
    /// `UNSET`, `DISABLE`, `PERMISSIVE` or `STRICT` (absent = `UNSET`).
    #[serde(default)]
    pub mode: Option<String>,
}

/// security.istio.io PeerAuthentication spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthentication {
    /// Workload selector (none = namespace-wide, mesh-wide in the root namespace).
    #[serde(default)]
    pub selector: Option<MatchLabels>,
    /// The workload-level mode.
    #[serde(default)]
    pub mtls: Option<Mtls>,
    /// Per-port modes (port number -> mode).
    #[serde(default, deserialize_with = "null_as_default")]
    pub port_level_mtls: BTreeMap<String, Mtls>,
    /// Fields this tool does not know.
    #[serde(flatten, skip_serializing)]
    pub extra: BTreeMap<String, Value>,
}
spec_kind!(PeerAuthentication, "PeerAuthentication");

impl PeerAuthentication {
    /// The selector's labels (empty for a namespace-wide policy).
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        self.selector
            .as_ref()
            .map(|s| s.match_labels.clone())
            .unwrap_or_default()
    }

    /// The workload-level mode, if set.
    pub fn mode(&self) -> Option<&str> {
        self.mtls.as_ref()?.mode.as_deref()
    }

    /// Does any level of the policy set `DISABLE`?
    pub fn disables_mtls(&self) -> bool {
        self.mode() == Some("DISABLE")
            || self
                .port_level_mtls
                .values()
                .any(|m| m.mode.as_deref() == Some("DISABLE"))
    }
}

/// security.istio.io RequestAuthentication spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestAuthentication {
    /// Selector or target references.
    #[serde(flatten)]
    pub attach: Attach,
    /// JWT rules as written.
    #[serde(default, deserialize_with = "null_as_default")]
    pub jwt_rules: Vec<Value>,
    /// Fields this tool does not know.
    #[serde(flatten, skip_serializing)]
    pub extra: BTreeMap<String, Value>,
}
spec_kind!(RequestAuthentication, "RequestAuthentication");

/// networking.istio.io VirtualService spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualService {
    /// Hosts the routes apply to.
    #[serde(default, deserialize_with = "null_as_default")]
    pub hosts: Vec<String>,
    /// Gateways (and `mesh`) the routes apply to (`None` = not set: mesh only).
    #[serde(default)]
    pub gateways: Option<Vec<String>>,
    /// HTTP routes as written.
    #[serde(default, deserialize_with = "null_as_default")]
    pub http: Vec<Value>,
    /// TLS routes as written.
    #[serde(default)]
    pub tls: Option<Vec<Value>>,
    /// TCP routes as written.
    #[serde(default)]
    pub tcp: Option<Vec<Value>>,
    /// Namespaces the routes are visible to.
    #[serde(default)]
    pub export_to: Option<Vec<String>>,
    /// Fields this tool does not know.
    #[serde(flatten, skip_serializing)]
    pub extra: BTreeMap<String, Value>,
}
spec_kind!(VirtualService, "VirtualService");

/// networking.istio.io DestinationRule spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRule {
    /// The destination host.
    #[serde(default, deserialize_with = "null_as_default")]
    pub host: String,
    /// Traffic policy as written.
    #[serde(default)]
    pub traffic_policy: Option<Value>,
    /// Subsets as written.
    #[serde(default, deserialize_with = "null_as_default")]
    pub subsets: Vec<Value>,
    /// Namespaces the rule is visible to.
    #[serde(default, deserialize_with = "null_as_default")]
    pub export_to: Vec<String>,
    /// Workloads the rule applies to.
    #[serde(default)]
    pub workload_selector: Option<MatchLabels>,
    /// Fields this tool does not know.
    #[serde(flatten, skip_serializing)]
    pub extra: BTreeMap<String, Value>,
}
spec_kind!(DestinationRule, "DestinationRule");

/// A Sidecar's outbound traffic policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OutboundTrafficPolicy {
    /// `REGISTRY_ONLY` or `ALLOW_ANY`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Egress proxy as written.
    #[serde(default, rename = "egressProxy")]
    pub egress_proxy: Option<Value>,
}

/// networking.istio.io Sidecar spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sidecar {
    /// Workloads it applies to (none = every workload of the namespace).
    #[serde(default)]
    pub workload_selector: Option<WorkloadLabels>,
    /// Ingress listeners as written.
    #[serde(default, deserialize_with = "null_as_default")]
    pub ingress: Vec<Value>,
    /// Egress listeners as written.
    #[serde(default, deserialize_with = "null_as_default")]
    pub egress: Vec<Value>,
    /// Inbound connection pool as written.
    #[serde(default)]
    pub inbound_connection_pool: Option<Value>,
    /// Outbound traffic policy.
    #[serde(default)]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    /// Fields this tool does not know.
    #[serde(flatten, skip_serializing)]
    pub extra: BTreeMap<String, Value>,
}
spec_kind!(Sidecar, "Sidecar");

/// networking.istio.io ServiceEntry spec (copied by the rehearsal, not assessed).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntry {
    /// Hosts.
    #[serde(default, deserialize_with = "null_as_default")]
    pub hosts: Vec<String>,
    /// Addresses.
    #[serde(default, deserialize_with = "null_as_default")]
    pub addresses: Vec<String>,
    /// Ports as written.
    #[serde(default, deserialize_with = "null_as_default")]
    pub ports: Vec<Value>,
    /// `MESH_EXTERNAL` or `MESH_INTERNAL`.
    #[serde(default)]
    pub location: Option<String>,
    /// `NONE`, `STATIC`, `DNS`, `DNS_ROUND_ROBIN`.
    #[serde(default)]
    pub resolution: Option<String>,
    /// Endpoints as written.
    #[serde(default, deserialize_with = "null_as_default")]
    pub endpoints: Vec<Value>,
    /// Workload selector as written.
    #[serde(default)]
    pub workload_selector: Option<WorkloadLabels>,
    /// Namespaces the entry is visible to.
    #[serde(default, deserialize_with = "null_as_default")]
    pub export_to: Vec<String>,
    /// Subject alternative names.
    #[serde(default, deserialize_with = "null_as_default")]
    pub subject_alt_names: Vec<String>,
    /// Fields this tool does not know.
    #[serde(flatten, skip_serializing)]
    pub extra: BTreeMap<String, Value>,
}
spec_kind!(ServiceEntry, "ServiceEntry");

/// networking.istio.io EnvoyFilter spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyFilter {
    /// Workloads it patches.
    #[serde(default)]
    pub workload_selector: Option<WorkloadLabels>,
    /// Target references.
    #[serde(default, deserialize_with = "null_as_default")]
    pub target_refs: Vec<PolicyTargetRef>,
    /// Patches as written.
    #[serde(default, deserialize_with = "null_as_default")]
    pub config_patches: Vec<Value>,
    /// Patch order.
    #[serde(default)]
    pub priority: Option<i64>,
    /// Fields this tool does not know.
    #[serde(flatten, skip_serializing)]
    pub extra: BTreeMap<String, Value>,
}
spec_kind!(EnvoyFilter, "EnvoyFilter");

/// telemetry.istio.io Telemetry spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Telemetry {
    /// Selector or target references.
    #[serde(flatten)]
    pub attach: Attach,
    /// Tracing as written.
    #[serde(default)]
    pub tracing: Option<Value>,
    /// Metrics as written.
    #[serde(default)]
    pub metrics: Option<Value>,
    /// Access logging as written.
    #[serde(default)]
    pub access_logging: Option<Value>,
    /// Fields this tool does not know.
    #[serde(flatten, skip_serializing)]
    pub extra: BTreeMap<String, Value>,
}
spec_kind!(Telemetry, "Telemetry");

/// extensions.istio.io WasmPlugin spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmPlugin {
    /// Selector or target references.
    #[serde(flatten)]
    pub attach: Attach,
    /// Module URL.
    #[serde(default)]
    pub url: Option<String>,
    /// `UNSPECIFIED_PHASE`, `AUTHN`, `AUTHZ`, `STATS`.
    #[serde(default)]
    pub phase: Option<String>,
    /// Every other field istio/api defines, as written.
    #[serde(flatten)]
    pub known: WasmPluginRest,
    /// Fields this tool does not know.
    #[serde(flatten, skip_serializing)]
    pub extra: BTreeMap<String, Value>,
}
spec_kind!(WasmPlugin, "WasmPlugin");

/// The WasmPlugin fields the assessment copies but does not decide on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmPluginRest {
    /// Module checksum.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Image pull policy.
    #[serde(default)]
    pub image_pull_policy: Option<String>,
    /// Image pull secret.
    #[serde(default)]
    pub image_pull_secret: Option<String>,
    /// Plugin configuration.
    #[serde(default)]
    pub plugin_config: Option<Value>,
    /// Plugin name.
    #[serde(default)]
    pub plugin_name: Option<String>,
    /// Order within the phase.
    #[serde(default)]
    pub priority: Option<i64>,
    /// `FAIL_CLOSE` or `FAIL_OPEN`.
    #[serde(default)]
    pub fail_strategy: Option<String>,
    /// VM configuration.
    #[serde(default)]
    pub vm_config: Option<Value>,
    /// Traffic selectors.
    #[serde(default, rename = "match", deserialize_with = "null_as_default")]
    pub match_: Vec<Value>,
    /// `HTTP` or `NETWORK`.
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
}

/// networking.istio.io ProxyConfig spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyConfig {
    /// Workloads whose proxies it configures.
    #[serde(default)]
    pub selector: Option<MatchLabels>,
    /// Worker threads.
    #[serde(default)]
    pub concurrency: Option<i64>,
    /// Proxy environment variables.
    #[serde(default, deserialize_with = "null_as_default")]
    pub environment_variables: BTreeMap<String, String>,
    /// Proxy image settings.
    #[serde(default)]
    pub image: Option<Value>,
    /// Fields this tool does not know.
    #[serde(flatten, skip_serializing)]
    pub extra: BTreeMap<String, Value>,
}
spec_kind!(ProxyConfig, "ProxyConfig");

impl ProxyConfig {
    /// The fields it sets besides its selector, sorted.
    pub fn set_fields(&self) -> Vec<String> {
        let mut f: Vec<String> = [
            ("concurrency", self.concurrency.is_some()),
            ("environmentVariables", !self.environment_variables.is_empty()),
            ("image", self.image.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| k.to_string())
        .chain(self.extra.keys().cloned())
        .collect();
        f.sort();
        f
    }
}

/// A Gateway API `parentRefs` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// Group (default `gateway.networking.k8s.io`).
    #[serde(default)]
    pub group: Option<String>,
    /// Kind (default `Gateway`).
    #[serde(default)]
    pub kind: Option<String>,
    /// Namespace (default: the route's).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// Listener section.
    #[serde(default)]
    pub section_name: Option<String>,
    /// Port.
    #[serde(default)]
    pub port: Option<i64>,
}

/// gateway.networking.k8s.io HTTPRoute spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    /// Where the route attaches (Gateways, or Services for mesh routing).
    #[serde(default, deserialize_with = "null_as_default")]
    pub parent_refs: Vec<ParentRef>,
    /// Hostnames.
    #[serde(default, deserialize_with = "null_as_default")]
    pub hostnames: Vec<String>,
    /// Rules as written.
    #[serde(default, deserialize_with = "null_as_default")]
    pub rules: Vec<Value>,
    /// Experimental channel: attach to the default Gateways.
    #[serde(default)]
    pub use_default_gateways: Option<String>,
    /// Fields this tool does not know.
    #[serde(flatten, skip_serializing)]
    pub extra: BTreeMap<String, Value>,
}
spec_kind!(HttpRoute, "HTTPRoute");

/// gateway.networking.k8s.io Gateway spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gateway {
    /// The GatewayClass (`istio-waypoint` for waypoints).
    #[serde(default, deserialize_with = "null_as_default")]
    pub gateway_class_name: String,
    /// Listeners as written.
    #[serde(default, deserialize_with = "null_as_default")]
    pub listeners: Vec<Value>,
    /// Requested addresses as written.
    #[serde(default, deserialize_with = "null_as_default")]
    pub addresses: Vec<Value>,
    /// Infrastructure labels and annotations as written.
    #[serde(default)]
    pub infrastructure: Option<Value>,
    /// Experimental channel fields, as written.
    #[serde(default, rename = "allowedListeners")]
    pub allowed_listeners: Option<Value>,
    /// Experimental channel: the Gateway's scope.
    #[serde(default, rename = "defaultScope")]
    pub default_scope: Option<String>,
    /// TLS settings (`backendTLS` before Gateway API v1.4).
    #[serde(default)]
    pub tls: Option<Value>,
    /// Backend TLS (Gateway API v1.2-v1.3 experimental).
    #[serde(default, rename = "backendTLS")]
    pub backend_tls: Option<Value>,
    /// Fields this tool does not know.
    #[serde(flatten, skip_serializing)]
    pub extra: BTreeMap<String, Value>,
}
spec_kind!(Gateway, "Gateway");

/// monitoring.coreos.com PodMonitor / ServiceMonitor spec: only the scrape endpoints are read; their many
/// other fields change no Istio behaviour, so none is reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Monitor {
    /// PodMonitor endpoints.
    #[serde(default, deserialize_with = "null_as_default")]
    pub pod_metrics_endpoints: Vec<Value>,
    /// ServiceMonitor endpoints.
    #[serde(default, deserialize_with = "null_as_default")]
    pub endpoints: Vec<Value>,
}

impl Spec for Monitor {
    const KIND: &'static str = "monitor";
    fn convert(raw: &Value) -> Result<Self, ConvertError> {
        spec_of(raw, raw["kind"].as_str().unwrap_or(Self::KIND))
    }
}

impl Monitor {
    /// The scrape endpoints, of either kind.
    pub fn scrape_endpoints(&self) -> impl Iterator<Item = &Value> {
        self.pod_metrics_endpoints.iter().chain(&self.endpoints)
    }
}

impl Spec for super::policy::AuthzPolicy {
    const KIND: &'static str = "AuthorizationPolicy";

    /// [`super::policy::AuthzPolicy::parse`]: an unknown field or action fails the conversion with the same
    /// message the preflight has always reported.
    fn convert(raw: &Value) -> Result<Self, ConvertError> {
        use super::policy::PolicyError;
        Self::parse(raw).map_err(|e| ConvertError {
            field: match &e {
                PolicyError::UnknownField { field, .. } => format!("spec.{field}"),
                PolicyError::UnknownAction { .. } => "spec.action".into(),
            },
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assess::policy::AuthzPolicy;
    use serde_json::json;

    #[test]
    fn a_field_of_the_wrong_type_names_the_object_and_the_field() {
        let o: Obj<VirtualService> = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "api", "namespace": "app"}, "spec": {"hosts": "api"}})
        .into();
        let e = o.error().expect("hosts must be a list");
        assert_eq!(e.field, "spec.hosts");
        assert_eq!(
            o.obj_ref(),
            ObjRef::new("networking.istio.io/v1", "VirtualService", "app", "api")
        );
        assert!(
            e.message
                .starts_with("VirtualService app/api: field spec.hosts cannot be read"),
            "{e}"
        );
        assert!(o.spec().is_none());
        assert_eq!(o.name(), "api");
    }

    #[test]
    fn nested_and_metadata_errors_carry_their_path() {
        let o: Obj<PeerAuthentication> = json!({"kind": "PeerAuthentication",
            "metadata": {"name": "p", "namespace": "app"}, "spec": {"portLevelMtls": {"8080": {"mode": 3}}}})
        .into();
        assert_eq!(o.error().unwrap().field, "spec.portLevelMtls.8080.mode");
        let o: Obj<Gateway> =
            json!({"kind": "Gateway", "metadata": {"name": "g", "labels": {"a": 1}}, "spec": {}}).into();
        assert_eq!(o.error().unwrap().field, "metadata.labels.a");
    }

    #[test]
    fn unknown_fields_of_nested_types_are_reported_with_their_path() {
        let o: Obj<PeerAuthentication> = json!({"kind": "PeerAuthentication",
            "metadata": {"name": "p", "namespace": "app"},
            "spec": {"selector": {"matchLabels": {"app": "api"}, "matchExpressions": []},
                     "mtls": {"mode": "STRICT", "level": 2}, "portLevelMtls": {"8080": {"mode": "DISABLE", "x": 1}}}})
        .into();
        assert_eq!(
            o.unknown_fields(),
            [
                "spec.mtls.level",
                "spec.portLevelMtls.8080.x",
                "spec.selector.matchExpressions"
            ]
        );
        assert!(o.spec().unwrap().disables_mtls());
        // Fields kept as written (a VirtualService's routes) are not looked into.
        let vs: Obj<VirtualService> = json!({"kind": "VirtualService", "metadata": {"name": "v"},
            "spec": {"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a"}}], "anything": 1}]}})
        .into();
        assert!(vs.unknown_fields().is_empty(), "{:?}", vs.unknown_fields());
    }

    #[test]
    fn null_lists_and_maps_are_not_set() {
        let o: Obj<HttpRoute> = json!({"kind": "HTTPRoute", "metadata": {"name": "r"},
            "spec": {"parentRefs": null, "hostnames": null, "rules": [{}]}})
        .into();
        let r = o.spec().expect("null is not set");
        assert!(r.parent_refs.is_empty() && r.hostnames.is_empty());
        assert_eq!(r.rules.len(), 1);
    }

    #[test]
    fn unknown_spec_fields_are_kept_and_listed() {
        let o: Obj<Telemetry> = json!({"kind": "Telemetry", "metadata": {"name": "t", "namespace": "app"},
            "spec": {"selector": {"matchLabels": {"app": "api"}}, "metrics": [], "newThing": {"x": 1}}})
        .into();
        let t = o.spec().unwrap();
        assert_eq!(o.unknown_fields(), ["spec.newThing"]);
        assert_eq!(t.extra["newThing"], json!({"x": 1}));
        assert_eq!(t.attach.selector_labels().unwrap()["app"], "api");
        assert!(!t.attach.has_target_refs());
    }

    #[test]
    fn known_fields_of_every_kind_are_not_reported() {
        let gw: Obj<Gateway> = json!({"kind": "Gateway", "metadata": {"name": "w"}, "spec": {
            "gatewayClassName": "istio-waypoint", "listeners": [], "addresses": [], "infrastructure": {},
            "allowedListeners": {}, "defaultScope": "All", "tls": {}, "backendTLS": {}}})
        .into();
        assert_eq!(gw.unknown_fields(), Vec::<String>::new());
        let w: Obj<WasmPlugin> = json!({"kind": "WasmPlugin", "metadata": {"name": "w"}, "spec": {
            "selector": {"matchLabels": {}}, "url": "oci://x", "sha256": "a", "imagePullPolicy": "Always",
            "imagePullSecret": "s", "pluginConfig": {}, "pluginName": "n", "phase": "AUTHN", "priority": 1,
            "failStrategy": "FAIL_OPEN", "vmConfig": {}, "match": [], "type": "HTTP", "targetRefs": []}})
        .into();
        assert_eq!(w.unknown_fields(), Vec::<String>::new());
        let m: Obj<Monitor> = json!({"kind": "PodMonitor", "metadata": {"name": "m"},
            "spec": {"podMetricsEndpoints": [{"port": "x"}], "selector": {}, "jobLabel": "j"}})
        .into();
        assert_eq!(
            m.unknown_fields(),
            Vec::<String>::new(),
            "monitor fields are not Istio's"
        );
        assert_eq!(m.spec().unwrap().scrape_endpoints().count(), 1);
    }

    #[test]
    fn an_authorization_policy_keeps_its_parse_error() {
        let o: Obj<AuthzPolicy> = json!({"kind": "AuthorizationPolicy",
            "metadata": {"name": "p", "namespace": "app"},
            "spec": {"rules": [{"to": [{"operation": {"verbs": ["GET"]}}]}]}})
        .into();
        let e = o.error().unwrap();
        assert_eq!(e.field, "spec.rules[0].to[0].operation.verbs");
        let parse = AuthzPolicy::parse(o.raw()).unwrap_err();
        assert_eq!(e.message, parse.to_string());
    }

    #[test]
    fn the_object_serializes_as_served() {
        // Unknown fields, status and server fields all survive: the backup is what the API returned.
        let text = r#"{"apiVersion":"networking.istio.io/v1","kind":"DestinationRule","metadata":{"name":"d","namespace":"app","resourceVersion":"7","uid":"u"},"spec":{"host":"api","trafficPolicy":{"tls":{"mode":"ISTIO_MUTUAL"}},"zzz":1},"status":{"observedGeneration":2}}"#;
        let o: Obj<DestinationRule> = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&o).unwrap(), text);
        assert_eq!(o.spec().unwrap().host, "api");
        assert_eq!(o.unknown_fields(), ["spec.zzz"]);
    }
}
