//! A small internet made of Linux network namespaces: a bridge as the internet
//! (203.0.113.0/24), hosts on it, and home routers (iptables MASQUERADE) with one player each
//! behind them on 198.51.100.0/24 or 192.0.2.0/24. Nothing is routed anywhere else: no
//! namespace has a default route to the outside.
//!
//! Namespaces are named uniquely per run and deleted, with every process in them, when the
//! [`Lab`] is dropped, so a failing test cleans up too.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::resp::Rpc;

/// The STUN responder's address on the internet (miniupnpd learns its outside address there).
pub const STUN_IP: &str = "203.0.113.254";

/// The port every node listens on (TCP and QUIC).
pub const P2P_PORT: u16 = 7441;

/// The RPC port inside each namespace.
const RPC_PORT: u16 = 7440;

/// How long a node may take to start.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// Labs made by this process, for unique names.
static LABS: AtomicUsize = AtomicUsize::new(0);

/// Whether the namespace tests run here; `None` says why they are skipped.
pub fn enabled() -> bool {
    if std::env::var("CMUD_NETNS_TESTS").ok().as_deref() != Some("1") {
        eprintln!(
            "skipped: network-namespace tests run with CMUD_NETNS_TESTS=1 (as root, with ip, \
             iptables and miniupnpd)"
        );
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "CMUD_NETNS_TESTS=1 but not root: network namespaces need root"
    );
    for tool in ["ip", "iptables", "nft", "miniupnpd"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "CMUD_NETNS_TESTS=1 but `{tool}` is missing (.ci/run installs iproute2, iptables, \
             nftables and miniupnpd)"
        );
    }
    true
}

/// Runs a command; panics with its output if it fails.
pub fn run(args: &[&str]) {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|err| panic!("cannot run {args:?}: {err}"));
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// How a home router translates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat {
    /// Keeps the inside port where it can (hole punching works).
    PortPreserving,
    /// A new random outside port per connection (`--random-fully`): hole punching fails.
    Symmetric,
}

/// A running `cmud --server-only` in a namespace.
pub struct Node {
    /// Its peer id.
    pub peer_id: String,
    /// The process.
    child: Child,
    /// Its RPC connection.
    pub rpc: Rpc,
    /// Its log (stderr), for failure messages.
    log: Arc<Mutex<String>>,
}

impl Node {
    /// The node's log so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Kills the process (no goodbye to its peers).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The namespaces of one test, deleted on drop.
pub struct Lab {
    /// Name prefix, unique per run.
    prefix: String,
    /// The internet namespace (bridge, STUN responder).
    internet: String,
    /// Every namespace made, the internet first.
    namespaces: Vec<String>,
    /// Other processes started (miniupnpd).
    children: Vec<Child>,
    /// Files of the nodes and daemons.
    dir: tempfile::TempDir,
    /// Tells the STUN responder to stop.
    stop: Arc<AtomicBool>,
    /// Bridge ports made so far (for names).
    ports: usize,
    /// `relay_fallback_secs` of the nodes started from now on (`None`: the default).
    pub relay_fallback_secs: Option<u64>,
}

impl Lab {
    /// An empty internet with a STUN responder on it.
    pub fn new() -> Lab {
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("cmud{}x{n}", std::process::id());
        let internet = format!("{prefix}-net");
        let mut lab = Lab {
            prefix,
            internet: internet.clone(),
            namespaces: Vec::new(),
            children: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
            stop: Arc::new(AtomicBool::new(false)),
            ports: 0,
            relay_fallback_secs: None,
        };
        lab.namespace(&internet);
        run(&[
            "ip", "-n", &internet, "link", "add", "br0", "type", "bridge",
        ]);
        let stun = format!("{STUN_IP}/24");
        run(&["ip", "-n", &internet, "addr", "add", &stun, "dev", "br0"]);
        run(&["ip", "-n", &internet, "link", "set", "br0", "up"]);
        super::stun::spawn(&internet, lab.stop.clone());
        lab
    }

    fn namespace(&mut self, name: &str) {
        run(&["ip", "netns", "add", name]);
        self.namespaces.push(name.to_owned());
        run(&["ip", "-n", name, "link", "set", "lo", "up"]);
    }

    /// A namespace named `<prefix>-<short>`.
    fn name(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    /// Plugs `ns`'s interface `dev` into the internet with address `ip`.
    fn plug(&mut self, ns: &str, dev: &str, ip: &str) {
        self.ports += 1;
        let port = format!("p{}", self.ports);
        run(&[
            "ip",
            "link",
            "add",
            dev,
            "netns",
            ns,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.internet,
        ]);
        run(&[
            "ip",
            "-n",
            &self.internet,
            "link",
            "set",
            &port,
            "master",
            "br0",
        ]);
        run(&["ip", "-n", &self.internet, "link", "set", &port, "up"]);
        run(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            dev,
        ]);
        run(&["ip", "-n", ns, "link", "set", dev, "up"]);
    }

    /// A host on the internet at `ip`; returns its namespace.
    pub fn host(&mut self, short: &str, ip: &str) -> String {
        let ns = self.name(short);
        self.namespace(&ns);
        self.plug(&ns.clone(), "eth0", ip);
        ns
    }

    /// A home: a router at `wan_ip` on the internet, translating for `lan` (`a.b.c` of a /24),
    /// and a player namespace at `lan.2` behind it. Returns (router, player) namespaces.
    pub fn home(&mut self, short: &str, wan_ip: &str, lan: &str, nat: Nat) -> (String, String) {
        let router = self.name(&format!("{short}r"));
        let player = self.name(short);
        self.namespace(&router);
        self.namespace(&player);
        self.plug(&router.clone(), "eth0", wan_ip);
        run(&[
            "ip", "link", "add", "eth1", "netns", &router, "type", "veth", "peer", "name", "eth0",
            "netns", &player,
        ]);
        let gateway = format!("{lan}.1");
        run(&[
            "ip",
            "-n",
            &router,
            "addr",
            "add",
            &format!("{gateway}/24"),
            "dev",
            "eth1",
        ]);
        run(&["ip", "-n", &router, "link", "set", "eth1", "up"]);
        run(&[
            "ip",
            "-n",
            &player,
            "addr",
            "add",
            &format!("{lan}.2/24"),
            "dev",
            "eth0",
        ]);
        run(&["ip", "-n", &player, "link", "set", "eth0", "up"]);
        run(&[
            "ip", "-n", &player, "route", "add", "default", "via", &gateway,
        ]);
        let exec = |args: &[&str]| {
            let mut full = vec!["ip", "netns", "exec", &router];
            full.extend_from_slice(args);
            run(&full);
        };
        exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let mut masquerade = vec![
            "iptables",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "eth0",
            "-j",
            "MASQUERADE",
        ];
        if nat == Nat::Symmetric {
            masquerade.push("--random-fully");
        }
        exec(&masquerade);
        // As home routers do: nothing unsolicited from the outside reaches the router itself
        // (no reset for a hole punch that arrives first).
        exec(&[
            "iptables",
            "-A",
            "INPUT",
            "-i",
            "eth0",
            "-m",
            "conntrack",
            "--ctstate",
            "NEW,INVALID",
            "-j",
            "DROP",
        ]);
        (router, player)
    }

    /// Runs miniupnpd on `router` for the LAN behind its `eth1`.
    pub fn upnp(&mut self, router: &str, lan: &str) {
        let nft = "table inet cmudupnp {
  chain forward {
    type filter hook forward priority 0; policy accept;
    jump miniupnpd
  }
  chain miniupnpd {
  }
  chain prerouting {
    type nat hook prerouting priority -100; policy accept;
    jump prerouting_miniupnpd
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    jump postrouting_miniupnpd
  }
  chain prerouting_miniupnpd {
  }
  chain postrouting_miniupnpd {
  }
}
";
        let nft_file = self.dir.path().join(format!("{router}.nft"));
        std::fs::write(&nft_file, nft).expect("nft file");
        run(&["ip", "netns", "exec", router, "nft", "-f", path(&nft_file)]);
        let conf = format!(
            "ext_ifname=eth0\nlistening_ip=eth1\nhttp_port=0\nenable_natpmp=no\nenable_upnp=yes\n\
             ext_perform_stun=yes\next_stun_host={STUN_IP}\next_stun_port=3478\n\
             upnp_table_name=cmudupnp\nupnp_nat_table_name=cmudupnp\n\
             upnp_forward_chain=miniupnpd\nupnp_nat_chain=prerouting_miniupnpd\n\
             upnp_nat_postrouting_chain=postrouting_miniupnpd\nsecure_mode=yes\n\
             system_uptime=yes\nuuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b\n\
             allow 1024-65535 {lan}.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n"
        );
        let conf_file = self.dir.path().join(format!("{router}.conf"));
        std::fs::write(&conf_file, conf).expect("miniupnpd config");
        let log = File::create(self.dir.path().join(format!("{router}.upnp.log"))).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", router, "miniupnpd", "-d", "-f"])
            .arg(&conf_file)
            .arg("-P")
            .arg(self.dir.path().join(format!("{router}.pid")))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("miniupnpd starts");
        self.children.push(child);
    }

    /// miniupnpd's log on `router`.
    pub fn upnp_log(&self, router: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{router}.upnp.log")))
            .unwrap_or_default()
    }

    /// What `router` translates and tracks (its nftables rules and connection-tracking
    /// table), for failure messages.
    pub fn router_state(&self, router: &str) -> String {
        let output = Command::new("ip")
            .args(["netns", "exec", router, "sh", "-c"])
            .arg("nft list ruleset; echo '--- conntrack'; cat /proc/net/nf_conntrack")
            .output();
        match output {
            Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
            Err(err) => format!("cannot read {router}'s state: {err}"),
        }
    }

    /// Starts `cmud --server-only` in `ns`, joining `join`, with UPnP on or off.
    pub fn node(&mut self, ns: &str, join: &[String], upnp: bool) -> Node {
        let root = self.dir.path().join(ns);
        std::fs::create_dir_all(&root).expect("node dir");
        let config = root.join("config.ron");
        let fallback = self
            .relay_fallback_secs
            .map(|secs| format!(", relay_fallback_secs: {secs}"))
            .unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "(mdns: false, upnp: {upnp}, assume_global_addresses: true, rpc_auth: false\
                 {fallback})"
            ),
        )
        .expect("config");
        let mut command = Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                ns,
                env!("CARGO_BIN_EXE_cmud"),
                "--server-only",
            ])
            .args(["--rpc-port", &RPC_PORT.to_string(), "--actors", "1"])
            .args(["--listen", &format!("/ip4/0.0.0.0/tcp/{P2P_PORT}")])
            .args(["--listen", &format!("/ip4/0.0.0.0/udp/{P2P_PORT}/quic-v1")])
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(root.join("data"))
            .env("HOME", &root)
            .env(
                "RUST_LOG",
                "info,cmud=debug,libp2p_swarm=debug,libp2p_dcutr=debug,libp2p_relay=debug,libp2p_quic=debug",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for addr in join {
            command.args(["--join", addr]);
        }
        let mut child = command.spawn().expect("cmud starts");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut log) = sink.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut peer_id = None;
        let started = Instant::now();
        while peer_id.is_none() {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                panic!(
                    "cmud in {ns} stopped:\n{}",
                    log.lock().map(|l| l.clone()).unwrap()
                );
            };
            if let Some(addr) = line.strip_prefix("listening on ") {
                peer_id = addr.rsplit("/p2p/").next().map(str::to_owned);
            }
            assert!(
                started.elapsed() < START_DEADLINE,
                "cmud in {ns} did not start"
            );
        }
        thread::spawn(move || lines.for_each(drop));
        let rpc = Rpc::connect_in(ns, RPC_PORT);
        Node {
            peer_id: peer_id.expect("peer id"),
            child,
            rpc,
            log,
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            // Anything still running in the namespace goes with it.
            if let Ok(output) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        // SAFETY: kill has no memory-safety preconditions.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a thread that has entered namespace `ns` (sockets it makes stay there).
pub fn in_namespace<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = PathBuf::from("/var/run/netns").join(ns);
    thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        // SAFETY: a valid namespace file descriptor; setns affects this thread only.
        let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0, "cannot enter {}", path.display());
        f()
    })
    .join()
    .expect("namespace thread")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Writes a line to the test's log (visible with --nocapture, and on failure).
pub fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}
