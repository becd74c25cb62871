//! Traffic counters: what every frontend, backend and server has carried,
//! in HAProxy's terms (sessions, requests, responses by status class,
//! bytes, denials, errors, timers), plus what LLM traffic adds — time to
//! first token and tokens, by backend and model and by client key.
//!
//! Counters are plain atomics updated once per request, when it ends (the
//! per-request [`Txn`] records as it goes and adds up on drop), so the hot
//! path takes no lock. They live in the [`crate::runtime::Runtime`] by name
//! and so survive reloads. Readers — `/metrics`, `/stats.json`, the stats
//! page, the runtime API's `show stat` — format them; none of them
//! changes anything here.

mod txn;

pub use txn::{Termination, Txn};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Histogram bucket upper bounds, in milliseconds: from sub-millisecond
/// proxying to multi-minute streams.
pub const BUCKETS_MS: [u64; 16] = [
    1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000,
];

/// A latency histogram with fixed buckets (Prometheus-style, cumulative
/// when exported).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last one is `+Inf`.
    counts: [AtomicU64; BUCKETS_MS.len() + 1],
    sum_us: AtomicU64,
}

/// A sample placed once and added to several histograms (a request's
/// phase counts on its backend and on its server).
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    bucket: usize,
    micros: u64,
}

impl Sample {
    pub fn of(d: Duration) -> Sample {
        let micros = d.as_secs() * 1_000_000 + u64::from(d.subsec_micros());
        // The first bucket whose bound (in ms) is at least the sample.
        let bucket = BUCKETS_MS.partition_point(|&b| b * 1000 < micros);
        Sample { bucket, micros }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        self.add(Sample::of(d));
    }

    pub fn add(&self, s: Sample) {
        self.counts[s.bucket].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(s.micros, Relaxed);
    }

    /// Cumulative counts per bucket bound (the last is `+Inf`), and the sum
    /// in seconds.
    pub fn read(&self) -> ([u64; BUCKETS_MS.len() + 1], f64) {
        let mut out = [0u64; BUCKETS_MS.len() + 1];
        let mut acc = 0;
        for (o, c) in out.iter_mut().zip(&self.counts) {
            acc += c.load(Relaxed);
            *o = acc;
        }
        (out, self.sum_us.load(Relaxed) as f64 / 1e6)
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// The `q`-quantile (0..=1) in milliseconds, interpolated linearly
    /// within its bucket as Prometheus's `histogram_quantile` does; `None`
    /// without samples. Past the last finite bound it is that bound.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let (cum, _) = self.read();
        let n = cum[cum.len() - 1];
        if n == 0 {
            return None;
        }
        // The rank of the sample sought; at least a fraction of one so
        // that q = 0 lands in the first non-empty bucket.
        let rank = (q.clamp(0.0, 1.0) * n as f64).max(f64::MIN_POSITIVE);
        let i = cum.iter().position(|&c| c as f64 >= rank)?;
        let Some(&upper) = BUCKETS_MS.get(i) else {
            return Some(BUCKETS_MS[BUCKETS_MS.len() - 1] as f64);
        };
        let (lower, below) = match i {
            0 => (0, 0),
            _ => (BUCKETS_MS[i - 1], cum[i - 1]),
        };
        let inside = (cum[i] - below) as f64;
        let frac = (rank - below as f64) / inside;
        Some(lower as f64 + (upper - lower) as f64 * frac)
    }

    /// Mean in milliseconds (HAProxy's `qtime`/`ctime`/`rtime`/`ttime`
    /// are averages), 0 without samples.
    pub fn mean_ms(&self) -> u64 {
        let n = self.count();
        if n == 0 {
            return 0;
        }
        self.sum_us.load(Relaxed) / n / 1000
    }
}

/// The status classes HAProxy counts (`hrsp_1xx` … `hrsp_5xx`,
/// `hrsp_other`).
pub fn status_class(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        _ => 5,
    }
}

pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// What one frontend, backend or server has carried. Sessions are
/// connections for a frontend and requests for a backend or server (as in
/// HAProxy's HTTP mode, where a server session is one request).
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub cur: AtomicU64,
    pub max: AtomicU64,
    pub total: AtomicU64,
    pub requests: AtomicU64,
    pub responses: [AtomicU64; 6],
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Requests denied by rules (`dreq`), client keys included.
    pub denied: AtomicU64,
    /// Connections closed by a `tcp-request connection reject` rule
    /// (`dcon`; a frontend's).
    pub denied_conn: AtomicU64,
    /// Requests that could not be read or were invalid (`ereq`).
    pub req_errors: AtomicU64,
    /// Failed connections to a server (`econ`).
    pub conn_errors: AtomicU64,
    /// Responses that failed: no answer, a broken one, a timeout (`eresp`).
    pub resp_errors: AtomicU64,
    /// Upstream answers with status 429 (the provider's rate limit).
    pub upstream_429: AtomicU64,
    /// Requests that waited in a queue (Tw), connected (Tc), got their
    /// response head (Tr), their first body byte (TTFT) and ended (Tt).
    pub queue_time: Histogram,
    pub connect_time: Histogram,
    pub response_time: Histogram,
    pub ttft: Histogram,
    pub total_time: Histogram,
}

impl ProxyStats {
    /// One more session open (a connection for a frontend).
    pub fn open(&self) {
        let cur = self.cur.fetch_add(1, Relaxed) + 1;
        self.max.fetch_max(cur, Relaxed);
        self.total.fetch_add(1, Relaxed);
    }

    pub fn close(&self) {
        self.cur.fetch_sub(1, Relaxed);
    }

    pub fn responses(&self, class: usize) -> u64 {
        self.responses[class].load(Relaxed)
    }
}

/// Closes a session when dropped.
pub struct SessionGuard(Arc<ProxyStats>);

impl SessionGuard {
    pub fn open(stats: &Arc<ProxyStats>) -> SessionGuard {
        stats.open();
        SessionGuard(stats.clone())
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Marks a gateway-made answer that refused the request (a rule's deny or
/// tarpit, a client key refused): counted as denied, logged `PR`.
#[derive(Clone, Copy, Debug)]
pub struct Denied;

/// LLM traffic of one backend and model, or of one client key.
#[derive(Debug, Default)]
pub struct LlmStats {
    pub requests: AtomicU64,
    pub tokens_in: AtomicU64,
    pub tokens_out: AtomicU64,
    pub ttft: Histogram,
    pub total_time: Histogram,
}

/// More distinct models than this per backend are counted as `other`: a
/// model name comes from the client, and label cardinality must stay
/// bounded whatever clients send.
pub const MAX_MODELS_PER_BACKEND: usize = 64;

/// The label for requests without a model, or past the cap.
pub const OTHER_MODEL: &str = "other";

/// Every counter set by name, kept across reloads.
#[derive(Debug, Default)]
pub struct Registry {
    frontends: Mutex<HashMap<String, Arc<ProxyStats>>>,
    backends: Mutex<HashMap<String, Arc<BackendStats>>>,
    keys: Mutex<HashMap<String, Arc<LlmStats>>>,
    /// Access-log lines dropped because the writer was behind.
    pub logs_dropped: Arc<AtomicU64>,
}

/// A backend's counters, and its per-model LLM counters.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// The backend's name (access logs name it).
    pub name: String,
    pub proxy: ProxyStats,
    models: Mutex<Vec<(Arc<str>, Arc<LlmStats>)>>,
    /// Requests whose model is not known (no rule read it) or past the
    /// cap: reached without the lock.
    other: Arc<LlmStats>,
}

impl BackendStats {
    pub fn named(name: &str) -> BackendStats {
        BackendStats {
            name: name.to_owned(),
            ..BackendStats::default()
        }
    }

    /// The counters of `model` on this backend (`other` when unknown or
    /// past the cap). A short linear scan under a lock taken once per
    /// request end, for requests whose model is known.
    pub fn model(&self, model: Option<&str>) -> Arc<LlmStats> {
        let Some(name) = model.filter(|m| *m != OTHER_MODEL) else {
            return self.other.clone();
        };
        let mut models = self.models.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, s)) = models.iter().find(|(m, _)| &**m == name) {
            return s.clone();
        }
        if models.len() >= MAX_MODELS_PER_BACKEND {
            return self.other.clone();
        }
        let s = Arc::new(LlmStats::default());
        models.push((name.into(), s.clone()));
        s
    }

    /// Every model seen, with its counters (`other` last, when used).
    pub fn models(&self) -> Vec<(Arc<str>, Arc<LlmStats>)> {
        let mut v = self
            .models
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if self.other.requests.load(Relaxed) > 0 {
            v.push((OTHER_MODEL.into(), self.other.clone()));
        }
        v
    }
}

impl Registry {
    pub fn frontend(&self, name: &str) -> Arc<ProxyStats> {
        entry(&self.frontends, name)
    }

    pub fn backend(&self, name: &str) -> Arc<BackendStats> {
        let mut map = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(name) {
            return s.clone();
        }
        let s = Arc::new(BackendStats::named(name));
        map.insert(name.to_owned(), s.clone());
        s
    }

    /// A client key's counters, by the key's configured name (never the
    /// key itself).
    pub fn key(&self, name: &str) -> Arc<LlmStats> {
        entry(&self.keys, name)
    }

    pub fn keys(&self) -> Vec<(String, Arc<LlmStats>)> {
        let map = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = map.iter().map(|(k, s)| (k.clone(), s.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

fn entry<T: Default>(map: &Mutex<HashMap<String, Arc<T>>>, name: &str) -> Arc<T> {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = map.get(name) {
        return s.clone();
    }
    let s = Arc::new(T::default());
    map.insert(name.to_owned(), s.clone());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_upper_bounds() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(400));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_micros(1_400));
        h.observe(Duration::from_secs(400));
        let (cum, sum) = h.read();
        assert_eq!(cum[0], 2, "≤ 1 ms");
        assert_eq!(cum[1], 3, "≤ 5 ms");
        assert_eq!(cum[BUCKETS_MS.len() - 1], 3, "≤ 300 s");
        assert_eq!(cum[BUCKETS_MS.len()], 4, "+Inf");
        assert!((sum - 400.0028).abs() < 1e-9, "{sum}");
        assert_eq!(h.count(), 4);
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let h = Histogram::default();
        assert_eq!(h.quantile_ms(0.5), None);
        // Ten samples in (100, 250] ms: the median is halfway through.
        for _ in 0..10 {
            h.observe(Duration::from_millis(200));
        }
        assert_eq!(h.quantile_ms(0.5), Some(175.0));
        assert_eq!(h.quantile_ms(1.0), Some(250.0));
        assert_eq!(h.quantile_ms(0.0), Some(100.0));
        // Ten more past the last bound: the top quantiles stop there.
        for _ in 0..10 {
            h.observe(Duration::from_secs(1000));
        }
        assert_eq!(h.quantile_ms(0.99), Some(300_000.0));
        assert_eq!(h.quantile_ms(0.25), Some(175.0));
    }

    #[test]
    fn model_labels_are_capped() {
        let b = BackendStats::default();
        for i in 0..MAX_MODELS_PER_BACKEND + 10 {
            b.model(Some(&format!("m{i}")))
                .requests
                .fetch_add(1, Relaxed);
        }
        let models = b.models();
        assert_eq!(models.len(), MAX_MODELS_PER_BACKEND + 1);
        let other = models.iter().find(|(m, _)| &**m == OTHER_MODEL).unwrap();
        assert_eq!(other.1.requests.load(Relaxed), 10);
        // A model seen before the cap keeps its own counters.
        assert!(Arc::ptr_eq(&b.model(Some("m3")), &b.model(Some("m3"))));
    }

    #[test]
    fn sessions_track_their_maximum() {
        let s = Arc::new(ProxyStats::default());
        let a = SessionGuard::open(&s);
        let b = SessionGuard::open(&s);
        drop(a);
        let _c = SessionGuard::open(&s);
        drop(b);
        assert_eq!(s.cur.load(Relaxed), 1);
        assert_eq!(s.max.load(Relaxed), 2);
        assert_eq!(s.total.load(Relaxed), 3);
    }
}
