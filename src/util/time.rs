//! UTC timestamps as RFC 3339 text, without a calendar dependency.
//!
//! [`UtcTime`] is the one time value of the catalog and the front ends: it
//! prints, parses and serializes as the RFC 3339 text the catalog has always
//! stored (`2026-12-07T14:40:23.832Z`), so JSON output and stored rows keep
//! their exact form.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 to a (year, month, day) civil date (proleptic
/// Gregorian), after Howard Hinnant's well-known `civil_from_days` algorithm.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The inverse of [`civil_from_days`]: days since 1970-01-01 of a civil date.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The local time zone's offset from UTC in seconds (east positive) at
/// instant `secs`, as the C library knows it (`TZ`, else /etc/localtime);
/// 0 when it cannot tell. Retention buckets backups by local time.
pub fn local_offset(secs: i64) -> i64 {
    // time_t is 64 bits on every target this builds for.
    let t = secs as libc::time_t;
    let mut tm = std::mem::MaybeUninit::<libc::tm>::zeroed();
    // SAFETY: localtime_r reads the time_t behind `&t` and writes one
    // `struct tm` into `tm`, both live for the call; it is the reentrant
    // form (no shared static buffer), so concurrent calls are fine.
    let r = unsafe { libc::localtime_r(&t, tm.as_mut_ptr()) };
    if r.is_null() {
        return 0;
    }
    // SAFETY: localtime_r returned non-null, so it filled in `tm` (which
    // was zeroed besides: every field is initialised either way).
    let tm = unsafe { tm.assume_init() };
    tm.tm_gmtoff
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
pub fn rfc3339(secs: i64, nanos: u32) -> String {
    UtcTime { secs, nanos }.to_string()
}

/// Now, as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    UtcTime::now().to_string()
}

/// Now as a compact, sortable id stamp: `YYYYMMDDTHHMMSSZ`.
pub fn now_compact() -> String {
    UtcTime { secs: UtcTime::now().secs, nanos: 0 }.to_string().replace(['-', ':'], "")
}

/// A point in time, UTC: seconds since the epoch and nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcTime {
    pub secs: i64,
    pub nanos: u32,
}

/// Text that is not an RFC 3339 UTC time of the form the catalog writes.
#[derive(Debug, thiserror::Error)]
#[error("not an RFC 3339 UTC time: {0:?}")]
pub struct BadTime(pub String);

impl UtcTime {
    /// Now, to the millisecond (the precision the catalog stores).
    pub fn now() -> Self {
        let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        UtcTime { secs: d.as_secs() as i64, nanos: d.subsec_millis() * 1_000_000 }
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.f…]Z` (also with a space for `T` or
    /// `+00:00` for `Z`).
    pub fn parse(s: &str) -> Result<Self, BadTime> {
        let bad = || BadTime(s.to_string());
        let b = s.as_bytes();
        let num = |a: usize, z: usize| -> Result<i64, BadTime> {
            let t = s.get(a..z).ok_or_else(bad)?;
            if !t.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            t.parse().map_err(|_| bad())
        };
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
            return Err(bad());
        }
        if b[13] != b':' || b[16] != b':' {
            return Err(bad());
        }
        let (y, mo, d, h, mi, se) = (num(0, 4)?, num(5, 7)?, num(8, 10)?, num(11, 13)?, num(14, 16)?, num(17, 19)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
            return Err(bad());
        }
        let mut rest = &s[19..];
        let mut nanos = 0u32;
        if let Some(frac) = rest.strip_prefix('.') {
            let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad());
            }
            for (i, c) in frac.bytes().take(digits.min(9)).enumerate() {
                nanos += u32::from(c - b'0') * 10u32.pow(8 - i as u32);
            }
            rest = &frac[digits..];
        }
        if !matches!(rest, "Z" | "z" | "+00:00") {
            return Err(bad());
        }
        let days = days_from_civil(y, mo, d);
        Ok(UtcTime { secs: days * 86_400 + h * 3600 + mi * 60 + se, nanos })
    }
}

impl fmt::Display for UtcTime {
    /// Milliseconds are shown when there are any, as the catalog stores them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.secs.div_euclid(86_400);
        let rem = self.secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let (hh, mm, ss) = (rem / 3600, rem / 60 % 60, rem % 60);
        let text = if self.nanos == 0 {
            format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
        } else {
            format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{:03}Z", self.nanos / 1_000_000)
        };
        f.pad(&text)
    }
}

impl FromStr for UtcTime {
    type Err = BadTime;
    fn from_str(s: &str) -> Result<Self, BadTime> {
        Self::parse(s)
    }
}

impl serde::Serialize for UtcTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_offset_agrees_with_date() {
        // date(1) uses the same C library time zone rules.
        for t in [0i64, 1_774_746_000, 1_792_890_000, 1_800_000_000] {
            let out = std::process::Command::new("date").arg("-d").arg(format!("@{t}")).arg("+%z").output().unwrap();
            let z = String::from_utf8(out.stdout).unwrap();
            let z = z.trim();
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let want = sign * (z[1..3].parse::<i64>().unwrap() * 3600 + z[3..5].parse::<i64>().unwrap() * 60);
            assert_eq!(local_offset(t), want, "at {t} ({z})");
        }
    }

    #[test]
    fn known_dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400, 0), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000, 5_000_000), "2026-11-18T11:06:40.005Z");
        assert_eq!(rfc3339(-1, 0), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn catalog_text_round_trips() {
        for (secs, nanos) in [(0i64, 0u32), (951_782_400, 0), (1_795_000_000, 5_000_000), (-1, 0)] {
            let t = UtcTime { secs, nanos };
            assert_eq!(UtcTime::parse(&t.to_string()).unwrap(), t, "{t}");
        }
        assert_eq!(UtcTime::parse("2026-12-07 14:40:23.8329+00:00").unwrap().nanos, 832_900_000);
        for bad in ["", "2026-12-07", "2026-13-07T14:40:23Z", "2026-12-07T14:40:23", "2026-12-07T14:40:23.Z"] {
            assert!(UtcTime::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(format!("{:<22}|", UtcTime::default()), "1970-01-01T00:00:00Z  |");
    }
}
