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

/// The HyperLogLog of distinct sources, shared with the sensor (which sends its registers).
pub use normwatch_model::Cardinality;

use normwatch_model::Span;
use std::ops::Not;

/// The least and greatest of values seen (TTLs, ports), in two integers whose zero is "none
/// yet": the greatest, and the complement of the least, each kept by `max`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bounds<T> {
    max: T,
    min_not: T,
}

impl<T: Copy + Ord + Not<Output = T>> Bounds<T> {
    /// Adds a span of values, if there is one.
    #[inline]
    pub fn add(&mut self, s: Option<Span<T>>) {
        if let Some(s) = s {
            self.max = self.max.max(s.max);
            self.min_not = self.min_not.max(!s.min);
        }
    }

    /// The values' least and greatest; `None` before any.
    #[inline]
    pub fn span(self) -> Option<Span<T>> {
        let min = !self.min_not;
        (min <= self.max).then_some(Span { min, max: self.max })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn bounds_hold_the_least_and_greatest_and_start_empty() {
        let mut b = Bounds::<u8>::default();
        assert_eq!(b.span(), None);
        b.add(None);
        assert_eq!(b.span(), None);
        b.add(Some(Span::of(255)));
        assert_eq!(b.span(), Some(Span::of(255)));
        b.add(Some(Span { min: 0, max: 9 }));
        assert_eq!(b.span(), Some(Span { min: 0, max: 255 }));
        let mut p = Bounds::<u16>::default();
        p.add(Some(Span::of(443)));
        p.add(Some(Span::of(40_000)));
        assert_eq!(p.span().map(Span::spread), Some(39_557));
    }
}
