//! A server's operational (health) state: the fall/rise state machine fed
//! by active checks (`crate::health`) and by passive observation of real
//! traffic ([`ServerState::observe`]), the 429 cooldown and the slowstart
//! ramp.
//!
//! The state machine is HAProxy's: a `health` counter from 0 to
//! `rise + fall - 1`; the server is UP from `rise` on. A passed check
//! raises it by one, and once it reaches `rise` it jumps to the top (so a
//! DOWN server comes UP after exactly `rise` passed checks); a failed check
//! lowers it by one while it is above `rise`, else drops it to 0 (so a
//! fully UP server goes DOWN after exactly `fall` failed checks). A server
//! starts UP at `rise`: until its first check passes, one failure is enough
//! to take it down (HAProxy: "up, but will fall down at first failure").
//!
//! Transitions take a short mutex (checks run every few seconds; passive
//! errors are rare); everything the pick path reads — up/down, cooldown,
//! slowstart — is an atomic, and the clock is read only while a cooldown or
//! ramp is in force.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::ServerState;

/// Longest cooldown a `Retry-After` may impose.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(3600);

/// Milliseconds on a monotonic clock that starts near process start
/// (never 0, so 0 can mean "unset").
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let e = EPOCH.get_or_init(Instant::now);
    (e.elapsed().as_millis() as u64).saturating_add(1)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// HAProxy's check status codes (`check_status` in `show stat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckStatus {
    /// No check has completed yet.
    Init = 0,
    /// TCP connect succeeded (a TCP check).
    L4Ok,
    /// Connect timed out.
    L4Tout,
    /// Connect failed (refused, unreachable, name not resolved).
    L4Con,
    /// TLS handshake succeeded (a TCP check over TLS).
    L6Ok,
    /// TLS handshake timed out.
    L6Tout,
    /// TLS handshake failed.
    L6Rsp,
    /// HTTP check passed.
    L7Ok,
    /// No (complete) HTTP response in time.
    L7Tout,
    /// Invalid HTTP response, or the body/header expectation failed.
    L7Rsp,
    /// The status expectation failed.
    L7Sts,
    /// Passive observation (`on-error fail-check|sudden-death|mark-down`).
    Hana,
}

impl CheckStatus {
    fn from_u8(v: u8) -> CheckStatus {
        use CheckStatus::*;
        [
            Init, L4Ok, L4Tout, L4Con, L6Ok, L6Tout, L6Rsp, L7Ok, L7Tout, L7Rsp, L7Sts, Hana,
        ]
        .get(v as usize)
        .copied()
        .unwrap_or(Init)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Init => "INI",
            CheckStatus::L4Ok => "L4OK",
            CheckStatus::L4Tout => "L4TOUT",
            CheckStatus::L4Con => "L4CON",
            CheckStatus::L6Ok => "L6OK",
            CheckStatus::L6Tout => "L6TOUT",
            CheckStatus::L6Rsp => "L6RSP",
            CheckStatus::L7Ok => "L7OK",
            CheckStatus::L7Tout => "L7TOUT",
            CheckStatus::L7Rsp => "L7RSP",
            CheckStatus::L7Sts => "L7STS",
            CheckStatus::Hana => "HANA",
        }
    }

    /// Does this status count as a passed check?
    pub fn passed(self) -> bool {
        matches!(
            self,
            CheckStatus::L4Ok | CheckStatus::L6Ok | CheckStatus::L7Ok
        )
    }

    /// HAProxy's wording for logs ("Layer4 connection problem", …).
    pub fn describe(self) -> &'static str {
        match self {
            CheckStatus::Init => "Initializing",
            CheckStatus::L4Ok => "Layer4 check passed",
            CheckStatus::L4Tout => "Layer4 timeout",
            CheckStatus::L4Con => "Layer4 connection problem",
            CheckStatus::L6Ok => "Layer6 check passed",
            CheckStatus::L6Tout => "Layer6 timeout",
            CheckStatus::L6Rsp => "Layer6 invalid response",
            CheckStatus::L7Ok => "Layer7 check passed",
            CheckStatus::L7Tout => "Layer7 timeout",
            CheckStatus::L7Rsp => "Layer7 invalid response",
            CheckStatus::L7Sts => "Layer7 wrong status",
            CheckStatus::Hana => "Health analyze",
        }
    }
}

/// The result of one active check.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckResult {
    pub status: CheckStatus,
    /// HTTP status of the check's response, if one arrived.
    pub code: Option<u16>,
    pub duration: Duration,
    /// Human-readable detail for logs (`Connection refused`, …).
    pub info: String,
}

/// What `on-error` does when `error-limit` consecutive errors were observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnError {
    /// Only run the next check sooner (at `fastinter`).
    #[default]
    FastInter = 0,
    /// Count as one failed check, and check sooner.
    FailCheck = 1,
    /// Leave the server one failed check away from DOWN, count one failed
    /// check, and check sooner.
    SuddenDeath = 2,
    /// Mark the server DOWN at once, and check sooner.
    MarkDown = 3,
}

impl OnError {
    fn from_u8(v: u8) -> OnError {
        match v {
            1 => OnError::FailCheck,
            2 => OnError::SuddenDeath,
            3 => OnError::MarkDown,
            _ => OnError::FastInter,
        }
    }

    pub fn parse(s: &str) -> Option<OnError> {
        Some(match s {
            "fastinter" => OnError::FastInter,
            "fail-check" => OnError::FailCheck,
            "sudden-death" => OnError::SuddenDeath,
            "mark-down" => OnError::MarkDown,
            _ => return None,
        })
    }
}

/// `observe`: which traffic outcomes count as errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Observe {
    #[default]
    Off = 0,
    /// Connection failures only.
    Layer4 = 1,
    /// Connection failures, timeouts, broken responses and 5xx other than
    /// 501 and 505.
    Layer7 = 2,
}

/// How one request to this server went, as the request path saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response arrived and was passed on (any status but 429; same as
    /// `Status(code)` with a valid code).
    Ok,
    /// A response with this status arrived. 5xx other than 501 and 505
    /// are errors under `observe layer7`; a 429 should be reported as
    /// [`Outcome::Retry429`] instead (if reported here it is treated the
    /// same way, with the default cooldown).
    Status(u16),
    /// The connection could not be established (refused, reset during
    /// connect, connect timeout, TLS handshake failure).
    ConnectFailed,
    /// No response (or no next byte of it) within `timeout server`.
    Timeout,
    /// The response was malformed or the connection broke while reading it.
    BrokenResponse,
    /// The upstream answered 429: no new requests until `now + this`
    /// (`None`: no usable `Retry-After`, the configured `cooldown-429`).
    Retry429(Option<Duration>),
}

impl Outcome {
    /// Is this an error under `observe`?
    fn is_error(self, observe: Observe) -> bool {
        match observe {
            Observe::Off => false,
            Observe::Layer4 => matches!(self, Outcome::ConnectFailed),
            Observe::Layer7 => match self {
                Outcome::Ok | Outcome::Retry429(_) => false,
                Outcome::ConnectFailed | Outcome::Timeout | Outcome::BrokenResponse => true,
                Outcome::Status(c) => !matches!(c, 100..=499 | 501 | 505),
            },
        }
    }
}

/// Health settings of one server, resolved from the configuration (see
/// `crate::health::conf`). Applied with [`ServerState::configure`] at every
/// snapshot build.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthConf {
    /// Active checks run (`check`); without them the server is always UP
    /// and `observe` has no effect (as in HAProxy).
    pub checked: bool,
    pub fall: u32,
    pub rise: u32,
    pub backup: bool,
    /// Zero = none.
    pub slowstart: Duration,
    pub observe: Observe,
    pub error_limit: u32,
    pub on_error: OnError,
    /// Cooldown after a 429 without a usable `Retry-After`; zero turns
    /// the 429 cooldown off altogether.
    pub cooldown_429: Duration,
}

impl Default for HealthConf {
    fn default() -> Self {
        HealthConf {
            checked: false,
            fall: 3,
            rise: 2,
            backup: false,
            slowstart: Duration::ZERO,
            observe: Observe::Off,
            error_limit: 10,
            on_error: OnError::FastInter,
            cooldown_429: Duration::from_secs(1),
        }
    }
}

/// A change of operational state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    None,
    WentDown,
    WentUp,
}

/// The health part of [`ServerState`].
#[derive(Debug)]
pub(super) struct Health {
    checked: AtomicBool,
    backup: AtomicBool,
    observe: AtomicU8,
    on_error: AtomicU8,
    error_limit: AtomicU32,
    cooldown_429_ms: AtomicU64,
    slowstart_ms: AtomicU64,
    /// The counter and its bounds; only transitions take this.
    machine: Mutex<Machine>,
    /// Mirror of `machine.health` for stats.
    health: AtomicU32,
    check_status: AtomicU8,
    /// Last HTTP code seen by a check, 0 = none.
    last_code: AtomicU32,
    duration_us: AtomicU64,
    last_change_unix_ms: AtomicU64,
    /// Failed checks since the last passed one.
    consecutive_failures: AtomicU32,
    checks_passed: AtomicU64,
    checks_failed: AtomicU64,
    /// UP → DOWN transitions (HAProxy's `chkdown`).
    down_transitions: AtomicU64,
    /// Consecutive errors seen by passive observation.
    consecutive_errors: AtomicU32,
    /// Monotonic ms until which the server takes no new requests; 0 = none.
    cooldown_until: AtomicU64,
    /// Monotonic ms when the slowstart ramp began; 0 = no ramp.
    ramp_start: AtomicU64,
    /// Woken when passive observation wants the next check sooner.
    pub(super) hurry: tokio::sync::Notify,
}

#[derive(Debug)]
struct Machine {
    health: u32,
    fall: u32,
    rise: u32,
}

impl Machine {
    fn full(&self) -> u32 {
        self.rise + self.fall - 1
    }
}

impl Health {
    pub(super) fn new() -> Health {
        let c = HealthConf::default();
        Health {
            checked: AtomicBool::new(false),
            backup: AtomicBool::new(false),
            observe: AtomicU8::new(0),
            on_error: AtomicU8::new(0),
            error_limit: AtomicU32::new(c.error_limit),
            cooldown_429_ms: AtomicU64::new(c.cooldown_429.as_millis() as u64),
            slowstart_ms: AtomicU64::new(0),
            machine: Mutex::new(Machine {
                health: c.rise,
                fall: c.fall,
                rise: c.rise,
            }),
            health: AtomicU32::new(c.rise),
            check_status: AtomicU8::new(CheckStatus::Init as u8),
            last_code: AtomicU32::new(0),
            duration_us: AtomicU64::new(0),
            last_change_unix_ms: AtomicU64::new(unix_ms()),
            consecutive_failures: AtomicU32::new(0),
            checks_passed: AtomicU64::new(0),
            checks_failed: AtomicU64::new(0),
            down_transitions: AtomicU64::new(0),
            consecutive_errors: AtomicU32::new(0),
            cooldown_until: AtomicU64::new(0),
            ramp_start: AtomicU64::new(0),
            hurry: tokio::sync::Notify::new(),
        }
    }
}

/// A read-only copy of a server's health, for stats.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthView {
    pub up: bool,
    pub checked: bool,
    pub backup: bool,
    /// HAProxy's status text: `UP`, `DOWN`, `UP 2/3` (going down),
    /// `DOWN 1/2` (going up), `no check`.
    pub status: String,
    pub check_status: &'static str,
    pub last_code: Option<u16>,
    pub check_duration: Duration,
    /// Wall-clock time of the last UP/DOWN change (or creation).
    pub last_change_unix_ms: u64,
    pub consecutive_failures: u32,
    pub checks_passed: u64,
    pub checks_failed: u64,
    pub down_transitions: u64,
    pub consecutive_errors: u32,
    /// Time left in a 429 cooldown.
    pub cooldown_remaining: Duration,
    /// Weight the balancer uses now (runtime weight, ramped by slowstart).
    pub effective_weight: u32,
    /// The fall/rise counter (HAProxy's `check_health`, 0 to
    /// `rise + fall - 1`) and its bounds.
    pub health: u32,
    pub rise: u32,
    pub fall: u32,
    /// A slowstart ramp is in progress (HAProxy's "starting" state).
    pub ramping: bool,
}

impl ServerState {
    /// Applies a snapshot's health settings. Keeps the current UP/DOWN
    /// state (a reload does not reset health); a server that stops being
    /// checked comes UP, one that starts being checked starts at `rise`.
    pub fn configure(&self, c: &HealthConf) {
        let h = &self.health;
        let fall = c.fall.max(1);
        let rise = c.rise.max(1);
        let was_checked = h.checked.swap(c.checked, Ordering::Relaxed);
        {
            let mut m = h.machine.lock().unwrap_or_else(|e| e.into_inner());
            let up = self.is_up();
            m.fall = fall;
            m.rise = rise;
            if !c.checked {
                m.health = m.full();
                if !up {
                    self.set_up(true);
                    h.last_change_unix_ms.store(unix_ms(), Ordering::Relaxed);
                }
            } else if !was_checked {
                m.health = rise;
                if !up {
                    self.set_up(true);
                }
            } else if up {
                m.health = m.health.clamp(rise, m.full());
            } else {
                m.health = m.health.min(rise - 1);
            }
            h.health.store(m.health, Ordering::Relaxed);
        }
        h.backup.store(c.backup, Ordering::Relaxed);
        let observe = if c.checked { c.observe } else { Observe::Off };
        h.observe.store(observe as u8, Ordering::Relaxed);
        h.on_error.store(c.on_error as u8, Ordering::Relaxed);
        h.error_limit.store(c.error_limit.max(1), Ordering::Relaxed);
        h.cooldown_429_ms
            .store(c.cooldown_429.as_millis() as u64, Ordering::Relaxed);
        h.slowstart_ms
            .store(c.slowstart.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn is_backup(&self) -> bool {
        self.health.backup.load(Ordering::Relaxed)
    }

    pub fn is_checked(&self) -> bool {
        self.health.checked.load(Ordering::Relaxed)
    }

    /// Records one active check's result and moves the state machine.
    pub fn record_check(&self, r: &CheckResult) -> Transition {
        self.record_check_at(r, now_ms())
    }

    pub(crate) fn record_check_at(&self, r: &CheckResult, now: u64) -> Transition {
        let h = &self.health;
        h.check_status.store(r.status as u8, Ordering::Relaxed);
        h.last_code
            .store(r.code.map_or(0, u32::from), Ordering::Relaxed);
        h.duration_us
            .store(r.duration.as_micros() as u64, Ordering::Relaxed);
        let mut m = h.machine.lock().unwrap_or_else(|e| e.into_inner());
        if r.status.passed() {
            h.checks_passed.fetch_add(1, Ordering::Relaxed);
            h.consecutive_failures.store(0, Ordering::Relaxed);
            self.passed(&mut m, now)
        } else {
            h.checks_failed.fetch_add(1, Ordering::Relaxed);
            h.consecutive_failures.fetch_add(1, Ordering::Relaxed);
            self.failed(&mut m)
        }
    }

    fn passed(&self, m: &mut Machine, now: u64) -> Transition {
        let h = &self.health;
        let mut t = Transition::None;
        if m.health < m.full() {
            m.health += 1;
            if m.health >= m.rise {
                m.health = m.full();
                if !self.is_up() {
                    self.set_up(true);
                    h.last_change_unix_ms.store(unix_ms(), Ordering::Relaxed);
                    h.consecutive_errors.store(0, Ordering::Relaxed);
                    if h.slowstart_ms.load(Ordering::Relaxed) > 0 {
                        h.ramp_start.store(now.max(1), Ordering::Relaxed);
                    }
                    t = Transition::WentUp;
                }
            }
        }
        h.health.store(m.health, Ordering::Relaxed);
        t
    }

    fn failed(&self, m: &mut Machine) -> Transition {
        let h = &self.health;
        let mut t = Transition::None;
        if m.health > m.rise {
            m.health -= 1;
        } else {
            m.health = 0;
            if self.is_up() {
                self.set_up(false);
                h.last_change_unix_ms.store(unix_ms(), Ordering::Relaxed);
                h.down_transitions.fetch_add(1, Ordering::Relaxed);
                h.ramp_start.store(0, Ordering::Relaxed);
                t = Transition::WentDown;
            }
        }
        h.health.store(m.health, Ordering::Relaxed);
        t
    }

    /// Passive observation: the request path reports how a request to this
    /// server went. Cheap when nothing is wrong (one atomic load).
    ///
    /// A 429 ([`Outcome::Retry429`]) is not an error: it cools the server
    /// down (no new requests) until `now + Retry-After`, or the configured
    /// `cooldown-429` without one. Under `observe`, `error-limit`
    /// consecutive errors trigger `on-error`.
    pub fn observe(&self, o: Outcome) -> Transition {
        self.observe_at(o, now_ms())
    }

    pub(crate) fn observe_at(&self, o: Outcome, now: u64) -> Transition {
        let h = &self.health;
        let cool = match o {
            Outcome::Retry429(d) => Some(d),
            Outcome::Status(429) => Some(None),
            _ => None,
        };
        if let Some(d) = cool {
            let default = h.cooldown_429_ms.load(Ordering::Relaxed);
            if default > 0 {
                let ms = d
                    .map_or(default, |d| d.as_millis() as u64)
                    .min(MAX_COOLDOWN.as_millis() as u64);
                if ms > 0 {
                    h.cooldown_until.fetch_max(now + ms, Ordering::Relaxed);
                }
            }
        }
        let observe = match h.observe.load(Ordering::Relaxed) {
            1 => Observe::Layer4,
            2 => Observe::Layer7,
            _ => return Transition::None,
        };
        if !o.is_error(observe) {
            // Only connection-level outcomes say anything under layer4.
            let relevant = observe == Observe::Layer7 || o == Outcome::Ok;
            if relevant && h.consecutive_errors.load(Ordering::Relaxed) != 0 {
                h.consecutive_errors.store(0, Ordering::Relaxed);
            }
            return Transition::None;
        }
        let n = h.consecutive_errors.fetch_add(1, Ordering::Relaxed) + 1;
        if n < h.error_limit.load(Ordering::Relaxed) {
            return Transition::None;
        }
        h.consecutive_errors.store(0, Ordering::Relaxed);
        let t = match OnError::from_u8(h.on_error.load(Ordering::Relaxed)) {
            OnError::FastInter => Transition::None,
            action => {
                let mut m = h.machine.lock().unwrap_or_else(|e| e.into_inner());
                match action {
                    OnError::SuddenDeath if m.health > m.rise => m.health = m.rise + 1,
                    OnError::MarkDown => m.health = m.rise,
                    _ => {}
                }
                h.check_status
                    .store(CheckStatus::Hana as u8, Ordering::Relaxed);
                h.checks_failed.fetch_add(1, Ordering::Relaxed);
                h.consecutive_failures.fetch_add(1, Ordering::Relaxed);
                self.failed(&mut m)
            }
        };
        h.hurry.notify_one();
        t
    }

    /// Is a 429 cooldown in force? Clears an expired one.
    pub fn in_cooldown(&self) -> bool {
        self.in_cooldown_at_with(now_ms)
    }

    fn in_cooldown_at_with(&self, now: impl Fn() -> u64) -> bool {
        let until = self.health.cooldown_until.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        if now() < until {
            return true;
        }
        let _ = self.health.cooldown_until.compare_exchange(
            until,
            0,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        false
    }

    #[cfg(test)]
    pub(crate) fn in_cooldown_at(&self, now: u64) -> bool {
        self.in_cooldown_at_with(|| now)
    }

    /// Remaining 429 cooldown.
    pub fn cooldown_remaining(&self) -> Duration {
        let until = self.health.cooldown_until.load(Ordering::Relaxed);
        Duration::from_millis(until.saturating_sub(now_ms()))
    }

    /// Ends a 429 cooldown at once.
    pub fn clear_cooldown(&self) {
        self.health.cooldown_until.store(0, Ordering::Relaxed);
    }

    /// The weight the balancer uses: the runtime weight, ramped linearly
    /// from 1 to full over `slowstart` after the server came back UP.
    /// The ramp has the weight's resolution (a weight-1 server has nothing
    /// to ramp; give weights like 10 or 100 to see a smooth ramp).
    pub fn effective_weight(&self) -> u32 {
        let w = self.weight();
        if w == 0 || self.health.ramp_start.load(Ordering::Relaxed) == 0 {
            return w;
        }
        self.effective_weight_at(now_ms())
    }

    pub(crate) fn effective_weight_at(&self, now: u64) -> u32 {
        let w = self.weight();
        let start = self.health.ramp_start.load(Ordering::Relaxed);
        let period = self.health.slowstart_ms.load(Ordering::Relaxed);
        if w == 0 || start == 0 {
            return w;
        }
        let elapsed = now.saturating_sub(start);
        if period == 0 || elapsed >= period {
            let _ = self.health.ramp_start.compare_exchange(
                start,
                0,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return w;
        }
        let ramped = (u64::from(w) * elapsed).div_ceil(period);
        (ramped as u32).clamp(1, w)
    }

    /// Wakes the check task to run its next check at `fastinter`.
    pub fn hurry(&self) -> &tokio::sync::Notify {
        &self.health.hurry
    }

    /// Is the state machine between its ends (UP but failing, or DOWN but
    /// passing)? Checks run at `fastinter` then.
    pub fn transitioning(&self) -> bool {
        let m = self
            .health
            .machine
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if self.is_up() {
            m.health < m.full()
        } else {
            m.health > 0
        }
    }

    pub fn health_view(&self) -> HealthView {
        let h = &self.health;
        let (health, fall, rise) = {
            let m = h.machine.lock().unwrap_or_else(|e| e.into_inner());
            (m.health, m.fall, m.rise)
        };
        let up = self.is_up();
        let checked = self.is_checked();
        let status = if !checked {
            "no check".to_owned()
        } else if up && health < rise + fall - 1 {
            format!("UP {}/{}", health.saturating_sub(rise) + 1, fall)
        } else if !up && health > 0 {
            format!("DOWN {health}/{rise}")
        } else if up {
            "UP".to_owned()
        } else {
            "DOWN".to_owned()
        };
        let code = h.last_code.load(Ordering::Relaxed);
        HealthView {
            up,
            checked,
            backup: self.is_backup(),
            status,
            check_status: CheckStatus::from_u8(h.check_status.load(Ordering::Relaxed)).as_str(),
            last_code: (code != 0).then_some(code as u16),
            check_duration: Duration::from_micros(h.duration_us.load(Ordering::Relaxed)),
            last_change_unix_ms: h.last_change_unix_ms.load(Ordering::Relaxed),
            consecutive_failures: h.consecutive_failures.load(Ordering::Relaxed),
            checks_passed: h.checks_passed.load(Ordering::Relaxed),
            checks_failed: h.checks_failed.load(Ordering::Relaxed),
            down_transitions: h.down_transitions.load(Ordering::Relaxed),
            consecutive_errors: h.consecutive_errors.load(Ordering::Relaxed),
            cooldown_remaining: self.cooldown_remaining(),
            effective_weight: self.effective_weight(),
            health,
            rise,
            fall,
            ramping: h.ramp_start.load(Ordering::Relaxed) != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(fall: u32, rise: u32) -> ServerState {
        let s = ServerState::new("b", "s", 10, 0);
        s.configure(&HealthConf {
            checked: true,
            fall,
            rise,
            ..HealthConf::default()
        });
        s
    }

    fn ok() -> CheckResult {
        CheckResult {
            status: CheckStatus::L7Ok,
            code: Some(200),
            duration: Duration::from_millis(1),
            info: String::new(),
        }
    }

    fn fail() -> CheckResult {
        CheckResult {
            status: CheckStatus::L4Con,
            code: None,
            duration: Duration::from_millis(1),
            info: "Connection refused".into(),
        }
    }

    #[test]
    fn starts_up_and_one_failure_before_any_pass_takes_it_down() {
        let s = server(3, 2);
        assert!(s.is_up());
        assert_eq!(s.health_view().check_status, "INI");
        assert_eq!(s.record_check(&fail()), Transition::WentDown);
        assert!(!s.is_up());
    }

    #[test]
    fn down_after_exactly_fall_failures_up_after_exactly_rise_passes() {
        for (fall, rise) in [(3, 2), (1, 1), (5, 4), (2, 7)] {
            let s = server(fall, rise);
            assert_eq!(s.record_check(&ok()), Transition::None);
            assert_eq!(s.health_view().status, "UP");
            for i in 1..fall {
                assert_eq!(s.record_check(&fail()), Transition::None, "fail {i}");
                assert!(s.is_up());
                assert!(s.transitioning() || fall == 1);
            }
            assert_eq!(s.record_check(&fail()), Transition::WentDown);
            assert!(!s.is_up());
            assert_eq!(s.health_view().down_transitions, 1);
            assert_eq!(s.health_view().consecutive_failures, fall);
            for i in 1..rise {
                assert_eq!(s.record_check(&ok()), Transition::None, "pass {i}");
                assert!(!s.is_up());
            }
            assert_eq!(s.record_check(&ok()), Transition::WentUp);
            assert!(s.is_up());
            assert!(!s.transitioning());
        }
    }

    #[test]
    fn a_pass_while_going_down_restores_full_health() {
        let s = server(3, 2);
        s.record_check(&ok());
        s.record_check(&fail());
        s.record_check(&fail());
        assert_eq!(s.health_view().status, "UP 1/3");
        s.record_check(&ok());
        assert_eq!(s.health_view().status, "UP");
        // Again three failures are needed.
        s.record_check(&fail());
        s.record_check(&fail());
        assert!(s.is_up());
        assert_eq!(s.record_check(&fail()), Transition::WentDown);
    }

    #[test]
    fn a_failure_while_going_up_starts_over() {
        let s = server(3, 3);
        s.record_check(&fail());
        assert!(!s.is_up());
        s.record_check(&ok());
        s.record_check(&ok());
        assert_eq!(s.health_view().status, "DOWN 2/3");
        s.record_check(&fail());
        assert_eq!(s.health_view().status, "DOWN");
        s.record_check(&ok());
        s.record_check(&ok());
        assert!(!s.is_up());
        assert_eq!(s.record_check(&ok()), Transition::WentUp);
    }

    #[test]
    fn reconfigure_keeps_state_and_unchecked_servers_are_up() {
        let s = server(3, 2);
        s.record_check(&fail());
        assert!(!s.is_up());
        // A reload with the same settings: still down.
        s.configure(&HealthConf {
            checked: true,
            ..HealthConf::default()
        });
        assert!(!s.is_up());
        // Checks removed: up.
        s.configure(&HealthConf::default());
        assert!(s.is_up());
        assert_eq!(s.health_view().status, "no check");
    }

    #[test]
    fn check_details_are_kept() {
        let s = server(3, 2);
        s.record_check(&CheckResult {
            status: CheckStatus::L7Sts,
            code: Some(500),
            duration: Duration::from_millis(7),
            info: String::new(),
        });
        let v = s.health_view();
        assert_eq!(v.check_status, "L7STS");
        assert_eq!(v.last_code, Some(500));
        assert_eq!(v.check_duration, Duration::from_millis(7));
        assert_eq!(v.checks_failed, 1);
    }

    #[test]
    fn slowstart_ramps_linearly_then_ends() {
        let s = ServerState::new("b", "s", 100, 0);
        s.configure(&HealthConf {
            checked: true,
            fall: 1,
            rise: 1,
            slowstart: Duration::from_secs(10),
            ..HealthConf::default()
        });
        s.record_check_at(&fail(), 1000);
        assert_eq!(s.record_check_at(&ok(), 1000), Transition::WentUp);
        assert_eq!(s.effective_weight_at(1000), 1);
        assert_eq!(s.effective_weight_at(1000 + 2_500), 25);
        assert_eq!(s.effective_weight_at(1000 + 5_000), 50);
        assert_eq!(s.effective_weight_at(1000 + 9_999), 100);
        assert_eq!(s.effective_weight_at(1000 + 10_000), 100);
        // The ramp is over: full weight without looking at the clock.
        assert_eq!(s.effective_weight(), 100);
        // A runtime weight change during a ramp scales the ramp.
        s.record_check_at(&fail(), 20_000);
        s.record_check_at(&ok(), 20_000);
        s.set_weight(10);
        assert_eq!(s.effective_weight_at(25_000), 5);
        s.set_weight(0);
        assert_eq!(s.effective_weight_at(25_000), 0);
    }

    #[test]
    fn no_slowstart_at_startup_or_without_setting() {
        let s = server(3, 2);
        assert_eq!(s.effective_weight(), 10);
        s.record_check_at(&fail(), 10);
        s.record_check_at(&ok(), 10);
        s.record_check_at(&ok(), 10);
        assert!(s.is_up());
        assert_eq!(s.effective_weight_at(11), 10);
    }

    #[test]
    fn retry_429_cools_down_for_retry_after_or_default() {
        let s = ServerState::new("b", "s", 1, 0);
        s.configure(&HealthConf::default());
        s.observe_at(Outcome::Retry429(Some(Duration::from_secs(5))), 1000);
        assert!(s.in_cooldown_at(1000));
        assert!(s.in_cooldown_at(5999));
        assert!(!s.in_cooldown_at(6000));
        // Expired: cleared.
        assert!(!s.in_cooldown_at(1000));
        // Default 1s when absent; a 429 is not an error.
        s.observe_at(Outcome::Retry429(None), 10_000);
        assert!(s.in_cooldown_at(10_999));
        assert!(!s.in_cooldown_at(11_000));
        // A shorter Retry-After does not shorten a running cooldown.
        s.observe_at(Outcome::Retry429(Some(Duration::from_secs(10))), 20_000);
        s.observe_at(Outcome::Retry429(Some(Duration::from_secs(1))), 20_001);
        assert!(s.in_cooldown_at(29_999));
        // Capped at an hour.
        s.clear_cooldown();
        s.observe_at(Outcome::Retry429(Some(Duration::from_secs(86_400))), 1);
        assert!(s.in_cooldown_at(3_600_000));
        assert!(!s.in_cooldown_at(3_600_001));
        assert!(s.is_up());
    }

    #[test]
    fn cooldown_429_zero_disables_it() {
        let s = ServerState::new("b", "s", 1, 0);
        s.configure(&HealthConf {
            cooldown_429: Duration::ZERO,
            ..HealthConf::default()
        });
        s.observe_at(Outcome::Retry429(Some(Duration::from_secs(5))), 1000);
        assert!(!s.in_cooldown_at(1001));
    }

    fn observed(on_error: OnError, limit: u32) -> ServerState {
        let s = ServerState::new("b", "s", 1, 0);
        s.configure(&HealthConf {
            checked: true,
            fall: 3,
            rise: 2,
            observe: Observe::Layer7,
            error_limit: limit,
            on_error,
            ..HealthConf::default()
        });
        s.record_check(&ok());
        s
    }

    #[test]
    fn layer7_error_classification() {
        let l7 = Observe::Layer7;
        for c in [500, 502, 503, 504, 506, 599] {
            assert!(Outcome::Status(c).is_error(l7), "{c}");
        }
        for c in [100, 200, 301, 404, 429, 499, 501, 505] {
            assert!(!Outcome::Status(c).is_error(l7), "{c}");
        }
        assert!(Outcome::ConnectFailed.is_error(l7));
        assert!(Outcome::Timeout.is_error(l7));
        assert!(Outcome::BrokenResponse.is_error(l7));
        assert!(!Outcome::Retry429(None).is_error(l7));
        let l4 = Observe::Layer4;
        assert!(Outcome::ConnectFailed.is_error(l4));
        assert!(!Outcome::Timeout.is_error(l4));
        assert!(!Outcome::Status(500).is_error(l4));
        assert!(!Outcome::ConnectFailed.is_error(Observe::Off));
    }

    #[test]
    fn mark_down_after_error_limit_consecutive_errors() {
        let s = observed(OnError::MarkDown, 3);
        s.observe(Outcome::Status(500));
        s.observe(Outcome::Status(502));
        assert!(s.is_up());
        assert_eq!(s.observe(Outcome::Timeout), Transition::WentDown);
        assert!(!s.is_up());
        assert_eq!(s.health_view().check_status, "HANA");
        // Checks bring it back after rise passes.
        s.record_check(&ok());
        assert_eq!(s.record_check(&ok()), Transition::WentUp);
    }

    #[test]
    fn a_success_resets_the_error_count() {
        let s = observed(OnError::MarkDown, 3);
        s.observe(Outcome::Status(500));
        s.observe(Outcome::Status(500));
        s.observe(Outcome::Ok);
        s.observe(Outcome::Status(500));
        s.observe(Outcome::Status(500));
        assert!(s.is_up());
        assert_eq!(s.health_view().consecutive_errors, 2);
        // 501 and 505 are not errors, and reset the count too.
        s.observe(Outcome::Status(501));
        assert_eq!(s.health_view().consecutive_errors, 0);
    }

    #[test]
    fn fail_check_counts_as_one_failed_check() {
        let s = observed(OnError::FailCheck, 2);
        // Each error-limit run is one failed check; fall = 3 runs.
        for _ in 0..2 {
            s.observe(Outcome::ConnectFailed);
            s.observe(Outcome::ConnectFailed);
            assert!(s.is_up());
        }
        assert_eq!(s.health_view().status, "UP 1/3");
        s.observe(Outcome::ConnectFailed);
        assert_eq!(s.observe(Outcome::ConnectFailed), Transition::WentDown);
    }

    #[test]
    fn sudden_death_leaves_one_failure_to_down() {
        let s = observed(OnError::SuddenDeath, 1);
        assert_eq!(s.observe(Outcome::BrokenResponse), Transition::None);
        assert!(s.is_up());
        assert_eq!(s.health_view().status, "UP 1/3");
        // The next failed check (active or passive) takes it down.
        assert_eq!(s.record_check(&fail()), Transition::WentDown);
    }

    #[test]
    fn fastinter_only_hurries_the_check() {
        let s = observed(OnError::FastInter, 1);
        for _ in 0..10 {
            assert_eq!(s.observe(Outcome::Status(503)), Transition::None);
        }
        assert!(s.is_up());
        assert_eq!(s.health_view().status, "UP");
    }

    #[test]
    fn observe_needs_checks() {
        let s = ServerState::new("b", "s", 1, 0);
        s.configure(&HealthConf {
            checked: false,
            observe: Observe::Layer7,
            error_limit: 1,
            on_error: OnError::MarkDown,
            ..HealthConf::default()
        });
        s.observe(Outcome::Status(500));
        assert!(s.is_up());
    }
}
