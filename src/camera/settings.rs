//! Camera-trust settings of `[source]` (`allow_virtual` is a plain field of
//! `capture::SourceConfig`): `[source.expect]` and `[source.integrity]`, the validated settings
//! that the checks of this module read.

use serde::{Deserialize, Serialize};

/// `[source.integrity]` section of the config file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntegrityConfig {
    /// Check camera streams at all.
    pub enabled: bool,
    /// Frames in the sliding window.
    pub window: usize,
    /// Anomalous frames in the window that make an anomaly sustained.
    pub min_anomalous: usize,
    /// An interval shorter than `(1 − this)` × the negotiated interval is an anomaly.
    pub interval_tolerance: f64,
    /// An interval longer than this × the negotiated interval (per driver frame) is an anomaly.
    /// UVC cameras that lower their rate in the dark (auto exposure priority) need headroom.
    pub max_interval_factor: f64,
    /// Frames remembered for the repeat check.
    pub repeat_history: usize,
    /// Mean-luma change (0–255) between consecutive frames that counts as a jump.
    pub max_brightness_jump: f32,
}

impl Default for IntegrityConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: 30,
            min_anomalous: 10,
            interval_tolerance: 0.5,
            max_interval_factor: 3.0,
            repeat_history: 512,
            max_brightness_jump: 60.0,
        }
    }
}

impl IntegrityConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.window == 0 || self.window > 10_000 {
            return Err(("source.integrity.window", "must be in 1..=10000".into()));
        }
        if self.min_anomalous == 0 || self.min_anomalous > self.window {
            return Err((
                "source.integrity.min_anomalous",
                "must be in 1..=window".into(),
            ));
        }
        if !(self.interval_tolerance > 0.0 && self.interval_tolerance < 1.0) {
            return Err((
                "source.integrity.interval_tolerance",
                "must be in (0, 1)".into(),
            ));
        }
        if !(self.max_interval_factor.is_finite() && self.max_interval_factor > 1.0) {
            return Err(("source.integrity.max_interval_factor", "must be > 1".into()));
        }
        if self.repeat_history > 100_000 {
            return Err((
                "source.integrity.repeat_history",
                "must be at most 100000".into(),
            ));
        }
        if !(self.max_brightness_jump > 0.0 && self.max_brightness_jump <= 255.0) {
            return Err((
                "source.integrity.max_brightness_jump",
                "must be in (0, 255]".into(),
            ));
        }
        Ok(())
    }
}

/// `[source.expect]`: the camera this device must use. Every key given must match; at least one
/// must be given. `sha256` is the whole fingerprint (as `veriframe probe --json` prints it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExpectConfig {
    pub sha256: Option<String>,
    pub driver: Option<String>,
    pub card: Option<String>,
    pub bus_info: Option<String>,
    pub id_vendor: Option<String>,
    pub id_product: Option<String>,
    pub serial: Option<String>,
    pub port: Option<String>,
}

impl ExpectConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self == &ExpectConfig::default() {
            return Err((
                "source.expect",
                "give at least one of sha256, driver, card, bus_info, id_vendor, id_product, serial, port".into(),
            ));
        }
        if let Some(h) = &self.sha256 {
            if h.len() != 64 || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(("source.expect.sha256", "expected 64 hex digits".into()));
            }
        }
        Ok(())
    }
}
