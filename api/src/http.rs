//! HTTP wiring: routes, limits and headers around the GraphQL schema.

use std::future::{Future, IntoFuture};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;
use uuid::Uuid;

use crate::graphql::error::{ApiError, REQUEST_ID};
use crate::graphql::operation::Operation;
use crate::graphql::{build_schema, HmsSchema, RequestContext};
use hms_app::auth::Confirmation;
use hms_app::commands::Authority;
use hms_app::config::TrustedProxies;
use hms_app::scope::RequestInfo;
use hms_app::state::AppState;
use hms_app::telemetry;
use hms_app::AppError;

/// Largest request body accepted (GraphQL documents and variables).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
struct Http {
    state: AppState,
    schema: HmsSchema,
    graphiql: bool,
    trusted_proxies: TrustedProxies,
    draining: Draining,
}

/// Whether this process is draining: it has been asked to stop, `/readyz` says so, and
/// it still serves while load balancers take it out of rotation.
#[derive(Debug, Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    fn start(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// How a stop proceeds: `/readyz` answers 503 for `drain` while requests are still
/// served (so a load balancer stops sending new ones), then the listener closes and
/// the requests in flight get at most `finish` to complete.
#[derive(Debug, Clone)]
pub struct Shutdown {
    pub drain: Duration,
    pub finish: Duration,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            drain: Duration::from_secs(5),
            finish: REQUEST_TIMEOUT,
        }
    }
}

/// Options of the HTTP layer.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    pub graphiql: bool,
    /// Browser origins allowed by CORS.
    pub cors_origins: Vec<HeaderValue>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    /// Set when the process starts draining (see [`run`]).
    pub draining: Draining,
    /// Serve `/metrics` on this router (off when a listener of its own serves it).
    pub metrics: bool,
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
            trusted_proxies: TrustedProxies::default(),
            draining: Draining::default(),
            metrics: true,
        })
    }

    /// Believes `X-Forwarded-For` from peers in these networks (CIDRs or addresses).
    pub fn with_trusted_proxies(mut self, networks: &[String]) -> Result<Self, String> {
        self.trusted_proxies = TrustedProxies::parse(networks)?;
        Ok(self)
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
    // Before the first request, so that nothing it counts is lost.
    crate::metrics::recorder();
    let http = Http {
        schema: build_schema(Some(state.clone()), production),
        state,
        graphiql: graphiql && !production,
        trusted_proxies: options.trusted_proxies,
        draining: options.draining,
    };
    let mut router = Router::new();
    if options.metrics {
        router = router.route("/metrics", get(metrics));
    }
    router
        .route("/graphql", get(graphiql_page).post(graphql))
        .route(
            &format!("{}/{{name}}", crate::graphiql::ASSETS_PATH),
            get(graphiql_asset),
        )
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

/// Serves until `shutdown` completes; then drains as `plan` says: not ready (but still
/// serving) for `plan.drain`, then the listener closes and the requests in flight get at
/// most `plan.finish`. `draining` is the flag `/readyz` reads (the router's options').
pub async fn run(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    draining: Draining,
    plan: Shutdown,
) -> std::io::Result<()> {
    let stopping = Arc::new(tokio::sync::Notify::new());
    let signal = {
        let stopping = stopping.clone();
        let drain = plan.drain;
        async move {
            shutdown.await;
            draining.start();
            tracing::info!(
                seconds = drain.as_secs_f64(),
                "draining: not ready, still serving"
            );
            tokio::time::sleep(drain).await;
            tracing::info!("closing the listener; finishing the requests in flight");
            stopping.notify_one();
        }
    };
    let serve = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(signal)
    .into_future();
    let deadline = async {
        stopping.notified().await;
        tokio::time::sleep(plan.finish).await;
    };
    tokio::select! {
        served = serve => served,
        () = deadline => {
            tracing::warn!("requests still in flight after the shutdown bound; stopping anyway");
            Ok(())
        }
    }
}

async fn graphql(
    State(http): State<Http>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: GraphQLRequest,
) -> impl IntoResponse {
    let started = Instant::now();
    let request_id = request_id(&headers);
    let auth = match bearer(&headers) {
        // Any request may start from the rights this process kept (docs/adr/0012): a
        // write's or a record view's guarded append confirms them, and an answer nothing
        // confirmed waits for the read it would otherwise have made first.
        Some(token) => Some(http.state.auth.authenticate(token, true).await),
        None => None,
    };
    // Ids only: a username or a hospital's name is not for the logs.
    let (hospital, actor) = match &auth {
        Some(Ok(p)) => (p.tenant.clone().unwrap_or_default(), p.user_id.to_string()),
        _ => (String::new(), String::new()),
    };
    let span = tracing::info_span!("request", %request_id, hospital, actor);
    // The caller, whose rights the request may have assumed (docs/adr/0012).
    let principal = match &auth {
        Some(Ok(principal)) => Some(principal.clone()),
        _ => None,
    };
    let info = RequestInfo {
        request_id: request_id.clone(),
        client_addr: Some(client_addr(peer.ip(), &headers, &http.trusted_proxies).to_string()),
    };
    let request = request.into_inner();
    let operation = Operation::new(request.operation_name.clone());
    // Kept while the rights are assumed: the request may have to be decided again.
    let again = principal
        .as_ref()
        .filter(|p| p.authority.assumption().is_some())
        .map(|_| the_same_request(&request));
    let authority = principal
        .as_ref()
        .map_or_else(Authority::confirmed, |p| p.authority.clone());
    let context = RequestContext {
        info: info.clone(),
        auth,
    };
    // Boxed: the schema's future is large, and it is moved into two more.
    let execution = Box::pin(
        authority.scope(
            http.schema
                .execute(request.data(context).data(operation.clone())),
        ),
    );
    let answered = async {
        let response = execution.await;
        // An answer made on assumed rights that no guarded append confirmed leaves only
        // once they are read (docs/adr/0012): as assumed, it stands; moved since, the
        // request (which wrote nothing) is decided again on them, unless one of its
        // appends went unanswered (it may have landed: UNAVAILABLE); revoked, the caller
        // gets UNAUTHENTICATED, never the data.
        let (Some(principal), Some(again), Some(token)) = (&principal, again, bearer(&headers))
        else {
            return response;
        };
        let refused = match http.state.auth.confirm(principal).await {
            Ok(Confirmation::NotAssumed | Confirmation::Held) => return response,
            Ok(Confirmation::Moved) => {
                let context = RequestContext {
                    info,
                    auth: Some(http.state.auth.authenticate(token, false).await),
                };
                return Box::pin(
                    http.schema
                        .execute(again.data(context).data(operation.clone())),
                )
                .await;
            }
            Ok(Confirmation::Unknown) => {
                AppError::unavailable("a write of the request went unanswered")
            }
            Err(refused) => refused,
        };
        let refused = async_graphql::Error::from(ApiError::from(refused));
        async_graphql::Response::from_errors(vec![refused.into_server_error(Default::default())])
    };
    let response = async {
        let mut response = REQUEST_ID.scope(request_id.clone(), answered).await;
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
        let outcome = outcome(&response);
        let elapsed = started.elapsed();
        telemetry::request(operation.label(), &outcome, elapsed);
        tracing::info!(
            operation = operation.label(),
            outcome,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
        response
    }
    .instrument(span)
    .await;
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), v);
    }
    (headers, GraphQLResponse::from(response))
}

/// A copy of `request` as the client sent it, to execute it again.
fn the_same_request(request: &async_graphql::Request) -> async_graphql::Request {
    let mut again =
        async_graphql::Request::new(request.query.clone()).variables(request.variables.clone());
    again.operation_name = request.operation_name.clone();
    again.extensions = request.extensions.clone();
    again
}

async fn graphiql_page(State(http): State<Http>) -> Response {
    if http.graphiql {
        crate::graphiql::page()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

async fn graphiql_asset(State(http): State<Http>, Path(name): Path<String>) -> Response {
    if http.graphiql {
        crate::graphiql::asset(&name)
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

async fn metrics(State(http): State<Http>) -> impl IntoResponse {
    crate::metrics::scrape(State(http.state)).await
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(http): State<Http>) -> impl IntoResponse {
    if http.draining.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
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

/// `OK`, or the code of the first error of the request itself or of a root field
/// (bounded: the API's error codes). A field withheld inside an answer (null, with a
/// FORBIDDEN error at its path) does not fail the request.
fn outcome(response: &async_graphql::Response) -> String {
    response
        .errors
        .iter()
        .find(|e| e.path.len() <= 1)
        .map(|e| {
            e.extensions
                .as_ref()
                .and_then(|x| x.get("code"))
                .and_then(|code| match code {
                    async_graphql::Value::String(code) => Some(code.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| "VALIDATION".to_owned())
        })
        .unwrap_or_else(|| "OK".to_owned())
}

/// The client's address: the connection's peer, unless the peer is a trusted proxy;
/// then `X-Forwarded-For` is read from the right (each proxy appends the address it was
/// called from), skipping trusted proxies: the first address that is not one is the
/// client. Entries to the left of it were written by the client and are not believed.
/// An unreadable entry stops the walk at the last trusted hop.
fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Option<Vec<_>>>();
    let Some(hops) = hops else {
        return peer;
    };
    let mut client = peer;
    for hop in hops.iter().rev().flat_map(|v| v.rsplit(',')) {
        match parse_hop(hop) {
            Some(ip) if trusted.contains(ip) => client = ip,
            Some(ip) => return ip,
            None => return client,
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`192.0.2.1:4711`,
/// `[2001:db8::1]:4711`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                "x-forwarded-for",
                HeaderValue::from_str(v).expect("a header value"),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let trusted =
            TrustedProxies::parse(&["127.0.0.1".into(), "10.0.0.0/8".into()]).expect("parses");
        let peer = ip("127.0.0.1");
        let client = |values: &[&str]| client_addr(peer, &headers(values), &trusted);
        assert_eq!(client(&[]), peer);
        assert_eq!(client(&["203.0.113.5"]), ip("203.0.113.5"));
        assert_eq!(
            client(&["1.2.3.4, 203.0.113.5, 10.1.1.1"]),
            ip("203.0.113.5")
        );
        assert_eq!(client(&["1.2.3.4", "203.0.113.5"]), ip("203.0.113.5"));
        assert_eq!(client(&["10.2.2.2, 10.1.1.1"]), ip("10.2.2.2"));
        assert_eq!(client(&["garbage, 10.1.1.1"]), ip("10.1.1.1"));
        assert_eq!(client(&["203.0.113.5:4711"]), ip("203.0.113.5"));
        assert_eq!(client(&["[2001:db8::1]:4711"]), ip("2001:db8::1"));
        // An untrusted peer's header is ignored; so is any header without trust.
        assert_eq!(
            client_addr(ip("192.0.2.1"), &headers(&["203.0.113.5"]), &trusted),
            ip("192.0.2.1")
        );
        assert_eq!(
            client_addr(peer, &headers(&["203.0.113.5"]), &TrustedProxies::default()),
            peer
        );
    }
}
