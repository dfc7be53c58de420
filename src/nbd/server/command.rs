//! One transmission request against an export, from checks to the whole
//! reply's bytes. Blocking (exports read files); run off the async threads.
//! Error numbers follow the spec: EINVAL for bad ranges and flags, EPERM
//! for writes to a read-only export, ENOSPC for writes past the end.

use super::negotiate::{BASE_ALLOCATION_ID, Session};
use super::{ExportTable, MAX_READ_CHUNKS, MAX_STATUS_EXTENTS};
use crate::block::Alloc;
use crate::nbd::consts::*;
use crate::nbd::error::errno_of;
use crate::nbd::reply::encode_simple;
use crate::nbd::request::Request;
use crate::nbd::structured::{Descriptor, encode_block_status, encode_data_header, encode_error, encode_hole};

type Failure = (u32, String);

fn fail<T>(errno: u32, msg: impl Into<String>) -> Result<T, Failure> {
    Err((errno, msg.into()))
}

fn io_fail(e: std::io::Error) -> Failure {
    (errno_of(&e), e.to_string())
}

/// The reply to `req`, success or error.
pub fn execute(sess: &Session, table: &ExportTable, req: Request, payload: Option<Vec<u8>>) -> Vec<u8> {
    let result = if table.holds(&sess.name, &sess.export) {
        run(sess, req, payload)
    } else {
        fail(EIO, "the export was closed")
    };
    result.unwrap_or_else(|(errno, msg)| error_reply(req, errno, &msg, sess.structured))
}

/// An error reply: a structured ERROR chunk where the command's replies
/// are structured, else a simple reply (which has no message).
pub fn error_reply(req: Request, errno: u32, msg: &str, structured: bool) -> Vec<u8> {
    if structured && matches!(req.kind, CMD_READ | CMD_BLOCK_STATUS) {
        encode_error(req.cookie, errno, msg)
    } else {
        encode_simple(errno, req.cookie).to_vec()
    }
}

fn allowed_flags(kind: u16) -> Option<u16> {
    Some(match kind {
        CMD_READ | CMD_FLUSH => 0,
        CMD_WRITE | CMD_TRIM => CMD_FLAG_FUA,
        CMD_WRITE_ZEROES => CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO,
        CMD_BLOCK_STATUS => CMD_FLAG_REQ_ONE,
        _ => return None,
    })
}

fn run(sess: &Session, req: Request, payload: Option<Vec<u8>>) -> Result<Vec<u8>, Failure> {
    let Some(allowed) = allowed_flags(req.kind) else { return fail(EINVAL, format!("unknown command {}", req.kind)) };
    if req.flags & !allowed != 0 {
        return fail(EINVAL, format!("flags {:#x} for command {}", req.flags, req.kind));
    }
    if req.kind == CMD_WRITE && payload.is_none() {
        return fail(EINVAL, format!("write of {} bytes (limit {MAX_PAYLOAD})", req.len));
    }
    let export = &*sess.export;
    let writes = matches!(req.kind, CMD_WRITE | CMD_WRITE_ZEROES | CMD_TRIM | CMD_FLUSH);
    let writer = export.writer();
    if writes && writer.is_none() {
        return fail(EPERM, "read-only export");
    }
    if req.kind != CMD_FLUSH {
        let inside = req.end().is_some_and(|e| e <= export.size());
        match (inside, writes) {
            (true, _) => {}
            (false, true) => return fail(ENOSPC, "past the end of the export"),
            (false, false) => return fail(EINVAL, "past the end of the export"),
        }
        if req.len == 0 {
            return fail(EINVAL, "empty request");
        }
    }
    let fua = req.flags & CMD_FLAG_FUA != 0;
    let done = encode_simple(0, req.cookie).to_vec();
    match (req.kind, writer) {
        (CMD_READ, _) => read(sess, req),
        (CMD_BLOCK_STATUS, _) => block_status(sess, req),
        (CMD_WRITE, Some(w)) => {
            let data = payload.unwrap_or_default();
            w.write_at(req.offset, &data, fua).map_err(io_fail).map(|_| done)
        }
        (CMD_WRITE_ZEROES, Some(w)) => {
            if req.flags & CMD_FLAG_FAST_ZERO != 0 && !w.fast_zero() {
                return fail(ENOTSUP, "zeroing is not fast here");
            }
            let punch = req.flags & CMD_FLAG_NO_HOLE == 0;
            w.write_zeroes(req.offset, u64::from(req.len), punch, fua).map_err(io_fail).map(|_| done)
        }
        (CMD_TRIM, Some(w)) => w.trim(req.offset, u64::from(req.len), fua).map_err(io_fail).map(|_| done),
        (CMD_FLUSH, Some(w)) => w.flush().map_err(io_fail).map(|_| done),
        _ => fail(EINVAL, "unexpected command"),
    }
}

/// READ: with structured replies, holes (unallocated and zero runs) as
/// OFFSET_HOLE chunks and the rest as OFFSET_DATA; else a simple reply.
fn read(sess: &Session, req: Request) -> Result<Vec<u8>, Failure> {
    if req.len > MAX_PAYLOAD {
        return fail(EINVAL, format!("read of {} bytes (limit {MAX_PAYLOAD})", req.len));
    }
    let export = &*sess.export;
    let mut out = Vec::with_capacity(req.len as usize + 64);
    if !sess.structured {
        out.extend_from_slice(&encode_simple(0, req.cookie));
        let at = out.len();
        out.resize(at + req.len as usize, 0);
        export.read_at(req.offset, &mut out[at..]).map_err(io_fail)?;
        return Ok(out);
    }
    let segments = segments(sess, req)?;
    let last = segments.len() - 1;
    for (i, (offset, len, hole)) in segments.into_iter().enumerate() {
        let flags = if i == last { REPLY_FLAG_DONE } else { 0 };
        if hole {
            out.extend_from_slice(&encode_hole(flags, req.cookie, offset, len));
        } else {
            out.extend_from_slice(&encode_data_header(flags, req.cookie, offset, len));
            let at = out.len();
            out.resize(at + len as usize, 0);
            export.read_at(offset, &mut out[at..]).map_err(io_fail)?;
        }
    }
    Ok(out)
}

/// The read's range as (offset, len, hole) pieces: merged runs of the same
/// kind, at most [`MAX_READ_CHUNKS`] (the rest is sent as data).
fn segments(sess: &Session, req: Request) -> Result<Vec<(u64, u32, bool)>, Failure> {
    let end = req.offset + u64::from(req.len);
    let mut out: Vec<(u64, u32, bool)> = Vec::new();
    let mut at = req.offset;
    while at < end {
        if out.len() == MAX_READ_CHUNKS {
            out.push((at, (end - at) as u32, false));
            break;
        }
        let run = sess.export.status(at, end - at).map_err(io_fail)?;
        let len = run.len.min(end - at);
        if len == 0 || run.offset != at {
            return fail(EIO, format!("export status at {at} is not a run from there"));
        }
        let hole = run.alloc != Alloc::Data;
        match out.last_mut() {
            Some(last) if last.2 == hole => last.1 += len as u32,
            _ => out.push((at, len as u32, hole)),
        }
        at += len;
    }
    Ok(out)
}

/// BLOCK_STATUS for base:allocation: at most [`MAX_STATUS_EXTENTS`]
/// descriptors (one with REQ_ONE); the client asks again for the rest.
fn block_status(sess: &Session, req: Request) -> Result<Vec<u8>, Failure> {
    if !sess.allocation {
        return fail(EINVAL, "no metadata context was selected");
    }
    let end = req.offset + u64::from(req.len);
    let max = if req.flags & CMD_FLAG_REQ_ONE != 0 { 1 } else { MAX_STATUS_EXTENTS };
    let mut out: Vec<Descriptor> = Vec::new();
    let mut at = req.offset;
    while at < end {
        let run = sess.export.status(at, end - at).map_err(io_fail)?;
        let len = run.len.min(end - at);
        if len == 0 || run.offset != at {
            return fail(EIO, format!("export status at {at} is not a run from there"));
        }
        let flags = match run.alloc {
            Alloc::Data => 0,
            Alloc::Zero => STATE_ZERO,
            Alloc::Unallocated => STATE_HOLE | STATE_ZERO,
        };
        let full = out.len() == max;
        match out.last_mut() {
            Some(last) if last.flags == flags => last.len += len as u32,
            _ if full => break,
            _ => out.push(Descriptor { len: len as u32, flags }),
        }
        at += len;
    }
    Ok(encode_block_status(REPLY_FLAG_DONE, req.cookie, BASE_ALLOCATION_ID, &out))
}
