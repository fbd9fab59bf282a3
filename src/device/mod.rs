//! The device side: systemd notifications and GPIO (status LED, tamper switch, relay).
//!
//! The seam is [`Actuator`]; [`NoDevice`] is the "GPIO disabled" path.

use serde::{Deserialize, Serialize};

use crate::decide::Verdict;

/// Errors from the device layer.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("GPIO: {0}")]
    Gpio(String),
}

/// The device seam: told about each verdict; reports tamper.
pub trait Actuator: Send {
    fn on_verdict(&mut self, verdict: Verdict);
}

/// No GPIO on this host.
#[derive(Debug, Default)]
pub struct NoDevice;

impl Actuator for NoDevice {
    fn on_verdict(&mut self, _verdict: Verdict) {}
}

/// `[device]` section of the config file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceConfig {
    /// Enable GPIO through rppal.
    pub gpio: bool,
}

impl DeviceConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        Ok(())
    }
}
