//! The stats listener: its own address, apart from client traffic.
//!
//! For now it answers `/healthz` (liveness) and `/stats.json` (every server's
//! admin state, weight and request counts). Prometheus metrics, the HTML
//! stats page and the runtime API arrive with issue 7 on this listener.

use std::convert::Infallible;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::gateway::Shared;
use crate::http::body::RespBody;
use crate::http::error::error_response;

pub async fn run(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(&shared, &req)) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn answer(shared: &Shared, req: &Request<Incoming>) -> Response<RespBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Use GET.",
        );
    }
    match req.uri().path() {
        "/healthz" => text("ok\n", "text/plain"),
        "/stats.json" => text(&stats_json(shared), "application/json"),
        _ => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "Try /healthz or /stats.json.",
        ),
    }
}

fn text(body: &str, ctype: &'static str) -> Response<RespBody> {
    let mut r = Response::new(RespBody::full(body.to_owned()));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

fn stats_json(shared: &Shared) -> String {
    let snap = shared.current.load();
    let backends: Vec<_> = snap
        .config
        .backends
        .iter()
        .zip(&snap.backends)
        .map(|(b, rt)| {
            let servers: Vec<_> = (0..b.servers.len())
                .map(|i| {
                    let s = rt.balancer.server(i);
                    serde_json::json!({
                        "name": s.name,
                        "status": if s.is_up() { "UP" } else { "DOWN" },
                        "admin": s.admin().as_str(),
                        "weight": s.weight(),
                        "active": s.active(),
                        "total": s.total(),
                    })
                })
                .collect();
            serde_json::json!({ "name": b.name, "balance": format!("{:?}", b.balance), "servers": servers })
        })
        .collect();
    serde_json::json!({ "version": env!("CARGO_PKG_VERSION"), "backends": backends }).to_string()
}
