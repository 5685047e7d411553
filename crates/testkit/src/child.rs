//! Crash tests: run one test of the current test binary as a child process, read what it prints,
//! and kill it with SIGKILL at a moment of the parent's choosing.
//!
//! The child is the test binary itself, re-executed with `--exact NAME`; the named test does its
//! work only when the environment the parent sets is present, and reports progress on stdout.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::Duration;

/// A running child test; killed on drop.
#[derive(Debug)]
pub struct TestChild {
    child: Child,
    lines: Receiver<String>,
    reader: Option<JoinHandle<()>>,
}

impl TestChild {
    /// Starts the test `name` (its full path, e.g. `crash::child_writer`) of this test binary with
    /// `env` added to the environment.
    pub fn spawn(name: &str, env: &[(&str, OsString)]) -> TestChild {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut child = Command::new(exe)
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the test binary starts");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        TestChild { child, lines, reader: Some(reader) }
    }

    /// The next line the child prints, or `None` if none comes within `timeout` or it has exited.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Kills the child with SIGKILL and returns every line it printed that was not read yet: it
    /// printed them before it died, so they count as progress it made.
    pub fn kill(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The child's death closes the pipe, so the reader ends after passing on every line.
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the stdout reader");
        }
        self.lines.try_iter().collect()
    }
}

impl Drop for TestChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
