//! Packet sources: capture files and live interfaces. Both hand the flow table [`Frame`]s.

pub mod file;
pub mod live;
mod mapped;

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
}
