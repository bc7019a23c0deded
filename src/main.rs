use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tokenwatch::cli::Cli::parse().run()
}
