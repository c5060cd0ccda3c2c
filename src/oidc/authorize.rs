//! The authorization endpoint (RFC 6749 §4.1, OIDC Core §3.1.2) with its login and
//! consent pages.
//!
//! Until the client and redirect URI are validated, errors are HTML pages and nothing
//! redirects (RFC 6749 §4.1.2.1, RFC 9700 §4.1); after that, errors go back to the
//! redirect URI with `state` and `iss` (RFC 9207).

use super::{AuthRequest, Prompt};
use crate::app::App;
use crate::crypto::{constant_time_eq, random_token, sha256_hex};
use crate::http::cookies::{self, SESSION_COOKIE};
use crate::http::pages::{self, ConsentPage, LoginPage};
use crate::http::params::Params;
use crate::http::{Error, Req, Resp, add_header, html_response, redirect};
use crate::plugin::LoginDecision;
use crate::session::Current;
use crate::store::{AuthCode, User};
use crate::types::{ADMIN_ROLE, ADMIN_SCOPE, ClientId, RedirectUri, Scopes};
use hyper::StatusCode;

/// Browser-bound CSRF token for the login, consent and logout forms (double submit:
/// cookie and hidden field must match; the cookie is SameSite=Lax, so a cross-site POST
/// does not carry it).
pub const CSRF_COOKIE: &str = "mgpass_csrf";

/// An error to return to the client's redirect URI.
fn redirect_error(
    app: &App,
    uri: &RedirectUri,
    state: Option<&str>,
    code: &str,
    description: &str,
) -> Result<Resp, Error> {
    let issuer = app.config.issuer.clone();
    let mut params = vec![
        ("error", code),
        ("error_description", description),
        ("iss", issuer.as_str()),
    ];
    if let Some(s) = state {
        params.push(("state", s));
    }
    redirect(&uri.with_query(&params))
}

/// `GET|POST /authorize`
pub async fn authorize(app: &App, req: &Req) -> Result<Resp, Error> {
    let params = req.params().map_err(as_page)?;
    let request = match validate(app, &params)? {
        Ok(r) => r,
        Err((uri, state, code, description)) => {
            return redirect_error(app, &uri, state.as_deref(), code, &description);
        }
    };
    let csrf = browser_csrf(req);
    let request = AuthRequest {
        csrf: csrf.clone(),
        ..request
    };
    let session = app.current_session(req.cookie(SESSION_COOKIE))?;
    let remembered = session
        .as_ref()
        .filter(|c| c.session.remember)
        .map(|c| (c.digest.clone(), c.session.expires_at));
    let mut resp = proceed(app, request, session, false).await?;
    set_csrf_cookie(&mut resp, req, &csrf)?;
    // The SSO check slid a remembered session: slide the cookie's Max-Age with it, or the
    // browser would drop the cookie 30 days after the login while the session lives on.
    if let Some((digest, before)) = remembered
        && let Some(value) = req.cookie(SESSION_COOKIE)
        && app
            .store
            .live_session(&digest, app.clock.now())?
            .is_some_and(|s| s.expires_at > before)
    {
        add_header(
            &mut resp,
            "set-cookie",
            &cookies::session_cookie(
                value,
                app.config.session.cookie_domain.as_deref(),
                Some(app.config.session.lifetime.as_secs()),
            ),
        )?;
    }
    Ok(resp)
}

fn as_page(e: Error) -> Error {
    match e {
        Error::OAuth { description, .. } => {
            Error::page(StatusCode::BAD_REQUEST, "Invalid request", description)
        }
        other => other,
    }
}

type Redirectable = (RedirectUri, Option<String>, &'static str, String);

/// Validates the request. The outer error is an HTML page (client or redirect URI not
/// trusted); the inner one is returned to the redirect URI.
fn validate(app: &App, params: &Params) -> Result<Result<AuthRequest, Redirectable>, Error> {
    let bad = |m: &str| Error::page(StatusCode::BAD_REQUEST, "Invalid request", m.to_string());
    let client_id = params
        .get("client_id")
        .ok_or_else(|| bad("client_id is missing"))?;
    let client_id = ClientId::parse(client_id).map_err(|e| bad(&e))?;
    let client = app
        .store
        .client(&client_id)?
        .ok_or_else(|| bad("unknown client_id"))?;
    let redirect_uri = params
        .get("redirect_uri")
        .ok_or_else(|| bad("redirect_uri is missing"))?;
    // RFC 9700 §4.1.3: exact string comparison with a registered URI.
    let redirect_uri = client
        .redirect_uris
        .iter()
        .find(|u| u.as_str() == redirect_uri)
        .cloned()
        .ok_or_else(|| bad("redirect_uri is not registered for this client"))?;
    let state = params.get("state").map(str::to_string);
    let fail = |code: &'static str, d: &str| {
        Ok(Err((
            redirect_uri.clone(),
            state.clone(),
            code,
            d.to_string(),
        )))
    };

    let checked = match check_params(params) {
        Ok(c) => c,
        Err((code, description)) => return fail(code, &description),
    };
    Ok(Ok(AuthRequest {
        client,
        redirect_uri: redirect_uri.clone(),
        scope: checked.scope,
        state: state.clone(),
        nonce: params.get("nonce").map(str::to_string),
        code_challenge: checked.code_challenge,
        prompt: checked.prompt,
        max_age: checked.max_age,
        login_hint: params.get("login_hint").map(str::to_string),
        csrf: String::new(),
        expires_at: app.clock.now() + super::PENDING_TTL_SECS,
    }))
}

/// The parts of an authorization request checked without the store: everything after
/// the client and redirect URI. Public for the fuzz targets.
#[derive(Debug)]
pub struct CheckedParams {
    pub scope: Scopes,
    pub code_challenge: String,
    pub prompt: Prompt,
    pub max_age: Option<i64>,
}

/// Checks `params` past the client and redirect URI; an error is the OAuth error code and
/// description to send back to the redirect URI.
pub fn check_params(params: &Params) -> Result<CheckedParams, (&'static str, String)> {
    let fail = |code: &'static str, d: &str| Err((code, d.to_string()));
    if params.get("request").is_some() {
        return fail("request_not_supported", "request objects are not supported");
    }
    if params.get("request_uri").is_some() {
        return fail("request_uri_not_supported", "request_uri is not supported");
    }
    match params.get("response_type") {
        None => return fail("invalid_request", "response_type is missing"),
        Some("code") => {}
        Some(_) => {
            return fail(
                "unsupported_response_type",
                "only response_type=code is supported",
            );
        }
    }
    if let Some(mode) = params.get("response_mode")
        && mode != "query"
    {
        return fail("invalid_request", "only response_mode=query is supported");
    }
    let scope = match Scopes::parse(params.get("scope").unwrap_or("")) {
        Ok(s) if s.is_empty() => return fail("invalid_scope", "scope is missing"),
        Ok(s) => s,
        Err(e) => return fail("invalid_scope", &e),
    };
    // RFC 7636 §4.3 and RFC 9700 §2.1.1: PKCE with S256 for every client.
    let Some(challenge) = params.get("code_challenge") else {
        return fail("invalid_request", "code_challenge is required (PKCE)");
    };
    match params.get("code_challenge_method") {
        Some("S256") => {}
        Some("plain") | None => {
            return fail("invalid_request", "code_challenge_method must be S256");
        }
        Some(_) => return fail("invalid_request", "unsupported code_challenge_method"),
    }
    if challenge.len() != 43
        || !challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return fail(
            "invalid_request",
            "code_challenge must be a base64url SHA-256",
        );
    }
    let mut prompt = Prompt::default();
    for p in params.get("prompt").unwrap_or("").split(' ') {
        match p {
            "" => {}
            "none" => prompt.none = true,
            "login" => prompt.login = true,
            "consent" => prompt.consent = true,
            other => {
                return fail("invalid_request", &format!("unsupported prompt {other:?}"));
            }
        }
    }
    if prompt.none && (prompt.login || prompt.consent) {
        return fail(
            "invalid_request",
            "prompt=none cannot be combined with other values",
        );
    }
    let max_age = match params.get("max_age") {
        None => None,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n >= 0 => Some(n),
            _ => return fail("invalid_request", "max_age must be a non-negative integer"),
        },
    };
    for (name, limit) in [("state", 2048), ("nonce", 512), ("login_hint", 256)] {
        if params.get(name).is_some_and(|v| v.len() > limit) {
            return fail("invalid_request", &format!("{name} is too long"));
        }
    }
    Ok(CheckedParams {
        scope,
        code_challenge: challenge.to_string(),
        prompt,
        max_age,
    })
}

/// Moves a validated request on: login form, consent page, or a code.
/// `fresh_login` is set right after the user typed their password.
async fn proceed(
    app: &App,
    request: AuthRequest,
    session: Option<Current>,
    fresh_login: bool,
) -> Result<Resp, Error> {
    let now = app.clock.now();
    let usable = session.filter(|s| {
        fresh_login
            || (!request.prompt.login
                && request
                    .max_age
                    // OIDC Core §3.1.2.1: max_age=0 is prompt=login.
                    .is_none_or(|max| max > 0 && now - s.session.auth_time <= max))
    });
    let Some(current) = usable else {
        if request.prompt.none {
            return redirect_error(
                app,
                &request.redirect_uri,
                request.state.as_deref(),
                "login_required",
                "the user is not signed in",
            );
        }
        return Ok(login_page(app, request, None, StatusCode::OK));
    };
    let Some(user) = app.store.user(&current.session.user_id)? else {
        return Ok(login_page(app, request, None, StatusCode::OK));
    };
    // Plugins may refuse this user for this client; the reason is shown on the form.
    match app.plugins.authorize_login(&user, &request.client.id).await {
        Ok(LoginDecision::Allow) => {}
        Ok(LoginDecision::Deny(reason)) => {
            tracing::info!(user = %user.id, client = %request.client.id, "login denied by a plugin");
            return Ok(login_page(
                app,
                request,
                Some(&reason),
                StatusCode::FORBIDDEN,
            ));
        }
        Err(e) => {
            tracing::warn!(error = %e, "authorize-login plugin failed");
            return Ok(login_page(
                app,
                request,
                Some("Sign-in is unavailable right now. Try again in a moment."),
                StatusCode::SERVICE_UNAVAILABLE,
            ));
        }
    }
    let consented = app.store.consented(&user.id, &request.client.id)?;
    let needs_consent = !request.client.first_party
        && (request.prompt.consent || !request.scope.is_subset(&consented));
    if needs_consent {
        if request.prompt.none {
            return redirect_error(
                app,
                &request.redirect_uri,
                request.state.as_deref(),
                "consent_required",
                "the user has not consented to these scopes",
            );
        }
        return Ok(consent_page(app, request));
    }
    issue_code(app, &request, &current, &user).await
}

fn login_page(app: &App, request: AuthRequest, error: Option<&str>, status: StatusCode) -> Resp {
    let hint = request.login_hint.clone().unwrap_or_default();
    let client_name = request.client.name.clone();
    let csrf = request.csrf.clone();
    let id = app.pending.insert(request);
    html_response(
        status,
        pages::render(&LoginPage {
            client_name: &client_name,
            auth_request: &id,
            csrf: &csrf,
            login_hint: &hint,
            error,
        }),
    )
}

fn consent_page(app: &App, request: AuthRequest) -> Resp {
    let scopes = request
        .scope
        .iter()
        .filter_map(pages::describe_scope)
        .collect();
    let client_name = request.client.name.clone();
    let csrf = request.csrf.clone();
    let id = app.pending.insert(request);
    html_response(
        StatusCode::OK,
        pages::render(&ConsentPage {
            client_name: &client_name,
            auth_request: &id,
            csrf: &csrf,
            scopes,
        }),
    )
}

/// The scopes a user may actually be granted: `mgpass:admin` only with the role.
fn grantable(scope: &Scopes, user: &User) -> Scopes {
    let mut granted = scope.clone();
    if !user.roles.iter().any(|r| r == ADMIN_ROLE) {
        granted.remove(ADMIN_SCOPE);
    }
    granted
}

async fn issue_code(
    app: &App,
    request: &AuthRequest,
    current: &Current,
    user: &User,
) -> Result<Resp, Error> {
    let now = app.clock.now();
    let code = random_token();
    let scope = grantable(&request.scope, user);
    // Every SSO check slides the session (the guide's 30-day window); the slide and the
    // code are one transaction and one fsync.
    let issued = app.store.issue_code(
        &current.digest,
        now,
        app.session_expiry(),
        &request.client.id,
        &sha256_hex(code.as_bytes()),
        |session| AuthCode {
            client_id: request.client.id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            code_challenge: request.code_challenge.clone(),
            nonce: request.nonce.clone(),
            scope: scope.clone(),
            user_id: user.id.clone(),
            sid: session.sid.clone(),
            auth_time: session.auth_time,
            expires_at: now + app.config.tokens.code_ttl.as_secs() as i64,
            redeemed: None,
        },
    )?;
    if issued.is_none() {
        return Ok(login_page(app, request.clone(), None, StatusCode::OK));
    }
    app.store.flush().await?;
    let issuer = app.config.issuer.clone();
    let mut params = vec![("code", code.as_str()), ("iss", issuer.as_str())];
    if let Some(s) = &request.state {
        params.push(("state", s));
    }
    redirect(&request.redirect_uri.with_query(&params))
}

/// The browser's CSRF token: the existing cookie, or a new one.
fn browser_csrf(req: &Req) -> String {
    req.cookie(CSRF_COOKIE)
        .filter(|v| v.len() == 43)
        .map(str::to_string)
        .unwrap_or_else(random_token)
}

pub fn set_csrf_cookie(resp: &mut Resp, req: &Req, csrf: &str) -> Result<(), Error> {
    if req.cookie(CSRF_COOKIE) != Some(csrf) {
        add_header(
            resp,
            "set-cookie",
            &format!("{CSRF_COOKIE}={csrf}; Path=/; Secure; HttpOnly; SameSite=Lax"),
        )?;
    }
    Ok(())
}

/// Checks a form's CSRF field against the browser's cookie and the expected token.
pub fn check_csrf(req: &Req, form: &Params, expected: &str) -> Result<(), Error> {
    let field = form.get("csrf").unwrap_or("");
    let cookie = req.cookie(CSRF_COOKIE).unwrap_or("");
    if field.is_empty()
        || !constant_time_eq(field.as_bytes(), cookie.as_bytes())
        || !constant_time_eq(field.as_bytes(), expected.as_bytes())
    {
        return Err(Error::page(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This form has expired or was not sent from mgpass. Go back to the application and try again.",
        ));
    }
    Ok(())
}

fn pending(app: &App, form: &Params) -> Result<(String, AuthRequest), Error> {
    let id = form.get("auth_request").unwrap_or("");
    let request = app.pending.get(id).ok_or_else(|| {
        Error::page(
            StatusCode::BAD_REQUEST,
            "Sign-in expired",
            "This sign-in request has expired. Go back to the application and try again.",
        )
    })?;
    Ok((id.to_string(), (*request).clone()))
}

/// `POST /login`: the login form.
pub async fn login(app: &App, req: &Req) -> Result<Resp, Error> {
    let form = req.form_params().map_err(as_page)?;
    let (id, request) = pending(app, &form)?;
    check_csrf(req, &form, &request.csrf)?;
    let login = form.get("username").unwrap_or("").trim();
    let password = form.get("password").unwrap_or("");
    let ip = crate::http::client_ip(app, req);
    if let Some(wait) = app.throttle.check(login, ip) {
        app.metrics.inc(&app.metrics.logins_throttled);
        let message = format!("Too many attempts. Try again in {wait} seconds.");
        app.pending.remove(&id);
        return Ok(login_page(
            app,
            request,
            Some(&message),
            StatusCode::TOO_MANY_REQUESTS,
        ));
    }
    let user = if login.is_empty() {
        None
    } else {
        app.store.user_by_login(login)?
    };
    // Verified on a blocking thread: Argon2 takes tens of milliseconds by design.
    let digest = user.as_ref().map(|u| u.password_hash.clone());
    let password = password.to_string();
    let passwords = app.passwords.clone();
    let ok = tokio::task::spawn_blocking(move || passwords.verify(&password, digest.as_deref()))
        .await
        .map_err(Error::internal)?;
    app.pending.remove(&id);
    let user = match (ok, user) {
        (true, Some(user)) => user,
        _ => {
            app.throttle.failed(login, ip);
            app.metrics.inc(&app.metrics.logins_failed);
            tracing::info!(ip = %ip, "login failed");
            return Ok(login_page(
                app,
                request,
                Some("Incorrect username or password."),
                StatusCode::OK,
            ));
        }
    };
    app.throttle.succeeded(login, ip);
    app.metrics.inc(&app.metrics.logins_ok);
    let remember = form.get("remember").is_some();
    let (cookie, session) = app.start_session(&user, remember).await?;
    let current = Current {
        digest: sha256_hex(cookie.as_bytes()),
        session,
    };
    let mut resp = proceed(app, request, Some(current), true).await?;
    let max_age = remember.then_some(app.config.session.lifetime.as_secs());
    add_header(
        &mut resp,
        "set-cookie",
        &cookies::session_cookie(
            &cookie,
            app.config.session.cookie_domain.as_deref(),
            max_age,
        ),
    )?;
    Ok(resp)
}

/// `POST /consent`: the consent page's answer.
pub async fn consent(app: &App, req: &Req) -> Result<Resp, Error> {
    let form = req.form_params().map_err(as_page)?;
    let (id, request) = pending(app, &form)?;
    check_csrf(req, &form, &request.csrf)?;
    app.pending.remove(&id);
    let Some(current) = app.current_session(req.cookie(SESSION_COOKIE))? else {
        return Ok(login_page(app, request, None, StatusCode::OK));
    };
    if form.get("decision") != Some("allow") {
        return redirect_error(
            app,
            &request.redirect_uri,
            request.state.as_deref(),
            "access_denied",
            "the user denied access",
        );
    }
    let Some(user) = app.store.user(&current.session.user_id)? else {
        return Ok(login_page(app, request, None, StatusCode::OK));
    };
    app.store
        .grant_consent(&user.id, &request.client.id, &request.scope)?;
    issue_code(app, &request, &current, &user).await
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::types::KNOWN_SCOPES;
    use proptest::prelude::*;

    const CODES: &[&str] = &[
        "invalid_request",
        "invalid_scope",
        "unsupported_response_type",
        "request_not_supported",
        "request_uri_not_supported",
    ];

    fn known_or_junk() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(vec![
                "code", "S256", "plain", "none", "login", "consent", "query", "0", "-1", "openid",
            ])
            .prop_map(str::to_string),
            "\\PC{0,50}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any parameters: the check ends with an accepted request that satisfies every
        /// rule, or with one of the OAuth error codes.
        #[test]
        fn accepted_requests_satisfy_the_rules(
            pairs in proptest::collection::vec((
                proptest::sample::select(vec![
                    "response_type", "scope", "code_challenge", "code_challenge_method",
                    "prompt", "max_age", "state", "nonce", "login_hint", "response_mode",
                    "request", "request_uri",
                ]),
                known_or_junk(),
            ), 0..12)
        ) {
            let query = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
                .finish();
            let Ok(params) = Params::parse(query.as_bytes()) else { return Ok(()) };
            match check_params(&params) {
                Ok(c) => {
                    prop_assert_eq!(params.get("response_type"), Some("code"));
                    prop_assert_eq!(params.get("code_challenge_method"), Some("S256"));
                    prop_assert!(!c.scope.is_empty());
                    prop_assert!(c.scope.iter().all(|s| KNOWN_SCOPES.contains(&s)));
                    prop_assert_eq!(c.code_challenge.len(), 43);
                    prop_assert!(c.max_age.is_none_or(|m| m >= 0));
                    prop_assert!(!(c.prompt.none && (c.prompt.login || c.prompt.consent)));
                }
                Err((code, _)) => prop_assert!(CODES.contains(&code), "{code}"),
            }
        }

        /// A well-formed request is accepted, whatever its scope order and max_age.
        #[test]
        fn well_formed_requests_pass(
            scopes in proptest::sample::subsequence(KNOWN_SCOPES.to_vec(), 1..=KNOWN_SCOPES.len()),
            challenge in "[A-Za-z0-9_-]{43}",
            max_age in proptest::option::of(0i64..i64::MAX),
            prompt in proptest::sample::select(vec!["", "none", "login", "consent", "login consent"]),
        ) {
            let mut pairs = vec![
                ("response_type", "code".to_string()),
                ("scope", scopes.join(" ")),
                ("code_challenge", challenge.clone()),
                ("code_challenge_method", "S256".to_string()),
                ("prompt", prompt.to_string()),
            ];
            if let Some(m) = max_age {
                pairs.push(("max_age", m.to_string()));
            }
            let query = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
                .finish();
            let c = check_params(&Params::parse(query.as_bytes()).unwrap()).unwrap();
            prop_assert_eq!(c.code_challenge, challenge);
            prop_assert_eq!(c.max_age, max_age);
            prop_assert_eq!(c.scope.iter().count(), scopes.len());
        }
    }
}
