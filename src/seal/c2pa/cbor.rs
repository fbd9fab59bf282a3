//! A minimal CBOR encoder (RFC 8949, deterministic: definite lengths, shortest integer heads;
//! map members in the order given). Only what C2PA claims, assertions and COSE need.

/// A CBOR data item.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Uint(u64),
    /// A negative integer `-1 - n` is written as `Neg(n)`.
    Neg(u64),
    Bytes(Vec<u8>),
    Text(String),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Tag(u64, Box<Value>),
    Bool(bool),
    Null,
}

impl Value {
    /// A map with text keys, in the given order.
    pub fn map<const N: usize>(members: [(&str, Value); N]) -> Self {
        Value::Map(
            members
                .into_iter()
                .map(|(k, v)| (Value::Text(k.into()), v))
                .collect(),
        )
    }

    pub fn text(s: impl Into<String>) -> Self {
        Value::Text(s.into())
    }

    /// Text, or null.
    pub fn opt_text(s: Option<&str>) -> Self {
        s.map_or(Value::Null, Value::text)
    }

    /// Unsigned integer, or null.
    pub fn opt_uint(n: Option<u64>) -> Self {
        n.map_or(Value::Null, Value::Uint)
    }

    /// A signed integer.
    pub fn int(n: i64) -> Self {
        if n >= 0 {
            Value::Uint(n as u64)
        } else {
            Value::Neg((-1 - n) as u64)
        }
    }

    /// The encoding.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Value::Uint(n) => head(out, 0, *n),
            Value::Neg(n) => head(out, 1, *n),
            Value::Bytes(b) => {
                head(out, 2, b.len() as u64);
                out.extend_from_slice(b);
            }
            Value::Text(s) => {
                head(out, 3, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            Value::Array(items) => {
                head(out, 4, items.len() as u64);
                for i in items {
                    i.write(out);
                }
            }
            Value::Map(members) => {
                head(out, 5, members.len() as u64);
                for (k, v) in members {
                    k.write(out);
                    v.write(out);
                }
            }
            Value::Tag(t, v) => {
                head(out, 6, *t);
                v.write(out);
            }
            Value::Bool(false) => out.push(0xf4),
            Value::Bool(true) => out.push(0xf5),
            Value::Null => out.push(0xf6),
        }
    }
}

/// Major type and argument, shortest form.
fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if n <= u8::MAX as u64 {
        out.extend_from_slice(&[m | 24, n as u8]);
    } else if n <= u16::MAX as u64 {
        out.push(m | 25);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= u32::MAX as u64 {
        out.push(m | 26);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::Value;

    /// Examples from RFC 8949 appendix A.
    #[test]
    fn encodes_rfc8949_examples() {
        let hex = |v: Value| crate::record::hash::hex(&v.to_vec());
        assert_eq!(hex(Value::Uint(0)), "00");
        assert_eq!(hex(Value::Uint(23)), "17");
        assert_eq!(hex(Value::Uint(24)), "1818");
        assert_eq!(hex(Value::Uint(1000)), "1903e8");
        assert_eq!(hex(Value::Uint(1_000_000)), "1a000f4240");
        assert_eq!(hex(Value::Uint(1_000_000_000_000)), "1b000000e8d4a51000");
        assert_eq!(hex(Value::int(-1)), "20");
        assert_eq!(hex(Value::int(-8)), "27");
        assert_eq!(hex(Value::int(-1000)), "3903e7");
        assert_eq!(hex(Value::text("IETF")), "6449455446");
        assert_eq!(hex(Value::Bytes(vec![1, 2, 3, 4])), "4401020304");
        assert_eq!(hex(Value::Null), "f6");
        assert_eq!(hex(Value::Bool(true)), "f5");
        assert_eq!(
            hex(Value::Array(vec![Value::Uint(1), Value::Uint(2)])),
            "820102"
        );
        assert_eq!(
            hex(Value::map([("a", Value::Uint(1)), ("b", Value::Uint(2))])),
            "a2616101616202"
        );
        assert_eq!(
            hex(Value::Tag(1, Box::new(Value::Uint(1_363_896_240)))),
            "c11a514b67b0"
        );
    }
}
