use std::io;
use std::path::PathBuf;

/// Everything that can go wrong opening or reading a QCOW2 image or chain.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error at offset {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("not a QCOW2 image (bad magic)")]
    NotQcow2,
    #[error("corrupt image: {what} (at offset {offset})")]
    Corrupt { offset: u64, what: String },
    #[error("unsupported image: {0}")]
    Unsupported(String),
    #[error("backing file {name:?} of {image} not found: {source}")]
    BackingNotFound {
        name: String,
        image: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("backing file {name:?} of {image} resolves to {resolved}, outside the confinement root {root}")]
    BackingOutsideRoot { name: String, image: PathBuf, resolved: PathBuf, root: PathBuf },
    #[error("image {0} is outside the confinement root {1}")]
    ImageOutsideRoot(PathBuf, PathBuf),
    #[error("backing chain loops back to {0}")]
    BackingLoop(PathBuf),
    #[error("backing chain is deeper than the limit of {0} images")]
    ChainTooDeep(usize),
    #[error("backing file {name:?} of {image} is not a plain file name ({why})")]
    BackingNameRefused { name: String, image: PathBuf, why: &'static str },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn corrupt(offset: u64, what: impl Into<String>) -> Self {
        Error::Corrupt { offset, what: what.into() }
    }

    pub fn io(offset: u64) -> impl FnOnce(io::Error) -> Self {
        move |source| Error::Io { offset, source }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io { source, .. } => source,
            Error::Unsupported(_) => io::Error::new(io::ErrorKind::Unsupported, e),
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}
