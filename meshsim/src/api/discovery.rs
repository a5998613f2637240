//! Legacy (unaggregated) discovery documents and the minimal OpenAPI answers kubectl needs.
//!
//! Aggregated discovery (`apidiscovery.k8s.io/v2`) is not served: when kubectl asks for it, the plain
//! documents come back with `Content-Type: application/json` and client-go's discovery client falls back
//! to the legacy per-group requests (`k8s.io/client-go/discovery/discovery_client.go`, `fetchGroupsAndResources`).

use serde_json::{Value, json};

use crate::resources::{self, REGISTRY, REVIEWS};

/// The Kubernetes version meshsim claims.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-meshsim",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_json(group: &str) -> Value {
    let versions: Vec<&str> = {
        let mut v: Vec<&str> = REGISTRY
            .iter()
            .filter(|r| r.group == group)
            .map(|r| r.version)
            .chain(REVIEWS.iter().filter(|r| r.group == group).map(|r| r.version))
            .collect();
        v.dedup();
        v
    };
    let gvs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": gvs,
        "preferredVersion": gvs.first().cloned().unwrap_or(Value::Null),
    })
}

/// `/apis`.
pub fn groups() -> Value {
    let groups: Vec<Value> = resources::groups().into_iter().map(group_json).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`.
pub fn group(group: &str) -> Value {
    let mut g = group_json(group);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    g
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `/api/v1` or `/apis/{group}/{version}`.
pub fn resource_list(group: &str, version: &str) -> Value {
    let mut resources_json = Vec::new();
    for r in REGISTRY
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        resources_json.push(entry);
        if r.has_status {
            resources_json.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if r.group.is_empty() && r.kind == "Pod" {
            resources_json.push(json!({
                "name": "pods/log",
                "singularName": "",
                "namespaced": true,
                "kind": "Pod",
                "verbs": ["get"],
            }));
        }
        if r.group.is_empty() && r.kind == "ServiceAccount" {
            // The TokenRequest subresource (`kubectl create token`).
            resources_json.push(json!({
                "name": "serviceaccounts/token",
                "singularName": "",
                "namespaced": true,
                "group": "authentication.k8s.io",
                "version": "v1",
                "kind": "TokenRequest",
                "verbs": ["create"],
            }));
        }
    }
    for r in REVIEWS
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        resources_json.push(json!({
            "name": r.plural,
            "singularName": r.kind.to_lowercase(),
            "namespaced": false,
            "kind": r.kind,
            "verbs": ["create"],
        }));
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources_json})
}

/// Content type of the OpenAPI v2 protobuf answer.
pub const OPENAPI_V2_CONTENT_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

fn proto_string(field: u8, s: &str, out: &mut Vec<u8>) {
    out.push((field << 3) | 2);
    proto_len(s.len(), out);
    out.extend_from_slice(s.as_bytes());
}

fn proto_len(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
}

/// A gnostic `openapi_v2.Document` with only `swagger: "2.0"` (field 1) and `info` (field 2:
/// title = field 1, version = field 2), hand-encoded. kubectl's validation accepts it and then finds no
/// schema for any kind, so it validates nothing (see `docs/reference/kubectl-wire.md`).
pub fn openapi_v2_proto() -> Vec<u8> {
    let mut info = Vec::new();
    proto_string(1, "meshsim", &mut info);
    proto_string(2, "v1.33.0", &mut info);
    let mut out = Vec::new();
    proto_string(1, "2.0", &mut out);
    out.push((2 << 3) | 2);
    proto_len(info.len(), &mut out);
    out.extend_from_slice(&info);
    out
}

/// `/openapi/v3`: an empty path index (kubectl then treats every kind as having no published schema and
/// falls back to JSON merge patch for custom resources).
pub fn openapi_v3(sub: &str) -> Option<Value> {
    if sub.is_empty() {
        Some(json!({"paths": {}}))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_v2_bytes() {
        let b = openapi_v2_proto();
        assert_eq!(&b[..5], &[0x0a, 3, b'2', b'.', b'0']);
        assert_eq!(b[5], 0x12);
        assert_eq!(b[6] as usize, b.len() - 7);
    }

    #[test]
    fn discovery_lists_status_and_log() {
        let l = resource_list("", "v1");
        let names: Vec<&str> = l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pods/log"));
        assert!(names.contains(&"pods/status"));
        assert!(names.contains(&"namespaces"));
        let g = groups();
        assert!(
            g["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["name"] == "gateway.networking.k8s.io")
        );
    }
}
