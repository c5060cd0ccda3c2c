//! The token endpoint (RFC 6749 §3.2): authorization code with PKCE, refresh with
//! rotation, client credentials.

use super::authenticate_client;
use super::tokens::AccessGrant;
use crate::app::App;
use crate::crypto::{b64url, constant_time_eq, random_id, random_token, sha256, sha256_hex};
use crate::http::error::no_store;
use crate::http::params::Params;
use crate::http::{Error, Req, Resp, json_response};
use crate::store::{Client, NewRefresh, Redeemed, Redemption, Rotation};
use crate::types::Scopes;
use hyper::StatusCode;
use serde_json::{Value, json};

/// `POST /api/token`
pub async fn token(app: &App, req: &Req) -> Result<Resp, Error> {
    let params = req.form_params()?;
    let client = authenticate_client(app, req, &params)?.client;
    let (grant, body) = match params.get("grant_type") {
        None => return Err(Error::invalid_request("grant_type is missing")),
        Some("authorization_code") => (
            "authorization_code",
            authorization_code(app, &client, &params).await?,
        ),
        Some("refresh_token") => ("refresh_token", refresh(app, &client, &params).await?),
        Some("client_credentials") => (
            "client_credentials",
            client_credentials(app, &client, &params)?,
        ),
        Some(_) => {
            return Err(Error::oauth(
                "unsupported_grant_type",
                "grant_type must be authorization_code, refresh_token or client_credentials",
            ));
        }
    };
    app.metrics.token_issued(grant);
    Ok(no_store(json_response(StatusCode::OK, &body)))
}

/// RFC 7636 §4.1: 43–128 characters from the unreserved set.
fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Refresh tokens go to clients that asked for `offline_access` and to first-party
/// clients.
fn wants_refresh(client: &Client, scope: &Scopes) -> bool {
    scope.contains("offline_access") || client.first_party
}

async fn authorization_code(app: &App, client: &Client, params: &Params) -> Result<Value, Error> {
    let code = params
        .get("code")
        .ok_or_else(|| Error::invalid_request("code is missing"))?;
    let verifier = params
        .get("code_verifier")
        .ok_or_else(|| Error::invalid_request("code_verifier is missing (PKCE)"))?;
    let redirect_uri = params
        .get("redirect_uri")
        .ok_or_else(|| Error::invalid_request("redirect_uri is missing"))?;
    exchange_code(app, client, code, verifier, redirect_uri).await
}

/// The authorization-code grant for an authenticated `client`: code lookup, PKCE,
/// access and ID token signatures, the durable redemption. Returns the token response
/// body. Public so benchmarks can drive it without HTTP.
pub async fn exchange_code(
    app: &App,
    client: &Client,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
) -> Result<Value, Error> {
    let digest = sha256_hex(code.as_bytes());
    let now = app.clock.now();
    let grant = app
        .store
        .code(&digest)?
        .ok_or_else(|| Error::invalid_grant("the code is invalid or has expired"))?;
    if grant.client_id != client.id {
        return Err(Error::invalid_grant(
            "the code was issued to another client",
        ));
    }
    if grant.redeemed.is_none() {
        if grant.redirect_uri.as_str() != redirect_uri {
            return Err(Error::invalid_grant(
                "redirect_uri does not match the authorization request",
            ));
        }
        let computed = b64url(&sha256(verifier.as_bytes()));
        if !valid_verifier(verifier)
            || !constant_time_eq(computed.as_bytes(), grant.code_challenge.as_bytes())
        {
            return Err(Error::invalid_grant("code_verifier does not match"));
        }
        if grant.expires_at <= now {
            return Err(Error::invalid_grant("the code is invalid or has expired"));
        }
    }
    let user = app
        .store
        .user(&grant.user_id)?
        .ok_or_else(|| Error::invalid_grant("the user no longer exists"))?;
    let extra = app.plugin_claims(&user, &client.id, &grant.scope).await?;
    let access = app.mint_access_token(AccessGrant {
        sub: user.id.as_str(),
        client_id: &client.id,
        scope: &grant.scope,
        sid: Some(&grant.sid),
        auth_time: Some(grant.auth_time),
        extra,
    })?;
    let refresh_token = wants_refresh(client, &grant.scope).then(random_token);
    let family_id = random_id("fam_");
    let refresh_digest = refresh_token.as_ref().map(|t| sha256_hex(t.as_bytes()));
    let new_refresh = refresh_digest.as_ref().map(|d| NewRefresh {
        digest: d,
        family_id: &family_id,
        expires_at: now + app.config.tokens.refresh_token_ttl.as_secs() as i64,
    });
    let issued = Redeemed {
        family: new_refresh.as_ref().map(|_| family_id.clone()),
        access_jti: access.jti.clone(),
        access_exp: access.exp,
    };
    match app.store.redeem_code(
        &digest,
        now,
        app.session_expiry(),
        &issued,
        new_refresh.as_ref(),
    )? {
        Redemption::Issued(_) => {}
        Redemption::Replayed => {
            app.store.flush().await?;
            tracing::warn!(client = %client.id, "authorization code replayed: revoked what it issued");
            return Err(Error::invalid_grant("the code was already used"));
        }
        Redemption::Invalid => {
            return Err(Error::invalid_grant("the code is invalid or has expired"));
        }
    }
    let mut body = json!({
        "access_token": access.token,
        "token_type": "Bearer",
        "expires_in": access.exp - now,
        "scope": grant.scope.to_string(),
    });
    if grant.scope.contains("openid") {
        body["id_token"] = json!(app.mint_id_token(
            client,
            user.id.as_str(),
            grant.auth_time,
            grant.nonce.as_deref(),
            &grant.sid,
            &access.token,
        )?);
    }
    if let Some(t) = refresh_token {
        body["refresh_token"] = json!(t);
    }
    app.store.flush().await?;
    Ok(body)
}

async fn refresh(app: &App, client: &Client, params: &Params) -> Result<Value, Error> {
    let presented = params
        .get("refresh_token")
        .ok_or_else(|| Error::invalid_request("refresh_token is missing"))?;
    refresh_grant(app, client, presented, params.get("scope")).await
}

/// The refresh-token grant for an authenticated `client` (rotation, optional
/// down-scoping, session extension). Returns the token response body. Public so
/// benchmarks can drive it without HTTP.
pub async fn refresh_grant(
    app: &App,
    client: &Client,
    presented: &str,
    scope: Option<&str>,
) -> Result<Value, Error> {
    let old_digest = sha256_hex(presented.as_bytes());
    let now = app.clock.now();
    let Some((_, family)) = app.store.refresh_family(&old_digest)? else {
        return Err(Error::invalid_grant("the refresh token is invalid"));
    };
    if family.client_id != client.id {
        return Err(Error::invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    // RFC 6749 §6: a narrower scope may be asked for, never a wider one.
    let scope = match scope {
        None => family.scope.clone(),
        Some(s) => {
            let asked = Scopes::parse(s).map_err(|e| Error::oauth("invalid_scope", e))?;
            if !asked.is_subset(&family.scope) {
                return Err(Error::oauth(
                    "invalid_scope",
                    "scope exceeds what was originally granted",
                ));
            }
            asked
        }
    };
    let new_token = random_token();
    let new_digest = sha256_hex(new_token.as_bytes());
    let rotation = app.store.rotate_refresh(
        &old_digest,
        &NewRefresh {
            digest: &new_digest,
            family_id: &family.id,
            expires_at: now + app.config.tokens.refresh_token_ttl.as_secs() as i64,
        },
        now,
        app.config.tokens.refresh_grace.as_secs() as i64,
        app.session_expiry(),
    )?;
    let family = match rotation {
        Rotation::Rotated(f) => f,
        Rotation::Invalid => return Err(Error::invalid_grant("the refresh token is invalid")),
        Rotation::ReuseDetected(f) => {
            app.store.flush().await?;
            app.metrics.inc(&app.metrics.refresh_reuse);
            tracing::warn!(
                security_event = "refresh_token_reuse",
                client = %f.client_id,
                user = %f.user_id,
                family = %f.id,
                "an already-rotated refresh token was presented: family revoked"
            );
            return Err(Error::invalid_grant("the refresh token is invalid"));
        }
    };
    let user = app
        .store
        .user(&family.user_id)?
        .ok_or_else(|| Error::invalid_grant("the user no longer exists"))?;
    let extra = app.plugin_claims(&user, &client.id, &scope).await?;
    let access = app.mint_access_token(AccessGrant {
        sub: user.id.as_str(),
        client_id: &client.id,
        scope: &scope,
        sid: Some(&family.sid),
        auth_time: Some(family.auth_time),
        extra,
    })?;
    let mut body = json!({
        "access_token": access.token,
        "token_type": "Bearer",
        "expires_in": access.exp - now,
        "scope": scope.to_string(),
        "refresh_token": new_token,
    });
    if scope.contains("openid") {
        // OIDC Core §12.2: a refreshed ID token keeps auth_time and carries no nonce.
        body["id_token"] = json!(app.mint_id_token(
            client,
            user.id.as_str(),
            family.auth_time,
            None,
            &family.sid,
            &access.token,
        )?);
    }
    app.store.flush().await?;
    Ok(body)
}

fn client_credentials(app: &App, client: &Client, params: &Params) -> Result<Value, Error> {
    if client.is_public() {
        return Err(Error::oauth(
            "unauthorized_client",
            "client_credentials requires a confidential client",
        ));
    }
    let scope = Scopes::parse(params.get("scope").unwrap_or(""))
        .map_err(|e| Error::oauth("invalid_scope", e))?;
    if !scope.is_empty() {
        return Err(Error::oauth(
            "invalid_scope",
            "user scopes cannot be granted without a user",
        ));
    }
    let access = app.mint_access_token(AccessGrant {
        sub: client.id.as_str(),
        client_id: &client.id,
        scope: &scope,
        sid: None,
        auth_time: None,
        extra: Default::default(),
    })?;
    Ok(json!({
        "access_token": access.token,
        "token_type": "Bearer",
        "expires_in": access.exp - app.clock.now(),
    }))
}
