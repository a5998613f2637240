//! URL parsing: which endpoint a request path names, and the query string.
//!
//! Paths follow the apiserver's REST layout (`k8s.io/apiserver/pkg/endpoints/installer.go`):
//! `/api/v1/{plural}[/{name}[/{sub}]]`, `/api/v1/namespaces/{ns}/{plural}[/{name}[/{sub}]]` and the same under
//! `/apis/{group}/{version}`.

use std::collections::HashMap;

use crate::resources::{self, ResourceType};

/// What a request path names.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    Version,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/{group}`
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`
    ResourceList {
        group: String,
        version: String,
    },
    OpenApiV2,
    /// `/openapi/v3` and anything under it.
    OpenApiV3(String),
    /// A resource endpoint.
    Resource(ResourcePath),
    /// A review kind's collection (`POST` only; answered, never stored).
    Review(&'static resources::ReviewType),
    /// `/meshsim/...` control endpoints (path after `/meshsim/`).
    Control(String),
    /// Something the server does not serve (message for the 404 Status).
    NotFound(String),
}

/// A resource URL.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourcePath {
    pub rt: &'static ResourceType,
    /// From the URL (`None`: cluster-scoped kind or all-namespace collection).
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// `status`, `log`, ...
    pub sub: Option<String>,
}

impl ResourcePath {
    /// Plural with subresource (`pods/log`), as accounting and discovery name it.
    pub fn resource_name(&self) -> String {
        match &self.sub {
            Some(s) => format!("{}/{s}", self.rt.plural),
            None => self.rt.plural.to_string(),
        }
    }
}

/// Parses a request path.
pub fn route(path: &str) -> Route {
    let trimmed = path.trim_end_matches('/');
    if let Some(rest) = trimmed.strip_prefix("/meshsim/") {
        return Route::Control(rest.to_string());
    }
    if trimmed == "/meshsim" {
        return Route::Control(String::new());
    }
    let segs: Vec<&str> = trimmed.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["version"] => Route::Version,
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::Groups,
        ["openapi", "v2"] => Route::OpenApiV2,
        ["openapi", "v3", rest @ ..] => Route::OpenApiV3(rest.join("/")),
        ["api", "v1"] => Route::ResourceList {
            group: String::new(),
            version: "v1".into(),
        },
        ["api", "v1", rest @ ..] => resource_route("", "v1", rest, path),
        ["apis", g] => {
            if resources::groups().contains(g) {
                Route::Group(g.to_string())
            } else {
                Route::NotFound(format!(
                    "the server could not find the requested resource ({path})"
                ))
            }
        }
        ["apis", g, v] => {
            if resources::serves_version(g, v) {
                Route::ResourceList {
                    group: g.to_string(),
                    version: v.to_string(),
                }
            } else {
                Route::NotFound("the server could not find the requested resource".into())
            }
        }
        ["apis", g, v, rest @ ..] => resource_route(g, v, rest, path),
        _ => Route::NotFound("the server could not find the requested resource".into()),
    }
}

fn resource_route(group: &str, version: &str, segs: &[&str], path: &str) -> Route {
    let not_found = || {
        Route::NotFound(format!(
            "the server could not find the requested resource ({path})"
        ))
    };
    // `namespaces/{ns}/{plural}...` unless it is the namespace object's own subresource.
    let namespaced_form = segs.len() >= 3
        && segs[0] == "namespaces"
        && !(segs.len() == 3 && group.is_empty() && matches!(segs[2], "status" | "finalize"));
    let (namespace, rest) = if namespaced_form {
        (Some(segs[1].to_string()), &segs[2..])
    } else {
        (None, segs)
    };
    let Some(plural) = rest.first() else {
        return not_found();
    };
    if namespace.is_none()
        && rest.len() == 1
        && let Some(review) = resources::review_by_plural(group, version, plural)
    {
        return Route::Review(review);
    }
    let Some(rt) = resources::by_plural(group, version, plural) else {
        return not_found();
    };
    if namespace.is_some() && !rt.namespaced {
        return not_found();
    }
    let name = rest.get(1).map(|s| s.to_string());
    let sub = rest.get(2).map(|s| s.to_string());
    if rest.len() > 3 {
        return not_found();
    }
    if let Some(s) = &sub {
        let core = rt.group.is_empty();
        let ok = (s == "status" && rt.has_status)
            || (s == "log" && rt.kind == "Pod" && core)
            || (s == "token" && rt.kind == "ServiceAccount" && core);
        if !ok {
            return not_found();
        }
    }
    Route::Resource(ResourcePath {
        rt,
        namespace,
        name,
        sub,
    })
}

/// Percent-decodes a query component (`+` is a space).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a query string into a map (last value wins).
pub fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k), percent_decode(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_resource_paths() {
        let Route::Resource(p) = route("/api/v1/namespaces/shop/pods/web-1/log") else {
            panic!()
        };
        assert_eq!(p.rt.plural, "pods");
        assert_eq!(p.namespace.as_deref(), Some("shop"));
        assert_eq!(p.name.as_deref(), Some("web-1"));
        assert_eq!(p.sub.as_deref(), Some("log"));
        let Route::Resource(p) = route("/api/v1/namespaces/shop/status") else {
            panic!()
        };
        assert_eq!(p.rt.plural, "namespaces");
        assert_eq!(p.name.as_deref(), Some("shop"));
        assert_eq!(p.sub.as_deref(), Some("status"));
        let Route::Resource(p) = route("/api/v1/namespaces/shop") else {
            panic!()
        };
        assert_eq!(
            (p.rt.plural, p.namespace, p.name.as_deref()),
            ("namespaces", None, Some("shop"))
        );
        let Route::Resource(p) = route("/apis/apps/v1/deployments") else {
            panic!()
        };
        assert_eq!((p.rt.plural, p.namespace, p.name), ("deployments", None, None));
        assert!(matches!(
            route("/apis/apps/v1/namespaces/a/nope"),
            Route::NotFound(_)
        ));
        assert!(matches!(
            route("/apis/apps/v1/namespaces/a/deployments/x/log"),
            Route::NotFound(_)
        ));
        assert_eq!(
            route("/apis/apps/v1"),
            Route::ResourceList {
                group: "apps".into(),
                version: "v1".into()
            }
        );
    }

    #[test]
    fn decodes_queries() {
        let q = parse_query(Some(
            "fieldSelector=metadata.name%3Dweb&labelSelector=a+in+(x%2Cy)&watch=1",
        ));
        assert_eq!(q["fieldSelector"], "metadata.name=web");
        assert_eq!(q["labelSelector"], "a in (x,y)");
        assert_eq!(q["watch"], "1");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
