//! The simple digest behind bootstrap and anti-entropy, as pure functions over a replica's map.
//!
//! The requester cuts its replica into key ranges of a few dozen keys and sends, per range, a
//! count and an order-independent fingerprint of its (key, version) pairs. The responder sends
//! back every entry of each range whose digest differs from its own, one bounded page at a
//! time, resuming from a cursor. A new node sends one empty range and so receives everything.
//! Range-based set reconciliation replaces this later; nothing here touches the network.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

use super::wire::{PAGE_TARGET_BYTES, RangeDigest, entry_bytes};
use crate::store::{Entry, Key, KeyedEntry};

/// Fewest keys per digest range.
const MIN_RANGE_KEYS: usize = 64;

/// Most ranges in one digest (bounds a request's size for very large worlds).
const MAX_RANGES: usize = 8192;

/// Entries a responder scans for one page at most, so one request never stalls its gateway.
const SCAN_LIMIT_ENTRIES: usize = 50_000;

/// One page of a sync answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// Entries from ranges that differ.
    pub entries: Vec<KeyedEntry>,
    /// Where the next request resumes (inclusive); `None` when the exchange is done.
    pub next: Option<Bytes>,
}

/// Fingerprint of one (key, version) pair: FNV-1a over its fields, then a final mix so that
/// summing fingerprints stays well distributed.
pub fn entry_fingerprint(key: &[u8], entry: &Entry) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let version = &entry.version;
    let mut hash = OFFSET;
    let parts: [&[u8]; 6] = [
        &(key.len() as u32).to_le_bytes(),
        key,
        &version.millis.to_le_bytes(),
        &version.counter.to_le_bytes(),
        version.node.as_str().as_bytes(),
        &version.actor.to_le_bytes(),
    ];
    for part in parts {
        for byte in part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    // splitmix64's finaliser.
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// The digest of a whole replica: ranges in key order, the first starting at the empty key.
pub fn digest(map: &BTreeMap<Key, Entry>) -> Vec<RangeDigest> {
    let per_range = MIN_RANGE_KEYS.max(map.len() / MAX_RANGES + 1);
    let mut ranges = vec![RangeDigest {
        lower: Bytes::new(),
        count: 0,
        fingerprint: 0,
    }];
    for (index, (key, entry)) in map.iter().enumerate() {
        if index > 0 && index % per_range == 0 {
            ranges.push(RangeDigest {
                lower: key.clone(),
                count: 0,
                fingerprint: 0,
            });
        }
        if let Some(range) = ranges.last_mut() {
            range.count += 1;
            range.fingerprint = range
                .fingerprint
                .wrapping_add(entry_fingerprint(key, entry));
        }
    }
    ranges
}

/// The ranges a request resuming at `from` still needs (the one holding `from`, and later).
pub fn ranges_from(ranges: &[RangeDigest], from: Option<&Bytes>) -> Vec<RangeDigest> {
    let Some(from) = from else {
        return ranges.to_vec();
    };
    let first = ranges
        .partition_point(|range| range.lower <= *from)
        .saturating_sub(1);
    ranges[first..].to_vec()
}

/// Answers one request: entries of `map` in ranges whose digest differs from `ranges`, from
/// `from` on, up to about [`PAGE_TARGET_BYTES`].
pub fn serve_page(
    map: &BTreeMap<Key, Entry>,
    ranges: &[RangeDigest],
    from: Option<&Bytes>,
) -> Page {
    // Whatever the requester sent, its digest must cover every key: keys before its first
    // range count as a range it has nothing in.
    let mut ranges = ranges.to_vec();
    if ranges.first().is_none_or(|first| !first.lower.is_empty()) {
        ranges.insert(
            0,
            RangeDigest {
                lower: Bytes::new(),
                count: 0,
                fingerprint: 0,
            },
        );
    }
    // An honest digest is in strictly increasing key order; keep only ranges that are, so each
    // key is scanned once per request. A crafted digest repeating the same span over and over
    // would otherwise rescan (and resend) it once per repetition: thousands of full scans of
    // the gateway's replica for one small request.
    ranges.dedup_by(|later, earlier| later.lower <= earlier.lower);
    let ranges = ranges_from(&ranges, from);
    let mut page = Page::default();
    let mut page_bytes = 0;
    let mut scanned = 0;
    for (index, range) in ranges.iter().enumerate() {
        let upper = ranges.get(index + 1).map(|next| &next.lower);
        let bounds = (
            Bound::Included(&range.lower),
            upper.map_or(Bound::Unbounded, Bound::Excluded),
        );
        if upper.is_some_and(|upper| *upper <= range.lower) {
            continue; // Cannot happen after the dedup above; `BTreeMap::range` would panic.
        }
        let (count, fingerprint) =
            map.range::<Bytes, _>(bounds)
                .fold((0u32, 0u64), |(count, sum), (key, entry)| {
                    (count + 1, sum.wrapping_add(entry_fingerprint(key, entry)))
                });
        scanned += count as usize;
        if (count, fingerprint) != (range.count, range.fingerprint) {
            let start = match from {
                Some(from) if *from > range.lower => from,
                _ => &range.lower,
            };
            if upper.is_some_and(|upper| start >= upper) {
                continue; // A cursor past this range (a malformed request): nothing to send.
            }
            let emit = (
                Bound::Included(start),
                upper.map_or(Bound::Unbounded, Bound::Excluded),
            );
            for (key, entry) in map.range::<Bytes, _>(emit) {
                let keyed = (key.clone(), entry.clone());
                let bytes = entry_bytes(&keyed);
                if !page.entries.is_empty() && page_bytes + bytes > PAGE_TARGET_BYTES {
                    page.next = Some(key.clone());
                    return page;
                }
                page_bytes += bytes;
                page.entries.push(keyed);
            }
        }
        if scanned >= SCAN_LIMIT_ENTRIES
            && let Some(upper) = upper
        {
            page.next = Some(upper.clone());
            return page;
        }
    }
    page
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::store::entry::merge;
    use crate::store::{NodeId, Version};

    fn entry(millis: u64, node: &str, value: &str) -> Entry {
        Entry::value(
            Version {
                millis,
                counter: 0,
                node: NodeId::new(node),
                actor: 0,
            },
            Bytes::copy_from_slice(value.as_bytes()),
        )
    }

    fn map_of(items: &[(String, u64, &str)]) -> BTreeMap<Key, Entry> {
        items
            .iter()
            .map(|(key, millis, node)| (Bytes::from(key.clone()), entry(*millis, node, key)))
            .collect()
    }

    /// Runs a whole exchange: `requester` pulls from `responder` page by page.
    fn pull(requester: &mut BTreeMap<Key, Entry>, responder: &BTreeMap<Key, Entry>) -> usize {
        let ranges = digest(requester);
        let mut from = None;
        let mut pages = 0;
        loop {
            pages += 1;
            let page = serve_page(
                responder,
                &ranges_from(&ranges, from.as_ref()),
                from.as_ref(),
            );
            for (key, entry) in page.entries {
                merge(requester, key, entry);
            }
            match page.next {
                Some(next) => from = Some(next),
                None => return pages,
            }
        }
    }

    #[test]
    fn an_empty_node_receives_everything_in_bounded_pages() {
        let responder: BTreeMap<Key, Entry> = (0..5000)
            .map(|i| {
                let key = Bytes::from(format!("k{i:05}"));
                (key, entry(1, "a", &"v".repeat(200)))
            })
            .collect();
        let mut requester = BTreeMap::new();
        let pages = pull(&mut requester, &responder);
        assert_eq!(requester, responder);
        assert!(pages > 2, "{pages} pages");
    }

    #[test]
    fn replicas_in_sync_exchange_nothing() {
        let items: Vec<_> = (0..1000).map(|i| (format!("k{i}"), 5, "a")).collect();
        let map = map_of(&items);
        let page = serve_page(&map, &digest(&map), None);
        assert_eq!(page, Page::default());
    }

    #[test]
    fn only_differing_ranges_are_sent() {
        let items: Vec<_> = (0..1000).map(|i| (format!("k{i:04}"), 5, "a")).collect();
        let requester = map_of(&items);
        let mut responder = requester.clone();
        responder.insert(Bytes::from("k0500"), entry(9, "b", "newer"));
        let page = serve_page(&responder, &digest(&requester), None);
        assert!(
            page.entries.len() <= MIN_RANGE_KEYS,
            "{}",
            page.entries.len()
        );
        assert!(page.entries.iter().any(|(k, _)| k == "k0500"));
    }

    #[test]
    fn ranges_out_of_order_send_each_entry_once() {
        let items: Vec<_> = (0..100).map(|i| (format!("k{i:03}"), 5, "a")).collect();
        let map = map_of(&items);
        // A crafted digest: the same span again and again, each time claiming it is empty.
        let ranges: Vec<_> = (0..2000)
            .map(|i| RangeDigest {
                lower: Bytes::from(if i % 2 == 0 { "" } else { "z" }),
                count: 0,
                fingerprint: 0,
            })
            .collect();
        let page = serve_page(&map, &ranges, None);
        let mut keys: Vec<_> = page.entries.iter().map(|(key, _)| key.clone()).collect();
        let sent = keys.len();
        keys.dedup();
        assert_eq!(sent, keys.len(), "entries sent more than once");
        assert_eq!(keys.len(), map.len());
    }

    proptest! {
        #[test]
        fn malformed_requests_never_panic(
            keys in prop::collection::vec("[a-c]{0,3}", 0..30),
            lowers in prop::collection::vec("[a-c]{0,3}", 0..10),
            from in prop::option::of("[a-c]{0,3}"),
        ) {
            let items: Vec<_> = keys.into_iter().filter(|k| !k.is_empty()).map(|k| (k, 1, "a")).collect();
            let map = map_of(&items);
            let ranges: Vec<_> = lowers
                .into_iter()
                .map(|lower| RangeDigest { lower: Bytes::from(lower), count: 1, fingerprint: 7 })
                .collect();
            let from = from.map(Bytes::from);
            let _ = serve_page(&map, &ranges, from.as_ref());
        }

        #[test]
        fn pulling_both_ways_converges(
            a in prop::collection::vec(("[a-d]{1,3}", 0u64..4), 0..200),
            b in prop::collection::vec(("[a-d]{1,3}", 0u64..4), 0..200),
        ) {
            let a: Vec<_> = a.into_iter().map(|(k, m)| (k, m, "a")).collect();
            let b: Vec<_> = b.into_iter().map(|(k, m)| (k, m, "b")).collect();
            let mut left = map_of(&a);
            let mut right = map_of(&b);
            let right_before = right.clone();
            pull(&mut left, &right_before);
            pull(&mut right, &left);
            prop_assert_eq!(left, right);
        }
    }
}
