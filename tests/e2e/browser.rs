//! The real-browser test: headless Chromium, driven through chromedriver with
//! fantoccini, signs in on the login page and the test's relying party receives working
//! tokens.
//!
//! Needs the Debian packages `chromium` and `chromium-driver`. Without them the test
//! prints a notice and passes, unless `MGPASS_REQUIRE_BROWSER=1` (set by `.ci/run`),
//! in which case it fails.

use crate::support::*;
use base64::Engine as _;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener as StdTcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "chromedriver";
const REQUIRE_VAR: &str = "MGPASS_REQUIRE_BROWSER";
/// Upper bound for any single wait: driver start, page load, redirect.
const WAIT: Duration = Duration::from_secs(30);

/// Finds `name` on `PATH` (or takes it as is when it is a path).
fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The chromedriver binary when both it and Chromium are installed. Otherwise prints a
/// notice and returns `None`, or panics when the environment requires the browser.
fn browser_or_skip() -> Option<PathBuf> {
    let chromium = Path::new(CHROMIUM).is_file();
    let driver = which(CHROMEDRIVER);
    if chromium && let Some(driver) = driver {
        return Some(driver);
    }
    let why = format!(
        "chromium/chromedriver not installed ({CHROMIUM}: {}, {CHROMEDRIVER}: {})",
        if chromium { "found" } else { "missing" },
        if driver.is_some() { "found" } else { "missing" },
    );
    if std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1") {
        panic!("{REQUIRE_VAR}=1 but {why}");
    }
    // Written straight to stderr so that it shows even though the test passes (the
    // test harness captures only the print macros).
    let _ = writeln!(
        std::io::stderr(),
        "skipping real-browser test: {why}; install `chromium chromium-driver` or set \
         {REQUIRE_VAR}=1 to make this a failure"
    );
    None
}

/// A running chromedriver in its own process group. Dropping it kills the group (the
/// driver and any browser it started), so a failing test leaves nothing behind.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(binary: &Path) -> Driver {
        // A free port: bind, read it, release it for chromedriver.
        let port = StdTcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let mut driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + WAIT;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return driver;
            }
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!("chromedriver exited before listening: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not listening on {addr} after {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: plain syscall; the negative pid names the process group that
        // `process_group(0)` gave chromedriver, which holds only what it started.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// The test's relying party: a plain-HTTP listener on 127.0.0.1 whose `/callback`
/// requests (path and query) are sent down the channel.
async fn relying_party() -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind relying party");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf);
                let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, body) = if target.starts_with("/callback") {
                    let _ = tx.send(target);
                    (
                        "200 OK",
                        "<!doctype html><title>RP</title><p id=\"done\">signed in</p>",
                    )
                } else {
                    ("404 Not Found", "")
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(resp.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (format!("http://{addr}/callback"), rx)
}

async fn connect(driver: &Driver, user_data_dir: &Path) -> Client {
    let options = json!({
        "binary": CHROMIUM,
        "args": [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            format!("--user-data-dir={}", user_data_dir.display()),
            // The issuer is https://localhost:PORT and the server listens on IPv4 only.
            "--host-resolver-rules=MAP localhost 127.0.0.1",
        ],
    });
    let mut caps = serde_json::Map::new();
    caps.insert("acceptInsecureCerts".into(), Value::Bool(true));
    caps.insert("goog:chromeOptions".into(), options);
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    tokio::time::timeout(
        WAIT,
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver.url),
    )
    .await
    .expect("WebDriver session within the deadline")
    .expect("WebDriver session")
}

/// The claims of a JWT, unverified (the login tests verify signatures).
fn jwt_claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("JWT payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

#[tokio::test]
async fn chromium_signs_in_and_the_relying_party_gets_working_tokens() {
    let Some(driver_binary) = browser_or_skip() else {
        return;
    };
    let started = Instant::now();
    let server = TestServer::start().await;
    let (callback, mut callbacks) = relying_party().await;
    let spec = ClientSpec {
        redirect_uris: vec![callback.clone()],
        ..ClientSpec::confidential("browser-rp")
    };
    let secret = server.add_client(spec.clone()).await;
    let sub = server.add_user("carol", "chromium-pass-7", &[]).await;

    // Declared before the driver so it is removed after the browser is gone.
    let profile = tempfile::tempdir().expect("user data dir");
    let driver = Driver::start(&driver_binary);
    let browser = connect(&driver, profile.path()).await;
    let result = sign_in(
        &server,
        &browser,
        &spec,
        secret.as_deref(),
        &sub,
        &mut callbacks,
    )
    .await;
    // Quit the browser in any case; the driver guard cleans up if this fails too.
    let _ = tokio::time::timeout(WAIT, browser.close()).await;
    drop(driver);
    result.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("real-browser test took {:?}", started.elapsed());
}

/// The flow itself. Errors come back as text so that the caller can close the browser
/// before failing.
async fn sign_in(
    server: &TestServer,
    browser: &Client,
    spec: &ClientSpec,
    secret: Option<&str>,
    sub: &str,
    callbacks: &mut mpsc::UnboundedReceiver<String>,
) -> Result<(), String> {
    let (verifier, challenge) = pkce();
    let state = mgpass::crypto::random_token();
    let nonce = mgpass::crypto::random_token();
    let redirect = spec.redirect_uri();
    let url = authorize_url(
        server,
        &[
            ("client_id", spec.id),
            ("redirect_uri", &redirect),
            ("response_type", "code"),
            ("scope", "openid profile email"),
            ("state", &state),
            ("nonce", &nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    );
    let err = |what: &str| {
        let what = what.to_string();
        move |e: fantoccini::error::CmdError| format!("{what}: {e}")
    };

    browser.goto(&url).await.map_err(err("open /authorize"))?;
    let username = browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("username"))
        .await
        .map_err(err("login form"))?;
    username
        .send_keys("carol")
        .await
        .map_err(err("type username"))?;
    browser
        .find(Locator::Id("password"))
        .await
        .map_err(err("password field"))?
        .send_keys("chromium-pass-7")
        .await
        .map_err(err("type password"))?;
    let remember = browser
        .find(Locator::Id("remember"))
        .await
        .map_err(err("remember checkbox"))?;
    remember.click().await.map_err(err("tick remember"))?;
    if !remember
        .is_selected()
        .await
        .map_err(err("remember state"))?
    {
        return Err("the Remember me checkbox did not tick".into());
    }
    browser
        .find(Locator::Css("form button[type=submit]"))
        .await
        .map_err(err("submit button"))?
        .click()
        .await
        .map_err(err("submit"))?;

    // The relying party receives the redirect.
    let target = tokio::time::timeout(WAIT, callbacks.recv())
        .await
        .map_err(|_| format!("no request at the callback within {WAIT:?}"))?
        .ok_or("relying party stopped")?;
    let back = format!("http://127.0.0.1{target}");
    if let Some(error) = query_param(&back, "error") {
        return Err(format!(
            "authorization error at the callback: {error} ({back})"
        ));
    }
    if query_param(&back, "state").as_deref() != Some(state.as_str()) {
        return Err(format!("state not echoed: {back}"));
    }
    if query_param(&back, "iss").as_deref() != Some(server.base.as_str()) {
        return Err(format!("iss missing or wrong: {back}"));
    }
    let code = query_param(&back, "code").ok_or_else(|| format!("no code: {back}"))?;
    // The browser landed on the relying party's page.
    browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("done"))
        .await
        .map_err(err("browser at the callback page"))?;

    // Working tokens.
    let tokens = exchange(server, spec, secret, &code, &verifier).await;
    let access = tokens["access_token"].as_str().ok_or("no access token")?;
    let id_token = tokens["id_token"].as_str().ok_or("no ID token")?;
    let claims = jwt_claims(id_token);
    if claims["sub"] != sub || claims["nonce"] != nonce.as_str() {
        return Err(format!("ID token claims: {claims}"));
    }
    let resp = server
        .http()
        .get(server.url("/api/userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() != 200 {
        return Err(format!("userinfo: {}", resp.status()));
    }
    let info: Value = resp.json().await.map_err(|e| e.to_string())?;
    if info["sub"] != sub || info["preferred_username"] != "carol" {
        return Err(format!("userinfo claims: {info}"));
    }

    // "Remember me" made the session cookie persistent: back on the issuer's origin
    // (WebDriver lists the cookies of the current page), it has an expiry ~30 days out.
    browser
        .goto(&server.url("/.well-known/openid-configuration"))
        .await
        .map_err(err("open the issuer"))?;
    let cookies = browser
        .get_all_cookies()
        .await
        .map_err(err("read cookies"))?;
    let session = cookies
        .iter()
        .find(|c| c.name() == "mgpass_session")
        .ok_or_else(|| {
            let names: Vec<_> = cookies.iter().map(|c| c.name().to_string()).collect();
            format!("no mgpass_session cookie in the browser (have {names:?})")
        })?;
    let expires = session
        .expires_datetime()
        .ok_or("mgpass_session is a session cookie despite Remember me")?
        .unix_timestamp();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64;
    let days = (expires - now) as f64 / 86_400.0;
    if !(29.0..=30.1).contains(&days) {
        return Err(format!("mgpass_session expires in {days:.2} days, want 30"));
    }
    if session.secure() != Some(true) || session.http_only() != Some(true) {
        return Err(format!("mgpass_session attributes: {session:?}"));
    }
    Ok(())
}
