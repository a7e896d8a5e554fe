//! NetFlow v9 (RFC 3954) and IPFIX (RFC 7011): template-based exports.
//!
//! Templates are kept per transport session (the exporter's address and port, and the
//! version) and observation domain (v9 source id), since template ids are only unique
//! there. A data set whose template is not known yet is copied and held, bounded in sets,
//! bytes and time; the template's arrival decodes it. A template with a known id replaces the
//! old one (refresh, or a changed layout after an exporter restart); an IPFIX template with
//! no fields withdraws it. Options records that announce a sampling interval (globally or per
//! sampler id) set the rate used for later data of their domain.

use crate::netflow5::uptime_to_ns;
use crate::read::{uint, Cursor};
use crate::record::{push, Unidir};
use crate::{Ctx, DropReason, Exported};
use hashbrown::HashMap;
use normwatch_model::flow::RecordSource;
use normwatch_model::{EndReason, Span};
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const V9_HEADER_LEN: usize = 20;
pub const IPFIX_HEADER_LEN: usize = 16;
/// Fields a template may have; real ones have a few dozen.
pub const MAX_FIELDS: usize = 512;
/// IPFIX variable-length field marker.
const VARLEN: u16 = 0xffff;
/// Key for a domain-wide sampling rate (no sampler id).
const ANY_SAMPLER: u32 = u32::MAX;
/// Seconds between 1900 (NTP era) and 1970.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

#[derive(Clone, Copy, Debug)]
struct Field {
    id: u16,
    /// Enterprise number (0: IANA).
    pen: u32,
    len: u16,
}

#[derive(Clone, Debug)]
struct Template {
    fields: Box<[Field]>,
    /// Leading scope fields of an options template (v9 scopes are not information elements).
    scope: usize,
    options: bool,
    /// Bytes of the shortest record (variable-length fields count their one length byte).
    min_len: usize,
}

/// The export header as data decoding needs it.
#[derive(Clone, Copy, Debug)]
struct Header {
    ipfix: bool,
    export_ns: u64,
    /// v9: uptime (ms) at export, which record times are relative to.
    uptime_ms: u32,
}

#[derive(Debug)]
struct Held {
    at_ns: u64,
    domain: u32,
    set_id: u16,
    hdr: Header,
    body: Vec<u8>,
}

/// One transport session's templates, held data and announced sampling.
#[derive(Debug, Default)]
pub(crate) struct Session {
    templates: HashMap<(u32, u16), Template>,
    held: VecDeque<Held>,
    held_bytes: usize,
    /// (domain, sampler id or `ANY_SAMPLER`) → rate.
    rates: HashMap<(u32, u32), u32>,
    /// IPFIX: domain → systemInitTimeMilliseconds, for uptime-relative record times.
    init_ms: HashMap<u32, u64>,
    /// Bytes of the templates' field lists.
    field_bytes: usize,
    pub(crate) last_ns: u64,
    /// When the session last produced a record (0: never).
    pub(crate) last_useful_ns: u64,
}

/// Bytes a hash table of `capacity` entries of `T` takes (hashbrown: one control byte each).
fn table_bytes<T>(capacity: usize) -> usize {
    capacity * (size_of::<T>() + 1)
}

impl Session {
    pub(crate) fn held_sets(&self) -> usize {
        self.held.len()
    }

    /// Bytes the session holds: its tables at their capacity, field lists and held data.
    pub(crate) fn bytes(&self) -> usize {
        size_of::<Self>()
            + table_bytes::<((u32, u16), Template)>(self.templates.capacity())
            + self.field_bytes
            + self.held.capacity() * size_of::<Held>()
            + self.held_bytes
            + table_bytes::<((u32, u32), u32)>(self.rates.capacity())
            + table_bytes::<(u32, u64)>(self.init_ms.capacity())
    }

    pub(crate) fn expire(&mut self, now_ns: u64, hold_ns: u64, stats: &mut crate::ExportStats) {
        while let Some(h) = self.held.front() {
            if now_ns.saturating_sub(h.at_ns) < hold_ns && now_ns != u64::MAX {
                break;
            }
            self.held_bytes -= h.body.len();
            self.held.pop_front();
            stats.drop(DropReason::MissingTemplate);
        }
    }

    pub(crate) fn decode(
        &mut self,
        ctx: &mut Ctx<'_>,
        exporter: IpAddr,
        version: u16,
        data: &[u8],
        now_ns: u64,
        out: &mut Vec<Exported>,
    ) -> Result<(), DropReason> {
        self.last_ns = now_ns;
        self.expire(now_ns, ctx.cfg.hold_ns, ctx.stats);
        let ipfix = version == 10;
        let mut c = Cursor::new(data);
        let (hdr, domain, body) = if ipfix {
            let h = c.take(IPFIX_HEADER_LEN).ok_or(DropReason::Truncated)?;
            let mut h = Cursor::new(h);
            let _v = h.u16();
            let len = usize::from(h.u16().unwrap_or(0));
            let secs = h.u32().unwrap_or(0);
            let _seq = h.u32();
            let domain = h.u32().unwrap_or(0);
            if len < IPFIX_HEADER_LEN {
                return Err(DropReason::BadSet);
            }
            if len > data.len() {
                return Err(DropReason::Truncated);
            }
            let hdr = Header {
                ipfix,
                export_ns: u64::from(secs) * 1_000_000_000,
                uptime_ms: 0,
            };
            (hdr, domain, &data[IPFIX_HEADER_LEN..len])
        } else {
            let h = c.take(V9_HEADER_LEN).ok_or(DropReason::Truncated)?;
            let mut h = Cursor::new(h);
            let _v = h.u16();
            let _count = h.u16();
            let uptime_ms = h.u32().unwrap_or(0);
            let secs = h.u32().unwrap_or(0);
            let _seq = h.u32();
            let domain = h.u32().unwrap_or(0);
            let hdr = Header {
                ipfix,
                export_ns: u64::from(secs) * 1_000_000_000,
                uptime_ms,
            };
            (hdr, domain, c.rest())
        };
        let (tmpl_set, opt_set) = if ipfix { (2, 3) } else { (0, 1) };
        let mut sets = Cursor::new(body);
        while sets.remaining() > 0 {
            if sets.remaining() < 4 {
                // v9 may pad the datagram; IPFIX may not.
                return if ipfix {
                    Err(DropReason::BadSet)
                } else {
                    Ok(())
                };
            }
            let id = sets.u16().unwrap_or(0);
            let len = usize::from(sets.u16().unwrap_or(0));
            if len < 4 {
                return Err(DropReason::BadSet);
            }
            let set = sets.take(len - 4).ok_or(DropReason::Truncated)?;
            if id == tmpl_set || id == opt_set {
                let r = self.templates(ctx, ipfix, id == opt_set, domain, set);
                // Templates learned before a fault in the same set still resolve held data.
                self.resolve(ctx, exporter, domain, out);
                r?;
            } else if id >= 256 {
                if self.templates.contains_key(&(domain, id)) {
                    self.data(ctx, exporter, hdr, domain, id, set, out)?;
                } else {
                    self.hold(ctx, now_ns, hdr, domain, id, set);
                }
            } else {
                // Reserved set ids: skipped, not fatal, as the RFCs ask.
            }
        }
        Ok(())
    }

    fn hold(
        &mut self,
        ctx: &mut Ctx<'_>,
        now_ns: u64,
        hdr: Header,
        domain: u32,
        id: u16,
        set: &[u8],
    ) {
        let (max_sets, max_bytes) = (ctx.cfg.hold_sets, ctx.cfg.hold_bytes);
        // What the session's budget leaves for held data beside everything else it holds
        // (the queue's own slots grow by doubling).
        let slots = (self.held.len() + 1).next_power_of_two() * size_of::<Held>();
        let fixed = self.bytes() - self.held_bytes - self.held.capacity() * size_of::<Held>();
        let max_bytes = max_bytes.min(ctx.budget.saturating_sub(fixed + slots));
        if max_sets == 0 || set.len() > max_bytes {
            ctx.stats.drop(DropReason::MissingTemplate);
            return;
        }
        while self.held.len() >= max_sets || self.held_bytes + set.len() > max_bytes {
            let Some(old) = self.held.pop_front() else {
                break;
            };
            self.held_bytes -= old.body.len();
            ctx.stats.drop(DropReason::MissingTemplate);
        }
        self.held_bytes += set.len();
        ctx.stats.held += 1;
        self.held.push_back(Held {
            at_ns: now_ns,
            domain,
            set_id: id,
            hdr,
            body: set.to_vec(),
        });
    }

    /// Decodes the held sets of `domain` whose template is now known, oldest first.
    fn resolve(
        &mut self,
        ctx: &mut Ctx<'_>,
        exporter: IpAddr,
        domain: u32,
        out: &mut Vec<Exported>,
    ) {
        if self.held.is_empty() {
            return;
        }
        let mut i = 0;
        while i < self.held.len() {
            let h = &self.held[i];
            if h.domain != domain || !self.templates.contains_key(&(domain, h.set_id)) {
                i += 1;
                continue;
            }
            let h = self.held.remove(i).expect("index checked");
            self.held_bytes -= h.body.len();
            ctx.stats.resolved += 1;
            if let Err(e) = self.data(ctx, exporter, h.hdr, domain, h.set_id, &h.body, out) {
                ctx.stats.drop(e);
            }
        }
    }

    fn templates(
        &mut self,
        ctx: &mut Ctx<'_>,
        ipfix: bool,
        options: bool,
        domain: u32,
        set: &[u8],
    ) -> Result<(), DropReason> {
        let mut c = Cursor::new(set);
        // A record header is at least 4 bytes; less is padding.
        while c.remaining() >= 4 {
            let tid = c.u16().unwrap_or(0);
            if tid == 0 && set[set.len() - c.remaining() - 2..].iter().all(|b| *b == 0) {
                return Ok(());
            }
            let (scope, total) = if options && !ipfix {
                let scope_len = usize::from(c.u16().ok_or(DropReason::Truncated)?);
                let opt_len = usize::from(c.u16().ok_or(DropReason::Truncated)?);
                if scope_len % 4 != 0 || opt_len % 4 != 0 {
                    return Err(DropReason::BadTemplate);
                }
                (scope_len / 4, scope_len / 4 + opt_len / 4)
            } else {
                let count = usize::from(c.u16().unwrap_or(0));
                // A withdrawal has no scope count, even for an options template.
                let scope = if options && count > 0 {
                    usize::from(c.u16().ok_or(DropReason::Truncated)?)
                } else {
                    0
                };
                (scope, count)
            };
            if tid < 256 {
                return Err(DropReason::BadTemplate);
            }
            if total == 0 {
                if ipfix {
                    // Withdrawal.
                    if let Some(t) = self.templates.remove(&(domain, tid)) {
                        self.field_bytes -= t.fields.len() * size_of::<Field>();
                        ctx.stats.withdrawn += 1;
                    }
                    continue;
                }
                return Err(DropReason::BadTemplate);
            }
            if total > MAX_FIELDS || scope > total || (options && scope == 0) {
                return Err(DropReason::BadTemplate);
            }
            let mut fields = Vec::with_capacity(total);
            let mut min_len = 0usize;
            for _ in 0..total {
                let raw = c.u16().ok_or(DropReason::Truncated)?;
                let len = c.u16().ok_or(DropReason::Truncated)?;
                let (id, pen) = if ipfix && raw & 0x8000 != 0 {
                    (raw & 0x7fff, c.u32().ok_or(DropReason::Truncated)?)
                } else {
                    (raw, 0)
                };
                let len = if !ipfix && len == VARLEN { 0 } else { len };
                min_len += if ipfix && len == VARLEN {
                    1
                } else {
                    usize::from(len)
                };
                fields.push(Field { id, pen, len });
            }
            if min_len == 0 {
                return Err(DropReason::BadTemplate);
            }
            let key = (domain, tid);
            let new = !self.templates.contains_key(&key);
            if new && self.templates.len() >= ctx.cfg.max_templates {
                return Err(DropReason::TooManyTemplates);
            }
            let cost = fields.len() * size_of::<Field>();
            // A full table doubles: the new one is allocated while the old one still is.
            let growth = if new && self.templates.len() == self.templates.capacity() {
                table_bytes::<((u32, u16), Template)>(self.templates.capacity().max(4) * 2)
            } else {
                0
            };
            let replaced = self
                .templates
                .get(&key)
                .map_or(0, |t| t.fields.len() * size_of::<Field>());
            if self.bytes() - replaced + cost + growth > ctx.budget {
                return Err(DropReason::MemoryBound);
            }
            self.field_bytes = self.field_bytes - replaced + cost;
            ctx.stats.templates += 1;
            self.templates.insert(
                key,
                Template {
                    fields: fields.into_boxed_slice(),
                    scope,
                    options,
                    min_len,
                },
            );
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn data(
        &mut self,
        ctx: &mut Ctx<'_>,
        exporter: IpAddr,
        hdr: Header,
        domain: u32,
        id: u16,
        set: &[u8],
        out: &mut Vec<Exported>,
    ) -> Result<(), DropReason> {
        let Session {
            templates,
            rates,
            init_ms,
            last_ns,
            last_useful_ns,
            ..
        } = self;
        let Some(t) = templates.get(&(domain, id)) else {
            return Err(DropReason::MissingTemplate);
        };
        let source = if hdr.ipfix {
            RecordSource::Ipfix
        } else {
            RecordSource::NetflowV9
        };
        let mut c = Cursor::new(set);
        while c.remaining() >= t.min_len {
            let mut f = Fields::default();
            for (i, field) in t.fields.iter().enumerate() {
                let len = if hdr.ipfix && field.len == VARLEN {
                    match c.u8().ok_or(DropReason::BadSet)? {
                        255 => usize::from(c.u16().ok_or(DropReason::BadSet)?),
                        n => usize::from(n),
                    }
                } else {
                    usize::from(field.len)
                };
                let v = c.take(len).ok_or(DropReason::BadSet)?;
                if field.pen == 0 && !(t.options && !hdr.ipfix && i < t.scope) {
                    f.set(field.id, v);
                }
            }
            if t.options {
                options_record(&f, domain, rates, init_ms, ctx.cfg.max_templates);
                continue;
            }
            let init = f.init_ms.or_else(|| init_ms.get(&domain).copied());
            let Some(u) = f.flow(&hdr, init) else {
                continue;
            };
            let announced = f
                .rate()
                .or_else(|| f.sampler.and_then(|s| rates.get(&(domain, s)).copied()))
                .or_else(|| rates.get(&(domain, ANY_SAMPLER)).copied());
            let rate = ctx.rate(exporter, announced);
            push(ctx, &u, source, exporter, domain, rate, out);
            *last_useful_ns = *last_ns;
        }
        Ok(())
    }
}

/// Keeps what an options record says about sampling and the exporter's clock.
fn options_record(
    f: &Fields,
    domain: u32,
    rates: &mut HashMap<(u32, u32), u32>,
    init_ms: &mut HashMap<u32, u64>,
    cap: usize,
) {
    if let Some(rate) = f.rate() {
        let key = (domain, f.sampler.unwrap_or(ANY_SAMPLER));
        if rates.len() < cap || rates.contains_key(&key) {
            rates.insert(key, rate);
        }
    }
    if let Some(ms) = f.init_ms {
        if init_ms.len() < cap || init_ms.contains_key(&domain) {
            init_ms.insert(domain, ms);
        }
    }
}

/// The information elements a flow record is made of (IANA ids, shared by v9 and IPFIX).
#[derive(Debug, Default)]
struct Fields {
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    sport: u16,
    dport: u16,
    proto: u8,
    flags: u8,
    bytes: Option<u64>,
    pkts: Option<u64>,
    icmp: Option<u16>,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
    start_up: Option<u64>,
    end_up: Option<u64>,
    start_ns: Option<u64>,
    end_ns: Option<u64>,
    start_delta_us: Option<u64>,
    end_delta_us: Option<u64>,
    init_ms: Option<u64>,
    interval: Option<u64>,
    space: Option<u64>,
    sampler: Option<u32>,
    end_reason: Option<u8>,
    /// minimumTTL and maximumTTL (52, 53: the same ids in NetFlow v9).
    min_ttl: Option<u8>,
    max_ttl: Option<u8>,
}

fn addr4(v: &[u8]) -> Option<IpAddr> {
    <[u8; 4]>::try_from(v)
        .ok()
        .map(|a| IpAddr::V4(Ipv4Addr::from(a)))
}

fn addr6(v: &[u8]) -> Option<IpAddr> {
    <[u8; 16]>::try_from(v)
        .ok()
        .map(|a| IpAddr::V6(Ipv6Addr::from(a)))
}

/// An NTP timestamp (seconds since 1900, binary fraction) as ns since 1970.
fn ntp_ns(v: u64, micro: bool) -> u64 {
    let secs = (v >> 32).saturating_sub(NTP_UNIX_OFFSET);
    // RFC 7011: the fraction's 11 low bits are ignored for microseconds.
    let frac = if micro {
        v & 0xffff_f800
    } else {
        v & 0xffff_ffff
    };
    secs * 1_000_000_000 + ((frac * 1_000_000_000) >> 32)
}

impl Fields {
    fn set(&mut self, id: u16, v: &[u8]) {
        if v.is_empty() {
            return;
        }
        let n = || uint(v);
        match id {
            1 | 85 => self.bytes = Some(n()),
            2 | 86 => self.pkts = Some(n()),
            4 => self.proto = n() as u8,
            6 => self.flags = n() as u8,
            7 => self.sport = n() as u16,
            11 => self.dport = n() as u16,
            8 => self.src = addr4(v),
            12 => self.dst = addr4(v),
            27 => self.src = addr6(v),
            28 => self.dst = addr6(v),
            22 => self.start_up = Some(n()),
            21 => self.end_up = Some(n()),
            32 | 139 => self.icmp = Some(n() as u16),
            176 | 178 => self.icmp_type = Some(n() as u8),
            177 | 179 => self.icmp_code = Some(n() as u8),
            150 => self.start_ns = Some(n().saturating_mul(1_000_000_000)),
            151 => self.end_ns = Some(n().saturating_mul(1_000_000_000)),
            152 => self.start_ns = Some(n().saturating_mul(1_000_000)),
            153 => self.end_ns = Some(n().saturating_mul(1_000_000)),
            154 => self.start_ns = Some(ntp_ns(n(), true)),
            155 => self.end_ns = Some(ntp_ns(n(), true)),
            156 => self.start_ns = Some(ntp_ns(n(), false)),
            157 => self.end_ns = Some(ntp_ns(n(), false)),
            158 => self.start_delta_us = Some(n()),
            159 => self.end_delta_us = Some(n()),
            160 => self.init_ms = Some(n()),
            34 | 50 | 305 => self.interval = Some(n()),
            306 => self.space = Some(n()),
            48 | 302 => self.sampler = Some(n() as u32),
            136 => self.end_reason = Some(n() as u8),
            52 => self.min_ttl = Some(n() as u8),
            53 => self.max_ttl = Some(n() as u8),
            _ => {}
        }
    }

    /// One in how many packets was counted, if the record says.
    fn rate(&self) -> Option<u32> {
        let i = self.interval.filter(|i| *i > 0)?;
        // PSAMP: `interval` packets taken, then `space` skipped.
        let r = match self.space {
            Some(s) => i.saturating_add(s) / i,
            None => i,
        };
        Some(r.min(u64::from(u32::MAX)) as u32)
    }

    fn time(
        &self,
        hdr: &Header,
        init: Option<u64>,
        up: Option<u64>,
        abs: Option<u64>,
        delta: Option<u64>,
    ) -> u64 {
        if let Some(ns) = abs {
            return ns;
        }
        if let Some(d) = delta {
            return hdr.export_ns.saturating_sub(d.saturating_mul(1000));
        }
        match (up, hdr.ipfix, init) {
            (Some(ms), false, _) => uptime_to_ns(hdr.export_ns, hdr.uptime_ms, ms as u32),
            (Some(ms), true, Some(init)) => init.saturating_add(ms).saturating_mul(1_000_000),
            _ => hdr.export_ns,
        }
    }

    fn flow(&self, hdr: &Header, init: Option<u64>) -> Option<Unidir> {
        let (src, dst) = (self.src?, self.dst?);
        let (sport, dport) = if matches!(self.proto, 1 | 58) {
            match (self.icmp, self.icmp_type) {
                (_, Some(t)) => (u16::from(t), u16::from(self.icmp_code.unwrap_or(0))),
                (Some(tc), None) => (tc >> 8, tc & 0xff),
                // Exporters without an ICMP field put type and code in the destination port.
                (None, None) => (self.dport >> 8, self.dport & 0xff),
            }
        } else {
            (self.sport, self.dport)
        };
        let first_ns = self.time(hdr, init, self.start_up, self.start_ns, self.start_delta_us);
        let last_ns = self.time(hdr, init, self.end_up, self.end_ns, self.end_delta_us);
        let end = match self.end_reason {
            Some(2) => EndReason::ActiveTimeout,
            Some(3) => EndReason::TcpClosed,
            Some(5) => EndReason::Evicted,
            Some(4) => EndReason::EndOfInput,
            _ => EndReason::IdleTimeout,
        };
        Some(Unidir {
            src,
            dst,
            sport,
            dport,
            proto: self.proto,
            pkts: self.pkts.unwrap_or(0),
            bytes: self.bytes.unwrap_or(0),
            flags: self.flags,
            first_ns,
            last_ns,
            end,
            // One of the two stands for both when the exporter sends only one.
            ttl: match (self.min_ttl, self.max_ttl) {
                (Some(a), Some(b)) => Some(Span::of(a).merge(Span::of(b))),
                (a, b) => a.or(b).map(Span::of),
            },
        })
    }
}
