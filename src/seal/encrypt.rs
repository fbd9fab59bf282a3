//! Images encrypted to the operator: the `age` format (X25519 recipients `age1…`), in memory, so
//! no plaintext image reaches the disk. The device holds only the recipients (public keys);
//! decrypting needs an identity (`AGE-SECRET-KEY-1…`) that stays with the operator
//! (`veriframe verify --identity`, `veriframe export --identity`).
//!
//! The files are plain age v1 files: `age -d -i IDENTITY FILE` (Debian package `age`) or `rage`
//! open them.

use std::io::{Read, Write};
use std::path::Path;
use std::str::FromStr;

use super::SealError;

/// Extension appended to an encrypted file's name (`000000000003.jpg.age`).
pub const EXT: &str = "age";
/// `image.encrypted.scheme` of a manifest: an age v1 file (age-encryption.org/v1).
pub const SCHEME: &str = "age-encryption.org/v1";

/// The operator's recipients (`[seal] encrypt_to`).
#[derive(Clone)]
pub struct Recipients {
    keys: Vec<age::x25519::Recipient>,
    text: Vec<String>,
}

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.text).finish()
    }
}

impl Recipients {
    /// Parse `age1…` recipients; at least one. The error names the bad entry.
    pub fn parse(list: &[String]) -> Result<Self, String> {
        if list.is_empty() {
            return Err("needs at least one recipient".into());
        }
        let mut keys = Vec::with_capacity(list.len());
        for (i, r) in list.iter().enumerate() {
            let k = age::x25519::Recipient::from_str(r.trim()).map_err(|e| {
                format!("entry {i} ({r:?}) is not an age X25519 recipient (age1…): {e}")
            })?;
            keys.push(k);
        }
        let text = keys.iter().map(ToString::to_string).collect();
        Ok(Self { keys, text })
    }

    /// The recipients as `age1…` strings, in configured order.
    pub fn as_strings(&self) -> &[String] {
        &self.text
    }

    /// Encrypt `plain` to every recipient, in memory.
    pub fn encrypt(&self, plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let enc =
            age::Encryptor::with_recipients(self.keys.iter().map(|k| k as &dyn age::Recipient))
                .map_err(|e| SealError::Encode(format!("age encryption: {e}")))?;
        // age adds a header (~100 bytes per recipient) and 16 bytes per 64 KiB chunk.
        let mut out = Vec::with_capacity(plain.len() + plain.len() / 4096 + 256);
        let mut w = enc
            .wrap_output(&mut out)
            .map_err(|e| SealError::Encode(format!("age encryption: {e}")))?;
        w.write_all(plain)
            .and_then(|()| w.finish().map(|_| ()))
            .map_err(|e| SealError::Encode(format!("age encryption: {e}")))?;
        Ok(out)
    }
}

/// The operator's identities, read from an age identity file.
pub struct Identities {
    keys: Vec<age::x25519::Identity>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("count", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// Why a ciphertext could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    #[error("not an age file: {0}")]
    Format(String),
    #[error("none of the identities is a recipient of this file")]
    NoMatchingIdentity,
    #[error("ciphertext does not authenticate: {0}")]
    Corrupt(String),
}

impl Identities {
    /// Parse the text of an identity file as `age-keygen` writes it: `#` comments, blank lines,
    /// and `AGE-SECRET-KEY-1…` lines.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let k = age::x25519::Identity::from_str(line).map_err(|_| {
                format!(
                    "line {}: not an age X25519 identity (AGE-SECRET-KEY-1…)",
                    n + 1
                )
            })?;
            keys.push(k);
        }
        if keys.is_empty() {
            return Err("no identity in the file".into());
        }
        Ok(Self { keys })
    }

    /// Read an identity file, refusing one that group or others can read (as the device key).
    pub fn load(path: &Path) -> Result<Self, SealError> {
        super::keys::check_private_mode(path)?;
        let text = std::fs::read_to_string(path).map_err(|source| SealError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| SealError::Key {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// The recipients these identities open (`age1…`).
    pub fn recipients(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| k.to_public().to_string())
            .collect()
    }

    /// Decrypt an age file held in memory.
    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let d = age::Decryptor::new_buffered(ciphertext)
            .map_err(|e| DecryptError::Format(e.to_string()))?;
        let mut r = d
            .decrypt(self.keys.iter().map(|k| k as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => DecryptError::NoMatchingIdentity,
                other => DecryptError::Corrupt(other.to_string()),
            })?;
        let mut out = Vec::with_capacity(ciphertext.len());
        r.read_to_end(&mut out)
            .map_err(|e| DecryptError::Corrupt(e.to_string()))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_to_two_recipients_and_a_stranger_cannot_open_it() {
        let a = age::x25519::Identity::generate();
        let b = age::x25519::Identity::generate();
        let r = Recipients::parse(&[a.to_public().to_string(), b.to_public().to_string()]).unwrap();
        let plain: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        let ct = r.encrypt(&plain).unwrap();
        assert!(ct.starts_with(b"age-encryption.org/v1\n"));
        assert!(!ct.windows(64).any(|w| w == &plain[1000..1064]));
        for id in [&a, &b] {
            let ids =
                Identities::parse(&format!("# created: now\n{}\n", secrecy_text(id))).unwrap();
            assert_eq!(ids.decrypt(&ct).unwrap(), plain);
        }
        let c = Identities::parse(&secrecy_text(&age::x25519::Identity::generate())).unwrap();
        assert_eq!(c.decrypt(&ct), Err(DecryptError::NoMatchingIdentity));
        let mut bad = ct.clone();
        let n = bad.len();
        bad[n - 100] ^= 1;
        let ids = Identities::parse(&secrecy_text(&a)).unwrap();
        assert!(matches!(ids.decrypt(&bad), Err(DecryptError::Corrupt(_))));
    }

    #[test]
    fn bad_recipients_and_identities_are_named() {
        let e = Recipients::parse(&["age1nope".into()]).unwrap_err();
        assert!(e.contains("entry 0"), "{e}");
        assert!(Recipients::parse(&[]).is_err());
        let e = Identities::parse("# only a comment\n").unwrap_err();
        assert!(e.contains("no identity"), "{e}");
        let e = Identities::parse("AGE-SECRET-KEY-1XYZ\n").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
    }

    fn secrecy_text(id: &age::x25519::Identity) -> String {
        use age::secrecy::ExposeSecret;
        id.to_string().expose_secret().to_string()
    }
}
