//! `ls`, `cat` and `get`: the tree of a backup or an image, from the shell.

use super::CliError;
use super::target::{self, Target};
use backchain::archive;
use backchain::qcow2::OpenOptions;
use backchain::repo::Repo;
use backchain::restore::entry::Entry;
use backchain::tree::{self, Node, Tree};
use backchain::util::output::Output;
use backchain::util::time::rfc3339;
use backchain::volume::fs::NodeKind;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// Bytes per read when a file is copied out.
const COPY_BUFFER: usize = 1 << 20;

/// Opens the tree of TARGET and runs `f` on it (inside the repository when
/// TARGET is a backup).
/// Runs `f` on the tree of `target`, with the image files the tree reads
/// (so outputs can refuse to overwrite them).
pub fn with_tree(
    dir: Option<PathBuf>,
    target: &str,
    f: impl FnOnce(&Tree, &[PathBuf]) -> Result<(), CliError>,
) -> Result<(), CliError> {
    match target::parse(target) {
        Target::Image(p) => {
            let inputs = target::chain_files(&p);
            f(&tree::for_image(&p, &OpenOptions::default())?, &inputs)
        }
        Target::Backup { id, disk } => super::with_repo(dir, |repo: &Repo| {
            let (images, _guard) = target::backup_images(repo, &id, disk)?;
            let inputs = images.into_iter().flat_map(|(_, image, _)| target::chain_files(&image)).collect::<Vec<_>>();
            f(&target::backup_tree(repo, &id, disk)?.0, &inputs)
        }),
    }
}

fn resolve(tree: &Tree, path: &OsStr) -> Result<Node, CliError> {
    tree.resolve_bytes(path.as_bytes())
        .map_err(|e| CliError::msg(format!("{}: {e}", backchain::archive::shown(path.as_bytes()))))
}

fn mode_string(n: &Node) -> String {
    let t = match n.kind {
        NodeKind::Directory => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::File => '-',
        NodeKind::CharDevice(_) => 'c',
        NodeKind::BlockDevice(_) => 'b',
        NodeKind::Fifo => 'p',
        NodeKind::Socket => 's',
        NodeKind::Other => '?',
    };
    let mut s = String::from(t);
    // Like ls: setuid, setgid and sticky show in the execute columns.
    for (shift, special, mark) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let b = (n.perm >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        s.push(match (b & 1 != 0, n.perm & special != 0) {
            (true, true) => mark,
            (false, true) => mark.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

pub fn ls(tree: &Tree, path: Option<&OsStr>, json: bool) -> Result<(), CliError> {
    let path = path.unwrap_or(OsStr::new("/"));
    let node = resolve(tree, path)?;
    let (dir, entries): (Vec<u8>, Vec<Node>) = if node.kind == NodeKind::Directory {
        (path.as_bytes().to_vec(), tree.read_dir(node.ino)?.entries.clone())
    } else {
        // Like ls: a file lists as itself.
        let p = path.as_bytes();
        let cut = p.iter().rposition(|&b| b == b'/').unwrap_or(0);
        let mut n = node;
        n.name = p[if cut == 0 && p.first() != Some(&b'/') { 0 } else { cut + 1 }..].to_vec();
        (p[..cut].to_vec(), vec![n])
    };
    let target = |n: &Node| (n.kind == NodeKind::Symlink).then(|| tree.read_link(n.ino)).transpose();
    let mut out = std::io::stdout().lock();
    if json {
        let mut list = Vec::with_capacity(entries.len());
        for n in &entries {
            list.push(Entry::new(&dir, n, target(n)?));
        }
        serde_json::to_writer_pretty(&mut out, &list)?;
        writeln!(out)?;
        return Ok(());
    }
    for n in &entries {
        let t = n.mtime;
        let when = rfc3339(t.secs, 0);
        // Like ls: a device shows its numbers where files show their size.
        let size = match n.kind.rdev() {
            Some(r) => format!("{}, {}", r.major, r.minor),
            None => n.size.to_string(),
        };
        let mut line = format!("{} {:>4} {:>4} {size:>12} {when} {}", mode_string(n), n.uid, n.gid, n.name_lossy());
        if let Some(t) = target(n)? {
            line.push_str(" -> ");
            line.push_str(&String::from_utf8_lossy(&t));
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// Copies a file's bytes to `out`.
fn copy_file(tree: &Tree, node: &Node, out: &mut dyn Write) -> Result<(), CliError> {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut at = 0u64;
    while at < node.size {
        let want = usize::try_from(node.size - at).unwrap_or(usize::MAX).min(buf.len());
        let n = tree.read(node.ino, at, &mut buf[..want])?;
        if n == 0 {
            return Err(CliError::msg(format!("the file ended at byte {at} of {}", node.size)));
        }
        out.write_all(&buf[..n])?;
        at += n as u64;
    }
    Ok(())
}

fn must_be_file(node: &Node, tree: &Tree, path: &OsStr) -> Result<(), CliError> {
    let p = String::from_utf8_lossy(path.as_bytes());
    match node.kind {
        NodeKind::File => Ok(()),
        NodeKind::Directory => Err(CliError::msg(format!("{p}: is a folder"))),
        NodeKind::Symlink => Err(CliError::msg(format!(
            "{p}: is a symbolic link to {} (links are not followed)",
            String::from_utf8_lossy(&tree.read_link(node.ino)?)
        ))),
        k => Err(CliError::msg(format!("{p}: is a {} and has no bytes", k.name()))),
    }
}

pub fn cat(tree: &Tree, path: &OsStr) -> Result<(), CliError> {
    let node = resolve(tree, path)?;
    must_be_file(&node, tree, path)?;
    let mut out = std::io::stdout().lock();
    copy_file(tree, &node, &mut out)?;
    out.flush()?;
    Ok(())
}

enum Format {
    Zip,
    TarGz,
}

fn archive_format(out: &Path) -> Option<Format> {
    let name = out.file_name()?.to_string_lossy().to_ascii_lowercase();
    if name.ends_with(".zip") {
        Some(Format::Zip)
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Some(Format::TarGz)
    } else {
        None
    }
}

pub fn get(tree: &Tree, inputs: &[PathBuf], path: &OsStr, out: &Path) -> Result<(), CliError> {
    let node = resolve(tree, path)?;
    let format = if node.kind == NodeKind::Directory {
        Some(archive_format(out).ok_or_else(|| {
            CliError::msg(format!(
                "{} is a folder: name the output OUT.zip or OUT.tar.gz to get it as an archive",
                String::from_utf8_lossy(path.as_bytes())
            ))
        })?)
    } else {
        must_be_file(&node, tree, path)?;
        None
    };
    let output = Output::create(out, inputs)?;
    let file = File::create(output.write_path()).map_err(|e| CliError::msg(format!("{}: {e}", out.display())))?;
    let mut w = BufWriter::with_capacity(COPY_BUFFER, file);
    let cancel = AtomicBool::new(false);
    let result = match format {
        None => copy_file(tree, &node, &mut w),
        Some(Format::Zip) => archive::write_zip(tree, node.ino, &mut w, &cancel).map(drop).map_err(CliError::from),
        Some(Format::TarGz) => archive::write_tar_gz(tree, node.ino, &mut w, &cancel).map(drop).map_err(CliError::from),
    }
    .and_then(|()| Ok(w.into_inner().map_err(|e| e.into_error())?.sync_all()?));
    // On an error the output is dropped: the temporary file goes, and
    // whatever `out` was stays.
    result?;
    Ok(output.commit()?)
}
