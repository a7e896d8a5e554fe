//! UDP reflector protocols: the well-known source ports of services that answer a small
//! spoofed request with a large response, and so serve as amplifiers.

/// Reflector protocols, by the port their responses come from.
pub const REFLECTORS: [(u16, &str); 16] = [
    (19, "CharGen"),
    (53, "DNS"),
    (111, "portmapper"),
    (123, "NTP"),
    (137, "NetBIOS"),
    (161, "SNMP"),
    (389, "CLDAP"),
    (427, "SLP"),
    (1900, "SSDP"),
    (3283, "Apple Remote Desktop"),
    (3702, "WS-Discovery"),
    (5353, "mDNS"),
    (10001, "Ubiquiti discovery"),
    (11211, "memcached"),
    (37810, "DVR discovery (37810)"),
    (47808, "BACnet"),
];

/// Multiplier of the lookup's hash: it sends the sixteen ports to sixteen different slots of
/// [`SLOTS`] (checked when the table is built, at compile time).
const MUL: u32 = 0xFBB2_30BB;
const SLOT_BITS: u32 = 5;

#[inline(always)]
const fn slot(port: u16) -> usize {
    ((port as u32).wrapping_mul(MUL) >> (32 - SLOT_BITS)) as usize
}

/// Each reflector port and its position, at its hash's slot. A free slot holds the first
/// reflector's port, which hashes to a slot of its own, so no port matches there.
const SLOTS: [(u16, u8); 1 << SLOT_BITS] = {
    let mut t = [(REFLECTORS[0].0, 0u8); 1 << SLOT_BITS];
    let mut used = [false; 1 << SLOT_BITS];
    let mut i = 0;
    while i < REFLECTORS.len() {
        let s = slot(REFLECTORS[i].0);
        assert!(
            !used[s],
            "two reflector ports share a slot: choose another multiplier"
        );
        used[s] = true;
        t[s] = (REFLECTORS[i].0, i as u8);
        i += 1;
    }
    t
};

/// The position in [`REFLECTORS`] of the protocol answering from `port`: one multiply, one
/// load, one comparison.
#[inline(always)]
pub fn reflector(port: u16) -> Option<usize> {
    let (p, i) = SLOTS[slot(port)];
    (p == port).then_some(i as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_and_the_lookup_agree() {
        for (i, (port, _)) in REFLECTORS.iter().enumerate() {
            assert_eq!(reflector(*port), Some(i));
        }
        assert_eq!(reflector(80), None);
        assert_eq!(reflector(443), None);
        for port in 0..=u16::MAX {
            let listed = REFLECTORS.iter().position(|(p, _)| *p == port);
            assert_eq!(reflector(port), listed, "port {port}");
        }
    }
}
