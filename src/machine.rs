//! What the crate's state machines share: a transition table of `(from, to, why)` rows is
//! the single source of truth, looked up here and checked for well-formedness by one test
//! helper. (The SQL trigger of each machine mirrors its table; the integration tests prove
//! the two equal.)

/// Whether `table` has the row `from -> to`.
pub(crate) fn allows<S: Copy + PartialEq>(table: &[(S, S, &str)], from: S, to: S) -> bool {
    table.iter().any(|&(f, t, _)| f == from && t == to)
}

/// Asserts that `table` has no self-loop and no duplicate row, that no state in `terminal`
/// has a way out (except those listed in `reopenable`, such as a restart), and that every
/// state but `initial` can be reached.
#[cfg(test)]
pub(crate) fn assert_well_formed<S: Copy + PartialEq + std::fmt::Debug>(
    table: &[(S, S, &str)],
    all: &[S],
    initial: S,
    terminal: &[S],
    reopenable: &[S],
) {
    for (i, a) in table.iter().enumerate() {
        assert_ne!(a.0, a.1, "self loop {a:?}");
        for b in &table[i + 1..] {
            assert!(!(a.0 == b.0 && a.1 == b.1), "duplicate {a:?}");
        }
    }
    for &s in terminal {
        if !reopenable.contains(&s) {
            assert!(!table.iter().any(|t| t.0 == s), "{s:?} is final");
        }
    }
    for &s in all {
        assert!(
            s == initial || table.iter().any(|t| t.1 == s),
            "{s:?} unreachable"
        );
    }
}
