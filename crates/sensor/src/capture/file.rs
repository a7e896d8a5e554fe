//! pcap and pcapng capture files, read in streaming fashion.
//!
//! Legacy pcap files (by far the common case, and what the throughput targets are about) are
//! read in large chunks and split into records by a tight loop over the 16-byte record
//! headers, the frames borrowed from the chunk. When the machine has more than one core,
//! [`read_file`] has the chunks produced on a separate thread (`pcap-read`), so that file
//! I/O overlaps decoding: large regular files are memory-mapped window by window (see
//! `mapped`), other files and streams are read with `read()` into recycled buffers. pcapng
//! files go through `pcap-parser`. Every link type of every pcapng interface is honoured, as
//! are microsecond, nanosecond and other pcapng timestamp resolutions. A truncated or corrupt
//! file stops with an error naming the byte offset of the bad record; every frame before it
//! has been delivered.

use super::{mapped, Frame};
use crate::decode::LinkType;
use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapNGPacketBlock;
use pcap_parser::{PcapBlockOwned, PcapError};
use std::fs::File;
use std::io::{Cursor, ErrorKind, Read};
use std::path::{Path, PathBuf};

/// Initial read buffer; grown up to [`MAX_BLOCK`] for large blocks.
const BUFFER: usize = 1 << 20;
/// The largest block accepted (a jumbo frame with pcapng options fits many times over).
const MAX_BLOCK: usize = 16 << 20;
/// Legacy pcap: bytes read at a time. Small enough that a chunk is still in cache when its
/// records are decoded, large enough that system calls are few.
const CHUNK: usize = 256 << 10;
/// Legacy pcap: chunks in flight between the reader thread and the decoder.
const CHUNKS_IN_FLIGHT: usize = 4;
/// Legacy pcap: how far ahead of the record being split its bytes are prefetched.
const PREFETCH_AHEAD: usize = 2048;
/// Legacy pcap: how many records after the one handed on its [`Frame::ahead`] is (the flow
/// table asks for what that frame will need, so it has arrived when the frame's turn comes).
const LOOKAHEAD: usize = 8;

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
///
/// A legacy pcap file is read on a separate thread when more than one core is available,
/// large files through memory-mapped windows; splitting into records and `on_frame` always
/// run on the calling thread.
pub fn read_file(
    path: &Path,
    on_frame: impl FnMut(Frame<'_>),
) -> Result<FileSummary, CaptureError> {
    read_path(path, None, on_frame)
}

/// [`read_file`] with a legacy pcap file mapped whatever its size, in windows of `window`
/// bytes (rounded down to a multiple of 4096), on a second thread or not: for tests of the
/// mapped reader.
#[doc(hidden)]
pub fn read_file_mapped(
    path: &Path,
    window: u64,
    threaded: bool,
    on_frame: impl FnMut(Frame<'_>),
) -> Result<FileSummary, CaptureError> {
    read_path(path, Some((window.max(4096) & !4095, threaded)), on_frame)
}

/// `forced`: map whatever the size, with this window and threading.
fn read_path(
    path: &Path,
    forced: Option<(u64, bool)>,
    on_frame: impl FnMut(Frame<'_>),
) -> Result<FileSummary, CaptureError> {
    let file = File::open(path).map_err(|source| CaptureError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let cores = std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
    let (window, threaded) = forced.unwrap_or((mapped::WINDOW, cores));
    if threaded || forced.is_some() {
        if let Some(mut windows) = mapped::Windows::new(&file, window, forced.is_some()) {
            let mut head = [0u8; LEGACY_HEADER];
            let legacy = windows
                .read_head(&mut head)
                .then(|| Legacy::parse(&head))
                .flatten();
            if let Some(Ok(legacy)) = legacy {
                let records = Records::new(legacy, path);
                return if threaded {
                    legacy_threaded(windows, records, on_frame)
                } else {
                    legacy_inline(windows, records, on_frame)
                };
            }
        }
    }
    read(file, path, threaded, on_frame)
}

/// Reads a capture from any byte stream; `path` names it in errors. Everything runs on the
/// calling thread.
pub fn read_stream(
    stream: impl Read + Send,
    path: &Path,
    on_frame: impl FnMut(Frame<'_>),
) -> Result<FileSummary, CaptureError> {
    read(stream, path, false, on_frame)
}

fn read<R: Read + Send>(
    mut stream: R,
    path: &Path,
    threaded: bool,
    on_frame: impl FnMut(Frame<'_>),
) -> Result<FileSummary, CaptureError> {
    let mut head = [0u8; LEGACY_HEADER];
    let got = read_full(&mut stream, &mut head).map_err(|_| CaptureError::Read {
        path: path.to_path_buf(),
        offset: 0,
    })?;
    match (got == LEGACY_HEADER)
        .then(|| Legacy::parse(&head))
        .flatten()
    {
        Some(Ok(legacy)) => {
            let records = Records::new(legacy, path);
            if threaded {
                legacy_threaded(stream, records, on_frame)
            } else {
                legacy_inline(stream, records, on_frame)
            }
        }
        Some(Err(linktype)) => Err(CaptureError::UnsupportedLink {
            path: path.to_path_buf(),
            linktype,
        }),
        // pcapng, and anything too short or unrecognised (pcap-parser says which it is).
        // pcap-parser recognises the format from its first read alone, so that read is given
        // as much as the stream has, up to the parser's buffer size.
        None => {
            let mut prefix = vec![0u8; BUFFER];
            prefix[..got].copy_from_slice(&head[..got]);
            let more = if got == LEGACY_HEADER {
                read_full(&mut stream, &mut prefix[got..]).map_err(|_| CaptureError::Read {
                    path: path.to_path_buf(),
                    offset: got as u64,
                })?
            } else {
                0
            };
            prefix.truncate(got + more);
            read_parsed(Cursor::new(prefix).chain(stream), path, on_frame)
        }
    }
}

/// Reads until `buf` is full or the stream ends; the number of bytes read.
fn read_full(stream: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Size of the legacy pcap file header.
const LEGACY_HEADER: usize = 24;

/// How a legacy pcap file's records are laid out.
#[derive(Clone, Copy, Debug)]
struct Legacy {
    link: LinkType,
    /// The sub-second timestamp field is in nanoseconds (else microseconds).
    nanos: bool,
    big_endian: bool,
    /// 16 bytes, or 24 in the "modified" (Kuznetzov) format.
    record_header: usize,
}

impl Legacy {
    /// The layout from a file header: `None` when the magic is not legacy pcap,
    /// `Some(Err(linktype))` when the link type is not supported.
    fn parse(h: &[u8; LEGACY_HEADER]) -> Option<Result<Legacy, i32>> {
        let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let (big_endian, nanos, record_header) = match magic {
            0xa1b2_c3d4 => (false, false, 16),
            0xa1b2_3c4d => (false, true, 16),
            0xa1b2_cd34 => (false, false, 24),
            0xd4c3_b2a1 => (true, false, 16),
            0x4d3c_b2a1 => (true, true, 16),
            _ => return None,
        };
        let lt = [h[20], h[21], h[22], h[23]];
        let linktype = if big_endian {
            i32::from_be_bytes(lt)
        } else {
            i32::from_le_bytes(lt)
        };
        Some(
            LinkType::from_linktype(linktype)
                .map(|link| Legacy {
                    link,
                    nanos,
                    big_endian,
                    record_header,
                })
                .ok_or(linktype),
        )
    }

    /// The four fields of the record header at the start of `h` (which holds at least 16
    /// bytes): seconds, sub-second units, captured length, wire length.
    #[inline(always)]
    fn record(&self, h: &[u8; 16]) -> [u32; 4] {
        if self.big_endian {
            record_fields::<true>(h)
        } else {
            record_fields::<false>(h)
        }
    }

    /// The frame of a record: `data` with the header's seconds, sub-second units and wire
    /// length.
    #[inline(always)]
    fn frame<'a>(&self, [ts_sec, frac, wire_len]: [u32; 3], data: &'a [u8]) -> Frame<'a> {
        let frac_ns = if self.nanos { 1 } else { 1000 };
        Frame {
            link: self.link,
            ts_ns: u64::from(ts_sec) * 1_000_000_000 + u64::from(frac) * frac_ns,
            data,
            wire_len: wire_len as usize,
            ahead: &[],
        }
    }
}

/// The four fields of a record header in byte order `BE`.
#[inline(always)]
fn record_fields<const BE: bool>(h: &[u8; 16]) -> [u32; 4] {
    let f = |i: usize| {
        let w = [h[i], h[i + 1], h[i + 2], h[i + 3]];
        if BE {
            u32::from_be_bytes(w)
        } else {
            u32::from_le_bytes(w)
        }
    };
    [f(0), f(4), f(8), f(12)]
}

/// Raw bytes of the file, `buf[..len]`; fewer than the buffer holds only at the end.
#[derive(Debug)]
pub(super) struct Chunk {
    buf: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// What the reading side hands over next.
#[derive(Debug)]
pub(super) enum Step<B> {
    /// The next bytes of the file (after the file header).
    Chunk(B),
    /// The end of the file.
    End,
    /// A read error.
    Failed,
}

/// Where a legacy pcap file's bytes come from, chunk after chunk, past the 24-byte file
/// header: `read()` into recycled buffers, or windows of a mapped file.
pub(super) trait ChunkSource: Send {
    type Chunk: AsRef<[u8]> + Send;
    /// The next chunk; `used` are chunks handed back by the decoding side.
    fn next(&mut self, used: &mut dyn Iterator<Item = Self::Chunk>) -> Step<Self::Chunk>;
}

/// Any byte stream positioned after the file header, read into recycled buffers.
impl<R: Read + Send> ChunkSource for R {
    type Chunk = Chunk;

    fn next(&mut self, used: &mut dyn Iterator<Item = Chunk>) -> Step<Chunk> {
        let mut buf = used.next().map(|c| c.buf).unwrap_or_default();
        if buf.len() < CHUNK {
            // Fresh zeroed memory from the allocator, not a fill loop.
            buf = vec![0; CHUNK];
        }
        match read_full(self, &mut buf) {
            Ok(0) => Step::End,
            Ok(len) => Step::Chunk(Chunk { buf, len }),
            Err(_) => Step::Failed,
        }
    }
}

/// Splits chunks of a legacy pcap stream into records and hands them to `on_frame`. A record
/// cut by a chunk edge is put together in `carry`; a record length over [`MAX_BLOCK`] is a
/// fault, as is a record cut by the end of the file.
struct Records<'p> {
    legacy: Legacy,
    path: &'p Path,
    /// File offset of the next record.
    offset: u64,
    /// The start of a record that the last chunk cut.
    carry: Vec<u8>,
    frames: u64,
}

impl<'p> Records<'p> {
    fn new(legacy: Legacy, path: &'p Path) -> Self {
        Records {
            legacy,
            path,
            offset: LEGACY_HEADER as u64,
            carry: Vec::new(),
            frames: 0,
        }
    }

    fn too_large(&self) -> CaptureError {
        CaptureError::Corrupt {
            path: self.path.to_path_buf(),
            offset: self.offset,
            what: format!("record larger than {MAX_BLOCK} bytes"),
        }
    }

    /// Every record that `data` completes, in order.
    #[inline]
    fn chunk(
        &mut self,
        mut data: &[u8],
        on_frame: &mut impl FnMut(Frame<'_>),
    ) -> Result<(), CaptureError> {
        let legacy = self.legacy;
        let rh = legacy.record_header;
        if !self.carry.is_empty() {
            // Complete the header, then the record.
            let mut take = rh.saturating_sub(self.carry.len()).min(data.len());
            self.carry.extend_from_slice(&data[..take]);
            data = &data[take..];
            let Some(h) = self.carry.first_chunk::<16>() else {
                return Ok(());
            };
            let caplen = legacy.record(h)[2] as usize;
            if caplen > MAX_BLOCK {
                return Err(self.too_large());
            }
            take = (rh + caplen - self.carry.len()).min(data.len());
            self.carry.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.carry.len() < rh + caplen {
                return Ok(());
            }
            let carry = std::mem::take(&mut self.carry);
            self.deliver(&carry, on_frame);
            self.carry = carry;
            self.carry.clear();
        }
        let pos = if legacy.big_endian {
            self.whole::<true>(data, on_frame)?
        } else {
            self.whole::<false>(data, on_frame)?
        };
        self.carry.extend_from_slice(&data[pos..]);
        Ok(())
    }

    /// Every whole record at the start of `data`, in a file of byte order `BE`; where the
    /// first record that `data` does not hold whole starts.
    #[inline(always)]
    fn whole<const BE: bool>(
        &mut self,
        data: &[u8],
        on_frame: &mut impl FnMut(Frame<'_>),
    ) -> Result<usize, CaptureError> {
        let legacy = self.legacy;
        let rh = legacy.record_header;
        // Each record header says where the next one starts, so without help every header
        // of a file that is not in the cache yet waits for memory in turn; the lines ahead are
        // asked for early instead.
        let mut fetched = 0;
        let mut pos = 0;
        let mut frames = 0;
        // The frame handed on as `ahead`: `ahead_n` records after the one at `pos`, starting
        // at `ahead_pos` (the lookahead stops at the first record `data` does not hold whole).
        let (mut ahead_pos, mut ahead_n) = (0, 0);
        let whole_at = |at: usize| -> Option<&[u8]> {
            let h = data.get(at..)?.first_chunk::<16>()?;
            let caplen = record_fields::<BE>(h)[2] as usize;
            data.get(at + rh..(at + rh).checked_add(caplen)?)
        };
        // The counters are brought up to date when the loop ends, not at every record.
        let result = loop {
            let Some(h) = data.get(pos..).and_then(|d| d.first_chunk::<16>()) else {
                break Ok(pos);
            };
            let until = (pos + PREFETCH_AHEAD).min(data.len());
            while fetched < until {
                mapped::prefetch(&data[fetched]);
                fetched += 64;
            }
            let [ts_sec, frac, caplen, wire_len] = record_fields::<BE>(h);
            let caplen = caplen as usize;
            if caplen > MAX_BLOCK {
                break Err(pos);
            }
            let Some(frame) = data.get(pos + rh..pos + rh + caplen) else {
                break Ok(pos);
            };
            let mut ahead = &[][..];
            while let Some(f) = whole_at(ahead_pos) {
                if ahead_n == LOOKAHEAD {
                    ahead = f;
                    break;
                }
                ahead_pos += rh + f.len();
                ahead_n += 1;
            }
            let mut frame = legacy.frame([ts_sec, frac, wire_len], frame);
            frame.ahead = ahead;
            on_frame(frame);
            frames += 1;
            pos += rh + caplen;
            if ahead_n > 0 {
                ahead_n -= 1;
            } else {
                ahead_pos = pos;
            }
        };
        self.frames += frames;
        match result {
            Ok(pos) => {
                self.offset += pos as u64;
                Ok(pos)
            }
            Err(pos) => {
                self.offset += pos as u64;
                Err(self.too_large())
            }
        }
    }

    /// One whole record (header included).
    #[inline(always)]
    fn deliver(&mut self, record: &[u8], on_frame: &mut impl FnMut(Frame<'_>)) {
        let legacy = self.legacy;
        let Some(h) = record.first_chunk::<16>() else {
            return;
        };
        let [ts_sec, frac, _, wire_len] = legacy.record(h);
        on_frame(legacy.frame([ts_sec, frac, wire_len], &record[legacy.record_header..]));
        self.frames += 1;
        self.offset += record.len() as u64;
    }

    /// The end of the stream: a record still open was cut short.
    fn end(&self) -> Result<FileSummary, CaptureError> {
        if !self.carry.is_empty() {
            return Err(CaptureError::Truncated {
                path: self.path.to_path_buf(),
                offset: self.offset,
            });
        }
        Ok(FileSummary {
            frames: self.frames,
            unsupported_link_frames: 0,
            bytes: self.offset,
        })
    }

    fn read_failed(&self) -> CaptureError {
        CaptureError::Read {
            path: self.path.to_path_buf(),
            offset: self.offset,
        }
    }
}

fn legacy_inline<S: ChunkSource>(
    mut source: S,
    mut records: Records<'_>,
    mut on_frame: impl FnMut(Frame<'_>),
) -> Result<FileSummary, CaptureError> {
    let mut used = None;
    loop {
        match source.next(&mut used.take().into_iter()) {
            Step::Chunk(chunk) => {
                records.chunk(chunk.as_ref(), &mut on_frame)?;
                used = Some(chunk);
            }
            Step::End => return records.end(),
            Step::Failed => return Err(records.read_failed()),
        }
    }
}

/// The file read on its own thread, chunks handed over a bounded channel and handed back
/// (for reuse, or for the reading thread to release).
fn legacy_threaded<S: ChunkSource>(
    source: S,
    mut records: Records<'_>,
    mut on_frame: impl FnMut(Frame<'_>),
) -> Result<FileSummary, CaptureError> {
    let mut slot = Some(source);
    let (tx, rx) = crossbeam_channel::bounded::<Step<S::Chunk>>(CHUNKS_IN_FLIGHT);
    let (used_tx, used_rx) = crossbeam_channel::bounded::<S::Chunk>(CHUNKS_IN_FLIGHT + 2);
    let threaded = std::thread::scope(|scope| {
        let slot = &mut slot;
        let reader = std::thread::Builder::new()
            .name("pcap-read".into())
            .spawn_scoped(scope, move || {
                let Some(mut source) = slot.take() else {
                    return;
                };
                loop {
                    let step = source.next(&mut used_rx.try_iter());
                    let last = !matches!(step, Step::Chunk(_));
                    // A closed channel means the decoding side has stopped (at a fault, or
                    // it panicked): stop reading.
                    if tx.send(step).is_err() || last {
                        break;
                    }
                }
                // Release what comes back here, not on the decoding thread.
                drop(tx);
                used_rx.iter().for_each(drop);
            });
        if reader.is_err() {
            return None;
        }
        let records = &mut records;
        let result = (|| {
            for step in rx.iter() {
                match step {
                    Step::Chunk(chunk) => {
                        records.chunk(chunk.as_ref(), &mut on_frame)?;
                        let _ = used_tx.try_send(chunk);
                    }
                    Step::End => return records.end(),
                    Step::Failed => return Err(records.read_failed()),
                }
            }
            // Only a panic on the reader thread ends it without a last step; the scope
            // passes the panic on.
            Err(records.read_failed())
        })();
        // Unblock the reader if it is waiting to hand over more, and let it finish.
        drop(rx);
        drop(used_tx);
        Some(result)
    });
    match (threaded, slot) {
        (Some(result), _) => result,
        // No thread to be had: read on this one.
        (None, Some(source)) => legacy_inline(source, records, on_frame),
        (None, None) => Err(records.read_failed()),
    }
}

/// pcapng (and the error cases of short or unrecognised files) through `pcap-parser`.
fn read_parsed(
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
                            ahead: &[],
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
                            ahead: &[],
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
                            ahead: &[],
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

    /// A legacy pcap file: `sizes` records of those captured lengths, in either byte order.
    fn legacy_file(magic: u32, big_endian: bool, sizes: &[usize]) -> Vec<u8> {
        let w = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut f = Vec::new();
        f.extend_from_slice(&w(magic));
        f.extend_from_slice(&[0, 2, 0, 4].map(|b| b));
        f.extend_from_slice(&[0u8; 8]);
        f.extend_from_slice(&w(65535));
        f.extend_from_slice(&w(1));
        for (i, &n) in sizes.iter().enumerate() {
            let i = i as u32;
            f.extend_from_slice(&w(1_700_000_000 + i));
            f.extend_from_slice(&w(i * 7 % 1_000_000));
            f.extend_from_slice(&w(n as u32));
            f.extend_from_slice(&w(n as u32 + (i % 3)));
            f.extend((0..n).map(|j| (i as usize + j) as u8));
        }
        f
    }

    type Seen = (Vec<(u64, Vec<u8>, usize)>, Result<FileSummary, String>);

    fn collect(
        f: impl FnOnce(&mut dyn FnMut(Frame<'_>)) -> Result<FileSummary, CaptureError>,
    ) -> Seen {
        let mut frames = Vec::new();
        let r = f(&mut |fr: Frame<'_>| frames.push((fr.ts_ns, fr.data.to_vec(), fr.wire_len)));
        (frames, r.map_err(|e| e.to_string()))
    }

    /// The fast legacy reader, inline and threaded, against pcap-parser's reading of the same
    /// bytes.
    fn agree(bytes: &[u8]) {
        let path = Path::new("x.pcap");
        let parsed = collect(|cb| read_parsed(bytes, path, cb));
        let inline = collect(|cb| read(bytes, path, false, cb));
        let threaded = collect(|cb| read(bytes, path, true, cb));
        assert_eq!(inline.0, parsed.0, "frames (inline)");
        assert_eq!(threaded.0, parsed.0, "frames (threaded)");
        let frames_of = |r: &Result<FileSummary, String>| {
            r.as_ref()
                .map(|s| (s.frames, s.bytes))
                .map_err(Clone::clone)
        };
        assert_eq!(frames_of(&inline.1), frames_of(&parsed.1));
        assert_eq!(frames_of(&threaded.1), frames_of(&parsed.1));
        // Mapped in small windows, so that records and headers straddle windows, on this
        // thread and on a reading thread; errors name the same offsets.
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("x.pcap");
        std::fs::write(&file, bytes).expect("write capture");
        for (window, threaded) in [(4096, false), (4096, true), (3 * 4096, true)] {
            let mapped = collect(|cb| read_file_mapped(&file, window, threaded, cb));
            assert_eq!(mapped.0, parsed.0, "frames (mapped, {window}, {threaded})");
            let err_at = |r: &Result<FileSummary, String>| {
                r.as_ref().map(|s| (s.frames, s.bytes)).map_err(|e| {
                    e.split("byte offset ")
                        .nth(1)
                        .map(str::to_owned)
                        .unwrap_or_else(|| e.clone())
                })
            };
            assert_eq!(err_at(&mapped.1), err_at(&parsed.1));
        }
    }

    /// Each frame and the `ahead` it was handed with.
    fn with_ahead(bytes: &[u8], threaded: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut seen = Vec::new();
        let on_frame = |fr: Frame<'_>| seen.push((fr.data.to_vec(), fr.ahead.to_vec()));
        read(bytes, Path::new("x.pcap"), threaded, on_frame).expect("read");
        seen
    }

    #[test]
    fn a_frame_comes_with_the_frame_a_few_records_later_as_a_hint() {
        let sizes: Vec<usize> = (0..100).map(|i| 60 + i).collect();
        let bytes = legacy_file(0xa1b2_c3d4, false, &sizes);
        for threaded in [false, true] {
            let seen = with_ahead(&bytes, threaded);
            assert_eq!(seen.len(), sizes.len());
            for (i, (_, ahead)) in seen.iter().enumerate() {
                let later = seen.get(i + LOOKAHEAD).map_or(&[][..], |s| &s.0[..]);
                assert_eq!(&ahead[..], later, "frame {i} ({threaded})");
            }
        }
        // Across chunk edges the hint may be missing, never wrong.
        let sizes: Vec<usize> = (0..3000).map(|i| (i * 37) % 1500).collect();
        let seen = with_ahead(&legacy_file(0xa1b2_c3d4, true, &sizes), true);
        let mut hinted = 0;
        for (i, (_, ahead)) in seen.iter().enumerate() {
            if !ahead.is_empty() {
                hinted += 1;
                assert_eq!(
                    Some(ahead),
                    seen.get(i + LOOKAHEAD).map(|s| &s.0),
                    "frame {i}"
                );
            }
        }
        assert!(hinted * 10 >= seen.len() * 9, "{hinted} of {}", seen.len());
    }

    #[test]
    fn legacy_records_across_chunk_boundaries_match_pcap_parser() {
        // Sizes that put record boundaries and headers across every chunk edge, and records
        // larger than a chunk.
        let mut sizes: Vec<usize> = (0..3000).map(|i| (i * 37) % 1500).collect();
        sizes.extend([CHUNK + 5, 60, 3 * CHUNK, 0, 1]);
        sizes.extend((0..2000).map(|i| (i * 53) % 400));
        for (magic, be) in [
            (0xa1b2_c3d4, false),
            (0xa1b2_c3d4, true),
            (0xa1b2_3c4d, false),
            (0xa1b2_3c4d, true),
        ] {
            agree(&legacy_file(magic, be, &sizes));
        }
    }

    #[test]
    fn a_pipe_is_read_as_a_stream() {
        let bytes = legacy_file(0xa1b2_c3d4, false, &[60, 1514, 42]);
        let dir = tempfile::tempdir().expect("temp dir");
        let fifo = dir.path().join("capture.pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            return; // no mkfifo on this system
        }
        let writer = {
            let (fifo, bytes) = (fifo.clone(), bytes.clone());
            std::thread::spawn(move || std::fs::write(fifo, bytes))
        };
        let piped = collect(|cb| read_file(&fifo, cb));
        writer.join().expect("writer").expect("write to the pipe");
        let parsed = collect(|cb| read_parsed(&bytes[..], Path::new("x.pcap"), cb));
        assert_eq!(piped.0, parsed.0);
        assert_eq!(piped.0.len(), 3);
    }

    #[test]
    fn legacy_truncation_and_corruption_match_pcap_parser() {
        let full = legacy_file(0xa1b2_c3d4, false, &[60, 0, 1514, 42, 100]);
        // Every cut inside the first records, then a sample (pcap-parser's reading is slow in
        // debug builds).
        let first_records = LEGACY_HEADER + 16 + 60 + 16 + 16 + 20;
        for cut in (LEGACY_HEADER..first_records).chain((first_records..full.len()).step_by(17)) {
            agree(&full[..cut]);
        }
        // An absurd captured length in the third record.
        let mut bad = full.clone();
        let third = LEGACY_HEADER + 16 + 60 + 16;
        bad[third + 8..third + 12].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
        let (frames, r) = collect(|cb| read(&bad[..], Path::new("x.pcap"), true, cb));
        assert_eq!(frames.len(), 2);
        assert!(r.unwrap_err().contains(&format!("byte offset {third}")));
    }
}
