//! Process-level MQTT tests with the built `veriframe` binary and a real mosquitto: the outbox
//! process SIGKILLed mid-stream and restarted loses no committed alert; the daemon's Last Will
//! (`offline`) on SIGKILL; `stopped`, status and stats from a daemon run; `watch` verifying and
//! flagging signatures; `watch` with a wrong password.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::mqtt::{alert_ids, Broker};
use veriframe::alert::AlertRequest;
use veriframe::alert::{AlertKind, Severity};
use veriframe::publish::alert;
use veriframe::publish::store::Store;
use veriframe::seal::keys::load_or_create;

const BIN: &str = env!("CARGO_BIN_EXE_veriframe");

fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start veriframe")
}

fn sigkill(c: &mut Child) {
    c.kill().unwrap();
    let _ = c.wait();
}

/// Alert sequence numbers (`first_seq`) still committed in an outbox directory.
fn committed_in(dir: &Path) -> Vec<u64> {
    let s = Store::open(dir).unwrap();
    s.entries()
        .map(|(_, p)| {
            let v: serde_json::Value = serde_json::from_slice(p).unwrap();
            v["alert"]["first_seq"].as_u64().unwrap()
        })
        .collect()
}

#[test]
fn outbox_process_sigkilled_mid_stream_loses_nothing() {
    if !common::mqtt::have_mosquitto() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (broker, sub) =
        common::mqtt::broker_and_subscriber(dir.path(), "veriframe/kill/alert", "kill-sub", true);
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    let url = broker.url();
    let args = [
        "bench-outbox",
        "--broker",
        &url,
        "--n",
        "5000",
        "--rate",
        "400",
        "--data-dir",
        data_s,
        "--device-id",
        "kill",
    ];
    let mut total_kills = 0;
    // Two kills mid-stream, each followed by a restart that sends more alerts.
    let mut child = spawn(&args);
    for _ in 0..2 {
        // Let some alerts through, then SIGKILL.
        let before = alert_ids(&sub.snapshot()).len();
        sub.wait_for(Duration::from_secs(30), "alerts flowing", |m| {
            alert_ids(m).len() >= before + 150
        });
        sigkill(&mut child);
        total_kills += 1;
        child = spawn(&args);
    }
    // Third run is killed too, then a final run with --n 0 only drains the outbox.
    std::thread::sleep(Duration::from_millis(500));
    sigkill(&mut child);
    let left = committed_in(&data.join("outbox"));
    let out = Command::new(BIN)
        .args([
            "bench-outbox",
            "--broker",
            &url,
            "--n",
            "0",
            "--data-dir",
            data_s,
            "--device-id",
            "kill",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "drain run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["redelivered_from_disk"].as_u64().unwrap(),
        left.len() as u64
    );
    assert!(committed_in(&data.join("outbox")).is_empty());
    assert_eq!(total_kills, 2);

    // Every alert committed before each kill reached the subscriber. Each run sends first_seq
    // 0,1,2,… and commits in order, so per run the committed set is a prefix; alert ids are
    // unique per run, so group by id and check that no committed first_seq is missing in any run.
    let msgs = sub.wait_for(Duration::from_secs(30), "left-over alerts", |m| {
        let got: BTreeSet<u64> = alert_ids(m).iter().map(|(_, s)| *s).collect();
        left.iter().all(|s| got.contains(s))
    });
    let got = alert_ids(&msgs);
    let ids: BTreeSet<&str> = got.iter().map(|(i, _)| i.as_str()).collect();
    // Runs restart first_seq at 0: count how many times each first_seq was delivered (distinct
    // ids). Run r delivered a prefix [0, k_r); so the count of distinct ids with first_seq = s is
    // non-increasing in s — a gap (a lost alert) would break it.
    let mut per_seq = std::collections::BTreeMap::<u64, BTreeSet<&str>>::new();
    for (id, s) in &got {
        per_seq.entry(*s).or_default().insert(id.as_str());
    }
    let max = *per_seq.keys().next_back().unwrap();
    let mut prev = usize::MAX;
    for s in 0..=max {
        let n = per_seq.get(&s).map_or(0, |v| v.len());
        assert!(n >= 1, "alert with first_seq {s} never delivered");
        assert!(
            n <= prev,
            "first_seq {s} delivered by more runs than {}: a gap",
            s - 1
        );
        prev = n;
    }
    assert!(
        ids.len() > 300,
        "too few alerts went through: {}",
        ids.len()
    );
}

fn daemon_config(dir: &Path, device: &str, url: &str) -> std::path::PathBuf {
    let p = dir.join(format!("{device}.toml"));
    std::fs::write(
        &p,
        format!(
            "device_id = \"{device}\"\ndata_dir = \"{}\"\n[pipeline]\nstats_interval = \"200ms\"\n[source]\nuri = \"synthetic\"\nfps = 20.0\n[mqtt]\nbroker = \"{url}\"\n",
            dir.join(device).display()
        ),
    )
    .unwrap();
    p
}

fn last_available(msgs: &[common::mqtt::Msg]) -> Option<Vec<u8>> {
    msgs.iter()
        .rev()
        .find(|m| m.topic.ends_with("/available"))
        .map(|m| m.payload.clone())
}

#[test]
fn daemon_killed_leaves_offline_via_last_will_and_clean_stop_says_stopped() {
    if !common::mqtt::have_mosquitto() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (broker, sub) =
        common::mqtt::broker_and_subscriber(dir.path(), "veriframe/#", "lwt-sub", false);

    // SIGKILL: the broker publishes the will.
    let conf = daemon_config(dir.path(), "lwt", &broker.url());
    let mut d = spawn(&["run", "-c", conf.to_str().unwrap()]);
    sub.wait_for(Duration::from_secs(30), "online + stats", |m| {
        last_available(m).as_deref() == Some(b"online")
            && m.iter().any(|x| x.topic == "veriframe/lwt/stats")
    });
    sigkill(&mut d);
    let msgs = sub.wait_for(Duration::from_secs(10), "offline (last will)", |m| {
        last_available(m).as_deref() == Some(b"offline")
    });
    assert!(msgs.iter().any(|m| m.topic == "veriframe/lwt/status"));
    let stats = msgs
        .iter()
        .rev()
        .find(|m| m.topic == "veriframe/lwt/stats")
        .unwrap()
        .json();
    assert_eq!(stats["device_id"], "lwt");
    assert!(stats["captured"].as_u64().unwrap() > 0);

    // SIGTERM: a clean stop publishes `stopped`; no will follows.
    let conf = daemon_config(dir.path(), "clean", &broker.url());
    let mut d = spawn(&["run", "-c", conf.to_str().unwrap()]);
    sub.wait_for(Duration::from_secs(30), "online", |m| {
        m.iter()
            .any(|x| x.topic == "veriframe/clean/available" && x.payload == b"online")
    });
    unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = d.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "daemon did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(500));
    let msgs = sub.snapshot();
    let clean: Vec<_> = msgs
        .iter()
        .filter(|m| m.topic == "veriframe/clean/available")
        .map(|m| String::from_utf8_lossy(&m.payload).to_string())
        .collect();
    assert_eq!(
        clean.last().map(String::as_str),
        Some("stopped"),
        "{clean:?}"
    );
    // The key was created under the data dir and its public half published.
    let pk = msgs
        .iter()
        .rev()
        .find(|m| m.topic == "veriframe/clean/pubkey")
        .unwrap()
        .json();
    let pem = std::fs::read_to_string(dir.path().join("clean").join("keys").join("device.key.pub"))
        .unwrap();
    assert_eq!(pk["public_key_pem"].as_str().unwrap(), pem);
}

#[test]
fn watch_verifies_and_flags_bad_signatures() {
    if !common::mqtt::have_mosquitto() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let key = dir.path().join("device.key");
    let signer = load_or_create(&key).unwrap().0;
    let pubf = dir.path().join("device.key.pub");
    // Persistent session so no alert published after the first connect is missed.
    let watch_args = [
        "watch",
        "--broker",
        &broker.url(),
        "--pubkey",
        pubf.to_str().unwrap(),
        "--json",
        "--count",
        "3",
        "--timeout",
        "30s",
        "--client-id",
        "w1",
        "--persistent",
    ];
    // First a short run to create the session, then the real one.
    let st = Command::new(BIN)
        .args([
            "watch",
            "--broker",
            &broker.url(),
            "--timeout",
            "1s",
            "--client-id",
            "w1",
            "--persistent",
        ])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );

    let req = AlertRequest {
        kind: AlertKind::DeepfakeSuspected,
        severity: Severity::Warning,
        first_seq: 5,
        last_seq: 9,
        score: Some(0.42),
        models: vec![],
        evidence: None,
        detail: String::new(),
    };
    let a = alert::build(&req, "w", std::time::SystemTime::now());
    let good = alert::sign(&a, &signer).unwrap();
    let tampered = String::from_utf8(good.clone())
        .unwrap()
        .replace("\"warning\"", "\"info\"");
    common::mqtt::publish(broker.port, "veriframe/w/alert", &good);
    common::mqtt::publish(broker.port, "veriframe/w/alert", tampered.as_bytes());
    common::mqtt::publish(broker.port, "veriframe/w/alert", b"not json");

    let out = Command::new(BIN).args(watch_args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let checks: Vec<&str> = lines.iter().map(|v| v["check"].as_str().unwrap()).collect();
    assert_eq!(checks, vec!["valid", "bad_signature", "malformed"]);
    assert_eq!(lines[0]["alert"]["id"], a.id.as_str());

    // Text output flags the bad one visibly.
    common::mqtt::publish(broker.port, "veriframe/w/alert", tampered.as_bytes());
    let out = Command::new(BIN)
        .args([
            "watch",
            "--broker",
            &broker.url(),
            "--pubkey",
            pubf.to_str().unwrap(),
            "--count",
            "1",
            "--timeout",
            "20s",
            "--client-id",
            "w1",
            "--persistent",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("BAD-SIG"));
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn watch_with_wrong_password_fails_clearly() {
    if !common::mqtt::have_mosquitto() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_with_password(&dir.path().join("broker"), "ops", "secret");
    let out = Command::new(BIN)
        .args([
            "watch",
            "--broker",
            &broker.url(),
            "--username",
            "ops",
            "--password",
            "nope",
            "--timeout",
            "20s",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("bad user name or password"), "{err}");
}
