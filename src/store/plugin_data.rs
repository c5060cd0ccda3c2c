//! Plugin data: each plugin's private key-value space, the points ledger (append-only
//! entries plus a balance record per user), and the atomic commit of one plugin call.
//!
//! A plugin call buffers its writes and records what it read; [`Store::commit_plugin_call`]
//! re-checks those reads inside one transaction and applies the writes only if nothing
//! it read has changed (optimistic concurrency: on conflict the caller reruns the call).

use super::outbox::{OutboxItem, enqueue_in};
use super::{Store, StoreError, TxResult, Txn, decode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    Earn,
    Redeem,
    Refund,
    Adjust,
}

/// One ledger entry; never changed once written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub id: String,
    pub user: String,
    /// 1 for the user's first entry; the balance record holds the latest.
    pub seq: u64,
    pub kind: LedgerKind,
    /// Signed: credits positive, debits negative.
    pub points: i64,
    pub balance_after: i64,
    pub partner: Option<String>,
    pub event_type: Option<String>,
    pub reference: Option<String>,
    pub note: Option<String>,
    /// The plugin whose call wrote it.
    pub plugin: String,
    /// Milliseconds since the Unix epoch.
    pub time: i64,
}

/// A user's balance and the number of entries behind it (its version).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub points: i64,
    pub seq: u64,
}

/// What a plugin call read, to re-check at commit.
#[derive(Debug, Default, Clone)]
pub struct PluginReads {
    /// Key → the value the call saw (None: absent).
    pub kv: BTreeMap<String, Option<String>>,
    /// Set when the call scanned its key space: any kv write since is a conflict,
    /// since a scan's result depends on keys it did not name.
    pub kv_generation: Option<u64>,
    /// User → the balance seq the call saw.
    pub balances: BTreeMap<String, u64>,
}

/// What a plugin call asked to write.
#[derive(Debug, Default, Clone)]
pub struct PluginWrites {
    /// Key → new value (None: delete).
    pub kv: BTreeMap<String, Option<String>>,
    pub entries: Vec<LedgerEntry>,
    pub balances: BTreeMap<String, Balance>,
    pub webhooks: Vec<OutboxItem>,
}

impl PluginWrites {
    pub fn is_empty(&self) -> bool {
        self.kv.is_empty() && self.entries.is_empty() && self.webhooks.is_empty()
    }
}

/// How a commit ended.
#[derive(Debug, PartialEq, Eq)]
pub enum PluginCommit {
    Applied,
    /// Something the call read changed meanwhile; nothing was written.
    Conflict,
}

/// Extra writes a caller adds to a plugin call's transaction (e.g. the partner API's
/// idempotency record), given the call's result; rejecting aborts the whole commit.
pub type CommitExtraFn<R> = std::sync::Arc<dyn Fn(&Txn, &R) -> TxResult<()> + Send + Sync>;

fn kv_key(plugin: &str, key: &str) -> String {
    format!("pkv/{plugin}/{key}")
}
fn kv_generation_key(plugin: &str) -> String {
    format!("pkvgen/{plugin}")
}
fn balance_key(user: &str) -> String {
    format!("balance/{user}")
}
fn entries_prefix(user: &str) -> String {
    format!("ledger/{user}/")
}
fn entry_key(user: &str, seq: u64) -> String {
    // Zero-padded so key order is seq order.
    format!("ledger/{user}/{seq:020}")
}

impl Store {
    pub fn plugin_kv_get(&self, plugin: &str, key: &str) -> Result<Option<String>, StoreError> {
        self.get(&kv_key(plugin, key))
    }

    /// Up to `limit` (key, value) pairs whose key starts with `prefix`, in key order.
    pub fn plugin_kv_scan(
        &self,
        plugin: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let base = kv_key(plugin, "");
        self.db
            .scan_prefix(kv_key(plugin, prefix).as_bytes())
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                let key = String::from_utf8_lossy(&k).into_owned();
                let value = decode(&key, &v)?;
                Ok((key[base.len()..].to_string(), value))
            })
            .collect()
    }

    /// Counts the commits that changed the plugin's key space.
    pub fn plugin_kv_generation(&self, plugin: &str) -> Result<u64, StoreError> {
        Ok(self.get(&kv_generation_key(plugin))?.unwrap_or(0))
    }

    pub fn ledger_balance(&self, user: &str) -> Result<Balance, StoreError> {
        Ok(self.get(&balance_key(user))?.unwrap_or_default())
    }

    /// The user's entries with seq below `before` (all when None), newest first.
    pub fn ledger_entries(
        &self,
        user: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let start = entries_prefix(user);
        let end = match before {
            Some(seq) => entry_key(user, seq),
            // '0' is the byte after '/', so this bounds exactly the user's entries.
            None => format!("ledger/{user}0"),
        };
        self.db
            .range(start.as_bytes()..end.as_bytes())
            .rev()
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                decode(&String::from_utf8_lossy(&k), &v)
            })
            .collect()
    }

    /// Applies a plugin call's writes in one transaction if nothing it read changed,
    /// together with `extra` (given `result`).
    pub fn commit_plugin_call<R>(
        &self,
        plugin: &str,
        reads: &PluginReads,
        writes: &PluginWrites,
        result: &R,
        extra: Option<&CommitExtraFn<R>>,
    ) -> Result<PluginCommit, StoreError> {
        self.transact(|tx| {
            if !reads_current(tx, plugin, reads)? {
                return Ok(PluginCommit::Conflict);
            }
            if !writes.kv.is_empty() {
                let generation: u64 = tx.get(&kv_generation_key(plugin))?.unwrap_or(0);
                tx.put(&kv_generation_key(plugin), &(generation + 1))?;
            }
            for (key, value) in &writes.kv {
                match value {
                    Some(v) => tx.put(&kv_key(plugin, key), v)?,
                    None => tx.remove(&kv_key(plugin, key))?,
                }
            }
            for entry in &writes.entries {
                tx.put(&entry_key(&entry.user, entry.seq), entry)?;
            }
            for (user, balance) in &writes.balances {
                tx.put(&balance_key(user), balance)?;
            }
            for item in &writes.webhooks {
                enqueue_in(tx, item)?;
            }
            if let Some(extra) = extra {
                extra(tx, result)?;
            }
            Ok(PluginCommit::Applied)
        })
    }

    /// Whether everything a call read is still as it saw it (outside a transaction: a
    /// failed call that read stale data is worth rerunning).
    pub fn plugin_reads_current(
        &self,
        plugin: &str,
        reads: &PluginReads,
    ) -> Result<bool, StoreError> {
        self.transact(|tx| reads_current(tx, plugin, reads))
    }
}

fn reads_current(tx: &Txn, plugin: &str, reads: &PluginReads) -> TxResult<bool> {
    for (key, seen) in &reads.kv {
        if tx.get::<String>(&kv_key(plugin, key))? != *seen {
            return Ok(false);
        }
    }
    if let Some(seen) = reads.kv_generation {
        let now: u64 = tx.get(&kv_generation_key(plugin))?.unwrap_or(0);
        if now != seen {
            return Ok(false);
        }
    }
    for (user, seen) in &reads.balances {
        let now: Balance = tx.get(&balance_key(user))?.unwrap_or_default();
        if now.seq != *seen {
            return Ok(false);
        }
    }
    Ok(true)
}
