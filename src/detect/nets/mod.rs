//! The networks: BlazeFace face detector ([`face`]), MiniFASNet PAD classifier
//! ([`minifasnet`]), Meso4 deepfake classifier ([`meso`]).

pub mod face;
pub mod meso;
pub mod minifasnet;
