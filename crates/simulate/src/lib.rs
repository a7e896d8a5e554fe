//! Realistic traffic for named scenarios, written as a pcap file, so a deployment can be
//! exercised without real attacks: benign background towards a few protected assets (web
//! clients completing handshakes, a SCADA master polling its PLC over Modbus) plus one or
//! more attacks (a SYN flood from a botnet, a DNS amplification through open resolvers, an
//! unauthorised Modbus write, an S7 PLC STOP).
//!
//! The traffic is generated from a fixed seed and a fixed start time, so a scenario gives the
//! same bytes every time. Addresses: the assets are those of `config/demo.toml`; attack sources
//! sit in prefixes that MaxMind's public test databases register to named countries, so the
//! evidence stage has States to address.

pub mod packet;

pub use packet::PcapWriter;
use packet::{tcp, udp, ACK, FIN, PSH, RST, SYN};
use std::io::Write;
use std::net::Ipv4Addr;

/// 2026-01-15T08:00:00Z: where every scenario's clock starts.
pub const START_SECS: u64 = 1_768_464_000;
const NS: u64 = 1_000_000_000;

/// The scenarios, with what each holds.
pub const SCENARIOS: [(&str, &str); 7] = [
    (
        "syn-flood",
        "a botnet floods the hospital portal (203.0.113.10:443) with SYNs; real patients' connections stop completing",
    ),
    (
        "dns-amplification",
        "open DNS resolvers answer spoofed queries at the water utility's web server (198.51.100.20)",
    ),
    (
        "modbus-write",
        "an outside host writes registers of the grid SCADA PLC (10.10.10.20:502)",
    ),
    (
        "s7-stop",
        "an outside host sends PLC STOP to the water plant's S7 controller (10.20.0.50:102)",
    ),
    ("all", "every attack above, one after the other"),
    (
        "s7-stop-held",
        "an engineering station keeps an S7 session to the water plant's PLC open, polling it every second, and sends PLC STOP 20 s in without closing it",
    ),
    (
        "campaign",
        "one actor's hosts in DE and the US SYN-flood the hospital portal, the water utility's web server and the national CSIRT's portal at once, then keep connecting at a low rate; the DE hosts stop 75 s in, the US hosts go on to the end (3 minutes)",
    ),
];

/// Why a scenario could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error(
        "unknown scenario {0:?}; known: syn-flood, dns-amplification, modbus-write, s7-stop, all, s7-stop-held, campaign"
    )]
    Unknown(String),
    #[error("cannot write the capture: {0}")]
    Io(#[from] std::io::Error),
}

/// What was written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub packets: u64,
    pub bytes: u64,
    /// Event time of the first and last packet (ns since the epoch).
    pub first_ns: u64,
    pub last_ns: u64,
}

/// splitmix64: small, seedable, good enough to spread ports and addresses.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn port(&mut self) -> u16 {
        1024 + self.below(64_000) as u16
    }

    /// An address inside `net/len`.
    fn addr_in(&mut self, net: [u8; 4], len: u32) -> Ipv4Addr {
        let base = u32::from(Ipv4Addr::from(net));
        let size = 1u64 << (32 - len);
        Ipv4Addr::from(base + self.below(size) as u32)
    }
}

/// Packets collected out of order, written sorted by time.
#[derive(Debug, Default)]
struct Trace {
    packets: Vec<(u64, u64, Vec<u8>)>,
}

impl Trace {
    fn push(&mut self, ts_ns: u64, frame: Vec<u8>) {
        let n = self.packets.len() as u64;
        self.packets.push((ts_ns, n, frame));
    }

    /// One TCP connection: handshake, request, response, close. `answered`: whether the
    /// server answers the SYN at all (an overwhelmed server does not; the client retries once).
    #[allow(clippy::too_many_arguments)]
    fn tcp_session(
        &mut self,
        t: u64,
        client: Ipv4Addr,
        cport: u16,
        server: Ipv4Addr,
        sport: u16,
        request: &[u8],
        response: &[u8],
        answered: bool,
    ) {
        let (c, s) = (1000u32, 5000u32);
        let rtt = 20_000_000;
        self.push(t, tcp(client, cport, server, sport, c, 0, SYN, &[]));
        if !answered {
            self.push(t + NS, tcp(client, cport, server, sport, c, 0, SYN, &[]));
            return;
        }
        self.push(
            t + rtt / 2,
            tcp(server, sport, client, cport, s, c + 1, SYN | ACK, &[]),
        );
        let t = t + rtt;
        self.push(t, tcp(client, cport, server, sport, c + 1, s + 1, ACK, &[]));
        self.push(
            t + 1_000,
            tcp(
                client,
                cport,
                server,
                sport,
                c + 1,
                s + 1,
                PSH | ACK,
                request,
            ),
        );
        let c2 = c + 1 + request.len() as u32;
        let t = t + rtt;
        self.push(
            t,
            tcp(server, sport, client, cport, s + 1, c2, PSH | ACK, response),
        );
        let s2 = s + 1 + response.len() as u32;
        let t = t + rtt;
        self.push(t, tcp(client, cport, server, sport, c2, s2, FIN | ACK, &[]));
        self.push(
            t + rtt / 2,
            tcp(server, sport, client, cport, s2, c2 + 1, FIN | ACK, &[]),
        );
        self.push(
            t + rtt,
            tcp(client, cport, server, sport, c2 + 1, s2 + 1, ACK, &[]),
        );
    }

    fn write<W: Write>(mut self, out: W) -> Result<Written, SimulateError> {
        self.packets.sort_unstable_by_key(|(t, n, _)| (*t, *n));
        let mut w = PcapWriter::new(out)?;
        let mut s = Written::default();
        for (t, _, f) in &self.packets {
            w.packet(*t, f)?;
            s.packets += 1;
            s.bytes += f.len() as u64;
            if s.first_ns == 0 {
                s.first_ns = *t;
            }
            s.last_ns = *t;
        }
        w.finish()?;
        Ok(s)
    }
}

const PORTAL: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const WATER_WEB: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const SCADA_PLC: Ipv4Addr = Ipv4Addr::new(10, 10, 10, 20);
const SCADA_MASTER: Ipv4Addr = Ipv4Addr::new(10, 10, 10, 5);
const WATER_PLC: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 50);

/// Where the services' benign clients come from: 100.64.0.0/14 (shared address space,
/// RFC 6598), one /16 per service (the portal's first, then the water utility's and the
/// national CSIRT's). No attack comes from here.
pub const CLIENTS: ([u8; 4], u8) = ([100, 64, 0, 0], 14);

/// The /16 of service `n`'s clients within [`CLIENTS`].
fn clients_of(n: u8) -> [u8; 4] {
    let [a, b, c, d] = CLIENTS.0;
    [a, b + n, c, d]
}

/// The botnet's prefixes: registered in DE, US, FR and GB in MaxMind's test data.
const BOTNET: [([u8; 4], u32); 4] = [
    ([89, 160, 20, 128], 25),
    ([81, 2, 69, 160], 27),
    ([2, 125, 160, 216], 29),
    ([216, 160, 83, 56], 29),
];
/// Open resolvers used as reflectors (US and PH registrations in the test data).
const RESOLVERS: [([u8; 4], u32); 2] = [([50, 114, 0, 0], 22), ([202, 196, 224, 0], 20)];
/// Where the industrial attacks come from (registered RO and DE in the test data).
const ICS_ATTACKER: Ipv4Addr = Ipv4Addr::new(67, 43, 156, 14);
const S7_ATTACKER: Ipv4Addr = Ipv4Addr::new(89, 160, 20, 115);

/// When each attack runs, in seconds from the start (the scenario lasts `END` seconds).
const FLOOD: (u64, u64) = (30, 45);
const AMPLIFICATION: (u64, u64) = (60, 72);
const MODBUS_AT: u64 = 85;
const S7_AT: u64 = 95;
/// The held S7 session opens here; its STOP follows [`HELD_STOP_AFTER`] seconds later.
const HELD_AT: u64 = 5;
const HELD_STOP_AFTER: u64 = 20;
const END: u64 = 120;

/// Writes scenario `name` as a pcap to `out`.
pub fn write_scenario<W: Write>(name: &str, out: W) -> Result<Written, SimulateError> {
    if name == "campaign" {
        let mut rng = Rng(0x6361_6d70_6169_676e);
        let mut trace = Trace::default();
        campaign(&mut trace, &mut rng, START_SECS * NS);
        return trace.write(out);
    }
    let (flood, amp, modbus, s7) = match name {
        "syn-flood" => (true, false, false, false),
        "dns-amplification" => (false, true, false, false),
        "modbus-write" => (false, false, true, false),
        "s7-stop" => (false, false, false, true),
        "all" => (true, true, true, true),
        "s7-stop-held" => (false, false, false, false),
        other => return Err(SimulateError::Unknown(other.into())),
    };
    let mut rng = Rng(0x6e6f_726d_7761_7463);
    let mut trace = Trace::default();
    let t0 = START_SECS * NS;
    background(&mut trace, &mut rng, t0, flood);
    if flood {
        syn_flood(&mut trace, &mut rng, t0);
    }
    if amp {
        amplification(&mut trace, &mut rng, t0);
    }
    if modbus {
        modbus_write(&mut trace, t0 + MODBUS_AT * NS);
    }
    if s7 {
        s7_stop(&mut trace, t0 + S7_AT * NS, None);
    }
    if name == "s7-stop-held" {
        s7_stop(&mut trace, t0 + HELD_AT * NS, Some(END - HELD_AT - 1));
    }
    trace.write(out)
}

/// Web clients of the portal and the water utility (about 20 and 5 connections a second),
/// and the SCADA master polling its PLC twice a second. While the portal is flooded, four in
/// five of its real clients get no answer.
fn background(trace: &mut Trace, rng: &mut Rng, t0: u64, flood: bool) {
    let request = b"GET /appointments HTTP/1.1\r\nHost: portal.example\r\n\r\n";
    let response = [b'x'; 900];
    for sec in 0..END {
        for i in 0..20u64 {
            let t = t0 + sec * NS + i * (NS / 20) + rng.below(NS / 40);
            let client = rng.addr_in(clients_of(0), 16);
            let under_flood = flood && (FLOOD.0..FLOOD.1).contains(&sec);
            let answered = !under_flood || rng.below(5) == 0;
            trace.tcp_session(
                t,
                client,
                rng.port(),
                PORTAL,
                443,
                request,
                &response,
                answered,
            );
        }
        for i in 0..5u64 {
            let t = t0 + sec * NS + i * (NS / 5) + rng.below(NS / 10);
            let client = rng.addr_in(clients_of(1), 16);
            trace.tcp_session(
                t,
                client,
                rng.port(),
                WATER_WEB,
                443,
                request,
                &response,
                true,
            );
        }
    }
    // Modbus polling on one long connection: read holding registers (function 3).
    let (mport, c0, s0) = (50_200u16, 7000u32, 9000u32);
    let t = t0 + NS / 10;
    trace.push(t, tcp(SCADA_MASTER, mport, SCADA_PLC, 502, c0, 0, SYN, &[]));
    trace.push(
        t + 1_000_000,
        tcp(
            SCADA_PLC,
            502,
            SCADA_MASTER,
            mport,
            s0,
            c0 + 1,
            SYN | ACK,
            &[],
        ),
    );
    trace.push(
        t + 2_000_000,
        tcp(
            SCADA_MASTER,
            mport,
            SCADA_PLC,
            502,
            c0 + 1,
            s0 + 1,
            ACK,
            &[],
        ),
    );
    let (mut c, mut s) = (c0 + 1, s0 + 1);
    for n in 0..(END * 2 - 2) {
        let t = t0 + NS / 2 + n * NS / 2;
        let tid = (n as u16).to_be_bytes();
        let req = [tid[0], tid[1], 0, 0, 0, 6, 1, 3, 0, 0, 0, 10];
        let mut resp = vec![tid[0], tid[1], 0, 0, 0, 23, 1, 3, 20];
        resp.extend_from_slice(&[0u8; 20]);
        trace.push(
            t,
            tcp(SCADA_MASTER, mport, SCADA_PLC, 502, c, s, PSH | ACK, &req),
        );
        c += req.len() as u32;
        trace.push(
            t + 3_000_000,
            tcp(SCADA_PLC, 502, SCADA_MASTER, mport, s, c, PSH | ACK, &resp),
        );
        s += resp.len() as u32;
    }
}

/// 4 000 SYNs a second for 15 s from the botnet's addresses, never completed.
fn syn_flood(trace: &mut Trace, rng: &mut Rng, t0: u64) {
    let per_sec = 4_000u64;
    for sec in FLOOD.0..FLOOD.1 {
        for i in 0..per_sec {
            let t = t0 + sec * NS + i * (NS / per_sec);
            let (net, len) = BOTNET[rng.below(BOTNET.len() as u64) as usize];
            let src = rng.addr_in(net, len);
            let seq = rng.next() as u32;
            trace.push(t, tcp(src, rng.port(), PORTAL, 443, seq, 0, SYN, &[]));
        }
    }
}

/// 1 500 DNS answers a second of about 1.2 kB each for 12 s from 300 resolvers, to queries
/// nobody at the utility sent (the attacker spoofed its address).
fn amplification(trace: &mut Trace, rng: &mut Rng, t0: u64) {
    let resolvers: Vec<Ipv4Addr> = (0..300)
        .map(|i| {
            let (net, len) = RESOLVERS[i % RESOLVERS.len()];
            rng.addr_in(net, len)
        })
        .collect();
    // A DNS response header (id, flags: response, 1 question, many answers) and RRSIG-like
    // filler.
    let mut answer = vec![0x1f, 0x2e, 0x81, 0x80, 0, 1, 0, 12, 0, 0, 0, 1];
    answer.resize(1_200, 0x5a);
    let per_sec = 1_500u64;
    for sec in AMPLIFICATION.0..AMPLIFICATION.1 {
        for i in 0..per_sec {
            let t = t0 + sec * NS + i * (NS / per_sec);
            let r = resolvers[rng.below(resolvers.len() as u64) as usize];
            trace.push(
                t,
                udp(r, 53, WATER_WEB, 10_000 + rng.below(50_000) as u16, &answer),
            );
        }
    }
}

/// An outside host connects to the grid PLC and writes registers (functions 6 and 16).
fn modbus_write(trace: &mut Trace, t: u64) {
    let (p, c0, s0) = (41_337u16, 100u32, 300u32);
    trace.push(t, tcp(ICS_ATTACKER, p, SCADA_PLC, 502, c0, 0, SYN, &[]));
    trace.push(
        t + 30_000_000,
        tcp(SCADA_PLC, 502, ICS_ATTACKER, p, s0, c0 + 1, SYN | ACK, &[]),
    );
    trace.push(
        t + 60_000_000,
        tcp(ICS_ATTACKER, p, SCADA_PLC, 502, c0 + 1, s0 + 1, ACK, &[]),
    );
    let (mut c, mut s) = (c0 + 1, s0 + 1);
    let mut t = t + 100_000_000;
    for n in 0..5u16 {
        let tid = n.to_be_bytes();
        let reg = (40 + n).to_be_bytes();
        let req = [tid[0], tid[1], 0, 0, 0, 6, 1, 6, reg[0], reg[1], 0xff, 0xff];
        trace.push(
            t,
            tcp(ICS_ATTACKER, p, SCADA_PLC, 502, c, s, PSH | ACK, &req),
        );
        c += req.len() as u32;
        trace.push(
            t + 30_000_000,
            tcp(SCADA_PLC, 502, ICS_ATTACKER, p, s, c, PSH | ACK, &req),
        );
        s += req.len() as u32;
        t += 200_000_000;
    }
    // Write multiple registers: 4 registers from address 0.
    let req = [
        0, 9, 0, 0, 0, 15, 1, 16, 0, 0, 0, 4, 8, 0, 1, 0, 2, 0, 3, 0, 4,
    ];
    trace.push(
        t,
        tcp(ICS_ATTACKER, p, SCADA_PLC, 502, c, s, PSH | ACK, &req),
    );
    c += req.len() as u32;
    let resp = [0, 9, 0, 0, 0, 6, 1, 16, 0, 0, 0, 4];
    trace.push(
        t + 30_000_000,
        tcp(SCADA_PLC, 502, ICS_ATTACKER, p, s, c, PSH | ACK, &resp),
    );
    s += resp.len() as u32;
    trace.push(
        t + 100_000_000,
        tcp(ICS_ATTACKER, p, SCADA_PLC, 502, c, s, RST | ACK, &[]),
    );
}

/// An outside host opens an ISO-on-TCP connection to the water plant's S7 PLC, negotiates
/// the PDU size and sends PLC STOP, then closes the connection. Held (`Some(secs)`): it reads
/// a data block every second for `secs` seconds instead, sends the STOP
/// [`HELD_STOP_AFTER`] seconds in, and leaves the connection open.
fn s7_stop(trace: &mut Trace, t: u64, held: Option<u64>) {
    let (p, c0, s0) = (49_152u16, 2_000u32, 8_000u32);
    let tx = |trace: &mut Trace, t: u64, c: &mut u32, s: u32, payload: &[u8]| {
        trace.push(
            t,
            tcp(S7_ATTACKER, p, WATER_PLC, 102, *c, s, PSH | ACK, payload),
        );
        *c += payload.len() as u32;
    };
    let rx = |trace: &mut Trace, t: u64, c: u32, s: &mut u32, payload: &[u8]| {
        trace.push(
            t,
            tcp(WATER_PLC, 102, S7_ATTACKER, p, *s, c, PSH | ACK, payload),
        );
        *s += payload.len() as u32;
    };
    trace.push(t, tcp(S7_ATTACKER, p, WATER_PLC, 102, c0, 0, SYN, &[]));
    trace.push(
        t + 40_000_000,
        tcp(WATER_PLC, 102, S7_ATTACKER, p, s0, c0 + 1, SYN | ACK, &[]),
    );
    trace.push(
        t + 80_000_000,
        tcp(S7_ATTACKER, p, WATER_PLC, 102, c0 + 1, s0 + 1, ACK, &[]),
    );
    let (mut c, mut s) = (c0 + 1, s0 + 1);
    // COTP connection request / confirm (TSAPs 0x0100 / 0x0102).
    let cr = [
        3, 0, 0, 22, 17, 0xe0, 0, 0, 0, 1, 0, 0xc1, 2, 1, 0, 0xc2, 2, 1, 2, 0xc0, 1, 10,
    ];
    let cc = [
        3, 0, 0, 22, 17, 0xd0, 0, 1, 0, 1, 0, 0xc1, 2, 1, 0, 0xc2, 2, 1, 2, 0xc0, 1, 10,
    ];
    tx(trace, t + 100_000_000, &mut c, s, &cr);
    rx(trace, t + 140_000_000, c, &mut s, &cc);
    // S7 setup communication (job 0xf0) and its ack.
    let setup = [
        3, 0, 0, 25, 2, 0xf0, 0x80, 0x32, 1, 0, 0, 0, 1, 0, 8, 0, 0, 0xf0, 0, 0, 1, 0, 1, 1, 0xe0,
    ];
    let setup_ack = [
        3, 0, 0, 27, 2, 0xf0, 0x80, 0x32, 3, 0, 0, 0, 1, 0, 8, 0, 0, 0, 0, 0xf0, 0, 0, 1, 0, 1, 0,
        0xf0,
    ];
    tx(trace, t + 200_000_000, &mut c, s, &setup);
    rx(trace, t + 240_000_000, c, &mut s, &setup_ack);
    // PLC STOP: job 0x29 with the "P_PROGRAM" service name.
    let mut stop = vec![3, 0, 0, 33, 2, 0xf0, 0x80, 0x32, 1, 0, 0, 0, 2, 0, 16, 0, 0];
    stop.extend_from_slice(&[0x29, 0, 0, 0, 0, 0, 9]);
    stop.extend_from_slice(b"P_PROGRAM");
    let stop_ack = [
        3, 0, 0, 20, 2, 0xf0, 0x80, 0x32, 3, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0, 0x29,
    ];
    if let Some(secs) = held {
        // Read var (job 0x04): one byte of DB1, and its answer.
        let read = [
            3, 0, 0, 31, 2, 0xf0, 0x80, 0x32, 1, 0, 0, 0, 3, 0, 14, 0, 0, 0x04, 1, 0x12, 0x0a,
            0x10, 0x02, 0, 1, 0, 1, 0x84, 0, 0, 0,
        ];
        let read_ack = [
            3, 0, 0, 26, 2, 0xf0, 0x80, 0x32, 3, 0, 0, 0, 3, 0, 2, 0, 5, 0, 0, 0x04, 1, 0xff, 4, 0,
            8, 7,
        ];
        for sec in 1..=secs {
            let at = t + sec * NS;
            tx(trace, at, &mut c, s, &read);
            rx(trace, at + 20_000_000, c, &mut s, &read_ack);
            if sec == HELD_STOP_AFTER {
                tx(trace, at + 500_000_000, &mut c, s, &stop);
                rx(trace, at + 540_000_000, c, &mut s, &stop_ack);
            }
        }
        return;
    }
    tx(trace, t + 300_000_000, &mut c, s, &stop);
    rx(trace, t + 340_000_000, c, &mut s, &stop_ack);
    trace.push(
        t + 400_000_000,
        tcp(S7_ATTACKER, p, WATER_PLC, 102, c, s, FIN | ACK, &[]),
    );
    trace.push(
        t + 440_000_000,
        tcp(WATER_PLC, 102, S7_ATTACKER, p, s, c + 1, FIN | ACK, &[]),
    );
    trace.push(
        t + 480_000_000,
        tcp(S7_ATTACKER, p, WATER_PLC, 102, c + 1, s + 1, ACK, &[]),
    );
}

/// The national CSIRT's public portal (asset `national-csirt`).
const CSIRT_WEB: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// The campaign's hosts: 12 in a prefix registered in DE and 10 in one registered in the US
/// (MaxMind's test data).
const CAMPAIGN_DE: ([u8; 4], u8) = ([89, 160, 20, 129], 12);
const CAMPAIGN_US: ([u8; 4], u8) = ([81, 2, 69, 161], 10);
/// The campaign's flood, when its DE hosts stop, and its end (seconds from the start).
pub const CAMPAIGN_FLOOD: (u64, u64) = (20, 35);
pub const CAMPAIGN_DE_STOP: u64 = 75;
pub const CAMPAIGN_END: u64 = 180;

/// The hosts of one State in the campaign.
pub fn campaign_hosts(us: bool) -> Vec<Ipv4Addr> {
    let (base, n) = if us { CAMPAIGN_US } else { CAMPAIGN_DE };
    (0..n)
        .map(|i| Ipv4Addr::new(base[0], base[1], base[2], base[3] + i))
        .collect()
}

/// One actor's hosts in two States against three operators: a SYN flood of 3 000 SYNs a
/// second on each victim, then one completed HTTPS connection per host and victim every five
/// seconds (below every threshold: the alerts close and the requests go out while it goes
/// on). The DE hosts stop at [`CAMPAIGN_DE_STOP`]; the US hosts keep going. Background
/// clients use each service throughout.
fn campaign(trace: &mut Trace, rng: &mut Rng, t0: u64) {
    let victims = [PORTAL, WATER_WEB, CSIRT_WEB];
    let request = b"GET / HTTP/1.1\r\nHost: portal.example\r\n\r\n";
    let response = [b'x'; 600];
    for sec in 0..CAMPAIGN_END {
        for (v, server) in victims.iter().enumerate() {
            for i in 0..4u64 {
                let t = t0 + sec * NS + i * (NS / 4) + rng.below(NS / 8);
                let client = rng.addr_in(clients_of(v as u8), 16);
                trace.tcp_session(
                    t,
                    client,
                    rng.port(),
                    *server,
                    443,
                    request,
                    &response,
                    true,
                );
            }
        }
    }
    let mut hosts = campaign_hosts(false);
    let de = hosts.len();
    hosts.extend(campaign_hosts(true));
    let per_sec = 3_000u64;
    for sec in CAMPAIGN_FLOOD.0..CAMPAIGN_FLOOD.1 {
        for (v, server) in victims.iter().enumerate() {
            for i in 0..per_sec {
                let t = t0 + sec * NS + i * (NS / per_sec) + v as u64 * 1_000;
                let src = hosts[rng.below(hosts.len() as u64) as usize];
                let seq = rng.next() as u32;
                trace.push(t, tcp(src, rng.port(), *server, 443, seq, 0, SYN, &[]));
            }
        }
    }
    for sec in (CAMPAIGN_FLOOD.1..CAMPAIGN_END - 2).step_by(5) {
        for (h, src) in hosts.iter().enumerate() {
            if h < de && sec >= CAMPAIGN_DE_STOP {
                continue;
            }
            for server in victims {
                let t = t0 + sec * NS + rng.below(4 * NS);
                trace.tcp_session(t, *src, rng.port(), server, 443, request, &response, true);
            }
        }
    }
}
