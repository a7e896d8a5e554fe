//! The `TPACKET_V3` ring on the loopback interface: datagrams this test sends to itself on
//! 127.0.0.1 come out of the ring whole, with kernel timestamps inside the sending window,
//! and a classic BPF filter keeps out everything it rejects before the ring.
//!
//! Needs root (CAP_NET_RAW). Without it the test says so and passes, except under CI (`CI`
//! set), where its absence is a failure.

#![allow(clippy::print_stderr)]

use normwatch_sensor::capture::live::{BpfInstruction, LiveCapture, LiveConfig};
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n")
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// `udp dst port PORT` over IPv4 on an Ethernet-framed interface (loopback has a zero
/// Ethernet header), header without options — what `tcpdump -ddd` gives, written out.
fn udp_dst_port(port: u16) -> Vec<BpfInstruction> {
    let i = |code, jt, jf, k| BpfInstruction { code, jt, jf, k };
    vec![
        i(0x28, 0, 0, 12),              // ldh [12]: EtherType
        i(0x15, 0, 5, 0x0800),          // IPv4?
        i(0x30, 0, 0, 23),              // ldb [23]: protocol
        i(0x15, 0, 3, 17),              // UDP?
        i(0x28, 0, 0, 36),              // ldh [36]: destination port
        i(0x15, 0, 1, u32::from(port)), // ours?
        i(0x06, 0, 0, 262_144),         // accept
        i(0x06, 0, 0, 0),               // reject
    ]
}

/// Frames of the datagrams to `port` read from `cap` until `want` arrived or 5 s passed:
/// (payload length on the wire, kernel timestamp), and how many other frames were seen.
fn collect(cap: &mut LiveCapture, port: u16, want: usize) -> (Vec<(usize, u64)>, usize) {
    let (mut ours, mut others) = (Vec::new(), 0);
    let started = Instant::now();
    while ours.len() < want && started.elapsed() < Duration::from_secs(5) {
        let Some(block) = cap.next_block(Duration::from_millis(100)).unwrap() else {
            continue;
        };
        for f in block.frames() {
            let d = f.data;
            let is_ours = d.len() >= 42
                && d[12..14] == [0x08, 0x00]
                && d[23] == 17
                && u16::from_be_bytes([d[36], d[37]]) == port;
            if is_ours {
                assert_eq!(f.wire_len, d.len(), "a small datagram is captured whole");
                ours.push((f.wire_len, f.ts_ns));
            } else {
                others += 1;
            }
        }
    }
    (ours, others)
}

#[test]
fn ring_delivers_every_datagram_with_kernel_times_and_the_filter_holds() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "ring test needs root under CI"
        );
        eprintln!("skipping ring test: needs root");
        return;
    }
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = rx.local_addr().unwrap().port();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let cfg = |filter| LiveConfig {
        interface: "lo".into(),
        snaplen: 65_535,
        promiscuous: false,
        ring_bytes: 4 << 20,
        filter,
        fanout: None,
    };
    let mut all = LiveCapture::open(&cfg(None)).unwrap();
    let mut filtered = LiveCapture::open(&cfg(Some(udp_dst_port(port)))).unwrap();
    // A datagram to another port the filter must keep out.
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    let before = now_ns();
    for n in 0..200u16 {
        tx.send_to(&vec![0u8; 10 + usize::from(n)], rx.local_addr().unwrap())
            .unwrap();
        tx.send_to(b"not for the filter", other.local_addr().unwrap())
            .unwrap();
    }
    let after = now_ns();
    // Loopback frames are seen twice by a socket bound to all protocols on `lo` (outgoing
    // and incoming); each copy is a frame.
    let (seen_all, _) = collect(&mut all, port, 400);
    let (seen, others) = collect(&mut filtered, port, 400);
    for got in [&seen_all, &seen] {
        assert_eq!(got.len(), 400, "every datagram, both directions");
        for (k, (len, ts)) in got.iter().enumerate() {
            assert_eq!(*len, 14 + 20 + 8 + 10 + k / 2, "frame {k}");
            assert!(
                (before..=after).contains(ts),
                "kernel time {ts} outside the send window"
            );
        }
    }
    assert_eq!(others, 0, "the filter let other frames into the ring");
    filtered.read_kernel_stats();
    let s = filtered.stats();
    assert_eq!(s.received.load(std::sync::atomic::Ordering::Relaxed), 400);
    assert_eq!(
        s.kernel_dropped.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn a_filter_the_kernel_refuses_is_an_error_not_a_silent_capture() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    // A jump past the end of the program.
    let bad = vec![
        BpfInstruction {
            code: 0x15,
            jt: 9,
            jf: 9,
            k: 0,
        },
        BpfInstruction {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0,
        },
    ];
    let e = LiveCapture::open(&LiveConfig {
        interface: "lo".into(),
        snaplen: 65_535,
        promiscuous: false,
        ring_bytes: 4 << 20,
        filter: Some(bad),
        fanout: None,
    })
    .unwrap_err();
    assert!(
        e.to_string().contains("refused the capture filter on lo"),
        "{e}"
    );
}
