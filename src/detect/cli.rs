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

/// `veriframe model …`: Veriframe model files.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    pub command: ModelCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ModelCommand {
    /// Convert upstream weights (safetensors) into a Veriframe model file (GGUF).
    Convert(ConvertArgs),
    /// Print a model file's metadata and check its weights hash.
    Info {
        /// The `.gguf` model file.
        path: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// Network architecture of the input weights.
    #[arg(long, value_enum)]
    pub arch: super::minifasnet::Arch,
    /// Upstream-layout `.safetensors` state dict.
    #[arg(long = "in")]
    pub input: PathBuf,
    /// Output `.gguf` model file.
    #[arg(long)]
    pub out: PathBuf,
    /// Precision of the pointwise/linear weights.
    #[arg(long, value_enum, default_value = "q8_0")]
    pub quant: super::Quant,
}

pub fn model(args: &ModelArgs) -> Result<Outcome, DetectError> {
    use super::modelfile;
    match &args.command {
        ModelCommand::Convert(a) => {
            let bytes = std::fs::read(&a.input)?;
            let m = super::minifasnet::convert(&bytes, Some(a.arch), a.quant)
                .map_err(|e| DetectError::Model(format!("{}: {e}", a.input.display())))?;
            modelfile::write(&m, &a.out)?;
            // Prove the file loads as a network before reporting success.
            let net = super::minifasnet::MiniFasNet::load(&a.out, a.quant)?;
            let size = std::fs::metadata(&a.out)?.len();
            println!(
                "wrote {} ({} bytes): {} weights_sha256={}",
                a.out.display(),
                size,
                net.model_id().name,
                modelfile::weights_sha256(&m.tensors)?
            );
            Ok(Outcome::Ok)
        }
        ModelCommand::Info { path } => {
            let m = modelfile::read(path)?;
            let n_q8 = m
                .tensors
                .values()
                .filter(|t| t.dtype() == candle_core::quantized::GgmlDType::Q8_0)
                .count();
            println!("file:            {}", path.display());
            println!("architecture:    {}", m.arch);
            println!("quant:           {:?}", m.quant);
            println!("crop_scale:      {}", m.crop_scale);
            println!("input:           {}", m.input);
            println!("source_sha256:   {}", m.source_sha256);
            println!(
                "weights_sha256:  {} (verified)",
                modelfile::weights_sha256(&m.tensors)?
            );
            println!("tensors:         {} ({n_q8} Q8_0)", m.tensors.len());
            Ok(Outcome::Ok)
        }
    }
}
