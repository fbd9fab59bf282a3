//! Erasure of captures on request (`veriframe erase`): choose captures by sequence range, capture
//! time or manifest hash (an alert's `evidence`), record the erasure in the chain with a signed
//! erasure record, remove the images. The record and the removal are [`Store::erase`]; choosing
//! is the pure [`select`].
//!
//! One writer per chain: the store holds the chain directory's `flock`, so an erase refuses to
//! run while the daemon holds the chain (and the daemon refuses to start during an erase).

use std::fs;
use std::path::{Path, PathBuf};

use super::keys::DeviceKey;
use super::manifest::ChainEntry;
use super::store::{self, EraseOutcome, EraseRequest, Store};
use super::{SealConfig, SealError};

/// Which captures to erase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Sequence numbers `from..=to`.
    Seqs { from: u64, to: u64 },
    /// Capture time (`captured.wall_unix_us`) in `from..=to`, µs since the Unix epoch.
    Time { from_us: u64, to_us: u64 },
    /// Captures whose manifest hash is one of these (an MQTT alert's `evidence` list).
    Evidence(Vec<String>),
}

impl Selector {
    /// The selector as recorded in the erasure record.
    pub fn describe(&self) -> String {
        match self {
            Selector::Seqs { from, to } => format!("seq {from}-{to}"),
            Selector::Time { from_us, to_us } => {
                format!("time {}..{}", fmt_us(*from_us), fmt_us(*to_us))
            }
            Selector::Evidence(h) => format!("evidence {}", h.join(",")),
        }
    }
}

fn fmt_us(us: u64) -> String {
    humantime::format_rfc3339_micros(std::time::UNIX_EPOCH + std::time::Duration::from_micros(us))
        .to_string()
}

/// Parse `A-B` or `A` (sequence numbers).
pub fn parse_seq_range(s: &str) -> Result<Selector, String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let num = |x: &str| {
        x.trim()
            .parse::<u64>()
            .map_err(|_| format!("{s:?}: expected SEQ or FIRST-LAST (sequence numbers)"))
    };
    let (from, to) = (num(a)?, num(b)?);
    if from > to {
        return Err(format!(
            "{s:?}: the first sequence number is after the last"
        ));
    }
    Ok(Selector::Seqs { from, to })
}

/// Parse an RFC 3339 time (`2026-12-07T14:00:00Z`) as µs since the Unix epoch.
pub fn parse_time(s: &str) -> Result<u64, String> {
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{s:?}: expected an RFC 3339 time (2026-12-07T14:00:00Z): {e}"))?;
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .map_err(|_| format!("{s:?}: before 1970"))
}

/// A capture in the chain, as far as choosing goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub seq: u64,
    pub manifest_sha256: String,
    pub wall_us: u64,
}

/// The seqs of the candidates `sel` chooses, ascending. Pure.
pub fn select(candidates: &[Candidate], sel: &Selector) -> Vec<u64> {
    let mut out: Vec<u64> = candidates
        .iter()
        .filter(|c| match sel {
            Selector::Seqs { from, to } => (*from..=*to).contains(&c.seq),
            Selector::Time { from_us, to_us } => (*from_us..=*to_us).contains(&c.wall_us),
            Selector::Evidence(h) => h.iter().any(|h| h.eq_ignore_ascii_case(&c.manifest_sha256)),
        })
        .map(|c| c.seq)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The captures (not erasure records) of a chain directory. Unreadable manifests are skipped:
/// an erasure names only captures this device signed.
pub fn candidates(dir: &Path) -> Result<Vec<Candidate>, SealError> {
    let mut out = Vec::new();
    let rd = fs::read_dir(dir).map_err(|source| SealError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for ent in rd.flatten() {
        let p = ent.path();
        let is_manifest = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
            .is_some_and(|s| s.len() == 12 && s.bytes().all(|c| c.is_ascii_digit()));
        if !is_manifest {
            continue;
        }
        let Ok(bytes) = fs::read(&p) else { continue };
        if let Ok(ChainEntry::Capture(m)) = ChainEntry::parse(&bytes) {
            out.push(Candidate {
                seq: m.seq,
                manifest_sha256: crate::record::hash::sha256_hex(&bytes),
                wall_us: m.captured.wall_unix_us,
            });
        }
    }
    out.sort_by_key(|c| c.seq);
    Ok(out)
}

/// Erase the captures `sel` chooses in this device's chain under `data_dir`: refuses while
/// another process holds the chain ([`SealError::Busy`]), and when nothing matches. Returns
/// the chain directory and what was done.
pub fn erase(
    cfg: &SealConfig,
    data_dir: &Path,
    device_id: &str,
    key: &DeviceKey,
    sel: &Selector,
    reason: &str,
) -> Result<(PathBuf, EraseOutcome), SealError> {
    if reason.trim().is_empty() {
        return Err(SealError::Usage(
            "--reason must say why (e.g. the request's reference)".into(),
        ));
    }
    let captures = data_dir.join("captures");
    let dir = store::chain_dir(&captures, key.id());
    if !dir.is_dir() {
        return Err(SealError::Usage(format!(
            "{}: no captures of this device's key",
            dir.display()
        )));
    }
    let mut st = Store::open(&captures, key, device_id, cfg.retention(), cfg.fsync)?;
    let seqs = select(&candidates(&dir)?, sel);
    if seqs.is_empty() {
        return Err(SealError::Usage(format!(
            "no capture in {} matches {}",
            dir.display(),
            sel.describe()
        )));
    }
    let req = EraseRequest {
        seqs,
        trigger: "request",
        reason: reason.to_string(),
        selector: sel.describe(),
    };
    let out = st.erase(key, &req)?;
    Ok((dir, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(seq: u64, wall_us: u64) -> Candidate {
        Candidate {
            seq,
            manifest_sha256: format!("{seq:064x}"),
            wall_us,
        }
    }

    #[test]
    fn selectors_choose_by_seq_time_and_manifest_hash() {
        let cs: Vec<Candidate> = (0..10).map(|i| c(i, 1000 + i * 10)).collect();
        assert_eq!(select(&cs, &parse_seq_range("3-5").unwrap()), vec![3, 4, 5]);
        assert_eq!(select(&cs, &parse_seq_range("7").unwrap()), vec![7]);
        assert_eq!(
            select(
                &cs,
                &Selector::Time {
                    from_us: 1015,
                    to_us: 1040
                }
            ),
            vec![2, 3, 4]
        );
        let h = format!("{:064X}", 8);
        assert_eq!(select(&cs, &Selector::Evidence(vec![h])), vec![8]);
        assert!(parse_seq_range("5-3").is_err());
        assert!(parse_seq_range("x").is_err());
        assert_eq!(parse_time("1970-01-01T00:00:01Z").unwrap(), 1_000_000);
        assert!(parse_time("yesterday").is_err());
        assert_eq!(
            parse_seq_range("3-5").unwrap().describe(),
            "seq 3-5".to_string()
        );
    }
}
