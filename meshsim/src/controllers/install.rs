//! What a cluster with Istio installed (ambient profile, one or more revisions, revision tags) holds before
//! any workload: Nodes, system namespaces, istiod Deployments, the ztunnel and istio-cni DaemonSets (their
//! pods come from the DaemonSet controller), the mesh ConfigMaps and the sidecar-injector
//! MutatingWebhookConfigurations with the selectors of Istio's chart
//! (`manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml`; revision tags as
//! `istioctl tag set` generates them, `istioctl/pkg/tag/generate.go`).

use serde_json::{Value, json};

use crate::Sim;
use crate::resources::{self, ResId};
use crate::settings::NativeSidecars;

/// Image tag of the simulated Istio.
pub const ISTIO_VERSION: &str = "1.30.3";

fn ensure(sim: &Sim, res: ResId, obj: Value) -> anyhow::Result<()> {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("").to_string();
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let (ns, name) = (ns.as_str(), name.as_str());
    if sim.store.get_shared(res, ns, name).is_none() {
        let status = obj.get("status").cloned();
        let created = sim
            .store
            .create(res, obj, &super::util::opts("meshsim-install"))
            .map_err(|e| anyhow::anyhow!("installing {name}: {e}"))?;
        if let Some(s) = status {
            let mut c = created;
            c["status"] = s;
            super::util::update(sim, res, ns, name, "meshsim-install", |o| *o = c.clone());
        }
    }
    Ok(())
}

/// Nodes and (when `settings.istio.install`) the Istio system objects.
pub fn install(sim: &Sim) -> anyhow::Result<()> {
    let s = &sim.settings;
    for nsname in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure(
            sim,
            resources::core("namespaces"),
            json!({"metadata": {"name": nsname}}),
        )?;
    }
    for (i, n) in s.nodes.iter().enumerate() {
        ensure(
            sim,
            resources::core("nodes"),
            node(&n.name, &n.kubelet_version, i),
        )?;
    }
    if !s.istio.install {
        return Ok(());
    }
    let sys = s.istio.system_namespace.as_str();
    ensure(
        sim,
        resources::core("namespaces"),
        json!({"metadata": {"name": sys}}),
    )?;
    let dep = resources::id("apps", "deployments");
    for rev in &s.istio.revisions {
        let dname = if rev == "default" {
            "istiod".to_string()
        } else {
            format!("istiod-{rev}")
        };
        let native = match s.istio.native_sidecars {
            NativeSidecars::Auto => "auto",
            NativeSidecars::True => "true",
            NativeSidecars::False => "false",
        };
        ensure(sim, dep, istiod(sys, &dname, rev, native))?;
        ensure(
            sim,
            resources::core("services"),
            json!({
                "metadata": {"name": dname, "namespace": sys, "labels": {"app": "istiod", "istio.io/rev": rev}},
                "spec": {"selector": {"app": "istiod", "istio.io/rev": rev}, "ports": [
                    {"name": "grpc-xds", "port": 15010, "protocol": "TCP"},
                    {"name": "https-dns", "port": 15012, "protocol": "TCP"},
                    {"name": "https-webhook", "port": 443, "targetPort": 15017, "protocol": "TCP"},
                    {"name": "http-monitoring", "port": 15014, "protocol": "TCP"}]},
            }),
        )?;
        let cm = if rev == "default" {
            "istio".to_string()
        } else {
            format!("istio-{rev}")
        };
        ensure(
            sim,
            resources::core("configmaps"),
            json!({
                "metadata": {"name": cm, "namespace": sys, "labels": {"istio.io/rev": rev}},
                "data": {"mesh": format!(
                    "defaultConfig:\n  discoveryAddress: {dname}.{sys}.svc:15012\nenablePrometheusMerge: {}\nrootNamespace: {sys}\ntrustDomain: {}\n{}",
                    s.istio.prometheus_merge, s.istio.trust_domain,
                    s.istio.outbound_traffic_policy.as_ref().map(|m| format!("outboundTrafficPolicy:\n  mode: {m}\n")).unwrap_or_default())},
            }),
        )?;
    }
    let ds = resources::id("apps", "daemonsets");
    ensure(
        sim,
        ds,
        daemonset(sys, "ztunnel", "app", "ztunnel", "ztunnel", "ztunnel"),
    )?;
    ensure(
        sim,
        ds,
        daemonset(
            sys,
            "istio-cni-node",
            "k8s-app",
            "istio-cni-node",
            "install-cni",
            "install-cni",
        ),
    )?;
    install_phase(sim, sys)?;
    let mwc = resources::id("admissionregistration.k8s.io", "mutatingwebhookconfigurations");
    let default_tag = s.istio.tags.get("default").cloned();
    for rev in &s.istio.revisions {
        let name = if rev == "default" {
            "istio-sidecar-injector".to_string()
        } else {
            format!("istio-sidecar-injector-{rev}")
        };
        // The default revision serves `istio-injection=enabled` and `sidecar.istio.io/inject=true` unless
        // a `default` tag took that role (`istioctl tag set default` deactivates these selectors).
        let serves_default = rev == "default" && default_tag.is_none();
        let hooks = webhooks(
            sys,
            rev,
            rev,
            serves_default,
            s.istio.enable_namespaces_by_default,
        );
        ensure(
            sim,
            mwc,
            json!({
                "metadata": {"name": name, "labels": {"app": "sidecar-injector", "istio.io/rev": rev}},
                "webhooks": hooks,
            }),
        )?;
    }
    for (tag, rev) in &s.istio.tags {
        let hooks = webhooks(
            sys,
            tag,
            rev,
            tag == "default",
            s.istio.enable_namespaces_by_default,
        );
        ensure(
            sim,
            mwc,
            json!({
                "metadata": {"name": format!("istio-revision-tag-{tag}"),
                    "labels": {"app": "sidecar-injector", "istio.io/tag": tag, "istio.io/rev": rev}},
                "webhooks": hooks,
            }),
        )?;
    }
    Ok(())
}

fn node(name: &str, kubelet: &str, i: usize) -> Value {
    json!({
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
        "spec": {"podCIDR": format!("10.244.{i}.0/24")},
        "status": {
            "nodeInfo": {"kubeletVersion": kubelet, "kubeProxyVersion": kubelet, "operatingSystem": "linux",
                "architecture": "amd64", "containerRuntimeVersion": "containerd://1.7.24",
                "osImage": "Debian GNU/Linux 12 (bookworm)", "kernelVersion": "6.8.0"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status", "lastHeartbeatTime": super::util::now_ts(),
                "lastTransitionTime": super::util::now_ts()}],
            "addresses": [{"type": "InternalIP", "address": format!("172.18.0.{}", i + 2)},
                {"type": "Hostname", "address": name}],
            "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"},
        },
    })
}

fn istiod(sys: &str, name: &str, rev: &str, native: &str) -> Value {
    let labels = json!({"app": "istiod", "istio": "pilot", "istio.io/rev": rev});
    json!({
        "metadata": {"name": name, "namespace": sys, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "istiod", "istio.io/rev": rev}},
            "template": {
                "metadata": {"labels": labels, "annotations": {"sidecar.istio.io/inject": "false"}},
                "spec": {"serviceAccountName": name, "containers": [{
                    "name": "discovery",
                    "image": format!("docker.io/istio/pilot:{ISTIO_VERSION}"),
                    "args": ["discovery", "--monitoringAddr=:15014", "--log_output_level=default:info"],
                    "ports": [{"containerPort": 8080}, {"containerPort": 15010}, {"containerPort": 15017}],
                    "env": [
                        {"name": "REVISION", "value": rev},
                        {"name": "PILOT_ENABLE_AMBIENT", "value": "true"},
                        {"name": "ENABLE_NATIVE_SIDECARS", "value": native},
                    ],
                }]},
            },
        },
    })
}

fn daemonset(sys: &str, name: &str, lk: &str, lv: &str, container: &str, image: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": sys, "labels": {lk: lv}},
        "spec": {
            "selector": {"matchLabels": {lk: lv}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
            "template": {
                "metadata": {"labels": {lk: lv, "sidecar.istio.io/inject": "false"}},
                "spec": {"serviceAccountName": name, "containers": [{
                    "name": container,
                    "image": format!("docker.io/istio/{image}:{ISTIO_VERSION}"),
                }]},
            },
        },
    })
}

/// The webhooks of one injector configuration. `selector_rev` is what namespaces/pods put in
/// `istio.io/rev` (a revision or a tag); `rev` is the istiod that answers.
fn webhooks(sys: &str, selector_rev: &str, rev: &str, serves_default: bool, ns_by_default: bool) -> Value {
    let svc = if rev == "default" {
        "istiod".to_string()
    } else {
        format!("istiod-{rev}")
    };
    let core = |prefix: &str, ns_sel: Value, obj_sel: Value| {
        json!({
            "name": format!("{prefix}sidecar-injector.istio.io"),
            "clientConfig": {"service": {"name": svc, "namespace": sys, "path": "/inject", "port": 443}},
            "sideEffects": "None",
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "admissionReviewVersions": ["v1"],
            "namespaceSelector": ns_sel,
            "objectSelector": obj_sel,
        })
    };
    let expr = |k: &str, op: &str, vals: &[&str]| json!({"key": k, "operator": op, "values": vals});
    let mut out = vec![
        core(
            "rev.namespace.",
            json!({"matchExpressions": [expr("istio.io/rev", "In", &[selector_rev]),
                expr("istio-injection", "DoesNotExist", &[])]}),
            json!({"matchExpressions": [expr("sidecar.istio.io/inject", "NotIn", &["false"])]}),
        ),
        core(
            "rev.object.",
            json!({"matchExpressions": [expr("istio.io/rev", "DoesNotExist", &[]),
                expr("istio-injection", "DoesNotExist", &[])]}),
            json!({"matchExpressions": [expr("sidecar.istio.io/inject", "NotIn", &["false"]),
                expr("istio.io/rev", "In", &[selector_rev])]}),
        ),
    ];
    if serves_default {
        out.push(core(
            "namespace.",
            json!({"matchExpressions": [expr("istio-injection", "In", &["enabled"])]}),
            json!({"matchExpressions": [expr("sidecar.istio.io/inject", "NotIn", &["false"])]}),
        ));
        out.push(core(
            "object.",
            json!({"matchExpressions": [expr("istio-injection", "DoesNotExist", &[]),
                expr("istio.io/rev", "DoesNotExist", &[])]}),
            json!({"matchExpressions": [expr("sidecar.istio.io/inject", "In", &["true"]),
                expr("istio.io/rev", "DoesNotExist", &[])]}),
        ));
        if ns_by_default {
            out.push(core(
                "auto.",
                json!({"matchExpressions": [expr("istio-injection", "DoesNotExist", &[]),
                    expr("istio.io/rev", "DoesNotExist", &[]),
                    expr("kubernetes.io/metadata.name", "NotIn",
                        &["kube-system", "kube-public", "kube-node-lease", "local-path-storage"])]}),
                json!({"matchExpressions": [expr("sidecar.istio.io/inject", "DoesNotExist", &[]),
                    expr("istio.io/rev", "DoesNotExist", &[])]}),
            ));
        }
    }
    Value::Array(out)
}

/// The Gateway API standard-channel bundle whose CRDs the simulated cluster has.
pub const GATEWAY_API_BUNDLE: &str = "v1.4.0";

/// What Istio's migration guide installs before the first namespace moves ("Install ambient components"):
/// the Gateway API CRDs (served versions and the `gateway.networking.k8s.io/bundle-version` and `channel`
/// annotations every Gateway API CRD carries, gateway-api `site-src/guides/implementers.md`), the
/// `istio-waypoint` GatewayClass istiod creates at start when those CRDs exist (istio/istio
/// `pilot/pkg/config/kube/gateway/gatewayclass.go`, controller `istio.io/mesh-controller`), and istio-cni's
/// ConfigMap with ambient enabled (istio/istio `manifests/charts/istio-cni/templates/configmap-cni.yaml`).
fn install_phase(sim: &Sim, sys: &str) -> anyhow::Result<()> {
    let crd = resources::id("apiextensions.k8s.io", "customresourcedefinitions");
    for (kind, plural) in [("Gateway", "gateways"), ("HTTPRoute", "httproutes")] {
        ensure(
            sim,
            crd,
            json!({
                "metadata": {
                    "name": format!("{plural}.gateway.networking.k8s.io"),
                    "annotations": {
                        "gateway.networking.k8s.io/bundle-version": GATEWAY_API_BUNDLE,
                        "gateway.networking.k8s.io/channel": "standard",
                    },
                },
                "spec": {
                    "group": "gateway.networking.k8s.io",
                    "names": {"kind": kind, "plural": plural},
                    "scope": "Namespaced",
                    "versions": [
                        {"name": "v1", "served": true, "storage": true},
                        {"name": "v1beta1", "served": true, "storage": false},
                    ],
                },
            }),
        )?;
    }
    ensure(
        sim,
        resources::id("gateway.networking.k8s.io", "gatewayclasses"),
        json!({
            "metadata": {"name": "istio-waypoint"},
            "spec": {"controllerName": "istio.io/mesh-controller", "description": "The default Istio GatewayClass"},
        }),
    )?;
    ensure(
        sim,
        resources::core("configmaps"),
        json!({
            "metadata": {"name": "istio-cni-config", "namespace": sys, "labels": {"app": "istio-cni"}},
            "data": {"AMBIENT_ENABLED": "true", "CURRENT_AGENT_VERSION": ISTIO_VERSION},
        }),
    )
}
