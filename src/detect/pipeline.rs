//! The per-frame analyser: decode → face detection → PAD (and, when configured, the deepfake
//! classifier) on the primary face → [`Analysis`].
//!
//! The same [`Pipeline::analyze_image`] serves the daemon, `veriframe eval` and
//! `veriframe bench`, so what is evaluated and timed is what runs.

use image::RgbImage;

use super::{
    decode_rgb, Analysis, Analyzer, DeepfakeClassifier, DetectError, Face, FaceDetector, ModelId,
    PadClassifier,
};
use crate::frame::Frame;

/// Images whose long side is at most this many pixels get a second face search inside a border
/// when the first finds nothing (tight face crops; see [`Pipeline::detect_faces`]).
pub const BORDER_RETRY_MAX_SIDE: u32 = 512;

/// Grey level of the border.
const BORDER_GREY: u8 = 128;

/// `img` centred in a mid-grey canvas with a border of half its long side on each side, and that
/// border's width in pixels.
pub fn with_border(img: &RgbImage) -> (RgbImage, u32) {
    let pad = img.width().max(img.height()) / 2;
    let mut canvas = RgbImage::from_pixel(
        img.width() + 2 * pad,
        img.height() + 2 * pad,
        image::Rgb([BORDER_GREY; 3]),
    );
    image::imageops::replace(&mut canvas, img, i64::from(pad), i64::from(pad));
    (canvas, pad)
}

/// A face found in the bordered canvas, in the original image's pixels: moved back by `pad` and
/// clipped to the `w`×`h` image; `None` when nothing of it lies inside the image.
fn unborder(mut f: Face, pad: u32, w: u32, h: u32) -> Option<Face> {
    let p = pad as f32;
    let (w, h) = (w as f32, h as f32);
    let x0 = (f.bbox[0] - p).clamp(0.0, w);
    let y0 = (f.bbox[1] - p).clamp(0.0, h);
    let x1 = (f.bbox[0] + f.bbox[2] - p).clamp(0.0, w);
    let y1 = (f.bbox[1] + f.bbox[3] - p).clamp(0.0, h);
    if x1 - x0 < 1.0 || y1 - y0 < 1.0 {
        return None;
    }
    f.bbox = [x0, y0, x1 - x0, y1 - y0];
    for l in &mut f.landmarks {
        l[0] = (l[0] - p).clamp(0.0, w);
        l[1] = (l[1] - p).clamp(0.0, h);
    }
    Some(f)
}

/// Face detector plus optional presentation-attack classifier.
pub struct Pipeline {
    detector: Box<dyn FaceDetector>,
    pad: Option<Box<dyn PadClassifier>>,
    deepfake: Option<Box<dyn DeepfakeClassifier>>,
    models: Vec<ModelId>,
}

impl Pipeline {
    pub fn new(detector: Box<dyn FaceDetector>, pad: Option<Box<dyn PadClassifier>>) -> Self {
        let mut models = vec![detector.model()];
        if let Some(p) = &pad {
            models.extend(p.models());
        }
        Self {
            detector,
            pad,
            deepfake: None,
            models,
        }
    }

    /// Add a deepfake-artefact classifier (run on the primary face after PAD); `None` keeps the
    /// pipeline as it is.
    pub fn with_deepfake(mut self, deepfake: Option<Box<dyn DeepfakeClassifier>>) -> Self {
        if let Some(d) = &deepfake {
            self.models.push(d.model());
        }
        self.deepfake = deepfake;
        self
    }

    /// Whether a deepfake classifier runs (otherwise faces carry no `deepfake_score`).
    pub fn has_deepfake(&self) -> bool {
        self.deepfake.is_some()
    }

    /// Deepfake score of `face` in `img`, when a classifier is configured.
    pub fn deepfake_score(
        &mut self,
        img: &RgbImage,
        face: &Face,
    ) -> Result<Option<f32>, DetectError> {
        match &mut self.deepfake {
            Some(d) => d.deepfake_score(img, face).map(Some),
            None => Ok(None),
        }
    }

    /// Whether a PAD classifier runs (otherwise faces carry no `live_score`).
    pub fn has_pad(&self) -> bool {
        self.pad.is_some()
    }

    /// Faces in frame pixels, primary first.
    ///
    /// Tight face crops (the face fills the image) defeat BlazeFace, which expects a face with
    /// some surroundings. So when an image no larger than [`BORDER_RETRY_MAX_SIDE`] has no face,
    /// it is searched once more inside a mid-grey border of half its long side on every side
    /// (see [`with_border`]); boxes found there are mapped back and clipped to the image. Camera
    /// frames (640×480 and up) are never retried, so the daemon's cost is unchanged.
    pub fn detect_faces(&mut self, img: &RgbImage) -> Result<Vec<Face>, DetectError> {
        let faces = self.detector.detect(img)?;
        if !faces.is_empty() || img.width().max(img.height()) > BORDER_RETRY_MAX_SIDE {
            return Ok(faces);
        }
        let (canvas, pad) = with_border(img);
        let faces = self.detector.detect(&canvas)?;
        Ok(faces
            .into_iter()
            .filter_map(|f| unborder(f, pad, img.width(), img.height()))
            .collect())
    }

    /// PAD live score of `face` in `img`, when a classifier is configured.
    pub fn live_score(&mut self, img: &RgbImage, face: &Face) -> Result<Option<f32>, DetectError> {
        match &mut self.pad {
            Some(p) => p.live_score(img, face).map(Some),
            None => Ok(None),
        }
    }

    /// Analyse a decoded image: faces, and the live (and deepfake) score of the primary face.
    pub fn analyze_image(&mut self, img: &RgbImage, seq: u64) -> Result<Analysis, DetectError> {
        let mut faces = self.detect_faces(img)?;
        if let Some(primary) = faces.first_mut() {
            let score = self.live_score(img, primary)?;
            primary.live_score = score;
            let score = self.deepfake_score(img, primary)?;
            primary.deepfake_score = score;
        }
        Ok(Analysis {
            seq,
            width: img.width(),
            height: img.height(),
            faces,
            models: self.models.clone(),
        })
    }
}

impl Analyzer for Pipeline {
    fn analyze(&mut self, frame: &Frame) -> Result<Analysis, DetectError> {
        let img = decode_rgb(frame)?;
        self.analyze_image(&img, frame.seq)
    }

    fn models(&self) -> Vec<ModelId> {
        self.models.clone()
    }
}

/// Test doubles at the detector's trait seams, for the unit tests of the library and of the
/// binary's `bench`/`eval` drivers. Not part of the pipeline.
#[doc(hidden)]
pub mod fakes {
    use super::*;

    /// A detector that returns fixed faces (or fails).
    pub struct FixedFaces(pub Result<Vec<Face>, String>);

    impl FaceDetector for FixedFaces {
        fn detect(&mut self, _img: &RgbImage) -> Result<Vec<Face>, DetectError> {
            self.0.clone().map_err(DetectError::Model)
        }
        fn model(&self) -> ModelId {
            ModelId {
                name: "fixed".into(),
                weights_sha256: "00".into(),
            }
        }
    }

    /// A PAD classifier that scores by the mean red value inside the face box (so tests can
    /// steer it through the image), and counts its calls.
    pub struct RedPad {
        pub calls: usize,
    }

    impl PadClassifier for RedPad {
        fn live_score(&mut self, img: &RgbImage, face: &Face) -> Result<f32, DetectError> {
            self.calls += 1;
            let x0 = face.bbox[0].max(0.0) as u32;
            let y0 = face.bbox[1].max(0.0) as u32;
            let x1 = ((face.bbox[0] + face.bbox[2]) as u32).min(img.width());
            let y1 = ((face.bbox[1] + face.bbox[3]) as u32).min(img.height());
            let mut sum = 0u64;
            let mut n = 0u64;
            for y in y0..y1 {
                for x in x0..x1 {
                    sum += img.get_pixel(x, y)[0] as u64;
                    n += 1;
                }
            }
            if n == 0 {
                return Err(DetectError::Model("empty crop".into()));
            }
            Ok(sum as f32 / n as f32 / 255.0)
        }
        fn models(&self) -> Vec<ModelId> {
            vec![ModelId {
                name: "red".into(),
                weights_sha256: "11".into(),
            }]
        }
    }

    /// A deepfake classifier that scores by the mean green value of the whole image.
    pub struct GreenFake;

    impl DeepfakeClassifier for GreenFake {
        fn deepfake_score(&mut self, img: &RgbImage, _face: &Face) -> Result<f32, DetectError> {
            let n = img.pixels().len().max(1) as f32;
            Ok(img.pixels().map(|p| p[1] as f32).sum::<f32>() / n / 255.0)
        }
        fn model(&self) -> ModelId {
            ModelId {
                name: "green".into(),
                weights_sha256: "22".into(),
            }
        }
    }

    pub fn face(x: f32, w: f32) -> Face {
        Face {
            bbox: [x, 0.0, w, w],
            score: 0.9,
            landmarks: vec![],
            live_score: None,
            deepfake_score: None,
        }
    }
}

#[cfg(test)]
mod border_tests {
    use super::*;

    /// Finds a "face" only where a pure-white 8x8 block lies at least 8 px inside the image it is
    /// given (a tight crop has it at the edge).
    struct WhiteBlock;

    impl FaceDetector for WhiteBlock {
        fn detect(&mut self, img: &RgbImage) -> Result<Vec<Face>, DetectError> {
            for y in 8..img.height().saturating_sub(16) {
                for x in 8..img.width().saturating_sub(16) {
                    if img.get_pixel(x, y).0 == [255; 3] {
                        return Ok(vec![Face {
                            bbox: [x as f32 - 2.0, y as f32 - 2.0, 12.0, 12.0],
                            score: 0.9,
                            landmarks: vec![[x as f32, y as f32]],
                            live_score: None,
                            deepfake_score: None,
                        }]);
                    }
                }
            }
            Ok(vec![])
        }
        fn model(&self) -> ModelId {
            ModelId {
                name: "white".into(),
                weights_sha256: "33".into(),
            }
        }
    }

    fn pipeline() -> Pipeline {
        Pipeline::new(Box::new(WhiteBlock), None)
    }

    #[test]
    fn a_face_at_the_edge_of_a_small_crop_is_found_in_the_border_and_mapped_back() {
        let mut img = RgbImage::from_pixel(40, 30, image::Rgb([10; 3]));
        img.put_pixel(1, 2, image::Rgb([255; 3]));
        let mut p = pipeline();
        let faces = p.detect_faces(&img).unwrap();
        assert_eq!(faces.len(), 1);
        // Found at (21, 22) in the canvas (border 20), box clipped to the image at (0, 0).
        assert_eq!(faces[0].bbox, [0.0, 0.0, 11.0, 12.0]);
        assert_eq!(faces[0].landmarks, vec![[1.0, 2.0]]);
    }

    #[test]
    fn large_frames_are_not_retried_and_found_faces_are_kept_as_they_are() {
        // The same edge "face" as above, in an image one pixel too large for the retry.
        let mut big = RgbImage::from_pixel(BORDER_RETRY_MAX_SIDE + 1, 30, image::Rgb([0; 3]));
        big.put_pixel(1, 2, image::Rgb([255; 3]));
        let mut p = pipeline();
        assert!(p.detect_faces(&big).unwrap().is_empty());
        let mut img = RgbImage::from_pixel(60, 60, image::Rgb([0; 3]));
        img.put_pixel(30, 30, image::Rgb([255; 3]));
        assert_eq!(
            p.detect_faces(&img).unwrap()[0].bbox,
            [28.0, 28.0, 12.0, 12.0]
        );
        let empty = RgbImage::from_pixel(60, 60, image::Rgb([0; 3]));
        assert!(p.detect_faces(&empty).unwrap().is_empty());
    }

    #[test]
    fn border_geometry() {
        let img = RgbImage::from_pixel(100, 60, image::Rgb([7; 3]));
        let (c, pad) = with_border(&img);
        assert_eq!((pad, c.width(), c.height()), (50, 200, 160));
        assert_eq!(c.get_pixel(50, 50).0, [7; 3]);
        assert_eq!(c.get_pixel(49, 50).0, [BORDER_GREY; 3]);
        assert_eq!(c.get_pixel(149, 109).0, [7; 3]);
        assert_eq!(c.get_pixel(150, 109).0, [BORDER_GREY; 3]);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use super::fakes::*;
    use super::*;
    use crate::frame::{PixelFormat, SourceInfo};

    fn half_red() -> RgbImage {
        // Left half red (255), right half black.
        RgbImage::from_fn(100, 50, |x, _| {
            if x < 50 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 0])
            }
        })
    }

    #[test]
    fn pad_runs_on_the_primary_face_only() {
        let det = FixedFaces(Ok(vec![face(0.0, 40.0), face(60.0, 20.0)]));
        let mut p = Pipeline::new(Box::new(det), Some(Box::new(RedPad { calls: 0 })));
        assert!(p.has_pad());
        let a = p.analyze_image(&half_red(), 7).unwrap();
        assert_eq!(a.seq, 7);
        assert_eq!((a.width, a.height), (100, 50));
        assert_eq!(a.faces.len(), 2);
        assert_eq!(a.faces[0].live_score, Some(1.0));
        assert_eq!(a.faces[1].live_score, None);
        let names: Vec<_> = a.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["fixed", "red"]);
    }

    #[test]
    fn no_face_skips_pad_and_detection_only_has_no_scores() {
        let mut p = Pipeline::new(
            Box::new(FixedFaces(Ok(vec![]))),
            Some(Box::new(RedPad { calls: 0 })),
        );
        let a = p.analyze_image(&half_red(), 1).unwrap();
        assert!(a.faces.is_empty());
        let mut p = Pipeline::new(Box::new(FixedFaces(Ok(vec![face(60.0, 20.0)]))), None);
        let a = p.analyze_image(&half_red(), 1).unwrap();
        assert_eq!(a.faces[0].live_score, None);
        assert_eq!(a.models.len(), 1);
    }

    #[test]
    fn deepfake_runs_on_the_primary_face_only_when_configured() {
        let faces = || Box::new(FixedFaces(Ok(vec![face(0.0, 40.0), face(60.0, 20.0)])));
        let mut p = Pipeline::new(faces(), Some(Box::new(RedPad { calls: 0 })))
            .with_deepfake(Some(Box::new(GreenFake)));
        assert!(p.has_deepfake());
        let a = p.analyze_image(&half_red(), 2).unwrap();
        assert_eq!(a.faces[0].deepfake_score, Some(0.0));
        assert_eq!(a.faces[0].live_score, Some(1.0));
        assert_eq!(a.faces[1].deepfake_score, None);
        let names: Vec<_> = a.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["fixed", "red", "green"]);
        // Off (the default): no deepfake score, models unchanged.
        let mut p = Pipeline::new(faces(), None).with_deepfake(None);
        assert!(!p.has_deepfake());
        let a = p.analyze_image(&half_red(), 2).unwrap();
        assert_eq!(a.faces[0].deepfake_score, None);
        assert_eq!(a.models.len(), 1);
    }

    #[test]
    fn errors_propagate() {
        let mut p = Pipeline::new(Box::new(FixedFaces(Err("boom".into()))), None);
        assert!(p.analyze_image(&half_red(), 1).is_err());
        // PAD failure on a degenerate box is an error, not a panic.
        let mut p = Pipeline::new(
            Box::new(FixedFaces(Ok(vec![face(500.0, 10.0)]))),
            Some(Box::new(RedPad { calls: 0 })),
        );
        assert!(p.analyze_image(&half_red(), 1).is_err());
    }

    #[test]
    fn analyzer_decodes_frames_and_rejects_corrupt_ones() {
        let mut p = Pipeline::new(Box::new(FixedFaces(Ok(vec![face(0.0, 40.0)]))), None);
        let img = half_red();
        let frame = |bytes: Vec<u8>| Frame {
            seq: 3,
            device_seq: None,
            captured_wall: SystemTime::UNIX_EPOCH,
            captured_mono: Duration::ZERO,
            source: Arc::new(SourceInfo {
                kind: "synthetic".into(),
                path: String::new(),
                driver: String::new(),
                card: String::new(),
                bus: String::new(),
                format: PixelFormat::Rgb24,
                width: 100,
                height: 50,
                fps: 1.0,
            }),
            format: PixelFormat::Rgb24,
            width: 100,
            height: 50,
            bytes: bytes.into(),
            origin: None,
            decoded: Default::default(),
        };
        let a = p.analyze(&frame(img.into_raw())).unwrap();
        assert_eq!(a.seq, 3);
        assert!(p.analyze(&frame(vec![1, 2, 3])).is_err());
    }
}
