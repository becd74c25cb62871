//! Who may use the stats listener: HTTP basic auth against the configured
//! [`StatsAccess`] users.
//!
//! Credentials are compared in constant time: the presented `user:password`
//! and each configured one are hashed (SHA-256) and the digests compared
//! without an early exit, against every user, so neither the length of a
//! password nor how much of it matched nor which user exists shows in the
//! time taken. Nothing here logs or returns a password.

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use crate::config::StatsAccess;
use crate::http::body::RespBody;
use crate::http::error::error_response;

/// The header the stats page puts on its own requests. A 401 to such a
/// request challenges with a scheme browsers do not prompt for, so a wrong
/// password typed in the page's login form is reported by the page rather
/// than by the browser's own dialog.
pub const PAGE_HEADER: &str = "x-llmgw-stats";

/// Longer `Authorization` headers are refused unread (nobody's
/// `user:password` is that long; hashing it would be work for nothing).
const MAX_AUTHORIZATION: usize = 1024;

/// What the request's credentials amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Caller {
    /// No `Authorization` header.
    Anonymous,
    /// A configured user, by name.
    User(String),
    /// Credentials that match no user, or that are not basic auth.
    Refused,
}

/// Reads the request's basic-auth credentials against `access.users`.
pub fn caller(access: &StatsAccess, headers: &HeaderMap) -> Caller {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Caller::Anonymous;
    };
    let v = v.as_bytes();
    if v.len() > MAX_AUTHORIZATION {
        return Caller::Refused;
    }
    let Some(b64) = v
        .get(..6)
        .filter(|s| s.eq_ignore_ascii_case(b"basic "))
        .map(|_| v[6..].trim_ascii())
    else {
        return Caller::Refused;
    };
    let Some(presented) = decode_base64(b64) else {
        return Caller::Refused;
    };
    let got = crate::keys::sha256(&presented);
    let mut found = None;
    // Every user is compared, matched or not: the time does not say which
    // user names exist.
    for u in &access.users {
        let want = crate::keys::sha256(format!("{}:{}", u.name, u.password).as_bytes());
        if ct_eq(&want, &got) {
            found = Some(u.name.clone());
        }
    }
    found.map_or(Caller::Refused, Caller::User)
}

/// Compares two digests without an early exit.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut d = 0u8;
    for (x, y) in a.iter().zip(b) {
        d |= x ^ y;
    }
    // Keeps the compiler from turning the fold back into a short-circuit.
    std::hint::black_box(d) == 0
}

/// Standard base64 (RFC 4648 §4), padding optional, no whitespace inside.
fn decode_base64(s: &[u8]) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = match s.iter().position(|&c| c == b'=') {
        // Padding only at the end, at most two, making a whole quantum.
        Some(p)
            if s.len().is_multiple_of(4)
                && s.len() - p <= 2
                && s[p..].iter().all(|&c| c == b'=') =>
        {
            &s[..p]
        }
        Some(_) => return None,
        None => s,
    };
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// The 401 asking for credentials. Browsers prompt for `Basic`; the page's
/// own requests ([`PAGE_HEADER`]) get a scheme they do not prompt for.
pub fn challenge(access: &StatsAccess, headers: &HeaderMap, message: &str) -> Response<RespBody> {
    let mut r = error_response(StatusCode::UNAUTHORIZED, "unauthorized", message);
    let scheme = if headers.contains_key(PAGE_HEADER) {
        "StatsPage"
    } else {
        "Basic"
    };
    // The realm was checked at load time (no quotes, a valid header value).
    let v = format!("{scheme} realm=\"{}\", charset=\"UTF-8\"", access.realm);
    if let Ok(v) = HeaderValue::from_str(&v) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// May this request read (`/stats`, `/stats.json`, `/metrics`)? `Err` is
/// the answer to send instead.
pub fn read(access: &StatsAccess, headers: &HeaderMap) -> Result<(), Box<Response<RespBody>>> {
    if access.users.is_empty() || !access.read_auth {
        return Ok(());
    }
    match caller(access, headers) {
        Caller::User(_) => Ok(()),
        Caller::Anonymous => Err(Box::new(challenge(
            access,
            headers,
            "The statistics need a login (basic auth).",
        ))),
        Caller::Refused => Err(Box::new(challenge(
            access,
            headers,
            "Wrong user name or password.",
        ))),
    }
}

/// May this request change state? Admin actions always need a configured
/// user: with none (or with admin actions off) they are refused outright,
/// never left open. `Ok` is the user's name.
pub fn admin(access: &StatsAccess, headers: &HeaderMap) -> Result<String, Box<Response<RespBody>>> {
    if access.users.is_empty() {
        return Err(Box::new(error_response(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "Admin actions need a stats user, and none is configured (native: stats = { auth = [\"user:password\"] }; HAProxy: stats auth user:password).",
        )));
    }
    if !access.admin {
        return Err(Box::new(error_response(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "Admin actions are turned off (native: admin = true; HAProxy: stats admin if TRUE).",
        )));
    }
    match caller(access, headers) {
        Caller::User(u) => Ok(u),
        Caller::Anonymous => Err(Box::new(challenge(
            access,
            headers,
            "Admin actions need a login (basic auth).",
        ))),
        Caller::Refused => Err(Box::new(challenge(
            access,
            headers,
            "Wrong user name or password.",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StatsUser;

    fn access() -> StatsAccess {
        StatsAccess {
            users: vec![
                StatsUser::parse("admin:s3:cret").unwrap(),
                StatsUser::parse("ops:pw").unwrap(),
            ],
            ..StatsAccess::default()
        }
    }

    fn basic(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(
            decode_base64(b"YWRtaW46czM6Y3JldA==").unwrap(),
            b"admin:s3:cret"
        );
        assert_eq!(
            decode_base64(b"YWRtaW46czM6Y3JldA").unwrap(),
            b"admin:s3:cret"
        );
        assert_eq!(decode_base64(b"b3BzOnB3").unwrap(), b"ops:pw");
        assert_eq!(decode_base64(b"").unwrap(), b"");
        // UTF-8 passes through as bytes.
        assert_eq!(decode_base64(b"w6k6w7w=").unwrap(), "é:ü".as_bytes());
        for bad in [
            &b"YW=Jk"[..],
            b"Y",
            b"YW!=",
            b"YW===",
            b"Y===",
            b"YWJj ZA==",
        ] {
            assert_eq!(
                decode_base64(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn users_are_told_apart() {
        let a = access();
        assert_eq!(caller(&a, &HeaderMap::new()), Caller::Anonymous);
        // admin:s3:cret — the password keeps its colon.
        assert_eq!(
            caller(&a, &basic("Basic YWRtaW46czM6Y3JldA==")),
            Caller::User("admin".into())
        );
        assert_eq!(
            caller(&a, &basic("basic b3BzOnB3")),
            Caller::User("ops".into())
        );
        // admin:s3 (a prefix of the password), ops:pw (user swapped), garbage.
        for v in [
            "Basic YWRtaW46czM=",
            "Basic YWRtaW46cHc=",
            "Basic !!",
            "Bearer b3BzOnB3",
        ] {
            assert_eq!(caller(&a, &basic(v)), Caller::Refused, "{v}");
        }
        let long = format!("Basic {}", "A".repeat(MAX_AUTHORIZATION));
        assert_eq!(caller(&a, &basic(&long)), Caller::Refused);
    }

    #[test]
    fn reads_follow_read_auth_and_admin_needs_a_user() {
        let mut a = access();
        let anon = HeaderMap::new();
        let r = read(&a, &anon).unwrap_err();
        assert_eq!(r.status(), 401);
        assert!(r.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Basic realm=\"llmgw statistics\""));
        // The page's own requests get a challenge browsers do not prompt for.
        let mut page = HeaderMap::new();
        page.insert(PAGE_HEADER, HeaderValue::from_static("1"));
        let r = read(&a, &page).unwrap_err();
        assert!(r.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("StatsPage "));
        assert!(read(&a, &basic("Basic b3BzOnB3")).is_ok());
        a.read_auth = false;
        assert!(read(&a, &anon).is_ok());
        // Reads may be open; admin actions never are.
        assert_eq!(admin(&a, &anon).unwrap_err().status(), 401);
        assert_eq!(
            admin(&a, &basic("Basic b3BzOnB3")).ok().as_deref(),
            Some("ops")
        );
        a.admin = false;
        assert_eq!(
            admin(&a, &basic("Basic b3BzOnB3")).unwrap_err().status(),
            403
        );
        let none = StatsAccess::default();
        assert!(read(&none, &anon).is_ok());
        assert_eq!(
            admin(&none, &basic("Basic b3BzOnB3")).unwrap_err().status(),
            403
        );
    }
}
