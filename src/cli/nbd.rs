//! `nbd-export TARGET [--listen ADDR] [--writable]`: serves one disk, or
//! each disk of a backup, over NBD in the foreground until Ctrl-C (or
//! SIGTERM). Each export gets a random 128-bit name, printed in its URI on
//! stdout: NBD has no authentication, the name is the key. A backup's
//! points are held (shared lock) so they cannot be deleted meanwhile.
//! `--writable` puts the writes into a throw-away overlay, deleted on exit
//! (the daemon's `POST /exports` keeps overlays across restarts).

use super::{CliError, target, with_repo};
use backchain::block::{ReadAt, Slice};
use backchain::nbd::server::{Export, ExportTable, Listener, ReadOnly, is_local, run};
use backchain::qcow2::{self, OpenOptions, Overlay};
use backchain::restore::exports::OverlayExport;
use futures_util::future::select;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;

pub fn nbd_export(repo: Option<PathBuf>, target: &str, listen: &str, writable: bool) -> Result<(), CliError> {
    if !is_local(listen) {
        return Err(CliError::msg(format!("NBD without TLS listens only on loopback or unix:PATH, not {listen}")));
    }
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
    let mut overlays = Vec::new();
    for (index, path, size) in &disks {
        let name = backchain::util::random::hex(16)?;
        let reader = open(path, *size)?;
        let export: Arc<dyn Export> = if writable {
            let (export, file) = overlay(reader, path)?;
            overlays.push(file);
            export
        } else {
            Arc::new(ReadOnly(reader))
        };
        table.insert(&name, export);
        names.push((*index, name));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let listener =
            Listener::bind(listen).await.map_err(|e| CliError::msg(format!("NBD listen on {listen}: {e}")))?;
        let addr = listener.local_addr()?;
        for (index, name) in &names {
            outln!("disk-{index} {}", backchain::nbd::uri::for_listener(&addr, name, false));
        }
        eprintln!("backchain: serving {} disk(s) over NBD on {addr} (Ctrl-C stops)", names.len());
        run(listener, table, stop_signal()).await?;
        Ok(())
    })
}

fn open(path: &Path, size: Option<u64>) -> Result<Arc<dyn ReadAt>, CliError> {
    if !path.exists() {
        return Err(CliError::msg(format!("{}: no such image", path.display())));
    }
    let reader = qcow2::open_disk(path, &OpenOptions::default())?;
    // A backup's disk size is the catalog's (a raw image may be padded).
    Ok(match size {
        Some(s) if s < reader.size() => Arc::new(Slice::new(reader, 0, s)?),
        _ => reader,
    })
}

/// A throw-away overlay over `base` (the image at `image`), in the
/// temporary folder; deleted when the returned guard drops.
fn overlay(base: Arc<dyn ReadAt>, image: &Path) -> Result<(Arc<dyn Export>, Scratch), CliError> {
    let file =
        Scratch(std::env::temp_dir().join(format!("backchain-overlay-{}.qcow2", backchain::util::random::hex(8)?)));
    let backing = std::fs::canonicalize(image)?;
    let o = Overlay::create(&file.0, base, &backing.to_string_lossy())?;
    Ok((Arc::new(OverlayExport(o)), file))
}

/// A file removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn stop_signal() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    let _ = select(pin!(tokio::signal::ctrl_c()), pin!(term.recv())).await;
}
