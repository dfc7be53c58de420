//! The next elapse of a calendar event after a given instant.
//!
//! The search follows systemd's (`find_next` in calendarspec.c, read for its
//! behaviour): starting one microsecond after the base, it fixes the fields
//! from the year down to the second, each time taking the field's earliest
//! matching value not before the current one. When a field has no match the
//! next larger unit is advanced and the search restarts; when `mktime`
//! normalization moves the time (day 31 of a 30-day month, an hour skipped by
//! DST) it restarts from the normalized time. Matching systemd step for step
//! is what makes DST gaps and folds, month ends and leap days come out the
//! same as `systemd-analyze calendar`.
//!
//! Two bounds keep it finite: years past [`MAX_YEAR`] never match (so
//! `2023-02-30` or `*-02-30` give `None`), and a search gives up after
//! [`MAX_SEARCH_STEPS`] restarts.

use super::civil::{Clock, Tm};
use super::spec::{Chain, MAX_YEAR, Spec, USEC_PER_SEC};

/// Restarts of one search before it gives up (systemd's safety valve).
pub const MAX_SEARCH_STEPS: u32 = 1000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

/// How a time compares with its `mktime`-normalized self.
enum Bounds {
    /// Already normal.
    Exact,
    /// Normalization moved it forward: search again from there.
    Moved,
    /// Past the horizon, unrepresentable, or moved backwards.
    Out,
}

struct Search<'a> {
    spec: &'a Spec,
    clock: &'a mut Clock,
    tm: Tm,
    usec: i64,
}

/// The earliest value of `chain` not below `*val` (for end-of-month days,
/// counted back from the last day of `tm`'s month). `None` when there is
/// none; otherwise whether `*val` changed.
fn find_matching(chain: &Chain, end_of_month: Option<(&Tm, &mut Clock)>, val: &mut i64) -> Option<bool> {
    if chain.is_empty() {
        return Some(false);
    }
    let mut eom = end_of_month;
    let mut best: Option<i64> = None;
    for c in chain {
        let (mut start, mut stop) = (c.start, c.stop);
        if let Some((tm, clock)) = eom.as_mut() {
            start = from_month_end(tm, clock, c.start);
            stop = from_month_end(tm, clock, c.stop);
            if stop > 0 {
                std::mem::swap(&mut start, &mut stop);
            }
        }
        let candidate = if start >= *val {
            Some(start)
        } else if c.repeat > 0 {
            let k = start + c.repeat * ((*val - start + c.repeat - 1) / c.repeat);
            (stop < 0 || k <= stop).then_some(k)
        } else {
            None
        };
        if let Some(k) = candidate {
            best = Some(best.map_or(k, |b| b.min(k)));
        }
    }
    let d = best?;
    let changed = *val != d;
    *val = d;
    Some(changed)
}

/// Day of `tm`'s month that is `day` days from its end (1 = the last day),
/// or -1 when that falls outside the month (or `day` is -1).
fn from_month_end(tm: &Tm, clock: &mut Clock, day: i64) -> i64 {
    let probe = Tm { mon: tm.mon + 1, mday: 1 - day, ..*tm };
    match clock.mktime(&probe) {
        Some((_, t)) if t.mon == tm.mon => t.mday,
        _ => -1,
    }
}

impl Search<'_> {
    fn bounds(&mut self) -> Bounds {
        if self.tm.year > MAX_YEAR {
            return Bounds::Out;
        }
        let Some((_, mut t)) = self.clock.mktime(&self.tm) else { return Bounds::Out };
        let tm = self.tm;
        // A carried-over unit skips values of the next smaller one: restart
        // that one from its minimum (3-33 becomes 4-02, search from 4-01).
        let ord = if t.year != tm.year {
            t.mon = 0;
            t.year.cmp(&tm.year)
        } else if t.mon != tm.mon {
            t.mday = 1;
            t.mon.cmp(&tm.mon)
        } else if t.mday != tm.mday {
            t.hour = 0;
            t.mday.cmp(&tm.mday)
        } else if t.hour != tm.hour {
            t.min = 0;
            t.hour.cmp(&tm.hour)
        } else if t.min != tm.min {
            t.sec = 0;
            t.min.cmp(&tm.min)
        } else {
            t.sec.cmp(&tm.sec)
        };
        match ord {
            std::cmp::Ordering::Less => Bounds::Out,
            std::cmp::Ordering::Equal => Bounds::Exact,
            std::cmp::Ordering::Greater => {
                self.tm = t;
                Bounds::Moved
            }
        }
    }

    fn reset_below(&mut self, unit: Unit) {
        let t = &mut self.tm;
        match unit {
            Unit::Month => (t.mday, t.hour, t.min, t.sec) = (1, 0, 0, 0),
            Unit::Day => (t.hour, t.min, t.sec) = (0, 0, 0),
            Unit::Hour => (t.min, t.sec) = (0, 0),
            Unit::Minute => t.sec = 0,
            Unit::Second => return,
        }
        self.usec = 0;
    }

    /// No match in `unit`: step the next larger unit and clear the rest.
    fn advance_above(&mut self, unit: Unit) {
        match unit {
            Unit::Month => {
                self.tm.year += 1;
                self.tm.mon = 0;
            }
            Unit::Day => self.tm.mon += 1,
            Unit::Hour => self.tm.mday += 1,
            Unit::Minute => self.tm.hour += 1,
            Unit::Second => self.tm.min += 1,
        }
        let parent = match unit {
            Unit::Month | Unit::Day => Unit::Month,
            Unit::Hour => Unit::Day,
            Unit::Minute => Unit::Hour,
            Unit::Second => Unit::Minute,
        };
        self.reset_below(parent);
    }

    /// Fixes one field. `true` when the search goes on to the next field,
    /// `false` when it must restart.
    fn step(&mut self, unit: Unit) -> bool {
        let s = self.spec;
        let (chain, mut val) = match unit {
            Unit::Month => (&s.month, self.tm.mon + 1),
            Unit::Day => (&s.day, self.tm.mday),
            Unit::Hour => (&s.hour, self.tm.hour),
            Unit::Minute => (&s.minute, self.tm.min),
            Unit::Second => (&s.usec, self.tm.sec * USEC_PER_SEC + self.usec),
        };
        let tm = self.tm;
        let eom = (unit == Unit::Day && s.end_of_month).then_some((&tm, &mut *self.clock));
        let found = find_matching(chain, eom, &mut val);
        if found.is_some() {
            match unit {
                Unit::Month => self.tm.mon = val - 1,
                Unit::Day => self.tm.mday = val,
                Unit::Hour => self.tm.hour = val,
                Unit::Minute => self.tm.min = val,
                Unit::Second => (self.tm.sec, self.usec) = (val / USEC_PER_SEC, val % USEC_PER_SEC),
            }
        }
        if found == Some(true) {
            self.reset_below(unit);
        }
        let bounds = if found.is_some() { self.bounds() } else { Bounds::Out };
        match bounds {
            Bounds::Exact => true,
            Bounds::Moved => false,
            Bounds::Out => {
                self.advance_above(unit);
                false
            }
        }
    }

    /// Fixes the year. `None` when the event never elapses again.
    fn year(&mut self) -> Option<()> {
        let mut year = self.tm.year;
        if find_matching(&self.spec.year, None, &mut year)? {
            self.tm = Tm { year, mon: 0, mday: 1, hour: 0, min: 0, sec: 0, ..self.tm };
            self.usec = 0;
        }
        matches!(self.bounds(), Bounds::Exact).then_some(())
    }

    fn weekday_matches(&mut self) -> bool {
        let Some(bits) = self.spec.weekdays else { return true };
        match self.clock.mktime(&self.tm) {
            Some((_, t)) => bits & (1 << t.weekday()) != 0,
            None => false,
        }
    }

    /// One pass over the fields. `Some(true)`: found; `Some(false)`:
    /// restart; `None`: never.
    fn pass(&mut self) -> Option<bool> {
        if let Some((_, t)) = self.clock.mktime(&self.tm) {
            self.tm = t;
        }
        // Only this first conversion honours the DST flag a previous
        // normalization left (systemd resets it to "unknown" here).
        self.tm.isdst = None;
        self.year()?;
        if !self.step(Unit::Month) || !self.step(Unit::Day) {
            return Some(false);
        }
        if !self.weekday_matches() {
            self.tm.mday += 1;
            self.reset_below(Unit::Day);
            return Some(false);
        }
        Some(self.step(Unit::Hour) && self.step(Unit::Minute) && self.step(Unit::Second))
    }
}

/// The first elapse strictly after `after_usec` (microseconds since the
/// epoch), in microseconds, or `None` when there is none within the bounds.
pub(crate) fn next_elapse(spec: &Spec, clock: &mut Clock, after_usec: i64) -> Option<i64> {
    let from = after_usec.checked_add(1)?;
    let tm = clock.localtime(from.div_euclid(USEC_PER_SEC))?;
    let mut search = Search { spec, clock, tm, usec: from.rem_euclid(USEC_PER_SEC) };
    for _ in 0..MAX_SEARCH_STEPS {
        if search.pass()? {
            let (epoch, _) = search.clock.mktime(&search.tm)?;
            return epoch.checked_mul(USEC_PER_SEC)?.checked_add(search.usec);
        }
    }
    None
}
