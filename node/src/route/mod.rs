//! Content switching: which backend serves a request.
//!
//! Rules are evaluated in order and the first whose conditions all hold wins;
//! the frontend's default backend takes the rest. Conditions are compiled in
//! the config (regexes built, backends resolved to indices), so evaluating
//! one allocates nothing.

use std::net::IpAddr;

use http::request::Parts;

use crate::config::{Condition, Expr, Frontend, IntFetch};

/// The request facts conditions look at.
pub struct Facts<'a> {
    pub parts: &'a Parts,
    pub src: IpAddr,
    /// The body's model, when some rule needed it and the body had one.
    pub model: Option<&'a str>,
    /// The stick-table entries the request tracks (`scN_*` fetches).
    pub tracked: Option<&'a crate::stick::Tracked>,
}

impl Facts<'_> {
    /// `Host` header, or the h2 `:authority`, without the port.
    fn host(&self) -> Option<&str> {
        let raw = self
            .parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| self.parts.uri.authority().map(|a| a.as_str()))?;
        Some(strip_port(raw))
    }

    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.parts.uri.query()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then_some(v)
        })
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn holds(c: &Condition, f: &Facts) -> bool {
    match c {
        Condition::Host(m) => f.host().is_some_and(|h| {
            // Host names compare case-insensitively; the pattern is lowercase.
            if h.bytes().any(|b| b.is_ascii_uppercase()) {
                m.matches(&h.to_ascii_lowercase())
            } else {
                m.matches(h)
            }
        }),
        Condition::Path(m) => m.matches(f.parts.uri.path()),
        Condition::Method(meth) => f.parts.method == *meth,
        Condition::Header(name, m) => f
            .parts
            .headers
            .get_all(name)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| m.matches(v))),
        Condition::HeaderValues(name, m) => f.parts.headers.get_all(name).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                matches!(m, crate::config::Match::Found)
                    || v.split(',')
                        .any(|item| m.matches(item.trim_matches([' ', '\t'])))
            })
        }),
        Condition::Query(name, m) => f.query_param(name).is_some_and(|v| m.matches(v)),
        Condition::Src(nets) => nets.iter().any(|n| n.contains(f.src)),
        Condition::Model(m) => f.model.is_some_and(|v| m.matches(v)),
        Condition::QueryString(m) => f.parts.uri.query().is_some_and(|q| m.matches(q)),
        // An absent fetch (nothing tracked, data not stored) never matches,
        // as in HAProxy.
        Condition::Int(IntFetch::StickCounter { sc, data }, op, n) => f
            .tracked
            .and_then(|t| t.get(*sc, *data))
            .is_some_and(|v| op.holds(v, *n)),
        Condition::Int(IntFetch::SslHelloType, ..) => false,
        // Content of a `mode tcp` connection: absent in HTTP.
        Condition::Sni(_) => false,
    }
}

/// Evaluates a condition expression; allocates nothing (except to lowercase
/// a mixed-case Host).
pub fn eval(e: &Expr, f: &Facts) -> bool {
    match e {
        Expr::Test(c) => holds(c, f),
        Expr::Not(e) => !eval(e, f),
        Expr::All(v) => v.iter().all(|e| eval(e, f)),
        Expr::Any(v) => v.iter().any(|e| eval(e, f)),
    }
}

/// The backend index for this request, or `None` when nothing matches and
/// there is no default backend.
pub fn select(fe: &Frontend, facts: &Facts) -> Option<usize> {
    fe.routes
        .iter()
        .find(|r| eval(&r.cond, facts))
        .map(|r| r.backend)
        .or(fe.default_backend)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::native::load_str;

    fn frontend(routes: &str) -> Frontend {
        let text = format!(
            r#"
[[frontend]]
name = "f"
bind = ["127.0.0.1:1"]
{routes}
[[backend]]
name = "a"
[[backend]]
name = "b"
[[backend]]
name = "c"
"#
        );
        load_str("t.toml", &text, std::path::Path::new("."))
            .unwrap()
            .frontends
            .remove(0)
    }

    fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn pick(fe: &Frontend, parts: &Parts, src: &str, model: Option<&str>) -> Option<usize> {
        select(
            fe,
            &Facts {
                parts,
                src: src.parse().unwrap(),
                model,
                tracked: None,
            },
        )
    }

    #[test]
    fn model_glob_prefix_exact_and_default() {
        let fe = frontend(
            r#"default_backend = "c"
[[frontend.route]]
backend = "a"
model = "claude-*"
[[frontend.route]]
backend = "b"
model_prefix = "gpt-"
[[frontend.route]]
backend = "c"
model = "llama"
"#,
        );
        let p = req("POST", "/v1/chat/completions", &[]);
        assert_eq!(pick(&fe, &p, "1.1.1.1", Some("claude-3-opus")), Some(0));
        assert_eq!(pick(&fe, &p, "1.1.1.1", Some("gpt-4o")), Some(1));
        assert_eq!(pick(&fe, &p, "1.1.1.1", Some("mistral")), Some(2));
        assert_eq!(pick(&fe, &p, "1.1.1.1", None), Some(2));
    }

    #[test]
    fn host_path_method_header_query_src() {
        let fe = frontend(
            r#"
[[frontend.route]]
backend = "a"
host = "api.example.com"
path_prefix = "/v1/"
method = "POST"
[[frontend.route]]
backend = "b"
header = { name = "x-tenant", regex = "^team-[0-9]+$" }
[[frontend.route]]
backend = "c"
query = { name = "beta", value = "1" }
src = ["10.0.0.0/8", "::1"]
"#,
        );
        let p = req("POST", "/v1/x", &[("host", "API.example.com:8080")]);
        assert_eq!(pick(&fe, &p, "1.1.1.1", None), Some(0));
        let p = req("GET", "/v1/x", &[("host", "api.example.com")]);
        assert_eq!(pick(&fe, &p, "1.1.1.1", None), None);
        let p = req("GET", "/", &[("x-tenant", "team-42")]);
        assert_eq!(pick(&fe, &p, "1.1.1.1", None), Some(1));
        let p = req("GET", "/?a=2&beta=1", &[]);
        assert_eq!(pick(&fe, &p, "10.9.9.9", None), Some(2));
        assert_eq!(pick(&fe, &p, "::1", None), Some(2));
        assert_eq!(pick(&fe, &p, "11.0.0.1", None), None);
    }

    #[test]
    fn h2_authority_counts_as_host() {
        let fe = frontend("[[frontend.route]]\nbackend = \"b\"\nhost = \"h.example\"\n");
        let p = req("GET", "https://h.example:443/x", &[]);
        assert_eq!(pick(&fe, &p, "1.1.1.1", None), Some(1));
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("a.b"), "a.b");
    }
}
