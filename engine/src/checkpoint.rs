//! Checkpoints: restarting a job without replaying all of history.
//!
//! Design note: `papers/notes/20261124-exactly-once.md`. In short:
//!
//! 1. **What is saved.** Per input partition, a *part*: the partition's next offset, its
//!    [`TimeAssigner`](crate::TimeAssigner) state, and every update the partition's records have
//!    produced so far, consolidated. The pipeline's decoder normalizes each record into
//!    `(data, diff)` ([`Context::durable_input`](crate::Context::durable_input)), so that a like and
//!    its unlike cancel and the part stays the size of the *state*, not of the history.
//! 2. **Compaction at a frontier `F`.** `F` is the output frontier when the part is cut: every
//!    output before `F` has been computed. The input's [`Retention`] says how far back the pipeline
//!    looks: with [`Retention::Collapse`] (no time-dependent operator) all times before `F` move to
//!    `F − 1`; with [`Retention::Window`] updates older than the window are dropped and the rest
//!    keep their exact times (a window by retraction needs them). Either way the accumulated input
//!    at every time `≥ F` is unchanged, so the outputs at every time `≥ F` are unchanged.
//! 3. **Only what changed.** A partition's state in a generation is a chain of parts: a base, then
//!    deltas holding the updates of the records read since the part before ([`PartName`]). A
//!    checkpoint encodes one delta per partition that changed and copies the rest of its chain
//!    (and the whole chain of a partition that did not) inside the store; a base is written again
//!    once the deltas outgrow it or the chain is 16 parts long, so the bytes written per checkpoint
//!    follow the records read since the last one, and a restore reads at most twice the state.
//!    Updates of one partition are a multiset, so a chain's parts concatenated, then compacted at
//!    the last part's frontier, are the state.
//! 4. **Atomicity.** Parts are objects (a PUT is atomic), named with their generation and `F`.
//!    Process 0 writes the generation's `MANIFEST` last, and only when every partition's chain is
//!    whole *and* every sink has durably written all times below the largest `F`. So a restart
//!    from any manifest finds the sink already past the point where the restored outputs become
//!    exact, and skips the (identical, by determinism) outputs the sink already holds.
//! 5. **Restore.** The newest manifest whose parts all pass their checksums is used; a damaged or
//!    missing one is reported and the previous one tried, then a full replay. A manifest of
//!    another pipeline, other time settings or another format is refused outright.
//! 6. **Pruning.** After a manifest is written, generations older than the `keep` newest
//!    manifests are deleted.
//!
//! Two codecs encode parts: [`Codec::Postcard`] (safe serde) and [`Codec::Abomonation`] (a
//! memory copy; fast, but unsound on bytes it did not write itself). Abomonation bytes are only
//! decoded after the part's CRC-32C has matched, the header has named the same codec and data
//! type, and the bytes have been copied to an aligned buffer: bytes this program wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use differential_dataflow::consolidation::consolidate_updates;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::source::{Offset, PartitionId};
use crate::time::Time;
use crate::Diff;

/// Version of the checkpoint format; a manifest of another version is refused.
pub const FORMAT: u32 = 1;

const PART_MAGIC: &[u8; 8] = b"KAPPAPT1";
const MANIFEST: &str = "MANIFEST";

/// How far back in time a pipeline looks at an input, which decides how a checkpoint may compact it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// Nothing downstream depends on *when* an update happened, only on the accumulated input
    /// (joins, reductions, iteration): times before the checkpoint's frontier are merged.
    Collapse,
    /// Downstream looks back at most `ms` (a window by retraction of that length): updates older
    /// than that are dropped, younger ones keep their exact times.
    Window {
        /// The window, in ms.
        ms: u64,
    },
}

/// How parts are encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Codec {
    /// Safe serde encoding (postcard).
    #[default]
    Postcard,
    /// abomonation's memory copy: only ever decoded from bytes this program wrote (see module docs).
    Abomonation,
}

impl Codec {
    fn tag(self) -> u8 {
        match self {
            Codec::Postcard => 1,
            Codec::Abomonation => 2,
        }
    }
}

/// Where and how often to checkpoint, and what identifies the job's checkpoints.
#[derive(Clone, Debug)]
pub struct CheckpointConfig {
    /// The object store holding the checkpoints.
    pub store: Arc<dyn ObjectStore>,
    /// The location's prefix inside the store.
    pub prefix: Path,
    /// The location as the user wrote it, for messages.
    pub location: String,
    /// How often to cut a checkpoint.
    pub every: Duration,
    /// The pipeline's name: checkpoints of another pipeline are refused.
    pub pipeline: String,
    /// The pipeline's version ([`crate::pipeline::Pipeline::version`]): checkpoints of another
    /// version are refused, so a changed pipeline never resumes from the old one's state.
    pub pipeline_version: u32,
    /// Settings that change record times or results (lateness, backfill granularity, inputs):
    /// checkpoints taken under other settings are refused.
    pub fingerprint: String,
    /// Part encoding.
    pub codec: Codec,
    /// Complete checkpoints to keep (at least 2, so a damaged newest one has a fallback).
    pub keep: usize,
}

/// Data that can be checkpointed: serde for the safe codec, abomonation for the fast one.
pub trait CheckpointData:
    differential_dataflow::Data + Serialize + DeserializeOwned + abomonation::Abomonation + Send
{
}
impl<T: differential_dataflow::Data + Serialize + DeserializeOwned + abomonation::Abomonation + Send> CheckpointData
    for T
{
}

/// A partition's updates as a part holds them.
pub type Updates<T> = Vec<(T, Time, Diff)>;

/// What a part says about its partition, besides the updates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartHeader {
    /// The pipeline's input name.
    pub input: String,
    /// The partition.
    pub partition: PartitionId,
    /// Where reading resumes: every record before it is in the part.
    pub next_offset: Option<Offset>,
    /// The partition's time assigner state: the largest timestamp seen...
    pub max_seen: Option<u64>,
    /// ...and the watermark its recorded idle advances had set (see [`crate::clock`]).
    #[serde(default)]
    pub floor: Time,
    /// The output frontier the part was compacted at.
    pub frontier: Time,
    /// The Rust type of the updates' data, so that a part is never decoded as another type.
    pub data_type: String,
    /// For [`Codec::Abomonation`] parts: the build and memory layout that wrote the body, which
    /// must be this program's exactly (set by [`encode_part`]).
    #[serde(default)]
    pub layout: Option<AbiLayout>,
    /// How many updates follow.
    pub updates: u64,
}

/// What abomonation's bytes depend on besides the data type's name: the compiler, the target, the
/// build, and the size and alignment of every type it lays out. A part is decoded with abomonation
/// only when all of them equal this program's (`type_name` alone is documented as neither unique
/// nor stable, and a CRC only says the bytes are the ones written, not who wrote them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbiLayout {
    /// `rustc --version` of the build.
    pub rustc: String,
    /// The target triple.
    pub target: String,
    /// An id of the engine's build: it changes whenever the engine is rebuilt.
    pub build: String,
    /// `size_of` and `align_of` of the data type...
    pub data: (usize, usize),
    /// ...and of one update `(data, time, diff)`.
    pub update: (usize, usize),
}

impl AbiLayout {
    /// This program's layout for data type `T`.
    pub fn of<T>() -> Self {
        AbiLayout {
            rustc: env!("KAPPA_RUSTC_VERSION").to_string(),
            target: env!("KAPPA_TARGET").to_string(),
            build: env!("KAPPA_BUILD_ID").to_string(),
            data: (std::mem::size_of::<T>(), std::mem::align_of::<T>()),
            update: (std::mem::size_of::<(T, Time, Diff)>(), std::mem::align_of::<(T, Time, Diff)>()),
        }
    }
}

/// Encodes a part: magic, header (JSON), codec, body, CRC-32C of everything before it.
pub fn encode_part<T: CheckpointData>(header: &PartHeader, updates: &[(T, Time, Diff)], codec: Codec) -> Vec<u8> {
    let mut header = header.clone();
    header.layout = (codec == Codec::Abomonation).then(AbiLayout::of::<T>);
    let header_json = serde_json::to_vec(&header).expect("part headers serialize");
    let mut out = Vec::with_capacity(64 + header_json.len() + updates.len() * 32);
    out.extend_from_slice(PART_MAGIC);
    out.extend_from_slice(&(header_json.len() as u32).to_le_bytes());
    out.extend_from_slice(&header_json);
    out.push(codec.tag());
    let body = match codec {
        Codec::Postcard => postcard::to_stdvec(updates).expect("checkpoint data serializes"),
        Codec::Abomonation => {
            let owned: Vec<(T, Time, Diff)> = updates.to_vec();
            let mut bytes = Vec::with_capacity(abomonation::measure(&owned));
            // SAFETY: encoding only reads `owned`; the bytes are decoded by `decode_part` alone,
            // after the checksum, codec and data type have been checked.
            #[allow(unsafe_code)]
            unsafe {
                abomonation::encode(&owned, &mut bytes).expect("writing to a Vec cannot fail");
            }
            bytes
        }
    };
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a part written by [`encode_part`]; any damage is an error naming `object` and the byte.
pub fn decode_part<T: CheckpointData>(object: &str, bytes: &[u8]) -> Result<(PartHeader, Updates<T>)> {
    let bad = |offset: usize, reason: &str| Error::Checkpoint {
        object: object.to_string(),
        reason: format!("damaged at byte {offset}: {reason}"),
    };
    if bytes.len() < PART_MAGIC.len() + 4 + 1 + 8 + 4 {
        return Err(bad(0, "too short to be a part"));
    }
    let (content, crc) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    if crc32c::crc32c(content) != stored {
        return Err(bad(content.len(), "CRC-32C mismatch"));
    }
    if &content[..8] != PART_MAGIC {
        return Err(bad(0, "not a kappa checkpoint part"));
    }
    let header_len = u32::from_le_bytes(content[8..12].try_into().expect("4 bytes")) as usize;
    let header_end =
        12usize.checked_add(header_len).filter(|&e| e + 9 <= content.len()).ok_or_else(|| bad(8, "header length"))?;
    let header: PartHeader =
        serde_json::from_slice(&content[12..header_end]).map_err(|e| bad(12, &format!("header: {e}")))?;
    let want_type = std::any::type_name::<T>();
    if header.data_type != want_type {
        return Err(bad(12, &format!("holds {} but this job reads {want_type}", header.data_type)));
    }
    let codec = content[header_end];
    let body_len = u64::from_le_bytes(content[header_end + 1..header_end + 9].try_into().expect("8 bytes")) as usize;
    let body = &content[header_end + 9..];
    if body.len() != body_len {
        return Err(bad(header_end + 1, "body length"));
    }
    let updates: Vec<(T, Time, Diff)> = match codec {
        1 => postcard::from_bytes(body).map_err(|e| bad(header_end + 9, &format!("postcard: {e}")))?,
        2 => {
            let ours = AbiLayout::of::<T>();
            if header.layout.as_ref() != Some(&ours) {
                let theirs = header.layout.as_ref().map_or("an unrecorded build".to_string(), |l| {
                    format!(
                        "rustc `{}`, target {}, build {}, sizes {:?}/{:?}",
                        l.rustc, l.target, l.build, l.data, l.update
                    )
                });
                return Err(bad(
                    12,
                    &format!(
                        "abomonation part written by {theirs}, not by this program (rustc `{}`, target {}, build {}, \
                         sizes {:?}/{:?}); abomonation parts are only read by the build that wrote them: restart with \
                         that build, or delete the checkpoint and use --checkpoint-codec postcard",
                        ours.rustc, ours.target, ours.build, ours.data, ours.update
                    ),
                ));
            }
            // Copy into u64-aligned storage: abomonation reads values in place.
            let mut aligned = vec![0u64; body.len().div_ceil(8)];
            let buffer: &mut [u8] = &mut bytemuck_bytes(&mut aligned)[..body.len()];
            buffer.copy_from_slice(body);
            // SAFETY: the CRC above matched, so these are the bytes `encode_part` wrote with this
            // codec for a type of this name (checked above), by this very build of the engine with
            // the same compiler, target, and size and alignment of the data and update types
            // (checked just above). A checkpoint location is trusted like the job's own memory: a
            // CRC detects damage, it does not authenticate (README, "Checkpoints").
            #[allow(unsafe_code)]
            let decoded = unsafe { abomonation::decode::<Vec<(T, Time, Diff)>>(buffer) };
            match decoded {
                Some((updates, [])) => updates.clone(),
                _ => return Err(bad(header_end + 9, "abomonation body does not decode")),
            }
        }
        other => return Err(bad(header_end, &format!("unknown codec {other}"))),
    };
    if updates.len() as u64 != header.updates {
        return Err(bad(header_end + 9, "update count"));
    }
    Ok((header, updates))
}

/// Views `u64`s as bytes (what `bytemuck::cast_slice_mut` does; one line is not worth a crate).
fn bytemuck_bytes(words: &mut [u64]) -> &mut [u8] {
    let len = words.len() * 8;
    // SAFETY: u8 has no alignment or validity requirements and the length covers exactly the words.
    #[allow(unsafe_code)]
    unsafe {
        std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len)
    }
}

/// Compacts one partition's updates at frontier `frontier` (see the module docs, point 2).
pub fn compact<T: Ord>(updates: &mut Vec<(T, Time, Diff)>, frontier: Time, retention: Retention) {
    match retention {
        Retention::Collapse => {
            if frontier > 0 {
                for (_, time, _) in updates.iter_mut() {
                    if *time < frontier {
                        *time = frontier - 1;
                    }
                }
            }
        }
        Retention::Window { ms } => updates.retain(|(_, time, _)| time.saturating_add(ms) >= frontier),
    }
    consolidate_updates(updates);
}

/// The manifest of one complete checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The engine version that wrote it.
    pub engine: String,
    /// The pipeline.
    pub pipeline: String,
    /// The pipeline's version (manifests written before versions existed say 1).
    #[serde(default = "first_version")]
    pub pipeline_version: u32,
    /// The job's settings fingerprint.
    pub fingerprint: String,
    /// The generation.
    pub generation: u64,
    /// The largest compaction frontier among the parts.
    pub frontier: Time,
    /// The part objects, relative to the generation's directory.
    pub parts: Vec<String>,
}

fn first_version() -> u32 {
    1
}

/// A checkpoint loaded for a restart: raw parts by input and partition, decoded by the inputs.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    /// The generation restored.
    pub generation: u64,
    /// The largest compaction frontier among its parts.
    pub frontier: Time,
    /// Each partition's chain of parts by `(input, partition)`, base first then its deltas (see
    /// [`PartName`]), each with its object name for messages.
    pub parts: BTreeMap<(String, PartitionId), Vec<(String, Bytes)>>,
}

fn generation_dir(prefix: &Path, generation: u64) -> Path {
    prefix.clone().join(format!("gen-{generation:020}"))
}

/// What a part's object name says: whose part it is, its compaction frontier, and its place in
/// the partition's chain.
///
/// A partition's state in one generation is a *chain*: a base part (the whole state when it was
/// written) followed by delta parts (the updates of the records read since the part before). A
/// chain of one part is named `{input}+{topic}+{partition}+f{frontier}.part`; a longer one names
/// each part's place, `…+f{frontier}+c{seq}-{len}.part`, so that process 0 can tell a complete
/// chain from a listing alone (and gate the manifest on it) without reading parts. `+` because
/// object_store escapes `~` in paths (and Kafka topic names cannot contain `+`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PartName {
    pub input: String,
    pub partition: PartitionId,
    pub frontier: Time,
    /// The part's place in its chain, from 0 (the base).
    pub seq: u32,
    /// The chain's length.
    pub len: u32,
}

impl PartName {
    pub fn new(input: &str, partition: &PartitionId, frontier: Time, seq: u32, len: u32) -> Self {
        PartName { input: input.to_string(), partition: partition.clone(), frontier, seq, len }
    }

    pub fn render(&self) -> String {
        let PartName { input, partition, frontier, seq, len } = self;
        let chain = if *len > 1 { format!("+c{seq}-{len}") } else { String::new() };
        format!("{input}+{}+{}+f{frontier}{chain}.part", partition.topic, partition.partition)
    }

    pub fn parse(name: &str) -> Option<Self> {
        let stem = name.strip_suffix(".part")?;
        let mut fields = stem.split('+');
        let input = fields.next()?.to_string();
        let topic = fields.next()?.to_string();
        let partition = fields.next()?.parse().ok()?;
        let frontier = fields.next()?.strip_prefix('f')?.parse().ok()?;
        let (seq, len) = match fields.next() {
            None => (0, 1),
            Some(chain) => {
                let (seq, len) = chain.strip_prefix('c')?.split_once('-')?;
                (seq.parse().ok()?, len.parse().ok()?)
            }
        };
        if fields.next().is_some() || seq >= len {
            return None;
        }
        Some(PartName { input, partition: PartitionId::new(topic, partition), frontier, seq, len })
    }

    fn key(&self) -> (String, PartitionId) {
        (self.input.clone(), self.partition.clone())
    }
}

/// Groups part names into chains by `(input, partition)`; a chain is complete when it holds every
/// place `0..len` of one length. Returns the complete chains (names in chain order) and the
/// largest frontier among their parts.
fn chains<'a>(
    names: impl IntoIterator<Item = &'a String>,
) -> (BTreeMap<(String, PartitionId), Vec<String>>, BTreeMap<(String, PartitionId), String>, Time) {
    let mut found: BTreeMap<(String, PartitionId), BTreeMap<u32, (u32, String)>> = BTreeMap::new();
    for name in names {
        if let Some(part) = PartName::parse(name) {
            found.entry(part.key()).or_default().insert(part.seq, (part.len, name.clone()));
        }
    }
    let (mut complete, mut broken, mut frontier) = (BTreeMap::new(), BTreeMap::new(), 0);
    for (key, places) in found {
        let len = places.values().next().map_or(0, |(len, _)| *len);
        let whole = places.len() as u32 == len
            && places.iter().enumerate().all(|(i, (seq, (l, _)))| *seq == i as u32 && *l == len);
        let names: Vec<String> = places.into_values().map(|(_, name)| name).collect();
        if whole {
            for name in &names {
                frontier = frontier.max(PartName::parse(name).map_or(0, |p| p.frontier));
            }
            complete.insert(key, names);
        } else {
            broken.insert(key, names.join(", "));
        }
    }
    (complete, broken, frontier)
}

fn io_error(object: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error::Checkpoint { object: object.to_string(), reason: e.to_string() }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| io_error("(runtime)", format!("cannot start the checkpoint I/O runtime: {e}")))
}

/// Lists the generations under `prefix`, newest first.
async fn generations(config: &CheckpointConfig) -> Result<Vec<u64>> {
    let listing =
        config.store.list_with_delimiter(Some(&config.prefix)).await.map_err(|e| io_error(&config.location, e))?;
    let mut found: Vec<u64> = listing
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().and_then(|n| n.strip_prefix("gen-")).and_then(|g| g.parse().ok()))
        .collect();
    found.sort_unstable_by(|a, b| b.cmp(a));
    Ok(found)
}

/// Loads the newest usable checkpoint, or `None` (a full replay). Says what it does on stderr.
pub fn restore(config: &CheckpointConfig) -> Result<Option<Restored>> {
    runtime()?.block_on(async {
        for generation in generations(config).await? {
            let dir = generation_dir(&config.prefix, generation);
            let manifest_path = dir.clone().join(MANIFEST);
            let bytes = match config.store.get(&manifest_path).await {
                Ok(get) => get.bytes().await.map_err(|e| io_error(&manifest_path, e))?,
                // No manifest: a checkpoint cut short (a crash while writing it). Never used.
                Err(object_store::Error::NotFound { .. }) => {
                    eprintln!("checkpoint generation {generation} is incomplete (no manifest); trying an older one");
                    continue;
                }
                Err(e) => return Err(io_error(&manifest_path, e)),
            };
            let manifest: Manifest = match serde_json::from_slice(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    warn(&format!("checkpoint {manifest_path} is damaged ({e}); falling back to the previous one"));
                    continue;
                }
            };
            check_compatible(config, &manifest)?;
            match load_parts(config, &dir, &manifest).await {
                Ok(parts) => {
                    eprintln!(
                        "restoring from checkpoint {} (generation {generation}, frontier {}): {} parts",
                        config.location,
                        manifest.frontier,
                        parts.len()
                    );
                    return Ok(Some(Restored { generation, frontier: manifest.frontier, parts }));
                }
                Err(e) => warn(&format!(
                    "checkpoint generation {generation} is unusable ({e}); falling back to the previous one"
                )),
            }
        }
        eprintln!("no usable checkpoint at {}: replaying from the beginning", config.location);
        Ok(None)
    })
}

fn warn(message: &str) {
    tracing::warn!("{message}");
    eprintln!("warning: {message}");
}

fn check_compatible(config: &CheckpointConfig, manifest: &Manifest) -> Result<()> {
    let refuse = |reason: String| Err(Error::CheckpointIncompatible { location: config.location.clone(), reason });
    if manifest.format != FORMAT {
        return refuse(format!("it has format {} and this kappa reads format {FORMAT}", manifest.format));
    }
    if manifest.pipeline != config.pipeline {
        return refuse(format!("it belongs to pipeline `{}`, this job runs `{}`", manifest.pipeline, config.pipeline));
    }
    if manifest.pipeline_version != config.pipeline_version {
        return refuse(format!(
            "it was written by version {} of pipeline `{}` and this job runs version {}: the pipeline changed, so \
             its state cannot be resumed; delete the checkpoint location (and the output) to recompute from the \
             beginning, or run the old version",
            manifest.pipeline_version, manifest.pipeline, config.pipeline_version
        ));
    }
    if manifest.fingerprint != config.fingerprint {
        return refuse(format!(
            "it was taken with other settings ({}) than this job's ({})",
            manifest.fingerprint, config.fingerprint
        ));
    }
    if manifest.engine != env!("CARGO_PKG_VERSION") {
        return refuse(format!("it was written by kappa {}, this is {}", manifest.engine, env!("CARGO_PKG_VERSION")));
    }
    Ok(())
}

async fn load_parts(
    config: &CheckpointConfig,
    dir: &Path,
    manifest: &Manifest,
) -> Result<BTreeMap<(String, PartitionId), Vec<(String, Bytes)>>> {
    if let Some(name) = manifest.parts.iter().find(|n| PartName::parse(n).is_none()) {
        return Err(io_error(dir.clone().join(name.as_str()), "not a part name"));
    }
    let (complete, broken, _) = chains(&manifest.parts);
    if let Some((_, names)) = broken.first_key_value() {
        return Err(io_error(dir.clone().join(MANIFEST), format!("lists an incomplete chain of parts: {names}")));
    }
    let mut parts = BTreeMap::new();
    for (key, names) in complete {
        let mut chain = Vec::with_capacity(names.len());
        for name in names {
            let path = dir.clone().join(name.as_str());
            let bytes = config
                .store
                .get(&path)
                .await
                .map_err(|e| io_error(&path, e))?
                .bytes()
                .await
                .map_err(|e| io_error(&path, e))?;
            verify_part(path.as_ref(), &bytes)?;
            chain.push((path.to_string(), bytes));
        }
        parts.insert(key, chain);
    }
    Ok(parts)
}

/// Checks a part's checksum without decoding its body.
fn verify_part(object: &str, bytes: &[u8]) -> Result<()> {
    if bytes.len() < 4 || &bytes[..PART_MAGIC.len().min(bytes.len())] != PART_MAGIC {
        return Err(io_error(object, "damaged at byte 0: not a kappa checkpoint part"));
    }
    let (content, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(content) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(io_error(object, format!("damaged at byte {}: CRC-32C mismatch", content.len())));
    }
    Ok(())
}

/// The durable progress of this process's sinks: the least time below which every sink has
/// durably written everything. Process 0 gates manifests on it.
///
/// A sink has one slot per writer (one, or every worker of process 0 for a partitioned sink),
/// all created by whichever writer registers first, so that a writer that has not started yet
/// counts as having written nothing rather than not counting.
#[derive(Debug, Default)]
pub struct DurableProgress {
    sinks: Mutex<BTreeMap<(usize, usize), Time>>,
}

impl DurableProgress {
    /// The slot of `writer` (of `writers`) of the sink with `ordinal`.
    pub(crate) fn register(&self, ordinal: usize, writer: usize, writers: usize) -> (usize, usize) {
        let mut sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        for w in 0..writers.max(writer + 1) {
            sinks.entry((ordinal, w)).or_insert(0);
        }
        (ordinal, writer)
    }
    pub(crate) fn set(&self, slot: (usize, usize), upper: Time) {
        if let Some(slot) = self.sinks.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&slot) {
            *slot = (*slot).max(upper);
        }
    }
    /// The least durable upper of all sinks (`None` before any sink registered).
    pub fn upper(&self) -> Option<Time> {
        self.sinks.lock().unwrap_or_else(|p| p.into_inner()).values().copied().min()
    }
}

/// A part cut by an input operator, on its way to the store.
pub(crate) struct CutPart {
    pub generation: u64,
    pub name: String,
    pub body: PartBody,
}

/// What a cut part holds.
pub(crate) enum PartBody {
    /// A freshly encoded part.
    Encoded(Vec<u8>),
    /// The same part as this object of an earlier generation: the partition has not changed since
    /// (a finished or silent partition), so it is copied inside the store (S3: a server-side
    /// copy) instead of being encoded and uploaded again.
    CopyOf(Path),
}

/// The per-process writer: uploads parts off the worker threads; in process 0 it also writes
/// manifests and prunes.
pub(crate) struct Writer {
    tx: Mutex<Option<Sender<CutPart>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Checkpoints completed by this process (manifests written), for reports and tests.
    pub completed: Arc<AtomicU64>,
    /// Generations queued and not yet uploaded, with their parts still in the queue; and the
    /// generations skipped because uploads were behind.
    queue: Arc<Mutex<Queue>>,
    /// The checkpoint location's prefix in its store.
    prefix: Path,
    /// Where the bytes encoded and the generations cut are counted.
    metrics: Arc<crate::runtime::Metrics>,
}

/// At most this many generations wait for upload: a slower store skips generations instead of
/// piling whole snapshots up in memory.
const QUEUED_GENERATIONS: usize = 2;

#[derive(Default)]
struct Queue {
    parts: BTreeMap<u64, usize>,
    skipped: BTreeSet<u64>,
    /// The newest generation parts were queued for (each is counted once).
    newest_cut: u64,
}

impl Writer {
    /// Starts the writer. `expected` lists every `(input, partition)` of the job's durable inputs
    /// (only process 0 needs it: it decides when a generation is complete).
    pub fn start(
        config: CheckpointConfig,
        finalize: bool,
        expected: Arc<Mutex<BTreeSet<(String, PartitionId)>>>,
        durable: Arc<DurableProgress>,
        metrics: Arc<crate::runtime::Metrics>,
        failure: Arc<dyn Fn(Error) + Send + Sync>,
    ) -> Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let prefix = config.prefix.clone();
        let completed = Arc::new(AtomicU64::new(0));
        let done = completed.clone();
        let queue = Arc::new(Mutex::new(Queue::default()));
        let uploaded = queue.clone();
        let rt = runtime()?;
        let thread = std::thread::Builder::new()
            .name("kappa-checkpoint".into())
            .spawn(move || {
                let mut state = WriterState {
                    config,
                    finalize,
                    expected,
                    durable,
                    pending: BTreeSet::new(),
                    completed: done,
                    queue: uploaded,
                };
                if let Err(e) = rt.block_on(state.run(rx)) {
                    failure(e);
                }
            })
            .map_err(|e| io_error("(writer)", e))?;
        Ok(Writer { tx: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)), completed, queue, prefix, metrics })
    }

    /// Where the part `name` of `generation` is stored.
    pub fn part_path(&self, generation: u64, name: &str) -> Path {
        generation_dir(&self.prefix, generation).join(name)
    }

    /// Queues a part for upload, unless uploads are so far behind that its generation is skipped
    /// (said once per generation; a later generation completes instead). Returns whether it was
    /// queued: a skipped part is never written, so it cannot be copied later.
    pub fn send(&self, part: CutPart) -> bool {
        {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            let queue = &mut *queue;
            if queue.skipped.contains(&part.generation) {
                return false;
            }
            if !queue.parts.contains_key(&part.generation) && queue.parts.len() >= QUEUED_GENERATIONS {
                queue.skipped.insert(part.generation);
                while queue.skipped.len() > 64 {
                    queue.skipped.pop_first();
                }
                warn(&format!(
                    "checkpoint generation {} skipped: {} earlier ones are still uploading (the checkpoint location is \
                     slower than --checkpoint-every)",
                    part.generation, QUEUED_GENERATIONS
                ));
                return false;
            }
            let parts = queue.parts.entry(part.generation).or_insert(0);
            if *parts == 0 && queue.newest_cut < part.generation {
                queue.newest_cut = part.generation;
                self.metrics.add_checkpoint_cut();
            }
            *parts += 1;
        }
        if let PartBody::Encoded(bytes) = &part.body {
            self.metrics.add_checkpoint_bytes(bytes.len() as u64);
        }
        match self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(tx) => tx.send(part).is_ok(),
            None => false,
        }
    }

    /// Uploads what is queued, and stops.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

struct WriterState {
    config: CheckpointConfig,
    finalize: bool,
    expected: Arc<Mutex<BTreeSet<(String, PartitionId)>>>,
    durable: Arc<DurableProgress>,
    pending: BTreeSet<u64>,
    completed: Arc<AtomicU64>,
    queue: Arc<Mutex<Queue>>,
}

impl WriterState {
    async fn run(&mut self, rx: Receiver<CutPart>) -> Result<()> {
        let tick = (self.config.every / 2).clamp(Duration::from_millis(20), Duration::from_secs(1));
        let mut last_check = Instant::now();
        loop {
            match rx.recv_timeout(tick) {
                Ok(part) => {
                    let path = generation_dir(&self.config.prefix, part.generation).join(part.name.as_str());
                    let written = match part.body {
                        PartBody::Encoded(bytes) => {
                            self.config.store.put(&path, PutPayload::from(bytes)).await.map(|_| ())
                        }
                        // The source is the partition's previous part: a generation no newer
                        // complete one can have pruned yet, since those need this very part.
                        PartBody::CopyOf(from) if self.copies_alias() => {
                            // A local directory's copy is a hard link: damage to one file would
                            // then be damage to every generation holding it, and the fallback to
                            // an older checkpoint would find it damaged too. Write a file of its own.
                            match self.config.store.get(&from).await {
                                Ok(get) => match get.bytes().await {
                                    Ok(bytes) => {
                                        self.config.store.put(&path, PutPayload::from(bytes)).await.map(|_| ())
                                    }
                                    Err(e) => Err(e),
                                },
                                Err(e) => Err(e),
                            }
                        }
                        PartBody::CopyOf(from) => self.config.store.copy(&from, &path).await,
                    };
                    written
                        .map_err(|e| io_error(&path, format!("cannot write ({e}); check the checkpoint location")))?;
                    self.pending.insert(part.generation);
                    let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(left) = queue.parts.get_mut(&part.generation) {
                        *left -= 1;
                        if *left == 0 {
                            queue.parts.remove(&part.generation);
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    if self.finalize {
                        self.finalize_pending().await?;
                    }
                    return Ok(());
                }
            }
            if self.finalize && last_check.elapsed() >= tick {
                last_check = Instant::now();
                self.finalize_pending().await?;
            }
        }
    }

    /// Whether the store's copies share storage with their source (a local directory's hard
    /// links), so that a copy would not be an independent replica.
    fn copies_alias(&self) -> bool {
        let location = self.config.location.as_str();
        location.starts_with("file:") || !location.contains("://")
    }

    /// Writes the manifest of every pending generation that is complete and covered by the
    /// sinks' durable progress (newest first; older pending ones are then abandoned).
    async fn finalize_pending(&mut self) -> Result<()> {
        let expected = self.expected.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if expected.is_empty() {
            return Ok(());
        }
        // Parts of other processes appear only in the store: look at the newest generations.
        for generation in generations(&self.config).await?.into_iter().take(4) {
            self.pending.insert(generation);
        }
        let candidates: Vec<u64> = self.pending.iter().rev().copied().collect();
        for generation in candidates {
            let dir = generation_dir(&self.config.prefix, generation);
            let listing = self.config.store.list_with_delimiter(Some(&dir)).await.map_err(|e| io_error(&dir, e))?;
            let names: Vec<String> =
                listing.objects.iter().filter_map(|o| o.location.filename().map(String::from)).collect();
            if names.iter().any(|n| n == MANIFEST) {
                self.pending.retain(|&g| g > generation);
                return Ok(());
            }
            // Every partition's chain must be whole: a delta without its base is no state.
            let (complete, _, frontier) = chains(&names);
            if !expected.iter().all(|key| complete.contains_key(key)) {
                continue;
            }
            let parts: Vec<String> = complete.into_values().flatten().collect();
            let durable = self.durable.upper().unwrap_or(0);
            if durable < frontier {
                // The sinks have not yet durably written everything below the frontier: wait.
                continue;
            }
            let manifest = Manifest {
                format: FORMAT,
                engine: env!("CARGO_PKG_VERSION").to_string(),
                pipeline: self.config.pipeline.clone(),
                pipeline_version: self.config.pipeline_version,
                fingerprint: self.config.fingerprint.clone(),
                generation,
                frontier,
                parts,
            };
            let path = dir.clone().join(MANIFEST);
            let body = serde_json::to_vec_pretty(&manifest).expect("manifests serialize");
            self.config.store.put(&path, PutPayload::from(body)).await.map_err(|e| io_error(&path, e))?;
            self.completed.fetch_add(1, Ordering::Relaxed);
            self.pending.retain(|&g| g > generation);
            self.prune().await?;
            return Ok(());
        }
        Ok(())
    }

    /// Deletes generations older than the `keep` newest complete ones.
    async fn prune(&self) -> Result<()> {
        let mut complete = 0;
        for generation in generations(&self.config).await? {
            let dir = generation_dir(&self.config.prefix, generation);
            if complete >= self.config.keep.max(1) {
                let objects: Vec<_> = {
                    use futures::TryStreamExt;
                    self.config.store.list(Some(&dir)).try_collect().await.map_err(|e| io_error(&dir, e))?
                };
                for object in objects {
                    match self.config.store.delete(&object.location).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(io_error(&object.location, e)),
                    }
                }
                continue;
            }
            if self.config.store.head(&dir.clone().join(MANIFEST)).await.is_ok() {
                complete += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(updates: u64) -> PartHeader {
        PartHeader {
            input: "likes".into(),
            partition: PartitionId::new("likes", 3),
            next_offset: Some(42),
            max_seen: Some(1_000),
            floor: 0,
            frontier: 900,
            data_type: std::any::type_name::<(u64, u64)>().into(),
            layout: None,
            updates,
        }
    }

    #[test]
    fn parts_round_trip_in_both_codecs() {
        let updates: Vec<((u64, u64), Time, Diff)> =
            (0..1_000).map(|i| ((i, i * 7), i % 13, (i as Diff) - 500)).collect();
        for codec in [Codec::Postcard, Codec::Abomonation] {
            let bytes = encode_part(&header(1_000), &updates, codec);
            let (mut h, back) = decode_part::<(u64, u64)>("p", &bytes).expect("decodes");
            assert_eq!(h.layout.is_some(), codec == Codec::Abomonation);
            h.layout = None;
            assert_eq!(h, header(1_000));
            assert_eq!(back, updates, "{codec:?}");
        }
    }

    #[test]
    fn a_flipped_byte_is_caught_before_decoding_and_named() {
        let updates = vec![((1u64, 2u64), 5u64, 1isize)];
        for codec in [Codec::Postcard, Codec::Abomonation] {
            let bytes = encode_part(&header(1), &updates, codec);
            for at in [0, 10, bytes.len() / 2, bytes.len() - 5, bytes.len() - 1] {
                let mut damaged = bytes.clone();
                damaged[at] ^= 0x40;
                let err = decode_part::<(u64, u64)>("gen-1/x.part", &damaged).expect_err("damage is found").to_string();
                assert!(err.contains("gen-1/x.part") && err.contains("damaged at byte"), "{err}");
            }
        }
    }

    #[test]
    fn a_part_is_never_decoded_as_another_type() {
        let bytes = encode_part(&header(1), &[((1u64, 2u64), 5u64, 1isize)], Codec::Abomonation);
        let err = decode_part::<(u64, u64, u64)>("p", &bytes).expect_err("other type").to_string();
        assert!(err.contains("this job reads"), "{err}");
    }

    #[test]
    fn an_abomonation_part_of_another_build_or_layout_is_refused_before_decoding() {
        let updates = vec![((1u64, 2u64), 5u64, 1isize)];
        let bytes = encode_part(&header(1), &updates, Codec::Abomonation);
        // Rewrite the header as another build would have written it, with a valid CRC.
        let header_len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
        let mut h: PartHeader = serde_json::from_slice(&bytes[12..12 + header_len]).expect("header");
        for change in [
            |l: &mut AbiLayout| l.build = "another-build".into(),
            |l: &mut AbiLayout| l.rustc = "rustc 1.0.0".into(),
            |l: &mut AbiLayout| l.target = "sparc64-unknown-linux-gnu".into(),
            |l: &mut AbiLayout| l.update.0 += 8,
        ] {
            let mut other = h.clone();
            change(other.layout.as_mut().expect("abomonation parts record their layout"));
            let json = serde_json::to_vec(&other).expect("header");
            let mut forged = Vec::new();
            forged.extend_from_slice(PART_MAGIC);
            forged.extend_from_slice(&(json.len() as u32).to_le_bytes());
            forged.extend_from_slice(&json);
            forged.extend_from_slice(&bytes[12 + header_len..bytes.len() - 4]);
            let crc = crc32c::crc32c(&forged);
            forged.extend_from_slice(&crc.to_le_bytes());
            let err = decode_part::<(u64, u64)>("gen-1/x.part", &forged).expect_err("refused").to_string();
            assert!(err.contains("only read by the build that wrote them"), "{err}");
        }
        h.layout = None;
        let _ = h;
    }

    #[test]
    fn collapse_keeps_every_accumulation_at_or_after_the_frontier() {
        let mut updates =
            vec![(("a", 1), 5, 1), (("a", 1), 7, -1), (("b", 1), 3, 1), (("c", 1), 12, 1), (("b", 1), 11, 1)];
        compact(&mut updates, 10, Retention::Collapse);
        assert_eq!(updates, vec![(("b", 1), 9, 1), (("b", 1), 11, 1), (("c", 1), 12, 1)]);
    }

    #[test]
    fn window_drops_what_the_window_no_longer_sees_and_keeps_exact_times() {
        let mut updates = vec![(1, 100, 1), (2, 940, 1), (3, 1_000, 1), (4, 1_200, 1)];
        compact(&mut updates, 1_000, Retention::Window { ms: 60 });
        assert_eq!(updates, vec![(2, 940, 1), (3, 1_000, 1), (4, 1_200, 1)]);
    }

    #[test]
    fn part_names_carry_input_partition_frontier_and_place_in_the_chain() {
        let partition = PartitionId::new("my.topic", 7);
        for (seq, len) in [(0, 1), (0, 3), (2, 3)] {
            let part = PartName::new("likes", &partition, 123, seq, len);
            assert_eq!(PartName::parse(&part.render()), Some(part));
        }
        // A chain of one keeps the name parts had before chains existed.
        assert_eq!(PartName::new("likes", &partition, 123, 0, 1).render(), "likes+my.topic+7+f123.part");
        for bad in ["likes+my.topic+7+f123+c3-3.part", "likes+my.topic+7+f123+x.part", "likes+t+7.part"] {
            assert_eq!(PartName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_whole_chains_count_and_their_frontier_is_the_largest() {
        let p = |partition: i32, frontier, seq, len| {
            PartName::new("likes", &PartitionId::new("t", partition), frontier, seq, len).render()
        };
        let names =
            vec![p(0, 10, 0, 1), p(1, 5, 0, 3), p(1, 8, 2, 3), p(1, 7, 1, 3), p(2, 40, 1, 2), "MANIFEST".into()];
        let (complete, broken, frontier) = chains(&names);
        assert_eq!(
            complete[&("likes".into(), PartitionId::new("t", 1))],
            vec![p(1, 5, 0, 3), p(1, 7, 1, 3), p(1, 8, 2, 3)]
        );
        assert_eq!(complete.len(), 2);
        assert!(broken.contains_key(&("likes".into(), PartitionId::new("t", 2))), "a delta without its base");
        assert_eq!(frontier, 10, "partition 2's broken chain does not count");
    }
}
