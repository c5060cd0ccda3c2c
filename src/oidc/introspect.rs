//! Token introspection (RFC 7662) and revocation (RFC 7009).

use super::authenticate_client;
use crate::app::App;
use crate::crypto::sha256_hex;
use crate::http::error::no_store;
use crate::http::{Error, Req, Resp, json_response};
use crate::store::RefreshState;
use hyper::StatusCode;
use serde_json::{Value, json};

/// Access tokens are JWTs (three dot-separated parts); refresh tokens are opaque.
fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

fn introspect_refresh(app: &App, token: &str) -> Result<Value, Error> {
    let now = app.clock.now();
    let Some((record, family)) = app.store.refresh_family(&sha256_hex(token.as_bytes()))? else {
        return Ok(json!({"active": false}));
    };
    let active = !family.revoked
        && record.state == RefreshState::Active
        && record.expires_at > now
        && app.store.sid_is_live(&family.sid, now)?;
    if !active {
        return Ok(json!({"active": false}));
    }
    Ok(json!({
        "active": true,
        "token_type": "refresh_token",
        "scope": family.scope.to_string(),
        "client_id": family.client_id,
        "sub": family.user_id,
        "exp": record.expires_at,
        "iss": app.config.issuer,
    }))
}

fn introspect_access(app: &App, token: &str) -> Value {
    match app.verify_access_token(token) {
        Ok(c) => {
            let mut body = json!({
                "active": true,
                "token_type": "Bearer",
                "scope": c.scope.to_string(),
                "client_id": c.client_id,
                "sub": c.sub,
                "exp": c.exp,
                "iat": c.iat,
                "iss": app.config.issuer,
                "aud": c.raw["aud"],
                "jti": c.jti,
            });
            if let Some(sid) = c.sid {
                body["sid"] = json!(sid);
            }
            body
        }
        Err(_) => json!({"active": false}),
    }
}

/// `POST /api/introspect`: for confidential clients (resource servers).
pub async fn introspect(app: &App, req: &Req) -> Result<Resp, Error> {
    let params = req.form_params()?;
    let client = authenticate_client(app, req, &params)?.client;
    if client.is_public() {
        return Err(Error::invalid_client(false));
    }
    let token = params
        .get("token")
        .ok_or_else(|| Error::invalid_request("token is missing"))?;
    let body = if looks_like_jwt(token) {
        introspect_access(app, token)
    } else {
        introspect_refresh(app, token)?
    };
    Ok(no_store(json_response(StatusCode::OK, &body)))
}

/// `POST /api/revoke`: revoking a refresh token revokes its family; revoking an access
/// token revokes it until it would have expired. Unknown tokens answer 200 (§2.2).
pub async fn revoke(app: &App, req: &Req) -> Result<Resp, Error> {
    let params = req.form_params()?;
    let client = authenticate_client(app, req, &params)?.client;
    let token = params
        .get("token")
        .ok_or_else(|| Error::invalid_request("token is missing"))?;
    let not_yours = || {
        Error::oauth(
            "unauthorized_client",
            "the token was issued to another client",
        )
    };
    if looks_like_jwt(token) {
        if let Ok(claims) = app.verify_access_token(token) {
            if claims.client_id != client.id.as_str() {
                return Err(not_yours());
            }
            app.store.revoke_access_token(&claims.jti, claims.exp)?;
        }
    } else {
        let digest = sha256_hex(token.as_bytes());
        if let Some((_, family)) = app.store.refresh_family(&digest)? {
            if family.client_id != client.id {
                return Err(not_yours());
            }
            app.store.revoke_refresh(&digest)?;
        }
    }
    app.store.flush().await?;
    Ok(no_store(json_response(StatusCode::OK, &json!({}))))
}
