//! Reads what the pure assessment needs ([`crate::assess::Snapshot`]): one namespace's objects, listed in
//! parallel, plus the cluster-wide facts ([`ClusterInfo`]) read once per run.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Cluster, ClusterError, DynKind};
use crate::assess::install::{self, GatewayCrd, InstallFacts};
use crate::assess::objects::convert_all;
use crate::assess::{ClusterInfo, Snapshot};

impl Cluster {
    async fn list_ns<K>(&self, ns: &str, kind: &str) -> Result<Vec<K>, ClusterError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        let api: kube::Api<K> = self.namespaced(ns);
        let lp = ListParams::default();
        match self.call(&format!("list {kind} in {ns}"), || api.list(&lp)).await {
            Ok(l) => Ok(l.items),
            // A kind the API server does not serve (e.g. CronJobs in a minimal cluster): none of them.
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    async fn list_dyn_values(&self, kind: DynKind, ns: &str) -> Result<Vec<Value>, ClusterError> {
        let objs = self.list_dyn(kind, ns).await?;
        objs.iter()
            .map(|o| {
                serde_json::to_value(o).map_err(|e| ClusterError::Decode {
                    what: format!("{kind} in {ns}"),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    /// Reads one namespace for the assessment, with the cluster-wide `info` read by
    /// [`Cluster::read_cluster_info`].
    pub async fn read_snapshot(&self, ns: &str, info: &ClusterInfo) -> Result<Snapshot, ClusterError> {
        let ns_api: kube::Api<Namespace> = self.all();
        let ns_what = format!("get Namespace {ns}");
        let namespace = self.call(&ns_what, || ns_api.get(ns));
        let core = futures::future::try_join5(
            self.list_ns::<Service>(ns, "Services"),
            self.list_ns::<Deployment>(ns, "Deployments"),
            self.list_ns::<StatefulSet>(ns, "StatefulSets"),
            self.list_ns::<DaemonSet>(ns, "DaemonSets"),
            self.list_ns::<ReplicaSet>(ns, "ReplicaSets"),
        );
        let more = futures::future::try_join3(
            self.list_ns::<Pod>(ns, "Pods"),
            self.list_ns::<Job>(ns, "Jobs"),
            self.list_ns::<CronJob>(ns, "CronJobs"),
        );
        let dynamic =
            futures::future::try_join_all(DynKind::ALL.iter().map(|k| self.list_dyn_values(*k, ns)));
        let (
            namespace,
            (services, deployments, statefulsets, daemonsets, replicasets),
            (pods, jobs, cronjobs),
            dyns,
        ) = futures::future::try_join4(namespace, core, more, dynamic).await?;
        let mut by_kind: BTreeMap<DynKind, Vec<Value>> = DynKind::ALL.iter().copied().zip(dyns).collect();
        let objects = Objects {
            services,
            deployments,
            statefulsets,
            daemonsets,
            replicasets,
            pods,
            jobs,
            cronjobs,
        };
        Ok(assemble(
            namespace,
            objects,
            |k| by_kind.remove(&k).unwrap_or_default(),
            info,
        ))
    }

    /// Every namespace's labels, read now: other namespaces change data plane while a fleet migrates, and the
    /// enforcement check needs their current one (a caller migrated earlier in the run is ambient).
    pub async fn read_namespace_labels(
        &self,
    ) -> Result<std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>, ClusterError>
    {
        let ns_api: kube::Api<Namespace> = self.all();
        let lp = ListParams::default();
        let list = self.call("list Namespaces", || ns_api.list(&lp)).await?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|n| Some((n.metadata.name?, n.metadata.labels.unwrap_or_default())))
            .collect())
    }

    /// Reads the cluster-wide facts: ztunnel and istio-cni DaemonSets, the mesh config (root namespace,
    /// trust domain, outbound traffic policy), injector webhooks (revisions, tags, `enableNamespacesByDefault` = Istio's
    /// `auto.sidecar-injector.istio.io` webhook), root-namespace policies and every namespace's labels.
    ///
    /// The reads go out together wherever one does not need another's answer: the root namespace's
    /// policies wait for the mesh config (which names the root) and istiod's Deployment for the injector
    /// webhooks (which name the revisions); everything else is one round of requests in flight at once.
    pub async fn read_cluster_info(&self, system_ns: &str) -> Result<ClusterInfo, ClusterError> {
        let ds_api: kube::Api<DaemonSet> = self.namespaced(system_ns);
        let cm_api: kube::Api<ConfigMap> = self.namespaced(system_ns);
        let mwc_api: kube::Api<MutatingWebhookConfiguration> = self.all();
        let ns_api: kube::Api<Namespace> = self.all();
        let lp = ListParams::default();
        let (base, install) = futures::future::join(
            futures::future::try_join5(
                self.call(&format!("get DaemonSet {system_ns}/ztunnel"), || {
                    ds_api.get_opt("ztunnel")
                }),
                self.call(&format!("get DaemonSet {system_ns}/istio-cni-node"), || {
                    ds_api.get_opt("istio-cni-node")
                }),
                self.call(&format!("get ConfigMap {system_ns}/istio"), || {
                    cm_api.get_opt("istio")
                }),
                self.call("list MutatingWebhookConfigurations", || mwc_api.list(&lp)),
                self.call("list Namespaces", || ns_api.list(&lp)),
            ),
            self.read_install_facts(system_ns),
        )
        .await;
        let (ztunnel, istio_cni, mesh_cm, mwcs, namespaces) = base?;
        let mut info = ClusterInfo {
            system_namespace: system_ns.to_string(),
            ztunnel,
            istio_cni,
            ..Default::default()
        };
        info.root_namespace = system_ns.to_string();
        if let Some(mesh) = mesh_cm
            .and_then(|cm| cm.data)
            .and_then(|d| d.get("mesh").cloned())
        {
            match serde_saphyr::from_str::<Value>(&mesh) {
                Ok(m) => {
                    if let Some(td) = m.get("trustDomain").and_then(Value::as_str) {
                        info.trust_domain = td.to_string();
                    }
                    if let Some(root) = m.get("rootNamespace").and_then(Value::as_str) {
                        info.root_namespace = root.to_string();
                    }
                    info.outbound_traffic_policy = m
                        .pointer("/outboundTrafficPolicy/mode")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot parse the mesh config in ConfigMap istio; using defaults")
                }
            }
        }
        let mut revisions = Vec::new();
        for m in &mwcs.items {
            let labels = m.metadata.labels.clone().unwrap_or_default();
            let name = m.metadata.name.as_deref().unwrap_or("");
            let is_injector = labels.get("app").map(String::as_str) == Some("sidecar-injector")
                || name.starts_with("istio-sidecar-injector")
                || name.starts_with("istio-revision-tag-");
            if !is_injector {
                continue;
            }
            let rev = labels
                .get("istio.io/rev")
                .cloned()
                .unwrap_or_else(|| "default".into());
            if let Some(tag) = labels.get("istio.io/tag") {
                info.tags.insert(tag.clone(), rev);
            } else if !revisions.contains(&rev) {
                revisions.push(rev);
            }
            if m.webhooks
                .iter()
                .flatten()
                .any(|w| w.name.starts_with("auto.sidecar-injector.istio.io"))
            {
                info.enable_namespaces_by_default = true;
            }
        }
        if !revisions.is_empty() {
            revisions.sort();
            info.revisions = revisions;
        }
        info.namespace_labels = std::sync::Arc::new(
            namespaces
                .items
                .into_iter()
                .filter_map(|n| Some((n.metadata.name?, n.metadata.labels.unwrap_or_default())))
                .collect(),
        );
        let root = info.root_namespace.clone();
        let policies = futures::future::try_join(
            self.list_dyn_values(DynKind::AuthorizationPolicy, &root),
            self.list_dyn_values(DynKind::PeerAuthentication, &root),
        );
        // istiod's version is read only when the rest of the install facts were.
        let istiod = async {
            let facts = install?;
            let version = self.read_istiod_version(system_ns, &info.revisions).await?;
            Ok::<_, ClusterError>((facts, version))
        };
        let (policies, install) = futures::future::join(policies, istiod).await;
        let (aps, pas) = policies?;
        info.root_authorization_policies = convert_all(aps);
        info.root_peer_authentications = convert_all(pas);
        // Without these facts (an older RBAC without the install-phase grants, for instance) the install
        // checks are skipped and the rest of the assessment stands.
        info.install = match install {
            Ok((mut facts, version)) => {
                facts.istiod_version = version;
                Some(facts)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the install-phase facts; the install checks are skipped");
                None
            }
        };
        Ok(info)
    }

    /// Reads what the install-phase checks need (`assess::install`) apart from istiod's version
    /// ([`Cluster::read_istiod_version`], which needs the revisions): the Gateway API CRDs, the waypoint
    /// GatewayClass, the ztunnel pods and their nodes, and istio-cni's ambient setting, all in flight at
    /// once.
    async fn read_install_facts(&self, system_ns: &str) -> Result<InstallFacts, ClusterError> {
        let crd_api: kube::Api<CustomResourceDefinition> = self.all();
        let crds = futures::future::try_join_all(install::GATEWAY_API_CRDS.iter().map(|name| {
            let crd_api = &crd_api;
            async move {
                let crd = self
                    .call(&format!("get CustomResourceDefinition {name}"), || {
                        crd_api.get_opt(name)
                    })
                    .await?;
                let crd = crd.map(|c| GatewayCrd {
                    served: c
                        .spec
                        .versions
                        .iter()
                        .filter(|v| v.served)
                        .map(|v| v.name.clone())
                        .collect(),
                    bundle_version: c
                        .metadata
                        .annotations
                        .and_then(|a| a.get("gateway.networking.k8s.io/bundle-version").cloned()),
                });
                Ok::<_, ClusterError>((name.to_string(), crd))
            }
        }));
        let gc = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "GatewayClass"),
            "gatewayclasses",
        );
        let gc_api: kube::Api<DynamicObject> = kube::Api::all_with(self.client().clone(), &gc);
        let waypoint_class = async {
            match self
                .call(&format!("get GatewayClass {}", install::WAYPOINT_CLASS), || {
                    gc_api.get_opt(install::WAYPOINT_CLASS)
                })
                .await
            {
                Ok(c) => Ok(c.is_some()),
                // No Gateway API CRDs: no GatewayClass either.
                Err(e) if e.is_not_found() => Ok(false),
                Err(e) => Err(e),
            }
        };
        let pod_api: kube::Api<Pod> = self.namespaced(system_ns);
        let lp = ListParams::default().labels("app=ztunnel");
        let what = format!("list ztunnel pods in {system_ns}");
        let ztunnels = self.call(&what, || pod_api.list(&lp));
        let cm_api: kube::Api<ConfigMap> = self.namespaced(system_ns);
        let what = format!("get ConfigMap {system_ns}/istio-cni-config");
        let cni = self.call(&what, || cm_api.get_opt("istio-cni-config"));
        let (crds, waypoint_class, ztunnels, cni) =
            futures::future::try_join4(crds, waypoint_class, ztunnels, cni).await?;
        let mut facts = InstallFacts {
            gateway_crds: crds.into_iter().collect(),
            waypoint_class,
            ..Default::default()
        };
        for p in ztunnels.items {
            let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
                continue;
            };
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            // Two pods on a node (a rolling update): one ready one is enough.
            *facts.ztunnel_nodes.entry(node).or_insert(false) |= ready;
        }
        facts.cni_ambient_enabled = cni.and_then(|c| c.data).and_then(|d| {
            d.get("AMBIENT_ENABLED")
                .map(|v| v.trim().eq_ignore_ascii_case("true"))
        });
        Ok(facts)
    }

    /// istiod's version from the first revision's Deployment (`istiod`, `istiod-<rev>`) whose container
    /// image has a tag; `None` when none has.
    async fn read_istiod_version(
        &self,
        system_ns: &str,
        revisions: &[String],
    ) -> Result<Option<String>, ClusterError> {
        let dep_api: kube::Api<Deployment> = self.namespaced(system_ns);
        for rev in revisions {
            let name = if rev == "default" {
                "istiod".to_string()
            } else {
                format!("istiod-{rev}")
            };
            let dep = self
                .call(&format!("get Deployment {system_ns}/{name}"), || {
                    dep_api.get_opt(&name)
                })
                .await?;
            let image = dep
                .map(|d| d.spec)
                .and_then(|s| s.template.spec)
                .and_then(|s| s.containers.into_iter().next())
                .and_then(|c| c.image);
            if let Some(image) = image {
                return Ok(install::image_tag(&image).map(str::to_string));
            }
        }
        Ok(None)
    }
}

/// The typed objects of one namespace a [`Snapshot`] holds, however they were read.
pub(crate) struct Objects {
    pub services: Vec<Service>,
    pub deployments: Vec<Deployment>,
    pub statefulsets: Vec<StatefulSet>,
    pub daemonsets: Vec<DaemonSet>,
    pub replicasets: Vec<ReplicaSet>,
    pub pods: Vec<Pod>,
    pub jobs: Vec<Job>,
    pub cronjobs: Vec<CronJob>,
}

/// A namespace's [`Snapshot`] from its objects and `custom(kind)`, its objects of each custom kind as JSON:
/// the one place the snapshot is put together, from lists or from the watch caches, and where each custom
/// object is converted to its typed form (once; one that does not convert is kept with its error, which the
/// preflight reports).
pub(crate) fn assemble(
    namespace: Namespace,
    o: Objects,
    mut custom: impl FnMut(DynKind) -> Vec<Value>,
    info: &ClusterInfo,
) -> Snapshot {
    let names = |v: Vec<kube::api::ObjectMeta>| v.into_iter().filter_map(|m| m.name).collect::<Vec<_>>();
    Snapshot {
        namespace,
        services: o.services,
        deployments: o.deployments,
        statefulsets: o.statefulsets,
        daemonsets: o.daemonsets,
        replicasets: o.replicasets,
        pods: o.pods,
        jobs: names(o.jobs.into_iter().map(|j| j.metadata).collect()),
        cronjobs: names(o.cronjobs.into_iter().map(|j| j.metadata).collect()),
        authorization_policies: convert_all(custom(DynKind::AuthorizationPolicy)),
        peer_authentications: convert_all(custom(DynKind::PeerAuthentication)),
        request_authentications: convert_all(custom(DynKind::RequestAuthentication)),
        virtual_services: convert_all(custom(DynKind::VirtualService)),
        destination_rules: convert_all(custom(DynKind::DestinationRule)),
        sidecars: convert_all(custom(DynKind::Sidecar)),
        service_entries: convert_all(custom(DynKind::ServiceEntry)),
        envoy_filters: convert_all(custom(DynKind::EnvoyFilter)),
        telemetries: convert_all(custom(DynKind::Telemetry)),
        wasm_plugins: convert_all(custom(DynKind::WasmPlugin)),
        proxy_configs: convert_all(custom(DynKind::ProxyConfig)),
        http_routes: convert_all(custom(DynKind::HttpRoute)),
        gateways: convert_all(custom(DynKind::Gateway)),
        pod_monitors: convert_all(custom(DynKind::PodMonitor)),
        service_monitors: convert_all(custom(DynKind::ServiceMonitor)),
        cluster: info.clone(),
    }
}
