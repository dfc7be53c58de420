//! Protection policies: the document the API and the CLI take, and every
//! check made before one is stored.
//!
//! A policy names VMs (each with its disk sources), a calendar schedule,
//! retention (the prune options), an optional verify schedule, retries and
//! a webhook. Field names are DESIGN.md's (`POST /policies`); unknown
//! fields are refused, so a typo (`keep_lats`) is an error rather than a
//! policy that silently keeps everything.

use super::calendar::{CalendarError, CalendarEvent};
use crate::engine::retention::KeepOptions;
use crate::source::confine::{Confinement, Refused};
use serde::{Deserialize, Serialize};

/// Most VMs in one policy, and disks in one VM (bounds what a request can
/// make the scheduler do).
pub const MAX_VMS: usize = 256;
pub const MAX_DISKS: usize = 64;
/// Most retries of a failed VM, and the longest delay between them.
pub const MAX_RETRIES: u32 = 10;
pub const MAX_RETRY_DELAY_SECS: u64 = 86_400;
/// Veeam's defaults: three retries, ten minutes apart.
pub const DEFAULT_RETRIES: u32 = 3;
pub const DEFAULT_RETRY_DELAY_SECS: u64 = 600;
const MAX_SOURCE_LEN: usize = 4096;
const MAX_URL_LEN: usize = 2048;

/// A disk of a VM: where it is read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    pub vm_name: String,
    pub disks: Vec<DiskSpec>,
}

/// Retention: the prune options. All unset keeps everything (no prune runs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
}

impl From<KeepOptions> for Retention {
    fn from(k: KeepOptions) -> Self {
        Retention {
            keep_last: k.keep_last,
            keep_hourly: k.keep_hourly,
            keep_daily: k.keep_daily,
            keep_weekly: k.keep_weekly,
            keep_monthly: k.keep_monthly,
            keep_yearly: k.keep_yearly,
        }
    }
}

impl Retention {
    pub fn keep(&self) -> KeepOptions {
        KeepOptions {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
        }
    }

    /// No option set (or all zero): keep everything, never prune.
    pub fn keeps_everything(&self) -> bool {
        let k = self.keep();
        [k.keep_last, k.keep_hourly, k.keep_daily, k.keep_weekly, k.keep_monthly, k.keep_yearly]
            .iter()
            .all(|o| o.unwrap_or(0) == 0)
    }
}

/// When the webhook is called.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyOn {
    /// Only when a job fails for good (after its retries) or is interrupted.
    #[default]
    Failure,
    /// After every job.
    Always,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://HOST[:PORT]/PATH` (plain HTTP: put a TLS proxy in front for
    /// a remote receiver).
    pub url: String,
    #[serde(default)]
    pub on: NotifyOn,
}

fn yes() -> bool {
    true
}
fn default_retries() -> u32 {
    DEFAULT_RETRIES
}
fn default_retry_delay() -> u64 {
    DEFAULT_RETRY_DELAY_SECS
}

/// A protection policy as stored (the JSON of `POST /policies`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub name: String,
    pub vms: Vec<VmSpec>,
    /// A calendar event (docs/schedule.md).
    pub schedule: String,
    #[serde(default)]
    pub retention: Retention,
    /// When to re-read and check the VMs' backups; none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_schedule: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Retries of a failed VM (only the failed VMs are retried).
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_retry_delay")]
    pub retry_delay_secs: u64,
    /// Run once at start when a run was missed while the daemon was down
    /// (PBS's `repeat-missed`, systemd's `Persistent=`).
    #[serde(default)]
    pub repeat_missed: bool,
    /// Start a new full chain once a disk's chain holds this many images
    /// (Veeam's "active full"); none: incrementals forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_every: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
}

/// Why a policy was refused. `Invalid` is a 400, `Forbidden` a 403.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("{0}")]
    Invalid(String),
    #[error("bad schedule: {0}")]
    Schedule(CalendarError),
    #[error("bad verify_schedule: {0}")]
    VerifySchedule(CalendarError),
    #[error("policy {policy}, VM {vm}: {refused}")]
    Forbidden { policy: String, vm: String, refused: Refused },
}

/// A policy that passed [`PolicySpec::check`], with its events parsed.
#[derive(Debug, Clone)]
pub struct Policy {
    pub spec: PolicySpec,
    pub schedule: CalendarEvent,
    pub verify: Option<CalendarEvent>,
}

/// Policy names share the VM names' alphabet (they appear in URLs, logs
/// and metrics labels).
fn check_name(name: &str) -> Result<(), PolicyError> {
    crate::repo::check_vm_name(name)
        .map_err(|e| PolicyError::Invalid(e.to_string().replacen("invalid VM name", "invalid policy name", 1)))
}

impl PolicySpec {
    /// Parses a policy document (JSON), refusing unknown fields.
    pub fn from_json(text: &[u8]) -> Result<PolicySpec, PolicyError> {
        serde_json::from_slice(text).map_err(|e| PolicyError::Invalid(format!("invalid policy document: {e}")))
    }

    /// Every check but the sources' confinement: names, counts, the
    /// schedules, retries, the webhook URL and the form of each source.
    /// `confine` (the server's `--source-dir` roots) is applied to local
    /// sources when given; the CLI passes `None`.
    pub fn check(self, confine: Option<&Confinement>) -> Result<Policy, PolicyError> {
        for vm in &self.vms {
            for d in &vm.disks {
                check_source(&d.source).map_err(|m| PolicyError::Invalid(format!("VM {}: {m}", vm.vm_name)))?;
                if let Some(c) = confine {
                    c.check(&d.source).map_err(|refused| match refused {
                        Refused::Unreadable(..) => PolicyError::Invalid(format!("VM {}: {refused}", vm.vm_name)),
                        refused => {
                            PolicyError::Forbidden { policy: self.name.clone(), vm: vm.vm_name.clone(), refused }
                        }
                    })?;
                }
            }
        }
        self.check_stored()
    }

    /// The checks that do not look at the sources: for a stored policy,
    /// whose sources were checked when it was stored and may be missing
    /// now (a run then fails with the reason, and is retried).
    pub fn check_stored(self) -> Result<Policy, PolicyError> {
        let bad = |m: String| Err(PolicyError::Invalid(m));
        check_name(&self.name)?;
        let schedule = CalendarEvent::parse(&self.schedule).map_err(PolicyError::Schedule)?;
        let verify = self
            .verify_schedule
            .as_deref()
            .map(CalendarEvent::parse)
            .transpose()
            .map_err(PolicyError::VerifySchedule)?;
        if self.vms.is_empty() || self.vms.len() > MAX_VMS {
            return bad(format!("policy {}: give 1 to {MAX_VMS} VMs", self.name));
        }
        if self.retries > MAX_RETRIES {
            return bad(format!("retries {}: at most {MAX_RETRIES}", self.retries));
        }
        if self.retry_delay_secs > MAX_RETRY_DELAY_SECS {
            return bad(format!("retry_delay_secs {}: at most {MAX_RETRY_DELAY_SECS} (a day)", self.retry_delay_secs));
        }
        if self.full_every == Some(0) {
            return bad("full_every must be at least 1 (1: every backup is a full)".into());
        }
        if let Some(w) = &self.webhook {
            check_webhook_url(&w.url)?;
        }
        let mut seen = std::collections::HashSet::new();
        for vm in &self.vms {
            crate::repo::check_vm_name(&vm.vm_name).map_err(|e| PolicyError::Invalid(e.to_string()))?;
            if !seen.insert(vm.vm_name.as_str()) {
                return bad(format!("VM {} is listed twice in policy {}", vm.vm_name, self.name));
            }
            if vm.disks.is_empty() || vm.disks.len() > MAX_DISKS {
                return bad(format!("VM {}: give 1 to {MAX_DISKS} disks", vm.vm_name));
            }
        }
        Ok(Policy { spec: self, schedule, verify })
    }

    /// The VM names, in order.
    pub fn vm_names(&self) -> Vec<String> {
        self.vms.iter().map(|v| v.vm_name.clone()).collect()
    }
}

/// A source is an NBD URI that parses, or an absolute path to something
/// that exists and is not a folder (the daemon's working folder is not the
/// admin's, so relative paths would mean something else at run time).
fn check_source(source: &str) -> Result<(), String> {
    if source.is_empty() || source.len() > MAX_SOURCE_LEN {
        return Err(format!("a disk source must be 1 to {MAX_SOURCE_LEN} bytes"));
    }
    if crate::nbd::uri::is_nbd_uri(source) {
        return crate::nbd::NbdUri::parse(source).map(|_| ()).map_err(|e| e.to_string());
    }
    if source.contains("://") {
        return Err(format!("source {source:?}: only nbd:// and nbd+unix:// URIs, or local paths"));
    }
    let path = std::path::Path::new(source);
    if !path.is_absolute() {
        return Err(format!("source {source:?} must be an absolute path"));
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(format!("source {source:?} is a folder, not a disk")),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("source {source:?}: {e}")),
    }
}

/// `http://HOST[:PORT]/PATH`: the form the notifier can send to.
pub fn check_webhook_url(url: &str) -> Result<(), PolicyError> {
    let bad = |why: &str| Err(PolicyError::Invalid(format!("webhook url {url:?}: {why}")));
    if url.len() > MAX_URL_LEN {
        return bad("too long");
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return bad("must start with http:// (https is not supported: use a local TLS proxy)");
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("expected http://HOST[:PORT]/PATH");
    }
    if let Some((_, port)) = authority.rsplit_once(':')
        && !authority.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return bad("bad port");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(extra: &str) -> String {
        format!(
            r#"{{"name":"p","vms":[{{"vm_name":"a","disks":[{{"source":"nbd://h/e"}}]}}],"schedule":"daily"{extra}}}"#
        )
    }

    #[test]
    fn defaults_and_round_trip() {
        let p = PolicySpec::from_json(doc("").as_bytes()).unwrap();
        assert!(p.enabled && !p.repeat_missed);
        assert_eq!((p.retries, p.retry_delay_secs), (DEFAULT_RETRIES, DEFAULT_RETRY_DELAY_SECS));
        assert!(p.retention.keeps_everything());
        let again = PolicySpec::from_json(&serde_json::to_vec(&p).unwrap()).unwrap();
        assert_eq!(again, p);
        p.check(None).unwrap();
    }

    #[test]
    fn refusals_name_their_fault() {
        let cases = [
            (doc(r#","retention":{"keep_lats":2}"#), "unknown field `keep_lats`"),
            (doc(r#","schedule":"*:*:0/2 Mars/Base""#), "duplicate field"),
            (doc(r#","retries":11"#), "retries 11"),
            (doc(r#","full_every":0"#), "full_every"),
            (doc(r#","webhook":{"url":"https://x/"}"#), "http://"),
            (doc(r#","webhook":{"url":"http://h:99999/"}"#), "bad port"),
            (doc(r#","verify_schedule":"mon..xyz""#), "bad verify_schedule"),
        ];
        for (text, want) in cases {
            let e = PolicySpec::from_json(text.as_bytes()).and_then(|p| p.check(None)).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        let bad_schedule = doc("").replace("daily", "mon..fri 25:00");
        let e = PolicySpec::from_json(bad_schedule.as_bytes()).unwrap().check(None).unwrap_err();
        assert!(matches!(e, PolicyError::Schedule(_)), "{e}");
        assert!(e.to_string().contains("25"), "{e}");
        for (vms, want) in [
            (r#"[]"#, "1 to 256 VMs"),
            (r#"[{"vm_name":"a","disks":[]}]"#, "1 to 64 disks"),
            (r#"[{"vm_name":"../x","disks":[{"source":"nbd://h/e"}]}]"#, "invalid VM name"),
            (r#"[{"vm_name":"a","disks":[{"source":"relative.img"}]}]"#, "absolute path"),
            (r#"[{"vm_name":"a","disks":[{"source":"/nonexistent/x.img"}]}]"#, "No such file"),
            (r#"[{"vm_name":"a","disks":[{"source":"/tmp"}]}]"#, "folder"),
            (r#"[{"vm_name":"a","disks":[{"source":"nbd://h/e?x=1"}]}]"#, "unknown or empty query"),
            (r#"[{"vm_name":"a","disks":[{"source":"http://h/e"}]}]"#, "only nbd://"),
        ] {
            let text = format!(r#"{{"name":"p","vms":{vms},"schedule":"daily"}}"#);
            let e = PolicySpec::from_json(text.as_bytes()).unwrap().check(None).unwrap_err().to_string();
            assert!(e.contains(want), "{vms}: {e}");
        }
    }

    #[test]
    fn confined_sources_are_forbidden_outside_the_roots() {
        let d = tempfile::tempdir().unwrap();
        let disk = d.path().join("a.img");
        std::fs::write(&disk, b"x").unwrap();
        let text = doc("").replace("nbd://h/e", disk.to_str().unwrap());
        let p = PolicySpec::from_json(text.as_bytes()).unwrap();
        let none = Confinement::new(&[]);
        assert!(matches!(p.clone().check(Some(&none)), Err(PolicyError::Forbidden { .. })));
        let root = Confinement::new(&[d.path().to_path_buf()]);
        p.check(Some(&root)).unwrap();
    }
}
