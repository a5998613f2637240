//! The "behaviour that changes" section of a namespace: every sidecar-only setting ambient ignores
//! ([`BehaviourChange`], from `assess::sidecar_only`), rendered as text (for `plan` and the run summary)
//! and Markdown. The JSON report carries the same list as `namespaces[].behaviour_changes`.

use std::fmt::Write as _;

use crate::assess::Severity;
use crate::assess::sidecar_only::BehaviourChange;

/// `blocker`, `warning`, or `accepted` (a lost security control named in `migration.accept_loss`).
pub fn status(c: &BehaviourChange) -> &'static str {
    match (c.accepted, c.severity) {
        (true, _) => "accepted",
        (_, Severity::Blocker) => "blocker",
        (_, Severity::Warning) => "warning",
        (_, Severity::Info) => "info",
    }
}

fn loss(c: &BehaviourChange) -> String {
    c.loss
        .map(|l| format!(" (loses {})", l.as_str()))
        .unwrap_or_default()
}

/// Plain-text section, empty when nothing changes.
pub fn text(ns: &str, changes: &[BehaviourChange]) -> String {
    if changes.is_empty() {
        return String::new();
    }
    let mut t = format!("  behaviour that changes in {ns}:\n");
    for c in changes {
        let _ = writeln!(
            t,
            "    [{}] {} {}{}: {}",
            status(c),
            c.code,
            c.object,
            loss(c),
            c.stops_working
        );
        let _ = writeln!(t, "        fix: {}", c.fix);
        let _ = writeln!(t, "        source: {}", c.source);
    }
    t
}

/// Markdown table, empty when nothing changes.
pub fn markdown(ns: &str, changes: &[BehaviourChange]) -> String {
    if changes.is_empty() {
        return String::new();
    }
    let esc = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let mut m = format!(
        "#### `{ns}`\n\n| Status | Code | Object | What stops working | Fix | Source |\n|---|---|---|---|---|---|\n"
    );
    for c in changes {
        let _ = writeln!(
            m,
            "| {}{} | `{}` | `{}` | {} | {} | {} |",
            status(c),
            esc(&loss(c)),
            c.code,
            c.object,
            esc(&c.stops_working),
            esc(&c.fix),
            esc(&c.source)
        );
    }
    m.push('\n');
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assess::sidecar_only::Loss;
    use crate::steps::ObjRef;

    fn change(severity: Severity, loss: Option<Loss>, accepted: bool) -> BehaviourChange {
        BehaviourChange {
            code: "sidecar-egress-registry-only".into(),
            object: ObjRef::new("networking.istio.io/v1", "Sidecar", "app", "default"),
            severity,
            loss,
            accepted,
            stops_working: "egress | lockdown stops".into(),
            fix: "egress waypoint".into(),
            source: "istio/istio issue 54281".into(),
            fix_yaml: None,
            twin: None,
        }
    }

    #[test]
    fn sections_mark_accepted_losses() {
        assert_eq!(text("app", &[]), "");
        assert_eq!(markdown("app", &[]), "");
        let c = vec![
            change(Severity::Warning, Some(Loss::EgressLockdown), true),
            change(Severity::Blocker, Some(Loss::EgressLockdown), false),
        ];
        let t = text("app", &c);
        assert!(t.contains("behaviour that changes in app"), "{t}");
        assert!(
            t.contains("[accepted] sidecar-egress-registry-only Sidecar/app/default (loses egress-lockdown)"),
            "{t}"
        );
        assert!(
            t.contains("[blocker]") && t.contains("source: istio/istio issue 54281"),
            "{t}"
        );
        let m = markdown("app", &c);
        assert!(m.contains("| accepted (loses egress-lockdown) |"), "{m}");
        assert!(m.contains("egress \\| lockdown"), "{m}");
        assert_eq!(m.lines().filter(|l| l.starts_with("| ")).count(), 3, "{m}");
    }
}
