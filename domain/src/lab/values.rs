//! The value objects of the laboratory: codes, UCUM units, exact decimal results,
//! reference ranges and the flags a result gets against them.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::billing::Money;
use crate::common::{BoundedText, ValidationError};
use crate::patient::Sex;

pub const MAX_TEST_CODE_CHARS: usize = 32;
pub const MAX_TEST_NAME_CHARS: usize = 200;
pub const MAX_UNIT_CHARS: usize = 30;
pub const MAX_CODED_OPTIONS: usize = 50;
pub const MAX_REFERENCE_RANGES: usize = 20;
pub const MAX_PANEL_MEMBERS: usize = 50;
pub const MAX_TEXT_RESULT_CHARS: usize = 2_000;
pub const MAX_SPECIMEN_LABEL_CHARS: usize = 40;
/// Whole digits of a numeric result; with [`MAX_FRACTION_DIGITS`] it is exact in `i64`.
pub const MAX_WHOLE_DIGITS: usize = 12;
pub const MAX_FRACTION_DIGITS: usize = 6;
/// An age limit of a reference range, in days (150 years).
pub const MAX_AGE_DAYS: u32 = 150 * 366;

/// A catalogue code: a LOINC code (`2345-7`) or the hospital's own (`CBC`, `GLU-F`). Upper
/// case letters, digits, `-`, `.` and `_`; the code names the test's stream, so it is
/// checked strictly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TestCode(String);

impl TestCode {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let code = raw.trim().to_ascii_uppercase();
        let ok = !code.is_empty()
            && code.len() <= MAX_TEST_CODE_CHARS
            && code.starts_with(|c: char| c.is_ascii_alphanumeric())
            && code
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if ok {
            Ok(Self(code))
        } else {
            Err(ValidationError::new(
                "code",
                format!(
                    "must be 1 to {MAX_TEST_CODE_CHARS} letters, digits, '-', '.' or '_', \
                     starting with a letter or digit"
                ),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the code has the shape of a LOINC code: digits, a dash, one check digit.
    pub fn looks_like_loinc(&self) -> bool {
        match self.0.split_once('-') {
            Some((num, check)) => {
                (1..=7).contains(&num.len())
                    && num.chars().all(|c| c.is_ascii_digit())
                    && check.len() == 1
                    && check.chars().all(|c| c.is_ascii_digit())
            }
            None => false,
        }
    }
}

impl TryFrom<String> for TestCode {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TestCode> for String {
    fn from(value: TestCode) -> Self {
        value.0
    }
}

impl fmt::Display for TestCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a code comes from: LOINC, or the hospital's own list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CodeSystem {
    Loinc,
    Local,
}

/// A unit in UCUM's case-sensitive syntax (`mmol/L`, `10*9/L`, `g/dL`, `%`, `[IU]/L`).
/// Checked for UCUM's characters, not against the whole grammar; a result must carry
/// exactly the unit of its test.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ucum(String);

impl Ucum {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ValidationError> {
        let unit = raw.trim();
        let ok = !unit.is_empty()
            && unit.len() <= MAX_UNIT_CHARS
            && unit.chars().all(|c| {
                c.is_ascii_alphanumeric()
                    || matches!(
                        c,
                        '.' | '/' | '*' | '^' | '%' | '[' | ']' | '{' | '}' | '\'' | '-' | '_'
                    )
            });
        if ok {
            Ok(Self(unit.to_owned()))
        } else {
            Err(ValidationError::new(
                field,
                format!("must be a UCUM unit of 1 to {MAX_UNIT_CHARS} characters, e.g. mmol/L"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Ucum {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse("unit", &value)
    }
}

impl From<Ucum> for String {
    fn from(value: Ucum) -> Self {
        value.0
    }
}

impl fmt::Display for Ucum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An exact decimal as entered (`5.40`, `-0.3`, `120`): kept as text, so the reported
/// precision is the one measured, and compared exactly in millionths. Never a float.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Decimal {
    text: String,
    micros: i64,
}

impl Decimal {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ValidationError> {
        let invalid = || {
            ValidationError::new(
                field,
                format!(
                    "must be a decimal number with at most {MAX_WHOLE_DIGITS} digits before \
                     and {MAX_FRACTION_DIGITS} after the point, e.g. 5.4"
                ),
            )
        };
        let text = raw.trim();
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, fraction) = match unsigned.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (unsigned, None),
        };
        let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
        if !digits(whole) || whole.len() > MAX_WHOLE_DIGITS {
            return Err(invalid());
        }
        if let Some(f) = fraction {
            if !digits(f) || f.len() > MAX_FRACTION_DIGITS {
                return Err(invalid());
            }
        }
        let whole_value: i64 = whole.parse().map_err(|_| invalid())?;
        let fraction_value: i64 = match fraction {
            Some(f) => {
                let padded = format!("{f:0<width$}", width = MAX_FRACTION_DIGITS);
                padded.parse().map_err(|_| invalid())?
            }
            None => 0,
        };
        let magnitude = whole_value * 1_000_000 + fraction_value;
        let micros = if negative { -magnitude } else { magnitude };
        // `-0` is written `0`: one spelling per value where the sign carries nothing.
        let text = if micros == 0 && negative {
            unsigned.to_owned()
        } else {
            text.to_owned()
        };
        Ok(Self { text, micros })
    }

    /// The value in millionths.
    pub fn micros(&self) -> i64 {
        self.micros
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The decimal of `micros` millionths, written without trailing zeros.
    pub fn from_micros(micros: i64) -> Self {
        let sign = if micros < 0 { "-" } else { "" };
        let magnitude = micros.unsigned_abs();
        let whole = magnitude / 1_000_000;
        let fraction = magnitude % 1_000_000;
        let text = if fraction == 0 {
            format!("{sign}{whole}")
        } else {
            let f = format!("{fraction:06}");
            format!("{sign}{whole}.{}", f.trim_end_matches('0'))
        };
        Self { text, micros }
    }
}

impl PartialEq for Decimal {
    fn eq(&self, other: &Self) -> bool {
        self.micros == other.micros
    }
}

impl Eq for Decimal {}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        self.micros.cmp(&other.micros)
    }
}

impl TryFrom<String> for Decimal {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse("value", &value)
    }
}

impl From<Decimal> for String {
    fn from(value: Decimal) -> Self {
        value.text
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// What a specimen is (HL7 v2 table 0487 codes in FHIR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SpecimenType {
    WholeBlood,
    Serum,
    Plasma,
    Urine,
    Stool,
    Csf,
    Sputum,
    Swab,
    Tissue,
    Other,
}

impl SpecimenType {
    /// The HL7 v2-0487 code and its display.
    pub fn hl7(self) -> (&'static str, &'static str) {
        match self {
            SpecimenType::WholeBlood => ("BLD", "Whole blood"),
            SpecimenType::Serum => ("SER", "Serum"),
            SpecimenType::Plasma => ("PLAS", "Plasma"),
            SpecimenType::Urine => ("UR", "Urine"),
            SpecimenType::Stool => ("STL", "Stool = Fecal"),
            SpecimenType::Csf => ("CSF", "Cerebral spinal fluid"),
            SpecimenType::Sputum => ("SPT", "Sputum"),
            SpecimenType::Swab => ("SWT", "Swab"),
            SpecimenType::Tissue => ("TISS", "Tissue"),
            SpecimenType::Other => ("OTH", "Other"),
        }
    }
}

/// How urgently an order is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Priority {
    Routine,
    Urgent,
    Stat,
}

/// Why a specimen cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RejectionReason {
    Haemolysed,
    Clotted,
    InsufficientVolume,
    WrongContainer,
    Unlabelled,
    Contaminated,
    DelayedTransport,
    Other,
}

/// The interpretation of a result against its reference range (HL7 v3
/// ObservationInterpretation codes: N, L, H, LL, HH, A).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Flag {
    Normal,
    Low,
    High,
    CriticalLow,
    CriticalHigh,
    /// A coded result marked abnormal in the catalogue.
    Abnormal,
}

impl Flag {
    pub fn is_critical(self) -> bool {
        matches!(self, Flag::CriticalLow | Flag::CriticalHigh)
    }

    /// The HL7 v3 ObservationInterpretation code and display.
    pub fn hl7(self) -> (&'static str, &'static str) {
        match self {
            Flag::Normal => ("N", "Normal"),
            Flag::Low => ("L", "Low"),
            Flag::High => ("H", "High"),
            Flag::CriticalLow => ("LL", "Critical low"),
            Flag::CriticalHigh => ("HH", "Critical high"),
            Flag::Abnormal => ("A", "Abnormal"),
        }
    }
}

/// The reference interval of a numeric test for patients of one sex (or any) and an age
/// band (`[min_age_days, max_age_days)`, either end open). The normal limits are
/// inclusive: `low ≤ value ≤ high` is normal. A critical limit is the last value that is
/// not critical: `value < critical_low` is LL, `value > critical_high` is HH.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceRange {
    pub sex: Option<Sex>,
    pub min_age_days: Option<u32>,
    pub max_age_days: Option<u32>,
    pub low: Option<Decimal>,
    pub high: Option<Decimal>,
    pub critical_low: Option<Decimal>,
    pub critical_high: Option<Decimal>,
}

impl ReferenceRange {
    pub fn validate(&self) -> Result<(), ValidationError> {
        let err = |m: &str| Err(ValidationError::new("referenceRanges", m.to_owned()));
        if let (Some(min), Some(max)) = (self.min_age_days, self.max_age_days) {
            if min >= max {
                return err("minAgeDays must be below maxAgeDays");
            }
        }
        if self.min_age_days.is_some_and(|d| d > MAX_AGE_DAYS)
            || self.max_age_days.is_some_and(|d| d > MAX_AGE_DAYS)
        {
            return err("an age limit must be at most 150 years");
        }
        if self.low.is_none() && self.high.is_none() {
            return err("a reference range needs a low or a high limit");
        }
        // Ordered: critical low ≤ low ≤ high ≤ critical high, wherever both are given.
        let chain = [
            &self.critical_low,
            &self.low,
            &self.high,
            &self.critical_high,
        ];
        let given: Vec<&Decimal> = chain.iter().filter_map(|d| d.as_ref()).collect();
        if given.windows(2).any(|w| w[0] > w[1]) {
            return err("limits must be ordered: criticalLow ≤ low ≤ high ≤ criticalHigh");
        }
        if self.low.is_some() && self.high.is_some() && self.low == self.high {
            return err("low and high must differ");
        }
        Ok(())
    }

    /// Whether the range is for a patient of `sex` aged `age_days`.
    pub fn applies_to(&self, sex: Sex, age_days: u32) -> bool {
        self.sex.is_none_or(|s| s == sex)
            && self.min_age_days.is_none_or(|min| age_days >= min)
            && self.max_age_days.is_none_or(|max| age_days < max)
    }

    /// The flag of `value` against this range.
    pub fn flag(&self, value: &Decimal) -> Flag {
        if self.critical_low.as_ref().is_some_and(|c| value < c) {
            Flag::CriticalLow
        } else if self.critical_high.as_ref().is_some_and(|c| value > c) {
            Flag::CriticalHigh
        } else if self.low.as_ref().is_some_and(|l| value < l) {
            Flag::Low
        } else if self.high.as_ref().is_some_and(|h| value > h) {
            Flag::High
        } else {
            Flag::Normal
        }
    }
}

/// The range that applies to a patient: a sex-specific one before one for any sex, then
/// the first listed.
pub fn applicable_range(
    ranges: &[ReferenceRange],
    sex: Sex,
    age_days: u32,
) -> Option<&ReferenceRange> {
    let matching = || ranges.iter().filter(|r| r.applies_to(sex, age_days));
    matching()
        .find(|r| r.sex.is_some())
        .or_else(|| matching().next())
}

/// One answer of a coded test (`POS` "Positive", abnormal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodedOption {
    pub code: String,
    pub display: String,
    pub abnormal: bool,
}

/// What a test's result is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ResultSpec {
    Numeric {
        unit: Ucum,
        ranges: Vec<ReferenceRange>,
    },
    Coded {
        options: Vec<CodedOption>,
    },
    Text,
}

impl ResultSpec {
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            ResultSpec::Numeric { ranges, .. } => {
                if ranges.len() > MAX_REFERENCE_RANGES {
                    return Err(ValidationError::new(
                        "referenceRanges",
                        format!("at most {MAX_REFERENCE_RANGES}"),
                    ));
                }
                ranges.iter().try_for_each(ReferenceRange::validate)
            }
            ResultSpec::Coded { options } => {
                if options.is_empty() || options.len() > MAX_CODED_OPTIONS {
                    return Err(ValidationError::new(
                        "options",
                        format!("a coded test needs 1 to {MAX_CODED_OPTIONS} answers"),
                    ));
                }
                let mut seen = std::collections::HashSet::new();
                for o in options {
                    let ok = |s: &str, max: usize| {
                        !s.trim().is_empty()
                            && s.chars().count() <= max
                            && !s.chars().any(char::is_control)
                    };
                    if !ok(&o.code, MAX_TEST_CODE_CHARS) || !ok(&o.display, MAX_TEST_NAME_CHARS) {
                        return Err(ValidationError::new(
                            "options",
                            "each answer needs a code (up to 32 characters) and a display",
                        ));
                    }
                    if !seen.insert(o.code.to_ascii_uppercase()) {
                        return Err(ValidationError::new(
                            "options",
                            format!("answer code {} is listed twice", o.code),
                        ));
                    }
                }
                Ok(())
            }
            ResultSpec::Text => Ok(()),
        }
    }
}

/// A catalogue entry: an analyte with its result, or a panel of analytes ordered together
/// (a complete blood count) and billed as one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TestKind {
    Analyte { result: ResultSpec },
    Panel { members: Vec<TestCode> },
}

/// What the catalogue says of a test or panel at one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestDefinition {
    pub code: TestCode,
    pub system: CodeSystem,
    pub name: BoundedText,
    pub specimen_type: SpecimenType,
    pub kind: TestKind,
    pub price: Money,
}

impl TestDefinition {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.system == CodeSystem::Loinc && !self.code.looks_like_loinc() {
            return Err(ValidationError::new(
                "code",
                "is not a LOINC code (digits, '-', a check digit); use system LOCAL",
            ));
        }
        if self.name.as_str().chars().count() > MAX_TEST_NAME_CHARS {
            return Err(ValidationError::new("name", "is too long"));
        }
        if self.price.is_negative() {
            return Err(ValidationError::new("priceMinor", "must not be negative"));
        }
        match &self.kind {
            TestKind::Analyte { result } => result.validate(),
            TestKind::Panel { members } => {
                if members.is_empty() || members.len() > MAX_PANEL_MEMBERS {
                    return Err(ValidationError::new(
                        "members",
                        format!("a panel needs 1 to {MAX_PANEL_MEMBERS} tests"),
                    ));
                }
                let distinct: std::collections::HashSet<_> = members.iter().collect();
                if distinct.len() != members.len() {
                    return Err(ValidationError::new("members", "lists a test twice"));
                }
                if members.contains(&self.code) {
                    return Err(ValidationError::new(
                        "members",
                        "a panel cannot hold itself",
                    ));
                }
                Ok(())
            }
        }
    }

    pub fn result(&self) -> Option<&ResultSpec> {
        match &self.kind {
            TestKind::Analyte { result } => Some(result),
            TestKind::Panel { .. } => None,
        }
    }
}

/// A result as entered, before it is checked against its test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ResultValue {
    Numeric { value: Decimal, unit: Ucum },
    Coded { code: String, display: String },
    Text { text: String },
}

/// A specimen's label: the barcode on the tube, unique in the hospital.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SpecimenLabel(String);

impl SpecimenLabel {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let label = raw.trim().to_ascii_uppercase();
        let ok = !label.is_empty()
            && label.len() <= MAX_SPECIMEN_LABEL_CHARS
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if ok {
            Ok(Self(label))
        } else {
            Err(ValidationError::new(
                "label",
                format!("must be 1 to {MAX_SPECIMEN_LABEL_CHARS} letters, digits, '-', '.' or '_'"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SpecimenLabel {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<SpecimenLabel> for String {
    fn from(value: SpecimenLabel) -> Self {
        value.0
    }
}

impl fmt::Display for SpecimenLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
