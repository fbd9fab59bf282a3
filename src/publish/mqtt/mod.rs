//! The MQTT sink: topics, the outbox writer thread, the publisher task and the connection task.
//!
//! ```text
//! frame threads ──send()──┬─ alerts ─▶ vf-outbox thread: build, sign, append, fsync (group commit)
//!  (never block:          │                      │ Committed(seq, payload)
//!   try_send, counted)    └─ stats, camera, ─────▼────────────────────────────────────────────┐
//!                            sealed ────────▶ publisher task: OutboxCore, status, stats, HA ──┤ publish
//!                                                    ▲ Connected / Acked(seq) / Disconnected  │
//!                                             connection task: EventLoop::poll, backoff ◀─────┘
//! ```
//! Packet ids: the publisher hands every publish to rumqttc under the `Link` lock and records a
//! tag for it in a FIFO; rumqttc emits `Outgoing::Publish(pkid)` in request order, so the
//! connection task pops the FIFO to learn which alert got which packet id, and maps the broker's
//! `PUBACK(pkid)` back to the outbox sequence number. On a connection error the connection task,
//! under the same lock, drains rumqttc's buffered events and request queue and forgets the FIFO
//! (the session is clean, so rumqttc would drop its in-flight copies anyway): the outbox alone
//! redelivers, in order, after the next CONNACK.
//!
//! This file holds what the files share: [`SinkOptions`], the [`Shared`] counters and the messages
//! between the writer thread, the publisher task and the connection task. Files, lowest first:
//! [`connection`] (broker URL, TLS, options, backoff; the connection task and its packet-id
//! bookkeeping), [`discovery`] (Home Assistant discovery), [`publisher`] (the publisher task and
//! the status it reports), [`sink`] ([`sink::MqttSink`], the outbox writer thread).

pub mod connection;
pub mod discovery;
pub mod publisher;
pub mod sink;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;

use crate::alert::{AlertKind, AlertRequest};
use crate::capture::CaptureEvent;
use crate::publish::{MqttConfig, PublishError};
use crate::stats::StatsSnapshot;

use connection::{parse_broker, ConnectOptions, Net};

/// Schema ids of the non-alert payloads (docs/mqtt.md).
pub const STATUS_SCHEMA: &str = "veriframe.status/1";
pub const STATS_SCHEMA: &str = "veriframe.stats/1";
pub const CAPTURE_SCHEMA: &str = "veriframe.capture/1";
pub const PUBKEY_SCHEMA: &str = "veriframe.pubkey/1";

/// Everything the sink needs, resolved from the config.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    pub connect: ConnectOptions,
    pub device_id: String,
    /// Topic prefix, ends with `/`.
    pub prefix: String,
    pub outbox_dir: PathBuf,
    pub outbox_capacity: usize,
    pub window: u16,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    pub publish_captures: bool,
    pub ha_discovery: bool,
    pub ha_prefix: String,
    pub attack_hold: Duration,
    /// Keep enqueue-to-PUBACK latencies (benchmarks).
    pub record_latency: bool,
}

impl SinkOptions {
    pub fn new(
        cfg: &MqttConfig,
        device_id: &str,
        data_dir: &std::path::Path,
    ) -> Result<Self, PublishError> {
        let url = cfg
            .broker
            .as_deref()
            .ok_or_else(|| PublishError::BadBroker("no broker configured".into()))?;
        let broker = parse_broker(url)?;
        let prefix = match &cfg.topic_prefix {
            Some(p) if p.ends_with('/') => p.clone(),
            Some(p) => format!("{p}/"),
            None => format!("veriframe/{device_id}/"),
        };
        Ok(Self {
            connect: ConnectOptions {
                broker,
                client_id: cfg
                    .client_id
                    .clone()
                    .unwrap_or_else(|| format!("veriframe-{device_id}")),
                username: cfg.username.clone(),
                password: cfg.password.clone(),
                ca_file: cfg.ca_file.clone(),
                client_cert: cfg.client_cert.clone(),
                client_key: cfg.client_key.clone(),
                keep_alive: cfg.keep_alive,
            },
            device_id: device_id.into(),
            prefix,
            outbox_dir: cfg
                .outbox_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("outbox")),
            outbox_capacity: cfg.outbox_capacity,
            window: cfg.inflight,
            reconnect_initial: cfg.reconnect_initial,
            reconnect_max: cfg.reconnect_max,
            publish_captures: cfg.publish_captures,
            ha_discovery: cfg.ha_discovery,
            ha_prefix: cfg.ha_prefix.clone(),
            attack_hold: cfg.attack_hold,
            record_latency: false,
        })
    }

    pub fn topic(&self, leaf: &str) -> String {
        format!("{}{leaf}", self.prefix)
    }
}

/// Counters and state the sink exposes (tests, benchmarks, stats payloads).
#[derive(Debug, Default)]
pub struct Shared {
    connected: AtomicBool,
    connects: AtomicU64,
    last_error: Mutex<Option<String>>,
    outbox_len: AtomicUsize,
    evicted: AtomicU64,
    acked: AtomicU64,
    /// Events dropped because a queue was full (never blocks the caller).
    dropped_events: AtomicU64,
    dropped_alerts: AtomicU64,
    /// Alerts handed to `send` that have not reached the outbox core yet: queued for the writer,
    /// being signed and synced, or on their way to the task, which decrements this only after it
    /// has counted the alert in `outbox_len` (so their sum never misses an alert in between).
    writer_queued: AtomicUsize,
    last_frame: AtomicU64,
    latencies_ms: Mutex<Vec<f32>>,
    /// fdatasyncs of the outbox log so far (group commit: one per writer batch).
    outbox_syncs: AtomicU64,
}

enum WriterMsg {
    Alert {
        req: AlertRequest,
        at: SystemTime,
        t0: Instant,
    },
    Delete(u64),
    Flush(std::sync::mpsc::Sender<()>),
}

enum TaskMsg {
    Committed {
        seq: u64,
        payload: Arc<[u8]>,
        t0: Option<Instant>,
    },
    Stats(Box<StatsSnapshot>),
    Camera(CaptureEvent),
    Sealed(Box<crate::seal::Sealed>),
    AlertSeen {
        kind: AlertKind,
        score: Option<f32>,
    },
    Net(Net),
    /// Answered once every alert committed before it has reached the outbox core.
    FlushAck(std::sync::mpsc::Sender<()>),
    Shutdown {
        deadline: Instant,
        done: oneshot::Sender<bool>,
    },
}
