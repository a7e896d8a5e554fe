//! Which of the sources gathered during a flood are the attack's: the ones an alert names
//! and evidence packages address. An asset under attack still serves its ordinary clients;
//! they are not the attack, and naming them would ask a State to act against the asset's own
//! users. The verdict is per kind, from what each source sent and what the asset answered:
//!
//! - SYN flood: the attack is connection attempts left half-open. A source with no such
//!   attempt, or whose attempts completed their handshakes at least half as often as the
//!   asset's connections normally do (its learned completion share; all of them when none is
//!   learned), is a client, not an attacker.
//! - Volumetric flood and carpet bombing: a source the asset served normally is a client: the
//!   asset answered at least half as large a share of the flows the source began as it
//!   normally answers (its learned response share; all when none is learned; flows the asset
//!   began are its own exchanges), sent back at least one packet for
//!   every [`MIN_REPLY_PER`] it received from it (TCP acknowledges at least every second
//!   full-sized segment, RFC 5681 §4.2; the margin allows for stretch acknowledgements and
//!   loss), its connection attempts completed as for a SYN flood, and its own rate did not
//!   rise with the attack: it stayed within the normal traffic the asset's limit allows
//!   (the packet limit in force divided by `baseline_factor`, i.e. the learned mean once the
//!   baseline is warm). Everything else it sent is the attack's.
//! - Amplification: the reflectors (unsolicited responses from reflector ports, or
//!   unsolicited SYN-ACKs), as before.
//!
//! A client the flood kept out is not the attack either: a real TCP stack whose SYN goes
//! unanswered sends it again on the same connection (RFC 6298: after one second, then
//! backing off; Linux sends up to seven, Windows three), so a source whose few half-open
//! attempts ([`CLIENT_ATTEMPTS`] at most, a browser's parallel connections and a retry) were
//! each retransmitted, and whose rate stayed a client's, is not named. A flood tool sends a
//! new one-packet attempt instead. A source seen in a single unanswered one-packet attempt
//! cannot be told from a forged one by its traffic; it stays among the attack's sources
//! (ranked by what it sent, so a real botnet's busy hosts come first).

use crate::state::Src;
use normwatch_model::AlertKind;

/// A served client sends at most this many packets for each one the asset sends back.
pub(crate) const MIN_REPLY_PER: u64 = 8;

/// Most half-open connection attempts of a client the flood kept out: a browser opens up
/// to six connections to a host, and may try once more.
pub(crate) const CLIENT_ATTEMPTS: u32 = 8;

/// Most SYNs a TCP stack sends for one connection attempt (Linux's default of six retries).
pub(crate) const MAX_SYN_TRIES: u64 = 7;

/// The asset's normal, as the per-source verdict compares with it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Normal {
    /// Share of TCP connection attempts that complete their handshake (0 to 1).
    pub(crate) completion: f64,
    /// Share of flows the asset answers (0 to 1).
    pub(crate) response: f64,
    /// Packets per second one client may send without its rate having risen with the attack.
    pub(crate) pps: f64,
}

/// Whether the source's connection attempts complete like the asset's normal clients' do.
fn completes(s: &Src, n: &Normal) -> bool {
    s.attempts > 0 && f64::from(s.established) >= 0.5 * n.completion * f64::from(s.attempts)
}

/// Whether the source's rate stayed a client's.
fn steady(s: &Src, n: &Normal) -> bool {
    let secs = s.last.saturating_sub(s.first) + 1;
    s.pkts as f64 / secs as f64 <= n.pps
}

/// Whether the source is a client the flood kept out: a few half-open attempts, each sent
/// again as a TCP stack does when its SYN goes unanswered, and nothing else unserved.
fn kept_out(s: &Src, n: &Normal) -> bool {
    let half_open = s.attempts.saturating_sub(s.established);
    let h = u64::from(half_open);
    (1..=CLIENT_ATTEMPTS).contains(&half_open)
        && (2 * h..=MAX_SYN_TRIES * h).contains(&u64::from(s.unserved))
        && steady(s, n)
}

/// Whether the asset served the source as it serves its clients (see the module text).
fn served(s: &Src, n: &Normal) -> bool {
    // Flows the asset began are its own exchanges; those it had to answer, answered as
    // normally. (Without flows of its own: only flows the asset began, or later reports of
    // flows older than the table's interest in the source.)
    let answered = s.flows == 0 || f64::from(s.answered) >= 0.5 * n.response * f64::from(s.flows);
    let replies = u64::from(s.out_pkts) * MIN_REPLY_PER >= s.pkts;
    let handshakes = s.attempts == 0 || completes(s, n);
    answered && replies && handshakes && steady(s, n)
}

/// The packets source `s` contributed to an attack of `kind`, 0 when it is not one of the
/// attack's sources.
pub(crate) fn attack_pkts(kind: AlertKind, s: &Src, n: &Normal) -> u64 {
    match kind {
        AlertKind::UdpAmplification => {
            if s.reflector {
                s.pkts
            } else {
                0
            }
        }
        AlertKind::SynFlood => {
            if s.attempts <= s.established || completes(s, n) || kept_out(s, n) {
                0
            } else {
                // The packets of what it left unanswered or half-open.
                u64::from(s.unserved).max(1)
            }
        }
        _ => {
            if served(s, n) || kept_out(s, n) {
                0
            } else {
                s.pkts
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NORMAL: Normal = Normal {
        completion: 1.0,
        response: 1.0,
        pps: 100.0,
    };

    /// A web client: one connection, completed and answered (5 packets in, 3 back).
    fn client() -> Src {
        Src {
            pkts: 5,
            bytes: 400,
            out_pkts: 3,
            attempts: 1,
            established: 1,
            flows: 1,
            answered: 1,
            first: 10,
            last: 10,
            ..Src::default()
        }
    }

    /// A forged source: one SYN, never completed.
    fn forged() -> Src {
        Src {
            pkts: 1,
            bytes: 40,
            unserved: 1,
            attempts: 1,
            flows: 1,
            first: 10,
            last: 10,
            ..Src::default()
        }
    }

    #[test]
    fn a_client_completing_handshakes_is_no_syn_flood_source_and_a_forged_one_is() {
        assert_eq!(attack_pkts(AlertKind::SynFlood, &client(), &NORMAL), 0);
        assert_eq!(attack_pkts(AlertKind::SynFlood, &forged(), &NORMAL), 1);
        // A host that completes one attempt in ten: the attack's, for its nine others.
        let bot = Src {
            pkts: 14,
            unserved: 9,
            attempts: 10,
            established: 1,
            ..client()
        };
        assert_eq!(attack_pkts(AlertKind::SynFlood, &bot, &NORMAL), 9);
        // Where handshakes normally complete only half the time, one in three is normal.
        let lossy = Normal {
            completion: 0.5,
            ..NORMAL
        };
        let third = Src {
            attempts: 3,
            established: 1,
            unserved: 2,
            ..bot
        };
        assert_eq!(attack_pkts(AlertKind::SynFlood, &third, &lossy), 0);
        assert!(attack_pkts(AlertKind::SynFlood, &third, &NORMAL) > 0);
        // A client whose SYN the flooded asset dropped, and which sent it again: kept out,
        // not attacking; a one-packet attempt cannot be told from a forged one.
        let retried = Src {
            pkts: 2,
            unserved: 2,
            ..forged()
        };
        assert_eq!(attack_pkts(AlertKind::SynFlood, &retried, &NORMAL), 0);
        assert_eq!(
            attack_pkts(AlertKind::VolumetricFlood, &retried, &NORMAL),
            0
        );
        // Retransmitting hosts that keep making new attempts are the attack's.
        let stack_bot = Src {
            pkts: 400,
            unserved: 400,
            attempts: 200,
            flows: 200,
            last: 19,
            ..forged()
        };
        assert_eq!(attack_pkts(AlertKind::SynFlood, &stack_bot, &NORMAL), 400);
        // A source that sent no SYN at all is not a SYN flood's.
        let other = Src {
            attempts: 0,
            ..forged()
        };
        assert_eq!(attack_pkts(AlertKind::SynFlood, &other, &NORMAL), 0);
    }

    #[test]
    fn a_served_steady_client_is_no_volumetric_source_and_an_unanswered_or_fast_one_is() {
        let k = AlertKind::VolumetricFlood;
        assert_eq!(attack_pkts(k, &client(), &NORMAL), 0);
        assert_eq!(attack_pkts(AlertKind::CarpetBombing, &client(), &NORMAL), 0);
        // Unanswered datagrams.
        let udp = Src {
            pkts: 50,
            bytes: 5_000,
            unserved: 50,
            flows: 1,
            first: 10,
            last: 10,
            ..Src::default()
        };
        assert_eq!(attack_pkts(k, &udp, &NORMAL), 50);
        // Answered, but at a rate no client of the asset sends: it rose with the attack.
        let fast = Src {
            pkts: 30_000,
            out_pkts: 20_000,
            first: 10,
            last: 19,
            ..client()
        };
        assert_eq!(attack_pkts(k, &fast, &NORMAL), 30_000);
        // Answered once, then flooding the open connection with no acknowledgement back.
        let pushy = Src {
            pkts: 900,
            last: 19,
            ..client()
        };
        assert_eq!(attack_pkts(k, &pushy, &NORMAL), 900);
        // A server the asset itself downloads from: its exchange, acknowledged.
        let download = Src {
            pkts: 1_000,
            out_pkts: 500,
            attempts: 0,
            established: 0,
            flows: 0,
            answered: 0,
            last: 19,
            ..client()
        };
        assert_eq!(attack_pkts(k, &download, &NORMAL), 0);
        // Handshakes left half-open are not served traffic.
        assert_eq!(attack_pkts(k, &forged(), &NORMAL), 1);
    }

    #[test]
    fn amplification_names_only_reflectors() {
        let refl = Src {
            reflector: true,
            ..forged()
        };
        let k = AlertKind::UdpAmplification;
        assert_eq!(attack_pkts(k, &refl, &NORMAL), 1);
        assert_eq!(attack_pkts(k, &forged(), &NORMAL), 0);
    }
}
