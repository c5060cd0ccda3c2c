//! Routing: a `match` on method and path.

use super::{Error, Req, Resp};
use crate::app::App;
use crate::oidc::{authorize, discovery, introspect, logout, token, userinfo};
use hyper::Method;

pub async fn route(app: &App, req: &Req) -> Result<Resp, Error> {
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
            Err(allowed(path).map_or(Error::NotFound, Error::MethodNotAllowed))
        }
    }
}

/// The methods a known path takes, for `405` with `Allow`.
fn allowed(path: &str) -> Option<&'static str> {
    match path {
        "/.well-known/openid-configuration" | "/jwks.json" | "/account"
        | "/api/account/profile" | "/api/admin/whoami" => Some("GET, HEAD"),
        "/authorize" | "/api/userinfo" | "/api/logout" => Some("GET, POST"),
        "/login" | "/consent" | "/api/token" | "/api/revoke" | "/api/introspect" => Some("POST"),
        _ => None,
    }
}
