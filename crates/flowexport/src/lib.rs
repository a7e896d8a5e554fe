//! Flow-export ingest: NetFlow v5, NetFlow v9, IPFIX and sFlow v5 datagrams from routers and
//! switches decoded into the same [`FlowRecord`]s the sensor derives from packets.
//!
//! - [`netflow5`]: fixed-format NetFlow v5.
//! - [`template`]: NetFlow v9 and IPFIX, with per-session template caches, data held while its
//!   template has not arrived, options records announcing the sampling rate.
//! - [`listen`]: UDP sockets on named threads, datagrams in batches over a bounded channel.
//! - [`sflow`]: sFlow v5 flow samples; the sampled packet headers go through the sensor's own
//!   flow table (one per agent and rate), so sFlow gives bidirectional, Zeek-style flows.
//!
//! [`Decoder::decode`] takes one datagram and its sender, appends [`Exported`] records and
//! never panics: a datagram it cannot use is counted by [`DropReason`]. Counts of sampled
//! exports are scaled by the sampling rate and the rate is kept in the record's
//! [`ExportOrigin`].
//!
//! Architecture Invariant: decoding is synchronous and does no I/O; it allocates only for a
//! new exporter session, a new template, a held data set or an sFlow flow slot. Every table
//! (sessions, templates, held sets, sFlow tables) is bounded by [`DecoderConfig`], in count
//! and in bytes: per exporter session, per sFlow agent and in total. A session is one
//! exporter address and protocol version (not its source port, or one sender could open
//! thousands). When the session table or the byte total is full, the sessions least
//! recently useful (that last produced a record longest ago; never, first) make room, so a
//! flood of senders that produce nothing cannot lock out an exporter that does.

pub mod listen;
pub mod netflow5;
mod read;
mod record;
pub mod sflow;
pub mod template;

use hashbrown::HashMap;
use normwatch_model::flow::{ExportOrigin, RecordSource};
use normwatch_model::{AssetIndex, FlowRecord};
use normwatch_sensor::FlowConfig;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// A flow record decoded from an export, with where it came from (also in
/// `record.export`, which travels with the record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exported {
    pub record: FlowRecord,
    pub origin: ExportOrigin,
}

/// Why a datagram (or part of one) was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    #[error("datagram shorter than its headers or lengths say")]
    Truncated,
    #[error("not NetFlow v5/v9, IPFIX or sFlow v5")]
    UnknownVersion,
    #[error("data set whose template never arrived (held too long or the hold was full)")]
    MissingTemplate,
    #[error("malformed template")]
    BadTemplate,
    #[error("malformed set or record")]
    BadSet,
    #[error("too many exporter sessions")]
    TooManySessions,
    #[error("too many templates for one exporter")]
    TooManyTemplates,
    #[error("sampled packet with an unsupported header protocol")]
    UnsupportedSample,
    #[error("over the memory bound for one exporter, one sFlow agent or all of them")]
    MemoryBound,
}

impl DropReason {
    pub const ALL: [DropReason; 9] = [
        DropReason::Truncated,
        DropReason::UnknownVersion,
        DropReason::MissingTemplate,
        DropReason::BadTemplate,
        DropReason::BadSet,
        DropReason::TooManySessions,
        DropReason::TooManyTemplates,
        DropReason::UnsupportedSample,
        DropReason::MemoryBound,
    ];

    /// Metric label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::UnknownVersion => "unknown_version",
            DropReason::MissingTemplate => "missing_template",
            DropReason::BadTemplate => "bad_template",
            DropReason::BadSet => "bad_set",
            DropReason::TooManySessions => "too_many_sessions",
            DropReason::TooManyTemplates => "too_many_templates",
            DropReason::UnsupportedSample => "unsupported_sample",
            DropReason::MemoryBound => "memory_bound",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Export protocols, for counters.
pub const SOURCES: [RecordSource; 4] = [
    RecordSource::NetflowV5,
    RecordSource::NetflowV9,
    RecordSource::Ipfix,
    RecordSource::Sflow,
];

fn source_index(s: RecordSource) -> usize {
    match s {
        RecordSource::NetflowV5 => 0,
        RecordSource::NetflowV9 => 1,
        RecordSource::Ipfix => 2,
        RecordSource::Sflow | RecordSource::Packets => 3,
    }
}

/// What the decoder did, cumulative.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Datagrams recognised, per protocol (index as [`SOURCES`]).
    pub datagrams: [u64; 4],
    /// Records produced, per protocol.
    pub records: [u64; 4],
    /// Drops (whole datagrams or parts of them), per reason (index as [`DropReason::ALL`]).
    pub drops: [u64; DropReason::ALL.len()],
    /// Templates learned or refreshed, withdrawn.
    pub templates: u64,
    pub withdrawn: u64,
    /// Data sets held for a template, and of those decoded once it arrived.
    pub held: u64,
    pub resolved: u64,
    /// What the exporters' sequence numbers say never arrived: flows for NetFlow v5,
    /// datagrams for v9 (IPFIX and sFlow are not checked).
    pub lost: u64,
}

impl ExportStats {
    pub fn drop(&mut self, r: DropReason) {
        self.drops[r.index()] += 1;
    }

    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops[r.index()]
    }

    pub fn datagrams_of(&self, s: RecordSource) -> u64 {
        self.datagrams[source_index(s)]
    }

    pub fn records_of(&self, s: RecordSource) -> u64 {
        self.records[source_index(s)]
    }
}

/// Decoder settings (built from `[sensor.exporters]`).
#[derive(Clone, Debug)]
pub struct DecoderConfig {
    pub sensor_id: Arc<str>,
    pub assets: Arc<AssetIndex>,
    /// Rate assumed when an exporter announces none (1: every packet counted).
    pub default_sampling: u32,
    /// Rates configured per exporter address; they win over what the exporter announces,
    /// for devices that sample without saying so.
    pub sampling: Vec<(IpAddr, u32)>,
    /// Most exporter sessions (NetFlow v9/IPFIX transport sessions, sFlow agent tables).
    pub max_sessions: usize,
    /// Most templates per session.
    pub max_templates: usize,
    /// Data sets and bytes held per session while their template is missing.
    pub hold_sets: usize,
    pub hold_bytes: usize,
    /// How long a held data set waits for its template (receive time, ns).
    pub hold_ns: u64,
    /// The flow table settings sFlow samples are aggregated with (timeouts, table size).
    pub sflow_table: FlowConfig,
    /// Most sFlow flow tables (one per agent, data source and rate): agent addresses come
    /// from the datagrams.
    pub max_sflow_tables: usize,
    /// Bytes one exporter session may hold (templates, held data, announced rates).
    pub exporter_bytes: usize,
    /// Bytes the flow tables of one sFlow agent may hold (their flow slots, at most).
    pub agent_bytes: usize,
    /// Bytes all sessions and sFlow tables together may hold.
    pub total_bytes: usize,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            sensor_id: Arc::from("normwatch-sensor"),
            assets: Arc::new(AssetIndex::default()),
            default_sampling: 1,
            sampling: Vec::new(),
            max_sessions: 4096,
            max_templates: 512,
            hold_sets: 256,
            hold_bytes: 1 << 20,
            hold_ns: 10_000_000_000,
            sflow_table: FlowConfig {
                max_flows: 65_536,
                ..FlowConfig::default()
            },
            max_sflow_tables: 64,
            exporter_bytes: 4 << 20,
            agent_bytes: 8 << 20,
            total_bytes: 256 << 20,
        }
    }
}

impl DecoderConfig {
    fn configured_rate(&self, exporter: IpAddr) -> Option<u32> {
        self.sampling
            .iter()
            .find(|(a, _)| *a == exporter)
            .map(|(_, r)| *r)
    }
}

/// The decoder: per-exporter state and counters. One per receiving thread.
#[derive(Debug)]
pub struct Decoder {
    cfg: DecoderConfig,
    stats: ExportStats,
    sessions: HashMap<(IpAddr, u16), template::Session>,
    /// Bytes the sessions hold, as [`template::Session::bytes`] counts them.
    session_bytes: usize,
    sflow: sflow::Aggregator,
    next_flow_id: u64,
    /// Next expected sequence number per (sender, version, domain).
    sequence: HashMap<(IpAddr, u16, u32), u32>,
}

/// A session's standing when room must be made: least recently useful first, then least
/// recently heard from.
fn rank(s: &template::Session) -> (u64, u64) {
    (s.last_useful_ns, s.last_ns)
}

impl Decoder {
    pub fn new(mut cfg: DecoderConfig) -> Self {
        cfg.default_sampling = cfg.default_sampling.max(1);
        cfg.sflow_table.sensor_id = cfg.sensor_id.clone();
        cfg.sflow_table.assets = cfg.assets.clone();
        // Sampled headers are cut short: their checksums cannot be checked.
        cfg.sflow_table.checksums.verify = false;
        Decoder {
            sflow: sflow::Aggregator::new(&cfg.sflow_table),
            cfg,
            stats: ExportStats::default(),
            sessions: HashMap::new(),
            session_bytes: 0,
            next_flow_id: 1,
            sequence: HashMap::new(),
        }
    }

    /// Counts a gap between the expected and the received sequence number; a number from
    /// the past (reordering, exporter restart) only resets the expectation.
    pub(crate) fn sequence(&mut self, key: (SocketAddr, u16, u32), seq: u32, advance: u32) {
        let key = (key.0.ip(), key.1, key.2);
        if let Some(expected) = self.sequence.get(&key) {
            let gap = seq.wrapping_sub(*expected);
            if gap > 0 && gap < 1 << 30 {
                self.stats.lost += u64::from(gap);
            }
        } else if self.sequence.len() >= self.cfg.max_sessions {
            // Forgetting every expectation costs one unmeasured gap per exporter; refusing
            // new ones would let a flood of senders hide a real exporter's losses.
            self.sequence.clear();
        }
        self.sequence.insert(key, seq.wrapping_add(advance));
    }

    /// Bytes held by exporter sessions and sFlow tables, as the memory bound counts them.
    pub fn memory_bytes(&self) -> usize {
        self.session_bytes + self.sflow.reserved()
    }

    /// Exporter sessions and sFlow tables held.
    pub fn sessions(&self) -> (usize, usize) {
        (self.sessions.len(), self.sflow.tables())
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &ExportStats {
        &self.stats
    }

    /// Data sets currently held for a template.
    pub fn held(&self) -> usize {
        self.sessions.values().map(|s| s.held_sets()).sum()
    }

    /// Decodes one datagram from `from`, received at `now_ns` (wall clock, ns since the
    /// epoch: held data expires by it, and sFlow samples carry no time of their own).
    /// Records are appended to `out`; on error, records decoded before the fault stay.
    pub fn decode(
        &mut self,
        from: SocketAddr,
        data: &[u8],
        now_ns: u64,
        out: &mut Vec<Exported>,
    ) -> Result<(), DropReason> {
        let r = self.dispatch(from, data, now_ns, out);
        if let Err(e) = r {
            self.stats.drop(e);
        }
        r
    }

    fn dispatch(
        &mut self,
        from: SocketAddr,
        data: &[u8],
        now_ns: u64,
        out: &mut Vec<Exported>,
    ) -> Result<(), DropReason> {
        if data.len() < 4 {
            return Err(DropReason::Truncated);
        }
        let version = u16::from_be_bytes([data[0], data[1]]);
        let source = match version {
            5 => RecordSource::NetflowV5,
            9 => RecordSource::NetflowV9,
            10 => RecordSource::Ipfix,
            0 if data[2] == 0 && data[3] == 5 => RecordSource::Sflow,
            _ => return Err(DropReason::UnknownVersion),
        };
        self.stats.datagrams[source_index(source)] += 1;
        let before = out.len();
        let r = match source {
            RecordSource::NetflowV5 => netflow5::decode(self, from, data, out),
            RecordSource::Sflow => {
                let (sflow, ctx) = self.split_sflow();
                sflow.decode(ctx, data, now_ns, out)
            }
            _ => self.decode_templated(from, version, data, now_ns, out),
        };
        self.count_records(out, before);
        r
    }

    fn count_records(&mut self, out: &[Exported], before: usize) {
        for e in &out[before..] {
            self.stats.records[source_index(e.origin.source)] += 1;
        }
    }

    pub(crate) fn ctx(&mut self) -> Ctx<'_> {
        Ctx {
            cfg: &self.cfg,
            stats: &mut self.stats,
            next_flow_id: &mut self.next_flow_id,
            budget: 0,
        }
    }

    /// The aggregator, with a budget of what the byte total leaves beside the sessions.
    fn split_sflow(&mut self) -> (&mut sflow::Aggregator, Ctx<'_>) {
        let budget = self.cfg.total_bytes.saturating_sub(self.session_bytes);
        (
            &mut self.sflow,
            Ctx {
                cfg: &self.cfg,
                stats: &mut self.stats,
                next_flow_id: &mut self.next_flow_id,
                budget,
            },
        )
    }

    fn decode_templated(
        &mut self,
        from: SocketAddr,
        version: u16,
        data: &[u8],
        now_ns: u64,
        out: &mut Vec<Exported>,
    ) -> Result<(), DropReason> {
        if version == 9 && data.len() >= template::V9_HEADER_LEN {
            let word =
                |i: usize| u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
            // v9 numbers export datagrams, per source id.
            self.sequence((from, 9, word(16)), word(12), 1);
        }
        let key = (from.ip(), version);
        if !self.sessions.contains_key(&key) {
            if self.sessions.len() >= self.cfg.max_sessions {
                self.expire_sessions(now_ns);
            }
            if self.sessions.len() >= self.cfg.max_sessions {
                // A new sender ranks as never useful: it displaces only others like it.
                let batch = (self.cfg.max_sessions / 8).max(1);
                self.evict_sessions(None, (0, now_ns), batch, 0);
                if self.sessions.len() >= self.cfg.max_sessions {
                    return Err(DropReason::TooManySessions);
                }
            }
            let s = template::Session::default();
            self.session_bytes += s.bytes();
            self.sessions.insert(key, s);
        }
        // Room for this session to grow to its own bound, made by sessions less useful
        // than it; what cannot be made shrinks its budget.
        let (mine, standing) = {
            let s = &self.sessions[&key];
            (s.bytes(), (s.last_useful_ns, now_ns))
        };
        let others = self.memory_bytes() - mine;
        let want = others + self.cfg.exporter_bytes;
        if want > self.cfg.total_bytes {
            // Hysteresis: free an eighth more than needed, so eviction is not paid per datagram.
            let excess = want - self.cfg.total_bytes + self.cfg.total_bytes / 8;
            self.evict_sessions(Some(key), standing, 0, excess);
        }
        let others = self.memory_bytes() - mine;
        let budget = self
            .cfg
            .exporter_bytes
            .min(self.cfg.total_bytes.saturating_sub(others));
        let session = self.sessions.get_mut(&key).expect("inserted above");
        let mut ctx = Ctx {
            cfg: &self.cfg,
            stats: &mut self.stats,
            next_flow_id: &mut self.next_flow_id,
            budget,
        };
        let r = session.decode(&mut ctx, from.ip(), version, data, now_ns, out);
        self.session_bytes = self.session_bytes - mine + session.bytes();
        r
    }

    /// Removes sessions ranking below `below` (never `keep`), least useful first, until
    /// `count` are gone and `bytes` are freed; their held data is counted as dropped.
    fn evict_sessions(
        &mut self,
        keep: Option<(IpAddr, u16)>,
        below: (u64, u64),
        count: usize,
        bytes: usize,
    ) {
        let mut victims: Vec<((u64, u64), (IpAddr, u16))> = self
            .sessions
            .iter()
            .filter(|(k, s)| Some(**k) != keep && rank(s) < below)
            .map(|(k, s)| (rank(s), *k))
            .collect();
        victims.sort_unstable_by_key(|v| v.0);
        let (mut gone, mut freed) = (0, 0);
        for (_, k) in victims {
            if gone >= count && freed >= bytes {
                break;
            }
            if let Some(s) = self.sessions.remove(&k) {
                let b = s.bytes();
                self.session_bytes -= b;
                freed += b;
                gone += 1;
                for _ in 0..s.held_sets() {
                    self.stats.drop(DropReason::MissingTemplate);
                }
            }
        }
    }

    /// Sessions silent for far longer than a template may wait are forgotten, so a full
    /// session table makes room for new exporters.
    fn expire_sessions(&mut self, now_ns: u64) {
        let idle = self.cfg.hold_ns.saturating_mul(60);
        let stats = &mut self.stats;
        let mut freed = 0;
        self.sessions.retain(|_, s| {
            let keep = now_ns.saturating_sub(s.last_ns) < idle;
            if !keep {
                freed += s.bytes();
                for _ in 0..s.held_sets() {
                    stats.drop(DropReason::MissingTemplate);
                }
            }
            keep
        });
        self.session_bytes -= freed;
    }

    /// Lets receive time pass: held data sets past their wait are dropped (counted as
    /// missing templates) and sFlow flows that timed out are emitted.
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<Exported>) {
        let hold = self.cfg.hold_ns;
        for s in self.sessions.values_mut() {
            let before = s.bytes();
            s.expire(now_ns, hold, &mut self.stats);
            self.session_bytes = self.session_bytes - before + s.bytes();
        }
        let before = out.len();
        let (sflow, mut ctx) = self.split_sflow();
        sflow.advance(&mut ctx, now_ns, out);
        self.count_records(out, before);
    }

    /// Ends the input: every sFlow flow still open is emitted; held data sets are dropped.
    pub fn flush(&mut self, out: &mut Vec<Exported>) {
        for s in self.sessions.values_mut() {
            let before = s.bytes();
            s.expire(u64::MAX, 0, &mut self.stats);
            self.session_bytes = self.session_bytes - before + s.bytes();
        }
        let before = out.len();
        let (sflow, mut ctx) = self.split_sflow();
        sflow.flush(&mut ctx, out);
        self.count_records(out, before);
    }
}

/// What the protocol decoders share: the settings, the counters and the flow-id sequence.
pub(crate) struct Ctx<'a> {
    pub(crate) cfg: &'a DecoderConfig,
    pub(crate) stats: &'a mut ExportStats,
    pub(crate) next_flow_id: &'a mut u64,
    /// Bytes the part being decoded may hold in all: an exporter session's own bound (less
    /// when the total is short), or what the total leaves for sFlow tables.
    pub(crate) budget: usize,
}

impl Ctx<'_> {
    pub(crate) fn flow_id(&mut self) -> u64 {
        let id = *self.next_flow_id;
        *self.next_flow_id += 1;
        id
    }

    /// The rate to scale by: configured for the exporter, else announced, else the default.
    pub(crate) fn rate(&self, exporter: IpAddr, announced: Option<u32>) -> u32 {
        self.cfg
            .configured_rate(exporter)
            .or(announced.filter(|r| *r > 0))
            .unwrap_or(self.cfg.default_sampling)
            .max(1)
    }
}
