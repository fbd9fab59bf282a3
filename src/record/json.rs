//! Canonical JSON: UTF-8, object keys sorted, no whitespace, integers only (|n| ≤ 2^53−1),
//! strings escaped as RFC 8785 (JCS) does. With integer-only numbers this is exactly the JCS
//! encoding, so any JCS library reproduces the signed bytes (docs/capture-format.md). Capture
//! manifests, chain-state records and camera pin records are signed in this form.

use serde::Serialize;
use serde_json::Value;

/// Largest integer in a canonical document (IEEE double safe range, as JCS requires).
pub const MAX_INT: u64 = (1 << 53) - 1;

/// A document the canonical form cannot hold (a number that is not an integer in 0..=2^53−1, or
/// a value serde_json cannot represent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotCanonical(pub String);

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_value(out: &mut String, v: &Value) -> Result<(), NotCanonical> {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_u64() {
            Some(u) if u <= MAX_INT => out.push_str(&u.to_string()),
            _ => {
                return Err(NotCanonical(format!(
                    "number {n} is not an integer in 0..=2^53-1"
                )))
            }
        },
        Value::String(s) => write_string(out, s),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, x)?;
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            // JCS sorts by UTF-16 code units; all our keys are ASCII, where that is byte order.
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_value(out, &m[k])?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// Canonical bytes of any serializable document.
pub fn canonical<T: Serialize>(doc: &T) -> Result<Vec<u8>, NotCanonical> {
    let v = serde_json::to_value(doc).map_err(|e| NotCanonical(e.to_string()))?;
    let mut s = String::new();
    write_value(&mut s, &v)?;
    Ok(s.into_bytes())
}
