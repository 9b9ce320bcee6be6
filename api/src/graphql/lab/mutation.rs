//! Laboratory mutations: each authorizes its operation, hands the input to one use case
//! and returns the record as the read model shows it afterwards.

use async_graphql::{Context, Object};
use hms_app::usecases::lab as uc;
use hms_domain::permissions::Operation;

use super::types::{
    AmendLabResultInput, BillLabOrderInput, CancelLabOrderInput, CollectSpecimenInput,
    DefineLabTestInput, EnterLabResultInput, LabOrder, LabTest, OrderLabTestsInput,
    ReceiveSpecimenInput, RejectSpecimenInput, ReviseLabTestInput, SetLabTestInServiceInput,
    VerifyLabResultsInput,
};
use crate::graphql::error::Result;
use crate::graphql::session::authorize;
use crate::graphql::MUTATION_FIELD_COST;

#[derive(Default)]
pub struct LabMutation;

#[Object]
impl LabMutation {
    /// Adds a test or panel to the catalogue (version 1).
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn define_lab_test(
        &self,
        ctx: &Context<'_>,
        input: DefineLabTestInput,
    ) -> Result<LabTest> {
        let auth = authorize(ctx, Operation::ManageLabCatalogue).await?;
        let input = uc::DefineLabTest {
            test: input.test.into(),
            idempotency_key: input.idempotency_key,
        };
        LabTest::try_from(uc::define_lab_test(&auth, input).await?)
    }

    /// A new version of a catalogue entry; orders placed before keep theirs.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn revise_lab_test(
        &self,
        ctx: &Context<'_>,
        input: ReviseLabTestInput,
    ) -> Result<LabTest> {
        let auth = authorize(ctx, Operation::ManageLabCatalogue).await?;
        let input = uc::ReviseLabTest {
            test: input.test.into(),
            expected_version: input.expected_version,
            idempotency_key: input.idempotency_key,
        };
        LabTest::try_from(uc::revise_lab_test(&auth, input).await?)
    }

    /// Retires a catalogue entry (no longer orderable) or reinstates it.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn set_lab_test_in_service(
        &self,
        ctx: &Context<'_>,
        input: SetLabTestInServiceInput,
    ) -> Result<LabTest> {
        let auth = authorize(ctx, Operation::ManageLabCatalogue).await?;
        let input = uc::SetLabTestInService {
            code: input.code,
            in_service: input.in_service,
            reason: input.reason,
            expected_version: input.expected_version,
            idempotency_key: input.idempotency_key,
        };
        LabTest::try_from(uc::set_lab_test_in_service(&auth, input).await?)
    }

    /// Orders tests or panels for a registered, active patient.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn order_lab_tests(
        &self,
        ctx: &Context<'_>,
        input: OrderLabTestsInput,
    ) -> Result<LabOrder> {
        let auth = authorize(ctx, Operation::OrderLabTests).await?;
        let input = uc::OrderLabTests {
            patient_id: input.patient_id,
            appointment_id: input.appointment_id,
            tests: input.tests,
            priority: input.priority.into(),
            clinical_note: input.clinical_note,
            idempotency_key: input.idempotency_key,
        };
        LabOrder::try_from(uc::order_lab_tests(&auth, input).await?)
    }

    /// Records a specimen taken for an order (again, after a rejection).
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn collect_specimen(
        &self,
        ctx: &Context<'_>,
        input: CollectSpecimenInput,
    ) -> Result<LabOrder> {
        let auth = authorize(ctx, Operation::CollectSpecimen).await?;
        let collected_at = input
            .collected_at
            .map(|t| crate::graphql::types::check_instant("collectedAt", t))
            .transpose()?;
        let input = uc::CollectSpecimen {
            order_id: input.order_id,
            specimen_type: input.specimen_type.into(),
            label: input.label,
            collected_at,
            expected_version: input.expected_version,
            idempotency_key: input.idempotency_key,
        };
        LabOrder::try_from(uc::collect_specimen(&auth, input).await?)
    }

    /// Receives a collected specimen in the lab.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn receive_specimen(
        &self,
        ctx: &Context<'_>,
        input: ReceiveSpecimenInput,
    ) -> Result<LabOrder> {
        let auth = authorize(ctx, Operation::ProcessSpecimen).await?;
        let input = uc::ProcessSpecimen {
            order_id: input.order_id,
            specimen_id: input.specimen_id,
            rejection: None,
            note: None,
            expected_version: input.expected_version,
            idempotency_key: input.idempotency_key,
        };
        LabOrder::try_from(uc::process_specimen(&auth, input).await?)
    }

    /// Rejects a specimen with a reason; it must be collected again.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn reject_specimen(
        &self,
        ctx: &Context<'_>,
        input: RejectSpecimenInput,
    ) -> Result<LabOrder> {
        let auth = authorize(ctx, Operation::ProcessSpecimen).await?;
        let input = uc::ProcessSpecimen {
            order_id: input.order_id,
            specimen_id: input.specimen_id,
            rejection: Some(input.reason.into()),
            note: input.note,
            expected_version: input.expected_version,
            idempotency_key: input.idempotency_key,
        };
        LabOrder::try_from(uc::process_specimen(&auth, input).await?)
    }

    /// Enters (or, before verification, re-enters) a result; it is flagged against the
    /// reference range for the patient, and a critical one alerts the patient's record.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn enter_lab_result(
        &self,
        ctx: &Context<'_>,
        input: EnterLabResultInput,
    ) -> Result<LabOrder> {
        let auth = authorize(ctx, Operation::EnterLabResults).await?;
        let input = uc::EnterLabResult {
            order_id: input.order_id,
            item_id: input.item_id,
            value: input.value.into(),
            expected_version: input.expected_version,
            idempotency_key: input.idempotency_key,
        };
        LabOrder::try_from(uc::enter_lab_result(&auth, input).await?)
    }

    /// Verifies results entered by another technician; a fully verified order charges
    /// its tests to the patient's invoice.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn verify_lab_results(
        &self,
        ctx: &Context<'_>,
        input: VerifyLabResultsInput,
    ) -> Result<LabOrder> {
        let auth = authorize(ctx, Operation::VerifyLabResults).await?;
        let input = uc::VerifyLabResults {
            order_id: input.order_id,
            item_ids: input.item_ids,
            expected_version: input.expected_version,
            idempotency_key: input.idempotency_key,
        };
        LabOrder::try_from(uc::verify_lab_results(&auth, input).await?)
    }

    /// Corrects a verified result: a new version with its reason, to be verified again.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn amend_lab_result(
        &self,
        ctx: &Context<'_>,
        input: AmendLabResultInput,
    ) -> Result<LabOrder> {
        let auth = authorize(ctx, Operation::AmendLabResult).await?;
        let input = uc::AmendLabResult {
            order_id: input.order_id,
            item_id: input.item_id,
            value: input.value.into(),
            reason: input.reason,
            expected_version: input.expected_version,
            idempotency_key: input.idempotency_key,
        };
        LabOrder::try_from(uc::amend_lab_result(&auth, input).await?)
    }

    /// Cancels an order before any result is entered.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn cancel_lab_order(
        &self,
        ctx: &Context<'_>,
        input: CancelLabOrderInput,
    ) -> Result<LabOrder> {
        let auth = authorize(ctx, Operation::CancelLabOrder).await?;
        let input = uc::CancelLabOrder {
            order_id: input.order_id,
            reason: input.reason,
            expected_version: input.expected_version,
            idempotency_key: input.idempotency_key,
        };
        LabOrder::try_from(uc::cancel_lab_order(&auth, input).await?)
    }

    /// Charges a verified order's tests to the patient's invoice when the verification
    /// could not (idempotent: an order is charged once).
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn bill_lab_order(
        &self,
        ctx: &Context<'_>,
        input: BillLabOrderInput,
    ) -> Result<LabOrder> {
        let auth = authorize(ctx, Operation::PostLabCharges).await?;
        let input = uc::BillLabOrder {
            order_id: input.order_id,
        };
        LabOrder::try_from(uc::bill_lab_order(&auth, input).await?)
    }
}
