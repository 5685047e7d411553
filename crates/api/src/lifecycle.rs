//! Wire types of the model lifecycle: bundles and their aliases, rollouts, the audit log.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// One bundle of the registry (`GET /v1/models`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelVersion {
    pub version: u64,
    /// The model family (`recommender`).
    pub family: String,
    /// RFC 3339.
    pub created_at: String,
    /// Training rows.
    pub rows: u64,
    /// The bundle's models (`als`, `itemknn`, ...).
    pub models: Vec<String>,
    /// The aliases pointing at it.
    pub aliases: Vec<String>,
    /// Offline metrics per model (`cascade` for the whole cascade) on the held-out latest period.
    pub metrics: BTreeMap<String, BTreeMap<String, f64>>,
    /// The promotion gate's verdict when it was trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub gate: Option<serde_json::Value>,
}

/// Body of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelsResponse {
    pub models: Vec<ModelVersion>,
}

/// Body of `GET /v1/models/{family}/aliases`: alias → version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AliasesResponse {
    pub family: String,
    pub aliases: BTreeMap<String, u64>,
}

/// Body of `PUT /v1/models/{family}/aliases/{alias}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"version": 7, "why": "passed review"}))]
pub struct SetAlias {
    /// The bundle version the alias points to from now on.
    #[serde(deserialize_with = "crate::schema::version")]
    #[schema(minimum = 0)]
    pub version: u64,
    /// Why (kept in the alias history and the audit log).
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub why: Option<String>,
}

/// Body of `POST /v1/models/{family}/aliases/{alias}/rollback` and of alias deletions.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Why {
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub why: Option<String>,
}

/// One move of an alias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AliasMove {
    pub family: String,
    pub alias: String,
    /// `set`, `rollback` or `delete`.
    pub kind: String,
    pub from: Option<u64>,
    pub to: Option<u64>,
    /// RFC 3339.
    pub at: String,
    /// `key:NAME`, `cli:USER` or `cascade:JOB`.
    pub who: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// Body of `GET /v1/models/{family}/aliases/{alias}/history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AliasHistory {
    pub moves: Vec<AliasMove>,
}

/// One audit entry: who changed what, when, from what, to what, why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Its position in the audit log: pass as `before` for the next page.
    pub id: u64,
    pub at: String,
    pub who: String,
    /// `alias.set`, `alias.rollback`, `alias.delete`, `rollout.start`, `rollout.step`,
    /// `rollout.promote`, `rollout.rollback`, `key.create`, `key.revoke`, `pipeline.create`,
    /// `pipeline.change`, `pipeline.delete`.
    pub action: String,
    pub target: String,
    /// Any JSON value (a version number, an object, null).
    pub before: serde_json::Value,
    pub after: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// Body of `GET /v1/audit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditResponse {
    /// Newest first.
    pub entries: Vec<AuditEntry>,
    /// Pass as `before` for the next page (absent on the last one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<u64>,
}

/// One arm's impressions and the outcome events (the `[train] interactions` types) attributed
/// to them, by the response's request id or by (user, item) within the rollout's
/// `attribution_window`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct ArmOutcomes {
    /// Responses whose impressions were read (each showed at least one item).
    pub requests: u64,
    /// Responses with an outcome attributed to at least one of their items.
    pub converted: u64,
    pub impressions: u64,
    /// Impressions with at least one outcome attributed.
    pub clicked: u64,
    /// Outcome events attributed (an impression may collect several).
    pub outcomes: u64,
}

/// One arm (champion or challenger) over one window of requests.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct WindowSummary {
    pub requests: u64,
    pub p50_latency_ms: Option<f64>,
    pub p99_latency_ms: Option<f64>,
    /// Share of requests where retrieval or ranking failed.
    pub error_rate: Option<f64>,
    /// Share of requests served with any fallback.
    pub fallback_rate: Option<f64>,
    /// Counted by arrival: the impressions read in the window, and the outcomes attributed in it
    /// (to impressions of this window or earlier ones).
    #[serde(default)]
    pub outcomes: ArmOutcomes,
    /// `outcomes.clicked / outcomes.impressions`.
    #[serde(default)]
    pub ctr: Option<f64>,
    /// Impressions ranked by the heavy ranker whose attribution window ended in the window, so
    /// their label (an outcome or none) is final.
    #[serde(default)]
    pub labelled: u64,
    /// Expected calibration error of those impressions' served probabilities against their
    /// labels (10 equal-width bins).
    #[serde(default)]
    pub ece: Option<f64>,
}

/// One evaluated window of a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WindowRecord {
    /// ms since the epoch.
    pub ended_ms: i64,
    pub champion: WindowSummary,
    pub challenger: WindowSummary,
    /// Guardrails the challenger crossed in it.
    pub crossed: Vec<String>,
    /// The challenger's CTR over the champion's in this window (none while the champion's is 0).
    #[serde(default)]
    pub ctr_ratio: Option<f64>,
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutPhase {
    Running,
    Promoted,
    RolledBack,
}

/// One pipeline's rollout of one challenger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RolloutState {
    pub pipeline: String,
    /// `shadow`, `canary`, `champion_challenger` or `blue_green`.
    pub strategy: String,
    /// The challenger's version, and when its alias was set (a re-set starts a new rollout).
    pub challenger: u64,
    pub challenger_since: String,
    pub champion: Option<u64>,
    pub phase: RolloutPhase,
    /// The step of `steps` (canary).
    pub step: usize,
    /// The challenger's share of units now (0 to 1).
    pub share: f64,
    pub step_started_ms: i64,
    /// Challenger requests judged in this step.
    pub step_requests: u64,
    /// Consecutive windows each guardrail has been crossed.
    pub breaches: BTreeMap<String, u32>,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    /// Why it ended (the guardrail and its figures, or the completed steps).
    pub reason: Option<String>,
    /// The latest evaluated windows, oldest first.
    pub windows: Vec<WindowRecord>,
    /// Shadow scoring's comparison as of the latest window (shadow rollouts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowSummary>,
    /// Each arm's impressions and outcomes through the last evaluated window.
    #[serde(default)]
    pub champion_outcomes: ArmOutcomes,
    #[serde(default)]
    pub challenger_outcomes: ArmOutcomes,
}

/// What shadow scoring found, since the rollout started.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct ShadowSummary {
    /// Requests the challenger scored.
    pub scored: u64,
    /// Copies dropped because the shadow queue was full.
    pub dropped: u64,
    /// Copies the challenger failed on.
    pub failed: u64,
    /// Mean share of the champion's top k the challenger also put in its top k.
    pub mean_overlap_at_k: Option<f64>,
    /// Mean rank-biased overlap (p = 0.9, extrapolated) of the two top-k lists.
    pub mean_rbo: Option<f64>,
    /// Mean absolute score difference of the items both lists hold.
    pub mean_abs_score_diff: Option<f64>,
    pub p50_latency_ms: Option<f64>,
    pub p99_latency_ms: Option<f64>,
}

/// One pipeline's rollout as `GET /v1/rollouts` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PipelineRollout {
    pub pipeline: String,
    /// The configured strategy (`none` when the pipeline has no rollout).
    pub strategy: String,
    pub champion: Option<u64>,
    pub challenger: Option<u64>,
    /// The latest rollout of this pipeline, running or finished.
    pub state: Option<RolloutState>,
    /// The window in progress.
    pub current_window: Option<WindowRecord>,
    pub shadow: Option<ShadowSummary>,
    /// The challenger against the champion on their outcomes since the rollout started (not for
    /// shadow rollouts, where the challenger serves nothing).
    pub comparison: Option<ArmComparison>,
}

/// The challenger's outcome rate against the champion's, per request: a request converts when
/// an outcome is attributed to any item it showed (requests, unlike the items of one list, are
/// close to independent trials). Compared with the two-proportion z-test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArmComparison {
    pub champion: ArmOutcomes,
    pub challenger: ArmOutcomes,
    /// `converted / requests` of each arm.
    pub champion_rate: Option<f64>,
    pub challenger_rate: Option<f64>,
    /// `challenger_rate - champion_rate`.
    pub difference: Option<f64>,
    /// The 95% confidence interval of the difference (unpooled standard error).
    pub ci95_low: Option<f64>,
    pub ci95_high: Option<f64>,
    /// Two-sided p-value of "no difference" (pooled standard error).
    pub p_value: Option<f64>,
    /// `difference / champion_rate`.
    pub relative_lift: Option<f64>,
}

/// Body of `GET /v1/rollouts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RolloutsResponse {
    pub rollouts: Vec<PipelineRollout>,
}
