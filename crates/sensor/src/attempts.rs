//! One-packet connection attempts, held compactly under a flood of them.
//!
//! Under a random-source SYN flood nearly every packet is a SYN from a source never seen
//! before, which a flow table would turn into a flow of its own and a record of its own.
//! Once such SYNs pass a rate, the flow table keeps each one here instead: 64 bytes in a ring
//! in arrival order, found by its source address. It counts the SYN at once into the
//! aggregate of its responder address and port (see [`Aggregates`]); an attempt that is
//! answered, or whose source sends again, is taken out and becomes a flow, and one neither
//! happens to within the attempt timeout is forgotten (as Zeek ends an unanswered attempt).

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use normwatch_model::{addr_key, Attempts, Cardinality};
use std::hash::BuildHasher;
use std::net::IpAddr;

/// One SYN held as an attempt.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Attempt {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub ts: u64,
    pub seq: u32,
    pub ip_len: u32,
    /// The generation of the aggregate it was counted in.
    pub agg: u32,
    pub sport: u16,
    pub dport: u16,
    pub flags: u8,
    pub v6: bool,
    /// Still held (not taken out, not expired).
    live: bool,
}

impl Attempt {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        src: [u8; 16],
        dst: [u8; 16],
        v6: bool,
        sport: u16,
        dport: u16,
        flags: u8,
        seq: u32,
        ip_len: u32,
        ts: u64,
        agg: u32,
    ) -> Self {
        Attempt {
            src,
            dst,
            ts,
            seq,
            ip_len,
            agg,
            sport,
            dport,
            flags,
            v6,
            live: true,
        }
    }
}

/// Attempts in arrival order (a ring of at most `cap`, a power of two), indexed by source
/// address: at most one per source, since a source that sends again is taken out.
#[derive(Debug)]
pub(crate) struct Held {
    ring: Vec<Attempt>,
    mask: usize,
    /// Positions (counted from the start) of the oldest attempt and one past the newest.
    head: u64,
    tail: u64,
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl Held {
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(2).next_power_of_two();
        Held {
            ring: Vec::new(),
            mask: cap - 1,
            head: 0,
            tail: 0,
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
        }
    }

    /// Attempts held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    #[inline]
    fn hash(&self, src: &[u8; 16]) -> u64 {
        self.hasher.hash_one(u128::from_ne_bytes(*src))
    }

    /// Holds `a`, whose source has no attempt held; the oldest goes when the ring is full.
    pub fn insert(&mut self, a: Attempt) {
        if (self.tail - self.head) as usize > self.mask {
            self.pop();
        }
        let pos = (self.tail as usize) & self.mask;
        if pos == self.ring.len() {
            self.ring.push(a);
        } else {
            self.ring[pos] = a;
        }
        self.tail += 1;
        let h = self.hash(&a.src);
        let (ring, hasher) = (&self.ring, &self.hasher);
        self.index.insert_unique(h, pos as u32, |&p| {
            hasher.hash_one(u128::from_ne_bytes(ring[p as usize].src))
        });
    }

    /// The attempt held for source `src`.
    #[inline]
    pub fn get(&self, src: &[u8; 16]) -> Option<&Attempt> {
        let ring = &self.ring;
        self.index
            .find(self.hash(src), |&p| ring[p as usize].src == *src)
            .map(|&p| &ring[p as usize])
    }

    /// Takes out the attempt held for source `src`.
    pub fn take(&mut self, src: &[u8; 16]) -> Option<Attempt> {
        let h = self.hash(src);
        let ring = &self.ring;
        let e = self
            .index
            .find_entry(h, |&p| ring[p as usize].src == *src)
            .ok()?;
        let (p, _) = e.remove();
        let a = &mut self.ring[p as usize];
        a.live = false;
        Some(*a)
    }

    /// Forgets the attempts that arrived before `before` (oldest first, as they arrived).
    pub fn expire(&mut self, before: u64) {
        while self.head < self.tail && self.ring[(self.head as usize) & self.mask].ts < before {
            self.pop();
        }
        if self.head == self.tail && self.ring.len() > 1024 {
            // A flood is over: its ring goes back to the allocator.
            self.ring = Vec::new();
            self.index = HashTable::new();
            self.head = 0;
            self.tail = 0;
        }
    }

    fn pop(&mut self) {
        let pos = (self.head as usize) & self.mask;
        self.head += 1;
        let a = self.ring[pos];
        if a.live {
            let h = self.hash(&a.src);
            if let Ok(e) = self.index.find_entry(h, |&p| p as usize == pos) {
                e.remove();
            }
        }
    }

    /// Forgets every attempt (each was counted in an aggregate already).
    pub fn clear(&mut self) {
        *self = Held::new(self.mask + 1);
    }

    pub fn memory_bytes(&self) -> usize {
        self.ring.capacity() * size_of::<Attempt>() + self.index.capacity() * 5
    }
}

/// Bits of each generation of [`Known`].
const KNOWN_BITS: usize = 1 << 20;

/// Sources known to send more than one packet (an attempt of theirs became a flow): their
/// next SYNs are flows at once. A bit per hashed address in two generations (128 KiB each),
/// the older forgotten each `every` of event time; a collision makes a flow of an attempt,
/// never the other way round.
#[derive(Debug)]
pub(crate) struct Known {
    gens: [Vec<u64>; 2],
    since: u64,
    every: u64,
}

impl Known {
    pub fn new(every: u64) -> Self {
        Known {
            gens: [Vec::new(), Vec::new()],
            since: 0,
            every,
        }
    }

    #[inline]
    fn bit(src: &[u8; 16]) -> usize {
        let x = u128::from_ne_bytes(*src);
        let h =
            ((x as u64) ^ ((x >> 64) as u64).rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> (64 - KNOWN_BITS.trailing_zeros())) as usize
    }

    pub fn mark(&mut self, src: &[u8; 16]) {
        if self.gens[0].is_empty() {
            self.gens[0] = vec![0; KNOWN_BITS / 64];
        }
        let b = Self::bit(src);
        self.gens[0][b / 64] |= 1 << (b % 64);
    }

    #[inline]
    pub fn contains(&self, src: &[u8; 16]) -> bool {
        let b = Self::bit(src);
        self.gens
            .iter()
            .any(|g| g.get(b / 64).is_some_and(|w| w & (1 << (b % 64)) != 0))
    }

    /// Forgets the older generation once `every` has passed since the last time.
    pub fn rotate(&mut self, now: u64) {
        if now >= self.since.saturating_add(self.every) {
            self.since = now;
            let newer = std::mem::take(&mut self.gens[0]);
            self.gens[1] = newer;
        }
    }
}

/// What attempts are aggregated by: responder address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct AggKey {
    pub dst: [u8; 16],
    pub dport: u16,
    pub v6: bool,
}

/// Attempts to one responder address and port within one event second.
#[derive(Debug)]
pub(crate) struct Agg {
    pub key: AggKey,
    /// The protected asset (the flow table's index of it), or none.
    pub asset: u32,
    pub gen: u32,
    pub sec: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub count: u64,
    pub ip_bytes: u64,
    pub flags: u8,
    pub sources: Cardinality,
    pub sample: Vec<IpAddr>,
}

impl Agg {
    /// The record's `attempts`.
    pub fn attempts(self) -> Attempts {
        Attempts {
            count: self.count,
            sources: self.sources,
            sample: self.sample,
        }
    }
}

/// The aggregates of attempts being counted, at most `max` at once.
#[derive(Debug)]
pub(crate) struct Aggregates {
    open: Vec<Agg>,
    index: HashMap<AggKey, u32>,
    max: usize,
    next_gen: u32,
    rng: u64,
}

/// Why an attempt could not be counted.
pub(crate) enum Counted {
    /// In the aggregate of this generation.
    In(u32),
    /// This aggregate (of an earlier second) was closed first: emit it, then count again.
    Closed(Agg),
    /// Every aggregate is taken: the attempt is a flow after all.
    Full,
}

impl Aggregates {
    pub fn new(max: usize) -> Self {
        Aggregates {
            open: Vec::new(),
            index: HashMap::new(),
            max,
            next_gen: 1,
            rng: 0x2545_f491_4f6c_dd1d,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Counts one attempt from `src` of `ip_len` bytes at `ts` into the aggregate of `key`.
    #[allow(clippy::too_many_arguments)]
    pub fn count(
        &mut self,
        key: AggKey,
        asset: u32,
        src: IpAddr,
        flags: u8,
        ip_len: u32,
        ts: u64,
        sec: u64,
    ) -> Counted {
        let i = match self.index.get(&key) {
            Some(&i) if self.open[i as usize].sec != sec => {
                return Counted::Closed(self.remove(i as usize));
            }
            Some(&i) => i as usize,
            None if self.open.len() >= self.max => return Counted::Full,
            None => {
                let gen = self.next_gen;
                self.next_gen = self.next_gen.wrapping_add(1).max(1);
                self.index.insert(key, self.open.len() as u32);
                self.open.push(Agg {
                    key,
                    asset,
                    gen,
                    sec,
                    first_ns: ts,
                    last_ns: ts,
                    count: 0,
                    ip_bytes: 0,
                    flags: 0,
                    sources: Cardinality::default(),
                    sample: Vec::new(),
                });
                self.open.len() - 1
            }
        };
        // xorshift64 for the reservoir: deterministic, so a replay samples the same sources.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let r = self.rng;
        let a = &mut self.open[i];
        a.first_ns = a.first_ns.min(ts);
        a.last_ns = a.last_ns.max(ts);
        a.count += 1;
        a.ip_bytes += u64::from(ip_len);
        a.flags |= flags;
        a.sources.insert(addr_key(src));
        // Reservoir sampling: every attempt so far is in the sample with the same chance.
        if a.sample.len() < Attempts::SAMPLE {
            a.sample.push(src);
        } else {
            let j = (r % a.count) as usize;
            if j < Attempts::SAMPLE {
                a.sample[j] = src;
            }
        }
        Counted::In(a.gen)
    }

    /// Takes out the aggregate of `key` if it is still of generation `gen`.
    pub fn take(&mut self, key: &AggKey, gen: u32) -> Option<Agg> {
        let i = *self.index.get(key)? as usize;
        (self.open[i].gen == gen).then(|| self.remove(i))
    }

    fn remove(&mut self, i: usize) -> Agg {
        let a = self.open.swap_remove(i);
        self.index.remove(&a.key);
        if let Some(moved) = self.open.get(i) {
            self.index.insert(moved.key, i as u32);
        }
        a
    }

    /// Takes out every aggregate, oldest first.
    pub fn drain(&mut self) -> impl Iterator<Item = Agg> + '_ {
        self.index.clear();
        self.open.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(n: u32, ts: u64) -> Attempt {
        let mut src = [0u8; 16];
        src[12..].copy_from_slice(&n.to_be_bytes());
        Attempt::new(src, [9; 16], false, 1024, 80, 2, n, 40, ts, 1)
    }

    #[test]
    fn held_attempts_are_found_by_source_taken_once_and_expire_in_arrival_order() {
        let mut h = Held::new(8);
        for n in 0..6 {
            h.insert(at(n, u64::from(n) * 10));
        }
        assert_eq!(h.len(), 6);
        assert_eq!(h.get(&at(3, 0).src).map(|a| a.seq), Some(3));
        assert_eq!(h.take(&at(3, 0).src).map(|a| a.ts), Some(30));
        assert!(h.take(&at(3, 0).src).is_none(), "taken once");
        // Arrived before 25: 0, 1, 2.
        h.expire(25);
        assert_eq!(h.len(), 2);
        assert!(h.get(&at(2, 0).src).is_none());
        assert!(h.get(&at(4, 0).src).is_some());
    }

    #[test]
    fn known_sources_are_remembered_for_one_to_two_periods() {
        let mut k = Known::new(10);
        let a = at(1, 0).src;
        assert!(!k.contains(&a));
        k.mark(&a);
        assert!(k.contains(&a));
        k.rotate(10);
        assert!(k.contains(&a), "the older generation");
        k.rotate(15);
        assert!(k.contains(&a));
        k.rotate(20);
        assert!(!k.contains(&a));
        assert!(!k.contains(&at(2, 0).src));
    }

    #[test]
    fn a_full_ring_forgets_its_oldest() {
        let mut h = Held::new(4);
        for n in 0..10 {
            h.insert(at(n, u64::from(n)));
            assert!(h.len() <= 4);
        }
        assert!(h.get(&at(5, 0).src).is_none());
        for n in 6..10 {
            assert!(h.get(&at(n, 0).src).is_some(), "{n}");
        }
    }

    #[test]
    fn aggregates_count_sample_fairly_and_close_at_the_second() {
        let mut g = Aggregates::new(2);
        let key = AggKey {
            dst: [9; 16],
            dport: 80,
            v6: false,
        };
        let src = |n: u32| IpAddr::from(std::net::Ipv4Addr::from(n));
        for n in 0..10_000u32 {
            assert!(matches!(
                g.count(key, 0, src(n), 2, 40, 5_000 + u64::from(n), 5),
                Counted::In(_)
            ));
        }
        // Another key fits; a third does not.
        let other = AggKey { dport: 81, ..key };
        assert!(matches!(
            g.count(other, 0, src(1), 2, 40, 1, 5),
            Counted::In(_)
        ));
        let third = AggKey { dport: 82, ..key };
        assert!(matches!(
            g.count(third, 0, src(1), 2, 40, 1, 5),
            Counted::Full
        ));
        // The next second closes the first second's aggregate.
        let Counted::Closed(a) = g.count(key, 0, src(1), 2, 40, 1, 6) else {
            panic!("closed");
        };
        assert_eq!((a.count, a.ip_bytes), (10_000, 400_000));
        let est = a.sources.estimate();
        assert!((9_000.0..11_000.0).contains(&est), "{est}");
        assert_eq!(a.sample.len(), Attempts::SAMPLE);
        // Fair: the sample reaches across the whole second, not its first attempts only.
        let late = a
            .sample
            .iter()
            .filter(|s| matches!(s, IpAddr::V4(v) if u32::from(*v) >= 5_000))
            .count();
        assert!(
            (16..=48).contains(&late),
            "{late} of 64 from the second half"
        );
        assert_eq!(g.drain().count(), 1);
        assert!(g.is_empty());
    }
}
