//! Istio's sidecar-injection webhook precedence as a pure function, and the namespace injection-label record.
//!
//! Source: istio/istio `manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml`
//! (`docs/reference/istio-ambient-facts.md` §3e) plus the injector's own check (`pkg/kube/inject/inject.go`
//! `injectRequired`: a pod label or annotation `sidecar.istio.io/inject=false` disables injection once the
//! webhook is called):
//! - `namespace.*` (default revision): namespace `istio-injection=enabled`; pod `sidecar.istio.io/inject`
//!   NotIn [false].
//! - `rev.namespace.<rev>`: namespace `istio.io/rev=<rev|tag>` AND no `istio-injection`.
//! - `rev.object.<rev>`: namespace has neither label; pod `istio.io/rev=<rev|tag>`.
//! - `object.*` (default revision): namespace has neither label; pod `sidecar.istio.io/inject=true` AND no pod
//!   `istio.io/rev`.
//! - `auto.*` (only with `enableNamespacesByDefault`): neither namespace label, namespace not a system one, pod
//!   has neither label.
//!
//! So `istio-injection` beats `istio.io/rev` on the namespace, any `istio-injection` value other than `enabled`
//! blocks everything, and a namespace `istio.io/rev` beats the pod's.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Namespace label `istio-injection`.
pub const ISTIO_INJECTION: &str = "istio-injection";
/// Namespace / pod label `istio.io/rev`.
pub const ISTIO_REV: &str = "istio.io/rev";
/// Pod label (and deprecated annotation) `sidecar.istio.io/inject`.
pub const SIDECAR_INJECT: &str = "sidecar.istio.io/inject";

/// Namespaces the `auto.*` webhook never injects.
pub const AUTO_EXCLUDED_NAMESPACES: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// The namespace's injection labels, recorded before step 3 and restored exactly at rollback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct InjectionLabel {
    /// `istio-injection` value, if the label is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istio_injection: Option<String>,
    /// `istio.io/rev` value (revision or tag), if present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<String>,
}

impl InjectionLabel {
    /// Read from namespace labels.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Self {
        InjectionLabel {
            istio_injection: labels.get(ISTIO_INJECTION).cloned(),
            rev: labels.get(ISTIO_REV).cloned(),
        }
    }

    /// No injection label.
    pub fn is_none(&self) -> bool {
        self.istio_injection.is_none() && self.rev.is_none()
    }

    /// `(key, value)` pairs present; step 3 removes them all (removing only `istio-injection` would let a
    /// co-existing `istio.io/rev` start injecting).
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if let Some(x) = &self.istio_injection {
            v.push((ISTIO_INJECTION, x.clone()));
        }
        if let Some(x) = &self.rev {
            v.push((ISTIO_REV, x.clone()));
        }
        v
    }
}

/// Injector configuration known from the cluster's MutatingWebhookConfigurations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Injectors {
    /// Revisions with a webhook (`default` for `istio-sidecar-injector`).
    pub revisions: Vec<String>,
    /// Tags: tag -> revision. Tag `default` serves `istio-injection=enabled` and `object.*`.
    pub tags: BTreeMap<String, String>,
    /// `enableNamespacesByDefault`.
    pub enable_namespaces_by_default: bool,
}

impl Injectors {
    /// The revision behind a revision name or tag, if a webhook serves it.
    pub fn resolve(&self, rev_or_tag: &str) -> Option<String> {
        if self.revisions.iter().any(|r| r == rev_or_tag) {
            return Some(rev_or_tag.to_string());
        }
        self.tags.get(rev_or_tag).cloned()
    }

    /// The revision serving the default webhooks (`namespace.*`, `object.*`, `auto.*`): the `default` tag's
    /// revision, else the `default` revision.
    pub fn default_revision(&self) -> Option<String> {
        self.tags
            .get("default")
            .cloned()
            .or_else(|| self.revisions.iter().find(|r| *r == "default").cloned())
    }
}

/// Which rule decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "rule", content = "detail")]
pub enum InjectionRule {
    /// `namespace.*`: namespace `istio-injection=enabled`.
    NamespaceInjectionLabel,
    /// `rev.namespace.*`: namespace `istio.io/rev`.
    NamespaceRev,
    /// `rev.object.*`: pod `istio.io/rev`.
    PodRev,
    /// `object.*`: pod `sidecar.istio.io/inject=true`.
    PodInjectLabel,
    /// `auto.*`: enableNamespacesByDefault.
    Auto,
    /// Namespace `istio-injection` with a value other than `enabled`.
    NamespaceDisabled,
    /// Pod label or annotation `sidecar.istio.io/inject=false`.
    PodDisabled,
    /// A label selects a revision/tag that no webhook serves.
    NoWebhook(String),
    /// No webhook selects the pod.
    NotSelected,
}

/// The injection decision for one pod (template).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Injection {
    /// Would the pod get a sidecar?
    pub injected: bool,
    /// The revision that injects.
    pub revision: Option<String>,
    /// The deciding rule.
    pub by: InjectionRule,
}

fn no(by: InjectionRule) -> Injection {
    Injection {
        injected: false,
        revision: None,
        by,
    }
}

/// Decide injection for a pod with `pod_labels`/`pod_annotations` created in namespace `ns_name` with
/// `ns_labels`.
pub fn injection(
    ns_name: &str,
    ns_labels: &BTreeMap<String, String>,
    pod_labels: &BTreeMap<String, String>,
    pod_annotations: &BTreeMap<String, String>,
    inj: &Injectors,
) -> Injection {
    let pod_inject = pod_labels.get(SIDECAR_INJECT).map(String::as_str);
    let pod_rev = pod_labels.get(ISTIO_REV);
    // `injectRequired`: explicit false (label or annotation) wins once the webhook is called.
    let disabled_in_pod = pod_inject == Some("false")
        || pod_annotations.get(SIDECAR_INJECT).map(String::as_str) == Some("false");
    let called = |revision: Option<String>, by: InjectionRule, missing: &str| -> Injection {
        if pod_inject == Some("false") {
            return no(InjectionRule::PodDisabled);
        }
        match revision {
            None => no(InjectionRule::NoWebhook(missing.to_string())),
            Some(_) if disabled_in_pod => no(InjectionRule::PodDisabled),
            Some(r) => Injection {
                injected: true,
                revision: Some(r),
                by,
            },
        }
    };
    if let Some(v) = ns_labels.get(ISTIO_INJECTION) {
        if v == "enabled" {
            return called(
                inj.default_revision(),
                InjectionRule::NamespaceInjectionLabel,
                "default",
            );
        }
        return no(InjectionRule::NamespaceDisabled);
    }
    if let Some(r) = ns_labels.get(ISTIO_REV) {
        return called(inj.resolve(r), InjectionRule::NamespaceRev, r);
    }
    if let Some(r) = pod_rev {
        return called(inj.resolve(r), InjectionRule::PodRev, r);
    }
    if pod_inject == Some("true") {
        return called(inj.default_revision(), InjectionRule::PodInjectLabel, "default");
    }
    if inj.enable_namespaces_by_default
        && !AUTO_EXCLUDED_NAMESPACES.contains(&ns_name)
        && pod_inject.is_none()
    {
        return called(inj.default_revision(), InjectionRule::Auto, "default");
    }
    no(InjectionRule::NotSelected)
}

/// A pod template setting that keeps (or may keep) injecting after step 3 removes the namespace label.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateOverride {
    /// Would the template still be injected once the namespace injection labels are gone?
    pub still_injected: bool,
    /// Injection decision after step 3.
    pub after_step3: Injection,
    /// Offending labels/annotations, `key=value`.
    pub settings: Vec<String>,
}

/// Check a pod template against the namespace as it will be after step 3 (injection labels removed).
/// Returns `None` when the template carries no injection override at all.
pub fn template_override(
    ns_name: &str,
    ns_labels: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    inj: &Injectors,
) -> Option<TemplateOverride> {
    let mut settings = Vec::new();
    if let Some(v) = labels.get(SIDECAR_INJECT).filter(|v| *v == "true") {
        settings.push(format!("label {SIDECAR_INJECT}={v}"));
    }
    if let Some(v) = annotations.get(SIDECAR_INJECT).filter(|v| *v == "true") {
        settings.push(format!("annotation {SIDECAR_INJECT}={v}"));
    }
    if let Some(v) = labels.get(ISTIO_REV) {
        settings.push(format!("label {ISTIO_REV}={v}"));
    }
    let mut after = ns_labels.clone();
    after.remove(ISTIO_INJECTION);
    after.remove(ISTIO_REV);
    let decision = injection(ns_name, &after, labels, annotations, inj);
    if settings.is_empty() && !decision.injected {
        return None;
    }
    Some(TemplateOverride {
        still_injected: decision.injected,
        after_step3: decision,
        settings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }
    fn inj() -> Injectors {
        Injectors {
            revisions: vec!["default".into(), "1-30".into()],
            tags: m(&[("prod", "1-30")]),
            enable_namespaces_by_default: false,
        }
    }
    fn decide(ns: &[(&str, &str)], pl: &[(&str, &str)], pa: &[(&str, &str)], i: &Injectors) -> Injection {
        injection("app", &m(ns), &m(pl), &m(pa), i)
    }

    #[test]
    fn namespace_injection_label() {
        let d = decide(&[(ISTIO_INJECTION, "enabled")], &[], &[], &inj());
        assert_eq!(
            d,
            Injection {
                injected: true,
                revision: Some("default".into()),
                by: InjectionRule::NamespaceInjectionLabel
            }
        );
        // istio-injection beats istio.io/rev on the namespace.
        let d = decide(
            &[(ISTIO_INJECTION, "enabled"), (ISTIO_REV, "prod")],
            &[],
            &[],
            &inj(),
        );
        assert_eq!(d.revision.as_deref(), Some("default"));
        // disabled blocks everything, even the pod's own labels.
        let d = decide(
            &[(ISTIO_INJECTION, "disabled"), (ISTIO_REV, "prod")],
            &[(SIDECAR_INJECT, "true")],
            &[],
            &inj(),
        );
        assert_eq!(d.by, InjectionRule::NamespaceDisabled);
        assert!(!d.injected);
    }

    #[test]
    fn default_tag_serves_injection_label() {
        let i = Injectors {
            revisions: vec!["1-29".into(), "1-30".into()],
            tags: m(&[("default", "1-30")]),
            ..Default::default()
        };
        let d = decide(&[(ISTIO_INJECTION, "enabled")], &[], &[], &i);
        assert_eq!(d.revision.as_deref(), Some("1-30"));
        let none = Injectors {
            revisions: vec!["1-30".into()],
            ..Default::default()
        };
        let d = decide(&[(ISTIO_INJECTION, "enabled")], &[], &[], &none);
        assert_eq!(d.by, InjectionRule::NoWebhook("default".into()));
    }

    #[test]
    fn namespace_rev_and_tags() {
        let d = decide(&[(ISTIO_REV, "prod")], &[(ISTIO_REV, "default")], &[], &inj());
        assert_eq!(
            d,
            Injection {
                injected: true,
                revision: Some("1-30".into()),
                by: InjectionRule::NamespaceRev
            }
        );
        let d = decide(&[(ISTIO_REV, "gone")], &[], &[], &inj());
        assert_eq!(d.by, InjectionRule::NoWebhook("gone".into()));
    }

    #[test]
    fn pod_level_rules() {
        let d = decide(&[], &[(ISTIO_REV, "1-30")], &[], &inj());
        assert_eq!(d.by, InjectionRule::PodRev);
        assert_eq!(d.revision.as_deref(), Some("1-30"));
        let d = decide(&[], &[(SIDECAR_INJECT, "true")], &[], &inj());
        assert_eq!(d.by, InjectionRule::PodInjectLabel);
        assert!(d.injected);
        // Annotation alone does not select a webhook.
        let d = decide(&[], &[], &[(SIDECAR_INJECT, "true")], &inj());
        assert_eq!(d.by, InjectionRule::NotSelected);
        assert!(!decide(&[], &[], &[], &inj()).injected);
    }

    #[test]
    fn pod_disables() {
        let d = decide(
            &[(ISTIO_INJECTION, "enabled")],
            &[(SIDECAR_INJECT, "false")],
            &[],
            &inj(),
        );
        assert_eq!(d.by, InjectionRule::PodDisabled);
        let d = decide(&[(ISTIO_REV, "prod")], &[], &[(SIDECAR_INJECT, "false")], &inj());
        assert_eq!(d.by, InjectionRule::PodDisabled);
        assert!(!d.injected);
    }

    #[test]
    fn auto_injection() {
        let mut i = inj();
        i.enable_namespaces_by_default = true;
        let d = decide(&[], &[], &[], &i);
        assert_eq!(d.by, InjectionRule::Auto);
        assert!(d.injected);
        assert!(!injection("kube-system", &m(&[]), &m(&[]), &m(&[]), &i).injected);
        let d = decide(&[], &[], &[(SIDECAR_INJECT, "false")], &i);
        assert_eq!(d.by, InjectionRule::PodDisabled);
    }

    #[test]
    fn label_record() {
        let r = InjectionLabel::from_labels(&m(&[(ISTIO_REV, "prod"), ("x", "y")]));
        assert_eq!(
            r,
            InjectionLabel {
                istio_injection: None,
                rev: Some("prod".into())
            }
        );
        assert_eq!(r.pairs(), vec![(ISTIO_REV, "prod".to_string())]);
        assert!(InjectionLabel::from_labels(&m(&[])).is_none());
        let both = InjectionLabel::from_labels(&m(&[(ISTIO_REV, "prod"), (ISTIO_INJECTION, "enabled")]));
        assert_eq!(both.pairs().len(), 2);
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"rev": "prod"})
        );
    }

    #[test]
    fn template_overrides() {
        let ns = m(&[(ISTIO_INJECTION, "enabled")]);
        let o = template_override("app", &ns, &m(&[(SIDECAR_INJECT, "true")]), &m(&[]), &inj()).unwrap();
        assert!(o.still_injected);
        assert_eq!(o.settings, vec![format!("label {SIDECAR_INJECT}=true")]);
        let o = template_override("app", &ns, &m(&[(ISTIO_REV, "prod")]), &m(&[]), &inj()).unwrap();
        assert!(o.still_injected);
        assert_eq!(o.after_step3.revision.as_deref(), Some("1-30"));
        let o = template_override("app", &ns, &m(&[]), &m(&[(SIDECAR_INJECT, "true")]), &inj()).unwrap();
        assert!(!o.still_injected);
        assert!(template_override("app", &ns, &m(&[("app", "x")]), &m(&[]), &inj()).is_none());
        let mut i = inj();
        i.enable_namespaces_by_default = true;
        let o = template_override("app", &ns, &m(&[]), &m(&[]), &i).unwrap();
        assert!(o.still_injected);
        assert_eq!(o.after_step3.by, InjectionRule::Auto);
    }
}
