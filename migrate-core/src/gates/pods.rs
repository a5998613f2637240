//! Per-pod data-plane checks (docs/design.md §3 step 4 and rollback gates; `docs/reference/istio-ambient-facts.md` §0.2,
//! §0.5, §3a, §3d): detect the sidecar by the name `istio-proxy` in *both* container lists (native sidecars
//! are restartable init containers; "2/2" lies), and ambient enrollment by `ambient.istio.io/redirection`
//! (never by HBONE, which sidecar pods show too). Plus the selection of a workload's *current* pods
//! (current ReplicaSet / revision, not terminating).

use super::{GateOutcome, GateResult};
use crate::steps::ObjRef;
use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Sidecar container name.
pub const ISTIO_PROXY: &str = "istio-proxy";
/// Annotation written by the injector.
pub const SIDECAR_STATUS: &str = "sidecar.istio.io/status";
/// Annotation written by istio-cni.
pub const REDIRECTION: &str = "ambient.istio.io/redirection";

/// The result of checking one pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodCheck {
    /// Pod name.
    pub pod: String,
    /// All conditions hold.
    pub ok: bool,
    /// What does not hold.
    pub reasons: Vec<String>,
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

fn annotation<'a>(p: &'a Pod, key: &str) -> Option<&'a str> {
    p.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

/// Pod is Ready: condition Ready=True, phase Running, not terminating.
pub fn pod_ready(p: &Pod) -> bool {
    let st = p.status.as_ref();
    let ready = st
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let running = st.and_then(|s| s.phase.as_deref()) == Some("Running");
    ready && running && !is_terminating(p)
}

/// Pod has a deletionTimestamp.
pub fn is_terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

/// Where `istio-proxy` is declared: classic container, native sidecar (init container with
/// `restartPolicy: Always`), or a plain init container (not a sidecar that serves traffic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyPlacement {
    /// In `spec.containers`.
    Classic,
    /// In `spec.initContainers` with `restartPolicy: Always`.
    Native,
    /// In `spec.initContainers` without `restartPolicy: Always`.
    PlainInit,
}

/// Where `istio-proxy` is declared, if anywhere.
pub fn proxy_placement(p: &Pod) -> Option<ProxyPlacement> {
    let spec = p.spec.as_ref()?;
    if spec.containers.iter().any(|c| c.name == ISTIO_PROXY) {
        return Some(ProxyPlacement::Classic);
    }
    let init = spec
        .init_containers
        .as_ref()?
        .iter()
        .find(|c| c.name == ISTIO_PROXY)?;
    Some(if init.restart_policy.as_deref() == Some("Always") {
        ProxyPlacement::Native
    } else {
        ProxyPlacement::PlainInit
    })
}

/// Step 4 / step 6 per-pod check: no `istio-proxy` in containers or initContainers, no
/// `sidecar.istio.io/status`, `ambient.istio.io/redirection=enabled`, Ready.
pub fn sidecar_free_and_enrolled(p: &Pod) -> PodCheck {
    let mut reasons = Vec::new();
    if let Some(pl) = proxy_placement(p) {
        reasons.push(format!("has an {ISTIO_PROXY} container ({pl:?})"));
    }
    if annotation(p, SIDECAR_STATUS).is_some() {
        reasons.push(format!("has annotation {SIDECAR_STATUS} (sidecar injected)"));
    }
    match annotation(p, REDIRECTION) {
        Some("enabled") => {}
        Some(v) => reasons.push(format!(
            "{REDIRECTION}={v}, expected enabled (not passing traffic via ztunnel)"
        )),
        None => reasons.push(format!("{REDIRECTION} absent (not enrolled in ambient)")),
    }
    if !pod_ready(p) {
        reasons.push("not Ready".into());
    }
    PodCheck {
        pod: name(p),
        ok: reasons.is_empty(),
        reasons,
    }
}

/// Rollback per-pod check: `istio-proxy` in containers, or in initContainers with `restartPolicy: Always`,
/// ready in the matching status list; pod Ready; `ambient.istio.io/redirection` absent.
pub fn sidecar_ready(p: &Pod) -> PodCheck {
    let mut reasons = Vec::new();
    let st = p.status.as_ref();
    match proxy_placement(p) {
        None => reasons.push(format!("no {ISTIO_PROXY} container (sidecar not injected)")),
        Some(ProxyPlacement::PlainInit) => reasons.push(format!(
            "{ISTIO_PROXY} is an init container without restartPolicy Always"
        )),
        Some(pl) => {
            let list = match pl {
                ProxyPlacement::Classic => st.and_then(|s| s.container_statuses.as_ref()),
                _ => st.and_then(|s| s.init_container_statuses.as_ref()),
            };
            let ready = list
                .and_then(|l| l.iter().find(|c| c.name == ISTIO_PROXY))
                .is_some_and(|c| c.ready);
            if !ready {
                reasons.push(format!("{ISTIO_PROXY} not ready"));
            }
        }
    }
    if !pod_ready(p) {
        reasons.push("not Ready".into());
    }
    if let Some(v) = annotation(p, REDIRECTION) {
        reasons.push(format!("{REDIRECTION}={v} still set"));
    }
    PodCheck {
        pod: name(p),
        ok: reasons.is_empty(),
        reasons,
    }
}

/// Where a workload's live (non-terminating) pods stand against `check` while a wait watches them: how many
/// pass, and `Ok` once there are at least `want` of them and every one passes, else what is still missing
/// (the text a timeout reports). The executor re-evaluates it on every watch event of the pods.
pub fn pods_progress(pods: &[Pod], want: usize, check: fn(&Pod) -> PodCheck) -> (usize, Result<(), String>) {
    let live: Vec<&Pod> = pods.iter().filter(|p| !is_terminating(p)).collect();
    let checks: Vec<PodCheck> = live.iter().map(|p| check(p)).collect();
    let good = checks.iter().filter(|c| c.ok).count();
    if live.len() < want {
        return (good, Err(format!("{} of {want} pods", live.len())));
    }
    let bad: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.pod, c.reasons.join(", ")))
        .collect();
    if bad.is_empty() {
        (good, Ok(()))
    } else {
        (good, Err(bad.join("; ")))
    }
}

/// Apply `check` to the workload's current pods and aggregate into a gate result named `gate`: Pass when
/// every pod passes and there are at least `min_pods` of them.
pub fn pods_gate(
    gate: &str,
    workload: &ObjRef,
    pods: &[&Pod],
    min_pods: usize,
    check: fn(&Pod) -> PodCheck,
) -> GateResult {
    let checks: Vec<PodCheck> = pods.iter().map(|p| check(p)).collect();
    let bad: Vec<&PodCheck> = checks.iter().filter(|c| !c.ok).collect();
    let measured = json!({"workload": workload.to_string(), "pods": checks, "minPods": min_pods});
    if pods.len() < min_pods {
        return GateResult::new(
            gate,
            GateOutcome::Fail,
            measured,
            format!(
                "{workload}: {} current pod(s), expected at least {min_pods}",
                pods.len()
            ),
        );
    }
    if bad.is_empty() {
        GateResult::new(
            gate,
            GateOutcome::Pass,
            measured,
            format!("{workload}: {} pod(s) ok", pods.len()),
        )
    } else {
        let msg: Vec<String> = bad
            .iter()
            .map(|c| format!("{}: {}", c.pod, c.reasons.join(", ")))
            .collect();
        GateResult::new(
            gate,
            GateOutcome::Fail,
            measured,
            format!("{workload}: {}", msg.join("; ")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }
    fn ready_status(extra: Value) -> Value {
        let mut s = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                s[k] = v;
            }
        }
        s
    }
    fn ambient_pod() -> Value {
        json!({"metadata": {"name": "api-1", "annotations": {REDIRECTION: "enabled"}},
               "spec": {"containers": [{"name": "app"}]},
               "status": ready_status(json!({}))})
    }
    fn classic_sidecar(ready: bool) -> Value {
        json!({"metadata": {"name": "api-1", "annotations": {SIDECAR_STATUS: "{}"}},
               "spec": {"containers": [{"name": "app"}, {"name": ISTIO_PROXY}]},
               "status": ready_status(json!({"containerStatuses": [{"name": "app", "ready": true},
                                                                  {"name": ISTIO_PROXY, "ready": ready}]}))})
    }
    fn native_sidecar(policy: Option<&str>, ready: bool) -> Value {
        let mut c = json!({"name": ISTIO_PROXY});
        if let Some(p) = policy {
            c["restartPolicy"] = json!(p);
        }
        json!({"metadata": {"name": "api-1", "annotations": {SIDECAR_STATUS: "{}"}},
               "spec": {"containers": [{"name": "app"}], "initContainers": [c]},
               "status": ready_status(json!({"initContainerStatuses": [{"name": ISTIO_PROXY, "ready": ready}]}))})
    }

    #[test]
    fn ambient_pod_passes() {
        let c = sidecar_free_and_enrolled(&pod(ambient_pod()));
        assert!(c.ok, "{:?}", c.reasons);
        assert!(!sidecar_ready(&pod(ambient_pod())).ok);
    }

    #[test]
    fn ambient_checks_each_reason() {
        let mut v = ambient_pod();
        v["metadata"]["annotations"][REDIRECTION] = json!("pending");
        assert!(sidecar_free_and_enrolled(&pod(v)).reasons[0].contains("pending"));
        let mut v = ambient_pod();
        v["metadata"]["annotations"] = json!({});
        assert!(sidecar_free_and_enrolled(&pod(v)).reasons[0].contains("absent"));
        let mut v = ambient_pod();
        v["status"]["conditions"][0]["status"] = json!("False");
        assert_eq!(
            sidecar_free_and_enrolled(&pod(v)).reasons,
            vec!["not Ready".to_string()]
        );
        let mut v = ambient_pod();
        v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert!(!sidecar_free_and_enrolled(&pod(v)).ok);
        // Native sidecar hidden in initContainers is detected ("2/2" would look fine).
        let mut v = native_sidecar(Some("Always"), true);
        v["metadata"]["annotations"][REDIRECTION] = json!("enabled");
        let c = sidecar_free_and_enrolled(&pod(v));
        assert!(c.reasons.iter().any(|r| r.contains("Native")));
        assert!(c.reasons.iter().any(|r| r.contains(SIDECAR_STATUS)));
        // Annotation alone (container renamed?) is still a sidecar sign.
        let mut v = ambient_pod();
        v["metadata"]["annotations"][SIDECAR_STATUS] = json!("{}");
        assert!(!sidecar_free_and_enrolled(&pod(v)).ok);
    }

    #[test]
    fn sidecar_ready_classic_and_native() {
        assert!(sidecar_ready(&pod(classic_sidecar(true))).ok);
        let c = sidecar_ready(&pod(classic_sidecar(false)));
        assert_eq!(c.reasons, vec![format!("{ISTIO_PROXY} not ready")]);
        assert!(sidecar_ready(&pod(native_sidecar(Some("Always"), true))).ok);
        assert!(!sidecar_ready(&pod(native_sidecar(Some("Always"), false))).ok);
        assert!(sidecar_ready(&pod(native_sidecar(None, true))).reasons[0].contains("without restartPolicy"));
        let mut v = classic_sidecar(true);
        v["metadata"]["annotations"][REDIRECTION] = json!("enabled");
        assert!(sidecar_ready(&pod(v)).reasons[0].contains("still set"));
        assert_eq!(
            proxy_placement(&pod(classic_sidecar(true))),
            Some(ProxyPlacement::Classic)
        );
        assert_eq!(proxy_placement(&pod(ambient_pod())), None);
    }

    #[test]
    fn progress_waits_for_every_wanted_pod_to_pass() {
        let good = pod(ambient_pod());
        let bad = pod(classic_sidecar(true));
        let mut gone = ambient_pod();
        gone["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let gone = pod(gone);
        let p = |pods: &[Pod], want| pods_progress(pods, want, sidecar_free_and_enrolled);
        assert_eq!(p(std::slice::from_ref(&good), 1), (1, Ok(())));
        // A terminating pod counts for nothing, passing or not.
        let (n, r) = p(&[good.clone(), gone], 2);
        assert_eq!((n, r.unwrap_err().as_str()), (1, "1 of 2 pods"));
        let (n, r) = p(&[good, bad], 2);
        assert_eq!(n, 1);
        assert!(r.unwrap_err().contains("istio-proxy"));
    }

    #[test]
    fn gate_aggregation() {
        let w = ObjRef::new("apps/v1", "Deployment", "app", "api");
        let good = pod(ambient_pod());
        let bad = pod(classic_sidecar(true));
        let r = pods_gate("pods-ambient", &w, &[&good], 1, sidecar_free_and_enrolled);
        assert!(r.passed());
        let r = pods_gate("pods-ambient", &w, &[&good, &bad], 1, sidecar_free_and_enrolled);
        assert_eq!(r.outcome, GateOutcome::Fail);
        assert!(r.message.contains("istio-proxy"));
        assert_eq!(r.measured["pods"][1]["ok"], false);
        let r = pods_gate("pods-ambient", &w, &[], 2, sidecar_free_and_enrolled);
        assert!(r.message.contains("expected at least 2"));
        let r = pods_gate("pods-sidecar", &w, &[&bad], 1, sidecar_ready);
        assert!(r.passed());
    }
}
