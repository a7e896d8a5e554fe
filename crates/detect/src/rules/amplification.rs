//! Amplification and reflection: unsolicited responses from reflector ports above their own
//! limit, or a flood mostly made of them.

use crate::reflect::REFLECTORS;

pub(crate) fn amp_summary(
    pkts: u64,
    bits: u64,
    refl: &[u64; REFLECTORS.len()],
    refl_out: u64,
) -> String {
    let mut by: Vec<(u64, &str, u16)> = refl
        .iter()
        .zip(REFLECTORS.iter())
        .filter(|(v, _)| **v > 0)
        .map(|(v, (port, name))| (*v, *name, *port))
        .collect();
    by.sort_by(|a, b| b.0.cmp(&a.0).then(a.2.cmp(&b.2)));
    let protos: Vec<String> = by
        .iter()
        .map(|(v, name, port)| format!("{name} (port {port}): {v} bytes"))
        .collect();
    let total: u64 = by.iter().map(|x| x.0).sum();
    let ratio = if refl_out == 0 {
        "the asset sent nothing to them (unsolicited)".to_string()
    } else {
        format!(
            "the asset sent them {refl_out} bytes, an in/out ratio of {:.0}",
            total as f64 / refl_out as f64
        )
    };
    format!(
        "{pkts} packets ({bits} bits) of reflector responses in one second; reflected so far: {}; {ratio}",
        protos.join(", ")
    )
}
