//! Black-box tests of HMS: the real server on a random port against real PostgreSQL.
//! One binary for all features (each test binary links the whole world).

mod auth;
mod hospital;
mod http;
mod migrate;
mod pools;
mod provisioning;
mod replay;
mod schema;
