//! Duplicate-batch suppression. Consumers see a batch again after a crash or a rebalance
//! (at-least-once delivery); the (sensor id, sequence number) pair identifies it, so the
//! second copy is dropped and downstream state changes once.
//!
//! State is kept per (sensor, partition): within one partition a sensor's batches arrive in
//! the order it sent them (give or take a replay from its spool), whatever the lag between
//! partitions, so the window below only has to absorb reordering inside one partition.

use std::collections::HashMap;

/// Sequence numbers remembered below the high-water mark, per sensor (for out-of-order
/// arrival across partitions).
const WINDOW: u64 = 4096;

#[derive(Debug, Clone)]
struct Seen {
    /// Highest sequence number seen.
    high: u64,
    /// Bit i set: `high - i` was seen (i < WINDOW).
    window: Vec<u64>,
    last_use: u64,
}

impl Seen {
    fn new(seq: u64, tick: u64) -> Self {
        let mut s = Seen {
            high: seq,
            window: vec![0; (WINDOW / 64) as usize],
            last_use: tick,
        };
        s.set(0);
        s
    }

    fn get(&self, i: u64) -> bool {
        self.window[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: u64) {
        self.window[(i / 64) as usize] |= 1 << (i % 64);
    }

    /// Moves the window up so that `seq` becomes the high-water mark: bit i moves to
    /// i + shift, a word at a time (a batch advances it once; bit by bit, the 4 096 steps cost
    /// more than decoding the batch).
    fn advance(&mut self, seq: u64) {
        let shift = seq - self.high;
        if shift >= WINDOW {
            self.window.iter_mut().for_each(|w| *w = 0);
        } else {
            let (words, bits) = ((shift / 64) as usize, (shift % 64) as u32);
            for w in (0..self.window.len()).rev() {
                let v = match w.checked_sub(words) {
                    None => 0,
                    Some(src) => {
                        let carry = match (bits, src.checked_sub(1)) {
                            (0, _) | (_, None) => 0,
                            (b, Some(below)) => self.window[below] >> (64 - b),
                        };
                        (self.window[src] << bits) | carry
                    }
                };
                self.window[w] = v;
            }
        }
        self.high = seq;
    }
}

/// Remembers which batches were processed, in bounded memory.
#[derive(Debug)]
pub struct Deduplicator {
    sensors: HashMap<(String, i32), Seen>,
    max_sensors: usize,
    tick: u64,
    /// Sensors forgotten to stay within `max_sensors` (their next batch counts as new).
    pub evicted_sensors: u64,
    /// Batches too old to judge (below the window): treated as duplicates and dropped.
    pub too_old: u64,
}

impl Deduplicator {
    /// Remembers at most `max_sensors` (sensor, partition) streams (the least recently heard
    /// from is forgotten).
    pub fn new(max_sensors: usize) -> Self {
        Deduplicator {
            sensors: HashMap::new(),
            max_sensors: max_sensors.max(1),
            tick: 0,
            evicted_sensors: 0,
            too_old: 0,
        }
    }

    /// Whether batch `seq` of `sensor`, read from `partition`, is new; marks it seen.
    pub fn is_new(&mut self, sensor: &str, partition: i32, seq: u64) -> bool {
        self.tick += 1;
        let tick = self.tick;
        let id = (sensor.to_string(), partition);
        let Some(s) = self.sensors.get_mut(&id) else {
            if self.sensors.len() >= self.max_sensors {
                if let Some(oldest) = self
                    .sensors
                    .iter()
                    .min_by_key(|(_, s)| s.last_use)
                    .map(|(k, _)| k.clone())
                {
                    self.sensors.remove(&oldest);
                    self.evicted_sensors += 1;
                }
            }
            self.sensors.insert(id, Seen::new(seq, tick));
            return true;
        };
        s.last_use = tick;
        if seq > s.high {
            s.advance(seq);
            s.set(0);
            return true;
        }
        let back = s.high - seq;
        if back >= WINDOW {
            self.too_old += 1;
            return false;
        }
        if s.get(back) {
            return false;
        }
        s.set(back);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The window moved bit by bit: what `advance` must equal.
    fn advanced_bit_by_bit(s: &Seen, seq: u64) -> Vec<bool> {
        let shift = seq - s.high;
        (0..WINDOW)
            .map(|i| i >= shift && i - shift < WINDOW && s.get(i - shift))
            .collect()
    }

    #[test]
    fn the_window_moves_every_seen_bit_by_the_shift() {
        let mut s = Seen::new(10_000, 0);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..WINDOW {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(3) {
                s.set(i);
            }
        }
        for shift in [1, 2, 63, 64, 65, 127, 128, 200, 1000, 4095, 4096, 5000] {
            let mut t = s.clone();
            let want = advanced_bit_by_bit(&t, t.high + shift);
            t.advance(t.high + shift);
            let got: Vec<bool> = (0..WINDOW).map(|i| t.get(i)).collect();
            assert_eq!(got, want, "shift {shift}");
        }
    }

    #[test]
    fn replays_are_dropped_out_of_order_accepted() {
        let mut d = Deduplicator::new(8);
        for seq in [1, 2, 3, 5, 4, 10, 7] {
            assert!(d.is_new("a", 0, seq), "{seq}");
        }
        for seq in [1, 2, 3, 4, 5, 7, 10] {
            assert!(!d.is_new("a", 0, seq), "replay {seq}");
        }
        assert!(d.is_new("a", 0, 6));
        assert!(d.is_new("b", 0, 1), "sensors are independent");
        assert!(d.is_new("a", 1, 1), "partitions are independent");
    }

    #[test]
    fn window_slides_and_old_batches_are_counted() {
        let mut d = Deduplicator::new(8);
        assert!(d.is_new("a", 0, 1));
        assert!(d.is_new("a", 0, 1 + WINDOW + 10));
        assert!(!d.is_new("a", 0, 2));
        assert_eq!(d.too_old, 1);
        assert!(d.is_new("a", 0, 1 + WINDOW + 9));
    }

    #[test]
    fn sensor_table_is_bounded() {
        let mut d = Deduplicator::new(2);
        assert!(d.is_new("a", 0, 1));
        assert!(d.is_new("b", 0, 1));
        assert!(d.is_new("c", 0, 1));
        assert_eq!(d.evicted_sensors, 1);
        assert!(d.sensors.len() <= 2);
    }
}
