//! Requests to routes that plugins mount: the host authenticates the principal the route
//! declares with the shared guards, then hands the plugin the principal (never a
//! credential) and the request.

use super::{Error, Req, Resp};
use crate::app::App;
use crate::oidc::guards::{UserPrincipal, require_admin, require_user};
use crate::plugin::{Principal, PrincipalKind, Request, RouteMatch};
use bytes::Bytes;
use http_body_util::Full;
use hyper::StatusCode;
use hyper::header::{CONTENT_TYPE, HeaderValue};

/// Response headers a plugin may not set: the host owns framing, cookies and auth.
const RESERVED_HEADERS: &[&str] = &[
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "set-cookie",
    "www-authenticate",
    "ratelimit",
    "ratelimit-policy",
];

fn user_principal(kind: PrincipalKind, p: UserPrincipal) -> Principal {
    Principal {
        kind,
        subject: p.user_id.to_string(),
        scopes: p.claims.scope.iter().map(str::to_string).collect(),
        partner_id: None,
    }
}

fn principal(app: &App, req: &Req, kind: PrincipalKind) -> Result<Principal, Error> {
    Ok(match kind {
        PrincipalKind::Partner => {
            let partner = crate::partner::require_partner(app, req)?;
            Principal {
                kind,
                subject: partner.id.clone(),
                scopes: Vec::new(),
                partner_id: Some(partner.id),
            }
        }
        PrincipalKind::User => user_principal(kind, require_user(app, req)?),
        PrincipalKind::Admin => user_principal(kind, require_admin(app, req)?),
        PrincipalKind::Public => Principal {
            kind,
            subject: String::new(),
            scopes: Vec::new(),
            partner_id: None,
        },
    })
}

/// Headers a plugin never sees: credentials are the host's business.
const WITHHELD_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "x-api-key",
    "proxy-authorization",
];

fn plugin_headers(req: &Req) -> Vec<(String, String)> {
    req.headers
        .iter()
        .filter(|(name, _)| !WITHHELD_HEADERS.contains(&name.as_str()))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
        })
        .collect()
}

pub async fn call(app: &App, req: &Req, route: &RouteMatch) -> Result<Resp, Error> {
    let principal = principal(app, req, route.principal)?;
    let query = url::form_urlencoded::parse(req.query.as_deref().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let request = Request {
        method: req.method.as_str().to_string(),
        path: req.path.clone(),
        path_params: Vec::new(),
        query,
        headers: plugin_headers(req),
        body: req.body.to_vec(),
    };
    let answer = app
        .plugins
        .handle_request(route, principal, request)
        .await?;
    app.outbox_wake.notify_one();
    let status = StatusCode::from_u16(answer.status)
        .ok()
        .filter(|s| !s.is_informational())
        .ok_or_else(|| {
            Error::from(crate::plugin::PluginError::Engine(format!(
                "plugin {} answered with status {}",
                route.plugin, answer.status
            )))
        })?;
    let mut resp = hyper::Response::new(Full::new(Bytes::from(answer.body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in &answer.headers {
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(lower.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            resp.headers_mut().append(name, value);
        }
    }
    Ok(resp)
}
