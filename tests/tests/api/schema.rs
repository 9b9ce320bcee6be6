/// The committed SDL is what the server serves; regenerate with
/// `cargo run -p hms-api --bin hms -- print-schema > api/schema.graphql`.
#[test]
fn the_committed_schema_is_up_to_date() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../api/schema.graphql"
    ))
    .expect("api/schema.graphql exists");
    let current = hms_api::graphql::sdl();
    assert!(
        committed == current,
        "api/schema.graphql is stale: run `cargo run -p hms-api --bin hms -- print-schema > api/schema.graphql`"
    );
}
