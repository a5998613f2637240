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
    let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(text, fixture_options(text.len()))
        .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
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

/// YAML parser limits for a fixture of `len` bytes.
///
/// serde-saphyr's default budget caps a stream at 1,024 documents and 250,000 nodes, which refuses
/// `generate`'s own output for 100 namespaces. A fixture is a local file the operator chose, not input from
/// the network, so the caps grow with its size instead: a YAML document needs at least 4 bytes (`---\n`) and
/// a node or parser event at least 1 byte, so these limits never refuse a well-formed file while still
/// bounding the work a pathological one (anchor/alias storms, deep nesting: those caps stay at their
/// defaults) can cause per byte read.
fn fixture_options(len: usize) -> serde_saphyr::Options {
    let defaults = serde_saphyr::Budget::default();
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: defaults.max_documents.max(len / 4 + 1),
            max_nodes: defaults.max_nodes.max(len + 1),
            max_events: defaults.max_events.max(2 * len + 2),
        },
    }
}

/// A fleet fixture for benchmarks and demos: `namespaces` namespaces `fleet-NNN` labelled
/// `istio-injection=enabled`, each with `deployments` echo Deployments `app-N` (labels `app`, `version=v1`,
/// own ServiceAccount, container port 8080) and a Service `app-N` (port 80 named `http` -> 8080).
/// Multi-document YAML, as [`parse_text`] reads it.
pub fn generate_fleet(namespaces: usize, deployments: usize, replicas: u32) -> String {
    let mut out = String::new();
    for n in 0..namespaces {
        let ns = format!("fleet-{n:03}");
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    istio-injection: enabled\n"
        ));
        for d in 0..deployments {
            let app = format!("app-{d}");
            out.push_str(&format!(
                "---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {app}\n  namespace: {ns}\n"
            ));
            out.push_str(&format!(
                "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {app}\n  namespace: {ns}\n  labels:\n    app: {app}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: {app}\n  template:\n    metadata:\n      labels:\n        app: {app}\n        version: v1\n    spec:\n      serviceAccountName: {app}\n      containers:\n      - name: echo\n        image: meshsim/echo:latest\n        ports:\n        - containerPort: 8080\n          name: http\n"
            ));
            out.push_str(&format!(
                "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {app}\n  namespace: {ns}\n  labels:\n    app: {app}\nspec:\n  selector:\n    app: {app}\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_fleet_parses() {
        let text = generate_fleet(2, 3, 2);
        let objs = parse_text(&text, "fleet").unwrap();
        assert_eq!(objs.len(), 2 * (1 + 3 * 3));
        let dep = objs
            .iter()
            .find(|(_, o)| o["kind"] == "Deployment")
            .map(|(_, o)| o)
            .unwrap();
        assert_eq!(dep["spec"]["replicas"], 2);
        assert_eq!(dep["spec"]["template"]["spec"]["serviceAccountName"], "app-0");
        let ns = &objs[0].1;
        assert_eq!(ns["metadata"]["labels"]["istio-injection"], "enabled");
    }

    #[test]
    fn large_generated_fleet_parses() {
        // 1,000 namespaces x 3 Deployments: 10,000 documents, far above serde-saphyr's default 1,024.
        let text = generate_fleet(1_000, 3, 2);
        let objs = parse_text(&text, "fleet").unwrap();
        assert_eq!(objs.len(), 1_000 * (1 + 3 * 3));
        assert_eq!(objs.last().unwrap().1["metadata"]["namespace"], "fleet-999");
    }

    #[test]
    fn alias_storm_is_still_refused() {
        // The size-scaled caps leave the alias/anchor heuristics at their defaults.
        let mut text = String::from(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: y}\ndata:\n  a: &a v\n",
        );
        for i in 0..2_000 {
            text.push_str(&format!("  k{i}: *a\n"));
        }
        let err = parse_text(&text, "storm.yaml").unwrap_err().to_string();
        assert!(err.starts_with("storm.yaml: ") && err.contains("alias"), "{err}");
    }
}
