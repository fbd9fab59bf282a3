//! Source identity as recorded in manifests (`fingerprint`): plain data, filled in by the camera
//! guard (the `camera` module, above this one; this module imports nothing from the crate).

use serde::{Deserialize, Serialize};

/// What V4L2 reports (`VIDIOC_QUERYCAP`, `VIDIOC_ENUM_FMT`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct V4l2Identity {
    pub driver: String,
    pub card: String,
    pub bus_info: String,
    /// Device capability bits (`device_caps`, as `v4l2-ctl --info` prints them).
    pub capabilities: u64,
    /// Pixel formats offered (FourCC text), sorted, without duplicates.
    pub formats: Vec<String>,
}

/// The USB device's sysfs attributes (absent attributes are `null`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsbIdentity {
    /// `idVendor`, 4 lowercase hex digits.
    pub id_vendor: String,
    /// `idProduct`, 4 lowercase hex digits.
    pub id_product: String,
    pub serial: Option<String>,
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    /// `bcdDevice` (device release, often the firmware version).
    pub bcd_device: Option<String>,
    /// USB port path: the sysfs name of the device, e.g. `1-1.2` (bus 1, port 1, hub port 2).
    pub port: String,
}

impl UsbIdentity {
    /// `vvvv:pppp`.
    pub fn vid_pid(&self) -> String {
        format!("{}:{}", self.id_vendor, self.id_product)
    }
}

/// The `fingerprint` of a manifest: the source's identity and what the device concluded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceIdentity {
    /// Whether the source is a camera (V4L2). Replay and synthetic sources are not, and are
    /// exempt from identity and stream checks.
    pub camera: bool,
    /// SHA-256 of the identity fields (cameras whose identity could be read).
    pub sha256: Option<String>,
    pub v4l2: Option<V4l2Identity>,
    pub usb: Option<UsbIdentity>,
    /// `expected`, `pinned`, `first_use`, `changed`, `unpinned` (an instrument, not pinned),
    /// `unreadable`, `not_a_camera`.
    pub pin: String,
    /// Injection-instrument rules the camera matched (`driver:vivid`, `usb:534d:2109`, …).
    pub instruments: Vec<String>,
    /// `[source] allow_virtual` was set when the frame was captured.
    pub allow_virtual: bool,
}

impl SourceIdentity {
    /// The identity of a source that is not a camera (replay, synthetic).
    pub fn not_a_camera() -> Self {
        Self {
            camera: false,
            sha256: None,
            v4l2: None,
            usb: None,
            pin: "not_a_camera".into(),
            instruments: Vec::new(),
            allow_virtual: false,
        }
    }
}
