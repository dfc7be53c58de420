//! Restore-point exports over NBD (instant recovery): any disk of any
//! completed backup served by the daemon's NBD listener, read-only or with
//! a write overlay, so a VM can boot straight from its backup.
//!
//! * Reads come from the restore point's chain; block status reports its
//!   holes. A writable export puts every write into an overlay
//!   (`REPO/exports/<export-id>.qcow2`, a QCOW2 naming the restore point's
//!   image as its backing file); the backup never changes.
//! * Exports are recorded in the catalog and come back when the daemon
//!   starts again ([`Exports::restore_recorded`]), overlay and all; an
//!   overlay is deleted only with its export.
//! * An open export holds its restore point's shared lock, and the catalog
//!   refuses to drop a backup an export names: it cannot be pruned or
//!   deleted from under a running VM.
//! * The NBD export name is 128 random bits and the only key to the
//!   export: it is handed to authenticated HTTP clients and never logged.
//!   The export id, which names the export in the API and in file names,
//!   is a different random value.

use crate::block::{ReadAt, Run};
use crate::catalog::{CatalogError, ExportRow};
use crate::nbd::server::{Export, ExportTable, ReadOnly, Writable};
use crate::qcow2::{self, Overlay};
use crate::repo::{Repo, RepoError};
use crate::util::flock::PointLock;
use crate::util::time::UtcTime;
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// Where overlays live, relative to the repository.
pub const OVERLAY_DIR: &str = "exports";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("export overlay: {0}")]
    Overlay(#[from] qcow2::Error),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("no export {0}")]
    NotFound(String),
    #[error("restore point {0} is being merged away; try again when the merge is done")]
    Busy(String),
}

/// An export as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportInfo {
    pub export_id: String,
    pub backup_id: String,
    pub disk_index: i64,
    pub writable: bool,
    pub size: u64,
    pub created_at: String,
    /// `nbd://HOST:PORT/NAME`, `nbds://…` with TLS, or `nbd+unix:///NAME?socket=…`.
    pub nbd_uri: String,
}

/// A writable export: reads and writes through its overlay.
pub struct OverlayExport(pub Overlay);

impl Export for OverlayExport {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(offset, buf)
    }
    fn status(&self, offset: u64, len: u64) -> io::Result<Run> {
        self.0.status(offset, len)
    }
    fn writer(&self) -> Option<&dyn Writable> {
        Some(self)
    }
}

impl Writable for OverlayExport {
    fn write_at(&self, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
        self.0.write_at(offset, data)?;
        if fua { self.0.flush() } else { Ok(()) }
    }
    fn write_zeroes(&self, offset: u64, len: u64, _punch: bool, fua: bool) -> io::Result<()> {
        self.0.write_zeroes(offset, len)?;
        if fua { self.0.flush() } else { Ok(()) }
    }
    fn trim(&self, offset: u64, len: u64, fua: bool) -> io::Result<()> {
        self.0.trim(offset, len)?;
        if fua { self.0.flush() } else { Ok(()) }
    }
    fn flush(&self) -> io::Result<()> {
        self.0.flush()
    }
}

/// One served export.
struct Open {
    row: ExportRow,
    size: u64,
    overlay: Option<Arc<OverlayExport>>,
    _lock: PointLock,
}

/// The restore-point exports of one daemon, over its NBD export table.
pub struct Exports {
    repo: Arc<Repo>,
    table: ExportTable,
    /// The NBD listener's address and whether it speaks TLS, for URIs.
    listener: Mutex<(String, bool)>,
    open: Mutex<BTreeMap<String, Open>>,
}

impl Exports {
    /// Exports served from `table`, whose listener is at `address`
    /// (`HOST:PORT` or `unix:PATH`).
    pub fn new(repo: Arc<Repo>, table: ExportTable, address: &str, tls: bool) -> Self {
        Self { repo, table, listener: Mutex::new((address.to_string(), tls)), open: Mutex::default() }
    }

    fn open_map(&self) -> MutexGuard<'_, BTreeMap<String, Open>> {
        crate::util::lock(&self.open)
    }

    fn info(&self, o: &Open) -> ExportInfo {
        let (addr, tls) = crate::util::lock(&self.listener).clone();
        ExportInfo {
            export_id: o.row.id.clone(),
            backup_id: o.row.backup_id.clone(),
            disk_index: o.row.disk_index,
            writable: o.row.writable,
            size: o.size,
            created_at: o.row.created_at.to_string(),
            nbd_uri: crate::nbd::uri::for_listener(&addr, &o.row.name, tls),
        }
    }

    /// Opens what `row` records: its restore point under a shared lock,
    /// and its overlay (made now when `fresh`).
    fn open_row(&self, row: ExportRow, fresh: bool) -> Result<(Open, Arc<dyn Export>), ExportError> {
        let lock = self.repo.read_lock(&row.backup_id)?;
        let point = self.repo.restore_point(&row.backup_id, Some(row.disk_index as usize))?;
        let disk = &point.disks[0];
        let base = point.open_disk(disk)?;
        let size = base.size();
        let (export, overlay): (Arc<dyn Export>, _) = match &row.overlay_path {
            Some(rel) => {
                let path = self.repo.path(rel);
                let overlay = if fresh {
                    Overlay::create(&path, base, &format!("../{}", disk.image_path))?
                } else {
                    Overlay::open(&path, base)?
                };
                let o = Arc::new(OverlayExport(overlay));
                (o.clone(), Some(o))
            }
            None => (Arc::new(ReadOnly(base)), None),
        };
        Ok((Open { row, size, overlay, _lock: lock }, export))
    }

    fn serve(&self, open: Open, export: Arc<dyn Export>) -> ExportInfo {
        self.table.insert(&open.row.name, export);
        let info = self.info(&open);
        self.open_map().insert(open.row.id.clone(), open);
        info
    }

    /// Exports disk `disk_index` of backup `backup_id`, recorded in the
    /// catalog so it outlives a restart.
    pub fn create(&self, backup_id: &str, disk_index: usize, writable: bool) -> Result<ExportInfo, ExportError> {
        let id = format!("exp-{}", crate::util::random::hex(8)?);
        let overlay_path = writable.then(|| format!("{OVERLAY_DIR}/{id}.qcow2"));
        if writable {
            let dir = self.repo.path(OVERLAY_DIR);
            std::fs::create_dir_all(&dir).map_err(|e| RepoError::io(&dir, e))?;
        }
        let row = ExportRow {
            id,
            name: crate::util::random::hex(16)?,
            backup_id: backup_id.to_string(),
            disk_index: disk_index as i64,
            writable,
            overlay_path,
            created_at: UtcTime::now(),
        };
        let remove_overlay = |row: &ExportRow| {
            if let Some(rel) = &row.overlay_path {
                let _ = std::fs::remove_file(self.repo.path(rel));
            }
        };
        let (open, export) = self.open_row(row.clone(), true).inspect_err(|_| remove_overlay(&row))?;
        if let Err(e) = self.repo.db().add_export(&row) {
            drop(open);
            remove_overlay(&row);
            return Err(e.into());
        }
        Ok(self.serve(open, export))
    }

    /// The exports being served, oldest first.
    pub fn list(&self) -> Vec<ExportInfo> {
        let map = self.open_map();
        let mut v: Vec<ExportInfo> = map.values().map(|o| self.info(o)).collect();
        v.sort_by(|a, b| (&a.created_at, &a.export_id).cmp(&(&b.created_at, &b.export_id)));
        v
    }

    /// Deletes export `id`: forgotten by the catalog, gone from the
    /// listener (its connections get EIO), its overlay deleted.
    pub fn delete(&self, id: &str) -> Result<(), ExportError> {
        let rows = self.repo.db().exports()?;
        let Some(row) = rows.into_iter().find(|r| r.id == id) else {
            return Err(ExportError::NotFound(id.to_string()));
        };
        self.repo.db().delete_export(id)?;
        self.table.remove(&row.name);
        drop(self.open_map().remove(id));
        if let Some(rel) = &row.overlay_path {
            let path = self.repo.path(rel);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(RepoError::io(&path, e).into()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Serves again every export the catalog records (at daemon start), and
    /// deletes overlays no export names (a crash between making one and
    /// recording it). Returns the ids of exports that could not be opened,
    /// with why; they stay recorded.
    pub fn restore_recorded(&self) -> Result<Vec<(String, String)>, ExportError> {
        let rows = self.repo.db().exports()?;
        remove_strays(&self.repo.path(OVERLAY_DIR), &rows);
        let mut failed = Vec::new();
        for row in rows {
            let id = row.id.clone();
            match self.open_row(row, false) {
                Ok((open, export)) => {
                    self.serve(open, export);
                }
                Err(e) => failed.push((id, e.to_string())),
            }
        }
        Ok(failed)
    }

    /// Flushes every overlay and leaves it a clean QCOW2 image (at daemon
    /// shutdown, once the listener stopped). The exports stay recorded.
    pub fn close_all(&self) -> Result<(), ExportError> {
        let map = std::mem::take(&mut *self.open_map());
        let mut first_err = None;
        for (_, o) in map {
            self.table.remove(&o.row.name);
            if let Some(ov) = &o.overlay
                && let Err(e) = ov.0.close()
            {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), |e| Err(e.into()))
    }
}

/// Deletes the files in `dir` that no row names as its overlay.
fn remove_strays(dir: &Path, rows: &[ExportRow]) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let named = rows.iter().any(|r| r.overlay_path.as_deref() == Some(&format!("{OVERLAY_DIR}/{name}")));
        if !named {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
