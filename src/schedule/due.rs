//! The pure core of the policy scheduler: which policies are due now, and
//! when to look again.
//!
//! Each policy carries an *anchor*: the time its last run was triggered, or
//! when it was created or enabled. It is due once its schedule has elapsed
//! after the anchor. However many elapses passed (a slow tick, a suspended
//! host, a stopped daemon), a policy runs at most once per plan, as PBS does;
//! the daemon then stores `now` as its new anchor.
//!
//! Elapses found at daemon start were missed while it was down. Following
//! the policy's `repeat_missed` they either run once ([`Reason::Missed`]) or
//! are skipped ([`Plan::skipped`]); either way the anchor moves to `now`, so
//! they are never considered again. A clock stepped backwards does not
//! repeat runs: nothing elapses after an anchor in the future until the
//! clock passes it.

use super::calendar::CalendarEvent;
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// One policy as the scheduler sees it.
#[derive(Clone, Copy, Debug)]
pub struct PolicySchedule<'a> {
    pub schedule: &'a CalendarEvent,
    /// Run once at start when an elapse was missed while the daemon was down.
    pub repeat_missed: bool,
    /// When the last run was triggered, else when the policy was created or
    /// enabled.
    pub anchor: Timestamp,
}

/// Whether the daemon just started (elapses found were missed while it was
/// down) or has been running (elapses found are simply due).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Startup,
    Running,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The schedule elapsed while the daemon was running.
    Scheduled,
    /// It elapsed while the daemon was down, and the policy repeats missed runs.
    Missed,
}

/// A policy to run now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    /// Index into the policies given to [`plan`].
    pub index: usize,
    /// The first elapse after the anchor (the run this one stands for).
    pub slot: Timestamp,
    pub reason: Reason,
    /// The policy's new anchor (the plan's `now`).
    pub anchor: Timestamp,
}

/// A policy whose runs were missed while the daemon was down and which does
/// not repeat them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub index: usize,
    /// The first missed elapse.
    pub slot: Timestamp,
    /// The policy's new anchor (the plan's `now`).
    pub anchor: Timestamp,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub due: Vec<Due>,
    pub skipped: Vec<Skipped>,
    /// The earliest future elapse of any policy, once the due and skipped
    /// ones have their new anchors; `None` when no schedule elapses again.
    pub next_wakeup: Option<Timestamp>,
}

/// Decides what runs at `now`. Local-time schedules are read in `local`.
pub fn plan(policies: &[PolicySchedule<'_>], now: Timestamp, phase: Phase, local: &TimeZone) -> Plan {
    let mut out = Plan::default();
    for (index, p) in policies.iter().enumerate() {
        let first = p.schedule.next_after(p.anchor, local);
        let wake = match first {
            Some(slot) if slot <= now => {
                match (phase, p.repeat_missed) {
                    (Phase::Running, _) => out.due.push(Due { index, slot, reason: Reason::Scheduled, anchor: now }),
                    (Phase::Startup, true) => out.due.push(Due { index, slot, reason: Reason::Missed, anchor: now }),
                    (Phase::Startup, false) => out.skipped.push(Skipped { index, slot, anchor: now }),
                }
                p.schedule.next_after(now, local)
            }
            other => other,
        };
        out.next_wakeup = match (out.next_wakeup, wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn ev(s: &str) -> CalendarEvent {
        CalendarEvent::parse(s).unwrap()
    }

    fn one<'a>(schedule: &'a CalendarEvent, repeat_missed: bool, anchor: &str) -> [PolicySchedule<'a>; 1] {
        [PolicySchedule { schedule, repeat_missed, anchor: ts(anchor) }]
    }

    #[test]
    fn not_due_before_the_first_elapse() {
        let daily = ev("02:00 UTC");
        let p = plan(
            &one(&daily, false, "2026-01-01T03:00:00Z"),
            ts("2026-01-02T01:59:59Z"),
            Phase::Running,
            &TimeZone::UTC,
        );
        assert_eq!(p.due, vec![]);
        assert_eq!(p.skipped, vec![]);
        assert_eq!(p.next_wakeup, Some(ts("2026-01-02T02:00:00Z")));
    }

    #[test]
    fn due_at_the_elapse_then_not_again_until_the_next() {
        let daily = ev("02:00 UTC");
        let now = ts("2026-01-02T02:00:00Z");
        let p = plan(&one(&daily, false, "2026-01-01T03:00:00Z"), now, Phase::Running, &TimeZone::UTC);
        let slot = ts("2026-01-02T02:00:00Z");
        assert_eq!(p.due, vec![Due { index: 0, slot, reason: Reason::Scheduled, anchor: now }]);
        assert_eq!(p.next_wakeup, Some(ts("2026-01-03T02:00:00Z")));
        let later = ts("2026-01-02T02:00:30Z");
        let again = plan(
            &[PolicySchedule { anchor: now, ..one(&daily, false, "2026-01-01T00:00:00Z")[0] }],
            later,
            Phase::Running,
            &TimeZone::UTC,
        );
        assert_eq!(again.due, vec![]);
        assert_eq!(again.next_wakeup, Some(ts("2026-01-03T02:00:00Z")));
    }

    #[test]
    fn many_elapses_while_running_collapse_into_one_run() {
        let every_minute = ev("*:* UTC");
        let now = ts("2026-01-01T10:30:00Z");
        let p = plan(&one(&every_minute, false, "2026-01-01T10:00:00Z"), now, Phase::Running, &TimeZone::UTC);
        assert_eq!(p.due.len(), 1);
        assert_eq!(p.due[0].slot, ts("2026-01-01T10:01:00Z"));
        assert_eq!(p.due[0].anchor, now);
        assert_eq!(p.next_wakeup, Some(ts("2026-01-01T10:31:00Z")));
    }

    #[test]
    fn missed_while_down_runs_once_only_with_repeat_missed() {
        let daily = ev("daily UTC");
        let now = ts("2026-01-05T12:00:00Z");
        let anchor = "2026-01-01T00:00:00Z";
        let with = plan(&one(&daily, true, anchor), now, Phase::Startup, &TimeZone::UTC);
        let slot = ts("2026-01-02T00:00:00Z");
        assert_eq!(with.due, vec![Due { index: 0, slot, reason: Reason::Missed, anchor: now }]);
        assert_eq!(with.skipped, vec![]);
        let without = plan(&one(&daily, false, anchor), now, Phase::Startup, &TimeZone::UTC);
        assert_eq!(without.due, vec![]);
        assert_eq!(without.skipped, vec![Skipped { index: 0, slot, anchor: now }]);
        for p in [with, without] {
            assert_eq!(p.next_wakeup, Some(ts("2026-01-06T00:00:00Z")));
        }
    }

    #[test]
    fn startup_with_nothing_missed_runs_nothing() {
        let daily = ev("daily UTC");
        let p = plan(
            &one(&daily, true, "2026-01-05T00:00:00Z"),
            ts("2026-01-05T12:00:00Z"),
            Phase::Startup,
            &TimeZone::UTC,
        );
        assert_eq!((p.due.len(), p.skipped.len()), (0, 0));
        assert_eq!(p.next_wakeup, Some(ts("2026-01-06T00:00:00Z")));
    }

    #[test]
    fn a_clock_stepped_back_repeats_nothing() {
        let hourly = ev("hourly UTC");
        let p = plan(
            &one(&hourly, true, "2026-01-05T12:00:00Z"),
            ts("2026-01-05T09:30:00Z"),
            Phase::Running,
            &TimeZone::UTC,
        );
        assert_eq!(p.due, vec![]);
        assert_eq!(p.next_wakeup, Some(ts("2026-01-05T13:00:00Z")));
    }

    #[test]
    fn wakeup_is_the_earliest_policy_and_never_elapsing_ones_are_ignored() {
        let (never, daily, hourly) = (ev("2023-02-30"), ev("daily UTC"), ev("hourly UTC"));
        let anchor = ts("2026-01-05T10:10:00Z");
        let ps = [&never, &daily, &hourly].map(|schedule| PolicySchedule { schedule, repeat_missed: false, anchor });
        let p = plan(&ps, ts("2026-01-05T10:20:00Z"), Phase::Running, &TimeZone::UTC);
        assert_eq!(p.next_wakeup, Some(ts("2026-01-05T11:00:00Z")));
        assert_eq!(plan(&ps[..1], anchor, Phase::Running, &TimeZone::UTC).next_wakeup, None);
    }

    /// A daemon loop on a synthetic clock that sleeps until each wakeup:
    /// `*:*:0/2` runs exactly every two seconds, two policies interleave.
    #[test]
    fn simulated_daemon_runs_on_schedule() {
        let (two, five) = (ev("*:*:0/2 UTC"), ev("*:*:0/5 UTC"));
        let start = ts("2026-01-01T00:00:00.500Z");
        let mut anchors = [start, start];
        let mut runs: Vec<(usize, i64)> = Vec::new();
        let mut now = start;
        let mut phase = Phase::Startup;
        for _ in 0..100 {
            let ps = [(&two, anchors[0]), (&five, anchors[1])].map(|(schedule, anchor)| PolicySchedule {
                schedule,
                repeat_missed: true,
                anchor,
            });
            let p = plan(&ps, now, phase, &TimeZone::UTC);
            for d in &p.due {
                runs.push((d.index, now.as_second()));
                anchors[d.index] = d.anchor;
            }
            phase = Phase::Running;
            now = p.next_wakeup.unwrap();
            if now >= ts("2026-01-01T00:00:20Z") {
                break;
            }
        }
        let of = |i| runs.iter().filter(|r| r.0 == i).map(|r| r.1 - start.as_second()).collect::<Vec<_>>();
        assert_eq!(of(0), (1..10).map(|k| 2 * k).collect::<Vec<_>>());
        assert_eq!(of(1), vec![5, 10, 15]);
    }
}
