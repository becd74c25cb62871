//! One active check: connect (TCP), optionally a TLS handshake, optionally
//! one HTTP/1.1 request on a fresh connection; the result is a
//! [`CheckResult`] with HAProxy's status code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::Expect;
use crate::runtime::{CheckResult, CheckStatus};

/// Largest part of a check response's body kept for `string`/`rstring`.
pub const MAX_CHECK_BODY: usize = 16 * 1024;

/// Everything needed to run a server's check, resolved once per snapshot.
pub struct Probe {
    /// Host name or IP literal, resolved at each check.
    pub host: String,
    pub port: u16,
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// `None`: a TCP check.
    pub http: Option<HttpProbe>,
    pub connect_timeout: Duration,
    /// The whole check (connect included) ends by then.
    pub total_timeout: Duration,
}

pub struct HttpProbe {
    pub method: Method,
    pub path: String,
    pub host: HeaderValue,
    /// Extra headers, the provider credential among them when configured.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub expect: Option<Expect>,
}

impl Probe {
    pub async fn run(&self) -> CheckResult {
        let start = Instant::now();
        let (status, code, info) = self.exchange(start).await;
        CheckResult {
            status,
            code,
            duration: start.elapsed(),
            info,
        }
    }

    async fn exchange(&self, start: Instant) -> (CheckStatus, Option<u16>, String) {
        let deadline = tokio::time::Instant::from_std(start + self.total_timeout);
        let connect_limit = self.connect_timeout.min(self.total_timeout);
        let tcp = match tokio::time::timeout(connect_limit, self.connect()).await {
            Err(_) => return (CheckStatus::L4Tout, None, "connect timeout".into()),
            Ok(Err(e)) => return (CheckStatus::L4Con, None, e),
            Ok(Ok(s)) => s,
        };
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => match &self.http {
                None => (CheckStatus::L4Ok, None, String::new()),
                Some(h) => http_exchange(tcp, h, deadline).await,
            },
            Some((cfg, name)) => {
                let connector = tokio_rustls::TlsConnector::from(cfg.clone());
                let tls =
                    match tokio::time::timeout_at(deadline, connector.connect(name.clone(), tcp))
                        .await
                    {
                        Err(_) => {
                            return (CheckStatus::L6Tout, None, "TLS handshake timeout".into())
                        }
                        Ok(Err(e)) => return (CheckStatus::L6Rsp, None, format!("TLS: {e}")),
                        Ok(Ok(s)) => s,
                    };
                match &self.http {
                    None => (CheckStatus::L6Ok, None, String::new()),
                    Some(h) => http_exchange(tls, h, deadline).await,
                }
            }
        }
    }

    async fn connect(&self) -> Result<TcpStream, String> {
        let addrs: Vec<SocketAddr> = match self.host.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, self.port)],
            Err(_) => tokio::net::lookup_host((self.host.as_str(), self.port))
                .await
                .map_err(|e| format!("cannot resolve '{}': {e}", self.host))?
                .collect(),
        };
        let mut last = format!("'{}' resolves to no address", self.host);
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }
}

/// One request on a fresh HTTP/1.1 connection, `Connection: close`.
async fn http_exchange<S>(
    io: S,
    h: &HttpProbe,
    deadline: tokio::time::Instant,
) -> (CheckStatus, Option<u16>, String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let work = async {
        let (mut sender, conn) = match hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(
            TokioIo::new(io),
        )
        .await
        {
            Ok(x) => x,
            Err(e) => return (CheckStatus::L7Rsp, None, e.to_string()),
        };
        // The connection future runs beside the request and is dropped with
        // it (no detached task outlives a check).
        let conn = async move {
            let _ = conn.await;
            std::future::pending::<()>().await
        };
        let req = async {
            let mut b = Request::builder()
                .method(h.method.clone())
                .uri(h.path.as_str())
                .header(http::header::HOST, h.host.clone())
                .header(http::header::USER_AGENT, "llmgw-check")
                .header(http::header::CONNECTION, "close");
            for (n, v) in &h.headers {
                b = b.header(n, v);
            }
            let req = match b.body(Empty::new()) {
                Ok(r) => r,
                Err(e) => return (CheckStatus::L7Rsp, None, e.to_string()),
            };
            let resp = match sender.send_request(req).await {
                Ok(r) => r,
                Err(e) => return (CheckStatus::L7Rsp, None, e.to_string()),
            };
            let code = resp.status().as_u16();
            let (parts, mut body) = resp.into_parts();
            let mut kept = Vec::new();
            if super::expect::needs_body(h.expect.as_ref()) {
                while kept.len() < MAX_CHECK_BODY {
                    match body.frame().await {
                        None => break,
                        Some(Err(e)) => {
                            return (CheckStatus::L7Rsp, Some(code), e.to_string());
                        }
                        Some(Ok(f)) => {
                            if let Ok(d) = f.into_data() {
                                let room = MAX_CHECK_BODY - kept.len();
                                kept.extend_from_slice(&d[..d.len().min(room)]);
                            }
                        }
                    }
                }
            }
            let status = super::expect::evaluate(h.expect.as_ref(), code, &parts.headers, &kept);
            let info = if status.passed() {
                String::new()
            } else {
                format!("HTTP status {code}")
            };
            (status, Some(code), info)
        };
        tokio::select! {
            r = req => r,
            _ = conn => (CheckStatus::L7Rsp, None, "connection closed".into()),
        }
    };
    match tokio::time::timeout_at(deadline, work).await {
        Ok(r) => r,
        Err(_) => (CheckStatus::L7Tout, None, "response timeout".into()),
    }
}
