//! Wiring: capture, analysis and sealing on dedicated threads, publishing on the async runtime,
//! joined by bounded queues; stats at an interval; graceful shutdown that drains every stage.
//!
//! ```text
//! capture thread ──DropOldest(queue_capacity)──▶ analysis thread ──sync_channel(seal_queue)──▶ seal thread
//!        │ events                                   │ (decide, actuator)                          │ sealed, alerts
//!        └──────────────────────────────────────────┴──────────────▶ EventSink (publish) ◀────────┘
//! ```
//! Capture never blocks on analysis (drop-oldest, counted as `dropped`); analysis never blocks on
//! sealing (a full seal queue counts `seal_dropped`, alerts still go out). On shutdown capture
//! stops first, then each stage drains what is queued and exits; `captured = analysed + dropped`.

use std::sync::mpsc::{self, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::alert::{AlertKind, AlertRequest, DetectorErrors, StorageFull};
use crate::camera::{self, FrameTrust, SourceGuard};
use crate::capture::{self, Capture, CaptureError, CaptureEvent, FrameSource};
use crate::challenge::session::LightTag;
use crate::challenge::{self, ChallengeRecord, ChallengeStage, LightDriver};
use crate::config::Config;
use crate::decide::{self, DeciderState, Decision};
use crate::detect::{self, Analysis, Analyzer};
use crate::device::tamper::TamperFlag;
use crate::device::{self, Actuator, Device, NoDevice};
use crate::frame::{monotonic_now, Frame};
use crate::publish::{Event, EventSink, LogSink};
use crate::queue::{DropOldest, Pop};
use crate::seal::{ChainSealer, SealError, SealInput, Sealed, Sealer};
use crate::shutdown::{self, Shutdown, StageGuard};
use crate::stats::{Stage, Stats, StatsSnapshot};

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("capture: {0}")]
    Capture(#[from] CaptureError),
    #[error("detector: {0}")]
    Detect(#[from] detect::DetectError),
    #[error("cannot start thread: {0}")]
    Thread(std::io::Error),
    // seal: key/store errors at startup.
    #[error("seal: {0}")]
    Seal(#[from] crate::seal::SealError),
    #[error("publish: {0}")]
    Publish(#[from] crate::publish::PublishError),
    #[error("challenge illuminator: {0}")]
    Illuminator(String),
}

/// When a run ends by itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Stop after this many captured frames.
    pub frames: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

/// The stage implementations, chosen by the caller (real ones from config, fakes in tests).
pub struct Components {
    pub source: Box<dyn FrameSource>,
    /// Camera identity, injection instruments and stream integrity (runs in the capture thread).
    pub guard: SourceGuard,
    pub analyzer: Box<dyn Analyzer>,
    pub sealer: Box<dyn Sealer>,
    pub sink: Arc<dyn EventSink>,
    pub actuator: Box<dyn Actuator>,
    /// The light challenge, when an illuminator is configured.
    pub challenge: Option<ChallengeParts>,
}

/// The light challenge's parts: the illuminator the capture thread switches, and the settings.
pub struct ChallengeParts {
    pub illuminator: Box<dyn challenge::Illuminator>,
    pub cfg: challenge::ChallengeConfig,
}

impl ChallengeParts {
    /// The configured illuminator (`light`: the `sim:` source's light, when the source is one).
    pub fn from_config(
        cfg: &challenge::ChallengeConfig,
        source_uri: &str,
        light: Option<crate::capture::sim::SimLight>,
    ) -> Result<Option<Self>, DaemonError> {
        use challenge::IlluminatorSpec as Spec;
        let illuminator: Box<dyn challenge::Illuminator> =
            match cfg.resolve(source_uri).map_err(DaemonError::Illuminator)? {
                Spec::None => return Ok(None),
                Spec::Sim => Box::new(challenge::SimIlluminator(light.unwrap_or_default())),
                Spec::Exec(c) => Box::new(challenge::ExecIlluminator::new(c)),
                Spec::Gpio(pin) => Box::new(
                    device::illuminator::GpioIlluminator::open(pin, cfg.active_high)
                        .map_err(|e| DaemonError::Illuminator(e.to_string()))?,
                ),
            };
        tracing::info!(illuminator = %illuminator.name(), "light challenge on");
        Ok(Some(Self {
            illuminator,
            cfg: cfg.clone(),
        }))
    }
}

impl Components {
    /// Build the stages described by `cfg`.
    pub fn from_config(cfg: &Config) -> Result<Self, DaemonError> {
        let sealer = ChainSealer::open(&cfg.seal, &cfg.data_dir, &cfg.device_id)?;
        // camera hook: pins are signed with the device key, kept in the data dir.
        let guard = SourceGuard::new(
            cfg.source.guard_config(),
            Box::new(camera::fingerprint::SystemInfo::default()),
            Some(camera::pin::PinStore::new(
                &cfg.data_dir,
                sealer.signer(),
                &cfg.device_id,
                cfg.seal.fsync,
            )),
        );
        // publish: MqttSink when a broker is configured (needs the tokio runtime), else
        // LogSink. Alerts are signed with the same device key as captures.
        let sink: Arc<dyn EventSink> = if cfg.mqtt.enabled() {
            crate::publish::build_sink(&cfg.mqtt, &cfg.device_id, &cfg.data_dir, sealer.signer())?
        } else {
            Arc::new(LogSink)
        };
        let (source, light) = capture::open_with_light(&cfg.source)?;
        let challenge = ChallengeParts::from_config(&cfg.challenge, &cfg.source.uri, light)?;
        let parts = Self {
            source,
            challenge,
            guard,
            analyzer: detect::build(&cfg.detect)?,
            sealer: Box::new(sealer),
            actuator: Box::new(NoDevice),
            sink: sink.clone(),
        };
        // GPIO (or "GPIO disabled") and the systemd notifier.
        Ok(parts.with_device(device::build(&cfg.device, sink)))
    }

    /// Plug in the device layer: its actuator and notifier replace the actuator, and while its
    /// tamper flag is set the sealer seals nothing.
    pub fn with_device(mut self, device: Device) -> Self {
        let (actuator, tamper) = device.actuators();
        self.actuator = Box::new(actuator);
        if let Some(flag) = tamper {
            self.sealer = Box::new(TamperGate::new(self.sealer, flag));
        }
        self
    }
}

/// Wraps the seal stage: while the tamper flag is set, frames are not sealed (a device whose
/// enclosure is open must not produce evidence that looks trustworthy). Analysis and alerts go on.
pub struct TamperGate {
    inner: Box<dyn Sealer>,
    flag: TamperFlag,
    blocked: bool,
    skipped: u64,
}

impl TamperGate {
    pub fn new(inner: Box<dyn Sealer>, flag: TamperFlag) -> Self {
        Self {
            inner,
            flag,
            blocked: false,
            skipped: 0,
        }
    }

    /// Frames not sealed because of tamper.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

impl TamperGate {
    /// Whether sealing is blocked now (logs the transitions).
    fn check(&mut self) -> bool {
        let tampered = self.flag.is_set();
        if tampered != self.blocked {
            self.blocked = tampered;
            if tampered {
                tracing::error!("tamper: sealing stopped");
            } else {
                tracing::warn!("tamper cleared: sealing resumed");
            }
        }
        tampered
    }
}

impl Sealer for TamperGate {
    fn seal(&mut self, input: &SealInput<'_>) -> Result<Option<Sealed>, SealError> {
        if self.check() {
            self.skipped += 1;
            return Ok(None);
        }
        self.inner.seal(input)
    }

    /// Forwards the batch whole, so group commit survives the gate.
    fn seal_batch(&mut self, inputs: &[SealInput<'_>]) -> Vec<Result<Option<Sealed>, SealError>> {
        if self.check() {
            self.skipped += inputs.len() as u64;
            return inputs.iter().map(|_| Ok(None)).collect();
        }
        self.inner.seal_batch(inputs)
    }
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub final_stats: StatsSnapshot,
    /// Every stage drained within the shutdown timeout.
    pub drained: bool,
    /// Capture ended with an error (after draining).
    pub capture_error: Option<String>,
}

/// A captured frame with the camera guard's verdict on its source.
struct Captured {
    frame: Frame,
    trust: FrameTrust,
    /// Which light-challenge frame it is, when a challenge was being played.
    light: Option<LightTag>,
}

struct Analysed {
    frame: Frame,
    analysis: Option<Analysis>,
    decision: Decision,
    trust: FrameTrust,
    challenge: Option<ChallengeRecord>,
}

/// Source alerts of a frame that will not reach the seal stage: raised now, without evidence.
fn send_source_alerts(sink: &dyn EventSink, frame: &Frame, trust: &FrameTrust) {
    for a in &trust.alerts {
        sink.send(Event::Alert(AlertRequest::camera_trust(
            a.kind,
            a.score,
            frame.seq,
            a.detail.clone(),
        )));
    }
}

/// The actuator, shared by the capture and analysis threads and the runtime.
type SharedActuator = Arc<Mutex<Box<dyn Actuator>>>;

fn lock(actuator: &SharedActuator) -> MutexGuard<'_, Box<dyn Actuator>> {
    // A poisoned lock means another stage panicked; the actuator is still usable.
    actuator.lock().unwrap_or_else(|e| e.into_inner())
}

// The stage's own parts and its queue, stats, sink, limits and stop signal.
#[allow(clippy::too_many_arguments)]
fn capture_loop(
    mut source: Box<dyn FrameSource>,
    mut guard: SourceGuard,
    mut light: Option<LightDriver>,
    actuator: SharedActuator,
    queue: DropOldest<Captured>,
    stats: Arc<Stats>,
    sink: Arc<dyn EventSink>,
    limits: Limits,
    shutdown: Shutdown,
) -> Result<(), CaptureError> {
    let mut seq = 0u64;
    let result = loop {
        if limits.frames.is_some_and(|n| seq >= n) {
            break Ok(());
        }
        let tag = light.as_mut().and_then(LightDriver::before_frame);
        match source.next(&shutdown) {
            Ok(Capture::Frame(mut f)) => {
                f.seq = seq;
                seq += 1;
                tracing::debug!(seq = f.seq, device_seq = f.device_seq, "frame");
                Stats::inc(&stats.captured);
                let trust = guard.on_frame(&f);
                if let Some(old) = queue.push(Captured {
                    frame: f,
                    trust,
                    light: tag,
                }) {
                    Stats::inc(&stats.dropped);
                    // Its source alerts must not be lost with it.
                    send_source_alerts(sink.as_ref(), &old.frame, &old.trust);
                }
            }
            Ok(Capture::Event(CaptureEvent::EndOfStream)) => {
                tracing::info!("source reached its end");
                break Ok(());
            }
            Ok(Capture::Event(ev)) => {
                tracing::warn!(event = ?ev, "capture event");
                lock(&actuator).on_camera_event(&ev);
                sink.send(Event::Capture(ev));
            }
            Err(CaptureError::Shutdown) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    if let Some(l) = &mut light {
        l.off();
    }
    queue.close();
    result
}

#[allow(clippy::too_many_arguments)]
fn analysis_loop(
    mut analyzer: Box<dyn Analyzer>,
    actuator: SharedActuator,
    queue: DropOldest<Captured>,
    seal_tx: mpsc::SyncSender<Analysed>,
    stats: Arc<Stats>,
    sink: Arc<dyn EventSink>,
    decide_cfg: decide::DecideConfig,
    mut challenge: Option<ChallengeStage>,
) {
    let mut state = DeciderState::new(decide_cfg);
    // One `detector_error` alert per episode of analysis failures.
    let mut detector_errors = DetectorErrors::default();
    // Ready after the first analysed frame (camera open, models loaded, a frame through the
    // detector).
    let mut ready = false;
    loop {
        let Captured {
            frame,
            trust,
            light,
        } = match queue.pop_timeout(Duration::from_millis(200)) {
            Pop::Item(c) => c,
            Pop::Empty => continue,
            Pop::Closed => break,
        };
        stats.record(
            Stage::Queue,
            monotonic_now().saturating_sub(frame.captured_mono),
        );
        let t0 = Instant::now();
        let analysis = match analyzer.analyze(&frame) {
            Ok(a) => {
                detector_errors.analysed();
                Some(a)
            }
            Err(e) => {
                Stats::inc(&stats.analysis_errors);
                tracing::warn!(seq = frame.seq, error = %e, "analysis failed");
                if let Some(alert) = detector_errors.failed(frame.seq, &e.to_string()) {
                    sink.send(Event::Alert(alert));
                }
                None
            }
        };
        stats.record(Stage::Analyze, t0.elapsed());
        Stats::inc(&stats.analysed);
        let (next, decision) = decide::step(state, analysis.as_ref(), frame.captured_mono);
        state = next;
        // camera hook: an untrusted source overrides the verdict; its alerts join.
        let decision = camera::apply(decision, &trust);
        // challenge hook: an unproven face is not authentic, a failed one an attack.
        let (decision, challenge) = match &mut challenge {
            Some(c) => c.on_frame(&frame, light, analysis.as_ref(), decision),
            None => (decision, None),
        };
        {
            // The systemd watchdog is fed only here, so a stalled capture or detector gets the
            // service restarted.
            let mut act = lock(&actuator);
            if !ready {
                act.on_ready();
                ready = true;
            }
            act.on_verdict(decision.verdict);
            if analysis.is_none() {
                act.on_analysis_error();
            }
        }
        let item = Analysed {
            frame,
            analysis,
            decision,
            trust,
            challenge,
        };
        match seal_tx.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(item)) | Err(TrySendError::Disconnected(item)) => {
                // The seal stage lags (slow or full disk): do not wait. Alerts still go out,
                // without sealed evidence.
                Stats::inc(&stats.seal_dropped);
                for a in alerts_for(&item, None) {
                    sink.send(Event::Alert(a));
                }
            }
        }
    }
}

/// The alerts `item`'s decision raises, citing the sealed manifest `evidence` when there is one.
fn alerts_for(item: &Analysed, evidence: Option<&str>) -> Vec<AlertRequest> {
    let models = item.analysis.as_ref().map(|a| a.models.as_slice());
    item.decision
        .alerts(item.frame.seq, models.unwrap_or_default(), evidence)
        .into_iter()
        .map(|mut r| {
            // Source alerts carry their detail and are not model results.
            if let Some(d) = item.trust.detail(r.kind) {
                r.detail = d.to_string();
                r.models.clear();
            }
            if let (AlertKind::ChallengeFailed, Some(c)) = (r.kind, &item.challenge) {
                r.detail = c.detail();
            }
            r
        })
        .collect()
}

/// Most frames sealed in one group commit (the seal queue holds at most
/// `pipeline.seal_queue_capacity`).
const SEAL_BATCH_MAX: usize = 64;

fn seal_loop(
    mut sealer: Box<dyn Sealer>,
    rx: mpsc::Receiver<Analysed>,
    stats: Arc<Stats>,
    sink: Arc<dyn EventSink>,
) {
    // seal hook: one `storage_full` alert per episode (until a capture is stored again).
    let mut storage_full = StorageFull::default();
    // Group commit: take whatever is queued (an evidence burst, frames that arrived while the
    // last batch was being synced) and make it durable together. A frame counts as sealed, and
    // its alerts cite it, only after its batch is durable.
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < SEAL_BATCH_MAX {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let t0 = Instant::now();
        let inputs: Vec<SealInput<'_>> = batch
            .iter()
            .map(|item| SealInput {
                frame: &item.frame,
                analysis: item.analysis.as_ref(),
                decision: &item.decision,
                identity: &item.trust.identity,
                challenge: item.challenge.as_ref(),
            })
            .collect();
        let results = sealer.seal_batch(&inputs);
        drop(inputs);
        tracing::debug!(frames = batch.len(), elapsed = ?t0.elapsed(), "group commit");
        let mut results = results.into_iter();
        for item in &batch {
            // A sealer returning fewer results than inputs: the missing ones were not sealed.
            let result = results.next().unwrap_or(Ok(None));
            let evidence = match result {
                Ok(Some(sealed)) => {
                    Stats::inc(&stats.sealed);
                    stats.record(Stage::Seal, t0.elapsed());
                    stats.record(
                        Stage::EndToEnd,
                        monotonic_now().saturating_sub(item.frame.captured_mono),
                    );
                    let h = sealed.manifest_sha256.clone();
                    sink.send(Event::Sealed(sealed));
                    storage_full.stored();
                    Some(h)
                }
                Ok(None) => None,
                Err(SealError::StorageFull { path }) => {
                    Stats::inc(&stats.seal_errors);
                    if let Some(alert) = storage_full.full(item.frame.seq, &path) {
                        tracing::error!(path = %path.display(), "storage full: captures are not being stored");
                        sink.send(Event::Alert(alert));
                    }
                    None
                }
                Err(e) => {
                    Stats::inc(&stats.seal_errors);
                    tracing::warn!(seq = item.frame.seq, error = %e, "sealing failed");
                    None
                }
            };
            for a in alerts_for(item, evidence.as_deref()) {
                sink.send(Event::Alert(a));
            }
        }
    }
}

fn spawn<F: FnOnce() + Send + 'static>(
    name: &str,
    guard: StageGuard,
    f: F,
) -> Result<std::thread::JoinHandle<()>, DaemonError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _guard = guard;
            f()
        })
        .map_err(DaemonError::Thread)
}

/// Run the pipeline until `shutdown` fires or a limit is reached, then drain.
pub async fn run_pipeline(
    cfg: &Config,
    parts: Components,
    limits: Limits,
    shutdown: Shutdown,
) -> Result<RunReport, DaemonError> {
    let stats = Arc::new(Stats::new());
    let sink = parts.sink.clone();
    tracing::info!(source = ?parts.source.info(), "starting pipeline");
    let (guard, completion) = shutdown::completion();
    let (actuator, cap_done_rx) = spawn_stages(cfg, parts, &stats, limits, &shutdown, guard)?;
    lock(&actuator).on_started();
    let capture_result = supervise(cfg, &stats, &sink, limits, &shutdown, cap_done_rx).await;
    lock(&actuator).on_stopping();
    let drained = completion.wait(cfg.pipeline.shutdown_timeout).await;
    if !drained {
        tracing::warn!(
            "not every stage drained within {:?}",
            cfg.pipeline.shutdown_timeout
        );
    }
    let final_stats = stats.snapshot();
    tracing::info!(target: "veriframe::stats", "final: {}", final_stats.line());
    sink.send(Event::Stats(final_stats.clone()));
    // publish hook: flush the outbox and publish `stopped` within the shutdown timeout.
    sink.shutdown(cfg.pipeline.shutdown_timeout).await;
    let capture_error = match capture_result {
        Some(Err(e)) => {
            tracing::error!(error = %e, "capture stopped");
            Some(e.to_string())
        }
        _ => None,
    };
    Ok(RunReport {
        final_stats,
        drained,
        capture_error,
    })
}

/// What the capture thread reports when it ends.
type CaptureDone = tokio::sync::oneshot::Receiver<Result<(), CaptureError>>;

/// Start the capture, analysis and seal threads, each holding a clone of `guard` until it ends;
/// returns the shared actuator and where the capture thread reports its end.
fn spawn_stages(
    cfg: &Config,
    parts: Components,
    stats: &Arc<Stats>,
    limits: Limits,
    shutdown: &Shutdown,
    guard: StageGuard,
) -> Result<(SharedActuator, CaptureDone), DaemonError> {
    let Components {
        source,
        guard: source_guard,
        analyzer,
        sealer,
        sink,
        actuator,
        challenge,
    } = parts;
    let queue = DropOldest::new(cfg.pipeline.queue_capacity);
    let (seal_tx, seal_rx) = mpsc::sync_channel(cfg.pipeline.seal_queue_capacity);
    let (cap_done_tx, cap_done_rx) = tokio::sync::oneshot::channel();
    let (light, challenge) = match challenge {
        Some(c) => {
            let (tx, rx) = mpsc::channel();
            let name = c.illuminator.name();
            (
                Some(LightDriver::new(c.illuminator, rx, c.cfg.max_lag)),
                Some(ChallengeStage::new(c.cfg, name, tx)),
            )
        }
        None => (None, None),
    };
    let actuator: SharedActuator = Arc::new(Mutex::new(actuator));
    {
        let (q, st, sk, sd) = (queue.clone(), stats.clone(), sink.clone(), shutdown.clone());
        let act = actuator.clone();
        spawn("vf-capture", guard.clone(), move || {
            let r = capture_loop(source, source_guard, light, act, q, st, sk, limits, sd);
            let _ = cap_done_tx.send(r);
        })?;
    }
    {
        let (st, sk) = (stats.clone(), sink.clone());
        let decide_cfg = cfg.decide.clone();
        let act = actuator.clone();
        spawn("vf-analyse", guard.clone(), move || {
            analysis_loop(analyzer, act, queue, seal_tx, st, sk, decide_cfg, challenge)
        })?;
    }
    let st = stats.clone();
    spawn("vf-seal", guard, move || {
        seal_loop(sealer, seal_rx, st, sink)
    })?;
    Ok((actuator, cap_done_rx))
}

/// Wait for a shutdown request, the capture thread's end or the duration limit, logging and
/// sending stats every interval meanwhile; then the capture thread's result (`None`: it
/// vanished without one).
async fn supervise(
    cfg: &Config,
    stats: &Stats,
    sink: &Arc<dyn EventSink>,
    limits: Limits,
    shutdown: &Shutdown,
    mut cap_done_rx: CaptureDone,
) -> Option<Result<(), CaptureError>> {
    let mut deadline = limits.duration.map(|d| tokio::time::Instant::now() + d);
    let mut ticker = tokio::time::interval(cfg.pipeline.stats_interval);
    ticker.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            _ = shutdown.recv() => {
                tracing::info!("shutdown requested; draining");
                break (&mut cap_done_rx).await.ok();
            }
            r = &mut cap_done_rx => {
                shutdown.trigger();
                break r.ok();
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                tracing::info!("duration limit reached; draining");
                deadline = None;
                shutdown.trigger();
            }
            _ = ticker.tick() => {
                let snap = stats.snapshot();
                tracing::info!(target: "veriframe::stats", "{}", snap.line());
                sink.send(Event::Stats(snap));
            }
        }
    }
}
