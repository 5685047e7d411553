//! The promotion gate: whether a newly trained bundle may take an alias from the champion.
//!
//! A bundle is judged by what it would serve: the whole cascade's offline metric when it has
//! rankers (`metrics.cascade`), else its best retriever's. It passes when that is not worse than
//! the champion's, measured the same way, beyond a tolerance; the verdict and its numbers are
//! recorded in the bundle's manifest. Both figures come from each bundle's own held-out latest
//! period, so consecutive trainings are compared on neighbouring periods, not on one.

use crate::{Manifest, ManifestDraft};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a bundle that passes the gate goes (`train.promote`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Promote {
    /// Straight to `champion`: in service at once (small projects).
    Champion,
    /// To `challenger`: the pipelines' rollouts (shadow, canary, ...) take it from there.
    #[default]
    Challenger,
    /// Nowhere: the verdict is recorded and a person moves the alias.
    Manual,
}

/// What the gate asks of a new bundle (`[train]`: the list length of the metric, `promote`,
/// `promotion_tolerance`, `promotion_ece_tolerance`).
#[derive(Debug, Clone, PartialEq)]
pub struct GatePolicy {
    /// e.g. `ndcg_at_10`.
    pub metric: String,
    /// How much lower than the champion's the metric may be.
    pub tolerance: f64,
    /// How much higher than the champion's the cascade's calibration error (ECE) may be.
    pub ece_tolerance: f64,
    pub promote: Promote,
}

/// The gate's verdict, as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateVerdict {
    pub passed: bool,
    /// The alias the bundle was given (`champion`, `challenger`), if any.
    pub promoted_to: Option<String>,
    /// e.g. `ndcg_at_10`.
    pub metric: String,
    /// The bundle's figure, and which of its models it comes from (`cascade` or a retriever).
    pub value: Option<f64>,
    pub source: Option<String>,
    pub champion_version: Option<u64>,
    pub champion_value: Option<f64>,
    pub tolerance: f64,
    /// The cascade's expected calibration error, the bundle's and the champion's (when both
    /// have rankers).
    #[serde(default)]
    pub ece: Option<f64>,
    #[serde(default)]
    pub champion_ece: Option<f64>,
    pub reason: String,
}

/// What a bundle would serve, measured by `metric`: the cascade's figure when it has one, else
/// the best retriever's.
pub fn served_metric(metrics: &BTreeMap<String, BTreeMap<String, f64>>, metric: &str) -> Option<(String, f64)> {
    if let Some(v) = metrics.get("cascade").and_then(|m| m.get(metric)) {
        return Some(("cascade".into(), *v));
    }
    metrics
        .iter()
        .filter_map(|(model, ms)| ms.get(metric).map(|v| (model.clone(), *v)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Judges `candidate` against `champion` (none: the family has no champion yet): its served
/// metric within `tolerance` of the champion's, and, when both have calibrated rankers, its ECE
/// within `ece_tolerance` of the champion's.
pub fn judge(candidate: &ManifestDraft, champion: Option<&Manifest>, policy: &GatePolicy) -> GateVerdict {
    let (metric, tolerance) = (policy.metric.as_str(), policy.tolerance);
    let mine = served_metric(&candidate.metrics, metric);
    let theirs = champion.and_then(|c| served_metric(&c.draft.metrics, metric));
    let ece = |m: &BTreeMap<String, BTreeMap<String, f64>>| m.get("cascade").and_then(|c| c.get("ece")).copied();
    let (my_ece, their_ece) = (ece(&candidate.metrics), champion.and_then(|c| ece(&c.draft.metrics)));
    let (mut passed, mut reason) = match (champion, &mine, &theirs) {
        (None, _, _) => (true, "no champion yet".to_string()),
        (Some(c), Some((_, v)), Some((_, w))) if *v + tolerance >= *w => {
            (true, format!("{metric} {v:.4} against champion v{} {w:.4} (tolerance {tolerance})", c.version))
        }
        (Some(c), Some((_, v)), Some((_, w))) => (
            false,
            format!("{metric} {v:.4} is worse than champion v{} {w:.4} beyond the tolerance {tolerance}", c.version),
        ),
        (Some(c), None, Some((_, w))) => {
            (false, format!("no {metric} to judge (too little held-out data); champion v{} has {w:.4}", c.version))
        }
        (Some(c), _, None) => (true, format!("champion v{} has no {metric} to compare with", c.version)),
    };
    if let (true, Some(c), Some(e), Some(f)) = (passed, champion, my_ece, their_ece) {
        let t = policy.ece_tolerance;
        if e > f + t {
            passed = false;
            reason = format!("ECE {e:.4} is worse than champion v{} {f:.4} beyond the tolerance {t}", c.version);
        } else {
            reason.push_str(&format!("; ECE {e:.4} against {f:.4}"));
        }
    }
    // With no champion there is nothing a rollout could compare with: the first bundle serves.
    let promoted_to = match (passed, champion, policy.promote) {
        (false, _, _) | (true, Some(_), Promote::Manual) => None,
        (true, None, _) | (true, _, Promote::Champion) => Some(crate::CHAMPION.to_string()),
        (true, Some(_), Promote::Challenger) => Some(crate::CHALLENGER.to_string()),
    };
    GateVerdict {
        passed,
        promoted_to,
        metric: metric.into(),
        value: mine.as_ref().map(|m| m.1),
        source: mine.map(|m| m.0),
        champion_version: champion.map(|c| c.version),
        champion_value: theirs.map(|t| t.1),
        tolerance,
        ece: my_ece,
        champion_ece: their_ece,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(pairs: &[(&str, f64)]) -> ManifestDraft {
        let mut d = ManifestDraft::default();
        for (model, v) in pairs {
            d.metrics.entry(model.to_string()).or_default().insert("ndcg_at_10".into(), *v);
        }
        d
    }

    fn policy(tolerance: f64, promote: Promote) -> GatePolicy {
        GatePolicy { metric: "ndcg_at_10".into(), tolerance, ece_tolerance: 0.02, promote }
    }

    fn manifest(version: u64, pairs: &[(&str, f64)]) -> Manifest {
        Manifest {
            format_version: crate::FORMAT_VERSION,
            version,
            created_at: String::new(),
            code_version: String::new(),
            draft: draft(pairs),
            artifacts: vec![],
        }
    }

    #[test]
    fn the_cascade_is_judged_when_present_else_the_best_retriever() {
        assert_eq!(served_metric(&draft(&[("als", 0.3), ("cascade", 0.2)]).metrics, "ndcg_at_10").unwrap().1, 0.2);
        assert_eq!(
            served_metric(&draft(&[("als", 0.3), ("pop", 0.1)]).metrics, "ndcg_at_10"),
            Some(("als".into(), 0.3))
        );
        assert_eq!(served_metric(&draft(&[]).metrics, "ndcg_at_10"), None);
    }

    #[test]
    fn worse_beyond_the_tolerance_is_held() {
        let champion = manifest(3, &[("cascade", 0.25)]);
        let v = judge(&draft(&[("cascade", 0.24)]), Some(&champion), &policy(0.005, Promote::Challenger));
        assert!(!v.passed && v.promoted_to.is_none(), "{v:?}");
        assert!(v.reason.contains("worse than champion v3"), "{}", v.reason);
        let v = judge(&draft(&[("cascade", 0.246)]), Some(&champion), &policy(0.005, Promote::Challenger));
        assert_eq!(v.promoted_to.as_deref(), Some("challenger"), "{v:?}");
        let v = judge(&draft(&[("cascade", 0.3)]), Some(&champion), &policy(0.0, Promote::Champion));
        assert_eq!(v.promoted_to.as_deref(), Some("champion"));
        let v = judge(&draft(&[("cascade", 0.3)]), Some(&champion), &policy(0.0, Promote::Manual));
        assert!(v.passed && v.promoted_to.is_none());
        // No figure of its own against a champion that has one: held.
        let v = judge(&draft(&[]), Some(&champion), &policy(0.0, Promote::Champion));
        assert!(!v.passed);
    }

    #[test]
    fn a_worse_calibration_beyond_its_tolerance_is_held() {
        let with_ece = |ndcg: f64, ece: f64| {
            let mut d = draft(&[("cascade", ndcg)]);
            d.metrics.get_mut("cascade").unwrap().insert("ece".into(), ece);
            d
        };
        let mut champion = manifest(3, &[]);
        champion.draft = with_ece(0.25, 0.03);
        let v = judge(&with_ece(0.26, 0.08), Some(&champion), &policy(0.005, Promote::Challenger));
        assert!(!v.passed, "{v:?}");
        assert!(v.reason.starts_with("ECE 0.0800 is worse than champion v3 0.0300"), "{}", v.reason);
        let v = judge(&with_ece(0.26, 0.04), Some(&champion), &policy(0.005, Promote::Challenger));
        assert!(v.passed && v.reason.ends_with("; ECE 0.0400 against 0.0300"), "{}", v.reason);
        assert_eq!((v.ece, v.champion_ece), (Some(0.04), Some(0.03)));
    }

    #[test]
    fn the_first_bundle_becomes_champion_whatever_the_policy() {
        for promote in [Promote::Champion, Promote::Challenger, Promote::Manual] {
            let v = judge(&draft(&[("als", 0.1)]), None, &policy(0.0, promote));
            assert_eq!(v.promoted_to.as_deref(), Some("champion"), "{promote:?}");
        }
    }
}
