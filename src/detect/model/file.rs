//! Veriframe model files: GGUF (`candle_core::quantized::gguf_file`, version 2) holding
//! already-folded network tensors plus metadata.
//!
//! Metadata keys (all written by [`write`], checked by [`read`]):
//!
//! | key | type | meaning |
//! |---|---|---|
//! | `general.architecture` | string | e.g. `minifasnet_v2`, `minifasnet_v1se` |
//! | `veriframe.format_version` | u32 | [`FORMAT_VERSION`] |
//! | `veriframe.quant` | string | `f32` or `q8_0` |
//! | `veriframe.crop_scale` | f32 | face-box scale of the crop the network expects |
//! | `veriframe.input` | string | human-readable input convention |
//! | `veriframe.source_sha256` | string | SHA-256 (hex) of the file the weights came from |
//! | `veriframe.weights_sha256` | string | SHA-256 (hex) over the stored tensors, see [`weights_sha256`] |
//!
//! Tensors keep upstream names with the batch norm folded in (see `minifasnet.rs`).

use std::collections::BTreeMap;
use std::io::{Cursor, Seek, Write};
use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;

use crate::detect::{DetectError, Quant};

/// Bumped when the tensor layout or metadata changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;

/// A model file in memory: metadata strings/numbers plus named tensors.
#[derive(Debug)]
pub struct ModelFile {
    pub arch: String,
    pub quant: Quant,
    pub crop_scale: f32,
    pub input: String,
    pub source_sha256: String,
    /// Tensors by name (sorted, which fixes the hash order).
    pub tensors: BTreeMap<String, QTensor>,
}

fn model_err(m: impl std::fmt::Display) -> DetectError {
    DetectError::Model(m.to_string())
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 over the tensors in name order: for each, the name, a 0 byte, the GGML type name
/// (`F32`, `Q8_0`) and a 0 byte, the number of dims (u32 LE), each dim (u64 LE), then the raw stored bytes.
pub fn weights_sha256(tensors: &BTreeMap<String, QTensor>) -> Result<String, DetectError> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (name, t) in tensors {
        ctx.update(name.as_bytes());
        ctx.update(&[0]);
        ctx.update(format!("{:?}", t.dtype()).as_bytes());
        ctx.update(&[0]);
        let dims = t.shape().dims();
        ctx.update(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            ctx.update(&(*d as u64).to_le_bytes());
        }
        ctx.update(&t.data().map_err(model_err)?);
    }
    Ok(ctx
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn quant_name(q: Quant) -> &'static str {
    match q {
        Quant::F32 => "f32",
        Quant::Q8_0 => "q8_0",
    }
}

/// Serialise to GGUF bytes.
pub fn to_bytes(m: &ModelFile) -> Result<Vec<u8>, DetectError> {
    use gguf_file::Value;
    let hash = weights_sha256(&m.tensors)?;
    let meta: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String(m.arch.clone())),
        ("veriframe.format_version", Value::U32(FORMAT_VERSION)),
        ("veriframe.quant", Value::String(quant_name(m.quant).into())),
        ("veriframe.crop_scale", Value::F32(m.crop_scale)),
        ("veriframe.input", Value::String(m.input.clone())),
        (
            "veriframe.source_sha256",
            Value::String(m.source_sha256.clone()),
        ),
        ("veriframe.weights_sha256", Value::String(hash)),
    ];
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &QTensor)> = m.tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut cur = Cursor::new(Vec::new());
    gguf_file::write(&mut cur, &meta_refs, &tensors).map_err(model_err)?;
    Ok(cur.into_inner())
}

/// Write atomically (temp file + rename) to `path`.
pub fn write(m: &ModelFile, path: &Path) -> Result<(), DetectError> {
    let bytes = to_bytes(m)?;
    let tmp = path.with_extension("gguf.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Parse GGUF bytes; verifies the format version and the weights hash.
pub fn from_bytes(bytes: &[u8]) -> Result<ModelFile, DetectError> {
    let mut cur = Cursor::new(bytes);
    let content = gguf_file::Content::read(&mut cur).map_err(model_err)?;
    let md = &content.metadata;
    let s = |k: &str| -> Result<String, DetectError> {
        md.get(k)
            .ok_or_else(|| model_err(format!("model file lacks {k}")))?
            .to_string()
            .cloned()
            .map_err(model_err)
    };
    let version = md
        .get("veriframe.format_version")
        .ok_or_else(|| model_err("not a Veriframe model file (no veriframe.format_version)"))?
        .to_u32()
        .map_err(model_err)?;
    if version != FORMAT_VERSION {
        return Err(model_err(format!(
            "model file format {version}, this build reads {FORMAT_VERSION}"
        )));
    }
    let quant = match s("veriframe.quant")?.as_str() {
        "f32" => Quant::F32,
        "q8_0" => Quant::Q8_0,
        other => return Err(model_err(format!("unknown quant {other:?}"))),
    };
    let crop_scale = md
        .get("veriframe.crop_scale")
        .ok_or_else(|| model_err("model file lacks veriframe.crop_scale"))?
        .to_f32()
        .map_err(model_err)?;
    let mut tensors = BTreeMap::new();
    for name in content.tensor_infos.keys() {
        cur.rewind()?;
        let t = content
            .tensor(&mut cur, name, &Device::Cpu)
            .map_err(model_err)?;
        tensors.insert(name.clone(), t);
    }
    let stored = s("veriframe.weights_sha256")?;
    let actual = weights_sha256(&tensors)?;
    if stored != actual {
        return Err(model_err(format!(
            "model file weights hash mismatch: stored {stored}, computed {actual}"
        )));
    }
    Ok(ModelFile {
        arch: s("general.architecture")?,
        quant,
        crop_scale,
        input: s("veriframe.input")?,
        source_sha256: s("veriframe.source_sha256")?,
        tensors,
    })
}

/// Read a model file from disk.
pub fn read(path: &Path) -> Result<ModelFile, DetectError> {
    let bytes = std::fs::read(path)?;
    from_bytes(&bytes).map_err(|e| model_err(format!("{}: {e}", path.display())))
}

/// Quantize a 2-D f32 weight `(n, k)` to Q8_0, zero-padding `k` up to a multiple of 32.
pub fn quantize_q8_padded(data: &[f32], n: usize, k: usize) -> Result<QTensor, DetectError> {
    let kp = k.div_ceil(32) * 32;
    let mut padded = vec![0f32; n * kp];
    for r in 0..n {
        padded[r * kp..r * kp + k].copy_from_slice(&data[r * k..(r + 1) * k]);
    }
    let t = candle_core::Tensor::from_vec(padded, (n, kp), &Device::Cpu).map_err(model_err)?;
    QTensor::quantize(&t, GgmlDType::Q8_0).map_err(model_err)
}

/// An f32 tensor as a QTensor (stored unquantized).
pub fn f32_qtensor(data: Vec<f32>, dims: &[usize]) -> Result<QTensor, DetectError> {
    let t = candle_core::Tensor::from_vec(data, dims, &Device::Cpu).map_err(model_err)?;
    QTensor::quantize(&t, GgmlDType::F32).map_err(model_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ModelFile {
        let mut tensors = BTreeMap::new();
        tensors.insert(
            "a.weight".into(),
            quantize_q8_padded(
                &(0..3 * 40).map(|i| i as f32 / 7.0).collect::<Vec<_>>(),
                3,
                40,
            )
            .unwrap(),
        );
        tensors.insert(
            "a.bias".into(),
            f32_qtensor(vec![1.0, 2.0, 3.0], &[3]).unwrap(),
        );
        ModelFile {
            arch: "test".into(),
            quant: Quant::Q8_0,
            crop_scale: 2.7,
            input: "x".into(),
            source_sha256: sha256_hex(b"src"),
            tensors,
        }
    }

    #[test]
    fn round_trip_keeps_metadata_and_tensors() {
        let m = sample();
        let bytes = to_bytes(&m).unwrap();
        let back = from_bytes(&bytes).unwrap();
        assert_eq!(back.arch, "test");
        assert_eq!(back.quant, Quant::Q8_0);
        assert_eq!(back.crop_scale, 2.7);
        assert_eq!(back.source_sha256, m.source_sha256);
        let w = &back.tensors["a.weight"];
        assert_eq!(w.dtype(), GgmlDType::Q8_0);
        assert_eq!(w.shape().dims(), &[3, 64]);
        assert_eq!(
            weights_sha256(&back.tensors).unwrap(),
            weights_sha256(&m.tensors).unwrap()
        );
        let b = back.tensors["a.bias"]
            .dequantize(&Device::Cpu)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(b, vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn corrupted_tensor_data_is_rejected() {
        let bytes = to_bytes(&sample()).unwrap();
        let mut bad = bytes.clone();
        // Sorted names: a.bias, a.weight -> the weight's data is last; flip its last non-zero byte.
        let i = (0..bad.len()).rev().find(|&i| bad[i] != 0).unwrap();
        bad[i] ^= 0x55;
        let e = from_bytes(&bad).unwrap_err().to_string();
        assert!(e.contains("hash mismatch"), "{e}");
        assert!(from_bytes(&bytes[..10]).is_err());
    }
}
