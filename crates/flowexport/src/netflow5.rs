//! NetFlow v5: a 24-byte header and up to 30 fixed 48-byte IPv4 records.
//!
//! Times in records are the exporter's uptime in milliseconds; the header pairs the uptime
//! with the wall clock, which turns them into event times.

use crate::read::Cursor;
use crate::record::{push, Unidir};
use crate::{Decoder, DropReason, Exported};
use normwatch_model::flow::RecordSource;
use normwatch_model::EndReason;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

pub const HEADER_LEN: usize = 24;
pub const RECORD_LEN: usize = 48;
/// The most records the format allows in one datagram.
pub const MAX_RECORDS: usize = 30;

/// Milliseconds of exporter uptime `at_ms` as ns since the epoch, given that uptime `now_ms`
/// was `now_ns`. Uptime wraps after 49.7 days: a record time "after" the header is from
/// before the wrap.
pub(crate) fn uptime_to_ns(now_ns: u64, now_ms: u32, at_ms: u32) -> u64 {
    let back_ms = now_ms.wrapping_sub(at_ms);
    now_ns.saturating_sub(u64::from(back_ms) * 1_000_000)
}

pub(crate) fn decode(
    d: &mut Decoder,
    from: SocketAddr,
    data: &[u8],
    out: &mut Vec<Exported>,
) -> Result<(), DropReason> {
    let mut c = Cursor::new(data);
    let hdr = c.take(HEADER_LEN).ok_or(DropReason::Truncated)?;
    let mut h = Cursor::new(hdr);
    let _version = h.u16();
    let count = usize::from(h.u16().unwrap_or(0));
    let uptime = h.u32().unwrap_or(0);
    let secs = h.u32().unwrap_or(0);
    let nsecs = h.u32().unwrap_or(0);
    let seq = h.u32().unwrap_or(0);
    let engine_type = h.u8().unwrap_or(0);
    let engine_id = h.u8().unwrap_or(0);
    let sampling = h.u16().unwrap_or(0);
    if count > MAX_RECORDS {
        return Err(DropReason::BadSet);
    }
    let export_ns = u64::from(secs) * 1_000_000_000 + u64::from(nsecs.min(999_999_999));
    // The top two bits are the sampling mode, the rest the interval (0: not sampled).
    let announced = match u32::from(sampling & 0x3fff) {
        0 => None,
        n => Some(n),
    };
    let domain = u32::from(engine_type) << 8 | u32::from(engine_id);
    let exporter = from.ip();
    d.sequence((from, 5, domain), seq, count as u32);
    let mut ctx = d.ctx();
    let rate = ctx.rate(exporter, announced);
    for _ in 0..count {
        let Some(rec) = c.take(RECORD_LEN) else {
            return Err(DropReason::Truncated);
        };
        let mut r = Cursor::new(rec);
        let src = Ipv4Addr::from(r.u32().unwrap_or(0));
        let dst = Ipv4Addr::from(r.u32().unwrap_or(0));
        let _nexthop = r.u32();
        let _input = r.u16();
        let _output = r.u16();
        let pkts = r.u32().unwrap_or(0);
        let bytes = r.u32().unwrap_or(0);
        let first = r.u32().unwrap_or(0);
        let last = r.u32().unwrap_or(0);
        let sport = r.u16().unwrap_or(0);
        let dport = r.u16().unwrap_or(0);
        let _pad = r.u8();
        let flags = r.u8().unwrap_or(0);
        let proto = r.u8().unwrap_or(0);
        let u = Unidir {
            src: IpAddr::V4(src),
            dst: IpAddr::V4(dst),
            sport,
            dport,
            proto,
            pkts: u64::from(pkts),
            bytes: u64::from(bytes),
            flags,
            first_ns: uptime_to_ns(export_ns, uptime, first),
            last_ns: uptime_to_ns(export_ns, uptime, last),
            end: EndReason::IdleTimeout,
            // NetFlow v5 has no TTL.
            ttl: None,
        };
        push(
            &mut ctx,
            &u,
            RecordSource::NetflowV5,
            exporter,
            domain,
            rate,
            out,
        );
    }
    Ok(())
}
