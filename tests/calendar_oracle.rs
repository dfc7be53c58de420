//! Calendar events against systemd 252: for hand-picked and generated
//! expressions, in several time zones and from base times around DST changes,
//! month ends, leap days and year ends, `systemd-analyze calendar` (one call
//! per scenario, every expression in it) and the library must agree on
//! which expressions are valid, on the normalized form, and on the next five
//! elapses (local time with its zone abbreviation, and UTC).

mod common;
use backchain::schedule::calendar::CalendarEvent;
use common::{Rng, tool};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use std::collections::{BTreeSet, HashMap};

const ITERATIONS: usize = 5;

/// Edge cases picked by hand: syntax corners, month ends, leap days, DST
/// hours in the scenarios' zones, repetition and lists in every field.
const HAND_PICKED: &[&str] = &[
    "minutely",
    "hourly",
    "daily",
    "weekly",
    "monthly",
    "yearly",
    "annually",
    "quarterly",
    "semiannually",
    "semi-annually",
    "biannually",
    "DAILY",
    "daily UTC",
    "weekly Europe/Berlin",
    "mon..fri 02:00",
    "Mon..Fri *-*-* 02:00:00",
    "sat,sun",
    "sat,sun 10:30",
    "Sunday 03:00",
    "mon-wed,fri 12:00",
    "Wed-Sat,Tue 12-10-15 1:2:3",
    "mon,tue,wed,thu,fri,sat,sun",
    "mon,",
    "*:0/15",
    "*:*:0/2",
    "*:0/5:30",
    "*:*",
    "*:*:*",
    "0/6:00",
    "*-*-* *:00/15:00",
    "*-*-31",
    "*-*-30",
    "*-*-29",
    "*-02-29",
    "*-02-28",
    "*-02-29 12:00 UTC",
    "2028-02-29",
    "*-04-31",
    "2023-02-30",
    "*-*~1",
    "*-*~01 00:00:00",
    "*-02~1",
    "*-*~7/2",
    "*-*~1..3",
    "*-02~3..1",
    "*-*~28",
    "*-*~04..01",
    "Mon *-*~1..7",
    "Fri *-*-13",
    "Fri *-*-13 13:13",
    "*-*-* 02:30",
    "*-*-* 02:00",
    "*-*-* 03:00",
    "*-*-* 01:30",
    "*-*-* 02:15:30",
    "*-*-* 2,3:0/30",
    "2:*",
    "02,03:00,30",
    "1..4:15",
    "*:59:59",
    "23:59:59",
    "00:00:00",
    "*-*-* 00:00:00 UTC",
    "12:00 America/New_York",
    "12:00 Europe/Berlin",
    "02:30 Europe/Berlin",
    "01:30 America/New_York",
    "Mon 00:00 Asia/Kolkata",
    "*:0/20 Australia/Lord_Howe",
    "12:00 Etc/UTC",
    "12:00 utc",
    "2026..2028-01,07-01",
    "2026/2-*-01",
    "26-01-01",
    "99-12-31",
    "70-01-01",
    "2199-12-31 23:59:59",
    "2200-01-01",
    "1969-12-31",
    "*-1..12/3-1",
    "*-*-1/7",
    "*-*-1..31/10",
    "*-3,10-25..31",
    "Sun *-3,10-25..31 01:00",
    "Sun *-03-25..31 02:00",
    "Sun *-3,11-1..14 02:00",
    "*:*:1.5",
    "*:*:0/0.5",
    "*:*:10.25",
    "*:*:1..3",
    "*:*:1..3/0.75",
    "*:*:59.999999",
    "*:*:0.0000005",
    "@1700000000",
    "@0",
    "@4102444800",
    "Thu 1970-01-01",
    "5,3,5,1:00",
    "1..5/2:00",
    "0..23/7:0..59/29",
    "8..18:0/20",
    "*-*-* 8..18/2:00",
    "Mon..Fri 9..17:00",
    "Sat *-*-1..7 3:00",
    "Tue..Thu *-*-8..14",
    "2027-W01",
    "*-12-25",
    // Refused by both.
    "",
    " ",
    "foo",
    "mon..",
    "fri..mon",
    "mon.fri",
    "Mondays",
    "mon-",
    "*-13-01",
    "*-00-01",
    "*-*-32",
    "*-*-00",
    "24:00",
    "*:60",
    "*:*:60",
    "*:50/10",
    "*:0/0",
    "*-*~29",
    "*-*~3..1/2",
    "*-*~1-1",
    "1.5:00",
    "*/5",
    "*:*/5",
    "12:00:00:00",
    "12",
    "2024-01-01 25:00",
    "12:00 Nowhere/City",
    "12:00 europe/berlin",
    "1,2,:00",
    "*-*-* 12:00 ",
    "2024-02-29..03-01",
    "1..:00",
    "@",
    "@x",
    "*:*:1..1.5",
    "10000-01-01",
    "2024-1-1-1",
    "~1",
    "mon 12:00 mon",
];

/// Values for each field, combined pseudo-randomly (fixed seed) into
/// expressions, some of them invalid on purpose.
const WEEKDAYS: &[&str] = &["", "", "Mon ", "Sat,Sun ", "Mon..Fri ", "Tue,Thu ", "Sun ", "Fri..Sun "];
const YEARS: &[&str] = &["*", "*", "2026", "2026..2028", "2024/4", "2027,2029", "28", "2026..2030/2"];
const MONTHS: &[&str] = &["*", "*", "02", "1..12/3", "3,10", "11", "2..4", "12", "10/1"];
const DAYS: &[&str] = &["*", "*", "1", "29", "31", "30", "15..20", "1/7", "25..31", "28..31/3"];
const HOURS: &[&str] = &["*", "0", "2", "23", "0/6", "1..5", "2,14", "3..21/6", "02..03", "1/12"];
const MINUTES: &[&str] = &["*", "0", "00", "30", "0/15", "5..50/20", "59", "45..15", "0/7", "10,20,40"];
const SECONDS: &[&str] = &["", "", ":00", ":*", ":0/20", ":30", ":1.5", ":59"];
const ZONES: &[&str] = &["", "", "", " UTC", " Europe/Berlin", " America/New_York", " Asia/Kolkata"];

fn pick<'a>(rng: &mut Rng, pool: &[&'a str]) -> &'a str {
    pool[rng.below(pool.len() as u64) as usize]
}

fn generated(n: usize) -> Vec<String> {
    let mut rng = Rng::new(16);
    (0..n)
        .map(|i| {
            let time = format!("{}:{}{}", pick(&mut rng, HOURS), pick(&mut rng, MINUTES), pick(&mut rng, SECONDS));
            let (w, y, m, d) =
                (pick(&mut rng, WEEKDAYS), pick(&mut rng, YEARS), pick(&mut rng, MONTHS), pick(&mut rng, DAYS));
            let date = match i % 4 {
                0 => format!("{y}-{m}-{d} "),
                1 => format!("{m}-{d} "),
                2 => format!("{y}-{m}~{} ", pick(&mut rng, &["1", "2", "1..3", "7/2", "3"])),
                _ => String::new(),
            };
            format!("{w}{date}{time}{}", pick(&mut rng, ZONES))
        })
        .collect()
}

/// What systemd printed for one expression.
#[derive(Debug, Default)]
struct Shown {
    /// systemd gave up searching (its step limit): we must find nothing.
    stuck: bool,
    normalized: String,
    /// (local, UTC) per elapse; UTC is empty when local time is UTC.
    elapses: Vec<(String, String)>,
}

/// Runs systemd-analyze once for all expressions. Returns the tables by
/// original expression; expressions it refused have none.
fn systemd(exprs: &[String], tz: &str, base: &str) -> HashMap<String, Shown> {
    let out = tool("systemd-analyze")
        .args(["calendar", &format!("--iterations={ITERATIONS}"), &format!("--base-time={base}")])
        .args(exprs)
        .env("TZ", tz)
        .env("COLUMNS", "4096")
        .env("SYSTEMD_COLORS", "0")
        .env("LC_ALL", "C")
        .output()
        .expect("systemd-analyze runs");
    let mut tables = HashMap::new();
    // An expression whose search systemd abandons prints no table, only this.
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        if let Some(rest) = line.strip_prefix("Failed to determine next elapse for '") {
            let expr = rest.rsplit_once("': ").expect("quoted expression").0;
            tables.insert(expr.to_string(), Shown { stuck: true, ..Default::default() });
        }
    }
    let mut cur: Option<(Option<String>, Shown)> = None;
    let lines = String::from_utf8(out.stdout).expect("utf-8");
    for line in lines.lines().chain(std::iter::once("")) {
        let Some((label, value)) = line.trim_start().split_once(": ") else {
            if let Some((original, shown)) = cur.take() {
                tables.insert(original.unwrap_or_else(|| shown.normalized.clone()), shown);
            }
            continue;
        };
        let (original, shown) = cur.get_or_insert_with(Default::default);
        let value = value.trim_end().to_string();
        match label {
            "Original form" => *original = Some(value),
            "Normalized form" => shown.normalized = value,
            "Next elapse" if value == "never" => {}
            "Next elapse" => shown.elapses.push((value, String::new())),
            "(in UTC)" => shown.elapses.last_mut().expect("an elapse first").1 = value,
            "From now" => {}
            l if l.starts_with("Iter. #") => shown.elapses.push((value, String::new())),
            l => panic!("unexpected systemd-analyze line {l:?}: {line}"),
        }
    }
    tables
}

fn systemd_time(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned_datetime(tz.clone()).strftime("%a %Y-%m-%d %H:%M:%S %Z").to_string()
}

/// Compares one scenario; returns the mismatches found.
fn compare(exprs: &[String], tz_name: &str, base: &str, counts: &mut [usize; 2]) -> Vec<String> {
    let tz = TimeZone::get(tz_name).unwrap();
    let shown = systemd(exprs, tz_name, base);
    let base_ts: Timestamp = base.replace(" UTC", "Z").replace(' ', "T").parse().unwrap();
    let local_is_utc = tz_name == "UTC";
    let mut bad = Vec::new();
    for e in exprs {
        let ours = CalendarEvent::parse(e);
        let (ev, theirs) = match (ours, shown.get(e)) {
            (Err(_), None) => {
                counts[1] += 1;
                continue;
            }
            (Ok(ev), Some(t)) => (ev, t),
            (ours, _) => {
                bad.push(format!("[{tz_name} {base}] {e:?}: systemd valid={}, ours {ours:?}", shown.contains_key(e)));
                continue;
            }
        };
        counts[0] += 1;
        if theirs.stuck {
            // systemd printed nothing but the give-up: we must stop early too.
            if ev.elapses(base_ts, &tz, ITERATIONS).len() == ITERATIONS {
                bad.push(format!("[{tz_name} {base}] {e:?}: systemd gave up, we found {ITERATIONS} elapses"));
            }
            continue;
        }
        if ev.to_string() != theirs.normalized {
            bad.push(format!("[{tz_name}] {e:?}: normalized {:?}, systemd {:?}", ev.to_string(), theirs.normalized));
        }
        let elapses: Vec<(String, String)> = ev
            .elapses(base_ts, &tz, ITERATIONS)
            .into_iter()
            .map(|t| (systemd_time(t, &tz), if local_is_utc { String::new() } else { systemd_time(t, &TimeZone::UTC) }))
            .collect();
        if elapses != theirs.elapses {
            bad.push(format!("[{tz_name} {base}] {e:?}: ours {elapses:?}\n    systemd {:?}", theirs.elapses));
        }
    }
    bad
}

#[test]
fn calendar_events_match_systemd_analyze() {
    let mut exprs: Vec<String> = HAND_PICKED.iter().map(|s| s.to_string()).collect();
    exprs.extend(generated(220));
    // One table per distinct expression: systemd's output is keyed by it.
    let mut seen = BTreeSet::new();
    exprs.retain(|e| seen.insert(e.clone()));
    assert!(exprs.len() >= 300, "{} expressions", exprs.len());
    let scenarios = [
        ("UTC", "2026-03-29 00:00:00 UTC"),
        ("UTC", "2027-12-31 23:59:59 UTC"),
        ("Europe/Berlin", "2026-03-28 23:00:00 UTC"),
        ("Europe/Berlin", "2026-10-24 23:30:00 UTC"),
        ("Europe/Berlin", "2026-10-25 01:10:00 UTC"),
        ("America/New_York", "2026-03-08 06:00:00 UTC"),
        ("America/New_York", "2026-11-01 05:00:00 UTC"),
        ("Australia/Lord_Howe", "2026-04-04 14:00:00 UTC"),
        ("Asia/Kolkata", "2028-02-28 18:00:00 UTC"),
        // Chile changes at midnight: 2026-09-06 00:00 does not exist, and
        // 2026-04-04 23:00..24:00 happens twice.
        ("America/Santiago", "2026-09-05 12:00:00 UTC"),
        ("America/Santiago", "2026-04-04 12:00:00 UTC"),
        ("Europe/London", "2026-10-25 00:30:00 UTC"),
    ];
    let mut counts = [0usize; 2];
    let mut bad = Vec::new();
    for (tz, base) in scenarios {
        bad.extend(compare(&exprs, tz, base, &mut counts));
    }
    for b in bad.iter().take(25) {
        eprintln!("{b}");
    }
    assert!(bad.is_empty(), "{} mismatches with systemd-analyze (first ones above)", bad.len());
    eprintln!("{} expressions; valid/invalid comparisons over {} scenarios: {counts:?}", exprs.len(), scenarios.len());
    // Both sides must have exercised valid and invalid expressions.
    assert!(counts[0] > 200 * scenarios.len() / 2 && counts[1] > 30, "valid/invalid comparisons: {counts:?}");
}

/// `backchain calendar` prints what `systemd-analyze calendar` prints, less
/// its "From now" lines; a bad expression fails with one line naming where.
#[test]
fn cli_output_matches_systemd_analyze() {
    let exprs = ["mon..fri 02:00", "*:0/15", "*-*~1 12:00 UTC", "2023-02-30", "daily"];
    for tz in ["Europe/Berlin", "UTC"] {
        for e in exprs {
            let args = ["calendar", e, "--iterations=4", "--base-time=2026-03-29 00:00:00 UTC"];
            let ours = common::backchain().args(args).env("TZ", tz).output().unwrap();
            assert!(ours.status.success(), "{e}: {}", String::from_utf8_lossy(&ours.stderr));
            let theirs = tool("systemd-analyze").args(args).env("TZ", tz).env("SYSTEMD_COLORS", "0").output().unwrap();
            let theirs: String = String::from_utf8(theirs.stdout)
                .unwrap()
                .lines()
                .filter(|l| !l.contains("From now:"))
                .map(|l| format!("{l}\n"))
                .collect();
            assert_eq!(String::from_utf8(ours.stdout).unwrap(), theirs, "{tz} {e}");
        }
    }
    let json = common::backchain()
        .args(["calendar", "*:0/15", "--iterations=2", "--base-time=2026-03-29T00:00:00Z", "--json"])
        .env("TZ", "Europe/Berlin")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["normalized"], "*-*-* *:00/15:00");
    assert_eq!(v["elapses"][1]["utc"], "2026-03-29T00:30:00Z");
    assert_eq!(v["elapses"][1]["local"], "Sun 2026-03-29 01:30:00 CET");
    let bad = common::backchain().args(["calendar", "mon..fri 25:00"]).output().unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8(bad.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("byte 9") && err.contains("25 is outside 0..23"), "{err}");
}
