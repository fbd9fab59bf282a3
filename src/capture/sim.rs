//! Simulated booth sessions for the light challenge (issue 15): `sim:live`, `sim:replay`,
//! `sim:print`, `sim:injected`. Frames are rendered from the bundled face photos (samples/) under
//! a documented model of the physics (docs/challenge.md, "The simulation"), JPEG-compressed like
//! a camera's MJPEG, seeded and reproducible.
//!
//! Model, in linear light, per pixel x of the photo A(x) (the scene under the room's light):
//! - live: `g_t · A(x) · (1 + f_t + k · relief(x) · b_t)`: the booth light adds in proportion to
//!   the skin's albedo (approximated by A) and to the cosine between the surface normal of a
//!   face-like ellipsoid and the light at the camera (`relief` = n_z on the face ellipse); the
//!   background, several times farther away, gets `k_bg = k / 25`.
//! - print: the same with a flat relief (relief = 1 on a sheet twice the face box's size, held
//!   where the face would be).
//! - replay: a self-lit screen filling the frame: `g_t · (A(x) + glare · b_t)` (uniform
//!   specular glare of the booth light on the glass, optional), no flicker of the screen content.
//! - injected: live, but `b_t` is a recorded response to other codes (played back to back),
//!   independent of the booth light.
//!
//! The exposure starts at 0.7 of the photo (headroom for the light).
//! `b_t` is the light as the camera sees it: the commanded state 1 to 2 frames late
//! (`(1−w) · s[t−1] + w · s[t−2]`, w seeded per session); `g_t` auto-exposure (a control loop of
//! strength `ae` towards the first frame's mean, plus a random walk `drift`); `f_t` mains
//! flicker of the room's light (`flicker` = 50 or 60 Hz: the light pulses at 100/120 Hz, sampled
//! at the frame times with a 200 ppm clock error and 0.5 ms jitter, depth `depth`); sensor noise
//! of `noise` code values (Gaussian, after the sRGB curve); JPEG quality `quality`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Capture, CaptureError, FrameSource};
use crate::frame::samples::SAMPLES;
use crate::frame::{Frame, PixelFormat, SourceInfo};
use crate::shutdown::Shutdown;

/// The simulated booth light: set by the challenge's illuminator, read by the sim source.
#[derive(Debug, Clone, Default)]
pub struct SimLight(Arc<AtomicBool>);

impl SimLight {
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::SeqCst)
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What is in front of the simulated camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scene {
    Live,
    Replay,
    Print,
    Injected,
}

impl Scene {
    pub const ALL: [Scene; 4] = [Scene::Live, Scene::Replay, Scene::Print, Scene::Injected];

    pub fn as_str(self) -> &'static str {
        match self {
            Scene::Live => "live",
            Scene::Replay => "replay",
            Scene::Print => "print",
            Scene::Injected => "injected",
        }
    }
}

/// A `sim:` source URI: `sim:<scene>[?key=value&…]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSpec {
    pub scene: Scene,
    pub seed: u64,
    /// Sensor noise, standard deviation in 8-bit code values.
    pub noise: f32,
    /// Auto-exposure loop strength (0 = fixed exposure).
    pub ae: f32,
    /// Auto-exposure random walk per frame (relative).
    pub drift: f32,
    /// Mains frequency of the room's light flicker (0 = none, 50, 60).
    pub flicker: f32,
    /// Flicker depth (relative modulation of the room's light).
    pub depth: f32,
    /// Booth light on the face centre, relative to the room's light.
    pub led: f32,
    /// Replay: glare of the booth light on the screen, linear (0 = none).
    pub glare: f32,
    pub quality: u8,
    /// Which bundled photo (0..=4); default: seed-chosen.
    pub image: Option<usize>,
}

/// Face boxes (x, y, w, h) of `astronaut_00.jpg` … `astronaut_04.jpg`, measured with
/// `veriframe faces samples/astronaut_0N.jpg` (BlazeFace).
const FACE_BOXES: [[f32; 4]; 5] = [
    [222.0, 72.0, 91.0, 91.0],
    [235.0, 72.0, 93.0, 93.0],
    [245.0, 70.0, 90.0, 90.0],
    [255.0, 71.0, 90.0, 90.0],
    [262.0, 72.0, 91.0, 91.0],
];

impl SimSpec {
    pub fn new(scene: Scene, seed: u64) -> Self {
        Self {
            scene,
            seed,
            noise: 2.0,
            ae: 0.3,
            drift: 0.01,
            flicker: 0.0,
            depth: 0.1,
            led: 0.35,
            glare: 0.03,
            quality: 85,
            image: None,
        }
    }

    /// Parse `sim:live`, `sim:replay?seed=3&glare=0.05`, …
    pub fn parse(uri: &str) -> Result<Self, String> {
        let rest = uri.strip_prefix("sim:").ok_or("not a sim: source")?;
        let (scene, query) = rest.split_once('?').unwrap_or((rest, ""));
        let scene = Scene::ALL
            .into_iter()
            .find(|s| s.as_str() == scene)
            .ok_or_else(|| {
                format!("unknown sim scene {scene:?}: expected live, replay, print or injected")
            })?;
        let mut s = SimSpec::new(scene, 1);
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("sim parameter {kv:?}: expected key=value"))?;
            let num = |lo: f32, hi: f32| -> Result<f32, String> {
                v.parse::<f32>()
                    .ok()
                    .filter(|x| (lo..=hi).contains(x))
                    .ok_or_else(|| {
                        format!("sim parameter {k}={v:?}: expected a number in {lo}..={hi}")
                    })
            };
            match k {
                "seed" => {
                    s.seed = v
                        .parse()
                        .map_err(|_| format!("sim parameter seed={v:?}: expected an integer"))?
                }
                "noise" => s.noise = num(0.0, 50.0)?,
                "ae" => s.ae = num(0.0, 1.0)?,
                "drift" => s.drift = num(0.0, 0.5)?,
                "flicker" => s.flicker = num(0.0, 1000.0)?,
                "depth" => s.depth = num(0.0, 1.0)?,
                "led" => s.led = num(0.0, 10.0)?,
                "glare" => s.glare = num(0.0, 1.0)?,
                "quality" => s.quality = num(1.0, 100.0)? as u8,
                "image" => s.image = Some(num(0.0, 4.0)? as usize),
                _ => return Err(format!("unknown sim parameter {k:?}")),
            }
        }
        Ok(s)
    }
}

/// sRGB code value → linear light (IEC 61966-2-1).
fn srgb_to_linear(c: u8) -> f32 {
    let c = c as f32 / 255.0;
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

/// Steps of the linear → sRGB lookup (fine enough that its rounding stays far below the sensor
/// noise, also in the shadows).
const LUT_STEPS: usize = 1 << 16;

/// sRGB encode lookup: linear 0..1 in [`LUT_STEPS`] steps → code value.
fn encode_lut() -> Vec<f32> {
    (0..LUT_STEPS)
        .map(|i| {
            let l = i as f32 / (LUT_STEPS - 1) as f32;
            let c = if l <= 0.003_130_8 {
                12.92 * l
            } else {
                1.055 * l.powf(1.0 / 2.4) - 0.055
            };
            c * 255.0
        })
        .collect()
}

/// The camera's starting exposure relative to the photo: headroom so that the lit face does not
/// clip (a booth sets its exposure, or its AE target, for the lit face).
const EXPOSURE: f32 = 0.7;

/// A simulated camera in front of a [`Scene`].
pub struct SimSource {
    spec: SimSpec,
    info: Arc<SourceInfo>,
    light: SimLight,
    rng: StdRng,
    width: u32,
    height: u32,
    /// The photo in linear light, RGB.
    albedo: Vec<f32>,
    /// Booth-light gain per pixel (relief on the face, `k_bg` elsewhere), times `led`.
    gain: Vec<f32>,
    face: [f32; 4],
    lut: Vec<f32>,
    noise: Vec<f32>,
    /// Commanded light state of past frames, newest last.
    history: Vec<bool>,
    lag_w: f32,
    exposure: f32,
    target: Option<f32>,
    flicker_phase: f32,
    /// Injected: the recorded session's own code states.
    recorded: Vec<bool>,
    fps: f64,
    pacer: super::Pacer,
    n: u64,
}

impl SimSource {
    /// A source for `spec` at `fps`, lit by `light`.
    pub fn new(spec: SimSpec, fps: f64, light: SimLight) -> Result<Self, CaptureError> {
        let mut rng = StdRng::seed_from_u64(spec.seed);
        let idx = spec.image.unwrap_or((spec.seed % 5) as usize).min(4);
        let (name, bytes) = SAMPLES[idx];
        let img = image::load_from_memory(bytes)
            .map_err(|e| CaptureError::Open {
                path: name.into(),
                reason: e.to_string(),
            })?
            .into_rgb8();
        let (width, height) = img.dimensions();
        let lin: Vec<f32> = (0..=255u8).map(srgb_to_linear).collect();
        let albedo: Vec<f32> = img.as_raw().iter().map(|&c| lin[c as usize]).collect();
        let face = FACE_BOXES[idx];
        // The face as a half-ellipsoid filling the detector's box (as wide as the box, from
        // above the brows to below the chin).
        let (cx, cy) = (face[0] + face[2] / 2.0, face[1] + face[3] * 0.5);
        let (ax, ay) = (face[2] * 0.5, face[3] * 0.65);
        let k_bg = 1.0 / 25.0;
        let mut gain = vec![0f32; (width * height) as usize];
        for y in 0..height {
            for x in 0..width {
                let (u, v) = ((x as f32 - cx) / ax, (y as f32 - cy) / ay);
                let r2 = u * u + v * v;
                // The print: a flat sheet twice the face box's size, centred on the face.
                let (su, sv) = ((x as f32 - cx) / face[2], (y as f32 - cy) / face[3]);
                let g = match spec.scene {
                    Scene::Print if su.abs() <= 1.0 && sv.abs() <= 1.0 => 1.0,
                    Scene::Print => k_bg,
                    _ if r2 < 1.0 => (1.0 - r2).sqrt().max(k_bg),
                    _ => k_bg,
                };
                gain[(y * width + x) as usize] = g * spec.led;
            }
        }
        let noise: Vec<f32> = (0..1 << 16)
            .map(|_| {
                // Box–Muller.
                let u1: f32 = rng.gen_range(1e-7..1.0);
                let u2: f32 = rng.gen();
                (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
            })
            .collect();
        let lag_w = rng.gen();
        let flicker_phase = rng.gen_range(0.0..std::f32::consts::TAU);
        let recorded = Vec::new();
        let info = Arc::new(SourceInfo {
            kind: "sim".into(),
            path: format!("sim:{}", spec.scene.as_str()),
            driver: "sim".into(),
            card: format!("simulated booth ({}, seed {})", name, spec.seed),
            bus: String::new(),
            format: PixelFormat::Jpeg,
            width,
            height,
            fps,
        });
        Ok(Self {
            spec,
            info,
            light,
            rng,
            width,
            height,
            albedo,
            gain,
            face,
            lut: encode_lut(),
            noise,
            history: vec![false; 2],
            lag_w,
            exposure: EXPOSURE,
            target: None,
            flicker_phase,
            recorded,
            fps,
            pacer: super::Pacer::new(fps),
            n: 0,
        })
    }

    /// The face's box in the rendered frames (ground truth, for `challenge-eval`).
    pub fn face_box(&self) -> [f32; 4] {
        self.face
    }

    /// The light this frame shows, 0..1: the commanded state 1–2 frames late, or for an
    /// injected feed the recording's own.
    fn seen_light(&mut self) -> f32 {
        self.history.push(self.light.get());
        let h = &self.history;
        let (s1, s2) = (h[h.len() - 2], h[h.len() - 3]);
        if self.history.len() > 64 {
            self.history.drain(..32);
        }
        if self.spec.scene == Scene::Injected {
            // Back-to-back recordings of other sessions' codes (12 bits × 2 frames, 8 dark).
            if self.recorded.len() < 2 {
                let mut next = vec![false; 8];
                for _ in 0..12 {
                    let b = self.rng.gen::<bool>();
                    next.extend([b, b]);
                }
                self.recorded.extend(next);
            }
            let (a, b) = (self.recorded[0], self.recorded[1]);
            self.recorded.remove(0);
            return (1.0 - self.lag_w) * a as u8 as f32 + self.lag_w * b as u8 as f32;
        }
        (1.0 - self.lag_w) * s1 as u8 as f32 + self.lag_w * s2 as u8 as f32
    }

    /// Render the next frame (virtual frame time `n / fps`), as JPEG bytes.
    pub fn render_next(&mut self) -> Result<Vec<u8>, CaptureError> {
        let b = self.seen_light();
        let t = self.n as f64 / self.fps * (1.0 + 200e-6) + self.rng.gen_range(-0.0005..0.0005);
        let f = if self.spec.flicker > 0.0 {
            self.spec.depth
                * (std::f64::consts::TAU * 2.0 * self.spec.flicker as f64 * t
                    + self.flicker_phase as f64)
                    .sin() as f32
        } else {
            0.0
        };
        let g = self.exposure;
        let (w, h) = (self.width as usize, self.height as usize);
        let mut out = vec![0u8; w * h * 3];
        let off = self.rng.gen_range(0..self.noise.len());
        let step = self.rng.gen_range(1..1000) * 2 + 1;
        let mask = self.noise.len() - 1;
        let (mut sum, mut cnt) = (0f64, 0u32);
        for i in 0..w * h {
            let (factor, add) = match self.spec.scene {
                Scene::Replay => (g, g * self.spec.glare * b),
                _ => (g * (1.0 + f + self.gain[i] * b), 0.0),
            };
            for c in 0..3 {
                let j = i * 3 + c;
                let l = (self.albedo[j] * factor + add).clamp(0.0, 1.0);
                if c == 1 && i % 97 == 0 {
                    sum += l as f64;
                    cnt += 1;
                }
                let code = self.lut[(l * (LUT_STEPS - 1) as f32) as usize]
                    + self.spec.noise * self.noise[(off + j * step) & mask];
                out[j] = code.round().clamp(0.0, 255.0) as u8;
            }
        }
        // Auto-exposure: steer towards the first frame's mean, plus a random walk.
        let mean = (sum / cnt.max(1) as f64) as f32;
        let target = *self.target.get_or_insert(mean);
        if mean > 0.0 {
            self.exposure *= (target / mean).powf(self.spec.ae);
        }
        let walk: f32 = self.noise[self.rng.gen_range(0..self.noise.len())];
        self.exposure = (self.exposure * (1.0 + self.spec.drift * walk)).clamp(0.25, 4.0);
        self.n += 1;
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, self.spec.quality)
            .encode(
                &out,
                self.width,
                self.height,
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|e| CaptureError::Convert(e.to_string()))?;
        Ok(jpeg)
    }
}

impl FrameSource for SimSource {
    fn info(&self) -> Arc<SourceInfo> {
        self.info.clone()
    }

    fn next(&mut self, shutdown: &Shutdown) -> Result<Capture, CaptureError> {
        self.pacer.wait(shutdown)?;
        let bytes = self.render_next()?;
        Ok(Capture::Frame(Frame {
            device_seq: Some(self.n - 1),
            ..Frame::captured_now(
                self.info.clone(),
                PixelFormat::Jpeg,
                self.width,
                self.height,
                bytes.into(),
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_are_named() {
        let s = SimSpec::parse("sim:replay?seed=7&glare=0.1&flicker=50").unwrap();
        assert_eq!(s.scene, Scene::Replay);
        assert_eq!(s.seed, 7);
        assert_eq!(s.glare, 0.1);
        assert_eq!(s.flicker, 50.0);
        assert_eq!(
            SimSpec::parse("sim:live").unwrap(),
            SimSpec::new(Scene::Live, 1)
        );
        assert!(SimSpec::parse("sim:mask").unwrap_err().contains("mask"));
        assert!(SimSpec::parse("sim:live?noise=abc")
            .unwrap_err()
            .contains("noise"));
        assert!(SimSpec::parse("sim:live?colour=1")
            .unwrap_err()
            .contains("colour"));
        assert!(SimSpec::parse("sim:live?seed").is_err());
    }
}
