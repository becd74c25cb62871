//! Just enough DER to read what llmgw needs from an X.509 certificate: the
//! subject name, the public key info, the common name and the URIs of the
//! subject alternative names. Signatures, validity and chains are rustls's
//! business (webpki); this reader only runs on certificates rustls has
//! already verified, or on our own CA's, and still refuses anything
//! malformed with an error rather than a panic.

use std::fmt;

/// Why a certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerError(pub &'static str);

impl fmt::Display for DerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed certificate: {}", self.0)
    }
}

impl std::error::Error for DerError {}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
/// `[0] EXPLICIT`: the version.
const VERSION: u8 = 0xA0;
/// `[3] EXPLICIT`: the extensions.
const EXTENSIONS: u8 = 0xA3;
/// GeneralName `[6] IMPLICIT IA5String`: uniformResourceIdentifier.
const GENERAL_NAME_URI: u8 = 0x86;

/// 2.5.29.17, subjectAltName.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1D, 0x11];
/// 2.5.4.3, commonName.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// One TLV: its tag, its value, and the whole encoding.
#[derive(Debug, Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    value: &'a [u8],
    whole: &'a [u8],
}

/// Reads TLVs one after the other from a buffer.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.buf.first().copied()
    }

    fn next(&mut self) -> Result<Tlv<'a>, DerError> {
        let buf = self.buf;
        let (&tag, rest) = buf.split_first().ok_or(DerError("truncated"))?;
        if tag & 0x1F == 0x1F {
            return Err(DerError("multi-byte tag"));
        }
        let (&first, rest) = rest.split_first().ok_or(DerError("truncated length"))?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7F);
            if n == 0 || n > 4 {
                return Err(DerError("unsupported length encoding"));
            }
            let bytes = rest.get(..n).ok_or(DerError("truncated length"))?;
            let len = bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &rest[n..])
        };
        let value = rest
            .get(..len)
            .ok_or(DerError("length runs past the end"))?;
        let header = buf.len() - rest.len();
        let whole = &buf[..header + len];
        self.buf = &rest[len..];
        Ok(Tlv { tag, value, whole })
    }

    fn expect(&mut self, tag: u8, what: &'static str) -> Result<Tlv<'a>, DerError> {
        let tlv = self.next()?;
        if tlv.tag != tag {
            return Err(DerError(what));
        }
        Ok(tlv)
    }
}

/// What llmgw reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo<'a> {
    /// The subject Name, whole DER.
    pub subject: &'a [u8],
    /// The SubjectPublicKeyInfo, whole DER.
    pub spki: &'a [u8],
    /// The first commonName of the subject, when it is a string.
    pub common_name: Option<String>,
    /// The uniformResourceIdentifier entries of the subjectAltName.
    pub uris: Vec<String>,
}

/// Reads a DER certificate.
pub fn parse(cert: &[u8]) -> Result<CertInfo<'_>, DerError> {
    let mut outer = Reader::new(cert);
    let certificate = outer.expect(SEQUENCE, "not a SEQUENCE")?;
    let mut cert_fields = Reader::new(certificate.value);
    let tbs = cert_fields.expect(SEQUENCE, "tbsCertificate is not a SEQUENCE")?;
    let mut tbs = Reader::new(tbs.value);
    if tbs.peek_tag() == Some(VERSION) {
        tbs.next()?;
    }
    tbs.next()?; // serialNumber
    tbs.expect(SEQUENCE, "signature algorithm")?;
    tbs.expect(SEQUENCE, "issuer")?;
    tbs.expect(SEQUENCE, "validity")?;
    let subject = tbs.expect(SEQUENCE, "subject")?;
    let spki = tbs.expect(SEQUENCE, "subjectPublicKeyInfo")?;
    let mut uris = Vec::new();
    while !tbs.is_empty() {
        let field = tbs.next()?;
        if field.tag == EXTENSIONS {
            read_extensions(field.value, &mut uris)?;
        }
    }
    Ok(CertInfo {
        subject: subject.whole,
        spki: spki.whole,
        common_name: common_name(subject.value)?,
        uris,
    })
}

fn common_name(name: &[u8]) -> Result<Option<String>, DerError> {
    let mut rdns = Reader::new(name);
    while !rdns.is_empty() {
        let rdn = rdns.expect(SET, "a name part is not a SET")?;
        let mut attrs = Reader::new(rdn.value);
        while !attrs.is_empty() {
            let attr = attrs.expect(SEQUENCE, "a name attribute is not a SEQUENCE")?;
            let mut fields = Reader::new(attr.value);
            let oid = fields.expect(OID, "a name attribute has no type")?;
            let value = fields.next()?;
            if oid.value == OID_COMMON_NAME {
                // UTF8String, PrintableString and IA5String are all
                // valid UTF-8; other string types are not names we issue.
                return Ok(std::str::from_utf8(value.value).ok().map(str::to_string));
            }
        }
    }
    Ok(None)
}

fn read_extensions(explicit: &[u8], uris: &mut Vec<String>) -> Result<(), DerError> {
    let mut outer = Reader::new(explicit);
    let list = outer.expect(SEQUENCE, "extensions are not a SEQUENCE")?;
    let mut list = Reader::new(list.value);
    while !list.is_empty() {
        let ext = list.expect(SEQUENCE, "an extension is not a SEQUENCE")?;
        let mut fields = Reader::new(ext.value);
        let oid = fields.expect(OID, "an extension has no id")?;
        if fields.peek_tag() == Some(BOOLEAN) {
            fields.next()?;
        }
        let value = fields.expect(OCTET_STRING, "an extension value is not an OCTET STRING")?;
        if oid.value != OID_SUBJECT_ALT_NAME {
            continue;
        }
        let mut names = Reader::new(value.value);
        let names = names.expect(SEQUENCE, "subjectAltName is not a SEQUENCE")?;
        let mut names = Reader::new(names.value);
        while !names.is_empty() {
            let name = names.next()?;
            if name.tag == GENERAL_NAME_URI {
                let uri = std::str::from_utf8(name.value)
                    .map_err(|_| DerError("a URI name is not ASCII"))?;
                uris.push(uri.to_string());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(sans: Vec<rcgen::SanType>, cn: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "llmgw");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn reads_the_common_name_and_uri_names() {
        let der = cert_with(
            vec![
                rcgen::SanType::DnsName("localhost".try_into().expect("dns")),
                rcgen::SanType::URI("llmgw://node/7".try_into().expect("uri")),
                rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip")),
            ],
            "node 7",
        );
        let info = parse(&der).expect("parses");
        assert_eq!(info.common_name.as_deref(), Some("node 7"));
        assert_eq!(info.uris, vec!["llmgw://node/7".to_string()]);
        assert_eq!(info.subject.first(), Some(&SEQUENCE));
        assert_eq!(info.spki.first(), Some(&SEQUENCE));
    }

    #[test]
    fn a_certificate_without_alt_names_has_no_uris() {
        let der = cert_with(Vec::new(), "plain");
        let info = parse(&der).expect("parses");
        assert!(info.uris.is_empty());
        assert_eq!(info.common_name.as_deref(), Some("plain"));
    }

    #[test]
    fn truncated_or_garbage_input_is_an_error_not_a_panic() {
        let der = cert_with(
            vec![rcgen::SanType::URI(
                "llmgw://client/ops".try_into().expect("uri"),
            )],
            "x",
        );
        for len in 0..der.len() {
            assert!(parse(&der[..len]).is_err(), "prefix of {len} bytes");
        }
        assert!(parse(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
        assert!(parse(&[0x1F, 0x01, 0x00]).is_err());
        assert!(parse(b"not DER at all").is_err());
    }
}
