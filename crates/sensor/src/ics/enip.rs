//! EtherNet/IP (TCP and UDP 44818, UDP 2222) carrying CIP.
//!
//! An encapsulation is a 24-byte header (command, length, session, status, sender context,
//! options; little-endian) and `length` bytes of command data. SendRRData (unconnected) and
//! SendUnitData (connected) carry a Common Packet Format list whose data item holds a CIP
//! message: service code (bit 0x80 = response), request path size in 16-bit words, the path
//! (an EPATH naming class / instance / attribute) and the service data. Requests are told
//! from responses by that bit, so direction is not needed.
//!
//! CIP service codes 0x4B–0x63 are object-specific, so the class matters for a few of them:
//! Connection Manager (0x06) services are connection setup or Unconnected Send (whose embedded
//! request is classified instead), and set or object-specific services addressed to the File
//! object (0x37) or class 0xA1 (the object Rockwell's firmware updater writes the image to)
//! are firmware changes. The Multiple Service Packet (0x0A) is unpacked and each embedded
//! request counted. The recorded code is the CIP service (or, for the ListIdentity family,
//! the low byte of the encapsulation command).
//!
//! UDP 2222 carries class 0/1 implicit I/O: a bare CPF list with no encapsulation header.
//! It is cyclic process data, not a command, and counts as `other`.

use super::{count, le16, malformed, other, table, Class, Malformed, CONTROL, OTHER};
use super::{READ, STOP, WRITE};
use normwatch_model::{CommandClass, IcsCounts};

/// Encapsulation header length.
const ENCAP: usize = 24;
/// CPF item types that hold a CIP message (connected data starts with a 2-byte sequence count).
const ITEM_CONNECTED_DATA: u16 = 0x00B1;
const ITEM_UNCONNECTED_DATA: u16 = 0x00B2;
/// First item type of an implicit I/O datagram: the sequenced address item.
const ITEM_SEQUENCED_ADDRESS: [u8; 2] = [0x02, 0x80];
/// CIP services and classes that need more than the table.
const MULTIPLE_SERVICE_PACKET: u8 = 0x0A;
const UNCONNECTED_SEND: u8 = 0x52;
const FORWARD_OPEN: u8 = 0x54;
const LARGE_FORWARD_OPEN: u8 = 0x5B;
const FORWARD_CLOSE: u8 = 0x4E;
const CONNECTION_MANAGER: u16 = 0x06;
const FILE_OBJECT: u16 = 0x37;
const FIRMWARE_OBJECT: u16 = 0xA1;
/// How deeply Multiple Service Packets and Unconnected Sends may nest. Real traffic nests one
/// level; the limit bounds recursion on hostile input.
const MAX_DEPTH: u8 = 4;

/// CIP request service → class. Unassigned and unknown object-specific services count as
/// Control, like unknown requests in every other parser.
static SERVICE: [Class; 256] = table(
    CONTROL,
    &[
        (0x01, READ),          // Get_Attributes_All
        (0x03, READ),          // Get_Attribute_List
        (0x0E, READ),          // Get_Attribute_Single
        (0x11, READ),          // Find_Next_Object_Instance
        (0x18, READ),          // Get_Member
        (0x4C, READ),          // Read Tag (Logix)
        (0x52, READ),          // Read Tag Fragmented (Logix), outside the Connection Manager
        (0x55, READ),          // Get_Instance_Attribute_List (Logix tag browsing)
        (0x02, WRITE),         // Set_Attributes_All
        (0x04, WRITE),         // Set_Attribute_List
        (0x08, WRITE),         // Create
        (0x09, WRITE),         // Delete
        (0x0D, WRITE),         // Apply_Attributes
        (0x10, WRITE),         // Set_Attribute_Single
        (0x15, WRITE),         // Restore
        (0x16, WRITE),         // Save
        (0x19, WRITE),         // Set_Member
        (0x1A, WRITE),         // Insert_Member
        (0x1B, WRITE),         // Remove_Member
        (0x4D, WRITE),         // Write Tag (Logix)
        (0x4E, WRITE),         // Read-Modify-Write Tag (Logix), outside the Connection Manager
        (0x53, WRITE),         // Write Tag Fragmented (Logix)
        (0x05, STOP),          // Reset (Identity object: device reset)
        (0x06, STOP),          // Start
        (0x07, STOP),          // Stop
        (0x4B, CONTROL),       // Execute PCCC
        (0x17, OTHER),         // No_Operation
        (FORWARD_OPEN, OTHER), // connection setup
        (LARGE_FORWARD_OPEN, OTHER),
    ],
);

/// Counts every encapsulation in `payload`.
pub(super) fn inspect(payload: &[u8], out: &mut IcsCounts) {
    if let [1..=4, 0, a, b, ..] = payload {
        if [*a, *b] == ITEM_SEQUENCED_ADDRESS {
            other(out); // implicit I/O: item count, then a sequenced address item
            return;
        }
    }
    let mut rest = payload;
    while !rest.is_empty() {
        match encapsulation(rest, out) {
            Ok(len) => match rest.get(len..) {
                Some(r) => rest = r,
                None => break, // encapsulation continues in the next segment
            },
            Err(Malformed) => {
                malformed(out);
                break;
            }
        }
    }
}

/// `b[from..from + len]`, clipped to the end of `b` (a PDU split across segments).
#[inline]
fn clip(b: &[u8], from: usize, len: usize) -> Result<&[u8], Malformed> {
    let rest = b.get(from..).ok_or(Malformed)?;
    Ok(rest.get(..len).unwrap_or(rest))
}

/// Classifies the encapsulation at the start of `b`; returns its length (which may exceed
/// `b`).
#[inline]
fn encapsulation(b: &[u8], out: &mut IcsCounts) -> Result<usize, Malformed> {
    if b.len() < ENCAP {
        return Err(Malformed);
    }
    let command = le16(b, 0)?;
    let len = usize::from(le16(b, 2)?);
    let data = clip(b, ENCAP, len)?;
    match command {
        // ListServices, ListIdentity, ListInterfaces, and the legacy ListTargets (0x0001,
        // still sent by RSLinx): device discovery. Requests carry no data (replies always
        // carry an item list), which tells them apart in either direction, broadcast replies
        // included.
        0x0001 | 0x0004 | 0x0063 | 0x0064 => {
            if len == 0 {
                out.command(CommandClass::Read, command as u8);
            } else {
                other(out);
            }
        }
        // NOP, RegisterSession, UnRegisterSession, IndicateStatus, Cancel.
        0x0000 | 0x0065 | 0x0066 | 0x0072 | 0x0073 => other(out),
        // SendRRData, SendUnitData.
        0x006F | 0x0070 => cpf(data, out)?,
        _ => return Err(Malformed),
    }
    Ok(ENCAP + len)
}

/// Walks the CPF list of SendRRData / SendUnitData to the CIP message it carries.
#[inline]
fn cpf(data: &[u8], out: &mut IcsCounts) -> Result<(), Malformed> {
    // Interface handle (4), timeout (2), item count (2), then type/length/data items.
    let items = le16(data, 6)?;
    let mut rest = data.get(8..).ok_or(Malformed)?;
    for _ in 0..items {
        let kind = le16(rest, 0)?;
        let len = usize::from(le16(rest, 2)?);
        let item = clip(rest, 4, len)?;
        match kind {
            ITEM_UNCONNECTED_DATA => return message(item, out, 0),
            ITEM_CONNECTED_DATA => return message(item.get(2..).ok_or(Malformed)?, out, 0),
            _ => rest = rest.get(4 + len..).ok_or(Malformed)?,
        }
    }
    other(out); // address items only: nothing addressed to an object
    Ok(())
}

/// Classifies one CIP message (a request, or a response counted as `other`).
fn message(msg: &[u8], out: &mut IcsCounts, depth: u8) -> Result<(), Malformed> {
    let (service, words) = match msg {
        [s, ..] if s & 0x80 != 0 => {
            other(out);
            return Ok(());
        }
        [s, w, ..] => (*s, usize::from(*w)),
        [] => {
            other(out); // an empty data item carries no request
            return Ok(());
        }
        [_] => return Err(Malformed),
    };
    let path = msg.get(2..2 + 2 * words).ok_or(Malformed)?;
    let data = msg.get(2 + 2 * words..).unwrap_or_default();
    let class = match path {
        [0x20, c, ..] => Some(u16::from(*c)),
        [0x21, _, lo, hi, ..] => Some(u16::from_le_bytes([*lo, *hi])),
        _ => None, // symbolic tag path, or instance-first: no class to refine by
    };
    if depth >= MAX_DEPTH {
        return Err(Malformed);
    }
    match (service, class) {
        (MULTIPLE_SERVICE_PACKET, _) => multiple(data, out, depth),
        (UNCONNECTED_SEND, Some(CONNECTION_MANAGER)) => {
            // Priority/tick time, timeout ticks, embedded message size, embedded message,
            // then (ignored) pad and route path.
            let size = usize::from(le16(data, 2)?);
            message(clip(data, 4, size)?, out, depth + 1)
        }
        (FORWARD_OPEN | LARGE_FORWARD_OPEN | FORWARD_CLOSE, Some(CONNECTION_MANAGER)) => {
            other(out);
            Ok(())
        }
        (0x02 | 0x04 | 0x10 | 0x4B..=0x63, Some(FILE_OBJECT | FIRMWARE_OBJECT)) => {
            out.command(CommandClass::ProgramFirmware, service);
            Ok(())
        }
        _ => {
            count(out, SERVICE[usize::from(service)], service);
            Ok(())
        }
    }
}

/// Multiple Service Packet request data: service count, offset table (offsets from the start
/// of this data), then the embedded requests.
fn multiple(data: &[u8], out: &mut IcsCounts, depth: u8) -> Result<(), Malformed> {
    let n = usize::from(le16(data, 0)?);
    if n == 0 {
        other(out);
        return Ok(());
    }
    for i in 0..n {
        let start = usize::from(le16(data, 2 + 2 * i)?);
        let end = if i + 1 < n {
            usize::from(le16(data, 4 + 2 * i)?)
        } else {
            data.len()
        };
        // The last request may be cut by the segment end; earlier ones must fit.
        let msg = data.get(start..end.min(data.len())).ok_or(Malformed)?;
        message(msg, out, depth + 1)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{fuzz, hex};
    use super::*;

    fn run(p: &[u8]) -> IcsCounts {
        let mut c = IcsCounts::default();
        inspect(p, &mut c);
        c
    }

    // ICS-Security-Tools/pcaps/openics/EIP-FirmwareChange.pcap frames 10592/10593: SendRRData,
    // Reset (0x05) to the Identity object, and its reply.
    const IDENTITY_RESET: &str = "6f00170000010212000000007e3f0000489ae0000000000000000000140002\
        0000000000b200070005022001240100";
    const IDENTITY_RESET_REPLY: &str = "6f00140000010212000000007e3f0000489ae000000000000000000014\
        00020000000000b200040085000000";
    // ICS-Security-Tools/pcaps/EthernetIP/cip_start_plc.pcap frame 1: SendUnitData, Start (0x06) to
    // class 0x8E.
    const START_PLC: &str = "70001c0001002a00000000000000000000000000000000000000000001000200a100\
        0400224095ffb1000800e7000602208e2401";
    // ICS-Security-Tools/pcaps/openics/EIP-RemoteModeChangeAttempt.pcap frames 421/422: Stop (0x07)
    // and reply.
    const STOP_PLC: &str = "70001c0000010212000000000000000000000000000000000000000001000200a1000\
        4000139dd00b1000800b0280702208e2401";
    const STOP_PLC_REPLY: &str = "70001a0000010212000000000000000000000000000000000000000000000200\
        a10004001c00fe80b1000600b02887000000";
    // ICS-Security-Tools/pcaps/openics/EIP-FirmwareChange.pcap frame 26: service 0x51 to class 0xA1
    // (firmware).
    const FIRMWARE: &str = "6f002600000102120000000007020000489ae00000000000000000008b000200000000\
        00b2001600510220a1240116ff1b000000000001000100c3ae5100";
    // ICS-Security-Tools/pcaps/EthernetIP/cip-multiple-1.pcap frame 1: Multiple Service Packet of
    // 11 Get_Attribute_List.
    const MULTIPLE: &str = "7000ba0000010211000000000000000000000000000000000000000001000200a1000\
        400010b7c00b100a60089070a02200224010b00180022002c0036004c005800640072007c008a0094000302\
        200124010100050003022069240001000b0003022073240101000200030220ac24010700010002000300050\
        0070009000a000303206825002024010013000302207024010200120013000302208e240103000300080010\
        000302206924000100090003022068240003000f0018001900030220772401010002000302208b24010100\
        0600";
    // ICS-Security-Tools/pcaps/openics/EIP-IPAddressChangeAttempt.pcap frame 2: Unconnected Send
    // wrapping Get_Attributes_All (0x01) to the Identity object.
    const UNCONNECTED_SEND: &str = "6f00240000010211000000000481300018a7e10000000000000000000a00\
        020000000000b2001400520220062401069a060001022001240101000100";
    // ICS-Security-Tools/pcaps/openics/EIP-RebootorRestart.pcap frame 21: Forward Open.
    const FORWARD_OPEN_REQ: &str = "6f0040000001021100000000c69b02002008e10000000000000000002000\
        020000000000b200300054022006240107f9140000801300fe8014004d00f32b95320000000000127a00f4\
        4300127a00f443a303010020022401";
    // nDPI/tests/cfgs/default/pcap/cip_io.pcap frame 1: implicit I/O on UDP 2222.
    const IMPLICIT_IO: &str = "020002800800787b3a00e8cb5e04b1000c000300fdffffffffffffff0000";
    // ICS-Security-Tools/pcaps/openics/EIP-IPAddressChangeAttempt.pcap: reply to the legacy
    // ListTargets (0x0001).
    const LIST_TARGETS_REPLY: &str = "01002a0000000000000000000000000000000000000000000100010024\
        00010000000002af12c0a80a7800000000000000003139322e3136382e31302e3132300000";
    // A ListIdentity request: header only.
    const LIST_IDENTITY: &str = "630000000000000000000000000000000000000000000000";

    #[test]
    fn reset_start_and_stop_are_stop_restart() {
        for (s, code) in [(IDENTITY_RESET, 0x05), (START_PLC, 0x06), (STOP_PLC, 0x07)] {
            let c = run(&hex(s));
            assert_eq!(
                (c.stop_restart, c.commands(), c.malformed),
                (1, 1, 0),
                "{s}"
            );
            assert!(c.codes.contains(code));
        }
        for s in [IDENTITY_RESET_REPLY, STOP_PLC_REPLY] {
            let c = run(&hex(s));
            assert_eq!((c.commands(), c.other, c.malformed), (0, 1, 0));
        }
    }

    #[test]
    fn firmware_object_is_program() {
        let c = run(&hex(FIRMWARE));
        assert_eq!((c.program_firmware, c.commands()), (1, 1));
        assert!(c.codes.contains(0x51));
    }

    #[test]
    fn multiple_service_packet_counts_each_request() {
        let c = run(&hex(MULTIPLE));
        assert_eq!((c.read, c.commands(), c.malformed), (11, 11, 0));
        assert_eq!(c.codes.iter().collect::<Vec<_>>(), [0x03]);
    }

    #[test]
    fn unconnected_send_is_classified_by_its_payload() {
        let c = run(&hex(UNCONNECTED_SEND));
        assert_eq!((c.read, c.commands(), c.malformed), (1, 1, 0));
        assert!(c.codes.contains(0x01) && !c.codes.contains(0x52));
    }

    #[test]
    fn connection_setup_io_and_discovery() {
        let c = run(&hex(FORWARD_OPEN_REQ));
        assert_eq!((c.commands(), c.other, c.malformed), (0, 1, 0));
        let c = run(&hex(IMPLICIT_IO));
        assert_eq!((c.commands(), c.other, c.malformed), (0, 1, 0));
        let c = run(&hex(LIST_IDENTITY));
        assert_eq!((c.read, c.commands()), (1, 1));
        assert!(c.codes.contains(0x63));
        let c = run(&hex(LIST_TARGETS_REPLY));
        assert_eq!((c.commands(), c.other, c.malformed), (0, 1, 0));
    }

    #[test]
    fn back_to_back_encapsulations() {
        let p = hex(&[LIST_IDENTITY, STOP_PLC, MULTIPLE, STOP_PLC_REPLY].concat());
        let c = run(&p);
        assert_eq!(
            (c.read, c.stop_restart, c.other, c.malformed),
            (12, 1, 1, 0)
        );
    }

    #[test]
    fn malformed_and_truncated() {
        let mut p = hex(STOP_PLC);
        p[0] = 0x71; // no such encapsulation command
        assert_eq!(run(&p).malformed, 1);
        let p = hex(STOP_PLC);
        let c = run(&p[..20]);
        assert_eq!((c.commands(), c.malformed), (0, 1));
        // Cut inside the CIP path: the class decides nothing for Stop, but the path must be whole.
        let c = run(&p[..p.len() - 2]);
        assert_eq!((c.commands(), c.malformed), (0, 1));
        // Cut just after the path: classified.
        let mut p = hex(UNCONNECTED_SEND);
        let n = p.len();
        p.truncate(n - 4);
        assert_eq!(run(&p).read, 1);
        // An offset table pointing outside the packet.
        let mut p = hex(MULTIPLE);
        p[56] = 0xff;
        p[57] = 0xff;
        let c = run(&p);
        assert_eq!(c.malformed, 1);
    }

    #[test]
    fn fuzz_prefixes() {
        fuzz(
            &hex(&[LIST_IDENTITY, UNCONNECTED_SEND, STOP_PLC].concat()),
            inspect,
        );
        fuzz(&hex(MULTIPLE), inspect);
        fuzz(&hex(IMPLICIT_IO), inspect);
    }
}
