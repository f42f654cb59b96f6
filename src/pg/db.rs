//! Connecting to PostgreSQL and its embedded migrations (`migrations/postgres/`).
//!
//! The files are named `P<n>__<name>.sql` so that the SQLite schema's
//! `embed_migrations!("migrations")`, which walks the folder recursively, does not take
//! them; here they are handed to refinery as versions `V<n>`. Concurrent openers (several
//! nodes starting at once) migrate one at a time under an advisory lock. A database whose
//! history is ahead of this build is refused (`UNSUPPORTED_VERSION`), never touched.

use postgres::{Client, NoTls};

use super::error::from_pg;
use crate::error::{Error, Result};

/// `(version, refinery name, SQL)` of every PostgreSQL migration, in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "V1__core",
        include_str!("../../migrations/postgres/P1__core.sql"),
    ),
    (
        2,
        "V2__notify",
        include_str!("../../migrations/postgres/P2__notify.sql"),
    ),
    (
        3,
        "V3__sqlite_twins",
        include_str!("../../migrations/postgres/P3__sqlite_twins.sql"),
    ),
    (
        4,
        "V4__event_listeners",
        include_str!("../../migrations/postgres/P4__event_listeners.sql"),
    ),
    (
        5,
        "V5__slot_claim_renewal",
        include_str!("../../migrations/postgres/P5__slot_claim_renewal.sql"),
    ),
    (
        6,
        "V6__feed_fence",
        include_str!("../../migrations/postgres/P6__feed_fence.sql"),
    ),
    (
        7,
        "V7__claim_walks_the_queue",
        include_str!("../../migrations/postgres/P7__claim_walks_the_queue.sql"),
    ),
    (
        8,
        "V8__ui_indexes",
        include_str!("../../migrations/postgres/P8__ui_indexes.sql"),
    ),
    (
        9,
        "V9__one_check_per_row",
        include_str!("../../migrations/postgres/P9__one_check_per_row.sql"),
    ),
    (
        10,
        "V10__claim_order_only_the_queue_has",
        include_str!("../../migrations/postgres/P10__claim_order_only_the_queue_has.sql"),
    ),
    (
        11,
        "V11__validate_row_checks",
        include_str!("../../migrations/postgres/P11__validate_row_checks.sql"),
    ),
];

/// The advisory lock key the migration step holds ("runledgr" in ASCII).
const MIGRATION_LOCK: i64 = 0x7275_6e6c_6564_6772;

const LOCK: &str = "select pg_advisory_lock($1)";
const UNLOCK: &str = "select pg_advisory_unlock($1)";
const HAS_HISTORY: &str = "select to_regclass('refinery_schema_history') is not null";
const APPLIED: &str = "select coalesce(max(version), 0)::bigint from refinery_schema_history";

/// The newest PostgreSQL schema version this build knows.
pub fn known_schema_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Connects to `url` (a `postgres://` URL or a libpq key=value string). TLS is not
/// supported in this slice: use a local socket, loopback or a tunnel.
pub(crate) fn connect(url: &str) -> Result<Client> {
    let config: postgres::Config = url
        .parse()
        .map_err(|e: postgres::Error| Error::invalid("url", e.to_string()))?;
    config.connect(NoTls).map_err(|e| Error::Unreachable {
        detail: e.to_string(),
    })
}

/// The schema version recorded in the database (0 when none).
pub(crate) fn applied_version(client: &mut impl postgres::GenericClient) -> Result<i64> {
    let has: bool = client.query_one(HAS_HISTORY, &[]).map_err(from_pg)?.get(0);
    if !has {
        return Ok(0);
    }
    Ok(client.query_one(APPLIED, &[]).map_err(from_pg)?.get(0))
}

/// Applies the missing migrations, refusing a database migrated by a newer build.
pub(crate) fn migrate(client: &mut Client) -> Result<()> {
    client.execute(LOCK, &[&MIGRATION_LOCK]).map_err(from_pg)?;
    let result = migrate_locked(client);
    let unlocked = client.execute(UNLOCK, &[&MIGRATION_LOCK]).map_err(from_pg);
    result.and(unlocked.map(|_| ()))
}

fn migrate_locked(client: &mut Client) -> Result<()> {
    let found = applied_version(client)?;
    if found > known_schema_version() {
        return Err(Error::UnsupportedVersion {
            what: "postgres schema",
            found,
            known: known_schema_version(),
        });
    }
    let migrations = MIGRATIONS
        .iter()
        .map(|(_, name, sql)| refinery::Migration::unapplied(name, sql))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Migration {
            message: e.to_string(),
        })?;
    // One version at a time, each with its history row in one transaction. refinery's
    // default commits a migration and the row recording it in two transactions: a node
    // killed between them would leave a migrated schema that claims the older version, and
    // the next open would apply the migration again (and fail on what it already created).
    // Separate transactions per version, not one for all: schema version 11 validates
    // existing rows while writers go on, after version 9's transaction has let go of them.
    for (version, name, _) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        let target = refinery::Target::Version(*version as refinery::SchemaVersion);
        refinery::Runner::new(&migrations)
            .set_target(target)
            .set_grouped(true)
            .run(client)
            .map_err(|e| Error::Migration {
                message: migration_failure(&e, name),
            })?;
    }
    Ok(())
}

/// refinery's account of a failed step ("error applying migrations", "db error") with the
/// migration that failed and PostgreSQL's own message and SQLSTATE (a broken rule names its
/// constraint). Not the DETAIL, which can quote a row's values.
fn migration_failure(err: &refinery::Error, name: &str) -> String {
    let why = std::error::Error::source(err)
        .and_then(|s| s.downcast_ref::<postgres::Error>())
        .and_then(|pg| pg.as_db_error())
        .map(|db| format!(": {} (SQLSTATE {})", db.message(), db.code().code()))
        .unwrap_or_default();
    format!("{err} at {name}{why}")
}

/// The SQL of every embedded migration, in order (doctor builds its reference schema from
/// them).
pub(crate) fn migration_sql() -> impl Iterator<Item = &'static str> {
    MIGRATIONS.iter().map(|m| m.2)
}

const HISTORY: &str =
    "select version::bigint, name, checksum::text from refinery_schema_history order by version";

/// Doctor's `migration_history`: the recorded history against this build's migrations
/// (each version known, named and checksummed as embedded; none missing below the newest).
/// One line per disagreement.
pub(crate) fn history_problems(client: &mut impl postgres::GenericClient) -> Result<Vec<String>> {
    let has: bool = client.query_one(HAS_HISTORY, &[]).map_err(from_pg)?.get(0);
    if !has {
        return Ok(vec!["refinery_schema_history is missing".into()]);
    }
    let recorded: Vec<(i64, String, String)> = client
        .query(HISTORY, &[])
        .map_err(from_pg)?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut problems = Vec::new();
    let newest = recorded.iter().map(|r| r.0).max().unwrap_or(0);
    for (version, name, sql) in MIGRATIONS {
        if *version > newest {
            continue;
        }
        let m = refinery::Migration::unapplied(name, sql).map_err(|e| Error::Migration {
            message: e.to_string(),
        })?;
        match recorded.iter().find(|r| r.0 == *version) {
            None => problems.push(format!("migration {name} is not recorded")),
            Some((_, n, checksum)) if n != m.name() || *checksum != m.checksum().to_string() => {
                problems.push(format!(
                    "version {version} recorded as {n:?} with checksum {checksum}, this build has {:?} with checksum {}",
                    m.name(),
                    m.checksum()
                ))
            }
            Some(_) => {}
        }
    }
    for (version, name, _) in &recorded {
        if !MIGRATIONS.iter().any(|m| m.0 == *version) {
            problems.push(format!(
                "version {version} ({name}) is not a migration of this build"
            ));
        }
    }
    Ok(problems)
}
