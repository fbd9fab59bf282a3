//! Fuzz the manifest parser: no input may panic, and anything accepted must re-encode to exactly
//! the input (canonical form, docs/capture-format.md §3.1).
#![no_main]

use libfuzzer_sys::fuzz_target;
use veriframe::seal::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        assert_eq!(m.to_canonical().unwrap(), data);
    }
});
