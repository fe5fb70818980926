//! Line and column of every node of a YAML document, keyed by its path (`faults[1].target.node`).
//!
//! serde only reports positions for the errors it finds itself; the checks that run on the deserialised values
//! (ranges, references to topology nodes, rules between fields) look their position up here instead.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    /// The first character of the file: where errors without a better place point.
    pub const START: Pos = Pos { line: 1, column: 1 };

    fn from_marker(m: Marker) -> Pos {
        // yaml-rust2 counts lines from 1 but columns from 0.
        Pos {
            line: m.line().max(1),
            column: m.col() + 1,
        }
    }
}

/// Far deeper than any input file needs, and well inside serde_norway's own recursion limit.
const MAX_DEPTH: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// `~`, `null` or nothing at all.
    Null,
    Scalar,
    Mapping,
    Sequence,
    /// `*anchor`: its content is not mapped again.
    Alias,
}

impl NodeKind {
    /// How the node reads to someone who wrote it, for "expected a mapping, found a list".
    pub fn describe(self) -> &'static str {
        match self {
            NodeKind::Null => "nothing",
            NodeKind::Scalar => "a single value",
            NodeKind::Mapping => "a mapping",
            NodeKind::Sequence => "a list",
            NodeKind::Alias => "an alias",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    value: Pos,
    key: Option<Pos>,
    kind: NodeKind,
}

/// A problem found while reading the YAML text itself, before any field is looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Positions of the nodes of the first document of a YAML text.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    entries: HashMap<String, Entry>,
}

impl SourceMap {
    /// Reads the whole text. A syntax error stops at the first one; duplicate keys and extra documents are all
    /// collected, because serde would otherwise report them without a useful position.
    pub fn build(text: &str) -> Result<SourceMap, Vec<SyntaxError>> {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        // Pulled event by event: `Parser::load` recurses once per nesting level and can overflow the stack.
        loop {
            match parser.next_token() {
                Ok((Event::StreamEnd, _)) => break,
                Ok((event, mark)) => builder.on_event(event, mark),
                Err(e) => {
                    return Err(vec![SyntaxError {
                        pos: Pos::from_marker(*e.marker()),
                        message: format!("YAML syntax error: {}", e.info()),
                    }]);
                }
            }
            if builder.too_deep {
                return Err(builder.problems);
            }
        }
        if builder.problems.is_empty() {
            Ok(SourceMap {
                entries: builder.entries,
            })
        } else {
            Err(builder.problems)
        }
    }

    /// Where the value at `path` starts. The root is the empty path.
    pub fn value(&self, path: &str) -> Option<Pos> {
        self.entries.get(path).map(|e| e.value)
    }

    /// Where the key of the mapping entry at `path` starts.
    pub fn key(&self, path: &str) -> Option<Pos> {
        self.entries.get(path).and_then(|e| e.key)
    }

    pub fn kind(&self, path: &str) -> Option<NodeKind> {
        self.entries.get(path).map(|e| e.kind)
    }

    /// Whether the document has the entry at all, even with a null value.
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path)
    }

    /// The value at `path`, or else its nearest ancestor that is in the map: a value that came from an alias or a
    /// default still gets a position close to where it applies.
    pub fn locate(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = self.value(p) {
                return pos;
            }
            match parent(p) {
                Some(up) => p = up,
                None => return Pos::START,
            }
        }
    }

    /// The key of the entry at `path` (the place to blame for a key that is not allowed), else as [`Self::locate`].
    pub fn locate_key(&self, path: &str) -> Pos {
        self.key(path).unwrap_or_else(|| self.locate(path))
    }

    /// True when the document holds no value: an empty file, only comments, or a lone `---`.
    pub fn is_empty_document(&self) -> bool {
        matches!(self.kind(""), None | Some(NodeKind::Null))
    }
}

/// `a.b[2]` -> `a.b`, `a.b` -> `a`, `a` -> the root, the root -> None.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

enum Frame {
    Map {
        path: String,
        /// The key whose value comes next; None while a key is expected.
        key: Option<(String, Pos)>,
        /// Keys seen so far, for duplicate detection.
        seen: HashMap<String, Pos>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    entries: HashMap<String, Entry>,
    stack: Vec<Frame>,
    documents: usize,
    problems: Vec<SyntaxError>,
    /// Set once nesting passes [`MAX_DEPTH`]; parsing stops there.
    too_deep: bool,
}

impl Builder {
    /// Works out the path of a node that starts here and records it; None when the node is a mapping key.
    fn node(&mut self, kind: NodeKind, pos: Pos, scalar: Option<&str>) -> NodePath {
        match self.stack.last_mut() {
            None => NodePath::Value(String::new(), None),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                NodePath::Value(p, None)
            }
            Some(Frame::Map { path, key, seen }) => match key.take() {
                Some((k, key_pos)) => NodePath::Value(child(path, &k), Some(key_pos)),
                None => {
                    // A key: only plain text keys are addressable; a complex key is mapped under `?`.
                    let k = match (kind, scalar) {
                        (NodeKind::Scalar | NodeKind::Null, Some(s)) => s.to_string(),
                        _ => "?".to_string(),
                    };
                    let map_path = path.clone();
                    if let Some(first) = seen.get(&k) {
                        if k != "?" {
                            self.problems.push(SyntaxError {
                                pos,
                                message: format!(
                                    "the key `{k}` appears twice in this mapping (first at line {}, column {})",
                                    first.line, first.column
                                ),
                            });
                        }
                    } else {
                        seen.insert(k.clone(), pos);
                    }
                    let key_path = child(&map_path, "?");
                    *key = Some((k, pos));
                    // A block mapping's start event is marked after its first key; the key's own place is better.
                    if let Some(entry) = self.entries.get_mut(&map_path) {
                        if entry.kind == NodeKind::Mapping && pos < entry.value {
                            entry.value = pos;
                        }
                    }
                    NodePath::Key(key_path)
                }
            },
        }
    }

    fn start(&mut self, kind: NodeKind, mark: Marker, scalar: Option<&str>) {
        let pos = Pos::from_marker(mark);
        let path = match self.node(kind, pos, scalar) {
            NodePath::Value(path, key) => {
                self.entries.insert(
                    path.clone(),
                    Entry {
                        value: pos,
                        key,
                        kind,
                    },
                );
                path
            }
            NodePath::Key(path) => path,
        };
        if matches!(kind, NodeKind::Mapping | NodeKind::Sequence) && self.stack.len() >= MAX_DEPTH {
            self.too_deep = true;
            self.problems.push(SyntaxError {
                pos,
                message: format!("the document is nested more than {MAX_DEPTH} levels deep"),
            });
            return;
        }
        match kind {
            NodeKind::Mapping => self.stack.push(Frame::Map {
                path,
                key: None,
                seen: HashMap::new(),
            }),
            NodeKind::Sequence => self.stack.push(Frame::Seq { path, next: 0 }),
            _ => {}
        }
    }
}

enum NodePath {
    /// A value node with its path and, inside a mapping, the position of its key.
    Value(String, Option<Pos>),
    /// A mapping key; complex keys still get a path so their children have somewhere to go.
    Key(String),
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if let Event::DocumentStart = ev {
            self.documents += 1;
            if self.documents == 2 {
                self.problems.push(SyntaxError {
                    pos: Pos::from_marker(mark),
                    message: "the file holds more than one YAML document (a second `---`); keep one per file"
                        .to_string(),
                });
            }
            return;
        }
        if self.documents > 1 {
            return;
        }
        match ev {
            Event::Scalar(value, style, _, _) => {
                let is_null = style == TScalarStyle::Plain
                    && matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL");
                let kind = if is_null {
                    NodeKind::Null
                } else {
                    NodeKind::Scalar
                };
                self.start(kind, mark, Some(&value));
            }
            Event::Alias(_) => self.start(NodeKind::Alias, mark, None),
            Event::MappingStart(..) => self.start(NodeKind::Mapping, mark, None),
            Event::SequenceStart(..) => self.start(NodeKind::Sequence, mark, None),
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(line: usize, column: usize) -> Option<Pos> {
        Some(Pos { line, column })
    }

    #[test]
    fn maps_nested_paths_to_value_positions() {
        let text = "name: x\nfaults:\n  - kind: process-kill\n    target: {node: n9}\n  - kind: partition\n    side_a:\n      - role: primary\n";
        let map = SourceMap::build(text).unwrap();
        assert_eq!(map.value(""), pos(1, 1));
        assert_eq!(map.value("name"), pos(1, 7));
        assert_eq!(map.key("name"), pos(1, 1));
        assert_eq!(map.value("faults"), pos(3, 3));
        assert_eq!(map.value("faults[0]"), pos(3, 5));
        assert_eq!(map.value("faults[0].kind"), pos(3, 11));
        assert_eq!(map.value("faults[0].target"), pos(4, 13));
        assert_eq!(map.value("faults[0].target.node"), pos(4, 20));
        assert_eq!(map.key("faults[0].target.node"), pos(4, 14));
        assert_eq!(map.value("faults[1].side_a[0].role"), pos(7, 15));
        assert_eq!(map.kind("faults[1].side_a"), Some(NodeKind::Sequence));
    }

    #[test]
    fn locate_falls_back_to_the_nearest_ancestor() {
        let map = SourceMap::build("a:\n  b: 1\n").unwrap();
        assert_eq!(map.locate("a.c.d"), Pos { line: 2, column: 3 });
        assert_eq!(map.locate("z"), Pos::START);
        assert_eq!(map.locate_key("a.b"), Pos { line: 2, column: 3 });
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let errs = SourceMap::build("a: x\n  b: y\n").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].pos, Pos { line: 2, column: 4 });
        assert!(errs[0].message.contains("YAML syntax error"));
    }

    #[test]
    fn reports_every_duplicate_key() {
        let errs = SourceMap::build("a: 1\nb: 2\na: 3\nc:\n  d: 1\n  d: 2\n").unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].pos, Pos { line: 3, column: 1 });
        assert!(errs[0].message.contains("first at line 1, column 1"));
        assert_eq!(errs[1].pos, Pos { line: 6, column: 3 });
    }

    #[test]
    fn rejects_a_second_document() {
        let errs = SourceMap::build("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(errs[0].pos.line, 2);
    }

    #[test]
    fn empty_documents_are_recognised() {
        for text in ["", "# only a comment\n", "---\n", "~\n"] {
            assert!(
                SourceMap::build(text).unwrap().is_empty_document(),
                "{text:?}"
            );
        }
        assert!(!SourceMap::build("a: 1\n").unwrap().is_empty_document());
    }

    #[test]
    fn deep_nesting_is_an_error() {
        let errs = SourceMap::build(&format!("a:\n{}", "- ".repeat(10_000))).unwrap_err();
        assert!(
            errs[0].message.contains("nested more than 64 levels"),
            "{errs:?}"
        );
        assert!(SourceMap::build(&"[".repeat(10_000)).is_err());
    }

    #[test]
    fn complex_keys_do_not_confuse_paths() {
        let map = SourceMap::build("? [a, b]\n: 1\nc: 2\n").unwrap();
        assert_eq!(map.value("c"), pos(3, 4));
    }
}
