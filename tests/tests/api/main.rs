//! Black-box tests of HMS: the real server on a random port against real PostgreSQL.
//! One binary for all features (each test binary links the whole world).

mod access_report;
mod appointments;
mod audit;
mod auth;
mod authority;
mod backup;
mod billing;
mod erasure;
mod faults;
mod fleet;
mod hospital;
mod http;
mod isolation;
mod laboratory;
mod migrate;
mod operations;
mod patients;
mod platform;
mod pools;
mod privacy;
mod projections;
mod provisioning;
mod redaction;
mod replay;
mod replicas;
mod restricted;
mod retries;
mod schema;
mod security;
mod throttle;
mod units;
