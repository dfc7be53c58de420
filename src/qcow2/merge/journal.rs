//! The merge's recorded intent: its steps and how many are done. It is
//! written (atomically: a temporary file, fsync, rename, fsync of the folder)
//! before the first file is touched and after every step, so a redo knows
//! where to start; every step is idempotent, so redoing the step that was
//! running when the process died is always right. The catalog can store the
//! same JSON document instead of the file.

use super::MergeError;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::Path;

/// The journal format written; others are refused.
const VERSION: u32 = 1;
/// A journal is a few hundred bytes; anything far larger is not one.
const MAX_JOURNAL_BYTES: u64 = 64 << 10;

/// One idempotent step. Names are plain file names in the chain's folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    /// Write every cluster of `from` over `into` (the dropped oldest point).
    Fold { from: String, into: String },
    /// `from` (the folded image) takes the name `to`.
    Replace { from: String, to: String },
    /// Copy `from`'s clusters into `into` wherever `into` has none.
    Absorb { from: String, into: String },
    /// Point `image` at `backing`.
    Rebase { image: String, backing: String },
    /// Delete `image`.
    Remove { image: String },
}

impl Step {
    fn names(&self) -> Vec<&str> {
        match self {
            Step::Fold { from, into } | Step::Absorb { from, into } => vec![from, into],
            Step::Replace { from, to } => vec![from, to],
            Step::Rebase { image, backing } => vec![image, backing],
            Step::Remove { image } => vec![image],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub version: u32,
    /// The image whose restore point is dropped.
    pub dropped: String,
    pub steps: Vec<Step>,
    /// Steps finished, from the first.
    pub done: usize,
}

/// Where a merge's journal is kept: a file next to the images
/// ([`FileJournal`]) or the catalog (`repo::merges`). `save` must be durable
/// and atomic (the old journal or the new one, never a mix).
pub trait JournalStore {
    fn save(&self, journal: &Journal) -> Result<(), MergeError>;
    /// The merge is complete: the journal may go.
    fn finish(&self) -> Result<(), MergeError>;
}

/// A journal file (`<dropped>.merge.json` next to the images).
pub struct FileJournal(pub std::path::PathBuf);

impl JournalStore for FileJournal {
    fn save(&self, journal: &Journal) -> Result<(), MergeError> {
        journal.save(&self.0)
    }
    fn finish(&self) -> Result<(), MergeError> {
        Journal::finish(&self.0)
    }
}

/// A name the journal may hold: one file in the chain's folder.
pub(super) fn check_name(name: &str) -> Result<(), MergeError> {
    let ok = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0']);
    if ok { Ok(()) } else { Err(MergeError::Unsupported(format!("{name:?} is not a plain file name"))) }
}

impl Journal {
    pub fn new(dropped: &str, steps: Vec<Step>) -> Self {
        Self { version: VERSION, dropped: dropped.to_string(), steps, done: 0 }
    }

    /// The journal at `path`, if there is one.
    pub fn load(path: &Path) -> Result<Option<Self>, MergeError> {
        let bad = |what: String| MergeError::Journal { path: path.to_path_buf(), what };
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(MergeError::io(path, e)),
        };
        if meta.len() > MAX_JOURNAL_BYTES {
            return Err(bad(format!("{} bytes, more than a journal holds", meta.len())));
        }
        let text = fs::read(path).map_err(|e| MergeError::io(path, e))?;
        Self::parse(&text).map(Some).map_err(|e| match e {
            MergeError::Journal { what, .. } => bad(what),
            other => other,
        })
    }

    /// A journal from its JSON text (as `to_json` wrote it), checked: its
    /// version, its progress and every name in it.
    pub fn parse(text: &[u8]) -> Result<Self, MergeError> {
        let bad = |what: String| MergeError::Journal { path: "(catalog)".into(), what };
        if text.len() as u64 > MAX_JOURNAL_BYTES {
            return Err(bad(format!("{} bytes, more than a journal holds", text.len())));
        }
        let j: Journal = serde_json::from_slice(text).map_err(|e| bad(e.to_string()))?;
        if j.version != VERSION {
            return Err(bad(format!("version {} (this build writes {VERSION})", j.version)));
        }
        if j.done > j.steps.len() {
            return Err(bad(format!("{} steps done of {}", j.done, j.steps.len())));
        }
        for name in j.steps.iter().flat_map(Step::names) {
            check_name(name)?;
        }
        Ok(j)
    }

    /// The journal as JSON text.
    pub fn to_json(&self) -> String {
        // OK to unwrap: a journal is plain strings and numbers.
        serde_json::to_string(self).unwrap()
    }

    /// Writes the journal durably, replacing the previous one atomically.
    pub fn save(&self, path: &Path) -> Result<(), MergeError> {
        let tmp = path.with_extension("tmp");
        let text = self.to_json();
        let mut f = fs::File::create(&tmp).map_err(|e| MergeError::io(&tmp, e))?;
        f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| MergeError::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| MergeError::io(path, e))?;
        super::files::sync_dir(path.parent().unwrap_or(Path::new(".")))
    }

    /// Removes the journal (and a temporary one a crash left) once the
    /// merge is complete.
    pub fn finish(path: &Path) -> Result<(), MergeError> {
        for p in [path.with_extension("tmp"), path.to_path_buf()] {
            match fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(MergeError::io(&p, e)),
                _ => {}
            }
        }
        super::files::sync_dir(path.parent().unwrap_or(Path::new(".")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Option<Journal>, MergeError> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.merge.json");
        fs::write(&p, text).unwrap();
        Journal::load(&p)
    }

    #[test]
    fn round_trips_and_refuses_what_is_not_a_journal() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.merge.json");
        assert!(Journal::load(&p).unwrap().is_none());
        let mut j = Journal::new("a.qcow2", vec![Step::Remove { image: "a.qcow2".into() }]);
        j.save(&p).unwrap();
        assert_eq!(Journal::load(&p).unwrap(), Some(j.clone()));
        j.done = 1;
        j.save(&p).unwrap();
        assert_eq!(Journal::load(&p).unwrap().unwrap().done, 1);
        Journal::finish(&p).unwrap();
        assert!(!p.exists());
        let step = r#"[{"op":"remove","image":"a"}]"#;
        for (text, why) in [
            ("{", "EOF"),
            (&format!(r#"{{"version":2,"dropped":"a","steps":{step},"done":0}}"#), "version 2"),
            (&format!(r#"{{"version":1,"dropped":"a","steps":{step},"done":2}}"#), "2 steps done of 1"),
            (r#"{"version":1,"dropped":"a","steps":[{"op":"remove","image":"../a"}],"done":0}"#, "plain file name"),
            (r#"{"version":1,"dropped":"a","steps":[{"op":"explode"}],"done":0}"#, "unknown variant"),
        ] {
            let e = load_text(text).unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
