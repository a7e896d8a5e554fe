//! Industrial-protocol command classification. Each parser reads one transport payload
//! (stateless: a segment is assumed to start on a PDU boundary, as ICS masters send them) and
//! counts the commands it carries into [`IcsCounts`].
//!
//! Conventions shared by every parser:
//!
//! - Every PDU in the payload is walked (masters pipeline several Modbus ADUs, TPKTs, APDUs or
//!   encapsulations into one segment).
//! - A request is counted once with [`IcsCounts::command`]; responses, acknowledgements,
//!   keep-alives and connection management count as `other`.
//! - The first PDU that does not parse counts once as `malformed` and ends the walk: after a
//!   framing error nothing later in the segment can be trusted to sit on a PDU boundary.
//! - A PDU whose header is sound but whose length runs past the end of the payload is a PDU
//!   split across TCP segments, not an error: it is classified from the bytes present when they
//!   reach the function code, and the walk ends there. (The continuation segment then does not
//!   start on a boundary and usually counts as malformed; that is the price of statelessness.)
//! - Function codes unknown to a parser but sent as requests count as `Control`: an unknown
//!   code is more likely a vendor extension that acts on the process than a harmless read.
//!
//! Parsers never allocate, never index without a bounds check, and loop only over strictly
//! shrinking slices, so no input can make them panic or spin.

use normwatch_model::{CommandClass, IcsCounts, IcsProto};

mod dnp3;
mod enip;
mod iec104;
mod modbus;
mod s7comm;

/// Classifies the commands in `payload`, sent towards the server port when `to_server`.
/// Never panics, whatever the bytes.
pub fn inspect(proto: IcsProto, payload: &[u8], to_server: bool, out: &mut IcsCounts) {
    // Pure ACKs carry no PDU at all, and a 1-byte segment is a TCP keep-alive probe (one old
    // byte sent again, as Windows and many PLC stacks do), never a PDU of these protocols:
    // neither is a command nor malformed.
    if payload.len() <= 1 {
        return;
    }
    match proto {
        IcsProto::Modbus => modbus::inspect(payload, to_server, out),
        IcsProto::Dnp3 => dnp3::inspect(payload, out),
        IcsProto::S7comm => s7comm::inspect(payload, out),
        IcsProto::Iec104 => iec104::inspect(payload, to_server, out),
        IcsProto::Enip => enip::inspect(payload, out),
    }
}

/// The industrial protocol a transport port implies (`udp` selects the UDP variants).
pub fn proto_for_port(port: u16, udp: bool) -> Option<IcsProto> {
    match (port, udp) {
        (502, false) => Some(IcsProto::Modbus),
        (20000, _) => Some(IcsProto::Dnp3),
        (102, false) => Some(IcsProto::S7comm),
        (2404, false) => Some(IcsProto::Iec104),
        (44818, _) | (2222, true) => Some(IcsProto::Enip),
        _ => None,
    }
}

/// A PDU that does not parse. Parsers return it up to their walk loop, which counts it once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Malformed;

/// What one function code means: a command class, or `None` for "not a command".
type Class = Option<CommandClass>;

const READ: Class = Some(CommandClass::Read);
const WRITE: Class = Some(CommandClass::Write);
const CONTROL: Class = Some(CommandClass::Control);
const STOP: Class = Some(CommandClass::StopRestart);
const PROGRAM: Class = Some(CommandClass::ProgramFirmware);
const OTHER: Class = None;

/// Builds a 256-entry code → class table at compile time, so classification on the hot path
/// is a single indexed load instead of a chain of comparisons.
const fn table(default: Class, entries: &[(u8, Class)]) -> [Class; 256] {
    let mut t = [default; 256];
    let mut i = 0;
    while i < entries.len() {
        t[entries[i].0 as usize] = entries[i].1;
        i += 1;
    }
    t
}

/// Marks the codes `lo..=hi` as `class` in a table under construction.
const fn range(mut t: [Class; 256], lo: u8, hi: u8, class: Class) -> [Class; 256] {
    let mut c = lo as usize;
    while c <= hi as usize {
        t[c] = class;
        c += 1;
    }
    t
}

/// Counts one parsed PDU: a command of `class` with `code`, or `other`.
#[inline]
fn count(out: &mut IcsCounts, class: Class, code: u8) {
    match class {
        Some(c) => out.command(c, code),
        None => out.other = out.other.saturating_add(1),
    }
}

#[inline]
fn other(out: &mut IcsCounts) {
    out.other = out.other.saturating_add(1);
}

#[inline]
fn malformed(out: &mut IcsCounts) {
    out.malformed = out.malformed.saturating_add(1);
}

#[inline]
fn u8_at(b: &[u8], at: usize) -> Result<u8, Malformed> {
    b.get(at).copied().ok_or(Malformed)
}

#[inline]
fn be16(b: &[u8], at: usize) -> Result<u16, Malformed> {
    match b.get(at..at.wrapping_add(2)) {
        Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
        _ => Err(Malformed),
    }
}

#[inline]
fn le16(b: &[u8], at: usize) -> Result<u16, Malformed> {
    match b.get(at..at.wrapping_add(2)) {
        Some(&[lo, hi]) => Ok(u16::from_le_bytes([lo, hi])),
        _ => Err(Malformed),
    }
}

/// Test helpers shared by the parsers' unit tests.
#[cfg(test)]
pub(crate) mod testutil {
    use normwatch_model::IcsCounts;

    /// Decodes a hex string as copied from `tshark -T fields -e tcp.payload`.
    pub fn hex(s: &str) -> Vec<u8> {
        let s: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        s.chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    /// Runs `f` over every prefix of `payload` and over pseudo-random mutations of it; the only
    /// assertion is that nothing panics and nothing counts more PDUs than there are bytes.
    pub fn fuzz(payload: &[u8], f: impl Fn(&[u8], &mut IcsCounts)) {
        for end in 0..=payload.len() {
            let mut c = IcsCounts::default();
            f(&payload[..end], &mut c);
            assert!(total(&c) <= end.max(1) as u64, "prefix {end}: {c:?}");
        }
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            // xorshift64*: reproducible, no dependency.
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let mut buf = payload.to_vec();
        for _ in 0..2000 {
            buf.copy_from_slice(payload);
            for _ in 0..1 + next() % 4 {
                if buf.is_empty() {
                    break;
                }
                let i = (next() % buf.len() as u64) as usize;
                buf[i] = next() as u8;
            }
            let mut c = IcsCounts::default();
            f(&buf, &mut c);
            assert!(total(&c) <= buf.len().max(1) as u64);
        }
        let mut noise = [0u8; 512];
        for _ in 0..2000 {
            let len = (next() % 512) as usize;
            for b in &mut noise[..len] {
                *b = next() as u8;
            }
            let mut c = IcsCounts::default();
            f(&noise[..len], &mut c);
        }
    }

    /// Every PDU counted, whatever its kind.
    pub fn total(c: &IcsCounts) -> u64 {
        c.commands() + u64::from(c.other) + u64::from(c.malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_map_to_protocols() {
        assert_eq!(proto_for_port(502, false), Some(IcsProto::Modbus));
        assert_eq!(proto_for_port(502, true), None);
        assert_eq!(proto_for_port(20000, true), Some(IcsProto::Dnp3));
        assert_eq!(proto_for_port(2222, true), Some(IcsProto::Enip));
        assert_eq!(proto_for_port(2222, false), None);
        assert_eq!(proto_for_port(80, false), None);
    }

    #[test]
    fn empty_payload_and_keepalive_count_nothing() {
        for proto in IcsProto::ALL {
            let mut c = IcsCounts::default();
            inspect(proto, &[], true, &mut c);
            inspect(proto, &[0], false, &mut c);
            assert_eq!(c, IcsCounts::default());
        }
    }

    #[test]
    fn random_bytes_never_panic_for_any_protocol() {
        for proto in IcsProto::ALL {
            testutil::fuzz(&[0u8; 64], |p, c| inspect(proto, p, true, c));
            testutil::fuzz(&[0xffu8; 64], |p, c| inspect(proto, p, false, c));
        }
    }
}
