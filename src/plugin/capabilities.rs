//! The host capabilities a plugin imports, over one call's state: reads go to the
//! store (and are recorded for the commit-time check), writes are buffered in the
//! call and visible to its own later reads.

use super::bindings::mgpass::plugin::types::{
    EntryKind, EntryMeta, HistoryPage, LedgerEntry as WitEntry, LedgerError, LogLevel, UserInfo,
};
use super::bindings::mgpass::plugin::{host, kv, ledger, types};
use crate::clock::SharedClock;
use crate::store::{
    Balance, LedgerEntry, LedgerKind, OutboxItem, OutboxKind, PluginReads, PluginWrites, Store,
    StoreError,
};
use crate::types::UserId;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

/// Caps on what one call may ask of the host.
const MAX_KEY_BYTES: usize = 512;
const MAX_VALUE_BYTES: usize = 64 << 10;
const MAX_WRITE_BYTES: usize = 4 << 20;
const MAX_WRITES: usize = 1024;
const MAX_WEBHOOKS: usize = 32;
const MAX_SCAN: u32 = 1000;
const MAX_HISTORY: u32 = 100;
const MAX_LOG_LINES: u32 = 100;
const MAX_LOG_BYTES: usize = 4 << 10;
/// Largest point amount (2^53) so amounts stay exact in JSON consumers.
const MAX_POINTS: i64 = 1 << 53;

/// What a plugin is, as its calls see it.
pub struct PluginMeta {
    pub name: String,
    /// The plugin's config table (host keys removed) as JSON text.
    pub config_json: String,
}

/// The state of one call: the store and clock it reads, and what it read and wrote.
pub struct CallState {
    meta: Arc<PluginMeta>,
    store: Store,
    clock: SharedClock,
    limiter: CallLimiter,
    pub(super) reads: PluginReads,
    pub(super) writes: PluginWrites,
    /// Balances as this call sees them (store value, then its own changes).
    balances: std::collections::BTreeMap<String, Balance>,
    write_bytes: usize,
    write_count: usize,
    log_lines: u32,
    /// Why a capability trapped the call, for the error report.
    pub(super) host_failure: Option<String>,
    store_wait: Duration,
}

impl CallState {
    pub fn new(
        meta: Arc<PluginMeta>,
        store: Store,
        clock: SharedClock,
        memory_bytes: usize,
    ) -> CallState {
        CallState {
            meta,
            store,
            clock,
            limiter: CallLimiter {
                inner: StoreLimitsBuilder::new()
                    .memory_size(memory_bytes)
                    .trap_on_grow_failure(true)
                    .build(),
                memory_denied: false,
            },
            reads: PluginReads::default(),
            writes: PluginWrites::default(),
            balances: Default::default(),
            write_bytes: 0,
            write_count: 0,
            log_lines: 0,
            host_failure: None,
            store_wait: Duration::ZERO,
        }
    }

    pub fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limiter
    }

    pub fn memory_denied(&self) -> bool {
        self.limiter.memory_denied
    }

    /// Traps the call, remembering why.
    fn fail<T>(&mut self, reason: String) -> wasmtime::Result<T> {
        self.host_failure = Some(reason.clone());
        Err(wasmtime::Error::msg(reason))
    }

    /// Runs a store read, timing it. Time stalled in the store (its locks wait behind
    /// other calls' commits and fsyncs) is not the plugin's doing, so the epoch
    /// callback gives it back to the call's wall-clock budget, up to a cap.
    fn read_store<T>(
        &mut self,
        read: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> wasmtime::Result<T> {
        let started = Instant::now();
        let result = read(&self.store);
        self.store_wait += started.elapsed();
        result.or_else(|e| self.fail(format!("store: {e}")))
    }

    /// Store time not yet given back to the budget; resets it.
    pub fn take_store_wait(&mut self) -> Duration {
        std::mem::take(&mut self.store_wait)
    }

    fn check_len(&mut self, what: &str, s: &str, max: usize) -> wasmtime::Result<()> {
        if s.len() > max {
            return self.fail(format!(
                "{what} is {} bytes, over the {max}-byte cap",
                s.len()
            ));
        }
        Ok(())
    }

    fn count_write(&mut self, bytes: usize) -> wasmtime::Result<()> {
        self.write_count += 1;
        self.write_bytes += bytes;
        if self.write_count > MAX_WRITES || self.write_bytes > MAX_WRITE_BYTES {
            return self.fail(format!(
                "the call wrote more than {MAX_WRITES} records or {MAX_WRITE_BYTES} bytes"
            ));
        }
        Ok(())
    }

    /// The user's balance as this call sees it; the first read is recorded.
    fn balance_of(&mut self, user: &str) -> wasmtime::Result<Balance> {
        if let Some(b) = self.balances.get(user) {
            return Ok(*b);
        }
        let b = self.read_store(|s| s.ledger_balance(user))?;
        self.reads.balances.insert(user.to_string(), b.seq);
        self.balances.insert(user.to_string(), b);
        Ok(b)
    }

    fn user_exists(&mut self, user: &str) -> wasmtime::Result<bool> {
        if user.is_empty() || user.len() > 128 || user.contains('/') {
            return Ok(false);
        }
        let user = UserId(user.to_string());
        Ok(self.read_store(|s| s.user(&user))?.is_some())
    }

    /// Appends an entry of `points` (signed) to the user's ledger, in this call.
    fn append(
        &mut self,
        user: String,
        points: i64,
        meta: EntryMeta,
    ) -> wasmtime::Result<Result<WitEntry, LedgerError>> {
        if points == 0 || points.abs() > MAX_POINTS {
            return Ok(Err(LedgerError::InvalidAmount(points.abs())));
        }
        if !self.user_exists(&user)? {
            return Ok(Err(LedgerError::UnknownUser(user)));
        }
        for (what, field) in [
            ("partner", &meta.partner),
            ("event type", &meta.event_type),
            ("reference", &meta.reference),
            ("note", &meta.note),
        ] {
            if let Some(s) = field {
                self.check_len(what, s, MAX_KEY_BYTES)?;
            }
        }
        let before = self.balance_of(&user)?;
        let after = before.points + points;
        if after < 0 {
            return Ok(Err(LedgerError::InsufficientPoints(before.points)));
        }
        if after > MAX_POINTS {
            return Ok(Err(LedgerError::InvalidAmount(points.abs())));
        }
        self.count_write(256)?;
        let balance = Balance {
            points: after,
            seq: before.seq + 1,
        };
        let entry = LedgerEntry {
            id: crate::crypto::random_id("led_"),
            user: user.clone(),
            seq: balance.seq,
            kind: match meta.kind {
                EntryKind::Earn => LedgerKind::Earn,
                EntryKind::Redeem => LedgerKind::Redeem,
                EntryKind::Refund => LedgerKind::Refund,
                EntryKind::Adjust => LedgerKind::Adjust,
            },
            points,
            balance_after: after,
            partner: meta.partner,
            event_type: meta.event_type,
            reference: meta.reference,
            note: meta.note,
            plugin: self.meta.name.clone(),
            time: self.clock.now_ms(),
        };
        self.balances.insert(user.clone(), balance);
        self.writes.balances.insert(user, balance);
        let wit = to_wit(&entry);
        self.writes.entries.push(entry);
        Ok(Ok(wit))
    }
}

fn to_wit(e: &LedgerEntry) -> WitEntry {
    WitEntry {
        id: e.id.clone(),
        user: e.user.clone(),
        seq: e.seq,
        kind: match e.kind {
            LedgerKind::Earn => EntryKind::Earn,
            LedgerKind::Redeem => EntryKind::Redeem,
            LedgerKind::Refund => EntryKind::Refund,
            LedgerKind::Adjust => EntryKind::Adjust,
        },
        points: e.points,
        balance_after: e.balance_after,
        partner: e.partner.clone(),
        event_type: e.event_type.clone(),
        reference: e.reference.clone(),
        note: e.note.clone(),
        time: e.time,
    }
}

/// A user's public profile for plugins: never the password digest.
pub fn user_info(user: &crate::store::User) -> UserInfo {
    UserInfo {
        id: user.id.to_string(),
        username: user.username.clone(),
        email: user.email.clone(),
        roles: user.roles.clone(),
    }
}

/// `StoreLimits` (trap on a refused growth) that also remembers a refused memory
/// growth, so the error names the memory cap rather than a bare trap.
struct CallLimiter {
    inner: StoreLimits,
    memory_denied: bool,
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let result = self.inner.memory_growing(current, desired, maximum);
        if !matches!(result, Ok(true)) {
            self.memory_denied = true;
        }
        result
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

impl types::Host for CallState {}

impl host::Host for CallState {
    fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            return Ok(());
        }
        let mut message = message;
        if message.len() > MAX_LOG_BYTES {
            let mut end = MAX_LOG_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        let plugin = self.meta.name.as_str();
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }

    fn now(&mut self) -> wasmtime::Result<i64> {
        Ok(self.clock.now_ms())
    }

    fn config(&mut self) -> wasmtime::Result<String> {
        Ok(self.meta.config_json.clone())
    }

    fn lookup_user(&mut self, id: String) -> wasmtime::Result<Option<UserInfo>> {
        if id.is_empty() || id.len() > 128 {
            return Ok(None);
        }
        let id = UserId(id);
        Ok(self.read_store(|s| s.user(&id))?.as_ref().map(user_info))
    }

    fn emit_webhook(
        &mut self,
        partner_id: String,
        event_type: String,
        payload_json: String,
    ) -> wasmtime::Result<Result<(), String>> {
        self.check_len("partner id", &partner_id, MAX_KEY_BYTES)?;
        self.check_len("event type", &event_type, MAX_KEY_BYTES)?;
        self.check_len("webhook payload", &payload_json, MAX_VALUE_BYTES)?;
        if self.writes.webhooks.len() >= MAX_WEBHOOKS {
            return Ok(Err(format!("at most {MAX_WEBHOOKS} webhooks per call")));
        }
        let payload = match serde_json::from_str(&payload_json) {
            Ok(p) => p,
            Err(e) => return Ok(Err(format!("payload is not JSON: {e}"))),
        };
        self.count_write(payload_json.len())?;
        let kind = OutboxKind::Webhook {
            partner_id,
            event_type,
            payload,
        };
        // The target is filled in by webhook delivery, which knows the partners.
        let item = OutboxItem::new(kind, String::new(), self.clock.now());
        self.writes.webhooks.push(item);
        Ok(Ok(()))
    }
}

impl kv::Host for CallState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.check_len("key", &key, MAX_KEY_BYTES)?;
        if let Some(value) = self.writes.kv.get(&key) {
            return Ok(value.clone());
        }
        if let Some(seen) = self.reads.kv.get(&key) {
            return Ok(seen.clone());
        }
        let name = self.meta.name.clone();
        let value = self.read_store(|s| s.plugin_kv_get(&name, &key))?;
        self.reads.kv.insert(key, value.clone());
        Ok(value)
    }

    fn put(&mut self, key: String, value: String) -> wasmtime::Result<Result<(), String>> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Ok(Err(format!("keys are 1 to {MAX_KEY_BYTES} bytes")));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Ok(Err(format!("values are at most {MAX_VALUE_BYTES} bytes")));
        }
        self.count_write(key.len() + value.len())?;
        self.writes.kv.insert(key, Some(value));
        Ok(Ok(()))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.check_len("key", &key, MAX_KEY_BYTES)?;
        self.count_write(key.len())?;
        self.writes.kv.insert(key, None);
        Ok(())
    }

    fn scan_prefix(
        &mut self,
        prefix: String,
        limit: u32,
    ) -> wasmtime::Result<Vec<(String, String)>> {
        self.check_len("prefix", &prefix, MAX_KEY_BYTES)?;
        let limit = limit.min(MAX_SCAN) as usize;
        let name = self.meta.name.clone();
        // The scan is not one snapshot with the generation; reading the generation
        // before and after and retrying until they agree pins the scan to it.
        let deleted = self.writes.kv.values().filter(|v| v.is_none()).count();
        let mut found = None;
        for _ in 0..5 {
            let scanned = self.read_store(|s| {
                let before = s.plugin_kv_generation(&name)?;
                let rows = s.plugin_kv_scan(&name, &prefix, limit + deleted)?;
                let after = s.plugin_kv_generation(&name)?;
                Ok((before == after).then_some((before, rows)))
            })?;
            if scanned.is_some() {
                found = scanned;
                break;
            }
        }
        let Some((generation, rows)) = found else {
            return self.fail("the key space kept changing during a scan".into());
        };
        if *self.reads.kv_generation.get_or_insert(generation) != generation {
            // An earlier scan in this call saw another generation: the commit check
            // will fail, so stop now rather than compute on a mix.
            return self.fail("the key space changed during the call".into());
        }
        let mut merged: std::collections::BTreeMap<String, String> = rows.into_iter().collect();
        for (key, value) in self.writes.kv.range(prefix.clone()..) {
            if !key.starts_with(&prefix) {
                break;
            }
            match value {
                Some(v) => merged.insert(key.clone(), v.clone()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_iter().take(limit).collect())
    }
}

impl ledger::Host for CallState {
    fn credit(
        &mut self,
        user: String,
        points: i64,
        meta: EntryMeta,
    ) -> wasmtime::Result<Result<WitEntry, LedgerError>> {
        if points <= 0 {
            return Ok(Err(LedgerError::InvalidAmount(points)));
        }
        self.append(user, points, meta)
    }

    fn debit(
        &mut self,
        user: String,
        points: i64,
        meta: EntryMeta,
    ) -> wasmtime::Result<Result<WitEntry, LedgerError>> {
        if points <= 0 {
            return Ok(Err(LedgerError::InvalidAmount(points)));
        }
        self.append(user, -points, meta)
    }

    fn balance(&mut self, user: String) -> wasmtime::Result<i64> {
        self.check_len("user", &user, MAX_KEY_BYTES)?;
        Ok(self.balance_of(&user)?.points)
    }

    fn history(
        &mut self,
        user: String,
        cursor: Option<u64>,
        limit: u32,
    ) -> wasmtime::Result<HistoryPage> {
        self.check_len("user", &user, MAX_KEY_BYTES)?;
        let limit = limit.clamp(1, MAX_HISTORY) as usize;
        let current = self.balance_of(&user)?;
        // Entries this call wrote are newer than everything in the store it saw.
        let stored_seq = self
            .reads
            .balances
            .get(&user)
            .copied()
            .unwrap_or(current.seq);
        let top = cursor.unwrap_or(current.seq + 1);
        let mut entries: Vec<WitEntry> = self
            .writes
            .entries
            .iter()
            .rev()
            .filter(|e| e.user == user && e.seq < top)
            .take(limit)
            .map(to_wit)
            .collect();
        if entries.len() < limit {
            let before = top.min(stored_seq + 1);
            let wanted = limit - entries.len();
            let older = self.read_store(|s| s.ledger_entries(&user, Some(before), wanted))?;
            entries.extend(older.iter().map(to_wit));
        }
        let next_cursor = match entries.last() {
            Some(last) if entries.len() == limit && last.seq > 1 => Some(last.seq),
            _ => None,
        };
        Ok(HistoryPage {
            entries,
            next_cursor,
        })
    }
}
