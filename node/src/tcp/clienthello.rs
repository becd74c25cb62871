//! Reading the server name out of a TLS ClientHello, as HAProxy's
//! `req.ssl_sni` and `req.ssl_hello_type` do: only the first TLS record is
//! looked at, and nothing here trusts a length it has not checked against
//! the bytes it has. Garbage is [`Hello::NotTls`], a prefix of a valid
//! record is [`Hello::Incomplete`]; nothing panics.

/// Largest TLS record payload (2^14) plus the expansion TLS allows.
const MAX_RECORD: usize = 16384 + 2048;

/// What the client's first bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// A prefix of a TLS handshake record: wait for more bytes.
    Incomplete,
    /// Not a TLS handshake record (or a malformed one).
    NotTls,
    /// A complete first handshake record.
    Handshake {
        /// The handshake message type: 1 for a ClientHello.
        hello_type: u8,
        /// The `server_name` extension's host name, if a ClientHello sent one.
        sni: Option<String>,
    },
}

/// A cursor that refuses to read past its slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(b[0]) << 8 | usize::from(b[1]))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
    /// A vector with a `len_bytes`-byte length prefix.
    fn vec(&mut self, len_bytes: usize) -> Option<Reader<'a>> {
        let n = match len_bytes {
            1 => usize::from(self.u8()?),
            _ => self.u16()?,
        };
        self.take(n).map(Reader)
    }
}

/// Classifies the bytes read so far from a client.
pub fn parse(buf: &[u8]) -> Hello {
    // Record header: type 22 (handshake), version 3.x, length.
    match buf {
        [] => return Hello::Incomplete,
        [t, ..] if *t != 22 => return Hello::NotTls,
        [_, v, ..] if *v != 3 => return Hello::NotTls,
        _ => {}
    }
    if buf.len() < 5 {
        return Hello::Incomplete;
    }
    let len = usize::from(buf[3]) << 8 | usize::from(buf[4]);
    if !(4..=MAX_RECORD).contains(&len) {
        return Hello::NotTls;
    }
    let Some(record) = buf.get(5..5 + len) else {
        return Hello::Incomplete;
    };
    let mut r = Reader(record);
    let (Some(hello_type), Some(hs_len)) = (r.u8(), r.u24()) else {
        return Hello::NotTls;
    };
    if hello_type != 1 {
        return Hello::Handshake {
            hello_type,
            sni: None,
        };
    }
    // A ClientHello split over several records: HAProxy finds no SNI either.
    let Some(body) = r.take(hs_len) else {
        return Hello::Handshake {
            hello_type,
            sni: None,
        };
    };
    Hello::Handshake {
        hello_type,
        sni: client_hello_sni(Reader(body)),
    }
}

fn client_hello_sni(mut r: Reader) -> Option<String> {
    r.take(2 + 32)?; // legacy version, random
    r.vec(1)?; // session id
    r.vec(2)?; // cipher suites
    r.vec(1)?; // compression methods
    let mut exts = r.vec(2)?;
    while !exts.0.is_empty() {
        let ty = exts.u16()?;
        let mut data = exts.vec(2)?;
        if ty != 0 {
            continue;
        }
        let mut list = data.vec(2)?;
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec(2)?;
            if name_type == 0 {
                let s = std::str::from_utf8(name.0).ok()?;
                let valid = !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
                return valid.then(|| s.to_owned());
            }
        }
        return None;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The first bytes rustls sends when connecting to `name`.
    fn real_client_hello(name: &str) -> Vec<u8> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let server = rustls_pki_types::ServerName::try_from(name.to_owned()).expect("name");
        let mut conn = rustls::ClientConnection::new(Arc::new(config), server).expect("client");
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).expect("write_tls");
        }
        out
    }

    #[test]
    fn real_hello_gives_sni() {
        let hello = real_client_hello("a.test");
        assert_eq!(
            parse(&hello),
            Hello::Handshake {
                hello_type: 1,
                sni: Some("a.test".into())
            }
        );
        // Every strict prefix is incomplete, never an error or a panic.
        for n in 0..hello.len() {
            assert_eq!(parse(&hello[..n]), Hello::Incomplete, "prefix {n}");
        }
        // Trailing bytes (early data, a second record) do not matter.
        let mut more = hello.clone();
        more.extend_from_slice(b"junk");
        assert!(matches!(
            parse(&more),
            Hello::Handshake { sni: Some(_), .. }
        ));
    }

    #[test]
    fn ip_address_sends_no_sni() {
        let hello = real_client_hello("127.0.0.1");
        assert_eq!(
            parse(&hello),
            Hello::Handshake {
                hello_type: 1,
                sni: None
            }
        );
    }

    #[test]
    fn plain_http_is_not_tls() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert_eq!(parse(b"\x16\x01"), Hello::NotTls);
        assert_eq!(parse(b"\x16\x03\x01\x00\x00"), Hello::NotTls);
        assert_eq!(parse(b"\x16\x03\x01\xff\xff"), Hello::NotTls);
    }

    #[test]
    fn corrupted_hellos_never_panic() {
        let hello = real_client_hello("b.example.com");
        // Flip every byte in turn, and truncate the record length: any
        // outcome but a panic is fine, and a wrong SNI must not be invented.
        for i in 0..hello.len() {
            for v in [0u8, 0xff, hello[i].wrapping_add(1)] {
                let mut h = hello.clone();
                h[i] = v;
                if let Hello::Handshake { sni: Some(s), .. } = parse(&h) {
                    assert!(s.len() <= "b.example.com".len() + 1, "{s}");
                }
            }
        }
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let n = rng.usize(0..300);
            let mut b: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
            if n > 2 {
                b[0] = 22;
                b[1] = 3;
            }
            let _ = parse(&b);
        }
    }
}
