//! The threads that serve connections (HAProxy's `nbthread`).
//!
//! Each thread runs its own single-threaded tokio runtime, as HAProxy runs
//! one event loop per thread: a connection lives on one thread from accept
//! to close, so its tasks, its timers and the upstream connections it takes
//! from the pool ([`crate::upstream::pool`] keeps one share per thread; an
//! idle one taken over by another thread moves there for good) never cross
//! threads while in use, and nothing it does wakes another CPU. A
//! work-stealing runtime would move tasks between threads and wake idle
//! siblings to steal at every burst of readiness, which costs futex calls
//! and cache misses on every request for a proxy whose tasks are short.
//!
//! The process's first thread — the one `main` runs — also carries the
//! control plane (runtime API, health checks, cluster, signals) and the
//! accept loops; it hands each accepted connection to the thread serving
//! the fewest (ties in turn) and takes its own share like the others. The
//! number of threads is fixed at start, as HAProxy's: a reload does not
//! change it. With one thread, [`dispatch`] counts the connection for
//! `show activity` and spawns it on the current runtime.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;

use tokio::net::TcpStream;
use tokio::runtime::Handle;

/// Every thread serving connections; set once, by [`start`].
static THREADS: OnceLock<Threads> = OnceLock::new();

thread_local! {
    /// This thread's place in [`Threads::all`]; 0 on any thread not
    /// started by [`start`] (the first thread, tests, blocking tasks).
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

struct Threads {
    all: Box<[Thread]>,
    /// Where the search for the least busy thread starts next, so that
    /// ties are spread in turn.
    next: AtomicUsize,
}

struct Thread {
    runtime: Handle,
    /// Connections this thread serves now.
    open: AtomicUsize,
    /// Connections this thread accepted (HAProxy's `accepted`).
    accepted: AtomicU64,
    /// Connections handed to this thread to serve (HAProxy's
    /// `accq_pushed`), its own included.
    pushed: AtomicU64,
    /// Idle upstream connections this thread took over from another's
    /// share of a pool (HAProxy's `fd_takeover`).
    takeover: AtomicU64,
}

impl Thread {
    fn new(runtime: Handle) -> Thread {
        Thread {
            runtime,
            open: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            pushed: AtomicU64::new(0),
            takeover: AtomicU64::new(0),
        }
    }
}

/// Starts `n - 1` threads beside the calling one, whose runtime is
/// `first`; each runs a single-threaded runtime until the process exits.
/// Called once, before any listener accepts.
pub fn start(first: Handle, n: usize) -> io::Result<()> {
    let mut all = vec![Thread::new(first)];
    for i in 1..n.max(1) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(format!("llmgw-{i}"))
            .spawn(move || {
                INDEX.with(|x| x.set(i));
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(std::future::pending::<()>());
            })?;
        let runtime = rx
            .recv()
            .map_err(|_| io::Error::other("a serving thread ended before it started"))??;
        all.push(Thread::new(runtime));
    }
    THREADS
        .set(Threads {
            all: all.into_boxed_slice(),
            next: AtomicUsize::new(0),
        })
        .map_err(|_| io::Error::other("the serving threads were already started"))
}

/// How many threads serve connections (1 until [`start`] made more).
pub fn count() -> usize {
    THREADS.get().map_or(1, |t| t.all.len())
}

/// The calling thread's place among them, `0..count()`.
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// Serves `stream` with `serve` on the thread serving the fewest
/// connections. The stream is moved to that thread's runtime, which then
/// watches its readiness, and the future `serve` makes is spawned there
/// as it is — no wrapper, so a connection's task is no larger than its
/// own future (an open stream's memory is mostly that task). `serve` gets
/// the connection's [`Place`] on the thread and drops it when the
/// connection ends. If the stream cannot be moved (the kernel refused to
/// register it), the connection is closed and `serve`, dropped, lets go
/// of whatever it held.
pub fn dispatch<S, F>(stream: TcpStream, serve: S)
where
    S: FnOnce(TcpStream, Place) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let Some(threads) = THREADS.get() else {
        tokio::spawn(serve(stream, Place(None)));
        return;
    };
    let here = index();
    if let Some(t) = threads.all.get(here) {
        t.accepted.fetch_add(1, Relaxed);
    }
    let (to, thread) = threads.least_busy();
    thread.pushed.fetch_add(1, Relaxed);
    let place = Place::take(&thread.open);
    if to == here {
        tokio::spawn(serve(stream, place));
        return;
    }
    // Registered with the other thread's reactor from here, so that
    // thread runs nothing but the connection itself.
    match move_to(stream, &thread.runtime) {
        Ok(stream) => drop(thread.runtime.spawn(serve(stream, place))),
        Err(e) => tracing::warn!(error = %e, "cannot hand a connection to thread {to}"),
    }
}

/// Moves `stream` to `runtime`: its readiness is watched by that
/// runtime's reactor from now on (the registry is shared, so this works
/// from any thread). A socket is only ever polled by the runtime it is
/// registered with.
pub fn move_to(stream: TcpStream, runtime: &Handle) -> io::Result<TcpStream> {
    let stream = stream.into_std()?;
    let _on_that_runtime = runtime.enter();
    TcpStream::from_std(stream)
}

impl Threads {
    fn least_busy(&'static self) -> (usize, &'static Thread) {
        let n = self.all.len();
        let from = self.next.fetch_add(1, Relaxed) % n;
        let mut best = from;
        let mut fewest = usize::MAX;
        for k in 0..n {
            let i = (from + k) % n;
            let open = self.all[i].open.load(Relaxed);
            if open < fewest {
                (best, fewest) = (i, open);
            }
        }
        (best, &self.all[best])
    }
}

/// A connection's place on the thread serving it: it counts there (for
/// [`dispatch`] to find the least busy thread) until dropped.
pub struct Place(Option<&'static AtomicUsize>);

impl Place {
    fn take(open: &'static AtomicUsize) -> Place {
        open.fetch_add(1, Relaxed);
        Place(Some(open))
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(open) = self.0 {
            open.fetch_sub(1, Relaxed);
        }
    }
}

/// Counts, for `show activity`, an idle upstream connection the calling
/// thread took over from another's share of a pool.
pub fn took_over_connection() {
    if let Some(t) = THREADS.get().and_then(|t| t.all.get(index())) {
        t.takeover.fetch_add(1, Relaxed);
    }
}

/// What each thread did (`show activity`), in thread order.
pub struct Activity {
    /// Connections each thread accepted.
    pub accepted: Vec<u64>,
    /// Connections handed to each thread to serve.
    pub pushed: Vec<u64>,
    /// Idle upstream connections each thread took over from another.
    pub takeover: Vec<u64>,
}

pub fn activity() -> Activity {
    let all = THREADS.get().map_or(&[][..], |t| &t.all[..]);
    let read = |f: fn(&Thread) -> &AtomicU64| -> Vec<u64> {
        if all.is_empty() {
            return vec![0];
        }
        all.iter().map(|t| f(t).load(Relaxed)).collect()
    };
    Activity {
        accepted: read(|t| &t.accepted),
        pushed: read(|t| &t.pushed),
        takeover: read(|t| &t.takeover),
    }
}
