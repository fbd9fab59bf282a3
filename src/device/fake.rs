//! A fake [`Pins`] for tests: records every write, lets the test set the tamper input.

use std::sync::{Arc, Mutex, MutexGuard};

use super::gpio::Pins;

/// What the fake pins have seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeState {
    pub led: bool,
    pub relay: bool,
    /// `None`: no tamper input wired.
    pub tamper: Option<bool>,
    pub led_writes: Vec<bool>,
    pub relay_writes: Vec<bool>,
}

/// Cloneable handle: give one clone to the device, keep one to inspect and drive.
#[derive(Debug, Clone, Default)]
pub struct FakePins(Arc<Mutex<FakeState>>);

impl FakePins {
    /// With a tamper input reading `tamper` (or none).
    pub fn new(tamper: Option<bool>) -> Self {
        let f = Self::default();
        f.state().tamper = tamper;
        f
    }

    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        // Tests may panic while holding it on purpose; the state is still readable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_tamper(&self, tampered: bool) {
        self.state().tamper = Some(tampered);
    }
}

impl Pins for FakePins {
    fn set_led(&mut self, on: bool) {
        let mut s = self.state();
        s.led = on;
        s.led_writes.push(on);
    }
    fn set_relay(&mut self, on: bool) {
        let mut s = self.state();
        s.relay = on;
        s.relay_writes.push(on);
    }
    fn read_tamper(&mut self) -> Option<bool> {
        self.state().tamper
    }
}
