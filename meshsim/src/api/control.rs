//! meshsim's own control endpoints, on the API port under `/meshsim/` (not part of the Kubernetes API and
//! not counted by request accounting):
//!
//! - `GET /meshsim/healthz`
//! - `GET /meshsim/requests` (accounting snapshot + log), `DELETE /meshsim/requests` (reset)
//! - `GET /meshsim/faults`, `POST /meshsim/faults` (JSON or YAML FaultSpec or list), `DELETE /meshsim/faults`,
//!   `DELETE /meshsim/faults/{id}`
//! - `GET /meshsim/traffic`, `DELETE /meshsim/traffic`, `POST /meshsim/traffic/request`

use std::sync::Arc;

use hyper::Method;
use serde_json::{Value, json};

use super::{Req, Resp, json_response, status_response};
use crate::Sim;
use crate::faults::FaultSpec;

/// Entry point for `/meshsim/{sub}`.
pub async fn handle(sim: &Arc<Sim>, req: &Req, sub: &str) -> Resp {
    let segs: Vec<&str> = sub.split('/').filter(|s| !s.is_empty()).collect();
    match (&req.method, segs.as_slice()) {
        (&Method::GET, ["healthz"]) => super::text_response(200, "ok"),
        (&Method::GET, ["requests"]) => {
            let mut v = sim.accounting.snapshot();
            v["log"] = serde_json::to_value(sim.accounting.log()).unwrap_or(Value::Null);
            json_response(200, &v)
        }
        (&Method::DELETE, ["requests"]) => {
            sim.accounting.reset();
            json_response(200, &json!({"reset": true}))
        }
        (&Method::GET, ["faults"]) => json_response(200, &json!({"faults": sim.faults.list()})),
        (&Method::POST, ["faults"]) => post_faults(sim, req),
        (&Method::DELETE, ["faults"]) => {
            sim.faults.clear();
            json_response(200, &json!({"cleared": true}))
        }
        (&Method::DELETE, ["faults", id]) => {
            if sim.faults.remove(id) {
                json_response(200, &json!({"removed": id}))
            } else {
                status_response(404, "NotFound", &format!("no fault with id {id:?}"))
            }
        }
        (&Method::GET, ["traffic"]) => json_response(200, &traffic_snapshot(sim)),
        (&Method::DELETE, ["traffic"]) => {
            traffic_reset(sim);
            json_response(200, &json!({"reset": true}))
        }
        (&Method::POST, ["traffic", "request"]) => match serde_json::from_slice::<Value>(&req.body) {
            Ok(body) => match traffic_request(sim, &body) {
                Ok(v) => json_response(200, &v),
                Err((code, msg)) => status_response(code, "BadRequest", &msg),
            },
            Err(e) => status_response(400, "BadRequest", &format!("invalid JSON body: {e}")),
        },
        _ => status_response(
            404,
            "NotFound",
            &format!("no meshsim endpoint {} /meshsim/{sub}", req.method),
        ),
    }
}

fn post_faults(sim: &Sim, req: &Req) -> Resp {
    let text = match std::str::from_utf8(&req.body) {
        Ok(t) => t,
        Err(e) => return status_response(400, "BadRequest", &format!("body is not UTF-8: {e}")),
    };
    let specs: Result<Vec<FaultSpec>, String> = match serde_saphyr::from_str::<FaultSpec>(text) {
        Ok(one) => one.validate().map(|_| vec![one]),
        Err(single_err) => crate::faults::parse_specs(text).map_err(|e| {
            if text.trim_start().starts_with('-') || text.trim_start().starts_with('[') {
                e
            } else {
                single_err.to_string()
            }
        }),
    };
    match specs {
        Ok(specs) if !specs.is_empty() => {
            let ids: Vec<String> = specs.into_iter().map(|s| sim.faults.add(s)).collect();
            json_response(201, &json!({"ids": ids}))
        }
        Ok(_) => status_response(400, "BadRequest", "no fault in body"),
        Err(e) => status_response(400, "BadRequest", &format!("invalid fault: {e}")),
    }
}

// Adapters to the traffic model (`crate::traffic`).

fn traffic_snapshot(sim: &Sim) -> Value {
    sim.traffic.snapshot()
}

fn traffic_reset(sim: &Sim) {
    sim.traffic.reset()
}

/// Body: `{"source": "ns/pod" | null, "method": "GET", "url": "http://svc.ns/path", "headers": {..}}`.
fn traffic_request(sim: &Sim, body: &Value) -> Result<Value, (u16, String)> {
    use crate::traffic::{self, Outcome, Source};
    let source = match body.get("source") {
        None | Some(Value::Null) => Source::External,
        Some(Value::String(s)) => match s.split_once('/') {
            Some((ns, pod)) if !ns.is_empty() && !pod.is_empty() => Source::Pod {
                namespace: ns.to_string(),
                name: pod.to_string(),
            },
            _ => {
                return Err((
                    400,
                    format!("source must be \"namespace/pod\" or null, got {s:?}"),
                ));
            }
        },
        Some(other) => return Err((400, format!("source must be a string or null, got {other}"))),
    };
    let url = body["url"]
        .as_str()
        .ok_or_else(|| (400, "url is required".to_string()))?
        .to_string();
    let method = body["method"].as_str().unwrap_or("GET").to_string();
    let headers = match body.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()),
                )
            })
            .collect(),
        Some(other) => return Err((400, format!("headers must be an object, got {other}"))),
    };
    let resp = traffic::handle(
        sim,
        &traffic::Request {
            source,
            method,
            url,
            headers,
        },
    );
    let (outcome, status) = match resp.outcome {
        Outcome::Http(code) => ("http", Some(code)),
        Outcome::Reset => ("reset", None),
        Outcome::DnsFailure => ("dns-failure", None),
        Outcome::Refused => ("refused", None),
    };
    let headers: serde_json::Map<String, Value> = resp
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    Ok(json!({
        "outcome": outcome,
        "status": status,
        "headers": headers,
        "body": resp.body,
        "enforcement": resp.enforcement,
        "intended_allow": resp.intended_allow,
        "wrongly_allowed": resp.wrongly_allowed,
        "wrongly_denied": resp.wrongly_denied,
    }))
}
