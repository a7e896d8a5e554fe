//! Partitioning keys: all of one asset's traffic lands on one partition (and one detector).

use normwatch_model::FlowRecord;

/// The key of a flow record on `normwatch.flows`: its asset id, or for flows that touch no
/// protected asset, the responder address.
pub fn flow_key(r: &FlowRecord) -> Vec<u8> {
    match &r.asset {
        Some(a) => a.id.as_str().as_bytes().to_vec(),
        None => r.resp_addr.to_string().into_bytes(),
    }
}
