//! Istio's injection-webhook precedence (filled next).

use serde::{Deserialize, Serialize};

/// The namespace's injection label, recorded before step 3 to restore exactly at rollback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case", tag = "label", content = "value")]
pub enum InjectionLabel {
    /// No injection label on the namespace.
    #[default]
    None,
    /// `istio-injection=<value>`.
    IstioInjection(String),
    /// `istio.io/rev=<value>` (revision or tag).
    Rev(String),
}
