//! Finds the top-level `"model"` string of a JSON request body without
//! parsing it.
//!
//! The scanner is resumable: feed it the body as it arrives and it picks up
//! where it stopped, so a body is read only until the model is known and
//! every byte is looked at once. It tracks just enough JSON structure
//! (nesting depth, strings and escapes, key/value position in the top-level
//! object) to tell the top-level `model` key from a `"model"` appearing in a
//! message or a nested object.

use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Before the opening `{`.
    Start,
    /// In the top-level object, where a key may come.
    Key,
    /// After a top-level key, before `:`.
    Colon,
    /// After `:`, where the value starts.
    Value,
    /// Inside or after a value we do not care about.
    Skip,
}

/// Outcome of scanning the bytes seen so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// Need more bytes.
    Pending,
    /// The raw (still escaped) bytes of the model value, as a range of the body.
    Found(Range<usize>),
    /// The body is not a JSON object, or its top-level object has no
    /// string `model` (whatever comes next cannot change that).
    Absent,
}

#[derive(Debug, Clone)]
pub struct ModelScanner {
    pos: usize,
    depth: u32,
    expect: Expect,
    in_string: bool,
    escape: bool,
    string_start: usize,
    /// The string being read is a top-level key / the model value.
    string_is_key: bool,
    string_is_model: bool,
    key_is_model: bool,
}

impl Default for ModelScanner {
    fn default() -> Self {
        ModelScanner {
            pos: 0,
            depth: 0,
            expect: Expect::Start,
            in_string: false,
            escape: false,
            string_start: 0,
            string_is_key: false,
            string_is_model: false,
            key_is_model: false,
        }
    }
}

impl ModelScanner {
    /// Scans `buf` — the whole body received so far, which only ever grows —
    /// from where the previous call stopped.
    pub fn scan(&mut self, buf: &[u8]) -> Scan {
        while self.pos < buf.len() {
            if self.in_string && !self.escape {
                // Inside a string only `"` and `\` matter: jump to the next
                // one (SIMD memchr) instead of stepping through prompt text.
                match memchr::memchr2(b'"', b'\\', &buf[self.pos..]) {
                    Some(k) => self.pos += k,
                    None => {
                        self.pos = buf.len();
                        return Scan::Pending;
                    }
                }
            }
            let i = self.pos;
            let c = buf[i];
            self.pos += 1;
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if c == b'\\' {
                    self.escape = true;
                } else if c == b'"' {
                    self.in_string = false;
                    let content = self.string_start..i;
                    if self.string_is_model {
                        return Scan::Found(content);
                    }
                    if self.string_is_key {
                        self.key_is_model = &buf[content] == b"model";
                        self.expect = Expect::Colon;
                    }
                }
                continue;
            }
            match c {
                b' ' | b'\t' | b'\r' | b'\n' => {}
                b'"' => {
                    self.in_string = true;
                    self.string_start = i + 1;
                    self.string_is_key = self.depth == 1 && self.expect == Expect::Key;
                    self.string_is_model =
                        self.depth == 1 && self.expect == Expect::Value && self.key_is_model;
                    if self.depth == 1 && self.expect == Expect::Value {
                        self.expect = Expect::Skip;
                    }
                }
                b'{' | b'[' => {
                    if self.expect == Expect::Start {
                        if c != b'{' {
                            return Scan::Absent;
                        }
                        self.expect = Expect::Key;
                    } else if self.depth == 1 {
                        self.expect = Expect::Skip;
                    }
                    self.depth += 1;
                }
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Scan::Absent;
                    }
                }
                b':' if self.depth == 1 && self.expect == Expect::Colon => {
                    self.expect = Expect::Value;
                }
                b',' if self.depth == 1 => {
                    self.expect = Expect::Key;
                    self.key_is_model = false;
                }
                _ => {
                    if self.expect == Expect::Start {
                        return Scan::Absent;
                    }
                    if self.depth == 1 && self.expect == Expect::Value {
                        // A number, true/false/null: not a string model.
                        self.expect = Expect::Skip;
                    }
                }
            }
        }
        Scan::Pending
    }
}

/// The model name from its raw JSON string bytes, unescaped. `None` when the
/// escapes are invalid or the result is not UTF-8.
pub fn decode(raw: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    if !raw.contains(&b'\\') {
        return std::str::from_utf8(raw)
            .ok()
            .map(std::borrow::Cow::Borrowed);
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice::<String>(&quoted)
        .ok()
        .map(std::borrow::Cow::Owned)
}

/// Encodes a model name as the inside of a JSON string.
pub fn encode(model: &str) -> String {
    let quoted = serde_json::to_string(model).unwrap_or_else(|_| "\"\"".into());
    quoted[1..quoted.len() - 1].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(body: &str) -> Option<String> {
        let mut s = ModelScanner::default();
        match s.scan(body.as_bytes()) {
            Scan::Found(r) => decode(&body.as_bytes()[r]).map(|c| c.into_owned()),
            _ => None,
        }
    }

    #[test]
    fn top_level_model() {
        assert_eq!(
            find(r#"{"model":"gpt-4o","messages":[]}"#).as_deref(),
            Some("gpt-4o")
        );
        assert_eq!(
            find(r#"{ "messages": [{"role":"user","content":"x"}], "model" : "claude-3" }"#)
                .as_deref(),
            Some("claude-3")
        );
    }

    #[test]
    fn ignores_nested_and_string_lookalikes() {
        let body = r#"{"messages":[{"model":"nested","content":"\"model\":\"fake\""}],"meta":{"model":"inner"},"model":"real"}"#;
        assert_eq!(find(body).as_deref(), Some("real"));
        assert_eq!(find(r#"{"x":"model","y":"model"}"#), None);
        // A value equal to "model" is not a key.
        assert_eq!(find(r#"{"a":"model","b":1}"#), None);
    }

    #[test]
    fn non_string_or_absent() {
        assert_eq!(find(r#"{"model":5,"x":"model"}"#), None);
        assert_eq!(find(r#"{"model":null}"#), None);
        assert_eq!(find(r#"["model","x"]"#), None);
        assert_eq!(find("not json"), None);
        let mut s = ModelScanner::default();
        assert_eq!(s.scan(br#"{"a":1}"#), Scan::Absent);
    }

    #[test]
    fn escapes_are_decoded() {
        assert_eq!(find(r#"{"model":"a\"b\u0041"}"#).as_deref(), Some("a\"bA"));
        assert_eq!(find(r#"{"k\"ey":"v","model":"m"}"#).as_deref(), Some("m"));
    }

    #[test]
    fn resumes_across_every_split() {
        let body = br#"{"messages":[{"content":"{\"model\":\"no\"}"}],"model":"gpt-4o-mini","stream":true}"#;
        for split in 0..body.len() {
            let mut s = ModelScanner::default();
            let first = s.scan(&body[..split]);
            let r = match first {
                Scan::Found(r) => r,
                Scan::Pending => match s.scan(body) {
                    Scan::Found(r) => r,
                    other => panic!("split {split}: {other:?}"),
                },
                Scan::Absent => panic!("split {split}: absent"),
            };
            assert_eq!(&body[r], b"gpt-4o-mini", "split {split}");
        }
    }

    #[test]
    fn encode_round_trips() {
        assert_eq!(encode("gpt-4o"), "gpt-4o");
        assert_eq!(encode("a\"b"), "a\\\"b");
    }
}
