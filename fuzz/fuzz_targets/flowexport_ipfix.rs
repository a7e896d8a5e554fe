//! Any bytes as an IPFIX datagram (see `flowexport_common.rs`).
#![no_main]

#[path = "flowexport_common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|input: &[u8]| common::run(input, &10u16.to_be_bytes()));
