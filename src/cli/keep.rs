//! The retention flags, shared by `prune` and `policy add`.

use backchain::engine::retention::KeepOptions;
use clap::Args;

#[derive(Args, Clone, Copy, Debug, Default)]
pub struct KeepArgs {
    /// Keep the N newest backups (--keep N is the same).
    #[arg(long, alias = "keep")]
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the last N hours with backups.
    #[arg(long)]
    pub keep_hourly: Option<u32>,
    #[arg(long)]
    pub keep_daily: Option<u32>,
    /// ISO weeks, Monday to Sunday.
    #[arg(long)]
    pub keep_weekly: Option<u32>,
    #[arg(long)]
    pub keep_monthly: Option<u32>,
    #[arg(long)]
    pub keep_yearly: Option<u32>,
}

impl KeepArgs {
    pub fn options(self) -> KeepOptions {
        KeepOptions {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
        }
    }
}
