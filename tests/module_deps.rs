//! The top-level modules of `src/` depend on each other in the order ARCHITECTURE.md states
//! ("Dependency order"): each module uses only modules listed before it, so there are no import
//! cycles. Reads the sources (`crate::x` paths, `use crate::{x, y::z}` groups), not the compiler.
//! Also: clap only in `src/commands/` and `src/main.rs`; the build needs no bindgen (vendored V4L2
//! bindings); no function over 100 lines outside tests without a stated reason.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The order stated in ARCHITECTURE.md: the backticked names on the first line starting with a
/// backtick after the `## Dependency order` heading.
fn documented_order() -> Vec<String> {
    let doc = fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md")).unwrap();
    let start = doc
        .find("## Dependency order")
        .expect("ARCHITECTURE.md has a `## Dependency order` section");
    let line = doc[start..]
        .lines()
        .find(|l| l.starts_with('`'))
        .expect("a line of backticked module names");
    line.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Top-level modules of the library and their source files.
fn modules() -> BTreeMap<String, Vec<PathBuf>> {
    let src = Path::new(ROOT).join("src");
    let mut out = BTreeMap::new();
    for e in fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" || name == "main" {
            continue;
        }
        let mut files = Vec::new();
        collect(&p, &mut files);
        out.insert(name, files);
    }
    out
}

fn collect(p: &Path, files: &mut Vec<PathBuf>) {
    if p.is_dir() {
        for e in fs::read_dir(p).unwrap() {
            collect(&e.unwrap().path(), files);
        }
    } else if p.extension().is_some_and(|x| x == "rs") {
        files.push(p.to_path_buf());
    }
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// First path segments after `crate::` in `text` (comment lines skipped), including each
/// top-level item of a `crate::{…}` group.
fn crate_refs(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut at_item) = (0usize, true);
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => at_item = true,
                    c if at_item && depth == 0 && (c.is_alphanumeric() || c == '_') => {
                        out.push(ident_at(&group[j..]).to_string());
                        at_item = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.push(ident_at(rest).to_string());
        }
    }
    out
}

#[test]
fn modules_depend_only_on_modules_listed_before_them() {
    let order = documented_order();
    let mods = modules();
    let listed: Vec<&String> = {
        let mut v: Vec<&String> = order.iter().collect();
        v.sort();
        v
    };
    assert_eq!(
        listed,
        mods.keys().collect::<Vec<_>>(),
        "ARCHITECTURE.md's dependency order must list every top-level module of src/ once"
    );
    let rank = |m: &str| order.iter().position(|o| o == m);
    let mut violations = Vec::new();
    for (m, files) in &mods {
        let me = rank(m).unwrap();
        for f in files {
            let text = fs::read_to_string(f).unwrap();
            for dep in crate_refs(&text) {
                if let Some(r) = rank(&dep) {
                    if r > me {
                        violations.push(format!(
                            "{} uses crate::{dep}, listed after {m}",
                            f.strip_prefix(ROOT).unwrap_or(f).display()
                        ));
                    }
                }
            }
        }
    }
    violations.sort();
    violations.dedup();
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn reference_parser_sees_groups_and_paths() {
    let refs = crate_refs(
        "use crate::alert::{AlertKind, Severity};\nuse crate::{capture::{self, Frame}, seal};\n// crate::daemon\nlet x = crate::frame::monotonic_now();",
    );
    assert_eq!(refs, ["alert", "capture", "seal", "frame"]);
}

/// The V4L2 bindings are vendored with pre-generated bindings (vendor/v4l2-sys-mit, through
/// `[patch.crates-io]`), so the build needs no libclang: bindgen and clang-sys are in neither lock
/// file (a lock file lists the dependencies of every target), and v4l2-sys-mit is the local copy.
#[test]
fn build_needs_no_bindgen() {
    for lock in ["Cargo.lock", "fuzz/Cargo.lock"] {
        let text = fs::read_to_string(Path::new(ROOT).join(lock)).unwrap();
        let packages: Vec<&str> = text.split("[[package]]").skip(1).collect();
        let name_of = |p: &str| {
            p.lines()
                .find_map(|l| l.strip_prefix("name = \""))
                .map(|n| n.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        for banned in ["bindgen", "clang-sys"] {
            assert!(
                !packages.iter().any(|p| name_of(p) == banned),
                "{lock} has {banned}: something needs libclang at build time again"
            );
        }
        let sys: Vec<&&str> = packages
            .iter()
            .filter(|p| name_of(p) == "v4l2-sys-mit")
            .collect();
        assert_eq!(sys.len(), 1, "{lock}: one v4l2-sys-mit");
        assert!(
            !sys[0].contains("source ="),
            "{lock}: v4l2-sys-mit comes from a registry, not vendor/v4l2-sys-mit"
        );
    }
}

/// clap lives only in the commands layer (`src/commands/`) and `src/main.rs`: no other source file
/// names it or uses its derive attributes (the library's enums get clap parsers in `commands`).
#[test]
fn clap_only_in_commands_and_main() {
    let src = Path::new(ROOT).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    let mut offenders = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        if rel.starts_with("commands") || rel == Path::new("main.rs") {
            continue;
        }
        let text = fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            if ["clap", "#[arg(", "#[command(", "#[value("]
                .iter()
                .any(|p| line.contains(p))
            {
                offenders.push(format!("src/{}:{}: {}", rel.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(files.len() > 20, "found the sources");
    assert!(
        offenders.is_empty(),
        "clap outside src/commands and src/main.rs:\n{}",
        offenders.join("\n")
    );
}

/// Functions of more than `max` lines (from the `fn` line to its closing brace at the same indent)
/// outside `#[cfg(test)]` modules, as `(first line, name, lines)`; a function whose preceding
/// comment, doc or attribute lines say `long function:` (the reason) is allowed.
fn long_functions(text: &str, max: usize) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out = Vec::new();
    let mut open: Vec<(usize, usize, String)> = Vec::new(); // (indent, line, name)
    let mut skip_to: Option<usize> = None; // inside a test module of this indent
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        if let Some(ind) = skip_to {
            if indent(l) <= ind && t.starts_with('}') {
                skip_to = None;
            }
            continue;
        }
        if i > 0 && lines[i - 1].trim() == "#[cfg(test)]" && t.contains("mod ") && t.ends_with('{')
        {
            skip_to = Some(indent(l));
            continue;
        }
        // Strip visibility and qualifiers (in the order Rust allows them) before `fn`.
        let sig = [
            "pub ",
            "pub(crate) ",
            "const ",
            "async ",
            "unsafe ",
            "extern \"C\" ",
        ]
        .iter()
        .fold(t, |s, p| s.strip_prefix(p).unwrap_or(s));
        if let Some(rest) = sig.strip_prefix("fn ") {
            let one_line = t.ends_with(';') || (t.contains('{') && t.ends_with('}'));
            if !one_line {
                let name = ident_at(rest).to_string();
                open.push((indent(l), i, name));
            }
            continue;
        }
        if t.starts_with('}') && open.last().is_some_and(|o| o.0 == indent(l)) {
            let (_, start, name) = open.pop().unwrap();
            let len = i - start + 1;
            let reason = lines[..start]
                .iter()
                .rev()
                .take_while(|p| {
                    let p = p.trim_start();
                    p.starts_with("//") || p.starts_with("#[")
                })
                .any(|p| p.contains("long function:"));
            if len > max && !reason {
                out.push((start + 1, name, len));
            }
        }
    }
    out
}

/// No function in `src/` is over 100 lines outside tests, unless a comment says why (issue 17):
/// long ones are split into named steps. The failure message lists each offender with its length.
#[test]
fn no_function_over_100_lines_without_a_reason() {
    let src = Path::new(ROOT).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    let mut long = Vec::new();
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        for (line, name, len) in long_functions(&text, 100) {
            long.push(format!(
                "src/{}:{line}: fn {name} is {len} lines",
                f.strip_prefix(&src).unwrap().display()
            ));
        }
    }
    assert!(files.len() > 20, "found the sources");
    assert!(
        long.is_empty(),
        "split these into named steps, or say why in a `// long function: …` comment above:\n{}",
        long.join("\n")
    );
}

#[test]
fn long_function_scanner_counts_and_exempts() {
    let body = |n: usize| "        x += 1;\n".repeat(n);
    let src = [
        format!("pub fn short() {{\n{}}}\n\n", body(98)), // lines 1-100: 100 lines
        format!(
            "impl A {{\n    pub(crate) fn long(\n        a: u8,\n    ) -> u8 {{\n{}        if a > 0 {{\n        }}\n    }}\n}}\n\n",
            body(100)
        ), // fn at line 103, 106 lines
        format!("// long function: one table\nfn kept() {{\n{}}}\n\n", body(150)),
        format!(
            "#[cfg(test)]\nmod tests {{\n    fn in_tests() {{\n{}    }}\n}}\n",
            body(150)
        ),
        format!("fn after() {{\n{}}}\n", body(100)), // line 520, 102 lines
    ]
    .concat();
    assert_eq!(
        long_functions(&src, 100),
        [
            (103, "long".to_string(), 106),
            (520, "after".to_string(), 102)
        ]
    );
    assert!(long_functions(&src, 200).is_empty());
}
