//! `backchain repair`: rebuild a lost catalog from the repository's images,
//! and list or remove the files no catalog row names.

use super::{CliError, repo_dir, with_repo};
use backchain::engine::rebuild;
use std::path::PathBuf;

pub struct RepairArgs {
    pub rebuild_catalog: bool,
    pub remove_orphans: bool,
    pub json: bool,
}

pub fn run(dir: Option<PathBuf>, args: RepairArgs) -> Result<(), CliError> {
    let mut doc = serde_json::Map::new();
    if args.rebuild_catalog {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let report = rebuild::rebuild_catalog(&repo_dir(dir.clone()), rt.handle().clone())?;
        if args.json {
            doc.insert("rebuild".into(), serde_json::to_value(&report)?);
        } else {
            print_rebuild(&report);
        }
    }
    with_repo(dir, |repo| {
        let orphans = repo.orphans()?;
        let removed = if args.remove_orphans { repo.remove_orphans(&orphans)? } else { Vec::new() };
        if args.json {
            doc.insert("orphans".into(), serde_json::to_value(&orphans)?);
            doc.insert("removed".into(), serde_json::to_value(&removed)?);
            outln!("{}", serde_json::to_string_pretty(&doc)?);
            return Ok(());
        }
        for o in &orphans {
            let verb = if removed.contains(&o.file.rel) { "removed" } else { "orphan " };
            outln!("{verb} {}: {}", o.file.rel, o.reason);
        }
        if orphans.is_empty() {
            outln!("no orphan files");
        } else if !args.remove_orphans {
            outln!(
                "{} orphan files: `backchain repair --rebuild-catalog` adopts backups whose images are intact, \
                 `backchain repair --remove-orphans` removes them",
                orphans.len()
            );
        }
        Ok(())
    })
}

fn print_rebuild(r: &rebuild::RebuildReport) {
    for a in &r.adopted {
        outln!("adopted  {} {} disk {} {} ({})", a.backup_id, a.vm, a.disk_index, a.image_path, a.disk_type);
    }
    for l in &r.left_out {
        outln!("left out {}: {}", l.image_path, l.reason);
    }
    outln!("catalog rebuilt: {} backups of {} VMs from {} images", r.backups, r.vms, r.adopted.len());
    if let Some(old) = &r.old_catalog {
        outln!("the catalog that was there is kept as {old}");
    }
    outln!("not recovered (see docs/catalog.md): disk sources, change ids set by agents, failed or interrupted jobs");
}
