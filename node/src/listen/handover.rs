//! Handing the listening sockets of a running process to its successor
//! (a binary upgrade), as HAProxy's `-x` does: the new process connects to
//! the old one's runtime API socket — configured with `expose-fd
//! listeners` — and sends `_getsocks`; the answer carries the sockets
//! themselves (`SCM_RIGHTS`) and one line per socket saying what it is.
//! The successor listens on those very sockets, so between the two
//! processes no connection is refused: a connection waiting in the
//! kernel's queue is accepted by whichever process takes it first.
//!
//! The answer, in one message (the descriptors ride on its first byte):
//!
//! ```text
//! llmgw-sockets 1 N
//! frontend CONFIGURED_ADDR LOCAL_ADDR [INDEX FRONTEND]   (N lines, in descriptor order)
//! stats CONFIGURED_ADDR LOCAL_ADDR
//! end
//! ```
//!
//! `CONFIGURED_ADDR` is the address as written in the configuration (port
//! 0 included), which is what the successor matches its own binds against;
//! binds on port 0 are also told apart by their frontend and their place
//! among its port-0 binds on that address (see [`BindKey`]).
//! HAProxy's own `_getsocks` answer is binary and specific to its
//! listeners; only the command's name and its access rule are shared.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// What a handed-over socket listens for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A frontend's bind.
    Frontend,
    /// The stats listener.
    Stats,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Frontend => "frontend",
            Kind::Stats => "stats",
        }
    }
}

/// What identifies a listening socket across reloads and upgrades: the
/// address the configuration names. Several binds may name the same
/// address with port 0 (each gets its own port), so those are told apart
/// by their frontend and their place among its port-0 binds on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BindKey {
    pub addr: SocketAddr,
    /// `(frontend, n)` for the n-th bind of that frontend on `addr` when
    /// its port is 0; `None` otherwise.
    pub owner: Option<(String, usize)>,
}

impl BindKey {
    pub fn of(addr: SocketAddr, frontend: &str, nth: usize) -> BindKey {
        BindKey {
            addr,
            owner: (addr.port() == 0).then(|| (frontend.to_owned(), nth)),
        }
    }

    pub fn plain(addr: SocketAddr) -> BindKey {
        BindKey { addr, owner: None }
    }
}

/// A listening socket as the old process describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub kind: Kind,
    pub key: BindKey,
    pub local: SocketAddr,
}

/// A listening socket received from the old process.
#[derive(Debug)]
pub struct Handed {
    pub what: Described,
    pub fd: OwnedFd,
}

/// The most descriptors one answer carries (the kernel's `SCM_MAX_FD` is
/// 253).
pub const MAX_SOCKETS: usize = 250;

/// The text part of an answer.
pub fn describe(sockets: &[Described]) -> String {
    let mut s = format!("llmgw-sockets 1 {}\n", sockets.len());
    for d in sockets {
        s.push_str(&format!("{} {} {}", d.kind.as_str(), d.key.addr, d.local));
        if let Some((frontend, n)) = &d.key.owner {
            s.push_str(&format!(" {n} {frontend}"));
        }
        s.push('\n');
    }
    s.push_str("end\n");
    s
}

fn parse(text: &str) -> Result<Vec<Described>, String> {
    let mut lines = text.lines();
    let count = match lines.next().map(|l| l.split(' ').collect::<Vec<_>>()) {
        Some(w) if w.len() == 3 && w[0] == "llmgw-sockets" && w[1] == "1" => w[2]
            .parse::<usize>()
            .map_err(|_| format!("bad socket count '{}'", w[2]))?,
        Some(_) => {
            let first = text.lines().next().unwrap_or_default();
            return Err(format!("the running process answered '{first}' (is the socket configured with 'expose-fd listeners', and is the running process llmgw?)"));
        }
        None => return Err("the running process answered nothing".into()),
    };
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let line = lines.next().ok_or("the answer ends early")?;
        let w: Vec<&str> = line.splitn(5, ' ').collect();
        let kind = match w.first() {
            Some(&"frontend") => Kind::Frontend,
            Some(&"stats") => Kind::Stats,
            _ => return Err(format!("unknown socket line '{line}'")),
        };
        let addr = |i: usize| -> Result<SocketAddr, String> {
            w.get(i)
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| format!("bad address in '{line}'"))
        };
        let owner = match (w.get(3), w.get(4)) {
            (Some(n), Some(frontend)) => Some((
                (*frontend).to_owned(),
                n.parse()
                    .map_err(|_| format!("bad bind index in '{line}'"))?,
            )),
            (None, None) => None,
            _ => return Err(format!("bad socket line '{line}'")),
        };
        out.push(Described {
            kind,
            key: BindKey {
                addr: addr(1)?,
                owner,
            },
            local: addr(2)?,
        });
    }
    if lines.next() != Some("end") {
        return Err("the answer does not end with 'end'".into());
    }
    Ok(out)
}

/// Sends `text` with `fds` attached to its first byte (then the rest of
/// `text`, if the kernel took only part of it). `fd` is a connected unix
/// stream socket, blocking or not: `WouldBlock` comes back to the caller.
pub fn send_with_fds(fd: RawFd, text: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    if fds.len() > MAX_SOCKETS {
        return Err(io::Error::other(format!(
            "{} listening sockets: at most {MAX_SOCKETS} can be handed over",
            fds.len()
        )));
    }
    let payload = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(payload as u32) } as usize;
    let mut control = vec![0u8; space.max(1)];
    let mut iov = libc::iovec {
        iov_base: text.as_ptr() as *mut libc::c_void,
        iov_len: text.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below points into
    // `iov`, `control` or `fds`, which outlive the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer is CMSG_SPACE(payload) bytes, room for
        // one header and `fds`.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr() as *const u8,
                libc::CMSG_DATA(cmsg),
                payload,
            );
        }
    }
    // SAFETY: `msg` is fully initialised above.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Reads once into `buf`, taking the descriptors that come with the data.
fn recv_with_fds(fd: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    // SAFETY: pure size computation.
    let space = unsafe { libc::CMSG_SPACE((MAX_SOCKETS * 4 + 16) as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: as in `send_with_fds`; the buffers outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = space as _;
    // SAFETY: `msg` is initialised; CLOEXEC so no child inherits them.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: walking the control messages the kernel wrote, within
    // `msg_controllen`; each SCM_RIGHTS payload is an array of fds now
    // owned by this process.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / 4 {
                    let mut raw: RawFd = 0;
                    std::ptr::copy_nonoverlapping(
                        data.add(i * 4),
                        &mut raw as *mut RawFd as *mut u8,
                        4,
                    );
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("descriptors were cut off"));
    }
    Ok(n as usize)
}

/// Fetches the listening sockets of the process whose runtime API listens
/// on `path` (`llmgw run -x PATH`).
pub fn fetch(path: &Path, timeout: Duration) -> Result<Vec<Handed>, String> {
    let shown = path.display();
    let mut s = UnixStream::connect(path).map_err(|e| format!("-x {shown}: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    s.write_all(b"_getsocks\n")
        .map_err(|e| format!("-x {shown}: {e}"))?;
    let mut fds = Vec::new();
    let mut text = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // The descriptors come with the first bytes; the rest is plain text.
    let n =
        recv_with_fds(s.as_raw_fd(), &mut buf, &mut fds).map_err(|e| format!("-x {shown}: {e}"))?;
    text.extend_from_slice(&buf[..n]);
    // A refusal (`Permission denied`) is one line; an answer ends in `end`.
    while n > 0 && !text.ends_with(b"end\n") && !text.ends_with(b"\n\n") {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(m) => text.extend_from_slice(&buf[..m]),
            Err(e) => return Err(format!("-x {shown}: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&text);
    let described = parse(&text).map_err(|e| format!("-x {shown}: {e}"))?;
    if described.len() != fds.len() {
        return Err(format!(
            "-x {shown}: {} sockets described, {} received",
            described.len(),
            fds.len()
        ));
    }
    Ok(described
        .into_iter()
        .zip(fds)
        .map(|(what, fd)| Handed { what, fd })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn the_answer_round_trips() {
        let d = vec![
            Described {
                kind: Kind::Frontend,
                key: BindKey::of("127.0.0.1:0".parse().expect("addr"), "my front", 1),
                local: "127.0.0.1:4321".parse().expect("addr"),
            },
            Described {
                kind: Kind::Frontend,
                key: BindKey::of("127.0.0.1:80".parse().expect("addr"), "f", 0),
                local: "127.0.0.1:80".parse().expect("addr"),
            },
            Described {
                kind: Kind::Stats,
                key: BindKey::plain("[::1]:8404".parse().expect("addr")),
                local: "[::1]:8404".parse().expect("addr"),
            },
        ];
        let text = describe(&d);
        assert_eq!(parse(&text), Ok(d));
        assert!(parse("Permission denied\n")
            .unwrap_err()
            .contains("expose-fd"));
        assert!(parse("llmgw-sockets 1 2\nfrontend 1.2.3.4:1 1.2.3.4:1\nend\n").is_err());
        assert!(parse("llmgw-sockets 1 1\nfrontend 1.2.3.4:0 1.2.3.4:9 x\nend\n").is_err());
    }

    #[test]
    fn a_listening_socket_crosses_a_unix_socket_and_still_listens() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let (a, b) = UnixStream::pair().expect("pair");
        let text = describe(&[Described {
            kind: Kind::Frontend,
            key: BindKey::plain(addr),
            local: addr,
        }]);
        let n = send_with_fds(a.as_raw_fd(), text.as_bytes(), &[l.as_raw_fd()]).expect("send");
        assert_eq!(n, text.len());
        // The sender lets go of its copy: the receiver's keeps listening.
        drop(l);
        let mut fds = Vec::new();
        let mut buf = [0u8; 1024];
        let n = recv_with_fds(b.as_raw_fd(), &mut buf, &mut fds).expect("recv");
        assert_eq!(&buf[..n], text.as_bytes());
        assert_eq!(fds.len(), 1);
        let got = TcpListener::from(fds.pop().expect("fd"));
        assert_eq!(got.local_addr().expect("addr"), addr);
        let _c = std::net::TcpStream::connect(addr).expect("connect");
        got.accept().expect("accepted on the handed-over socket");
    }
}
