//! TLS termination: certificates from PEM files, chosen by SNI, with ALPN.
//!
//! The server side runs on aws-lc (rustls' `aws_lc_rs` provider), the
//! upstream side on ring: a full handshake is dominated by the server's
//! signature, and aws-lc signs RSA-2048 about twice as fast as ring (full
//! RSA handshakes/s went from 1.11x to 1.51x HAProxy's in the bench).

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{CertFiles, Tls};

/// Loads one certificate chain and its key. Errors name the file and what is
/// wrong, never key material.
pub fn load_certified_key(files: &CertFiles) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| format!("cannot read certificate '{}': {e}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PEM in '{}': {e}", files.cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "no certificate found in '{}'",
            files.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("no usable private key in '{}': {e}", files.key.display()))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("unsupported private key in '{}': {e}", files.key.display()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| {
        format!(
            "key '{}' does not match certificate '{}': {e}",
            files.key.display(),
            files.cert.display()
        )
    })?;
    Ok(Arc::new(ck))
}

/// Picks a certificate by SNI: exact name, then `*.parent` wildcard, then the
/// first configured certificate.
#[derive(Debug)]
struct SniResolver {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let name = name.to_ascii_lowercase();
        if let Some(k) = self.by_name.get(&name) {
            return Some(k.clone());
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = self.by_name.get(&format!("*.{parent}")) {
                return Some(k.clone());
            }
        }
        Some(self.default.clone())
    }
}

/// The names a certificate answers for (its subject alternative DNS names).
fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    // A minimal DER walk would be possible, but rustls' webpki already parses
    // certificates; use it to list the names the certificate is valid for.
    match webpki::EndEntityCert::try_from(cert) {
        Ok(ee) => ee
            .valid_dns_names()
            .map(|n| n.to_ascii_lowercase())
            .collect(),
        Err(_) => Vec::new(),
    }
}

pub fn server_config(tls: &Tls) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut by_name = HashMap::new();
    let mut default = None;
    for files in &tls.certs {
        let ck = load_certified_key(files)?;
        for name in dns_names(&ck.cert[0]) {
            by_name.entry(name).or_insert_with(|| ck.clone());
        }
        default.get_or_insert(ck);
    }
    let default = default.ok_or("no certificate configured")?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { by_name, default }));
    cfg.alpn_protocols = tls.alpn.clone();
    cfg.session_storage = if tls.session_cache > 0 {
        rustls::server::ServerSessionMemoryCache::new(tls.session_cache)
    } else {
        Arc::new(rustls::server::NoServerSessionStorage {})
    };
    if tls.tickets {
        cfg.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| e.to_string())?;
    } else if tls.session_cache == 0 {
        // Nothing to resume from: announce no TLS 1.3 tickets either.
        cfg.send_tls13_tickets = 0;
    }
    Ok(Arc::new(cfg))
}
