//! TLS client settings for checks: the server's own (`verify`, `sni`,
//! `ca`), ALPN `http/1.1` only. Certificates are verified against the
//! webpki roots plus the optional CA file; only `verify none` turns that
//! off — the very settings of `upstream`'s client, so a check fails exactly
//! when a request would.

use std::sync::Arc;

use rustls::pki_types::ServerName;

use crate::config::UpstreamTls;

/// The request path's TLS client settings for this server, with ALPN
/// `http/1.1`: checks speak HTTP/1.1.
pub fn client_config(t: &UpstreamTls) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut cfg = crate::upstream::client_tls(t)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The name to send as SNI and verify: `sni`, else the host.
pub fn server_name(t: &UpstreamTls, host: &str) -> Result<ServerName<'static>, String> {
    let n = t.sni.clone().unwrap_or_else(|| host.to_owned());
    ServerName::try_from(n.clone()).map_err(|_| format!("invalid TLS server name '{n}'"))
}
