//! The plugin's `[plugins.rewards]` table, as the JSON the host hands over. Every key is
//! optional; a bad value fails `init` with a message naming the key.

use serde::Deserialize;

use crate::tiers::{self, Tier};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Smallest redemption, in points.
    pub min_points: i64,
    /// Redemptions per user per UTC day.
    pub max_redemptions_per_day: u32,
    /// Gross currency units per user per UTC day.
    pub max_amount_per_day: f64,
    /// Minutes a user must wait after a redemption before the next.
    pub min_minutes_between: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            min_points: 250,
            max_redemptions_per_day: 3,
            max_amount_per_day: 500.0,
            min_minutes_between: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub tiers: Vec<Tier>,
    pub limits: Limits,
    /// The payout provider's HMAC secret for `POST /api/cashback/callback`; without it
    /// every callback is refused.
    pub callback_secret: Option<String>,
    /// Currency code shown with cashback amounts.
    pub currency: String,
    /// Partners that receive the cashback webhooks (`cashback.redeemed`,
    /// `rewards.redeemed`, `cashback.processed`), which no partner event caused.
    pub webhook_partners: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tiers: tiers::default_tiers(),
            limits: Limits::default(),
            callback_secret: None,
            currency: "GHS".into(),
            webhook_partners: Vec::new(),
        }
    }
}

impl Config {
    pub fn parse(json: &str) -> Result<Config, String> {
        let json = if json.trim().is_empty() { "{}" } else { json };
        let mut config: Config =
            serde_json::from_str(json).map_err(|e| format!("[plugins.rewards]: {e}"))?;
        config.tiers = tiers::validate(config.tiers)?;
        let l = &config.limits;
        if l.min_points < 1 {
            return Err("limits.min_points must be at least 1".into());
        }
        if !(l.max_amount_per_day.is_finite() && l.max_amount_per_day >= 0.0) {
            return Err("limits.max_amount_per_day must be a number, 0 or more".into());
        }
        if l.min_minutes_between < 0 {
            return Err("limits.min_minutes_between must be 0 or more".into());
        }
        if config
            .callback_secret
            .as_deref()
            .is_some_and(|s| s.len() < 16)
        {
            return Err("callback_secret must be at least 16 characters".into());
        }
        if config.currency.is_empty() || config.currency.len() > 8 {
            return Err("currency must be 1 to 8 characters".into());
        }
        Ok(config)
    }

    /// The daily amount cap in minor units (hundredths).
    pub fn max_minor_per_day(&self) -> i64 {
        (self.limits.max_amount_per_day * 100.0).round() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_gets_defaults() {
        let c = Config::parse("{}").unwrap();
        assert_eq!(c.tiers.len(), 4);
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.max_minor_per_day(), 50_000);
        assert_eq!(Config::parse("").unwrap(), c);
    }

    #[test]
    fn overrides_and_errors_name_the_key() {
        let c = Config::parse(
            r#"{"tiers":[{"name":"Basic","min_points":0,"multiplier":1},
                         {"name":"Plus","min_points":100,"multiplier":2,"cashback_rate":0.02,"fee_rate":0.1}],
                "limits":{"min_points":100},"callback_secret":"0123456789abcdef"}"#,
        )
        .unwrap();
        assert_eq!(c.tiers[1].cashback_rate, 0.02);
        assert_eq!(c.tiers[0].cashback_rate, 0.01);
        assert_eq!(c.limits.min_points, 100);
        assert_eq!(c.limits.max_redemptions_per_day, 3);
        assert!(
            Config::parse(r#"{"limit":{}}"#)
                .unwrap_err()
                .contains("limit")
        );
        assert!(
            Config::parse(r#"{"callback_secret":"short"}"#)
                .unwrap_err()
                .contains("callback_secret")
        );
        assert!(
            Config::parse(r#"{"limits":{"min_points":0}}"#)
                .unwrap_err()
                .contains("limits.min_points")
        );
    }
}
