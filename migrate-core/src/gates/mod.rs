//! Gate outcomes and the pure gate evaluators (docs/design.md §5): kubectl's rollout-status rules ([`rollout`]),
//! waypoint readiness ([`waypoint`]) and per-pod data-plane checks ([`pods`]). The side-effect layer reads the
//! objects; these functions decide.

pub mod labels;
pub mod pods;
pub mod policies;
pub mod rollout;
pub mod waypoint;
pub mod ztunnel;

use serde::{Deserialize, Serialize};

/// The result class of a gate (docs/design.md §5): `Error` = could not measure; `Timeout` = the deadline passed
/// before the gate passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GateOutcome {
    /// Everything the gate checks holds.
    Pass,
    /// Something measured is wrong.
    Fail,
    /// The gate could not measure (API error, probe infrastructure failure).
    Error,
    /// The deadline passed while the gate was still waiting.
    Timeout,
}

/// One gate evaluation, with what was measured; journaled and reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    /// Gate name (see `steps::gate_names`).
    pub gate: String,
    /// Outcome.
    pub outcome: GateOutcome,
    /// What was measured (gate-specific JSON).
    #[serde(default)]
    pub measured: serde_json::Value,
    /// Human summary naming the object and, on failure, what to do.
    pub message: String,
    /// When the evaluation started (set by the executor; pure evaluators leave it `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<jiff::Timestamp>,
    /// When the evaluation ended (set by the executor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<jiff::Timestamp>,
}

impl GateResult {
    /// A result without timestamps.
    pub fn new(
        gate: &str,
        outcome: GateOutcome,
        measured: serde_json::Value,
        message: impl Into<String>,
    ) -> Self {
        GateResult {
            gate: gate.into(),
            outcome,
            measured,
            message: message.into(),
            started: None,
            ended: None,
        }
    }

    /// True when the outcome is `Pass`.
    pub fn passed(&self) -> bool {
        self.outcome == GateOutcome::Pass
    }

    /// The same result with its outcome turned into `Timeout` (the executor's deadline expired while this
    /// was the last, still not passing, evaluation).
    pub fn timed_out(mut self) -> Self {
        if self.outcome != GateOutcome::Pass {
            self.outcome = GateOutcome::Timeout;
        }
        self
    }
}

/// The condition with `type_` in a JSON `status.conditions` list (Gateway API / Istio custom resources).
pub(crate) fn json_condition<'a>(obj: &'a serde_json::Value, type_: &str) -> Option<&'a serde_json::Value> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serde_and_helpers() {
        let r = GateResult::new("rollout", GateOutcome::Fail, json!({"a": 1}), "x");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["outcome"], "fail");
        assert!(v.get("started").is_none());
        let back: GateResult = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        assert!(!r.passed());
        assert_eq!(r.clone().timed_out().outcome, GateOutcome::Timeout);
        let p = GateResult::new("g", GateOutcome::Pass, json!(null), "ok");
        assert_eq!(p.clone().timed_out().outcome, GateOutcome::Pass);
    }

    #[test]
    fn json_condition_lookup() {
        let o = json!({"status": {"conditions": [{"type": "A", "status": "True"}, {"type": "B"}]}});
        assert_eq!(json_condition(&o, "A").unwrap()["status"], "True");
        assert!(json_condition(&o, "C").is_none());
        assert!(json_condition(&json!({}), "A").is_none());
    }
}
