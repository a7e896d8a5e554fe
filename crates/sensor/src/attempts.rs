//! One-packet connection attempts, held compactly under a flood of them.
//!
//! Under a random-source SYN flood nearly every packet is a SYN from a source never seen
//! before, which a flow table would turn into a flow of its own and a record of its own.
//! Once such SYNs pass a rate, the flow table keeps each one here instead: 64 bytes in a ring
//! in arrival order, found by its source address. It counts the SYN at once into the
//! aggregate of its responder address and port (see [`Aggregates`]); an attempt that is
//! answered, or whose source sends again, is taken out and becomes a flow, and one neither
//! happens to within the attempt timeout is forgotten (as Zeek ends an unanswered attempt).

use crate::decode::Packet;
use hashbrown::{DefaultHashBuilder, HashMap};
use normwatch_model::{addr_key, Attempts, Cardinality, Span};
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
    pub ttl: u8,
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
        ttl: u8,
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
            ttl,
            v6,
            live: true,
        }
    }
}

/// Attempts in arrival order (a ring of at most `cap`, a power of two), found by source
/// address through a set-associative index: a cache line of eight entries per hashed source,
/// each a tag of the source's hash and the attempt's position in the ring. One random memory
/// access finds an attempt or tells it is not held; an entry whose attempt has left the ring
/// is simply reused, so expiry costs no index work. When all eight entries of a line hold
/// attempts still in the ring, the oldest is forgotten early (as expiry would, a little
/// sooner). At most one attempt per source: a source that sends again is taken out.
#[derive(Debug)]
pub(crate) struct Held {
    ring: Vec<Slot>,
    mask: usize,
    /// Positions (counted from the start) of the oldest attempt and one past the newest.
    head: u64,
    tail: u64,
    /// `WAYS` entries per line: `tag << 32 | position` (`0`: empty).
    lines: Vec<Line>,
    hasher: DefaultHashBuilder,
}

/// Entries per index line (one cache line).
const WAYS: usize = 8;

/// One attempt in the ring, aligned so that it is one cache line, not parts of two.
#[derive(Clone, Copy, Debug)]
#[repr(align(64))]
struct Slot(Attempt);

/// One line of the index, aligned so that it is one cache line, not parts of two.
#[derive(Clone, Copy, Debug)]
#[repr(align(64))]
struct Line([u64; WAYS]);

impl Held {
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(WAYS).next_power_of_two();
        Held {
            ring: Vec::new(),
            mask: cap - 1,
            head: 0,
            tail: 0,
            lines: Vec::new(),
            hasher: DefaultHashBuilder::default(),
        }
    }

    /// Attempts in the ring (taken ones included until they leave it).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        (self.tail - self.head) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    /// The index line and tag of `src`.
    #[inline]
    fn slot(&self, src: &[u8; 16]) -> (usize, u64) {
        let h = self.hasher.hash_one(u128::from_ne_bytes(*src));
        // The line from every bit of the hash (a multiplicative mix): the hasher's upper bits
        // alone spread some seeds' sequential addresses over too few lines.
        let mixed = h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        let line = mixed as usize & (self.lines.len().max(1) - 1);
        (line, u64::from(h as u32 | 1) << 32)
    }

    /// Asks for the index line of `src` without waiting for it (see [`FlowTable::prefetch`]).
    ///
    /// [`FlowTable::prefetch`]: crate::flow::FlowTable::prefetch
    #[inline]
    pub fn prefetch(&self, src: &[u8; 16]) {
        if !self.lines.is_empty() {
            crate::capture::prefetch(&self.lines[self.slot(src).0]);
        }
    }

    /// The ring position an entry names, if that attempt is still in the ring.
    #[inline]
    fn held_at(&self, e: u64) -> Option<usize> {
        if e == 0 {
            return None;
        }
        let age = (self.tail as u32).wrapping_sub(e as u32);
        (age >= 1 && u64::from(age) <= self.tail - self.head)
            .then(|| (self.tail - u64::from(age)) as usize & self.mask)
    }

    /// The line, way and ring position of the attempt held for `src`.
    #[inline]
    fn find(&self, src: &[u8; 16]) -> Option<(usize, usize, usize)> {
        if self.lines.is_empty() {
            return None;
        }
        let (line, tag) = self.slot(src);
        for (way, &e) in self.lines[line].0.iter().enumerate() {
            if e & !0xffff_ffff == tag {
                if let Some(p) = self.held_at(e) {
                    let a = &self.ring[p].0;
                    if a.live && a.src == *src {
                        return Some((line, way, p));
                    }
                }
            }
        }
        None
    }

    /// Holds `a`, whose source has no attempt held; the oldest goes when the ring is full.
    pub fn insert(&mut self, a: Attempt) {
        if self.lines.is_empty() {
            // A quarter of an entry per attempt the ring holds: lines half full when it is.
            let n = (self.mask + 1) / (WAYS / 2);
            self.lines = with_huge_pages(n);
            self.lines.resize(n, Line([0; WAYS]));
            self.ring = with_huge_pages(self.mask + 1);
        }
        if (self.tail - self.head) as usize > self.mask {
            self.head += 1;
        }
        let abs = self.tail;
        let pos = (abs as usize) & self.mask;
        if pos == self.ring.len() {
            self.ring.push(Slot(a));
        } else {
            self.ring[pos] = Slot(a);
        }
        self.tail += 1;
        let (line, tag) = self.slot(&a.src);
        // A free way, else the one holding the oldest attempt.
        let mut way = 0;
        let mut oldest = 0;
        for (w, &e) in self.lines[line].0.iter().enumerate() {
            match self.held_at(e) {
                None => {
                    way = w;
                    break;
                }
                Some(_) => {
                    let age = (self.tail as u32).wrapping_sub(e as u32);
                    if age > oldest {
                        oldest = age;
                        way = w;
                    }
                }
            }
        }
        self.lines[line].0[way] = tag | u64::from(abs as u32);
    }

    /// The attempt held for source `src`.
    #[inline]
    pub fn get(&self, src: &[u8; 16]) -> Option<&Attempt> {
        self.find(src).map(|(_, _, p)| &self.ring[p].0)
    }

    /// Takes out the attempt held for source `src`.
    pub fn take(&mut self, src: &[u8; 16]) -> Option<Attempt> {
        let (line, way, p) = self.find(src)?;
        self.lines[line].0[way] = 0;
        let a = &mut self.ring[p].0;
        a.live = false;
        Some(*a)
    }

    /// Forgets the attempts that arrived before `before` (oldest first, as they arrived).
    pub fn expire(&mut self, before: u64) {
        while self.head < self.tail && self.ring[(self.head as usize) & self.mask].0.ts < before {
            self.head += 1;
        }
        if self.head == self.tail && self.ring.len() > 1024 {
            // A flood is over: its ring and index go back to the allocator.
            self.clear();
        }
    }

    /// Forgets every attempt (each was counted in an aggregate already).
    pub fn clear(&mut self) {
        *self = Held::new(self.mask + 1);
    }

    pub fn memory_bytes(&self) -> usize {
        self.ring.capacity() * size_of::<Slot>() + self.lines.capacity() * size_of::<Line>()
    }
}

/// An empty vector with room for `n` `T`s, whose memory the kernel is asked to back with
/// huge pages where it can: the index is read at random, and with 4 KiB pages nearly every
/// read also misses the TLB (a page walk, dearer still in a virtual machine).
fn with_huge_pages<T>(n: usize) -> Vec<T> {
    let v: Vec<T> = Vec::with_capacity(n);
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_ptr().addr();
        let end = start + n * size_of::<T>();
        let (from, to) = (start.next_multiple_of(HUGE), end & !(HUGE - 1));
        if from < to {
            // SAFETY: advice about whole pages inside this vector's own allocation (nothing
            // else lives there), which changes neither its contents nor its mapping; a refusal
            // (no transparent huge pages) changes nothing either.
            #[allow(unsafe_code)]
            unsafe {
                libc::madvise(
                    v.as_ptr()
                        .cast::<u8>()
                        .cast_mut()
                        .wrapping_add(from - start)
                        .cast(),
                    to - from,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    v
}

/// Entries of [`Known`] (one byte each).
const KNOWN_SLOTS: usize = 1 << 18;

/// Sources known to send more than one packet (an attempt of theirs became a flow): their
/// next SYNs are flows at once. A byte per hashed address (256 KiB) holding the period in
/// which it was last marked; marks of this period and the one before count, so a source is
/// remembered for one to two `every`s of event time. A collision makes a flow of an attempt,
/// never the other way round.
#[derive(Debug)]
pub(crate) struct Known {
    marks: Vec<u8>,
    /// The current period (from 2, so that a zero byte is never a recent mark).
    period: u8,
    since: u64,
    every: u64,
}

impl Known {
    pub fn new(every: u64) -> Self {
        Known {
            marks: Vec::new(),
            period: 2,
            since: 0,
            every,
        }
    }

    #[inline]
    fn slot(src: &[u8; 16]) -> usize {
        let x = u128::from_ne_bytes(*src);
        let h =
            ((x as u64) ^ ((x >> 64) as u64).rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> (64 - KNOWN_SLOTS.trailing_zeros())) as usize
    }

    /// Asks for the mark of `src` without waiting for it.
    #[inline]
    pub fn prefetch(&self, src: &[u8; 16]) {
        if let Some(m) = self.marks.get(Self::slot(src)) {
            crate::capture::prefetch(m);
        }
    }

    pub fn mark(&mut self, src: &[u8; 16]) {
        if self.marks.is_empty() {
            self.marks = vec![0; KNOWN_SLOTS];
        }
        self.marks[Self::slot(src)] = self.period;
    }

    #[inline]
    pub fn contains(&self, src: &[u8; 16]) -> bool {
        self.marks
            .get(Self::slot(src))
            .is_some_and(|&m| m != 0 && self.period.wrapping_sub(m) <= 1)
    }

    /// Starts a new period once `every` has passed since the last one began.
    pub fn rotate(&mut self, now: u64) {
        if now >= self.since.saturating_add(self.every) {
            self.since = now;
            self.period = self.period.wrapping_add(1);
            if self.period < 2 {
                // Wrapped: old marks could pass for recent ones.
                self.marks.fill(0);
                self.period = 2;
            }
        }
    }
}

/// Entries of [`Endpoints`] (one byte each).
const ENDPOINT_SLOTS: usize = 1 << 18;

/// By hashed address, how many flows of the table have it as an endpoint (stuck at 255 once
/// there): a SYN from an address with none belongs to no flow, which under a flood of new
/// sources spares each SYN a lookup in the flow index. A collision costs only that lookup.
#[derive(Debug)]
pub(crate) struct Endpoints {
    counts: Vec<u8>,
}

impl Endpoints {
    pub fn new() -> Self {
        Endpoints {
            counts: vec![0; ENDPOINT_SLOTS],
        }
    }

    #[inline]
    fn slot(a: &[u8; 16]) -> usize {
        // The same spread as `Known`'s, over as many entries.
        const _: () = assert!(ENDPOINT_SLOTS == KNOWN_SLOTS);
        Known::slot(a)
    }

    /// A flow with endpoint `a` entered the table.
    #[inline]
    pub fn add(&mut self, a: &[u8; 16]) {
        let c = &mut self.counts[Self::slot(a)];
        *c = c.saturating_add(1);
    }

    /// A flow with endpoint `a` left the table.
    #[inline]
    pub fn remove(&mut self, a: &[u8; 16]) {
        let c = &mut self.counts[Self::slot(a)];
        if *c != u8::MAX {
            *c = c.saturating_sub(1);
        }
    }

    /// Whether surely no flow of the table has endpoint `a`.
    #[inline]
    pub fn none(&self, a: &[u8; 16]) -> bool {
        self.counts[Self::slot(a)] == 0
    }

    /// Asks for the count of `a` without waiting for it.
    #[inline]
    pub fn prefetch(&self, a: &[u8; 16]) {
        crate::capture::prefetch(&self.counts[Self::slot(a)]);
    }

    /// The table is empty.
    pub fn clear(&mut self) {
        self.counts.fill(0);
    }

    pub fn memory_bytes(&self) -> usize {
        self.counts.capacity()
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
    /// The SYNs' least and greatest TTL, and source port (made from the first).
    pub ttl: Span<u8>,
    pub sport: Span<u16>,
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
            ttl: Some(self.ttl),
            sport: Some(self.sport),
        }
    }
}

/// The aggregates of attempts being counted, at most `max` at once.
#[derive(Debug)]
pub(crate) struct Aggregates {
    open: Vec<Agg>,
    index: HashMap<AggKey, u32>,
    /// Where the last attempt was counted (checked against its key): a flood's attempts
    /// are found without hashing their key.
    last: usize,
    max: usize,
    next_gen: u32,
    rng: u64,
}

/// Why an attempt could not be counted.
pub(crate) enum Counted {
    /// In the aggregate of this generation.
    In(u32),
    /// This aggregate (of an earlier second) was closed first: emit it, then count again.
    Closed(Box<Agg>),
    /// Every aggregate is taken: the attempt is a flow after all.
    Full,
}

impl Aggregates {
    pub fn new(max: usize) -> Self {
        Aggregates {
            open: Vec::new(),
            index: HashMap::new(),
            last: 0,
            max,
            next_gen: 1,
            rng: 0x2545_f491_4f6c_dd1d,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Counts one attempt, packet `p` from `src` at `ts`, into the aggregate of `key`.
    pub fn count(
        &mut self,
        key: AggKey,
        asset: u32,
        src: IpAddr,
        p: &Packet<'_>,
        ts: u64,
        sec: u64,
    ) -> Counted {
        let found = match self.open.get(self.last) {
            Some(a) if a.key == key => Some(self.last as u32),
            _ => self.index.get(&key).copied(),
        };
        let i = match found {
            Some(i) if self.open[i as usize].sec != sec => {
                return Counted::Closed(Box::new(self.remove(i as usize)));
            }
            Some(i) => i as usize,
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
                    ttl: Span::of(p.ttl),
                    sport: Span::of(p.sport),
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
        self.last = i;
        let a = &mut self.open[i];
        a.first_ns = a.first_ns.min(ts);
        a.last_ns = a.last_ns.max(ts);
        a.count += 1;
        a.ip_bytes += u64::from(p.ip_len);
        a.flags |= p.tcp_flags;
        a.ttl = a.ttl.merge(Span::of(p.ttl));
        a.sport = a.sport.merge(Span::of(p.sport));
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
        Attempt::new(src, [9; 16], false, 1024, 80, 2, 64, n, 40, ts, 1)
    }

    /// 64 bytes in the ring, as the module says, its TTL included.
    #[test]
    fn an_attempt_is_64_bytes() {
        assert_eq!(size_of::<Attempt>(), 64);
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
        // 3, 4 and 5 (a taken attempt leaves the ring in its turn).
        assert_eq!(h.len(), 3);
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
        let mut h = Held::new(8);
        for n in 0..20 {
            h.insert(at(n, u64::from(n)));
            assert!(h.len() <= 8);
        }
        assert!(h.get(&at(11, 0).src).is_none());
        for n in 12..20 {
            assert!(h.get(&at(n, 0).src).is_some(), "{n}");
        }
    }

    #[test]
    fn a_full_index_forgets_few_attempts_early() {
        let cap = 1 << 17;
        let mut h = Held::new(cap);
        for n in 0..3 * cap as u32 {
            h.insert(at(n, u64::from(n)));
        }
        // The ring holds the last `cap`; the index finds nearly all of them. Its lines are
        // half full then (eight ways, four attempts a line on average): the lines that draw
        // more than eight forget their oldest, about 0.8 % of attempts (a Poisson tail), and
        // whatever the hasher's seed the spread stays that even.
        let base = 2 * cap as u32;
        let found = (base..base + cap as u32)
            .filter(|&n| h.get(&at(n, 0).src).is_some())
            .count();
        assert!(found * 100 >= cap * 98, "{found} of {cap}");
        assert!(h.get(&at(base - 1, 0).src).is_none());
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
        // SYNs of 40 bytes; TTLs 100 to 163 and source ports 2 000 to 11 999, in no order.
        let syn = |n: u32| Packet {
            ip_len: 40,
            tcp_flags: 2,
            ttl: 100 + (n.wrapping_mul(37) % 64) as u8,
            sport: 2_000 + (n.wrapping_mul(7_919) % 10_000) as u16,
            ..Packet::default()
        };
        for n in 0..10_000u32 {
            assert!(matches!(
                g.count(key, 0, src(n), &syn(n), 5_000 + u64::from(n), 5),
                Counted::In(_)
            ));
        }
        // Another key fits; a third does not.
        let other = AggKey { dport: 81, ..key };
        assert!(matches!(
            g.count(other, 0, src(1), &syn(1), 1, 5),
            Counted::In(_)
        ));
        let third = AggKey { dport: 82, ..key };
        assert!(matches!(
            g.count(third, 0, src(1), &syn(1), 1, 5),
            Counted::Full
        ));
        // The next second closes the first second's aggregate.
        let Counted::Closed(a) = g.count(key, 0, src(1), &syn(1), 1, 6) else {
            panic!("closed");
        };
        assert_eq!((a.count, a.ip_bytes), (10_000, 400_000));
        // The least and greatest TTL and source port of all its SYNs.
        assert_eq!((a.ttl.min, a.ttl.max), (100, 163));
        assert_eq!((a.sport.min, a.sport.max), (2_000, 11_999));
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
        // The other key's aggregate holds its one SYN's TTL and port only.
        let b = g.drain().next().expect("the other key's");
        let at = b.attempts();
        assert_eq!(at.ttl.map(Span::spread), Some(0));
        assert_eq!(at.sport, Some(Span::of(syn(1).sport)));
        assert!(g.is_empty());
    }
}
