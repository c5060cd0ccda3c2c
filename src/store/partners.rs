//! Partners: their API keys (stored as SHA-256 digests, indexed by digest), webhook
//! secrets, and settings.

use super::{Store, StoreError, TxResult, Txn};
use crate::types::RedirectUri;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartnerKey {
    pub key_id: String,
    pub digest: String,
    pub created_at: i64,
    /// Set when a rotation with overlap retires this key at that time.
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookSecret {
    /// Kept in clear: signing needs it. Shown to the partner once.
    pub secret: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Partner {
    pub id: String,
    pub name: String,
    pub event_types: Vec<String>,
    pub multiplier: f64,
    pub webhook_url: Option<RedirectUri>,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub keys: Vec<PartnerKey>,
    pub webhook_secrets: Vec<WebhookSecret>,
    /// Set when the endpoint answered 410 or kept failing: deliveries stop.
    #[serde(default)]
    pub webhook_disabled_at: Option<i64>,
    /// Start of the current run of failed deliveries; cleared by a success.
    #[serde(default)]
    pub webhook_failing_since: Option<i64>,
}

impl Partner {
    pub fn live_keys(&self, now: i64) -> impl Iterator<Item = &PartnerKey> {
        self.keys
            .iter()
            .filter(move |k| k.expires_at.is_none_or(|t| t > now))
    }

    pub fn live_secrets(&self, now: i64) -> impl Iterator<Item = &WebhookSecret> {
        self.webhook_secrets
            .iter()
            .filter(move |s| s.expires_at.is_none_or(|t| t > now))
    }
}

pub(crate) fn partner_key(id: &str) -> String {
    format!("partner/{id}")
}
fn apikey_key(digest: &str) -> String {
    format!("apikey/{digest}")
}

fn load(tx: &Txn, id: &str) -> TxResult<Partner> {
    match tx.get::<Partner>(&partner_key(id))? {
        Some(p) => Ok(p),
        None => tx.reject(format!("no partner {id:?}")),
    }
}

/// How an old key or secret ends when a new one replaces it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum Retire {
    /// At once (a compromise).
    Now,
    /// At this time (zero-downtime rotation).
    At(i64),
}

impl Retire {
    /// When something that currently ends at `current` (never, if `None`) ends now.
    fn end_for(self, current: Option<i64>, now: i64) -> i64 {
        match self {
            Retire::Now => now,
            Retire::At(t) => current.map_or(t, |e| e.min(t)),
        }
    }
}

impl Store {
    pub fn insert_partner(&self, partner: &Partner) -> Result<(), StoreError> {
        self.transact(|tx| {
            if tx.get::<Partner>(&partner_key(&partner.id))?.is_some() {
                return tx.reject(format!("partner {:?} already exists", partner.id));
            }
            for k in &partner.keys {
                tx.put(&apikey_key(&k.digest), &partner.id)?;
            }
            tx.put(&partner_key(&partner.id), partner)
        })
    }

    pub fn partner(&self, id: &str) -> Result<Option<Partner>, StoreError> {
        self.get(&partner_key(id))
    }

    pub fn partners(&self) -> Result<Vec<Partner>, StoreError> {
        Ok(self.scan("partner/")?.into_iter().map(|(_, p)| p).collect())
    }

    /// The partner whose live key has this digest, if it is enabled.
    pub fn partner_by_key_digest(
        &self,
        digest: &str,
        now: i64,
    ) -> Result<Option<(Partner, String)>, StoreError> {
        let Some(id) = self.get::<String>(&apikey_key(digest))? else {
            return Ok(None);
        };
        let Some(partner) = self.partner(&id)? else {
            return Ok(None);
        };
        let key_id = partner
            .live_keys(now)
            .find(|k| crate::crypto::constant_time_eq(k.digest.as_bytes(), digest.as_bytes()))
            .map(|k| k.key_id.clone());
        Ok(key_id.filter(|_| partner.enabled).map(|k| (partner, k)))
    }

    /// Applies `change` to the partner atomically.
    pub fn update_partner(
        &self,
        id: &str,
        change: impl Fn(&mut Partner),
    ) -> Result<Partner, StoreError> {
        self.transact(|tx| {
            let mut p = load(tx, id)?;
            change(&mut p);
            tx.put(&partner_key(id), &p)?;
            Ok(p)
        })
    }

    /// Adds a new API key; the old live keys retire as `retire` says. Keys already past
    /// their end are dropped, and at most two keys stay live.
    pub fn rotate_partner_key(
        &self,
        id: &str,
        new: &PartnerKey,
        retire: Retire,
        now: i64,
    ) -> Result<Partner, StoreError> {
        self.transact(|tx| {
            let mut p = load(tx, id)?;
            for k in p.keys.iter_mut() {
                k.expires_at = Some(retire.end_for(k.expires_at, now));
            }
            // Drop keys already over, and every old key but the newest: a partner holds
            // at most two live keys.
            p.keys.sort_by_key(|k| k.created_at);
            let newest_old = p.keys.len().saturating_sub(1);
            let (dropped, kept): (Vec<_>, Vec<_>) = p
                .keys
                .drain(..)
                .enumerate()
                .partition(|(i, k)| *i < newest_old || k.expires_at.is_some_and(|t| t <= now));
            for (_, k) in dropped {
                tx.remove(&apikey_key(&k.digest))?;
            }
            p.keys = kept.into_iter().map(|(_, k)| k).collect();
            p.keys.push(new.clone());
            p.updated_at = now;
            tx.put(&apikey_key(&new.digest), &p.id)?;
            tx.put(&partner_key(id), &p)?;
            Ok(p)
        })
    }

    /// Adds a new webhook secret; old ones retire as `retire` says.
    pub fn rotate_webhook_secret(
        &self,
        id: &str,
        new: &WebhookSecret,
        retire: Retire,
        now: i64,
    ) -> Result<Partner, StoreError> {
        self.update_partner(id, |p| {
            for s in p.webhook_secrets.iter_mut() {
                s.expires_at = Some(retire.end_for(s.expires_at, now));
            }
            p.webhook_secrets
                .retain(|s| s.expires_at.is_none_or(|t| t > now));
            p.webhook_secrets.push(new.clone());
            p.updated_at = now;
        })
    }
}

/// What a partner event was answered with, kept forever for idempotency: the same
/// partner and `reference_id` always get this answer back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRecord {
    pub event_id: String,
    /// SHA-256 of the canonical request body: a different body is a conflict.
    pub request_hash: String,
    pub user_id: String,
    pub event_type: String,
    pub points_awarded: i64,
    pub created_at: i64,
}

fn event_key(partner: &str, reference_id: &str) -> String {
    format!("event/{partner}/{reference_id}")
}

/// Inserts an event record inside a plugin call's transaction; an existing record
/// (a concurrent duplicate that won) rejects the whole commit.
pub fn insert_event_in(
    tx: &Txn,
    partner: &str,
    reference_id: &str,
    record: &EventRecord,
) -> TxResult<()> {
    if tx
        .get::<EventRecord>(&event_key(partner, reference_id))?
        .is_some()
    {
        return tx.reject("duplicate reference_id");
    }
    tx.put(&event_key(partner, reference_id), record)
}

impl Store {
    pub fn event_record(
        &self,
        partner: &str,
        reference_id: &str,
    ) -> Result<Option<EventRecord>, StoreError> {
        self.get(&event_key(partner, reference_id))
    }

    /// Every event record of every partner, for consistency checks.
    pub fn event_records(&self) -> Result<Vec<(String, EventRecord)>, StoreError> {
        self.scan("event/")
    }
}
