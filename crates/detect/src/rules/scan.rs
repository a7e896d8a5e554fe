//! Scans: one source's unanswered probes reaching many ports or many addresses of an asset.

use crate::alert::*;
use crate::reflect::reflector;
use crate::sketch::Distinct;
use crate::state::*;
use crate::NS;
use normwatch_model::{
    Alert, AlertKind, DirStats, FlowRecord, Measured, Severity, TcpFlags, TopSource,
};
use std::net::IpAddr;

/// Sources followed by the scan rule per asset (more are not followed until some expire).
pub(crate) const MAX_SCANNERS: usize = 4096;

/// One source's probes of the asset.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Probe {
    pub(crate) ports: Distinct,
    pub(crate) addrs: Distinct,
    pub(crate) first_sec: u64,
    pub(crate) last_sec: u64,
    pub(crate) probes: u64,
}

/// Popcount a [`Distinct`] bitmap reaches when `n` distinct values went in (expected).
pub(crate) fn bits_for(n: u32) -> u32 {
    let n = f64::from(n.max(1));
    (128.0 * (1.0 - (-n / 128.0).exp())).round().max(1.0) as u32
}

/// A probe: a connection attempt the remote end originated that never completed a handshake
/// and carried no data — a SYN (and maybe a RST), never an ACK from the prober. So a
/// SYN-ACK or RST arriving unsolicited (backscatter of someone else's spoofed flood: its ACK
/// answers a SYN the asset never sent) is not one, nor is a health check that completes its
/// handshake; a connect() scan counts on the closed ports it hits, not on the open ones.
/// Over UDP: a flow the asset never answered, not from a reflector port (those are responses).
pub(crate) fn is_probe(
    r: &FlowRecord,
    inbound: &DirStats,
    outbound: &DirStats,
    remote_port: u16,
) -> bool {
    match r.ip_proto {
        6 => {
            let f = inbound.tcp_flags;
            f.has(TcpFlags::SYN) && !f.has(TcpFlags::ACK) && inbound.payload_bytes == 0
        }
        17 => outbound.pkts == 0 && reflector(remote_port).is_none(),
        _ => false,
    }
}

impl<const N: usize> AssetState<N> {
    #[inline(never)]
    pub(crate) fn probe(
        &mut self,
        cx: &Ctx,
        remote: IpAddr,
        local: IpAddr,
        local_port: u16,
        sec: u64,
        out: &mut Vec<Alert>,
    ) {
        let s = cx.s;
        let Tables {
            scans, scanning, ..
        } = self.tables(sec);
        if scans.len() >= MAX_SCANNERS {
            let f = scanning.get_or_insert_with(|| {
                let mut f = Box::new(Scanners::default());
                for k in scans.keys() {
                    f.add(addr_key(*k));
                }
                f
            });
            if !f.maybe(addr_key(remote)) {
                // Not followed, and no room to follow it.
                return;
            }
        }
        let p = if let Some(p) = scans.get_mut(&remote) {
            if sec > p.last_sec + s.scan_idle.as_secs() {
                *p = Probe {
                    first_sec: sec,
                    ..Probe::default()
                };
            }
            p
        } else if scans.len() < MAX_SCANNERS {
            scans.entry(remote).or_insert(Probe {
                first_sec: sec,
                ..Probe::default()
            })
        } else {
            return;
        };
        p.ports.insert(u64::from(local_port));
        p.addrs.insert(addr_key(local));
        p.last_sec = p.last_sec.max(sec);
        p.first_sec = p.first_sec.min(sec);
        p.probes += 1;
        let (ports, addrs) = (p.ports.count(), p.addrs.count());
        if ports < bits_for(s.scan_ports) && addrs < bits_for(s.scan_addresses) {
            return;
        }
        let p = *p;
        let summary = move || {
            format!(
                "{remote} sent {} unanswered connection attempts to about {:.0} ports on about {:.0} addresses of the asset",
                p.probes,
                p.ports.estimate(),
                p.addrs.estimate()
            )
        };
        let named = TopSource {
            addr: remote,
            share: 1.0,
            pkts: p.probes,
            bytes: 0,
            reflector: false,
        };
        self.hit(
            cx,
            AlertKind::Scan,
            sec,
            p.first_sec * NS,
            Measured::default(),
            Severity::Low,
            summary,
            Extra::named(named),
            out,
        );
    }
}
