//! The scenarios: what one iteration sends, and the per-worker state it needs (a
//! session cookie, a refresh chain, an access token), obtained the way a browser and a
//! relying app obtain them.

use crate::crypto::{b64url, random_token, sha256};
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Discovery,
    Jwks,
    LoginCode,
    SsoCode,
    Refresh,
    Userinfo,
    Introspect,
    PartnerEvents,
    AccountRewards,
}

impl Scenario {
    pub const ALL: [Scenario; 9] = [
        Scenario::Discovery,
        Scenario::Jwks,
        Scenario::LoginCode,
        Scenario::SsoCode,
        Scenario::Refresh,
        Scenario::Userinfo,
        Scenario::Introspect,
        Scenario::PartnerEvents,
        Scenario::AccountRewards,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Discovery => "discovery",
            Scenario::Jwks => "jwks",
            Scenario::LoginCode => "login-code",
            Scenario::SsoCode => "sso-code",
            Scenario::Refresh => "refresh",
            Scenario::Userinfo => "userinfo",
            Scenario::Introspect => "introspect",
            Scenario::PartnerEvents => "partner-events",
            Scenario::AccountRewards => "account-rewards",
        }
    }

    /// Parses `--scenario` values (each may itself be comma-separated), or `all`.
    pub fn parse_list(values: &[String]) -> Result<Vec<Scenario>, String> {
        let mut out = Vec::new();
        for name in values.iter().flat_map(|v| v.split(',')).map(str::trim) {
            if name.is_empty() {
                continue;
            }
            if name == "all" {
                out.extend(Scenario::ALL);
                continue;
            }
            let s = Scenario::ALL
                .into_iter()
                .find(|s| s.name() == name)
                .ok_or_else(|| {
                    let known: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                    format!(
                        "unknown scenario {name:?}; known: {}, all",
                        known.join(", ")
                    )
                })?;
            out.push(s);
        }
        let mut seen = Vec::new();
        out.retain(|s| {
            let first = !seen.contains(s);
            seen.push(*s);
            first
        });
        if out.is_empty() {
            return Err("name at least one --scenario (or all)".into());
        }
        Ok(out)
    }

    /// Whether the scenario needs the bench users (everything but the public documents).
    pub fn needs_users(self) -> bool {
        !matches!(self, Scenario::Discovery | Scenario::Jwks)
    }

    /// HTTP requests in one iteration.
    pub fn http_requests(self) -> u32 {
        match self {
            Scenario::LoginCode => 3,
            Scenario::SsoCode => 2,
            _ => 1,
        }
    }
}

/// Why an iteration failed: a short kind to count by and a detail to show once.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: String,
    pub detail: String,
    /// The worker's credentials are no longer usable (prepare again).
    pub stale: bool,
}

impl Failure {
    pub fn new(kind: impl Into<String>, detail: impl Into<String>) -> Failure {
        Failure {
            kind: kind.into(),
            detail: detail.into(),
            stale: false,
        }
    }

    fn stale(mut self) -> Failure {
        self.stale = true;
        self
    }

    fn transport(step: &str, e: &reqwest::Error) -> Failure {
        let what = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connect error"
        } else {
            "transport error"
        };
        // The full source chain says why (refused, TLS, reset…).
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            detail.push_str(": ");
            detail.push_str(&s.to_string());
            source = s.source();
        }
        Failure::new(format!("{what} ({step})"), detail)
    }
}

/// The server under test: where to connect and how to trust it.
pub struct Target {
    /// The base URL without a trailing slash.
    pub base: String,
    host: String,
    addr: SocketAddr,
    tls: rustls::ClientConfig,
    http1: bool,
    /// `true`: one reused client per worker; `false`: a new connection per request.
    pub keep_alive: bool,
}

impl Target {
    pub fn new(
        base: String,
        host: String,
        addr: SocketAddr,
        tls: rustls::ClientConfig,
        http1: bool,
        keep_alive: bool,
    ) -> Target {
        Target {
            base,
            host,
            addr,
            tls,
            http1,
            keep_alive,
        }
    }

    /// A client that trusts the server, never follows redirects and connects straight
    /// to the resolved address (no DNS in the measurement).
    pub fn client(&self) -> Result<reqwest::Client, String> {
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(self.tls.clone())
            .redirect(reqwest::redirect::Policy::none())
            .resolve(&self.host, self.addr)
            .tcp_nodelay(true)
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(30));
        if self.http1 {
            builder = builder.http1_only();
        }
        builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// One bench user (one per worker).
#[derive(Debug, Clone)]
pub struct BenchUser {
    pub id: String,
    pub username: String,
    pub password: String,
}

/// What the setup created on the server, shared by all workers.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub run_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    pub users: Vec<BenchUser>,
    /// The partner's API key, or why there is none.
    pub partner_key: Result<String, String>,
    pub partner_id: Option<String>,
}

pub const SCOPE: &str = "openid profile email offline_access";

/// A worker: one simulated client, sequential iterations.
pub struct Worker {
    pub index: usize,
    target: Arc<Target>,
    fixture: Arc<Fixture>,
    /// Reused in keep-alive mode and for preparation in both modes.
    client: reqwest::Client,
    session: Option<String>,
    access_token: Option<String>,
    refresh_token: Option<String>,
    sequence: u64,
}

struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: bytes::Bytes,
}

/// The value of a hidden form field in a page.
pub fn hidden_field(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_string())
}

/// The value of cookie `name` among the `Set-Cookie` headers.
fn set_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(SET_COOKIE).iter().find_map(|v| {
        let v = v.to_str().ok()?;
        let pair = v.split(';').next()?.trim();
        let (k, value) = pair.split_once('=')?;
        (k == name && !value.is_empty()).then(|| value.to_string())
    })
}

fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

fn pkce() -> (String, String) {
    let verifier = random_token();
    let challenge = b64url(&sha256(verifier.as_bytes()));
    (verifier, challenge)
}

struct Tokens {
    access: String,
    refresh: Option<String>,
}

impl Worker {
    pub fn new(index: usize, target: Arc<Target>, fixture: Arc<Fixture>) -> Result<Worker, String> {
        Ok(Worker {
            index,
            client: target.client()?,
            target,
            fixture,
            session: None,
            access_token: None,
            refresh_token: None,
            sequence: 0,
        })
    }

    fn user(&self) -> Result<&BenchUser, Failure> {
        if self.fixture.users.is_empty() {
            return Err(Failure::new("setup", "no bench users were created"));
        }
        Ok(&self.fixture.users[self.index % self.fixture.users.len()])
    }

    /// The client for a measured request: the worker's own in keep-alive mode, a new
    /// one (so a new TCP + TLS connection) otherwise.
    fn timed_client(&self) -> Result<reqwest::Client, Failure> {
        if self.target.keep_alive {
            Ok(self.client.clone())
        } else {
            self.target.client().map_err(|e| Failure::new("client", e))
        }
    }

    async fn send(step: &str, request: RequestBuilder) -> Result<Response, Failure> {
        let resp = request
            .send()
            .await
            .map_err(|e| Failure::transport(step, &e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map_err(|e| Failure::transport(step, &e))?;
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// Sends and insists on `expected`; a 401 marks the worker's credentials stale.
    async fn expect(
        step: &str,
        request: RequestBuilder,
        expected: &[StatusCode],
    ) -> Result<Response, Failure> {
        let resp = Self::send(step, request).await?;
        if expected.contains(&resp.status) {
            return Ok(resp);
        }
        let failure = Failure::new(
            format!("HTTP {} ({step})", resp.status.as_u16()),
            excerpt(&resp.body),
        );
        Err(if resp.status == StatusCode::UNAUTHORIZED {
            failure.stale()
        } else {
            failure
        })
    }

    fn authorize_url(&self, challenge: &str) -> String {
        let f = &self.fixture;
        let mut url = self.target.url("/authorize");
        url.push('?');
        url.push_str(&form(&[
            ("client_id", &f.client_id),
            ("redirect_uri", &f.redirect_uri),
            ("response_type", "code"),
            ("scope", SCOPE),
            ("state", "bench"),
            ("nonce", "bench"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ]));
        url
    }

    /// The code in a `302` to the redirect URI.
    fn code_from(&self, resp: &Response, step: &str) -> Result<String, Failure> {
        let location = resp
            .headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !location.starts_with(&self.fixture.redirect_uri) {
            return Err(Failure::new(
                format!("bad redirect ({step})"),
                format!("Location {location:?}"),
            ));
        }
        query_param(location, "code").ok_or_else(|| {
            let error = query_param(location, "error").unwrap_or_default();
            Failure::new(format!("no code ({step})"), format!("error {error:?}"))
        })
    }

    /// The password login: login page, form post; returns the code, its verifier and
    /// the session cookie.
    async fn password_login(
        &self,
        client: &reqwest::Client,
        new_client: bool,
    ) -> Result<(String, String, String), Failure> {
        let user = self.user()?.clone();
        let (verifier, challenge) = pkce();
        let page = Self::expect(
            "login page",
            client.get(self.authorize_url(&challenge)),
            &[StatusCode::OK],
        )
        .await?;
        let html = String::from_utf8_lossy(&page.body);
        let (Some(auth_request), Some(csrf)) = (
            hidden_field(&html, "auth_request"),
            hidden_field(&html, "csrf"),
        ) else {
            return Err(Failure::new("no login form", excerpt(&page.body)));
        };
        let csrf_cookie = set_cookie(&page.headers, "mgpass_csrf").unwrap_or_else(|| csrf.clone());
        let post_client;
        let client = if new_client {
            post_client = self.timed_client()?;
            &post_client
        } else {
            client
        };
        let resp = Self::expect(
            "login post",
            client
                .post(self.target.url("/login"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("cookie", format!("mgpass_csrf={csrf_cookie}"))
                .body(form(&[
                    ("auth_request", &auth_request),
                    ("csrf", &csrf),
                    ("username", &user.username),
                    ("password", &user.password),
                ])),
            &[StatusCode::FOUND, StatusCode::SEE_OTHER],
        )
        .await?;
        let code = self.code_from(&resp, "login post")?;
        let session = set_cookie(&resp.headers, crate::http::cookies::SESSION_COOKIE)
            .ok_or_else(|| Failure::new("no session cookie", "login post"))?;
        Ok((code, verifier, session))
    }

    /// `POST /api/token` with `client_secret_basic`.
    async fn token(
        &self,
        client: &reqwest::Client,
        step: &str,
        params: &[(&str, &str)],
    ) -> Result<Tokens, Failure> {
        let f = &self.fixture;
        let resp = Self::expect(
            step,
            client
                .post(self.target.url("/api/token"))
                .basic_auth(&f.client_id, Some(&f.client_secret))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form(params)),
            &[StatusCode::OK],
        )
        .await?;
        let v: Value = serde_json::from_slice(&resp.body)
            .map_err(|e| Failure::new(format!("bad JSON ({step})"), e.to_string()))?;
        let access = v["access_token"].as_str().ok_or_else(|| {
            Failure::new(format!("no access_token ({step})"), excerpt(&resp.body))
        })?;
        Ok(Tokens {
            access: access.to_string(),
            refresh: v["refresh_token"].as_str().map(str::to_string),
        })
    }

    async fn exchange(
        &self,
        client: &reqwest::Client,
        code: &str,
        verifier: &str,
    ) -> Result<Tokens, Failure> {
        self.token(
            client,
            "code exchange",
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("code_verifier", verifier),
                ("redirect_uri", &self.fixture.redirect_uri),
            ],
        )
        .await
    }

    /// Whether the worker holds what `scenario` needs.
    pub fn ready(&self, scenario: Scenario) -> bool {
        match scenario {
            Scenario::SsoCode => self.session.is_some(),
            Scenario::Refresh => self.refresh_token.is_some(),
            Scenario::Userinfo | Scenario::Introspect | Scenario::AccountRewards => {
                self.access_token.is_some()
            }
            _ => true,
        }
    }

    /// Gets what `scenario` needs (not measured): a session, or tokens from a login.
    pub async fn prepare(&mut self, scenario: Scenario) -> Result<(), Failure> {
        if scenario.needs_users() {
            self.user()?;
        }
        match scenario {
            Scenario::Discovery | Scenario::Jwks | Scenario::LoginCode => Ok(()),
            Scenario::PartnerEvents => match &self.fixture.partner_key {
                Ok(_) => Ok(()),
                Err(e) => Err(Failure::new("setup", e.clone())),
            },
            Scenario::SsoCode
            | Scenario::Refresh
            | Scenario::Userinfo
            | Scenario::Introspect
            | Scenario::AccountRewards => {
                let client = self.client.clone();
                let (code, verifier, session) = self.password_login(&client, false).await?;
                let tokens = self.exchange(&client, &code, &verifier).await?;
                if scenario == Scenario::Refresh && tokens.refresh.is_none() {
                    return Err(Failure::new(
                        "setup",
                        "the token response holds no refresh_token",
                    ));
                }
                self.session = Some(session);
                self.access_token = Some(tokens.access);
                self.refresh_token = tokens.refresh;
                Ok(())
            }
        }
    }

    /// One measured iteration. A failure that leaves the credentials unusable clears
    /// them so that the next iteration prepares again.
    pub async fn iteration(&mut self, scenario: Scenario) -> Result<(), Failure> {
        let result = self.run(scenario).await;
        if let Err(f) = &result
            && (f.stale || scenario == Scenario::Refresh)
        {
            // A failed rotation may have spent the token: start a new chain.
            self.session = None;
            self.access_token = None;
            self.refresh_token = None;
        }
        result
    }

    async fn run(&mut self, scenario: Scenario) -> Result<(), Failure> {
        let client = self.timed_client()?;
        let ok = [StatusCode::OK];
        match scenario {
            Scenario::Discovery => {
                Self::expect(
                    "discovery",
                    client.get(self.target.url("/.well-known/openid-configuration")),
                    &ok,
                )
                .await?;
            }
            Scenario::Jwks => {
                Self::expect("jwks", client.get(self.target.url("/jwks.json")), &ok).await?;
            }
            Scenario::LoginCode => {
                let (code, verifier, _session) = self
                    .password_login(&client, !self.target.keep_alive)
                    .await?;
                let client = self.timed_client()?;
                self.exchange(&client, &code, &verifier).await?;
            }
            Scenario::SsoCode => {
                let session = self.session.clone().unwrap_or_default();
                let (verifier, challenge) = pkce();
                let resp = Self::send(
                    "authorize",
                    client
                        .get(self.authorize_url(&challenge))
                        .header("cookie", format!("mgpass_session={session}")),
                )
                .await?;
                if resp.status != StatusCode::FOUND && resp.status != StatusCode::SEE_OTHER {
                    // A login page instead of a code: the session is gone.
                    return Err(Failure::new(
                        format!("HTTP {} (authorize)", resp.status.as_u16()),
                        excerpt(&resp.body),
                    )
                    .stale());
                }
                let code = self.code_from(&resp, "authorize")?;
                let client = self.timed_client()?;
                self.exchange(&client, &code, &verifier).await?;
            }
            Scenario::Refresh => {
                let current = self.refresh_token.clone().unwrap_or_default();
                let tokens = self
                    .token(
                        &client,
                        "refresh",
                        &[("grant_type", "refresh_token"), ("refresh_token", &current)],
                    )
                    .await?;
                self.refresh_token = Some(tokens.refresh.ok_or_else(|| {
                    Failure::new("no refresh_token (refresh)", "the chain ended")
                })?);
            }
            Scenario::Userinfo => {
                let token = self.access_token.clone().unwrap_or_default();
                Self::expect(
                    "userinfo",
                    client
                        .get(self.target.url("/api/userinfo"))
                        .bearer_auth(token),
                    &ok,
                )
                .await?;
            }
            Scenario::Introspect => {
                let f = &self.fixture;
                let token = self.access_token.clone().unwrap_or_default();
                let resp = Self::expect(
                    "introspect",
                    client
                        .post(self.target.url("/api/introspect"))
                        .basic_auth(&f.client_id, Some(&f.client_secret))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(form(&[("token", &token)])),
                    &ok,
                )
                .await?;
                let v: Value = serde_json::from_slice(&resp.body).unwrap_or_default();
                if v["active"] != json!(true) {
                    return Err(
                        Failure::new("inactive token (introspect)", excerpt(&resp.body)).stale(),
                    );
                }
            }
            Scenario::PartnerEvents => {
                let key = self.fixture.partner_key.clone().unwrap_or_default();
                let user_id = self.user()?.id.clone();
                self.sequence += 1;
                let reference =
                    format!("{}-w{}-{}", self.fixture.run_id, self.index, self.sequence);
                let body = json!({
                    "user_id": user_id,
                    "event_type": "purchase",
                    "metadata": {
                        "reference_id": reference,
                        "amount": 25,
                        "currency": "GHS",
                        "item_count": 1,
                    },
                });
                Self::expect(
                    "partner event",
                    client
                        .post(self.target.url("/api/partner/events"))
                        .header("x-api-key", key)
                        .header("content-type", "application/json")
                        .body(body.to_string()),
                    &[StatusCode::OK, StatusCode::CREATED, StatusCode::ACCEPTED],
                )
                .await?;
            }
            Scenario::AccountRewards => {
                let token = self.access_token.clone().unwrap_or_default();
                Self::expect(
                    "account rewards",
                    client
                        .get(self.target.url("/api/account/rewards"))
                        .bearer_auth(token),
                    &ok,
                )
                .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_lists_parse() {
        let s = Scenario::parse_list(&["discovery,sso-code".into(), "jwks".into()]).expect("ok");
        assert_eq!(s, [Scenario::Discovery, Scenario::SsoCode, Scenario::Jwks]);
        assert_eq!(
            Scenario::parse_list(&["all".into()]).expect("ok"),
            Scenario::ALL
        );
        assert_eq!(
            Scenario::parse_list(&["jwks,all".into()])
                .expect("ok")
                .len(),
            9
        );
        assert!(Scenario::parse_list(&["nope".into()]).is_err());
        assert!(Scenario::parse_list(&[]).is_err());
    }

    #[test]
    fn cookies_and_fields_are_found() {
        let mut h = HeaderMap::new();
        h.append(
            SET_COOKIE,
            "mgpass_csrf=abc; Path=/; Secure".parse().expect("v"),
        );
        h.append(
            SET_COOKIE,
            "mgpass_session=xyz; HttpOnly".parse().expect("v"),
        );
        assert_eq!(set_cookie(&h, "mgpass_session").as_deref(), Some("xyz"));
        assert_eq!(set_cookie(&h, "mgpass_csrf").as_deref(), Some("abc"));
        assert_eq!(set_cookie(&h, "other"), None);
        let html = r#"<input type="hidden" name="csrf" value="c-1"><input name="auth_request" value="ar_2">"#;
        assert_eq!(hidden_field(html, "csrf").as_deref(), Some("c-1"));
        assert_eq!(hidden_field(html, "auth_request").as_deref(), Some("ar_2"));
    }
}
