//! Single-image latency of the MiniFASNet pair, and f32 vs Q8_0 agreement on sample images.
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo run --release --example pad_latency -- \
//!     [--models DIR] [--iters N] [--agree DIR --limit N]...
//! ```
//!
//! Latency: each network's `forward_bgr` on one 80×80 crop, after warm-up; median and p99 over
//! `--iters` runs, plus crop+resize of a 640×480 frame. Agreement: for every image below each
//! `--agree` directory (up to `--limit` per directory, sorted), the face box is the central 60 %
//! of the image (no face detector here), both precisions score it, and the max |Δ softmax| per
//! network and of the ensemble score is printed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use veriframe::detect::crop::crop_bgr;
use veriframe::detect::nets::minifasnet::{load_ensemble, softmax3, MiniFasEnsemble};
use veriframe::detect::Quant;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn images(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut es: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    es.sort();
    for p in es {
        if p.is_dir() {
            images(&p, out);
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        {
            out.push(p);
        }
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let mut models = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/models/upstream/minifasnet"
    ));
    let mut iters = 300usize;
    let mut agree: Vec<PathBuf> = Vec::new();
    let mut limit = 100usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--models" => models = PathBuf::from(val()?),
            "--iters" => iters = val()?.parse()?,
            "--agree" => agree.push(PathBuf::from(val()?)),
            "--limit" => limit = val()?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    println!(
        "RAYON_NUM_THREADS={}",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "(unset)".into())
    );
    let mut ens: Vec<(Quant, MiniFasEnsemble)> = Vec::new();
    for q in [Quant::F32, Quant::Q8_0] {
        let t = Instant::now();
        let e = load_ensemble(&[&models], q)?;
        println!("load {q:?}: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        ens.push((q, e));
    }
    let frame = image::RgbImage::from_fn(640, 480, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 239) as u8])
    });
    let bbox = [250.0, 150.0, 140.0, 170.0];
    for (q, e) in &ens {
        for net in e.nets() {
            let crop = crop_bgr(&frame, bbox, net.crop_scale(), 80, 80)?;
            for _ in 0..20 {
                net.forward_bgr(&crop)?;
            }
            let mut ts = Vec::with_capacity(iters);
            for _ in 0..iters {
                let t = Instant::now();
                std::hint::black_box(net.forward_bgr(&crop)?);
                ts.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let med = pct(&mut ts, 0.5);
            let p99 = pct(&mut ts, 0.99);
            println!(
                "{:<16} {q:?}: median {med:.3} ms  p99 {p99:.3} ms  ({iters} runs)",
                net.arch().name()
            );
        }
    }
    let mut ts = Vec::new();
    for _ in 0..iters {
        let t = Instant::now();
        std::hint::black_box(crop_bgr(&frame, bbox, 2.7, 80, 80)?);
        ts.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "crop+resize 640x480 -> 80x80: median {:.3} ms",
        pct(&mut ts, 0.5)
    );

    for dir in &agree {
        let mut files = Vec::new();
        images(dir, &mut files);
        // Spread the sample over the whole (sorted) list.
        let step = (files.len() / limit.max(1)).max(1);
        let files: Vec<PathBuf> = files.into_iter().step_by(step).take(limit).collect();
        let mut dmax = [0f32; 2];
        let mut dscore = 0f32;
        let mut n = 0;
        for f in &files {
            let img = image::open(f)?.to_rgb8();
            let (w, h) = (img.width() as f32, img.height() as f32);
            let bbox = [0.2 * w, 0.2 * h, 0.6 * w, 0.6 * h];
            let lf = ens[0].1.logits(&img, bbox)?;
            let lq = ens[1].1.logits(&img, bbox)?;
            for ((d, f), q) in dmax.iter_mut().zip(&lf).zip(&lq) {
                let (a, b) = (softmax3(*f), softmax3(*q));
                for (x, y) in a.iter().zip(&b) {
                    *d = d.max((x - y).abs());
                }
            }
            let sf = ens[0].1.score(&img, bbox)?;
            let sq = ens[1].1.score(&img, bbox)?;
            dscore = dscore.max((sf - sq).abs());
            n += 1;
        }
        println!(
            "agreement {} ({n} images): max |d softmax| v2 {:.5} v1se {:.5}; max |d ensemble score| {:.5}",
            dir.display(),
            dmax[0],
            dmax[1],
            dscore
        );
    }
    Ok(())
}
