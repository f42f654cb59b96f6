//! The storage layer: the only place in `src/` where SQL names a table.
//!
//! One module per table, or per tight group of tables that are written together. Each
//! module holds its DML as named constants (lower-case SQL, named parameters, run through
//! `prepare_cached`), one column list per row type, one row mapper that reads columns by
//! name, and the doctor checks of its rows ([`crate::doctor`] collects them). Domain
//! modules (`job`, `run`, `schedule`, `flex`) call these functions and hold no SQL;
//! `tests::one_owner_per_table` fails when a table's name appears in SQL anywhere else.
//!
//! | module | tables |
//! |---|---|
//! | [`jobs`] | `jobs`, `audit_log` |
//! | [`job_events`] | `job_events` |
//! | [`supervisor_state`] | `supervisor_state` |
//! | [`ingest_runs`] | `ingest_runs` |
//! | [`modules`] | `ingest_modules`, `ingest_probes` |
//! | [`schedules`] | `schedules`, `due_runs` |
//! | [`raw`] | `raw_payloads`, `raw_records` |
//!
//! [`ui`] (feature `http`) owns no table: the Trust UI's read types and its bounded reads over
//! the owners' `UI_*` statements.

pub(crate) mod check;
pub(crate) mod ingest_runs;
pub(crate) mod integrity;
pub(crate) mod job_events;
pub(crate) mod jobs;
pub(crate) mod modules;
pub(crate) mod raw;
pub(crate) mod schedules;
pub(crate) mod supervisor_state;
#[cfg(feature = "http")]
pub(crate) mod ui;

/// The position of column `name` in a column list (`"id, d.status, s.name as schedule"`:
/// an item's name is its alias, else the part after its last `.`). Evaluated at compile
/// time through [`col!`], so a mapper names its columns yet reads them by index (a
/// by-name lookup per value costs about 4x the whole row read: 1.0-1.2 ms vs 0.24-0.36 ms
/// per 50-row list of 24 columns, measured with rusqlite 0.41), and a name missing from
/// the list fails the build (`cargo build`/`test`; `cargo check` skips this evaluation).
pub(crate) const fn column_index(list: &str, name: &str) -> usize {
    let b = list.as_bytes();
    let n = name.as_bytes();
    let mut index = 0;
    let mut start = 0;
    let mut i = 0;
    while i <= b.len() {
        if i == b.len() || b[i] == b',' {
            // The item is b[start..i]; its name starts after the last " as " or '.'.
            let mut end = i;
            while end > start && b[end - 1].is_ascii_whitespace() {
                end -= 1;
            }
            let mut name_start = start;
            let mut k = start;
            while k < end {
                if b[k] == b'.' || b[k].is_ascii_whitespace() {
                    name_start = k + 1;
                }
                k += 1;
            }
            if end - name_start == n.len() {
                let mut same = true;
                let mut j = 0;
                while j < n.len() {
                    if b[name_start + j] != n[j] {
                        same = false;
                    }
                    j += 1;
                }
                if same {
                    return index;
                }
            }
            index += 1;
            start = i + 1;
        }
        i += 1;
    }
    panic!("column not in the list")
}

/// `col!(list, "name")`: the compile-time index of column `name` in column list `list`.
macro_rules! col {
    ($list:expr, $name:literal) => {
        const { $crate::storage::column_index($list, $name) }
    };
}
pub(crate) use col;

/// Every table's doctor checks, table module by table module.
pub(crate) fn checks() -> impl Iterator<Item = &'static check::Check> {
    [
        jobs::CHECKS,
        ingest_runs::CHECKS,
        schedules::CHECKS,
        job_events::CHECKS,
        modules::CHECKS,
        raw::CHECKS,
    ]
    .into_iter()
    .flatten()
}

/// Every table's full scan for the damage survey, table module by table module.
pub(crate) fn table_scans() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    [
        jobs::SCANS,
        job_events::SCANS,
        supervisor_state::SCANS,
        ingest_runs::SCANS,
        modules::SCANS,
        raw::SCANS,
        schedules::SCANS,
        integrity::SCANS,
    ]
    .into_iter()
    .flatten()
}

#[cfg(test)]
mod columns {
    use super::column_index;

    #[test]
    fn a_column_is_found_by_its_name_alias_or_qualified_name() {
        let list = "id, d.status,\n  s.name as schedule, payload";
        assert_eq!(column_index(list, "id"), 0);
        assert_eq!(column_index(list, "status"), 1);
        assert_eq!(column_index(list, "schedule"), 2);
        assert_eq!(column_index(list, "payload"), 3);
        let missing = std::panic::catch_unwind(|| column_index(list, "name"));
        assert!(
            missing.is_err(),
            "an aliased column answers to its alias only"
        );
    }

    #[test]
    fn every_column_list_matches_the_names_sqlite_reports() {
        let conn = crate::db::open_in_memory(&crate::db::DbOptions::default()).unwrap();
        for (list, sql) in [
            (super::jobs::COLUMNS, super::jobs::GET),
            (super::job_events::COLUMNS, super::job_events::AFTER),
            (super::ingest_runs::COLUMNS, super::ingest_runs::GET),
            (
                super::schedules::SCHEDULE_COLUMNS,
                super::schedules::SELECT_SCHEDULES,
            ),
            (
                super::schedules::SLOT_COLUMNS,
                super::schedules::SELECT_ALL_SLOTS,
            ),
            (super::raw::RECORD_COLUMNS, super::raw::RECORDS_OF_RUN),
        ] {
            let stmt = conn.prepare(sql).unwrap();
            let names: Vec<&str> = stmt.column_names().collect();
            for (i, name) in names.iter().enumerate() {
                assert_eq!(column_index(list, name), i, "{name} in {sql}");
            }
        }
    }
}

/// Column `i` of `r` as the text a chain hash covers (a non-text value, which the CHECKs
/// refuse, is spelled out so that it cannot match).
pub(crate) fn hashed_text(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<String> {
    Ok(match r.get_ref(i)? {
        rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        other => format!("{other:?}"),
    })
}

#[cfg(test)]
mod ownership {
    //! One owner per table: a table's name appears in SQL only in its storage module.
    //!
    //! The scan reads every `.rs` file under `src/`, drops comments, takes each string
    //! literal (plain or raw) that reads as SQL (it starts with a statement keyword or a
    //! clause of one, such as the ` from jobs ` piece of a `concat!`), and looks for table
    //! names as whole words outside the SQL's own single-quoted strings. The tables are read
    //! from the migrations, so a new table without an owner fails the test too.

    use std::collections::BTreeMap;
    use std::path::Path;

    /// Every table and the one module whose SQL may name it.
    const OWNERS: &[(&str, &str)] = &[
        ("jobs", "src/storage/jobs.rs"),
        ("audit_log", "src/storage/jobs.rs"),
        ("job_events", "src/storage/job_events.rs"),
        ("supervisor_state", "src/storage/supervisor_state.rs"),
        ("ingest_runs", "src/storage/ingest_runs.rs"),
        ("ingest_modules", "src/storage/modules.rs"),
        ("ingest_probes", "src/storage/modules.rs"),
        ("raw_payloads", "src/storage/raw.rs"),
        ("raw_records", "src/storage/raw.rs"),
        ("schedules", "src/storage/schedules.rs"),
        ("due_runs", "src/storage/schedules.rs"),
        ("zones", "src/storage/schedules.rs"),
        ("integrity_legacy", "src/storage/integrity.rs"),
    ];

    /// The PostgreSQL backend's tables (migrations/postgres/) and their owners under
    /// `src/pg/storage/`; the files under `src/pg/` are scanned against this list only.
    const PG_OWNERS: &[(&str, &str)] = &[
        ("jobs", "src/pg/storage/jobs.rs"),
        ("audit_log", "src/pg/storage/jobs.rs"),
        ("job_events", "src/pg/storage/job_events.rs"),
        ("ingest_runs", "src/pg/storage/ingest_runs.rs"),
        ("schedules", "src/pg/storage/schedules.rs"),
        ("due_runs", "src/pg/storage/schedules.rs"),
        ("supervisor_state", "src/pg/storage/supervisor_state.rs"),
        ("ingest_modules", "src/pg/storage/modules.rs"),
        ("ingest_probes", "src/pg/storage/modules.rs"),
        ("raw_payloads", "src/pg/storage/raw.rs"),
        ("raw_records", "src/pg/storage/raw.rs"),
        ("runledger_event_listeners", "src/pg/storage/listeners.rs"),
    ];

    /// Words a literal starts with when it is SQL or a piece of a SQL statement.
    const SQL_STARTS: &[&str] = &[
        "select",
        "insert",
        "update",
        "delete",
        "with",
        "create",
        "drop",
        "alter",
        "pragma",
        "explain",
        "replace",
        "from",
        "join",
        "where",
        "values",
        "returning",
        "order",
    ];

    /// For `r"`, `r#"`, `r##"`... at the start of `b`: the number of hashes.
    fn raw_hashes(b: &[u8]) -> Option<usize> {
        let n = b.iter().skip(1).take_while(|&&c| c == b'#').count();
        (b.first() == Some(&b'r') && b.get(1 + n) == Some(&b'"')).then_some(n)
    }

    /// The contents of every string literal (plain or raw) in Rust source `src`, skipping
    /// comments, char literals, lifetimes, and `#[cfg(test)]` items (unit tests may plant
    /// rows with raw SQL, as the integration tests do).
    fn literals(src: &str) -> Vec<&str> {
        let b = src.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        // While inside a `#[cfg(test)]` item: the brace depth that ends it.
        let mut depth = 0usize;
        let mut skip_until: Option<usize> = None;
        let mut pending_test_item = false;
        while i < b.len() {
            let after_ident = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
            if src[i..].starts_with("#[cfg(test)]") {
                pending_test_item = skip_until.is_none();
                i += "#[cfg(test)]".len();
            } else if b[i] == b'{' {
                if pending_test_item {
                    skip_until = Some(depth);
                    pending_test_item = false;
                }
                depth += 1;
                i += 1;
            } else if b[i] == b'}' {
                depth = depth.saturating_sub(1);
                if skip_until == Some(depth) {
                    skip_until = None;
                }
                i += 1;
            } else if b[i] == b';' && pending_test_item {
                pending_test_item = false; // `#[cfg(test)] mod tests;` or a test-only `use`
                i += 1;
            } else if src[i..].starts_with("//") {
                i = src[i..].find('\n').map_or(b.len(), |k| i + k);
            } else if src[i..].starts_with("/*") {
                i = src[i..].find("*/").map_or(b.len(), |k| i + k + 2);
            } else if let Some(n) = raw_hashes(&b[i..]).filter(|_| !after_ident) {
                let body = i + 2 + n;
                let close = format!("\"{}", "#".repeat(n));
                let end = src[body..].find(&close).map_or(b.len(), |k| body + k);
                if skip_until.is_none() {
                    out.push(&src[body..end]);
                }
                i = end + close.len();
            } else if b[i] == b'"' {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                if skip_until.is_none() {
                    out.push(&src[i + 1..j.min(b.len())]);
                }
                i = j + 1;
            } else if b[i] == b'\'' {
                // A char literal ('"', '\'', 'x') or a lifetime ('a).
                let rest = &src[i + 1..];
                let skip = if rest.starts_with('\\') {
                    rest[2..].find('\'').map_or(rest.len(), |k| k + 3)
                } else {
                    match rest.chars().next() {
                        Some(c) if rest[c.len_utf8()..].starts_with('\'') => c.len_utf8() + 1,
                        _ => 0,
                    }
                };
                i += 1 + skip;
            } else {
                i += 1;
            }
        }
        out
    }

    /// Whether a literal reads as SQL or a piece of it.
    fn is_sql(lit: &str) -> bool {
        let first: String = lit
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect::<String>()
            .to_ascii_lowercase();
        SQL_STARTS.contains(&first.as_str())
            && lit.trim_start().len() > first.len()
            && lit.trim_start()[first.len()..].starts_with(char::is_whitespace)
    }

    /// The table names `sql` mentions as whole words outside its single-quoted strings.
    fn tables_in<'t>(sql: &str, tables: &[&'t str]) -> Vec<&'t str> {
        let mut code = String::new();
        for (k, part) in sql.split('\'').enumerate() {
            if k % 2 == 0 {
                // a named parameter (`:jobs`) is not a table name
                let mut param = false;
                for c in part.chars() {
                    if c == ':' {
                        param = true;
                        code.push(' ');
                    } else if param && (c.is_ascii_alphanumeric() || c == '_') {
                        code.push(' ');
                    } else {
                        param = false;
                        code.push(c);
                    }
                }
            }
            code.push(' ');
        }
        let words: Vec<String> = code
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map(str::to_ascii_lowercase)
            .collect();
        tables
            .iter()
            .copied()
            .filter(|t| words.iter().any(|w| w == t))
            .collect()
    }

    /// `path: table` for every table named in SQL outside its owner module.
    fn violations(files: &[(String, String)], owners: &[(&str, &str)]) -> Vec<String> {
        let tables: Vec<&str> = owners.iter().map(|(t, _)| *t).collect();
        let owner: BTreeMap<&str, &str> = owners.iter().copied().collect();
        let mut found = Vec::new();
        for (path, text) in files {
            for lit in literals(text).into_iter().filter(|l| is_sql(l)) {
                for t in tables_in(lit, &tables) {
                    if owner[t] != path {
                        found.push(format!("{path}: {t} in {:?}", lit.trim()));
                    }
                }
            }
        }
        found
    }

    fn rust_files(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(env!("CARGO_MANIFEST_DIR"))
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }

    fn migrated_tables() -> Vec<String> {
        tables_created_in("migrations")
    }

    /// The tables `CREATE TABLE`d by the `.sql` files of `folder` (not its subfolders:
    /// `migrations/postgres/` is another schema).
    fn tables_created_in(folder: &str) -> Vec<String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
        let mut tables = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                continue;
            }
            let sql = std::fs::read_to_string(path).unwrap();
            let words: Vec<&str> = sql.split_whitespace().collect();
            for w in words.windows(3) {
                if w[0].eq_ignore_ascii_case("create") && w[1].eq_ignore_ascii_case("table") {
                    tables.push(w[2].trim_end_matches('(').to_ascii_lowercase());
                }
                // CREATE UNLOGGED TABLE name
                if w[0].eq_ignore_ascii_case("unlogged") && w[1].eq_ignore_ascii_case("table") {
                    tables.push(w[2].trim_end_matches('(').to_ascii_lowercase());
                }
            }
        }
        tables.sort();
        tables.dedup();
        tables
    }

    #[test]
    fn every_postgres_table_has_an_owner_module() {
        let mut owned: Vec<String> = PG_OWNERS.iter().map(|(t, _)| t.to_string()).collect();
        owned.sort();
        assert_eq!(tables_created_in("migrations/postgres"), owned);
    }

    #[test]
    fn every_migrated_table_has_an_owner_module() {
        let mut owned: Vec<String> = OWNERS.iter().map(|(t, _)| t.to_string()).collect();
        owned.sort();
        assert_eq!(migrated_tables(), owned);
        for (_, module) in OWNERS {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(module);
            assert!(path.exists(), "{module} does not exist");
        }
    }

    #[test]
    fn one_owner_per_table() {
        let mut files = Vec::new();
        rust_files(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        assert!(files.len() > 40, "the scan found the sources");
        let (pg, files): (Vec<_>, Vec<_>) = files
            .into_iter()
            .partition(|(p, _)| p.starts_with("src/pg/"));
        let mut found = violations(&files, OWNERS);
        found.extend(violations(&pg, PG_OWNERS));
        assert!(
            found.is_empty(),
            "tables named in SQL outside their owner:\n{}",
            found.join("\n")
        );
        // The scan sees the owners' SQL (it is not passing because it reads nothing).
        let seen = violations(
            &files,
            &[("jobs", "src/lib.rs"), ("due_runs", "src/lib.rs")],
        );
        assert!(
            seen.iter()
                .any(|v| v.starts_with("src/storage/jobs.rs: jobs")),
            "{seen:?}"
        );
        assert!(
            seen.iter()
                .any(|v| v.starts_with("src/storage/schedules.rs: due_runs")),
            "{seen:?}"
        );
    }

    #[test]
    fn the_scan_finds_a_planted_violation_and_nothing_else() {
        // Table names are spliced in at run time (`%` + initial), so this file's own text
        // names no table in SQL.
        let splice = |text: &str| {
            text.replace("%j", "jobs")
                .replace("%a", "audit_log")
                .replace("%i", "ingest_runs")
                .replace("%d", "due_runs")
                .replace("%s", "schedules")
        };
        let file = |path: &str, text: &str| (path.to_string(), splice(text));
        let files = [
            file(
                "src/run/planted.rs",
                concat!(
                    "// select * from %j (a comment)\n",
                    "/// insert into %j (a doc comment)\n",
                    "/* delete from %j */\n",
                    "const A: &str = \"update %i set x = 1\";\n",
                    "const B: &str = \"select '%j' as word\";\n",
                    "const C: &str = r#\"delete from \"%d\" where id = 1\"#;\n",
                    "const D: &str = concat!(\"select \", cols!(), \" from %s where 1\");\n",
                    "const E: &str = \"the %j page\";\n",
                    "const F: &str = \"select %j_recovered from x\";\n",
                    "fn f<'a>(x: &'a str) { let q = '\"'; let s = \"select 1 from %a\"; }\n",
                    "#[cfg(test)]\nmod tests { fn t() { if x { q(\"delete from %j\"); } } }\n",
                    "const H: &str = \"select 1 from %s\";\n",
                ),
            ),
            file(
                "src/storage/jobs.rs",
                "const G: &str = \"select * from %j\";\n",
            ),
        ];
        let owners = [
            ("jobs", "src/storage/jobs.rs"),
            ("audit_log", "src/storage/jobs.rs"),
            ("ingest_runs", "src/storage/ingest_runs.rs"),
            ("due_runs", "src/storage/schedules.rs"),
            ("schedules", "src/storage/schedules.rs"),
        ];
        let found: Vec<String> = violations(&files, &owners)
            .into_iter()
            .map(|v| v.split(" in ").next().unwrap().to_string())
            .collect();
        assert_eq!(
            found,
            [
                "src/run/planted.rs: ingest_runs",
                "src/run/planted.rs: due_runs",
                "src/run/planted.rs: schedules",
                "src/run/planted.rs: audit_log",
                "src/run/planted.rs: schedules",
            ]
        );
    }
}
