//! Connections to upstream servers: one pooled client per server.
//!
//! Each server gets its own keep-alive pool (idle timeout and size from its
//! backend), its own protocol choice (HTTP/1.1, h2c by prior knowledge, or
//! TLS with ALPN `h2,http/1.1`) and its own TLS settings: certificates are
//! verified against the webpki roots (plus an optional CA file) with SNI from
//! the server's host name, and only `verify = "none"` turns that off.

pub mod pool;
pub mod queue;
pub mod retry;

use std::sync::Arc;

use http::uri::{Authority, Scheme};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use crate::config::{Backend, Server, ServerAddr, UpstreamProto, UpstreamTls};
use crate::http::body::ReqBody;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, ReqBody>;

/// How to reach one server.
pub struct Upstream {
    pub client: HttpClient,
    pub scheme: Scheme,
    /// `host:port` put in the request URI; it also keys the pool.
    pub authority: Authority,
    /// Plain HTTP/1.1 servers also get a pool the gateway speaks on
    /// directly (both HTTP paths; `client` then serves upgrades only);
    /// `None` for TLS and h2c servers.
    pub h1: Option<Arc<pool::H1Pool>>,
}

impl Upstream {
    /// `mock` is where the built-in mock provider listens, if it runs.
    pub fn new(
        backend: &Backend,
        server: &Server,
        mock: Option<std::net::SocketAddr>,
    ) -> Result<Self, String> {
        let (host, port) = match &server.addr {
            ServerAddr::HostPort(h, p) => (h.clone(), *p),
            ServerAddr::BuiltinMock => {
                let m = mock.ok_or("the built-in mock provider is not running")?;
                (m.ip().to_string(), m.port())
            }
        };
        // A server's `pool-max-conn` within the backend's (0 for
        // `http-reuse never`, which no server setting reopens).
        let max_idle = server
            .opts
            .pool_max_conn
            .map_or(backend.pool_max_idle, |n| n.min(backend.pool_max_idle));
        let h1 = (server.tls.is_none() && server.proto != UpstreamProto::Http2).then(|| {
            let p = Arc::new(
                pool::H1Pool::new(
                    host.clone(),
                    port,
                    backend.timeouts.connect,
                    backend.pool_idle_timeout,
                    max_idle,
                )
                .with_low_conn(server.opts.pool_low_conn.unwrap_or(0))
                .with_purge_delay(
                    server
                        .opts
                        .pool_purge_delay
                        .unwrap_or(pool::DEFAULT_PURGE_DELAY),
                ),
            );
            pool::H1Pool::start_purging(&p);
            p
        });
        let host_for_uri = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let authority: Authority = format!("{host_for_uri}:{port}")
            .parse()
            .map_err(|_| format!("server '{}': invalid address", server.name))?;

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(backend.timeouts.connect));
        http.set_keepalive(Some(std::time::Duration::from_secs(60)));

        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(backend.pool_idle_timeout)
            .pool_max_idle_per_host(max_idle);

        let (connector, scheme) = match &server.tls {
            None => {
                if server.proto == UpstreamProto::Http2 {
                    builder.http2_only(true);
                }
                let tls = client_tls(&UpstreamTls {
                    verify: true,
                    sni: None,
                    ca: None,
                })?;
                let c = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(http);
                (c, Scheme::HTTP)
            }
            Some(t) => {
                let tls = client_tls(t)?;
                let sni = t.sni.clone().unwrap_or_else(|| host.clone());
                let name = ServerName::try_from(sni.clone()).map_err(|_| {
                    format!("server '{}': invalid TLS server name '{sni}'", server.name)
                })?;
                let b = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_only()
                    .with_server_name_resolver(FixedServerNameResolver::new(name));
                let c = match server.proto {
                    UpstreamProto::Http1 => b.enable_http1().wrap_connector(http),
                    UpstreamProto::Http2 => {
                        builder.http2_only(true);
                        b.enable_http2().wrap_connector(http)
                    }
                    UpstreamProto::Auto => b.enable_all_versions().wrap_connector(http),
                };
                (c, Scheme::HTTPS)
            }
        };
        Ok(Upstream {
            client: builder.build(connector),
            scheme,
            authority,
            h1,
        })
    }
}

/// TLS client settings for a server: webpki roots plus its CA file, or
/// `verify = "none"`. Also used by health checks.
pub(crate) fn client_tls(t: &UpstreamTls) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    if !t.verify {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = &t.ca {
        let certs = CertificateDer::pem_file_iter(ca)
            .map_err(|e| format!("cannot read CA file '{}': {e}", ca.display()))?;
        for c in certs {
            let c = c.map_err(|e| format!("bad PEM in CA file '{}': {e}", ca.display()))?;
            roots
                .add(c)
                .map_err(|e| format!("bad CA certificate in '{}': {e}", ca.display()))?;
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `verify = "none"`: accept any certificate, still check handshake
/// signatures so the session keys are at least bound to the presented key.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
