//! Faults of the file itself (issue 13): online backups while workers write, damaged and
//! truncated files, a file made read-only or replaced under a running process.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use runledger::doctor::{self, DoctorOptions};
use runledger::{Engine, NewJob};
use serde_json::json;

use crate::common::*;
use crate::doctor::populate;

/// Each writer's jobs, in creation order, by the `n` in their input.
fn ns_by_writer(engine: &Engine, writers: usize) -> Vec<Vec<i64>> {
    let mut out = vec![Vec::new(); writers];
    let jobs = engine.jobs().list(None, None, None, 10_000).unwrap();
    for j in jobs.iter().rev() {
        let Some(w) = j.input["w"].as_u64() else {
            continue; // populate's own jobs
        };
        let w = w as usize;
        out[w].push(j.input["n"].as_i64().unwrap());
    }
    out
}

#[test]
fn a_backup_taken_while_writers_commit_is_a_consistent_snapshot_that_doctor_passes() {
    let (engine, clock, dir) = file_engine();
    populate(&engine, &clock);
    let path = engine.path().unwrap().to_path_buf();
    let writers = 3;
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let path = path.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                // Each writer its own engine (its own connection), as other processes would.
                let e = Engine::open(&path).unwrap();
                let mut n = 0i64;
                while !stop.load(Ordering::Relaxed) || n < 20 {
                    let job = e
                        .jobs()
                        .create(&NewJob::new("alice", "research", json!({"w": w, "n": n})))
                        .unwrap();
                    // A second table in its own transaction: the claim and its event.
                    if n % 2 == 0 {
                        let c = e.jobs().claim(&format!("w{w}"), &[]).unwrap();
                        assert!(c.is_some() || job.id > 0);
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut backups = Vec::new();
    for i in 0..3 {
        std::thread::sleep(std::time::Duration::from_millis(40));
        let dest = dir.path().join(format!("copy-{i}.db"));
        let report = engine.backup(&dest).unwrap();
        assert!(report.doctor.is_clean(), "{:#?}", report.doctor.anomalies);
        assert_eq!(report.bytes, std::fs::metadata(&dest).unwrap().len());
        assert!(!Path::new(&format!("{}.partial", dest.display())).exists());
        assert!(!Path::new(&format!("{}-wal", dest.display())).exists());
        backups.push(dest);
    }
    stop.store(true, Ordering::Relaxed);
    let written: Vec<i64> = handles.into_iter().map(|h| h.join().unwrap()).collect();

    let mut sizes = Vec::new();
    for dest in &backups {
        let copy = Engine::open(dest).unwrap();
        let report = doctor::check(&copy, &DoctorOptions::default()).unwrap();
        assert_eq!(report.errors().count(), 0, "{:#?}", report.anomalies);
        // A snapshot point: each writer's jobs in the copy are exactly its first k (no gap,
        // nothing from after a later commit without the earlier ones).
        let per = ns_by_writer(&copy, writers);
        for (w, ns) in per.iter().enumerate() {
            let k = ns.len() as i64;
            assert_eq!(*ns, (0..k).collect::<Vec<_>>(), "writer {w} in {dest:?}");
            assert!(k <= written[w]);
        }
        // Every claimed job in the copy has its `claimed` event (same transaction).
        let orphan_claims: i64 = copy
            .with_connection(|c| {
                Ok(c.query_row(
                    "select count(*) from jobs j where j.attempt > 0 and not exists
                       (select 1 from job_events e where e.job_id = j.id and e.kind = 'claimed')",
                    [],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(orphan_claims, 0);
        sizes.push(per.iter().map(Vec::len).sum::<usize>());
    }
    // Later backups saw at least as much as earlier ones, and the writers were live.
    assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "{sizes:?}");
    println!("backups while writing: jobs per copy {sizes:?}, written {written:?}");
}

#[test]
fn a_backup_never_overwrites_and_leaves_the_live_file_unchanged() {
    let (engine, clock, dir) = file_engine();
    populate(&engine, &clock);
    let dest = dir.path().join("copy.db");
    std::fs::write(&dest, b"precious").unwrap();
    let before = dump(&engine);
    let err = engine.backup(&dest).unwrap_err();
    assert_eq!(err.code(), "INVALID_INPUT");
    assert_eq!(std::fs::read(&dest).unwrap(), b"precious");
    assert_eq!(dump(&engine), before);
    // In memory too: the copy is the same rows.
    let (mem, mclock) = mem_engine();
    populate(&mem, &mclock);
    let report = mem.backup(dir.path().join("mem.db")).unwrap();
    assert!(report.doctor.is_clean(), "{:#?}", report.doctor.anomalies);
    let copy = Engine::open(&report.path).unwrap();
    assert_eq!(dump(&copy), dump(&mem));
}

/// A populated file, closed (so every page is in the main file), and the root page of
/// `table` in it.
fn closed_populated_file(dir: &Path, table: &str) -> (std::path::PathBuf, u64, u64) {
    let path = dir.join("damaged.db");
    let clock = runledger::ManualClock::new(t0());
    {
        let engine =
            Engine::open_with(&path, crate::common::options().with_clock(clock.clone())).unwrap();
        populate(&engine, &clock);
        for i in 0..200 {
            engine
                .jobs()
                .create(&NewJob::new(
                    "bob",
                    "research",
                    json!({"i": i, "pad": "p".repeat(200)}),
                ))
                .unwrap();
        }
    }
    assert!(!Path::new(&format!("{}-wal", path.display())).exists());
    let c = rusqlite::Connection::open(&path).unwrap();
    let root: i64 = c
        .query_row(
            "select rootpage from sqlite_master where type = 'table' and name = ?1",
            [table],
            |r| r.get(0),
        )
        .unwrap();
    let page_size: i64 = c.query_row("pragma page_size", [], |r| r.get(0)).unwrap();
    (path, root as u64, page_size as u64)
}

fn overwrite_page(path: &Path, page: u64, page_size: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start((page - 1) * page_size)).unwrap();
    f.write_all(&vec![0xA5; page_size as usize]).unwrap();
    f.sync_all().unwrap();
}

/// Doctor on `path` the way the CLI does it: through the engine, or read-only when the
/// engine refuses the file as damaged.
fn doctor_on(path: &Path) -> doctor::DoctorReport {
    match Engine::open(path) {
        Ok(engine) => doctor::check(&engine, &DoctorOptions::default()).unwrap(),
        Err(e) => {
            assert!(
                matches!(e.code(), "CORRUPT" | "NOT_A_DATABASE"),
                "opening a damaged file gave {} ({e})",
                e.code()
            );
            doctor::check_file(path, t0(), &DoctorOptions::default()).unwrap()
        }
    }
}

#[test]
fn regression_doctor_aborted_with_database_on_a_file_with_an_overwritten_page() {
    let dir = tempfile::tempdir().unwrap();
    let (path, root, page_size) = closed_populated_file(dir.path(), "jobs");
    overwrite_page(&path, root, page_size);

    let report = doctor_on(&path);
    assert!(report.errors().count() > 0, "{report:#?}");
    let damage = report.damage.as_ref().expect("a damage survey");
    assert!(damage.advice.contains(".recover") && damage.advice.contains("backup"));
    let jobs = damage.tables.iter().find(|t| t.table == "jobs").unwrap();
    assert!(!jobs.readable, "{damage:#?}");
    assert!(
        jobs.error.as_deref().unwrap().contains("CORRUPT"),
        "{jobs:?}"
    );
    let schedules = damage
        .tables
        .iter()
        .find(|t| t.table == "schedules")
        .unwrap();
    assert!(schedules.readable && schedules.rows == 1, "{damage:#?}");
    assert!(report.anomalies.iter().any(|a| a.check == "damage"));

    // The engine's own reads of the damaged table are CORRUPT with SQLite's extended code,
    // never the catch-all DATABASE.
    if let Ok(engine) = Engine::open(&path) {
        let err = engine.jobs().list(None, None, None, 1000).unwrap_err();
        assert_eq!(err.code(), "CORRUPT", "{err}");
        assert!(err.to_string().contains("extended code"), "{err}");
    }
}

#[test]
fn a_truncated_file_is_corrupt_or_not_a_database_and_doctor_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, page_size) = closed_populated_file(dir.path(), "jobs");
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len((len / page_size / 2) * page_size).unwrap();
    drop(f);
    let report = doctor_on(&path);
    assert!(report.errors().count() > 0, "{report:#?}");
    let damage = report.damage.as_ref().expect("a damage survey");
    assert!(damage.tables.iter().any(|t| !t.readable), "{damage:#?}");

    // Not SQLite at all: NOT_A_DATABASE on open, and still a report.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x5A; 8192]).unwrap();
    let report = doctor_on(&junk);
    let damage = report.damage.as_ref().expect("a damage survey");
    assert!(damage.cause.contains("NOT_A_DATABASE"), "{damage:#?}");
    assert_eq!(std::fs::read(&junk).unwrap(), vec![0x5A; 8192]);
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop. `None` (with the
/// reason printed) where mounting is not permitted, except under `RUNLEDGER_CI=1`.
struct SmallVolume {
    dir: tempfile::TempDir,
}

impl SmallVolume {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        let ok = matches!(&out, Ok(o) if o.status.success());
        if !ok {
            let why = match out {
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            assert!(
                std::env::var("RUNLEDGER_CI").as_deref() != Ok("1"),
                "RUNLEDGER_CI=1 requires mounting a tmpfs: {why}"
            );
            println!("SKIPPED: cannot mount a {size} tmpfs here: {why}");
            return None;
        }
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// An engine on `ledger.db` in the volume, on a manual clock at [`t0`].
    fn engine(&self) -> (Engine, std::path::PathBuf) {
        let path = self.path().join("ledger.db");
        let clock = runledger::ManualClock::new(t0());
        let opts = crate::common::options().with_clock(clock);
        (Engine::open_with(&path, opts).unwrap(), path)
    }
}

impl Drop for SmallVolume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn regression_a_full_small_volume_did_not_recover_after_space_was_freed() {
    let Some(vol) = SmallVolume::mount("2m") else {
        return;
    };
    // A filler the operator deletes to free space.
    let filler = vol.path().join("filler");
    std::fs::write(&filler, vec![0u8; 512 * 1024]).unwrap();
    let (engine, path) = vol.engine();
    let pad = "x".repeat(2000);
    let mut written = 0;
    let full = loop {
        match engine
            .jobs()
            .create(&NewJob::new("alice", "research", json!({ "pad": pad })))
        {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 10_000, "never filled the volume");
    };
    assert_eq!(full.code(), "DATABASE_FULL", "{full}");
    std::fs::remove_file(&filler).unwrap();

    // The documented remedy: free space, retry (and prune). Every later write works.
    let mut failed = 0;
    let tries = 300;
    for i in 0..tries {
        let small = NewJob::new("alice", "research", json!({ "i": i }));
        if let Err(e) = engine.jobs().create(&small) {
            assert_eq!(e.code(), "DATABASE_FULL", "{e}");
            failed += 1;
        }
    }
    let wal = std::fs::metadata(format!("{}-wal", path.display()))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "small volume: {written} writes filled 2 MiB; after freeing 512 KiB, {failed} of {tries} writes failed; wal {wal} bytes"
    );
    assert_eq!(
        failed, 0,
        "{failed} of {tries} writes failed after space was freed"
    );
    let report = doctor::check(&engine, &DoctorOptions::default()).unwrap();
    assert_eq!(report.errors().count(), 0, "{:#?}", report.anomalies);
    drop(engine);
}

/// Fills the volume holding `dir` with a file `dir/filler` until the disk is full.
fn fill_volume(dir: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn regression_a_run_whose_final_write_met_a_full_disk_kept_its_lock_until_the_lease_expired() {
    use runledger::run::{Pipeline, RunStatus, Scope, StageOutput, TriggerKind};
    let Some(vol) = SmallVolume::mount("2m") else {
        return;
    };
    let (engine, _) = vol.engine();
    let fill = Arc::new(AtomicBool::new(true));
    let dir = vol.path().to_path_buf();
    let flag = fill.clone();
    let pipeline = Pipeline::builder("ingest")
        .stage("fetch", move |_| {
            if flag.swap(false, Ordering::SeqCst) {
                fill_volume(&dir); // the disk fills up while the stage works
            }
            Ok(StageOutput::with_detail(json!({"rows": 1})))
        })
        .build()
        .unwrap();
    let outcome = engine
        .runs()
        .trigger(&pipeline, Scope::Targets.into(), TriggerKind::Manual)
        .unwrap();
    let err = outcome[0].result.as_ref().unwrap_err();
    assert_eq!(err.code(), "DATABASE_FULL", "{err}");

    // Space returns. The process knows its run failed: its next write finishes the run
    // and frees the lock, so the next trigger is not refused with RUN_ALREADY_ACTIVE.
    std::fs::remove_file(vol.path().join("filler")).unwrap();
    let again = engine
        .runs()
        .trigger(&pipeline, Scope::Targets.into(), TriggerKind::Manual)
        .unwrap();
    let second = again[0].result.as_ref().expect("the lock was freed");
    assert_eq!(second.status, RunStatus::Success);
    let first = engine.runs().get(second.id - 1).unwrap();
    assert_eq!(first.status, RunStatus::Failed, "{first:?}");
    assert_eq!(first.error_code.as_deref(), Some("DATABASE_FULL"));
    let report = doctor::check(&engine, &DoctorOptions::default()).unwrap();
    assert_eq!(report.errors().count(), 0, "{:#?}", report.anomalies);
    drop(engine);
}

#[test]
fn regression_a_file_renamed_under_a_running_process_swallowed_every_later_commit() {
    let (engine, _clock, dir) = file_engine();
    engine
        .jobs()
        .create(&NewJob::new("alice", "research", json!({"n": 0})))
        .unwrap();
    let path = engine.path().unwrap().to_path_buf();
    let moved = dir.path().join("moved.db");
    std::fs::rename(&path, &moved).unwrap();
    assert_write_stops(&engine, "renamed or deleted");

    // Replaced: another file now at the path (a restore while the process runs).
    std::fs::rename(&moved, &path).unwrap();
    let (other, _c, _d) = file_engine();
    let backup = dir.path().join("other.db");
    other.backup(&backup).unwrap();
    std::fs::rename(&backup, &path).unwrap();
    assert_write_stops(&engine, "another file");
}

/// After the check interval (250 ms), a write is `FILE_REPLACED` saying `why`.
fn assert_write_stops(engine: &Engine, why: &str) {
    std::thread::sleep(std::time::Duration::from_millis(300));
    let err = engine
        .jobs()
        .create(&NewJob::new("alice", "research", json!({})))
        .unwrap_err();
    assert_eq!(err.code(), "FILE_REPLACED", "{err}");
    assert!(err.to_string().contains(why), "{err}");
}

fn wal_bytes(path: &Path) -> u64 {
    std::fs::metadata(format!("{}-wal", path.display()))
        .map(|m| m.len())
        .unwrap_or(0)
}

#[test]
fn regression_an_idle_engine_never_emptied_its_wal() {
    let (engine, _clock, _dir) = file_engine();
    let path = engine.path().unwrap().to_path_buf();
    for n in 0..40 {
        engine
            .jobs()
            .create(&NewJob::new("alice", "research", json!({"n": n})))
            .unwrap();
    }
    assert!(wal_bytes(&path) > 0, "the writes went to the WAL");
    // The first call sees commits since the last one: not idle yet.
    assert_eq!(engine.checkpoint_when_idle().unwrap(), None);
    assert!(wal_bytes(&path) > 0);
    // No commit between two calls: idle; the WAL is emptied.
    let done = engine.checkpoint_when_idle().unwrap().expect("it ran");
    assert!(!done.busy, "{done:?}");
    assert_eq!(wal_bytes(&path), 0);
    // Nothing committed since: nothing to do.
    assert_eq!(engine.checkpoint_when_idle().unwrap(), None);
    assert_eq!(engine.jobs().list(None, None, None, 100).unwrap().len(), 40);
}

#[test]
fn an_idle_checkpoint_gives_up_at_once_when_a_reader_holds_the_wal() {
    let (engine, _clock, _dir) = file_engine();
    let path = engine.path().unwrap().to_path_buf();
    engine
        .jobs()
        .create(&NewJob::new("alice", "research", json!({})))
        .unwrap();
    // Another connection (another process, as far as SQLite knows) reads in a snapshot.
    let reader = rusqlite::Connection::open(&path).unwrap();
    reader
        .execute_batch("BEGIN; SELECT count(*) FROM jobs;")
        .unwrap();
    engine
        .jobs()
        .create(&NewJob::new("alice", "research", json!({})))
        .unwrap();
    assert_eq!(engine.checkpoint_when_idle().unwrap(), None);
    let started = std::time::Instant::now();
    let done = engine.checkpoint_when_idle().unwrap().expect("it ran");
    assert!(done.busy, "{done:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "it waited {:?} for the reader (the busy timeout is 5 s)",
        started.elapsed()
    );
    // Writers are not held up afterwards, and the busy timeout is back.
    engine
        .jobs()
        .create(&NewJob::new("alice", "research", json!({})))
        .unwrap();
    reader.execute_batch("COMMIT").unwrap();
    assert_eq!(engine.checkpoint_when_idle().unwrap(), None);
    let done = engine.checkpoint_when_idle().unwrap().expect("retried");
    assert!(!done.busy, "{done:?}");
    assert_eq!(wal_bytes(&path), 0);
}

#[test]
fn a_worker_with_nothing_to_do_empties_the_wal() {
    let (engine, _clock, _dir) = file_engine();
    let path = engine.path().unwrap().to_path_buf();
    let ids: Vec<i64> = (0..20)
        .map(|n| {
            engine
                .jobs()
                .create(&NewJob::new("alice", "research", json!({"n": n})))
                .unwrap()
                .id
        })
        .collect();
    let opts = runledger::WorkerOptions {
        idle_poll: std::time::Duration::from_millis(10),
        ..runledger::WorkerOptions::new("w1", ["research"])
    };
    let worker =
        runledger::Worker::start(engine.clone(), opts, |ctx| Ok(ctx.input().clone())).unwrap();
    let jobs = engine.jobs();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ids
        .iter()
        .all(|id| jobs.get(*id).unwrap().state.is_terminal())
    {
        assert!(std::time::Instant::now() < deadline, "jobs did not finish");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while wal_bytes(&path) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle worker left {} bytes of WAL",
            wal_bytes(&path)
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let report = worker.shutdown(std::time::Duration::from_secs(5));
    assert_eq!(report.completed, 20);
}

/// An ext4 file system on a loop device mounted with `errors=remount-ro`, so that a test can
/// make the kernel turn it read-only under open files (what a failing disk does), through
/// ext4's `trigger_fs_error`. `None` (with the reason printed) where loop mounts are not
/// permitted, except under `RUNLEDGER_CI=1`.
struct Ext4Volume {
    dir: tempfile::TempDir,
    image: tempfile::TempDir,
}

impl Ext4Volume {
    fn mount() -> Option<Self> {
        let image = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let img = image.path().join("vol.img");
        let run = |cmd: &str, args: &[&std::ffi::OsStr]| {
            std::process::Command::new(cmd)
                .args(args)
                .output()
                .map_err(|e| format!("{cmd}: {e}"))
                .and_then(|o| {
                    if o.status.success() {
                        Ok(())
                    } else {
                        Err(format!("{cmd}: {}", String::from_utf8_lossy(&o.stderr)))
                    }
                })
        };
        let made = std::fs::File::create(&img)
            .and_then(|f| f.set_len(16 << 20))
            .map_err(|e| e.to_string())
            .and_then(|()| run("mkfs.ext4", &["-q".as_ref(), img.as_os_str()]))
            .and_then(|()| {
                run(
                    "mount",
                    &[
                        "-o".as_ref(),
                        "loop,errors=remount-ro".as_ref(),
                        img.as_os_str(),
                        dir.path().as_os_str(),
                    ],
                )
            });
        if let Err(why) = made {
            assert!(
                std::env::var("RUNLEDGER_CI").as_deref() != Ok("1"),
                "RUNLEDGER_CI=1 requires mounting an ext4 loop device: {why}"
            );
            println!("SKIPPED: cannot mount an ext4 loop device here: {why}");
            return None;
        }
        Some(Self { dir, image })
    }

    /// The kernel's answer to a disk error: the file system turns read-only at once, open
    /// files included.
    fn fail(&self) {
        let out = std::process::Command::new("findmnt")
            .args(["-no", "SOURCE"])
            .arg(self.dir.path())
            .output()
            .unwrap();
        let source = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let dev = source.rsplit('/').next().unwrap().to_string();
        std::fs::write(
            format!("/sys/fs/ext4/{dev}/trigger_fs_error"),
            "runledger test\n",
        )
        .unwrap();
    }
}

impl Drop for Ext4Volume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
        let _ = &self.image;
    }
}

#[test]
fn regression_a_volume_made_read_only_under_a_running_process_gave_database() {
    let Some(vol) = Ext4Volume::mount() else {
        return;
    };
    let path = vol.dir.path().join("ledger.db");
    let clock = runledger::ManualClock::new(t0());
    let engine = Engine::open_with(&path, crate::common::options().with_clock(clock)).unwrap();
    engine
        .jobs()
        .create(&NewJob::new("alice", "research", json!({"n": 0})))
        .unwrap();
    vol.fail();
    for n in 1..4 {
        let err = engine
            .jobs()
            .create(&NewJob::new("alice", "research", json!({"n": n})))
            .unwrap_err();
        assert_eq!(err.code(), "READ_ONLY", "write {n}: {err:?}");
        assert!(
            matches!(err, runledger::Error::ReadOnly { extended_code, .. } if extended_code != 0),
            "{err:?}"
        );
    }
    // Reads go on, and what was committed is there.
    let jobs = engine.jobs().list(None, None, None, 10).unwrap();
    assert_eq!(jobs.len(), 1);
    drop(engine);
}

#[test]
fn regression_a_deleted_wal_after_a_crash_was_opened_as_a_clean_older_ledger() {
    let (engine, _clock, dir) = file_engine();
    let path = engine.path().unwrap().to_path_buf();
    engine
        .jobs()
        .create(&NewJob::new("alice", "research", json!({"n": 0})))
        .unwrap();
    engine.checkpoint().unwrap();
    drop(engine);
    // A process that dies (SIGKILL) with commits in its WAL.
    let mut child = spawn_child(
        "reliability_files::child_commits_to_its_wal_and_waits",
        &[("RL_DB", path.display().to_string())],
    );
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("CHILD READY") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "child died"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let wal = dir.path().join("runledger.db-wal");
    assert!(wal.exists());
    std::fs::remove_file(&wal).unwrap();

    let err = Engine::open(&path).unwrap_err();
    assert_eq!(err.code(), "WAL_MISSING", "{err}");
    assert!(
        matches!(err, runledger::Error::WalMissing { frames, .. } if frames > 0),
        "{err:?}"
    );
    // Refusing kept the evidence: a second open says the same.
    assert_eq!(Engine::open(&path).unwrap_err().code(), "WAL_MISSING");
    // The operator accepts the loss: the older ledger opens and is whole.
    std::fs::remove_file(dir.path().join("runledger.db-shm")).unwrap();
    let engine = Engine::open(&path).unwrap();
    assert_eq!(engine.jobs().list(None, None, None, 10).unwrap().len(), 1);
    let report = doctor::check(&engine, &DoctorOptions::default()).unwrap();
    assert_eq!(report.errors().count(), 0, "{:#?}", report.anomalies);
}

#[test]
#[ignore = "child of regression_a_deleted_wal_after_a_crash_was_opened_as_a_clean_older_ledger"]
fn child_commits_to_its_wal_and_waits() {
    if !is_child() {
        return;
    }
    let path = std::env::var("RL_DB").unwrap();
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "pragma journal_mode = wal; pragma wal_autocheckpoint = 0; \
         create table host_scratch (x); insert into host_scratch values (1);",
    )
    .unwrap();
    println!("CHILD READY");
    std::thread::sleep(std::time::Duration::from_secs(60));
}
