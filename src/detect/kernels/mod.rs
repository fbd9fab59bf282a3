//! Hand-written CPU kernels the networks run on, picked at run time (AVX2/FMA, NEON, scalar):
//! 3×3 depthwise ([`depthwise`]), f32 pointwise/GEMM ([`pointwise`]), Q8_0 GEMM ([`q8`]).

pub mod depthwise;
pub mod pointwise;
pub mod q8;
