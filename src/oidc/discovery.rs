//! OpenID Provider metadata (Discovery 1.0 §3) and the JWKS. Only what works is
//! advertised.

use crate::app::App;
use crate::http::{Error, Req, Resp, json_response};
use crate::types::KNOWN_SCOPES;
use hyper::StatusCode;
use hyper::header::{CACHE_CONTROL, HeaderValue};
use serde_json::{Value, json};

pub fn metadata(app: &App) -> Value {
    json!({
        "issuer": app.config.issuer,
        "authorization_endpoint": app.url("/authorize"),
        "token_endpoint": app.url("/api/token"),
        "userinfo_endpoint": app.url("/api/userinfo"),
        "jwks_uri": app.url("/jwks.json"),
        "revocation_endpoint": app.url("/api/revoke"),
        "introspection_endpoint": app.url("/api/introspect"),
        "end_session_endpoint": app.url("/api/logout"),
        "scopes_supported": KNOWN_SCOPES,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "prompt_values_supported": ["none", "login", "consent"],
        "claims_supported": [
            "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "sid", "at_hash",
            "name", "preferred_username", "updated_at", "email", "email_verified"
        ],
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
    })
}

fn cacheable(mut resp: Resp, seconds: u32) -> Resp {
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={seconds}")) {
        resp.headers_mut().insert(CACHE_CONTROL, v);
    }
    resp
}

/// `GET /.well-known/openid-configuration`
pub async fn openid_configuration(app: &App, _req: &Req) -> Result<Resp, Error> {
    Ok(cacheable(
        json_response(StatusCode::OK, &metadata(app)),
        3600,
    ))
}

/// `GET /jwks.json`: short cache so a newly published key is seen well before it signs.
pub async fn jwks(app: &App, _req: &Req) -> Result<Resp, Error> {
    let body = app.keys.jwks(app.clock.now());
    Ok(cacheable(json_response(StatusCode::OK, &body), 300))
}
