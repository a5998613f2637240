//! The Kubernetes API over HTTP (HTTP/1.1, keep-alive, chunked watch streams), plus meshsim's control
//! endpoints under `/meshsim/`. Enough of the apiserver for kubectl 1.32 and kube-rs 5 to work unmodified:
//! discovery, OpenAPI stubs, every verb on every registry kind, watches, patches, Tables, pod logs.
//!
//! Every Kubernetes request goes through [`handle`]: settings latency and `api-latency` faults, then
//! `api-error` faults, then the handler; the outcome is recorded in [`crate::accounting`].

pub mod auth;
pub mod control;
pub mod discovery;
pub mod handlers;
pub mod patch;
pub mod proto;
pub mod routing;
pub mod selectors;
pub mod table;
pub mod watch;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::Sim;
use crate::accounting::RequestRecord;
use crate::faults::{FaultKind, FaultSpec};
use crate::store::StoreError;
use routing::Route;

/// Response body: whole (most answers) or streamed (watches).
pub type Body = UnsyncBoxBody<Bytes, Infallible>;
/// A response as handlers build it.
pub type Resp = Response<Body>;

/// A request with its body read, as handlers see it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: HashMap<String, String>,
    pub accept: String,
    pub content_type: String,
    pub user_agent: String,
    pub body: Bytes,
    /// `host:port` the server listens on (for `/api`'s serverAddressByClientCIDRs).
    pub server_addr: SocketAddr,
}

impl Req {
    /// A query parameter.
    pub fn q(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    /// `dryRun=All` in the query (or, for deletes, `dryRun: [All]` in the DeleteOptions body).
    pub fn dry_run(&self) -> bool {
        if self.q("dryRun").is_some_and(|v| !v.is_empty()) {
            return true;
        }
        self.method == Method::DELETE
            && !self.body.is_empty()
            && serde_json::from_slice::<Value>(&self.body)
                .is_ok_and(|b| b["dryRun"].as_array().is_some_and(|a| !a.is_empty()))
    }

    /// `watch=true` / `watch=1`.
    pub fn is_watch(&self) -> bool {
        matches!(self.q("watch"), Some("true" | "1" | "True"))
    }
}

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// A JSON answer with `Content-Type: application/json`.
pub fn json_response(code: u16, v: &Value) -> Resp {
    serialized_response(code, v)
}

/// A JSON answer of anything serialisable (a list serialised from the stored objects, without building a
/// `Value` of the whole list first).
pub fn serialized_response(code: u16, v: &impl serde::Serialize) -> Resp {
    let mut bytes = serde_json::to_vec(v).unwrap_or_default();
    bytes.push(b'\n');
    let mut r = Response::new(full(bytes));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A `text/plain` answer.
pub fn text_response(code: u16, text: impl Into<String>) -> Resp {
    let mut r = Response::new(full(text.into()));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A Status failure answer for a store error.
pub fn error_response(e: &StoreError) -> Resp {
    json_response(e.code(), &e.to_status())
}

/// A Status failure with an arbitrary code and reason.
pub fn status_response(code: u16, reason: &str, message: &str) -> Resp {
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "details": {}, "code": code}),
    )
}

/// Binds `listen` and serves the API until the task is aborted (which also closes every open connection
/// and watch).
pub async fn serve(
    sim: Arc<Sim>,
    listen: SocketAddr,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let sim = sim.clone();
                    conns.spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let sim = sim.clone();
                            async move { Ok::<_, Infallible>(handle(sim, addr, peer, req).await) }
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), svc);
                        if let Err(e) = conn.await {
                            tracing::debug!("connection ended: {e}");
                        }
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    Ok((addr, task))
}

/// What accounting and fault matching know about a request.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    pub verb: String,
    pub resource: String,
    pub plural: String,
    pub group: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

fn describe(req: &Req, route: &Route) -> RequestInfo {
    match route {
        Route::Resource(p) => {
            let verb = match (req.method.clone(), p.name.is_some()) {
                (Method::GET, true) if req.is_watch() => "watch",
                (Method::GET, true) => "get",
                (Method::GET, false) if req.is_watch() => "watch",
                (Method::GET, false) => "list",
                (Method::POST, _) => "create",
                (Method::PUT, _) => "update",
                (Method::PATCH, _) => "patch",
                (Method::DELETE, true) => "delete",
                (Method::DELETE, false) => "deletecollection",
                _ => "unknown",
            };
            RequestInfo {
                verb: verb.into(),
                resource: p.resource_name(),
                plural: p.rt.plural.into(),
                group: p.rt.group.into(),
                namespace: p.namespace.clone(),
                name: p.name.clone(),
            }
        }
        Route::Review(r) => RequestInfo {
            verb: if req.method == Method::POST {
                "create"
            } else {
                "unknown"
            }
            .into(),
            resource: r.plural.into(),
            plural: r.plural.into(),
            group: r.group.into(),
            ..Default::default()
        },
        Route::NotFound(_) => RequestInfo {
            verb: "unknown".into(),
            ..Default::default()
        },
        _ => RequestInfo {
            verb: "discovery".into(),
            ..Default::default()
        },
    }
}

/// The namespace a fault's `namespace` is compared with: the URL namespace, or for Namespace objects
/// their own name (so `api-error {resource: namespaces, namespace: shop}` hits `PATCH /api/v1/namespaces/shop`).
fn fault_namespace(info: &RequestInfo) -> Option<String> {
    if info.plural == "namespaces" && info.group.is_empty() {
        info.name.clone()
    } else {
        info.namespace.clone()
    }
}

/// Whether a fault's verb/resource/name fields select this request.
pub fn fault_selects(f: &FaultSpec, info: &RequestInfo) -> bool {
    f.verb.as_deref().is_none_or(|v| v == info.verb)
        && f.resource
            .as_deref()
            .is_none_or(|r| r == info.plural || r == info.resource)
        && f.name.as_deref().is_none_or(|n| info.name.as_deref() == Some(n))
}

async fn handle(sim: Arc<Sim>, server_addr: SocketAddr, peer: SocketAddr, req: Request<Incoming>) -> Resp {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => return status_response(400, "BadRequest", &format!("reading body: {e}")),
    };
    let header = |name: hyper::header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let req = Req {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: routing::parse_query(parts.uri.query()),
        accept: header(hyper::header::ACCEPT),
        content_type: header(CONTENT_TYPE),
        user_agent: header(hyper::header::USER_AGENT),
        body,
        server_addr,
    };
    let route = routing::route(&req.path);
    if let Route::Control(sub) = &route {
        return control::handle(&sim, &req, sub).await;
    }
    let info = describe(&req, &route);
    let (resp, user) = match admit(&sim, &parts.headers, &req, &route, &info) {
        Admission::Allowed(user) => (serve_admitted(&sim, &req, &route, &info, &user).await, user.name),
        Admission::Refused(resp, name) => (resp, name),
    };
    let record = RequestRecord {
        time: crate::store::now_micro(),
        verb: info.verb,
        resource: info.resource,
        group: info.group,
        namespace: info.namespace,
        name: info.name,
        user_agent: req.user_agent.clone(),
        dry_run: req.dry_run(),
        code: resp.status().as_u16(),
        method: req.method.to_string(),
        path: req.path.clone(),
        user,
        peer: peer.to_string(),
    };
    tracing::debug!(method = %record.method, path = %record.path, code = record.code, user = %record.user, "request");
    sim.accounting.record(record);
    resp
}

/// The largest request body the server reads (`MaxRequestBodyBytes` of
/// `k8s.io/apiserver/pkg/server/config.go`: 3 MiB); larger bodies get 413 (`limitedReadBody` in
/// `k8s.io/apiserver/pkg/endpoints/handlers/rest.go`).
pub const MAX_REQUEST_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The request's authorisation attributes (`k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`): a
/// Namespace object's own URL carries its name as the namespace; a list or watch with a
/// `metadata.name=` field selector carries that name.
pub fn attributes(req: &Req, route: &Route, info: &RequestInfo) -> auth::Attributes {
    match route {
        Route::Resource(p) => {
            let own_ns = p.rt.plural == "namespaces" && p.rt.group.is_empty();
            let namespace = if own_ns {
                p.name.clone()
            } else {
                p.namespace.clone()
            };
            let name = p.name.clone().or_else(|| {
                matches!(info.verb.as_str(), "list" | "watch")
                    .then(|| field_selector_name(req.q("fieldSelector").unwrap_or("")))
                    .flatten()
            });
            auth::Attributes {
                verb: info.verb.clone(),
                resource_request: true,
                group: p.rt.group.into(),
                version: p.rt.version.into(),
                resource: p.rt.plural.into(),
                subresource: p.sub.clone().unwrap_or_default(),
                namespace: namespace.unwrap_or_default(),
                name: name.unwrap_or_default(),
                path: req.path.clone(),
            }
        }
        Route::Review(r) => auth::Attributes {
            verb: info.verb.clone(),
            resource_request: true,
            group: r.group.into(),
            version: r.version.into(),
            resource: r.plural.into(),
            path: req.path.clone(),
            ..Default::default()
        },
        _ => auth::Attributes {
            verb: req.method.as_str().to_lowercase(),
            path: req.path.clone(),
            ..Default::default()
        },
    }
}

/// The name a `metadata.name=X` (or `==`) field selector requires.
fn field_selector_name(sel: &str) -> Option<String> {
    sel.split(',').find_map(|term| {
        let v = term.trim().strip_prefix("metadata.name")?;
        let v = v.strip_prefix("==").or_else(|| v.strip_prefix('='))?;
        (!v.is_empty()).then(|| v.to_string())
    })
}

/// The outcome of authentication, impersonation and authorisation.
enum Admission {
    /// The identity the request runs as.
    Allowed(auth::User),
    /// The refusal (401, 400, 403) and the name of whoever asked.
    Refused(Resp, String),
}

/// Authentication, impersonation and authorisation of a request.
fn admit(sim: &Sim, headers: &hyper::HeaderMap, req: &Req, route: &Route, info: &RequestInfo) -> Admission {
    let one = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let imp = auth::Impersonation {
        user: one("impersonate-user"),
        groups: headers
            .get_all("impersonate-group")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect(),
        uid: one("impersonate-uid"),
    };
    let authorization = one("authorization").unwrap_or_default();
    sim.store.read(|view| {
        let Some(requester) = auth::authenticate(view, &sim.tokens, &authorization) else {
            return Admission::Refused(
                status_response(401, "Unauthorized", "Unauthorized"),
                String::new(),
            );
        };
        let user = if imp.is_empty() {
            requester
        } else {
            match auth::impersonate(view, &requester, &imp) {
                Ok(u) => u,
                Err(auth::ImpersonationError::BadRequest(m)) => {
                    return Admission::Refused(status_response(400, "BadRequest", &m), requester.name);
                }
                Err(auth::ImpersonationError::Forbidden(a)) => {
                    let status = auth::forbidden_status(&requester, &a, "");
                    return Admission::Refused(json_response(403, &status), requester.name);
                }
            }
        };
        let attrs = attributes(req, route, info);
        match auth::authorize(view, &user, &attrs) {
            auth::Decision::Allow(_) => Admission::Allowed(user),
            auth::Decision::Deny(reason) => {
                let status = auth::forbidden_status(&user, &attrs, &reason);
                Admission::Refused(json_response(403, &status), user.name)
            }
        }
    })
}

/// An authorised request: body limit, latency and faults, then the handler.
async fn serve_admitted(
    sim: &Arc<Sim>,
    req: &Req,
    route: &Route,
    info: &RequestInfo,
    user: &auth::User,
) -> Resp {
    if req.body.len() > MAX_REQUEST_BODY_BYTES {
        return status_response(
            413,
            "RequestEntityTooLarge",
            &format!("Request entity too large: limit is {MAX_REQUEST_BODY_BYTES}"),
        );
    }
    let api = info.verb != "discovery" && info.verb != "unknown";
    let mut delay = sim.settings.latency.api_ms;
    let mut delay_answer = 0;
    if api {
        let ns = fault_namespace(info);
        for f in sim
            .faults
            .matching(&*sim.store, FaultKind::ApiLatency, ns.as_deref(), |f| {
                fault_selects(f, info)
            })
        {
            if f.delay_answer {
                delay_answer += f.latency_ms.unwrap_or(0);
            } else {
                delay += f.latency_ms.unwrap_or(0);
            }
        }
    }
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let injected = if api {
        let ns = fault_namespace(info);
        sim.faults
            .matching(&*sim.store, FaultKind::ApiError, ns.as_deref(), |f| {
                fault_selects(f, info)
            })
            .into_iter()
            .next()
    } else {
        None
    };
    let resp = match injected {
        Some(f) => {
            let code = f.code.unwrap_or(500);
            let e = StoreError::Injected {
                code,
                reason: injected_reason(code).into(),
                message: format!(
                    "meshsim injected fault {}: {} {}",
                    f.id.as_deref().unwrap_or(""),
                    info.verb,
                    info.resource
                ),
            };
            error_response(&e)
        }
        None => dispatch(sim, req, route, user).await,
    };
    // Applied already: a client that stops waiting now loses the answer, not the write.
    if delay_answer > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay_answer)).await;
    }
    resp
}

/// The Status reason a real server uses for a code.
pub fn injected_reason(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

async fn dispatch(sim: &Arc<Sim>, req: &Req, route: &Route, user: &auth::User) -> Resp {
    let get_only = req.method == Method::GET;
    match route {
        Route::Version if get_only => json_response(200, &discovery::version()),
        Route::CoreVersions if get_only => {
            json_response(200, &discovery::core_versions(&req.server_addr.to_string()))
        }
        Route::Groups if get_only => json_response(200, &discovery::groups()),
        Route::Group(g) if get_only => json_response(200, &discovery::group(g)),
        Route::ResourceList { group, version } if get_only => {
            json_response(200, &discovery::resource_list(group, version))
        }
        Route::OpenApiV2 if get_only => {
            let mut r = Response::new(full(discovery::openapi_v2_proto()));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(discovery::OPENAPI_V2_CONTENT_TYPE),
            );
            r
        }
        Route::OpenApiV3(sub) if get_only => match discovery::openapi_v3(sub) {
            Some(v) => json_response(200, &v),
            None => status_response(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        },
        Route::Resource(p) => handlers::handle(sim, req, p).await,
        Route::Review(r) if req.method == Method::POST => {
            let body = match handlers::parse_body(req) {
                Ok(b) => b,
                Err(e) => return error_response(&e),
            };
            match sim.store.read(|view| auth::review(view, user, r.kind, &body)) {
                Ok(v) => json_response(201, &v),
                Err(m) => status_response(
                    422,
                    "Invalid",
                    &format!("{}.{} \"\" is invalid: {m}", r.kind, r.group),
                ),
            }
        }
        Route::NotFound(msg) => status_response(404, "NotFound", msg),
        Route::Control(_) => status_response(404, "NotFound", "not found"),
        _ => status_response(
            405,
            "MethodNotAllowed",
            &format!(
                "the server does not allow this method on the requested resource ({})",
                req.method
            ),
        ),
    }
}
