//! Does an HTTP check's response meet `http-check expect`?

use http::HeaderMap;

use crate::config::{Expect, ExpectTest};
use crate::runtime::CheckStatus;

/// Must the body be read to decide?
pub fn needs_body(e: Option<&Expect>) -> bool {
    matches!(
        e.map(|e| &e.test),
        Some(ExpectTest::String(_) | ExpectTest::RString(_))
    )
}

/// `L7OK`, or why not: `L7STS` for a status expectation, `L7RSP` for a
/// body or header one. Without an expectation, 2xx and 3xx pass (HAProxy's
/// default).
pub fn evaluate(e: Option<&Expect>, status: u16, headers: &HeaderMap, body: &[u8]) -> CheckStatus {
    let Some(e) = e else {
        return if (200..400).contains(&status) {
            CheckStatus::L7Ok
        } else {
            CheckStatus::L7Sts
        };
    };
    let (matched, fail) = match &e.test {
        ExpectTest::Status(list) => (
            list.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status)),
            CheckStatus::L7Sts,
        ),
        ExpectTest::RStatus(re) => (re.is_match(&status.to_string()), CheckStatus::L7Sts),
        ExpectTest::String(s) => (
            memchr::memmem::find(body, s.as_bytes()).is_some(),
            CheckStatus::L7Rsp,
        ),
        ExpectTest::RString(re) => (
            re.is_match(&String::from_utf8_lossy(body)),
            CheckStatus::L7Rsp,
        ),
        ExpectTest::Header { name, value } => (
            headers.get_all(name).iter().any(|v| match value {
                None => true,
                Some(m) => v.to_str().is_ok_and(|v| m.matches(v)),
            }),
            CheckStatus::L7Rsp,
        ),
    };
    if matched != e.negate {
        CheckStatus::L7Ok
    } else {
        fail
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::check::parse_expect;
    use http::HeaderValue;

    fn ex(args: &[&str]) -> Expect {
        parse_expect(args).unwrap()
    }

    #[test]
    fn default_is_2xx_3xx() {
        let h = HeaderMap::new();
        assert_eq!(evaluate(None, 200, &h, b""), CheckStatus::L7Ok);
        assert_eq!(evaluate(None, 302, &h, b""), CheckStatus::L7Ok);
        assert_eq!(evaluate(None, 404, &h, b""), CheckStatus::L7Sts);
        assert_eq!(evaluate(None, 500, &h, b""), CheckStatus::L7Sts);
        assert_eq!(evaluate(None, 199, &h, b""), CheckStatus::L7Sts);
    }

    #[test]
    fn status_and_ranges() {
        let h = HeaderMap::new();
        let e = ex(&["status", "200-299,404"]);
        assert_eq!(evaluate(Some(&e), 204, &h, b""), CheckStatus::L7Ok);
        assert_eq!(evaluate(Some(&e), 404, &h, b""), CheckStatus::L7Ok);
        assert_eq!(evaluate(Some(&e), 500, &h, b""), CheckStatus::L7Sts);
        assert_eq!(evaluate(Some(&e), 301, &h, b""), CheckStatus::L7Sts);
        let e = ex(&["!", "status", "500"]);
        assert_eq!(evaluate(Some(&e), 500, &h, b""), CheckStatus::L7Sts);
        assert_eq!(evaluate(Some(&e), 503, &h, b""), CheckStatus::L7Ok);
        let e = ex(&["rstatus", "^2[0-9]{2}$"]);
        assert_eq!(evaluate(Some(&e), 200, &h, b""), CheckStatus::L7Ok);
        assert_eq!(evaluate(Some(&e), 500, &h, b""), CheckStatus::L7Sts);
    }

    #[test]
    fn body_substring_and_regex_ignore_status() {
        let h = HeaderMap::new();
        let e = ex(&["string", "\"object\":\"list\""]);
        assert!(needs_body(Some(&e)));
        let body = br#"{"object":"list","data":[]}"#;
        assert_eq!(evaluate(Some(&e), 200, &h, body), CheckStatus::L7Ok);
        assert_eq!(evaluate(Some(&e), 200, &h, b"{}"), CheckStatus::L7Rsp);
        let e = ex(&["rstring", "\"data\":\\s*\\["]);
        assert_eq!(evaluate(Some(&e), 200, &h, body), CheckStatus::L7Ok);
        assert_eq!(evaluate(Some(&e), 200, &h, b"nope"), CheckStatus::L7Rsp);
        let e = ex(&["!", "string", "error"]);
        assert_eq!(evaluate(Some(&e), 200, &h, b"all good"), CheckStatus::L7Ok);
        assert_eq!(evaluate(Some(&e), 200, &h, b"an error"), CheckStatus::L7Rsp);
        assert!(!needs_body(Some(&ex(&["status", "200"]))));
        assert!(!needs_body(None));
    }

    #[test]
    fn headers() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        let e = ex(&["hdr", "name", "content-type"]);
        assert_eq!(evaluate(Some(&e), 200, &h, b""), CheckStatus::L7Ok);
        let e = ex(&["hdr", "name", "content-type", "value", "application/json"]);
        assert_eq!(evaluate(Some(&e), 200, &h, b""), CheckStatus::L7Ok);
        let e = ex(&["hdr", "name", "content-type", "value", "text/plain"]);
        assert_eq!(evaluate(Some(&e), 200, &h, b""), CheckStatus::L7Rsp);
        let e = ex(&["hdr", "name", "x-missing"]);
        assert_eq!(evaluate(Some(&e), 200, &h, b""), CheckStatus::L7Rsp);
    }
}
