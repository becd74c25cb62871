//! The writer thread's end: where formatted lines go.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::SystemTime;

use tokio::sync::mpsc;

use super::{format, Record};
use crate::config::log::{Framing, LogFormat, LogSink, LogTarget};

/// Lines gathered into one write to a stream (stdout, a file) when the
/// writer has fallen behind: one system call for many lines.
const BATCH: usize = 64 * 1024;

enum Out {
    Stream(Box<dyn Write + Send>),
    Udp(UdpSocket, SocketAddr),
    Unix(UnixDatagram, PathBuf),
}

pub(super) struct Sink {
    out: Out,
    framing: Framing,
    facility: u8,
    max_len: Option<usize>,
}

impl Sink {
    /// Opens the target now, so that a file that cannot be opened fails
    /// the configuration load rather than every line later.
    pub(super) fn open(t: &LogTarget) -> std::io::Result<Sink> {
        let out = match &t.sink {
            LogSink::Stdout => Out::Stream(Box::new(std::io::stdout())),
            LogSink::Stderr => Out::Stream(Box::new(std::io::stderr())),
            LogSink::File(p) => Out::Stream(Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?,
            )),
            LogSink::Udp(a) => {
                let local: SocketAddr = if a.is_ipv6() {
                    "[::]:0".parse().map_err(std::io::Error::other)?
                } else {
                    "0.0.0.0:0".parse().map_err(std::io::Error::other)?
                };
                Out::Udp(UdpSocket::bind(local)?, *a)
            }
            LogSink::Unix(p) => Out::Unix(UnixDatagram::unbound()?, p.clone()),
        };
        Ok(Sink {
            out,
            framing: t.framing,
            facility: t.facility,
            max_len: t.max_len,
        })
    }

    /// Writes lines until every sender is gone.
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Box<Record>>) {
        let pid = std::process::id();
        let mut line = String::with_capacity(1024);
        let mut batch: Vec<u8> = Vec::with_capacity(BATCH);
        let mut failures = 0u64;
        while let Some(first) = rx.blocking_recv() {
            let mut next = Some(first);
            while let Some(r) = next.take() {
                line.clear();
                format::header(
                    self.framing,
                    self.facility,
                    SystemTime::now(),
                    pid,
                    &mut line,
                );
                let start = line.len();
                format::line(&r, &mut line);
                drop(r);
                if let (Some(max), LogFormat::Httplog) = (self.max_len, format_of(&line, start)) {
                    cut(&mut line, max);
                }
                line.push('\n');
                let sent = match &mut self.out {
                    Out::Stream(_) => {
                        batch.extend_from_slice(line.as_bytes());
                        Ok(())
                    }
                    Out::Udp(s, to) => s.send_to(line.as_bytes(), *to).map(drop),
                    Out::Unix(s, to) => s.send_to(line.as_bytes(), to).map(drop),
                };
                if let Err(e) = sent {
                    failures += 1;
                    warn(failures, &e);
                }
                if batch.len() < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if let Out::Stream(w) = &mut self.out {
                if !batch.is_empty() {
                    if let Err(e) = w.write_all(&batch).and_then(|()| w.flush()) {
                        failures += 1;
                        warn(failures, &e);
                    }
                    batch.clear();
                }
            }
        }
    }
}

/// JSON lines start with `{` after the header; everything else is httplog.
fn format_of(line: &str, start: usize) -> LogFormat {
    if line[start..].starts_with('{') {
        LogFormat::Json
    } else {
        LogFormat::Httplog
    }
}

/// Cuts `line` to at most `max` bytes, on a character boundary.
fn cut(line: &mut String, max: usize) {
    if line.len() > max {
        let mut end = max;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
    }
}

/// A failing sink is reported once, then once every 10 000 failures, so a
/// missing syslog does not flood the internal log.
fn warn(failures: u64, e: &std::io::Error) {
    if failures == 1 || failures.is_multiple_of(10_000) {
        tracing::warn!(failures, error = %e, "access log: cannot write");
    }
}
