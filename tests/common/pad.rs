//! Shared helpers for the PAD integration tests (`tests/pad_*.rs`).
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared` beside the crate root.
pub fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// The path under `../shared`, or `None` after printing `skipped: missing <path>` — unless
/// `VERIFRAME_REQUIRE_SHARED` is set, in which case a missing path fails the test.
pub fn require(rel: &str) -> Option<PathBuf> {
    let p = shared().join(rel);
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("VERIFRAME_REQUIRE_SHARED").is_some() {
        panic!("missing {} (VERIFRAME_REQUIRE_SHARED is set)", p.display());
    }
    eprintln!("skipped: missing {}", p.display());
    None
}

pub const MINIFAS: &str = "models/upstream/minifasnet";
pub const V2: &str = "2.7_80x80_MiniFASNetV2";
pub const V1SE: &str = "4_0_0_80x80_MiniFASNetV1SE";

/// A PNG crop read as RGB and reordered to packed B,G,R.
pub fn png_bgr(path: &std::path::Path) -> Vec<u8> {
    let img = image::open(path).expect("golden PNG").to_rgb8();
    img.as_raw()
        .chunks_exact(3)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect()
}
