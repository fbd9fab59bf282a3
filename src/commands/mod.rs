//! The subcommands, part of the binary: argument types (clap) and what each command does, on top
//! of the library's stage modules. `main.rs` parses arguments and dispatches here; the library
//! knows nothing of them (nor of clap).

pub mod c2pa;
pub mod camera;
pub mod challenge;
pub mod detect;
pub mod probe;
pub mod publish;
pub mod seal;

/// What a command reports back to `main`, which turns it into an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything checked out: exit 0.
    Ok,
    /// A check failed (e.g. a capture did not verify): exit 1.
    CheckFailed,
}

/// A mistake in how a command was called that only the command can see (a flag combination, a
/// file it refuses to overwrite): exit 2 with this message, as every error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A clap value parser for one of the library's plain enums (which know nothing of clap): `--help`
/// lists `name` of each value in `all` as the possible values, and a value parses to the one with
/// that name.
pub fn enum_parser<T: Copy + Send + Sync + 'static>(
    all: &'static [T],
    name: fn(T) -> &'static str,
) -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(all.iter().map(|&v| name(v))).try_map(move |s| {
        all.iter()
            .copied()
            .find(|&v| name(v) == s)
            .ok_or("unknown value")
    })
}

/// Colour codes only for a terminal (logs go to stderr: a file, a pipe or journald get plain
/// text) and never with `NO_COLOR` set to anything non-empty (https://no-color.org). Every
/// logging set-up (the daemon's in `main.rs`, the tools' here) uses this one rule.
pub fn use_colour() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal() && std::io::stdout().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::enum_parser;
    use clap::builder::TypedValueParser;
    use veriframe::config::LogFormat;
    use veriframe::detect::nets::minifasnet::Arch;
    use veriframe::detect::Quant;

    fn parse<T: Copy + Send + Sync + 'static>(
        all: &'static [T],
        name: fn(T) -> &'static str,
        s: &str,
    ) -> Option<T> {
        let cmd = clap::Command::new("t");
        enum_parser(all, name)
            .parse_ref(&cmd, None, std::ffi::OsStr::new(s))
            .ok()
    }

    #[test]
    fn enum_parsers_take_every_name_and_nothing_else() {
        for q in Quant::ALL {
            assert_eq!(parse(&Quant::ALL, Quant::name, q.name()), Some(q));
            // the config/model-file (serde) name is the command-line name
            assert_eq!(
                serde_json::to_string(&q).unwrap(),
                format!("\"{}\"", q.name())
            );
        }
        for a in Arch::ALL {
            assert_eq!(parse(&Arch::ALL, Arch::name, a.name()), Some(a));
        }
        for f in LogFormat::ALL {
            assert_eq!(parse(&LogFormat::ALL, LogFormat::name, f.name()), Some(f));
            assert_eq!(
                serde_json::to_string(&f).unwrap(),
                format!("\"{}\"", f.name())
            );
        }
        assert_eq!(parse(&Quant::ALL, Quant::name, "q4"), None);
        assert_eq!(parse(&Quant::ALL, Quant::name, "Q8_0"), None);
        assert_eq!(parse(&LogFormat::ALL, LogFormat::name, ""), None);
    }
}
