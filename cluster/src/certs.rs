//! Certificate issuance for a cluster: the cluster CA, node certificates
//! and client certificates, as `llmgw-ctl cert init|node|client` makes
//! them.
//!
//! This module owns the PKI's shape; [`crate::tls`] only consumes it:
//!
//! - the CA: ECDSA P-256, valid ten years, `CN=llmgw cluster CA <key
//!   digest>` (the digest ties the name to the key, so two clusters' CAs
//!   never share a name), allowed to sign certificates only;
//! - a node certificate: ECDSA P-256, valid [`LEAF_VALIDITY_DAYS`], the
//!   identity URI `llmgw://node/<id>` plus the DNS names and IP addresses
//!   peers reach the node at (the client checks them), for both TLS server
//!   and client use (a node serves and calls);
//! - a client certificate: the identity URI `llmgw://client/<name>`, TLS
//!   client use only, so it can never pose as a node's server.
//!
//! Files: the CA directory holds `ca.pem` and `ca-key.pem`; a node's
//! directory `ca.pem`, `node.pem`, `node-key.pem`; a client's `ca.pem`,
//! `client.pem`, `client-key.pem` (see [`CertFiles`]). Private keys are
//! written with mode 0600, every file atomically. The CA key never needs to
//! leave the machine where certificates are issued.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use ring::rand::SecureRandom;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::fsutil;
use crate::tls::{self, CertFiles, PeerIdentity};
use crate::types::NodeId;

/// The CA key's file in the CA directory (next to `ca.pem`).
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// How long the CA is valid.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// How long node and client certificates are valid. Renewing is issuing
/// again with the same CA: the identity stays, the key changes.
pub const LEAF_VALIDITY_DAYS: i64 = 825;
/// Certificates start being valid this long before they are made, so a
/// peer whose clock is a little behind accepts them at once.
const BACKDATE_HOURS: i64 = 1;

/// Why a certificate could not be made or written.
#[derive(Debug)]
pub enum CertError {
    Io {
        path: PathBuf,
        source: io::Error,
    },
    /// The CA directory already holds a CA: making another would orphan
    /// every certificate it issued.
    CaExists(PathBuf),
    /// `ca.pem` and `ca-key.pem` do not belong together, or were not made
    /// by [`init_ca`].
    CaMismatch(String),
    /// A node id, host name or client name that cannot be certified.
    InvalidName(String),
    Generate(String),
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            CertError::CaExists(path) => write!(
                f,
                "{} already exists: a new CA would invalidate every certificate the existing one issued; remove it first if that is what you want",
                path.display()
            ),
            CertError::CaMismatch(msg) | CertError::InvalidName(msg) => f.write_str(msg),
            CertError::Generate(msg) => write!(f, "generating a certificate: {msg}"),
        }
    }
}

impl std::error::Error for CertError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CertError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn gen_err(e: impl fmt::Display) -> CertError {
    CertError::Generate(e.to_string())
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Where [`init_ca`] wrote the CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CaFiles {
    /// `dir/ca.pem` and `dir/ca-key.pem`.
    pub fn in_dir(dir: impl AsRef<Path>) -> CaFiles {
        let dir = dir.as_ref();
        CaFiles {
            cert: dir.join(tls::CA_FILE),
            key: dir.join(CA_KEY_FILE),
        }
    }
}

/// A cluster CA in memory, able to issue certificates.
pub struct CertificateAuthority {
    cert: Certificate,
    /// As read or first written: reissuing does not change it.
    cert_pem: String,
    key: KeyPair,
}

impl CertificateAuthority {
    /// A new CA with a fresh key.
    pub fn generate() -> Result<CertificateAuthority, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
        let mut params = ca_params(&key);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(BACKDATE_HOURS);
        params.not_after = now + time::Duration::days(CA_VALIDITY_DAYS);
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key).map_err(gen_err)?;
        let cert_pem = cert.pem();
        Ok(CertificateAuthority {
            cert,
            cert_pem,
            key,
        })
    }

    /// The CA made by [`init_ca`] in `dir`.
    pub fn load(dir: impl AsRef<Path>) -> Result<CertificateAuthority, CertError> {
        let files = CaFiles::in_dir(dir);
        let cert_pem = fs::read_to_string(&files.cert).map_err(io_err(&files.cert))?;
        let key_pem = fs::read_to_string(&files.key).map_err(io_err(&files.key))?;
        CertificateAuthority::from_pem(&cert_pem, &key_pem).map_err(|e| match e {
            CertError::CaMismatch(msg) => CertError::CaMismatch(format!(
                "{} and {}: {msg}",
                files.cert.display(),
                files.key.display()
            )),
            other => other,
        })
    }

    /// A CA from its certificate and key, PEM. The certificate must be one
    /// [`CertificateAuthority::generate`] made with this key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<CertificateAuthority, CertError> {
        let mismatch = |msg: &str| CertError::CaMismatch(msg.to_string());
        let key = KeyPair::from_pem(key_pem).map_err(|e| mismatch(&format!("the key: {e}")))?;
        let on_disk = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| mismatch(&format!("the certificate: {e}")))?;
        let on_disk_info = tls::der::parse(&on_disk).map_err(|e| mismatch(&e.to_string()))?;
        // rcgen 0.13 signs with an issuer given as a Certificate; the one
        // on disk is re-made from the key (same name, same key, so the
        // same issuer for the certificates it signs) and checked to match.
        let cert = ca_params(&key).self_signed(&key).map_err(gen_err)?;
        let made = tls::der::parse(cert.der()).map_err(|e| mismatch(&e.to_string()))?;
        if made.spki != on_disk_info.spki {
            return Err(mismatch("the certificate is not for this key"));
        }
        if made.subject != on_disk_info.subject {
            return Err(mismatch(
                "the certificate's name is not the one llmgw gives its CA (was it made by `llmgw-ctl cert init`?)",
            ));
        }
        Ok(CertificateAuthority {
            cert,
            cert_pem: cert_pem.to_string(),
            key,
        })
    }

    /// The CA certificate, PEM: what every node and client trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PEM.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate for node `id`, valid for `hosts`: the DNS names and IP
    /// addresses (no ports) peers and clients reach it at. At least one.
    pub fn issue_node(&self, id: NodeId, hosts: &[&str]) -> Result<Issued, CertError> {
        if hosts.is_empty() {
            return Err(CertError::InvalidName(format!(
                "node n{id}: a node certificate needs the host names or IP addresses it is reached at"
            )));
        }
        let mut sans = vec![identity_san(&PeerIdentity::Node(id))?];
        for host in hosts {
            sans.push(host_san(host)?);
        }
        self.issue(
            &format!("llmgw node {id}"),
            sans,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// A certificate for the client `name` (1 to 64 of `A-Z a-z 0-9 . _ -`):
    /// it may call the Admin service of any node, nothing else.
    pub fn issue_client(&self, name: &str) -> Result<Issued, CertError> {
        if !tls::valid_client_name(name) {
            return Err(CertError::InvalidName(format!(
                "'{name}' is not a client name: use 1 to 64 letters, digits, '.', '_' or '-'"
            )));
        }
        let identity = PeerIdentity::Client(name.to_string());
        self.issue(
            &format!("llmgw client {name}"),
            vec![identity_san(&identity)?],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        )
    }

    fn issue(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> Result<Issued, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = llmgw_name(common_name);
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages;
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(BACKDATE_HOURS);
        params.not_after = now + time::Duration::days(LEAF_VALIDITY_DAYS);
        params.serial_number = Some(random_serial()?);
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(gen_err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Every certificate's subject: organization `llmgw`, and its own name.
fn llmgw_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "llmgw");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// The CA's parameters, all derived from its key, so the CA can be re-made
/// from `ca-key.pem` to sign (validity and serial do not matter to what it
/// signs).
fn ca_params(key: &KeyPair) -> CertificateParams {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key_raw());
    let tag: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut params = CertificateParams::default();
    params.distinguished_name = llmgw_name(&format!("llmgw cluster CA {tag}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn random_serial() -> Result<SerialNumber, CertError> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CertError::Generate("the system's random source failed".into()))?;
    // Positive, and not starting with a zero byte DER would strip.
    bytes[0] = (bytes[0] & 0x7F) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn identity_san(identity: &PeerIdentity) -> Result<SanType, CertError> {
    let uri = identity.uri();
    uri.clone()
        .try_into()
        .map(SanType::URI)
        .map_err(|e| CertError::InvalidName(format!("'{uri}': {e}")))
}

fn host_san(host: &str) -> Result<SanType, CertError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    // The DNS name rules rustls will check the server name against.
    if rustls_pki_types::DnsName::try_from(host).is_err() {
        return Err(CertError::InvalidName(format!(
            "'{host}' is neither an IP address nor a DNS name (give hosts without a port)"
        )));
    }
    host.to_string()
        .try_into()
        .map(SanType::DnsName)
        .map_err(|e| CertError::InvalidName(format!("'{host}': {e}")))
}

/// Makes a new cluster CA in `dir` (created if needed): `ca.pem` and
/// `ca-key.pem` (mode 0600). Refuses to replace an existing CA.
///
/// Backs `llmgw-ctl cert init --dir DIR`.
pub fn init_ca(dir: impl AsRef<Path>) -> Result<CaFiles, CertError> {
    let dir = dir.as_ref();
    let files = CaFiles::in_dir(dir);
    for path in [&files.cert, &files.key] {
        if path.exists() {
            return Err(CertError::CaExists(path.clone()));
        }
    }
    create_dir(dir)?;
    let ca = CertificateAuthority::generate()?;
    // The key first: a CA certificate without its key is useless, a key
    // without a certificate is simply re-initialised.
    write_file(dir, CA_KEY_FILE, ca.key_pem().as_bytes(), 0o600)?;
    write_file(dir, tls::CA_FILE, ca.cert_pem().as_bytes(), 0o644)?;
    Ok(files)
}

/// Issues a certificate for node `id` with the CA in `ca_dir`, and writes
/// `ca.pem`, `node.pem` and `node-key.pem` (mode 0600) into `out_dir`
/// (created if needed; existing files are replaced, which is how a
/// certificate is renewed). `hosts` are the DNS names and IP addresses the
/// node is reached at, without ports.
///
/// Backs `llmgw-ctl cert node --ca DIR --id N --host H [--host H...] --out DIR`.
pub fn issue_node(
    ca_dir: impl AsRef<Path>,
    out_dir: impl AsRef<Path>,
    id: NodeId,
    hosts: &[&str],
) -> Result<CertFiles, CertError> {
    let ca = CertificateAuthority::load(ca_dir)?;
    let issued = ca.issue_node(id, hosts)?;
    let out_dir = out_dir.as_ref();
    write_set(
        &ca,
        &issued,
        out_dir,
        tls::NODE_CERT_FILE,
        tls::NODE_KEY_FILE,
    )?;
    Ok(CertFiles::node(out_dir))
}

/// Issues a certificate for the client `name` with the CA in `ca_dir`, and
/// writes `ca.pem`, `client.pem` and `client-key.pem` (mode 0600) into
/// `out_dir`.
///
/// Backs `llmgw-ctl cert client --ca DIR --name NAME --out DIR`.
pub fn issue_client(
    ca_dir: impl AsRef<Path>,
    out_dir: impl AsRef<Path>,
    name: &str,
) -> Result<CertFiles, CertError> {
    let ca = CertificateAuthority::load(ca_dir)?;
    let issued = ca.issue_client(name)?;
    let out_dir = out_dir.as_ref();
    write_set(
        &ca,
        &issued,
        out_dir,
        tls::CLIENT_CERT_FILE,
        tls::CLIENT_KEY_FILE,
    )?;
    Ok(CertFiles::client(out_dir))
}

fn write_set(
    ca: &CertificateAuthority,
    issued: &Issued,
    out_dir: &Path,
    cert_name: &str,
    key_name: &str,
) -> Result<(), CertError> {
    create_dir(out_dir)?;
    write_file(out_dir, key_name, issued.key_pem.as_bytes(), 0o600)?;
    write_file(out_dir, cert_name, issued.cert_pem.as_bytes(), 0o644)?;
    write_file(out_dir, tls::CA_FILE, ca.cert_pem().as_bytes(), 0o644)
}

fn create_dir(dir: &Path) -> Result<(), CertError> {
    fs::create_dir_all(dir).map_err(io_err(dir))
}

/// Replaces `dir/name` atomically with a file of mode `mode`; the mode is
/// set before any byte is written, so a key is never readable by others,
/// even for an instant.
fn write_file(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), CertError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // A temporary file left by an earlier crash keeps its old mode.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        fsutil::sync_dir(dir)
    };
    write().map_err(io_err(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_certificate_names_its_identity_and_hosts() {
        let ca = CertificateAuthority::generate().expect("CA");
        let issued = ca
            .issue_node(7, &["127.0.0.1", "node7.example", "::1"])
            .expect("issued");
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("PEM");
        assert_eq!(
            PeerIdentity::of_certificate(&der).expect("identity"),
            PeerIdentity::Node(7)
        );
        let client = ca.issue_client("ops").expect("issued");
        let der = CertificateDer::from_pem_slice(client.cert_pem.as_bytes()).expect("PEM");
        assert_eq!(
            PeerIdentity::of_certificate(&der).expect("identity"),
            PeerIdentity::Client("ops".into())
        );
    }

    #[test]
    fn bad_names_are_refused_with_a_reason() {
        let ca = CertificateAuthority::generate().expect("CA");
        let err = ca.issue_node(1, &[]).expect_err("no host");
        assert!(err.to_string().contains("needs the host names"), "{err}");
        let err = ca.issue_node(1, &["10.0.0.1:7000"]).expect_err("a port");
        assert!(err.to_string().contains("without a port"), "{err}");
        let err = ca.issue_client("a b").expect_err("a space");
        assert!(err.to_string().contains("not a client name"), "{err}");
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn files_are_written_keys_private_and_loadable_as_tls() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca_dir = tmp.path().join("ca");
        let ca = init_ca(&ca_dir).expect("init");
        assert_eq!(mode(&ca.key), 0o600);
        let err = init_ca(&ca_dir).expect_err("a second init");
        assert!(matches!(err, CertError::CaExists(_)), "{err}");

        let node = issue_node(&ca_dir, tmp.path().join("n3"), 3, &["127.0.0.1"]).expect("node");
        assert_eq!(node, CertFiles::node(tmp.path().join("n3")));
        assert_eq!(mode(&node.key), 0o600);
        assert_eq!(mode(&node.cert), 0o644);
        let tls = crate::tls::ClusterTls::load(&node).expect("TLS from the files");
        assert_eq!(tls.identity(), &PeerIdentity::Node(3));

        let client = issue_client(&ca_dir, tmp.path().join("ops"), "ops").expect("client");
        assert_eq!(mode(&client.key), 0o600);
        let tls = crate::tls::ClusterTls::load(&client).expect("TLS from the files");
        assert_eq!(tls.identity(), &PeerIdentity::Client("ops".into()));

        // Renewal replaces the files in place, and keeps them private.
        fs::set_permissions(&node.key, fs::Permissions::from_mode(0o644)).expect("chmod");
        issue_node(&ca_dir, tmp.path().join("n3"), 3, &["127.0.0.1"]).expect("renewed");
        assert_eq!(mode(&node.key), 0o600);
    }

    #[test]
    fn a_ca_reloads_from_its_pem_and_refuses_a_foreign_key() {
        let ca = CertificateAuthority::generate().expect("CA");
        let again = CertificateAuthority::from_pem(ca.cert_pem(), &ca.key_pem()).expect("reload");
        assert_eq!(again.cert_pem(), ca.cert_pem());
        let other = CertificateAuthority::generate().expect("CA");
        let err = CertificateAuthority::from_pem(ca.cert_pem(), &other.key_pem())
            .err()
            .expect("mismatch refused");
        assert!(err.to_string().contains("not for this key"), "{err}");
    }
}
