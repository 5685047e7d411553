//! The `cascade` binary as a user drives it.

mod cli;
mod features;
mod layers;
mod outcomes;
mod policy;
mod rollout;
mod serving;

use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Output, Stdio};

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

/// A `cascade serve` child on a free port; killed if the test ends without [`Served::stop`].
#[derive(Debug)]
pub struct Served {
    child: Child,
    stderr: Lines<BufReader<ChildStderr>>,
    pub url: String,
}

/// Starts `cascade serve` in `dir` with extra environment, and waits until it listens.
pub fn serve(dir: &Path, env: &[(&str, &str)]) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cascade"))
        .current_dir(dir)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = stderr.next().expect("serve printed its address").unwrap();
        if let Some(rest) = line.strip_prefix("cascade serving on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    Served { child, stderr, url }
}

impl Served {
    /// Sends SIGTERM, asserts a graceful exit and returns what the server printed meanwhile.
    pub fn stop(mut self) -> Vec<String> {
        assert!(Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap().success());
        let rest: Vec<String> = self.stderr.by_ref().map_while(Result::ok).collect();
        assert!(self.child.wait().unwrap().success(), "graceful exit: {rest:?}");
        rest
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
