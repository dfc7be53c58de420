//! Which disk sources a request from the network may name. The HTTP API
//! runs as whoever started the server (often root); a source path is read
//! with those rights and its bytes handed back through a restore session,
//! so an unconfined path is a way to read any file (`/etc/shadow`). `nbd://`
//! sources are always allowed (they read nothing local); local paths,
//! including block devices, only under the roots the admin names with
//! `serve --source-dir`. The CLI, run by the admin, is not confined.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub struct Confinement {
    roots: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("source {0:?} is not under a --source-dir of this server (none is set: only nbd:// sources are allowed)")]
    NoRoots(String),
    #[error("source {0:?} is not under a --source-dir of this server")]
    Outside(String),
    #[error("source {0:?}: {1}")]
    Unreadable(String, String),
}

impl Confinement {
    /// Roots as given; each is resolved (symlinks, `..`) once here, and a
    /// root that does not exist confines to nothing.
    pub fn new(roots: &[PathBuf]) -> Confinement {
        Confinement { roots: roots.iter().filter_map(|r| r.canonicalize().ok()).collect() }
    }

    /// Allows `source` or says why not. Paths are resolved before the
    /// check, so `..` and symlinks cannot lead out of a root.
    pub fn check(&self, source: &str) -> Result<(), Refused> {
        if source.starts_with("nbd://") || source.starts_with("nbd+unix://") || source.starts_with("nbds://") {
            return Ok(());
        }
        if self.roots.is_empty() {
            return Err(Refused::NoRoots(source.to_string()));
        }
        let resolved =
            Path::new(source).canonicalize().map_err(|e| Refused::Unreadable(source.to_string(), e.to_string()))?;
        if self.roots.iter().any(|r| resolved.starts_with(r)) {
            Ok(())
        } else {
            Err(Refused::Outside(source.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nbd_and_paths_under_a_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("disks");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("a.img"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("escape")).unwrap();
        let none = Confinement::new(&[]);
        assert!(none.check("nbd://host:10809/disk").is_ok());
        assert!(matches!(none.check(root.join("a.img").to_str().unwrap()), Err(Refused::NoRoots(_))));
        let c = Confinement::new(std::slice::from_ref(&root));
        assert!(c.check(root.join("a.img").to_str().unwrap()).is_ok());
        for bad in ["/etc/shadow", "/etc/hostname"] {
            assert!(c.check(bad).is_err(), "{bad}");
        }
        assert!(c.check(root.join("../disks/../../etc/hostname").to_str().unwrap()).is_err());
        assert!(c.check(root.join("escape").to_str().unwrap()).is_err(), "a symlink out of the root");
    }
}
