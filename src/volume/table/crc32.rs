//! CRC-32 as GPT uses it (UEFI spec 2.10, section 5.3.2: the IEEE 802.3
//! polynomial, reflected, initial value and final XOR 0xFFFFFFFF).

/// The reflected form of polynomial 0x04C11DB7.
const POLY: u32 = 0xEDB8_8320;

const TABLE: [u32; 256] = reflected_table(POLY);

/// The byte-at-a-time table of a reflected CRC-32 with polynomial `poly`
/// (also used for CRC-32C by XFS).
pub const fn reflected_table(poly: u32) -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ poly } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

/// Incremental CRC-32: `update` over the parts, then `finish`.
#[derive(Debug, Clone, Copy)]
pub struct Crc32(u32);

impl Crc32 {
    pub fn new() -> Self {
        Crc32(0xFFFF_FFFF)
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0 = crc32_update(self.0, data);
    }
    pub fn finish(self) -> u32 {
        self.0 ^ 0xFFFF_FFFF
    }
}

/// The CRC-32 register after `data`, starting from `state`, with no
/// inversion before or after: LVM2 seeds this form with its own value and
/// stores the register as is (LVM2 `lib/misc/crc.c`).
pub fn crc32_update(state: u32, data: &[u8]) -> u32 {
    let mut c = state;
    for &b in data {
        c = TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    c
}

/// CRC-32 of one buffer.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(data);
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value() {
        // The standard check value of CRC-32/ISO-HDLC (the "123456789" test vector).
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        let mut c = Crc32::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.finish(), 0xCBF4_3926);
    }

    #[test]
    fn matches_flate2_crc() {
        // flate2 (already a dependency) carries an independent CRC-32.
        let data: Vec<u8> = (0..10_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let mut h = flate2::Crc::new();
        h.update(&data);
        assert_eq!(crc32(&data), h.sum());
    }
}
