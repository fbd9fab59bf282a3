//! `veriframe probe`: the V4L2 devices, their formats, frame sizes and intervals.

#[cfg(target_os = "linux")]
use crate::capture::v4l2;
use crate::capture::CaptureError;
use crate::Outcome;

#[cfg(target_os = "linux")]
/// `veriframe probe`.
pub fn probe(json: bool) -> Result<Outcome, CaptureError> {
    let reports: Vec<v4l2::DeviceReport> = v4l2::device_paths()
        .iter()
        .map(|p| v4l2::probe_device(p))
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
