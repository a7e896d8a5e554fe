//! Amplification and reflection: unsolicited responses from the reflector catalogue's ports
//! (UDP), or unsolicited SYN-ACKs (TCP reflection off any server), above their own limit, or
//! a flood mostly made of them. Their sources are reflectors, named as such.

use crate::rules::Bucket;
use crate::Settings;
use normwatch_config::reflectors::{Reflectors, TCP, UDP};
use normwatch_model::{DirStats, TcpFlags};

/// Unsolicited reflector responses in `b` above their own limit.
pub(crate) fn over(b: &Bucket, s: &Settings) -> bool {
    u64::from(b.refl_pkts) > s.amplification_pps
        || b.refl_bytes.saturating_mul(8) > s.amplification_bps
}

/// How far over their limit the reflected responses of `b` are.
pub(crate) fn ratio(b: &Bucket, s: &Settings) -> f64 {
    (f64::from(b.refl_pkts) / s.amplification_pps.max(1) as f64)
        .max((b.refl_bytes * 8) as f64 / s.amplification_bps.max(1) as f64)
}

/// Largest mean packet of an unsolicited SYN-ACK flow (IP bytes): a SYN-ACK carries no data
/// (40 to 80 bytes with options, over IPv4 or IPv6). Flow exports do not say how much
/// payload a flow carried; a download's packets are far larger.
const SYN_ACK_MAX_BYTES: u64 = 100;

/// Whether what a flow's remote end sent is reflected: the position of its reflector in the
/// catalogue (`cat.list().len()` for a TCP port it does not list), or `None`.
///
/// - UDP from a listed port, unsolicited: the asset sent nothing in the flow, or the
///   reflector sent at least `amplification_ratio` times the asset's bytes;
/// - TCP: SYN-ACKs (no data, no FIN or PSH) answering a SYN the asset never sent, from any
///   port: a server answering SYNs forged with the asset's address.
pub(crate) fn reflected(
    s: &Settings,
    proto: u8,
    remote_port: u16,
    inbound: &DirStats,
    outbound: &DirStats,
) -> Option<usize> {
    if inbound.pkts == 0 {
        return None;
    }
    let cat = &s.reflectors;
    match proto {
        UDP => {
            let i = cat.lookup(UDP, remote_port)?;
            (outbound.pkts == 0
                || inbound.ip_bytes as f64 >= s.amplification_ratio * outbound.ip_bytes as f64)
                .then_some(i)
        }
        TCP => {
            let f = inbound.tcp_flags;
            let syn_ack = f.has(TcpFlags::SYN | TcpFlags::ACK)
                && !f.has(TcpFlags::FIN)
                && !f.has(TcpFlags::PSH)
                && inbound.payload_bytes == 0
                && inbound.ip_bytes <= inbound.pkts * SYN_ACK_MAX_BYTES;
            (syn_ack && !outbound.tcp_flags.has(TcpFlags::SYN))
                .then(|| cat.lookup(TCP, remote_port).unwrap_or(cat.list().len()))
        }
        _ => None,
    }
}

/// What reflected an attack's traffic, by protocol (`refl`: bytes by position in `cat`, the
/// one past its end for unlisted TCP ports), and how the asset's own traffic to them
/// compares.
pub(crate) fn amp_summary(
    pkts: u64,
    bits: u64,
    refl: &[u64],
    refl_out: u64,
    cat: &Reflectors,
) -> String {
    let list = cat.list();
    let mut by: Vec<(u64, String, u8, u16)> = refl
        .iter()
        .enumerate()
        .filter(|(_, v)| **v > 0)
        .map(|(i, v)| match list.get(i) {
            Some(r) => (*v, r.name.clone(), r.proto, r.port),
            None => (*v, "TCP SYN-ACK".to_string(), TCP, 0),
        })
        .collect();
    by.sort_by(|a, b| b.0.cmp(&a.0).then((a.2, a.3).cmp(&(b.2, b.3))));
    let protos: Vec<String> = by
        .iter()
        .map(|(v, name, proto, port)| match (*proto, *port) {
            (TCP, 0) => format!("{name} (other TCP ports): {v} bytes"),
            (TCP, port) => format!("{name} SYN-ACK (TCP port {port}): {v} bytes"),
            (_, port) => format!("{name} (port {port}): {v} bytes"),
        })
        .collect();
    let total: u64 = by.iter().map(|x| x.0).sum();
    let ratio = if refl_out == 0 {
        "the asset sent nothing to them (unsolicited)".to_string()
    } else {
        format!(
            "the asset sent them {refl_out} bytes, an in/out ratio of {:.0}",
            total as f64 / refl_out as f64
        )
    };
    format!(
        "{pkts} packets ({bits} bits) of reflector responses in one second; reflected so far: {}; {ratio}",
        protos.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(pkts: u64, bytes: u64, payload: u64, flags: u8) -> DirStats {
        DirStats {
            pkts,
            ip_bytes: bytes,
            payload_bytes: payload,
            tcp_flags: TcpFlags(flags),
        }
    }

    #[test]
    fn unsolicited_responses_from_listed_ports_and_unsolicited_syn_acks_are_reflected() {
        let s = Settings::default();
        let none = d(0, 0, 0, 0);
        let dns = s.reflectors.lookup(UDP, 53);
        assert!(dns.is_some());
        // Unsolicited, or at least 50 times what the asset sent.
        assert_eq!(reflected(&s, UDP, 53, &d(1, 1_200, 1_172, 0), &none), dns);
        assert_eq!(
            reflected(&s, UDP, 53, &d(10, 12_000, 11_720, 0), &d(1, 80, 52, 0)),
            dns
        );
        // The asset's own query answered, an unlisted port: not reflected.
        assert_eq!(
            reflected(&s, UDP, 53, &d(1, 1_200, 1_172, 0), &d(1, 80, 52, 0)),
            None
        );
        assert_eq!(
            reflected(&s, UDP, 4_444, &d(1, 1_200, 1_172, 0), &none),
            None
        );
        // SYN-ACKs the asset never asked for, from a listed port or any other.
        let syn_ack = d(3, 132, 0, TcpFlags::SYN | TcpFlags::ACK);
        let rst = d(1, 40, 0, TcpFlags::RST);
        assert_eq!(
            reflected(&s, TCP, 80, &syn_ack, &rst),
            s.reflectors.lookup(TCP, 80)
        );
        assert_eq!(
            reflected(&s, TCP, 9_999, &syn_ack, &none),
            Some(s.reflectors.list().len())
        );
        // The asset's own connection, and a server's data, are not.
        let syn = d(1, 60, 0, TcpFlags::SYN);
        assert_eq!(reflected(&s, TCP, 80, &syn_ack, &syn), None);
        let data = d(
            20,
            28_000,
            27_200,
            TcpFlags::SYN | TcpFlags::ACK | TcpFlags::PSH,
        );
        assert_eq!(reflected(&s, TCP, 443, &data, &none), None);
    }

    #[test]
    fn reflected_responses_over_either_limit_are_an_attack_and_the_ratio_says_how_far() {
        let s = Settings::default();
        let quiet = Bucket {
            refl_pkts: 10,
            refl_bytes: 10_000,
            ..Bucket::default()
        };
        assert!(!over(&quiet, &s));
        let many = Bucket {
            refl_pkts: 5_000,
            refl_bytes: 10_000,
            ..Bucket::default()
        };
        assert!(over(&many, &s));
        assert!((ratio(&many, &s) - 5.0).abs() < 1e-9);
        let big = Bucket {
            refl_pkts: 100,
            refl_bytes: 1_000_000,
            ..Bucket::default()
        };
        assert!(over(&big, &s));
    }
}
