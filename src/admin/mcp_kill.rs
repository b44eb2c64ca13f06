//! `POST /v1/mcp/kill` and `/v1/mcp/unkill` with `{"target": "*" |
//! "SERVER" | "SERVER__TOOL"}`: engage or clear one kill switch; 200 with
//! the switches now engaged, 400 naming what is wrong. Mounted in the
//! mutating router, so it is authorized and audited (the row's target is
//! the body's, via [`AuditTarget`]).

use std::sync::Arc;

use axum::extract::{rejection::JsonRejection, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::audited::AuditTarget;
use super::{error, Control};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KillBody {
    target: String,
}

pub(super) async fn kill<C: Control>(
    state: State<Arc<C>>,
    body: Result<Json<KillBody>, JsonRejection>,
) -> Response {
    switch(state, body, true)
}

pub(super) async fn unkill<C: Control>(
    state: State<Arc<C>>,
    body: Result<Json<KillBody>, JsonRejection>,
) -> Response {
    switch(state, body, false)
}

fn switch<C: Control>(
    State(harbor): State<Arc<C>>,
    body: Result<Json<KillBody>, JsonRejection>,
    engage: bool,
) -> Response {
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{}; send {{\"target\": \"*\"}}, {{\"target\": \"SERVER\"}} or {{\"target\": \"SERVER__TOOL\"}}",
                    e.body_text()
                ),
            )
        }
    };
    let Some(mcp) = harbor.mcp() else {
        return error(StatusCode::NOT_FOUND, "no [mcp] table in the config".into());
    };
    let target = AuditTarget(body.target.clone());
    let mut response = match mcp.policy().kill(&body.target, engage) {
        Ok(engaged) => {
            tracing::warn!(
                event = if engage { "mcp_killed" } else { "mcp_unkilled" },
                target = %body.target,
                ?engaged
            );
            (StatusCode::OK, Json(json!({ "kill_switches": engaged }))).into_response()
        }
        Err(why) => error(StatusCode::BAD_REQUEST, why),
    };
    response.extensions_mut().insert(target);
    response
}
