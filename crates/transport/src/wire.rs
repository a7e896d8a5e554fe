//! The batch envelope. Layout (integers little-endian):
//!
//! ```text
//! magic "NWFB" | schema version u16 | sensor id length u8 | sensor id | batch sequence u64
//! | clock u64 | record count u32 | payload length u32 | payload (postcard records)
//! | CRC-32C u32
//! ```
//!
//! Records are postcard's encoding of each record's serde form; [`FlowRecord`]s are written
//! and read by a hand-written codec ([`flow`]) that produces and accepts exactly those bytes,
//! cheaper per record than going through serde (`benches/benches/wire.rs` measures both).
//!
//! The CRC covers everything before it, so a flipped bit anywhere is caught before any record
//! is decoded; the sequence number lets consumers drop redelivered batches. The clock is the
//! event time (ns) the sensor had reached before the batch: the latest record time of the
//! batches it sent before it, so a detector can give every asset the clock a detector reading
//! the sensor's own order would have, whatever order partitions are consumed in.

use normwatch_model::FlowRecord;

pub mod flow;

/// A record a batch carries: appended to a batch's payload and read back from it, in
/// postcard's encoding of the record's serde form (which the payload is).
pub trait WireRecord: Sized {
    /// About the bytes a record takes, to size a batch's buffer before encoding.
    const TYPICAL_BYTES: usize;

    /// Appends the record: the bytes `postcard::to_extend` appends.
    fn encode(&self, buf: &mut Vec<u8>) -> Result<(), postcard::Error>;

    /// Reads a record from the start of `bytes`, and the bytes after it: what
    /// `postcard::take_from_bytes` gives (or the error it gives).
    fn decode(bytes: &[u8]) -> Result<(Self, &[u8]), postcard::Error>;

    /// Like [`WireRecord::decode`], appending the record to `out`; the bytes after it.
    #[inline]
    fn decode_into<'a>(bytes: &'a [u8], out: &mut Vec<Self>) -> Result<&'a [u8], postcard::Error> {
        let (r, rest) = Self::decode(bytes)?;
        out.push(r);
        Ok(rest)
    }
}

impl WireRecord for FlowRecord {
    /// A flow with an asset and TTL spans, without a prior, over IPv4 takes 70–100 bytes; an
    /// interim record's prior adds 20–40, IPv6 24 (a realistic mix averages about 107): a
    /// batch rarely outgrows this.
    const TYPICAL_BYTES: usize = 128;

    #[inline]
    fn encode(&self, buf: &mut Vec<u8>) -> Result<(), postcard::Error> {
        flow::encode(self, buf)
    }

    #[inline]
    fn decode(bytes: &[u8]) -> Result<(Self, &[u8]), postcard::Error> {
        flow::decode(bytes)
    }

    #[inline]
    fn decode_into<'a>(bytes: &'a [u8], out: &mut Vec<Self>) -> Result<&'a [u8], postcard::Error> {
        flow::decode_into(bytes, out)
    }
}

/// First bytes of every batch.
pub const MAGIC: [u8; 4] = *b"NWFB";
/// The schema version this build writes and reads. 2: `FlowRecord` gained `export` (the
/// flow-export origin); 3: `EndReason::Interim` and `prior` (what earlier records of the flow
/// reported); 4: `attempts` (one-packet connection attempts counted together) and the clock
/// in the header; 5: the TTL spans of each side (`orig_ttl`, `resp_ttl`) and the attempts'
/// TTL and source-port spans. postcard is not self-describing, so batches of another version
/// are refused with their reason rather than misread.
pub const SCHEMA_VERSION: u16 = 5;
/// Largest batch a consumer decodes: a sensor's messages stay under
/// `kafka::MAX_MESSAGE_BYTES`, and topics are created refusing more than this. A larger
/// message is counted and skipped undecoded, so it cannot cost memory many times its size.
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// Longest sensor id the envelope carries.
pub const MAX_SENSOR_ID: usize = 64;

const FIXED_HEADER: usize = 4 + 2 + 1;
/// Records reserved for at once before decoding (a full sensor batch is a few thousand).
const PREALLOC_RECORDS: usize = 8192;
const TRAILER: usize = 4;

/// A decoded batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch<T> {
    pub sensor_id: String,
    pub seq: u64,
    /// The sensor's event time before this batch (ns; see the module documentation).
    pub clock_ns: u64,
    pub records: Vec<T>,
}

/// Why a batch was rejected. Each variant is a counted reason (`reason()` is its label).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("batch too short ({0} bytes)")]
    TooShort(usize),
    #[error("not a normwatch batch (bad magic)")]
    BadMagic,
    #[error("schema version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion { found: u16, supported: u16 },
    #[error("checksum mismatch: the batch is corrupt")]
    BadChecksum,
    #[error("header says {declared} records, payload holds {found}")]
    CountMismatch { declared: u32, found: u32 },
    #[error("malformed batch: {0}")]
    Malformed(String),
    #[error("batch of {0} bytes is larger than any sensor sends ({MAX_BATCH_BYTES})")]
    TooLarge(usize),
}

impl DecodeError {
    /// Metric label.
    /// Every [`DecodeError::reason`] label.
    pub const REASONS: [&'static str; 7] = [
        "too_short",
        "bad_magic",
        "unsupported_version",
        "bad_checksum",
        "count_mismatch",
        "malformed",
        "too_large",
    ];

    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooShort(_) => "too_short",
            DecodeError::BadMagic => "bad_magic",
            DecodeError::UnsupportedVersion { .. } => "unsupported_version",
            DecodeError::BadChecksum => "bad_checksum",
            DecodeError::CountMismatch { .. } => "count_mismatch",
            DecodeError::Malformed(_) => "malformed",
            DecodeError::TooLarge(_) => "too_large",
        }
    }
}

/// Why a batch could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("sensor id is {0} bytes; at most {MAX_SENSOR_ID} fit the envelope")]
    SensorIdTooLong(usize),
    #[error("too many records or bytes for one batch")]
    TooLarge,
    #[error("cannot encode a record: {0}")]
    Record(#[from] postcard::Error),
}

/// Encodes `records` as batch `seq` of `sensor_id`, with no clock (0).
pub fn encode_batch<T: WireRecord>(
    sensor_id: &str,
    seq: u64,
    records: &[T],
) -> Result<Vec<u8>, EncodeError> {
    encode_batch_at(sensor_id, seq, 0, records)
}

/// Encodes `records` as batch `seq` of `sensor_id`, whose sensor had reached event time
/// `clock_ns` before it.
pub fn encode_batch_at<T: WireRecord>(
    sensor_id: &str,
    seq: u64,
    clock_ns: u64,
    records: &[T],
) -> Result<Vec<u8>, EncodeError> {
    let mut buf = Vec::with_capacity(batch_estimate::<T>(sensor_id, records.len()));
    encode_into_at(&mut buf, sensor_id, seq, clock_ns, records)?;
    Ok(buf)
}

/// Like [`encode_batch`], into a cleared, reused buffer.
pub fn encode_into<T: WireRecord>(
    buf: &mut Vec<u8>,
    sensor_id: &str,
    seq: u64,
    records: &[T],
) -> Result<(), EncodeError> {
    encode_into_at(buf, sensor_id, seq, 0, records)
}

/// Like [`encode_batch_at`], into a cleared, reused buffer.
pub fn encode_into_at<T: WireRecord>(
    buf: &mut Vec<u8>,
    sensor_id: &str,
    seq: u64,
    clock_ns: u64,
    records: &[T],
) -> Result<(), EncodeError> {
    if sensor_id.len() > MAX_SENSOR_ID {
        return Err(EncodeError::SensorIdTooLong(sensor_id.len()));
    }
    let count = u32::try_from(records.len()).map_err(|_| EncodeError::TooLarge)?;
    buf.clear();
    buf.reserve(batch_estimate::<T>(sensor_id, records.len()));
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&SCHEMA_VERSION.to_le_bytes());
    buf.push(sensor_id.len() as u8);
    buf.extend_from_slice(sensor_id.as_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&clock_ns.to_le_bytes());
    buf.extend_from_slice(&count.to_le_bytes());
    let len_at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    let start = buf.len();
    for r in records {
        r.encode(buf)?;
    }
    let payload = u32::try_from(buf.len() - start).map_err(|_| EncodeError::TooLarge)?;
    buf[len_at..len_at + 4].copy_from_slice(&payload.to_le_bytes());
    let crc = crc32c::crc32c(buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// The bytes a batch of `records` records of `sensor_id` is expected to take.
fn batch_estimate<T: WireRecord>(sensor_id: &str, records: usize) -> usize {
    // A batch larger than a consumer takes grows past this as it is written.
    (FIXED_HEADER + sensor_id.len() + 8 + 8 + 4 + 4 + TRAILER)
        .saturating_add(records.saturating_mul(T::TYPICAL_BYTES))
        .min(MAX_BATCH_BYTES)
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
    if b.len() < n {
        return Err(DecodeError::Malformed("header runs past the end".into()));
    }
    let (h, t) = b.split_at(n);
    *b = t;
    Ok(h)
}

/// The record count a batch's header declares, if `bytes` starts like a batch of this
/// schema (not verified: for counting what a dropped message held).
pub fn record_count(bytes: &[u8]) -> Option<u32> {
    if bytes.len() < FIXED_HEADER || bytes[..4] != MAGIC {
        return None;
    }
    let id_len = usize::from(bytes[FIXED_HEADER - 1]);
    let at = FIXED_HEADER + id_len + 8 + 8;
    let c = bytes.get(at..at + 4)?;
    Some(u32::from_le_bytes(c.try_into().ok()?))
}

/// Decodes and verifies a batch. Never panics, whatever the bytes.
pub fn decode_batch<T: WireRecord>(bytes: &[u8]) -> Result<Batch<T>, DecodeError> {
    let mut records = Vec::new();
    let head = decode_batch_into(bytes, &mut records)?;
    Ok(Batch {
        sensor_id: head.sensor_id.to_string(),
        seq: head.seq,
        clock_ns: head.clock_ns,
        records,
    })
}

/// A batch's header, borrowed from its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHead<'a> {
    pub sensor_id: &'a str,
    pub seq: u64,
    /// The sensor's event time before this batch (ns; see the module documentation).
    pub clock_ns: u64,
}

/// Like [`decode_batch`], into `records` (cleared first, its room reused: a consumer decodes
/// every batch into one buffer). On an error `records` holds no record of the batch.
pub fn decode_batch_into<'a, T: WireRecord>(
    bytes: &'a [u8],
    records: &mut Vec<T>,
) -> Result<BatchHead<'a>, DecodeError> {
    records.clear();
    let head = decode_records(bytes, records);
    if head.is_err() {
        records.clear();
    }
    head
}

fn decode_records<'a, T: WireRecord>(
    bytes: &'a [u8],
    records: &mut Vec<T>,
) -> Result<BatchHead<'a>, DecodeError> {
    if bytes.len() > MAX_BATCH_BYTES {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    if bytes.len() < FIXED_HEADER + 8 + 8 + 4 + 4 + TRAILER {
        return Err(DecodeError::TooShort(bytes.len()));
    }
    if bytes[..4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != SCHEMA_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER);
    let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    if crc32c::crc32c(body) != crc {
        return Err(DecodeError::BadChecksum);
    }
    let mut b = &body[FIXED_HEADER - 1..];
    let id_len = usize::from(take(&mut b, 1)?[0]);
    let id = take(&mut b, id_len)?;
    let sensor_id = std::str::from_utf8(id)
        .map_err(|_| DecodeError::Malformed("sensor id is not UTF-8".into()))?;
    let seq = u64::from_le_bytes(take(&mut b, 8)?.try_into().expect("8 bytes"));
    let clock_ns = u64::from_le_bytes(take(&mut b, 8)?.try_into().expect("8 bytes"));
    let count = u32::from_le_bytes(take(&mut b, 4)?.try_into().expect("4 bytes"));
    let payload_len = u32::from_le_bytes(take(&mut b, 4)?.try_into().expect("4 bytes")) as usize;
    if b.len() != payload_len {
        return Err(DecodeError::Malformed(format!(
            "payload is {} bytes, header says {payload_len}",
            b.len()
        )));
    }
    // Each record takes at least one byte: a count above the payload size is a lie, and
    // must not size an allocation.
    if count as usize > payload_len {
        return Err(DecodeError::CountMismatch {
            declared: count,
            found: 0,
        });
    }
    // The declared count sizes the allocation only up to what a plausible batch holds; a
    // larger batch grows as its records actually decode, so a lying header cannot make a
    // small message cost gigabytes.
    records.reserve((count as usize).min(PREALLOC_RECORDS));
    let mut rest = b;
    while !rest.is_empty() {
        rest = T::decode_into(rest, records)
            .map_err(|e| DecodeError::Malformed(format!("record {}: {e}", records.len())))?;
    }
    if records.len() != count as usize {
        return Err(DecodeError::CountMismatch {
            declared: count,
            found: records.len() as u32,
        });
    }
    Ok(BatchHead {
        sensor_id,
        seq,
        clock_ns,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_reason_label_is_listed() {
        let all = [
            DecodeError::TooShort(0),
            DecodeError::BadMagic,
            DecodeError::UnsupportedVersion {
                found: 9,
                supported: 1,
            },
            DecodeError::BadChecksum,
            DecodeError::CountMismatch {
                declared: 1,
                found: 0,
            },
            DecodeError::Malformed(String::new()),
            DecodeError::TooLarge(0),
        ];
        let labels: Vec<&str> = all.iter().map(DecodeError::reason).collect();
        assert_eq!(labels, DecodeError::REASONS);
    }

    use super::*;

    /// Plain integers as records, through postcard's serde path, for envelope tests.
    macro_rules! serde_record {
        ($($t:ty),*) => {$(
            impl WireRecord for $t {
                const TYPICAL_BYTES: usize = 2;

                fn encode(&self, buf: &mut Vec<u8>) -> Result<(), postcard::Error> {
                    *buf = postcard::to_extend(self, std::mem::take(buf))?;
                    Ok(())
                }

                fn decode(bytes: &[u8]) -> Result<(Self, &[u8]), postcard::Error> {
                    postcard::take_from_bytes(bytes)
                }
            }
        )*};
    }
    serde_record!(u8, u32);

    use normwatch_model::{
        AssetId, AssetMatch, CommandClass, ConnState, DirStats, EndReason, FlowRecord, IcsProto,
        IcsSummary, Side, TcpFlags,
    };
    use std::sync::Arc;

    pub(crate) fn flows() -> Vec<FlowRecord> {
        let sensor: Arc<str> = Arc::from("site-1");
        let mut ics = IcsSummary::new(IcsProto::S7comm);
        ics.orig.command(CommandClass::StopRestart, 0x29);
        vec![
            FlowRecord {
                sensor_id: sensor.clone(),
                flow_id: 1,
                orig_addr: "198.51.100.7".parse().unwrap(),
                orig_port: 40000,
                resp_addr: "10.10.10.5".parse().unwrap(),
                resp_port: 102,
                ip_proto: 6,
                first_ns: 1_700_000_000_000_000_000,
                last_ns: 1_700_000_001_000_000_000,
                orig: DirStats {
                    pkts: 10,
                    ip_bytes: 900,
                    payload_bytes: 500,
                    tcp_flags: TcpFlags(0x1b),
                },
                resp: DirStats::default(),
                conn_state: ConnState::S1,
                asset: Some(AssetMatch {
                    id: AssetId(Arc::from("grid-scada")),
                    side: Side::Resp,
                }),
                ics: Some(Box::new(ics)),
                end_reason: EndReason::TcpClosed,
                export: None,
                prior: Some(normwatch_model::Prior {
                    reports: 3,
                    since_ns: 2,
                    orig: normwatch_model::PriorDir {
                        pkts: 1,
                        ip_bytes: 40,
                        tcp_flags: TcpFlags(2),
                        commands: [0, 1, 0, 0],
                    },
                    resp: normwatch_model::PriorDir::default(),
                }),
                attempts: Some(Box::new(normwatch_model::Attempts {
                    count: 2,
                    sources: {
                        let mut c = normwatch_model::Cardinality::default();
                        c.insert(7);
                        c.insert(8);
                        c
                    },
                    sample: vec!["192.0.2.7".parse().unwrap()],
                    ttl: Some(normwatch_model::Span { min: 40, max: 243 }),
                    sport: Some(normwatch_model::Span {
                        min: 3,
                        max: 65_533,
                    }),
                })),
                orig_ttl: Some(normwatch_model::Span { min: 52, max: 64 }),
                resp_ttl: Some(normwatch_model::Span::of(128)),
            },
            FlowRecord {
                sensor_id: sensor,
                flow_id: 2,
                orig_addr: "2001:db8::1".parse().unwrap(),
                orig_port: 53,
                resp_addr: "2001:db8::2".parse().unwrap(),
                resp_port: 5353,
                ip_proto: 17,
                first_ns: 5,
                last_ns: 6,
                orig: DirStats::default(),
                resp: DirStats::default(),
                conn_state: ConnState::OTH,
                asset: None,
                ics: None,
                end_reason: EndReason::EndOfInput,
                export: Some(normwatch_model::flow::ExportOrigin {
                    source: normwatch_model::flow::RecordSource::Ipfix,
                    exporter: "192.0.2.1".parse().unwrap(),
                    domain: 7,
                    sampling_rate: 1000,
                }),
                prior: None,
                attempts: None,
                orig_ttl: None,
                resp_ttl: None,
            },
        ]
    }

    #[test]
    fn an_oversized_message_is_refused_before_decoding() {
        let big = vec![0u8; MAX_BATCH_BYTES + 1];
        let e = decode_batch::<u32>(&big).unwrap_err();
        assert_eq!(e.reason(), "too_large");
    }

    #[test]
    fn record_count_reads_the_header() {
        let b = encode_batch("sensor-a", 1, &[1u8, 2, 3]).unwrap();
        assert_eq!(record_count(&b), Some(3));
        assert_eq!(record_count(b"{\"id\":1}"), None);
    }

    #[test]
    fn round_trip() {
        let f = flows();
        let b = encode_batch("site-1", 42, &f).unwrap();
        let back: Batch<FlowRecord> = decode_batch(&b).unwrap();
        assert_eq!(back.sensor_id, "site-1");
        assert_eq!(back.seq, 42);
        assert_eq!(back.records, f);
        let empty = encode_batch::<FlowRecord>("s", 1, &[]).unwrap();
        assert!(decode_batch::<FlowRecord>(&empty)
            .unwrap()
            .records
            .is_empty());
    }

    /// One buffer takes batch after batch; a refused batch leaves none of its records there.
    #[test]
    fn batches_decode_into_one_reused_buffer() {
        let f = flows();
        let mut records: Vec<FlowRecord> = Vec::new();
        let first = encode_batch("site-1", 1, &f).unwrap();
        let head = decode_batch_into(&first, &mut records).unwrap();
        assert_eq!((head.sensor_id, head.seq), ("site-1", 1));
        assert_eq!(records, f);
        let second = encode_batch("site-2", 2, &f[..1]).unwrap();
        let head = decode_batch_into(&second, &mut records).unwrap();
        assert_eq!((head.sensor_id, head.seq), ("site-2", 2));
        assert_eq!(records, f[..1], "the first batch's records are gone");
        let mut torn = first.clone();
        torn.truncate(torn.len() - 1);
        assert!(decode_batch_into(&torn, &mut records).is_err());
        assert!(records.is_empty());
        // Past the checksum, a malformed record: the records before it are not left behind.
        let mut lying = encode_batch("site-1", 3, &f).unwrap();
        let count_at = FIXED_HEADER + "site-1".len() + 8 + 8;
        lying[count_at..count_at + 4].copy_from_slice(&(f.len() as u32 + 1).to_le_bytes());
        let n = lying.len() - TRAILER;
        let crc = crc32c::crc32c(&lying[..n]);
        lying[n..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_batch_into(&lying, &mut records)
                .unwrap_err()
                .reason(),
            "count_mismatch"
        );
        assert!(records.is_empty());
    }

    /// A batch is byte for byte what a build encoding records through serde writes, and
    /// such a batch decodes here: builds before and after the hand-written codec interoperate.
    #[test]
    fn batches_match_the_serde_encoding_both_ways() {
        let f = flows();
        let mut serde = encode_batch::<u8>("site-1", 42, &[]).unwrap();
        serde.truncate(serde.len() - TRAILER);
        let mut payload = Vec::new();
        for r in &f {
            payload = postcard::to_extend(r, payload).unwrap();
        }
        let count_at = FIXED_HEADER + "site-1".len() + 8 + 8;
        serde[count_at..count_at + 4].copy_from_slice(&(f.len() as u32).to_le_bytes());
        serde[count_at + 4..count_at + 8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        serde.extend_from_slice(&payload);
        let crc = crc32c::crc32c(&serde);
        serde.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(encode_batch("site-1", 42, &f).unwrap(), serde);
        assert_eq!(decode_batch::<FlowRecord>(&serde).unwrap().records, f);
    }

    #[test]
    fn wrong_version_is_rejected_with_its_reason() {
        let mut b = encode_batch("site-1", 1, &flows()).unwrap();
        b[4] = 9;
        let e = decode_batch::<FlowRecord>(&b).unwrap_err();
        assert_eq!(e.reason(), "unsupported_version");
        assert!(e.to_string().contains("version 9"));
    }

    /// A batch of the schema before (4: no TTL or port spans) is refused by its version, not
    /// misread as records of this one.
    #[test]
    fn a_batch_of_the_previous_schema_is_refused_by_its_version() {
        let mut b = encode_batch("site-1", 1, &flows()).unwrap();
        b[4..6].copy_from_slice(&4u16.to_le_bytes());
        let n = b.len() - TRAILER;
        let crc = crc32c::crc32c(&b[..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
        let e = decode_batch::<FlowRecord>(&b).unwrap_err();
        assert_eq!(
            e,
            DecodeError::UnsupportedVersion {
                found: 4,
                supported: 5
            }
        );
    }

    #[test]
    fn every_truncation_and_bit_flip_is_an_error() {
        let b = encode_batch("site-1", 7, &flows()).unwrap();
        for n in 0..b.len() {
            assert!(decode_batch::<FlowRecord>(&b[..n]).is_err(), "prefix {n}");
        }
        for i in 0..b.len() {
            for bit in 0..8 {
                let mut c = b.clone();
                c[i] ^= 1 << bit;
                assert!(
                    decode_batch::<FlowRecord>(&c).is_err(),
                    "byte {i} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn the_clock_travels_with_the_batch() {
        let b = encode_batch_at("s", 7, 1_700_000_000_123_456_789, &flows()).unwrap();
        let back = decode_batch::<FlowRecord>(&b).unwrap();
        assert_eq!(back.clock_ns, 1_700_000_000_123_456_789);
        assert_eq!(back.seq, 7);
        assert_eq!(record_count(&b), Some(flows().len() as u32));
        let empty = encode_batch_at::<FlowRecord>("s", 8, 5, &[]).unwrap();
        let back = decode_batch::<FlowRecord>(&empty).unwrap();
        assert!(back.records.is_empty());
        assert_eq!(back.clock_ns, 5);
    }

    #[test]
    fn lying_header_with_valid_checksum_is_an_error() {
        // Re-seal a batch whose count is wrong: the CRC passes, the count check must not.
        let mut b = encode_batch("s", 1, &flows()).unwrap();
        b.truncate(b.len() - 4);
        let count_at = 4 + 2 + 1 + 1 + 8 + 8;
        b[count_at..count_at + 4].copy_from_slice(&3u32.to_le_bytes());
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        let e = decode_batch::<FlowRecord>(&b).unwrap_err();
        assert_eq!(e.reason(), "count_mismatch");
    }
}
