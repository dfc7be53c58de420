//! `nbd-export TARGET [--listen ADDR] [--writable]`: serves one disk, or
//! each disk of a backup, read-only over NBD in the foreground until
//! Ctrl-C (or SIGTERM). Each export gets a random 128-bit name, printed in
//! its URI on stdout: NBD has no authentication, the name is the key.

use super::{CliError, target, with_repo};
use backchain::block::{ReadAt, Slice};
use backchain::nbd::server::{Export, ExportTable, Listener, ReadOnly, run};
use backchain::qcow2::{self, OpenOptions};
use futures_util::future::select;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;

pub fn nbd_export(repo: Option<PathBuf>, target: &str, listen: &str, writable: bool) -> Result<(), CliError> {
    if writable {
        return Err(CliError::msg("--writable needs the write overlay, which is not built yet: export read-only"));
    }
    check_listen(listen)?;
    // `_guard`: a backup's reader lock, held for as long as it is exported.
    let (disks, _guard): (Vec<(usize, PathBuf, Option<u64>)>, _) = match target::parse(target) {
        target::Target::Image(p) => (vec![(0, p, None)], None),
        target::Target::Backup { id, disk } => with_repo(repo, |r| {
            let (images, guard) = target::backup_images(r, &id, disk)?;
            Ok((images.into_iter().map(|(i, p, size)| (i, p, Some(size))).collect(), Some(guard)))
        })?,
    };
    let table = ExportTable::new();
    let mut names = Vec::new();
    for (index, path, size) in &disks {
        let name = random_name()?;
        table.insert(&name, open(path, *size)?);
        names.push((*index, name));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let listener =
            Listener::bind(listen).await.map_err(|e| CliError::msg(format!("NBD listen on {listen}: {e}")))?;
        let addr = listener.local_addr()?;
        for (index, name) in &names {
            outln!("disk-{index} {}", uri(&addr, name));
        }
        eprintln!("backchain: serving {} disk(s) over NBD on {addr} (Ctrl-C stops)", names.len());
        run(listener, table, stop_signal()).await?;
        Ok(())
    })
}

/// Plaintext NBD is only for this host: loopback or a unix socket. (TLS
/// for other addresses is the daemon's job, not built yet.)
fn check_listen(listen: &str) -> Result<(), CliError> {
    if listen.starts_with("unix:") {
        return Ok(());
    }
    let loopback = listen
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip().is_loopback())
        .unwrap_or_else(|_| listen.starts_with("localhost:"));
    if loopback {
        Ok(())
    } else {
        Err(CliError::msg(format!("NBD without TLS listens only on loopback or unix:PATH, not {listen}")))
    }
}

fn open(path: &Path, size: Option<u64>) -> Result<Arc<dyn Export>, CliError> {
    if !path.exists() {
        return Err(CliError::msg(format!("{}: no such image", path.display())));
    }
    let reader = qcow2::open_disk(path, &OpenOptions::default())?;
    // A backup's disk size is the catalog's (a raw image may be padded).
    let reader: Arc<dyn ReadAt> = match size {
        Some(s) if s < reader.size() => Arc::new(Slice::new(reader, 0, s)?),
        _ => reader,
    };
    Ok(Arc::new(ReadOnly(reader)))
}

/// 128 random bits from the kernel, as hex.
fn random_name() -> Result<String, CliError> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn uri(addr: &str, name: &str) -> String {
    match addr.strip_prefix("unix:") {
        Some(path) => format!("nbd+unix:///{name}?socket={path}"),
        None => format!("nbd://{addr}/{name}"),
    }
}

async fn stop_signal() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    let _ = select(pin!(tokio::signal::ctrl_c()), pin!(term.recv())).await;
}
