//! Criterion benchmarks of the replica: merging entries, one actor's in-memory Get/Put, the
//! actor's map against the `BTreeMap` it replaced, and the same through a real RPC port with
//! pipelining (one connection, one actor).
//!
//! `cargo bench --bench store`; the comparison with Redis is `benches/vs-redis.sh`.

mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::{Read, Write};

use bytes::Bytes;
use cmud::store::compact::{Slot, Small};
use cmud::store::packed::PackedMap;
use cmud::store::replica::Replica;
use cmud::store::{Entry, NodeId, Version, entry};
use common::BenchNode;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const KEYS: usize = 10_000;

fn key(n: usize) -> Bytes {
    Bytes::from(format!("p/12D3KooWbench/item/{n:06}"))
}

fn version(millis: u64, actor: u16) -> Version {
    Version {
        millis,
        counter: 0,
        node: NodeId::new("12D3KooWbench"),
        actor,
    }
}

fn merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("merge");
    group.throughput(Throughput::Elements(KEYS as u64));
    let old: Vec<(Bytes, Entry)> = (0..KEYS)
        .map(|n| {
            (
                key(n),
                Entry::value(version(1, 0), Bytes::from_static(b"old")),
            )
        })
        .collect();
    let new: Vec<(Bytes, Entry)> = (0..KEYS)
        .map(|n| {
            (
                key(n),
                Entry::value(version(2, 1), Bytes::from_static(b"new")),
            )
        })
        .collect();
    let base: BTreeMap<Bytes, Entry> = old.iter().cloned().collect();
    group.bench_function("newer entries into a full map", |b| {
        b.iter_batched(
            || (base.clone(), new.clone()),
            |(mut map, batch)| {
                for (key, entry) in batch {
                    black_box(entry::merge(&mut map, key, entry));
                }
                map
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("stale duplicates into a full map", |b| {
        b.iter_batched(
            || (base.clone(), old.clone()),
            |(mut map, batch)| {
                for (key, entry) in batch {
                    black_box(entry::merge(&mut map, key, entry));
                }
                map
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn one_actor(c: &mut Criterion) {
    let mut group = c.benchmark_group("one actor in memory");
    group.throughput(Throughput::Elements(1));
    let mut replica = Replica::new(NodeId::new("12D3KooWbench"), 0);
    for n in 0..KEYS {
        replica.put(key(n), Some(Bytes::from_static(b"value")), 1);
    }
    let keys: Vec<Bytes> = (0..KEYS).map(key).collect();
    let mut n = 0;
    group.bench_function("get", |b| {
        b.iter(|| {
            n = (n + 7919) % KEYS;
            black_box(replica.get(&keys[n]).is_some())
        })
    });
    group.bench_function("put", |b| {
        b.iter(|| {
            n = (n + 7919) % KEYS;
            replica.put(keys[n].clone(), Some(Bytes::from_static(b"value2")), 2);
        })
    });
    group.finish();
}

/// Keys of the memory test (`key:<12 digits>`, 16 bytes), in random order if `shuffled`.
fn small_keys(n: usize, shuffled: bool) -> Vec<Small> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffled {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for i in (1..n).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            order.swap(i, (seed % (i as u64 + 1)) as usize);
        }
    }
    order
        .into_iter()
        .map(|k| Small::new(&Bytes::from(format!("key:{k:012}"))))
        .collect()
}

/// A query actor's map ([`PackedMap`]) against the `BTreeMap` it replaced: a Get among a
/// million keys, and building a 100,000-key map from keys in order and in random order.
fn actor_map(c: &mut Criterion) {
    const BIG: usize = 1_000_000;
    const BUILT: usize = 100_000;
    let slot = Slot::new(&Entry::value(version(1, 0), Bytes::from_static(b"abc")));
    let mut group = c.benchmark_group("actor map");
    group.sample_size(20);
    let lookups = small_keys(BIG, true);
    let packed: PackedMap<Slot> = small_keys(BIG, false)
        .into_iter()
        .map(|key| (key, slot.clone()))
        .collect();
    let btree: BTreeMap<Small, Slot> = small_keys(BIG, false)
        .into_iter()
        .map(|key| (key, slot.clone()))
        .collect();
    group.throughput(Throughput::Elements(1));
    let mut n = 0;
    group.bench_function("get among 1M keys: packed", |b| {
        b.iter(|| {
            n = (n + 1) % BIG;
            black_box(packed.get(&lookups[n]).is_some())
        })
    });
    group.bench_function("get among 1M keys: BTreeMap", |b| {
        b.iter(|| {
            n = (n + 1) % BIG;
            black_box(btree.contains_key(&lookups[n][..]))
        })
    });
    group.throughput(Throughput::Elements(BUILT as u64));
    for (order, shuffled) in [("in order", false), ("random", true)] {
        let keys = small_keys(BUILT, shuffled);
        group.bench_function(format!("insert 100k keys {order}: packed"), |b| {
            b.iter_batched(
                || keys.clone(),
                |keys| {
                    let mut map = PackedMap::new();
                    for key in keys {
                        map.insert(key, slot.clone());
                    }
                    map
                },
                BatchSize::LargeInput,
            )
        });
        group.bench_function(format!("insert 100k keys {order}: BTreeMap"), |b| {
            b.iter_batched(
                || keys.clone(),
                |keys| {
                    let mut map = BTreeMap::new();
                    for key in keys {
                        map.insert(key, slot.clone());
                    }
                    map
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// GET and SET through the RPC port, 100 commands per write, as a pipelining client sends them.
fn through_the_port(c: &mut Criterion) {
    const PIPELINE: usize = 100;
    let mut bench = BenchNode::start();
    let mut group = c.benchmark_group("rpc, one actor, pipeline 100");
    group.throughput(Throughput::Elements(PIPELINE as u64));
    let mut sets = Vec::new();
    let mut gets = Vec::new();
    for n in 0..PIPELINE {
        write!(sets, "*3\r\n$3\r\nSET\r\n$8\r\nkey:{n:04}\r\n$3\r\nxxx\r\n").expect("write");
        write!(gets, "*2\r\n$3\r\nGET\r\n$8\r\nkey:{n:04}\r\n").expect("write");
    }
    let mut reply = vec![0u8; PIPELINE * 16];
    group.bench_function("set", |b| {
        b.iter(|| {
            bench.stream.write_all(&sets).expect("send");
            bench
                .stream
                .read_exact(&mut reply[..PIPELINE * 5])
                .expect("+OK replies");
        })
    });
    group.bench_function("get", |b| {
        b.iter(|| {
            bench.stream.write_all(&gets).expect("send");
            bench
                .stream
                .read_exact(&mut reply[..PIPELINE * 9])
                .expect("bulk replies");
        })
    });
    group.finish();
    bench.shutdown();
}

criterion_group!(benches, merge, one_actor, actor_map, through_the_port);
criterion_main!(benches);
