//! TLS for the NBD listener ("TLS support" in the protocol document): NBD
//! has no authentication of its own, so off loopback the export names (the
//! only key) and the disk bytes travel inside TLS, negotiated with
//! NBD_OPT_STARTTLS as QEMU (`tls-creds-x509`) and libnbd (`nbds://`) do.
//!
//! The server runs in "forced TLS" mode: before STARTTLS, every option but
//! ABORT gets NBD_REP_ERR_TLS_REQD and OPT_EXPORT_NAME closes the
//! connection; after the handshake, negotiation goes on inside TLS. rustls
//! with the ring provider, TLS 1.3 only (every client we test speaks it).

use super::negotiate::{self, Session, read_option, refuse};
use super::{ExportTable, Stream};
use crate::nbd::consts::*;
use crate::nbd::error::Result;
use crate::nbd::handshake::send_option_reply;
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The listener's TLS side: an x509 certificate (chain) and its key.
#[derive(Clone)]
pub struct Tls(tokio_rustls::TlsAcceptor);

impl Tls {
    /// Loads a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1
    /// or SEC1), as `openssl req -x509` writes them.
    pub fn from_pem_files(cert: &Path, key: &Path) -> std::result::Result<Self, String> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let certs = CertificateDer::pem_slice_iter(&read(cert)?)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: not a PEM certificate: {e}", cert.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate in it", cert.display()));
        }
        let key_der = PrivateKeyDer::from_pem_slice(&read(key)?)
            .map_err(|e| format!("{}: not a PEM private key: {e}", key.display()))?;
        // Deprecated only to point at aws-lc's post-quantum key exchange,
        // whose build (cmake, a large C library) we avoid; the classical
        // groups ring offers are what QEMU's GnuTLS negotiates today.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(certs, key_der)
            .map_err(|e| format!("{} and {}: {e}", cert.display(), key.display()))?;
        Ok(Tls(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }
}

/// Whether plaintext NBD may listen on `addr`: a unix socket (mode 0600)
/// or a loopback address. Anything else needs TLS.
pub fn is_local(addr: &str) -> bool {
    if addr.starts_with("unix:") {
        return true;
    }
    addr.parse::<std::net::SocketAddr>()
        .map(|a| a.ip().is_loopback())
        .unwrap_or_else(|_| addr.starts_with("localhost:"))
}

/// Negotiates a connection, through STARTTLS when `tls` is set; the
/// stream to serve the transmission phase on, and its session.
pub(super) async fn negotiate(
    mut s: Box<dyn Stream>,
    table: &ExportTable,
    tls: Option<&Tls>,
) -> Result<Option<(Box<dyn Stream>, Session)>> {
    let Some(tls) = tls else {
        let sess = negotiate::negotiate(&mut s, table).await?;
        return Ok(sess.map(|sess| (s, sess)));
    };
    let no_zeroes = negotiate::greet(&mut s).await?;
    for _ in 0..MAX_OPTIONS {
        let (h, data) = read_option(&mut s).await?;
        match h.option {
            OPT_STARTTLS if data.is_empty() => {
                send_option_reply(&mut s, h.option, REP_ACK, &[]).await?;
                let mut t: Box<dyn Stream> = Box::new(tls.0.accept(s).await?);
                let sess = negotiate::options(&mut t, table, no_zeroes, true).await?;
                return Ok(sess.map(|sess| (t, sess)));
            }
            OPT_STARTTLS => refuse(&mut s, h.option, REP_ERR_INVALID, "no data expected").await?,
            OPT_ABORT => {
                let _ = send_option_reply(&mut s, h.option, REP_ACK, &[]).await;
                return Ok(None);
            }
            // No error reply exists for it: the client is left alone.
            OPT_EXPORT_NAME => return Ok(None),
            _ => refuse(&mut s, h.option, REP_ERR_TLS_REQD, "TLS is required: NBD_OPT_STARTTLS first").await?,
        };
    }
    Err(crate::nbd::Error::Corrupt(format!("more than {MAX_OPTIONS} options")))
}
