//! CRC-32C (Castagnoli), as v5 XFS checksums its metadata (§"Metadata
//! Checksums"): the standard CRC over the whole object with its CRC field
//! taken as zero, stored little-endian.

use crate::volume::fs::FsError;

/// The reflected form of polynomial 0x1EDC6F41.
const POLY: u32 = 0x82F6_3B78;

/// Slicing-by-8 tables: `T[k][b]` is the CRC of byte `b` followed by `k`
/// zero bytes, so eight input bytes fold in with eight lookups. Listing a
/// folder checks one inode CRC per entry, which made the bytewise loop a
/// third of the time of listing 100,000 entries.
const T: [[u32; 256]; 8] = {
    let mut t = [[0u32; 256]; 8];
    t[0] = crate::volume::table::reflected_table(POLY);
    let mut i = 0;
    while i < 256 {
        let mut k = 1;
        while k < 8 {
            t[k][i] = (t[k - 1][i] >> 8) ^ t[0][(t[k - 1][i] & 0xFF) as usize];
            k += 1;
        }
        i += 1;
    }
    t
};

fn update(mut c: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(8);
    for ch in &mut chunks {
        let lo = u32::from_le_bytes([ch[0], ch[1], ch[2], ch[3]]) ^ c;
        let hi = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]);
        let byte = |v: u32, shift: u32| ((v >> shift) & 0xFF) as usize;
        c = T[7][byte(lo, 0)]
            ^ T[6][byte(lo, 8)]
            ^ T[5][byte(lo, 16)]
            ^ T[4][byte(lo, 24)]
            ^ T[3][byte(hi, 0)]
            ^ T[2][byte(hi, 8)]
            ^ T[1][byte(hi, 16)]
            ^ T[0][byte(hi, 24)];
    }
    for &b in chunks.remainder() {
        c = T[0][((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    c
}

/// CRC-32C of `data` with the four bytes at `crc_off` read as zero.
pub fn crc32c_without(data: &[u8], crc_off: usize) -> u32 {
    let c = update(0xFFFF_FFFF, &data[..crc_off]);
    let c = update(c, &[0; 4]);
    update(c, &data[crc_off + 4..]) ^ 0xFFFF_FFFF
}

/// Checks the CRC of a v5 metadata object read from byte `at` of the volume.
pub fn verify(data: &[u8], crc_off: usize, at: u64, what: &str) -> Result<(), FsError> {
    if data.len() < crc_off + 4 {
        return Err(FsError::corrupt(at, format!("{what} too short for its CRC")));
    }
    let stored = u32::from_le_bytes([data[crc_off], data[crc_off + 1], data[crc_off + 2], data[crc_off + 3]]);
    let computed = crc32c_without(data, crc_off);
    if stored != computed {
        return Err(FsError::corrupt(
            at,
            format!("{what}: CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value() {
        // The standard check value of CRC-32C (iSCSI) for "123456789".
        assert_eq!(update(0xFFFF_FFFF, b"123456789") ^ 0xFFFF_FFFF, 0xE306_9283);
        // Eight bytes at a time equals one at a time, at every length.
        let data: Vec<u8> = (0..100u32).map(|i| (i * 37 + 11) as u8).collect();
        for n in 0..data.len() {
            let bytewise =
                data[..n].iter().fold(0xFFFF_FFFFu32, |c, &b| T[0][((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8));
            assert_eq!(update(0xFFFF_FFFF, &data[..n]), bytewise, "{n}");
        }
        let mut with = b"12345\0\0\0\0".to_vec();
        let c = crc32c_without(&with, 5);
        with[5..9].copy_from_slice(&c.to_le_bytes());
        assert!(verify(&with, 5, 0, "x").is_ok());
        with[0] ^= 1;
        assert!(verify(&with, 5, 0, "x").is_err());
    }
}
