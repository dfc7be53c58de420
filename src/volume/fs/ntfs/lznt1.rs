//! LZNT1 decompression of one NTFS compression unit.
//!
//! The `ntfs` crate returns the on-disk (compressed) bytes of a compressed
//! attribute without complaint, so backchain decodes compression units itself.
//!
//! A compressed unit is a sequence of chunks. Each chunk starts with a 16-bit
//! little-endian header: bits 0..12 hold the chunk's data length minus 3
//! (header included), bits 12..15 a signature that is always 3, bit 15 set
//! when the chunk is compressed. A zero header ends the stream. Every chunk
//! stands for exactly [`CHUNK_SIZE`] bytes of output: an uncompressed chunk
//! holds them verbatim, a compressed chunk that expands to fewer bytes is
//! padded with zeros. A compressed chunk is a series of groups: one flag byte,
//! then eight tokens (least significant flag bit first); a clear bit is a
//! literal byte, a set bit a 16-bit back-reference whose split between offset
//! and length bits depends on how far into the chunk the output is.
#![forbid(unsafe_code)]

use std::fmt;

/// Decompressed size of one chunk.
pub const CHUNK_SIZE: usize = 4096;
/// Header bits holding the chunk length minus 3.
const HEADER_LEN_MASK: u16 = 0x0fff;
/// Header bit: the chunk is compressed.
const HEADER_COMPRESSED: u16 = 0x8000;
/// Header bits 12..15: signature, always 3 for LZNT1.
const HEADER_SIGNATURE_MASK: u16 = 0x7000;
const HEADER_SIGNATURE: u16 = 0x3000;

/// Why a compression unit could not be decoded (byte offset into the
/// compressed input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lznt1Error {
    pub offset: usize,
    pub what: &'static str,
}

impl fmt::Display for Lznt1Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LZNT1: {} at byte {} of the compressed unit", self.what, self.offset)
    }
}

impl std::error::Error for Lznt1Error {}

fn err(offset: usize, what: &'static str) -> Lznt1Error {
    Lznt1Error { offset, what }
}

/// Decompresses `input` into `out`, filling all of `out` (zeros after the end
/// of the stream). `out.len()` is the compression unit size. Output a stream
/// would produce beyond `out.len()` is an error, as is any truncated or
/// malformed chunk.
pub fn decompress(input: &[u8], out: &mut [u8]) -> Result<(), Lznt1Error> {
    let mut ip = 0usize;
    let mut op = 0usize;
    while op < out.len() && ip + 2 <= input.len() {
        let header = u16::from_le_bytes([input[ip], input[ip + 1]]);
        if header == 0 {
            break;
        }
        if header & HEADER_SIGNATURE_MASK != HEADER_SIGNATURE {
            return Err(err(ip, "bad chunk signature"));
        }
        let data_len = usize::from(header & HEADER_LEN_MASK) + 1;
        let data_start = ip + 2;
        let data_end = data_start + data_len;
        if data_end > input.len() {
            return Err(err(ip, "chunk runs past the end of the unit"));
        }
        let chunk_end = op + CHUNK_SIZE;
        if chunk_end > out.len() {
            return Err(err(ip, "chunk runs past the end of the compression unit"));
        }
        let chunk_out = &mut out[op..chunk_end];
        if header & HEADER_COMPRESSED == 0 {
            // Stored chunk: always a full chunk of bytes.
            if data_len != CHUNK_SIZE {
                return Err(err(ip, "uncompressed chunk is not 4096 bytes"));
            }
            chunk_out.copy_from_slice(&input[data_start..data_end]);
        } else {
            let n = decompress_chunk(&input[data_start..data_end], chunk_out)
                .map_err(|e| err(data_start + e, "bad token"))?;
            chunk_out[n..].fill(0);
        }
        op = chunk_end;
        ip = data_end;
    }
    out[op..].fill(0);
    Ok(())
}

/// Decodes one compressed chunk into `out` (at most [`CHUNK_SIZE`] bytes);
/// returns the number of bytes produced, or the input offset of a bad token.
fn decompress_chunk(input: &[u8], out: &mut [u8]) -> Result<usize, usize> {
    let mut ip = 0usize;
    let mut op = 0usize;
    while ip < input.len() {
        let flags = input[ip];
        ip += 1;
        for bit in 0..8 {
            if ip >= input.len() {
                return Ok(op);
            }
            if flags & (1 << bit) == 0 {
                if op >= out.len() {
                    return Err(ip);
                }
                out[op] = input[ip];
                op += 1;
                ip += 1;
                continue;
            }
            if ip + 2 > input.len() {
                return Err(ip);
            }
            let token = u16::from_le_bytes([input[ip], input[ip + 1]]);
            if op == 0 {
                return Err(ip);
            }
            // The further into the chunk, the more bits go to the offset:
            // 4 offset bits for the first 16 bytes, one more per doubling.
            let mut offset_bits = 4u32;
            let mut p = op - 1;
            while p >= 0x10 {
                offset_bits += 1;
                p >>= 1;
            }
            let length_bits = 16 - offset_bits;
            let back = usize::from(token >> length_bits) + 1;
            let len = usize::from(token & ((1u16 << length_bits) - 1)) + 3;
            if back > op || op + len > out.len() {
                return Err(ip);
            }
            // Byte by byte: the source may overlap what this copy writes.
            for i in 0..len {
                out[op + i] = out[op + i - back];
            }
            op += len;
            ip += 2;
        }
    }
    Ok(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test-only LZNT1 encoder that only emits literals and one kind of
    /// back-reference (distance `back`), enough to exercise the decoder's
    /// offset/length split at every position.
    fn chunk_header(len: usize, compressed: bool) -> [u8; 2] {
        let h = (len as u16 - 3) | HEADER_SIGNATURE | if compressed { HEADER_COMPRESSED } else { 0 };
        h.to_le_bytes()
    }

    #[test]
    fn literal_only_chunk() {
        let text = b"abcdefghij";
        let mut chunk = vec![0u8]; // flags: 8 literals
        chunk.extend_from_slice(&text[..8]);
        chunk.push(0);
        chunk.extend_from_slice(&text[8..]);
        let mut input = chunk_header(chunk.len() + 2, true).to_vec();
        input.extend_from_slice(&chunk);
        let mut out = vec![0xffu8; 2 * CHUNK_SIZE];
        decompress(&input, &mut out).unwrap();
        assert_eq!(&out[..10], text);
        assert!(out[10..].iter().all(|&b| b == 0));
    }

    #[test]
    fn back_reference_with_overlap() {
        // "ab" then a reference back 2 with length 10 -> "ab" * 6.
        // At output position 2, 4 offset bits / 12 length bits.
        let token: u16 = ((2 - 1) << 12) | (10 - 3);
        let mut chunk = vec![0b0000_0100u8, b'a', b'b'];
        chunk.extend_from_slice(&token.to_le_bytes());
        let mut input = chunk_header(chunk.len() + 2, true).to_vec();
        input.extend_from_slice(&chunk);
        let mut out = vec![0u8; CHUNK_SIZE];
        decompress(&input, &mut out).unwrap();
        assert_eq!(&out[..12], b"abababababab");
    }

    #[test]
    fn offset_bits_grow_with_position() {
        // 40 literals, then a reference at position 40: offset bits = 4 + 2
        // (39 >> 1 >> 1 = 9 < 16), length bits = 10.
        let lits: Vec<u8> = (0..40u8).collect();
        let mut chunk = Vec::new();
        for group in lits.chunks(8) {
            chunk.push(0);
            chunk.extend_from_slice(group);
        }
        let back = 33usize;
        let len = 20usize;
        let token: u16 = (((back - 1) as u16) << 10) | (len as u16 - 3);
        chunk.push(1);
        chunk.extend_from_slice(&token.to_le_bytes());
        let mut input = chunk_header(chunk.len() + 2, true).to_vec();
        input.extend_from_slice(&chunk);
        let mut out = vec![0u8; CHUNK_SIZE];
        decompress(&input, &mut out).unwrap();
        let mut expect = lits.clone();
        for i in 0..len {
            expect.push(expect[40 + i - back]);
        }
        assert_eq!(&out[..60], &expect[..]);
    }

    #[test]
    fn uncompressed_chunk_then_compressed_chunk() {
        let raw: Vec<u8> = (0..CHUNK_SIZE).map(|i| (i * 7 % 251) as u8).collect();
        let mut input = chunk_header(CHUNK_SIZE + 2, false).to_vec();
        input.extend_from_slice(&raw);
        let chunk = [0u8, b'x', b'y'];
        input.extend_from_slice(&chunk_header(chunk.len() + 2, true));
        input.extend_from_slice(&chunk);
        input.extend_from_slice(&[0, 0]);
        let mut out = vec![0xaau8; 3 * CHUNK_SIZE];
        decompress(&input, &mut out).unwrap();
        assert_eq!(&out[..CHUNK_SIZE], &raw[..]);
        assert_eq!(&out[CHUNK_SIZE..CHUNK_SIZE + 2], b"xy");
        assert!(out[CHUNK_SIZE + 2..].iter().all(|&b| b == 0));
    }

    #[test]
    fn truncated_chunk_is_an_error() {
        let mut input = chunk_header(100, true).to_vec();
        input.extend_from_slice(&[0u8; 20]);
        let mut out = vec![0u8; CHUNK_SIZE];
        let e = decompress(&input, &mut out).unwrap_err();
        assert_eq!(e.offset, 0);
    }

    #[test]
    fn reference_before_start_is_an_error() {
        let token: u16 = (5 << 12) | 1; // back 6 at position 1
        let chunk = [0b10u8, b'a', token.to_le_bytes()[0], token.to_le_bytes()[1]];
        let mut input = chunk_header(chunk.len() + 2, true).to_vec();
        input.extend_from_slice(&chunk);
        let mut out = vec![0u8; CHUNK_SIZE];
        assert!(decompress(&input, &mut out).is_err());
    }

    #[test]
    fn bad_signature_and_overlong_output_are_errors() {
        let mut out = vec![0u8; CHUNK_SIZE];
        assert!(decompress(&[0x05, 0x80, 0, b'a', b'b', b'c'], &mut out).is_err());
        // A back-reference that would run past the 4096-byte chunk.
        let token: u16 = 0x0fff; // back 1, length 4098, at position 2
        let chunk = [0b100u8, b'a', b'b', token.to_le_bytes()[0], token.to_le_bytes()[1]];
        let mut input = chunk_header(chunk.len() + 2, true).to_vec();
        input.extend_from_slice(&chunk);
        assert!(decompress(&input, &mut out).is_err());
    }
}
