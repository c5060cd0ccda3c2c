//! Earning rules: their wire shape and validation, which rule an event matches, and the
//! points it is worth before caps.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::tiers::{self, Tier};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Frequency {
    Unlimited,
    Once,
    Daily,
    Weekly,
    Monthly,
}

impl Frequency {
    fn parse(s: &str) -> Option<Frequency> {
        Some(match s {
            "unlimited" => Frequency::Unlimited,
            "once" => Frequency::Once,
            "daily" => Frequency::Daily,
            "weekly" => Frequency::Weekly,
            "monthly" => Frequency::Monthly,
            _ => return None,
        })
    }
}

/// A stored rule; serialized as is for the admin API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    pub event_type: String,
    pub platform: Option<String>,
    pub tier: Option<String>,
    /// Points per event, or per unit with `unit_field`; may be fractional.
    pub points: f64,
    pub unit_field: Option<String>,
    pub daily_cap: Option<i64>,
    pub monthly_cap: Option<i64>,
    pub frequency: Frequency,
    pub active: bool,
    /// Creation order: ties between rules of the same precedence go to the oldest.
    pub seq: u64,
    pub created_at: String,
    pub updated_at: String,
}

/// What an admin sends (POST creates, PUT replaces); validated, not yet stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleInput {
    pub event_type: String,
    pub platform: Option<String>,
    pub tier: Option<String>,
    pub points: f64,
    pub unit_field: Option<String>,
    pub daily_cap: Option<i64>,
    pub monthly_cap: Option<i64>,
    pub frequency: Frequency,
    pub active: bool,
}

pub const MAX_RULE_POINTS: f64 = 1_000_000.0;
const MAX_CAP: i64 = 1 << 40;

/// Event types and unit fields: 1 to 64 of `A-Z a-z 0-9 _ . : -`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

fn optional_string(body: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{field}: must be a string or null")),
    }
}

fn optional_cap(body: &Map<String, Value>, field: &str) -> Result<Option<i64>, String> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if (1..=MAX_CAP).contains(&n) => Ok(Some(n)),
            _ => Err(format!(
                "{field}: must be a whole number of points, at least 1, or null"
            )),
        },
    }
}

/// Validates a rule body; every error starts with the field it is about. `id` and the
/// timestamps are accepted and ignored so a fetched rule can be sent back as it is.
pub fn parse_input(body: &Value, tiers: &[Tier]) -> Result<RuleInput, String> {
    let Value::Object(body) = body else {
        return Err("body: must be a JSON object".into());
    };
    const KNOWN: &[&str] = &[
        "id",
        "event_type",
        "platform",
        "tier",
        "points",
        "unit_field",
        "daily_cap",
        "monthly_cap",
        "frequency",
        "active",
        "seq",
        "created_at",
        "updated_at",
    ];
    if let Some(unknown) = body.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!("{unknown}: unknown field"));
    }
    let event_type = match body.get("event_type") {
        None | Some(Value::Null) => return Err("event_type: is required".into()),
        Some(Value::String(s)) if valid_name(s) => s.clone(),
        Some(_) => {
            return Err("event_type: must be 1 to 64 letters, digits, or _ . : -".into());
        }
    };
    if event_type == crate::service::REFUND_EVENT {
        return Err("event_type: `refund` is reserved for reversals".into());
    }
    let platform = optional_string(body, "platform")?;
    if let Some(p) = &platform
        && (p.is_empty() || p.len() > 128 || p.contains('/'))
    {
        return Err("platform: must be a partner id (1 to 128 characters, no /)".into());
    }
    let tier = match optional_string(body, "tier")? {
        None => None,
        Some(name) => match tiers::find(tiers, &name) {
            Some(t) => Some(t.name.clone()),
            None => {
                let names: Vec<&str> = tiers.iter().map(|t| t.name.as_str()).collect();
                return Err(format!(
                    "tier: unknown tier {name:?} (one of {})",
                    names.join(", ")
                ));
            }
        },
    };
    let points = match body.get("points") {
        None | Some(Value::Null) => return Err("points: is required".into()),
        Some(v) => match v.as_f64() {
            Some(p) if p.is_finite() && p > 0.0 && p <= MAX_RULE_POINTS => p,
            _ => {
                return Err(format!(
                    "points: must be a number above 0 and at most {MAX_RULE_POINTS}"
                ));
            }
        },
    };
    let unit_field = optional_string(body, "unit_field")?;
    if let Some(f) = &unit_field
        && !valid_name(f)
    {
        return Err("unit_field: must be a metadata field name (e.g. amount, item_count)".into());
    }
    let daily_cap = optional_cap(body, "daily_cap")?;
    let monthly_cap = optional_cap(body, "monthly_cap")?;
    if let (Some(d), Some(m)) = (daily_cap, monthly_cap)
        && d > m
    {
        return Err("daily_cap: must not exceed monthly_cap".into());
    }
    let frequency = match body.get("frequency") {
        None | Some(Value::Null) => Frequency::Unlimited,
        Some(Value::String(s)) => Frequency::parse(s).ok_or_else(|| {
            "frequency: must be one of unlimited, once, daily, weekly, monthly".to_string()
        })?,
        Some(_) => return Err("frequency: must be a string".into()),
    };
    let active = match body.get("active") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("active: must be true or false".into()),
    };
    Ok(RuleInput {
        event_type,
        platform,
        tier,
        points,
        unit_field,
        daily_cap,
        monthly_cap,
        frequency,
        active,
    })
}

impl RuleInput {
    pub fn into_rule(self, id: String, seq: u64, created_at: String, updated_at: String) -> Rule {
        Rule {
            id,
            event_type: self.event_type,
            platform: self.platform,
            tier: self.tier,
            points: self.points,
            unit_field: self.unit_field,
            daily_cap: self.daily_cap,
            monthly_cap: self.monthly_cap,
            frequency: self.frequency,
            active: self.active,
            seq,
            created_at,
            updated_at,
        }
    }
}

/// The rule an event matches, by precedence: platform + event type + the user's tier;
/// then platform + event type with no tier; then event type + tier with no platform;
/// then event type alone. Inactive rules never match; among equals the oldest wins.
pub fn find_match<'a>(
    rules: &'a [Rule],
    event_type: &str,
    platform: &str,
    tier: &str,
) -> Option<&'a Rule> {
    let tier_is = |r: &Rule| {
        r.tier
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(tier))
    };
    let levels: [&dyn Fn(&Rule) -> bool; 4] = [
        &|r| r.platform.as_deref() == Some(platform) && tier_is(r),
        &|r| r.platform.as_deref() == Some(platform) && r.tier.is_none(),
        &|r| r.platform.is_none() && tier_is(r),
        &|r| r.platform.is_none() && r.tier.is_none(),
    ];
    levels.iter().find_map(|level| {
        rules
            .iter()
            .filter(|r| r.active && r.event_type == event_type && level(r))
            .min_by_key(|r| r.seq)
    })
}

/// Why a matched rule is worth nothing before caps.
#[derive(Debug, Clone, PartialEq)]
pub enum NoUnits {
    Missing(String),
    Invalid(String),
}

/// The number of units in the event: `metadata[unit_field]`, a non-negative number (or a
/// string holding one), or 1 without a unit field.
pub fn units(rule: &Rule, metadata: &Value) -> Result<f64, NoUnits> {
    let Some(field) = &rule.unit_field else {
        return Ok(1.0);
    };
    let value = match metadata.get(field) {
        None | Some(Value::Null) => return Err(NoUnits::Missing(field.clone())),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    match value {
        Some(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(NoUnits::Invalid(field.clone())),
    }
}

/// Largest award a single event can produce.
pub const MAX_EVENT_POINTS: i64 = 1 << 50;

/// `floor(points × units × tier multiplier × partner multiplier)`. The product is first
/// rounded to 6 decimals so binary representation error (0.29 × 100 = 28.999…) never
/// costs the user a point.
pub fn compute_points(rule_points: f64, units: f64, tier_mult: f64, partner_mult: f64) -> i64 {
    let raw = rule_points * units * tier_mult * partner_mult;
    if !raw.is_finite() || raw <= 0.0 {
        return 0;
    }
    let cleaned = if raw < 1e9 {
        (raw * 1e6).round() / 1e6
    } else {
        raw
    };
    let points = cleaned.floor();
    if points >= MAX_EVENT_POINTS as f64 {
        MAX_EVENT_POINTS
    } else {
        points as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tiers() -> Vec<Tier> {
        crate::tiers::default_tiers()
    }

    fn rule(seq: u64, event: &str, platform: Option<&str>, tier: Option<&str>) -> Rule {
        RuleInput {
            event_type: event.into(),
            platform: platform.map(Into::into),
            tier: tier.map(Into::into),
            points: 10.0,
            unit_field: None,
            daily_cap: None,
            monthly_cap: None,
            frequency: Frequency::Unlimited,
            active: true,
        }
        .into_rule(format!("rule_{seq}"), seq, String::new(), String::new())
    }

    fn err(body: Value) -> String {
        parse_input(&body, &tiers()).unwrap_err()
    }

    #[test]
    fn minimal_rule_gets_defaults() {
        let r = parse_input(&json!({"event_type":"purchase","points":5}), &tiers()).unwrap();
        assert_eq!(r.frequency, Frequency::Unlimited);
        assert!(r.active);
        assert_eq!(r.platform, None);
        assert_eq!(r.points, 5.0);
    }

    #[test]
    fn full_rule_and_tier_name_normalized() {
        let r = parse_input(
            &json!({"event_type":"purchase","platform":"p_1","tier":"gold","points":0.5,
                    "unit_field":"amount","daily_cap":100,"monthly_cap":1000,
                    "frequency":"weekly","active":false,"id":"rule_x"}),
            &tiers(),
        )
        .unwrap();
        assert_eq!(r.tier.as_deref(), Some("Gold"));
        assert_eq!(r.unit_field.as_deref(), Some("amount"));
        assert_eq!(r.frequency, Frequency::Weekly);
        assert!(!r.active);
    }

    #[test]
    fn validation_names_the_field() {
        assert!(err(json!([])).starts_with("body:"));
        assert!(err(json!({"points":1})).starts_with("event_type:"));
        assert!(err(json!({"event_type":"a b","points":1})).starts_with("event_type:"));
        assert!(err(json!({"event_type":"refund","points":1})).starts_with("event_type:"));
        assert!(err(json!({"event_type":"a"})).starts_with("points:"));
        assert!(err(json!({"event_type":"a","points":0})).starts_with("points:"));
        assert!(err(json!({"event_type":"a","points":-3})).starts_with("points:"));
        assert!(err(json!({"event_type":"a","points":"5"})).starts_with("points:"));
        assert!(err(json!({"event_type":"a","points":2e6})).starts_with("points:"));
        assert!(err(json!({"event_type":"a","points":1,"tier":"Diamond"})).starts_with("tier:"));
        assert!(err(json!({"event_type":"a","points":1,"platform":7})).starts_with("platform:"));
        assert!(err(json!({"event_type":"a","points":1,"platform":""})).starts_with("platform:"));
        assert!(
            err(json!({"event_type":"a","points":1,"unit_field":"x y"})).starts_with("unit_field:")
        );
        assert!(err(json!({"event_type":"a","points":1,"daily_cap":0})).starts_with("daily_cap:"));
        assert!(
            err(json!({"event_type":"a","points":1,"daily_cap":1.5})).starts_with("daily_cap:")
        );
        assert!(
            err(json!({"event_type":"a","points":1,"monthly_cap":-1})).starts_with("monthly_cap:")
        );
        assert!(
            err(json!({"event_type":"a","points":1,"daily_cap":10,"monthly_cap":5}))
                .starts_with("daily_cap:")
        );
        assert!(
            err(json!({"event_type":"a","points":1,"frequency":"hourly"}))
                .starts_with("frequency:")
        );
        assert!(err(json!({"event_type":"a","points":1,"active":"yes"})).starts_with("active:"));
        assert!(err(json!({"event_type":"a","points":1,"pionts":1})).starts_with("pionts:"));
    }

    #[test]
    fn matching_precedence() {
        let all = vec![
            rule(1, "purchase", None, None),
            rule(2, "purchase", None, Some("Gold")),
            rule(3, "purchase", Some("shop"), None),
            rule(4, "purchase", Some("shop"), Some("Gold")),
            rule(5, "signup", None, None),
        ];
        let id = |rules: &[Rule], platform, tier| {
            find_match(rules, "purchase", platform, tier).map(|r| r.seq)
        };
        assert_eq!(id(&all, "shop", "Gold"), Some(4));
        assert_eq!(id(&all, "shop", "Silver"), Some(3));
        assert_eq!(id(&all, "other", "Gold"), Some(2));
        assert_eq!(id(&all, "other", "Bronze"), Some(1));
        assert_eq!(id(&all[1..], "other", "Bronze"), None);
        // Tier names compare case-insensitively.
        assert_eq!(id(&all, "shop", "gold"), Some(4));
        // Platform-specific beats tier-specific.
        assert_eq!(
            id(&[all[1].clone(), all[2].clone()], "shop", "Gold"),
            Some(3)
        );
        // A rule for another platform never applies.
        assert_eq!(id(&[all[2].clone()], "other", "Gold"), None);
        assert!(find_match(&all, "refund", "shop", "Gold").is_none());
    }

    #[test]
    fn inactive_rules_fall_through_and_oldest_wins() {
        let mut specific = rule(4, "purchase", Some("shop"), None);
        specific.active = false;
        let rules = vec![
            rule(9, "purchase", None, None),
            specific,
            rule(7, "purchase", None, None),
        ];
        assert_eq!(
            find_match(&rules, "purchase", "shop", "Bronze")
                .unwrap()
                .seq,
            7
        );
    }

    #[test]
    fn units_from_metadata() {
        let mut r = rule(1, "purchase", None, None);
        assert_eq!(units(&r, &json!({})), Ok(1.0));
        r.unit_field = Some("amount".into());
        assert_eq!(units(&r, &json!({"amount": 12.5})), Ok(12.5));
        assert_eq!(units(&r, &json!({"amount": "40"})), Ok(40.0));
        assert_eq!(
            units(&r, &json!({})),
            Err(NoUnits::Missing("amount".into()))
        );
        assert_eq!(
            units(&r, &json!({"amount": -1})),
            Err(NoUnits::Invalid("amount".into()))
        );
        assert_eq!(
            units(&r, &json!({"amount": true})),
            Err(NoUnits::Invalid("amount".into()))
        );
    }

    #[test]
    fn rounding_is_floor_after_all_multipliers() {
        assert_eq!(compute_points(10.0, 1.0, 1.0, 1.0), 10);
        assert_eq!(compute_points(10.0, 1.0, 1.5, 1.0), 15);
        assert_eq!(compute_points(5.0, 1.0, 1.5, 1.0), 7); // 7.5 → 7
        assert_eq!(compute_points(1.0, 12.99, 1.0, 1.0), 12);
        assert_eq!(compute_points(1.0, 0.29, 100.0, 1.0), 29); // not 28
        assert_eq!(compute_points(10.0, 3.0, 1.1, 1.0), 33); // 33.000000000000004
        assert_eq!(compute_points(3.0, 1.0, 1.5, 1.25), 5); // 5.625
        assert_eq!(compute_points(0.1, 9.0, 1.0, 1.0), 0);
        assert_eq!(compute_points(10.0, 0.0, 3.0, 1.0), 0);
        assert_eq!(compute_points(10.0, 1.0, 1.0, 0.0), 0);
        assert_eq!(compute_points(10.0, f64::MAX, 3.0, 1.0), 0); // infinite → nothing
        assert_eq!(compute_points(1e6, 1e12, 3.0, 1.0), MAX_EVENT_POINTS);
    }
}
