//! Downloads: a file with ranges, validators and a UTF-8 file name; a folder
//! as a zip or tar.gz streamed while it is produced.
//!
//! Bytes come from a blocking task through a bounded channel: the server
//! holds at most `CHANNEL_DEPTH` chunks per download, and a client that goes
//! away closes the channel, which stops the task.

use super::St;
use super::chunks::ChunkPool;
use super::error::{ApiError, ApiResult};
use super::query::Query;
use super::restore::session;
use crate::archive;
use crate::restore::{Session, Transfer};
use crate::tree::{Ino, Node, Tree};
use crate::util::time::civil_from_days;
use crate::volume::fs::{NodeKind, Timestamp};
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;

/// Bytes per chunk sent to the client (1 MiB: loopback downloads run
/// markedly faster than with 256 KiB in bench/run.py http-download).
const CHUNK: usize = 1 << 20;
/// Chunks buffered per download between the reader and the socket.
const CHANNEL_DEPTH: usize = 4;
/// Idle chunk buffers a download keeps for reuse (see `chunks.rs`).
const POOL_KEEP: usize = CHANNEL_DEPTH + 2;

/// RFC 5987 `attr-char`: what stays unencoded in `filename*`.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

type Chunk = io::Result<Bytes>;

/// The response body fed by `rx`; `transfer` lasts as long as the body.
fn body_from(rx: mpsc::Receiver<Chunk>, transfer: Transfer) -> Body {
    Body::from_stream(futures_util::stream::unfold((rx, transfer), |(mut rx, t)| async move {
        rx.recv().await.map(|c| (c, (rx, t)))
    }))
}

/// `Content-Disposition: attachment` with an ASCII fallback and the exact
/// UTF-8 name (RFC 6266, RFC 5987).
pub fn content_disposition(name: &[u8]) -> HeaderValue {
    let utf8 = String::from_utf8_lossy(name);
    let ascii: String =
        utf8.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    let ascii = if ascii.trim().is_empty() { "download".to_string() } else { ascii };
    let exact = percent_encoding::utf8_percent_encode(&utf8, ATTR_CHAR);
    // OK to unwrap: both parts are visible ASCII by construction.
    HeaderValue::from_str(&format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{exact}")).unwrap()
}

/// IMF-fixdate (RFC 9110 section 5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(t: Timestamp) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = t.secs.div_euclid(86_400);
    let rem = t.secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m as usize).saturating_sub(1) % 12],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn etag(s: &Session, n: &Node) -> String {
    let b = blake3::hash(format!("{}:{:?}", s.backup_id, s.disk_index).as_bytes());
    format!("\"{}-{:x}-{:x}-{:x}.{:x}\"", &b.to_hex()[..8], n.ino, n.size, n.mtime.secs, n.mtime.nanos)
}

#[derive(Debug, PartialEq)]
enum Range {
    /// No usable Range header: send everything.
    Whole,
    /// Inclusive byte range.
    Part(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range (RFC 9110 section 14.1.2). Several ranges, or syntax
/// that does not parse, are ignored and the whole file is sent.
fn parse_range(h: &str, size: u64) -> Range {
    let Some(spec) = h.trim().strip_prefix("bytes=") else { return Range::Whole };
    if spec.contains(',') {
        return Range::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return Range::Whole };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        return match b.parse::<u64>() {
            Ok(0) => Range::Unsatisfiable,
            Ok(_) if size == 0 => Range::Unsatisfiable,
            Ok(n) => Range::Part(size.saturating_sub(n), size - 1),
            Err(_) => Range::Whole,
        };
    }
    let Ok(start) = a.parse::<u64>() else { return Range::Whole };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return Range::Whole,
        }
    };
    if start >= size {
        return Range::Unsatisfiable;
    }
    Range::Part(start, end.min(size - 1))
}

fn file_name_of(path: &[u8], fallback: &str) -> Vec<u8> {
    match path.split(|&b| b == b'/').rfind(|c| !c.is_empty()) {
        Some(n) => n.to_vec(),
        None => fallback.as_bytes().to_vec(),
    }
}

async fn resolve(s: &Arc<Session>, path: Vec<u8>) -> ApiResult<Node> {
    let s = s.clone();
    Ok(tokio::task::spawn_blocking(move || s.tree.resolve_bytes(&path)).await??)
}

pub async fn download(
    State(st): St,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    method: Method,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let s = session(&st, &id)?;
    let q = Query::parse(q.as_deref())?;
    let path = q.path()?;
    let node = resolve(&s, path.clone()).await?;
    match node.kind {
        NodeKind::File => {}
        NodeKind::Directory => return archive_response(&s, &node, &path, Format::Zip, &method),
        NodeKind::Symlink => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "is_a_symlink",
                "a symbolic link has no bytes: see its target in the listing",
            ));
        }
        k => {
            let what = format!("a {} has no bytes: see its type in the listing", k.name());
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "not_a_file", what));
        }
    }
    let tag = etag(&s, &node);
    let mut b = Response::builder()
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &tag)
        .header(header::LAST_MODIFIED, http_date(node.mtime))
        .header(header::CONTENT_DISPOSITION, content_disposition(&file_name_of(&path, "download")))
        .header(header::CONTENT_TYPE, "application/octet-stream");
    let inm = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
    if inm.is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*")) {
        return b.status(StatusCode::NOT_MODIFIED).body(Body::empty()).map_err(|e| ApiError::internal(e.to_string()));
    }
    // If-Range: a range only applies to the version the client has.
    let if_range_ok = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()).is_none_or(|v| v.trim() == tag);
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(h) if if_range_ok => parse_range(h, node.size),
        _ => Range::Whole,
    };
    let (start, len) = match range {
        Range::Whole => {
            b = b.status(StatusCode::OK);
            (0, node.size)
        }
        Range::Part(a, z) => {
            b = b
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {a}-{z}/{}", node.size));
            (a, z - a + 1)
        }
        Range::Unsatisfiable => {
            let mut e = axum::response::IntoResponse::into_response(ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the file has {} bytes", node.size),
            ));
            // OK to unwrap: digits and ASCII.
            e.headers_mut()
                .insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes */{}", node.size)).unwrap());
            return Ok(e);
        }
    };
    b = b.header(header::CONTENT_LENGTH, len);
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        stream_file(s.tree.clone(), node.ino, start, len, s.transfer())
    };
    b.body(body).map_err(|e| ApiError::internal(e.to_string()))
}

/// Streams `len` bytes of file `ino` from `start`; `transfer` ends with
/// both the reading task and the body.
fn stream_file(tree: Tree, ino: Ino, start: u64, len: u64, transfer: Transfer) -> Body {
    let (tx, rx) = mpsc::channel::<Chunk>(CHANNEL_DEPTH);
    let pool = ChunkPool::new(CHUNK, POOL_KEEP);
    let producing = transfer.clone();
    tokio::task::spawn_blocking(move || {
        let _transfer = producing;
        let end = start + len;
        let mut at = start;
        while at < end {
            let want = usize::try_from(end - at).unwrap_or(usize::MAX).min(CHUNK);
            // Bytes stored as they are in a mapped image go out without a copy.
            let item = if let Some(e) = tree.locate(ino, at, want as u64).filter(|e| e.is_backed()) {
                at += e.len();
                Ok(Bytes::from_owner(e))
            } else {
                let mut buf = pool.take();
                match tree.read(ino, at, &mut buf[..want]) {
                    Ok(0) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("the file ended at byte {at}"))),
                    Ok(n) => {
                        at += n as u64;
                        Ok(pool.freeze(buf, n))
                    }
                    Err(e) => Err(io::Error::other(e.to_string())),
                }
            };
            let failed = item.is_err();
            // A closed channel: the client went away.
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    body_from(rx, transfer)
}

#[derive(Clone, Copy)]
enum Format {
    Zip,
    TarGz,
}

pub async fn download_directory(
    State(st): St,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    method: Method,
) -> ApiResult<Response> {
    let s = session(&st, &id)?;
    let q = Query::parse(q.as_deref())?;
    let path = q.path()?;
    let format = match q.str("format")?.unwrap_or("zip") {
        "zip" => Format::Zip,
        "tar.gz" | "tgz" => Format::TarGz,
        other => return Err(ApiError::bad_request(format!("format {other:?}: use zip or tar.gz"))),
    };
    let node = resolve(&s, path.clone()).await?;
    if node.kind != NodeKind::Directory {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "not_a_directory", "not a folder: use download instead"));
    }
    archive_response(&s, &node, &path, format, &method)
}

fn archive_response(
    s: &Arc<Session>,
    node: &Node,
    path: &[u8],
    format: Format,
    method: &Method,
) -> ApiResult<Response> {
    let mut name = file_name_of(path, &s.backup_id);
    let (ext, mime): (&[u8], _) = match format {
        Format::Zip => (b".zip", "application/zip"),
        Format::TarGz => (b".tar.gz", "application/gzip"),
    };
    name.extend_from_slice(ext);
    let b = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, mime)
        .header(header::CONTENT_DISPOSITION, content_disposition(&name));
    let body = if *method == Method::HEAD {
        // A body of unknown length, as GET's stream: HEAD must not claim
        // `Content-Length: 0` for an archive GET would send.
        Body::from_stream(futures_util::stream::empty::<Result<axum::body::Bytes, io::Error>>())
    } else {
        stream_archive(s.tree.clone(), node.ino, format, s.transfer())
    };
    b.body(body).map_err(|e| ApiError::internal(e.to_string()))
}

/// Feeds archive bytes into the channel in `CHUNK`s.
struct ChannelWriter {
    tx: mpsc::Sender<Chunk>,
    pool: Arc<ChunkPool>,
    buf: Vec<u8>,
    /// Bytes of `buf` filled so far.
    filled: usize,
    cancel: Arc<AtomicBool>,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<Chunk>, cancel: Arc<AtomicBool>) -> Self {
        let pool = ChunkPool::new(CHUNK, POOL_KEEP);
        ChannelWriter { tx, buf: pool.take(), pool, filled: 0, cancel }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.filled == 0 {
            return Ok(());
        }
        let chunk = self.pool.freeze(std::mem::replace(&mut self.buf, self.pool.take()), self.filled);
        self.filled = 0;
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            self.cancel.store(true, Ordering::Relaxed);
            io::Error::new(io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.filled);
        self.buf[self.filled..self.filled + n].copy_from_slice(&data[..n]);
        self.filled += n;
        if self.filled >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

fn stream_archive(tree: Tree, dir: Ino, format: Format, transfer: Transfer) -> Body {
    let (tx, rx) = mpsc::channel::<Chunk>(CHANNEL_DEPTH);
    let producing = transfer.clone();
    tokio::task::spawn_blocking(move || {
        let _transfer = producing;
        let cancel = Arc::new(AtomicBool::new(false));
        let w = ChannelWriter::new(tx.clone(), cancel.clone());
        let r = match format {
            Format::Zip => archive::write_zip(&tree, dir, w, &cancel),
            Format::TarGz => archive::write_tar_gz(&tree, dir, w, &cancel),
        };
        match r {
            Ok(mut w) => {
                let _ = w.flush();
            }
            // Aborts the response, so that the client sees a broken
            // transfer rather than an archive that looks complete.
            Err(e) => {
                let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
            }
        }
    });
    body_from(rx, transfer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Range::Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), Range::Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), Range::Part(90, 99));
        assert_eq!(parse_range("bytes=-1000", 100), Range::Part(0, 99));
        assert_eq!(parse_range("bytes=50-1000", 100), Range::Part(50, 99));
        assert_eq!(parse_range("bytes=100-", 100), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), Range::Whole);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Range::Whole);
        assert_eq!(parse_range("items=0-1", 100), Range::Whole);
    }

    #[test]
    fn dates_and_names() {
        assert_eq!(http_date(Timestamp { secs: 784_111_777, nanos: 0 }), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(Timestamp { secs: 0, nanos: 0 }), "Thu, 01 Jan 1970 00:00:00 GMT");
        let h = content_disposition("naïve \"x\".txt".as_bytes());
        assert_eq!(
            h.to_str().unwrap(),
            "attachment; filename=\"na_ve _x_.txt\"; filename*=UTF-8''na%C3%AFve%20%22x%22.txt"
        );
    }
}
