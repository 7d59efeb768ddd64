//! The commands whose replies grow with the world: `LIST prefix [AFTER key] [COUNT n]` and
//! `KEYS prefix*`, and the rule every large reply follows: it is sized before it is built, a
//! reply over the client's output limit is refused, and room is made for it in the node's
//! output budget first.

use std::ops::Bound;

use bytes::Bytes;

use super::clients::ClientHandle;
use super::commands::Flow;
use super::resp::{Reply, array_header_bytes, bulk_reply_bytes};
use super::server::NodeInfo;
use crate::store::actor::Actor;

/// Entries in a page when `LIST` is given `AFTER` but no `COUNT`.
pub const DEFAULT_PAGE_ENTRIES: usize = 1000;

/// Most entries one page may hold.
pub const MAX_PAGE_ENTRIES: usize = 100_000;

/// Whether a large reply may be built now.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Build it.
    Build,
    /// Refused with an error reply (larger than the client's output limit).
    Refused,
    /// Run the command again in a moment, once closed clients freed their output.
    Wait,
}

impl Admission {
    /// What the connection loop does next.
    pub fn flow(&self) -> Flow {
        match self {
            Admission::Wait => Flow::Retry,
            Admission::Build | Admission::Refused => Flow::Continue,
        }
    }
}

/// Checks that a reply of `bytes` fits the client's output limit and makes room for it in
/// the node's budget; otherwise writes `ERR reply too large: <advice>`.
pub fn admit(
    node: &NodeInfo,
    client: &ClientHandle,
    bytes: usize,
    advice: &str,
    reply: &mut Reply<'_>,
) -> Admission {
    if bytes > node.max_reply_bytes {
        reply.error(&format!("ERR reply too large: {advice}"));
        return Admission::Refused;
    }
    if !client.make_room_for(bytes) {
        return Admission::Wait;
    }
    reply.0.reserve(bytes);
    Admission::Build
}

/// How `LIST` was asked.
#[derive(Debug, PartialEq, Eq)]
struct ListRequest<'a> {
    /// Keys must start with this.
    prefix: &'a [u8],
    /// Resume after this key (paged).
    after: Option<&'a [u8]>,
    /// Most entries in the page; `None` without paging.
    count: Option<usize>,
}

fn parse_list(args: &[Bytes]) -> Result<ListRequest<'_>, &'static str> {
    let syntax = "ERR syntax error: LIST prefix [AFTER key] [COUNT n]";
    let mut request = ListRequest {
        prefix: &args[0],
        after: None,
        count: None,
    };
    let mut options = args[1..].chunks(2);
    for option in &mut options {
        let [name, value] = option else {
            return Err(syntax);
        };
        match name.to_ascii_uppercase().as_slice() {
            b"AFTER" => request.after = Some(value),
            b"COUNT" => {
                let count = std::str::from_utf8(value)
                    .ok()
                    .and_then(|text| text.parse::<usize>().ok())
                    .filter(|count| *count > 0)
                    .ok_or("ERR COUNT must be a positive number")?;
                request.count = Some(count.min(MAX_PAGE_ENTRIES));
            }
            _ => return Err(syntax),
        }
    }
    if request.after.is_some() && request.count.is_none() {
        request.count = Some(DEFAULT_PAGE_ENTRIES);
    }
    Ok(request)
}

/// `LIST prefix`: a flat array key, value, ... of the live keys under `prefix`, in key order.
/// With `AFTER key` or `COUNT n` it is one page, and the array ends with the key to give as
/// `AFTER` for the next page, or nil after the last page.
pub fn list(
    actor: &Actor,
    node: &NodeInfo,
    client: &ClientHandle,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Flow {
    let request = match parse_list(args) {
        Ok(request) => request,
        Err(message) => {
            reply.error(message);
            return Flow::Continue;
        }
    };
    let replica = actor.replica();
    let start = match request.after {
        Some(after) if after >= request.prefix => Bound::Excluded(after),
        _ => Bound::Included(request.prefix),
    };
    let live = replica.live_from(start, request.prefix);
    let pair_bytes =
        |key: &[u8], value: &[u8]| bulk_reply_bytes(key.len()) + bulk_reply_bytes(value.len());

    let Some(count) = request.count else {
        // One reply with everything: sized first, refused if too large.
        let (pairs, bytes) = live.clone().fold((0, 0), |(n, bytes), (k, v)| {
            (n + 1, bytes + pair_bytes(k, v))
        });
        let bytes = bytes + array_header_bytes(pairs * 2);
        let advice = "use a narrower prefix, or LIST prefix COUNT n";
        let admission = admit(node, client, bytes, advice, reply);
        if admission == Admission::Build {
            reply.array(pairs * 2);
            for (key, value) in live {
                reply.bulk(key);
                reply.bulk(value);
            }
        }
        return admission.flow();
    };
    // A page: at most `count` entries and half the output limit (at least one entry).
    let page_bytes = node.max_reply_bytes / 2;
    let mut live = live.peekable();
    let mut page = Vec::new();
    let mut bytes = 0;
    while let Some((key, value)) = live.peek() {
        let size = pair_bytes(key, value);
        if page.len() == count || (!page.is_empty() && bytes + size > page_bytes) {
            break;
        }
        bytes += size;
        page.push((*key, *value));
        live.next();
    }
    let resume = live.peek().and(page.last().map(|(key, _)| *key));
    let bytes = bytes
        + array_header_bytes(page.len() * 2 + 1)
        + resume.map_or(5, |k| bulk_reply_bytes(k.len()));
    let admission = admit(node, client, bytes, "use a smaller COUNT", reply);
    if admission != Admission::Build {
        return admission.flow();
    }
    reply.array(page.len() * 2 + 1);
    for (key, value) in &page {
        reply.bulk(key);
        reply.bulk(value);
    }
    match resume {
        Some(key) => reply.bulk(key),
        None => reply.null(),
    }
    Flow::Continue
}

/// `KEYS pattern`, for prefix patterns (`p/*`, `*`) and exact keys only.
pub fn keys(
    actor: &Actor,
    node: &NodeInfo,
    client: &ClientHandle,
    pattern: &[u8],
    reply: &mut Reply<'_>,
) -> Flow {
    let (prefix, exact) = match pattern.split_last() {
        Some((b'*', prefix)) => (prefix, false),
        _ => (pattern, true),
    };
    if prefix
        .iter()
        .any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
    {
        reply.error("ERR only prefix patterns (prefix*) are supported");
        return Flow::Continue;
    }
    let replica = actor.replica();
    if exact {
        match replica.get(prefix) {
            Some(_) => {
                reply.array(1);
                reply.bulk(prefix);
            }
            None => reply.array(0),
        }
        return Flow::Continue;
    }
    let mut found = 0;
    let mut bytes = 0;
    replica.scan_prefix(prefix, |key, _| {
        found += 1;
        bytes += bulk_reply_bytes(key.len());
    });
    let bytes = bytes + array_header_bytes(found);
    let admission = admit(node, client, bytes, "use a narrower prefix", reply);
    if admission == Admission::Build {
        reply.array(found);
        replica.scan_prefix(prefix, |key, _| reply.bulk(key));
    }
    admission.flow()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn list_options_parse_in_any_order_and_bad_ones_are_errors() {
        let plain = args(&["p/"]);
        assert_eq!(
            parse_list(&plain).unwrap(),
            ListRequest {
                prefix: b"p/",
                after: None,
                count: None
            }
        );
        let both = args(&["p/", "count", "5", "AFTER", "p/a"]);
        assert_eq!(
            parse_list(&both).unwrap(),
            ListRequest {
                prefix: b"p/",
                after: Some(b"p/a"),
                count: Some(5)
            }
        );
        let after_only = args(&["p/", "AFTER", "p/a"]);
        assert_eq!(
            parse_list(&after_only).unwrap().count,
            Some(DEFAULT_PAGE_ENTRIES)
        );
        let huge = args(&["p/", "COUNT", "99999999999"]);
        assert_eq!(parse_list(&huge).unwrap().count, Some(MAX_PAGE_ENTRIES));
        for bad in [
            &["p/", "COUNT"][..],
            &["p/", "COUNT", "0"],
            &["p/", "COUNT", "-1"],
            &["p/", "LIMIT", "3"],
        ] {
            assert!(parse_list(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
