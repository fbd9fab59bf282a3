//! Fuzz the outbox log replay: no input may panic; the valid prefix is within the input, and
//! replaying just that prefix gives the same live entries (what `Store::open` keeps after it
//! truncates a torn tail); re-encoding the live entries replays to the same entries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veriframe::publish::store::{record, replay, PUT};

fuzz_target!(|data: &[u8]| {
    let (live, _dead, valid) = replay(data);
    assert!(valid <= data.len());
    let (again, _, valid2) = replay(&data[..valid]);
    assert_eq!(valid2, valid);
    assert_eq!(again, live);
    let mut log = Vec::new();
    for (seq, p) in &live {
        log.extend_from_slice(&record(PUT, *seq, p));
    }
    let (compacted, dead, all) = replay(&log);
    assert_eq!(all, log.len());
    assert_eq!(dead, 0);
    assert_eq!(compacted, live);
});
