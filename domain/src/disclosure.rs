//! What each role may *read* of a patient's information, field by field: the minimum
//! necessary (HIPAA §164.502(b)). The operation matrix ([`crate::permissions`]) says who
//! may open a list or a record; this one says which parts of it they then see. A part a
//! role may not see is refused explicitly (FORBIDDEN on that field), never replaced by
//! different data.
//!
//! Written "kind of information → roles", like the operation matrix, and checked by a test
//! against an independently written grid; the README's matrix is rendered from both
//! ([`markdown`]) and a test keeps it equal.

use std::fmt;

use crate::common::Role;
use crate::permissions::Operation;

/// A kind of patient information a response can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Disclosure {
    /// Who the patient is: name, MRN, date of birth, sex, record status; on an
    /// appointment, which patient it is for.
    Identity,
    /// How to reach the patient: phone, email, address, emergency contact.
    Contact,
    /// Blood type, allergies and clinical alerts.
    Clinical,
    /// Why the patient comes (an appointment's reason) or why a visit was cancelled.
    VisitReason,
    /// What the doctor wrote at the end of a consultation.
    ConsultationNotes,
}

use Role::{
    Accountant as ACC, Doctor as DOC, HospitalAdmin as ADM, LabTechnician as LAB, Nurse as NUR,
    Pharmacist as PHA, Radiologist as RAD, Receptionist as REC,
};

impl Disclosure {
    pub const ALL: [Disclosure; 5] = [
        Disclosure::Identity,
        Disclosure::Contact,
        Disclosure::Clinical,
        Disclosure::VisitReason,
        Disclosure::ConsultationNotes,
    ];

    /// The rules. Everyone who works with patients' records knows whom they serve; the
    /// front desk and accounts reach patients, but read nothing clinical; clinical fields
    /// go to the clinicians who act on them (an allergy matters to the pharmacist and the
    /// radiologist's contrast agent); a visit's reason goes to whoever books, receives
    /// or treats it; the consultation notes stay with the care team. General STAFF and
    /// the super administrator see no patient information at all.
    pub fn allowed_roles(self) -> &'static [Role] {
        match self {
            Disclosure::Identity => &[ADM, DOC, NUR, REC, ACC, LAB, PHA, RAD],
            Disclosure::Contact => &[ADM, DOC, NUR, REC, ACC],
            Disclosure::Clinical => &[DOC, NUR, LAB, PHA, RAD],
            Disclosure::VisitReason => &[ADM, DOC, NUR, REC],
            Disclosure::ConsultationNotes => &[DOC, NUR],
        }
    }

    /// The fields it covers, as the API names them (for messages and the README).
    pub fn fields(self) -> &'static str {
        match self {
            Disclosure::Identity => {
                "patient names, `mrn`, `dateOfBirth`, `sex`, `status`; an appointment's `patientId`"
            }
            Disclosure::Contact => "`phone`, `email`, `address`, `emergencyContact`",
            Disclosure::Clinical => "`bloodType`, `allergies`, `alerts`",
            Disclosure::VisitReason => "an appointment's `reason`, `cancelReason`",
            Disclosure::ConsultationNotes => "an appointment's `notes`",
        }
    }

    /// Whether `role` may read this kind of information.
    pub fn allows(self, role: Role) -> bool {
        self.allowed_roles().contains(&role)
    }

    /// [`Self::allows`] as a `Result`.
    pub fn ensure(self, role: Role) -> Result<(), Withheld> {
        if self.allows(role) {
            Ok(())
        } else {
            Err(Withheld {
                role,
                disclosure: self,
            })
        }
    }
}

impl fmt::Display for Disclosure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Disclosure::Identity => "the patient's identity",
            Disclosure::Contact => "the patient's contact details",
            Disclosure::Clinical => "clinical fields",
            Disclosure::VisitReason => "the reason for a visit",
            Disclosure::ConsultationNotes => "consultation notes",
        })
    }
}

/// A field the caller's role may not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the role {role} may not read {disclosure}")]
pub struct Withheld {
    pub role: Role,
    pub disclosure: Disclosure,
}

/// The published matrix, as the README shows it: operations (from
/// [`Operation::allowed_roles`]) and then patient information (from
/// [`Disclosure::allowed_roles`]), one row each, a column per role.
pub fn markdown() -> String {
    let mut out = String::new();
    let header = |out: &mut String, first: &str| {
        out.push_str(&format!("| {first} |"));
        for role in Role::ALL {
            out.push_str(&format!(" {} |", role.as_str()));
        }
        out.push('\n');
        out.push_str("|---|");
        for _ in Role::ALL {
            out.push_str(":-:|");
        }
        out.push('\n');
    };
    let row = |out: &mut String, name: &str, allows: &dyn Fn(Role) -> bool| {
        out.push_str(&format!("| {name} |"));
        for role in Role::ALL {
            out.push_str(if allows(role) { " ✓ |" } else { "   |" });
        }
        out.push('\n');
    };
    header(&mut out, "operation");
    for op in Operation::ALL {
        row(&mut out, &format!("{op:?}"), &|r| {
            crate::permissions::allows(r, op)
        });
    }
    out.push('\n');
    header(&mut out, "patient information read");
    for d in Disclosure::ALL {
        row(&mut out, &format!("{d:?}: {}", d.fields()), &|r| {
            d.allows(r)
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Columns: SUPERADMIN, HOSPITAL_ADMIN, DOCTOR, NURSE, RECEPTIONIST, ACCOUNTANT,
    /// LAB_TECHNICIAN, PHARMACIST, RADIOLOGIST, STAFF (the order of `Role::ALL`).
    const GRID: &[(Disclosure, &str)] = &[
        (Disclosure::Identity, ".xxxxxxxx."),
        (Disclosure::Contact, ".xxxxx...."),
        (Disclosure::Clinical, "..xx..xxx."),
        (Disclosure::VisitReason, ".xxxx....."),
        (Disclosure::ConsultationNotes, "..xx......"),
    ];

    #[test]
    fn the_disclosure_rules_match_the_grid() {
        assert_eq!(GRID.len(), Disclosure::ALL.len());
        for ((d, row), listed) in GRID.iter().zip(Disclosure::ALL) {
            assert_eq!(*d, listed, "grid rows follow Disclosure::ALL");
            for (role, cell) in Role::ALL.into_iter().zip(row.chars()) {
                assert_eq!(d.allows(role), cell == 'x', "{role} × {d:?}");
                assert_eq!(d.ensure(role).is_ok(), cell == 'x');
            }
        }
    }

    /// Whoever may read a kind of information may open the records it lives in: a rule
    /// here never grants what the operation matrix refuses.
    #[test]
    fn nobody_reads_a_field_of_a_record_they_may_not_open() {
        for d in Disclosure::ALL {
            for &role in d.allowed_roles() {
                assert!(
                    crate::permissions::allows(role, Operation::ViewPatient)
                        || crate::permissions::allows(role, Operation::ViewAppointments),
                    "{role} × {d:?}"
                );
            }
        }
        for d in Disclosure::ALL {
            assert!(!d.allows(Role::SuperAdmin), "{d:?}");
            assert!(!d.allows(Role::Staff), "{d:?}");
        }
    }

    /// The README publishes the matrix; it must say exactly what the code does.
    #[test]
    fn the_readme_shows_the_matrix_the_code_enforces() {
        let readme = include_str!("../../README.md");
        let matrix = markdown();
        assert!(
            readme.contains(&matrix),
            "README.md must contain the permission matrix exactly as rendered:\n\n{matrix}"
        );
    }
}
