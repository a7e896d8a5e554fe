//! pcap and pcapng capture files, read in streaming fashion with `pcap-parser`.
//!
//! Every link type of every pcapng interface is honoured, as are microsecond, nanosecond and
//! other pcapng timestamp resolutions. A truncated or corrupt file stops with an error naming
//! the byte offset of the bad record; every frame before it has been delivered.

use super::Frame;
use crate::decode::LinkType;
use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapNGPacketBlock;
use pcap_parser::{PcapBlockOwned, PcapError};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Initial read buffer; grown up to [`MAX_BLOCK`] for large blocks.
const BUFFER: usize = 1 << 20;
/// The largest block accepted (a jumbo frame with pcapng options fits many times over).
const MAX_BLOCK: usize = 16 << 20;

/// Why a capture file could not be read (to the end).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{path}: cannot open: {source}", path = .path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a pcap or pcapng file (unrecognised header)", path = .path.display())]
    NotACapture { path: PathBuf },
    #[error("{path}: truncated capture: the record at byte offset {offset} runs past the end of the file", path = .path.display())]
    Truncated { path: PathBuf, offset: u64 },
    #[error("{path}: corrupt capture at byte offset {offset}: {what}", path = .path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("{path}: read error at byte offset {offset}", path = .path.display())]
    Read { path: PathBuf, offset: u64 },
    #[error("{path}: link type {linktype} is not supported (supported: Ethernet, Linux cooked SLL/SLL2, raw IP, BSD loopback, PPP, FDDI)", path = .path.display())]
    UnsupportedLink { path: PathBuf, linktype: i32 },
}

impl CaptureError {
    /// The byte offset of the fault, when the error is about a place in the file.
    pub fn offset(&self) -> Option<u64> {
        match self {
            CaptureError::Truncated { offset, .. }
            | CaptureError::Corrupt { offset, .. }
            | CaptureError::Read { offset, .. } => Some(*offset),
            _ => None,
        }
    }
}

/// What a completed read saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileSummary {
    /// Frames delivered.
    pub frames: u64,
    /// Frames on pcapng interfaces with an unsupported link type (not delivered).
    pub unsupported_link_frames: u64,
    /// Bytes of the file consumed.
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug)]
struct Iface {
    link: Option<LinkType>,
    /// Timestamp units per second.
    resolution: u64,
    offset_s: i64,
}

fn ts_from_units(units: u64, resolution: u64, offset_s: i64) -> u64 {
    let ns = (u128::from(units) * 1_000_000_000 / u128::from(resolution.max(1))) as u64;
    let off = offset_s.saturating_mul(1_000_000_000);
    if off >= 0 {
        ns.saturating_add(off as u64)
    } else {
        ns.saturating_sub(off.unsigned_abs())
    }
}

/// Reads `path` to the end, calling `on_frame` for every packet in file order.
pub fn read_file(
    path: &Path,
    on_frame: impl FnMut(Frame<'_>),
) -> Result<FileSummary, CaptureError> {
    let file = File::open(path).map_err(|source| CaptureError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    read_stream(file, path, on_frame)
}

/// Reads a capture from any byte stream; `path` names it in errors.
pub fn read_stream(
    stream: impl Read + Send,
    path: &Path,
    mut on_frame: impl FnMut(Frame<'_>),
) -> Result<FileSummary, CaptureError> {
    let mut reader = match pcap_parser::create_reader(BUFFER, stream) {
        Ok(r) => r,
        Err(PcapError::Incomplete(_)) => {
            return Err(CaptureError::Truncated {
                path: path.to_path_buf(),
                offset: 0,
            })
        }
        Err(PcapError::ReadError) => {
            return Err(CaptureError::Read {
                path: path.to_path_buf(),
                offset: 0,
            })
        }
        Err(_) => {
            return Err(CaptureError::NotACapture {
                path: path.to_path_buf(),
            })
        }
    };
    let mut summary = FileSummary::default();
    let mut legacy: Option<(LinkType, bool)> = None;
    let mut ifaces: Vec<Iface> = Vec::new();
    let mut buffer = BUFFER;
    loop {
        let pos = reader.consumed() as u64;
        match reader.next() {
            Ok((size, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        let lt = h.network.0;
                        let link = LinkType::from_linktype(lt).ok_or_else(|| {
                            CaptureError::UnsupportedLink {
                                path: path.to_path_buf(),
                                linktype: lt,
                            }
                        })?;
                        legacy = Some((link, h.is_nanosecond_precision()));
                    }
                    PcapBlockOwned::Legacy(b) => {
                        let (link, nanos) = legacy.ok_or_else(|| CaptureError::Corrupt {
                            path: path.to_path_buf(),
                            offset: pos,
                            what: "packet record before the file header".into(),
                        })?;
                        let frac = u64::from(b.ts_usec) * if nanos { 1 } else { 1000 };
                        let caplen = (b.caplen as usize).min(b.data.len());
                        summary.frames += 1;
                        on_frame(Frame {
                            link,
                            ts_ns: u64::from(b.ts_sec) * 1_000_000_000 + frac,
                            data: &b.data[..caplen],
                            wire_len: b.origlen as usize,
                        });
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => ifaces.clear(),
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        ifaces.push(Iface {
                            link: LinkType::from_linktype(idb.linktype.0),
                            resolution: idb.ts_resolution().unwrap_or(1_000_000),
                            offset_s: idb.ts_offset(),
                        });
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        let iface = ifaces.get(epb.if_id as usize).copied().ok_or_else(|| {
                            CaptureError::Corrupt {
                                path: path.to_path_buf(),
                                offset: pos,
                                what: format!(
                                    "packet on interface {} which was never described",
                                    epb.if_id
                                ),
                            }
                        })?;
                        let Some(link) = iface.link else {
                            summary.unsupported_link_frames += 1;
                            reader.consume(size);
                            continue;
                        };
                        let units = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                        summary.frames += 1;
                        on_frame(Frame {
                            link,
                            ts_ns: ts_from_units(units, iface.resolution, iface.offset_s),
                            data: epb.packet_data(),
                            wire_len: epb.orig_len() as usize,
                        });
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        // Simple packets carry no timestamp; they belong to interface 0.
                        let Some(link) = ifaces.first().and_then(|i| i.link) else {
                            summary.unsupported_link_frames += 1;
                            reader.consume(size);
                            continue;
                        };
                        summary.frames += 1;
                        on_frame(Frame {
                            link,
                            ts_ns: 0,
                            data: spb.packet_data(),
                            wire_len: spb.orig_len() as usize,
                        });
                    }
                    PcapBlockOwned::NG(_) => {}
                }
                reader.consume(size);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                if reader.refill().is_err() {
                    return Err(CaptureError::Read {
                        path: path.to_path_buf(),
                        offset: pos,
                    });
                }
            }
            Err(PcapError::UnexpectedEof) => {
                return Err(CaptureError::Truncated {
                    path: path.to_path_buf(),
                    offset: pos,
                })
            }
            Err(PcapError::BufferTooSmall) => {
                if buffer >= MAX_BLOCK || !reader.grow(buffer * 2) {
                    return Err(CaptureError::Corrupt {
                        path: path.to_path_buf(),
                        offset: pos,
                        what: format!("record larger than {} bytes", MAX_BLOCK),
                    });
                }
                buffer *= 2;
                if reader.refill().is_err() {
                    return Err(CaptureError::Read {
                        path: path.to_path_buf(),
                        offset: pos,
                    });
                }
            }
            Err(PcapError::ReadError) => {
                return Err(CaptureError::Read {
                    path: path.to_path_buf(),
                    offset: pos,
                })
            }
            Err(e) => {
                return Err(CaptureError::Corrupt {
                    path: path.to_path_buf(),
                    offset: pos,
                    what: describe(&e),
                })
            }
        }
    }
    summary.bytes = reader.consumed() as u64;
    Ok(summary)
}

fn describe<I>(e: &PcapError<I>) -> String {
    match e {
        PcapError::NomError(_, kind) | PcapError::OwnedNomError(_, kind) => {
            format!("malformed block ({})", kind.description())
        }
        PcapError::HeaderNotRecognized => "unrecognised block".into(),
        _ => "malformed block".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcapng_resolutions_convert_to_nanoseconds() {
        assert_eq!(ts_from_units(1_500_000, 1_000_000, 0), 1_500_000_000);
        assert_eq!(
            ts_from_units(1_500_000_001, 1_000_000_000, 0),
            1_500_000_001
        );
        assert_eq!(ts_from_units(3, 2, 10), 11_500_000_000);
    }
}
