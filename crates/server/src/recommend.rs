//! `POST /v1/recommendations`, `POST /v1/rank`, `GET /v1/items/{id}/similar`: parse, one call to
//! the [`Recommender`](cascade_serving::Recommender), convert back. The cascade, its deadlines
//! and fallbacks live in `cascade-serving`.

use crate::AppState;
use crate::body;
use crate::error::ApiError;
use crate::extract::{Path, Query};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use cascade_api::{RankRequest, RecommendationRequest, RecommendationResponse, SimilarResponse};

#[utoipa::path(post, path = "/v1/recommendations", tag = "recommendations",
    request_body = RecommendationRequest,
    responses(
        (status = 200, description = "Items best first, with the serving path and a request id", body = RecommendationResponse),
        (status = 400, description = "Malformed body, or an invalid request (`invalid_recommendation_request`, naming the field), or an unknown pipeline (`unknown_pipeline`)", body = cascade_api::ErrorResponse),
    )
)]
pub async fn post_recommendations(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<RecommendationResponse>, ApiError> {
    let request: RecommendationRequest = body::json(&headers, &body, "a recommendation request")?;
    Ok(Json(state.recommender.recommend(request).await?))
}

#[utoipa::path(post, path = "/v1/rank", tag = "recommendations",
    request_body = RankRequest,
    responses(
        (status = 200, description = "The given items, best first (unknown ones last, in their given order)", body = RecommendationResponse),
        (status = 400, description = "Malformed body or an invalid request (`invalid_recommendation_request`)", body = cascade_api::ErrorResponse),
    )
)]
pub async fn post_rank(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<RecommendationResponse>, ApiError> {
    let request: RankRequest = body::json(&headers, &body, "a rank request")?;
    Ok(Json(state.recommender.rank(request).await?))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct SimilarQuery {
    /// How many items (default 10, at most 100).
    #[param(minimum = 1, maximum = 100, nullable = false)]
    k: Option<usize>,
}

#[utoipa::path(get, path = "/v1/items/{id}/similar", tag = "recommendations",
    params(("id" = String, Path, description = "Item id: 1 to 256 bytes (UTF-8) without control characters",
        min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"), SimilarQuery),
    responses(
        (status = 200, description = "Items like this one: co-interaction neighbours, then attribute look-alikes", body = SimilarResponse),
        (status = 400, description = "`k` out of range (`invalid_recommendation_request`) or not an integer (`invalid_request`)", body = cascade_api::ErrorResponse),
        (status = 404, description = "No model or catalogue record knows the item", body = cascade_api::ErrorResponse),
    )
)]
pub async fn get_similar(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<SimilarQuery>,
) -> Result<Json<SimilarResponse>, ApiError> {
    Ok(Json(state.recommender.similar(id, query.k)?))
}
