//! Camera identity: what V4L2 and sysfs say about the device behind `/dev/videoN`, and its
//! SHA-256 over canonical JSON (the *fingerprint*).
//!
//! The fields are read through [`CameraInfoSource`], so tests use fixtures and the daemon uses
//! [`SystemInfo`] (V4L2 `VIDIOC_QUERYCAP` / `VIDIOC_ENUM_FMT` plus the USB device's sysfs
//! attributes). The hash covers every field below; the device node path and the kernel driver
//! version are left out (they change on renumbering and on kernel updates, not with the camera).
//! The USB port path *is* included: a camera moved to another port reads as another camera,
//! because a swap and a move cannot be told apart when a camera has no serial number.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::CameraError;
use crate::frame::identity::{UsbIdentity, V4l2Identity};

/// Everything the fingerprint covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraIdentity {
    pub v4l2: V4l2Identity,
    /// `None` for devices not on USB (CSI cameras, virtual drivers).
    pub usb: Option<UsbIdentity>,
}

impl CameraIdentity {
    /// Lowercase hex SHA-256 of the canonical JSON (RFC 8785 form, as manifests use) of the
    /// identity: `{"usb":…,"v4l2":{…}}`.
    pub fn sha256(&self) -> String {
        // Strings and integers below 2^53 only (capabilities are 32 bits): always encodable.
        let bytes = crate::record::json::canonical(self).unwrap_or_default();
        crate::record::hash::sha256_hex(&bytes)
    }

    /// Field-by-field differences to `other`, as `name: old -> new` (for alert details).
    pub fn diff(&self, other: &CameraIdentity) -> Vec<String> {
        let a = serde_json::to_value(self).unwrap_or_default();
        let b = serde_json::to_value(other).unwrap_or_default();
        let mut out = Vec::new();
        diff_values("", &a, &b, &mut out);
        out
    }
}

fn diff_values(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff_values(
                    &p,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ if a != b => out.push(format!("{path}: {a} -> {b}")),
        _ => {}
    }
}

/// The fingerprint as it goes into manifests, `probe --json` and pin records: the identity
/// fields and their SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fingerprint {
    pub sha256: String,
    pub v4l2: V4l2Identity,
    pub usb: Option<UsbIdentity>,
}

impl Fingerprint {
    pub fn of(id: &CameraIdentity) -> Self {
        Self {
            sha256: id.sha256(),
            v4l2: id.v4l2.clone(),
            usb: id.usb.clone(),
        }
    }

    pub fn identity(&self) -> CameraIdentity {
        CameraIdentity {
            v4l2: self.v4l2.clone(),
            usb: self.usb.clone(),
        }
    }

    /// Whether `sha256` is the hash of the fields (a record edited by hand is not).
    pub fn consistent(&self) -> bool {
        self.identity().sha256() == self.sha256
    }
}

/// The seam: reads the identity of the camera at a device node.
pub trait CameraInfoSource: Send {
    fn read(&mut self, device: &Path) -> Result<CameraIdentity, CameraError>;
}

/// The real reader: V4L2 ioctls on the node plus sysfs under `sysfs_root` (normally `/sys`).
#[derive(Debug, Clone)]
pub struct SystemInfo {
    pub sysfs_root: PathBuf,
}

impl Default for SystemInfo {
    fn default() -> Self {
        Self {
            sysfs_root: PathBuf::from("/sys"),
        }
    }
}

impl CameraInfoSource for SystemInfo {
    fn read(&mut self, device: &Path) -> Result<CameraIdentity, CameraError> {
        let v4l2 = query_v4l2(device)?;
        let usb = read_usb(&self.sysfs_root, device)?;
        Ok(CameraIdentity { v4l2, usb })
    }
}

#[cfg(target_os = "linux")]
fn query_v4l2(device: &Path) -> Result<V4l2Identity, CameraError> {
    use v4l::video::Capture as _;
    let err = |what: &str, e: std::io::Error| CameraError::Read {
        path: device.display().to_string(),
        reason: format!("{what}: {e}"),
    };
    let dev = v4l::Device::with_path(device).map_err(|e| err("open", e))?;
    let caps = dev.query_caps().map_err(|e| err("VIDIOC_QUERYCAP", e))?;
    let mut formats: Vec<String> = dev
        .enum_formats()
        .map_err(|e| err("VIDIOC_ENUM_FMT", e))?
        .iter()
        .map(|d| d.fourcc.to_string())
        .collect();
    formats.sort();
    formats.dedup();
    Ok(V4l2Identity {
        driver: caps.driver,
        card: caps.card,
        bus_info: caps.bus,
        capabilities: u64::from(u32::from(caps.capabilities)),
        formats,
    })
}

#[cfg(not(target_os = "linux"))]
fn query_v4l2(device: &Path) -> Result<V4l2Identity, CameraError> {
    Err(CameraError::Read {
        path: device.display().to_string(),
        reason: "V4L2 is not available on this platform".into(),
    })
}

fn attr(dir: &Path, name: &str) -> Option<String> {
    fs::read_to_string(dir.join(name))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The USB attributes of the device behind `device` (`/dev/videoN`), from
/// `<sysfs_root>/class/video4linux/videoN/device`: that link points at the USB *interface*; the
/// nearest ancestor with an `idVendor` file is the USB device. `Ok(None)` when the node is not a
/// USB device (CSI, platform, virtual). Only a missing class entry for the node is an error.
pub fn read_usb(sysfs_root: &Path, device: &Path) -> Result<Option<UsbIdentity>, CameraError> {
    let name = device
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| CameraError::Read {
            path: device.display().to_string(),
            reason: "not a device node name".into(),
        })?;
    let class = sysfs_root.join("class/video4linux").join(name);
    if !class.exists() {
        return Err(CameraError::Read {
            path: device.display().to_string(),
            reason: format!("{} does not exist", class.display()),
        });
    }
    let Ok(mut dir) = fs::canonicalize(class.join("device")) else {
        return Ok(None);
    };
    let root = fs::canonicalize(sysfs_root).unwrap_or_else(|_| sysfs_root.to_path_buf());
    loop {
        if let (Some(vid), Some(pid)) = (attr(&dir, "idVendor"), attr(&dir, "idProduct")) {
            return Ok(Some(UsbIdentity {
                id_vendor: vid.to_ascii_lowercase(),
                id_product: pid.to_ascii_lowercase(),
                serial: attr(&dir, "serial"),
                manufacturer: attr(&dir, "manufacturer"),
                product: attr(&dir, "product"),
                bcd_device: attr(&dir, "bcdDevice"),
                port: dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            }));
        }
        match dir.parent() {
            Some(p) if p.starts_with(&root) && p != root => dir = p.to_path_buf(),
            _ => return Ok(None),
        }
    }
}

/// A scripted reader for tests: hands out the identities in order, repeating the last one.
#[derive(Debug, Clone)]
pub struct FixtureInfo {
    pub identities: Vec<Result<CameraIdentity, String>>,
    pub reads: usize,
}

impl FixtureInfo {
    pub fn new(identities: Vec<CameraIdentity>) -> Self {
        Self {
            identities: identities.into_iter().map(Ok).collect(),
            reads: 0,
        }
    }
}

impl CameraInfoSource for FixtureInfo {
    fn read(&mut self, device: &Path) -> Result<CameraIdentity, CameraError> {
        let i = self.reads.min(self.identities.len().saturating_sub(1));
        self.reads += 1;
        match self.identities.get(i) {
            Some(Ok(id)) => Ok(id.clone()),
            Some(Err(reason)) => Err(CameraError::Read {
                path: device.display().to_string(),
                reason: reason.clone(),
            }),
            None => Err(CameraError::Read {
                path: device.display().to_string(),
                reason: "fixture has no identities".into(),
            }),
        }
    }
}

/// Identities for tests and docs: a UVC webcam, and the kernel's vivid virtual camera.
pub mod fixtures {
    use super::*;

    pub fn uvc_webcam(serial: &str) -> CameraIdentity {
        CameraIdentity {
            v4l2: V4l2Identity {
                driver: "uvcvideo".into(),
                card: "HD Pro Webcam C920".into(),
                bus_info: "usb-0000:01:00.0-1.2".into(),
                capabilities: 0x0420_0001,
                formats: vec!["MJPG".into(), "YUYV".into()],
            },
            usb: Some(UsbIdentity {
                id_vendor: "046d".into(),
                id_product: "082d".into(),
                serial: Some(serial.into()),
                manufacturer: None,
                product: Some("HD Pro Webcam C920".into()),
                bcd_device: Some("0011".into()),
                port: "1-1.2".into(),
            }),
        }
    }

    pub fn vivid() -> CameraIdentity {
        CameraIdentity {
            v4l2: V4l2Identity {
                driver: "vivid".into(),
                card: "vivid".into(),
                bus_info: "platform:vivid-000".into(),
                capabilities: 0x0520_0001,
                formats: vec!["RGB3".into(), "YUYV".into()],
            },
            usb: None,
        }
    }

    /// A MacroSilicon MS2109 HDMI-to-USB dongle, as it enumerates (a UVC "webcam").
    pub fn ms2109_dongle() -> CameraIdentity {
        CameraIdentity {
            v4l2: V4l2Identity {
                driver: "uvcvideo".into(),
                card: "USB Video: USB Video".into(),
                bus_info: "usb-0000:01:00.0-1.3".into(),
                capabilities: 0x0420_0001,
                formats: vec!["MJPG".into(), "YUYV".into()],
            },
            usb: Some(UsbIdentity {
                id_vendor: "534d".into(),
                id_product: "2109".into(),
                serial: None,
                manufacturer: Some("MACROSILICON".into()),
                product: Some("USB Video".into()),
                bcd_device: Some("2100".into()),
                port: "1-1.3".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn hash_is_stable_and_covers_every_field() {
        let a = uvc_webcam("A1B2C3");
        assert_eq!(a.sha256(), a.clone().sha256());
        assert_eq!(a.sha256().len(), 64);
        // Golden value: the canonical form is part of the format (pins and manifests carry it).
        let canon = String::from_utf8(crate::record::json::canonical(&a).unwrap()).unwrap();
        assert!(
            canon.starts_with("{\"usb\":{\"bcd_device\":\"0011\","),
            "{canon}"
        );
        let mut b = a.clone();
        b.usb.as_mut().unwrap().serial = Some("A1B2C4".into());
        assert_ne!(a.sha256(), b.sha256());
        let mut c = a.clone();
        c.usb.as_mut().unwrap().port = "1-1.3".into();
        assert_ne!(a.sha256(), c.sha256());
        let mut d = a.clone();
        d.v4l2.formats.push("H264".into());
        assert_ne!(a.sha256(), d.sha256());
        assert_eq!(
            a.diff(&b),
            vec!["usb.serial: \"A1B2C3\" -> \"A1B2C4\"".to_string()]
        );
        let fp = Fingerprint::of(&a);
        assert!(fp.consistent());
        assert_eq!(fp.identity(), a);
        let mut forged = fp.clone();
        forged.usb.as_mut().unwrap().serial = None;
        assert!(!forged.consistent());
    }

    /// A sysfs tree shaped like the kernel's for a UVC camera on port 1-1.2.
    fn fake_sysfs(root: &Path, usb: bool) {
        let dev = root.join("devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1.2");
        let intf = dev.join("1-1.2:1.0");
        let plat = root.join("devices/platform/vivid.0");
        fs::create_dir_all(&intf).unwrap();
        fs::create_dir_all(&plat).unwrap();
        // The root hub also has idVendor: the walk must stop at the nearest device.
        fs::write(
            root.join("devices/pci0000:00/0000:00:14.0/usb1/idVendor"),
            "1d6b\n",
        )
        .unwrap();
        fs::write(
            root.join("devices/pci0000:00/0000:00:14.0/usb1/idProduct"),
            "0002\n",
        )
        .unwrap();
        for (k, v) in [
            ("idVendor", "046D\n"),
            ("idProduct", "082d\n"),
            ("serial", "A1B2C3\n"),
            ("product", "HD Pro Webcam C920\n"),
            ("bcdDevice", "0011\n"),
        ] {
            fs::write(dev.join(k), v).unwrap();
        }
        let class = root.join("class/video4linux/video0");
        fs::create_dir_all(&class).unwrap();
        symlink(if usb { &intf } else { &plat }, class.join("device")).unwrap();
    }

    #[test]
    fn usb_attributes_from_sysfs() {
        let d = tempfile::tempdir().unwrap();
        fake_sysfs(d.path(), true);
        let u = read_usb(d.path(), Path::new("/dev/video0"))
            .unwrap()
            .unwrap();
        assert_eq!(u.vid_pid(), "046d:082d");
        assert_eq!(u.serial.as_deref(), Some("A1B2C3"));
        assert_eq!(u.manufacturer, None);
        assert_eq!(u.product.as_deref(), Some("HD Pro Webcam C920"));
        assert_eq!(u.bcd_device.as_deref(), Some("0011"));
        assert_eq!(u.port, "1-1.2");
        // A node that does not exist is an error, not a camera without USB.
        assert!(read_usb(d.path(), Path::new("/dev/video7")).is_err());
    }

    #[test]
    fn platform_device_has_no_usb_identity() {
        let d = tempfile::tempdir().unwrap();
        fake_sysfs(d.path(), false);
        assert_eq!(read_usb(d.path(), Path::new("/dev/video0")).unwrap(), None);
    }

    #[test]
    fn fixture_repeats_the_last_identity() {
        let mut f = FixtureInfo::new(vec![uvc_webcam("1"), vivid()]);
        let p = Path::new("/dev/video0");
        assert_eq!(f.read(p).unwrap(), uvc_webcam("1"));
        assert_eq!(f.read(p).unwrap(), vivid());
        assert_eq!(f.read(p).unwrap(), vivid());
        assert!(FixtureInfo::new(vec![]).read(p).is_err());
    }
}
