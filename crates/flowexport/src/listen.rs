//! UDP listeners at the edge: one named thread per configured address receives datagrams
//! into reusable batches and hands them over a bounded channel to whoever decodes them.
//!
//! Exporters send in bursts (softflowd flushes its whole table at once), so each socket asks
//! for a large kernel receive buffer; a batch that finds the channel full is dropped whole
//! and counted, never waited for, so a slow consumer cannot make the kernel drop silently.

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Listener settings.
#[derive(Clone, Debug)]
pub struct ListenConfig {
    pub addrs: Vec<SocketAddr>,
    /// Kernel receive buffer asked for per socket (capped by `net.core.rmem_max`).
    pub recv_buffer: usize,
    /// Batches in flight between the sockets and the decoder. Each holds at most
    /// `BATCH_BYTES` plus one datagram, so this bounds the hand-over's memory (with as many
    /// again kept for reuse): 32 batches, about 10 MiB.
    pub channel_batches: usize,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            addrs: Vec::new(),
            recv_buffer: 8 << 20,
            channel_batches: 32,
        }
    }
}

/// One received datagram inside a [`Batch`].
#[derive(Clone, Debug)]
struct Item {
    from: SocketAddr,
    at_ns: u64,
    range: Range<usize>,
}

/// Datagrams received together, in one buffer.
#[derive(Debug, Default)]
pub struct Batch {
    buf: Vec<u8>,
    items: Vec<Item>,
}

impl Batch {
    /// (sender, receive time in ns since the epoch, datagram).
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, u64, &[u8])> {
        self.items
            .iter()
            .map(|i| (i.from, i.at_ns, &self.buf[i.range.clone()]))
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.items.clear();
    }
}

/// Counters shared with the listener threads.
#[derive(Debug, Default)]
pub struct ListenStats {
    pub datagrams: AtomicU64,
    pub bytes: AtomicU64,
    /// Datagrams dropped because the decoder fell behind (the channel was full).
    pub channel_dropped: AtomicU64,
    /// Receive errors other than timeouts.
    pub errors: AtomicU64,
}

/// Datagrams per batch, and bytes after which a batch is sent even if not full.
const BATCH_DATAGRAMS: usize = 64;
const BATCH_BYTES: usize = 256 << 10;
/// How long a partial batch waits for more datagrams.
const BATCH_LINGER: Duration = Duration::from_millis(20);

/// The running listeners.
#[derive(Debug)]
pub struct Listener {
    rx: Receiver<Batch>,
    recycle: Sender<Batch>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    stats: Arc<ListenStats>,
    local: Vec<SocketAddr>,
}

fn bind(addr: SocketAddr, recv_buffer: usize) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // The address says which family is wanted: "[::]" should not also take IPv4.
        s.set_only_v6(true)?;
    }
    // Best effort: the kernel caps it, and a small buffer still works, only burstier.
    let _ = s.set_recv_buffer_size(recv_buffer);
    s.bind(&addr.into())?;
    Ok(s.into())
}

impl Listener {
    /// Binds every address (all or none) and starts one thread per socket.
    pub fn start(cfg: &ListenConfig) -> std::io::Result<Listener> {
        let sockets = cfg
            .addrs
            .iter()
            .map(|a| bind(*a, cfg.recv_buffer))
            .collect::<std::io::Result<Vec<_>>>()?;
        let (tx, rx) = bounded(cfg.channel_batches.max(1));
        let (recycle, spare) = bounded(cfg.channel_batches.max(1) + 2 * sockets.len());
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ListenStats::default());
        let mut local = Vec::new();
        let mut threads = Vec::new();
        for sock in sockets {
            let addr = sock.local_addr()?;
            local.push(addr);
            sock.set_read_timeout(Some(BATCH_LINGER))?;
            let (tx, spare, stop, stats) = (tx.clone(), spare.clone(), stop.clone(), stats.clone());
            let t = std::thread::Builder::new()
                .name(format!("nw-flowexport-{}", addr.port()))
                .spawn(move || receive(sock, tx, spare, stop, stats))?;
            threads.push(t);
        }
        Ok(Listener {
            rx,
            recycle,
            stop,
            threads,
            stats,
            local,
        })
    }

    /// The bound addresses (with the port the system chose for port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }

    pub fn stats(&self) -> &ListenStats {
        &self.stats
    }

    /// The next batch, waiting at most `timeout`.
    pub fn next_batch(&self, timeout: Duration) -> Option<Batch> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Returns a used batch for reuse.
    pub fn recycle(&self, mut b: Batch) {
        b.clear();
        let _ = self.recycle.try_send(b);
    }

    /// Stops the threads; batches already received can still be taken with
    /// [`Listener::next_batch`].
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop();
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
}

fn receive(
    sock: UdpSocket,
    tx: Sender<Batch>,
    spare: Receiver<Batch>,
    stop: Arc<AtomicBool>,
    stats: Arc<ListenStats>,
) {
    let mut dgram = vec![0u8; 65_536];
    let mut batch = spare.try_recv().unwrap_or_default();
    let mut started = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        match sock.recv_from(&mut dgram) {
            Ok((n, from)) => {
                if batch.is_empty() {
                    started = Instant::now();
                }
                let start = batch.buf.len();
                batch.buf.extend_from_slice(&dgram[..n]);
                batch.items.push(Item {
                    from,
                    at_ns: now_ns(),
                    range: start..start + n,
                });
                stats.datagrams.fetch_add(1, Ordering::Relaxed);
                stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        let due = batch.len() >= BATCH_DATAGRAMS
            || batch.buf.len() >= BATCH_BYTES
            || (!batch.is_empty() && (started.elapsed() >= BATCH_LINGER || stopping));
        if due {
            let next = spare.try_recv().unwrap_or_default();
            match tx.try_send(std::mem::replace(&mut batch, next)) {
                Ok(()) => {}
                Err(TrySendError::Full(mut b)) => {
                    stats
                        .channel_dropped
                        .fetch_add(b.len() as u64, Ordering::Relaxed);
                    b.clear();
                    batch = b;
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
        if stopping && batch.is_empty() {
            return;
        }
    }
}
