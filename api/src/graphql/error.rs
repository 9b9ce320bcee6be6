//! Errors as clients see them: a message fit for an end user and a stable
//! `extensions.code`. Infrastructure failures become an opaque INTERNAL that carries
//! the request id, and their cause goes to the server log only.
//!
//! `ApiError` deliberately does not implement `Display`: async-graphql converts any
//! `Display` error into a client message, which is how SQL text leaks. Resolvers return
//! `async_graphql::Result` and reach it only through `From<ApiError>`.

use async_graphql::ErrorExtensions;

tokio::task_local! {
    /// The id of the request being served, for INTERNAL errors and logs.
    pub static REQUEST_ID: String;
}

#[derive(Debug)]
pub enum ApiError {
    Unauthenticated,
    InvalidCredentials,
    Forbidden,
    /// A field the caller's role may not read (the disclosure rules): FORBIDDEN on that
    /// field, with what was withheld.
    Withheld(hms_domain::disclosure::Withheld),
    /// A restricted record outside the caller's care team: FORBIDDEN, `restricted: true`.
    Restricted,
    NotFound,
    Validation {
        field: String,
        message: String,
    },
    /// A final refusal (`retryable: false`).
    Conflict(String),
    /// A concurrent change got in the way; the same request may succeed if sent again
    /// (code CONFLICT, `retryable: true`).
    Contended(String),
    SubscriptionInactive(String),
    ModuleDisabled(String),
    RateLimited,
    /// A database could not be reached; the same request may succeed shortly
    /// (`retryable: true`). The cause is logged, never sent.
    Unavailable,
    /// The cause is logged, never sent.
    Internal,
}

impl ApiError {
    /// Logs `cause` with the request id and returns the opaque INTERNAL error.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let request_id = current_request_id();
        tracing::error!(%request_id, error = %cause, "internal error");
        ApiError::Internal
    }

    /// Logs `cause` with the request id and returns UNAVAILABLE.
    pub fn unavailable(cause: impl std::fmt::Debug) -> Self {
        let request_id = current_request_id();
        tracing::warn!(%request_id, error = ?cause, "a database is unreachable");
        ApiError::Unavailable
    }

    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated | ApiError::InvalidCredentials => "UNAUTHENTICATED",
            ApiError::Forbidden | ApiError::Withheld(_) | ApiError::Restricted => "FORBIDDEN",
            ApiError::NotFound => "NOT_FOUND",
            ApiError::Validation { .. } => "VALIDATION",
            ApiError::Conflict(_) | ApiError::Contended(_) => "CONFLICT",
            ApiError::SubscriptionInactive(_) => "SUBSCRIPTION_INACTIVE",
            ApiError::ModuleDisabled(_) => "MODULE_DISABLED",
            ApiError::RateLimited => "RATE_LIMITED",
            ApiError::Unavailable => "UNAVAILABLE",
            ApiError::Internal => "INTERNAL",
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::Unauthenticated => "authentication required".into(),
            ApiError::InvalidCredentials => "invalid hospital, username or password".into(),
            ApiError::Forbidden => "you are not allowed to do this".into(),
            ApiError::Withheld(w) => w.to_string(),
            ApiError::Restricted => {
                "the record is restricted to its care team; break the glass to read it".into()
            }
            ApiError::NotFound => "not found".into(),
            ApiError::Validation { field, message } => format!("{field}: {message}"),
            ApiError::Conflict(m)
            | ApiError::Contended(m)
            | ApiError::SubscriptionInactive(m)
            | ApiError::ModuleDisabled(m) => m.clone(),
            ApiError::RateLimited => "too many requests; try again later".into(),
            ApiError::Unavailable => {
                "the service is briefly unavailable (a database cannot be reached); try again shortly".into()
            }
            ApiError::Internal => "internal error".into(),
        }
    }
}

pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "-".to_owned())
}

impl From<ApiError> for async_graphql::Error {
    fn from(err: ApiError) -> Self {
        let code = err.code();
        async_graphql::Error::new(err.message()).extend_with(|_, ext| {
            ext.set("code", code);
            match &err {
                ApiError::Validation { field, .. } => ext.set("field", field.as_str()),
                ApiError::Internal => ext.set("requestId", current_request_id()),
                // Tells "send it again" from a final refusal; both are CONFLICT.
                ApiError::Conflict(_) => ext.set("retryable", false),
                ApiError::Contended(_) => ext.set("retryable", true),
                ApiError::Unavailable => {
                    ext.set("retryable", true);
                    ext.set("requestId", current_request_id());
                }
                ApiError::Withheld(w) => ext.set("withheld", format!("{:?}", w.disclosure)),
                ApiError::Restricted => ext.set("restricted", true),
                _ => {}
            }
        })
    }
}

impl From<hms_domain::common::ValidationError> for ApiError {
    fn from(e: hms_domain::common::ValidationError) -> Self {
        ApiError::validation(e.field, e.message)
    }
}

/// What a resolver returns: async-graphql turns `ApiError` into the client's error.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// The one mapping from the application's error to the client's. An internal cause is
/// logged here, with the request id, and never sent.
impl From<hms_app::AppError> for ApiError {
    fn from(e: hms_app::AppError) -> Self {
        use hms_app::AppError as A;
        match e {
            A::Unauthenticated => ApiError::Unauthenticated,
            A::InvalidCredentials => ApiError::InvalidCredentials,
            A::Forbidden => ApiError::Forbidden,
            A::Restricted => ApiError::Restricted,
            A::NotFound => ApiError::NotFound,
            A::Validation { field, message } => ApiError::Validation { field, message },
            A::Conflict(m) => ApiError::Conflict(m),
            A::Contended(m) => ApiError::Contended(m),
            A::SubscriptionInactive(m) => ApiError::SubscriptionInactive(m),
            A::ModuleDisabled(m) => ApiError::ModuleDisabled(m),
            A::RateLimited => ApiError::RateLimited,
            A::Unavailable(cause) => ApiError::unavailable(cause),
            A::Internal(cause) => {
                let request_id = current_request_id();
                tracing::error!(%request_id, error = ?cause, "internal error");
                ApiError::Internal
            }
        }
    }
}
