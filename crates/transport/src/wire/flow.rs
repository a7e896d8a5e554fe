//! The hand-written codec of [`FlowRecord`] on the wire: exactly postcard's bytes for wire
//! schema 5 (what `postcard::to_extend` writes and `postcard::take_from_bytes` reads through
//! the records' serde derives), without serde's per-field calls.
//!
//! postcard's rules, as the record's types use them: `u8` one byte; `u16`, `u32`, `u64`
//! LEB128 varints (at most 3, 5 and 10 bytes, the last byte holding only the bits left);
//! `Option` a 0 or 1 byte, then the value; a fieldless enum the varint (`u32`) of its
//! variant's index; `IpAddr` the variant index (0 V4, 1 V6) then its 4 or 16 octets with no
//! length; a string its varint (`usize`) length then its UTF-8 bytes; a struct its fields in
//! declaration order, with no framing. `TcpFlags` and `AssetId` are transparent: their one
//! field. Decoding rejects exactly what postcard rejects, with postcard's error, and shares
//! equal consecutive sensor and asset ids through [`normwatch_model::intern`], as the serde
//! path does.
//!
//! The rare nested parts (`ics`, `attempts`) go through postcard's serde path, in the same
//! buffer; everything else is written and read here, with no allocation but the record's own
//! boxes (and a new id when the id changes).

use normwatch_model::flow::{ExportOrigin, RecordSource};
use normwatch_model::{
    intern, AssetId, AssetMatch, Attempts, ConnState, DirStats, EndReason, FlowRecord, IcsSummary,
    Prior, PriorDir, Side, Span, TcpFlags,
};
use postcard::Error;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Variants in declaration order: their index is their number on the wire.
const CONN_STATES: [ConnState; 13] = [
    ConnState::S0,
    ConnState::S1,
    ConnState::SF,
    ConnState::REJ,
    ConnState::S2,
    ConnState::S3,
    ConnState::RSTO,
    ConnState::RSTR,
    ConnState::RSTOS0,
    ConnState::RSTRH,
    ConnState::SH,
    ConnState::SHR,
    ConnState::OTH,
];
const SOURCES: [RecordSource; 5] = [
    RecordSource::Packets,
    RecordSource::NetflowV5,
    RecordSource::NetflowV9,
    RecordSource::Ipfix,
    RecordSource::Sflow,
];
const SIDES: [Side; 2] = [Side::Orig, Side::Resp];

fn conn_state_index(s: ConnState) -> u8 {
    match s {
        ConnState::S0 => 0,
        ConnState::S1 => 1,
        ConnState::SF => 2,
        ConnState::REJ => 3,
        ConnState::S2 => 4,
        ConnState::S3 => 5,
        ConnState::RSTO => 6,
        ConnState::RSTR => 7,
        ConnState::RSTOS0 => 8,
        ConnState::RSTRH => 9,
        ConnState::SH => 10,
        ConnState::SHR => 11,
        ConnState::OTH => 12,
    }
}

fn source_index(s: RecordSource) -> u8 {
    match s {
        RecordSource::Packets => 0,
        RecordSource::NetflowV5 => 1,
        RecordSource::NetflowV9 => 2,
        RecordSource::Ipfix => 3,
        RecordSource::Sflow => 4,
    }
}

fn side_index(s: Side) -> u8 {
    match s {
        Side::Orig => 0,
        Side::Resp => 1,
    }
}

// Upper bounds of the hand-written parts, strings aside: the buffer is grown by this much
// once, written by index and cut back to what was written.
/// sensor id length … ics tag: varint 10, flow id 10, addresses 2 × 17, ports 2 × 3,
/// protocol 1, times 2 × 10, DirStats 2 × 31, conn state 1, asset 1 + 10 + 1, ics tag 1.
const HEAD_BOUND: usize = 10 + 10 + 34 + 6 + 1 + 20 + 62 + 1 + 12 + 1;
/// end reason 1, export 1 + 1 + 17 + 5 + 5, prior 1 + 5 + 10 + 2 × 41, attempts tag 1.
const MID_BOUND: usize = 1 + 29 + 98 + 1;
/// Two optional spans of two bytes.
const TAIL_BOUND: usize = 6;

/// The low 7 bits of each byte of `x`, packed: a varint's value from its bytes.
#[inline(always)]
fn pack(x: u64) -> u64 {
    let x = x & 0x7F7F_7F7F_7F7F_7F7F;
    let x = (x & 0x007F_007F_007F_007F) | ((x & 0x7F00_7F00_7F00_7F00) >> 1);
    let x = (x & 0x0000_3FFF_0000_3FFF) | ((x & 0x3FFF_0000_3FFF_0000) >> 2);
    (x & 0x0000_0000_0FFF_FFFF) | ((x & 0x0FFF_FFFF_0000_0000) >> 4)
}

/// Writes into bytes the caller made room for.
struct Out<'a> {
    b: &'a mut [u8],
    n: usize,
}

impl Out<'_> {
    #[inline(always)]
    fn byte(&mut self, v: u8) {
        self.b[self.n] = v;
        self.n += 1;
    }

    #[inline(always)]
    fn bytes(&mut self, v: &[u8]) {
        self.b[self.n..self.n + v.len()].copy_from_slice(v);
        self.n += v.len();
    }

    #[inline(always)]
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte(v as u8 | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    #[inline(always)]
    fn option(&mut self, some: bool) {
        self.byte(u8::from(some));
    }

    #[inline(always)]
    fn str(&mut self, s: &str) {
        self.varint(s.len() as u64);
        self.bytes(s.as_bytes());
    }

    #[inline(always)]
    fn ip(&mut self, a: &IpAddr) {
        match a {
            IpAddr::V4(a) => {
                self.byte(0);
                self.bytes(&a.octets());
            }
            IpAddr::V6(a) => {
                self.byte(1);
                self.bytes(&a.octets());
            }
        }
    }

    #[inline(always)]
    fn dir(&mut self, d: &DirStats) {
        self.varint(d.pkts);
        self.varint(d.ip_bytes);
        self.varint(d.payload_bytes);
        self.byte(d.tcp_flags.0);
    }

    #[inline(always)]
    fn prior_dir(&mut self, d: &PriorDir) {
        self.varint(d.pkts);
        self.varint(d.ip_bytes);
        self.byte(d.tcp_flags.0);
        for c in d.commands {
            self.varint(u64::from(c));
        }
    }

    #[inline(always)]
    fn span(&mut self, s: &Option<Span<u8>>) {
        match s {
            None => self.byte(0),
            Some(s) => self.bytes(&[1, s.min, s.max]),
        }
    }

    /// `sensor_id` … the `ics` tag.
    #[inline(always)]
    fn head(&mut self, r: &FlowRecord) {
        self.str(&r.sensor_id);
        self.varint(r.flow_id);
        self.ip(&r.orig_addr);
        self.varint(u64::from(r.orig_port));
        self.ip(&r.resp_addr);
        self.varint(u64::from(r.resp_port));
        self.byte(r.ip_proto);
        self.varint(r.first_ns);
        self.varint(r.last_ns);
        self.dir(&r.orig);
        self.dir(&r.resp);
        self.byte(conn_state_index(r.conn_state));
        match &r.asset {
            None => self.byte(0),
            Some(a) => {
                self.byte(1);
                self.str(&a.id.0);
                self.byte(side_index(a.side));
            }
        }
        self.option(r.ics.is_some());
    }

    /// `end_reason` … the `attempts` tag.
    #[inline(always)]
    fn mid(&mut self, r: &FlowRecord) {
        self.byte(r.end_reason.index() as u8);
        match &r.export {
            None => self.byte(0),
            Some(e) => {
                self.byte(1);
                self.byte(source_index(e.source));
                self.ip(&e.exporter);
                self.varint(u64::from(e.domain));
                self.varint(u64::from(e.sampling_rate));
            }
        }
        match &r.prior {
            None => self.byte(0),
            Some(p) => {
                self.byte(1);
                self.varint(u64::from(p.reports));
                self.varint(p.since_ns);
                self.prior_dir(&p.orig);
                self.prior_dir(&p.resp);
            }
        }
        self.option(r.attempts.is_some());
    }

    /// `orig_ttl`, `resp_ttl`.
    #[inline(always)]
    fn tail(&mut self, r: &FlowRecord) {
        self.span(&r.orig_ttl);
        self.span(&r.resp_ttl);
    }
}

/// Appends what `write` writes, given room for `bound` bytes.
#[inline(always)]
fn put(buf: &mut Vec<u8>, bound: usize, write: impl FnOnce(&mut Out<'_>)) {
    let start = buf.len();
    buf.resize(start + bound, 0);
    let mut out = Out {
        b: &mut buf[start..],
        n: 0,
    };
    write(&mut out);
    let n = out.n;
    buf.truncate(start + n);
}

/// Appends a value through postcard's serde path.
fn serde_extend<T: serde::Serialize>(buf: &mut Vec<u8>, v: &T) -> Result<(), Error> {
    *buf = postcard::to_extend(v, std::mem::take(buf))?;
    Ok(())
}

/// Appends `r` to `buf`: the bytes `postcard::to_extend(r, ..)` appends.
pub fn encode(r: &FlowRecord, buf: &mut Vec<u8>) -> Result<(), Error> {
    let strings = r.sensor_id.len() + r.asset.as_ref().map_or(0, |a| a.id.0.len());
    match (&r.ics, &r.attempts) {
        (None, None) => {
            put(buf, HEAD_BOUND + MID_BOUND + TAIL_BOUND + strings, |o| {
                o.head(r);
                o.mid(r);
                o.tail(r);
            });
        }
        (ics, attempts) => {
            put(buf, HEAD_BOUND + strings, |o| o.head(r));
            if let Some(ics) = ics {
                serde_extend::<IcsSummary>(buf, ics)?;
            }
            put(buf, MID_BOUND, |o| o.mid(r));
            if let Some(a) = attempts {
                serde_extend::<Attempts>(buf, a)?;
            }
            put(buf, TAIL_BOUND, |o| o.tail(r));
        }
    }
    Ok(())
}

/// Reads from the bytes of one or more records.
struct In<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> In<'a> {
    #[inline(always)]
    fn byte(&mut self) -> Result<u8, Error> {
        let v = *self.b.get(self.p).ok_or(Error::DeserializeUnexpectedEnd)?;
        self.p += 1;
        Ok(v)
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.b.len() - self.p < n {
            return Err(Error::DeserializeUnexpectedEnd);
        }
        let s = &self.b[self.p..self.p + n];
        self.p += n;
        Ok(s)
    }

    #[inline(always)]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let s = self.take(N)?;
        let mut a = [0; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// A varint of a type of `MAX` bytes at most whose last byte holds up to `LAST`, as
    /// postcard reads it: an unterminated varint, or a last byte with bits the type does not
    /// have, is `DeserializeBadVarint`; a varint cut short is `DeserializeUnexpectedEnd`.
    #[inline(always)]
    fn varint<const MAX: usize, const LAST: u8>(&mut self) -> Result<u64, Error> {
        // One byte: small values, most counts of a short flow, every variant index.
        if let Some(&b) = self.b.get(self.p) {
            if b < 0x80 {
                self.p += 1;
                return Ok(u64::from(b));
            }
        }
        // Eight bytes at once where there are eight: the first byte without the continuation
        // bit ends the varint, found without a loop.
        if let Some(word) = self.b.get(self.p..self.p + 8) {
            let w = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            let stops = !w & 0x8080_8080_8080_8080;
            if stops != 0 {
                let len = (stops.trailing_zeros() / 8 + 1) as usize;
                // postcard reads at most MAX bytes, and the last only with the bits left.
                if len > MAX || (len == MAX && word[len - 1] > LAST) {
                    return Err(Error::DeserializeBadVarint);
                }
                self.p += len;
                return Ok(pack(w & (stops ^ (stops - 1))));
            }
            if MAX <= 8 {
                return Err(Error::DeserializeBadVarint);
            }
            let mut out = pack(w);
            self.p += 8;
            for i in 8..MAX {
                let v = self.byte()?;
                out |= u64::from(v & 0x7f) << (7 * i);
                if v & 0x80 == 0 {
                    if i == MAX - 1 && v > LAST {
                        return Err(Error::DeserializeBadVarint);
                    }
                    return Ok(out);
                }
            }
            return Err(Error::DeserializeBadVarint);
        }
        let first = self.byte()?;
        if first < 0x80 {
            return Ok(u64::from(first));
        }
        let mut out = u64::from(first & 0x7f);
        for i in 1..MAX {
            let v = self.byte()?;
            out |= u64::from(v & 0x7f) << (7 * i);
            if v & 0x80 == 0 {
                if i == MAX - 1 && v > LAST {
                    return Err(Error::DeserializeBadVarint);
                }
                return Ok(out);
            }
        }
        Err(Error::DeserializeBadVarint)
    }

    #[inline(always)]
    fn u16(&mut self) -> Result<u16, Error> {
        // 3 bytes, 16 - 14 bits in the last: the value fits.
        Ok(self.varint::<3, 0x03>()? as u16)
    }

    #[inline(always)]
    fn u32(&mut self) -> Result<u32, Error> {
        // 5 bytes, 32 - 28 bits in the last: the value fits.
        Ok(self.varint::<5, 0x0f>()? as u32)
    }

    #[inline(always)]
    fn u64(&mut self) -> Result<u64, Error> {
        self.varint::<10, 0x01>()
    }

    /// A `usize` (a length), as a 64-bit target reads it (a length past the bytes present is
    /// refused by the read that follows, never allocated).
    #[inline(always)]
    fn len(&mut self) -> Result<usize, Error> {
        usize::try_from(self.u64()?).map_err(|_| Error::DeserializeBadVarint)
    }

    /// An enum's variant: its `u32` index, then the variant of that index (serde's derive
    /// refuses another with a custom error, which postcard reports as `SerdeDeCustom`).
    #[inline(always)]
    fn variant<T: Copy, const N: usize>(&mut self, all: &[T; N]) -> Result<T, Error> {
        let i = self.u32()?;
        all.get(i as usize).copied().ok_or(Error::SerdeDeCustom)
    }

    #[inline(always)]
    fn option(&mut self) -> Result<bool, Error> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Error::DeserializeBadOption),
        }
    }

    /// A string's bytes (not yet known to be UTF-8).
    #[inline(always)]
    fn str_bytes(&mut self) -> Result<&'a [u8], Error> {
        let n = self.len()?;
        self.take(n)
    }

    #[inline(always)]
    fn ip(&mut self) -> Result<IpAddr, Error> {
        match self.u32()? {
            0 => Ok(IpAddr::V4(Ipv4Addr::from(self.array::<4>()?))),
            1 => Ok(IpAddr::V6(Ipv6Addr::from(self.array::<16>()?))),
            _ => Err(Error::SerdeDeCustom),
        }
    }

    #[inline(always)]
    fn dir(&mut self) -> Result<DirStats, Error> {
        Ok(DirStats {
            pkts: self.u64()?,
            ip_bytes: self.u64()?,
            payload_bytes: self.u64()?,
            tcp_flags: TcpFlags(self.byte()?),
        })
    }

    #[inline(always)]
    fn prior_dir(&mut self) -> Result<PriorDir, Error> {
        Ok(PriorDir {
            pkts: self.u64()?,
            ip_bytes: self.u64()?,
            tcp_flags: TcpFlags(self.byte()?),
            commands: [self.u32()?, self.u32()?, self.u32()?, self.u32()?],
        })
    }

    #[inline(always)]
    fn span(&mut self) -> Result<Option<Span<u8>>, Error> {
        Ok(if self.option()? {
            Some(Span {
                min: self.byte()?,
                max: self.byte()?,
            })
        } else {
            None
        })
    }

    /// A value through postcard's serde path, from where this reader is.
    fn serde<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, Error> {
        let rest = &self.b[self.p..];
        let (v, tail) = postcard::take_from_bytes::<T>(rest)?;
        self.p += rest.len() - tail.len();
        Ok(v)
    }

    /// A record: every field read (and checked) first, the record assembled once at the end,
    /// so it is not moved through a result per field.
    #[inline(always)]
    fn record(&mut self) -> Result<FlowRecord, Error> {
        let sensor_id =
            intern::sensor_id_utf8(self.str_bytes()?).ok_or(Error::DeserializeBadUtf8)?;
        let flow_id = self.u64()?;
        let orig_addr = self.ip()?;
        let orig_port = self.u16()?;
        let resp_addr = self.ip()?;
        let resp_port = self.u16()?;
        let ip_proto = self.byte()?;
        let first_ns = self.u64()?;
        let last_ns = self.u64()?;
        let orig = self.dir()?;
        let resp = self.dir()?;
        let conn_state = self.variant(&CONN_STATES)?;
        let asset = if self.option()? {
            let id = intern::asset_id_utf8(self.str_bytes()?).ok_or(Error::DeserializeBadUtf8)?;
            Some(AssetMatch {
                id: AssetId(id),
                side: self.variant(&SIDES)?,
            })
        } else {
            None
        };
        let ics = if self.option()? {
            Some(Box::new(self.serde::<IcsSummary>()?))
        } else {
            None
        };
        let end_reason = self.variant(&EndReason::ALL)?;
        let export = if self.option()? {
            Some(ExportOrigin {
                source: self.variant(&SOURCES)?,
                exporter: self.ip()?,
                domain: self.u32()?,
                sampling_rate: self.u32()?,
            })
        } else {
            None
        };
        let prior = if self.option()? {
            Some(Prior {
                reports: self.u32()?,
                since_ns: self.u64()?,
                orig: self.prior_dir()?,
                resp: self.prior_dir()?,
            })
        } else {
            None
        };
        let attempts = if self.option()? {
            Some(Box::new(self.serde::<Attempts>()?))
        } else {
            None
        };
        let orig_ttl = self.span()?;
        let resp_ttl = self.span()?;
        Ok(FlowRecord {
            sensor_id,
            flow_id,
            orig_addr,
            orig_port,
            resp_addr,
            resp_port,
            ip_proto,
            first_ns,
            last_ns,
            orig,
            resp,
            conn_state,
            asset,
            ics,
            end_reason,
            export,
            prior,
            attempts,
            orig_ttl,
            resp_ttl,
        })
    }
}

/// Reads one record from the start of `bytes`: what `postcard::take_from_bytes` gives, the
/// record and the bytes after it, or the error it gives.
#[inline]
pub fn decode(bytes: &[u8]) -> Result<(FlowRecord, &[u8]), Error> {
    let mut r = In { b: bytes, p: 0 };
    let rec = r.record()?;
    Ok((rec, &bytes[r.p..]))
}

/// Like [`decode`], appending the record to `out` (without moving it through a result) and
/// returning the bytes after it.
#[inline]
pub fn decode_into<'a>(bytes: &'a [u8], out: &mut Vec<FlowRecord>) -> Result<&'a [u8], Error> {
    let mut r = In { b: bytes, p: 0 };
    out.push(r.record()?);
    Ok(&bytes[r.p..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use normwatch_model::flow::ExportOrigin;
    use normwatch_model::{Cardinality, CommandClass, IcsProto};
    use std::sync::Arc;

    /// splitmix64: a fixed seed gives the same records on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn coin(&mut self) -> bool {
            self.next() & 1 == 1
        }

        fn pick<T: Clone>(&mut self, from: &[T]) -> T {
            from[self.below(from.len() as u64) as usize].clone()
        }

        /// Varint boundaries half the time, else a random value of random width.
        fn u64(&mut self) -> u64 {
            const EDGES: [u64; 15] = [
                0,
                1,
                127,
                128,
                16_383,
                16_384,
                (1 << 21) - 1,
                1 << 21,
                u32::MAX as u64,
                1 << 32,
                (1 << 56) - 1,
                1 << 56,
                (1 << 63) - 1,
                1 << 63,
                u64::MAX,
            ];
            if self.coin() {
                self.pick(&EDGES)
            } else {
                self.next() >> self.below(64)
            }
        }

        fn u32(&mut self) -> u32 {
            const EDGES: [u32; 9] = [
                0,
                127,
                128,
                16_383,
                16_384,
                (1 << 28) - 1,
                1 << 28,
                u32::MAX - 1,
                u32::MAX,
            ];
            if self.coin() {
                self.pick(&EDGES)
            } else {
                (self.next() >> self.below(64)) as u32
            }
        }

        fn u16(&mut self) -> u16 {
            const EDGES: [u16; 7] = [0, 1, 127, 128, 16_383, 16_384, u16::MAX];
            if self.coin() {
                self.pick(&EDGES)
            } else {
                (self.next() >> self.below(64)) as u16
            }
        }

        fn ip(&mut self) -> IpAddr {
            if self.below(4) == 0 {
                IpAddr::V6(Ipv6Addr::from(
                    (u128::from(self.next()) << 64) | u128::from(self.next()),
                ))
            } else {
                IpAddr::V4(Ipv4Addr::from(self.next() as u32))
            }
        }

        fn dir(&mut self) -> DirStats {
            DirStats {
                pkts: self.u64(),
                ip_bytes: self.u64(),
                payload_bytes: self.u64(),
                tcp_flags: TcpFlags(self.next() as u8),
            }
        }

        fn prior_dir(&mut self) -> PriorDir {
            PriorDir {
                pkts: self.u64(),
                ip_bytes: self.u64(),
                tcp_flags: TcpFlags(self.next() as u8),
                commands: [self.u32(), self.u32(), self.u32(), self.u32()],
            }
        }

        fn span(&mut self) -> Option<Span<u8>> {
            self.coin().then(|| Span {
                min: self.next() as u8,
                max: self.next() as u8,
            })
        }

        fn record(&mut self, texts: &[Arc<str>]) -> FlowRecord {
            FlowRecord {
                sensor_id: self.pick(texts),
                flow_id: self.u64(),
                orig_addr: self.ip(),
                orig_port: self.u16(),
                resp_addr: self.ip(),
                resp_port: self.u16(),
                ip_proto: self.next() as u8,
                first_ns: self.u64(),
                last_ns: self.u64(),
                orig: self.dir(),
                resp: self.dir(),
                conn_state: self.pick(&CONN_STATES),
                asset: self.coin().then(|| AssetMatch {
                    id: AssetId(self.pick(texts)),
                    side: self.pick(&SIDES),
                }),
                ics: (self.below(4) == 0).then(|| {
                    let mut s = IcsSummary::new(self.pick(&IcsProto::ALL));
                    for _ in 0..self.below(4) {
                        s.orig
                            .command(self.pick(&CommandClass::ALL), self.next() as u8);
                    }
                    s.resp.malformed = self.u32();
                    Box::new(s)
                }),
                end_reason: self.pick(&EndReason::ALL),
                export: self.coin().then(|| ExportOrigin {
                    source: self.pick(&SOURCES),
                    exporter: self.ip(),
                    domain: self.u32(),
                    sampling_rate: self.u32(),
                }),
                prior: self.coin().then(|| Prior {
                    reports: self.u32(),
                    since_ns: self.u64(),
                    orig: self.prior_dir(),
                    resp: self.prior_dir(),
                }),
                attempts: (self.below(6) == 0).then(|| {
                    let mut sources = Cardinality::default();
                    let n = self.below(5);
                    for _ in 0..n {
                        sources.insert(self.next());
                    }
                    Box::new(Attempts {
                        count: self.u64(),
                        sources,
                        sample: (0..n).map(|_| self.ip()).collect(),
                        ttl: self.span(),
                        sport: self.coin().then(|| Span {
                            min: self.u16(),
                            max: self.u16(),
                        }),
                    })
                }),
                orig_ttl: self.span(),
                resp_ttl: self.span(),
            }
        }
    }

    /// Ids of every length class: empty, one-byte and two-byte length varints, non-ASCII.
    fn texts() -> Vec<Arc<str>> {
        vec![
            Arc::from(""),
            Arc::from("site-1"),
            Arc::from("grid-scada"),
            Arc::from("capteur-é-∑"),
            Arc::from("x".repeat(127).as_str()),
            Arc::from("y".repeat(128).as_str()),
            Arc::from("z".repeat(300).as_str()),
        ]
    }

    fn records(seed: u64, n: usize) -> Vec<FlowRecord> {
        let texts = texts();
        let mut rng = Rng(seed);
        (0..n).map(|_| rng.record(&texts)).collect()
    }

    fn serde_decode(b: &[u8]) -> Result<(FlowRecord, &[u8]), Error> {
        postcard::take_from_bytes::<FlowRecord>(b)
    }

    fn hand_bytes(r: &FlowRecord) -> Vec<u8> {
        let mut b = Vec::new();
        encode(r, &mut b).unwrap();
        b
    }

    #[test]
    fn generated_records_cover_every_variant_and_option() {
        let rs = records(1, 5000);
        let mut seen = std::collections::HashSet::new();
        for r in &rs {
            seen.insert(format!("conn {:?}", r.conn_state));
            seen.insert(format!("end {:?}", r.end_reason));
            seen.insert(format!("v4 {}", r.orig_addr.is_ipv4()));
            seen.insert(format!("asset {:?}", r.asset.as_ref().map(|a| a.side)));
            seen.insert(format!("ics {}", r.ics.is_some()));
            seen.insert(format!("export {:?}", r.export.map(|e| e.source)));
            seen.insert(format!("prior {}", r.prior.is_some()));
            seen.insert(format!("attempts {}", r.attempts.is_some()));
            seen.insert(format!(
                "ttl {} {}",
                r.orig_ttl.is_some(),
                r.resp_ttl.is_some()
            ));
            seen.insert(format!("flow id {}", r.flow_id));
            seen.insert(format!("port {}", r.orig_port));
        }
        let want =
            CONN_STATES.len() + EndReason::ALL.len() + 2 + 3 + 2 + SOURCES.len() + 1 + 2 + 2 + 4;
        let kinds = seen
            .iter()
            .filter(|s| !s.starts_with("flow id") && !s.starts_with("port"))
            .count();
        assert_eq!(kinds, want, "{seen:?}");
        for v in [0, 127, 128, 16_383, 16_384, u64::from(u32::MAX), u64::MAX] {
            assert!(seen.contains(&format!("flow id {v}")), "flow id {v}");
        }
        for v in [0, 127, 128, 16_383, 16_384, u16::MAX] {
            assert!(seen.contains(&format!("port {v}")), "port {v}");
        }
    }

    /// The hand encoder writes postcard's bytes, and the hand decoder reads them back to the
    /// record, leaving what follows.
    #[test]
    fn encoding_is_postcards_and_decoding_round_trips() {
        for (i, r) in records(2, 5000).iter().enumerate() {
            let serde = postcard::to_allocvec(r).unwrap();
            let mut hand = vec![0xAA];
            encode(r, &mut hand).unwrap();
            assert_eq!(hand[1..], serde[..], "record {i}: {r:?}");
            hand.extend_from_slice(&[7, 8]);
            let (back, rest) = decode(&hand[1..]).unwrap();
            assert_eq!(&back, r, "record {i}");
            assert_eq!(rest, [7, 8]);
        }
    }

    /// Every field at its longest encoding (within the room the encoder makes), and at its
    /// shortest.
    #[test]
    fn extreme_records_match_postcard() {
        let mut r = records(8, 1).remove(0);
        let ip6 = IpAddr::V6(Ipv6Addr::from(u128::MAX));
        let big = DirStats {
            pkts: u64::MAX,
            ip_bytes: u64::MAX,
            payload_bytes: u64::MAX,
            tcp_flags: TcpFlags(0xff),
        };
        let big_prior = PriorDir {
            pkts: u64::MAX,
            ip_bytes: u64::MAX,
            tcp_flags: TcpFlags(0xff),
            commands: [u32::MAX; 4],
        };
        let mut max = FlowRecord {
            sensor_id: Arc::from("s".repeat(70_000).as_str()),
            flow_id: u64::MAX,
            orig_addr: ip6,
            orig_port: u16::MAX,
            resp_addr: ip6,
            resp_port: u16::MAX,
            ip_proto: u8::MAX,
            first_ns: u64::MAX,
            last_ns: u64::MAX,
            orig: big,
            resp: big,
            conn_state: ConnState::OTH,
            asset: Some(AssetMatch {
                id: AssetId(Arc::from("a".repeat(20_000).as_str())),
                side: Side::Resp,
            }),
            ics: None,
            end_reason: EndReason::Attempts,
            export: Some(ExportOrigin {
                source: RecordSource::Sflow,
                exporter: ip6,
                domain: u32::MAX,
                sampling_rate: u32::MAX,
            }),
            prior: Some(Prior {
                reports: u32::MAX,
                since_ns: u64::MAX,
                orig: big_prior,
                resp: big_prior,
            }),
            attempts: None,
            orig_ttl: Some(Span::of(u8::MAX)),
            resp_ttl: Some(Span::of(u8::MAX)),
        };
        let min = FlowRecord {
            sensor_id: Arc::from(""),
            flow_id: 0,
            orig_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            orig_port: 0,
            resp_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            resp_port: 0,
            ip_proto: 0,
            first_ns: 0,
            last_ns: 0,
            orig: DirStats::default(),
            resp: DirStats::default(),
            conn_state: ConnState::S0,
            asset: None,
            ics: None,
            end_reason: EndReason::IdleTimeout,
            export: None,
            prior: None,
            attempts: None,
            orig_ttl: None,
            resp_ttl: None,
        };
        r.ics = r
            .ics
            .or_else(|| Some(Box::new(IcsSummary::new(IcsProto::Enip))));
        let with_nested = FlowRecord {
            ics: r.ics.clone(),
            attempts: records(9, 200).into_iter().find_map(|r| r.attempts),
            ..max.clone()
        };
        max.sensor_id = Arc::from("s".repeat(127).as_str());
        for r in [&max, &min, &with_nested] {
            let b = hand_bytes(r);
            assert_eq!(b, postcard::to_allocvec(r).unwrap());
            assert_eq!(decode(&b).unwrap(), (r.clone(), &[][..]));
        }
        assert_eq!(hand_bytes(&min).len(), 34);
    }

    /// Consecutive equal ids decode to one allocation, shared with the serde path's.
    #[test]
    fn equal_consecutive_ids_share_one_allocation() {
        let rs = records(3, 2);
        let mut a = rs[0].clone();
        a.sensor_id = Arc::from("site-9");
        a.asset = Some(AssetMatch {
            id: AssetId(Arc::from("grid")),
            side: Side::Resp,
        });
        let mut b = a.clone();
        b.sensor_id = Arc::from("site-9");
        b.asset = Some(AssetMatch {
            id: AssetId(Arc::from("grid")),
            side: Side::Orig,
        });
        let mut c = rs[1].clone();
        c.sensor_id = Arc::from("site-8");
        c.asset = Some(AssetMatch {
            id: AssetId(Arc::from("water")),
            side: Side::Resp,
        });
        let (a2, _) = decode(&hand_bytes(&a)).unwrap();
        let (b2, _) = decode(&hand_bytes(&b)).unwrap();
        let (b3, _) = serde_decode(&hand_bytes(&b)).unwrap();
        let (c2, _) = decode(&hand_bytes(&c)).unwrap();
        let id = |r: &FlowRecord| Arc::clone(&r.asset.as_ref().unwrap().id.0);
        assert!(Arc::ptr_eq(&a2.sensor_id, &b2.sensor_id));
        assert!(Arc::ptr_eq(&a2.sensor_id, &b3.sensor_id));
        assert!(Arc::ptr_eq(&id(&a2), &id(&b2)));
        assert!(Arc::ptr_eq(&id(&a2), &id(&b3)));
        assert!(!Arc::ptr_eq(&b2.sensor_id, &c2.sensor_id));
        assert!(!Arc::ptr_eq(&id(&b2), &id(&c2)));
        assert_eq!((&*c2.sensor_id, id(&c2).as_ref()), ("site-8", "water"));
    }

    /// Both decoders on the same bytes: the same record and rest, or the same error.
    fn agree(bytes: &[u8], what: &dyn Fn() -> String) {
        let hand = decode(bytes);
        let serde = serde_decode(bytes);
        assert_eq!(hand, serde, "{}: {bytes:?}", what());
    }

    /// Every truncation of a record (and of a record followed by another) is refused as
    /// postcard refuses it.
    #[test]
    fn truncations_are_refused_as_postcard_refuses_them() {
        let rs = records(4, 400);
        for (i, pair) in rs.windows(2).enumerate() {
            let mut b = hand_bytes(&pair[0]);
            let first = b.len();
            b.extend_from_slice(&hand_bytes(&pair[1]));
            for n in 0..b.len() {
                agree(&b[..n], &|| format!("record {i} cut at {n} of {first}"));
            }
        }
    }

    /// Every value of every byte of a record, one at a time: both decoders accept the same
    /// bytes (the same record, the same rest) and refuse the same with the same error.
    /// Covers unknown variant indexes, option tags other than 0 and 1, varints too long or
    /// too large for their type, non-canonical varints, invalid UTF-8 and lengths past the end.
    #[test]
    fn every_byte_substitution_is_judged_as_postcard_judges_it() {
        let rs = records(5, 400);
        // The records without the big nested parts (decoded by postcard itself anyway) and a
        // few with them.
        let picked = rs
            .iter()
            .filter(|r| r.attempts.is_none() && r.ics.is_none())
            .take(16)
            .chain(rs.iter().filter(|r| r.ics.is_some()).take(2))
            .chain(rs.iter().filter(|r| r.attempts.is_some()).take(1));
        for (i, r) in picked.enumerate() {
            let mut b = hand_bytes(r);
            b.push(0x55);
            for at in 0..b.len() {
                let was = b[at];
                for v in 0..=255u8 {
                    b[at] = v;
                    agree(&b, &|| format!("record {i} byte {at} = {v}"));
                }
                b[at] = was;
            }
        }
    }

    /// Random damage (bytes replaced, inserted, removed, several at once) to many records.
    #[test]
    fn random_mutations_are_judged_as_postcard_judges_them() {
        let rs = records(6, 3000);
        let mut rng = Rng(66);
        for (i, r) in rs.iter().enumerate() {
            let clean = hand_bytes(r);
            for m in 0..16 {
                let mut b = clean.clone();
                for _ in 0..=rng.below(3) {
                    let at = rng.below(b.len() as u64 + 1) as usize;
                    match rng.below(4) {
                        0 if at < b.len() => b[at] ^= 1 << rng.below(8),
                        1 if at < b.len() => b[at] = rng.next() as u8,
                        2 if at < b.len() => {
                            b.remove(at);
                        }
                        _ => b.insert(at, rng.next() as u8),
                    }
                }
                agree(&b, &|| format!("record {i} mutation {m}"));
            }
        }
    }

    /// Hand-made malformed fields, each where postcard rejects it.
    #[test]
    fn malformed_fields_are_refused_with_postcards_error() {
        let mut r = records(7, 1).remove(0);
        r.sensor_id = Arc::from("s");
        r.flow_id = 1;
        let b = hand_bytes(&r);
        // sensor id: length 1, "s"; the flow id's varint starts at byte 2.
        assert_eq!(b[..3], [1, b's', 1]);
        let with = |at: usize, drop: usize, insert: &[u8]| {
            let mut c = b.clone();
            c.splice(at..at + drop, insert.iter().copied());
            c
        };
        let cases: [(Vec<u8>, Option<Error>); 8] = [
            // Ten bytes whose last holds only bit 63: u64 accepts it.
            (
                with(
                    2,
                    1,
                    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                ),
                None,
            ),
            // ... but not bit 64.
            (
                with(
                    2,
                    1,
                    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                ),
                Some(Error::DeserializeBadVarint),
            ),
            // An eleventh byte.
            (with(2, 1, &[0x80; 10]), Some(Error::DeserializeBadVarint)),
            // A non-canonical 1 (two bytes) is accepted, as postcard does.
            (with(2, 1, &[0x81, 0x00]), None),
            // Sensor id not UTF-8.
            (with(1, 1, &[0xff]), Some(Error::DeserializeBadUtf8)),
            // Sensor id longer than the record.
            (
                with(0, 1, &[0xff, 0x7f]),
                Some(Error::DeserializeUnexpectedEnd),
            ),
            // An address family that is neither V4 nor V6.
            (with(3, 1, &[2]), Some(Error::SerdeDeCustom)),
            // Nothing at all.
            (Vec::new(), Some(Error::DeserializeUnexpectedEnd)),
        ];
        for (i, (bytes, err)) in cases.iter().enumerate() {
            let hand = decode(bytes);
            assert_eq!(hand, serde_decode(bytes), "case {i}");
            assert_eq!(hand.err(), *err, "case {i}");
        }
    }
}
