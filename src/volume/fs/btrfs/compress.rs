//! Compressed extents ("Compression"): zlib streams, zstd frames, and
//! btrfs's own LZO layout: a 4-byte total length, then segments of a 4-byte
//! length and an LZO1X stream that each expand to at most one sector, where
//! a length field never straddles a sector boundary (fs/btrfs/lzo.c).
//! Output is bounded by the extent's `ram_bytes`; a stream that ends early
//! leaves zeros, as the kernel does.

use super::consts::*;
use super::le::u32_at;
use super::lzo;

/// Expands `src` (a whole compressed extent) into exactly `ram` bytes.
pub fn decompress(kind: u8, src: &[u8], ram: usize, sectorsize: usize) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; ram];
    match kind {
        COMPRESS_ZLIB => zlib(src, &mut out)?,
        COMPRESS_ZSTD => zstd(src, &mut out)?,
        COMPRESS_LZO => lzo_segments(src, &mut out, sectorsize)?,
        other => return Err(format!("compression type {other}")),
    }
    Ok(out)
}

fn zlib(src: &[u8], out: &mut [u8]) -> Result<(), String> {
    let mut d = flate2::Decompress::new(true);
    loop {
        let (inp, outp) = (d.total_in() as usize, d.total_out() as usize);
        if outp == out.len() {
            return Ok(());
        }
        let status = d
            .decompress(&src[inp..], &mut out[outp..], flate2::FlushDecompress::Finish)
            .map_err(|e| format!("zlib: {e}"))?;
        let stalled = (d.total_in() as usize, d.total_out() as usize) == (inp, outp);
        if status == flate2::Status::StreamEnd || stalled {
            return Ok(());
        }
    }
}

fn zstd(src: &[u8], out: &mut [u8]) -> Result<(), String> {
    use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
    let mut d = Decoder::new().map_err(|e| format!("zstd: {e}"))?;
    let mut input = InBuffer::around(src);
    let mut output = OutBuffer::around(out);
    loop {
        let before = (input.pos(), output.pos());
        // The extent is padded to a sector after the frame: stop at its end.
        let hint = d.run(&mut input, &mut output).map_err(|e| format!("zstd: {e}"))?;
        if hint == 0 || output.pos() == output.capacity() || (input.pos(), output.pos()) == before {
            return Ok(());
        }
    }
}

fn lzo_segments(src: &[u8], out: &mut [u8], sectorsize: usize) -> Result<(), String> {
    if src.len() < LZO_LEN {
        return Err("lzo: extent shorter than its header".into());
    }
    let total = u32_at(src, 0) as usize;
    if total > src.len() || total < LZO_LEN {
        return Err(format!("lzo: total length {total} of a {}-byte extent", src.len()));
    }
    let (mut pos, mut done) = (LZO_LEN, 0usize);
    while done < out.len() && pos < total {
        // A segment header never crosses a sector: skip the padding.
        let left_in_sector = sectorsize - pos % sectorsize;
        if left_in_sector < LZO_LEN {
            pos += left_in_sector;
        }
        if pos + LZO_LEN > total {
            break;
        }
        let len = u32_at(src, pos) as usize;
        pos += LZO_LEN;
        let seg = src.get(pos..pos.saturating_add(len)).filter(|_| pos + len <= total);
        let seg = seg.ok_or_else(|| format!("lzo: segment of {len} bytes at {pos} leaves the extent"))?;
        let room = (out.len() - done).min(sectorsize);
        let n = lzo::decompress(seg, &mut out[done..done + room]).map_err(|e| format!("lzo: {e:?} at {pos}"))?;
        done += n;
        pos += len;
    }
    Ok(())
}
