//! IEC 60870-5-104 (port 2404). An APDU is the APCI (start byte 0x68, length, four control
//! bytes) optionally followed by an ASDU. Only I-format APDUs (bit 0 of the first control byte
//! clear) carry an ASDU; S-format (acknowledgements) and U-format (STARTDT, STOPDT, TESTFR)
//! are link supervision and count as `other` — STOPDT stops data transfer, not the process.
//!
//! An ASDU is a command when its cause of transmission is activation (6) or deactivation (8):
//! confirmations (7, 9), termination (10), spontaneous and interrogated data are the
//! controlled station's replies. File transfer is the exception: it runs under its own cause
//! (13), so file-transfer ASDUs sent towards the controlled station (the server) with cause 13
//! count as well. The recorded code is the type identification.

use super::{count, malformed, other, range, table, u8_at, Class, Malformed, CONTROL, OTHER};
use super::{PROGRAM, READ, STOP, WRITE};
use normwatch_model::IcsCounts;

const START: u8 = 0x68;
/// APCI: start, length, four control bytes. The length byte counts from the control bytes.
const APCI: usize = 6;
/// The longest APDU the standard allows has length 253.
const MAX_LEN: u8 = 253;
/// Causes of transmission (low 6 bits of the COT byte; the top bits are test and P/N flags).
const COT_ACTIVATION: u8 = 6;
const COT_DEACTIVATION: u8 = 8;
const COT_FILE_TRANSFER: u8 = 13;

/// Type identification → class, for activations and deactivations. Unassigned and private
/// type ids count as Control, like unknown requests in every other parser.
static CLASS: [Class; 256] = {
    let t = table(
        CONTROL,
        &[
            (70, OTHER),  // M_EI_NA_1 end of initialisation: monitor direction
            (100, READ),  // C_IC_NA_1 interrogation
            (101, READ),  // C_CI_NA_1 counter interrogation
            (102, READ),  // C_RD_NA_1 read
            (103, WRITE), // C_CS_NA_1 clock synchronisation
            (104, OTHER), // C_TS_NA_1 test
            (105, STOP),  // C_RP_NA_1 reset process
            (106, READ),  // C_CD_NA_1 delay acquisition
            (107, OTHER), // C_TS_TA_1 test with time tag
        ],
    );
    let t = range(t, 1, 44, OTHER); // monitor direction: process information
    let t = range(t, 45, 51, CONTROL); // single/double/regulating step, set points, bitstring
    let t = range(t, 58, 64, CONTROL); // the same with CP56Time2a time tags
    let t = range(t, 110, 113, WRITE); // parameter loading P_ME_NA/NB/NC, P_AC_NA
    range(t, 120, 127, PROGRAM) // file transfer F_*
};

/// Counts every APDU in `payload`; `to_server` is true towards the controlled station.
pub(super) fn inspect(payload: &[u8], to_server: bool, out: &mut IcsCounts) {
    let mut rest = payload;
    while !rest.is_empty() {
        match apdu(rest, to_server, out) {
            Ok(len) => match rest.get(len..) {
                Some(r) => rest = r,
                None => break, // APDU continues in the next segment
            },
            Err(Malformed) => {
                malformed(out);
                break;
            }
        }
    }
}

/// Classifies the APDU at the start of `b`; returns its length (which may exceed `b`).
#[inline]
fn apdu(b: &[u8], to_server: bool, out: &mut IcsCounts) -> Result<usize, Malformed> {
    let (start, len, ctrl1) = match b {
        [s, l, c, ..] => (*s, *l, *c),
        _ => return Err(Malformed),
    };
    if start != START || !(4..=MAX_LEN).contains(&len) {
        return Err(Malformed);
    }
    if ctrl1 & 1 != 0 {
        // S-format (x1) or U-format (11): supervision only, always exactly 4 control bytes.
        if len != 4 {
            return Err(Malformed);
        }
        other(out);
    } else {
        // I-format: the ASDU needs at least type id, variable structure qualifier and cause.
        if len < 7 {
            return Err(Malformed);
        }
        let type_id = u8_at(b, APCI)?;
        let cause = u8_at(b, APCI + 2)? & 0x3F;
        let class = match cause {
            COT_ACTIVATION | COT_DEACTIVATION => CLASS[usize::from(type_id)],
            COT_FILE_TRANSFER if to_server && (120..=127).contains(&type_id) => PROGRAM,
            _ => OTHER,
        };
        count(out, class, type_id);
    }
    Ok(2 + usize::from(len))
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

    // ICS-Security-Tools/pcaps/IEC60870-5-104/TestDissectIec104.pcap:
    // frame 124, C_SC_NA_1 (45) single command, activation;
    const SINGLE_COMMAND: &str = "680e04000e002d0106010d911a270081";
    // frame 125, S-frame then the activation confirmation (cause 7);
    const SINGLE_COMMAND_CON: &str = "680401000600680e0e0006002d0107010d911a270081";
    // frame 110, S-frame, C_IC_NA_1 confirmation, two monitor ASDUs (cause 20) — 4 APDUs;
    const INTERROGATION_REPLIES: &str = "680401000200680e02000200640107000d9100000014681604000200\
        018914000d911a2700d0808080c080808080681006000200038314000d912a4e00808080";
    // frame 133, C_SC_NA_1 activation with the test bit set in the cause byte (0x86);
    const TEST_BIT_COMMAND: &str = "680e080014002d0186020d91ce560081";
    // frame 139, C_CS_NA_1 (103) clock synchronisation, activation;
    const CLOCK_SYNC: &str = "68140c001600670106040d91000000c83239081d0808";
    // frame 4, U-format STARTDT act.
    const STARTDT: &str = "680407000000";

    #[test]
    fn single_command_activation_is_control() {
        let c = run(&hex(SINGLE_COMMAND), true);
        assert_eq!(
            (c.control, c.commands(), c.other, c.malformed),
            (1, 1, 0, 0)
        );
        assert!(c.codes.contains(45));
        let c = run(&hex(TEST_BIT_COMMAND), true);
        assert_eq!(c.control, 1);
    }

    #[test]
    fn replies_and_supervision_are_other() {
        let c = run(&hex(SINGLE_COMMAND_CON), false);
        assert_eq!((c.commands(), c.other, c.malformed), (0, 2, 0));
        let c = run(&hex(INTERROGATION_REPLIES), false);
        assert_eq!((c.commands(), c.other, c.malformed), (0, 4, 0));
        let c = run(&hex(STARTDT), true);
        assert_eq!((c.commands(), c.other), (0, 1));
    }

    #[test]
    fn back_to_back_commands() {
        let p = hex(&[STARTDT, SINGLE_COMMAND, CLOCK_SYNC].concat());
        let c = run(&p, true);
        assert_eq!((c.control, c.write, c.other, c.malformed), (1, 1, 1, 0));
        assert_eq!(c.codes.iter().collect::<Vec<_>>(), [45, 103]);
    }

    #[test]
    fn reset_process_and_file_transfer() {
        let mut p = hex(SINGLE_COMMAND);
        p[APCI] = 105; // C_RP_NA_1
        assert_eq!(run(&p, true).stop_restart, 1);
        p[APCI] = 100; // C_IC_NA_1
        assert_eq!(run(&p, true).read, 1);
        p[APCI] = 125; // F_SG_NA_1 segment, cause file transfer
        p[APCI + 2] = COT_FILE_TRANSFER;
        assert_eq!(run(&p, true).program_firmware, 1);
        assert_eq!(run(&p, false).other, 1); // an upload from the station: its data
    }

    #[test]
    fn malformed_and_truncated() {
        let mut p = hex(SINGLE_COMMAND);
        p[0] = 0x67;
        assert_eq!(run(&p, true).malformed, 1);
        let c = run(&hex("680601000000"), true); // S-format must have length 4
        assert_eq!(c.malformed, 1);
        let c = run(&hex("680400000000"), true); // I-format without an ASDU
        assert_eq!(c.malformed, 1);
        // The garbage-prefixed segments of the dissector test capture (frame 16).
        let c = run(&hex("0303036801131313"), true);
        assert_eq!((c.commands(), c.malformed), (0, 1));
        // Cut after the cause: classified; cut before it: malformed.
        let p = hex(SINGLE_COMMAND);
        assert_eq!(run(&p[..9], true).control, 1);
        let c = run(&p[..8], true);
        assert_eq!((c.commands(), c.malformed), (0, 1));
    }

    #[test]
    fn fuzz_prefixes() {
        let all = hex(&[STARTDT, SINGLE_COMMAND, INTERROGATION_REPLIES, CLOCK_SYNC].concat());
        fuzz(&all, |p, c| inspect(p, true, c));
    }
}
