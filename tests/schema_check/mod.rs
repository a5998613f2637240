//! A minimal JSON Schema validator shared by the report tests (the subset `docs/report.schema.json` uses),
//! so a report produced by a real run can be checked against the documented schema.

use jiff::Timestamp;
use serde_json::Value;

/// Minimal JSON Schema validator for the subset docs/report.schema.json uses: type, enum, required,
/// properties, additionalProperties=false, items, anyOf, $ref to #/$defs, minimum, and `pattern` (used only
/// for timestamps, checked by parsing as an RFC 3339 UTC timestamp).
pub fn validate(schema: &Value, root: &Value, v: &Value, path: &str, errs: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/$defs/").expect("only local $defs refs");
        return validate(&root["$defs"][name], root, v, path, errs);
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        let ok = any.iter().any(|s| {
            let mut e = Vec::new();
            validate(s, root, v, path, &mut e);
            e.is_empty()
        });
        if !ok {
            errs.push(format!("{path}: matches no alternative of anyOf"));
        }
        return;
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => panic!("bad type"),
        };
        let ok = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            other => panic!("unsupported type {other}"),
        });
        if !ok {
            errs.push(format!("{path}: expected {types:?}, got {v}"));
            return;
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        errs.push(format!("{path}: {v} not in {e:?}"));
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_i64)
        && v.as_i64().is_some_and(|n| n < min)
    {
        errs.push(format!("{path}: {v} < {min}"));
    }
    if schema.get("pattern").is_some() {
        let s = v.as_str().unwrap_or("");
        if !s.ends_with('Z') || s.parse::<Timestamp>().is_err() {
            errs.push(format!("{path}: {s:?} is not an RFC 3339 UTC timestamp"));
        }
    }
    if let Some(obj) = v.as_object() {
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !obj.contains_key(req.as_str().unwrap()) {
                errs.push(format!("{path}: missing required {req}"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(s, root, val, &format!("{path}.{k}"), errs),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errs.push(format!("{path}: unexpected property {k}"))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            validate(items, root, x, &format!("{path}[{i}]"), errs);
        }
    }
}
