//! Pinning: binding the device to one physical camera.
//!
//! On first use the daemon writes a *pin record* — the camera's fingerprint, signed with the
//! device key — to `<data_dir>/camera/pin.json` (+ `pin.sig`, 64-byte raw Ed25519 over the file's
//! bytes, canonical JSON as manifests). Each record names the SHA-256 of the record it replaced
//! (`prev`), and every record ever written is kept as `camera/history/<pinned_unix_us>.json/.sig`,
//! so re-pins form a signed chain an auditor can replay. Alternatively `[source.expect]` in the
//! config names the camera (then no pin is written or consulted).
//!
//! [`check`] is the pure decision; [`PinStore`] does the file I/O.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::fingerprint::{CameraIdentity, CameraInfoSource, Fingerprint};
use super::settings::ExpectConfig;
use super::{instruments, unix_us_now, CameraError};
use crate::record::hash::sha256_hex;
use crate::record::{fsio, json, verify_signature, Signer};

/// `format` of a pin record.
pub const PIN_FORMAT: &str = "veriframe.camera-pin/1";

impl ExpectConfig {
    /// Mismatching keys as `key: expected X, camera has Y` (empty: it matches).
    pub fn mismatches(&self, id: &CameraIdentity) -> Vec<String> {
        let usb = id.usb.as_ref();
        let fields: [(&str, &Option<String>, Option<String>); 8] = [
            ("sha256", &self.sha256, Some(id.sha256())),
            ("driver", &self.driver, Some(id.v4l2.driver.clone())),
            ("card", &self.card, Some(id.v4l2.card.clone())),
            ("bus_info", &self.bus_info, Some(id.v4l2.bus_info.clone())),
            (
                "id_vendor",
                &self.id_vendor,
                usb.map(|u| u.id_vendor.clone()),
            ),
            (
                "id_product",
                &self.id_product,
                usb.map(|u| u.id_product.clone()),
            ),
            ("serial", &self.serial, usb.and_then(|u| u.serial.clone())),
            ("port", &self.port, usb.map(|u| u.port.clone())),
        ];
        fields
            .into_iter()
            .filter_map(|(k, want, have)| {
                let want = want.as_ref()?;
                let ok = have.as_ref().is_some_and(|h| h.eq_ignore_ascii_case(want));
                (!ok).then(|| {
                    format!(
                        "{k}: expected {want:?}, camera has {}",
                        have.map(|h| format!("{h:?}"))
                            .unwrap_or_else(|| "none".into())
                    )
                })
            })
            .collect()
    }
}

/// A signed statement: "this device uses this camera".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinRecord {
    /// Always [`PIN_FORMAT`].
    pub format: String,
    pub device_id: String,
    pub key_id: String,
    /// Device node the camera was read from (informative; not part of the fingerprint).
    pub device: String,
    pub fingerprint: Fingerprint,
    pub pinned_unix_us: u64,
    /// `first_use` (the daemon pinned the first camera it saw) or `operator` (`camera pin`).
    pub reason: String,
    /// SHA-256 of the pin record this one replaced.
    pub prev: Option<String>,
}

/// Result of comparing the camera in use with what it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Matches `[source.expect]`.
    Expected,
    /// Matches the signed pin record.
    Pinned,
    /// No pin yet: the caller pins this camera (unless it is an injection instrument).
    FirstUse,
    /// Another camera than the expected or pinned one; the differences.
    Changed(Vec<String>),
}

impl Check {
    /// The word that goes into manifests (`fingerprint.pin`).
    pub fn name(&self) -> &'static str {
        match self {
            Check::Expected => "expected",
            Check::Pinned => "pinned",
            Check::FirstUse => "first_use",
            Check::Changed(_) => "changed",
        }
    }
}

/// Pure identity decision. With `expect`, the pin is not consulted.
pub fn check(id: &CameraIdentity, expect: Option<&ExpectConfig>, pin: Option<&PinRecord>) -> Check {
    if let Some(e) = expect {
        let m = e.mismatches(id);
        return if m.is_empty() {
            Check::Expected
        } else {
            Check::Changed(m)
        };
    }
    match pin {
        None => Check::FirstUse,
        Some(p) if p.fingerprint.sha256 == id.sha256() => Check::Pinned,
        Some(p) => {
            let mut d = p.fingerprint.identity().diff(id);
            if d.is_empty() {
                d.push("fingerprint hash differs".into());
            }
            Check::Changed(d)
        }
    }
}

/// Pin records under `<data_dir>/camera/`, signed with the device key.
pub struct PinStore {
    dir: PathBuf,
    signer: Arc<dyn Signer>,
    device_id: String,
    fsync: bool,
}

impl std::fmt::Debug for PinStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> CameraError {
    CameraError::Pin {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

impl PinStore {
    pub fn new(data_dir: &Path, signer: Arc<dyn Signer>, device_id: &str, fsync: bool) -> Self {
        Self {
            dir: data_dir.join("camera"),
            signer,
            device_id: device_id.into(),
            fsync,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("pin.json")
    }

    /// The current pin record: `Ok(None)` when there is none; an error when it exists but is not
    /// a valid record signed by this device's key (edited, copied from another device, torn).
    pub fn load(&self) -> Result<Option<(PinRecord, String)>, CameraError> {
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path, e)),
        };
        let sig_path = self.dir.join("pin.sig");
        let sig = std::fs::read(&sig_path).map_err(|e| io(&sig_path, e))?;
        if !verify_signature(&self.signer.public_key(), &bytes, &sig) {
            return Err(io(&path, "signature is not valid for this device's key"));
        }
        let rec: PinRecord = serde_json::from_slice(&bytes).map_err(|e| io(&path, e))?;
        if json::canonical(&rec).map_err(|e| io(&path, e))? != bytes {
            return Err(io(&path, "not in canonical form"));
        }
        if rec.format != PIN_FORMAT || !rec.fingerprint.consistent() {
            return Err(io(&path, "wrong format or inconsistent fingerprint"));
        }
        Ok(Some((rec, sha256_hex(&bytes))))
    }

    /// Write a new pin record for `id` (atomically: history copy first, then `pin.json` and
    /// `pin.sig`). Returns the record and its SHA-256.
    pub fn pin(
        &self,
        device: &str,
        id: &CameraIdentity,
        reason: &str,
        now_unix_us: u64,
    ) -> Result<(PinRecord, String), CameraError> {
        let prev = match self.load() {
            Ok(p) => p.map(|(_, h)| h),
            // An invalid old record is replaced; the history keeps it.
            Err(e) => {
                tracing::warn!(error = %e, "replacing an invalid camera pin record");
                None
            }
        };
        let rec = PinRecord {
            format: PIN_FORMAT.into(),
            device_id: self.device_id.clone(),
            key_id: self.signer.key_id(),
            device: device.into(),
            fingerprint: Fingerprint::of(id),
            pinned_unix_us: now_unix_us.min(json::MAX_INT),
            reason: reason.into(),
            prev,
        };
        let bytes = json::canonical(&rec).map_err(|e| io(&self.path(), e))?;
        let sig = self.signer.sign(&bytes);
        let hist = self.dir.join("history");
        std::fs::create_dir_all(&hist).map_err(|e| io(&hist, e))?;
        let stem = format!("{:016}", rec.pinned_unix_us);
        let w = |p: PathBuf, b: &[u8]| {
            fsio::atomic_write(&p, b, 0o644, self.fsync).map_err(|e| io(&p, e))
        };
        w(hist.join(format!("{stem}.json")), &bytes)?;
        w(hist.join(format!("{stem}.sig")), &sig)?;
        // pin.sig first: a crash between the two leaves a record whose signature fails, which
        // reads as "invalid pin" (untrusted until re-pinned), never as a valid wrong pin.
        w(self.dir.join("pin.sig"), &sig)?;
        w(self.path(), &bytes)?;
        Ok((rec, sha256_hex(&bytes)))
    }
}

/// What a re-pin did.
#[derive(Debug, Clone)]
pub struct Repin {
    pub record: PinRecord,
    pub record_sha256: String,
    /// The fingerprint pinned before, if any.
    pub previous: Option<String>,
    /// Field differences to the previous pin.
    pub changes: Vec<String>,
}

/// Read the camera at `device` and pin it (reason `operator`). Logs the change.
pub fn repin(
    store: &PinStore,
    reader: &mut dyn CameraInfoSource,
    device: &Path,
) -> Result<Repin, CameraError> {
    let id = reader.read(device)?;
    let old = store.load().ok().flatten().map(|(r, _)| r);
    let changes = old
        .as_ref()
        .map(|r| r.fingerprint.identity().diff(&id))
        .unwrap_or_default();
    let found = instruments::classify(&id);
    if !found.is_empty() {
        tracing::warn!(instrument = %instruments::describe(&found),
            "pinning a camera that is an injection instrument: it is still flagged unless [source] allow_virtual = true");
    }
    let device_s = device.display().to_string();
    let (record, record_sha256) = store.pin(&device_s, &id, "operator", unix_us_now())?;
    tracing::warn!(device = %device_s, sha256 = %record.fingerprint.sha256,
        previous = ?old.as_ref().map(|r| &r.fingerprint.sha256), changes = %changes.join("; "),
        record = %record_sha256, "camera pinned by the operator");
    Ok(Repin {
        previous: old.map(|r| r.fingerprint.sha256),
        record,
        record_sha256,
        changes,
    })
}

#[cfg(test)]
mod tests {
    use super::super::fingerprint::fixtures::*;
    use super::*;
    use crate::record::TestSigner;

    fn store(dir: &Path) -> (PinStore, Arc<TestSigner>) {
        let k = Arc::new(TestSigner::generate());
        (PinStore::new(dir, k.clone(), "booth-1", false), k)
    }

    #[test]
    fn pin_round_trip_and_chain() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = store(d.path());
        assert_eq!(s.load().unwrap(), None);
        let a = uvc_webcam("A");
        let (r1, h1) = s.pin("/dev/video0", &a, "first_use", 1000).unwrap();
        let (loaded, h) = s.load().unwrap().unwrap();
        assert_eq!(loaded, r1);
        assert_eq!(h, h1);
        assert_eq!(check(&a, None, Some(&loaded)), Check::Pinned);
        let b = uvc_webcam("B");
        let Check::Changed(diff) = check(&b, None, Some(&loaded)) else {
            panic!()
        };
        assert_eq!(diff, vec!["usb.serial: \"A\" -> \"B\"".to_string()]);
        let (r2, _) = s.pin("/dev/video0", &b, "operator", 2000).unwrap();
        assert_eq!(r2.prev.as_deref(), Some(h1.as_str()));
        assert_eq!(
            check(&b, None, Some(&s.load().unwrap().unwrap().0)),
            Check::Pinned
        );
        assert_eq!(
            std::fs::read_dir(d.path().join("camera/history"))
                .unwrap()
                .count(),
            4
        );
    }

    #[test]
    fn tampered_or_foreign_pin_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = store(d.path());
        s.pin("/dev/video0", &uvc_webcam("A"), "first_use", 1)
            .unwrap();
        // Another device's key does not accept it.
        let (other, _) = store(d.path());
        assert!(other.load().is_err());
        // Edited to name another camera: the signature fails.
        let p = s.path();
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("\"A\"", "\"B\"");
        std::fs::write(&p, text).unwrap();
        let e = s.load().unwrap_err().to_string();
        assert!(e.contains("signature"), "{e}");
        // Re-pinning replaces it.
        s.pin("/dev/video0", &uvc_webcam("B"), "operator", 2)
            .unwrap();
        assert!(s.load().unwrap().is_some());
    }

    #[test]
    fn expect_config() {
        let a = uvc_webcam("A");
        let e = ExpectConfig {
            id_vendor: Some("046D".into()),
            serial: Some("A".into()),
            ..Default::default()
        };
        assert!(e.validate().is_ok());
        assert_eq!(check(&a, Some(&e), None), Check::Expected);
        let Check::Changed(m) = check(&vivid(), Some(&e), None) else {
            panic!()
        };
        assert_eq!(
            m,
            vec![
                "id_vendor: expected \"046D\", camera has none".to_string(),
                "serial: expected \"A\", camera has none".to_string()
            ]
        );
        let by_hash = ExpectConfig {
            sha256: Some(a.sha256()),
            ..Default::default()
        };
        assert_eq!(check(&a, Some(&by_hash), None), Check::Expected);
        assert!(matches!(
            check(&uvc_webcam("B"), Some(&by_hash), None),
            Check::Changed(_)
        ));
        assert!(ExpectConfig::default().validate().is_err());
        let bad = ExpectConfig {
            sha256: Some("xyz".into()),
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "source.expect.sha256");
        assert_eq!(check(&a, None, None), Check::FirstUse);
    }
}
