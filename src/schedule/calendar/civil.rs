//! Broken-down wall-clock time with the normalization rules of C's
//! `struct tm` and `mktime`, over jiff's time-zone data.
//!
//! Why emulate `mktime` instead of using jiff's civil arithmetic directly:
//! systemd's search (`next.rs`) moves field by field and lets `mktime` fold
//! out-of-range fields (day 32, hour 24, day 0 of a month) into the next
//! unit, and it decides DST gaps and folds through glibc's `mktime`. To give
//! the same elapses as `systemd-analyze calendar` we reproduce that:
//! * a wall time in a DST gap is read with the offset from before the gap
//!   (02:30 on a spring-forward night becomes 03:30),
//! * a wall time that occurs twice takes the offset glibc would guess: the
//!   one used by the previous conversion, when it is one of the two
//!   candidates (so a search that starts inside the repeated hour stays in
//!   it), else the earlier one;
//! * when the caller says whether the time is daylight saving time
//!   (`tm_isdst` of 0 or 1, as systemd passes on after a normalization),
//!   a gap or fold time takes the offset of that kind: 00:00 in a gap that
//!   starts at midnight, read as summer time, is 23:00 the day before.

use crate::util::time::{civil_from_days, days_from_civil};
use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};

const SECS_PER_DAY: i64 = 86_400;

/// Broken-down time, 0-based month as in C; fields may be out of range
/// until normalized by [`Clock::mktime`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tm {
    pub year: i64,
    pub mon: i64,
    pub mday: i64,
    pub hour: i64,
    pub min: i64,
    pub sec: i64,
    /// `tm_isdst`: whether the time is daylight saving time, if known.
    pub isdst: Option<bool>,
}

impl Tm {
    /// Seconds since the epoch if these fields were UTC, folding any
    /// out-of-range field into the next unit as `timegm` does.
    pub fn wall_seconds(&self) -> i64 {
        let year = self.year + self.mon.div_euclid(12);
        let month = self.mon.rem_euclid(12) + 1;
        let days = days_from_civil(year, month, 1) + self.mday - 1;
        days * SECS_PER_DAY + self.hour * 3600 + self.min * 60 + self.sec
    }

    /// The fields of a wall-clock second count.
    pub fn from_wall_seconds(secs: i64) -> Tm {
        let days = secs.div_euclid(SECS_PER_DAY);
        let rem = secs.rem_euclid(SECS_PER_DAY);
        let (year, month, mday) = civil_from_days(days);
        let (month, mday) = (i64::from(month), i64::from(mday));
        Tm { year, mon: month - 1, mday, hour: rem / 3600, min: rem / 60 % 60, sec: rem % 60, isdst: None }
    }

    /// Day of the week, Monday = 0 (the bit order of systemd's weekday set).
    pub fn weekday(&self) -> u32 {
        let days = self.wall_seconds().div_euclid(SECS_PER_DAY);
        // 1970-01-01 was a Thursday (3 when Monday is 0).
        (days + 3).rem_euclid(7) as u32
    }
}

/// Where the fields of a [`Tm`] are read.
#[derive(Clone, Debug)]
pub(crate) enum Zone {
    Utc,
    Tz(TimeZone),
}

/// Converts between instants and wall time in one zone, remembering the last
/// offset it used as glibc's `mktime` does (see the module doc).
pub(crate) struct Clock {
    zone: Zone,
    guess: i64,
}

impl Clock {
    pub fn new(zone: Zone) -> Clock {
        Clock { zone, guess: 0 }
    }

    /// Offset (seconds east of UTC) in force at an instant, and whether it
    /// is daylight saving time.
    fn offset_at(&self, epoch: i64) -> Option<(i64, bool)> {
        match &self.zone {
            Zone::Utc => Some((0, false)),
            Zone::Tz(tz) => {
                let info = tz.to_offset_info(Timestamp::from_second(epoch).ok()?);
                Some((i64::from(info.offset().seconds()), info.dst().is_dst()))
            }
        }
    }

    /// `localtime`: the wall time of an instant.
    pub fn localtime(&mut self, epoch: i64) -> Option<Tm> {
        let (off, dst) = self.offset_at(epoch)?;
        self.guess = off;
        Some(Tm { isdst: Some(dst), ..Tm::from_wall_seconds(epoch.checked_add(off)?) })
    }

    /// Of a gap's or fold's two offsets, the one of the requested kind
    /// (daylight saving or not), when exactly one is.
    fn of_kind(&self, wall: i64, offsets: [i64; 2], isdst: bool) -> Option<i64> {
        // Reading the wall time with each offset lands in the other's or its
        // own regime: together the two instants show both offsets' kinds.
        let seen = [self.offset_at(wall - offsets[0])?, self.offset_at(wall - offsets[1])?];
        let mut matching = offsets.iter().filter(|&&o| seen.iter().any(|&(so, dst)| so == o && dst == isdst));
        match (matching.next(), matching.next()) {
            (Some(&o), None) => Some(o),
            _ => None,
        }
    }

    /// When a wall time is asked for as DST (or not) but is not, glibc reads
    /// it with the offset of the nearest time of that kind, probing a week
    /// apart in both directions for up to about seven years.
    fn nearby_of_kind(&self, epoch: i64, isdst: bool) -> Option<i64> {
        const STRIDE: i64 = 601_200;
        const BOUND: i64 = 457_243_200 / 2 + STRIDE;
        let (_, dst) = self.offset_at(epoch)?;
        if dst == isdst {
            return None;
        }
        (1..BOUND / STRIDE)
            .flat_map(|k| [-k * STRIDE, k * STRIDE])
            .filter_map(|d| self.offset_at(epoch.checked_add(d)?))
            .find(|&(_, dst)| dst == isdst)
            .map(|(offset, _)| offset)
    }

    /// The offset to read a wall time with, as `mktime` does.
    fn resolve(&self, wall: i64, isdst: Option<bool>) -> Option<i64> {
        let Zone::Tz(tz) = &self.zone else { return Some(0) };
        let f = Tm::from_wall_seconds(wall);
        let dt = DateTime::new(
            i16::try_from(f.year).ok()?,
            f.mon as i8 + 1,
            f.mday as i8,
            f.hour as i8,
            f.min as i8,
            f.sec as i8,
            0,
        )
        .ok()?;
        let secs = |o: jiff::tz::Offset| i64::from(o.seconds());
        let (before, after, gap) = match tz.to_ambiguous_timestamp(dt).offset() {
            AmbiguousOffset::Unambiguous { offset } => {
                let offset = secs(offset);
                return Some(match isdst {
                    Some(dst) => self.nearby_of_kind(wall - offset, dst).unwrap_or(offset),
                    None => offset,
                });
            }
            AmbiguousOffset::Gap { before, after } => (secs(before), secs(after), true),
            AmbiguousOffset::Fold { before, after } => (secs(before), secs(after), false),
        };
        if let Some(o) = isdst.and_then(|dst| self.of_kind(wall, [before, after], dst)) {
            return Some(o);
        }
        if gap {
            return Some(before);
        }
        let (probe, _) = self.offset_at(wall.checked_sub(self.guess)?)?;
        Some(if probe == before || probe == after { probe } else { before })
    }

    /// `mktime`: the instant of a wall time and its normalized fields.
    /// `None` when the time is outside what the zone data can represent.
    pub fn mktime(&mut self, tm: &Tm) -> Option<(i64, Tm)> {
        let wall = tm.wall_seconds();
        let off = self.resolve(wall, tm.isdst)?;
        self.guess = off;
        let epoch = wall.checked_sub(off)?;
        let (actual, dst) = self.offset_at(epoch)?;
        Some((epoch, Tm { isdst: Some(dst), ..Tm::from_wall_seconds(epoch + actual) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_round_trip() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m.into(), d.into()), days, "{y}-{m}-{d}");
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn out_of_range_fields_fold_forward() {
        let tm = Tm { year: 2023, mon: 1, mday: 30, hour: 24, min: 0, sec: 0, isdst: None };
        let t = Tm::from_wall_seconds(tm.wall_seconds());
        assert_eq!((t.year, t.mon, t.mday, t.hour), (2023, 2, 3, 0));
        let eom = Tm { year: 2024, mon: 2, mday: 0, hour: 0, min: 0, sec: 0, isdst: None };
        assert_eq!(Tm::from_wall_seconds(eom.wall_seconds()).mday, 29);
        assert_eq!(Tm { year: 2024, mon: 0, mday: 1, hour: 0, min: 0, sec: 0, isdst: None }.weekday(), 0);
    }

    #[test]
    fn gap_moves_forward_and_fold_follows_the_last_offset() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let mut clock = Clock::new(Zone::Tz(tz));
        let gap = Tm { year: 2026, mon: 2, mday: 29, hour: 2, min: 30, sec: 0, isdst: None };
        let (_, t) = clock.mktime(&gap).unwrap();
        assert_eq!((t.hour, t.min), (3, 30));
        // 2026-10-25 02:30 happens twice; after a conversion in CET the
        // second (CET) one is taken, after one in CEST the first.
        let fold = Tm { year: 2026, mon: 9, mday: 25, hour: 2, min: 30, sec: 0, isdst: None };
        clock.localtime(1_792_891_800).unwrap(); // 2026-10-25 01:30 UTC, CET
        assert_eq!(clock.mktime(&fold).unwrap().0, 1_792_891_800);
        clock.localtime(1_792_800_000).unwrap(); // a day earlier, CEST
        assert_eq!(clock.mktime(&fold).unwrap().0, 1_792_888_200);
        // With tm_isdst given, the offset of that kind (as glibc's mktime).
        assert_eq!(clock.mktime(&Tm { isdst: Some(false), ..fold }).unwrap().0, 1_792_891_800);
        let (_, t) = clock.mktime(&Tm { isdst: Some(true), ..gap }).unwrap();
        assert_eq!((t.mday, t.hour, t.min), (29, 1, 30));
        // Asked for as summer time a week before DST starts: read with the
        // summer offset, an hour early (glibc's neighbour probe).
        let early = Tm { year: 2026, mon: 2, mday: 22, hour: 12, min: 0, sec: 0, isdst: Some(true) };
        let (_, t) = clock.mktime(&early).unwrap();
        assert_eq!((t.mday, t.hour, t.isdst), (22, 11, Some(false)));
        // Santiago's DST starts at midnight: 00:00 as summer time is 23:00
        // the day before, as standard time 01:00.
        let mut chile = Clock::new(Zone::Tz(TimeZone::get("America/Santiago").unwrap()));
        let midnight = Tm { year: 2026, mon: 8, mday: 6, hour: 0, min: 0, sec: 0, isdst: Some(true) };
        assert_eq!(chile.mktime(&midnight).unwrap().0, 1_788_663_600);
        assert_eq!(chile.mktime(&Tm { isdst: Some(false), ..midnight }).unwrap().0, 1_788_667_200);
    }
}
