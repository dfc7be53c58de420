//! Bounds-checked big-endian reads from a received payload: every field a
//! peer sends is taken through here, so a short payload is a clear
//! [`Error::Corrupt`] naming the field, never a panic.

use super::error::{Error, Result};

/// A cursor over a payload that a peer sent.
pub struct Fields<'a> {
    what: &'static str,
    data: &'a [u8],
}

impl<'a> Fields<'a> {
    /// `what` names the payload in errors ("NBD_REP_INFO", ...).
    pub fn new(what: &'static str, data: &'a [u8]) -> Self {
        Fields { what, data }
    }

    pub fn bytes(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        if self.data.len() < n {
            return Err(Error::Corrupt(format!(
                "{}: {field} needs {n} bytes, only {} left",
                self.what,
                self.data.len()
            )));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    pub fn u16(&mut self, field: &str) -> Result<u16> {
        Ok(u16::from_be_bytes(self.bytes(2, field)?.try_into().expect("2 bytes")))
    }

    pub fn u32(&mut self, field: &str) -> Result<u32> {
        Ok(u32::from_be_bytes(self.bytes(4, field)?.try_into().expect("4 bytes")))
    }

    pub fn u64(&mut self, field: &str) -> Result<u64> {
        Ok(u64::from_be_bytes(self.bytes(8, field)?.try_into().expect("8 bytes")))
    }

    /// A string of `len` bytes, at most `max`; invalid UTF-8 is refused
    /// (names and contexts are UTF-8 by the spec).
    pub fn string(&mut self, len: usize, max: u32, field: &str) -> Result<String> {
        if len > max as usize {
            return Err(Error::Corrupt(format!("{}: {field} of {len} bytes (limit {max})", self.what)));
        }
        let b = self.bytes(len, field)?;
        String::from_utf8(b.to_vec()).map_err(|_| Error::Corrupt(format!("{}: {field} is not UTF-8", self.what)))
    }

    /// A message: lossy, since it is only ever shown.
    pub fn message(&mut self, len: usize) -> Result<String> {
        let b = self.bytes(len, "message")?;
        Ok(String::from_utf8_lossy(b).into_owned())
    }

    pub fn remaining(&self) -> usize {
        self.data.len()
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    /// Refuses trailing bytes: a payload longer than its fields is corrupt.
    pub fn end(&self) -> Result<()> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(Error::Corrupt(format!("{}: {} unexpected trailing bytes", self.what, self.data.len())))
        }
    }
}

/// Appends big-endian fields to an outgoing message.
pub trait Put {
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
    /// A u32 length followed by the string's bytes.
    fn put_str32(&mut self, s: &str);
}

impl Put for Vec<u8> {
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_str32(&mut self, s: &str) {
        // Names we send come from our own callers and the spec bounds them
        // to 4096 bytes; longer ones are refused before they get here.
        self.put_u32(s.len() as u32);
        self.extend_from_slice(s.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_payloads_are_corrupt_not_panics() {
        let mut f = Fields::new("test", &[0, 1, 2]);
        assert_eq!(f.u16("a").unwrap(), 1);
        let e = f.u32("b").unwrap_err();
        assert!(e.to_string().contains("b needs 4 bytes, only 1 left"), "{e}");
        let mut f = Fields::new("test", &[0xff, 0xfe]);
        assert!(f.string(2, 10, "name").is_err());
        let mut f = Fields::new("test", b"abcdef");
        assert!(f.string(6, 4, "name").unwrap_err().to_string().contains("limit 4"));
    }
}
