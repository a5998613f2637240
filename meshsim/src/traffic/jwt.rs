//! RequestAuthentication: JWT validation by an Envoy (a destination sidecar, or a waypoint), without
//! real cryptography.
//!
//! Upstream rules (istio.io docs/reference/config/security/request_authentication, docs/tasks/security/
//! authentication/authn-policy; istio/istio `pilot/pkg/security/authn` builds one Envoy `jwt_authn`
//! provider per `jwtRules` issuer of every RequestAuthentication that applies, merged into one filter):
//! - a request without a token passes, with no request principal;
//! - a request whose token is invalid (issuer not in any applying `jwtRules`, bad signature, expired,
//!   malformed) is rejected with 401 before authorization runs;
//! - a valid token gives the request principal `<iss>/<sub>` and its claims to AuthorizationPolicy
//!   (`requestPrincipals`, `request.auth.principal`, `request.auth.claims[...]`).
//!
//! Tokens (meshsim's stand-in for signatures, see `MODEL.md`): `base64url(header).base64url(payload).sig`,
//! the payload a JSON object with `iss`, `sub` and optionally `exp` (Unix seconds). The signature part is
//! the literal `valid` for "signed by a key of the issuer's JWKS"; anything else is a bad signature. The
//! token is read from the default location, `Authorization: Bearer <token>`.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;

use super::policy::{Attached, Selector, TargetRef};

/// The signature part meshsim accepts as "signed by the issuer's JWKS".
pub const VALID_SIGNATURE: &str = "valid";

/// Envoy `jwt_authn` failure messages (the 401 body), from Envoy's `jwt_verify_lib` status strings; a token
/// of an issuer no applying `jwtRules` names is answered "Jwt issuer is not configured" (istio/istio issue
/// 40718, Istio 1.13; keycloak/keycloak issue 17299, Istio 1.17).
pub const ISSUER_NOT_CONFIGURED: &str = "Jwt issuer is not configured";
pub const VERIFICATION_FAILS: &str = "Jwt verification fails";
pub const EXPIRED: &str = "Jwt is expired";
pub const BAD_FORMAT: &str =
    "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections";

/// Whether an Envoy reply body is a JWT rejection (a 401 by RequestAuthentication).
pub fn is_rejection(status: u16, body: &str) -> bool {
    status == 401 && [ISSUER_NOT_CONFIGURED, VERIFICATION_FAILS, EXPIRED, BAD_FORMAT].contains(&body)
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
struct JwtRule {
    issuer: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
struct Spec {
    selector: Option<Selector>,
    target_ref: Option<TargetRef>,
    target_refs: Vec<TargetRef>,
    jwt_rules: Vec<JwtRule>,
}

/// A RequestAuthentication as the traffic model needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestAuthn {
    pub namespace: String,
    pub name: String,
    pub selector: Option<Selector>,
    pub target_refs: Vec<TargetRef>,
    /// `jwtRules[].issuer`.
    pub issuers: Vec<String>,
}

impl RequestAuthn {
    /// Reads a RequestAuthentication object (`None` when its spec does not parse).
    pub fn parse(o: &Value) -> Option<RequestAuthn> {
        let spec: Spec = serde_json::from_value(o.get("spec").cloned().unwrap_or(Value::Null)).ok()?;
        let meta = |k: &str| o["metadata"][k].as_str().unwrap_or("").to_string();
        Some(RequestAuthn {
            namespace: meta("namespace"),
            name: meta("name"),
            selector: spec.selector,
            target_refs: spec.target_ref.into_iter().chain(spec.target_refs).collect(),
            issuers: spec.jwt_rules.into_iter().map(|r| r.issuer).collect(),
        })
    }
}

impl Attached for RequestAuthn {
    fn namespace(&self) -> &str {
        &self.namespace
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn selector(&self) -> Option<&Selector> {
        self.selector.as_ref()
    }
    fn target_refs(&self) -> Vec<&TargetRef> {
        self.target_refs.iter().collect()
    }
}

/// What JWT validation made of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authn {
    /// No RequestAuthentication applies, or the request carries no token: no request principal.
    Anonymous,
    /// A valid token: request principal `<iss>/<sub>` and its claims.
    Principal {
        principal: String,
        claims: BTreeMap<String, Vec<String>>,
    },
    /// 401 with this body.
    Rejected(&'static str),
}

/// The bearer token of `Authorization: Bearer <token>` (lower-case header names).
fn bearer(headers: &[(String, String)]) -> Option<&str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
}

/// Validates the request's token against the RequestAuthentications that apply at this proxy, at Unix
/// time `now`. Without any, the proxy has no `jwt_authn` filter: the token is ignored.
pub fn authenticate(policies: &[&RequestAuthn], headers: &[(String, String)], now: i64) -> Authn {
    if policies.is_empty() {
        return Authn::Anonymous;
    }
    let Some(token) = bearer(headers) else {
        return Authn::Anonymous;
    };
    let parts: Vec<&str> = token.split('.').collect();
    let [_, payload, sig] = parts[..] else {
        return Authn::Rejected(BAD_FORMAT);
    };
    let Some(claims) = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.as_object().cloned())
    else {
        return Authn::Rejected(BAD_FORMAT);
    };
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    if !policies.iter().any(|p| p.issuers.iter().any(|i| i == iss)) {
        return Authn::Rejected(ISSUER_NOT_CONFIGURED);
    }
    if sig != VALID_SIGNATURE {
        return Authn::Rejected(VERIFICATION_FAILS);
    }
    if claims
        .get("exp")
        .and_then(Value::as_i64)
        .is_some_and(|exp| exp <= now)
    {
        return Authn::Rejected(EXPIRED);
    }
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
    let claims = claims
        .iter()
        .filter_map(|(k, v)| {
            let vals = match v {
                Value::String(s) => vec![s.clone()],
                Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
                _ => return None,
            };
            Some((k.clone(), vals))
        })
        .collect();
    Authn::Principal {
        principal: format!("{iss}/{sub}"),
        claims,
    }
}

/// A meshsim token for `iss`/`sub`, expiring at `exp` (Unix seconds), with signature part `sig`
/// ([`VALID_SIGNATURE`] for a token the issuer signed). For tests and `curl -H "Authorization: Bearer ..."`.
pub fn token(iss: &str, sub: &str, exp: Option<i64>, sig: &str) -> String {
    let mut payload = serde_json::json!({"iss": iss, "sub": sub});
    if let Some(e) = exp {
        payload["exp"] = e.into();
    }
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    format!("{header}.{}.{sig}", URL_SAFE_NO_PAD.encode(payload.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ra(issuers: &[&str]) -> RequestAuthn {
        RequestAuthn {
            namespace: "app".into(),
            name: "jwt".into(),
            selector: None,
            target_refs: Vec::new(),
            issuers: issuers.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn auth(t: &str) -> Vec<(String, String)> {
        vec![("authorization".into(), format!("Bearer {t}"))]
    }

    #[test]
    fn validation_classes() {
        let x = ra(&["https://x.example"]);
        let p = [&x];
        assert_eq!(authenticate(&p, &[], 100), Authn::Anonymous);
        let ok = token("https://x.example", "alice", Some(200), VALID_SIGNATURE);
        match authenticate(&p, &auth(&ok), 100) {
            Authn::Principal { principal, claims } => {
                assert_eq!(principal, "https://x.example/alice");
                assert_eq!(claims["sub"], vec!["alice".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        let y = token("https://y.example", "alice", None, VALID_SIGNATURE);
        assert_eq!(
            authenticate(&p, &auth(&y), 100),
            Authn::Rejected(ISSUER_NOT_CONFIGURED)
        );
        let forged = token("https://x.example", "alice", None, "forged");
        assert_eq!(
            authenticate(&p, &auth(&forged), 100),
            Authn::Rejected(VERIFICATION_FAILS)
        );
        let old = token("https://x.example", "alice", Some(50), VALID_SIGNATURE);
        assert_eq!(authenticate(&p, &auth(&old), 100), Authn::Rejected(EXPIRED));
        assert_eq!(
            authenticate(&p, &auth("garbage"), 100),
            Authn::Rejected(BAD_FORMAT)
        );
        // No RequestAuthentication at this proxy: no jwt_authn filter, the token is not looked at.
        assert_eq!(authenticate(&[], &auth(&forged), 100), Authn::Anonymous);
    }
}
