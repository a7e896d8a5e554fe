//! The topology: wires capture, flow table, batching, transport and consumers into the
//! processes the `normwatch` binary runs.
//!
//! - [`capture`]: capture files or a live interface through the flow table.
//! - [`exporters`]: NetFlow, IPFIX and sFlow listeners beside (or instead of) packets.
//! - [`batcher`]: flow records into keyed, sequenced batch messages.
//! - [`publish`]: the publishing side (records into batches onto the flows topic).
//! - [`consume`]: the consuming side (verify, de-duplicate, hand on, then commit).
//! - [`detector`]: the detector stage and where alert events go.
//! - [`sinks`]: the seams between stages (record, flow and alert sinks).
//! - [`evidence`]: closed alerts into signed evidence packages, stored and delivered.
//! - [`topology`]: `run`, `sensor`, `detect` and `flows`.
//! - [`metrics`]: the process's metric registry.
//!
//! Architecture Invariant: a consumed batch's offset is committed only after its records were
//! handed on and flushed; a rejected batch is counted and skipped, never fatal.

pub mod batcher;
pub mod capture;
pub mod consume;
pub mod detector;
pub mod evidence;
pub mod exporters;
pub mod metrics;
pub mod publish;
pub mod sinks;
pub mod topology;
