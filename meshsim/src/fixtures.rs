//! Fixtures: plain Kubernetes YAML (files or directories, multi-document) turned into store objects.

use std::path::Path;

use serde_json::Value;

use crate::resources::{self, ResId};

/// Reads a file, or every `.yaml`/`.yml`/`.json` file of a directory (sorted, recursively).
pub fn load_path(path: &Path) -> anyhow::Result<Vec<(ResId, Value)>> {
    let mut out = Vec::new();
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            let is_manifest = p
                .extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json");
            if p.is_dir() || is_manifest {
                out.extend(load_path(&p)?);
            }
        }
        return Ok(out);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read fixture {}: {e}", path.display()))?;
    parse_text(&text, &path.display().to_string())
}

/// Parses multi-document YAML (or `kind: List`) into objects of served kinds. Unknown kinds are an error
/// naming the document.
pub fn parse_text(text: &str, origin: &str) -> anyhow::Result<Vec<(ResId, Value)>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    let mut out = Vec::new();
    let mut queue: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    queue.reverse();
    while let Some(doc) = queue.pop() {
        let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
        if kind == "List" || kind.ends_with("List") && doc.get("items").is_some() {
            let mut items = doc["items"].as_array().cloned().unwrap_or_default();
            items.reverse();
            queue.extend(items);
            continue;
        }
        let rt = resources::by_kind(api_version, kind).ok_or_else(|| {
            anyhow::anyhow!("{origin}: kind {kind:?} (apiVersion {api_version:?}) is not served by meshsim")
        })?;
        out.push((rt.id(), doc));
    }
    Ok(out)
}
