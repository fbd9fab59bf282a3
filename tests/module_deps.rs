//! The top-level modules of `src/` depend on each other in the order ARCHITECTURE.md states
//! ("Dependency order"): each module uses only modules listed before it, so there are no import
//! cycles; inside every folder, the files import each other without a circle. Reads the sources
//! (`crate::x` paths, `use crate::{x, y::z}` groups), not the compiler. Also: the library (what
//! `src/lib.rs` reaches) has no clap, only the binary (`src/main.rs`, `src/commands/`) does; the
//! build needs no bindgen (vendored V4L2 bindings); no function over 100 lines outside tests
//! without a stated reason.

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

/// Top-level modules of the library (what `src/lib.rs` reaches) and their source files.
fn modules() -> BTreeMap<String, Vec<PathBuf>> {
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for (m, file) in crate_modules(&Path::new(ROOT).join("src/lib.rs")) {
        if let Some(top) = m.first() {
            out.entry(top.clone()).or_default().push(file);
        }
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

/// The library has no clap: no file that `src/lib.rs` reaches names it or uses its derive
/// attributes (its enums get clap parsers in the binary, `src/main.rs` and `src/commands/`).
#[test]
fn no_clap_in_the_library() {
    let lib = crate_modules(&Path::new(ROOT).join("src/lib.rs"));
    let mut offenders = Vec::new();
    for (_, f) in &lib {
        let text = fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            if ["clap", "#[arg(", "#[command(", "#[value("]
                .iter()
                .any(|p| line.contains(p))
            {
                let rel = f.strip_prefix(ROOT).unwrap_or(f);
                offenders.push(format!("{}:{}: {}", rel.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(lib.len() > 20, "found the library's sources");
    assert!(
        !lib.iter()
            .any(|(_, f)| f.ends_with("main.rs")
                || f.starts_with(Path::new(ROOT).join("src/commands"))),
        "the binary's files are not part of the library"
    );
    assert!(
        offenders.is_empty(),
        "clap in the library (it belongs in the binary):\n{}",
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

/// No function in `src/` is over 100 lines outside tests, unless a comment says why:
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

// ---- Import circles among the files of each folder ----
//
// A folder of `src/` is a module whose children are its files and subfolders. `mod.rs` is the
// folder's own module: it declares the children and holds what they share (seam traits, errors,
// messages), so its children may use it and it may use them. Among the children themselves the
// imports must run one way: no file or subfolder of a folder uses, directly or around a circle, a
// sibling that uses it. Paths are read from the sources (`crate::`, `super::`, `self::`, a child
// module's name, `use` groups), with comments and string literals removed.

/// Source text with comments, string literals and char literals blanked out (lifetimes kept).
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        let at = |k: usize| c.get(k).copied().unwrap_or('\0');
        let next = |k: usize| at(i + k);
        if c[i] == '/' && next(1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && next(1) == '*' {
            i += 2;
            while i < c.len() && !(c[i] == '*' && at(i + 1) == '/') {
                i += 1;
            }
            i += 2;
            out.push(' ');
        } else if c[i] == 'r'
            && (next(1) == '"' || (next(1) == '#' && matches!(next(2), '#' | '"')))
            && !out.ends_with(|p: char| p.is_alphanumeric() || p == '_')
        {
            // Raw string r#"…"#: ends at `"` followed by as many `#`.
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            j += 1;
            while j < c.len() && !(c[j] == '"' && (1..=hashes).all(|h| c.get(j + h) == Some(&'#')))
            {
                j += 1;
            }
            i = j + 1 + hashes;
            out.push_str("\"\"");
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\'' && (next(1) == '\\' || next(2) == '\'') {
            // A char literal ('x', '\n', '\u{1F600}'); a lifetime ('a) has no closing quote.
            i += 2;
            while i < c.len() && c[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Path, // `::`
    Punct(char),
}

fn tokens(code: &str) -> Vec<Tok> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if c[i].is_alphabetic() || c[i] == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect()));
        } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
            out.push(Tok::Path);
            i += 2;
        } else {
            if !c[i].is_whitespace() {
                out.push(Tok::Punct(c[i]));
            }
            i += 1;
        }
    }
    out
}

/// The path starting at `toks[i]` (an identifier), with `{…}` groups expanded into one path per
/// item; returns the paths and the index after the path.
fn read_path(toks: &[Tok], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    loop {
        match toks.get(i) {
            Some(Tok::Ident(s)) => {
                prefix.push(s.clone());
                i += 1;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                let mut out = Vec::new();
                loop {
                    match toks.get(i) {
                        Some(Tok::Ident(_)) | Some(Tok::Punct('{')) => {
                            let (items, j) = read_path(toks, i);
                            for item in items {
                                let mut p = prefix.clone();
                                p.extend(item.into_iter().filter(|s| s != "self"));
                                out.push(p);
                            }
                            i = j;
                        }
                        Some(Tok::Punct('}')) | None => return (out, i + 1),
                        _ => i += 1, // `,`, `*`, `as` renames are identifiers read as paths
                    }
                }
            }
            _ => return (vec![prefix], i),
        }
        if toks.get(i) == Some(&Tok::Path) {
            i += 1;
        } else {
            return (vec![prefix], i);
        }
    }
}

/// Every path of two or more segments in `text`, with the inline module (`mod tests { … }`) it
/// appears in: `(inline module path, path)`.
fn paths_in(text: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let toks = tokens(&code_only(text));
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut inline: Vec<(usize, String)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(d, _)| *d == depth) {
                    inline.pop();
                }
            }
            Tok::Ident(m) if m == "mod" => {
                if let (Some(Tok::Ident(name)), Some(Tok::Punct('{'))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    inline.push((depth, name.clone()));
                }
            }
            Tok::Ident(_)
                if (i == 0 || toks[i - 1] != Tok::Path) && toks.get(i + 1) == Some(&Tok::Path) =>
            {
                let (ps, j) = read_path(&toks, i);
                let here: Vec<String> = inline.iter().map(|(_, n)| n.clone()).collect();
                out.extend(ps.into_iter().map(|p| (here.clone(), p)));
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The modules of the crate whose root is `root` (`src/lib.rs`), found by following `mod x;`
/// declarations: `(module path, file)`, the root as the empty path.
fn crate_modules(root: &Path) -> Vec<(Vec<String>, PathBuf)> {
    let mut out = Vec::new();
    let mut todo = vec![(Vec::<String>::new(), root.to_path_buf())];
    while let Some((m, file)) = todo.pop() {
        let text = fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let dir = if m.is_empty() || name == "mod.rs" {
            file.parent().unwrap().to_path_buf()
        } else {
            file.with_extension("")
        };
        let toks = tokens(&code_only(&text));
        for w in toks.windows(3) {
            if let [Tok::Ident(k), Tok::Ident(child), Tok::Punct(';')] = w {
                if k == "mod" {
                    let flat = dir.join(format!("{child}.rs"));
                    let f = if flat.exists() {
                        flat
                    } else {
                        dir.join(child).join("mod.rs")
                    };
                    assert!(f.exists(), "{}: mod {child}; has no file", file.display());
                    let mut cm = m.clone();
                    cm.push(child.clone());
                    todo.push((cm, f));
                }
            }
        }
        out.push((m, file));
    }
    out.sort();
    out
}

/// The module a path in module `base` points into (the longest known module prefix of it),
/// or `None` for paths outside the crate (other crates, local names).
fn resolve(base: &[String], path: &[String], known: &[Vec<String>]) -> Option<Vec<String>> {
    let abs: Vec<String> = match path[0].as_str() {
        "crate" => path[1..].to_vec(),
        "self" => [base, &path[1..]].concat(),
        "super" => {
            let ups = path.iter().take_while(|s| *s == "super").count();
            let keep = base.len().checked_sub(ups)?;
            [&base[..keep], &path[ups..]].concat()
        }
        first => {
            let child = [base, &[first.to_string()]].concat();
            if !known.contains(&child) {
                return None;
            }
            [base, path].concat()
        }
    };
    (0..=abs.len())
        .rev()
        .map(|n| abs[..n].to_vec())
        .find(|p| known.contains(p))
}

/// Import circles among the children of each folder of the crate rooted at `root`, one line per
/// circle: `folder: a -> b -> a (a: file uses b; …)`.
fn folder_circles(root: &Path) -> Vec<String> {
    let mods = crate_modules(root);
    let known: Vec<Vec<String>> = mods.iter().map(|(m, _)| m.clone()).collect();
    // folder -> (child -> (used child -> a file that uses it))
    type Edges = BTreeMap<String, BTreeMap<String, String>>;
    let mut folders: BTreeMap<Vec<String>, Edges> = BTreeMap::new();
    for (m, file) in &mods {
        let text = fs::read_to_string(file).unwrap();
        for (inline, path) in paths_in(&text) {
            let base = [m.as_slice(), &inline].concat();
            let Some(target) = resolve(&base, &path, &known) else {
                continue;
            };
            // Every folder above both ends, where they are different children.
            let common = m.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common < m.len() && common < target.len() {
                let (from, to) = (m[common].clone(), target[common].clone());
                let crate_dir = root.parent().and_then(Path::parent).unwrap();
                let rel = file.strip_prefix(crate_dir).unwrap_or(file);
                folders
                    .entry(m[..common].to_vec())
                    .or_default()
                    .entry(from)
                    .or_default()
                    .entry(to)
                    .or_insert_with(|| format!("{} uses {}", rel.display(), path.join("::")));
            }
        }
    }
    let mut out = Vec::new();
    for (folder, edges) in &folders {
        for start in edges.keys() {
            // Shortest way back to `start` (breadth first), reported once from its smallest name.
            let mut prev: BTreeMap<&String, &String> = BTreeMap::new();
            let mut queue = std::collections::VecDeque::from([start]);
            let mut found = None;
            while let Some(n) = queue.pop_front() {
                for next in edges.get(n).into_iter().flat_map(|e| e.keys()) {
                    if next == start {
                        found = Some(n);
                        break;
                    }
                    if !prev.contains_key(next) && next > start {
                        prev.insert(next, n);
                        queue.push_back(next);
                    }
                }
                if found.is_some() {
                    break;
                }
            }
            if let Some(mut n) = found {
                let mut back = Vec::new();
                while n != start {
                    back.push(n.clone());
                    n = prev[n];
                }
                let ring: Vec<String> = std::iter::once(start.clone())
                    .chain(back.into_iter().rev())
                    .collect();
                let why: Vec<String> = ring
                    .iter()
                    .zip(ring.iter().cycle().skip(1))
                    .map(|(a, b)| edges[a][b].clone())
                    .collect();
                out.push(format!(
                    "{}: {} -> {} ({})",
                    ["src"]
                        .into_iter()
                        .chain(folder.iter().map(String::as_str))
                        .collect::<Vec<_>>()
                        .join("/"),
                    ring.join(" -> "),
                    ring[0],
                    why.join("; ")
                ));
            }
        }
    }
    out
}

#[test]
fn no_import_circle_among_the_files_of_any_folder() {
    let lib = Path::new(ROOT).join("src/lib.rs");
    let bin = Path::new(ROOT).join("src/main.rs");
    let mods = crate_modules(&lib);
    assert!(
        mods.iter().any(|(m, _)| m == &["publish", "mqtt", "sink"]),
        "the module walk reaches nested folders"
    );
    assert!(
        crate_modules(&bin)
            .iter()
            .any(|(m, _)| m == &["commands", "seal"]),
        "the binary's modules are walked too"
    );
    let mut circles = folder_circles(&lib);
    circles.extend(folder_circles(&bin));
    assert!(
        circles.is_empty(),
        "import circles (each names one file per step):\n{}",
        circles.join("\n")
    );
}

#[test]
fn folder_circle_check_finds_a_circle() {
    let d = tempfile::tempdir().unwrap();
    let w = |p: &str, t: &str| {
        let f = d.path().join(p);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(f, t).unwrap();
    };
    w("src/lib.rs", "pub mod a;\npub mod b;\n");
    w("src/b.rs", "use crate::a::x::X;\n");
    w(
        "src/a/mod.rs",
        "pub mod x;\npub mod y;\npub mod z;\npub struct Shared;\nuse x::X;\n",
    );
    w(
        "src/a/x.rs",
        "use super::{y::{self, Y}, Shared};\n// use super::z;\npub struct X;\n",
    );
    w(
        "src/a/y.rs",
        "pub struct Y;\nfn f() -> super::z::Z { todo!(\"super::x\") }\n",
    );
    w("src/a/z.rs", "pub struct Z;\n#[cfg(test)]\nmod tests {\n    use super::super::x;\n    const C: char = '{';\n}\n");
    let lib = d.path().join("src/lib.rs");
    assert_eq!(
        folder_circles(&lib),
        ["src/a: x -> y -> z -> x (src/a/x.rs uses super::y; src/a/y.rs uses super::z::Z; src/a/z.rs uses super::super::x)"]
    );
    // Without the test module's import the folder is a line: x -> y -> z.
    w("src/a/z.rs", "pub struct Z;\n");
    assert!(folder_circles(&lib).is_empty());
}
