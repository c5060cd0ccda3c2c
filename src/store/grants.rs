//! Authorization codes, refresh-token families, consent grants and revoked access tokens.

use super::sessions::{digest_for_sid, index_key, touch_in, user_index};
use super::{Session, Store, StoreError, TxResult, Txn};
use crate::types::{ClientId, RedirectUri, Scopes, UserId};
use serde::{Deserialize, Serialize};

/// What a code was issued for (RFC 6749 §4.1.2, RFC 7636 §4.4).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthCode {
    pub client_id: ClientId,
    pub redirect_uri: RedirectUri,
    pub code_challenge: String,
    pub nonce: Option<String>,
    pub scope: Scopes,
    pub user_id: UserId,
    pub sid: String,
    pub auth_time: i64,
    pub expires_at: i64,
    pub redeemed: Option<Redeemed>,
}

/// What a redeemed code issued, so a replay can revoke it (RFC 6749 §4.1.2).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Redeemed {
    pub family: Option<String>,
    pub access_jti: String,
    pub access_exp: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Family {
    pub id: String,
    pub user_id: UserId,
    pub client_id: ClientId,
    pub scope: Scopes,
    pub sid: String,
    pub auth_time: i64,
    pub revoked: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefreshState {
    Active,
    /// Rotated at `at`; `grace_used` once it was accepted again within the grace period.
    Rotated {
        at: i64,
        grace_used: bool,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshRecord {
    pub family: String,
    pub state: RefreshState,
    pub expires_at: i64,
}

/// The outcome of presenting a refresh token.
#[derive(Debug)]
pub enum Rotation {
    /// Rotated: the new token is live and the session was extended.
    Rotated(Family),
    /// Unknown, expired, revoked, or its session has ended.
    Invalid,
    /// An already-rotated token outside its grace: the family is now revoked.
    ReuseDetected(Family),
}

/// The outcome of redeeming a code.
#[derive(Debug)]
pub enum Redemption {
    Issued(Session),
    /// Unknown, expired or its session has ended.
    Invalid,
    /// Already redeemed: what it issued is now revoked.
    Replayed,
}

pub(crate) fn code_key(digest: &str) -> String {
    format!("code/{digest}")
}
pub(crate) fn refresh_key(digest: &str) -> String {
    format!("refresh/{digest}")
}
pub(crate) fn family_key(id: &str) -> String {
    format!("family/{id}")
}
fn consent_key(user: &UserId, client: &ClientId) -> String {
    format!("consent/{user}/{client}")
}
/// The digest of the family's one live token.
pub(crate) fn active_key(family: &str) -> String {
    format!("active/{family}")
}
pub(crate) fn revoked_jti_key(jti: &str) -> String {
    format!("revokedjti/{jti}")
}

/// Marks a family revoked; returns whether it was live.
pub(crate) fn revoke_family_in(tx: &Txn, id: &str) -> TxResult<bool> {
    let Some(mut family) = tx.get::<Family>(&family_key(id))? else {
        return Ok(false);
    };
    let was_live = !family.revoked;
    family.revoked = true;
    tx.put(&family_key(id), &family)?;
    Ok(was_live)
}

/// The parameters of a new refresh token.
pub struct NewRefresh<'a> {
    pub digest: &'a str,
    pub family_id: &'a str,
    pub expires_at: i64,
}

impl Store {
    pub fn insert_code(&self, digest: &str, code: &AuthCode) -> Result<(), StoreError> {
        self.transact(|tx| tx.put(&code_key(digest), code))
    }

    /// Slides the session, records `client` as signed in through it, and stores the code
    /// `make` builds from the session, in one transaction. `None` when the session ended
    /// meanwhile.
    pub fn issue_code(
        &self,
        session_digest: &str,
        now: i64,
        session_expires_at: i64,
        client: &ClientId,
        code_digest: &str,
        make: impl Fn(&Session) -> AuthCode,
    ) -> Result<Option<Session>, StoreError> {
        self.transact(|tx| {
            let Some(session) =
                touch_in(tx, session_digest, now, session_expires_at, Some(client))?
            else {
                return Ok(None);
            };
            tx.put(&code_key(code_digest), &make(&session))?;
            Ok(Some(session))
        })
    }

    pub fn code(&self, digest: &str) -> Result<Option<AuthCode>, StoreError> {
        self.get(&code_key(digest))
    }

    /// Redeems a code once: marks it used, records what it issued, creates the refresh
    /// family (when `refresh` is given) and slides the session, atomically. A second
    /// redemption revokes the family and the access token the first one issued.
    pub fn redeem_code(
        &self,
        digest: &str,
        now: i64,
        session_expires_at: i64,
        issued: &Redeemed,
        refresh: Option<&NewRefresh>,
    ) -> Result<Redemption, StoreError> {
        self.transact(|tx| {
            let Some(mut code) = tx.get::<AuthCode>(&code_key(digest))? else {
                return Ok(Redemption::Invalid);
            };
            if let Some(previous) = &code.redeemed {
                if let Some(family) = &previous.family {
                    revoke_family_in(tx, family)?;
                }
                tx.put(&revoked_jti_key(&previous.access_jti), &previous.access_exp)?;
                return Ok(Redemption::Replayed);
            }
            if code.expires_at <= now {
                return Ok(Redemption::Invalid);
            }
            let Some(session_digest) = digest_for_sid(tx, &code.sid)? else {
                return Ok(Redemption::Invalid);
            };
            let Some(session) = touch_in(
                tx,
                &session_digest,
                now,
                session_expires_at,
                Some(&code.client_id),
            )?
            else {
                return Ok(Redemption::Invalid);
            };
            if let Some(new) = refresh {
                let family = Family {
                    id: new.family_id.to_string(),
                    user_id: code.user_id.clone(),
                    client_id: code.client_id.clone(),
                    scope: code.scope.clone(),
                    sid: code.sid.clone(),
                    auth_time: code.auth_time,
                    revoked: false,
                    created_at: now,
                };
                tx.put(&family_key(&family.id), &family)?;
                let mut index = user_index(tx, &code.user_id)?;
                index.families.push(family.id.clone());
                tx.put(&index_key(&code.user_id), &index)?;
                tx.put(&active_key(&family.id), &new.digest)?;
                tx.put(
                    &refresh_key(new.digest),
                    &RefreshRecord {
                        family: family.id,
                        state: RefreshState::Active,
                        expires_at: new.expires_at,
                    },
                )?;
            }
            code.redeemed = Some(issued.clone());
            tx.put(&code_key(digest), &code)?;
            Ok(Redemption::Issued(session))
        })
    }

    /// Rotates a refresh token (RFC 9700 §4.14.2): the presented token must be the
    /// family's live one, or a just-rotated one within `grace_secs` (accepted once).
    /// Reuse of any other rotated token revokes the whole family.
    pub fn rotate_refresh(
        &self,
        old_digest: &str,
        new: &NewRefresh,
        now: i64,
        grace_secs: i64,
        session_expires_at: i64,
    ) -> Result<Rotation, StoreError> {
        self.transact(|tx| {
            let Some(mut old) = tx.get::<RefreshRecord>(&refresh_key(old_digest))? else {
                return Ok(Rotation::Invalid);
            };
            let Some(family) = tx.get::<Family>(&family_key(&old.family))? else {
                return Ok(Rotation::Invalid);
            };
            if family.revoked || old.expires_at <= now {
                return Ok(Rotation::Invalid);
            }
            match old.state {
                RefreshState::Active => {
                    old.state = RefreshState::Rotated {
                        at: now,
                        grace_used: false,
                    };
                }
                // A grace of zero means none: not even a reuse within the same second.
                RefreshState::Rotated {
                    at,
                    grace_used: false,
                } if grace_secs > 0 && now - at <= grace_secs => {
                    // A concurrent request already rotated this token; its successor
                    // stops being live so the family keeps exactly one live token.
                    old.state = RefreshState::Rotated {
                        at,
                        grace_used: true,
                    };
                    retire_active_in(tx, &family.id, now)?;
                }
                RefreshState::Rotated { .. } => {
                    revoke_family_in(tx, &family.id)?;
                    return Ok(Rotation::ReuseDetected(family));
                }
            }
            let Some(session_digest) = digest_for_sid(tx, &family.sid)? else {
                return Ok(Rotation::Invalid);
            };
            if touch_in(tx, &session_digest, now, session_expires_at, None)?.is_none() {
                return Ok(Rotation::Invalid);
            }
            tx.put(&refresh_key(old_digest), &old)?;
            tx.put(&active_key(&family.id), &new.digest)?;
            tx.put(
                &refresh_key(new.digest),
                &RefreshRecord {
                    family: family.id.clone(),
                    state: RefreshState::Active,
                    expires_at: new.expires_at,
                },
            )?;
            Ok(Rotation::Rotated(family))
        })
    }

    /// The refresh token's family, if the token is known.
    pub fn refresh_family(
        &self,
        digest: &str,
    ) -> Result<Option<(RefreshRecord, Family)>, StoreError> {
        let Some(record) = self.get::<RefreshRecord>(&refresh_key(digest))? else {
            return Ok(None);
        };
        Ok(self
            .get::<Family>(&family_key(&record.family))?
            .map(|f| (record, f)))
    }

    /// Revokes a refresh token's whole family (RFC 7009 §2.1).
    pub fn revoke_refresh(&self, digest: &str) -> Result<bool, StoreError> {
        self.transact(|tx| {
            let Some(record) = tx.get::<RefreshRecord>(&refresh_key(digest))? else {
                return Ok(false);
            };
            revoke_family_in(tx, &record.family)
        })
    }

    /// Revokes one access token by its `jti` until it would have expired anyway.
    pub fn revoke_access_token(&self, jti: &str, exp: i64) -> Result<(), StoreError> {
        self.transact(|tx| tx.put(&revoked_jti_key(jti), &exp))
    }

    pub fn access_token_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        Ok(self.get::<i64>(&revoked_jti_key(jti))?.is_some())
    }

    pub fn consented(&self, user: &UserId, client: &ClientId) -> Result<Scopes, StoreError> {
        Ok(self.get(&consent_key(user, client))?.unwrap_or_default())
    }

    pub fn grant_consent(
        &self,
        user: &UserId,
        client: &ClientId,
        scopes: &Scopes,
    ) -> Result<(), StoreError> {
        self.transact(|tx| {
            let granted: Scopes = tx.get(&consent_key(user, client))?.unwrap_or_default();
            tx.put(&consent_key(user, client), &granted.union(scopes))
        })
    }

    /// Every refresh family, for consistency checks.
    pub fn families(&self) -> Result<Vec<Family>, StoreError> {
        Ok(self.scan("family/")?.into_iter().map(|(_, f)| f).collect())
    }

    /// How many tokens of `family` are live right now (0 or 1 if all is well).
    pub fn live_tokens_in_family(&self, family: &str, now: i64) -> Result<usize, StoreError> {
        Ok(self
            .scan::<RefreshRecord>("refresh/")?
            .into_iter()
            .filter(|(_, r)| {
                r.family == family && r.state == RefreshState::Active && r.expires_at > now
            })
            .count())
    }
}

/// Marks the family's current live token rotated (used by the grace path).
fn retire_active_in(tx: &Txn, family: &str, now: i64) -> TxResult<()> {
    if let Some(digest) = tx.get::<String>(&active_key(family))?
        && let Some(mut record) = tx.get::<RefreshRecord>(&refresh_key(&digest))?
        && record.state == RefreshState::Active
    {
        record.state = RefreshState::Rotated {
            at: now,
            grace_used: false,
        };
        tx.put(&refresh_key(&digest), &record)?;
    }
    Ok(())
}
