//! Minting and checking tokens: access tokens (RFC 9068 JWT profile), ID tokens (OIDC
//! Core §2), and refresh tokens (opaque, stored as digests).

use crate::app::App;
use crate::crypto::{b64url, random_id, sha256};
use crate::http::Error;
use crate::keys::Alg;
use crate::store::{Client, IdTokenAlg};
use crate::types::{ClientId, Scopes};
use serde_json::{Value, json};

/// RFC 9068 §2.1: the media type of a JWT access token.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Who and what an access token is for.
pub struct AccessGrant<'a> {
    pub sub: &'a str,
    pub client_id: &'a ClientId,
    pub scope: &'a Scopes,
    pub sid: Option<&'a str>,
    pub auth_time: Option<i64>,
    /// Claims added by plugins (already checked not to override registered ones).
    pub extra: serde_json::Map<String, Value>,
}

pub struct MintedAccess {
    pub token: String,
    pub jti: String,
    pub exp: i64,
}

/// A verified access token's claims.
#[derive(Debug, Clone)]
pub struct AccessClaims {
    pub sub: String,
    pub client_id: String,
    pub scope: Scopes,
    pub sid: Option<String>,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    pub raw: Value,
}

impl App {
    /// Extra claims from plugins (already checked not to override registered claims).
    pub async fn plugin_claims(
        &self,
        user: &crate::store::User,
        client: &ClientId,
        scope: &Scopes,
    ) -> Result<serde_json::Map<String, Value>, Error> {
        match self.plugins.token_claims(user, client, scope).await {
            Ok(claims) => Ok(claims.into_iter().collect()),
            Err(e) => {
                tracing::warn!(error = %e, "token-claims plugin failed");
                Err(Error::OAuth {
                    status: hyper::StatusCode::SERVICE_UNAVAILABLE,
                    code: "temporarily_unavailable",
                    description: "tokens cannot be issued right now; retry later".into(),
                    challenge: None,
                })
            }
        }
    }

    pub fn mint_access_token(&self, grant: AccessGrant) -> Result<MintedAccess, Error> {
        let now = self.clock.now();
        let exp = now + self.config.tokens.access_token_ttl.as_secs() as i64;
        let jti = random_id("at_");
        let mut claims = grant.extra;
        let registered = json!({
            "iss": self.config.issuer,
            "sub": grant.sub,
            "aud": self.config.issuer,
            "client_id": grant.client_id,
            "scope": grant.scope.to_string(),
            "iat": now,
            "exp": exp,
            "jti": jti,
        });
        if let Value::Object(map) = registered {
            claims.extend(map);
        }
        if let Some(sid) = grant.sid {
            claims.insert("sid".into(), json!(sid));
        }
        if let Some(t) = grant.auth_time {
            claims.insert("auth_time".into(), json!(t));
        }
        let token = self
            .keys
            .sign(&Value::Object(claims), ACCESS_TOKEN_TYP, Alg::ES256, now)?;
        Ok(MintedAccess { token, jti, exp })
    }

    /// An ID token (OIDC Core §2, §3.1.3.6 `at_hash`), signed with the client's
    /// registered algorithm.
    pub fn mint_id_token(
        &self,
        client: &Client,
        sub: &str,
        auth_time: i64,
        nonce: Option<&str>,
        sid: &str,
        access_token: &str,
    ) -> Result<String, Error> {
        let now = self.clock.now();
        let half = &sha256(access_token.as_bytes())[..16];
        let mut claims = json!({
            "iss": self.config.issuer,
            "sub": sub,
            "aud": client.id,
            "iat": now,
            "exp": now + self.config.tokens.id_token_ttl.as_secs() as i64,
            "auth_time": auth_time,
            "sid": sid,
            "at_hash": b64url(half),
        });
        if let Some(n) = nonce {
            claims["nonce"] = json!(n);
        }
        let alg = match client.id_token_alg {
            IdTokenAlg::ES256 => Alg::ES256,
            IdTokenAlg::RS256 => Alg::RS256,
        };
        Ok(self.keys.sign(&claims, "JWT", alg, now)?)
    }

    /// Verifies an access token completely: signature by a published key, `typ`,
    /// issuer, expiry, not revoked, and — for tokens bound to a session — that the
    /// session is still live, so a logout kills its access tokens at once.
    pub fn verify_access_token(&self, token: &str) -> Result<AccessClaims, String> {
        let now = self.clock.now();
        let (typ, claims) = self.keys.verify(token, now).map_err(|e| e.to_string())?;
        // RFC 9068 §4: refuse anything not typed as an access token (e.g. ID tokens).
        if !typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) {
            return Err("not an access token".into());
        }
        let str_claim = |name: &str| claims[name].as_str().map(str::to_string);
        if str_claim("iss").as_deref() != Some(self.config.issuer.as_str()) {
            return Err("token from another issuer".into());
        }
        let exp = claims["exp"].as_i64().ok_or("token has no exp")?;
        if exp <= now {
            return Err("token expired".into());
        }
        let jti = str_claim("jti").ok_or("token has no jti")?;
        if self
            .store
            .access_token_revoked(&jti)
            .map_err(|e| e.to_string())?
        {
            return Err("token revoked".into());
        }
        let sid = str_claim("sid");
        if let Some(sid) = &sid
            && !self
                .store
                .sid_is_live(sid, now)
                .map_err(|e| e.to_string())?
        {
            return Err("the session of this token has ended".into());
        }
        Ok(AccessClaims {
            sub: str_claim("sub").ok_or("token has no sub")?,
            client_id: str_claim("client_id").unwrap_or_default(),
            scope: Scopes::parse(claims["scope"].as_str().unwrap_or(""))
                .map_err(|e| format!("token scope: {e}"))?,
            sid,
            jti,
            iat: claims["iat"].as_i64().unwrap_or(0),
            exp,
            raw: claims,
        })
    }
}
