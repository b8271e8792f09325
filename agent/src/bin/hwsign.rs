//! `hwsign`: the command-line client of the hwsign agent (see `hwsign --help`).
#![forbid(unsafe_code)]

// The CLI's modules belong to this binary only; the agent library does not need them.
#[path = "../cli/mod.rs"]
mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
