//! Injection instruments: devices that enumerate as a camera but deliver video that did not come
//! from a sensor looking at the scene — virtual cameras fed by software (a face swap, a
//! recording), and HDMI/analogue capture chips that turn another machine's screen into a "webcam".
//!
//! [`classify`] is a pure function of a [`CameraIdentity`] against the table below; the table is
//! documented (with what it cannot catch) in `docs/injection-defence.md`. Matching is
//! case-insensitive. A match gives an `injection_suspected` alert and verdict `untrusted_source`
//! unless `[source] allow_virtual = true`.

use serde::Serialize;

use super::fingerprint::CameraIdentity;

/// What kind of instrument a rule describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// A kernel driver that makes frames up or takes them from user space.
    VirtualDriver,
    /// An HDMI, SDI or analogue video capture device.
    CaptureDevice,
}

/// A table row that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instrument {
    pub class: Class,
    /// Stable rule name, e.g. `driver:vivid`, `usb:534d:2109`, `name:virtual`.
    pub rule: String,
    /// Human description, e.g. `MacroSilicon MS2109 HDMI-to-USB capture dongle`.
    pub what: String,
}

/// Virtual V4L2 drivers, by V4L2 `driver` name (exact, case-insensitive).
pub const VIRTUAL_DRIVERS: &[(&str, &str)] = &[
    (
        "v4l2 loopback",
        "v4l2loopback (user space feeds frames: OBS, ffmpeg, face-swap tools)",
    ),
    ("v4l2loopback", "v4l2loopback (user space feeds frames)"),
    ("akvcam", "akvcam virtual camera (Webcamoid)"),
    ("vivid", "vivid, the kernel's virtual video test driver"),
    ("vimc", "vimc, the kernel's virtual media controller camera"),
];

/// Substrings of V4L2 `card` or `bus_info`, or of the USB product/manufacturer, that name a
/// virtual or capture device.
pub const NAME_RULES: &[(&str, Class, &str)] = &[
    (
        "dummy video device",
        Class::VirtualDriver,
        "v4l2loopback default card name",
    ),
    (
        "virtual",
        Class::VirtualDriver,
        "a device that calls itself virtual (OBS Virtual Camera, AkVCam, …)",
    ),
    (
        "v4l2loopback",
        Class::VirtualDriver,
        "v4l2loopback bus name",
    ),
    ("platform:vivid", Class::VirtualDriver, "vivid bus name"),
    ("platform:akvcam", Class::VirtualDriver, "akvcam bus name"),
    ("hdmi", Class::CaptureDevice, "a device that names HDMI"),
    (
        "cam link",
        Class::CaptureDevice,
        "Elgato Cam Link (HDMI capture)",
    ),
    (
        "game capture",
        Class::CaptureDevice,
        "a game capture device",
    ),
    (
        "video grabber",
        Class::CaptureDevice,
        "an analogue video grabber",
    ),
    (
        "capture",
        Class::CaptureDevice,
        "a device that names itself a capture device",
    ),
];

/// USB capture chips and capture-card vendors: `(vid, Some(pid) | None = whole vendor, what,
/// exception)`. `exception`: a product-name substring that marks a real webcam of that vendor.
pub const USB_RULES: &[(&str, Option<&str>, &str, Option<&str>)] = &[
    (
        "534d",
        Some("2109"),
        "MacroSilicon MS2109 HDMI-to-USB capture dongle",
        None,
    ),
    (
        "345f",
        Some("2130"),
        "MacroSilicon MS2130 HDMI-to-USB 3.0 capture dongle",
        None,
    ),
    (
        "534d",
        Some("0021"),
        "MacroSilicon MS210x analogue video grabber",
        None,
    ),
    (
        "1b71",
        Some("3002"),
        "Fushicai USBTV007 analogue video grabber (EasyCAP)",
        None,
    ),
    (
        "1f71",
        Some("3301"),
        "Fushicai USBTV007 analogue video grabber",
        None,
    ),
    (
        "1f71",
        Some("3306"),
        "Fushicai USBTV007 analogue video grabber",
        None,
    ),
    (
        "05e1",
        Some("0408"),
        "Syntek STK1160 analogue video grabber (EasyCAP)",
        None,
    ),
    (
        "eb1a",
        None,
        "Empia (em28xx) analogue capture/TV chip",
        None,
    ),
    (
        "0fd9",
        None,
        "Elgato capture device (Cam Link, HD60, 4K60, …)",
        Some("facecam"),
    ),
    (
        "07ca",
        None,
        "AVerMedia capture device (Live Gamer, …)",
        Some("webcam"),
    ),
    ("2935", None, "Magewell USB Capture (HDMI/SDI)", None),
    (
        "1edb",
        None,
        "Blackmagic Design capture device (UltraStudio, Web Presenter)",
        None,
    ),
    ("2040", None, "Hauppauge capture/TV device", None),
    ("2b77", None, "Epiphan AV.io capture device", None),
];

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// Every table row the identity matches, virtual drivers first (empty: no known instrument).
pub fn classify(id: &CameraIdentity) -> Vec<Instrument> {
    let mut out = Vec::new();
    let driver = lower(&id.v4l2.driver);
    for (name, what) in VIRTUAL_DRIVERS {
        if driver == *name {
            out.push(Instrument {
                class: Class::VirtualDriver,
                rule: format!("driver:{name}"),
                what: (*what).into(),
            });
        }
    }
    let usb_names: Vec<String> = id
        .usb
        .iter()
        .flat_map(|u| [u.product.as_deref(), u.manufacturer.as_deref()])
        .flatten()
        .map(lower)
        .collect();
    let mut names = vec![lower(&id.v4l2.card), lower(&id.v4l2.bus_info)];
    names.extend(usb_names.iter().cloned());
    if let Some(u) = &id.usb {
        let (vid, pid) = (lower(&u.id_vendor), lower(&u.id_product));
        let product = lower(u.product.as_deref().unwrap_or_default());
        let card = lower(&id.v4l2.card);
        for (v, p, what, exception) in USB_RULES {
            let hit = vid == *v && p.is_none_or(|p| pid == p);
            let excepted = exception.is_some_and(|x| product.contains(x) || card.contains(x));
            if hit && !excepted {
                out.push(Instrument {
                    class: Class::CaptureDevice,
                    rule: match p {
                        Some(p) => format!("usb:{v}:{p}"),
                        None => format!("usb:{v}:*"),
                    },
                    what: (*what).into(),
                });
            }
        }
    }
    for (needle, class, what) in NAME_RULES {
        if names.iter().any(|n| n.contains(needle)) {
            // One name rule per class is enough ("capture" also matches "game capture").
            if out
                .iter()
                .any(|i| i.class == *class && i.rule.starts_with("name:"))
            {
                continue;
            }
            out.push(Instrument {
                class: *class,
                rule: format!("name:{needle}"),
                what: (*what).into(),
            });
        }
    }
    out
}

/// One line for logs and alert details: `vivid, the kernel's … [driver:vivid]; …`.
pub fn describe(found: &[Instrument]) -> String {
    found
        .iter()
        .map(|i| format!("{} [{}]", i.what, i.rule))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::super::fingerprint::fixtures::*;
    use super::*;
    use crate::frame::identity::{UsbIdentity, V4l2Identity};

    fn rules(id: &CameraIdentity) -> Vec<String> {
        classify(id).into_iter().map(|i| i.rule).collect()
    }

    #[test]
    fn a_plain_webcam_is_not_an_instrument() {
        assert!(classify(&uvc_webcam("X")).is_empty());
    }

    #[test]
    fn virtual_drivers() {
        assert_eq!(
            rules(&vivid()),
            vec![
                "driver:vivid".to_string(),
                "name:platform:vivid".to_string()
            ]
        );
        let lb = CameraIdentity {
            v4l2: V4l2Identity {
                driver: "v4l2 loopback".into(),
                card: "Dummy video device (0x0000)".into(),
                bus_info: "platform:v4l2loopback-000".into(),
                capabilities: 0x0520_0003,
                formats: vec!["YUYV".into()],
            },
            usb: None,
        };
        let r = rules(&lb);
        assert_eq!(r[0], "driver:v4l2 loopback");
        assert!(r.contains(&"name:dummy video device".to_string()), "{r:?}");
        // OBS names its loopback card; a renamed driver is still caught by the card name.
        let obs = CameraIdentity {
            v4l2: V4l2Identity {
                driver: "renamed".into(),
                card: "OBS Virtual Camera".into(),
                bus_info: "platform:x".into(),
                ..lb.v4l2.clone()
            },
            usb: None,
        };
        assert_eq!(rules(&obs), vec!["name:virtual".to_string()]);
        let ak = CameraIdentity {
            v4l2: V4l2Identity {
                driver: "AKVCAM".into(),
                card: "AkVCam Video Device".into(),
                bus_info: "platform:akvcam-0".into(),
                ..lb.v4l2
            },
            usb: None,
        };
        assert_eq!(rules(&ak)[0], "driver:akvcam");
    }

    #[test]
    fn capture_chips_by_vid_pid() {
        let r = rules(&ms2109_dongle());
        assert_eq!(r, vec!["usb:534d:2109".to_string()]);
        let mut ms2130 = ms2109_dongle();
        let u = ms2130.usb.as_mut().unwrap();
        u.id_vendor = "345F".into();
        u.id_product = "2130".into();
        assert_eq!(rules(&ms2130), vec!["usb:345f:2130".to_string()]);
        // Vendor-wide rule with a webcam exception.
        let elgato = |product: &str| CameraIdentity {
            v4l2: V4l2Identity {
                card: product.into(),
                ..uvc_webcam("1").v4l2
            },
            usb: Some(UsbIdentity {
                id_vendor: "0fd9".into(),
                id_product: "0066".into(),
                product: Some(product.into()),
                ..uvc_webcam("1").usb.unwrap()
            }),
        };
        assert_eq!(
            rules(&elgato("Cam Link 4K")),
            vec!["usb:0fd9:*".to_string(), "name:cam link".to_string()]
        );
        assert!(rules(&elgato("Elgato Facecam")).is_empty());
    }

    #[test]
    fn capture_names_on_unknown_usb_ids() {
        let mut id = uvc_webcam("1");
        id.v4l2.card = "UGREEN HDMI Capture".into();
        let u = id.usb.as_mut().unwrap();
        u.id_vendor = "1234".into();
        u.product = Some("UGREEN HDMI Capture".into());
        // "hdmi" and "capture" are both capture-device name rules: reported once.
        assert_eq!(rules(&id), vec!["name:hdmi".to_string()]);
        let d = describe(&classify(&id));
        assert!(d.contains("[name:hdmi]"), "{d}");
    }
}
