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
//! Files: `connection.rs` (broker URL, TLS, options, backoff; the connection task and its
//! packet-id bookkeeping), `sink.rs` ([`MqttSink`], [`SinkOptions`], the outbox writer thread),
//! `publisher.rs` (the publisher task and the status it reports), `discovery.rs` (Home
//! Assistant discovery, [`ha_discovery`]).

mod connection;
mod discovery;
mod publisher;
mod sink;

pub use connection::{
    backoff, describe, install_crypto_provider, is_config_error, mqtt_options, parse_broker,
    tls_config, BrokerUrl, ConnectOptions,
};
pub use discovery::ha_discovery;
pub use sink::{camera_alert, MqttSink, Shared, SinkOptions};

/// Schema ids of the non-alert payloads (docs/mqtt.md).
pub const STATUS_SCHEMA: &str = "veriframe.status/1";
pub const STATS_SCHEMA: &str = "veriframe.stats/1";
pub const CAPTURE_SCHEMA: &str = "veriframe.capture/1";
pub const PUBKEY_SCHEMA: &str = "veriframe.pubkey/1";
