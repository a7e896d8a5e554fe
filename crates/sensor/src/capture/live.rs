//! Live capture from a network interface through a memory-mapped `TPACKET_V3` ring (Linux
//! AF_PACKET, `PACKET_RX_RING`).
//!
//! The kernel fills whole blocks of the ring with frames and their kernel timestamps; the
//! reader waits for a block with `poll(2)`, lends it to the caller, who runs the flow table
//! over its frames in place, and hands it back to the kernel only when the caller is done with
//! it. No frame is copied, no frame costs an allocation or a channel send, and no system call
//! is made per frame. What the ring cannot hold the kernel drops and counts; those counts
//! (`PACKET_STATISTICS`: drops, and how often the ring was full) are read after every block.
//!
//! Interfaces are found through `pnet_datalink`; everything else is the kernel interface
//! itself, in `ring` below, the only `unsafe` code here.

use super::Frame;
use crate::decode::LinkType;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Size of one ring block. It holds at least one frame of the largest snap length (256 KiB)
/// with its headers, and the kernel hands blocks over when full or after 10 ms (the block
/// timeout).
pub const BLOCK_BYTES: usize = 1 << 20;
/// A block that is not full is handed over after this many milliseconds, so a quiet link
/// still delivers its frames promptly.
const BLOCK_TIMEOUT_MS: u32 = 10;
/// The smallest ring accepted: a block being read, one being filled, and room to spare.
pub const MIN_RING_BYTES: usize = 4 * BLOCK_BYTES;

/// One instruction of a classic BPF program (`struct sock_filter`), as `tcpdump -ddd`
/// prints them: `code jt jf k`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BpfInstruction {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// Live capture settings.
#[derive(Clone, Debug)]
pub struct LiveConfig {
    pub interface: String,
    pub snaplen: usize,
    pub promiscuous: bool,
    /// Bytes of the ring shared with the kernel; rounded down to whole blocks of
    /// [`BLOCK_BYTES`], at least [`MIN_RING_BYTES`].
    pub ring_bytes: usize,
    /// A classic BPF program run by the kernel on every frame: frames it rejects never enter
    /// the ring (nor any count).
    pub filter: Option<Vec<BpfInstruction>>,
    /// Joins the socket to this `PACKET_FANOUT` group (hash mode): the kernel spreads
    /// flows over the group's sockets, both directions of a flow to the same one.
    pub fanout: Option<u16>,
}

/// Counters of a capture, readable from any thread.
#[derive(Debug, Default)]
pub struct LiveStats {
    /// Frames taken from the ring.
    pub received: AtomicU64,
    /// Frames the kernel dropped because the ring was full (`tp_drops`).
    pub kernel_dropped: AtomicU64,
    /// Times the kernel found the ring full and froze it until a block came back
    /// (`tp_freeze_q_cnt`).
    pub ring_freezes: AtomicU64,
}

/// Why live capture could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("interface {name:?} not found (available: {available})")]
    NoSuchInterface { name: String, available: String },
    #[error("cannot open a capture socket on {name}: {source} (capture needs CAP_NET_RAW, usually root)")]
    Open { name: String, source: io::Error },
    #[error("cannot set up the capture ring on {name} ({what}): {source}")]
    Ring {
        name: String,
        what: &'static str,
        source: io::Error,
    },
    #[error("the kernel refused the capture filter on {name}: {source}")]
    Filter { name: String, source: io::Error },
    #[error("capture on {name} failed: {source}")]
    Read { name: String, source: io::Error },
}

/// An open capture: the socket, its ring, and the block to be read next.
#[derive(Debug)]
pub struct LiveCapture {
    name: String,
    ring: ring::Ring,
    /// Index of the block the kernel fills next (blocks are handed over in ring order).
    next: usize,
    snaplen: usize,
    stats: Arc<LiveStats>,
}

impl LiveCapture {
    /// Opens the interface: binds an AF_PACKET socket to it, attaches the filter, maps the
    /// ring. Frames arrive from this moment on.
    pub fn open(cfg: &LiveConfig) -> Result<LiveCapture, LiveError> {
        let ifaces = pnet_datalink::interfaces();
        let Some(iface) = ifaces.iter().find(|i| i.name == cfg.interface) else {
            return Err(LiveError::NoSuchInterface {
                name: cfg.interface.clone(),
                available: ifaces
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let blocks = (cfg.ring_bytes.max(MIN_RING_BYTES) / BLOCK_BYTES) as u32;
        let ring = ring::Ring::open(&ring::Setup {
            ifindex: iface.index,
            promiscuous: cfg.promiscuous,
            block_bytes: BLOCK_BYTES as u32,
            blocks,
            block_timeout_ms: BLOCK_TIMEOUT_MS,
            filter: cfg.filter.as_deref(),
            fanout: cfg.fanout,
        })
        .map_err(|e| match e {
            ring::SetupError::Socket(source) => LiveError::Open {
                name: cfg.interface.clone(),
                source,
            },
            ring::SetupError::Filter(source) => LiveError::Filter {
                name: cfg.interface.clone(),
                source,
            },
            ring::SetupError::Step(what, source) => LiveError::Ring {
                name: cfg.interface.clone(),
                what,
                source,
            },
        })?;
        Ok(LiveCapture {
            name: cfg.interface.clone(),
            ring,
            next: 0,
            snaplen: cfg.snaplen,
            stats: Arc::new(LiveStats::default()),
        })
    }

    /// Waits up to `timeout` for the next full (or timed-out) block. `Ok(None)` when none
    /// arrived in time or the wait was interrupted by a signal.
    pub fn next_block(&mut self, timeout: Duration) -> Result<Option<Block<'_>>, LiveError> {
        if !self.ring.is_user(self.next) {
            let ready = self.ring.wait(timeout).map_err(|source| LiveError::Read {
                name: self.name.clone(),
                source,
            })?;
            if !ready || !self.ring.is_user(self.next) {
                return Ok(None);
            }
        }
        let index = self.next;
        self.next = (self.next + 1) % self.ring.blocks();
        let frames = self.ring.frame_count(index);
        self.stats
            .received
            .fetch_add(u64::from(frames), Ordering::Relaxed);
        self.read_kernel_stats();
        Ok(Some(Block {
            capture: self,
            index,
        }))
    }

    /// Adds the kernel's drop and freeze counts since the previous call to the stats.
    pub fn read_kernel_stats(&self) {
        if let Some((drops, freezes)) = self.ring.kernel_stats() {
            self.stats
                .kernel_dropped
                .fetch_add(u64::from(drops), Ordering::Relaxed);
            self.stats
                .ring_freezes
                .fetch_add(u64::from(freezes), Ordering::Relaxed);
        }
    }

    /// The counters, shareable with other threads.
    pub fn stats(&self) -> &Arc<LiveStats> {
        &self.stats
    }
}

/// One block of the ring lent to the caller; it goes back to the kernel when dropped.
#[derive(Debug)]
pub struct Block<'a> {
    capture: &'a LiveCapture,
    index: usize,
}

impl Block<'_> {
    /// The block's frames, in arrival order, borrowed from the ring.
    pub fn frames(&self) -> impl Iterator<Item = Frame<'_>> {
        let snaplen = self.capture.snaplen;
        self.capture
            .ring
            .frames(self.index)
            .map(move |(data, wire_len, ts_ns)| Frame {
                link: LinkType::Ethernet,
                ts_ns,
                data: &data[..data.len().min(snaplen)],
                wire_len,
                ahead: &[],
            })
    }

    /// Number of frames in the block.
    pub fn len(&self) -> usize {
        self.capture.ring.frame_count(self.index) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Block<'_> {
    fn drop(&mut self) {
        self.capture.ring.release(self.index);
    }
}

/// The socket, the ring mapping and the frames in it: everything that touches the kernel's
/// memory or calls it directly.
#[allow(unsafe_code)]
mod ring {
    use super::BpfInstruction;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::atomic::{fence, Ordering};
    use std::time::Duration;

    /// `struct tpacket_req3` (linux/if_packet.h).
    #[repr(C)]
    struct TpacketReq3 {
        tp_block_size: u32,
        tp_block_nr: u32,
        tp_frame_size: u32,
        tp_frame_nr: u32,
        tp_retire_blk_tov: u32,
        tp_sizeof_priv: u32,
        tp_feature_req_word: u32,
    }

    /// `struct tpacket_stats_v3`.
    #[repr(C)]
    #[derive(Default)]
    struct TpacketStatsV3 {
        tp_packets: u32,
        tp_drops: u32,
        tp_freeze_q_cnt: u32,
    }

    const TPACKET_V3: libc::c_int = 2;
    // Offsets in `struct tpacket_block_desc` (version, offset_to_priv, then
    // `struct tpacket_hdr_v1`: block_status, num_pkts, offset_to_first_pkt, ...).
    const BLOCK_STATUS: usize = 8;
    const BLOCK_NUM_PKTS: usize = 12;
    const BLOCK_FIRST: usize = 16;
    // Offsets in `struct tpacket3_hdr`.
    const PKT_NEXT: usize = 0;
    const PKT_SEC: usize = 4;
    const PKT_NSEC: usize = 8;
    const PKT_SNAPLEN: usize = 12;
    const PKT_LEN: usize = 16;
    const PKT_MAC: usize = 24;

    pub struct Setup<'a> {
        pub ifindex: u32,
        pub promiscuous: bool,
        pub block_bytes: u32,
        pub blocks: u32,
        pub block_timeout_ms: u32,
        pub filter: Option<&'a [BpfInstruction]>,
        pub fanout: Option<u16>,
    }

    pub enum SetupError {
        Socket(io::Error),
        Filter(io::Error),
        Step(&'static str, io::Error),
    }

    /// The socket and its mapped ring. The mapping is undone before the socket closes.
    pub struct Ring {
        base: *mut u8,
        len: usize,
        block_bytes: usize,
        blocks: usize,
        fd: OwnedFd,
    }

    impl std::fmt::Debug for Ring {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Ring")
                .field("len", &self.len)
                .field("blocks", &self.blocks)
                .finish_non_exhaustive()
        }
    }

    // SAFETY: the ring is plain memory shared with the kernel; `Ring` owns the mapping and
    // the socket, and every access to block memory goes through `&self` methods that follow
    // the kernel's ownership protocol (a block is read only while its status says the user
    // owns it), so moving the ring to another thread is sound.
    unsafe impl Send for Ring {}
    // SAFETY: as above; shared references only read blocks the user owns, and `release`
    // writes one status word with release ordering, which the kernel reads.
    unsafe impl Sync for Ring {}

    fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
        // SAFETY: `v` points to a live `T` of the size passed; the kernel only reads it.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                name,
                (v as *const T).cast(),
                size_of::<T>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    impl Ring {
        pub fn open(s: &Setup<'_>) -> Result<Ring, SetupError> {
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // Protocol 0: the socket takes in nothing until `bind` names the interface and
            // the protocol, so no frame of another interface reaches the ring meanwhile.
            // SAFETY: socket(2) takes plain integers and returns a descriptor or -1.
            let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
            if raw < 0 {
                return Err(SetupError::Socket(io::Error::last_os_error()));
            }
            // SAFETY: `raw` is a descriptor we just opened and own alone.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let step = |what| move |e| SetupError::Step(what, e);
            // The filter goes on before the socket is bound, so no frame it rejects is
            // ever queued.
            if let Some(prog) = s.filter {
                let mut insns: Vec<libc::sock_filter> = prog
                    .iter()
                    .map(|i| libc::sock_filter {
                        code: i.code,
                        jt: i.jt,
                        jf: i.jf,
                        k: i.k,
                    })
                    .collect();
                let fprog = libc::sock_fprog {
                    len: insns.len() as u16,
                    filter: insns.as_mut_ptr(),
                };
                setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
                    .map_err(SetupError::Filter)?;
            }
            setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VERSION, &TPACKET_V3)
                .map_err(step("PACKET_VERSION TPACKET_V3"))?;
            let req = TpacketReq3 {
                tp_block_size: s.block_bytes,
                tp_block_nr: s.blocks,
                // Frames are packed at their own length in V3; the frame size only has to
                // be valid for the kernel's checks.
                tp_frame_size: 2048,
                tp_frame_nr: s.block_bytes / 2048 * s.blocks,
                tp_retire_blk_tov: s.block_timeout_ms,
                tp_sizeof_priv: 0,
                tp_feature_req_word: 0,
            };
            setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)
                .map_err(step("PACKET_RX_RING"))?;
            let len = s.block_bytes as usize * s.blocks as usize;
            // SAFETY: a fresh shared mapping of the socket's ring, of exactly the size the
            // kernel just allocated; the result is checked before use.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_LOCKED | libc::MAP_POPULATE,
                    fd.as_raw_fd(),
                    0,
                )
            };
            let base = if base == libc::MAP_FAILED {
                // MAP_LOCKED fails beyond RLIMIT_MEMLOCK for unprivileged users; the ring
                // pages are the kernel's anyway, so an unlocked mapping works the same.
                // SAFETY: as above, without the lock flag.
                let b = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED | libc::MAP_POPULATE,
                        fd.as_raw_fd(),
                        0,
                    )
                };
                if b == libc::MAP_FAILED {
                    return Err(SetupError::Step("mmap", io::Error::last_os_error()));
                }
                b
            } else {
                base
            };
            let ring = Ring {
                base: base.cast(),
                len,
                block_bytes: s.block_bytes as usize,
                blocks: s.blocks as usize,
                fd,
            };
            // SAFETY: a zeroed `sockaddr_ll` with family, protocol and interface index set,
            // passed with its own size.
            let rc = unsafe {
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = proto;
                sll.sll_ifindex = s.ifindex as i32;
                libc::bind(
                    ring.fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(SetupError::Step("bind", io::Error::last_os_error()));
            }
            if s.promiscuous {
                // SAFETY: a zeroed `packet_mreq` naming the interface, read by the kernel.
                let mreq = unsafe {
                    let mut m: libc::packet_mreq = std::mem::zeroed();
                    m.mr_ifindex = s.ifindex as i32;
                    m.mr_type = libc::PACKET_MR_PROMISC as u16;
                    m
                };
                setsockopt(
                    &ring.fd,
                    libc::SOL_PACKET,
                    libc::PACKET_ADD_MEMBERSHIP,
                    &mreq,
                )
                .map_err(step("promiscuous mode"))?;
            }
            if let Some(group) = s.fanout {
                // Hash mode; the kernel's flow hash for fan-out is symmetric, so both
                // directions of a flow reach the same socket.
                let arg: u32 = u32::from(group) | (libc::PACKET_FANOUT_HASH << 16);
                setsockopt(&ring.fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg)
                    .map_err(step("PACKET_FANOUT"))?;
            }
            // Counters start now, not with whatever arrived before the bind.
            let _ = ring.kernel_stats();
            Ok(ring)
        }

        pub fn blocks(&self) -> usize {
            self.blocks
        }

        fn block(&self, index: usize) -> *mut u8 {
            debug_assert!(index < self.blocks);
            // SAFETY: `index < blocks`, so the offset stays inside the mapping.
            unsafe { self.base.add(index * self.block_bytes) }
        }

        fn read_u32(&self, index: usize, off: usize) -> u32 {
            debug_assert!(off + 4 <= self.block_bytes);
            // SAFETY: inside block `index` of the mapping (checked by the callers' offsets,
            // which the kernel wrote inside the block); unaligned reads are allowed.
            unsafe { self.block(index).add(off).cast::<u32>().read_unaligned() }
        }

        /// Whether the kernel handed block `index` to us.
        pub fn is_user(&self, index: usize) -> bool {
            // SAFETY: the status word is inside the block; the kernel writes it
            // concurrently, hence the volatile read, and the acquire fence orders our
            // later reads of the block after the kernel's writes.
            let status = unsafe {
                self.block(index)
                    .add(BLOCK_STATUS)
                    .cast::<u32>()
                    .read_volatile()
            };
            fence(Ordering::Acquire);
            status & libc::TP_STATUS_USER != 0
        }

        /// Hands block `index` back to the kernel.
        pub fn release(&self, index: usize) {
            fence(Ordering::Release);
            // SAFETY: the status word of a block we own; after this write the kernel owns
            // the block again and we read nothing more of it (the `Block` is gone).
            unsafe {
                self.block(index)
                    .add(BLOCK_STATUS)
                    .cast::<u32>()
                    .write_volatile(libc::TP_STATUS_KERNEL);
            }
        }

        pub fn frame_count(&self, index: usize) -> u32 {
            self.read_u32(index, BLOCK_NUM_PKTS)
        }

        /// The frames of a block the user owns: (captured bytes, length on the wire,
        /// kernel timestamp in ns). Offsets the kernel wrote are checked against the block
        /// so that a corrupt header ends the walk instead of reading outside it.
        pub fn frames(&self, index: usize) -> impl Iterator<Item = (&[u8], usize, u64)> + '_ {
            let count = self.frame_count(index);
            let mut off = self.read_u32(index, BLOCK_FIRST) as usize;
            let bb = self.block_bytes;
            // SAFETY: the whole block is mapped and, while the user owns it, not written by
            // the kernel; the slice lives no longer than `&self`, and the caller's `Block`
            // (which borrows the ring) releases the block only when it is dropped.
            let block = unsafe { std::slice::from_raw_parts(self.block(index).cast_const(), bb) };
            let mut left = count;
            std::iter::from_fn(move || {
                if left == 0 || off + 32 > bb {
                    return None;
                }
                left -= 1;
                let u32_at = |o: usize| {
                    u32::from_ne_bytes([block[o], block[o + 1], block[o + 2], block[o + 3]])
                };
                let h = off;
                let next = u32_at(h + PKT_NEXT) as usize;
                let sec = u64::from(u32_at(h + PKT_SEC));
                let nsec = u64::from(u32_at(h + PKT_NSEC));
                let snap = u32_at(h + PKT_SNAPLEN) as usize;
                let wire = u32_at(h + PKT_LEN) as usize;
                let mac = u16::from_ne_bytes([block[h + PKT_MAC], block[h + PKT_MAC + 1]]) as usize;
                let start = h + mac;
                let data = block.get(start..start + snap)?;
                off = if next == 0 { bb } else { h + next };
                Some((data, wire, sec * 1_000_000_000 + nsec))
            })
        }

        /// Waits until the socket has a block for us or `timeout` passes. `Ok(false)` on
        /// timeout or interruption by a signal.
        pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN | libc::POLLERR,
                revents: 0,
            };
            let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: one valid `pollfd`, count 1.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                return if e.kind() == io::ErrorKind::Interrupted {
                    Ok(false)
                } else {
                    Err(e)
                };
            }
            if pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0 && rc > 0 {
                let mut err: libc::c_int = 0;
                let mut len = size_of::<libc::c_int>() as libc::socklen_t;
                // SAFETY: `err` and `len` are valid for writes of the sizes passed.
                unsafe {
                    libc::getsockopt(
                        self.fd.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_ERROR,
                        (&mut err as *mut libc::c_int).cast(),
                        &mut len,
                    );
                }
                // ENETDOWN when the interface goes down; the ring stays usable once it
                // comes back, so only a lasting error is reported.
                if err != 0 && err != libc::ENETDOWN {
                    return Err(io::Error::from_raw_os_error(err));
                }
            }
            Ok(rc > 0)
        }

        /// Drops and ring freezes since the previous call (the kernel resets its counters
        /// when they are read).
        pub fn kernel_stats(&self) -> Option<(u32, u32)> {
            let mut st = TpacketStatsV3::default();
            let mut len = size_of::<TpacketStatsV3>() as libc::socklen_t;
            // SAFETY: `st` and `len` are valid for writes of the sizes passed; the kernel
            // writes at most `len` bytes.
            let rc = unsafe {
                libc::getsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_STATISTICS,
                    (&mut st as *mut TpacketStatsV3).cast(),
                    &mut len,
                )
            };
            let _ = st.tp_packets;
            (rc == 0).then_some((st.tp_drops, st.tp_freeze_q_cnt))
        }
    }

    impl Drop for Ring {
        fn drop(&mut self) {
            // SAFETY: the mapping made in `open`, of `len` bytes; no `Block` borrows the ring
            // any more (they borrow `&self`). The socket closes after this, with `fd`.
            unsafe {
                libc::munmap(self.base.cast(), self.len);
            }
        }
    }
}
