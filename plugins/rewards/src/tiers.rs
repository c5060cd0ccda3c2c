//! Tiers by lifetime points earned: each has a threshold, an earning multiplier and the
//! cashback rate and fee that apply to its members.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub name: String,
    pub min_points: i64,
    pub multiplier: f64,
    /// Currency units paid per point redeemed.
    #[serde(default = "default_rate")]
    pub cashback_rate: f64,
    /// Share of the gross amount kept as a fee, 0 ≤ fee_rate < 1.
    #[serde(default)]
    pub fee_rate: f64,
}

fn default_rate() -> f64 {
    0.01
}

pub fn default_tiers() -> Vec<Tier> {
    let tier = |name: &str, min_points, multiplier, fee_rate| Tier {
        name: name.into(),
        min_points,
        multiplier,
        cashback_rate: default_rate(),
        fee_rate,
    };
    vec![
        tier("Bronze", 0, 1.0, 0.05),
        tier("Silver", 1_000, 1.5, 0.03),
        tier("Gold", 5_000, 2.0, 0.02),
        tier("Platinum", 20_000, 3.0, 0.0),
    ]
}

/// Checks a tier table: named, unique, the lowest at 0, thresholds strictly rising.
/// Returns it sorted by threshold.
pub fn validate(mut tiers: Vec<Tier>) -> Result<Vec<Tier>, String> {
    if tiers.is_empty() {
        return Err("tiers: at least one tier is required".into());
    }
    tiers.sort_by_key(|t| t.min_points);
    for (i, t) in tiers.iter().enumerate() {
        let at = format!("tiers[{}] ({:?})", i, t.name);
        if t.name.trim().is_empty() || t.name.len() > 64 {
            return Err(format!("{at}: name must be 1 to 64 characters"));
        }
        if tiers[..i]
            .iter()
            .any(|o| o.name.eq_ignore_ascii_case(&t.name))
        {
            return Err(format!("{at}: name is used twice"));
        }
        if i > 0 && tiers[i - 1].min_points == t.min_points {
            return Err(format!("{at}: min_points is the same as another tier's"));
        }
        if !(t.multiplier.is_finite() && t.multiplier > 0.0 && t.multiplier <= 1000.0) {
            return Err(format!("{at}: multiplier must be above 0 and at most 1000"));
        }
        if !(t.cashback_rate.is_finite() && t.cashback_rate >= 0.0 && t.cashback_rate <= 1000.0) {
            return Err(format!("{at}: cashback_rate must be 0 to 1000"));
        }
        if !(t.fee_rate.is_finite() && (0.0..1.0).contains(&t.fee_rate)) {
            return Err(format!("{at}: fee_rate must be at least 0 and below 1"));
        }
    }
    if tiers[0].min_points != 0 {
        return Err("tiers: the lowest tier must have min_points 0".into());
    }
    Ok(tiers)
}

/// The tier a lifetime total earns: the highest threshold reached. `tiers` is sorted and
/// starts at 0 (see [`validate`]); a negative total still gets the lowest tier.
pub fn tier_for(tiers: &[Tier], lifetime: i64) -> &Tier {
    tiers
        .iter()
        .rev()
        .find(|t| lifetime >= t.min_points)
        .unwrap_or(&tiers[0])
}

/// The tier reached when lifetime goes from `before` to `after`, if it is a higher one.
pub fn promotion(tiers: &[Tier], before: i64, after: i64) -> Option<(&Tier, &Tier)> {
    let (from, to) = (tier_for(tiers, before), tier_for(tiers, after));
    (to.min_points > from.min_points).then_some((from, to))
}

/// The configured tier of that name (names compare case-insensitively).
pub fn find<'a>(tiers: &'a [Tier], name: &str) -> Option<&'a Tier> {
    tiers.iter().find(|t| t.name.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_by_lifetime() {
        let tiers = validate(default_tiers()).unwrap();
        let name = |n| tier_for(&tiers, n).name.as_str();
        assert_eq!(name(0), "Bronze");
        assert_eq!(name(999), "Bronze");
        assert_eq!(name(1_000), "Silver");
        assert_eq!(name(4_999), "Silver");
        assert_eq!(name(5_000), "Gold");
        assert_eq!(name(19_999), "Gold");
        assert_eq!(name(20_000), "Platinum");
        assert_eq!(name(i64::MAX), "Platinum");
        assert_eq!(name(-5), "Bronze");
        assert_eq!(tier_for(&tiers, 1_000).multiplier, 1.5);
    }

    #[test]
    fn promotion_only_upwards() {
        let tiers = default_tiers();
        let (from, to) = promotion(&tiers, 900, 1_000).unwrap();
        assert_eq!((from.name.as_str(), to.name.as_str()), ("Bronze", "Silver"));
        let (from, to) = promotion(&tiers, 900, 6_000).unwrap();
        assert_eq!((from.name.as_str(), to.name.as_str()), ("Bronze", "Gold"));
        assert!(promotion(&tiers, 1_000, 1_500).is_none());
        assert!(promotion(&tiers, 1_500, 500).is_none());
    }

    #[test]
    fn rejects_bad_tables() {
        let mut t = default_tiers();
        t[0].min_points = 10;
        assert!(validate(t).unwrap_err().contains("min_points 0"));
        let mut t = default_tiers();
        t[2].name = "silver".into();
        assert!(validate(t).unwrap_err().contains("used twice"));
        let mut t = default_tiers();
        t[1].multiplier = 0.0;
        assert!(validate(t).unwrap_err().contains("multiplier"));
        let mut t = default_tiers();
        t[1].fee_rate = 1.0;
        assert!(validate(t).unwrap_err().contains("fee_rate"));
        assert!(validate(vec![]).is_err());
        // Out of order is fine: it is sorted.
        let mut t = default_tiers();
        t.reverse();
        assert_eq!(validate(t).unwrap()[0].name, "Bronze");
    }
}
