//! The grammar of systemd.time(7) calendar events, as systemd 252 reads it:
//!
//! ```text
//! [WEEKDAYS] [[YEAR-]MONTH-DAY | [YEAR-]MONTH~DAY | @EPOCH] [HOUR:MINUTE[:SECOND]] [UTC | ZONE]
//! ```
//!
//! or one of the shorthands (`minutely` … `yearly`, `quarterly`,
//! `semiannually`). Every date and time field is `*` or a comma list of
//! `N`, `N..M`, `N/STEP`, `N..M/STEP`; seconds may have a fraction. A
//! weekday list is `mon,tue` and `mon..fri` (or the old `mon-fri`). A
//! missing time is `00:00:00`, missing seconds are `00`.
//!
//! Errors carry the byte offset where reading stopped.

use super::spec::{Chain, Component, Spec, SpecZone, USEC_PER_SEC};
use super::{CalendarError, MAX_EXPRESSION_LEN, MAX_VALUES_PER_FIELD};
use jiff::tz::TimeZone;

const WEEKDAYS: [(&str, u8); 14] = [
    ("monday", 0),
    ("mon", 0),
    ("tuesday", 1),
    ("tue", 1),
    ("wednesday", 2),
    ("wed", 2),
    ("thursday", 3),
    ("thu", 3),
    ("friday", 4),
    ("fri", 4),
    ("saturday", 5),
    ("sat", 5),
    ("sunday", 6),
    ("sun", 6),
];

/// Largest field value systemd reads (its `int`).
const MAX_NUMBER: u64 = i32::MAX as u64;

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> u8 {
        self.s.get(self.pos).copied().unwrap_or(0)
    }

    fn peek_at(&self, n: usize) -> u8 {
        self.s.get(self.pos + n).copied().unwrap_or(0)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == b' ' {
            self.pos += 1;
        }
    }

    fn err(&self, reason: &'static str) -> CalendarError {
        self.err_at(self.pos, reason)
    }

    fn err_at(&self, offset: usize, reason: &'static str) -> CalendarError {
        let rest = &self.s[offset.min(self.s.len())..];
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len()).min(24);
        let near = String::from_utf8_lossy(&rest[..end]).into_owned();
        CalendarError::Syntax { offset, near, reason }
    }

    /// Digits as an unsigned number, at most `max`.
    fn integer(&mut self, max: u64) -> Result<u64, CalendarError> {
        let start = self.pos;
        if !self.peek().is_ascii_digit() {
            return Err(self.err("expected a number"));
        }
        let mut v: u64 = 0;
        while self.peek().is_ascii_digit() {
            v = v.saturating_mul(10).saturating_add(u64::from(self.peek() - b'0'));
            self.pos += 1;
        }
        if v > max { Err(self.err_at(start, "number too large")) } else { Ok(v) }
    }

    /// A field value; seconds (`usec`) may carry a fraction, read to the
    /// microsecond and rounded on the seventh digit.
    fn value(&mut self, usec: bool) -> Result<i64, CalendarError> {
        let start = self.pos;
        let whole = self.integer(MAX_NUMBER)?;
        if !usec {
            return Ok(whole as i64);
        }
        let mut v = whole * USEC_PER_SEC as u64;
        if self.peek() == b'.' && self.peek_at(1) != b'.' {
            self.pos += 1;
            if !self.peek().is_ascii_digit() {
                return Err(self.err("expected the digits of a fraction"));
            }
            let mut frac: u64 = 0;
            for _ in 0..6 {
                let d = if self.peek().is_ascii_digit() {
                    self.pos += 1;
                    self.s[self.pos - 1] - b'0'
                } else {
                    0
                };
                frac = frac * 10 + u64::from(d);
            }
            if (b'5'..=b'9').contains(&self.peek()) {
                frac += 1;
            }
            while self.peek().is_ascii_digit() {
                self.pos += 1;
            }
            v += frac;
        }
        if v > MAX_NUMBER { Err(self.err_at(start, "number too large")) } else { Ok(v as i64) }
    }

    /// One `N[..M][/STEP]`.
    fn component(&mut self, usec: bool) -> Result<Component, CalendarError> {
        let offset = self.pos;
        let start = self.value(usec)?;
        let mut c = Component::value(start, offset);
        if self.peek() == b'.' && self.peek_at(1) == b'.' {
            self.pos += 2;
            c.stop = self.value(usec)?;
            c.repeat = if usec { USEC_PER_SEC } else { 1 };
        }
        if self.peek() == b'/' {
            self.pos += 1;
            let at = self.pos;
            c.repeat = self.value(usec)?;
            if c.repeat == 0 {
                return Err(self.err_at(at, "a repetition step must not be zero"));
            }
        } else if usec && c.stop >= 0 && c.start + c.repeat > c.stop {
            return Err(self.err_at(offset, "a range of seconds must span at least one second"));
        }
        if !matches!(self.peek(), 0 | b' ' | b',' | b'-' | b'~' | b':') {
            return Err(self.err("unexpected character after a value"));
        }
        Ok(c)
    }

    /// `*` or a comma list of components.
    fn chain(&mut self, usec: bool) -> Result<Chain, CalendarError> {
        if self.peek() == b'*' {
            self.pos += 1;
            return Ok(if usec {
                vec![Component { start: 0, stop: -1, repeat: USEC_PER_SEC, offset: self.pos - 1 }]
            } else {
                Vec::new()
            });
        }
        let mut chain = vec![self.component(usec)?];
        while self.peek() == b',' {
            self.pos += 1;
            if chain.len() >= MAX_VALUES_PER_FIELD {
                return Err(CalendarError::TooManyValues { offset: self.pos, max: MAX_VALUES_PER_FIELD });
            }
            chain.push(self.component(usec)?);
        }
        Ok(chain)
    }

    /// A weekday name at the cursor, consumed, with its number.
    fn weekday_name(&mut self) -> Result<Option<u8>, CalendarError> {
        for (name, nr) in WEEKDAYS {
            let end = self.pos + name.len();
            if self.s.get(self.pos..end).is_some_and(|w| w.eq_ignore_ascii_case(name.as_bytes())) {
                if !matches!(self.s.get(end).copied().unwrap_or(0), 0 | b'-' | b'.' | b',' | b' ') {
                    return Err(self.err("unknown weekday"));
                }
                self.pos = end;
                return Ok(Some(nr));
            }
        }
        Ok(None)
    }

    /// `mon,wed..fri ` and the like; nothing when no weekday comes first.
    fn weekdays(&mut self) -> Result<Option<u8>, CalendarError> {
        let mut bits = 0u8;
        let mut open: Option<u8> = None;
        loop {
            let Some(nr) = self.weekday_name()? else {
                return if bits == 0 { Ok(None) } else { Err(self.err("expected a weekday")) };
            };
            bits |= 1 << nr;
            if let Some(from) = open {
                if from > nr {
                    return Err(self.err("weekday range runs backwards"));
                }
                (from + 1..nr).for_each(|d| bits |= 1 << d);
            }
            match self.peek() {
                0 => return Ok(Some(bits)),
                b' ' => {
                    self.skip_spaces();
                    return Ok(Some(bits));
                }
                b'.' if open.is_none() && self.peek_at(1) == b'.' => {
                    open = Some(nr);
                    self.pos += 2;
                }
                b'-' if open.is_none() => {
                    open = Some(nr);
                    self.pos += 1;
                }
                b'.' | b'-' => return Err(self.err("bad weekday range")),
                _ => {
                    // ',' (the only other character weekday_name allows).
                    open = None;
                    self.pos += 1;
                }
            }
            if matches!(self.peek(), 0 | b' ') {
                self.skip_spaces();
                return if open.is_none() { Ok(Some(bits)) } else { Err(self.err("open weekday range")) };
            }
        }
    }
}

/// Parses the part before the time zone suffix into a [`Spec`].
pub(crate) fn parse_body(body: &[u8], zone: SpecZone) -> Result<Spec, CalendarError> {
    let mut spec = Spec {
        weekdays: None,
        year: Vec::new(),
        month: Vec::new(),
        day: Vec::new(),
        end_of_month: false,
        hour: Vec::new(),
        minute: Vec::new(),
        usec: Vec::new(),
        zone,
    };
    if body.is_empty() {
        return Err(CalendarError::Empty);
    }
    if shorthand(body, &mut spec) {
        return spec.finish();
    }
    let mut cur = Cursor { s: body, pos: 0 };
    spec.weekdays = cur.weekdays()?;
    if !date(&mut cur, &mut spec)? {
        time(&mut cur, &mut spec)?;
    }
    if !cur.at_end() {
        return Err(cur.err("unexpected text at the end"));
    }
    spec.finish()
}

/// `minutely` … `semiannually`: fixed fields, the rest `*`.
fn shorthand(body: &[u8], spec: &mut Spec) -> bool {
    let name = String::from_utf8_lossy(body).to_ascii_lowercase();
    let v = |n: i64| Component::value(n, 0);
    let (months, day, hour, minute, weekly): (&[i64], bool, bool, bool, bool) = match name.as_str() {
        "minutely" => (&[], false, false, false, false),
        "hourly" => (&[], false, false, true, false),
        "daily" => (&[], false, true, true, false),
        "weekly" => (&[], false, true, true, true),
        "monthly" => (&[], true, true, true, false),
        "yearly" | "annually" | "anually" => (&[1], true, true, true, false),
        "quarterly" => (&[1, 4, 7, 10], true, true, true, false),
        "semiannually" | "semi-annually" | "biannually" | "bi-annually" => (&[1, 7], true, true, true, false),
        _ => return false,
    };
    spec.month = months.iter().map(|&m| v(m)).collect();
    spec.day = if day { vec![v(1)] } else { Vec::new() };
    spec.hour = if hour { vec![v(0)] } else { Vec::new() };
    spec.minute = if minute { vec![v(0)] } else { Vec::new() };
    spec.usec = vec![v(0)];
    spec.weekdays = weekly.then_some(1);
    true
}

/// The date part, or `@EPOCH`. Returns `true` when the expression is
/// complete (an epoch has its own time). A first field followed by `:` is a
/// time: the cursor is left before it.
fn date(cur: &mut Cursor<'_>, spec: &mut Spec) -> Result<bool, CalendarError> {
    if cur.at_end() {
        return Ok(false);
    }
    if cur.peek() == b'@' {
        cur.pos += 1;
        epoch(cur, spec)?;
        return Ok(true);
    }
    let start = cur.pos;
    let first = cur.chain(false)?;
    if matches!(cur.peek(), 0 | b':') {
        cur.pos = start;
        return Ok(false);
    }
    date_separator(cur, spec)?;
    let second = cur.chain(false)?;
    if matches!(cur.peek(), 0 | b' ') {
        cur.skip_spaces();
        (spec.month, spec.day) = (first, second);
        return Ok(false);
    }
    if spec.end_of_month {
        return Err(cur.err("'~' must come before the day, the last field of the date"));
    }
    date_separator(cur, spec)?;
    let third = cur.chain(false)?;
    if !matches!(cur.peek(), 0 | b' ') {
        return Err(cur.err("expected a space after the date"));
    }
    cur.skip_spaces();
    (spec.year, spec.month, spec.day) = (first, second, third);
    Ok(false)
}

fn date_separator(cur: &mut Cursor<'_>, spec: &mut Spec) -> Result<(), CalendarError> {
    match cur.peek() {
        b'~' => spec.end_of_month = true,
        b'-' => {}
        _ => return Err(cur.err("expected '-' or '~' between date fields")),
    }
    cur.pos += 1;
    Ok(())
}

/// `@SECONDS`: that one second, in UTC.
fn epoch(cur: &mut Cursor<'_>, spec: &mut Spec) -> Result<(), CalendarError> {
    let at = cur.pos;
    let secs = cur.integer(i64::MAX as u64)?;
    let ts = jiff::Timestamp::from_second(secs as i64).map_err(|_| cur.err_at(at, "timestamp out of range"))?;
    let dt = TimeZone::UTC.to_datetime(ts);
    let v = |n: i64| vec![Component::value(n, at)];
    spec.year = v(i64::from(dt.year()));
    spec.month = v(i64::from(dt.month()));
    spec.day = v(i64::from(dt.day()));
    spec.hour = v(i64::from(dt.hour()));
    spec.minute = v(i64::from(dt.minute()));
    spec.usec = v(i64::from(dt.second()) * USEC_PER_SEC);
    spec.zone = SpecZone::Utc;
    Ok(())
}

/// `HOUR:MINUTE[:SECOND]`, or nothing for midnight.
fn time(cur: &mut Cursor<'_>, spec: &mut Spec) -> Result<(), CalendarError> {
    let zero = |at| vec![Component::value(0, at)];
    if cur.at_end() {
        (spec.hour, spec.minute, spec.usec) = (zero(cur.pos), zero(cur.pos), zero(cur.pos));
        return Ok(());
    }
    spec.hour = cur.chain(false)?;
    if cur.peek() != b':' {
        return Err(cur.err("expected ':' after the hour"));
    }
    cur.pos += 1;
    spec.minute = cur.chain(false)?;
    if cur.at_end() {
        spec.usec = zero(cur.pos);
        return Ok(());
    }
    if cur.peek() != b':' {
        return Err(cur.err("expected ':' or the end after the minute"));
    }
    cur.pos += 1;
    spec.usec = cur.chain(true)?;
    Ok(())
}

/// Splits off a ` UTC` (any case) or ` Zone/Name` suffix.
pub(crate) fn split_zone(input: &str) -> Result<(&str, SpecZone, Option<TimeZone>), CalendarError> {
    let b = input.as_bytes();
    if b.len() >= 4 && b[b.len() - 4..].eq_ignore_ascii_case(b" utc") {
        return Ok((&input[..input.len() - 4], SpecZone::Utc, None));
    }
    if let Some(space) = input.rfind(' ') {
        let name = &input[space + 1..];
        if let Some(tz) = named_zone(name) {
            return Ok((&input[..space], SpecZone::Named(name.to_string()), Some(tz)));
        }
    }
    Ok((input, SpecZone::Local, None))
}

/// An IANA zone name as systemd accepts it: letters, digits, `-_+/`, no
/// empty path component, spelled exactly as the zoneinfo file.
fn named_zone(name: &str) -> Option<TimeZone> {
    let chars_ok = name.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'+' | b'/'));
    if name.is_empty() || !chars_ok || name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return None;
    }
    if name == "UTC" {
        return Some(TimeZone::UTC);
    }
    let tz = jiff::tz::db().get(name).ok()?;
    (tz.iana_name() == Some(name)).then_some(tz)
}

pub(crate) fn check_length(input: &str) -> Result<(), CalendarError> {
    if input.len() > MAX_EXPRESSION_LEN {
        return Err(CalendarError::TooLong { len: input.len(), max: MAX_EXPRESSION_LEN });
    }
    Ok(())
}
