//! Private tells: sealing a line so that only its recipient can read it, although every node
//! holds (and gossips) the whole world.
//!
//! Each node keeps an X25519 key of its own for tells in `tell.key` beside `identity.key`
//! (32 raw bytes, mode 0600; the libp2p signing key is never reused for encryption). Its public
//! half is published at `p/<id>/tellkey`. A tell is sealed to the recipient's public key with
//! a fresh ephemeral key: the ChaCha20-Poly1305 key is SHA-256 of a label, the shared secret
//! and both public keys, and it is used once (so the nonce is zero). The sender's id is inside
//! the sealed text, and a tell is believed only if it matches the namespace it is stored under.
//!
//! Owns the key file and the sealed format; where tells are stored is `schema`, when they are
//! shown and removed is `news` and `social`.

use std::io::Write;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

/// The tell key's file name, in the world's folder beside `identity.key`.
pub const TELL_KEY_FILE: &str = "tell.key";

/// Bytes of an X25519 key.
const KEY_BYTES: usize = 32;

/// Marks the sealed format's version.
const FORMAT: &str = "t1";

/// Mixed into the key derivation so these keys serve nothing else.
const LABEL: &[u8] = b"cmud tell v1";

/// Why a tell key could not be used or a tell sealed.
#[derive(Debug, thiserror::Error)]
pub enum TellError {
    /// The key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The key file does not hold a key.
    #[error("{0}: not a tell key (32 bytes expected); delete it to make a new one")]
    Malformed(String),
    /// A published public key is not one.
    #[error("the recipient's published tell key is malformed")]
    BadRecipientKey,
}

/// This node's key for tells.
pub struct TellKey {
    /// The secret half.
    secret: StaticSecret,
    /// The public half, as published.
    public: PublicKey,
}

impl std::fmt::Debug for TellKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TellKey({})", self.public_hex())
    }
}

/// A tell opened by its recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The sender's player id, as sealed.
    pub from: String,
    /// When it was sent, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What it says.
    pub text: String,
}

impl TellKey {
    /// A new random key (not saved).
    pub fn generate() -> TellKey {
        TellKey::from_bytes(rand::random::<[u8; KEY_BYTES]>())
    }

    fn from_bytes(bytes: [u8; KEY_BYTES]) -> TellKey {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        TellKey { secret, public }
    }

    /// Reads `tell.key` in `dir`, or makes one there (mode 0600) if there is none.
    pub fn load_or_create(dir: &Path) -> Result<TellKey, TellError> {
        let path = dir.join(TELL_KEY_FILE);
        let io = |source| TellError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let bytes: [u8; KEY_BYTES] = bytes
                    .try_into()
                    .map_err(|_| TellError::Malformed(path.display().to_string()))?;
                Ok(TellKey::from_bytes(bytes))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(io)?;
                let bytes = rand::random::<[u8; KEY_BYTES]>();
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(&path).map_err(io)?;
                file.write_all(&bytes).map_err(io)?;
                file.sync_all().map_err(io)?;
                Ok(TellKey::from_bytes(bytes))
            }
            Err(err) => Err(io(err)),
        }
    }

    /// The public half, as published at `p/<id>/tellkey`.
    pub fn public_hex(&self) -> String {
        hex(self.public.as_bytes())
    }

    /// Opens a tell stored under sender `from`'s namespace; `None` if it is not for this key,
    /// was tampered with, or claims another sender.
    pub fn open(&self, from: &str, sealed: &str) -> Option<Opened> {
        let mut parts = sealed.split('.');
        if parts.next()? != FORMAT {
            return None;
        }
        let ephemeral = PublicKey::from(key_bytes(parts.next()?)?);
        let ciphertext = unhex(parts.next()?)?;
        let cipher = cipher(&self.secret, &ephemeral, &ephemeral, &self.public);
        let plain = cipher
            .decrypt(Nonce::from_slice(&[0; 12]), ciphertext.as_slice())
            .ok()?;
        let plain = String::from_utf8(plain).ok()?;
        let mut fields = plain.splitn(3, '|');
        let sender = fields.next()?;
        let at_ms = fields.next()?.parse().ok()?;
        let text = fields.next()?.to_owned();
        (sender == from).then(|| Opened {
            from: sender.to_owned(),
            at_ms,
            text,
        })
    }
}

/// Seals `text` from player `from` to the holder of the public key `recipient_hex`.
pub fn seal(recipient_hex: &str, from: &str, at_ms: u64, text: &str) -> Result<String, TellError> {
    let recipient = PublicKey::from(key_bytes(recipient_hex).ok_or(TellError::BadRecipientKey)?);
    let ephemeral = StaticSecret::from(rand::random::<[u8; KEY_BYTES]>());
    let ephemeral_public = PublicKey::from(&ephemeral);
    let cipher = cipher(&ephemeral, &recipient, &ephemeral_public, &recipient);
    let plain = format!("{from}|{at_ms}|{text}");
    let ciphertext = cipher
        .encrypt(Nonce::from_slice(&[0; 12]), plain.as_bytes())
        .map_err(|_| TellError::BadRecipientKey)?;
    Ok(format!(
        "{FORMAT}.{}.{}",
        hex(ephemeral_public.as_bytes()),
        hex(&ciphertext)
    ))
}

/// The one-use cipher of a tell: both sides compute the same shared secret, one with the
/// ephemeral secret and the recipient's public key, the other the other way round.
fn cipher(
    secret: &StaticSecret,
    their_public: &PublicKey,
    ephemeral: &PublicKey,
    recipient: &PublicKey,
) -> ChaCha20Poly1305 {
    let shared = secret.diffie_hellman(their_public);
    let mut hash = Sha256::new();
    hash.update(LABEL);
    hash.update(shared.as_bytes());
    hash.update(ephemeral.as_bytes());
    hash.update(recipient.as_bytes());
    ChaCha20Poly1305::new(Key::from_slice(&hash.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

fn key_bytes(text: &str) -> Option<[u8; KEY_BYTES]> {
    unhex(text)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_recipient_opens_a_tell() {
        let bob = TellKey::generate();
        let eve = TellKey::generate();
        let sealed = seal(
            &bob.public_hex(),
            "alice-id",
            42,
            "the password is swordfish",
        )
        .unwrap();
        assert!(!sealed.contains("swordfish") && !sealed.contains("alice-id"));
        let opened = bob.open("alice-id", &sealed).unwrap();
        assert_eq!(
            opened,
            Opened {
                from: "alice-id".into(),
                at_ms: 42,
                text: "the password is swordfish".into()
            }
        );
        assert_eq!(eve.open("alice-id", &sealed), None, "another key");
        assert_eq!(
            bob.open("mallory", &sealed),
            None,
            "copied under another sender"
        );
        let mut tampered = sealed.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == '0' { '1' } else { '0' });
        assert_eq!(bob.open("alice-id", &tampered), None);
        for junk in ["", "t1", "t1.zz.00", "t2.00.00", "t1..", "t1.é.é"] {
            assert_eq!(bob.open("alice-id", junk), None, "{junk:?}");
        }
        assert!(seal("not hex", "a", 1, "x").is_err());
    }

    #[test]
    fn the_key_file_is_made_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = TellKey::load_or_create(dir.path()).unwrap();
        let again = TellKey::load_or_create(dir.path()).unwrap();
        assert_eq!(first.public_hex(), again.public_hex());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(dir.path().join(TELL_KEY_FILE)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(TELL_KEY_FILE), b"short").unwrap();
        let err = TellKey::load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a tell key"), "{err}");
    }
}
