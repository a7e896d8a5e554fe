//! Small fixed-size distinct counters: a 128-bit linear-counting bitmap answers "how many
//! different ports or addresses" without a set per source.

/// Mixes a value to a bit position; fixed (no random seed) so a replay counts the same.
#[inline]
fn bit(v: u64) -> u32 {
    let h = v.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 57) as u32
}

/// A linear-counting bitmap of 128 bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Distinct(u128);

impl Distinct {
    #[inline]
    pub fn insert(&mut self, v: u64) {
        self.0 |= 1u128 << bit(v);
    }

    /// Estimated number of distinct values inserted (exact while there are few: collisions
    /// are corrected for, not ignored).
    pub fn estimate(&self) -> f64 {
        let set = self.0.count_ones();
        if set == 128 {
            // Saturated: the estimator's limit.
            return 128.0 * (128f64).ln();
        }
        let zero = f64::from(128 - set) / 128.0;
        -128.0 * zero.ln()
    }

    /// Bits set (compare with a threshold converted by the caller, cheaper than a logarithm).
    #[inline]
    pub fn count(&self) -> u32 {
        self.0.count_ones()
    }
}

/// A HyperLogLog of 256 one-byte registers: how many distinct sources an attack had, from a
/// handful to millions, within about 7 % (1.04 / √256), in 256 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cardinality([u8; 256]);

impl Default for Cardinality {
    fn default() -> Self {
        Cardinality([0; 256])
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

    /// Estimated number of distinct values inserted (linear counting while registers are
    /// empty, as HyperLogLog's small-range correction).
    pub fn estimate(&self) -> f64 {
        let m = 256.0;
        let zeros = self.0.iter().filter(|&&r| r == 0).count();
        let raw = 0.7182 * m * m / self.0.iter().map(|&r| (-f64::from(r)).exp2()).sum::<f64>();
        if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        }
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
    fn estimates_small_counts_closely() {
        for n in [1u64, 5, 8, 10, 20] {
            let mut d = Distinct::default();
            for v in 0..n {
                d.insert(v * 7919 + 3);
                d.insert(v * 7919 + 3);
            }
            let e = d.estimate();
            assert!(
                (e - n as f64).abs() <= (n as f64 * 0.25).max(1.0),
                "{n}: {e}"
            );
        }
        assert_eq!(Distinct::default().count(), 0);
    }
}
