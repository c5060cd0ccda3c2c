//! Logout: RP-Initiated Logout 1.0 at the end-session endpoint, the admin endpoint, and
//! the back-channel logout token (Back-Channel Logout 1.0 §2.4). Every way in ends in
//! [`App::logout_everywhere`].

use super::authorize::{CSRF_COOKIE, check_csrf, set_csrf_cookie};
use crate::app::App;
use crate::crypto::random_token;
use crate::http::cookies::{SESSION_COOKIE, clear_session_cookie};
use crate::http::pages::{self, LogoutConfirmPage, MessagePage};
use crate::http::{Error, Req, Resp, add_header, html_response, json_response, redirect};
use crate::keys::Alg;
use crate::store::{Client, IdTokenAlg};
use crate::types::{ClientId, RedirectUri, UserId};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

impl App {
    /// A logout token for one client: `typ: logout+jwt`, `events`, no `nonce`.
    pub fn mint_logout_token(
        &self,
        client: &Client,
        sub: &UserId,
        sid: Option<&str>,
        jti: &str,
    ) -> Result<String, Error> {
        let now = self.clock.now();
        let mut claims = json!({
            "iss": self.config.issuer,
            "aud": client.id,
            "iat": now,
            "exp": now + super::LOGOUT_TOKEN_TTL,
            "jti": jti,
            "sub": sub,
            "events": { BACKCHANNEL_EVENT: {} },
        });
        if let Some(sid) = sid {
            claims["sid"] = json!(sid);
        }
        let alg = match client.id_token_alg {
            IdTokenAlg::ES256 => Alg::ES256,
            IdTokenAlg::RS256 => Alg::RS256,
        };
        Ok(self.keys.sign(&claims, "logout+jwt", alg, now)?)
    }
}

/// What an `id_token_hint` says, once its signature is checked. Expired hints are fine
/// (RP-Initiated Logout 1.0 §2: the OP should accept them).
struct Hint {
    client_id: String,
    sub: String,
    sid: Option<String>,
}

fn read_hint(app: &App, token: &str) -> Result<Hint, Error> {
    let bad = || {
        Error::page(
            StatusCode::BAD_REQUEST,
            "Sign-out failed",
            "id_token_hint is not a valid ID token from this provider",
        )
    };
    let (typ, claims): (String, Value) =
        app.keys.verify(token, app.clock.now()).map_err(|_| bad())?;
    if typ != "JWT" || claims["iss"].as_str() != Some(app.config.issuer.as_str()) {
        return Err(bad());
    }
    let aud = match &claims["aud"] {
        Value::String(s) => s.clone(),
        Value::Array(a) if a.len() == 1 => a[0].as_str().unwrap_or_default().to_string(),
        _ => return Err(bad()),
    };
    Ok(Hint {
        client_id: aud,
        sub: claims["sub"].as_str().ok_or_else(bad)?.to_string(),
        sid: claims["sid"].as_str().map(str::to_string),
    })
}

/// `GET|POST /api/logout`: the end-session endpoint.
pub async fn end_session(app: &App, req: &Req) -> Result<Resp, Error> {
    let params = req
        .params()
        .map_err(|e| Error::page(StatusCode::BAD_REQUEST, "Sign-out failed", e.to_string()))?;
    let page_err = |m: &str| Error::page(StatusCode::BAD_REQUEST, "Sign-out failed", m.to_string());
    let hint = params
        .get("id_token_hint")
        .map(|t| read_hint(app, t))
        .transpose()?;
    let client_id = match (params.get("client_id"), &hint) {
        (Some(c), Some(h)) if c != h.client_id => {
            return Err(page_err("client_id does not match id_token_hint"));
        }
        (Some(c), _) => Some(c.to_string()),
        (None, Some(h)) => Some(h.client_id.clone()),
        (None, None) => None,
    };
    // §3: redirect only to a URI registered for the identified client; otherwise refuse
    // before doing anything.
    let post_logout = match params.get("post_logout_redirect_uri") {
        None => None,
        Some(uri) => {
            let client = match &client_id {
                Some(id) => app
                    .store
                    .client(&ClientId::parse(id).map_err(|e| page_err(&e))?)?,
                None => None,
            };
            let client = client.ok_or_else(|| {
                page_err("post_logout_redirect_uri needs a known client_id or id_token_hint")
            })?;
            let registered: Option<RedirectUri> = client
                .post_logout_redirect_uris
                .iter()
                .find(|u| u.as_str() == uri)
                .cloned();
            Some(registered.ok_or_else(|| {
                page_err("post_logout_redirect_uri is not registered for this client")
            })?)
        }
    };
    let state = params.get("state");
    let current = app.current_session(req.cookie(SESSION_COOKIE))?;
    let confirmed = req.method == Method::POST && params.get("confirm") == Some("yes");
    if confirmed {
        check_csrf(req, &params, req.cookie(CSRF_COOKIE).unwrap_or(""))?;
    }
    let tied = match (&current, &hint) {
        (Some(c), Some(h)) => match &h.sid {
            Some(sid) => *sid == c.session.sid,
            None => h.sub == c.session.user_id.as_str(),
        },
        _ => false,
    };
    // An RP's cross-site form POST carries no SameSite=Lax cookie, so `current` is
    // empty even though the browser is signed in. If the hint names a live session,
    // ask in mgpass's own context instead of redirecting as if the user were signed out.
    let hint_session_live = match hint.as_ref().and_then(|h| h.sid.as_deref()) {
        Some(sid) if current.is_none() && req.method == Method::POST && !confirmed => {
            app.store.sid_is_live(sid, app.clock.now())?
        }
        _ => false,
    };
    let mut logged_out = false;
    if let Some(c) = &current
        && (confirmed || tied)
    {
        app.logout_everywhere(&c.session.user_id).await?;
        logged_out = true;
    } else if current.is_some() || hint_session_live {
        // A request we cannot tie to this browser's session: ask first, so a stray
        // link cannot sign the user out.
        let csrf = req
            .cookie(CSRF_COOKIE)
            .map(str::to_string)
            .unwrap_or_else(random_token);
        let mut resp = html_response(
            StatusCode::OK,
            pages::render(&LogoutConfirmPage {
                csrf: &csrf,
                post_logout_redirect_uri: post_logout.as_ref().map(|u| u.as_str()),
                client_id: client_id.as_deref(),
                state,
            }),
        );
        set_csrf_cookie(&mut resp, req, &csrf)?;
        return Ok(resp);
    }
    let mut resp = match post_logout {
        // Without `state`, the registered URI exactly (`with_query(&[])` would add a
        // bare `?`).
        Some(uri) => match state {
            Some(s) => redirect(&uri.with_query(&[("state", s)]))?,
            None => redirect(uri.as_str())?,
        },
        None => html_response(
            StatusCode::OK,
            pages::render(&MessagePage {
                title: "Signed out",
                message: "You are signed out of mgpass and every application that uses it.",
                logout_csrf: None,
            }),
        ),
    };
    if logged_out || req.cookie(SESSION_COOKIE).is_some() {
        add_header(
            &mut resp,
            "set-cookie",
            &clear_session_cookie(app.config.session.cookie_domain.as_deref()),
        )?;
    }
    Ok(resp)
}

/// `POST /api/admin/users/{id}/logout`: support staff end a user's sessions.
pub async fn admin_logout_user(app: &App, req: &Req, user_id: &str) -> Result<Resp, Error> {
    super::guards::require_admin(app, req)?;
    let user_id = UserId(user_id.to_string());
    if app.store.user(&user_id)?.is_none() {
        return Err(Error::api(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such user",
        ));
    }
    let summary = app.logout_everywhere(&user_id).await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::to_value(summary).map_err(Error::internal)?,
    ))
}

/// `GET /account`: mgpass's own page, with the sign-out button.
pub async fn account_page(app: &App, req: &Req) -> Result<Resp, Error> {
    let current = app.current_session(req.cookie(SESSION_COOKIE))?;
    let user = match &current {
        Some(c) => app.store.user(&c.session.user_id)?,
        None => None,
    };
    let Some(user) = user else {
        return Ok(html_response(
            StatusCode::OK,
            pages::render(&MessagePage {
                title: "Not signed in",
                message: "You are not signed in to mgpass.",
                logout_csrf: None,
            }),
        ));
    };
    let csrf = req
        .cookie(CSRF_COOKIE)
        .map(str::to_string)
        .unwrap_or_else(random_token);
    let message = format!("You are signed in as {}.", user.username);
    let mut resp = html_response(
        StatusCode::OK,
        pages::render(&MessagePage {
            title: "Your mgpass account",
            message: &message,
            logout_csrf: Some(&csrf),
        }),
    );
    set_csrf_cookie(&mut resp, req, &csrf)?;
    Ok(resp)
}
