//! `difi plugins`: everything the registry knows.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use difi_core::registry::Registry;

#[derive(clap::Args)]
pub struct Args {
    /// Also load this runtime plugin library; repeatable.
    #[arg(long = "plugin", value_name = "PATH")]
    plugins: Vec<PathBuf>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let mut registry = Registry::with_builtins()?;
    for path in &args.plugins {
        registry.load_library(path)?;
    }
    println!("{:<12} {:<16} origin", "role", "name");
    for entry in registry.entries() {
        println!("{:<12} {:<16} {}", entry.role().to_string(), entry.name, entry.origin);
    }
    Ok(ExitCode::SUCCESS)
}
