//! Where an HTTP/1.1 body ends (RFC 9112 §6): from the headers, which
//! framing a message uses; for chunked bodies, a scanner that follows the
//! chunk boundaries of bytes passing through without copying or decoding
//! them, so the engine can forward them as they are and still know exactly
//! where the message ends — the next request (or a smuggled one) never
//! rides along inside a body.

use http::header::{self, HeaderMap};
use http::StatusCode;

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

/// Why a request is refused before any of it is forwarded: the status the
/// client gets (RFC 9112 names most of them) and a reason it can read.
/// The connection always closes after it: once the framing is in doubt,
/// nothing after it can be trusted to start a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub why: &'static str,
}

impl Refusal {
    pub const fn bad(why: &'static str) -> Refusal {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            why,
        }
    }
}

impl From<BadFraming> for Refusal {
    fn from(b: BadFraming) -> Refusal {
        Refusal::bad(b.0)
    }
}

/// A request's framing. Stricter than the RFC's minimum, as a gateway in
/// front of other parsers must be; every refusal is a 400 unless noted:
///
/// - `Transfer-Encoding` together with `Content-Length` (RFC 9112 §6.3
///   would allow going by the coding and closing after; a request built
///   that way is an attack far more often than a client bug);
/// - `Transfer-Encoding` in an HTTP/1.0 request (§6.1: faulty framing);
/// - a coding list that does not end in `chunked` (§6.3 rule 4), names
///   `chunked` twice (§7), or has an empty element;
/// - a coding other than the registered ones (`gzip`, `deflate`,
///   `compress` and their `x-` forms) before the final `chunked`: 501, as
///   §6.1 says for a coding the server does not understand (`identity`
///   was taken out of the registry by RFC 7230);
/// - differing or malformed lengths (RFC 9110 §8.6: only a list of one
///   repeated number may be taken for that number).
pub fn request(h: &HeaderMap, http10: bool) -> Result<Framing, Refusal> {
    if h.contains_key(header::TRANSFER_ENCODING) {
        if http10 {
            return Err(Refusal::bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if h.contains_key(header::CONTENT_LENGTH) {
            return Err(Refusal::bad(
                "Transfer-Encoding and Content-Length together",
            ));
        }
        request_codings(h)?;
        return Ok(Framing::Chunked);
    }
    match content_length(h)? {
        None | Some(0) => Ok(Framing::Empty),
        Some(n) => Ok(Framing::Length(n)),
    }
}

/// Checks a request's transfer codings (all `Transfer-Encoding` lines, in
/// order, as one list).
fn request_codings(h: &HeaderMap) -> Result<(), Refusal> {
    let mut chunked = false;
    let mut last_chunked = false;
    let mut unknown = false;
    for v in h.get_all(header::TRANSFER_ENCODING) {
        for c in v.as_bytes().split(|&b| b == b',') {
            // Only SP and HTAB can be around it: a header value holds no
            // other control characters.
            let c = c.trim_ascii();
            if c.is_empty() {
                return Err(Refusal::bad("empty transfer coding"));
            }
            last_chunked = c.eq_ignore_ascii_case(b"chunked");
            if last_chunked {
                if chunked {
                    return Err(Refusal::bad("chunked applied twice"));
                }
                chunked = true;
            } else if !REGISTERED_CODINGS
                .iter()
                .any(|k| c.eq_ignore_ascii_case(k.as_bytes()))
            {
                unknown = true;
            }
        }
    }
    if !last_chunked {
        return Err(Refusal::bad("Transfer-Encoding does not end in chunked"));
    }
    if unknown {
        return Err(Refusal {
            status: StatusCode::NOT_IMPLEMENTED,
            why: "unknown transfer coding",
        });
    }
    Ok(())
}

/// The transfer codings relayed as they are (IANA's HTTP Transfer Coding
/// registry, `chunked` and the reserved `trailers` aside).
const REGISTERED_CODINGS: [&str; 5] = ["gzip", "x-gzip", "deflate", "compress", "x-compress"];

/// A response's framing, given the request method and the status.
pub fn response(h: &HeaderMap, head_request: bool, status: u16) -> Result<Framing, BadFraming> {
    let mut f = ResponseFraming::default();
    for v in h.get_all(header::TRANSFER_ENCODING) {
        f.transfer_encoding(v.as_bytes());
    }
    for v in h.get_all(header::CONTENT_LENGTH) {
        f.content_length(v.as_bytes());
    }
    f.framing(head_request, status)
}

/// A response's framing headers taken one line at a time, for a head that
/// is read once and never put in a map; [`response`] feeds it from one.
#[derive(Debug, Default)]
pub struct ResponseFraming {
    coded: bool,
    /// The last coding of the last `Transfer-Encoding` line is `chunked`.
    last_chunked: bool,
    length: Option<u64>,
    bad: Option<BadFraming>,
}

impl ResponseFraming {
    pub fn transfer_encoding(&mut self, value: &[u8]) {
        self.coded = true;
        self.last_chunked = value
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
    }

    pub fn content_length(&mut self, value: &[u8]) {
        if self.bad.is_none() {
            self.bad = length_items(value, &mut self.length).err();
        }
    }

    pub fn framing(self, head_request: bool, status: u16) -> Result<Framing, BadFraming> {
        if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok(Framing::Empty);
        }
        if self.coded {
            // A length next to a coding is ignored (RFC 9112 §6.3 rule 3).
            return Ok(if self.last_chunked {
                Framing::Chunked
            } else {
                Framing::UntilClose
            });
        }
        if let Some(bad) = self.bad {
            return Err(bad);
        }
        Ok(match self.length {
            None => Framing::UntilClose,
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
        })
    }
}

/// All `Content-Length` values (headers and comma-separated items) must be
/// the same run of digits.
fn content_length(h: &HeaderMap) -> Result<Option<u64>, BadFraming> {
    let mut found = None;
    for v in h.get_all(header::CONTENT_LENGTH) {
        length_items(v.as_bytes(), &mut found)?;
    }
    Ok(found)
}

/// One `Content-Length` line's items, each the same number as `found`.
fn length_items(value: &[u8], found: &mut Option<u64>) -> Result<(), BadFraming> {
    for item in value.split(|&b| b == b',') {
        let n = parse_digits(item.trim_ascii()).ok_or(BadFraming("malformed Content-Length"))?;
        if found.is_some_and(|f| f != n) {
            return Err(BadFraming("conflicting Content-Length values"));
        }
        *found = Some(n);
    }
    Ok(())
}

fn parse_digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0'))
    })
}

/// What a request body still owes, as bytes go by: the end of a request is
/// where this says, never where the next parser might think.
#[derive(Clone, Debug)]
pub enum BodyLeft {
    Length(u64),
    Chunked(ChunkedScanner),
}

impl BodyLeft {
    /// `already` bytes of a `Length` body were read aside (model scan;
    /// chunked bodies are never scanned).
    pub fn new(framing: Framing, already: u64) -> Self {
        match framing {
            Framing::Chunked => BodyLeft::Chunked(ChunkedScanner::request()),
            Framing::Length(n) => BodyLeft::Length(n - already.min(n)),
            Framing::Empty | Framing::UntilClose => BodyLeft::Length(0),
        }
    }

    /// How many bytes at the front of `data` belong to the body.
    pub fn take(&mut self, data: &[u8]) -> Result<usize, &'static str> {
        match self {
            BodyLeft::Length(left) => {
                let n = data.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                Ok(n)
            }
            BodyLeft::Chunked(s) => s.scan(data).map_err(|e| e.0),
        }
    }

    pub fn done(&self) -> bool {
        match self {
            BodyLeft::Length(left) => *left == 0,
            BodyLeft::Chunked(s) => s.is_done(),
        }
    }
}

/// Follows the chunk framing of a body as its bytes go by (RFC 9112 §7.1),
/// refusing whatever two parsers could read two ways: a size that is not
/// plain hex (`0x10`, `-1`, `+5`, ` 5`), whitespace anywhere but before
/// `;` or the end of the size line (`1 0`), a bare CR or LF, chunk data
/// not followed by CRLF, a trailer line that is not `name: value` (an
/// obs-fold among them). Extensions and trailers are relayed as they are;
/// an extension over [`MAX_EXT`] bytes on one size line or a trailer
/// section over [`MAX_TRAILERS`] is refused too.
#[derive(Debug, Default, Clone)]
pub struct ChunkedScanner {
    state: State,
    /// Data bytes left in the current chunk, or the size being read.
    n: u64,
    size_digits: u8,
    /// A request body: trailer fields that would change how the request
    /// is framed, routed, authorized or read are refused (RFC 9110
    /// §6.5.1 lists them; a recipient merging them is a smuggling vector).
    request: bool,
    /// Extension bytes of this size line, or trailer section bytes.
    len: u32,
    /// While a trailer name is read: which [`FORBIDDEN_TRAILERS`] it may
    /// still be (bits), and its length so far.
    cand: u32,
    name_len: u8,
}

/// Extension bytes allowed on one chunk size line.
pub const MAX_EXT: u32 = 1024;
/// Bytes allowed in the trailer section (all its lines).
pub const MAX_TRAILERS: u32 = 16 * 1024;

/// Trailer fields a request may not carry (RFC 9110 §6.5.1: framing,
/// routing, request modifiers, authentication, how to read the content),
/// hop-by-hop fields included.
const FORBIDDEN_TRAILERS: [&str; 24] = [
    "content-length",
    "transfer-encoding",
    "host",
    "trailer",
    "te",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "authorization",
    "proxy-authorization",
    "cookie",
    "content-type",
    "content-encoding",
    "content-range",
    "expect",
    "max-forwards",
    "cache-control",
    "range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-range",
];
const ALL_FORBIDDEN: u32 = (1 << FORBIDDEN_TRAILERS.len()) - 1;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    /// SP/HTAB after the size: only more of it, `;` or CR may follow.
    SizeWs,
    /// `;ext` after the size, up to CR.
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// Start of a trailer line, or of the final CRLF.
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

impl ChunkedScanner {
    /// A scanner for a request body (forbidden trailers refused).
    pub fn request() -> Self {
        ChunkedScanner {
            request: true,
            ..ChunkedScanner::default()
        }
    }

    /// Between chunks, where a new chunk may be inserted (not inside a
    /// chunk, and not after the last one).
    pub fn at_chunk_start(&self) -> bool {
        self.state == State::Size && self.size_digits == 0
    }

    /// Consumes the start of `buf`: returns how many bytes belong to this
    /// body. That is all of them unless the body ends inside `buf`.
    pub fn scan(&mut self, buf: &[u8]) -> Result<usize, BadFraming> {
        self.scan_until(buf, false)
    }

    /// Chunk data bytes still to come in the current chunk, when the
    /// scanner stands inside one (what a decoder may pass on as data).
    pub fn data_left(&self) -> Option<u64> {
        (self.state == State::Data).then_some(self.n)
    }

    /// Inside the trailer section (after the last chunk, before the end).
    pub fn in_trailers(&self) -> bool {
        matches!(
            self.state,
            State::TrailerStart
                | State::TrailerName
                | State::TrailerValue
                | State::TrailerLf
                | State::EndLf
        )
    }

    /// Like [`scan`](Self::scan), but stops at the end of each chunk size
    /// line — where a chunk's data or the trailer section starts — so a
    /// decoder can take the data out and the trailers aside.
    pub fn scan_framing(&mut self, buf: &[u8]) -> Result<usize, BadFraming> {
        self.scan_until(buf, true)
    }

    fn scan_until(&mut self, buf: &[u8], stop_at_data: bool) -> Result<usize, BadFraming> {
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
                        b';' => self.start_ext(),
                        b' ' | b'\t' => self.state = State::SizeWs,
                        _ => return Err(BadFraming("invalid chunk size")),
                    },
                },
                State::SizeWs => match b {
                    b' ' | b'\t' => {}
                    b';' => self.start_ext(),
                    b'\r' => self.state = State::SizeLf,
                    _ => return Err(BadFraming("whitespace inside a chunk size")),
                },
                State::Ext => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\t' | 0x20..=0x7e | 0x80..=0xff => {
                        self.len += 1;
                        if self.len > MAX_EXT {
                            return Err(BadFraming("chunk extension too long"));
                        }
                    }
                    _ => return Err(BadFraming("invalid chunk extension")),
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(BadFraming("chunk size line without CRLF"));
                    }
                    self.size_digits = 0;
                    self.len = 0;
                    self.state = if self.n == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                    if stop_at_data {
                        return Ok(i + 1);
                    }
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
                    self.count_trailer()?;
                    match b {
                        b'\r' => self.state = State::EndLf,
                        b'\n' => return Err(BadFraming("bare LF in trailers")),
                        b' ' | b'\t' => return Err(BadFraming("folded trailer line")),
                        _ if is_tchar(b) => {
                            self.cand = if self.request { ALL_FORBIDDEN } else { 0 };
                            self.name_len = 0;
                            self.trailer_name_byte(b);
                            self.state = State::TrailerName;
                        }
                        _ => return Err(BadFraming("invalid trailer field name")),
                    }
                }
                State::TrailerName => {
                    self.count_trailer()?;
                    match b {
                        b':' => {
                            if self.forbidden_trailer() {
                                return Err(BadFraming("forbidden trailer field"));
                            }
                            self.state = State::TrailerValue;
                        }
                        _ if is_tchar(b) => self.trailer_name_byte(b),
                        _ => return Err(BadFraming("invalid trailer field name")),
                    }
                }
                State::TrailerValue => {
                    self.count_trailer()?;
                    match b {
                        b'\r' => self.state = State::TrailerLf,
                        b'\t' | 0x20..=0x7e | 0x80..=0xff => {}
                        _ => return Err(BadFraming("invalid trailer field value")),
                    }
                }
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

    fn start_ext(&mut self) {
        self.len = 0;
        self.state = State::Ext;
    }

    fn count_trailer(&mut self) -> Result<(), BadFraming> {
        self.len += 1;
        if self.len > MAX_TRAILERS {
            return Err(BadFraming("trailers too large"));
        }
        Ok(())
    }

    /// Narrows the forbidden names the trailer name being read may be.
    fn trailer_name_byte(&mut self, b: u8) {
        let b = b.to_ascii_lowercase();
        let pos = usize::from(self.name_len);
        let mut bits = self.cand;
        while bits != 0 {
            let i = bits.trailing_zeros();
            bits &= bits - 1;
            if FORBIDDEN_TRAILERS[i as usize].as_bytes().get(pos) != Some(&b) {
                self.cand &= !(1 << i);
            }
        }
        self.name_len = self.name_len.saturating_add(1);
    }

    fn forbidden_trailer(&self) -> bool {
        let mut bits = self.cand;
        while bits != 0 {
            let i = bits.trailing_zeros();
            bits &= bits - 1;
            if FORBIDDEN_TRAILERS[i as usize].len() == usize::from(self.name_len) {
                return true;
            }
        }
        false
    }
}

/// A token character (RFC 9110 §5.6.2), as in a field name.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
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
        let req = |h: &[(&'static str, &'static str)]| request(&headers(h), false);
        assert_eq!(req(&[]), Ok(Framing::Empty));
        assert_eq!(req(&[("content-length", "12")]), Ok(Framing::Length(12)));
        assert_eq!(
            req(&[("content-length", "12, 12")]),
            Ok(Framing::Length(12))
        );
        assert_eq!(req(&[("content-length", "007")]), Ok(Framing::Length(7)));
        for ok in [
            &[("transfer-encoding", "chunked")][..],
            &[("transfer-encoding", "\tChunked ")],
            &[("transfer-encoding", "gzip, chunked")],
            &[
                ("transfer-encoding", "x-gzip"),
                ("transfer-encoding", "CHUNKED"),
            ],
        ] {
            assert_eq!(req(ok), Ok(Framing::Chunked), "{ok:?}");
        }
        for bad in [
            &[("content-length", "12"), ("content-length", "13")][..],
            &[("content-length", "1,2")],
            &[("content-length", "5,")],
            &[("content-length", "-1")],
            &[("content-length", "+5")],
            &[("content-length", "5 5")],
            &[("content-length", "0x5")],
            &[("content-length", "1e3")],
            &[("content-length", "")],
            &[("content-length", "99999999999999999999")],
            &[("transfer-encoding", "chunked"), ("content-length", "3")],
            &[("content-length", "3"), ("transfer-encoding", "chunked")],
            &[("transfer-encoding", "chunked, gzip")],
            &[("transfer-encoding", "chunked, identity")],
            &[("transfer-encoding", "xchunked")],
            &[("transfer-encoding", "chunked, chunked")],
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            &[("transfer-encoding", ", chunked")],
            &[("transfer-encoding", "")],
            &[("transfer-encoding", "identity")],
        ] {
            let e = req(bad).expect_err(&format!("{bad:?}"));
            assert_eq!(e.status, 400, "{bad:?}");
        }
        for unknown in ["identity, chunked", "br, chunked"] {
            let e = req(&[("transfer-encoding", unknown)]).expect_err(unknown);
            assert_eq!(e.status, 501, "{unknown}");
        }
        let te = headers(&[("transfer-encoding", "chunked")]);
        assert_eq!(request(&te, true).map_err(|e| e.status.as_u16()), Err(400));
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
        let long_ext = format!(
            "5;{}\r\nhello\r\n0\r\n\r\n",
            "e".repeat(MAX_EXT as usize + 1)
        );
        let long_trailer = format!("0\r\nx-a: {}\r\n\r\n", "v".repeat(MAX_TRAILERS as usize));
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b" 5\r\n",
            b"-5\r\n",
            b"+5\r\n",
            b"0x5\r\n",
            b"1 0\r\n",
            b"1 x\r\n",
            b"5\nhello\r\n",
            b"3\r\nabcd\r\n",
            b"3\r\nabc\n",
            b"1234567890abcdef0\r\n",
            b"3;a\x01\r\n",
            b"3;a\rb\r\n",
            b"3;a\nb\r\n",
            b"0\r\nx: 1\n\r\n",
            b"0\r\n\n",
            b"0\r\nx: 1\r\n y\r\n\r\n",
            b"0\r\nno colon\r\n\r\n",
            b"0\r\nx: a\rb\r\n\r\n",
            b"0\r\nx: a\x00b\r\n\r\n",
            b"0\r\n: v\r\n\r\n",
            b"0\r\nContent-Length: 5\r\n\r\n",
            b"0\r\ntransfer-encoding: chunked\r\n\r\n",
            b"0\r\nHost: other\r\n\r\n",
            b"0\r\nAuthorization: Bearer x\r\n\r\n",
            long_ext.as_bytes(),
            long_trailer.as_bytes(),
        ] {
            let mut s = ChunkedScanner::request();
            let shown = String::from_utf8_lossy(&bad[..bad.len().min(60)]).into_owned();
            assert!(s.scan(bad).is_err(), "{shown:?}");
        }
    }

    #[test]
    fn lenient_where_no_parser_can_disagree() {
        for ok in [
            &b"5 \r\nhello\r\n0\r\n\r\n"[..],
            b"5 ;a=b\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"q s\"\r\nhello\r\n0\r\n\r\n",
            b"0\r\nx-checksum: abc\r\nhostname: h\r\ncontent-lengths: 1\r\n\r\n",
        ] {
            let mut s = ChunkedScanner::request();
            assert_eq!(
                s.scan(ok),
                Ok(ok.len()),
                "{:?}",
                String::from_utf8_lossy(ok)
            );
            assert!(s.is_done());
        }
        // Trailer names are refused in requests only: a response's go to
        // the client as the upstream sent them.
        let mut s = ChunkedScanner::default();
        assert!(s.scan(b"0\r\ncontent-length: 1\r\n\r\n").is_ok());
    }
}
