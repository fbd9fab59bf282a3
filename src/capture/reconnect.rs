//! Reopening a camera that went away, with capped exponential backoff.
//!
//! [`Reconnecting`] wraps an [`Opener`]: when the open source fails with a transient error
//! (unplug, ENODEV, EIO) it reports [`CaptureEvent::CameraLost`], retries with [`Backoff`], and
//! reports [`CaptureEvent::CameraRestored`] once a frame flows again. It never gives up and never
//! panics; only shutdown ends it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Capture, CaptureError, CaptureEvent, FrameSource};
use crate::frame::SourceInfo;
use crate::shutdown::Shutdown;

/// Opens (or reopens) a source.
pub trait Opener: Send {
    /// Path for events and errors.
    fn path(&self) -> String;
    fn open(&mut self) -> Result<Box<dyn FrameSource>, CaptureError>;
}

/// Capped exponential backoff (pure).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            current: initial,
        }
    }

    /// The delay before the next attempt; doubles up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

pub struct Reconnecting<O: Opener> {
    opener: O,
    backoff: Backoff,
    inner: Option<Box<dyn FrameSource>>,
    info: Arc<SourceInfo>,
    lost_since: Option<Instant>,
    pending: Option<CaptureEvent>,
    /// A frame held back while its `CameraRestored` event is delivered.
    stash: Option<super::Frame>,
}

impl<O: Opener> Reconnecting<O> {
    /// Open now; a camera missing at start is an error only if it is not transient (e.g. the
    /// format is unsupported). A missing device is retried like a lost one.
    pub fn new(mut opener: O, backoff: Backoff) -> Result<Self, CaptureError> {
        let path = opener.path();
        let (inner, lost_since, pending) = match opener.open() {
            Ok(s) => (Some(s), None, None),
            Err(e) if is_transient(&e) => {
                tracing::warn!(%path, error = %e, "camera not available yet; will retry");
                (
                    None,
                    Some(Instant::now()),
                    Some(CaptureEvent::CameraLost {
                        path: path.clone(),
                        reason: e.to_string(),
                    }),
                )
            }
            Err(e) => return Err(e),
        };
        let info = inner.as_ref().map(|s| s.info()).unwrap_or_else(|| {
            Arc::new(SourceInfo {
                kind: "v4l2".into(),
                path: path.clone(),
                driver: String::new(),
                card: String::new(),
                bus: String::new(),
                format: super::PixelFormat::Jpeg,
                width: 0,
                height: 0,
                fps: 0.0,
            })
        });
        Ok(Self {
            opener,
            backoff,
            inner,
            info,
            lost_since,
            pending,
            stash: None,
        })
    }
}

/// Whether reopening might help.
pub fn is_transient(e: &CaptureError) -> bool {
    match e {
        CaptureError::Device { transient, .. } => *transient,
        CaptureError::Open { .. } => true,
        _ => false,
    }
}

impl<O: Opener> FrameSource for Reconnecting<O> {
    fn info(&self) -> Arc<SourceInfo> {
        self.info.clone()
    }

    fn next(&mut self, shutdown: &Shutdown) -> Result<Capture, CaptureError> {
        if let Some(ev) = self.pending.take() {
            return Ok(Capture::Event(ev));
        }
        if let Some(f) = self.stash.take() {
            return Ok(Capture::Frame(f));
        }
        loop {
            if shutdown.is_triggered() {
                return Err(CaptureError::Shutdown);
            }
            let Some(src) = self.inner.as_mut() else {
                if shutdown.sleep(self.backoff.next_delay()) {
                    return Err(CaptureError::Shutdown);
                }
                match self.opener.open() {
                    Ok(s) => {
                        self.info = s.info();
                        self.inner = Some(s);
                    }
                    Err(e) if is_transient(&e) => {
                        tracing::debug!(error = %e, "reopen failed");
                    }
                    Err(e) => return Err(e),
                }
                continue;
            };
            match src.next(shutdown) {
                Ok(Capture::Frame(f)) => {
                    self.backoff.reset();
                    if let Some(since) = self.lost_since.take() {
                        let ev = CaptureEvent::CameraRestored {
                            path: self.opener.path(),
                            after_ms: since.elapsed().as_millis() as u64,
                        };
                        // Deliver the event now and keep the frame for the next call.
                        self.stash = Some(f);
                        return Ok(Capture::Event(ev));
                    }
                    return Ok(Capture::Frame(f));
                }
                Ok(other) => return Ok(other),
                Err(e) if is_transient(&e) => {
                    self.inner = None;
                    self.lost_since = Some(Instant::now());
                    return Ok(Capture::Event(CaptureEvent::CameraLost {
                        path: self.opener.path(),
                        reason: e.to_string(),
                    }));
                }
                Err(e) => return Err(e),
            }
        }
    }
}
