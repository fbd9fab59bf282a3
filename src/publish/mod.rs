//! Publishing: everything operators hear about goes through [`EventSink`]. Only this module knows
//! topic strings and payload schemas.
//!
//! Without a broker configured, [`LogSink`] writes events to the log. With one, [`mqtt::sink::MqttSink`]
//! publishes signed alerts through a durable outbox, plus availability, status, stats, the device
//! public key and Home Assistant discovery (topics and schemas: `docs/mqtt.md`).

pub mod alert;
pub mod mqtt;
pub mod outbox;
pub mod store;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::alert::AlertRequest;
use crate::capture::CaptureEvent;
use crate::seal::Sealed;
use crate::stats::StatsSnapshot;

/// Errors from publishing.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("outbox {path}: {source}")]
    Outbox {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("alert payload too large ({0} bytes)")]
    TooLarge(usize),
    #[error("cannot encode payload: {0}")]
    Encode(String),
    #[error("signing key: {0}")]
    Key(String),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("broker URL {0}")]
    BadBroker(String),
    #[error("cannot start outbox thread: {0}")]
    Thread(String),
    #[error("{0}")]
    Connect(String),
    #[error("{0}")]
    Io(String),
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

    /// Called once when the pipeline has drained: flush what is pending within `timeout`
    /// (the MQTT sink publishes `stopped` and empties its outbox). Default: nothing to do.
    fn shutdown(&self, timeout: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let _ = timeout;
        Box::pin(async {})
    }
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
                tracing::warn!(kind = %a.kind, severity = %a.severity, first_seq = a.first_seq, detail = %a.detail, "alert")
            }
        }
    }
}

/// `[mqtt]` section of the config file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `mqtt://host:port` or `mqtts://host:port`; empty disables MQTT.
    pub broker: Option<String>,
    /// Topic prefix. Default `veriframe/<device_id>/`.
    pub topic_prefix: Option<String>,
    /// MQTT client id. Default `veriframe-<device_id>`.
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// CA certificate(s) (PEM) for `mqtts://`; without it the system roots are used.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain and private key (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Reconnect backoff: first delay, doubling (with jitter) up to the cap.
    #[serde(with = "humantime_serde")]
    pub reconnect_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Outbox directory. Default `<data_dir>/outbox`.
    pub outbox_dir: Option<PathBuf>,
    /// Alerts kept while the broker is away; when full the oldest is evicted (counted).
    pub outbox_capacity: usize,
    /// Alerts published but not yet acknowledged, at most.
    pub inflight: u16,
    /// Publish a summary of every sealed capture on `<prefix>capture`.
    pub publish_captures: bool,
    /// Publish Home Assistant discovery configs.
    pub ha_discovery: bool,
    pub ha_prefix: String,
    /// How long the "attack detected" state stays on after the last attack alert.
    #[serde(with = "humantime_serde")]
    pub attack_hold: Duration,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            broker: None,
            topic_prefix: None,
            client_id: None,
            username: None,
            password: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            keep_alive: Duration::from_secs(30),
            reconnect_initial: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            outbox_dir: None,
            outbox_capacity: 10_000,
            inflight: 32,
            publish_captures: false,
            ha_discovery: true,
            ha_prefix: "homeassistant".into(),
            attack_hold: Duration::from_secs(30),
        }
    }
}

impl MqttConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(b) = self.broker.as_deref().filter(|b| !b.is_empty()) {
            mqtt::connection::parse_broker(b).map_err(|e| ("mqtt.broker", e.to_string()))?;
        }
        if let Some(p) = &self.topic_prefix {
            if p.is_empty() || p.contains('+') || p.contains('#') {
                return Err((
                    "mqtt.topic_prefix",
                    "must be non-empty, without wildcards".into(),
                ));
            }
        }
        if self.outbox_capacity == 0 {
            return Err(("mqtt.outbox_capacity", "must be at least 1".into()));
        }
        if self.inflight == 0 || self.inflight > 1000 {
            return Err(("mqtt.inflight", "must be 1..=1000".into()));
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err((
                "mqtt.client_cert",
                "client_cert and client_key must be set together".into(),
            ));
        }
        if self.reconnect_initial.is_zero() || self.reconnect_max < self.reconnect_initial {
            return Err((
                "mqtt.reconnect_max",
                "reconnect_initial must be > 0 and <= reconnect_max".into(),
            ));
        }
        Ok(())
    }

    /// Whether a broker is configured.
    pub fn enabled(&self) -> bool {
        self.broker.as_deref().is_some_and(|b| !b.is_empty())
    }
}

/// Build the sink for `cfg`: [`mqtt::sink::MqttSink`] when a broker is configured, else [`LogSink`].
/// Must run inside a tokio runtime.
pub fn build_sink(
    cfg: &MqttConfig,
    device_id: &str,
    data_dir: &std::path::Path,
    signer: Arc<dyn crate::record::Signer>,
) -> Result<Arc<dyn EventSink>, PublishError> {
    if !cfg.enabled() {
        return Ok(Arc::new(LogSink));
    }
    let opts = mqtt::SinkOptions::new(cfg, device_id, data_dir)?;
    Ok(Arc::new(mqtt::sink::MqttSink::start(opts, signer)?))
}
