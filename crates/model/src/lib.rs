//! Data types shared by every normwatch stage. This crate does no I/O and owns no threads.
//!
//! - [`flow`]: the [`FlowRecord`] a sensor emits for every connection.
//! - [`ics`]: industrial-protocol command counts carried by a flow.
//! - [`asset`]: protected assets and the longest-prefix index that matches flows to them.
//! - [`intern`]: the shared texts (sensor and asset ids) decoders hand out.

pub mod alert;
pub mod asset;
pub mod flow;
pub mod ics;
pub mod intern;
pub mod sketch;

pub use alert::{
    Alert, AlertKind, AlertNorms, AlertState, Impairment, Measured, Severity, SpoofingAssessment,
    TopSource,
};
pub use asset::{Asset, AssetId, AssetIndex, AssetMatch, Rates, Role, Sector, Side, Thresholds};
pub use flow::{
    ip_proto, Attempts, ConnState, DirStats, EndReason, FlowRecord, Prior, PriorDir, Span, TcpFlags,
};
pub use ics::{CommandClass, FunctionCodes, IcsCounts, IcsProto, IcsSummary};
pub use sketch::{addr_key, Cardinality};
