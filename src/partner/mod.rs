//! Partners: records, API keys (issue, look up, rotate), the partner guard, and the
//! operations both the CLI and the admin API use.

pub mod api;
pub mod events;
pub mod keys;
pub mod ratelimit;

use crate::app::App;
use crate::crypto::{random_id, sha256_hex};
use crate::http::{Error, Req};
use crate::store::{Partner, PartnerKey, Retire, StoreError, WebhookSecret};
use crate::types::RedirectUri;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What an operator gives to create or change a partner.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerSpec {
    pub name: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub multiplier: Option<f64>,
    /// `Some("")` removes the webhook URL.
    pub webhook_url: Option<String>,
    pub enabled: Option<bool>,
}

/// A partner as shown to operators: never a key digest or a secret.
pub fn view(p: &Partner, now: i64) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "event_types": p.event_types,
        "multiplier": p.multiplier,
        "webhook_url": p.webhook_url,
        "webhook_disabled_at": p.webhook_disabled_at,
        "enabled": p.enabled,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
        "keys": p.live_keys(now).map(|k| json!({
            "key_id": k.key_id,
            "created_at": k.created_at,
            "expires_at": k.expires_at,
            "last_used_at": k.last_used_at,
        })).collect::<Vec<_>>(),
        "webhook_secrets": p.live_secrets(now).map(|s| json!({
            "created_at": s.created_at,
            "expires_at": s.expires_at,
        })).collect::<Vec<_>>(),
    })
}

/// Validates a spec against a partner being created (`None`) or changed.
fn apply(spec: &PartnerSpec, p: &mut Partner) -> Result<(), String> {
    if let Some(name) = &spec.name {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err("name: must be 1-200 characters".into());
        }
        p.name = name.to_string();
    }
    if let Some(types) = &spec.event_types {
        if types.is_empty() {
            return Err("event_types: at least one event type is required".into());
        }
        for t in types {
            if t.is_empty()
                || t.len() > 64
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(format!(
                    "event_types: {t:?} must be 1-64 letters, digits, '.', '_' or '-'"
                ));
            }
        }
        let mut types = types.clone();
        types.sort();
        types.dedup();
        p.event_types = types;
    }
    if let Some(m) = spec.multiplier {
        if !m.is_finite() || m <= 0.0 || m > 100.0 {
            return Err("multiplier: must be a number above 0 and at most 100".into());
        }
        p.multiplier = m;
    }
    if let Some(url) = &spec.webhook_url {
        p.webhook_url = if url.is_empty() {
            None
        } else {
            Some(RedirectUri::parse(url).map_err(|e| format!("webhook_url: {e}"))?)
        };
        p.webhook_disabled_at = None;
        p.webhook_failing_since = None;
    }
    if let Some(enabled) = spec.enabled {
        p.enabled = enabled;
    }
    Ok(())
}

/// A newly created partner with its credentials, shown once.
pub struct Created {
    pub partner: Partner,
    pub api_key: String,
    pub webhook_secret: String,
}

fn new_key(now: i64) -> (PartnerKey, String) {
    let key = keys::generate();
    (
        PartnerKey {
            key_id: random_id("key_"),
            digest: sha256_hex(key.as_bytes()),
            created_at: now,
            expires_at: None,
            last_used_at: None,
        },
        key,
    )
}

pub fn create(app: &App, spec: &PartnerSpec) -> Result<Created, Error> {
    let now = app.clock.now();
    if spec.name.is_none() || spec.event_types.is_none() {
        return Err(Error::bad_request("name and event_types are required"));
    }
    let (key, api_key) = new_key(now);
    let webhook_secret = crate::webhook::generate_secret();
    let mut partner = Partner {
        id: random_id("ptn_"),
        name: String::new(),
        event_types: Vec::new(),
        multiplier: 1.0,
        webhook_url: None,
        enabled: true,
        created_at: now,
        updated_at: now,
        keys: vec![key],
        webhook_secrets: vec![WebhookSecret {
            secret: webhook_secret.clone(),
            created_at: now,
            expires_at: None,
        }],
        webhook_disabled_at: None,
        webhook_failing_since: None,
    };
    apply(spec, &mut partner).map_err(Error::bad_request)?;
    app.store.insert_partner(&partner)?;
    Ok(Created {
        partner,
        api_key,
        webhook_secret,
    })
}

fn not_found(id: &str) -> Error {
    Error::api(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no partner {id:?}"),
    )
}

fn from_store(id: &str, e: StoreError) -> Error {
    match e {
        StoreError::Rejected(_) => not_found(id),
        other => Error::from(other),
    }
}

pub fn update(app: &App, id: &str, spec: &PartnerSpec) -> Result<Partner, Error> {
    let now = app.clock.now();
    let mut current = app.store.partner(id)?.ok_or_else(|| not_found(id))?;
    // Validate first so a bad field changes nothing.
    apply(spec, &mut current).map_err(Error::bad_request)?;
    app.store
        .update_partner(id, |p| {
            let _ = apply(spec, p);
            p.updated_at = now;
        })
        .map_err(|e| from_store(id, e))
}

/// How a rotation treats the old credential.
pub fn retire_from(overlap_secs: Option<u64>, now: i64) -> Retire {
    match overlap_secs {
        None | Some(0) => Retire::Now,
        Some(s) => Retire::At(now + s as i64),
    }
}

pub fn rotate_key(app: &App, id: &str, retire: Retire) -> Result<(Partner, String), Error> {
    let now = app.clock.now();
    let (key, api_key) = new_key(now);
    let partner = app
        .store
        .rotate_partner_key(id, &key, retire, now)
        .map_err(|e| from_store(id, e))?;
    tracing::info!(partner = %id, "partner API key rotated");
    Ok((partner, api_key))
}

pub fn rotate_webhook_secret(
    app: &App,
    id: &str,
    retire: Retire,
) -> Result<(Partner, String), Error> {
    let now = app.clock.now();
    let secret = crate::webhook::generate_secret();
    let partner = app
        .store
        .rotate_webhook_secret(
            id,
            &WebhookSecret {
                secret: secret.clone(),
                created_at: now,
                expires_at: None,
            },
            retire,
            now,
        )
        .map_err(|e| from_store(id, e))?;
    Ok((partner, secret))
}

/// The guard for `/api/partner/*`: a live key in `X-API-Key` (never the query string).
/// Every failure gets the same answer, so it never tells which check failed.
pub fn require_partner(app: &App, req: &Req) -> Result<Partner, Error> {
    let refuse = || {
        Error::api(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "a valid API key is required in the X-API-Key header",
        )
    };
    let key = req.header("x-api-key").ok_or_else(refuse)?;
    if !keys::well_formed(key) {
        return Err(refuse());
    }
    let now = app.clock.now();
    let (partner, key_id) = app
        .store
        .partner_by_key_digest(&sha256_hex(key.as_bytes()), now)?
        .ok_or_else(refuse)?;
    record_use(app, &partner, &key_id, now);
    Ok(partner)
}

/// Records `last_used_at`, at most once a minute per key so the hot path rarely writes.
fn record_use(app: &App, partner: &Partner, key_id: &str, now: i64) {
    let stale = partner
        .keys
        .iter()
        .find(|k| k.key_id == key_id)
        .is_some_and(|k| k.last_used_at.is_none_or(|t| now - t >= 60));
    if stale {
        let result = app.store.update_partner(&partner.id, |p| {
            if let Some(k) = p.keys.iter_mut().find(|k| k.key_id == key_id) {
                k.last_used_at = Some(now);
            }
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot record API key use");
        }
    }
}
