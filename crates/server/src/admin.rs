//! The model lifecycle over HTTP, behind the `admin` scope: bundles and their aliases (set,
//! delete, history, rollback), the rollouts as they stand, and the audit log. An alias moved here
//! is served at once (the recommender reloads before the answer).

use crate::body;
use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::{AppState, Principal};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use cascade_api::{
    AliasHistory, AliasMove, AliasesResponse, AuditEntry, AuditResponse, ErrorCode, FieldProblem, ModelVersion,
    ModelsResponse, RolloutsResponse, SetAlias, Why,
};
use cascade_registry::{Actor, Registry};

/// Longest `why` kept with a move.
const MAX_WHY: usize = 1000;
/// Most audit entries per page.
const MAX_AUDIT_PAGE: usize = 1000;

impl From<cascade_registry::Error> for ApiError {
    fn from(e: cascade_registry::Error) -> Self {
        use cascade_registry::Error as E;
        let problem = |field: &str, reason: String| FieldProblem { index: None, field: field.into(), reason };
        match &e {
            E::BadAlias { reason, .. } => ApiError::new(ErrorCode::InvalidRequest, e.to_string())
                .with_details(vec![problem("alias", reason.clone())]),
            E::WrongFamily { .. } | E::NotFound(_) => {
                let code = if matches!(e, E::NotFound(_)) { ErrorCode::NotFound } else { ErrorCode::InvalidRequest };
                ApiError::new(code, e.to_string()).with_details(vec![problem("version", e.to_string())])
            }
            E::NoAlias { .. } => ApiError::new(ErrorCode::NotFound, e.to_string()),
            E::NoPrevious { .. } => ApiError::new(ErrorCode::Conflict, e.to_string()),
            E::Io { .. } | E::Corrupt { .. } | E::BadName(_) | E::Audit(_) => {
                tracing::error!(error = %e, "registry error");
                ApiError::new(ErrorCode::Internal, e.to_string())
            }
        }
    }
}

fn who(principal: Option<&Principal>) -> String {
    match principal.and_then(|p| p.name.as_deref()) {
        Some(name) => format!("key:{name}"),
        None => "anonymous".into(),
    }
}

fn actor(principal: Option<&Principal>, why: Option<String>) -> Result<Actor, ApiError> {
    if why.as_ref().is_some_and(|w| w.chars().count() > MAX_WHY) {
        return Err(ApiError::invalid_field("why", format!("is longer than {MAX_WHY} characters")));
    }
    Ok(Actor::new(who(principal), why))
}

fn registry(state: &AppState) -> Result<Registry, ApiError> {
    Ok(state.recommender.model_registry()?)
}

/// One alias move as every moving route makes it: the `why` checked, the family known, the move,
/// then the recommender reloaded so the move serves before the answer.
async fn move_alias(
    state: &AppState,
    principal: Option<&Principal>,
    family: &str,
    why: Option<String>,
    apply: impl FnOnce(&Registry, &Actor) -> cascade_registry::Result<cascade_registry::AliasMove>,
) -> Result<Json<AliasMove>, ApiError> {
    let actor = actor(principal, why)?;
    let registry = registry(state)?;
    known_family(&registry, family)?;
    let m = apply(&registry, &actor)?;
    reload(state).await;
    Ok(Json(wire(m)))
}

/// A family is known once a bundle of it exists.
fn known_family(registry: &Registry, family: &str) -> Result<(), ApiError> {
    let known =
        registry.list()?.iter().any(|m| m.draft.family == family) || registry.families()?.iter().any(|f| f == family);
    if known {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::NotFound, format!("no model family `{family}` (no bundle of it yet)")))
    }
}

/// Serves a move at once: the recommender reads the aliases again before the answer.
async fn reload(state: &AppState) {
    let r = state.recommender.clone();
    match tokio::task::spawn_blocking(move || r.reload()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "the moved alias's bundle cannot be loaded; the old one serves"),
        Err(e) => tracing::error!(error = %e, "reload panicked"),
    }
}

fn wire(m: cascade_registry::AliasMove) -> AliasMove {
    let kind = serde_json::to_value(m.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    AliasMove { family: m.family, alias: m.alias, kind, from: m.from, to: m.to, at: m.at, who: m.who, why: m.why }
}

#[utoipa::path(get, path = "/v1/models", tag = "models",
    responses(
        (status = 200, description = "Every bundle, oldest first, with its aliases, offline metrics and gate verdict", body = ModelsResponse),
    )
)]
pub async fn list_models(State(state): State<AppState>) -> Result<Json<ModelsResponse>, ApiError> {
    let registry = registry(&state)?;
    let manifests = registry.list()?;
    let mut models = Vec::with_capacity(manifests.len());
    for m in manifests {
        let aliases = registry.aliases(&m.draft.family)?;
        models.push(ModelVersion {
            version: m.version,
            family: m.draft.family.clone(),
            created_at: m.created_at.clone(),
            rows: m.draft.data.rows,
            models: m.draft.models.iter().map(|e| e.name.clone()).collect(),
            aliases: aliases.iter().filter(|(_, v)| **v == m.version).map(|(a, _)| a.clone()).collect(),
            metrics: m.draft.metrics.clone(),
            gate: m.draft.gate.as_ref().and_then(|g| serde_json::to_value(g).ok()),
        });
    }
    Ok(Json(ModelsResponse { models }))
}

#[utoipa::path(get, path = "/v1/models/{family}/aliases", tag = "models",
    params(("family" = String, Path, description = "Model family (`recommender`)", max_length = 255)),
    responses(
        (status = 200, description = "The family's aliases and the versions they point to", body = AliasesResponse),
        (status = 404, description = "No such family (`not_found`)", body = cascade_api::ErrorResponse),
    )
)]
pub async fn list_aliases(
    State(state): State<AppState>,
    Path(family): Path<String>,
) -> Result<Json<AliasesResponse>, ApiError> {
    let registry = registry(&state)?;
    known_family(&registry, &family)?;
    let aliases = registry.aliases(&family)?;
    Ok(Json(AliasesResponse { family, aliases }))
}

#[utoipa::path(put, path = "/v1/models/{family}/aliases/{alias}", tag = "models",
    params(("family" = String, Path, description = "Model family (`recommender`)", max_length = 255),
        ("alias" = String, Path, description = "Alias: ASCII letters, digits, `_`, `-`; `latest` and `v<digits>` are reserved",
            min_length = 1, max_length = 255, pattern = r"^(?![vV][0-9]+$)(?![lL][aA][tT][eE][sS][tT]$)[A-Za-z0-9_-]{1,255}$")),
    request_body = SetAlias,
    responses(
        (status = 200, description = "The move, as kept in the alias history; served before this answer", body = AliasMove),
        (status = 400, description = "A malformed body (`malformed_json`), a reserved or malformed alias, or a version of another family (`invalid_request`)", body = cascade_api::ErrorResponse),
        (status = 404, description = "No such family or version (`not_found`)", body = cascade_api::ErrorResponse),
    )
)]
pub async fn set_alias(
    State(state): State<AppState>,
    principal: Option<axum::Extension<Principal>>,
    Path((family, alias)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<AliasMove>, ApiError> {
    let request: SetAlias = body::json(&headers, &body, "an alias move")?;
    let version = request.version;
    move_alias(&state, principal.as_deref(), &family, request.why, |r, actor| {
        r.set_alias(&family, &alias, version, actor)
    })
    .await
}

#[utoipa::path(delete, path = "/v1/models/{family}/aliases/{alias}", tag = "models",
    params(("family" = String, Path, description = "Model family (`recommender`)", max_length = 255),
        ("alias" = String, Path, description = "Alias", min_length = 1, max_length = 255),
        ("why" = Option<String>, Query, description = "Why (kept in the history and the audit log)", max_length = 1000)),
    responses(
        (status = 200, description = "The deletion, as kept in the alias history (the history stays)", body = AliasMove),
        (status = 400, description = "`why` is too long (`invalid_request`)", body = cascade_api::ErrorResponse),
        (status = 404, description = "No such family or alias (`not_found`)", body = cascade_api::ErrorResponse),
    )
)]
pub async fn delete_alias(
    State(state): State<AppState>,
    principal: Option<axum::Extension<Principal>>,
    Path((family, alias)): Path<(String, String)>,
    Query(why): Query<Why>,
) -> Result<Json<AliasMove>, ApiError> {
    move_alias(&state, principal.as_deref(), &family, why.why, |r, actor| r.delete_alias(&family, &alias, actor)).await
}

#[utoipa::path(get, path = "/v1/models/{family}/aliases/{alias}/history", tag = "models",
    params(("family" = String, Path, description = "Model family (`recommender`)", max_length = 255),
        ("alias" = String, Path, description = "Alias", min_length = 1, max_length = 255)),
    responses(
        (status = 200, description = "Every move of the alias, oldest first: who, when, from, to, why", body = AliasHistory),
        (status = 404, description = "No such family, or the alias never existed (`not_found`)", body = cascade_api::ErrorResponse),
    )
)]
pub async fn alias_history(
    State(state): State<AppState>,
    Path((family, alias)): Path<(String, String)>,
) -> Result<Json<AliasHistory>, ApiError> {
    let registry = registry(&state)?;
    known_family(&registry, &family)?;
    let moves = registry.alias_history(&family, Some(&alias))?;
    if moves.is_empty() {
        return Err(ApiError::new(ErrorCode::NotFound, format!("`{family}` never had an alias `{alias}`")));
    }
    Ok(Json(AliasHistory { moves: moves.into_iter().map(wire).collect() }))
}

#[utoipa::path(post, path = "/v1/models/{family}/aliases/{alias}/rollback", tag = "models",
    params(("family" = String, Path, description = "Model family (`recommender`)", max_length = 255),
        ("alias" = String, Path, description = "Alias", min_length = 1, max_length = 255)),
    request_body = Why,
    responses(
        (status = 200, description = "The alias moved one step back along its history; served before this answer", body = AliasMove),
        (status = 400, description = "A malformed body (`malformed_json`) or a too long `why` (`invalid_request`)", body = cascade_api::ErrorResponse),
        (status = 404, description = "No such family or alias (`not_found`)", body = cascade_api::ErrorResponse),
        (status = 409, description = "The alias has no earlier version (`conflict`)", body = cascade_api::ErrorResponse),
    )
)]
pub async fn rollback_alias(
    State(state): State<AppState>,
    principal: Option<axum::Extension<Principal>>,
    Path((family, alias)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<AliasMove>, ApiError> {
    let request: Why = if body.is_empty() { Why::default() } else { body::json(&headers, &body, "a rollback")? };
    move_alias(&state, principal.as_deref(), &family, request.why, |r, actor| r.rollback_alias(&family, &alias, actor))
        .await
}

#[utoipa::path(get, path = "/v1/rollouts", tag = "models",
    responses(
        (status = 200, description = "Each pipeline's rollout: strategy, state, the window in progress, shadow comparisons", body = RolloutsResponse),
    )
)]
pub async fn rollouts(State(state): State<AppState>) -> Json<RolloutsResponse> {
    Json(RolloutsResponse { rollouts: state.recommender.rollouts() })
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries older than this id (the previous page's `next_before`).
    #[param(minimum = 0, nullable = false)]
    before: Option<u64>,
    /// Only actions starting with this (`alias`, `rollout.rollback`, `key`).
    #[param(max_length = 100, nullable = false)]
    action: Option<String>,
    /// Only targets starting with this (`recommender@champion`, `pipeline:home`, `key:`).
    #[param(max_length = 300, nullable = false)]
    target: Option<String>,
    /// Most entries (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000, nullable = false)]
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "models",
    params(AuditQuery),
    responses(
        (status = 200, description = "Audit entries, newest first", body = AuditResponse),
        (status = 400, description = "`limit` out of range, or `action` or `target` too long (`invalid_request`)", body = cascade_api::ErrorResponse),
    )
)]
pub async fn audit(
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditResponse>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_AUDIT_PAGE).contains(&limit) {
        return Err(ApiError::invalid_field("limit", format!("must be within 1..={MAX_AUDIT_PAGE}")));
    }
    // Ids are byte offsets: the document states them as int64.
    if q.before.is_some_and(|b| b > i64::MAX as u64) {
        return Err(ApiError::invalid_field("before", "is not an audit id (at most 2^63 - 1)".into()));
    }
    if q.action.as_ref().is_some_and(|a| a.chars().count() > 100) {
        return Err(ApiError::invalid_field("action", "is longer than 100 characters".into()));
    }
    if q.target.as_ref().is_some_and(|t| t.chars().count() > 300) {
        return Err(ApiError::invalid_field("target", "is longer than 300 characters".into()));
    }
    let query = cascade_store::AuditQuery { before: q.before, action: q.action, target: q.target, limit: limit + 1 };
    let log = cascade_store::AuditLog::new(state.store.dir());
    let mut entries = tokio::task::spawn_blocking(move || log.read(&query))
        .await
        .map_err(|e| ApiError::blocking_failed("audit read", &e))??;
    let more = entries.len() > limit;
    entries.truncate(limit);
    let next_before = if more { entries.last().map(|e| e.id) } else { None };
    let entries = entries
        .into_iter()
        .map(|e| AuditEntry {
            id: e.id,
            at: e.record.at,
            who: e.record.who,
            action: e.record.action,
            target: e.record.target,
            before: e.record.before,
            after: e.record.after,
            why: e.record.why,
        })
        .collect();
    Ok(Json(AuditResponse { entries, next_before }))
}
