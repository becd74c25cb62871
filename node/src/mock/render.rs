//! The bytes the mock answers with.
//!
//! Responses are written straight into one byte buffer instead of going
//! through `serde_json` trees: the shapes are fixed, and this is the hot path
//! of every benchmark. The only variable strings are the model name and error
//! messages, escaped by [`push_json_str`]. Tests parse every shape back with
//! `serde_json` to keep this honest.

use bytes::Bytes;

/// The generated text, one word per token, cycling.
pub(super) const WORDS: [&str; 8] = [
    "Hello",
    "from",
    "llmgw",
    "mock",
    "upstream",
    "streaming",
    "some",
    "tokens",
];

/// Token `i` as it appears in the text: words are separated by one space,
/// carried by the later token (as real tokenizers do).
pub(super) fn token(i: u32) -> (&'static str, &'static str) {
    let sep = if i == 0 { "" } else { " " };
    (sep, WORDS[i as usize % WORDS.len()])
}

/// The completion text for `n` tokens, precomputed up to some length so the
/// common non-streaming answer is one copy.
pub(super) struct Content {
    text: String,
    /// `ends[n]` = byte length of the first `n` tokens.
    ends: Vec<usize>,
}

impl Content {
    pub(super) fn new(tokens: u32) -> Self {
        let mut text = String::new();
        let mut ends = vec![0];
        for i in 0..tokens {
            let (sep, word) = token(i);
            text.push_str(sep);
            text.push_str(word);
            ends.push(text.len());
        }
        Content { text, ends }
    }

    /// Appends the text of the first `n` tokens (JSON-safe: plain ASCII).
    pub(super) fn push(&self, buf: &mut Vec<u8>, n: u32) {
        let cached = self.ends.len() - 1;
        let n = n as usize;
        buf.extend_from_slice(&self.text.as_bytes()[..self.ends[n.min(cached)]]);
        for i in cached..n {
            let (sep, word) = token(i as u32);
            buf.extend_from_slice(sep.as_bytes());
            buf.extend_from_slice(word.as_bytes());
        }
    }

    /// Upper bound of the text length for `n` tokens, for buffer sizing.
    pub(super) fn len_hint(n: u32) -> usize {
        n as usize * 10
    }
}

/// What one completion is about: everything that varies between answers.
pub(super) struct Answer<'a> {
    /// Unique number, rendered as 16 hex digits after the id prefix.
    pub id: u64,
    /// Unix seconds.
    pub created: u64,
    pub model: &'a str,
    pub prompt_tokens: u64,
    pub completion_tokens: u32,
    /// The request's max_tokens cut the answer short.
    pub truncated: bool,
}

impl Answer<'_> {
    fn openai_finish(&self) -> &'static str {
        if self.truncated {
            "length"
        } else {
            "stop"
        }
    }

    fn anthropic_stop(&self) -> &'static str {
        if self.truncated {
            "max_tokens"
        } else {
            "end_turn"
        }
    }

    /// Room for the fixed parts of any answer besides the text.
    fn capacity(&self) -> usize {
        400 + self.model.len() * 2 + Content::len_hint(self.completion_tokens)
    }
}

/// `…"id":"<prefix><hex>","object":"<object>","created":<t>,"model":<m>` —
/// the envelope every OpenAI object and chunk starts with.
fn push_object_head(b: &mut Vec<u8>, start: &[u8], object: &[u8], a: &Answer) {
    b.extend_from_slice(start);
    push_hex(b, a.id);
    b.extend_from_slice(b"\",\"object\":\"");
    b.extend_from_slice(object);
    b.extend_from_slice(b"\",\"created\":");
    push_u64(b, a.created);
    b.extend_from_slice(b",\"model\":");
    push_json_str(b, a.model);
}

// ---- OpenAI chat completions ------------------------------------------------

pub(super) fn chat_completion(a: &Answer, content: &Content) -> Bytes {
    let mut b = Vec::with_capacity(a.capacity());
    push_object_head(&mut b, b"{\"id\":\"chatcmpl-", b"chat.completion", a);
    b.extend_from_slice(
        b",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"",
    );
    content.push(&mut b, a.completion_tokens);
    b.extend_from_slice(b"\"},\"logprobs\":null,\"finish_reason\":\"");
    b.extend_from_slice(a.openai_finish().as_bytes());
    b.extend_from_slice(b"\"}],");
    push_openai_usage(&mut b, a);
    b.push(b'}');
    Bytes::from(b)
}

/// `data: {"id":…,"object":"chat.completion.chunk",…,"choices":[` — the part
/// every chunk of one stream shares.
pub(super) fn chat_chunk_head(a: &Answer) -> Bytes {
    let mut b = Vec::with_capacity(200 + a.model.len() * 2);
    push_object_head(
        &mut b,
        b"data: {\"id\":\"chatcmpl-",
        b"chat.completion.chunk",
        a,
    );
    b.extend_from_slice(b",\"choices\":[");
    Bytes::from(b)
}

/// Chunk for token `i`; the first delta carries the role. `None` is the lone
/// role-only chunk of an empty answer.
pub(super) fn chat_chunk(head: &[u8], i: Option<u32>) -> Bytes {
    let mut b = Vec::with_capacity(head.len() + 100);
    b.extend_from_slice(head);
    if i.unwrap_or(0) == 0 {
        b.extend_from_slice(b"{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"");
    } else {
        b.extend_from_slice(b"{\"index\":0,\"delta\":{\"content\":\"");
    }
    if let Some(i) = i {
        let (sep, word) = token(i);
        b.extend_from_slice(sep.as_bytes());
        b.extend_from_slice(word.as_bytes());
    }
    b.extend_from_slice(b"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
    Bytes::from(b)
}

/// Everything after the last token: the finish chunk, the usage chunk when
/// asked for, and `[DONE]`.
pub(super) fn chat_stream_end(head: &[u8], a: &Answer, include_usage: bool) -> Bytes {
    let mut b = Vec::with_capacity(head.len() * 2 + 200);
    b.extend_from_slice(head);
    b.extend_from_slice(b"{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"");
    b.extend_from_slice(a.openai_finish().as_bytes());
    b.extend_from_slice(b"\"}]}\n\n");
    push_stream_usage_and_done(&mut b, head, a, include_usage);
    Bytes::from(b)
}

// ---- OpenAI legacy completions ------------------------------------------------

pub(super) fn text_completion(a: &Answer, content: &Content) -> Bytes {
    let mut b = Vec::with_capacity(a.capacity());
    push_object_head(&mut b, b"{\"id\":\"cmpl-", b"text_completion", a);
    b.extend_from_slice(b",\"choices\":[{\"text\":\"");
    content.push(&mut b, a.completion_tokens);
    b.extend_from_slice(b"\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"");
    b.extend_from_slice(a.openai_finish().as_bytes());
    b.extend_from_slice(b"\"}],");
    push_openai_usage(&mut b, a);
    b.push(b'}');
    Bytes::from(b)
}

pub(super) fn text_chunk_head(a: &Answer) -> Bytes {
    let mut b = Vec::with_capacity(200 + a.model.len() * 2);
    push_object_head(&mut b, b"data: {\"id\":\"cmpl-", b"text_completion", a);
    b.extend_from_slice(b",\"choices\":[");
    Bytes::from(b)
}

pub(super) fn text_chunk(head: &[u8], i: u32) -> Bytes {
    let mut b = Vec::with_capacity(head.len() + 80);
    b.extend_from_slice(head);
    b.extend_from_slice(b"{\"text\":\"");
    let (sep, word) = token(i);
    b.extend_from_slice(sep.as_bytes());
    b.extend_from_slice(word.as_bytes());
    b.extend_from_slice(b"\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n");
    Bytes::from(b)
}

pub(super) fn text_stream_end(head: &[u8], a: &Answer, include_usage: bool) -> Bytes {
    let mut b = Vec::with_capacity(head.len() * 2 + 200);
    b.extend_from_slice(head);
    b.extend_from_slice(b"{\"text\":\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"");
    b.extend_from_slice(a.openai_finish().as_bytes());
    b.extend_from_slice(b"\"}]}\n\n");
    push_stream_usage_and_done(&mut b, head, a, include_usage);
    Bytes::from(b)
}

fn push_stream_usage_and_done(b: &mut Vec<u8>, head: &[u8], a: &Answer, include_usage: bool) {
    if include_usage {
        // Same head, so "choices":[ is already open: close it empty.
        b.extend_from_slice(head);
        b.extend_from_slice(b"],");
        push_openai_usage(b, a);
        b.extend_from_slice(b"}\n\n");
    }
    b.extend_from_slice(b"data: [DONE]\n\n");
}

/// `"usage":{"prompt_tokens":P,"completion_tokens":C,"total_tokens":P+C}`
fn push_openai_usage(b: &mut Vec<u8>, a: &Answer) {
    b.extend_from_slice(b"\"usage\":{\"prompt_tokens\":");
    push_u64(b, a.prompt_tokens);
    b.extend_from_slice(b",\"completion_tokens\":");
    push_u64(b, a.completion_tokens.into());
    b.extend_from_slice(b",\"total_tokens\":");
    push_u64(b, a.prompt_tokens + u64::from(a.completion_tokens));
    b.push(b'}');
}

// ---- Anthropic messages -------------------------------------------------------

pub(super) fn anthropic_message(a: &Answer, content: &Content) -> Bytes {
    let mut b = Vec::with_capacity(a.capacity());
    b.extend_from_slice(b"{\"id\":\"msg_");
    push_hex(&mut b, a.id);
    b.extend_from_slice(b"\",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    push_json_str(&mut b, a.model);
    b.extend_from_slice(b",\"content\":[{\"type\":\"text\",\"text\":\"");
    content.push(&mut b, a.completion_tokens);
    b.extend_from_slice(b"\"}],\"stop_reason\":\"");
    b.extend_from_slice(a.anthropic_stop().as_bytes());
    b.extend_from_slice(b"\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":");
    push_u64(&mut b, a.prompt_tokens);
    b.extend_from_slice(b",\"output_tokens\":");
    push_u64(&mut b, a.completion_tokens.into());
    b.extend_from_slice(b"}}");
    Bytes::from(b)
}

/// `message_start`, `content_block_start` and `ping`, sent with the headers.
pub(super) fn anthropic_stream_start(a: &Answer) -> Bytes {
    let mut b = Vec::with_capacity(500 + a.model.len() * 2);
    b.extend_from_slice(
        b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_",
    );
    push_hex(&mut b, a.id);
    b.extend_from_slice(b"\",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    push_json_str(&mut b, a.model);
    b.extend_from_slice(
        b",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\
          \"usage\":{\"input_tokens\":",
    );
    push_u64(&mut b, a.prompt_tokens);
    b.extend_from_slice(
        b",\"output_tokens\":1}}}\n\n\
          event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\
          \"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
          event: ping\ndata: {\"type\":\"ping\"}\n\n",
    );
    Bytes::from(b)
}

/// The `content_block_delta` event of token `i`. Depends on nothing but the
/// word, so [`anthropic_deltas`] precomputes them all.
fn anthropic_delta(i: u32) -> Bytes {
    let mut b = Vec::with_capacity(140);
    b.extend_from_slice(
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\
          \"delta\":{\"type\":\"text_delta\",\"text\":\"",
    );
    let (sep, word) = token(i);
    b.extend_from_slice(sep.as_bytes());
    b.extend_from_slice(word.as_bytes());
    b.extend_from_slice(b"\"}}\n\n");
    Bytes::from(b)
}

/// Every distinct delta event: index 0 is the first token (no space), index
/// `k >= 1` is word `k % WORDS.len()` with its space. See [`anthropic_delta_index`].
pub(super) fn anthropic_deltas() -> Vec<Bytes> {
    (0..=WORDS.len() as u32).map(anthropic_delta).collect()
}

pub(super) fn anthropic_delta_index(i: u32) -> usize {
    if i == 0 {
        0
    } else {
        // Words 1..len keep their index; word 0 with a space sits at len.
        match i as usize % WORDS.len() {
            0 => WORDS.len(),
            k => k,
        }
    }
}

/// `content_block_stop`, `message_delta` and `message_stop`.
pub(super) fn anthropic_stream_end(a: &Answer) -> Bytes {
    let mut b = Vec::with_capacity(400);
    b.extend_from_slice(
        b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
          event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"",
    );
    b.extend_from_slice(a.anthropic_stop().as_bytes());
    b.extend_from_slice(b"\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":");
    push_u64(&mut b, a.completion_tokens.into());
    b.extend_from_slice(b"}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    Bytes::from(b)
}

pub(super) fn anthropic_count_tokens(input_tokens: u64) -> Bytes {
    let mut b = Vec::with_capacity(40);
    b.extend_from_slice(b"{\"input_tokens\":");
    push_u64(&mut b, input_tokens);
    b.push(b'}');
    Bytes::from(b)
}

// ---- Embeddings -----------------------------------------------------------------

/// One vector per input seed; `base64` packs little-endian f32s the way the
/// `openai` SDK asks for by default.
pub(super) fn embeddings(
    seeds: &[u64],
    dimensions: usize,
    base64: bool,
    model: &str,
    prompt_tokens: u64,
) -> Bytes {
    let mut b = Vec::with_capacity(120 + model.len() + seeds.len() * (60 + dimensions * 12));
    b.extend_from_slice(b"{\"object\":\"list\",\"data\":[");
    let mut vector = Vec::with_capacity(dimensions);
    for (index, seed) in seeds.iter().enumerate() {
        if index > 0 {
            b.push(b',');
        }
        b.extend_from_slice(b"{\"object\":\"embedding\",\"index\":");
        push_u64(&mut b, index as u64);
        b.extend_from_slice(b",\"embedding\":");
        embedding_vector(*seed, dimensions, &mut vector);
        if base64 {
            let raw: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
            b.push(b'"');
            push_base64(&mut b, &raw);
            b.push(b'"');
        } else {
            b.push(b'[');
            for (k, x) in vector.iter().enumerate() {
                if k > 0 {
                    b.push(b',');
                }
                // f32 Display is the shortest round-tripping form, valid JSON.
                b.extend_from_slice(x.to_string().as_bytes());
            }
            b.push(b']');
        }
        b.push(b'}');
    }
    b.extend_from_slice(b"],\"model\":");
    push_json_str(&mut b, model);
    b.extend_from_slice(b",\"usage\":{\"prompt_tokens\":");
    push_u64(&mut b, prompt_tokens);
    b.extend_from_slice(b",\"total_tokens\":");
    push_u64(&mut b, prompt_tokens);
    b.extend_from_slice(b"}}");
    Bytes::from(b)
}

/// A unit-length vector derived only from `seed` (splitmix64), so equal
/// inputs always embed equally.
fn embedding_vector(seed: u64, dimensions: usize, out: &mut Vec<f32>) {
    out.clear();
    let mut state = seed;
    let mut norm = 0.0f64;
    for _ in 0..dimensions {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // Top 24 bits → [-1, 1).
        let x = (z >> 40) as f64 / (1u64 << 23) as f64 - 1.0;
        norm += x * x;
        out.push(x as f32);
    }
    if norm > 0.0 {
        let scale = 1.0 / norm.sqrt();
        for x in out.iter_mut() {
            *x = (f64::from(*x) * scale) as f32;
        }
    }
}

// ---- Models, errors -------------------------------------------------------------

/// Model ids listed by `GET /v1/models`. Any id is accepted everywhere else.
pub(super) const MODELS: [&str; 5] = [
    "mock-model",
    "gpt-4o",
    "gpt-4o-mini",
    "text-embedding-3-small",
    "claude-3-5-sonnet-latest",
];

/// Fixed creation time of every model (2023-11-14), so answers are stable.
const MODEL_CREATED: u64 = 1_700_000_000;

pub(super) fn openai_model(b: &mut Vec<u8>, id: &str) {
    b.extend_from_slice(b"{\"id\":");
    push_json_str(b, id);
    b.extend_from_slice(b",\"object\":\"model\",\"created\":");
    push_u64(b, MODEL_CREATED);
    b.extend_from_slice(b",\"owned_by\":\"llmgw-mock\"}");
}

pub(super) fn anthropic_model(b: &mut Vec<u8>, id: &str) {
    b.extend_from_slice(b"{\"type\":\"model\",\"id\":");
    push_json_str(b, id);
    b.extend_from_slice(b",\"display_name\":");
    push_json_str(b, id);
    b.extend_from_slice(b",\"created_at\":\"2023-11-14T22:13:20Z\"}");
}

pub(super) fn openai_model_list() -> Bytes {
    let mut b = b"{\"object\":\"list\",\"data\":[".to_vec();
    for (i, id) in MODELS.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        openai_model(&mut b, id);
    }
    b.extend_from_slice(b"]}");
    Bytes::from(b)
}

pub(super) fn anthropic_model_list() -> Bytes {
    let mut b = b"{\"data\":[".to_vec();
    for (i, id) in MODELS.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        anthropic_model(&mut b, id);
    }
    b.extend_from_slice(b"],\"has_more\":false,\"first_id\":");
    push_json_str(&mut b, MODELS[0]);
    b.extend_from_slice(b",\"last_id\":");
    push_json_str(&mut b, MODELS[MODELS.len() - 1]);
    b.push(b'}');
    Bytes::from(b)
}

/// `{"error":{"message":…,"type":…,"param":null,"code":…}}`
pub(super) fn openai_error(message: &str, kind: &str, code: &str) -> Bytes {
    let mut b = Vec::with_capacity(100 + message.len());
    b.extend_from_slice(b"{\"error\":{\"message\":");
    push_json_str(&mut b, message);
    b.extend_from_slice(b",\"type\":");
    push_json_str(&mut b, kind);
    b.extend_from_slice(b",\"param\":null,\"code\":");
    push_json_str(&mut b, code);
    b.extend_from_slice(b"}}");
    Bytes::from(b)
}

/// `{"type":"error","error":{"type":…,"message":…}}`
pub(super) fn anthropic_error(message: &str, kind: &str) -> Bytes {
    let mut b = Vec::with_capacity(80 + message.len());
    b.extend_from_slice(b"{\"type\":\"error\",\"error\":{\"type\":");
    push_json_str(&mut b, kind);
    b.extend_from_slice(b",\"message\":");
    push_json_str(&mut b, message);
    b.extend_from_slice(b"}}");
    Bytes::from(b)
}

// ---- Primitives -------------------------------------------------------------------

/// Appends `s` as a quoted JSON string.
pub(super) fn push_json_str(b: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    b.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let escape: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => &[],
            _ => continue,
        };
        b.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            b.extend_from_slice(b"\\u00");
            b.push(HEX[usize::from(c >> 4)]);
            b.push(HEX[usize::from(c & 0xf)]);
        } else {
            b.extend_from_slice(escape);
        }
        start = i + 1;
    }
    b.extend_from_slice(&bytes[start..]);
    b.push(b'"');
}

pub(super) fn push_u64(b: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    b.extend_from_slice(&digits[i..]);
}

/// 16 lowercase hex digits.
fn push_hex(b: &mut Vec<u8>, n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        b.push(HEX[((n >> (shift * 4)) & 0xf) as usize]);
    }
}

/// Standard base64 with padding.
fn push_base64(b: &mut Vec<u8>, data: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in data.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(chunk.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(chunk.get(2).copied().unwrap_or(0));
        b.push(ALPHABET[(n >> 18) as usize & 63]);
        b.push(ALPHABET[(n >> 12) as usize & 63]);
        b.push(if chunk.len() > 1 {
            ALPHABET[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        b.push(if chunk.len() > 2 {
            ALPHABET[n as usize & 63]
        } else {
            b'='
        });
    }
}
