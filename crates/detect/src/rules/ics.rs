//! Industrial command abuse: write, control, stop/restart or program commands from a source
//! not on the asset's allow list.

use crate::alert::*;
use crate::state::*;
use normwatch_model::{
    Alert, AlertKind, DirStats, FlowRecord, IcsCounts, Measured, Severity, TopSource,
};
use std::net::IpAddr;

/// The commands a record adds to its flow's earlier records (`before`: write, control,
/// stop/restart, program/firmware as the prior record counted them).
pub(crate) fn added(all: &IcsCounts, before: [u32; 4]) -> IcsCounts {
    IcsCounts {
        write: all.write.saturating_sub(before[0]),
        control: all.control.saturating_sub(before[1]),
        stop_restart: all.stop_restart.saturating_sub(before[2]),
        program_firmware: all.program_firmware.saturating_sub(before[3]),
        ..*all
    }
}

/// The severity of commands from a source not on the allow list: critical for stop/restart
/// or program/firmware, high for write or control; `None` for reads alone.
pub(crate) fn severity(cmds: &IcsCounts) -> Option<Severity> {
    if cmds.stop_restart + cmds.program_firmware > 0 {
        Some(Severity::Critical)
    } else if cmds.write + cmds.control > 0 {
        Some(Severity::High)
    } else {
        None
    }
}

/// Addresses of the asset an alert names as reached (more are counted).
const MAX_TARGETS: usize = 4096;

/// The commands an industrial-command alert has seen over all its flows, and the asset's
/// addresses they reached: its figures are the attack's, not its latest flow's.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tally {
    /// Write, control, stop/restart, program/firmware.
    pub(crate) cmds: [u64; 4],
    /// Sorted.
    targets: Vec<IpAddr>,
    /// Addresses beyond the bound.
    more: u64,
}

impl Tally {
    pub(crate) fn add(&mut self, c: &IcsCounts, target: IpAddr) {
        for (sum, v) in
            self.cmds
                .iter_mut()
                .zip([c.write, c.control, c.stop_restart, c.program_firmware])
        {
            *sum += u64::from(v);
        }
        if let Err(i) = self.targets.binary_search(&target) {
            if self.targets.len() < MAX_TARGETS {
                self.targets.insert(i, target);
            } else {
                self.more += 1;
            }
        }
    }

    /// Bytes held, itself included.
    pub(crate) fn heap_bytes(&self) -> usize {
        size_of::<Tally>() + self.targets.capacity() * size_of::<IpAddr>()
    }

    /// Addresses of the asset reached.
    pub(crate) fn targets(&self) -> u64 {
        self.targets.len() as u64 + self.more
    }

    /// The alert's summary: every command counted, the addresses reached, the sources.
    pub(crate) fn summary(&self, sources: &[TopSource]) -> String {
        let [w, c, sr, pf] = self.cmds;
        let n = w + c + sr + pf;
        let who: Vec<String> = sources.iter().map(|s| s.addr.to_string()).collect();
        let k = self.targets();
        let addresses = if k == 1 { "address" } else { "addresses" };
        let (from, are) = if who.len() == 1 {
            ("", "is")
        } else {
            ("sources ", "are")
        };
        format!(
            "{n} industrial commands ({w} write, {c} control, {sr} stop/restart, {pf} program/firmware) to {k} {addresses} of the asset from {from}{}, which {are} not on the allow list",
            who.join(", ")
        )
    }
}

impl<const N: usize> AssetState<N> {
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub(crate) fn ics(
        &mut self,
        cx: &Ctx,
        r: &FlowRecord,
        remote: IpAddr,
        local: IpAddr,
        inbound: &DirStats,
        cmds: &IcsCounts,
        last: u64,
        out: &mut Vec<Alert>,
    ) {
        let Some(severity) = severity(cmds) else {
            return;
        };
        let (w, c, sr, pf) = (
            cmds.write,
            cmds.control,
            cmds.stop_restart,
            cmds.program_firmware,
        );
        let n = w + c + sr + pf;
        let summary = move || {
            format!(
                "{n} industrial commands ({w} write, {c} control, {sr} stop/restart, {pf} program/firmware) from {remote}, which is not on the allow list"
            )
        };
        let named = TopSource {
            addr: remote,
            share: 1.0,
            pkts: inbound.pkts,
            bytes: inbound.ip_bytes,
            reflector: false,
        };
        self.hit(
            cx,
            AlertKind::IcsCommandAbuse,
            last,
            r.added_since_ns(),
            Measured::default(),
            severity,
            summary,
            Extra {
                ics: Some((*cmds, local)),
                ..Extra::named(named)
            },
            out,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_a_record_adds_counts_and_reads_alone_are_no_abuse() {
        let all = IcsCounts {
            read: 50,
            write: 7,
            control: 1,
            ..IcsCounts::default()
        };
        let added = added(&all, [5, 1, 0, 0]);
        assert_eq!((added.write, added.control), (2, 0));
        assert_eq!(severity(&added), Some(Severity::High));
        let reads = IcsCounts {
            read: 50,
            ..IcsCounts::default()
        };
        assert_eq!(severity(&reads), None);
        let stop = IcsCounts {
            stop_restart: 1,
            ..IcsCounts::default()
        };
        assert_eq!(severity(&stop), Some(Severity::Critical));
    }

    #[test]
    fn a_tally_sums_commands_and_counts_each_address_once() {
        let mut t = Tally::default();
        let c = IcsCounts {
            write: 3,
            control: 1,
            ..IcsCounts::default()
        };
        for i in 0..5u8 {
            t.add(&c, IpAddr::from([192, 0, 2, i % 3]));
        }
        assert_eq!(t.cmds, [15, 5, 0, 0]);
        assert_eq!(t.targets(), 3);
        let src = TopSource {
            addr: IpAddr::from([203, 0, 113, 9]),
            share: 1.0,
            pkts: 1,
            bytes: 1,
            reflector: false,
        };
        let s = t.summary(&[src]);
        assert!(
            s.starts_with("20 industrial commands (15 write, 5 control"),
            "{s}"
        );
        assert!(
            s.contains("to 3 addresses") && s.contains("203.0.113.9, which is"),
            "{s}"
        );
    }
}
