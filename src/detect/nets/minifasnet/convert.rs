//! Conversion of upstream MiniFASNet weights (a PyTorch state dict saved as safetensors) into a
//! Veriframe model file: every batch norm folded into the preceding convolution, pointwise and
//! linear weights quantized to Q8_0 (or kept f32), metadata recorded.

use std::collections::{BTreeMap, HashMap};

use candle_core::quantized::QTensor;
use candle_core::{DType, Device};

use super::{block_names, err, Arch, INPUT_CONVENTION};
use crate::detect::model::file::{f32_qtensor, quantize_q8_padded, sha256_hex, ModelFile};
use crate::detect::{DetectError, Quant};

const BN_EPS: f64 = 1e-5;

/// A raw f32 tensor: dims + data.
#[derive(Debug, Clone)]
struct Raw {
    dims: Vec<usize>,
    data: Vec<f32>,
}

fn take(raw: &HashMap<String, Raw>, name: &str) -> Result<Raw, DetectError> {
    raw.get(name)
        .cloned()
        .ok_or_else(|| err(format!("weights lack tensor {name:?}")))
}

/// Fold `<p>.bn` (BatchNorm) into the conv weight `w` (out channels first): returns
/// (weight scaled per output channel, bias).
fn fold_bn(
    raw: &HashMap<String, Raw>,
    bn: &str,
    w: &Raw,
) -> Result<(Vec<f32>, Vec<f32>), DetectError> {
    let g = take(raw, &format!("{bn}.weight"))?.data;
    let b = take(raw, &format!("{bn}.bias"))?.data;
    let m = take(raw, &format!("{bn}.running_mean"))?.data;
    let v = take(raw, &format!("{bn}.running_var"))?.data;
    let n = w.dims[0];
    if [g.len(), b.len(), m.len(), v.len()].iter().any(|&l| l != n) {
        return Err(err(format!(
            "{bn}: batch-norm size does not match {n} channels"
        )));
    }
    let per = w.data.len() / n;
    let mut wf = Vec::with_capacity(w.data.len());
    let mut bias = Vec::with_capacity(n);
    for o in 0..n {
        let s = f64::from(g[o]) / (f64::from(v[o]) + BN_EPS).sqrt();
        for &x in &w.data[o * per..(o + 1) * per] {
            wf.push((f64::from(x) * s) as f32);
        }
        bias.push((f64::from(b[o]) - f64::from(m[o]) * s) as f32);
    }
    Ok((wf, bias))
}

/// Turn an upstream state dict (f32 tensors by name) into folded tensors.
fn fold(
    raw: &HashMap<String, Raw>,
    quant: Quant,
) -> Result<BTreeMap<String, QTensor>, DetectError> {
    let mut out = BTreeMap::new();
    let mut put = |name: String, t: QTensor| {
        out.insert(name, t);
    };
    // Pointwise / linear weight (n, k): Q8_0 (k padded to 32) or f32.
    let mm = |data: Vec<f32>, n: usize, k: usize| -> Result<QTensor, DetectError> {
        match quant {
            Quant::Q8_0 => quantize_q8_padded(&data, n, k),
            Quant::F32 => f32_qtensor(data, &[n, k]),
        }
    };
    let prelu = |p: &str| take(raw, &format!("{p}.prelu.weight")).map(|r| r.data);

    // conv1: (32, 3, 3, 3) OIHW -> (32, 27) in (ky, kx, ci) order for an HWC im2col.
    let w = take(raw, "conv1.conv.weight")?;
    let (wf, b) = fold_bn(raw, "conv1.bn", &w)?;
    let (o, ci, kh, kw) = match w.dims[..] {
        [o, ci, kh, kw] => (o, ci, kh, kw),
        _ => return Err(err("conv1.conv.weight must be 4-D")),
    };
    if kh != 3 || kw != 3 || ci != 3 {
        return Err(err("conv1 must be 3x3 over 3 channels"));
    }
    let mut w27 = vec![0f32; o * 27];
    for oc in 0..o {
        for c in 0..3 {
            for ky in 0..3 {
                for kx in 0..3 {
                    w27[oc * 27 + (ky * 3 + kx) * 3 + c] = wf[((oc * 3 + c) * 3 + ky) * 3 + kx];
                }
            }
        }
    }
    put("conv1.weight".into(), f32_qtensor(w27, &[o, 27])?);
    put("conv1.bias".into(), f32_qtensor(b, &[o])?);
    put("conv1.prelu".into(), f32_qtensor(prelu("conv1")?, &[o])?);

    // Depthwise k×k: (C, 1, k, k) -> tap-major (k*k, C).
    let dw = |p: &str,
              with_prelu: bool,
              put: &mut dyn FnMut(String, QTensor)|
     -> Result<(), DetectError> {
        let w = take(raw, &format!("{p}.conv.weight"))?;
        let (wf, b) = fold_bn(raw, &format!("{p}.bn"), &w)?;
        let (c, kk) = match w.dims[..] {
            [c, 1, kh, kw] if kh == kw => (c, kh * kw),
            _ => return Err(err(format!("{p}: expected a depthwise (C,1,k,k) weight"))),
        };
        let mut t = vec![0f32; kk * c];
        for ch in 0..c {
            for k in 0..kk {
                t[k * c + ch] = wf[ch * kk + k];
            }
        }
        put(format!("{p}.weight"), f32_qtensor(t, &[kk, c])?);
        put(format!("{p}.bias"), f32_qtensor(b, &[c])?);
        if with_prelu {
            put(format!("{p}.prelu"), f32_qtensor(prelu(p)?, &[c])?);
        }
        Ok(())
    };
    // Pointwise: (N, K, 1, 1) -> (N, K).
    let pw = |p: &str,
              with_prelu: bool,
              put: &mut dyn FnMut(String, QTensor)|
     -> Result<(), DetectError> {
        let w = take(raw, &format!("{p}.conv.weight"))?;
        let (wf, b) = fold_bn(raw, &format!("{p}.bn"), &w)?;
        let (n, k) = match w.dims[..] {
            [n, k, 1, 1] => (n, k),
            _ => return Err(err(format!("{p}: expected a 1x1 (N,K,1,1) weight"))),
        };
        put(format!("{p}.weight"), mm(wf, n, k)?);
        put(format!("{p}.bias"), f32_qtensor(b, &[n])?);
        if with_prelu {
            put(format!("{p}.prelu"), f32_qtensor(prelu(p)?, &[n])?);
        }
        Ok(())
    };

    dw("conv2_dw", true, &mut put)?;
    for blk in block_names(&|n| raw.contains_key(n)) {
        pw(&format!("{blk}.conv"), true, &mut put)?;
        dw(&format!("{blk}.conv_dw"), true, &mut put)?;
        pw(&format!("{blk}.project"), false, &mut put)?;
        let se = format!("{blk}.se_module");
        if raw.contains_key(&format!("{se}.fc1.weight")) {
            // SE 1×1 convs act on one pooled vector: kept f32 (negligible cost).
            for (fc, bn) in [("fc1", "bn1"), ("fc2", "bn2")] {
                let w = take(raw, &format!("{se}.{fc}.weight"))?;
                let (wf, b) = fold_bn(raw, &format!("{se}.{bn}"), &w)?;
                let (n, k) = match w.dims[..] {
                    [n, k, 1, 1] => (n, k),
                    _ => return Err(err(format!("{se}.{fc}: expected (N,K,1,1)"))),
                };
                put(format!("{se}.{fc}.weight"), f32_qtensor(wf, &[n, k])?);
                put(format!("{se}.{fc}.bias"), f32_qtensor(b, &[n])?);
            }
        }
    }
    pw("conv_6_sep", true, &mut put)?;
    dw("conv_6_dw", false, &mut put)?;

    // linear (128, 512) + BatchNorm1d `bn`; prob (3, 128), no bias.
    let lw = take(raw, "linear.weight")?;
    let (wf, b) = fold_bn(raw, "bn", &lw)?;
    let (n, k) = (lw.dims[0], lw.dims[1]);
    put("linear.weight".into(), mm(wf, n, k)?);
    put("linear.bias".into(), f32_qtensor(b, &[n])?);
    let pwt = take(raw, "prob.weight")?;
    if pwt.dims.len() != 2 {
        return Err(err("prob.weight must be 2-D"));
    }
    let (n, k) = (pwt.dims[0], pwt.dims[1]);
    put("prob.weight".into(), mm(pwt.data, n, k)?);
    Ok(out)
}

/// Read an upstream-layout safetensors state dict (`module.` prefix removed, as in
/// `../shared/models/upstream/minifasnet/`; the train helper's exports use the same names).
fn read_safetensors(bytes: &[u8]) -> Result<HashMap<String, Raw>, DetectError> {
    let ts = candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(err)?;
    let mut raw = HashMap::new();
    for (name, t) in ts {
        if name.ends_with("num_batches_tracked") {
            continue;
        }
        let name = name.strip_prefix("module.").unwrap_or(&name).to_string();
        let dims = t.dims().to_vec();
        let data = t
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(err)?;
        raw.insert(name, Raw { dims, data });
    }
    Ok(raw)
}

/// Architecture of a state dict: SE modules mean V1SE.
fn detect_arch(raw: &HashMap<String, Raw>) -> Arch {
    if raw.keys().any(|k| k.contains("se_module")) {
        Arch::MiniFasNetV1Se
    } else {
        Arch::MiniFasNetV2
    }
}

/// Convert upstream safetensors bytes into a model file (in memory).
pub fn convert(
    safetensors: &[u8],
    arch: Option<Arch>,
    quant: Quant,
) -> Result<ModelFile, DetectError> {
    let raw = read_safetensors(safetensors)?;
    let found = detect_arch(&raw);
    if let Some(a) = arch {
        if a != found {
            return Err(err(format!(
                "weights look like {} but {} was requested",
                found.name(),
                a.name()
            )));
        }
    }
    let tensors = fold(&raw, quant)?;
    Ok(ModelFile {
        arch: found.name().into(),
        quant,
        crop_scale: found.crop_scale(),
        input: INPUT_CONVENTION.into(),
        source_sha256: sha256_hex(safetensors),
        tensors,
    })
}
