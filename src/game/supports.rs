//! What a record of a player's state says it relied on: its *supports*, carried in the
//! record's value after the number, as `|`-separated `name=value` fields. Owns the text form
//! only; `claims` decides whether the supports hold.
//!
//! | record | value | supports |
//! |---|---|---|
//! | `spent`, `gave/<id>` | `40\|o=45\|m=30\|r=<giver>:20` | `o`: the whole outflow (spent plus every gift) right after this change; `m`: the `mined` counted; `r` (repeated): a gift received that was counted, as the giver's `gave/<me>` |
//! | `hw/<kind>` | `3\|s=12` | `s`: the `spent` right after this change |
//! | `solved/<rank>` | `2\|w=<player>:90\|w=<player>:60` | `w` (repeated): the work on that epoch summed, as the player's `work/<rank>/<epoch>` |
//! | `work/<rank>/<epoch>` | `40\|p=2` | `p`: the promotion into that rank it relied on, as the epoch of the player's own `solved/<rank below>`; `p=0` at the first rank, which needs none |
//!
//! A value without `|` was written before supports existed (a *legacy* record); one whose
//! supports do not read is *malformed*. Player ids are peer ids (base58), so they hold none
//! of `|`, `=` or `:`.

use std::collections::BTreeMap;

/// What a `spent` or `gave/<id>` record counted: the balance check made in the same step.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Spending {
    /// Everything the player had paid out (spent plus every gift) right after the change.
    pub outflow: u64,
    /// The player's `mined` counted.
    pub mined: u64,
    /// The gifts received that were counted, by giver (each the giver's `gave/<me>`).
    pub received: BTreeMap<String, u64>,
}

impl Spending {
    /// The record's value: `count` followed by these supports.
    pub fn encode(&self, count: u64) -> String {
        let mut out = format!("{count}|o={}|m={}", self.outflow, self.mined);
        for (giver, n) in &self.received {
            out.push_str(&format!("|r={giver}:{n}"));
        }
        out
    }

    fn decode(fields: &[(&str, &str)]) -> Option<Spending> {
        let mut spending = Spending::default();
        let (mut outflow, mut mined) = (None, None);
        for &(name, value) in fields {
            match name {
                "o" => outflow = Some(value.parse().ok()?),
                "m" => mined = Some(value.parse().ok()?),
                "r" => {
                    let (giver, n) = pair(value)?;
                    spending.received.insert(giver, n);
                }
                _ => return None,
            }
        }
        spending.outflow = outflow?;
        spending.mined = mined?;
        Some(spending)
    }
}

/// A `hw/<kind>` record's value: `count` and the `spent` counted.
pub fn encode_hardware(count: u64, spent: u64) -> String {
    format!("{count}|s={spent}")
}

/// A `solved/<rank>` record's value: the epoch and the work summed, by player.
pub fn encode_solved(epoch: u64, work: &BTreeMap<String, u64>) -> String {
    let mut out = epoch.to_string();
    for (player, n) in work {
        out.push_str(&format!("|w={player}:{n}"));
    }
    out
}

/// A `work/<rank>/<epoch>` record's value: the steps done and the promotion into that rank
/// they relied on (the epoch of the player's `solved` record for the rank below, or
/// [`NO_PROMOTION`] at the first rank).
pub fn encode_work(count: u64, promoted: u64) -> String {
    format!("{count}|p={promoted}")
}

/// What a work record at the first rank names as its promotion: none (epochs start at 1).
pub const NO_PROMOTION: u64 = 0;

/// The supports every claim of one player names, by record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Supports {
    /// The `spent` record's.
    pub spent: Read<Spending>,
    /// Each `gave/<id>` record's, by recipient.
    pub gave: BTreeMap<String, Read<Spending>>,
    /// The `spent` each `hw/<kind>` record counted, by kind.
    pub hardware: BTreeMap<String, Read<u64>>,
    /// The work each `solved/<rank>` record summed, by rank, then by player.
    pub solved: BTreeMap<String, Read<BTreeMap<String, u64>>>,
    /// The promotion each `work/<rank>/<epoch>` record relied on, by (rank, epoch).
    pub work: BTreeMap<(String, u64), Read<u64>>,
}

/// The supports read from a value, by the kind of record it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Read<T> {
    /// No supports: written before they existed (or no record at all).
    #[default]
    Legacy,
    /// Supports that read.
    Named(T),
    /// Supports that do not read.
    Malformed,
}

/// Splits a value into its number (or other head) and its supports' fields.
pub fn split(value: &str) -> (&str, Option<Vec<(&str, &str)>>) {
    let mut parts = value.split('|');
    let head = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    if rest.is_empty() {
        return (head, None);
    }
    // A field without `=` gets an empty name, which no record accepts: malformed.
    let fields = rest
        .iter()
        .map(|f| f.split_once('=').unwrap_or(("", f)))
        .collect();
    (head, Some(fields))
}

/// The supports of a `spent` or `gave/<id>` record.
pub fn spending(fields: Option<&[(&str, &str)]>) -> Read<Spending> {
    read(fields, Spending::decode)
}

/// The `spent` a `hw/<kind>` record counted.
pub fn hardware(fields: Option<&[(&str, &str)]>) -> Read<u64> {
    read(fields, |fields| match fields {
        [("s", spent)] => spent.parse().ok(),
        _ => None,
    })
}

/// The promotion a `work/<rank>/<epoch>` record relied on.
pub fn work(fields: Option<&[(&str, &str)]>) -> Read<u64> {
    read(fields, |fields| match fields {
        [("p", epoch)] => epoch.parse().ok(),
        _ => None,
    })
}

/// The work a `solved/<rank>` record summed, by player.
pub fn solved(fields: Option<&[(&str, &str)]>) -> Read<BTreeMap<String, u64>> {
    read(fields, |fields| {
        fields
            .iter()
            .map(|&(name, value)| (name == "w").then(|| pair(value)).flatten())
            .collect()
    })
}

fn read<T>(
    fields: Option<&[(&str, &str)]>,
    decode: impl Fn(&[(&str, &str)]) -> Option<T>,
) -> Read<T> {
    match fields {
        None => Read::Legacy,
        Some(fields) => decode(fields).map_or(Read::Malformed, Read::Named),
    }
}

/// `<id>:<n>`.
fn pair(value: &str) -> Option<(String, u64)> {
    let (id, n) = value.rsplit_once(':')?;
    (!id.is_empty()).then(|| Some((id.to_owned(), n.parse().ok()?)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(value: &str) -> (String, Option<Vec<(String, String)>>) {
        let (head, fields) = split(value);
        let owned = fields.map(|f| {
            f.into_iter()
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .collect()
        });
        (head.to_owned(), owned)
    }

    fn spending_of(value: &str) -> Read<Spending> {
        let (_, f) = split(value);
        spending(f.as_deref())
    }

    #[test]
    fn supports_round_trip() {
        let s = Spending {
            outflow: 45,
            mined: 30,
            received: [("G1".to_owned(), 20), ("G2".to_owned(), 3)].into(),
        };
        let value = s.encode(40);
        assert_eq!(value, "40|o=45|m=30|r=G1:20|r=G2:3");
        assert_eq!(split(&value).0, "40");
        assert_eq!(spending_of(&value), Read::Named(s));
        let (head, f) = split("3|s=12");
        assert_eq!((head, hardware(f.as_deref())), ("3", Read::Named(12)));
        let work: BTreeMap<String, u64> = [("A".to_owned(), 90), ("B".to_owned(), 60)].into();
        let value = encode_solved(2, &work);
        let (head, f) = split(&value);
        assert_eq!((head, solved(f.as_deref())), ("2", Read::Named(work)));
        let value = encode_work(40, 2);
        let (head, f) = split(&value);
        assert_eq!((head, super::work(f.as_deref())), ("40", Read::Named(2)));
    }

    #[test]
    fn values_without_supports_are_legacy_and_bad_supports_malformed() {
        assert_eq!(fields("40"), ("40".to_owned(), None));
        assert_eq!(spending_of("40"), Read::Legacy);
        for bad in [
            "40|",
            "40|o=1",
            "40|o=x|m=1",
            "40|o=1|m=1|r=G",
            "40|o=1|m=1|q=2",
            "40|o=1|m=1|r=:4",
            "40|o=1|m=1|garbage",
        ] {
            assert_eq!(spending_of(bad), Read::Malformed, "{bad}");
        }
        let (_, f) = split("3|s=1|s=2");
        assert_eq!(hardware(f.as_deref()), Read::Malformed);
        let (_, f) = split("2|w=A:x");
        assert_eq!(solved(f.as_deref()), Read::Malformed);
        for bad in ["40|p=", "40|p=-1", "40|p=1|p=2", "40|w=A:1"] {
            let (_, f) = split(bad);
            assert_eq!(work(f.as_deref()), Read::Malformed, "{bad}");
        }
        assert_eq!(work(split("40").1.as_deref()), Read::Legacy);
    }
}
