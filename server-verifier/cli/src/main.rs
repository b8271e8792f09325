//! `hwsign-verifier`: parses the command line and runs it with the `hwsign_verifier_cli` library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser as _;
use hwsign_verifier_cli::{Cli, error_text, run};

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hwsign-verifier: {}", error_text(&error));
            ExitCode::FAILURE
        }
    }
}
