//! Global logout: RP-Initiated Logout, mgpass's own sign-out button, the CLI and the
//! admin endpoint all end every session and refresh token of the user, and every
//! relying app with a back-channel URI gets a valid logout token — even through
//! failures and restarts.

use crate::foundation::ServerProcess;
use crate::support::*;
use mgpass::admin::Command;
use mgpass::clock::Clock;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command as Proc, Stdio};

const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
const PASSWORD: &str = "correct-horse-7";

/// Two relying apps, each with its own back-channel receiver. `app-a` asks for `sid`
/// in its logout tokens, `app-b` does not.
struct Apps {
    a: ClientSpec,
    a_secret: String,
    ra: Receiver,
    b: ClientSpec,
    b_secret: String,
    rb: Receiver,
}

async fn two_apps(server: &TestServer) -> Apps {
    let ra = Receiver::start().await;
    let rb = Receiver::start().await;
    let a = ClientSpec {
        backchannel_logout_uri: Some(ra.uri()),
        backchannel_session_required: true,
        ..ClientSpec::confidential("app-a")
    };
    let b = ClientSpec {
        backchannel_logout_uri: Some(rb.uri()),
        backchannel_session_required: false,
        ..ClientSpec::confidential("app-b")
    };
    let a_secret = server.add_client(a.clone()).await.expect("secret");
    let b_secret = server.add_client(b.clone()).await.expect("secret");
    Apps {
        a,
        a_secret,
        ra,
        b,
        b_secret,
        rb,
    }
}

/// What a relying app holds after signing in.
struct Signed {
    spec: ClientSpec,
    secret: String,
    tokens: Value,
}

impl Signed {
    fn access(&self) -> &str {
        self.tokens["access_token"].as_str().expect("access token")
    }
    fn refresh(&self) -> &str {
        self.tokens["refresh_token"]
            .as_str()
            .expect("refresh token")
    }
    fn id_token(&self) -> &str {
        self.tokens["id_token"].as_str().expect("id token")
    }
}

/// Signs `username` in to both apps through one browser: the form for the first, SSO
/// for the second.
async fn sign_in_both(
    server: &TestServer,
    browser: &reqwest::Client,
    apps: &Apps,
    username: &str,
) -> (Signed, Signed) {
    let a = code_flow(
        server,
        browser,
        &apps.a,
        Some(&apps.a_secret),
        "openid profile",
        Some((username, PASSWORD)),
    )
    .await;
    let b = code_flow(
        server,
        browser,
        &apps.b,
        Some(&apps.b_secret),
        "openid profile",
        None,
    )
    .await;
    let a = Signed {
        spec: apps.a.clone(),
        secret: apps.a_secret.clone(),
        tokens: a,
    };
    let b = Signed {
        spec: apps.b.clone(),
        secret: apps.b_secret.clone(),
        tokens: b,
    };
    assert!(a.tokens["refresh_token"].is_string() && b.tokens["refresh_token"].is_string());
    (a, b)
}

async fn userinfo_status(server: &TestServer, access: &str) -> u16 {
    server
        .http()
        .get(server.url("/api/userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .expect("userinfo")
        .status()
        .as_u16()
}

async fn introspect(server: &TestServer, app: &Signed, token: &str) -> Value {
    let resp = server
        .http()
        .post(server.url("/api/introspect"))
        .basic_auth(app.spec.id, Some(&app.secret))
        .form(&[("token", token)])
        .send()
        .await
        .expect("introspect");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

async fn refresh(server: &TestServer, app: &Signed) -> (u16, Value) {
    let resp = token_request(
        server,
        &app.spec,
        Some(&app.secret),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", app.refresh()),
        ],
    )
    .await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Everything an app holds works: the baseline that makes the "after" checks mean
/// something. Does not rotate the refresh token (introspection only).
async fn assert_alive(server: &TestServer, app: &Signed) {
    assert_eq!(
        userinfo_status(server, app.access()).await,
        200,
        "{}",
        app.spec.id
    );
    assert_eq!(introspect(server, app, app.access()).await["active"], true);
    assert_eq!(introspect(server, app, app.refresh()).await["active"], true);
}

/// Everything an app held is dead, at once: the access token is still inside its
/// lifetime, yet userinfo refuses it and introspection calls it inactive; the refresh
/// token gets `invalid_grant`.
async fn assert_dead(server: &TestServer, app: &Signed) {
    let exp = verify_with_jwks(&server.jwks().await, app.access()).1["exp"]
        .as_i64()
        .expect("exp");
    assert!(
        exp > server.clock.now_ms() / 1000,
        "the JWT itself has not expired"
    );
    let resp = server
        .http()
        .get(server.url("/api/userinfo"))
        .bearer_auth(app.access())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "{}: userinfo after logout", app.spec.id);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.contains("invalid_token"), "{challenge}");
    assert_eq!(
        introspect(server, app, app.access()).await,
        json!({"active": false}),
        "{}: access token introspection",
        app.spec.id
    );
    assert_eq!(
        introspect(server, app, app.refresh()).await,
        json!({"active": false}),
        "{}: refresh token introspection",
        app.spec.id
    );
    let (status, body) = refresh(server, app).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{}: refresh",
        app.spec.id
    );
}

/// A user id as the store names it (the `sub` of the user's tokens).
fn user_id(sub: &str) -> mgpass::types::UserId {
    serde_json::from_value(json!(sub)).expect("user id")
}

/// The store half of the one transaction: no live session, every family revoked.
fn assert_store_logged_out(server: &TestServer, user: &str) {
    let app = server.app();
    let user_id = user_id(user);
    let now = server.clock.now_ms() / 1000;
    let sessions = app.store.sessions_of(&user_id, now).unwrap();
    assert!(sessions.is_empty(), "live sessions left: {sessions:?}");
    let families: Vec<_> = app
        .store
        .families()
        .unwrap()
        .into_iter()
        .filter(|f| f.user_id == user_id)
        .collect();
    assert!(!families.is_empty(), "the user had refresh families");
    assert!(
        families.iter().all(|f| f.revoked),
        "unrevoked families: {families:?}"
    );
}

fn authorize_for(server: &TestServer, spec: &ClientSpec, extra: &[(&str, &str)]) -> String {
    let (_, challenge) = pkce();
    let redirect = spec.redirect_uri();
    let mut params = vec![
        ("client_id", spec.id),
        ("redirect_uri", redirect.as_str()),
        ("response_type", "code"),
        ("scope", "openid"),
        ("state", "again"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    params.extend_from_slice(extra);
    authorize_url(server, &params)
}

/// The browser is signed out: `/authorize` shows the login form, `prompt=none` gets
/// `login_required`.
async fn assert_browser_signed_out(
    server: &TestServer,
    browser: &reqwest::Client,
    spec: &ClientSpec,
) {
    let resp = browser
        .get(authorize_for(server, spec, &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the login form, not a code");
    let html = resp.text().await.unwrap();
    assert!(
        hidden_field(&html, "auth_request").is_some(),
        "login form: {html}"
    );
    let resp = browser
        .get(authorize_for(server, spec, &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let loc = location(&resp);
    assert_eq!(
        query_param(&loc, "error").as_deref(),
        Some("login_required"),
        "{loc}"
    );
    assert!(query_param(&loc, "code").is_none());
}

/// The browser still has its session: `prompt=none` gets a code.
async fn assert_browser_signed_in(
    server: &TestServer,
    browser: &reqwest::Client,
    spec: &ClientSpec,
) {
    let resp = browser
        .get(authorize_for(server, spec, &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let loc = location(&resp);
    assert!(
        query_param(&loc, "code").is_some(),
        "still signed in: {loc}"
    );
}

/// What a logout token must say.
struct Expect<'a> {
    issuer: &'a str,
    client: &'a str,
    sub: &'a str,
    /// `Some` when the client registered `backchannel_logout_session_required`.
    sid: Sid<'a>,
}

/// The `sid` claim a logout token must carry.
#[derive(Clone, Copy)]
enum Sid<'a> {
    /// The client did not ask for it.
    Absent,
    Is(&'a str),
    /// Present, any value (checked by the caller).
    Any,
}

/// Checks one back-channel request claim by claim (Back-Channel Logout 1.0 §2.4,
/// §2.5); returns the claims.
fn check_logout_request(jwks: &Value, got: &Received, expect: &Expect) -> Value {
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/backchannel");
    assert_eq!(
        got.content_type.as_deref(),
        Some("application/x-www-form-urlencoded"),
        "form-encoded"
    );
    let token = got
        .logout_token()
        .unwrap_or_else(|| panic!("body is logout_token=…: {}", got.body));
    let (header, claims) = verify_with_jwks(jwks, &token);
    assert_eq!(header.get("typ"), Some(&json!("logout+jwt")), "{header:?}");
    assert_eq!(header.get("alg"), Some(&json!("ES256")));
    assert_eq!(claims["iss"], expect.issuer);
    let aud_ok = claims["aud"] == expect.client || claims["aud"] == json!([expect.client]);
    assert!(aud_ok, "aud {} should be {}", claims["aud"], expect.client);
    assert_eq!(claims["sub"], expect.sub);
    let iat = claims["iat"].as_i64().expect("iat");
    let exp = claims["exp"].as_i64().expect("exp");
    assert!(
        exp > iat && exp - iat <= 300,
        "short exp: iat {iat}, exp {exp}"
    );
    assert!(
        claims["jti"].as_str().is_some_and(|j| j.len() >= 16),
        "jti: {claims}"
    );
    assert_eq!(claims["events"], json!({ BACKCHANNEL_EVENT: {} }));
    assert!(claims.get("nonce").is_none(), "no nonce: {claims}");
    match expect.sid {
        Sid::Is(sid) => assert_eq!(claims["sid"], sid, "sid"),
        Sid::Any => assert!(claims["sid"].is_string(), "sid: {claims}"),
        Sid::Absent => assert!(claims.get("sid").is_none(), "no sid unless asked: {claims}"),
    }
    let mut names: Vec<&str> = claims
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    let mut allowed = vec!["aud", "events", "exp", "iat", "iss", "jti", "sub"];
    if !matches!(expect.sid, Sid::Absent) {
        allowed.push("sid");
    }
    allowed.sort_unstable();
    assert_eq!(names, allowed, "exactly the logout claims");
    claims
}

fn sid_of(jwks: &Value, id_token: &str) -> String {
    verify_with_jwks(jwks, id_token).1["sid"]
        .as_str()
        .expect("ID token sid")
        .to_string()
}

fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn clears_session_cookie(cookies: &[String]) -> bool {
    cookies
        .iter()
        .any(|c| c.starts_with("mgpass_session=;") && c.contains("Max-Age=0"))
}

fn logout_url(server: &TestServer, params: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(&server.url("/api/logout")).unwrap();
    url.query_pairs_mut().extend_pairs(params);
    url.into()
}

#[tokio::test]
async fn rp_initiated_logout_ends_everything_and_notifies_both_apps() {
    let server = TestServer::start().await;
    let apps = two_apps(&server).await;
    let sub = server.add_user("alice", PASSWORD, &[]).await;
    let (browser, jar) = server.browser_with_jar();
    let (a, b) = sign_in_both(&server, &browser, &apps, "alice").await;
    let old_cookie = jar_cookie(&jar, &server.base, "mgpass_session").expect("session cookie");
    assert_alive(&server, &a).await;
    assert_alive(&server, &b).await;
    let jwks = server.jwks().await;
    let sid = sid_of(&jwks, a.id_token());
    assert_eq!(sid, sid_of(&jwks, b.id_token()), "one SSO session");
    assert!(apps.ra.received().is_empty() && apps.rb.received().is_empty());

    let resp = browser
        .get(logout_url(
            &server,
            &[
                ("id_token_hint", a.id_token()),
                ("post_logout_redirect_uri", "https://app-a.example/bye"),
                ("state", "s-42"),
            ],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let loc = location(&resp);
    assert_eq!(loc, "https://app-a.example/bye?state=s-42");
    let cookies = set_cookies(&resp);
    assert!(clears_session_cookie(&cookies), "{cookies:?}");
    assert_eq!(
        jar_cookie(&jar, &server.base, "mgpass_session"),
        None,
        "the browser dropped it"
    );

    // Tokens die at once, without moving the clock.
    assert_dead(&server, &a).await;
    assert_dead(&server, &b).await;
    assert_store_logged_out(&server, &sub);
    assert_browser_signed_out(&server, &browser, &apps.a).await;

    // The old cookie value, replayed by hand, is worthless.
    let replay = server.http();
    let resp = replay
        .get(authorize_for(&server, &apps.b, &[("prompt", "none")]))
        .header("cookie", format!("mgpass_session={old_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        query_param(&location(&resp), "error").as_deref(),
        Some("login_required")
    );
    let resp = replay
        .get(server.url("/account"))
        .header("cookie", format!("mgpass_session={old_cookie}"))
        .send()
        .await
        .unwrap();
    assert!(resp.text().await.unwrap().contains("not signed in"));

    // Both apps are told, each with its own token; no retries were needed.
    let got_a = apps.ra.wait_accepted(1, || {}).await;
    let got_b = apps.rb.wait_accepted(1, || {}).await;
    let issuer = server.base.as_str();
    let claims_a = check_logout_request(
        &jwks,
        &got_a[0],
        &Expect {
            issuer,
            client: "app-a",
            sub: &sub,
            sid: Sid::Is(&sid),
        },
    );
    let claims_b = check_logout_request(
        &jwks,
        &got_b[0],
        &Expect {
            issuer,
            client: "app-b",
            sub: &sub,
            sid: Sid::Absent,
        },
    );
    assert_ne!(claims_a["jti"], claims_b["jti"]);
    let now = server.clock.now_ms() / 1000;
    assert!(
        claims_a["exp"].as_i64().unwrap() > now,
        "not expired on arrival"
    );
    // Exactly once each.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!((apps.ra.received().len(), apps.rb.received().len()), (1, 1));
    assert!(server.app().store.outbox_pending().unwrap().is_empty());
}

#[tokio::test]
async fn logout_is_one_transaction_over_every_session_of_the_user() {
    let server = TestServer::start().await;
    let apps = two_apps(&server).await;
    let sub = server.add_user("alice", PASSWORD, &[]).await;
    let bob = server.add_user("bob", PASSWORD, &[]).await;
    // Two browsers: two sessions, both signed in to both apps.
    let laptop = server.browser();
    let phone = server.browser();
    let (la, lb) = sign_in_both(&server, &laptop, &apps, "alice").await;
    let (pa, pb) = sign_in_both(&server, &phone, &apps, "alice").await;
    // Bob is not affected.
    let bobs = server.browser();
    let (ba, _) = sign_in_both(&server, &bobs, &apps, "bob").await;
    let jwks = server.jwks().await;
    let sids = [sid_of(&jwks, la.id_token()), sid_of(&jwks, pa.id_token())];
    assert_ne!(sids[0], sids[1]);
    let alice_id = user_id(&sub);
    let now = server.clock.now_ms() / 1000;
    assert_eq!(
        server
            .app()
            .store
            .sessions_of(&alice_id, now)
            .unwrap()
            .len(),
        2
    );

    let summary = server
        .admin(Command::UserLogout {
            user: "alice".into(),
        })
        .await
        .unwrap();
    assert_eq!(summary["logout"]["sessions_ended"], 2);
    assert_eq!(summary["logout"]["families_revoked"], 4);
    // app-a wants one token per session (sid); app-b one per user.
    assert_eq!(summary["logout"]["backchannel_queued"], 3);
    assert_store_logged_out(&server, &sub);
    for app in [&la, &lb, &pa, &pb] {
        assert_dead(&server, app).await;
    }
    assert_browser_signed_out(&server, &laptop, &apps.a).await;
    assert_browser_signed_out(&server, &phone, &apps.b).await;

    let got_a = apps.ra.wait_accepted(2, || {}).await;
    let got_b = apps.rb.wait_accepted(1, || {}).await;
    let issuer = server.base.as_str();
    let mut seen: Vec<String> = got_a
        .iter()
        .map(|r| {
            let sid = check_logout_request(
                &jwks,
                r,
                &Expect {
                    issuer,
                    client: "app-a",
                    sub: &sub,
                    sid: Sid::Any,
                },
            );
            sid["sid"].as_str().unwrap().to_string()
        })
        .collect::<Vec<_>>();
    seen.sort();
    let mut want = sids.to_vec();
    want.sort();
    assert_eq!(seen, want, "one token per session for app-a");
    check_logout_request(
        &jwks,
        &got_b[0],
        &Expect {
            issuer,
            client: "app-b",
            sub: &sub,
            sid: Sid::Absent,
        },
    );

    // Bob keeps everything.
    assert_alive(&server, &ba).await;
    assert_browser_signed_in(&server, &bobs, &apps.a).await;
    let bob_id = user_id(&bob);
    assert_eq!(
        server.app().store.sessions_of(&bob_id, now).unwrap().len(),
        1
    );
}

#[tokio::test]
async fn a_failing_receiver_gets_the_fourth_delivery() {
    let server = TestServer::start().await;
    let apps = two_apps(&server).await;
    let sub = server.add_user("alice", PASSWORD, &[]).await;
    let browser = server.browser();
    let (a, _b) = sign_in_both(&server, &browser, &apps, "alice").await;
    apps.ra.fail_next(3);
    let resp = browser
        .get(logout_url(&server, &[("id_token_hint", a.id_token())]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "signed-out page");
    // app-b is unaffected by app-a's failures.
    apps.rb.wait_accepted(1, || {}).await;
    let got = apps.ra.wait_accepted(1, || server.nudge_outbox()).await;
    let all = apps.ra.received();
    let statuses: Vec<u16> = all.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 500, 500, 200]);
    let jwks = server.jwks().await;
    let sid = sid_of(&jwks, a.id_token());
    let claims = check_logout_request(
        &jwks,
        &got[0],
        &Expect {
            issuer: &server.base,
            client: "app-a",
            sub: &sub,
            sid: Sid::Is(&sid),
        },
    );
    // Every attempt is the same notification (same jti), signed afresh.
    for r in &all {
        let (_, c) = verify_with_jwks(&jwks, &r.logout_token().unwrap());
        assert_eq!(c["jti"], claims["jti"]);
    }
    // The outbox records it delivered after four attempts, and nothing is left.
    let finished = poll_until(
        std::time::Duration::from_secs(5),
        || {},
        || {
            let f = server.app().store.outbox_finished().unwrap();
            f.into_iter()
                .find(|(_, _, item)| item.target == apps.ra.uri())
        },
    )
    .await
    .expect("recorded as finished");
    assert_eq!(finished.0, mgpass::store::Finished::Delivered);
    assert_eq!(finished.2.attempts, 4);
    assert!(server.app().store.outbox_pending().unwrap().is_empty());
}

#[tokio::test]
async fn a_pending_delivery_survives_a_restart() {
    let mut server = TestServer::start().await;
    let apps = two_apps(&server).await;
    let sub = server.add_user("alice", PASSWORD, &[]).await;
    let browser = server.browser();
    let (a, b) = sign_in_both(&server, &browser, &apps, "alice").await;
    apps.ra.set_down(true);
    apps.rb.set_status(500);
    server
        .admin(Command::UserLogout {
            user: "alice".into(),
        })
        .await
        .unwrap();
    // Both were tried and failed: the deliveries are pending.
    apps.ra.wait_received(1, || {}).await;
    apps.rb.wait_received(1, || {}).await;
    server.stop().await;
    let before = (apps.ra.received().len(), apps.rb.received().len());
    // On disk, with the server stopped: both deliveries are still queued, each tried.
    {
        let store = mgpass::store::Store::open(&server.dir.path().join("data").join("db"))
            .expect("the stopped server's store opens");
        let pending = store.outbox_pending().unwrap();
        assert_eq!(pending.len(), 2, "{pending:?}");
        assert!(
            pending
                .iter()
                .all(|i| i.attempts >= 1 && i.last_error.is_some())
        );
    }
    apps.ra.set_down(false);
    apps.rb.set_status(0);
    server.clock.advance_secs(2);
    // Nothing is delivered while the server is down.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!((apps.ra.received().len(), apps.rb.received().len()), before);
    server.restart().await;
    let got_a = apps.ra.wait_accepted(1, || server.nudge_outbox()).await;
    let got_b = apps.rb.wait_accepted(1, || server.nudge_outbox()).await;
    let jwks = server.jwks().await;
    let sid = sid_of(&jwks, a.id_token());
    let issuer = server.base.as_str();
    check_logout_request(
        &jwks,
        &got_a[0],
        &Expect {
            issuer,
            client: "app-a",
            sub: &sub,
            sid: Sid::Is(&sid),
        },
    );
    check_logout_request(
        &jwks,
        &got_b[0],
        &Expect {
            issuer,
            client: "app-b",
            sub: &sub,
            sid: Sid::Absent,
        },
    );
    // And the logout itself survived the restart.
    assert_store_logged_out(&server, &sub);
    assert_dead(&server, &a).await;
    assert_dead(&server, &b).await;
}

#[tokio::test]
async fn an_unregistered_post_logout_redirect_uri_is_not_followed() {
    let server = TestServer::start().await;
    let apps = two_apps(&server).await;
    let sub = server.add_user("alice", PASSWORD, &[]).await;
    let browser = server.browser();
    let (a, b) = sign_in_both(&server, &browser, &apps, "alice").await;
    for target in [
        "https://evil.example/bye",
        "https://app-a.example/bye/../steal",
        "https://app-a.example/bye?x=1",
        // Registered, but for the other client.
        "https://app-b.example/bye",
    ] {
        let resp = browser
            .get(logout_url(
                &server,
                &[
                    ("id_token_hint", a.id_token()),
                    ("post_logout_redirect_uri", target),
                    ("state", "s"),
                ],
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{target}");
        assert!(resp.headers().get("location").is_none(), "{target}");
        assert!(!clears_session_cookie(&set_cookies(&resp)), "{target}");
        let html = resp.text().await.unwrap();
        assert!(html.contains("not registered"), "{html}");
        assert!(
            !html.contains(target),
            "the page does not offer a link to it"
        );
    }
    // Without any client to check it against, a URI is not followed either.
    let resp = browser
        .get(logout_url(
            &server,
            &[("post_logout_redirect_uri", "https://app-a.example/bye")],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().get("location").is_none());
    // Nothing was logged out and nobody was told.
    assert_alive(&server, &a).await;
    assert_alive(&server, &b).await;
    assert_browser_signed_in(&server, &browser, &apps.a).await;
    let user_id = user_id(&sub);
    let now = server.clock.now_ms() / 1000;
    assert_eq!(
        server.app().store.sessions_of(&user_id, now).unwrap().len(),
        1
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(apps.ra.received().is_empty() && apps.rb.received().is_empty());
    assert!(server.app().store.outbox_pending().unwrap().is_empty());
}

#[tokio::test]
async fn a_request_not_tied_to_the_session_asks_first() {
    let server = TestServer::start().await;
    let apps = two_apps(&server).await;
    let sub = server.add_user("alice", PASSWORD, &[]).await;
    let (browser, jar) = server.browser_with_jar();
    let (a, b) = sign_in_both(&server, &browser, &apps, "alice").await;
    let session = jar_cookie(&jar, &server.base, "mgpass_session").unwrap();

    // A stray link (no id_token_hint): a confirmation page, nothing ended.
    let url = logout_url(
        &server,
        &[
            ("client_id", "app-a"),
            ("post_logout_redirect_uri", "https://app-a.example/bye"),
            ("state", "s-7"),
        ],
    );
    let resp = browser.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!clears_session_cookie(&set_cookies(&resp)));
    let html = resp.text().await.unwrap();
    let csrf = hidden_field(&html, "csrf").expect("csrf field");
    assert_eq!(hidden_field(&html, "confirm").as_deref(), Some("yes"));
    assert_alive(&server, &a).await;
    assert_browser_signed_in(&server, &browser, &apps.b).await;

    // An ID token of another session (Bob's) does not tie the request either.
    server.add_user("bob", PASSWORD, &[]).await;
    let bobs = server.browser();
    let (ba, _) = sign_in_both(&server, &bobs, &apps, "bob").await;
    let resp = browser
        .get(logout_url(&server, &[("id_token_hint", ba.id_token())]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("name=\"confirm\""));
    assert_alive(&server, &a).await;
    assert_alive(&server, &ba).await;

    let form = vec![
        ("csrf", csrf.clone()),
        ("confirm", "yes".to_string()),
        ("client_id", "app-a".to_string()),
        (
            "post_logout_redirect_uri",
            "https://app-a.example/bye".to_string(),
        ),
        ("state", "s-7".to_string()),
    ];
    // A cross-site POST carries the session cookie at most, never the csrf cookie.
    let forged = server
        .http()
        .post(server.url("/api/logout"))
        .header("cookie", format!("mgpass_session={session}"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(forged.headers().get("location").is_none());
    // A wrong csrf field with the right cookie is refused too.
    let mut wrong = form.clone();
    wrong[0].1 = mgpass::crypto::random_token();
    let resp = browser
        .post(server.url("/api/logout"))
        .form(&wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_alive(&server, &a).await;
    assert_alive(&server, &b).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(apps.ra.received().is_empty() && apps.rb.received().is_empty());

    // Confirming from the page logs out, and follows the registered URI with state.
    for (name, value) in &form {
        assert_eq!(
            hidden_field(&html, name).as_ref(),
            Some(value),
            "the page carries {name}"
        );
    }
    let resp = browser
        .post(server.url("/api/logout"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let loc = location(&resp);
    assert!(loc.starts_with("https://app-a.example/bye"), "{loc}");
    assert_eq!(query_param(&loc, "state").as_deref(), Some("s-7"));
    assert!(clears_session_cookie(&set_cookies(&resp)));
    assert_dead(&server, &a).await;
    assert_dead(&server, &b).await;
    assert_store_logged_out(&server, &sub);
    assert_browser_signed_out(&server, &browser, &apps.a).await;
    apps.ra.wait_accepted(1, || {}).await;
    apps.rb.wait_accepted(1, || {}).await;
    // Bob was not logged out by any of this.
    assert_alive(&server, &ba).await;
}

#[tokio::test]
async fn the_account_page_button_logs_out_everywhere() {
    let server = TestServer::start().await;
    let apps = two_apps(&server).await;
    let sub = server.add_user("alice", PASSWORD, &[]).await;
    let browser = server.browser();
    let (a, b) = sign_in_both(&server, &browser, &apps, "alice").await;
    let page = browser.get(server.url("/account")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("alice"), "{html}");
    assert!(html.contains("action=\"/api/logout\""), "{html}");
    let csrf = hidden_field(&html, "csrf").expect("csrf");
    let resp = browser
        .post(server.url("/api/logout"))
        .form(&[("csrf", csrf.as_str()), ("confirm", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(clears_session_cookie(&set_cookies(&resp)));
    assert!(resp.text().await.unwrap().contains("Signed out"));
    assert_dead(&server, &a).await;
    assert_dead(&server, &b).await;
    assert_store_logged_out(&server, &sub);
    let jwks = server.jwks().await;
    let sid = sid_of(&jwks, a.id_token());
    let issuer = server.base.as_str();
    let got_a = apps.ra.wait_accepted(1, || {}).await;
    check_logout_request(
        &jwks,
        &got_a[0],
        &Expect {
            issuer,
            client: "app-a",
            sub: &sub,
            sid: Sid::Is(&sid),
        },
    );
    let got_b = apps.rb.wait_accepted(1, || {}).await;
    check_logout_request(
        &jwks,
        &got_b[0],
        &Expect {
            issuer,
            client: "app-b",
            sub: &sub,
            sid: Sid::Absent,
        },
    );
    let page = browser.get(server.url("/account")).send().await.unwrap();
    assert!(page.text().await.unwrap().contains("not signed in"));
}

/// The support surfaces: how a logout is triggered.
#[derive(Debug, Clone, Copy)]
enum Surface {
    Cli,
    AdminEndpoint,
}

#[tokio::test]
async fn cli_and_admin_endpoint_logout_behave_the_same() {
    let server = TestServer::start().await;
    let apps = two_apps(&server).await;
    let sub = server.add_user("alice", PASSWORD, &[]).await;
    server.add_user("root", PASSWORD, &["mgpass:admin"]).await;
    server.add_user("eve", PASSWORD, &[]).await;
    let console = ClientSpec::confidential("console");
    let console_secret = server.add_client(console.clone()).await.unwrap();
    let admin_tokens = code_flow(
        &server,
        &server.browser(),
        &console,
        Some(&console_secret),
        "openid mgpass:admin",
        Some(("root", PASSWORD)),
    )
    .await;
    let admin_token = admin_tokens["access_token"].as_str().unwrap().to_string();
    assert!(
        admin_tokens["scope"]
            .as_str()
            .unwrap()
            .contains("mgpass:admin")
    );
    // Eve asks for the admin scope but lacks the role: her token is refused.
    let eve_tokens = code_flow(
        &server,
        &server.browser(),
        &console,
        Some(&console_secret),
        "openid mgpass:admin",
        Some(("eve", PASSWORD)),
    )
    .await;
    let eve_token = eve_tokens["access_token"].as_str().unwrap();
    let endpoint = server.url(&format!("/api/admin/users/{sub}/logout"));

    let jwks = server.jwks().await;
    let issuer = server.base.clone();
    let mut summaries = Vec::new();
    for (round, surface) in [Surface::AdminEndpoint, Surface::Cli, Surface::AdminEndpoint]
        .into_iter()
        .enumerate()
    {
        let browser = server.browser();
        let (a, b) = sign_in_both(&server, &browser, &apps, "alice").await;
        // Refusals first: they must change nothing.
        for token in [Some(eve_token), Some(a.access()), None] {
            let mut req = server.http().post(&endpoint);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let status = req.send().await.unwrap().status();
            let want = if token.is_some() { 403 } else { 401 };
            assert_eq!(status, want, "{surface:?} with {token:?}");
        }
        assert_alive(&server, &a).await;
        assert_browser_signed_in(&server, &browser, &apps.a).await;

        let summary = match surface {
            Surface::AdminEndpoint => {
                let resp = server
                    .http()
                    .post(&endpoint)
                    .bearer_auth(&admin_token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                resp.json::<Value>().await.unwrap()
            }
            Surface::Cli => {
                let out = server
                    .admin(Command::UserLogout {
                        user: "alice".into(),
                    })
                    .await
                    .unwrap();
                assert_eq!(out["user"], sub.as_str());
                out["logout"].clone()
            }
        };
        summaries.push(summary);
        assert_dead(&server, &a).await;
        assert_dead(&server, &b).await;
        assert_store_logged_out(&server, &sub);
        assert_browser_signed_out(&server, &browser, &apps.b).await;
        let sid = sid_of(&jwks, a.id_token());
        let got_a = apps.ra.wait_accepted(round + 1, || {}).await;
        let got_b = apps.rb.wait_accepted(round + 1, || {}).await;
        check_logout_request(
            &jwks,
            &got_a[round],
            &Expect {
                issuer: &issuer,
                client: "app-a",
                sub: &sub,
                sid: Sid::Is(&sid),
            },
        );
        check_logout_request(
            &jwks,
            &got_b[round],
            &Expect {
                issuer: &issuer,
                client: "app-b",
                sub: &sub,
                sid: Sid::Absent,
            },
        );
    }
    assert_eq!(
        summaries[0], summaries[1],
        "CLI and endpoint report the same"
    );
    assert_eq!(summaries[1], summaries[2]);
    assert_eq!(
        summaries[0],
        json!({"sessions_ended": 1, "families_revoked": 2, "backchannel_queued": 2})
    );
    // The admin's own session was never touched.
    let resp = server
        .http()
        .get(server.url("/api/admin/whoami"))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Unknown users are a 404, not a silent success.
    let resp = server
        .http()
        .post(server.url("/api/admin/users/usr_nobody/logout"))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let err = server
        .admin(Command::UserLogout {
            user: "nobody".into(),
        })
        .await;
    assert!(err.is_err());
}

// ---------------------------------------------------------------------------------------
// The real binary: CLI over the admin socket, and `kill -9` with a delivery pending.

fn mgpass() -> Proc {
    let mut p = Proc::new(env!("CARGO_BIN_EXE_mgpass"));
    p.env_remove("MGPASS_CONFIG").env("RUST_LOG", "warn");
    p
}

fn spawn_serve(config: &Path) -> std::process::Child {
    mgpass()
        .arg("--config")
        .arg(config)
        .arg("serve")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// `mgpass --json --config CONFIG args…`: exit code and stdout.
fn run_cli(config: &Path, args: &[&str]) -> (i32, String) {
    let out = mgpass()
        .arg("--config")
        .arg(config)
        .arg("--json")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A server process with fast back-channel retries (real clock).
fn spawn_process() -> ServerProcess {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "issuer = \"https://localhost:{port}\"\nlisten = \"127.0.0.1:{port}\"\n\
             [login]\nargon2_memory_kib = 64\nargon2_iterations = 1\n\
             [logout]\nbackchannel_retry_base = \"100ms\"\nbackchannel_timeout = \"2s\"\n"
        ),
    )
    .unwrap();
    let mut p = ServerProcess {
        child: spawn_serve(&config),
        config,
        dir,
        port,
    };
    p.wait_ready();
    p
}

/// Signs alice in to `app-k` on a server process through the login form; returns the
/// PKCE verifier and the response to the form POST.
async fn process_login(browser: &reqwest::Client, base: &str) -> (String, reqwest::Response) {
    let (verifier, challenge) = pkce();
    let mut auth = url::Url::parse(&format!("{base}/authorize")).unwrap();
    auth.query_pairs_mut().extend_pairs([
        ("client_id", "app-k"),
        ("redirect_uri", "https://app-k.example/cb"),
        ("response_type", "code"),
        ("scope", "openid"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]);
    let page = browser
        .get(auth.as_str())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form = [
        ("auth_request", hidden_field(&page, "auth_request").unwrap()),
        ("csrf", hidden_field(&page, "csrf").unwrap()),
        ("username", "alice".to_string()),
        ("password", PASSWORD.to_string()),
    ];
    let resp = browser
        .post(format!("{base}/login"))
        .form(&form)
        .send()
        .await
        .unwrap();
    (verifier, resp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_a_delivery_pending_then_restart_delivers_it() {
    let receiver = Receiver::start().await;
    receiver.set_status(500);
    let mut process = spawn_process();
    let config = process.config.clone();
    let backchannel = receiver.uri();
    let (code, out) = run_cli(
        &config,
        &[
            "client",
            "add",
            "--id",
            "app-k",
            "--secret",
            "app-k-secret-0123456789",
            "--first-party",
            "--redirect-uri",
            "https://app-k.example/cb",
            "--backchannel-logout-uri",
            &backchannel,
            "--backchannel-logout-session-required",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = run_cli(
        &config,
        &["user", "add", "--username", "alice", "--password", PASSWORD],
    );
    assert_eq!(code, 0, "{out}");
    let sub = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Sign in as a browser over TLS and redeem the code.
    let port = process.port;
    let base = format!("https://localhost:{port}");
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let cert = process.dir.path().join("data/tls-cert.pem");
    let browser = client_builder(&cert, addr)
        .cookie_store(true)
        .build()
        .unwrap();
    let http = client_builder(&cert, addr).build().unwrap();
    let (verifier, resp) = process_login(&browser, &base).await;
    assert_eq!(resp.status(), 302);
    let code = query_param(&location(&resp), "code").expect("code");
    let tokens: Value = http
        .post(format!("{base}/api/token"))
        .basic_auth("app-k", Some("app-k-secret-0123456789"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", verifier.as_str()),
            ("redirect_uri", "https://app-k.example/cb"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refresh_token = tokens["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_string();
    let jwks: Value = http
        .get(format!("{base}/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sid = sid_of(&jwks, tokens["id_token"].as_str().unwrap());

    // The real CLI, through the running server's admin socket.
    let (code, out) = run_cli(&config, &["user", "logout", "alice"]);
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["logout"],
        json!({"sessions_ended": 1, "families_revoked": 1, "backchannel_queued": 1})
    );
    // The receiver fails the first attempt; kill -9 while the retry is pending.
    receiver.wait_received(1, || {}).await;
    process.child.kill().unwrap();
    process.child.wait().unwrap();
    let tried = receiver.received().len();
    assert!(receiver.accepted().is_empty());

    receiver.set_status(0);
    // Remove the dead server's socket so readiness means the new server is up.
    let _ = std::fs::remove_file(process.dir.path().join("data/admin.sock"));
    process.child = spawn_serve(&config);
    process.wait_ready();
    let got = receiver.wait_accepted(1, || {}).await;
    assert!(receiver.received().len() > tried);
    check_logout_request(
        &jwks,
        &got[0],
        &Expect {
            issuer: &base,
            client: "app-k",
            sub: &sub,
            sid: Sid::Is(&sid),
        },
    );
    // The logout itself survived the kill: the refresh token is dead, the access token
    // too.
    let resp = http
        .post(format!("{base}/api/token"))
        .basic_auth("app-k", Some("app-k-secret-0123456789"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    let resp = http
        .get(format!("{base}/api/userinfo"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // Delivered once: no more attempts after success.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(receiver.accepted().len(), 1);

    // The CLI with the server stopped writes the same durable outbox; the next start
    // delivers it.
    let browser = client_builder(&cert, addr)
        .cookie_store(true)
        .build()
        .unwrap();
    let (_, resp) = process_login(&browser, &base).await;
    assert_eq!(resp.status(), 302);
    assert_eq!(process.terminate(), Some(0));
    let (code, out) = run_cli(&config, &["user", "logout", "alice"]);
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["logout"]["sessions_ended"], 1);
    assert_eq!(v["logout"]["backchannel_queued"], 1);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(receiver.accepted().len(), 1, "no server, no delivery");
    process.child = spawn_serve(&config);
    process.wait_ready();
    let got = receiver.wait_accepted(2, || {}).await;
    let claims = check_logout_request(
        &jwks,
        &got[1],
        &Expect {
            issuer: &base,
            client: "app-k",
            sub: &sub,
            sid: Sid::Any,
        },
    );
    assert_ne!(claims["sid"], sid.as_str(), "the second session's sid");
    assert_eq!(process.terminate(), Some(0));
}

/// An RP may send the logout request as a cross-site form POST (RP-Initiated Logout 1.0
/// §2). The browser then sends no `SameSite=Lax` cookie, so the request cannot be tied
/// to the session: it must not be answered with a redirect that tells the RP the user
/// is signed out while the session lives on. The user is asked instead, and confirming
/// from mgpass's own page (same-site, cookies sent) logs out.
#[tokio::test]
async fn a_cross_site_post_without_cookies_asks_instead_of_claiming_success() {
    let server = TestServer::start().await;
    let apps = two_apps(&server).await;
    let sub = server.add_user("alice", PASSWORD, &[]).await;
    let (browser, jar) = server.browser_with_jar();
    let (a, b) = sign_in_both(&server, &browser, &apps, "alice").await;
    let params = [
        ("id_token_hint", a.id_token()),
        ("post_logout_redirect_uri", "https://app-a.example/bye"),
        ("state", "s-9"),
    ];
    // What the browser sends for the RP's cross-site form: no cookies at all.
    let resp = server
        .http()
        .post(server.url("/api/logout"))
        .form(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "not a redirect back to the RP: {}",
        location(&resp)
    );
    assert!(resp.headers().get("location").is_none());
    let cookies = set_cookies(&resp);
    let html = resp.text().await.unwrap();
    assert_eq!(
        hidden_field(&html, "confirm").as_deref(),
        Some("yes"),
        "{html}"
    );
    assert_alive(&server, &a).await;
    // The browser keeps the csrf cookie the page set, then confirms same-site.
    let base = url::Url::parse(&server.base).unwrap();
    for c in &cookies {
        jar.add_cookie_str(c, &base);
    }
    let form: Vec<(&str, String)> = [
        "csrf",
        "confirm",
        "client_id",
        "post_logout_redirect_uri",
        "state",
    ]
    .into_iter()
    .map(|k| {
        (
            k,
            hidden_field(&html, k).unwrap_or_else(|| panic!("field {k}: {html}")),
        )
    })
    .collect();
    let resp = browser
        .post(server.url("/api/logout"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let loc = location(&resp);
    assert!(loc.starts_with("https://app-a.example/bye"), "{loc}");
    assert_eq!(query_param(&loc, "state").as_deref(), Some("s-9"));
    assert_dead(&server, &a).await;
    assert_dead(&server, &b).await;
    assert_store_logged_out(&server, &sub);
    apps.ra.wait_accepted(1, || {}).await;
    apps.rb.wait_accepted(1, || {}).await;
    // Once the session is gone, the same POST simply goes back to the RP.
    let resp = server
        .http()
        .post(server.url("/api/logout"))
        .form(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert!(location(&resp).starts_with("https://app-a.example/bye"));
}

/// With `session.cookie_domain` configured, the cookie is cleared on that domain (a
/// `Set-Cookie` without it would leave the domain cookie in place).
#[tokio::test]
async fn the_session_cookie_is_cleared_on_the_configured_domain() {
    let server =
        TestServer::start_with(|c| c.session.cookie_domain = Some("localhost".into())).await;
    let apps = two_apps(&server).await;
    server.add_user("alice", PASSWORD, &[]).await;
    let browser = server.browser();
    let (a, _) = sign_in_both(&server, &browser, &apps, "alice").await;
    let resp = browser
        .get(logout_url(&server, &[("id_token_hint", a.id_token())]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookies = set_cookies(&resp);
    assert!(
        cookies.iter().any(|c| c.starts_with("mgpass_session=;")
            && c.contains("Max-Age=0")
            && c.contains("Domain=localhost")),
        "{cookies:?}"
    );
    assert_browser_signed_out(&server, &browser, &apps.b).await;
}

/// RP-Initiated Logout 1.0 §2: an expired ID token still identifies the session. A
/// forged one does not.
#[tokio::test]
async fn an_expired_id_token_hint_still_ties_the_request_and_a_forged_one_is_refused() {
    let server = TestServer::start().await;
    let apps = two_apps(&server).await;
    let sub = server.add_user("alice", PASSWORD, &[]).await;
    let browser = server.browser();
    let (a, _b) = sign_in_both(&server, &browser, &apps, "alice").await;
    // A tampered hint: 400, nothing ends.
    let mut forged = a.id_token().to_string();
    forged.pop();
    forged.push(if a.id_token().ends_with('A') {
        'B'
    } else {
        'A'
    });
    let resp = browser
        .get(logout_url(&server, &[("id_token_hint", &forged)]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_browser_signed_in(&server, &browser, &apps.a).await;
    // An hour later the ID token has expired; the session (30 days) has not.
    server.clock.advance_secs(3600);
    let resp = browser
        .get(logout_url(
            &server,
            &[
                ("id_token_hint", a.id_token()),
                ("post_logout_redirect_uri", "https://app-a.example/bye"),
            ],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(location(&resp), "https://app-a.example/bye");
    assert_store_logged_out(&server, &sub);
    assert_browser_signed_out(&server, &browser, &apps.a).await;
    apps.ra.wait_accepted(1, || {}).await;
    apps.rb.wait_accepted(1, || {}).await;
}

/// Refreshes racing a logout: whatever they managed to get before the logout's
/// transaction, nothing they hold works after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_racing_a_logout_leave_nothing_alive() {
    let server = TestServer::start().await;
    let apps = two_apps(&server).await;
    let sub = server.add_user("alice", PASSWORD, &[]).await;
    let browser = server.browser();
    let (a, b) = sign_in_both(&server, &browser, &apps, "alice").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    for app in [a, b] {
        let (server_http, url, stop) = (server.http(), server.url("/api/token"), stop.clone());
        loops.push(tokio::spawn(async move {
            // Rotate as fast as possible; keep every token set ever issued.
            let mut held = vec![app.tokens.clone()];
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let current = held.last().unwrap()["refresh_token"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let resp = server_http
                    .post(&url)
                    .basic_auth(app.spec.id, Some(&app.secret))
                    .form(&[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", current.as_str()),
                    ])
                    .send()
                    .await
                    .unwrap();
                if resp.status() != 200 {
                    break;
                }
                held.push(resp.json::<Value>().await.unwrap());
            }
            (app, held)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    server
        .admin(Command::UserLogout {
            user: "alice".into(),
        })
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for task in loops {
        let (app, held) = task.await.unwrap();
        assert!(held.len() > 1, "the loop refreshed before the logout");
        for tokens in held {
            let signed = Signed {
                spec: app.spec.clone(),
                secret: app.secret.clone(),
                tokens,
            };
            assert_dead(&server, &signed).await;
        }
    }
    assert_store_logged_out(&server, &sub);
}
