//! Schedules and the backup daemon's scheduler.
//!
//! Layout: [`calendar`] (systemd calendar events) and [`due`] (which
//! policies are due) are pure: no catalog, no clock. [`policy`] is the
//! policy document and its checks, [`store`] keeps policies in the catalog,
//! [`scheduler`] is the loop inside `backchain serve` (due policies → jobs
//! in the catalog's queue → a bounded set of running jobs), [`runner`] runs
//! one job (backup and prune, or verify; retries), [`notify`] sends
//! webhooks and [`metrics`] renders the Prometheus page. The clock is
//! injected ([`clock`]) so tests drive the scheduler with synthetic times.

pub mod calendar;
pub mod clock;
pub mod due;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod runner;
pub mod scheduler;
pub mod store;

pub use clock::{Clock, to_ts as anchor_ts};
pub use scheduler::{Scheduler, SchedulerOptions};
