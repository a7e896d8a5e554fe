//! Sensor counters: every packet is either counted into a flow or dropped with a reason.

use crate::decode::DropReason;
use normwatch_model::EndReason;

/// Counters kept by the single-threaded hot path; read them between batches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SensorStats {
    /// Frames handed to the decoder.
    pub packets: u64,
    /// Captured bytes of those frames.
    pub bytes: u64,
    /// Frames (or tunnel layers) not counted into a flow, by [`DropReason`] (indexed by `as u8`).
    pub drops: [u64; DropReason::ALL.len()],
    /// IP fragments seen (first and later).
    pub fragments: u64,
    /// Later fragments whose first fragment never arrived within the fragment timeout.
    pub fragments_orphaned: u64,
    /// Fragment groups not tracked because the fragment table was full.
    pub fragments_overflow: u64,
    /// Flows created.
    pub flows_created: u64,
    /// Flow records emitted, by [`EndReason`] (interim reports included).
    pub flows_ended: [u64; 7],
    /// SYNs from new sources held as one-packet attempts instead of becoming flows (under a
    /// flood of them), and of those, the ones that became flows (answered or sent again).
    pub attempts_held: u64,
    pub attempts_promoted: u64,
    /// Flows currently in the table.
    pub flows_active: u64,
    /// Industrial-protocol PDUs that did not parse as the port's protocol.
    pub ics_malformed: u64,
}

impl SensorStats {
    /// Counts a drop.
    #[inline]
    pub fn drop(&mut self, r: DropReason) {
        self.drops[r as usize] += 1;
    }

    /// Drops counted for `r`.
    pub fn drops_for(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }

    /// Counts an emitted record.
    #[inline]
    pub fn ended(&mut self, r: EndReason) {
        self.flows_ended[r.index()] += 1;
    }

    /// Records emitted for `r`.
    pub fn ended_for(&self, r: EndReason) -> u64 {
        self.flows_ended[r.index()]
    }

    /// Flows ended because the table was full.
    pub fn evictions(&self) -> u64 {
        self.ended_for(EndReason::Evicted)
    }

    /// Adds another table's counters (the tables of several capture threads).
    pub fn add(&mut self, other: &SensorStats) {
        // Destructured, so a counter added to the struct cannot be forgotten here.
        let SensorStats {
            packets,
            bytes,
            drops,
            fragments,
            fragments_orphaned,
            fragments_overflow,
            flows_created,
            flows_ended,
            flows_active,
            ics_malformed,
            attempts_held,
            attempts_promoted,
        } = other;
        self.packets += packets;
        self.bytes += bytes;
        for (a, b) in self.drops.iter_mut().zip(drops) {
            *a += b;
        }
        self.fragments += fragments;
        self.fragments_orphaned += fragments_orphaned;
        self.fragments_overflow += fragments_overflow;
        self.flows_created += flows_created;
        for (a, b) in self.flows_ended.iter_mut().zip(flows_ended) {
            *a += b;
        }
        self.flows_active += flows_active;
        self.ics_malformed += ics_malformed;
        self.attempts_held += attempts_held;
        self.attempts_promoted += attempts_promoted;
    }
}
