//! The API's bearer token. Every request but `/health` needs it, on
//! loopback too: a local user must not drive a server that runs as root.
//! It comes from `--token-file`, or else from `REPO/api.token`, created on
//! first start with mode 0600 and refused when others can read it.

use super::ServeError;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The token file in a repository.
pub const TOKEN_FILE: &str = "api.token";
/// Shortest bearer token accepted.
const MIN_TOKEN_LEN: usize = 16;
/// Random bytes in a created token (hex-encoded).
const NEW_TOKEN_BYTES: usize = 32;

/// Reads a token file: its first line, trimmed.
pub fn read(path: &Path) -> Result<String, ServeError> {
    let text = std::fs::read_to_string(path).map_err(|e| ServeError::Config(format!("{}: {e}", path.display())))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.len() < MIN_TOKEN_LEN {
        return Err(ServeError::Config(format!(
            "{}: the token must be at least {MIN_TOKEN_LEN} characters",
            path.display()
        )));
    }
    Ok(token)
}

/// The token to require and the file it is in: `token_file`, or the
/// repository's own, created when missing.
pub fn load_or_create(repo: &Path, token_file: Option<&Path>) -> Result<(String, PathBuf), ServeError> {
    if let Some(f) = token_file {
        return Ok((read(f)?, f.to_path_buf()));
    }
    let path = repo.join(TOKEN_FILE);
    let cfg = |e: std::io::Error| ServeError::Config(format!("{}: {e}", path.display()));
    match std::fs::metadata(&path) {
        Ok(m) => {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(ServeError::Config(format!(
                    "{} can be read by other users (mode {mode:04o}): run chmod 600 on it, or delete it for a new one",
                    path.display()
                )));
            }
            Ok((read(&path)?, path))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = crate::util::random::hex(NEW_TOKEN_BYTES).map_err(cfg)?;
            let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(cfg)?;
            f.write_all(format!("{token}\n").as_bytes()).map_err(cfg)?;
            f.sync_all().map_err(cfg)?;
            eprintln!("backchain: created the API token in {} (mode 0600)", path.display());
            Ok((token, path))
        }
        Err(e) => Err(cfg(e)),
    }
}
