//! Who may use the RPC port: the token in `rpc.token` (written on first start, mode 0600, beside
//! `identity.key`), the node's in-memory credential for its own game, and the
//! [`RpcEndpoint`] every client (the game, tests, tools) connects with.
//!
//! Owns the token file and the comparison of secrets; the `AUTH` command itself is the
//! connection's (`login.rs`).

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::path::Path;

use rand::RngCore;

/// File name of the RPC token inside a world folder.
pub const TOKEN_FILE: &str = "rpc.token";

/// The user name Redis clients send with a password only (`AUTH <token>`) or with
/// `redis-cli --user default`.
pub const DEFAULT_USER: &str = "default";

/// The user name the node's own game authenticates as, with a secret that exists only in the
/// node's memory: its connections are never evicted, delayed or timed out for others' sake.
pub const GAME_USER: &str = "cmud-game";

/// Bytes of randomness in a token or secret (256 bits).
const SECRET_BYTES: usize = 32;

/// A secret written as lowercase hex.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A fresh random secret.
    pub fn random() -> Secret {
        let mut bytes = [0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        let mut hex = String::with_capacity(SECRET_BYTES * 2);
        for byte in bytes {
            let _ = write!(hex, "{byte:02x}");
        }
        Secret(hex)
    }

    /// The secret as text, for a client to send.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `offered` is this secret, in time that depends only on the lengths.
    pub fn matches(&self, offered: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        if mine.len() != offered.len() {
            return false;
        }
        let diff = mine
            .iter()
            .zip(offered)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }

    /// A secret written as 64 hex digits (surrounding whitespace is ignored).
    pub fn parse(text: &str) -> Option<Secret> {
        let text = text.trim();
        let ok = text.len() == SECRET_BYTES * 2 && text.bytes().all(|b| b.is_ascii_hexdigit());
        ok.then(|| Secret(text.to_ascii_lowercase()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Reads the token at `path`, or writes a new random one there (mode 0600) if there is none.
pub fn load_or_create_token(path: &Path) -> io::Result<Secret> {
    match fs::read_to_string(path) {
        Ok(text) => Secret::parse(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "not a token (64 hex digits): delete the file and cmud writes a new one",
            )
        }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let token = Secret::random();
            let mut options = fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(path) {
                Ok(mut file) => {
                    writeln!(file, "{}", token.expose())?;
                    file.sync_all()?;
                    Ok(token)
                }
                // Someone else (a `--print-rpc-token` at the same moment) wrote it first.
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                    load_or_create_token(path)
                }
                Err(err) => Err(err),
            }
        }
        Err(err) => Err(err),
    }
}

/// A user name and secret to send with `AUTH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The user name ([`DEFAULT_USER`] or [`GAME_USER`]).
    pub user: String,
    /// The secret.
    pub secret: Secret,
}

/// Where a client connects and how it authenticates: the one way a client reaches a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcEndpoint {
    /// The RPC port's address.
    pub addr: SocketAddr,
    /// What to send with `AUTH`; `None` when the node runs with `rpc_auth: false`.
    pub credentials: Option<Credentials>,
}

impl RpcEndpoint {
    /// A `redis://` URL for the `redis` crate (which then sends `AUTH user secret`).
    pub fn redis_url(&self) -> String {
        match &self.credentials {
            Some(creds) => format!(
                "redis://{}:{}@{}/",
                creds.user,
                creds.secret.expose(),
                self.addr
            ),
            None => format!("redis://{}/", self.addr),
        }
    }

    /// The inline `AUTH` line a raw-socket client sends first (empty without credentials).
    pub fn auth_line(&self) -> Vec<u8> {
        match &self.credentials {
            Some(creds) => format!("AUTH {} {}\r\n", creds.user, creds.secret.expose()).into(),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_written_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKEN_FILE);
        let first = load_or_create_token(&path).unwrap();
        assert_eq!(first.expose().len(), 64);
        assert_eq!(load_or_create_token(&path).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::write(&path, "not hex").unwrap();
        assert!(load_or_create_token(&path).is_err());
    }

    #[test]
    fn secrets_match_only_themselves() {
        let secret = Secret::random();
        assert!(secret.matches(secret.expose().as_bytes()));
        assert!(!secret.matches(Secret::random().expose().as_bytes()));
        assert!(!secret.matches(&secret.expose().as_bytes()[1..]));
        assert!(!secret.matches(b""));
        assert_ne!(format!("{secret:?}"), secret.expose());
    }
}
