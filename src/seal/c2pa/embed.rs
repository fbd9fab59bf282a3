//! Where a C2PA manifest store goes in an image, and how it is wrapped: JPEG APP11 segments
//! (JPEG XT boxes, ISO/IEC 19566-5 / C2PA §A.3.1) after SOI and any APP0, or a PNG `caBX` chunk
//! after IHDR. Pure functions over bytes.

use super::C2paError;

/// APP11 payload bytes of store data per segment (as the C2PA SDK writes; the maximum is 65,523).
const APP11_CHUNK: usize = 64_000;
/// JPEG XT box instance number of the manifest store (any unique value).
const BOX_INSTANCE: [u8; 2] = [0x02, 0x11];

/// Image kinds a credential can be embedded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Jpeg,
    Png,
}

impl Kind {
    pub fn from_media_type(media_type: &str) -> Result<Self, C2paError> {
        match media_type {
            "image/jpeg" => Ok(Kind::Jpeg),
            "image/png" => Ok(Kind::Png),
            other => Err(C2paError::Unsupported(other.to_string())),
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Kind::Jpeg => "image/jpeg",
            Kind::Png => "image/png",
        }
    }

    /// File extension of the signed copy (`<seq>.c2pa.<ext>`).
    pub fn ext(self) -> &'static str {
        match self {
            Kind::Jpeg => "jpg",
            Kind::Png => "png",
        }
    }
}

/// Offset at which the store is inserted.
pub fn insertion_point(kind: Kind, image: &[u8]) -> Result<usize, C2paError> {
    match kind {
        Kind::Jpeg => {
            if !image.starts_with(&[0xff, 0xd8]) {
                return Err(C2paError::Image("not a JPEG (no SOI marker)".into()));
            }
            // After SOI and every APP0 (JFIF, JFXX) that follows it.
            let mut at = 2;
            while image.get(at..at + 2) == Some(&[0xff, 0xe0]) {
                let len = image
                    .get(at + 2..at + 4)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
                    .ok_or_else(|| C2paError::Image("truncated APP0 segment".into()))?;
                if len < 2 || at + 2 + len > image.len() {
                    return Err(C2paError::Image("truncated APP0 segment".into()));
                }
                at += 2 + len;
            }
            Ok(at)
        }
        Kind::Png => {
            const SIG: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
            if !image.starts_with(&SIG) || image.get(12..16) != Some(b"IHDR") {
                return Err(C2paError::Image("not a PNG (no signature and IHDR)".into()));
            }
            let len = u32::from_be_bytes([image[8], image[9], image[10], image[11]]) as usize;
            let end = 8 + 12 + len;
            if end > image.len() {
                return Err(C2paError::Image("truncated IHDR chunk".into()));
            }
            Ok(end)
        }
    }
}

/// The bytes that carry `store` inside an image of `kind` (the region a data-hash excludes).
pub fn wrap(kind: Kind, store: &[u8]) -> Result<Vec<u8>, C2paError> {
    if store.len() < 8 {
        return Err(C2paError::Image("manifest store too short".into()));
    }
    match kind {
        Kind::Jpeg => {
            let chunks = store.chunks(APP11_CHUNK);
            let mut out = Vec::with_capacity(store.len() + chunks.len() * 20);
            for (i, chunk) in chunks.enumerate() {
                // Every segment after the first repeats the superbox's LBox and TBox.
                let repeat: &[u8] = if i == 0 { &[] } else { &store[..8] };
                let content_len = 2 + 2 + 4 + repeat.len() + chunk.len();
                out.extend_from_slice(&[0xff, 0xeb]);
                out.extend_from_slice(&((2 + content_len) as u16).to_be_bytes());
                out.extend_from_slice(b"JP");
                out.extend_from_slice(&BOX_INSTANCE);
                out.extend_from_slice(&(i as u32 + 1).to_be_bytes());
                out.extend_from_slice(repeat);
                out.extend_from_slice(chunk);
            }
            Ok(out)
        }
        Kind::Png => {
            let len = u32::try_from(store.len())
                .map_err(|_| C2paError::Image("manifest store too large for a PNG chunk".into()))?;
            let mut out = Vec::with_capacity(store.len() + 12);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(b"caBX");
            out.extend_from_slice(store);
            let crc = crc32(&out[4..]);
            out.extend_from_slice(&crc.to_be_bytes());
            Ok(out)
        }
    }
}

/// CRC-32 (ISO-HDLC, as PNG uses), bitwise: a few hundred kB per capture at most.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn jpeg_store_goes_after_soi_and_app0() {
        let mut jpeg = vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x04, 1, 2, 0xff, 0xdb];
        assert_eq!(insertion_point(Kind::Jpeg, &jpeg).unwrap(), 8);
        jpeg.drain(2..8);
        assert_eq!(insertion_point(Kind::Jpeg, &jpeg).unwrap(), 2);
        assert!(insertion_point(Kind::Jpeg, b"GIF89a").is_err());
        // A truncated APP0 is an error, not a panic.
        assert!(insertion_point(Kind::Jpeg, &[0xff, 0xd8, 0xff, 0xe0, 0x00, 0x40]).is_err());
    }

    #[test]
    fn large_stores_span_app11_segments_repeating_the_box_header() {
        let mut store = vec![0u8; 150_000];
        store[..8].copy_from_slice(&[0, 2, 0x49, 0xf0, b'j', b'u', b'm', b'b']);
        let w = wrap(Kind::Jpeg, &store).unwrap();
        // 3 segments: 4 (marker, length) + 8 (JP, En, Z) each, + 8 repeated in segments 2 and 3.
        assert_eq!(w.len(), store.len() + 3 * 12 + 2 * 8);
        assert_eq!(&w[0..2], &[0xff, 0xeb]);
        assert_eq!(&w[4..6], b"JP");
        assert_eq!(&w[8..12], &1u32.to_be_bytes());
        let second = 4 + 8 + APP11_CHUNK;
        assert_eq!(&w[second..second + 2], &[0xff, 0xeb]);
        assert_eq!(&w[second + 8..second + 12], &2u32.to_be_bytes());
        assert_eq!(&w[second + 12..second + 20], &store[..8]);
    }
}
