//! Modbus/TCP (port 502): MBAP header (transaction id, protocol id 0, length, unit id) followed
//! by the PDU's function code. A request is any non-exception PDU travelling to the server;
//! Modbus has no request/response bit, so direction is the only way to tell them apart.

use super::{be16, count, malformed, other, table, u8_at, Class, Malformed, CONTROL, READ};
use super::{STOP, WRITE};
use normwatch_model::IcsCounts;

/// MBAP header: txn id (2), protocol id (2), length (2), unit id (1).
const MBAP: usize = 7;
/// Largest MBAP length accepted (see `adu`).
const MAX_LEN: usize = 256;

/// Request function code → class. Unlisted codes (user-defined 65–72 and 100–110, vendor
/// extensions such as Schneider UMAS 90, anything unassigned) are `Control`: unknown requests
/// are assumed to act on the process. Diagnostics (8) is refined by sub-function below.
static CLASS: [Class; 256] = table(
    CONTROL,
    &[
        (1, READ),   // read coils
        (2, READ),   // read discrete inputs
        (3, READ),   // read holding registers
        (4, READ),   // read input registers
        (7, READ),   // read exception status
        (8, READ),   // diagnostics (see `diagnostics`)
        (11, READ),  // get comm event counter
        (12, READ),  // get comm event log
        (17, READ),  // report server id
        (20, READ),  // read file record
        (24, READ),  // read FIFO queue
        (43, READ),  // encapsulated interface transport (read device identification)
        (5, WRITE),  // write single coil
        (6, WRITE),  // write single register
        (15, WRITE), // write multiple coils
        (16, WRITE), // write multiple registers
        (21, WRITE), // write file record
        (22, WRITE), // mask write register
        (23, WRITE), // read/write multiple registers: the write is what matters
    ],
);

/// Counts every ADU in `payload`.
pub(super) fn inspect(payload: &[u8], to_server: bool, out: &mut IcsCounts) {
    let mut rest = payload;
    while !rest.is_empty() {
        match adu(rest, to_server, out) {
            Ok(len) => match rest.get(len..) {
                Some(r) => rest = r,
                None => break, // ADU continues in the next segment
            },
            Err(Malformed) => {
                malformed(out);
                break;
            }
        }
    }
}

/// Classifies the ADU at the start of `b`; returns its length (which may exceed `b`).
#[inline]
fn adu(b: &[u8], to_server: bool, out: &mut IcsCounts) -> Result<usize, Malformed> {
    let proto = be16(b, 2)?;
    let len = usize::from(be16(b, 4)?);
    // Length covers unit id + PDU: at least unit id and function code, and at most 254 by
    // the spec (a 253-byte PDU). Schneider UMAS stacks send 255, so allow a little slack.
    if proto != 0 || !(2..=MAX_LEN).contains(&len) {
        return Err(Malformed);
    }
    let fc = u8_at(b, MBAP)?;
    if fc == 0 {
        return Err(Malformed); // 0 is not a function code in any Modbus version
    }
    if !to_server || fc & 0x80 != 0 {
        // Responses travel to the client; exception responses carry fc | 0x80.
        other(out);
    } else if fc == 8 {
        count(out, diagnostics(be16(b, MBAP + 1)?), fc);
    } else {
        count(out, CLASS[usize::from(fc)], fc);
    }
    Ok(MBAP - 1 + len)
}

/// Diagnostics (fc 8) sub-functions: "restart communications option" (1) and "force listen
/// only mode" (4) take the device off the bus or restart it; the rest read counters or echo.
#[inline]
fn diagnostics(sub: u16) -> Class {
    match sub {
        1 | 4 => STOP,
        _ => READ,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{fuzz, hex};
    use super::*;

    fn run(p: &[u8], to_server: bool) -> IcsCounts {
        let mut c = IcsCounts::default();
        inspect(p, to_server, &mut c);
        c
    }

    // Write multiple coils (fc 15), ICS-Security-Tools/pcaps/ModbusTCP/ModbusTCP.pcap frame 28.
    const WRITE_COILS: &str = "485a00000008ff0f000700030100";
    // Same file, frame 83: read discrete inputs (2) then two write multiple coils, back to back.
    const PIPELINED: &str =
        "000300000006ff020000000b000400000008ff0f000700030107000500000008ff0f000500010100";
    // Same file, frame 93: the three responses to frame 83.
    const PIPELINED_RESPONSES: &str =
        "000300000005ff02020000000400000006ff0f00070003000500000006ff0f00050001";
    // suricata-verify/tests/modbus/modbus.pcap frame 8: diagnostics, force listen only mode.
    const FORCE_LISTEN_ONLY: &str = "0000000000060a0800040000";
    // Same file, frame 9: exception response (0x88, code 0x0b).
    const EXCEPTION: &str = "0000000000030a880b";

    #[test]
    fn write_multiple_coils_is_write() {
        let c = run(&hex(WRITE_COILS), true);
        assert_eq!((c.commands(), c.write, c.other, c.malformed), (1, 1, 0, 0));
        assert!(c.codes.contains(15));
    }

    #[test]
    fn every_pipelined_adu_counts() {
        let c = run(&hex(PIPELINED), true);
        assert_eq!((c.read, c.write, c.malformed), (1, 2, 0));
        assert_eq!(c.codes.iter().collect::<Vec<_>>(), [2, 15]);
        let c = run(&hex(PIPELINED_RESPONSES), false);
        assert_eq!((c.commands(), c.other, c.malformed), (0, 3, 0));
    }

    #[test]
    fn diagnostics_sub_functions() {
        let c = run(&hex(FORCE_LISTEN_ONLY), true);
        assert_eq!((c.stop_restart, c.commands()), (1, 1));
        assert!(c.codes.contains(8));
        let mut p = hex(FORCE_LISTEN_ONLY);
        p[9] = 0x0a; // clear counters and diagnostic register
        assert_eq!(run(&p, true).read, 1);
    }

    #[test]
    fn responses_exceptions_and_unknown_codes() {
        // A request echoed back by the server is a response.
        let c = run(&hex(WRITE_COILS), false);
        assert_eq!((c.commands(), c.other), (0, 1));
        let c = run(&hex(EXCEPTION), false);
        assert_eq!((c.commands(), c.other), (0, 1));
        let mut p = hex(WRITE_COILS);
        p[7] = 90; // Schneider UMAS: unknown to Modbus, so conservatively Control
        let c = run(&p, true);
        assert_eq!(c.control, 1);
        assert!(c.codes.contains(90));
    }

    #[test]
    fn malformed_and_truncated() {
        let mut p = hex(PIPELINED);
        p[2] = 1; // protocol id must be 0
        let c = run(&p, true);
        assert_eq!((c.commands(), c.malformed), (0, 1));
        let mut p = hex(PIPELINED);
        p[12 + 2] = 7; // second ADU bad: the first still counts, then the walk stops
        let c = run(&p, true);
        assert_eq!((c.read, c.write, c.malformed), (1, 0, 1));
        // Cut inside the third ADU's data: split across segments, still classified.
        let p = hex(PIPELINED);
        let c = run(&p[..p.len() - 2], true);
        assert_eq!((c.read, c.write, c.malformed), (1, 2, 0));
        // Cut before a function code: cannot be classified.
        let c = run(&p[..5], true);
        assert_eq!((c.commands(), c.malformed), (0, 1));
        let c = run(b"GET / HTTP/1.1\r\n\r\n", true);
        assert_eq!((c.commands(), c.malformed), (0, 1));
    }

    #[test]
    fn fuzz_prefixes() {
        for s in [PIPELINED, FORCE_LISTEN_ONLY, EXCEPTION] {
            fuzz(&hex(s), |p, c| inspect(p, true, c));
            fuzz(&hex(s), |p, c| inspect(p, false, c));
        }
    }
}
