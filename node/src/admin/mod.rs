//! The runtime API: HAProxy's text protocol on a unix socket, so that a
//! script written for HAProxy — `echo "show stat" | socat -
//! UNIX-CONNECT:/run/llmgw.sock` — works unchanged.
//!
//! The socket comes from `stats socket PATH [mode OCTAL] [level
//! user|operator|admin]` (HAProxy dialect, with `stats timeout`) or
//! `stats_socket = { path, mode, level, timeout }` (native TOML). It is
//! bound under a temporary name, given its mode, then renamed over the
//! path — so it never exists with the wrong permissions, and a stale socket
//! from an earlier run is replaced; a path that exists and is not a socket
//! is refused. Sessions are tokio tasks ([`session`]); commands read the
//! current snapshot and the runtime state's atomics, and every change goes
//! through [`Runtime::apply`](crate::runtime::Runtime::apply) as a
//! [`Command`](crate::runtime::Command) — the type the cluster will carry.
//! No lock is held across an `.await`. The session's life (one-shot and
//! prompt mode, `quit`, timeouts, line length) is in `LIFECYCLE.md`.
//!
//! Commands: `help`, `prompt`, `quit`, `show info`, `show stat`, `show
//! servers state`, `show backend`, `show table`, `show version`, `show
//! cli level`, `get weight`, `disable|enable server`, `set server B/S
//! state|weight`, `set weight`, `set maxconn server`, `clear table`, and
//! llmgw's `reload` (the SIGHUP path, [`crate::reload`]).
//!
//! # What was checked against HAProxy 2.6.12
//!
//! Recorded from a live `haproxy` with `stats socket … level admin` (and
//! `user`/`operator` sockets), then matched here byte for byte where llmgw
//! has the same thing; `tests/e2e/runtime_api.rs` compares the `show stat`
//! header with the installed HAProxy's on every run.
//!
//! - Framing: every answer is followed by an empty line (`"\n"`); a
//!   successful change answers nothing but that line. One-shot mode
//!   answers the first line — and whatever arrived with it — and closes
//!   once nothing is left unread (as HAProxy, whose source says so: "not
//!   in interactive mode and the request buffer is empty"); a line
//!   without its line feed before the client's end gets no answer.
//!   `prompt` answers `"\n> "`; in prompt mode `> ` follows every
//!   command's answer (after the empty line), commands separated by `;`
//!   included; `prompt` again leaves it. `quit` closes without a byte.
//!   `;` separates commands (`\;` does not), a backslash escapes the next
//!   character, quotes are literal, words split on spaces and tabs, a
//!   trailing `\r` is dropped.
//!   An empty command answers the full command list under `Unknown
//!   command. Please enter one of the following commands only:`; an
//!   unknown one proposes the commands its exact first words start, or up
//!   to five by spelling, under `Unknown command, but maybe one of the
//!   following ones is a better match:`; `help`, `prompt` and `quit` end
//!   every list, the others sorted by their text as `"  %-40s: %s"`.
//! - Limits: 10 s without a complete line closes the session (HAProxy's
//!   default `stats timeout`, in both modes); a line of 16 383 bytes with
//!   its line feed is read, a longer one closes the session unanswered;
//!   at most 10 sessions at once (HAProxy's default `stats maxconn`),
//!   more wait in the backlog.
//! - Levels: without `level`, `operator` (HAProxy's default). `user` may
//!   show everything but table contents (`# contents not dumped due to
//!   insufficient privileges`); `operator` may also `clear table`; changes
//!   to servers (and `reload`) need `admin`; otherwise `Permission
//!   denied`. `help` lists every command at every level, as HAProxy does.
//! - `show stat`: HAProxy's 128 columns in its order, each line (header
//!   included) ending with `,`; rows per proxy in id order — FRONTEND,
//!   servers, BACKEND — with `iid` from 2 and `sid` from 1; `status`
//!   `OPEN`, `UP`, `DOWN`, `UP 1/3`, `DOWN 1/2`, `no check`, `DRAIN`,
//!   `MAINT`; `weight` the effective weight and `uweight` the set one;
//!   backend `weight`/`act`/`bck` over the usable servers; check fields
//!   only for checked servers not in maintenance, `check_code` only for
//!   L7OK/L7STS. Filters `<iid|proxy> <type> <sid>` (all three, or none)
//!   and `up`/`no-maint` (which add `(running/total)` to a backend's
//!   status), `No such proxy.`.
//!   After the same requests through both, every value llmgw fills
//!   equals HAProxy's (timings aside): that is the e2e test.
//! - `show stat` fields filled: FRONTEND `scur smax slim stot dreq ereq
//!   dcon req_tot hrsp_* conn_tot status pid iid sid type mode`; servers
//!   `qcur scur slim stot econ eresp wretr wredis status weight act bck
//!   chkfail chkdown lastchg qlimit throttle lbtot check_* hrsp_* req_tot
//!   ctime rtime ttime addr mode uweight`; BACKEND `qcur qmax scur
//!   smax stot dreq econ eresp wretr wredis status weight act bck lbtot
//!   hrsp_* req_tot qtime ctime rtime ttime mode algo uweight` (the
//!   timings are averages since start; HAProxy's cover the last 1024
//!   requests). Empty because llmgw does not count them: `bin`/`bout`
//!   (it counts body bytes, HAProxy every byte), per-second rates,
//!   maxima of timings, per-server `qmax`/`smax`/`qtime` (requests wait
//!   in the backend's queue), `downtime`, backend
//!   `chkdown`/`lastchg`/`slim`, aborts, `lastsess`, the check's detail
//!   text, agent, compression, cache, connection reuse and idle-pool
//!   figures, and the SSL/HTTP/2/HTTP/1 module counters.
//! - `show servers state [B]`: version line `1`, HAProxy's header, its
//!   numbers for op state, admin flags, check status/result/state;
//!   `Can't find backend.`.
//! - `show table`: `# table: NAME, type: T, size:N, used:N` for each table
//!   by name; with a name, entries in key order as `0xADDR: key=K use=N
//!   exp=MS data…` in HAProxy's data-type order (`conn_rate(10000)=3`),
//!   string keys escaped as HAProxy does (`bob\ smith`), `No such table`,
//!   `Key value expected`, `Invalid key`, nothing at all for an absent key.
//! - `clear table T [key K]`, `set server B/S state ready|drain|maint`,
//!   `set server B/S weight N[%]`, `set weight`, `set maxconn server`,
//!   `disable|enable server`, `get weight` (`5 (initial 10)`): HAProxy's
//!   messages — `Require 'backend/server'.`, `No such backend.`, `No such
//!   server.`, `'set server <srv> state' expects 'ready', 'drain' and
//!   'maint'.`, `Require <weight> or <weight%>.`, `Absolute weight can
//!   only be between 0 and 256 inclusive.`, `Relative weight must be
//!   positive.`, the static-algorithm refusal, and the three messages
//!   HAProxy prints without a line feed (`Empty weight string empty or
//!   preceded by garbage`, `Trailing garbage in weight string`, `Trailing
//!   garbage in maxconn string`), kept so.
//! - `show backend`, `show version`, `show cli level`: identical.
//!
//! Deliberate differences: `show info` prints only the fields llmgw can
//! fill (`Name: llmgw`); `algo` is `random` for `balance random` (HAProxy
//! 2.6 prints `unknown`); a negative `set maxconn server` is refused
//! (HAProxy stores it); `clear table` with a key that is not an address
//! for an `ip` table answers `Invalid key` (HAProxy tries to resolve it);
//! `show stat` and `show info` answer only the CSV/plain formats
//! (`typed`/`json`/`desc` are refused with a message); `show table`
//! filters by `key` only; `set server` takes `state` and `weight` only;
//! llmgw's client-key usage tables appear as `@client-keys/LIST`. `reload`
//! answers as HAProxy's master CLI does from 2.7: `Success=1` or
//! `Success=0`, `--`, then the warnings or errors.

mod commands;
pub(crate) mod stat;

pub use commands::{run_line, split_commands, split_words, Context, LineOutcome, Session};
pub use stat::{stat_header, STAT_FIELDS};

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::config::{AccessLevel, StatsSocket};

/// Longest request line, its line feed included: HAProxy reads a line
/// into its 16 KiB buffer, keeping a byte for the terminating NUL.
pub const MAX_LINE: usize = 16_383;

/// Sessions at once (HAProxy's default `stats maxconn`).
pub const MAX_SESSIONS: usize = 10;

/// What `show info` reports about the process.
#[derive(Debug, Clone)]
pub struct Process {
    pub started: Instant,
    /// Unix time of the start, in seconds.
    pub started_unix: u64,
    /// The process-wide connection limit in force.
    pub maxconn: u32,
    pub nbthread: usize,
}

/// Binds the runtime API socket: under a temporary name next to `path`,
/// given its mode, then renamed over `path`.
pub fn bind(sock: &StatsSocket) -> Result<UnixListener, String> {
    let path = &sock.path;
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(format!(
                "stats socket {shown}: the path exists and is not a socket; not replacing it"
            ))
        }
        _ => {}
    }
    let Some(file) = path.file_name() else {
        return Err(format!("stats socket {shown}: not a file path"));
    };
    let mut tmp_name = file.to_owned();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let fail = |what: &str, e: io::Error| {
        let _ = std::fs::remove_file(&tmp);
        format!("stats socket {shown}: cannot {what}: {e}")
    };
    let listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(|e| fail("bind", e))?;
    if let Some(mode) = sock.mode {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .map_err(|e| fail("set its mode", e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| fail("move it into place", e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("stats socket {shown}: {e}"))?;
    UnixListener::from_std(listener).map_err(|e| format!("stats socket {shown}: {e}"))
}

/// Accepts sessions forever.
pub async fn run(listener: UnixListener, ctx: Arc<Context>, sock: StatsSocket) {
    let slots = Arc::new(Semaphore::new(MAX_SESSIONS));
    loop {
        // A slot first: past the limit, clients wait in the backlog.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "runtime API: accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        let (level, timeout, expose_fd) = (sock.level, sock.timeout, sock.expose_fd);
        tokio::spawn(async move {
            session(&ctx, stream, level, timeout, expose_fd).await;
            drop(permit);
        });
    }
}

/// HAProxy's (hidden) command by which a new process takes over the
/// listening sockets (`llmgw run -x`): see [`crate::listen::handover`].
const GETSOCKS: &str = "_getsocks";

/// Answers `_getsocks`: the listening sockets themselves, on a socket
/// configured with `expose-fd listeners`; `Permission denied` (HAProxy's
/// answer) on any other. `false` when the session should end.
async fn getsocks(ctx: &Context, wr: &tokio::net::unix::OwnedWriteHalf, expose_fd: bool) -> bool {
    use crate::listen::handover;
    use std::os::fd::AsRawFd;
    let (text, fds) = if expose_fd {
        match ctx.listeners.handover() {
            Ok(list) => {
                let (described, fds): (Vec<_>, Vec<_>) = list.into_iter().unzip();
                (handover::describe(&described), fds)
            }
            Err(e) => (format!("cannot hand the sockets over: {e}\n"), Vec::new()),
        }
    } else {
        ("Permission denied\n".to_owned(), Vec::new())
    };
    let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let stream: &UnixStream = wr.as_ref();
    let mut sent = 0;
    // The descriptors go with the first bytes; the rest of the text (if
    // the kernel took only part) follows plain.
    while sent < text.len() {
        if stream.writable().await.is_err() {
            return false;
        }
        let attach = if sent == 0 { &raw[..] } else { &[] };
        match stream.try_io(tokio::io::Interest::WRITABLE, || {
            handover::send_with_fds(stream.as_raw_fd(), &text.as_bytes()[sent..], attach)
        }) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::warn!(error = %e, "runtime API: _getsocks failed");
                return false;
            }
        }
    }
    if expose_fd && !fds.is_empty() {
        tracing::info!(
            sockets = fds.len(),
            "runtime API: listening sockets handed over (_getsocks)"
        );
    }
    true
}

/// The next complete line in `buf` (its line feed and a `\r` before it
/// dropped), taken out of the buffer. `Err` when the line cannot fit in
/// [`MAX_LINE`].
fn next_line(buf: &mut Vec<u8>) -> Result<Option<String>, ()> {
    let window = &buf[..buf.len().min(MAX_LINE)];
    match window.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let mut line: Vec<u8> = buf.drain(..=i).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            Ok(Some(String::from_utf8_lossy(&line).into_owned()))
        }
        None if buf.len() >= MAX_LINE => Err(()),
        None => Ok(None),
    }
}

/// One client connection; see `LIFECYCLE.md`.
async fn session(
    ctx: &Context,
    stream: UnixStream,
    level: AccessLevel,
    timeout: Duration,
    expose_fd: bool,
) {
    let (mut rd, mut wr) = stream.into_split();
    let mut sess = Session {
        level,
        interactive: false,
    };
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 4096];
    let mut answered = false;
    loop {
        loop {
            let line = match next_line(&mut buf) {
                Ok(Some(l)) => l,
                Ok(None) => break,
                // Too long: closed unanswered, as HAProxy does.
                Err(()) => return,
            };
            if line == GETSOCKS {
                answered = true;
                if !getsocks(ctx, &wr, expose_fd).await {
                    return;
                }
                continue;
            }
            let out = run_line(ctx, &mut sess, &line).await;
            answered = true;
            if !out.output.is_empty() {
                match tokio::time::timeout(timeout, wr.write_all(out.output.as_bytes())).await {
                    Ok(Ok(())) => {}
                    _ => return,
                }
            }
            if out.quit {
                return;
            }
        }
        // One-shot: the session ends once an answer leaves nothing
        // unread — lines sent along with the first are answered, and a
        // line still arriving is waited for (HAProxy closes when its
        // request buffer is empty).
        if answered && !sess.interactive && buf.is_empty() {
            match rd.try_read(&mut chunk) {
                Ok(n) if n > 0 => {
                    buf.extend_from_slice(&chunk[..n]);
                    continue;
                }
                _ => {
                    let _ = wr.shutdown().await;
                    return;
                }
            }
        }
        match tokio::time::timeout(timeout, rd.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            // The client is done (a last line without its line feed is
            // not answered), broke off, or stayed silent too long.
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests;
