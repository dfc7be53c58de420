//! The daemon's NBD listener: one port for every export (restore-point
//! exports now; the push target's exports share the table). Plaintext only
//! on loopback or a unix socket (mode 0600); any other address needs TLS
//! (`--nbd-tls-cert` and `--nbd-tls-key`), or serve refuses to start.

use super::ServeError;
use crate::nbd::server::{DEFAULT_LISTEN, ExportTable, Listener, Tls, is_local};
use crate::repo::Repo;
use crate::restore::exports::Exports;
use std::path::PathBuf;
use std::sync::Arc;

/// What `serve` was asked for about NBD.
#[derive(Debug, Clone, Default)]
pub struct NbdConfig {
    /// `HOST:PORT` or `unix:PATH`; `None`: [`DEFAULT_LISTEN`], skipped with
    /// a warning when that port is taken.
    pub listen: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// A bound NBD listener and the exports it serves.
pub struct NbdListener {
    pub listener: Listener,
    pub table: ExportTable,
    pub tls: Option<Tls>,
    pub exports: Arc<Exports>,
}

/// Loads the TLS side and checks that plaintext stays on this host: before
/// anything else starts, so a refusal is the one line serve prints.
pub fn tls(cfg: &NbdConfig) -> Result<Option<Tls>, ServeError> {
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (None, None) => None,
        (Some(c), Some(k)) => Some(Tls::from_pem_files(c, k).map_err(|e| ServeError::Config(format!("NBD TLS: {e}")))?),
        _ => return Err(ServeError::Config("--nbd-tls-cert and --nbd-tls-key go together".into())),
    };
    let addr = cfg.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    if tls.is_none() && !is_local(addr) {
        return Err(ServeError::Config(format!(
            "NBD listener {addr} is not loopback: give --nbd-tls-cert and --nbd-tls-key (NBD off loopback requires TLS)"
        )));
    }
    Ok(tls)
}

/// Binds the listener (inside the runtime) and serves again the exports
/// the catalog records. `Ok(None)`: the default port is taken.
pub async fn bind(repo: Arc<Repo>, cfg: &NbdConfig, tls: Option<Tls>) -> Result<Option<NbdListener>, ServeError> {
    let addr = cfg.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listener = match Listener::bind(addr).await {
        Ok(l) => l,
        Err(e) if cfg.listen.is_none() => {
            eprintln!("backchain: NBD not served: {addr}: {e} (choose a port with --nbd-listen)");
            return Ok(None);
        }
        Err(e) => return Err(ServeError::Config(format!("--nbd-listen {addr}: {e}"))),
    };
    let local = listener.local_addr()?;
    let table = ExportTable::new();
    let exports = Arc::new(Exports::new(repo, table.clone(), &local, tls.is_some()));
    let failed = tokio::task::spawn_blocking({
        let exports = exports.clone();
        move || exports.restore_recorded()
    })
    .await
    .map_err(|e| ServeError::Config(format!("restoring exports: {e}")))?
    .map_err(|e| ServeError::Config(format!("restoring exports: {e}")))?;
    for (id, why) in failed {
        eprintln!("backchain: export {id} is recorded but cannot be served: {why}");
    }
    let kind = if tls.is_some() { "NBD (TLS required)" } else { "NBD" };
    eprintln!("backchain: {kind} on {local}");
    Ok(Some(NbdListener { listener, table, tls, exports }))
}
