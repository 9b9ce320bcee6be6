//! Personal data in events, sealed with a key per patient, so that a patient can be
//! erased from an append-only log by destroying one key (crypto-shredding).
//!
//! What is sealed ([`SPECS`]): names and contact details, and free text about the patient
//! (alerts, allergy reactions, reasons, a visit's reason and notes, a lab order's clinical
//! note). Identifiers the system works by (record ids, MRN, date of birth, sex) stay in
//! clear: they are how the record is found, and without the rest they name nobody.
//!
//! On append ([`seal`]), the listed fields that are present (not null) are taken out of
//! their JSON object and replaced by one `_sealed` member: `{"k": patient id, "f": [field
//! names], "n": nonce, "c": ciphertext}`, XChaCha20-Poly1305 under the patient's data key,
//! with the record's type, id and event type as associated data (a sealed value cannot be
//! moved to another record). On read ([`Keys::unseal`]) the fields are put back; once the
//! key is destroyed they read as [`ERASED`] (names, text) or null (contact details), the
//! same whether a read model is live or rebuilt.
//!
//! The stored bytes are what the hash chain covers: sealing happens before the append,
//! unsealing only on reads that decode, never where the chain is computed.
//!
//! Data keys live in the hospital's `patient_keys` table, wrapped (XChaCha20-Poly1305)
//! under a master key from configuration ([`Keyring`]); the master key is rotated by
//! rewrapping ([`rewrap_all`]). ADR 0008 records the choices.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{ProjectionError, Result, StoredEvent};

/// What an erased name or text reads as.
pub const ERASED: &str = "[erased]";
/// The member a sealed object carries.
pub const SEALED: &str = "_sealed";

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// Where the patient a sealed value belongs to is found.
#[derive(Debug, Clone, Copy)]
enum PatientOf {
    /// The record is the patient.
    AggregateId,
    /// A field of the event names the patient.
    Field(&'static str),
    /// The record's first event names the patient in this field.
    FirstEvent(&'static str),
}

/// One sealed part of an event: the objects at `path` (`*` for each element of an array)
/// lose `fields` to a sealed member.
struct Spec {
    aggregate_type: &'static str,
    event_type: &'static str,
    path: &'static [&'static str],
    fields: &'static [&'static str],
    patient: PatientOf,
}

const NAMES_AND_CONTACT: &[&str] = &[
    "given_name",
    "middle_name",
    "family_name",
    "phone",
    "email",
    "address",
    "emergency_contact",
];

/// Fields that read as null once erased (their types admit no placeholder text).
const ERASED_AS_NULL: &[&str] = &["phone", "email", "address", "emergency_contact"];

const SPECS: &[Spec] = &[
    Spec {
        aggregate_type: "patient",
        event_type: "PatientRegistered",
        path: &["demographics"],
        fields: NAMES_AND_CONTACT,
        patient: PatientOf::AggregateId,
    },
    Spec {
        aggregate_type: "patient",
        event_type: "PatientRegistered",
        path: &["alerts", "*"],
        fields: &["text"],
        patient: PatientOf::AggregateId,
    },
    Spec {
        aggregate_type: "patient",
        event_type: "PatientRegistered",
        path: &["allergies", "*"],
        fields: &["reaction"],
        patient: PatientOf::AggregateId,
    },
    Spec {
        aggregate_type: "patient",
        event_type: "PatientDemographicsUpdated",
        path: &["demographics"],
        fields: NAMES_AND_CONTACT,
        patient: PatientOf::AggregateId,
    },
    Spec {
        aggregate_type: "patient",
        event_type: "AlertAdded",
        path: &["alert"],
        fields: &["text"],
        patient: PatientOf::AggregateId,
    },
    Spec {
        aggregate_type: "patient",
        event_type: "AllergyRecorded",
        path: &["allergy"],
        fields: &["reaction"],
        patient: PatientOf::AggregateId,
    },
    Spec {
        aggregate_type: "patient",
        event_type: "PatientDeactivated",
        path: &[],
        fields: &["reason"],
        patient: PatientOf::AggregateId,
    },
    Spec {
        aggregate_type: "patient",
        event_type: "RecordRestricted",
        path: &[],
        fields: &["reason"],
        patient: PatientOf::AggregateId,
    },
    Spec {
        aggregate_type: "patient",
        event_type: "RecordUnrestricted",
        path: &[],
        fields: &["reason"],
        patient: PatientOf::AggregateId,
    },
    Spec {
        aggregate_type: "appointment",
        event_type: "AppointmentScheduled",
        path: &[],
        fields: &["reason"],
        patient: PatientOf::Field("patient_id"),
    },
    Spec {
        aggregate_type: "appointment",
        event_type: "AppointmentCompleted",
        path: &[],
        fields: &["notes"],
        patient: PatientOf::FirstEvent("patient_id"),
    },
    Spec {
        aggregate_type: "appointment",
        event_type: "AppointmentCancelled",
        path: &[],
        fields: &["reason"],
        patient: PatientOf::FirstEvent("patient_id"),
    },
    Spec {
        aggregate_type: "lab_order",
        event_type: "LabOrderPlaced",
        path: &[],
        fields: &["clinical_note"],
        patient: PatientOf::Field("patient_id"),
    },
];

fn specs_for<'s>(
    aggregate_type: &'s str,
    event_type: &'s str,
) -> impl Iterator<Item = &'static Spec> + 's {
    SPECS
        .iter()
        .filter(move |s| s.aggregate_type == aggregate_type && s.event_type == event_type)
}

/// Whether events of this record type and event type carry sealed personal data.
pub fn seals(aggregate_type: &str, event_type: &str) -> bool {
    specs_for(aggregate_type, event_type).next().is_some()
}

/// A key, wiped when dropped.
#[derive(Clone)]
struct Key([u8; KEY_LEN]);

impl Drop for Key {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(|b| *b = 0);
    }
}

impl Key {
    fn random() -> Self {
        let mut key = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Key(key)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&self.0))
    }

    /// nonce ‖ ciphertext of `plain`, bound to `aad`.
    fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher()
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
            .map_err(|_| crypto_error("sealing failed"))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    fn open(&self, nonce: &[u8], sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        if nonce.len() != NONCE_LEN {
            return Err(crypto_error("a sealed value has a malformed nonce"));
        }
        self.cipher()
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map_err(|_| {
                crypto_error(
                    "a sealed value does not open: it was altered, or the master key is not the one it was sealed under",
                )
            })
    }
}

fn crypto_error(message: &str) -> ProjectionError {
    ProjectionError::Row(message.to_owned())
}

/// The master keys: the current one wraps new data keys; previous ones still unwrap
/// (while a rotation is under way). A key is named by the first 16 hex digits of its
/// SHA-256, stored next to every key it wraps.
pub struct Keyring {
    current: (String, Key),
    previous: Vec<(String, Key)>,
}

/// Why a master key was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyringError(String);

impl Keyring {
    /// From base64 keys of 32 bytes each (`HMS_MASTER_KEY`, `HMS_MASTER_KEY_PREVIOUS`).
    pub fn from_base64(
        current: &str,
        previous: &[String],
    ) -> std::result::Result<Self, KeyringError> {
        let parse = |raw: &str| -> std::result::Result<(String, Key), KeyringError> {
            let bytes = B64.decode(raw.trim()).map_err(|_| {
                KeyringError("a master key must be base64 (e.g. `openssl rand -base64 32`)".into())
            })?;
            let key: [u8; KEY_LEN] = bytes
                .try_into()
                .map_err(|_| KeyringError(format!("a master key must be {KEY_LEN} bytes")))?;
            Ok((key_id(&key), Key(key)))
        };
        Ok(Self {
            current: parse(current)?,
            previous: previous
                .iter()
                .filter(|p| !p.trim().is_empty())
                .map(|p| parse(p))
                .collect::<std::result::Result<_, _>>()?,
        })
    }

    /// The development keyring: a fixed, public key. Outside production only; the
    /// server refuses to start in production without `HMS_MASTER_KEY`.
    pub fn development() -> Self {
        let key: [u8; KEY_LEN] = Sha256::digest(b"hms development master key; not a secret").into();
        Self {
            current: (key_id(&key), Key(key)),
            previous: Vec::new(),
        }
    }

    /// The name of the current master key.
    pub fn current_id(&self) -> &str {
        &self.current.0
    }

    fn find(&self, id: &str) -> Option<&Key> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|(kid, _)| kid == id)
            .map(|(_, k)| k)
    }

    fn wrap(&self, data_key: &Key, patient_id: Uuid) -> Result<(String, Vec<u8>)> {
        let (id, master) = &self.current;
        Ok((id.clone(), master.seal(&data_key.0, patient_id.as_bytes())?))
    }

    fn unwrap(&self, master_id: &str, wrapped: &[u8], patient_id: Uuid) -> Result<Key> {
        let master = self.find(master_id).ok_or_else(|| {
            crypto_error(&format!(
                "patient {patient_id}'s key is wrapped under master key {master_id}, which this process does not have"
            ))
        })?;
        if wrapped.len() < NONCE_LEN {
            return Err(crypto_error("a wrapped key is malformed"));
        }
        let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
        let key: [u8; KEY_LEN] = master
            .open(nonce, sealed, patient_id.as_bytes())?
            .try_into()
            .map_err(|_| crypto_error("a wrapped key has the wrong length"))?;
        Ok(Key(key))
    }
}

fn key_id(key: &[u8; KEY_LEN]) -> String {
    hex::encode(&Sha256::digest(key)[..8])
}

static KEYRING: OnceLock<Keyring> = OnceLock::new();

/// Sets this process's master keys, once, before the first event is read or written.
pub fn install(keyring: Keyring) -> std::result::Result<(), KeyringError> {
    let id = keyring.current_id().to_owned();
    KEYRING
        .set(keyring)
        .map_err(|_| KeyringError("the master keys of this process are set already".into()))?;
    tracing::info!(master_key = %id, "master key installed");
    Ok(())
}

/// This process's master keys: the development keyring when none was installed.
pub fn keyring() -> &'static Keyring {
    KEYRING.get_or_init(|| {
        tracing::warn!("no master key installed: using the public development key");
        Keyring::development()
    })
}

/// The patient's data key, made (and stored wrapped) on first use. `None` once the
/// patient is erased: nothing personal may be written for them any more.
///
/// One statement either way: it offers a fresh key (wrapping one costs microseconds) and
/// reads the stored one, so a new patient's first write does not pay a read that finds
/// nothing and then an insert.
async fn data_key_for_writing(conn: &mut PgConnection, patient_id: Uuid) -> Result<Option<Key>> {
    let (fresh, offer) = KeyOffer::fresh(patient_id)?;
    let (master_id, wrapped) = (offer.master_key_id, offer.wrapped_key);
    // The `SELECT` runs on the statement's snapshot, which never shows the row the insert
    // makes: `inserted` says our key is the patient's; otherwise the stored row, if the
    // snapshot shows it, is (a key stored concurrently and committed after the snapshot
    // was taken is read again below).
    let (inserted, stored_master, stored_wrapped, stored): (
        bool,
        Option<String>,
        Option<Vec<u8>>,
        bool,
    ) = sqlx::query_as(
        "WITH offered AS ( \
           INSERT INTO patient_keys (patient_id, master_key_id, wrapped_key) VALUES ($1, $2, $3) \
           ON CONFLICT (patient_id) DO NOTHING RETURNING patient_id) \
         SELECT EXISTS (SELECT 1 FROM offered), k.master_key_id, k.wrapped_key, k.patient_id IS NOT NULL \
           FROM (SELECT 1) AS one LEFT JOIN patient_keys AS k ON k.patient_id = $1",
    )
    .bind(patient_id)
    .bind(&master_id)
    .bind(&wrapped)
    .fetch_one(&mut *conn)
    .await?;
    if inserted {
        return Ok(Some(fresh));
    }
    if !stored {
        // Another writer stored a key after this statement's snapshot: theirs.
        return Keys::load(conn, [patient_id]).await?.get(patient_id);
    }
    match KeyState::stored(patient_id, stored_master, stored_wrapped)? {
        KeyState::Present(key) => Ok(Some(key)),
        _ => Ok(None),
    }
}

/// The data keys of some patients, unwrapped for one batch of reads.
pub struct Keys {
    keys: HashMap<Uuid, KeyState>,
}

/// What the key table says of one patient's key.
#[derive(Clone)]
enum KeyState {
    Present(Key),
    /// Destroyed on erasure: the patient's sealed values read as erased.
    Destroyed,
    /// No row: sealed data under a key that was never stored (a partial restore, a
    /// deleted row, a forged owner). Not an erasure: reported where integrity is checked.
    Missing,
}

impl KeyState {
    /// The state a row of `patient_keys` gives: the key unwrapped, or destroyed (its
    /// columns cleared on erasure).
    fn stored(patient: Uuid, master_id: Option<String>, wrapped: Option<Vec<u8>>) -> Result<Self> {
        Ok(match (master_id, wrapped) {
            (Some(master_id), Some(wrapped)) => {
                KeyState::Present(keyring().unwrap(&master_id, &wrapped, patient)?)
            }
            _ => KeyState::Destroyed,
        })
    }
}

impl Keys {
    /// Loads the keys of `patients` (one query).
    pub async fn load(
        conn: &mut PgConnection,
        patients: impl IntoIterator<Item = Uuid>,
    ) -> Result<Self> {
        let ids: Vec<Uuid> = patients
            .into_iter()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut keys: HashMap<Uuid, KeyState> =
            ids.iter().map(|id| (*id, KeyState::Missing)).collect();
        if ids.is_empty() {
            return Ok(Self { keys });
        }
        let rows: Vec<(Uuid, Option<String>, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT patient_id, master_key_id, wrapped_key FROM patient_keys WHERE patient_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        for (patient, master_id, wrapped) in rows {
            keys.insert(patient, KeyState::stored(patient, master_id, wrapped)?);
        }
        Ok(Self { keys })
    }

    /// The key to write under: `None` once destroyed.
    fn get(&self, patient: Uuid) -> Result<Option<Key>> {
        match self.keys.get(&patient) {
            Some(KeyState::Present(key)) => Ok(Some(key.clone())),
            Some(KeyState::Destroyed) => Ok(None),
            _ => Err(crypto_error(&format!(
                "patient {patient}'s key was not stored"
            ))),
        }
    }

    /// Puts the sealed fields of `payload` (an event of `aggregate_type`/`aggregate_id`)
    /// back: in clear, or as erased when the patient's key is gone.
    ///
    /// A value that does not open under its patient's key (altered, or copied from
    /// another record) reads as erased and is logged: the read side must not stop for one
    /// damaged event. `hms-replay verify` reports it ([`Keys::check`]).
    pub fn unseal(&self, record: Record<'_>, payload: &mut Value) -> Result<()> {
        self.open_all(record, payload, false)
    }

    /// [`Keys::unseal`], failing on a value that does not open: for integrity checks.
    pub fn check(&self, record: Record<'_>, payload: &mut Value) -> Result<()> {
        self.open_all(record, payload, true)
    }

    fn open_all(&self, record: Record<'_>, payload: &mut Value, strict: bool) -> Result<()> {
        let mut result = Ok(());
        visit_sealed(payload, &mut |object| {
            if result.is_err() {
                return;
            }
            result = match self.open_object(object, &record) {
                Err(e) if !strict => {
                    tracing::error!(
                        error = %e,
                        record = %format!("{}/{}", record.aggregate_type, record.aggregate_id),
                        sequence = record.sequence,
                        "sealed personal data does not open; it reads as erased"
                    );
                    Ok(())
                }
                other => other,
            };
        });
        result
    }

    fn open_object(&self, object: &mut Map<String, Value>, record: &Record<'_>) -> Result<()> {
        let Some(Value::Object(sealed)) = object.remove(SEALED) else {
            return Ok(());
        };
        let malformed = || crypto_error("a sealed value is malformed");
        let patient: Uuid = sealed
            .get("k")
            .and_then(Value::as_str)
            .and_then(|k| k.parse().ok())
            .ok_or_else(malformed)?;
        let fields: Vec<String> = sealed
            .get("f")
            .and_then(Value::as_array)
            .ok_or_else(malformed)?
            .iter()
            .filter_map(|f| f.as_str().map(str::to_owned))
            .collect();
        let erase = |object: &mut Map<String, Value>| {
            for field in &fields {
                object.insert(field.clone(), placeholder(field));
            }
        };
        let key = match self.keys.get(&patient) {
            Some(KeyState::Present(key)) => key.clone(),
            Some(KeyState::Destroyed) => {
                erase(object);
                return Ok(());
            }
            _ => {
                erase(object);
                return Err(crypto_error(&format!(
                    "sealed under patient {patient}'s key, which is not in the key table"
                )));
            }
        };
        let opened = (|| {
            let nonce = B64
                .decode(
                    sealed
                        .get("n")
                        .and_then(Value::as_str)
                        .ok_or_else(malformed)?,
                )
                .map_err(|_| malformed())?;
            let cipher = B64
                .decode(
                    sealed
                        .get("c")
                        .and_then(Value::as_str)
                        .ok_or_else(malformed)?,
                )
                .map_err(|_| malformed())?;
            let plain = key.open(&nonce, &cipher, &aad(record, patient, &fields))?;
            match serde_json::from_slice(&plain).map_err(|_| malformed())? {
                Value::Object(values) => Ok(values),
                _ => Err(malformed()),
            }
        })();
        match opened {
            Ok(values) => {
                object.extend(values);
                Ok(())
            }
            Err(e) => {
                erase(object);
                Err(e)
            }
        }
    }

    /// Unseals a batch of stored events in place (see [`unseal_stored`]).
    fn unseal_stored_with(&self, events: &mut [StoredEvent]) -> Result<()> {
        for event in events.iter_mut().filter(|e| has_sealed(e.payload.get())) {
            let mut payload = event.payload_value()?;
            let record = Record {
                aggregate_type: &event.aggregate_type,
                aggregate_id: &event.aggregate_id,
                sequence: event.sequence,
                event_type: &event.event_type,
            };
            self.unseal(record, &mut payload).map_err(|e| match e {
                ProjectionError::Row(m) => {
                    ProjectionError::Row(format!("event at position {}: {m}", event.position))
                }
                other => other,
            })?;
            event.payload = serde_json::value::to_raw_value(&payload)
                .map_err(|e| crypto_error(&format!("unsealed payload: {e}")))?;
        }
        Ok(())
    }
}

/// What an erased field reads as.
pub fn placeholder(field: &str) -> Value {
    if ERASED_AS_NULL.contains(&field) {
        Value::Null
    } else {
        Value::String(ERASED.to_owned())
    }
}

/// Erases, in a read model's copy, what sealing erases in the events: each of `fields`
/// present (not null) in `object` becomes its placeholder. The live read model after an
/// erasure so equals one rebuilt from the log once the key is gone.
pub fn erase_present(object: &mut Value, fields: &[&str]) {
    if let Value::Object(map) = object {
        for field in fields {
            if map.get(*field).is_some_and(|v| !v.is_null()) {
                map.insert((*field).to_owned(), placeholder(field));
            }
        }
    }
}

/// The sealed fields of a patient's demographics.
pub const DEMOGRAPHIC_FIELDS: &[&str] = NAMES_AND_CONTACT;

/// Whether a payload's text holds a sealed member (cheap: no parsing).
pub fn has_sealed(payload: &str) -> bool {
    payload.contains("\"_sealed\"")
}

/// The patients whose keys a sealed payload needs.
pub fn sealed_patients(payload: &mut Value) -> Vec<Uuid> {
    let mut found = Vec::new();
    visit_sealed(payload, &mut |object| {
        if let Some(id) = object
            .get(SEALED)
            .and_then(|s| s.get("k"))
            .and_then(Value::as_str)
            .and_then(|k| k.parse().ok())
        {
            found.push(id);
        }
    });
    found
}

/// Calls `f` on every object holding a sealed member.
fn visit_sealed(value: &mut Value, f: &mut dyn FnMut(&mut Map<String, Value>)) {
    match value {
        Value::Object(map) => {
            if map.contains_key(SEALED) {
                f(map);
            }
            for v in map.values_mut() {
                visit_sealed(v, f);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| visit_sealed(v, f)),
        _ => {}
    }
}

/// The event a sealed value belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub event_type: &'a str,
}

/// What a sealed value is bound to: its event (record, sequence, type), its key's owner
/// and the fields it holds. Moved to another event, another owner or another list of
/// fields, it does not open.
fn aad(record: &Record<'_>, patient: Uuid, fields: &[String]) -> Vec<u8> {
    format!(
        "{}/{}/{}/{}/{patient}/{}",
        record.aggregate_type,
        record.aggregate_id,
        record.sequence,
        record.event_type,
        fields.join(",")
    )
    .into_bytes()
}

/// Unseals stored events in place for reading (decoding, display): one key query for the
/// batch. Never used where the hash chain is computed: it covers the stored bytes.
pub async fn unseal_stored(conn: &mut PgConnection, events: &mut [StoredEvent]) -> Result<()> {
    let mut patients = Vec::new();
    for event in events.iter().filter(|e| has_sealed(e.payload.get())) {
        patients.extend(sealed_patients(&mut event.payload_value()?));
    }
    if patients.is_empty() {
        return Ok(());
    }
    Keys::load(conn, patients).await?.unseal_stored_with(events)
}

/// An event about to be appended, as [`seal`] sees it.
pub struct Outgoing<'e> {
    pub aggregate_type: &'e str,
    pub aggregate_id: &'e str,
    pub sequence: i64,
    pub event_type: &'e str,
    pub payload: &'e mut Value,
}

/// The patient's record was erased: nothing personal is written for it any more.
#[derive(Debug, thiserror::Error)]
#[error("patient {0}'s record was erased; nothing personal can be recorded for it")]
pub struct ErasedPatient(pub Uuid);

/// Seals the personal fields of events about to be appended (see the module's doc).
/// The patient's data key is made on first use.
pub async fn seal(
    conn: &mut PgConnection,
    events: Vec<Outgoing<'_>>,
) -> std::result::Result<(), SealError> {
    seal_knowing(conn, &[], events).await
}

/// A patient's data key, unwrapped from the row of `patient_keys` that a caller read
/// with other facts (a booking's first statement), so that sealing the patient's data
/// needs no statement of its own. Only a key present in the row is known: a destroyed
/// one is left to [`seal`], which refuses the erased patient.
#[derive(Clone)]
pub struct KnownKey {
    patient: Uuid,
    key: Key,
}

impl KnownKey {
    /// The key of `patient` from its row's columns, if the row holds one.
    pub fn stored(
        patient: Uuid,
        master_key_id: Option<String>,
        wrapped_key: Option<Vec<u8>>,
    ) -> Result<Option<Self>> {
        Ok(
            match KeyState::stored(patient, master_key_id, wrapped_key)? {
                KeyState::Present(key) => Some(Self { patient, key }),
                KeyState::Destroyed | KeyState::Missing => None,
            },
        )
    }
}

/// [`seal`], with the data keys of some patients in hand already (`known`): the key table
/// is asked only for the others.
pub async fn seal_knowing(
    conn: &mut PgConnection,
    known: &[KnownKey],
    events: Vec<Outgoing<'_>>,
) -> std::result::Result<(), SealError> {
    seal_with(KeySource::Stored(conn), known, events)
        .await
        .map(drop)
}

/// A fresh data key offered as a patient's, to be stored with the events sealed under it
/// in one statement (`INSERT … ON CONFLICT DO NOTHING`): it is the patient's only if no
/// key was stored before, and the events are then appended with it; otherwise the
/// caller seals again with [`seal`], which uses the stored key (or refuses an erased
/// patient).
#[derive(Debug, Clone)]
pub struct KeyOffer {
    pub patient_id: Uuid,
    pub master_key_id: String,
    pub wrapped_key: Vec<u8>,
}

impl KeyOffer {
    /// A new random data key for `patient_id`, and the offer of it wrapped under the
    /// current master key.
    fn fresh(patient_id: Uuid) -> Result<(Key, KeyOffer)> {
        let key = Key::random();
        let (master_key_id, wrapped_key) = keyring().wrap(&key, patient_id)?;
        Ok((
            key,
            KeyOffer {
                patient_id,
                master_key_id,
                wrapped_key,
            },
        ))
    }
}

/// Seals `events` of a new patient record (a registration) under a fresh key offered
/// as the patient's, without a statement. Returns the offers; `None` when an event's
/// patient is another record's (then use [`seal`]).
///
/// The offers are stored by [`STORE_OFFERS`] in the statement that appends the events.
pub async fn seal_offering(
    events: Vec<Outgoing<'_>>,
) -> std::result::Result<Option<Vec<KeyOffer>>, SealError> {
    seal_with(KeySource::Offered(Vec::new()), &[], events).await
}

/// Stores [`KeyOffer`]s inside another statement (as a `WITH` query): patient ids,
/// master key ids and wrapped keys are its parameters `$8`, `$9` and `$10`; it returns
/// one row per offer taken, none for a patient whose key is stored already.
pub const STORE_OFFERS: &str = "INSERT INTO patient_keys (patient_id, master_key_id, wrapped_key) \
     SELECT * FROM unnest($8::uuid[], $9::text[], $10::bytea[]) \
     ON CONFLICT (patient_id) DO NOTHING RETURNING patient_id";

/// Where [`seal_with`] takes data keys from.
enum KeySource<'c> {
    /// The key table (made on first use).
    Stored(&'c mut PgConnection),
    /// Fresh keys, offered to be stored with the events.
    Offered(Vec<KeyOffer>),
}

async fn seal_with(
    mut source: KeySource<'_>,
    known: &[KnownKey],
    events: Vec<Outgoing<'_>>,
) -> std::result::Result<Option<Vec<KeyOffer>>, SealError> {
    let mut keys: HashMap<Uuid, Key> = known.iter().map(|k| (k.patient, k.key.clone())).collect();
    for event in events {
        let specs: Vec<&Spec> = specs_for(event.aggregate_type, event.event_type).collect();
        let Some(first) = specs.first() else { continue };
        let Some(body) = variant_mut(event.payload, event.event_type) else {
            continue;
        };
        let patient = match (first.patient, &mut source) {
            (PatientOf::AggregateId, _) => event.aggregate_id.parse::<Uuid>().ok(),
            (PatientOf::Field(_), KeySource::Offered(_)) => return Ok(None),
            (PatientOf::Field(field), KeySource::Stored(_)) => body
                .get(field)
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok()),
            (PatientOf::FirstEvent(field), KeySource::Stored(conn)) => {
                first_event_field(conn, event.aggregate_type, event.aggregate_id, field).await?
            }
            // Only the patient's own first event is taken to find no key: a patient found
            // elsewhere most likely has one already.
            (PatientOf::FirstEvent(_), KeySource::Offered(_)) => return Ok(None),
        };
        let Some(patient) = patient else {
            return Err(SealError::Store(crypto_error(&format!(
                "the patient of {} {} is unknown: its personal data cannot be sealed",
                event.aggregate_type, event.aggregate_id
            ))));
        };
        let key = match keys.get(&patient) {
            Some(key) => key.clone(),
            None => {
                let key = match &mut source {
                    KeySource::Stored(conn) => data_key_for_writing(conn, patient)
                        .await?
                        .ok_or(SealError::Erased(ErasedPatient(patient)))?,
                    KeySource::Offered(offers) => {
                        let (fresh, offer) = KeyOffer::fresh(patient)?;
                        offers.push(offer);
                        fresh
                    }
                };
                keys.insert(patient, key.clone());
                key
            }
        };
        let record = Record {
            aggregate_type: event.aggregate_type,
            aggregate_id: event.aggregate_id,
            sequence: event.sequence,
            event_type: event.event_type,
        };
        for spec in specs {
            let mut objects = Vec::new();
            objects_at(body, spec.path, &mut objects);
            for object in objects {
                seal_object(object, spec.fields, patient, &key, &record)?;
            }
        }
    }
    Ok(match source {
        KeySource::Offered(offers) => Some(offers),
        KeySource::Stored(_) => Some(Vec::new()),
    })
}

/// Why events could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Erased(ErasedPatient),
    #[error(transparent)]
    Store(#[from] ProjectionError),
}

impl From<sqlx::Error> for SealError {
    fn from(e: sqlx::Error) -> Self {
        SealError::Store(e.into())
    }
}

/// The object inside `{"Variant": {...}}`.
fn variant_mut<'v>(payload: &'v mut Value, event_type: &str) -> Option<&'v mut Value> {
    payload.as_object_mut()?.get_mut(event_type)
}

fn objects_at<'v>(value: &'v mut Value, path: &[&str], out: &mut Vec<&'v mut Map<String, Value>>) {
    match path.split_first() {
        None => {
            if let Value::Object(map) = value {
                out.push(map);
            }
        }
        Some((&"*", rest)) => {
            if let Value::Array(items) = value {
                for item in items {
                    objects_at(item, rest, out);
                }
            }
        }
        Some((segment, rest)) => {
            if let Some(inner) = value.as_object_mut().and_then(|m| m.get_mut(*segment)) {
                objects_at(inner, rest, out);
            }
        }
    }
}

fn seal_object(
    object: &mut Map<String, Value>,
    fields: &[&str],
    patient: Uuid,
    key: &Key,
    record: &Record<'_>,
) -> Result<()> {
    let mut taken = Map::new();
    for field in fields {
        match object.get(*field) {
            Some(Value::Null) | None => {}
            Some(_) => {
                if let Some(v) = object.remove(*field) {
                    taken.insert((*field).to_owned(), v);
                }
            }
        }
    }
    if taken.is_empty() {
        return Ok(());
    }
    let field_names: Vec<String> = taken.keys().cloned().collect();
    let names: Vec<Value> = field_names.iter().cloned().map(Value::String).collect();
    let plain = serde_json::to_vec(&taken).map_err(|e| crypto_error(&e.to_string()))?;
    let sealed = key.seal(&plain, &aad(record, patient, &field_names))?;
    let (nonce, cipher) = sealed.split_at(NONCE_LEN);
    let mut member = Map::new();
    member.insert("k".into(), Value::String(patient.to_string()));
    member.insert("f".into(), Value::Array(names));
    member.insert("n".into(), Value::String(B64.encode(nonce)));
    member.insert("c".into(), Value::String(B64.encode(cipher)));
    object.insert(SEALED.into(), Value::Object(member));
    Ok(())
}

async fn first_event_field(
    conn: &mut PgConnection,
    aggregate_type: &str,
    aggregate_id: &str,
    field: &str,
) -> Result<Option<Uuid>> {
    let payload: Option<Value> = sqlx::query_scalar(
        "SELECT payload FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = 1",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(payload
        .as_ref()
        .and_then(Value::as_object)
        .and_then(|m| m.values().next())
        .and_then(|body| body.get(field))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok()))
}

/// Destroys patient `patient_id`'s data key: every sealed value of theirs reads as erased
/// from now on, everywhere. Idempotent. Returns whether a key was destroyed now.
pub async fn destroy_key(conn: &mut PgConnection, patient_id: Uuid) -> Result<bool> {
    let destroyed = sqlx::query(
        "INSERT INTO patient_keys (patient_id, master_key_id, wrapped_key, destroyed_at) \
         VALUES ($1, NULL, NULL, now()) \
         ON CONFLICT (patient_id) DO UPDATE \
            SET master_key_id = NULL, wrapped_key = NULL, \
                destroyed_at = coalesce(patient_keys.destroyed_at, now()) \
          WHERE patient_keys.wrapped_key IS NOT NULL",
    )
    .bind(patient_id)
    .execute(&mut *conn)
    .await?;
    Ok(destroyed.rows_affected() > 0)
}

/// Rewraps every data key of one hospital that is not under the current master key.
/// Returns how many were rewrapped.
pub async fn rewrap_all(conn: &mut PgConnection) -> Result<u64> {
    let ring = keyring();
    let rows: Vec<(Uuid, String, Vec<u8>)> = sqlx::query_as(
        "SELECT patient_id, master_key_id, wrapped_key FROM patient_keys \
          WHERE wrapped_key IS NOT NULL AND master_key_id <> $1",
    )
    .bind(ring.current_id())
    .fetch_all(&mut *conn)
    .await?;
    let mut done = 0;
    for (patient, master_id, wrapped) in rows {
        let key = ring.unwrap(&master_id, &wrapped, patient)?;
        let (new_id, rewrapped) = ring.wrap(&key, patient)?;
        done += sqlx::query(
            "UPDATE patient_keys SET master_key_id = $2, wrapped_key = $3 \
              WHERE patient_id = $1 AND master_key_id = $4",
        )
        .bind(patient)
        .bind(&new_id)
        .bind(&rewrapped)
        .bind(&master_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(id: &str) -> Record<'_> {
        Record {
            aggregate_type: "patient",
            aggregate_id: id,
            sequence: 1,
            event_type: "PatientRegistered",
        }
    }

    fn keys_with(patient: Uuid, key: Option<Key>) -> Keys {
        let state = match key {
            Some(key) => KeyState::Present(key),
            None => KeyState::Destroyed,
        };
        Keys {
            keys: HashMap::from([(patient, state)]),
        }
    }

    fn sealed_registration(patient: Uuid, key: &Key) -> Value {
        let mut payload = json!({ "PatientRegistered": {
            "patient_id": patient, "mrn": "H-000001",
            "demographics": { "given_name": "Amina", "middle_name": null, "family_name": "Otieno",
                              "date_of_birth": "1990-04-12", "sex": "FEMALE",
                              "phone": "+254700000001", "email": null },
            "allergies": [{ "substance": "penicillin", "reaction": "rash", "severity": "MILD" }],
            "alerts": [{ "alert_id": patient, "text": "hard of hearing" }] } });
        let id = patient.to_string();
        let record = Record {
            aggregate_type: "patient",
            aggregate_id: &id,
            sequence: 1,
            event_type: "PatientRegistered",
        };
        let body = variant_mut(&mut payload, "PatientRegistered").expect("variant");
        for spec in specs_for("patient", "PatientRegistered") {
            let mut objects = Vec::new();
            objects_at(body, spec.path, &mut objects);
            for object in objects {
                seal_object(object, spec.fields, patient, key, &record).expect("sealed");
            }
        }
        payload
    }

    #[test]
    fn sealed_fields_leave_the_payload_and_come_back_with_the_key() {
        let patient = Uuid::from_u128(7);
        let key = Key::random();
        let sealed = sealed_registration(patient, &key);
        let text = sealed.to_string();
        for secret in [
            "Amina",
            "Otieno",
            "+254700000001",
            "rash",
            "hard of hearing",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        // What the system works by stays in clear.
        for clear in ["1990-04-12", "FEMALE", "penicillin", "H-000001"] {
            assert!(text.contains(clear), "{clear} missing from {text}");
        }
        let mut opened = sealed.clone();
        keys_with(patient, Some(key))
            .unseal(rec(&patient.to_string()), &mut opened)
            .expect("opens");
        let d = &opened["PatientRegistered"]["demographics"];
        assert_eq!(d["family_name"], "Otieno");
        assert_eq!(d["phone"], "+254700000001");
        assert_eq!(d["email"], Value::Null);
        assert_eq!(
            opened["PatientRegistered"]["alerts"][0]["text"],
            "hard of hearing"
        );
        assert!(!opened.to_string().contains(SEALED));
    }

    #[test]
    fn without_the_key_the_fields_read_as_erased() {
        let patient = Uuid::from_u128(7);
        let mut payload = sealed_registration(patient, &Key::random());
        keys_with(patient, None)
            .unseal(rec(&patient.to_string()), &mut payload)
            .expect("erased reads");
        let d = &payload["PatientRegistered"]["demographics"];
        assert_eq!(d["family_name"], ERASED);
        assert_eq!(d["given_name"], ERASED);
        assert_eq!(
            d["phone"],
            Value::Null,
            "a phone number has no placeholder text"
        );
        assert_eq!(d["middle_name"], Value::Null, "absent stays absent");
        assert_eq!(
            payload["PatientRegistered"]["allergies"][0]["reaction"],
            ERASED
        );
        assert_eq!(
            payload["PatientRegistered"]["allergies"][0]["substance"],
            "penicillin"
        );
    }

    #[test]
    fn a_sealed_value_opens_only_on_its_own_record_with_its_own_key() {
        let patient = Uuid::from_u128(7);
        let key = Key::random();
        let sealed = sealed_registration(patient, &key);
        let mut moved = sealed.clone();
        assert!(keys_with(patient, Some(key.clone()))
            .check(rec(&Uuid::from_u128(8).to_string()), &mut moved)
            .is_err());
        let mut wrong = sealed.clone();
        assert!(keys_with(patient, Some(Key::random()))
            .check(rec(&patient.to_string()), &mut wrong)
            .is_err());
        let mut tampered = sealed;
        let c = tampered["PatientRegistered"]["demographics"][SEALED]["c"]
            .as_str()
            .expect("ciphertext")
            .to_owned();
        let mut bytes = B64.decode(c).expect("base64");
        bytes[0] ^= 1;
        tampered["PatientRegistered"]["demographics"][SEALED]["c"] =
            Value::String(B64.encode(bytes));
        assert!(keys_with(patient, Some(key.clone()))
            .check(rec(&patient.to_string()), &mut tampered.clone())
            .is_err());
        // Readers are not stopped by it: the damaged value reads as erased.
        keys_with(patient, Some(key))
            .unseal(rec(&patient.to_string()), &mut tampered)
            .expect("read on");
        assert_eq!(
            tampered["PatientRegistered"]["demographics"]["family_name"],
            ERASED
        );
    }

    #[test]
    fn data_keys_wrap_under_the_master_key_and_rotate() {
        let old = Keyring::from_base64(&B64.encode([1u8; 32]), &[]).expect("key");
        let patient = Uuid::from_u128(9);
        let key = Key::random();
        let (id, wrapped) = old.wrap(&key, patient).expect("wrapped");
        assert_eq!(
            old.unwrap(&id, &wrapped, patient).expect("unwraps").0,
            key.0
        );
        assert!(
            old.unwrap(&id, &wrapped, Uuid::from_u128(10)).is_err(),
            "bound to the patient"
        );
        let new =
            Keyring::from_base64(&B64.encode([2u8; 32]), &[B64.encode([1u8; 32])]).expect("keys");
        assert_ne!(new.current_id(), id);
        assert_eq!(
            new.unwrap(&id, &wrapped, patient).expect("previous key").0,
            key.0
        );
        let only_new = Keyring::from_base64(&B64.encode([2u8; 32]), &[]).expect("key");
        assert!(only_new.unwrap(&id, &wrapped, patient).is_err());
        assert!(Keyring::from_base64("not base64!", &[]).is_err());
        assert!(Keyring::from_base64(&B64.encode([1u8; 16]), &[]).is_err());
    }
}
