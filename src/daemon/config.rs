//! `serve`'s settings: command-line flags over an optional TOML file over
//! the defaults. The file takes the flags' names with `_` for `-`:
//!
//! ```toml
//! listen = "127.0.0.1:8082"
//! token_file = "/etc/backchain/token"
//! source_dir = ["/var/lib/libvirt/images"]
//! max_jobs = 2
//! job_history_days = 90
//! shutdown_grace_secs = 60
//! nbd_listen = "127.0.0.1:10809"
//! push_idle_secs = 3600
//! ```
//!
//! An unknown key or a value of the wrong type is an error naming it, so a
//! typo never silently falls back to a default.

use super::ServeError;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Longest config file read (a real one is a few hundred bytes).
const MAX_CONFIG: u64 = 1 << 20;

/// Every setting, each optional: the flags given, or the file's keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub listen: Option<String>,
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub source_dir: Vec<PathBuf>,
    pub mount: Option<PathBuf>,
    pub demo: Option<bool>,
    pub session_idle: Option<u64>,
    pub max_sessions: Option<usize>,
    pub max_jobs: Option<usize>,
    pub job_history_days: Option<u32>,
    pub shutdown_grace_secs: Option<u64>,
    pub nbd_listen: Option<String>,
    pub push_idle_secs: Option<u64>,
    pub nbd_tls_cert: Option<PathBuf>,
    pub nbd_tls_key: Option<PathBuf>,
}

impl Settings {
    /// Reads a config file.
    pub fn read(path: &Path) -> Result<Settings, ServeError> {
        use std::io::Read;
        let bad = |e: String| ServeError::Config(format!("config file {}: {e}", path.display()));
        let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        let mut text = String::new();
        file.take(MAX_CONFIG + 1).read_to_string(&mut text).map_err(|e| bad(e.to_string()))?;
        if text.len() as u64 > MAX_CONFIG {
            return Err(bad(format!("larger than {MAX_CONFIG} bytes")));
        }
        toml::from_str(&text).map_err(|e| bad(e.to_string().trim_end().replace('\n', " ")))
    }

    /// `self` (the flags) where set, else `file`.
    pub fn over(self, file: Settings) -> Settings {
        Settings {
            listen: self.listen.or(file.listen),
            token_file: self.token_file.or(file.token_file),
            source_dir: if self.source_dir.is_empty() { file.source_dir } else { self.source_dir },
            mount: self.mount.or(file.mount),
            demo: self.demo.or(file.demo),
            session_idle: self.session_idle.or(file.session_idle),
            max_sessions: self.max_sessions.or(file.max_sessions),
            max_jobs: self.max_jobs.or(file.max_jobs),
            job_history_days: self.job_history_days.or(file.job_history_days),
            shutdown_grace_secs: self.shutdown_grace_secs.or(file.shutdown_grace_secs),
            nbd_listen: self.nbd_listen.or(file.nbd_listen),
            push_idle_secs: self.push_idle_secs.or(file.push_idle_secs),
            nbd_tls_cert: self.nbd_tls_cert.or(file.nbd_tls_cert),
            nbd_tls_key: self.nbd_tls_key.or(file.nbd_tls_key),
        }
    }
}

impl super::Config {
    /// The settings with the defaults filled in.
    pub fn from_settings(repo: PathBuf, s: Settings) -> super::Config {
        use crate::schedule::scheduler::{DEFAULT_HISTORY_DAYS, DEFAULT_MAX_JOBS, DEFAULT_SHUTDOWN_GRACE};
        use std::time::Duration;
        super::Config {
            repo,
            listen: s.listen.unwrap_or_else(|| super::DEFAULT_LISTEN.to_string()),
            token_file: s.token_file,
            mount: s.mount,
            demo: s.demo.unwrap_or(false),
            session_idle: Duration::from_secs(s.session_idle.unwrap_or(super::DEFAULT_IDLE_SECS)),
            max_sessions: s.max_sessions.unwrap_or(super::DEFAULT_MAX_SESSIONS),
            source_dirs: s.source_dir,
            max_jobs: s.max_jobs.unwrap_or(DEFAULT_MAX_JOBS),
            job_history_days: s.job_history_days.unwrap_or(DEFAULT_HISTORY_DAYS),
            shutdown_grace: s.shutdown_grace_secs.map_or(DEFAULT_SHUTDOWN_GRACE, Duration::from_secs),
            nbd_listen: s.nbd_listen.unwrap_or_else(|| crate::nbd::server::DEFAULT_LISTEN.to_string()),
            push_idle: s.push_idle_secs.map_or(crate::engine::push::DEFAULT_IDLE, Duration::from_secs),
            nbd_tls_cert: s.nbd_tls_cert,
            nbd_tls_key: s.nbd_tls_key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_keys_flags_win_and_typos_are_named() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("serve.toml");
        std::fs::write(&f, "listen = \"127.0.0.1:9\"\nmax_jobs = 4\nsource_dir = [\"/srv\"]\n").unwrap();
        let file = Settings::read(&f).unwrap();
        let flags = Settings { max_jobs: Some(1), ..Default::default() };
        let s = flags.over(file);
        assert_eq!(s.listen.as_deref(), Some("127.0.0.1:9"));
        assert_eq!(s.max_jobs, Some(1));
        assert_eq!(s.source_dir, vec![PathBuf::from("/srv")]);
        std::fs::write(&f, "max_job = 4\n").unwrap();
        let e = Settings::read(&f).unwrap_err().to_string();
        assert!(e.contains("max_job"), "{e}");
        std::fs::write(&f, "max_jobs = \"two\"\n").unwrap();
        let e = Settings::read(&f).unwrap_err().to_string();
        assert!(e.contains("max_jobs") || e.contains("invalid type"), "{e}");
    }
}
