//! Device certificates for C2PA signing: an end-entity certificate for the device's
//! Ed25519 key, issued by a one-off self-signed device CA (pilots) or by an operator's CA from a
//! PKCS#10 request. Signing goes through the device key (`rcgen`'s remote key seam over
//! [`DeviceKey`]), so the private key never leaves the key file's owner.
//!
//! The end-entity certificate has what C2PA asks of a claim signer: version 3, keyUsage
//! digitalSignature (critical), extendedKeyUsage id-kp-documentSigning (1.3.6.1.5.5.7.3.36),
//! C2PA signing (1.3.6.1.4.1.62558.2.1) and id-kp-emailProtection (1.3.6.1.5.5.7.3.4, see
//! [`EKU_EMAIL_PROTECTION`]), basicConstraints CA:FALSE, authority key identifier, subject CN =
//! device id.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, RemoteKeyPair, SerialNumber,
};

use super::keys::{DeviceKey, SPKI_PREFIX};
use crate::record::Signer;

/// id-kp-emailProtection: listed by C2PA for claim signers, and the only one of the three that
/// c2pa-rs based readers (c2pa-python 0.38) accept before a trust configuration is loaded.
pub const EKU_EMAIL_PROTECTION: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 3, 4];
/// id-kp-documentSigning (RFC 9336).
pub const EKU_DOCUMENT_SIGNING: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 3, 36];
/// C2PA claim signing (C2PA 2.x, 1.3.6.1.4.1.62558.2.1).
pub const EKU_C2PA: [u64; 9] = [1, 3, 6, 1, 4, 1, 62558, 2, 1];

/// A certificate chain, leaf first (DER).
#[derive(Debug, Clone, PartialEq)]
pub struct CertChain {
    pub certs: Vec<Vec<u8>>,
}

impl CertChain {
    /// Every `CERTIFICATE` block of a PEM file, in order (leaf first).
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let mut rd = pem;
        let certs: Vec<Vec<u8>> = rustls_pemfile::certs(&mut rd)
            .map(|c| c.map(|c| c.as_ref().to_vec()))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("bad PEM: {e}"))?;
        if certs.is_empty() {
            return Err("no CERTIFICATE in the file".into());
        }
        for (i, c) in certs.iter().enumerate() {
            Parsed::of(c).map_err(|e| format!("certificate {}: {e}", i + 1))?;
        }
        Ok(Self { certs })
    }

    pub fn to_pem(&self) -> String {
        self.certs.iter().map(|c| pem_cert(c)).collect()
    }

    /// The leaf certificate must certify `public_key` (an Ed25519 key).
    pub fn check_leaf_key(&self, public_key: &[u8; 32]) -> Result<(), String> {
        let leaf = self.certs.first().ok_or("empty certificate chain")?;
        let spki = Parsed::of(leaf)?.spki;
        let mut want = SPKI_PREFIX.to_vec();
        want.extend_from_slice(public_key);
        if spki != want.as_slice() {
            return Err(
                "the chain's first certificate is not for this device's key (wrong device, or chain out of order: leaf first)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The certificates a signature carries (COSE x5chain): the chain without a trailing
    /// self-signed root, which verifiers take from their trust list instead.
    pub fn x5chain(&self) -> &[Vec<u8>] {
        let n = self.certs.len();
        let self_signed_root =
            n > 1 && Parsed::of(&self.certs[n - 1]).is_ok_and(|p| p.issuer == p.subject);
        &self.certs[..if self_signed_root { n - 1 } else { n }]
    }
}

/// PEM of one DER certificate.
pub fn pem_cert(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(line).unwrap_or_default());
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

/// The parts of a certificate that are checked here (raw DER of each).
struct Parsed<'a> {
    issuer: &'a [u8],
    subject: &'a [u8],
    spki: &'a [u8],
}

impl<'a> Parsed<'a> {
    /// Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serial,
    /// signature, issuer, validity, subject, subjectPublicKeyInfo, ... }, ... }
    fn of(der: &'a [u8]) -> Result<Self, String> {
        let (cert, _) = tlv(der, 0x30)?;
        let (tbs, _) = tlv(cert.content, 0x30)?;
        let mut rest = tbs.content;
        if rest.first() == Some(&0xa0) {
            rest = tlv(rest, 0xa0)?.1;
        }
        let (_serial, rest) = tlv(rest, 0x02)?;
        let (_sig_alg, rest) = tlv(rest, 0x30)?;
        let (issuer, rest) = tlv(rest, 0x30)?;
        let (_validity, rest) = tlv(rest, 0x30)?;
        let (subject, rest) = tlv(rest, 0x30)?;
        let (spki, _) = tlv(rest, 0x30)?;
        Ok(Self {
            issuer: issuer.whole,
            subject: subject.whole,
            spki: spki.whole,
        })
    }
}

struct Tlv<'a> {
    whole: &'a [u8],
    content: &'a [u8],
}

/// One DER TLV with tag `tag` at the start of `input`, and what follows it.
fn tlv(input: &[u8], tag: u8) -> Result<(Tlv<'_>, &[u8]), String> {
    let bad = || "not a DER X.509 certificate".to_string();
    if input.first() != Some(&tag) {
        return Err(bad());
    }
    let first = *input.get(1).ok_or_else(bad)?;
    let (len, hdr) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return Err(bad());
        }
        let bytes = input.get(2..2 + n).ok_or_else(bad)?;
        (
            bytes.iter().fold(0usize, |a, b| (a << 8) | *b as usize),
            2 + n,
        )
    };
    let end = hdr.checked_add(len).ok_or_else(bad)?;
    if end > input.len() {
        return Err(bad());
    }
    Ok((
        Tlv {
            whole: &input[..end],
            content: &input[hdr..end],
        },
        &input[end..],
    ))
}

/// The device key as rcgen's remote signer.
struct DeviceRemote {
    key: Arc<DeviceKey>,
    public: [u8; 32],
}

impl RemoteKeyPair for DeviceRemote {
    fn public_key(&self) -> &[u8] {
        &self.public
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(self.key.sign(msg).to_vec())
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

fn device_pair(key: &Arc<DeviceKey>) -> Result<KeyPair, String> {
    KeyPair::from_remote(Box::new(DeviceRemote {
        key: key.clone(),
        public: key.public(),
    }))
    .map_err(|e| e.to_string())
}

fn offset_time(t: SystemTime) -> Result<time::OffsetDateTime, String> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "clock before 1970".to_string())?
        .as_secs();
    time::OffsetDateTime::from_unix_timestamp(secs as i64).map_err(|e| e.to_string())
}

fn random_serial() -> Result<SerialNumber, String> {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| "random number generator failed".to_string())?;
    b[0] &= 0x7f; // positive
    Ok(SerialNumber::from_slice(&b))
}

/// Validity from an hour ago (clock skew between devices and verifiers) for `days`.
fn validity(p: &mut CertificateParams, days: u32) -> Result<(), String> {
    let now = SystemTime::now();
    p.not_before = offset_time(now - Duration::from_secs(3600))?;
    p.not_after = offset_time(now + Duration::from_secs(u64::from(days) * 86400))?;
    Ok(())
}

/// Parameters of the device's end-entity certificate.
fn end_entity_params(device_id: &str, days: u32) -> Result<CertificateParams, String> {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, device_id);
    p.distinguished_name
        .push(DnType::OrganizationName, "Veriframe device");
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::Other(EKU_EMAIL_PROTECTION.to_vec()),
        ExtendedKeyUsagePurpose::Other(EKU_DOCUMENT_SIGNING.to_vec()),
        ExtendedKeyUsagePurpose::Other(EKU_C2PA.to_vec()),
    ];
    p.use_authority_key_identifier_extension = true;
    p.serial_number = Some(random_serial()?);
    validity(&mut p, days)?;
    Ok(p)
}

/// What `veriframe cert self-signed` makes.
pub struct SelfSigned {
    /// End-entity certificate then the CA certificate.
    pub chain: CertChain,
    /// The CA certificate alone (for verifiers' trust lists).
    pub ca_pem: String,
}

/// A one-off device CA (fresh Ed25519 key, discarded after it signed, so it can issue nothing
/// else) and the device's end-entity certificate under it, both valid for `days`.
pub fn self_signed(key: &Arc<DeviceKey>, device_id: &str, days: u32) -> Result<SelfSigned, String> {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| e.to_string())?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("Veriframe device CA {device_id}"),
    );
    ca.distinguished_name
        .push(DnType::OrganizationName, "Veriframe device");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.serial_number = Some(random_serial()?);
    validity(&mut ca, days)?;
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| e.to_string())?;
    let ee = end_entity_params(device_id, days)?
        .signed_by(&device_pair(key)?, &ca_cert, &ca_key)
        .map_err(|e| e.to_string())?;
    Ok(SelfSigned {
        chain: CertChain {
            certs: vec![ee.der().to_vec(), ca_cert.der().to_vec()],
        },
        ca_pem: ca_cert.pem(),
    })
}

/// A PKCS#10 request (PEM) for the device's end-entity certificate, signed by the device key,
/// for an operator's CA. The CA sets validity and serial; the request asks for the extensions.
pub fn csr(key: &Arc<DeviceKey>, device_id: &str) -> Result<String, String> {
    let mut p = end_entity_params(device_id, 365)?;
    // Set by the CA when it issues: not expressible in a request.
    p.serial_number = None;
    p.is_ca = IsCa::NoCa;
    p.use_authority_key_identifier_extension = false;
    p.serialize_request(&device_pair(key)?)
        .and_then(|r| r.pem())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_chain_certifies_the_device_key_and_drops_the_root_from_x5chain() {
        let (key, _) = DeviceKey::generate().unwrap();
        let key = Arc::new(key);
        let s = self_signed(&key, "cam-1", 30).unwrap();
        assert_eq!(s.chain.certs.len(), 2);
        s.chain.check_leaf_key(&key.public()).unwrap();
        assert_eq!(s.chain.x5chain().len(), 1);
        let again = CertChain::from_pem(s.chain.to_pem().as_bytes()).unwrap();
        assert_eq!(again, s.chain);
        let (other, _) = DeviceKey::generate().unwrap();
        assert!(s.chain.check_leaf_key(&other.public()).is_err());
        // Out of order (CA first) is refused too.
        let swapped = CertChain {
            certs: vec![s.chain.certs[1].clone(), s.chain.certs[0].clone()],
        };
        assert!(swapped.check_leaf_key(&key.public()).is_err());
    }

    #[test]
    fn bad_pem_is_an_error_not_a_panic() {
        assert!(CertChain::from_pem(b"").is_err());
        assert!(CertChain::from_pem(
            b"-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n"
        )
        .is_err());
        for n in 0..20 {
            let _ = tlv(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff][..n.min(6)], 0x30);
        }
    }

    #[test]
    fn csr_is_pem() {
        let (key, _) = DeviceKey::generate().unwrap();
        let pem = csr(&Arc::new(key), "cam-1").unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    }
}
