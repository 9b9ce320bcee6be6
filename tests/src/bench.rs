//! Shared set-up of the benchmarks (`tests/benches/`): a large, realistic event log
//! built in bulk with SQL, so that a million events take seconds, not hours.

use std::time::Instant;

use hms_app::auth::password;
use hms_app::config::{Environment, PlatformConfig, Secret};
use hms_app::state::Platform;
use hms_app::tenancy::provisioning::NewHospital;
use sqlx::{Connection, PgConnection};

use crate::{server_options, ADMIN_PASSWORD};

/// A platform of the benchmark's own on the test server: databases named with `prefix`
/// (dropped afterwards with [`crate::drop_databases`]), no spare databases.
pub fn platform_config(prefix: &str, tenant_pool_size: u32) -> PlatformConfig {
    let server = server_options();
    PlatformConfig {
        database_url: Secret::new(format!(
            "postgres://{}@{}:{}/{prefix}_control",
            server.get_username(),
            server.get_host(),
            server.get_port()
        )),
        tenant_db_prefix: prefix.to_owned(),
        tenant_connection_budget: 10,
        tenant_pool_size,
        tenant_pool_max: None,
        control_pool_size: 3,
        spare_databases: 0,
        environment: Environment::Development,
        tenant_role_password: None,
        master_key: None,
        master_key_previous: None,
    }
}

/// Onboards hospital `code` on `platform` and fills its log with about `events` events;
/// returns a connection to its database and the log's size.
pub async fn hospital_with_log(
    platform: &Platform,
    code: &str,
    events: i64,
) -> anyhow::Result<(PgConnection, i64)> {
    let hash = password::hash(ADMIN_PASSWORD.to_owned()).await?;
    let hospital = NewHospital::parse(
        code,
        "Bench Hospital",
        "ENTERPRISE",
        "bench_admin",
        "admin@bench.example",
        "Bench Admin",
        hash,
    )?;
    let database = match platform.provisioner().provision(&hospital).await? {
        hms_app::tenancy::provisioning::ProvisionOutcome::Ready { database_name, .. } => {
            database_name
        }
        other => anyhow::bail!("provisioning stopped early: {other:?}"),
    };
    let mut db = PgConnection::connect_with(&server_options().database(&database)).await?;
    let total = fill_log(&mut db, events).await?;
    Ok((db, total))
}

/// Rows per INSERT transaction while building the log.
const CHUNK: i64 = 50_000;

/// Appends `events` events of staff accounts, patients and record views (see
/// [`INSERT_EVENTS`]) and returns the log's size.
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

/// Events like the command path writes, interleaved as in a working hospital, with full
/// metadata. In every ten streams of ten events: two staff accounts (created, then
/// profile updates: password hashes exercise the redaction path), three patients
/// (registered, then demographic updates), and fifty single-event record views.
const INSERT_EVENTS: &str = r#"
WITH s AS (
  SELECT g, g / 10 AS u, g % 10 AS k,
         CASE WHEN (g / 10) % 10 < 2 THEN 'user'
              WHEN (g / 10) % 10 < 5 THEN 'patient'
              ELSE 'record_access' END AS kind,
         to_char(now() AT TIME ZONE 'utc', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at
    FROM generate_series($1::bigint, $2::bigint - 1) AS g
), d AS (
  -- A patient's demographics; `k` makes each update different.
  SELECT s.*, jsonb_build_object(
           'given_name', 'Amina', 'middle_name', NULL,
           'family_name', 'Bench ' || u || CASE WHEN k > 0 THEN ' r' || k ELSE '' END,
           'date_of_birth', to_char(date '1940-01-01' + (u % 25000)::int, 'YYYY-MM-DD'),
           'sex', 'FEMALE', 'phone', '+254 700 ' || lpad((u % 1000000)::text, 6, '0'),
           'email', 'patient' || u || '.r' || k || '@mail.example',
           'address', NULL, 'emergency_contact', NULL, 'blood_type', NULL) AS demographics
    FROM s
)
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT kind,
       CASE WHEN kind = 'record_access' THEN md5('view-' || g)::uuid::text
            ELSE md5(kind || '-' || u)::uuid::text END,
       CASE WHEN kind = 'record_access' THEN 1 ELSE k + 1 END,
       CASE WHEN kind = 'user' AND k = 0 THEN 'UserCreated'
            WHEN kind = 'user' THEN 'UserProfileUpdated'
            WHEN kind = 'patient' AND k = 0 THEN 'PatientRegistered'
            WHEN kind = 'patient' THEN 'PatientDemographicsUpdated'
            ELSE 'PatientRecordViewed' END,
       CASE WHEN kind = 'patient' AND k = 0 THEN '2.0' ELSE '1.0' END,
       CASE
         WHEN kind = 'user' AND k = 0 THEN
           jsonb_build_object('UserCreated', jsonb_build_object(
             'user_id', md5('user-' || u)::uuid,
             'username', 'user' || u,
             'email', 'user' || u || '@hospital.example',
             'full_name', 'Bench User ' || u,
             'role', 'DOCTOR',
             'department_id', NULL,
             'password_hash', '$argon2id$v=19$m=19456,t=2,p=1$' || md5(g::text) || '$' || md5((g + 1)::text),
             'created_at', at))
         WHEN kind = 'user' THEN
           jsonb_build_object('UserProfileUpdated', jsonb_build_object(
             'full_name', 'Bench User ' || u || ' (rev ' || k || ')',
             'email', 'user' || u || '.r' || k || '@hospital.example',
             'at', at))
         WHEN kind = 'patient' AND k = 0 THEN
           jsonb_build_object('PatientRegistered', jsonb_build_object(
             'patient_id', md5('patient-' || u)::uuid,
             'mrn', 'BNC001-' || lpad(u::text, 8, '0'),
             'demographics', demographics,
             'allergies', '[]'::jsonb, 'alerts', '[]'::jsonb,
             'registered_at', at))
         WHEN kind = 'patient' THEN
           jsonb_build_object('PatientDemographicsUpdated', jsonb_build_object(
             'demographics', demographics, 'at', at))
         ELSE
           -- A view of one of the patients registered a little earlier.
           jsonb_build_object('PatientRecordViewed', jsonb_build_object(
             'patient_id', md5('patient-' || ((u / 10) * 10 + 2 + g % 3))::uuid,
             'viewer_id', md5('actor-' || (g % 50))::uuid,
             'viewer_username', 'doctor' || (g % 50),
             'viewer_role', 'DOCTOR',
             'purpose', 'patient',
             'at', at))
       END,
       jsonb_build_object(
         'actor_id', md5('actor-' || (g % 50))::uuid,
         'actor_username', 'admin' || (g % 50),
         'actor_role', 'HOSPITAL_ADMIN',
         'tenant', 'BNC001',
         'request_id', md5('request-' || g)::uuid,
         'client_addr', '10.0.' || (g % 200) || '.1',
         'at', at)
  FROM d
 ORDER BY g
"#;
