//! Hand-written CPU kernels the networks run on, picked at run time (AVX2/FMA, NEON, scalar):
//! 3×3 depthwise ([`depthwise`]), f32 pointwise/GEMM ([`pointwise`]), Q8_0 GEMM ([`q8`]).

pub mod depthwise;
pub mod pointwise;
pub mod q8;

/// The largest `|a[i] − b[i]|`, for checking a kernel or network against a reference; infinite
/// when the lengths differ, so a tolerance check on it fails.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
