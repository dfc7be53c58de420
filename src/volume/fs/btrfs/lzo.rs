//! An LZO1X decompressor, bounds-checked: every input byte is read through
//! `Input`, every output byte is written through `Output`, and a match may
//! only reach back into bytes already written. Written from the format's
//! description (a literal run or a match per instruction, the low two bits
//! of a match's distance field giving 0 to 3 trailing literals); there is
//! no lean, safe crate for it.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LzoError {
    InputOverrun,
    OutputOverrun,
    /// A match reaches before the start of the output.
    LookBehind,
    /// The end marker came before the end of the input.
    TrailingInput,
}

struct Input<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> Result<usize, LzoError> {
        let v = *self.b.get(self.pos).ok_or(LzoError::InputOverrun)?;
        self.pos += 1;
        Ok(usize::from(v))
    }

    /// A run length: `base` plus 255 per zero byte plus the final byte.
    fn length(&mut self, base: usize) -> Result<usize, LzoError> {
        let mut t = base;
        loop {
            match self.byte()? {
                0 => t = t.checked_add(255).ok_or(LzoError::InputOverrun)?,
                v => return Ok(t + v),
            }
        }
    }

    fn le16(&mut self) -> Result<usize, LzoError> {
        Ok(self.byte()? | self.byte()? << 8)
    }
}

struct Output<'a> {
    b: &'a mut [u8],
    pos: usize,
}

impl Output<'_> {
    fn literals(&mut self, input: &mut Input, n: usize) -> Result<(), LzoError> {
        let src = input.b.get(input.pos..input.pos.checked_add(n).ok_or(LzoError::InputOverrun)?);
        let src = src.ok_or(LzoError::InputOverrun)?;
        let dst = self.b.get_mut(self.pos..self.pos + n).ok_or(LzoError::OutputOverrun)?;
        dst.copy_from_slice(src);
        input.pos += n;
        self.pos += n;
        Ok(())
    }

    /// Copies `n` bytes from `dist` back; the ranges may overlap (a run).
    fn copy_match(&mut self, dist: usize, n: usize) -> Result<(), LzoError> {
        let from = self.pos.checked_sub(dist).ok_or(LzoError::LookBehind)?;
        if self.pos + n > self.b.len() {
            return Err(LzoError::OutputOverrun);
        }
        for i in 0..n {
            self.b[self.pos + i] = self.b[from + i];
        }
        self.pos += n;
        Ok(())
    }
}

/// Decompresses one LZO1X stream from `src` into `dst`; returns the number
/// of bytes written.
pub fn decompress(src: &[u8], dst: &mut [u8]) -> Result<usize, LzoError> {
    let mut ip = Input { b: src, pos: 0 };
    let mut op = Output { b: dst, pos: 0 };
    // `state`: literals copied after the previous instruction (0 to 3, or 4
    // for a run of four or more), which decides what a small opcode means.
    let mut state = 0usize;
    if src.first().is_some_and(|&b| b > 17) {
        let t = ip.byte()? - 17;
        op.literals(&mut ip, t)?;
        state = if t < 4 { t } else { 4 };
    }
    loop {
        let t = ip.byte()?;
        let (dist, len, next) = if t >= 64 {
            // M2: 3 to 8 bytes, distance 1 to 2048.
            let b = ip.byte()?;
            (1 + ((t >> 2) & 7) + (b << 3), (t >> 5) + 1, t & 3)
        } else if t >= 32 {
            // M3: distance up to 16384.
            let len = if t & 31 == 0 { ip.length(31)? } else { t & 31 };
            let d = ip.le16()?;
            (1 + (d >> 2), len + 2, d & 3)
        } else if t >= 16 {
            // M4: distance 16385 to 49151; distance 0 ends the stream.
            let len = if t & 7 == 0 { ip.length(7)? } else { t & 7 };
            let d = ip.le16()?;
            let dist = ((t & 8) << 11) + (d >> 2);
            if dist == 0 {
                return if ip.pos == src.len() { Ok(op.pos) } else { Err(LzoError::TrailingInput) };
            }
            (dist + 0x4000, len + 2, d & 3)
        } else if state == 0 {
            // A literal run of 4 or more bytes.
            let n = if t == 0 { ip.length(15)? } else { t } + 3;
            op.literals(&mut ip, n)?;
            state = 4;
            continue;
        } else if state == 4 {
            // M1 after a literal run: 3 bytes, distance 2049 to 3072.
            let b = ip.byte()?;
            (1 + 0x800 + (t >> 2) + (b << 2), 3, t & 3)
        } else {
            // M1 after a match's trailing literals: 2 bytes, distance 1 to 1024.
            let b = ip.byte()?;
            (1 + (t >> 2) + (b << 2), 2, t & 3)
        };
        op.copy_match(dist, len)?;
        op.literals(&mut ip, next)?;
        state = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_then_match_then_end() {
        // 4 literals "abcd" (opcode 17 + 4), M2 copying 4 bytes from
        // distance 4 with no trailing literals, then the end marker.
        let dist = 4 - 1;
        let m2 = (((4 - 1) << 5) | ((dist & 7) << 2)) as u8;
        let src = [21, b'a', b'b', b'c', b'd', m2, (dist >> 3) as u8, 0x11, 0, 0];
        let mut out = [0u8; 16];
        assert_eq!(decompress(&src, &mut out), Ok(8));
        assert_eq!(&out[..8], b"abcdabcd");
    }

    #[test]
    fn hostile_streams_are_errors() {
        let mut out = [0u8; 8];
        assert_eq!(decompress(&[], &mut out), Err(LzoError::InputOverrun));
        // One literal, then a match 8 bytes back.
        assert_eq!(decompress(&[18, b'x', 92, 0, 0x11, 0, 0], &mut out), Err(LzoError::LookBehind));
        // More literals than the output holds.
        assert_eq!(decompress(&[30, 0, 0], &mut out), Err(LzoError::InputOverrun));
        let mut lits = vec![17 + 12];
        lits.extend([7u8; 12]);
        assert_eq!(decompress(&lits, &mut out), Err(LzoError::OutputOverrun));
        assert_eq!(decompress(&[0x11, 0, 0, 5], &mut out), Err(LzoError::TrailingInput));
    }

    #[test]
    fn random_streams_never_panic() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut out = vec![0u8; 4096];
        for round in 0..20_000 {
            let mut src = vec![0u8; 1 + round % 300];
            for b in &mut src {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let _ = decompress(&src, &mut out);
        }
    }
}
