//! `cascade rollout status`: each pipeline's latest rollout as the server last saved it
//! (`DATA_DIR/rollouts.json`, written at every judged window): phase, step and share, the
//! guardrails' breaches, the last windows of both arms, the arms' outcomes compared, and shadow
//! scoring's comparison.

use crate::project::Project;
use anyhow::{Context, Result};
use cascade_api::{RolloutState, WindowSummary};
use std::collections::BTreeMap;

#[derive(Debug, clap::Subcommand)]
pub enum RolloutCommand {
    /// Each pipeline's latest rollout, as of its last judged window. The live view of a running
    /// server (with the window in progress) is `GET /v1/rollouts`.
    Status {
        /// Only this pipeline.
        #[arg(long)]
        pipeline: Option<String>,
        /// The last N windows shown per rollout.
        #[arg(long, default_value_t = 5)]
        windows: usize,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(project: &Project, cmd: &RolloutCommand) -> Result<()> {
    let RolloutCommand::Status { pipeline, windows, json } = cmd;
    let path = project.data_dir().join(cascade_serving::ROLLOUTS_FILE);
    let states: BTreeMap<String, RolloutState> = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("{}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(e).with_context(|| format!("{}", path.display())),
    };
    let states: Vec<&RolloutState> =
        states.values().filter(|s| pipeline.as_ref().is_none_or(|p| &s.pipeline == p)).collect();
    if *json {
        println!("{}", serde_json::to_string_pretty(&states)?);
        return Ok(());
    }
    if states.is_empty() {
        println!(
            "no rollout yet: give a pipeline [pipelines.<name>.rollout] and point the `challenger` alias at a bundle"
        );
    }
    for s in states {
        let phase = serde_json::to_value(s.phase)?;
        println!(
            "{}: {} of v{} against champion {} — {} (step {}, {:.0}% of users)",
            s.pipeline,
            s.strategy,
            s.challenger,
            s.champion.map_or("-".into(), |v| format!("v{v}")),
            phase.as_str().unwrap_or_default(),
            s.step,
            s.share * 100.0,
        );
        if let Some(reason) = &s.reason {
            println!("  {reason}");
        }
        for (guardrail, n) in &s.breaches {
            println!("  {guardrail}: crossed in the last {n} window(s)");
        }
        let fmt = |w: &WindowSummary| {
            let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
            let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.2}%", v * 100.0));
            format!(
                "{:>6} req  p99 {:>6} ms  errors {:>6}  fallbacks {:>6}  ctr {:>6}",
                w.requests,
                ms(w.p99_latency_ms),
                pct(w.error_rate),
                pct(w.fallback_rate),
                pct(w.ctr)
            )
        };
        for w in s.windows.iter().rev().take(*windows).rev() {
            let at = cascade_core::Timestamp(w.ended_ms);
            let crossed =
                if w.crossed.is_empty() { String::new() } else { format!("  crossed: {}", w.crossed.join(", ")) };
            println!("  {at}  champion {}", fmt(&w.champion));
            println!("  {:24}  challenger {}{crossed}", "", fmt(&w.challenger));
        }
        let c = cascade_serving::rollout::compare(s.champion_outcomes.clone(), s.challenger_outcomes.clone());
        if let (Some(a), Some(b), Some(d), Some(low), Some(high), Some(p)) =
            (c.champion_rate, c.challenger_rate, c.difference, c.ci95_low, c.ci95_high, c.p_value)
        {
            println!(
                "  outcomes per request: champion {}/{} ({:.2}%), challenger {}/{} ({:.2}%): {:+.2} points (95% CI {:+.2} to {:+.2}), p = {p:.2e}",
                c.champion.converted,
                c.champion.requests,
                a * 100.0,
                c.challenger.converted,
                c.challenger.requests,
                b * 100.0,
                d * 100.0,
                low * 100.0,
                high * 100.0,
            );
        }
        if let Some(sh) = &s.shadow {
            let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
            println!(
                "  shadow: {} scored, {} dropped, {} failed; overlap@k {}, RBO {}, |Δscore| {}, p99 {} ms",
                sh.scored,
                sh.dropped,
                sh.failed,
                f(sh.mean_overlap_at_k),
                f(sh.mean_rbo),
                f(sh.mean_abs_score_diff),
                f(sh.p99_latency_ms)
            );
        }
    }
    Ok(())
}
