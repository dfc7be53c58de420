//! Download tickets: short-lived, single-use URLs for one file or folder of
//! one restore session. The browser cannot add the bearer token to a plain
//! link, and fetching a download into a blob holds all of it (a 10 GiB zip)
//! in memory; a ticket lets the browser stream the URL straight to disk
//! while the token stays required for everything else.

use crate::util::lock;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a ticket can wait before it is used.
pub const TICKET_TTL: Duration = Duration::from_secs(60);
/// Tickets outstanding at once, at most (unused ones expire).
pub const MAX_TICKETS: usize = 10_000;
/// Random bytes in a ticket (hex-encoded in the URL).
const TICKET_BYTES: usize = 24;

/// What a ticket lets its bearer download, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub session: String,
    /// The route it is for (`download` or `download-directory`).
    pub route: String,
    /// The exact `path` parameter, as bytes.
    pub path: Vec<u8>,
}

#[derive(Default)]
pub struct Tickets {
    open: Mutex<HashMap<String, (Grant, Instant)>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    #[error("too many download tickets outstanding ({MAX_TICKETS}); use or let some expire")]
    Full,
    #[error("the download ticket is unknown, used or expired")]
    Invalid,
    #[error("reading random bytes for a ticket: {0}")]
    Random(String),
}

impl Tickets {
    /// Issues a ticket for `grant`.
    pub fn issue(&self, grant: Grant) -> Result<String, TicketError> {
        let mut raw = [0u8; TICKET_BYTES];
        crate::util::random::fill(&mut raw).map_err(|e| TicketError::Random(e.to_string()))?;
        let ticket: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let mut open = lock(&self.open);
        let now = Instant::now();
        open.retain(|_, (_, at)| now.duration_since(*at) < TICKET_TTL);
        if open.len() >= MAX_TICKETS {
            return Err(TicketError::Full);
        }
        open.insert(ticket.clone(), (grant, now));
        Ok(ticket)
    }

    /// Uses `ticket` for `want`: valid once, within its time, for exactly
    /// the session, route and path it was issued for.
    pub fn redeem(&self, ticket: &str, want: &Grant) -> Result<(), TicketError> {
        let mut open = lock(&self.open);
        match open.get(ticket) {
            Some((grant, at)) if grant == want && at.elapsed() < TICKET_TTL => {
                open.remove(ticket);
                Ok(())
            }
            _ => Err(TicketError::Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(path: &str) -> Grant {
        Grant { session: "s1".into(), route: "download".into(), path: path.as_bytes().to_vec() }
    }

    #[test]
    fn single_use_and_bound_to_its_path() {
        let t = Tickets::default();
        let a = t.issue(grant("/a")).unwrap();
        assert_eq!(a.len(), 2 * TICKET_BYTES);
        assert_eq!(t.redeem(&a, &grant("/b")), Err(TicketError::Invalid));
        assert_eq!(t.redeem(&a, &grant("/a")), Ok(()));
        assert_eq!(t.redeem(&a, &grant("/a")), Err(TicketError::Invalid));
        let other = Grant { session: "s2".into(), ..grant("/a") };
        let b = t.issue(grant("/a")).unwrap();
        assert_eq!(t.redeem(&b, &other), Err(TicketError::Invalid));
        assert_ne!(a, b);
    }
}
