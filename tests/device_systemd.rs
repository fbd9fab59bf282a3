//! The systemd unit: hardening score from `systemd-analyze security --offline=true` (where
//! systemd-analyze exists; `.ci/run` installs systemd), and the directives the daemon relies on.

use std::path::PathBuf;
use std::process::Command;

fn unit_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd/veriframe.service")
}

fn unit_lines() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(unit_path()).expect("systemd/veriframe.service");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn values(key: &str) -> Vec<String> {
    unit_lines()
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

/// Parse "→ Overall exposure level for veriframe.service: 1.5 OK 🙂".
fn exposure(output: &str) -> Option<f64> {
    let line = output
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    let after = line.rsplit_once(": ")?.1;
    after.split_whitespace().next()?.parse().ok()
}

#[test]
fn parses_the_exposure_line() {
    assert_eq!(
        exposure("x\n→ Overall exposure level for veriframe.service: 1.5 OK 🙂\n"),
        Some(1.5)
    );
    assert_eq!(exposure("nothing"), None);
}

#[test]
fn security_exposure_is_at_most_2() {
    let out = match Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit_path())
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("skipped: systemd-analyze not available ({e}); apt-get install systemd");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let score = exposure(&stdout)
        .unwrap_or_else(|| panic!("no exposure line in output:\n{stdout}\n{stderr}"));
    eprintln!("systemd-analyze security --offline=true: exposure {score}");
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{stdout}");
}

#[test]
fn unit_has_the_directives_the_daemon_relies_on() {
    let one = |k: &str| {
        let v = values(k);
        assert_eq!(v.len(), 1, "{k}: {v:?}");
        v[0].clone()
    };
    assert_eq!(one("Type"), "notify");
    assert!(one("WatchdogSec").ends_with('s'));
    assert_eq!(one("User"), "veriframe");
    assert_eq!(one("StateDirectory"), "veriframe");
    assert_eq!(one("ConfigurationDirectory"), "veriframe");
    let groups = one("SupplementaryGroups");
    assert!(groups.split_whitespace().any(|g| g == "video"), "{groups}");
    assert!(groups.split_whitespace().any(|g| g == "gpio"), "{groups}");
    assert_eq!(one("DevicePolicy"), "closed");
    let allow = values("DeviceAllow");
    for dev in ["char-video4linux", "/dev/gpiomem"] {
        assert!(allow.iter().any(|a| a.starts_with(dev)), "{dev}: {allow:?}");
    }
    let exec = one("ExecStart");
    assert!(exec.starts_with("/usr/bin/veriframe run "), "{exec}");
    assert!(exec.contains("veriframe.toml"), "{exec}");
    assert_eq!(one("Restart"), "always");
}

#[test]
fn sysusers_creates_the_service_user() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("systemd/veriframe.sysusers")).expect("sysusers");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().take(2).eq(["u", "veriframe"])),
        "{text}"
    );
}

#[test]
fn packaged_config_loads_and_validates() {
    use veriframe::config::{Config, Overrides};
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd/veriframe.toml");
    let cfg = Config::load(Some(&path), &Overrides::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(cfg.data_dir, PathBuf::from("/var/lib/veriframe"));
    assert_eq!(cfg.source.uri, "/dev/video0");
    assert!(!cfg.device.gpio, "GPIO is opt-in");
}
