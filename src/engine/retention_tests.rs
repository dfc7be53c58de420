//! Prune-simulator style tests: synthetic backup times, hand-checked keep
//! sets.

use super::*;

/// Month and day as `civil_from_days` gives them.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    crate::util::time::days_from_civil(y, m.into(), d.into())
}

fn at(y: i64, m: u32, d: u32, h: i64, min: i64) -> i64 {
    days_from_civil(y, m, d) * 86_400 + h * 3600 + min * 60
}

fn utc(_: i64) -> i64 {
    0
}

/// Europe/Berlin: CET (+1) and CEST (+2) from 01:00 UTC on the last Sunday
/// of March to 01:00 UTC on the last Sunday of October (EU rule).
fn berlin(t: i64) -> i64 {
    let (y, _, _) = civil_from_days(t.div_euclid(86_400));
    let last_sunday = |m: u32| {
        let last = days_from_civil(y, m, 31);
        last - ((last + 3).rem_euclid(7) + 1) % 7
    };
    let start = last_sunday(3) * 86_400 + 3600;
    let end = last_sunday(10) * 86_400 + 3600;
    if (start..end).contains(&t) { 7200 } else { 3600 }
}

fn completed(times: &[i64]) -> Vec<Candidate> {
    times
        .iter()
        .map(|&t| Candidate { id: format!("b{t}"), time: t, subsec_nanos: 0, outcome: Outcome::Completed })
        .collect()
}

/// The ids kept, newest first.
fn kept(backups: &[Candidate], opts: KeepOptions, offset: &dyn Fn(i64) -> i64) -> Vec<i64> {
    let d = plan(backups, &opts, offset).unwrap();
    let mut t: Vec<i64> = backups.iter().zip(&d).filter(|(_, d)| d.keep).map(|(b, _)| b.time).collect();
    t.sort_unstable_by(|a, b| b.cmp(a));
    t
}

fn opts(f: impl FnOnce(&mut KeepOptions)) -> KeepOptions {
    let mut o = KeepOptions::default();
    f(&mut o);
    o
}

#[test]
fn civil_round_trip_and_iso_weeks() {
    for d in -800_000..800_000i64 {
        let (y, m, dd) = civil_from_days(d);
        assert_eq!(days_from_civil(y, m, dd), d);
    }
    let wk = |y, m, d| iso_week(days_from_civil(y, m, d));
    // Years with 53 weeks, and weeks that cross New Year.
    assert_eq!(wk(2021, 1, 1), (2020, 53));
    assert_eq!(wk(2021, 1, 3), (2020, 53));
    assert_eq!(wk(2021, 1, 4), (2021, 1));
    assert_eq!(wk(2024, 12, 30), (2025, 1));
    assert_eq!(wk(2026, 1, 1), (2026, 1));
    assert_eq!(wk(2025, 12, 29), (2026, 1));
    assert_eq!(wk(2027, 1, 1), (2026, 53));
    assert_eq!(wk(2026, 12, 7), (2026, 50));
    assert_eq!(wk(2015, 12, 31), (2015, 53));
}

#[test]
fn berlin_offset_model_matches_the_2026_changes() {
    // 2026: summer time from Sun 29 March 01:00 UTC to Sun 25 October 01:00 UTC.
    assert_eq!(berlin(at(2026, 3, 29, 0, 59)), 3600);
    assert_eq!(berlin(at(2026, 3, 29, 1, 0)), 7200);
    assert_eq!(berlin(at(2026, 10, 25, 0, 59)), 7200);
    assert_eq!(berlin(at(2026, 10, 25, 1, 0)), 3600);
}

#[test]
fn options_that_keep_nothing_are_refused() {
    let b = completed(&[at(2026, 1, 1, 0, 0)]);
    assert_eq!(plan(&b, &KeepOptions::default(), &utc), Err(RetentionError::KeepsNothing));
    assert_eq!(plan(&b, &opts(|o| o.keep_last = Some(0)), &utc), Err(RetentionError::KeepsNothing));
    assert!(plan(&b, &opts(|o| o.keep_yearly = Some(1)), &utc).is_ok());
}

#[test]
fn keep_last_keeps_the_newest_n() {
    let times: Vec<i64> = (1..=5).map(|d| at(2026, 5, d, 12, 0)).collect();
    let b = completed(&times);
    assert_eq!(kept(&b, opts(|o| o.keep_last = Some(3)), &utc), vec![times[4], times[3], times[2]]);
    // The order of the input does not matter.
    let mut rev = b.clone();
    rev.reverse();
    assert_eq!(kept(&rev, opts(|o| o.keep_last = Some(3)), &utc), vec![times[4], times[3], times[2]]);
}

#[test]
fn unfinished_are_never_kept_and_in_progress_left_alone() {
    let t: Vec<i64> = (0..5).map(|h| at(2026, 5, 1, h, 0)).collect();
    let mut b = completed(&t);
    b[4].outcome = Outcome::Unfinished; // the newest failed
    b[2].outcome = Outcome::Unfinished;
    b[0].outcome = Outcome::InProgress; // oldest still "running"
    let d = plan(&b, &opts(|o| o.keep_last = Some(2)), &utc).unwrap();
    let marks: Vec<(bool, &Reason)> = d.iter().map(|d| (d.keep, &d.reason)).collect();
    assert_eq!(marks[4], (false, &Reason::Unfinished));
    assert!(marks[3].0);
    assert_eq!(marks[2], (false, &Reason::Unfinished));
    assert!(marks[1].0);
    assert_eq!(marks[0], (true, &Reason::InProgress));
    // keep-hourly 5 cannot keep the failed ones either.
    assert_eq!(kept(&b, opts(|o| o.keep_hourly = Some(5)), &utc), vec![t[3], t[1], t[0]]);
}

#[test]
fn daily_keeps_the_newest_of_each_day_and_empty_days_do_not_count() {
    // Every 6 hours on days 1, 2, 5 and 9.
    let times: Vec<i64> = [1, 2, 5, 9].iter().flat_map(|&d| (0..4).map(move |h| at(2026, 6, d, h * 6, 0))).collect();
    let b = completed(&times);
    let got = kept(&b, opts(|o| o.keep_daily = Some(3)), &utc);
    assert_eq!(got, vec![at(2026, 6, 9, 18, 0), at(2026, 6, 5, 18, 0), at(2026, 6, 2, 18, 0)]);
    let d = plan(&b, &opts(|o| o.keep_daily = Some(3)), &utc).unwrap();
    let last = d.iter().find(|d| d.id == format!("b{}", at(2026, 6, 2, 18, 0))).unwrap();
    assert_eq!(last.reason, Reason::Rule { rule: Rule::Daily, n: 3, bucket: "2026-06-02".into() });
    assert_eq!(d[0].reason, Reason::NotSelected);
}

#[test]
fn a_bucket_holding_a_kept_backup_is_skipped_and_not_counted() {
    // Four a day for three days; keep-last 2 keeps two of today, so daily
    // skips today and keeps the two days before.
    let times: Vec<i64> = (1..=3).flat_map(|d| (0..4).map(move |h| at(2026, 7, d, 6 * h, 0))).collect();
    let b = completed(&times);
    let got = kept(
        &b,
        opts(|o| {
            o.keep_last = Some(2);
            o.keep_daily = Some(2);
        }),
        &utc,
    );
    assert_eq!(got, vec![at(2026, 7, 3, 18, 0), at(2026, 7, 3, 12, 0), at(2026, 7, 2, 18, 0), at(2026, 7, 1, 18, 0)]);
}

#[test]
fn weekly_uses_iso_weeks_across_week_53() {
    // Daily at noon from Sunday 2020-12-20 to Sunday 2021-01-10.
    let start = days_from_civil(2020, 12, 20);
    let times: Vec<i64> = (0..22).map(|i| (start + i) * 86_400 + 12 * 3600).collect();
    let b = completed(&times);
    let got = kept(&b, opts(|o| o.keep_weekly = Some(3)), &utc);
    // 2021-W01 (Jan 4-10), 2020-W53 (Dec 28 - Jan 3), 2020-W52 (Dec 21-27).
    assert_eq!(got, vec![at(2021, 1, 10, 12, 0), at(2021, 1, 3, 12, 0), at(2020, 12, 27, 12, 0)]);
    let d = plan(&b, &opts(|o| o.keep_weekly = Some(3)), &utc).unwrap();
    let w53 = d.iter().find(|d| d.id == format!("b{}", at(2021, 1, 3, 12, 0))).unwrap();
    assert_eq!(w53.reason, Reason::Rule { rule: Rule::Weekly, n: 2, bucket: "2020-W53".into() });
}

#[test]
fn hours_are_local_so_the_repeated_hour_of_autumn_is_one_bucket() {
    // 25 October 2026, Berlin: 00:00Z = 02:00 CEST, 00:30Z = 02:30 CEST,
    // 01:30Z = 02:30 CET (the repeated hour), 02:00Z = 03:00 CET.
    let times = [at(2026, 10, 25, 0, 0), at(2026, 10, 25, 0, 30), at(2026, 10, 25, 1, 30), at(2026, 10, 25, 2, 0)];
    let b = completed(&times);
    let o = opts(|o| o.keep_hourly = Some(3));
    // Local hours 03 and 02 only: two buckets, so two kept.
    assert_eq!(kept(&b, o, &berlin), vec![times[3], times[2]]);
    // In UTC the same backups fall into three hours.
    assert_eq!(kept(&b, o, &utc), vec![times[3], times[2], times[1]]);
}

#[test]
fn days_are_local_across_the_spring_change() {
    // 29 March 2026, Berlin: A is Sat 28th 23:30 CET, B is Sun 29th 23:30
    // CEST, C is Mon 30th 00:30 CEST; B and C are both the 29th in UTC.
    let times = [at(2026, 3, 28, 22, 30), at(2026, 3, 29, 21, 30), at(2026, 3, 29, 22, 30)];
    let b = completed(&times);
    let o = opts(|o| o.keep_daily = Some(2));
    assert_eq!(kept(&b, o, &berlin), vec![times[2], times[1]]);
    assert_eq!(kept(&b, o, &utc), vec![times[2], times[0]]);
}

#[test]
fn monthly_and_yearly_follow_daily_and_weekly() {
    // Daily backups at 10:00 from Tue 2026-09-01 to Mon 2026-11-30.
    let start = days_from_civil(2026, 9, 1);
    let end = days_from_civil(2026, 11, 30);
    let times: Vec<i64> = (start..=end).map(|d| d * 86_400 + 10 * 3600).collect();
    let b = completed(&times);
    let o = opts(|o| {
        o.keep_daily = Some(7);
        o.keep_weekly = Some(4);
        o.keep_monthly = Some(2);
        o.keep_yearly = Some(5);
    });
    let day = |m, d| at(2026, m, d, 10, 0);
    // Daily: Nov 24-30 (covering the weeks of Nov 23 and Nov 30). Weekly:
    // the Sundays of the four weeks before. Monthly: November is covered, so
    // the ends of October and September. Yearly: 2026 is covered and no
    // other year has backups.
    let mut want: Vec<i64> = (24..=30).rev().map(|d| day(11, d)).collect();
    want.extend([day(11, 22), day(11, 15), day(11, 8), day(11, 1), day(10, 31), day(9, 30)]);
    assert_eq!(kept(&b, o, &utc), want);
}

#[test]
fn yearly_keeps_the_last_backup_of_each_year() {
    let times: Vec<i64> = (2019..=2026).flat_map(|y| [at(y, 2, 1, 0, 0), at(y, 11, 1, 0, 0)]).collect();
    let b = completed(&times);
    let got = kept(&b, opts(|o| o.keep_yearly = Some(3)), &utc);
    assert_eq!(got, vec![at(2026, 11, 1, 0, 0), at(2025, 11, 1, 0, 0), at(2024, 11, 1, 0, 0)]);
    // Local time decides the year: 2025-12-31 23:30 UTC is 2026 in Berlin.
    let b = completed(&[at(2025, 12, 31, 23, 30), at(2025, 6, 1, 0, 0)]);
    assert_eq!(kept(&b, opts(|o| o.keep_yearly = Some(1)), &berlin), vec![at(2025, 12, 31, 23, 30)]);
    let both = kept(&b, opts(|o| o.keep_yearly = Some(2)), &berlin);
    assert_eq!(both, vec![at(2025, 12, 31, 23, 30), at(2025, 6, 1, 0, 0)]);
    assert_eq!(kept(&b, opts(|o| o.keep_yearly = Some(2)), &utc), vec![at(2025, 12, 31, 23, 30)]);
}

#[test]
fn the_newest_completed_is_always_kept() {
    // Every rule with N >= 1 starts with the newest completed backup (its
    // bucket is the first one seen), whatever the mix of options and failures.
    let t: Vec<i64> = (0..40).map(|i| at(2026, 1, 1, 0, 0) + i * 7919).collect();
    for mask in 1u32..64 {
        for failed_tail in 0..3 {
            let mut b = completed(&t);
            for x in b.iter_mut().rev().take(failed_tail) {
                x.outcome = Outcome::Unfinished;
            }
            let n = |bit: u32| (mask >> bit & 1 == 1).then_some(1 + bit);
            let o = KeepOptions {
                keep_last: n(0),
                keep_hourly: n(1),
                keep_daily: n(2),
                keep_weekly: n(3),
                keep_monthly: n(4),
                keep_yearly: n(5),
            };
            let d = plan(&b, &o, &berlin).unwrap();
            let newest = t.len() - 1 - failed_tail;
            assert!(d[newest].keep, "options {o:?}, {failed_tail} failed");
            assert!(d[newest + 1..].iter().all(|d| !d.keep && d.reason == Reason::Unfinished));
        }
    }
    // Nothing completed: nothing kept.
    let mut b = completed(&t[..1]);
    b[0].outcome = Outcome::Unfinished;
    assert!(!plan(&b, &opts(|o| o.keep_last = Some(1)), &utc).unwrap()[0].keep);
}
