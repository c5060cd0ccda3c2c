//! An in-memory [`Host`] that behaves like the real one where the plugin can tell:
//! buffered writes that apply only when the call returns `Ok`, a ledger that refuses to
//! go negative, newest-first cursor paging.

use std::collections::{BTreeMap, BTreeSet};

use crate::host::{Entry, Host, LedgerError, Level, Meta, Page};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    pub kv: BTreeMap<String, String>,
    pub ledger: BTreeMap<String, Vec<Entry>>,
    pub webhooks: Vec<(String, String, serde_json::Value)>,
}

#[derive(Debug, Default)]
pub struct MemHost {
    pub state: State,
    pub users: BTreeSet<String>,
    pub now: i64,
    pub logs: Vec<(Level, String)>,
    next_id: u64,
}

impl MemHost {
    pub fn with_users(users: &[&str], now: i64) -> MemHost {
        MemHost {
            users: users.iter().map(|u| u.to_string()).collect(),
            now,
            ..MemHost::default()
        }
    }

    /// Runs one hook call: its writes stay only if it returns `Ok`.
    pub fn call<T>(
        &mut self,
        f: impl FnOnce(&mut MemHost) -> Result<T, String>,
    ) -> Result<T, String> {
        let before = self.state.clone();
        let result = f(self);
        if result.is_err() {
            self.state = before;
        }
        result
    }

    pub fn balance_of(&self, user: &str) -> i64 {
        self.state
            .ledger
            .get(user)
            .and_then(|l| l.last())
            .map_or(0, |e| e.balance_after)
    }

    /// The invariant of issue 7: the balance is the sum of the entries, never negative.
    pub fn check_ledger(&self) {
        for (user, entries) in &self.state.ledger {
            let mut sum = 0;
            for (i, e) in entries.iter().enumerate() {
                sum += e.points;
                assert_eq!(e.balance_after, sum, "{user} entry {i}");
                assert!(sum >= 0, "{user} went negative");
                assert_eq!(e.seq, i as u64 + 1);
            }
        }
    }

    pub fn webhooks_of(&self, event_type: &str) -> Vec<serde_json::Value> {
        self.state
            .webhooks
            .iter()
            .filter(|(_, t, _)| t == event_type)
            .map(|(_, _, p)| p.clone())
            .collect()
    }

    fn append(&mut self, user: &str, points: i64, meta: Meta) -> Result<Entry, LedgerError> {
        if !self.users.contains(user) {
            return Err(LedgerError::UnknownUser(user.into()));
        }
        let before = self.balance_of(user);
        if before + points < 0 {
            return Err(LedgerError::Insufficient(before));
        }
        self.next_id += 1;
        let entries = self.state.ledger.entry(user.to_string()).or_default();
        let entry = Entry {
            id: format!("led_{:024x}", self.next_id),
            seq: entries.len() as u64 + 1,
            kind: meta.kind,
            points,
            balance_after: before + points,
            partner: meta.partner,
            event_type: meta.event_type,
            reference: meta.reference,
            note: meta.note,
            time: self.now,
        };
        entries.push(entry.clone());
        Ok(entry)
    }
}

impl Host for MemHost {
    fn now(&mut self) -> i64 {
        self.now
    }
    fn log(&mut self, level: Level, message: &str) {
        self.logs.push((level, message.to_string()));
    }
    fn user_exists(&mut self, id: &str) -> bool {
        self.users.contains(id)
    }
    fn kv_get(&mut self, key: &str) -> Option<String> {
        assert!(key.len() <= 512, "key over 512 bytes: {key}");
        self.state.kv.get(key).cloned()
    }
    fn kv_put(&mut self, key: &str, value: &str) -> Result<(), String> {
        assert!(!key.is_empty() && key.len() <= 512, "bad key {key}");
        assert!(value.len() <= 64 << 10, "value over 64 KiB");
        self.state.kv.insert(key.into(), value.into());
        Ok(())
    }
    fn kv_delete(&mut self, key: &str) {
        self.state.kv.remove(key);
    }
    fn kv_scan(&mut self, prefix: &str, limit: u32) -> Vec<(String, String)> {
        self.state
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit.min(1000) as usize)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
    fn credit(&mut self, user: &str, points: i64, meta: Meta) -> Result<Entry, LedgerError> {
        if points <= 0 {
            return Err(LedgerError::InvalidAmount(points));
        }
        self.append(user, points, meta)
    }
    fn debit(&mut self, user: &str, points: i64, meta: Meta) -> Result<Entry, LedgerError> {
        if points <= 0 {
            return Err(LedgerError::InvalidAmount(points));
        }
        self.append(user, -points, meta)
    }
    fn balance(&mut self, user: &str) -> i64 {
        self.balance_of(user)
    }
    fn history(&mut self, user: &str, cursor: Option<u64>, limit: u32) -> Page {
        let limit = limit.clamp(1, 100) as usize;
        let all = self.state.ledger.get(user).cloned().unwrap_or_default();
        let top = cursor.unwrap_or(u64::MAX);
        let entries: Vec<Entry> = all
            .into_iter()
            .rev()
            .filter(|e| e.seq < top)
            .take(limit)
            .collect();
        let next_cursor = match entries.last() {
            Some(last) if entries.len() == limit && last.seq > 1 => Some(last.seq),
            _ => None,
        };
        Page {
            entries,
            next_cursor,
        }
    }
    fn emit(&mut self, partner: &str, event_type: &str, payload: &str) -> Result<(), String> {
        let payload = serde_json::from_str(payload).map_err(|e| e.to_string())?;
        self.state
            .webhooks
            .push((partner.into(), event_type.into(), payload));
        Ok(())
    }
}
