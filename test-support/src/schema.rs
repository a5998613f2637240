//! Validates reports against `docs/report.schema.json` with the `jsonschema` crate (JSON Schema 2020-12, the
//! draft the schema declares), so a report produced by a real run is checked against the documented schema.

use serde_json::Value;

/// Every violation of `schema` by `v`, as `"<JSON pointer>: <message>"` (empty when `v` is valid).
pub fn violations(schema: &Value, v: &Value) -> Vec<String> {
    let validator = jsonschema::validator_for(schema).expect("docs/report.schema.json is a valid schema");
    validator
        .iter_errors(v)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}
