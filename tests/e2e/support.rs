//! The test harness: a real mgpass server over TLS on 127.0.0.1, a temp data dir, a
//! manual clock, and clients that behave like relying apps and browsers.

use mgpass::admin::{self, Command, NewClient, NewUser, Secret};
use mgpass::app::App;
use mgpass::clock::ManualClock;
use mgpass::config::Config;
use mgpass::server::Server;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tempfile::TempDir;

/// Test configuration: cheap Argon2 so a login costs milliseconds, not a second.
pub fn test_config(dir: &Path, port: u16) -> Config {
    let text = format!(
        r#"
issuer = "https://localhost:{port}"
listen = "127.0.0.1:{port}"
data_dir = "data"
keys_dir = "keys"
plugins_dir = "plugins"
[login]
argon2_memory_kib = 64
argon2_iterations = 1
[logout]
backchannel_retry_base = "100ms"
backchannel_timeout = "2s"
[shutdown]
grace = "2s"
[rate_limits]
partner_per_minute = 100000
api_per_minute = 100000
"#
    );
    Config::parse(&text, dir).expect("test config")
}

pub struct TestServer {
    server: Option<Server>,
    /// Held so the folder lives as long as the server.
    #[allow(dead_code)]
    pub dir: TempDir,
    pub clock: Arc<ManualClock>,
    pub config: Config,
    pub addr: SocketAddr,
    pub base: String,
    pub cert_path: PathBuf,
    /// The secret of the "console" client that `user_token` registers once.
    pub console_secret: std::sync::Mutex<Option<String>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// Starts a server after `adjust` has changed its config.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::start_with_plugins(&[], adjust).await
    }

    pub fn app(&self) -> &Arc<App> {
        &self.server.as_ref().expect("running").app
    }

    /// Stops the server and starts it again on the same folders and port.
    pub async fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("rebind");
        let server = Server::start(self.config.clone(), self.clock.clone(), listener)
            .await
            .expect("server restarts");
        self.server = Some(server);
    }

    #[allow(dead_code)]
    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().and_then(|s| s.metrics_addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn builder(&self) -> reqwest::ClientBuilder {
        client_builder(&self.cert_path, self.addr)
    }

    /// A client without cookies that does not follow redirects.
    pub fn http(&self) -> reqwest::Client {
        self.builder().build().expect("client")
    }

    /// A browser-like client: keeps cookies, does not follow redirects (tests look at
    /// each hop).
    pub fn browser(&self) -> reqwest::Client {
        self.builder().cookie_store(true).build().expect("client")
    }

    pub async fn admin(&self, command: Command) -> Result<Value, admin::AdminError> {
        admin::execute(self.app(), command).await
    }

    /// Registers a client; returns its secret when confidential.
    pub async fn add_client(&self, spec: ClientSpec) -> Option<String> {
        let v = self
            .admin(Command::ClientAdd(NewClient {
                id: spec.id.into(),
                secret: if spec.public {
                    Secret::Public
                } else {
                    Secret::Generate
                },
                redirect_uris: spec.redirect_uris,
                post_logout_redirect_uris: spec.post_logout_redirect_uris,
                backchannel_logout_uri: spec.backchannel_logout_uri,
                backchannel_logout_session_required: spec.backchannel_session_required,
                name: Some("Test App".into()),
                first_party: spec.first_party,
                id_token_alg: spec.id_token_alg.map(str::to_string),
            }))
            .await
            .expect("client add");
        v["client_secret"].as_str().map(str::to_string)
    }

    /// Creates a user; returns their id (the `sub` of their tokens).
    pub async fn add_user(&self, username: &str, password: &str, roles: &[&str]) -> String {
        let v = self
            .admin(Command::UserAdd(NewUser {
                username: username.into(),
                email: Some(format!("{username}@example.com")),
                name: Some(format!("{username} Example")),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                password: password.into(),
            }))
            .await
            .expect("user add");
        v["id"].as_str().expect("id").to_string()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Dropping without shutdown is fine: the runtime ends the tasks.
        self.server.take();
    }
}

/// A reqwest client that trusts the server's certificate and resolves `localhost` to
/// the test listener.
pub fn client_builder(cert: &Path, addr: SocketAddr) -> reqwest::ClientBuilder {
    mgpass::install_crypto_provider();
    let pem = std::fs::read(cert).expect("cert");
    let cert = reqwest::Certificate::from_pem(&pem).expect("pem");
    reqwest::Client::builder()
        .tls_certs_only([cert])
        .resolve("localhost", addr)
        .redirect(reqwest::redirect::Policy::none())
}

#[derive(Clone)]
pub struct ClientSpec {
    pub id: &'static str,
    pub public: bool,
    pub first_party: bool,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub backchannel_logout_uri: Option<String>,
    pub backchannel_session_required: bool,
    pub id_token_alg: Option<&'static str>,
}

impl ClientSpec {
    pub fn confidential(id: &'static str) -> ClientSpec {
        ClientSpec {
            id,
            public: false,
            first_party: true,
            redirect_uris: vec![format!("https://{id}.example/callback")],
            post_logout_redirect_uris: vec![format!("https://{id}.example/bye")],
            backchannel_logout_uri: None,
            backchannel_session_required: false,
            id_token_alg: None,
        }
    }

    pub fn public(id: &'static str) -> ClientSpec {
        ClientSpec {
            public: true,
            ..ClientSpec::confidential(id)
        }
    }

    pub fn redirect_uri(&self) -> String {
        self.redirect_uris[0].clone()
    }
}

/// The `Location` of a redirect response.
pub fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// A query parameter of a URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The value of a hidden form field in a page.
pub fn hidden_field(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_string())
}

/// PKCE verifier and S256 challenge.
pub fn pkce() -> (String, String) {
    let verifier = mgpass::crypto::random_token();
    let challenge = mgpass::crypto::b64url(&mgpass::crypto::sha256(verifier.as_bytes()));
    (verifier, challenge)
}

/// An HTTP client for the `openidconnect` crate, over our test reqwest client.
pub fn oidc_http(
    client: reqwest::Client,
) -> impl Fn(
    openidconnect::HttpRequest,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<openidconnect::HttpResponse, std::io::Error>>>,
> {
    move |req: openidconnect::HttpRequest| {
        let client = client.clone();
        Box::pin(async move {
            let resp = client
                .request(req.method().clone(), req.uri().to_string())
                .headers(req.headers().clone())
                .body(req.body().clone())
                .send()
                .await
                .map_err(std::io::Error::other)?;
            let mut builder = http::Response::builder().status(resp.status());
            for (k, v) in resp.headers() {
                builder = builder.header(k, v);
            }
            let body = resp.bytes().await.map_err(std::io::Error::other)?;
            builder.body(body.to_vec()).map_err(std::io::Error::other)
        })
    }
}

/// Builds an `/authorize` URL by hand (for error-path tests that a library would refuse
/// to build).
pub fn authorize_url(server: &TestServer, params: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(&server.url("/authorize")).expect("url");
    url.query_pairs_mut().extend_pairs(params);
    url.into()
}

/// Signs in through the HTML form as a browser would: loads `auth_url`, fills in the
/// form and posts it. Returns the response to the POST.
pub async fn submit_login(
    browser: &reqwest::Client,
    server: &TestServer,
    auth_url: &str,
    username: &str,
    password: &str,
    remember: bool,
) -> reqwest::Response {
    let page = browser.get(auth_url).send().await.expect("authorize");
    assert_eq!(page.status(), 200, "expected the login form");
    let html = page.text().await.expect("html");
    post_login_form(browser, server, &html, username, password, remember).await
}

/// Posts the login form found in `html`.
pub async fn post_login_form(
    browser: &reqwest::Client,
    server: &TestServer,
    html: &str,
    username: &str,
    password: &str,
    remember: bool,
) -> reqwest::Response {
    let auth_request = hidden_field(html, "auth_request").expect("auth_request field");
    let csrf = hidden_field(html, "csrf").expect("csrf field");
    let mut form = vec![
        ("auth_request", auth_request),
        ("csrf", csrf),
        ("username", username.to_string()),
        ("password", password.to_string()),
    ];
    if remember {
        form.push(("remember", "yes".into()));
    }
    browser
        .post(server.url("/login"))
        .form(&form)
        .send()
        .await
        .expect("login post")
}

/// A complete code flow by hand for `client`: returns the token response JSON.
pub async fn code_flow(
    server: &TestServer,
    browser: &reqwest::Client,
    client: &ClientSpec,
    secret: Option<&str>,
    scope: &str,
    login: Option<(&str, &str)>,
) -> Value {
    let (verifier, challenge) = pkce();
    let redirect = client.redirect_uri();
    let url = authorize_url(
        server,
        &[
            ("client_id", client.id),
            ("redirect_uri", &redirect),
            ("response_type", "code"),
            ("scope", scope),
            ("state", "st"),
            ("nonce", "n0"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    );
    let resp = match login {
        Some((user, pw)) => submit_login(browser, server, &url, user, pw, false).await,
        None => browser.get(&url).send().await.expect("authorize"),
    };
    assert_eq!(resp.status(), 302, "expected a redirect with a code");
    let loc = location(&resp);
    assert!(loc.starts_with(&redirect), "{loc}");
    let code = query_param(&loc, "code").expect("code");
    exchange(server, client, secret, &code, &verifier).await
}

/// Exchanges a code at the token endpoint; panics unless it succeeds.
pub async fn exchange(
    server: &TestServer,
    client: &ClientSpec,
    secret: Option<&str>,
    code: &str,
    verifier: &str,
) -> Value {
    let resp = token_request(
        server,
        client,
        secret,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", &client.redirect_uri()),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

/// A token-endpoint request with `client_secret_basic` (or `client_id` for public
/// clients).
pub async fn token_request(
    server: &TestServer,
    client: &ClientSpec,
    secret: Option<&str>,
    params: &[(&str, &str)],
) -> reqwest::Response {
    let mut form: Vec<(&str, &str)> = params.to_vec();
    let mut req = server.http().post(server.url("/api/token"));
    match secret {
        Some(s) => req = req.basic_auth(client.id, Some(s)),
        None => form.push(("client_id", client.id)),
    }
    req.form(&form).send().await.expect("token request")
}

/// Signs in a fresh user holding `roles` through a first-party client and returns an
/// access token for `scope`.
pub async fn user_token(
    server: &TestServer,
    username: &str,
    roles: &[&str],
    scope: &str,
) -> String {
    server.add_user(username, "correct-horse-9", roles).await;
    login_token(server, username, scope).await
}

/// An access token with the `mgpass:admin` scope.
pub async fn admin_token(server: &TestServer) -> String {
    let name = format!("admin{}", &mgpass::crypto::random_id("")[..8]);
    user_token(server, &name, &["mgpass:admin"], "openid mgpass:admin").await
}

// ---------------------------------------------------------------------------------------
// Logout helpers: back-channel receivers, a cookie jar we can read, JWT checks.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request a [`Receiver`] got, with the status it answered (0: dropped the
/// connection without answering).
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    /// Lower-case names, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("JSON body")
    }

    /// The form-encoded `logout_token`, if the body is exactly that one field.
    pub fn logout_token(&self) -> Option<String> {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(self.body.as_bytes())
            .into_owned()
            .collect();
        match pairs.as_slice() {
            [(k, v)] if k == "logout_token" => Some(v.clone()),
            _ => None,
        }
    }
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    fail_next: AtomicUsize,
    /// Answered to every request when non-zero.
    status: AtomicUsize,
    down: AtomicBool,
}

/// A relying app's back-channel logout endpoint or a partner's webhook endpoint: plain
/// HTTP on 127.0.0.1 (loopback `http` URIs are allowed), one request per connection,
/// every request recorded with its headers.
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(ReceiverState::default());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(receive_one(stream, shared.clone()));
            }
        });
        Receiver { addr, state, task }
    }

    /// The back-channel logout URI.
    pub fn uri(&self) -> String {
        self.url("/backchannel")
    }

    /// A URI on this receiver with `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }

    /// Answer `500` to the next `n` requests.
    pub fn fail_next(&self, n: usize) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    /// Answer `status` to every request (0: back to normal).
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status as usize, Ordering::SeqCst);
    }

    /// Close every connection without answering (a network error) until told otherwise.
    pub fn set_down(&self, on: bool) {
        self.state.down.store(on, Ordering::SeqCst);
    }

    /// Every request so far, answered or not.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// The requests answered with `200`.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.status == 200)
            .collect()
    }

    /// Waits (bounded) until `n` requests were accepted; `nudge` runs between polls
    /// (e.g. to move the manual clock so retries fall due).
    pub async fn wait_accepted(&self, n: usize, nudge: impl FnMut()) -> Vec<Received> {
        let got = poll_until(Duration::from_secs(15), nudge, || {
            let a = self.accepted();
            (a.len() >= n).then_some(a)
        })
        .await;
        got.unwrap_or_else(|| {
            panic!(
                "expected {n} accepted deliveries; got {:?}",
                self.received()
            )
        })
    }

    /// Waits (bounded) until at least `n` requests arrived, answered or not.
    pub async fn wait_received(&self, n: usize, nudge: impl FnMut()) -> Vec<Received> {
        let got = poll_until(Duration::from_secs(15), nudge, || {
            let r = self.received();
            (r.len() >= n).then_some(r)
        })
        .await;
        got.unwrap_or_else(|| panic!("expected {n} requests; got {:?}", self.received()))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive_one(mut stream: tokio::net::TcpStream, state: Arc<ReceiverState>) {
    if state.down.load(Ordering::SeqCst) {
        state.received.lock().unwrap().push(Received {
            method: String::new(),
            path: String::new(),
            content_type: None,
            headers: Vec::new(),
            body: String::new(),
            status: 0,
        });
        return;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 1 << 20 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let path = request_line.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let value = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let length: usize = value("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let content_type = value("content-type");
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    let fail = state
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = match (fail, state.status.load(Ordering::SeqCst)) {
        (true, _) => 500,
        (false, 0) => 200,
        (false, set) => set as u16,
    };
    state.received.lock().unwrap().push(Received {
        method,
        path,
        content_type,
        headers,
        body,
        status,
    });
    let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `limit`; `nudge` runs
/// before each poll.
pub async fn poll_until<T>(
    limit: Duration,
    mut nudge: impl FnMut(),
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        nudge();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestServer {
    /// Moves the manual clock 200 ms and wakes the outbox worker, so scheduled retries
    /// fall due without real waiting.
    pub fn nudge_outbox(&self) {
        self.clock.advance_ms(200);
        self.app().outbox_wake.notify_one();
    }

    /// A browser-like client whose cookie jar the test can read.
    pub fn browser_with_jar(&self) -> (reqwest::Client, Arc<reqwest::cookie::Jar>) {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let client = self
            .builder()
            .cookie_provider(jar.clone())
            .build()
            .expect("client");
        (client, jar)
    }

    /// The server's JWKS.
    pub async fn jwks(&self) -> Value {
        self.http()
            .get(self.url("/jwks.json"))
            .send()
            .await
            .expect("jwks")
            .json()
            .await
            .expect("jwks json")
    }
}

/// The value of cookie `name` the jar would send to `url`.
pub fn jar_cookie(jar: &reqwest::cookie::Jar, url: &str, name: &str) -> Option<String> {
    use reqwest::cookie::CookieStore;
    let header = jar.cookies(&url::Url::parse(url).ok()?)?;
    header
        .to_str()
        .ok()?
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Verifies a compact JWS against a JWKS (by `kid` and `alg`); returns the protected
/// header and the claims. Panics when the signature does not verify.
pub fn verify_with_jwks(jwks: &Value, token: &str) -> (serde_json::Map<String, Value>, Value) {
    let header = josekit::jwt::decode_header(token).expect("JWT header");
    let kid = header
        .claim("kid")
        .and_then(Value::as_str)
        .expect("kid in header")
        .to_string();
    let alg = header
        .claim("alg")
        .and_then(Value::as_str)
        .expect("alg in header")
        .to_string();
    let key = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} is not in the JWKS"));
    let jwk = josekit::jwk::Jwk::from_map(key.as_object().unwrap().clone()).expect("jwk");
    let (payload, header) = match alg.as_str() {
        "ES256" => {
            let v = josekit::jws::ES256
                .verifier_from_jwk(&jwk)
                .expect("verifier");
            josekit::jws::deserialize_compact(token, &v)
        }
        "RS256" => {
            let v = josekit::jws::RS256
                .verifier_from_jwk(&jwk)
                .expect("verifier");
            josekit::jws::deserialize_compact(token, &v)
        }
        other => panic!("unexpected alg {other}"),
    }
    .expect("signature verifies against the JWKS");
    let claims: Value = serde_json::from_slice(&payload).expect("claims json");
    (header.claims_set().clone(), claims)
}

// ---------------------------------------------------------------------------------------
// Helpers for the login and token tests.

/// The standard authorization request parameters for `client` (PKCE S256, `state=st`,
/// `nonce=n0`), with `extra` added or overriding. Returns the URL and the PKCE verifier.
pub fn auth_request(
    server: &TestServer,
    client: &ClientSpec,
    scope: &str,
    extra: &[(&str, &str)],
) -> (String, String) {
    let (verifier, challenge) = pkce();
    let redirect = client.redirect_uri();
    let mut params: Vec<(&str, &str)> = vec![
        ("client_id", client.id),
        ("redirect_uri", &redirect),
        ("response_type", "code"),
        ("scope", scope),
        ("state", "st"),
        ("nonce", "n0"),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ];
    for (k, v) in extra {
        match params.iter_mut().find(|(name, _)| name == k) {
            Some(p) => p.1 = v,
            None => params.push((k, v)),
        }
    }
    params.retain(|(_, v)| !v.is_empty());
    (authorize_url(server, &params), verifier)
}

/// The code in a redirect back to the client; panics with the response otherwise.
pub fn code_from(resp: &reqwest::Response, client: &ClientSpec) -> String {
    assert_eq!(resp.status(), 302, "expected a redirect with a code");
    let loc = location(resp);
    assert!(loc.starts_with(&client.redirect_uri()), "{loc}");
    query_param(&loc, "code").unwrap_or_else(|| panic!("no code in {loc}"))
}

/// Runs `/authorize` (logging in through the form when `login` is given) and returns the
/// code and the PKCE verifier.
pub async fn get_code(
    server: &TestServer,
    browser: &reqwest::Client,
    client: &ClientSpec,
    scope: &str,
    login: Option<(&str, &str)>,
) -> (String, String) {
    let (url, verifier) = auth_request(server, client, scope, &[]);
    let resp = match login {
        Some((user, pw)) => submit_login(browser, server, &url, user, pw, false).await,
        None => browser.get(&url).send().await.expect("authorize"),
    };
    (code_from(&resp, client), verifier)
}

/// A code exchange whose response is returned as is.
pub async fn exchange_raw(
    server: &TestServer,
    client: &ClientSpec,
    secret: Option<&str>,
    code: &str,
    verifier: &str,
) -> reqwest::Response {
    token_request(
        server,
        client,
        secret,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", &client.redirect_uri()),
        ],
    )
    .await
}

/// A refresh grant (optionally down-scoped).
pub async fn refresh_grant(
    server: &TestServer,
    client: &ClientSpec,
    secret: Option<&str>,
    refresh_token: &str,
    scope: Option<&str>,
) -> reqwest::Response {
    let mut params = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    if let Some(s) = scope {
        params.push(("scope", s));
    }
    token_request(server, client, secret, &params).await
}

/// Asserts an RFC 6749 §5.2 error response: status and `error` code; returns the body.
pub async fn expect_oauth_error(resp: reqwest::Response, status: u16, error: &str) -> Value {
    assert_eq!(resp.status(), status, "status");
    let cache = header(&resp, "cache-control");
    let body: Value = resp.json().await.expect("JSON error body");
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    assert_eq!(cache, "no-store", "errors are not cacheable either");
    body
}

/// Token introspection by a confidential client (Basic).
pub async fn introspect(
    server: &TestServer,
    client: &ClientSpec,
    secret: &str,
    token: &str,
) -> Value {
    let resp = server
        .http()
        .post(server.url("/api/introspect"))
        .basic_auth(client.id, Some(secret))
        .form(&[("token", token)])
        .send()
        .await
        .expect("introspect");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

/// Token revocation by a confidential client (Basic); asserts `200`.
pub async fn revoke(server: &TestServer, client: &ClientSpec, secret: &str, token: &str) {
    let resp = server
        .http()
        .post(server.url("/api/revoke"))
        .basic_auth(client.id, Some(secret))
        .form(&[("token", token)])
        .send()
        .await
        .expect("revoke");
    assert_eq!(resp.status(), 200);
}

/// `GET path` with an optional bearer token.
pub async fn bearer_get(server: &TestServer, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = server.http().get(server.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("request")
}

/// One header's value as a string ("" when absent).
pub fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Every `Set-Cookie` of a response that sets cookie `name`.
pub fn set_cookies(resp: &reqwest::Response, name: &str) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
        .collect()
}

/// The attributes of a `Set-Cookie` value after the name=value pair, as written.
pub fn cookie_attributes(set_cookie: &str) -> Vec<String> {
    set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_string())
        .collect()
}

/// The login page's error message, if it shows one.
pub fn page_error(html: &str) -> Option<String> {
    let start = html.find("role=\"alert\">")? + "role=\"alert\">".len();
    let end = html[start..].find("</p>")? + start;
    Some(html[start..end].to_string())
}

/// Posts the login form found in `html` with extra request headers (e.g.
/// `X-Forwarded-For` behind a trusted proxy).
pub async fn post_login_form_with(
    browser: &reqwest::Client,
    server: &TestServer,
    html: &str,
    username: &str,
    password: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let auth_request = hidden_field(html, "auth_request").expect("auth_request field");
    let csrf = hidden_field(html, "csrf").expect("csrf field");
    let mut req = browser.post(server.url("/login")).form(&[
        ("auth_request", auth_request.as_str()),
        ("csrf", csrf.as_str()),
        ("username", username),
        ("password", password),
    ]);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("login post")
}

/// Answers the consent page found in `html` with `decision` (`allow` or `deny`).
pub async fn post_consent(
    browser: &reqwest::Client,
    server: &TestServer,
    html: &str,
    decision: &str,
) -> reqwest::Response {
    let auth_request = hidden_field(html, "auth_request").expect("auth_request field");
    let csrf = hidden_field(html, "csrf").expect("csrf field");
    browser
        .post(server.url("/consent"))
        .form(&[
            ("auth_request", auth_request.as_str()),
            ("csrf", csrf.as_str()),
            ("decision", decision),
        ])
        .send()
        .await
        .expect("consent post")
}

/// Verifies a JWT against the server's published JWKS (the key named by `kid`, with
/// the algorithm the key is published for); returns its header and claims.
pub async fn verify_jwt(server: &TestServer, token: &str) -> (Value, Value) {
    let jwks = server
        .http()
        .get(server.url("/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .bytes()
        .await
        .expect("jwks body");
    let set = josekit::jwk::JwkSet::from_bytes(&jwks).expect("JWKS parses");
    let header = josekit::jwt::decode_header(token).expect("JWT header");
    let kid = header
        .claim("kid")
        .and_then(|v| v.as_str())
        .expect("kid")
        .to_string();
    let keys = set.get(&kid);
    let jwk = keys
        .first()
        .unwrap_or_else(|| panic!("kid {kid} is not in JWKS"));
    let (payload, header) = match jwk.algorithm() {
        Some("ES256") => josekit::jws::deserialize_compact(
            token,
            &josekit::jws::ES256.verifier_from_jwk(jwk).expect("EC key"),
        ),
        Some("RS256") => josekit::jws::deserialize_compact(
            token,
            &josekit::jws::RS256.verifier_from_jwk(jwk).expect("RSA key"),
        ),
        other => panic!("unexpected JWKS alg {other:?}"),
    }
    .expect("signature verifies against JWKS");
    let claims: Value = serde_json::from_slice(&payload).expect("claims JSON");
    (Value::Object(header.claims_set().clone()), claims)
}

// ---------------------------------------------------------------------------------------
// Partner helpers: a server with operator plugins installed before it starts.

impl TestServer {
    /// Starts a server whose `plugins/` folder holds `plugins` (name, component bytes)
    /// before it starts; a built-in `rewards` plugin, if any, is disabled so the given
    /// plugin is the one that handles partner events.
    /// Starts a server with operator plugin files (`name.wasm` in `plugins_dir`)
    /// written first. With operator plugins the built-in rewards plugin is off (one
    /// plugin handles partner events); `adjust` may turn it back on.
    pub async fn start_with_plugins(
        plugins: &[(&str, &[u8])],
        adjust: impl FnOnce(&mut Config),
    ) -> TestServer {
        mgpass::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        let plugins_dir = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins_dir).expect("plugins dir");
        for (name, bytes) in plugins {
            std::fs::write(plugins_dir.join(format!("{name}.wasm")), bytes).expect("plugin");
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut config = test_config(dir.path(), port);
        // One compile cache for the whole suite: every server would otherwise compile
        // the built-in plugins again (about a second each in a debug build).
        config.plugin_cache_dir = Some(std::env::temp_dir().join("mgpass-e2e-plugin-cache"));
        if !plugins.is_empty() {
            config
                .plugins
                .insert("rewards".into(), toml::toml! { enabled = false });
        }
        adjust(&mut config);
        // Debug builds on two shared cores: a generous wall-clock budget per call, so
        // these tests are about behaviour, not timing (the budget itself is tested in
        // the plugin host's own tests).
        let names = plugins
            .iter()
            .map(|(n, _)| n.to_string())
            .chain(["rewards".to_string()]);
        for name in names {
            config
                .plugins
                .entry(name)
                .or_default()
                .entry("time_budget_ms")
                .or_insert(toml::Value::Integer(5000));
        }
        let clock = ManualClock::new();
        let server = Server::start(config.clone(), clock.clone(), listener)
            .await
            .expect("server starts");
        TestServer {
            addr: server.addr,
            base: config.issuer.clone(),
            cert_path: server.cert_path.clone(),
            server: Some(server),
            dir,
            clock,
            config,
            console_secret: std::sync::Mutex::new(None),
        }
    }
}

// Rewards helpers: tokens for users that already exist, the ledger invariant.

/// The console client's secret, registering the client on first use (as `user_token`).
async fn console_secret(server: &TestServer) -> Option<String> {
    let spec = ClientSpec::confidential("console");
    match server
        .admin(Command::ClientShow { id: spec.id.into() })
        .await
    {
        Ok(_) => server.console_secret.lock().expect("lock").clone(),
        Err(_) => {
            let s = server.add_client(spec).await;
            *server.console_secret.lock().expect("lock") = s.clone();
            s
        }
    }
}

/// Signs in a user that already exists (password `correct-horse-9`, as `user_token`
/// sets it) in a fresh browser and returns a new access token for `scope`.
pub async fn login_token(server: &TestServer, username: &str, scope: &str) -> String {
    let spec = ClientSpec::confidential("console");
    let secret = console_secret(server).await;
    let browser = server.browser();
    let tokens = code_flow(
        server,
        &browser,
        &spec,
        secret.as_deref(),
        scope,
        Some((username, "correct-horse-9")),
    )
    .await;
    tokens["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

/// The claims of a JWT, read without verifying it (use `verify_jwt` to verify).
pub fn jwt_payload(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a compact JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// An admin token for the ledger checks, from one auditor account per server.
async fn auditor_token(server: &TestServer) -> String {
    const NAME: &str = "ledger-auditor";
    // Fails harmlessly when the auditor exists already.
    let _ = server
        .admin(Command::UserAdd(NewUser {
            username: NAME.into(),
            email: None,
            name: None,
            roles: vec!["mgpass:admin".into()],
            password: "correct-horse-9".into(),
        }))
        .await;
    login_token(server, NAME, "openid mgpass:admin").await
}

/// The ledger invariant (issue 7 §12): the user's entries are numbered 1..n without a
/// gap, each `balance_after` is the running sum and never negative, and the balance the
/// host keeps and the plugin shows (`GET /api/rewards/users/{id}`) both equal the sum.
/// Returns the balance.
pub async fn assert_ledger_consistent(server: &TestServer, user_id: &str) -> i64 {
    let store = &server.app().store;
    let mut entries = store
        .ledger_entries(user_id, None, usize::MAX)
        .expect("ledger entries");
    entries.reverse();
    let mut sum = 0i64;
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(
            e.seq,
            i as u64 + 1,
            "entries are numbered without gaps: {e:?}"
        );
        assert_eq!(e.user, user_id);
        assert_ne!(e.points, 0, "an entry moves points: {e:?}");
        sum += e.points;
        assert_eq!(
            e.balance_after, sum,
            "balance_after is the running sum: {e:?}"
        );
        assert!(sum >= 0, "the balance went negative: {entries:?}");
    }
    let balance = store.ledger_balance(user_id).expect("balance");
    assert_eq!(balance.points, sum, "stored balance = sum of entries");
    assert_eq!(balance.seq, entries.len() as u64, "stored balance version");
    let token = auditor_token(server).await;
    let resp = server
        .http()
        .get(server.url(&format!("/api/rewards/users/{user_id}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("admin user view");
    assert_eq!(resp.status(), 200);
    let view: Value = resp.json().await.expect("json");
    assert_eq!(
        view["total_points"], sum,
        "the balance shown = sum of entries: {view}"
    );
    sum
}

// The real binary under `kill -9`: a server process that restarts on the same folders
// and port (crash-consistency test).

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// An `mgpass serve` process in `dir` (config `dir/config.toml`, data under `dir/data`)
/// on a fixed port; it can be killed with SIGKILL and started again on the same folders
/// and port. Its stderr goes to `dir/server.log`. Killed on drop.
pub struct KillableServer {
    child: Option<std::process::Child>,
    pub dir: PathBuf,
    pub port: u16,
    pub config: PathBuf,
    /// Processes started so far.
    pub starts: usize,
}

impl KillableServer {
    /// Writes a test config (cheap Argon2, fast back-channel retries, no practical rate
    /// limits) followed by `extra_config` and starts the server on `port`.
    pub async fn spawn_in(dir: &Path, port: u16, extra_config: &str) -> KillableServer {
        let config = dir.join("config.toml");
        let mut server = KillableServer {
            child: None,
            dir: dir.to_path_buf(),
            port,
            config,
            starts: 0,
        };
        server.write_config(extra_config);
        server.start().await;
        server
    }

    /// Rewrites the config file (it takes effect at the next start).
    pub fn write_config(&self, extra_config: &str) {
        let port = self.port;
        let text = format!(
            "issuer = \"https://localhost:{port}\"\nlisten = \"127.0.0.1:{port}\"\n\
             [login]\nargon2_memory_kib = 64\nargon2_iterations = 1\n\
             [logout]\nbackchannel_retry_base = \"100ms\"\nbackchannel_timeout = \"2s\"\n\
             [shutdown]\ngrace = \"2s\"\n\
             [rate_limits]\npartner_per_minute = 10000000\napi_per_minute = 10000000\n\
             {extra_config}\n"
        );
        std::fs::write(&self.config, text).expect("write config");
    }

    fn admin_socket(&self) -> PathBuf {
        self.dir.join("data/admin.sock")
    }

    /// Starts the process and waits (bounded) until it serves.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        // A killed server leaves its socket behind: remove it so readiness means the new
        // process is up.
        let _ = std::fs::remove_file(self.admin_socket());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .expect("server log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_mgpass"))
            .env_remove("MGPASS_CONFIG")
            .env("RUST_LOG", "warn")
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mgpass serve");
        self.child = Some(child);
        self.starts += 1;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.admin_socket().exists()
                && tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_ok()
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("server exited early ({status}); log:\n{}", self.log_tail());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "server did not become ready; log:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `kill -9`, and waits for the process to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    /// SIGTERM (a clean stop), and the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: signalling our own child process by its id.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        child.wait().ok().and_then(|s| s.code())
    }

    /// One admin command over the running server's socket, bounded in time; `None` when
    /// no answer came (the server died meanwhile).
    pub async fn admin(&self, command: &Command) -> Option<Result<Value, admin::AdminError>> {
        let socket = self.admin_socket();
        tokio::time::timeout(
            Duration::from_secs(5),
            admin::socket::send(&socket, command),
        )
        .await
        .ok()?
        .ok()
    }

    pub fn base(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("data/tls-cert.pem")
    }

    /// The last lines the server wrote to stderr.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for KillableServer {
    fn drop(&mut self) {
        self.kill9();
    }
}
