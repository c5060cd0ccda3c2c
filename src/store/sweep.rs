//! The janitor: removes what can no longer matter — expired sessions, old codes, expired
//! or revoked refresh tokens and their families, revocations of expired access tokens,
//! old delivery records — so the store and each user's index stop growing.

use super::grants::{active_key, code_key, family_key, refresh_key, revoked_jti_key};
use super::outbox::done_key;
use super::sessions::{index_key, session_key, sid_key, user_index};
use super::{AuthCode, Family, Finished, OutboxItem, RefreshRecord, Session, Store, StoreError};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// How long a redeemed or expired code is kept so a replay is still recognised and
/// revokes what the code issued (RFC 6749 §4.1.2).
const CODE_REPLAY_WINDOW: i64 = 24 * 3600;

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct SweepReport {
    pub sessions: usize,
    pub codes: usize,
    pub refresh_tokens: usize,
    pub families: usize,
    pub revoked_access_tokens: usize,
    pub finished_deliveries: usize,
}

fn suffix<'a>(key: &'a str, prefix: &str) -> &'a str {
    key.strip_prefix(prefix).unwrap_or(key)
}

impl Store {
    /// One pass of the janitor at time `now`; delivery records older than
    /// `keep_deliveries` seconds go too.
    pub fn sweep(&self, now: i64, keep_deliveries: i64) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();

        for (key, session) in self.scan::<Session>("session/")? {
            if session.expires_at > now {
                continue;
            }
            let digest = suffix(&key, "session/").to_string();
            let removed = self.transact(|tx| {
                // Re-read: a concurrent SSO check may have slid it meanwhile.
                match tx.get::<Session>(&session_key(&digest))? {
                    Some(s) if s.expires_at <= now => {}
                    _ => return Ok(false),
                }
                tx.remove(&session_key(&digest))?;
                if tx.get::<String>(&sid_key(&session.sid))?.as_deref() == Some(digest.as_str()) {
                    tx.remove(&sid_key(&session.sid))?;
                }
                let mut index = user_index(tx, &session.user_id)?;
                index.sessions.retain(|d| *d != digest);
                tx.put(&index_key(&session.user_id), &index)?;
                Ok(true)
            })?;
            report.sessions += usize::from(removed);
        }

        for (key, code) in self.scan::<AuthCode>("code/")? {
            if code.expires_at + CODE_REPLAY_WINDOW < now {
                let digest = suffix(&key, "code/").to_string();
                self.transact(|tx| tx.remove(&code_key(&digest)))?;
                report.codes += 1;
            }
        }

        // Refresh tokens: drop expired ones; remember which families still hold any.
        let mut tokens_of: HashMap<String, Vec<String>> = HashMap::new();
        for (key, record) in self.scan::<RefreshRecord>("refresh/")? {
            let digest = suffix(&key, "refresh/").to_string();
            if record.expires_at <= now {
                self.transact(|tx| tx.remove(&refresh_key(&digest)))?;
                report.refresh_tokens += 1;
            } else {
                tokens_of.entry(record.family).or_default().push(digest);
            }
        }
        // Families that are revoked or hold no unexpired token can never be used again.
        let kept: HashSet<&String> = tokens_of.keys().collect();
        for (_, family) in self.scan::<Family>("family/")? {
            if !family.revoked && kept.contains(&family.id) {
                continue;
            }
            let tokens = tokens_of.get(&family.id).cloned().unwrap_or_default();
            self.transact(|tx| {
                for digest in &tokens {
                    tx.remove(&refresh_key(digest))?;
                }
                tx.remove(&family_key(&family.id))?;
                tx.remove(&active_key(&family.id))?;
                let mut index = user_index(tx, &family.user_id)?;
                index.families.retain(|f| *f != family.id);
                tx.put(&index_key(&family.user_id), &index)
            })?;
            report.refresh_tokens += tokens.len();
            report.families += 1;
        }

        for (key, exp) in self.scan::<i64>("revokedjti/")? {
            if exp <= now {
                let jti = suffix(&key, "revokedjti/").to_string();
                self.transact(|tx| tx.remove(&revoked_jti_key(&jti)))?;
                report.revoked_access_tokens += 1;
            }
        }

        for (key, (_, finished_at, _)) in self.scan::<(Finished, i64, OutboxItem)>("outboxdone/")? {
            if finished_at + keep_deliveries < now {
                let id = suffix(&key, "outboxdone/").to_string();
                self.transact(|tx| tx.remove(&done_key(&id)))?;
                report.finished_deliveries += 1;
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewRefresh, Redeemed, Redemption};
    use crate::types::{ClientId, RedirectUri, Scopes, UserId};

    fn session(user: &UserId, sid: &str, expires_at: i64) -> Session {
        Session {
            sid: sid.into(),
            user_id: user.clone(),
            auth_time: 0,
            created_at: 0,
            expires_at,
            remember: false,
            clients: Vec::new(),
        }
    }

    fn code(user: &UserId, sid: &str, expires_at: i64) -> AuthCode {
        AuthCode {
            client_id: ClientId::parse("c").unwrap(),
            redirect_uri: RedirectUri::parse("https://c.example/cb").unwrap(),
            code_challenge: "x".into(),
            nonce: None,
            scope: Scopes::parse("openid offline_access").unwrap(),
            user_id: user.clone(),
            sid: sid.into(),
            auth_time: 0,
            expires_at,
            redeemed: None,
        }
    }

    #[test]
    fn sweeps_what_can_no_longer_be_used_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let user = UserId::generate();
        store
            .create_session("live", &session(&user, "sid_live", 1_000))
            .unwrap();
        store
            .create_session("old", &session(&user, "sid_old", 100))
            .unwrap();
        // A family issued through the live session, rotated once.
        store
            .insert_code("code1", &code(&user, "sid_live", 60))
            .unwrap();
        let issued = Redeemed {
            family: Some("fam1".into()),
            access_jti: "at1".into(),
            access_exp: 50,
        };
        let first = NewRefresh {
            digest: "r1",
            family_id: "fam1",
            expires_at: 900,
        };
        assert!(matches!(
            store
                .redeem_code("code1", 10, 1_000, &issued, Some(&first))
                .unwrap(),
            Redemption::Issued(_)
        ));
        store.revoke_access_token("at1", 50).unwrap();

        let report = store.sweep(200, 0).unwrap();
        assert_eq!(report.sessions, 1, "{report:?}");
        assert_eq!(report.revoked_access_tokens, 1, "{report:?}");
        assert_eq!(report.families, 0, "a usable family stays");
        assert!(store.live_session("live", 200).unwrap().is_some());
        assert!(store.sid_is_live("sid_live", 200).unwrap());
        assert!(store.refresh_family("r1").unwrap().is_some());
        let index: crate::store::sessions::UserIndex =
            store.get(&index_key(&user)).unwrap().unwrap();
        assert_eq!(index.sessions, vec!["live".to_string()]);

        // After expiry everything of the family and the code's replay window goes.
        let report = store.sweep(60 + CODE_REPLAY_WINDOW + 1, 0).unwrap();
        assert_eq!((report.codes, report.families), (1, 1), "{report:?}");
        assert!(store.refresh_family("r1").unwrap().is_none());
        assert!(store.code("code1").unwrap().is_none());
        let index: crate::store::sessions::UserIndex =
            store.get(&index_key(&user)).unwrap().unwrap();
        assert!(index.families.is_empty() && index.sessions.is_empty());
    }
}
