//! Per-user, per-rule limits: daily and monthly point caps and award frequency, counted
//! in UTC calendar days, ISO weeks and months. One small record per user and rule.

use serde::{Deserialize, Serialize};

use crate::periods;
use crate::rules::{Frequency, Rule};

/// What a user has earned from one rule, in the periods that matter now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    /// `YYYY-MM-DD` that `day_points` counts.
    pub day: String,
    pub day_points: i64,
    /// `YYYY-MM` that `month_points` counts.
    pub month: String,
    pub month_points: i64,
    /// When the rule last awarded points (ms), none if never.
    pub last_award: Option<i64>,
}

/// Why an event got fewer points than its rule is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Frequency,
    DailyCap,
    MonthlyCap,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub points: i64,
    pub limited: Option<Limited>,
    /// The usage to store when `points > 0`.
    pub usage: Usage,
}

fn same_period(frequency: Frequency, last: i64, now: i64) -> bool {
    match frequency {
        Frequency::Unlimited => false,
        Frequency::Once => true,
        Frequency::Daily => periods::day_key(last) == periods::day_key(now),
        Frequency::Weekly => periods::week_key(last) == periods::week_key(now),
        Frequency::Monthly => periods::month_key(last) == periods::month_key(now),
    }
}

/// The points an event worth `points` may still get under the rule's frequency and caps
/// at `now`. Frequency counts awards, so an event that earned nothing (0 units, capped
/// out) does not use up a daily/weekly/monthly/once slot.
pub fn apply(rule: &Rule, usage: &Usage, points: i64, now: i64) -> Outcome {
    let (day, month) = (periods::day_key(now), periods::month_key(now));
    let mut next = usage.clone();
    if next.day != day {
        next.day = day;
        next.day_points = 0;
    }
    if next.month != month {
        next.month = month;
        next.month_points = 0;
    }
    let nothing = |limited, usage| Outcome {
        points: 0,
        limited,
        usage,
    };
    if points <= 0 {
        return nothing(None, next);
    }
    if let Some(last) = usage.last_award
        && same_period(rule.frequency, last, now)
    {
        return nothing(Some(Limited::Frequency), next);
    }
    let mut award = points;
    let mut limited = None;
    if let Some(cap) = rule.daily_cap {
        let room = (cap - next.day_points).max(0);
        if room < award {
            award = room;
            limited = Some(Limited::DailyCap);
        }
    }
    if let Some(cap) = rule.monthly_cap {
        let room = (cap - next.month_points).max(0);
        if room < award {
            award = room;
            limited = Some(Limited::MonthlyCap);
        }
    }
    if award > 0 {
        next.day_points += award;
        next.month_points += award;
        next.last_award = Some(now);
    }
    Outcome {
        points: award,
        limited,
        usage: next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::periods::ms_of;
    use crate::rules::RuleInput;

    fn rule(frequency: Frequency, daily: Option<i64>, monthly: Option<i64>) -> Rule {
        RuleInput {
            event_type: "e".into(),
            platform: None,
            tier: None,
            points: 10.0,
            unit_field: None,
            daily_cap: daily,
            monthly_cap: monthly,
            frequency,
            active: true,
        }
        .into_rule("rule_1".into(), 1, String::new(), String::new())
    }

    /// Runs events of `points` at the given times, returning each award.
    fn run(rule: &Rule, events: &[(i64, i64)]) -> Vec<i64> {
        let mut usage = Usage::default();
        events
            .iter()
            .map(|&(at, points)| {
                let out = apply(rule, &usage, points, at);
                if out.points > 0 {
                    usage = out.usage;
                }
                out.points
            })
            .collect()
    }

    #[test]
    fn daily_cap_gives_what_still_fits_and_resets_at_utc_midnight() {
        let r = rule(Frequency::Unlimited, Some(25), None);
        let d = ms_of(2024, 5, 1, 10, 0);
        let midnight = ms_of(2024, 5, 2, 0, 0);
        assert_eq!(
            run(
                &r,
                &[
                    (d, 10),
                    (d, 10),
                    (d, 10),
                    (d, 10),
                    (midnight - 1, 10),
                    (midnight, 10)
                ]
            ),
            vec![10, 10, 5, 0, 0, 10]
        );
        let out = apply(&r, &Usage::default(), 40, d);
        assert_eq!((out.points, out.limited), (25, Some(Limited::DailyCap)));
    }

    #[test]
    fn monthly_cap_across_days_and_month_boundary() {
        let r = rule(Frequency::Unlimited, Some(20), Some(50));
        let day = |d| ms_of(2024, 1, d, 12, 0);
        assert_eq!(
            run(
                &r,
                &[
                    (day(1), 20),
                    (day(2), 20),
                    (day(3), 20),
                    (day(4), 20),
                    (day(31), 5)
                ]
            ),
            vec![20, 20, 10, 0, 0]
        );
        let r = rule(Frequency::Unlimited, None, Some(30));
        assert_eq!(
            run(
                &r,
                &[
                    (ms_of(2024, 1, 31, 23, 59), 30),
                    (ms_of(2024, 1, 31, 23, 59), 30),
                    (ms_of(2024, 2, 1, 0, 0), 30)
                ]
            ),
            vec![30, 0, 30]
        );
    }

    #[test]
    fn frequency_windows() {
        let once = rule(Frequency::Once, None, None);
        assert_eq!(
            run(
                &once,
                &[(ms_of(2024, 1, 1, 0, 0), 5), (ms_of(2030, 1, 1, 0, 0), 5)]
            ),
            vec![5, 0]
        );
        let daily = rule(Frequency::Daily, None, None);
        assert_eq!(
            run(
                &daily,
                &[
                    (ms_of(2024, 1, 1, 0, 0), 5),
                    (ms_of(2024, 1, 1, 23, 59), 5),
                    (ms_of(2024, 1, 2, 0, 0), 5)
                ]
            ),
            vec![5, 0, 5]
        );
        // ISO week: Monday 2024-05-06 .. Sunday 2024-05-12.
        let weekly = rule(Frequency::Weekly, None, None);
        assert_eq!(
            run(
                &weekly,
                &[
                    (ms_of(2024, 5, 6, 0, 0), 5),
                    (ms_of(2024, 5, 12, 23, 59), 5),
                    (ms_of(2024, 5, 13, 0, 0), 5)
                ]
            ),
            vec![5, 0, 5]
        );
        let monthly = rule(Frequency::Monthly, None, None);
        assert_eq!(
            run(
                &monthly,
                &[
                    (ms_of(2024, 2, 1, 0, 0), 5),
                    (ms_of(2024, 2, 29, 23, 59), 5),
                    (ms_of(2024, 3, 1, 0, 0), 5)
                ]
            ),
            vec![5, 0, 5]
        );
    }

    #[test]
    fn zero_point_events_do_not_use_a_slot() {
        let daily = rule(Frequency::Daily, None, None);
        let at = ms_of(2024, 1, 1, 9, 0);
        assert_eq!(run(&daily, &[(at, 0), (at, 7)]), vec![0, 7]);
        let out = apply(&daily, &Usage::default(), 0, at);
        assert_eq!(out.limited, None);
    }

    #[test]
    fn frequency_reported_before_caps() {
        let r = rule(Frequency::Daily, Some(1), None);
        let at = ms_of(2024, 1, 1, 9, 0);
        let first = apply(&r, &Usage::default(), 5, at);
        assert_eq!((first.points, first.limited), (1, Some(Limited::DailyCap)));
        let second = apply(&r, &first.usage, 5, at);
        assert_eq!(
            (second.points, second.limited),
            (0, Some(Limited::Frequency))
        );
    }
}
