//! Where an HTTP/1.1 body ends (RFC 9112 §6): from the headers, which
//! framing a message uses; for chunked bodies, a scanner that follows the
//! chunk boundaries of bytes passing through without copying or decoding
//! them, so the engine can forward them as they are and still know exactly
//! where the message ends — the next request (or a smuggled one) never
//! rides along inside a body.

use http::header::{self, HeaderMap};

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (also: `Content-Length: 0`).
    Empty,
    Length(u64),
    Chunked,
    /// A response body that ends when the upstream closes.
    UntilClose,
}

/// The framing headers contradict each other or cannot be parsed.
#[derive(Debug, PartialEq, Eq)]
pub struct BadFraming(pub &'static str);

/// A request's framing. Stricter than the RFC's minimum, as a gateway in
/// front of other parsers must be: `Transfer-Encoding` together with
/// `Content-Length`, a coding list not ending in `chunked`, or differing or
/// malformed lengths are refused, not guessed at.
pub fn request(h: &HeaderMap) -> Result<Framing, BadFraming> {
    if h.contains_key(header::TRANSFER_ENCODING) {
        if h.contains_key(header::CONTENT_LENGTH) {
            return Err(BadFraming("Transfer-Encoding and Content-Length together"));
        }
        return if ends_in_chunked(h) {
            Ok(Framing::Chunked)
        } else {
            Err(BadFraming("Transfer-Encoding does not end in chunked"))
        };
    }
    match content_length(h)? {
        None | Some(0) => Ok(Framing::Empty),
        Some(n) => Ok(Framing::Length(n)),
    }
}

/// A response's framing, given the request method and the status.
pub fn response(h: &HeaderMap, head_request: bool, status: u16) -> Result<Framing, BadFraming> {
    if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(Framing::Empty);
    }
    if h.contains_key(header::TRANSFER_ENCODING) {
        // A length next to a coding is ignored (RFC 9112 §6.3 rule 3).
        return Ok(if ends_in_chunked(h) {
            Framing::Chunked
        } else {
            Framing::UntilClose
        });
    }
    match content_length(h)? {
        None => Ok(Framing::UntilClose),
        Some(0) => Ok(Framing::Empty),
        Some(n) => Ok(Framing::Length(n)),
    }
}

fn ends_in_chunked(h: &HeaderMap) -> bool {
    let last = h.get_all(header::TRANSFER_ENCODING).iter().next_back();
    last.and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
}

/// All `Content-Length` values (headers and comma-separated items) must be
/// the same run of digits.
fn content_length(h: &HeaderMap) -> Result<Option<u64>, BadFraming> {
    let mut found = None;
    for v in h.get_all(header::CONTENT_LENGTH) {
        for item in v.as_bytes().split(|&b| b == b',') {
            let item = item.trim_ascii();
            let n = parse_digits(item).ok_or(BadFraming("malformed Content-Length"))?;
            if found.is_some_and(|f| f != n) {
                return Err(BadFraming("conflicting Content-Length values"));
            }
            found = Some(n);
        }
    }
    Ok(found)
}

fn parse_digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0'))
    })
}

/// Follows the chunk framing of a body as its bytes go by.
#[derive(Debug, Default)]
pub struct ChunkedScanner {
    state: State,
    /// Data bytes left in the current chunk, or the size being read.
    n: u64,
    size_digits: u8,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    /// `;ext` after the size, up to CR.
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// Start of a trailer line, or of the final CRLF.
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

impl ChunkedScanner {
    /// Between chunks, where a new chunk may be inserted (not inside a
    /// chunk, and not after the last one).
    pub fn at_chunk_start(&self) -> bool {
        self.state == State::Size && self.size_digits == 0
    }

    /// Consumes the start of `buf`: returns how many bytes belong to this
    /// body. That is all of them unless the body ends inside `buf`.
    pub fn scan(&mut self, buf: &[u8]) -> Result<usize, BadFraming> {
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            match self.state {
                State::Size => match hex(b) {
                    Some(d) => {
                        self.size_digits += 1;
                        if self.size_digits > 15 {
                            return Err(BadFraming("chunk size too large"));
                        }
                        self.n = self.n * 16 + u64::from(d);
                    }
                    None if self.size_digits == 0 => return Err(BadFraming("invalid chunk size")),
                    None => match b {
                        b'\r' => self.state = State::SizeLf,
                        b';' | b' ' | b'\t' => self.state = State::Ext,
                        _ => return Err(BadFraming("invalid chunk size")),
                    },
                },
                State::Ext => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\t' | 0x20..=0x7e | 0x80..=0xff => {}
                    _ => return Err(BadFraming("invalid chunk extension")),
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(BadFraming("chunk size line without CRLF"));
                    }
                    self.size_digits = 0;
                    self.state = if self.n == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                }
                State::Data => {
                    let take = (buf.len() - i).min(usize::try_from(self.n).unwrap_or(usize::MAX));
                    self.n -= take as u64;
                    i += take;
                    if self.n == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(BadFraming("chunk data longer than its size"));
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(BadFraming("chunk data without CRLF"));
                    }
                    self.state = State::Size;
                }
                State::TrailerStart => {
                    self.state = if b == b'\r' {
                        State::EndLf
                    } else if b == b'\n' {
                        return Err(BadFraming("bare LF in trailers"));
                    } else {
                        State::TrailerLine
                    };
                }
                State::TrailerLine => match b {
                    b'\r' => self.state = State::TrailerLf,
                    b'\n' => return Err(BadFraming("bare LF in trailers")),
                    _ => {}
                },
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(BadFraming("trailer line without CRLF"));
                    }
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(BadFraming("chunked body without final CRLF"));
                    }
                    self.state = State::Done;
                    return Ok(i + 1);
                }
                State::Done => return Ok(i),
            }
            i += 1;
        }
        Ok(i)
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(list: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in list {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn request_framing() {
        assert_eq!(request(&headers(&[])), Ok(Framing::Empty));
        assert_eq!(
            request(&headers(&[("content-length", "12")])),
            Ok(Framing::Length(12))
        );
        assert_eq!(
            request(&headers(&[("content-length", "12, 12")])),
            Ok(Framing::Length(12))
        );
        assert_eq!(
            request(&headers(&[("transfer-encoding", "gzip, chunked")])),
            Ok(Framing::Chunked)
        );
        for bad in [
            &[("content-length", "12"), ("content-length", "13")][..],
            &[("content-length", "-1")],
            &[("content-length", "1e3")],
            &[("content-length", "")],
            &[("content-length", "99999999999999999999")],
            &[("transfer-encoding", "chunked"), ("content-length", "3")],
            &[("transfer-encoding", "chunked, gzip")],
            &[("transfer-encoding", "identity")],
        ] {
            assert!(request(&headers(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn response_framing() {
        let cl = headers(&[("content-length", "5")]);
        assert_eq!(response(&cl, true, 200), Ok(Framing::Empty));
        assert_eq!(response(&cl, false, 204), Ok(Framing::Empty));
        assert_eq!(response(&cl, false, 304), Ok(Framing::Empty));
        assert_eq!(response(&cl, false, 200), Ok(Framing::Length(5)));
        assert_eq!(response(&headers(&[]), false, 200), Ok(Framing::UntilClose));
        assert_eq!(
            response(&headers(&[("transfer-encoding", "chunked")]), false, 200),
            Ok(Framing::Chunked)
        );
        assert!(response(&headers(&[("content-length", "x")]), false, 200).is_err());
    }

    #[test]
    fn chunked_body_end_is_found_in_any_split() {
        let body =
            b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: 1\r\n\r\n";
        let mut next = body.to_vec();
        next.extend_from_slice(b"GET / HTTP/1.1\r\n");
        for split in 0..next.len() {
            let mut s = ChunkedScanner::default();
            let a = s.scan(&next[..split]).unwrap();
            assert_eq!(a, split.min(body.len()), "split {split}");
            let b = s.scan(&next[a..]).unwrap();
            assert_eq!(a + b, body.len(), "split {split}");
            assert!(s.is_done());
        }
    }

    #[test]
    fn chunked_one_byte_at_a_time() {
        let body = b"3\r\nabc\r\n0\r\n\r\n";
        let mut s = ChunkedScanner::default();
        for (i, b) in body.iter().enumerate() {
            assert!(!s.is_done(), "done early at {i}");
            assert_eq!(s.scan(std::slice::from_ref(b)).unwrap(), 1);
        }
        assert!(s.is_done());
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n",
            b"3\r\nabcd\r\n",
            b"3\r\nabc\n",
            b"1234567890abcdef0\r\n",
            b"3;a\x01\r\n",
            b"0\r\nx: 1\n\r\n",
            b"0\r\n\n",
        ] {
            let mut s = ChunkedScanner::default();
            assert!(s.scan(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
