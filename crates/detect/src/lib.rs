//! The detector core: flow records in, alert events out. Synchronous, no I/O, driven only by
//! the event time in the records, so a replay gives the same alerts every time.
//!
//! Per protected asset it keeps a ring of one-second buckets of the traffic towards the
//! asset, filled from what each record adds to its flow's earlier records (all of it for a
//! flow's first record), spread over the seconds that part spans; a connection is new only on
//! its first record. Counts only grow, so a second that crosses a limit opens an alert at
//! once, however late its other records are; the second under way is also judged with the
//! part of the previous second still within one second of the latest record. Event time is
//! kept per asset (see [`Detector::process_at`]), so how batches of different assets
//! interleave changes nothing. A second counts as final only once the asset's event-time
//! watermark (its latest record time minus the allowed lateness; it moves before a record is
//! counted) has passed it: then it feeds the learned
//! baseline (if no flood was under way) and the service-impairment check, and an alert closes
//! after `quiet_secs` final seconds without its condition. At the end of the input every
//! second is judged on its full counts.
//!
//! The rules (`rules/`, one file each; `alert.rs` the alert lifecycle, `state.rs` the per-asset
//! accounting):
//! - volumetric flood: a second above max(static threshold, baseline × factor), totals and per
//!   protocol; the learned part applies once the baseline is warm and never below its floor;
//!   until then figures without a static threshold use the default limits (`default_pps`, …);
//! - SYN flood: such a flood whose new TCP flows are mostly left half-open and either crossed
//!   a new-flow limit or carry a quarter of its packets, whichever limit it crossed;
//! - amplification and reflection: unsolicited responses from the reflector catalogue's UDP
//!   ports (`config/reflectors.toml`, `[detect] reflectors`), or unsolicited SYN-ACKs, above
//!   their own limit, or a flood mostly made of them (its sources named as reflectors);
//! - carpet bombing: a flood of a multi-address asset (a prefix, or several addresses) spread
//!   over many of its addresses, each of which alone stays within the asset's limits;
//! - service impairment: on the asset's service ports, handshake completion or the share of
//!   answered flows collapses against the baseline while load rises (attached to the flood
//!   alert when one is open, an alert of its own otherwise);
//! - ICS command abuse: write, control, stop/restart or program commands from a source not on
//!   the asset's allow list, tallied over all the alert's flows;
//! - scan: one source's unanswered probes reaching many ports or many addresses of an asset
//!   (SYN-ACK and RST backscatter, and UDP from well-known or reflector ports, are not
//!   probes); a flood made mostly by scan-like sources is left to this rule;
//! - bulk exfiltration: bytes sent by a `holds-ip` asset to one external destination over a
//!   limit within a window.

mod alert;
mod baseline;
mod rules;
mod sketch;
mod state;

use hashbrown::HashMap;
use normwatch_config::norms::NormCatalogue;
use normwatch_model::{Alert, AssetId, AssetIndex, FlowRecord};
use state::{AssetState, Ctx};
use std::hash::BuildHasher;
use std::sync::Arc;

const NS: u64 = 1_000_000_000;

/// An asset's learned normal and its latest final second, as the detector holds them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Normal {
    /// Inbound traffic in the latest complete second (the one before the newest seen).
    pub latest: normwatch_model::Measured,
    /// Quiet seconds learned from (the baseline is used once this reaches the warm-up).
    pub seconds: u64,
    pub pps: f64,
    pub bps: f64,
    pub new_flows_per_s: f64,
    /// Share of connection attempts to service ports that complete, normally.
    pub handshake_completion: Option<f64>,
    /// Share of service-port flows the asset answers, normally.
    pub response_ratio: Option<f64>,
}

/// The detector's settings: the `[detect]` section as the configuration crate validates it,
/// one type with one set of names and defaults.
pub use normwatch_config::DetectConfig as Settings;

/// Memory figures for capacity planning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// Bytes of one tracked asset's fixed state (ring of buckets and bookkeeping), before any
    /// source is tracked.
    pub per_asset: usize,
    /// Bytes more for an asset with per-protocol thresholds or that received unsolicited
    /// reflector responses (their per-second counts).
    pub per_asset_ext: usize,
    /// Bytes per source named for an alert (hash-table entry and control byte, at the
    /// table's maximum load).
    pub per_source: usize,
    /// Bytes per source followed by the scan rule.
    pub per_scanner: usize,
    /// Bytes per address of a multi-address asset followed in the current second.
    pub per_spread_addr: usize,
}

/// Finds the asset of a record's id.
#[derive(Debug)]
struct Ids {
    by_text: ByText,
    /// The previous id and its position: batches are keyed by asset, and decoded records of
    /// a batch share one text (see the model's decoding), as records matched in this process
    /// share the index's, so most lookups stop at the address comparison here.
    last: Option<(AssetId, usize)>,
}

impl Ids {
    fn new(assets: &AssetIndex) -> Ids {
        Ids {
            by_text: ByText::new(assets),
            last: None,
        }
    }

    #[inline(always)]
    fn find(&mut self, id: &AssetId) -> Option<usize> {
        if let Some((last, i)) = &self.last {
            // The same allocation: the same id (`Arc<str>`'s `==` compares the texts only).
            if Arc::ptr_eq(&last.0, &id.0) {
                return Some(*i);
            }
        }
        self.find_text(id)
    }

    #[inline(never)]
    fn find_text(&mut self, id: &AssetId) -> Option<usize> {
        if let Some((last, i)) = &self.last {
            if *last.0 == *id.0 {
                return Some(*i);
            }
        }
        let i = self.by_text.get(id.as_str())?;
        self.last = Some((id.clone(), i));
        Some(i)
    }
}

/// Asset id → its position in the index.
///
/// Ids of up to [`SHORT`] bytes (nearly all) are found through a small table of hashes and
/// positions (8 bytes a slot, at most half full), which stays in cache where a table holding
/// the texts would not; the position read there leads both to the text that confirms it and
/// to the asset's state, so when both are cold their misses overlap (the confirmation is
/// nearly always predicted right). Longer ids are in a map of their own.
#[derive(Debug)]
struct ByText {
    hasher: hashbrown::DefaultHashBuilder,
    /// Open addressing, linear probing: a slot holds the upper half of its id's hash above
    /// the id's position plus one (0: free).
    slots: Box<[u64]>,
    /// Each short id's text, by position (long ones' are empty).
    texts: Box<[Short]>,
    long: HashMap<Arc<str>, usize>,
}

const SHORT: usize = 31;

#[derive(Clone, Copy, Debug)]
struct Short {
    len: u8,
    text: [u8; SHORT],
}

impl ByText {
    fn new(assets: &AssetIndex) -> ByText {
        let hasher = hashbrown::DefaultHashBuilder::default();
        let all = assets.assets();
        let mut slots = vec![0u64; (all.len() * 2).next_power_of_two().max(16)].into_boxed_slice();
        let mask = slots.len() - 1;
        let mut texts = vec![
            Short {
                len: 0,
                text: [0; SHORT],
            };
            all.len()
        ]
        .into_boxed_slice();
        let mut long = HashMap::new();
        for (i, a) in all.iter().enumerate() {
            let text = a.id.as_str();
            if text.len() > SHORT {
                long.insert(a.id.0.clone(), i);
                continue;
            }
            let e = &mut texts[i];
            e.len = text.len() as u8;
            e.text[..text.len()].copy_from_slice(text.as_bytes());
            let h = hasher.hash_one(text.as_bytes());
            let pos = u32::try_from(i + 1).expect("fewer than 2^32 assets");
            let mut s = h as usize & mask;
            while slots[s] != 0 {
                s = (s + 1) & mask;
            }
            slots[s] = (h >> 32) << 32 | u64::from(pos);
        }
        ByText {
            hasher,
            slots,
            texts,
            long,
        }
    }

    #[inline]
    fn get(&self, text: &str) -> Option<usize> {
        if text.len() > SHORT {
            return self.long.get(text).copied();
        }
        let h = self.hasher.hash_one(text.as_bytes());
        let mask = self.slots.len() - 1;
        let mut s = h as usize & mask;
        loop {
            let v = self.slots[s];
            if v == 0 {
                return None;
            }
            if v >> 32 == h >> 32 {
                let i = (v as u32 - 1) as usize;
                let e = &self.texts[i];
                if &e.text[..usize::from(e.len)] == text.as_bytes() {
                    return Some(i);
                }
            }
            s = (s + 1) & mask;
        }
    }
}

/// What the detector holds, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    pub bytes: usize,
    pub assets: usize,
    pub sources: usize,
    pub scanners: usize,
}

/// Per asset (by position in the index), created on its first record; the ring's length
/// (seconds of history, from the allowed lateness) is a constant of the state type. The
/// states lie side by side, so an asset's position leads straight to its state (no pointer to
/// load first, and wait for when cold); an asset that never had a record costs its state's
/// size too.
#[derive(Debug)]
enum States {
    R16(Vec<Option<AssetState<16>>>),
    R32(Vec<Option<AssetState<32>>>),
    R64(Vec<Option<AssetState<64>>>),
}

/// Runs `$body` with `$v` bound to the states, whatever their ring length.
macro_rules! with_states {
    ($states:expr, $v:ident => $body:expr) => {
        match $states {
            States::R16($v) => $body,
            States::R32($v) => $body,
            States::R64($v) => $body,
        }
    };
}

impl States {
    fn new(settings: &Settings, assets: usize) -> States {
        fn none<T>(n: usize) -> Vec<Option<T>> {
            let mut v = Vec::with_capacity(n);
            v.resize_with(n, || None);
            v
        }
        match state::ring_len(settings) {
            16 => States::R16(none(assets)),
            32 => States::R32(none(assets)),
            64 => States::R64(none(assets)),
            n => unreachable!("ring of {n} seconds"),
        }
    }
}

/// The detector.
#[derive(Debug)]
pub struct Detector {
    assets: Arc<AssetIndex>,
    norms: NormCatalogue,
    settings: Settings,
    states: States,
    ids: Ids,
    /// Per asset (by position in the index): its event time (ns; see [`Detector::process_at`]).
    clocks: Vec<u64>,
    /// Per asset: the watermark second its state was last brought to.
    acted: Vec<u64>,
    /// Latest event time seen (ns), over every record.
    now_ns: u64,
    /// Records processed.
    pub records: u64,
    /// Records too late for their asset's ring (their seconds were already final).
    pub late: u64,
}

/// The detector's fields a batch of records reads or moves, beside the states.
struct Run<'a> {
    assets: &'a AssetIndex,
    norms: &'a NormCatalogue,
    settings: &'a Settings,
    ids: &'a mut Ids,
    clocks: &'a mut [u64],
    acted: &'a mut [u64],
    now_ns: &'a mut u64,
    seen: &'a mut u64,
    late: &'a mut u64,
}

impl Run<'_> {
    /// Counts the records (see [`Detector::process_at`]).
    #[inline]
    fn records<const N: usize>(
        &mut self,
        states: &mut [Option<AssetState<N>>],
        records: &[FlowRecord],
        clock_ns: u64,
        out: &mut Vec<Alert>,
    ) {
        let mut clock = clock_ns;
        for r in records {
            *self.seen += 1;
            clock = clock.max(r.last_ns);
            *self.now_ns = (*self.now_ns).max(clock);
            let Some(m) = &r.asset else { continue };
            let Some(idx) = self.ids.find(&m.id) else {
                continue;
            };
            // The asset's clock moves before the record counts: alerts whose quiet period its
            // time has passed close first, so a record long after an attack starts a new alert
            // rather than extending the old one.
            let now = self.clocks[idx].max(clock);
            self.clocks[idx] = now;
            let watermark = (now / NS).saturating_sub(self.settings.lateness.as_secs());
            let mut cx = Ctx::of(self.settings, self.norms, self.assets, idx, watermark);
            cx.now_ns = now;
            let st = states[idx].get_or_insert_with(|| AssetState::new(&cx, r.first_ns / NS));
            if watermark > self.acted[idx] {
                catch_up(st, &cx, self.acted[idx], watermark, out);
                self.acted[idx] = watermark;
            }
            if !st.account(&cx, r, m.side, out) {
                *self.late += 1;
            }
        }
    }
}

/// Brings an asset's state from watermark `from` to `to`: seconds become final, quiet alerts
/// close. While the asset may be under attack ([`AssetState::needs_watch`]) the watermark
/// moves one second at a time, as a stream of records would move it, so an alert closes at the
/// second its quiet period ends whatever the gap before the asset's next record; other assets
/// move at once (the same result).
fn catch_up<const N: usize>(
    st: &mut AssetState<N>,
    cx: &Ctx,
    from: u64,
    to: u64,
    out: &mut Vec<Alert>,
) {
    let mut w = from;
    while w < to && to - w <= MAX_STEPS && st.needs_watch() {
        w += 1;
        st.expire(cx, w, out);
    }
    if w < to {
        st.expire(cx, to, out);
    }
}

/// Seconds a watched asset's watermark is moved one at a time at most; a longer gap is
/// crossed in one move.
const MAX_STEPS: u64 = 4096;

/// Each tracked asset's learned normal (see [`Detector::normals`]).
fn normals_of<'a, const N: usize>(
    states: &'a [Option<AssetState<N>>],
    assets: &'a AssetIndex,
) -> impl Iterator<Item = (&'a str, Normal)> + 'a {
    states.iter().enumerate().filter_map(move |(idx, st)| {
        let st = st.as_ref()?;
        let base = st.learned();
        let mean = base.mean();
        let asset = assets.get(u32::try_from(idx).ok()?);
        Some((
            asset.id.as_str(),
            Normal {
                latest: st.latest(),
                seconds: base.seconds,
                pps: mean.pkts,
                bps: mean.bits,
                new_flows_per_s: mean.new_flows,
                handshake_completion: base.completion(),
                response_ratio: base.response(),
            },
        ))
    })
}

/// Bytes held by the states (see [`Detector::heap_bytes`]).
fn memory_of<const N: usize>(states: &Vec<Option<AssetState<N>>>) -> Memory {
    let mut m = Memory {
        bytes: states.capacity() * size_of::<Option<AssetState<N>>>(),
        ..Memory::default()
    };
    for st in states.iter().flatten() {
        // The state itself is counted with the vector.
        m.bytes += st.heap_bytes() - size_of::<AssetState<N>>();
        m.assets += 1;
        let (named, scanners) = st.tracked_sources();
        m.sources += named;
        m.scanners += scanners;
    }
    m
}

impl Detector {
    pub fn new(assets: Arc<AssetIndex>, norms: NormCatalogue, settings: Settings) -> Self {
        let ids = Ids::new(&assets);
        let states = States::new(&settings, assets.assets().len());
        Detector {
            norms,
            settings,
            states,
            ids,
            clocks: vec![0; assets.assets().len()],
            acted: vec![0; assets.assets().len()],
            now_ns: 0,
            records: 0,
            late: 0,
            assets,
        }
    }

    /// Drops every asset's state and clock: the detector starts again as new (a member of a
    /// detector group given other partitions rebuilds from their start).
    pub fn reset(&mut self) {
        let settings = self.settings.clone();
        self.states = States::new(&settings, self.assets.assets().len());
        self.clocks.iter_mut().for_each(|c| *c = 0);
        self.acted.iter_mut().for_each(|c| *c = 0);
        self.ids.last = None;
        self.now_ns = 0;
    }

    /// Each tracked asset's learned normal and latest final second (id, normal), for metrics
    /// and dashboards. Assets with no traffic yet are left out.
    pub fn normals(&self) -> impl Iterator<Item = (&str, Normal)> + '_ {
        let assets = &*self.assets;
        let normals: Box<dyn Iterator<Item = (&str, Normal)> + '_> =
            with_states!(&self.states, v => Box::new(normals_of(v, assets)));
        normals
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Memory per tracked asset and per tracked source under these settings.
    pub fn footprint(&self) -> Footprint {
        match self.states {
            States::R16(_) => state::footprint::<16>(),
            States::R32(_) => state::footprint::<32>(),
            States::R64(_) => state::footprint::<64>(),
        }
    }

    /// Bytes held by the detector's per-asset state (tables as allocated), the number of
    /// assets tracked, and the sources held (named, followed by the scan rule).
    pub fn heap_bytes(&self) -> Memory {
        with_states!(&self.states, v => memory_of(v))
    }

    /// The latest event time seen (ns since the epoch).
    pub fn event_time_ns(&self) -> u64 {
        self.now_ns
    }

    /// Rule hits folded into an alert that had already closed: late records for seconds its
    /// attack covered (or its quiet period), which open no new alert.
    pub fn late_hits(&self) -> u64 {
        with_states!(&self.states, v => v.iter().flatten().map(|st| st.late_hits()).sum())
    }

    /// Processes a batch of records in the order this detector receives them; alert events
    /// go to `out`. The same as [`Detector::process_at`] with the latest event time this
    /// detector has seen as the clock: right when the detector sees every record, in the
    /// order the source produced them.
    pub fn process(&mut self, records: &[FlowRecord], out: &mut Vec<Alert>) {
        self.process_at(records, self.now_ns, out);
    }

    /// Processes a batch of records; alert events go to `out`. `clock_ns` is the event time
    /// the source had reached before this batch (the latest record time of the batches it
    /// produced before; 0 if not known).
    ///
    /// Event time is kept per asset: an asset's clock is the latest of its records' times
    /// and the clocks of the batches that brought them, and its watermark (clock minus the
    /// allowed lateness), its lateness and its alerts' closing follow that clock alone. So
    /// an asset's alerts depend only on its own batches, in their order: however batches of
    /// different assets interleave (partitions consumed at different speeds, catching up on
    /// a backlog, assets spread over several detectors), each asset gets the alerts a single
    /// detector reading the source's own order gives. An asset's clock moves only when one of
    /// its batches arrives (or at [`Detector::finish`]); a source that publishes empty
    /// batches for assets gone quiet keeps their clocks moving.
    pub fn process_at(&mut self, records: &[FlowRecord], clock_ns: u64, out: &mut Vec<Alert>) {
        let Detector {
            assets,
            norms,
            settings,
            states,
            ids,
            clocks,
            acted,
            now_ns,
            records: seen,
            late,
        } = self;
        let mut run = Run {
            assets,
            norms,
            settings,
            ids,
            clocks,
            acted,
            now_ns,
            seen,
            late,
        };
        with_states!(states, v => run.records(v, records, clock_ns, out));
    }

    /// An empty batch for asset `id` with the source's clock (see [`Detector::process_at`]):
    /// moves the asset's clock alone, so its quiet alerts close.
    pub fn tick(&mut self, id: &str, clock_ns: u64, out: &mut Vec<Alert>) {
        let Some(idx) = self.ids.by_text.get(id) else {
            return;
        };
        self.now_ns = self.now_ns.max(clock_ns);
        let now = self.clocks[idx].max(clock_ns);
        self.clocks[idx] = now;
        let watermark = (now / NS).saturating_sub(self.settings.lateness.as_secs());
        if watermark <= self.acted[idx] {
            return;
        }
        let Detector {
            assets,
            norms,
            settings,
            states,
            acted,
            ..
        } = self;
        with_states!(states, v => {
            if let Some(st) = v[idx].as_mut() {
                let mut cx = Ctx::of(settings, norms, assets, idx, watermark);
                cx.now_ns = now;
                catch_up(st, &cx, acted[idx], watermark, out);
            }
        });
        self.acted[idx] = watermark;
    }

    /// Makes every asset's seconds final — those its watermark passed and those it has not
    /// reached yet, each judged on its complete counts — then closes every open alert (end
    /// of input). Each asset ends on its own clock, so the end too is the same however the
    /// assets were spread over detectors.
    pub fn finish(&mut self, out: &mut Vec<Alert>) {
        let Detector {
            assets,
            norms,
            settings,
            states,
            acted,
            ..
        } = self;
        with_states!(states, v => {
            for (idx, st) in v.iter_mut().enumerate() {
                let Some(st) = st else { continue };
                let watermark = acted[idx];
                let cx = Ctx::of(settings, norms, assets, idx, watermark);
                st.expire(&cx, watermark, out);
                let newest = st.newest();
                if newest > watermark {
                    let cx = Ctx::of(settings, norms, assets, idx, newest);
                    st.finalize_all(&cx, newest, out);
                }
                st.close_all(&cx, out);
            }
        });
    }
}

#[cfg(test)]
mod tests;
