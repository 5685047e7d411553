//! `cascade bench`: workload benchmarks printing Cascade beside a baseline from the same run.

use anyhow::Result;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {}
}
