//! Retries that are safe: an idempotency key left behind by a request that died is taken
//! over by its retry (with or without the first attempt's events committed), a write
//! that committed is a success even when the read side fails after it, and concurrent
//! writers of one record are retried by the server instead of refused.

use futures::future::join_all;
use hms_app::usecases::billing::RecordPayment;
use hms_domain::billing::PaymentMethod;
use hms_domain::permissions::Operation;
use hms_domain::Role;
use hms_tests::fixtures::{register_patient, staff, user_id};
use hms_tests::{error_code, spawn_app, TestApp};
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

/// The invoice fields the tests read (all from the invoice row itself).
const FIELDS: &str = "id status paidMinor balanceMinor totalMinor version";

async fn mutate(app: &TestApp, token: &str, name: &str, input: Value) -> Value {
    let input_type = format!("{}{}Input", name[..1].to_uppercase(), &name[1..]);
    let query =
        format!("mutation($input: {input_type}!) {{ {name}(input: $input) {{ {FIELDS} }} }}");
    app.graphql(&query, json!({ "input": input }), Some(token))
        .await
}

async fn ok(app: &TestApp, token: &str, name: &str, input: Value) -> Value {
    let response = mutate(app, token, name, input).await;
    assert!(response["errors"].is_null(), "{name}: {response}");
    response["data"][name].clone()
}

/// A hospital, an accountant (and their token) and an issued invoice of `total` KES
/// minor units.
async fn issued_invoice(app: &TestApp, code: &str, total: i64) -> (String, String) {
    app.setup_hospital(code).await;
    let accountant = staff(app, code, "acc.retry", Role::Accountant).await;
    let patient = register_patient(app, code, "Wanjiru").await.to_string();
    let draft = ok(
        app,
        &accountant,
        "createInvoice",
        json!({ "patientId": patient, "currency": "KES" }),
    )
    .await;
    let id = draft["id"].as_str().expect("id").to_owned();
    ok(
        app,
        &accountant,
        "addInvoiceLine",
        json!({ "invoiceId": id, "code": "SURGERY", "description": "Surgery",
                "quantity": 1, "unitPriceMinor": total }),
    )
    .await;
    ok(app, &accountant, "issueInvoice", json!({ "invoiceId": id })).await;
    (accountant, id)
}

async fn tenant(app: &TestApp, code: &str) -> PgConnection {
    app.connect(&app.database_for(code)).await
}

async fn payments_in_log(conn: &mut PgConnection, invoice: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'invoice' AND aggregate_id = $1 \
            AND event_type = 'PaymentRecorded'",
    )
    .bind(invoice)
    .fetch_one(conn)
    .await
    .expect("count")
}

fn payment(invoice: &str, amount: i64, key: &str) -> Value {
    json!({ "invoiceId": invoice, "amountMinor": amount, "method": "CASH", "idempotencyKey": key })
}

#[tokio::test]
async fn a_retry_takes_over_a_key_whose_request_died_after_committing_and_answers_the_first_result()
{
    let app = spawn_app().await;
    let (accountant, invoice) = issued_invoice(&app, "RTY001", 100_000).await;
    let first = ok(
        &app,
        &accountant,
        "recordPayment",
        payment(&invoice, 10_000, "pay-1"),
    )
    .await;

    // As a request killed between its append and recording its answer leaves the key:
    // the events are committed, the claim has no result and nobody renews it.
    let mut conn = tenant(&app, "RTY001").await;
    sqlx::query(
        "UPDATE idempotency_keys SET result = NULL, completed_at = NULL, \
                created_at = now() - interval '1 hour' WHERE key = 'pay-1'",
    )
    .execute(&mut conn)
    .await
    .expect("unfinished claim");
    sqlx::query(
        "UPDATE idempotency_keys SET owner = gen_random_uuid(), \
                claimed_at = now() - interval '1 hour' WHERE key = 'pay-1'",
    )
    .execute(&mut conn)
    .await
    .expect("dead owner");

    let started = std::time::Instant::now();
    let retry = mutate(
        &app,
        &accountant,
        "recordPayment",
        payment(&invoice, 10_000, "pay-1"),
    )
    .await;
    assert!(retry["errors"].is_null(), "the retry succeeds: {retry}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "a dead claim is taken over, not waited for"
    );
    assert_eq!(retry["data"]["recordPayment"], first, "the first answer");
    assert_eq!(retry["data"]["recordPayment"]["paidMinor"], 10_000);
    assert_eq!(
        payments_in_log(&mut conn, &invoice).await,
        1,
        "appended once"
    );
    let answered: Option<String> =
        sqlx::query_scalar("SELECT result FROM idempotency_keys WHERE key = 'pay-1'")
            .fetch_one(&mut conn)
            .await
            .expect("claim");
    assert_eq!(
        answered.as_deref(),
        Some(invoice.as_str()),
        "the key is settled"
    );
}

#[tokio::test]
async fn a_retry_takes_over_a_key_whose_request_died_before_committing_and_does_the_work_once() {
    let app = spawn_app().await;
    let (accountant, invoice) = issued_invoice(&app, "RTY002", 100_000).await;

    // As a request killed after claiming the key and before appending leaves it.
    let input = RecordPayment {
        invoice_id: invoice.parse().expect("uuid"),
        amount_minor: 25_000,
        currency: None,
        method: PaymentMethod::Cash,
        reference: None,
        expected_version: None,
        idempotency_key: Some("pay-2".into()),
    };
    let mut conn = tenant(&app, "RTY002").await;
    sqlx::query(
        "INSERT INTO idempotency_keys (actor_id, key, operation, request_hash, created_at) \
         VALUES ($1, 'pay-2', $2, encode(sha256($3), 'hex'), now() - interval '1 hour')",
    )
    .bind(Uuid::parse_str(&user_id("acc.retry")).expect("uuid"))
    .bind(Operation::RecordPayment.to_string())
    .bind(serde_json::to_vec(&input).expect("the request as the server hashes it"))
    .execute(&mut conn)
    .await
    .expect("claim of a dead request");
    sqlx::query(
        "UPDATE idempotency_keys SET owner = gen_random_uuid(), \
                claimed_at = now() - interval '1 hour' WHERE key = 'pay-2'",
    )
    .execute(&mut conn)
    .await
    .expect("dead owner");
    assert_eq!(payments_in_log(&mut conn, &invoice).await, 0);

    let retry = mutate(
        &app,
        &accountant,
        "recordPayment",
        payment(&invoice, 25_000, "pay-2"),
    )
    .await;
    assert!(
        retry["errors"].is_null(),
        "the retry does the work: {retry}"
    );
    assert_eq!(retry["data"]["recordPayment"]["paidMinor"], 25_000);
    assert_eq!(retry["data"]["recordPayment"]["balanceMinor"], 75_000);
    let again = ok(
        &app,
        &accountant,
        "recordPayment",
        payment(&invoice, 25_000, "pay-2"),
    )
    .await;
    assert_eq!(
        again, retry["data"]["recordPayment"],
        "and answers it after"
    );
    assert_eq!(
        payments_in_log(&mut conn, &invoice).await,
        1,
        "appended once"
    );
}

#[tokio::test]
async fn a_payment_committed_while_the_read_models_fail_is_a_success_and_its_retry_answers_the_same(
) {
    let app = spawn_app().await;
    let (accountant, invoice) = issued_invoice(&app, "RTY003", 100_000).await;
    let mut conn = tenant(&app, "RTY003").await;

    // The invoices read model becomes unavailable: its projector fails on every event
    // after this, and nothing can read it.
    sqlx::query("ALTER TABLE invoices RENAME TO invoices_away")
        .execute(&mut conn)
        .await
        .expect("read model away");
    let paid = mutate(
        &app,
        &accountant,
        "recordPayment",
        payment(&invoice, 30_000, "pay-3"),
    )
    .await;
    assert!(
        paid["errors"].is_null(),
        "a committed payment is a success: {paid}"
    );
    let answer = &paid["data"]["recordPayment"];
    assert_eq!(answer["paidMinor"], 30_000, "the write side's record");
    assert_eq!(answer["balanceMinor"], 70_000);
    assert_eq!(answer["status"], "PARTIALLY_PAID");
    assert_eq!(answer["version"], 4);
    let retry = ok(
        &app,
        &accountant,
        "recordPayment",
        payment(&invoice, 30_000, "pay-3"),
    )
    .await;
    assert_eq!(&retry, answer, "the retry answers the same");
    assert_eq!(
        payments_in_log(&mut conn, &invoice).await,
        1,
        "appended once"
    );

    // The read model comes back and catches up: the payment is in it once.
    sqlx::query("ALTER TABLE invoices_away RENAME TO invoices")
        .execute(&mut conn)
        .await
        .expect("read model back");
    let after = ok(
        &app,
        &accountant,
        "recordPayment",
        payment(&invoice, 5_000, "pay-4"),
    )
    .await;
    assert_eq!(after["paidMinor"], 35_000);
    let row: (i64, i64) = sqlx::query_as(
        "SELECT paid_minor, (SELECT count(*) FROM invoice_payments WHERE invoice_id = $1) \
           FROM invoices WHERE id = $1",
    )
    .bind(Uuid::parse_str(&invoice).expect("uuid"))
    .fetch_one(&mut conn)
    .await
    .expect("read model");
    assert_eq!(row, (35_000, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_payments_on_one_invoice_all_go_through_and_add_up_exactly() {
    const PAYMENTS: i64 = 200;
    const AMOUNT: i64 = 400;
    let app = spawn_app().await;
    let (accountant, invoice) = issued_invoice(&app, "RTY004", 100_000).await;

    let started = std::time::Instant::now();
    let answers = join_all((0..PAYMENTS).map(|_| {
        mutate(
            &app,
            &accountant,
            "recordPayment",
            json!({ "invoiceId": invoice, "amountMinor": AMOUNT, "method": "CARD" }),
        )
    }))
    .await;
    let elapsed = started.elapsed();
    let succeeded = answers.iter().filter(|a| a["errors"].is_null()).count() as i64;
    for refused in answers.iter().filter(|a| !a["errors"].is_null()) {
        assert_eq!(error_code(refused), Some("CONFLICT"), "{refused}");
        assert_eq!(
            refused["errors"][0]["extensions"]["retryable"], true,
            "a lost race is retryable: {refused}"
        );
    }
    assert!(
        succeeded * 100 >= PAYMENTS * 99,
        "{succeeded} of {PAYMENTS} payments went through in {elapsed:?}"
    );
    assert!(elapsed < std::time::Duration::from_secs(20), "{elapsed:?}");

    let mut conn = tenant(&app, "RTY004").await;
    assert_eq!(payments_in_log(&mut conn, &invoice).await, succeeded);
    let (paid, balance): (i64, i64) =
        sqlx::query_as("SELECT paid_minor, balance_minor FROM invoices WHERE id = $1")
            .bind(Uuid::parse_str(&invoice).expect("uuid"))
            .fetch_one(&mut conn)
            .await
            .expect("invoice");
    assert_eq!(paid, succeeded * AMOUNT, "paid is the sum of the payments");
    assert_eq!(
        balance,
        100_000 - succeeded * AMOUNT,
        "the balance is exact"
    );
}

#[tokio::test]
async fn a_refusal_on_fresh_state_and_a_stale_expected_version_are_final_conflicts() {
    let app = spawn_app().await;
    let (accountant, invoice) = issued_invoice(&app, "RTY005", 1_000).await;
    // The invoice is at version 3 (drafted, a line, issued): a client that saw 1 is
    // told to reload, not to send the same request again.
    let stale = mutate(
        &app,
        &accountant,
        "recordPayment",
        json!({ "invoiceId": invoice, "amountMinor": 1, "method": "CASH", "expectedVersion": 1 }),
    )
    .await;
    assert_eq!(error_code(&stale), Some("CONFLICT"), "{stale}");
    assert_eq!(
        stale["errors"][0]["extensions"]["retryable"], false,
        "{stale}"
    );

    let paid = ok(
        &app,
        &accountant,
        "recordPayment",
        json!({ "invoiceId": invoice, "amountMinor": 1_000, "method": "CASH",
                "expectedVersion": 3 }),
    )
    .await;
    assert_eq!(paid["status"], "PAID");

    let already_paid = mutate(
        &app,
        &accountant,
        "recordPayment",
        json!({ "invoiceId": invoice, "amountMinor": 1, "method": "CASH" }),
    )
    .await;
    assert_eq!(
        error_code(&already_paid),
        Some("CONFLICT"),
        "{already_paid}"
    );
    assert_eq!(
        already_paid["errors"][0]["extensions"]["retryable"], false,
        "{already_paid}"
    );
}
