//! JUMBF boxes (ISO/IEC 19566-5) as C2PA uses them: superboxes (`jumb`) labelled by a
//! description box (`jumd`: type UUID, toggles `requestable | label`, label), holding content boxes.

/// A C2PA JUMBF type UUID: the four-character code followed by the common suffix.
pub const fn c2pa_uuid(fourcc: &[u8; 4]) -> [u8; 16] {
    [
        fourcc[0], fourcc[1], fourcc[2], fourcc[3], 0x00, 0x11, 0x00, 0x10, 0x80, 0x00, 0x00, 0xaa,
        0x00, 0x38, 0x9b, 0x71,
    ]
}

/// Manifest store (`c2pa`).
pub const STORE: [u8; 16] = c2pa_uuid(b"c2pa");
/// Manifest (`c2ma`).
pub const MANIFEST: [u8; 16] = c2pa_uuid(b"c2ma");
/// Assertion store (`c2as`).
pub const ASSERTIONS: [u8; 16] = c2pa_uuid(b"c2as");
/// Claim (`c2cl`).
pub const CLAIM: [u8; 16] = c2pa_uuid(b"c2cl");
/// Claim signature (`c2cs`).
pub const SIGNATURE: [u8; 16] = c2pa_uuid(b"c2cs");
/// CBOR content (`cbor`).
pub const CBOR: [u8; 16] = c2pa_uuid(b"cbor");

/// A box: 32-bit length (header included), type, payload.
pub fn bx(tbox: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    // A capture's credential is far below 4 GiB; the caller checks the total.
    out.extend_from_slice(&((8 + payload.len()) as u32).to_be_bytes());
    out.extend_from_slice(tbox);
    out.extend_from_slice(payload);
    out
}

/// A description box: type UUID, toggles 0x03 (requestable, label present), NUL-terminated label.
pub fn jumd(uuid: &[u8; 16], label: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(18 + label.len());
    p.extend_from_slice(uuid);
    p.push(0x03);
    p.extend_from_slice(label.as_bytes());
    p.push(0);
    bx(b"jumd", &p)
}

/// A superbox of type `uuid` labelled `label` holding `children`.
pub fn superbox(uuid: &[u8; 16], label: &str, children: &[&[u8]]) -> Vec<u8> {
    let mut p = jumd(uuid, label);
    for c in children {
        p.extend_from_slice(c);
    }
    bx(b"jumb", &p)
}

/// A superbox holding one CBOR content box.
pub fn cbor_box(uuid: &[u8; 16], label: &str, cbor: &[u8]) -> Vec<u8> {
    superbox(uuid, label, &[&bx(b"cbor", cbor)])
}

/// What C2PA hashes for a hashed URI to a box: the superbox's payload (description and content
/// boxes), without its own 8-byte header.
pub fn payload(superbox: &[u8]) -> &[u8] {
    superbox.get(8..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superbox_layout() {
        let b = cbor_box(&CBOR, "c2pa.actions", &[0xa0]);
        // jumb(8) + jumd(8 + 16 + 1 + 13) + cbor(8 + 1)
        assert_eq!(b.len(), 8 + 38 + 9);
        assert_eq!(&b[0..4], &(b.len() as u32).to_be_bytes());
        assert_eq!(&b[4..8], b"jumb");
        assert_eq!(&b[12..16], b"jumd");
        assert_eq!(&b[16..20], b"cbor");
        assert_eq!(b[32], 0x03);
        assert_eq!(&b[33..46], b"c2pa.actions\0");
        assert_eq!(&b[50..54], b"cbor");
        assert_eq!(payload(&b).len(), b.len() - 8);
    }
}
