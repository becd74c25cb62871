//! Mutual TLS for every gRPC connection of the cluster: node to node (Raft)
//! and `llmgw-ctl` to node (Admin).
//!
//! This module owns:
//!
//! - the key material ([`TlsMaterial`], loaded from [`CertFiles`]) and the
//!   rustls configurations built from it ([`ClusterTls`]): the server
//!   requires a client certificate signed by the cluster CA, the client
//!   trusts only the cluster CA and presents its own certificate; TLS 1.3
//!   only, ALPN `h2`, with rustls's `ring` provider passed explicitly (never
//!   the process default, which the workspace leaves ambiguous by enabling
//!   both `ring` and `aws-lc-rs`);
//! - who a peer is ([`PeerIdentity`]): read from the certificate's subject
//!   alternative name URI `llmgw://node/<id>` or `llmgw://client/<name>`
//!   (the common name, in the same syntax, is the fallback), and attached
//!   to every request a server receives as a [`PeerInfo`] extension, which
//!   [`peer`] reads back in a handler;
//! - the sockets: [`TlsIncoming`] (accepting, with a handshake timeout) and
//!   [`TlsConnector`] (connecting, and checking that the server is the node
//!   expected), in [`net`].
//!
//! The certificates themselves are issued by [`crate::certs`].

pub(crate) mod der;
pub mod net;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tonic::transport::Channel;

use crate::types::NodeId;

pub use net::{ChannelOptions, ExpectPeer, TlsConn, TlsConnector, TlsIncoming};

/// File names in a node's TLS directory.
pub const CA_FILE: &str = "ca.pem";
pub const NODE_CERT_FILE: &str = "node.pem";
pub const NODE_KEY_FILE: &str = "node-key.pem";
/// File names in a client's (`llmgw-ctl`'s) TLS directory.
pub const CLIENT_CERT_FILE: &str = "client.pem";
pub const CLIENT_KEY_FILE: &str = "client-key.pem";

/// The URI scheme of identities in certificates.
const URI_PREFIX: &str = "llmgw://";

/// Where a node's or a client's PEM files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The cluster CA's certificate: the only one trusted.
    pub ca: PathBuf,
    /// This end's certificate, optionally followed by intermediates.
    pub cert: PathBuf,
    /// This end's private key (PKCS#8, SEC1 or PKCS#1 PEM).
    pub key: PathBuf,
}

impl CertFiles {
    /// `dir/ca.pem`, `dir/node.pem`, `dir/node-key.pem`.
    pub fn node(dir: impl AsRef<Path>) -> CertFiles {
        let dir = dir.as_ref();
        CertFiles {
            ca: dir.join(CA_FILE),
            cert: dir.join(NODE_CERT_FILE),
            key: dir.join(NODE_KEY_FILE),
        }
    }

    /// `dir/ca.pem`, `dir/client.pem`, `dir/client-key.pem`.
    pub fn client(dir: impl AsRef<Path>) -> CertFiles {
        let dir = dir.as_ref();
        CertFiles {
            ca: dir.join(CA_FILE),
            cert: dir.join(CLIENT_CERT_FILE),
            key: dir.join(CLIENT_KEY_FILE),
        }
    }
}

/// PEM texts: the cluster CA, this end's certificate chain and its key.
#[derive(Clone)]
pub struct TlsMaterial {
    pub ca: Vec<u8>,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca", &format_args!("{} bytes", self.ca.len()))
            .field("cert", &format_args!("{} bytes", self.cert.len()))
            .field("key", &"<redacted>")
            .finish()
    }
}

impl TlsMaterial {
    /// Reads the three files.
    pub fn load(files: &CertFiles) -> Result<TlsMaterial, TlsError> {
        let read = |part: Part, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                part,
                path: path.to_path_buf(),
                source,
            })
        };
        Ok(TlsMaterial {
            ca: read(Part::Ca, &files.ca)?,
            cert: read(Part::Cert, &files.cert)?,
            key: read(Part::Key, &files.key)?,
        })
    }

    fn parsed(&self) -> Result<Parsed, TlsError> {
        let pem_err = |part: Part| {
            move |e: rustls_pki_types::pem::Error| TlsError::Pem {
                part,
                path: None,
                detail: e.to_string(),
            }
        };
        let ca: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&self.ca)
            .collect::<Result<_, _>>()
            .map_err(pem_err(Part::Ca))?;
        if ca.is_empty() {
            return Err(TlsError::Pem {
                part: Part::Ca,
                path: None,
                detail: "no certificate in it".into(),
            });
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<_, _>>()
            .map_err(pem_err(Part::Cert))?;
        let Some(leaf) = chain.first() else {
            return Err(TlsError::Pem {
                part: Part::Cert,
                path: None,
                detail: "no certificate in it".into(),
            });
        };
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(pem_err(Part::Key))?;
        let identity = PeerIdentity::of_certificate(leaf)?;
        let mut roots = RootCertStore::empty();
        for cert in ca {
            roots.add(cert).map_err(|e| TlsError::Pem {
                part: Part::Ca,
                path: None,
                detail: format!("not a usable CA certificate: {e}"),
            })?;
        }
        Ok(Parsed {
            roots: Arc::new(roots),
            chain,
            key,
            identity,
        })
    }
}

struct Parsed {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    identity: PeerIdentity,
}

/// Which of the three PEM inputs an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Ca,
    Cert,
    Key,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Ca => "CA certificate",
            Part::Cert => "certificate",
            Part::Key => "private key",
        })
    }
}

/// Why TLS could not be set up, or a peer was refused.
#[derive(Debug)]
pub enum TlsError {
    Read {
        part: Part,
        path: PathBuf,
        source: io::Error,
    },
    Pem {
        part: Part,
        path: Option<PathBuf>,
        detail: String,
    },
    /// rustls refused to build a configuration (a key that does not match
    /// the certificate, an unsupported key type).
    Config(String),
    /// A certificate that names no llmgw identity, or a malformed one.
    Identity(String),
    /// An address a channel cannot be built for.
    Address(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { part, path, source } => {
                write!(f, "reading the {part} {}: {source}", path.display())
            }
            TlsError::Pem {
                part,
                path: Some(path),
                detail,
            } => write!(f, "{}: {part}: {detail}", path.display()),
            TlsError::Pem {
                part,
                path: None,
                detail,
            } => write!(f, "{part}: {detail}"),
            TlsError::Config(msg) | TlsError::Identity(msg) | TlsError::Address(msg) => {
                f.write_str(msg)
            }
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<TlsError> for io::Error {
    fn from(e: TlsError) -> io::Error {
        let kind = match &e {
            TlsError::Read { source, .. } => source.kind(),
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

impl TlsError {
    /// Names the file a PEM error came from.
    fn in_files(self, files: &CertFiles) -> TlsError {
        match self {
            TlsError::Pem {
                part,
                path: None,
                detail,
            } => {
                let path = match part {
                    Part::Ca => &files.ca,
                    Part::Cert => &files.cert,
                    Part::Key => &files.key,
                };
                TlsError::Pem {
                    part,
                    path: Some(path.clone()),
                    detail,
                }
            }
            TlsError::Identity(msg) => {
                TlsError::Identity(format!("{}: {msg}", files.cert.display()))
            }
            TlsError::Config(msg) => TlsError::Config(format!(
                "{} with {}: {msg}",
                files.cert.display(),
                files.key.display()
            )),
            other => other,
        }
    }
}

/// Who is at the other end of a connection, as its certificate says.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerIdentity {
    /// A cluster member: may call the Raft service and the Admin service.
    Node(NodeId),
    /// An operator or tool (`llmgw-ctl`): may call only the Admin service.
    Client(String),
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerIdentity::Node(id) => write!(f, "node n{id}"),
            PeerIdentity::Client(name) => write!(f, "client '{name}'"),
        }
    }
}

/// Whether `name` may name a client: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn valid_client_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl PeerIdentity {
    /// The URI a certificate carries for this identity.
    pub fn uri(&self) -> String {
        match self {
            PeerIdentity::Node(id) => format!("{URI_PREFIX}node/{id}"),
            PeerIdentity::Client(name) => format!("{URI_PREFIX}client/{name}"),
        }
    }

    /// Reads `llmgw://node/<id>` or `llmgw://client/<name>`; anything else
    /// (another scheme, a malformed id or name) is `None`.
    pub fn from_uri(uri: &str) -> Option<PeerIdentity> {
        let rest = uri.strip_prefix(URI_PREFIX)?;
        if let Some(id) = rest.strip_prefix("node/") {
            // Digits only: `+5` or ` 5` would parse elsewhere.
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            return id.parse().ok().map(PeerIdentity::Node);
        }
        let name = rest.strip_prefix("client/")?;
        valid_client_name(name).then(|| PeerIdentity::Client(name.to_string()))
    }

    /// The identity a DER certificate names: its one `llmgw://` URI among
    /// the subject alternative names, else its common name if that is such
    /// a URI. Two different llmgw identities in one certificate are refused.
    pub fn of_certificate(der: &[u8]) -> Result<PeerIdentity, TlsError> {
        let info = der::parse(der).map_err(|e| TlsError::Identity(e.to_string()))?;
        let mut found: Option<PeerIdentity> = None;
        for uri in info.uris.iter().filter(|u| u.starts_with(URI_PREFIX)) {
            let identity = PeerIdentity::from_uri(uri).ok_or_else(|| {
                TlsError::Identity(format!(
                    "the certificate names '{uri}', which is not llmgw://node/<id> or llmgw://client/<name>"
                ))
            })?;
            match &found {
                Some(other) if *other != identity => {
                    return Err(TlsError::Identity(format!(
                        "the certificate names two identities, {other} and {identity}"
                    )))
                }
                _ => found = Some(identity),
            }
        }
        if let Some(identity) = found {
            return Ok(identity);
        }
        info.common_name
            .as_deref()
            .and_then(PeerIdentity::from_uri)
            .ok_or_else(|| {
                TlsError::Identity(
                    "the certificate names no llmgw identity (a subject alternative name URI llmgw://node/<id> or llmgw://client/<name>)".into(),
                )
            })
    }
}

/// What a server knows about the peer of a request: attached by
/// [`TlsIncoming`] to every request of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub identity: PeerIdentity,
    pub remote_addr: Option<SocketAddr>,
}

/// The authenticated peer of a request served over [`TlsIncoming`].
///
/// An Admin handler calls this first: any identity may use the Admin
/// service (clients and nodes, which forward to the leader). A request
/// without one did not come through mutual TLS, and is refused as
/// unauthenticated.
pub fn peer<T>(request: &tonic::Request<T>) -> Result<&PeerInfo, tonic::Status> {
    request
        .extensions()
        .get::<PeerInfo>()
        .ok_or_else(|| tonic::Status::unauthenticated("no authenticated peer: mutual TLS required"))
}

/// The peer of a Raft request, which must be node `from`, the id the
/// request claims to come from.
pub fn require_node<T>(request: &tonic::Request<T>, from: NodeId) -> Result<NodeId, tonic::Status> {
    let peer = peer(request)?;
    match &peer.identity {
        PeerIdentity::Node(id) if *id == from => Ok(*id),
        PeerIdentity::Node(id) => Err(tonic::Status::permission_denied(format!(
            "the request claims to come from n{from} but its certificate is node n{id}"
        ))),
        PeerIdentity::Client(name) => Err(tonic::Status::permission_denied(format!(
            "client '{name}' may not call the Raft service: only node certificates may"
        ))),
    }
}

/// rustls's `ring` provider, passed explicitly to every configuration.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const ALPN_H2: &[u8] = b"h2";

/// The rustls configurations of one end, server and client, and who that
/// end is. Cheap to clone.
#[derive(Clone)]
pub struct ClusterTls {
    identity: PeerIdentity,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterTls")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl ClusterTls {
    /// Builds both configurations from PEM texts.
    pub fn new(material: &TlsMaterial) -> Result<ClusterTls, TlsError> {
        let parsed = material.parsed()?;
        Ok(ClusterTls {
            server: server_config_from(&parsed)?,
            client: client_config_from(&parsed)?,
            identity: parsed.identity,
        })
    }

    /// Reads the files and builds both configurations; errors name the file.
    pub fn load(files: &CertFiles) -> Result<ClusterTls, TlsError> {
        ClusterTls::new(&TlsMaterial::load(files)?).map_err(|e| e.in_files(files))
    }

    /// Who this end is, from its own certificate.
    pub fn identity(&self) -> &PeerIdentity {
        &self.identity
    }

    /// Requires a client certificate signed by the cluster CA; TLS 1.3,
    /// ALPN `h2`.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.server)
    }

    /// Trusts only the cluster CA, presents this end's certificate; TLS
    /// 1.3, ALPN `h2`.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.client)
    }

    /// Accepts mutual-TLS connections on `listener`, for
    /// `tonic::transport::Server::serve_with_incoming`.
    pub fn incoming(&self, listener: TcpListener) -> TlsIncoming {
        TlsIncoming::new(listener, self.server_config())
    }

    /// A lazily connecting channel to the node at `addr` (`host:port`).
    /// `expect` says which node the server's certificate must name.
    pub fn channel(
        &self,
        addr: &str,
        expect: ExpectPeer,
        opts: &ChannelOptions,
    ) -> Result<Channel, TlsError> {
        net::channel(self.client_config(), addr, expect, opts)
    }
}

/// The server configuration `material` makes (see [`ClusterTls::server_config`]).
pub fn server_config(material: &TlsMaterial) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_from(&material.parsed()?)
}

/// The client configuration `material` makes (see [`ClusterTls::client_config`]).
pub fn client_config(material: &TlsMaterial) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_from(&material.parsed()?)
}

fn config_err(e: impl fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

fn server_config_from(parsed: &Parsed) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(&parsed.roots), provider.clone())
            .build()
            .map_err(config_err)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(parsed.chain.clone(), parsed.key.clone_key())
        .map_err(config_err)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

fn client_config_from(parsed: &Parsed) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::clone(&parsed.roots),
        provider.clone(),
    )
    .build()
    .map_err(config_err)?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_err)?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(parsed.chain.clone(), parsed.key.clone_key())
        .map_err(config_err)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_through_their_uri() {
        for identity in [
            PeerIdentity::Node(0),
            PeerIdentity::Node(u64::MAX),
            PeerIdentity::Client("ops-1.example_2".into()),
        ] {
            assert_eq!(PeerIdentity::from_uri(&identity.uri()), Some(identity));
        }
    }

    #[test]
    fn malformed_identity_uris_are_refused() {
        for uri in [
            "llmgw://node/",
            "llmgw://node/+5",
            "llmgw://node/ 5",
            "llmgw://node/5/x",
            "llmgw://node/18446744073709551616",
            "llmgw://client/",
            "llmgw://client/a b",
            "llmgw://client/a/b",
            "llmgw://admin/x",
            "https://node/5",
        ] {
            assert_eq!(PeerIdentity::from_uri(uri), None, "{uri}");
        }
        assert!(!valid_client_name(&"a".repeat(65)));
    }

    #[test]
    fn a_request_without_peer_info_is_unauthenticated() {
        let request = tonic::Request::new(());
        let status = peer(&request).expect_err("no peer");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn raft_callers_must_be_the_node_they_claim() {
        let with = |identity: PeerIdentity| {
            let mut request = tonic::Request::new(());
            request.extensions_mut().insert(PeerInfo {
                identity,
                remote_addr: None,
            });
            request
        };
        assert_eq!(require_node(&with(PeerIdentity::Node(3)), 3).ok(), Some(3));
        let impostor = require_node(&with(PeerIdentity::Node(3)), 2).expect_err("mismatch");
        assert_eq!(impostor.code(), tonic::Code::PermissionDenied);
        assert!(impostor.message().contains("claims to come from n2"));
        let client =
            require_node(&with(PeerIdentity::Client("ops".into())), 1).expect_err("a client");
        assert_eq!(client.code(), tonic::Code::PermissionDenied);
        assert!(client.message().contains("client 'ops'"));
    }

    #[test]
    fn broken_pem_is_reported_with_its_part() {
        let material = TlsMaterial {
            ca: b"garbage".to_vec(),
            cert: Vec::new(),
            key: Vec::new(),
        };
        let err = ClusterTls::new(&material).expect_err("refused");
        assert_eq!(err.to_string(), "CA certificate: no certificate in it");
        let files = CertFiles::node("/etc/llmgw/tls");
        assert_eq!(
            err.in_files(&files).to_string(),
            "/etc/llmgw/tls/ca.pem: CA certificate: no certificate in it"
        );
        let missing =
            ClusterTls::load(&CertFiles::node("/nonexistent/llmgw")).expect_err("missing");
        assert!(
            missing
                .to_string()
                .starts_with("reading the CA certificate /nonexistent/llmgw/ca.pem: "),
            "{missing}"
        );
    }
}
