//! Login and tokens: the authorization code flow with PKCE, the token endpoint,
//! userinfo, revocation, introspection and the admin scope.

use crate::support::*;
use openidconnect::core::{CoreClient, CoreProviderMetadata, CoreResponseType};
use openidconnect::{
    AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};

/// The whole flow as a standard relying party does it, with the `openidconnect` crate:
/// discovery, authorize with PKCE and nonce, the login form, code exchange, ID token
/// verification against JWKS, userinfo.
async fn relying_party_flow(public: bool) {
    let server = TestServer::start().await;
    let spec = if public {
        ClientSpec::public("rp-public")
    } else {
        ClientSpec::confidential("rp-conf")
    };
    let secret = server.add_client(spec.clone()).await;
    let sub = server.add_user("alice", "wonderland-42", &[]).await;
    let http = oidc_http(server.http());
    let metadata =
        CoreProviderMetadata::discover_async(IssuerUrl::new(server.base.clone()).unwrap(), &http)
            .await
            .unwrap();
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(spec.id.into()),
        secret.map(ClientSecret::new),
    )
    .set_redirect_uri(RedirectUrl::new(spec.redirect_uri()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = client
        .authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge)
        .url();
    let browser = server.browser();
    let resp = submit_login(
        &browser,
        &server,
        url.as_str(),
        "alice",
        "wonderland-42",
        false,
    )
    .await;
    assert_eq!(resp.status(), 302);
    let back = location(&resp);
    assert_eq!(
        query_param(&back, "state").as_deref(),
        Some(state.secret().as_str())
    );
    assert_eq!(
        query_param(&back, "iss").as_deref(),
        Some(server.base.as_str())
    );
    let code = query_param(&back, "code").unwrap();
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("code exchange");
    let id_token = tokens.id_token().expect("id token");
    let claims = id_token
        .claims(&client.id_token_verifier(), &nonce)
        .expect("ID token verifies against JWKS with the nonce");
    assert_eq!(claims.subject().as_str(), sub);
    assert!(claims.auth_time().is_some());
    let info: openidconnect::core::CoreUserInfoClaims = client
        .user_info(tokens.access_token().clone(), None)
        .unwrap()
        .request_async(&http)
        .await
        .expect("userinfo");
    assert_eq!(info.preferred_username().map(|u| u.as_str()), Some("alice"));
    assert_eq!(info.email().map(|e| e.as_str()), Some("alice@example.com"));
    // First-party clients get a refresh token.
    assert!(tokens.refresh_token().is_some());
}

#[tokio::test]
async fn confidential_client_full_flow() {
    relying_party_flow(false).await;
}

#[tokio::test]
async fn public_client_full_flow() {
    relying_party_flow(true).await;
}

#[tokio::test]
async fn sso_issues_a_code_without_the_form() {
    let server = TestServer::start().await;
    let spec = ClientSpec::confidential("sso");
    let secret = server.add_client(spec.clone()).await;
    server.add_user("bob", "builder-123", &[]).await;
    let browser = server.browser();
    let first = code_flow(
        &server,
        &browser,
        &spec,
        secret.as_deref(),
        "openid",
        Some(("bob", "builder-123")),
    )
    .await;
    assert!(first["access_token"].is_string());
    let second = code_flow(&server, &browser, &spec, secret.as_deref(), "openid", None).await;
    assert!(second["id_token"].is_string());
}

// ---------------------------------------------------------------------------------------
// Error paths, tokens, sessions, consent, brute force. Each test starts its own server.

use mgpass::clock::Clock;
use serde_json::{Value, json};
use std::time::Duration;

const PW: &str = "wonderland-42";
const DAY: i64 = 24 * 3600;

/// A server with one first-party confidential client `app` and the user `alice`.
async fn setup() -> (TestServer, ClientSpec, String, String) {
    setup_with(|_| {}).await
}

async fn setup_with(
    adjust: impl FnOnce(&mut mgpass::config::Config),
) -> (TestServer, ClientSpec, String, String) {
    let server = TestServer::start_with(adjust).await;
    let spec = ClientSpec::confidential("app");
    let secret = server.add_client(spec.clone()).await.expect("secret");
    let sub = server.add_user("alice", PW, &[]).await;
    (server, spec, secret, sub)
}

fn now(server: &TestServer) -> i64 {
    server.clock.now()
}

/// Asserts a redirect back to the client carrying `error` and the request's `state`.
fn assert_redirected_error(resp: &reqwest::Response, client: &ClientSpec, error: &str) {
    assert_eq!(
        resp.status(),
        302,
        "an error after the redirect URI is trusted redirects"
    );
    let loc = location(resp);
    assert!(loc.starts_with(&client.redirect_uri()), "{loc}");
    assert_eq!(query_param(&loc, "error").as_deref(), Some(error), "{loc}");
    assert_eq!(query_param(&loc, "state").as_deref(), Some("st"), "{loc}");
    assert!(query_param(&loc, "code").is_none(), "{loc}");
}

/// Asserts the HTML error page of an untrusted `/authorize` request: 400, no redirect.
async fn assert_error_page(resp: reqwest::Response, needle: &str) {
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().get("location").is_none(), "never redirects");
    assert!(header(&resp, "content-type").starts_with("text/html"));
    let html = resp.text().await.unwrap();
    assert!(html.contains(needle), "{html}");
}

/// Asserts a `401` with `WWW-Authenticate: Bearer ... error="invalid_token"`.
fn assert_invalid_token(resp: &reqwest::Response) {
    assert_eq!(resp.status(), 401);
    let challenge = header(resp, "www-authenticate");
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
}

#[tokio::test]
async fn wrong_pkce_verifier_is_invalid_grant() {
    let (server, spec, secret, _) = setup().await;
    let browser = server.browser();
    let (code, verifier) = get_code(&server, &browser, &spec, "openid", Some(("alice", PW))).await;
    let (other, _) = pkce();
    let resp = exchange_raw(&server, &spec, Some(&secret), &code, &other).await;
    let body = expect_oauth_error(resp, 400, "invalid_grant").await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("code_verifier")
    );
    // A verifier that is not even RFC 7636 syntax is refused the same way.
    let resp = exchange_raw(&server, &spec, Some(&secret), &code, "short").await;
    expect_oauth_error(resp, 400, "invalid_grant").await;
    // The right verifier still redeems the (unused) code.
    let resp = exchange_raw(&server, &spec, Some(&secret), &code, &verifier).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn plain_or_missing_code_challenge_is_redirected_as_invalid_request() {
    let (server, spec, _, _) = setup().await;
    let http = server.http();
    for extra in [
        vec![("code_challenge_method", "plain")],
        vec![("code_challenge_method", "")],
        vec![("code_challenge", "")],
        vec![("code_challenge", ""), ("code_challenge_method", "")],
    ] {
        let (url, _) = auth_request(&server, &spec, "openid", &extra);
        let resp = http.get(&url).send().await.unwrap();
        assert_redirected_error(&resp, &spec, "invalid_request");
        assert_eq!(
            query_param(&location(&resp), "iss").as_deref(),
            Some(server.base.as_str())
        );
    }
}

#[tokio::test]
async fn replayed_code_is_refused_and_revokes_what_it_issued() {
    let (server, spec, secret, _) = setup().await;
    let browser = server.browser();
    let (code, verifier) = get_code(&server, &browser, &spec, "openid", Some(("alice", PW))).await;
    let first = exchange(&server, &spec, Some(&secret), &code, &verifier).await;
    let access = first["access_token"].as_str().unwrap();
    let refresh = first["refresh_token"].as_str().unwrap();
    assert_eq!(
        bearer_get(&server, "/api/userinfo", Some(access))
            .await
            .status(),
        200
    );

    let replay = exchange_raw(&server, &spec, Some(&secret), &code, &verifier).await;
    expect_oauth_error(replay, 400, "invalid_grant").await;

    assert_invalid_token(&bearer_get(&server, "/api/userinfo", Some(access)).await);
    let resp = refresh_grant(&server, &spec, Some(&secret), refresh, None).await;
    expect_oauth_error(resp, 400, "invalid_grant").await;
    assert_eq!(
        introspect(&server, &spec, &secret, access).await,
        json!({"active": false})
    );
    assert_eq!(
        introspect(&server, &spec, &secret, refresh).await,
        json!({"active": false})
    );
}

#[tokio::test]
async fn code_expires_after_60_seconds() {
    let (server, spec, secret, _) = setup().await;
    let browser = server.browser();
    let (code, verifier) = get_code(&server, &browser, &spec, "openid", Some(("alice", PW))).await;
    server.clock.advance_secs(61);
    let resp = exchange_raw(&server, &spec, Some(&secret), &code, &verifier).await;
    expect_oauth_error(resp, 400, "invalid_grant").await;
}

#[tokio::test]
async fn code_is_bound_to_redirect_uri_and_client() {
    let (server, spec, secret, _) = setup().await;
    let other = ClientSpec::confidential("other");
    let other_secret = server.add_client(other.clone()).await.unwrap();
    let browser = server.browser();
    let (code, verifier) = get_code(&server, &browser, &spec, "openid", Some(("alice", PW))).await;
    let resp = token_request(
        &server,
        &spec,
        Some(&secret),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &verifier),
            ("redirect_uri", "https://app.example/other"),
        ],
    )
    .await;
    expect_oauth_error(resp, 400, "invalid_grant").await;
    // Another client cannot redeem it.
    let resp = token_request(
        &server,
        &other,
        Some(&other_secret),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &verifier),
            ("redirect_uri", &spec.redirect_uri()),
        ],
    )
    .await;
    expect_oauth_error(resp, 400, "invalid_grant").await;
    // Neither attempt used the code up.
    assert_eq!(
        exchange_raw(&server, &spec, Some(&secret), &code, &verifier)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn untrusted_client_or_redirect_uri_gets_a_page_not_a_redirect() {
    let (server, spec, _, _) = setup().await;
    let http = server.http();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("redirect_uri", "https://evil.example/callback")],
            "not registered",
        ),
        (
            vec![("redirect_uri", "https://app.example/callback/")],
            "not registered",
        ),
        (
            vec![("redirect_uri", "https://app.example/callback?x=1")],
            "not registered",
        ),
        (vec![("redirect_uri", "")], "redirect_uri is missing"),
        (vec![("client_id", "nobody")], "unknown client_id"),
        (vec![("client_id", "")], "client_id is missing"),
        // Even a bad response_type is not reported to an untrusted URI.
        (
            vec![
                ("redirect_uri", "https://evil.example/cb"),
                ("response_type", "token"),
            ],
            "not registered",
        ),
    ];
    for (extra, needle) in cases {
        let (url, _) = auth_request(&server, &spec, "openid", &extra);
        assert_error_page(http.get(&url).send().await.unwrap(), needle).await;
    }
}

#[tokio::test]
async fn unknown_scope_is_redirected_as_invalid_scope() {
    let (server, spec, _, _) = setup().await;
    let (url, _) = auth_request(&server, &spec, "openid wat", &[]);
    let resp = server.http().get(&url).send().await.unwrap();
    assert_redirected_error(&resp, &spec, "invalid_scope");
}

#[tokio::test]
async fn response_type_token_is_unsupported() {
    let (server, spec, _, _) = setup().await;
    for rt in ["token", "id_token", "code id_token"] {
        let (url, _) = auth_request(&server, &spec, "openid", &[("response_type", rt)]);
        let resp = server.http().get(&url).send().await.unwrap();
        assert_redirected_error(&resp, &spec, "unsupported_response_type");
    }
}

#[tokio::test]
async fn wrong_client_secret_is_401_invalid_client() {
    let (server, spec, secret, _) = setup().await;
    let browser = server.browser();
    let (code, verifier) = get_code(&server, &browser, &spec, "openid", Some(("alice", PW))).await;
    let grant = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("code_verifier", verifier.as_str()),
        ("redirect_uri", "https://app.example/callback"),
    ];
    // client_secret_basic with a wrong secret: 401 with a Basic challenge.
    let resp = token_request(&server, &spec, Some("not-the-secret"), &grant).await;
    let challenge = header(&resp, "www-authenticate");
    expect_oauth_error(resp, 401, "invalid_client").await;
    assert!(challenge.starts_with("Basic"), "{challenge:?}");
    // An unknown client over Basic: the same.
    let ghost = ClientSpec::confidential("ghost");
    let resp = token_request(&server, &ghost, Some("x"), &grant).await;
    assert!(header(&resp, "www-authenticate").starts_with("Basic"));
    expect_oauth_error(resp, 401, "invalid_client").await;
    // client_secret_post with a wrong secret: 401 without a challenge.
    let mut form = grant.to_vec();
    form.extend([("client_id", "app"), ("client_secret", "not-the-secret")]);
    let resp = server
        .http()
        .post(server.url("/api/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("www-authenticate").is_none());
    expect_oauth_error(resp, 401, "invalid_client").await;
    // A confidential client that sends no secret at all.
    let mut form = grant.to_vec();
    form.push(("client_id", "app"));
    let resp = server
        .http()
        .post(server.url("/api/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    expect_oauth_error(resp, 401, "invalid_client").await;
    // client_secret_post with the right secret works.
    let mut form = grant.to_vec();
    form.extend([("client_id", "app"), ("client_secret", secret.as_str())]);
    let resp = server
        .http()
        .post(server.url("/api/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(body["access_token"].is_string());
}

#[tokio::test]
async fn token_responses_are_not_cacheable() {
    let (server, spec, secret, _) = setup().await;
    let browser = server.browser();
    let (code, verifier) = get_code(&server, &browser, &spec, "openid", Some(("alice", PW))).await;
    let resp = exchange_raw(&server, &spec, Some(&secret), &code, &verifier).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "cache-control"), "no-store");
    assert_eq!(header(&resp, "pragma"), "no-cache");
    assert!(header(&resp, "content-type").starts_with("application/json"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600);
    assert_eq!(body["scope"], "openid");
    let refreshed = refresh_grant(
        &server,
        &spec,
        Some(&secret),
        body["refresh_token"].as_str().unwrap(),
        None,
    )
    .await;
    assert_eq!(refreshed.status(), 200);
    assert_eq!(header(&refreshed, "cache-control"), "no-store");
}

#[tokio::test]
async fn refresh_reuse_revokes_the_whole_family() {
    let (server, spec, secret, _) = setup().await;
    let browser = server.browser();
    let tokens = code_flow(
        &server,
        &browser,
        &spec,
        Some(&secret),
        "openid",
        Some(("alice", PW)),
    )
    .await;
    let a = tokens["refresh_token"].as_str().unwrap();
    let resp = refresh_grant(&server, &spec, Some(&secret), a, None).await;
    assert_eq!(resp.status(), 200);
    let rotated: Value = resp.json().await.unwrap();
    let b = rotated["refresh_token"].as_str().unwrap();
    assert_ne!(a, b, "rotated on every use");
    assert!(rotated["id_token"].is_string());

    let resp = refresh_grant(&server, &spec, Some(&secret), a, None).await;
    expect_oauth_error(resp, 400, "invalid_grant").await;
    let resp = refresh_grant(&server, &spec, Some(&secret), b, None).await;
    expect_oauth_error(resp, 400, "invalid_grant").await;
    assert_eq!(
        introspect(&server, &spec, &secret, b).await,
        json!({"active": false})
    );
}

#[tokio::test]
async fn refresh_token_of_another_client_is_refused() {
    let (server, spec, secret, _) = setup().await;
    let other = ClientSpec::confidential("other");
    let other_secret = server.add_client(other.clone()).await.unwrap();
    let browser = server.browser();
    let tokens = code_flow(
        &server,
        &browser,
        &spec,
        Some(&secret),
        "openid",
        Some(("alice", PW)),
    )
    .await;
    let a = tokens["refresh_token"].as_str().unwrap();
    let resp = refresh_grant(&server, &other, Some(&other_secret), a, None).await;
    expect_oauth_error(resp, 400, "invalid_grant").await;
    // Still good for its own client.
    assert_eq!(
        refresh_grant(&server, &spec, Some(&secret), a, None)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn refresh_grace_accepts_a_just_rotated_token_once() {
    let (server, spec, secret, _) =
        setup_with(|c| c.tokens.refresh_grace = Duration::from_secs(30)).await;
    let browser = server.browser();
    let tokens = code_flow(
        &server,
        &browser,
        &spec,
        Some(&secret),
        "openid",
        Some(("alice", PW)),
    )
    .await;
    let a = tokens["refresh_token"].as_str().unwrap().to_string();
    let rotate = |t: String| {
        let (server, spec, secret) = (&server, &spec, &secret);
        async move {
            let resp = refresh_grant(server, spec, Some(secret), &t, None).await;
            assert_eq!(resp.status(), 200, "refresh with {t}");
            let v: Value = resp.json().await.unwrap();
            v["refresh_token"].as_str().unwrap().to_string()
        }
    };
    let b = rotate(a.clone()).await;
    server.clock.advance_secs(5);
    // A concurrent request presents A again within the grace: accepted, no revocation.
    let c = rotate(a.clone()).await;
    assert_ne!(b, c);
    let d = rotate(c).await;
    assert_eq!(
        introspect(&server, &spec, &secret, &d).await["active"],
        true
    );
    // A third presentation of A is reuse: the family dies.
    let resp = refresh_grant(&server, &spec, Some(&secret), &a, None).await;
    expect_oauth_error(resp, 400, "invalid_grant").await;
    let resp = refresh_grant(&server, &spec, Some(&secret), &d, None).await;
    expect_oauth_error(resp, 400, "invalid_grant").await;
}

#[tokio::test]
async fn refresh_grace_does_not_apply_after_it_ran_out() {
    let (server, spec, secret, _) =
        setup_with(|c| c.tokens.refresh_grace = Duration::from_secs(30)).await;
    let browser = server.browser();
    let tokens = code_flow(
        &server,
        &browser,
        &spec,
        Some(&secret),
        "openid",
        Some(("alice", PW)),
    )
    .await;
    let a = tokens["refresh_token"].as_str().unwrap();
    let resp = refresh_grant(&server, &spec, Some(&secret), a, None).await;
    let b: Value = resp.json().await.unwrap();
    server.clock.advance_secs(31);
    let resp = refresh_grant(&server, &spec, Some(&secret), a, None).await;
    expect_oauth_error(resp, 400, "invalid_grant").await;
    let resp = refresh_grant(
        &server,
        &spec,
        Some(&secret),
        b["refresh_token"].as_str().unwrap(),
        None,
    )
    .await;
    expect_oauth_error(resp, 400, "invalid_grant").await;
}

#[tokio::test]
async fn refresh_can_narrow_but_not_widen_the_scope() {
    let (server, spec, secret, sub) = setup().await;
    let browser = server.browser();
    let tokens = code_flow(
        &server,
        &browser,
        &spec,
        Some(&secret),
        "openid profile email",
        Some(("alice", PW)),
    )
    .await;
    let a = tokens["refresh_token"].as_str().unwrap();
    // Wider: refused, and the token is not used up.
    for wider in [
        "openid profile email offline_access",
        "openid mgpass:admin",
        "openid wat",
    ] {
        let resp = refresh_grant(&server, &spec, Some(&secret), a, Some(wider)).await;
        expect_oauth_error(resp, 400, "invalid_scope").await;
    }
    let resp = refresh_grant(&server, &spec, Some(&secret), a, Some("openid")).await;
    assert_eq!(resp.status(), 200);
    let narrow: Value = resp.json().await.unwrap();
    assert_eq!(narrow["scope"], "openid");
    let info: Value = bearer_get(&server, "/api/userinfo", narrow["access_token"].as_str())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info, json!({"sub": sub}));
    // The next refresh without a scope gets the original grant back (RFC 6749 §6).
    let b = narrow["refresh_token"].as_str().unwrap();
    let resp = refresh_grant(&server, &spec, Some(&secret), b, None).await;
    let full: Value = resp.json().await.unwrap();
    assert_eq!(full["scope"], "email openid profile");
}

#[tokio::test]
async fn revoking_a_refresh_token_revokes_its_family() {
    let (server, spec, secret, sub) = setup().await;
    let browser = server.browser();
    let tokens = code_flow(
        &server,
        &browser,
        &spec,
        Some(&secret),
        "openid",
        Some(("alice", PW)),
    )
    .await;
    let a = tokens["refresh_token"].as_str().unwrap();
    let resp = refresh_grant(&server, &spec, Some(&secret), a, None).await;
    let b = resp.json::<Value>().await.unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let live = introspect(&server, &spec, &secret, &b).await;
    assert_eq!(live["active"], true);
    assert_eq!(live["token_type"], "refresh_token");
    assert_eq!(live["client_id"], "app");
    assert_eq!(live["sub"], sub);
    assert_eq!(live["scope"], "openid");
    assert!(live["exp"].as_i64().unwrap() > now(&server));
    // The rotated token A is already inactive.
    assert_eq!(
        introspect(&server, &spec, &secret, a).await,
        json!({"active": false})
    );
    // Revoking A (an old member of the family) ends B too.
    revoke(&server, &spec, &secret, a).await;
    assert_eq!(
        introspect(&server, &spec, &secret, &b).await,
        json!({"active": false})
    );
    let resp = refresh_grant(&server, &spec, Some(&secret), &b, None).await;
    expect_oauth_error(resp, 400, "invalid_grant").await;
    // Unknown tokens revoke "successfully" (RFC 7009 §2.2).
    revoke(&server, &spec, &secret, "no-such-token").await;
}

#[tokio::test]
async fn revoking_the_live_refresh_token_makes_it_inactive() {
    let (server, spec, secret, _) = setup().await;
    let browser = server.browser();
    let tokens = code_flow(
        &server,
        &browser,
        &spec,
        Some(&secret),
        "openid",
        Some(("alice", PW)),
    )
    .await;
    let a = tokens["refresh_token"].as_str().unwrap();
    revoke(&server, &spec, &secret, a).await;
    assert_eq!(
        introspect(&server, &spec, &secret, a).await,
        json!({"active": false})
    );
    let resp = refresh_grant(&server, &spec, Some(&secret), a, None).await;
    expect_oauth_error(resp, 400, "invalid_grant").await;
}

#[tokio::test]
async fn introspection_of_a_live_access_token() {
    let (server, spec, secret, sub) = setup().await;
    let browser = server.browser();
    let tokens = code_flow(
        &server,
        &browser,
        &spec,
        Some(&secret),
        "openid profile",
        Some(("alice", PW)),
    )
    .await;
    let access = tokens["access_token"].as_str().unwrap();
    let v = introspect(&server, &spec, &secret, access).await;
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["sub"], sub);
    assert_eq!(v["client_id"], "app");
    assert_eq!(v["scope"], "openid profile");
    assert_eq!(v["iss"], server.base);
    assert_eq!(v["exp"].as_i64().unwrap(), v["iat"].as_i64().unwrap() + 600);
    assert!(v["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert!(v["sid"].as_str().is_some_and(|s| !s.is_empty()));
    // Revoked access tokens are inactive.
    revoke(&server, &spec, &secret, access).await;
    assert_eq!(
        introspect(&server, &spec, &secret, access).await,
        json!({"active": false})
    );
    assert_invalid_token(&bearer_get(&server, "/api/userinfo", Some(access)).await);
    // Public clients may not introspect.
    let public = ClientSpec::public("pub");
    server.add_client(public.clone()).await;
    let resp = server
        .http()
        .post(server.url("/api/introspect"))
        .form(&[("token", access), ("client_id", "pub")])
        .send()
        .await
        .unwrap();
    expect_oauth_error(resp, 401, "invalid_client").await;
}

#[tokio::test]
async fn client_credentials_gives_an_access_token_only() {
    let (server, spec, secret, _) = setup().await;
    let resp = token_request(
        &server,
        &spec,
        Some(&secret),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "cache-control"), "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert!(body.get("id_token").is_none(), "{body}");
    let access = body["access_token"].as_str().unwrap();
    let (header, claims) = verify_jwt(&server, access).await;
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(claims["sub"], "app");
    assert_eq!(claims["client_id"], "app");
    assert!(claims.get("sid").is_none());
    // It is not a user's token.
    assert_invalid_token(&bearer_get(&server, "/api/account/profile", Some(access)).await);
    assert_invalid_token(&bearer_get(&server, "/api/userinfo", Some(access)).await);
    // User scopes cannot be granted without a user.
    let resp = token_request(
        &server,
        &spec,
        Some(&secret),
        &[("grant_type", "client_credentials"), ("scope", "openid")],
    )
    .await;
    expect_oauth_error(resp, 400, "invalid_scope").await;
}

#[tokio::test]
async fn public_client_cannot_use_client_credentials() {
    let server = TestServer::start().await;
    let spec = ClientSpec::public("spa");
    server.add_client(spec.clone()).await;
    let resp = token_request(
        &server,
        &spec,
        None,
        &[("grant_type", "client_credentials")],
    )
    .await;
    expect_oauth_error(resp, 400, "unauthorized_client").await;
}

#[tokio::test]
async fn admin_scope_is_granted_only_with_the_role() {
    let (server, spec, secret, sub) = setup().await;
    let browser = server.browser();
    let tokens = code_flow(
        &server,
        &browser,
        &spec,
        Some(&secret),
        "openid mgpass:admin",
        Some(("alice", PW)),
    )
    .await;
    assert_eq!(tokens["scope"], "openid", "the dropped scope is reported");
    let access = tokens["access_token"].as_str().unwrap();
    let resp = bearer_get(&server, "/api/admin/whoami", Some(access)).await;
    assert_eq!(resp.status(), 403);
    let challenge = header(&resp, "www-authenticate");
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(challenge.contains("scope=\"mgpass:admin\""), "{challenge}");
    // No token at all: 401 with a bare challenge.
    let resp = bearer_get(&server, "/api/admin/whoami", None).await;
    assert_eq!(resp.status(), 401);
    assert!(header(&resp, "www-authenticate").starts_with("Bearer"));
    assert_invalid_token(&bearer_get(&server, "/api/admin/whoami", Some("garbage")).await);
    // Her refresh token cannot widen itself to the admin scope either.
    let resp = refresh_grant(
        &server,
        &spec,
        Some(&secret),
        tokens["refresh_token"].as_str().unwrap(),
        Some("openid mgpass:admin"),
    )
    .await;
    expect_oauth_error(resp, 400, "invalid_scope").await;

    // A user with the role gets the scope and passes the guard.
    let root = server.add_user("root", PW, &["mgpass:admin"]).await;
    let admin_browser = server.browser();
    let tokens = code_flow(
        &server,
        &admin_browser,
        &spec,
        Some(&secret),
        "openid mgpass:admin",
        Some(("root", PW)),
    )
    .await;
    assert_eq!(tokens["scope"], "mgpass:admin openid");
    let access = tokens["access_token"].as_str().unwrap();
    let resp = bearer_get(&server, "/api/admin/whoami", Some(access)).await;
    assert_eq!(resp.status(), 200);
    let who: Value = resp.json().await.unwrap();
    assert_eq!(who["sub"], root);
    assert_ne!(who["sub"], sub);
    assert_eq!(who["scopes"], json!(["mgpass:admin", "openid"]));
    // Losing the role takes effect at once, even for a token that carries the scope.
    server
        .admin(mgpass::admin::Command::UserRevokeRole {
            user: "root".into(),
            role: "mgpass:admin".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        bearer_get(&server, "/api/admin/whoami", Some(access))
            .await
            .status(),
        403
    );
}

#[tokio::test]
async fn account_profile_needs_a_user_token() {
    let (server, spec, secret, sub) = setup().await;
    let browser = server.browser();
    let tokens = code_flow(
        &server,
        &browser,
        &spec,
        Some(&secret),
        "openid",
        Some(("alice", PW)),
    )
    .await;
    let resp = bearer_get(
        &server,
        "/api/account/profile",
        tokens["access_token"].as_str(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let profile: Value = resp.json().await.unwrap();
    assert_eq!(profile["id"], sub);
    assert_eq!(profile["username"], "alice");
    let resp = bearer_get(&server, "/api/account/profile", None).await;
    assert_eq!(resp.status(), 401);
    assert!(header(&resp, "www-authenticate").starts_with("Bearer"));
    let cc: Value = token_request(
        &server,
        &spec,
        Some(&secret),
        &[("grant_type", "client_credentials")],
    )
    .await
    .json()
    .await
    .unwrap();
    let resp = bearer_get(&server, "/api/account/profile", cc["access_token"].as_str()).await;
    assert_invalid_token(&resp);
    // An ID token is not an access token.
    let resp = bearer_get(&server, "/api/account/profile", tokens["id_token"].as_str()).await;
    assert_invalid_token(&resp);
}

#[tokio::test]
async fn userinfo_refuses_invalid_and_expired_tokens() {
    let (server, spec, secret, _) = setup().await;
    let browser = server.browser();
    let tokens = code_flow(
        &server,
        &browser,
        &spec,
        Some(&secret),
        "openid",
        Some(("alice", PW)),
    )
    .await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_invalid_token(&bearer_get(&server, "/api/userinfo", Some("not.a.token")).await);
    // A tampered token (payload swapped) fails the signature.
    let parts: Vec<&str> = access.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        mgpass::crypto::b64url(br#"{"sub":"x"}"#),
        parts[2]
    );
    assert_invalid_token(&bearer_get(&server, "/api/userinfo", Some(&forged)).await);
    assert_eq!(
        bearer_get(&server, "/api/userinfo", Some(access))
            .await
            .status(),
        200
    );
    server.clock.advance_secs(601);
    assert_invalid_token(&bearer_get(&server, "/api/userinfo", Some(access)).await);
    // No token: 401 without an error code (RFC 6750 §3.1).
    let resp = bearer_get(&server, "/api/userinfo", None).await;
    assert_eq!(resp.status(), 401);
    let challenge = header(&resp, "www-authenticate");
    assert!(
        challenge.starts_with("Bearer") && !challenge.contains("error="),
        "{challenge}"
    );
}

#[tokio::test]
async fn userinfo_takes_the_token_in_a_form_body() {
    let (server, spec, secret, sub) = setup().await;
    let browser = server.browser();
    let tokens = code_flow(
        &server,
        &browser,
        &spec,
        Some(&secret),
        "openid",
        Some(("alice", PW)),
    )
    .await;
    let access = tokens["access_token"].as_str().unwrap();
    let resp = server
        .http()
        .post(server.url("/api/userinfo"))
        .form(&[("access_token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["sub"], sub);
    // Header and body at once is a bad request.
    let resp = server
        .http()
        .post(server.url("/api/userinfo"))
        .bearer_auth(access)
        .form(&[("access_token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // Never from the query string.
    let resp = server
        .http()
        .get(format!(
            "{}?access_token={access}",
            server.url("/api/userinfo")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn userinfo_claims_follow_the_scope() {
    let (server, spec, secret, sub) = setup().await;
    let browser = server.browser();
    let tokens = code_flow(
        &server,
        &browser,
        &spec,
        Some(&secret),
        "openid",
        Some(("alice", PW)),
    )
    .await;
    let resp = bearer_get(&server, "/api/userinfo", tokens["access_token"].as_str()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"sub": sub}));

    let tokens = code_flow(
        &server,
        &browser,
        &spec,
        Some(&secret),
        "openid profile",
        None,
    )
    .await;
    let info: Value = bearer_get(&server, "/api/userinfo", tokens["access_token"].as_str())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["preferred_username"], "alice");
    assert_eq!(info["name"], "alice Example");
    assert!(info["updated_at"].is_i64());
    assert!(info.get("email").is_none(), "{info}");

    let tokens = code_flow(
        &server,
        &browser,
        &spec,
        Some(&secret),
        "openid email",
        None,
    )
    .await;
    let info: Value = bearer_get(&server, "/api/userinfo", tokens["access_token"].as_str())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        info,
        json!({"sub": sub, "email": "alice@example.com", "email_verified": true})
    );
}

#[tokio::test]
async fn id_and_access_tokens_verify_against_jwks() {
    let (server, spec, secret, sub) = setup().await;
    let browser = server.browser();
    let before = now(&server);
    let tokens = code_flow(
        &server,
        &browser,
        &spec,
        Some(&secret),
        "openid profile",
        Some(("alice", PW)),
    )
    .await;
    let access = tokens["access_token"].as_str().unwrap();
    let (h, at) = verify_jwt(&server, access).await;
    assert_eq!(h["typ"], "at+jwt");
    assert_eq!(h["alg"], "ES256");
    assert_eq!(h["kid"].as_str().map(str::len), Some(43));
    assert_eq!(at["iss"], server.base);
    assert_eq!(at["sub"], sub);
    assert_eq!(at["aud"], server.base);
    assert_eq!(at["client_id"], "app");
    assert_eq!(at["scope"], "openid profile");
    let iat = at["iat"].as_i64().unwrap();
    assert!(iat >= before && iat <= now(&server));
    assert_eq!(at["exp"].as_i64().unwrap(), iat + 600);
    assert!(at["jti"].as_str().is_some_and(|j| !j.is_empty()));
    let sid = at["sid"].as_str().expect("sid").to_string();

    let id_token = tokens["id_token"].as_str().unwrap();
    let (h, id) = verify_jwt(&server, id_token).await;
    assert_eq!(h["alg"], "ES256");
    assert_ne!(h["typ"], "at+jwt");
    assert_eq!(id["iss"], server.base);
    assert_eq!(id["sub"], sub);
    assert_eq!(id["aud"], "app");
    assert_eq!(id["nonce"], "n0");
    assert_eq!(id["sid"], sid.as_str());
    let auth_time = id["auth_time"].as_i64().expect("auth_time");
    assert!(auth_time >= before && auth_time <= iat);
    assert!(id["exp"].as_i64().unwrap() > id["iat"].as_i64().unwrap());
    let digest = mgpass::crypto::sha256(access.as_bytes());
    assert_eq!(id["at_hash"], mgpass::crypto::b64url(&digest[..16]));
    // The access token verified by the server's own verifier, too: the ID token is not
    // accepted as an access token (typ).
    assert_invalid_token(&bearer_get(&server, "/api/userinfo", Some(id_token)).await);
}

#[tokio::test]
async fn rs256_client_gets_an_rs256_id_token() {
    let server = TestServer::start().await;
    let spec = ClientSpec {
        id_token_alg: Some("RS256"),
        ..ClientSpec::confidential("legacy")
    };
    let secret = server.add_client(spec.clone()).await.unwrap();
    let sub = server.add_user("alice", PW, &[]).await;
    let browser = server.browser();
    let tokens = code_flow(
        &server,
        &browser,
        &spec,
        Some(&secret),
        "openid",
        Some(("alice", PW)),
    )
    .await;
    let (h, id) = verify_jwt(&server, tokens["id_token"].as_str().unwrap()).await;
    assert_eq!(h["alg"], "RS256");
    assert_eq!(id["sub"], sub);
    assert_eq!(id["aud"], "legacy");
    let digest = mgpass::crypto::sha256(tokens["access_token"].as_str().unwrap().as_bytes());
    assert_eq!(id["at_hash"], mgpass::crypto::b64url(&digest[..16]));
    // Access tokens stay ES256.
    let (h, _) = verify_jwt(&server, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(h["alg"], "ES256");
}

#[tokio::test]
async fn prompt_none_without_a_session_is_login_required() {
    let (server, spec, _, _) = setup().await;
    let (url, _) = auth_request(&server, &spec, "openid", &[("prompt", "none")]);
    let resp = server.browser().get(&url).send().await.unwrap();
    assert_redirected_error(&resp, &spec, "login_required");
}

#[tokio::test]
async fn prompt_none_with_a_session_issues_a_code() {
    let (server, spec, secret, _) = setup().await;
    let browser = server.browser();
    code_flow(
        &server,
        &browser,
        &spec,
        Some(&secret),
        "openid",
        Some(("alice", PW)),
    )
    .await;
    let (url, _) = auth_request(&server, &spec, "openid", &[("prompt", "none")]);
    let resp = browser.get(&url).send().await.unwrap();
    code_from(&resp, &spec);
}

#[tokio::test]
async fn prompt_login_shows_the_form_despite_a_session() {
    let (server, spec, secret, _) = setup().await;
    let browser = server.browser();
    let first = code_flow(
        &server,
        &browser,
        &spec,
        Some(&secret),
        "openid",
        Some(("alice", PW)),
    )
    .await;
    let (url, verifier) = auth_request(&server, &spec, "openid", &[("prompt", "login")]);
    server.clock.advance_secs(10);
    let resp = submit_login(&browser, &server, &url, "alice", PW, false).await;
    let code = code_from(&resp, &spec);
    let second = exchange(&server, &spec, Some(&secret), &code, &verifier).await;
    let (_, a) = verify_jwt(&server, first["id_token"].as_str().unwrap()).await;
    let (_, b) = verify_jwt(&server, second["id_token"].as_str().unwrap()).await;
    assert_eq!(
        b["auth_time"].as_i64().unwrap(),
        a["auth_time"].as_i64().unwrap() + 10
    );
}

#[tokio::test]
async fn max_age_forces_a_fresh_login() {
    let (server, spec, secret, _) = setup().await;
    let browser = server.browser();
    code_flow(
        &server,
        &browser,
        &spec,
        Some(&secret),
        "openid",
        Some(("alice", PW)),
    )
    .await;
    // max_age=0 means "authenticate now" (OIDC Core §3.1.2.1), even within the second.
    let (url, _) = auth_request(&server, &spec, "openid", &[("max_age", "0")]);
    let resp = browser.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "max_age=0 shows the login form");
    assert!(hidden_field(&resp.text().await.unwrap(), "auth_request").is_some());
    server.clock.advance_secs(120);
    let (url, _) = auth_request(&server, &spec, "openid", &[("max_age", "600")]);
    code_from(&browser.get(&url).send().await.unwrap(), &spec);
    let (url, verifier) = auth_request(&server, &spec, "openid", &[("max_age", "60")]);
    let resp = submit_login(&browser, &server, &url, "alice", PW, false).await;
    let code = code_from(&resp, &spec);
    let tokens = exchange(&server, &spec, Some(&secret), &code, &verifier).await;
    let (_, id) = verify_jwt(&server, tokens["id_token"].as_str().unwrap()).await;
    assert_eq!(id["auth_time"].as_i64().unwrap(), now(&server));
    // prompt=none with an exceeded max_age cannot show the form.
    server.clock.advance_secs(120);
    let (url, _) = auth_request(
        &server,
        &spec,
        "openid",
        &[("max_age", "60"), ("prompt", "none")],
    );
    assert_redirected_error(
        &browser.get(&url).send().await.unwrap(),
        &spec,
        "login_required",
    );
}

#[tokio::test]
async fn consent_for_a_third_party_client() {
    let server = TestServer::start().await;
    let spec = ClientSpec {
        first_party: false,
        ..ClientSpec::confidential("third")
    };
    let secret = server.add_client(spec.clone()).await.unwrap();
    server.add_user("alice", PW, &[]).await;
    let browser = server.browser();
    let scope = "openid email";
    let (url, verifier) = auth_request(&server, &spec, scope, &[]);
    let resp = submit_login(&browser, &server, &url, "alice", PW, false).await;
    assert_eq!(resp.status(), 200, "the consent page follows the login");
    let html = resp.text().await.unwrap();
    assert!(html.contains("Allow access"), "{html}");
    assert!(html.contains("Test App"));
    assert!(
        html.contains("Sign you in with your mgpass account"),
        "{html}"
    );
    assert!(html.contains("See your email address"), "{html}");
    assert!(!html.contains("See your name and username"), "{html}");
    let resp = post_consent(&browser, &server, &html, "allow").await;
    let code = code_from(&resp, &spec);
    assert_eq!(
        query_param(&location(&resp), "state").as_deref(),
        Some("st")
    );
    let tokens = exchange(&server, &spec, Some(&secret), &code, &verifier).await;
    assert!(
        tokens.get("refresh_token").is_none(),
        "third party without offline_access"
    );

    // Remembered: the same scopes again go straight to a code.
    let (url, _) = auth_request(&server, &spec, scope, &[]);
    code_from(&browser.get(&url).send().await.unwrap(), &spec);
    // A subset too.
    let (url, _) = auth_request(&server, &spec, "openid", &[("prompt", "none")]);
    code_from(&browser.get(&url).send().await.unwrap(), &spec);
    // More scopes with prompt=none: consent_required.
    let (url, _) = auth_request(
        &server,
        &spec,
        "openid email profile",
        &[("prompt", "none")],
    );
    assert_redirected_error(
        &browser.get(&url).send().await.unwrap(),
        &spec,
        "consent_required",
    );
    // prompt=consent asks again.
    let (url, _) = auth_request(&server, &spec, scope, &[("prompt", "consent")]);
    let resp = browser.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(html.contains("Allow access"));
    // Deny: access_denied with state.
    let resp = post_consent(&browser, &server, &html, "deny").await;
    assert_redirected_error(&resp, &spec, "access_denied");
    // offline_access with consent yields a refresh token.
    let (url, verifier) = auth_request(&server, &spec, "openid offline_access", &[]);
    let resp = browser.get(&url).send().await.unwrap();
    let html = resp.text().await.unwrap();
    assert!(html.contains("Stay signed in"), "{html}");
    let code = code_from(
        &post_consent(&browser, &server, &html, "allow").await,
        &spec,
    );
    let tokens = exchange(&server, &spec, Some(&secret), &code, &verifier).await;
    assert!(tokens["refresh_token"].is_string());
}

#[tokio::test]
async fn consent_form_without_the_csrf_cookie_is_refused() {
    let server = TestServer::start().await;
    let spec = ClientSpec {
        first_party: false,
        ..ClientSpec::confidential("third")
    };
    server.add_client(spec.clone()).await;
    server.add_user("alice", PW, &[]).await;
    let browser = server.browser();
    let (url, _) = auth_request(&server, &spec, "openid", &[]);
    let resp = submit_login(&browser, &server, &url, "alice", PW, false).await;
    let html = resp.text().await.unwrap();
    let resp = post_consent(&server.http(), &server, &html, "allow").await;
    assert_eq!(resp.status(), 403);
    assert!(resp.headers().get("location").is_none());
}

#[tokio::test]
async fn session_cookie_attributes_with_and_without_remember_me() {
    let (server, spec, _, _) = setup().await;
    for remember in [true, false] {
        let browser = server.browser();
        let (url, _) = auth_request(&server, &spec, "openid", &[]);
        let resp = submit_login(&browser, &server, &url, "alice", PW, remember).await;
        assert_eq!(resp.status(), 302);
        let cookies = set_cookies(&resp, "mgpass_session");
        assert_eq!(cookies.len(), 1, "{cookies:?}");
        let attrs = cookie_attributes(&cookies[0]);
        for wanted in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(attrs.iter().any(|a| a == wanted), "{wanted} in {attrs:?}");
        }
        assert!(
            !attrs.iter().any(|a| a.starts_with("Domain=")),
            "host-only: {attrs:?}"
        );
        assert!(
            !attrs.iter().any(|a| a.starts_with("Expires=")),
            "{attrs:?}"
        );
        if remember {
            assert!(attrs.iter().any(|a| a == "Max-Age=2592000"), "{attrs:?}");
        } else {
            assert!(!attrs.iter().any(|a| a.starts_with("Max-Age")), "{attrs:?}");
        }
        let value = cookies[0]
            .split(';')
            .next()
            .unwrap()
            .trim_start_matches("mgpass_session=");
        assert!(value.len() >= 43, "a 256-bit random value");
    }
}

#[tokio::test]
async fn session_cookie_domain_comes_from_config() {
    let (server, spec, _, _) =
        setup_with(|c| c.session.cookie_domain = Some("localhost".into())).await;
    let browser = server.browser();
    let (url, _) = auth_request(&server, &spec, "openid", &[]);
    let resp = submit_login(&browser, &server, &url, "alice", PW, false).await;
    let cookies = set_cookies(&resp, "mgpass_session");
    let attrs = cookie_attributes(&cookies[0]);
    assert!(attrs.iter().any(|a| a == "Domain=localhost"), "{attrs:?}");
}

#[tokio::test]
async fn session_slides_with_every_sso_check() {
    let (server, spec, secret, _) = setup().await;
    let browser = server.browser();
    code_flow(
        &server,
        &browser,
        &spec,
        Some(&secret),
        "openid",
        Some(("alice", PW)),
    )
    .await;
    server.clock.advance_secs(29 * DAY);
    code_flow(&server, &browser, &spec, Some(&secret), "openid", None).await;
    // 58 days after login: alive only because the last check slid it.
    server.clock.advance_secs(29 * DAY);
    let tokens = code_flow(&server, &browser, &spec, Some(&secret), "openid", None).await;
    assert_eq!(
        bearer_get(&server, "/api/userinfo", tokens["access_token"].as_str())
            .await
            .status(),
        200
    );
    // 31 days without use: the session is over.
    server.clock.advance_secs(31 * DAY);
    let (url, _) = auth_request(&server, &spec, "openid", &[]);
    let resp = browser.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the login form again");
    assert!(hidden_field(&resp.text().await.unwrap(), "auth_request").is_some());
    let (url, _) = auth_request(&server, &spec, "openid", &[("prompt", "none")]);
    assert_redirected_error(
        &browser.get(&url).send().await.unwrap(),
        &spec,
        "login_required",
    );
}

#[tokio::test]
async fn a_refresh_grant_extends_the_session() {
    let (server, spec, secret, _) = setup().await;
    let browser = server.browser();
    let tokens = code_flow(
        &server,
        &browser,
        &spec,
        Some(&secret),
        "openid",
        Some(("alice", PW)),
    )
    .await;
    server.clock.advance_secs(29 * DAY);
    let resp = refresh_grant(
        &server,
        &spec,
        Some(&secret),
        tokens["refresh_token"].as_str().unwrap(),
        None,
    )
    .await;
    assert_eq!(resp.status(), 200);
    server.clock.advance_secs(29 * DAY);
    let (url, _) = auth_request(&server, &spec, "openid", &[("prompt", "none")]);
    code_from(&browser.get(&url).send().await.unwrap(), &spec);
}

#[tokio::test]
async fn brute_force_backs_off_then_recovers() {
    let (server, spec, _, _) = setup().await;
    let browser = server.browser();
    let (url, verifier) = auth_request(&server, &spec, "openid", &[]);
    let mut html = browser
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Five free failures (the default), each answered with the generic message.
    for _ in 0..5 {
        let resp = post_login_form(&browser, &server, &html, "alice", "guess", false).await;
        assert_eq!(resp.status(), 200);
        html = resp.text().await.unwrap();
        assert_eq!(
            page_error(&html).as_deref(),
            Some("Incorrect username or password.")
        );
    }
    // Now throttled: even the right password is refused without being checked.
    for password in ["guess", PW] {
        let resp = post_login_form(&browser, &server, &html, "alice", password, false).await;
        assert_eq!(resp.status(), 429);
        assert!(set_cookies(&resp, "mgpass_session").is_empty());
        html = resp.text().await.unwrap();
        let message = page_error(&html).expect("a throttle message");
        assert!(message.starts_with("Too many attempts"), "{message}");
    }
    // The case of the login does not dodge the counter.
    let resp = post_login_form(&browser, &server, &html, "ALICE", PW, false).await;
    assert_eq!(resp.status(), 429);
    html = resp.text().await.unwrap();
    server.clock.advance_secs(2);
    let resp = post_login_form(&browser, &server, &html, "alice", PW, false).await;
    let code = code_from(&resp, &spec);
    assert!(!code.is_empty() && !verifier.is_empty());
}

#[tokio::test]
async fn brute_force_from_one_ip_does_not_lock_out_another() {
    let (server, spec, _, _) =
        setup_with(|c| c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    let attacker = server.browser();
    let (url, _) = auth_request(&server, &spec, "openid", &[]);
    let mut html = attacker
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let from_attacker = [("x-forwarded-for", "203.0.113.7")];
    for _ in 0..5 {
        let resp =
            post_login_form_with(&attacker, &server, &html, "alice", "guess", &from_attacker).await;
        assert_eq!(resp.status(), 200);
        html = resp.text().await.unwrap();
    }
    let resp =
        post_login_form_with(&attacker, &server, &html, "alice", "guess", &from_attacker).await;
    assert_eq!(resp.status(), 429);
    // The real user, from another address, signs in at once.
    let user = server.browser();
    let page = user.get(&url).send().await.unwrap().text().await.unwrap();
    let resp = post_login_form_with(
        &user,
        &server,
        &page,
        "alice",
        PW,
        &[("x-forwarded-for", "198.51.100.20")],
    )
    .await;
    code_from(&resp, &spec);
    // The attacker's address is still held back.
    let html = attacker
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let resp = post_login_form_with(&attacker, &server, &html, "alice", PW, &from_attacker).await;
    assert_eq!(resp.status(), 429);
}

#[tokio::test]
async fn login_error_does_not_reveal_whether_the_account_exists() {
    let (server, spec, _, _) = setup().await;
    let browser = server.browser();
    let (url, _) = auth_request(&server, &spec, "openid", &[]);
    let mut answers = Vec::new();
    for (user, pw) in [
        ("alice", "wrong"),
        ("nobody", "wrong"),
        ("alice@example.com", "wrong"),
        ("", "x"),
    ] {
        let html = browser
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let resp = post_login_form(&browser, &server, &html, user, pw, false).await;
        let status = resp.status();
        let html = resp.text().await.unwrap();
        answers.push((status, page_error(&html)));
    }
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    assert_eq!(
        answers[0].1.as_deref(),
        Some("Incorrect username or password.")
    );
    // Email works as the login too.
    let resp = submit_login(&browser, &server, &url, "alice@example.com", PW, false).await;
    code_from(&resp, &spec);
}

#[tokio::test]
async fn login_post_without_the_csrf_cookie_is_refused() {
    let (server, spec, _, _) = setup().await;
    let browser = server.browser();
    let (url, _) = auth_request(&server, &spec, "openid", &[]);
    let html = browser
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // No cookie store: the double-submit cookie is missing.
    let resp = post_login_form(&server.http(), &server, &html, "alice", PW, false).await;
    assert_eq!(resp.status(), 403);
    assert!(resp.headers().get("location").is_none());
    assert!(set_cookies(&resp, "mgpass_session").is_empty());
    assert!(header(&resp, "content-type").starts_with("text/html"));
    // A forged field with the right cookie is refused too.
    let forged = html.replace(
        &hidden_field(&html, "csrf").unwrap(),
        &mgpass::crypto::random_token(),
    );
    let resp = post_login_form(&browser, &server, &forged, "alice", PW, false).await;
    assert_eq!(resp.status(), 403);
    // The genuine form still works (the request was not consumed by the forgeries).
    let resp = post_login_form(&browser, &server, &html, "alice", PW, false).await;
    code_from(&resp, &spec);
}

#[tokio::test]
async fn remembered_cookie_slides_with_the_session() {
    let (server, spec, _, _) = setup().await;
    for remember in [true, false] {
        let browser = server.browser();
        let (url, _) = auth_request(&server, &spec, "openid", &[]);
        let resp = submit_login(&browser, &server, &url, "alice", PW, remember).await;
        let login_cookie = set_cookies(&resp, "mgpass_session").remove(0);
        let value = login_cookie.split(';').next().unwrap().to_string();
        code_from(&resp, &spec);
        server.clock.advance_secs(29 * DAY);
        let (url, _) = auth_request(&server, &spec, "openid", &[]);
        let resp = browser.get(&url).send().await.unwrap();
        code_from(&resp, &spec);
        let renewed = set_cookies(&resp, "mgpass_session");
        if remember {
            // The browser must keep the cookie as long as the server keeps the session.
            assert_eq!(renewed.len(), 1, "Max-Age renewed on the SSO check");
            assert!(renewed[0].starts_with(&format!("{value};")), "same session");
            let attrs = cookie_attributes(&renewed[0]);
            assert!(attrs.iter().any(|a| a == "Max-Age=2592000"), "{attrs:?}");
            for wanted in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
                assert!(attrs.iter().any(|a| a == wanted), "{wanted} in {attrs:?}");
            }
        } else {
            assert!(
                renewed.is_empty(),
                "a browser-session cookie is left alone: {renewed:?}"
            );
        }
    }
}

#[tokio::test]
async fn secrets_are_stored_only_as_digests() {
    let (mut server, spec, secret, _) = setup().await;
    let browser = server.browser();
    let (url, verifier) = auth_request(&server, &spec, "openid", &[]);
    let resp = submit_login(&browser, &server, &url, "alice", PW, true).await;
    let cookie = set_cookies(&resp, "mgpass_session").remove(0);
    let cookie = cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("mgpass_session=")
        .to_string();
    let code = code_from(&resp, &spec);
    let tokens = exchange(&server, &spec, Some(&secret), &code, &verifier).await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let rotated: Value = refresh_grant(&server, &spec, Some(&secret), &refresh, None)
        .await
        .json()
        .await
        .unwrap();
    let rotated = rotated["refresh_token"].as_str().unwrap().to_string();
    server.stop().await;
    let mut files = vec![server.dir.path().join("data")];
    let mut contents = Vec::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if let Ok(bytes) = std::fs::read(&path) {
            contents.push((path, bytes));
        }
    }
    assert!(!contents.is_empty());
    for (name, needle) in [
        ("code", code.as_str()),
        ("refresh token", refresh.as_str()),
        ("rotated refresh token", rotated.as_str()),
        ("session cookie", cookie.as_str()),
        ("client secret", secret.as_str()),
        ("password", PW),
    ] {
        for (path, bytes) in &contents {
            let found = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
            assert!(
                !found,
                "the {name} is stored in plain text in {}",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn public_client_redeems_and_refreshes_without_a_secret() {
    let server = TestServer::start().await;
    let spec = ClientSpec::public("spa");
    assert!(server.add_client(spec.clone()).await.is_none());
    server.add_user("alice", PW, &[]).await;
    let browser = server.browser();
    let tokens = code_flow(
        &server,
        &browser,
        &spec,
        None,
        "openid",
        Some(("alice", PW)),
    )
    .await;
    let a = tokens["refresh_token"]
        .as_str()
        .expect("first-party public client");
    let resp = refresh_grant(&server, &spec, None, a, None).await;
    assert_eq!(resp.status(), 200);
    // A public client that sends a secret it does not have is refused.
    let resp = token_request(
        &server,
        &spec,
        Some("made-up"),
        &[("grant_type", "refresh_token"), ("refresh_token", a)],
    )
    .await;
    expect_oauth_error(resp, 401, "invalid_client").await;
}

#[tokio::test]
async fn token_endpoint_refuses_malformed_requests() {
    let (server, spec, secret, _) = setup().await;
    let resp = token_request(&server, &spec, Some(&secret), &[("grant_type", "password")]).await;
    expect_oauth_error(resp, 400, "unsupported_grant_type").await;
    let resp = token_request(&server, &spec, Some(&secret), &[]).await;
    expect_oauth_error(resp, 400, "invalid_request").await;
    // Basic and client_secret_post at once.
    let resp = server
        .http()
        .post(server.url("/api/token"))
        .basic_auth("app", Some(&secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_secret", secret.as_str()),
        ])
        .send()
        .await
        .unwrap();
    expect_oauth_error(resp, 400, "invalid_request").await;
    // A parameter sent twice (RFC 6749 §3.1).
    let resp = server
        .http()
        .post(server.url("/api/token"))
        .basic_auth("app", Some(&secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    expect_oauth_error(resp, 400, "invalid_request").await;
    // prompt=none cannot be combined.
    let (url, _) = auth_request(&server, &spec, "openid", &[("prompt", "none login")]);
    let resp = server.http().get(&url).send().await.unwrap();
    assert_redirected_error(&resp, &spec, "invalid_request");
}
