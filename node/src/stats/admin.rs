//! `POST /stats/admin`: the stats page's admin actions, applied as
//! [`Command`]s through [`crate::runtime::Runtime::apply`] like every other
//! change to runtime state.
//!
//! ```text
//! POST /stats/admin
//! Authorization: Basic …
//! Content-Type: application/json
//!
//! {"backend": "b", "servers": ["s1", "s2"], "action": "drain"}
//! {"backend": "b", "server": "s1", "action": "weight", "weight": 10}
//! ```
//!
//! Cross-site request forgery: basic-auth credentials a browser remembers
//! are sent with any request to the origin, a forged one from another site
//! included (HAProxy's own stats page is open to this). So besides a user,
//! an action needs `Content-Type: application/json` — which no HTML form can
//! send, and which makes a cross-origin `fetch` ask first with a CORS
//! preflight that this listener never approves — and a request carrying an
//! `Origin` (or `Sec-Fetch-Site`) that is not this listener's own is
//! refused. A custom header would do as well as the JSON type; the type is
//! what a JSON API needs anyway, so `curl --json` works as it is.

use std::sync::Arc;

use http::{header, HeaderMap, Response, StatusCode};
use serde_json::{json, Value};

use crate::gateway::Shared;
use crate::http::body::RespBody;
use crate::http::error::error_response;
use crate::runtime::{AdminState, Command};

/// Request bodies larger than this are refused (413).
pub const MAX_BODY: usize = 16 * 1024;

/// An action on servers, as the page names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    State(AdminState),
    Weight(u32),
}

/// Refuses a request another site may have made (see the module doc).
pub fn cross_site(headers: &HeaderMap) -> Option<Response<RespBody>> {
    let refuse = || {
        Some(error_response(
            StatusCode::FORBIDDEN,
            "cross_site",
            "Admin actions are taken only from this listener's own page.",
        ))
    };
    if let Some(site) = headers.get("sec-fetch-site") {
        // `none`: typed by the user, not made by a page.
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return refuse();
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).map(|h| h.as_bytes());
        let origin = origin.as_bytes();
        let own = origin
            .strip_prefix(b"http://")
            .is_some_and(|o| Some(o) == host);
        if !own {
            return refuse();
        }
    }
    None
}

/// Is the body declared as JSON (`application/json`, parameters allowed)?
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

fn bad(message: &str) -> Response<RespBody> {
    error_response(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn not_found(message: &str) -> Response<RespBody> {
    error_response(StatusCode::NOT_FOUND, "not_found", message)
}

/// Reads and checks the body, then applies one command per server. The
/// caller has checked the user, the origin and the content type. Every
/// server is checked before anything is applied, so a request naming an
/// unknown one changes nothing.
pub fn apply(shared: &Arc<Shared>, user: &str, body: &[u8]) -> Response<RespBody> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return bad("The body must be a JSON object: {\"backend\": …, \"server\": … or \"servers\": […], \"action\": \"ready|drain|maint|weight\", \"weight\": N}.");
    };
    let Some(backend) = v.get("backend").and_then(Value::as_str) else {
        return bad("\"backend\" (a backend name) is missing.");
    };
    let servers: Vec<&str> = match (v.get("server"), v.get("servers")) {
        (Some(Value::String(s)), None) => vec![s.as_str()],
        (None, Some(Value::Array(a))) if !a.is_empty() => {
            let names: Vec<_> = a.iter().filter_map(Value::as_str).collect();
            if names.len() != a.len() {
                return bad("\"servers\" must be a list of server names.");
            }
            names
        }
        _ => return bad("Name the servers: \"server\": \"NAME\" or \"servers\": [\"NAME\", …]."),
    };
    let action = match v.get("action").and_then(Value::as_str) {
        Some("ready") => Action::State(AdminState::Ready),
        Some("drain") => Action::State(AdminState::Drain),
        Some("maint") => Action::State(AdminState::Maint),
        Some("weight") => match v.get("weight").and_then(Value::as_u64) {
            Some(w) if w <= 256 => Action::Weight(w as u32),
            _ => return bad("\"weight\" must be a whole number from 0 to 256."),
        },
        _ => return bad("\"action\" must be one of ready, drain, maint, weight."),
    };

    // Names are checked against the configuration being served, so that
    // an unknown backend and an unknown server are told apart.
    let snap = shared.current.load();
    let Some(b) = snap.config.backends.iter().find(|b| b.name == backend) else {
        return not_found(&format!("No backend '{backend}'."));
    };
    if let Some(s) = servers
        .iter()
        .find(|s| !b.servers.iter().any(|c| c.name == **s))
    {
        return not_found(&format!("Backend '{backend}' has no server '{s}'."));
    }
    drop(snap);

    let mut applied = Vec::new();
    for server in servers {
        let cmd = match action {
            Action::State(state) => Command::SetServerState {
                backend: backend.to_owned(),
                server: server.to_owned(),
                state,
            },
            Action::Weight(weight) => Command::SetServerWeight {
                backend: backend.to_owned(),
                server: server.to_owned(),
                weight,
            },
        };
        if let Err(e) = shared.runtime.apply(&cmd) {
            // A reload removed it between the check and now: whatever the
            // error names (server or backend) is not there.
            return not_found(&e.to_string());
        }
        // Who did what, for the audit trail (never the credentials).
        tracing::info!(
            user,
            backend,
            server,
            ?action,
            "stats page: admin action applied"
        );
        applied.push(json!({ "backend": backend, "server": server }));
    }
    let (action, weight) = match action {
        Action::State(s) => (s.as_str(), None),
        Action::Weight(w) => ("weight", Some(w)),
    };
    let body = json!({
        "ok": true,
        "user": user,
        "action": action,
        "weight": weight,
        "applied": applied,
    });
    super::text(body.to_string(), "application/json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_own_origin_passes() {
        assert!(cross_site(&headers(&[])).is_none(), "curl sends neither");
        assert!(cross_site(&headers(&[
            ("host", "127.0.0.1:8404"),
            ("origin", "http://127.0.0.1:8404")
        ]))
        .is_none());
        assert!(cross_site(&headers(&[("sec-fetch-site", "same-origin")])).is_none());
        for h in [
            headers(&[("host", "127.0.0.1:8404"), ("origin", "http://evil.test")]),
            headers(&[("host", "127.0.0.1:8404"), ("origin", "null")]),
            headers(&[
                ("host", "127.0.0.1:8404"),
                ("origin", "https://127.0.0.1:8404"),
            ]),
            headers(&[("origin", "http://127.0.0.1:8404")]),
            headers(&[("sec-fetch-site", "cross-site")]),
            headers(&[("sec-fetch-site", "same-site")]),
        ] {
            assert_eq!(
                cross_site(&h).map(|r| r.status()),
                Some(StatusCode::FORBIDDEN),
                "{h:?}"
            );
        }
    }

    #[test]
    fn json_type_is_required() {
        assert!(is_json(&headers(&[("content-type", "application/json")])));
        assert!(is_json(&headers(&[(
            "content-type",
            "Application/JSON; charset=utf-8"
        )])));
        for t in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
        ] {
            let mut h = HeaderMap::new();
            h.insert("content-type", HeaderValue::from_str(t).unwrap());
            assert!(!is_json(&h), "{t}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }

    fn shared() -> Arc<Shared> {
        let cfg = crate::config::native::load_str(
            "t.toml",
            r#"
[[frontend]]
name = "f"
bind = ["127.0.0.1:0"]
default_backend = "b"
[[backend]]
name = "b"
[[backend.server]]
name = "s1"
address = "127.0.0.1:1"
[[backend.server]]
name = "s2"
address = "127.0.0.1:2"
"#,
            std::path::Path::new("."),
        )
        .unwrap();
        Shared::new(cfg, None).unwrap()
    }

    fn server(sh: &Shared, name: &str) -> Arc<crate::runtime::ServerState> {
        let snap = sh.current.load();
        snap.backends[0]
            .balancer
            .servers()
            .iter()
            .find(|s| s.name == name)
            .unwrap()
            .clone()
    }

    fn status(r: &Response<RespBody>) -> u16 {
        r.status().as_u16()
    }

    #[test]
    fn actions_apply_through_commands() {
        let sh = shared();
        let r = apply(
            &sh,
            "admin",
            br#"{"backend":"b","servers":["s1","s2"],"action":"drain"}"#,
        );
        assert_eq!(status(&r), 200);
        assert_eq!(server(&sh, "s1").admin(), AdminState::Drain);
        assert_eq!(server(&sh, "s2").admin(), AdminState::Drain);
        let r = apply(
            &sh,
            "admin",
            br#"{"backend":"b","server":"s1","action":"maint"}"#,
        );
        assert_eq!(status(&r), 200);
        assert_eq!(server(&sh, "s1").admin(), AdminState::Maint);
        let r = apply(
            &sh,
            "admin",
            br#"{"backend":"b","server":"s1","action":"ready"}"#,
        );
        assert_eq!(status(&r), 200);
        assert_eq!(server(&sh, "s1").admin(), AdminState::Ready);
        let r = apply(
            &sh,
            "admin",
            br#"{"backend":"b","server":"s2","action":"weight","weight":7}"#,
        );
        assert_eq!(status(&r), 200);
        assert_eq!(server(&sh, "s2").weight(), 7);
        let body = r.into_body().into_full().unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["applied"], json!([{"backend": "b", "server": "s2"}]));
        assert_eq!(v["weight"], 7);
    }

    #[test]
    fn mistakes_are_named_and_change_nothing() {
        let sh = shared();
        for (body, want) in [
            (
                &br#"{"backend":"x","server":"s1","action":"drain"}"#[..],
                404,
            ),
            (
                br#"{"backend":"b","servers":["s1","nope"],"action":"drain"}"#,
                404,
            ),
            (
                br#"{"backend":"b","server":"s1","action":"weight","weight":257}"#,
                400,
            ),
            (
                br#"{"backend":"b","server":"s1","action":"weight","weight":-1}"#,
                400,
            ),
            (br#"{"backend":"b","server":"s1","action":"weight"}"#, 400),
            (br#"{"backend":"b","server":"s1","action":"explode"}"#, 400),
            (br#"{"backend":"b","action":"drain"}"#, 400),
            (br#"{"backend":"b","servers":[],"action":"drain"}"#, 400),
            (
                br#"{"backend":"b","server":"s1","servers":["s2"],"action":"drain"}"#,
                400,
            ),
            (br#"{"server":"s1","action":"drain"}"#, 400),
            (b"backend=b&server=s1&action=drain", 400),
        ] {
            let r = apply(&sh, "admin", body);
            assert_eq!(status(&r), want, "{}", String::from_utf8_lossy(body));
        }
        // The valid s1 of the request naming `nope` was left alone.
        assert_eq!(server(&sh, "s1").admin(), AdminState::Ready);
        assert_eq!(server(&sh, "s1").weight(), 1);
        let r = apply(
            &sh,
            "admin",
            br#"{"backend":"b","servers":["s1","nope"],"action":"drain"}"#,
        );
        let v: Value = serde_json::from_slice(&r.into_body().into_full().unwrap()).unwrap();
        assert_eq!(v["error"]["message"], "Backend 'b' has no server 'nope'.");
    }
}
