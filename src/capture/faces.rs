//! Real faces under single strobes, for the simulated booth's real-face model
//! (docs/challenge.md, "The real-face model"): the Extended Yale Face Database B cropped frontal
//! faces (168×192 grey), each photographed once per strobe in a dark dome. Read at run time from
//! a directory holding `index.json` (default [`DEFAULT_DIR`], `[source] sim_faces`); the images
//! are research-use only and never part of the project.
//!
//! Each strobe image is, in linear light, close to that one light's contribution (the strobes-off
//! image, where the set has an aligned one, is subtracted), so weighted sums of them are
//! physically valid images of the face under several lights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::CaptureError;

/// Where the set is looked for when `[source] sim_faces` is not given (relative to the working
/// directory: a checkout beside `shared/`).
pub const DEFAULT_DIR: &str = "../shared/data/illumination";

/// Width and height of every face image.
pub const WIDTH: usize = 168;
pub const HEIGHT: usize = 192;

/// One person: linear-light images (row-major, [`WIDTH`] × [`HEIGHT`], 0..1) per strobe.
#[derive(Debug, Clone)]
pub struct Subject {
    pub id: String,
    /// Overhead and side strobes (`A+000E+45`, `A+000E+90`, `A±050E+00`, `A+000E-35`): room light.
    pub room: Vec<Vec<f32>>,
    /// Near-frontal strobes (on-axis and up to 10° off, 20° above and below): the booth's ring.
    pub ring: Vec<Vec<f32>>,
}

/// The subjects of a real-face set.
#[derive(Debug, Clone)]
pub struct FaceSet {
    pub dir: PathBuf,
    pub subjects: Vec<Subject>,
}

fn err(dir: &Path, reason: impl std::fmt::Display) -> CaptureError {
    CaptureError::Sim(format!("real-face set {}: {reason}", dir.display()))
}

/// File names per subject and role, from `index.json`.
type Index = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn read_index(dir: &Path) -> Result<Index, CaptureError> {
    let path = dir.join("index.json");
    let bytes = std::fs::read(&path).map_err(|e| {
        err(
            dir,
            format!(
                "cannot read {}: {e} (set `[source] sim_faces`)",
                path.display()
            ),
        )
    })?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| err(dir, format!("index.json: {e}")))?;
    let subjects = v["subjects"]
        .as_object()
        .ok_or_else(|| err(dir, "index.json has no `subjects` object"))?;
    let mut out = Index::new();
    for (id, tags) in subjects {
        let tags = tags
            .as_object()
            .ok_or_else(|| err(dir, format!("index.json: subject {id} is not an object")))?;
        let mut roles: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (tag, e) in tags {
            let (Some(file), Some(role)) = (e["file"].as_str(), e["role"].as_str()) else {
                return Err(err(dir, format!("index.json: {id} {tag}: no file or role")));
            };
            roles.entry(role.into()).or_default().push(file.into());
        }
        out.insert(id.clone(), roles);
    }
    if out.is_empty() {
        return Err(err(dir, "index.json lists no subjects"));
    }
    Ok(out)
}

/// sRGB code value → linear light (the source camera's response was not measured; its 8-bit
/// values are read as sRGB).
fn linear(c: u8) -> f32 {
    let c = c as f32 / 255.0;
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

fn load_image(dir: &Path, file: &str) -> Result<Vec<f32>, CaptureError> {
    let path = dir.join(file);
    let img = image::open(&path)
        .map_err(|e| err(dir, format!("{}: {e}", path.display())))?
        .into_luma8();
    if img.dimensions() != (WIDTH as u32, HEIGHT as u32) {
        return Err(err(
            dir,
            format!(
                "{}: {}×{}, expected {WIDTH}×{HEIGHT}",
                path.display(),
                img.width(),
                img.height()
            ),
        ));
    }
    Ok(img.as_raw().iter().map(|&c| linear(c)).collect())
}

impl FaceSet {
    /// The subject ids the set at `dir` lists, sorted.
    pub fn ids(dir: &Path) -> Result<Vec<String>, CaptureError> {
        Ok(read_index(dir)?.into_keys().collect())
    }

    /// Load the subjects of the set at `dir` whose id `want` accepts.
    pub fn load(dir: &Path, want: impl Fn(&str) -> bool) -> Result<Self, CaptureError> {
        let index = read_index(dir)?;
        let mut subjects = Vec::new();
        for (id, roles) in index.iter().filter(|(id, _)| want(id)) {
            let ambient = match roles.get("ambient").and_then(|f| f.first()) {
                Some(f) => Some(load_image(dir, f)?),
                None => None,
            };
            let load_role = |role: &str| -> Result<Vec<Vec<f32>>, CaptureError> {
                let mut v = Vec::new();
                for f in roles.get(role).map(Vec::as_slice).unwrap_or(&[]) {
                    let mut img = load_image(dir, f)?;
                    if let Some(a) = &ambient {
                        for (p, &q) in img.iter_mut().zip(a) {
                            *p = (*p - q).max(0.0);
                        }
                    }
                    v.push(img);
                }
                if v.is_empty() {
                    return Err(err(dir, format!("subject {id} has no {role} images")));
                }
                Ok(v)
            };
            subjects.push(Subject {
                id: id.clone(),
                room: load_role("room")?,
                ring: load_role("near_frontal")?,
            });
        }
        if subjects.is_empty() {
            return Err(err(dir, "no subject selected"));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            subjects,
        })
    }
}

/// The subject's number (`yaleB07` → 7), for the fixed training / held-out split.
pub fn subject_number(id: &str) -> Option<u32> {
    let digits: String = id.chars().filter(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_set_is_named_in_the_error() {
        let e = FaceSet::ids(Path::new("/nonexistent/faces")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/faces"), "{e}");
        assert!(e.to_string().contains("sim_faces"), "{e}");
    }

    #[test]
    fn subject_numbers() {
        assert_eq!(subject_number("yaleB07"), Some(7));
        assert_eq!(subject_number("yaleB38"), Some(38));
        assert_eq!(subject_number("x"), None);
    }
}
