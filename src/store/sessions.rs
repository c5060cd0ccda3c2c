//! Browser sessions, the per-user index that lets one transaction end them all, and the
//! logout routine's storage half.

use super::{OutboxItem, OutboxKind, Store, StoreError, TxResult, Txn};
use crate::types::{ClientId, UserId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// Public session id: the `sid` claim. Distinct from the cookie secret.
    pub sid: String,
    pub user_id: UserId,
    pub auth_time: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub remember: bool,
    /// Clients that received tokens through this session (for back-channel logout).
    pub clients: Vec<ClientId>,
}

/// Everything of a user's that a logout must end, in one record so a transaction that
/// reads it conflicts with any concurrent login or token issuance.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct UserIndex {
    pub sessions: Vec<String>,
    pub families: Vec<String>,
}

pub(crate) fn session_key(digest: &str) -> String {
    format!("session/{digest}")
}
pub(crate) fn sid_key(sid: &str) -> String {
    format!("sid/{sid}")
}
pub(crate) fn index_key(user: &UserId) -> String {
    format!("useridx/{user}")
}

pub(crate) fn user_index(tx: &Txn, user: &UserId) -> TxResult<UserIndex> {
    Ok(tx.get(&index_key(user))?.unwrap_or_default())
}

/// What [`Store::logout_user`] ended.
#[derive(Debug, Default, Clone, Serialize)]
pub struct LogoutSummary {
    pub sessions_ended: usize,
    pub families_revoked: usize,
    pub backchannel_queued: usize,
}

/// Ends every session and refresh family of `user` inside `tx`; returns the sessions
/// that were live, for back-channel notification.
pub(crate) fn end_all_in(tx: &Txn, user: &UserId) -> TxResult<(Vec<Session>, usize)> {
    let index = user_index(tx, user)?;
    let mut sessions = Vec::new();
    for digest in &index.sessions {
        if let Some(s) = tx.get::<Session>(&session_key(digest))? {
            tx.remove(&sid_key(&s.sid))?;
            sessions.push(s);
        }
        tx.remove(&session_key(digest))?;
    }
    let mut families = 0;
    for family in &index.families {
        if super::grants::revoke_family_in(tx, family)? {
            families += 1;
        }
    }
    tx.remove(&index_key(user))?;
    Ok((sessions, families))
}

impl Store {
    /// Stores a new session under the digest of its cookie value.
    pub fn create_session(&self, digest: &str, session: &Session) -> Result<(), StoreError> {
        self.transact(|tx| {
            let mut index = user_index(tx, &session.user_id)?;
            index.sessions.push(digest.to_string());
            tx.put(&index_key(&session.user_id), &index)?;
            tx.put(&sid_key(&session.sid), &digest)?;
            tx.put(&session_key(digest), session)
        })
    }

    /// The session for a cookie digest, if it exists and has not expired.
    pub fn live_session(&self, digest: &str, now: i64) -> Result<Option<Session>, StoreError> {
        Ok(self
            .get::<Session>(&session_key(digest))?
            .filter(|s| s.expires_at > now))
    }

    /// Whether the session with public id `sid` is still live: how bearer tokens die
    /// with their session.
    pub fn sid_is_live(&self, sid: &str, now: i64) -> Result<bool, StoreError> {
        match self.get::<String>(&sid_key(sid))? {
            Some(digest) => Ok(self.live_session(&digest, now)?.is_some()),
            None => Ok(false),
        }
    }

    /// Ends every session and refresh family of `user` and queues one back-channel
    /// logout per notified client and session, all in one transaction.
    pub fn logout_user(&self, user: &UserId, now: i64) -> Result<LogoutSummary, StoreError> {
        self.transact(|tx| {
            let (sessions, families_revoked) = end_all_in(tx, user)?;
            let mut queued = 0;
            let mut notified: Vec<(ClientId, Option<String>)> = Vec::new();
            for session in &sessions {
                for client_id in &session.clients {
                    let Some(client) = tx.get::<super::Client>(&super::clients_key(client_id))?
                    else {
                        continue;
                    };
                    let Some(uri) = client.backchannel_logout_uri else {
                        continue;
                    };
                    // Back-Channel Logout 1.0 §2.4: sid is required only when the client
                    // asked for it; otherwise one token per client (by sub) is enough.
                    let sid = client
                        .backchannel_logout_session_required
                        .then(|| session.sid.clone());
                    let target = (client_id.clone(), sid.clone());
                    if notified.contains(&target) {
                        continue;
                    }
                    notified.push(target);
                    let item = OutboxItem::new(
                        OutboxKind::BackchannelLogout {
                            client_id: client_id.clone(),
                            sub: user.clone(),
                            sid,
                        },
                        uri.as_str().to_string(),
                        now,
                    );
                    super::outbox::enqueue_in(tx, &item)?;
                    queued += 1;
                }
            }
            Ok(LogoutSummary {
                sessions_ended: sessions.len(),
                families_revoked,
                backchannel_queued: queued,
            })
        })
    }

    /// The user's live sessions.
    pub fn sessions_of(&self, user: &UserId, now: i64) -> Result<Vec<Session>, StoreError> {
        let index: UserIndex = self.get(&index_key(user))?.unwrap_or_default();
        let mut out = Vec::new();
        for digest in index.sessions {
            if let Some(s) = self.live_session(&digest, now)? {
                out.push(s);
            }
        }
        Ok(out)
    }
}

/// Slides the session's expiry to `expires_at` and records `client` as signed in.
/// Returns `None` when the session has ended meanwhile.
pub(crate) fn touch_in(
    tx: &Txn,
    digest: &str,
    now: i64,
    expires_at: i64,
    client: Option<&ClientId>,
) -> TxResult<Option<Session>> {
    let Some(mut session) = tx.get::<Session>(&session_key(digest))? else {
        return Ok(None);
    };
    if session.expires_at <= now {
        return Ok(None);
    }
    session.expires_at = session.expires_at.max(expires_at);
    if let Some(c) = client
        && !session.clients.contains(c)
    {
        session.clients.push(c.clone());
    }
    tx.put(&session_key(digest), &session)?;
    Ok(Some(session))
}

pub(crate) fn digest_for_sid(tx: &Txn, sid: &str) -> TxResult<Option<String>> {
    tx.get(&sid_key(sid))
}
