//! Siemens S7comm over ISO-on-TCP (port 102): TPKT (RFC 1006) → COTP (ISO 8073) → S7 PDU.
//!
//! Only COTP data (DT) TPDUs carry S7; connection setup and teardown TPDUs count as `other`.
//! In the S7 header the ROSCTR says what the PDU is: a Job (1) is a request whose parameter
//! block starts with the function code; Ack (2) and Ack_Data (3) answer it; Userdata (7)
//! carries the "extended" functions (SZL reads, block lists, clock, programmer commands), with
//! request/response in the high nibble of its type/group byte. S7comm-plus (protocol id 0x72,
//! S7-1200/1500) is encrypted/opaque at this level: it counts as `other`, not as malformed.
//!
//! Recorded codes: the Job function (0x04 read var, 0x29 PLC stop, ...) for Jobs, and the
//! userdata type/group byte (0x41–0x47: request + function group) for Userdata requests. The
//! two sets do not overlap, so a flow's code set still says which service was used.

use super::{be16, count, malformed, other, table, u8_at, Class, Malformed, CONTROL, OTHER};
use super::{PROGRAM, READ, STOP, WRITE};
use normwatch_model::IcsCounts;

/// TPKT: version 3, reserved, length (u16 BE, including this header).
const TPKT: usize = 4;
const TPKT_VERSION: u8 = 3;
/// COTP TPDU codes (high nibble of the type byte; CR/CC carry credit in the low nibble).
const COTP_DT: u8 = 0xF0;
/// S7 protocol ids.
const S7: u8 = 0x32;
const S7_PLUS: u8 = 0x72;
/// Job and Userdata headers are 10 bytes; Ack/Ack_Data add error class and code.
const S7_HEADER: usize = 10;
/// PI-Service job function: the service name decides the class.
const PI_SERVICE: u8 = 0x28;

/// Job function code → class; unknown job functions count as Control.
static JOB: [Class; 256] = table(
    CONTROL,
    &[
        (0x04, READ),    // Read Var
        (0x05, WRITE),   // Write Var
        (0xF0, OTHER),   // Setup communication: PDU size negotiation
        (0x1A, PROGRAM), // Request download
        (0x1B, PROGRAM), // Download block
        (0x1C, PROGRAM), // Download ended
        (0x1D, PROGRAM), // Start upload
        (0x1E, PROGRAM), // Upload
        (0x1F, PROGRAM), // End upload
        (0x29, STOP),    // PLC Stop
    ],
);

/// Counts every TPKT in `payload`.
pub(super) fn inspect(payload: &[u8], out: &mut IcsCounts) {
    let mut rest = payload;
    while !rest.is_empty() {
        match tpkt(rest, out) {
            Ok(len) => match rest.get(len..) {
                Some(r) => rest = r,
                None => break, // TPKT continues in the next segment
            },
            Err(Malformed) => {
                malformed(out);
                break;
            }
        }
    }
}

/// Classifies the TPKT at the start of `b`; returns its length (which may exceed `b`).
#[inline]
fn tpkt(b: &[u8], out: &mut IcsCounts) -> Result<usize, Malformed> {
    let len = usize::from(be16(b, 2)?);
    // Shortest TPKT: header, COTP length indicator and TPDU code.
    if u8_at(b, 0)? != TPKT_VERSION || len < TPKT + 2 {
        return Err(Malformed);
    }
    let pdu = b.get(..len).unwrap_or(b);
    let li = usize::from(u8_at(pdu, TPKT)?);
    let code = u8_at(pdu, TPKT + 1)? & 0xF0;
    if li == 0 {
        return Err(Malformed); // the length indicator covers at least the TPDU code
    }
    match code {
        COTP_DT => {
            // The S7 PDU follows the COTP header; `li` excludes its own byte.
            let s7 = pdu.get(TPKT + 1 + li..).ok_or(Malformed)?;
            s7_pdu(s7, out)?;
        }
        // CR, CC, DR, DC, ED, AK, EA, RJ, ER: connection management and flow control.
        0xE0 | 0xD0 | 0x80 | 0xC0 | 0x10 | 0x60 | 0x20 | 0x50 | 0x70 => other(out),
        _ => return Err(Malformed),
    }
    Ok(len)
}

/// Classifies the S7 PDU `s7` (possibly cut short by the segment end).
#[inline]
fn s7_pdu(s7: &[u8], out: &mut IcsCounts) -> Result<(), Malformed> {
    let rosctr = match s7 {
        [S7, rosctr, ..] => *rosctr,
        // Empty DT (nothing above COTP), or S7comm-plus.
        [] | [S7_PLUS, ..] => {
            other(out);
            return Ok(());
        }
        _ => return Err(Malformed),
    };
    match rosctr {
        1 => {
            let param = s7.get(S7_HEADER..).ok_or(Malformed)?;
            let func = u8_at(param, 0)?;
            let class = if func == PI_SERVICE {
                pi_service(param)
            } else {
                JOB[usize::from(func)]
            };
            count(out, class, func);
        }
        2 | 3 => other(out),
        7 => {
            // Parameter head 00 01 12, parameter length, method, type|group, subfunction.
            let param = s7.get(S7_HEADER..).ok_or(Malformed)?;
            let (type_group, sub) = match param {
                [0x00, 0x01, 0x12, _len, _method, tg, sub, ..] => (*tg, *sub),
                _ => return Err(Malformed),
            };
            count(out, userdata(type_group, sub), type_group);
        }
        _ => return Err(Malformed),
    }
    Ok(())
}

/// A userdata PDU's class from its type/group byte and subfunction.
#[inline]
fn userdata(type_group: u8, sub: u8) -> Class {
    // Type nibble: 0x4 request, 0x8 response, 0x0 push (cyclic data, alarms, mode changes).
    if type_group >> 4 != 0x4 {
        return OTHER;
    }
    match type_group & 0x0F {
        1 => programmer(sub),
        2 => READ, // cyclic data: subscribing to (or ending) cyclic reads of memory
        3 => READ, // block functions: list blocks, block info
        4 => READ, // CPU functions: read SZL, message service
        7 => match sub {
            2 | 4 => WRITE, // set clock
            _ => READ,      // read clock
        },
        // 5 security (PLC password), and anything unassigned.
        _ => CONTROL,
    }
}

/// A programmer command's class from its subfunction (Wireshark's s7comm names): an
/// engineering station watching a variable table or a block online only reads; forcing
/// values, erasing, and subfunctions not known stay Control.
#[inline]
fn programmer(sub: u8) -> Class {
    match sub {
        0x01 | 0x13 => READ, // request diagnostic data (start watching a block online)
        0x02 => READ,        // variable table: request the online values of its items
        0x0E | 0x0F => READ, // read diagnostic data, remove it (stop watching)
        // 0x0C erase, 0x10 force, anything else.
        _ => CONTROL,
    }
}

/// PI-Service (0x28): program invocation by name. Layout after the function byte: 7 unknown
/// bytes, parameter block length (u16 BE), parameter block, name length, name.
#[inline]
fn pi_service(param: &[u8]) -> Class {
    let name = be16(param, 8).ok().and_then(|block| {
        let at = 10 + usize::from(block);
        let len = usize::from(*param.get(at)?);
        param.get(at + 1..at + 1 + len)
    });
    match name {
        // Insert / delete blocks into the CPU's program.
        Some(b"_INSE" | b"_DELE") => PROGRAM,
        // Copy RAM to ROM: persists the loaded program into load memory, i.e. makes a
        // download permanent, so it belongs with the program changes.
        Some(b"_MODU") => PROGRAM,
        // Start, warm/hot restart, cold restart of the user program.
        Some(n) if n.starts_with(b"P_PROGRAM") => STOP,
        // _GARB (compress memory), Sinumerik _N_* services, unreadable names.
        _ => CONTROL,
    }
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

    // ICS-Security-Tools/pcaps/s7/snap7_s300_stop.pcapng frames 1 and 2: PLC STOP and its ack.
    const PLC_STOP: &str = "0300002102f0803201000000020010000029000000000009505f50524f4752414d";
    const PLC_STOP_ACK: &str = "0300001402f08032030000000200010000000029";
    // ICS-Security-Tools/pcaps/s7/s7comm_downloading_block_db1.pcap frames 43 and 58:
    // request download of DB1, then PI-Service _INSE to insert it.
    const REQUEST_DOWNLOAD: &str = "0300003102f080320100000e00002000001a00010000000000095f3041\
        3030303031500d31303030353030303030343030";
    const PI_INSERT: &str = "0300002b02f080320100000f00001a000028000000000000fd000a0100304130\
        3030303150055f494e5345";
    // ICS-Security-Tools/pcaps/s7/step7_s300_copyRamToRom.pcapng frame 1: PI-Service _MODU.
    const PI_COPY_RAM_TO_ROM: &str =
        "0300002302f080320100000a000012000028000000000000fd00024550055f4d4f4455";
    // ICS-Security-Tools/pcaps/s7/snap7_s300_everything.pcapng frames 1 (setup communication),
    // 3/4 (read SZL request/response), 47 (set clock), 51 (read var).
    const SETUP: &str = "0300001902f08032010000000000080000f0000001000101e0";
    const READ_SZL: &str = "0300002102f080320700000100000800080001120411440100ff09000400110000";
    const READ_SZL_RESPONSE_HEAD: &str =
        "0300009902f080320700000100000c007c000112081284010200000000ff09007800110000001c0004";
    const SET_CLOCK: &str =
        "0300002702f0803207000017000008000e0001120411470200ff09000a00191602082308100002";
    const READ_VAR: &str = "0300001f02f080320100001900000e00000401120a10080001000083000080";
    // ICS-Security-Tools/pcaps/s7/S7-1200-Uploading-OB1-TIAV12.pcap frame 4: COTP connection
    // request (TPDU code 0xE0), as sent before any S7 traffic.
    const COTP_CR: &str = "030000231ee00000001100c1020600c20f53494d415449432d524f4f542d4553c0010a";
    // nDPI/tests/cfgs/default/pcap/s7comm-plus.pcap frame 9, first bytes: S7comm-plus (0x72).
    const S7_PLUS_HEAD: &str = "030000d902f080720100ca31000004ca0000000100000120360000011d0004";

    #[test]
    fn plc_stop_is_stop_restart() {
        let c = run(&hex(PLC_STOP));
        assert_eq!(
            (c.stop_restart, c.commands(), c.other, c.malformed),
            (1, 1, 0, 0)
        );
        assert!(c.codes.contains(0x29));
        let c = run(&hex(PLC_STOP_ACK));
        assert_eq!((c.commands(), c.other), (0, 1));
    }

    #[test]
    fn download_and_block_insert_are_program() {
        let c = run(&hex(REQUEST_DOWNLOAD));
        assert_eq!((c.program_firmware, c.commands()), (1, 1));
        assert!(c.codes.contains(0x1A));
        let c = run(&hex(PI_INSERT));
        assert_eq!((c.program_firmware, c.commands()), (1, 1));
        assert!(c.codes.contains(0x28));
        let c = run(&hex(PI_COPY_RAM_TO_ROM));
        assert_eq!(c.program_firmware, 1);
    }

    #[test]
    fn pi_service_names() {
        let mut p = hex(PI_INSERT);
        let n = p.len();
        p[n - 5..].copy_from_slice(b"_GARB");
        assert_eq!(run(&p).control, 1);
        p[n - 5..].copy_from_slice(b"_DELE");
        assert_eq!(run(&p).program_firmware, 1);
        // A name longer than the TPKT still counts the job, conservatively as Control.
        let c = run(&p[..n - 3]);
        assert_eq!((c.control, c.malformed), (1, 0));
    }

    #[test]
    fn userdata_requests_and_responses() {
        let c = run(&hex(READ_SZL));
        assert_eq!((c.read, c.commands()), (1, 1));
        assert!(c.codes.contains(0x44));
        let c = run(&hex(READ_SZL_RESPONSE_HEAD));
        assert_eq!((c.commands(), c.other, c.malformed), (0, 1, 0));
        let c = run(&hex(SET_CLOCK));
        assert_eq!((c.write, c.commands()), (1, 1));
        assert!(c.codes.contains(0x47));
    }

    #[test]
    fn s7_userdata_variable_table_and_diagnostics_reads_are_read_not_control() {
        // Defect 4 of issue 17: programmer commands (userdata) were always Control, so an
        // engineering station watching a variable table raised high-severity alerts.
        // READ_SZL with another function group and subfunction in its parameter head.
        let ud = |type_group: u8, sub: u8| {
            let mut p = hex(READ_SZL);
            p[22] = type_group;
            p[23] = sub;
            run(&p)
        };
        for sub in [0x01, 0x02, 0x0E, 0x0F, 0x13] {
            let c = ud(0x41, sub);
            assert_eq!((c.read, c.commands()), (1, 1), "programmer {sub:#x}");
            assert!(c.codes.contains(0x41));
        }
        for sub in [0x0C, 0x10, 0x7F] {
            let c = ud(0x41, sub);
            assert_eq!((c.control, c.commands()), (1, 1), "programmer {sub:#x}");
        }
        // Cyclic reads are reads; a password (security group) is control.
        assert_eq!(ud(0x42, 0x01).read, 1);
        assert_eq!(ud(0x45, 0x01).control, 1);
        // A response to a programmer command is no command.
        assert_eq!(ud(0x81, 0x10).commands(), 0);
    }

    #[test]
    fn setup_connection_and_s7plus_are_other() {
        let all = hex(&[COTP_CR, SETUP, READ_VAR, PLC_STOP].concat());
        let c = run(&all);
        assert_eq!((c.read, c.stop_restart, c.other, c.malformed), (1, 1, 2, 0));
        let c = run(&hex(S7_PLUS_HEAD));
        assert_eq!((c.other, c.malformed), (1, 0));
    }

    #[test]
    fn malformed_and_truncated() {
        let mut p = hex(PLC_STOP);
        p[0] = 4; // not TPKT version 3
        assert_eq!(run(&p).malformed, 1);
        let mut p = hex(PLC_STOP);
        p[7] = 0x33; // not an S7 protocol id
        assert_eq!(run(&p).malformed, 1);
        let mut p = hex(PLC_STOP);
        p[8] = 9; // unknown ROSCTR
        assert_eq!(run(&p).malformed, 1);
        // Cut right after the function code: the rest is in the next segment.
        let p = hex(PLC_STOP);
        assert_eq!(run(&p[..18]).stop_restart, 1);
        // Cut before it.
        let c = run(&p[..17]);
        assert_eq!((c.commands(), c.malformed), (0, 1));
    }

    #[test]
    fn fuzz_prefixes() {
        fuzz(
            &hex(&[COTP_CR, SETUP, PI_INSERT, SET_CLOCK].concat()),
            inspect,
        );
        fuzz(&hex(READ_SZL), inspect);
    }
}
