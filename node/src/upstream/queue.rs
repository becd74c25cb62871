//! Queueing (HAProxy's `maxconn` per server, `maxqueue`, `timeout queue`):
//! when every usable server is at its `maxconn`, a request waits in its
//! backend's queue until a slot frees, at most `timeout queue` (then 503
//! with `Retry-After`); a full queue answers 503 at once.
//!
//! Waiters are woken one per freed slot, first come first served
//! ([`tokio::sync::Notify`] wakes in order). A request arriving just as a
//! slot frees may take it before the woken waiter, which then waits again
//! at the back: the order is FIFO among waiters, not strict against new
//! arrivals (HAProxy gives the queue priority).

use std::sync::atomic::Ordering;

use http::{header, HeaderValue, Response, StatusCode};
use std::time::Duration;

use tokio::time::Instant;

use crate::balance::PickCtx;
use crate::gateway::BackendRt;
use crate::http::body::RespBody;
use crate::http::error;
use crate::upstream::retry::Failure;

/// Why a request got no server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSlot {
    /// No server is usable (all down, in maintenance or drained).
    NoServer,
    /// No server is usable because the ones that would be are cooling down
    /// after a 429; the shortest cooldown left.
    CoolingDown(std::time::Duration),
    /// `maxqueue` reached.
    QueueFull,
    /// No slot freed within `timeout queue`.
    QueueTimeout,
}

impl NoSlot {
    /// The answer the client gets (503; with `Retry-After` when queued).
    pub fn response(self, backend: &str) -> Response<RespBody> {
        match self {
            NoSlot::NoServer => error::no_server(backend),
            NoSlot::CoolingDown(left) => {
                let mut r = error::error_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    "upstream_rate_limited",
                    &format!(
                        "Every server of backend '{backend}' is rate-limited by its provider; retry later."
                    ),
                );
                let secs = left.as_millis().div_ceil(1000).max(1) as u64;
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                r
            }
            NoSlot::QueueFull => unavailable("queue_full", "The backend's queue is full."),
            NoSlot::QueueTimeout => unavailable(
                "queue_timeout",
                "No server slot freed within the backend's queue timeout.",
            ),
        }
    }

    /// What a fallback condition calls it: nothing was sent, so no usable
    /// server is a connection failure; servers cooling down are the 429
    /// that put them there; a full queue is the 503 it answers.
    pub fn failure(self) -> Failure {
        match self {
            NoSlot::NoServer => Failure::ConnFailure,
            NoSlot::CoolingDown(_) => Failure::Status(429),
            NoSlot::QueueFull | NoSlot::QueueTimeout => Failure::Status(503),
        }
    }
}

/// A server for this request: at once, or after waiting for a slot; with
/// how long it waited (zero when a server was free).
pub async fn pick(brt: &BackendRt, ctx: &PickCtx<'_>) -> Result<(usize, Duration), NoSlot> {
    if let Some(si) = brt.balancer.pick(ctx, &[]) {
        return Ok((si, Duration::ZERO));
    }
    if !brt.balancer.any_full() {
        return Err(none_usable(brt));
    }
    let q = &brt.queue;
    let now = q.current.fetch_add(1, Ordering::SeqCst) + 1;
    if brt.queue_limit.is_some_and(|limit| now > limit) {
        q.current.fetch_sub(1, Ordering::SeqCst);
        q.full.fetch_add(1, Ordering::Relaxed);
        return Err(NoSlot::QueueFull);
    }
    q.max.fetch_max(now, Ordering::Relaxed);
    q.total.fetch_add(1, Ordering::Relaxed);
    let start = Instant::now();
    let deadline = start + brt.queue_timeout;
    let got = loop {
        let notified = q.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(si) = brt.balancer.pick(ctx, &[]) {
            break Ok(si);
        }
        if !brt.balancer.any_full() {
            break Err(none_usable(brt));
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            q.timeouts.fetch_add(1, Ordering::Relaxed);
            break Err(NoSlot::QueueTimeout);
        }
    };
    q.current.fetch_sub(1, Ordering::SeqCst);
    let waited = start.elapsed();
    q.wait_us
        .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
    if got.is_err() && q.current.load(Ordering::SeqCst) > 0 {
        // A wake-up this waiter may have taken goes to the next one.
        q.notify.notify_one();
    }
    got.map(|si| (si, waited))
}

/// Why no server is usable: a 429 cooldown when one is running.
fn none_usable(brt: &BackendRt) -> NoSlot {
    brt.balancer
        .servers()
        .iter()
        .map(|s| s.cooldown_remaining())
        .filter(|d| !d.is_zero())
        .min()
        .map_or(NoSlot::NoServer, NoSlot::CoolingDown)
}

fn unavailable(code: &str, message: &str) -> Response<RespBody> {
    let mut r = error::error_response(StatusCode::SERVICE_UNAVAILABLE, code, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}
