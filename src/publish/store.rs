//! The outbox on disk: an fsynced, append-only log of `Put(seq, payload)` and `Del(seq)` records,
//! compacted by rewrite-and-rename.
//!
//! Why a log and not SQLite/redb: the outbox only ever appends at one end and deletes at the other,
//! a log does exactly that with one `write` + one `fdatasync` per batch (group commit), needs no
//! new dependency (SQLite's C build or redb would add build time on 2-core and cross builds), and
//! its crash behaviour is easy to state and test:
//!
//! - record = `len: u32 LE | crc32: u32 LE | kind: u8 | seq: u64 LE | payload`, where `len` counts
//!   `kind..payload` and the CRC-32 (IEEE) covers the same bytes;
//! - `Put`s are fsynced before the alert is published ([`Store::sync`]); `Del`s are written without
//!   waiting — a `Del` lost in a crash only means one redelivery of an alert the consumer
//!   de-duplicates by id;
//! - on open, the log is replayed up to the first short or corrupt record (a torn tail from a crash
//!   mid-write), and truncated there;
//! - when dead records dominate, the live entries are written to `outbox.log.tmp`, fsynced, renamed
//!   over `outbox.log`, and the directory fsynced: a crash leaves either the old or the new log.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::PublishError;

/// Record kinds.
pub const PUT: u8 = 1;
pub const DEL: u8 = 2;
const HEADER: usize = 8;
/// Largest payload accepted (an alert is well under 4 KiB).
pub const MAX_PAYLOAD: usize = 256 * 1024;
const COMPACT_MIN_DEAD: usize = 4096;

/// The log file and the live entries it holds.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    file: File,
    live: BTreeMap<u64, Vec<u8>>,
    dead_records: usize,
    dirty: bool,
    syncs: u64,
}

fn io_err(path: &Path, source: std::io::Error) -> PublishError {
    PublishError::Outbox {
        path: path.to_path_buf(),
        source,
    }
}

impl Store {
    /// Open (or create) the log in `dir`, replaying it.
    pub fn open(dir: &Path) -> Result<Self, PublishError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let path = dir.join("outbox.log");
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io_err(&path, e))?;
        let (live, dead_records, valid) = replay(&bytes);
        if valid < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                kept = valid,
                dropped = bytes.len() - valid,
                "outbox log had a torn or corrupt tail; truncated"
            );
            file.set_len(valid as u64).map_err(|e| io_err(&path, e))?;
            file.sync_all().map_err(|e| io_err(&path, e))?;
        }
        file.seek(SeekFrom::End(0)).map_err(|e| io_err(&path, e))?;
        Ok(Self {
            path,
            file,
            live,
            dead_records,
            dirty: false,
            syncs: 0,
        })
    }

    /// Live entries in sequence order.
    pub fn entries(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.live.iter().map(|(s, p)| (*s, p.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Highest sequence number present (live), if any.
    pub fn last_seq(&self) -> Option<u64> {
        self.live.keys().next_back().copied()
    }

    /// Append a `Put`. Durable only after [`Store::sync`].
    pub fn put(&mut self, seq: u64, payload: &[u8]) -> Result<(), PublishError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(PublishError::TooLarge(payload.len()));
        }
        let rec = record(PUT, seq, payload);
        self.file
            .write_all(&rec)
            .map_err(|e| io_err(&self.path, e))?;
        self.live.insert(seq, payload.to_vec());
        self.dirty = true;
        Ok(())
    }

    /// Append a `Del` (not synced: see the module docs). Compacts when worthwhile.
    pub fn delete(&mut self, seq: u64) -> Result<(), PublishError> {
        if self.live.remove(&seq).is_none() {
            return Ok(());
        }
        self.file
            .write_all(&record(DEL, seq, &[]))
            .map_err(|e| io_err(&self.path, e))?;
        self.dead_records += 2;
        self.dirty = true;
        if self.dead_records >= COMPACT_MIN_DEAD && self.dead_records > 4 * self.live.len() {
            self.compact()?;
        }
        Ok(())
    }

    /// Make everything written so far durable.
    pub fn sync(&mut self) -> Result<(), PublishError> {
        if self.dirty {
            self.file.sync_data().map_err(|e| io_err(&self.path, e))?;
            self.dirty = false;
            self.syncs += 1;
        }
        Ok(())
    }

    /// fdatasyncs made by [`Store::sync`] since open.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// Rewrite the log with only the live entries (atomic rename).
    pub fn compact(&mut self) -> Result<(), PublishError> {
        let tmp = self.path.with_extension("log.tmp");
        let mut buf = Vec::new();
        for (seq, p) in &self.live {
            buf.extend_from_slice(&record(PUT, *seq, p));
        }
        {
            let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
            f.write_all(&buf).map_err(|e| io_err(&tmp, e))?;
            f.sync_all().map_err(|e| io_err(&tmp, e))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(|e| io_err(&self.path, e))?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        self.file = OpenOptions::new()
            .append(true)
            .read(true)
            .open(&self.path)
            .map_err(|e| io_err(&self.path, e))?;
        self.dead_records = 0;
        self.dirty = false;
        Ok(())
    }
}

/// Encode one record (`PUT` = 1 with a payload, `DEL` = 2 without).
pub fn record(kind: u8, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(9 + payload.len());
    body.push(kind);
    body.extend_from_slice(&seq.to_le_bytes());
    body.extend_from_slice(payload);
    let mut rec = Vec::with_capacity(HEADER + body.len());
    rec.extend_from_slice(&(body.len() as u32).to_le_bytes());
    rec.extend_from_slice(&crc32(&body).to_le_bytes());
    rec.extend_from_slice(&body);
    rec
}

/// Replay a log's bytes (as read on open): returns the live entries, the dead record count, and
/// the length of the valid prefix (a torn or corrupt tail is cut there). Never panics on any
/// input (fuzzed: `fuzz/fuzz_targets/outbox_log.rs`).
pub fn replay(bytes: &[u8]) -> (BTreeMap<u64, Vec<u8>>, usize, usize) {
    let mut live = BTreeMap::new();
    let mut dead = 0;
    let mut at = 0;
    while bytes.len() - at >= HEADER {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        if !(9..=9 + MAX_PAYLOAD).contains(&len) || bytes.len() - at - HEADER < len {
            break;
        }
        let body = &bytes[at + HEADER..at + HEADER + len];
        if crc32(body) != crc {
            break;
        }
        let seq = u64::from_le_bytes(body[1..9].try_into().expect("8 bytes"));
        match body[0] {
            PUT => {
                live.insert(seq, body[9..].to_vec());
            }
            DEL => {
                if live.remove(&seq).is_some() {
                    dead += 2;
                }
            }
            _ => break,
        }
        at += HEADER + len;
    }
    (live, dead, at)
}

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (IEEE 802.3, as in zlib).
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn entries_survive_reopen_and_deletes_stick() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Store::open(dir.path()).unwrap();
            for i in 1..=5u64 {
                s.put(i, format!("alert {i}").as_bytes()).unwrap();
            }
            s.sync().unwrap();
            s.delete(2).unwrap();
            s.delete(4).unwrap();
            s.sync().unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let got: Vec<(u64, Vec<u8>)> = s.entries().map(|(q, p)| (q, p.to_vec())).collect();
        assert_eq!(
            got,
            vec![
                (1, b"alert 1".to_vec()),
                (3, b"alert 3".to_vec()),
                (5, b"alert 5".to_vec())
            ]
        );
        assert_eq!(s.last_seq(), Some(5));
    }

    /// An outbox in `dir` holding entries 1 ("one") and 2 ("two"), synced and closed; its log file.
    fn two_entries(dir: &Path) -> PathBuf {
        let mut s = Store::open(dir).unwrap();
        s.put(1, b"one").unwrap();
        s.put(2, b"two").unwrap();
        s.sync().unwrap();
        dir.join("outbox.log")
    }

    #[test]
    fn torn_tail_is_truncated_and_earlier_entries_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = two_entries(dir.path());
        let full = std::fs::read(&path).unwrap();
        // Simulate a crash in the middle of writing a third record.
        let third = record(PUT, 3, b"three");
        let mut torn = full.clone();
        torn.extend_from_slice(&third[..third.len() - 2]);
        std::fs::write(&path, &torn).unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), full.len() as u64);
        // Appending after recovery works and survives another reopen.
        s.put(3, b"three").unwrap();
        s.sync().unwrap();
        drop(s);
        assert_eq!(Store::open(dir.path()).unwrap().len(), 3);
    }

    #[test]
    fn corrupt_record_stops_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = two_entries(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40; // flip a payload bit of record 2
        std::fs::write(&path, &bytes).unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.entries().map(|(q, _)| q).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn compaction_keeps_live_entries_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        for i in 0..3000u64 {
            s.put(i, &[7u8; 100]).unwrap();
        }
        for i in 0..2990u64 {
            s.delete(i).unwrap(); // compacts once along the way
        }
        s.sync().unwrap();
        s.compact().unwrap();
        let size = std::fs::metadata(dir.path().join("outbox.log"))
            .unwrap()
            .len();
        assert!(size < 200 * 100, "log not compacted: {size} bytes");
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.len(), 10);
        assert_eq!(s.entries().next().map(|(q, _)| q), Some(2990));
    }
}
