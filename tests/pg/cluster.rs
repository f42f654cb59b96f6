//! A private PostgreSQL cluster for the tests that restart or stop the server (the shared
//! server on :5432 is never restarted: other tests run against it in parallel).
//!
//! `initdb` in a temporary directory (as the `postgres` OS user when the tests run as root:
//! initdb refuses root), trust authentication, a free loopback port, `fsync = off` (a crash
//! of the server process still keeps every acknowledged commit: the WAL is in the OS's
//! cache). [`Cluster`]'s `Drop` stops the server (immediate) and removes the directory,
//! also when the test panics.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use postgres::{Client, NoTls};

/// A running private cluster.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    as_postgres: bool,
    pub port: u16,
}

/// The directory holding `initdb` and `pg_ctl`: `RUNLEDGER_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<n>/bin`, else `pg_config --bindir`.
fn bin_dir() -> Option<PathBuf> {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(d) = std::env::var_os("RUNLEDGER_PG_BIN") {
        return Some(PathBuf::from(d)).filter(|d| has(d));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has(d))
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return Some(d);
    }
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let d = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    has(&d).then_some(d)
}

/// A port nothing listens on right now (the kernel's choice of a free one).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Cluster {
    /// A new cluster, started; `None` (the test skipped, reason printed) without the
    /// PostgreSQL server binaries, unless `RUNLEDGER_TEST_PG` is set (then it fails).
    pub fn start(name: &str) -> Option<Self> {
        let Some(bin) = bin_dir() else {
            if std::env::var_os("RUNLEDGER_TEST_PG").is_some() {
                panic!("RUNLEDGER_TEST_PG is set but initdb/pg_ctl were not found (set RUNLEDGER_PG_BIN)");
            }
            eprintln!(
                "SKIPPED: no PostgreSQL server binaries (initdb, pg_ctl) for a private cluster; \
                 RUNLEDGER_PG_BIN names their directory, RUNLEDGER_TEST_PG makes their absence fail"
            );
            return None;
        };
        let dir =
            std::env::temp_dir().join(format!("runledger-cluster-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let as_postgres = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&dir).unwrap().uid() == 0
        };
        let mut cluster = Self {
            bin,
            dir,
            as_postgres,
            port: 0,
        };
        if as_postgres {
            let out = Command::new("chown")
                .arg("postgres:")
                .arg(&cluster.dir)
                .output()
                .unwrap();
            assert!(out.status.success(), "chown: {}", text(&out));
        }
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        // a port taken between the choice and the start: try another
        for attempt in 0.. {
            cluster.port = free_port();
            let conf = format!(
                "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n",
                cluster.port,
                cluster.dir.display()
            );
            let auto = data.join("postgresql.auto.conf");
            std::fs::write(&auto, conf).unwrap();
            if cluster.try_ctl(&["start"]).is_ok() {
                break;
            }
            assert!(
                attempt < 3,
                "the private cluster never started:\n{}",
                cluster.log()
            );
        }
        Some(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A command of the server's binaries, as the `postgres` user when we are root.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.current_dir(&self.dir);
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self.command(program).args(args).output().unwrap();
        assert!(out.status.success(), "{program} {args:?}: {}", text(&out));
    }

    fn try_ctl(&self, args: &[&str]) -> Result<(), String> {
        let log = self.dir.join("log");
        let out = self
            .command("pg_ctl")
            .args(["-D", self.data().to_str().unwrap()])
            .args(["-l", log.to_str().unwrap(), "-w", "-t", "30"])
            .args(args)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(text(&out))
        }
    }

    /// `pg_ctl` with `args`; fails the test (with the server's log) when it fails.
    fn ctl(&self, args: &[&str]) {
        if let Err(e) = self.try_ctl(args) {
            panic!("pg_ctl {args:?}: {e}\n{}", self.log());
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// `pg_ctl restart -m <mode>` (`fast`: sessions ended, transactions rolled back;
    /// `immediate`: every server process killed, recovery at the start, as after a crash);
    /// returns once the server accepts connections again.
    pub fn restart(&self, mode: &str) {
        self.ctl(&["-m", mode, "restart"]);
    }

    /// `pg_ctl stop -m <mode>`.
    pub fn stop(&self, mode: &str) {
        self.ctl(&["-m", mode, "stop"]);
    }

    /// `pg_ctl start`, once the server accepts connections.
    pub fn start_again(&self) {
        self.ctl(&["start"]);
    }

    /// The URL of `schema` in the cluster's `postgres` database.
    pub fn url(&self, schema: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?options=-csearch_path%3D{schema}",
            self.port
        )
    }

    /// A raw connection to `schema`, created first if needed.
    pub fn raw(&self, schema: &str) -> Client {
        let mut c = Client::connect(&self.url(schema), NoTls).unwrap();
        c.batch_execute(&format!("create schema if not exists {schema}"))
            .unwrap();
        c
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.try_ctl(&["-m", "immediate", "stop"]).is_err() {
            // pg_ctl could not stop it (or it was not running): kill what the pid file names
            if let Ok(pidfile) = std::fs::read_to_string(self.data().join("postmaster.pid")) {
                if let Some(pid) = pidfile.lines().next() {
                    let _ = Command::new("kill").args(["-9", pid.trim()]).status();
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
