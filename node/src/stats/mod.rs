//! The stats listener: its own address, apart from client traffic.
//!
//! - `/healthz`: liveness, always open (probes carry no credentials).
//! - `/stats`: the stats page (`page.rs`, `page.html`), HAProxy-style
//!   tables of frontends, backends and servers, refreshed live, with admin
//!   controls; also at the configured `stats uri`.
//! - `/stats.json`: the document the page polls (`json.rs`).
//! - `/metrics`: the traffic counters in Prometheus's format
//!   (`prometheus.rs`).
//! - `GET /stats/whoami`: checks a login (the page's login form).
//! - `POST /stats/admin`: ready / drain / maint / weight on servers
//!   (`admin.rs`).
//!
//! Reads are open, or need a configured user when `read_auth` says so
//! (`auth.rs`); admin actions always need one.
//!
//! The runtime API has its own unix socket (`crate::admin`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

mod admin;
mod auth;
mod json;
mod page;
mod prometheus;

use crate::gateway::Shared;
use crate::http::body::RespBody;
use crate::http::error::error_response;

/// How long a client has to send a request head or an admin body: the
/// listener is for operators and scrapers, none of which is slow.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub async fn run(listener: Arc<TcpListener>, shared: Arc<Shared>) {
    // Uptime counts from here.
    let _ = *json::STARTED;
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(&shared, peer, req).await) }
            });
            let mut b = auto::Builder::new(TokioExecutor::new());
            b.http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT);
            let _ = b.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// Is this one of the page's paths: `/stats`, or the configured `stats
/// uri`, which HAProxy matches as a prefix of the path and query?
fn is_page(req: &Request<Incoming>, uri: Option<&str>) -> bool {
    let path = req.uri().path();
    if path == "/stats" || path == "/stats/" {
        return true;
    }
    let Some(u) = uri else { return false };
    let pq = req.uri().path_and_query().map_or(path, |p| p.as_str());
    pq.starts_with(u)
}

async fn answer(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<RespBody> {
    // The access rules of the configuration being served: a reload that
    // changes users applies to the next request.
    let access = shared.current.load().config.global.stats_access.clone();
    let path = req.uri().path();
    if path == "/stats/admin" {
        return admin_request(shared, &access, peer, req).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Use GET (POST only on /stats/admin).",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if path == "/healthz" {
        return text("ok\n", "text/plain");
    }
    let known = matches!(path, "/stats.json" | "/metrics" | "/stats/whoami");
    if !known && !is_page(&req, access.uri.as_deref()) {
        return error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "Try /stats, /stats.json, /metrics or /healthz.",
        );
    }
    if path == "/stats/whoami" {
        return whoami(&access, req.headers());
    }
    if let Err(r) = auth::read(&access, req.headers()) {
        return *r;
    }
    let mut r = match path {
        "/stats.json" => text(json::document(shared).to_string(), "application/json"),
        "/metrics" => text(
            prometheus::render(shared),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        _ => page::render(&json::document(shared)),
    };
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET /stats/whoami`: 200 with the user's name when the credentials are
/// a configured user's, else 401 (403 when there are no users at all).
fn whoami(access: &crate::config::StatsAccess, headers: &http::HeaderMap) -> Response<RespBody> {
    if access.users.is_empty() {
        return error_response(
            StatusCode::FORBIDDEN,
            "no_users",
            "No stats user is configured: there is nothing to log in to.",
        );
    }
    match auth::caller(access, headers) {
        auth::Caller::User(u) => {
            let body = serde_json::json!({ "user": u, "admin": access.admin });
            let mut r = text(body.to_string(), "application/json");
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        auth::Caller::Anonymous => auth::challenge(
            access,
            headers,
            "Send a user name and password (basic auth).",
        ),
        auth::Caller::Refused => auth::challenge(access, headers, "Wrong user name or password."),
    }
}

/// `POST /stats/admin`: method, admin enabled, same origin, user, JSON
/// body — in that order, so nothing is read or parsed for a caller who
/// may not act, and nothing says which backends exist before a login.
async fn admin_request(
    shared: &Arc<Shared>,
    access: &crate::config::StatsAccess,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<RespBody> {
    if req.method() != Method::POST {
        let mut r = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Admin actions are POSTed as JSON.",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    if let Some(r) = admin::cross_site(req.headers()) {
        tracing::warn!(%peer, "stats page: admin action from another site refused");
        return r;
    }
    let user = match auth::admin(access, req.headers()) {
        Ok(u) => u,
        Err(r) => {
            if r.status() == StatusCode::UNAUTHORIZED
                && req.headers().contains_key(header::AUTHORIZATION)
            {
                // The peer only: what was typed may be a password.
                tracing::warn!(%peer, "stats page: admin action with wrong credentials refused");
            }
            return *r;
        }
    };
    if !admin::is_json(req.headers()) {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the action as JSON (Content-Type: application/json).",
        );
    }
    let body = Limited::new(req.into_body(), admin::MAX_BODY);
    let body = match tokio::time::timeout(REQUEST_TIMEOUT, body.collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "The action is larger than any action needs to be.",
            )
        }
        _ => {
            return error_response(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "The body did not arrive.",
            )
        }
    };
    admin::apply(shared, &user, &body)
}

fn text(body: impl Into<bytes::Bytes>, ctype: &'static str) -> Response<RespBody> {
    let mut r = Response::new(RespBody::full(body));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}
