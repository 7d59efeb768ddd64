//! The state machine against a model: whatever the replicas, page limits and lost messages,
//! pulling both ways ends with both replicas equal to the LWW union, in a bounded number of
//! rounds; and a few differences between large replicas move few bytes.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::store::entry::merge;
use crate::store::{Entry, NodeId, Version};

fn entry(millis: u64, node: &str, value_len: usize) -> Entry {
    Entry::value(
        Version {
            millis,
            counter: 0,
            node: NodeId::new(node),
            actor: 0,
        },
        Bytes::from(vec![b'v'; value_len]),
    )
}

fn indexed(entries: &[KeyedEntry]) -> IndexedMap {
    let mut map = IndexedMap::default();
    for (key, entry) in entries {
        map.merge(key.clone(), entry.clone());
    }
    map
}

fn encoded_len(message: &Message) -> usize {
    postcard::to_allocvec(message).map_or(0, |bytes| bytes.len())
}

/// What one session did.
#[derive(Debug, Default)]
struct Run {
    /// Rounds (request and answer) completed.
    rounds: usize,
    /// Encoded bytes of every message, both ways.
    bytes: usize,
    /// Whether a message was lost, ending the session early.
    lost: bool,
}

/// `initiator` pulls from `responder`; `lose` says whether each message is lost.
fn session(
    initiator: &mut IndexedMap,
    responder: &IndexedMap,
    limits: &PageLimits,
    lose: &mut impl FnMut() -> bool,
) -> Run {
    let mut run = Run::default();
    let mut request = open(initiator);
    loop {
        run.bytes += encoded_len(&request);
        if lose() {
            run.lost = true;
            return run;
        }
        let mut reply = respond(responder, &request, limits);
        run.bytes += encoded_len(&reply);
        if lose() {
            run.lost = true;
            return run;
        }
        for (key, entry) in reply.take_entries() {
            initiator.merge(key, entry);
        }
        run.rounds += 1;
        match pull(initiator, &reply, limits) {
            Some(next) => request = next,
            None => return run,
        }
    }
}

fn union(a: &[KeyedEntry], b: &[KeyedEntry]) -> BTreeMap<Key, Entry> {
    let mut model = BTreeMap::new();
    for (key, entry) in a.iter().chain(b) {
        merge(&mut model, key.clone(), entry.clone());
    }
    model
}

fn keyed(items: Vec<(String, u64, usize)>, node: &str) -> Vec<KeyedEntry> {
    items
        .into_iter()
        .map(|(key, millis, len)| (Bytes::from(key), entry(millis, node, len)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn pulling_both_ways_converges_to_the_union_despite_loss(
        common in prop::collection::vec(("[a-f]{1,4}", 0u64..4, 0usize..40), 0..300),
        only_a in prop::collection::vec(("[a-f]{1,4}", 0u64..6, 0usize..40), 0..60),
        only_b in prop::collection::vec(("[a-f]{1,4}", 0u64..6, 0usize..40), 0..60),
        bytes in 1usize..3000,
        parts in 0usize..40,
        losses in prop::collection::vec(any::<bool>(), 0..6),
    ) {
        let common = keyed(common, "c");
        let mut a_entries = common.clone();
        a_entries.extend(keyed(only_a, "a"));
        let mut b_entries = common;
        b_entries.extend(keyed(only_b, "b"));
        let model = union(&a_entries, &b_entries);
        let mut a = indexed(&a_entries);
        let mut b = indexed(&b_entries);
        let limits = PageLimits { bytes, parts };
        // Each message is lost when the next planned loss says so; once the plan runs out,
        // nothing more is lost (a bounded number of losses).
        let mut plan = losses.into_iter();
        let mut lose = || plan.next().unwrap_or(false);
        let bound = 2 * model.len() + 20;
        for _ in 0..20 {
            let run = session(&mut a, &b, &limits, &mut lose);
            prop_assert!(run.rounds <= bound, "{} rounds for {} keys", run.rounds, model.len());
            if !run.lost { break; }
        }
        for _ in 0..20 {
            let run = session(&mut b, &a, &limits, &mut lose);
            prop_assert!(run.rounds <= bound, "{} rounds for {} keys", run.rounds, model.len());
            if !run.lost { break; }
        }
        prop_assert_eq!(&a.to_map(), &model);
        prop_assert_eq!(&b.to_map(), &model);
        prop_assert_eq!(a.summary(b"", None), b.summary(b"", None));
    }

    #[test]
    fn hostile_messages_never_panic_and_answers_stay_bounded(
        keys in prop::collection::vec("[a-c]{0,3}", 0..40),
        parts in prop::collection::vec(
            ("[a-c]{0,3}", prop::option::of("[a-c]{0,3}"), 0u64..50, any::<bool>()),
            0..60,
        ),
    ) {
        let entries: Vec<_> = keys.into_iter().map(|k| (Bytes::from(k), entry(1, "a", 8))).collect();
        let store = indexed(&entries);
        let request = Message {
            parts: parts
                .into_iter()
                .map(|(lower, upper, count, as_entries)| {
                    let range = Range { lower: Bytes::from(lower), upper: upper.map(Bytes::from) };
                    if as_entries {
                        Part::Entries { range, entries: entries.clone() }
                    } else {
                        Part::Fingerprint { range, summary: Summary { count, ..Summary::default() } }
                    }
                })
                .collect(),
        };
        let limits = PageLimits { bytes: 64, parts: 20 };
        let answer = respond(&store, &request, &limits);
        prop_assert!(answer.parts.len() <= limits.parts());
        let _ = pull(&store, &request, &limits);
    }
}

#[test]
fn replicas_in_sync_finish_in_one_small_round() {
    let entries: Vec<_> = (0..5000)
        .map(|i| (Bytes::from(format!("k{i:05}")), entry(i, "a", 50)))
        .collect();
    let mut a = indexed(&entries);
    let b = indexed(&entries);
    let limits = PageLimits {
        bytes: 256 * 1024,
        parts: 4096,
    };
    let run = session(&mut a, &b, &limits, &mut || false);
    assert_eq!(run.rounds, 1);
    assert!(run.bytes < 100, "{} bytes", run.bytes);
}

#[test]
fn ten_differences_move_well_under_one_percent_of_a_full_transfer() {
    let entries: Vec<_> = (0..50_000u64)
        .map(|i| (Bytes::from(format!("p/{i:08}/coins")), entry(i, "a", 40)))
        .collect();
    let mut a = indexed(&entries);
    let mut b = indexed(&entries);
    for i in 0..10u64 {
        let key = Bytes::from(format!("p/{:08}/coins", i * 4999));
        b.merge(key, entry(1_000_000 + i, "b", 40));
    }
    let full: usize = b.to_map().iter().map(|(k, e)| e.wire_size(k)).sum();
    let limits = PageLimits {
        bytes: 256 * 1024,
        parts: 4096,
    };
    let run = session(&mut a, &b, &limits, &mut || false);
    assert_eq!(a.to_map(), b.to_map());
    assert!(
        run.bytes * 100 < full,
        "{} bytes of {full} ({} rounds)",
        run.bytes,
        run.rounds
    );
}

#[test]
fn a_new_replica_receives_everything_page_by_page() {
    let entries: Vec<_> = (0..3000u64)
        .map(|i| (Bytes::from(format!("k{i:05}")), entry(i, "a", 200)))
        .collect();
    let mut empty = IndexedMap::default();
    let full = indexed(&entries);
    let limits = PageLimits {
        bytes: 64 * 1024,
        parts: 4096,
    };
    let run = session(&mut empty, &full, &limits, &mut || false);
    assert_eq!(empty.to_map(), full.to_map());
    // About 600 KB in 64 KB pages: one round per page, no descent.
    assert!((9..=12).contains(&run.rounds), "{} rounds", run.rounds);
}

#[test]
#[ignore = "a figure for the README: run in release with --ignored --nocapture"]
fn ten_differences_between_two_million_key_replicas() {
    let keys = 1_000_000u64;
    let entries: Vec<_> = (0..keys)
        .map(|i| (Bytes::from(format!("world/{i:07}")), entry(i, "a", 64)))
        .collect();
    let mut a = indexed(&entries);
    let mut b = indexed(&entries);
    for i in 0..10u64 {
        let key = Bytes::from(format!("world/{:07}", i * 99_991));
        b.merge(key, entry(10_000_000 + i, "b", 64));
    }
    let full: usize = b.to_map().iter().map(|(k, e)| e.wire_size(k)).sum();
    let limits = PageLimits {
        bytes: 1024 * 1024,
        parts: 4096,
    };
    let started = std::time::Instant::now();
    let run = session(&mut a, &b, &limits, &mut || false);
    println!(
        "10 differences in {keys} keys: {} bytes in {} rounds ({:.4}% of a full transfer of {full} bytes), {:?}",
        run.bytes,
        run.rounds,
        run.bytes as f64 * 100.0 / full as f64,
        started.elapsed()
    );
    assert_eq!(a.to_map(), b.to_map());
    assert!(run.bytes * 100 < full);
}
