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
