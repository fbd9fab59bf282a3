//! Veriframe: a trustworthy camera capture point.
//!
//! Every authentic frame is signed at the source (defeating *injected* deepfakes) and every frame
//! runs through an on-device presentation-attack detector (defeating deepfakes *presented* to the
//! lens). Operators hear about attacks, tamper and faults over MQTT.
//!
//! # Layout (one module per pipeline stage, a trait at each seam)
//!
//! ```text
//!  capture ──(bounded, drop-oldest)──▶ detect ─▶ decide ─▶ seal ─▶ publish
//!  FrameSource                         Analyzer   (pure)    Sealer   EventSink
//! ```
//!
//! | module | owns | seam |
//! |---|---|---|
//! | [`alert`] | alert kinds and severities (typed), alert requests, once-per-episode trackers | — |
//! | [`record`] | canonical JSON, SHA-256, crash-safe writes, Ed25519 verification | [`record::Signer`] |
//! | [`frame`] | frames, pixel formats, YUYV→RGB (once per frame), decoding, storage encoding | — |
//! | [`config`] | TOML → validated [`config::Config`], CLI overrides | — |
//! | [`camera`] | camera identity (fingerprint, pin), injection instruments, stream integrity | [`camera::fingerprint::CameraInfoSource`] |
//! | [`capture`] | V4L2, replay, synthetic sources; reconnect | [`capture::FrameSource`] |
//! | [`detect`] | decode, face detection, PAD, optional deepfake classifier (Meso4), model files, kernels | [`detect::Analyzer`] |
//! | [`decide`] | smoothing, hysteresis, alert decisions (pure functions) | — |
//! | [`challenge`] | liveness by light: code, measurement, decision (pure), player/challenger | [`challenge::Illuminator`] |
//! | [`seal`] | keys, manifests, hash chain, atomic store, verification | [`seal::Sealer`] |
//! | [`publish`] | MQTT topics, payloads, durable outbox | [`publish::EventSink`] |
//! | [`device`] | sd_notify, GPIO | [`device::Actuator`] |
//! | [`daemon`] | wiring, threads, queues, shutdown, stats | — |
//! | [`queue`], [`stats`], [`shutdown`] | drop-oldest queue, counters and latency windows, shutdown signal | — |
//!
//! The `veriframe` binary (`src/main.rs`) parses arguments once and dispatches to these modules;
//! it is the only place `anyhow` is used.

pub mod alert;
pub mod camera;
pub mod capture;
pub mod challenge;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod decide;
pub mod detect;
pub mod device;
pub mod frame;
pub mod publish;
pub mod queue;
pub mod record;
pub mod seal;
pub mod shutdown;
pub mod stats;

/// What a command reports back to `main`, which turns it into an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything checked out: exit 0.
    Ok,
    /// A check failed (e.g. a capture did not verify): exit 1.
    CheckFailed,
}
