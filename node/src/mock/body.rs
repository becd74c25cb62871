//! The response body type: a complete buffer, a timed SSE stream, or a body
//! that breaks off halfway.
//!
//! One concrete enum rather than a boxed trait object keeps the common case
//! (a complete buffer) free of extra allocation. Breaking off is done by
//! returning an error from `poll_frame`: hyper then drops an HTTP/1.1
//! connection without the terminating chunk (or short of Content-Length) and
//! resets an HTTP/2 stream, which is exactly what a client must see as a
//! failed response rather than a clean end.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::handler::Shared;
use super::render;

/// Why the mock answered nothing or broke off mid-body; the only errors its
/// service and bodies produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MockError {
    /// End the connection without answering: injected `close`, or a client
    /// that went away before its request was fully read.
    Close,
    /// Injected `reset-mid-stream`: cut the body halfway.
    Reset,
}

impl std::fmt::Display for MockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MockError::Close => "mock: injected close",
            MockError::Reset => "mock: injected reset-mid-stream",
        })
    }
}

impl std::error::Error for MockError {}

pub(super) struct MockBody(Kind);

enum Kind {
    Full(Option<Bytes>),
    Sse(Box<Sse>),
    Cut(Cut),
}

impl MockBody {
    pub(super) fn full(bytes: impl Into<Bytes>) -> Self {
        MockBody(Kind::Full(Some(bytes.into())))
    }

    pub(super) fn sse(sse: Sse) -> Self {
        MockBody(Kind::Sse(Box::new(sse)))
    }

    /// Turns a complete body into one that sends its first half and then
    /// breaks off. Returns the full length, which the caller promises in
    /// Content-Length so the client knows the body came up short.
    pub(super) fn cut_if_full(&mut self) -> Option<u64> {
        let Kind::Full(Some(bytes)) = &mut self.0 else {
            return None;
        };
        let bytes = std::mem::take(bytes);
        let len = bytes.len() as u64;
        self.0 = Kind::Cut(Cut {
            first: Some(bytes.slice(..bytes.len() / 2)),
            settle: None,
        });
        Some(len)
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = MockError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, MockError>>> {
        match &mut self.get_mut().0 {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Sse(sse) => sse.poll_next(cx),
            Kind::Cut(cut) => cut.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Sse(sse) => sse.next >= sse.total,
            Kind::Cut(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            // Exact, so hyper sends Content-Length and no chunked framing.
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            _ => SizeHint::default(),
        }
    }
}

/// How long a break waits after the last data it let through. The data must
/// reach the socket first: hyper's HTTP/1.1 dispatcher flushes only when the
/// body is pending, and an HTTP/2 reset discards whatever is still queued for
/// the stream (headers included). No signal tells the body that the
/// connection task has written, and mere yields proved too short on a
/// multi-threaded runtime, so this is a plain, generous timer.
const SETTLE: Duration = Duration::from_millis(10);

struct Cut {
    first: Option<Bytes>,
    settle: Option<Pin<Box<Sleep>>>,
}

impl Cut {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, MockError>>> {
        if let Some(first) = self.first.take() {
            self.settle = Some(Box::pin(tokio::time::sleep_until(deadline_after(SETTLE))));
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if let Some(settle) = &mut self.settle {
            ready!(settle.as_mut().poll(cx));
            self.settle = None;
        }
        Poll::Ready(Some(Err(MockError::Reset)))
    }
}

/// Which API's event stream an [`Sse`] body speaks.
pub(super) enum SseKind {
    /// OpenAI chat: `head` is the shared chunk prefix.
    Chat,
    /// OpenAI legacy completions: `head` is the shared chunk prefix.
    Text,
    /// Anthropic: deltas come precomputed from [`Shared`].
    Anthropic,
}

/// What an [`Sse`] body sends; the handler fills it in.
pub(super) struct SseSpec {
    pub kind: SseKind,
    pub shared: Arc<Shared>,
    /// OpenAI kinds: the prefix every chunk of this stream shares.
    pub head: Bytes,
    /// Sent with the headers, before any delay (Anthropic's message_start).
    pub lead: Option<Bytes>,
    /// Everything after the last token: finish, usage, end marker.
    pub tail: Bytes,
    /// Completion tokens to send.
    pub tokens: u32,
    /// Delay before the first token.
    pub ttft: Duration,
    /// Delay before each later token.
    pub token_delay: Duration,
    /// Break off after about half the tokens.
    pub reset: bool,
}

/// A server-sent event stream generated one frame at a time: the optional
/// lead, one frame per token (each its own write, so a client sees tokens
/// arrive one by one), then the tail. Token frames are built lazily, so a
/// long stream costs no memory up front.
pub(super) struct Sse {
    spec: SseSpec,
    next: u32,
    total: u32,
    cut_at: Option<u32>,
    sleep: Option<Pin<Box<Sleep>>>,
    sleeping: bool,
}

impl Sse {
    pub(super) fn new(spec: SseSpec) -> Self {
        let mut sse = Sse {
            spec,
            next: 0,
            total: 0,
            cut_at: None,
            sleep: None,
            sleeping: false,
        };
        let tokens = sse.token_frames();
        sse.total = sse.lead_frames() + tokens + 1;
        if sse.spec.reset {
            sse.cut_at = Some(sse.lead_frames() + tokens.div_ceil(2));
        }
        sse
    }

    fn lead_frames(&self) -> u32 {
        u32::from(self.spec.lead.is_some())
    }

    /// An empty OpenAI chat answer still sends one role-only chunk.
    fn token_frames(&self) -> u32 {
        match self.spec.kind {
            SseKind::Chat => self.spec.tokens.max(1),
            _ => self.spec.tokens,
        }
    }

    fn delay_before(&self, frame: u32) -> Duration {
        let lead = self.lead_frames();
        if frame < lead || frame >= lead + self.token_frames() {
            Duration::ZERO
        } else if frame == lead {
            self.spec.ttft
        } else {
            self.spec.token_delay
        }
    }

    fn frame(&self, frame: u32) -> Bytes {
        let lead = self.lead_frames();
        if frame < lead {
            return self.spec.lead.clone().unwrap_or_default();
        }
        let token = frame - lead;
        if token >= self.token_frames() {
            return self.spec.tail.clone();
        }
        let spec = &self.spec;
        match spec.kind {
            SseKind::Chat => render::chat_chunk(&spec.head, (spec.tokens > 0).then_some(token)),
            SseKind::Text => render::text_chunk(&spec.head, token),
            SseKind::Anthropic => spec
                .shared
                .anthropic_deltas
                .get(render::anthropic_delta_index(token))
                .cloned()
                .unwrap_or_default(),
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, MockError>>> {
        if self.next >= self.total {
            return Poll::Ready(None);
        }
        let cut = self.cut_at == Some(self.next);
        if !self.sleeping {
            let delay = if cut {
                SETTLE
            } else {
                self.delay_before(self.next)
            };
            if !delay.is_zero() {
                let deadline = deadline_after(delay);
                match &mut self.sleep {
                    // One timer per stream, re-armed for every token.
                    Some(sleep) => sleep.as_mut().reset(deadline),
                    None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                }
                self.sleeping = true;
            }
        }
        if self.sleeping {
            if let Some(sleep) = &mut self.sleep {
                ready!(sleep.as_mut().poll(cx));
            }
            self.sleeping = false;
        }
        if cut {
            self.next = self.total;
            return Poll::Ready(Some(Err(MockError::Reset)));
        }
        let frame = self.frame(self.next);
        self.next += 1;
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }
}

/// `now + delay`, saturating far in the future instead of overflowing.
pub(super) fn deadline_after(delay: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(delay)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}
