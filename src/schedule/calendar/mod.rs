//! Calendar events: the systemd.time(7) syntax that Proxmox Backup Server
//! schedules use (`mon..fri 02:00`, `*:0/15`, `*-*~1`, `daily UTC`).
//!
//! [`CalendarEvent::parse`] reads an expression; its `Display` is the
//! normalized form exactly as `systemd-analyze calendar` prints it, and
//! [`CalendarEvent::next_after`] gives the same next elapses, DST gaps and
//! folds included (tests/calendar_oracle.rs checks both against systemd).
//!
//! Layout: `parse.rs` (grammar, with byte offsets in errors), `spec.rs`
//! (fields, normalization, validation, printing), `next.rs` (the search),
//! `civil.rs` (wall-clock arithmetic with C `mktime` rules over jiff's zone
//! data).
//!
//! Input is untrusted (policies come over HTTP): the expression length and
//! the list sizes are bounded, numbers are range-checked, and every search
//! ends (a year horizon and a step limit).
#![forbid(unsafe_code)]

mod civil;
mod next;
mod parse;
mod spec;

pub use next::MAX_SEARCH_STEPS;
pub use spec::{MAX_YEAR, MIN_YEAR, SpecZone};

use civil::{Clock, Zone};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use std::fmt;

/// Longest expression accepted, in bytes (systemd has no limit; real ones
/// are a few dozen bytes).
pub const MAX_EXPRESSION_LEN: usize = 1024;
/// Most values in one comma list (systemd's limit: 240 after the first).
pub const MAX_VALUES_PER_FIELD: usize = 241;

/// Why an expression was refused. Offsets are bytes into the expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CalendarError {
    #[error("empty calendar expression")]
    Empty,
    #[error("calendar expression is {len} bytes long, more than the {max} allowed")]
    TooLong { len: usize, max: usize },
    #[error("calendar expression has more than {max} values in one list (at byte {offset})")]
    TooManyValues { offset: usize, max: usize },
    #[error("bad calendar expression at byte {offset} (near {near:?}): {reason}")]
    Syntax { offset: usize, near: String, reason: &'static str },
    #[error("bad {field} in calendar expression at byte {offset}: {reason}")]
    OutOfRange { offset: usize, field: &'static str, reason: String },
}

impl CalendarError {
    /// Byte offset of the fault in the expression, when it has one.
    pub fn offset(&self) -> Option<usize> {
        match self {
            CalendarError::Empty | CalendarError::TooLong { .. } => None,
            CalendarError::TooManyValues { offset, .. }
            | CalendarError::Syntax { offset, .. }
            | CalendarError::OutOfRange { offset, .. } => Some(*offset),
        }
    }
}

/// A parsed calendar event.
#[derive(Clone, Debug)]
pub struct CalendarEvent {
    spec: spec::Spec,
    /// The zone of a named-zone suffix, loaded once at parse time.
    named: Option<TimeZone>,
}

impl CalendarEvent {
    /// Parses an expression in systemd.time(7) calendar syntax.
    pub fn parse(input: &str) -> Result<CalendarEvent, CalendarError> {
        parse::check_length(input)?;
        let (body, zone, named) = parse::split_zone(input)?;
        let spec = parse::parse_body(body.as_bytes(), zone)?;
        Ok(CalendarEvent { spec, named })
    }

    /// The zone the event is evaluated in.
    pub fn zone(&self) -> &SpecZone {
        &self.spec.zone
    }

    /// The first elapse strictly after `after`, with local time (for
    /// expressions without a zone suffix) in `local`. `None` when the event
    /// never elapses again before [`MAX_YEAR`] ends.
    pub fn next_after(&self, after: Timestamp, local: &TimeZone) -> Option<Timestamp> {
        let zone = match (&self.spec.zone, &self.named) {
            (SpecZone::Utc, _) => Zone::Utc,
            (SpecZone::Named(_), Some(tz)) => Zone::Tz(tz.clone()),
            _ => Zone::Tz(local.clone()),
        };
        let mut clock = Clock::new(zone);
        let next = next::next_elapse(&self.spec, &mut clock, after.as_microsecond())?;
        Timestamp::from_microsecond(next).ok()
    }

    /// The next `n` elapses after `after`, each after the one before.
    pub fn elapses(&self, after: Timestamp, local: &TimeZone, n: usize) -> Vec<Timestamp> {
        let mut out = Vec::new();
        let mut t = after;
        while out.len() < n {
            match self.next_after(t, local) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }
}

/// The normalized form, as `systemd-analyze calendar` prints it.
impl fmt::Display for CalendarEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.spec.fmt(f)
    }
}

impl std::str::FromStr for CalendarEvent {
    type Err = CalendarError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CalendarEvent::parse(s)
    }
}

/// Fuzz entry point: `data` as an expression. Errors are fine; a panic, a
/// hang, or a normalized form that does not read back as itself is a bug.
pub fn fuzz_entry(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(event) = CalendarEvent::parse(text) else { return };
    let normalized = event.to_string();
    let again = CalendarEvent::parse(&normalized).expect("the normalized form parses");
    assert_eq!(again.to_string(), normalized, "normalizing is idempotent");
    let zones = [Some(TimeZone::UTC), TimeZone::get("Europe/Berlin").ok()];
    for local in zones.iter().flatten() {
        for base in [0, 1_711_846_800, 4_102_444_800] {
            let base = Timestamp::from_second(base).expect("in range");
            for (a, b) in event.elapses(base, local, 3).iter().zip(again.elapses(base, local, 3).iter()) {
                assert!(*a > base && a == b, "elapses are after the base and the same for both forms");
            }
        }
    }
}

#[cfg(test)]
mod tests;
