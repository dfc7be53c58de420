//! The parsed form of a calendar event: one list of components per field,
//! its normalization (sorting, merging, two-digit years) and validation, and
//! the normalized text exactly as `systemd-analyze calendar` prints it.

use super::CalendarError;
use std::fmt;

/// Microseconds per second: the seconds field is kept in microseconds so
/// fractional seconds (`*:*:1.5`) and their repetitions stay exact.
pub(crate) const USEC_PER_SEC: i64 = 1_000_000;
/// Years outside this range never elapse (systemd's bounds; the upper one is
/// also the search horizon, so `2023-02-30` ends instead of looping).
pub const MIN_YEAR: i64 = 1970;
pub const MAX_YEAR: i64 = 2199;
/// Weekday bit set with every day: the same as no weekday at all.
const ALL_WEEKDAYS: u8 = 0x7f;
const WEEKDAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// One value, range or repetition of a field: `start`, `start..stop`,
/// `start/repeat` or `start..stop/repeat`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Component {
    pub start: i64,
    /// `-1` when open (no `..stop`).
    pub stop: i64,
    /// `0` when the value does not repeat.
    pub repeat: i64,
    /// Byte offset of this component in the expression, for errors.
    pub offset: usize,
}

impl Component {
    pub fn value(start: i64, offset: usize) -> Component {
        Component { start, stop: -1, repeat: 0, offset }
    }

    fn key(&self) -> (i64, i64, i64) {
        (self.start, self.stop, self.repeat)
    }
}

/// A field's components; empty means `*` (any value).
pub(crate) type Chain = Vec<Component>;

/// The time zone an expression is evaluated in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecZone {
    /// The system's local time (the default).
    Local,
    /// `UTC` suffix.
    Utc,
    /// A named IANA zone suffix such as `Europe/Berlin`.
    Named(String),
}

#[derive(Clone, Debug)]
pub(crate) struct Spec {
    /// Bit 0 = Monday; `None` = any day.
    pub weekdays: Option<u8>,
    pub year: Chain,
    pub month: Chain,
    pub day: Chain,
    /// `~` instead of the second `-`: days count back from the month's end.
    pub end_of_month: bool,
    pub hour: Chain,
    pub minute: Chain,
    /// In microseconds; `*` is `0/1` second.
    pub usec: Chain,
    pub zone: SpecZone,
}

/// Two-digit years: 0..=69 are 20xx, 70..=99 are 19xx.
fn fix_year(v: i64) -> i64 {
    match v {
        0..=69 => v + 2000,
        70..=99 => v + 1900,
        _ => v,
    }
}

/// Trims each range to a whole number of repetitions, turns ranges that can
/// only fire once into plain values, then sorts and drops duplicates.
fn normalize_chain(chain: &mut Chain) {
    for c in chain.iter_mut() {
        if c.stop > c.start && c.repeat > 0 {
            c.stop -= (c.stop - c.start) % c.repeat;
        }
        if (c.stop > c.start && c.repeat > 0 && c.start + c.repeat > c.stop) || c.start == c.stop {
            c.repeat = 0;
            c.stop = -1;
        }
    }
    chain.sort_by_key(Component::key);
    chain.dedup_by_key(|c| c.key());
}

/// Bounds of one field, for validation and error messages.
struct FieldRange {
    name: &'static str,
    from: i64,
    to: i64,
    /// Values are microseconds shown as seconds.
    usec: bool,
}

impl FieldRange {
    fn show(&self, v: i64) -> String {
        if self.usec { format_value(v, 0, true) } else { v.to_string() }
    }

    fn err(&self, c: &Component, reason: String) -> CalendarError {
        CalendarError::OutOfRange { offset: c.offset, field: self.name, reason }
    }

    /// systemd's `chain_valid`: every value in range, and every repetition
    /// able to fire at least once.
    fn check(&self, chain: &Chain, end_of_month: bool) -> Result<(), CalendarError> {
        // Counting from the month's end reaches back at most 28 days.
        let to = if end_of_month { self.to - 3 } else { self.to };
        let span = format!("{}..{}", self.show(self.from), self.show(to));
        for c in chain {
            if c.start < self.from || c.start > to {
                return Err(self.err(c, format!("{} is outside {span}", self.show(c.start))));
            }
            if c.repeat > to - self.from {
                return Err(self.err(c, format!("repetition /{} is longer than {span}", self.show(c.repeat))));
            }
            if c.stop >= 0 {
                if c.stop < self.from || c.stop > to {
                    return Err(self.err(c, format!("range end {} is outside {span}", self.show(c.stop))));
                }
                if c.start + c.repeat > c.stop {
                    let (a, b) = (self.show(c.start), self.show(c.stop));
                    return Err(self.err(c, format!("range {a}..{b} runs backwards or never repeats")));
                }
            } else if end_of_month && c.start - c.repeat < self.from {
                return Err(self.err(c, format!("repetition ~{}/{} runs past the month's start", c.start, c.repeat)));
            } else if !end_of_month && c.start + c.repeat > to {
                let (a, r) = (self.show(c.start), self.show(c.repeat));
                return Err(self.err(c, format!("repetition {a}/{r} never fires again within {span}")));
            }
        }
        Ok(())
    }
}

impl Spec {
    /// Normalizes and validates, as systemd does after parsing.
    pub fn finish(mut self) -> Result<Spec, CalendarError> {
        self.weekdays = self.weekdays.filter(|&b| b > 0 && b < ALL_WEEKDAYS);
        if self.day.is_empty() {
            self.end_of_month = false;
        }
        for c in &mut self.year {
            c.start = fix_year(c.start);
            c.stop = if c.stop >= 0 { fix_year(c.stop) } else { c.stop };
        }
        for chain in [&mut self.year, &mut self.month, &mut self.day, &mut self.hour, &mut self.minute, &mut self.usec]
        {
            normalize_chain(chain);
        }
        let range = |name, from, to| FieldRange { name, from, to, usec: false };
        range("year", MIN_YEAR, MAX_YEAR).check(&self.year, false)?;
        range("month", 1, 12).check(&self.month, false)?;
        range("day", 1, 31).check(&self.day, self.end_of_month)?;
        range("hour", 0, 23).check(&self.hour, false)?;
        range("minute", 0, 59).check(&self.minute, false)?;
        let seconds = FieldRange { name: "second", from: 0, to: 60 * USEC_PER_SEC - 1, usec: true };
        seconds.check(&self.usec, false)?;
        Ok(self)
    }
}

/// A number as systemd prints it: zero-padded to `width`, seconds with a
/// six-digit fraction when they have one.
fn format_value(v: i64, width: usize, usec: bool) -> String {
    let d = if usec { USEC_PER_SEC } else { 1 };
    let mut s = format!("{:0width$}", v / d);
    if v % d > 0 {
        s.push_str(&format!(".{:06}", v % d));
    }
    s
}

fn format_chain(f: &mut fmt::Formatter<'_>, width: usize, chain: &Chain, usec: bool) -> fmt::Result {
    let d = if usec { USEC_PER_SEC } else { 1 };
    let every_second = |c: &Component| c.start == 0 && c.stop < 0 && c.repeat == USEC_PER_SEC;
    if chain.is_empty() || (usec && chain.iter().any(every_second)) {
        return f.write_str("*");
    }
    for (i, c) in chain.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        f.write_str(&format_value(c.start, width, usec))?;
        if c.stop > 0 {
            write!(f, "..{}", format_value(c.stop, width, usec))?;
        }
        // A range's implicit step of one unit is not shown.
        if c.repeat > 0 && !(c.stop > 0 && c.repeat == d) {
            write!(f, "/{}", format_value(c.repeat, 0, usec))?;
        }
    }
    Ok(())
}

/// Runs of three or more days print as `Mon..Wed`, of two as `Mon,Tue`.
fn format_weekdays(f: &mut fmt::Formatter<'_>, bits: u8) -> fmt::Result {
    let mut first = true;
    let mut day = 0;
    while day < 7 {
        if bits & (1 << day) == 0 {
            day += 1;
            continue;
        }
        let mut end = day;
        while end + 1 < 7 && bits & (1 << (end + 1)) != 0 {
            end += 1;
        }
        if !first {
            f.write_str(",")?;
        }
        first = false;
        f.write_str(WEEKDAY_NAMES[day])?;
        match end - day {
            0 => {}
            1 => write!(f, ",{}", WEEKDAY_NAMES[end])?,
            _ => write!(f, "..{}", WEEKDAY_NAMES[end])?,
        }
        day = end + 1;
    }
    Ok(())
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(bits) = self.weekdays {
            format_weekdays(f, bits)?;
            f.write_str(" ")?;
        }
        format_chain(f, 4, &self.year, false)?;
        f.write_str("-")?;
        format_chain(f, 2, &self.month, false)?;
        f.write_str(if self.end_of_month { "~" } else { "-" })?;
        format_chain(f, 2, &self.day, false)?;
        f.write_str(" ")?;
        format_chain(f, 2, &self.hour, false)?;
        f.write_str(":")?;
        format_chain(f, 2, &self.minute, false)?;
        f.write_str(":")?;
        format_chain(f, 2, &self.usec, true)?;
        match &self.zone {
            SpecZone::Local => Ok(()),
            SpecZone::Utc => f.write_str(" UTC"),
            SpecZone::Named(name) => write!(f, " {name}"),
        }
    }
}
