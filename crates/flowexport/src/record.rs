//! One exported unidirectional flow made into a [`FlowRecord`]: the exporter's source is the
//! originator, the asset is matched as the sensor matches it (responder first), counts are
//! scaled by the sampling rate.

use crate::{Ctx, Exported};
use normwatch_model::flow::{ExportOrigin, RecordSource};
use normwatch_model::ip_proto;
use normwatch_model::{
    AssetMatch, ConnState, DirStats, EndReason, FlowRecord, Side, Span, TcpFlags,
};
use std::net::IpAddr;

/// A unidirectional flow as NetFlow and IPFIX report it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Unidir {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub pkts: u64,
    pub bytes: u64,
    pub flags: u8,
    pub first_ns: u64,
    pub last_ns: u64,
    pub end: EndReason,
    /// The least and greatest IP TTL of its packets, where the exporter reports them.
    pub ttl: Option<Span<u8>>,
}

/// What a one-way TCP record can tell of the connection: only what the originator sent.
/// A SYN without an ACK is an attempt (S0) whatever else followed, so a spoofed flood's
/// records look as half-open as the packet path makes them.
fn conn_state(proto: u8, flags: u8) -> ConnState {
    if proto != ip_proto::TCP {
        return ConnState::OTH;
    }
    let f = TcpFlags(flags);
    match (f.has(TcpFlags::SYN), f.has(TcpFlags::ACK)) {
        (true, false) if f.has(TcpFlags::RST) => ConnState::RSTOS0,
        (true, false) if f.has(TcpFlags::FIN) => ConnState::SH,
        (true, false) => ConnState::S0,
        (true, true) if f.has(TcpFlags::RST) => ConnState::RSTO,
        (true, true) if f.has(TcpFlags::FIN) => ConnState::SF,
        (true, true) => ConnState::S1,
        _ => ConnState::OTH,
    }
}

pub(crate) fn push(
    ctx: &mut Ctx<'_>,
    u: &Unidir,
    source: RecordSource,
    exporter: IpAddr,
    domain: u32,
    rate: u32,
    out: &mut Vec<Exported>,
) {
    let assets = &ctx.cfg.assets;
    let asset = if assets.is_empty() {
        None
    } else if let Some((i, _)) = assets.lookup(u.dst) {
        Some(AssetMatch {
            id: assets.get(i).id.clone(),
            side: Side::Resp,
        })
    } else {
        assets.lookup(u.src).map(|(i, _)| AssetMatch {
            id: assets.get(i).id.clone(),
            side: Side::Orig,
        })
    };
    let r = u64::from(rate);
    let origin = ExportOrigin {
        source,
        exporter,
        domain,
        sampling_rate: rate,
    };
    let record = FlowRecord {
        sensor_id: ctx.cfg.sensor_id.clone(),
        flow_id: ctx.flow_id(),
        orig_addr: u.src,
        orig_port: u.sport,
        resp_addr: u.dst,
        resp_port: u.dport,
        ip_proto: u.proto,
        first_ns: u.first_ns.min(u.last_ns),
        last_ns: u.last_ns.max(u.first_ns),
        orig: DirStats {
            pkts: u.pkts.saturating_mul(r),
            ip_bytes: u.bytes.saturating_mul(r),
            payload_bytes: 0,
            tcp_flags: TcpFlags(if u.proto == ip_proto::TCP { u.flags } else { 0 }),
        },
        resp: DirStats::default(),
        conn_state: conn_state(u.proto, u.flags),
        asset,
        ics: None,
        end_reason: u.end,
        export: Some(origin),
        prior: None,
        attempts: None,
        orig_ttl: u.ttl,
        resp_ttl: None,
    };
    out.push(Exported { record, origin });
}
