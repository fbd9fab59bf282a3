//! The `veriframe` binary: parses arguments once, dispatches to the library, maps outcomes to
//! exit codes (0 ok, 1 a check failed, 2 usage/config/runtime error).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use veriframe::config::{Config, LogFormat, Overrides};
use veriframe::daemon::{self, Components, Limits};
use veriframe::shutdown::Shutdown;

mod commands;

use commands::Outcome;

#[derive(Debug, Parser)]
#[command(
    name = "veriframe",
    version,
    about = "Trustworthy camera capture: signed frames, on-device presentation-attack detection, MQTT alerts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the capture daemon.
    Run(RunArgs),
    /// List V4L2 cameras with their formats, frame sizes and intervals.
    Probe {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a device signing key.
    Keygen(commands::seal::KeygenArgs),
    /// Verify sealed captures.
    Verify(commands::seal::VerifyArgs),
    /// Benchmark sealing (hash + sign + write) on this machine.
    BenchSeal(commands::seal::BenchSealArgs),
    /// Subscribe to a device's alerts and check their signatures.
    Watch(commands::publish::WatchArgs),
    /// Benchmark the durable MQTT outbox against a broker.
    BenchOutbox(commands::publish::BenchOutboxArgs),
    /// Evaluate the detector on labelled images.
    Eval(commands::detect::EvalArgs),
    /// Benchmark the detector on this machine.
    Bench(commands::detect::BenchArgs),
    /// Print the primary face box the detector finds in each image (a training box cache).
    Faces(commands::detect::FacesArgs),
    /// Convert and inspect detector model files.
    Model(commands::detect::ModelArgs),
    /// Camera identity: `camera pin` binds the device to the camera now attached.
    Camera(commands::camera::CameraArgs),
    /// Score the light challenge: simulated sessions (pass and reject rates), or `--captures`
    /// of a real booth session.
    ChallengeEval(commands::challenge::ChallengeEvalArgs),
    /// Device certificate for C2PA Content Credentials: self-signed (pilot), CSR, install.
    Cert(commands::c2pa::CertArgs),
    /// Export sealed captures: `--c2pa` makes C2PA Content Credential copies.
    Export(commands::c2pa::ExportArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Configuration file (TOML). Without one, built-in defaults are used.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Frame source: /dev/videoN, an image file or directory, `synthetic`, `samples`, or a
    /// simulated booth for the light challenge (`sim:live`, `sim:replay`, `sim:print`,
    /// `sim:injected`).
    #[arg(long)]
    source: Option<String>,
    /// Directory for captures, keys and the outbox.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_parser = commands::enum_parser(&LogFormat::ALL, LogFormat::name))]
    log_format: Option<LogFormat>,
    /// Device signing key (PKCS#8).
    #[arg(long)]
    key: Option<PathBuf>,
    /// MQTT broker, `mqtt://host:port` or `mqtts://host:port`.
    #[arg(long)]
    broker: Option<String>,
    /// Stop after this many frames.
    #[arg(long)]
    frames: Option<u64>,
    /// Stop after this long (e.g. `30s`, `5m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(commands::use_colour())
        .with_writer(std::io::stderr);
    // try_init: a second initialisation (never expected here) is not worth a crash.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The error and its causes, each message once: a cause whose text its parent already shows
/// (e.g. `{path}: {source}` with `source` as the cause) is not repeated.
fn render_error(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if msg.is_empty() || out.contains(&msg) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&msg);
    }
    out
}

fn run(args: RunArgs) -> anyhow::Result<Outcome> {
    let ov = Overrides {
        source: args.source,
        data_dir: args.data_dir,
        log_format: args.log_format,
        key: args.key,
        broker: args.broker,
    };
    let cfg = Config::load(args.config.as_deref(), &ov)?;
    init_logging(cfg.log.format, &cfg.log.level);
    let limits = Limits {
        frames: args.frames,
        duration: args.duration,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting async runtime")?;
    rt.block_on(async move {
        let shutdown = Shutdown::new();
        spawn_signal_handler(shutdown.clone())?;
        let parts = Components::from_config(&cfg)?;
        let report = daemon::run_pipeline(&cfg, parts, limits, shutdown).await?;
        if let Some(e) = report.capture_error {
            anyhow::bail!("capture failed: {e}");
        }
        Ok(Outcome::Ok)
    })
}

fn spawn_signal_handler(shutdown: Shutdown) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
        shutdown.trigger();
    });
    Ok(())
}

fn dispatch(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Run(a) => run(a),
        Command::Probe { json } => {
            init_logging(LogFormat::Text, "warn");
            Ok(commands::probe::probe(json)?)
        }
        Command::Keygen(a) => Ok(commands::seal::keygen(&a)?),
        Command::Verify(a) => Ok(commands::seal::verify(&a)?),
        Command::BenchSeal(a) => Ok(commands::seal::bench_seal(&a)?),
        Command::Watch(a) => {
            init_logging(LogFormat::Text, "warn");
            Ok(commands::publish::watch(&a)?)
        }
        Command::BenchOutbox(a) => {
            init_logging(LogFormat::Text, "warn");
            Ok(commands::publish::bench_outbox(&a)?)
        }
        Command::Eval(a) => Ok(commands::detect::eval(&a)?),
        Command::Bench(a) => Ok(commands::detect::bench(&a)?),
        Command::Faces(a) => Ok(commands::detect::faces(&a)?),
        Command::Model(a) => Ok(commands::detect::model(&a)?),
        Command::ChallengeEval(a) => Ok(commands::challenge::challenge_eval(&a)?),
        Command::Camera(a) => {
            init_logging(LogFormat::Text, "info");
            Ok(commands::camera::camera(&a)?)
        }
        Command::Cert(a) => {
            init_logging(LogFormat::Text, "warn");
            Ok(commands::c2pa::cert(&a)?)
        }
        Command::Export(a) => {
            init_logging(LogFormat::Text, "warn");
            Ok(commands::c2pa::export(&a)?)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse(); // clap exits with 2 on usage errors, 0 for --help/--version
    match dispatch(cli) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::CheckFailed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("veriframe: error: {}", render_error(&e));
            ExitCode::from(2)
        }
    }
}
