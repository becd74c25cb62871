//! Splits an HAProxy configuration into lines of words, the way HAProxy's
//! own parser does: words are separated by blanks; `#` starts a comment
//! unless quoted or escaped; `"…"` allows backslash escapes and `${VAR}`
//! expansion, `'…'` takes everything literally; outside quotes a backslash
//! escapes the next character (`\ `, `\#`, `\\`, `\"`, `\'`) and `\r`, `\n`,
//! `\t`, `\xHH` produce those bytes; other escapes keep their backslash. Quoted and unquoted parts next to each
//! other form one word (`a"b c"d` is `ab cd`).

/// One word of a line. `quoted` tells a literal `"{"` from the `{` that
/// opens an anonymous ACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub quoted: bool,
}

impl Word {
    pub fn is(&self, s: &str) -> bool {
        !self.quoted && self.text == s
    }
}

/// A non-empty line: its 1-based number and its words.
#[derive(Debug, Clone)]
pub struct Line {
    pub line: usize,
    pub words: Vec<Word>,
}

/// Splits `text` into lines of words; errors are `(line, message)`.
pub fn lex(text: &str) -> (Vec<Line>, Vec<(usize, String)>) {
    let mut out = Vec::new();
    let mut errs = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        match lex_line(raw) {
            Ok(words) if words.is_empty() => {}
            Ok(words) => out.push(Line { line: n, words }),
            Err(e) => errs.push((n, e)),
        }
    }
    (out, errs)
}

fn lex_line(s: &str) -> Result<Vec<Word>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(Word {
                        text: std::mem::take(&mut cur),
                        quoted,
                    });
                    in_word = false;
                    quoted = false;
                }
            }
            '#' => break,
            '\\' => {
                in_word = true;
                escape(&mut chars, &mut cur)?;
            }
            '\'' => {
                in_word = true;
                quoted = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unmatched single quote (')".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                quoted = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => escape(&mut chars, &mut cur)?,
                        Some('$') if chars.peek() == Some(&'{') => env_var(&mut chars, &mut cur)?,
                        Some(c) => cur.push(c),
                        None => return Err("unmatched double quote (\")".into()),
                    }
                }
            }
            '$' if chars.peek() == Some(&'{') => {
                in_word = true;
                env_var(&mut chars, &mut cur)?;
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(Word { text: cur, quoted });
    }
    Ok(words)
}

fn escape(
    chars: &mut std::iter::Peekable<std::str::Chars>,
    cur: &mut String,
) -> Result<(), String> {
    match chars.next() {
        Some('r') => cur.push('\r'),
        Some('n') => cur.push('\n'),
        Some('t') => cur.push('\t'),
        Some('x') => {
            let hex: String = [chars.next(), chars.next()].iter().flatten().collect();
            let b = u8::from_str_radix(&hex, 16)
                .map_err(|_| format!("invalid escape '\\x{hex}' (expected two hex digits)"))?;
            cur.push(char::from(b));
        }
        Some(c @ (' ' | '#' | '\\' | '"' | '\'' | '$')) => cur.push(c),
        // Any other escape keeps its backslash, as in HAProxy: regexes such
        // as `\.` and back-references such as `\1` pass through.
        Some(c) => {
            cur.push('\\');
            cur.push(c);
        }
        // A trailing backslash: HAProxy keeps it.
        None => cur.push('\\'),
    }
    Ok(())
}

fn env_var(
    chars: &mut std::iter::Peekable<std::str::Chars>,
    cur: &mut String,
) -> Result<(), String> {
    chars.next(); // '{'
    let mut name = String::new();
    loop {
        match chars.next() {
            Some('}') => break,
            Some(c) => name.push(c),
            None => return Err("unterminated '${' variable reference".into()),
        }
    }
    // HAProxy expands an unset variable to nothing.
    if let Ok(v) = std::env::var(&name) {
        cur.push_str(&v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        lex_line(s).unwrap().into_iter().map(|w| w.text).collect()
    }

    #[test]
    fn splitting_quoting_comments() {
        assert_eq!(
            words("  bind *:80   ssl # comment"),
            ["bind", "*:80", "ssl"]
        );
        assert_eq!(words(r#"a "b c" 'd e' f\ g"#), ["a", "b c", "d e", "f g"]);
        assert_eq!(words(r#"x"y z"w"#), ["xy zw"]);
        assert_eq!(words(r#""a#b" c\#d"#), ["a#b", "c#d"]);
        assert_eq!(words(r#"'a\nb' "a\tb" \x41"#), ["a\\nb", "a\tb", "A"]);
        assert_eq!(
            words(r#"^/a\.b/(.*) /v1/\1 "\d""#),
            [r"^/a\.b/(.*)", r"/v1/\1", r"\d"]
        );
        assert_eq!(words(r#""""#), [""]);
        assert!(lex_line("\"open").is_err());
        assert!(lex_line("'open").is_err());
    }

    #[test]
    fn quoted_braces_are_not_acl_braces() {
        let w = lex_line(r#"if { path / } "{""#).unwrap();
        assert!(w[1].is("{"));
        assert!(!w[4].is("{"));
    }

    #[test]
    fn env_vars() {
        std::env::set_var("LLMGW_LEX_T", "v1");
        assert_eq!(
            words(r#""${LLMGW_LEX_T}/x" ${LLMGW_LEX_T} '${LLMGW_LEX_T}'"#),
            ["v1/x", "v1", "${LLMGW_LEX_T}"]
        );
    }

    #[test]
    fn line_numbers_skip_blank_and_comment_lines() {
        let (lines, errs) = lex("global\n\n  # c\n  maxconn 5\n");
        assert!(errs.is_empty());
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].line, 4);
    }
}
