//! The durable outbox: notifications written in the same transaction as the change they
//! announce, delivered by a worker, removed only once delivered or given up.

use super::{Store, StoreError, TxResult, Txn};
use crate::types::{ClientId, UserId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OutboxKind {
    /// OIDC Back-Channel Logout 1.0: the token is signed at each attempt so its `exp`
    /// stays short however late the delivery.
    BackchannelLogout {
        client_id: ClientId,
        sub: UserId,
        sid: Option<String>,
    },
    /// A partner webhook a plugin emitted, queued in the same commit as its writes.
    Webhook {
        partner_id: String,
        event_type: String,
        payload: serde_json::Value,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxItem {
    pub id: String,
    pub kind: OutboxKind,
    pub target: String,
    pub created_at: i64,
    /// Milliseconds since the epoch.
    pub next_attempt_ms: i64,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// Where a finished item went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Finished {
    Delivered,
    GaveUp,
}

impl OutboxItem {
    pub fn new(kind: OutboxKind, target: String, now: i64) -> OutboxItem {
        OutboxItem {
            id: crate::crypto::random_id("out_"),
            kind,
            target,
            created_at: now,
            next_attempt_ms: now * 1000,
            attempts: 0,
            last_error: None,
        }
    }
}

fn key(id: &str) -> String {
    format!("outbox/{id}")
}
pub(crate) fn done_key(id: &str) -> String {
    format!("outboxdone/{id}")
}

pub(crate) fn enqueue_in(tx: &Txn, item: &OutboxItem) -> TxResult<()> {
    tx.put(&key(&item.id), item)
}

impl Store {
    /// Pending items due at `now_ms`, oldest first.
    pub fn outbox_due(&self, now_ms: i64) -> Result<Vec<OutboxItem>, StoreError> {
        let mut due: Vec<OutboxItem> = self
            .scan::<OutboxItem>("outbox/")?
            .into_iter()
            .map(|(_, i)| i)
            .filter(|i| i.next_attempt_ms <= now_ms)
            .collect();
        due.sort_by_key(|i| i.next_attempt_ms);
        Ok(due)
    }

    /// Every pending item.
    pub fn outbox_pending(&self) -> Result<Vec<OutboxItem>, StoreError> {
        Ok(self.scan("outbox/")?.into_iter().map(|(_, i)| i).collect())
    }

    /// Records a failed attempt and when to try again.
    pub fn outbox_retry_later(
        &self,
        id: &str,
        next_attempt_ms: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        self.transact(|tx| {
            let Some(mut item) = tx.get::<OutboxItem>(&key(id))? else {
                return Ok(());
            };
            item.attempts += 1;
            item.next_attempt_ms = next_attempt_ms;
            item.last_error = Some(error.to_string());
            tx.put(&key(id), &item)
        })
    }

    /// Moves an item out of the queue, keeping a record of how it ended.
    pub fn outbox_finish(&self, id: &str, how: Finished, now: i64) -> Result<(), StoreError> {
        self.transact(|tx| {
            let Some(mut item) = tx.get::<OutboxItem>(&key(id))? else {
                return Ok(());
            };
            item.attempts += 1;
            tx.remove(&key(id))?;
            tx.put(&done_key(id), &(how, now, &item))
        })
    }

    /// Puts an item back in the queue, due at `now_ms`: a finished one is moved back, a
    /// pending one is made due. Returns whether the item exists.
    pub fn outbox_requeue(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        self.transact(|tx| {
            let mut item = match tx.get::<OutboxItem>(&key(id))? {
                Some(item) => item,
                None => match tx.get::<(Finished, i64, OutboxItem)>(&done_key(id))? {
                    Some((_, _, item)) => item,
                    None => return Ok(false),
                },
            };
            item.next_attempt_ms = now_ms;
            tx.remove(&done_key(id))?;
            tx.put(&key(id), &item)?;
            Ok(true)
        })
    }

    /// Finished items with how they ended.
    pub fn outbox_finished(&self) -> Result<Vec<(Finished, i64, OutboxItem)>, StoreError> {
        Ok(self
            .scan("outboxdone/")?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }
}
