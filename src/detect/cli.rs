//! `veriframe eval`, `veriframe bench` and `veriframe model …`.

use std::path::PathBuf;

use super::DetectError;
use crate::Outcome;

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Directory of bona fide (real) face images, searched recursively.
    #[arg(long)]
    pub real: PathBuf,
    /// Directory of attack images, searched recursively.
    #[arg(long)]
    pub attack: PathBuf,
    /// Model set to evaluate.
    #[arg(long)]
    pub model: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Inference threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Weights precision.
    #[arg(long, default_value = "q8_0")]
    pub quant: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn eval(_args: &EvalArgs) -> Result<Outcome, DetectError> {
    Err(DetectError::NotImplemented("eval"))
}

pub fn bench(_args: &BenchArgs) -> Result<Outcome, DetectError> {
    Err(DetectError::NotImplemented("bench"))
}
