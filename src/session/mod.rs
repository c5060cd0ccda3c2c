//! Server-side sessions: a random cookie value whose SHA-256 names the stored session,
//! a 30-day sliding window, and the one logout routine every surface uses.

pub mod password;
pub mod throttle;

use crate::app::App;
use crate::crypto::{random_id, random_token, sha256_hex};
use crate::store::{LogoutSummary, Session, StoreError, User};
use crate::types::UserId;

/// A live session found from a request's cookie.
pub struct Current {
    pub digest: String,
    pub session: Session,
}

impl App {
    /// When a session used now should expire: the sliding window.
    pub fn session_expiry(&self) -> i64 {
        self.clock.now() + self.config.session.lifetime.as_secs() as i64
    }

    /// The live session named by a cookie value, if any.
    pub fn current_session(&self, cookie: Option<&str>) -> Result<Option<Current>, StoreError> {
        let Some(value) = cookie else {
            return Ok(None);
        };
        let digest = sha256_hex(value.as_bytes());
        Ok(self
            .store
            .live_session(&digest, self.clock.now())?
            .map(|session| Current { digest, session }))
    }

    /// Starts a session for `user`; returns the cookie value (shown once, stored only as
    /// its digest) and the session.
    pub async fn start_session(
        &self,
        user: &User,
        remember: bool,
    ) -> Result<(String, Session), StoreError> {
        let now = self.clock.now();
        let cookie = random_token();
        let session = Session {
            sid: random_id("sid_"),
            user_id: user.id.clone(),
            auth_time: now,
            created_at: now,
            expires_at: self.session_expiry(),
            remember,
            clients: Vec::new(),
        };
        self.store
            .create_session(&sha256_hex(cookie.as_bytes()), &session)?;
        self.store.flush().await?;
        Ok((cookie, session))
    }

    /// Global logout: ends every session and refresh token of `user` and queues
    /// back-channel logout notifications, in one durable transaction, then wakes the
    /// delivery worker. Every way to log out calls this.
    pub async fn logout_everywhere(&self, user: &UserId) -> Result<LogoutSummary, StoreError> {
        let summary = self.store.logout_user(user, self.clock.now())?;
        self.store.flush().await?;
        self.outbox_wake.notify_one();
        tracing::info!(
            user = %user,
            sessions = summary.sessions_ended,
            refresh_families = summary.families_revoked,
            backchannel = summary.backchannel_queued,
            "user logged out everywhere"
        );
        Ok(summary)
    }
}
