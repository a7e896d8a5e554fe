//! Industrial command abuse: write, control, stop/restart or program commands from a source
//! not on the asset's allow list.

use crate::alert::*;
use crate::state::*;
use normwatch_model::{
    Alert, AlertKind, DirStats, FlowRecord, IcsCounts, Measured, Severity, TopSource,
};
use std::net::IpAddr;

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
        let severity = if cmds.stop_restart + cmds.program_firmware > 0 {
            Severity::Critical
        } else {
            Severity::High
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
