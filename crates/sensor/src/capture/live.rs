//! Live capture from a network interface (Linux AF_PACKET through `pnet_datalink`).
//!
//! A named capture thread reads frames, stamps them with the arrival time, and hands them to
//! the flow table in batches over a bounded channel. When the consumer falls behind, whole
//! batches are dropped and counted (`channel_dropped`) rather than blocking the socket; the
//! kernel's own drops (socket buffer overruns) are read from `PACKET_STATISTICS`.

use super::Frame;
use crate::decode::LinkType;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Frames per batch handed across the channel.
const BATCH_FRAMES: usize = 256;
/// A partly filled batch is handed over after this long.
const BATCH_LINGER: Duration = Duration::from_millis(5);

/// Live capture settings.
#[derive(Clone, Debug)]
pub struct LiveConfig {
    pub interface: String,
    pub snaplen: usize,
    pub promiscuous: bool,
    /// Packets buffered between the capture thread and the consumer.
    pub channel_capacity: usize,
}

/// Counters shared by the capture thread and its handle.
#[derive(Debug, Default)]
pub struct LiveStats {
    /// Frames read from the socket.
    pub received: AtomicU64,
    /// Frames dropped because the channel to the flow table was full.
    pub channel_dropped: AtomicU64,
    /// Frames the kernel dropped before the socket could take them.
    pub kernel_dropped: AtomicU64,
}

/// Why live capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("interface {name:?} not found (available: {available})")]
    NoSuchInterface { name: String, available: String },
    #[error("cannot open a capture socket on {name}: {source} (capture needs CAP_NET_RAW, usually root)")]
    Open { name: String, source: io::Error },
    #[error("interface {name} is not an Ethernet-like interface")]
    NotEthernet { name: String },
    #[error("cannot start the capture thread: {0}")]
    Thread(io::Error),
}

/// A batch of frames: one buffer, many frames.
#[derive(Debug, Default)]
pub struct Batch {
    buf: Vec<u8>,
    /// (offset in `buf`, captured length, arrival time in ns).
    frames: Vec<(usize, usize, u64)>,
}

impl Batch {
    /// The frames of the batch.
    pub fn frames(&self) -> impl Iterator<Item = Frame<'_>> {
        self.frames.iter().map(|&(off, len, ts)| Frame {
            link: LinkType::Ethernet,
            ts_ns: ts,
            data: &self.buf[off..off + len],
            wire_len: len,
        })
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.frames.clear();
    }
}

/// A running capture. Dropping it stops the thread.
#[derive(Debug)]
pub struct LiveCapture {
    batches: Receiver<Batch>,
    recycle: Sender<Batch>,
    stop: Arc<AtomicBool>,
    stats: Arc<LiveStats>,
    thread: Option<JoinHandle<()>>,
}

impl LiveCapture {
    /// Opens the interface and starts the capture thread.
    pub fn start(cfg: &LiveConfig) -> Result<LiveCapture, LiveError> {
        let ifaces = pnet_datalink::interfaces();
        let Some(iface) = ifaces.iter().find(|i| i.name == cfg.interface).cloned() else {
            return Err(LiveError::NoSuchInterface {
                name: cfg.interface.clone(),
                available: ifaces
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let fd = kernel::packet_socket().map_err(|source| LiveError::Open {
            name: cfg.interface.clone(),
            source,
        })?;
        let pcfg = pnet_datalink::Config {
            read_buffer_size: cfg.snaplen.max(2048),
            read_timeout: Some(BATCH_LINGER),
            promiscuous: cfg.promiscuous,
            socket_fd: Some(fd),
            ..Default::default()
        };
        let mut rx = match pnet_datalink::channel(&iface, pcfg) {
            Ok(pnet_datalink::Channel::Ethernet(_tx, rx)) => rx,
            Ok(_) => {
                return Err(LiveError::NotEthernet {
                    name: cfg.interface.clone(),
                })
            }
            Err(source) => {
                return Err(LiveError::Open {
                    name: cfg.interface.clone(),
                    source,
                })
            }
        };
        let depth = (cfg.channel_capacity / BATCH_FRAMES).max(2);
        let (tx, batches) = bounded::<Batch>(depth);
        let (recycle, recycled) = bounded::<Batch>(depth + 2);
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(LiveStats::default());
        let (t_stop, t_stats) = (stop.clone(), stats.clone());
        let snaplen = cfg.snaplen;
        let thread = std::thread::Builder::new()
            .name(format!("nw-capture-{}", cfg.interface))
            .spawn(move || {
                let mut batch = Batch::default();
                let mut started = SystemTime::now();
                let hand_over = |batch: &mut Batch| {
                    // One getsockopt per batch, not per frame.
                    if let Some(d) = kernel::drops(fd) {
                        t_stats.kernel_dropped.fetch_add(d, Ordering::Relaxed);
                    }
                    let full = std::mem::replace(batch, recycled.try_recv().unwrap_or_default());
                    let n = full.len() as u64;
                    match tx.try_send(full) {
                        Ok(()) => {}
                        Err(TrySendError::Full(mut b)) => {
                            t_stats.channel_dropped.fetch_add(n, Ordering::Relaxed);
                            b.clear();
                            *batch = b;
                        }
                        Err(TrySendError::Disconnected(_)) => t_stop.store(true, Ordering::Relaxed),
                    }
                };
                while !t_stop.load(Ordering::Relaxed) {
                    match rx.next() {
                        Ok(data) => {
                            let now = SystemTime::now();
                            let ts = now
                                .duration_since(UNIX_EPOCH)
                                .map_or(0, |d| d.as_nanos() as u64);
                            let len = data.len().min(snaplen);
                            if batch.is_empty() {
                                started = now;
                            }
                            let off = batch.buf.len();
                            batch.buf.extend_from_slice(&data[..len]);
                            batch.frames.push((off, len, ts));
                            t_stats.received.fetch_add(1, Ordering::Relaxed);
                            let aged =
                                now.duration_since(started).unwrap_or_default() >= BATCH_LINGER;
                            if batch.len() >= BATCH_FRAMES || aged {
                                hand_over(&mut batch);
                            }
                        }
                        Err(e)
                            if e.kind() == io::ErrorKind::TimedOut
                                || e.kind() == io::ErrorKind::WouldBlock
                                || e.kind() == io::ErrorKind::Interrupted =>
                        {
                            if !batch.is_empty() {
                                hand_over(&mut batch);
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "capture socket failed; stopping capture");
                            break;
                        }
                    }
                }
                if let Some(d) = kernel::drops(fd) {
                    t_stats.kernel_dropped.fetch_add(d, Ordering::Relaxed);
                }
                if !batch.is_empty() {
                    let _ = tx.send_timeout(batch, Duration::from_secs(1));
                }
            })
            .map_err(LiveError::Thread)?;
        Ok(LiveCapture {
            batches,
            recycle,
            stop,
            stats,
            thread: Some(thread),
        })
    }

    /// Waits up to `timeout` for the next batch. `None` on timeout or after the thread ended.
    pub fn next_batch(&self, timeout: Duration) -> Option<Batch> {
        self.batches.recv_timeout(timeout).ok()
    }

    /// Returns a consumed batch's buffers to the capture thread.
    pub fn recycle(&self, mut batch: Batch) {
        batch.clear();
        let _ = self.recycle.try_send(batch);
    }

    /// Whether the capture thread has ended (stopped or failed).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// The shared counters.
    pub fn stats(&self) -> &LiveStats {
        &self.stats
    }

    /// Asks the capture thread to stop and waits for it; the batches it produced stay
    /// readable with [`LiveCapture::next_batch`].
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LiveCapture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The two socket calls `pnet` does not offer: opening the AF_PACKET socket ourselves (so we
/// hold its descriptor) and reading the kernel's drop counter.
#[allow(unsafe_code)]
mod kernel {
    use std::io;

    /// Opens a raw AF_PACKET socket for all protocols. `pnet` binds it and owns it afterwards.
    pub fn packet_socket() -> io::Result<i32> {
        let proto = i32::from((libc::ETH_P_ALL as u16).to_be());
        // SAFETY: socket(2) takes plain integers and returns a descriptor or -1.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
        if fd < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(fd)
        }
    }

    /// Frames dropped by the kernel since the previous call (reading resets the counter).
    pub fn drops(fd: i32) -> Option<u64> {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` and `len` are valid for writes of the sizes passed; the kernel writes
        // at most `len` bytes. `fd` stays open while the capture thread (our only caller) runs.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        (rc == 0 && st.tp_drops > 0).then_some(u64::from(st.tp_drops))
    }
}
