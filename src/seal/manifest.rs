//! Capture manifests and chain-state records, signed in canonical JSON ([`crate::record::json`],
//! docs/capture-format.md). A parser accepts a document only if re-encoding it yields the same
//! bytes, so every signed manifest has exactly one byte representation.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::keys;
use crate::record::json::{canonical, NotCanonical, MAX_INT};

/// `format` of a capture manifest written by this version (with `fingerprint`).
pub const MANIFEST_FORMAT: &str = "veriframe.capture/2";
/// `format` of manifests written before camera fingerprints (no `fingerprint` field); still
/// verified.
pub const MANIFEST_FORMAT_V1: &str = "veriframe.capture/1";
/// `format` of a chain-state record.
pub const CHAIN_FORMAT: &str = "veriframe.chain/1";
/// Largest manifest or chain record a parser accepts.
pub const MAX_LEN: usize = 64 * 1024;

/// Why a document was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("larger than {MAX_LEN} bytes")]
    TooLarge,
    #[error("not a valid manifest: {0}")]
    Syntax(String),
    #[error("not in canonical form (re-encoding differs)")]
    NonCanonical,
    #[error("field `{0}`: {1}")]
    Field(&'static str, String),
}

impl From<NotCanonical> for ParseError {
    fn from(e: NotCanonical) -> Self {
        ParseError::Syntax(e.0)
    }
}

/// How the stored image was produced and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageInfo {
    /// File name of the image, in the same directory as the manifest.
    pub file: String,
    /// `image/jpeg` or `image/png`.
    pub media_type: String,
    /// Lowercase hex SHA-256 of the image file's bytes.
    pub sha256: String,
    /// Length of the image file in bytes.
    pub len: u64,
    pub width: u64,
    pub height: u64,
    /// `source` when these are the source's bytes untouched (camera MJPEG, JPEG/PNG file);
    /// `png` when Veriframe encoded raw pixels (YUYV, RGB24) once as PNG.
    pub encoding: String,
}

/// When and where the frame was captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureInfo {
    /// Wall clock, microseconds since the Unix epoch (UTC).
    pub wall_unix_us: u64,
    /// CLOCK_MONOTONIC, microseconds since boot.
    pub mono_us: u64,
    /// /proc/sys/kernel/random/boot_id: monotonic times compare only within one boot.
    pub boot_id: String,
    /// Frame number in this run of the daemon.
    pub frame_seq: u64,
    /// The driver's own frame counter, when it has one.
    pub device_seq: Option<u64>,
}

/// The frame source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDesc {
    pub kind: String,
    pub path: String,
    pub driver: String,
    pub card: String,
    pub bus: String,
    /// Pixel format the source delivered (`jpeg`, `png`, `yuyv`, `rgb24`).
    pub format: String,
    pub width: u64,
    pub height: u64,
    /// Nominal rate in frames per 1000 seconds (integer, no floats).
    pub fps_milli: u64,
}

/// A model that contributed to the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDesc {
    pub name: String,
    pub weights_sha256: String,
}

/// One face, in image pixels; scores in millionths (0..=1000000).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaceDesc {
    /// x, y, width, height, rounded to whole pixels (clamped at 0).
    pub bbox: [u64; 4],
    pub score_micro: u64,
    pub live_micro: Option<u64>,
    pub deepfake_micro: Option<u64>,
}

/// The detector's verdict on this frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisDesc {
    /// `authentic`, `attack`, `no_face`, `multiple_faces` or `unknown`.
    pub verdict: String,
    /// Whether analysis ran on this frame (false: it failed or no detector is configured).
    pub analysed: bool,
    pub faces: Vec<FaceDesc>,
    pub models: Vec<ModelDesc>,
    /// Alert kinds the decider raised on this frame.
    pub alerts: Vec<String>,
}

/// A signed capture manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    pub device_id: String,
    /// Lowercase hex SHA-256 of the raw public key.
    pub key_id: String,
    /// Raw 32-byte Ed25519 public key, standard base64.
    pub public_key: String,
    /// Position in the device's chain: 0, 1, 2, … across restarts.
    pub seq: u64,
    /// Lowercase hex SHA-256 of the previous manifest's bytes; null only at seq 0.
    pub prev: Option<String>,
    /// Why this frame was sealed: `every`, `rate`, `evidence`.
    pub policy: String,
    pub captured: CaptureInfo,
    pub source: SourceDesc,
    pub image: ImageInfo,
    pub analysis: AnalysisDesc,
    /// The source's identity (camera fingerprint, pin check, instruments): present exactly in
    /// `veriframe.capture/2` manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<crate::frame::identity::SourceIdentity>,
    /// The face's latest light challenge (docs/challenge.md); absent when no
    /// challenge was decided for the face in view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<crate::challenge::ChallengeRecord>,
}

/// Signed statement of where the stored chain starts (after retention) and where it ended at the
/// last checkpoint. Lets a verifier tell retention from deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainState {
    /// Always [`CHAIN_FORMAT`].
    pub format: String,
    pub device_id: String,
    pub key_id: String,
    pub public_key: String,
    /// Oldest seq still stored (or the next seq to be written when the store is empty).
    pub first_seq: u64,
    /// `prev` of the manifest at `first_seq` (null when `first_seq` is 0).
    pub first_prev: Option<String>,
    /// Newest seq stored at the time of writing, if any.
    pub last_seq: Option<u64>,
    /// SHA-256 of that manifest.
    pub last_sha256: Option<String>,
    pub written_unix_us: u64,
}

/// Parse strictly: size limit, schema (unknown or missing fields rejected), canonical form.
fn parse_canonical<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<T, ParseError> {
    if bytes.len() > MAX_LEN {
        return Err(ParseError::TooLarge);
    }
    let doc: T = serde_json::from_slice(bytes).map_err(|e| ParseError::Syntax(e.to_string()))?;
    if canonical(&doc)? != bytes {
        return Err(ParseError::NonCanonical);
    }
    Ok(doc)
}

fn check_hex64(field: &'static str, s: &str) -> Result<(), ParseError> {
    if s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(ParseError::Field(
            field,
            "expected 64 lowercase hex digits".into(),
        ))
    }
}

/// Check `public_key` is 32 bytes of base64 and `key_id` is its SHA-256; returns the raw key.
fn check_key(key_id: &str, public_key: &str) -> Result<[u8; 32], ParseError> {
    let pk = keys::parse_public_key(public_key.as_bytes())
        .ok()
        .filter(|pk| keys::public_key_b64(pk) == public_key)
        .ok_or_else(|| {
            ParseError::Field("public_key", "expected base64 of a 32-byte key".into())
        })?;
    check_hex64("key_id", key_id)?;
    if keys::key_id(&pk) != key_id {
        return Err(ParseError::Field(
            "key_id",
            "is not the SHA-256 of public_key".into(),
        ));
    }
    Ok(pk)
}

/// A plain file name: no directories, not hidden, not empty.
fn check_file_name(s: &str) -> Result<(), ParseError> {
    if s.is_empty() || s.starts_with('.') || s.contains('/') || s.contains('\\') || s.len() > 255 {
        return Err(ParseError::Field(
            "image.file",
            "must be a plain file name".into(),
        ));
    }
    Ok(())
}

impl Manifest {
    pub fn to_canonical(&self) -> Result<Vec<u8>, ParseError> {
        Ok(canonical(self)?)
    }

    /// Parse and validate signed manifest bytes. Never panics, whatever the input.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let m: Manifest = parse_canonical(bytes)?;
        match (m.format.as_str(), &m.fingerprint) {
            (MANIFEST_FORMAT, Some(_)) | (MANIFEST_FORMAT_V1, None) => {}
            (MANIFEST_FORMAT, None) => {
                return Err(ParseError::Field(
                    "fingerprint",
                    format!("required in {MANIFEST_FORMAT}"),
                ))
            }
            (MANIFEST_FORMAT_V1, Some(_)) => {
                return Err(ParseError::Field(
                    "fingerprint",
                    format!("not allowed in {MANIFEST_FORMAT_V1}"),
                ))
            }
            (f, _) => {
                return Err(ParseError::Field(
                    "format",
                    format!("expected {MANIFEST_FORMAT:?} or {MANIFEST_FORMAT_V1:?}, got {f:?}"),
                ))
            }
        }
        if let Some(fp) = &m.fingerprint {
            if let Some(h) = &fp.sha256 {
                check_hex64("fingerprint.sha256", h)?;
            }
        }
        check_key(&m.key_id, &m.public_key)?;
        match (&m.prev, m.seq) {
            (None, 0) => {}
            (Some(p), s) if s > 0 => check_hex64("prev", p)?,
            (None, _) => {
                return Err(ParseError::Field(
                    "prev",
                    "null is only allowed at seq 0".into(),
                ))
            }
            (Some(_), _) => return Err(ParseError::Field("prev", "must be null at seq 0".into())),
        }
        check_hex64("image.sha256", &m.image.sha256)?;
        check_file_name(&m.image.file)?;
        if let Some(c) = &m.challenge {
            c.check().map_err(|e| ParseError::Field("challenge", e))?;
        }
        if !matches!(m.image.media_type.as_str(), "image/jpeg" | "image/png") {
            return Err(ParseError::Field(
                "image.media_type",
                "expected image/jpeg or image/png".into(),
            ));
        }
        Ok(m)
    }

    /// Raw public key (validated by [`Manifest::parse`]).
    pub fn public_key_raw(&self) -> Option<[u8; 32]> {
        keys::parse_public_key(self.public_key.as_bytes()).ok()
    }
}

impl ChainState {
    pub fn to_canonical(&self) -> Result<Vec<u8>, ParseError> {
        Ok(canonical(self)?)
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let c: ChainState = parse_canonical(bytes)?;
        if c.format != CHAIN_FORMAT {
            return Err(ParseError::Field(
                "format",
                format!("expected {CHAIN_FORMAT:?}, got {:?}", c.format),
            ));
        }
        check_key(&c.key_id, &c.public_key)?;
        if let Some(p) = &c.first_prev {
            check_hex64("first_prev", p)?;
        }
        if c.first_prev.is_none() != (c.first_seq == 0) {
            return Err(ParseError::Field(
                "first_prev",
                "must be null exactly when first_seq is 0".into(),
            ));
        }
        if let Some(h) = &c.last_sha256 {
            check_hex64("last_sha256", h)?;
        }
        if c.last_seq.is_some() != c.last_sha256.is_some()
            || c.last_seq.is_some_and(|l| l < c.first_seq)
        {
            return Err(ParseError::Field(
                "last_seq",
                "inconsistent with last_sha256/first_seq".into(),
            ));
        }
        Ok(c)
    }

    pub fn public_key_raw(&self) -> Option<[u8; 32]> {
        keys::parse_public_key(self.public_key.as_bytes()).ok()
    }
}

/// Score 0..1 as millionths, clamped; NaN becomes 0.
pub fn micro(x: f32) -> u64 {
    if x.is_nan() {
        return 0;
    }
    (f64::from(x.clamp(0.0, 1.0)) * 1e6).round() as u64
}

/// Pixel coordinate rounded and clamped to 0..=MAX_INT.
pub fn pixel(x: f32) -> u64 {
    if x.is_nan() || x <= 0.0 {
        return 0;
    }
    (f64::from(x).round() as u64).min(MAX_INT)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::Signer;
    use crate::seal::keys::DeviceKey;

    pub(crate) fn sample(key: &DeviceKey, seq: u64) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            device_id: "booth-1".into(),
            key_id: key.key_id(),
            public_key: keys::public_key_b64(&key.public()),
            seq,
            prev: (seq > 0).then(|| "ab".repeat(32)),
            policy: "every".into(),
            captured: CaptureInfo {
                wall_unix_us: 1_764_000_000_000_000,
                mono_us: 12_345_678,
                boot_id: "b0d1e2f3-0000-4000-8000-123456789abc".into(),
                frame_seq: seq,
                device_seq: None,
            },
            source: SourceDesc {
                kind: "synthetic".into(),
                path: "synthetic".into(),
                driver: "synthetic".into(),
                card: "moving \"colour\" bars\n\u{1}é".into(),
                bus: String::new(),
                format: "rgb24".into(),
                width: 640,
                height: 480,
                fps_milli: 10_000,
            },
            image: ImageInfo {
                file: format!("{seq:012}.png"),
                media_type: "image/png".into(),
                sha256: "cd".repeat(32),
                len: 1234,
                width: 640,
                height: 480,
                encoding: "png".into(),
            },
            analysis: AnalysisDesc {
                verdict: "unknown".into(),
                analysed: true,
                faces: vec![FaceDesc {
                    bbox: [1, 2, 3, 4],
                    score_micro: 999_000,
                    live_micro: Some(12),
                    deepfake_micro: None,
                }],
                models: vec![ModelDesc {
                    name: "blazeface".into(),
                    weights_sha256: "ef".repeat(32),
                }],
                alerts: vec![],
            },
            fingerprint: Some(crate::frame::identity::SourceIdentity::not_a_camera()),
            challenge: None,
        }
    }

    #[test]
    fn challenge_records_round_trip_and_a_code_not_from_its_nonce_is_rejected() {
        use crate::challenge::code::{self, Code};
        use crate::challenge::ChallengeRecord;
        let (k, _) = DeviceKey::generate().unwrap();
        let mut m = sample(&k, 3);
        let nonce = [7u8; 16];
        let rec = ChallengeRecord {
            verdict: "passed".into(),
            nonce: code::hex(&nonce),
            code: Code::from_nonce(&nonce, 12, 2).to_bit_string(),
            frames_per_bit: 2,
            illuminator: "gpio:17".into(),
            first_seq: 10,
            last_seq: 36,
            lag_frames: Some(1),
            correlation: "-0.1250".into(),
            response: "0.1500".into(),
            structure: "0.0900".into(),
            samples: 27,
            expected: 27,
            reason: "r".into(),
        };
        m.challenge = Some(rec.clone());
        let b = m.to_canonical().unwrap();
        assert_eq!(Manifest::parse(&b).unwrap(), m);
        // Without a challenge the field is absent (older manifests parse unchanged).
        let plain = sample(&k, 3).to_canonical().unwrap();
        assert!(!String::from_utf8_lossy(&plain).contains("challenge"));
        // A code the nonce does not derive: rejected.
        let mut bad = rec;
        bad.code = bad
            .code
            .chars()
            .map(|c| if c == '1' { '0' } else { '1' })
            .collect();
        m.challenge = Some(bad);
        assert!(matches!(
            Manifest::parse(&m.to_canonical().unwrap()),
            Err(ParseError::Field("challenge", _))
        ));
    }

    #[test]
    fn v1_manifests_without_fingerprint_still_parse_and_v2_requires_it() {
        let (k, _) = DeviceKey::generate().unwrap();
        let mut v1 = sample(&k, 2);
        v1.format = MANIFEST_FORMAT_V1.into();
        v1.fingerprint = None;
        let b = v1.to_canonical().unwrap();
        assert!(!String::from_utf8_lossy(&b).contains("fingerprint"));
        assert_eq!(Manifest::parse(&b).unwrap(), v1);
        let mut v2 = v1.clone();
        v2.format = MANIFEST_FORMAT.into();
        assert!(matches!(
            Manifest::parse(&v2.to_canonical().unwrap()),
            Err(ParseError::Field("fingerprint", _))
        ));
        v1.fingerprint = Some(crate::frame::identity::SourceIdentity::not_a_camera());
        assert!(matches!(
            Manifest::parse(&v1.to_canonical().unwrap()),
            Err(ParseError::Field("fingerprint", _))
        ));
        // A camera fingerprint round-trips (integers and strings only: canonical).
        use crate::frame::identity::{UsbIdentity, V4l2Identity};
        let mut m = sample(&k, 2);
        m.fingerprint = Some(crate::frame::identity::SourceIdentity {
            camera: true,
            sha256: Some("ab".repeat(32)),
            v4l2: Some(V4l2Identity {
                driver: "uvcvideo".into(),
                card: "Cam".into(),
                bus_info: "usb-1".into(),
                capabilities: 0x0420_0001,
                formats: vec!["MJPG".into()],
            }),
            usb: Some(UsbIdentity {
                id_vendor: "046d".into(),
                id_product: "082d".into(),
                serial: Some("S1".into()),
                manufacturer: None,
                product: None,
                bcd_device: None,
                port: "1-1".into(),
            }),
            pin: "pinned".into(),
            instruments: vec![],
            allow_virtual: false,
        });
        let b = m.to_canonical().unwrap();
        assert_eq!(Manifest::parse(&b).unwrap(), m);
        let mut bad = m.clone();
        bad.fingerprint.as_mut().unwrap().sha256 = Some("XYZ".into());
        assert!(matches!(
            Manifest::parse(&bad.to_canonical().unwrap()),
            Err(ParseError::Field("fingerprint.sha256", _))
        ));
    }

    #[test]
    fn round_trip_and_canonical() {
        let (k, _) = DeviceKey::generate().unwrap();
        let m = sample(&k, 7);
        let bytes = m.to_canonical().unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with("{\"analysis\":{"), "{text}");
        assert!(!text.contains(' ') || text.contains("moving"), "{text}");
        assert!(text.contains("\\\"colour\\\" bars\\n\\u0001é"), "{text}");
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
        // Whitespace or key order changes are rejected.
        let pretty = serde_json::to_vec_pretty(&m).unwrap();
        assert_eq!(Manifest::parse(&pretty), Err(ParseError::NonCanonical));
        // serde_json's compact form differs only in key order here.
        let compact = serde_json::to_vec(&m).unwrap();
        assert_ne!(compact, bytes);
        assert_eq!(Manifest::parse(&compact), Err(ParseError::NonCanonical));
    }

    #[test]
    fn rejects_bad_fields() {
        let (k, _) = DeviceKey::generate().unwrap();
        let (k2, _) = DeviceKey::generate().unwrap();
        let enc = |m: &Manifest| m.to_canonical().unwrap();
        let mut m = sample(&k, 3);
        m.key_id = k2.key_id();
        assert!(matches!(
            Manifest::parse(&enc(&m)),
            Err(ParseError::Field("key_id", _))
        ));
        let mut m = sample(&k, 3);
        m.prev = None;
        assert!(matches!(
            Manifest::parse(&enc(&m)),
            Err(ParseError::Field("prev", _))
        ));
        let mut m = sample(&k, 0);
        m.prev = Some("00".repeat(32));
        assert!(matches!(
            Manifest::parse(&enc(&m)),
            Err(ParseError::Field("prev", _))
        ));
        let mut m = sample(&k, 3);
        m.image.file = "../etc/passwd".into();
        assert!(matches!(
            Manifest::parse(&enc(&m)),
            Err(ParseError::Field("image.file", _))
        ));
        let mut m = sample(&k, 3);
        m.format = "veriframe.chain/1".into();
        assert!(matches!(
            Manifest::parse(&enc(&m)),
            Err(ParseError::Field("format", _))
        ));
        let mut m = sample(&k, 3);
        m.seq = MAX_INT + 1;
        assert!(m.to_canonical().is_err());
        let text = String::from_utf8(enc(&sample(&k, 3))).unwrap();
        let floaty = text.replace("\"len\":1234", "\"len\":1234.0");
        assert!(Manifest::parse(floaty.as_bytes()).is_err());
        let extra = text.replacen('{', "{\"aaa\":1,", 1);
        assert!(matches!(
            Manifest::parse(extra.as_bytes()),
            Err(ParseError::Syntax(_))
        ));
        assert_eq!(
            Manifest::parse(&[b' '; MAX_LEN + 1]),
            Err(ParseError::TooLarge)
        );
    }

    #[test]
    fn chain_state_round_trip() {
        let (k, _) = DeviceKey::generate().unwrap();
        let c = ChainState {
            format: CHAIN_FORMAT.into(),
            device_id: "d".into(),
            key_id: k.key_id(),
            public_key: keys::public_key_b64(&k.public()),
            first_seq: 5,
            first_prev: Some("11".repeat(32)),
            last_seq: Some(9),
            last_sha256: Some("22".repeat(32)),
            written_unix_us: 1,
        };
        let b = c.to_canonical().unwrap();
        assert_eq!(ChainState::parse(&b).unwrap(), c);
        assert!(Manifest::parse(&b).is_err());
        let mut bad = c.clone();
        bad.last_seq = Some(4);
        assert!(ChainState::parse(&bad.to_canonical().unwrap()).is_err());
    }

    /// Random and mutated inputs never panic the parser (CI-friendly stand-in for the fuzz target).
    #[test]
    fn parser_survives_random_and_mutated_input() {
        use rand::{Rng, SeedableRng};
        let (k, _) = DeviceKey::generate().unwrap();
        let good = sample(&k, 3).to_canonical().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5ea1);
        let mut accepted = 0;
        for i in 0..4000 {
            let input: Vec<u8> = if i % 4 == 0 {
                let n = rng.gen_range(0..300);
                (0..n).map(|_| rng.gen()).collect()
            } else {
                let mut b = good.clone();
                for _ in 0..rng.gen_range(1..4) {
                    match rng.gen_range(0..4) {
                        0 => {
                            let j = rng.gen_range(0..b.len());
                            b[j] = rng.gen();
                        }
                        1 => {
                            let j = rng.gen_range(0..b.len());
                            b.truncate(j);
                        }
                        2 => {
                            let j = rng.gen_range(0..=b.len());
                            b.insert(j, b"{}[]\":,0\\ "[rng.gen_range(0..10)]);
                        }
                        _ => {
                            let j = rng.gen_range(0..b.len());
                            b.remove(j);
                        }
                    }
                    if b.is_empty() {
                        break;
                    }
                }
                b
            };
            if let Ok(m) = Manifest::parse(&input) {
                // Anything accepted must re-encode to exactly the input.
                assert_eq!(m.to_canonical().unwrap(), input);
                accepted += 1;
            }
            let _ = ChainState::parse(&input);
        }
        // A few mutations land inside string values and stay valid; most must be rejected.
        assert!(accepted < 1000, "{accepted}");
    }
}
