//! Active health checks and the passive-observation helpers.
//!
//! This module owns *how a server's health is measured*: it resolves each
//! server's health settings from the configuration ([`conf`]), builds the
//! probe a checked server is tested with ([`plan`]: TCP connect, TLS
//! handshake, HTTP request with `http-check expect`, or the LLM-aware
//! default `GET /v1/models`), and runs one check task per checked server
//! ([`Checks`]) at `inter` / `fastinter` / `downinter`, with a jittered
//! first check. It also parses `Retry-After` for the request path
//! ([`parse_retry_after`], [`outcome_of`]).
//!
//! It does not own the state those measurements feed: the fall/rise state
//! machine, check details, 429 cooldown and slowstart ramp live in
//! [`crate::runtime::ServerState`] (they outlive reloads), and the request
//! path reports outcomes there with [`ServerState::observe`]. Check tasks
//! belong to one configuration snapshot: [`Checks`] is replaced (and its
//! tasks aborted) when a reload swaps the snapshot, while the state they
//! wrote stays, keyed by `backend/server`. See `LIFECYCLE.md`.

mod expect;
mod probe;
mod retry_after;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use crate::config::{Backend, CheckKind, ObserveMode, Server, ServerAddr, UpstreamTls};
use crate::runtime::{HealthConf, Observe, OnError, ServerState, Transition};

pub use expect::{evaluate, needs_body};
pub use probe::{HttpProbe, Probe, MAX_CHECK_BODY};
pub use retry_after::{outcome_of, parse_retry_after, retry_after};

/// HAProxy's defaults.
pub const DEFAULT_INTER: Duration = Duration::from_secs(2);
pub const DEFAULT_FALL: u32 = 3;
pub const DEFAULT_RISE: u32 = 2;

/// A server's health settings, as [`ServerState::configure`] takes them.
pub fn conf(b: &Backend, s: &Server) -> HealthConf {
    let t = &b.opts.check_timing;
    let o = &s.opts;
    let d = HealthConf::default();
    HealthConf {
        checked: o.check,
        fall: o.fall.or(t.fall).unwrap_or(DEFAULT_FALL),
        rise: o.rise.or(t.rise).unwrap_or(DEFAULT_RISE),
        backup: o.backup,
        slowstart: o.slowstart.unwrap_or_default(),
        observe: match o.observe {
            None => Observe::Off,
            Some(ObserveMode::Layer4) => Observe::Layer4,
            Some(ObserveMode::Layer7) => Observe::Layer7,
        },
        error_limit: o.error_limit.unwrap_or(d.error_limit),
        on_error: o
            .on_error
            .as_deref()
            .and_then(OnError::parse)
            .unwrap_or_default(),
        cooldown_429: o
            .cooldown_429
            .or(b.opts.cooldown_429)
            .unwrap_or(d.cooldown_429),
    }
}

/// When checks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// While UP (fully).
    pub inter: Duration,
    /// While going up or down (`UP 1/3`, `DOWN 1/2`), and after `on-error`.
    pub fastinter: Duration,
    /// While DOWN (fully).
    pub downinter: Duration,
}

impl Timing {
    pub fn of(b: &Backend, s: &Server) -> Timing {
        let t = &b.opts.check_timing;
        let o = &s.opts;
        let inter = o.inter.or(t.inter).unwrap_or(DEFAULT_INTER);
        Timing {
            inter,
            fastinter: o.fastinter.or(t.fastinter).unwrap_or(inter),
            downinter: o.downinter.or(t.downinter).unwrap_or(inter),
        }
    }

    /// The wait before the next check, given the server's state now.
    pub fn next(&self, s: &ServerState) -> Duration {
        if s.transitioning() {
            self.fastinter
        } else if s.is_up() {
            self.inter
        } else {
            self.downinter
        }
    }
}

/// A checked server's probe and timing, built with a snapshot.
pub struct Check {
    pub state: Arc<ServerState>,
    pub probe: Arc<Probe>,
    pub timing: Timing,
}

/// The check for server `s` of backend `b` (`None` without `check`).
/// `mock` is where the built-in mock provider listens. Fails on TLS
/// settings that cannot be loaded.
pub fn plan(
    b: &Backend,
    s: &Server,
    state: Arc<ServerState>,
    mock: Option<SocketAddr>,
) -> Result<Option<Check>, String> {
    if !s.opts.check {
        return Ok(None);
    }
    let (server_host, server_port) = match &s.addr {
        ServerAddr::HostPort(h, p) => (h.clone(), *p),
        ServerAddr::BuiltinMock => {
            let m = mock.ok_or("the built-in mock provider is not running")?;
            (m.ip().to_string(), m.port())
        }
    };
    let host = s.opts.addr.clone().unwrap_or_else(|| server_host.clone());
    let port = s.opts.port.unwrap_or(server_port);
    // HAProxy: checks use the server's TLS unless `port` or `addr` send
    // them elsewhere; `check-ssl` forces TLS, `no-check-ssl` clear text.
    let tls_settings: Option<UpstreamTls> = match s.opts.check_ssl {
        Some(true) => Some(s.tls.clone().unwrap_or(UpstreamTls {
            verify: true,
            sni: None,
            ca: None,
        })),
        Some(false) => None,
        None if s.opts.port.is_none() && s.opts.addr.is_none() => s.tls.clone(),
        None => None,
    };
    let tls = match &tls_settings {
        None => None,
        Some(t) => Some((tls::client_config(t)?, tls::server_name(t, &host)?)),
    };
    let timing = Timing::of(b, s);
    let connect_timeout = match b.opts.timeout_check {
        Some(_) => b.timeouts.connect.min(timing.inter),
        None => timing.inter,
    };
    let total_timeout = match b.opts.timeout_check {
        Some(t) => connect_timeout + t,
        None => timing.inter,
    };
    let def = &b.opts.check;
    let http = match def.kind {
        CheckKind::Tcp => None,
        CheckKind::Http => {
            let authority = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let host_header = match def.host.clone().or_else(|| b.host.clone()) {
                Some(h) => h,
                None => HeaderValue::from_str(&authority)
                    .map_err(|_| format!("server '{}': invalid check address", s.name))?,
            };
            let mut headers = def.headers.clone();
            if def.send_auth {
                if let Some(c) = &b.credential {
                    headers.push((c.header.clone(), c.value.clone()));
                }
            }
            Some(HttpProbe {
                method: def.method.clone(),
                path: def.path.clone(),
                host: host_header,
                headers,
                expect: def.expect.clone(),
            })
        }
    };
    Ok(Some(Check {
        state,
        probe: Arc::new(Probe {
            host,
            port,
            tls,
            http,
            connect_timeout,
            total_timeout,
        }),
        timing,
    }))
}

/// The check tasks of one snapshot; dropping it stops them.
#[derive(Default)]
pub struct Checks {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Checks {
    /// Spawns one task per check on the current tokio runtime.
    pub fn start(checks: &[Check]) -> Checks {
        Checks {
            tasks: checks
                .iter()
                .map(|c| tokio::spawn(run(c.state.clone(), c.probe.clone(), c.timing)))
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl Drop for Checks {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A random point within `d`, so that servers sharing an interval are not
/// checked in lockstep (HAProxy spreads its first checks the same way).
fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis().min(u128::from(u64::MAX)) as u64;
    Duration::from_millis(fastrand::u64(..=ms))
}

/// The check loop of one server.
async fn run(state: Arc<ServerState>, probe: Arc<Probe>, timing: Timing) {
    let mut next = tokio::time::Instant::now() + jitter(timing.next(&state));
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = state.hurry().notified() => {
                // Passive observation asked for an earlier check.
                next = next.min(tokio::time::Instant::now() + timing.fastinter);
                continue;
            }
        }
        let r = probe.run().await;
        let t = state.record_check(&r);
        let (b, s) = (&state.backend, &state.name);
        let ms = r.duration.as_millis();
        let code = r.code.map(|c| format!(", code: {c}")).unwrap_or_default();
        match t {
            Transition::WentDown => tracing::warn!(
                "Server {b}/{s} is DOWN, reason: {}{code}, info: \"{}\", check duration: {ms}ms",
                r.status.describe(),
                r.info
            ),
            Transition::WentUp => tracing::warn!(
                "Server {b}/{s} is UP, reason: {}{code}, check duration: {ms}ms",
                r.status.describe()
            ),
            Transition::None => tracing::debug!(
                "check {b}/{s}: {}{code} in {ms}ms {}",
                r.status.as_str(),
                r.info
            ),
        }
        next = tokio::time::Instant::now() + timing.next(&state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::native::load_str;

    fn backend(extra_backend: &str, server: &str) -> Backend {
        let text = format!(
            "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n\
             [[backend]]\nname = \"b\"\n{extra_backend}\n[[backend.server]]\nname = \"s\"\n{server}\n"
        );
        let c =
            load_str("t.toml", &text, std::path::Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
        c.backends[0].clone()
    }

    fn plan_of(b: &Backend) -> Option<Check> {
        let st = Arc::new(ServerState::new("b", "s", 1, 0));
        plan(b, &b.servers[0], st, None).unwrap()
    }

    #[test]
    fn no_check_no_plan() {
        let b = backend("", "address = \"10.0.0.1:80\"");
        assert!(plan_of(&b).is_none());
    }

    #[test]
    fn llm_default_probe_with_credential_and_host() {
        std::env::set_var("LLMGW_HEALTH_TEST_KEY", "sk-test");
        let b = backend(
            "host = \"api.example.com\"\nauth = { type = \"bearer\", env = \"LLMGW_HEALTH_TEST_KEY\" }",
            "address = \"10.0.0.1:443\"\ncheck = true\ntls = true",
        );
        let c = plan_of(&b).unwrap();
        let h = c.probe.http.as_ref().unwrap();
        assert_eq!((h.method.as_str(), h.path.as_str()), ("GET", "/v1/models"));
        assert_eq!(h.host, "api.example.com");
        assert!(h
            .headers
            .iter()
            .any(|(n, v)| n == http::header::AUTHORIZATION && v == "Bearer sk-test"));
        // The server speaks TLS and the check goes to it: TLS too.
        assert!(c.probe.tls.is_some());
        assert_eq!((c.probe.host.as_str(), c.probe.port), ("10.0.0.1", 443));
        // Without timeout check, inter bounds everything.
        assert_eq!(c.probe.connect_timeout, DEFAULT_INTER);
        assert_eq!(c.probe.total_timeout, DEFAULT_INTER);
        assert_eq!(c.timing.fastinter, DEFAULT_INTER);
    }

    #[test]
    fn check_port_drops_tls_unless_check_tls() {
        let b = backend(
            "[backend.check]\ntype = \"tcp\"\ntimeout = \"1s\"\ninter = \"10s\"\ndowninter = \"30s\"",
            "address = \"10.0.0.1:443\"\ncheck = true\ntls = true\ncheck_port = 8080\ncheck_addr = \"10.0.0.2\"",
        );
        let c = plan_of(&b).unwrap();
        assert!(c.probe.tls.is_none() && c.probe.http.is_none());
        assert_eq!((c.probe.host.as_str(), c.probe.port), ("10.0.0.2", 8080));
        // timeout check: connect ≤ min(timeout connect, inter), then 1s.
        assert_eq!(c.probe.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.probe.total_timeout, Duration::from_secs(6));
        assert_eq!(
            c.timing,
            Timing {
                inter: Duration::from_secs(10),
                fastinter: Duration::from_secs(10),
                downinter: Duration::from_secs(30)
            }
        );
        let b = backend(
            "",
            "address = \"10.0.0.1:80\"\ncheck = true\ncheck_port = 8443\ncheck_tls = true",
        );
        assert!(plan_of(&b).unwrap().probe.tls.is_some());
    }

    #[test]
    fn conf_resolves_server_then_backend_then_defaults() {
        let b = backend(
            "cooldown_429 = \"5s\"\n[backend.check]\nfall = 7",
            "address = \"10.0.0.1:80\"\ncheck = true\nrise = 4\nbackup = true\nobserve = \"layer7\"\non_error = \"sudden-death\"",
        );
        let c = conf(&b, &b.servers[0]);
        assert_eq!((c.fall, c.rise), (7, 4));
        assert!(c.checked && c.backup);
        assert_eq!(c.observe, Observe::Layer7);
        assert_eq!(c.on_error, OnError::SuddenDeath);
        assert_eq!(c.error_limit, 10);
        assert_eq!(c.cooldown_429, Duration::from_secs(5));
    }

    #[test]
    fn jitter_stays_within_the_interval() {
        for _ in 0..100 {
            assert!(jitter(Duration::from_millis(50)) <= Duration::from_millis(50));
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test]
    async fn on_error_hurries_the_next_check() {
        // A closed port: every check fails (L4CON).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let b = backend(
            "[backend.check]\ntype = \"tcp\"\ninter = \"1h\"\nfastinter = \"10ms\"",
            &format!("address = \"127.0.0.1:{port}\"\ncheck = true\nobserve = \"layer7\"\nerror_limit = 1"),
        );
        let st = Arc::new(ServerState::new("b", "s", 1, 0));
        st.configure(&conf(&b, &b.servers[0]));
        let check = plan(&b, &b.servers[0], st.clone(), None).unwrap().unwrap();
        let running = Checks::start(std::slice::from_ref(&check));
        assert_eq!(running.len(), 1);
        // The first check is somewhere within the hour; an error makes it
        // come within fastinter.
        st.observe(crate::runtime::Outcome::Status(502));
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while st.health_view().checks_failed == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "no check after on-error fastinter");
        assert_eq!(st.health_view().check_status, "L4CON");
        assert!(!st.is_up());
        drop(running);
    }
}
