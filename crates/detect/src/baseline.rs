//! The learned normal of an asset: exponentially weighted moving averages over quiet seconds
//! (seconds in which no flood alert was open and no limit was crossed).

/// What one second of an asset's inbound traffic looked like.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub pkts: f64,
    pub bits: f64,
    pub new_flows: f64,
    /// TCP connection attempts to service ports and those that were established.
    pub attempts: f64,
    pub established: f64,
    /// Flows to service ports and those the asset answered.
    pub svc_flows: f64,
    pub answered: f64,
}

/// Moving averages of [`Sample`]s.
#[derive(Clone, Copy, Debug, Default)]
pub struct Baseline {
    /// The raw averages; they start from zero, so read them through [`Baseline::mean`].
    raw: Sample,
    /// The average a constant 1 would have: divides out the start from zero (bias
    /// correction), so a young baseline is not mistaken for a low one.
    weight: f64,
    /// Quiet seconds folded in (zero-traffic seconds included).
    pub seconds: u64,
}

impl Baseline {
    /// Folds in `gap` seconds without traffic, then `s` (if any).
    pub fn fold(&mut self, alpha: f64, gap: u64, s: Option<&Sample>) {
        if gap > 0 {
            // Quiet empty seconds pull every mean towards zero by (1 - α) each.
            let keep = (1.0 - alpha).powi(gap.min(i32::MAX as u64) as i32);
            self.weight = 1.0 - (1.0 - self.weight) * keep;
            let m = &mut self.raw;
            for v in [
                &mut m.pkts,
                &mut m.bits,
                &mut m.new_flows,
                &mut m.attempts,
                &mut m.established,
                &mut m.svc_flows,
                &mut m.answered,
            ] {
                *v *= keep;
            }
            self.seconds += gap;
        }
        if let Some(s) = s {
            self.weight += alpha * (1.0 - self.weight);
            let m = &mut self.raw;
            let step = |m: &mut f64, x: f64| *m += alpha * (x - *m);
            step(&mut m.pkts, s.pkts);
            step(&mut m.bits, s.bits);
            step(&mut m.new_flows, s.new_flows);
            step(&mut m.attempts, s.attempts);
            step(&mut m.established, s.established);
            step(&mut m.svc_flows, s.svc_flows);
            step(&mut m.answered, s.answered);
            self.seconds += 1;
        }
    }

    /// Adds traffic that belonged to seconds already folded in: each second's weight is α, so
    /// a mass spread over past seconds adds α times itself (their decay since is ignored).
    pub fn add_mass(&mut self, alpha: f64, pkts: f64, bits: f64) {
        self.raw.pkts += alpha * pkts;
        self.raw.bits += alpha * bits;
    }

    /// The averages, corrected for their start from zero.
    pub fn mean(&self) -> Sample {
        if self.weight <= 0.0 {
            return Sample::default();
        }
        let w = self.weight;
        let r = &self.raw;
        Sample {
            pkts: r.pkts / w,
            bits: r.bits / w,
            new_flows: r.new_flows / w,
            attempts: r.attempts / w,
            established: r.established / w,
            svc_flows: r.svc_flows / w,
            answered: r.answered / w,
        }
    }

    /// Normal handshake completion on service ports, if attempts were ever seen.
    pub fn completion(&self) -> Option<f64> {
        let r = &self.raw;
        (r.attempts > 1e-9).then(|| (r.established / r.attempts).min(1.0))
    }

    /// Normal share of service-port flows the asset answered.
    pub fn response(&self) -> Option<f64> {
        let r = &self.raw;
        (r.svc_flows > 1e-9).then(|| (r.answered / r.svc_flows).min(1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_to_a_steady_rate_and_decays_over_silence() {
        let mut b = Baseline::default();
        let s = Sample {
            pkts: 100.0,
            attempts: 10.0,
            established: 9.0,
            ..Sample::default()
        };
        // Corrected for the start from zero: right from the first second.
        b.fold(0.01, 0, Some(&s));
        assert!((b.mean().pkts - 100.0).abs() < 1e-6);
        for _ in 0..2000 {
            b.fold(0.01, 0, Some(&s));
        }
        assert!((b.mean().pkts - 100.0).abs() < 0.1);
        assert!((b.completion().unwrap() - 0.9).abs() < 1e-6);
        assert_eq!(b.response(), None);
        b.fold(0.01, 69, None);
        assert!((b.mean().pkts - 100.0 * 0.99f64.powi(69)).abs() < 0.1);
        assert_eq!(b.seconds, 2070);
    }
}
