//! Groups flow records into batch messages, one key per batch: the protected asset's id, or
//! for flows that touch no asset, the responder address. A batch goes out when it holds
//! `max_records` records or when its oldest record has waited `linger`.
//!
//! Each batch carries the sensor's clock: the latest record time of the batches sent before
//! it. The detector keeps event time per asset from these clocks (see
//! `normwatch_detect::Detector::process_at`), so an asset that falls quiet must still hear
//! the clock: when partial batches go out, every asset that had records within the last
//! [`TICK_HORIZON_SECS`] seconds of event time but none in this round gets an empty batch
//! (a tick) with the clock, at most one a second of event time, so its alerts close on time
//! however its partition is consumed.
//!
//! Sequence numbers start at the wall-clock milliseconds of the sensor's start shifted left by
//! 20 bits and count up by one per batch, so a restarted sensor continues above every number
//! it used before (unless it sent over a million batches per millisecond of its earlier
//! life) and consumers can tell a redelivery from a new batch without shared state.

use hashbrown::{DefaultHashBuilder, HashTable};
use normwatch_model::{AssetId, FlowRecord};
use normwatch_transport::wire::{encode_batch_at, EncodeError};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The partitioning key of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BatchKey {
    Asset(AssetId),
    Addr(IpAddr),
}

impl BatchKey {
    pub fn of(r: &FlowRecord) -> Self {
        match &r.asset {
            Some(a) => BatchKey::Asset(a.id.clone()),
            None => BatchKey::Addr(r.resp_addr),
        }
    }

    fn as_ref(&self) -> KeyRef<'_> {
        match self {
            BatchKey::Asset(id) => KeyRef::Asset(id.as_str()),
            BatchKey::Addr(a) => KeyRef::Addr(*a),
        }
    }

    /// The message key: the asset id, or the responder address as text.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            BatchKey::Asset(id) => id.as_str().as_bytes().to_vec(),
            BatchKey::Addr(a) => a.to_string().into_bytes(),
        }
    }
}

/// A batch key borrowed from a record or a [`BatchKey`]: a record's partial batch is found
/// without building its key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum KeyRef<'a> {
    Asset(&'a str),
    Addr(IpAddr),
}

impl<'a> KeyRef<'a> {
    fn of(r: &'a FlowRecord) -> Self {
        match &r.asset {
            Some(a) => KeyRef::Asset(a.id.as_str()),
            None => KeyRef::Addr(r.resp_addr),
        }
    }
}

/// Event seconds after an asset's latest record during which it still gets ticks (an alert
/// closes within its quiet period plus the allowed lateness; its window is remembered for
/// five minutes more).
pub const TICK_HORIZON_SECS: u64 = 600;
/// Event time between two ticks of one asset.
const TICK_NS: u64 = 1_000_000_000;

/// An asset that may need ticks: its latest record time and the clock of its latest batch.
#[derive(Clone, Copy, Debug)]
struct Heard {
    record_ns: u64,
    clock_ns: u64,
}

/// The first sequence number of a sensor starting now.
pub fn initial_seq() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    ms << 20
}

/// Accumulates records per key and encodes full or expired batches.
#[derive(Debug)]
pub struct FlowBatcher {
    sensor_id: Arc<str>,
    next_seq: u64,
    max_records: usize,
    max_bytes: usize,
    linger: Duration,
    /// Partial batches, one per key; `keys` finds a record's among them.
    pending: Vec<Partial>,
    keys: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// Scratch: the order partial batches go out in.
    order: Vec<u32>,
    /// When the oldest pending record arrived.
    oldest: Option<Instant>,
    pending_records: usize,
    /// Linger measured in event time instead of on the wall clock (replays of files).
    event_time: bool,
    /// Event time (latest packet, ns) of the oldest pending record, and the latest seen.
    oldest_event_ns: Option<u64>,
    latest_event_ns: u64,
    /// Latest record time of the batches encoded so far: the next batch's clock.
    clock_ns: u64,
    /// Assets that had records within the tick horizon.
    heard: HashMap<AssetId, Heard>,
}

/// Records of one key waiting for their batch. Kept from one round to the next while the key
/// has records in each (so its buffer and message key are not made again), dropped after a
/// round without any.
#[derive(Debug)]
struct Partial {
    key: BatchKey,
    /// The message key ([`BatchKey::to_bytes`]), which also orders the batches of a round.
    bytes: Vec<u8>,
    records: Vec<FlowRecord>,
    /// Whether it had records this round.
    used: bool,
}

/// Records a kept partial batch's buffer holds room for between rounds.
const KEPT_CAPACITY: usize = 64;

/// One encoded batch, ready to publish.
#[derive(Debug)]
pub struct Encoded {
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub records: usize,
}

impl FlowBatcher {
    /// `max_bytes` caps an encoded batch (larger ones are split).
    pub fn new(
        sensor_id: Arc<str>,
        first_seq: u64,
        max_records: usize,
        max_bytes: usize,
        linger: Duration,
    ) -> Self {
        FlowBatcher {
            sensor_id,
            next_seq: first_seq,
            max_records: max_records.max(1),
            max_bytes: max_bytes.max(1024),
            linger,
            pending: Vec::new(),
            keys: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            order: Vec::new(),
            oldest: None,
            pending_records: 0,
            event_time: false,
            oldest_event_ns: None,
            latest_event_ns: 0,
            clock_ns: 0,
            heard: HashMap::new(),
        }
    }

    /// Measures the linger in event time: partial batches go out once the records read have
    /// moved `linger` past the oldest waiting one, whatever the wall clock says. A capture
    /// read as fast as possible then yields the same batches, in the same order, on every
    /// run, so the detector downstream sees the same sequence and raises the same alerts.
    pub fn by_event_time(mut self) -> Self {
        self.event_time = true;
        self
    }

    /// The sequence number the next batch gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Records waiting in partial batches.
    pub fn pending(&self) -> usize {
        self.pending_records
    }

    /// Adds records (draining `buf`); full batches are encoded into `out`.
    pub fn push(
        &mut self,
        buf: &mut Vec<FlowRecord>,
        now: Instant,
        out: &mut Vec<Encoded>,
    ) -> Result<(), EncodeError> {
        let linger_ns = u64::try_from(self.linger.as_nanos()).unwrap_or(u64::MAX);
        for r in buf.drain(..) {
            if self.event_time {
                self.latest_event_ns = self.latest_event_ns.max(r.last_ns);
                let oldest = *self.oldest_event_ns.get_or_insert(r.last_ns);
                if self.latest_event_ns.saturating_sub(oldest) >= linger_ns {
                    self.flush(out)?;
                    self.oldest_event_ns = Some(r.last_ns);
                }
            }
            let i = self.partial(&r);
            let batch = &mut self.pending[i].records;
            batch.push(r);
            self.pending_records += 1;
            self.oldest.get_or_insert(now);
            if batch.len() >= self.max_records {
                self.pending_records -= batch.len();
                self.encode_partial(i, out)?;
            }
        }
        if self.linger.is_zero() {
            self.flush(out)?;
        }
        Ok(())
    }

    /// Encodes every partial batch if the oldest pending record has waited `linger`.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Encoded>) -> Result<(), EncodeError> {
        if self.event_time {
            return Ok(());
        }
        match self.oldest {
            Some(t) if now.saturating_duration_since(t) >= self.linger => self.flush(out),
            _ => Ok(()),
        }
    }

    /// Encodes every partial batch.
    pub fn flush(&mut self, out: &mut Vec<Encoded>) -> Result<(), EncodeError> {
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        order.extend(
            (0..self.pending.len() as u32)
                .filter(|&i| !self.pending[i as usize].records.is_empty()),
        );
        // A stable order makes runs over the same input produce the same messages.
        order.sort_unstable_by(|&a, &b| {
            self.pending[a as usize]
                .bytes
                .cmp(&self.pending[b as usize].bytes)
        });
        let mut result = Ok(());
        for &i in &order {
            self.pending_records -= self.pending[i as usize].records.len();
            result = self.encode_partial(i as usize, out);
            if result.is_err() {
                break;
            }
        }
        // A key with records this round keeps its place (trimmed); the others go, so keys
        // of addresses seen once do not accumulate.
        self.order = order;
        if self.pending.iter().any(|p| !p.used) {
            self.pending.retain(|p| p.used);
            let (keys, pending, hasher) = (&mut self.keys, &self.pending, &self.hasher);
            keys.clear();
            for (i, p) in pending.iter().enumerate() {
                keys.insert_unique(hasher.hash_one(p.key.as_ref()), i as u32, |&j| {
                    hasher.hash_one(pending[j as usize].key.as_ref())
                });
            }
        }
        for p in &mut self.pending {
            p.records.clear();
            p.records.shrink_to(KEPT_CAPACITY);
            p.used = false;
        }
        self.pending_records = 0;
        result?;
        self.oldest = None;
        self.oldest_event_ns = None;
        self.ticks(out)
    }

    /// Empty batches for quiet assets (see the module documentation), in key order.
    fn ticks(&mut self, out: &mut Vec<Encoded>) -> Result<(), EncodeError> {
        let clock = self.clock_ns;
        let horizon = TICK_HORIZON_SECS * 1_000_000_000;
        self.heard
            .retain(|_, h| clock.saturating_sub(h.record_ns) <= horizon);
        let mut due: Vec<AssetId> = self
            .heard
            .iter()
            .filter(|(_, h)| clock >= h.clock_ns + TICK_NS)
            .map(|(id, _)| id.clone())
            .collect();
        due.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        for id in due {
            let payload =
                encode_batch_at::<FlowRecord>(&self.sensor_id, self.next_seq, clock, &[])?;
            self.next_seq += 1;
            if let Some(h) = self.heard.get_mut(&id) {
                h.clock_ns = clock;
            }
            out.push(Encoded {
                key: id.as_str().as_bytes().to_vec(),
                payload,
                records: 0,
            });
        }
        Ok(())
    }

    /// The partial batch `r` belongs in (made if its key has none).
    #[inline]
    fn partial(&mut self, r: &FlowRecord) -> usize {
        let wanted = KeyRef::of(r);
        let h = self.hasher.hash_one(wanted);
        let pending = &self.pending;
        if let Some(&i) = self
            .keys
            .find(h, |&i| pending[i as usize].key.as_ref() == wanted)
        {
            let p = &mut self.pending[i as usize];
            p.used = true;
            return i as usize;
        }
        let key = BatchKey::of(r);
        let i = self.pending.len();
        self.pending.push(Partial {
            bytes: key.to_bytes(),
            key,
            records: Vec::new(),
            used: true,
        });
        let (pending, hasher) = (&self.pending, &self.hasher);
        self.keys.insert_unique(h, i as u32, |&j| {
            hasher.hash_one(pending[j as usize].key.as_ref())
        });
        i
    }

    /// Encodes partial batch `i` (emptied, its buffer kept).
    fn encode_partial(&mut self, i: usize, out: &mut Vec<Encoded>) -> Result<(), EncodeError> {
        let mut records = std::mem::take(&mut self.pending[i].records);
        let done = self.encode(i, &records, out);
        records.clear();
        self.pending[i].records = records;
        done
    }

    fn encode(
        &mut self,
        i: usize,
        records: &[FlowRecord],
        out: &mut Vec<Encoded>,
    ) -> Result<(), EncodeError> {
        let mut stack = vec![records];
        while let Some(part) = stack.pop() {
            let payload = encode_batch_at(&self.sensor_id, self.next_seq, self.clock_ns, part)?;
            if payload.len() > self.max_bytes && part.len() > 1 {
                let (a, b) = part.split_at(part.len() / 2);
                stack.push(b);
                stack.push(a);
                continue;
            }
            self.next_seq += 1;
            let latest = part.iter().map(|r| r.last_ns).max().unwrap_or(0);
            let p = &self.pending[i];
            if let BatchKey::Asset(id) = &p.key {
                let clock = self.clock_ns;
                match self.heard.get_mut(id) {
                    Some(h) => {
                        h.record_ns = h.record_ns.max(latest);
                        h.clock_ns = h.clock_ns.max(clock);
                    }
                    None => {
                        self.heard.insert(
                            id.clone(),
                            Heard {
                                record_ns: latest,
                                clock_ns: clock,
                            },
                        );
                    }
                }
            }
            self.clock_ns = self.clock_ns.max(latest);
            out.push(Encoded {
                key: p.bytes.clone(),
                payload,
                records: part.len(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use normwatch_model::{AssetMatch, ConnState, DirStats, EndReason, Side};
    use normwatch_transport::wire::{decode_batch, Batch};

    fn rec(id: u64, resp: &str, asset: Option<&str>) -> FlowRecord {
        FlowRecord {
            sensor_id: Arc::from("s1"),
            flow_id: id,
            orig_addr: "192.0.2.1".parse().unwrap(),
            orig_port: 40000,
            resp_addr: resp.parse().unwrap(),
            resp_port: 502,
            ip_proto: 6,
            first_ns: 1,
            last_ns: 2,
            orig: DirStats::default(),
            resp: DirStats::default(),
            conn_state: ConnState::S0,
            asset: asset.map(|a| AssetMatch {
                id: AssetId(Arc::from(a)),
                side: Side::Resp,
            }),
            ics: None,
            end_reason: EndReason::IdleTimeout,
            export: None,
            prior: None,
            attempts: None,
            orig_ttl: None,
            resp_ttl: None,
        }
    }

    fn decode(e: &Encoded) -> Batch<FlowRecord> {
        decode_batch(&e.payload).unwrap()
    }

    #[test]
    fn batches_by_key_and_size_with_increasing_seq() {
        let t = Instant::now();
        let mut b = FlowBatcher::new(Arc::from("s1"), 100, 2, 1 << 20, Duration::from_secs(60));
        let mut out = Vec::new();
        let mut buf = vec![
            rec(1, "10.0.0.1", Some("scada")),
            rec(2, "10.0.0.2", Some("scada")),
            rec(3, "198.51.100.7", None),
        ];
        b.push(&mut buf, t, &mut out).unwrap();
        assert_eq!(out.len(), 1, "the asset batch is full");
        assert_eq!(out[0].key, b"scada");
        let first = decode(&out[0]);
        assert_eq!(first.seq, 100);
        assert_eq!(
            first.records.iter().map(|r| r.flow_id).collect::<Vec<_>>(),
            [1, 2]
        );
        b.tick(t + Duration::from_secs(1), &mut out).unwrap();
        assert_eq!(out.len(), 1, "linger not reached");
        b.tick(t + Duration::from_secs(60), &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].key, b"198.51.100.7");
        assert_eq!(decode(&out[1]).seq, 101);
        assert_eq!(b.pending(), 0);
    }

    #[test]
    fn keys_without_records_in_a_round_are_forgotten_and_come_back_whole() {
        let t = Instant::now();
        let mut b = FlowBatcher::new(Arc::from("s1"), 0, 100, 1 << 20, Duration::from_secs(60));
        let mut out = Vec::new();
        let mut buf = vec![
            rec(1, "198.51.100.1", None),
            rec(2, "198.51.100.2", None),
            rec(3, "10.0.0.1", Some("scada")),
        ];
        b.push(&mut buf, t, &mut out).unwrap();
        b.flush(&mut out).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(b.pending.len(), 3);
        b.push(&mut vec![rec(4, "198.51.100.2", None)], t, &mut out)
            .unwrap();
        b.flush(&mut out).unwrap();
        assert_eq!(out.len(), 4);
        assert_eq!(b.pending.len(), 1, "only the key used this round is kept");
        assert_eq!(b.keys.len(), 1);
        b.push(
            &mut vec![rec(5, "198.51.100.1", None), rec(6, "198.51.100.2", None)],
            t,
            &mut out,
        )
        .unwrap();
        b.flush(&mut out).unwrap();
        let last: Vec<(Vec<u8>, Vec<u64>)> = out[4..]
            .iter()
            .map(|e| {
                (
                    e.key.clone(),
                    decode(e).records.iter().map(|r| r.flow_id).collect(),
                )
            })
            .collect();
        assert_eq!(
            last,
            [
                (b"198.51.100.1".to_vec(), vec![5]),
                (b"198.51.100.2".to_vec(), vec![6])
            ]
        );
        assert_eq!(b.pending(), 0);
    }

    #[test]
    fn oversized_batches_are_split() {
        let mut b = FlowBatcher::new(Arc::from("s1"), 0, 10_000, 4096, Duration::from_secs(1));
        let mut buf: Vec<FlowRecord> = (0..500).map(|i| rec(i, "10.0.0.1", Some("a"))).collect();
        let mut out = Vec::new();
        b.push(&mut buf, Instant::now(), &mut out).unwrap();
        b.flush(&mut out).unwrap();
        assert!(out.len() > 1);
        let mut ids = Vec::new();
        for (i, e) in out.iter().enumerate() {
            assert!(e.payload.len() <= 4096);
            let batch = decode(e);
            assert_eq!(batch.seq, i as u64);
            ids.extend(batch.records.iter().map(|r| r.flow_id));
        }
        assert_eq!(
            ids,
            (0..500).collect::<Vec<_>>(),
            "order kept across the split"
        );
    }

    #[test]
    fn zero_linger_sends_at_once() {
        let mut b = FlowBatcher::new(Arc::from("s1"), 0, 100, 1 << 20, Duration::ZERO);
        let mut out = Vec::new();
        b.push(
            &mut vec![rec(1, "10.0.0.1", None)],
            Instant::now(),
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn by_event_time_partial_batches_leave_when_event_time_moves_on_not_the_clock() {
        let ms = 1_000_000u64;
        let at = |id: u64, resp: &str, t_ms: u64| {
            let mut r = rec(id, resp, None);
            r.last_ns = 1_000_000 * ms + t_ms * ms;
            r
        };
        let mut b = FlowBatcher::new(Arc::from("s1"), 0, 100, 1 << 20, Duration::from_millis(100))
            .by_event_time();
        let mut out = Vec::new();
        let start = Instant::now();
        b.push(
            &mut vec![at(1, "10.0.0.1", 0), at(2, "10.0.0.2", 50)],
            start,
            &mut out,
        )
        .unwrap();
        // An hour of wall clock changes nothing: the batches wait for event time.
        b.tick(start + Duration::from_secs(3600), &mut out).unwrap();
        assert!(out.is_empty());
        assert_eq!(b.pending(), 2);
        // A record 100 ms (event time) after the oldest sends the two waiting ones first.
        b.push(&mut vec![at(3, "10.0.0.1", 100)], start, &mut out)
            .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out.iter().map(|e| e.records).sum::<usize>(), 2);
        assert_eq!(b.pending(), 1);
        // The same input gives the same messages, whatever the wall clock did.
        let mut again =
            FlowBatcher::new(Arc::from("s1"), 0, 100, 1 << 20, Duration::from_millis(100))
                .by_event_time();
        let mut out2 = Vec::new();
        again
            .push(
                &mut vec![
                    at(1, "10.0.0.1", 0),
                    at(2, "10.0.0.2", 50),
                    at(3, "10.0.0.1", 100),
                ],
                start + Duration::from_secs(7),
                &mut out2,
            )
            .unwrap();
        let payloads = |v: &[Encoded]| v.iter().map(|e| e.payload.clone()).collect::<Vec<_>>();
        assert_eq!(payloads(&out), payloads(&out2));
    }
}
