//! The tamper matrix: every kind of modification of a sealed capture store is detected, with the
//! right reason.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::seal::*;
use veriframe::seal::keys::DeviceKey;
use veriframe::seal::verify::{verify_dir, verify_paths, ChainReport};

const N: u64 = 6;

/// A fresh store with captures 0..N; returns (tempdir, chain dir, key).
fn fresh() -> (tempfile::TempDir, PathBuf, Arc<DeviceKey>) {
    let d = tempfile::tempdir().unwrap();
    let key = new_key();
    let dir = seal_frames(d.path(), key.clone(), &config(), 0..N, Duration::ZERO);
    (d, dir, key)
}

fn verify(dir: &Path, key: &DeviceKey) -> ChainReport {
    verify_dir(dir, Some(&key.public())).unwrap()
}

/// Codes of the problems on capture `seq` (by file name).
fn codes_of(r: &ChainReport, name: &str) -> Vec<&'static str> {
    r.captures
        .iter()
        .filter(|c| c.path.file_name().unwrap() == name)
        .flat_map(|c| c.problems.iter().map(|p| p.code))
        .collect()
}

fn all_codes(r: &ChainReport) -> Vec<&'static str> {
    r.problems
        .iter()
        .map(|p| p.code)
        .chain(
            r.captures
                .iter()
                .flat_map(|c| c.problems.iter().map(|p| p.code)),
        )
        .collect()
}

fn man(seq: u64) -> String {
    format!("{}.json", stem(seq))
}

fn remove_capture(dir: &Path, seq: u64) {
    let img = image_of(dir, seq);
    fs::remove_file(img).unwrap();
    fs::remove_file(dir.join(man(seq))).unwrap();
    fs::remove_file(dir.join(format!("{}.sig", stem(seq)))).unwrap();
}

#[test]
fn untouched_store_verifies() {
    let (_d, dir, key) = fresh();
    let r = verify(&dir, &key);
    assert!(r.valid(), "{r:#?}");
    assert!(r.complete);
    assert_eq!(r.captures.len(), N as usize);
    assert_eq!((r.first_seq, r.last_seq), (Some(0), Some(N - 1)));
    // Trust on first use gives the same answer, and says so.
    let r = verify_dir(&dir, None).unwrap();
    assert!(r.valid());
    assert_eq!(r.trust, "tofu");
}

#[test]
fn image_tampering() {
    let (_d, dir, key) = fresh();
    flip(&image_of(&dir, 1), 100);
    let img2 = image_of(&dir, 2);
    let mut b = fs::read(&img2).unwrap();
    b.truncate(b.len() / 2);
    fs::write(&img2, b).unwrap();
    fs::remove_file(image_of(&dir, 3)).unwrap();
    let r = verify(&dir, &key);
    assert!(!r.valid());
    assert_eq!(codes_of(&r, &man(1)), vec!["image_hash"]);
    assert_eq!(codes_of(&r, &man(2)), vec!["image_length"]);
    assert_eq!(codes_of(&r, &man(3)), vec!["image_missing"]);
    for s in [0, 4, 5] {
        assert!(codes_of(&r, &man(s)).is_empty(), "{s}: {r:#?}");
    }
}

#[test]
fn swapped_images_are_detected() {
    let (_d, dir, key) = fresh();
    // Two JPEG captures (even seqs) of different content.
    let (a, b) = (image_of(&dir, 2), image_of(&dir, 4));
    let (ba, bb) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
    fs::write(&a, &bb).unwrap();
    fs::write(&b, &ba).unwrap();
    let r = verify(&dir, &key);
    for s in [2, 4] {
        let c = codes_of(&r, &man(s));
        assert!(
            c == vec!["image_hash"] || c == vec!["image_length"],
            "{s}: {c:?}"
        );
    }
}

/// Flip one byte in the value of every field of a manifest (and in every key name): each must
/// be rejected, as malformed or as a bad signature.
#[test]
fn every_manifest_field_is_protected() {
    let (_d, dir, key) = fresh();
    let path = dir.join(man(3));
    let orig = fs::read(&path).unwrap();
    let text = String::from_utf8(orig.clone()).unwrap();
    let mut keys_seen = 0;
    let mut start = 0;
    while let Some(off) = text[start..].find("\":") {
        let colon = start + off + 1;
        start = colon + 1;
        keys_seen += 1;
        // Value byte: inside the string, or the first byte of a number/literal/array/object.
        let mut at = colon + 1;
        if (orig[at] == b'"' && orig[at + 1] != b'"') || orig[at] == b'[' || orig[at] == b'{' {
            at += 1;
        }
        for (what, pos) in [("value", at), ("key", colon - 2)] {
            let mut b = orig.clone();
            b[pos] ^= 0x01;
            fs::write(&path, &b).unwrap();
            let r = verify(&dir, &key);
            let c = codes_of(&r, &man(3));
            assert!(
                c.first()
                    .is_some_and(|c| *c == "malformed" || *c == "bad_signature"),
                "{what} at byte {pos} ({:?}): {c:?}",
                &text[pos.saturating_sub(20)..(pos + 10).min(text.len())]
            );
            // Only the tampered capture is blamed.
            for s in [0, 1, 2, 4, 5] {
                assert!(codes_of(&r, &man(s)).is_empty(), "{s}: {r:#?}");
            }
        }
    }
    assert!(keys_seen >= 35, "{keys_seen}");
    fs::write(&path, &orig).unwrap();
    assert!(verify(&dir, &key).valid());
}

#[test]
fn signature_tampering() {
    let (_d, dir, key) = fresh();
    flip(&dir.join(format!("{}.sig", stem(1))), 10);
    let s2 = dir.join(format!("{}.sig", stem(2)));
    let b = fs::read(&s2).unwrap();
    fs::write(&s2, &b[..63]).unwrap();
    fs::remove_file(dir.join(format!("{}.sig", stem(3)))).unwrap();
    let r = verify(&dir, &key);
    assert_eq!(codes_of(&r, &man(1)), vec!["bad_signature"]);
    assert_eq!(codes_of(&r, &man(2)), vec!["bad_signature"]);
    assert_eq!(codes_of(&r, &man(3)), vec!["signature_missing"]);
}

#[test]
fn truncated_manifest() {
    let (_d, dir, key) = fresh();
    let p = dir.join(man(2));
    let b = fs::read(&p).unwrap();
    fs::write(&p, &b[..b.len() - 1]).unwrap();
    let p = dir.join(man(4));
    fs::write(&p, b"").unwrap();
    let r = verify(&dir, &key);
    assert_eq!(codes_of(&r, &man(2)), vec!["malformed"]);
    assert_eq!(codes_of(&r, &man(4)), vec!["malformed"]);
    // Not reported as gaps: the files are there, just broken.
    assert!(!all_codes(&r).contains(&"gap"), "{r:#?}");
}

#[test]
fn deleted_captures() {
    // Middle.
    let (_d, dir, key) = fresh();
    remove_capture(&dir, 2);
    let r = verify(&dir, &key);
    assert_eq!(codes_of(&r, &man(3)), vec!["gap"]);
    assert_eq!(all_codes(&r), vec!["gap"]);
    // First.
    let (_d, dir, key) = fresh();
    remove_capture(&dir, 0);
    let r = verify(&dir, &key);
    assert_eq!(all_codes(&r), vec!["gap"], "{r:#?}");
    // Last (the chain state records the head).
    let (_d, dir, key) = fresh();
    remove_capture(&dir, N - 1);
    let r = verify(&dir, &key);
    assert_eq!(all_codes(&r), vec!["tail_missing"], "{r:#?}");
    // Chain state deleted.
    let (_d, dir, key) = fresh();
    fs::remove_file(dir.join("chain.json")).unwrap();
    let r = verify(&dir, &key);
    assert_eq!(all_codes(&r), vec!["chain_state_missing"]);
    // Only the manifest deleted: gap, and the orphaned files do not count as captures.
    let (_d, dir, key) = fresh();
    fs::remove_file(dir.join(man(4))).unwrap();
    let r = verify(&dir, &key);
    assert_eq!(all_codes(&r), vec!["gap"]);
}

fn rename_capture(dir: &Path, from: u64, to: u64) {
    for ext in ["json", "sig", "jpg", "png"] {
        let f = dir.join(format!("{}.{ext}", stem(from)));
        if f.exists() {
            fs::rename(&f, dir.join(format!("{}.{ext}", stem(to)))).unwrap();
        }
    }
}

#[test]
fn reordered_captures() {
    let (_d, dir, key) = fresh();
    // Swap the files of captures 2 and 4 (4 is also JPEG, so the image names follow).
    rename_capture(&dir, 2, 100);
    rename_capture(&dir, 4, 2);
    rename_capture(&dir, 100, 4);
    let r = verify(&dir, &key);
    // Each manifest is intact but sits under the other's name, and references an image of
    // the wrong content.
    for s in [2, 4] {
        let c = codes_of(&r, &man(s));
        assert!(c.contains(&"misnamed"), "{s}: {c:?}");
    }
    assert!(!r.valid());
}

#[test]
fn duplicated_capture() {
    let (_d, dir, key) = fresh();
    for ext in ["json", "sig"] {
        fs::copy(
            dir.join(format!("{}.{ext}", stem(1))),
            dir.join(format!("{}.{ext}", stem(99))),
        )
        .unwrap();
    }
    let r = verify(&dir, &key);
    let c = codes_of(&r, &man(99));
    assert!(c.contains(&"misnamed") && c.contains(&"duplicate"), "{c:?}");
    assert!(codes_of(&r, &man(1)).is_empty());
    // A copy under a directory of its own still verifies alone only with a gap (not seq 0).
    let extra = dir.parent().unwrap().join("elsewhere");
    fs::create_dir(&extra).unwrap();
    for f in [man(3), format!("{}.sig", stem(3))] {
        fs::copy(dir.join(&f), extra.join(&f)).unwrap();
    }
    fs::copy(
        image_of(&dir, 3),
        extra.join(image_of(&dir, 3).file_name().unwrap()),
    )
    .unwrap();
    let r = verify_dir(&extra, Some(&key.public())).unwrap();
    let codes = all_codes(&r);
    assert!(
        codes.contains(&"gap") && codes.contains(&"chain_state_missing"),
        "{codes:?}"
    );
}

#[test]
fn wrong_key_and_key_change() {
    let (_d, dir, _key) = fresh();
    let other = new_key();
    let r = verify(&dir, &other);
    assert!(!r.valid());
    for c in &r.captures {
        let codes: Vec<_> = c.problems.iter().map(|p| p.code).collect();
        assert_eq!(
            codes,
            vec!["wrong_key", "bad_signature"],
            "{}",
            c.path.display()
        );
    }
    assert!(r.problems.iter().any(|p| p.code == "chain_state_invalid"));

    // A capture from another device's chain slipped in at the right seq: key change (TOFU).
    let d2 = tempfile::tempdir().unwrap();
    let dir2 = seal_frames(d2.path(), other.clone(), &config(), 0..N, Duration::ZERO);
    for ext in ["json", "sig"] {
        fs::copy(
            dir2.join(format!("{}.{ext}", stem(3))),
            dir.join(format!("{}.{ext}", stem(3))),
        )
        .unwrap();
    }
    fs::copy(image_of(&dir2, 3), image_of(&dir, 3)).unwrap();
    let r = verify_dir(&dir, None).unwrap();
    assert_eq!(
        codes_of(&r, &man(3)),
        vec!["key_changed", "bad_signature"],
        "{r:#?}"
    );
}

#[test]
fn chain_continues_across_restarts() {
    let d = tempfile::tempdir().unwrap();
    let key = new_key();
    let dir = seal_frames(d.path(), key.clone(), &config(), 0..3, Duration::ZERO);
    seal_frames(d.path(), key.clone(), &config(), 3..6, Duration::ZERO);
    let r = verify(&dir, &key);
    assert!(r.valid(), "{r:#?}");
    assert_eq!((r.first_seq, r.last_seq), (Some(0), Some(5)));
    // Deleting the newest capture between runs does not let seq be reused.
    remove_capture(&dir, 5);
    seal_frames(d.path(), key.clone(), &config(), 6..7, Duration::ZERO);
    let r = verify(&dir, &key);
    assert_eq!(all_codes(&r), vec!["gap"]);
    assert_eq!(r.last_seq, Some(6));
}

#[test]
fn retention_prunes_and_verifier_accepts_a_later_start() {
    let d = tempfile::tempdir().unwrap();
    let key = new_key();
    let mut cfg = config();
    cfg.retention_max_age = Some(Duration::from_secs(86400));
    // Five captures two days old, then four fresh ones: the old ones are pruned.
    let dir = seal_frames(
        d.path(),
        key.clone(),
        &cfg,
        0..5,
        Duration::from_secs(2 * 86400),
    );
    // Retention recorded what it deleted, signed, in the chain: the newest record names capture 7.
    let rec: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join(man(8))).unwrap()).unwrap();
    assert_eq!(rec["format"], "veriframe.erasure/1");
    assert_eq!(rec["trigger"], "retention");
    assert_eq!(rec["captures"], serde_json::json!([[5, 5]]));
    assert!(
        rec["reason"]
            .as_str()
            .unwrap()
            .contains("retention_max_age"),
        "{rec}"
    );
    assert!(verify(&dir, &key).valid());
    seal_frames(d.path(), key.clone(), &cfg, 5..9, Duration::ZERO);
    let r = verify(&dir, &key);
    assert!(r.valid(), "{r:#?}");
    // Each prune first appended a signed erasure record (trigger `retention`), which takes a seq
    // and is pruned with the captures it names: old captures 0,1,3,5,7 and records 2,4,6,8,9
    // are gone, the fresh captures are 10..=13.
    assert_eq!((r.first_seq, r.last_seq), (Some(10), Some(13)));
    assert!(!dir.join(man(9)).exists());
    assert!(r.captures.iter().all(|c| c.kind == "capture"));
    // Deleting the (new) first capture is still detected.
    let saved = d.path().join("saved");
    copy_dir(&dir, &saved);
    remove_capture(&dir, 10);
    assert_eq!(all_codes(&verify(&dir, &key)), vec!["gap"]);
    // Replaying an older chain-state record (from before pruning) does not hide deletions.
    let d0 = tempfile::tempdir().unwrap();
    let dir0 = seal_frames(d0.path(), key.clone(), &config(), 0..5, Duration::ZERO);
    copy_dir(&saved, &dir);
    fs::copy(dir0.join("chain.json"), dir.join("chain.json")).unwrap();
    fs::copy(dir0.join("chain.sig"), dir.join("chain.sig")).unwrap();
    let r = verify(&dir, &key);
    assert!(!r.valid());
}

#[test]
fn verify_paths_finds_chains_under_a_data_dir() {
    let (d, _dir, key) = fresh();
    let reports = verify_paths(&[d.path().to_path_buf()], Some(&key.public())).unwrap();
    assert_eq!(reports.len(), 1);
    assert!(reports[0].valid());
    let empty = tempfile::tempdir().unwrap();
    assert!(verify_paths(&[empty.path().to_path_buf()], None).is_err());
}
