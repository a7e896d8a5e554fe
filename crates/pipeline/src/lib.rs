//! The topology: wires capture, flow table, batching, transport and consumers into the
//! processes the `normwatch` binary runs.
//!
//! - [`source`]: capture files or a live interface through the flow table.
//! - [`exporters`]: NetFlow, IPFIX and sFlow listeners beside (or instead of) packets.
//! - [`batcher`]: flow records into keyed, sequenced batch messages.
//! - [`sensor`]: the publishing side.
//! - [`detect`]: the consuming side (verify, de-duplicate, hand on, then commit).
//! - [`alerts`]: the detector stage and where alert events go.
//! - [`evidence`]: closed alerts into signed evidence packages, stored and delivered.
//! - [`topology`]: `sensor`, `detect`, `run` and `flows`.
//! - [`metrics`]: the process's metric registry.
//!
//! Architecture Invariant: a consumed batch's offset is committed only after its records were
//! handed on and flushed; a rejected batch is counted and skipped, never fatal.

pub mod alerts;
pub mod batcher;
pub mod detect;
pub mod evidence;
pub mod exporters;
pub mod metrics;
pub mod sensor;
pub mod source;
pub mod topology;
