//! The sensor's bounded on-disk queue for messages the broker could not take.
//!
//! Layout of the spool directory:
//!
//! ```text
//! lock                      held (flock) by the one process using the spool
//! head                      the commit point: segment, offset, entries committed in it, CRC
//! 00000000000000000007.seg  segments, oldest first: "NWSP" | format version u16 | entries
//! ```
//!
//! An entry is `body length u32 LE | CRC-32C of body u32 LE | body`, the body being
//! `topic length u8 | topic | partition i32 LE | key length u32 LE | key | payload`.
//!
//! Each push is one `write(2)` before it returns, so a crash of the process loses nothing
//! pushed; [`Spool::sync`] forces it to the device. When the spool would pass its size limit,
//! whole oldest segments are deleted, committed or not, and their entries counted as dropped.
//! On open, a torn last entry (a crash mid-write) is cut off and counted, and an entry whose
//! checksum fails is counted and skipped.

use std::collections::{BTreeSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: [u8; 4] = *b"NWSP";
const VERSION: u16 = 1;
const SEG_HEADER: u64 = 6;
const ENTRY_HEADER: u64 = 8;

/// One spooled message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolEntry {
    pub topic: String,
    pub partition: i32,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Where an entry sits: (segment number, byte offset of the entry in it). Ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// Why a spool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is in use by another process")]
    Locked(PathBuf),
    #[error("a {size}-byte message does not fit a spool of {max} bytes")]
    EntryTooLarge { size: u64, max: u64 },
    #[error("the topic name is longer than 255 bytes")]
    TopicTooLong,
}

/// Counters since open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolCounters {
    pub pushed: u64,
    pub committed: u64,
    pub dropped_entries: u64,
    pub dropped_bytes: u64,
    pub corrupt_entries: u64,
    pub torn_bytes: u64,
    /// What the dropped entries weighed (see [`Spool::set_weigher`]): records, for batches.
    pub dropped_weight: u64,
    /// Pushes whose write failed part way and was rolled back.
    pub rolled_back: u64,
}

/// What one spooled entry is worth counting when it is lost (e.g. its records).
pub type Weigher = fn(&SpoolEntry) -> u64;

#[derive(Debug)]
struct Segment {
    no: u64,
    /// End of the valid data (the file size for segments this process wrote).
    end: u64,
    /// Valid entries in it.
    entries: u64,
}

/// The spool. Not thread-safe by itself: wrap it in a mutex to share it.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    writer: File,
    /// The first entry not yet committed.
    head: Position,
    /// Entries of the head segment before `head`.
    head_committed: u64,
    /// Entries not yet committed.
    len: u64,
    /// Entries found corrupt at open (skipped by reads and commits).
    corrupt: BTreeSet<Position>,
    reader: Option<(u64, File)>,
    scratch: Vec<u8>,
    counters: SpoolCounters,
    weigh: Option<Weigher>,
    /// Test hook: the next push writes this many bytes, then fails as a full disk does.
    #[cfg(test)]
    short_write: Option<usize>,
    _lock: File,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn seg_name(no: u64) -> String {
    format!("{no:020}.seg")
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, holding at most `max_bytes` on disk.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(SpoolError::Locked(dir.to_path_buf()));
        }
        let max_bytes = max_bytes.max(4096);
        let segment_bytes = (max_bytes / 16).clamp(4096, 64 << 20);
        let mut counters = SpoolCounters::default();
        let (head_seg, head_off) = read_head(dir).unwrap_or((0, SEG_HEADER));

        let mut numbers = Vec::new();
        for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let e = e.map_err(io_err(dir))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(no) = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<u64>().ok())
            {
                numbers.push(no);
            }
        }
        numbers.sort_unstable();
        let mut segments = VecDeque::new();
        let mut corrupt = BTreeSet::new();
        let last = numbers.last().copied();
        for no in numbers {
            let path = dir.join(seg_name(no));
            if no < head_seg {
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            match scan(
                &path,
                no,
                Some(no) == last,
                max_bytes,
                &mut corrupt,
                &mut counters,
            )? {
                Some(seg) => segments.push_back(seg),
                None => {
                    // Not a segment of ours (bad header): set aside, never read.
                    let bad = path.with_extension("bad");
                    std::fs::rename(&path, &bad).map_err(io_err(&path))?;
                    counters.corrupt_entries += 1;
                }
            }
        }
        // The commit point, clamped to what exists.
        let (head, head_committed) = match segments.front() {
            Some(first) if first.no == head_seg => {
                let off = head_off.min(first.end);
                let pos = Position {
                    segment: head_seg,
                    offset: off,
                };
                let before = count_before(dir, first, off, &corrupt)?;
                (pos, before)
            }
            Some(first) => (
                Position {
                    segment: first.no,
                    offset: SEG_HEADER,
                },
                0,
            ),
            None => (
                Position {
                    segment: head_seg.max(last.map_or(0, |l| l + 1)),
                    offset: SEG_HEADER,
                },
                0,
            ),
        };
        if segments.is_empty() {
            segments.push_back(new_segment(dir, head.segment)?);
        }
        let active = segments.back().map_or(head.segment, |s| s.no);
        let path = dir.join(seg_name(active));
        let writer = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let total: u64 = segments.iter().map(|s| s.entries).sum();
        let spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes,
            segments,
            writer,
            head,
            head_committed,
            len: total - head_committed,
            corrupt,
            reader: None,
            scratch: Vec::new(),
            counters,
            weigh: None,
            #[cfg(test)]
            short_write: None,
            _lock: lock,
        };
        spool.write_head()?;
        Ok(spool)
    }

    /// Appends an entry, deleting the oldest segments first if the spool would pass its
    /// limit; returns how many entries were dropped for room.
    pub fn push(&mut self, entry: &SpoolEntry) -> Result<u64, SpoolError> {
        let topic = entry.topic.as_bytes();
        let topic_len = u8::try_from(topic.len()).map_err(|_| SpoolError::TopicTooLong)?;
        let body_len = 1 + topic.len() + 4 + 4 + entry.key.len() + entry.payload.len();
        let size = ENTRY_HEADER + body_len as u64;
        if size + SEG_HEADER > self.max_bytes || body_len > u32::MAX as usize {
            return Err(SpoolError::EntryTooLarge {
                size,
                max: self.max_bytes,
            });
        }
        let mut dropped = 0;
        // Room: whole oldest segments go (the active one is rolled first if it is the last).
        while self.disk_bytes() + size > self.max_bytes {
            if self.segments.len() == 1 {
                self.roll()?;
            }
            dropped += self.drop_oldest()?;
        }
        let active = self.segments.back().map_or(0, |s| s.end);
        if active > SEG_HEADER && active + size > self.segment_bytes {
            self.roll()?;
        }
        let b = &mut self.scratch;
        b.clear();
        b.extend_from_slice(&(body_len as u32).to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        b.push(topic_len);
        b.extend_from_slice(topic);
        b.extend_from_slice(&entry.partition.to_le_bytes());
        b.extend_from_slice(&(entry.key.len() as u32).to_le_bytes());
        b.extend_from_slice(&entry.key);
        b.extend_from_slice(&entry.payload);
        let crc = crc32c::crc32c(&b[8..]);
        b[4..8].copy_from_slice(&crc.to_le_bytes());
        let seg = self
            .segments
            .back_mut()
            .expect("an active segment always exists");
        let path = self.dir.join(seg_name(seg.no));
        #[cfg(test)]
        let written = match self.short_write.take() {
            Some(n) => self.writer.write_all(&b[..n.min(b.len())]).and(Err(
                std::io::Error::from_raw_os_error(28), // ENOSPC
            )),
            None => self.writer.write_all(b),
        };
        #[cfg(not(test))]
        let written = self.writer.write_all(b);
        if let Err(e) = written {
            // A partial entry (a full disk) is cut off, so the segment ends on a whole entry
            // and later pushes and reads line up; otherwise replay would stop there for good.
            if let Err(cut) = self.writer.set_len(seg.end) {
                tracing::error!(error = %cut, path = %path.display(), "cannot cut a partial spool entry");
            } else {
                self.counters.rolled_back += 1;
            }
            return Err(io_err(&path)(e));
        }
        seg.end += size;
        seg.entries += 1;
        self.len += 1;
        self.counters.pushed += 1;
        Ok(dropped)
    }

    /// Up to `max` entries after `after` (`None`: from the oldest uncommitted), in order.
    pub fn read(
        &mut self,
        after: Option<Position>,
        max: usize,
    ) -> Result<Vec<(Position, SpoolEntry)>, SpoolError> {
        let mut pos = match after {
            Some(p) if p >= self.head => self.next_after(p)?,
            _ => self.head,
        };
        let mut out = Vec::new();
        while out.len() < max {
            let Some(seg_end) = self.segment(pos.segment).map(|s| s.end) else {
                break;
            };
            if pos.offset >= seg_end {
                match self.segments.iter().find(|s| s.no > pos.segment) {
                    Some(next) => {
                        pos = Position {
                            segment: next.no,
                            offset: SEG_HEADER,
                        }
                    }
                    None => break,
                }
                continue;
            }
            let (len, entry) = self.read_at(pos)?;
            if let Some(e) = entry {
                out.push((pos, e));
            }
            pos.offset += ENTRY_HEADER + len;
        }
        Ok(out)
    }

    /// Marks every entry up to and including `through` delivered.
    pub fn commit(&mut self, through: Position) -> Result<(), SpoolError> {
        if through < self.head {
            return Ok(());
        }
        let end = self.next_after(through)?;
        // Count the entries between the old head and `end`.
        let mut pos = self.head;
        while pos < end {
            let Some(seg) = self.segment(pos.segment) else {
                break;
            };
            if pos.offset >= seg.end {
                let no = pos.segment;
                match self.segments.iter().find(|s| s.no > no) {
                    Some(next) => {
                        pos = Position {
                            segment: next.no,
                            offset: SEG_HEADER,
                        };
                        self.head_committed = 0;
                    }
                    None => break,
                }
                continue;
            }
            let len = self.entry_len(pos)?;
            if !self.corrupt.contains(&pos) {
                self.len = self.len.saturating_sub(1);
                self.head_committed += 1;
                self.counters.committed += 1;
            }
            pos.offset += ENTRY_HEADER + len;
        }
        self.head = pos;
        // Segments wholly delivered go (never the active one).
        while self.segments.len() > 1
            && self
                .segments
                .front()
                .is_some_and(|s| s.no < self.head.segment)
        {
            if let Some(s) = self.segments.pop_front() {
                self.remove_segment(s.no)?;
            }
        }
        if let Some(first) = self.segments.front() {
            if self.segments.len() > 1
                && self.head.segment == first.no
                && self.head.offset >= first.end
            {
                let no = first.no;
                self.segments.pop_front();
                self.remove_segment(no)?;
                self.head = Position {
                    segment: self.segments.front().map_or(no + 1, |s| s.no),
                    offset: SEG_HEADER,
                };
                self.head_committed = 0;
            }
        }
        self.write_head()
    }

    /// Entries not yet committed.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the spool's segments take on disk.
    pub fn bytes(&self) -> u64 {
        self.disk_bytes()
    }

    pub fn counters(&self) -> SpoolCounters {
        self.counters
    }

    /// Moves every uncommitted entry of `other` to the end of this spool, in order, and
    /// commits them there; returns how many moved. A crash part way sends some twice, never
    /// none: entries are pushed here before they are committed there.
    pub fn take_from(&mut self, other: &mut Spool) -> Result<u64, SpoolError> {
        let mut moved = 0;
        loop {
            let got = other.read(None, 256)?;
            let Some((last, _)) = got.last() else {
                break;
            };
            let last = *last;
            for (_, e) in &got {
                self.push(e)?;
                moved += 1;
            }
            self.sync()?;
            other.commit(last)?;
        }
        Ok(moved)
    }

    /// Has entries dropped for room weighed (their records counted as lost, say).
    pub fn set_weigher(&mut self, weigh: Weigher) {
        self.weigh = Some(weigh);
    }

    /// What the entries from `from` to the end of segment `seg` weigh.
    fn weigh_rest(&mut self, seg: u64, end: u64, from: u64) -> u64 {
        let Some(weigh) = self.weigh else {
            return 0;
        };
        let mut pos = Position {
            segment: seg,
            offset: from,
        };
        let mut w = 0;
        while pos.offset < end {
            match self.read_at(pos) {
                Ok((len, entry)) => {
                    w += entry.map_or(0, |e| weigh(&e));
                    pos.offset += ENTRY_HEADER + len;
                }
                Err(_) => break,
            }
        }
        w
    }

    /// Forces written entries and the commit point to the device.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        let path = self.dir.clone();
        self.writer.sync_data().map_err(io_err(&path))?;
        let head = self.dir.join("head");
        File::open(&head)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&head))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&path))
    }

    fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.end).sum()
    }

    fn segment(&self, no: u64) -> Option<&Segment> {
        self.segments.iter().find(|s| s.no == no)
    }

    fn roll(&mut self) -> Result<(), SpoolError> {
        let no = self.segments.back().map_or(0, |s| s.no + 1);
        let seg = new_segment(&self.dir, no)?;
        let path = self.dir.join(seg_name(no));
        // The finished segment is made durable before writes move on.
        let old = self.dir.clone();
        self.writer.sync_data().map_err(io_err(&old))?;
        self.writer = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        self.segments.push_back(seg);
        Ok(())
    }

    /// Deletes the oldest segment; returns the uncommitted entries it held.
    fn drop_oldest(&mut self) -> Result<u64, SpoolError> {
        let Some(seg) = self.segments.pop_front() else {
            return Ok(0);
        };
        let lost = if seg.no == self.head.segment {
            seg.entries - self.head_committed
        } else if seg.no > self.head.segment {
            seg.entries
        } else {
            0
        };
        let lost_bytes = if seg.no == self.head.segment {
            seg.end - self.head.offset
        } else {
            seg.end - SEG_HEADER
        };
        if lost > 0 {
            let from = if seg.no == self.head.segment {
                self.head.offset
            } else {
                SEG_HEADER
            };
            // The segment is out of the list already; read_at only needs its file.
            self.counters.dropped_weight += self.weigh_rest(seg.no, seg.end, from);
        }
        self.remove_segment(seg.no)?;
        if seg.no >= self.head.segment {
            self.head = Position {
                segment: self.segments.front().map_or(seg.no + 1, |s| s.no),
                offset: SEG_HEADER,
            };
            self.head_committed = 0;
        }
        self.len = self.len.saturating_sub(lost);
        self.counters.dropped_entries += lost;
        self.counters.dropped_bytes += lost_bytes;
        self.write_head()?;
        Ok(lost)
    }

    fn remove_segment(&mut self, no: u64) -> Result<(), SpoolError> {
        if self.reader.as_ref().is_some_and(|(n, _)| *n == no) {
            self.reader = None;
        }
        self.corrupt.retain(|p| p.segment != no);
        let path = self.dir.join(seg_name(no));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&path)(e)),
            _ => Ok(()),
        }
    }

    fn file(&mut self, no: u64) -> Result<&File, SpoolError> {
        if self.reader.as_ref().is_none_or(|(n, _)| *n != no) {
            let path = self.dir.join(seg_name(no));
            let f = File::open(&path).map_err(io_err(&path))?;
            self.reader = Some((no, f));
        }
        Ok(&self.reader.as_ref().expect("just opened").1)
    }

    fn entry_len(&mut self, pos: Position) -> Result<u64, SpoolError> {
        let path = self.dir.join(seg_name(pos.segment));
        let mut h = [0u8; 4];
        self.file(pos.segment)?
            .read_exact_at(&mut h, pos.offset)
            .map_err(io_err(&path))?;
        Ok(u64::from(u32::from_le_bytes(h)))
    }

    fn next_after(&mut self, p: Position) -> Result<Position, SpoolError> {
        if self.segment(p.segment).is_none() {
            return Ok(self.head);
        }
        let len = self.entry_len(p)?;
        Ok(Position {
            segment: p.segment,
            offset: p.offset + ENTRY_HEADER + len,
        })
    }

    /// The entry at `pos` (None if it is corrupt) and its body length.
    fn read_at(&mut self, pos: Position) -> Result<(u64, Option<SpoolEntry>), SpoolError> {
        let path = self.dir.join(seg_name(pos.segment));
        let corrupt = self.corrupt.contains(&pos);
        let f = self.file(pos.segment)?;
        let mut h = [0u8; 8];
        f.read_exact_at(&mut h, pos.offset).map_err(io_err(&path))?;
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        if corrupt {
            return Ok((u64::from(len), None));
        }
        let mut body = vec![0u8; len as usize];
        f.read_exact_at(&mut body, pos.offset + ENTRY_HEADER)
            .map_err(io_err(&path))?;
        if crc32c::crc32c(&body) != crc {
            return Ok((u64::from(len), None));
        }
        Ok((u64::from(len), parse_body(&body)))
    }

    fn write_head(&self) -> Result<(), SpoolError> {
        let mut b = Vec::with_capacity(28);
        b.extend_from_slice(&self.head.segment.to_le_bytes());
        b.extend_from_slice(&self.head.offset.to_le_bytes());
        b.extend_from_slice(&self.head_committed.to_le_bytes());
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        let tmp = self.dir.join("head.tmp");
        std::fs::write(&tmp, &b).map_err(io_err(&tmp))?;
        let head = self.dir.join("head");
        std::fs::rename(&tmp, &head).map_err(io_err(&head))
    }
}

fn read_head(dir: &Path) -> Option<(u64, u64)> {
    let b = std::fs::read(dir.join("head")).ok()?;
    if b.len() != 28 || crc32c::crc32c(&b[..24]).to_le_bytes() != b[24..28] {
        return None;
    }
    let seg = u64::from_le_bytes(b[0..8].try_into().ok()?);
    let off = u64::from_le_bytes(b[8..16].try_into().ok()?);
    Some((seg, off.max(SEG_HEADER)))
}

fn new_segment(dir: &Path, no: u64) -> Result<Segment, SpoolError> {
    let path = dir.join(seg_name(no));
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    let mut h = Vec::with_capacity(SEG_HEADER as usize);
    h.extend_from_slice(&MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    f.write_all(&h).map_err(io_err(&path))?;
    Ok(Segment {
        no,
        end: SEG_HEADER,
        entries: 0,
    })
}

/// Validates a segment file: counts its entries, records corrupt ones, and cuts a torn tail
/// off the last segment. `None` if it is not a spool segment.
fn scan(
    path: &Path,
    no: u64,
    last: bool,
    max_bytes: u64,
    corrupt: &mut BTreeSet<Position>,
    counters: &mut SpoolCounters,
) -> Result<Option<Segment>, SpoolError> {
    let data = std::fs::read(path).map_err(io_err(path))?;
    if last && data.len() < SEG_HEADER as usize {
        // A crash while a new segment was being started: start it again.
        return new_segment(path.parent().unwrap_or(Path::new(".")), no).map(Some);
    }
    if data.len() < SEG_HEADER as usize
        || data[..4] != MAGIC
        || u16::from_le_bytes([data[4], data[5]]) != VERSION
    {
        return Ok(None);
    }
    let mut off = SEG_HEADER as usize;
    let mut entries = 0;
    let mut bad_len = false;
    while off < data.len() {
        let rest = &data[off..];
        if rest.len() < ENTRY_HEADER as usize {
            break;
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len as u64 > max_bytes {
            // A damaged length: nothing after it can be framed.
            counters.corrupt_entries += 1;
            bad_len = true;
            break;
        }
        if rest.len() < ENTRY_HEADER as usize + len {
            break;
        }
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let body = &rest[8..8 + len];
        if crc32c::crc32c(body) == crc && parse_body(body).is_some() {
            entries += 1;
        } else {
            counters.corrupt_entries += 1;
            corrupt.insert(Position {
                segment: no,
                offset: off as u64,
            });
        }
        off += 8 + len;
    }
    if off < data.len() {
        let cut = (data.len() - off) as u64;
        if last {
            // A crash mid-write (or a damaged length, counted above): cut the rest off so
            // appends continue cleanly.
            counters.torn_bytes += cut;
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_err(path))?;
            f.set_len(off as u64).map_err(io_err(path))?;
        } else if !bad_len {
            // Damage inside an older segment: what follows cannot be framed; skip it.
            counters.corrupt_entries += 1;
        }
    }
    Ok(Some(Segment {
        no,
        end: off as u64,
        entries,
    }))
}

/// Valid entries of `seg` before `off`.
fn count_before(
    dir: &Path,
    seg: &Segment,
    off: u64,
    corrupt: &BTreeSet<Position>,
) -> Result<u64, SpoolError> {
    let path = dir.join(seg_name(seg.no));
    let f = File::open(&path).map_err(io_err(&path))?;
    let mut pos = SEG_HEADER;
    let mut n = 0;
    while pos < off && pos < seg.end {
        let mut h = [0u8; 4];
        f.read_exact_at(&mut h, pos).map_err(io_err(&path))?;
        if !corrupt.contains(&Position {
            segment: seg.no,
            offset: pos,
        }) {
            n += 1;
        }
        pos += ENTRY_HEADER + u64::from(u32::from_le_bytes(h));
    }
    Ok(n)
}

fn parse_body(b: &[u8]) -> Option<SpoolEntry> {
    let (&tl, rest) = b.split_first()?;
    let topic = std::str::from_utf8(rest.get(..tl as usize)?)
        .ok()?
        .to_string();
    let rest = &rest[tl as usize..];
    let partition = i32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
    let kl = u32::from_le_bytes(rest.get(4..8)?.try_into().ok()?) as usize;
    let key = rest.get(8..8 + kl)?.to_vec();
    let payload = rest.get(8 + kl..)?.to_vec();
    Some(SpoolEntry {
        topic,
        partition,
        key,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64, size: usize) -> SpoolEntry {
        SpoolEntry {
            topic: "normwatch.flows".into(),
            partition: (i % 3) as i32 - 1,
            key: format!("k{i}").into_bytes(),
            payload: {
                let mut p = i.to_le_bytes().to_vec();
                p.resize(size.max(8), (i % 251) as u8);
                p
            },
        }
    }

    fn id(e: &SpoolEntry) -> u64 {
        u64::from_le_bytes(e.payload[..8].try_into().unwrap())
    }

    fn ids(v: &[(Position, SpoolEntry)]) -> Vec<u64> {
        v.iter().map(|(_, e)| id(e)).collect()
    }

    #[test]
    fn order_is_kept_across_segments_and_reads_continue() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 0..500 {
            s.push(&entry(i, 300)).unwrap();
        }
        assert!(s.segments.len() > 2, "several segments");
        assert_eq!(s.len(), 500);
        let first = s.read(None, 100).unwrap();
        assert_eq!(ids(&first), (0..100).collect::<Vec<_>>());
        assert_eq!(first[7].1, entry(7, 300));
        let next = s.read(Some(first[99].0), 1000).unwrap();
        assert_eq!(ids(&next), (100..500).collect::<Vec<_>>());
        s.commit(first[99].0).unwrap();
        assert_eq!(s.len(), 400);
        assert_eq!(ids(&s.read(None, 1).unwrap()), [100]);
        s.commit(next.last().unwrap().0).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.segments.len(), 1, "delivered segments are deleted");
        s.push(&entry(500, 10)).unwrap();
        assert_eq!(ids(&s.read(None, 10).unwrap()), [500]);
        assert_eq!(s.counters().committed, 500);
    }

    #[test]
    fn a_partial_write_on_a_full_disk_is_rolled_back_and_replay_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 0..10 {
            s.push(&entry(i, 200)).unwrap();
        }
        s.short_write = Some(57);
        assert!(matches!(
            s.push(&entry(99, 200)),
            Err(SpoolError::Io { .. })
        ));
        assert_eq!(s.counters().rolled_back, 1);
        for i in 10..20 {
            s.push(&entry(i, 200)).unwrap();
        }
        let want: Vec<u64> = (0..20).collect();
        assert_eq!(ids(&s.read(None, 100).unwrap()), want);
        drop(s);
        // A later run finds whole entries only: nothing torn, nothing corrupt, all replayed.
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            (s.counters().torn_bytes, s.counters().corrupt_entries),
            (0, 0)
        );
        assert_eq!(ids(&s.read(None, 100).unwrap()), want);
    }

    #[test]
    fn another_spool_is_taken_over_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Spool::open(&dir.path().join("a"), 1 << 20).unwrap();
        let mut b = Spool::open(&dir.path().join("b"), 1 << 20).unwrap();
        for i in 0..5 {
            a.push(&entry(i, 100)).unwrap();
        }
        for i in 5..700 {
            b.push(&entry(i, 100)).unwrap();
        }
        let first = b.read(None, 1).unwrap();
        b.commit(first[0].0).unwrap();
        assert_eq!(a.take_from(&mut b).unwrap(), 694);
        assert!(b.is_empty());
        let want: Vec<u64> = (0..5).chain(6..700).collect();
        assert_eq!(ids(&a.read(None, 1000).unwrap()), want);
    }

    #[test]
    fn dropped_entries_are_weighed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 64 << 10).unwrap();
        s.set_weigher(|e| u64::from(e.payload[8]) + 1);
        let mut pushed = 0;
        for i in 0..400 {
            s.push(&entry(i, 500)).unwrap();
            pushed += 1;
        }
        let c = s.counters();
        assert!(c.dropped_entries > 0);
        // entry(i) pads with i % 251: each weighs (i % 251) + 1; the oldest went first.
        let want: u64 = (0..c.dropped_entries).map(|i| i % 251 + 1).sum();
        assert_eq!(c.dropped_weight, want);
        assert_eq!(s.len() + c.dropped_entries, pushed);
    }

    #[test]
    fn reopen_resumes_after_the_commit_point() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
            for i in 0..300 {
                s.push(&entry(i, 200)).unwrap();
            }
            let got = s.read(None, 120).unwrap();
            s.commit(got[119].0).unwrap();
        }
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.len(), 180);
        assert_eq!(
            ids(&s.read(None, 1000).unwrap()),
            (120..300).collect::<Vec<_>>()
        );
        drop(s);
        // Without a commit, everything is read again.
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.len(), 180);
        assert_eq!(s.read(None, 1000).unwrap().len(), 180);
    }

    #[test]
    fn full_spool_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let max = 64 << 10;
        let mut s = Spool::open(dir.path(), max).unwrap();
        let mut dropped = 0;
        for i in 0..400 {
            dropped += s.push(&entry(i, 1000)).unwrap();
            assert!(s.bytes() <= max);
        }
        assert!(dropped > 0);
        assert_eq!(s.counters().dropped_entries, dropped);
        assert_eq!(s.len() + dropped, 400);
        let left = ids(&s.read(None, 1000).unwrap());
        assert_eq!(left, (400 - left.len() as u64..400).collect::<Vec<_>>());
        assert_eq!(left.len() as u64, s.len());
    }

    #[test]
    fn drop_while_reading_continues_from_the_oldest_left() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 64 << 10).unwrap();
        for i in 0..20 {
            s.push(&entry(i, 1000)).unwrap();
        }
        let got = s.read(None, 2).unwrap();
        for i in 20..200 {
            s.push(&entry(i, 1000)).unwrap();
        }
        let rest = s.read(Some(got[1].0), 1000).unwrap();
        let first_left = id(&rest[0].1);
        assert!(first_left > 2);
        assert_eq!(ids(&rest), (first_left..200).collect::<Vec<_>>());
        // A commit of an entry already dropped changes nothing.
        s.commit(got[1].0).unwrap();
        assert_eq!(s.len(), rest.len() as u64);
    }

    #[test]
    fn oversized_entry_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 64 << 10).unwrap();
        assert!(matches!(
            s.push(&entry(1, 70 << 10)),
            Err(SpoolError::EntryTooLarge { .. })
        ));
        assert!(s.is_empty());
    }

    #[test]
    fn torn_tail_is_cut_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
            for i in 0..10 {
                s.push(&entry(i, 100)).unwrap();
            }
        }
        let seg = dir.path().join(seg_name(0));
        let len = std::fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.len(), 9);
        assert!(s.counters().torn_bytes > 0);
        s.push(&entry(10, 100)).unwrap();
        assert_eq!(
            ids(&s.read(None, 100).unwrap()),
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 10]
        );
    }

    #[test]
    fn corrupt_entry_is_counted_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
            for i in 0..5 {
                s.push(&entry(i, 100)).unwrap();
            }
        }
        let seg = dir.path().join(seg_name(0));
        let mut data = std::fs::read(&seg).unwrap();
        // The third entry's payload.
        let size = (ENTRY_HEADER as usize) + 1 + 15 + 4 + 4 + 2 + 100;
        data[SEG_HEADER as usize + 2 * size + 60] ^= 0xff;
        std::fs::write(&seg, data).unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.counters().corrupt_entries, 1);
        assert_eq!(s.len(), 4);
        let got = s.read(None, 100).unwrap();
        assert_eq!(ids(&got), [0, 1, 3, 4]);
        s.commit(got[3].0).unwrap();
        assert!(s.is_empty());
    }

    #[test]
    fn damaged_length_is_corrupt_and_an_unstarted_segment_is_restarted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
            for i in 0..5 {
                s.push(&entry(i, 100)).unwrap();
            }
        }
        let seg = dir.path().join(seg_name(0));
        let mut data = std::fs::read(&seg).unwrap();
        let size = (ENTRY_HEADER as usize) + 1 + 15 + 4 + 4 + 2 + 100;
        data[SEG_HEADER as usize + 2 * size + 3] ^= 0x80;
        std::fs::write(&seg, data).unwrap();
        // A new segment whose header never reached the disk.
        std::fs::write(dir.path().join(seg_name(1)), b"").unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.counters().corrupt_entries, 1);
        assert_eq!(ids(&s.read(None, 100).unwrap()), [0, 1]);
        s.push(&entry(9, 10)).unwrap();
        assert_eq!(ids(&s.read(None, 100).unwrap()), [0, 1, 9]);
        assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".bad")));
    }

    #[test]
    fn one_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let _a = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(matches!(
            Spool::open(dir.path(), 1 << 20),
            Err(SpoolError::Locked(_))
        ));
    }

    #[test]
    fn empty_fields_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        let e = SpoolEntry {
            topic: String::new(),
            partition: -1,
            key: Vec::new(),
            payload: Vec::new(),
        };
        s.push(&e).unwrap();
        assert_eq!(s.read(None, 10).unwrap()[0].1, e);
    }

    /// Random pushes, reads, commits and reopens against a queue model.
    #[test]
    fn matches_a_queue_model() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        let mut model: VecDeque<u64> = VecDeque::new();
        let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut n = 0;
        for _ in 0..3000 {
            match next() % 10 {
                0..=5 => {
                    s.push(&entry(n, (next() % 2000) as usize)).unwrap();
                    model.push_back(n);
                    n += 1;
                }
                6..=8 => {
                    let k = (next() % 20) as usize;
                    let got = s.read(None, k).unwrap();
                    let want: Vec<u64> = model.iter().take(k).copied().collect();
                    assert_eq!(ids(&got), want);
                    if let Some((p, _)) = got.last() {
                        s.commit(*p).unwrap();
                        model.drain(..got.len());
                    }
                }
                _ => {
                    drop(s);
                    s = Spool::open(dir.path(), 1 << 20).unwrap();
                }
            }
            assert_eq!(s.len(), model.len() as u64);
        }
        assert_eq!(s.counters().dropped_entries, 0);
    }
}
