//! The `namespace-labels` gate: the namespace carries the labels the step set (or no longer carries the
//! ones it removed), as read back from the API after the write.

use std::collections::BTreeMap;

use serde_json::json;

use super::{GateOutcome, GateResult};

/// Compares the namespace's `labels` with `want` (`None`: the key must be absent). A dry run persists
/// nothing, so a difference there passes, named in the message.
pub fn namespace_labels(
    ns: &str,
    labels: &BTreeMap<String, String>,
    want: &[(&str, Option<&str>)],
    dry_run: bool,
) -> GateResult {
    let wrong: Vec<String> = want
        .iter()
        .filter(|(k, v)| labels.get(*k).map(String::as_str) != *v)
        .map(|(k, v)| format!("{k}: want {:?}, found {:?}", v, labels.get(*k)))
        .collect();
    let outcome = if wrong.is_empty() || dry_run {
        GateOutcome::Pass
    } else {
        GateOutcome::Fail
    };
    let msg = if wrong.is_empty() {
        format!("namespace {ns} carries the expected labels")
    } else if dry_run {
        format!("dry run: labels not persisted ({})", wrong.join(", "))
    } else {
        format!("namespace {ns}: {}", wrong.join(", "))
    };
    GateResult::new(
        crate::steps::gate_names::NAMESPACE_LABELS,
        outcome,
        json!({"labels": labels}),
        msg,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_removed_labels_are_checked_and_a_dry_run_passes_naming_the_difference() {
        let labels: BTreeMap<String, String> =
            [("istio.io/dataplane-mode".to_string(), "ambient".to_string())].into();
        let want = [
            ("istio.io/dataplane-mode", Some("ambient")),
            ("istio-injection", None),
        ];
        assert!(namespace_labels("shop", &labels, &want, false).passed());
        let missing = [("istio.io/use-waypoint", Some("waypoint"))];
        let g = namespace_labels("shop", &labels, &missing, false);
        assert_eq!(g.outcome, GateOutcome::Fail);
        assert!(
            g.message
                .contains("istio.io/use-waypoint: want Some(\"waypoint\"), found None"),
            "{}",
            g.message
        );
        let dry = namespace_labels("shop", &labels, &missing, true);
        assert!(dry.passed());
        assert!(
            dry.message.starts_with("dry run: labels not persisted"),
            "{}",
            dry.message
        );
    }
}
