//! The sink the pipeline sends to: [`MqttSink`] (the `EventSink`) and the outbox writer thread
//! (build, sign, append, group commit).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rumqttc::AsyncClient;
use tokio::sync::{mpsc, oneshot};

use crate::alert::AlertRequest;
use crate::capture::CaptureEvent;
use crate::publish::alert;
use crate::publish::outbox::OutboxCore;
use crate::publish::store::Store;
use crate::publish::{Event, EventSink, PublishError};
use crate::record::Signer;

use super::connection::{connection_loop, install_crypto_provider, mqtt_options, Link};
use super::publisher::{Publisher, StatusState};
use super::{Shared, SinkOptions, TaskMsg, WriterMsg};

/// Alerts waiting for the outbox writer beyond which new ones are dropped (counted), so a stuck
/// disk never grows memory without bound.
const WRITER_QUEUE_MAX: usize = 4096;

/// Publishes events to MQTT through the durable outbox.
pub struct MqttSink {
    writer: Mutex<std::sync::mpsc::Sender<WriterMsg>>,
    task: mpsc::Sender<TaskMsg>,
    shared: Arc<Shared>,
}

impl MqttSink {
    /// Open the outbox, start the writer thread and the MQTT tasks. Must run inside a tokio
    /// runtime.
    pub fn start(opts: SinkOptions, signer: Arc<dyn Signer>) -> Result<Self, PublishError> {
        install_crypto_provider();
        let store = Store::open(&opts.outbox_dir)?;
        let shared = Arc::new(Shared::default());
        let (task_tx, task_rx) = mpsc::channel(4096);
        let (writer_tx, writer_rx) = std::sync::mpsc::channel();

        let available = opts.topic("available");
        let mut mqtt_opts = mqtt_options(&opts.connect, Some((available, "offline")))?;
        let window = opts.window.max(1);
        mqtt_opts.set_inflight(window.saturating_add(64));
        let (client, eventloop) = AsyncClient::new(mqtt_opts, 1024);
        let link = Arc::new(Mutex::new(Link::default()));

        // Entries left from a previous run go first, in order.
        let mut core = OutboxCore::new(opts.outbox_capacity, window as usize);
        let mut payloads = HashMap::new();
        let mut actions = Vec::new();
        for (seq, p) in store.entries() {
            payloads.insert(seq, (Arc::<[u8]>::from(p), None));
            actions.extend(core.enqueue(seq));
        }
        if !store.is_empty() {
            tracing::info!(
                pending = store.len(),
                "outbox: redelivering alerts from before the restart"
            );
        }
        let next_seq = store.last_seq().map_or(1, |s| s + 1);
        let pk = signer.public_key();

        {
            let (tx, sh, dev) = (task_tx.clone(), shared.clone(), opts.device_id.clone());
            std::thread::Builder::new()
                .name("vf-outbox".into())
                .spawn(move || writer_loop(store, next_seq, writer_rx, tx, sh, signer, dev))
                .map_err(|e| PublishError::Thread(e.to_string()))?;
        }
        {
            let (l, tx, sh) = (link.clone(), task_tx.clone(), shared.clone());
            let (init, max) = (opts.reconnect_initial, opts.reconnect_max);
            tokio::spawn(connection_loop(eventloop, l, tx, sh, init, max));
        }
        let mut task = Publisher {
            status: StatusState::default(),
            opts,
            client,
            link,
            core,
            payloads,
            writer: writer_tx.clone(),
            shared: shared.clone(),
            stopping: None,
            stopped_acked: false,
            pubkey: [0; 32],
        };
        task.set_key(pk);
        task.apply(actions);
        Ok(Self {
            writer: Mutex::new(writer_tx),
            task: task_tx,
            shared,
        }
        .spawn_publisher(task, task_rx))
    }

    fn spawn_publisher(self, task: Publisher, rx: mpsc::Receiver<TaskMsg>) -> Self {
        tokio::spawn(task.run(rx));
        self
    }

    /// Whether the broker connection is up.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::SeqCst)
    }

    /// Number of successful connections so far.
    pub fn connects(&self) -> u64 {
        self.shared.connects.load(Ordering::SeqCst)
    }

    /// The last connection error, described.
    pub fn last_error(&self) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Alerts committed but not yet acknowledged.
    pub fn outbox_len(&self) -> usize {
        // `writer_queued` first: the task raises `outbox_len` before it lowers `writer_queued`,
        // so an alert moving between them is counted once or (briefly) twice, never not at all.
        let queued = self.shared.writer_queued.load(Ordering::SeqCst);
        self.shared.outbox_len.load(Ordering::SeqCst) + queued
    }

    /// Alerts handed to `send` that have not reached the outbox yet (being committed to disk
    /// included).
    pub fn writer_backlog(&self) -> usize {
        self.shared.writer_queued.load(Ordering::SeqCst)
    }

    /// fdatasyncs of the outbox log since start (bench-outbox's fsyncs per alert).
    pub fn outbox_syncs(&self) -> u64 {
        self.shared.outbox_syncs.load(Ordering::Relaxed)
    }

    /// Alerts acknowledged by the broker since start.
    pub fn acked(&self) -> u64 {
        self.shared.acked.load(Ordering::SeqCst)
    }

    /// Alerts evicted because the outbox was full.
    pub fn evicted(&self) -> u64 {
        self.shared.evicted.load(Ordering::SeqCst)
    }

    /// Enqueue-to-PUBACK latencies recorded so far (with `record_latency`), emptied.
    pub fn take_latencies_ms(&self) -> Vec<f32> {
        std::mem::take(
            &mut *self
                .shared
                .latencies_ms
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// Wait until every committed alert is acknowledged (or `timeout`). True when empty.
    pub async fn wait_empty(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.outbox_len() == 0
                && self.flush_writer(Duration::from_secs(1)).await
                && self.outbox_len() == 0
            {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn flush_writer(&self, timeout: Duration) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.writer_send(WriterMsg::Flush(tx)).is_err() {
            return false;
        }
        tokio::task::spawn_blocking(move || rx.recv_timeout(timeout).is_ok())
            .await
            .unwrap_or(false)
    }

    fn writer_send(&self, m: WriterMsg) -> Result<(), ()> {
        self.writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(m)
            .map_err(|_| ())
    }

    /// Publish `stopped`, flush the outbox until `timeout`, disconnect. True when everything
    /// committed was acknowledged.
    pub async fn close(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        // Commit what the writer holds first.
        self.flush_writer(timeout).await;
        let (tx, rx) = oneshot::channel();
        if self
            .task
            .send(TaskMsg::Shutdown { deadline, done: tx })
            .await
            .is_err()
        {
            return false;
        }
        let flushed = tokio::time::timeout(timeout + Duration::from_millis(500), rx)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        // Let the DISCONNECT reach the broker before the runtime goes away; otherwise the broker
        // would publish the Last Will (`offline`) over `stopped`.
        let end = Instant::now() + Duration::from_millis(500);
        while self.is_connected() && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        flushed
    }

    fn alert(&self, req: AlertRequest) {
        let sh = &self.shared;
        if sh.writer_queued.load(Ordering::SeqCst) >= WRITER_QUEUE_MAX {
            sh.dropped_alerts.fetch_add(1, Ordering::Relaxed);
            tracing::error!(kind = %req.kind, "outbox writer is stuck; alert dropped");
            return;
        }
        let seen = TaskMsg::AlertSeen {
            kind: req.kind,
            score: req.score,
        };
        sh.writer_queued.fetch_add(1, Ordering::SeqCst);
        let m = WriterMsg::Alert {
            req,
            at: SystemTime::now(),
            t0: Instant::now(),
        };
        if self.writer_send(m).is_err() {
            sh.writer_queued.fetch_sub(1, Ordering::SeqCst);
            sh.dropped_alerts.fetch_add(1, Ordering::Relaxed);
            tracing::error!("outbox writer has stopped; alert dropped");
        }
        self.try_task(seen);
    }

    fn try_task(&self, m: TaskMsg) {
        if self.task.try_send(m).is_err() {
            self.shared.dropped_events.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Alert request for a camera event, if it is one.
pub fn camera_alert(ev: &CaptureEvent, last_frame: u64) -> Option<AlertRequest> {
    ev.alert(last_frame)
}

impl EventSink for MqttSink {
    fn send(&self, event: Event) {
        match event {
            Event::Alert(a) => self.alert(a),
            Event::Capture(ev) => {
                let last = self.shared.last_frame.load(Ordering::Relaxed);
                if let Some(a) = camera_alert(&ev, last) {
                    self.alert(a);
                    self.try_task(TaskMsg::Camera(ev));
                }
            }
            Event::Stats(s) => {
                self.shared
                    .last_frame
                    .fetch_max(s.captured, Ordering::Relaxed);
                self.try_task(TaskMsg::Stats(Box::new(s)))
            }
            Event::Sealed(s) => {
                self.shared
                    .last_frame
                    .fetch_max(s.frame_seq, Ordering::Relaxed);
                self.try_task(TaskMsg::Sealed(Box::new(s)))
            }
        }
    }

    fn shutdown(
        &self,
        timeout: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            if !self.close(timeout).await {
                tracing::warn!(
                    pending = self.outbox_len(),
                    "MQTT outbox not flushed before the shutdown timeout; pending alerts stay on disk for the next start"
                );
            }
        })
    }
}

fn writer_loop(
    mut store: Store,
    mut seq: u64,
    rx: std::sync::mpsc::Receiver<WriterMsg>,
    task: mpsc::Sender<TaskMsg>,
    shared: Arc<Shared>,
    signer: Arc<dyn Signer>,
    device_id: String,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut committed = Vec::new();
        let mut flushes = Vec::new();
        for m in batch {
            match m {
                WriterMsg::Alert { req, at, t0 } => {
                    let a = alert::build(&req, &device_id, at);
                    let r = alert::sign(&a, signer.as_ref())
                        .and_then(|p| store.put(seq, &p).map(|()| p));
                    match r {
                        Ok(p) => {
                            committed.push((seq, p, t0));
                            seq += 1;
                        }
                        Err(e) => {
                            shared.writer_queued.fetch_sub(1, Ordering::SeqCst);
                            shared.dropped_alerts.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(error = %e, kind = %a.kind, id = %a.id, "cannot commit alert to the outbox");
                        }
                    }
                }
                WriterMsg::Delete(s) => {
                    if let Err(e) = store.delete(s) {
                        tracing::warn!(error = %e, "outbox delete failed");
                    }
                }
                WriterMsg::Flush(tx) => flushes.push(tx),
            }
        }
        // Group commit: one fdatasync for every alert of the batch. A batch of only `Del`s is not
        // synced (see `store`: a lost `Del` means one redelivery); the next sync covers it.
        if committed.is_empty() && flushes.is_empty() {
            continue;
        }
        if let Err(e) = store.sync() {
            // Still publish: an alert that is not durable beats an alert not sent.
            tracing::error!(error = %e, "outbox fsync failed");
        }
        shared.outbox_syncs.store(store.syncs(), Ordering::Relaxed);
        for (seq, p, t0) in committed {
            let m = TaskMsg::Committed {
                seq,
                payload: p.into(),
                t0: Some(t0),
            };
            if task.blocking_send(m).is_err() {
                return;
            }
        }
        for f in flushes {
            if task.blocking_send(TaskMsg::FlushAck(f)).is_err() {
                return;
            }
        }
    }
    let _ = store.sync();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_events_map_to_alerts() {
        let a = camera_alert(
            &CaptureEvent::CameraLost {
                path: "/dev/video0".into(),
                reason: "ENODEV".into(),
            },
            42,
        )
        .unwrap();
        assert_eq!((a.kind.as_str(), a.first_seq), ("camera_lost", 42));
        let a = camera_alert(
            &CaptureEvent::CameraRestored {
                path: "/dev/video0".into(),
                after_ms: 900,
            },
            43,
        )
        .unwrap();
        assert_eq!(a.kind, "camera_restored");
        assert!(camera_alert(&CaptureEvent::EndOfStream, 0).is_none());
    }
}
