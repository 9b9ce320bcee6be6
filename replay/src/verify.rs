//! `verify`: is the log intact and readable?
//!
//! One pass over the log in commit order (constant memory apart from the problems
//! found) checks each event: it decodes with today's code, its metadata is complete,
//! and it is sealed where the sealer left it. Two chains are followed at once:
//!
//! - *links*: each event against its own seal, `SHA-256(previous seal || event)`. A row
//!   changed in place breaks exactly its own link, so the report names that row; a row
//!   deleted leaves a seal without an event; a row inserted behind the sealer has no
//!   seal; a row moved in commit order meets its seal out of turn.
//! - *the recomputed chain*, from the events alone: it must pass through the head
//!   recorded in the platform database. This catches what rewriting the seals along
//!   with the events would hide, and a truncated tail. Sealed events with no recorded
//!   head at all are a finding of their own (`head-missing`): nothing outside the
//!   hospital's database vouches for such a chain.
//!
//! A link that does not hold is judged at the next seal, so that a seal row changed or
//! removed by hand is reported once, at the seal, and nothing against untouched events:
//! if the next seal links from the stored one, the event was changed (`altered`); if it
//! links from the hash the event gives, the seal was (`seal-chain-broken`). Events
//! without a seal that the next seal's chain skips exactly, and links through, were
//! sealed and lost their seal rows. At the end of the chain the recorded head decides:
//! where the events still recompute to it, every event up to it is as sealed.
//!
//! Per-record sequences are checked by the database (a window over the primary key),
//! so they cost no memory here.

use std::collections::HashMap;
use std::io::Write;

use chrono::SecondsFormat;
use hms_app::state::Platform;
use hms_projections::log::{self, LogCursor};
use hms_projections::projectors::seal::{
    self, chain_hash, hex_digest, to_digest, RecordedHead, SealEncodings, SealHead, GENESIS,
};
use hms_projections::projectors::LogSealer;
use hms_projections::{Projector, StoredEvent};
use sqlx::PgConnection;

use crate::cli::VerifyArgs;
use crate::{kinds, tenant, Outcome, Result};

/// Metadata every event must carry (see `hms_domain::EventMetadata`); `client_addr` is
/// optional (work done by the platform itself has none).
pub const REQUIRED_METADATA: [&str; 6] = [
    "actor_id",
    "actor_username",
    "actor_role",
    "tenant",
    "request_id",
    "at",
];

const BATCH: i64 = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProblemKind {
    /// The event does not decode with today's code (after upcasting).
    Undecodable,
    /// No aggregate of the domain has this type.
    UnknownAggregateType,
    /// A record's sequence does not start at 1 or skips a number.
    SequenceGap,
    /// Required metadata is missing, or names another hospital.
    BadMetadata,
    /// The event differs from what was sealed (changed in place).
    Altered,
    /// A sealed event is no longer in the log.
    Deleted,
    /// An event the sealer should have seen has no seal: inserted behind its back.
    Inserted,
    /// A sealed event appears at another place in commit order.
    Reordered,
    /// The seals themselves do not form one chain (a seal removed or changed).
    SealChainBroken,
    /// The chain recomputed from the events does not pass through the recorded head.
    HeadMismatch,
    /// The recorded head's event is not in the log: the tail was cut off.
    Truncated,
    /// Events are sealed but the platform database records no head for the hospital:
    /// the head row was removed (or never recorded), so a chain rewritten with its seals
    /// could not be told from the original.
    HeadMissing,
}

impl ProblemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Undecodable => "undecodable",
            ProblemKind::UnknownAggregateType => "unknown-aggregate-type",
            ProblemKind::SequenceGap => "sequence-gap",
            ProblemKind::BadMetadata => "bad-metadata",
            ProblemKind::Altered => "altered",
            ProblemKind::Deleted => "deleted",
            ProblemKind::Inserted => "inserted",
            ProblemKind::Reordered => "reordered",
            ProblemKind::SealChainBroken => "seal-chain-broken",
            ProblemKind::HeadMismatch => "head-mismatch",
            ProblemKind::Truncated => "truncated",
            ProblemKind::HeadMissing => "head-missing",
        }
    }
}

/// One thing wrong with the log, at an event position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub position: i64,
    pub kind: ProblemKind,
    pub detail: String,
}

/// What `verify` found in one hospital's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantReport {
    pub code: String,
    /// Events read (those of transactions still in flight are left for next time).
    pub events: u64,
    /// Events matched to a seal.
    pub sealed: u64,
    /// Events after the sealer's checkpoint: written, not sealed yet.
    pub unsealed_tail: u64,
    /// The chain recomputed from the events alone, at the last event read.
    pub recomputed_head: Option<SealHead>,
    /// The head recorded in the platform database.
    pub recorded: Option<RecordedHead>,
    /// Sorted by position, then kind.
    pub problems: Vec<Problem>,
}

pub async fn run(
    platform: &Platform,
    args: &VerifyArgs,
    out: &mut (dyn Write + Send),
) -> Result<Outcome> {
    let codes = tenant::targets(platform, args.hospital.as_deref(), args.all).await?;
    let mut problems = 0;
    for code in &codes {
        let report = verify_tenant(platform, code).await?;
        write_report(out, &report)?;
        problems += report.problems.len();
    }
    if args.all {
        writeln!(
            out,
            "{} hospitals verified, {problems} problems",
            codes.len()
        )?;
    }
    Ok(if problems == 0 {
        Outcome::Clean
    } else {
        Outcome::ProblemsFound(problems)
    })
}

fn write_report(out: &mut (dyn Write + Send), r: &TenantReport) -> Result<()> {
    for p in &r.problems {
        writeln!(
            out,
            "{} position {}: {}: {}",
            r.code,
            p.position,
            p.kind.as_str(),
            p.detail
        )?;
    }
    writeln!(
        out,
        "{}: {} events, {} sealed, {} not sealed yet",
        r.code, r.events, r.sealed, r.unsealed_tail
    )?;
    match &r.recomputed_head {
        Some(head) => writeln!(
            out,
            "{}: head digest {} (chain index:position:sha256, recomputed from the events)",
            r.code,
            head.digest()
        )?,
        None => writeln!(out, "{}: the log is empty", r.code)?,
    }
    match &r.recorded {
        Some(rec) => writeln!(
            out,
            "{}: recorded head {} at {}",
            r.code,
            rec.head.digest(),
            rec.sealed_at.to_rfc3339_opts(SecondsFormat::Secs, true)
        )?,
        None => writeln!(out, "{}: no head recorded in the platform database", r.code)?,
    }
    if r.problems.is_empty() {
        writeln!(out, "{}: OK", r.code)?;
    } else {
        writeln!(out, "{}: {} PROBLEMS", r.code, r.problems.len())?;
    }
    Ok(())
}

/// Verifies one hospital's log (see the module docs).
pub async fn verify_tenant(platform: &Platform, code: &str) -> Result<TenantReport> {
    let recorded = seal::recorded_head(&platform.control, code).await?;
    // Events name the hospital by the code its log knows (another than the directory's
    // for a hospital restored under a new code).
    let identity = platform
        .directory
        .get(code)
        .await?
        .map(|r| r.log_identity().to_owned())
        .unwrap_or_else(|| code.to_owned());
    let tenant = tenant::open(platform, code).await?;
    let result = async {
        let mut conn = tenant.acquire().await?;
        let mut report = Verifier::new(&identity, recorded).run(&mut conn).await?;
        report.code = code.to_owned();
        if recorded.is_none() {
            if let Some(sealed) = seal::sealed_head(&mut conn).await? {
                report.problems.push(Problem {
                    position: sealed.position,
                    kind: ProblemKind::HeadMissing,
                    detail: format!(
                        "{} events are sealed (newest seal {}) but the platform database \
                         records no head: nothing outside this database vouches for the \
                         chain (the head row was removed, or never recorded); once the log \
                         is known to be good, record one with `hms-replay seal --hospital \
                         {code} --accept-missing-head`",
                        sealed.chain_index,
                        sealed.digest()
                    ),
                });
                report.problems.sort_by_key(|p| (p.position, p.kind));
            }
        }
        Ok(report)
    }
    .await;
    tenant.close().await;
    result
}

/// A seal as the reader hands it out: with the hash of the seal read before it.
#[derive(Debug, Clone)]
struct Link {
    chain_index: i64,
    position: i64,
    /// The position of the event sealed before, as this seal records it.
    prev_position: Option<i64>,
    prev_hash: [u8; 32],
    hash: [u8; 32],
    /// The seal read before this one (chain index, position); `(0, None)` for the first.
    after_index: i64,
    after_position: Option<i64>,
}

impl Link {
    /// The seal does not follow the one read before it: seals were removed, inserted or
    /// rewritten in between.
    fn broken(&self) -> bool {
        self.chain_index != self.after_index + 1 || self.prev_position != self.after_position
    }
}

/// Streams `event_seals` in chain order.
struct SealReader {
    buffer: std::collections::VecDeque<(i64, i64, Option<i64>, Vec<u8>)>,
    after: i64,
    exhausted: bool,
    last: Option<(i64, i64, [u8; 32])>,
}

impl SealReader {
    fn new() -> Self {
        Self {
            buffer: Default::default(),
            after: 0,
            exhausted: false,
            last: None,
        }
    }

    async fn fill(&mut self, conn: &mut PgConnection) -> Result<()> {
        if self.buffer.is_empty() && !self.exhausted {
            let rows: Vec<(i64, i64, Option<i64>, Vec<u8>)> = sqlx::query_as(
                "SELECT chain_index, position, prev_position, chain_hash FROM public.event_seals \
                  WHERE chain_index > $1 ORDER BY chain_index LIMIT $2",
            )
            .bind(self.after)
            .bind(BATCH)
            .fetch_all(&mut *conn)
            .await?;
            self.exhausted = (rows.len() as i64) < BATCH;
            if let Some(last) = rows.last() {
                self.after = last.0;
            }
            self.buffer.extend(rows);
        }
        Ok(())
    }

    async fn peek(&mut self, conn: &mut PgConnection) -> Result<Option<(i64, i64)>> {
        self.fill(conn).await?;
        Ok(self.buffer.front().map(|r| (r.0, r.1)))
    }

    async fn next(&mut self, conn: &mut PgConnection) -> Result<Option<Link>> {
        self.fill(conn).await?;
        let Some((chain_index, position, prev_position, hash)) = self.buffer.pop_front() else {
            return Ok(None);
        };
        let hash = to_digest(&hash);
        let (after_index, after_position, prev_hash) = match self.last {
            Some((i, p, h)) => (i, Some(p), h),
            None => (0, None, GENESIS),
        };
        self.last = Some((chain_index, position, hash));
        Ok(Some(Link {
            chain_index,
            position,
            prev_position,
            prev_hash,
            hash,
            after_index,
            after_position,
        }))
    }
}

/// An event whose seal does not match it. Whether the event or its seal was changed is
/// only known at the next seal: if that one links from the stored seal, the event was
/// changed; if it links from the hash the event gives, the seal was.
#[derive(Debug, Clone)]
struct Suspect {
    position: i64,
    chain_index: i64,
    /// `SHA-256(previous seal || this event)`: what the seal would hold were the event
    /// unchanged.
    derived: [u8; 32],
    /// The report should the event turn out to be the one changed.
    altered: String,
}

/// An event without a seal at a place the sealer has passed: inserted behind its back,
/// or sealed and its seal row removed. The next seal settles it: a seal whose chain skips
/// exactly these events, and links from the hash they give, proves the events were
/// sealed as they are.
#[derive(Debug, Clone)]
struct Unsealed {
    position: i64,
    /// The event's number in the log (1, 2, 3 … in commit order).
    number: u64,
    /// The chain through this event, from the last seal read before it.
    derived: [u8; 32],
    /// The report should the event turn out to have been inserted.
    inserted: String,
}

struct Verifier<'a> {
    code: &'a str,
    recorded: Option<RecordedHead>,
    upcasters: Vec<Box<dyn cqrs_es::persist::EventUpcaster>>,
    problems: Vec<Problem>,
    seals: SealReader,
    /// Seals passed over because their event was not where the chain expected it:
    /// deleted, or moved later in commit order. Keyed by position.
    pending: HashMap<i64, Link>,
    /// Where the sealer has got to: an unsealed event at or before it was inserted
    /// behind the sealer's back; after it, it is simply not sealed yet.
    checkpoint: LogCursor,
    /// The encoding of each stretch of the chain, as the tenant database records it. A
    /// forged entry changes the recomputed links, so it shows as altered events.
    encodings: SealEncodings,
    recomputed: [u8; 32],
    events: u64,
    sealed: u64,
    unsealed_tail: u64,
    head_seen: bool,
    /// The event number of the recorded head, once met, and whether the chain recomputed
    /// from the events passed through it: then every event up to it is as sealed, and a
    /// seal that disagrees there is the one changed.
    head_number: Option<u64>,
    head_matched: bool,
    suspect: Option<Suspect>,
    unsealed_run: Vec<Unsealed>,
}

impl<'a> Verifier<'a> {
    fn new(code: &'a str, recorded: Option<RecordedHead>) -> Self {
        Self {
            code,
            recorded,
            upcasters: hms_domain::upcasters(),
            problems: Vec::new(),
            seals: SealReader::new(),
            pending: HashMap::new(),
            checkpoint: LogCursor::START,
            encodings: SealEncodings::default(),
            recomputed: GENESIS,
            events: 0,
            sealed: 0,
            unsealed_tail: 0,
            head_seen: false,
            head_number: None,
            head_matched: false,
            suspect: None,
            unsealed_run: Vec::new(),
        }
    }

    async fn run(mut self, conn: &mut PgConnection) -> Result<TenantReport> {
        self.checkpoint = sealer_checkpoint(conn).await?;
        self.encodings = SealEncodings::load(conn).await?;
        self.check_sequences(conn).await?;
        let mut cursor = LogCursor::START;
        let mut last_position = None;
        loop {
            let batch = log::read_batch(conn, cursor, BATCH).await?;
            let Some(last) = batch.last() else { break };
            cursor = last.cursor();
            // Decoding is checked on the events as readers see them (sealed personal
            // data opened, or erased); the chain on the stored bytes.
            let opened = open_batch(conn, &batch).await;
            for (event, opened) in batch.iter().zip(opened) {
                self.check_event(event, opened);
                self.match_seal(conn, event).await?;
                last_position = Some(event.position);
            }
        }
        self.finish(conn).await?;
        let mut problems = std::mem::take(&mut self.problems);
        problems.sort_by_key(|p| (p.position, p.kind));
        problems.dedup();
        Ok(TenantReport {
            code: self.code.to_owned(),
            events: self.events,
            sealed: self.sealed,
            unsealed_tail: self.unsealed_tail,
            recomputed_head: last_position.map(|position| SealHead {
                chain_index: i64::try_from(self.events).unwrap_or(i64::MAX),
                position,
                chain_hash: self.recomputed,
            }),
            recorded: self.recorded,
            problems,
        })
    }

    fn problem(&mut self, position: i64, kind: ProblemKind, detail: String) {
        self.problems.push(Problem {
            position,
            kind,
            detail,
        });
    }

    /// Decoding, metadata and the recomputed chain.
    fn check_event(
        &mut self,
        event: &StoredEvent,
        opened: std::result::Result<StoredEvent, String>,
    ) {
        self.events += 1;
        let position = event.position;
        let opened = match opened {
            Ok(opened) => Some(opened),
            Err(e) => {
                self.problem(position, ProblemKind::Undecodable, e);
                None
            }
        };
        match kinds::find(&event.aggregate_type) {
            None => self.problem(
                position,
                ProblemKind::UnknownAggregateType,
                format!(
                    "aggregate type '{}' is not one of: {}",
                    event.aggregate_type,
                    kinds::known()
                ),
            ),
            Some(kind) => {
                if let Some(opened) = &opened {
                    if let Err(e) = (kind.check)(opened, &self.upcasters) {
                        self.problem(position, ProblemKind::Undecodable, e.to_string());
                    }
                }
            }
        }
        let missing: Vec<&str> = REQUIRED_METADATA
            .into_iter()
            .filter(|key| event.meta(key).is_none_or(str::is_empty))
            .collect();
        if !missing.is_empty() {
            self.problem(
                position,
                ProblemKind::BadMetadata,
                format!("metadata lacks {}", missing.join(", ")),
            );
        }
        if let Some(tenant) = event.meta("tenant") {
            if tenant != self.code {
                self.problem(
                    position,
                    ProblemKind::BadMetadata,
                    format!("metadata names hospital {tenant}, not {}", self.code),
                );
            }
        }
        // The chain recomputed from the events alone: this event is number `events` in it.
        let index = i64::try_from(self.events).unwrap_or(i64::MAX);
        self.recomputed = chain_hash(&self.recomputed, event, self.encodings.at(index));
        if let Some(recorded) = self.recorded {
            if recorded.head.position == position && !self.head_seen {
                self.head_seen = true;
                self.head_number = Some(self.events);
                self.head_matched = recorded.head.chain_hash == self.recomputed;
                if !self.head_matched {
                    self.problem(
                        position,
                        ProblemKind::HeadMismatch,
                        format!(
                            "the chain recomputed from the events reaches {} here, but the \
                             platform database recorded {}: the log up to here was changed",
                            hex_digest(&self.recomputed),
                            recorded.head.digest()
                        ),
                    );
                }
            }
        }
    }

    /// Finds the event's seal, or says why there is none.
    async fn match_seal(&mut self, conn: &mut PgConnection, event: &StoredEvent) -> Result<()> {
        let position = event.position;
        if let Some(link) = self.pending.remove(&position) {
            self.problem(
                position,
                ProblemKind::Reordered,
                format!(
                    "sealed as event number {} but found later in commit order",
                    link.chain_index
                ),
            );
            self.check_moved_link(&link, event);
            return Ok(());
        }
        loop {
            let Some((next_index, next_position)) = self.seals.peek(conn).await? else {
                self.unsealed(event);
                return Ok(());
            };
            if next_position == position {
                if let Some(link) = self.seals.next(conn).await? {
                    self.check_link(&link, event);
                }
                return Ok(());
            }
            let found: Option<i64> = sqlx::query_scalar(
                "SELECT chain_index FROM public.event_seals WHERE position = $1",
            )
            .bind(position)
            .fetch_optional(&mut *conn)
            .await?;
            match found {
                None => {
                    self.unsealed(event);
                    return Ok(());
                }
                Some(index) if index > next_index => {
                    // The seals in between have no event here: deleted, or further on.
                    while let Some((i, _)) = self.seals.peek(conn).await? {
                        if i >= index {
                            break;
                        }
                        if let Some(link) = self.seals.next(conn).await? {
                            self.report_broken(&link);
                            self.pending.insert(link.position, link);
                        }
                    }
                }
                Some(index) => {
                    self.problem(
                        position,
                        ProblemKind::Inserted,
                        format!(
                            "a second event with position {position} (seal number {index} \
                             belongs to the first)"
                        ),
                    );
                    return Ok(());
                }
            }
        }
    }

    /// Reports a seal that does not follow the one read before it.
    fn report_broken(&mut self, link: &Link) {
        if link.broken() {
            self.problem(
                link.position,
                ProblemKind::SealChainBroken,
                format!(
                    "seal number {} follows seal number {} (position {}): \
                     seals were removed or rewritten",
                    link.chain_index,
                    link.after_index,
                    link.after_position
                        .map_or("none".to_owned(), |p| p.to_string()),
                ),
            );
        }
    }

    fn altered_detail(event: &StoredEvent, chain_index: i64) -> String {
        format!(
            "{}/{} #{} {} differs from what was sealed as event number {chain_index}",
            event.aggregate_type, event.aggregate_id, event.sequence, event.event_type,
        )
    }

    /// A seal met out of commit order (already reported as reordered): its own link.
    fn check_moved_link(&mut self, link: &Link, event: &StoredEvent) {
        self.sealed += 1;
        let encoding = self.encodings.at(link.chain_index);
        if !link.broken() && chain_hash(&link.prev_hash, event, encoding) != link.hash {
            let detail = Self::altered_detail(event, link.chain_index);
            self.problem(event.position, ProblemKind::Altered, detail);
        }
    }

    /// The seal of `event`, met in chain order. A mismatch is judged one seal later (see
    /// [`Suspect`]), and events left without a seal just before are judged here (see
    /// [`Unsealed`]), so that a changed or removed seal row is reported as such, at the
    /// seal, and not as changed or inserted events.
    fn check_link(&mut self, link: &Link, event: &StoredEvent) {
        self.sealed += 1;
        let encoding = self.encodings.at(link.chain_index);
        let run = std::mem::take(&mut self.unsealed_run);
        let skipped_exactly_the_run = run.last().is_some_and(|last| {
            link.prev_position == Some(last.position)
                && link.chain_index == link.after_index + run.len() as i64 + 1
        });
        // The hash this seal must build on.
        let prev = if !link.broken() {
            self.settle_as_inserted(run);
            link.prev_hash
        } else if skipped_exactly_the_run {
            let derived = run.last().map_or(link.prev_hash, |last| last.derived);
            for (i, unsealed) in run.into_iter().enumerate() {
                self.problem(
                    unsealed.position,
                    ProblemKind::SealChainBroken,
                    format!(
                        "the row of seal number {} was removed: the seal after it names this \
                         event, and the chain through the event still reaches it",
                        link.after_index + i as i64 + 1
                    ),
                );
            }
            derived
        } else {
            self.settle_as_inserted(run);
            self.report_broken(link);
            if let Some(suspect) = self.suspect.take() {
                self.problem(suspect.position, ProblemKind::Altered, suspect.altered);
            }
            return;
        };
        let derived = chain_hash(&prev, event, encoding);
        let holds = derived == link.hash;
        if let Some(suspect) = self.suspect.take() {
            if holds {
                // The chain goes on from the stored seal: the event before was changed.
                self.problem(suspect.position, ProblemKind::Altered, suspect.altered);
                return;
            }
            if link.prev_position == Some(suspect.position)
                && chain_hash(&suspect.derived, event, encoding) == link.hash
            {
                // The chain goes on from what the event gives: its seal was changed.
                self.problem(
                    suspect.position,
                    ProblemKind::SealChainBroken,
                    format!(
                        "the row of seal number {} was changed: it no longer holds the \
                         chain's hash, while the event and the seal after it still link",
                        suspect.chain_index
                    ),
                );
                return;
            }
            self.problem(suspect.position, ProblemKind::Altered, suspect.altered);
        }
        if !holds {
            self.suspect = Some(Suspect {
                position: event.position,
                chain_index: link.chain_index,
                derived,
                altered: Self::altered_detail(event, link.chain_index),
            });
        }
    }

    fn settle_as_inserted(&mut self, run: Vec<Unsealed>) {
        for unsealed in run {
            self.problem(unsealed.position, ProblemKind::Inserted, unsealed.inserted);
        }
    }

    fn unsealed(&mut self, event: &StoredEvent) {
        if event.cursor() <= self.checkpoint {
            let (last_index, last_hash) = self.seals.last.map_or((0, GENESIS), |l| (l.0, l.2));
            let prev = self.unsealed_run.last().map_or(last_hash, |u| u.derived);
            let index = last_index + self.unsealed_run.len() as i64 + 1;
            self.unsealed_run.push(Unsealed {
                position: event.position,
                number: self.events,
                derived: chain_hash(&prev, event, self.encodings.at(index)),
                inserted: format!(
                    "{}/{} #{} {} has no seal although the sealer has passed its place: \
                     it was inserted behind the system's back",
                    event.aggregate_type, event.aggregate_id, event.sequence, event.event_type
                ),
            });
        } else {
            self.unsealed_tail += 1;
        }
    }

    async fn finish(&mut self, conn: &mut PgConnection) -> Result<()> {
        let mut missing: Vec<Link> = self.pending.drain().map(|(_, link)| link).collect();
        while let Some(link) = self.seals.next(conn).await? {
            self.report_broken(&link);
            missing.push(link);
        }
        missing.sort_by_key(|l| l.chain_index);
        for link in missing {
            self.problem(
                link.position,
                ProblemKind::Deleted,
                format!(
                    "sealed as event number {}, but no longer in the log",
                    link.chain_index
                ),
            );
        }
        // What the last seals leave open is settled by the recorded head: if the chain
        // recomputed from the events passes through it, every event up to it is as sealed.
        let covered = |number: u64, head: Option<u64>, matched: bool| {
            matched && head.is_some_and(|n| number <= n)
        };
        if let Some(suspect) = self.suspect.take() {
            let head_seal = self.recorded.is_some_and(|r| {
                self.head_matched
                    && r.head.chain_index == suspect.chain_index
                    && r.head.position == suspect.position
                    && r.head.chain_hash == suspect.derived
            });
            if head_seal {
                self.problem(
                    suspect.position,
                    ProblemKind::SealChainBroken,
                    format!(
                        "the row of seal number {} was changed: the events still recompute \
                         to the head recorded in the platform database",
                        suspect.chain_index
                    ),
                );
            } else {
                self.problem(suspect.position, ProblemKind::Altered, suspect.altered);
            }
        }
        for unsealed in std::mem::take(&mut self.unsealed_run) {
            if covered(unsealed.number, self.head_number, self.head_matched) {
                self.problem(
                    unsealed.position,
                    ProblemKind::SealChainBroken,
                    "its seal row was removed: the chain recomputed from the events still \
                     passes through the head recorded in the platform database"
                        .to_owned(),
                );
            } else {
                self.problem(unsealed.position, ProblemKind::Inserted, unsealed.inserted);
            }
        }
        let Some(recorded) = self.recorded else {
            return Ok(());
        };
        if !self.head_seen {
            self.problem(
                recorded.head.position,
                ProblemKind::Truncated,
                format!(
                    "the head recorded in the platform database ({}) is not in the log: \
                     the log was cut short or that event deleted",
                    recorded.head.digest()
                ),
            );
        }
        let seal_at_head: Option<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT position, chain_hash FROM public.event_seals WHERE chain_index = $1",
        )
        .bind(recorded.head.chain_index)
        .fetch_optional(&mut *conn)
        .await?;
        let intact = matches!(&seal_at_head, Some((p, h))
            if *p == recorded.head.position && h.as_slice() == recorded.head.chain_hash);
        if intact {
            return Ok(());
        }
        if !self.head_matched {
            self.problem(
                recorded.head.position,
                ProblemKind::HeadMismatch,
                format!(
                    "the seals no longer hold the recorded head {} as seal number {}",
                    recorded.head.digest(),
                    recorded.head.chain_index
                ),
            );
        } else if !self
            .problems
            .iter()
            .any(|p| p.position == recorded.head.position && p.kind == ProblemKind::SealChainBroken)
        {
            self.problem(
                recorded.head.position,
                ProblemKind::SealChainBroken,
                format!(
                    "the seals no longer hold the recorded head {} as seal number {}, \
                     though the events still recompute to it: the seals were changed",
                    recorded.head.digest(),
                    recorded.head.chain_index
                ),
            );
        }
        Ok(())
    }

    /// Sequences per record start at 1 and have no gaps; the database walks the
    /// primary key and returns only the offenders.
    async fn check_sequences(&mut self, conn: &mut PgConnection) -> Result<()> {
        let gaps = log::sequence_gaps(conn).await?;
        for gap in gaps {
            let expected = gap.prev.map_or(1, |p| p + 1);
            self.problem(
                gap.position,
                ProblemKind::SequenceGap,
                format!(
                    "{}/{} has event #{} where #{expected} was expected",
                    gap.aggregate_type, gap.aggregate_id, gap.sequence
                ),
            );
        }
        Ok(())
    }
}

async fn sealer_checkpoint(conn: &mut PgConnection) -> Result<LogCursor> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT last_transaction_id::text::bigint, last_position \
           FROM public.projection_checkpoints WHERE projector = $1",
    )
    .bind(LogSealer.name())
    .fetch_optional(conn)
    .await?;
    Ok(
        row.map_or(LogCursor::START, |(transaction_id, position)| LogCursor {
            transaction_id,
            position,
        }),
    )
}

/// The batch with sealed personal data opened, event by event: an event whose sealed
/// data does not open (altered, or sealed under a master key this process lacks) is a
/// problem of its own, not the end of the check.
async fn open_batch(
    conn: &mut PgConnection,
    batch: &[StoredEvent],
) -> Vec<std::result::Result<StoredEvent, String>> {
    use hms_projections::personal;
    let mut patients = Vec::new();
    for event in batch
        .iter()
        .filter(|e| personal::has_sealed(e.payload.get()))
    {
        if let Ok(mut payload) = event.payload_value() {
            patients.extend(personal::sealed_patients(&mut payload));
        }
    }
    let keys = if patients.is_empty() {
        None
    } else {
        Some(
            personal::Keys::load(conn, patients)
                .await
                .map_err(|e| e.to_string()),
        )
    };
    batch
        .iter()
        .map(|event| {
            if !personal::has_sealed(event.payload.get()) {
                return Ok(event.clone());
            }
            let keys = match &keys {
                Some(Ok(keys)) => keys,
                Some(Err(e)) => return Err(format!("sealed personal data: {e}")),
                None => return Ok(event.clone()),
            };
            let mut payload = event.payload_value().map_err(|e| e.to_string())?;
            let record = personal::Record {
                aggregate_type: &event.aggregate_type,
                aggregate_id: &event.aggregate_id,
                sequence: event.sequence,
                event_type: &event.event_type,
            };
            keys.check(record, &mut payload)
                .map_err(|e| format!("sealed personal data does not open: {e}"))?;
            let mut opened = event.clone();
            opened.payload =
                serde_json::value::to_raw_value(&payload).map_err(|e| e.to_string())?;
            Ok(opened)
        })
        .collect()
}
