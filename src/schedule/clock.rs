//! The scheduler's clock: the system's, or one a test sets. Schedules,
//! anchors and retry delays follow it; the job history's own times are
//! always the system's (they say when work really happened).

use crate::util::lock;
use crate::util::time::UtcTime;
use jiff::Timestamp;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct Clock(Option<Arc<Mutex<Timestamp>>>);

impl Clock {
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that stands at `t` until [`Clock::set`] moves it.
    pub fn manual(t: Timestamp) -> Clock {
        Clock(Some(Arc::new(Mutex::new(t))))
    }

    pub fn is_manual(&self) -> bool {
        self.0.is_some()
    }

    pub fn now(&self) -> Timestamp {
        match &self.0 {
            Some(t) => *lock(t),
            None => Timestamp::now(),
        }
    }

    /// Moves a manual clock (the system clock cannot be moved: false).
    pub fn set(&self, t: Timestamp) -> bool {
        match &self.0 {
            Some(m) => {
                *lock(m) = t;
                true
            }
            None => false,
        }
    }
}

/// A catalog time as a timestamp.
pub fn to_ts(t: UtcTime) -> Timestamp {
    Timestamp::new(t.secs, t.nanos.min(999_999_999) as i32).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A timestamp as a catalog time, to the millisecond the catalog stores.
pub fn to_utc(t: Timestamp) -> UtcTime {
    let nanos = t.subsec_nanosecond();
    let (secs, nanos) = if nanos < 0 { (t.as_second() - 1, nanos + 1_000_000_000) } else { (t.as_second(), nanos) };
    UtcTime { secs, nanos: (nanos as u32 / 1_000_000) * 1_000_000 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_keep_milliseconds() {
        for s in ["2026-01-01T00:00:00Z", "2026-03-29T01:59:59.250Z", "1969-12-31T23:59:59.500Z"] {
            let t: Timestamp = s.parse().unwrap();
            assert_eq!(to_ts(to_utc(t)), t, "{s}");
            assert_eq!(to_utc(t).to_string().replace(".000", ""), s.replace(".000", ""));
        }
        let c = Clock::manual("2026-01-01T00:00:00Z".parse().unwrap());
        assert!(c.set("2026-01-02T00:00:00Z".parse().unwrap()));
        assert_eq!(c.now().to_string(), "2026-01-02T00:00:00Z");
        assert!(!Clock::system().set(Timestamp::UNIX_EPOCH));
    }
}
