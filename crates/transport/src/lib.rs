//! The seam every stage-to-stage arrow goes through.
//!
//! - [`wire`]: the versioned batch envelope (magic, schema version, sensor id, batch sequence
//!   number, record count, CRC-32C) around compactly encoded records.
//! - [`dedup`]: drops batches already processed (same sensor, same sequence number), so a
//!   redelivery after a crash changes nothing downstream.
//! - [`bus`]: the publisher/subscriber traits and the in-process bus (bounded, with
//!   backpressure), the embedded default. Kafka implements the same traits.
//! - [`kafka`]: the Kafka implementation (rdkafka), with the sensor's disk spool.
//! - [`metrics`]: the transport's Prometheus metrics.
//! - [`spool`]: the sensor's bounded on-disk queue for messages the broker could not take.

pub mod bus;
pub mod dedup;
pub mod kafka;
pub mod metrics;
pub mod spool;
pub mod wire;
