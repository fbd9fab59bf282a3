//! The publisher task: drives the outbox core, publishes alerts, status, stats, captures and the
//! public key, and tracks the state `status` reports.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{AsyncClient, QoS};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::alert::AlertKind;
use crate::capture::CaptureEvent;
use crate::publish::alert;
use crate::publish::outbox::{Action, OutboxCore};
use crate::stats::StatsSnapshot;

use super::connection::{Link, Net, Tag};
use super::discovery::ha_discovery;
use super::{Shared, SinkOptions, TaskMsg, WriterMsg};
use super::{CAPTURE_SCHEMA, PUBKEY_SCHEMA, STATS_SCHEMA, STATUS_SCHEMA};

#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct StatusState {
    pub(super) camera_lost: bool,
    pub(super) detector_error: bool,
    pub(super) storage: &'static str,
    pub(super) tamper: bool,
    pub(super) attack: bool,
    pub(super) last_pad_score: Option<f64>,
    pub(super) last_alert: Option<AlertKind>,
    pub(super) key_id: String,
    pub(super) prev_analysis_errors: u64,
    pub(super) prev_seal_errors: u64,
}

pub(super) struct Publisher {
    pub(super) opts: SinkOptions,
    pub(super) client: AsyncClient,
    pub(super) link: Arc<Mutex<Link>>,
    pub(super) core: OutboxCore,
    pub(super) payloads: HashMap<u64, (Arc<[u8]>, Option<Instant>)>,
    pub(super) writer: std::sync::mpsc::Sender<WriterMsg>,
    pub(super) shared: Arc<Shared>,
    pub(super) status: StatusState,
    pub(super) stopping: Option<(Instant, oneshot::Sender<bool>)>,
    pub(super) stopped_acked: bool,
    pub(super) pubkey: [u8; 32],
}

impl Publisher {
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<TaskMsg>) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut attack_until: Option<Instant> = None;
        loop {
            tokio::select! {
                m = rx.recv() => {
                    let Some(m) = m else { break };
                    if let TaskMsg::AlertSeen { kind, .. } = &m {
                        if kind.is_attack() {
                            attack_until = Some(Instant::now() + self.opts.attack_hold);
                        }
                    }
                    self.handle(m);
                }
                _ = tick.tick() => {
                    if attack_until.is_some_and(|t| Instant::now() >= t) {
                        attack_until = None;
                        self.status.attack = false;
                        self.publish_status();
                    }
                    let acts = self.core.retry();
                    self.apply(acts);
                }
            }
            if self.finish_if_done() {
                break;
            }
        }
    }

    fn finish_if_done(&mut self) -> bool {
        let Some((deadline, _)) = &self.stopping else {
            return false;
        };
        let flushed = self.core.is_empty() && self.stopped_acked;
        if flushed || Instant::now() >= *deadline {
            if let Some((_, done)) = self.stopping.take() {
                let _ = self.client.try_disconnect();
                let _ = done.send(flushed);
            }
            return true;
        }
        false
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hand one publish to rumqttc, recording its tag. False when not connected or the request
    /// queue is full.
    fn publish(&self, topic: String, qos: QoS, retain: bool, payload: Vec<u8>, tag: Tag) -> bool {
        let mut l = self.lock();
        if !l.connected {
            return false;
        }
        match self.client.try_publish(topic, qos, retain, payload) {
            Ok(()) => {
                l.fifo.push_back(tag);
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "MQTT request queue full");
                false
            }
        }
    }

    fn handle(&mut self, m: TaskMsg) {
        match m {
            TaskMsg::Committed { seq, payload, t0 } => {
                self.payloads.insert(seq, (payload, t0));
                let acts = self.core.enqueue(seq);
                // `apply` stores the new `outbox_len`; only then does the alert leave
                // `writer_queued` (see `Shared::writer_queued`).
                self.apply(acts);
                self.shared.writer_queued.fetch_sub(1, Ordering::SeqCst);
            }
            TaskMsg::Net(Net::Connected) => {
                self.on_connected();
                let acts = self.core.connected();
                self.apply(acts);
            }
            TaskMsg::Net(Net::Disconnected) => self.core.disconnected(),
            TaskMsg::Net(Net::Acked(Tag::Alert(seq))) => {
                if let Some((_, Some(t0))) = self.payloads.get(&seq) {
                    if self.opts.record_latency {
                        let ms = t0.elapsed().as_secs_f32() * 1000.0;
                        self.shared
                            .latencies_ms
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(ms);
                    }
                }
                let acts = self.core.acked(seq);
                if acts.contains(&Action::Delete(seq)) {
                    self.shared.acked.fetch_add(1, Ordering::SeqCst);
                }
                self.apply(acts);
            }
            TaskMsg::Net(Net::Acked(Tag::Stopped)) => self.stopped_acked = true,
            TaskMsg::FlushAck(tx) => {
                let _ = tx.send(());
            }
            TaskMsg::Net(Net::Acked(Tag::Other)) => {}
            TaskMsg::Stats(s) => self.on_stats(&s),
            TaskMsg::Camera(ev) => {
                match ev {
                    CaptureEvent::CameraLost { .. } => self.status.camera_lost = true,
                    CaptureEvent::CameraRestored { .. } => self.status.camera_lost = false,
                    _ => return,
                }
                self.publish_status();
            }
            TaskMsg::Sealed(s) => {
                if self.opts.publish_captures {
                    let p = json!({
                        "schema": CAPTURE_SCHEMA,
                        "device_id": self.opts.device_id,
                        "chain_seq": s.chain_seq,
                        "frame_seq": s.frame_seq,
                        "manifest_sha256": s.manifest_sha256,
                        "image_sha256": s.image_sha256,
                    });
                    self.publish(
                        self.opts.topic("capture"),
                        QoS::AtMostOnce,
                        false,
                        p.to_string().into_bytes(),
                        Tag::Other,
                    );
                }
            }
            TaskMsg::AlertSeen { kind, score } => {
                match kind {
                    AlertKind::PresentationAttack => {
                        self.status.attack = true;
                        if let Some(s) = score.filter(|s| s.is_finite()) {
                            self.status.last_pad_score =
                                Some((s as f64 * 10_000.0).round() / 10_000.0);
                        }
                    }
                    AlertKind::DeepfakeSuspected | AlertKind::ChallengeFailed => {
                        self.status.attack = true
                    }
                    AlertKind::Tamper => self.status.tamper = true,
                    AlertKind::StorageFull => self.status.storage = "full",
                    AlertKind::DetectorError => self.status.detector_error = true,
                    // Camera-trust alerts show in `last_alert` only (no status field yet).
                    AlertKind::MultipleFaces
                    | AlertKind::CameraLost
                    | AlertKind::CameraRestored
                    | AlertKind::CameraChanged
                    | AlertKind::InjectionSuspected
                    | AlertKind::StreamAnomaly => {}
                }
                self.status.last_alert = Some(kind);
                self.publish_status();
            }
            TaskMsg::Shutdown { deadline, done } => {
                self.stopped_acked = false;
                self.stopping = Some((deadline, done));
                self.publish_stopped();
            }
        }
    }

    fn publish_stopped(&mut self) {
        self.publish(
            self.opts.topic("available"),
            QoS::AtLeastOnce,
            true,
            b"stopped".to_vec(),
            Tag::Stopped,
        );
    }

    pub(super) fn apply(&mut self, acts: Vec<Action>) {
        for a in acts {
            match a {
                Action::Publish(seq) => {
                    let Some((p, _)) = self.payloads.get(&seq) else {
                        continue;
                    };
                    let p = p.to_vec();
                    if !self.publish(
                        self.opts.topic("alert"),
                        QoS::AtLeastOnce,
                        false,
                        p,
                        Tag::Alert(seq),
                    ) {
                        self.core.publish_failed(seq);
                    }
                }
                Action::Delete(seq) => {
                    self.payloads.remove(&seq);
                    let _ = self.writer.send(WriterMsg::Delete(seq));
                }
                Action::Evict(seq) => {
                    self.payloads.remove(&seq);
                    self.shared.evicted.fetch_add(1, Ordering::SeqCst);
                    tracing::warn!(seq, "outbox full: oldest alert evicted unpublished");
                    let _ = self.writer.send(WriterMsg::Delete(seq));
                }
            }
        }
        self.shared
            .outbox_len
            .store(self.core.len(), Ordering::SeqCst);
    }

    fn on_connected(&mut self) {
        let t = |l: &str| self.opts.topic(l);
        self.publish(
            t("available"),
            QoS::AtLeastOnce,
            true,
            b"online".to_vec(),
            Tag::Other,
        );
        if self.stopping.is_some() {
            self.publish_stopped();
        }
        self.publish_pubkey();
        self.publish_status();
        if self.opts.ha_discovery {
            for (topic, cfg) in ha_discovery(&self.opts) {
                self.publish(
                    topic,
                    QoS::AtLeastOnce,
                    true,
                    cfg.to_string().into_bytes(),
                    Tag::Other,
                );
            }
        }
    }

    fn publish_pubkey(&mut self) {
        if self.status.key_id.is_empty() {
            return;
        }
        let p = json!({
            "schema": PUBKEY_SCHEMA,
            "device_id": self.opts.device_id,
            "alg": "Ed25519",
            "key_id": self.status.key_id,
            "public_key_pem": alert::public_key_pem(&self.pubkey),
        });
        self.publish(
            self.opts.topic("pubkey"),
            QoS::AtLeastOnce,
            true,
            p.to_string().into_bytes(),
            Tag::Other,
        );
    }

    fn status_json(&self) -> serde_json::Value {
        let s = &self.status;
        json!({
            "schema": STATUS_SCHEMA,
            "device_id": self.opts.device_id,
            "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "camera": if s.camera_lost { "lost" } else { "ok" },
            "detector": if s.detector_error { "error" } else { "ok" },
            "storage": if s.storage.is_empty() { "ok" } else { s.storage },
            "key": { "state": if s.key_id.is_empty() { "missing" } else { "loaded" }, "key_id": s.key_id },
            "tamper": s.tamper,
            "attack": s.attack,
            "last_pad_score": s.last_pad_score,
            "last_alert": s.last_alert,
            "outbox": {
                "pending": self.core.len(),
                "evicted": self.shared.evicted.load(Ordering::Relaxed),
                "dropped": self.shared.dropped_alerts.load(Ordering::Relaxed),
            },
        })
    }

    fn publish_status(&mut self) {
        let p = self.status_json().to_string().into_bytes();
        self.publish(
            self.opts.topic("status"),
            QoS::AtLeastOnce,
            true,
            p,
            Tag::Other,
        );
    }

    fn on_stats(&mut self, s: &StatsSnapshot) {
        let before = self.status.clone();
        self.status.detector_error = s.analysis_errors > self.status.prev_analysis_errors;
        if s.seal_errors > self.status.prev_seal_errors {
            self.status.storage = "error";
        } else if self.status.storage == "error" {
            self.status.storage = "";
        }
        self.status.prev_analysis_errors = s.analysis_errors;
        self.status.prev_seal_errors = s.seal_errors;
        let mut v = serde_json::to_value(s).unwrap_or_else(|_| json!({}));
        if let Some(m) = v.as_object_mut() {
            m.insert("schema".into(), json!(STATS_SCHEMA));
            m.insert("device_id".into(), json!(self.opts.device_id));
            m.insert(
                "time".into(),
                json!(humantime::format_rfc3339_millis(SystemTime::now()).to_string()),
            );
            m.insert(
                "outbox".into(),
                json!({
                    "pending": self.core.len(),
                    "evicted": self.shared.evicted.load(Ordering::Relaxed),
                    "dropped": self.shared.dropped_alerts.load(Ordering::Relaxed),
                    "acked": self.shared.acked.load(Ordering::Relaxed),
                }),
            );
            m.insert(
                "events_dropped".into(),
                json!(self.shared.dropped_events.load(Ordering::Relaxed)),
            );
        }
        self.publish(
            self.opts.topic("stats"),
            QoS::AtMostOnce,
            false,
            v.to_string().into_bytes(),
            Tag::Other,
        );
        let changed = before.detector_error != self.status.detector_error
            || before.storage != self.status.storage;
        if changed {
            self.publish_status();
        }
    }
}

impl Publisher {
    /// Set the signer identity shown in `status` and `pubkey`.
    pub(super) fn set_key(&mut self, pk: [u8; 32]) {
        self.pubkey = pk;
        self.status.key_id = alert::key_id_of(&pk);
    }
}
