//! PROXY protocol v1 (text) and v2 (binary) headers, as sent by layer-4
//! balancers in front of the gateway (`accept-proxy` in HAProxy terms).
//!
//! The header is read with `peek` first so exactly its bytes are consumed and
//! nothing of the TLS handshake or HTTP request behind it is lost.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_MAX: usize = 107;

/// What the header says about the original connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Header {
    /// The real client's address.
    Proxied { src: SocketAddr, dst: SocketAddr },
    /// `PROXY UNKNOWN` or v2 `LOCAL` (e.g. the balancer's own health check):
    /// keep the socket's addresses.
    Local,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    Invalid(&'static str),
    Incomplete,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Invalid(w) => write!(f, "invalid PROXY protocol header: {w}"),
            Error::Incomplete => f.write_str("connection closed inside the PROXY protocol header"),
        }
    }
}

/// Parses a header at the start of `buf`. `Ok(None)` = need more bytes;
/// `Ok(Some((header, len)))` = header of `len` bytes.
pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, Error> {
    if buf.len() >= 12 && &buf[..12] == V2_SIG {
        return parse_v2(buf);
    }
    if V2_SIG.starts_with(&buf[..buf.len().min(12)]) && buf.len() < 12 {
        // Could still be either; "PROXY" does not start with '\r'.
        if buf.first() == Some(&b'\r') {
            return Ok(None);
        }
    }
    parse_v1(buf)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(Header, usize)>, Error> {
    let probe = &buf[..buf.len().min(6)];
    if !b"PROXY ".starts_with(probe) {
        return Err(Error::Invalid("missing signature"));
    }
    let Some(end) = buf.windows(2).take(V1_MAX).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(Error::Invalid("v1 line too long"))
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| Error::Invalid("v1 not ASCII"))?;
    let mut parts = line.split(' ');
    parts.next(); // "PROXY"
    let len = end + 2;
    match parts.next() {
        Some("UNKNOWN") => Ok(Some((Header::Local, len))),
        Some(fam @ ("TCP4" | "TCP6")) => {
            let mut field = || parts.next().ok_or(Error::Invalid("v1 missing field"));
            let src_ip: IpAddr = field()?
                .parse()
                .map_err(|_| Error::Invalid("v1 bad source address"))?;
            let dst_ip: IpAddr = field()?
                .parse()
                .map_err(|_| Error::Invalid("v1 bad destination address"))?;
            let sport: u16 = field()?
                .parse()
                .map_err(|_| Error::Invalid("v1 bad source port"))?;
            let dport: u16 = field()?
                .parse()
                .map_err(|_| Error::Invalid("v1 bad destination port"))?;
            if parts.next().is_some() {
                return Err(Error::Invalid("v1 trailing fields"));
            }
            let v4 = fam == "TCP4";
            if src_ip.is_ipv4() != v4 || dst_ip.is_ipv4() != v4 {
                return Err(Error::Invalid("v1 address family mismatch"));
            }
            Ok(Some((
                Header::Proxied {
                    src: SocketAddr::new(src_ip, sport),
                    dst: SocketAddr::new(dst_ip, dport),
                },
                len,
            )))
        }
        _ => Err(Error::Invalid("v1 unknown protocol")),
    }
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Header, usize)>, Error> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(Error::Invalid("v2 bad version"));
    }
    let fam = buf[13];
    let body_len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let total = 16 + body_len;
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[16..total];
    match ver_cmd & 0x0f {
        0 => return Ok(Some((Header::Local, total))),
        1 => {}
        _ => return Err(Error::Invalid("v2 bad command")),
    }
    let header = match fam {
        // TCP or UDP over IPv4
        0x11 | 0x12 => {
            if body.len() < 12 {
                return Err(Error::Invalid("v2 short IPv4 block"));
            }
            let src = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let dst = Ipv4Addr::new(body[4], body[5], body[6], body[7]);
            Header::Proxied {
                src: SocketAddr::new(src.into(), u16::from_be_bytes([body[8], body[9]])),
                dst: SocketAddr::new(dst.into(), u16::from_be_bytes([body[10], body[11]])),
            }
        }
        0x21 | 0x22 => {
            if body.len() < 36 {
                return Err(Error::Invalid("v2 short IPv6 block"));
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&body[0..16]);
            d.copy_from_slice(&body[16..32]);
            Header::Proxied {
                src: SocketAddr::new(
                    Ipv6Addr::from(s).into(),
                    u16::from_be_bytes([body[32], body[33]]),
                ),
                dst: SocketAddr::new(
                    Ipv6Addr::from(d).into(),
                    u16::from_be_bytes([body[34], body[35]]),
                ),
            }
        }
        // UNSPEC or unix sockets: no usable address.
        _ => Header::Local,
    };
    Ok(Some((header, total)))
}

/// Reads the header off `stream`, consuming exactly its bytes and nothing of
/// what follows. Every valid header is at least 15 bytes, so the first 12
/// can be read outright; v2 then says its length, v1 ends at CRLF.
pub async fn read<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Header, Error> {
    let mut buf = [0u8; 16 + 216];
    stream
        .read_exact(&mut buf[..12])
        .await
        .map_err(|_| Error::Incomplete)?;
    if &buf[..12] == V2_SIG {
        stream
            .read_exact(&mut buf[12..16])
            .await
            .map_err(|_| Error::Incomplete)?;
        let body_len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
        // Keep the address block; skip TLVs we do not use.
        let keep = body_len.min(buf.len() - 16);
        stream
            .read_exact(&mut buf[16..16 + keep])
            .await
            .map_err(|_| Error::Incomplete)?;
        discard(stream, body_len - keep).await?;
        let mut head = buf[..16 + keep].to_vec();
        head[14..16].copy_from_slice(&(keep as u16).to_be_bytes());
        return match parse_v2(&head)? {
            Some((h, _)) => Ok(h),
            None => Err(Error::Invalid("v2 truncated")),
        };
    }
    if &buf[..6] != b"PROXY " {
        return Err(Error::Invalid("missing signature"));
    }
    let mut len = 12;
    while !(len >= 2 && &buf[len - 2..len] == b"\r\n") {
        if len >= V1_MAX {
            return Err(Error::Invalid("v1 line too long"));
        }
        stream
            .read_exact(&mut buf[len..len + 1])
            .await
            .map_err(|_| Error::Incomplete)?;
        len += 1;
    }
    match parse_v1(&buf[..len])? {
        Some((h, _)) => Ok(h),
        None => Err(Error::Invalid("v1 truncated")),
    }
}

async fn discard<S: AsyncRead + Unpin>(stream: &mut S, mut len: usize) -> Result<(), Error> {
    let mut sink = [0u8; 512];
    while len > 0 {
        let n = stream
            .read(&mut sink[..len.min(512)])
            .await
            .map_err(|_| Error::Incomplete)?;
        if n == 0 {
            return Err(Error::Incomplete);
        }
        len -= n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_tcp4() {
        let b = b"PROXY TCP4 192.0.2.1 198.51.100.2 5000 443\r\nGET / HTTP/1.1\r\n";
        let (h, len) = parse(b).unwrap().unwrap();
        assert_eq!(len, 44);
        assert_eq!(
            h,
            Header::Proxied {
                src: "192.0.2.1:5000".parse().unwrap(),
                dst: "198.51.100.2:443".parse().unwrap()
            }
        );
    }

    #[test]
    fn v1_tcp6_and_unknown() {
        let (h, _) = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            h,
            Header::Proxied {
                src: "[2001:db8::1]:1".parse().unwrap(),
                dst: "[2001:db8::2]:2".parse().unwrap()
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap().0,
            Header::Local
        );
    }

    #[test]
    fn v1_partial_and_bad() {
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Ok(None));
        assert_eq!(parse(b"PRO"), Ok(None));
        assert!(parse(b"GET / HTTP/1.1\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n").is_err());
        assert!(parse(&[b'P'; 200]).is_err());
    }

    #[test]
    fn v2_ipv4_with_tlv() {
        let mut b = V2_SIG.to_vec();
        b.extend_from_slice(&[0x21, 0x11, 0, 12 + 4]);
        b.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2, 0x13, 0x88, 0x01, 0xbb]);
        b.extend_from_slice(&[0x04, 0, 1, 0]); // a NOOP TLV
        b.extend_from_slice(b"rest");
        let (h, len) = parse(&b).unwrap().unwrap();
        assert_eq!(len, 16 + 16);
        assert_eq!(
            h,
            Header::Proxied {
                src: "10.0.0.1:5000".parse().unwrap(),
                dst: "10.0.0.2:443".parse().unwrap()
            }
        );
    }

    #[tokio::test]
    async fn read_consumes_exactly_the_header() {
        let mut v1: &[u8] = b"PROXY TCP4 192.0.2.1 198.51.100.2 5000 443\r\nGET /";
        let h = read(&mut v1).await.unwrap();
        assert!(matches!(h, Header::Proxied { .. }));
        assert_eq!(v1, b"GET /");

        let mut b = V2_SIG.to_vec();
        b.extend_from_slice(&[0x21, 0x11, 0x01, 0x38]); // 12 + 300 bytes
        b.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2, 0x13, 0x88, 0x01, 0xbb]);
        b.extend_from_slice(&[0u8; 300]);
        b.extend_from_slice(b"\x16\x03");
        let mut r: &[u8] = &b;
        let h = read(&mut r).await.unwrap();
        assert_eq!(
            h,
            Header::Proxied {
                src: "10.0.0.1:5000".parse().unwrap(),
                dst: "10.0.0.2:443".parse().unwrap()
            }
        );
        assert_eq!(r, b"\x16\x03");

        let mut bad: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
        assert!(read(&mut bad).await.is_err());
    }

    #[test]
    fn v2_local_and_partial() {
        let mut b = V2_SIG.to_vec();
        b.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&b).unwrap().unwrap(), (Header::Local, 16));
        assert_eq!(parse(&b[..10]), Ok(None));
        let mut bad = V2_SIG.to_vec();
        bad.extend_from_slice(&[0x31, 0x11, 0, 0]);
        assert!(parse(&bad).is_err());
    }
}
