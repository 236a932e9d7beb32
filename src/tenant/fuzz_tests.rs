//! Randomised robustness tests with a small xorshift generator (no extra crates): the lexer
//! and the guard must survive any bytes, always make progress, and a violating statement must
//! stay a violation however much whitespace and comment is put between its tokens.

use super::guard::{check, needs_check};
use super::guard_tests::VIOLATIONS;
use super::lexer::{LexOptions, Lexer};
use super::PROTECTED_SETTINGS;

/// xorshift64*: tiny, deterministic, good enough to explore inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// Pieces of SQL that exercise every lexer state and every guard rule.
const FRAGMENTS: &[&[u8]] = &[
    b"SET ",
    b"set",
    b"RESET ",
    b"ALL",
    b"DISCARD ",
    b"SESSION ",
    b"LOCAL ",
    b"NAMES ",
    b"app",
    b"tenant_id",
    b"app.tenant_id",
    b".",
    b"=",
    b" TO ",
    b"set_config",
    b"(",
    b")",
    b",",
    b";",
    b"'",
    b"''",
    b"\"",
    b"\"\"",
    b"E'",
    b"e'",
    b"U&'",
    b"U&\"",
    b"u&",
    b"B'",
    b"X'",
    b"N'",
    b"UESCAPE",
    b" UESCAPE '!'",
    b"!",
    b"\\",
    b"\\'",
    b"\\\\",
    b"\\x5f",
    b"\\0073",
    b"\\+000073",
    b"\\u0073",
    b"$",
    b"$$",
    b"$q$",
    b"$1",
    b"--",
    b"/*",
    b"*/",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b"\x0b",
    b"0x1F",
    b"1.5e3",
    b"..",
    b"::",
    b":=",
    b"+-",
    b"<>",
    b"pg_settings",
    b"UPDATE ",
    b"ALTER ROLE r ",
    b"client_encoding",
    b"'SJIS'",
    b"\xff",
    b"\xc3\xa9",
    b"\0",
    b"SELECT ",
    b"current_setting('app.tenant_id')",
];

/// Lexes under both settings and checks that tokens tile the input exactly: every token
/// consumes at least one byte (so lexing terminates) and nothing is skipped or repeated.
fn assert_tiles(input: &[u8]) {
    for scs in [true, false] {
        let opts = LexOptions {
            standard_conforming_strings: scs,
        };
        let mut at = 0;
        for t in Lexer::with_options(input, opts) {
            assert_eq!(t.span.start, at, "{input:?}");
            assert!(t.span.end > at && t.span.end <= input.len(), "{input:?}");
            at = t.span.end;
        }
        assert_eq!(at, input.len(), "{input:?}");
    }
}

fn random_input(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.below(24) {
        if rng.below(8) == 0 {
            out.push(rng.next() as u8);
        } else {
            out.extend_from_slice(rng.pick(FRAGMENTS));
        }
    }
    out
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(out.len() + 1);
        match rng.below(4) {
            0 => {
                let piece = rng.pick(FRAGMENTS);
                out.splice(at..at, piece.iter().copied());
            }
            1 if at < out.len() => {
                let end = (at + 1 + rng.below(4)).min(out.len());
                out.drain(at..end);
            }
            2 if at < out.len() => out[at] = rng.next() as u8,
            _ => out.insert(at, rng.next() as u8),
        }
    }
    out
}

#[test]
fn random_and_mutated_inputs_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let seeds: Vec<&[u8]> = VIOLATIONS.iter().map(|(s, _)| s.as_bytes()).collect();
    for round in 0..200_000 {
        let input = if round % 2 == 0 {
            random_input(&mut rng)
        } else {
            let seed = rng.pick(&seeds);
            mutate(&mut rng, seed)
        };
        assert_tiles(&input);
        let verdict = check(&input, PROTECTED_SETTINGS);
        if verdict.is_err() {
            assert!(needs_check(&input));
        }
    }
}

/// Separators that cannot change what the surrounding tokens are (each starts and ends
/// with whitespace, so no operator or comment opener can fuse with a neighbour).
const SEPARATORS: &[&str] = &[
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    " /* c */ ",
    " /* a /* nested */ b */ ",
    " -- c\n ",
    " --\r ",
    "\x0c",
];

#[test]
fn separators_between_tokens_keep_violations() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    for &(sql, what) in VIOLATIONS {
        let tokens: Vec<_> = Lexer::new(sql.as_bytes()).collect();
        for _ in 0..300 {
            let mut out = String::new();
            for (i, t) in tokens.iter().enumerate() {
                let text = &sql[t.span.clone()];
                // A newline between two quotes would continue the first literal.
                let joins_literals = out.ends_with('\'') && text.starts_with('\'');
                if i > 0 && !joins_literals && rng.below(2) == 0 {
                    out.push_str(rng.pick(SEPARATORS));
                }
                out.push_str(text);
            }
            let verdict = check(out.as_bytes(), PROTECTED_SETTINGS);
            assert_eq!(verdict.map_err(|v| v.what), Err(what), "{out:?}");
            assert!(needs_check(out.as_bytes()));
        }
    }
}
