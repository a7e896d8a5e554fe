//! sensor
pub mod ics;
