//! C2PA Content Credentials for sealed captures: a copy of the stored image with an embedded,
//! Ed25519-signed C2PA manifest (`<seq>.c2pa.jpg`, or `.c2pa.png` for images the device
//! encoded), readable by any C2PA tool. The Veriframe seal stays primary: the credential is made
//! after the capture is durable, and failing to make one never loses the capture.
//!
//! A small writer of its own, signing with the device key through `ring` (no second crypto
//! stack): manifest store (JUMBF) → one manifest → assertions `c2pa.actions`,
//! `org.veriframe.capture`, `c2pa.hash.data`; a v1 claim; a COSE_Sign1 (EdDSA, x5chain)
//! signature. Format and verification: `docs/capture-format.md` §8.
//!
//! | file | what |
//! |---|---|
//! | [`cbor`] | minimal deterministic CBOR encoder |
//! | [`jumbf`] | JUMBF boxes and C2PA box types |
//! | [`embed`] | JPEG APP11 / PNG `caBX` placement |

pub mod cbor;
pub mod embed;
pub mod jumbf;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use cbor::Value;
use embed::Kind;

use super::cert::CertChain;
use super::keys::DeviceKey;
use super::manifest::Manifest;
use crate::record::{fsio, hash, Signer};

/// IPTC digital source type of a camera capture.
pub const DIGITAL_CAPTURE: &str = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture";
/// Label of the Veriframe assertion.
pub const VERIFRAME_ASSERTION: &str = "org.veriframe.capture";
/// Version of the Veriframe assertion's schema.
pub const VERIFRAME_ASSERTION_FORMAT: &str = "org.veriframe.capture/1";

/// Errors making a content credential.
#[derive(Debug, thiserror::Error)]
pub enum C2paError {
    #[error("media type {0} cannot carry a C2PA credential here (JPEG and PNG only)")]
    Unsupported(String),
    #[error("image: {0}")]
    Image(String),
    #[error("certificate: {0}")]
    Cert(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest: {0}")]
    Manifest(String),
}

/// Signs credentials with the device key and its certificate chain.
pub struct C2paSigner {
    key: Arc<DeviceKey>,
    chain: CertChain,
}

impl std::fmt::Debug for C2paSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("C2paSigner")
            .field("key", &self.key)
            .field("certs", &self.chain.certs.len())
            .finish()
    }
}

impl C2paSigner {
    /// A signer for `key` with `chain`, whose leaf must certify `key`.
    pub fn new(key: Arc<DeviceKey>, chain: CertChain) -> Result<Self, C2paError> {
        chain
            .check_leaf_key(&key.public())
            .map_err(C2paError::Cert)?;
        Ok(Self { key, chain })
    }

    /// A signer for `key` with the chain in the PEM file `path`.
    pub fn load(key: Arc<DeviceKey>, path: &Path) -> Result<Self, C2paError> {
        let pem = std::fs::read(path).map_err(|source| C2paError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let chain = CertChain::from_pem(&pem)
            .map_err(|e| C2paError::Cert(format!("{}: {e}", path.display())))?;
        Self::new(key, chain).map_err(|e| C2paError::Cert(format!("{}: {e}", path.display())))
    }

    /// The credentialed copy of a sealed capture: `image` (the stored image, `media_type`) with
    /// a C2PA manifest describing `manifest` (whose file bytes hash to `manifest_sha256`).
    pub fn sign(
        &self,
        manifest: &Manifest,
        manifest_sha256: &str,
        media_type: &str,
        image: &[u8],
    ) -> Result<Vec<u8>, C2paError> {
        let kind = Kind::from_media_type(media_type)?;
        let at = embed::insertion_point(kind, image)?;
        let ids = Ids::from_manifest_hash(manifest_sha256);
        let actions = actions_assertion(manifest);
        let veriframe = veriframe_assertion(manifest, manifest_sha256)?;
        let image_hash = ring::digest::digest(&ring::digest::SHA256, image);
        // The data hash covers every byte of the result except the inserted store, i.e. exactly
        // the original image; only the excluded length depends on the store's size, so iterate
        // to the fixed point (two or three rounds).
        // The layout is found with a placeholder signature (Ed25519 signatures are always 64
        // bytes, so the real one does not change it); only the final store is signed.
        let mut excluded = 0usize;
        for _ in 0..6 {
            let data_hash = data_hash_assertion(at, excluded, image_hash.as_ref());
            let store = self.store(&ids, kind, &actions, &veriframe, &data_hash, false);
            let size = embed::wrap(kind, &store)?.len();
            if size == excluded {
                let store = self.store(&ids, kind, &actions, &veriframe, &data_hash, true);
                let wrapped = embed::wrap(kind, &store)?;
                debug_assert_eq!(wrapped.len(), excluded);
                let mut out = Vec::with_capacity(image.len() + wrapped.len());
                out.extend_from_slice(&image[..at]);
                out.extend_from_slice(&wrapped);
                out.extend_from_slice(&image[at..]);
                return Ok(out);
            }
            excluded = size;
        }
        Err(C2paError::Image(
            "manifest store size did not converge".into(),
        ))
    }

    /// The manifest store (JUMBF) for one manifest with the given assertions.
    fn store(
        &self,
        ids: &Ids,
        kind: Kind,
        actions: &[u8],
        veriframe: &[u8],
        data_hash: &[u8],
        sign: bool,
    ) -> Vec<u8> {
        let boxes = [
            jumbf::cbor_box(&jumbf::CBOR, "c2pa.actions", actions),
            jumbf::cbor_box(&jumbf::CBOR, VERIFRAME_ASSERTION, veriframe),
            jumbf::cbor_box(&jumbf::CBOR, "c2pa.hash.data", data_hash),
        ];
        let labels = ["c2pa.actions", VERIFRAME_ASSERTION, "c2pa.hash.data"];
        let refs: Vec<Value> = labels
            .iter()
            .zip(&boxes)
            .map(|(label, b)| {
                Value::map([
                    (
                        "url",
                        Value::text(format!("self#jumbf=c2pa.assertions/{label}")),
                    ),
                    ("alg", Value::text("sha256")),
                    ("hash", Value::Bytes(sha256(jumbf::payload(b)))),
                ])
            })
            .collect();
        let claim = Value::map([
            (
                "claim_generator",
                Value::text(format!("veriframe/{}", env!("CARGO_PKG_VERSION"))),
            ),
            (
                "claim_generator_info",
                Value::Array(vec![Value::map([
                    ("name", Value::text("veriframe")),
                    ("version", Value::text(env!("CARGO_PKG_VERSION"))),
                ])]),
            ),
            ("signature", Value::text("self#jumbf=c2pa.signature")),
            ("assertions", Value::Array(refs)),
            ("dc:format", Value::text(kind.media_type())),
            ("instanceID", Value::text(ids.instance.clone())),
            ("alg", Value::text("sha256")),
        ])
        .to_vec();
        let signature = self.cose_sign1(&claim, sign);
        let assertion_refs: Vec<&[u8]> = boxes.iter().map(Vec::as_slice).collect();
        let assertion_store =
            jumbf::superbox(&jumbf::ASSERTIONS, "c2pa.assertions", &assertion_refs);
        let manifest = jumbf::superbox(
            &jumbf::MANIFEST,
            &ids.manifest,
            &[
                &assertion_store,
                &jumbf::cbor_box(&jumbf::CLAIM, "c2pa.claim", &claim),
                &jumbf::cbor_box(&jumbf::SIGNATURE, "c2pa.signature", &signature),
            ],
        );
        jumbf::superbox(&jumbf::STORE, "c2pa", &[&manifest])
    }

    /// COSE_Sign1 (RFC 9052, tag 18) over `claim` as detached payload: protected header
    /// `{1: -8 (EdDSA), 33: x5chain}`, empty unprotected header. Without `sign`, the signature
    /// is 64 zero bytes (for sizing).
    fn cose_sign1(&self, claim: &[u8], sign: bool) -> Vec<u8> {
        let x5chain = match self.chain.x5chain() {
            [one] => Value::Bytes(one.clone()),
            many => Value::Array(many.iter().cloned().map(Value::Bytes).collect()),
        };
        let protected = Value::Map(vec![
            (Value::Uint(1), Value::int(-8)),
            (Value::Uint(33), x5chain),
        ])
        .to_vec();
        let to_sign = Value::Array(vec![
            Value::text("Signature1"),
            Value::Bytes(protected.clone()),
            Value::Bytes(Vec::new()),
            Value::Bytes(claim.to_vec()),
        ])
        .to_vec();
        let sig = if sign {
            self.key.sign(&to_sign)
        } else {
            [0u8; 64]
        };
        Value::Tag(
            18,
            Box::new(Value::Array(vec![
                Value::Bytes(protected),
                Value::Map(Vec::new()),
                Value::Null,
                Value::Bytes(sig.to_vec()),
            ])),
        )
        .to_vec()
    }
}

/// Manifest label and instance id, derived from the Veriframe manifest hash so that the same
/// capture always gets the same identifiers (export reproduces the daemon's file).
struct Ids {
    manifest: String,
    instance: String,
}

impl Ids {
    fn from_manifest_hash(manifest_sha256: &str) -> Self {
        let h = sha256(manifest_sha256.as_bytes());
        let uuid = |b: &[u8]| {
            // RFC 9562 version 8 (custom), variant 10.
            let mut u = [0u8; 16];
            u.copy_from_slice(&b[..16]);
            u[6] = (u[6] & 0x0f) | 0x80;
            u[8] = (u[8] & 0x3f) | 0x80;
            let x = hash::hex(&u);
            format!(
                "{}-{}-{}-{}-{}",
                &x[0..8],
                &x[8..12],
                &x[12..16],
                &x[16..20],
                &x[20..32]
            )
        };
        Self {
            manifest: format!("urn:uuid:{}", uuid(&h[..16])),
            instance: format!("xmp:iid:{}", uuid(&h[16..])),
        }
    }
}

fn sha256(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .to_vec()
}

/// RFC 3339 time of a capture (µs since the epoch).
fn rfc3339(wall_unix_us: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(wall_unix_us)).to_string()
}

/// `c2pa.actions`: one `c2pa.created` action, a digital capture, at the capture time.
fn actions_assertion(m: &Manifest) -> Vec<u8> {
    Value::map([(
        "actions",
        Value::Array(vec![Value::map([
            ("action", Value::text("c2pa.created")),
            ("when", Value::text(rfc3339(m.captured.wall_unix_us))),
            (
                "softwareAgent",
                Value::text(format!("veriframe/{}", env!("CARGO_PKG_VERSION"))),
            ),
            ("digitalSourceType", Value::text(DIGITAL_CAPTURE)),
        ])]),
    )])
    .to_vec()
}

/// `c2pa.hash.data`: SHA-256 of the image with the store (`excluded` bytes at `at`) left out.
fn data_hash_assertion(at: usize, excluded: usize, hash: &[u8]) -> Vec<u8> {
    Value::map([
        (
            "exclusions",
            Value::Array(vec![Value::map([
                ("start", Value::Uint(at as u64)),
                ("length", Value::Uint(excluded as u64)),
            ])]),
        ),
        ("name", Value::text("jumbf manifest")),
        ("alg", Value::text("sha256")),
        ("hash", Value::Bytes(hash.to_vec())),
        ("pad", Value::Bytes(Vec::new())),
    ])
    .to_vec()
}

/// `org.veriframe.capture`: what the Veriframe manifest says about the capture (the analysis,
/// source fingerprint and, where present, the challenge verbatim from the manifest), tied to
/// it by the manifest's hash and chain position.
fn veriframe_assertion(m: &Manifest, manifest_sha256: &str) -> Result<Vec<u8>, C2paError> {
    let mut doc = serde_json::to_value(m).map_err(|e| C2paError::Manifest(e.to_string()))?;
    // Face boxes as {x, y, w, h}: C2PA tools show an array of small integers as a byte string.
    if let Some(faces) = doc
        .pointer_mut("/analysis/faces")
        .and_then(|f| f.as_array_mut())
    {
        for face in faces {
            if let Some(b) = face.get("bbox").and_then(|b| b.as_array()).cloned() {
                if b.len() == 4 {
                    face["bbox"] = serde_json::json!({"x": b[0], "y": b[1], "w": b[2], "h": b[3]});
                }
            }
        }
    }
    let field = |k: &str| doc.get(k).map(json_to_cbor).unwrap_or(Value::Null);
    let mut members = vec![
        ("format", Value::text(VERIFRAME_ASSERTION_FORMAT)),
        ("manifest_format", Value::text(m.format.clone())),
        ("device_id", Value::text(m.device_id.clone())),
        ("key_id", Value::text(m.key_id.clone())),
        ("seq", Value::Uint(m.seq)),
        ("prev", Value::opt_text(m.prev.as_deref())),
        (
            "manifest_file",
            Value::text(format!("{}.json", super::store::stem(m.seq))),
        ),
        ("manifest_sha256", Value::text(manifest_sha256)),
        ("image_file", Value::text(m.image.file.clone())),
        ("image_sha256", Value::text(m.image.sha256.clone())),
        ("policy", Value::text(m.policy.clone())),
        ("captured", field("captured")),
        ("analysis", field("analysis")),
        ("fingerprint", field("fingerprint")),
    ];
    // Fields later manifest versions add (e.g. the light challenge) pass through as they are.
    for extra in ["challenge"] {
        if let Some(v) = doc.get(extra).filter(|v| !v.is_null()) {
            members.push((extra, json_to_cbor(v)));
        }
    }
    Ok(Value::Map(
        members
            .into_iter()
            .map(|(k, v)| (Value::text(k), v))
            .collect(),
    )
    .to_vec())
}

/// JSON to CBOR. Manifests hold no fractional numbers (§3.1); any that appear become text.
fn json_to_cbor(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Value::Uint(u),
            (None, Some(i)) => Value::int(i),
            _ => Value::text(n.to_string()),
        },
        J::String(s) => Value::text(s.clone()),
        J::Array(a) => Value::Array(a.iter().map(json_to_cbor).collect()),
        J::Object(o) => Value::Map(
            o.iter()
                .map(|(k, v)| (Value::text(k.clone()), json_to_cbor(v)))
                .collect(),
        ),
    }
}

/// File name of the credentialed copy of capture `seq` for an image of `media_type`.
pub fn credential_file(seq: u64, media_type: &str) -> Result<String, C2paError> {
    let kind = Kind::from_media_type(media_type)?;
    Ok(format!("{}.c2pa.{}", super::store::stem(seq), kind.ext()))
}

/// Write `bytes` to `dir/name` atomically (temp file, rename; no sync: the copy can always be
/// made again from the sealed capture with `veriframe export --c2pa`).
pub fn write_credential(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, C2paError> {
    let path = dir.join(name);
    let tmp = fsio::temp_name(&path);
    let io = |source| C2paError::Io {
        path: path.clone(),
        source,
    };
    std::fs::write(&tmp, bytes).map_err(io)?;
    if let Err(e) = std::fs::rename(&tmp, &path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(image: &[u8], media_type: &str) -> Manifest {
        serde_json::from_value(serde_json::json!({
            "format": "veriframe.capture/2", "device_id": "cam-1", "key_id": "k",
            "public_key": "p", "seq": 5, "prev": "ab", "policy": "every",
            "captured": {"wall_unix_us": 1_700_000_000_000_000u64, "mono_us": 1, "boot_id": "b",
                         "frame_seq": 5, "device_seq": null},
            "source": {"kind": "replay", "path": "x", "driver": "", "card": "", "bus": "",
                       "format": "jpeg", "width": 2, "height": 2, "fps_milli": 0},
            "image": {"file": "000000000005.jpg", "media_type": media_type,
                      "sha256": hash::sha256_hex(image), "len": image.len(), "width": 2,
                      "height": 2, "encoding": "source"},
            "analysis": {"verdict": "authentic", "analysed": true,
                         "faces": [{"bbox": [1, 2, 3, 4], "score_micro": 900000,
                                    "live_micro": 800000, "deepfake_micro": null}],
                         "models": [], "alerts": []},
            "fingerprint": null
        }))
        .unwrap()
    }

    fn signer() -> (C2paSigner, Arc<DeviceKey>) {
        let key = Arc::new(DeviceKey::generate().unwrap().0);
        let chain = super::super::cert::self_signed(&key, "cam-1", 1)
            .unwrap()
            .chain;
        (C2paSigner::new(key.clone(), chain).unwrap(), key)
    }

    /// A minimal JPEG-shaped byte string (SOI, APP0, some bytes, EOI): the writer does not
    /// decode the image.
    fn jpeg() -> Vec<u8> {
        let mut j = vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x06, b'J', b'F', b'I', b'F'];
        j.extend_from_slice(&[0xff, 0xda, 0x00, 0x02, 1, 2, 3, 0xff, 0xd9]);
        j
    }

    #[test]
    fn credential_is_the_image_plus_a_store_excluded_from_its_data_hash() {
        let (s, _) = signer();
        let img = jpeg();
        let m = manifest(&img, "image/jpeg");
        let out = s.sign(&m, "00", "image/jpeg", &img).unwrap();
        // Inserted after SOI + APP0 (10 bytes), as one APP11 segment.
        assert_eq!(&out[..10], &img[..10]);
        assert_eq!(&out[10..12], &[0xff, 0xeb]);
        let seg = u16::from_be_bytes([out[12], out[13]]) as usize + 2;
        assert_eq!(&out[10 + seg..], &img[10..]);
        assert_eq!(&out[26..30], b"jumb");
        assert_eq!(&out[38..42], b"c2pa"); // the store's type UUID starts with "c2pa"
                                           // The data-hash assertion names exactly that region and the original image's hash.
        let expect = data_hash_assertion(10, seg, &sha256(&img));
        assert!(out.windows(expect.len()).any(|w| w == expect.as_slice()));
        // Deterministic: the same capture gives the same credential.
        assert_eq!(out, s.sign(&m, "00", "image/jpeg", &img).unwrap());
    }

    #[test]
    fn veriframe_assertion_ties_the_credential_to_the_manifest() {
        let img = jpeg();
        let m = manifest(&img, "image/jpeg");
        let a = veriframe_assertion(&m, "feed").unwrap();
        for needle in [
            &b"manifest_sha256"[..],
            b"feed",
            b"000000000005.json",
            b"authentic",
            b"live_micro",
        ] {
            assert!(a.windows(needle.len()).any(|w| w == needle));
        }
        // Face boxes become maps, and absent optional fields are not invented.
        assert!(a.windows(2).any(|w| w == [0x61, b'x']));
        assert!(!a.windows(9).any(|w| w == b"challenge"));
    }

    #[test]
    fn bad_input_is_an_error() {
        let (s, _) = signer();
        let img = jpeg();
        let m = manifest(&img, "image/jpeg");
        assert!(s.sign(&m, "00", "image/gif", &img).is_err());
        assert!(s.sign(&m, "00", "image/jpeg", b"not a jpeg").is_err());
        assert!(s.sign(&m, "00", "image/png", &img).is_err());
        assert!(s.sign(&m, "00", "image/jpeg", &[]).is_err());
    }

    #[test]
    fn a_chain_for_another_key_is_refused() {
        let (_, key) = signer();
        let other = Arc::new(DeviceKey::generate().unwrap().0);
        let chain = super::super::cert::self_signed(&other, "cam-2", 1)
            .unwrap()
            .chain;
        assert!(C2paSigner::new(key, chain).is_err());
    }
}
