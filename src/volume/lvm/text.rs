//! The LVM2 text format (the one its metadata and `lvm.conf` share):
//! `name = value` assignments and `name { ... }` sections, where a value is
//! a number, a `"string"` (with `\"` and `\\` escapes) or a `[list]` of them,
//! and `#` starts a comment. Parsed with [`MAX_DEPTH`], [`MAX_ITEMS`] and
//! [`MAX_STRING_LEN`] so that no input can make it recurse or allocate
//! without bound.

use super::LvmError;
use super::consts::{MAX_DEPTH, MAX_ITEMS, MAX_STRING_LEN, MAX_TEXT_LEN};

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Value(Value),
    Section(Section),
}

/// A section's entries in text order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Section {
    pub entries: Vec<(String, Item)>,
}

impl Section {
    /// The first entry named `key`.
    pub fn get(&self, key: &str) -> Option<&Item> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    pub fn section(&self, key: &str) -> Option<&Section> {
        match self.get(key)? {
            Item::Section(s) => Some(s),
            Item::Value(_) => None,
        }
    }
    pub fn value(&self, key: &str) -> Option<&Value> {
        match self.get(key)? {
            Item::Value(v) => Some(v),
            Item::Section(_) => None,
        }
    }
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.value(key)? {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.value(key)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn list(&self, key: &str) -> Option<&[Value]> {
        match self.value(key)? {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
    /// The sub-sections in text order.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.entries.iter().filter_map(|(k, v)| match v {
            Item::Section(s) => Some((k.as_str(), s)),
            Item::Value(_) => None,
        })
    }
}

/// Parses a whole text into its top-level section.
pub fn parse(text: &[u8]) -> Result<Section, LvmError> {
    if text.len() as u64 > MAX_TEXT_LEN {
        return Err(LvmError::unsupported(0, format!("metadata text of {} bytes", text.len())));
    }
    let mut p = Parser { s: text, pos: 0, items: 0 };
    let root = p.section(0)?;
    if p.pos < text.len() {
        return Err(p.err("'}' without a section to close"));
    }
    Ok(root)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    items: usize,
}

/// Bytes that end a name: everything else but white space may be in one.
fn is_name_byte(b: u8) -> bool {
    !b.is_ascii_whitespace() && !b"={}[]\",#".contains(&b)
}

impl Parser<'_> {
    fn err(&self, what: &str) -> LvmError {
        let line = 1 + self.s[..self.pos.min(self.s.len())].iter().filter(|&&b| b == b'\n').count();
        LvmError::corrupt(self.pos as u64, format!("metadata text, line {line}: {what}"))
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    /// Skips white space and comments.
    fn skip(&mut self) {
        while let Some(b) = self.peek() {
            if b.is_ascii_whitespace() {
                self.pos += 1;
            } else if b == b'#' {
                while self.peek().is_some_and(|b| b != b'\n') {
                    self.pos += 1;
                }
            } else {
                break;
            }
        }
    }

    fn count(&mut self) -> Result<(), LvmError> {
        self.items += 1;
        if self.items > MAX_ITEMS {
            return Err(self.err(&format!("more than {MAX_ITEMS} items")));
        }
        Ok(())
    }

    /// Entries up to a `}` (inside a section) or the end (at the top).
    fn section(&mut self, depth: usize) -> Result<Section, LvmError> {
        if depth > MAX_DEPTH {
            return Err(self.err(&format!("sections nested deeper than {MAX_DEPTH}")));
        }
        let mut out = Section::default();
        loop {
            self.skip();
            match self.peek() {
                None if depth == 0 => return Ok(out),
                None => return Err(self.err("missing '}'")),
                Some(b'}') if depth > 0 => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'}') => return Ok(out),
                _ => {}
            }
            let name = self.name()?;
            self.skip();
            self.count()?;
            match self.peek() {
                Some(b'=') => {
                    self.pos += 1;
                    self.skip();
                    let v = self.value(true)?;
                    out.entries.push((name, Item::Value(v)));
                }
                Some(b'{') => {
                    self.pos += 1;
                    let s = self.section(depth + 1)?;
                    out.entries.push((name, Item::Section(s)));
                }
                _ => return Err(self.err(&format!("expected '=' or '{{' after {name:?}"))),
            }
        }
    }

    fn name(&mut self) -> Result<String, LvmError> {
        let start = self.pos;
        while self.peek().is_some_and(is_name_byte) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.err("expected a name"));
        }
        if self.pos - start > MAX_STRING_LEN {
            return Err(self.err("name too long"));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.pos]).into_owned())
    }

    fn value(&mut self, list_allowed: bool) -> Result<Value, LvmError> {
        match self.peek() {
            Some(b'"') => self.string().map(Value::Str),
            Some(b'[') if list_allowed => self.list(),
            Some(b) if b == b'-' || b.is_ascii_digit() => self.number(),
            _ => Err(self.err("expected a value")),
        }
    }

    fn list(&mut self) -> Result<Value, LvmError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            self.skip();
            if self.peek() == Some(b']') {
                self.pos += 1;
                return Ok(Value::List(out));
            }
            if !out.is_empty() {
                if self.peek() != Some(b',') {
                    return Err(self.err("expected ',' or ']' in a list"));
                }
                self.pos += 1;
                self.skip();
            }
            self.count()?;
            out.push(self.value(false)?);
        }
    }

    fn string(&mut self) -> Result<String, LvmError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek() else { return Err(self.err("unterminated string")) };
            self.pos += 1;
            match b {
                b'"' => return Ok(String::from_utf8_lossy(&out).into_owned()),
                b'\\' => {
                    let Some(e) = self.peek() else { return Err(self.err("unterminated string")) };
                    self.pos += 1;
                    out.push(e);
                }
                _ => out.push(b),
            }
            if out.len() > MAX_STRING_LEN {
                return Err(self.err(&format!("string longer than {MAX_STRING_LEN} bytes")));
            }
        }
    }

    fn number(&mut self) -> Result<Value, LvmError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        while self.peek().is_some_and(|b| b.is_ascii_digit() || b == b'.') {
            self.pos += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.pos]).map_err(|_| self.err("bad number"))?;
        if text.contains('.') {
            text.parse().map(Value::Float).map_err(|_| self.err(&format!("bad number {text:?}")))
        } else {
            text.parse().map(Value::Int).map_err(|_| self.err(&format!("bad or too large number {text:?}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_shapes() {
        let t = br#"
vg0 {
    id = "abc-def"
    seqno = 3
    status = ["RESIZEABLE", "READ", "WRITE"]
    flags = []
    extent_size = 8192		# 4 Megabytes
    logical_volumes {
        my.lv+x_1 {
            segment1 { start_extent = 0 stripes = ["pv0", 0, "pv1", 12] }
        }
    }
}
# Generated by LVM2
contents = "Text Format Volume Group"
description = "quote \" and \\ backslash"
ratio = -0.5
"#;
        let root = parse(t).unwrap();
        let vg = root.section("vg0").unwrap();
        assert_eq!(vg.str("id"), Some("abc-def"));
        assert_eq!(vg.int("extent_size"), Some(8192));
        assert_eq!(vg.list("flags"), Some(&[][..]));
        let lv = vg.section("logical_volumes").unwrap().section("my.lv+x_1").unwrap();
        let stripes = lv.section("segment1").unwrap().list("stripes").unwrap();
        assert_eq!(stripes[3], Value::Int(12));
        assert_eq!(root.str("description"), Some("quote \" and \\ backslash"));
        assert_eq!(root.value("ratio"), Some(&Value::Float(-0.5)));
    }

    #[test]
    fn limits_and_errors() {
        let deep = "a {".repeat(MAX_DEPTH + 2) + &"}".repeat(MAX_DEPTH + 2);
        assert!(parse(deep.as_bytes()).is_err());
        let ok = "a {".repeat(MAX_DEPTH) + &"}".repeat(MAX_DEPTH);
        assert!(parse(ok.as_bytes()).is_ok());
        for bad in [
            &b"a = "[..],
            b"a = \"x",
            b"a { b = 1",
            b"}",
            b"a = [1 2]",
            b"a = [[1]]",
            b"= 1",
            b"a = 99999999999999999999",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let e = parse(b"a = 1\nb = ?").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
