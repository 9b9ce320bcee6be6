//! `commands::together` on real PostgreSQL: the decisions of a unit (a booking's two
//! reservations, say) are appended together or not at all; a writer from elsewhere that
//! gets into one of its streams between the unit's load and its append makes the unit
//! decide again on fresh state, or, when the caller expected a version, fail as a
//! conflict; and nothing of a lost or refused attempt is left behind.
//!
//! The writer "from elsewhere" is a plain INSERT made while the unit decides, as another
//! replica's command would land: the turns of this process (`StreamTurns`) keep its own
//! commands from interleaving so.

use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, FixedOffset, NaiveTime, Utc};
use hms_app::commands::{self, CommandError, Streams};
use hms_domain::schedule::{DoctorSchedule, PatientSchedule, ScheduleCommand, ScheduleError};
use hms_domain::EventMetadata;
use hms_tests::fixtures::{admin_actor, metadata, next_monday};
use hms_tests::spawn_app;
use sqlx::PgPool;
use uuid::Uuid;

const CODE: &str = "UNIT01";

fn at(hour: u32, minute: u32) -> DateTime<FixedOffset> {
    next_monday()
        .and_time(NaiveTime::from_hms_opt(hour, minute, 0).expect("a time"))
        .and_utc()
        .fixed_offset()
}

fn reserve(
    meta: &EventMetadata,
    owner: Uuid,
    appointment: Uuid,
    start: DateTime<FixedOffset>,
) -> ScheduleCommand {
    ScheduleCommand::Reserve {
        actor: meta.actor.clone(),
        owner_id: owner,
        appointment_id: appointment,
        start,
        minutes: 30,
        now: Utc::now(),
    }
}

/// `(event_type, appointment_id)` of each event of a doctor's schedule stream, in order.
async fn doctor_stream(pool: &PgPool, stream: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT event_type, coalesce(payload -> event_type ->> 'appointment_id', '') \
           FROM events WHERE aggregate_type = 'doctor_schedule' AND aggregate_id = $1 \
          ORDER BY sequence",
    )
    .bind(stream)
    .fetch_all(pool)
    .await
    .expect("stream")
}

async fn count(pool: &PgPool, aggregate_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = $1")
        .bind(aggregate_type)
        .fetch_one(pool)
        .await
        .expect("count")
}

/// As another replica cancelling appointment `held`: its slot's release, appended to the
/// doctor's stream at the next sequence, in its own transaction.
async fn release_from_elsewhere(pool: &PgPool, stream: &str, held: Uuid) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         SELECT aggregate_type, aggregate_id, \
                (SELECT max(sequence) + 1 FROM events WHERE aggregate_type = 'doctor_schedule' AND aggregate_id = $1), \
                'SlotReleased', event_version, \
                jsonb_build_object('SlotReleased', jsonb_build_object( \
                    'appointment_id', $2::text, 'reason', 'CANCELLED', 'at', payload -> 'SlotReserved' -> 'at')), \
                metadata \
           FROM events WHERE aggregate_type = 'doctor_schedule' AND aggregate_id = $1 AND sequence = 1",
    )
    .bind(stream)
    .bind(held.to_string())
    .execute(pool)
    .await
    .expect("a write from elsewhere");
}

#[tokio::test]
async fn a_unit_commits_whole_decides_again_after_a_lost_race_and_leaves_nothing_when_refused() {
    let app = spawn_app().await;
    app.setup_hospital(CODE).await;
    let lease = app.state.registry.get(CODE).await.expect("tenant");
    let pool = &lease.pool;
    let runner = &app.state.runner;
    let meta = metadata(CODE, admin_actor(CODE));
    let doctor = Uuid::new_v4();
    let patient = Uuid::new_v4();
    let day = next_monday();
    let doctor_day = DoctorSchedule::id_for(doctor, day);
    let patient_day = PatientSchedule::id_for(patient, day);

    // Appointment `held` has the doctor at 09:00.
    let held = Uuid::new_v4();
    commands::append::<DoctorSchedule>(
        pool,
        &doctor_day,
        reserve(&meta, doctor, held, at(9, 0)),
        (),
        &meta,
    )
    .await
    .expect("held");

    // A unit books the doctor and the patient at 10:00; between its load and its append,
    // another replica cancels `held`. The first attempt loses on the doctor's stream and
    // appends nothing (not even the patient's reservation); the second decides on the
    // stream with the release in it.
    let booked = Uuid::new_v4();
    let attempts = AtomicUsize::new(0);
    let streams = Streams::new()
        .with::<DoctorSchedule>(doctor_day.as_str())
        .with::<PatientSchedule>(patient_day.as_str());
    commands::together(pool, runner, &meta, streams, |unit| {
        let attempt = attempts.fetch_add(1, Ordering::SeqCst);
        let (doctor_day, patient_day, meta) = (doctor_day.as_str(), patient_day.as_str(), &meta);
        async move {
            unit.decide::<PatientSchedule>(
                patient_day,
                reserve(meta, patient, booked, at(10, 0)),
                (),
            )
            .await
            .map_err(|e| Refused(e.to_string()))?;
            unit.decide::<DoctorSchedule>(doctor_day, reserve(meta, doctor, booked, at(10, 0)), ())
                .await
                .map_err(|e| Refused(e.to_string()))?;
            if attempt == 0 {
                release_from_elsewhere(pool, doctor_day, held).await;
            }
            Ok::<_, Refused>(())
        }
    })
    .await
    .expect("booked on the second attempt");
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        2,
        "decided again after the lost race"
    );
    let held_id = held.to_string();
    let booked_id = booked.to_string();
    assert_eq!(
        doctor_stream(pool, &doctor_day).await,
        [
            ("SlotReserved".to_owned(), held_id.clone()),
            ("SlotReleased".to_owned(), held_id),
            ("SlotReserved".to_owned(), booked_id.clone()),
        ]
    );
    assert_eq!(
        count(pool, "patient_schedule").await,
        1,
        "the lost attempt left nothing"
    );

    // The same race with the doctor's version expected (as a client sending
    // `expectedVersion`): a final conflict, and nothing appended.
    let late = Uuid::new_v4();
    let streams = Streams::new()
        .expecting::<DoctorSchedule>(doctor_day.as_str(), Some(3))
        .with::<PatientSchedule>(patient_day.as_str());
    let patients_before = count(pool, "patient_schedule").await;
    let outcome = commands::together(pool, runner, &meta, streams, |unit| {
        let (doctor_day, patient_day, meta) = (doctor_day.as_str(), patient_day.as_str(), &meta);
        async move {
            unit.decide::<PatientSchedule>(
                patient_day,
                reserve(meta, patient, late, at(11, 0)),
                (),
            )
            .await
            .map_err(|e| Refused(e.to_string()))?;
            unit.decide::<DoctorSchedule>(doctor_day, reserve(meta, doctor, late, at(11, 0)), ())
                .await
                .map_err(|e| Refused(e.to_string()))?;
            // Another replica cancels the 10:00 booking in the meantime.
            release_from_elsewhere(pool, doctor_day, booked).await;
            Ok::<_, Refused>(())
        }
    })
    .await;
    assert!(
        matches!(outcome, Err(CommandError::Conflict)),
        "{outcome:?}"
    );
    assert_eq!(count(pool, "patient_schedule").await, patients_before);
    let last = doctor_stream(pool, &doctor_day).await.pop();
    assert_eq!(last, Some(("SlotReleased".to_owned(), booked_id)));

    // A refusal anywhere appends nothing: the doctor is free at 15:00 on one day's
    // stream of the unit, but the other's 15:00 is taken.
    commands::append::<DoctorSchedule>(
        pool,
        &doctor_day,
        reserve(&meta, doctor, Uuid::new_v4(), at(15, 0)),
        (),
        &meta,
    )
    .await
    .expect("15:00 held");
    let other_doctor_day = DoctorSchedule::id_for(Uuid::new_v4(), day);
    let before = (
        count(pool, "doctor_schedule").await,
        count(pool, "patient_schedule").await,
    );
    let refused = commands::together(
        pool,
        runner,
        &meta,
        Streams::new()
            .with::<DoctorSchedule>(other_doctor_day.as_str())
            .with::<DoctorSchedule>(doctor_day.as_str()),
        |unit| {
            let (other_doctor_day, doctor_day, meta) =
                (other_doctor_day.as_str(), doctor_day.as_str(), &meta);
            let third = Uuid::new_v4();
            async move {
                unit.decide::<DoctorSchedule>(
                    other_doctor_day,
                    reserve(meta, doctor, third, at(15, 0)),
                    (),
                )
                .await
                .map_err(|e| Refused(e.to_string()))?;
                match unit
                    .decide::<DoctorSchedule>(
                        doctor_day,
                        reserve(meta, doctor, third, at(15, 0)),
                        (),
                    )
                    .await
                {
                    Err(CommandError::Rejected(ScheduleError::SlotTaken { .. })) => {
                        Err(Refused("taken".into()))
                    }
                    other => Err(Refused(format!("expected SlotTaken, got {other:?}"))),
                }
            }
        },
    )
    .await;
    match refused {
        Err(CommandError::Rejected(Refused(why))) => assert_eq!(why, "taken"),
        other => panic!("refused with the caller's answer, got {other:?}"),
    }
    assert_eq!(
        (
            count(pool, "doctor_schedule").await,
            count(pool, "patient_schedule").await
        ),
        before,
        "a refused unit appends nothing"
    );
}

/// The caller's own refusal, as a use case would map a domain error.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}
