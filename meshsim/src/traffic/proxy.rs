//! HTTP/1.1 forward proxy for probes: `GET http://api.shop.svc.cluster.local/path HTTP/1.1` (absolute
//! form; origin form with a `Host` header works too) is answered by [`super::handle`].
//!
//! - Source: outside the mesh ([`Source::External`]) unless the request carries
//!   `x-meshsim-source: <namespace>/<pod>` (a pod name, or a workload name: see [`Source::Pod`]). The
//!   header is removed before the request reaches the model, as are hop-by-hop headers.
//! - Outcomes: `Http(status)` -> that response (headers and body of the model); `Reset` -> the connection
//!   is closed without a response (clients see a connection error); `DnsFailure` -> 502 with
//!   `x-meshsim-error: dns`; `Refused` -> 502 with `x-meshsim-error: refused`.
//! - Every response carries `x-meshsim-enforcement` (hops, comma-separated) and `x-meshsim-intended`
//!   (`allow`/`deny`) so probes and tests can see what the model did.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;

use super::{Outcome, Request, Source};
use crate::Sim;

/// Header naming the source pod of a proxied request.
pub const SOURCE_HEADER: &str = "x-meshsim-source";

/// Error that makes hyper drop the connection without answering (the model said `Reset`).
#[derive(Debug)]
struct ConnectionReset;

impl std::fmt::Display for ConnectionReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by the traffic model")
    }
}

impl std::error::Error for ConnectionReset {}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

fn plain(status: u16, err: Option<&str>, body: &str) -> hyper::Response<Full<Bytes>> {
    let mut b = hyper::Response::builder()
        .status(status)
        .header("content-type", "text/plain");
    if let Some(e) = err {
        b = b.header("x-meshsim-error", e);
    }
    b.body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())))
}

/// Turns one proxied HTTP request into a model request; `Err` is an immediate answer (bad request).
pub fn to_model_request(
    method: &str,
    uri: &hyper::Uri,
    headers: &hyper::HeaderMap,
) -> Result<Request, (u16, &'static str, String)> {
    let url = if uri.scheme().is_some() {
        uri.to_string()
    } else {
        let host = headers.get("host").and_then(|h| h.to_str().ok()).ok_or((
            400,
            "bad-request",
            "absolute-form URL or Host header required".to_string(),
        ))?;
        format!(
            "http://{host}{}",
            uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
        )
    };
    let source = match headers.get(SOURCE_HEADER).and_then(|h| h.to_str().ok()) {
        None => Source::External,
        Some(v) => match v.trim().split_once('/') {
            Some((ns, pod)) if !ns.is_empty() && !pod.is_empty() => Source::Pod {
                namespace: ns.to_string(),
                name: pod.to_string(),
            },
            _ => {
                return Err((
                    400,
                    "bad-source",
                    format!("{SOURCE_HEADER} must be <namespace>/<pod>, got {v:?}"),
                ));
            }
        },
    };
    let headers = headers
        .iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            k != SOURCE_HEADER && !HOP_BY_HOP.contains(&k)
        })
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    Ok(Request {
        source,
        method: method.to_string(),
        url,
        headers,
    })
}

async fn serve_one(
    sim: Arc<Sim>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, ConnectionReset> {
    if req.method() == Method::CONNECT {
        return Ok(plain(
            405,
            Some("connect-unsupported"),
            "CONNECT is not supported\n",
        ));
    }
    let (parts, body) = req.into_parts();
    // Drain the request body (the echo application does not read it).
    let _ = body.collect().await;
    let mreq = match to_model_request(parts.method.as_str(), &parts.uri, &parts.headers) {
        Ok(r) => r,
        Err((code, err, msg)) => return Ok(plain(code, Some(err), &(msg + "\n"))),
    };
    let resp = super::handle(&sim, &mreq);
    let enforcement = resp.enforcement.join(",");
    let intended = if resp.intended_allow { "allow" } else { "deny" };
    let mut out = match resp.outcome {
        Outcome::Reset => return Err(ConnectionReset),
        Outcome::DnsFailure => plain(502, Some("dns"), "could not resolve host\n"),
        Outcome::Refused => {
            let err = resp.header("x-meshsim-error").unwrap_or("refused").to_string();
            plain(502, Some(&err), "connection refused\n")
        }
        Outcome::Http(status) => {
            let mut b = hyper::Response::builder()
                .status(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY));
            for (k, v) in &resp.headers {
                b = b.header(k.as_str(), v.as_str());
            }
            let body = if parts.method == Method::HEAD {
                Bytes::new()
            } else {
                Bytes::from(resp.body.clone())
            };
            b.body(Full::new(body))
                .unwrap_or_else(|_| plain(502, Some("bad-response"), "invalid response\n"))
        }
    };
    if let Ok(v) = enforcement.parse() {
        out.headers_mut().insert("x-meshsim-enforcement", v);
    }
    if let Ok(v) = intended.parse() {
        out.headers_mut().insert("x-meshsim-intended", v);
    }
    Ok(out)
}

/// Binds `listen` and serves the proxy until the task is aborted.
pub async fn serve(
    sim: Arc<Sim>,
    listen: SocketAddr,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("proxy accept: {e}");
                    continue;
                }
            };
            let sim = sim.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| serve_one(sim.clone(), req));
                // A service error (model outcome Reset) makes hyper close the connection unanswered.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((addr, task))
}
