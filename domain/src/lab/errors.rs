//! The refusals of the laboratory's aggregates.

use uuid::Uuid;

use super::{OrderStatus, SpecimenStatus, SpecimenType};
use crate::common::ValidationError;
use crate::permissions::PermissionDenied;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabError {
    #[error("test {0} is in the catalogue already")]
    TestExists(String),
    #[error("the test is not in the catalogue")]
    TestNotFound,
    #[error("the test is retired and cannot be ordered or retired again")]
    TestRetired,
    #[error("a test's code cannot change; define a new test instead")]
    CodeChanged,
    #[error("nothing would change")]
    NothingChanged,
    #[error("the order exists already")]
    OrderExists,
    #[error("the order does not exist")]
    OrderNotFound,
    #[error("an order needs at least one test")]
    NoTests,
    #[error("an order may name at most {0} tests")]
    TooManyTests(usize),
    #[error("test {0} is ordered twice")]
    DuplicateTest(String),
    #[error("panel {0} does not list its member tests as the catalogue has them")]
    PanelIncomplete(String),
    #[error("the tests of one order must be priced in one currency")]
    MixedCurrencies,
    #[error("the order is {0:?}")]
    OrderClosed(OrderStatus),
    #[error("no test of this order needs a {0:?} specimen")]
    NoTestsForSpecimen(SpecimenType),
    #[error("specimen {0} exists already")]
    SpecimenExists(Uuid),
    #[error("a {0:?} specimen is collected already; reject it first to recollect")]
    SpecimenAlreadyCollected(SpecimenType),
    #[error("specimen label {0} is in use already")]
    LabelTaken(String),
    #[error("specimen {0} is not part of this order")]
    SpecimenNotFound(Uuid),
    #[error("the specimen is {0:?}")]
    SpecimenNotAwaited(SpecimenStatus),
    #[error("results were entered from this specimen; amend them instead")]
    SpecimenInUse,
    #[error("no {0:?} specimen of this order has been received in the lab")]
    SpecimenNotReceived(SpecimenType),
    #[error("result {0} is not part of this order")]
    ItemNotFound(Uuid),
    #[error("the result is verified; amend it with a reason instead")]
    ResultFinal,
    #[error("only a verified result can be amended")]
    NotFinal,
    #[error("result {0} has no unverified value")]
    NothingToVerify(Uuid),
    #[error("a result must be verified by a technician other than the one who entered it")]
    SameTechnician,
    #[error("the test's unit is {expected}, not {given}")]
    WrongUnit { expected: String, given: String },
    #[error("the test takes {expected}")]
    WrongKind { expected: &'static str },
    #[error("{given} is not an answer of this test (answers: {allowed})")]
    UnknownAnswer { given: String, allowed: String },
    #[error("an order with results cannot be cancelled")]
    HasResults,
    #[error("the order is not verified")]
    NotVerified,
    #[error("the order's tests are on an invoice already")]
    AlreadyBilled,
    #[error(transparent)]
    Forbidden(#[from] PermissionDenied),
    #[error(transparent)]
    Validation(#[from] ValidationError),
}
