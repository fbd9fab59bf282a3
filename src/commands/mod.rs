//! The subcommands: argument types (clap) and what each command does, on top of the library's
//! stage modules. `main.rs` parses arguments and dispatches here; no stage module depends on this
//! one.

pub mod c2pa;
pub mod detect;
pub mod probe;
pub mod publish;
pub mod seal;
