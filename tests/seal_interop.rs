//! Interoperability: a capture verifies with OpenSSL alone, following docs/capture-format.md:
//!
//! ```sh
//! openssl pkeyutl -verify -pubin -inkey K.pub -rawin -in 000000000003.json -sigfile 000000000003.sig
//! openssl dgst -sha256 -r 000000000003.png   # equals the manifest's image.sha256
//! ```

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::seal::*;
use veriframe::seal::keys;

fn openssl_available() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var_os("VERIFRAME_REQUIRE_SHARED").is_some() {
            panic!("openssl is required (CI installs it)");
        }
        eprintln!("skipped: missing openssl");
    }
    ok
}

fn pkeyutl_verify(pubkey: &Path, manifest: &Path, sig: &Path) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
        .arg(pubkey)
        .arg("-rawin")
        .arg("-in")
        .arg(manifest)
        .arg("-sigfile")
        .arg(sig)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn openssl_verifies_a_capture() {
    if !openssl_available() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let key_path = t.path().join("K");
    let key = std::sync::Arc::new(keys::create_key_files(&key_path).unwrap());
    let pub_path = keys::pub_path(&key_path);
    let dir = seal_frames(
        &t.path().join("D"),
        key.clone(),
        &config(),
        0..4,
        Duration::ZERO,
    );

    for seq in [2u64, 3] {
        let manifest = dir.join(format!("{}.json", stem(seq)));
        let sig = dir.join(format!("{}.sig", stem(seq)));
        let (ok, text) = pkeyutl_verify(&pub_path, &manifest, &sig);
        assert!(ok, "openssl rejected a good capture: {text}");
        assert!(text.contains("Signature Verified Successfully"), "{text}");

        // The image hash, with openssl dgst, matches the manifest.
        let img = image_of(&dir, seq);
        let out = Command::new("openssl")
            .args(["dgst", "-sha256", "-r"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(out.status.success());
        let digest = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
        assert_eq!(m["image"]["sha256"].as_str().unwrap(), digest);
        assert_eq!(
            m["public_key"].as_str().unwrap(),
            keys::public_key_b64(&key.public())
        );

        // A flipped byte fails in openssl too.
        let bad = t.path().join("bad.json");
        let mut b = std::fs::read(&manifest).unwrap();
        b[20] ^= 1;
        std::fs::write(&bad, b).unwrap();
        let (ok, text) = pkeyutl_verify(&pub_path, &bad, &sig);
        assert!(!ok, "openssl accepted a tampered manifest: {text}");
    }

    // The chain-state record is signed the same way.
    let (ok, text) = pkeyutl_verify(&pub_path, &dir.join("chain.json"), &dir.join("chain.sig"));
    assert!(ok, "{text}");

    // (OpenSSL 3.0 cannot read ring's PKCS#8 *v2* private key file; verification needs only
    // the public key, and keys made by `openssl genpkey` load here: see the next test.)
}

#[test]
fn openssl_generated_key_is_accepted() {
    if !openssl_available() {
        return;
    }
    // Keys made with openssl (PKCS#8 v1) load, and their public key matches openssl's.
    let t = tempfile::tempdir().unwrap();
    let k = t.path().join("k.der");
    let st = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "ed25519",
            "-outform",
            "DER",
            "-out",
        ])
        .arg(&k)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::set_permissions(&k, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let key = keys::load_key(&k).unwrap();
    let out = Command::new("openssl")
        .args(["pkey", "-inform", "DER", "-pubout", "-in"])
        .arg(&k)
        .output()
        .unwrap();
    let pk = keys::parse_public_key(&out.stdout).unwrap();
    assert_eq!(pk, key.public());
}

/// ES256 (ECDSA P-256, SHA-256): a signature in the stored form (`r || s`, 64 bytes) verifies
/// with OpenSSL alone, converting to DER with `openssl asn1parse -genconf` exactly as
/// docs/capture-format.md §6 shows; and a key made by `openssl genpkey` loads with the same
/// public key and key id.
#[test]
fn openssl_verifies_an_es256_signature_following_the_recipe() {
    use veriframe::record::sigalg::{es256_der_to_raw, es256_raw_to_der, PublicKey, SigAlg};
    if !openssl_available() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    // A P-256 key made by openssl (PKCS#8 DER), as an operator might import one. (`genpkey
    // -outform DER` writes SEC1 for EC keys; `pkcs8 -topk8` makes it PKCS#8.)
    let pem = t.path().join("k.pem");
    let k = t.path().join("k.der");
    let st = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&pem)
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("openssl")
        .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
        .arg(&pem)
        .arg("-out")
        .arg(&k)
        .status()
        .unwrap();
    assert!(st.success());
    let key = veriframe::seal::keys::Es256Key::from_pkcs8(&std::fs::read(&k).unwrap()).unwrap();
    let out = Command::new("openssl")
        .args(["pkey", "-inform", "DER", "-pubout", "-in"])
        .arg(&k)
        .output()
        .unwrap();
    let pk = PublicKey::parse(&out.stdout).unwrap();
    assert_eq!(&pk, key.public());
    assert_eq!(pk.alg(), SigAlg::Es256);
    // Our PEM is what openssl reads.
    let pub_path = t.path().join("K.pub");
    std::fs::write(&pub_path, pk.to_pem()).unwrap();

    let doc = t.path().join("000000000003.json");
    std::fs::write(&doc, br#"{"format":"test","seq":3}"#).unwrap();
    let sig_path = t.path().join("000000000003.sig");
    for round in 0..8 {
        let raw = key.sign(&std::fs::read(&doc).unwrap()).unwrap();
        std::fs::write(&sig_path, raw).unwrap();
        // The recipe from §6, verbatim apart from file names.
        let script = r#"
set -e
r=$(head -c 32 000000000003.sig | od -An -v -tx1 | tr -d ' \n')
s=$(tail -c 32 000000000003.sig | od -An -v -tx1 | tr -d ' \n')
printf 'asn1=SEQUENCE:sig\n[sig]\nr=INTEGER:0x%s\ns=INTEGER:0x%s\n' "$r" "$s" > sig.cnf
openssl asn1parse -genconf sig.cnf -out 000000000003.sig.der -noout
openssl dgst -sha256 -verify K.pub -signature 000000000003.sig.der 000000000003.json
"#;
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(t.path())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "round {round}: {text}");
        assert!(text.contains("Verified OK"), "{text}");
        // openssl's DER is exactly ours.
        let der = std::fs::read(t.path().join("000000000003.sig.der")).unwrap();
        assert_eq!(der, es256_raw_to_der(&raw));
    }
    // A tampered document fails in openssl too.
    std::fs::write(&doc, br#"{"format":"test","seq":4}"#).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&pub_path)
        .arg("-signature")
        .arg(t.path().join("000000000003.sig.der"))
        .arg(&doc)
        .output()
        .unwrap();
    assert!(!out.status.success());

    // And the other direction: an openssl signature (DER) converts to r || s that we accept.
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&k)
        .args(["-keyform", "DER"])
        .arg(&doc)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = es256_der_to_raw(&out.stdout).unwrap();
    assert!(pk.verify(&std::fs::read(&doc).unwrap(), &raw));
}
