//! The daemon's side of restore-point exports and NBD security: plaintext
//! NBD only on loopback or a unix socket (mode 0600); any other address
//! needs TLS (`--nbd-tls-cert` and `--nbd-tls-key`), or serve refuses to
//! start with one line. Exports the catalog records are served again.

use super::ServeError;
use crate::nbd::server::{ExportTable, Tls, is_local};
use crate::repo::Repo;
use crate::restore::exports::Exports;
use std::path::Path;
use std::sync::Arc;

/// Loads the TLS side and checks that plaintext stays on this host: before
/// anything else starts, so a refusal is the one line serve prints.
pub fn tls(listen: &str, cert: Option<&Path>, key: Option<&Path>) -> Result<Option<Tls>, ServeError> {
    let tls = match (cert, key) {
        (None, None) => None,
        (Some(c), Some(k)) => Some(Tls::from_pem_files(c, k).map_err(|e| ServeError::Config(format!("NBD TLS: {e}")))?),
        _ => return Err(ServeError::Config("--nbd-tls-cert and --nbd-tls-key go together".into())),
    };
    if tls.is_none() && !is_local(listen) {
        return Err(ServeError::Config(format!(
            "NBD listener {listen} is not loopback: give --nbd-tls-cert and --nbd-tls-key (NBD off loopback requires TLS)"
        )));
    }
    Ok(tls)
}

/// The exports of `table` (served at `addr`), with those the catalog
/// records served again.
pub async fn start(repo: Arc<Repo>, table: ExportTable, addr: &str, tls: bool) -> Result<Arc<Exports>, ServeError> {
    let exports = Arc::new(Exports::new(repo, table, addr, tls));
    let again = exports.clone();
    let failed = tokio::task::spawn_blocking(move || again.restore_recorded())
        .await
        .map_err(|e| ServeError::Config(format!("restoring exports: {e}")))?
        .map_err(|e| ServeError::Config(format!("restoring exports: {e}")))?;
    for (id, why) in failed {
        eprintln!("backchain: export {id} is recorded but cannot be served: {why}");
    }
    Ok(exports)
}
