//! Unit tests with expectations from systemd.time(7) and systemd 252 runs;
//! the broad comparison is tests/calendar_oracle.rs.

use super::*;

fn norm(s: &str) -> String {
    CalendarEvent::parse(s).unwrap_or_else(|e| panic!("{s}: {e}")).to_string()
}

fn next_n(s: &str, base: &str, zone: &str, n: usize) -> Vec<String> {
    let tz = TimeZone::get(zone).unwrap();
    let ev = CalendarEvent::parse(s).unwrap();
    ev.elapses(base.parse().unwrap(), &tz, n).iter().map(|t| t.to_string()).collect()
}

#[test]
fn normalized_forms() {
    let cases = [
        ("mon..fri 02:00", "Mon..Fri *-*-* 02:00:00"),
        ("*:0/15", "*-*-* *:00/15:00"),
        ("sat,sun *-*-* 1,3:00", "Sat,Sun *-*-* 01,03:00:00"),
        ("quarterly", "*-01,04,07,10-01 00:00:00"),
        ("semiannually", "*-01,07-01 00:00:00"),
        ("weekly", "Mon *-*-* 00:00:00"),
        ("minutely", "*-*-* *:*:00"),
        ("Wed-Sat,Tue 12-10-15 1:2:3", "Tue..Sat 2012-10-15 01:02:03"),
        ("*-*~1", "*-*~01 00:00:00"),
        ("*:*:1.5", "*-*-* *:*:01.500000"),
        ("*:*:0/0.25", "*-*-* *:*:00/0.250000"),
        ("1..5/2:00", "*-*-* 01..05/2:00:00"),
        ("5,3,5,1:00", "*-*-* 01,03,05:00:00"),
        ("12:00 utc", "*-*-* 12:00:00 UTC"),
        ("12:00 Europe/Berlin", "*-*-* 12:00:00 Europe/Berlin"),
        ("mon,tue,wed,thu,fri,sat,sun", "*-*-* 00:00:00"),
        ("@1700000000", "2023-11-14 22:13:20 UTC"),
    ];
    for (input, want) in cases {
        assert_eq!(norm(input), want, "{input}");
    }
}

#[test]
fn errors_point_at_the_bad_part() {
    let offset = |s: &str| CalendarEvent::parse(s).unwrap_err().offset();
    assert_eq!(offset("mon..fri 02:0x"), Some(13));
    assert_eq!(offset("*-13-01"), Some(2));
    assert_eq!(offset("*:50/10"), Some(2));
    assert_eq!(offset("funday"), Some(0));
    assert_eq!(offset("2024-01-01 25:00"), Some(11));
    assert_eq!(offset("fri..mon"), Some(8));
    assert_eq!(offset("2024-02-29..03-01"), Some(14));
    let e = CalendarEvent::parse("*-13-01").unwrap_err().to_string();
    assert!(e.contains("month") && e.contains("13 is outside 1..12"), "{e}");
    assert_eq!(CalendarEvent::parse("").unwrap_err(), CalendarError::Empty);
    let long = "1,".repeat(MAX_EXPRESSION_LEN);
    assert!(matches!(CalendarEvent::parse(&long), Err(CalendarError::TooLong { .. })));
    let many = (0..=MAX_VALUES_PER_FIELD).map(|_| "1").collect::<Vec<_>>().join(",") + ":00";
    assert!(matches!(CalendarEvent::parse(&many), Err(CalendarError::TooManyValues { .. })));
}

#[test]
fn impossible_dates_never_elapse() {
    for s in ["2023-02-30", "*-02-30", "*-04-31 UTC", "2199-12-31 23:59:59 UTC"] {
        let ev = CalendarEvent::parse(s).unwrap();
        let base = "2200-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(
            ev.next_after("2023-01-01T00:00:00Z".parse().unwrap(), &TimeZone::UTC).is_some(),
            s.starts_with("2199"),
            "{s}"
        );
        assert_eq!(ev.next_after(base, &TimeZone::UTC), None, "{s}");
    }
}

#[test]
fn month_ends_and_leap_days() {
    let got = next_n("*-*-31", "2026-01-31T00:00:00Z", "UTC", 3);
    assert_eq!(got, ["2026-03-31T00:00:00Z", "2026-05-31T00:00:00Z", "2026-07-31T00:00:00Z"]);
    let got = next_n("*-02~1 12:00", "2027-01-01T00:00:00Z", "UTC", 2);
    assert_eq!(got, ["2027-02-28T12:00:00Z", "2028-02-29T12:00:00Z"]);
    let got = next_n("*-02-29", "2026-01-01T00:00:00Z", "UTC", 2);
    assert_eq!(got, ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]);
}

#[test]
fn dst_gap_and_fold_as_systemd() {
    // Berlin springs forward 2026-03-29 02:00 → 03:00: 02:30 does not exist
    // that day; a quarter-hourly timer jumps from 01:45 CET to 03:00 CEST.
    let got = next_n("*-*-* 02:30", "2026-03-29T00:00:00Z", "Europe/Berlin", 2);
    assert_eq!(got, ["2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"]);
    let got = next_n("*:0/15", "2026-03-29T00:30:00Z", "Europe/Berlin", 3);
    assert_eq!(got, ["2026-03-29T00:45:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:15:00Z"]);
    // Falling back 2026-10-25 03:00 → 02:00: 02:30 happens twice and fires
    // once, in CEST, when the search starts before the fold...
    let got = next_n("*-*-* 02:30", "2026-10-25T00:00:00Z", "Europe/Berlin", 2);
    assert_eq!(got, ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]);
    // ... and in CET when it starts inside the repeated hour.
    let got = next_n("*-*-* 02:30", "2026-10-25T01:10:00Z", "Europe/Berlin", 1);
    assert_eq!(got, ["2026-10-25T01:30:00Z"]);
    let got = next_n("01:30", "2026-11-01T05:00:00Z", "America/New_York", 2);
    assert_eq!(got, ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]);
}

#[test]
fn zone_suffix_overrides_local_time() {
    let got = next_n("12:00 America/New_York", "2026-03-29T00:00:00Z", "Europe/Berlin", 1);
    assert_eq!(got, ["2026-03-29T16:00:00Z"]);
    let got = next_n("12:00 UTC", "2026-03-29T00:00:00Z", "Europe/Berlin", 1);
    assert_eq!(got, ["2026-03-29T12:00:00Z"]);
}

/// A short in-tree fuzz run: mutated valid expressions through
/// [`fuzz_entry`] (no panic, normalized forms read back as themselves).
#[test]
fn mutated_expressions_never_panic() {
    let seeds = [
        "mon..fri 02:00",
        "*:0/15",
        "*-*~1..3 12:00 UTC",
        "2024/4-02-29 1,3:00:1.5",
        "Sat,Sun *-*-1/7 *:*:0/0.25",
        "quarterly Europe/Berlin",
        "@1700000000",
        "*-3,10-25..31 02:00",
        "12-10-15 1..5/2:2:3",
    ];
    let alphabet = b"0123456789*-~:.,/ @MonTueSatSunUTC";
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for seed in seeds {
        fuzz_entry(seed.as_bytes());
        for _ in 0..300 {
            let mut b = seed.as_bytes().to_vec();
            for _ in 0..1 + next() % 3 {
                let r = next();
                let pos = (r % (b.len() as u64 + 1)) as usize;
                let c = alphabet[(r >> 16) as usize % alphabet.len()];
                match (r >> 40) % 3 {
                    0 if pos < b.len() => b[pos] = c,
                    1 if pos < b.len() => drop(b.remove(pos)),
                    _ => b.insert(pos, c),
                }
            }
            fuzz_entry(&b);
        }
    }
}
