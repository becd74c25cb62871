//! Token accounting: what a request is expected to cost before it is sent
//! (its reservation) and what its response says it cost (the `usage` the
//! provider reports, streamed responses included).
//!
//! Neither side parses the whole JSON. The request side walks the top
//! level of a buffered body for `max_tokens` and its aliases; the response
//! side looks for `"usage":{…}` objects as the bytes pass, keeping only the
//! small object itself, so a response streams through untouched and its
//! prompt text is never copied.

/// Tokens in (the prompt) and out (the completion).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
}

impl Tokens {
    pub fn total(self) -> u64 {
        self.input + self.output
    }
}

/// The keys under which the APIs carry a completion's token budget (Chat
/// Completions' new and old names, the Responses API's), first found wins.
const BUDGET_KEYS: [&str; 3] = ["max_completion_tokens", "max_tokens", "max_output_tokens"];

/// What a request is expected to cost: its prompt at about four bytes a
/// token, and its completion budget (`max_tokens` or an alias), else
/// `default_output` when the body names none.
pub fn estimate(body: &[u8], default_output: u64) -> Tokens {
    let budget = BUDGET_KEYS.iter().find_map(|k| {
        let v = super::json::member(body, k)?;
        std::str::from_utf8(v).ok()?.parse::<u64>().ok()
    });
    Tokens {
        input: (body.len() as u64).div_ceil(4),
        output: budget.unwrap_or(default_output),
    }
}

/// The largest `usage` object kept; a larger one is not a usage report.
const MAX_USAGE_OBJECT: usize = 4096;

const NEEDLE: &[u8] = b"\"usage\"";

/// Built once: constructing a searcher costs more than a short search.
static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(NEEDLE));

/// Finds the token usage in a response body fed to it piece by piece.
///
/// A streamed response may report usage more than once (Anthropic sends
/// the input tokens in `message_start` and the running output count in
/// each `message_delta`; OpenAI a final chunk when the client asked for
/// it): each field keeps the largest value seen, which is the final count
/// in every case. An object that arrives whole in one piece (the common
/// case) is read in place; only one split across pieces is copied.
#[derive(Debug, Default)]
pub struct UsageScanner {
    state: State,
    /// The end of the previous piece, for a needle split across pieces
    /// (inline: most responses never need it, and none should allocate).
    carry: [u8; NEEDLE.len() - 1],
    carry_len: u8,
    found: Option<Tokens>,
}

#[derive(Debug, Default)]
enum State {
    /// Looking for `"usage"`.
    #[default]
    Seek,
    /// After the key, before its value (`:` and whitespace).
    Colon,
    /// An object split across pieces: its bytes so far, nesting depth,
    /// whether in a string and after a backslash in it.
    Object {
        buf: Vec<u8>,
        depth: u32,
        in_string: bool,
        escape: bool,
    },
}

impl UsageScanner {
    /// The usage reported so far, if any.
    pub fn found(&self) -> Option<Tokens> {
        self.found
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            data = match &mut self.state {
                State::Seek => self.seek(data),
                State::Colon => {
                    let Some(k) = data.iter().position(|b| !b.is_ascii_whitespace()) else {
                        return;
                    };
                    match data[k] {
                        b':' => &data[k + 1..],
                        b'{' => self.object(&data[k..]),
                        // `"usage": null`, or a string: nothing to count.
                        _ => {
                            self.state = State::Seek;
                            &data[k..]
                        }
                    }
                }
                State::Object { .. } => self.collect(data),
            };
        }
    }

    /// Looks for the needle, including across the previous piece's end.
    fn seek<'d>(&mut self, data: &'d [u8]) -> &'d [u8] {
        const TAIL: usize = NEEDLE.len() - 1;
        let carried = usize::from(self.carry_len);
        if carried > 0 {
            // The carried end and this piece's start, joined.
            let mut joined = [0u8; 2 * TAIL];
            let take = data.len().min(TAIL);
            joined[..carried].copy_from_slice(&self.carry[..carried]);
            joined[carried..carried + take].copy_from_slice(&data[..take]);
            if let Some(k) = FINDER.find(&joined[..carried + take]) {
                self.carry_len = 0;
                self.state = State::Colon;
                return &data[k + NEEDLE.len() - carried..];
            }
        }
        if let Some(k) = FINDER.find(data) {
            self.carry_len = 0;
            self.state = State::Colon;
            return &data[k + NEEDLE.len()..];
        }
        // Keep the last TAIL bytes of what was seen (carry, then data).
        let mut tail = [0u8; 2 * TAIL];
        tail[..carried].copy_from_slice(&self.carry[..carried]);
        let from_data = data.len().min(TAIL);
        tail[carried..carried + from_data].copy_from_slice(&data[data.len() - from_data..]);
        let total = carried + from_data;
        let keep = total.min(TAIL);
        self.carry[..keep].copy_from_slice(&tail[total - keep..total]);
        self.carry_len = keep as u8;
        &[]
    }

    /// `data` starts with the object's `{`: read in place when it closes
    /// in this piece, else start collecting it.
    fn object<'d>(&mut self, data: &'d [u8]) -> &'d [u8] {
        self.state = State::Seek;
        // The common case, the whole object here: one pass reads its
        // counts and finds its end.
        // A larger object is no usage report: not looked at past that.
        if let Some((end, counts)) = read_object(&data[..data.len().min(MAX_USAGE_OBJECT)]) {
            self.add(counts);
            return &data[end..];
        }
        match close(data, 0, false, false) {
            Ok(end) => {
                if end <= MAX_USAGE_OBJECT {
                    self.record(&data[..end]);
                }
                &data[end..]
            }
            Err((depth, in_string, escape)) => {
                if data.len() <= MAX_USAGE_OBJECT {
                    self.state = State::Object {
                        buf: data.to_vec(),
                        depth,
                        in_string,
                        escape,
                    };
                }
                &[]
            }
        }
    }

    /// Adds a piece to an object split across pieces, up to its close.
    fn collect<'d>(&mut self, data: &'d [u8]) -> &'d [u8] {
        let State::Object {
            buf,
            depth,
            in_string,
            escape,
        } = &mut self.state
        else {
            return data;
        };
        match close(data, *depth, *in_string, *escape) {
            Ok(end) => {
                let whole = buf.len() + end <= MAX_USAGE_OBJECT;
                buf.extend_from_slice(&data[..end]);
                let object = std::mem::take(buf);
                self.state = State::Seek;
                if whole {
                    self.record(&object);
                }
                &data[end..]
            }
            Err(st) => {
                if buf.len() + data.len() > MAX_USAGE_OBJECT {
                    self.state = State::Seek;
                } else {
                    buf.extend_from_slice(data);
                    (*depth, *in_string, *escape) = st;
                }
                &[]
            }
        }
    }

    /// Records the counts of a whole `usage` object (see [`read_object`]).
    fn record(&mut self, obj: &[u8]) {
        if let Some((_, counts)) = read_object(obj) {
            self.add(counts);
        }
    }

    /// Each field keeps the largest value seen.
    fn add(&mut self, (input, output): Counts) {
        if input.is_none() && output.is_none() {
            return;
        }
        let seen = self.found.get_or_insert_with(Tokens::default);
        seen.input = seen.input.max(input.unwrap_or(0));
        seen.output = seen.output.max(output.unwrap_or(0));
    }
}

/// The input and output counts a `usage` object holds, each if it has one.
type Counts = (Option<u64>, Option<u64>);

/// Reads the `usage` object that `data` starts with (at its `{`) when it
/// closes within `data`: the index just past its `}`, and its counts:
/// OpenAI's Chat Completions (`prompt_tokens`, `completion_tokens`),
/// Anthropic's Messages and OpenAI's Responses API (`input_tokens`,
/// `output_tokens`). Only top-level members with integer values are
/// looked at, in the one pass that finds the end; this runs on every
/// response. `None` when the object goes on past `data`.
fn read_object(data: &[u8]) -> Option<(usize, Counts)> {
    let (mut input, mut output) = (None, None);
    let mut depth = 0u32;
    // At depth 1, after `{` or `,`: the next string is a key.
    let mut at_key = false;
    let mut key: &[u8] = &[];
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'"' => {
                let start = i + 1;
                let mut j = start;
                while j < data.len() && data[j] != b'"' {
                    j += if data[j] == b'\\' { 2 } else { 1 };
                }
                if j >= data.len() {
                    return None;
                }
                if depth == 1 && at_key {
                    key = &data[start..j];
                    at_key = false;
                }
                i = j + 1;
                continue;
            }
            b'{' => {
                depth += 1;
                at_key = depth == 1;
            }
            b'[' => depth += 1,
            b']' => depth = depth.saturating_sub(1),
            b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some((i + 1, (input, output)));
                }
            }
            b',' if depth == 1 => at_key = true,
            b'0'..=b'9' if depth == 1 => {
                let mut n: u64 = 0;
                while let Some(d) = data.get(i).filter(|c| c.is_ascii_digit()) {
                    n = n.saturating_mul(10).saturating_add(u64::from(d - b'0'));
                    i += 1;
                }
                let slot = match key {
                    b"prompt_tokens" | b"input_tokens" => &mut input,
                    b"completion_tokens" | b"output_tokens" => &mut output,
                    _ => continue,
                };
                slot.get_or_insert(n);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Where the object that `data` continues closes (the index just past its
/// `}`), given the nesting depth and string state so far; or the state at
/// the end of `data` when it does not close there. Jumps between the bytes
/// that matter instead of stepping through each.
fn close(
    data: &[u8],
    mut depth: u32,
    mut in_string: bool,
    escape: bool,
) -> Result<usize, (u32, bool, bool)> {
    let mut i = usize::from(escape && !data.is_empty());
    while i < data.len() {
        if in_string {
            match memchr::memchr2(b'"', b'\\', &data[i..]) {
                None => return Err((depth, true, false)),
                Some(k) if data[i + k] == b'"' => {
                    in_string = false;
                    i += k + 1;
                }
                Some(k) => {
                    if i + k + 1 >= data.len() {
                        return Err((depth, true, true));
                    }
                    i += k + 2;
                }
            }
            continue;
        }
        let Some(k) = memchr::memchr3(b'"', b'{', b'}', &data[i..]) else {
            return Err((depth, false, false));
        };
        i += k;
        match data[i] {
            b'"' => in_string = true,
            b'{' => depth += 1,
            _ => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
        }
        i += 1;
    }
    Err((depth, in_string, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_reads_the_top_level_budget() {
        let body = br#"{"model":"m","messages":[{"content":"\"max_tokens\": 5","max_tokens":7}],"max_tokens":100}"#;
        assert_eq!(estimate(body, 1).output, 100);
        assert_eq!(estimate(body, 1).input, (body.len() as u64).div_ceil(4));
        assert_eq!(
            estimate(br#"{"max_tokens": 9, "max_completion_tokens": 64}"#, 1).output,
            64
        );
        assert_eq!(estimate(br#"{"max_output_tokens":12}"#, 1).output, 12);
        // Absent, nested only, not a number, or not JSON: the default.
        assert_eq!(estimate(br#"{"model":"m"}"#, 256).output, 256);
        assert_eq!(estimate(br#"{"a":{"max_tokens":5}}"#, 256).output, 256);
        assert_eq!(estimate(br#"{"max_tokens":null,"x":5}"#, 256).output, 256);
        assert_eq!(estimate(br#"{"max_tokens":"5"}"#, 256).output, 256);
        assert_eq!(estimate(b"max_tokens 5", 256).output, 256);
        assert_eq!(estimate(br#"{"max_tokens":"#, 256).output, 256);
        assert_eq!(estimate(br#"{"s":"unterminated"#, 256).output, 256);
    }

    fn scan_in_pieces(body: &[u8], split: usize) -> Option<Tokens> {
        let mut s = UsageScanner::default();
        for piece in body.chunks(split.max(1)) {
            s.feed(piece);
        }
        s.found()
    }

    #[test]
    fn openai_usage_in_a_whole_response() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"the \"usage\": {\"prompt_tokens\": 999}"}}],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46,"prompt_tokens_details":{"cached_tokens":0}}}"#;
        let want = Some(Tokens {
            input: 12,
            output: 34,
        });
        for split in 1..=body.len() {
            assert_eq!(scan_in_pieces(body, split), want, "split {split}");
        }
    }

    #[test]
    fn openai_stream_with_null_usage_until_the_last_chunk() {
        let body = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n\
            data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n\
            data: [DONE]\n\n";
        for split in 1..=body.len() {
            assert_eq!(
                scan_in_pieces(body, split),
                Some(Tokens {
                    input: 5,
                    output: 2
                }),
                "split {split}"
            );
        }
    }

    #[test]
    fn anthropic_stream_counts_from_start_and_deltas() {
        let body = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
            event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":8}}\n\n\
            event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n";
        for split in 1..=body.len() {
            assert_eq!(
                scan_in_pieces(body, split),
                Some(Tokens {
                    input: 25,
                    output: 15
                }),
                "split {split}"
            );
        }
    }

    #[test]
    fn braces_in_strings_and_nested_arrays_do_not_end_the_object() {
        let body = br#"{"usage":{"note":"}{\"}","list":[1,{"prompt_tokens":9}],"input_tokens":3,"output_tokens":4},"after":{"output_tokens":99}}"#;
        let want = Some(Tokens {
            input: 3,
            output: 4,
        });
        for split in 1..=body.len() {
            assert_eq!(scan_in_pieces(body, split), want, "split {split}");
        }
    }

    #[test]
    fn no_usage_or_an_oversized_object_finds_nothing() {
        assert_eq!(scan_in_pieces(br#"{"choices":[]}"#, 3), None);
        assert_eq!(scan_in_pieces(br#"{"usage":{}}"#, 3), None);
        let mut huge = br#"{"usage":{"x":""#.to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_USAGE_OBJECT));
        huge.extend_from_slice(br#"","prompt_tokens":1}}"#);
        assert_eq!(scan_in_pieces(&huge, 100), None);
        // Found later all the same.
        huge.extend_from_slice(br#"{"usage":{"prompt_tokens":3}}"#);
        assert_eq!(
            scan_in_pieces(&huge, 100),
            Some(Tokens {
                input: 3,
                output: 0
            })
        );
    }
}
