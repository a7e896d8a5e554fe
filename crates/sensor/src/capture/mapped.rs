//! Large capture files mapped into memory, window by window, instead of copied out of the
//! page cache.
//!
//! `read()` copies every byte of a capture into the process, although decoding reads only the
//! first few dozen bytes of each frame; on a file of full-size frames the copy is most of the
//! work. A mapped file is read in place. The reading thread (`pcap-read`) maps the file one
//! window at a time, faults the window's pages in (which also brings pages that are not cached
//! in from disk), hands it to the decoder, and unmaps it when the decoder hands it back: page
//! faults and unmapping stay off the decoding thread, and at most a few windows are mapped at
//! once.
//!
//! The mappings are read-only. Like every program that maps files (ripgrep, databases), the
//! process receives `SIGBUS` if another process truncates the file while it is being read.
//! Files that are not regular files (pipes, devices) or are small are read with `read()`.

use super::file::{ChunkSource, Step};
use memmap2::{Advice, Mmap, MmapOptions};
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Files smaller than this are read with `read()`: mapping costs more than it saves.
const MIN_MAP: u64 = 4 << 20;
/// Bytes per mapped window (a multiple of the page size).
pub(super) const WINDOW: u64 = 8 << 20;
/// The first window's size: small, so that decoding starts while the windows after it are
/// prepared; each window after it is twice the one before, up to the window size.
const FIRST_WINDOW: u64 = 256 << 10;
/// The reading thread touches one byte in this many: each fault maps the cached pages around
/// it, this span by Linux's default (`fault_around_bytes`). Cheaper than `MADV_POPULATE_READ`,
/// which walks the page tables again for every page it has just mapped (a file of 735-byte
/// frames read 16% faster). With a smaller fault-around span the decoder faults the rest in.
const FAULT_SPAN: usize = 64 << 10;

/// A regular file read as consecutive mapped windows, from just after its first `skip` bytes.
#[derive(Debug)]
pub(super) struct Windows<'f> {
    file: &'f File,
    /// File offset of the next window.
    offset: u64,
    /// Bytes at the start of the first window that are not handed over (the file header).
    skip: usize,
    len: u64,
    window: u64,
    /// Bytes of the next window.
    next: u64,
}

impl<'f> Windows<'f> {
    /// `file` as windows of `window` bytes (a multiple of the page size), when it is a
    /// regular file of at least [`MIN_MAP`] bytes (any size when `any_size`); `None` sends
    /// the caller to `read()`.
    pub(super) fn new(file: &'f File, window: u64, any_size: bool) -> Option<Self> {
        let meta = file.metadata().ok()?;
        if !meta.is_file() || !(any_size || meta.len() >= MIN_MAP) || meta.len() == 0 {
            return None;
        }
        // A file system that cannot map files is read with `read()` instead.
        map(file, 0, 1).ok()?;
        Some(Windows {
            file,
            offset: 0,
            skip: 0,
            len: meta.len(),
            window,
            next: FIRST_WINDOW.min(window),
        })
    }

    /// Fills `head` from the start of the file; the first window then starts after it.
    pub(super) fn read_head(&mut self, head: &mut [u8]) -> bool {
        self.skip = head.len();
        self.file.read_exact_at(head, 0).is_ok()
    }
}

/// One mapped window, less the bytes it skips.
#[derive(Debug)]
pub(super) struct Window {
    map: Mmap,
    skip: usize,
}

impl AsRef<[u8]> for Window {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.skip..]
    }
}

impl ChunkSource for Windows<'_> {
    type Chunk = Window;

    fn next(&mut self, used: &mut dyn Iterator<Item = Window>) -> Step<Window> {
        // Unmapped here, on the reading thread.
        used.for_each(drop);
        if self.offset >= self.len {
            return Step::End;
        }
        let Ok(len) = usize::try_from(self.next.min(self.len - self.offset)) else {
            return Step::Failed;
        };
        self.next = (self.next * 2).min(self.window);
        let Ok(map) = map(self.file, self.offset, len) else {
            return Step::Failed;
        };
        // A hint only: readahead in large steps for pages that are not cached.
        let _ = map.advise(Advice::Sequential);
        for off in (0..len).step_by(FAULT_SPAN) {
            std::hint::black_box(map[off]);
        }
        let skip = std::mem::take(&mut self.skip).min(len);
        self.offset += len as u64;
        Step::Chunk(Window { map, skip })
    }
}

/// `len` bytes of `file` from `offset`, mapped read-only.
fn map(file: &File, offset: u64, len: usize) -> std::io::Result<Mmap> {
    // SAFETY: the mapping is read-only and private to this reader, and every slice of it
    // borrows from the `Window` that owns it. The one remaining hazard, another process
    // truncating the file while it is mapped, is documented above and in the README.
    #[allow(unsafe_code)]
    unsafe {
        MmapOptions::new().offset(offset).len(len).map(file)
    }
}

/// Asks for the cache line holding the start of `x` without waiting for it.
#[inline(always)]
pub(crate) fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; it changes nothing architecturally visible and
    // never faults, and the pointer comes from a live reference.
    #[allow(unsafe_code)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            std::ptr::from_ref(x).cast(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn windows_start_small_double_and_cover_the_file() {
        let bytes: Vec<u8> = (0..(3 << 20) + 1234u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut file = tempfile::tempfile().expect("temp file");
        file.write_all(&bytes).expect("write");
        let mut windows = Windows::new(&file, 1 << 20, true).expect("mappable");
        let mut head = [0u8; 24];
        assert!(windows.read_head(&mut head));
        let (mut sizes, mut seen) = (Vec::new(), head.to_vec());
        loop {
            match windows.next(&mut std::iter::empty()) {
                Step::Chunk(w) => {
                    sizes.push(w.map.len());
                    seen.extend_from_slice(w.as_ref());
                }
                Step::End => break,
                Step::Failed => panic!("mapping failed"),
            }
        }
        assert_eq!(
            sizes,
            [256 << 10, 512 << 10, 1 << 20, 1 << 20, (256 << 10) + 1234]
        );
        assert!(seen == bytes, "the windows hold the file, in order");
    }
}
