//! Alert payloads: construction, canonical bytes, Ed25519 signatures, verification.
//!
//! Wire form (topic `<prefix>alert`, schema `veriframe.alert/1`, see docs/mqtt.md):
//!
//! ```text
//! {"alert":<canonical JSON of the alert object>,"key_id":"<hex sha256 of public key>","sig":"<base64 Ed25519>"}
//! ```
//!
//! The signature covers exactly the bytes of the `alert` value as transmitted. Those bytes are
//! canonical JSON: object keys sorted by byte order, no insignificant whitespace, strings escaped
//! as serde_json does (`"`, `\`, control characters only), integers in decimal, scores rounded to
//! 4 decimals and written in shortest round-trip form. A verifier can therefore either take the raw
//! span of `alert` (the payload always starts with `{"alert":`; Python's
//! `json.JSONDecoder().raw_decode(s, 9)` returns its end) or re-encode the parsed object with
//! sorted keys and compact separators.

use ring::signature;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AlertRequest, PublishError};
use crate::alert::{AlertKind, Severity};
use crate::record::Signer;

/// Schema identifier carried in every alert.
pub const ALERT_SCHEMA: &str = "veriframe.alert/1";

/// A model cited by an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRef {
    pub name: String,
    pub weights_sha256: String,
}

/// The signed alert object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    pub schema: String,
    /// Unique id (random 128 bits, UUID text form). Redeliveries keep it.
    pub id: String,
    /// On the wire as its `snake_case` name (docs/mqtt.md, "Alert kinds").
    pub kind: AlertKind,
    /// `info`, `warning` or `critical`.
    pub severity: Severity,
    pub device_id: String,
    /// RFC 3339 UTC, milliseconds.
    pub time: String,
    /// Frame sequence range the alert covers.
    pub first_seq: u64,
    pub last_seq: u64,
    /// Detector score that triggered the alert (kind-specific), 4 decimals.
    pub score: Option<f64>,
    pub models: Vec<ModelRef>,
    /// SHA-256 (hex) of the sealed evidence manifest, when the frames were sealed.
    pub evidence: Option<String>,
    pub detail: String,
}

/// A random 128-bit id in UUID v4 text form.
pub fn new_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        // Writing to a String cannot fail.
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// Build the alert object for `req` at `time`.
pub fn build(req: &AlertRequest, device_id: &str, time: std::time::SystemTime) -> Alert {
    Alert {
        schema: ALERT_SCHEMA.into(),
        id: new_id(),
        kind: req.kind,
        severity: req.severity,
        device_id: device_id.into(),
        time: humantime::format_rfc3339_millis(time).to_string(),
        first_seq: req.first_seq,
        last_seq: req.last_seq,
        score: req
            .score
            .filter(|s| s.is_finite())
            .map(|s| (s as f64 * 10_000.0).round() / 10_000.0),
        models: req
            .models
            .iter()
            .map(|m| ModelRef {
                name: m.name.clone(),
                weights_sha256: m.weights_sha256.clone(),
            })
            .collect(),
        evidence: req.evidence.clone(),
        detail: req.detail.clone(),
    }
}

/// Canonical JSON bytes of a value (sorted keys, compact).
pub fn canonical(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Serialising a string cannot fail.
                out.extend_from_slice(&serde_json::to_vec(k).unwrap_or_default());
                out.push(b':');
                write_canonical(&m[k.as_str()], out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(x, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

/// Sign `alert` and produce the wire payload.
pub fn sign(alert: &Alert, signer: &dyn Signer) -> Result<Vec<u8>, PublishError> {
    let v = serde_json::to_value(alert).map_err(|e| PublishError::Encode(e.to_string()))?;
    let body = canonical(&v);
    let sig = signer.sign(&body);
    let mut out = Vec::with_capacity(body.len() + 200);
    out.extend_from_slice(b"{\"alert\":");
    out.extend_from_slice(&body);
    out.extend_from_slice(b",\"key_id\":\"");
    out.extend_from_slice(signer.key_id().as_bytes());
    out.extend_from_slice(b"\",\"sig\":\"");
    use base64::Engine;
    out.extend_from_slice(
        base64::engine::general_purpose::STANDARD
            .encode(sig)
            .as_bytes(),
    );
    out.extend_from_slice(b"\"}");
    Ok(out)
}

/// Outcome of checking one alert payload.
#[derive(Debug, Clone, PartialEq)]
pub enum SigCheck {
    /// Signature valid for the given public key.
    Valid,
    /// The signature does not verify (tampered payload or another key).
    Bad,
    /// No public key to check against; the signature was not checked.
    Unchecked,
}

/// A parsed alert payload.
#[derive(Debug, Clone)]
pub struct Received {
    pub alert: Alert,
    pub key_id: String,
    pub check: SigCheck,
}

/// Errors parsing an alert payload.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PayloadError {
    #[error("not an alert payload: {0}")]
    Malformed(String),
}

/// Parse and (when `pubkey` is given) verify an alert payload. The signature is checked over the
/// raw bytes of the `alert` member, never over a re-encoding.
pub fn verify(payload: &[u8], pubkey: Option<&[u8; 32]>) -> Result<Received, PayloadError> {
    let bad = |m: &str| PayloadError::Malformed(m.to_string());
    const PREFIX: &[u8] = b"{\"alert\":";
    if !payload.starts_with(PREFIX) {
        return Err(bad("does not start with {\"alert\":"));
    }
    let rest = &payload[PREFIX.len()..];
    let mut stream = serde_json::Deserializer::from_slice(rest).into_iter::<Value>();
    match stream.next() {
        Some(Ok(_)) => {}
        _ => return Err(bad("alert member is not JSON")),
    }
    let raw = &rest[..stream.byte_offset()];
    #[derive(Deserialize)]
    struct Wire {
        alert: Alert,
        key_id: String,
        sig: String,
    }
    let w: Wire = serde_json::from_slice(payload).map_err(|e| bad(&e.to_string()))?;
    use base64::Engine;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(w.sig.as_bytes())
        .map_err(|_| bad("sig is not base64"))?;
    let check = match pubkey {
        None => SigCheck::Unchecked,
        Some(pk) => {
            let key = signature::UnparsedPublicKey::new(&signature::ED25519, pk);
            if key.verify(raw, &sig).is_ok() {
                SigCheck::Valid
            } else {
                SigCheck::Bad
            }
        }
    };
    Ok(Received {
        alert: w.alert,
        key_id: w.key_id,
        check,
    })
}

/// Key id of a raw Ed25519 public key: lowercase hex SHA-256.
pub fn key_id_of(pk: &[u8; 32]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, pk).as_ref())
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the raw key follows.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Parse a PEM `PUBLIC KEY` (Ed25519 SubjectPublicKeyInfo) into the raw 32-byte key.
pub fn parse_public_key_pem(text: &str) -> Result<[u8; 32], PublishError> {
    let b64: String = text
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "-----BEGIN PUBLIC KEY-----")
        .skip(1)
        .take_while(|l| *l != "-----END PUBLIC KEY-----")
        .collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| PublishError::Key("public key PEM is not valid base64".into()))?;
    if der.len() != 44 || der[..12] != ED25519_SPKI_PREFIX {
        return Err(PublishError::Key(
            "not an Ed25519 SubjectPublicKeyInfo (PEM `PUBLIC KEY`)".into(),
        ));
    }
    let mut pk = [0u8; 32];
    pk.copy_from_slice(&der[12..]);
    Ok(pk)
}

/// PEM `PUBLIC KEY` text of a raw Ed25519 public key.
pub fn public_key_pem(pk: &[u8; 32]) -> String {
    let mut der = ED25519_SPKI_PREFIX.to_vec();
    der.extend_from_slice(pk);
    use base64::Engine;
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::ModelId;

    fn req() -> AlertRequest {
        AlertRequest {
            kind: AlertKind::PresentationAttack,
            severity: Severity::Critical,
            first_seq: 10,
            last_seq: 12,
            score: Some(0.912_345_6),
            models: vec![ModelId {
                name: "minifasnet".into(),
                weights_sha256: "ab".repeat(32),
            }],
            evidence: Some("cd".repeat(32)),
            detail: "quote \" and ünïcode".into(),
        }
    }

    #[test]
    fn signed_alert_verifies_and_round_trips() {
        let k = crate::seal::keys::DeviceKey::generate().unwrap().0;
        let a = build(&req(), "booth-1", std::time::SystemTime::now());
        let p = sign(&a, &k).unwrap();
        let r = verify(&p, Some(&k.public_key())).unwrap();
        assert_eq!(r.check, SigCheck::Valid);
        assert_eq!(r.alert, a);
        assert_eq!(r.key_id, k.key_id());
        assert_eq!(r.alert.score, Some(0.9123));
        // The signed bytes are canonical: re-encoding the parsed object gives the same bytes.
        let v: Value = serde_json::from_slice(&p).unwrap();
        let body = canonical(&v["alert"]);
        assert!(p.starts_with(b"{\"alert\":"));
        assert_eq!(&p[9..9 + body.len()], body.as_slice());
    }

    #[test]
    fn tampering_or_another_key_is_flagged() {
        let k = crate::seal::keys::DeviceKey::generate().unwrap().0;
        let other = crate::seal::keys::DeviceKey::generate().unwrap().0;
        let a = build(&req(), "booth-1", std::time::SystemTime::now());
        let p = sign(&a, &k).unwrap();
        let tampered = String::from_utf8(p.clone())
            .unwrap()
            .replace("\"critical\"", "\"info\"");
        assert_eq!(
            verify(tampered.as_bytes(), Some(&k.public_key()))
                .unwrap()
                .check,
            SigCheck::Bad
        );
        assert_eq!(
            verify(&p, Some(&other.public_key())).unwrap().check,
            SigCheck::Bad
        );
        assert_eq!(verify(&p, None).unwrap().check, SigCheck::Unchecked);
        assert!(verify(b"{\"x\":1}", None).is_err());
    }

    #[test]
    fn canonical_sorts_keys_and_is_compact() {
        let v: Value = serde_json::from_str(r#"{ "b": [1, {"z":1,"a":2}], "a": "x" }"#).unwrap();
        assert_eq!(
            canonical(&v),
            br#"{"a":"x","b":[1,{"a":2,"z":1}]}"#.to_vec()
        );
    }

    #[test]
    fn pem_round_trip_and_key_id() {
        let k = crate::seal::keys::DeviceKey::generate().unwrap().0;
        let pem = public_key_pem(&k.public_key());
        assert_eq!(parse_public_key_pem(&pem).unwrap(), k.public_key());
        assert_eq!(k.key_id().len(), 64);
        assert!(parse_public_key_pem(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
        )
        .is_err());
    }

    #[test]
    fn ids_are_unique_uuid_v4() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn load_or_create_persists_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k").join("device.key");
        let a = crate::seal::keys::load_or_create(&p).unwrap().0;
        let b = crate::seal::keys::load_or_create(&p).unwrap().0;
        assert_eq!(a.public_key(), b.public_key());
        let pem = std::fs::read_to_string(dir.path().join("k").join("device.key.pub")).unwrap();
        assert_eq!(parse_public_key_pem(&pem).unwrap(), a.public_key());
    }
}
