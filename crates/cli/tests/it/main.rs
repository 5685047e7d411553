//! The `cascade` binary as a user drives it.

mod cli;
mod features;

use std::path::Path;
use std::process::{Command, Output};

/// Runs `cascade ARGS` in `dir`.
pub fn cascade(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cascade")).current_dir(dir).args(args).output().unwrap()
}

/// Runs `cascade ARGS` in `dir`, asserts success and returns stdout.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let out = cascade(dir, args);
    assert!(out.status.success(), "cascade {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}
