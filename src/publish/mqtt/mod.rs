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

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event as MqEvent, EventLoop, LastWill,
    MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport,
};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::alert;
use super::outbox::{Action, OutboxCore};
use super::store::Store;
use super::{AlertRequest, Event, EventSink, MqttConfig, PublishError};
use crate::alert::AlertKind;
use crate::capture::CaptureEvent;
use crate::seal::Signer;
use crate::stats::StatsSnapshot;

/// Schema ids of the non-alert payloads (docs/mqtt.md).
pub const STATUS_SCHEMA: &str = "veriframe.status/1";
pub const STATS_SCHEMA: &str = "veriframe.stats/1";
pub const CAPTURE_SCHEMA: &str = "veriframe.capture/1";
pub const PUBKEY_SCHEMA: &str = "veriframe.pubkey/1";

/// Alerts waiting for the outbox writer beyond which new ones are dropped (counted), so a stuck
/// disk never grows memory without bound.
const WRITER_QUEUE_MAX: usize = 4096;

/// Install the process-wide rustls crypto provider (ring). Idempotent.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Parse `mqtt://[user[:pass]@]host[:port]` or `mqtts://…` (default ports 1883 / 8883).
pub fn parse_broker(url: &str) -> Result<BrokerUrl, PublishError> {
    let bad = |why: &str| PublishError::BadBroker(format!("{url:?}: {why}"));
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else {
        return Err(bad("expected mqtt://HOST:PORT or mqtts://HOST:PORT"));
    };
    let rest = rest.trim_end_matches('/');
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (username, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((n, p)) => (Some(n.to_string()), Some(p.to_string())),
            None => (Some(u.to_string()), None),
        },
        None => (None, None),
    };
    let default_port = if tls { 8883 } else { 1883 };
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        // [v6]:port
        let (h, p) = h.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        let port = match p.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None => default_port,
        };
        (h.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad("bad port"))?),
            None => (hostport.to_string(), default_port),
        }
    };
    if host.is_empty() || host.contains('/') {
        return Err(bad("missing or invalid host"));
    }
    Ok(BrokerUrl {
        tls,
        host,
        port,
        username,
        password,
    })
}

/// Connection settings shared by the sink and `veriframe watch`.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub broker: BrokerUrl,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub keep_alive: Duration,
}

fn read_file(p: &std::path::Path) -> Result<Vec<u8>, PublishError> {
    std::fs::read(p).map_err(|e| PublishError::Tls(format!("{}: {e}", p.display())))
}

/// rustls client configuration: CA file or system roots, optional client certificate.
pub fn tls_config(o: &ConnectOptions) -> Result<rustls::ClientConfig, PublishError> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    match &o.ca_file {
        Some(ca) => {
            let pem = read_file(ca)?;
            let mut n = 0;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert =
                    cert.map_err(|e| PublishError::Tls(format!("{}: bad PEM: {e}", ca.display())))?;
                roots.add(cert).map_err(|e| {
                    PublishError::Tls(format!("{}: unusable CA certificate: {e}", ca.display()))
                })?;
                n += 1;
            }
            if n == 0 {
                return Err(PublishError::Tls(format!(
                    "{}: no CERTIFICATE in file",
                    ca.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "loading system root certificates");
            }
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(PublishError::Tls(
                    "no system root certificates found; set mqtt.ca_file".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PublishError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let cfg = match (&o.client_cert, &o.client_key) {
        (Some(c), Some(k)) => {
            let cpem = read_file(c)?;
            let certs: Vec<_> = rustls_pemfile::certs(&mut cpem.as_slice())
                .collect::<Result<_, _>>()
                .map_err(|e| PublishError::Tls(format!("{}: bad PEM: {e}", c.display())))?;
            if certs.is_empty() {
                return Err(PublishError::Tls(format!(
                    "{}: no CERTIFICATE in file",
                    c.display()
                )));
            }
            let kpem = read_file(k)?;
            let key = rustls_pemfile::private_key(&mut kpem.as_slice())
                .map_err(|e| PublishError::Tls(format!("{}: bad PEM: {e}", k.display())))?
                .ok_or_else(|| {
                    PublishError::Tls(format!("{}: no private key in file", k.display()))
                })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| PublishError::Tls(format!("client certificate: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(PublishError::Tls(
                "client_cert and client_key must be set together".into(),
            ))
        }
    };
    Ok(cfg)
}

/// rumqttc options for `o` (clean session; the will, when given, is retained QoS 1).
pub fn mqtt_options(
    o: &ConnectOptions,
    will: Option<(String, &'static str)>,
) -> Result<MqttOptions, PublishError> {
    let mut m = MqttOptions::new(o.client_id.clone(), o.broker.host.clone(), o.broker.port);
    m.set_keep_alive(o.keep_alive.max(Duration::from_secs(5)));
    m.set_clean_session(true);
    m.set_max_packet_size(256 * 1024, 256 * 1024);
    let user = o.username.clone().or_else(|| o.broker.username.clone());
    let pass = o.password.clone().or_else(|| o.broker.password.clone());
    if let Some(u) = user {
        m.set_credentials(u, pass.unwrap_or_default());
    }
    if let Some((topic, payload)) = will {
        m.set_last_will(LastWill::new(topic, payload, QoS::AtLeastOnce, true));
    }
    if o.broker.tls {
        let cfg = tls_config(o)?;
        m.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(cfg),
        )));
    }
    Ok(m)
}

/// A human-readable account of a connection error, naming the likely fix.
pub fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword) => {
            "broker refused the connection: bad user name or password (check mqtt.username / mqtt.password)".into()
        }
        ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized) => {
            "broker refused the connection: not authorized (bad user name or password, or not allowed by the broker; check mqtt.username / mqtt.password / client certificate)".into()
        }
        ConnectionError::ConnectionRefused(c) => format!("broker refused the connection: {c:?}"),
        ConnectionError::Tls(t) => format!(
            "TLS with the broker failed: {t} (check mqtt.ca_file, the broker's certificate name, client_cert/client_key)"
        ),
        ConnectionError::Io(io) => format!("cannot reach the broker: {io}"),
        other => format!("connection to the broker failed: {other}"),
    }
}

/// Whether an error is about credentials or certificates (retrying will not fix it).
pub fn is_config_error(e: &ConnectionError) -> bool {
    matches!(
        e,
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized
        ) | ConnectionError::Tls(_)
    )
}

/// Capped exponential backoff with jitter: `min(max, initial·2^attempt)` scaled into
/// `[50%, 100%]` by `jitter01` ∈ [0, 1).
pub fn backoff(attempt: u32, initial: Duration, max: Duration, jitter01: f64) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.min(20)).min(max);
    exp.mul_f64(0.5 + 0.5 * jitter01.clamp(0.0, 1.0))
}

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

enum Net {
    Connected,
    Acked(Tag),
    Disconnected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Other,
    Alert(u64),
    Stopped,
}

/// Packet-id bookkeeping shared by the publisher and the connection task.
#[derive(Debug, Default)]
struct Link {
    connected: bool,
    fifo: VecDeque<Tag>,
    pkids: HashMap<u16, Tag>,
}

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

async fn connection_loop(
    mut el: EventLoop,
    link: Arc<Mutex<Link>>,
    tx: mpsc::Sender<TaskMsg>,
    shared: Arc<Shared>,
    initial: Duration,
    max: Duration,
) {
    let mut failures = 0u32;
    loop {
        match el.poll().await {
            Ok(ev) => {
                let disconnect = matches!(ev, MqEvent::Outgoing(Outgoing::Disconnect));
                let msg = handle_event(&mut lock(&link), ev);
                if let Some(Net::Connected) = msg {
                    failures = 0;
                    shared.connected.store(true, Ordering::SeqCst);
                    shared.connects.fetch_add(1, Ordering::SeqCst);
                    tracing::info!("MQTT connected");
                }
                if let Some(m) = msg {
                    if tx.send(TaskMsg::Net(m)).await.is_err() {
                        return;
                    }
                }
                if disconnect {
                    let mut l = lock(&link);
                    l.connected = false;
                    shared.connected.store(false, Ordering::SeqCst);
                    return;
                }
            }
            Err(e) => {
                let acks = {
                    let mut l = lock(&link);
                    let evs: Vec<MqEvent> = el.state.events.drain(..).collect();
                    let acks: Vec<Net> = evs
                        .into_iter()
                        .filter_map(|ev| handle_event(&mut l, ev))
                        .filter(|m| matches!(m, Net::Acked(_)))
                        .collect();
                    l.connected = false;
                    el.clean();
                    el.pending.clear();
                    l.fifo.clear();
                    l.pkids.clear();
                    acks
                };
                shared.connected.store(false, Ordering::SeqCst);
                for a in acks {
                    if tx.send(TaskMsg::Net(a)).await.is_err() {
                        return;
                    }
                }
                if matches!(e, ConnectionError::RequestsDone) {
                    return;
                }
                let why = describe(&e);
                let changed = {
                    let mut le = shared.last_error.lock().unwrap_or_else(|e| e.into_inner());
                    let changed = le.as_deref() != Some(why.as_str());
                    *le = Some(why.clone());
                    changed
                };
                if is_config_error(&e) || changed {
                    tracing::error!("MQTT: {why}");
                } else {
                    tracing::debug!("MQTT: {why}");
                }
                if tx.send(TaskMsg::Net(Net::Disconnected)).await.is_err() {
                    return;
                }
                let d = backoff(failures, initial, max, rand::random::<f64>());
                failures = failures.saturating_add(1);
                tokio::time::sleep(d).await;
            }
        }
    }
}

fn lock(l: &Mutex<Link>) -> std::sync::MutexGuard<'_, Link> {
    // A poisoned lock only means another task panicked mid-update; the data is still usable.
    l.lock().unwrap_or_else(|e| e.into_inner())
}

fn handle_event(l: &mut Link, ev: MqEvent) -> Option<Net> {
    match ev {
        MqEvent::Incoming(Packet::ConnAck(_)) => {
            l.connected = true;
            l.fifo.clear();
            l.pkids.clear();
            Some(Net::Connected)
        }
        MqEvent::Outgoing(Outgoing::Publish(pkid)) => {
            let tag = l.fifo.pop_front().unwrap_or(Tag::Other);
            if pkid != 0 && tag != Tag::Other {
                l.pkids.insert(pkid, tag);
            }
            None
        }
        MqEvent::Incoming(Packet::PubAck(a)) => l.pkids.remove(&a.pkid).map(Net::Acked),
        _ => None,
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
struct StatusState {
    camera_lost: bool,
    detector_error: bool,
    storage: &'static str,
    tamper: bool,
    attack: bool,
    last_pad_score: Option<f64>,
    last_alert: Option<AlertKind>,
    key_id: String,
    prev_analysis_errors: u64,
    prev_seal_errors: u64,
}

struct Publisher {
    opts: SinkOptions,
    client: AsyncClient,
    link: Arc<Mutex<Link>>,
    core: OutboxCore,
    payloads: HashMap<u64, (Arc<[u8]>, Option<Instant>)>,
    writer: std::sync::mpsc::Sender<WriterMsg>,
    shared: Arc<Shared>,
    status: StatusState,
    stopping: Option<(Instant, oneshot::Sender<bool>)>,
    stopped_acked: bool,
    pubkey: [u8; 32],
}

impl Publisher {
    async fn run(mut self, mut rx: mpsc::Receiver<TaskMsg>) {
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
                    AlertKind::DeepfakeSuspected => self.status.attack = true,
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

    fn apply(&mut self, acts: Vec<Action>) {
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

/// Home Assistant discovery messages: (topic, retained config).
pub fn ha_discovery(o: &SinkOptions) -> Vec<(String, serde_json::Value)> {
    let dev = &o.device_id;
    let device = json!({
        "identifiers": [format!("veriframe_{dev}")],
        "name": dev,
        "manufacturer": "Veriframe",
        "model": "capture point",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let avail = json!([{
        "topic": o.topic("available"),
        "payload_available": "online",
        "payload_not_available": "offline",
        "value_template": "{{ 'online' if value == 'online' else 'offline' }}",
    }]);
    let mk = |component: &str, object: &str, mut cfg: serde_json::Value| {
        if let Some(m) = cfg.as_object_mut() {
            m.insert(
                "unique_id".into(),
                json!(format!("veriframe_{dev}_{object}")),
            );
            m.insert(
                "object_id".into(),
                json!(format!("veriframe_{dev}_{object}")),
            );
            m.insert("device".into(), device.clone());
            m.insert("availability".into(), avail.clone());
        }
        (
            format!("{}/{component}/{dev}/{object}/config", o.ha_prefix),
            cfg,
        )
    };
    vec![
        mk(
            "binary_sensor",
            "attack",
            json!({
                "name": "Attack detected",
                "device_class": "safety",
                "state_topic": o.topic("status"),
                "value_template": "{{ 'ON' if value_json.attack else 'OFF' }}",
            }),
        ),
        mk(
            "binary_sensor",
            "camera",
            json!({
                "name": "Camera",
                "device_class": "connectivity",
                "state_topic": o.topic("status"),
                "value_template": "{{ 'ON' if value_json.camera == 'ok' else 'OFF' }}",
            }),
        ),
        mk(
            "sensor",
            "fps",
            json!({
                "name": "Frame rate",
                "unit_of_measurement": "fps",
                "state_class": "measurement",
                "state_topic": o.topic("stats"),
                "value_template": "{{ value_json.fps | round(1) }}",
            }),
        ),
        mk(
            "sensor",
            "pad_score",
            json!({
                "name": "Last PAD score",
                "state_class": "measurement",
                "state_topic": o.topic("status"),
                "value_template": "{{ value_json.last_pad_score if value_json.last_pad_score is not none else 'unknown' }}",
            }),
        ),
    ]
}

impl Publisher {
    /// Set the signer identity shown in `status` and `pubkey`.
    fn set_key(&mut self, pk: [u8; 32]) {
        self.pubkey = pk;
        self.status.key_id = alert::key_id_of(&pk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let b = parse_broker("mqtt://localhost:1884").unwrap();
        assert_eq!((b.tls, b.host.as_str(), b.port), (false, "localhost", 1884));
        let b = parse_broker("mqtts://u:p@broker.example").unwrap();
        assert_eq!((b.tls, b.port), (true, 8883));
        assert_eq!(b.username.as_deref(), Some("u"));
        assert_eq!(b.password.as_deref(), Some("p"));
        assert_eq!(parse_broker("mqtt://[::1]:99").unwrap().host, "::1");
        assert!(parse_broker("http://x").is_err());
        assert!(parse_broker("mqtt://:1").is_err());
        assert!(parse_broker("mqtt://h:notaport").is_err());
    }

    #[test]
    fn backoff_is_capped_exponential_with_jitter() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(backoff(0, i, m, 0.999_999).as_millis(), 99);
        assert_eq!(backoff(0, i, m, 0.0).as_millis(), 50);
        assert_eq!(backoff(3, i, m, 0.0).as_millis(), 400);
        assert_eq!(backoff(30, i, m, 0.0), Duration::from_millis(2500));
        assert!(backoff(30, i, m, 0.99) <= m);
    }

    #[test]
    fn pkid_bookkeeping_maps_pubacks_to_alerts() {
        let mut l = Link::default();
        assert!(matches!(
            handle_event(
                &mut l,
                MqEvent::Incoming(Packet::ConnAck(rumqttc::ConnAck::new(
                    ConnectReturnCode::Success,
                    false
                )))
            ),
            Some(Net::Connected)
        ));
        l.fifo.extend([Tag::Other, Tag::Alert(7), Tag::Alert(8)]);
        handle_event(&mut l, MqEvent::Outgoing(Outgoing::Publish(0))); // QoS 0 status
        handle_event(&mut l, MqEvent::Outgoing(Outgoing::Publish(1)));
        handle_event(&mut l, MqEvent::Outgoing(Outgoing::Publish(2)));
        let ack = |p| MqEvent::Incoming(Packet::PubAck(rumqttc::PubAck::new(p)));
        assert!(matches!(
            handle_event(&mut l, ack(2)),
            Some(Net::Acked(Tag::Alert(8)))
        ));
        assert!(matches!(
            handle_event(&mut l, ack(1)),
            Some(Net::Acked(Tag::Alert(7)))
        ));
        assert!(handle_event(&mut l, ack(1)).is_none());
    }

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
