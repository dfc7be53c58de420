//! The errors of the NBD codec, client and server, and the one mapping
//! between io errors and NBD error numbers.

use super::consts::*;
use std::io;

/// What went wrong talking NBD. The peer is untrusted: anything it sends
/// that breaks the protocol is [`Error::Corrupt`] with what and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("NBD peer broke the protocol: {0}")]
    Corrupt(String),
    #[error("NBD peer needs something backchain does not support: {0}")]
    Unsupported(String),
    #[error("NBD export {0:?} does not exist on the server")]
    NoSuchExport(String),
    #[error("NBD server refused option {option}: {kind}{}", fmt_message(message))]
    Refused { option: u32, kind: &'static str, message: String },
    #[error("NBD server answered {}{}{}", errno_name(*errno), fmt_offset(*offset), fmt_message(message))]
    Server { errno: u32, message: String, offset: Option<u64> },
    #[error("NBD request out of range: {0}")]
    Range(String),
    #[error("invalid NBD URI {uri:?}: {why}")]
    Uri { uri: String, why: String },
    #[error("NBD peer did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("NBD connection is closed{}", fmt_message(.0))]
    Closed(String),
    #[error("NBD connection: {0}")]
    Io(#[from] io::Error),
}

fn fmt_message(m: &str) -> String {
    if m.is_empty() { String::new() } else { format!(" ({m})") }
}

fn fmt_offset(o: Option<u64>) -> String {
    o.map(|o| format!(" at offset {o}")).unwrap_or_default()
}

/// The name of an NBD error number, for messages.
pub fn errno_name(errno: u32) -> String {
    match errno {
        EPERM => "EPERM".into(),
        EIO => "EIO".into(),
        ENOMEM => "ENOMEM".into(),
        EINVAL => "EINVAL".into(),
        ENOSPC => "ENOSPC".into(),
        EOVERFLOW => "EOVERFLOW".into(),
        ENOTSUP => "ENOTSUP".into(),
        ESHUTDOWN => "ESHUTDOWN".into(),
        n => format!("error {n}"),
    }
}

/// The name of an option error reply type.
pub fn rep_error_name(rep: u32) -> &'static str {
    match rep {
        REP_ERR_UNSUP => "unsupported",
        REP_ERR_POLICY => "forbidden by policy",
        REP_ERR_INVALID => "invalid",
        REP_ERR_PLATFORM => "unavailable on this platform",
        REP_ERR_TLS_REQD => "TLS required",
        REP_ERR_UNKNOWN => "unknown export",
        REP_ERR_SHUTDOWN => "server shutting down",
        REP_ERR_BLOCK_SIZE_REQD => "block size negotiation required",
        REP_ERR_TOO_BIG => "request too big",
        _ => "error",
    }
}

/// The NBD error number a server answers for an io error of an export.
/// The only place io errors become NBD errors.
pub fn errno_of(e: &io::Error) -> u32 {
    match e.kind() {
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => EPERM,
        io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof => EINVAL,
        io::ErrorKind::StorageFull => ENOSPC,
        io::ErrorKind::Unsupported => ENOTSUP,
        io::ErrorKind::OutOfMemory => ENOMEM,
        _ => EIO,
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Io(e) => e.kind(),
            Error::Timeout(_) => io::ErrorKind::TimedOut,
            Error::Range(_) => io::ErrorKind::UnexpectedEof,
            Error::Server { errno: EPERM, .. } => io::ErrorKind::PermissionDenied,
            Error::Server { errno: EINVAL, .. } => io::ErrorKind::InvalidInput,
            Error::Server { errno: ENOSPC, .. } => io::ErrorKind::StorageFull,
            Error::Closed(_) => io::ErrorKind::BrokenPipe,
            Error::Corrupt(_) => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_their_own_errno() {
        let cases = [
            (io::ErrorKind::PermissionDenied, EPERM),
            (io::ErrorKind::ReadOnlyFilesystem, EPERM),
            (io::ErrorKind::InvalidInput, EINVAL),
            (io::ErrorKind::UnexpectedEof, EINVAL),
            (io::ErrorKind::StorageFull, ENOSPC),
            (io::ErrorKind::Unsupported, ENOTSUP),
            (io::ErrorKind::OutOfMemory, ENOMEM),
            (io::ErrorKind::Other, EIO),
        ];
        for (kind, errno) in cases {
            assert_eq!(errno_of(&io::Error::from(kind)), errno, "{kind:?}");
        }
    }

    #[test]
    fn server_errors_come_back_as_io_kinds() {
        let e: io::Error = Error::Server { errno: ENOSPC, message: String::new(), offset: None }.into();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert!(e.to_string().contains("ENOSPC"), "{e}");
    }
}
