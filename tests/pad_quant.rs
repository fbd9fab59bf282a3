//! Veriframe model files (GGUF) converted from the upstream MiniFASNet weights into a temp dir:
//! the f32 file reproduces the golden logits like the safetensors source, the Q8_0 file stays
//! close to f32 (max |Δ softmax| printed and bounded), and `veriframe model convert` works.

mod common;

use std::process::Command;

use common::pad::{png_bgr, require, MINIFAS, V1SE, V2};
use veriframe::detect::model::file as modelfile;
use veriframe::detect::nets::minifasnet::{self, softmax3, Arch, MiniFasNet};
use veriframe::detect::Quant;

#[test]
fn converted_files_agree_with_source() {
    let Some(mdir) = require(MINIFAS) else { return };
    let gdir = mdir.join("golden");
    let text = std::fs::read_to_string(gdir.join("expected.json")).expect("expected.json");
    let exp: serde_json::Value = serde_json::from_str(&text).expect("json");
    let tmp = tempfile::tempdir().expect("tempdir");
    for (model, arch) in [(V2, Arch::MiniFasNetV2), (V1SE, Arch::MiniFasNetV1Se)] {
        let src = std::fs::read(mdir.join(format!("{model}.safetensors"))).expect("weights");
        let mut nets = Vec::new();
        for quant in [Quant::F32, Quant::Q8_0] {
            let m = minifasnet::convert::convert(&src, Some(arch), quant).expect("convert");
            let path = tmp.path().join(format!("{}_{quant:?}.gguf", arch.name()));
            modelfile::write(&m, &path).expect("write");
            let back = modelfile::read(&path).expect("read back");
            assert_eq!(back.arch, arch.name());
            assert_eq!(back.crop_scale, arch.crop_scale());
            assert_eq!(back.source_sha256, modelfile::sha256_hex(&src));
            let size = std::fs::metadata(&path).expect("size").len();
            eprintln!("{} {quant:?}: {size} bytes", arch.name());
            nets.push(MiniFasNet::load(&path, quant).expect("load gguf"));
        }
        // The wrong architecture is refused.
        let other = if arch == Arch::MiniFasNetV2 {
            Arch::MiniFasNetV1Se
        } else {
            Arch::MiniFasNetV2
        };
        assert!(minifasnet::convert::convert(&src, Some(other), Quant::F32).is_err());

        let mut max_dsoft = 0f32;
        for (img, v) in exp.as_object().expect("object") {
            let stem = img.trim_end_matches(".jpg");
            let crop = png_bgr(&gdir.join(format!("{stem}__{model}.png")));
            let f = nets[0].forward_bgr(&crop).expect("f32");
            let q = nets[1].forward_bgr(&crop).expect("q8");
            let l = &v["models"][format!("{model}.pth")]["logits"];
            for i in 0..3 {
                let want = l[i].as_f64().expect("logit") as f32;
                assert!(
                    (f[i] - want).abs() < 1e-4,
                    "{stem} {model} f32 gguf logit {i}"
                );
            }
            let (sf, sq) = (softmax3(f), softmax3(q));
            for (a, b) in sf.iter().zip(&sq) {
                max_dsoft = max_dsoft.max((a - b).abs());
            }
        }
        eprintln!("{model}: golden crops, max |softmax f32 - q8_0| = {max_dsoft:.5}");
        assert!(max_dsoft < 0.05, "{model}: Q8_0 drifted {max_dsoft}");
    }
}

#[test]
fn cli_convert_writes_a_loadable_file() {
    let Some(mdir) = require(MINIFAS) else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("v2.gguf");
    let st = Command::new(env!("CARGO_BIN_EXE_veriframe"))
        .args(["model", "convert", "--arch", "minifasnet_v2", "--in"])
        .arg(mdir.join(format!("{V2}.safetensors")))
        .arg("--out")
        .arg(&out)
        .args(["--quant", "q8_0"])
        .output()
        .expect("run veriframe");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let net = MiniFasNet::load(&out, Quant::Q8_0).expect("load");
    assert_eq!(net.arch(), Arch::MiniFasNetV2);
    // Wrong architecture: exit code 2 and no file.
    let bad = tmp.path().join("bad.gguf");
    let st = Command::new(env!("CARGO_BIN_EXE_veriframe"))
        .args(["model", "convert", "--arch", "minifasnet_v1se", "--in"])
        .arg(mdir.join(format!("{V2}.safetensors")))
        .arg("--out")
        .arg(&bad)
        .output()
        .expect("run veriframe");
    assert_eq!(st.status.code(), Some(2));
    assert!(!bad.exists());
}
