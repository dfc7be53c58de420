//! Query strings parsed by hand, so that `path=` carries raw bytes: names
//! that are not UTF-8 are reached by percent-encoding their bytes.

use super::error::{ApiError, ApiResult};
use percent_encoding::percent_decode;

/// Longest accepted query string.
const MAX_QUERY: usize = 64 << 10;

pub struct Query(Vec<(String, Vec<u8>)>);

impl Query {
    pub fn parse(raw: Option<&str>) -> ApiResult<Self> {
        let raw = raw.unwrap_or("");
        if raw.len() > MAX_QUERY {
            return Err(ApiError::bad_request(format!("query string longer than {MAX_QUERY} bytes")));
        }
        let mut pairs = Vec::new();
        for part in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let k = String::from_utf8_lossy(&decode(k)).into_owned();
            pairs.push((k, decode(v)));
        }
        Ok(Query(pairs))
    }

    pub fn bytes(&self, key: &str) -> Option<&[u8]> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_slice())
    }

    pub fn str(&self, key: &str) -> ApiResult<Option<&str>> {
        self.bytes(key)
            .map(|v| std::str::from_utf8(v).map_err(|_| ApiError::bad_request(format!("{key} is not UTF-8"))))
            .transpose()
    }

    pub fn u64(&self, key: &str) -> ApiResult<Option<u64>> {
        self.str(key)?
            .map(|v| v.parse().map_err(|_| ApiError::bad_request(format!("{key}={v} is not a number"))))
            .transpose()
    }

    /// The `path` parameter, checked: no NUL, no `..` component. A missing
    /// path is the session root.
    pub fn path(&self) -> ApiResult<Vec<u8>> {
        let p = self.bytes("path").unwrap_or(b"/").to_vec();
        if p.contains(&0) {
            return Err(ApiError::new(axum::http::StatusCode::BAD_REQUEST, "invalid_path", "NUL in path"));
        }
        if p.split(|&b| b == b'/').any(|c| c == b"..") {
            return Err(ApiError::new(axum::http::StatusCode::BAD_REQUEST, "invalid_path", "'..' is not allowed"));
        }
        Ok(p)
    }
}

/// `application/x-www-form-urlencoded` value decoding: `+` is a space.
fn decode(s: &str) -> Vec<u8> {
    let s = s.replace('+', " ");
    percent_decode(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_and_refusals() {
        let q = Query::parse(Some("path=%2Fa+b%2F%FF&limit=5")).unwrap();
        assert_eq!(q.bytes("path").unwrap(), b"/a b/\xff");
        assert_eq!(q.u64("limit").unwrap(), Some(5));
        assert!(Query::parse(Some("path=/a/%2e%2e/b")).unwrap().path().is_err());
        assert!(Query::parse(Some("path=/a%00")).unwrap().path().is_err());
        assert_eq!(Query::parse(None).unwrap().path().unwrap(), b"/");
    }
}
