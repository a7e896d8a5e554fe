//! Any bytes, as a frame of any supported link type, through the decoder and the flow table.
#![no_main]

use libfuzzer_sys::fuzz_target;
use normwatch_sensor::decode::LinkType;
use normwatch_sensor::{FlowConfig, FlowTable};

const LINKS: [LinkType; 8] = [
    LinkType::Ethernet,
    LinkType::Null,
    LinkType::Loop,
    LinkType::Raw,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::Fddi,
    LinkType::Ppp,
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let link = LINKS[usize::from(sel) % LINKS.len()];
    let cfg = FlowConfig {
        max_flows: 16,
        ..FlowConfig::default()
    };
    let mut table = FlowTable::new(cfg);
    let mut out = Vec::new();
    // The same frame twice (second time as the reply direction's state machine sees it) and
    // with a shorter capture than the wire, to reach the snap-length paths.
    table.process_frame(link, frame, frame.len(), 1_000_000_000, &mut out);
    table.process_frame(
        link,
        frame,
        frame.len() + usize::from(sel),
        2_000_000_000,
        &mut out,
    );
    table.flush(&mut out);
});
