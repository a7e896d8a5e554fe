//! sFlow v5: flow samples carrying the first bytes of sampled packets.
//!
//! A sample is a packet, not a flow, so samples go through the sensor's own flow table — one
//! per agent, data source and sampling rate — and leave it as the same bidirectional,
//! Zeek-style records the packet path makes, with counts scaled by the rate. sFlow carries no
//! wall-clock time: a sample's time is when its datagram arrived. Counter samples are
//! skipped; of flow records only the raw packet header (Ethernet, IPv4, IPv6) is used.
//!
//! Memory: a table is made with room for as many flows as the agent's byte bound leaves
//! (half of what it leaves, so several data sources of one agent share it), never more than the flow
//! table's `max_flows`; a full table evicts its own flows as the sensor's does. A table
//! that is empty and has had no sample for [`IDLE_NS`] is freed. When the byte total is
//! short, the table least recently sampled is flushed (its flows emitted, not lost) and
//! freed to make room.

use crate::read::Cursor;
use crate::{Ctx, DropReason, Exported};
use hashbrown::HashMap;
use normwatch_model::flow::{ExportOrigin, RecordSource};
use normwatch_model::FlowRecord;
use normwatch_sensor::decode::LinkType;
use normwatch_sensor::{FlowConfig, FlowTable};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Flow ids of a table start at its number shifted this far, apart from every other table.
const TABLE_ID_SHIFT: u32 = 40;
/// An empty table with no sample for this long (receive time) is freed.
pub const IDLE_NS: u64 = 60_000_000_000;
/// A table with room for fewer flows than this is not worth making.
const MIN_FLOWS: usize = 64;

type Key = (IpAddr, u32, u32);

#[derive(Debug)]
struct Table {
    no: u64,
    table: FlowTable,
    /// Bytes charged to the agent and the total for this table (its flow slots, at most).
    reserved: usize,
    last_ns: u64,
}

/// The flow tables sFlow samples are aggregated in.
#[derive(Debug)]
pub(crate) struct Aggregator {
    tables: HashMap<Key, Table>,
    /// Bytes reserved per agent, and in all.
    agents: HashMap<IpAddr, usize>,
    reserved: usize,
    /// What one flow slot and one table's fixed parts cost, measured on a table.
    per_flow: usize,
    per_table: usize,
    next_no: u64,
    buf: Vec<FlowRecord>,
}

impl Aggregator {
    pub(crate) fn new(cfg: &FlowConfig) -> Self {
        // Measured rather than assumed: the flow layout is the sensor's. A quarter more for
        // what the measure leaves out (fragment groups, boxed ICS summaries).
        let probe = |n: usize| {
            FlowTable::new(FlowConfig {
                max_flows: n,
                ..cfg.clone()
            })
            .memory_bytes()
        };
        let (small, large) = (probe(16), probe(1040));
        let per_flow = (large.saturating_sub(small) / 1024).max(1) * 5 / 4;
        let per_table = small + (16 << 10);
        Aggregator {
            tables: HashMap::new(),
            agents: HashMap::new(),
            reserved: 0,
            per_flow,
            per_table,
            next_no: 0,
            buf: Vec::new(),
        }
    }

    pub(crate) fn reserved(&self) -> usize {
        self.reserved
    }

    pub(crate) fn tables(&self) -> usize {
        self.tables.len()
    }

    fn free(&mut self, key: &Key) -> Option<Table> {
        let t = self.tables.remove(key)?;
        self.reserved -= t.reserved;
        if let Some(a) = self.agents.get_mut(&key.0) {
            *a -= t.reserved;
            if *a == 0 {
                self.agents.remove(&key.0);
            }
        }
        Some(t)
    }

    /// Flushes and frees the least recently sampled tables until `need` more bytes fit
    /// in `budget`; false if they cannot.
    fn make_room(&mut self, need: usize, budget: usize, out: &mut Vec<Exported>) -> bool {
        while self.reserved + need > budget {
            let Some(key) = self
                .tables
                .iter()
                .min_by_key(|(_, t)| t.last_ns)
                .map(|(k, _)| *k)
            else {
                return false;
            };
            let mut t = self.free(&key).expect("found above");
            t.table.flush(&mut self.buf);
            emit(&mut self.buf, t.no, key, out);
        }
        true
    }

    /// A new table for `key`, sized to what the agent's bound and the total leave.
    fn make(&mut self, ctx: &mut Ctx<'_>, key: Key, out: &mut Vec<Exported>) -> bool {
        if self.tables.len() >= ctx.cfg.max_sflow_tables
            && !self.make_room(0, self.reserved.saturating_sub(1), out)
        {
            return false;
        }
        let agent_used = self.agents.get(&key.0).copied().unwrap_or(0);
        let agent_left = ctx.cfg.agent_bytes.saturating_sub(agent_used);
        // Each table of an agent may take half of what its bound leaves: an agent's data
        // sources share it without the first taking it all.
        let share = agent_left / 2;
        let flows = (share.saturating_sub(self.per_table) / self.per_flow)
            .min(ctx.cfg.sflow_table.max_flows);
        if flows < MIN_FLOWS {
            return false;
        }
        let reserved = self.per_table + flows * self.per_flow;
        if !self.make_room(reserved, ctx.budget, out) {
            return false;
        }
        self.next_no += 1;
        let table = FlowTable::new(FlowConfig {
            max_flows: flows,
            ..ctx.cfg.sflow_table.clone()
        });
        self.reserved += reserved;
        *self.agents.entry(key.0).or_insert(0) += reserved;
        self.tables.insert(
            key,
            Table {
                no: self.next_no,
                table,
                reserved,
                last_ns: 0,
            },
        );
        true
    }

    pub(crate) fn decode(
        &mut self,
        mut ctx: Ctx<'_>,
        data: &[u8],
        now_ns: u64,
        out: &mut Vec<Exported>,
    ) -> Result<(), DropReason> {
        let mut c = Cursor::new(data);
        let _version = c.u32();
        let agent = match c.u32().ok_or(DropReason::Truncated)? {
            1 => {
                let a = c.take(4).ok_or(DropReason::Truncated)?;
                IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
            }
            2 => {
                let a = c.take(16).ok_or(DropReason::Truncated)?;
                let a: [u8; 16] = a.try_into().map_err(|_| DropReason::Truncated)?;
                IpAddr::V6(Ipv6Addr::from(a))
            }
            _ => return Err(DropReason::BadSet),
        };
        let _sub_agent = c.u32().ok_or(DropReason::Truncated)?;
        let _seq = c.u32().ok_or(DropReason::Truncated)?;
        let _uptime = c.u32().ok_or(DropReason::Truncated)?;
        let samples = c.u32().ok_or(DropReason::Truncated)?;
        for _ in 0..samples {
            let format = c.u32().ok_or(DropReason::Truncated)?;
            let len = c.u32().ok_or(DropReason::Truncated)? as usize;
            let body = c.take(len).ok_or(DropReason::Truncated)?;
            let expanded = match format {
                1 => false,
                3 => true,
                // Counter samples and other enterprises' formats.
                _ => continue,
            };
            self.sample(&mut ctx, agent, expanded, body, now_ns, out)?;
        }
        Ok(())
    }

    fn sample(
        &mut self,
        ctx: &mut Ctx<'_>,
        agent: IpAddr,
        expanded: bool,
        body: &[u8],
        now_ns: u64,
        out: &mut Vec<Exported>,
    ) -> Result<(), DropReason> {
        let mut s = Cursor::new(body);
        let _seq = s.u32().ok_or(DropReason::BadSet)?;
        let source = if expanded {
            let kind = s.u32().ok_or(DropReason::BadSet)?;
            let index = s.u32().ok_or(DropReason::BadSet)?;
            kind << 24 | (index & 0x00ff_ffff)
        } else {
            s.u32().ok_or(DropReason::BadSet)?
        };
        let rate = s.u32().ok_or(DropReason::BadSet)?;
        let _pool = s.u32();
        let _drops = s.u32();
        // Input and output interfaces: one word each, or format and value when expanded.
        s.take(if expanded { 16 } else { 8 })
            .ok_or(DropReason::BadSet)?;
        let records = s.u32().ok_or(DropReason::BadSet)?;
        let rate = ctx.rate(agent, Some(rate));
        for _ in 0..records {
            let format = s.u32().ok_or(DropReason::BadSet)?;
            let len = s.u32().ok_or(DropReason::BadSet)? as usize;
            let rec = s.take(len).ok_or(DropReason::BadSet)?;
            if format != 1 {
                continue;
            }
            let mut r = Cursor::new(rec);
            let proto = r.u32().ok_or(DropReason::BadSet)?;
            let frame_len = r.u32().ok_or(DropReason::BadSet)? as usize;
            let stripped = r.u32().ok_or(DropReason::BadSet)? as usize;
            let hdr_len = r.u32().ok_or(DropReason::BadSet)? as usize;
            let header = r.take(hdr_len).ok_or(DropReason::BadSet)?;
            let link = match proto {
                1 => LinkType::Ethernet,
                11 | 12 => LinkType::Raw,
                _ => {
                    ctx.stats.drop(DropReason::UnsupportedSample);
                    continue;
                }
            };
            if header.is_empty() {
                ctx.stats.drop(DropReason::UnsupportedSample);
                continue;
            }
            let wire_len = frame_len.saturating_sub(stripped).max(header.len());
            let key = (agent, source, rate);
            if !self.tables.contains_key(&key) && !self.make(ctx, key, out) {
                return Err(if self.tables.len() >= ctx.cfg.max_sflow_tables {
                    DropReason::TooManySessions
                } else {
                    DropReason::MemoryBound
                });
            }
            let t = self.tables.get_mut(&key).expect("inserted above");
            t.last_ns = now_ns;
            t.table
                .process_frame(link, header, wire_len, now_ns, &mut self.buf);
            emit(&mut self.buf, t.no, key, out);
        }
        Ok(())
    }

    /// Lets receive time pass in every table, so idle flows end without new samples.
    /// Tables left empty and unsampled for [`IDLE_NS`] are freed.
    pub(crate) fn advance(&mut self, _ctx: &mut Ctx<'_>, now_ns: u64, out: &mut Vec<Exported>) {
        let mut idle = Vec::new();
        for (key, t) in &mut self.tables {
            t.table.advance_to(now_ns, &mut self.buf);
            emit(&mut self.buf, t.no, *key, out);
            if t.table.is_empty() && now_ns.saturating_sub(t.last_ns) >= IDLE_NS {
                idle.push(*key);
            }
        }
        for key in idle {
            self.free(&key);
        }
    }

    pub(crate) fn flush(&mut self, _ctx: &mut Ctx<'_>, out: &mut Vec<Exported>) {
        for (key, t) in &mut self.tables {
            t.table.flush(&mut self.buf);
            emit(&mut self.buf, t.no, *key, out);
        }
    }
}

/// Scales the table's finished records by the rate and hands them on.
fn emit(buf: &mut Vec<FlowRecord>, no: u64, key: (IpAddr, u32, u32), out: &mut Vec<Exported>) {
    let (agent, source, rate) = key;
    let r = u64::from(rate);
    for mut rec in buf.drain(..) {
        rec.flow_id = no << TABLE_ID_SHIFT | (rec.flow_id & ((1 << TABLE_ID_SHIFT) - 1));
        for d in [&mut rec.orig, &mut rec.resp] {
            d.pkts = d.pkts.saturating_mul(r);
            d.ip_bytes = d.ip_bytes.saturating_mul(r);
            d.payload_bytes = d.payload_bytes.saturating_mul(r);
        }
        let origin = ExportOrigin {
            source: RecordSource::Sflow,
            exporter: agent,
            domain: source,
            sampling_rate: rate,
        };
        rec.export = Some(origin);
        out.push(Exported {
            record: rec,
            origin,
        });
    }
}
