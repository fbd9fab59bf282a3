//! Captures encrypted to the operator (`[seal] encrypt_to`), checked with independent tools:
//! the `age` command-line tools (Debian package `age`) decrypt, every file under the data
//! directory is tried with an image decoder, and `veriframe verify`, `erase` and `export` are run
//! as a user would. Also: MQTT payloads and logs carry no image data, and an old-format capture
//! still verifies.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{signal, spawn, veriframe, wait_timeout};

fn need_age() {
    let ok = Command::new("age")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the `age` command-line tool is required (Debian package `age`; tools/test.sh installs it)"
    );
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run_ok(cmd: &mut Command) -> String {
    let o = run(cmd);
    assert!(o.status.success(), "{cmd:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn sha256_hex(b: &[u8]) -> String {
    veriframe::record::hash::sha256_hex(b)
}

/// An operator identity made with `age-keygen` (mode 0600) and its recipient.
fn identity(dir: &Path) -> (PathBuf, String) {
    let id = dir.join("operator.key");
    run_ok(Command::new("age-keygen").arg("-o").arg(&id));
    std::fs::set_permissions(&id, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let r = run_ok(Command::new("age-keygen").arg("-y").arg(&id));
    (id, r.trim().to_string())
}

struct Booth {
    _t: tempfile::TempDir,
    root: PathBuf,
    cfg: PathBuf,
    data: PathBuf,
    id: PathBuf,
}

impl Booth {
    /// A device key with a pilot C2PA certificate, and a config sealing every synthetic frame,
    /// encrypted to a fresh operator identity, with C2PA copies.
    fn new(extra: &str) -> Booth {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        let key = root.join("K");
        run_ok(veriframe().arg("keygen").arg("--out").arg(&key));
        let (id, recipient) = identity(&root);
        let data = root.join("D");
        let cfg = root.join("booth.toml");
        std::fs::write(
            &cfg,
            format!(
                "data_dir = {data:?}\n[source]\nuri = \"synthetic\"\nfps = 30\nwidth = 64\nheight = 48\n\
                 [detect]\nmodel = \"none\"\n[seal]\npolicy = \"every\"\nfsync = false\nkey = {key:?}\n\
                 c2pa = true\nencrypt_to = [\"{recipient}\"]\n{extra}"
            ),
        )
        .unwrap();
        run_ok(
            veriframe()
                .arg("cert")
                .arg("-c")
                .arg(&cfg)
                .args(["self-signed", "--days", "30"]),
        );
        Booth {
            _t: t,
            root,
            cfg,
            data,
            id,
        }
    }

    fn run_frames(&self, n: u32) -> String {
        let o = run(veriframe()
            .env("RUST_LOG", "debug")
            .arg("run")
            .arg("-c")
            .arg(&self.cfg)
            .arg("--frames")
            .arg(n.to_string()));
        assert!(o.status.success(), "{}", text(&o));
        text(&o)
    }

    fn chain(&self) -> PathBuf {
        std::fs::read_dir(self.data.join("captures"))
            .unwrap()
            .flatten()
            .find(|e| e.path().is_dir())
            .unwrap()
            .path()
    }

    fn verify(&self, dir: &Path, identity: bool) -> Output {
        let mut c = veriframe();
        c.arg("verify")
            .arg(dir)
            .arg("--pubkey")
            .arg(self.root.join("K.pub"));
        if identity {
            c.arg("--identity").arg(&self.id);
        }
        run(&mut c)
    }

    fn erase(&self, args: &[&str]) -> Output {
        run(veriframe().arg("erase").arg("-c").arg(&self.cfg).args(args))
    }
}

/// No file under `dir` decodes as an image, and none holds an age identity.
fn assert_no_plaintext(dir: &Path) -> usize {
    let mut files = Vec::new();
    files_under(dir, &mut files);
    for f in &files {
        let b = std::fs::read(f).unwrap();
        assert!(
            image::load_from_memory(&b).is_err(),
            "{} decodes as an image",
            f.display()
        );
        assert!(
            !String::from_utf8_lossy(&b).contains("AGE-SECRET-KEY-"),
            "{} holds an age identity",
            f.display()
        );
    }
    files.len()
}

fn manifest(chain: &Path, seq: u64) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(chain.join(format!("{seq:012}.json"))).unwrap()).unwrap()
}

#[test]
fn encrypted_captures_verify_without_and_with_the_identity_and_open_with_age() {
    need_age();
    let b = Booth::new("");
    b.run_frames(8);
    let n = assert_no_plaintext(&b.data);
    assert!(n > 20, "{n} files");
    let chain = b.chain();
    let m = manifest(&chain, 3);
    assert_eq!(m["sig_alg"], "Ed25519");
    assert_eq!(m["format"], "veriframe.capture/3");
    let enc = &m["image"]["encrypted"];
    let ct = chain.join(enc["file"].as_str().unwrap());
    assert!(
        ct.to_string_lossy().ends_with(".png.age"),
        "{}",
        ct.display()
    );
    assert!(chain.join("000000000003.c2pa.png.age").exists());
    assert!(!chain.join("000000000003.png").exists());
    // The age CLI opens it; the plaintext is the image the manifest names.
    let o = run(Command::new("age").arg("-d").arg("-i").arg(&b.id).arg(&ct));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        sha256_hex(&o.stdout),
        m["image"]["sha256"].as_str().unwrap()
    );
    assert!(image::load_from_memory(&o.stdout).is_ok());
    assert_eq!(
        sha256_hex(&std::fs::read(&ct).unwrap()),
        enc["sha256"].as_str().unwrap()
    );
    // verify: no identity (ciphertexts), identity (plaintexts too).
    let o = b.verify(&b.data, false);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("ciphertext checked (plaintext not checked"));
    let o = run(veriframe()
        .arg("verify")
        .arg(&b.data)
        .arg("--identity")
        .arg(&b.id)
        .arg("--json"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["encrypted"], 8);
    assert_eq!(doc["encrypted_plaintext_checked"], 8);
    assert!(doc["chains"][0]["captures"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["plaintext_checked"] == true));
    // Export: plaintext images whose hashes match; and the C2PA copies.
    let out = b.root.join("out");
    run_ok(
        veriframe()
            .arg("export")
            .arg("--identity")
            .arg(&b.id)
            .arg(&b.data)
            .arg(&out),
    );
    let img = std::fs::read(out.join("000000000003.png")).unwrap();
    assert_eq!(sha256_hex(&img), m["image"]["sha256"].as_str().unwrap());
    let out2 = b.root.join("out-c2pa");
    run_ok(
        veriframe()
            .arg("export")
            .arg("--identity")
            .arg(&b.id)
            .arg("--c2pa")
            .arg(&b.data)
            .arg(&out2),
    );
    assert!(
        image::load_from_memory(&std::fs::read(out2.join("000000000003.c2pa.png")).unwrap())
            .is_ok()
    );
    // An identity readable by others is refused.
    std::fs::set_permissions(&b.id, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let o = b.verify(&b.data, true);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("chmod 600"), "{}", text(&o));
}

#[test]
fn a_flipped_ciphertext_byte_fails_both_verifications_naming_the_capture() {
    need_age();
    let b = Booth::new("");
    b.run_frames(5);
    let chain = b.chain();
    let ct = chain.join("000000000002.png.age");
    let mut bytes = std::fs::read(&ct).unwrap();
    let i = bytes.len() - 40;
    bytes[i] ^= 1;
    std::fs::write(&ct, bytes).unwrap();
    for id in [false, true] {
        let o = b.verify(&b.data, id);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{t}");
        let line = t
            .lines()
            .find(|l| l.starts_with("FAIL") && l.contains("000000000002.json"))
            .unwrap_or_else(|| panic!("no FAIL line for capture 2:\n{t}"));
        assert!(line.contains("ciphertext_hash"), "{line}");
    }
}

#[test]
fn erase_records_then_verify_lists_erased_and_a_hand_deletion_still_fails() {
    need_age();
    let b = Booth::new("");
    b.run_frames(8);
    let chain = b.chain();
    let o = b.erase(&["--seq", "2-4", "--reason", "request 2026-117"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("erasure record seq=8"), "{}", text(&o));
    for s in 2..=4 {
        assert!(!chain.join(format!("{s:012}.png.age")).exists());
        assert!(!chain.join(format!("{s:012}.c2pa.png.age")).exists());
        assert!(chain.join(format!("{s:012}.json")).exists());
    }
    let rec = manifest(&chain, 8);
    assert_eq!(rec["format"], "veriframe.erasure/1");
    assert_eq!(rec["captures"], serde_json::json!([[2, 4]]));
    assert_eq!(rec["reason"], "request 2026-117");
    let o = b.verify(&b.data, false);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    for s in 2..=4 {
        assert!(
            t.lines().any(|l| l.starts_with("erased")
                && l.contains(&format!("{s:012}.json"))
                && l.contains("record seq=8")
                && l.contains("request 2026-117")),
            "capture {s} not listed as erased:\n{t}"
        );
    }
    assert!(t.contains("3 erased"), "{t}");
    // The same erase again: no second record.
    let o = b.erase(&["--seq", "3", "--reason", "again"]);
    assert!(text(&o).contains("no new erasure record"), "{}", text(&o));
    assert!(!chain.join("000000000009.json").exists());
    // An image deleted by hand is still a problem, named.
    std::fs::remove_file(chain.join("000000000005.png.age")).unwrap();
    let o = b.verify(&b.data, false);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.lines().any(|l| l.starts_with("FAIL")
            && l.contains("000000000005.json")
            && l.contains("image_missing")),
        "{t}"
    );
    // A daemon start continues the chain after the record.
    b.run_frames(2);
    let next = manifest(&chain, 9);
    assert_eq!(next["format"], "veriframe.capture/3");
    let rec_hash = sha256_hex(&std::fs::read(chain.join("000000000008.json")).unwrap());
    assert_eq!(next["prev"], rec_hash.as_str());
}

#[test]
fn erase_refuses_while_the_daemon_holds_the_chain() {
    need_age();
    let b = Booth::new("");
    let mut cmd = veriframe();
    cmd.env("RUST_LOG", "info")
        .arg("run")
        .arg("-c")
        .arg(&b.cfg)
        .arg("--duration")
        .arg("60s");
    let mut child = spawn(cmd);
    let t0 = Instant::now();
    let files = || {
        std::fs::read_dir(b.data.join("captures"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_dir(e.path()).ok())
            .map(|rd| rd.count())
            .sum::<usize>()
    };
    while files() < 6 {
        assert!(t0.elapsed() < Duration::from_secs(30), "nothing sealed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = b.erase(&["--seq", "0", "--reason", "r"]);
    signal(&child, libc::SIGTERM);
    wait_timeout(&mut child, Duration::from_secs(20)).expect("daemon stopped");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("in use by another veriframe process"),
        "{}",
        text(&o)
    );
    // Once the daemon has stopped, the same erase runs.
    let o = b.erase(&["--seq", "0", "--reason", "r"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn mqtt_payloads_and_logs_carry_no_image_data() {
    if !common::mqtt::have_mosquitto() {
        panic!("mosquitto is required (tools/test.sh installs it)");
    }
    need_age();
    let t = tempfile::tempdir().unwrap();
    let (broker, sub) = common::mqtt::broker_and_subscriber(t.path(), "#", "leak-sub", false);
    let b = Booth::new(&format!(
        "[mqtt]\nbroker = \"{}\"\npublish_captures = true\n",
        broker.url()
    ));
    let log = b.run_frames(12);
    let msgs = sub.wait_for(Duration::from_secs(10), "capture messages", |m| {
        m.iter().any(|m| m.topic.ends_with("/capture"))
    });
    let topics: std::collections::BTreeSet<&str> = msgs
        .iter()
        .map(|m| m.topic.rsplit('/').next().unwrap())
        .collect();
    for want in ["capture", "status", "config", "available"] {
        assert!(topics.contains(want), "no {want} topic in {topics:?}");
    }
    // Image signatures, raw or base64 (JPEG, PNG), and any long base64 run.
    let needles: [&[u8]; 4] = [b"\xff\xd8\xff", b"\x89PNG", b"/9j/", b"iVBORw0KGgo"];
    let long_b64 = |s: &[u8]| {
        let mut run = 0;
        for &c in s {
            if c.is_ascii_alphanumeric() || c == b'+' || c == b'/' {
                run += 1;
                if run > 200 {
                    return true;
                }
            } else {
                run = 0;
            }
        }
        false
    };
    for m in &msgs {
        for n in needles {
            assert!(
                !m.payload.windows(n.len()).any(|w| w == n),
                "{} carries image data",
                m.topic
            );
        }
        assert!(
            m.payload.len() < 4096,
            "{}: {} bytes",
            m.topic,
            m.payload.len()
        );
        assert!(!long_b64(&m.payload), "{}: a long base64 run", m.topic);
    }
    for n in needles {
        assert!(
            !log.as_bytes().windows(n.len()).any(|w| w == n),
            "log carries image data"
        );
    }
    assert!(!long_b64(log.as_bytes()), "log carries a long base64 run");
    drop(broker);
}

#[test]
fn a_capture_written_in_the_previous_format_still_verifies() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/capture-v2");
    let m = manifest(&dir.join("2ba41c7af2e5e493"), 1);
    assert_eq!(m["format"], "veriframe.capture/2");
    assert!(m.get("sig_alg").is_none());
    let o = run(veriframe()
        .arg("verify")
        .arg(&dir)
        .arg("--pubkey")
        .arg(dir.join("device.pub")));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("VALID: 4 captures"), "{}", text(&o));
}
