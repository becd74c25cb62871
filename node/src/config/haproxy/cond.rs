//! ACLs and conditions: `acl NAME FETCH [flags] [-m METHOD] VALUES…` and
//! `if|unless COND` where COND is terms separated by `||` (or `or`), each
//! term a run of (possibly `!`-negated) named ACLs or anonymous `{ … }` ACLs
//! that must all hold. Everything compiles to [`Expr`]; a named ACL declared
//! on several lines is the OR of those lines, as in HAProxy.

use std::collections::HashMap;

use http::HeaderName;

use super::lexer::Word;
use crate::config::model::*;
use crate::config::native::parse_ipnet;

/// Named ACLs of one section.
pub type Acls = HashMap<String, Vec<Expr>>;

/// How values are compared (`-m`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Meth {
    Str,
    Beg,
    End,
    Sub,
    Reg,
    Found,
}

enum Fetch {
    Path,
    Header(HeaderName),
    Method,
    Src,
    UrlParam(String),
    Query,
    Model,
    Sc(u8, ScData),
    Bool(bool),
    Sni,
    SslHelloType,
}

/// Parses one ACL test: `FETCH [-i] [-m METH] [--] VALUES…`.
pub fn parse_test(words: &[Word]) -> Result<Expr, String> {
    let Some(first) = words.first() else {
        return Err("missing fetch in ACL".into());
    };
    // HAProxy's lexer drops the quotes of `json_query('$.model')`; accept
    // the written form with or without them.
    let fetch_text: String = first
        .text
        .chars()
        .filter(|c| *c != '\'' && *c != '"')
        .collect();
    let (fetch, mut meth) = fetch_of(&fetch_text)?;
    let mut icase = false;
    let mut i = 1;
    while i < words.len() && words[i].text.starts_with('-') && !words[i].quoted {
        match words[i].text.as_str() {
            "-i" => icase = true,
            "-m" => {
                i += 1;
                let m = words.get(i).map(|w| w.text.as_str()).unwrap_or("");
                meth = match m {
                    "str" => Meth::Str,
                    "beg" => Meth::Beg,
                    "end" => Meth::End,
                    "sub" => Meth::Sub,
                    "reg" => Meth::Reg,
                    "found" => Meth::Found,
                    "" => return Err("'-m' needs a match method".into()),
                    other => {
                        return Err(format!(
                            "match method '-m {other}' is not supported (use str, beg, end, sub, reg or found)"
                        ))
                    }
                };
            }
            "--" => {
                i += 1;
                break;
            }
            "-f" => return Err("ACL pattern files ('-f') are not supported".into()),
            other => {
                return Err(format!(
                    "ACL flag '{other}' is not supported (use -i, -m or --)"
                ))
            }
        }
        i += 1;
    }
    let values: Vec<&str> = words[i..].iter().map(|w| w.text.as_str()).collect();
    let name = &first.text;
    match fetch {
        Fetch::Bool(b) => Ok(if b {
            Expr::All(vec![])
        } else {
            Expr::Any(vec![])
        }),
        Fetch::Sc(sc, data) => {
            let (op, n) = int_match(name, &values)?;
            Ok(Expr::Test(Condition::Int(
                IntFetch::StickCounter { sc, data },
                op,
                n,
            )))
        }
        Fetch::SslHelloType => {
            let (op, n) = int_match(name, &values)?;
            Ok(Expr::Test(Condition::Int(IntFetch::SslHelloType, op, n)))
        }
        Fetch::Src => {
            if values.is_empty() {
                return Err(format!("'{name}' needs at least one address or network"));
            }
            let nets = values
                .iter()
                .map(|v| parse_ipnet(v))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Expr::Test(Condition::Src(nets)))
        }
        Fetch::Method => {
            if values.is_empty() {
                return Err("'method' needs at least one method".into());
            }
            let mut any = Vec::new();
            for v in &values {
                let m = http::Method::from_bytes(v.as_bytes())
                    .map_err(|_| format!("invalid method '{v}'"))?;
                any.push(Expr::Test(Condition::Method(m)));
            }
            Ok(one_or_any(any))
        }
        _ => {
            let matches = if meth == Meth::Found {
                if !values.is_empty() {
                    return Err(format!("'{name} -m found' takes no values"));
                }
                vec![Match::Found]
            } else {
                if values.is_empty() {
                    return Err(format!("'{name}' needs at least one value (or '-m found')"));
                }
                values
                    .iter()
                    .map(|v| string_match(meth, icase, v))
                    .collect::<Result<Vec<_>, _>>()?
            };
            let any = matches
                .into_iter()
                .map(|m| {
                    Expr::Test(match &fetch {
                        Fetch::Path => Condition::Path(m),
                        Fetch::Header(h) => Condition::HeaderValues(h.clone(), m),
                        Fetch::UrlParam(p) => Condition::Query(p.clone(), m),
                        Fetch::Query => Condition::QueryString(m),
                        Fetch::Sni => Condition::Sni(m),
                        _ => Condition::Model(m),
                    })
                })
                .collect();
            Ok(one_or_any(any))
        }
    }
}

fn one_or_any(mut v: Vec<Expr>) -> Expr {
    if v.len() == 1 {
        v.remove(0)
    } else {
        Expr::Any(v)
    }
}

fn fetch_of(f: &str) -> Result<(Fetch, Meth), String> {
    let arg = |prefix: &str| -> Option<String> {
        f.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(')'))
            .map(|a| a.trim().to_owned())
    };
    let header = |a: String| {
        HeaderName::from_bytes(a.as_bytes()).map_err(|_| format!("invalid header name in '{f}'"))
    };
    Ok(match f {
        "path" => (Fetch::Path, Meth::Str),
        "path_beg" => (Fetch::Path, Meth::Beg),
        "path_end" => (Fetch::Path, Meth::End),
        "path_sub" => (Fetch::Path, Meth::Sub),
        "path_reg" => (Fetch::Path, Meth::Reg),
        "method" => (Fetch::Method, Meth::Str),
        "src" => (Fetch::Src, Meth::Str),
        "query" => (Fetch::Query, Meth::Str),
        "req.ssl_sni" | "req_ssl_sni" => (Fetch::Sni, Meth::Str),
        "req.ssl_hello_type" | "req_ssl_hello_type" => (Fetch::SslHelloType, Meth::Str),
        "always_true" => (Fetch::Bool(true), Meth::Str),
        "always_false" => (Fetch::Bool(false), Meth::Str),
        "req.body,json_query($.model)" => (Fetch::Model, Meth::Str),
        _ => {
            for (p, m) in [
                ("hdr(", Meth::Str),
                ("req.hdr(", Meth::Str),
                ("hdr_beg(", Meth::Beg),
                ("hdr_end(", Meth::End),
                ("hdr_sub(", Meth::Sub),
                ("hdr_reg(", Meth::Reg),
            ] {
                if let Some(a) = arg(p) {
                    return Ok((Fetch::Header(header(a)?), m));
                }
            }
            for p in ["url_param(", "urlp("] {
                if let Some(a) = arg(p) {
                    if a.is_empty() {
                        return Err(format!("'{f}' needs a parameter name"));
                    }
                    return Ok((Fetch::UrlParam(a), Meth::Str));
                }
            }
            if let Some(call) = f.strip_prefix("sc_") {
                // `sc_<data>(N)`: the same fetch as `scN_<data>`.
                let parsed = call
                    .strip_suffix(')')
                    .and_then(|c| c.split_once('('))
                    .map(|(data, arg)| (data, arg.trim()));
                let Some((data, arg)) = parsed else {
                    return Err(format!(
                        "fetch '{f}' needs the counter number (e.g. sc_conn_cur(0))"
                    ));
                };
                let sc = match arg {
                    "0" => 0,
                    "1" => 1,
                    "2" => 2,
                    a if a.contains(',') => return Err(format!("fetch '{f}': a table argument is not supported (track into that table and use scN_{data})")),
                    _ => return Err(format!("fetch '{f}': the counter number must be 0, 1 or 2")),
                };
                let Some(data) = ScData::from_fetch(data) else {
                    return Err(format!("fetch '{f}' is not supported (use sc_<data>(N) with a stick-table data name, e.g. sc_conn_cur(0), sc_conn_rate(0), sc_http_req_rate(1))"));
                };
                return Ok((Fetch::Sc(sc, data), Meth::Str));
            }
            if let Some(rest) = f.strip_prefix("sc") {
                // `get` rather than `split_at`: the text may not be ASCII.
                let (n, data) = (rest.get(..1).unwrap_or(""), rest.get(1..).unwrap_or(""));
                let sc = match n {
                    "0" => 0,
                    "1" => 1,
                    "2" => 2,
                    _ => return Err(format!("fetch '{f}' is not supported")),
                };
                let Some(data) = data.strip_prefix('_').and_then(ScData::from_fetch) else {
                    return Err(format!("fetch '{f}' is not supported (use scN_ with a stick-table data name, e.g. sc0_conn_rate, sc0_http_req_rate, sc0_conn_cur, sc0_gpc0, sc0_tokens_rate)"));
                };
                return Ok((Fetch::Sc(sc, data), Meth::Str));
            }
            if f.starts_with("req.body") {
                return Err(format!(
                    "fetch '{f}' is not supported (the body is read only as req.body,json_query('$.model'))"
                ));
            }
            return Err(format!("fetch '{f}' is not supported"));
        }
    })
}

fn string_match(meth: Meth, icase: bool, v: &str) -> Result<Match, String> {
    if icase {
        let esc = regex::escape(v);
        let re = match meth {
            Meth::Str => format!("(?i)^{esc}$"),
            Meth::Beg => format!("(?i)^{esc}"),
            Meth::End => format!("(?i){esc}$"),
            Meth::Sub => format!("(?i){esc}"),
            _ => format!("(?i){v}"),
        };
        return regex::Regex::new(&re)
            .map(Match::Regex)
            .map_err(|e| format!("invalid regex '{v}': {e}"));
    }
    Ok(match meth {
        Meth::Str => Match::Exact(v.to_owned()),
        Meth::Beg => Match::Prefix(v.to_owned()),
        Meth::End => Match::Suffix(v.to_owned()),
        Meth::Sub => Match::Contains(v.to_owned()),
        Meth::Reg => {
            Match::Regex(regex::Regex::new(v).map_err(|e| format!("invalid regex '{v}': {e}"))?)
        }
        Meth::Found => Match::Found,
    })
}

/// `gt 100`, `ge 1`, `eq 0`, `lt 5`, `le 5`, or a bare number (equality).
fn int_match(name: &str, values: &[&str]) -> Result<(IntOp, i64), String> {
    let usage = || format!("'{name}' needs an integer comparison such as 'gt 100'");
    let (op, n) = match values {
        [n] => (IntOp::Eq, *n),
        [op, n] => (
            match *op {
                "eq" => IntOp::Eq,
                "gt" => IntOp::Gt,
                "ge" => IntOp::Ge,
                "lt" => IntOp::Lt,
                "le" => IntOp::Le,
                _ => {
                    return Err(format!(
                        "unknown integer operator '{op}' (use eq, gt, ge, lt or le)"
                    ))
                }
            },
            *n,
        ),
        _ => return Err(usage()),
    };
    let n = n
        .parse::<i64>()
        .map_err(|_| format!("'{n}' is not an integer"))?;
    Ok((op, n))
}

/// HAProxy's predefined ACLs.
fn predefined(name: &str) -> Option<Expr> {
    let method = |m: &str| {
        http::Method::from_bytes(m.as_bytes())
            .ok()
            .map(|m| Expr::Test(Condition::Method(m)))
    };
    Some(match name {
        "TRUE" => Expr::All(vec![]),
        "FALSE" => Expr::Any(vec![]),
        "LOCALHOST" => Expr::Test(Condition::Src(vec![
            parse_ipnet("127.0.0.0/8").ok()?,
            parse_ipnet("::1").ok()?,
        ])),
        "METH_GET" => Expr::Any(vec![method("GET")?, method("HEAD")?]),
        "METH_POST" => method("POST")?,
        "METH_PUT" => method("PUT")?,
        "METH_DELETE" => method("DELETE")?,
        "METH_OPTIONS" => method("OPTIONS")?,
        "METH_HEAD" => method("HEAD")?,
        _ => return None,
    })
}

/// Parses the words after `if` / `unless`.
pub fn parse_cond(words: &[Word], acls: &Acls) -> Result<Expr, String> {
    if words.is_empty() {
        return Err("missing condition after 'if'/'unless'".into());
    }
    let mut terms: Vec<Vec<Expr>> = vec![Vec::new()];
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        if w.is("||") || w.is("or") {
            if terms.last().is_some_and(Vec::is_empty) {
                return Err("'||' without a condition before it".into());
            }
            terms.push(Vec::new());
            i += 1;
            continue;
        }
        let (neg, text, brace) = if w.is("!") {
            i += 1;
            match words.get(i) {
                Some(n) => (true, n.text.as_str(), n.is("{")),
                None => return Err("'!' at the end of the condition".into()),
            }
        } else if !w.quoted && w.text.starts_with('!') {
            (true, &w.text[1..], w.text == "!{")
        } else {
            (false, w.text.as_str(), w.is("{"))
        };
        let e = if brace {
            let start = i + 1;
            let Some(len) = words[start..].iter().position(|w| w.is("}")) else {
                return Err("'{' without a matching '}'".into());
            };
            let e = parse_test(&words[start..start + len])?;
            i = start + len + 1;
            e
        } else {
            i += 1;
            match acls.get(text) {
                Some(v) => one_or_any(v.clone()),
                None => match predefined(text) {
                    Some(e) => e,
                    None => {
                        return Err(format!(
                            "no ACL named '{text}' is declared before this line"
                        ))
                    }
                },
            }
        };
        let e = if neg { Expr::Not(Box::new(e)) } else { e };
        if let Some(t) = terms.last_mut() {
            t.push(e);
        }
    }
    if terms.last().is_some_and(Vec::is_empty) {
        return Err("'||' at the end of the condition".into());
    }
    let mut any: Vec<Expr> = terms.into_iter().map(one_or_all).collect();
    Ok(if any.len() == 1 {
        any.remove(0)
    } else {
        Expr::Any(any)
    })
}

fn one_or_all(mut v: Vec<Expr>) -> Expr {
    if v.len() == 1 {
        v.remove(0)
    } else {
        Expr::All(v)
    }
}

/// Splits `ACTION ARGS… [if|unless COND…]`; returns the args and the
/// compiled condition (`unless` negated).
pub fn split_cond<'a>(
    words: &'a [Word],
    acls: &Acls,
) -> Result<(&'a [Word], Option<Expr>), String> {
    match words.iter().position(|w| w.is("if") || w.is("unless")) {
        None => Ok((words, None)),
        Some(p) => {
            let e = parse_cond(&words[p + 1..], acls)?;
            let e = if words[p].is("unless") {
                Expr::Not(Box::new(e))
            } else {
                e
            };
            Ok((&words[..p], Some(e)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::lexer::lex;
    use super::*;
    use crate::route::{eval, Facts};

    fn words(s: &str) -> Vec<Word> {
        lex(s).0.remove(0).words
    }

    fn check(
        cond: &str,
        acls: &Acls,
        method: &str,
        uri: &str,
        hdrs: &[(&str, &str)],
        src: &str,
        model: Option<&str>,
    ) -> bool {
        let e = parse_cond(&words(cond), acls).unwrap();
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in hdrs {
            b = b.header(*k, *v);
        }
        let parts = b.body(()).unwrap().into_parts().0;
        eval(
            &e,
            &Facts {
                parts: &parts,
                src: src.parse().unwrap(),
                model,
                tracked: None,
            },
        )
    }

    #[test]
    fn operators_and_anonymous_acls() {
        let mut acls = Acls::new();
        acls.insert(
            "api".into(),
            vec![parse_test(&words("path_beg /v1/")).unwrap()],
        );
        acls.entry("api".into())
            .or_default()
            .push(parse_test(&words("path_beg /v2/")).unwrap());
        acls.insert(
            "post".into(),
            vec![parse_test(&words("method POST")).unwrap()],
        );
        let c = |cond: &str, m: &str, u: &str| check(cond, &acls, m, u, &[], "10.0.0.1", None);
        assert!(c("api post", "POST", "/v1/x"));
        assert!(c("api post", "POST", "/v2/x"));
        assert!(!c("api post", "GET", "/v1/x"));
        assert!(c("api !post", "GET", "/v1/x"));
        assert!(c("! post || { path /health }", "GET", "/health"));
        assert!(!c("post || { path /health }", "GET", "/x"));
        assert!(c(
            "{ path_end .json } { query -m sub a=1 }",
            "GET",
            "/f.json?b=2&a=1"
        ));
        assert!(c("{ url_param(x) -m found }", "GET", "/p?x"));
        assert!(!c("{ url_param(x) -m found }", "GET", "/p?y=1"));
        assert!(c("{ src 10.0.0.0/8 } LOCALHOST || TRUE", "GET", "/"));
        assert!(!c("FALSE", "GET", "/"));
        assert!(c("{ path_reg ^/v[0-9]+/chat }", "GET", "/v1/chat"));
        assert!(!c("{ sc0_conn_rate gt 100 }", "GET", "/"));
        assert!(c("!{ sc0_http_req_rate gt 100 }", "GET", "/"));
    }

    #[test]
    fn headers_case_and_model() {
        let acls = Acls::new();
        let hd = [("x-tenant", "Team-A"), ("host", "api.example.com")];
        let list = [("x-tier", "gold, silver"), ("x-tier", "bronze")];
        for (cond, want) in [
            ("{ hdr(x-tier) silver }", true),
            ("{ hdr(x-tier) bronze }", true),
            ("{ hdr(x-tier) gold, }", false),
            ("{ hdr_beg(x-tier) sil }", true),
            ("{ hdr(x-tier) -m found }", true),
            ("{ hdr(x-none) -m found }", false),
        ] {
            assert_eq!(
                check(cond, &acls, "GET", "/", &list, "1.1.1.1", None),
                want,
                "{cond}"
            );
        }
        assert!(check(
            "{ hdr(x-tenant) -i team-a }",
            &acls,
            "GET",
            "/",
            &hd,
            "1.1.1.1",
            None
        ));
        assert!(!check(
            "{ hdr(x-tenant) team-a }",
            &acls,
            "GET",
            "/",
            &hd,
            "1.1.1.1",
            None
        ));
        assert!(check(
            "{ hdr_beg(host) api. } { req.hdr(X-Tenant) -m beg Team }",
            &acls,
            "GET",
            "/",
            &hd,
            "1.1.1.1",
            None
        ));
        let e = parse_cond(
            &words("{ req.body,json_query('$.model') -m beg claude- }"),
            &acls,
        )
        .unwrap();
        assert!(e.needs_model());
        assert!(check(
            "{ req.body,json_query('$.model') -m beg claude- }",
            &acls,
            "POST",
            "/",
            &[],
            "1.1.1.1",
            Some("claude-3")
        ));
    }

    #[test]
    fn errors() {
        let acls = Acls::new();
        let e = |s: &str| parse_cond(&words(s), &acls).unwrap_err();
        assert_eq!(
            e("nope"),
            "no ACL named 'nope' is declared before this line"
        );
        assert_eq!(e("{ path /x"), "'{' without a matching '}'");
        assert_eq!(e("{ path /x } ||"), "'||' at the end of the condition");
        assert_eq!(
            e("{ weird_fetch x }"),
            "fetch 'weird_fetch' is not supported"
        );
        assert_eq!(
            e("{ path -m dom x }"),
            "match method '-m dom' is not supported (use str, beg, end, sub, reg or found)"
        );
        assert_eq!(
            e("{ sc0_conn_rate zz 1 }"),
            "unknown integer operator 'zz' (use eq, gt, ge, lt or le)"
        );
        assert_eq!(
            e("{ path }"),
            "'path' needs at least one value (or '-m found')"
        );
        assert!(e("{ path_reg ( }").starts_with("invalid regex"));
    }
}
