//! C2PA Content Credentials checked by an independent reader: c2pa-python, the C2PA
//! SDK's Python binding from PyPI (`tools/test.sh` and `.ci/run` install it into
//! `target/c2pa-venv`). The reader must be there: a missing reader fails the test.
//!
//! `veriframe run` with `[seal] c2pa = true` writes `<seq>.c2pa.jpg` (and `.c2pa.png` for a raw
//! source); the reader validates them with no integrity error, trusts them with the device CA
//! as trust anchor, and reports its failure codes for a flipped image byte
//! (`assertion.dataHash.mismatch`), a manifest store moved onto another capture (the same), a
//! credential carrying another device's certificate (`claimSignature.mismatch`) and a device
//! whose CA is not in the trust list (`signingCredential.untrusted`). The originals stay
//! byte-for-byte, `veriframe verify` still passes, and `veriframe export --c2pa` reproduces the
//! daemon's files for a verified chain and refuses a tampered one.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::veriframe;
use serde_json::Value;
use veriframe::seal::cert::CertChain;

/// A python3 that can `import c2pa`.
fn reader_python() -> PathBuf {
    if let Some(p) = std::env::var_os("VERIFRAME_C2PA_PYTHON") {
        return p.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/c2pa-venv/bin/python");
    let has_c2pa = |py: &Path| {
        Command::new(py)
            .args(["-c", "import c2pa"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    for py in [venv, PathBuf::from("python3")] {
        if has_c2pa(&py) {
            return py;
        }
    }
    panic!(
        "the independent C2PA reader is missing: install c2pa-python (tools/test.sh does: \
         python3 -m venv target/c2pa-venv && target/c2pa-venv/bin/pip install c2pa-python==0.38.1) \
         or set VERIFRAME_C2PA_PYTHON to a python3 that can `import c2pa`"
    );
}

/// The reader's conclusions for `files` (tests/c2pa/read.py), optionally trusting `anchor`.
fn read(anchor: Option<&Path>, files: &[&Path]) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c2pa/read.py");
    let mut c = Command::new(reader_python());
    c.arg(script);
    if let Some(a) = anchor {
        c.arg("--anchor").arg(a);
    }
    let out = c.args(files).output().expect("run the C2PA reader");
    assert!(
        out.status.success(),
        "reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("reader output is JSON");
    eprintln!("reader: {}", doc["reader"]);
    doc["files"].as_array().expect("files").clone()
}

fn codes(rec: &Value, kind: &str) -> Vec<String> {
    rec[kind]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A device: data dir with key, certificate chain (self-signed pilot CA) and config.
struct Device {
    dir: PathBuf,
    config: PathBuf,
}

impl Device {
    fn new(root: &Path, id: &str) -> Self {
        let dir = root.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("veriframe.toml");
        std::fs::write(
            &config,
            format!(
                "device_id = \"{id}\"\ndata_dir = \"{}\"\n[seal]\npolicy = \"every\"\nc2pa = true\nfsync = false\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let d = Self { dir, config };
        let out = d.cmd(&["cert", "self-signed"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        d
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = veriframe();
        c.args(&args[..1])
            .arg("-c")
            .arg(&self.config)
            .args(&args[1..]);
        c
    }

    fn run(&self, source: &str, frames: u32) {
        let out = self
            .cmd(&["run", "--source", source, "--frames", &frames.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn keys(&self) -> PathBuf {
        self.dir.join("data/keys")
    }

    fn chain_dir(&self) -> PathBuf {
        let caps = self.dir.join("data/captures");
        std::fs::read_dir(&caps)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.is_dir())
            .expect("a chain directory")
    }

    fn leaf_der(&self) -> Vec<u8> {
        let pem = std::fs::read(self.keys().join("device.chain.pem")).unwrap();
        CertChain::from_pem(&pem).unwrap().certs[0].clone()
    }
}

/// A JPEG without its APP11 segments (where the C2PA store lives), and where they started.
fn strip_app11(jpeg: &[u8]) -> (Vec<u8>, Vec<u8>, usize) {
    assert_eq!(&jpeg[..2], &[0xff, 0xd8]);
    let (mut kept, mut store, mut first) = (jpeg[..2].to_vec(), Vec::new(), 0);
    let mut at = 2;
    while jpeg[at] == 0xff && jpeg[at + 1] != 0xda {
        let len = u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]) as usize;
        let seg = &jpeg[at..at + 2 + len];
        if jpeg[at + 1] == 0xeb {
            if store.is_empty() {
                first = at;
            }
            store.extend_from_slice(seg);
        } else {
            kept.extend_from_slice(seg);
        }
        at += 2 + len;
    }
    kept.extend_from_slice(&jpeg[at..]);
    (kept, store, first)
}

fn sha256_hex(b: &[u8]) -> String {
    veriframe::record::hash::sha256_hex(b)
}

fn replace(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    assert_eq!(needle.len(), with.len());
    let at = hay
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle in file");
    let mut out = hay.to_vec();
    out[at..at + with.len()].copy_from_slice(with);
    out
}

#[test]
fn independent_reader_validates_trusts_and_rejects_tampering() {
    let t = tempfile::tempdir().unwrap();
    let a = Device::new(t.path(), "cam-test-a");
    // Case 3 below swaps A's leaf certificate for B's in place, so they must have the same DER
    // length; an ECDSA signature's DER length varies (70-72 bytes) with its random r and s, so
    // make B again (same-length ids) until it matches, instead of failing on about one run in few.
    let b = ('b'..='z')
        .map(|c| Device::new(t.path(), &format!("cam-test-{c}")))
        .find(|d| d.leaf_der().len() == a.leaf_der().len())
        .expect("a device whose leaf certificate has A's DER length within 25 tries");
    a.run("samples", 3);
    b.run("samples", 1);
    let chain = a.chain_dir();
    let cred = |d: &Path, seq: u32| d.join(format!("{seq:012}.c2pa.jpg"));
    let orig = |seq: u32| chain.join(format!("{seq:012}.jpg"));

    // The originals are untouched (verify checks their hashes), and the credential holds
    // exactly the original bytes plus the store.
    let v = veriframe()
        .args(["verify", "--json"])
        .arg(&chain)
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(v.status.code(), Some(0), "{doc}");
    assert_eq!(doc["chains"][0]["notes"], serde_json::json!([]), "{doc}");
    for seq in 0..3 {
        let c = std::fs::read(cred(&chain, seq)).unwrap();
        let (kept, store, _) = strip_app11(&c);
        assert!(!store.is_empty());
        assert_eq!(kept, std::fs::read(orig(seq)).unwrap());
    }

    // Untrusted (no trust list) but valid: no failure other than the untrusted signer.
    let files: Vec<PathBuf> = (0..3).map(|s| cred(&chain, s)).collect();
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    for (seq, rec) in read(None, &refs).iter().enumerate() {
        assert_eq!(rec["error"], Value::Null, "{rec}");
        assert_eq!(
            codes(rec, "failure"),
            ["signingCredential.untrusted"],
            "{rec}"
        );
        assert_eq!(rec["state"], "Valid", "{rec}");
        let ok = codes(rec, "success");
        for c in ["claimSignature.validated", "assertion.dataHash.match"] {
            assert!(ok.iter().any(|s| s == c), "{c} missing: {rec}");
        }
        // The Veriframe assertion names the manifest it matches.
        let vf = &rec["assertions"]["org.veriframe.capture"];
        let manifest = std::fs::read(chain.join(format!("{seq:012}.json"))).unwrap();
        assert_eq!(vf["manifest_sha256"], sha256_hex(&manifest), "{rec}");
        assert_eq!(vf["seq"], seq as u64);
        assert_eq!(vf["device_id"], "cam-test-a");
        assert!(vf["analysis"]["verdict"].is_string(), "{rec}");
        let actions = rec["assertions"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(k, _)| k.starts_with("c2pa.actions"))
            .map(|(_, v)| v.clone())
            .expect("actions assertion");
        assert_eq!(actions["actions"][0]["action"], "c2pa.created");
        assert_eq!(
            actions["actions"][0]["digitalSourceType"],
            "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"
        );
        assert_eq!(rec["signature_info"]["common_name"], "cam-test-a");
    }

    // Trusted with the device CA as trust anchor.
    let ca_a = a.keys().join("device.ca.pem");
    for rec in read(Some(&ca_a), &refs) {
        assert_eq!(rec["state"], "Trusted", "{rec}");
        assert!(codes(&rec, "failure").is_empty(), "{rec}");
        assert!(codes(&rec, "success")
            .iter()
            .any(|c| c == "signingCredential.trusted"));
    }

    // Tampering, each judged with A's CA trusted.
    let work = t.path().join("tampered");
    std::fs::create_dir_all(&work).unwrap();
    let c0 = std::fs::read(cred(&chain, 0)).unwrap();
    // 1. One flipped byte in the image data (inside the entropy-coded scan, before EOI).
    let mut flipped = c0.clone();
    let n = flipped.len();
    flipped[n - 200] ^= 0x01;
    let flipped_p = work.join("flipped.jpg");
    std::fs::write(&flipped_p, &flipped).unwrap();
    // 2. Capture 0's manifest store moved onto capture 1's image.
    let (_, store0, at0) = strip_app11(&c0);
    let img1 = std::fs::read(orig(1)).unwrap();
    let mut swapped = img1[..at0].to_vec();
    swapped.extend_from_slice(&store0);
    swapped.extend_from_slice(&img1[at0..]);
    let swapped_p = work.join("swapped.jpg");
    std::fs::write(&swapped_p, &swapped).unwrap();
    // 3. A's credential carrying B's certificate (same length: same-length device ids).
    let other_cert = replace(&c0, &a.leaf_der(), &b.leaf_der());
    let other_p = work.join("other-cert.jpg");
    std::fs::write(&other_p, &other_cert).unwrap();
    // 4. B's own, valid credential: its CA is not in A's trust list.
    let b_cred = cred(&b.chain_dir(), 0);

    let recs = read(Some(&ca_a), &[&flipped_p, &swapped_p, &other_p, &b_cred]);
    let expect = [
        "assertion.dataHash.mismatch",
        "assertion.dataHash.mismatch",
        "claimSignature.mismatch",
        "signingCredential.untrusted",
    ];
    for (rec, code) in recs.iter().zip(expect) {
        eprintln!(
            "{}: state {}, failures {:?}",
            rec["file"],
            rec["state"],
            codes(rec, "failure")
        );
        assert_ne!(rec["state"], "Trusted", "{rec}");
        assert!(
            codes(rec, "failure").iter().any(|c| c == code),
            "expected {code}: {rec}"
        );
    }
    // B's credential is trusted with B's CA: the failure above is the trust list, not B.
    let rec = &read(Some(&b.keys().join("device.ca.pem")), &[&b_cred])[0];
    assert_eq!(rec["state"], "Trusted", "{rec}");
}

#[test]
fn raw_source_gets_a_signed_png() {
    let t = tempfile::tempdir().unwrap();
    let a = Device::new(t.path(), "cam-png");
    a.run("synthetic", 2);
    let chain = a.chain_dir();
    let p = chain.join("000000000001.c2pa.png");
    let orig = std::fs::read(chain.join("000000000001.png")).unwrap();
    let cred = std::fs::read(&p).unwrap();
    // The stored PNG plus one caBX chunk after IHDR.
    assert_eq!(&cred[..33], &orig[..33]);
    assert_eq!(&cred[37..41], b"caBX");
    let chunk = u32::from_be_bytes(cred[33..37].try_into().unwrap()) as usize + 12;
    assert_eq!(&cred[33 + chunk..], &orig[33..]);
    let rec = &read(Some(&a.keys().join("device.ca.pem")), &[&p])[0];
    assert_eq!(rec["state"], "Trusted", "{rec}");
    let mut flipped = cred.clone();
    let n = flipped.len();
    flipped[n - 20] ^= 0x01;
    let fp = t.path().join("flipped.png");
    std::fs::write(&fp, &flipped).unwrap();
    let rec = &read(Some(&a.keys().join("device.ca.pem")), &[&fp])[0];
    assert!(
        codes(rec, "failure")
            .iter()
            .any(|c| c == "assertion.dataHash.mismatch"),
        "{rec}"
    );
}

#[test]
fn export_reproduces_credentials_and_refuses_a_tampered_chain() {
    let t = tempfile::tempdir().unwrap();
    let a = Device::new(t.path(), "cam-export");
    a.run("samples", 2);
    let chain = a.chain_dir();
    let out = t.path().join("out");
    let o = a
        .cmd(&["export", "--c2pa"])
        .arg(&chain)
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for seq in 0..2 {
        let name = format!("{seq:012}.c2pa.jpg");
        // Same key, chain and capture: the same bytes (Ed25519 is deterministic and the
        // manifest ids derive from the capture).
        assert_eq!(
            std::fs::read(out.join(&name)).unwrap(),
            std::fs::read(chain.join(&name)).unwrap()
        );
    }
    // A capture whose image was changed: the chain does not verify, nothing is exported.
    let img = chain.join("000000000001.jpg");
    let mut bytes = std::fs::read(&img).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 1;
    std::fs::write(&img, bytes).unwrap();
    let out2 = t.path().join("out2");
    let o = a
        .cmd(&["export", "--c2pa"])
        .arg(&chain)
        .arg(&out2)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!out2.exists());
}

#[test]
fn cert_install_checks_the_chain_is_for_this_device() {
    let t = tempfile::tempdir().unwrap();
    let a = Device::new(t.path(), "cam-inst-a");
    let b = Device::new(t.path(), "cam-inst-b");
    // B's chain on A: refused, A's chain unchanged.
    let a_chain = std::fs::read(a.keys().join("device.chain.pem")).unwrap();
    let o = a
        .cmd(&["cert", "install"])
        .arg(b.keys().join("device.chain.pem"))
        .output()
        .unwrap();
    common::assert_error(&o, &["not for this device's key"]);
    assert_eq!(
        std::fs::read(a.keys().join("device.chain.pem")).unwrap(),
        a_chain
    );
    // Its own chain (as an operator's CA would return it): installed.
    let copy = t.path().join("returned.pem");
    std::fs::write(&copy, &a_chain).unwrap();
    let o = a.cmd(&["cert", "install"]).arg(&copy).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Not PEM at all: a clear error.
    std::fs::write(&copy, b"hello").unwrap();
    let o = a.cmd(&["cert", "install"]).arg(&copy).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn run_without_a_certificate_chain_refuses_to_start_and_says_how_to_make_one() {
    let t = tempfile::tempdir().unwrap();
    let config = t.path().join("veriframe.toml");
    std::fs::write(
        &config,
        format!(
            "device_id = \"cam-nochain\"\ndata_dir = \"{}\"\n[seal]\nc2pa = true\n",
            t.path().join("data").display()
        ),
    )
    .unwrap();
    let o = veriframe()
        .args(["run", "--source", "samples", "--frames", "1", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    common::assert_error(&o, &["seal.c2pa", "veriframe cert"]);
}
