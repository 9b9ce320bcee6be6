//! Value objects of the hospital aggregate: departments, the profile, branding and
//! settings with their parts (time zone, colour, invoice prefix, slot length, working
//! hours), and the subscription status and billing cycle.

use std::fmt;

use chrono::{NaiveTime, Weekday};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::common::{Address, BoundedText, Currency, Email, Phone, ValidationError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Department {
    pub id: Uuid,
    pub name: String,
    pub active: bool,
}

/// An IANA time-zone name such as `Africa/Nairobi` or `UTC`, checked for shape. The
/// domain has no time-zone database: the API converts instants with it and hands the
/// domain offset-carrying times (see [`crate::appointment`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TimeZoneName(String);

impl TimeZoneName {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let raw = raw.trim();
        let segment_ok = |s: &str| {
            s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+'))
        };
        if raw.len() <= 64 && raw.split('/').all(segment_ok) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ValidationError::new(
                "time_zone",
                "must be an IANA time-zone name such as Africa/Nairobi",
            ))
        }
    }

    pub fn utc() -> Self {
        Self("UTC".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A colour as `#RRGGBB`, stored upper-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HexColor(String);

impl HexColor {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ValidationError> {
        let raw = raw.trim();
        match raw.strip_prefix('#') {
            Some(hex) if hex.len() == 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(Self(raw.to_ascii_uppercase()))
            }
            _ => Err(ValidationError::new(
                field,
                "must be a colour such as #1A2B3C",
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The prefix of a hospital's invoice numbers: an upper-case letter then up to nine
/// upper-case letters or digits (`INV`, `DMC24`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InvoicePrefix(String);

impl InvoicePrefix {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let b = raw.trim().as_bytes();
        let ok = (1..=10).contains(&b.len())
            && b[0].is_ascii_uppercase()
            && b.iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if ok {
            Ok(Self(raw.trim().to_owned()))
        } else {
            Err(ValidationError::new(
                "invoice_prefix",
                "must be 1 to 10 upper-case letters or digits, starting with a letter",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for InvoicePrefix {
    fn default() -> Self {
        Self("INV".to_owned())
    }
}

impl fmt::Display for InvoicePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The length of one appointment slot in minutes: 5 to 240, a multiple of 5. Booked
/// durations are whole multiples of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct SlotLength(u32);

impl SlotLength {
    pub fn minutes(minutes: u32) -> Result<Self, ValidationError> {
        if (5..=240).contains(&minutes) && minutes.checked_rem(5) == Some(0) {
            Ok(Self(minutes))
        } else {
            Err(ValidationError::new(
                "slot_length",
                "must be 5 to 240 minutes, in steps of 5",
            ))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for SlotLength {
    fn default() -> Self {
        Self(15)
    }
}

impl TryFrom<u32> for SlotLength {
    type Error = ValidationError;
    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Self::minutes(value)
    }
}

impl From<SlotLength> for u32 {
    fn from(value: SlotLength) -> Self {
        value.0
    }
}

/// Opening hours of one day, in the hospital's local time; `open < close`, so a day's
/// hours never wrap past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkingHours {
    open: NaiveTime,
    close: NaiveTime,
}

impl WorkingHours {
    pub fn new(open: NaiveTime, close: NaiveTime) -> Result<Self, ValidationError> {
        if open < close {
            Ok(Self { open, close })
        } else {
            Err(ValidationError::new(
                "working_hours",
                "opening time must be before closing time",
            ))
        }
    }

    pub fn open(&self) -> NaiveTime {
        self.open
    }

    pub fn close(&self) -> NaiveTime {
        self.close
    }

    /// Does `[start, end)` lie within the day's hours?
    pub fn contains(&self, start: NaiveTime, end: NaiveTime) -> bool {
        self.open <= start && start < end && end <= self.close
    }
}

/// Working hours for each weekday (Monday first); `None` means closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkingWeek([Option<WorkingHours>; 7]);

impl WorkingWeek {
    pub fn new(monday_first: [Option<WorkingHours>; 7]) -> Self {
        Self(monday_first)
    }

    /// Monday to Friday, 08:00 to 17:00.
    pub fn standard() -> Self {
        let hours = match (
            NaiveTime::from_hms_opt(8, 0, 0),
            NaiveTime::from_hms_opt(17, 0, 0),
        ) {
            (Some(open), Some(close)) => Some(WorkingHours { open, close }),
            _ => None,
        };
        Self([hours, hours, hours, hours, hours, None, None])
    }

    pub fn on(&self, day: Weekday) -> Option<WorkingHours> {
        self.0
            .get(day.num_days_from_monday() as usize)
            .copied()
            .flatten()
    }
}

impl Default for WorkingWeek {
    fn default() -> Self {
        Self::standard()
    }
}

/// Who the hospital is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HospitalProfile {
    pub name: BoundedText,
    pub contact_email: Option<Email>,
    pub contact_phone: Option<Phone>,
    pub address: Option<Address>,
    pub time_zone: TimeZoneName,
    pub currency: Currency,
}

/// How the hospital's front ends look. The logo is a reference (a URL or object key):
/// the domain stores no files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branding {
    pub logo_ref: Option<BoundedText>,
    pub primary_color: Option<HexColor>,
    pub accent_color: Option<HexColor>,
}

/// Operational settings that other aggregates' commands are checked against (the API
/// reads them from here and passes them in).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HospitalSettings {
    pub slot_length: SlotLength,
    pub working_week: WorkingWeek,
    pub invoice_prefix: InvoicePrefix,
    /// Settings written before restricted records existed read as the defaults.
    #[serde(default)]
    pub privacy: PrivacySettings,
}

/// How restricted records are opened: who counts as the care team, and for how long a
/// break-glass access lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivacySettings {
    /// A clinician with an appointment or lab order for the patient within this many days
    /// (before or after today) is on the care team.
    pub care_team_window_days: u16,
    /// How long a break-glass access lasts.
    pub break_glass_minutes: u16,
    /// How long a record is kept after the patient's last contact before it may be
    /// erased.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

fn default_retention_days() -> u32 {
    PrivacySettings::DEFAULT_RETENTION_DAYS
}

impl Default for PrivacySettings {
    fn default() -> Self {
        Self {
            care_team_window_days: 30,
            break_glass_minutes: 60,
            retention_days: Self::DEFAULT_RETENTION_DAYS,
        }
    }
}

impl PrivacySettings {
    pub const MAX_WINDOW_DAYS: u16 = 365;
    /// A day: an access that must last longer is a new decision.
    pub const MAX_BREAK_GLASS_MINUTES: u16 = 1_440;
    /// Ten years, a common minimum for medical records.
    pub const DEFAULT_RETENTION_DAYS: u32 = 3_653;
    pub const MAX_RETENTION_DAYS: u32 = 100 * 366;

    pub fn new(
        care_team_window_days: i64,
        break_glass_minutes: i64,
        retention_days: i64,
    ) -> Result<Self, ValidationError> {
        let window = u16::try_from(care_team_window_days)
            .ok()
            .filter(|d| (1..=Self::MAX_WINDOW_DAYS).contains(d))
            .ok_or_else(|| {
                ValidationError::new(
                    "careTeamWindowDays",
                    format!("must be 1 to {}", Self::MAX_WINDOW_DAYS),
                )
            })?;
        let minutes = u16::try_from(break_glass_minutes)
            .ok()
            .filter(|m| (5..=Self::MAX_BREAK_GLASS_MINUTES).contains(m))
            .ok_or_else(|| {
                ValidationError::new(
                    "breakGlassMinutes",
                    format!("must be 5 to {}", Self::MAX_BREAK_GLASS_MINUTES),
                )
            })?;
        let retention = u32::try_from(retention_days)
            .ok()
            .filter(|d| *d <= Self::MAX_RETENTION_DAYS)
            .ok_or_else(|| {
                ValidationError::new(
                    "retentionDays",
                    format!("must be 0 to {}", Self::MAX_RETENTION_DAYS),
                )
            })?;
        Ok(Self {
            care_team_window_days: window,
            break_glass_minutes: minutes,
            retention_days: retention,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubscriptionStatus {
    Trial,
    Active,
    PastDue,
    Suspended,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BillingCycle {
    Monthly,
    Yearly,
}
