//! The shared bearer-token guards (RFC 6750): one for user APIs, one for admin APIs.

use super::tokens::AccessClaims;
use crate::app::App;
use crate::http::params::Params;
use crate::http::{Error, Req};
use crate::types::{ADMIN_ROLE, ADMIN_SCOPE, UserId};
use hyper::StatusCode;

/// The bearer token of a request: the `Authorization` header (RFC 6750 §2.1), or the
/// form body's `access_token` (§2.2) when `form` is given. Never the query string.
pub fn bearer_token<'a>(req: &'a Req, form: Option<&'a Params>) -> Result<&'a str, Error> {
    let header = req.header("authorization").and_then(|h| {
        let (scheme, token) = h.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    let body = form.and_then(|f| f.get("access_token"));
    match (header, body) {
        (Some(_), Some(_)) => Err(Error::Bearer {
            status: StatusCode::BAD_REQUEST,
            code: Some("invalid_request"),
            description: "send the token in one place only".into(),
            scope: None,
        }),
        (Some(t), None) | (None, Some(t)) if !t.is_empty() => Ok(t),
        _ => Err(Error::Bearer {
            status: StatusCode::UNAUTHORIZED,
            code: None,
            description: "a bearer token is required".into(),
            scope: None,
        }),
    }
}

/// A user's verified access token.
pub struct UserPrincipal {
    pub user_id: UserId,
    pub claims: AccessClaims,
}

/// Guard for `/api/account/*`: a live user access token.
pub fn require_user(app: &App, req: &Req) -> Result<UserPrincipal, Error> {
    let token = bearer_token(req, None)?;
    user_from_token(app, token)
}

pub fn user_from_token(app: &App, token: &str) -> Result<UserPrincipal, Error> {
    let claims = app
        .verify_access_token(token)
        .map_err(Error::invalid_token)?;
    // Only session-bound tokens belong to a user; client-credential tokens do not.
    if claims.sid.is_none() {
        return Err(Error::invalid_token("the token does not belong to a user"));
    }
    let user_id = UserId(claims.sub.clone());
    if app.store.user(&user_id)?.is_none() {
        return Err(Error::invalid_token("the user no longer exists"));
    }
    Ok(UserPrincipal { user_id, claims })
}

/// Guard for `/api/admin/*` and other admin APIs: a live user token carrying the
/// `mgpass:admin` scope, held by a user who still has the role.
pub fn require_admin(app: &App, req: &Req) -> Result<UserPrincipal, Error> {
    let principal = require_user(app, req)?;
    let still_admin = app
        .store
        .user(&principal.user_id)?
        .is_some_and(|u| u.roles.iter().any(|r| r == ADMIN_ROLE));
    if !principal.claims.scope.contains(ADMIN_SCOPE) || !still_admin {
        return Err(Error::Bearer {
            status: StatusCode::FORBIDDEN,
            code: Some("insufficient_scope"),
            description: "this endpoint requires the mgpass:admin scope".into(),
            scope: Some(ADMIN_SCOPE),
        });
    }
    Ok(principal)
}
