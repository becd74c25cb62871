//! Asking a listener's connections to finish, and knowing when they have.
//!
//! Every listening socket has one [`Drain`]; each connection it accepts
//! holds a [`Held`] on it for its whole life. When the listener is removed
//! by a reload, or the process stops softly (`SIGUSR1`, a binary upgrade),
//! the drain starts: the listener stops accepting and its connections
//! close at the next moment that loses nothing —
//!
//! - HTTP/1.1: the next response carries `Connection: close` and the
//!   connection closes after it. An idle keep-alive connection is *not*
//!   closed at once: a client may be writing its next request on it right
//!   now, and that request would be lost (the race by which HAProxy's old
//!   process loses requests across a reload). It is closed by its next
//!   response, or by `timeout http-keep-alive` as any idle connection is.
//! - HTTP/2: GOAWAY at once (graceful: streams in flight finish, the
//!   client opens new ones elsewhere), which the protocol makes race-free.
//! - TCP mode: nothing can be said in-band; the connection runs to its end.
//!
//! [`Drain::finished`] resolves when the last connection is gone.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio::sync::Notify;

use crate::gateway::Snapshot;

/// The connections of one listener; see the module doc.
#[derive(Default)]
pub struct Drain {
    draining: AtomicBool,
    /// The last configuration that had this listener's frontend, when a
    /// reload removed the frontend with it: requests still arriving on the
    /// listener's connections are served by it, not refused.
    retired: ArcSwapOption<Snapshot>,
    /// Woken once, when the drain starts.
    started: Notify,
    open: AtomicUsize,
    /// Woken when the last connection of a draining listener ends.
    emptied: Notify,
}

impl std::fmt::Debug for Drain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drain")
            .field("draining", &self.is_draining())
            .field("open", &self.open())
            .finish()
    }
}

impl Drain {
    pub fn new() -> Arc<Drain> {
        Arc::new(Drain::default())
    }

    /// Starts the drain of a listener whose frontend the new configuration
    /// no longer has; `last` is the configuration that had it.
    pub fn retire(&self, last: Arc<Snapshot>) {
        self.retired.store(Some(last));
        self.start();
    }

    /// See [`Drain::retire`].
    pub fn retired(&self) -> Option<Arc<Snapshot>> {
        self.retired.load_full()
    }

    /// Has the drain started? One relaxed load: asked once per response.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts the drain (again is harmless).
    pub fn start(&self) {
        if !self.draining.swap(true, Ordering::SeqCst) {
            self.started.notify_waiters();
            if self.open.load(Ordering::SeqCst) == 0 {
                self.emptied.notify_waiters();
            }
        }
    }

    /// Resolves once the drain has started.
    pub async fn started(&self) {
        let notified = self.started.notified();
        tokio::pin!(notified);
        // Registered before the check, so a start in between is not missed.
        notified.as_mut().enable();
        if self.is_draining() {
            return;
        }
        notified.await;
    }

    /// Connections still open.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Counts a connection until the returned guard drops.
    pub fn hold(self: &Arc<Self>) -> Held {
        self.open.fetch_add(1, Ordering::SeqCst);
        Held(self.clone())
    }

    /// Resolves when the drain has started and no connection is left.
    pub async fn finished(&self) {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            emptied.as_mut().enable();
            if self.is_draining() && self.open() == 0 {
                return;
            }
            if !self.is_draining() {
                self.started().await;
                continue;
            }
            emptied.await;
        }
    }
}

/// One open connection of a listener (see [`Drain::hold`]).
#[derive(Debug)]
pub struct Held(Arc<Drain>);

impl Held {
    pub fn drain_arc(&self) -> Arc<Drain> {
        self.0.clone()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::SeqCst) == 1 && self.0.is_draining() {
            self.0.emptied.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn finished_waits_for_the_start_and_the_last_connection() {
        let d = Drain::new();
        let a = d.hold();
        let b = d.hold();
        let mut done = Box::pin(d.finished());
        // Neither started nor empty.
        assert!(done.as_mut().now_or_never().is_none());
        drop(a);
        assert!(done.as_mut().now_or_never().is_none());
        d.start();
        assert!(d.is_draining());
        assert!(done.as_mut().now_or_never().is_none());
        drop(b);
        done.await;
        assert_eq!(d.open(), 0);
    }

    #[tokio::test]
    async fn a_drain_without_connections_is_finished_at_once() {
        let d = Drain::new();
        let started = d.started();
        d.start();
        started.await;
        d.finished().await;
        // A second start changes nothing.
        d.start();
        d.finished().await;
    }
}
