//! Helpers shared by the integration tests: running the real `cmud` binary, and waiting for a
//! condition with a generous deadline.

// Each test crate uses a part of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cmud::rpc::RpcEndpoint;
use cmud::rpc::auth::{Credentials, DEFAULT_USER, Secret, TOKEN_FILE};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A raw RESP connection to a node's RPC port (for pipelining by hand), authenticated, with
/// generous timeouts.
pub fn raw_connection(endpoint: &RpcEndpoint) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(endpoint.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let auth = endpoint.auth_line();
    if !auth.is_empty() {
        stream.write_all(&auth).expect("write AUTH");
        let mut ok = [0u8; 5];
        stream.read_exact(&mut ok).expect("AUTH reply");
        assert_eq!(&ok, b"+OK\r\n", "AUTH with the node's token");
    }
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
    root: PathBuf,
    child: Child,
    rpc_addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

/// How to start a test node beyond the defaults.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    /// The text of its `config.ron`, if not the defaults.
    pub config: Option<String>,
    /// A `ulimit -n` to run it under (`-Sn 1024`, or `-n 1024` for both limits).
    pub ulimit: Option<String>,
    /// Extra flags.
    pub args: Vec<String>,
}

/// A `config.ron` with quotas off, for tests that write more keys than one writer may hold.
pub const NO_QUOTA_CONFIG: &str = "(max_keys_per_writer: 0, max_bytes_per_writer: 0)";

impl Launch {
    /// A node with `ron` as its `config.ron` and no other change.
    pub fn config(ron: impl Into<String>) -> Launch {
        Launch {
            config: Some(ron.into()),
            ..Launch::default()
        }
    }

    /// A node with quotas off (its `config.ron` stays under the test's folder, so a restart
    /// on the same folder keeps them off).
    pub fn without_quota() -> Launch {
        Launch::config(NO_QUOTA_CONFIG)
    }
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
        Self::command_with(root, &Launch::default(), &["--server-only"])
    }

    /// The command line with `launch`'s changes and `front_end` flags.
    pub fn command_with(root: &Path, launch: &Launch, front_end: &[&str]) -> Command {
        let mut command = match &launch.ulimit {
            Some(ulimit) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit {ulimit} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_cmud"));
                sh
            }
            None => Command::new(env!("CARGO_BIN_EXE_cmud")),
        };
        if let Some(config) = &launch.config {
            let dir = root.join("config").join("cmud");
            std::fs::create_dir_all(&dir).expect("config dir");
            std::fs::write(dir.join("config.ron"), config).expect("config.ron");
        }
        command.args(front_end);
        if !launch.args.iter().any(|arg| arg == "--rpc-port") {
            command.args(["--rpc-port", "0"]);
        }
        if !launch.args.iter().any(|arg| arg == "--actors") {
            command.args(["--actors", "2"]);
        }
        command
            .arg("--no-mdns")
            .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
            .args(&launch.args)
            .arg("--data-dir")
            .arg(root.join("data"))
            .env("HOME", root.join("home"))
            .env("XDG_CONFIG_HOME", root.join("config"))
            .env("XDG_DATA_HOME", root.join("share"))
            .env("RUST_LOG", "info");
        command
    }

    /// Starts a node on the data under `root` and waits for its RPC port.
    pub fn server(root: &Path) -> Binary {
        Self::server_with(root, &Launch::default())
    }

    /// Starts a node as `launch` says and waits for its RPC port.
    pub fn server_with(root: &Path, launch: &Launch) -> Binary {
        let mut child = Self::command_with(root, launch, &["--server-only"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cmud starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let err_pipe = child.stderr.take().expect("stderr is piped");
        let sink = stderr.clone();
        thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines() {
                let Ok(line) = line else { break };
                let mut text = sink.lock().expect("stderr buffer");
                text.push_str(&line);
                text.push('\n');
            }
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
            root: root.to_owned(),
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

    /// How a client reaches the node: its RPC address and the token it wrote to `rpc.token`.
    pub fn endpoint(&self) -> RpcEndpoint {
        endpoint(&self.root, self.rpc_addr)
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

/// How a client reaches the test node under `root` listening at `addr`: the token it wrote to
/// `rpc.token` in its world folder.
pub fn endpoint(root: &Path, addr: SocketAddr) -> RpcEndpoint {
    let path = root.join("data").join("cmud").join(TOKEN_FILE);
    let token = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
    RpcEndpoint {
        addr,
        credentials: Some(Credentials {
            user: DEFAULT_USER.to_owned(),
            secret: Secret::parse(&token).expect("a token in rpc.token"),
        }),
    }
}
