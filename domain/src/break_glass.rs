//! Break-glass access to a restricted record: a clinician outside the record's care team
//! states why, and reads the record for a limited time; the hospital's privacy officer
//! reviews each access afterwards. Nothing here can be withdrawn or deleted: a grant
//! expires, and a review is final.
//!
//! One stream per (user, patient) ([`stream_id`]), so whether a user holds an open grant
//! for a patient is read from the write side in one short stream, at the moment of the
//! read: never from a token or a lagging list.

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::common::{Actor, BoundedText, Role, ValidationError};
use crate::permissions::{ensure_allowed, Operation, PermissionDenied};

pub const MAX_BREAK_GLASS_NOTE_CHARS: usize = 500;
/// The longest grant a hospital may configure.
pub const MAX_BREAK_GLASS_MINUTES: u32 = 24 * 60;

/// Why the glass is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BreakGlassReason {
    /// The patient needs treatment now.
    EmergencyTreatment,
    /// The patient cannot consent (unconscious, confused).
    PatientCannotConsent,
    /// Asked to consult on the patient urgently.
    UrgentConsultation,
    /// Taking over the patient's care.
    ContinuityOfCare,
    Other,
}

/// The privacy officer's finding on one access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReviewOutcome {
    Justified,
    NotJustified,
}

/// The stream of user `user_id`'s break-glass accesses to patient `patient_id`.
pub fn stream_id(user_id: Uuid, patient_id: Uuid) -> String {
    Uuid::new_v5(&user_id, patient_id.as_bytes()).to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub grant_id: Uuid,
    pub reason: BreakGlassReason,
    pub expires_at: DateTime<Utc>,
    pub reviewed: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BreakGlass {
    pub user_id: Option<Uuid>,
    pub patient_id: Option<Uuid>,
    pub grants: Vec<Grant>,
}

impl BreakGlass {
    /// The grant open at `now`, if any.
    pub fn open_at(&self, now: DateTime<Utc>) -> Option<&Grant> {
        self.grants.iter().rev().find(|g| g.expires_at > now)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum BreakGlassCommand {
    Open {
        actor: Actor,
        grant_id: Uuid,
        patient_id: Uuid,
        reason: BreakGlassReason,
        /// What happened, in the clinician's words: always required.
        note: BoundedText,
        minutes: u32,
        now: DateTime<Utc>,
    },
    Review {
        actor: Actor,
        grant_id: Uuid,
        outcome: ReviewOutcome,
        note: Option<BoundedText>,
        now: DateTime<Utc>,
    },
}

impl BreakGlassCommand {
    pub fn actor(&self) -> &Actor {
        match self {
            BreakGlassCommand::Open { actor, .. } | BreakGlassCommand::Review { actor, .. } => {
                actor
            }
        }
    }

    pub fn operation(&self) -> Operation {
        match self {
            BreakGlassCommand::Open { .. } => Operation::BreakGlass,
            BreakGlassCommand::Review { .. } => Operation::ReviewBreakGlass,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BreakGlassEvent {
    GlassBroken {
        grant_id: Uuid,
        patient_id: Uuid,
        user_id: Uuid,
        username: String,
        role: Role,
        reason: BreakGlassReason,
        note: String,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    BreakGlassReviewed {
        grant_id: Uuid,
        outcome: ReviewOutcome,
        note: Option<String>,
        reviewer_id: Uuid,
        reviewer_username: String,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for BreakGlassEvent {
    fn event_type(&self) -> String {
        match self {
            BreakGlassEvent::GlassBroken { .. } => "GlassBroken",
            BreakGlassEvent::BreakGlassReviewed { .. } => "BreakGlassReviewed",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BreakGlassError {
    #[error("the break-glass stream belongs to another user or patient")]
    WrongStream,
    #[error("access {0} is recorded already")]
    DuplicateGrant(Uuid),
    #[error("break-glass access {0} does not exist")]
    GrantNotFound(Uuid),
    #[error("break-glass access {0} is reviewed already; a review is final")]
    AlreadyReviewed(Uuid),
    #[error("nobody reviews their own break-glass access")]
    OwnAccess,
    #[error(transparent)]
    Forbidden(#[from] PermissionDenied),
    #[error(transparent)]
    Validation(#[from] ValidationError),
}

impl BreakGlass {
    pub fn decide(
        &self,
        command: BreakGlassCommand,
    ) -> Result<Vec<BreakGlassEvent>, BreakGlassError> {
        ensure_allowed(command.actor(), command.operation())?;
        let event = match command {
            BreakGlassCommand::Open {
                actor,
                grant_id,
                patient_id,
                reason,
                note,
                minutes,
                now,
            } => {
                let theirs = |owner: Option<Uuid>, id: Uuid| owner.is_none_or(|o| o == id);
                if !theirs(self.user_id, actor.user_id) || !theirs(self.patient_id, patient_id) {
                    return Err(BreakGlassError::WrongStream);
                }
                if self.grants.iter().any(|g| g.grant_id == grant_id) {
                    return Err(BreakGlassError::DuplicateGrant(grant_id));
                }
                if !(1..=MAX_BREAK_GLASS_MINUTES).contains(&minutes) {
                    return Err(ValidationError::new(
                        "minutes",
                        format!("must be 1 to {MAX_BREAK_GLASS_MINUTES}"),
                    )
                    .into());
                }
                if note.as_str().chars().count() > MAX_BREAK_GLASS_NOTE_CHARS {
                    return Err(ValidationError::new(
                        "note",
                        format!("must be at most {MAX_BREAK_GLASS_NOTE_CHARS} characters"),
                    )
                    .into());
                }
                BreakGlassEvent::GlassBroken {
                    grant_id,
                    patient_id,
                    user_id: actor.user_id,
                    username: actor.username,
                    role: actor.role,
                    reason,
                    note: note.to_string(),
                    expires_at: now + Duration::minutes(i64::from(minutes)),
                    at: now,
                }
            }
            BreakGlassCommand::Review {
                actor,
                grant_id,
                outcome,
                note,
                now,
            } => {
                let grant = self
                    .grants
                    .iter()
                    .find(|g| g.grant_id == grant_id)
                    .ok_or(BreakGlassError::GrantNotFound(grant_id))?;
                if self.user_id == Some(actor.user_id) {
                    return Err(BreakGlassError::OwnAccess);
                }
                if grant.reviewed {
                    return Err(BreakGlassError::AlreadyReviewed(grant_id));
                }
                if outcome == ReviewOutcome::NotJustified && note.is_none() {
                    return Err(ValidationError::new(
                        "note",
                        "say why the access was not justified",
                    )
                    .into());
                }
                BreakGlassEvent::BreakGlassReviewed {
                    grant_id,
                    outcome,
                    note: note.map(|n| n.to_string()),
                    reviewer_id: actor.user_id,
                    reviewer_username: actor.username,
                    at: now,
                }
            }
        };
        Ok(vec![event])
    }
}

impl Aggregate for BreakGlass {
    const TYPE: &'static str = "break_glass";
    type Command = BreakGlassCommand;
    type Event = BreakGlassEvent;
    type Error = BreakGlassError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            BreakGlassEvent::GlassBroken {
                grant_id,
                patient_id,
                user_id,
                reason,
                expires_at,
                ..
            } => {
                self.user_id = Some(user_id);
                self.patient_id = Some(patient_id);
                self.grants.push(Grant {
                    grant_id,
                    reason,
                    expires_at,
                    reviewed: false,
                });
            }
            BreakGlassEvent::BreakGlassReviewed { grant_id, .. } => {
                if let Some(g) = self.grants.iter_mut().find(|g| g.grant_id == grant_id) {
                    g.reviewed = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
            .expect("valid")
            .with_timezone(&Utc)
            + Duration::minutes(minute)
    }

    fn actor(role: Role, id: u128) -> Actor {
        Actor {
            user_id: Uuid::from_u128(id),
            username: format!("u{id}"),
            role,
        }
    }

    const PATIENT: Uuid = Uuid::from_u128(0x9A7);
    const GRANT: Uuid = Uuid::from_u128(0x61);

    fn note(text: &str) -> BoundedText {
        BoundedText::parse("note", text, 500).expect("valid")
    }

    fn open(by: Actor, minutes: u32) -> BreakGlassCommand {
        BreakGlassCommand::Open {
            actor: by,
            grant_id: GRANT,
            patient_id: PATIENT,
            reason: BreakGlassReason::EmergencyTreatment,
            note: note("arrived unconscious in the emergency room"),
            minutes,
            now: at(0),
        }
    }

    fn broken() -> BreakGlassEvent {
        BreakGlassEvent::GlassBroken {
            grant_id: GRANT,
            patient_id: PATIENT,
            user_id: Uuid::from_u128(0xD0C),
            username: "u3340".into(),
            role: Role::Doctor,
            reason: BreakGlassReason::EmergencyTreatment,
            note: "arrived unconscious in the emergency room".into(),
            expires_at: at(60),
            at: at(0),
        }
    }

    fn review(by: Actor, outcome: ReviewOutcome, text: Option<&str>) -> BreakGlassCommand {
        BreakGlassCommand::Review {
            actor: by,
            grant_id: GRANT,
            outcome,
            note: text.map(note),
            now: at(120),
        }
    }

    #[test]
    fn a_clinician_breaks_the_glass_for_a_limited_time() {
        TestFramework::<BreakGlass>::with(())
            .given_no_previous_events()
            .when(open(actor(Role::Doctor, 0xD0C), 60))
            .then_expect_events(vec![broken()]);
        let mut state = BreakGlass::default();
        state.apply(broken());
        assert!(state.open_at(at(59)).is_some());
        assert!(state.open_at(at(60)).is_none(), "expired at the minute");
    }

    #[test]
    fn who_may_break_the_glass_and_review_follows_the_matrix() {
        for role in Role::ALL {
            let result = BreakGlass::default().decide(open(actor(role, 0xD0C), 60));
            assert_eq!(
                matches!(result, Err(BreakGlassError::Forbidden(_))),
                !crate::permissions::allows(role, Operation::BreakGlass),
                "{role}"
            );
            let mut state = BreakGlass::default();
            state.apply(broken());
            let result = state.decide(review(actor(role, 0xADD), ReviewOutcome::Justified, None));
            assert_eq!(
                matches!(result, Err(BreakGlassError::Forbidden(_))),
                !crate::permissions::allows(role, Operation::ReviewBreakGlass),
                "{role}"
            );
        }
    }

    #[test]
    fn a_grant_needs_a_sane_duration_and_a_stream_of_its_own() {
        TestFramework::<BreakGlass>::with(())
            .given_no_previous_events()
            .when(open(actor(Role::Doctor, 0xD0C), 0))
            .then_expect_error(ValidationError::new("minutes", "must be 1 to 1440").into());
        TestFramework::<BreakGlass>::with(())
            .given(vec![broken()])
            .when(open(actor(Role::Nurse, 0x5E), 60))
            .then_expect_error(BreakGlassError::WrongStream);
        TestFramework::<BreakGlass>::with(())
            .given(vec![broken()])
            .when(open(actor(Role::Doctor, 0xD0C), 60))
            .then_expect_error(BreakGlassError::DuplicateGrant(GRANT));
    }

    #[test]
    fn a_review_is_final_and_never_of_ones_own_access() {
        let admin = actor(Role::HospitalAdmin, 0xADD);
        TestFramework::<BreakGlass>::with(())
            .given(vec![broken()])
            .when(review(admin.clone(), ReviewOutcome::NotJustified, None))
            .then_expect_error(
                ValidationError::new("note", "say why the access was not justified").into(),
            );
        let reviewed = BreakGlassEvent::BreakGlassReviewed {
            grant_id: GRANT,
            outcome: ReviewOutcome::NotJustified,
            note: Some("no emergency on record".into()),
            reviewer_id: admin.user_id,
            reviewer_username: admin.username.clone(),
            at: at(120),
        };
        TestFramework::<BreakGlass>::with(())
            .given(vec![broken()])
            .when(review(
                admin.clone(),
                ReviewOutcome::NotJustified,
                Some("no emergency on record"),
            ))
            .then_expect_events(vec![reviewed.clone()]);
        TestFramework::<BreakGlass>::with(())
            .given(vec![broken(), reviewed])
            .when(review(admin.clone(), ReviewOutcome::Justified, None))
            .then_expect_error(BreakGlassError::AlreadyReviewed(GRANT));
        let own = Actor {
            user_id: Uuid::from_u128(0xD0C),
            ..admin
        };
        TestFramework::<BreakGlass>::with(())
            .given(vec![broken()])
            .when(review(own, ReviewOutcome::Justified, None))
            .then_expect_error(BreakGlassError::OwnAccess);
        TestFramework::<BreakGlass>::with(())
            .given_no_previous_events()
            .when(review(
                actor(Role::HospitalAdmin, 0xADD),
                ReviewOutcome::Justified,
                None,
            ))
            .then_expect_error(BreakGlassError::GrantNotFound(GRANT));
    }
}
