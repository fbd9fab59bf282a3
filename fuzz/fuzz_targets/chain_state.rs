//! Fuzz the chain-state (checkpoint, `chain.json`) parser: no input may panic, and anything
//! accepted must re-encode to exactly the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veriframe::seal::manifest::ChainState;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = ChainState::parse(data) {
        assert_eq!(c.to_canonical().unwrap(), data);
    }
});
