//! One measurement of an `http` probe, sent by the runner with reqwest (rustls).
//!
//! Classification (D's [`super::policy`] decides Success/Failure from an observation):
//! - an HTTP response -> `Observed::Response` -> checked against the expectation;
//! - no response from the target (connection refused or reset, timeout, DNS failure) ->
//!   `Observed::NoResponse`, which is a **Failure** unless the expected status set contains `0` (that is
//!   what a ztunnel L4 denial looks like). Argo's web metric would count these as errors; here the
//!   target's reachability is exactly what the probe measures, so it counts against `failure_limit`;
//! - the probe could not be sent at all (invalid URL or header, proxy unreachable) -> **Error** (counts
//!   against `error_limit`).
//!
//! A forward proxy reports upstream connect failures as `502`; meshsim's probe proxy marks them with
//! `x-meshsim-error: refused|dns` — those are treated as "no response", like a direct connection error.
//! Secret header values are never logged (headers are only shown through their redacting Display).
//!
//! Redirects are followed only within the probe URL's origin (scheme, host and port), at most
//! [`MAX_REDIRECTS`] times: a redirect to another origin is not followed, so the probe's headers (secret
//! ones included: reqwest strips only `Authorization`, `Cookie` and the like on a host change) never reach
//! a host the probe did not name; the probe then observes the 3xx answer itself. The body is read up to
//! [`MAX_BODY`] bytes (an expectation looks for a substring; a huge or endless body must not fill memory).

use std::time::Duration;

use super::policy::{Measurement, Observed, check};
use super::spec::{Expectation, HttpProbe, redacted_url};

/// Header that makes meshsim's proxy send the request as pod `ns/pod`.
pub const SOURCE_HEADER: &str = "x-meshsim-source";
/// Header meshsim's proxy puts on answers for requests that never reached the target.
pub const PROXY_ERROR_HEADER: &str = "x-meshsim-error";

/// Redirects followed within one origin before the 3xx answer is taken as the observation.
pub const MAX_REDIRECTS: usize = 5;
/// Bytes of the response body read; the rest is discarded.
pub const MAX_BODY: usize = 64 * 1024;

/// The redirect rule: follow only to the origin the probe started at, and only a few times.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same_origin = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if same_origin && attempt.previous().len() <= MAX_REDIRECTS {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// Reads at most [`MAX_BODY`] bytes of the body (lossy UTF-8).
async fn read_capped(mut resp: reqwest::Response) -> Result<String, reqwest::Error> {
    let mut buf: Vec<u8> = Vec::new();
    while buf.len() < MAX_BODY {
        match resp.chunk().await? {
            Some(c) => {
                let take = c.len().min(MAX_BODY - buf.len());
                buf.extend_from_slice(&c[..take]);
            }
            None => break,
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Sends one request and classifies it.
pub async fn measure(probe: &HttpProbe, expect: &Expectation, timeout: Duration) -> Measurement {
    match observe(probe, timeout).await {
        Ok(observed) => check(expect, &observed),
        Err(reason) => Measurement::Error(reason),
    }
}

/// Sends one request: `Ok(observation)`, or `Err(reason)` when it could not be sent.
pub async fn observe(probe: &HttpProbe, timeout: Duration) -> Result<Observed, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(redirect_policy());
    if let Some(p) = &probe.proxy {
        let proxy = reqwest::Proxy::all(p.as_str())
            .map_err(|e| format!("invalid proxy URL {}: {e}", redacted_url(p)))?;
        builder = builder.proxy(proxy);
    }
    let client = builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let method = reqwest::Method::from_bytes(probe.method.as_bytes())
        .map_err(|_| format!("invalid HTTP method {:?}", probe.method))?;
    let mut req = client.request(method, probe.url.as_str());
    for (k, v) in probe.headers.expose() {
        req = req.header(k, v);
    }
    if let Some(src) = &probe.source {
        req = req.header(SOURCE_HEADER, src.as_str());
    }
    if let Some(b) = &probe.body {
        req = req.body(b.clone());
    }
    let req = req.build().map_err(|e| {
        format!(
            "invalid request to {}: {}",
            redacted_url(&probe.url),
            e.without_url()
        )
    })?;
    tracing::debug!(url = %redacted_url(&probe.url), method = %probe.method, headers = %probe.headers, "http probe");
    let resp = match client.execute(req).await {
        Ok(r) => r,
        // reqwest puts the URL in its errors: they go to reports and Events, so without it.
        Err(e) => return classify_error(probe, &e.without_url()),
    };
    let status = resp.status().as_u16();
    let headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    if status == 502
        && let Some((_, why)) = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(PROXY_ERROR_HEADER))
        && matches!(why.as_str(), "refused" | "dns" | "reset")
    {
        return Ok(Observed::NoResponse {
            reason: format!("connection {why} (reported by the proxy)"),
        });
    }
    let body = match read_capped(resp).await {
        Ok(b) => b,
        Err(e) => {
            return Ok(Observed::NoResponse {
                reason: format!("response body interrupted: {e}"),
            });
        }
    };
    Ok(Observed::Response {
        status,
        headers,
        body,
    })
}

fn classify_error(probe: &HttpProbe, e: &reqwest::Error) -> Result<Observed, String> {
    if e.is_builder() {
        return Err(format!("invalid request to {}: {e}", redacted_url(&probe.url)));
    }
    if e.is_timeout() {
        return Ok(Observed::NoResponse {
            reason: "timeout".into(),
        });
    }
    if e.is_connect() {
        if let Some(p) = &probe.proxy {
            // With a proxy the connection is to the proxy: the probe itself cannot run.
            return Err(format!(
                "cannot connect to proxy {}: {}",
                redacted_url(p),
                chain(e)
            ));
        }
        return Ok(Observed::NoResponse {
            reason: format!("connection failed: {}", chain(e)),
        });
    }
    Ok(Observed::NoResponse {
        reason: format!("connection reset or closed: {}", chain(e)),
    })
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}
