//! Health-check syntax shared by both readers: `http-check expect`
//! arguments and status lists.

use http::HeaderName;

use super::model::{Expect, ExpectTest, Match};

/// `200`, `200-399`, `200-299,404` (HAProxy 2.2+ status lists).
pub fn parse_status_list(s: &str) -> Result<Vec<(u16, u16)>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let code = |c: &str| {
            c.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| format!("invalid status '{c}' in '{s}' (expected 100..599)"))
        };
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (code(a)?, code(b)?),
            None => {
                let c = code(part)?;
                (c, c)
            }
        };
        if lo > hi {
            return Err(format!("empty status range '{part}' in '{s}'"));
        }
        out.push((lo, hi));
    }
    Ok(out)
}

/// The arguments of `http-check expect` after the keyword:
/// `[!] status CODES | rstatus RE | string S | rstring RE |
/// hdr name N [-m str|beg|end|sub|reg] [value V [-m …]]`.
pub fn parse_expect(args: &[&str]) -> Result<Expect, String> {
    let (negate, args) = match args.first() {
        Some(&"!") => (true, &args[1..]),
        _ => (false, args),
    };
    let usage = "'http-check expect' needs [!] status|rstatus|string|rstring|hdr and a value";
    let (Some(kind), Some(value)) = (args.first(), args.get(1)) else {
        return Err(usage.into());
    };
    let only = |n: usize| {
        if args.len() > n {
            Err(format!(
                "'http-check expect {kind}' takes one value (quote it if it has spaces)"
            ))
        } else {
            Ok(())
        }
    };
    let re = |p: &str| regex::Regex::new(p).map_err(|e| format!("invalid regex '{p}': {e}"));
    let test = match *kind {
        "status" => {
            only(2)?;
            ExpectTest::Status(parse_status_list(value)?)
        }
        "rstatus" => {
            only(2)?;
            ExpectTest::RStatus(re(value)?)
        }
        "string" => {
            only(2)?;
            ExpectTest::String((*value).to_owned())
        }
        "rstring" => {
            only(2)?;
            ExpectTest::RString(re(value)?)
        }
        "hdr" => parse_hdr(&args[1..])?,
        other => {
            return Err(format!(
                "'http-check expect {other}' is not supported; {usage}"
            ))
        }
    };
    Ok(Expect { negate, test })
}

/// `name N [-m M] [value V [-m M]]`.
fn parse_hdr(a: &[&str]) -> Result<ExpectTest, String> {
    let mut i = 0;
    let mut name = None;
    let mut name_meth = None;
    let mut value = None;
    let mut value_meth = None;
    while i < a.len() {
        let arg = a.get(i + 1).copied();
        match (a[i], arg) {
            ("name", Some(n)) => name = Some(n),
            ("value", Some(v)) => value = Some(v),
            ("-m", Some(m)) if value.is_some() => value_meth = Some(m),
            ("-m", Some(m)) => name_meth = Some(m),
            (other, _) => {
                return Err(format!(
                    "'http-check expect hdr': unexpected '{other}' (use hdr name N [value V] [-m str|beg|end|sub|reg])"
                ))
            }
        }
        i += 2;
    }
    let name = name.ok_or("'http-check expect hdr' needs 'name <header>'")?;
    if name_meth.is_some_and(|m| m != "str") {
        return Err("'http-check expect hdr name … -m' other than str is not supported".into());
    }
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("invalid header name '{name}'"))?;
    let value = match value {
        None => None,
        Some(v) => Some(match value_meth.unwrap_or("str") {
            "str" => Match::Exact(v.to_owned()),
            "beg" => Match::Prefix(v.to_owned()),
            "end" => Match::Suffix(v.to_owned()),
            "sub" => Match::Contains(v.to_owned()),
            "reg" => {
                Match::Regex(regex::Regex::new(v).map_err(|e| format!("invalid regex '{v}': {e}"))?)
            }
            m => {
                return Err(format!(
                    "unknown match method '-m {m}' (use str, beg, end, sub or reg)"
                ))
            }
        }),
    };
    Ok(ExpectTest::Header { name, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lists() {
        assert_eq!(parse_status_list("200").unwrap(), vec![(200, 200)]);
        assert_eq!(
            parse_status_list("200-299, 404").unwrap(),
            vec![(200, 299), (404, 404)]
        );
        assert!(parse_status_list("2xx").is_err());
        assert!(parse_status_list("399-200").is_err());
        assert!(parse_status_list("700").is_err());
    }

    #[test]
    fn expect_forms() {
        let e = parse_expect(&["!", "string", "error"]).unwrap();
        assert!(e.negate);
        assert!(matches!(e.test, ExpectTest::String(ref s) if s == "error"));
        let e = parse_expect(&["rstatus", "^2"]).unwrap();
        assert!(matches!(e.test, ExpectTest::RStatus(_)));
        let e =
            parse_expect(&["hdr", "name", "content-type", "value", "json", "-m", "sub"]).unwrap();
        assert!(matches!(
            e.test,
            ExpectTest::Header {
                value: Some(Match::Contains(_)),
                ..
            }
        ));
        assert!(parse_expect(&["status"]).is_err());
        assert!(parse_expect(&["body", "x"]).is_err());
        assert!(parse_expect(&["rstring", "("]).is_err());
        assert!(parse_expect(&["status", "200", "extra"]).is_err());
    }
}
