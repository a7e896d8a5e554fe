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

impl<const N: usize> AssetState<N> {
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub(crate) fn ics(
        &mut self,
        cx: &Ctx,
        r: &FlowRecord,
        remote: IpAddr,
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
            Extra::named(named),
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
}
