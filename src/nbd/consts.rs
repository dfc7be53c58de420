//! Every number the NBD wire protocol defines that backchain uses, in one
//! place, named after the protocol document (NetworkBlockDevice's
//! `doc/proto.md`; section names in the comments). Limits of our own choosing
//! are at the end, each with the reason for its value.

// --- "Newstyle negotiation": the greeting -----------------------------------

/// `NBDMAGIC`: the first 8 bytes a server sends.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: newstyle greeting, and the magic of every option request.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every option reply ("Option reply").
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;

/// Handshake flags, server → client (16 bits).
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flags, client → server (32 bits): the same bits.
pub const CLIENT_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const CLIENT_NO_ZEROES: u32 = 1 << 1;

/// Zero padding after NBD_OPT_EXPORT_NAME's reply unless NO_ZEROES.
pub const EXPORT_NAME_PADDING: usize = 124;

// --- "Option types" -----------------------------------------------------------

pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;
pub const OPT_EXTENDED_HEADERS: u32 = 11;

// --- "Option reply types" -----------------------------------------------------

pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
/// Error replies have bit 31 set.
pub const REP_FLAG_ERROR: u32 = 1 << 31;
pub const REP_ERR_UNSUP: u32 = REP_FLAG_ERROR | 1;
pub const REP_ERR_POLICY: u32 = REP_FLAG_ERROR | 2;
pub const REP_ERR_INVALID: u32 = REP_FLAG_ERROR | 3;
pub const REP_ERR_PLATFORM: u32 = REP_FLAG_ERROR | 4;
pub const REP_ERR_TLS_REQD: u32 = REP_FLAG_ERROR | 5;
pub const REP_ERR_UNKNOWN: u32 = REP_FLAG_ERROR | 6;
pub const REP_ERR_SHUTDOWN: u32 = REP_FLAG_ERROR | 7;
pub const REP_ERR_BLOCK_SIZE_REQD: u32 = REP_FLAG_ERROR | 8;
pub const REP_ERR_TOO_BIG: u32 = REP_FLAG_ERROR | 9;

// --- "Information types" (NBD_REP_INFO payloads) ------------------------------

pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

// --- "Transmission flags" (16 bits) -------------------------------------------

pub const TFLAG_HAS_FLAGS: u16 = 1 << 0;
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
pub const TFLAG_SEND_FLUSH: u16 = 1 << 2;
pub const TFLAG_SEND_FUA: u16 = 1 << 3;
pub const TFLAG_SEND_TRIM: u16 = 1 << 5;
pub const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;
pub const TFLAG_SEND_FAST_ZERO: u16 = 1 << 11;

// --- "Transmission phase": requests -------------------------------------------

pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// magic u32, flags u16, type u16, cookie u64, offset u64, length u32.
pub const REQUEST_HEADER_LEN: usize = 28;

/// "Request types".
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;

/// "Command flags".
pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const CMD_FLAG_DF: u16 = 1 << 2;
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

// --- "Simple reply message" and "Structured reply chunk message" --------------

pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// magic u32, error u32, cookie u64.
pub const SIMPLE_REPLY_LEN: usize = 16;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
/// magic u32, flags u16, type u16, cookie u64, length u32.
pub const CHUNK_HEADER_LEN: usize = 20;
/// Extended headers' reply magic: never negotiated by us, named so that a
/// peer that sends one anyway gets a precise error.
pub const EXTENDED_REPLY_MAGIC: u32 = 0x6e8a_278c;

/// "Structured reply flags".
pub const REPLY_FLAG_DONE: u16 = 1 << 0;

/// "Structured reply types".
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// Error chunk types have bit 15 set.
pub const REPLY_TYPE_ERROR_BIT: u16 = 1 << 15;
pub const REPLY_TYPE_ERROR: u16 = REPLY_TYPE_ERROR_BIT | 1;
pub const REPLY_TYPE_ERROR_OFFSET: u16 = REPLY_TYPE_ERROR_BIT | 2;

// --- "Error values" -----------------------------------------------------------

pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const ENOMEM: u32 = 12;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const EOVERFLOW: u32 = 75;
pub const ENOTSUP: u32 = 95;
pub const ESHUTDOWN: u32 = 108;

// --- "Metadata querying": contexts and their flags ----------------------------

pub const CONTEXT_BASE_ALLOCATION: &str = "base:allocation";
/// `qemu:dirty-bitmap:NAME` (QEMU's docs/interop/nbd.rst).
pub const CONTEXT_DIRTY_BITMAP_PREFIX: &str = "qemu:dirty-bitmap:";
/// base:allocation flags.
pub const STATE_HOLE: u32 = 1 << 0;
pub const STATE_ZERO: u32 = 1 << 1;
/// qemu:dirty-bitmap flags.
pub const STATE_DIRTY: u32 = 1 << 0;

// --- Limits of our own -----------------------------------------------------------

/// The largest payload of a READ or WRITE: the protocol's default maximum
/// block size ("Block size constraints"), which every server accepts.
pub const MAX_PAYLOAD: u32 = 32 << 20;
/// The largest option request or option reply payload. Real ones are a few
/// hundred bytes (names are at most 4096 bytes by the spec); 64 KiB leaves
/// room for long lists of contexts while bounding what a peer can make us
/// buffer.
pub const MAX_OPTION_DATA: u32 = 64 << 10;
/// Export names, context names and messages: the spec's string limit.
pub const MAX_STRING: u32 = 4096;
/// Extents in one BLOCK_STATUS chunk: the brief's bound (2^20), which is
/// 8 MiB of payload.
pub const MAX_EXTENTS: u32 = 1 << 20;
/// The largest non-data chunk payload we accept: a full BLOCK_STATUS chunk.
pub const MAX_CHUNK_META: u32 = 4 + 8 * MAX_EXTENTS;
/// Option replies one option may produce before its ACK (META_CONTEXT and
/// INFO replies): bounds a server that never ends its answer.
pub const MAX_OPTION_REPLIES: usize = 1024;
/// Options one client may send before the transmission phase.
pub const MAX_OPTIONS: usize = 1024;
/// Meta context queries in one LIST/SET_META_CONTEXT.
pub const MAX_QUERIES: u32 = 256;
