//! Bulk exfiltration: bytes a `holds-ip` asset sends one external destination within a
//! window, over a limit.

use crate::alert::*;
use crate::state::*;
use crate::Settings;
use crate::NS;
use normwatch_model::{addr_key, Alert, AlertKind, DirStats, Measured, Severity, TopSource};
use std::net::IpAddr;

/// External destinations followed exactly per `holds-ip` asset.
pub(crate) const MAX_EXFIL: usize = 1024;

/// The sketch of bytes a `holds-ip` asset sent per destination: rows and counters per row.
pub(crate) const SENT_ROWS: usize = 2;

pub(crate) const SENT_COLS: usize = 64;

/// A destination is followed exactly once the sketch says it may have received this
/// fraction (1/2^shift) of the exfiltration limit.
pub(crate) const SENT_ADMIT_SHIFT: u32 = 4;

/// Bytes one external destination received from the asset in the current window.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Outbound {
    pub(crate) start_sec: u64,
    pub(crate) last_sec: u64,
    pub(crate) bytes: u64,
}

/// A count-min sketch of the KiB a `holds-ip` asset sent to each external destination in the
/// current window (512 bytes). It never under-counts, so a destination is followed exactly
/// (in `Tables::exfil`) no later than when it has really received 1/16 of the limit: an
/// upload is flagged by the time it passes the limit plus at most that much per window,
/// while a server's many ordinary clients cost two counters each, not a table entry.
#[derive(Debug)]
pub(crate) struct Sent {
    pub(crate) start_sec: u64,
    pub(crate) kib: [[u32; SENT_COLS]; SENT_ROWS],
}

impl Sent {
    /// Adds `bytes` for the destination `key` (`addr_key`); its estimate afterwards, in bytes.
    #[inline]
    pub(crate) fn add(&mut self, key: u64, bytes: u64) -> u64 {
        let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        let mut est = u32::MAX;
        for (row, counters) in self.kib.iter_mut().enumerate() {
            let col = (h >> (40 + 6 * row)) as usize % SENT_COLS;
            let c = &mut counters[col];
            *c = c.saturating_add(kib);
            est = est.min(*c);
        }
        u64::from(est) * 1024
    }
}

/// Bulk exfiltration: `bytes` sent to one external destination within the window, over
/// `exfil_bytes`; critical at ten times the limit.
pub(crate) fn judge(bytes: u64, s: &Settings) -> Option<Severity> {
    if bytes <= s.exfil_bytes {
        None
    } else if bytes as f64 >= 10.0 * s.exfil_bytes.max(1) as f64 {
        Some(Severity::Critical)
    } else {
        Some(Severity::High)
    }
}

impl<const N: usize> AssetState<N> {
    #[inline(never)]
    pub(crate) fn outbound(
        &mut self,
        cx: &Ctx,
        remote: IpAddr,
        outbound: &DirStats,
        first: u64,
        last: u64,
        out: &mut Vec<Alert>,
    ) {
        let s = cx.s;
        let t = self.tables(last);
        let key = addr_key(remote);
        let followed = if t.followed.maybe(key) {
            t.exfil.get_mut(&remote)
        } else {
            None
        };
        let e = match followed {
            Some(e) => {
                if last >= e.start_sec + s.exfil_window.as_secs() {
                    *e = Outbound {
                        start_sec: first,
                        ..Outbound::default()
                    };
                }
                e
            }
            None => {
                let sent = t.sent.get_or_insert_with(|| {
                    Box::new(Sent {
                        start_sec: first,
                        kib: [[0; SENT_COLS]; SENT_ROWS],
                    })
                });
                if last >= sent.start_sec + s.exfil_window.as_secs() {
                    sent.start_sec = first;
                    sent.kib = [[0; SENT_COLS]; SENT_ROWS];
                }
                // Followed from when it may have received a sixteenth of the limit, if it is
                // outside every protected asset (asked only then) and there is room.
                if sent.add(key, outbound.ip_bytes) < s.exfil_bytes >> SENT_ADMIT_SHIFT
                    || t.exfil.len() >= MAX_EXFIL
                    || cx.index.lookup(remote).is_some()
                {
                    return;
                }
                t.followed.add(key);
                t.exfil.entry(remote).or_insert(Outbound {
                    start_sec: first,
                    ..Outbound::default()
                })
            }
        };
        e.bytes += outbound.ip_bytes;
        e.last_sec = e.last_sec.max(last);
        let Some(severity) = judge(e.bytes, s) else {
            return;
        };
        let e = *e;
        let secs = (e.last_sec + 1).saturating_sub(e.start_sec).max(1);
        let limit = s.exfil_bytes;
        let window = s.exfil_window.as_secs();
        let summary = move || {
            format!(
                "{} bytes sent to external destination {remote} in {secs} s (limit {limit} bytes per {window} s) by an asset holding intellectual property",
                e.bytes
            )
        };
        let named = TopSource {
            addr: remote,
            share: 1.0,
            pkts: outbound.pkts,
            bytes: e.bytes,
            reflector: false,
        };
        self.hit(
            cx,
            AlertKind::BulkExfiltration,
            last,
            e.start_sec * NS,
            Measured {
                pps: 0.0,
                bps: (e.bytes * 8) as f64 / secs as f64,
                new_flows_per_s: 0.0,
            },
            severity,
            summary,
            Extra::named(named),
            out,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_over_the_limit_are_exfiltration_and_ten_times_it_critical() {
        let s = Settings::default();
        assert_eq!(judge(s.exfil_bytes, &s), None);
        assert_eq!(judge(s.exfil_bytes + 1, &s), Some(Severity::High));
        assert_eq!(judge(s.exfil_bytes * 10, &s), Some(Severity::Critical));
    }

    #[test]
    fn the_sketch_never_under_counts_a_destination() {
        let mut sent = Sent {
            start_sec: 0,
            kib: [[0; SENT_COLS]; SENT_ROWS],
        };
        for k in 0..500u64 {
            sent.add(k * 7_919, 10_240);
        }
        assert!(sent.add(42 * 7_919, 0) >= 10_240);
    }
}
