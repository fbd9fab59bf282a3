//! The device side: systemd notifications ([`notify`]) and GPIO (status LED, tamper switch,
//! relay) through `rppal` ([`gpio`]).
//!
//! The seam is [`Actuator`] (the pipeline tells it about verdicts) and below it [`gpio::Pins`]
//! (the hardware; [`fake::FakePins`] in tests). [`NoDevice`] is the "GPIO disabled" path, taken
//! when `[device] gpio = false` or when the GPIO cannot be opened (x86, CI, missing
//! permissions): the daemon logs why and runs on, never crashes.
//!
//! Pure parts: LED state and blink patterns ([`led`]), tamper debouncing ([`tamper`]),
//! watchdog pacing ([`notify`]).

pub mod fake;
pub mod gpio;
pub mod illuminator;
pub mod led;
pub mod notify;
pub mod tamper;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::capture::CaptureEvent;
use crate::decide::Verdict;
use crate::publish::EventSink;

use notify::SystemdNotifier;
use tamper::TamperFlag;

/// Errors from the device layer.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("GPIO: {0}")]
    Gpio(String),
}

/// The device seam: told what the pipeline does; it only observes (the GPIO LED and relay, the
/// systemd notifier). Calls come from the capture and analysis threads and from the daemon's
/// runtime, one at a time.
pub trait Actuator: Send {
    /// A frame went through the analyser (and `decide`), with this verdict.
    fn on_verdict(&mut self, verdict: Verdict);
    /// The detector failed on a frame (the LED shows "fault" for a while).
    fn on_analysis_error(&mut self) {}
    /// The stages are built and running; no frame analysed yet.
    fn on_started(&mut self) {}
    /// The first frame went through the analyser (camera open, models loaded): ready. Called
    /// once, before that frame's [`Actuator::on_verdict`].
    fn on_ready(&mut self) {}
    /// The capture stage reported an event (camera lost or restored, file skipped, …).
    fn on_camera_event(&mut self, event: &CaptureEvent) {
        let _ = event;
    }
    /// Shutdown began: the pipeline is draining.
    fn on_stopping(&mut self) {}
}

/// Several actuators told the same things, in order.
pub struct Actuators(pub Vec<Box<dyn Actuator>>);

impl Actuator for Actuators {
    fn on_verdict(&mut self, verdict: Verdict) {
        self.0.iter_mut().for_each(|a| a.on_verdict(verdict));
    }
    fn on_analysis_error(&mut self) {
        self.0.iter_mut().for_each(|a| a.on_analysis_error());
    }
    fn on_started(&mut self) {
        self.0.iter_mut().for_each(|a| a.on_started());
    }
    fn on_ready(&mut self) {
        self.0.iter_mut().for_each(|a| a.on_ready());
    }
    fn on_camera_event(&mut self, event: &CaptureEvent) {
        self.0.iter_mut().for_each(|a| a.on_camera_event(event));
    }
    fn on_stopping(&mut self) {
        self.0.iter_mut().for_each(|a| a.on_stopping());
    }
}

/// No GPIO on this host.
#[derive(Debug, Default)]
pub struct NoDevice;

impl Actuator for NoDevice {
    fn on_verdict(&mut self, _verdict: Verdict) {}
}

/// Input bias for the tamper switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Pull {
    #[default]
    Up,
    Down,
    None,
}

/// `[device]` section of the config file. Pins are BCM GPIO numbers.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceConfig {
    /// Enable GPIO through rppal.
    pub gpio: bool,
    /// Status LED output.
    pub led_pin: Option<u8>,
    pub led_active_high: bool,
    /// Tamper switch input. Default wiring: a normally-closed switch to ground with the internal
    /// pull-up, so an opened enclosure or a cut wire reads high = tampered.
    pub tamper_pin: Option<u8>,
    pub tamper_active_high: bool,
    pub tamper_pull: Pull,
    /// The input must hold a new level this long before it counts.
    #[serde(with = "humantime_serde")]
    pub tamper_debounce: Duration,
    /// Once tampered, stay tampered until the service restarts.
    pub tamper_latch: bool,
    /// Stop sealing frames while tampered (analysis and alerts go on).
    pub tamper_stops_sealing: bool,
    /// "Capture accepted" relay output: energised while an authentic face is in view.
    pub relay_pin: Option<u8>,
    pub relay_active_high: bool,
    /// No analysed frame for this long: the LED shows "no camera".
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// A detector error shows "fault" on the LED for this long.
    #[serde(with = "humantime_serde")]
    pub fault_hold: Duration,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            gpio: false,
            led_pin: None,
            led_active_high: true,
            tamper_pin: None,
            tamper_active_high: true,
            tamper_pull: Pull::Up,
            tamper_debounce: Duration::from_millis(50),
            tamper_latch: true,
            tamper_stops_sealing: true,
            relay_pin: None,
            relay_active_high: true,
            stale_after: Duration::from_secs(3),
            fault_hold: Duration::from_secs(2),
        }
    }
}

/// Highest BCM GPIO number on any Raspberry Pi.
pub const MAX_PIN: u8 = 53;

impl DeviceConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let pins = [
            ("device.led_pin", self.led_pin),
            ("device.tamper_pin", self.tamper_pin),
            ("device.relay_pin", self.relay_pin),
        ];
        for (i, (key, pin)) in pins.iter().enumerate() {
            let Some(p) = pin else { continue };
            if *p > MAX_PIN {
                return Err((key, format!("GPIO {p} does not exist (0..={MAX_PIN})")));
            }
            for (other, q) in &pins[..i] {
                if *q == Some(*p) {
                    return Err((key, format!("GPIO {p} is already used by `{other}`")));
                }
            }
        }
        if self.tamper_debounce > Duration::from_secs(10) {
            return Err((
                "device.tamper_debounce",
                "at most 10s (a longer debounce hides tamper)".into(),
            ));
        }
        if self.stale_after.is_zero() {
            return Err(("device.stale_after", "must be more than 0".into()));
        }
        Ok(())
    }
}

/// What the device layer gives the daemon to plug in.
pub struct Device {
    /// The GPIO actuator (LED, relay, tamper input), or [`NoDevice`].
    pub actuator: Box<dyn Actuator>,
    /// systemd notifications (`READY=1`, `WATCHDOG=1`, `STOPPING=1`, `STATUS=`); a no-op without
    /// `NOTIFY_SOCKET`.
    pub notifier: SystemdNotifier,
    /// Set while the enclosure is open, when `tamper_stops_sealing` and a tamper pin are
    /// configured: the daemon stops sealing while it is set.
    pub tamper: Option<TamperFlag>,
}

impl Device {
    /// The actuator and the notifier as one actuator (the notifier last).
    pub fn actuators(self) -> (Actuators, Option<TamperFlag>) {
        (
            Actuators(vec![self.actuator, Box::new(self.notifier)]),
            self.tamper,
        )
    }
}

/// Build the device layer for `cfg`: with `[device] gpio = true` and working GPIO, a
/// [`gpio::GpioActuator`] (tamper alerts go to `sink`); otherwise logs "GPIO disabled" and uses
/// [`NoDevice`]. The systemd notifier comes from the environment.
pub fn build(cfg: &DeviceConfig, sink: Arc<dyn EventSink>) -> Device {
    if !cfg.gpio {
        tracing::info!("GPIO disabled ([device] gpio = false)");
        return without_gpio();
    }
    match gpio::open_pins(cfg) {
        Ok(pins) => build_with_pins(cfg, sink, pins),
        Err(e) => {
            tracing::error!(
                error = %e,
                "GPIO disabled: cannot open the GPIO (no LED, relay or tamper switch)"
            );
            without_gpio()
        }
    }
}

fn without_gpio() -> Device {
    Device {
        actuator: Box::new(NoDevice),
        notifier: SystemdNotifier::from_env(),
        tamper: None,
    }
}

/// [`build`] with given pins (tests use [`fake::FakePins`]).
pub fn build_with_pins<P: gpio::Pins + 'static>(
    cfg: &DeviceConfig,
    sink: Arc<dyn EventSink>,
    pins: P,
) -> Device {
    let flag = TamperFlag::default();
    match gpio::GpioActuator::start(
        pins,
        gpio::LogicConfig::from_config(cfg),
        flag.clone(),
        sink,
    ) {
        Ok(act) => {
            tracing::info!(
                led = ?cfg.led_pin,
                tamper = ?cfg.tamper_pin,
                relay = ?cfg.relay_pin,
                "GPIO enabled"
            );
            Device {
                actuator: Box::new(act),
                notifier: SystemdNotifier::from_env(),
                tamper: (cfg.tamper_stops_sealing && cfg.tamper_pin.is_some()).then_some(flag),
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "GPIO disabled");
            without_gpio()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_disabled() {
        let c = DeviceConfig::default();
        assert!(!c.gpio);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn rejects_bad_pins() {
        let c = DeviceConfig {
            led_pin: Some(54),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "device.led_pin");
        let c = DeviceConfig {
            led_pin: Some(17),
            relay_pin: Some(17),
            ..Default::default()
        };
        let (key, why) = c.validate().unwrap_err();
        assert_eq!(key, "device.relay_pin");
        assert!(why.contains("device.led_pin"), "{why}");
        let c = DeviceConfig {
            tamper_debounce: Duration::from_secs(11),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "device.tamper_debounce");
    }

    #[test]
    fn parses_a_device_section() {
        let c: DeviceConfig = toml::from_str(
            "gpio = true\nled_pin = 17\ntamper_pin = 27\ntamper_pull = \"down\"\ntamper_debounce = \"80ms\"\nrelay_pin = 22\n",
        )
        .expect("parse");
        assert_eq!(c.led_pin, Some(17));
        assert_eq!(c.tamper_pull, Pull::Down);
        assert_eq!(c.tamper_debounce, Duration::from_millis(80));
        assert!(c.tamper_latch, "defaults fill the rest");
        assert!(toml::from_str::<DeviceConfig>("led = 1").is_err());
    }
}
