//! Where the CPU of one new key goes, stage by stage, on one core: the RPC request path (RESP
//! through a real port, the actor's put and the log write before the reply), the merge into the
//! other actor's map, signing at the gateway, the gateway's own replica with its fingerprint
//! index plus the gossip encoding (sync), and persistence (a redb commit). Verification, which
//! every receiving node pays once per entry, is measured beside them at several batch sizes.
//!
//! `cargo bench --bench new_key`; the figures are in the README ("Cost of signatures").

mod common;

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::io::{Read, Write};

use bytes::Bytes;
use cmud::p2p::wire;
use cmud::store::indexed::IndexedMap;
use cmud::store::replica::Replica;
use cmud::store::sign::{SignedMessage, verify_entries, verify_together};
use cmud::store::{Entry, Key, KeyedEntry, NodeId, Signer, persist};
use common::BenchNode;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use libp2p::identity::Keypair;

/// Keys per measured batch: about what one 100 ms flush carries at 10,000 new keys a second.
const BATCH_KEYS: usize = 1000;

fn signer() -> Signer {
    let keypair = Keypair::ed25519_from_bytes([7; 32]).expect("a key from 32 bytes");
    Signer::new(&keypair, "bench").expect("an ed25519 signer")
}

/// `BATCH_KEYS` first-hand Puts of new keys (16-byte keys, 3-byte values), as an actor's flush
/// hands them over, starting at key number `from`.
fn new_keys(signer: &Signer, from: usize) -> Vec<KeyedEntry> {
    let mut replica = Replica::new(signer.node().clone(), 0);
    for n in from..from + BATCH_KEYS {
        replica.put(key(n), Some(Bytes::from_static(b"xxx")), 1_700_000_000_000);
    }
    replica.take_pending().expect("pending puts").to_vec()
}

fn key(n: usize) -> Key {
    Bytes::from(format!("key:{n:012}"))
}

fn stages(c: &mut Criterion) {
    let signer = signer();
    let batch = new_keys(&signer, 0);
    let signed = signer.sign_batch(&batch).to_vec();
    let mut group = c.benchmark_group("new key");
    group.throughput(Throughput::Elements(BATCH_KEYS as u64));
    group.sample_size(20);

    group.bench_function("merge into another actor's map", |b| {
        b.iter_batched(
            || Replica::new(NodeId::new("other"), 1),
            |mut other| black_box(other.merge_batch(&batch)),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("signing", |b| {
        b.iter(|| black_box(signer.sign_batch(&batch)))
    });
    // What signing cost before batches were signed together: ed25519-dalek's `sign`, one
    // signature (with its own inversion and key expansion) at a time.
    let dalek = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    group.bench_function("signing one at a time (ed25519-dalek)", |b| {
        b.iter(|| {
            for (key, entry) in &batch {
                let message = cmud::store::sign::signed_bytes("bench", key, entry);
                black_box(ed25519_dalek::Signer::sign(&dalek, &message));
            }
        })
    });
    group.bench_function("sync: gateway replica and gossip encoding", |b| {
        b.iter_batched(
            || IndexedMap::new(BTreeMap::new()),
            |mut map| {
                for (key, entry) in &signed {
                    black_box(map.merge(key.clone(), entry.clone()));
                }
                black_box(wire::encode_batches("bench", 0, &signed).expect("encodes"))
            },
            BatchSize::LargeInput,
        )
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("world.redb");
    let db = redb::Database::create(&path).expect("database");
    let mut next = 0;
    group.bench_function("persistence: redb commit", |b| {
        b.iter_batched(
            || {
                next += BATCH_KEYS;
                let fresh = signer.sign_batch(&new_keys(&signer, next));
                fresh.iter().cloned().collect::<HashMap<Key, Entry>>()
            },
            |entries| persist::merge_into(&db, &path, &entries).expect("commit"),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("verification (receiving node)", |b| {
        b.iter(|| black_box(verify_entries("bench", &signed)))
    });
    group.finish();
}

/// New keys through a real RPC port (one actor, pipelines of 100 SETs): the request path, with
/// the node's flushes, signing and persistence running beside it on other threads.
fn through_the_port(c: &mut Criterion) {
    const PIPELINE: usize = 100;
    let mut bench = BenchNode::start();
    let mut group = c.benchmark_group("new key");
    group.throughput(Throughput::Elements(PIPELINE as u64));
    let mut reply = vec![0u8; PIPELINE * 5];
    let mut n = 0u64;
    group.bench_function("rpc: SET of new keys, pipeline 100", |b| {
        b.iter_batched(
            || {
                let mut sets = Vec::new();
                for _ in 0..PIPELINE {
                    n += 1;
                    write!(
                        sets,
                        "*3\r\n$3\r\nSET\r\n$16\r\nkey:{n:012}\r\n$3\r\nxxx\r\n"
                    )
                    .expect("write");
                }
                sets
            },
            |sets| {
                bench.stream.write_all(&sets).expect("send");
                bench.stream.read_exact(&mut reply).expect("+OK replies");
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
    bench.shutdown();
}

/// Batch verification of signatures by one writer, by batch size: ed25519-dalek's, and cmud's,
/// which gathers the terms of one key into one.
fn batch_sizes(c: &mut Criterion) {
    use ed25519_dalek::{Signer as _, SigningKey};
    let key = SigningKey::from_bytes(&[9; 32]);
    let messages: Vec<Vec<u8>> = (0..1024u32)
        .map(|n| format!("message {n:08} of about a key and a value").into_bytes())
        .collect();
    let signatures: Vec<_> = messages.iter().map(|m| key.sign(m)).collect();
    let keys = vec![key.verifying_key(); messages.len()];
    let mut group = c.benchmark_group("verify batch");
    group.sample_size(20);
    for size in [16, 64, 256, 1024] {
        group.throughput(Throughput::Elements(size as u64));
        let refs: Vec<&[u8]> = messages[..size].iter().map(Vec::as_slice).collect();
        group.bench_function(format!("ed25519-dalek, {size} signatures"), |b| {
            b.iter(|| {
                ed25519_dalek::verify_batch(&refs, &signatures[..size], &keys[..size])
                    .expect("valid")
            })
        });
        let together: Vec<SignedMessage> = (0..size)
            .map(|n| SignedMessage {
                message: &messages[n],
                signature: &signatures[n],
                key: &keys[n],
            })
            .collect();
        group.bench_function(format!("cmud, {size} signatures"), |b| {
            b.iter(|| assert!(verify_together(&together)))
        });
    }
    group.finish();
}

criterion_group!(benches, stages, through_the_port, batch_sizes);
criterion_main!(benches);
