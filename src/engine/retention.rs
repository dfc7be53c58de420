//! Retention: which restore points a prune keeps. A pure function from
//! (backups, options, the local UTC offset) to a keep/drop mark per backup
//! with its reason; applying the marks (merging chains) is a separate step.
//!
//! The rules are Proxmox Backup Server's and borg's, as their documentation
//! states them:
//! - backups are considered newest first;
//! - the options run in the order last, hourly, daily, weekly, monthly,
//!   yearly;
//! - each option groups backups into buckets of local time (hour, day, ISO
//!   week, month, year) and keeps the newest backup of each bucket until it
//!   has kept N buckets; a bucket that already holds a kept backup is skipped
//!   and does not use up N; periods without backups do not count.
//!
//! On top of that, for a chain store: failed, interrupted and aborted backups
//! are never restore points (always dropped) and backups still being written
//! are left alone. The newest completed backup is always kept: every option
//! with N >= 1 keeps it first (its bucket is the first seen), and options that
//! keep nothing are refused rather than dropping everything.
//!
//! Local time comes from an offset function passed in (seconds east of UTC at
//! an instant), so the planner needs no time zone database and the tests can
//! model DST changes exactly.

use crate::util::time::{civil_from_days, days_from_civil};
use std::collections::HashSet;

/// What a backup's job came to, as far as retention cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    /// Failed, interrupted or aborted: never a restore point.
    Unfinished,
    /// Pending, waiting or running: not ours to drop.
    InProgress,
}

impl Outcome {
    /// From a catalog status word (DESIGN.md: pending, waiting, running,
    /// completed, failed, interrupted, aborted). Unknown words count as in
    /// progress: never dropped by mistake.
    pub fn from_status(status: &str) -> Self {
        match status {
            "completed" => Outcome::Completed,
            "failed" | "interrupted" | "aborted" => Outcome::Unfinished,
            _ => Outcome::InProgress,
        }
    }
}

/// One backup as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    /// Start time, seconds since the epoch (UTC), and the fraction: backups
    /// seconds apart are still ordered.
    pub time: i64,
    pub subsec_nanos: u32,
    pub outcome: Outcome,
}

/// The `--keep-*` options; `None` and `Some(0)` both mean "not used".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeepOptions {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
}

/// The time buckets, in the order the options run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Rule {
    const ALL: [Rule; 6] = [Rule::Last, Rule::Hourly, Rule::Daily, Rule::Weekly, Rule::Monthly, Rule::Yearly];

    fn count(self, o: &KeepOptions) -> u32 {
        let n = match self {
            Rule::Last => o.keep_last,
            Rule::Hourly => o.keep_hourly,
            Rule::Daily => o.keep_daily,
            Rule::Weekly => o.keep_weekly,
            Rule::Monthly => o.keep_monthly,
            Rule::Yearly => o.keep_yearly,
        };
        n.unwrap_or(0)
    }

    /// The bucket of a local time: equal keys, same bucket.
    fn bucket(self, id: &str, local: &LocalTime) -> String {
        let LocalTime { year, month, day, hour, iso_year, iso_week } = *local;
        match self {
            Rule::Last => id.to_string(),
            Rule::Hourly => format!("{year:04}-{month:02}-{day:02}T{hour:02}"),
            Rule::Daily => format!("{year:04}-{month:02}-{day:02}"),
            Rule::Weekly => format!("{iso_year:04}-W{iso_week:02}"),
            Rule::Monthly => format!("{year:04}-{month:02}"),
            Rule::Yearly => format!("{year:04}"),
        }
    }
}

/// Why a backup is kept or dropped, for `--dry-run`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// Kept as the `n`-th bucket of `rule` (bucket named as local time).
    Rule { rule: Rule, n: u32, bucket: String },
    /// Left alone: its job is still running.
    InProgress,
    /// Dropped: failed, interrupted or aborted, never a restore point.
    Unfinished,
    /// Dropped: no option selected it.
    NotSelected,
}

/// The planner's verdict on one backup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub id: String,
    pub keep: bool,
    #[serde(flatten)]
    pub reason: Reason,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetentionError {
    #[error("retention options keep nothing: give at least one --keep-* option with a count above 0")]
    KeepsNothing,
}

/// Local calendar fields of an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LocalTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    iso_year: i64,
    iso_week: u32,
}

impl LocalTime {
    fn at(utc: i64, offset: i64) -> Self {
        let t = utc.saturating_add(offset);
        let days = t.div_euclid(86_400);
        let hour = (t.rem_euclid(86_400) / 3600) as u32;
        let (year, month, day) = civil_from_days(days);
        let (iso_year, iso_week) = iso_week(days);
        Self { year, month, day, hour, iso_year, iso_week }
    }
}

/// ISO 8601 week-numbering year and week of a day (days since 1970-01-01):
/// weeks run Monday to Sunday, and a week belongs to the year of its Thursday.
fn iso_week(days: i64) -> (i64, u32) {
    // 1970-01-01 was a Thursday: Monday = 0.
    let weekday = (days + 3).rem_euclid(7);
    let thursday = days - weekday + 3;
    let (year, _, _) = civil_from_days(thursday);
    let week = (thursday - days_from_civil(year, 1, 1)) / 7 + 1;
    (year, week as u32)
}

/// Marks every backup keep or drop. `offset(t)` is the local time zone's
/// offset from UTC in seconds at instant `t`. The result is in the input's
/// order.
pub fn plan(
    backups: &[Candidate],
    opts: &KeepOptions,
    offset: &dyn Fn(i64) -> i64,
) -> Result<Vec<Decision>, RetentionError> {
    if Rule::ALL.iter().all(|r| r.count(opts) == 0) {
        return Err(RetentionError::KeepsNothing);
    }
    // Newest first; ties broken by id so the result never depends on the
    // caller's order.
    let mut order: Vec<usize> = (0..backups.len()).filter(|&i| backups[i].outcome == Outcome::Completed).collect();
    let key = |i: usize| (backups[i].time, backups[i].subsec_nanos, &backups[i].id);
    order.sort_by(|&a, &b| key(b).cmp(&key(a)));
    let local: Vec<LocalTime> = backups.iter().map(|b| LocalTime::at(b.time, offset(b.time))).collect();
    let mut kept: Vec<Option<Reason>> = vec![None; backups.len()];
    for rule in Rule::ALL {
        let n = rule.count(opts);
        if n == 0 {
            continue;
        }
        let bucket = |i: usize| rule.bucket(&backups[i].id, &local[i]);
        // Buckets already holding a kept backup are skipped, not counted.
        let mut seen: HashSet<String> = order.iter().filter(|&&i| kept[i].is_some()).map(|&i| bucket(i)).collect();
        let mut used = 0u32;
        for &i in &order {
            if used == n {
                break;
            }
            let key = bucket(i);
            if seen.insert(key.clone()) {
                used += 1;
                kept[i] = Some(Reason::Rule { rule, n: used, bucket: key });
            }
        }
    }
    let decide = |(i, b): (usize, &Candidate)| {
        let (keep, reason) = match (b.outcome, kept[i].take()) {
            (Outcome::InProgress, _) => (true, Reason::InProgress),
            (Outcome::Unfinished, _) => (false, Reason::Unfinished),
            (Outcome::Completed, Some(r)) => (true, r),
            (Outcome::Completed, None) => (false, Reason::NotSelected),
        };
        Decision { id: b.id.clone(), keep, reason }
    };
    Ok(backups.iter().enumerate().map(decide).collect())
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;
