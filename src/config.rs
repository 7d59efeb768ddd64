//! Settings: `config.ron` (the user's), `profile.ron` (the game's), and where files live.
//!
//! Owns reading, first-time writing and merging of those files with the command-line flags.
//! It does not parse flags (that is `main`) and does not start anything.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use directories::ProjectDirs;
use serde::{Deserialize, Serialize};

use crate::p2p::nat::{NatOptions, RELAY_FALLBACK, RelayLimits};
use crate::rpc::RpcOptions;
use crate::store::Fsync;
use crate::store::validate::{
    DEFAULT_MAX_BYTES_PER_WRITER, DEFAULT_MAX_KEYS_PER_WRITER, DEFAULT_TOMBSTONE_TTL,
};

/// The commented default `config.ron`, written on first run.
pub const DEFAULT_CONFIG_RON: &str = include_str!("../config/default.ron");

/// File name of the user's settings inside the config directory.
pub const CONFIG_FILE: &str = "config.ron";

/// File name of what the game remembers inside the config directory.
pub const PROFILE_FILE: &str = "profile.ron";

/// Why settings could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A settings file exists but does not parse. The file is left as it is.
    #[error(
        "{path}:{line}:{column}: {message}\n  \
         (cmud left the file as it is: mend it, or delete it to start again from the defaults)"
    )]
    Parse {
        /// The file that is broken.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What is wrong there.
        message: String,
    },
    /// A settings file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// No home directory could be found to keep settings in.
    #[error("no home directory found: pass --config FILE and --data-dir DIR")]
    NoHome,
}

/// The user's settings (`config.ron`). Every field has a default, so a partial file is fine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Display name; `None` asks on first run.
    pub name: Option<String>,
    /// The world to join; one data folder per world.
    pub world: String,
    /// Loopback RPC port; 0 picks a free one.
    pub rpc_port: u16,
    /// Number of query actors; `None` means one per core.
    pub actors: Option<usize>,
    /// libp2p listen multiaddrs.
    pub listen: Vec<String>,
    /// Multiaddrs dialled on start.
    pub peers: Vec<String>,
    /// Whether mDNS discovery runs.
    pub mdns: bool,
    /// Largest accepted clock lead of a peer's entries, in seconds.
    pub max_clock_skew_secs: u64,
    /// Largest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Most arguments in one RPC command.
    pub max_args: usize,
    /// Most keys one writer may have in the world; 0 = no limit.
    pub max_keys_per_writer: u64,
    /// Most bytes (keys plus values) one writer may have in the world; 0 = no limit.
    pub max_bytes_per_writer: u64,
    /// Where world folders live; `None` uses the platform data directory.
    pub data_dir: Option<PathBuf>,
    /// Whether the home router is asked for a port mapping (UPnP).
    pub upnp: bool,
    /// Whether private and reserved addresses count as internet addresses.
    pub assume_global_addresses: bool,
    /// Whether a reachable node relays for members of its world.
    pub relay_server: bool,
    /// Relay reservations held at once.
    pub relay_max_reservations: usize,
    /// Circuits relayed at once.
    pub relay_max_circuits: usize,
    /// Longest life of one relayed circuit, in seconds.
    pub relay_max_circuit_secs: u64,
    /// Most bytes one relayed circuit carries.
    pub relay_max_circuit_bytes: u64,
    /// Seconds a relayed connection waits for a direct one before gossip and sync use it.
    pub relay_fallback_secs: u64,
    /// How long a deleted key's tombstone is kept, in seconds, before every replica purges it.
    pub tombstone_ttl_secs: u64,
    /// When the append-only log of writes is forced to disk (power loss; a crash of cmud
    /// alone loses nothing acknowledged whatever this says).
    pub fsync: Fsync,
    /// Whether RPC clients must `AUTH` with the token in `rpc.token`.
    pub rpc_auth: bool,
    /// Unread output one RPC client may hold before it is closed (also the largest reply).
    pub max_client_output_bytes: usize,
    /// Bytes of unfinished commands all RPC connections may hold before reading pauses.
    pub max_pending_input_bytes: usize,
    /// Unread output all RPC clients may hold before the largest holders are closed.
    pub max_total_output_bytes: usize,
    /// Most RPC clients at once (capped by the file limit).
    pub maxclients: usize,
    /// Seconds an RPC client may stay idle before it is closed; 0 = never.
    pub timeout: u64,
    /// Whether the terminal UI puts the time (HH:MM) before each line of its log.
    pub timestamps: bool,
    /// Whether the terminal UI rings the bell when a chat line mentions the player's name.
    pub bell_on_mention: bool,
}

/// Default RPC port.
pub const DEFAULT_RPC_PORT: u16 = 7440;

/// A mebibyte, in bytes.
const MIB: usize = 1024 * 1024;

/// Default libp2p port (TCP and UDP for QUIC).
pub const DEFAULT_P2P_PORT: u16 = 7441;

impl Default for Config {
    fn default() -> Self {
        Config {
            name: None,
            world: "cmud".to_owned(),
            rpc_port: DEFAULT_RPC_PORT,
            actors: None,
            listen: vec![
                format!("/ip4/0.0.0.0/tcp/{DEFAULT_P2P_PORT}"),
                format!("/ip4/0.0.0.0/udp/{DEFAULT_P2P_PORT}/quic-v1"),
            ],
            peers: Vec::new(),
            mdns: true,
            max_clock_skew_secs: 60,
            max_key_bytes: 1024,
            max_value_bytes: 32 * 1024,
            max_args: 1024,
            max_keys_per_writer: DEFAULT_MAX_KEYS_PER_WRITER,
            max_bytes_per_writer: DEFAULT_MAX_BYTES_PER_WRITER,
            data_dir: None,
            upnp: true,
            assume_global_addresses: false,
            relay_server: true,
            relay_max_reservations: RelayLimits::default().max_reservations,
            relay_max_circuits: RelayLimits::default().max_circuits,
            relay_max_circuit_secs: RelayLimits::default().max_circuit_secs,
            relay_max_circuit_bytes: RelayLimits::default().max_circuit_bytes,
            relay_fallback_secs: RELAY_FALLBACK.as_secs(),
            tombstone_ttl_secs: DEFAULT_TOMBSTONE_TTL.as_secs(),
            fsync: Fsync::default(),
            rpc_auth: true,
            max_client_output_bytes: 64 * MIB,
            max_pending_input_bytes: 256 * MIB,
            max_total_output_bytes: 256 * MIB,
            maxclients: 10_000,
            timeout: 0,
            timestamps: false,
            bell_on_mention: true,
        }
    }
}

impl Config {
    /// The clock skew limit as a duration.
    pub fn max_clock_skew(&self) -> Duration {
        Duration::from_secs(self.max_clock_skew_secs)
    }

    /// NAT traversal settings for the network.
    pub fn nat_options(&self) -> NatOptions {
        NatOptions {
            upnp: self.upnp,
            assume_global_addresses: self.assume_global_addresses,
            relay_server: self.relay_server,
            relay: RelayLimits {
                max_reservations: self.relay_max_reservations,
                max_circuits: self.relay_max_circuits,
                max_circuit_secs: self.relay_max_circuit_secs,
                max_circuit_bytes: self.relay_max_circuit_bytes,
            },
            relay_fallback: Duration::from_secs(self.relay_fallback_secs),
        }
    }

    /// Checks the size limits are usable: a node with a zero or absurd limit could not play.
    pub fn validate_limits(&self) -> Result<(), String> {
        let check = |name: &str, value: usize, range: std::ops::RangeInclusive<usize>| {
            if range.contains(&value) {
                Ok(())
            } else {
                Err(format!(
                    "{name} in config.ron is {value}; it must be from {} to {}",
                    range.start(),
                    range.end()
                ))
            }
        };
        check("max_key_bytes", self.max_key_bytes, 64..=64 * 1024)?;
        check(
            "max_value_bytes",
            self.max_value_bytes,
            1024..=16 * 1024 * 1024,
        )?;
        check("max_args", self.max_args, 16..=64 * 1024)?;
        // A quota too small for the game's own keys (or for one largest entry) would stop a
        // player: 0 (off) or generous.
        let quota = |name: &str, value: u64, least: u64| {
            if value == 0 || value >= least {
                Ok(())
            } else {
                Err(format!(
                    "{name} in config.ron is {value}; it must be 0 (no limit) or at least {least}"
                ))
            }
        };
        quota("max_keys_per_writer", self.max_keys_per_writer, 1_000)?;
        quota(
            "max_bytes_per_writer",
            self.max_bytes_per_writer,
            (MIB as u64).max((self.max_key_bytes + self.max_value_bytes) as u64),
        )?;
        // The largest reply must hold a few of the largest values.
        let least_output = MIB.max(4 * self.max_value_bytes);
        check(
            "max_client_output_bytes",
            self.max_client_output_bytes,
            least_output..=usize::MAX / 4,
        )?;
        check(
            "max_total_output_bytes",
            self.max_total_output_bytes,
            self.max_client_output_bytes..=usize::MAX / 4,
        )?;
        check(
            "max_pending_input_bytes",
            self.max_pending_input_bytes,
            16 * MIB..=usize::MAX / 4,
        )?;
        check("maxclients", self.maxclients, 1..=1_000_000)
    }

    /// The RPC port's settings.
    pub fn rpc_options(&self) -> RpcOptions {
        RpcOptions {
            auth: self.rpc_auth,
            max_client_output_bytes: self.max_client_output_bytes,
            max_pending_input_bytes: self.max_pending_input_bytes,
            max_total_output_bytes: self.max_total_output_bytes,
            maxclients: self.maxclients,
            idle_timeout: (self.timeout > 0).then(|| Duration::from_secs(self.timeout)),
        }
    }

    /// Reads `path`, first writing the commented defaults there if it does not exist.
    ///
    /// An existing file is never rewritten, even if it is broken: the error names the file and
    /// the line so the user can mend it.
    pub fn load_or_create(path: &Path) -> Result<Config, ConfigError> {
        match fs::read_to_string(path) {
            Ok(text) => parse_ron(path, &text),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                write_atomically(path, DEFAULT_CONFIG_RON)?;
                parse_ron(path, DEFAULT_CONFIG_RON)
            }
            Err(source) => Err(ConfigError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

/// What the game remembers between runs (`profile.ron`); written by cmud, atomically.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Profile {
    /// The name chosen on first run.
    pub name: Option<String>,
    /// Peers that connected (from `join` or `--join`), dialled again on the next start.
    pub peers: Vec<String>,
    /// For a remembered peer whose dials fail: when they started failing, in seconds since
    /// the Unix epoch. One that keeps failing for [`FORGET_FAILING_PEER`] is forgotten.
    pub failing_since: std::collections::BTreeMap<String, u64>,
}

/// How long a remembered peer may fail before it is forgotten.
pub const FORGET_FAILING_PEER: Duration = Duration::from_secs(7 * 24 * 3600);

impl Profile {
    /// Reads `path`; a missing file is an empty profile.
    pub fn load(path: &Path) -> Result<Profile, ConfigError> {
        match fs::read_to_string(path) {
            Ok(text) => parse_ron(path, &text),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Profile::default()),
            Err(source) => Err(ConfigError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Writes the profile to `path` atomically (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let pretty = ron::ser::PrettyConfig::new().depth_limit(2);
        let body = ron::ser::to_string_pretty(self, pretty).map_err(|err| ConfigError::Io {
            path: path.to_owned(),
            source: io::Error::other(err),
        })?;
        let text = format!(
            "// Written by cmud: what the game remembers. Edit config.ron instead.\n{body}\n"
        );
        write_atomically(path, &text)
    }

    /// Remembers a joined peer (once); it is not failing any more. Returns whether the
    /// profile changed.
    pub fn add_peer(&mut self, multiaddr: &str) -> bool {
        let was_failing = self.failing_since.remove(multiaddr).is_some();
        if self.peers.iter().any(|p| p == multiaddr) {
            return was_failing;
        }
        self.peers.push(multiaddr.to_owned());
        true
    }

    /// A remembered peer could not be joined at `now_secs`: it is forgotten once it has
    /// failed since more than [`FORGET_FAILING_PEER`]. Returns whether the profile changed.
    pub fn peer_failed(&mut self, multiaddr: &str, now_secs: u64) -> bool {
        if !self.peers.iter().any(|p| p == multiaddr) {
            return false;
        }
        let Some(&since) = self.failing_since.get(multiaddr) else {
            self.failing_since.insert(multiaddr.to_owned(), now_secs);
            return true;
        };
        if now_secs.saturating_sub(since) < FORGET_FAILING_PEER.as_secs() {
            return false;
        }
        self.peers.retain(|p| p != multiaddr);
        self.failing_since.remove(multiaddr);
        true
    }
}

fn parse_ron<T: for<'de> Deserialize<'de>>(path: &Path, text: &str) -> Result<T, ConfigError> {
    ron::from_str(text).map_err(|err| ConfigError::Parse {
        path: path.to_owned(),
        line: err.span.start.line,
        column: err.span.start.col,
        message: err.code.to_string(),
    })
}

/// Writes `text` to `path` through a temporary file in the same directory and a rename, so a
/// crash never leaves a half-written file. Creates the directory if needed.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), ConfigError> {
    let io_err = |source| ConfigError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err)?;
    }
    let tmp = path.with_extension("ron.tmp");
    let mut file = fs::File::create(&tmp).map_err(io_err)?;
    file.write_all(text.as_bytes()).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    fs::rename(&tmp, path).map_err(io_err)
}

/// Where cmud keeps its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// The config file (`--config` or `<config dir>/config.ron`).
    pub config_file: PathBuf,
    /// The profile, beside the config file.
    pub profile_file: PathBuf,
    /// The folder holding one folder per world.
    pub data_dir: PathBuf,
}

impl Paths {
    /// Resolves the config file (flag, else the platform config dir) and the data dir (flag,
    /// else config, else the platform data dir).
    pub fn config_file(flag: Option<&Path>) -> Result<PathBuf, ConfigError> {
        match flag {
            Some(path) => Ok(path.to_owned()),
            None => Ok(project_dirs()?.config_dir().join(CONFIG_FILE)),
        }
    }

    /// Completes the paths once the config is read.
    pub fn resolve(
        config_file: PathBuf,
        data_dir_flag: Option<&Path>,
        config: &Config,
    ) -> Result<Paths, ConfigError> {
        let profile_file = config_file.with_file_name(PROFILE_FILE);
        let data_dir = match data_dir_flag.or(config.data_dir.as_deref()) {
            Some(dir) => dir.to_owned(),
            None => project_dirs()?.data_dir().to_owned(),
        };
        Ok(Paths {
            config_file,
            profile_file,
            data_dir,
        })
    }

    /// The folder of one world's data.
    pub fn world_dir(&self, world: &str) -> PathBuf {
        self.data_dir.join(world)
    }
}

fn project_dirs() -> Result<ProjectDirs, ConfigError> {
    ProjectDirs::from("", "", "cmud").ok_or(ConfigError::NoHome)
}

/// Checks a world name: it names a folder and a gossip topic, so it is kept plain.
pub fn validate_world(world: &str) -> Result<(), String> {
    let ok = !world.is_empty()
        && world.len() <= 64
        && world
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "world name {world:?} must be 1-64 characters of letters, digits, '-' or '_'"
        ))
    }
}

#[cfg(test)]
mod profile_tests {
    use super::*;

    #[test]
    fn a_peer_failing_for_a_week_is_forgotten() {
        let mut profile = Profile::default();
        let addr = "/ip4/203.0.113.7/tcp/7441";
        assert!(!profile.peer_failed(addr, 0), "only remembered peers");
        assert!(profile.add_peer(addr));
        assert!(profile.peer_failed(addr, 100));
        let week = FORGET_FAILING_PEER.as_secs();
        assert!(!profile.peer_failed(addr, 100 + week - 1));
        assert!(profile.add_peer(addr), "a success clears the failures");
        assert!(profile.peer_failed(addr, 200));
        assert!(profile.peer_failed(addr, 200 + week));
        assert!(profile.peers.is_empty() && profile.failing_since.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ron_parses_to_the_defaults() {
        let parsed: Config = ron::from_str(DEFAULT_CONFIG_RON).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn first_load_writes_the_commented_file_and_never_overwrites_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(CONFIG_FILE);
        assert_eq!(Config::load_or_create(&path).unwrap(), Config::default());
        assert_eq!(fs::read_to_string(&path).unwrap(), DEFAULT_CONFIG_RON);

        fs::write(&path, "(\n  world: \"w\",\n  rpc_port: nope,\n)").unwrap();
        match Config::load_or_create(&path) {
            Err(ConfigError::Parse { line, .. }) => assert_eq!(line, 3),
            other => panic!("expected a parse error, got {other:?}"),
        }
        assert!(fs::read_to_string(&path).unwrap().contains("nope"));
    }

    #[test]
    fn partial_config_keeps_other_defaults() {
        let config: Config = ron::from_str("(world: \"other\")").unwrap();
        assert_eq!(config.world, "other");
        assert_eq!(config.rpc_port, DEFAULT_RPC_PORT);
    }

    #[test]
    fn profile_round_trips_and_dedups_peers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PROFILE_FILE);
        assert_eq!(Profile::load(&path).unwrap(), Profile::default());
        let mut profile = Profile {
            name: Some("ada".into()),
            peers: vec![],
            ..Profile::default()
        };
        assert!(profile.add_peer("/ip4/127.0.0.1/tcp/1"));
        assert!(!profile.add_peer("/ip4/127.0.0.1/tcp/1"));
        profile.save(&path).unwrap();
        assert_eq!(Profile::load(&path).unwrap(), profile);
    }

    #[test]
    fn limits_must_be_usable() {
        assert!(Config::default().validate_limits().is_ok());
        let zero_value = Config {
            max_value_bytes: 0,
            ..Config::default()
        };
        let err = zero_value.validate_limits().unwrap_err();
        let tiny_quota = Config {
            max_keys_per_writer: 10,
            ..Config::default()
        };
        assert!(
            tiny_quota
                .validate_limits()
                .unwrap_err()
                .contains("max_keys_per_writer")
        );
        let no_quota = Config {
            max_keys_per_writer: 0,
            max_bytes_per_writer: 0,
            ..Config::default()
        };
        assert!(no_quota.validate_limits().is_ok());
        assert!(err.contains("max_value_bytes"), "{err}");
        let few_args = Config {
            max_args: 2,
            ..Config::default()
        };
        assert!(few_args.validate_limits().is_err());
    }

    #[test]
    fn world_names_are_plain() {
        assert!(validate_world("cmud").is_ok());
        assert!(validate_world("my-world_2").is_ok());
        assert!(validate_world("").is_err());
        assert!(validate_world("../etc").is_err());
        assert!(validate_world("a/b").is_err());
    }
}
