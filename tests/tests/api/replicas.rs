//! Background work shared by `hms serve` replicas: a replica seals and catches up after
//! its own writes; another takes that over when the writer does no background work or
//! is killed with `kill -9`, and nothing is skipped or applied twice.

use std::time::{Duration, Instant};

use hms_tests::process::{ProcessPlatform, ServerProcess};
use serde_json::json;
use sqlx::{Connection, PgConnection};

const CODE: &str = "REPL01";
const ADMIN: &str = "repl_admin";
const PASSWORD: &str = "plum kettle orbit 4711";
/// Heartbeats are 2 s apart, a replica is dead after 10 s of silence, a noted hint waits
/// 3 s and the daemon ticks every 5 s: the work moves within this bound.
const TAKEOVER_BOUND: Duration = Duration::from_secs(30);

async fn register(server: &ServerProcess, token: &str, n: usize) {
    let answer = server
        .graphql(
            "mutation($i: RegisterPatientInput!) { registerPatient(input: $i) { id } }",
            json!({ "i": { "givenName": format!("Replica{n}"), "familyName": "Handover",
                       "dateOfBirth": "1960-02-02", "sex": "FEMALE" } }),
            Some(token),
        )
        .await;
    assert!(
        answer["data"]["registerPatient"]["id"].is_string(),
        "{answer}"
    );
}

/// (events, sealed events, audit-index rows, patients) in the hospital's database.
async fn counts(db: &mut PgConnection) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM event_seals), \
                (SELECT count(*) FROM audit_index), (SELECT count(*) FROM patients)",
    )
    .fetch_one(db)
    .await
    .expect("counts")
}

/// Waits until every event is sealed; returns the counts then.
async fn sealed_within(db: &mut PgConnection, bound: Duration, what: &str) -> (i64, i64, i64, i64) {
    let started = Instant::now();
    loop {
        let c = counts(db).await;
        if c.0 == c.1 {
            return c;
        }
        assert!(
            started.elapsed() < bound,
            "{what}: {} of {} events sealed after {bound:?}",
            c.1,
            c.0
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_does_the_background_work_of_one_without_it_or_killed() {
    let platform = ProcessPlatform::new();
    platform
        .run(&[
            "setup-hospital",
            "--name",
            "Replica General",
            "--code",
            CODE,
            "--admin-username",
            ADMIN,
            "--admin-email",
            "admin@replica.example",
            "--admin-password",
            PASSWORD,
        ])
        .await;
    let mut db = PgConnection::connect_with(
        &platform
            .server
            .clone()
            .database(&platform.database_for(CODE)),
    )
    .await
    .expect("connect");

    // A replica that only serves requests writes; the other seals what it wrote.
    let mut front = platform.serve(&[("HMS_BACKGROUND_WORK", "false")]).await;
    let worker = platform.serve(&[]).await;
    let token = front.login(Some(CODE), ADMIN, PASSWORD).await;
    for n in 0..5 {
        register(&front, &token, n).await;
    }
    let (events, _, audit, patients) = sealed_within(
        &mut db,
        TAKEOVER_BOUND,
        "after writes through a front-only replica",
    )
    .await;
    assert_eq!(patients, 5);
    assert_eq!(audit, events, "each event indexed once");
    front.stop().await;

    // A replica with background work, killed right after its last acknowledged write.
    let mut killed = platform.serve(&[]).await;
    let token = killed.login(Some(CODE), ADMIN, PASSWORD).await;
    for n in 5..25 {
        register(&killed, &token, n).await;
    }
    killed.kill().await;
    let (events, sealed, audit, patients) =
        sealed_within(&mut db, TAKEOVER_BOUND, "after the writer was killed").await;
    assert_eq!(
        patients, 25,
        "every acknowledged registration is in the read model"
    );
    assert_eq!(sealed, events);
    assert_eq!(audit, events, "nothing indexed twice or skipped");
    let chain: (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT position), coalesce(max(chain_index), 0) FROM event_seals",
    )
    .fetch_one(&mut db)
    .await
    .expect("chain");
    assert_eq!(chain, (events, events), "one seal per event, no gap");

    // The worker reads them all.
    let token = worker.login(Some(CODE), ADMIN, PASSWORD).await;
    let list = worker
        .graphql(
            "{ patients(search: \"Handover\", first: 50) { edges { node { id } } } }",
            json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(
        list["data"]["patients"]["edges"].as_array().map(Vec::len),
        Some(25),
        "{list}"
    );
    drop(worker);
    db.close().await.ok();
    platform.cleanup().await;
}

/// Periodic work per hospital (the reservation sweep, the statistics refresh) is leased
/// in the platform database: of twenty replicas asking at once exactly one gets it, the
/// holder itself does not get it again within the period, once it has expired (the
/// holder died, or the period is over) another replica takes it, and a replica that
/// leaves hands its leases on at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_work_is_leased_to_one_replica_per_hospital_and_period() {
    use hms_app::workers::leases;

    let app = hms_tests::spawn_app().await;
    let control = &app.state.control;
    let period = Duration::from_millis(1_500);
    let replicas: Vec<uuid::Uuid> = (0..20).map(|_| uuid::Uuid::new_v4()).collect();
    let taken = futures::future::join_all(
        replicas
            .iter()
            .map(|r| leases::take(control, leases::RESERVATION_SWEEP, "LEAS01", *r, period)),
    )
    .await;
    let holders: Vec<uuid::Uuid> = replicas
        .iter()
        .zip(taken)
        .filter(|(_, t)| *t.as_ref().expect("taken or not"))
        .map(|(r, _)| *r)
        .collect();
    assert_eq!(holders.len(), 1, "one replica holds the lease");
    let holder = holders[0];
    let other = *replicas.iter().find(|r| **r != holder).expect("another");
    let again = leases::take(control, leases::RESERVATION_SWEEP, "LEAS01", holder, period)
        .await
        .expect("asked");
    assert!(!again, "not twice in one period, not even by its holder");
    // Another task and another hospital are leased separately.
    for (task, code) in [
        (leases::STATISTICS, "LEAS01"),
        (leases::RESERVATION_SWEEP, "LEAS02"),
    ] {
        let free = leases::take(control, task, code, other, period)
            .await
            .expect("asked");
        assert!(free, "{task} of {code} is free");
    }
    tokio::time::sleep(period + Duration::from_millis(200)).await;
    let after = leases::take(control, leases::RESERVATION_SWEEP, "LEAS01", other, period)
        .await
        .expect("asked");
    assert!(after, "an expired lease passes to another replica");
    // A replica that stops gracefully hands its leases on at once.
    let long = Duration::from_secs(600);
    assert!(
        leases::take(control, leases::STATISTICS, "LEAS03", holder, long)
            .await
            .expect("asked")
    );
    hms_app::workers::replicas::leave(control, holder).await;
    let handed_on = leases::take(control, leases::STATISTICS, "LEAS03", other, long)
        .await
        .expect("asked");
    assert!(handed_on, "a departed replica's lease is free");
}

/// A hospital `code` (administrator `<code>_admin`) served by two `hms serve` processes,
/// each with the administrator's token.
struct Replicas;

impl Replicas {
    async fn start(
        code: &str,
    ) -> (
        ProcessPlatform,
        (ServerProcess, String),
        (ServerProcess, String),
    ) {
        let platform = ProcessPlatform::new();
        let admin = format!("{}_admin", code.to_ascii_lowercase());
        platform
            .run(&[
                "setup-hospital",
                "--name",
                &format!("Replica {code}"),
                "--code",
                code,
                "--admin-username",
                &admin,
                "--admin-email",
                &format!("{admin}@replica.example"),
                "--admin-password",
                PASSWORD,
            ])
            .await;
        let a = platform.serve(&[]).await;
        let b = platform.serve(&[]).await;
        let token_a = a.login(Some(code), &admin, PASSWORD).await;
        let token_b = b.login(Some(code), &admin, PASSWORD).await;
        (platform, (a, token_a), (b, token_b))
    }
}

/// Mutation or query `query` with `$i` bound to `input`.
async fn call(
    server: &ServerProcess,
    token: &str,
    query: &str,
    input: serde_json::Value,
) -> serde_json::Value {
    hms_tests::process::graphql_at(&server.address, query, json!({ "i": input }), Some(token)).await
}

/// Registers a patient of family name `family`; returns the id.
async fn register_one(server: &ServerProcess, token: &str, family: &str) -> String {
    let patient = call(
        server,
        token,
        "mutation($i: RegisterPatientInput!) { registerPatient(input: $i) { id } }",
        json!({ "givenName": "Kept", "familyName": family, "dateOfBirth": "1971-03-04",
                "sex": "MALE" }),
    )
    .await;
    patient["data"]["registerPatient"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a patient: {patient}"))
        .to_owned()
}

/// A command decides on its stream as it stands, whichever replica wrote it last: a
/// replica that keeps the invoice it last changed (docs/adr/0014) issues it with the line
/// another replica added since, counts the payment another replica recorded since,
/// refuses what that leaves unpaid, and accepts exactly the rest, however the requests
/// alternate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_decides_on_the_invoice_as_the_other_replica_left_it() {
    const PAY: &str = "mutation($i: RecordPaymentInput!) { recordPayment(input: $i) { \
                       status paidMinor balanceMinor version } }";
    let (platform, (server_a, token_a), (server_b, token_b)) = Replicas::start("REPL02").await;
    let (a, b, token_a, token_b) = (&server_a, &server_b, token_a.as_str(), token_b.as_str());
    let patient = register_one(a, token_a, "Ledger").await;
    let created = call(
        a,
        token_a,
        "mutation($i: CreateInvoiceInput!) { createInvoice(input: $i) { id } }",
        json!({ "patientId": patient, "currency": "KES" }),
    )
    .await;
    let invoice = created["data"]["createInvoice"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("an invoice: {created}"))
        .to_owned();
    // Lines from both replicas: A issues the invoice on its own line and B's.
    let line = |code: &str, amount: i64| {
        json!({ "invoiceId": invoice, "code": code, "description": format!("{code} service"),
                "quantity": 1, "unitPriceMinor": amount })
    };
    const ADD_LINE: &str =
        "mutation($i: AddInvoiceLineInput!) { addInvoiceLine(input: $i) { subtotalMinor } }";
    let first_line = call(a, token_a, ADD_LINE, line("CONSULT", 500)).await;
    assert_eq!(
        first_line["data"]["addInvoiceLine"]["subtotalMinor"], 500,
        "{first_line}"
    );
    let more = call(a, token_a, ADD_LINE, line("XRAY", 100)).await;
    assert_eq!(
        more["data"]["addInvoiceLine"]["subtotalMinor"], 600,
        "{more}"
    );
    let second_line = call(b, token_b, ADD_LINE, line("LAB-FBC", 400)).await;
    assert_eq!(
        second_line["data"]["addInvoiceLine"]["subtotalMinor"], 1_000,
        "{second_line}"
    );
    let issued = call(
        a,
        token_a,
        "mutation($i: IssueInvoiceInput!) { issueInvoice(input: $i) { totalMinor balanceMinor } }",
        json!({ "invoiceId": invoice }),
    )
    .await;
    assert_eq!(
        issued["data"]["issueInvoice"]["totalMinor"], 1_000,
        "{issued}"
    );
    assert_eq!(
        issued["data"]["issueInvoice"]["balanceMinor"], 1_000,
        "{issued}"
    );
    let payment =
        |amount: i64| json!({ "invoiceId": invoice, "amountMinor": amount, "method": "CASH" });

    // A decides on the invoice (and keeps it), then B records a payment A never saw.
    let first = call(a, token_a, PAY, payment(300)).await;
    assert_eq!(
        first["data"]["recordPayment"]["balanceMinor"], 700,
        "{first}"
    );
    let second = call(b, token_b, PAY, payment(300)).await;
    assert_eq!(
        second["data"]["recordPayment"]["balanceMinor"], 400,
        "{second}"
    );

    // A counts B's payment: 500 is more than is owed now, though not than A last saw.
    let over = call(a, token_a, PAY, payment(500)).await;
    assert_eq!(hms_tests::error_code(&over), Some("VALIDATION"), "{over}");
    let message = over["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("exceeds the balance of 4.00 KES"),
        "refused on the balance as it stands: {over}"
    );
    // Alternating, every payment lands on the stream as it stands, to the last minor unit.
    for (server, token, amount, balance) in [
        (a, token_a, 100, 300),
        (b, token_b, 100, 200),
        (a, token_a, 200, 0),
    ] {
        let paid = call(server, token, PAY, payment(amount)).await;
        assert_eq!(
            paid["data"]["recordPayment"]["balanceMinor"], balance,
            "{paid}"
        );
    }
    let last = call(
        b,
        token_b,
        "query($i: UUID!) { invoice(id: $i) { status paidMinor version } }",
        json!(invoice),
    )
    .await;
    assert_eq!(last["data"]["invoice"]["status"], "PAID", "{last}");
    assert_eq!(last["data"]["invoice"]["paidMinor"], 1_000, "{last}");
    assert_eq!(
        last["data"]["invoice"]["version"], 10,
        "created, three lines, issued, five payments"
    );

    // A keeps a second invoice as it drafted it; B prices and issues it. A's payment is
    // refused on the draft A kept (docs/adr/0016: decided without a read), so it is
    // decided again on the invoice as it stands, and lands.
    let drafted = call(
        a,
        token_a,
        "mutation($i: CreateInvoiceInput!) { createInvoice(input: $i) { id } }",
        json!({ "patientId": patient, "currency": "KES" }),
    )
    .await;
    let second = drafted["data"]["createInvoice"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a second invoice: {drafted}"))
        .to_owned();
    let priced = call(
        b,
        token_b,
        ADD_LINE,
        json!({ "invoiceId": second, "code": "DRESS", "description": "Dressing",
                "quantity": 1, "unitPriceMinor": 250 }),
    )
    .await;
    assert_eq!(
        priced["data"]["addInvoiceLine"]["subtotalMinor"], 250,
        "{priced}"
    );
    let issued = call(
        b,
        token_b,
        "mutation($i: IssueInvoiceInput!) { issueInvoice(input: $i) { balanceMinor } }",
        json!({ "invoiceId": second }),
    )
    .await;
    assert_eq!(
        issued["data"]["issueInvoice"]["balanceMinor"], 250,
        "{issued}"
    );
    let settled = call(
        a,
        token_a,
        PAY,
        json!({ "invoiceId": second, "amountMinor": 250, "method": "CASH" }),
    )
    .await;
    assert_eq!(
        settled["data"]["recordPayment"]["status"], "PAID",
        "{settled}"
    );
    assert_eq!(settled["data"]["recordPayment"]["version"], 4, "{settled}");
    drop((server_a, server_b));
    platform.cleanup().await;
}

/// A booking decides on the doctor's day as it stands, whichever replica booked it last:
/// a replica that keeps the day from its last booking (docs/adr/0014) refuses a slot
/// another replica has taken since, and books the free one next to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_books_on_the_doctors_day_as_the_other_replica_left_it() {
    use chrono::Datelike;
    const BOOK: &str =
        "mutation($i: ScheduleAppointmentInput!) { scheduleAppointment(input: $i) { id } }";
    let (platform, (server_a, token_a), (server_b, token_b)) = Replicas::start("REPL03").await;
    let (a, b, token_a, token_b) = (&server_a, &server_b, token_a.as_str(), token_b.as_str());
    let doctor = call(
        a,
        token_a,
        "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
        json!({ "username": "dr.kept", "email": "dr.kept@replica.example",
                "fullName": "Doctor Kept", "role": "DOCTOR", "password": PASSWORD }),
    )
    .await;
    let doctor = doctor["data"]["createUser"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a doctor: {doctor}"))
        .to_owned();
    let mut patients = Vec::new();
    for family in ["Early", "Later", "Other", "Last"] {
        patients.push(register_one(a, token_a, family).await);
    }
    let mut day = chrono::Utc::now().date_naive() + chrono::Duration::days(7);
    while day.weekday().number_from_monday() > 5 {
        day += chrono::Duration::days(1);
    }
    let booking = |patient: &str, time: &str| {
        json!({ "patientId": patient, "doctorId": doctor, "start": format!("{day}T{time}:00Z"),
                "reason": "Replica booking" })
    };

    // A books twice (the second time it reads the day and keeps it); then B books the
    // slot between, which A has not seen.
    let mut ids = Vec::new();
    for (server, token, patient, time) in [
        (a, token_a, &patients[0], "09:00"),
        (a, token_a, &patients[1], "09:30"),
        (b, token_b, &patients[2], "09:15"),
    ] {
        let booked = call(server, token, BOOK, booking(patient, time)).await;
        let id = booked["data"]["scheduleAppointment"]["id"].as_str();
        ids.push(id.unwrap_or_else(|| panic!("{time}: {booked}")).to_owned());
    }
    // A sees B's booking: the doctor's slot is taken (not "being booked at the same
    // moment", as a decision on the day A kept would end).
    let taken = call(a, token_a, BOOK, booking(&patients[3], "09:15")).await;
    assert_eq!(hms_tests::error_code(&taken), Some("CONFLICT"), "{taken}");
    let message = taken["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("the doctor already has an appointment at an overlapping time"),
        "refused on the day as it stands: {taken}"
    );
    let free = call(a, token_a, BOOK, booking(&patients[3], "09:45")).await;
    assert!(
        free["data"]["scheduleAppointment"]["id"].is_string(),
        "{free}"
    );
    // And B sees A's.
    let again = call(b, token_b, BOOK, booking(&patients[0], "09:45")).await;
    let message = again["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("the doctor already has an appointment at an overlapping time"),
        "{again}"
    );

    // B cancels its booking; A, which kept the day with that slot taken, books it: refused
    // on the day A kept (docs/adr/0016: decided without a read), the booking is decided
    // again on the day as it stands, and lands.
    let cancelled = call(
        b,
        token_b,
        "mutation($i: CancelAppointmentInput!) { cancelAppointment(input: $i) { status } }",
        json!({ "appointmentId": ids[2], "reason": "Replica cancels" }),
    )
    .await;
    assert_eq!(
        cancelled["data"]["cancelAppointment"]["status"], "CANCELLED",
        "{cancelled}"
    );
    let freed = call(a, token_a, BOOK, booking(&patients[3], "09:15")).await;
    assert!(
        freed["data"]["scheduleAppointment"]["id"].is_string(),
        "{freed}"
    );
    drop((server_a, server_b));
    platform.cleanup().await;
}
