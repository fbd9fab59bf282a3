//! `veriframe watch` and `veriframe bench-outbox`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event as MqEvent, Packet, QoS};

use super::Outcome;
use veriframe::alert::AlertRequest;
use veriframe::publish::alert::{self, SigCheck};
use veriframe::publish::mqtt::connection::{self, ConnectOptions};
use veriframe::publish::mqtt::sink::MqttSink;
use veriframe::publish::mqtt::SinkOptions;
use veriframe::publish::{Event, EventSink, MqttConfig, PublishError};

/// TLS and credential options shared by the client subcommands.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// CA certificate (PEM) for mqtts://; default: system roots.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    #[arg(long)]
    pub username: Option<String>,
    #[arg(long, env = "VERIFRAME_MQTT_PASSWORD")]
    pub password: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Broker URL, `mqtt://host:port` or `mqtts://host:port`.
    #[arg(long)]
    pub broker: String,
    /// Device public key (PEM `PUBLIC KEY`, e.g. the key file's `.pub`) to check alert signatures
    /// against. Without it signatures are shown as unverified.
    #[arg(long)]
    pub pubkey: Option<PathBuf>,
    /// Topic filter to subscribe to.
    #[arg(long, default_value = "veriframe/+/alert")]
    pub topic: String,
    /// Print one JSON object per alert instead of a line of text.
    #[arg(long)]
    pub json: bool,
    /// Exit after this many alerts.
    #[arg(long)]
    pub count: Option<u64>,
    /// Exit after this long (e.g. `30s`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Client id. With `--persistent`, the broker keeps the session (and queues QoS 1 alerts)
    /// while this watcher is away.
    #[arg(long)]
    pub client_id: Option<String>,
    #[arg(long, requires = "client_id")]
    pub persistent: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn connect_options(
    broker: &str,
    client_id: String,
    c: &ClientArgs,
) -> Result<ConnectOptions, PublishError> {
    Ok(ConnectOptions {
        broker: connection::parse_broker(broker)?,
        client_id,
        username: c.username.clone(),
        password: c.password.clone(),
        ca_file: c.ca_file.clone(),
        client_cert: c.client_cert.clone(),
        client_key: c.client_key.clone(),
        keep_alive: Duration::from_secs(30),
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, PublishError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| PublishError::Io(format!("starting async runtime: {e}")))
}

/// `veriframe watch`: subscribe, verify, print. Exit 1 when any alert had a bad signature or was
/// malformed.
pub fn watch(args: &WatchArgs) -> Result<Outcome, PublishError> {
    connection::install_crypto_provider();
    let pubkey = match &args.pubkey {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| PublishError::Key(format!("{}: {e}", p.display())))?;
            Some(alert::parse_public_key_pem(&text)?)
        }
        None => None,
    };
    let client_id = args
        .client_id
        .clone()
        .unwrap_or_else(|| format!("veriframe-watch-{}", &alert::new_id()[..8]));
    let co = connect_options(&args.broker, client_id, &args.client)?;
    let mut opts = connection::mqtt_options(&co, None)?;
    opts.set_clean_session(!args.persistent);
    runtime()?.block_on(async move {
        let (client, mut el) = AsyncClient::new(opts, 64);
        let end = args.timeout.map(|t| Instant::now() + t);
        let (mut seen, mut bad, mut failures) = (0u64, 0u64, 0u32);
        loop {
            if args.count.is_some_and(|n| seen >= n) {
                break;
            }
            let ev = match end {
                Some(e) => match tokio::time::timeout_at(e.into(), el.poll()).await {
                    Ok(r) => r,
                    Err(_) => break,
                },
                None => el.poll().await,
            };
            match ev {
                Ok(MqEvent::Incoming(Packet::ConnAck(_))) => {
                    failures = 0;
                    client
                        .subscribe(&args.topic, QoS::AtLeastOnce)
                        .await
                        .map_err(|e| PublishError::Connect(e.to_string()))?;
                }
                Ok(MqEvent::Incoming(Packet::Publish(p))) => {
                    seen += 1;
                    if !print_alert(&p.topic, &p.payload, pubkey.as_ref(), args.json) {
                        bad += 1;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let why = connection::describe(&e);
                    if connection::is_config_error(&e) {
                        return Err(PublishError::Connect(why));
                    }
                    eprintln!("veriframe watch: {why}; retrying");
                    let d = connection::backoff(
                        failures,
                        Duration::from_millis(250),
                        Duration::from_secs(10),
                        rand::random(),
                    );
                    failures += 1;
                    tokio::time::sleep(d).await;
                }
            }
        }
        let _ = client.try_disconnect();
        Ok(if bad > 0 {
            Outcome::CheckFailed
        } else {
            Outcome::Ok
        })
    })
}

/// Print one received alert; false when it is malformed or its signature is bad.
fn print_alert(topic: &str, payload: &[u8], pubkey: Option<&[u8; 32]>, json: bool) -> bool {
    match alert::verify(payload, pubkey) {
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"check": "malformed", "topic": topic, "error": e.to_string()})
                );
            } else {
                println!("MALFORMED {topic}: {e}");
            }
            false
        }
        Ok(r) => {
            let (label, ok) = match r.check {
                SigCheck::Valid => ("valid", true),
                SigCheck::Bad => ("bad_signature", false),
                SigCheck::Unchecked => ("unverified", true),
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({"check": label, "topic": topic, "key_id": r.key_id, "alert": r.alert})
                );
            } else {
                let a = &r.alert;
                let tag = match r.check {
                    SigCheck::Valid => "OK        ",
                    SigCheck::Bad => "BAD-SIG!! ",
                    SigCheck::Unchecked => "UNVERIFIED",
                };
                println!(
                    "{tag} {} {} {} {} id={} frames={}..{} score={} evidence={}{}",
                    a.time,
                    a.device_id,
                    a.kind,
                    a.severity,
                    a.id,
                    a.first_seq,
                    a.last_seq,
                    a.score.map_or("-".into(), |s| s.to_string()),
                    a.evidence.as_deref().unwrap_or("-"),
                    if a.detail.is_empty() {
                        String::new()
                    } else {
                        format!(" detail={:?}", a.detail)
                    }
                );
            }
            ok
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct BenchOutboxArgs {
    /// Broker URL, `mqtt://host:port` or `mqtts://host:port`.
    #[arg(long)]
    pub broker: String,
    /// Alerts to send. 0: only deliver what an existing outbox (`--data-dir`) holds.
    #[arg(long, default_value_t = 1000)]
    pub n: u64,
    /// Alerts per second (0: as fast as the outbox takes them).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Directory for the outbox and the bench key (kept). Default: a temporary directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Device id used in topics (`veriframe/<id>/alert`).
    #[arg(long, default_value = "bench")]
    pub device_id: String,
    /// Give up waiting for PUBACKs after this long.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `veriframe bench-outbox`: alerts per second through the durable outbox to a broker, and
/// enqueue-to-PUBACK latency.
pub fn bench_outbox(args: &BenchOutboxArgs) -> Result<Outcome, PublishError> {
    let tmp;
    let dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            tmp = TempDir::new()?;
            tmp.0.clone()
        }
    };
    let cfg = MqttConfig {
        broker: Some(args.broker.clone()),
        username: args.client.username.clone(),
        password: args.client.password.clone(),
        ca_file: args.client.ca_file.clone(),
        client_cert: args.client.client_cert.clone(),
        client_key: args.client.client_key.clone(),
        ha_discovery: false,
        reconnect_initial: Duration::from_millis(100),
        reconnect_max: Duration::from_secs(2),
        outbox_capacity: 1_000_000,
        ..MqttConfig::default()
    };
    let mut opts = SinkOptions::new(&cfg, &args.device_id, &dir)?;
    opts.record_latency = true;
    let signer = Arc::new(
        veriframe::seal::keys::load_or_create(&dir.join("bench.key"))
            .map_err(|e| PublishError::Key(e.to_string()))?
            .0,
    );
    runtime()?.block_on(async move {
        let sink = MqttSink::start(opts, signer)?;
        // Alerts left on disk by an earlier (killed) run, counted before any is acknowledged.
        let backlog = sink.outbox_len();
        let start = Instant::now();
        while !sink.is_connected() {
            if start.elapsed() > args.timeout {
                return Err(PublishError::Connect(sink.last_error().unwrap_or_else(|| {
                    "no connection to the broker before the timeout".into()
                })));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let t0 = Instant::now();
        for i in 0..args.n {
            if args.rate > 0.0 {
                let due = t0 + Duration::from_secs_f64(i as f64 / args.rate);
                tokio::time::sleep_until(due.into()).await;
            }
            while sink.writer_backlog() > 2048 {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            sink.send(Event::Alert(AlertRequest::synthetic(i, 0.97)));
        }
        let done = sink.wait_empty(args.timeout).await;
        let secs = t0.elapsed().as_secs_f64();
        sink.close(Duration::from_secs(2)).await;
        let mut lat = sink.take_latencies_ms();
        let (p50, p99) = veriframe::stats::percentiles(&mut lat).unwrap_or((f32::NAN, f32::NAN));
        let rate = args.n as f64 / secs;
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "n": args.n,
                    "redelivered_from_disk": backlog,
                    "acked": sink.acked(),
                    "all_acked": done,
                    "seconds": secs,
                    "alerts_per_s": rate,
                    "enqueue_to_puback_ms": {"p50": p50, "p99": p99, "samples": lat.len()},
                    "fsyncs_per_alert": sink.outbox_syncs() as f64 / args.n.max(1) as f64,
                    "target_rate": args.rate,
                })
            );
        } else {
            println!(
                "bench-outbox: {} alerts in {secs:.3} s = {rate:.0} alerts/s (durable, QoS 1); enqueue→PUBACK p50 {p50:.2} ms p99 {p99:.2} ms; {:.3} fsyncs per alert; redelivered from disk {backlog}; all acked: {done}",
                args.n,
                sink.outbox_syncs() as f64 / args.n.max(1) as f64
            );
        }
        Ok(if done { Outcome::Ok } else { Outcome::CheckFailed })
    })
}

/// A temporary directory removed on drop (no tempfile in non-dev dependencies).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, PublishError> {
        let p = std::env::temp_dir().join(format!("veriframe-bench-{}", alert::new_id()));
        std::fs::create_dir_all(&p)
            .map_err(|e| PublishError::Io(format!("{}: {e}", p.display())))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
