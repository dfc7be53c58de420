//! Compressed clusters: raw deflate (no zlib header, as QEMU writes it) and
//! zstd frames. Both decoders stop once the cluster is full, because the
//! stored length is rounded up to whole sectors and may hold trailing bytes.

use super::header::Compression;

/// Decompresses exactly `out.len()` bytes from `src`.
pub fn decompress(kind: Compression, src: &[u8], out: &mut [u8]) -> Result<(), String> {
    match kind {
        Compression::Deflate => {
            let mut d = flate2::Decompress::new(false);
            loop {
                let before_out = d.total_out();
                let before_in = d.total_in();
                let status = d
                    .decompress(
                        &src[before_in as usize..],
                        &mut out[before_out as usize..],
                        flate2::FlushDecompress::Finish,
                    )
                    .map_err(|e| format!("deflate: {e}"))?;
                let done = d.total_out() as usize;
                if done == out.len() {
                    return Ok(());
                }
                let stalled = d.total_out() == before_out && d.total_in() == before_in;
                if status == flate2::Status::StreamEnd || stalled {
                    return Err(format!("deflate stream ended after {done} of {} bytes", out.len()));
                }
            }
        }
        Compression::Zstd => {
            use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
            let mut d = Decoder::new().map_err(|e| format!("zstd: {e}"))?;
            let mut input = InBuffer::around(src);
            let mut output = OutBuffer::around(out);
            loop {
                let before = (input.pos(), output.pos());
                let hint = d.run(&mut input, &mut output).map_err(|e| format!("zstd: {e}"))?;
                if output.pos() == output.capacity() {
                    return Ok(());
                }
                if hint == 0 || (input.pos(), output.pos()) == before {
                    return Err(format!("zstd frame ended after {} of {} bytes", output.pos(), output.capacity()));
                }
            }
        }
    }
}

/// Compresses one cluster; `None` when that would not save space.
pub fn compress(kind: Compression, src: &[u8]) -> Option<Vec<u8>> {
    let out = match kind {
        Compression::Deflate => {
            let mut c = flate2::Compress::new(flate2::Compression::fast(), false);
            let mut out = Vec::with_capacity(src.len());
            match c.compress_vec(src, &mut out, flate2::FlushCompress::Finish) {
                Ok(flate2::Status::StreamEnd) => out,
                _ => return None,
            }
        }
        Compression::Zstd => zstd::bulk::compress(src, 1).ok()?,
    };
    // Keep a cluster uncompressed unless compression saves at least a sector.
    (out.len() + 512 <= src.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_trailing_garbage() {
        let src: Vec<u8> = (0..65536u32).map(|i| (i / 300) as u8).collect();
        for kind in [Compression::Deflate, Compression::Zstd] {
            let mut c = compress(kind, &src).expect("compressible");
            c.extend_from_slice(&[0xAA; 300]);
            let mut out = vec![0u8; src.len()];
            decompress(kind, &c, &mut out).unwrap();
            assert_eq!(out, src);
        }
    }

    #[test]
    fn short_or_bad_stream_is_an_error() {
        let src = vec![7u8; 4096];
        for kind in [Compression::Deflate, Compression::Zstd] {
            let c = compress(kind, &src).unwrap();
            let mut out = vec![0u8; 8192];
            assert!(decompress(kind, &c, &mut out).is_err());
            let mut out = vec![0u8; 4096];
            assert!(decompress(kind, &[0xff; 64], &mut out).is_err());
        }
    }
}
