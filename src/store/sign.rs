//! Signed entries: the canonical bytes an entry's signature covers, signing this node's entries
//! and verifying anyone's.
//!
//! An entry is signed by its writer's ed25519 identity key (the libp2p key in `identity.key`);
//! the writer id in its version is that key's peer id, so a verifier needs nothing but the
//! entry to find the key. The signature covers the world, the key, the value or tombstone and
//! the whole version, behind a domain-separation prefix and a format number, so a signature
//! made for one of these never fits another. What to do with a bad entry is `validate`'s
//! business; this file only answers "signed by its writer, or not".

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity as _;
use ed25519_dalek::hazmat::ExpandedSecretKey;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use libp2p::identity::{Keypair, PeerId, PublicKey};

use super::entry::{Batch, Entry, KeyedEntry, NodeId};

/// Prefix of every signed message: no signature over these bytes can mean anything else.
const DOMAIN: &[u8] = b"cmud/entry-signature";

/// Version of the signed encoding below; bumped on any change to it.
pub const SIGNATURE_FORMAT: u8 = 1;

/// Length of an ed25519 signature, in bytes.
pub const SIGNATURE_BYTES: usize = 64;

/// Entries verified together in one batch (batch verification pays from a few dozen on, and
/// keeps paying: `cargo bench --bench new_key`, group "verify batch").
const VERIFY_BATCH_ENTRIES: usize = 256;

/// Multihash code of an identity multihash, which is how ed25519 peer ids embed their key.
const IDENTITY_MULTIHASH: u64 = 0;

/// Why a node's key cannot sign entries.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// Only ed25519 identities are supported (that is what cmud creates).
    #[error("the node identity is not an ed25519 key")]
    NotEd25519,
}

/// This node's signing key, with the world and writer id it signs for.
pub struct Signer {
    /// The node's ed25519 secret key.
    key: SigningKey,
    /// The same key expanded (its secret scalar and nonce prefix): kept rather than derived
    /// again by a SHA-512 for every signature, as `SigningKey::sign` does.
    expanded: ExpandedSecretKey,
    /// The writer id of this node (its peer id).
    node: NodeId,
    /// The world every signature is bound to.
    world: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({}, {})", self.node, self.world)
    }
}

impl Signer {
    /// A signer for the node whose identity is `keypair`, in `world`.
    pub fn new(keypair: &Keypair, world: &str) -> Result<Signer, SignError> {
        let node = NodeId::new(keypair.public().to_peer_id().to_string());
        let ed = keypair
            .clone()
            .try_into_ed25519()
            .map_err(|_| SignError::NotEd25519)?;
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&ed.to_bytes()[..32]);
        Ok(Signer {
            key: SigningKey::from_bytes(&secret),
            expanded: ExpandedSecretKey::from(&secret),
            node,
            world: world.to_owned(),
        })
    }

    /// The writer id this signer's entries carry.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The world this signer signs for.
    pub fn world(&self) -> &str {
        &self.world
    }

    /// A batch of this node's entries, each with its signature.
    pub fn sign_batch(&self, batch: &[KeyedEntry]) -> Batch {
        Arc::new(self.sign_entries(batch))
    }

    /// This node's entries, each with its signature (others' entries unchanged).
    pub fn sign_entries(&self, entries: &[KeyedEntry]) -> Vec<KeyedEntry> {
        let own: Vec<usize> = (0..entries.len())
            .filter(|&at| entries[at].1.version.node == self.node)
            .collect();
        let messages: Vec<Vec<u8>> = own
            .iter()
            .map(|&at| signed_bytes(&self.world, &entries[at].0, &entries[at].1))
            .collect();
        let mut signatures = self.sign_together(&messages).into_iter();
        let mut own = own.into_iter().peekable();
        let mut signed = Vec::with_capacity(entries.len());
        for (at, (key, entry)) in entries.iter().enumerate() {
            let mut entry = entry.clone();
            if own.next_if_eq(&at).is_some()
                && let Some(signature) = signatures.next()
            {
                entry.signature = Some(Bytes::copy_from_slice(&signature));
            }
            signed.push((key.clone(), entry));
        }
        signed
    }

    /// `entry` under `key` with this node's signature. The entry's writer must be this node
    /// (only then can a verifier find the key); others' entries are returned unchanged.
    pub fn sign(&self, key: &[u8], entry: &Entry) -> Entry {
        let mut signed = entry.clone();
        if entry.version.node == self.node {
            let message = signed_bytes(&self.world, key, entry);
            let [signature] = self
                .sign_together(&[message])
                .try_into()
                .unwrap_or_else(|_| unreachable!("one signature per message"));
            signed.signature = Some(Bytes::copy_from_slice(&signature));
        }
        signed
    }

    /// Ed25519 signatures of `messages`, one per message: the very bytes ed25519-dalek's
    /// `SigningKey::sign` gives (Ed25519 signing is deterministic, RFC 8032 section 5.1.6),
    /// for less work per signature. Each signature needs its nonce point `R = r B` in
    /// compressed form, which costs a field inversion (about a seventh of a signature); here the
    /// points of the whole batch are compressed together, with one inversion for all of them,
    /// and the key's expansion is not hashed again for each message.
    fn sign_together(&self, messages: &[Vec<u8>]) -> Vec<[u8; SIGNATURE_BYTES]> {
        use sha2::{Digest as _, Sha512};

        let hash = |parts: &[&[u8]]| {
            let mut hash = Sha512::new();
            for part in parts {
                hash.update(part);
            }
            Scalar::from_bytes_mod_order_wide(&hash.finalize().into())
        };
        let nonces: Vec<Scalar> = messages
            .iter()
            .map(|message| hash(&[&self.expanded.hash_prefix, message]))
            .collect();
        let points: Vec<EdwardsPoint> = nonces.iter().map(EdwardsPoint::mul_base).collect();
        let compressed = EdwardsPoint::compress_batch_alloc(&points);
        let public = self.key.verifying_key();
        messages
            .iter()
            .zip(nonces)
            .zip(compressed)
            .map(|((message, nonce), point)| {
                let challenge = hash(&[point.as_bytes(), public.as_bytes(), message]);
                let s = challenge * self.expanded.scalar + nonce;
                let mut signature = [0u8; SIGNATURE_BYTES];
                signature[..32].copy_from_slice(point.as_bytes());
                signature[32..].copy_from_slice(s.as_bytes());
                signature
            })
            .collect()
    }
}

/// The canonical bytes a signature covers: the domain prefix, the format, then the world, the
/// key, the value (or a tombstone marker) and the version, each variable field length-prefixed
/// so no two different entries encode alike.
pub fn signed_bytes(world: &str, key: &[u8], entry: &Entry) -> Vec<u8> {
    let value_len = entry.value.as_ref().map_or(0, Bytes::len);
    let node = entry.version.node.as_str().as_bytes();
    let mut out =
        Vec::with_capacity(DOMAIN.len() + 40 + world.len() + key.len() + value_len + node.len());
    out.extend_from_slice(DOMAIN);
    out.push(SIGNATURE_FORMAT);
    put_field(&mut out, world.as_bytes());
    put_field(&mut out, key);
    match &entry.value {
        Some(value) => {
            out.push(1);
            put_field(&mut out, value);
        }
        None => out.push(0),
    }
    out.extend_from_slice(&entry.version.millis.to_be_bytes());
    out.extend_from_slice(&entry.version.counter.to_be_bytes());
    put_field(&mut out, node);
    out.extend_from_slice(&entry.version.actor.to_be_bytes());
    out
}

fn put_field(out: &mut Vec<u8>, field: &[u8]) {
    // Fields are bounded by the size limits (far under 4 GiB); saturating keeps this total.
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

/// The ed25519 key a writer id names, if it is the text of an ed25519 peer id.
pub fn writer_key(node: &NodeId) -> Option<VerifyingKey> {
    let peer = PeerId::from_str(node.as_str()).ok()?;
    let multihash = peer.as_ref();
    if multihash.code() != IDENTITY_MULTIHASH {
        return None;
    }
    let public = PublicKey::try_decode_protobuf(multihash.digest())
        .ok()?
        .try_into_ed25519()
        .ok()?;
    VerifyingKey::from_bytes(&public.to_bytes()).ok()
}

/// Verifies every entry's signature by its writer for `world`; one answer per entry, in order.
///
/// Entries are verified in batches (several times cheaper per signature); a batch that fails
/// is verified entry by entry to find the bad ones. Writers' keys are parsed once per call.
pub fn verify_entries(world: &str, entries: &[KeyedEntry]) -> Vec<bool> {
    let mut keys: HashMap<NodeId, Option<VerifyingKey>> = HashMap::new();
    let mut verdicts = vec![false; entries.len()];
    let mut batch = Vec::with_capacity(VERIFY_BATCH_ENTRIES);
    for (index, (key, entry)) in entries.iter().enumerate() {
        let Some(signature) = entry
            .signature
            .as_ref()
            .and_then(|s| Signature::from_slice(s).ok())
        else {
            continue;
        };
        let writer = &entry.version.node;
        let verifying = *keys
            .entry(writer.clone())
            .or_insert_with(|| writer_key(writer));
        let Some(verifying) = verifying else {
            continue;
        };
        batch.push(Pending {
            index,
            message: signed_bytes(world, key, entry),
            signature,
            key: verifying,
        });
        if batch.len() == VERIFY_BATCH_ENTRIES {
            verify_batch(&mut batch, &mut verdicts);
        }
    }
    verify_batch(&mut batch, &mut verdicts);
    verdicts
}

/// One signature waiting for its batch.
struct Pending {
    /// Where its verdict goes.
    index: usize,
    /// The signed bytes.
    message: Vec<u8>,
    /// The signature.
    signature: Signature,
    /// The writer's key.
    key: VerifyingKey,
}

fn verify_batch(batch: &mut Vec<Pending>, verdicts: &mut [bool]) {
    if batch.is_empty() {
        return;
    }
    let together: Vec<SignedMessage> = batch
        .iter()
        .map(|p| SignedMessage {
            message: &p.message,
            signature: &p.signature,
            key: &p.key,
        })
        .collect();
    if verify_together(&together) {
        for pending in batch.iter() {
            verdicts[pending.index] = true;
        }
    } else {
        for pending in batch.iter() {
            verdicts[pending.index] =
                verify_one(&pending.message, &pending.signature, &pending.key);
        }
    }
    batch.clear();
}

/// One signature's parts as the verification equation uses them: `R` decompressed, `s` a
/// canonical scalar, and `k = SHA-512(R || A || M)`. `None` for a signature that cannot hold
/// (an `R` off the curve, or an `s` out of range).
fn parts(
    message: &[u8],
    signature: &Signature,
    key: &VerifyingKey,
) -> Option<(EdwardsPoint, Scalar, Scalar)> {
    use curve25519_dalek::edwards::CompressedEdwardsY;
    use sha2::{Digest as _, Sha512};

    let r_bytes = signature.r_bytes();
    let r = CompressedEdwardsY(*r_bytes).decompress()?;
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(*signature.s_bytes()))?;
    let mut hash = Sha512::new();
    hash.update(r_bytes);
    hash.update(key.as_bytes());
    hash.update(message);
    let k = Scalar::from_bytes_mod_order_wide(&hash.finalize().into());
    Some((r, s, k))
}

/// Whether one signature holds, by the same rule as [`verify_together`]: the cofactored
/// equation `[8](s B - k A - R) = 0`.
///
/// Every replica must reach the same verdict on an entry whether it arrived in a batch or alone,
/// or replicas disagree about what they hold. The plain equation `s B = R + k A` (what
/// `VerifyingKey::verify` checks) and any random-weight batch of it disagree about signatures
/// whose `R` or `A` carries a small-order component, which only their own writer can make: the
/// batch accepts one such signature in eight. Multiplying by the cofactor removes the
/// small-order component, so both paths accept exactly the same signatures; the difference
/// from the plain rule lies only in signatures a writer made of its own entries on purpose, and
/// gives nobody a way to sign for another key.
pub fn verify_one(message: &[u8], signature: &Signature, key: &VerifyingKey) -> bool {
    let Some((r, s, k)) = parts(message, signature, key) else {
        return false;
    };
    let a = key.to_edwards();
    (EdwardsPoint::vartime_double_scalar_mul_basepoint(&-k, &a, &s) - r)
        .mul_by_cofactor()
        .is_identity()
}

/// One signature to verify with others.
#[derive(Clone, Copy, Debug)]
pub struct SignedMessage<'a> {
    /// The signed bytes.
    pub message: &'a [u8],
    /// The signature.
    pub signature: &'a Signature,
    /// The signer's key.
    pub key: &'a VerifyingKey,
}

/// Whether every signature of `batch` holds, checked together (true for an empty batch). A
/// false answer says only that some signature fails: verify them one by one to find which.
///
/// The cofactored batch equation of ed25519: with a random 128-bit `z_i` per signature
/// `(R_i, s_i)` by key `A_i` over `M_i`, and `k_i = SHA-512(R_i || A_i || M_i)`,
/// `[8](sum z_i R_i + sum z_i k_i A_i - (sum z_i s_i) B)` must be the identity. It holds when
/// every signature holds by [`verify_one`]'s rule, and otherwise only if the `z_i` were guessed
/// (probability about 2^-128), so a batch and its signatures one by one always agree. The terms
/// of signatures by one key are gathered into one (`(sum z_i k_i) A`), which is the same sum: a
/// world's entries come from few writers, so the multiscalar multiplication has about half as
/// many points.
pub fn verify_together(batch: &[SignedMessage]) -> bool {
    use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
    use curve25519_dalek::traits::VartimeMultiscalarMul as _;

    let mut scalars = Vec::with_capacity(batch.len() + 2);
    let mut points = Vec::with_capacity(batch.len() + 2);
    // (key bytes, key point, summed z_i k_i) of each distinct key, in order of appearance.
    let mut keys: Vec<(&[u8; 32], EdwardsPoint, Scalar)> = Vec::new();
    let mut basepoint = Scalar::ZERO;
    for signed in batch {
        let Some((r, s, k)) = parts(signed.message, signed.signature, signed.key) else {
            return false;
        };
        let key_bytes = signed.key.as_bytes();
        let z = Scalar::from(rand::random::<u128>());
        basepoint += z * s;
        scalars.push(z);
        points.push(r);
        match keys.iter_mut().find(|(bytes, _, _)| *bytes == key_bytes) {
            Some((_, _, sum)) => *sum += z * k,
            None => keys.push((key_bytes, signed.key.to_edwards(), z * k)),
        }
    }
    for (_, point, sum) in keys {
        scalars.push(sum);
        points.push(point);
    }
    scalars.push(-basepoint);
    points.push(ED25519_BASEPOINT_POINT);
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::Signer as _;
    use proptest::prelude::*;

    use super::*;
    use crate::store::entry::Version;

    fn signer(seed: u8) -> Signer {
        let keypair = Keypair::ed25519_from_bytes([seed; 32]).unwrap();
        Signer::new(&keypair, "w").unwrap()
    }

    fn entry_by(signer: &Signer, value: Option<&[u8]>) -> Entry {
        let version = Version {
            millis: 1_700_000_000_000,
            counter: 2,
            node: signer.node().clone(),
            actor: 1,
        };
        match value {
            Some(value) => Entry::value(version, Bytes::copy_from_slice(value)),
            None => Entry::tombstone(version),
        }
    }

    fn verifies(world: &str, key: &[u8], entry: &Entry) -> bool {
        verify_entries(world, &[(Bytes::copy_from_slice(key), entry.clone())])[0]
    }

    #[test]
    fn signed_entries_verify_and_unsigned_ones_do_not() {
        let alice = signer(1);
        let entry = entry_by(&alice, Some(b"cheese"));
        assert!(!verifies("w", b"k", &entry));
        assert!(verifies("w", b"k", &alice.sign(b"k", &entry)));
        let tombstone = alice.sign(b"k", &entry_by(&alice, None));
        assert!(verifies("w", b"k", &tombstone));
    }

    #[test]
    fn batch_signatures_are_the_ones_ed25519_dalek_makes() {
        let alice = signer(4);
        let entries: Vec<KeyedEntry> = (0..300)
            .map(|i| {
                let value = vec![b'v'; i % 70];
                let entry = entry_by(&alice, (i % 9 != 0).then_some(&value[..]));
                (Bytes::from(format!("p/key/{i}")), entry)
            })
            .collect();
        let signed = alice.sign_entries(&entries);
        assert_eq!(signed.len(), entries.len());
        for ((key, entry), (signed_key, signed_entry)) in entries.iter().zip(&signed) {
            let expected = alice.key.sign(&signed_bytes("w", key, entry)).to_bytes();
            assert_eq!(signed_key, key);
            assert_eq!(signed_entry.signature.as_deref(), Some(&expected[..]));
            assert_eq!(signed_entry.value, entry.value);
            assert_eq!(alice.sign(key, entry), *signed_entry);
        }
        assert!(verify_entries("w", &signed).iter().all(|ok| *ok));
    }

    #[test]
    fn a_batch_signs_only_this_nodes_entries() {
        let (alice, bob) = (signer(1), signer(2));
        let entries: Vec<KeyedEntry> = (0..10)
            .map(|i| {
                let writer = if i % 3 == 0 { &bob } else { &alice };
                (Bytes::from(format!("k{i}")), entry_by(writer, Some(b"v")))
            })
            .collect();
        let signed = alice.sign_entries(&entries);
        for (i, (_, entry)) in signed.iter().enumerate() {
            assert_eq!(entry.signature.is_some(), i % 3 != 0, "entry {i}");
        }
        assert!(alice.sign_entries(&[]).is_empty());
    }

    #[test]
    fn a_signature_by_another_key_than_the_writer_fails() {
        let (alice, mallory) = (signer(1), signer(2));
        let mut forged = entry_by(&alice, Some(b"v"));
        // Mallory signs Alice's entry with her own key: the writer's key does not match.
        let message = signed_bytes("w", b"k", &forged);
        forged.signature = Some(Bytes::copy_from_slice(
            &mallory.key.sign(&message).to_bytes(),
        ));
        assert!(!verifies("w", b"k", &forged));
        // And a signer leaves entries it did not write unsigned.
        assert_eq!(mallory.sign(b"k", &entry_by(&alice, None)).signature, None);
    }

    #[test]
    fn writer_ids_that_are_not_ed25519_peer_ids_have_no_key() {
        assert!(writer_key(&NodeId::new("pa")).is_none());
        assert!(writer_key(signer(3).node()).is_some());
    }

    #[test]
    fn one_bad_entry_in_a_batch_fails_alone() {
        let alice = signer(1);
        let mut entries: Vec<KeyedEntry> = (0..150)
            .map(|i| {
                let key = Bytes::from(format!("k{i}"));
                let entry = alice.sign(&key, &entry_by(&alice, Some(b"v")));
                (key, entry)
            })
            .collect();
        entries[70].1.value = Some(Bytes::from_static(b"tampered"));
        let verdicts = verify_entries("w", &entries);
        assert!(!verdicts[70]);
        assert_eq!(verdicts.iter().filter(|ok| **ok).count(), 149);
    }

    #[test]
    fn batches_of_several_writers_verify_and_any_bad_one_is_found() {
        let writers: Vec<Signer> = (1..=5).map(signer).collect();
        let mut entries: Vec<KeyedEntry> = (0..600)
            .map(|i| {
                let writer = &writers[i % writers.len()];
                let key = Bytes::from(format!("k{i}"));
                let entry = writer.sign(&key, &entry_by(writer, Some(b"v")));
                (key, entry)
            })
            .collect();
        assert!(verify_entries("w", &entries).iter().all(|ok| *ok));
        // One signature moved to another entry of the same writer, one swapped between
        // writers, and one entry's writer changed: each fails alone, whatever its batch.
        entries[10].1.signature = entries[15].1.signature.clone();
        entries[300].1.signature = entries[301].1.signature.clone();
        entries[599].1.version.node = writers[0].node().clone();
        let verdicts = verify_entries("w", &entries);
        let failed: Vec<usize> = (0..verdicts.len()).filter(|i| !verdicts[*i]).collect();
        assert_eq!(failed, vec![10, 300, 599]);
    }

    #[test]
    fn a_batch_holds_only_if_every_signature_does() {
        let alice = signer(1);
        let messages: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8; i + 1]).collect();
        let signatures: Vec<Signature> = messages.iter().map(|m| alice.key.sign(m)).collect();
        let key = alice.key.verifying_key();
        let batch = |signatures: &[Signature]| {
            let together: Vec<SignedMessage> = messages
                .iter()
                .zip(signatures)
                .map(|(message, signature)| SignedMessage {
                    message,
                    signature,
                    key: &key,
                })
                .collect();
            verify_together(&together)
        };
        assert!(batch(&signatures));
        assert!(verify_together(&[]));
        let mut swapped = signatures.clone();
        swapped.swap(3, 4);
        assert!(!batch(&swapped));
        // Two wrong signatures whose errors could cancel in an unweighted sum still fail.
        let mut shifted = signatures.clone();
        let mut s3 = curve25519_dalek::scalar::Scalar::from_bytes_mod_order(*shifted[3].s_bytes());
        let mut s4 = curve25519_dalek::scalar::Scalar::from_bytes_mod_order(*shifted[4].s_bytes());
        s3 += curve25519_dalek::scalar::Scalar::ONE;
        s4 -= curve25519_dalek::scalar::Scalar::ONE;
        shifted[3] = Signature::from_components(*shifted[3].r_bytes(), s3.to_bytes());
        shifted[4] = Signature::from_components(*shifted[4].r_bytes(), s4.to_bytes());
        assert!(!batch(&shifted));
    }

    /// A signature by `alice` whose `R` carries a small-order component: only its writer can
    /// make one, and the plain equation `s B = R + k A` rejects it.
    fn torsioned(alice: &Signer, message: &[u8]) -> Signature {
        use curve25519_dalek::constants::EIGHT_TORSION;
        use sha2::{Digest as _, Sha512};

        let nonce = Scalar::from_bytes_mod_order_wide(&Sha512::digest(message).into());
        let r = (EdwardsPoint::mul_base(&nonce) + EIGHT_TORSION[1]).compress();
        let mut hash = Sha512::new();
        hash.update(r.as_bytes());
        hash.update(alice.key.verifying_key().as_bytes());
        hash.update(message);
        let k = Scalar::from_bytes_mod_order_wide(&hash.finalize().into());
        Signature::from_components(r.to_bytes(), (nonce + k * alice.key.to_scalar()).to_bytes())
    }

    #[test]
    fn batches_and_single_checks_agree_on_small_order_components() {
        use ed25519_dalek::Verifier as _;

        let alice = signer(1);
        let public = alice.key.verifying_key();
        let honest: Vec<KeyedEntry> = (0..10)
            .map(|i| {
                let key = Bytes::from(format!("h{i}"));
                (key.clone(), alice.sign(&key, &entry_by(&alice, Some(b"v"))))
            })
            .collect();
        // A random-weight batch of the plain equation accepts such a signature one time in
        // eight: forty tries would all but surely catch a batch rule that differs.
        for i in 0..40 {
            let key = Bytes::from(format!("k{i}"));
            let mut entry = entry_by(&alice, Some(b"v"));
            let message = signed_bytes("w", &key, &entry);
            let signature = torsioned(&alice, &message);
            assert!(public.verify(&message, &signature).is_err());
            assert!(verify_one(&message, &signature, &public));
            let mut signed: Vec<(Vec<u8>, Signature)> = honest
                .iter()
                .map(|(key, entry)| {
                    let signature =
                        Signature::from_slice(entry.signature.as_ref().unwrap()).unwrap();
                    (signed_bytes("w", key, entry), signature)
                })
                .collect();
            signed.push((message, signature));
            let together: Vec<SignedMessage> = signed
                .iter()
                .map(|(message, signature)| SignedMessage {
                    message,
                    signature,
                    key: &public,
                })
                .collect();
            assert!(verify_together(&together), "try {i}");
            entry.signature = Some(Bytes::copy_from_slice(&signature.to_bytes()));
            let mut batch = honest.clone();
            batch.push((key, entry));
            assert!(verify_entries("w", &batch).iter().all(|ok| *ok));
        }
    }

    /// The fields of a signed entry, as bytes, so that any bit of any of them can be flipped.
    fn flip(world: &mut String, key: &mut [u8], entry: &mut Entry, field: usize, bit: usize) {
        fn flip_in(bytes: &mut [u8], bit: usize) -> bool {
            if bytes.is_empty() {
                return false;
            }
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            true
        }
        match field {
            0 => {
                // Keep the world valid UTF-8: flip within ASCII letters' low bits.
                let mut bytes = world.clone().into_bytes();
                let at = bit % bytes.len();
                bytes[at] ^= 1 << (bit % 5);
                *world = String::from_utf8_lossy(&bytes).into_owned();
            }
            1 => {
                flip_in(key, bit);
            }
            2 => match &entry.value {
                Some(value) => {
                    let mut value = value.to_vec();
                    if !flip_in(&mut value, bit) {
                        entry.value = None;
                    } else {
                        entry.value = Some(Bytes::from(value));
                    }
                }
                None => entry.value = Some(Bytes::new()),
            },
            3 => entry.version.millis ^= 1 << (bit % 64),
            4 => entry.version.counter ^= 1 << (bit % 32),
            5 => entry.version.actor ^= 1 << (bit % 16),
            // Another writer id that is a valid key: the signature is not that writer's.
            6 => entry.version.node = signer(bit as u8 | 1).node().clone(),
            _ => {
                let mut signature = entry.signature.as_ref().unwrap().to_vec();
                flip_in(&mut signature, bit);
                entry.signature = Some(Bytes::from(signature));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn signing_round_trips(
            key in prop::collection::vec(any::<u8>(), 1..40),
            value in prop::option::of(prop::collection::vec(any::<u8>(), 0..100)),
            millis in any::<u64>(),
            counter in any::<u32>(),
            actor in any::<u16>(),
        ) {
            let alice = signer(7);
            let mut entry = entry_by(&alice, value.as_deref());
            entry.version.millis = millis;
            entry.version.counter = counter;
            entry.version.actor = actor;
            prop_assert!(verifies("w", &key, &alice.sign(&key, &entry)));
        }

        #[test]
        fn flipping_any_bit_of_world_key_value_version_or_signature_fails(
            key in prop::collection::vec(any::<u8>(), 1..40),
            value in prop::option::of(prop::collection::vec(any::<u8>(), 0..100)),
            field in 0usize..8,
            bit in any::<usize>(),
        ) {
            let alice = signer(8);
            let mut entry = alice.sign(&key, &entry_by(&alice, value.as_deref()));
            let mut world = "w".to_owned();
            let mut tampered_key = key.clone();
            flip(&mut world, &mut tampered_key, &mut entry, field, bit);
            prop_assert!(!verifies(&world, &tampered_key, &entry));
        }
    }
}
