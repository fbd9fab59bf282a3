//! Device keys: Ed25519 via `ring`, stored as PKCS#8 v2 DER (mode 0600) with the public key
//! beside it as PEM SubjectPublicKeyInfo (`<key>.pub`).
//!
//! The key id is the lowercase hex SHA-256 of the raw 32-byte public key.

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use zeroize::Zeroizing;

use super::SealError;
use crate::record::fsio::{self, WriteError};
use crate::record::hash::sha256_hex;
use crate::record::sigalg::{PublicKey, SigAlg};
use crate::record::Signer;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (32 bytes) }. The raw key follows.
pub const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Key id of a raw public key.
pub fn key_id(public_key: &[u8; 32]) -> String {
    sha256_hex(public_key)
}

/// Standard base64 of the raw public key.
pub fn public_key_b64(public_key: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(public_key)
}

/// PEM SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`), as openssl reads it.
pub fn public_key_pem(public_key: &[u8; 32]) -> String {
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(public_key);
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}

/// The device's signing key. Private bytes live only inside; `Debug` shows the key id.
pub struct DeviceKey {
    // Boxed so the zeroizing Drop wipes the one place the expanded private key lives.
    pair: Box<Ed25519KeyPair>,
    public: [u8; 32],
    id: String,
}

impl Drop for DeviceKey {
    fn drop(&mut self) {
        // SAFETY: ring's Ed25519KeyPair is a flat struct of three byte arrays (private scalar,
        // private prefix, public key): no pointers, no Drop impl, and all-zero bytes are a valid
        // value. We own it exclusively here and it is never used after this.
        unsafe { zeroize::zeroize_flat_type(&mut *self.pair as *mut Ed25519KeyPair) };
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKey")
            .field("key_id", &self.id)
            .finish_non_exhaustive()
    }
}

impl DeviceKey {
    /// Parse a PKCS#8 document (v2 from `ring`, or v1 as `openssl genpkey` writes).
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| format!("not an Ed25519 PKCS#8 key: {e}"))?;
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        Ok(Self {
            pair: Box::new(pair),
            id: key_id(&public),
            public,
        })
    }

    /// A fresh key and its PKCS#8 v2 encoding (zeroized when dropped).
    pub fn generate() -> Result<(Self, Zeroizing<Vec<u8>>), SealError> {
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| SealError::Key {
                path: PathBuf::new(),
                reason: "random number generator failed".into(),
            })?;
        let der = Zeroizing::new(doc.as_ref().to_vec());
        let key = Self::from_pkcs8(&der).map_err(|reason| SealError::Key {
            path: PathBuf::new(),
            reason,
        })?;
        Ok((key, der))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn public(&self) -> [u8; 32] {
        self.public
    }
}

impl Signer for DeviceKey {
    fn key_id(&self) -> String {
        self.id.clone()
    }

    fn verifying_key(&self) -> PublicKey {
        PublicKey::ed25519(self.public)
    }

    fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        // Ed25519 signatures are always 64 bytes.
        out.copy_from_slice(self.pair.sign(msg).as_ref());
        out
    }
}

/// An ES256 (ECDSA P-256) key held in memory (PKCS#8): the software reference for hardware keys,
/// used by tests and `bench-seal`. Its private key never leaves this struct.
pub struct Es256Key {
    pair: EcdsaKeyPair,
    public: PublicKey,
    rng: SystemRandom,
}

impl fmt::Debug for Es256Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Es256Key")
            .field("key_id", &self.public.key_id())
            .finish_non_exhaustive()
    }
}

impl Signer for Es256Key {
    fn verifying_key(&self) -> PublicKey {
        self.public.clone()
    }

    fn sign(&self, msg: &[u8]) -> [u8; 64] {
        // ring's ECDSA signing fails only if its random source does; there is no signature
        // to return then, and continuing would seal unsigned data.
        Es256Key::sign(self, msg).expect("ECDSA P-256 signing failed (random source)")
    }
}

impl Es256Key {
    /// Parse a P-256 PKCS#8 document (as `ring` writes it, or `openssl pkcs8 -topk8 -nocrypt
    /// -outform DER` converts one from `openssl genpkey`).
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| format!("not a P-256 PKCS#8 key: {e}"))?;
        let public = PublicKey::from_raw(SigAlg::Es256, pair.public_key().as_ref())?;
        Ok(Self { pair, public, rng })
    }

    /// A fresh key and its PKCS#8 encoding (zeroized when dropped).
    pub fn generate() -> Result<(Self, Zeroizing<Vec<u8>>), String> {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| "random number generator failed".to_string())?;
        let der = Zeroizing::new(doc.as_ref().to_vec());
        Ok((Self::from_pkcs8(&der)?, der))
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// `r || s` (64 bytes).
    pub fn sign(&self, msg: &[u8]) -> Result<[u8; 64], String> {
        let sig = self
            .pair
            .sign(&self.rng, msg)
            .map_err(|_| "ECDSA signing failed".to_string())?;
        sig.as_ref()
            .try_into()
            .map_err(|_| "ECDSA signature is not 64 bytes".to_string())
    }
}

/// Refuse a secret file (device key, operator identity) that group or others can read, as ssh
/// does.
pub fn check_private_mode(path: &Path) -> Result<(), SealError> {
    let meta = fs::metadata(path).map_err(|source| SealError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SealError::KeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Load a private key file, refusing one that group or others can read (as ssh does).
pub fn load_key(path: &Path) -> Result<DeviceKey, SealError> {
    check_private_mode(path)?;
    let der = Zeroizing::new(fs::read(path).map_err(|source| SealError::Io {
        path: path.to_path_buf(),
        source,
    })?);
    DeviceKey::from_pkcs8(&der).map_err(|reason| SealError::Key {
        path: path.to_path_buf(),
        reason,
    })
}

/// Parse a public key from text or bytes: PEM SubjectPublicKeyInfo, DER SPKI (44 bytes), raw
/// 32 bytes, or base64/hex of the raw key.
pub fn parse_public_key(data: &[u8]) -> Result<[u8; 32], String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    if data.len() == 32 {
        return Ok(data.try_into().expect("length checked"));
    }
    if data.len() == 44 && data.starts_with(&SPKI_PREFIX) {
        return Ok(data[12..].try_into().expect("length checked"));
    }
    let text = std::str::from_utf8(data).map_err(|_| "not a public key (binary)".to_string())?;
    let text = text.trim();
    if let Some(rest) = text.strip_prefix("-----BEGIN PUBLIC KEY-----") {
        let body = rest
            .split("-----END PUBLIC KEY-----")
            .next()
            .unwrap_or_default();
        let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let der = b64
            .decode(body)
            .map_err(|e| format!("bad PEM base64: {e}"))?;
        if der.len() == 44 && der.starts_with(&SPKI_PREFIX) {
            return Ok(der[12..].try_into().expect("length checked"));
        }
        return Err("PEM public key is not Ed25519 (expected a 44-byte SPKI)".into());
    }
    if text.len() == 64 && text.bytes().all(|c| c.is_ascii_hexdigit()) {
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        return Ok(out);
    }
    match b64.decode(text) {
        Ok(raw) if raw.len() == 32 => Ok(raw.try_into().expect("length checked")),
        _ => Err("not a public key: expected PEM, DER SPKI, raw, hex or base64".into()),
    }
}

/// Load a public key file (the `.pub` PEM keygen writes, or any form [`parse_public_key`] takes).
pub fn load_public_key(path: &Path) -> Result<[u8; 32], SealError> {
    let data = fs::read(path).map_err(|source| SealError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_public_key(&data).map_err(|reason| SealError::Key {
        path: path.to_path_buf(),
        reason,
    })
}

/// Path of the public key written beside a private key: `<key>.pub`.
pub fn pub_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Create a key pair at `path` (0600, atomic, never overwriting) and `<path>.pub` (PEM, 0644).
pub fn create_key_files(path: &Path) -> Result<DeviceKey, SealError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| fsio::io_err(dir, e))?;
    }
    let (key, der) = DeviceKey::generate()?;
    fsio::atomic_create_new(path, &der, 0o600, true).map_err(|e| match e {
        WriteError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
            SealError::KeyExists {
                path: path.to_path_buf(),
            }
        }
        other => other.into(),
    })?;
    fsio::atomic_write(
        &pub_path(path),
        public_key_pem(&key.public()).as_bytes(),
        0o644,
        true,
    )?;
    Ok(key)
}

/// Load `path`, creating it (and `.pub`) first if it does not exist. Used for the default key
/// under the data directory.
pub fn load_or_create(path: &Path) -> Result<(DeviceKey, bool), SealError> {
    if path.exists() {
        return Ok((load_key(path)?, false));
    }
    match create_key_files(path) {
        Ok(k) => Ok((k, true)),
        // Lost a race with another process creating it: use theirs.
        Err(SealError::KeyExists { .. }) => Ok((load_key(path)?, false)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::hash::hex;
    use crate::record::verify_signature;

    #[test]
    fn keygen_files_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        let k = create_key_files(&p).unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let k2 = load_key(&p).unwrap();
        assert_eq!(k.public(), k2.public());
        assert_eq!(load_public_key(&pub_path(&p)).unwrap(), k.public());
        assert_eq!(k.key_id(), sha256_hex(&k.public()));
        let sig = k.sign(b"hello");
        assert!(verify_signature(&k2.public(), b"hello", &sig));
        assert!(!verify_signature(&k2.public(), b"hellO", &sig));
        // Never overwrites.
        assert!(matches!(
            create_key_files(&p),
            Err(SealError::KeyExists { .. })
        ));
        assert_eq!(load_key(&p).unwrap().public(), k.public());
    }

    #[test]
    fn refuses_group_readable_key() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        create_key_files(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let e = load_key(&p).unwrap_err();
        assert!(matches!(e, SealError::KeyPermissions { mode: 0o640, .. }));
        assert!(e.to_string().contains("0640"), "{e}");
    }

    #[test]
    fn debug_hides_private_key() {
        let (k, der) = DeviceKey::generate().unwrap();
        let dbg = format!("{k:?}");
        assert!(dbg.contains(k.id()), "{dbg}");
        // The private seed is in the PKCS#8 document at a fixed offset (16..48).
        let seed_hex = hex(&der[16..48]);
        assert!(!dbg.contains(&seed_hex));
        assert!(dbg.len() < 200);
    }

    #[test]
    fn public_key_forms() {
        let (k, _) = DeviceKey::generate().unwrap();
        let pk = k.public();
        assert_eq!(
            parse_public_key(public_key_pem(&pk).as_bytes()).unwrap(),
            pk
        );
        assert_eq!(
            parse_public_key(public_key_b64(&pk).as_bytes()).unwrap(),
            pk
        );
        assert_eq!(parse_public_key(hex(&pk).as_bytes()).unwrap(), pk);
        assert_eq!(parse_public_key(&pk).unwrap(), pk);
        assert!(parse_public_key(b"nonsense").is_err());
        assert!(
            parse_public_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
                .is_err()
        );
    }

    #[test]
    fn bad_key_file_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        fsio::atomic_write(&p, b"not a key", 0o600, false).unwrap();
        assert!(matches!(load_key(&p), Err(SealError::Key { .. })));
        assert!(matches!(
            load_key(&d.path().join("missing")),
            Err(SealError::Io { .. })
        ));
    }
    #[test]
    fn es256_sign_verify_and_key_forms() {
        let (k, der) = Es256Key::generate().unwrap();
        let pk = k.public().clone();
        assert_eq!(pk.alg(), SigAlg::Es256);
        assert_eq!(pk.raw().len(), 65);
        assert_eq!(pk.key_id(), sha256_hex(pk.raw()));
        let sig = k.sign(b"hello").unwrap();
        assert!(pk.verify(b"hello", &sig));
        assert!(!pk.verify(b"hellO", &sig));
        assert!(!pk.verify(b"hello", &sig[..63]));
        // Forms round-trip.
        assert_eq!(PublicKey::parse(pk.to_pem().as_bytes()).unwrap(), pk);
        assert_eq!(PublicKey::parse(&pk.spki_der()).unwrap(), pk);
        assert_eq!(
            PublicKey::from_b64(SigAlg::Es256, &pk.to_b64()).unwrap(),
            pk
        );
        assert!(PublicKey::from_b64(SigAlg::Ed25519, &pk.to_b64()).is_err());
        // Reload from PKCS#8: same key.
        assert_eq!(Es256Key::from_pkcs8(&der).unwrap().public(), &pk);
        assert!(Es256Key::from_pkcs8(b"junk").is_err());
        // Debug shows no private material (only the id).
        assert!(format!("{k:?}").contains(&pk.key_id()));
    }

    #[test]
    fn ed25519_keys_through_the_same_api() {
        let (k, _) = DeviceKey::generate().unwrap();
        let pk = PublicKey::ed25519(k.public());
        assert_eq!(pk.key_id(), k.key_id());
        assert_eq!(pk.to_b64(), public_key_b64(&k.public()));
        assert_eq!(pk.to_pem(), public_key_pem(&k.public()));
        assert_eq!(PublicKey::parse(pk.to_pem().as_bytes()).unwrap(), pk);
        let sig = k.sign(b"m");
        assert!(pk.verify(b"m", &sig));
        // An Ed25519 signature never verifies under an ES256 key, and vice versa.
        let (e, _) = Es256Key::generate().unwrap();
        assert!(!e.public().verify(b"m", &sig));
        assert!(!pk.verify(b"m", &e.sign(b"m").unwrap()));
    }
}
