//! Bulk import: turns MovieLens directories, CSV exports and NDJSON files into validated
//! [`Record`]s.
//!
//! Every record is built as the JSON the HTTP API would receive and then passed through the
//! project's [`Schema`], so an import can never store something a client could not have sent.
//! Reading is lazy and line by line (constant memory, whatever the file size), and a bad line is
//! reported as a [`RowError`] carrying its file and 1-based line while the iterator carries on:
//! whether to stop at the first error or to skip and count is the caller's decision.
//!
//! Any input file may be gzip-compressed; compression is recognised by its magic bytes, not by
//! the file name.

use anyhow::{Context, anyhow, bail};
use cascade_core::time::{civil_from_days, days_from_civil};
use cascade_core::value::json_kind;
use cascade_core::{FieldError, Record, Schema, Timestamp};
use flate2::bufread::MultiGzDecoder;
use serde_json::{Map, Value as Json, json};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::str::FromStr;

/// An input to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A MovieLens directory, 100K (`u.data`, `u.item`, `u.genre`, `u.user`) or 1M
    /// (`ratings.dat` or `ratings.prefix.dat`, `movies.dat`, `users.dat`); the layout is detected
    /// from the ratings file present. Yields items, then users, then `rating` events.
    MovieLens(PathBuf),
    /// A CSV file with a header row; each row becomes one event of `event_type`.
    Csv {
        path: PathBuf,
        event_type: String,
        /// `(event key, CSV column)` pairs as returned by [`parse_mapping`].
        mapping: Vec<(String, String)>,
        ts_unit: TsUnit,
        delimiter: u8,
    },
    /// One JSON object per line: `{"kind": "item"|"user", "id": .., <upsert body>}` is a
    /// catalogue upsert, anything else is validated as an event.
    Ndjson(PathBuf),
}

/// How a CSV timestamp column is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsUnit {
    /// Whole seconds since 1970 (MovieLens and most exports).
    Seconds,
    /// Whole milliseconds since 1970.
    Millis,
    /// RFC 3339 text, e.g. `2024-05-01T12:00:00Z`.
    Rfc3339,
}

impl FromStr for TsUnit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "seconds" | "s" => Ok(TsUnit::Seconds),
            "millis" | "ms" => Ok(TsUnit::Millis),
            "rfc3339" => Ok(TsUnit::Rfc3339),
            other => Err(format!("unknown timestamp unit `{other}` (expected seconds, millis or rfc3339)")),
        }
    }
}

/// A line that could not become a record. The iterator goes on with the next line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub file: PathBuf,
    /// 1-based line number (for CSV: the line where the row starts).
    pub line: u64,
    pub reason: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
    }
}

impl std::error::Error for RowError {}

/// Opens `source` and returns its records in file order.
///
/// Fails only when the input cannot be used at all: a file that cannot be opened, a directory
/// that is not MovieLens, a mapping naming a column the CSV lacks, an event type the schema does
/// not declare. Everything wrong with a single line is a [`RowError`] item instead.
/// `now` is the `updated_at` of catalogue records that do not carry one.
pub fn read(
    source: &Source,
    schema: &Schema,
    now: Timestamp,
) -> anyhow::Result<Box<dyn Iterator<Item = Result<Record, RowError>>>> {
    let schema = Rc::new(schema.clone());
    match source {
        Source::MovieLens(dir) => movielens(dir, schema, now),
        Source::Csv { path, event_type, mapping, ts_unit, delimiter } => {
            require_event_type(&schema, event_type)?;
            let rows = CsvRows::open(path, event_type, mapping, *ts_unit, *delimiter, schema)?;
            Ok(Box::new(rows))
        }
        Source::Ndjson(path) => {
            let rows = LineRecords::open(path, Encoding::Utf8, move |line| ndjson_record(&schema, now, line))?;
            Ok(Box::new(rows))
        }
    }
}

/// Parses a column mapping such as `user=userId,item=movieId,ts=timestamp,value=rating`.
///
/// Keys are `id`, `user`, `item`, `ts` or the name of an event field; values are CSV column
/// names. The event type itself is not mapped: a CSV file holds one event type.
pub fn parse_mapping(s: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for entry in s.split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            bail!("empty entry in mapping `{s}` (write key=column pairs separated by commas)");
        }
        let Some((key, column)) = entry.split_once('=') else {
            bail!("mapping entry `{entry}` has no `=` (write key=column, e.g. user=userId)");
        };
        let (key, column) = (key.trim(), column.trim());
        if key.is_empty() || column.is_empty() {
            bail!("mapping entry `{entry}` needs both a key and a column (e.g. user=userId)");
        }
        if key == "type" {
            bail!("`type` cannot be mapped: the event type is chosen for the whole file");
        }
        if !is_field_name(key) {
            bail!(
                "mapping key `{key}` is not id, user, item, ts or a field name \
                 (lowercase letters, digits and _)"
            );
        }
        if out.iter().any(|(k, _)| k == key) {
            bail!("mapping key `{key}` appears twice");
        }
        out.push((key.to_string(), column.to_string()));
    }
    Ok(out)
}

/// The same rule `cascade.toml` applies to field names, so a typo fails here rather than on
/// every row.
fn is_field_name(s: &str) -> bool {
    s.len() <= 64
        && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn require_event_type(schema: &Schema, event_type: &str) -> anyhow::Result<()> {
    if schema.event_types().any(|t| t == event_type) {
        return Ok(());
    }
    let declared: Vec<&str> = schema.event_types().collect();
    bail!("the schema declares no `{event_type}` event type (declared: {})", declared.join(", "))
}

/// Opens a file, decompressing it when it starts with the gzip magic bytes.
fn open(path: &Path) -> anyhow::Result<Box<dyn BufRead>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = BufReader::with_capacity(64 << 10, file);
    let head = reader.fill_buf().with_context(|| format!("cannot read {}", path.display()))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        // Multi-member, so files concatenated by `cat a.gz b.gz` or written by pigz read whole.
        Ok(Box::new(BufReader::new(MultiGzDecoder::new(reader))))
    } else {
        Ok(Box::new(reader))
    }
}

/// Joins validation errors into one reason, each naming its field.
fn describe(errors: Vec<FieldError>) -> String {
    let parts: Vec<String> = errors
        .into_iter()
        .map(|e| if e.field.is_empty() { e.reason } else { format!("{}: {}", e.field, e.reason) })
        .collect();
    parts.join("; ")
}

// ---------------------------------------------------------------------------------------------
// Line-oriented files (MovieLens, NDJSON)

/// How the bytes of a line become text.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    Utf8,
    /// MovieLens files are latin-1. A line that is valid UTF-8 is taken as UTF-8 (a re-encoded
    /// copy of the data set must not turn into mojibake); otherwise every byte is the code point
    /// of the same value, which is exactly latin-1.
    Latin1,
}

fn decode(encoding: Encoding, bytes: &[u8]) -> Result<Cow<'_, str>, String> {
    match (std::str::from_utf8(bytes), encoding) {
        (Ok(s), _) => Ok(Cow::Borrowed(s)),
        (Err(e), Encoding::Utf8) => Err(format!("not valid UTF-8 ({e})")),
        (Err(_), Encoding::Latin1) => Ok(Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect())),
    }
}

/// Reads a file line by line into one reused buffer, counting lines and skipping blank ones.
struct Lines {
    path: PathBuf,
    reader: Box<dyn BufRead>,
    buf: Vec<u8>,
    line: u64,
    done: bool,
}

impl Lines {
    fn open(path: &Path) -> anyhow::Result<Lines> {
        Ok(Lines { reader: open(path)?, path: path.to_path_buf(), buf: Vec::new(), line: 0, done: false })
    }

    fn error(&self, line: u64, reason: String) -> RowError {
        RowError { file: self.path.clone(), line, reason }
    }

    /// The next non-blank line and its number, without the line terminator. A read error (a
    /// truncated gzip stream, say) is reported once and ends the file: retrying could loop.
    fn next_line(&mut self) -> Option<Result<(u64, &[u8]), RowError>> {
        loop {
            if self.done {
                return None;
            }
            self.buf.clear();
            match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => {
                    self.done = true;
                    return None;
                }
                Ok(_) => {
                    self.line += 1;
                    let mut end = self.buf.len();
                    while end > 0 && matches!(self.buf[end - 1], b'\n' | b'\r') {
                        end -= 1;
                    }
                    if self.buf[..end].iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return Some(Ok((self.line, &self.buf[..end])));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(self.error(self.line + 1, format!("read error: {e}"))));
                }
            }
        }
    }
}

/// Turns each line of a file into a record with `parse`, which says why when it cannot.
struct LineRecords<F> {
    lines: Lines,
    encoding: Encoding,
    parse: F,
}

impl<F: FnMut(&str) -> Result<Record, String>> LineRecords<F> {
    fn open(path: &Path, encoding: Encoding, parse: F) -> anyhow::Result<Self> {
        Ok(LineRecords { lines: Lines::open(path)?, encoding, parse })
    }
}

impl<F: FnMut(&str) -> Result<Record, String>> Iterator for LineRecords<F> {
    type Item = Result<Record, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (line, result) = match self.lines.next_line()? {
            Ok((line, bytes)) => (line, decode(self.encoding, bytes).and_then(|text| (self.parse)(&text))),
            Err(e) => return Some(Err(e)),
        };
        Some(result.map_err(|reason| self.lines.error(line, reason)))
    }
}

// ---------------------------------------------------------------------------------------------
// NDJSON

fn ndjson_record(schema: &Schema, now: Timestamp, line: &str) -> Result<Record, String> {
    let value: Json = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let mut obj = match value {
        Json::Object(obj) if obj.contains_key("kind") => obj,
        event => {
            return schema.validate_event(&event).map(Record::Event).map_err(describe);
        }
    };
    let kind = obj.remove("kind").unwrap_or(Json::Null);
    // Ids follow the API's rule: strings, or integers kept in decimal form.
    let id = match obj.remove("id") {
        Some(Json::String(s)) => s,
        Some(Json::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        Some(other) => return Err(format!("id: expected string id, got {}", json_kind(&other))),
        None => return Err("id: required with \"kind\"".to_string()),
    };
    let body = Json::Object(obj);
    match kind.as_str() {
        Some("item") => schema.validate_item(&id, &body, now).map(Record::Item).map_err(describe),
        Some("user") => schema.validate_user(&id, &body, now).map(Record::User).map_err(describe),
        _ => Err(format!("kind: expected \"item\" or \"user\", got {kind}")),
    }
}

// ---------------------------------------------------------------------------------------------
// MovieLens

/// Occupation codes of MovieLens 1M `users.dat`, in code order, as listed in its README.
const OCCUPATIONS_1M: [&str; 21] = [
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
];

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

type Rows = Box<dyn Iterator<Item = Result<Record, RowError>>>;

/// The first of `names` present in `dir`, plain or with `.gz` appended.
fn find(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().flat_map(|name| [dir.join(name), dir.join(format!("{name}.gz"))]).find(|p| p.is_file())
}

fn movielens(dir: &Path, schema: Rc<Schema>, now: Timestamp) -> anyhow::Result<Rows> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    require_event_type(&schema, "rating").context("MovieLens ratings become `rating` events")?;
    let require = |name: &str, layout: &str| {
        find(dir, &[name]).ok_or_else(|| anyhow!("{} looks like MovieLens {layout} but has no {name}", dir.display()))
    };
    let rows: Rows = if let Some(ratings) = find(dir, &["u.data"]) {
        let genres = read_genres(&require("u.genre", "100K")?)?;
        let (s1, s2, s3) = (schema.clone(), schema.clone(), schema);
        let items =
            LineRecords::open(&require("u.item", "100K")?, Encoding::Latin1, move |l| item_100k(&s1, &genres, now, l))?;
        let users = LineRecords::open(&require("u.user", "100K")?, Encoding::Latin1, move |l| user_100k(&s2, now, l))?;
        let ratings = LineRecords::open(&ratings, Encoding::Latin1, move |l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            columns(&cols, 4, "user item rating timestamp, tab-separated")?;
            rating(&s3, cols[0], cols[1], cols[2], cols[3])
        })?;
        Box::new(items.chain(users).chain(ratings))
    } else if let Some(ratings) = find(dir, &["ratings.dat", "ratings.prefix.dat"]) {
        let (s1, s2, s3) = (schema.clone(), schema.clone(), schema);
        let items = LineRecords::open(&require("movies.dat", "1M")?, Encoding::Latin1, move |l| item_1m(&s1, now, l))?;
        let users = LineRecords::open(&require("users.dat", "1M")?, Encoding::Latin1, move |l| user_1m(&s2, now, l))?;
        let ratings = LineRecords::open(&ratings, Encoding::Latin1, move |l| {
            let cols: Vec<&str> = l.split("::").collect();
            columns(&cols, 4, "user::item::rating::timestamp")?;
            rating(&s3, cols[0], cols[1], cols[2], cols[3])
        })?;
        Box::new(items.chain(users).chain(ratings))
    } else {
        bail!(
            "{} holds no MovieLens ratings: expected u.data (100K) or ratings.dat (1M), \
             optionally gzip-compressed as .gz",
            dir.display()
        );
    };
    Ok(rows)
}

/// Reads `u.genre` (`name|index` lines): the names of `u.item`'s genre flag columns, in order.
/// It is read eagerly because every item line needs it.
fn read_genres(path: &Path) -> anyhow::Result<Vec<String>> {
    let mut lines = Lines::open(path)?;
    let mut genres = Vec::new();
    while let Some(line) = lines.next_line() {
        let (n, bytes) = line?;
        let parsed = decode(Encoding::Latin1, bytes).ok().and_then(|text| {
            let (name, index) = text.rsplit_once('|')?;
            let index: usize = index.trim().parse().ok()?;
            (index == genres.len()).then(|| name.to_string())
        });
        match parsed {
            Some(name) => genres.push(name),
            None => bail!("{}:{n}: expected `name|{}`", path.display(), genres.len()),
        }
    }
    if genres.is_empty() {
        bail!("{} lists no genres", path.display());
    }
    Ok(genres)
}

fn columns(cols: &[&str], expected: usize, layout: &str) -> Result<(), String> {
    if cols.len() == expected {
        Ok(())
    } else {
        Err(format!("expected {expected} columns ({layout}), found {}", cols.len()))
    }
}

/// MovieLens ids are integers; they are normalised (`007` is `7`) so that ratings, items and
/// users agree on them.
fn numeric_id(s: &str, what: &str) -> Result<String, String> {
    let s = s.trim();
    s.parse::<u64>().map(|n| n.to_string()).map_err(|_| format!("{what} `{s}` is not a non-negative integer"))
}

/// A `rating` event. Its id is derived from user and item (MovieLens has one rating per pair),
/// so importing the same data twice stores it once.
fn rating(schema: &Schema, user: &str, item: &str, value: &str, ts: &str) -> Result<Record, String> {
    let user = numeric_id(user, "user id")?;
    let item = numeric_id(item, "item id")?;
    let value = value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("rating `{}` is not a number", value.trim()))?;
    let ts = ts
        .trim()
        .parse::<i64>()
        .ok()
        .and_then(Timestamp::from_secs)
        .ok_or_else(|| format!("timestamp `{}` is not seconds since 1970", ts.trim()))?;
    let event = json!({
        "id": format!("ml:{user}:{item}"),
        "type": "rating",
        "ts": ts.millis(),
        "user": user,
        "item": item,
        "fields": {"value": value},
    });
    schema.validate_event(&event).map(Record::Event).map_err(describe)
}

fn item(schema: &Schema, id: &str, attributes: Map<String, Json>, now: Timestamp) -> Result<Record, String> {
    schema
        .validate_item(id, &json!({ "attributes": Json::Object(attributes) }), now)
        .map(Record::Item)
        .map_err(describe)
}

fn user(schema: &Schema, id: &str, attributes: Map<String, Json>, now: Timestamp) -> Result<Record, String> {
    schema
        .validate_user(id, &json!({ "attributes": Json::Object(attributes) }), now)
        .map(Record::User)
        .map_err(describe)
}

/// Midnight UTC of a date. `None` before 1970, which [`Timestamp`] cannot represent: such a
/// release date is left out rather than losing the whole item (its title still carries the year).
fn date(year: i64, month: i64, day: i64) -> Result<Option<Timestamp>, String> {
    let days = days_from_civil(year, month, day);
    if civil_from_days(days) != (year, month, day) {
        return Err(format!("{year:04}-{month:02}-{day:02} is not a date"));
    }
    Ok(Timestamp::from_secs(days * 86_400))
}

/// `u.item` release dates: `01-Jan-1995`, or empty when unknown.
fn release_date_100k(s: &str) -> Result<Option<Timestamp>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let bad = || format!("release date `{s}` is not DD-Mon-YYYY");
    let digits = |t: &str, len: std::ops::RangeInclusive<usize>| {
        (len.contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.parse::<i64>().ok()).flatten()
    };
    let mut parts = s.split('-');
    let (Some(d), Some(m), Some(y), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let day = digits(d, 1..=2).ok_or_else(bad)?;
    let year = digits(y, 4..=4).ok_or_else(bad)?;
    let month =
        MONTHS.iter().zip(1..).find_map(|(name, n)| name.eq_ignore_ascii_case(m).then_some(n)).ok_or_else(bad)?;
    date(year, month, day).map_err(|e| format!("release date `{s}`: {e}"))
}

/// The year of a `movies.dat` title such as `Heat (1995)`, if it ends with one.
fn title_year(title: &str) -> Option<i64> {
    let (_, year) = title.trim_end().strip_suffix(')')?.rsplit_once('(')?;
    if year.len() == 4 && year.bytes().all(|b| b.is_ascii_digit()) { year.parse().ok() } else { None }
}

/// `id|title|release date|video release date|IMDb URL|flag...`, one 0/1 flag per genre.
fn item_100k(schema: &Schema, genres: &[String], now: Timestamp, line: &str) -> Result<Record, String> {
    let cols: Vec<&str> = line.split('|').collect();
    columns(&cols, 5 + genres.len(), &format!("id|title|release|video release|url and {} genre flags", genres.len()))?;
    let id = numeric_id(cols[0], "item id")?;
    let mut set = Vec::new();
    for (flag, name) in cols[5..].iter().zip(genres) {
        match flag.trim() {
            "1" => set.push(Json::String(name.clone())),
            "0" => {}
            other => return Err(format!("genre flag `{other}` for {name} is not 0 or 1")),
        }
    }
    let mut attributes = Map::new();
    attributes.insert("title".into(), Json::String(cols[1].to_string()));
    attributes.insert("genres".into(), Json::Array(set));
    if let Some(ts) = release_date_100k(cols[2])? {
        attributes.insert("released_at".into(), json!(ts.millis()));
    }
    item(schema, &id, attributes, now)
}

/// `id::Title (Year)::Genre|Genre`. Split from both ends so a title containing `::` survives.
fn item_1m(schema: &Schema, now: Timestamp, line: &str) -> Result<Record, String> {
    let layout = || "expected id::title::genres".to_string();
    let (id, rest) = line.split_once("::").ok_or_else(layout)?;
    let (title, genres) = rest.rsplit_once("::").ok_or_else(layout)?;
    let id = numeric_id(id, "item id")?;
    let genres: Vec<Json> =
        genres.split('|').map(str::trim).filter(|g| !g.is_empty()).map(|g| Json::String(g.to_string())).collect();
    let mut attributes = Map::new();
    attributes.insert("title".into(), Json::String(title.to_string()));
    attributes.insert("genres".into(), Json::Array(genres));
    if let Some(ts) = title_year(title).map(|y| date(y, 1, 1)).transpose()?.flatten() {
        attributes.insert("released_at".into(), json!(ts.millis()));
    }
    item(schema, &id, attributes, now)
}

fn age(s: &str) -> Result<i64, String> {
    s.trim().parse().map_err(|_| format!("age `{}` is not an integer", s.trim()))
}

/// `id|age|gender|occupation|zip`; the zip code has no attribute and is dropped.
fn user_100k(schema: &Schema, now: Timestamp, line: &str) -> Result<Record, String> {
    let cols: Vec<&str> = line.split('|').collect();
    columns(&cols, 5, "id|age|gender|occupation|zip")?;
    let id = numeric_id(cols[0], "user id")?;
    let mut attributes = Map::new();
    attributes.insert("age".into(), json!(age(cols[1])?));
    attributes.insert("gender".into(), json!(cols[2].trim()));
    attributes.insert("occupation".into(), json!(cols[3].trim()));
    user(schema, &id, attributes, now)
}

/// `id::gender::age::occupation::zip`. The age is the README's bracket code (1 = under 18,
/// 18, 25, ...); the occupation code becomes the README's name, and an unknown code is kept
/// as written rather than dropped.
fn user_1m(schema: &Schema, now: Timestamp, line: &str) -> Result<Record, String> {
    let cols: Vec<&str> = line.split("::").collect();
    columns(&cols, 5, "id::gender::age::occupation::zip")?;
    let id = numeric_id(cols[0], "user id")?;
    let code = cols[3].trim();
    let occupation = code.parse::<usize>().ok().and_then(|i| OCCUPATIONS_1M.get(i)).map_or(code, |name| name);
    let mut attributes = Map::new();
    attributes.insert("gender".into(), json!(cols[1].trim()));
    attributes.insert("age".into(), json!(age(cols[2])?));
    attributes.insert("occupation".into(), json!(occupation));
    user(schema, &id, attributes, now)
}

// ---------------------------------------------------------------------------------------------
// CSV

/// What a mapped CSV column feeds.
#[derive(Debug)]
enum Target {
    Id,
    User,
    Item,
    Ts,
    Field(String),
}

/// Notes the byte offset and number of every non-empty line as the csv reader pulls bytes.
///
/// The csv crate skips empty lines but places the record that follows them at the first empty
/// line, so its line numbers drift after a blank line; the first non-empty line at or after a
/// record's byte offset is where the record really starts. Entries are dropped once passed, so
/// the queue holds only what the csv reader has buffered ahead.
struct LineStarts<R> {
    inner: R,
    offset: u64,
    line: u64,
    at_line_start: bool,
    starts: VecDeque<(u64, u64)>,
}

impl<R> LineStarts<R> {
    fn new(inner: R) -> Self {
        LineStarts { inner, offset: 0, line: 1, at_line_start: true, starts: VecDeque::new() }
    }

    /// The number of the first non-empty line starting at or after `byte`.
    fn line_at(&mut self, byte: u64) -> Option<u64> {
        while self.starts.front().is_some_and(|&(offset, _)| offset < byte) {
            self.starts.pop_front();
        }
        self.starts.front().map(|&(_, line)| line)
    }
}

impl<R: Read> Read for LineStarts<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &b in &buf[..n] {
            if b == b'\n' {
                self.line += 1;
                self.at_line_start = true;
            } else if b != b'\r' && self.at_line_start {
                self.starts.push_back((self.offset, self.line));
                self.at_line_start = false;
            }
            self.offset += 1;
        }
        Ok(n)
    }
}

struct CsvRows {
    path: PathBuf,
    reader: csv::Reader<LineStarts<Box<dyn BufRead>>>,
    record: csv::ByteRecord,
    header_len: usize,
    columns: Vec<(Target, usize, String)>,
    event_type: String,
    ts_unit: TsUnit,
    schema: Rc<Schema>,
    /// Line of the last row read, so an error without a position can still be placed.
    last_line: u64,
    done: bool,
}

impl CsvRows {
    fn open(
        path: &Path,
        event_type: &str,
        mapping: &[(String, String)],
        ts_unit: TsUnit,
        delimiter: u8,
        schema: Rc<Schema>,
    ) -> anyhow::Result<CsvRows> {
        if !mapping.iter().any(|(k, _)| k == "ts") {
            bail!("the mapping has no `ts` column, and every event needs a timestamp");
        }
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(true)
            // Row lengths are checked here, to name the expected count in the error.
            .flexible(true)
            .from_reader(LineStarts::new(open(path)?));
        let header: Vec<String> = reader
            .headers()
            .with_context(|| format!("cannot read the header of {}", path.display()))?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        let mut columns = Vec::with_capacity(mapping.len());
        for (key, column) in mapping {
            let mut found = header.iter().enumerate().filter(|(_, h)| *h == column);
            let Some((index, _)) = found.next() else {
                bail!(
                    "{} has no column `{column}` (mapped to `{key}`); its columns are: {}",
                    path.display(),
                    header.join(", ")
                );
            };
            if found.next().is_some() {
                bail!("{} has more than one column `{column}`", path.display());
            }
            let target = match key.as_str() {
                "id" => Target::Id,
                "user" => Target::User,
                "item" => Target::Item,
                "ts" => Target::Ts,
                field => Target::Field(field.to_string()),
            };
            columns.push((target, index, column.clone()));
        }
        Ok(CsvRows {
            path: path.to_path_buf(),
            reader,
            record: csv::ByteRecord::new(),
            header_len: header.len(),
            columns,
            event_type: event_type.to_string(),
            ts_unit,
            schema,
            last_line: 1,
            done: false,
        })
    }

    fn row(&self) -> Result<Record, String> {
        if self.record.len() != self.header_len {
            return Err(format!(
                "expected {} columns (as in the header), found {}",
                self.header_len,
                self.record.len()
            ));
        }
        let mut event = Map::new();
        event.insert("type".into(), Json::String(self.event_type.clone()));
        let mut fields = Map::new();
        // Fields whose cell was read as a number or bool, with its text, for the retry below.
        let mut guessed = Vec::new();
        for (target, index, column) in &self.columns {
            let cell = std::str::from_utf8(&self.record[*index])
                .map_err(|_| format!("column `{column}` is not valid UTF-8"))?
                .trim();
            if cell.is_empty() {
                continue; // absent: optional fields may be left blank
            }
            match target {
                Target::Id => event.insert("id".into(), json!(cell)),
                Target::User => event.insert("user".into(), json!(cell)),
                Target::Item => event.insert("item".into(), json!(cell)),
                Target::Ts => event.insert("ts".into(), ts_json(cell, self.ts_unit)?),
                Target::Field(name) => {
                    let value = guess(cell);
                    if !value.is_string() {
                        guessed.push((name, cell));
                    }
                    fields.insert(name.clone(), value)
                }
            };
        }
        if !fields.is_empty() {
            event.insert("fields".into(), Json::Object(fields));
        }
        let mut event = Json::Object(event);
        let errors = match self.schema.validate_event(&event) {
            Ok(e) => return Ok(Record::Event(e)),
            Err(errors) => errors,
        };
        // CSV cells carry no type and the schema's field types are not visible here, so cells are
        // typed by their look. A numeric-looking value of a string field (a zip code, a card
        // number) is then refused as a number: retry those fields as text.
        let mut retried = false;
        for (name, text) in guessed {
            if errors.iter().any(|e| e.field == format!("fields.{name}")) {
                event["fields"][name.as_str()] = json!(text);
                retried = true;
            }
        }
        if retried && let Ok(e) = self.schema.validate_event(&event) {
            return Ok(Record::Event(e));
        }
        Err(describe(errors))
    }
}

/// A cell as JSON: `true`/`false`, an integer, a finite float, or else text.
fn guess(cell: &str) -> Json {
    match cell {
        "true" => Json::Bool(true),
        "false" => Json::Bool(false),
        _ => {
            if let Ok(i) = cell.parse::<i64>() {
                json!(i)
            } else if let Some(f) = cell.parse::<f64>().ok().filter(|f| f.is_finite()) {
                json!(f)
            } else {
                json!(cell)
            }
        }
    }
}

/// A timestamp cell in the form the event validator takes (milliseconds or RFC 3339), leaving
/// range and syntax checks to it.
fn ts_json(cell: &str, unit: TsUnit) -> Result<Json, String> {
    match unit {
        TsUnit::Seconds => cell
            .parse::<i64>()
            .ok()
            .and_then(Timestamp::from_secs)
            .map(|t| json!(t.millis()))
            .ok_or_else(|| format!("ts: `{cell}` is not whole seconds since 1970")),
        TsUnit::Millis => cell
            .parse::<i64>()
            .map(|ms| json!(ms))
            .map_err(|_| format!("ts: `{cell}` is not whole milliseconds since 1970")),
        TsUnit::Rfc3339 => Ok(json!(cell)),
    }
}

impl Iterator for CsvRows {
    type Item = Result<Record, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let (line, result) = match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => {
                self.done = true;
                return None;
            }
            Ok(true) => {
                let line = self
                    .record
                    .position()
                    .map_or(self.last_line + 1, |p| self.reader.get_mut().line_at(p.byte()).unwrap_or(p.line()));
                (line, self.row())
            }
            Err(e) => {
                let line = e.position().map_or(self.last_line + 1, |p| p.line());
                // An I/O error may repeat forever; a parse error is confined to its row.
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    self.done = true;
                }
                (line, Err(e.to_string()))
            }
        };
        self.last_line = line;
        Some(result.map_err(|reason| RowError { file: self.path.clone(), line, reason }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_core::{Config, Event, ItemRecord, UserRecord, Value};
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    const NOW: Timestamp = Timestamp(1_700_000_000_000);

    fn schema() -> Schema {
        Schema::from_config(&Config::default())
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn write_gz(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(bytes).unwrap();
        write(dir, name, &gz.finish().unwrap())
    }

    fn all(source: &Source) -> Vec<Result<Record, RowError>> {
        read(source, &schema(), NOW).unwrap().collect()
    }

    fn ok(results: Vec<Result<Record, RowError>>) -> Vec<Record> {
        results.into_iter().map(|r| r.unwrap()).collect()
    }

    fn s(v: &str) -> Value {
        Value::String(v.to_string())
    }

    fn list(v: &[&str]) -> Value {
        Value::StringList(v.iter().map(|g| g.to_string()).collect())
    }

    fn item(id: &str, attributes: Vec<(&str, Value)>) -> Record {
        Record::Item(ItemRecord {
            id: id.to_string(),
            attributes: attributes.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            available: true,
            created_at: None,
            deleted: false,
            updated_at: NOW,
        })
    }

    fn user(id: &str, attributes: Vec<(&str, Value)>) -> Record {
        Record::User(UserRecord {
            id: id.to_string(),
            attributes: attributes.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            updated_at: NOW,
        })
    }

    fn rating(id: Option<&str>, user: &str, item: &str, value: f64, ts_ms: i64) -> Record {
        Record::Event(Event {
            id: id.map(str::to_string),
            event_type: "rating".to_string(),
            ts: Timestamp(ts_ms),
            user: Some(user.to_string()),
            item: Some(item.to_string()),
            fields: vec![("value".to_string(), Value::Float(value))],
        })
    }

    #[test]
    fn movielens_100k() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "u.genre", b"unknown|0\nDrama|1\nSci-Fi|2\n\n");
        let mut items = b"7|Orbit Garden (1996)|03-Feb-1996||http://example.org/7|0|1|1\n".to_vec();
        items.extend_from_slice(b"9|Le Caf\xe9 Bleu (1931)|01-Jan-1931||http://example.org/9|0|1|0\n");
        items.extend_from_slice(b"12|Untitled||||1|0|0\n");
        write(dir.path(), "u.item", &items);
        write(dir.path(), "u.user", b"3|31|F|librarian|10001\n5|47|M|writer|20002\n");
        write_gz(dir.path(), "u.data.gz", b"3\t7\t4\t880000000\n5\t9\t2\t880000060\n");

        let records = ok(all(&Source::MovieLens(dir.path().to_path_buf())));
        let feb_3_1996 = 823_305_600_000;
        assert_eq!(
            records,
            [
                item(
                    "7",
                    vec![
                        ("genres", list(&["Drama", "Sci-Fi"])),
                        ("released_at", Value::Timestamp(Timestamp(feb_3_1996))),
                        ("title", s("Orbit Garden (1996)")),
                    ]
                ),
                // Latin-1 0xE9 is é; 1931 precedes what a Timestamp can hold, so no released_at.
                item("9", vec![("genres", list(&["Drama"])), ("title", s("Le Café Bleu (1931)"))]),
                item("12", vec![("genres", list(&["unknown"])), ("title", s("Untitled"))]),
                user("3", vec![("age", Value::Int(31)), ("gender", s("F")), ("occupation", s("librarian"))]),
                user("5", vec![("age", Value::Int(47)), ("gender", s("M")), ("occupation", s("writer"))]),
                rating(Some("ml:3:7"), "3", "7", 4.0, 880_000_000_000),
                rating(Some("ml:5:9"), "5", "9", 2.0, 880_000_060_000),
            ]
        );
    }

    #[test]
    fn movielens_1m_with_gzipped_ratings() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "movies.dat",
            b"21::Night Tram (1988)::Drama|Thriller\n22::L'\xc9t\xe9 Perdu (1994)::Romance\n",
        );
        write(dir.path(), "users.dat", b"40::F::25::12::30303\n41::M::56::99::40404\n");
        write_gz(dir.path(), "ratings.dat.gz", b"40::21::5::960000000\n41::22::3::960000001\n");

        let records = ok(all(&Source::MovieLens(dir.path().to_path_buf())));
        let jan_1_1988 = 567_993_600_000;
        let jan_1_1994 = 757_382_400_000;
        assert_eq!(
            records,
            [
                item(
                    "21",
                    vec![
                        ("genres", list(&["Drama", "Thriller"])),
                        ("released_at", Value::Timestamp(Timestamp(jan_1_1988))),
                        ("title", s("Night Tram (1988)")),
                    ]
                ),
                item(
                    "22",
                    vec![
                        ("genres", list(&["Romance"])),
                        ("released_at", Value::Timestamp(Timestamp(jan_1_1994))),
                        ("title", s("L'Été Perdu (1994)")),
                    ]
                ),
                user("40", vec![("age", Value::Int(25)), ("gender", s("F")), ("occupation", s("programmer"))]),
                // An occupation code outside the README's list is kept as written.
                user("41", vec![("age", Value::Int(56)), ("gender", s("M")), ("occupation", s("99"))]),
                rating(Some("ml:40:21"), "40", "21", 5.0, 960_000_000_000),
                rating(Some("ml:41:22"), "41", "22", 3.0, 960_000_001_000),
            ]
        );
    }

    #[test]
    fn movielens_prefix_ratings_file_is_found() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "movies.dat", b"1::A (2001)::Comedy\n");
        write(dir.path(), "users.dat", b"1::M::18::4::11111\n");
        write_gz(dir.path(), "ratings.prefix.dat.gz", b"1::1::4::1000000000\n");
        let records = ok(all(&Source::MovieLens(dir.path().to_path_buf())));
        assert_eq!(records[2], rating(Some("ml:1:1"), "1", "1", 4.0, 1_000_000_000_000));
    }

    #[test]
    fn bad_lines_carry_their_number_and_reading_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "movies.dat", b"1::A (2001)::Comedy\nx::B (2002)::Drama\n\n3::C\n");
        write(dir.path(), "users.dat", b"1::M::18::4::11111\n");
        let ratings = write(
            dir.path(),
            "ratings.dat",
            b"1::1::4::1000000000\nabc::1::4::1000000000\n1::1::4\n1::1::4::soon\n1::1::9::-5\n1::3::2.5::1000000001\n",
        );
        let results = all(&Source::MovieLens(dir.path().to_path_buf()));
        let errors: Vec<(String, u64, String)> = results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .map(|e| (e.file.file_name().unwrap().to_string_lossy().into_owned(), e.line, e.reason.clone()))
            .collect();
        assert_eq!(
            errors,
            [
                ("movies.dat".into(), 2, "item id `x` is not a non-negative integer".into()),
                // Line 3 is blank and skipped, but still counted.
                ("movies.dat".into(), 4, "expected id::title::genres".into()),
                ("ratings.dat".into(), 2, "user id `abc` is not a non-negative integer".into()),
                ("ratings.dat".into(), 3, "expected 4 columns (user::item::rating::timestamp), found 3".into()),
                ("ratings.dat".into(), 4, "timestamp `soon` is not seconds since 1970".into()),
                ("ratings.dat".into(), 5, "timestamp `-5` is not seconds since 1970".into()),
            ]
        );
        let last = results.last().unwrap().as_ref().unwrap();
        assert_eq!(*last, rating(Some("ml:1:3"), "1", "3", 2.5, 1_000_000_001_000));
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 4);
        let shown = results[5].as_ref().unwrap_err().to_string();
        assert_eq!(shown, format!("{}:2: user id `abc` is not a non-negative integer", ratings.display()));
    }

    #[test]
    fn schema_failures_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.entities.user.attributes.remove("gender");
        let schema = Schema::from_config(&config);
        write(dir.path(), "u.genre", b"Drama|0\n");
        write(dir.path(), "u.item", b"1|T|||u|1\n");
        write(dir.path(), "u.user", b"1|20|F|artist|1\n");
        write(dir.path(), "u.data", b"1\t1\t3\t900000000\n");
        let source = Source::MovieLens(dir.path().to_path_buf());
        let results: Vec<_> = read(&source, &schema, NOW).unwrap().collect();
        let err = results[1].as_ref().unwrap_err();
        assert_eq!((err.line, err.file.file_name().unwrap().to_str()), (1, Some("u.user")));
        assert!(err.reason.starts_with("attributes.gender: unknown field"), "{}", err.reason);
    }

    #[test]
    fn movielens_detection_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = read(&Source::MovieLens(dir.path().to_path_buf()), &schema(), NOW).err().unwrap();
        assert!(err.to_string().contains("holds no MovieLens ratings"), "{err}");
        write(dir.path(), "u.data", b"1\t1\t3\t900000000\n");
        let err = read(&Source::MovieLens(dir.path().to_path_buf()), &schema(), NOW).err().unwrap();
        assert!(err.to_string().ends_with("looks like MovieLens 100K but has no u.genre"), "{err}");
        let missing = Source::MovieLens(dir.path().join("nope"));
        assert!(read(&missing, &schema(), NOW).is_err());
    }

    #[test]
    fn csv_with_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "ratings.csv",
            b"userId,movieId,rating,timestamp,comment\nu1,m1,4.5,1600000000,nice\nu2,m2,3,1600000060,\n",
        );
        let source = Source::Csv {
            path,
            event_type: "rating".into(),
            mapping: parse_mapping("user=userId, item=movieId, ts=timestamp, value=rating").unwrap(),
            ts_unit: TsUnit::Seconds,
            delimiter: b',',
        };
        assert_eq!(
            ok(all(&source)),
            [rating(None, "u1", "m1", 4.5, 1_600_000_000_000), rating(None, "u2", "m2", 3.0, 1_600_000_060_000),]
        );
    }

    #[test]
    fn csv_with_rfc3339_gzip_and_text_that_looks_numeric() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_gz(
            dir.path(),
            "views.csv.gz",
            b"when;who;what;where;pos;key\n\
              2024-05-01T12:00:00Z;u1;i1;42;3;v-1\n\
              2024-05-01T12:00:01.5+02:00;u2;i2;home;;v-2\n",
        );
        let source = Source::Csv {
            path,
            event_type: "view".into(),
            mapping: parse_mapping("ts=when,user=who,item=what,surface=where,position=pos,id=key").unwrap(),
            ts_unit: TsUnit::Rfc3339,
            delimiter: b';',
        };
        let view = |id: &str, ts, user: &str, item: &str, fields: Vec<(&str, Value)>| {
            Record::Event(Event {
                id: Some(id.into()),
                event_type: "view".into(),
                ts: Timestamp(ts),
                user: Some(user.into()),
                item: Some(item.into()),
                fields: fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            })
        };
        assert_eq!(
            ok(all(&source)),
            [
                // `surface` is a string field: the cell `42` is kept as text.
                view("v-1", 1_714_564_800_000, "u1", "i1", vec![("position", Value::Int(3)), ("surface", s("42"))]),
                view("v-2", 1_714_557_601_500, "u2", "i2", vec![("surface", s("home"))]),
            ]
        );
    }

    #[test]
    fn csv_errors_carry_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "r.csv",
            b"u,i,v,t,note\n\
              u1,i1,4,100,\n\
              u1,i1,4\n\
              \n\
              u1,i1,high,100,\n\
              u1,i1,4,yesterday,\n\
              u2,i2,5,200,\"two\nlines\"\n\
              u3,i3,,300,\n",
        );
        let source = Source::Csv {
            path,
            event_type: "rating".into(),
            mapping: parse_mapping("user=u,item=i,value=v,ts=t").unwrap(),
            ts_unit: TsUnit::Millis,
            delimiter: b',',
        };
        let results = all(&source);
        // The user and ts of a record, or the line and reason of an error.
        type Outcome = Result<(Option<String>, i64), (u64, String)>;
        let summary: Vec<Outcome> = results
            .into_iter()
            .map(|r| match r {
                Ok(Record::Event(e)) => Ok((e.user, e.ts.millis())),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err((e.line, e.reason)),
            })
            .collect();
        assert_eq!(
            summary,
            [
                Ok((Some("u1".into()), 100)),
                Err((3, "expected 5 columns (as in the header), found 3".into())),
                Err((5, "fields.value: expected float, got string".into())),
                Err((6, "ts: `yesterday` is not whole milliseconds since 1970".into())),
                Ok((Some("u2".into()), 200)),
                // Line 8 continues the quoted note of line 7.
                Err((9, "fields.value: required (float)".into())),
            ]
        );
    }

    #[test]
    fn csv_open_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "r.csv", b"a,b\n1,2\n");
        let csv = |event_type: &str, mapping: &str| Source::Csv {
            path: path.clone(),
            event_type: event_type.into(),
            mapping: parse_mapping(mapping).unwrap(),
            ts_unit: TsUnit::Seconds,
            delimiter: b',',
        };
        let err = |source: Source| read(&source, &schema(), NOW).err().unwrap().to_string();
        assert!(
            err(csv("rating", "user=a,ts=zzz")).contains("has no column `zzz` (mapped to `ts`); its columns are: a, b")
        );
        assert!(err(csv("rating", "user=a")).contains("no `ts` column"));
        assert!(err(csv("teleport", "ts=a")).contains("no `teleport` event type"));
    }

    #[test]
    fn ndjson_events_and_upserts() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "in.ndjson",
            br#"{"type":"like","ts":"2024-01-01T00:00:00Z","user":"u1","item":"i1","id":"e1"}
{"kind":"item","id":"i1","attributes":{"title":"Lamp","price":12.5},"available":false}

{"kind":"user","id":7,"attributes":{"country":"NZ"},"updated_at":5000}
{"type":"like","ts":0,"user":"u1"}
not json
{"kind":"shop","id":"s"}
{"type":"like","ts":1,"user":"u2","item":"i2"}
"#,
        );
        let results = all(&Source::Ndjson(path));
        assert_eq!(results.len(), 7);
        assert_eq!(
            results[0],
            Ok(Record::Event(Event {
                id: Some("e1".into()),
                event_type: "like".into(),
                ts: Timestamp(1_704_067_200_000),
                user: Some("u1".into()),
                item: Some("i1".into()),
                fields: vec![],
            }))
        );
        assert_eq!(
            results[1],
            Ok(Record::Item(ItemRecord {
                id: "i1".into(),
                attributes: vec![("price".into(), Value::Float(12.5)), ("title".into(), s("Lamp"))],
                available: false,
                created_at: None,
                deleted: false,
                updated_at: NOW,
            }))
        );
        assert_eq!(
            results[2],
            Ok(user("7", vec![("country", s("NZ"))])).map(|r| match r {
                Record::User(u) => Record::User(UserRecord { updated_at: Timestamp(5000), ..u }),
                other => other,
            })
        );
        let err = |i: usize| {
            let e = results[i].as_ref().unwrap_err();
            (e.line, e.reason.clone())
        };
        assert_eq!(err(3), (5, "item: required by this event type".into()));
        assert_eq!(err(4).0, 6);
        assert!(err(4).1.starts_with("invalid JSON: "), "{}", err(4).1);
        assert_eq!(err(5), (7, "kind: expected \"item\" or \"user\", got \"shop\"".into()));
        assert_eq!(results[6].as_ref().unwrap().ts(), Timestamp(1));
    }

    #[test]
    fn ndjson_must_be_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "x.ndjson", b"{\"type\":\"like\",\"user\":\"\xe9\"}\n");
        let e = all(&Source::Ndjson(path)).remove(0).unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.reason.starts_with("not valid UTF-8"), "{}", e.reason);
    }

    #[test]
    fn latin1_decoding() {
        assert_eq!(decode(Encoding::Latin1, b"Caf\xe9 \xfcber \xa3").unwrap(), "Café über £");
        // Already UTF-8 (a re-encoded copy): left alone instead of double-decoded.
        assert_eq!(decode(Encoding::Latin1, "Café".as_bytes()).unwrap(), "Café");
    }

    #[test]
    fn mapping_parses_and_explains() {
        assert_eq!(
            parse_mapping("user=userId, item = movieId,ts=timestamp,value=rating").unwrap(),
            [
                ("user".to_string(), "userId".to_string()),
                ("item".to_string(), "movieId".to_string()),
                ("ts".to_string(), "timestamp".to_string()),
                ("value".to_string(), "rating".to_string()),
            ]
        );
        let err = |s: &str| parse_mapping(s).unwrap_err().to_string();
        assert_eq!(err("user"), "mapping entry `user` has no `=` (write key=column, e.g. user=userId)");
        assert_eq!(err("user="), "mapping entry `user=` needs both a key and a column (e.g. user=userId)");
        assert_eq!(err("=userId"), "mapping entry `=userId` needs both a key and a column (e.g. user=userId)");
        assert_eq!(
            err("user=a,,item=b"),
            "empty entry in mapping `user=a,,item=b` (write key=column pairs separated by commas)"
        );
        assert_eq!(err("user=a,user=b"), "mapping key `user` appears twice");
        assert_eq!(err("type=kind"), "`type` cannot be mapped: the event type is chosen for the whole file");
        assert!(err("userId=user").contains("mapping key `userId` is not id, user, item, ts or a field name"));
    }

    #[test]
    fn ts_unit_from_str() {
        assert_eq!("seconds".parse(), Ok(TsUnit::Seconds));
        assert_eq!("ms".parse(), Ok(TsUnit::Millis));
        assert_eq!("rfc3339".parse(), Ok(TsUnit::Rfc3339));
        assert!("hours".parse::<TsUnit>().unwrap_err().contains("unknown timestamp unit `hours`"));
    }
}
