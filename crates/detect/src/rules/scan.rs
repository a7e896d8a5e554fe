//! Scans: one source's unanswered probes reaching many ports or many addresses of an asset.

use crate::alert::*;
use crate::sketch::Distinct;
use crate::state::*;
use crate::{Settings, NS};
use normwatch_config::reflectors::{Reflectors, UDP};
use normwatch_model::ip_proto;
use normwatch_model::{
    addr_key, Alert, AlertKind, DirStats, Measured, Severity, TcpFlags, TopSource,
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

impl Probe {
    /// One more probe, of port `port` on the address whose key is `addr`, in second `sec`.
    pub(crate) fn add(&mut self, port: u16, addr: u64, sec: u64) {
        self.ports.insert(u64::from(port));
        self.addrs.insert(addr);
        self.last_sec = self.last_sec.max(sec);
        self.first_sec = self.first_sec.min(sec);
        self.probes += 1;
    }

    /// Probes that look like a scan even before they reach its limits: nearly every probe a
    /// new target (port and address), over more than one port or address. A flood from one
    /// source sends many probes to the same few targets.
    pub(crate) fn scan_like(&self, s: &Settings) -> bool {
        if self.is_scan(s) {
            return true;
        }
        let (ports, addrs) = (self.ports.estimate(), self.addrs.estimate());
        (ports >= 1.5 || addrs >= 1.5) && (self.probes as f64) <= 2.0 * ports * addrs
    }

    /// The probes reached `scan_ports` distinct ports or `scan_addresses` distinct addresses.
    pub(crate) fn is_scan(&self, s: &Settings) -> bool {
        self.ports.count() >= bits_for(s.scan_ports)
            || self.addrs.count() >= bits_for(s.scan_addresses)
    }
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
/// Over UDP: a flow the asset never answered, from a client's port: not from a well-known
/// port (below 1024) nor from a listed reflector's (those send responses, and unsolicited
/// ones are reflection, whose reflectors would otherwise each look like a scanner of a
/// prefix they flood).
pub(crate) fn is_probe(
    proto: u8,
    inbound: &DirStats,
    outbound: &DirStats,
    remote_port: u16,
    cat: &Reflectors,
) -> bool {
    match proto {
        ip_proto::TCP => {
            let f = inbound.tcp_flags;
            f.has(TcpFlags::SYN) && !f.has(TcpFlags::ACK) && inbound.payload_bytes == 0
        }
        ip_proto::UDP => {
            outbound.pkts == 0 && remote_port >= 1024 && cat.lookup(UDP, remote_port).is_none()
        }
        _ => false,
    }
}

impl<const N: usize> AssetState<N> {
    /// Whether the scan rule follows `remote`.
    #[inline(never)]
    pub(crate) fn follows(&self, remote: IpAddr) -> bool {
        self.tables
            .as_ref()
            .is_some_and(|t| t.scans.contains_key(&remote))
    }

    /// Whether most of the traffic gathered for an attack came from sources whose probes look
    /// like a scan ([`Probe::scan_like`]): a fast scan crosses a packet or new-flow limit by
    /// itself, and is a scan, not a flood.
    pub(crate) fn scanner_dominated(&self, s: &Settings) -> bool {
        let (Some(a), Some(t)) = (self.atk.as_deref(), self.tables.as_deref()) else {
            return false;
        };
        let total: u64 = a.sources.values().map(|x| x.pkts).sum::<u64>() + a.others.0;
        let scanners: u64 = a
            .sources
            .iter()
            .filter(|(addr, _)| t.scans.get(*addr).is_some_and(|p| p.scan_like(s)))
            .map(|(_, x)| x.pkts)
            .sum();
        total > 0 && scanners * 2 > total
    }

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
        p.add(local_port, addr_key(local), sec);
        if !p.is_scan(s) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use normwatch_model::TcpFlags;

    fn d(pkts: u64, flags: u8, payload: u64) -> DirStats {
        DirStats {
            pkts,
            ip_bytes: pkts * 40 + payload,
            payload_bytes: payload,
            tcp_flags: TcpFlags(flags),
        }
    }

    #[test]
    fn a_probe_is_an_unanswered_attempt_never_backscatter_or_a_response() {
        let cat = Reflectors::built_in();
        let none = d(0, 0, 0);
        let syn = d(1, TcpFlags::SYN, 0);
        let rst = d(1, TcpFlags::RST | TcpFlags::ACK, 0);
        assert!(is_probe(6, &syn, &rst, 40_000, &cat));
        // Backscatter: a SYN-ACK the asset never asked for.
        let syn_ack = d(1, TcpFlags::SYN | TcpFlags::ACK, 0);
        assert!(!is_probe(6, &syn_ack, &none, 80, &cat));
        // A completed handshake with data.
        let client = d(3, TcpFlags::SYN | TcpFlags::ACK, 100);
        assert!(!is_probe(6, &client, &syn_ack, 40_000, &cat));
        // Unanswered UDP from a client's port; a listed reflector's response, and any
        // datagram from a well-known port (a response, never a request), are not probes.
        assert!(is_probe(17, &d(1, 0, 10), &none, 40_000, &cat));
        assert!(!is_probe(17, &d(1, 0, 1_000), &none, 53, &cat));
        assert!(!is_probe(17, &d(1, 0, 1_000), &none, 4_500, &cat));
        assert!(!is_probe(17, &d(1, 0, 1_000), &none, 999, &cat));
    }

    #[test]
    fn a_source_becomes_a_scanner_at_the_distinct_port_or_address_limit() {
        let s = Settings::default();
        let mut p = Probe::default();
        for port in 0..s.scan_ports as u16 - 3 {
            p.add(1_000 + port, 1, 10);
        }
        assert!(!p.is_scan(&s));
        for port in 0..20 {
            p.add(2_000 + port, 1, 11);
        }
        assert!(p.is_scan(&s));
        let mut q = Probe::default();
        for a in 0..20u64 {
            q.add(22, 0xC000_0200 + a, 10);
        }
        assert!(q.is_scan(&s));
        assert_eq!((q.first_sec, q.last_sec, q.probes), (0, 10, 20));
    }
}
