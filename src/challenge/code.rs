//! The challenge code: a fresh nonce from the system's CSPRNG (`ring::rand`) and the on/off
//! pattern derived from it deterministically (HMAC-SHA-256), so the nonce in a manifest
//! reproduces the code a verifier should see.

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use super::ChallengeError;

/// Bytes in a challenge nonce.
pub const NONCE_LEN: usize = 16;

/// Domain separation for the code derivation.
const CODE_KEY: &[u8] = b"veriframe challenge code v1";

/// A fresh nonce from the operating system's CSPRNG.
pub fn fresh_nonce() -> Result<[u8; NONCE_LEN], ChallengeError> {
    let mut n = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut n)
        .map_err(|_| ChallengeError::Random)?;
    Ok(n)
}

/// The illuminator pattern: `bits` (on/off), each held for `frames_per_bit` camera frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    pub bits: Vec<bool>,
    pub frames_per_bit: u32,
}

impl Code {
    /// The code for `nonce`: bits from HMAC-SHA-256(key, nonce ‖ counter), taking the first
    /// counter (0, 1, …) whose bits are balanced (on and off counts differ by at most 2) and
    /// switch at least `bits / 3` times, so every code has enough of both states and edges for
    /// the correlation and the lag estimate. Deterministic: the same nonce gives the same code.
    pub fn from_nonce(nonce: &[u8], bits: u32, frames_per_bit: u32) -> Code {
        let key = hmac::Key::new(hmac::HMAC_SHA256, CODE_KEY);
        let bits = bits as usize;
        let mut last = Vec::new();
        for counter in 0u32..1024 {
            let mut ctx = hmac::Context::with_key(&key);
            ctx.update(nonce);
            ctx.update(&counter.to_be_bytes());
            let tag = ctx.sign();
            let b: Vec<bool> = (0..bits)
                .map(|i| {
                    let byte = tag.as_ref()[(i / 8) % tag.as_ref().len()];
                    (byte >> (i % 8)) & 1 == 1
                })
                .collect();
            if Self::acceptable(&b) {
                return Code {
                    bits: b,
                    frames_per_bit,
                };
            }
            last = b;
        }
        // 1024 draws without a balanced pattern has probability far below 2^-100 for the
        // allowed lengths (4..=64 bits); fall back to the last draw rather than fail.
        Code {
            bits: last,
            frames_per_bit,
        }
    }

    fn acceptable(b: &[bool]) -> bool {
        let ones = b.iter().filter(|&&x| x).count();
        let zeros = b.len() - ones;
        let switches = b.windows(2).filter(|w| w[0] != w[1]).count();
        ones.abs_diff(zeros) <= 2 && switches >= b.len() / 3 && ones > 0 && zeros > 0
    }

    /// Frames the code is played for.
    pub fn len_frames(&self) -> i64 {
        self.bits.len() as i64 * self.frames_per_bit as i64
    }

    /// The illuminator state commanded for challenge frame `index` (off outside the code).
    pub fn state_at(&self, index: i64) -> bool {
        if index < 0 || index >= self.len_frames() {
            return false;
        }
        self.bits[(index / self.frames_per_bit.max(1) as i64) as usize]
    }

    /// `1` and `0` characters, e.g. `101100110010`.
    pub fn to_bit_string(&self) -> String {
        self.bits
            .iter()
            .map(|&b| if b { '1' } else { '0' })
            .collect()
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parse lowercase hex (as written by [`hex`]).
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            let d = s.get(i..i + 2)?;
            if d.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
                u8::from_str_radix(d, 16).ok()
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_is_deterministic_balanced_and_nonce_dependent() {
        let a = Code::from_nonce(&[1; 16], 12, 2);
        assert_eq!(a, Code::from_nonce(&[1; 16], 12, 2));
        let ones = a.bits.iter().filter(|&&b| b).count();
        assert!((5..=7).contains(&ones), "{}", a.to_bit_string());
        assert_eq!(a.len_frames(), 24);
        let distinct: std::collections::HashSet<String> = (0u8..40)
            .map(|i| Code::from_nonce(&[i; 16], 12, 2).to_bit_string())
            .collect();
        assert!(distinct.len() > 25, "{}", distinct.len());
    }

    #[test]
    fn state_follows_the_bits_and_is_off_outside() {
        let c = Code {
            bits: vec![true, false, true],
            frames_per_bit: 2,
        };
        let s: Vec<bool> = (-1..7).map(|i| c.state_at(i)).collect();
        assert_eq!(s, [false, true, true, false, false, true, true, false]);
    }

    #[test]
    fn fresh_nonces_differ_and_hex_round_trips() {
        let a = fresh_nonce().unwrap();
        let b = fresh_nonce().unwrap();
        assert_ne!(a, b);
        assert_eq!(unhex(&hex(&a)).unwrap(), a.to_vec());
        assert!(unhex("0g").is_none());
        assert!(unhex("abc").is_none());
    }
}
