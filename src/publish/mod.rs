//! Publishing: everything operators hear about goes through [`EventSink`]. Only this module knows
//! topic strings and payload schemas.
//!
//! Without a broker configured, [`LogSink`] writes events to the log.

pub mod cli;

use serde::{Deserialize, Serialize};

use crate::capture::CaptureEvent;
use crate::detect::ModelId;
use crate::seal::Sealed;
use crate::stats::StatsSnapshot;

/// Errors from publishing.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not implemented yet: {0}")]
    NotImplemented(&'static str),
}

/// An alert the pipeline wants raised.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRequest {
    /// `presentation_attack`, `deepfake_suspected`, `camera_lost`, `camera_restored`, `tamper`,
    /// `storage_full`, `detector_error`.
    pub kind: String,
    pub severity: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub score: Option<f32>,
    pub models: Vec<ModelId>,
    /// Manifest hash of the sealed evidence, when there is one.
    pub evidence: Option<String>,
    pub detail: String,
}

/// Everything the pipeline reports.
#[derive(Debug, Clone)]
pub enum Event {
    Stats(StatsSnapshot),
    Capture(CaptureEvent),
    Sealed(Sealed),
    Alert(AlertRequest),
}

/// The publish seam. `send` must never block the frame path.
pub trait EventSink: Send + Sync {
    fn send(&self, event: Event);
}

/// Logs events (the default when no broker is configured).
#[derive(Debug, Default)]
pub struct LogSink;

impl EventSink for LogSink {
    fn send(&self, event: Event) {
        match event {
            // The daemon logs stats itself.
            Event::Stats(_) => {}
            // The daemon logs capture events itself.
            Event::Capture(_) => {}
            Event::Sealed(s) => {
                tracing::debug!(chain_seq = s.chain_seq, manifest = %s.manifest_sha256, "sealed")
            }
            Event::Alert(a) => {
                tracing::warn!(kind = %a.kind, severity = %a.severity, first_seq = a.first_seq, "alert")
            }
        }
    }
}

/// `[mqtt]` section of the config file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `mqtt://host:port` or `mqtts://host:port`; empty disables MQTT.
    pub broker: Option<String>,
}

impl MqttConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        Ok(())
    }
}
