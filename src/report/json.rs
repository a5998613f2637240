//! JSON rendering of [`RunReport`] (schema `docs/report.schema.json`, `schema_version` 1).

use super::RunReport;

/// Pretty-printed JSON with a trailing newline.
pub fn render(report: &RunReport) -> String {
    let mut s = serde_json::to_string_pretty(report).expect("a report always serializes");
    s.push('\n');
    s
}

/// Reads a report written by [`render`] (e.g. to compare runs or resume a summary).
pub fn parse(text: &str) -> Result<RunReport, serde_json::Error> {
    serde_json::from_str(text)
}
