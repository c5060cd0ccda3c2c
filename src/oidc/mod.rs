//! The OpenID Connect / OAuth 2.0 endpoints, one file per endpoint, plus the pieces they
//! share: pending authorization requests, client authentication and token minting.

pub mod authorize;
pub mod discovery;
pub mod guards;
pub mod introspect;
pub mod logout;
pub mod token;
pub mod tokens;
pub mod userinfo;

use crate::app::App;
use crate::clock::SharedClock;
use crate::crypto::{constant_time_eq, sha256_hex};
use crate::http::{Error, Req, params::Params};
use crate::store::Client;
use crate::types::{ClientId, RedirectUri, Scopes};
use base64::Engine;
use moka::sync::Cache;
use std::sync::Arc;
use std::time::Duration;

/// Back-channel logout tokens live this long (Back-Channel Logout 1.0 §2.4: short).
pub const LOGOUT_TOKEN_TTL: i64 = 120;
/// How long a user may take on the login and consent pages.
const PENDING_TTL_SECS: i64 = 900;

/// A validated authorization request waiting for the user to sign in or consent.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    pub client: Client,
    pub redirect_uri: RedirectUri,
    pub scope: Scopes,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: String,
    pub prompt: Prompt,
    pub max_age: Option<i64>,
    pub login_hint: Option<String>,
    /// Must match the form field and the browser's CSRF cookie.
    pub csrf: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Prompt {
    pub none: bool,
    pub login: bool,
    pub consent: bool,
}

/// Pending authorization requests, by random id. Held in memory: losing one on restart
/// only sends the user back to the relying app.
pub struct PendingRequests {
    clock: SharedClock,
    cache: Cache<String, Arc<AuthRequest>>,
}

impl PendingRequests {
    pub fn new(clock: SharedClock) -> PendingRequests {
        PendingRequests {
            clock,
            cache: Cache::builder()
                .max_capacity(200_000)
                .time_to_live(Duration::from_secs(PENDING_TTL_SECS as u64))
                .build(),
        }
    }

    pub fn insert(&self, request: AuthRequest) -> String {
        let id = crate::crypto::random_token();
        self.cache.insert(id.clone(), Arc::new(request));
        id
    }

    pub fn get(&self, id: &str) -> Option<Arc<AuthRequest>> {
        self.cache
            .get(id)
            .filter(|r| r.expires_at > self.clock.now())
    }

    pub fn remove(&self, id: &str) {
        self.cache.invalidate(id);
    }
}

/// How the client authenticated at the token, revocation or introspection endpoint.
pub struct AuthenticatedClient {
    pub client: Client,
}

/// RFC 6749 §2.3.1: `client_secret_basic` (form-urlencoded id and secret inside Basic)
/// or `client_secret_post`; a public client identifies itself by `client_id` alone.
/// Using two methods at once is refused.
pub fn authenticate_client(
    app: &App,
    req: &Req,
    params: &Params,
) -> Result<AuthenticatedClient, Error> {
    let basic = req.header("authorization").and_then(|h| {
        h.strip_prefix("Basic ")
            .or_else(|| h.strip_prefix("basic "))
    });
    let (id, secret, used_basic) = match basic {
        Some(encoded) => {
            if params.get("client_secret").is_some() {
                return Err(Error::invalid_request(
                    "use one client authentication method, not two",
                ));
            }
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|_| Error::invalid_client(true))?;
            let decoded = String::from_utf8(decoded).map_err(|_| Error::invalid_client(true))?;
            let (id, secret) = decoded.split_once(':').ok_or(Error::invalid_client(true))?;
            let decode = |s: &str| {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            let id = decode(id);
            if let Some(param_id) = params.get("client_id")
                && param_id != id
            {
                return Err(Error::invalid_client(true));
            }
            (id, Some(decode(secret)), true)
        }
        None => {
            let id = params
                .get("client_id")
                .ok_or_else(|| Error::invalid_client(false))?;
            (
                id.to_string(),
                params.get("client_secret").map(str::to_string),
                false,
            )
        }
    };
    let client_id = ClientId::parse(&id).map_err(|_| Error::invalid_client(used_basic))?;
    let client = app
        .store
        .client(&client_id)?
        .ok_or_else(|| Error::invalid_client(used_basic))?;
    match (&client.secret_digest, secret) {
        (None, None) => {}
        (Some(digest), Some(secret)) => {
            let presented = sha256_hex(secret.as_bytes());
            if !constant_time_eq(presented.as_bytes(), digest.as_bytes()) {
                tracing::info!(client = %client.id, "client authentication failed");
                return Err(Error::invalid_client(used_basic));
            }
        }
        _ => return Err(Error::invalid_client(used_basic)),
    }
    Ok(AuthenticatedClient { client })
}

impl App {
    /// An endpoint URL under the issuer.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.issuer_base())
    }
}
