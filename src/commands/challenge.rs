//! `veriframe challenge-eval`: score the light challenge, on simulated sessions (pass rate of
//! live faces, fail rate per attack, under noise, auto-exposure and mains flicker), or on the
//! sealed captures of a real booth session (`--captures`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Outcome;
use veriframe::capture::sim::Scene;
use veriframe::capture::CaptureError;
use veriframe::challenge::eval::{self, Cell};
use veriframe::challenge::{ChallengeConfig, ChallengeRecord};
use veriframe::config::{Config, Overrides};
use veriframe::seal::manifest::Manifest;

#[derive(Debug, clap::Args)]
pub struct ChallengeEvalArgs {
    /// Configuration file: its `[challenge]` thresholds are scored (default: built-in).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Seeds (trials) per scene and condition.
    #[arg(long, default_value_t = 20)]
    pub seeds: u64,
    /// Camera frame rate of the simulation.
    #[arg(long, default_value_t = 10.0)]
    pub fps: f64,
    /// Only the first condition (the default booth).
    #[arg(long)]
    pub quick: bool,
    /// Score a real booth session instead: the sealed captures under this directory (the
    /// challenge records in their manifests, one per nonce). Verify them first
    /// (`veriframe verify`).
    #[arg(long)]
    pub captures: Option<PathBuf>,
    /// With `--captures`: what was in front of the camera (`live` or `attack`).
    #[arg(long, default_value = "live")]
    pub label: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Errors of the command.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeEvalError {
    #[error("{0}")]
    Config(#[from] veriframe::config::ConfigError),
    #[error("simulation: {0}")]
    Sim(#[from] CaptureError),
    #[error("{path}: {reason}")]
    Read { path: String, reason: String },
    #[error("--label must be `live` or `attack`, got {0:?}")]
    Label(String),
}

fn pct(n: u32, d: u32) -> f64 {
    if d == 0 {
        0.0
    } else {
        100.0 * n as f64 / d as f64
    }
}

pub fn challenge_eval(args: &ChallengeEvalArgs) -> Result<Outcome, ChallengeEvalError> {
    let cfg = match &args.config {
        Some(p) => Config::load(Some(p), &Overrides::default())?.challenge,
        None => ChallengeConfig::default(),
    };
    if let Some(dir) = &args.captures {
        return score_captures(dir, &args.label, args.json);
    }
    let mut conds = eval::conditions();
    if args.quick {
        conds.truncate(1);
    }
    if !args.json {
        println!(
            "light challenge on simulated sessions: {} seeds per cell, {} fps, code {} bits x {} frames, max lag {}; thresholds: correlation {}, response {}, structure {}",
            args.seeds, args.fps, cfg.code_bits, cfg.frames_per_bit, cfg.max_lag,
            cfg.min_correlation, cfg.min_response, cfg.min_structure
        );
        println!(
            "{:<36} {:<9} {:>6} {:>7} {:>7} {:>7} {:>8} {:>8} {:>9} {:>9}",
            "condition",
            "scene",
            "trials",
            "passed",
            "failed",
            "inconc",
            "pass %",
            "reject %",
            "corr",
            "structure"
        );
    }
    let json = args.json;
    let cells = eval::run(
        &cfg,
        args.seeds,
        args.fps,
        &Scene::ALL,
        &conds,
        |c: &Cell| {
            if !json {
                println!(
                    "{:<36} {:<9} {:>6} {:>7} {:>7} {:>7} {:>7.1}% {:>7.1}% {:>9.3} {:>9.4}",
                    c.condition,
                    c.scene,
                    c.trials,
                    c.passed,
                    c.failed,
                    c.inconclusive,
                    pct(c.passed, c.trials),
                    pct(c.trials - c.passed, c.trials),
                    c.correlation,
                    c.structure
                );
            }
        },
    )?;
    let total = |scene: &str| {
        cells
            .iter()
            .filter(|c| c.scene == scene)
            .fold((0, 0), |(p, t), c| (p + c.passed, t + c.trials))
    };
    if json {
        println!(
            "{}",
            serde_json::json!({ "seeds": args.seeds, "fps": args.fps, "cells": cells })
        );
    } else {
        println!("summary over all conditions:");
        let (p, t) = total("live");
        println!(
            "  live: passed {p}/{t} ({:.1} %), false rejects {:.1} %",
            pct(p, t),
            pct(t - p, t)
        );
        for s in ["replay", "print", "injected"] {
            let (p, t) = total(s);
            println!(
                "  {s}: rejected {}/{t} ({:.1} %), accepted {:.1} %",
                t - p,
                pct(t - p, t),
                pct(p, t)
            );
        }
    }
    Ok(Outcome::Ok)
}

/// Collect manifest files under `dir`.
fn manifests(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ChallengeEvalError> {
    let rd = std::fs::read_dir(dir).map_err(|e| ChallengeEvalError::Read {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            manifests(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "json")
            && p.file_name().is_some_and(|n| n != "chain.json")
        {
            out.push(p);
        }
    }
    Ok(())
}

fn score_captures(dir: &Path, label: &str, json: bool) -> Result<Outcome, ChallengeEvalError> {
    if label != "live" && label != "attack" {
        return Err(ChallengeEvalError::Label(label.into()));
    }
    let mut files = Vec::new();
    manifests(dir, &mut files)?;
    let mut by_nonce: BTreeMap<String, ChallengeRecord> = BTreeMap::new();
    let mut unreadable = 0;
    for f in &files {
        match std::fs::read(f).ok().and_then(|b| Manifest::parse(&b).ok()) {
            Some(m) => {
                if let Some(c) = m.challenge {
                    by_nonce.insert(c.nonce.clone(), c);
                }
            }
            None => unreadable += 1,
        }
    }
    let count = |v: &str| by_nonce.values().filter(|c| c.verdict == v).count() as u32;
    let (p, f, i) = (count("passed"), count("failed"), count("inconclusive"));
    let n = by_nonce.len() as u32;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "label": label, "challenges": n, "passed": p, "failed": f, "inconclusive": i,
                "manifests": files.len(), "unreadable": unreadable,
                "records": by_nonce.values().collect::<Vec<_>>(),
            })
        );
    } else {
        println!(
            "{} manifests ({unreadable} unreadable), {n} challenges: {p} passed, {f} failed, {i} inconclusive",
            files.len()
        );
        for c in by_nonce.values() {
            println!(
                "  {} frames {}..={} {:<12} corr {} lag {} response {} structure {}",
                c.nonce,
                c.first_seq,
                c.last_seq,
                c.verdict,
                c.correlation,
                c.lag_frames.map_or("-".into(), |l| l.to_string()),
                c.response,
                c.structure
            );
        }
        match label {
            "live" => println!(
                "live session: pass rate {:.1} %, false rejects {:.1} %",
                pct(p, n),
                pct(f, n)
            ),
            _ => println!(
                "attack session: rejected {:.1} %, accepted {:.1} %",
                pct(n - p, n),
                pct(p, n)
            ),
        }
    }
    Ok(Outcome::Ok)
}
