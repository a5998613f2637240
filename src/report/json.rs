//! JSON rendering of [`RunReport`] (schema `docs/report.schema.json`, `schema_version` 1).

use serde::Serialize;

use super::RunReport;

/// Pretty-printed JSON with a trailing newline.
pub fn render<N: Serialize>(report: &RunReport<N>) -> String {
    let mut s = serde_json::to_string_pretty(report).expect("a report always serializes");
    s.push('\n');
    s
}

/// Writes [`render`]'s text to `path`, serialised straight to the file: a fleet's report is tens of
/// megabytes of JSON, which need not be held in memory beside the report itself.
pub fn write<N: Serialize>(report: &RunReport<N>, path: &std::path::Path) -> std::io::Result<()> {
    to_writer(report, std::fs::File::create(path)?)
}

/// Writes [`render`]'s text to `w` (buffered), without holding it in memory.
pub fn to_writer<N: Serialize>(report: &RunReport<N>, w: impl std::io::Write) -> std::io::Result<()> {
    use std::io::Write;
    let mut w = std::io::BufWriter::new(w);
    serde_json::to_writer_pretty(&mut w, report)?;
    w.write_all(b"\n")?;
    w.flush()
}

/// Reads a report written by [`render`] (e.g. to compare runs or resume a summary).
pub fn parse(text: &str) -> Result<RunReport, serde_json::Error> {
    serde_json::from_str(text)
}
