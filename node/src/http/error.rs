//! Errors the gateway itself answers with, in the OpenAI error shape:
//! `{"error":{"message":…,"type":…,"code":…}}`.

use http::{header, HeaderValue, Response, StatusCode};

use super::body::RespBody;

/// Builds a gateway-made error response. `message` must never contain a
/// secret: it is shown to clients.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response<RespBody> {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    };
    let body = serde_json::json!({
        "error": { "message": message, "type": kind, "code": code }
    })
    .to_string();
    let mut resp = Response::new(RespBody::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub fn bad_request(message: &str) -> Response<RespBody> {
    error_response(StatusCode::BAD_REQUEST, "bad_request", message)
}

pub fn no_route(message: &str) -> Response<RespBody> {
    error_response(StatusCode::NOT_FOUND, "not_found", message)
}

pub fn model_not_found(model: &str) -> Response<RespBody> {
    error_response(
        StatusCode::NOT_FOUND,
        "model_not_found",
        &format!("The model `{model}` does not exist or is not served by this gateway."),
    )
}

pub fn model_required() -> Response<RespBody> {
    error_response(
        StatusCode::BAD_REQUEST,
        "model_required",
        "The request body has no `model` field, and no other rule routes this request.",
    )
}

pub fn too_large(limit: usize) -> Response<RespBody> {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        &format!(
            "Request body exceeds the {limit}-byte limit for requests routed on their content."
        ),
    )
}

pub fn no_server(backend: &str) -> Response<RespBody> {
    let mut r = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_server_available",
        &format!("No server is available to handle this request (backend '{backend}')."),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

pub fn bad_gateway(message: &str) -> Response<RespBody> {
    error_response(StatusCode::BAD_GATEWAY, "bad_gateway", message)
}

pub fn gateway_timeout(message: &str) -> Response<RespBody> {
    error_response(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", message)
}

/// The SSE event a client gets when the upstream breaks mid-stream, before
/// the stream is cut short: an OpenAI-shaped error, so SDKs raise rather
/// than take the truncated stream for a complete one.
pub fn stream_error_event() -> &'static [u8] {
    b"event: error\ndata: {\"error\":{\"message\":\"The upstream failed mid-stream; the response is incomplete.\",\"type\":\"server_error\",\"code\":\"upstream_stream_error\"}}\n\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn shape() {
        let r = model_not_found("gpt-\"x\"");
        assert_eq!(r.status(), 404);
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "not_found_error");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gpt-\"x\""));
    }
}
