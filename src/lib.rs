//! Veriframe: a trustworthy camera capture point.
//!
//! Every authentic frame is signed at the source (defeating *injected* deepfakes) and every frame
//! runs through an on-device presentation-attack detector (defeating deepfakes *presented* to the
//! lens). Operators hear about attacks, tamper and faults over MQTT.
//!
//! # Map
//!
//! ```text
//!  capture ──(bounded, drop-oldest)──▶ detect ─▶ decide ─▶ seal ─▶ publish
//!  FrameSource                         Analyzer   (pure)    Sealer   EventSink
//! ```
//!
//! One module per pipeline stage, a trait at each seam; `camera` and `challenge` add trust in the
//! source and liveness by light, `record` is the ground floor of everything signed, `daemon` wires
//! the stages. What each module owns, the threads, the dependency order and the invariants:
//! `ARCHITECTURE.md` at the repository root. The `veriframe` binary (`src/main.rs`,
//! `src/commands/`) parses arguments and calls in here.

pub mod alert;
pub mod camera;
pub mod capture;
pub mod challenge;
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
