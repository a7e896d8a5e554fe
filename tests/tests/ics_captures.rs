//! Industrial-protocol command counts on real captures. Expected counts are Wireshark's
//! dissection of the same files (requests only), e.g.
//! `tshark -r FILE -Y 'modbus && tcp.dstport==502' -T fields -e modbus.func_code`.

use normwatch_model::{CommandClass, IcsCounts, IcsProto};
use normwatch_tests::{capture, config, flows_of};

const ICS: &str = "ICS-Security-Tools/pcaps/";

/// Sums the command counts of every flow of `proto` in the capture, both directions.
fn commands(rel: &str, proto: IcsProto) -> IcsCounts {
    let (flows, _) = flows_of(&capture(&format!("{ICS}{rel}")), config(false))
        .unwrap_or_else(|(_, e)| panic!("{e}"));
    let mut total = IcsCounts::default();
    for f in flows.iter().filter_map(|f| f.ics.as_deref()) {
        if f.proto != proto {
            continue;
        }
        for c in [&f.orig, &f.resp] {
            total.read += c.read;
            total.write += c.write;
            total.control += c.control;
            total.stop_restart += c.stop_restart;
            total.program_firmware += c.program_firmware;
            total.malformed += c.malformed;
            total.codes.union(&c.codes);
        }
    }
    total
}

fn dangerous(c: &IcsCounts) -> u32 {
    c.write + c.control + c.stop_restart + c.program_firmware
}

#[test]
fn s7_plc_stop_is_a_stop_command() {
    let c = commands("s7/snap7_s300_stop.pcapng", IcsProto::S7comm);
    assert_eq!(c.count(CommandClass::StopRestart), 1, "{c:?}");
    assert!(c.codes.contains(0x29), "{c:?}");
}

#[test]
fn s7_block_download_is_program_change() {
    let c = commands("s7/s7comm_downloading_block_db1.pcap", IcsProto::S7comm);
    // Request download, three download-block jobs, download ended.
    assert!(c.program_firmware >= 5, "{c:?}");
    for code in [0x1a, 0x1b, 0x1c] {
        assert!(c.codes.contains(code), "{code:#x} in {c:?}");
    }
    assert_eq!(c.stop_restart, 0, "{c:?}");
}

#[test]
fn dnp3_cold_restart_is_a_restart_command() {
    let c = commands("dnp3/cold_restart_and_response.pcap", IcsProto::Dnp3);
    assert_eq!(c.stop_restart, 1, "{c:?}");
    assert!(c.codes.contains(13), "{c:?}");
}

#[test]
fn modbus_writes_and_reads_match_wireshark() {
    let c = commands("ModbusTCP/ModbusTCP.pcap", IcsProto::Modbus);
    // Wireshark: fc 1 ×1519, fc 2 ×1574, fc 4 ×2768 (reads); fc 15 ×2115, fc 16 ×14 (writes).
    assert_eq!(c.read, 1519 + 1574 + 2768, "{c:?}");
    assert_eq!(c.write, 2115 + 14, "{c:?}");
    assert_eq!(c.codes.iter().collect::<Vec<_>>(), [1, 2, 4, 15, 16]);
}

#[test]
fn modbus_read_only_polling_has_no_dangerous_commands() {
    let c = commands("ModbusTCP/Modbus/modbus_test_2.pcap", IcsProto::Modbus);
    // Wireshark: fc 3 ×43, fc 4 ×2339 (TCP retransmissions, 925 here, are not commands).
    assert_eq!(c.read, 43 + 2339, "{c:?}");
    assert_eq!(dangerous(&c), 0, "{c:?}");
}

#[test]
fn iec104_single_and_double_commands_are_control() {
    let c = commands("IEC60870-5-104/TestDissectIec104.pcap", IcsProto::Iec104);
    // Wireshark: C_SC_NA_1 (45) ×4 and C_DC_NA_1 (46) ×1 with cause "activation".
    assert_eq!(c.control, 5, "{c:?}");
    assert!(c.codes.contains(45) && c.codes.contains(46), "{c:?}");
}

#[test]
fn enip_start_stop_and_firmware() {
    let c = commands("EthernetIP/cip_start_plc.pcap", IcsProto::Enip);
    assert_eq!(c.stop_restart, 1, "{c:?}");
    assert!(c.codes.contains(0x06), "{c:?}");
    // A Set_Attribute_Single *response* is not a command.
    let c = commands("EthernetIP/cip-eth-set-2.pcap", IcsProto::Enip);
    assert_eq!(dangerous(&c) + c.read, 0, "{c:?}");
    let c = commands("openics/EIP-RemoteModeChangeAttempt.pcap", IcsProto::Enip);
    assert_eq!(c.stop_restart, 1, "{c:?}");
    assert!(c.codes.contains(0x07), "{c:?}");
    let c = commands("openics/EIP-FirmwareChange.pcap", IcsProto::Enip);
    assert!(c.program_firmware > 5000, "{c:?}");
}
