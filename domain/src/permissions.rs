//! The one permission matrix: which role may perform which operation.
//!
//! Every command maps to exactly one [`Operation`] (each aggregate's command type has an
//! `operation()` method), and the aggregates check [`ensure_allowed`] for the actor
//! carried in the command, so a forgotten check in the API still fails closed. The API
//! checks the same matrix earlier (through [`crate::access::authorize`]) to answer
//! FORBIDDEN before loading anything.
//!
//! The matrix is written "operation → roles that may do it" because that is how a
//! reviewer reads it ("who may refund?"). A test walks every role × operation against an
//! independently written grid.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::common::{Actor, Role};
use crate::plan::Module;

/// Everything a user can ask the system to do, read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    // Hospital
    RegisterHospital,
    UpdateHospitalProfile,
    UpdateHospitalBranding,
    UpdateHospitalSettings,
    ManageDepartments,
    ManageModules,
    ChangePlan,
    CancelSubscription,
    /// Platform-side subscription changes: past due, suspend, renew, reactivate.
    AdministerSubscription,
    // Users
    ViewStaff,
    CreateUser,
    ChangeUserRole,
    ChangeUserDepartment,
    UpdateUserProfile,
    DeactivateUser,
    ReactivateUser,
    ResetUserPassword,
    ChangeOwnPassword,
    // Patients
    ViewPatient,
    RegisterPatient,
    UpdatePatient,
    /// Record or remove an allergy.
    ManageAllergies,
    /// Add or resolve a clinical alert ("DNR", "fall risk"): the care team's call.
    ManagePatientAlerts,
    MarkPatientDeceased,
    DeactivatePatient,
    MergePatients,
    /// Mark a record restricted (a staff member, a public figure, the patient's request),
    /// change who is named on it, or lift the restriction.
    RestrictPatientRecord,
    /// Open a restricted record outside its care team, with a stated reason, for a
    /// limited time; every read under it is recorded as break-glass.
    BreakGlass,
    /// Review a break-glass access (justified or not), the privacy officer's queue.
    ReviewBreakGlass,
    /// Every access to one patient's record, for the patient.
    ViewPatientAccessReport,
    /// Ask for, or (a second administrator) approve, the erasure of a patient's personal
    /// data.
    ErasePatient,
    // Appointments
    ViewAppointments,
    ScheduleAppointment,
    RescheduleAppointment,
    CheckInAppointment,
    StartAppointment,
    CompleteAppointment,
    CancelAppointment,
    MarkNoShow,
    // Billing
    ViewInvoices,
    DraftInvoice,
    EditInvoice,
    IssueInvoice,
    RecordPayment,
    RefundPayment,
    VoidInvoice,
    // Laboratory
    /// Read the test catalogue (codes, names, units, ranges, prices).
    ViewLabCatalogue,
    /// Define, revise and retire catalogue tests and panels.
    ManageLabCatalogue,
    /// Read lab orders and their results: the worklist, an order, a patient's trend.
    ViewLabResults,
    OrderLabTests,
    CollectSpecimen,
    /// Receive a specimen in the lab, or reject it with a reason.
    ProcessSpecimen,
    EnterLabResults,
    /// Verify another technician's results (four eyes): they become final.
    VerifyLabResults,
    AmendLabResult,
    CancelLabOrder,
    /// Put a verified order's tests on the patient's invoice (done on verification;
    /// by hand when that did not complete).
    PostLabCharges,
    /// Turnaround statistics of the hospital's laboratory.
    ViewLabTurnaround,
    // Oversight
    ViewReports,
    ViewAuditTrail,
}

use Role::{
    Accountant as ACC, Doctor as DOC, HospitalAdmin as ADM, LabTechnician as LAB, Nurse as NUR,
    Pharmacist as PHA, Radiologist as RAD, Receptionist as REC, Staff as STF, SuperAdmin as SUP,
};

/// Every hospital role: for what anyone on the staff may do.
const ALL_STAFF: &[Role] = &[ADM, DOC, NUR, REC, ACC, LAB, PHA, RAD, STF];
/// Staff who work with patients' records.
const CLINICAL_AND_FRONT_DESK: &[Role] = &[ADM, DOC, NUR, REC, ACC, LAB, PHA, RAD];

impl Operation {
    pub const ALL: [Operation; 60] = [
        Operation::RegisterHospital,
        Operation::UpdateHospitalProfile,
        Operation::UpdateHospitalBranding,
        Operation::UpdateHospitalSettings,
        Operation::ManageDepartments,
        Operation::ManageModules,
        Operation::ChangePlan,
        Operation::CancelSubscription,
        Operation::AdministerSubscription,
        Operation::ViewStaff,
        Operation::CreateUser,
        Operation::ChangeUserRole,
        Operation::ChangeUserDepartment,
        Operation::UpdateUserProfile,
        Operation::DeactivateUser,
        Operation::ReactivateUser,
        Operation::ResetUserPassword,
        Operation::ChangeOwnPassword,
        Operation::ViewPatient,
        Operation::RegisterPatient,
        Operation::UpdatePatient,
        Operation::ManageAllergies,
        Operation::ManagePatientAlerts,
        Operation::MarkPatientDeceased,
        Operation::DeactivatePatient,
        Operation::MergePatients,
        Operation::RestrictPatientRecord,
        Operation::BreakGlass,
        Operation::ReviewBreakGlass,
        Operation::ViewPatientAccessReport,
        Operation::ErasePatient,
        Operation::ViewAppointments,
        Operation::ScheduleAppointment,
        Operation::RescheduleAppointment,
        Operation::CheckInAppointment,
        Operation::StartAppointment,
        Operation::CompleteAppointment,
        Operation::CancelAppointment,
        Operation::MarkNoShow,
        Operation::ViewInvoices,
        Operation::DraftInvoice,
        Operation::EditInvoice,
        Operation::IssueInvoice,
        Operation::RecordPayment,
        Operation::RefundPayment,
        Operation::VoidInvoice,
        Operation::ViewLabCatalogue,
        Operation::ManageLabCatalogue,
        Operation::ViewLabResults,
        Operation::OrderLabTests,
        Operation::CollectSpecimen,
        Operation::ProcessSpecimen,
        Operation::EnterLabResults,
        Operation::VerifyLabResults,
        Operation::AmendLabResult,
        Operation::CancelLabOrder,
        Operation::PostLabCharges,
        Operation::ViewLabTurnaround,
        Operation::ViewReports,
        Operation::ViewAuditTrail,
    ];

    /// The matrix. The super administrator runs the platform: it registers hospitals
    /// (with their first administrator: `CreateUser`), administers subscriptions (plans
    /// and cancellation are its alone) and can rescue a locked-out hospital's
    /// administrator (`ReactivateUser`, `ResetUserPassword` through the platform's
    /// `restoreHospitalAdmin`), but it never sees patient data. Clinical acts (starting
    /// and completing a consultation, recording death) belong to clinicians, not to
    /// administrators.
    pub fn allowed_roles(self) -> &'static [Role] {
        use Operation as O;
        match self {
            O::RegisterHospital | O::AdministerSubscription => &[SUP],
            O::UpdateHospitalProfile
            | O::UpdateHospitalBranding
            | O::UpdateHospitalSettings
            | O::ManageDepartments
            | O::ManageModules
            | O::ChangeUserRole
            | O::ChangeUserDepartment
            | O::UpdateUserProfile
            | O::DeactivateUser => &[ADM],
            O::ChangePlan | O::CancelSubscription => &[SUP],
            O::CreateUser | O::ReactivateUser | O::ResetUserPassword => &[SUP, ADM],
            O::ViewStaff | O::ChangeOwnPassword => ALL_STAFF,
            O::ViewPatient => CLINICAL_AND_FRONT_DESK,
            O::RegisterPatient | O::UpdatePatient => &[ADM, NUR, REC],
            O::ManageAllergies => &[DOC, NUR, PHA],
            O::ManagePatientAlerts => &[DOC, NUR],
            O::MarkPatientDeceased => &[DOC],
            O::DeactivatePatient | O::MergePatients => &[ADM],
            // The hospital's privacy officer is its administrator: it restricts records,
            // reviews break-glass accesses and answers patients' access requests. Breaking
            // the glass is for those who read clinical information.
            O::RestrictPatientRecord
            | O::ReviewBreakGlass
            | O::ViewPatientAccessReport
            | O::ErasePatient => &[ADM],
            O::BreakGlass => &[DOC, NUR, LAB, PHA, RAD],
            O::ViewAppointments => &[ADM, DOC, NUR, REC, ACC, STF],
            O::ScheduleAppointment | O::RescheduleAppointment | O::CancelAppointment => {
                &[ADM, DOC, REC]
            }
            O::CheckInAppointment => &[ADM, NUR, REC],
            O::StartAppointment | O::CompleteAppointment => &[DOC],
            O::MarkNoShow => &[ADM, REC],
            O::ViewInvoices | O::RecordPayment => &[ADM, REC, ACC],
            O::DraftInvoice
            | O::EditInvoice
            | O::IssueInvoice
            | O::RefundPayment
            | O::VoidInvoice => &[ADM, ACC],
            // The catalogue is what may be ordered and what it costs: for whoever orders,
            // collects, runs or bills tests. Results go to the care team and the lab
            // only; the front desk and accounts see a lab order only as an invoice line.
            O::ViewLabCatalogue => &[ADM, DOC, NUR, ACC, LAB],
            O::ManageLabCatalogue => &[ADM],
            O::ViewLabResults => &[DOC, NUR, LAB],
            O::OrderLabTests => &[DOC],
            O::CollectSpecimen => &[NUR, LAB],
            O::ProcessSpecimen | O::EnterLabResults | O::VerifyLabResults | O::AmendLabResult => {
                &[LAB]
            }
            O::CancelLabOrder => &[DOC, LAB],
            // Verification posts the charges as the verifying technician; accounts and
            // the administrator finish a posting that did not complete.
            O::PostLabCharges => &[ADM, ACC, LAB],
            O::ViewLabTurnaround => &[ADM, DOC, LAB],
            O::ViewReports => &[ADM, DOC, ACC],
            O::ViewAuditTrail => &[ADM],
        }
    }

    /// The module an operation belongs to; a disabled module refuses it.
    pub fn module(self) -> Option<Module> {
        use Operation as O;
        match self {
            O::ViewPatient
            | O::RegisterPatient
            | O::UpdatePatient
            | O::ManageAllergies
            | O::ManagePatientAlerts
            | O::MarkPatientDeceased
            | O::DeactivatePatient
            | O::MergePatients
            | O::RestrictPatientRecord
            | O::BreakGlass
            | O::ReviewBreakGlass
            | O::ViewPatientAccessReport
            | O::ErasePatient => Some(Module::Patients),
            O::ViewAppointments
            | O::ScheduleAppointment
            | O::RescheduleAppointment
            | O::CheckInAppointment
            | O::StartAppointment
            | O::CompleteAppointment
            | O::CancelAppointment
            | O::MarkNoShow => Some(Module::Appointments),
            O::ViewInvoices
            | O::DraftInvoice
            | O::EditInvoice
            | O::IssueInvoice
            | O::RecordPayment
            | O::RefundPayment
            | O::VoidInvoice => Some(Module::Billing),
            O::ViewLabCatalogue
            | O::ManageLabCatalogue
            | O::ViewLabResults
            | O::OrderLabTests
            | O::CollectSpecimen
            | O::ProcessSpecimen
            | O::EnterLabResults
            | O::VerifyLabResults
            | O::AmendLabResult
            | O::CancelLabOrder
            | O::PostLabCharges
            | O::ViewLabTurnaround => Some(Module::Laboratory),
            O::ViewReports => Some(Module::Reports),
            _ => None,
        }
    }

    /// Whether the operation changes anything. Reads stay possible on an expired or
    /// suspended subscription; writes do not.
    pub fn is_write(self) -> bool {
        use Operation as O;
        !matches!(
            self,
            O::ViewStaff
                | O::ViewPatient
                | O::ViewAppointments
                | O::ViewInvoices
                | O::ViewReports
                | O::ViewAuditTrail
                | O::ViewLabCatalogue
                | O::ViewLabResults
                | O::ViewLabTurnaround
                | O::ViewPatientAccessReport
        )
    }

    /// Whether an inactive subscription blocks the operation. The ways out of an inactive
    /// subscription (choosing a plan, cancelling, the platform's own actions) and changing
    /// one's own password (a security measure) stay open.
    pub fn needs_active_subscription(self) -> bool {
        use Operation as O;
        self.is_write()
            && !matches!(
                self,
                O::RegisterHospital
                    | O::ChangePlan
                    | O::CancelSubscription
                    | O::AdministerSubscription
                    | O::ChangeOwnPassword
                    // An emergency read stays possible wherever reading is.
                    | O::BreakGlass
            )
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The one question the matrix answers.
pub fn allows(role: Role, operation: Operation) -> bool {
    operation.allowed_roles().contains(&role)
}

/// The actor's role may not perform the operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the role {role} may not {operation}")]
pub struct PermissionDenied {
    pub role: Role,
    pub operation: Operation,
}

/// [`allows`] as a `Result`, for `?` in command handlers.
pub fn ensure_allowed(actor: &Actor, operation: Operation) -> Result<(), PermissionDenied> {
    if allows(actor.role, operation) {
        Ok(())
    } else {
        Err(PermissionDenied {
            role: actor.role,
            operation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The expected matrix, written independently of `allowed_roles` as a grid. Columns:
    /// SUPERADMIN, HOSPITAL_ADMIN, DOCTOR, NURSE, RECEPTIONIST, ACCOUNTANT,
    /// LAB_TECHNICIAN, PHARMACIST, RADIOLOGIST, STAFF (the order of `Role::ALL`).
    const GRID: &[(&str, &str)] = &[
        ("RegisterHospital", "x........."),
        ("UpdateHospitalProfile", ".x........"),
        ("UpdateHospitalBranding", ".x........"),
        ("UpdateHospitalSettings", ".x........"),
        ("ManageDepartments", ".x........"),
        ("ManageModules", ".x........"),
        ("ChangePlan", "x........."),
        ("CancelSubscription", "x........."),
        ("AdministerSubscription", "x........."),
        ("ViewStaff", ".xxxxxxxxx"),
        ("CreateUser", "xx........"),
        ("ChangeUserRole", ".x........"),
        ("ChangeUserDepartment", ".x........"),
        ("UpdateUserProfile", ".x........"),
        ("DeactivateUser", ".x........"),
        ("ReactivateUser", "xx........"),
        ("ResetUserPassword", "xx........"),
        ("ChangeOwnPassword", ".xxxxxxxxx"),
        ("ViewPatient", ".xxxxxxxx."),
        ("RegisterPatient", ".x.xx....."),
        ("UpdatePatient", ".x.xx....."),
        ("ManageAllergies", "..xx...x.."),
        ("ManagePatientAlerts", "..xx......"),
        ("MarkPatientDeceased", "..x......."),
        ("DeactivatePatient", ".x........"),
        ("MergePatients", ".x........"),
        ("RestrictPatientRecord", ".x........"),
        ("BreakGlass", "..xx..xxx."),
        ("ReviewBreakGlass", ".x........"),
        ("ViewPatientAccessReport", ".x........"),
        ("ErasePatient", ".x........"),
        ("ViewAppointments", ".xxxxx...x"),
        ("ScheduleAppointment", ".xx.x....."),
        ("RescheduleAppointment", ".xx.x....."),
        ("CheckInAppointment", ".x.xx....."),
        ("StartAppointment", "..x......."),
        ("CompleteAppointment", "..x......."),
        ("CancelAppointment", ".xx.x....."),
        ("MarkNoShow", ".x..x....."),
        ("ViewInvoices", ".x..xx...."),
        ("DraftInvoice", ".x...x...."),
        ("EditInvoice", ".x...x...."),
        ("IssueInvoice", ".x...x...."),
        ("RecordPayment", ".x..xx...."),
        ("RefundPayment", ".x...x...."),
        ("VoidInvoice", ".x...x...."),
        ("ViewLabCatalogue", ".xxx.xx..."),
        ("ManageLabCatalogue", ".x........"),
        ("ViewLabResults", "..xx..x..."),
        ("OrderLabTests", "..x......."),
        ("CollectSpecimen", "...x..x..."),
        ("ProcessSpecimen", "......x..."),
        ("EnterLabResults", "......x..."),
        ("VerifyLabResults", "......x..."),
        ("AmendLabResult", "......x..."),
        ("CancelLabOrder", "..x...x..."),
        ("PostLabCharges", ".x...xx..."),
        ("ViewLabTurnaround", ".xx...x..."),
        ("ViewReports", ".xx..x...."),
        ("ViewAuditTrail", ".x........"),
    ];

    #[test]
    fn the_matrix_matches_the_grid_for_every_role_and_operation() {
        assert_eq!(
            GRID.len(),
            Operation::ALL.len(),
            "grid must list every operation"
        );
        let mut checked = 0;
        for (op, (name, row)) in Operation::ALL.into_iter().zip(GRID) {
            assert_eq!(format!("{op:?}"), *name, "grid rows follow Operation::ALL");
            assert_eq!(row.len(), Role::ALL.len());
            for (role, cell) in Role::ALL.into_iter().zip(row.chars()) {
                assert_eq!(allows(role, op), cell == 'x', "{role} × {op}");
                assert_eq!(
                    ensure_allowed(
                        &Actor {
                            user_id: uuid::Uuid::nil(),
                            username: "t".into(),
                            role
                        },
                        op
                    )
                    .is_ok(),
                    cell == 'x'
                );
                checked += 1;
            }
        }
        assert_eq!(checked, Role::ALL.len() * Operation::ALL.len());
    }

    #[test]
    fn operation_all_lists_each_operation_once() {
        let set: BTreeSet<_> = Operation::ALL.into_iter().collect();
        assert_eq!(set.len(), Operation::ALL.len());
    }

    #[test]
    fn the_super_administrator_never_touches_patient_data() {
        for op in Operation::ALL {
            if matches!(
                op.module(),
                Some(
                    Module::Patients | Module::Appointments | Module::Billing | Module::Laboratory
                )
            ) || op == Operation::ViewAuditTrail
            {
                assert!(!allows(Role::SuperAdmin, op), "SUPERADMIN × {op}");
            }
        }
    }

    #[test]
    fn every_operation_is_allowed_to_someone_and_reads_are_not_gated_by_subscription() {
        for op in Operation::ALL {
            assert!(!op.allowed_roles().is_empty(), "{op} is allowed to nobody");
            if !op.is_write() {
                assert!(!op.needs_active_subscription(), "{op}");
            }
        }
    }
}
