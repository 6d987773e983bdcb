//! Chains split across agents: each agent of a group of `M` runs the chains that hash to its
//! index, by rendezvous (highest random weight) hashing. Going from `M` to `M + 1` shards moves
//! only the chains the new shard wins, about `1 / (M + 1)` of them, and every agent computes the
//! same owner for a chain from its name alone, with no coordination.
//!
//! The hash is ours (FNV-1a, then a SplitMix64 finalizer per shard) rather than std's
//! `DefaultHasher`, whose algorithm may change between Rust releases: two agents built by
//! different compilers must agree on every owner.

use std::fmt;

/// One shard of a group: `index` of `count`, counted from 0 (`"0/3"`, `"1/3"`, `"2/3"`), so a
/// Kubernetes StatefulSet ordinal is the index as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// Shard counts above this are refused: a group that large is a typo.
pub const MAX_SHARDS: u32 = 1024;

impl Shard {
    /// The whole set of chains: one agent, no sharding.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// `"N/M"`, with `N` from 0 to `M - 1`. `N` may also be a StatefulSet pod name that ends
    /// in its ordinal (`"hopwatch-2/3"`), so `$(POD_NAME)/3` works as it is.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let usage = || format!("{text:?} is not a shard such as \"0/3\" (index/count, from 0)");
        let (index, count) = text.trim().split_once('/').ok_or_else(usage)?;
        // `hopwatch-2`: a pod name, its ordinal after the last `-`.
        let index = match index.rsplit_once('-') {
            Some((name, ordinal)) if !name.is_empty() => ordinal,
            Some(_) => return Err(usage()),
            None => index,
        };
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
            return Err(usage());
        }
        let index: u32 = index.parse().map_err(|_| usage())?;
        let count: u32 = count.trim().parse().map_err(|_| usage())?;
        if count == 0 || count > MAX_SHARDS {
            return Err(format!(
                "{text:?}: the shard count must be 1 to {MAX_SHARDS}"
            ));
        }
        if index >= count {
            return Err(format!(
                "{text:?}: shard index {index} is not below the count {count} (indexes start at 0)"
            ));
        }
        Ok(Shard { index, count })
    }

    /// Whether this shard runs the chain named `chain`.
    pub fn owns(&self, chain: &str) -> bool {
        owner(chain, self.count) == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format!("{}/{}", self.index, self.count))
    }
}

/// The shard of `count` that runs `chain`: the one with the highest weight for it.
pub fn owner(chain: &str, count: u32) -> u32 {
    let key = fnv1a(chain.as_bytes());
    (0..count.max(1))
        .max_by_key(|&i| (mix(key ^ mix(u64::from(i) + 1)), std::cmp::Reverse(i)))
        .unwrap_or(0)
}

/// FNV-1a, 64 bits (www.isthe.com/chongo/tech/comp/fnv).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64's finalizer: spreads FNV's weak low bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_indexes_from_zero_and_statefulset_names() {
        assert_eq!(Shard::parse("0/3"), Ok(Shard { index: 0, count: 3 }));
        assert_eq!(
            Shard::parse("hopwatch-2/3"),
            Ok(Shard { index: 2, count: 3 })
        );
        assert_eq!(Shard::parse("0/1"), Ok(Shard::WHOLE));
        for bad in [
            "3/3",
            "1/0",
            "x/3",
            "-1/3",
            "1",
            "/3",
            "hopwatch/3",
            "1/2000",
        ] {
            assert!(Shard::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(Shard::parse("3/3").unwrap_err().contains("start at 0"));
    }

    #[test]
    fn every_chain_has_one_owner() {
        for count in 1..=8 {
            for n in 0..100 {
                let name = format!("chain-{n}");
                let owners = (0..count)
                    .filter(|&i| Shard { index: i, count }.owns(&name))
                    .count();
                assert_eq!(owners, 1, "{name} of {count}");
            }
        }
    }

    /// The hash is part of the contract between agents of different builds: pinned.
    #[test]
    fn the_hash_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(owner("orders-prod", 1), 0);
        let owners: Vec<u32> = (0..6).map(|i| owner(&format!("chain-{i}"), 3)).collect();
        assert_eq!(owners, [0, 0, 1, 2, 1, 1]);
    }
}
