//! The subcommands: argument types (clap) and what each command does, on top of the library's
//! stage modules. `main.rs` parses arguments and dispatches here; no stage module depends on this
//! one.

pub mod c2pa;
pub mod detect;
pub mod probe;
pub mod publish;
pub mod seal;

/// Colour codes only for a terminal (logs go to stderr: a file, a pipe or journald get plain
/// text) and never with `NO_COLOR` set to anything non-empty (https://no-color.org). Every
/// logging set-up (the daemon's in `main.rs`, the tools' here) uses this one rule.
pub fn use_colour() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal() && std::io::stdout().is_terminal()
}
