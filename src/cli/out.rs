//! Standard output of the command line. `println!` panics when stdout is a
//! closed pipe (`backchain list | head -1`), which turned a committed backup
//! into exit code 101. Here the first failed write closes the output
//! quietly: the command goes on, and its exit code says how *it* went. A
//! reader that left early is no failure (as with other command-line tools);
//! any other write error (a full disk behind `> file`) is reported at exit.

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;

/// The first write error, once output has failed.
static FAILED: Mutex<Option<io::ErrorKind>> = Mutex::new(None);

/// Writes one formatted piece to stdout, unless output already failed.
pub fn write(args: fmt::Arguments<'_>) {
    let mut failed = backchain::util::lock(&FAILED);
    if failed.is_some() {
        return;
    }
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        *failed = Some(e.kind());
    }
}

/// Whether an error is a reader closing the pipe: quiet, not a failure.
pub fn is_broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::BrokenPipe
        {
            return true;
        }
        if let Some(json) = err.downcast_ref::<serde_json::Error>()
            && json.io_error_kind() == Some(io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A write error other than a closed pipe, to report at exit.
pub fn failure() -> Option<io::ErrorKind> {
    backchain::util::lock(&FAILED).filter(|k| *k != io::ErrorKind::BrokenPipe)
}
