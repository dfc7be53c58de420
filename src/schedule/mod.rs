//! Schedules: calendar expressions ([`calendar`]) and the pure core of the
//! policy scheduler ([`due`]), which decides from schedules, last runs and
//! the current time which policies are due and when to wake up next. Neither
//! touches the catalog or a clock: the daemon passes both in, so tests drive
//! them with synthetic times.

pub mod calendar;
pub mod due;
