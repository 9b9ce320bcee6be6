//! Restricted records and break-glass over GraphQL. The rules live in
//! [`hms_app::usecases::privacy`].

mod mutation;
mod query;
mod types;

pub use mutation::PrivacyMutation;
pub use query::PrivacyQuery;
