//! `calendar EXPR`: the normalized form and next elapses of a calendar
//! event, laid out as `systemd-analyze calendar` does (without its
//! "From now" lines), or as JSON.

use super::CliError;
use backchain::schedule::calendar::{CalendarEvent, SpecZone};
use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

/// Most elapses one call prints.
pub const MAX_ITERATIONS: usize = 10_000;

#[derive(clap::Args)]
pub struct CalendarArgs {
    /// A systemd.time(7) calendar event, e.g. 'mon..fri 02:00' or '*:0/15'.
    expr: String,
    /// How many elapses to show.
    #[arg(long, default_value_t = 1)]
    iterations: usize,
    /// Count from this time instead of now: RFC 3339 ('2026-03-29T01:00:00Z'),
    /// 'YYYY-MM-DD HH:MM[:SS]' in local time (or with a ' UTC' suffix), or '@EPOCH'.
    #[arg(long)]
    base_time: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Elapse {
    /// RFC 3339, UTC.
    utc: String,
    /// As systemd prints it, in local time.
    local: String,
}

#[derive(serde::Serialize)]
struct Report<'a> {
    original: &'a str,
    normalized: String,
    /// "local", "UTC" or the zone name of the suffix.
    zone: &'a str,
    base_time: String,
    elapses: Vec<Elapse>,
}

/// A base time as the flag's help describes it.
fn parse_base(s: &str, local: &TimeZone) -> Result<Timestamp, CliError> {
    let bad = || CliError::msg(format!("bad --base-time {s:?}: use RFC 3339, 'YYYY-MM-DD HH:MM[:SS]' or '@EPOCH'"));
    if let Some(secs) = s.strip_prefix('@') {
        let secs: i64 = secs.parse().map_err(|_| bad())?;
        return Timestamp::from_second(secs).map_err(|_| bad());
    }
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Ok(ts);
    }
    let (civil, tz) = match s.strip_suffix(" UTC") {
        Some(rest) => (rest, TimeZone::UTC),
        None => (s, local.clone()),
    };
    let dt: DateTime = civil.parse().map_err(|_| bad())?;
    dt.to_zoned_datetime(tz).map(|z| z.timestamp()).map_err(|_| bad())
}

/// `Mon 2026-03-30 02:30:00 CEST`, systemd's timestamp format.
fn systemd_time(ts: Timestamp, tz: &TimeZone) -> String {
    ts.to_zoned_datetime(tz.clone()).strftime("%a %Y-%m-%d %H:%M:%S %Z").to_string()
}

pub fn run(args: CalendarArgs) -> Result<(), CliError> {
    if args.iterations > MAX_ITERATIONS {
        return Err(CliError::msg(format!("--iterations {} is more than {MAX_ITERATIONS}", args.iterations)));
    }
    let local = TimeZone::system();
    let event = CalendarEvent::parse(&args.expr)?;
    let base = match &args.base_time {
        Some(s) => parse_base(s, &local)?,
        None => Timestamp::now(),
    };
    let elapses = event.elapses(base, &local, args.iterations);
    let normalized = event.to_string();
    if args.json {
        let zone = match event.zone() {
            SpecZone::Local => "local",
            SpecZone::Utc => "UTC",
            SpecZone::Named(name) => name,
        };
        let elapses = elapses.iter().map(|&t| Elapse { utc: t.to_string(), local: systemd_time(t, &local) }).collect();
        let report = Report { original: &args.expr, normalized, zone, base_time: base.to_string(), elapses };
        outln!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let line = |label: &str, value: &str| outln!("{label:>16} {value}");
    if normalized != args.expr {
        line("Original form:", &args.expr);
    }
    line("Normalized form:", &normalized);
    if elapses.is_empty() {
        line("Next elapse:", "never");
    }
    // systemd leaves out the UTC lines when local time is UTC all year.
    let local_is_utc = local.to_offset(base).seconds() == 0 && local.following(base).next().is_none();
    for (i, &t) in elapses.iter().enumerate() {
        let label = if i == 0 { "Next elapse:".to_string() } else { format!("Iter. #{}:", i + 1) };
        line(&label, &systemd_time(t, &local));
        if !local_is_utc {
            line("(in UTC):", &systemd_time(t, &TimeZone::UTC));
        }
    }
    Ok(())
}
