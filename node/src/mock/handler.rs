//! Request handling: routing, per-request overrides, failure injection and
//! the endpoints themselves.
//!
//! [`handle`] reads the whole request first (so keep-alive survives every
//! answer, including injected errors, and hyper notices a client that gives
//! up on a hanging request), then applies `x-mock-fail`, then routes. Request bodies are deserialized into small borrowed structs that
//! name only the fields the mock needs; serde skips everything else without
//! building values, and still rejects malformed JSON with a 400.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::body::{deadline_after, MockBody, MockError, Sse, SseKind, SseSpec};
use super::render::{self, Answer, Content};
use super::{Fail, MockOptions, MAX_DELAY_MS, MAX_TOKENS};

static X_MOCK_SERVER: HeaderName = HeaderName::from_static("x-mock-server");
static X_MOCK_TTFT_MS: HeaderName = HeaderName::from_static("x-mock-ttft-ms");
static X_MOCK_TOKENS: HeaderName = HeaderName::from_static("x-mock-tokens");
static X_MOCK_TOKEN_DELAY_MS: HeaderName = HeaderName::from_static("x-mock-token-delay-ms");
static X_MOCK_FAIL: HeaderName = HeaderName::from_static("x-mock-fail");
static X_MOCK_RETRY_AFTER: HeaderName = HeaderName::from_static("x-mock-retry-after");
static ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// Largest request body read; beyond it the answer is 413.
const MAX_BODY: usize = 64 << 20;
/// OpenAI's own limits on embedding requests.
const MAX_EMBEDDING_INPUTS: usize = 2048;
const MAX_EMBEDDING_DIMENSIONS: u64 = 3072;
const DEFAULT_EMBEDDING_DIMENSIONS: u64 = 8;
/// Model reported when the request names none.
const DEFAULT_MODEL: &str = "mock-model";

/// Everything one listener precomputes from its options, shared by all its
/// connections.
pub(super) struct Shared {
    opts: Arc<MockOptions>,
    server_header: HeaderValue,
    retry_after: HeaderValue,
    content: Content,
    /// Every distinct Anthropic `content_block_delta` event.
    pub(super) anthropic_deltas: Vec<Bytes>,
    openai_models: Bytes,
    anthropic_models: Bytes,
    /// Source of response ids; starts at a random value so two mock
    /// processes do not hand out the same ids.
    next_id: AtomicU64,
}

impl Shared {
    pub(super) fn new(opts: Arc<MockOptions>) -> Self {
        let server_header = HeaderValue::from_str(&opts.name).unwrap_or_else(|_| {
            tracing::warn!("mock: name {:?} is not a valid header value", opts.name);
            HeaderValue::from_static("mock")
        });
        let retry_after = opts
            .retry_after
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
            .unwrap_or(HeaderValue::from_static("1"));
        Shared {
            content: Content::new(opts.tokens.clamp(64, 65_536)),
            opts,
            server_header,
            retry_after,
            anthropic_deltas: render::anthropic_deltas(),
            openai_models: render::openai_model_list(),
            anthropic_models: render::anthropic_model_list(),
            next_id: AtomicU64::new(fastrand::u64(..)),
        }
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn respond(
        &self,
        status: StatusCode,
        content_type: HeaderValue,
        body: MockBody,
    ) -> Response<MockBody> {
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, content_type);
        headers.insert(&X_MOCK_SERVER, self.server_header.clone());
        resp
    }

    fn json(&self, body: impl Into<Bytes>) -> Response<MockBody> {
        self.respond(StatusCode::OK, JSON, MockBody::full(body))
    }

    /// An error in the shape of the API the route belongs to.
    fn error(
        &self,
        route: Route,
        status: StatusCode,
        message: &str,
        code: &str,
    ) -> Response<MockBody> {
        let (openai_type, anthropic_type) = error_types(status);
        let body = if route.is_anthropic() {
            render::anthropic_error(message, anthropic_type)
        } else {
            render::openai_error(message, openai_type, code)
        };
        self.respond(status, JSON, MockBody::full(body))
    }
}

/// `(OpenAI type, Anthropic type)` of an error status.
fn error_types(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        401 => ("authentication_error", "authentication_error"),
        403 => ("permission_error", "permission_error"),
        404 => ("invalid_request_error", "not_found_error"),
        413 => ("invalid_request_error", "request_too_large"),
        429 => ("rate_limit_error", "rate_limit_error"),
        529 => ("server_error", "overloaded_error"),
        500..=599 => ("server_error", "api_error"),
        _ => ("invalid_request_error", "invalid_request_error"),
    }
}

/// The endpoints; known ones map to a counter in [`super::stats::KNOWN_PATHS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Chat,
    Completions,
    Embeddings,
    Messages,
    CountTokens,
    Models,
    Model,
    Health,
    Echo,
    Stats,
    Reset,
    FailCtl,
    NotFound,
}

impl Route {
    fn of(path: &str) -> Route {
        match path {
            "/v1/chat/completions" => Route::Chat,
            "/v1/completions" => Route::Completions,
            "/v1/embeddings" => Route::Embeddings,
            "/v1/messages" => Route::Messages,
            "/v1/messages/count_tokens" => Route::CountTokens,
            "/v1/models" => Route::Models,
            "/health" => Route::Health,
            "/mock/stats" => Route::Stats,
            "/mock/reset" => Route::Reset,
            "/mock/fail" => Route::FailCtl,
            "/echo" => Route::Echo,
            _ if path.starts_with("/echo/") => Route::Echo,
            _ if model_id(path).is_some() => Route::Model,
            _ => Route::NotFound,
        }
    }

    /// Index of the route's counter in [`super::stats::KNOWN_PATHS`].
    fn stat_index(self) -> Option<usize> {
        Some(match self {
            Route::Chat => 0,
            Route::Completions => 1,
            Route::Embeddings => 2,
            Route::Messages => 3,
            Route::CountTokens => 4,
            Route::Models => 5,
            Route::Health => 6,
            _ => return None,
        })
    }

    /// Test plumbing, not traffic: never counted, never failed.
    fn is_control(self) -> bool {
        matches!(self, Route::Stats | Route::Reset | Route::FailCtl)
    }

    fn is_anthropic(self) -> bool {
        matches!(self, Route::Messages | Route::CountTokens)
    }

    fn allows(self, method: &Method) -> bool {
        match self {
            Route::Chat
            | Route::Completions
            | Route::Embeddings
            | Route::Messages
            | Route::CountTokens
            | Route::Reset
            | Route::FailCtl => method == Method::POST,
            Route::Models | Route::Model | Route::Health | Route::Stats => {
                method == Method::GET || method == Method::HEAD
            }
            Route::Echo | Route::NotFound => true,
        }
    }
}

#[cfg(test)]
pub(super) fn stat_index_of(path: &str) -> Option<usize> {
    Route::of(path).stat_index()
}

/// `{id}` of `/v1/models/{id}`, if the path is one.
fn model_id(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/models/").filter(|id| !id.is_empty())
}

/// This request's behaviour: the options, overridden by `x-mock-*` headers.
struct Plan {
    ttft: Duration,
    tokens: u32,
    token_delay: Duration,
    fail: Option<Fail>,
    retry_after: HeaderValue,
}

impl Plan {
    fn new(headers: &HeaderMap, sh: &Shared) -> Result<Plan, String> {
        let opts = &sh.opts;
        let mut plan = Plan {
            ttft: opts.ttft,
            tokens: opts.tokens,
            token_delay: opts.token_delay,
            fail: opts.fail,
            retry_after: sh.retry_after.clone(),
        };
        if let Some(ms) = header_number(headers, &X_MOCK_TTFT_MS, MAX_DELAY_MS)? {
            plan.ttft = Duration::from_millis(ms);
        }
        if let Some(n) = header_number(headers, &X_MOCK_TOKENS, MAX_TOKENS.into())? {
            plan.tokens = n as u32;
        }
        if let Some(ms) = header_number(headers, &X_MOCK_TOKEN_DELAY_MS, MAX_DELAY_MS)? {
            plan.token_delay = Duration::from_millis(ms);
        }
        if let Some(v) = headers.get(&X_MOCK_FAIL) {
            let v = v
                .to_str()
                .map_err(|_| "x-mock-fail is not ASCII".to_string())?;
            plan.fail = match v.trim() {
                "none" => None,
                other => Some(
                    other
                        .parse::<Fail>()
                        .map_err(|e| format!("x-mock-fail: {e}"))?,
                ),
            };
        }
        if let Some(v) = headers.get(&X_MOCK_RETRY_AFTER) {
            plan.retry_after = v.clone();
        }
        Ok(plan)
    }
}

fn header_number(headers: &HeaderMap, name: &HeaderName, max: u64) -> Result<Option<u64>, String> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let n = value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| format!("{name} must be a non-negative integer"))?;
    if n > max {
        return Err(format!("{name} must be at most {max}"));
    }
    Ok(Some(n))
}

/// The service: one request in, one response (or an injected failure) out.
pub(super) async fn handle(
    req: Request<Incoming>,
    sh: Arc<Shared>,
) -> Result<Response<MockBody>, MockError> {
    let route = Route::of(req.uri().path());
    if !route.is_control() {
        sh.opts.stats.record(route.stat_index(), req.uri().path());
    }
    let plan = Plan::new(req.headers(), &sh);
    let fail = match &plan {
        Ok(_) if route.is_control() => None,
        // A per-request header wins over everything.
        Ok(plan) if req.headers().contains_key(&X_MOCK_FAIL) => plan.fail,
        Ok(plan) => match sh.opts.forced.get(req.uri().path()) {
            Some(f) => f,
            None => plan.fail,
        },
        Err(_) => None,
    };
    if fail == Some(Fail::Close) {
        // An error from the service makes hyper drop the connection (HTTP/1.1)
        // or reset the stream (HTTP/2) without a response.
        return Err(MockError::Close);
    }

    let (parts, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(ReadError::TooLarge) => {
            let msg = format!("request body larger than {MAX_BODY} bytes");
            return Ok(sh.error(
                route,
                StatusCode::PAYLOAD_TOO_LARGE,
                &msg,
                "request_too_large",
            ));
        }
        // The client went away mid-body: nobody is left to answer.
        Err(ReadError::Broken) => return Err(MockError::Close),
    };
    if fail == Some(Fail::Hang) {
        // Only now, with the request fully read, does hyper watch the
        // connection for EOF and drop this future when the client gives up;
        // otherwise every abandoned hang would live forever.
        std::future::pending::<()>().await;
    }
    let plan = match plan {
        Ok(plan) => plan,
        Err(msg) => {
            return Ok(sh.error(route, StatusCode::BAD_REQUEST, &msg, "invalid_mock_header"))
        }
    };
    if let Some(Fail::Status(code)) = fail {
        return Ok(injected_status(&sh, route, code, &plan));
    }
    if !route.allows(&parts.method) {
        let msg = format!(
            "method {} not allowed on {}",
            parts.method,
            parts.uri.path()
        );
        return Ok(sh.error(
            route,
            StatusCode::METHOD_NOT_ALLOWED,
            &msg,
            "method_not_allowed",
        ));
    }
    let is_llm = matches!(
        route,
        Route::Chat | Route::Completions | Route::Embeddings | Route::Messages
    );
    if fail == Some(Fail::SlowHeaders) && !is_llm {
        // LLM endpoints fold this into their own timing.
        sleep(plan.ttft).await;
    }

    let mut resp = match route {
        Route::Chat => complete(&sh, Api::Chat, &plan, &body).await,
        Route::Completions => complete(&sh, Api::Text, &plan, &body).await,
        Route::Messages => complete(&sh, Api::Anthropic, &plan, &body).await,
        Route::Embeddings => embeddings(&sh, &plan, &body).await,
        Route::CountTokens => match parse_json::<IgnoredAny>(&body) {
            Ok(_) => sh.json(render::anthropic_count_tokens(prompt_tokens(&body))),
            Err(msg) => sh.error(route, StatusCode::BAD_REQUEST, &msg, "invalid_json"),
        },
        Route::Models => {
            let anthropic = parts.headers.contains_key(&ANTHROPIC_VERSION);
            sh.json(if anthropic {
                sh.anthropic_models.clone()
            } else {
                sh.openai_models.clone()
            })
        }
        Route::Model => {
            let id = model_id(parts.uri.path()).unwrap_or(DEFAULT_MODEL);
            let mut b = Vec::with_capacity(150 + id.len() * 2);
            if parts.headers.contains_key(&ANTHROPIC_VERSION) {
                render::anthropic_model(&mut b, id);
            } else {
                render::openai_model(&mut b, id);
            }
            sh.json(b)
        }
        Route::Health => sh.respond(
            StatusCode::OK,
            TEXT,
            MockBody::full(Bytes::from_static(b"ok")),
        ),
        Route::Echo => sh.json(echo(&parts, &body)),
        Route::Stats => sh.json(sh.opts.stats.to_json()),
        Route::FailCtl => match set_forced(&sh, parts.uri.query().unwrap_or("")) {
            Ok(body) => sh.json(body),
            Err(msg) => sh.error(route, StatusCode::BAD_REQUEST, &msg, "invalid_mock_fail"),
        },
        Route::Reset => {
            sh.opts.stats.reset();
            sh.json(sh.opts.stats.to_json())
        }
        Route::NotFound => {
            let msg = format!("unknown path {}", parts.uri.path());
            sh.error(route, StatusCode::NOT_FOUND, &msg, "not_found")
        }
    };
    if fail == Some(Fail::ResetMidStream) {
        // Streams cut themselves; complete answers are cut here, after half
        // their bytes, with a Content-Length that promises all of them.
        if let Some(len) = resp.body_mut().cut_if_full() {
            resp.headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
    Ok(resp)
}

fn injected_status(sh: &Shared, route: Route, code: u16, plan: &Plan) -> Response<MockBody> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let msg = format!("mock: injected status {code}");
    let code_name = if code == 429 {
        "rate_limit_exceeded"
    } else {
        "mock_injected"
    };
    let mut resp = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        // These statuses may not carry a body.
        sh.respond(status, JSON, MockBody::full(Bytes::new()))
    } else {
        sh.error(route, status, &msg, code_name)
    };
    if code == 429 || code == 503 {
        resp.headers_mut()
            .insert(RETRY_AFTER, plan.retry_after.clone());
    }
    resp
}

enum ReadError {
    TooLarge,
    Broken,
}

/// Reads the whole request body. A single-frame body (the usual case) is
/// kept as is, without copying.
async fn read_body(mut body: Incoming) -> Result<Bytes, ReadError> {
    use http_body::Body as _;
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| ReadError::Broken)?.into_data() else {
            continue; // trailers
        };
        let len = joined.as_ref().map_or(0, |j| j.len()) + first.as_ref().map_or(0, |f| f.len());
        if len + data.len() > MAX_BODY {
            return Err(ReadError::TooLarge);
        }
        match (&mut joined, first.take()) {
            (Some(joined), _) => joined.extend_from_slice(&data),
            (None, None) => first = Some(data),
            (None, Some(prev)) => {
                let mut j = BytesMut::with_capacity(prev.len() + data.len());
                j.extend_from_slice(&prev);
                j.extend_from_slice(&data);
                joined = Some(j);
            }
        }
    }
    Ok(joined.map(BytesMut::freeze).or(first).unwrap_or_default())
}

/// Rough prompt size: one token per four bytes of request body, at least one.
fn prompt_tokens(body: &[u8]) -> u64 {
    (body.len() as u64 / 4).max(1)
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, String> {
    // The derived structs would also accept a JSON array, positionally.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err("request body must be a JSON object".to_string());
    }
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

fn sleep(delay: Duration) -> impl std::future::Future<Output = ()> {
    let timer = (!delay.is_zero()).then(|| tokio::time::sleep_until(deadline_after(delay)));
    async move {
        if let Some(timer) = timer {
            timer.await;
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---- Completions --------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    Text,
    Anthropic,
}

/// The fields of a chat / completions / messages request the mock uses.
#[derive(Deserialize)]
struct CompletionRequest<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

async fn complete(sh: &Arc<Shared>, api: Api, plan: &Plan, body: &Bytes) -> Response<MockBody> {
    let route = match api {
        Api::Chat => Route::Chat,
        Api::Text => Route::Completions,
        Api::Anthropic => Route::Messages,
    };
    let req: CompletionRequest = match parse_json(body) {
        Ok(req) => req,
        Err(msg) => return sh.error(route, StatusCode::BAD_REQUEST, &msg, "invalid_json"),
    };
    let limit = req.max_completion_tokens.or(req.max_tokens);
    let tokens = match limit {
        Some(limit) if limit < u64::from(plan.tokens) => limit as u32,
        _ => plan.tokens,
    };
    let answer = Answer {
        id: sh.next_id(),
        created: unix_now(),
        model: req.model.as_deref().unwrap_or(DEFAULT_MODEL),
        prompt_tokens: prompt_tokens(body),
        completion_tokens: tokens,
        truncated: tokens < plan.tokens,
    };

    if req.stream != Some(true) {
        // A complete answer takes as long as generating every token would.
        let generation = plan
            .token_delay
            .saturating_mul(tokens.saturating_sub(1))
            .saturating_add(plan.ttft);
        sleep(generation).await;
        let bytes = match api {
            Api::Chat => render::chat_completion(&answer, &sh.content),
            Api::Text => render::text_completion(&answer, &sh.content),
            Api::Anthropic => render::anthropic_message(&answer, &sh.content),
        };
        return sh.json(bytes);
    }

    let mut ttft = plan.ttft;
    if plan.fail == Some(Fail::SlowHeaders) {
        sleep(ttft).await;
        ttft = Duration::ZERO;
    }
    let include_usage = req
        .stream_options
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let (kind, head, lead, tail) = match api {
        Api::Chat => {
            let head = render::chat_chunk_head(&answer);
            let tail = render::chat_stream_end(&head, &answer, include_usage);
            (SseKind::Chat, head, None, tail)
        }
        Api::Text => {
            let head = render::text_chunk_head(&answer);
            let tail = render::text_stream_end(&head, &answer, include_usage);
            (SseKind::Text, head, None, tail)
        }
        Api::Anthropic => {
            let lead = render::anthropic_stream_start(&answer);
            let tail = render::anthropic_stream_end(&answer);
            (SseKind::Anthropic, Bytes::new(), Some(lead), tail)
        }
    };
    let sse = Sse::new(SseSpec {
        kind,
        shared: sh.clone(),
        head,
        lead,
        tail,
        tokens,
        ttft,
        token_delay: plan.token_delay,
        reset: plan.fail == Some(Fail::ResetMidStream),
    });
    let mut resp = sh.respond(StatusCode::OK, EVENT_STREAM, MockBody::sse(sse));
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

// ---- Embeddings ---------------------------------------------------------------

#[derive(Deserialize)]
struct EmbeddingsRequest<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    input: Option<EmbeddingInput>,
    #[serde(borrow)]
    encoding_format: Option<Cow<'a, str>>,
    dimensions: Option<u64>,
}

async fn embeddings(sh: &Shared, plan: &Plan, body: &Bytes) -> Response<MockBody> {
    let bad = |msg: &str| {
        sh.error(
            Route::Embeddings,
            StatusCode::BAD_REQUEST,
            msg,
            "invalid_request",
        )
    };
    let req: EmbeddingsRequest = match parse_json(body) {
        Ok(req) => req,
        Err(msg) => return bad(&msg),
    };
    let Some(EmbeddingInput(seeds)) = req.input else {
        return bad("missing required parameter: input");
    };
    if seeds.is_empty() {
        return bad("input must not be empty");
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => return bad("encoding_format must be float or base64"),
    };
    let dimensions = req.dimensions.unwrap_or(DEFAULT_EMBEDDING_DIMENSIONS);
    if !(1..=MAX_EMBEDDING_DIMENSIONS).contains(&dimensions) {
        return bad("dimensions must be between 1 and 3072");
    }
    sleep(plan.ttft).await;
    let model = req.model.as_deref().unwrap_or(DEFAULT_MODEL);
    sh.json(render::embeddings(
        &seeds,
        dimensions as usize,
        base64,
        model,
        prompt_tokens(body),
    ))
}

/// `input` reduced to one seed per input: a string, an array of strings, a
/// token array (one input) or an array of token arrays.
struct EmbeddingInput(Vec<u64>);

impl<'de> Deserialize<'de> for EmbeddingInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(InputVisitor)
    }
}

struct InputVisitor;

impl<'de> Visitor<'de> for InputVisitor {
    type Value = EmbeddingInput;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string, an array of strings, or token arrays")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<EmbeddingInput, E> {
        Ok(EmbeddingInput(vec![fnv1a(s.as_bytes(), FNV_OFFSET)]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EmbeddingInput, A::Error> {
        let mut seeds = Vec::new();
        // A flat array of integers is one tokenized input.
        let mut tokens = None;
        while let Some(item) = seq.next_element::<InputItem>()? {
            match item {
                InputItem::Token(t) if seeds.is_empty() => {
                    tokens = Some(fnv1a(&t.to_le_bytes(), tokens.unwrap_or(FNV_OFFSET)));
                }
                InputItem::Seed(s) if tokens.is_none() => seeds.push(s),
                _ => return Err(de::Error::custom("input mixes tokens and other inputs")),
            }
            if seeds.len() > MAX_EMBEDDING_INPUTS {
                return Err(de::Error::custom("input has more than 2048 items"));
            }
        }
        if let Some(t) = tokens {
            seeds.push(t);
        }
        Ok(EmbeddingInput(seeds))
    }
}

enum InputItem {
    Token(u64),
    Seed(u64),
}

impl<'de> Deserialize<'de> for InputItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = InputItem;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, a token or a token array")
            }

            fn visit_u64<E: de::Error>(self, t: u64) -> Result<InputItem, E> {
                Ok(InputItem::Token(t))
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<InputItem, E> {
                Ok(InputItem::Seed(fnv1a(s.as_bytes(), FNV_OFFSET)))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<InputItem, A::Error> {
                let mut seed = FNV_OFFSET;
                while let Some(t) = seq.next_element::<u64>()? {
                    seed = fnv1a(&t.to_le_bytes(), seed);
                }
                Ok(InputItem::Seed(seed))
            }
        }
        d.deserialize_any(ItemVisitor)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

// ---- Echo ---------------------------------------------------------------------

#[derive(Serialize)]
struct Echo<'a> {
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    version: &'static str,
    /// The request target's authority: HTTP/2's `:authority`, which has no
    /// Host header to show it.
    authority: Option<&'a str>,
    headers: Vec<(&'a str, Cow<'a, str>)>,
    body: Cow<'a, str>,
}

fn echo(parts: &http::request::Parts, body: &[u8]) -> Vec<u8> {
    let echo = Echo {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        version: match parts.version {
            Version::HTTP_09 => "HTTP/0.9",
            Version::HTTP_10 => "HTTP/1.0",
            Version::HTTP_11 => "HTTP/1.1",
            Version::HTTP_2 => "HTTP/2.0",
            Version::HTTP_3 => "HTTP/3.0",
            _ => "unknown",
        },
        authority: parts.uri.authority().map(|a| a.as_str()),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), String::from_utf8_lossy(value.as_bytes())))
            .collect(),
        body: String::from_utf8_lossy(body),
    };
    serde_json::to_vec(&echo).unwrap_or_default()
}

/// `POST /mock/fail?fail=F[&path=P]`: from now on every request (or every
/// request for path `P`) fails with `F` (a [`Fail`]); `fail=none` ends it.
/// A request's own `x-mock-fail` still wins.
fn set_forced(sh: &Shared, query: &str) -> Result<Vec<u8>, String> {
    let mut fail = None;
    let mut path = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("fail", v)) => fail = Some(v.to_owned()),
            Some(("path", v)) => path = Some(v.to_owned()),
            _ => return Err(format!("unknown parameter '{pair}' (use fail=…&path=…)")),
        }
    }
    let fail = fail.ok_or("missing fail=… (status:NNN, hang, close, … or none)")?;
    let parsed = match fail.as_str() {
        "none" => None,
        f => Some(f.parse::<Fail>()?),
    };
    sh.opts.forced.set(parsed.map(|f| (path.clone(), f)));
    Ok(serde_json::to_vec(&serde_json::json!({ "fail": fail, "path": path })).unwrap_or_default())
}
