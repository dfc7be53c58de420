//! Output files that never destroy what they replace or what they are made
//! from. `export d.img -o d.img` used to truncate its own input, and a
//! failed export left a partial file where a good one had been.
//!
//! An output is refused when it is the same file (device and inode) as any
//! input. A regular file (or a new one) is written to a temporary file in
//! the same folder and renamed over the target only when complete, then
//! the folder is synced; a failure or a drop before [`Output::commit`]
//! removes the temporary file and leaves the old target as it was. Block
//! and character devices (restoring onto a disk) are written in place,
//! after the same-file check.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("refusing to write {out}: it is {input}, which is being read")]
    SameFile { out: String, input: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OutputError + '_ {
    move |source| OutputError::Io { path: path.display().to_string(), source }
}

/// A file being written in place of `path`.
#[derive(Debug)]
pub struct Output {
    path: PathBuf,
    /// The temporary file, for regular-file outputs.
    tmp: Option<PathBuf>,
}

impl Output {
    /// Prepares writing `path`, made from the files `inputs`.
    pub fn create(path: &Path, inputs: &[PathBuf]) -> Result<Output, OutputError> {
        let target = match fs::metadata(path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(path)(e)),
        };
        if let Some(t) = &target {
            for input in inputs {
                if let Ok(m) = fs::metadata(input)
                    && (m.dev(), m.ino()) == (t.dev(), t.ino())
                {
                    return Err(OutputError::SameFile {
                        out: path.display().to_string(),
                        input: input.display().to_string(),
                    });
                }
            }
        }
        let device = target.as_ref().is_some_and(|m| m.file_type().is_block_device() || m.file_type().is_char_device());
        if device {
            return Ok(Output { path: path.to_path_buf(), tmp: None });
        }
        let name = path.file_name().ok_or_else(|| io_err(path)(io::Error::other("not a file name")))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".backchain-{}.tmp", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        // A leftover of a run that died with the same process id.
        let _ = fs::remove_file(&tmp);
        Ok(Output { path: path.to_path_buf(), tmp: Some(tmp) })
    }

    /// Where the bytes go until [`Output::commit`].
    pub fn write_path(&self) -> &Path {
        self.tmp.as_deref().unwrap_or(&self.path)
    }

    /// Syncs the written file and puts it in place of the target.
    pub fn commit(mut self) -> Result<(), OutputError> {
        let Some(tmp) = self.tmp.take() else { return Ok(()) };
        let done = (|| {
            File::open(&tmp)?.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            File::open(dir)?.sync_all()
        })();
        if done.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        done.map_err(io_err(&self.path))
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp {
            let _ = fs::remove_file(tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_its_input_and_keeps_the_old_file_until_commit() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.img");
        fs::write(&a, b"input").unwrap();
        let link = d.path().join("hard");
        fs::hard_link(&a, &link).unwrap();
        assert!(matches!(Output::create(&link, std::slice::from_ref(&a)), Err(OutputError::SameFile { .. })));

        let out = d.path().join("out.raw");
        fs::write(&out, b"old").unwrap();
        let o = Output::create(&out, std::slice::from_ref(&a)).unwrap();
        fs::write(o.write_path(), b"partial").unwrap();
        drop(o);
        assert_eq!(fs::read(&out).unwrap(), b"old", "a dropped output leaves the old file");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 3, "no temporary file left");

        let o = Output::create(&out, &[a]).unwrap();
        fs::write(o.write_path(), b"new").unwrap();
        o.commit().unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"new");
    }
}
