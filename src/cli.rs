//! The command line: flags (clap), and how they combine with `config.ron` and `profile.ron`
//! into the settings of one run. Flags win over the profile, which wins over the config.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use libp2p::Multiaddr;

use crate::config::{self, Config, ConfigError, Paths, Profile};
use crate::node::NodeOptions;
use crate::p2p::NetworkOptions;
use crate::store::Limits;

/// CMUD: a multiplayer terminal MUD with no central server.
///
/// Every player's cmud embeds a full replica of the world and finds friends over libp2p
/// (mDNS on a LAN, or --join a friend's address). Run it with no flags to play.
#[derive(Clone, Debug, Default, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// Run a headless backbone node that keeps the world alive (no game).
    #[arg(long, conflicts_with = "plain")]
    pub server_only: bool,

    /// Play in a plain line-oriented REPL on stdin/stdout (scripts, screen readers).
    #[arg(long)]
    pub plain: bool,

    /// With --plain: write every game event as one JSON object per line (for bots).
    #[arg(long, requires = "plain")]
    pub json: bool,

    /// Your display name (skips the first-run question).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// The world to play in [default: cmud, or `world` in config.ron].
    #[arg(long, value_name = "NAME", global = true)]
    pub world: Option<String>,

    /// Loopback RPC (RESP) port; 0 picks a free one [default: 7440].
    #[arg(long, value_name = "N")]
    pub rpc_port: Option<u16>,

    /// Number of query actors serving the RPC port [default: number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub actors: Option<u16>,

    /// libp2p address to listen on, TCP or QUIC, repeatable [default: /ip4/0.0.0.0/tcp/7441 and
    /// /ip4/0.0.0.0/udp/7441/quic-v1].
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<Multiaddr>,

    /// A friend's address to join, repeatable (as printed by their `listening on` line).
    #[arg(long, value_name = "MULTIADDR")]
    pub join: Vec<Multiaddr>,

    /// Do not look for players on the local network with mDNS.
    #[arg(long)]
    pub no_mdns: bool,

    /// Folder that holds one folder per world [default: the platform data dir].
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,

    /// Settings file to use instead of config.ron in the platform config dir.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// Print the RPC port's token (from rpc.token in the world's folder, written if missing)
    /// and exit: `redis-cli -p 7440 -a "$(cmud --print-rpc-token)"`.
    #[arg(long)]
    pub print_rpc_token: bool,
    /// A tool to run on a stopped node's world instead of playing.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Tools on a stopped node's world folder (`--world`, `--data-dir`).
#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Read the whole world, verify every entry, and report counts and problems (exit 1 if
    /// there are any).
    Check,
    /// Write the world as JSON lines, one entry a line, in key order.
    Export {
        /// Only keys that start with this.
        #[arg(long, value_name = "P", default_value = "")]
        prefix: String,
        /// Write here instead of to stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Merge a file of `cmud export` lines into the world (created if missing), last writer
    /// wins; a bad line imports nothing.
    Import {
        /// The JSON lines file.
        file: PathBuf,
    },
}

/// Which front end runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrontEnd {
    /// The ratatui terminal UI.
    Tui,
    /// The plain line REPL.
    Plain,
    /// No game: a headless node.
    ServerOnly,
}

/// Why the settings of a run could not be worked out.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A settings file is broken or unreadable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A value (from a flag or a file) is not acceptable.
    #[error("{0}")]
    Invalid(String),
}

/// Everything one run needs, flags and files combined.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Which front end runs.
    pub front_end: FrontEnd,
    /// The player's name, if known (flag, profile, or config).
    pub name: Option<String>,
    /// Where files are.
    pub paths: Paths,
    /// What the game remembers (written back by the front end).
    pub profile: Profile,
    /// How to run the node.
    pub node: NodeOptions,
    /// Whether `--plain` writes JSON events.
    pub json: bool,
    /// The addresses given with `--join` (the game reports how each went, and remembers
    /// those that connected).
    pub joins: Vec<String>,
    /// How the terminal UI shows its log (`timestamps`, `bell_on_mention` in config.ron).
    pub screen: ScreenOptions,
}

/// The terminal UI's settings from `config.ron`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScreenOptions {
    /// Put the local time before each line of the log.
    pub timestamps: bool,
    /// Ring the bell when a chat line mentions the player.
    pub bell_on_mention: bool,
    /// The local time's offset from UTC, in seconds, for the timestamps.
    pub utc_offset_secs: i32,
}

impl Cli {
    /// Reads (creating on first run) the config and profile, and combines them with the flags.
    pub fn settings(&self) -> Result<Settings, SettingsError> {
        let config_file = Paths::config_file(self.config.as_deref())?;
        let config = Config::load_or_create(&config_file)?;
        let paths = Paths::resolve(config_file, self.data_dir.as_deref(), &config)?;
        let profile = Profile::load(&paths.profile_file)?;
        self.combine(config, profile, paths)
    }

    /// Combines the flags with already-read files.
    pub fn combine(
        &self,
        config: Config,
        profile: Profile,
        paths: Paths,
    ) -> Result<Settings, SettingsError> {
        let front_end = if self.server_only {
            FrontEnd::ServerOnly
        } else if self.plain {
            FrontEnd::Plain
        } else {
            FrontEnd::Tui
        };
        let world = self.world.clone().unwrap_or_else(|| config.world.clone());
        config::validate_world(&world).map_err(SettingsError::Invalid)?;
        config.validate_limits().map_err(SettingsError::Invalid)?;

        let listen = if self.listen.is_empty() {
            parse_addrs("listen", &config.listen)?
        } else {
            self.listen.clone()
        };
        let mut join = self.join.clone();
        // Remembered peers are dialled too; the game reports every dial's outcome.
        for addr in parse_addrs("peers", &config.peers)?
            .into_iter()
            .chain(parse_addrs("profile peers", &profile.peers)?)
        {
            if !join.contains(&addr) {
                join.push(addr);
            }
        }
        let actors = self
            .actors
            .map(usize::from)
            .or(config.actors)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .clamp(1, 256);
        let limits = Limits {
            max_key_bytes: config.max_key_bytes,
            max_value_bytes: config.max_value_bytes,
            max_args: config.max_args,
            max_clock_skew: Duration::from_secs(config.max_clock_skew_secs.max(1)),
            tombstone_ttl: Duration::from_secs(config.tombstone_ttl_secs.max(1)),
            max_keys_per_writer: config.max_keys_per_writer,
            max_bytes_per_writer: config.max_bytes_per_writer,
        };
        let server_only = front_end == FrontEnd::ServerOnly;
        let node = NodeOptions {
            world_dir: paths.world_dir(&world),
            world: world.clone(),
            rpc_port: self.rpc_port.unwrap_or(config.rpc_port),
            // A host wants its configured port or a clear error; a player just wants to play.
            rpc_fallback: !server_only,
            actors,
            limits,
            fsync: config.fsync,
            rpc: config.rpc_options(),
            network: Some(NetworkOptions {
                world,
                listen,
                join,
                mdns: config.mdns && !self.no_mdns,
                strict_listen: server_only,
                limits,
                discovery: true,
                nat: config.nat_options(),
            }),
        };
        let name = self
            .name
            .clone()
            .or_else(|| profile.name.clone())
            .or_else(|| config.name.clone());
        let screen = ScreenOptions {
            timestamps: config.timestamps,
            bell_on_mention: config.bell_on_mention,
            // Read now: `main` builds settings before any thread starts, and on Unix the
            // offset can only be read safely then (otherwise it stays UTC).
            utc_offset_secs: time::UtcOffset::current_local_offset()
                .map_or(0, |offset| offset.whole_seconds()),
        };
        Ok(Settings {
            front_end,
            name,
            paths,
            profile,
            node,
            screen,
            json: self.json,
            joins: self.join.iter().map(ToString::to_string).collect(),
        })
    }
}

fn parse_addrs(field: &str, addrs: &[String]) -> Result<Vec<Multiaddr>, SettingsError> {
    addrs
        .iter()
        .map(|addr| {
            addr.parse().map_err(|err| {
                SettingsError::Invalid(format!("{field}: {addr:?} is not a multiaddr ({err})"))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Paths {
        Paths {
            config_file: "/c/config.ron".into(),
            profile_file: "/c/profile.ron".into(),
            data_dir: "/d".into(),
        }
    }

    #[test]
    fn flags_override_profile_and_config() {
        let cli = Cli::parse_from([
            "cmud",
            "--world",
            "w2",
            "--rpc-port",
            "9000",
            "--no-mdns",
            "--name",
            "flag",
        ]);
        let config = Config {
            name: Some("config".into()),
            world: "w1".into(),
            ..Config::default()
        };
        let profile = Profile {
            name: Some("profile".into()),
            peers: vec![],
            ..Profile::default()
        };
        let settings = cli.combine(config, profile, paths()).unwrap();
        assert_eq!(settings.name.as_deref(), Some("flag"));
        assert_eq!(settings.node.world, "w2");
        assert_eq!(settings.node.world_dir, PathBuf::from("/d/w2"));
        assert_eq!(settings.node.rpc_port, 9000);
        assert!(!settings.node.network.unwrap().mdns);
        assert_eq!(settings.front_end, FrontEnd::Tui);
    }

    #[test]
    fn profile_name_beats_config_name_and_peers_are_merged() {
        let cli = Cli::parse_from(["cmud", "--plain"]);
        let config = Config {
            name: Some("config".into()),
            peers: vec!["/ip4/127.0.0.1/tcp/1".into()],
            ..Config::default()
        };
        let profile = Profile {
            name: Some("profile".into()),
            peers: vec!["/ip4/127.0.0.1/tcp/1".into(), "/ip4/127.0.0.1/tcp/2".into()],
            ..Profile::default()
        };
        let settings = cli.combine(config, profile, paths()).unwrap();
        assert_eq!(settings.name.as_deref(), Some("profile"));
        assert_eq!(settings.node.network.unwrap().join.len(), 2);
        assert_eq!(settings.front_end, FrontEnd::Plain);
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let cli = Cli::parse_from(["cmud", "--world", "../x"]);
        assert!(
            cli.combine(Config::default(), Profile::default(), paths())
                .is_err()
        );
        let config = Config {
            peers: vec!["not an addr".into()],
            ..Config::default()
        };
        let err = Cli::default()
            .combine(config, Profile::default(), paths())
            .unwrap_err();
        assert!(err.to_string().contains("not an addr"));
        assert!(Cli::try_parse_from(["cmud", "--actors", "0"]).is_err());
        assert!(Cli::try_parse_from(["cmud", "--server-only", "--plain"]).is_err());
        assert!(
            Cli::try_parse_from(["cmud", "--json"]).is_err(),
            "--json needs --plain"
        );
    }

    #[test]
    fn server_only_is_strict_about_ports() {
        let cli = Cli::parse_from(["cmud", "--server-only"]);
        let settings = cli
            .combine(Config::default(), Profile::default(), paths())
            .unwrap();
        assert!(!settings.node.rpc_fallback);
        assert!(settings.node.network.unwrap().strict_listen);
    }
}
