//! Cashback: the redemption request, its quote (rate and fee by tier, in minor currency
//! units), the fraud checks, and the payout status machine.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Config;
use crate::periods;
use crate::tiers::Tier;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    Mtn,
    Telecel,
    Airteltigo,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RedeemRequest {
    pub points: i64,
    /// Normalized to `+233XXXXXXXXX`.
    pub phone_number: String,
    pub network: Network,
}

/// A Ghana mobile number: `0XXXXXXXXX` or `+233XXXXXXXXX` (nine digits after the
/// prefix; spaces and dashes are ignored). Returns it as `+233XXXXXXXXX`.
pub fn normalize_phone(raw: &str) -> Option<String> {
    let compact: String = raw.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    let rest = compact
        .strip_prefix("+233")
        .or_else(|| compact.strip_prefix('0'))?;
    (rest.len() == 9 && rest.bytes().all(|b| b.is_ascii_digit()) && !rest.starts_with('0'))
        .then(|| format!("+233{rest}"))
}

/// Validates `{"points","phone_number","network"}`; errors start with the field.
pub fn parse_request(body: &Value) -> Result<RedeemRequest, String> {
    let Value::Object(body) = body else {
        return Err("body: must be a JSON object".into());
    };
    if let Some(unknown) = body
        .keys()
        .find(|k| !matches!(k.as_str(), "points" | "phone_number" | "network"))
    {
        return Err(format!("{unknown}: unknown field"));
    }
    let points = match body.get("points") {
        None | Some(Value::Null) => return Err("points: is required".into()),
        Some(v) => match v.as_i64() {
            Some(p) if p > 0 && p < (1 << 53) => p,
            _ => return Err("points: must be a positive whole number".into()),
        },
    };
    let phone_number = match body.get("phone_number") {
        None | Some(Value::Null) => return Err("phone_number: is required".into()),
        Some(Value::String(s)) => normalize_phone(s).ok_or_else(|| {
            "phone_number: must be a Ghana mobile number, 0XXXXXXXXX or +233XXXXXXXXX".to_string()
        })?,
        Some(_) => return Err("phone_number: must be a string".into()),
    };
    let network = match body.get("network") {
        None | Some(Value::Null) => return Err("network: is required".into()),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "mtn" => Network::Mtn,
            "telecel" => Network::Telecel,
            "airteltigo" => Network::Airteltigo,
            _ => return Err("network: must be one of mtn, telecel, airteltigo".into()),
        },
        Some(_) => return Err("network: must be a string".into()),
    };
    Ok(RedeemRequest {
        points,
        phone_number,
        network,
    })
}

/// What a redemption pays, in minor units (hundredths of the currency).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quote {
    pub rate: f64,
    pub fee_rate: f64,
    pub gross_minor: i64,
    pub fee_minor: i64,
    pub net_minor: i64,
}

/// gross = floor(points × rate) to the minor unit; fee = gross × fee_rate rounded half
/// up to the minor unit; net = gross − fee.
pub fn quote(points: i64, tier: &Tier) -> Quote {
    let gross = points as f64 * tier.cashback_rate * 100.0;
    let gross_minor = ((gross * 1e6).round() / 1e6).floor() as i64;
    let fee = gross_minor as f64 * tier.fee_rate;
    let fee_minor = (((fee * 1e6).round() / 1e6) + 0.5).floor() as i64;
    let fee_minor = fee_minor.clamp(0, gross_minor);
    Quote {
        rate: tier.cashback_rate,
        fee_rate: tier.fee_rate,
        gross_minor,
        fee_minor,
        net_minor: gross_minor - fee_minor,
    }
}

/// Minor units as a JSON number of currency units (`250` → `2.5`).
pub fn amount(minor: i64) -> f64 {
    minor as f64 / 100.0
}

/// A user's redemptions today, for the fraud checks; one record per user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserState {
    /// The UTC day `count` and `gross_minor` are for.
    pub day: String,
    pub count: u32,
    pub gross_minor: i64,
    /// When the last redemption was made (ms).
    pub last_at: Option<i64>,
    /// Redemptions ever made: makes redemption ids unique per user.
    pub total: u64,
}

/// A fraud check that failed: `429 fraud_check_failed` with this message.
#[derive(Debug, Clone, PartialEq)]
pub struct FraudCheck(pub String);

/// The checks before a redemption of `gross_minor` at `now`: redemptions per day, the
/// gap since the last one, and the daily amount. Every created redemption counts, also
/// one whose payout later failed. On success returns the state to store.
pub fn check_and_record(
    state: &UserState,
    gross_minor: i64,
    now: i64,
    config: &Config,
) -> Result<UserState, FraudCheck> {
    let limits = &config.limits;
    let today = periods::day_key(now);
    let mut next = state.clone();
    if next.day != today {
        next.day = today;
        next.count = 0;
        next.gross_minor = 0;
    }
    if next.count >= limits.max_redemptions_per_day {
        return Err(FraudCheck(format!(
            "at most {} redemptions per day",
            limits.max_redemptions_per_day
        )));
    }
    let gap_ms = limits.min_minutes_between * 60_000;
    if let Some(last) = state.last_at
        && now - last < gap_ms
    {
        let wait = (gap_ms - (now - last) + 59_999) / 60_000;
        return Err(FraudCheck(format!(
            "redemptions must be {} minutes apart; try again in {wait} minutes",
            limits.min_minutes_between
        )));
    }
    let cap = config.max_minor_per_day();
    if next.gross_minor + gross_minor > cap {
        return Err(FraudCheck(format!(
            "at most {} {} per day; {} left today",
            fmt_amount(cap),
            config.currency,
            fmt_amount((cap - next.gross_minor).max(0))
        )));
    }
    next.count += 1;
    next.gross_minor += gross_minor;
    next.last_at = Some(now);
    next.total += 1;
    Ok(next)
}

fn fmt_amount(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    /// A status the payout provider may report (never `pending`).
    pub fn parse_reported(s: &str) -> Option<Status> {
        Some(match s {
            "processing" => Status::Processing,
            "completed" => Status::Completed,
            "failed" => Status::Failed,
            "cancelled" | "canceled" => Status::Cancelled,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Processing => "processing",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// Whether the points go back to the user on reaching this status.
    pub fn refunds(self) -> bool {
        matches!(self, Status::Failed | Status::Cancelled)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Apply it.
    Move,
    /// The same status again (a provider retry): answer as before, change nothing.
    Repeat,
    /// Not allowed: `409`.
    Illegal,
}

/// pending → processing | completed | failed | cancelled; processing → completed |
/// failed | cancelled; completed, failed and cancelled are final.
pub fn transition(from: Status, to: Status) -> Transition {
    use Status::*;
    if from == to {
        return Transition::Repeat;
    }
    match (from, to) {
        (Pending, Processing | Completed | Failed | Cancelled) => Transition::Move,
        (Processing, Completed | Failed | Cancelled) => Transition::Move,
        _ => Transition::Illegal,
    }
}

/// A stored redemption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Redemption {
    pub id: String,
    pub user: String,
    pub points: i64,
    pub tier: String,
    pub phone_number: String,
    pub network: Network,
    pub quote: Quote,
    pub currency: String,
    pub status: Status,
    pub reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The ledger entry of the refund, once failed or cancelled.
    pub refund_entry: Option<String>,
}

impl Redemption {
    /// The published `201` body: exactly the mgPass fields.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "redemption_id": self.id,
            "status": self.status.as_str(),
            "points": self.points,
            "tier": self.tier,
            "rate": self.quote.rate,
            "gross_amount": amount(self.quote.gross_minor),
            "fee_rate": self.quote.fee_rate,
            "fee_amount": amount(self.quote.fee_minor),
            "net_amount": amount(self.quote.net_minor),
        })
    }

    /// The published fields and the rest: currency, payee, reason, times.
    pub fn detail_json(&self) -> Value {
        let mut v = self.to_json();
        v["currency"] = Value::from(self.currency.clone());
        v["phone_number"] = Value::from(self.phone_number.clone());
        v["network"] = serde_json::json!(self.network);
        v["reason"] = serde_json::json!(self.reason);
        v["created_at"] = Value::from(periods::rfc3339(self.created_at));
        v["updated_at"] = Value::from(periods::rfc3339(self.updated_at));
        v
    }
}

/// `{"cashback_ID","status","reason"}` from the payout provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Callback {
    pub cashback_id: String,
    pub status: Status,
    pub reason: Option<String>,
}

pub fn parse_callback(body: &Value) -> Result<Callback, String> {
    let Value::Object(body) = body else {
        return Err("body: must be a JSON object".into());
    };
    let cashback_id = match body.get("cashback_ID") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 128 => s.clone(),
        Some(_) => return Err("cashback_ID: must be a redemption id".into()),
        None => return Err("cashback_ID: is required".into()),
    };
    let status = match body.get("status") {
        Some(Value::String(s)) => Status::parse_reported(s).ok_or_else(|| {
            "status: must be one of processing, completed, failed, cancelled".to_string()
        })?,
        Some(_) => return Err("status: must be a string".into()),
        None => return Err("status: is required".into()),
    };
    let reason = match body.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= 500 => Some(s.clone()),
        Some(_) => return Err("reason: must be a string of at most 500 characters".into()),
    };
    Ok(Callback {
        cashback_id,
        status,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::periods::ms_of;
    use crate::tiers::default_tiers;
    use serde_json::json;

    #[test]
    fn phone_numbers() {
        assert_eq!(
            normalize_phone("0241234567").as_deref(),
            Some("+233241234567")
        );
        assert_eq!(
            normalize_phone("+233241234567").as_deref(),
            Some("+233241234567")
        );
        assert_eq!(
            normalize_phone("024 123 4567").as_deref(),
            Some("+233241234567")
        );
        for bad in [
            "",
            "024123456",
            "02412345678",
            "+23324123456",
            "233241234567",
            "+233 0241234567",
            "0a41234567",
            "+2330241234567",
            "00241234567",
        ] {
            assert_eq!(normalize_phone(bad), None, "{bad}");
        }
    }

    #[test]
    fn request_validation_names_the_field() {
        let ok = parse_request(&json!({"points":300,"phone_number":"0241234567","network":"MTN"}))
            .unwrap();
        assert_eq!(ok.network, Network::Mtn);
        let err = |v| parse_request(&v).unwrap_err();
        assert!(err(json!({"phone_number":"0241234567","network":"mtn"})).starts_with("points:"));
        assert!(
            err(json!({"points":2.5,"phone_number":"0241234567","network":"mtn"}))
                .starts_with("points:")
        );
        assert!(
            err(json!({"points":-1,"phone_number":"0241234567","network":"mtn"}))
                .starts_with("points:")
        );
        assert!(err(json!({"points":300,"network":"mtn"})).starts_with("phone_number:"));
        assert!(
            err(json!({"points":300,"phone_number":"12345","network":"mtn"}))
                .starts_with("phone_number:")
        );
        assert!(
            err(json!({"points":300,"phone_number":"0241234567","network":"vodafone"}))
                .starts_with("network:")
        );
        assert!(err(json!({"points":300,"phone_number":"0241234567"})).starts_with("network:"));
        assert!(err(json!("x")).starts_with("body:"));
    }

    #[test]
    fn quotes_by_tier() {
        let tiers = default_tiers();
        // Bronze: 1000 × 0.01 = 10.00, fee 5% = 0.50, net 9.50.
        let q = quote(1000, &tiers[0]);
        assert_eq!((q.gross_minor, q.fee_minor, q.net_minor), (1000, 50, 950));
        // 250 × 0.01 = 2.50, fee 0.125 → 0.13 (half up), net 2.37.
        let q = quote(250, &tiers[0]);
        assert_eq!((q.gross_minor, q.fee_minor, q.net_minor), (250, 13, 237));
        // Silver 3%: 333 → 3.33, fee 0.0999 → 0.10.
        let q = quote(333, &tiers[1]);
        assert_eq!((q.gross_minor, q.fee_minor, q.net_minor), (333, 10, 323));
        // Platinum: no fee.
        let q = quote(20_000, &tiers[3]);
        assert_eq!(
            (q.gross_minor, q.fee_minor, q.net_minor),
            (20_000, 0, 20_000)
        );
        assert_eq!(amount(237), 2.37);
        // A rate that does not divide evenly rounds the gross down.
        let mut t = tiers[0].clone();
        t.cashback_rate = 0.0333;
        assert_eq!(quote(100, &t).gross_minor, 333);
        assert_eq!(quote(1, &t).gross_minor, 3);
    }

    #[test]
    fn fraud_checks() {
        let config = Config::default();
        let day = |h, m| ms_of(2024, 6, 1, h, m);
        let s0 = UserState::default();
        let s1 = check_and_record(&s0, 1000, day(8, 0), &config).unwrap();
        assert_eq!((s1.count, s1.gross_minor, s1.total), (1, 1000, 1));
        // 59 minutes later: too soon.
        let e = check_and_record(&s1, 1000, day(8, 59), &config).unwrap_err();
        assert!(e.0.contains("60 minutes"), "{}", e.0);
        let s2 = check_and_record(&s1, 1000, day(9, 0), &config).unwrap();
        let s3 = check_and_record(&s2, 1000, day(10, 0), &config).unwrap();
        let e = check_and_record(&s3, 1000, day(11, 0), &config).unwrap_err();
        assert!(e.0.contains("3 redemptions"), "{}", e.0);
        // A new UTC day resets the count and amount.
        let s4 = check_and_record(&s3, 1000, ms_of(2024, 6, 2, 0, 0), &config).unwrap();
        assert_eq!((s4.count, s4.gross_minor, s4.total), (1, 1000, 4));
        // The daily amount: 500.00 in all.
        let s = check_and_record(&s0, 49_000, day(8, 0), &config).unwrap();
        let e = check_and_record(&s, 1_001, day(10, 0), &config).unwrap_err();
        assert!(e.0.contains("500.00 GHS per day; 10.00 left"), "{}", e.0);
        assert!(check_and_record(&s, 1_000, day(10, 0), &config).is_ok());
        assert!(check_and_record(&s0, 50_001, day(8, 0), &config).is_err());
        // The gap also applies across midnight.
        let late = check_and_record(&s0, 100, ms_of(2024, 6, 1, 23, 30), &config).unwrap();
        assert!(check_and_record(&late, 100, ms_of(2024, 6, 2, 0, 10), &config).is_err());
    }

    #[test]
    fn transitions() {
        use Status::*;
        use Transition::*;
        assert_eq!(transition(Pending, Processing), Move);
        assert_eq!(transition(Pending, Completed), Move);
        assert_eq!(transition(Pending, Failed), Move);
        assert_eq!(transition(Pending, Cancelled), Move);
        assert_eq!(transition(Processing, Completed), Move);
        assert_eq!(transition(Processing, Failed), Move);
        assert_eq!(transition(Processing, Processing), Repeat);
        assert_eq!(transition(Completed, Completed), Repeat);
        assert_eq!(transition(Completed, Failed), Illegal);
        assert_eq!(transition(Completed, Processing), Illegal);
        assert_eq!(transition(Failed, Completed), Illegal);
        assert_eq!(transition(Failed, Cancelled), Illegal);
        assert_eq!(transition(Cancelled, Processing), Illegal);
        assert!(Failed.refunds() && Cancelled.refunds() && !Completed.refunds());
    }

    #[test]
    fn callback_parsing() {
        let c =
            parse_callback(&json!({"cashback_ID":"cb_1","status":"failed","reason":"no"})).unwrap();
        assert_eq!(c.status, Status::Failed);
        assert!(
            parse_callback(&json!({"cashback_ID":"cb_1","status":"pending"}))
                .unwrap_err()
                .starts_with("status:")
        );
        assert!(
            parse_callback(&json!({"status":"completed"}))
                .unwrap_err()
                .starts_with("cashback_ID:")
        );
        assert!(
            parse_callback(&json!({"cashback_ID":"cb_1","status":"completed","reason":5}))
                .unwrap_err()
                .starts_with("reason:")
        );
    }
}
