//! The mock LLM provider: a fake OpenAI + Anthropic upstream.
//!
//! Tests, benchmarks and the gateway's embedded default config point at this
//! server instead of a real provider. This module owns:
//!
//! - the `llmgw mock-upstream` command line ([`MockArgs`]), its options
//!   ([`MockOptions`]) and its runtime ([`run`]);
//! - the accept loop serving HTTP/1.1 (keep-alive) and h2c prior knowledge on
//!   one port ([`serve`], [`spawn_builtin`]);
//! - the endpoints and the exact bytes they answer with (`handler`, `render`),
//!   shaped so the official `openai` and `anthropic` SDKs parse them;
//! - the streaming body with its timing and abrupt-cut behaviour (`body`);
//! - request counters for `GET /mock/stats` (`stats`).
//!
//! # Endpoints
//!
//! | Method | Path                     | Answer                                        |
//! |--------|--------------------------|-----------------------------------------------|
//! | POST   | `/v1/chat/completions`   | chat completion, JSON or SSE (`stream`)       |
//! | POST   | `/v1/completions`        | legacy text completion, JSON or SSE           |
//! | POST   | `/v1/embeddings`         | one small deterministic vector per input      |
//! | POST   | `/v1/messages`           | Anthropic message, JSON or SSE                |
//! | POST   | `/v1/messages/count_tokens` | Anthropic token count                      |
//! | GET    | `/v1/models`, `/v1/models/{id}` | model list / model (Anthropic shape when the request has `anthropic-version`) |
//! | GET    | `/health`                | `ok`                                          |
//! | any    | `/echo`, `/echo/...`     | what the mock received, as JSON              |
//! | GET    | `/mock/stats`            | request counters                              |
//! | POST   | `/mock/reset`            | zero the counters                             |
//! | POST   | `/mock/fail?fail=F[&path=P]` | force failure `F` (see [`Fail`]; `none` ends it) on every request, or on path `P` |
//!
//! Every response carries `x-mock-server: NAME`. The `/mock/*` control
//! endpoints are neither counted nor subject to failure injection, so a test
//! can read the counters of a server it told to fail.
//!
//! # Per-request overrides
//!
//! Request headers override the process options for one request:
//! `x-mock-ttft-ms`, `x-mock-tokens`, `x-mock-token-delay-ms`,
//! `x-mock-retry-after` and `x-mock-fail` (a [`Fail`] value, or `none` to
//! cancel a process-wide `--fail`). A malformed override is a 400, so a typo
//! in a test fails loudly instead of silently testing the happy path.
//!
//! # Timing
//!
//! Streaming: headers go out at once, the first token after `ttft`, then one
//! token every `token_delay`. Non-streaming: the whole answer (headers
//! included) after `ttft + (tokens - 1) * token_delay`, the time a real model
//! needs to generate it. `slow-headers` holds streaming headers for `ttft`
//! too. Delays apply to the LLM endpoints only; model listing and health stay
//! instant.

mod body;
mod handler;
mod render;
mod stats;
#[cfg(test)]
mod tests;

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket};

pub use stats::MockStats;

/// Most completion tokens one response may ask for (option or header).
/// Bounds the memory a single request can make the mock allocate.
pub const MAX_TOKENS: u32 = 1_000_000;
/// Longest delay (ttft or per token) an option or header may ask for.
pub const MAX_DELAY_MS: u64 = 3_600_000;

/// CLI options for `llmgw mock-upstream`.
#[derive(clap::Args, Debug, Clone)]
pub struct MockArgs {
    /// Address(es) to listen on, e.g. 127.0.0.1:9000 (port 0 = ephemeral).
    /// Each bound address is printed as a line `listening on ADDR` on stdout.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: Vec<SocketAddr>,
    /// Sent as the response header `x-mock-server: NAME`.
    #[arg(long, default_value = "mock")]
    pub name: String,
    /// Delay before the first token (and before headers when not streaming).
    #[arg(long, default_value_t = 0)]
    pub ttft_ms: u64,
    /// Completion tokens generated (capped by the request's max_tokens).
    #[arg(long, default_value_t = 16)]
    pub tokens: u32,
    /// Delay between generated tokens.
    #[arg(long, default_value_t = 0)]
    pub token_delay_ms: u64,
    /// Tokio worker threads (1 = current_thread runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Failure injected into every request: status:NNN, reset-mid-stream,
    /// hang, slow-headers or close (requests may override with x-mock-fail).
    #[arg(long)]
    pub fail: Option<Fail>,
    /// Retry-After value sent with injected 429/503 answers (default 1).
    #[arg(long)]
    pub retry_after: Option<String>,
}

/// A failure to inject, from `--fail` or the `x-mock-fail` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fail {
    /// `status:NNN`: answer NNN (200..=599) with a provider-shaped error body;
    /// 429 and 503 carry `Retry-After`.
    Status(u16),
    /// `reset-mid-stream`: send headers and about half the body, then cut the
    /// connection (HTTP/1.1) or reset the stream (HTTP/2), so the client sees
    /// an error rather than a clean end.
    ResetMidStream,
    /// `hang`: never answer, keep the connection open.
    Hang,
    /// `slow-headers`: hold the response headers for `ttft`, streaming too.
    SlowHeaders,
    /// `close`: close the connection without any response.
    Close,
}

impl FromStr for Fail {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "reset-mid-stream" => Ok(Fail::ResetMidStream),
            "hang" => Ok(Fail::Hang),
            "slow-headers" => Ok(Fail::SlowHeaders),
            "close" => Ok(Fail::Close),
            other => {
                let code = other
                    .strip_prefix("status:")
                    .and_then(|c| c.trim().parse::<u16>().ok())
                    .filter(|c| (200..=599).contains(c));
                code.map(Fail::Status).ok_or_else(|| {
                    format!(
                        "unknown failure {other:?}: expected status:NNN (200-599), \
                         reset-mid-stream, hang, slow-headers or close"
                    )
                })
            }
        }
    }
}

/// The mock's behaviour, built from [`MockArgs`] or by hand in tests.
///
/// Cloning shares the [`MockStats`]: every listener served with clones of one
/// options value counts into the same counters.
#[derive(Debug, Clone)]
pub struct MockOptions {
    /// Value of the `x-mock-server` response header.
    pub name: String,
    pub ttft: Duration,
    pub tokens: u32,
    pub token_delay: Duration,
    /// Failure injected into every request unless it sends `x-mock-fail`.
    pub fail: Option<Fail>,
    /// `Retry-After` for injected 429/503; `None` sends `1`.
    pub retry_after: Option<String>,
    /// Request counters behind `GET /mock/stats`.
    pub stats: Arc<MockStats>,
    /// A failure forced at run time with `POST /mock/fail`.
    pub forced: Arc<Forced>,
}

/// A failure set at run time (`POST /mock/fail?fail=F[&path=P]`), for
/// every request or for one path. A flag keeps the per-request cost at one
/// atomic load while nothing is forced.
#[derive(Debug, Default)]
pub struct Forced {
    on: std::sync::atomic::AtomicBool,
    what: std::sync::Mutex<Option<(Option<String>, Fail)>>,
}

impl Forced {
    pub fn set(&self, f: Option<(Option<String>, Fail)>) {
        let mut w = self.what.lock().unwrap_or_else(|e| e.into_inner());
        self.on
            .store(f.is_some(), std::sync::atomic::Ordering::Relaxed);
        *w = f;
    }

    /// The failure forced on `path`, if any.
    pub fn get(&self, path: &str) -> Option<Option<Fail>> {
        if !self.on.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let w = self.what.lock().unwrap_or_else(|e| e.into_inner());
        match &*w {
            Some((None, f)) => Some(Some(*f)),
            Some((Some(p), f)) if p == path => Some(Some(*f)),
            _ => None,
        }
    }
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            name: "mock".to_string(),
            ttft: Duration::ZERO,
            tokens: 16,
            token_delay: Duration::ZERO,
            fail: None,
            retry_after: None,
            stats: Arc::default(),
            forced: Arc::default(),
        }
    }
}

impl MockOptions {
    /// Validates the command line; errors are `InvalidInput`.
    pub fn from_args(args: &MockArgs) -> io::Result<Self> {
        let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
        if http::HeaderValue::from_str(&args.name).is_err() {
            return Err(invalid(format!(
                "--name {:?} is not a valid header value",
                args.name
            )));
        }
        if let Some(ra) = &args.retry_after {
            if http::HeaderValue::from_str(ra).is_err() {
                return Err(invalid(format!(
                    "--retry-after {ra:?} is not a valid header value"
                )));
            }
        }
        if args.tokens > MAX_TOKENS {
            return Err(invalid(format!("--tokens must be at most {MAX_TOKENS}")));
        }
        if args.ttft_ms > MAX_DELAY_MS || args.token_delay_ms > MAX_DELAY_MS {
            return Err(invalid(format!("delays must be at most {MAX_DELAY_MS} ms")));
        }
        Ok(MockOptions {
            name: args.name.clone(),
            ttft: Duration::from_millis(args.ttft_ms),
            tokens: args.tokens,
            token_delay: Duration::from_millis(args.token_delay_ms),
            fail: args.fail,
            retry_after: args.retry_after.clone(),
            stats: Arc::default(),
            forced: Arc::default(),
        })
    }
}

/// Runs `llmgw mock-upstream`: builds its own runtime, binds every `--listen`
/// address and serves forever.
pub fn run(args: MockArgs) -> io::Result<()> {
    let opts = Arc::new(MockOptions::from_args(&args)?);
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async move {
        let mut servers = Vec::with_capacity(args.listen.len());
        for addr in &args.listen {
            let listener = bind(*addr)?;
            let local = listener.local_addr()?;
            // Tests start the mock as a child process on port 0 and read this
            // line to learn the port, so it must be flushed right away.
            let mut out = io::stdout().lock();
            writeln!(out, "listening on {local}")?;
            out.flush()?;
            servers.push(tokio::spawn(serve(listener, opts.clone())));
        }
        for server in servers {
            server.await.map_err(io::Error::other)?;
        }
        Ok(())
    })
}

/// Binds 127.0.0.1:0, serves it with default options on the current runtime
/// and returns the bound address (the gateway's embedded default upstream).
pub async fn spawn_builtin() -> io::Result<SocketAddr> {
    let listener = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener, Arc::new(MockOptions::default())));
    Ok(addr)
}

/// Serves one listener forever: HTTP/1.1 and h2c (prior knowledge), told
/// apart by the connection preface.
pub async fn serve(listener: TcpListener, opts: Arc<MockOptions>) {
    let shared = Arc::new(handler::Shared::new(opts));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Answers pipelined requests in one write: benchmark tools pipeline.
        .pipeline_flush(true)
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1024);
    let builder = Arc::new(builder);

    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of descriptors or similar: retrying at once would spin.
                tracing::warn!("mock: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        // Tokens are small writes that must leave at once, not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handler::handle(req, shared.clone()));
            // Errors here are the client going away or an injected failure;
            // neither is worth a log line per connection in a benchmark.
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Binds with a large backlog so benchmark connection bursts are not refused.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
