//! Simulated booth sessions for the light challenge: `sim:live`, `sim:replay`, `sim:print`,
//! `sim:injected`. Frames are rendered under a documented model of the physics
//! (docs/challenge.md, "The simulation"), JPEG-compressed like a camera's MJPEG, seeded and
//! reproducible. In linear light every scene is `g_t · (A(x) · (1 + f_t) + K(x) · b_t)` (a
//! replay: `g_t · (A(x) + glare · b_t)`): `A` the scene under the room's light, `K` what the
//! booth light adds.
//!
//! Two face models fill `A` and `K`:
//! - **real** (`model=real`, or `auto` when the set is found): a real person of the Extended
//!   Yale B set ([`super::faces`]) on a wall: `A` = a random mix of the room strobes' images,
//!   `K` = a mix of the near-frontal strobes' images (the ring), the wall getting `led / 25`;
//!   grey made RGB with one skin tint. A print is another room-lit shot of the face printed on
//!   matte paper (`K = led · A` on the sheet: flat); a replay shows another shot, self-lit.
//! - **photo** (`model=photo`, or `auto` without the set): the bundled photos with a rendered
//!   ellipsoid relief, below.
//!
//! Photo model, in linear light, per pixel x of the photo A(x) (the scene under the room's light):
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

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::faces::{self, FaceSet, Subject};
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
    /// Which face model renders the scene.
    pub model: FaceModel,
    /// Real-face model: which subject (an id of the set); default: seed-chosen.
    pub subject: Option<String>,
    /// Real-face model: the set's directory (`[source] sim_faces`, not part of the URI).
    pub faces_dir: PathBuf,
}

/// The face model of a simulated session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaceModel {
    /// Real faces when the set is found at `faces_dir`, else the rendered relief (logged).
    Auto,
    /// The bundled photos with the rendered relief.
    Photo,
    /// Real faces under real strobes (an error when the set is missing).
    Real,
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
            model: FaceModel::Auto,
            subject: None,
            faces_dir: PathBuf::from(faces::DEFAULT_DIR),
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
                "model" => {
                    s.model = match v {
                        "auto" => FaceModel::Auto,
                        "photo" => FaceModel::Photo,
                        "real" => FaceModel::Real,
                        _ => {
                            return Err(format!(
                                "sim parameter model={v:?}: expected auto, photo or real"
                            ))
                        }
                    }
                }
                "subject" => s.subject = Some(v.to_string()),
                _ => return Err(format!("unknown sim parameter {k:?}")),
            }
        }
        Ok(s)
    }
}

/// Where the real-face set is looked for by default (`[source] sim_faces`).
pub fn faces_default_dir() -> &'static str {
    faces::DEFAULT_DIR
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
    /// The scene under the room's light, linear RGB.
    albedo: Vec<f32>,
    /// What the booth light adds when fully on, linear RGB (unused by a replay, which is
    /// self-lit).
    ring: Vec<f32>,
    face: [f32; 4],
    /// Which face model rendered the scene (`photo:<file>` or `real:<subject>`).
    model: String,
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

/// The frame size of the real-face model.
const REAL_W: usize = 640;
const REAL_H: usize = 480;
/// Where the real face lies in its frames (x, y, w, h): the 168×192 crop at its own scale,
/// centred.
pub const REAL_FACE_BOX: [f32; 4] = [236.0, 144.0, 168.0, 192.0];
/// Grey face → RGB: a skin tint in linear light whose Rec. 709 luminance is 1 (the grey value
/// is kept as luminance). One tint for every subject: the set has no colour.
const SKIN_TINT: [f32; 3] = [1.262, 0.947, 0.757];

/// The face's and ring's scene buffers and the box.
struct Parts {
    albedo: Vec<f32>,
    ring: Vec<f32>,
    width: u32,
    height: u32,
    face: [f32; 4],
    model: String,
}

/// Mean of a face image over the challenge's measured region (the central 70 % × 80 %).
fn inner_mean(img: &[f32]) -> f32 {
    let (x0, x1) = (faces::WIDTH * 15 / 100, faces::WIDTH * 85 / 100);
    let (y0, y1) = (faces::HEIGHT / 10, faces::HEIGHT * 9 / 10);
    let mut s = 0f64;
    for y in y0..y1 {
        for x in x0..x1 {
            s += img[y * faces::WIDTH + x] as f64;
        }
    }
    (s / ((x1 - x0) * (y1 - y0)) as f64) as f32
}

/// A weighted sum of `imgs` (weights drawn in `lo..1`, squared for room mixes so one light
/// often dominates), scaled so that its measured-region mean is `target`.
fn mix(imgs: &[Vec<f32>], rng: &mut StdRng, lo: f32, square: bool, target: f32) -> Vec<f32> {
    let mut out = vec![0f32; faces::WIDTH * faces::HEIGHT];
    for img in imgs {
        let w: f32 = rng.gen_range(lo..1.0);
        let w = if square { w * w } else { w };
        for (o, &p) in out.iter_mut().zip(img) {
            *o += w * p;
        }
    }
    let m = inner_mean(&out).max(1e-6);
    out.iter_mut().for_each(|p| *p *= target / m);
    out
}

/// One photograph of the subject as the booth's camera would frame it under the room's light:
/// a random mix of the room strobes at a random exposure, on a wall. Returns the frame (linear
/// RGB), the face-only alpha and the room's level at the face.
struct Shot {
    /// Face image under the room's light (crop-sized, linear grey).
    room: Vec<f32>,
    /// Wall brightness at the top of the frame.
    wall: f32,
    /// Room's level at the face (the measured region's mean).
    level: f32,
}

fn shot(subject: &Subject, rng: &mut StdRng) -> Shot {
    let level = rng.gen_range(0.12..0.3);
    let room = mix(&subject.room, rng, 0.05, true, level);
    let wall = level * rng.gen_range(0.6..1.2);
    Shot { room, wall, level }
}

/// The face's alpha in the frame at (x, y): a rounded rectangle filling the crop, feathered.
fn face_alpha(x: usize, y: usize) -> (f32, Option<usize>) {
    let [bx, by, bw, bh] = REAL_FACE_BOX;
    let (fx, fy) = (x as f32 - bx, y as f32 - by);
    if fx < 0.0 || fy < 0.0 || fx >= bw || fy >= bh {
        return (0.0, None);
    }
    let (u, v) = ((fx - bw / 2.0) / (bw / 2.0), (fy - bh / 2.0) / (bh / 2.0));
    let r = (u.powi(4) + v.powi(4)).powf(0.25);
    let a = ((1.0 - r) / 0.06).clamp(0.0, 1.0);
    (a, Some(fy as usize * faces::WIDTH + fx as usize))
}

/// The frame of `shot` (face on its wall) in linear RGB, with the ring's contribution `ring`
/// (crop-sized, `None`: dark) and the wall's share `wall_ring` of the ring.
fn frame_of(s: &Shot, ring: Option<&[f32]>, wall_ring: f32) -> (Vec<f32>, Vec<f32>) {
    let mut a = vec![0f32; REAL_W * REAL_H * 3];
    let mut k = vec![0f32; REAL_W * REAL_H * 3];
    for y in 0..REAL_H {
        let wall = s.wall * (1.15 - 0.3 * y as f32 / REAL_H as f32);
        for x in 0..REAL_W {
            let (al, idx) = face_alpha(x, y);
            for (c, tint) in SKIN_TINT.iter().enumerate() {
                let j = (y * REAL_W + x) * 3 + c;
                let (face, face_ring) = match idx {
                    Some(i) => (tint * s.room[i], tint * ring.map_or(0.0, |r| r[i])),
                    None => (0.0, 0.0),
                };
                a[j] = al * face + (1.0 - al) * wall;
                k[j] = al * face_ring + (1.0 - al) * wall * wall_ring;
            }
        }
    }
    (a, k)
}

/// The real-face scene for `spec` (docs/challenge.md, "The real-face model").
fn real_parts(spec: &SimSpec, subject: &Subject, rng: &mut StdRng) -> Parts {
    let k_bg = spec.led / 25.0;
    let live = shot(subject, rng);
    let ring = mix(&subject.ring, rng, 0.5, false, spec.led * live.level);
    let (albedo, ring) = match spec.scene {
        Scene::Live | Scene::Injected => frame_of(&live, Some(&ring), k_bg),
        Scene::Replay => {
            // A self-lit screen filling the frame, showing a recording of the face.
            let rec = shot(subject, rng);
            let (a, _) = frame_of(&rec, None, 0.0);
            (a, vec![0.0; REAL_W * REAL_H * 3])
        }
        Scene::Print => {
            // A photo of the face (another room mix) printed on matte paper twice the face
            // box's size, held where the face would be: its reflectance is the photo plus the
            // paper's sheen; flat, so the ring lights it uniformly.
            let photo = shot(subject, rng);
            let (p, _) = frame_of(&photo, None, 0.0);
            let (mut a, mut k) = frame_of(&live, Some(&ring), k_bg);
            let [bx, by, bw, bh] = REAL_FACE_BOX;
            let (cx, cy) = (bx + bw / 2.0, by + bh / 2.0);
            let sheen = 0.02 * live.level;
            for y in 0..REAL_H {
                for x in 0..REAL_W {
                    if (x as f32 - cx).abs() > bw || (y as f32 - cy).abs() > bh {
                        continue;
                    }
                    for c in 0..3 {
                        let j = (y * REAL_W + x) * 3 + c;
                        a[j] = p[j] + sheen;
                        k[j] = spec.led * a[j];
                    }
                }
            }
            (a, k)
        }
    };
    Parts {
        albedo,
        ring,
        width: REAL_W as u32,
        height: REAL_H as u32,
        face: REAL_FACE_BOX,
        model: format!("real:{}", subject.id),
    }
}

/// The bundled photo's scene for `spec`: the rendered relief.
fn photo_parts(spec: &SimSpec) -> Result<Parts, CaptureError> {
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
    let mut ring = vec![0f32; albedo.len()];
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
            let i = (y * width + x) as usize * 3;
            for c in 0..3 {
                ring[i + c] = albedo[i + c] * g * spec.led;
            }
        }
    }
    Ok(Parts {
        albedo,
        ring,
        width,
        height,
        face,
        model: format!("photo:{name}"),
    })
}

/// Logged once per process: `sim:` fell back to the rendered relief.
static FALLBACK_LOGGED: std::sync::Once = std::sync::Once::new();

impl SimSource {
    /// A source for `spec` at `fps`, lit by `light`. The real-face set is read from
    /// `spec.faces_dir` (only the chosen subject) unless the model is `photo`; with `auto` and no
    /// set there, the rendered relief is used and that is logged once.
    pub fn new(spec: SimSpec, fps: f64, light: SimLight) -> Result<Self, CaptureError> {
        let real = match spec.model {
            FaceModel::Photo => false,
            FaceModel::Real => true,
            FaceModel::Auto => {
                let found = spec.faces_dir.join("index.json").is_file();
                if !found {
                    FALLBACK_LOGGED.call_once(|| {
                        tracing::warn!(
                            faces_dir = %spec.faces_dir.display(),
                            "sim: no real-face set at {} (set [source] sim_faces); rendering the \
                             bundled photos with the ellipsoid relief instead",
                            spec.faces_dir.display()
                        )
                    });
                }
                found
            }
        };
        if !real {
            return Self::assemble(spec, fps, light, |spec, _| photo_parts(spec));
        }
        let ids = FaceSet::ids(&spec.faces_dir)?;
        let id = match &spec.subject {
            Some(s) if ids.contains(s) => s.clone(),
            Some(s) => {
                return Err(CaptureError::Sim(format!(
                    "real-face set {}: no subject {s:?}",
                    spec.faces_dir.display()
                )))
            }
            None => ids[(spec.seed % ids.len() as u64) as usize].clone(),
        };
        let set = FaceSet::load(&spec.faces_dir, |i| i == id)?;
        Self::with_subject(spec, fps, light, &set.subjects[0])
    }

    /// A real-face source for `spec` showing `subject` (already loaded).
    pub fn with_subject(
        spec: SimSpec,
        fps: f64,
        light: SimLight,
        subject: &Subject,
    ) -> Result<Self, CaptureError> {
        Self::assemble(spec, fps, light, |spec, rng| {
            Ok(real_parts(spec, subject, rng))
        })
    }

    fn assemble(
        spec: SimSpec,
        fps: f64,
        light: SimLight,
        parts: impl FnOnce(&SimSpec, &mut StdRng) -> Result<Parts, CaptureError>,
    ) -> Result<Self, CaptureError> {
        let mut rng = StdRng::seed_from_u64(spec.seed);
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
        let p = parts(&spec, &mut rng)?;
        let info = Arc::new(SourceInfo {
            kind: "sim".into(),
            path: format!("sim:{}", spec.scene.as_str()),
            driver: "sim".into(),
            card: format!("simulated booth ({}, seed {})", p.model, spec.seed),
            bus: String::new(),
            format: PixelFormat::Jpeg,
            width: p.width,
            height: p.height,
            fps,
        });
        Ok(Self {
            spec,
            info,
            light,
            rng,
            width: p.width,
            height: p.height,
            albedo: p.albedo,
            ring: p.ring,
            face: p.face,
            model: p.model,
            lut: encode_lut(),
            noise,
            history: vec![false; 2],
            lag_w,
            exposure: EXPOSURE,
            target: None,
            flicker_phase,
            recorded: Vec::new(),
            fps,
            pacer: super::Pacer::new(fps),
            n: 0,
        })
    }

    /// Which face model rendered the scene: `photo:<file>` or `real:<subject>`.
    pub fn model(&self) -> &str {
        &self.model
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
        let replay = self.spec.scene == Scene::Replay;
        let (room, glare) = (g * (1.0 + f), g * self.spec.glare * b);
        let gb = g * b;
        for i in 0..w * h {
            for c in 0..3 {
                let j = i * 3 + c;
                let l = if replay {
                    self.albedo[j] * g + glare
                } else {
                    self.albedo[j] * room + self.ring[j] * gb
                }
                .clamp(0.0, 1.0);
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
