//! Signature algorithms: Ed25519 (the file key's) and ES256 (ECDSA P-256 with SHA-256, what TPMs,
//! secure elements and PKCS#11 tokens sign with), their public keys, key ids and signature
//! encodings, and one verification function for both. Key material stays in `seal`.
//!
//! Encodings (docs/capture-format.md §1):
//! * Ed25519: public key = raw 32 bytes; signature = 64 bytes (RFC 8032).
//! * ES256: public key = uncompressed SEC1 point, 65 bytes `04 || X || Y`; signature = 64 bytes
//!   `r || s`, each a 32-byte big-endian unsigned integer (the fixed "IEEE P1363" form that JWS
//!   (RFC 7518 §3.4) and COSE (RFC 9053 §2.1) use). OpenSSL's `dgst -verify` wants the DER
//!   `ECDSA-Sig-Value` instead: [`es256_raw_to_der`] and [`es256_der_to_raw`] convert.
//! * Key id (both): lowercase hex SHA-256 of the raw public key bytes above.

use std::fmt;

use base64::Engine as _;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ED25519};

use super::hash;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (32 bytes) }. The raw key follows.
pub const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// DER prefix of a P-256 SubjectPublicKeyInfo (RFC 5480): SEQUENCE { SEQUENCE { OID
/// id-ecPublicKey, OID prime256v1 }, BIT STRING (65 bytes) }. The uncompressed point follows.
pub const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Length of an ES256 public key (uncompressed SEC1 point).
pub const P256_POINT_LEN: usize = 65;

/// A signature algorithm. Its name is what signed documents record (`sig_alg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigAlg {
    Ed25519,
    Es256,
}

impl SigAlg {
    /// The name recorded in signed documents: `Ed25519` or `ES256` (the JOSE/COSE names).
    pub fn name(self) -> &'static str {
        match self {
            SigAlg::Ed25519 => "Ed25519",
            SigAlg::Es256 => "ES256",
        }
    }

    /// Parse a recorded name (exact, case-sensitive).
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "Ed25519" => Some(SigAlg::Ed25519),
            "ES256" => Some(SigAlg::Es256),
            _ => None,
        }
    }

    /// COSE algorithm identifier (RFC 9053): EdDSA -8, ES256 -7.
    pub fn cose_alg(self) -> i64 {
        match self {
            SigAlg::Ed25519 => -8,
            SigAlg::Es256 => -7,
        }
    }

    /// Length of the raw public key.
    pub fn public_key_len(self) -> usize {
        match self {
            SigAlg::Ed25519 => 32,
            SigAlg::Es256 => P256_POINT_LEN,
        }
    }
}

impl fmt::Display for SigAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A public key of either algorithm, as raw bytes (see the module docs).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    alg: SigAlg,
    raw: Vec<u8>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({}, {})", self.alg, hash::hex(&self.raw))
    }
}

impl PublicKey {
    /// An Ed25519 key from its 32 raw bytes.
    pub fn ed25519(raw: [u8; 32]) -> Self {
        Self {
            alg: SigAlg::Ed25519,
            raw: raw.to_vec(),
        }
    }

    /// A key of `alg` from raw bytes; checks the length (and, for ES256, the uncompressed-point
    /// tag; ring checks the point is on the curve when verifying).
    pub fn from_raw(alg: SigAlg, raw: &[u8]) -> Result<Self, String> {
        if raw.len() != alg.public_key_len() {
            return Err(format!(
                "{alg} public key must be {} bytes, got {}",
                alg.public_key_len(),
                raw.len()
            ));
        }
        if alg == SigAlg::Es256 && raw[0] != 0x04 {
            return Err("ES256 public key must be an uncompressed point (04 || X || Y)".into());
        }
        Ok(Self {
            alg,
            raw: raw.to_vec(),
        })
    }

    pub fn alg(&self) -> SigAlg {
        self.alg
    }

    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The Ed25519 raw key, if this is one.
    pub fn as_ed25519(&self) -> Option<[u8; 32]> {
        (self.alg == SigAlg::Ed25519).then(|| self.raw.as_slice().try_into().ok())?
    }

    /// Lowercase hex SHA-256 of the raw key.
    pub fn key_id(&self) -> String {
        hash::sha256_hex(&self.raw)
    }

    /// Standard base64 of the raw key (the `public_key` field of signed documents).
    pub fn to_b64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.raw)
    }

    /// DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        let mut der = match self.alg {
            SigAlg::Ed25519 => ED25519_SPKI_PREFIX.to_vec(),
            SigAlg::Es256 => P256_SPKI_PREFIX.to_vec(),
        };
        der.extend_from_slice(&self.raw);
        der
    }

    /// PEM SubjectPublicKeyInfo, as openssl reads it.
    pub fn to_pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.spki_der());
        let mut body = String::new();
        for chunk in b64.as_bytes().chunks(64) {
            body.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
            body.push('\n');
        }
        format!("-----BEGIN PUBLIC KEY-----\n{body}-----END PUBLIC KEY-----\n")
    }

    /// Parse a DER SubjectPublicKeyInfo of either algorithm.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, String> {
        if der.len() == 44 && der.starts_with(&ED25519_SPKI_PREFIX) {
            return Self::from_raw(SigAlg::Ed25519, &der[12..]);
        }
        if der.len() == P256_SPKI_PREFIX.len() + P256_POINT_LEN
            && der.starts_with(&P256_SPKI_PREFIX)
        {
            return Self::from_raw(SigAlg::Es256, &der[P256_SPKI_PREFIX.len()..]);
        }
        Err("not an Ed25519 or P-256 (uncompressed) SubjectPublicKeyInfo".into())
    }

    /// Parse a PEM or DER SubjectPublicKeyInfo of either algorithm.
    pub fn parse(data: &[u8]) -> Result<Self, String> {
        if let Ok(k) = Self::from_spki_der(data) {
            return Ok(k);
        }
        if let Ok(text) = std::str::from_utf8(data) {
            if let Some(rest) = text.trim().strip_prefix("-----BEGIN PUBLIC KEY-----") {
                let body = rest
                    .split("-----END PUBLIC KEY-----")
                    .next()
                    .unwrap_or_default();
                let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
                let der = base64::engine::general_purpose::STANDARD
                    .decode(body)
                    .map_err(|e| format!("bad PEM base64: {e}"))?;
                return Self::from_spki_der(&der);
            }
        }
        Err("not a public key: expected PEM or DER SubjectPublicKeyInfo".into())
    }

    /// Parse the `public_key` field of a signed document recorded with `alg`: standard base64
    /// of the raw key, in canonical form (re-encoding gives the same text).
    pub fn from_b64(alg: SigAlg, s: &str) -> Result<Self, String> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| format!("not base64: {e}"))?;
        let k = Self::from_raw(alg, &raw)?;
        if k.to_b64() != s {
            return Err("base64 is not in canonical form".into());
        }
        Ok(k)
    }

    /// Verify a signature in this key's encoding (module docs). Never panics.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match self.alg {
            SigAlg::Ed25519 => UnparsedPublicKey::new(&ED25519, &self.raw)
                .verify(msg, sig)
                .is_ok(),
            SigAlg::Es256 => {
                sig.len() == 64
                    && UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.raw)
                        .verify(msg, sig)
                        .is_ok()
            }
        }
    }
}

/// A signer that sleeps `delay` before every signature, then signs with `inner`: models a slow
/// hardware signer (`bench-seal --sign-delay-ms`; tests of the sealing speed).
pub struct DelayedSigner {
    inner: std::sync::Arc<dyn super::Signer>,
    delay: std::time::Duration,
}

impl DelayedSigner {
    pub fn new(inner: std::sync::Arc<dyn super::Signer>, delay: std::time::Duration) -> Self {
        Self { inner, delay }
    }
}

impl super::Signer for DelayedSigner {
    fn key_id(&self) -> String {
        self.inner.key_id()
    }

    fn verifying_key(&self) -> PublicKey {
        self.inner.verifying_key()
    }

    fn sign(&self, msg: &[u8]) -> [u8; 64] {
        std::thread::sleep(self.delay);
        self.inner.sign(msg)
    }
}

fn der_len(out: &mut Vec<u8>, n: usize) {
    // An ECDSA-Sig-Value for P-256 is at most 72 bytes: short form always suffices.
    debug_assert!(n < 128);
    out.push(n as u8);
}

fn der_uint(out: &mut Vec<u8>, be: &[u8]) {
    let start = be.iter().position(|&b| b != 0).unwrap_or(be.len() - 1);
    let v = &be[start..];
    let pad = v[0] & 0x80 != 0;
    out.push(0x02);
    der_len(out, v.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(v);
}

/// ES256 `r || s` (64 bytes) to DER `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`.
pub fn es256_raw_to_der(raw: &[u8; 64]) -> Vec<u8> {
    let mut body = Vec::with_capacity(72);
    der_uint(&mut body, &raw[..32]);
    der_uint(&mut body, &raw[32..]);
    let mut out = vec![0x30];
    der_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// DER `ECDSA-Sig-Value` to `r || s`. Rejects anything not strictly DER or out of range.
pub fn es256_der_to_raw(der: &[u8]) -> Result<[u8; 64], String> {
    let bad = || "not a DER ECDSA-Sig-Value for P-256".to_string();
    let body = match der {
        [0x30, n, rest @ ..] if usize::from(*n) == rest.len() && *n < 0x80 => rest,
        _ => return Err(bad()),
    };
    let mut out = [0u8; 64];
    let mut rest = body;
    for half in out.chunks_mut(32) {
        let (v, tail) = match rest {
            [0x02, n, tail @ ..] if usize::from(*n) <= tail.len() && *n > 0 => {
                tail.split_at(usize::from(*n))
            }
            _ => return Err(bad()),
        };
        // Minimal, non-negative encoding.
        if v[0] & 0x80 != 0 || (v.len() > 1 && v[0] == 0 && v[1] & 0x80 == 0) {
            return Err(bad());
        }
        let v = if v[0] == 0 { &v[1..] } else { v };
        if v.len() > 32 {
            return Err(bad());
        }
        half[32 - v.len()..].copy_from_slice(v);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Signer;

    #[test]
    fn names_round_trip() {
        for a in [SigAlg::Ed25519, SigAlg::Es256] {
            assert_eq!(SigAlg::from_name(a.name()), Some(a));
        }
        assert_eq!(SigAlg::from_name("es256"), None);
        assert_eq!(SigAlg::Es256.cose_alg(), -7);
        assert_eq!(SigAlg::Ed25519.cose_alg(), -8);
    }

    #[test]
    fn der_conversion_round_trips_and_is_strict() {
        let k = crate::record::TestEs256Signer::generate();
        for i in 0..50u8 {
            let raw = k.sign(&[i]);
            let der = es256_raw_to_der(&raw);
            assert_eq!(es256_der_to_raw(&der).unwrap(), raw);
        }
        // Leading zeros and high bits.
        let mut raw = [0u8; 64];
        raw[31] = 1;
        raw[32] = 0x80;
        let der = es256_raw_to_der(&raw);
        assert_eq!(
            der,
            [
                vec![0x30, 0x26, 0x02, 0x01, 0x01, 0x02, 0x21, 0x00, 0x80],
                vec![0; 31]
            ]
            .concat()
        );
        assert_eq!(es256_der_to_raw(&der).unwrap(), raw);
        // Non-minimal or negative integers, trailing bytes, junk: rejected.
        assert!(es256_der_to_raw(&[0x30, 0x06, 0x02, 0x01, 0x81, 0x02, 0x01, 0x01]).is_err());
        assert!(es256_der_to_raw(&[0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x01]).is_err());
        assert!(es256_der_to_raw(&[0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x00]).is_err());
        assert!(es256_der_to_raw(&[]).is_err());
        assert!(es256_der_to_raw(&[0x30]).is_err());
    }
}
