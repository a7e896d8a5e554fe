//! Service impairment: on the asset's service ports, handshake completion or the share of
//! answered flows collapses against the baseline while load rises, over a window of seconds.

use crate::alert::*;
use crate::baseline::Baseline;
use crate::rules::*;
use crate::state::*;
use crate::{Settings, NS};
use normwatch_model::{Alert, AlertKind, Impairment, Measured, Severity};

/// The service figures of a window of seconds, summed.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Window {
    pub(crate) secs: u64,
    pub(crate) att: u64,
    pub(crate) est: u64,
    pub(crate) flows: u64,
    pub(crate) ans: u64,
    pub(crate) pkts: u64,
}

impl Window {
    pub(crate) fn add(&mut self, b: &Bucket) {
        self.att += u64::from(b.svc_att);
        self.est += u64::from(b.svc_est);
        self.flows += u64::from(b.svc_flows);
        self.ans += u64::from(b.svc_ans);
        self.pkts += u64::from(b.pkts);
    }
}

/// Service impairment over window `w` against the learned normal `base`: handshake
/// completion or the share of answered flows (each judged on at least
/// `impairment_min_attempts`) fell below `impairment_drop` of normal while flows or packets
/// rose above `impairment_load_factor` times normal.
pub(crate) fn judge(w: &Window, base: &Baseline, s: &Settings) -> Option<Impairment> {
    let min = s.impairment_min_attempts;
    let completion = (w.att >= min).then(|| w.est as f64 / w.att as f64);
    let response = (w.flows >= min).then(|| w.ans as f64 / w.flows as f64);
    let base_completion = base.completion();
    let fell = |now: Option<f64>, base: Option<f64>| matches!((now, base), (Some(n), Some(b)) if n < b * s.impairment_drop);
    let collapsed = fell(completion, base_completion) || fell(response, base.response());
    let wf = w.secs.max(1) as f64;
    let mean = base.mean();
    let load = w.flows as f64 / wf > mean.svc_flows * s.impairment_load_factor
        || w.pkts as f64 / wf > mean.pkts * s.impairment_load_factor;
    (collapsed && load).then_some(Impairment {
        handshake_completion: completion,
        baseline_handshake_completion: base_completion,
        response_ratio: response,
    })
}

/// A second `b` whose own service figures already fell below the normal `base`'s: not
/// learned from, so an impairment that builds up over the window does not teach itself as
/// normal.
pub(crate) fn suspect(b: &Bucket, base: &Baseline, s: &Settings) -> bool {
    let min = (s.impairment_min_attempts / s.impairment_window.as_secs().max(1)).max(1);
    let fell = |n: u32, of: u32, base: Option<f64>| {
        u64::from(of) >= min
            && base.is_some_and(|base| f64::from(n) / f64::from(of) < base * s.impairment_drop)
    };
    fell(b.svc_est, b.svc_att, base.completion()) || fell(b.svc_ans, b.svc_flows, base.response())
}

impl<const N: usize> AssetState<N> {
    /// See [`suspect`].
    pub(crate) fn suspect(&self, s: &Settings, b: &Bucket) -> bool {
        suspect(b, &self.base, s)
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
        let mut win = Window {
            secs: w,
            ..Window::default()
        };
        for t in (sec + 1).saturating_sub(w)..=sec {
            if let Some(b) = self.get(t) {
                win.add(&b);
            }
        }
        let Some(imp) = judge(&win, &self.base, s) else {
            return false;
        };
        if let Some(o) = self.open.iter_mut().find(|o| is_flood(o.kind)) {
            // The flood is the attack; the impairment is its effect, shown on its alert.
            worst(&mut o.impairment, imp);
            return true;
        }
        let (completion, base_completion, response) = (
            imp.handshake_completion,
            imp.baseline_handshake_completion,
            imp.response_ratio,
        );
        let base_response = self.base.response();
        let (flows, pkts, wf) = (win.flows, win.pkts, w as f64);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::Sample;

    /// A normal of 10 flows/s on the service ports, 90 % completing.
    fn normal() -> Baseline {
        let mut b = Baseline::default();
        let s = Sample {
            pkts: 100.0,
            svc_flows: 10.0,
            answered: 9.0,
            attempts: 10.0,
            established: 9.0,
            ..Sample::default()
        };
        for _ in 0..600 {
            b.fold(0.01, 0, Some(&s));
        }
        b
    }

    fn window(att: u64, est: u64, pkts: u64) -> Window {
        Window {
            secs: 5,
            att,
            est,
            flows: att,
            ans: est,
            pkts,
        }
    }

    #[test]
    fn a_collapse_under_rising_load_is_impairment_and_either_alone_is_not() {
        let s = Settings::default();
        let base = normal();
        let imp = judge(&window(500, 50, 5_000), &base, &s).expect("impaired");
        assert!(imp.handshake_completion.unwrap() < 0.2);
        // Load risen, completion normal.
        assert!(judge(&window(500, 450, 5_000), &base, &s).is_none());
        // Completion collapsed, load normal.
        assert!(judge(&window(50, 5, 500), &base, &s).is_none());
        // Too few attempts to judge.
        assert!(judge(&window(10, 0, 5_000), &base, &s).is_none());
    }

    #[test]
    fn a_second_already_below_normal_is_suspect() {
        let s = Settings::default();
        let base = normal();
        let b = Bucket {
            svc_att: 100,
            svc_est: 10,
            ..Bucket::default()
        };
        assert!(suspect(&b, &base, &s));
        let ok = Bucket { svc_est: 90, ..b };
        assert!(!suspect(&ok, &base, &s));
    }
}
