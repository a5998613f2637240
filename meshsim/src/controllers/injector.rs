//! Istio's sidecar injector as a store admission step on pod CREATE.
//!
//! Which pods reach the injector is decided the way the apiserver decides which webhooks to call: every
//! MutatingWebhookConfiguration in the store (installed by [`super::install`] with the chart's selectors,
//! or edited by users) is evaluated; a webhook is called when its `namespaceSelector` matches the
//! namespace labels (plus `kubernetes.io/metadata.name`, which the apiserver sets) and its
//! `objectSelector` matches the pod labels. The revision injected is the configuration's `istio.io/rev`
//! label (a tag's configuration carries its target revision). Once called, the webhook applies
//! `injectRequired` (`pkg/kube/inject/inject.go`): hostNetwork pods and pods in kube-system/kube-public
//! are skipped, the `sidecar.istio.io/inject` label (or the deprecated annotation) may say no, and the
//! default policy is `enabled`. meshsim also never injects into the Istio system namespace (istiod and
//! ztunnel pods there opt out with `sidecar.istio.io/inject: "false"` in real charts).
//!
//! Native sidecars: `detectNativeSidecar` (`pkg/kube/inject/webhook.go`): mode `true`/`false`, or `auto`
//! = the pod's node kubelet is at least 1.33 when `spec.nodeName` is set, otherwise every node must
//! be at least 1.33. Pods of Deployments are not scheduled at admission, so in a mixed cluster `auto` injects
//! classic sidecars, exactly as on a real cluster. Per-pod annotation `sidecar.istio.io/nativeSidecar`
//! overrides. The injected shape follows `manifests/charts/istio-control/istio-discovery/files/
//! injection-template.yaml`.

use std::sync::{Arc, RwLock};

use serde_json::{Map, Value, json};

use super::install::ISTIO_VERSION;
use super::util::selector_matches;
use crate::faults::{FaultKind, FaultSpec, NsLabels};
use crate::resources::{self, ResId};
use crate::settings::{NativeSidecars, Settings};
use crate::store::{Admission, Op, StoreError, StoreView};

/// Volumes the injection template adds (names as in `sidecar.istio.io/status`).
const VOLUMES: &[&str] = &[
    "workload-socket",
    "credential-socket",
    "workload-certs",
    "istio-envoy",
    "istio-data",
    "istio-podinfo",
    "istio-token",
    "istiod-ca-cert",
];

/// The injector admission plugin. `down` holds the `injector-down` faults, refreshed by the controller
/// loop (reading faults inside the store lock could deadlock with API handlers that hold the faults lock
/// while reading namespace labels from the store).
pub struct Injector {
    settings: Settings,
    pub down: Arc<RwLock<Vec<FaultSpec>>>,
}

impl Injector {
    pub fn new(settings: Settings) -> Self {
        Injector {
            settings,
            down: Arc::default(),
        }
    }

    fn down_for(&self, view: &StoreView<'_>, ns: &str) -> bool {
        let faults = self.down.read().unwrap_or_else(|e| e.into_inner());
        faults.iter().any(|f| {
            f.kind == FaultKind::InjectorDown
                && f.namespace.as_deref().is_none_or(|n| n == ns)
                && f.trigger
                    .as_ref()
                    .is_none_or(|t| t.holds(view.ns_labels(&t.namespace).as_ref()))
        })
    }
}

fn mwc() -> ResId {
    resources::id("admissionregistration.k8s.io", "mutatingwebhookconfigurations")
}

fn rules_match_pod_create(wh: &Value) -> bool {
    wh["rules"].as_array().is_some_and(|rules| {
        rules.iter().any(|r| {
            let has = |k: &str, v: &str| {
                r[k].as_array()
                    .is_some_and(|a| a.iter().any(|x| x == v || x == "*"))
            };
            has("operations", "CREATE") && has("resources", "pods") && has("apiGroups", "")
        })
    })
}

impl Admission for Injector {
    fn admit(&self, view: &StoreView<'_>, res: ResId, op: Op, obj: &mut Value) -> Result<(), StoreError> {
        if res != resources::core("pods") || op != Op::Create {
            return Ok(());
        }
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("").to_string();
        let mut ns_labels = view
            .get(resources::core("namespaces"), "", &ns)
            .and_then(|n| n["metadata"]["labels"].as_object().cloned())
            .unwrap_or_default();
        ns_labels.insert("kubernetes.io/metadata.name".into(), json!(ns));
        let ns_labels = Value::Object(ns_labels);
        for cfg in view.list(mwc(), None) {
            let rev = cfg["metadata"]["labels"]["istio.io/rev"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            for wh in cfg["webhooks"].as_array().into_iter().flatten() {
                if !rules_match_pod_create(wh) {
                    continue;
                }
                let pod_labels = obj["metadata"]["labels"].clone();
                let pod_labels = if pod_labels.is_object() {
                    pod_labels
                } else {
                    json!({})
                };
                if !selector_matches(&wh["namespaceSelector"], &ns_labels)
                    || !selector_matches(&wh["objectSelector"], &pod_labels)
                {
                    continue;
                }
                let hook = wh["name"].as_str().unwrap_or("sidecar-injector.istio.io");
                if self.down_for(view, &ns) {
                    let svc = &wh["clientConfig"]["service"];
                    return Err(StoreError::Internal {
                        message: format!(
                            "Internal error occurred: failed calling webhook \"{hook}\": failed to call webhook: Post \"https://{}.{}.svc:443/inject?timeout=10s\": dial tcp 10.96.0.10:443: connect: connection refused",
                            svc["name"].as_str().unwrap_or("istiod"),
                            svc["namespace"].as_str().unwrap_or("istio-system"),
                        ),
                    });
                }
                if obj["metadata"]["annotations"]
                    .get("sidecar.istio.io/status")
                    .is_some()
                {
                    continue;
                }
                if inject_required(&self.settings, &ns, obj) {
                    let nodes = view.list(resources::core("nodes"), None);
                    let native = native_sidecar(&self.settings, obj, &nodes);
                    inject(&self.settings, obj, &rev, native);
                }
            }
        }
        Ok(())
    }
}

/// `injectRequired` (`pkg/kube/inject/inject.go`), default policy `enabled`.
pub fn inject_required(settings: &Settings, ns: &str, pod: &Value) -> bool {
    if pod["spec"]["hostNetwork"].as_bool() == Some(true) {
        return false;
    }
    if ns == "kube-system" || ns == "kube-public" || ns == settings.istio.system_namespace {
        return false;
    }
    let mut selector = pod["metadata"]["annotations"]["sidecar.istio.io/inject"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if let Some(l) = pod["metadata"]["labels"]["sidecar.istio.io/inject"].as_str() {
        // "The label is the new API; if both are present we prefer the label".
        selector = l.to_string();
    }
    matches!(selector.to_lowercase().as_str(), "y" | "yes" | "true" | "on" | "")
}

fn kubelet_minor(v: &str) -> Option<u64> {
    v.trim_start_matches('v').split('.').nth(1)?.parse().ok()
}

/// `detectNativeSidecar` plus the per-pod annotation override.
pub fn native_sidecar(settings: &Settings, pod: &Value, nodes: &[&Value]) -> bool {
    if let Some(a) = pod["metadata"]["annotations"]["sidecar.istio.io/nativeSidecar"].as_str() {
        return a == "true";
    }
    match settings.istio.native_sidecars {
        NativeSidecars::True => return true,
        NativeSidecars::False => return false,
        NativeSidecars::Auto => {}
    }
    let ok = |n: &Value| {
        n["status"]["nodeInfo"]["kubeletVersion"]
            .as_str()
            .and_then(kubelet_minor)
            .is_some_and(|m| m >= 33)
    };
    if let Some(node) = pod["spec"]["nodeName"].as_str().filter(|s| !s.is_empty())
        && let Some(n) = nodes.iter().find(|n| n["metadata"]["name"] == node)
    {
        return ok(n);
    }
    !nodes.is_empty() && nodes.iter().all(|n| ok(n))
}

/// Workload name as `GetDeployMetaFromPod` derives it: the ReplicaSet name minus the pod-template-hash, or
/// the owner's name, or the pod name.
fn workload_name(pod: &Value) -> String {
    let meta = &pod["metadata"];
    let owner = meta["ownerReferences"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["controller"] == true))
        .and_then(|r| r["name"].as_str());
    let base = owner
        .map(str::to_string)
        .or_else(|| {
            meta["generateName"]
                .as_str()
                .map(|g| g.trim_end_matches('-').to_string())
        })
        .unwrap_or_else(|| meta["name"].as_str().unwrap_or("").to_string());
    match meta["labels"]["pod-template-hash"].as_str() {
        Some(h) => base.strip_suffix(&format!("-{h}")).unwrap_or(&base).to_string(),
        None => base,
    }
}

/// Applies the injection template to `pod` for `rev`.
pub fn inject(settings: &Settings, pod: &mut Value, rev: &str, native: bool) {
    let labels = pod["metadata"]["labels"].clone();
    let lbl = |k: &str| labels.get(k).and_then(Value::as_str).map(str::to_string);
    let canonical_name = lbl("service.istio.io/canonical-name")
        .or_else(|| lbl("app.kubernetes.io/name"))
        .or_else(|| lbl("app"))
        .unwrap_or_else(|| workload_name(pod));
    let canonical_rev = lbl("service.istio.io/canonical-revision")
        .or_else(|| lbl("app.kubernetes.io/version"))
        .or_else(|| lbl("version"))
        .unwrap_or_else(|| "latest".into());
    let first_app = pod["spec"]["containers"][0]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();

    let mut env = vec![
        json!({"name": "PILOT_CERT_PROVIDER", "value": "istiod"}),
        json!({"name": "CA_ADDR", "value": format!("{}.{}.svc:15012",
            if rev == "default" { "istiod".to_string() } else { format!("istiod-{rev}") },
            settings.istio.system_namespace)}),
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        json!({"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}),
        json!({"name": "ISTIO_META_WORKLOAD_NAME", "value": workload_name(pod)}),
        json!({"name": "ISTIO_META_MESH_ID", "value": settings.istio.trust_domain}),
    ];
    if settings.istio.hbone {
        env.push(json!({"name": "ISTIO_META_ENABLE_HBONE", "value": "true"}));
    }

    // Prometheus merge (`applyPrometheusMerge`, pkg/kube/inject/webhook.go): skipped when the pod says
    // prometheus.io/scrape=false; the original scrape config goes to ISTIO_PROMETHEUS_ANNOTATIONS.
    let ann = pod["metadata"]["annotations"].clone();
    let a = |k: &str| ann.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let scrape_off = a("prometheus.io/scrape").eq_ignore_ascii_case("false");
    let merge = settings.istio.prometheus_merge && !scrape_off && a("prometheus.io/port") != "15020";
    if merge {
        let orig = json!({"scrape": a("prometheus.io/scrape"), "path": a("prometheus.io/path"),
            "port": a("prometheus.io/port")});
        env.push(json!({"name": "ISTIO_PROMETHEUS_ANNOTATIONS", "value": orig.to_string()}));
    }

    let mut proxy = json!({
        "name": "istio-proxy",
        "image": format!("docker.io/istio/proxyv2:{ISTIO_VERSION}"),
        "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local",
            "--proxyLogLevel=warning", "--proxyComponentLogLevel=misc:error", "--log_output_level=default:info"],
        "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
        "env": env,
        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}, "periodSeconds": 15,
            "timeoutSeconds": 3, "failureThreshold": 4},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
        "securityContext": {"runAsUser": 1337, "runAsGroup": 1337, "runAsNonRoot": true,
            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true},
        "volumeMounts": [{"name": "workload-socket", "mountPath": "/var/run/secrets/workload-spiffe-uds"},
            {"name": "istio-envoy", "mountPath": "/etc/istio/proxy"},
            {"name": "istio-token", "mountPath": "/var/run/secrets/tokens"}],
    });
    // With istio-cni installed the init container only validates the redirection (`istio-validation`).
    let init_name = if settings.istio.install {
        "istio-validation"
    } else {
        "istio-init"
    };
    let init = json!({
        "name": init_name,
        "image": format!("docker.io/istio/proxyv2:{ISTIO_VERSION}"),
        "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*",
            "-x", "", "-b", "*", "-d", "15090,15021,15020", "--log_output_level=default:info"],
    });
    let spec = &mut pod["spec"];
    if !spec["initContainers"].is_array() {
        spec["initContainers"] = json!([]);
    }
    if !spec["containers"].is_array() {
        spec["containers"] = json!([]);
    }
    let (status_init, status_containers) = if native {
        proxy["restartPolicy"] = json!("Always");
        proxy["startupProbe"] = json!({"httpGet": {"path": "/healthz/ready", "port": 15021},
            "periodSeconds": 1, "failureThreshold": 600});
        let inits = spec["initContainers"].as_array_mut().expect("array");
        inits.insert(0, proxy);
        inits.insert(0, init);
        (json!([init_name, "istio-proxy"]), Value::Null)
    } else {
        spec["initContainers"]
            .as_array_mut()
            .expect("array")
            .insert(0, init);
        spec["containers"].as_array_mut().expect("array").push(proxy);
        (json!([init_name]), json!(["istio-proxy"]))
    };
    if !spec["volumes"].is_array() {
        spec["volumes"] = json!([]);
    }
    let vols = spec["volumes"].as_array_mut().expect("array");
    for v in VOLUMES {
        vols.push(json!({"name": v, "emptyDir": {}}));
    }

    let meta = &mut pod["metadata"];
    if !meta["annotations"].is_object() {
        meta["annotations"] = json!({});
    }
    if !meta["labels"].is_object() {
        meta["labels"] = json!({});
    }
    let annotations = meta["annotations"].as_object_mut().expect("object");
    let status = json!({"initContainers": status_init, "containers": status_containers, "volumes": VOLUMES,
        "imagePullSecrets": Value::Null, "revision": rev});
    annotations.insert("sidecar.istio.io/status".into(), json!(status.to_string()));
    annotations.insert("istio.io/rev".into(), json!(rev));
    if !first_app.is_empty() {
        annotations
            .entry("kubectl.kubernetes.io/default-container")
            .or_insert(json!(first_app.clone()));
        annotations
            .entry("kubectl.kubernetes.io/default-logs-container")
            .or_insert(json!(first_app));
    }
    if merge {
        annotations.entry("prometheus.io/scrape").or_insert(json!("true"));
        annotations.insert("prometheus.io/port".into(), json!("15020"));
        annotations.insert("prometheus.io/path".into(), json!("/stats/prometheus"));
    }
    let labels: &mut Map<String, Value> = meta["labels"].as_object_mut().expect("object");
    labels.insert("security.istio.io/tlsMode".into(), json!("istio"));
    labels.insert("service.istio.io/canonical-name".into(), json!(canonical_name));
    labels.insert("service.istio.io/canonical-revision".into(), json!(canonical_rev));
    if settings.istio.hbone {
        labels.insert("networking.istio.io/tunnel".into(), json!("http"));
    }
}

/// Whether a pod carries an injected sidecar (classic or native).
pub fn has_sidecar(pod: &Value) -> bool {
    pod["metadata"]["annotations"]
        .get("sidecar.istio.io/status")
        .is_some()
        || ["containers", "initContainers"].iter().any(|k| {
            pod["spec"][*k]
                .as_array()
                .is_some_and(|a| a.iter().any(|c| c["name"] == "istio-proxy"))
        })
}
