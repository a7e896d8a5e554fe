//! DNP3 over TCP or UDP (port 20000). A link-layer frame is a 10-byte header (0x05 0x64,
//! length, control, destination, source, CRC) followed by the user data in blocks of at most
//! 16 bytes, each followed by a 2-byte CRC. The first block of a user-data frame starts with
//! the transport header, then the application control byte and the application function code.
//!
//! Outstations may send requests too (roles are per message, not per connection), so requests
//! are recognised by function code, not by direction. CRCs are not verified: a bad CRC means a
//! noisy serial link upstream, not a different intent.

use super::{count, malformed, other, table, u8_at, Class, Malformed, CONTROL, OTHER, PROGRAM};
use super::{range, READ, STOP, WRITE};
use normwatch_model::IcsCounts;

/// Link header bytes before the first data block (including its CRC).
const HEADER: usize = 10;
/// Link control: PRM (frame from the primary station) bit and function mask.
const PRM: u8 = 0x40;
const LINK_FUNC: u8 = 0x0F;
/// Transport header: FIR marks the first fragment, the only one holding the function code.
const FIR: u8 = 0x40;

/// Application function code → class. Codes 0x81–0x83 are responses (other); codes nobody
/// assigned count as Control, like unknown requests in every other parser.
static CLASS: [Class; 256] = range(
    table(
        CONTROL,
        &[
            (0, OTHER), // CONFIRM
            (1, READ),
            (2, WRITE),
            (3, CONTROL),  // SELECT
            (4, CONTROL),  // OPERATE
            (5, CONTROL),  // DIRECT_OPERATE
            (6, CONTROL),  // DIRECT_OPERATE_NR
            (13, STOP),    // COLD_RESTART
            (14, STOP),    // WARM_RESTART
            (15, STOP),    // INITIALIZE_DATA
            (16, STOP),    // INITIALIZE_APPL
            (17, STOP),    // START_APPL
            (18, STOP),    // STOP_APPL
            (19, PROGRAM), // SAVE_CONFIG
            (20, CONTROL), // ENABLE_UNSOLICITED
            (21, CONTROL), // DISABLE_UNSOLICITED
            (22, WRITE),   // ASSIGN_CLASS
            (23, READ),    // DELAY_MEASURE
            (24, WRITE),   // RECORD_CURRENT_TIME
            (25, PROGRAM), // OPEN_FILE
            (26, PROGRAM), // CLOSE_FILE
            (27, PROGRAM), // DELETE_FILE
            (28, READ),    // GET_FILE_INFO
            (29, PROGRAM), // AUTHENTICATE_FILE
            (30, PROGRAM), // ABORT_FILE
            (31, PROGRAM), // ACTIVATE_CONFIG
            (32, OTHER),   // AUTHENTICATE_REQ: secure-authentication handshake
            (33, OTHER),   // AUTH_REQ_NO_ACK
            (0x81, OTHER), // RESPONSE
            (0x82, OTHER), // UNSOLICITED_RESPONSE
            (0x83, OTHER), // AUTHENTICATE_RESP
        ],
    ),
    7, // IMMED_FREEZE .. FREEZE_AT_TIME_NR (7–12) operate counters
    12,
    CONTROL,
);

/// Counts every link frame in `payload`.
pub(super) fn inspect(payload: &[u8], out: &mut IcsCounts) {
    let mut rest = payload;
    while !rest.is_empty() {
        match frame(rest, out) {
            Ok(len) => match rest.get(len..) {
                Some(r) => rest = r,
                None => break, // frame continues in the next segment
            },
            Err(Malformed) => {
                malformed(out);
                break;
            }
        }
    }
}

/// Classifies the link frame at the start of `b`; returns its length on the wire (which may
/// exceed `b`).
#[inline]
fn frame(b: &[u8], out: &mut IcsCounts) -> Result<usize, Malformed> {
    let (head, len, ctrl) = match b {
        [a, b, len, ctrl, ..] => (u16::from_be_bytes([*a, *b]), *len, *ctrl),
        _ => return Err(Malformed),
    };
    // Length counts control, destination and source (5 bytes) plus user data.
    if head != 0x0564 || len < 5 {
        return Err(Malformed);
    }
    let user = usize::from(len - 5);
    let wire = HEADER + user + 2 * user.div_ceil(16);
    let user_data = ctrl & PRM != 0 && matches!(ctrl & LINK_FUNC, 3 | 4);
    if !user_data || user == 0 {
        // Reset link, link status, test link, acknowledgements: link housekeeping.
        other(out);
        return Ok(wire);
    }
    let transport = u8_at(b, HEADER)?;
    if transport & FIR == 0 {
        other(out); // a later fragment of a multi-frame message; its head was counted
        return Ok(wire);
    }
    // First fragment: transport, application control, function code. A request's header is
    // 2 bytes (a response's 4), so user data shorter than 3 bytes holds no function code.
    if user < 3 {
        return Err(Malformed);
    }
    let fc = u8_at(b, HEADER + 2)?;
    count(out, CLASS[usize::from(fc)], fc);
    Ok(wire)
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

    // ICS-Security-Tools/pcaps/dnp3/cold_restart_and_response.pcap frames 4 and 6.
    const COLD_RESTART: &str = "056408c40a000100fc42c0c00d9c86";
    const RESPONSE: &str = "05640a4401000a006e25c0c0810001c2de";
    // ICS-Security-Tools/pcaps/dnp3/file_delete.pcap frame 1: DELETE_FILE over three blocks.
    const DELETE_FILE: &str = "056438c404000300f731f0c11b46035b012a001a001000000000300400000000\
        000000000000000000000000ffff0012002e2f68656c6c6f776f726c642ea42d7478745eda";
    // zeek/testing/btest/Traces/dnp3/dnp3_link_only.pcap frames 1 and 2: request link status
    // and the link status answer, no user data.
    const LINK_STATUS: &str = "05640549640001007e5f";
    const LINK_STATUS_ANSWER: &str = "0564058b01006400a097";
    // ICS-Security-Tools/pcaps/dnp3/unsolcited_response_and_confirm.pcap frames 4 and 5.
    const UNSOLICITED: &str = "05640a4401000a006e25c0f08200004466";
    const CONFIRM: &str = "056408c40a000100fc42c0d0001b49";

    #[test]
    fn cold_restart_is_stop_restart() {
        let c = run(&hex(COLD_RESTART));
        assert_eq!(
            (c.stop_restart, c.commands(), c.other, c.malformed),
            (1, 1, 0, 0)
        );
        assert!(c.codes.contains(13));
    }

    #[test]
    fn file_delete_spans_blocks() {
        let c = run(&hex(DELETE_FILE));
        assert_eq!((c.program_firmware, c.commands(), c.malformed), (1, 1, 0));
        assert!(c.codes.contains(27));
    }

    #[test]
    fn responses_confirms_and_link_frames_are_other() {
        for s in [
            RESPONSE,
            UNSOLICITED,
            CONFIRM,
            LINK_STATUS,
            LINK_STATUS_ANSWER,
        ] {
            let c = run(&hex(s));
            assert_eq!((c.commands(), c.other, c.malformed), (0, 1, 0), "{s}");
        }
    }

    #[test]
    fn back_to_back_frames_all_count() {
        let p = hex(&[LINK_STATUS, COLD_RESTART, DELETE_FILE, RESPONSE].concat());
        let c = run(&p);
        assert_eq!(
            (c.stop_restart, c.program_firmware, c.other, c.malformed),
            (1, 1, 2, 0)
        );
    }

    #[test]
    fn later_transport_fragments_are_other() {
        let mut p = hex(COLD_RESTART);
        p[HEADER] = 0x01; // FIR clear: continuation of a fragmented message
        let c = run(&p);
        assert_eq!((c.commands(), c.other), (0, 1));
    }

    #[test]
    fn malformed_and_truncated() {
        let c = run(b"\x05\x65\x08\xc4\x0a\x00\x01\x00\xfc\x42\xc0\xc0\x0d\x9c\x86");
        assert_eq!((c.commands(), c.malformed), (0, 1));
        let mut p = hex(COLD_RESTART);
        p[2] = 4; // length below the 5 header bytes it must count
        assert_eq!(run(&p).malformed, 1);
        // A frame cut after its function code is still classified (rest in the next segment).
        let p = hex(DELETE_FILE);
        let c = run(&p[..14]);
        assert_eq!((c.program_firmware, c.malformed), (1, 0));
        // Cut before the function code.
        let c = run(&p[..12]);
        assert_eq!((c.commands(), c.malformed), (0, 1));
    }

    #[test]
    fn fuzz_prefixes() {
        let all = hex(&[LINK_STATUS, COLD_RESTART, DELETE_FILE, RESPONSE].concat());
        fuzz(&all, inspect);
        fuzz(&hex(DELETE_FILE), inspect);
    }
}
