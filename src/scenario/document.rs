//! What scenario, suite and topology files share: reading with a size limit, the YAML syntax pass that builds the
//! source map, deserialisation into the raw serde types, and a collector for the errors found afterwards.

use std::fs;
use std::io;
use std::path::Path;

use serde::de::DeserializeOwned;

use super::source_map::{NodeKind, Pos, SourceMap};
use crate::input_error::{InputError, InputErrors};

/// Input files are hand-written; anything bigger is a mistake (a log or a binary passed by accident).
pub const MAX_INPUT_BYTES: u64 = 1024 * 1024;

/// Why a referenced file could not be read.
pub enum ReadFailure {
    /// Missing or unreadable: best reported where the file is referenced.
    Io(io::Error),
    /// The file exists but is not acceptable input: reported against the file itself.
    Invalid(InputError),
}

/// Reads an input file without loading one that is over the size limit or not a regular file (a device such as
/// /dev/zero, a FIFO or a directory is refused before anything is read from it). The read itself stops past the
/// limit too, for files whose size the kernel reports as 0 (/proc) or that grow while being read.
pub fn read_input(path: &Path) -> Result<String, ReadFailure> {
    use std::io::Read;
    // stat before open: opening a FIFO for reading would block until a writer comes.
    let meta = fs::metadata(path).map_err(ReadFailure::Io)?;
    if !meta.is_file() {
        return Err(ReadFailure::Invalid(InputError::whole_file(
            path,
            format!(
                "not a regular file ({}); give the path of a YAML file",
                file_kind(&meta)
            ),
        )));
    }
    if meta.len() > MAX_INPUT_BYTES {
        return Err(ReadFailure::Invalid(too_large(path, meta.len())));
    }
    let file = fs::File::open(path).map_err(ReadFailure::Io)?;
    let mut bytes = Vec::new();
    file.take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadFailure::Io)?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(ReadFailure::Invalid(too_large(path, bytes.len() as u64)));
    }
    String::from_utf8(bytes).map_err(|e| {
        ReadFailure::Invalid(InputError::whole_file(
            path,
            format!(
                "the file is not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        ))
    })
}

/// [`read_input`] for the file the user named: every failure is about the file as a whole.
pub fn read_input_file(path: &Path) -> Result<String, InputErrors> {
    read_input(path).map_err(|f| match f {
        ReadFailure::Io(e) => {
            InputError::whole_file(path, format!("cannot read the file: {e}")).into()
        }
        ReadFailure::Invalid(e) => e.into(),
    })
}

fn file_kind(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

fn too_large(path: &Path, size: u64) -> InputError {
    InputError::whole_file(
        path,
        format!("the file is {size} bytes, over the limit of {MAX_INPUT_BYTES} bytes (1 MiB); it was not parsed"),
    )
}

/// Syntax pass, then serde into the raw type `T`. `expected` completes "expected ..." for an empty file or a
/// document that is not a mapping, e.g. "a topology (a mapping with name and nodes)".
pub fn read_document<T: DeserializeOwned>(
    text: &str,
    path: &Path,
    expected: &str,
) -> Result<(T, SourceMap), InputErrors> {
    let size = u64::try_from(text.len()).unwrap_or(u64::MAX);
    if size > MAX_INPUT_BYTES {
        return Err(too_large(path, size).into());
    }
    let map = SourceMap::build(text).map_err(|errs| {
        InputErrors(
            errs.into_iter()
                .map(|e| InputError::new(path, e.pos.line, e.pos.column, e.message))
                .collect(),
        )
    })?;
    if map.is_empty_document() {
        return Err(InputError::whole_file(
            path,
            format!("the file is empty; expected {expected}"),
        )
        .into());
    }
    if let Some(kind) = map.kind("").filter(|k| *k != NodeKind::Mapping) {
        let pos = map.locate("");
        return Err(InputError::new(
            path,
            pos.line,
            pos.column,
            format!("expected {expected}, found {}", kind.describe()),
        )
        .into());
    }
    let raw = serde_norway::from_str::<T>(text).map_err(|e| serde_error(path, &map, &e))?;
    Ok((raw, map))
}

fn serde_error(path: &Path, map: &SourceMap, e: &serde_norway::Error) -> InputErrors {
    let message = tidy_serde_message(&strip_locations(&e.to_string()));
    let pos = match e.location() {
        Some(l) if l.line() > 0 => Pos {
            line: l.line(),
            column: l.column().max(1),
        },
        // serde prefixes the path of the value it was reading; that is the next best place.
        _ => message
            .split_once(": ")
            .map(|(p, _)| map.locate(p))
            .unwrap_or(Pos::START),
    };
    InputError::new(path, pos.line, pos.column, message).into()
}

/// Drops serde_norway's " at line L column C" (our own prefix already says where).
fn strip_locations(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find(" at line ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + " at line ".len()..];
        let skip = location_len(after);
        if skip == 0 {
            out.push_str(" at line ");
            rest = after;
        } else {
            rest = &after[skip..];
        }
    }
    out.push_str(rest);
    out
}

/// Length of `L column C` at the start of `s`, or 0 when it is not there.
fn location_len(s: &str) -> usize {
    let digits = |t: &str| t.bytes().take_while(u8::is_ascii_digit).count();
    let line = digits(s);
    if line == 0 {
        return 0;
    }
    let Some(after) = s[line..].strip_prefix(" column ") else {
        return 0;
    };
    let col = digits(after);
    if col == 0 {
        0
    } else {
        line + " column ".len() + col
    }
}

/// Rewrites serde's Rust-flavoured wording into the words a YAML author uses.
fn tidy_serde_message(message: &str) -> String {
    if let Some(m) = unknown_key_message(message) {
        return m;
    }
    let mut m = message.to_string();
    while let Some(i) = m.find("expected struct ") {
        let start = i + "expected ".len();
        let name_end = m[start + "struct ".len()..]
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(m.len(), |e| start + "struct ".len() + e);
        m.replace_range(start..name_end, "a mapping");
    }
    for (from, to) in [
        ("expected i64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected a list"),
        ("invalid type: sequence", "invalid type: list"),
        ("invalid type: map", "invalid type: mapping"),
    ] {
        m = m.replace(from, to);
    }
    m
}

/// `faults[0]: unknown field `tagret`, expected one of `kind`, `target`` ->
/// `faults[0]: unknown key `tagret` (did you mean `target`?); allowed keys: kind, target`.
fn unknown_key_message(message: &str) -> Option<String> {
    let i = message.find("unknown field `")?;
    let (prefix, rest) = message.split_at(i);
    let rest = &rest["unknown field `".len()..];
    let end = rest.find('`')?;
    let key = &rest[..end];
    let allowed: Vec<&str> = rest[end + 1..].split('`').skip(1).step_by(2).collect();
    let hint = did_you_mean(key, &allowed)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default();
    let list = if allowed.is_empty() {
        "there are no keys allowed here".to_string()
    } else {
        format!("allowed keys: {}", allowed.join(", "))
    };
    Some(format!("{prefix}unknown key `{key}`{hint}; {list}"))
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Errors found after deserialisation, each placed through the source map.
pub struct Diagnostics<'a> {
    file: &'a Path,
    map: &'a SourceMap,
    errors: Vec<InputError>,
}

impl<'a> Diagnostics<'a> {
    pub fn new(file: &'a Path, map: &'a SourceMap) -> Self {
        Diagnostics {
            file,
            map,
            errors: Vec::new(),
        }
    }

    pub fn map(&self) -> &SourceMap {
        self.map
    }

    /// An error about the value at `path` (or its nearest ancestor in the file).
    pub fn at(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.map.locate(path);
        self.push(pos, message);
    }

    /// An error about the key of the entry at `path`, e.g. a key that does not belong there.
    pub fn at_key(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.map.locate_key(path);
        self.push(pos, message);
    }

    fn push(&mut self, pos: Pos, message: impl Into<String>) {
        self.errors
            .push(InputError::new(self.file, pos.line, pos.column, message));
    }

    /// Errors from another file (a referenced topology or scenario), kept as they are.
    pub fn extend(&mut self, errors: InputErrors) {
        self.errors.extend(errors.0);
    }

    /// A required key: reports it missing (or present but empty) and passes the value on.
    pub fn require<T>(&mut self, value: Option<T>, path: &str, hint: &str) -> Option<T> {
        if value.is_none() {
            if self.map.contains(path) {
                self.at(path, format!("`{path}` has no value; {hint}"));
            } else {
                let parent = path.rfind(['.', '[']).map_or("", |i| &path[..i]);
                let key = path.rsplit(['.', '[']).next().unwrap_or(path);
                self.at(parent, format!("missing required key `{key}`; {hint}"));
            }
        }
        value
    }

    /// Checks a whole number against an inclusive range, naming the field.
    pub fn int_in_range(
        &mut self,
        value: i64,
        path: &str,
        label: &str,
        min: i64,
        max: i64,
    ) -> Option<u32> {
        if (min..=max).contains(&value) {
            u32::try_from(value).ok()
        } else {
            self.at(
                path,
                format!("{label} {value} is out of range: allowed {min} to {max}"),
            );
            None
        }
    }

    /// The value when no error was recorded, else every error.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, InputErrors> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ if self.errors.is_empty() => Err(InputError::whole_file(
                self.file,
                "the file could not be validated (no specific problem was found)",
            )
            .into()),
            _ => Err(InputErrors(self.errors)),
        }
    }
}

/// Names of scenarios, suites and topologies: they end up in file names, report titles and JUnit ids.
pub fn check_name(d: &mut Diagnostics<'_>, name: &str, path: &str, what: &str) -> bool {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        d.at(
            path,
            format!(
                "{what} name `{name}` is not valid: use lowercase letters, digits and `-`, starting with a letter or \
                 digit, at most 64 characters"
            ),
        );
    }
    valid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_need_a_close_match() {
        let keys = ["observe", "baseline", "faults"];
        assert_eq!(did_you_mean("obsrve", &keys), Some("observe"));
        assert_eq!(did_you_mean("fault", &keys), Some("faults"));
        assert_eq!(did_you_mean("zzz", &keys), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn strips_serde_locations_only() {
        assert_eq!(
            strip_locations("bad at line 3 column 7, while parsing at line 1 column 1"),
            "bad, while parsing"
        );
        assert_eq!(strip_locations("at line x"), "at line x");
        assert_eq!(strip_locations("a at line 3 b"), "a at line 3 b");
    }

    #[test]
    fn rewrites_unknown_field_messages() {
        assert_eq!(
            tidy_serde_message(
                "faults[0]: unknown field `tagret`, expected one of `kind`, `target`"
            ),
            "faults[0]: unknown key `tagret` (did you mean `target`?); allowed keys: kind, target"
        );
        assert_eq!(
            tidy_serde_message("a: invalid type: string \"x\", expected struct RawLoad"),
            "a: invalid type: string \"x\", expected a mapping"
        );
        assert_eq!(
            tidy_serde_message("trials: invalid type: string \"x\", expected i64"),
            "trials: invalid type: string \"x\", expected a whole number"
        );
    }
}
