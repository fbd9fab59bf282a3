//! The light challenge's GPIO illuminator: a LED ring behind a logic-level MOSFET on a BCM pin
//! (wiring: docs/challenge.md). The pin is driven to "off" when opened and again when dropped
//! (shutdown, panic unwinding), so the ring never stays lit.

use crate::challenge::{ChallengeError, Illuminator};

use super::DeviceError;

/// A GPIO output switching the booth light.
pub struct GpioIlluminator {
    pin_no: u8,
    active_high: bool,
    #[cfg(target_os = "linux")]
    pin: rppal::gpio::OutputPin,
}

impl GpioIlluminator {
    /// Open BCM pin `pin` as an output, off.
    pub fn open(pin: u8, active_high: bool) -> Result<Self, DeviceError> {
        #[cfg(target_os = "linux")]
        {
            let gpio = rppal::gpio::Gpio::new().map_err(|e| DeviceError::Gpio(e.to_string()))?;
            let p = gpio
                .get(pin)
                .map_err(|e| DeviceError::Gpio(format!("illuminator pin {pin}: {e}")))?;
            let out = if active_high {
                p.into_output_low()
            } else {
                p.into_output_high()
            };
            Ok(Self {
                pin_no: pin,
                active_high,
                pin: out,
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = active_high;
            Err(DeviceError::Gpio(format!(
                "illuminator pin {pin}: GPIO needs Linux"
            )))
        }
    }
}

impl Illuminator for GpioIlluminator {
    fn set(&mut self, on: bool) -> Result<(), ChallengeError> {
        #[cfg(target_os = "linux")]
        {
            if on == self.active_high {
                self.pin.set_high()
            } else {
                self.pin.set_low()
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = on;
        Ok(())
    }

    fn name(&self) -> String {
        format!("gpio:{}", self.pin_no)
    }
}

impl Drop for GpioIlluminator {
    fn drop(&mut self) {
        let _ = self.set(false);
    }
}
