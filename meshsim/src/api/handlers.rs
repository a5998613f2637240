//! Verb handlers for resource URLs: get, list, watch (in [`super::watch`]), create, update, patch, delete,
//! deletecollection, the `status` subresource and `pods/log`. Semantics follow
//! `k8s.io/apiserver/pkg/endpoints/handlers` (create.go, update.go, patch.go, delete.go, get.go).

use std::sync::Arc;

use hyper::Method;
use serde_json::{Value, json};

use super::patch::{self, PatchKind};
use super::routing::ResourcePath;
use super::selectors::{FieldSelector, LabelSelector};
use super::table::{self, IncludeObject};
use super::{Req, Resp, error_response, json_response, serialized_response, status_response, text_response};
use crate::Sim;
use crate::accounting::short_agent;
use crate::store::{Propagation, StoreError, Target, WriteOpts};

/// Entry point for resource URLs.
pub async fn handle(sim: &Arc<Sim>, req: &Req, p: &ResourcePath) -> Resp {
    let result = match (&req.method, p.name.is_some()) {
        (&Method::GET, _) if req.is_watch() => return super::watch::start(sim, req, p),
        (&Method::GET, true) => get(sim, req, p),
        (&Method::GET, false) => list(sim, req, p),
        (&Method::POST, false) => create(sim, req, p),
        (&Method::POST, true) if p.sub.as_deref() == Some("token") => create(sim, req, p),
        (&Method::PUT, true) => update(sim, req, p),
        (&Method::PATCH, true) => patch(sim, req, p),
        (&Method::DELETE, true) => delete(sim, req, p),
        (&Method::DELETE, false) => delete_collection(sim, req, p),
        _ => Ok(status_response(
            405,
            "MethodNotAllowed",
            &format!(
                "the server does not allow this method on the requested resource ({} {})",
                req.method, req.path
            ),
        )),
    };
    result.unwrap_or_else(|e| error_response(&e))
}

fn bad(message: impl Into<String>) -> StoreError {
    StoreError::BadRequest {
        message: message.into(),
    }
}

fn ns_of(p: &ResourcePath) -> &str {
    p.namespace.as_deref().unwrap_or("")
}

fn name_of(p: &ResourcePath) -> &str {
    p.name.as_deref().unwrap_or("")
}

fn write_opts(req: &Req, apply: bool) -> WriteOpts {
    let manager = req
        .q("fieldManager")
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .or_else(|| {
            let a = short_agent(&req.user_agent);
            (!a.is_empty()).then(|| a.to_string())
        });
    WriteOpts {
        dry_run: req.dry_run(),
        field_manager: manager,
        apply,
        applied: None,
        force: matches!(req.q("force"), Some("true" | "1")),
    }
}

fn target(p: &ResourcePath) -> Target {
    if p.sub.as_deref() == Some("status") {
        Target::Status
    } else {
        Target::Main
    }
}

/// Parses a JSON (or YAML, or protobuf of the few kinds [`super::proto`] knows) body.
pub fn parse_body(req: &Req) -> Result<Value, StoreError> {
    let ct = req.content_type.split(';').next().unwrap_or("").trim();
    if ct.contains("protobuf")
        && let Some(v) = super::proto::decode(&req.body)
    {
        return Ok(v);
    }
    if ct.contains("protobuf") || ct.contains("cbor") {
        return Err(StoreError::Injected {
            code: 415,
            reason: "UnsupportedMediaType".into(),
            message: format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {ct})"
            ),
        });
    }
    if ct.contains("yaml") {
        let text = std::str::from_utf8(&req.body).map_err(|e| bad(format!("body is not UTF-8: {e}")))?;
        serde_saphyr::from_str(text).map_err(|e| bad(format!("error decoding YAML body: {e}")))
    } else {
        serde_json::from_slice(&req.body).map_err(|e| {
            bad(format!(
                "error decoding JSON body (Content-Type {:?}, {} bytes): {e}",
                req.content_type,
                req.body.len()
            ))
        })
    }
}

fn not_acceptable_kind(p: &ResourcePath, obj: &Value) -> Result<(), StoreError> {
    if let Some(kind) = obj.get("kind").and_then(Value::as_str)
        && kind != p.rt.kind
    {
        return Err(bad(format!(
            "the kind in the body ({kind}) does not match the kind of the URL ({})",
            p.rt.kind
        )));
    }
    Ok(())
}

/// Fills or checks the body namespace against the URL (create and update handlers do the same).
fn reconcile_namespace(p: &ResourcePath, obj: &mut Value) -> Result<(), StoreError> {
    if !p.rt.namespaced {
        return Ok(());
    }
    let url_ns = p
        .namespace
        .as_deref()
        .ok_or_else(|| bad("a namespace is required in the URL for a namespaced resource"))?;
    match obj["metadata"].get("namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() && ns != url_ns => Err(bad(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            if !obj.get("metadata").is_some_and(Value::is_object) {
                obj["metadata"] = json!({});
            }
            obj["metadata"]["namespace"] = json!(url_ns);
            Ok(())
        }
    }
}

fn object_response(req: &Req, p: &ResourcePath, code: u16, obj: &Value) -> Resp {
    if table::wants_table(&req.accept) && p.sub.is_none() {
        let include = IncludeObject::parse(req.q("includeObject"));
        let rv = obj["metadata"]["resourceVersion"].clone();
        return json_response(
            code,
            &table::table(
                p.rt,
                std::slice::from_ref(obj),
                json!({"resourceVersion": rv}),
                include,
            ),
        );
    }
    json_response(code, obj)
}

fn get(sim: &Sim, req: &Req, p: &ResourcePath) -> Result<Resp, StoreError> {
    let obj = sim
        .store
        .get(p.rt.id(), ns_of(p), name_of(p))
        .ok_or_else(|| StoreError::NotFound {
            resource: crate::store::qualified(p.rt.id()),
            name: name_of(p).to_string(),
        })?;
    if p.sub.as_deref() == Some("log") {
        let mut text = sim.logs.get(ns_of(p), name_of(p)).unwrap_or_default();
        if let Some(n) = req.q("tailLines").and_then(|n| n.parse::<usize>().ok()) {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            text = lines[start..].iter().map(|l| format!("{l}\n")).collect();
        }
        // `limitBytes` after `tailLines`, as the kubelet applies them (its log reader cuts the selected
        // lines at the byte limit: pkg/kubelet/kuberuntime/logs/logs.go, LimitWriter).
        if let Some(n) = req.q("limitBytes").and_then(|n| n.parse::<usize>().ok())
            && text.len() > n
        {
            let mut cut = n;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        return Ok(text_response(200, text));
    }
    Ok(object_response(req, p, 200, &obj))
}

/// Label and field selectors of a request (400 on bad syntax).
pub fn selectors(req: &Req) -> Result<(LabelSelector, FieldSelector), StoreError> {
    let labels = LabelSelector::parse(req.q("labelSelector").unwrap_or(""))
        .map_err(|e| bad(format!("unable to parse labelSelector: {e}")))?;
    let fields = FieldSelector::parse(req.q("fieldSelector").unwrap_or(""))
        .map_err(|e| bad(format!("unable to parse fieldSelector: {e}")))?;
    Ok((labels, fields))
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// The opaque continue token: hex of `<rv>\n<namespace>\n<name>` of the last item returned.
fn continue_token(rv: u64, obj: &Value) -> String {
    let m = &obj["metadata"];
    hex(&format!(
        "{rv}\n{}\n{}",
        m["namespace"].as_str().unwrap_or(""),
        m["name"].as_str().unwrap_or("")
    ))
}

fn list(sim: &Sim, req: &Req, p: &ResourcePath) -> Result<Resp, StoreError> {
    if p.sub.is_some() {
        return Err(bad("subresources cannot be listed"));
    }
    let (labels, fields) = selectors(req)?;
    let after: Option<(String, String)> = match req.q("continue").filter(|c| !c.is_empty()) {
        Some(tok) => {
            let decoded = unhex(tok).ok_or_else(|| bad("continue key is not valid"))?;
            let mut parts = decoded.splitn(3, '\n');
            let _rv = parts.next();
            let ns = parts.next().ok_or_else(|| bad("continue key is not valid"))?;
            let name = parts.next().ok_or_else(|| bad("continue key is not valid"))?;
            Some((ns.to_string(), name.to_string()))
        }
        None => None,
    };
    let limit = req
        .q("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    // Only the page is copied out of the store: a paged list of N objects costs N copies, not N per page.
    let page = sim.store.list_page(
        p.rt.id(),
        p.namespace.as_deref(),
        after.as_ref().map(|(ns, name)| (ns.as_str(), name.as_str())),
        limit,
        |o| labels.matches(o) && fields.matches(o),
    );
    let (matching, rv) = (page.items, page.rv);
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if page.remaining > 0
        && let Some(last) = matching.last()
    {
        meta["continue"] = json!(continue_token(rv, last));
        meta["remainingItemCount"] = json!(page.remaining);
    }
    if table::wants_table(&req.accept) {
        let include = IncludeObject::parse(req.q("includeObject"));
        return Ok(json_response(200, &table::table(p.rt, &matching, meta, include)));
    }
    // Serialised straight from the stored objects (fields in the order `json!` would sort them).
    #[derive(serde::Serialize)]
    struct List<'a> {
        #[serde(rename = "apiVersion")]
        api_version: String,
        items: &'a [crate::store::Shared],
        kind: String,
        metadata: Value,
    }
    Ok(super::serialized_response(
        200,
        &List {
            api_version: p.rt.api_version(),
            items: &matching,
            kind: format!("{}List", p.rt.kind),
            metadata: meta,
        },
    ))
}

/// Default and minimum lifetime of a requested token (`pkg/apis/authentication/validation` and the
/// TokenRequest REST storage, `pkg/registry/core/serviceaccount/storage/token.go`): one hour when unset,
/// at least ten minutes.
const TOKEN_DEFAULT_SECONDS: i64 = 3600;
const TOKEN_MIN_SECONDS: i64 = 600;

/// `POST serviceaccounts/NAME/token`: a TokenRequest answered with a token for that ServiceAccount.
fn token_request(sim: &Sim, req: &Req, p: &ResourcePath) -> Result<Resp, StoreError> {
    let body = parse_body(req)?;
    let sa = sim
        .store
        .get(p.rt.id(), ns_of(p), name_of(p))
        .ok_or_else(|| StoreError::NotFound {
            resource: "serviceaccounts".into(),
            name: name_of(p).to_string(),
        })?;
    let seconds = body["spec"]["expirationSeconds"]
        .as_i64()
        .unwrap_or(TOKEN_DEFAULT_SECONDS);
    if seconds < TOKEN_MIN_SECONDS {
        return Err(StoreError::Invalid {
            resource: "tokenrequests.authentication.k8s.io".into(),
            name: name_of(p).to_string(),
            message: format!(
                "TokenRequest.authentication.k8s.io {:?} is invalid: spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration less than 10 minutes",
                name_of(p)
            ),
        });
    }
    let uid = sa["metadata"]["uid"].as_str().unwrap_or("");
    let ttl = std::time::Duration::from_secs(seconds.unsigned_abs());
    let (token, expires) = sim.tokens.issue(ns_of(p), name_of(p), uid, ttl);
    let expires = jiff::Timestamp::try_from(expires)
        .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
        .unwrap_or_default();
    let mut spec = body["spec"].clone();
    if !spec.is_object() {
        spec = json!({});
    }
    spec["expirationSeconds"] = json!(seconds);
    if spec.get("audiences").is_none_or(Value::is_null) {
        spec["audiences"] = json!(["https://kubernetes.default.svc.cluster.local"]);
    }
    Ok(json_response(
        201,
        &json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name_of(p), "namespace": ns_of(p), "creationTimestamp": crate::store::now_rfc3339()},
            "spec": spec,
            "status": {"token": token, "expirationTimestamp": expires},
        }),
    ))
}

fn create(sim: &Sim, req: &Req, p: &ResourcePath) -> Result<Resp, StoreError> {
    if p.sub.as_deref() == Some("token") {
        return token_request(sim, req, p);
    }
    if p.sub.is_some() {
        return Ok(status_response(
            405,
            "MethodNotAllowed",
            "create is not allowed on a subresource",
        ));
    }
    if p.rt.namespaced && p.namespace.is_none() {
        return Ok(status_response(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ));
    }
    let mut obj = parse_body(req)?;
    if !obj.is_object() {
        return Err(bad("the body of the request was not an object"));
    }
    not_acceptable_kind(p, &obj)?;
    reconcile_namespace(p, &mut obj)?;
    let created = sim.store.create_shared(p.rt.id(), obj, &write_opts(req, false))?;
    Ok(object_response(req, p, 201, &created))
}

fn update(sim: &Sim, req: &Req, p: &ResourcePath) -> Result<Resp, StoreError> {
    if p.sub.as_deref() == Some("log") {
        return Ok(status_response(
            405,
            "MethodNotAllowed",
            "pods/log only supports get",
        ));
    }
    let mut obj = parse_body(req)?;
    if !obj.is_object() {
        return Err(bad("the body of the request was not an object"));
    }
    not_acceptable_kind(p, &obj)?;
    reconcile_namespace(p, &mut obj)?;
    let updated = sim.store.replace(
        p.rt.id(),
        ns_of(p),
        name_of(p),
        obj,
        target(p),
        &write_opts(req, false),
    )?;
    Ok(object_response(req, p, 200, &updated))
}

/// Whether a patch sets `metadata.resourceVersion` itself (then it is a precondition; otherwise patches
/// apply to whatever version is current).
fn patch_sets_rv(kind: PatchKind, patch: &Value) -> bool {
    match kind {
        PatchKind::Json => patch.as_array().is_some_and(|ops| {
            ops.iter()
                .any(|op| op["path"] == "/metadata/resourceVersion" && op["op"] != "test")
        }),
        _ => patch["metadata"]
            .get("resourceVersion")
            .is_some_and(|v| !v.is_null()),
    }
}

fn patch(sim: &Sim, req: &Req, p: &ResourcePath) -> Result<Resp, StoreError> {
    if p.sub.as_deref() == Some("log") {
        return Ok(status_response(
            405,
            "MethodNotAllowed",
            "pods/log only supports get",
        ));
    }
    let Some(kind) = PatchKind::from_content_type(&req.content_type) else {
        return Ok(status_response(
            415,
            "UnsupportedMediaType",
            &format!(
                "the body of the request was in an unknown format ({})",
                req.content_type
            ),
        ));
    };
    if kind == PatchKind::Strategic && p.rt.custom {
        return Ok(status_response(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        ));
    }
    let patch_val: Value = if kind == PatchKind::Apply {
        let text = std::str::from_utf8(&req.body).map_err(|e| bad(format!("body is not UTF-8: {e}")))?;
        serde_saphyr::from_str(text).map_err(|e| bad(format!("error decoding YAML: {e}")))?
    } else {
        serde_json::from_slice(&req.body).map_err(|e| bad(format!("error decoding patch: {e}")))?
    };
    let mut opts = write_opts(req, kind == PatchKind::Apply);
    if kind == PatchKind::Apply {
        opts.applied = Some(patch_val.clone());
        if req.q("fieldManager").is_none_or(str::is_empty) {
            return Err(StoreError::Invalid {
                resource: String::new(),
                name: String::new(),
                message: "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
            });
        }
        if !patch_val.is_object() {
            return Err(bad("apply patch must be an object"));
        }
        not_acceptable_kind(p, &patch_val)?;
    }
    let keep_rv = patch_sets_rv(kind, &patch_val);
    let custom = p.rt.custom;
    let result = sim
        .store
        .update_shared(p.rt.id(), ns_of(p), name_of(p), target(p), &opts, |old| {
            // Server-side apply: changing a field another manager owns is a conflict unless forced.
            if kind == PatchKind::Apply
                && !opts.force
                && let Some(message) = crate::fields::apply_conflicts(
                    old,
                    &patch_val,
                    opts.field_manager.as_deref().unwrap_or(""),
                )
            {
                return Err(StoreError::Conflict {
                    resource: crate::store::qualified(p.rt.id()),
                    name: name_of(p).to_string(),
                    message,
                });
            }
            let mut new = old.clone();
            match kind {
                PatchKind::Merge => patch::merge(&mut new, &patch_val),
                PatchKind::Strategic => patch::strategic_merge(&mut new, &patch_val),
                PatchKind::Apply => patch::apply(&mut new, &patch_val, custom),
                PatchKind::Json => {
                    patch::json_patch(&mut new, &patch_val).map_err(|e| StoreError::Invalid {
                        resource: crate::store::qualified(p.rt.id()),
                        name: name_of(p).to_string(),
                        message: format!(
                            "the server rejected our request due to an error in our request: {e}"
                        ),
                    })?
                }
            }
            if !keep_rv && let Some(m) = new["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            Ok(new)
        });
    match result {
        Ok(obj) => Ok(object_response(req, p, 200, &obj)),
        Err(StoreError::NotFound { .. }) if kind == PatchKind::Apply && p.sub.is_none() => {
            let mut obj = patch_val;
            reconcile_namespace(p, &mut obj)?;
            if obj["metadata"].get("name").is_none() {
                obj["metadata"]["name"] = json!(name_of(p));
            }
            let created = sim.store.create_shared(p.rt.id(), obj, &opts)?;
            Ok(object_response(req, p, 201, &created))
        }
        Err(e) => Err(e),
    }
}

/// `DeleteOptions` from the body, with query parameters as a fallback.
fn delete_options(req: &Req) -> Result<(Propagation, Option<String>, bool), StoreError> {
    let body: Value = if req.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&req.body).map_err(|e| bad(format!("error decoding DeleteOptions: {e}")))?
    };
    let policy = body["propagationPolicy"]
        .as_str()
        .or(req.q("propagationPolicy"))
        .unwrap_or("Background");
    let propagation = match policy {
        "Foreground" => Propagation::Foreground,
        "Orphan" => Propagation::Orphan,
        "Background" => Propagation::Background,
        other => return Err(bad(format!("unknown propagationPolicy {other:?}"))),
    };
    let propagation = if body["orphanDependents"] == true {
        Propagation::Orphan
    } else {
        propagation
    };
    let rv = body["preconditions"]["resourceVersion"]
        .as_str()
        .map(str::to_string);
    let dry = req.dry_run() || body["dryRun"].as_array().is_some_and(|a| !a.is_empty());
    Ok((propagation, rv, dry))
}

fn delete(sim: &Sim, req: &Req, p: &ResourcePath) -> Result<Resp, StoreError> {
    if p.sub.is_some() {
        return Ok(status_response(
            405,
            "MethodNotAllowed",
            "delete is not allowed on a subresource",
        ));
    }
    let (propagation, rv, dry) = delete_options(req)?;
    let obj = sim
        .store
        .delete(p.rt.id(), ns_of(p), name_of(p), propagation, dry, rv.as_deref())?;
    Ok(serialized_response(200, &obj))
}

fn delete_collection(sim: &Sim, req: &Req, p: &ResourcePath) -> Result<Resp, StoreError> {
    if p.sub.is_some() {
        return Ok(status_response(
            405,
            "MethodNotAllowed",
            "delete is not allowed on a subresource",
        ));
    }
    let (labels, fields) = selectors(req)?;
    let (propagation, _, dry) = delete_options(req)?;
    let (items, _) = sim.store.list(p.rt.id(), p.namespace.as_deref());
    let mut deleted = Vec::new();
    for o in items.iter().filter(|o| labels.matches(o) && fields.matches(o)) {
        let m = &o["metadata"];
        match sim.store.delete(
            p.rt.id(),
            m["namespace"].as_str().unwrap_or(""),
            m["name"].as_str().unwrap_or(""),
            propagation,
            dry,
            None,
        ) {
            Ok(d) => deleted.push(d),
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        200,
        &json!({
            "kind": format!("{}List", p.rt.kind),
            "apiVersion": p.rt.api_version(),
            "metadata": {"resourceVersion": sim.store.resource_version().to_string()},
            "items": deleted,
        }),
    ))
}
