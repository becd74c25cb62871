//! A connection's one timer, whose deadline moves without touching the
//! runtime's timer wheel.
//!
//! A keep-alive connection waits under a timeout several times per
//! request: for its next request (`timeout http-keep-alive`), for the
//! upstream's answer (`timeout server`), for each chunk of a streamed
//! response. A fresh `tokio::time::timeout` for each wait registers a timer
//! in the wheel and removes it again, nearly always long before it would
//! fire: on the proxied-request benchmark that was ~900 instructions and
//! ~75 instruction-cache misses per request. Like HAProxy's task expiry
//! dates, an [`Expiry`] keeps one timer per connection and moves the
//! deadline with a plain store. The wheel is touched only when the timer
//! must fire sooner than it is set to, or when it fires before the
//! deadline (it is then set again, for the deadline): about twice per
//! timeout period instead of twice per request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{sleep_until, Instant, Sleep};

/// The deadline the connection's waits are held to, and the timer that
/// enforces it; see the module doc.
pub struct Expiry {
    at: Instant,
    /// Made at the first wait; boxed, so a connection's future carries a
    /// pointer and not the timer's entry.
    timer: Option<Pin<Box<Sleep>>>,
}

/// The deadline passed before the operation completed.
#[derive(Debug, PartialEq, Eq)]
pub struct Expired;

impl Expiry {
    pub fn new(at: Instant) -> Self {
        Expiry { at, timer: None }
    }

    /// Holds the waits that follow to `at`, earlier or later than before.
    pub fn set(&mut self, at: Instant) {
        self.at = at;
    }

    /// Runs `op` until it completes, or the deadline passes first.
    pub fn within<F: Future>(&mut self, op: F) -> Within<'_, F> {
        Within { op, expiry: self }
    }

    /// Polled only while an operation is waiting: `Ready` once the deadline
    /// has passed. A timer set later than the deadline is brought forward;
    /// one that fired before it (set for an earlier wait) is set again.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Expired> {
        let at = self.at;
        let timer = self.timer.get_or_insert_with(|| Box::pin(sleep_until(at)));
        if timer.deadline() > at {
            timer.as_mut().reset(at);
        }
        while timer.as_mut().poll(cx).is_ready() {
            // It fired at its deadline: if that is the current one, time
            // is up; if it was an earlier one, wait on for this one.
            if timer.deadline() >= at {
                return Poll::Ready(Expired);
            }
            timer.as_mut().reset(at);
        }
        Poll::Pending
    }
}

pin_project_lite::pin_project! {
    /// The future [`Expiry::within`] returns.
    pub struct Within<'e, F> {
        #[pin]
        op: F,
        expiry: &'e mut Expiry,
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Result<F::Output, Expired>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.op.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        this.expiry.poll_expired(cx).map(Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SEC: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn an_operation_that_completes_in_time_is_not_cut_short() {
        let start = Instant::now();
        let mut expiry = Expiry::new(start + 2 * SEC);
        let r = expiry.within(tokio::time::sleep(SEC)).await;
        assert_eq!(r, Ok(()));
        assert_eq!(Instant::now(), start + SEC);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_deadline_expires_at_the_deadline() {
        let start = Instant::now();
        let mut expiry = Expiry::new(start + SEC);
        let r = expiry.within(std::future::pending::<()>()).await;
        assert_eq!(r, Err(Expired));
        assert_eq!(Instant::now(), start + SEC);
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_deadline_outlasts_the_timer_set_for_an_earlier_one() {
        let start = Instant::now();
        let mut expiry = Expiry::new(start + SEC);
        // Arms the timer for the first deadline, then completes in time.
        let quick = expiry.within(tokio::time::sleep(SEC / 2)).await;
        assert_eq!(quick, Ok(()));
        // The deadline moves later without the timer being touched: its
        // firing at the old deadline must not end this wait.
        expiry.set(start + 3 * SEC);
        let r = expiry.within(tokio::time::sleep(2 * SEC)).await;
        assert_eq!(r, Ok(()));
        assert_eq!(Instant::now(), start + 5 * SEC / 2);
        let r = expiry.within(std::future::pending::<()>()).await;
        assert_eq!(r, Err(Expired));
        assert_eq!(Instant::now(), start + 3 * SEC);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_brings_the_timer_forward() {
        let start = Instant::now();
        let mut expiry = Expiry::new(start + 10 * SEC);
        assert_eq!(expiry.within(tokio::time::sleep(SEC)).await, Ok(()));
        expiry.set(start + 2 * SEC);
        let r = expiry.within(std::future::pending::<()>()).await;
        assert_eq!(r, Err(Expired));
        assert_eq!(Instant::now(), start + 2 * SEC);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_already_past_expires_a_waiting_operation_at_once() {
        let start = Instant::now();
        let mut expiry = Expiry::new(start + SEC);
        tokio::time::sleep(2 * SEC).await;
        let r = expiry.within(std::future::pending::<()>()).await;
        assert_eq!(r, Err(Expired));
        assert_eq!(Instant::now(), start + 2 * SEC);
        // An operation that is ready is not failed for a passed deadline.
        assert_eq!(expiry.within(std::future::ready(7)).await, Ok(7));
    }
}
