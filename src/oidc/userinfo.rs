//! The UserInfo endpoint (OIDC Core §5.3) and the account profile API.

use super::guards::{bearer_token, require_user, user_from_token};
use crate::app::App;
use crate::http::{Error, Req, Resp, json_response};
use crate::store::User;
use crate::types::Scopes;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

/// Claims by scope (OIDC Core §5.4).
pub fn claims_for(user: &User, scope: &Scopes) -> Value {
    let mut claims = json!({ "sub": user.id });
    if scope.contains("profile") {
        claims["preferred_username"] = json!(user.username);
        claims["name"] = json!(user.name);
        claims["updated_at"] = json!(user.updated_at);
    }
    if scope.contains("email") && user.email.is_some() {
        claims["email"] = json!(user.email);
        // Addresses are entered by operators, who vouch for them.
        claims["email_verified"] = json!(true);
    }
    claims
}

/// `GET|POST /api/userinfo`
pub async fn userinfo(app: &App, req: &Req) -> Result<Resp, Error> {
    let form = if req.method == Method::POST {
        Some(req.form_params()?)
    } else {
        None
    };
    let token = bearer_token(req, form.as_ref())?;
    let principal = user_from_token(app, token)?;
    if !principal.claims.scope.contains("openid") {
        return Err(Error::Bearer {
            status: StatusCode::FORBIDDEN,
            code: Some("insufficient_scope"),
            description: "userinfo requires the openid scope".into(),
            scope: Some("openid"),
        });
    }
    let user = app
        .store
        .user(&principal.user_id)?
        .ok_or_else(|| Error::invalid_token("the user no longer exists"))?;
    let mut resp = json_response(StatusCode::OK, &claims_for(&user, &principal.claims.scope));
    resp.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

/// `GET /api/account/profile`: the signed-in user's own record.
pub async fn account_profile(app: &App, req: &Req) -> Result<Resp, Error> {
    let principal = require_user(app, req)?;
    let user = app
        .store
        .user(&principal.user_id)?
        .ok_or_else(|| Error::invalid_token("the user no longer exists"))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "id": user.id,
            "username": user.username,
            "email": user.email,
            "name": user.name,
            "roles": user.roles,
        }),
    ))
}

/// `GET /api/admin/whoami`: who the admin guard let in.
pub async fn admin_whoami(app: &App, req: &Req) -> Result<Resp, Error> {
    let principal = super::guards::require_admin(app, req)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "sub": principal.user_id,
            "scopes": principal.claims.scope.iter().collect::<Vec<_>>(),
            "client_id": principal.claims.client_id,
        }),
    ))
}
