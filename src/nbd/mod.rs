//! NBD, the network block device protocol: our own codec on tokio, shared
//! by the client (backups pulled from hypervisors: QEMU, qemu-nbd,
//! qemu-storage-daemon, nbdkit) and the server (restore-point exports and,
//! later, the push target).
//!
//! No published crate fits: one answers OPT_GO with ERR_UNSUP and has no
//! structured replies, another panics on the options QEMU sends first. The
//! protocol is small enough to own, and owning it lets every length a peer
//! sends be checked against a named limit ([`consts`]).
//!
//! # Layout
//!
//! * [`consts`]: every wire number, with the protocol document's sections,
//!   and our limits.
//! * Codec, one file per wire structure: [`handshake`] (greeting, option
//!   headers), [`option`] (option payloads and INFO/META_CONTEXT replies),
//!   [`request`], [`reply`] (simple replies and chunk headers),
//!   [`structured`] (chunk payloads).
//! * [`client`]: negotiation and concurrent requests on one connection.
//! * [`disk`]: [`NbdDisk`], an export as a sync `ReadAt` with allocation
//!   status and a dirty bitmap's changed extents; [`uri`]: `nbd://` URIs.
//! * [`server`]: `run(listener, exports, shutdown)`, the [`server::Export`]
//!   trait and the export table.
//! * [`error`]: the error type and the one io-error ↔ NBD-errno mapping.
//!
//! See docs/nbd.md.
#![forbid(unsafe_code)]

pub mod client;
pub mod consts;
pub mod disk;
pub mod error;
pub mod handshake;
pub mod option;
pub mod reply;
pub mod request;
pub mod server;
pub mod structured;
pub mod uri;
mod wire;

pub use client::{Client, Endpoint, Extent, Options};
pub use disk::NbdDisk;
pub use error::{Error, Result};
pub use uri::NbdUri;
