//! GPIO logic through the fake pins: tamper alerts and the sealing gate, LED/relay driving, and
//! the drop guard on shutdown and on panic.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use veriframe::alert::AlertRequest;
use veriframe::config::Config;
use veriframe::daemon::{self, Components, Limits};
use veriframe::decide::Verdict;
use veriframe::device::fake::FakePins;
use veriframe::device::gpio::{DeviceLogic, GpioActuator, LogicConfig, Pins};
use veriframe::device::led::{led_level, LedState, LedTiming};
use veriframe::device::tamper::TamperFlag;
use veriframe::device::{self, Actuator, DeviceConfig};
use veriframe::publish::{Event, EventSink};
use veriframe::seal::{SealError, SealInput, Sealed, Sealer};
use veriframe::shutdown::Shutdown;

#[derive(Default)]
struct Capture(Mutex<Vec<Event>>);

impl EventSink for Capture {
    fn send(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }
}

impl Capture {
    fn alerts(&self) -> Vec<AlertRequest> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Alert(a) => Some(a.clone()),
                _ => None,
            })
            .collect()
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn logic_cfg(latch: bool) -> LogicConfig {
    LogicConfig {
        led: LedTiming {
            stale_after: Duration::from_secs(3),
            fault_hold: Duration::from_secs(2),
        },
        debounce: ms(50),
        latch,
        tamper_pin: Some(27),
    }
}

/// Poll until `cond` holds (the tick thread runs on its own clock); never asserts a timing.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < until, "never happened: {what}");
        std::thread::sleep(ms(5));
    }
}

#[test]
fn tamper_is_debounced_alerted_latched_and_sets_the_flag() {
    let fake = FakePins::new(Some(false));
    let sink = Arc::new(Capture::default());
    let flag = TamperFlag::default();
    let mut logic = DeviceLogic::new(fake.clone(), logic_cfg(true), flag.clone(), sink.clone());
    logic.on_verdict(Verdict::Authentic, ms(0));
    assert_eq!(logic.tick(ms(10)), LedState::Authentic);
    assert!(fake.state().led && fake.state().relay);

    // A 30 ms bounce: ignored.
    fake.set_tamper(true);
    logic.tick(ms(20));
    logic.tick(ms(40));
    fake.set_tamper(false);
    logic.tick(ms(50));
    assert!(!flag.is_set());
    assert!(sink.alerts().is_empty());

    // Held open: one alert after the debounce time, flag set, relay dropped, tamper pattern.
    fake.set_tamper(true);
    for t in (100..=200).step_by(10) {
        logic.on_verdict(Verdict::Authentic, ms(t));
        logic.tick(ms(t));
    }
    assert!(flag.is_set());
    let alerts = sink.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, "tamper");
    assert_eq!(alerts[0].severity, "critical");
    assert!(alerts[0].detail.contains("GPIO 27"), "{}", alerts[0].detail);
    assert_eq!(logic.tick(ms(210)), LedState::Tamper);
    assert!(!fake.state().relay, "relay off while tampered");

    // Closed again: latched, no second alert.
    fake.set_tamper(false);
    for t in (300..=500).step_by(10) {
        logic.tick(ms(t));
    }
    assert!(flag.is_set());
    assert_eq!(logic.tick(ms(510)), LedState::Tamper);
    assert_eq!(sink.alerts().len(), 1);
}

#[test]
fn unlatched_tamper_clears() {
    let fake = FakePins::new(Some(true));
    let sink = Arc::new(Capture::default());
    let flag = TamperFlag::default();
    let mut logic = DeviceLogic::new(fake.clone(), logic_cfg(false), flag.clone(), sink.clone());
    for t in (0..=100).step_by(10) {
        logic.tick(ms(t));
    }
    assert!(flag.is_set(), "tampered at start-up is reported");
    fake.set_tamper(false);
    for t in (110..=300).step_by(10) {
        logic.tick(ms(t));
    }
    assert!(!flag.is_set());
    assert_eq!(sink.alerts().len(), 1);
}

#[test]
fn led_follows_state_patterns_and_relay_only_when_authentic() {
    let fake = FakePins::new(None);
    let sink = Arc::new(Capture::default());
    let mut logic = DeviceLogic::new(fake.clone(), logic_cfg(true), TamperFlag::default(), sink);
    // Attack: the LED written equals the attack pattern at every tick; relay stays off.
    for t in (1000..2000).step_by(10) {
        logic.on_verdict(Verdict::Attack, ms(t));
        assert_eq!(logic.tick(ms(t)), LedState::Attack);
        assert_eq!(
            fake.state().led,
            led_level(LedState::Attack, ms(t)),
            "t={t}"
        );
        assert!(!fake.state().relay);
    }
    // Detector errors: fault.
    logic.on_verdict(Verdict::Unknown, ms(2000));
    logic.on_analysis_error(ms(2000));
    assert_eq!(logic.tick(ms(2010)), LedState::Fault);
    // Frames stop: no camera.
    assert_eq!(logic.tick(ms(6000)), LedState::NoCamera);
    assert_eq!(
        fake.state().led,
        led_level(LedState::NoCamera, ms(6000)),
        "LED shows the no-camera pattern"
    );
    // Outputs are written only on change, not every tick.
    let writes = fake.state().led_writes.len();
    assert!(writes < 100, "{writes} LED writes for ~100 ticks");
}

#[test]
fn drop_returns_outputs_to_safe_state() {
    let fake = FakePins::new(None);
    let mut logic = DeviceLogic::new(
        fake.clone(),
        logic_cfg(true),
        TamperFlag::default(),
        Arc::new(Capture::default()),
    );
    logic.on_verdict(Verdict::Authentic, ms(0));
    logic.tick(ms(1));
    assert!(fake.state().led && fake.state().relay);
    drop(logic);
    assert!(!fake.state().led && !fake.state().relay);
}

#[test]
fn panic_inside_catch_unwind_leaves_led_and_relay_off() {
    let fake = FakePins::new(Some(false));
    let outside = fake.clone();
    let inside = fake.clone();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut act = GpioActuator::start(
            fake,
            logic_cfg(true),
            TamperFlag::default(),
            Arc::new(Capture::default()),
        )
        .expect("start");
        eventually("relay energised", || {
            act.on_verdict(Verdict::Authentic);
            inside.state().relay && inside.state().led
        });
        panic!("boom (deliberate, inside catch_unwind)");
    }));
    assert!(result.is_err());
    let s = outside.state();
    assert!(!s.led, "LED off after panic");
    assert!(!s.relay, "relay off after panic");
    assert_eq!(s.relay_writes.last(), Some(&false));
}

/// Pins whose tamper read panics after a while: the tick thread dies, outputs must go safe.
struct PanickyPins {
    inner: FakePins,
    reads: u32,
}

impl Pins for PanickyPins {
    fn set_led(&mut self, on: bool) {
        self.inner.set_led(on)
    }
    fn set_relay(&mut self, on: bool) {
        self.inner.set_relay(on)
    }
    fn read_tamper(&mut self) -> Option<bool> {
        self.reads += 1;
        if self.reads > 20 && self.inner.state().relay {
            panic!("GPIO read failed (deliberate)");
        }
        self.inner.read_tamper()
    }
}

#[test]
fn panic_in_the_tick_thread_returns_outputs_to_safe_state() {
    let fake = FakePins::new(Some(false));
    let probe = fake.clone();
    let mut act = GpioActuator::start(
        PanickyPins {
            inner: fake,
            reads: 0,
        },
        logic_cfg(true),
        TamperFlag::default(),
        Arc::new(Capture::default()),
    )
    .expect("start");
    eventually("relay energised then thread panicked and went safe", || {
        act.on_verdict(Verdict::Authentic);
        let s = probe.state();
        s.relay_writes.contains(&true) && !s.relay && !s.led
    });
    drop(act); // joining a panicked thread must not panic again
    assert!(!probe.state().relay);
}

/// Counts how often the wrapped sealer is asked to seal.
struct CountingSealer(Arc<AtomicU64>);

impl Sealer for CountingSealer {
    fn seal(&mut self, _input: &SealInput<'_>) -> Result<Option<Sealed>, SealError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(None)
    }
}

fn pipeline_run(tampered: bool) -> (u64, u64, Vec<AlertRequest>) {
    let mut cfg = Config::default();
    cfg.source.uri = "synthetic".into();
    cfg.source.fps = 200.0;
    cfg.source.width = 64;
    cfg.source.height = 48;
    let dev = DeviceConfig {
        gpio: true,
        led_pin: Some(17),
        tamper_pin: Some(27),
        relay_pin: Some(22),
        tamper_debounce: Duration::ZERO,
        ..Default::default()
    };
    let sink = Arc::new(Capture::default());
    let sealed = Arc::new(AtomicU64::new(0));
    let mut parts = Components::from_config(&cfg).expect("components");
    parts.sink = sink.clone();
    parts.sealer = Box::new(CountingSealer(sealed.clone()));
    let fake = FakePins::new(Some(tampered));
    let parts = parts.with_device(device::build_with_pins(&dev, sink.clone(), fake.clone()));
    if tampered {
        eventually("tamper alert", || !sink.alerts().is_empty());
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let report = rt
        .block_on(daemon::run_pipeline(
            &cfg,
            parts,
            Limits {
                frames: Some(20),
                duration: None,
            },
            Shutdown::new(),
        ))
        .expect("run");
    // The pipeline dropped the actuator at shutdown: outputs are safe.
    assert!(!fake.state().led && !fake.state().relay);
    (
        report.final_stats.analysed,
        sealed.load(Ordering::SeqCst),
        sink.alerts(),
    )
}

#[test]
fn tamper_stops_sealing_in_the_pipeline() {
    let (analysed, sealed, alerts) = pipeline_run(true);
    assert!(analysed > 0);
    assert_eq!(sealed, 0, "nothing sealed while tampered");
    assert!(alerts.iter().any(|a| a.kind == "tamper"));

    let (analysed, sealed, alerts) = pipeline_run(false);
    assert!(analysed > 0);
    assert!(sealed > 0, "sealing goes on without tamper");
    assert!(alerts.iter().all(|a| a.kind != "tamper"));
}

#[test]
fn gpio_disabled_path_does_not_crash() {
    let mut cfg = Config::default();
    cfg.source.uri = "synthetic".into();
    // Asking for GPIO on a host without it (x86, CI) logs "GPIO disabled" and goes on.
    cfg.device.gpio = !std::path::Path::new("/dev/gpiomem").exists();
    cfg.device.led_pin = Some(17);
    let parts = Components::from_config(&cfg).expect("components build without GPIO");
    drop(parts);
}
