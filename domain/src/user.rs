//! Staff accounts inside one hospital. Super administrators are platform accounts and
//! live in the platform database, not here.
//!
//! A user's id is derived from the hospital-normalized username ([`user_id_for`]), so
//! "usernames are unique within a hospital, ignoring case" is enforced by the event
//! store's optimistic concurrency: two racing creations of `Alice` and `alice` address
//! the same stream, and only one can write its first event.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::common::{BoundedText, Email, Role, Username, ValidationError};

/// Namespace of the name-based (v5) user ids.
const USER_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1d_2c3a_9b7e_4c55_8a1f_0d2e_3b4c_5a6d);

pub const MAX_FULL_NAME_CHARS: usize = 200;

/// The stable id of the account with this username in a hospital.
pub fn user_id_for(username: &Username) -> Uuid {
    Uuid::new_v5(&USER_ID_NAMESPACE, username.normalized().as_bytes())
}

#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    CreateUser {
        username: Username,
        email: Email,
        full_name: BoundedText,
        role: Role,
        department_id: Option<Uuid>,
        /// An argon2id PHC string made outside the domain; stored as given.
        password_hash: String,
        now: DateTime<Utc>,
    },
    ChangePassword {
        password_hash: String,
        now: DateTime<Utc>,
    },
    DeactivateUser {
        now: DateTime<Utc>,
    },
    ReactivateUser {
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    UserCreated {
        user_id: Uuid,
        username: String,
        email: String,
        full_name: String,
        role: Role,
        department_id: Option<Uuid>,
        password_hash: String,
        created_at: DateTime<Utc>,
    },
    PasswordChanged {
        password_hash: String,
        changed_at: DateTime<Utc>,
    },
    UserDeactivated {
        at: DateTime<Utc>,
    },
    UserReactivated {
        at: DateTime<Utc>,
    },
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            UserEvent::UserCreated { .. } => "UserCreated",
            UserEvent::PasswordChanged { .. } => "PasswordChanged",
            UserEvent::UserDeactivated { .. } => "UserDeactivated",
            UserEvent::UserReactivated { .. } => "UserReactivated",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("a user with this username exists already")]
    AlreadyExists,
    #[error("the user does not exist")]
    NotFound,
    #[error("a hospital account cannot have the role {0}")]
    RoleNotAllowed(Role),
    #[error("the user is already deactivated")]
    AlreadyDeactivated,
    #[error("the user is already active")]
    AlreadyActive,
    #[error("the password hash is not an argon2id hash")]
    InvalidPasswordHash,
    #[error(transparent)]
    Validation(#[from] ValidationError),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: Option<Uuid>,
    pub username: String,
    pub role: Option<Role>,
    pub active: bool,
    pub password_changed_at: Option<DateTime<Utc>>,
}

fn check_hash(hash: &str) -> Result<(), UserError> {
    if hash.starts_with("$argon2id$") && hash.len() < 512 {
        Ok(())
    } else {
        Err(UserError::InvalidPasswordHash)
    }
}

impl User {
    fn ensure_exists(&self) -> Result<(), UserError> {
        self.id.map(|_| ()).ok_or(UserError::NotFound)
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "user";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            UserCommand::CreateUser {
                username,
                email,
                full_name,
                role,
                department_id,
                password_hash,
                now,
            } => {
                if self.id.is_some() {
                    return Err(UserError::AlreadyExists);
                }
                if !role.is_hospital_role() {
                    return Err(UserError::RoleNotAllowed(role));
                }
                check_hash(&password_hash)?;
                UserEvent::UserCreated {
                    user_id: user_id_for(&username),
                    username: username.to_string(),
                    email: email.as_str().to_owned(),
                    full_name: full_name.to_string(),
                    role,
                    department_id,
                    password_hash,
                    created_at: now,
                }
            }
            UserCommand::ChangePassword { password_hash, now } => {
                self.ensure_exists()?;
                check_hash(&password_hash)?;
                UserEvent::PasswordChanged {
                    password_hash,
                    changed_at: now,
                }
            }
            UserCommand::DeactivateUser { now } => {
                self.ensure_exists()?;
                if !self.active {
                    return Err(UserError::AlreadyDeactivated);
                }
                UserEvent::UserDeactivated { at: now }
            }
            UserCommand::ReactivateUser { now } => {
                self.ensure_exists()?;
                if self.active {
                    return Err(UserError::AlreadyActive);
                }
                UserEvent::UserReactivated { at: now }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            UserEvent::UserCreated {
                user_id,
                username,
                role,
                created_at,
                ..
            } => {
                self.id = Some(user_id);
                self.username = username;
                self.role = Some(role);
                self.active = true;
                self.password_changed_at = Some(created_at);
            }
            UserEvent::PasswordChanged { changed_at, .. } => {
                self.password_changed_at = Some(changed_at);
            }
            UserEvent::UserDeactivated { .. } => self.active = false,
            UserEvent::UserReactivated { .. } => self.active = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-05T08:00:00Z")
            .expect("valid")
            .with_timezone(&Utc)
    }

    fn create(username: &str, role: Role) -> UserCommand {
        UserCommand::CreateUser {
            username: Username::parse(username).expect("valid"),
            email: Email::parse("a@dmc.example").expect("valid"),
            full_name: BoundedText::parse("full_name", "Ada Admin", 200).expect("valid"),
            role,
            department_id: None,
            password_hash: HASH.into(),
            now: now(),
        }
    }

    fn created(username: &str) -> UserEvent {
        UserEvent::UserCreated {
            user_id: user_id_for(&Username::parse(username).expect("valid")),
            username: username.into(),
            email: "a@dmc.example".into(),
            full_name: "Ada Admin".into(),
            role: Role::HospitalAdmin,
            department_id: None,
            password_hash: HASH.into(),
            created_at: now(),
        }
    }

    #[test]
    fn creating_a_user_records_who_they_are() {
        TestFramework::<User>::with(())
            .given_no_previous_events()
            .when(create("dmc_admin", Role::HospitalAdmin))
            .then_expect_events(vec![created("dmc_admin")]);
    }

    #[test]
    fn the_same_username_in_another_case_is_the_same_account() {
        let a = Username::parse("Alice").expect("valid");
        let b = Username::parse("aLiCe").expect("valid");
        assert_eq!(user_id_for(&a), user_id_for(&b));
        TestFramework::<User>::with(())
            .given(vec![created("alice")])
            .when(create("ALICE", Role::Doctor))
            .then_expect_error(UserError::AlreadyExists);
    }

    #[test]
    fn a_hospital_account_cannot_be_a_super_administrator() {
        TestFramework::<User>::with(())
            .given_no_previous_events()
            .when(create("mallory", Role::SuperAdmin))
            .then_expect_error(UserError::RoleNotAllowed(Role::SuperAdmin));
    }

    #[test]
    fn a_plain_text_password_is_never_stored() {
        let mut cmd = create("bob", Role::Nurse);
        if let UserCommand::CreateUser { password_hash, .. } = &mut cmd {
            *password_hash = "hunter2".into();
        }
        TestFramework::<User>::with(())
            .given_no_previous_events()
            .when(cmd)
            .then_expect_error(UserError::InvalidPasswordHash);
    }

    #[test]
    fn deactivation_and_reactivation_follow_each_other() {
        TestFramework::<User>::with(())
            .given(vec![created("bob")])
            .when(UserCommand::DeactivateUser { now: now() })
            .then_expect_events(vec![UserEvent::UserDeactivated { at: now() }]);
        TestFramework::<User>::with(())
            .given(vec![
                created("bob"),
                UserEvent::UserDeactivated { at: now() },
            ])
            .when(UserCommand::DeactivateUser { now: now() })
            .then_expect_error(UserError::AlreadyDeactivated);
        TestFramework::<User>::with(())
            .given(vec![created("bob")])
            .when(UserCommand::ReactivateUser { now: now() })
            .then_expect_error(UserError::AlreadyActive);
    }

    #[test]
    fn commands_on_a_missing_user_are_refused() {
        TestFramework::<User>::with(())
            .given_no_previous_events()
            .when(UserCommand::DeactivateUser { now: now() })
            .then_expect_error(UserError::NotFound);
    }
}
