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
use tokio::time::Instant;

use crate::balance::PickCtx;
use crate::gateway::BackendRt;
use crate::http::body::RespBody;
use crate::http::error;

/// A server for this request: at once, or after waiting for a slot.
/// `Err` is the answer instead (503 no server, queue full or timed out).
pub async fn pick(
    brt: &BackendRt,
    backend: &str,
    ctx: &PickCtx<'_>,
) -> Result<usize, Response<RespBody>> {
    if let Some(si) = brt.balancer.pick(ctx, &[]) {
        return Ok(si);
    }
    if !brt.balancer.any_full() {
        return Err(error::no_server(backend));
    }
    let q = &brt.queue;
    let now = q.current.fetch_add(1, Ordering::SeqCst) + 1;
    if brt.queue_limit.is_some_and(|limit| now > limit) {
        q.current.fetch_sub(1, Ordering::SeqCst);
        q.full.fetch_add(1, Ordering::Relaxed);
        return Err(unavailable("queue_full", "The backend's queue is full."));
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
            break Err(error::no_server(backend));
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            q.timeouts.fetch_add(1, Ordering::Relaxed);
            break Err(unavailable(
                "queue_timeout",
                "No server slot freed within the backend's queue timeout.",
            ));
        }
    };
    q.current.fetch_sub(1, Ordering::SeqCst);
    q.wait_us
        .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
    if got.is_err() && q.current.load(Ordering::SeqCst) > 0 {
        // A wake-up this waiter may have taken goes to the next one.
        q.notify.notify_one();
    }
    got
}

fn unavailable(code: &str, message: &str) -> Response<RespBody> {
    let mut r = error::error_response(StatusCode::SERVICE_UNAVAILABLE, code, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}
