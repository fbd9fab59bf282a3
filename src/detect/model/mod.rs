//! Model files: Veriframe's GGUF format ([`file`]).

pub mod file;
