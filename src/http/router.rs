//! Routing: a `match` on method and path.

use super::{Error, Req, Resp, add_header};
use crate::app::App;
use crate::oidc::{authorize, discovery, introspect, logout, token, userinfo};
use crate::partner::ratelimit::Bucket;
use hyper::Method;
use hyper::StatusCode;

/// Applies the per-IP rate limit to `/api/*`, then dispatches. A limited request does
/// nothing; every `/api/*` answer carries the `RateLimit` headers.
pub async fn route(app: &App, req: &Req) -> Result<Resp, Error> {
    let Some(rest) = req.path.strip_prefix("/api/") else {
        return dispatch(app, req).await;
    };
    let bucket = if rest.starts_with("partner/") {
        Bucket::Partner
    } else {
        Bucket::Api
    };
    let decision = app.rate_limits.check(bucket, super::client_ip(app, req));
    let mut resp = if decision.allowed {
        dispatch(app, req)
            .await
            .unwrap_or_else(Error::into_response)
    } else {
        app.metrics.inc(&app.metrics.rate_limited);
        let mut resp = Error::api(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many requests; retry in {} seconds",
                decision.reset_secs
            ),
        )
        .into_response();
        add_header(&mut resp, "retry-after", &decision.reset_secs.to_string())?;
        resp
    };
    add_header(
        &mut resp,
        "ratelimit-policy",
        &format!("\"{}\";q={};w=60", bucket.name(), decision.limit),
    )?;
    add_header(
        &mut resp,
        "ratelimit",
        &format!(
            "\"{}\";r={};t={}",
            bucket.name(),
            decision.remaining,
            decision.reset_secs
        ),
    )?;
    Ok(resp)
}

async fn dispatch(app: &App, req: &Req) -> Result<Resp, Error> {
    if let Some(handled) = crate::partner::api::route(app, req).await {
        return handled;
    }
    let m = &req.method;
    let get = m == Method::GET || m == Method::HEAD;
    let post = m == Method::POST;
    match req.path.as_str() {
        "/.well-known/openid-configuration" if get => {
            discovery::openid_configuration(app, req).await
        }
        "/jwks.json" if get => discovery::jwks(app, req).await,
        "/authorize" if get || post => authorize::authorize(app, req).await,
        "/login" if post => authorize::login(app, req).await,
        "/consent" if post => authorize::consent(app, req).await,
        "/account" if get => logout::account_page(app, req).await,
        "/api/token" if post => token::token(app, req).await,
        "/api/userinfo" if get || post => userinfo::userinfo(app, req).await,
        "/api/revoke" if post => introspect::revoke(app, req).await,
        "/api/introspect" if post => introspect::introspect(app, req).await,
        "/api/logout" if get || post => logout::end_session(app, req).await,
        "/api/account/profile" if get => userinfo::account_profile(app, req).await,
        "/api/admin/whoami" if get => userinfo::admin_whoami(app, req).await,
        "/api/partner/events" if post => crate::partner::events::post_event(app, req).await,
        path => {
            if let Some(id) = path
                .strip_prefix("/api/admin/users/")
                .and_then(|rest| rest.strip_suffix("/logout"))
                .filter(|id| !id.is_empty() && !id.contains('/'))
            {
                return if post {
                    logout::admin_logout_user(app, req, id).await
                } else {
                    Err(Error::MethodNotAllowed("POST"))
                };
            }
            if let Some(route) = app.plugins.find_route(m.as_str(), path) {
                return super::plugin_route::call(app, req, &route).await;
            }
            Err(allowed(path).map_or(Error::NotFound, Error::MethodNotAllowed))
        }
    }
}

/// The methods a known path takes, for `405` with `Allow`.
fn allowed(path: &str) -> Option<&'static str> {
    match path {
        "/.well-known/openid-configuration"
        | "/jwks.json"
        | "/account"
        | "/api/account/profile"
        | "/api/admin/whoami" => Some("GET, HEAD"),
        "/authorize" | "/api/userinfo" | "/api/logout" => Some("GET, POST"),
        "/login"
        | "/consent"
        | "/api/token"
        | "/api/revoke"
        | "/api/introspect"
        | "/api/partner/events" => Some("POST"),
        _ => None,
    }
}

/// A bounded label for metrics: the route a path belongs to.
pub fn route_label(path: &str) -> &'static str {
    match path {
        "/.well-known/openid-configuration" => "discovery",
        "/jwks.json" => "jwks",
        "/authorize" => "authorize",
        "/login" => "login",
        "/consent" => "consent",
        "/account" => "account_page",
        "/api/token" => "token",
        "/api/userinfo" => "userinfo",
        "/api/revoke" => "revoke",
        "/api/introspect" => "introspect",
        "/api/logout" => "logout",
        "/api/partner/events" => "partner_events",
        p if p.starts_with("/api/admin/") => "admin",
        p if p.starts_with("/api/account/") => "account_api",
        p if p.starts_with("/api/rewards/") => "rewards_api",
        p if p.starts_with("/api/") => "api_other",
        _ => "other",
    }
}
