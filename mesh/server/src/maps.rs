//! The hash map of the per-message lookups.
//!
//! std's SipHash-1-3 costs more than the lookup itself for the short keys here (team and agent
//! names, socket ids, stream keys); several lookups per relayed message made it 4% of a
//! replica's instructions with persistence on. foldhash is several times cheaper, and each map
//! gets its own random seed. The keys come from signed tokens and from the server itself, so a
//! client cannot pick the many colliding keys a hash-flooding attack needs.

/// A `HashMap` hashing with foldhash, seeded at random per map.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A `HashSet` hashing as [`FastMap`] does.
pub(crate) type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
