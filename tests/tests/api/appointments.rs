//! Appointments through the API: booking in the hospital's time zone, the status machine,
//! rescheduling and cancelling (slots given back), the doctor's day, and no double
//! booking of a doctor or a patient, also under 20 concurrent requests.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc, Weekday};
use hms_app::commands;
use hms_domain::common::{BoundedText, Currency, Username};
use hms_domain::hospital::{Hospital, HospitalCommand, HospitalProfile, TimeZoneName};
use hms_domain::user::user_id_for;
use hms_domain::{Actor, EventMetadata, Role};
use hms_tests::fixtures::{hospital_with_staff, register_simple};
use hms_tests::{error_code, spawn_app, spawn_app_with, TestApp, TestConfig};
use serde_json::{json, Value};
use uuid::Uuid;

const APPOINTMENT_FIELDS: &str = "id patientId doctorId departmentId start end localDate reason \
    status notes cancelReason checkedInAt startedAt completedAt cancelledAt version";

/// Sets the hospital's time zone through the command path.
pub(crate) async fn set_time_zone(app: &TestApp, code: &str, zone: &str) {
    let lease = app.state.registry.get(code).await.expect("tenant");
    let (actor, metadata) = test_actor(code, "setup", Role::HospitalAdmin);
    let command = HospitalCommand::UpdateProfile {
        actor,
        profile: HospitalProfile {
            name: BoundedText::parse("name", &format!("Hospital {code}"), 200).expect("valid"),
            contact_email: None,
            contact_phone: None,
            address: None,
            time_zone: TimeZoneName::parse(zone).expect("valid"),
            currency: Currency::parse("KES").expect("valid"),
        },
        now: Utc::now(),
    };
    commands::execute::<Hospital>(&lease.pool, &app.state.runner, code, command, (), &metadata)
        .await
        .expect("profile updated");
}

/// A Monday at least a week ahead (the default working week is Monday to Friday).
fn next_monday() -> NaiveDate {
    let mut day = Utc::now().date_naive() + Duration::days(7);
    while day.weekday() != Weekday::Mon {
        day += Duration::days(1);
    }
    day
}

/// `day` at `hh:mm` in Nairobi (UTC+3 all year).
pub(crate) fn nairobi(day: NaiveDate, hh: u32, mm: u32) -> String {
    format!("{day}T{hh:02}:{mm:02}:00+03:00")
}

fn instant(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().unwrap_or_else(|| panic!("a time: {value}")))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

async fn schedule(app: &TestApp, token: &str, input: Value) -> Value {
    app.graphql(
        &format!(
            "mutation($input: ScheduleAppointmentInput!) {{ scheduleAppointment(input: $input) {{ {APPOINTMENT_FIELDS} }} }}"
        ),
        json!({ "input": input }),
        Some(token),
    )
    .await
}

fn booking(patient: &str, doctor: Uuid, start: &str, minutes: i32) -> Value {
    json!({ "patientId": patient, "doctorId": doctor, "start": start, "durationMinutes": minutes, "reason": "Follow-up" })
}

async fn act(app: &TestApp, token: &str, mutation: &str, input_type: &str, input: Value) -> Value {
    app.graphql(
        &format!(
            "mutation($input: {input_type}!) {{ {mutation}(input: $input) {{ {APPOINTMENT_FIELDS} }} }}"
        ),
        json!({ "input": input }),
        Some(token),
    )
    .await
}

fn id_of(response: &Value, mutation: &str) -> String {
    response["data"][mutation]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{mutation}: {response}"))
        .to_owned()
}

async fn day_view(
    app: &TestApp,
    token: &str,
    doctor: Uuid,
    day: NaiveDate,
    cancelled: bool,
) -> Value {
    app.graphql(
        "query($d: UUID!, $day: NaiveDate!, $c: Boolean!) { doctorSchedule(doctorId: $d, day: $day, includeCancelled: $c) { \
           opensAt closesAt appointments { id start status } } }",
        json!({ "d": doctor, "day": day, "c": cancelled }),
        Some(token),
    )
    .await
}

#[tokio::test]
async fn an_appointment_goes_from_booking_to_completion_in_the_hospitals_local_time() {
    let app = spawn_app().await;
    let staff = hospital_with_staff(&app, "DMC001").await;
    set_time_zone(&app, "DMC001", "Africa/Nairobi").await;
    let desk = staff.receptionist.as_str();
    let day = next_monday();
    let wanjiku = register_simple(&app, desk, "Wanjiku", "Kamau").await;
    let otieno = register_simple(&app, desk, "Otieno", "Odhiambo").await;

    let booked = schedule(
        &app,
        desk,
        booking(&wanjiku, staff.doctor_id, &nairobi(day, 9, 0), 30),
    )
    .await;
    let appointment = &booked["data"]["scheduleAppointment"];
    assert_eq!(appointment["status"], "SCHEDULED", "{booked}");
    assert_eq!(
        instant(&appointment["start"]),
        instant(&json!(format!("{day}T06:00:00Z")))
    );
    assert_eq!(
        instant(&appointment["end"]) - instant(&appointment["start"]),
        Duration::minutes(30)
    );
    assert_eq!(appointment["localDate"], day.to_string());
    assert_eq!(appointment["version"], 1);
    let first = id_of(&booked, "scheduleAppointment");
    // The answer is the appointment exactly as a later read shows it (docs/adr/0017: it
    // may be the row the catch-up round stored and handed over, instead of a read).
    let read_back = app
        .graphql(
            &format!("query($id: UUID!) {{ appointment(id: $id) {{ {APPOINTMENT_FIELDS} }} }}"),
            json!({ "id": first }),
            Some(desk),
        )
        .await;
    assert_eq!(
        &read_back["data"]["appointment"], appointment,
        "{read_back}"
    );

    // Booking rules, checked in local time: 16:00 UTC is inside 08-17 UTC but is 19:00
    // in Nairobi.
    let refusals = [
        ("after hours", format!("{day}T16:00:00Z"), 15),
        ("off the slot grid", nairobi(day, 9, 7), 15),
        ("not whole slots", nairobi(day, 11, 0), 20),
        ("Saturday", nairobi(day + Duration::days(5), 10, 0), 15),
        ("in the past", "2020-01-06T09:00:00+03:00".to_owned(), 15),
    ];
    for (case, start, minutes) in refusals {
        let refused = schedule(
            &app,
            desk,
            booking(&otieno, staff.doctor_id, &start, minutes),
        )
        .await;
        assert_eq!(
            error_code(&refused),
            Some("VALIDATION"),
            "{case}: {refused}"
        );
        assert_eq!(
            refused["errors"][0]["extensions"]["field"], "start",
            "{case}"
        );
    }
    let too_long = schedule(
        &app,
        desk,
        booking(&otieno, staff.doctor_id, &nairobi(day, 9, 0), 0),
    )
    .await;
    assert_eq!(
        too_long["errors"][0]["extensions"]["field"],
        "durationMinutes"
    );

    // The doctor's time is theirs: an overlap is a CONFLICT, the next slot is free.
    let overlap = schedule(
        &app,
        desk,
        booking(&otieno, staff.doctor_id, &nairobi(day, 9, 15), 15),
    )
    .await;
    assert_eq!(error_code(&overlap), Some("CONFLICT"), "{overlap}");
    assert!(
        overlap["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("doctor")),
        "{overlap}"
    );
    let adjacent = schedule(
        &app,
        desk,
        booking(&otieno, staff.doctor_id, &nairobi(day, 9, 30), 15),
    )
    .await;
    let second = id_of(&adjacent, "scheduleAppointment");

    // Who and what can be booked.
    let nurse_id = user_id_for(&Username::parse("dmc001_nurse").expect("valid"));
    let not_a_doctor = schedule(
        &app,
        desk,
        booking(&otieno, nurse_id, &nairobi(day, 13, 0), 15),
    )
    .await;
    assert_eq!(
        not_a_doctor["errors"][0]["extensions"]["field"], "doctorId",
        "{not_a_doctor}"
    );
    let no_doctor = schedule(
        &app,
        desk,
        booking(&otieno, Uuid::new_v4(), &nairobi(day, 13, 0), 15),
    )
    .await;
    assert_eq!(error_code(&no_doctor), Some("NOT_FOUND"));
    let no_patient = schedule(
        &app,
        desk,
        booking(
            &Uuid::new_v4().to_string(),
            staff.doctor_id,
            &nairobi(day, 13, 0),
            15,
        ),
    )
    .await;
    assert_eq!(error_code(&no_patient), Some("NOT_FOUND"));
    let mut with_department = booking(&otieno, staff.doctor_id, &nairobi(day, 13, 0), 15);
    with_department["departmentId"] = json!(Uuid::new_v4());
    let no_department = schedule(&app, desk, with_department).await;
    assert_eq!(error_code(&no_department), Some("NOT_FOUND"));
    let by_accountant = schedule(
        &app,
        &staff.accountant,
        booking(&otieno, staff.doctor_id, &nairobi(day, 13, 0), 15),
    )
    .await;
    assert_eq!(error_code(&by_accountant), Some("FORBIDDEN"));

    // The doctor's day, in order of start, with the day's working hours.
    let view = day_view(&app, &staff.doctor, staff.doctor_id, day, false).await;
    let schedule_of_day = &view["data"]["doctorSchedule"];
    assert_eq!(schedule_of_day["opensAt"], "08:00:00", "{view}");
    assert_eq!(schedule_of_day["closesAt"], "17:00:00");
    let ids: Vec<&str> = schedule_of_day["appointments"]
        .as_array()
        .expect("appointments")
        .iter()
        .map(|a| a["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);

    // The status machine: check in (NURSE), start and complete (the appointment's own
    // DOCTOR); everything else is refused.
    let on = |id: &str| json!({ "appointmentId": id });
    let early_no_show = act(
        &app,
        desk,
        "markNoShow",
        "AppointmentActionInput",
        on(&first),
    )
    .await;
    assert_eq!(
        error_code(&early_no_show),
        Some("CONFLICT"),
        "{early_no_show}"
    );
    let not_checked_in = act(
        &app,
        &staff.doctor,
        "startAppointment",
        "AppointmentActionInput",
        on(&first),
    )
    .await;
    assert_eq!(error_code(&not_checked_in), Some("CONFLICT"));
    let stale = act(
        &app,
        &staff.nurse,
        "checkInAppointment",
        "AppointmentActionInput",
        json!({ "appointmentId": first, "expectedVersion": 0 }),
    )
    .await;
    assert_eq!(error_code(&stale), Some("CONFLICT"), "{stale}");
    let checked_in = act(
        &app,
        &staff.nurse,
        "checkInAppointment",
        "AppointmentActionInput",
        json!({ "appointmentId": first, "expectedVersion": 1 }),
    )
    .await;
    assert_eq!(
        checked_in["data"]["checkInAppointment"]["status"], "CHECKED_IN",
        "{checked_in}"
    );
    assert!(checked_in["data"]["checkInAppointment"]["checkedInAt"].is_string());
    let twice = act(
        &app,
        &staff.nurse,
        "checkInAppointment",
        "AppointmentActionInput",
        on(&first),
    )
    .await;
    assert_eq!(error_code(&twice), Some("CONFLICT"));
    let by_desk = act(
        &app,
        desk,
        "startAppointment",
        "AppointmentActionInput",
        on(&first),
    )
    .await;
    assert_eq!(error_code(&by_desk), Some("FORBIDDEN"));
    let other_doctor = act(
        &app,
        &staff.other_doctor,
        "startAppointment",
        "AppointmentActionInput",
        on(&first),
    )
    .await;
    assert_eq!(
        error_code(&other_doctor),
        Some("FORBIDDEN"),
        "{other_doctor}"
    );
    let started = act(
        &app,
        &staff.doctor,
        "startAppointment",
        "AppointmentActionInput",
        on(&first),
    )
    .await;
    assert_eq!(
        started["data"]["startAppointment"]["status"], "IN_PROGRESS",
        "{started}"
    );
    let completed = act(
        &app,
        &staff.doctor,
        "completeAppointment",
        "CompleteAppointmentInput",
        json!({ "appointmentId": first, "notes": "Recovering well." }),
    )
    .await;
    let done = &completed["data"]["completeAppointment"];
    assert_eq!(done["status"], "COMPLETED", "{completed}");
    assert_eq!(done["notes"], "Recovering well.");
    assert_eq!(done["version"], 4);
    for (mutation, input_type, input) in [
        (
            "cancelAppointment",
            "CancelAppointmentInput",
            json!({ "appointmentId": first, "reason": "x" }),
        ),
        ("checkInAppointment", "AppointmentActionInput", on(&first)),
        ("markNoShow", "AppointmentActionInput", on(&first)),
        (
            "rescheduleAppointment",
            "RescheduleAppointmentInput",
            json!({ "appointmentId": first, "start": nairobi(day, 15, 0) }),
        ),
    ] {
        let refused = act(&app, desk, mutation, input_type, input).await;
        assert_eq!(
            error_code(&refused),
            Some("CONFLICT"),
            "{mutation}: {refused}"
        );
    }
    let unknown = act(
        &app,
        &staff.nurse,
        "checkInAppointment",
        "AppointmentActionInput",
        on(&Uuid::new_v4().to_string()),
    )
    .await;
    assert_eq!(error_code(&unknown), Some("NOT_FOUND"));

    // Cancelling gives the time back; a retry with the same key gets the same answer.
    let cancel = json!({ "appointmentId": second, "reason": "Patient travelling", "idempotencyKey": "cancel-1" });
    let cancelled = act(
        &app,
        desk,
        "cancelAppointment",
        "CancelAppointmentInput",
        cancel.clone(),
    )
    .await;
    let retried = act(
        &app,
        desk,
        "cancelAppointment",
        "CancelAppointmentInput",
        cancel,
    )
    .await;
    assert_eq!(
        retried["data"]["cancelAppointment"]["status"], "CANCELLED",
        "{retried}"
    );
    assert_eq!(
        cancelled["data"]["cancelAppointment"]["status"], "CANCELLED",
        "{cancelled}"
    );
    assert_eq!(
        cancelled["data"]["cancelAppointment"]["cancelReason"],
        "Patient travelling"
    );
    let rebooked = schedule(
        &app,
        desk,
        booking(&wanjiku, staff.doctor_id, &nairobi(day, 9, 30), 15),
    )
    .await;
    let third = id_of(&rebooked, "scheduleAppointment");
    let view = day_view(&app, desk, staff.doctor_id, day, false).await;
    assert_eq!(
        view["data"]["doctorSchedule"]["appointments"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let view = day_view(&app, desk, staff.doctor_id, day, true).await;
    assert_eq!(
        view["data"]["doctorSchedule"]["appointments"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );

    // Rescheduling on the same day, onto time that overlaps the old slot, then to
    // another day; the old time is free each time.
    let moved = act(
        &app,
        desk,
        "rescheduleAppointment",
        "RescheduleAppointmentInput",
        json!({ "appointmentId": third, "start": nairobi(day, 9, 45), "durationMinutes": 30 }),
    )
    .await;
    assert_eq!(
        instant(&moved["data"]["rescheduleAppointment"]["start"]),
        instant(&json!(nairobi(day, 9, 45))),
        "{moved}"
    );
    let into_old = schedule(
        &app,
        desk,
        booking(&otieno, staff.doctor_id, &nairobi(day, 9, 30), 15),
    )
    .await;
    let fourth = id_of(&into_old, "scheduleAppointment");
    let next_day = day + Duration::days(1);
    let moved = act(
        &app,
        desk,
        "rescheduleAppointment",
        "RescheduleAppointmentInput",
        json!({ "appointmentId": third, "start": nairobi(next_day, 10, 0) }),
    )
    .await;
    assert_eq!(
        moved["data"]["rescheduleAppointment"]["localDate"],
        next_day.to_string(),
        "{moved}"
    );
    let into_old = schedule(
        &app,
        desk,
        booking(&wanjiku, staff.doctor_id, &nairobi(day, 10, 0), 15),
    )
    .await;
    id_of(&into_old, "scheduleAppointment");

    // A stale version is refused; so is rescheduling onto taken time, and the old slot
    // stays held.
    let stale = act(
        &app,
        desk,
        "rescheduleAppointment",
        "RescheduleAppointmentInput",
        json!({ "appointmentId": fourth, "start": nairobi(day, 16, 0), "expectedVersion": 7 }),
    )
    .await;
    assert_eq!(error_code(&stale), Some("CONFLICT"), "{stale}");
    let onto_taken = act(
        &app,
        desk,
        "rescheduleAppointment",
        "RescheduleAppointmentInput",
        json!({ "appointmentId": fourth, "start": nairobi(day, 10, 0) }),
    )
    .await;
    assert_eq!(error_code(&onto_taken), Some("CONFLICT"), "{onto_taken}");
    let still_held = schedule(
        &app,
        desk,
        booking(&wanjiku, staff.doctor_id, &nairobi(day, 9, 30), 15),
    )
    .await;
    assert_eq!(error_code(&still_held), Some("CONFLICT"), "{still_held}");

    // Lists: by doctor, patient, status and time; ACCOUNTANT may read them.
    let list = app
        .graphql(
            "query($f: AppointmentFilter) { appointments(filter: $f, first: 100) { edges { node { id status } } } }",
            json!({ "f": { "patientId": wanjiku, "status": "SCHEDULED" } }),
            Some(&staff.accountant),
        )
        .await;
    let listed: Vec<&str> = list["data"]["appointments"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|e| e["node"]["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        listed.len(),
        2,
        "the 10:00 booking and the one moved to the next day: {list}"
    );
    let window = app
        .graphql(
            "query($f: AppointmentFilter) { appointments(filter: $f) { edges { node { id } } } }",
            json!({ "f": { "doctorId": staff.doctor_id, "from": nairobi(day, 9, 30), "to": nairobi(day, 10, 0) } }),
            Some(desk),
        )
        .await;
    let mut in_window: Vec<&str> = window["data"]["appointments"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["id"].as_str().expect("id"))
        .collect();
    in_window.sort_unstable();
    let mut expected = [second.as_str(), fourth.as_str()];
    expected.sort_unstable();
    assert_eq!(in_window, expected, "both start at 09:30: {window}");

    // An inactive patient cannot be booked.
    app.graphql(
        "mutation($input: DeactivatePatientInput!) { deactivatePatient(input: $input) { status } }",
        json!({ "input": { "patientId": otieno, "reason": "Moved" } }),
        Some(&staff.admin),
    )
    .await;
    let inactive = schedule(
        &app,
        desk,
        booking(&otieno, staff.other_doctor_id, &nairobi(day, 14, 0), 15),
    )
    .await;
    assert_eq!(error_code(&inactive), Some("CONFLICT"), "{inactive}");

    // A retried booking with the same key books once.
    let keyed = json!({
        "patientId": wanjiku, "doctorId": staff.other_doctor_id, "start": nairobi(day, 15, 0),
        "reason": "Check-up", "idempotencyKey": "book-1"
    });
    let a = schedule(&app, desk, keyed.clone()).await;
    let b = schedule(&app, desk, keyed).await;
    assert_eq!(
        id_of(&a, "scheduleAppointment"),
        id_of(&b, "scheduleAppointment")
    );

    // A time zone PostgreSQL does not know (the domain checks only its form): the booking
    // is refused for an administrator to correct it, after an unknown doctor or patient is
    // reported as such, and nothing is held.
    set_time_zone(&app, "DMC001", "Mars/Olympus_Mons").await;
    let lease = app.state.registry.get("DMC001").await.expect("tenant");
    let events = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events")
            .fetch_one(&lease.pool)
            .await
            .expect("count")
    };
    let before = events().await;
    let start = nairobi(day + Duration::days(1), 11, 0);
    let no_doctor = schedule(&app, desk, booking(&wanjiku, Uuid::new_v4(), &start, 15)).await;
    assert_eq!(error_code(&no_doctor), Some("NOT_FOUND"), "{no_doctor}");
    let no_patient = schedule(
        &app,
        desk,
        booking(&Uuid::new_v4().to_string(), staff.doctor_id, &start, 15),
    )
    .await;
    assert_eq!(error_code(&no_patient), Some("NOT_FOUND"), "{no_patient}");
    let unknown_zone = schedule(&app, desk, booking(&wanjiku, staff.doctor_id, &start, 15)).await;
    assert_eq!(
        error_code(&unknown_zone),
        Some("CONFLICT"),
        "{unknown_zone}"
    );
    assert!(
        unknown_zone["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Mars/Olympus_Mons") && m.contains("administrator")),
        "{unknown_zone}"
    );
    assert_eq!(events().await, before, "no time was held");
}

/// The appointment's events and its slots', grouped by the transaction that wrote them,
/// in log order: `aggregate_type:event_type` per event.
async fn transactions(app: &TestApp, code: &str) -> Vec<Vec<String>> {
    let mut db = app.connect(&app.database_for(code)).await;
    sqlx::query_scalar(
        "SELECT array_agg(aggregate_type || ':' || event_type ORDER BY position) \
           FROM events \
          WHERE aggregate_type IN ('appointment', 'doctor_schedule', 'patient_schedule') \
          GROUP BY transaction_id ORDER BY min(position)",
    )
    .fetch_all(&mut db)
    .await
    .expect("transactions")
}

#[tokio::test]
async fn a_booking_and_each_change_of_it_commit_as_one_transaction() {
    let app = spawn_app().await;
    let staff = hospital_with_staff(&app, "DMC001").await;
    let desk = staff.receptionist.as_str();
    let day = next_monday();
    let patient = register_simple(&app, desk, "Achieng", "Otieno").await;

    let booked = schedule(
        &app,
        desk,
        booking(&patient, staff.doctor_id, &format!("{day}T09:00:00Z"), 30),
    )
    .await;
    let id = id_of(&booked, "scheduleAppointment");
    let next_day = day + Duration::days(1);
    let moved = act(
        &app,
        desk,
        "rescheduleAppointment",
        "RescheduleAppointmentInput",
        json!({ "appointmentId": id, "start": format!("{next_day}T10:00:00Z") }),
    )
    .await;
    assert_eq!(
        moved["data"]["rescheduleAppointment"]["localDate"],
        next_day.to_string(),
        "{moved}"
    );
    let same_day = act(
        &app,
        desk,
        "rescheduleAppointment",
        "RescheduleAppointmentInput",
        json!({ "appointmentId": id, "start": format!("{next_day}T10:15:00Z") }),
    )
    .await;
    assert_eq!(
        same_day["data"]["rescheduleAppointment"]["version"], 3,
        "{same_day}"
    );
    let cancelled = act(
        &app,
        desk,
        "cancelAppointment",
        "CancelAppointmentInput",
        json!({ "appointmentId": id, "reason": "Feeling better" }),
    )
    .await;
    assert_eq!(
        cancelled["data"]["cancelAppointment"]["status"], "CANCELLED",
        "{cancelled}"
    );

    let reserve = [
        "doctor_schedule:SlotReserved",
        "patient_schedule:SlotReserved",
    ];
    let release = [
        "doctor_schedule:SlotReleased",
        "patient_schedule:SlotReleased",
    ];
    let mut moving: Vec<&str> = Vec::new();
    for (released, reserved) in release.iter().zip(&reserve) {
        moving.extend([*released, *reserved]);
    }
    let expected: Vec<Vec<&str>> = vec![
        [&reserve[..], &["appointment:AppointmentScheduled"]].concat(),
        [&moving[..], &["appointment:AppointmentRescheduled"]].concat(),
        [&moving[..], &["appointment:AppointmentRescheduled"]].concat(),
        [&release[..], &["appointment:AppointmentCancelled"]].concat(),
    ];
    assert_eq!(transactions(&app, "DMC001").await, expected);

    // A refused change appends nothing: the time is free again, and a second
    // cancellation is refused without touching the slots.
    let again = act(
        &app,
        desk,
        "cancelAppointment",
        "CancelAppointmentInput",
        json!({ "appointmentId": id, "reason": "Twice" }),
    )
    .await;
    assert_eq!(error_code(&again), Some("CONFLICT"), "{again}");
    assert_eq!(transactions(&app, "DMC001").await.len(), expected.len());
    let rebooked = schedule(
        &app,
        desk,
        booking(
            &patient,
            staff.doctor_id,
            &format!("{next_day}T10:15:00Z"),
            15,
        ),
    )
    .await;
    id_of(&rebooked, "scheduleAppointment");
}

#[tokio::test]
async fn twenty_concurrent_bookings_of_one_doctor_slot_yield_exactly_one_appointment() {
    let app = spawn_app_with(TestConfig {
        tenant_pool_size: 10,
        tenant_connection_budget: 20,
        ..TestConfig::default()
    })
    .await;
    let staff = hospital_with_staff(&app, "DMC001").await;
    let desk = staff.receptionist.as_str();
    let day = next_monday();
    // Twenty different patients: only the doctor's schedule stands between them.
    let mut patients = Vec::new();
    for i in 0..20 {
        patients.push(register_simple(&app, desk, &format!("Patient{i}"), "Racer").await);
    }
    let start = format!("{day}T10:00:00Z");
    let attempts = patients.iter().map(|p| {
        let input = booking(p, staff.doctor_id, &start, 30);
        let app = &app;
        async move { schedule(app, desk, input).await }
    });
    let answers = futures::future::join_all(attempts).await;
    let booked: Vec<&Value> = answers
        .iter()
        .filter(|a| a["data"]["scheduleAppointment"]["id"].is_string())
        .collect();
    assert_eq!(booked.len(), 1, "exactly one booking wins: {answers:?}");
    for answer in &answers {
        if !answer["data"]["scheduleAppointment"]["id"].is_string() {
            assert_eq!(error_code(answer), Some("CONFLICT"), "{answer}");
        }
    }

    let mut db = app.connect(&app.database_for("DMC001")).await;
    let scheduled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'appointment' AND event_type = 'AppointmentScheduled'",
    )
    .fetch_one(&mut db)
    .await
    .expect("count");
    assert_eq!(scheduled, 1);
    let stream = format!("{}/{day}", staff.doctor_id);
    let net: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(CASE event_type WHEN 'SlotReserved' THEN 1 WHEN 'SlotReleased' THEN -1 END), 0) \
           FROM events WHERE aggregate_type = 'doctor_schedule' AND aggregate_id = $1",
    )
    .bind(&stream)
    .fetch_one(&mut db)
    .await
    .expect("net reservations");
    assert_eq!(net, 1, "one net reservation on {stream}");
    let patient_net: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(CASE event_type WHEN 'SlotReserved' THEN 1 WHEN 'SlotReleased' THEN -1 END), 0) \
           FROM events WHERE aggregate_type = 'patient_schedule'",
    )
    .fetch_one(&mut db)
    .await
    .expect("patient reservations");
    assert_eq!(patient_net, 1);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM appointments")
        .fetch_one(&mut db)
        .await
        .expect("read model");
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn a_patient_cannot_be_booked_with_two_doctors_at_overlapping_times() {
    let app = spawn_app().await;
    let staff = hospital_with_staff(&app, "DMC001").await;
    let desk = staff.receptionist.as_str();
    let day = next_monday();
    let patient = register_simple(&app, desk, "Wanjiku", "Kamau").await;
    let other = register_simple(&app, desk, "Otieno", "Odhiambo").await;

    let first = schedule(
        &app,
        desk,
        booking(&patient, staff.doctor_id, &format!("{day}T11:00:00Z"), 30),
    )
    .await;
    id_of(&first, "scheduleAppointment");
    let overlapping = schedule(
        &app,
        desk,
        booking(
            &patient,
            staff.other_doctor_id,
            &format!("{day}T11:15:00Z"),
            30,
        ),
    )
    .await;
    assert_eq!(error_code(&overlapping), Some("CONFLICT"), "{overlapping}");
    assert!(
        overlapping["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("patient")),
        "{overlapping}"
    );

    // The refused booking appended nothing (its decisions are one unit): the second
    // doctor's time was never held, and is free.
    let free = schedule(
        &app,
        desk,
        booking(
            &other,
            staff.other_doctor_id,
            &format!("{day}T11:15:00Z"),
            30,
        ),
    )
    .await;
    id_of(&free, "scheduleAppointment");
    let mut db = app.connect(&app.database_for("DMC001")).await;
    let stream = format!("{}/{day}", staff.other_doctor_id);
    let events: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT event_type, payload FROM events WHERE aggregate_type = 'doctor_schedule' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&stream)
    .fetch_all(&mut db)
    .await
    .expect("events");
    let kinds: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(kinds, ["SlotReserved"]);
    assert_eq!(
        events[0].1["SlotReserved"]["appointment_id"],
        id_of(&free, "scheduleAppointment")
    );
    let appointments: i64 = sqlx::query_scalar("SELECT count(*) FROM appointments")
        .fetch_one(&mut db)
        .await
        .expect("count");
    assert_eq!(appointments, 2);
}

/// An actor, and the metadata, for commands a test runs directly.
fn test_actor(code: &str, username: &str, role: Role) -> (Actor, EventMetadata) {
    let actor = Actor {
        user_id: Uuid::new_v4(),
        username: username.into(),
        role,
    };
    let metadata = EventMetadata {
        actor: actor.clone(),
        tenant: code.into(),
        request_id: "test".into(),
        client_addr: None,
        at: Utc::now(),
    };
    (actor, metadata)
}

#[tokio::test]
async fn slots_left_held_by_broken_bookings_are_released_by_the_sweep() {
    use hms_app::workers::reservation_sweep::{sweep, GRACE};
    use hms_domain::appointment::{Appointment, AppointmentCommand};
    use hms_domain::schedule::{DoctorSchedule, ScheduleCommand};

    let app = spawn_app().await;
    let code = "SWP001";
    let staff = hospital_with_staff(&app, code).await;
    let desk = staff.receptionist.as_str();
    let day = next_monday();
    let pool = app
        .state
        .registry
        .get(code)
        .await
        .expect("tenant")
        .pool
        .clone();
    let first = register_simple(&app, desk, "Held", "Slot").await;
    let second = register_simple(&app, desk, "Second", "Patient").await;

    // A booking that died after its first step: the doctor's 10:00 is held, with no
    // appointment behind it.
    let (actor, metadata) = test_actor(code, "desk", Role::Receptionist);
    let reserve = ScheduleCommand::Reserve {
        actor,
        owner_id: staff.doctor_id,
        appointment_id: Uuid::new_v4(),
        start: DateTime::parse_from_rfc3339(&format!("{day}T10:00:00+00:00")).expect("start"),
        minutes: 30,
        now: Utc::now(),
    };
    let stream = DoctorSchedule::id_for(staff.doctor_id, day);
    commands::append::<DoctorSchedule>(&pool, &stream, reserve, (), &metadata)
        .await
        .expect("orphan reservation");
    let ten = format!("{day}T10:00:00Z");
    let refused = schedule(&app, desk, booking(&first, staff.doctor_id, &ten, 30)).await;
    assert_eq!(error_code(&refused), Some("CONFLICT"), "{refused}");

    // A booking that completed, then was cancelled without its slots being given back
    // (the saga's release failed).
    let eleven = format!("{day}T11:00:00Z");
    let booked = schedule(&app, desk, booking(&second, staff.doctor_id, &eleven, 30)).await;
    let cancelled_id = id_of(&booked, "scheduleAppointment");
    let (actor, metadata) = test_actor(code, "desk", Role::Receptionist);
    let cancel = AppointmentCommand::Cancel {
        actor,
        reason: BoundedText::parse("reason", "Patient travelled", 200).expect("valid"),
        now: Utc::now(),
    };
    commands::append::<Appointment>(&pool, &cancelled_id, cancel, (), &metadata)
        .await
        .expect("cancelled without releasing");
    // And one that is fine and must keep its slots.
    let noon = format!("{day}T12:00:00Z");
    let kept = schedule(&app, desk, booking(&first, staff.doctor_id, &noon, 30)).await;
    id_of(&kept, "scheduleAppointment");
    hms_tests::settle(&app.state.runner, &pool).await;

    let fresh = sweep(&pool, code, GRACE, Utc::now()).await.expect("sweep");
    assert_eq!(
        fresh, 0,
        "holds younger than the grace period are left alone"
    );
    let released = sweep(&pool, code, chrono::Duration::zero(), Utc::now())
        .await
        .expect("sweep");
    assert_eq!(
        released, 3,
        "the orphan, and the cancelled appointment's doctor and patient slots"
    );
    hms_tests::settle(&app.state.runner, &pool).await;
    let holds: Vec<(String, DateTime<Utc>)> =
        sqlx::query_as("SELECT schedule_type, start_at FROM slot_holds ORDER BY schedule_type")
            .fetch_all(&pool)
            .await
            .expect("holds");
    let noon_utc = instant(&json!(noon));
    assert_eq!(
        holds,
        vec![
            ("doctor_schedule".to_owned(), noon_utc),
            ("patient_schedule".to_owned(), noon_utc)
        ],
        "only the live appointment's slots stay held"
    );
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT payload->'SlotReleased'->>'reason' FROM events \
          WHERE event_type = 'SlotReleased' AND metadata->>'actor_username' = 'reservation-sweep' \
          ORDER BY position",
    )
    .fetch_all(&pool)
    .await
    .expect("releases");
    let mut sorted = reasons.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["CANCELLED", "CANCELLED", "COMPENSATION"],
        "{reasons:?}"
    );

    // The time is bookable again, and a second sweep finds nothing.
    let rebooked = schedule(&app, desk, booking(&first, staff.doctor_id, &ten, 30)).await;
    id_of(&rebooked, "scheduleAppointment");
    hms_tests::settle(&app.state.runner, &pool).await;
    let again = sweep(&pool, code, chrono::Duration::zero(), Utc::now())
        .await
        .expect("sweep");
    assert_eq!(again, 0);
}

/// The appointment's row as the table holds it, with the transaction that wrote it.
async fn stored_appointment(app: &TestApp, code: &str, id: &str) -> Option<(String, Value)> {
    let mut db = app.connect(&app.database_for(code)).await;
    sqlx::query_as::<_, (String, Value)>(
        "SELECT xmin::text, to_jsonb(a) FROM appointments a WHERE id = $1::uuid",
    )
    .bind(id)
    .fetch_optional(&mut db)
    .await
    .expect("appointment row")
}

#[tokio::test]
async fn a_booking_writes_its_appointment_in_its_append_and_the_runner_passes_it_over() {
    let app = spawn_app().await;
    let staff = hospital_with_staff(&app, "INA001").await;
    let desk = staff.receptionist.as_str();
    let day = next_monday();
    let patient = register_simple(&app, desk, "Wanjiru", "Kamau").await;
    let lease = app.state.registry.get("INA001").await.expect("tenant");
    hms_tests::settle(&app.state.runner, &lease.pool).await;

    // No round can apply the booking meanwhile: another process's round holds the
    // appointments' projector.
    let mut held = app.hold_projector("INA001", "appointments").await;
    let booked = schedule(
        &app,
        desk,
        booking(&patient, staff.doctor_id, &format!("{day}T09:00:00Z"), 30),
    )
    .await;
    let id = id_of(&booked, "scheduleAppointment");
    let answer = &booked["data"]["scheduleAppointment"];
    assert_eq!(
        (
            answer["version"].clone(),
            answer["reason"].clone(),
            answer["status"].clone()
        ),
        (json!(1), json!("Follow-up"), json!("SCHEDULED")),
        "{booked}"
    );
    let written = stored_appointment(&app, "INA001", &id)
        .await
        .expect("the row is there when the booking returns");
    // Read back as any client would, while the projector is still held.
    let read = app
        .graphql(
            &format!("query($id: UUID!) {{ appointment(id: $id) {{ {APPOINTMENT_FIELDS} }} }}"),
            json!({ "id": id }),
            Some(desk),
        )
        .await;
    assert_eq!(
        &read["data"]["appointment"], answer,
        "the answer is the row: {read}"
    );

    hms_tests::release(&mut held).await;
    hms_tests::settle(&app.state.runner, &lease.pool).await;
    assert_eq!(
        stored_appointment(&app, "INA001", &id).await,
        Some(written),
        "the runner passed the booking over"
    );
    let mut db = app.connect(&app.database_for("INA001")).await;
    let indexed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_index WHERE aggregate_type = 'appointment' AND aggregate_id = $1",
    )
    .bind(&id)
    .fetch_one(&mut db)
    .await
    .expect("audit index");
    assert_eq!(indexed, 1, "the derived read models follow the log");

    // A later change folds onto the row written inline.
    let checked_in = act(
        &app,
        desk,
        "checkInAppointment",
        "AppointmentActionInput",
        json!({ "appointmentId": id }),
    )
    .await;
    assert_eq!(
        checked_in["data"]["checkInAppointment"]["version"], 2,
        "{checked_in}"
    );
}

#[tokio::test]
async fn a_booking_whose_patients_key_went_before_its_append_writes_no_row_in_the_clear() {
    let app = spawn_app().await;
    let staff = hospital_with_staff(&app, "INA002").await;
    let desk = staff.receptionist.as_str();
    let day = next_monday();
    let patient = register_simple(&app, desk, "Njeri", "Mwangi").await;
    let patient_id: Uuid = patient.parse().expect("uuid");
    let database = app.database_for("INA002");

    // The log is held, so the booking reads its facts (the patient's key among them) and
    // then waits at its append.
    let mut held = app.connect(&database).await;
    sqlx::query("BEGIN")
        .execute(&mut held)
        .await
        .expect("begin");
    sqlx::query("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut held)
        .await
        .expect("lock");
    let erase = async {
        let mut watcher = app.connect(&database).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                  WHERE c.relname = 'events' AND NOT l.granted",
            )
            .fetch_one(&mut watcher)
            .await
            .expect("locks");
            if waiting > 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the booking never reached its append"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // The erasure destroys the key first.
        assert!(
            hms_projections::personal::destroy_key(&mut watcher, patient_id)
                .await
                .expect("destroy"),
            "the key was there"
        );
        sqlx::query("COMMIT")
            .execute(&mut held)
            .await
            .expect("release the log");
    };
    let (booked, ()) = tokio::join!(
        schedule(
            &app,
            desk,
            booking(&patient, staff.doctor_id, &format!("{day}T10:00:00Z"), 30),
        ),
        erase
    );
    let id = id_of(&booked, "scheduleAppointment");
    let answer = &booked["data"]["scheduleAppointment"];
    assert_eq!(
        answer["reason"],
        hms_projections::personal::ERASED,
        "the answer shows nothing the key no longer opens: {booked}"
    );
    let (_, row) = stored_appointment(&app, "INA002", &id)
        .await
        .expect("the runner wrote the row");
    assert_eq!(row["reason"], hms_projections::personal::ERASED, "{row}");
}
