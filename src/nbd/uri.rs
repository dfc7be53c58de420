//! NBD URIs in libnbd's forms (its `nbd_connect_uri`):
//! `nbd://HOST[:PORT]/EXPORT` (default port 10809) and
//! `nbd+unix:///EXPORT?socket=PATH`, each with backchain's optional
//! `bitmap=NAME` query parameter (a QEMU dirty bitmap for incrementals).

use super::client::Endpoint;
use super::error::{Error, Result};
use percent_encoding::percent_decode_str;

/// The IANA port of NBD.
pub const DEFAULT_PORT: u16 = 10809;

/// A parsed NBD URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdUri {
    pub endpoint: Endpoint,
    pub export: String,
    pub bitmap: Option<String>,
}

/// True when `s` names an NBD URI (and so is not a file path).
pub fn is_nbd_uri(s: &str) -> bool {
    s.starts_with("nbd://") || s.starts_with("nbd+unix://") || s.starts_with("nbds")
}

/// The URI of export `name` on a listener at `addr` (`HOST:PORT` or
/// `unix:PATH`, as the server's listener reports it); `nbds://` with TLS.
pub fn for_listener(addr: &str, name: &str, tls: bool) -> String {
    match (addr.strip_prefix("unix:"), tls) {
        (Some(path), false) => format!("nbd+unix:///{name}?socket={path}"),
        (Some(path), true) => format!("nbds+unix:///{name}?socket={path}"),
        (None, false) => format!("nbd://{addr}/{name}"),
        (None, true) => format!("nbds://{addr}/{name}"),
    }
}

impl NbdUri {
    pub fn parse(uri: &str) -> Result<NbdUri> {
        let bad = |why: &str| Error::Uri { uri: uri.into(), why: why.into() };
        let (scheme, rest) = uri.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let export = decode(path).map_err(|_| bad("export name is not UTF-8"))?;
        let mut socket = None;
        let mut bitmap = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| bad("query parameter without '='"))?;
            let v = decode(v).map_err(|_| bad("query value is not UTF-8"))?;
            match k {
                "socket" => socket = Some(v),
                "bitmap" if !v.is_empty() => bitmap = Some(v),
                _ => return Err(bad(&format!("unknown or empty query parameter {k:?}"))),
            }
        }
        let endpoint = match scheme {
            "nbd" => {
                if socket.is_some() {
                    return Err(bad("socket= belongs to nbd+unix://"));
                }
                let (host, port) = host_port(authority).ok_or_else(|| bad("expected HOST[:PORT]"))?;
                Endpoint::Tcp { host, port }
            }
            "nbd+unix" => {
                if !authority.is_empty() {
                    return Err(bad("nbd+unix:// takes no host (nbd+unix:///EXPORT?socket=PATH)"));
                }
                Endpoint::Unix(socket.ok_or_else(|| bad("socket=PATH is missing"))?.into())
            }
            s if s.starts_with("nbds") => return Err(bad("TLS (nbds) is not supported by the client yet")),
            _ => return Err(bad("scheme must be nbd or nbd+unix")),
        };
        Ok(NbdUri { endpoint, export, bitmap })
    }
}

fn decode(s: &str) -> std::result::Result<String, std::str::Utf8Error> {
    percent_decode_str(s).decode_utf8().map(|c| c.into_owned())
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn host_port(a: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        (h, after.strip_prefix(':'))
    } else {
        match a.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok().filter(|&p| p != 0)?,
        None => DEFAULT_PORT,
    };
    (!host.is_empty()).then(|| (host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libnbd_forms_parse() {
        let u = NbdUri::parse("nbd://example.com/disk%20a?bitmap=b0").unwrap();
        assert_eq!(u.endpoint, Endpoint::Tcp { host: "example.com".into(), port: DEFAULT_PORT });
        assert_eq!((u.export.as_str(), u.bitmap.as_deref()), ("disk a", Some("b0")));
        let u = NbdUri::parse("nbd://[::1]:10900/").unwrap();
        assert_eq!(u.endpoint, Endpoint::Tcp { host: "::1".into(), port: 10900 });
        assert_eq!(u.export, "");
        let u = NbdUri::parse("nbd://127.0.0.1:1234").unwrap();
        assert_eq!(u.endpoint, Endpoint::Tcp { host: "127.0.0.1".into(), port: 1234 });
        let u = NbdUri::parse("nbd+unix:///vm?socket=/run/x.sock&bitmap=inc1").unwrap();
        assert_eq!(u.endpoint, Endpoint::Unix("/run/x.sock".into()));
        assert_eq!((u.export.as_str(), u.bitmap.as_deref()), ("vm", Some("inc1")));
    }

    #[test]
    fn bad_uris_say_why() {
        for (uri, why) in [
            ("nbd+unix:///vm", "socket=PATH is missing"),
            ("nbd+unix://host/vm?socket=/x", "takes no host"),
            ("nbd://:10809/x", "HOST[:PORT]"),
            ("nbd://h:99999/x", "HOST[:PORT]"),
            ("nbds://h/x", "TLS"),
            ("http://h/x", "scheme"),
            ("nbd://h/x?tls=on", "unknown"),
        ] {
            let e = NbdUri::parse(uri).unwrap_err().to_string();
            assert!(e.contains(why), "{uri}: {e}");
        }
        assert!(is_nbd_uri("nbd+unix:///x?socket=/s") && !is_nbd_uri("/var/lib/disk.img"));
    }
}
