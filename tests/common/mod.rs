//! Helpers shared by the integration tests: running the real `cmud` binary, and waiting for a
//! condition with a generous deadline.

// Each test crate uses a part of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A raw RESP connection to a node's RPC port (for pipelining by hand), with generous
/// timeouts.
pub fn raw_connection(addr: SocketAddr) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream
}

/// Polls `check` every 20 ms until it holds; fails the test after `deadline`.
pub async fn eventually(deadline: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `cmud --server-only` process with its own data, config and home folders under a
/// temporary directory, on loopback only.
pub struct Binary {
    child: Child,
    rpc_addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Binary {
    /// The binary with its data, config and home folders under `root`.
    fn base(root: &Path) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cmud"));
        command
            .arg("--data-dir")
            .arg(root.join("data"))
            .env("HOME", root.join("home"))
            .env("XDG_CONFIG_HOME", root.join("config"))
            .env("XDG_DATA_HOME", root.join("share"))
            .env("RUST_LOG", "info");
        command
    }

    /// Runs a tool (`check`, `export`, `import`) on the data under `root` to its end.
    pub fn tool(root: &Path, args: &[&str]) -> Output {
        Self::base(root)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cmud runs")
    }

    /// The world folder of the nodes under `root`.
    pub fn world_dir(root: &Path) -> std::path::PathBuf {
        root.join("data").join("cmud")
    }

    /// The command line every test node uses: free ports, loopback, no mDNS.
    fn command(root: &Path) -> Command {
        let mut command = Self::base(root);
        command
            .args([
                "--server-only",
                "--rpc-port",
                "0",
                "--actors",
                "2",
                "--no-mdns",
            ])
            .args(["--listen", "/ip4/127.0.0.1/tcp/0"]);
        command
    }

    /// Starts a node on the data under `root` and waits for its RPC port.
    pub fn server(root: &Path) -> Binary {
        let mut child = Self::command(root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cmud starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("stderr is piped");
        let sink = stderr.clone();
        thread::spawn(move || {
            let mut text = String::new();
            let _ = err_pipe.read_to_string(&mut text);
            sink.lock().expect("stderr buffer").push_str(&text);
        });
        let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        let rpc_addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(addr) = line.strip_prefix("rpc listening on ") {
                        break addr.parse().expect("an address after 'rpc listening on'");
                    }
                }
                _ => {
                    let status = child.wait().expect("cmud exits");
                    thread::sleep(Duration::from_millis(100));
                    panic!(
                        "cmud exited ({status}) before its rpc port was up: {}",
                        stderr.lock().expect("stderr buffer")
                    );
                }
            }
        };
        // Keep draining stdout so the node never blocks on a full pipe.
        thread::spawn(move || for _ in lines {});
        Binary {
            child,
            rpc_addr,
            stderr,
        }
    }

    /// Runs a node on the data under `root` to its end (for one that must refuse to start).
    pub fn run_to_end(root: &Path) -> Output {
        Self::command(root)
            .stdin(Stdio::null())
            .output()
            .expect("cmud runs")
    }

    /// The node's RPC address.
    pub fn rpc_addr(&self) -> SocketAddr {
        self.rpc_addr
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the node with SIGKILL: no flush, no goodbye.
    pub fn kill_9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }

    /// Asks the node to stop with SIGTERM and waits (up to a minute) for it to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "cmud did not stop on SIGTERM: {}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the node logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr buffer").clone()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
