//! Service impairment: on the asset's service ports, handshake completion or the share of
//! answered flows collapses against the baseline while load rises, over a window of seconds.

use crate::alert::*;
use crate::rules::*;
use crate::state::*;
use crate::{Settings, NS};
use normwatch_model::{Alert, AlertKind, Impairment, Measured, Severity};

impl<const N: usize> AssetState<N> {
    /// A second whose own service figures already fell below the baseline's: not learned
    /// from, so an impairment that builds up over the window does not teach itself as normal.
    pub(crate) fn suspect(&self, s: &Settings, b: &Bucket) -> bool {
        let min = (s.impairment_min_attempts / s.impairment_window.as_secs().max(1)).max(1);
        let fell = |n: u32, of: u32, base: Option<f64>| {
            u64::from(of) >= min
                && base.is_some_and(|base| f64::from(n) / f64::from(of) < base * s.impairment_drop)
        };
        fell(b.svc_est, b.svc_att, self.base.completion())
            || fell(b.svc_ans, b.svc_flows, self.base.response())
    }

    /// Service impairment in the window ending at final second `sec`; whether it holds.
    pub(crate) fn impairment(&mut self, cx: &Ctx, sec: u64, out: &mut Vec<Alert>) -> bool {
        let s = cx.s;
        if self.base.seconds < s.baseline_warmup.as_secs() {
            return false;
        }
        let w = s
            .impairment_window
            .as_secs()
            .clamp(1, self.ring_len() as u64);
        let (mut att, mut est, mut flows, mut ans, mut pkts) = (0u64, 0u64, 0u64, 0u64, 0u64);
        for t in (sec + 1).saturating_sub(w)..=sec {
            if let Some(b) = self.get(t) {
                att += u64::from(b.svc_att);
                est += u64::from(b.svc_est);
                flows += u64::from(b.svc_flows);
                ans += u64::from(b.svc_ans);
                pkts += u64::from(b.pkts);
            }
        }
        let min = s.impairment_min_attempts;
        let completion = (att >= min).then(|| est as f64 / att as f64);
        let response = (flows >= min).then(|| ans as f64 / flows as f64);
        let base_completion = self.base.completion();
        let base_response = self.base.response();
        let fell = |now: Option<f64>, base: Option<f64>| matches!((now, base), (Some(n), Some(b)) if n < b * s.impairment_drop);
        let collapsed = fell(completion, base_completion) || fell(response, base_response);
        let wf = w as f64;
        let mean = self.base.mean();
        let load = flows as f64 / wf > mean.svc_flows * s.impairment_load_factor
            || pkts as f64 / wf > mean.pkts * s.impairment_load_factor;
        if !(collapsed && load) {
            return false;
        }
        let imp = Impairment {
            handshake_completion: completion,
            baseline_handshake_completion: base_completion,
            response_ratio: response,
        };
        if let Some(o) = self.open.iter_mut().find(|o| is_flood(o.kind)) {
            // The flood is the attack; the impairment is its effect, shown on its alert.
            worst(&mut o.impairment, imp);
            return true;
        }
        let pct = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{:.0}%", v * 100.0));
        let summary = move || {
            format!(
                "service ports: {} of connection attempts completed (normally {}), {} of {flows} flows answered (normally {}), over {w} s with load above {:.1}× normal",
                pct(completion),
                pct(base_completion),
                pct(response),
                pct(base_response),
                s.impairment_load_factor
            )
        };
        let measured = Measured {
            pps: pkts as f64 / wf,
            bps: 0.0,
            new_flows_per_s: flows as f64 / wf,
        };
        let baseline = self.baseline_now(s);
        self.hit(
            cx,
            AlertKind::ServiceImpairment,
            sec,
            ((sec + 1).saturating_sub(w)) * NS,
            measured,
            Severity::High,
            summary,
            Extra {
                impairment: Some(imp),
                ..Extra::baseline(baseline)
            },
            out,
        );
        true
    }
}
