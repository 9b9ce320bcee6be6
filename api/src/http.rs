//! HTTP wiring: routes, limits and headers around the GraphQL schema.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;
use uuid::Uuid;

use crate::graphql::error::REQUEST_ID;
use crate::graphql::{build_schema, HmsSchema, RequestContext};
use hms_app::scope::RequestInfo;
use hms_app::state::AppState;

/// Largest request body accepted (GraphQL documents and variables).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
struct Http {
    state: AppState,
    schema: HmsSchema,
    graphiql: bool,
}

/// Options of the HTTP layer.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    pub graphiql: bool,
    /// Browser origins allowed by CORS.
    pub cors_origins: Vec<HeaderValue>,
}

impl HttpOptions {
    pub fn new(graphiql: bool, cors_origins: &[String]) -> Result<Self, String> {
        let cors_origins = cors_origins
            .iter()
            .filter(|o| !o.trim().is_empty())
            .map(|o| {
                HeaderValue::from_str(o.trim()).map_err(|_| format!("invalid CORS origin {o:?}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            graphiql,
            cors_origins,
        })
    }
}

pub fn app(state: AppState, options: HttpOptions) -> Router {
    let graphiql = options.graphiql;
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(options.cors_origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-request-id"),
        ])
        .max_age(Duration::from_secs(600));
    let production = state.production;
    let http = Http {
        schema: build_schema(Some(state.clone()), production),
        state,
        graphiql: graphiql && !production,
    };
    Router::new()
        .route("/graphql", get(graphiql_page).post(graphql))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(http)
        .layer(cors)
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
}

/// Serves until `shutdown` completes, then finishes the requests in flight.
pub async fn run(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

async fn graphql(
    State(http): State<Http>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: GraphQLRequest,
) -> impl IntoResponse {
    let request_id = request_id(&headers);
    let auth = match bearer(&headers) {
        Some(token) => Some(http.state.auth.authenticate(token).await),
        None => None,
    };
    let (tenant, actor) = match &auth {
        Some(Ok(p)) => (p.tenant.clone().unwrap_or_default(), p.username.clone()),
        _ => (String::new(), String::new()),
    };
    let span = tracing::info_span!("graphql", %request_id, tenant, actor);
    let context = RequestContext {
        info: RequestInfo {
            request_id: request_id.clone(),
            client_addr: Some(peer.ip().to_string()),
        },
        auth,
    };
    let mut response = REQUEST_ID
        .scope(
            request_id.clone(),
            http.schema.execute(request.into_inner().data(context)),
        )
        .instrument(span)
        .await;
    // Every resolver error carries a code (see graphql::error). An error without one
    // comes from async-graphql itself: a malformed document, a wrong variable type, a
    // depth or complexity limit: the client's request is invalid.
    for error in &mut response.errors {
        let has_code = error
            .extensions
            .as_ref()
            .is_some_and(|e| e.get("code").is_some());
        if !has_code {
            error
                .extensions
                .get_or_insert_with(Default::default)
                .set("code", "VALIDATION");
        }
    }
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), v);
    }
    (headers, GraphQLResponse::from(response))
}

async fn graphiql_page(State(http): State<Http>) -> impl IntoResponse {
    if http.graphiql {
        Html(GraphiQLSource::build().endpoint("/graphql").finish()).into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(http): State<Http>) -> impl IntoResponse {
    match sqlx::query("SELECT 1").execute(&http.state.control).await {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error = %e, "platform database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "platform database unreachable",
            )
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The caller's `x-request-id` if it is a sane token, else a fresh one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| Uuid::new_v4().to_string())
}
