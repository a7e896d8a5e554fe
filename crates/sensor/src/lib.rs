//! The sensor: packets in, flow records out.
//!
//! - [`capture`]: pcap/pcapng files and live AF_PACKET capture, as streams of frames.
//! - [`decode`]: link layer → tunnels → IP → transport, zero-copy.
//! - [`flow`]: the bidirectional flow table with Zeek-compatible connection state.
//! - [`ics`]: industrial-protocol command classification.

mod attempts;
pub mod capture;
pub mod checksum;
pub mod decode;
pub mod flow;
pub mod ics;
pub mod stats;

pub use flow::{FlowConfig, FlowTable};
pub use stats::SensorStats;
