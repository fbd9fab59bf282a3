//! Helpers for the MQTT integration tests: a real mosquitto on an ephemeral loopback port with a
//! generated config, and a subscriber that records what it receives.
//!
//! `common::mqtt` (tests/common/mod.rs).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// Whether mosquitto is installed; tests print `skipped:` and return when it is not (CI installs
/// it, and sets VERIFRAME_REQUIRE_MOSQUITTO to make its absence a failure).
pub fn have_mosquitto() -> bool {
    let found = Path::new(MOSQUITTO).exists()
        || Command::new("mosquitto")
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
    if !found {
        if std::env::var_os("VERIFRAME_REQUIRE_MOSQUITTO").is_some() {
            panic!("mosquitto is required but not installed");
        }
        eprintln!("skipped: missing mosquitto");
    }
    found
}

fn mosquitto_bin() -> &'static str {
    if Path::new(MOSQUITTO).exists() {
        MOSQUITTO
    } else {
        "mosquitto"
    }
}

/// The user mosquitto should run as: ourselves (as root it would otherwise switch to `mosquitto`
/// and lose access to the test's private temporary directory).
fn current_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            // SAFETY: getuid has no preconditions.
            if unsafe { libc::getuid() } == 0 {
                "root".into()
            } else {
                "nobody".into()
            }
        })
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A mosquitto process with its own config, persistence and log under `dir`.
pub struct Broker {
    pub port: u16,
    pub dir: PathBuf,
    conf: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// Plain listener, anonymous access, persistence on.
    pub fn start(dir: &Path) -> Broker {
        Self::start_with(dir, "allow_anonymous true\n")
    }

    /// Listener with `extra` config lines (auth, TLS…).
    pub fn start_with(dir: &Path, extra: &str) -> Broker {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        let text = format!(
            "user {}\nlistener {port} 127.0.0.1\n{extra}persistence true\npersistence_location {}/\nautosave_interval 1\nlog_dest file {}\nlog_type all\nmax_queued_messages 100000\n",
            current_user(),
            dir.display(),
            dir.join("mosquitto.log").display()
        );
        std::fs::write(&conf, text).unwrap();
        let mut b = Broker {
            port,
            dir: dir.to_path_buf(),
            conf,
            child: None,
        };
        b.restart();
        b
    }

    /// Listener that admits only `user` with `password` (a `mosquitto_passwd` file in `dir`).
    pub fn start_with_password(dir: &Path, user: &str, password: &str) -> Broker {
        std::fs::create_dir_all(dir).unwrap();
        let pw = dir.join("passwd");
        assert!(Command::new("mosquitto_passwd")
            .args(["-c", "-b"])
            .arg(&pw)
            .args([user, password])
            .status()
            .unwrap()
            .success());
        Self::start_with(
            dir,
            &format!("allow_anonymous false\npassword_file {}\n", pw.display()),
        )
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// (Re)start on the same port and wait until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < end,
                "mosquitto did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop with SIGTERM (mosquitto writes its persistence file) and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A received message.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Msg {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "{}: not JSON ({e}): {}",
                self.topic,
                String::from_utf8_lossy(&self.payload)
            )
        })
    }
}

/// A subscriber running on its own thread (with its own runtime), reconnecting forever.
pub struct Collector {
    pub msgs: Arc<Mutex<Vec<Msg>>>,
    pub connects: Arc<Mutex<u32>>,
}

/// A broker started under `dir/broker` and a [`Collector`] on `filter`, connected (waits up to
/// 10 s).
pub fn broker_and_subscriber(
    dir: &Path,
    filter: &str,
    client_id: &str,
    persistent: bool,
) -> (Broker, Collector) {
    let broker = Broker::start(&dir.join("broker"));
    let sub = Collector::start(broker.port, filter, client_id, persistent);
    sub.wait_connected(Duration::from_secs(10));
    (broker, sub)
}

impl Collector {
    /// Subscribe to `filter` at QoS 1. `persistent`: clean_session=false with a fixed client id,
    /// so the broker queues alerts while we are away (and across broker restarts).
    pub fn start(port: u16, filter: &str, client_id: &str, persistent: bool) -> Collector {
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let connects = Arc::new(Mutex::new(0));
        let (m, c) = (msgs.clone(), connects.clone());
        let (filter, id) = (filter.to_string(), client_id.to_string());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut o = MqttOptions::new(id, "127.0.0.1", port);
                o.set_clean_session(!persistent);
                o.set_keep_alive(Duration::from_secs(5));
                o.set_max_packet_size(1 << 20, 1 << 20);
                let (client, mut el) = AsyncClient::new(o, 100);
                loop {
                    match el.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            *c.lock().unwrap() += 1;
                            let _ = client.subscribe(filter.clone(), QoS::AtLeastOnce).await;
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => m.lock().unwrap().push(Msg {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        }),
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            });
        });
        Collector { msgs, connects }
    }

    pub fn snapshot(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }

    /// Wait until `pred` holds over the messages so far (panics with `what` on timeout).
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[Msg]) -> bool,
    ) -> Vec<Msg> {
        let end = Instant::now() + timeout;
        loop {
            let s = self.snapshot();
            if pred(&s) {
                return s;
            }
            if Instant::now() > end {
                let topics: Vec<_> = s
                    .iter()
                    .map(|m| format!("{} {}", m.topic, String::from_utf8_lossy(&m.payload)))
                    .collect();
                panic!(
                    "timed out waiting for {what}; got {} messages: {topics:#?}",
                    s.len()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_connected(&self, timeout: Duration) {
        let end = Instant::now() + timeout;
        while *self.connects.lock().unwrap() == 0 {
            assert!(Instant::now() < end, "subscriber never connected");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Give the SUBSCRIBE a moment to be processed.
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Alert ids and `first_seq`s of the alert messages in `msgs`.
pub fn alert_ids(msgs: &[Msg]) -> Vec<(String, u64)> {
    msgs.iter()
        .filter(|m| m.topic.ends_with("/alert"))
        .map(|m| {
            let v = m.json();
            (
                v["alert"]["id"].as_str().unwrap().to_string(),
                v["alert"]["first_seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Run openssl with `args` in `dir`.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Generate a CA, a server certificate for 127.0.0.1/localhost and a client certificate in `dir`.
pub fn make_pki(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=veriframe test CA",
        ],
    );
    for (name, cn, ext) in [
        (
            "server",
            "localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        ),
        (
            "client",
            "booth-client",
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        ),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &format!("{name}.crt"),
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
}

/// Publish one QoS 1 message and wait for its PUBACK.
pub fn publish(port: u16, topic: &str, payload: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let id = format!("pub-{}", free_port());
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(o, 10);
        client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await
            .unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < end, "no PUBACK");
            match tokio::time::timeout(Duration::from_secs(10), el.poll()).await {
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("publish failed: {e}"),
                Err(_) => panic!("no PUBACK"),
            }
        }
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_millis(200), el.poll()).await;
    });
}
