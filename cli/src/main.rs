//! `hwsign`: the command-line client of the hwsign agent (see `hwsign --help`). Parses the
//! command line and runs it with the `hwsign_cli` library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser as _;
use hwsign_cli::{Cli, error_text, hint_for, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hwsign: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hwsign: {}", error_text(&e));
            if let Some(hint) = hint_for(&e) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}
