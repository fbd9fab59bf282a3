//! The MQTT sink against a real mosquitto (started here on an ephemeral loopback port): every
//! message kind and its schema, broker restarts while alerts flow, TLS with a client certificate,
//! refused credentials.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::mqtt::{alert_ids, Broker, Collector};
use veriframe::alert::AlertRequest;
use veriframe::alert::ModelId;
use veriframe::alert::{AlertKind, Severity};
use veriframe::capture::CaptureEvent;
use veriframe::publish::alert::{self, Alert, SigCheck};
use veriframe::publish::mqtt::sink::MqttSink;
use veriframe::publish::mqtt::SinkOptions;
use veriframe::publish::{Event, EventSink, MqttConfig};
use veriframe::record::Signer;
use veriframe::seal::keys::DeviceKey;
use veriframe::seal::Sealed;
use veriframe::stats::Stats;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn cfg(url: &str) -> MqttConfig {
    MqttConfig {
        broker: Some(url.into()),
        reconnect_initial: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(400),
        ..MqttConfig::default()
    }
}

fn req(kind: AlertKind, seq: u64) -> AlertRequest {
    AlertRequest {
        kind,
        severity: Severity::Critical,
        first_seq: seq,
        last_seq: seq + 2,
        score: Some(0.1234),
        models: vec![ModelId {
            name: "minifasnet-v2".into(),
            weights_sha256: "ab".repeat(32),
        }],
        evidence: Some("cd".repeat(32)),
        detail: String::new(),
    }
}

#[test]
fn every_message_kind_is_delivered_with_its_schema() {
    if !common::mqtt::have_mosquitto() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (broker, sub) = common::mqtt::broker_and_subscriber(dir.path(), "#", "schema-sub", false);

    let rt = runtime();
    let _enter = rt.enter();
    let signer = Arc::new(DeviceKey::generate().unwrap().0);
    let mut c = cfg(&broker.url());
    c.publish_captures = true;
    let opts = SinkOptions::new(&c, "booth-1", dir.path()).unwrap();
    let sink = MqttSink::start(opts, signer.clone()).unwrap();

    let mut n = 0;
    for k in AlertKind::ALL
        .into_iter()
        .filter(|k| !matches!(k.as_str(), "camera_lost" | "camera_restored"))
    {
        sink.send(Event::Alert(req(k, n)));
        n += 10;
    }
    sink.send(Event::Capture(CaptureEvent::CameraLost {
        path: "/dev/video0".into(),
        reason: "ENODEV".into(),
    }));
    sink.send(Event::Capture(CaptureEvent::CameraRestored {
        path: "/dev/video0".into(),
        after_ms: 1200,
    }));
    // Not an alert: skipped files are only logged.
    sink.send(Event::Capture(CaptureEvent::SkippedCorrupt {
        path: "x.jpg".into(),
        reason: "bad".into(),
    }));
    let msgs = sub.wait_for(Duration::from_secs(15), "all alert kinds", |m| {
        alert_ids(m).len() >= AlertKind::ALL.len()
            && m.iter().any(|x| x.topic.ends_with("/pubkey"))
            && m.iter()
                .filter(|x| x.topic.starts_with("homeassistant/"))
                .count()
                >= 4
    });
    // Stats and a capture summary need a connection (QoS 0, not queued).
    sink.send(Event::Stats(Stats::new().snapshot()));
    sink.send(Event::Sealed(Sealed {
        chain_seq: 7,
        frame_seq: 99,
        manifest_sha256: "ee".repeat(32),
        image_sha256: "ff".repeat(32),
        path: "captures/7.json".into(),
    }));
    let msgs2 = sub.wait_for(Duration::from_secs(10), "stats and capture", |m| {
        m.iter().any(|x| x.topic.ends_with("/stats"))
            && m.iter().any(|x| x.topic.ends_with("/capture"))
    });
    assert!(msgs2.len() >= msgs.len());

    // Alerts: one of each kind, signed, schema-complete (deny_unknown_fields), unique ids.
    let mut kinds = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for m in msgs2
        .iter()
        .filter(|m| m.topic == "veriframe/booth-1/alert")
    {
        assert!(!m.retain);
        let r = alert::verify(&m.payload, Some(&signer.public_key())).unwrap();
        assert_eq!(
            r.check,
            SigCheck::Valid,
            "{}",
            String::from_utf8_lossy(&m.payload)
        );
        assert_eq!(r.key_id, signer.key_id());
        let a: Alert = r.alert;
        assert_eq!(a.schema, "veriframe.alert/1");
        assert_eq!(a.device_id, "booth-1");
        assert!(humantime::parse_rfc3339(&a.time).is_ok(), "{}", a.time);
        assert!(a.first_seq <= a.last_seq);
        if matches!(a.kind.as_str(), "camera_lost" | "camera_restored") {
            assert!(a.evidence.is_none() && a.score.is_none());
            assert!(a.detail.contains("/dev/video0"));
        } else {
            assert_eq!(a.score, Some(0.1234));
            assert_eq!(a.models[0].name, "minifasnet-v2");
            assert_eq!(a.evidence.as_deref(), Some("cd".repeat(32).as_str()));
        }
        // No image data: the payload is small and has no base64 blob beyond the signature.
        assert!(m.payload.len() < 1500, "{} bytes", m.payload.len());
        kinds.insert(a.kind);
        assert!(ids.insert(a.id));
    }
    assert_eq!(kinds, AlertKind::ALL.into_iter().collect());

    let last = |suffix: &str| {
        msgs2
            .iter()
            .rev()
            .find(|m| m.topic.ends_with(suffix))
            .unwrap_or_else(|| panic!("no {suffix}"))
            .clone()
    };
    let avail = last("/available");
    assert_eq!(avail.payload, b"online");
    let status = last("/status").json();
    assert_eq!(status["schema"], "veriframe.status/1");
    assert_eq!(status["camera"], "ok");
    assert_eq!(status["attack"], true);
    assert_eq!(status["last_pad_score"], 0.1234);
    assert_eq!(status["key"]["key_id"], signer.key_id().as_str());
    let pk = last("/pubkey").json();
    assert_eq!(pk["schema"], "veriframe.pubkey/1");
    assert_eq!(
        alert::parse_public_key_pem(pk["public_key_pem"].as_str().unwrap()).unwrap(),
        signer.public_key()
    );
    let stats = last("/stats").json();
    assert_eq!(stats["schema"], "veriframe.stats/1");
    assert!(stats["fps"].is_number() && stats["outbox"]["pending"].is_number());
    let cap = last("/capture").json();
    assert_eq!(cap["schema"], "veriframe.capture/1");
    assert_eq!(cap["chain_seq"], 7);
    assert_eq!(cap["manifest_sha256"], "ee".repeat(32).as_str());

    let ha: Vec<_> = msgs2
        .iter()
        .filter(|m| m.topic.starts_with("homeassistant/"))
        .collect();
    let ha_topics: BTreeSet<_> = ha.iter().map(|m| m.topic.as_str()).collect();
    for t in [
        "homeassistant/binary_sensor/booth-1/attack/config",
        "homeassistant/binary_sensor/booth-1/camera/config",
        "homeassistant/sensor/booth-1/fps/config",
        "homeassistant/sensor/booth-1/pad_score/config",
    ] {
        assert!(ha_topics.contains(t), "missing {t}");
    }
    for m in &ha {
        let v = m.json();
        assert_eq!(v["availability"][0]["topic"], "veriframe/booth-1/available");
        assert!(v["state_topic"]
            .as_str()
            .unwrap()
            .starts_with("veriframe/booth-1/"));
        assert!(v["unique_id"].is_string());
    }

    // A late subscriber gets the retained state: availability, status, pubkey, HA configs.
    let late = Collector::start(broker.port, "#", "late-sub", false);
    let retained = late.wait_for(Duration::from_secs(10), "retained messages", |m| {
        m.iter().filter(|x| x.retain).count() >= 7
    });
    let rt_topics: BTreeSet<_> = retained
        .iter()
        .filter(|m| m.retain)
        .map(|m| m.topic.clone())
        .collect();
    for t in ["available", "status", "pubkey"] {
        assert!(
            rt_topics.contains(&format!("veriframe/booth-1/{t}")),
            "{t} not retained"
        );
    }
    assert!(retained
        .iter()
        .filter(|m| m.topic.ends_with("/alert") || m.topic.ends_with("/stats"))
        .all(|m| !m.retain));

    // Clean shutdown: `stopped`, outbox flushed.
    assert!(rt.block_on(sink.close(Duration::from_secs(5))));
    sub.wait_for(Duration::from_secs(5), "stopped", |m| {
        m.iter()
            .rev()
            .find(|x| x.topic.ends_with("/available"))
            .is_some_and(|x| x.payload == b"stopped")
    });
}

#[test]
fn broker_restarts_while_alerts_flow_lose_nothing() {
    if !common::mqtt::have_mosquitto() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, sub) =
        common::mqtt::broker_and_subscriber(dir.path(), "veriframe/flow/alert", "flow-sub", true);

    let rt = runtime();
    let _enter = rt.enter();
    let signer = Arc::new(DeviceKey::generate().unwrap().0);
    let opts = SinkOptions::new(&cfg(&broker.url()), "flow", dir.path()).unwrap();
    let sink = Arc::new(MqttSink::start(opts, signer).unwrap());

    const N: u64 = 400;
    let producer = {
        let sink = sink.clone();
        std::thread::spawn(move || {
            for i in 0..N {
                sink.send(Event::Alert(req(AlertKind::PresentationAttack, i)));
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(350));
        broker.stop();
        std::thread::sleep(Duration::from_millis(300));
        broker.restart();
    }
    producer.join().unwrap();
    assert!(
        rt.block_on(sink.wait_empty(Duration::from_secs(30))),
        "outbox not drained: {} pending, last error {:?}",
        sink.outbox_len(),
        sink.last_error()
    );
    // At least one reconnect happened; restarts that fall inside one backoff wait are seen as
    // one outage, so the count is not exactly restarts + 1.
    assert!(sink.connects() >= 2, "connects = {}", sink.connects());
    let msgs = sub.wait_for(Duration::from_secs(20), "every alert", |m| {
        alert_ids(m)
            .iter()
            .map(|(_, s)| *s)
            .collect::<BTreeSet<_>>()
            .len()
            == N as usize
    });
    let got = alert_ids(&msgs);
    let seqs: BTreeSet<u64> = got.iter().map(|(_, s)| *s).collect();
    assert_eq!(seqs, (0..N).collect::<BTreeSet<_>>());
    // Duplicates (at-least-once) keep their id: one id per alert.
    let ids: BTreeSet<&str> = got.iter().map(|(i, _)| i.as_str()).collect();
    assert_eq!(ids.len(), N as usize);
}

#[test]
fn tls_with_ca_and_client_certificate() {
    if !common::mqtt::have_mosquitto() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    common::mqtt::make_pki(&pki);
    let p = |f: &str| pki.join(f);
    let broker = Broker::start_with(
        &dir.path().join("broker"),
        &format!(
            "allow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            p("ca.crt").display(),
            p("server.crt").display(),
            p("server.key").display()
        ),
    );
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let rt = runtime();
    let _enter = rt.enter();
    let signer = Arc::new(DeviceKey::generate().unwrap().0);

    let mut c = cfg(&url);
    c.ca_file = Some(p("ca.crt"));
    c.client_cert = Some(p("client.crt"));
    c.client_key = Some(p("client.key"));
    let sink = MqttSink::start(
        SinkOptions::new(&c, "tls", &dir.path().join("a")).unwrap(),
        signer.clone(),
    )
    .unwrap();
    sink.send(Event::Alert(req(AlertKind::Tamper, 1)));
    assert!(
        rt.block_on(sink.wait_empty(Duration::from_secs(15))),
        "not acknowledged over TLS: {:?}",
        sink.last_error()
    );
    assert_eq!(sink.acked(), 1);

    // A CA that did not sign the server certificate: a clear certificate error.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    common::mqtt::make_pki(&other);
    let mut bad = c.clone();
    bad.ca_file = Some(other.join("ca.crt"));
    let sink2 = MqttSink::start(
        SinkOptions::new(&bad, "tls2", &dir.path().join("b")).unwrap(),
        signer,
    )
    .unwrap();
    sink2.send(Event::Alert(req(AlertKind::Tamper, 2)));
    let err = wait_error(&sink2);
    assert!(
        err.contains("TLS") && err.contains("invalid peer certificate"),
        "unclear error: {err}"
    );
    assert_eq!(sink2.acked(), 0);
    assert_eq!(sink2.outbox_len(), 1);
}

fn wait_error(sink: &MqttSink) -> String {
    for _ in 0..500 {
        if let Some(e) = sink.last_error() {
            return e;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no connection error reported");
}

#[test]
fn wrong_password_gives_a_clear_error() {
    if !common::mqtt::have_mosquitto() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_with_password(&dir.path().join("broker"), "booth", "right-password");
    let rt = runtime();
    let _enter = rt.enter();
    let signer = Arc::new(DeviceKey::generate().unwrap().0);
    let mut c = cfg(&broker.url());
    c.username = Some("booth".into());
    c.password = Some("wrong-password".into());
    let sink = MqttSink::start(
        SinkOptions::new(&c, "pw", &dir.path().join("a")).unwrap(),
        signer.clone(),
    )
    .unwrap();
    sink.send(Event::Alert(req(AlertKind::Tamper, 1)));
    let err = wait_error(&sink);
    assert!(err.contains("bad user name or password"), "unclear: {err}");
    assert!(!sink.is_connected());

    // The right password works (and the same outbox code path delivers).
    c.password = Some("right-password".into());
    let ok = MqttSink::start(
        SinkOptions::new(&c, "pw", &dir.path().join("b")).unwrap(),
        signer,
    )
    .unwrap();
    ok.send(Event::Alert(req(AlertKind::Tamper, 1)));
    assert!(rt.block_on(ok.wait_empty(Duration::from_secs(10))));
}

/// `outbox_len` counts an alert from `send` until it is acknowledged, including while the writer
/// signs and fsyncs it and hands it to the task (it used to read 0 in that window). No broker
/// listens, so nothing is ever acknowledged: after the k-th `send` every reading is at least k.
#[test]
fn outbox_len_never_misses_an_alert_being_committed() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("mqtt://127.0.0.1:{}", common::mqtt::free_port());
    let rt = runtime();
    let _enter = rt.enter();
    let signer = Arc::new(DeviceKey::generate().unwrap().0);
    let sink = MqttSink::start(
        SinkOptions::new(&cfg(&url), "count", dir.path()).unwrap(),
        signer,
    )
    .unwrap();
    for k in 1..=20u64 {
        sink.send(Event::Alert(req(AlertKind::Tamper, k)));
        let until = std::time::Instant::now() + Duration::from_millis(30);
        while std::time::Instant::now() < until {
            let n = sink.outbox_len();
            assert!(n >= k as usize, "outbox_len {n} after {k} alerts");
        }
    }
    assert_eq!(sink.acked(), 0);
}
