//! A private `redis-server` for tests of Redis outages: started by the test on a free port, killed
//! and started again on the same port, paused, its clients' connections killed. Commands go over
//! a plain TCP connection (RESP), so this needs no Redis client library.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server` process owned by a test (no persistence: a restart comes back empty);
/// killed on drop.
#[derive(Debug)]
pub struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts `redis-server` on a free port. When the binary is missing: `None` after a loud
    /// SKIPPED message naming `test`, or a panic when `required` (tests pass whether
    /// `CASCADE_REQUIRE_REDIS` is set: CI sets it; a library reads no environment).
    pub fn start(test: &str, required: bool) -> Option<PrivateRedis> {
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free local port").port();
        let mut redis = PrivateRedis { port, child: None };
        match redis.spawn() {
            Ok(()) => Some(redis),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                eprintln!(
                    "SKIPPED {test}: `redis-server` is not installed ({e}), so the Redis outage behaviour \
                     was NOT tested. Install redis-server or set CASCADE_REQUIRE_REDIS=1 to make this a failure."
                );
                None
            }
            Err(e) => panic!("{test}: cannot start `redis-server` ({e})"),
        }
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        // Up once it answers PING (it binds within milliseconds; 10 s covers a loaded machine).
        for _ in 0..400 {
            if self.try_command(&["PING"]).is_ok_and(|r| r == "+PONG") {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(std::io::Error::other(format!("redis-server exited at start: {status}")));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(std::io::Error::other(format!("redis-server on port {} never answered PING", self.port)))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to its clients) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a new, empty server on the same port (after [`PrivateRedis::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn().expect("redis-server starts again on its port");
    }

    /// Sends one command and returns the first line of the reply (`+OK`, `:2`, `-ERR ...`).
    pub fn command(&self, args: &[&str]) -> String {
        self.try_command(args).unwrap_or_else(|e| panic!("redis {args:?} on port {}: {e}", self.port))
    }

    fn try_command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut con = TcpStream::connect(("127.0.0.1", self.port))?;
        con.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        con.write_all(req.as_bytes())?;
        let mut line = String::new();
        BufReader::new(con).read_line(&mut line)?;
        Ok(line.trim_end().to_string())
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
