//! `/metrics`: the counters of `crate::metrics` and the servers' states in
//! Prometheus's text exposition format (version 0.0.4).
//!
//! Names follow HAProxy's own exporter (`haproxy_frontend_http_requests_total`
//! becomes `llmgw_frontend_http_requests_total`, with the same `proxy` and
//! `server` labels) so dashboards carry over, plus `llmgw_llm_*` for
//! time to first token and tokens by backend and model, and
//! `llmgw_client_key_*` by the key's configured name. Labels are bounded:
//! proxies and servers come from the configuration, models are capped per
//! backend (`crate::metrics::MAX_MODELS_PER_BACKEND`), and a client key
//! appears only under its name.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use crate::gateway::Shared;
use crate::metrics::{Histogram, LlmStats, ProxyStats, BUCKETS_MS, STATUS_CLASSES};

/// One metric family being written: its `# HELP` / `# TYPE` lines go out
/// once, before its first sample.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        write_labels(self.out, labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let (cum, sum) = h.read();
        for (i, c) in cum.iter().enumerate() {
            let le = match BUCKETS_MS.get(i) {
                Some(ms) => format_secs(*ms),
                None => "+Inf".to_owned(),
            };
            let _ = write!(self.out, "{name}_bucket");
            write_labels(self.out, labels, Some(&le));
            let _ = writeln!(self.out, " {c}");
        }
        let _ = write!(self.out, "{name}_sum");
        write_labels(self.out, labels, None);
        let _ = writeln!(self.out, " {sum}");
        let _ = write!(self.out, "{name}_count");
        write_labels(self.out, labels, None);
        let _ = writeln!(self.out, " {}", cum[cum.len() - 1]);
    }
}

fn format_secs(ms: u64) -> String {
    let s = ms as f64 / 1000.0;
    format!("{s}")
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    let all = labels.iter().copied().chain(le.map(|l| ("le", l)));
    for (k, v) in all {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

/// A counter of a row: name suffix, help, reader.
type Counter = (&'static str, &'static str, fn(&ProxyStats) -> u64);
/// A histogram of a row: name suffix, help, reader.
type Hist = (&'static str, &'static str, fn(&ProxyStats) -> &Histogram);
/// A frontend, backend or server row: its labels and counters, and for a
/// server its live state, which counts its current and total sessions
/// (requests) itself.
type Row<'a> = (
    Vec<(&'a str, &'a str)>,
    &'a ProxyStats,
    Option<&'a crate::runtime::ServerState>,
);

/// What a frontend, backend or server row carries, by HAProxy's exporter
/// names; `side` is `frontend`, `backend` or `server`.
const PROXY_COUNTERS: [Counter; 9] = [
    (
        "sessions_total",
        "Sessions (connections for a frontend, requests for a backend or server).",
        |p| p.total.load(Relaxed),
    ),
    ("http_requests_total", "HTTP requests.", |p| {
        p.requests.load(Relaxed)
    }),
    ("bytes_in_total", "Request body bytes received.", |p| {
        p.bytes_in.load(Relaxed)
    }),
    ("bytes_out_total", "Response body bytes sent.", |p| {
        p.bytes_out.load(Relaxed)
    }),
    (
        "requests_denied_total",
        "Requests denied by rules or client keys.",
        |p| p.denied.load(Relaxed),
    ),
    (
        "request_errors_total",
        "Invalid or incomplete requests.",
        |p| p.req_errors.load(Relaxed),
    ),
    (
        "connection_errors_total",
        "Failed connections to a server.",
        |p| p.conn_errors.load(Relaxed),
    ),
    (
        "response_errors_total",
        "Responses that failed: none, broken, or too late.",
        |p| p.resp_errors.load(Relaxed),
    ),
    (
        "upstream_rate_limited_total",
        "Upstream answers with status 429.",
        |p| p.upstream_429.load(Relaxed),
    ),
];

const PROXY_HISTOGRAMS: [Hist; 5] = [
    (
        "queue_time_seconds",
        "Time waiting in a queue for a server slot.",
        |p| &p.queue_time,
    ),
    (
        "connect_time_seconds",
        "Time to get a connection to the server.",
        |p| &p.connect_time,
    ),
    (
        "response_time_seconds",
        "Time from the connection to the response head.",
        |p| &p.response_time,
    ),
    (
        "time_to_first_token_seconds",
        "Time from the request to the first byte of the response body.",
        |p| &p.ttft,
    ),
    (
        "total_time_seconds",
        "Time from the request to the last byte of the answer.",
        |p| &p.total_time,
    ),
];

/// The whole exposition.
pub fn render(shared: &Shared) -> String {
    let snap = shared.current.load();
    let mut out = String::with_capacity(16 * 1024);
    let mut f = Family { out: &mut out };

    f.head(
        "llmgw_build_info",
        "gauge",
        "Version of the running gateway.",
    );
    f.sample(
        "llmgw_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    f.head(
        "llmgw_logs_dropped_total",
        "counter",
        "Access-log lines dropped because the log writer was behind.",
    );
    f.sample(
        "llmgw_logs_dropped_total",
        &[],
        shared.runtime.metrics.logs_dropped.load(Relaxed),
    );

    // Rows: (side, labels, counters) for every frontend, backend, server.
    let frontends: Vec<Row> = snap
        .config
        .frontends
        .iter()
        .zip(&snap.frontend_stats)
        .map(|(fe, s)| (vec![("proxy", &*fe.name)], &**s, None))
        .collect();
    let backends: Vec<Row> = snap
        .config
        .backends
        .iter()
        .zip(&snap.backends)
        .map(|(b, rt)| (vec![("proxy", b.name.as_str())], &rt.stats.proxy, None))
        .collect();
    let servers: Vec<Row> = snap
        .config
        .backends
        .iter()
        .zip(&snap.backends)
        .flat_map(|(b, rt)| {
            rt.balancer.servers().iter().map(move |s| {
                (
                    vec![("proxy", b.name.as_str()), ("server", s.name.as_str())],
                    &s.stats,
                    Some(&**s),
                )
            })
        })
        .collect();
    let sides: [(&str, &Vec<Row>); 3] = [
        ("frontend", &frontends),
        ("backend", &backends),
        ("server", &servers),
    ];

    for (side, rows) in sides {
        let name = format!("llmgw_{side}_current_sessions");
        f.head(&name, "gauge", "Current sessions.");
        for (l, p, srv) in rows.iter() {
            let cur = srv.map_or_else(|| p.cur.load(Relaxed), |s| u64::from(s.active()));
            f.sample(&name, l, cur);
        }
        let name = format!("llmgw_{side}_max_sessions");
        f.head(&name, "gauge", "Most sessions at once since start.");
        for (l, p, _) in rows.iter() {
            f.sample(&name, l, p.max.load(Relaxed));
        }
        for (suffix, help, get) in PROXY_COUNTERS {
            // A frontend has no servers to fail on.
            if side == "frontend"
                && matches!(
                    suffix,
                    "connection_errors_total"
                        | "response_errors_total"
                        | "upstream_rate_limited_total"
                )
            {
                continue;
            }
            let name = format!("llmgw_{side}_{suffix}");
            f.head(&name, "counter", help);
            for (l, p, srv) in rows.iter() {
                let v = match srv {
                    Some(s) if suffix == "sessions_total" => s.total(),
                    _ => get(p),
                };
                f.sample(&name, l, v);
            }
        }
        let name = format!("llmgw_{side}_http_responses_total");
        f.head(&name, "counter", "HTTP responses by status class.");
        for (l, p, _) in rows.iter() {
            for (i, class) in STATUS_CLASSES.iter().enumerate() {
                let mut l = l.clone();
                l.push(("code", class));
                f.sample(&name, &l, p.responses(i));
            }
        }
        for (suffix, help, get) in PROXY_HISTOGRAMS {
            // A frontend has only the total; a server no queue of its own
            // (requests wait in the backend's) and no TTFT (by model).
            let skip = match side {
                "frontend" => suffix != "total_time_seconds",
                "server" => matches!(suffix, "queue_time_seconds" | "time_to_first_token_seconds"),
                _ => false,
            };
            if skip {
                continue;
            }
            let name = format!("llmgw_{side}_{suffix}");
            f.head(&name, "histogram", help);
            for (l, p, _) in rows.iter() {
                f.histogram(&name, l, get(p));
            }
        }
    }

    // Backend-only: queues, retries, fallbacks.
    let backend_gauges: [(&str, &str, &str); 8] = [
        (
            "llmgw_backend_current_queue",
            "gauge",
            "Requests waiting for a server slot.",
        ),
        (
            "llmgw_backend_max_queue",
            "gauge",
            "Most requests waiting at once since start.",
        ),
        (
            "llmgw_backend_queue_timeouts_total",
            "counter",
            "Requests that waited too long in the queue.",
        ),
        (
            "llmgw_backend_retry_warnings_total",
            "counter",
            "Failed attempts that were retried.",
        ),
        (
            "llmgw_backend_redispatch_warnings_total",
            "counter",
            "Retries sent to another server.",
        ),
        (
            "llmgw_backend_truncated_responses_total",
            "counter",
            "Responses whose body broke after its head reached the client.",
        ),
        (
            "llmgw_backend_fallback_handed_on_total",
            "counter",
            "Requests this backend failed and its fallback chain took over.",
        ),
        (
            "llmgw_backend_fallback_taken_over_total",
            "counter",
            "Requests this backend took over as a fallback step.",
        ),
    ];
    for (i, (name, kind, help)) in backend_gauges.iter().enumerate() {
        f.head(name, kind, help);
        for (b, rt) in snap.config.backends.iter().zip(&snap.backends) {
            let sum = |g: fn(&crate::runtime::ServerState) -> u64| -> u64 {
                rt.balancer.servers().iter().map(|s| g(s)).sum()
            };
            let v = match i {
                0 => rt.queue.current.load(Relaxed) as u64,
                1 => rt.queue.max.load(Relaxed) as u64,
                2 => rt.queue.timeouts.load(Relaxed),
                3 => sum(crate::runtime::ServerState::retries),
                4 => sum(crate::runtime::ServerState::redispatches),
                5 => sum(crate::runtime::ServerState::truncated),
                6 => rt.fallbacks.handed_on.load(Relaxed),
                _ => rt.fallbacks.taken_over.load(Relaxed),
            };
            f.sample(name, &[("proxy", b.name.as_str())], v);
        }
    }

    // Server-only: state, weight, checks.
    let server_gauges: [(&str, &str, &str); 5] = [
        (
            "llmgw_server_status",
            "gauge",
            "1 when the server is up (checks and observation), 0 when down.",
        ),
        (
            "llmgw_server_weight",
            "gauge",
            "Effective weight (0 while draining or in maintenance).",
        ),
        (
            "llmgw_server_check_failures_total",
            "counter",
            "Failed health checks.",
        ),
        (
            "llmgw_server_check_up_down_total",
            "counter",
            "Transitions from up to down.",
        ),
        (
            "llmgw_server_admin_maintenance",
            "gauge",
            "1 when the server is in maintenance, 0 otherwise.",
        ),
    ];
    for (i, (name, kind, help)) in server_gauges.iter().enumerate() {
        f.head(name, kind, help);
        for (b, rt) in snap.config.backends.iter().zip(&snap.backends) {
            for s in rt.balancer.servers() {
                let h = s.health_view();
                let v = match i {
                    0 => u64::from(h.up),
                    1 => u64::from(h.effective_weight),
                    2 => h.checks_failed,
                    3 => h.down_transitions,
                    _ => u64::from(s.admin() == crate::runtime::AdminState::Maint),
                };
                f.sample(
                    name,
                    &[("proxy", b.name.as_str()), ("server", s.name.as_str())],
                    v,
                );
            }
        }
    }

    // LLM traffic by backend and model.
    type Models = Vec<(std::sync::Arc<str>, std::sync::Arc<LlmStats>)>;
    let models: Vec<(&str, Models)> = snap
        .config
        .backends
        .iter()
        .zip(&snap.backends)
        .map(|(b, rt)| (b.name.as_str(), rt.stats.models()))
        .collect();
    f.head(
        "llmgw_llm_requests_total",
        "counter",
        "Requests by backend and model.",
    );
    for (b, ms) in &models {
        for (m, s) in ms {
            f.sample(
                "llmgw_llm_requests_total",
                &[("backend", b), ("model", m)],
                s.requests.load(Relaxed),
            );
        }
    }
    f.head("llmgw_llm_tokens_total", "counter", "Tokens reported in responses' usage, by backend, model and direction (in: prompt, out: completion).");
    for (b, ms) in &models {
        for (m, s) in ms {
            f.sample(
                "llmgw_llm_tokens_total",
                &[("backend", b), ("model", m), ("direction", "in")],
                s.tokens_in.load(Relaxed),
            );
            f.sample(
                "llmgw_llm_tokens_total",
                &[("backend", b), ("model", m), ("direction", "out")],
                s.tokens_out.load(Relaxed),
            );
        }
    }
    f.head(
        "llmgw_llm_time_to_first_token_seconds",
        "histogram",
        "Time from the request to the first byte of the response body, by backend and model.",
    );
    for (b, ms) in &models {
        for (m, s) in ms {
            f.histogram(
                "llmgw_llm_time_to_first_token_seconds",
                &[("backend", b), ("model", m)],
                &s.ttft,
            );
        }
    }
    f.head(
        "llmgw_llm_request_duration_seconds",
        "histogram",
        "Time from the request to the last byte of the answer, by backend and model.",
    );
    for (b, ms) in &models {
        for (m, s) in ms {
            f.histogram(
                "llmgw_llm_request_duration_seconds",
                &[("backend", b), ("model", m)],
                &s.total_time,
            );
        }
    }

    // Client keys, by their configured name.
    let keys = shared.runtime.metrics.keys();
    f.head(
        "llmgw_client_key_requests_total",
        "counter",
        "Requests admitted per client key (by the key's configured name).",
    );
    for (k, s) in &keys {
        f.sample(
            "llmgw_client_key_requests_total",
            &[("key", k)],
            s.requests.load(Relaxed),
        );
    }
    f.head(
        "llmgw_client_key_tokens_total",
        "counter",
        "Tokens reported per client key and direction.",
    );
    for (k, s) in &keys {
        f.sample(
            "llmgw_client_key_tokens_total",
            &[("key", k), ("direction", "in")],
            s.tokens_in.load(Relaxed),
        );
        f.sample(
            "llmgw_client_key_tokens_total",
            &[("key", k), ("direction", "out")],
            s.tokens_out.load(Relaxed),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        let mut s = String::new();
        write_labels(&mut s, &[("model", "a\"b\\c\nd")], Some("0.5"));
        assert_eq!(s, r#"{model="a\"b\\c\nd",le="0.5"}"#);
    }

    #[test]
    fn histograms_are_cumulative_with_inf() {
        let h = Histogram::default();
        h.observe(std::time::Duration::from_millis(3));
        let mut out = String::new();
        Family { out: &mut out }.histogram("x", &[("proxy", "b")], &h);
        assert!(
            out.contains("x_bucket{proxy=\"b\",le=\"0.001\"} 0\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{proxy=\"b\",le=\"0.005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{proxy=\"b\",le=\"+Inf\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("x_count{proxy=\"b\"} 1\n"), "{out}");
        assert!(out.contains("x_sum{proxy=\"b\"} 0.003\n"), "{out}");
    }
}
