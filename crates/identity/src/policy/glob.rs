//! IAM wildcard matching (`*` any run of characters, `?` exactly one character) in linear time.
//!
//! A pattern is compiled once into the segments between its `*`s. Matching anchors the first
//! segment at the start and the last at the end, then finds each middle segment at its leftmost
//! position after the previous one. Leftmost placement is always safe for `*`-separated segments
//! (a later placement leaves strictly less room for the rest), so the matcher never backtracks.
//! Each search resumes where the previous match ended, so the text is scanned once:
//! - segments without `?` use `str::find` (two-way search, linear);
//! - segments with `?` of up to 64 characters run a bit-parallel shift-and automaton, one step per
//!   character of text;
//! - longer segments with `?` (unusual: the whole policy is at most 2048 characters) fall back to
//!   trying each start position, O(text × segment), still without exponential blow-up.
//!
//! `?` matches one Unicode scalar value, not one byte, as IAM documents it for characters.

/// One element of a pattern being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GlobToken<'a> {
    /// Text matched as is.
    Literal(&'a str),
    /// `*`.
    AnyRun,
    /// `?`.
    AnyChar,
}

/// A compiled wildcard pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    /// The parts between `*`s; one more than the number of (collapsed) `*`s, never empty.
    segments: Box<[Segment]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(Box<str>),
    AnyChar,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    pieces: Box<[Piece]>,
    /// Length in characters (every match of the segment has exactly this many).
    chars: usize,
    search: Search,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Search {
    /// The segment is empty: it matches anywhere.
    Empty,
    /// The segment is one literal: `str::find`.
    Literal(Box<str>),
    /// Bit-parallel automaton for segments with `?`, up to 64 characters.
    ShiftAnd(ShiftAnd),
    /// Try each start position.
    Naive,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ShiftAnd {
    /// Bit i is set when position i of the segment is `?`.
    any: u64,
    /// For each distinct literal character, the positions holding it; sorted by character.
    table: Box<[(char, u64)]>,
    /// The bit of the segment's last position.
    accept: u64,
}

impl ShiftAnd {
    fn build(pieces: &[Piece], chars: usize) -> Option<ShiftAnd> {
        if chars == 0 || chars > 64 {
            return None;
        }
        let mut any = 0u64;
        let mut table: Vec<(char, u64)> = Vec::new();
        let mut position = 0;
        for piece in pieces {
            match piece {
                Piece::AnyChar => {
                    any |= 1 << position;
                    position += 1;
                }
                Piece::Literal(text) => {
                    for c in text.chars() {
                        match table.iter_mut().find(|(k, _)| *k == c) {
                            Some((_, mask)) => *mask |= 1 << position,
                            None => table.push((c, 1 << position)),
                        }
                        position += 1;
                    }
                }
            }
        }
        table.sort_unstable_by_key(|(c, _)| *c);
        Some(ShiftAnd {
            any,
            table: table.into_boxed_slice(),
            accept: 1 << (chars - 1),
        })
    }

    /// End (byte offset) of the leftmost match in `text`.
    fn find(&self, text: &str) -> Option<usize> {
        let mut state = 0u64;
        for (i, c) in text.char_indices() {
            let mask = match self.table.binary_search_by_key(&c, |(k, _)| *k) {
                Ok(at) => self.any | self.table[at].1,
                Err(_) => self.any,
            };
            state = ((state << 1) | 1) & mask;
            if state & self.accept != 0 {
                return Some(i + c.len_utf8());
            }
        }
        None
    }
}

impl Segment {
    fn new(pieces: Vec<Piece>) -> Segment {
        let chars = pieces
            .iter()
            .map(|p| match p {
                Piece::Literal(t) => t.chars().count(),
                Piece::AnyChar => 1,
            })
            .sum();
        let search = match pieces.as_slice() {
            [] => Search::Empty,
            [Piece::Literal(text)] => Search::Literal(text.clone()),
            _ => match ShiftAnd::build(&pieces, chars) {
                Some(automaton) => Search::ShiftAnd(automaton),
                None => Search::Naive,
            },
        };
        Segment {
            pieces: pieces.into_boxed_slice(),
            chars,
            search,
        }
    }

    /// End of the segment matched at byte offset `at`, if it matches there.
    fn match_at(&self, text: &str, mut at: usize) -> Option<usize> {
        for piece in self.pieces.iter() {
            match piece {
                Piece::Literal(lit) => {
                    if !text[at..].starts_with(&**lit) {
                        return None;
                    }
                    at += lit.len();
                }
                Piece::AnyChar => at += text[at..].chars().next()?.len_utf8(),
            }
        }
        Some(at)
    }

    /// Start of the segment when it matches at the very end of `text`.
    fn suffix_start(&self, text: &str) -> Option<usize> {
        let start = if self.chars == 0 {
            text.len()
        } else {
            text.char_indices().rev().nth(self.chars - 1)?.0
        };
        (self.match_at(text, start)? == text.len()).then_some(start)
    }

    /// End of the leftmost match in `text`.
    fn find(&self, text: &str) -> Option<usize> {
        match &self.search {
            Search::Empty => Some(0),
            Search::Literal(lit) => text.find(&**lit).map(|i| i + lit.len()),
            Search::ShiftAnd(automaton) => automaton.find(text),
            Search::Naive => text
                .char_indices()
                .map(|(i, _)| i)
                .find_map(|start| self.match_at(text, start)),
        }
    }
}

impl Glob {
    /// Compiles a pattern from tokens; consecutive `*`s collapse, adjacent literals merge.
    pub(crate) fn new<'a>(tokens: impl IntoIterator<Item = GlobToken<'a>>) -> Glob {
        let mut segments = Vec::new();
        let mut pieces: Vec<Piece> = Vec::new();
        let mut literal = String::new();
        let mut after_star = false;
        for token in tokens {
            match token {
                GlobToken::Literal(text) => {
                    literal.push_str(text);
                    after_star = false;
                }
                GlobToken::AnyChar => {
                    flush(&mut pieces, &mut literal);
                    pieces.push(Piece::AnyChar);
                    after_star = false;
                }
                GlobToken::AnyRun => {
                    if !after_star {
                        flush(&mut pieces, &mut literal);
                        segments.push(Segment::new(std::mem::take(&mut pieces)));
                    }
                    after_star = true;
                }
            }
        }
        flush(&mut pieces, &mut literal);
        segments.push(Segment::new(pieces));
        Glob {
            segments: segments.into_boxed_slice(),
        }
    }

    /// Compiles `pattern`, where `*` and `?` are wildcards and everything else is literal.
    pub(crate) fn parse(pattern: &str) -> Glob {
        let mut tokens = Vec::new();
        let mut start = 0;
        for (i, c) in pattern.char_indices() {
            let wildcard = match c {
                '*' => GlobToken::AnyRun,
                '?' => GlobToken::AnyChar,
                _ => continue,
            };
            if start < i {
                tokens.push(GlobToken::Literal(&pattern[start..i]));
            }
            tokens.push(wildcard);
            start = i + 1;
        }
        if start < pattern.len() {
            tokens.push(GlobToken::Literal(&pattern[start..]));
        }
        Glob::new(tokens)
    }

    /// True when the whole of `text` matches.
    pub(crate) fn matches(&self, text: &str) -> bool {
        let (first, rest) = match self.segments.split_first() {
            Some(split) => split,
            None => return text.is_empty(),
        };
        let Some((last, middle)) = rest.split_last() else {
            return first.match_at(text, 0) == Some(text.len());
        };
        let Some(start) = first.match_at(text, 0) else {
            return false;
        };
        let text = &text[start..];
        let Some(end) = last.suffix_start(text) else {
            return false;
        };
        let mut window = &text[..end];
        for segment in middle {
            match segment.find(window) {
                Some(after) => window = &window[after..],
                None => return false,
            }
        }
        true
    }
}

fn flush(pieces: &mut Vec<Piece>, literal: &mut String) {
    if !literal.is_empty() {
        pieces.push(Piece::Literal(std::mem::take(literal).into_boxed_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Dynamic-programming reference: obviously correct, O(pattern × text).
    fn reference(pattern: &str, text: &str) -> bool {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        // row[j]: pattern[..i] matches text[..j]
        let mut row = vec![false; t.len() + 1];
        row[0] = true;
        for &pc in &p {
            let mut next = vec![false; t.len() + 1];
            match pc {
                '*' => {
                    let mut seen = false;
                    for j in 0..=t.len() {
                        seen |= row[j];
                        next[j] = seen;
                    }
                }
                _ => {
                    for j in 1..=t.len() {
                        next[j] = row[j - 1] && (pc == '?' || pc == t[j - 1]);
                    }
                }
            }
            row = next;
        }
        row[t.len()]
    }

    #[test]
    fn examples() {
        let cases = [
            ("*", "", true),
            ("*", "anything/at/all", true),
            ("", "", true),
            ("", "a", false),
            ("a", "a", true),
            ("a", "ab", false),
            ("a*", "abc", true),
            ("*c", "abc", true),
            ("a*c", "ac", true),
            ("a*c", "abcbc", true),
            ("a*c", "abcb", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a?c", "aéc", true),
            ("?", "é", true),
            ("??", "é", false),
            ("a*b*c", "a-b-b-c", true),
            ("a*b?d*e", "abxd-abcd-e", true),
            ("a*b?d*e", "abxe", false),
            (
                "topic/devices/thing1/*",
                "topic/devices/thing1/telemetry",
                true,
            ),
            (
                "topic/devices/thing1/*",
                "topic/devices/thing10/telemetry",
                false,
            ),
            ("topicfilter/a/+/#", "topicfilter/a/+/#", true),
            ("topicfilter/a/+/#", "topicfilter/a/b/c", false),
            ("ab*ba", "aba", false),
            ("ab*ba", "abba", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                Glob::parse(pattern).matches(text),
                expected,
                "{pattern:?} vs {text:?}"
            );
            assert_eq!(reference(pattern, text), expected, "reference {pattern:?}");
        }
    }

    #[test]
    fn long_question_mark_segments_use_the_fallback_correctly() {
        let segment: String = "a?".repeat(40); // 80 characters: beyond shift-and's 64
        let pattern = format!("x*{segment}*y");
        let glob = Glob::parse(&pattern);
        let hit = format!("x--{}--y", "ab".repeat(40));
        let miss = format!("x--{}--y", "ab".repeat(39));
        assert!(glob.matches(&hit));
        assert!(!glob.matches(&miss));
        assert!(reference(&pattern, &hit));
    }

    #[test]
    fn adversarial_inputs_finish_quickly() {
        // Exponential for a naive recursive matcher; linear here.
        let pattern = format!("{}b", "a*".repeat(30));
        let text = "a".repeat(100_000);
        let started = std::time::Instant::now();
        assert!(!Glob::parse(&pattern).matches(&text));
        let pattern = format!("*{}b*", "?".repeat(60));
        assert!(!Glob::parse(&pattern).matches(&text));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    fn alphabet() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![Just('a'), Just('b'), Just('/'), Just('é')],
            0..12,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    fn patterns() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just('a'),
                Just('b'),
                Just('/'),
                Just('é'),
                Just('*'),
                Just('?')
            ],
            0..10,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn agrees_with_the_reference(pattern in patterns(), text in alphabet()) {
            prop_assert_eq!(Glob::parse(&pattern).matches(&text), reference(&pattern, &text));
        }

        #[test]
        fn agrees_on_texts_built_from_the_pattern(pattern in patterns(), fill in alphabet()) {
            // Replace each wildcard by some characters so that matches are common, not rare.
            let mut text = String::new();
            let mut fill_chars = fill.chars().cycle();
            for c in pattern.chars() {
                match c {
                    '*' => { for _ in 0..(fill.len() % 3) { text.extend(fill_chars.next()); } }
                    '?' => text.push(fill_chars.next().unwrap_or('a')),
                    c => text.push(c),
                }
            }
            prop_assert_eq!(Glob::parse(&pattern).matches(&text), reference(&pattern, &text));
        }
    }
}
