//! Request counters behind `GET /mock/stats`.
//!
//! Tests use them to prove what reached the upstream (for example that health
//! checks never hit billed endpoints). The endpoints the mock implements get
//! one atomic counter each, so the hot path takes no lock; any other path
//! (echo, unknown) goes to a small locked map.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Paths with a lock-free counter; [`MockStats::record`] takes an index here.
pub(super) const KNOWN_PATHS: [&str; 7] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/models",
    "/health",
];

/// Distinct other paths remembered; beyond this they are counted under
/// [`OVERFLOW_KEY`] so a client cannot grow the map without bound.
const MAX_OTHER_PATHS: usize = 1024;
const OVERFLOW_KEY: &str = "(other)";

/// Counts every request received, by path (query excluded).
#[derive(Debug, Default)]
pub struct MockStats {
    known: [AtomicU64; KNOWN_PATHS.len()],
    other: Mutex<BTreeMap<String, u64>>,
}

impl MockStats {
    /// Records one request; `known` is its index in [`KNOWN_PATHS`], if any.
    pub(super) fn record(&self, known: Option<usize>, path: &str) {
        if let Some(counter) = known.and_then(|i| self.known.get(i)) {
            counter.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut other = self.other.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = other.get_mut(path) {
            *n += 1;
        } else if other.len() < MAX_OTHER_PATHS {
            other.insert(path.to_string(), 1);
        } else {
            *other.entry(OVERFLOW_KEY.to_string()).or_insert(0) += 1;
        }
    }

    /// Total requests received.
    pub fn requests(&self) -> u64 {
        self.by_path().values().sum()
    }

    /// Requests received on one path.
    pub fn count(&self, path: &str) -> u64 {
        self.by_path().get(path).copied().unwrap_or(0)
    }

    /// Every path seen at least once, with its count.
    pub fn by_path(&self) -> BTreeMap<String, u64> {
        let mut map = self.other.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (path, counter) in KNOWN_PATHS.iter().zip(&self.known) {
            let n = counter.load(Ordering::Relaxed);
            if n > 0 {
                map.insert((*path).to_string(), n);
            }
        }
        map
    }

    /// Zeroes every counter.
    pub fn reset(&self) {
        for counter in &self.known {
            counter.store(0, Ordering::Relaxed);
        }
        self.other.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The `/mock/stats` body: `{"requests":N,"by_path":{PATH:N,...}}`.
    pub(super) fn to_json(&self) -> Vec<u8> {
        let by_path = self.by_path();
        let body = serde_json::json!({
            "requests": by_path.values().sum::<u64>(),
            "by_path": by_path,
        });
        serde_json::to_vec(&body).unwrap_or_default()
    }
}
