//! CRC-32C (Castagnoli), as v5 XFS checksums its metadata (§"Metadata
//! Checksums"): the standard CRC over the whole object with its CRC field
//! taken as zero, stored little-endian.

use crate::volume::fs::FsError;

/// The reflected form of polynomial 0x1EDC6F41.
const POLY: u32 = 0x82F6_3B78;

const TABLE: [u32; 256] = crate::volume::table::reflected_table(POLY);

fn update(mut c: u32, data: &[u8]) -> u32 {
    for &b in data {
        c = TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
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
        let mut with = b"12345\0\0\0\0".to_vec();
        let c = crc32c_without(&with, 5);
        with[5..9].copy_from_slice(&c.to_le_bytes());
        assert!(verify(&with, 5, 0, "x").is_ok());
        with[0] ^= 1;
        assert!(verify(&with, 5, 0, "x").is_err());
    }
}
