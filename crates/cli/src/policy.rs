//! `cascade evaluate --policy`: the flags, reading the project's log and printing. The
//! evaluation itself (attribution of outcomes, target policies, the estimates) is
//! `cascade_eval::policy`.

use crate::project::Project;
use anyhow::{Result, anyhow, bail};
use cascade_eval::offpolicy::Estimate;
use cascade_eval::policy::{Evaluation, LogEvents, Options, Target, evaluate, outcome_weights};
use cascade_serving::ServingConfig;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

/// The flags of `cascade evaluate --policy`.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Off-policy evaluation (--policy)")]
pub struct PolicyArgs {
    /// Off-policy evaluation of a serving policy on logged impressions: logged | greedy | epsilon:<share>
    ///
    /// Off-policy evaluation answers "what would another serving policy have earned?" from the
    /// impressions `cascade serve` logged (serving.log_impressions = true), without an A/B test.
    /// Each logged impression carries the probability the serving policy had of showing that item
    /// in that request (its propensity: 1 for the greedy top of the slate, m/|tail| for an item
    /// explored from the tail). Weighting each shown item's reward by the ratio
    /// target propensity / logged propensity makes the logged rewards an unbiased estimate of the
    /// target's reward per request: that is IPS (inverse propensity scoring). SNIPS
    /// (self-normalised IPS) divides by the mean weight: a small bias for much less variance,
    /// usually the one to read; trust IPS instead when the target shows fewer items per request
    /// than the logger. Both assume an item's reward does not depend on the rest of the slate or
    /// on its position, and both can only credit items the logger sometimes showed: a target that
    /// would show items the logger never explored is estimated low (reported as the share of the
    /// target's slate outside the logged support).
    ///
    /// Targets (m = explored slots, tail = the logged exploration.tail):
    ///   logged            the serving policy itself: IPS equals the observed mean reward per
    ///                     request (a sanity check of the log and the join)
    ///   greedy            no exploration: the ranker's top k
    ///   epsilon:<share>   epsilon-greedy with m = round(share * k) slots drawn uniformly from
    ///                     ranks [k - m, k - m + tail), as exploration.method = "epsilon_greedy"
    ///
    /// Rewards: outcome events (--outcomes) count for the impression of the response named by
    /// their fields.request_id (same item), else for the latest impression of the same user and
    /// item within --attribution-window before them, at most once each; an impression's reward
    /// is the sum of its outcomes' weights.
    ///
    /// Read with the standard errors: the 95% interval is value ± 1.96 standard errors, and an
    /// effective sample size (ESS) far below the impressions means a few heavily weighted items
    /// decide the estimate (try --clip). With --json: one JSON object.
    ///
    /// Examples:
    ///   cascade evaluate --policy logged                 # must match the served mean
    ///   cascade evaluate --policy greedy --json          # what exploration costs
    ///   cascade evaluate --policy epsilon:0.05 --pipeline home --outcomes click,purchase
    #[arg(
        long,
        value_name = "TARGET",
        value_parser = parse_target,
        verbatim_doc_comment,
        conflicts_with_all = ["train", "test", "cut", "models"],
    )]
    pub policy: Option<Target>,
    /// An outcome without fields.request_id counts for the latest impression of the same user
    /// and item this long before it ("0s": only request_id matches).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_window)]
    pub attribution_window: AttributionWindow,
    /// Cap every weight target/logged at this value: bounded variance for a downward bias.
    #[arg(long, value_name = "WEIGHT", requires = "policy")]
    pub clip: Option<f64>,
    /// Comma-separated outcome event types [default: the [train] interactions types]. Each is
    /// weighted as in [train] interactions, or 1 when not listed there.
    #[arg(long, value_name = "TYPES", value_delimiter = ',', requires = "policy")]
    pub outcomes: Vec<String>,
    /// Only the requests served by this pipeline [default: all].
    #[arg(long, value_name = "NAME", requires = "policy")]
    pub pipeline: Option<String>,
}

/// `logged`, `greedy` or `epsilon:<share>` with the share within 0..=1.
pub fn parse_target(text: &str) -> Result<Target, String> {
    text.parse().map_err(|e: cascade_eval::Error| e.to_string())
}

/// `--attribution-window`: as written, and in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributionWindow {
    pub text: String,
    pub ms: i64,
}

/// A duration in the configuration's syntax ("90s", "1h", "2days").
pub fn parse_window(text: &str) -> Result<AttributionWindow, String> {
    // Parsed by the configuration's own duration field, so the flag accepts exactly what
    // cascade.toml does (humantime) without another dependency.
    let doc = format!("reload_interval = {}", toml::Value::String(text.to_string()));
    let config: ServingConfig = toml::from_str(&doc).map_err(|e| e.message().trim().to_string())?;
    let ms = i64::try_from(config.reload_interval.as_millis()).unwrap_or(i64::MAX);
    Ok(AttributionWindow { text: text.to_string(), ms })
}

/// `cascade evaluate --policy ...`.
pub fn run(config: Option<&Path>, args: &PolicyArgs, json_output: bool) -> Result<()> {
    let Some(target) = args.policy else { bail!("--policy is required for off-policy evaluation") };
    let project = Project::load(config)?;
    let weights = outcome_weights(&project.config, &args.outcomes).map_err(|e| anyhow!("--outcomes: {e}"))?;
    // Read-only, so it works beside `cascade serve`.
    let store = crate::open_store_read_only(&project)?;
    let log = LogEvents::read(store.read_from(store.log_stats()?.first_offset), &weights)?;
    store.close()?;
    if let Some((offset, reason)) = &log.first_skip {
        eprintln!(
            "warning: skipped {} impression events without the fields serving logs (first: offset {offset}: {reason})",
            log.skipped
        );
    }
    let options =
        Options { target, window_ms: args.attribution_window.ms, clip: args.clip, pipeline: args.pipeline.clone() };
    let e = evaluate(&log.impressions, &log.outcomes, &options)?;
    if json_output {
        let estimate = |x: &Estimate| {
            json!({
                "value": x.value,
                "std_error": x.std_error,
                "ci95": interval(x.value, x.std_error),
                "effective_sample_size": x.effective_sample_size,
                "clipped": x.clipped,
            })
        };
        let mut out = json!({
            "policy": target.to_string(),
            "pipeline": args.pipeline,
            "attribution_window": args.attribution_window.text,
            "clip": args.clip,
            "outcome_weights": weights,
            "requests": e.requests,
            "impressions": e.impressions,
            "skipped_impressions": log.skipped,
            "outcomes": e.outcomes,
            "attributed_by_request_id": e.by_request_id,
            "attributed_by_window": e.by_window,
            "unattributed": e.unattributed,
            "logged": {"value": e.logged.value, "std_error": e.logged.std_error, "ci95": interval(e.logged.value, e.logged.std_error)},
            "ips": estimate(&e.ips),
            "snips": e.snips.as_ref().ok().map(estimate),
            "unsupported_share": e.unsupported_share,
            "requests_reshaped_by_rules": e.reshaped,
        });
        if let (Err(reason), Some(map)) = (&e.snips, out.as_object_mut()) {
            map.insert("snips_error".into(), json!(reason.to_string()));
        }
        println!("{}", serde_json::to_string(&out)?);
    } else {
        print_report(&e, target, args, &weights);
    }
    Ok(())
}

/// The 95% normal interval, `[value - 1.96 se, value + 1.96 se]`.
fn interval(value: f64, std_error: f64) -> [f64; 2] {
    [value - 1.96 * std_error, value + 1.96 * std_error]
}

fn print_report(e: &Evaluation, target: Target, args: &PolicyArgs, weights: &BTreeMap<String, f64>) {
    let weights: Vec<String> = weights.iter().map(|(t, w)| format!("{t}={w}")).collect();
    println!(
        "target `{target}` on {} requests, {} impressions ({})",
        e.requests,
        e.impressions,
        args.pipeline.as_deref().map_or("all pipelines".to_string(), |p| format!("pipeline {p}"))
    );
    println!(
        "outcomes ({}): {} events; {} attributed by request_id, {} by window ({}), {} to no impression at all",
        weights.join(", "),
        e.outcomes,
        e.by_request_id,
        e.by_window,
        args.attribution_window.text,
        e.unattributed
    );
    println!();
    println!(
        "{:<16} {:>9} {:>9} {:>21} {:>10} {:>8}",
        "reward/request", "value", "std err", "95% interval", "ESS", "clipped"
    );
    let row = |name: &str, value: f64, se: f64, rest: String| {
        let [lo, hi] = interval(value, se);
        println!("{name:<16} {value:>9.4} {se:>9.4} {:>21} {rest}", format!("[{lo:.4}, {hi:.4}]"));
    };
    row("logged (served)", e.logged.value, e.logged.std_error, String::new());
    let est = |x: &Estimate| format!("{:>10.1} {:>8}", x.effective_sample_size, x.clipped);
    row("target IPS", e.ips.value, e.ips.std_error, est(&e.ips));
    match &e.snips {
        Ok(s) => row("target SNIPS", s.value, s.std_error, est(s)),
        Err(reason) => println!("{:<16} {reason}", "target SNIPS"),
    }
    if e.unsupported_share > 1e-9 {
        println!(
            "\nwarning: {:.1}% of the target's expected slate is outside the logged support (ranks the \
             logger never showed); their rewards are missing, so both estimates are biased low",
            100.0 * e.unsupported_share
        );
    }
    if e.reshaped > 0 {
        println!(
            "note: in {} requests rules removed, skipped or displaced ranked items; target propensities \
             of their explored items assume greedy_rank counts only the items the rules kept",
            e.reshaped
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        assert_eq!(parse_target("logged"), Ok(Target::Logged));
        assert_eq!(parse_target("greedy"), Ok(Target::Greedy));
        assert_eq!(parse_target("epsilon:0.25"), Ok(Target::Epsilon(0.25)));
        assert_eq!(Target::Epsilon(0.25).to_string(), "epsilon:0.25");
        for bad in ["epsilon:1.5", "epsilon:x", "epsilon", "thompson"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_window("1h").unwrap().ms, 3_600_000);
        assert_eq!(parse_window("90s").unwrap().ms, 90_000);
        assert_eq!(parse_window("0s").unwrap().ms, 0);
        assert!(parse_window("soon").is_err());
    }
}
