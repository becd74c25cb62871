//! Client keys (virtual API keys): which principal a request comes from,
//! what it may use, and its per-key limits.
//!
//! A frontend with `client_keys` admits a request only with a key of its
//! list, presented the way the SDKs send theirs — `Authorization: Bearer`
//! (OpenAI), `x-api-key` (Anthropic) or `api-key` (Azure). The key is
//! looked up by its SHA-256 (the configuration holds only hashes) and
//! removed from the request before anything else sees it: the backend sends
//! its own provider credentials. Answers, in OpenAI's error shape: no key
//! or an unknown one → 401, a model or backend the key may not use → 403,
//! a limit reached → 429 with `Retry-After`.
//!
//! Limits are counted in a stick table per list, keyed by the key's name
//! (concurrent requests, requests and tokens over a sliding minute), on
//! the request's [`CLIENT_KEY_SLOT`] — so tokens are reserved and settled
//! as for any table that counts them (`crate::stick::Account`), and the
//! counters are deltas the cluster can sum like any other table's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::config::stick::Data;
use crate::config::{ClientKey, KeyList, StickTable};
use crate::http::body::RespBody;
use crate::http::error::error_response;
use crate::runtime::Runtime;
use crate::stick::{Key, Table, Tracked, CLIENT_KEY_SLOT};

static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
static API_KEY: HeaderName = HeaderName::from_static("api-key");

/// What each list's table keeps per key. The size is fixed, not the
/// number of keys, so that adding a key on reload keeps everyone's counts.
const STORE: [&str; 6] = [
    "conn_cur",
    "http_req_cnt",
    "http_req_rate(1m)",
    "tokens_rate(1m)",
    "tokens_in_rate(1m)",
    "tokens_out_rate(1m)",
];
const TABLE_SIZE: u64 = 1 << 20;

/// A key list as a running gateway uses it.
pub struct KeyRing {
    keys: Vec<ClientKey>,
    by_hash: HashMap<[u8; 32], usize>,
    /// Per-key usage, keyed by the key's name.
    pub table: Arc<Table>,
    /// Per-key traffic counters (same order as `keys`).
    stats: Vec<Arc<crate::metrics::LlmStats>>,
    /// The keys' names, shared into access-log lines without a copy.
    names: Vec<Arc<str>>,
}

impl KeyRing {
    /// The ring for `list`, its usage table kept across reloads.
    pub fn new(list: &KeyList, runtime: &Runtime) -> Result<KeyRing, String> {
        let def = StickTable {
            name: format!("@client-keys/{}", list.name),
            key_type: "string".into(),
            size: TABLE_SIZE,
            expire: None,
            store: STORE.iter().map(|s| s.to_string()).collect(),
        };
        Ok(KeyRing {
            by_hash: list
                .keys
                .iter()
                .enumerate()
                .map(|(i, k)| (k.sha256, i))
                .collect(),
            keys: list.keys.clone(),
            table: runtime.table(&def)?,
            stats: list
                .keys
                .iter()
                .map(|k| runtime.metrics.key(&k.name))
                .collect(),
            names: list
                .keys
                .iter()
                .map(|k| Arc::from(k.name.as_str()))
                .collect(),
        })
    }

    /// Identifies the request's key, strips every credential header, and
    /// checks the model; then tracks the key (reserving the request's
    /// tokens) and checks its limits. Returns the key's index.
    pub fn admit(
        &self,
        headers: &mut HeaderMap,
        model: Option<&str>,
        tracked: &mut Tracked,
    ) -> Result<usize, Box<Response<RespBody>>> {
        let found = presented(headers).map(|k| self.by_hash.get(&sha256(k)).copied());
        strip_credentials(headers);
        let i = match found {
            None => return Err(refuse(Refusal::Missing)),
            Some(None) => return Err(refuse(Refusal::Unknown)),
            Some(Some(i)) => i,
        };
        let key = &self.keys[i];
        if let (Some(allowed), Some(m)) = (&key.models, model) {
            if !allowed.iter().any(|a| a == m) {
                return Err(refuse(Refusal::Model(m)));
            }
        }
        tracked.track(
            CLIENT_KEY_SLOT,
            &self.table,
            Key::bytes(key.name.as_bytes()),
        );
        let over = |data: Data, limit: Option<u64>| {
            let limit = i64::try_from(limit?).unwrap_or(i64::MAX);
            (tracked.get(CLIENT_KEY_SLOT, data)? > limit).then_some(limit)
        };
        if let Some(max) = over(Data::ConnCur, key.max_concurrent) {
            return Err(refuse(Refusal::Concurrent(max, Duration::from_secs(1))));
        }
        for (data, limit, what) in [
            (Data::HttpReqRate, key.requests_per_minute, "requests"),
            (Data::TokensRate, key.tokens_per_minute, "tokens"),
        ] {
            if let Some(max) = over(data, limit) {
                let wait = tracked
                    .retry_after(CLIENT_KEY_SLOT, data, max - 1)
                    .unwrap_or(Duration::from_secs(60));
                return Err(refuse(Refusal::Rate(what, max, wait)));
            }
        }
        Ok(i)
    }

    /// Whether key `i` may be routed to backend `backend`.
    pub fn allows_backend(&self, i: usize, backend: usize) -> bool {
        self.keys[i]
            .backends
            .as_ref()
            .is_none_or(|b| b.contains(&backend))
    }

    pub fn name(&self, i: usize) -> &str {
        &self.keys[i].name
    }

    /// Key `i`'s name, for access logs.
    pub fn log_name(&self, i: usize) -> &Arc<str> {
        &self.names[i]
    }

    /// Key `i`'s traffic counters.
    pub fn stats(&self, i: usize) -> &Arc<crate::metrics::LlmStats> {
        &self.stats[i]
    }
}

/// The credential the client presents, as the SDKs send it.
fn presented(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.as_bytes();
        return match v.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => Some(v[7..].trim_ascii()),
            _ => Some(v),
        };
    }
    [&X_API_KEY, &API_KEY]
        .into_iter()
        .find_map(|h| headers.get(h))
        .map(|v| v.as_bytes().trim_ascii())
}

/// Removes every header a client key may come in.
pub fn strip_credentials(headers: &mut HeaderMap) {
    headers.remove(header::AUTHORIZATION);
    headers.remove(&X_API_KEY);
    headers.remove(&API_KEY);
}

pub fn sha256(key: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, key);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Why a request is refused, before it goes anywhere.
enum Refusal<'a> {
    Missing,
    Unknown,
    Model(&'a str),
    Concurrent(i64, Duration),
    /// (`requests` or `tokens`, the per-minute limit, when to come back)
    Rate(&'static str, i64, Duration),
}

fn refuse(r: Refusal<'_>) -> Box<Response<RespBody>> {
    let (status, code, message, wait) = match r {
        Refusal::Missing => (
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
            "No API key was provided: send it as `Authorization: Bearer KEY`.".to_owned(),
            None,
        ),
        Refusal::Unknown => (
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "The API key is not valid for this gateway.".to_owned(),
            None,
        ),
        Refusal::Model(m) => (
            StatusCode::FORBIDDEN,
            "model_not_allowed",
            format!("This API key may not use the model `{m}`."),
            None,
        ),
        Refusal::Concurrent(max, wait) => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            format!("This API key may have {max} requests in progress at once."),
            Some(wait),
        ),
        Refusal::Rate(what, max, wait) => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            format!("This API key is limited to {max} {what} per minute."),
            Some(wait),
        ),
    };
    let mut resp = error_response(status, code, &message);
    resp.extensions_mut().insert(crate::metrics::Denied);
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Some(wait) = wait {
        let secs = wait.as_millis().div_ceil(1000).max(1) as u64;
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    Box::new(resp)
}

/// The answer for a backend the key may not be routed to.
pub fn backend_not_allowed() -> Box<Response<RespBody>> {
    let mut resp = error_response(
        StatusCode::FORBIDDEN,
        "backend_not_allowed",
        "This API key may not use the backend this request is routed to.",
    );
    resp.extensions_mut().insert(crate::metrics::Denied);
    Box::new(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_comes_from_where_the_sdks_put_it() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer sk-1 "));
        assert_eq!(presented(&h), Some(&b"sk-1"[..]));
        h.insert("authorization", HeaderValue::from_static("bearer sk-2"));
        assert_eq!(presented(&h), Some(&b"sk-2"[..]));
        let mut a = HeaderMap::new();
        a.insert("x-api-key", HeaderValue::from_static("sk-ant"));
        assert_eq!(presented(&a), Some(&b"sk-ant"[..]));
        let mut z = HeaderMap::new();
        z.insert("api-key", HeaderValue::from_static("az"));
        assert_eq!(presented(&z), Some(&b"az"[..]));
        assert_eq!(presented(&HeaderMap::new()), None);
        strip_credentials(&mut h);
        strip_credentials(&mut a);
        assert!(h.is_empty() && a.is_empty());
    }

    #[test]
    fn sha256_is_the_usual_digest() {
        // printf %s abc | sha256sum
        let hex: String = sha256(b"abc").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
