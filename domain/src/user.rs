//! Staff accounts inside one hospital. Super administrators are platform accounts and
//! live in the platform database, not here.
//!
//! A user's id is derived from the hospital-normalized username ([`user_id_for`]), so
//! "usernames are unique within a hospital, ignoring case" is enforced by the event
//! store's optimistic concurrency: two racing creations of `Alice` and `alice` address
//! the same stream, and only one can write its first event.
//!
//! "The hospital keeps at least one active admin" is a fact about many user streams, so
//! no single user aggregate can know it. The commands that could remove the last admin
//! ([`UserCommand::ChangeRole`], [`UserCommand::DeactivateUserChecked`]) carry
//! `active_admin_count`, looked up by the caller from the staff read model just before
//! dispatch (including the user being changed). Two admins demoting each other in the same
//! instant could both pass; making it airtight would need one hospital-wide "admin roster"
//! stream that every admin change goes through, which we judged not worth it: the platform
//! operator can always restore an admin (`ReactivateUser`, `ResetUserPassword` and
//! `CreateUser` are open to SUPERADMIN).

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::common::{Actor, BoundedText, Email, Role, Username, ValidationError};
use crate::permissions::{ensure_allowed, Operation, PermissionDenied};

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
    /// An administrator (or the platform) sets a new password for someone else; the
    /// hash is made outside the domain.
    ResetPassword {
        actor: Actor,
        password_hash: String,
        now: DateTime<Utc>,
    },
    ChangeRole {
        actor: Actor,
        role: Role,
        /// Active HOSPITAL_ADMIN accounts in the hospital right now, this one included
        /// (see the module docs for why this is a fact passed in).
        active_admin_count: u32,
        now: DateTime<Utc>,
    },
    ChangeDepartment {
        actor: Actor,
        /// Checked by the caller against [`crate::hospital::Hospital::department`].
        department_id: Option<Uuid>,
        now: DateTime<Utc>,
    },
    UpdateProfile {
        actor: Actor,
        full_name: BoundedText,
        email: Email,
        now: DateTime<Utc>,
    },
    /// Deactivation with the actor and the last-admin guard: what the API should send.
    /// [`UserCommand::DeactivateUser`] stays for platform tooling that acts without an
    /// actor.
    DeactivateUserChecked {
        actor: Actor,
        active_admin_count: u32,
        now: DateTime<Utc>,
    },
}

impl UserCommand {
    /// The permission this command needs. The actor-less commands are the platform's
    /// and the account owner's own (`ChangePassword`), checked by the API.
    pub fn operation(&self) -> Operation {
        use UserCommand as C;
        match self {
            C::CreateUser { .. } => Operation::CreateUser,
            C::ChangePassword { .. } => Operation::ChangeOwnPassword,
            C::DeactivateUser { .. } | C::DeactivateUserChecked { .. } => Operation::DeactivateUser,
            C::ReactivateUser { .. } => Operation::ReactivateUser,
            C::ResetPassword { .. } => Operation::ResetUserPassword,
            C::ChangeRole { .. } => Operation::ChangeUserRole,
            C::ChangeDepartment { .. } => Operation::ChangeUserDepartment,
            C::UpdateProfile { .. } => Operation::UpdateUserProfile,
        }
    }
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
    UserRoleChanged {
        previous_role: Role,
        role: Role,
        at: DateTime<Utc>,
    },
    UserDepartmentChanged {
        department_id: Option<Uuid>,
        at: DateTime<Utc>,
    },
    UserProfileUpdated {
        full_name: String,
        email: String,
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
            UserEvent::UserRoleChanged { .. } => "UserRoleChanged",
            UserEvent::UserDepartmentChanged { .. } => "UserDepartmentChanged",
            UserEvent::UserProfileUpdated { .. } => "UserProfileUpdated",
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
    #[error("the user already has the role {0}")]
    RoleUnchanged(Role),
    #[error("the hospital must keep at least one active administrator")]
    LastActiveAdmin,
    #[error("you cannot deactivate your own account")]
    CannotDeactivateSelf,
    #[error(transparent)]
    Forbidden(#[from] PermissionDenied),
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
    pub full_name: String,
    pub email: String,
    pub department_id: Option<Uuid>,
    /// Bumped by every event that must end the sessions opened before it (a password
    /// change, a deactivation). An access token names the version it was issued at, so a
    /// token issued before a deactivation stays dead after a reactivation.
    #[serde(default)]
    pub credentials_version: u64,
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

    fn is_active_admin(&self) -> bool {
        self.active && self.role == Some(Role::HospitalAdmin)
    }

    /// Refuse a change that would take away the hospital's last active admin.
    fn guard_last_admin(&self, active_admin_count: u32) -> Result<(), UserError> {
        if self.is_active_admin() && active_admin_count <= 1 {
            Err(UserError::LastActiveAdmin)
        } else {
            Ok(())
        }
    }

    /// Decide which events a command produces, without changing anything.
    pub fn decide(&self, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
        let op = command.operation();
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
            UserCommand::ResetPassword {
                actor,
                password_hash,
                now,
            } => {
                ensure_allowed(&actor, op)?;
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
            UserCommand::DeactivateUserChecked {
                actor,
                active_admin_count,
                now,
            } => {
                ensure_allowed(&actor, op)?;
                self.ensure_exists()?;
                if !self.active {
                    return Err(UserError::AlreadyDeactivated);
                }
                if self.id == Some(actor.user_id) {
                    return Err(UserError::CannotDeactivateSelf);
                }
                self.guard_last_admin(active_admin_count)?;
                UserEvent::UserDeactivated { at: now }
            }
            UserCommand::ReactivateUser { now } => {
                self.ensure_exists()?;
                if self.active {
                    return Err(UserError::AlreadyActive);
                }
                UserEvent::UserReactivated { at: now }
            }
            UserCommand::ChangeRole {
                actor,
                role,
                active_admin_count,
                now,
            } => {
                ensure_allowed(&actor, op)?;
                self.ensure_exists()?;
                if !role.is_hospital_role() {
                    return Err(UserError::RoleNotAllowed(role));
                }
                let previous_role = self.role.ok_or(UserError::NotFound)?;
                if previous_role == role {
                    return Err(UserError::RoleUnchanged(role));
                }
                self.guard_last_admin(active_admin_count)?;
                UserEvent::UserRoleChanged {
                    previous_role,
                    role,
                    at: now,
                }
            }
            UserCommand::ChangeDepartment {
                actor,
                department_id,
                now,
            } => {
                ensure_allowed(&actor, op)?;
                self.ensure_exists()?;
                UserEvent::UserDepartmentChanged {
                    department_id,
                    at: now,
                }
            }
            UserCommand::UpdateProfile {
                actor,
                full_name,
                email,
                now,
            } => {
                ensure_allowed(&actor, op)?;
                self.ensure_exists()?;
                UserEvent::UserProfileUpdated {
                    full_name: full_name.to_string(),
                    email: email.as_str().to_owned(),
                    at: now,
                }
            }
        };
        Ok(vec![event])
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
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            UserEvent::UserCreated {
                user_id,
                username,
                email,
                full_name,
                role,
                department_id,
                created_at,
                ..
            } => {
                self.id = Some(user_id);
                self.username = username;
                self.email = email;
                self.full_name = full_name;
                self.department_id = department_id;
                self.role = Some(role);
                self.active = true;
                self.password_changed_at = Some(created_at);
            }
            UserEvent::PasswordChanged { changed_at, .. } => {
                self.password_changed_at = Some(changed_at);
                self.credentials_version += 1;
            }
            UserEvent::UserDeactivated { .. } => {
                self.active = false;
                self.credentials_version += 1;
            }
            UserEvent::UserReactivated { .. } => self.active = true,
            UserEvent::UserRoleChanged { role, .. } => self.role = Some(role),
            UserEvent::UserDepartmentChanged { department_id, .. } => {
                self.department_id = department_id;
            }
            UserEvent::UserProfileUpdated {
                full_name, email, ..
            } => {
                self.full_name = full_name;
                self.email = email;
            }
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
    fn a_password_change_or_a_deactivation_bumps_the_credentials_version_and_reactivation_does_not()
    {
        let mut user = User::default();
        user.apply(created("alice"));
        assert_eq!(user.credentials_version, 0);
        user.apply(UserEvent::UserDeactivated { at: now() });
        assert_eq!(user.credentials_version, 1);
        user.apply(UserEvent::UserReactivated { at: now() });
        assert_eq!(user.credentials_version, 1, "reactivation revives no token");
        user.apply(UserEvent::PasswordChanged {
            password_hash: "$argon2id$x".into(),
            changed_at: now(),
        });
        assert_eq!(user.credentials_version, 2);
        user.apply(UserEvent::UserRoleChanged {
            previous_role: Role::Nurse,
            role: Role::Staff,
            at: now(),
        });
        assert_eq!(
            user.credentials_version, 2,
            "a role change is read fresh on every request instead"
        );
    }

    #[test]
    fn commands_on_a_missing_user_are_refused() {
        TestFramework::<User>::with(())
            .given_no_previous_events()
            .when(UserCommand::DeactivateUser { now: now() })
            .then_expect_error(UserError::NotFound);
    }

    fn admin_actor() -> Actor {
        Actor {
            user_id: Uuid::from_u128(0xAD),
            username: "boss".into(),
            role: Role::HospitalAdmin,
        }
    }

    fn created_as(username: &str, role: Role) -> UserEvent {
        match created(username) {
            UserEvent::UserCreated {
                user_id,
                username,
                email,
                full_name,
                department_id,
                password_hash,
                created_at,
                ..
            } => UserEvent::UserCreated {
                user_id,
                username,
                email,
                full_name,
                role,
                department_id,
                password_hash,
                created_at,
            },
            other => other,
        }
    }

    fn expect_error(given: Vec<UserEvent>, cmd: UserCommand, err: UserError) {
        TestFramework::<User>::with(())
            .given(given)
            .when(cmd)
            .then_expect_error(err);
    }

    #[test]
    fn an_admin_changes_role_department_and_profile() {
        TestFramework::<User>::with(())
            .given(vec![created_as("doc", Role::Nurse)])
            .when(UserCommand::ChangeRole {
                actor: admin_actor(),
                role: Role::Doctor,
                active_admin_count: 1,
                now: now(),
            })
            .then_expect_events(vec![UserEvent::UserRoleChanged {
                previous_role: Role::Nurse,
                role: Role::Doctor,
                at: now(),
            }]);
        let dept = Some(Uuid::from_u128(5));
        TestFramework::<User>::with(())
            .given(vec![created_as("doc", Role::Nurse)])
            .when(UserCommand::ChangeDepartment {
                actor: admin_actor(),
                department_id: dept,
                now: now(),
            })
            .then_expect_events(vec![UserEvent::UserDepartmentChanged {
                department_id: dept,
                at: now(),
            }]);
        TestFramework::<User>::with(())
            .given(vec![created_as("doc", Role::Nurse)])
            .when(UserCommand::UpdateProfile {
                actor: admin_actor(),
                full_name: BoundedText::parse("full_name", "Grace Hopper", 200).expect("valid"),
                email: Email::parse("grace@dmc.example").expect("valid"),
                now: now(),
            })
            .then_expect_events(vec![UserEvent::UserProfileUpdated {
                full_name: "Grace Hopper".into(),
                email: "grace@dmc.example".into(),
                at: now(),
            }]);
        TestFramework::<User>::with(())
            .given(vec![created_as("doc", Role::Nurse)])
            .when(UserCommand::ResetPassword {
                actor: Actor::system(),
                password_hash: HASH.into(),
                now: now(),
            })
            .then_expect_events(vec![UserEvent::PasswordChanged {
                password_hash: HASH.into(),
                changed_at: now(),
            }]);
    }

    #[test]
    fn role_changes_are_refused_when_they_break_a_rule() {
        expect_error(
            vec![created_as("ada", Role::HospitalAdmin)],
            UserCommand::ChangeRole {
                actor: admin_actor(),
                role: Role::Doctor,
                active_admin_count: 1,
                now: now(),
            },
            UserError::LastActiveAdmin,
        );
        expect_error(
            vec![created_as("doc", Role::Doctor)],
            UserCommand::ChangeRole {
                actor: admin_actor(),
                role: Role::Doctor,
                active_admin_count: 2,
                now: now(),
            },
            UserError::RoleUnchanged(Role::Doctor),
        );
        expect_error(
            vec![created_as("doc", Role::Doctor)],
            UserCommand::ChangeRole {
                actor: admin_actor(),
                role: Role::SuperAdmin,
                active_admin_count: 2,
                now: now(),
            },
            UserError::RoleNotAllowed(Role::SuperAdmin),
        );
        let nurse = Actor {
            role: Role::Nurse,
            ..admin_actor()
        };
        expect_error(
            vec![created_as("doc", Role::Doctor)],
            UserCommand::ChangeRole {
                actor: nurse.clone(),
                role: Role::HospitalAdmin,
                active_admin_count: 2,
                now: now(),
            },
            UserError::Forbidden(PermissionDenied {
                role: Role::Nurse,
                operation: Operation::ChangeUserRole,
            }),
        );
        expect_error(
            vec![],
            UserCommand::ChangeDepartment {
                actor: admin_actor(),
                department_id: None,
                now: now(),
            },
            UserError::NotFound,
        );
        expect_error(
            vec![created_as("doc", Role::Doctor)],
            UserCommand::UpdateProfile {
                actor: nurse.clone(),
                full_name: BoundedText::parse("full_name", "X", 200).expect("valid"),
                email: Email::parse("x@dmc.example").expect("valid"),
                now: now(),
            },
            UserError::Forbidden(PermissionDenied {
                role: Role::Nurse,
                operation: Operation::UpdateUserProfile,
            }),
        );
        expect_error(
            vec![created_as("doc", Role::Doctor)],
            UserCommand::ResetPassword {
                actor: nurse,
                password_hash: HASH.into(),
                now: now(),
            },
            UserError::Forbidden(PermissionDenied {
                role: Role::Nurse,
                operation: Operation::ResetUserPassword,
            }),
        );
    }

    #[test]
    fn a_second_admin_can_be_demoted() {
        TestFramework::<User>::with(())
            .given(vec![created_as("ada", Role::HospitalAdmin)])
            .when(UserCommand::ChangeRole {
                actor: admin_actor(),
                role: Role::Staff,
                active_admin_count: 2,
                now: now(),
            })
            .then_expect_events(vec![UserEvent::UserRoleChanged {
                previous_role: Role::HospitalAdmin,
                role: Role::Staff,
                at: now(),
            }]);
    }

    #[test]
    fn checked_deactivation_keeps_an_admin_and_refuses_self_deactivation() {
        let deactivate = |count| UserCommand::DeactivateUserChecked {
            actor: admin_actor(),
            active_admin_count: count,
            now: now(),
        };
        TestFramework::<User>::with(())
            .given(vec![created_as("ada", Role::HospitalAdmin)])
            .when(deactivate(2))
            .then_expect_events(vec![UserEvent::UserDeactivated { at: now() }]);
        expect_error(
            vec![created_as("ada", Role::HospitalAdmin)],
            deactivate(1),
            UserError::LastActiveAdmin,
        );
        // A deactivated admin no longer counts, so a lone count is irrelevant for others.
        TestFramework::<User>::with(())
            .given(vec![created_as("nina", Role::Nurse)])
            .when(deactivate(1))
            .then_expect_events(vec![UserEvent::UserDeactivated { at: now() }]);
        expect_error(
            vec![
                created_as("nina", Role::Nurse),
                UserEvent::UserDeactivated { at: now() },
            ],
            deactivate(3),
            UserError::AlreadyDeactivated,
        );
        let me = admin_actor();
        let mine = UserEvent::UserCreated {
            user_id: me.user_id,
            username: "boss".into(),
            email: "b@dmc.example".into(),
            full_name: "Boss".into(),
            role: Role::HospitalAdmin,
            department_id: None,
            password_hash: HASH.into(),
            created_at: now(),
        };
        expect_error(vec![mine], deactivate(5), UserError::CannotDeactivateSelf);
        expect_error(vec![], deactivate(5), UserError::NotFound);
    }

    #[test]
    fn state_follows_the_events() {
        let mut user = User::default();
        for e in [
            created_as("doc", Role::Nurse),
            UserEvent::UserRoleChanged {
                previous_role: Role::Nurse,
                role: Role::Doctor,
                at: now(),
            },
            UserEvent::UserDepartmentChanged {
                department_id: Some(Uuid::from_u128(9)),
                at: now(),
            },
        ] {
            user.apply(e);
        }
        assert_eq!(user.role, Some(Role::Doctor));
        assert_eq!(user.department_id, Some(Uuid::from_u128(9)));
        assert!(user.active);
    }
}
