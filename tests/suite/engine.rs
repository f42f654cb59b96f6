//! Opening, migrating and configuring the database.

use runledger::{known_schema_version, Engine, Error};

use crate::common::*;

#[test]
fn open_migrates_to_the_known_version_and_reopens_without_work() {
    let (engine, _clock, dir) = file_engine();
    let v = engine.schema_version().unwrap();
    assert_eq!(v, known_schema_version());
    assert!(v >= 1);
    drop(engine);
    let again = Engine::open(dir.path().join("runledger.db")).unwrap();
    assert_eq!(again.schema_version().unwrap(), v);
}

#[test]
fn file_is_in_wal_mode_with_foreign_keys() {
    let (engine, _clock, _dir) = file_engine();
    engine
        .with_connection(|c| {
            let mode: String = c.query_row("pragma journal_mode", [], |r| r.get(0))?;
            let fk: i64 = c.query_row("pragma foreign_keys", [], |r| r.get(0))?;
            let sync: i64 = c.query_row("pragma synchronous", [], |r| r.get(0))?;
            assert_eq!(mode, "wal");
            assert_eq!(fk, 1);
            assert_eq!(sync, 2, "FULL is the default durability");
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_file_that_is_not_sqlite_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.db");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    let err = Engine::open(&path).unwrap_err();
    assert_eq!(err.code(), "NOT_A_DATABASE", "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        vec![b'x'; 4096],
        "file untouched"
    );
}

#[test]
fn a_newer_schema_than_this_build_knows_is_refused() {
    let (engine, _clock, dir) = file_engine();
    let future = known_schema_version() + 1;
    engine
        .with_connection(|c| {
            c.execute(
                "insert into refinery_schema_history (version, name, applied_on, checksum) values (?1, 'future', '2030-01-01', '0')",
                [future],
            )?;
            Ok(())
        })
        .unwrap();
    drop(engine);
    match Engine::open(dir.path().join("runledger.db")).unwrap_err() {
        Error::UnsupportedVersion { found, known, .. } => {
            assert_eq!((found, known), (future, known_schema_version()))
        }
        other => panic!("unexpected {other:?}"),
    }
}
