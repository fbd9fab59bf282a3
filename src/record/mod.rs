//! The ground floor of everything signed: canonical JSON bytes ([`json`]), their SHA-256
//! ([`hash`]), an Ed25519 signature through the [`Signer`] seam, and crash-safe file writes
//! ([`fsio`]). It imports nothing from the crate: `camera` (pin records) and `seal` (manifests,
//! keys, the capture store) build on it. Key material itself stays in `seal`.

pub mod fsio;
pub mod hash;
pub mod json;

use ring::signature::{UnparsedPublicKey, ED25519};

/// Signs bytes with the device key (Ed25519). Implemented by the seal module's key type; camera
/// pin records and the publish stage's alert payloads are signed through it, without touching key
/// material.
pub trait Signer: Send + Sync {
    /// Key id: lowercase hex SHA-256 of the raw 32-byte Ed25519 public key.
    fn key_id(&self) -> String;
    /// Raw 32-byte Ed25519 public key.
    fn public_key(&self) -> [u8; 32];
    /// 64-byte Ed25519 signature over `msg`.
    fn sign(&self, msg: &[u8]) -> [u8; 64];
}

/// Verify an Ed25519 signature.
pub fn verify_signature(public_key: &[u8; 32], msg: &[u8], sig: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(msg, sig)
        .is_ok()
}

/// A throw-away Ed25519 signer for the unit tests of the modules above (the device key type
/// lives in `seal`, which they must not import).
#[cfg(test)]
pub(crate) struct TestSigner(ring::signature::Ed25519KeyPair);

#[cfg(test)]
impl TestSigner {
    pub(crate) fn generate() -> Self {
        let rng = ring::rand::SystemRandom::new();
        let der = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        Self(ring::signature::Ed25519KeyPair::from_pkcs8(der.as_ref()).unwrap())
    }
}

#[cfg(test)]
impl Signer for TestSigner {
    fn key_id(&self) -> String {
        hash::sha256_hex(&self.public_key())
    }

    fn public_key(&self) -> [u8; 32] {
        use ring::signature::KeyPair;
        let mut pk = [0u8; 32];
        pk.copy_from_slice(self.0.public_key().as_ref());
        pk
    }

    fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.0.sign(msg).as_ref());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_key_and_message() {
        let (a, b) = (TestSigner::generate(), TestSigner::generate());
        let sig = a.sign(b"pin record");
        assert!(verify_signature(&a.public_key(), b"pin record", &sig));
        assert!(!verify_signature(&a.public_key(), b"pin recorD", &sig));
        assert!(!verify_signature(&b.public_key(), b"pin record", &sig));
        assert!(!verify_signature(
            &a.public_key(),
            b"pin record",
            &sig[..63]
        ));
        assert_eq!(a.key_id().len(), 64);
    }
}
