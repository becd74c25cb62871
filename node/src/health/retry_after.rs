//! `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, StatusCode};

use crate::runtime::Outcome;

/// The wait a `Retry-After` value asks for, measured from `now`: a number
/// of seconds, or an HTTP-date (IMF-fixdate, RFC 850 or asctime). A date
/// in the past means no wait (`Some(0)`). `None` when malformed.
pub fn parse_retry_after(v: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let s = v.to_str().ok()?.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long numbers saturate (and are capped by the caller).
        return Some(Duration::from_secs(s.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(s).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The `Retry-After` of a response, from now.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after(headers.get(http::header::RETRY_AFTER)?, SystemTime::now())
}

/// The [`Outcome`] for a response that arrived: a 429 becomes
/// [`Outcome::Retry429`] with its `Retry-After`, anything else
/// [`Outcome::Status`].
pub fn outcome_of(status: StatusCode, headers: &HeaderMap) -> Outcome {
    if status == StatusCode::TOO_MANY_REQUESTS {
        Outcome::Retry429(retry_after(headers))
    } else {
        Outcome::Status(status.as_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn seconds() {
        let now = SystemTime::now();
        assert_eq!(
            parse_retry_after(&hv("120"), now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(&hv(" 0 "), now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(&hv("-1"), now), None);
        assert_eq!(parse_retry_after(&hv("1.5"), now), None);
        assert_eq!(parse_retry_after(&hv(""), now), None);
        assert_eq!(
            parse_retry_after(&hv("99999999999999999999999"), now),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn http_dates() {
        // Sun, 06 Nov 1994 08:49:37 GMT = 784111777.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777 - 30);
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                parse_retry_after(&hv(form), now),
                Some(Duration::from_secs(30)),
                "{form}"
            );
        }
        // In the past: no wait.
        let later = now + Duration::from_secs(3600);
        assert_eq!(
            parse_retry_after(&hv("Sun, 06 Nov 1994 08:49:37 GMT"), later),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(&hv("tomorrow"), now), None);
    }

    #[test]
    fn outcomes() {
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, hv("7"));
        assert_eq!(
            outcome_of(StatusCode::TOO_MANY_REQUESTS, &h),
            Outcome::Retry429(Some(Duration::from_secs(7)))
        );
        assert_eq!(
            outcome_of(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new()),
            Outcome::Retry429(None)
        );
        assert_eq!(
            outcome_of(StatusCode::BAD_GATEWAY, &h),
            Outcome::Status(502)
        );
    }
}
