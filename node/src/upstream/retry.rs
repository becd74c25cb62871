//! Retries and redispatch (HAProxy's `retries`, `retry-on`, `option
//! redispatch`): when a failed attempt may go again, and where.
//!
//! An attempt may be retried only while nothing has reached the client and
//! the whole request body is at hand: with retries on, both paths read a
//! body up to the frontend's `body_limit` before sending (the engine: a
//! `Content-Length` body; a chunked or longer one streams and is retried
//! only after a connection failure, which took none of it). Each attempt
//! reports its outcome to its own server (passive observation) before the
//! next one starts.

use crate::balance::{Balancer, PickCtx};
use crate::config::{retry_on, Backend, Fallback};

/// `retries` when the configuration does not say (HAProxy's default; with
/// the default `retry-on conn-failure` it retries only connections that
/// could not be made, which took nothing of the request).
pub const DEFAULT_RETRIES: u32 = 3;

/// A backend's retry settings, resolved once per configuration snapshot.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryPolicy {
    /// Retries after the first attempt (`retries`; unset = 3).
    pub retries: u32,
    /// `retry-on` as a mask of [`retry_on`] bits.
    pub on: u32,
    /// `option redispatch`: a retry goes to another server when one exists.
    pub redispatch: bool,
}

/// Why an attempt failed, as `retry-on` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    ConnFailure,
    EmptyResponse,
    JunkResponse,
    ResponseTimeout,
    Status(u16),
}

impl Failure {
    /// How a request that ended on this failure is told in the logs.
    pub fn termination(self) -> crate::metrics::Termination {
        use crate::metrics::Termination;
        match self {
            Failure::ConnFailure => Termination::ConnectFailed,
            Failure::EmptyResponse | Failure::JunkResponse | Failure::ResponseTimeout => {
                Termination::ServerHead
            }
            Failure::Status(_) => Termination::Normal,
        }
    }

    fn bit(self) -> u32 {
        match self {
            Failure::ConnFailure => retry_on::CONN_FAILURE,
            Failure::EmptyResponse => retry_on::EMPTY_RESPONSE,
            Failure::JunkResponse => retry_on::JUNK_RESPONSE,
            Failure::ResponseTimeout => retry_on::RESPONSE_TIMEOUT,
            Failure::Status(s) => retry_on::status(s),
        }
    }
}

impl Fallback {
    /// Whether this step takes over after the step before failed with `f`.
    pub fn takes(&self, f: Failure) -> bool {
        self.on & f.bit() != 0
    }
}

impl RetryPolicy {
    pub fn of(be: &Backend) -> RetryPolicy {
        RetryPolicy {
            retries: be.opts.retries.unwrap_or(DEFAULT_RETRIES),
            on: retry_on::mask(&be.opts.retry_on),
            redispatch: be.opts.redispatch,
        }
    }

    /// Whether some failure could be retried at all (the general path
    /// buffers request bodies only then).
    pub fn enabled(&self) -> bool {
        self.retries > 0 && self.on != 0
    }

    /// Whether a failure after the response head — the body breaking off
    /// before its first byte, or no first byte by the deadline — may be
    /// retried: only then is it worth holding the head back for that byte.
    pub fn after_head(&self) -> bool {
        self.enabled() && self.on & (retry_on::EMPTY_RESPONSE | retry_on::RESPONSE_TIMEOUT) != 0
    }

    /// Whether a response with this status is retried (when attempts are
    /// left).
    pub fn on_status(&self, status: u16) -> bool {
        self.on & retry_on::status(status) != 0
    }

    /// Whether attempt number `done` (1 = the first) failing with `f` may
    /// be followed by another.
    pub fn allows(&self, f: Failure, done: u32) -> bool {
        done <= self.retries && self.on & f.bit() != 0
    }
}

/// The server for the next attempt after `last` failed, `tried` holding
/// every server tried so far (`last` included). Without redispatch the
/// retry stays on `last`, as in HAProxy; with it, another server when the
/// balancer has one (backups as it decides), else `last` again.
pub fn next_server(
    p: &RetryPolicy,
    balancer: &Balancer,
    ctx: &PickCtx,
    tried: &[usize],
    last: usize,
) -> usize {
    if !p.redispatch {
        return last;
    }
    balancer.pick(ctx, tried).unwrap_or(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(retries: u32, on: &[&str]) -> RetryPolicy {
        let words: Vec<String> = on.iter().map(|s| s.to_string()).collect();
        RetryPolicy {
            retries,
            on: retry_on::mask(&words),
            redispatch: false,
        }
    }

    #[test]
    fn default_retry_on_is_conn_failure_only() {
        let p = policy(2, &[]);
        assert!(p.allows(Failure::ConnFailure, 1));
        assert!(p.allows(Failure::ConnFailure, 2));
        assert!(!p.allows(Failure::ConnFailure, 3));
        assert!(!p.allows(Failure::EmptyResponse, 1));
        assert!(!p.on_status(503));
    }

    #[test]
    fn all_retryable_errors_and_statuses() {
        let p = policy(1, &["all-retryable-errors"]);
        for f in [
            Failure::ConnFailure,
            Failure::EmptyResponse,
            Failure::JunkResponse,
            Failure::ResponseTimeout,
            Failure::Status(500),
            Failure::Status(502),
            Failure::Status(503),
            Failure::Status(504),
        ] {
            assert!(p.allows(f, 1), "{f:?}");
        }
        assert!(!p.on_status(429));
        assert!(!p.on_status(501));
        let q = policy(1, &["429", "503"]);
        assert!(q.on_status(429) && q.on_status(503) && !q.on_status(500));
        assert!(!q.allows(Failure::ConnFailure, 1));
        assert!(!policy(0, &["all-retryable-errors"]).enabled());
        assert!(!policy(3, &["none"]).enabled());
    }
}
