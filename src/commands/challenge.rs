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
    /// Score on real faces instead: the real-face set at this directory (default: the
    /// configuration's `[source] sim_faces`, else ../shared/data/illumination).
    #[arg(long, num_args = 0..=1)]
    #[allow(clippy::option_option)]
    pub faces: Option<Option<PathBuf>>,
    /// With `--faces`: which subjects, by the fixed split (`train`: odd-numbered, thresholds
    /// are chosen on them; `held-out`: even-numbered; `all`).
    #[arg(long, default_value = "held-out")]
    pub subjects: String,
    /// With `--faces`: only these subjects (ids of the set, e.g. `yaleB02`; repeatable), within
    /// the `--subjects` split.
    #[arg(long = "subject")]
    pub only: Vec<String>,
    /// With `--faces`: live trials per subject.
    #[arg(long, default_value_t = 24)]
    pub live_seeds: u64,
    /// With `--faces`: trials per subject of each attack (print, replay, injected).
    #[arg(long, default_value_t = 4)]
    pub attack_seeds: u64,
    /// With `--faces`: do not render; score the trials of an earlier `--faces --json` output
    /// (their figures do not depend on the thresholds) under this configuration's thresholds.
    #[arg(long)]
    pub rescore: Option<PathBuf>,
    /// With `--faces`: worker threads.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
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
    #[error("--subjects must be `train`, `held-out` or `all`, got {0:?}")]
    Split(String),
}

fn pct(n: u32, d: u32) -> f64 {
    if d == 0 {
        0.0
    } else {
        100.0 * n as f64 / d as f64
    }
}

pub fn challenge_eval(args: &ChallengeEvalArgs) -> Result<Outcome, ChallengeEvalError> {
    let full = match &args.config {
        Some(p) => Config::load(Some(p), &Overrides::default())?,
        None => Config::default(),
    };
    let cfg = full.challenge.clone();
    if let Some(dir) = &args.captures {
        return score_captures(dir, &args.label, args.json);
    }
    if let Some(dir) = &args.faces {
        let dir = dir.clone().unwrap_or_else(|| full.source.sim_faces.clone());
        return score_faces(args, &cfg, &dir);
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

fn score_faces(
    args: &ChallengeEvalArgs,
    cfg: &ChallengeConfig,
    dir: &Path,
) -> Result<Outcome, ChallengeEvalError> {
    use veriframe::challenge::eval::faces::{self as ef, Split};
    let split =
        Split::parse(&args.subjects).ok_or(ChallengeEvalError::Split(args.subjects.clone()))?;
    let (live, attacks) = if args.quick {
        (args.live_seeds.min(4), args.attack_seeds.min(1))
    } else {
        (args.live_seeds, args.attack_seeds)
    };
    let want = |id: &str| {
        split.contains(id) && (args.only.is_empty() || args.only.iter().any(|o| o == id))
    };
    let trials = match &args.rescore {
        Some(f) => rescored(f, &want)?,
        None => {
            let set = veriframe::capture::faces::FaceSet::load(dir, want)?;
            if !args.json {
                eprintln!(
                    "real faces from {}: {} subjects ({}), {live} live and {attacks} x 3 attack trials each, {} jobs",
                    dir.display(),
                    set.subjects.len(),
                    args.subjects,
                    args.jobs
                );
            }
            ef::run(&set, cfg, live, attacks, args.fps, args.jobs, |_| {})?
        }
    };
    let mut ids: Vec<&str> = trials.iter().map(|t| t.subject.as_str()).collect();
    ids.dedup();
    let selection = (split == Split::Train)
        .then(|| ef::select(&trials, cfg))
        .flatten();
    let (rows, scenes) = ef::summarize(&trials, cfg);
    let conditions = serde_json::json!({
        "noise": ef::NOISE, "flicker_hz": ef::FLICKER, "flicker_depth": [0.1, 0.3],
        "ae": ef::AE, "led": [ef::LED.0, ef::LED.1], "fps": args.fps,
        "code_bits": cfg.code_bits, "frames_per_bit": cfg.frames_per_bit, "max_lag": cfg.max_lag,
        "seeds": "1000 * subject number + 0..n; trial i: noise NOISE[i % 4], flicker FLICKER[i / 4 % 3], depth 0.1/0.3 by i / 12 % 2, ae AE[i / 2 % 2]",
    });
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "faces": dir.display().to_string(), "split": split, "subjects": ids,
                "live_seeds": live, "attack_seeds": attacks, "conditions": conditions,
                "thresholds": {
                    "min_correlation": cfg.min_correlation, "min_response": cfg.min_response,
                    "min_structure": cfg.min_structure,
                },
                "per_subject": rows, "pooled": scenes, "selection": selection,
                "trials": trials,
            })
        );
        return Ok(Outcome::Ok);
    }
    print_faces(
        args,
        dir,
        cfg,
        (live, attacks),
        &rows,
        &scenes,
        selection.as_ref(),
    );
    Ok(Outcome::Ok)
}

/// The trials of an earlier `challenge-eval --faces --json` output, of the subjects `want` takes.
fn rescored(
    file: &Path,
    want: &dyn Fn(&str) -> bool,
) -> Result<Vec<veriframe::challenge::eval::faces::FaceTrial>, ChallengeEvalError> {
    let err = |reason: String| ChallengeEvalError::Read {
        path: file.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(file).map_err(|e| err(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?;
    let trials: Vec<veriframe::challenge::eval::faces::FaceTrial> =
        serde_json::from_value(v["trials"].clone()).map_err(|e| err(format!("trials: {e}")))?;
    Ok(trials.into_iter().filter(|t| want(&t.subject)).collect())
}

/// The text report of `challenge-eval --faces`.
fn print_faces(
    args: &ChallengeEvalArgs,
    dir: &Path,
    cfg: &ChallengeConfig,
    (live, attacks): (u64, u64),
    rows: &[veriframe::challenge::eval::faces::SubjectRow],
    scenes: &[veriframe::challenge::eval::faces::SceneRow],
    selection: Option<&veriframe::challenge::eval::faces::Selection>,
) {
    use veriframe::challenge::eval::faces as ef;
    println!(
        "light challenge on real faces ({}, subjects: {}): {live} live, {attacks} per attack per subject; noise {:?}, flicker {:?} Hz, ae {:?}, led {}-{}; {} fps, code {} bits x {} frames, max lag {}; thresholds: correlation {}, response {}, structure {}",
        dir.display(), args.subjects, ef::NOISE, ef::FLICKER, ef::AE, ef::LED.0, ef::LED.1,
        args.fps, cfg.code_bits, cfg.frames_per_bit, cfg.max_lag,
        cfg.min_correlation, cfg.min_response, cfg.min_structure
    );
    println!(
        "{:<9} {:>6} {:>6} {:>6} {:>7} {:>9} {:>9} {:>9} {:>8}",
        "subject",
        "live",
        "passed",
        "inconc",
        "pass %",
        "min str",
        "mean str",
        "min resp",
        "min corr"
    );
    for r in rows {
        println!(
            "{:<9} {:>6} {:>6} {:>6} {:>6.1}% {:>9.4} {:>9.4} {:>9.4} {:>8.3}",
            r.subject,
            r.trials,
            r.passed,
            r.inconclusive,
            r.pass_rate,
            r.min_structure,
            r.mean_structure,
            r.min_response,
            r.min_correlation
        );
    }
    println!("pooled:");
    for s in scenes {
        let what = if s.scene == "live" {
            "passed"
        } else {
            "rejected"
        };
        let n = if s.scene == "live" {
            s.passed
        } else {
            s.rejected
        };
        println!(
            "  {:<9} {what} {n}/{} ({:.1} %), max structure {:.4}, max correlation {:.3}",
            s.scene, s.trials, s.rate, s.max_structure, s.max_correlation
        );
    }
    let worst = rows.iter().map(|r| r.pass_rate).fold(f64::MAX, f64::min);
    println!("  lowest subject live pass rate: {worst:.1} %");
    if let Some(sel) = selection {
        println!(
            "selection (pre-registered rule, these subjects): min_structure {} (lowest live {:.4}, highest print {:.4}, separates: {}, margins x{:.2} live / x{:.2} print), min_response {} (lowest live {:.4}), min_correlation {} (lowest live {:.3})",
            sel.min_structure, sel.live_min_structure, sel.print_max_structure, sel.separates,
            sel.structure_margin_live, sel.structure_margin_print, sel.min_response,
            sel.live_min_response, sel.min_correlation, sel.live_min_correlation
        );
    }
}
