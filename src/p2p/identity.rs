//! The node's libp2p identity, kept in the world's folder so the peer id (and so the multiaddr
//! a friend saved, and the player's id in the world) is the same across restarts.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use libp2p::identity::Keypair;

/// File name of the identity key inside a world folder.
pub const IDENTITY_FILE: &str = "identity.key";

/// Loads the keypair at `path`, or creates and stores a new ed25519 one (mode 0600).
pub fn load_or_create(path: &Path) -> io::Result<Keypair> {
    match fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|err| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: not a cmud identity key ({err}); move it away to get a new identity",
                    path.display()
                ),
            )
        }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let keypair = Keypair::generate_ed25519();
            let bytes = keypair.to_protobuf_encoding().map_err(io::Error::other)?;
            write_private(path, &bytes)?;
            Ok(keypair)
        }
        Err(err) => Err(err),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_stable_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        let first = load_or_create(&path).unwrap();
        let again = load_or_create(&path).unwrap();
        assert_eq!(first.public().to_peer_id(), again.public().to_peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_corrupt_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        fs::write(&path, b"garbage").unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("not a cmud identity key"));
    }
}
