//! Distinct counting shared by the sensor and the detector: a HyperLogLog over addresses, so
//! a sensor can hand on the distinct sources of many connection attempts in one record and the
//! detector merges them into what it counted itself, exactly as if it had seen each source.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

/// Registers of a [`Cardinality`].
const REGISTERS: usize = 256;

/// The 64-bit key of an address that [`Cardinality::insert`] counts (IPv4 as its 32 bits;
/// IPv6 folded), the same for the sensor and the detector.
#[inline]
pub fn addr_key(a: IpAddr) -> u64 {
    match a {
        IpAddr::V4(v) => u64::from(u32::from(v)),
        IpAddr::V6(v) => {
            let b = u128::from(v);
            (b as u64) ^ ((b >> 64) as u64).rotate_left(17)
        }
    }
}

/// A HyperLogLog of 256 one-byte registers: how many distinct sources an attack had, from a
/// handful to millions, within about 7 % (1.04 / √256), in 256 bytes. Two sketches merge
/// (register by register, the larger) into the sketch of both inputs.
#[derive(Clone, PartialEq, Eq)]
pub struct Cardinality([u8; REGISTERS]);

impl Default for Cardinality {
    fn default() -> Self {
        Cardinality([0; REGISTERS])
    }
}

impl fmt::Debug for Cardinality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cardinality(~{:.0})", self.estimate())
    }
}

impl Cardinality {
    /// Counts `v` (any 64-bit key; mixed here, so nearby keys spread).
    #[inline]
    pub fn insert(&mut self, v: u64) {
        // splitmix64's finaliser: every input bit reaches the register index and the rank.
        let mut h = v.wrapping_add(0x9E37_79B9_7F4A_7C15);
        h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h ^= h >> 31;
        let i = (h >> 56) as usize;
        let rank = ((h << 8) | 0x80).leading_zeros() as u8 + 1;
        if rank > self.0[i] {
            self.0[i] = rank;
        }
    }

    /// Adds what `other` counted: afterwards this sketch is that of both inputs together.
    pub fn merge(&mut self, other: &Cardinality) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = (*a).max(*b);
        }
    }

    /// Estimated number of distinct values inserted (linear counting while registers are
    /// empty, as HyperLogLog's small-range correction).
    pub fn estimate(&self) -> f64 {
        let m = REGISTERS as f64;
        let zeros = self.0.iter().filter(|&&r| r == 0).count();
        let raw = 0.7182 * m * m / self.0.iter().map(|&r| (-f64::from(r)).exp2()).sum::<f64>();
        if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        }
    }
}

impl Serialize for Cardinality {
    /// As a tuple of 256 bytes (postcard: the bytes themselves, no length).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(REGISTERS)?;
        for r in &self.0 {
            t.serialize_element(r)?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for Cardinality {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Regs;
        impl<'de> Visitor<'de> for Regs {
            type Value = Cardinality;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{REGISTERS} HyperLogLog registers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Cardinality, A::Error> {
                let mut c = Cardinality::default();
                for (i, r) in c.0.iter_mut().enumerate() {
                    let v: u8 = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(i, &self))?;
                    // A rank is at most 57 (64 hash bits less the 8 of the index, plus one).
                    if v > 57 {
                        return Err(de::Error::custom("HyperLogLog register out of range"));
                    }
                    *r = v;
                }
                Ok(c)
            }
        }
        d.deserialize_tuple(REGISTERS, Regs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cardinality_is_close_from_a_few_to_a_million() {
        for n in [1u64, 10, 100, 1_000, 37_669, 1_000_000] {
            let mut c = Cardinality::default();
            for v in 0..n {
                // Consecutive addresses, as a sequential spoofer would use, and each twice.
                c.insert(0xC633_0000 + v);
                c.insert(0xC633_0000 + v);
            }
            let e = c.estimate();
            let err = (e - n as f64).abs() / n as f64;
            assert!(err < 0.12, "{n}: estimated {e:.0}");
        }
        assert_eq!(Cardinality::default().estimate(), 0.0);
    }

    #[test]
    fn merged_sketches_equal_the_sketch_of_both_inputs() {
        let (mut a, mut b, mut both) = Default::default();
        for v in 0..5_000u64 {
            let k = v * 2_654_435_761;
            if v % 3 == 0 {
                Cardinality::insert(&mut a, k);
            } else {
                Cardinality::insert(&mut b, k);
            }
            Cardinality::insert(&mut both, k);
        }
        a.merge(&b);
        assert_eq!(a, both);
    }

    #[test]
    fn registers_round_trip_and_bad_ones_are_refused() {
        let mut c = Cardinality::default();
        for v in 0..100 {
            c.insert(v);
        }
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Cardinality>(&json).unwrap(), c);
        let bad = format!("[{}]", vec!["99"; REGISTERS].join(","));
        assert!(serde_json::from_str::<Cardinality>(&bad).is_err());
        assert!(serde_json::from_str::<Cardinality>("[1,2,3]").is_err());
    }
}
