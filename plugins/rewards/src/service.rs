//! The rewards service over a [`Host`]: partner events, the HTTP routes and token claims.
//!
//! The host commits a call's writes (kv, ledger, webhooks) when the hook returns `Ok` —
//! also for an `Ok` 4xx response — so every handler checks everything first and writes
//! only on its success path.
//!
//! Key-value layout (all values JSON):
//! - `rule/{id}` a rule; `rules-by-event/{event_type}` the ids of its rules;
//!   `meta/rule-seq` the last rule number
//! - `lifetime/{user}` points earned ever (less reversals)
//! - `usage/{user}/{rule}` caps and frequency counters ([`caps::Usage`])
//! - `award/{partner}/{reference}` what an event awarded, for reversals
//! - `cashback/{user}` today's redemptions ([`cashback::UserState`])
//! - `redemption/{id}` a redemption; `idem/{user}/{sha256(key)}` an idempotent result

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use crate::caps::{self, Usage};
use crate::cashback::{self, Redemption, Status, Transition, UserState};
use crate::config::Config;
use crate::host::{
    Caller, CallerKind, Entry, Event, Host, HttpRequest, HttpResponse, Kind, LedgerError, Level,
    Meta, PartnerInfo,
};
use crate::periods;
use crate::rules::{self, Rule};
use crate::signature;
use crate::tiers::{self, Tier};

/// The event type that reverses an earlier event (`metadata.original_reference_id`).
pub const REFUND_EVENT: &str = "refund";
pub const TIER_CLAIM: &str = "mgpass:tier";
const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;
const MAX_RULES: u32 = 1000;

/// What an event awarded, kept per partner and reference so a refund can reverse it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Award {
    pub user: String,
    pub points: i64,
    pub rule_id: String,
    pub event_id: String,
    pub event_type: String,
    pub entry_id: String,
    pub reversal: Option<Reversal>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reversal {
    pub event_id: String,
    /// Points taken back from the balance: the award, or less if already spent.
    pub points: i64,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct IdempotentResult {
    fingerprint: String,
    status: u16,
    body: String,
}

type Handled = Result<HttpResponse, String>;

pub fn respond(status: u16, body: Value) -> HttpResponse {
    HttpResponse {
        status,
        body: body.to_string(),
        headers: Vec::new(),
    }
}

/// The mgPass error shape `{"error","message"}`.
pub fn error(status: u16, code: &str, message: impl Into<String>) -> HttpResponse {
    respond(status, json!({"error": code, "message": message.into()}))
}

fn invalid(message: impl Into<String>) -> Handled {
    Ok(error(400, "invalid_request", message))
}

fn not_found(what: &str) -> Handled {
    Ok(error(404, "not_found", format!("{what} not found")))
}

/// A kv key part from unbounded input: as is when short and plain, else hashed.
fn key_part(s: &str) -> String {
    if !s.is_empty() && s.len() <= 160 && !s.contains('/') && !s.starts_with("sha256:") {
        s.to_string()
    } else {
        format!("sha256:{}", signature::sha256_hex(s.as_bytes()))
    }
}

fn rule_key(id: &str) -> String {
    format!("rule/{}", key_part(id))
}
fn index_key(event_type: &str) -> String {
    format!("rules-by-event/{event_type}")
}
fn lifetime_key(user: &str) -> String {
    format!("lifetime/{}", key_part(user))
}
fn usage_key(user: &str, rule: &str) -> String {
    format!("usage/{}/{}", key_part(user), key_part(rule))
}
fn award_key(partner: &str, reference: &str) -> String {
    format!("award/{}/{}", key_part(partner), key_part(reference))
}
fn cashback_key(user: &str) -> String {
    format!("cashback/{}", key_part(user))
}
fn redemption_key(id: &str) -> String {
    format!("redemption/{}", key_part(id))
}
fn idem_key(user: &str, key: &str) -> String {
    format!(
        "idem/{}/{}",
        key_part(user),
        signature::sha256_hex(key.as_bytes())
    )
}

pub fn entry_json(e: &Entry) -> Value {
    json!({
        "id": e.id,
        "kind": e.kind.as_str(),
        "points": e.points,
        "balance_after": e.balance_after,
        "partner": e.partner,
        "event_type": e.event_type,
        "reference": e.reference,
        "note": e.note,
        "time": periods::rfc3339(e.time),
    })
}

fn tier_json(t: &Tier) -> Value {
    json!({"name": t.name, "min_points": t.min_points, "multiplier": t.multiplier})
}

fn ledger_failure(e: LedgerError) -> String {
    format!("ledger: {e:?}")
}

pub struct Rewards<'a, H: Host> {
    pub config: &'a Config,
    pub host: &'a mut H,
}

impl<'a, H: Host> Rewards<'a, H> {
    pub fn new(config: &'a Config, host: &'a mut H) -> Self {
        Rewards { config, host }
    }

    // ----- storage helpers -----

    fn get_json<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, String> {
        match self.host.kv_get(key) {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| format!("stored {key} is unreadable: {e}")),
        }
    }

    fn put_json<T: Serialize>(&mut self, key: &str, value: &T) -> Result<(), String> {
        let text = serde_json::to_string(value).map_err(|e| e.to_string())?;
        self.host.kv_put(key, &text)
    }

    fn lifetime(&mut self, user: &str) -> Result<i64, String> {
        Ok(self.get_json(&lifetime_key(user))?.unwrap_or(0))
    }

    fn tier_of(&self, lifetime: i64) -> &'a Tier {
        tiers::tier_for(&self.config.tiers, lifetime)
    }

    fn rules_for_event(&mut self, event_type: &str) -> Result<Vec<Rule>, String> {
        let ids: Vec<String> = self.get_json(&index_key(event_type))?.unwrap_or_default();
        let mut rules = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(rule) = self.get_json::<Rule>(&rule_key(&id))? {
                rules.push(rule);
            }
        }
        Ok(rules)
    }

    fn emit(&mut self, partner: &str, event_type: &str, payload: &Value) -> Result<(), String> {
        self.host
            .emit(partner, event_type, &payload.to_string())
            .map_err(|e| format!("webhook {event_type}: {e}"))
    }

    /// Cashback webhooks go to the configured partners (no partner caused them).
    fn emit_cashback(&mut self, event_type: &str, payload: &Value) -> Result<(), String> {
        for partner in self.config.webhook_partners.clone() {
            self.emit(&partner, event_type, payload)?;
        }
        Ok(())
    }

    // ----- partner events -----

    /// Awards an event's points (or reverses an earlier one); the result is the
    /// `points_awarded` the partner sees (negative for a reversal).
    pub fn on_event(&mut self, event: &Event, partner: &PartnerInfo) -> Result<i64, String> {
        let metadata: Value = match serde_json::from_str(&event.metadata) {
            Ok(v @ Value::Object(_)) => v,
            _ => json!({}),
        };
        if event.event_type == REFUND_EVENT {
            return self.reverse(event, partner, &metadata);
        }
        let user = event.user_id.as_str();
        let lifetime = self.lifetime(user)?;
        let tier = self.tier_of(lifetime);
        let rules = self.rules_for_event(&event.event_type)?;
        let Some(rule) = rules::find_match(&rules, &event.event_type, &partner.id, &tier.name)
        else {
            return Ok(0);
        };
        let units = match rules::units(rule, &metadata) {
            Ok(units) => units,
            Err(why) => {
                let message = format!(
                    "event {}: rule {} counts {why:?} in metadata; no points",
                    event.event_id, rule.id
                );
                self.host.log(Level::Warn, &message);
                return Ok(0);
            }
        };
        let worth = rules::compute_points(rule.points, units, tier.multiplier, partner.multiplier);
        let now = self.host.now();
        let ukey = usage_key(user, &rule.id);
        let usage: Usage = self.get_json(&ukey)?.unwrap_or_default();
        let outcome = caps::apply(rule, &usage, worth, now);
        let points = outcome.points;
        if points <= 0 {
            return Ok(0);
        }
        let meta = Meta {
            kind: Kind::Earn,
            partner: Some(partner.id.clone()),
            event_type: Some(event.event_type.clone()),
            reference: Some(event.reference_id.clone()),
            note: Some(rule.id.clone()),
        };
        let entry = self
            .host
            .credit(user, points, meta)
            .map_err(ledger_failure)?;
        self.put_json(&ukey, &outcome.usage)?;
        let after = lifetime.saturating_add(points);
        self.put_json(&lifetime_key(user), &after)?;
        let award = Award {
            user: user.to_string(),
            points,
            rule_id: rule.id.clone(),
            event_id: event.event_id.clone(),
            event_type: event.event_type.clone(),
            entry_id: entry.id.clone(),
            reversal: None,
        };
        self.put_json(&award_key(&partner.id, &event.reference_id), &award)?;
        let new_tier = self.tier_of(after);
        if let Some((from, to)) = tiers::promotion(&self.config.tiers, lifetime, after) {
            let payload = json!({
                "user_id": user,
                "previous_tier": from.name,
                "tier": to.name,
                "tier_details": tier_json(to),
                "lifetime_earned": after,
                "event_id": event.event_id,
            });
            self.emit(&partner.id, "rewards.tier_promoted", &payload)?;
        }
        let payload = json!({
            "user_id": user,
            "event_id": event.event_id,
            "event_type": event.event_type,
            "reference_id": event.reference_id,
            "rule_id": rule.id,
            "points": points,
            "capped": outcome.limited.is_some(),
            "total_points": entry.balance_after,
            "lifetime_earned": after,
            "tier": new_tier.name,
        });
        self.emit(&partner.id, "rewards.points_awarded", &payload)?;
        Ok(points)
    }

    /// A `refund` event: takes back what the event `metadata.original_reference_id` of
    /// the same partner and user awarded, once. Lifetime drops by the whole award; the
    /// balance by as much of it as is left (a balance never goes negative). Unknown,
    /// foreign or already reversed references reverse nothing (0 points).
    fn reverse(
        &mut self,
        event: &Event,
        partner: &PartnerInfo,
        metadata: &Value,
    ) -> Result<i64, String> {
        let Some(original) = metadata
            .get("original_reference_id")
            .and_then(Value::as_str)
        else {
            let message = format!(
                "refund event {} has no metadata.original_reference_id; nothing reversed",
                event.event_id
            );
            self.host.log(Level::Warn, &message);
            return Ok(0);
        };
        let key = award_key(&partner.id, original);
        let Some(mut award) = self.get_json::<Award>(&key)? else {
            return Ok(0);
        };
        if award.user != event.user_id {
            let message = format!(
                "refund event {} names another user than the original event; nothing reversed",
                event.event_id
            );
            self.host.log(Level::Warn, &message);
            return Ok(0);
        }
        if award.reversal.is_some() {
            return Ok(0);
        }
        let user = event.user_id.as_str();
        let balance = self.host.balance(user);
        let take = award.points.min(balance).max(0);
        let total = if take > 0 {
            let meta = Meta {
                kind: Kind::Refund,
                partner: Some(partner.id.clone()),
                event_type: Some(REFUND_EVENT.into()),
                reference: Some(event.reference_id.clone()),
                note: Some(format!("reversal of {}", key_part(original))),
            };
            self.host
                .debit(user, take, meta)
                .map_err(ledger_failure)?
                .balance_after
        } else {
            balance
        };
        let lifetime = self.lifetime(user)?;
        let after = (lifetime - award.points).max(0);
        self.put_json(&lifetime_key(user), &after)?;
        award.reversal = Some(Reversal {
            event_id: event.event_id.clone(),
            points: take,
            at: self.host.now(),
        });
        self.put_json(&key, &award)?;
        let payload = json!({
            "user_id": user,
            "event_id": event.event_id,
            "reference_id": event.reference_id,
            "original_reference_id": original,
            "original_event_id": award.event_id,
            "points": -take,
            "awarded_points": award.points,
            "total_points": total,
            "lifetime_earned": after,
            "tier": self.tier_of(after).name,
        });
        self.emit(&partner.id, "rewards.points_reversed", &payload)?;
        Ok(-take)
    }

    // ----- token claims -----

    pub fn token_claims(&mut self, user: &str) -> Result<Vec<(String, String)>, String> {
        let lifetime = self.lifetime(user)?;
        let name = Value::String(self.tier_of(lifetime).name.clone());
        Ok(vec![(TIER_CLAIM.to_string(), name.to_string())])
    }

    // ----- routes -----

    pub fn handle(&mut self, caller: &Caller, req: &HttpRequest) -> Handled {
        let path = req.path.split('?').next().unwrap_or("");
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let id = |i: usize| req.param("id").unwrap_or(segments[i]).to_string();
        use CallerKind::*;
        let (need, route): (Option<CallerKind>, Route) = match (req.method.as_str(), &segments[..])
        {
            ("GET", ["api", "rewards", "rules"]) => (Some(Admin), Route::ListRules),
            ("POST", ["api", "rewards", "rules"]) => (Some(Admin), Route::CreateRule),
            ("GET", ["api", "rewards", "rules", _]) => (Some(Admin), Route::GetRule(id(3))),
            ("PUT", ["api", "rewards", "rules", _]) => (Some(Admin), Route::PutRule(id(3))),
            ("DELETE", ["api", "rewards", "rules", _]) => (Some(Admin), Route::DeleteRule(id(3))),
            ("GET", ["api", "rewards", "users", _]) => (Some(Admin), Route::AdminUser(id(3))),
            ("POST", ["api", "rewards", "users", _, "adjust"]) => {
                (Some(Admin), Route::Adjust(id(3)))
            }
            ("GET", ["api", "account", "rewards"]) => (Some(User), Route::Summary),
            ("GET", ["api", "account", "rewards", "history"]) => (Some(User), Route::History),
            ("POST", ["api", "account", "cashback", "redeem"]) => (Some(User), Route::Redeem),
            // Authenticated by its own signature, whoever the host says called.
            ("POST", ["api", "cashback", "callback"]) => (None, Route::Callback),
            _ => return Ok(error(404, "not_found", "no such route")),
        };
        if need.is_some_and(|k| k != caller.kind) {
            return Ok(error(403, "forbidden", "this route is not for this caller"));
        }
        match route {
            Route::ListRules => self.list_rules(),
            Route::CreateRule => self.create_rule(req),
            Route::GetRule(id) => match self.get_json::<Rule>(&rule_key(&id))? {
                Some(rule) => Ok(respond(200, json!(rule))),
                None => not_found("rule"),
            },
            Route::PutRule(id) => self.put_rule(&id, req),
            Route::DeleteRule(id) => self.delete_rule(&id),
            Route::AdminUser(id) => self.admin_user(&id, req),
            Route::Adjust(id) => self.adjust(&id, req),
            Route::Summary => {
                let summary = self.summary(&caller.subject)?;
                Ok(respond(200, summary))
            }
            Route::History => match self.history_page(&caller.subject, req)? {
                Ok(page) => Ok(respond(200, page)),
                Err(bad) => Ok(bad),
            },
            Route::Redeem => self.redeem(&caller.subject, req),
            Route::Callback => self.callback(req),
        }
    }

    // ----- rules -----

    fn list_rules(&mut self) -> Handled {
        let mut rules: Vec<Rule> = Vec::new();
        for (key, text) in self.host.kv_scan("rule/", MAX_RULES) {
            let rule = serde_json::from_str(&text)
                .map_err(|e| format!("stored {key} is unreadable: {e}"))?;
            rules.push(rule);
        }
        rules.sort_by_key(|r| r.seq);
        Ok(respond(200, json!({ "rules": rules })))
    }

    fn create_rule(&mut self, req: &HttpRequest) -> Handled {
        let body = match parse_body(req) {
            Ok(b) => b,
            Err(bad) => return Ok(bad),
        };
        let input = match rules::parse_input(&body, &self.config.tiers) {
            Ok(i) => i,
            Err(message) => return invalid(message),
        };
        let seq: u64 = self.get_json("meta/rule-seq")?.unwrap_or(0) + 1;
        let id = format!("rule_{seq:06}");
        let now = periods::rfc3339(self.host.now());
        let rule = input.into_rule(id, seq, now.clone(), now);
        self.put_json("meta/rule-seq", &seq)?;
        self.put_json(&rule_key(&rule.id), &rule)?;
        self.index_add(&rule.event_type, &rule.id)?;
        Ok(respond(201, json!(rule)))
    }

    fn put_rule(&mut self, id: &str, req: &HttpRequest) -> Handled {
        let Some(old) = self.get_json::<Rule>(&rule_key(id))? else {
            return not_found("rule");
        };
        let body = match parse_body(req) {
            Ok(b) => b,
            Err(bad) => return Ok(bad),
        };
        if let Some(given) = body.get("id")
            && given.as_str() != Some(id)
        {
            return invalid("id: does not match the rule in the path");
        }
        let input = match rules::parse_input(&body, &self.config.tiers) {
            Ok(i) => i,
            Err(message) => return invalid(message),
        };
        let now = periods::rfc3339(self.host.now());
        let rule = input.into_rule(old.id.clone(), old.seq, old.created_at.clone(), now);
        if rule.event_type != old.event_type {
            self.index_remove(&old.event_type, id)?;
            self.index_add(&rule.event_type, id)?;
        }
        self.put_json(&rule_key(id), &rule)?;
        Ok(respond(200, json!(rule)))
    }

    fn delete_rule(&mut self, id: &str) -> Handled {
        let Some(old) = self.get_json::<Rule>(&rule_key(id))? else {
            return not_found("rule");
        };
        self.index_remove(&old.event_type, id)?;
        self.host.kv_delete(&rule_key(id));
        Ok(respond(200, json!({"id": id, "deleted": true})))
    }

    fn index_add(&mut self, event_type: &str, id: &str) -> Result<(), String> {
        let key = index_key(event_type);
        let mut ids: Vec<String> = self.get_json(&key)?.unwrap_or_default();
        if !ids.iter().any(|i| i == id) {
            ids.push(id.to_string());
        }
        self.put_json(&key, &ids)
    }

    fn index_remove(&mut self, event_type: &str, id: &str) -> Result<(), String> {
        let key = index_key(event_type);
        let mut ids: Vec<String> = self.get_json(&key)?.unwrap_or_default();
        ids.retain(|i| i != id);
        if ids.is_empty() {
            self.host.kv_delete(&key);
            Ok(())
        } else {
            self.put_json(&key, &ids)
        }
    }

    // ----- balances and history -----

    fn summary(&mut self, user: &str) -> Result<Value, String> {
        let lifetime = self.lifetime(user)?;
        let tier = self.tier_of(lifetime);
        Ok(json!({
            "total_points": self.host.balance(user),
            "lifetime_earned": lifetime,
            "tier": tier.name,
            "tier_details": tier_json(tier),
        }))
    }

    /// `?limit=&cursor=`: newest first; `next_cursor` (a string) fetches the older page.
    fn history_page(
        &mut self,
        user: &str,
        req: &HttpRequest,
    ) -> Result<Result<Value, HttpResponse>, String> {
        let limit = match req.query("limit") {
            None | Some("") => DEFAULT_PAGE,
            Some(s) => match s.parse::<u32>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                _ => {
                    let message = format!("limit: must be a whole number from 1 to {MAX_PAGE}");
                    return Ok(Err(error(400, "invalid_request", message)));
                }
            },
        };
        let cursor = match req.query("cursor") {
            None | Some("") => None,
            Some(s) => match s.parse::<u64>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    let message = "cursor: must be a next_cursor from an earlier page";
                    return Ok(Err(error(400, "invalid_request", message)));
                }
            },
        };
        let page = self.host.history(user, cursor, limit);
        let entries: Vec<Value> = page.entries.iter().map(entry_json).collect();
        Ok(Ok(json!({
            "entries": entries,
            "next_cursor": page.next_cursor.map(|c| c.to_string()),
        })))
    }

    fn admin_user(&mut self, user: &str, req: &HttpRequest) -> Handled {
        if !self.host.user_exists(user) {
            return not_found("user");
        }
        let mut body = self.summary(user)?;
        let history = match self.history_page(user, req)? {
            Ok(h) => h,
            Err(bad) => return Ok(bad),
        };
        body["user_id"] = json!(user);
        body["history"] = history;
        Ok(respond(200, body))
    }

    /// `{"points": signed, "reason"}`: an `adjust` entry; never below zero. Lifetime
    /// earned is not changed by adjustments.
    fn adjust(&mut self, user: &str, req: &HttpRequest) -> Handled {
        let body = match parse_body(req) {
            Ok(b) => b,
            Err(bad) => return Ok(bad),
        };
        let Value::Object(fields) = &body else {
            return invalid("body: must be a JSON object");
        };
        if let Some(unknown) = fields
            .keys()
            .find(|k| !matches!(k.as_str(), "points" | "reason"))
        {
            return invalid(format!("{unknown}: unknown field"));
        }
        let points = match body.get("points").and_then(Value::as_i64) {
            Some(p) if p != 0 && p.abs() < (1 << 53) => p,
            _ => return invalid("points: must be a non-zero whole number (negative to deduct)"),
        };
        let reason = match body.get("reason").and_then(Value::as_str).map(str::trim) {
            Some(r) if !r.is_empty() && r.len() <= 200 => r.to_string(),
            _ => return invalid("reason: is required (1 to 200 characters)"),
        };
        if !self.host.user_exists(user) {
            return not_found("user");
        }
        let meta = Meta {
            kind: Kind::Adjust,
            partner: None,
            event_type: None,
            reference: None,
            note: Some(reason),
        };
        let result = if points > 0 {
            self.host.credit(user, points, meta)
        } else {
            self.host.debit(user, -points, meta)
        };
        match result {
            Ok(entry) => Ok(respond(
                200,
                json!({
                    "user_id": user,
                    "total_points": entry.balance_after,
                    "entry": entry_json(&entry),
                }),
            )),
            Err(LedgerError::Insufficient(balance)) => Ok(error(
                400,
                "insufficient_points",
                format!("points: the balance is {balance}; it cannot go below zero"),
            )),
            Err(LedgerError::UnknownUser(_)) => not_found("user"),
            Err(e) => Err(ledger_failure(e)),
        }
    }

    // ----- cashback -----

    fn redeem(&mut self, user: &str, req: &HttpRequest) -> Handled {
        let body = match parse_body(req) {
            Ok(b) => b,
            Err(bad) => return Ok(bad),
        };
        let request = match cashback::parse_request(&body) {
            Ok(r) => r,
            Err(message) => return invalid(message),
        };
        let fingerprint = format!(
            "{}|{}|{:?}",
            request.points, request.phone_number, request.network
        );
        let idem = match req.header("Idempotency-Key") {
            None => None,
            Some(k)
                if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                let key = idem_key(user, k);
                if let Some(stored) = self.get_json::<IdempotentResult>(&key)? {
                    if stored.fingerprint != fingerprint {
                        return Ok(error(
                            409,
                            "idempotency_conflict",
                            "this Idempotency-Key was used for a different redemption",
                        ));
                    }
                    let mut replay = HttpResponse {
                        status: stored.status,
                        body: stored.body,
                        headers: Vec::new(),
                    };
                    replay
                        .headers
                        .push(("Idempotent-Replayed".into(), "true".into()));
                    return Ok(replay);
                }
                Some(key)
            }
            Some(_) => {
                return invalid("Idempotency-Key: must be 1 to 255 visible ASCII characters");
            }
        };
        let min = self.config.limits.min_points;
        if request.points < min {
            return invalid(format!("points: at least {min} points per redemption"));
        }
        let lifetime = self.lifetime(user)?;
        let tier = self.tier_of(lifetime);
        let quote = cashback::quote(request.points, tier);
        if quote.gross_minor <= 0 {
            return invalid("points: worth nothing at your tier's cashback rate");
        }
        let now = self.host.now();
        let skey = cashback_key(user);
        let state: UserState = self.get_json(&skey)?.unwrap_or_default();
        let next = match cashback::check_and_record(&state, quote.gross_minor, now, self.config) {
            Ok(next) => next,
            Err(check) => return Ok(error(429, "fraud_check_failed", check.0)),
        };
        let id = format!(
            "cb_{}",
            &signature::sha256_hex(format!("{user}\n{}\n{now}", next.total).as_bytes())[..24]
        );
        let meta = Meta {
            kind: Kind::Redeem,
            partner: None,
            event_type: Some("cashback".into()),
            reference: Some(id.clone()),
            note: Some(format!("cashback to {:?}", request.network).to_lowercase()),
        };
        let entry = match self.host.debit(user, request.points, meta) {
            Ok(entry) => entry,
            Err(LedgerError::Insufficient(balance)) => {
                return Ok(error(
                    400,
                    "insufficient_points",
                    format!(
                        "the balance is {balance} points; {} requested",
                        request.points
                    ),
                ));
            }
            Err(e) => return Err(ledger_failure(e)),
        };
        let redemption = Redemption {
            id: id.clone(),
            user: user.to_string(),
            points: request.points,
            tier: tier.name.clone(),
            phone_number: request.phone_number,
            network: request.network,
            quote,
            currency: self.config.currency.clone(),
            status: Status::Pending,
            reason: None,
            created_at: now,
            updated_at: now,
            refund_entry: None,
        };
        self.put_json(&skey, &next)?;
        self.put_json(&redemption_key(&id), &redemption)?;
        let body = redemption.to_json();
        if let Some(key) = idem {
            let stored = IdempotentResult {
                fingerprint,
                status: 201,
                body: body.to_string(),
            };
            self.put_json(&key, &stored)?;
        }
        let mut detail = redemption.detail_json();
        detail["user_id"] = json!(user);
        self.emit_cashback("cashback.redeemed", &detail)?;
        let payload = json!({
            "user_id": user,
            "redemption_id": id,
            "points": request.points,
            "total_points": entry.balance_after,
            "tier": tier.name,
        });
        self.emit_cashback("rewards.redeemed", &payload)?;
        Ok(respond(201, body))
    }

    /// The payout provider's status report, signed with `callback_secret`.
    fn callback(&mut self, req: &HttpRequest) -> Handled {
        let Some(secret) = self.config.callback_secret.clone() else {
            self.host.log(
                Level::Error,
                "a cashback callback arrived but callback_secret is not configured",
            );
            return Ok(error(
                401,
                "invalid_signature",
                "callbacks are not accepted",
            ));
        };
        let Some(signature) = req.header("X-Signature") else {
            return Ok(error(401, "invalid_signature", "X-Signature is missing"));
        };
        if !signature::verify(secret.as_bytes(), &req.body, signature) {
            return Ok(error(
                401,
                "invalid_signature",
                "X-Signature does not match",
            ));
        }
        let body = match parse_body(req) {
            Ok(b) => b,
            Err(bad) => return Ok(bad),
        };
        let report = match cashback::parse_callback(&body) {
            Ok(r) => r,
            Err(message) => return invalid(message),
        };
        let key = redemption_key(&report.cashback_id);
        let Some(mut redemption) = self.get_json::<Redemption>(&key)? else {
            return not_found("redemption");
        };
        match cashback::transition(redemption.status, report.status) {
            Transition::Repeat => return Ok(respond(200, redemption.detail_json())),
            Transition::Illegal => {
                return Ok(error(
                    409,
                    "invalid_transition",
                    format!(
                        "status: a {} redemption cannot become {}",
                        redemption.status.as_str(),
                        report.status.as_str()
                    ),
                ));
            }
            Transition::Move => {}
        }
        let mut refunded = 0;
        let mut total = None;
        if report.status.refunds() {
            let meta = Meta {
                kind: Kind::Refund,
                partner: None,
                event_type: Some("cashback".into()),
                reference: Some(redemption.id.clone()),
                note: Some(format!("cashback {}", report.status.as_str())),
            };
            let entry = self
                .host
                .credit(&redemption.user, redemption.points, meta)
                .map_err(ledger_failure)?;
            refunded = redemption.points;
            total = Some(entry.balance_after);
            redemption.refund_entry = Some(entry.id);
        }
        redemption.status = report.status;
        redemption.reason = report.reason;
        redemption.updated_at = self.host.now();
        self.put_json(&key, &redemption)?;
        let payload = json!({
            "redemption_id": redemption.id,
            "user_id": redemption.user,
            "status": redemption.status.as_str(),
            "reason": redemption.reason,
            "points": redemption.points,
            "refunded_points": refunded,
            "total_points": total,
            "net_amount": cashback::amount(redemption.quote.net_minor),
            "currency": redemption.currency,
        });
        self.emit_cashback("cashback.processed", &payload)?;
        Ok(respond(200, redemption.detail_json()))
    }
}

enum Route {
    ListRules,
    CreateRule,
    GetRule(String),
    PutRule(String),
    DeleteRule(String),
    AdminUser(String),
    Adjust(String),
    Summary,
    History,
    Redeem,
    Callback,
}

fn parse_body(req: &HttpRequest) -> Result<Value, HttpResponse> {
    serde_json::from_slice(&req.body).map_err(|e| {
        error(
            400,
            "invalid_request",
            format!("body: not valid JSON ({e})"),
        )
    })
}
