//! Reading one field of a JSON request body without parsing the rest:
//! the raw bytes of a top-level member, found by walking just enough
//! structure (strings, nesting) to tell a member's key from text inside a
//! string or a nested object. Used for a token budget and for `track-sc`
//! keys taken from the body (`req.body,json_query('$.user')`).

use std::borrow::Cow;

/// The raw bytes of the value of the top-level member `key` of a JSON
/// object (a string with its quotes); the first one when repeated. `None`
/// when the body is not an object or has no such member.
pub fn member<'b>(body: &'b [u8], key: &str) -> Option<&'b [u8]> {
    members(body)
        .find(|(k, _)| *k == key.as_bytes())
        .map(|(_, v)| v)
}

/// The top-level members of a JSON object, in order: (key as written,
/// raw value). Stops at the first thing that is not well-formed.
pub fn members(body: &[u8]) -> Members<'_> {
    let i = skip_ws(body, 0);
    let open = body.get(i) == Some(&b'{');
    Members {
        body,
        i: if open { i + 1 } else { body.len() },
    }
}

pub struct Members<'b> {
    body: &'b [u8],
    i: usize,
}

impl<'b> Iterator for Members<'b> {
    type Item = (&'b [u8], &'b [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.body;
        let i = skip_ws(b, self.i);
        if b.get(i)? != &b'"' {
            self.i = b.len();
            return None;
        }
        let key_end = string_end(b, i + 1)?;
        let colon = skip_ws(b, key_end + 1);
        if b.get(colon) != Some(&b':') {
            self.i = b.len();
            return None;
        }
        let start = skip_ws(b, colon + 1);
        let end = value_end(b, start)?;
        let next = skip_ws(b, end);
        self.i = match b.get(next) {
            Some(b',') => next + 1,
            _ => b.len(),
        };
        Some((&b[i + 1..key_end], &b[start..end]))
    }
}

/// The value at a dotted path (`user`, `metadata.user_id`) as text: a
/// string unescaped, a number or boolean as written. `None` when absent,
/// `null`, an object or an array.
pub fn text_at<'b>(body: &'b [u8], path: &str) -> Option<Cow<'b, str>> {
    let mut v = body;
    for part in path.split('.') {
        v = member(v, part)?;
    }
    match v.first()? {
        b'"' => super::model::decode(&v[1..v.len() - 1]),
        b'{' | b'[' | b'n' => None,
        _ => std::str::from_utf8(v).ok().map(Cow::Borrowed),
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b
        .get(i)
        .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
    {
        i += 1;
    }
    i
}

/// The index of the `"` closing a string whose content starts at `from`.
fn string_end(body: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let k = from + memchr::memchr2(b'"', b'\\', body.get(from..)?)?;
        if body[k] == b'"' {
            return Some(k);
        }
        from = k + 2;
    }
}

/// Where the value starting at `start` ends (exclusive).
fn value_end(b: &[u8], start: usize) -> Option<usize> {
    match b.get(start)? {
        b'"' => string_end(b, start + 1).map(|e| e + 1),
        b'{' | b'[' => {
            let mut depth = 0u32;
            let mut i = start;
            loop {
                match b.get(i)? {
                    b'"' => {
                        i = string_end(b, i + 1)?;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let len = b[start..]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n'))?;
            (len > 0).then_some(start + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#" { "messages": [{"role":"user","content":"{\"user\":\"fake\"}"}],
        "model" : "gpt-4o", "max_tokens": 64, "stream": true,
        "metadata": {"user_id": "u-\u00e9", "tier": {"name": "gold"}}, "user": "alice", "temp": null } "#;

    #[test]
    fn members_at_the_top_level_only() {
        assert_eq!(member(BODY, "model"), Some(&br#""gpt-4o""#[..]));
        assert_eq!(member(BODY, "max_tokens"), Some(&b"64"[..]));
        assert_eq!(member(BODY, "user"), Some(&br#""alice""#[..]));
        assert_eq!(member(BODY, "role"), None);
        assert_eq!(member(BODY, "absent"), None);
    }

    #[test]
    fn text_at_a_path() {
        assert_eq!(text_at(BODY, "user").as_deref(), Some("alice"));
        assert_eq!(text_at(BODY, "metadata.user_id").as_deref(), Some("u-é"));
        assert_eq!(text_at(BODY, "metadata.tier.name").as_deref(), Some("gold"));
        assert_eq!(text_at(BODY, "max_tokens").as_deref(), Some("64"));
        assert_eq!(text_at(BODY, "stream").as_deref(), Some("true"));
        assert_eq!(text_at(BODY, "temp"), None);
        assert_eq!(text_at(BODY, "metadata"), None);
        assert_eq!(text_at(BODY, "messages"), None);
    }

    #[test]
    fn malformed_bodies_find_nothing() {
        for b in [
            &b""[..],
            b"[1]",
            b"{",
            br#"{"a""#,
            br#"{"a":"#,
            br#"{"a":"x"#,
            br#"{"x":1 "user":"a"}"#,
            b"not json",
        ] {
            assert_eq!(text_at(b, "user"), None, "{}", String::from_utf8_lossy(b));
            assert_eq!(text_at(b, "a.b"), None);
        }
        // A value complete before the body breaks off is read: the body
        // is not validated past what the path needs.
        assert_eq!(text_at(br#"{"a":{"b":1}"#, "a.b").as_deref(), Some("1"));
    }
}
