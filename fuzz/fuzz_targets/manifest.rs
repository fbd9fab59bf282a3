//! Fuzz the manifest and chain-state parsers: no input may panic, and anything accepted must
//! re-encode to exactly the input (canonical form).
#![no_main]

use libfuzzer_sys::fuzz_target;
use veriframe::seal::manifest::{ChainState, Manifest};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        assert_eq!(m.to_canonical().unwrap(), data);
    }
    if let Ok(c) = ChainState::parse(data) {
        assert_eq!(c.to_canonical().unwrap(), data);
    }
});
