//! `veriframe probe`: the V4L2 devices, their formats, frame sizes and intervals.

use super::Outcome;
#[cfg(target_os = "linux")]
use veriframe::capture::v4l2;
use veriframe::capture::CaptureError;

#[cfg(target_os = "linux")]
/// `veriframe probe`.
pub fn probe(json: bool) -> Result<Outcome, CaptureError> {
    let reports: Vec<v4l2::DeviceReport> = v4l2::device_paths()
        .iter()
        .map(|p| with_fingerprint(v4l2::probe_device(p)))
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&reports)
                .map_err(|e| CaptureError::Convert(e.to_string()))?
        );
    } else {
        print!("{}", v4l2::render(&reports));
    }
    Ok(Outcome::Ok)
}

/// `veriframe probe` where there is no V4L2.
#[cfg(not(target_os = "linux"))]
pub fn probe(_json: bool) -> Result<Outcome, CaptureError> {
    Err(CaptureError::NoV4l2)
}

/// Add the camera fingerprint and the injection-instrument matches to a probed device.
#[cfg(target_os = "linux")]
fn with_fingerprint(mut rep: v4l2::DeviceReport) -> v4l2::DeviceReport {
    use veriframe::camera::fingerprint::{CameraInfoSource as _, Fingerprint, SystemInfo};
    if !rep.capture || rep.error.is_some() {
        return rep;
    }
    match SystemInfo::default().read(std::path::Path::new(&rep.path)) {
        Ok(id) => {
            rep.instruments = veriframe::camera::instruments::classify(&id)
                .iter()
                .filter_map(|i| serde_json::to_value(i).ok())
                .collect();
            rep.fingerprint = serde_json::to_value(Fingerprint::of(&id)).ok();
        }
        Err(e) => rep.error = Some(e.to_string()),
    }
    rep
}
