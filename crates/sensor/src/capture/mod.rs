//! Packet sources: capture files and live interfaces. Both hand the flow table [`Frame`]s.

pub mod file;
pub mod live;
mod mapped;

pub(crate) use mapped::prefetch;

use crate::decode::LinkType;

/// One captured frame, borrowed from the source's buffer.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub link: LinkType,
    /// Event time, nanoseconds since the Unix epoch, from the capture.
    pub ts_ns: u64,
    /// Captured bytes (at most the snap length).
    pub data: &'a [u8],
    /// Length of the packet on the wire.
    pub wire_len: usize,
    /// The captured bytes of a frame a few records later in the same buffer (empty when the
    /// source has none at hand): a hint for [`crate::flow::FlowTable::prefetch`], so that
    /// the memory a frame needs is on its way before the frame is processed.
    pub ahead: &'a [u8],
}
