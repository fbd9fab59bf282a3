//! GPIO: the pin seam ([`Pins`]), the device logic driven by time ticks ([`DeviceLogic`]), the
//! threaded [`GpioActuator`] the pipeline talks to, and the `rppal` implementation.
//!
//! Safety: the pins are only ever owned through [`SafeOutputs`], whose `Drop` returns every output
//! to its safe state (LED off, relay de-energised). It runs on shutdown and during panic
//! unwinding, wherever the panic happens (the analysis thread owning the actuator, or the tick
//! thread itself). A `SIGKILL` or `panic = "abort"` skips it; the next start re-initialises the
//! pins low.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::alert::AlertRequest;
use crate::decide::Verdict;
use crate::publish::{Event, EventSink};

use super::led::{led_level, led_state, relay_level, DeviceStatus, LedState, LedTiming};
use super::tamper::{debounce, Debounce, TamperFlag};
use super::{Actuator, DeviceConfig, DeviceError};

/// The hardware seam: logical levels (polarity is the implementation's business).
pub trait Pins: Send {
    /// Light the status LED (no-op without an LED pin).
    fn set_led(&mut self, on: bool);
    /// Energise the relay (no-op without a relay pin).
    fn set_relay(&mut self, on: bool);
    /// `Some(true)` when the tamper input reads "tampered"; `None` without a tamper input.
    fn read_tamper(&mut self) -> Option<bool>;
}

impl Pins for Box<dyn Pins> {
    fn set_led(&mut self, on: bool) {
        (**self).set_led(on)
    }
    fn set_relay(&mut self, on: bool) {
        (**self).set_relay(on)
    }
    fn read_tamper(&mut self) -> Option<bool> {
        (**self).read_tamper()
    }
}

/// Owns the pins; drives every output to its safe state when dropped.
pub struct SafeOutputs<P: Pins> {
    pins: P,
}

impl<P: Pins> SafeOutputs<P> {
    pub fn new(pins: P) -> Self {
        Self { pins }
    }

    /// Drive every output to its safe state now.
    pub fn make_safe(&mut self) {
        self.pins.set_led(false);
        self.pins.set_relay(false);
    }

    pub fn pins(&mut self) -> &mut P {
        &mut self.pins
    }
}

impl<P: Pins> Drop for SafeOutputs<P> {
    fn drop(&mut self) {
        self.make_safe();
    }
}

/// Timing and behaviour knobs, from [`DeviceConfig`].
#[derive(Debug, Clone, Copy)]
pub struct LogicConfig {
    pub led: LedTiming,
    pub debounce: Duration,
    /// Tamper stays set until restart once seen.
    pub latch: bool,
    /// For alert details.
    pub tamper_pin: Option<u8>,
}

impl LogicConfig {
    pub fn from_config(cfg: &DeviceConfig) -> Self {
        Self {
            led: LedTiming {
                stale_after: cfg.stale_after,
                fault_hold: cfg.fault_hold,
            },
            debounce: cfg.tamper_debounce,
            latch: cfg.tamper_latch,
            tamper_pin: cfg.tamper_pin,
        }
    }
}

/// The device's logic, with time passed in (the device's monotonic clock since start):
/// verdicts and errors update its status; [`DeviceLogic::tick`] samples the tamper input,
/// raises the alert, and writes the LED and relay.
pub struct DeviceLogic<P: Pins> {
    out: SafeOutputs<P>,
    cfg: LogicConfig,
    status: DeviceStatus,
    debounce: Debounce,
    flag: TamperFlag,
    sink: Arc<dyn EventSink>,
    written: Option<(bool, bool)>,
    alerts: u64,
}

impl<P: Pins> DeviceLogic<P> {
    pub fn new(pins: P, cfg: LogicConfig, flag: TamperFlag, sink: Arc<dyn EventSink>) -> Self {
        let mut out = SafeOutputs::new(pins);
        out.make_safe();
        Self {
            out,
            cfg,
            status: DeviceStatus::default(),
            debounce: Debounce::new(false),
            flag,
            sink,
            written: Some((false, false)),
            alerts: 0,
        }
    }

    pub fn on_verdict(&mut self, verdict: Verdict, now: Duration) {
        self.status.last_frame = Some((now, verdict));
    }

    pub fn on_analysis_error(&mut self, now: Duration) {
        self.status.last_error = Some(now);
    }

    pub fn status(&self) -> DeviceStatus {
        self.status
    }

    /// Tamper alerts raised so far.
    pub fn tamper_alerts(&self) -> u64 {
        self.alerts
    }

    /// Sample inputs and drive outputs for time `now`. Returns the LED state shown.
    pub fn tick(&mut self, now: Duration) -> LedState {
        if let Some(raw) = self.out.pins().read_tamper() {
            let (d, change) = debounce(self.debounce, raw, now, self.cfg.debounce);
            self.debounce = d;
            match change {
                Some(true) => self.raise_tamper(),
                Some(false) if !self.cfg.latch => {
                    tracing::warn!("tamper input restored");
                    self.status.tampered = false;
                    self.flag.set(false);
                }
                Some(false) => {
                    tracing::warn!("tamper input restored; tamper stays latched until restart")
                }
                None => {}
            }
        }
        let state = led_state(&self.status, now, self.cfg.led);
        let levels = (led_level(state, now), relay_level(state));
        if self.written != Some(levels) {
            self.out.pins().set_led(levels.0);
            self.out.pins().set_relay(levels.1);
            self.written = Some(levels);
        }
        state
    }

    fn raise_tamper(&mut self) {
        self.status.tampered = true;
        self.flag.set(true);
        self.alerts += 1;
        let alert = AlertRequest::tamper(self.cfg.tamper_pin);
        tracing::error!(detail = %alert.detail, "tamper");
        self.sink.send(Event::Alert(alert));
    }

    /// Drive every output to its safe state now (also done on drop).
    pub fn make_safe(&mut self) {
        self.out.make_safe();
        self.written = Some((false, false));
    }
}

/// How often the tick thread samples the tamper input and updates the LED.
pub const TICK: Duration = Duration::from_millis(10);

struct Shared<P: Pins> {
    logic: Mutex<DeviceLogic<P>>,
    stop: AtomicBool,
    epoch: Instant,
}

impl<P: Pins> Shared<P> {
    fn lock(&self) -> MutexGuard<'_, DeviceLogic<P>> {
        // A poisoned lock means the other side panicked; the logic is still usable (and we
        // need it to reach the safe state).
        self.logic.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Makes outputs safe when the tick thread exits, normally or by unwinding.
struct TickExit<P: Pins + 'static>(Arc<Shared<P>>);

impl<P: Pins + 'static> Drop for TickExit<P> {
    fn drop(&mut self) {
        self.0.lock().make_safe();
    }
}

/// The [`Actuator`] for real (or fake) pins: a tick thread blinks the LED and watches the tamper
/// input even when the frame path stalls. Dropping it stops the thread and makes outputs safe.
pub struct GpioActuator<P: Pins + 'static> {
    shared: Arc<Shared<P>>,
    thread: Option<JoinHandle<()>>,
}

impl<P: Pins + 'static> GpioActuator<P> {
    pub fn start(
        pins: P,
        cfg: LogicConfig,
        flag: TamperFlag,
        sink: Arc<dyn EventSink>,
    ) -> Result<Self, DeviceError> {
        let shared = Arc::new(Shared {
            logic: Mutex::new(DeviceLogic::new(pins, cfg, flag, sink)),
            stop: AtomicBool::new(false),
            epoch: Instant::now(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("vf-gpio".into())
            .spawn(move || {
                let exit = TickExit(s);
                let s = &exit.0;
                while !s.stop.load(Ordering::SeqCst) {
                    s.lock().tick(s.epoch.elapsed());
                    std::thread::park_timeout(TICK);
                }
            })
            .map_err(|e| DeviceError::Gpio(format!("cannot start GPIO thread: {e}")))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// The current device status (for tests and diagnostics).
    pub fn status(&self) -> DeviceStatus {
        self.shared.lock().status()
    }

    fn now(&self) -> Duration {
        self.shared.epoch.elapsed()
    }
}

impl<P: Pins + 'static> Actuator for GpioActuator<P> {
    fn on_verdict(&mut self, verdict: Verdict) {
        let now = self.now();
        self.shared.lock().on_verdict(verdict, now);
    }

    fn on_analysis_error(&mut self) {
        let now = self.now();
        self.shared.lock().on_analysis_error(now);
    }
}

impl<P: Pins + 'static> Drop for GpioActuator<P> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        self.shared.lock().make_safe();
    }
}

/// Real pins through `rppal` (BCM numbering).
#[cfg(target_os = "linux")]
pub struct RppalPins {
    led: Option<rppal::gpio::OutputPin>,
    relay: Option<rppal::gpio::OutputPin>,
    tamper: Option<rppal::gpio::InputPin>,
    led_active_high: bool,
    relay_active_high: bool,
    tamper_active_high: bool,
}

#[cfg(target_os = "linux")]
impl RppalPins {
    /// Open the configured pins; outputs start in their safe (off) state.
    pub fn open(cfg: &DeviceConfig) -> Result<Self, DeviceError> {
        use rppal::gpio::Gpio;
        let gpio = Gpio::new().map_err(|e| DeviceError::Gpio(e.to_string()))?;
        let output = |pin: Option<u8>, active_high: bool, what: &str| {
            pin.map(|p| {
                gpio.get(p)
                    .map(|pin| {
                        let mut o = if active_high {
                            pin.into_output_low()
                        } else {
                            pin.into_output_high()
                        };
                        o.set_reset_on_drop(true);
                        o
                    })
                    .map_err(|e| DeviceError::Gpio(format!("{what} pin {p}: {e}")))
            })
            .transpose()
        };
        let led = output(cfg.led_pin, cfg.led_active_high, "LED")?;
        let relay = output(cfg.relay_pin, cfg.relay_active_high, "relay")?;
        let tamper = cfg
            .tamper_pin
            .map(|p| {
                gpio.get(p)
                    .map(|pin| match cfg.tamper_pull {
                        super::Pull::Up => pin.into_input_pullup(),
                        super::Pull::Down => pin.into_input_pulldown(),
                        super::Pull::None => pin.into_input(),
                    })
                    .map_err(|e| DeviceError::Gpio(format!("tamper pin {p}: {e}")))
            })
            .transpose()?;
        Ok(Self {
            led,
            relay,
            tamper,
            led_active_high: cfg.led_active_high,
            relay_active_high: cfg.relay_active_high,
            tamper_active_high: cfg.tamper_active_high,
        })
    }
}

#[cfg(target_os = "linux")]
fn write(pin: &mut Option<rppal::gpio::OutputPin>, on: bool, active_high: bool) {
    if let Some(p) = pin {
        if on == active_high {
            p.set_high()
        } else {
            p.set_low()
        }
    }
}

#[cfg(target_os = "linux")]
impl Pins for RppalPins {
    fn set_led(&mut self, on: bool) {
        write(&mut self.led, on, self.led_active_high)
    }
    fn set_relay(&mut self, on: bool) {
        write(&mut self.relay, on, self.relay_active_high)
    }
    fn read_tamper(&mut self) -> Option<bool> {
        self.tamper
            .as_ref()
            .map(|p| p.is_high() == self.tamper_active_high)
    }
}

/// Open the real pins (an error on hosts without a Raspberry Pi GPIO).
pub fn open_pins(cfg: &DeviceConfig) -> Result<Box<dyn Pins>, DeviceError> {
    #[cfg(target_os = "linux")]
    {
        Ok(Box::new(RppalPins::open(cfg)?))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cfg;
        Err(DeviceError::Gpio("GPIO needs Linux".into()))
    }
}
