//! Egress to hosts outside the cluster (`Settings::external_hosts`: the internet of the simulation), and
//! the outbound traffic policy only sidecars enforce.
//!
//! - A sidecar caller is limited by its outbound mode: the `outboundTrafficPolicy.mode` of the Sidecar
//!   resource that applies to it (one in its namespace whose `workloadSelector` matches the pod, else one
//!   without selector in its namespace, else one without selector in the root namespace), else the mesh
//!   config's (ConfigMap `istio` in the system namespace, key `mesh`); unset is `ALLOW_ANY`. Under
//!   `REGISTRY_ONLY` a host that is not registered answers 502 from Envoy's `BlackHoleCluster` (istio/istio
//!   issue 34632: "if it [is] registry only, it will [be] a blackhole cluster"; Istio's egress task
//!   `docs/tasks/traffic-management/egress/egress-control`). Registered = the host of a ServiceEntry
//!   (exact or `*.suffix`) that the Sidecar's `egress[].hosts` (`ns/host`, `*`, `.` = own namespace,
//!   `*.suffix`) let through; without such a Sidecar, every ServiceEntry. `ALLOW_ANY` goes through
//!   (`PassthroughCluster`).
//! - Ambient callers go through whatever the mode: ztunnel does not enforce `REGISTRY_ONLY` (istio/istio
//!   issue 54281) and ignores Sidecar resources (istio/api PR 3517).
//! - Un-meshed and External callers go through.
//! - Intended: denied when the caller pod is covered by `REGISTRY_ONLY` (its Sidecar or the mesh) and the
//!   host is not registered, whatever its data plane, so an ambient pod reaching such a host counts as
//!   wrongly allowed (the lockdown the mesh asked for is gone).

use std::collections::BTreeMap;

use serde_json::Value;

use super::model::{Class, Decided};
use super::snapshot::str_map;
use super::{Outcome, Response};
use crate::resources;
use crate::store::StoreView;

/// A Sidecar resource, reduced to what egress reads.
#[derive(Debug, Clone, Default)]
pub struct SidecarRes {
    pub namespace: String,
    /// `workloadSelector.labels` (`None`: every workload of the namespace).
    pub selector: Option<BTreeMap<String, String>>,
    /// Every `egress[].hosts` entry (`ns/host`).
    pub egress_hosts: Vec<String>,
    /// `outboundTrafficPolicy.mode`.
    pub mode: Option<String>,
}

/// What egress decisions read.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    /// Hosts that resolve outside the cluster.
    pub external_hosts: Vec<String>,
    /// The mesh config's `outboundTrafficPolicy.mode`.
    pub mesh_mode: Option<String>,
    /// `(namespace, host)` of every ServiceEntry.
    pub service_entry_hosts: Vec<(String, String)>,
    /// Sidecar resources of the caller's namespace and the root namespace.
    pub sidecars: Vec<SidecarRes>,
    pub root_ns: String,
}

/// The caller of an egress request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressCaller {
    Sidecar,
    Ambient,
    Other,
}

fn parse_sidecar(o: &Value) -> SidecarRes {
    let spec = &o["spec"];
    SidecarRes {
        namespace: o["metadata"]["namespace"].as_str().unwrap_or("").to_string(),
        selector: spec["workloadSelector"]
            .as_object()
            .map(|_| str_map(&spec["workloadSelector"]["labels"])),
        egress_hosts: spec["egress"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|e| e["hosts"].as_array().into_iter().flatten())
            .filter_map(|h| h.as_str().map(str::to_string))
            .collect(),
        mode: spec["outboundTrafficPolicy"]["mode"].as_str().map(str::to_string),
    }
}

/// The mesh config's outbound mode, from ConfigMap `istio` (key `mesh`) in the system namespace.
fn mesh_mode(view: &StoreView<'_>, root_ns: &str) -> Option<String> {
    let cm = view.get(resources::core("configmaps"), root_ns, "istio")?;
    let mesh: Value = serde_saphyr::from_str(cm["data"]["mesh"].as_str()?).ok()?;
    mesh["outboundTrafficPolicy"]["mode"].as_str().map(str::to_string)
}

/// Reads what an egress request from `caller_ns` needs.
pub fn load(
    view: &StoreView<'_>,
    root_ns: &str,
    caller_ns: Option<&str>,
    external_hosts: &[String],
) -> Egress {
    let sc = resources::id("networking.istio.io", "sidecars");
    let mut sidecars: Vec<SidecarRes> = view
        .list(sc, Some(root_ns))
        .into_iter()
        .map(parse_sidecar)
        .collect();
    if let Some(ns) = caller_ns.filter(|ns| *ns != root_ns) {
        sidecars.extend(view.list(sc, Some(ns)).into_iter().map(parse_sidecar));
    }
    let service_entry_hosts = view
        .list(resources::id("networking.istio.io", "serviceentries"), None)
        .into_iter()
        .flat_map(|o| {
            let ns = o["metadata"]["namespace"].as_str().unwrap_or("").to_string();
            o["spec"]["hosts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|h| h.as_str().map(str::to_string))
                .map(move |h| (ns.clone(), h))
                .collect::<Vec<_>>()
        })
        .collect();
    Egress {
        external_hosts: external_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        mesh_mode: mesh_mode(view, root_ns),
        service_entry_hosts,
        sidecars,
        root_ns: root_ns.to_string(),
    }
}

/// `*`, `*.suffix` or an exact DNS name.
fn dns_match(pattern: &str, host: &str) -> bool {
    pattern == "*"
        || pattern == host
        || pattern
            .strip_prefix("*.")
            .is_some_and(|s| host.ends_with(&format!(".{s}")))
}

impl Egress {
    /// Does `host` resolve outside the cluster?
    pub fn is_external(&self, host: &str) -> bool {
        self.external_hosts.iter().any(|h| h == host)
    }

    /// The Sidecar resource that applies to a pod of `ns` with `labels` (workload, namespace, root).
    fn sidecar_for(&self, ns: &str, labels: &BTreeMap<String, String>) -> Option<&SidecarRes> {
        let matches = |s: &&SidecarRes| {
            s.selector
                .as_ref()
                .is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
        };
        let ns_wide = |n: &str| {
            self.sidecars
                .iter()
                .find(|s| s.namespace == n && s.selector.is_none())
        };
        self.sidecars
            .iter()
            .filter(|s| s.namespace == ns)
            .find(matches)
            .or_else(|| ns_wide(ns))
            .or_else(|| ns_wide(&self.root_ns))
    }

    /// Whether a pod of `ns` with `labels`, were it a sidecar, may reach `host`: its outbound mode is not
    /// REGISTRY_ONLY, or `host` is a ServiceEntry host its Sidecar's egress hosts let through.
    pub fn lockdown_allows(&self, ns: &str, labels: &BTreeMap<String, String>, host: &str) -> bool {
        let sidecar = self.sidecar_for(ns, labels);
        let mode = sidecar
            .and_then(|s| s.mode.as_deref())
            .or(self.mesh_mode.as_deref());
        if mode != Some("REGISTRY_ONLY") {
            return true;
        }
        let visible = |se_ns: &str| match sidecar.filter(|s| !s.egress_hosts.is_empty()) {
            None => true,
            Some(s) => s.egress_hosts.iter().any(|eh| {
                let (n, h) = eh.split_once('/').unwrap_or(("*", eh));
                let ns_ok = n == "*" || (n == "." && se_ns == s.namespace) || n == se_ns;
                ns_ok && dns_match(h, host)
            }),
        };
        self.service_entry_hosts
            .iter()
            .any(|(se_ns, h)| dns_match(h, host) && visible(se_ns))
    }
}

/// One request to external `host` from a caller of `ns`/`labels` (none for External) on `data_plane`.
pub fn decide(
    e: &Egress,
    caller: EgressCaller,
    source: Option<(&str, &BTreeMap<String, String>)>,
    method: &str,
    host: &str,
    path_and_query: &str,
    request_id: impl FnOnce() -> String,
) -> Decided {
    let intended_allow = match (caller, source) {
        (EgressCaller::Sidecar | EgressCaller::Ambient, Some((ns, labels))) => {
            e.lockdown_allows(ns, labels, host)
        }
        _ => true,
    };
    let destination = Some(format!("external/{host}"));
    let (hop, blocked) = match caller {
        EgressCaller::Sidecar => ("sidecar", !intended_allow),
        EgressCaller::Ambient => ("ztunnel", false),
        EgressCaller::Other => ("none", false),
    };
    let mut headers = Vec::new();
    let (outcome, body, class) = if blocked {
        // Envoy's BlackHoleCluster: 502 with an empty body.
        headers.push(("server".to_string(), "envoy".to_string()));
        (Outcome::Http(502), String::new(), Class::Denied)
    } else {
        let mut body = format!("Host={host}\nURL={path_and_query}\nMethod={method}\nStatusCode=200\n");
        if caller == EgressCaller::Sidecar {
            // The caller's Envoy adds x-request-id (PassthroughCluster or a ServiceEntry route).
            let id = request_id();
            body.push_str(&format!("RequestHeader=X-Request-Id:{id}\n"));
            headers.push(("x-request-id".to_string(), id));
        }
        body.push_str("Hostname=external\n");
        (Outcome::Http(200), body, Class::AppReached)
    };
    Decided {
        response: Response {
            outcome,
            headers,
            body,
            enforcement: vec![hop.to_string()],
            intended_allow,
            wrongly_allowed: !intended_allow && class == Class::AppReached,
            wrongly_denied: intended_allow && class == Class::Denied,
        },
        class,
        destination,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(app: &str) -> BTreeMap<String, String> {
        [("app".to_string(), app.to_string())].into()
    }

    fn egress(mode: Option<&str>, sidecars: Vec<SidecarRes>) -> Egress {
        Egress {
            external_hosts: vec!["api.partner.example".into(), "allowed.partner.example".into()],
            mesh_mode: mode.map(str::to_string),
            service_entry_hosts: vec![("app".into(), "allowed.partner.example".into())],
            sidecars,
            root_ns: "istio-system".into(),
        }
    }

    fn call(e: &Egress, caller: EgressCaller, host: &str) -> Decided {
        decide(e, caller, Some(("app", &labels("web"))), "GET", host, "/", || {
            "id-1".into()
        })
    }

    #[test]
    fn mesh_registry_only_blocks_unregistered_hosts_for_sidecars_only() {
        let e = egress(Some("REGISTRY_ONLY"), vec![]);
        let d = call(&e, EgressCaller::Sidecar, "api.partner.example");
        assert_eq!(d.response.outcome, Outcome::Http(502));
        assert_eq!(d.class, Class::Denied);
        assert!(!d.response.intended_allow && !d.response.wrongly_denied);
        assert_eq!(d.destination.as_deref(), Some("external/api.partner.example"));
        let d = call(&e, EgressCaller::Sidecar, "allowed.partner.example");
        assert_eq!(d.response.outcome, Outcome::Http(200));
        assert_eq!(d.response.header("x-request-id"), Some("id-1"));
        // ztunnel does not enforce REGISTRY_ONLY: through, and counted as wrongly allowed.
        let d = call(&e, EgressCaller::Ambient, "api.partner.example");
        assert_eq!(d.response.outcome, Outcome::Http(200));
        assert!(d.response.wrongly_allowed);
        assert_eq!(d.response.enforcement, vec!["ztunnel"]);
        assert_eq!(
            call(&e, EgressCaller::Other, "api.partner.example")
                .response
                .outcome,
            Outcome::Http(200)
        );
        // ALLOW_ANY (or unset): passthrough.
        let e = egress(None, vec![]);
        assert_eq!(
            call(&e, EgressCaller::Sidecar, "api.partner.example")
                .response
                .outcome,
            Outcome::Http(200)
        );
    }

    #[test]
    fn sidecar_resource_mode_and_egress_hosts() {
        let sc = |selector: Option<&str>, hosts: &[&str], mode: Option<&str>| SidecarRes {
            namespace: "app".into(),
            selector: selector.map(labels),
            egress_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            mode: mode.map(str::to_string),
        };
        // The namespace's Sidecar locks egress down although the mesh allows any.
        let e = egress(
            None,
            vec![sc(None, &["./*", "istio-system/*"], Some("REGISTRY_ONLY"))],
        );
        assert_eq!(
            call(&e, EgressCaller::Sidecar, "api.partner.example")
                .response
                .outcome,
            Outcome::Http(502)
        );
        assert_eq!(
            call(&e, EgressCaller::Sidecar, "allowed.partner.example")
                .response
                .outcome,
            Outcome::Http(200)
        );
        // Egress hosts that do not include the ServiceEntry's namespace hide it: blocked too.
        let e = egress(None, vec![sc(None, &["istio-system/*"], Some("REGISTRY_ONLY"))]);
        assert_eq!(
            call(&e, EgressCaller::Sidecar, "allowed.partner.example")
                .response
                .outcome,
            Outcome::Http(502)
        );
        // A workload Sidecar with ALLOW_ANY wins over the namespace one for its pods.
        let e = egress(
            None,
            vec![
                sc(None, &["./*"], Some("REGISTRY_ONLY")),
                sc(Some("web"), &[], Some("ALLOW_ANY")),
            ],
        );
        assert_eq!(
            call(&e, EgressCaller::Sidecar, "api.partner.example")
                .response
                .outcome,
            Outcome::Http(200)
        );
        assert!(dns_match("*.partner.example", "api.partner.example"));
        assert!(!dns_match("*.partner.example", "partner.example"));
    }
}
