//! Idle keep-alive connections to one plain HTTP/1.1 server, spoken on
//! directly by the HTTP/1 engine (`http::h1`) and by the general path's
//! HTTP/1.1 client (`http::h1::client`, for HTTP/2 clients): one pool for
//! both.
//!
//! A connection is taken out for one request and handed back only when that
//! exchange ended cleanly, so a connection in the pool never carries a
//! half-read response. The newest idle connection is reused first (it is
//! the least likely to have been closed by the server); one that idled past
//! the backend's `pool_idle_timeout`, or that the server has closed
//! meanwhile, is dropped on the way out. Each serving thread
//! ([`crate::threads`]) has its own share of the pool, so a connection is
//! reused by the thread whose runtime watches its socket and threads do
//! not contend for one lock; a thread whose share is empty takes over
//! another's idle connection (HAProxy's `fd_takeover`) before it opens a
//! new one. A lock is held for a push or a pop, never across I/O.
//!
//! The pool keeps as many connections as the traffic needed at once
//! (HAProxy's `pool-max-conn -1`); after a burst, HAProxy's
//! `pool-purge-delay` thins them out: every delay (5 s by default), half
//! of the connections that sat idle for a whole delay are closed, in the
//! background, so that a quiet server is not left holding a burst's worth
//! of sockets until `idle_timeout`.

use std::io;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// One thread's idle connections, each with when it went idle.
type Share = Mutex<Vec<(TcpStream, Instant)>>;

pub struct H1Pool {
    host: String,
    port: u16,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// Per thread: `pool_max_idle` split between the threads.
    max_idle: usize,
    /// One share per serving thread, newest last.
    idle: Box<[Share]>,
    /// HAProxy's `pool-purge-delay`; zero: never purged.
    purge_delay: Duration,
    /// HAProxy's `pool-low-conn`: below this many idle connections in all,
    /// a thread opens its own instead of taking over another's.
    low_conn: usize,
}

/// HAProxy's default `pool-purge-delay`.
pub const DEFAULT_PURGE_DELAY: Duration = Duration::from_secs(5);

impl H1Pool {
    pub fn new(
        host: String,
        port: u16,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Self {
        let threads = crate::threads::count();
        Self::with_shares(host, port, connect_timeout, idle_timeout, max_idle, threads)
    }

    fn with_shares(
        host: String,
        port: u16,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
        threads: usize,
    ) -> Self {
        let threads = threads.max(1);
        H1Pool {
            host,
            port,
            connect_timeout,
            idle_timeout,
            max_idle: max_idle.div_ceil(threads),
            idle: (0..threads).map(|_| Mutex::new(Vec::new())).collect(),
            purge_delay: DEFAULT_PURGE_DELAY,
            low_conn: 0,
        }
    }

    /// A thread takes over another's idle connection only while the server
    /// has at least `n` idle in all (0: always), so that each thread keeps
    /// a few of its own instead of passing them around.
    pub fn with_low_conn(mut self, n: usize) -> Self {
        self.low_conn = n;
        self
    }

    /// Purged every `delay` ([`purge`](Self::purge)); zero: never.
    pub fn with_purge_delay(mut self, delay: Duration) -> Self {
        self.purge_delay = delay;
        self
    }

    /// Starts the background purge, on the current runtime (none outside
    /// one). It holds the pool weakly and ends once the pool is gone (a
    /// reload replaced it).
    pub fn start_purging(pool: &Arc<H1Pool>) {
        let delay = pool.purge_delay;
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if delay.is_zero() {
            return;
        }
        let weak: Weak<H1Pool> = Arc::downgrade(pool);
        rt.spawn(async move {
            let mut tick = tokio::time::interval_at(Instant::now() + delay, delay);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = weak.upgrade() else { break };
                pool.purge();
            }
        });
    }

    /// One purge round: in each share, the connections idle past
    /// `idle_timeout` are closed, and of those idle for a whole purge
    /// delay, the older half (rounded up). Connections used within the
    /// last delay are what the traffic needs now, and stay. Returns how
    /// many were closed.
    pub fn purge(&self) -> usize {
        let mut closed = 0;
        for share in self.idle.iter() {
            let Ok(mut idle) = share.lock() else { continue };
            // Oldest first: `checkin` pushes at the end.
            let expired = idle
                .iter()
                .take_while(|(_, since)| since.elapsed() >= self.idle_timeout)
                .count();
            let stale = idle
                .iter()
                .take_while(|(_, since)| since.elapsed() >= self.purge_delay)
                .count();
            let n = expired.max(stale.div_ceil(2));
            closed += n;
            // Dropped outside the lock.
            let gone: Vec<_> = idle.drain(..n).collect();
            drop(idle);
            drop(gone);
        }
        closed
    }

    /// An idle connection that still looks open, if there is one: the
    /// calling thread's newest, or else — HAProxy's idle-connection
    /// takeover — another thread's, moved to this thread's runtime.
    pub fn checkout(&self) -> Option<TcpStream> {
        self.checkout_at(crate::threads::index())
    }

    fn checkout_at(&self, here: usize) -> Option<TcpStream> {
        let n = self.idle.len();
        let here = here % n;
        if let Some(conn) = self.take(here) {
            return Some(conn);
        }
        if self.low_conn > 0 && self.idle_total() < self.low_conn {
            return None;
        }
        for i in (1..n).map(|k| (here + k) % n) {
            let Some(conn) = self.take(i) else { continue };
            // Its readiness is watched by the other thread's runtime: hand
            // the socket over to this one's.
            match crate::threads::move_to(conn, &tokio::runtime::Handle::current()) {
                Ok(conn) => {
                    crate::threads::took_over_connection();
                    return Some(conn);
                }
                Err(e) => tracing::debug!(error = %e, "cannot take over an idle connection"),
            }
        }
        None
    }

    /// The newest connection of share `i` that is still fresh and open.
    fn take(&self, i: usize) -> Option<TcpStream> {
        let share = &self.idle[i];
        loop {
            let (conn, since) = share.lock().ok()?.pop()?;
            if since.elapsed() >= self.idle_timeout {
                // The rest are older still.
                if let Ok(mut idle) = share.lock() {
                    idle.clear();
                }
                return None;
            }
            // A server that closed the connection made it readable (EOF);
            // an open, idle one has nothing to read. tokio answers from its
            // readiness state, so a quiet connection costs no syscall.
            match conn.try_read(&mut [0u8; 1]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(conn),
                _ => continue,
            }
        }
    }

    /// A new connection, within `timeout connect`.
    pub async fn connect(&self) -> io::Result<TcpStream> {
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let conn = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timeout"))??;
        conn.set_nodelay(true)?;
        Ok(conn)
    }

    /// Hands a connection whose last exchange ended cleanly back for reuse.
    pub fn checkin(&self, conn: TcpStream) {
        self.checkin_at(crate::threads::index(), conn)
    }

    fn checkin_at(&self, here: usize, conn: TcpStream) {
        if let Ok(mut idle) = self.idle[here % self.idle.len()].lock() {
            if idle.len() < self.max_idle {
                idle.push((conn, Instant::now()));
            }
        }
    }

    /// Idle connections over all the shares.
    fn idle_total(&self) -> usize {
        self.idle
            .iter()
            .map(|s| s.lock().map(|i| i.len()).unwrap_or(0))
            .sum()
    }

    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        self.idle_total()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn listener() -> (TcpListener, u16) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        (l, port)
    }

    fn pool(port: u16, idle: Duration, max: usize) -> H1Pool {
        H1Pool::new("127.0.0.1".into(), port, Duration::from_secs(5), idle, max)
    }

    /// A pool with a share for each of two serving threads.
    fn two_threads(port: u16, max: usize) -> H1Pool {
        H1Pool::with_shares(
            "127.0.0.1".into(),
            port,
            Duration::from_secs(5),
            Duration::from_secs(60),
            max,
            2,
        )
    }

    #[tokio::test]
    async fn reuses_open_connections_newest_first() {
        let (l, port) = listener().await;
        let p = pool(port, Duration::from_secs(60), 8);
        let a = p.connect().await.unwrap();
        let b = p.connect().await.unwrap();
        let (_sa, _) = l.accept().await.unwrap();
        let (_sb, _) = l.accept().await.unwrap();
        let b_addr = b.local_addr().unwrap();
        p.checkin(a);
        p.checkin(b);
        let got = p.checkout().unwrap();
        assert_eq!(got.local_addr().unwrap(), b_addr);
    }

    #[tokio::test]
    async fn drops_connections_the_server_closed() {
        let (l, port) = listener().await;
        let p = pool(port, Duration::from_secs(60), 8);
        let c = p.connect().await.unwrap();
        let (mut s, _) = l.accept().await.unwrap();
        p.checkin(c);
        s.shutdown().await.unwrap();
        drop(s);
        // The FIN reaches the client socket; wait until tokio sees it.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let Some(c) = p.checkout() else { break };
            assert!(
                Instant::now() < deadline,
                "closed connection still handed out"
            );
            c.readable().await.unwrap();
            p.checkin(c);
        }
        assert_eq!(p.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_thread_with_no_idle_connection_takes_over_another_threads() {
        let (l, port) = listener().await;
        let p = two_threads(port, 3);
        let a = p.connect().await.unwrap();
        let (mut server, _) = l.accept().await.unwrap();
        let a_addr = a.local_addr().unwrap();
        p.checkin_at(0, a);
        assert!(p.take(1).is_none(), "the second thread's share is empty");
        let got = p.checkout_at(1).expect("taken over from the first share");
        assert_eq!(got.local_addr().unwrap(), a_addr);
        assert_eq!(p.idle_count(), 0);
        // Registered with the runtime it now runs on: readiness arrives.
        server.write_all(b"x").await.unwrap();
        got.readable().await.unwrap();
        let mut one = [0u8; 1];
        assert_eq!(got.try_read(&mut one).unwrap(), 1);
        assert_eq!(&one, b"x");
        // `pool_max_idle` is split between the shares: 3 over 2 is 2 each.
        let more = [
            p.connect().await.unwrap(),
            p.connect().await.unwrap(),
            p.connect().await.unwrap(),
        ];
        for c in more {
            p.checkin_at(1, c);
        }
        assert_eq!(p.idle_count(), 2);
    }

    #[tokio::test]
    async fn below_pool_low_conn_a_thread_opens_its_own_connection() {
        let (l, port) = listener().await;
        let p = two_threads(port, 8).with_low_conn(2);
        let mut servers = Vec::new();
        let a = p.connect().await.unwrap();
        servers.push(l.accept().await.unwrap().0);
        p.checkin_at(0, a);
        // One idle in all, under the threshold: not taken over.
        assert!(p.checkout_at(1).is_none());
        assert_eq!(p.idle_count(), 1);
        let b = p.connect().await.unwrap();
        servers.push(l.accept().await.unwrap().0);
        p.checkin_at(0, b);
        // Two: the other thread may take one.
        assert!(p.checkout_at(1).is_some());
        assert_eq!(p.idle_count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn purging_closes_half_the_connections_idle_for_a_whole_delay() {
        let (l, port) = listener().await;
        let p = pool(port, Duration::from_secs(60), 8).with_purge_delay(Duration::from_secs(5));
        let mut servers = Vec::new();
        for _ in 0..5 {
            let c = p.connect().await.unwrap();
            servers.push(l.accept().await.unwrap().0);
            p.checkin(c);
        }
        // Nothing has been idle for a whole delay yet.
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!((p.purge(), p.idle_count()), (0, 5));
        let fresh = p.connect().await.unwrap();
        let _s = l.accept().await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        p.checkin(fresh);
        // Five idle for 5 s: three go (the oldest); the one just back stays.
        assert_eq!((p.purge(), p.idle_count()), (3, 3));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!((p.purge(), p.idle_count()), (2, 1));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!((p.purge(), p.idle_count()), (1, 0));
        // Past `idle_timeout`, everything goes at once.
        let q = pool(port, Duration::from_secs(8), 8).with_purge_delay(Duration::from_secs(5));
        for _ in 0..4 {
            let c = q.connect().await.unwrap();
            servers.push(l.accept().await.unwrap().0);
            q.checkin(c);
        }
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!((q.purge(), q.idle_count()), (4, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_background_purge_ends_with_its_pool() {
        let (l, port) = listener().await;
        let p = Arc::new(
            pool(port, Duration::from_secs(60), 8).with_purge_delay(Duration::from_secs(1)),
        );
        H1Pool::start_purging(&p);
        let c = p.connect().await.unwrap();
        let (mut server, _) = l.accept().await.unwrap();
        p.checkin(c);
        // The purge runs by itself: the server sees the connection close.
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), server.read(&mut buf))
            .await
            .expect("closed by the background purge")
            .unwrap();
        assert_eq!(n, 0);
        assert_eq!(p.idle_count(), 0);
        let weak = Arc::downgrade(&p);
        drop(p);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(weak.upgrade().is_none(), "the purge task let the pool go");
    }

    #[tokio::test]
    async fn respects_max_idle_and_idle_timeout() {
        let (l, port) = listener().await;
        let p = pool(port, Duration::from_secs(60), 1);
        let a = p.connect().await.unwrap();
        let b = p.connect().await.unwrap();
        let _s = (l.accept().await.unwrap(), l.accept().await.unwrap());
        p.checkin(a);
        p.checkin(b);
        assert_eq!(p.idle_count(), 1);

        let p = pool(port, Duration::ZERO, 8);
        let c = p.connect().await.unwrap();
        let _s2 = l.accept().await.unwrap();
        p.checkin(c);
        assert!(p.checkout().is_none());
    }
}
