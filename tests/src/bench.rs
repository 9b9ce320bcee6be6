//! Shared set-up of the benchmarks (`tests/benches/`): a large, realistic event log
//! built in bulk with SQL, so that a million events take seconds, not hours.

use std::time::Instant;

use sqlx::PgConnection;

/// Rows per INSERT transaction while building the log.
const CHUNK: i64 = 50_000;

/// Appends `events` user events (as the command path writes them: created, then
/// profile updates, ten per stream, with full metadata) and returns the log's size.
pub async fn fill_log(db: &mut PgConnection, events: i64) -> Result<i64, sqlx::Error> {
    let started = Instant::now();
    let mut from = 0;
    while from < events {
        let to = (from + CHUNK).min(events);
        sqlx::query(INSERT_EVENTS)
            .bind(from)
            .bind(to)
            .execute(&mut *db)
            .await?;
        from = to;
    }
    sqlx::query("VACUUM ANALYZE events")
        .execute(&mut *db)
        .await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut *db)
        .await?;
    println!(
        "built a log of {total} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(total)
}

/// Events like the command path writes: users created (with a password hash, so the
/// redaction path is exercised) and profile updates, ten per stream, with full metadata.
const INSERT_EVENTS: &str = r#"
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT 'user',
       md5('bench-' || (g / 10))::uuid::text,
       (g % 10) + 1,
       CASE WHEN g % 10 = 0 THEN 'UserCreated' ELSE 'UserProfileUpdated' END,
       '1.0',
       CASE WHEN g % 10 = 0 THEN
         jsonb_build_object('UserCreated', jsonb_build_object(
           'user_id', md5('bench-' || (g / 10))::uuid,
           'username', 'user' || (g / 10),
           'email', 'user' || (g / 10) || '@hospital.example',
           'full_name', 'Bench User ' || (g / 10),
           'role', 'DOCTOR',
           'department_id', NULL,
           'password_hash', '$argon2id$v=19$m=19456,t=2,p=1$' || md5(g::text) || '$' || md5((g + 1)::text),
           'created_at', to_char(now() AT TIME ZONE 'utc', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')))
       ELSE
         jsonb_build_object('UserProfileUpdated', jsonb_build_object(
           'full_name', 'Bench User ' || (g / 10) || ' (rev ' || (g % 10) || ')',
           'email', 'user' || (g / 10) || '.r' || (g % 10) || '@hospital.example',
           'at', to_char(now() AT TIME ZONE 'utc', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')))
       END,
       jsonb_build_object(
         'actor_id', md5('actor-' || (g % 50))::uuid,
         'actor_username', 'admin' || (g % 50),
         'actor_role', 'HOSPITAL_ADMIN',
         'tenant', 'BNC001',
         'request_id', md5('request-' || g)::uuid,
         'client_addr', '10.0.' || (g % 200) || '.1',
         'at', to_char(now() AT TIME ZONE 'utc', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
  FROM generate_series($1::bigint, $2::bigint - 1) AS g
"#;
