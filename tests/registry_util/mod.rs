//! Driving `civis registry` processes from tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Run the civis binary.
pub fn civis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_civis"))
        .args(args)
        .output()
        .unwrap()
}

/// A single-threaded async runtime for HTTP calls.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Parse JSON output.
pub fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A fresh PostgreSQL database next to the admin URL's; returns its URL.
pub fn fresh_postgres(admin: &str, name: &str) -> String {
    runtime().block_on(async {
        let store = civis_registry::store::SqlStore::connect(admin)
            .await
            .unwrap();
        store
            .execute_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .unwrap();
        store
            .execute_admin(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        store.close().await;
    });
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

/// A registry directory and its validator processes.
pub struct Cluster {
    /// The registry directory.
    pub dir: PathBuf,
    base: u16,
    procs: Vec<Option<Child>>,
    rt: tokio::runtime::Runtime,
    /// Open-file limit for the next process started.
    fd_limit: Option<u64>,
}

impl Cluster {
    /// `civis registry init` into a fresh temporary directory.
    pub fn init(name: &str, n: usize, base: u16) -> Self {
        Self::init_with(name, n, base, &[])
    }

    /// `civis registry init` with extra arguments.
    pub fn init_with(name: &str, n: usize, base: u16, extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("civis-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = civis(
            &[
                "registry",
                "init",
                "--dir",
                dir.to_str().unwrap(),
                "--validators",
                &n.to_string(),
                "--port-base",
                &base.to_string(),
                "--chain-id",
                &format!("civis-test-{name}"),
            ]
            .into_iter()
            .chain(extra.iter().copied())
            .collect::<Vec<_>>(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            dir,
            base,
            procs: (0..n).map(|_| None).collect(),
            rt: runtime(),
            fd_limit: None,
        }
    }

    /// Validator `i`'s API URL.
    pub fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.base + 100 + i as u16)
    }

    /// Start validator `i` (SQLite unless `db`) and wait until its API answers.
    pub fn start(&mut self, i: usize, db: Option<&str>) {
        self.start_with(i, db, &[]);
    }

    /// Start validator `i` with extra `civis registry run` flags and wait until it answers.
    pub fn start_with(&mut self, i: usize, db: Option<&str>, extra: &[&str]) {
        self.spawn(i, db, None, extra);
        self.wait_up(i);
    }

    /// Start validator `i` with at most `fds` open files (`ulimit -n` in a shell that then
    /// execs the node) and wait until it answers.
    pub fn start_with_fd_limit(&mut self, i: usize, fds: u64) {
        self.fd_limit = Some(fds);
        self.spawn(i, None, None, &[]);
        self.fd_limit = None;
        self.wait_up(i);
    }

    /// Whether validator `i`'s process is still running.
    pub fn alive(&mut self, i: usize) -> bool {
        self.procs[i]
            .as_mut()
            .is_some_and(|p| p.try_wait().ok().flatten().is_none())
    }

    /// Start validator `i` with `CIVIS_CRASH_AT` set (it may die before its API answers).
    pub fn start_crashing(&mut self, i: usize, db: Option<&str>, crash_at: &str) {
        self.spawn(i, db, Some(crash_at), &[]);
    }

    fn spawn(&mut self, i: usize, db: Option<&str>, crash_at: Option<&str>, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("validator-{i}.log")))
            .unwrap();
        let mut cmd = match self.fd_limit {
            Some(n) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\"")])
                    .arg(env!("CARGO_BIN_EXE_civis"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_civis")),
        };
        cmd.args(["registry", "run", "--dir", self.dir.to_str().unwrap()])
            .args(["--validator", &i.to_string()])
            .args(extra)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        if let Some(db) = db {
            cmd.args(["--db", db]);
        }
        if let Some(c) = crash_at {
            cmd.env("CIVIS_CRASH_AT", c);
        }
        self.procs[i] = Some(cmd.spawn().unwrap());
    }

    /// Wait until validator `i`'s API answers.
    pub fn wait_up(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.try_get(i, "/v1/health").is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("validator {i} did not start; see {}", self.log(i));
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("validator-{i}.log"))).unwrap_or_default()
    }

    /// SIGTERM validator `i` and wait for it.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.procs[i].take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// SIGKILL validator `i` (a crash).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.procs[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Wait (up to `timeout`) for validator `i`'s process to exit by itself; whether it did.
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.procs[i].as_mut().map(|c| c.try_wait().unwrap()) {
                Some(Some(_)) | None => {
                    self.procs[i] = None;
                    return true;
                }
                Some(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        false
    }

    /// Validator `i`'s log.
    pub fn log_of(&self, i: usize) -> String {
        self.log(i)
    }

    fn try_get(&self, i: usize, path: &str) -> Option<Value> {
        let url = format!("{}{path}", self.url(i));
        self.rt.block_on(async {
            let r = reqwest::Client::new()
                .get(url)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .ok()?;
            if !r.status().is_success() {
                return None;
            }
            r.json().await.ok()
        })
    }

    /// GET a JSON resource from validator `i`.
    pub fn get(&self, i: usize, path: &str) -> Value {
        self.try_get(i, path)
            .unwrap_or_else(|| panic!("GET {path} on validator {i} failed; log:\n{}", self.log(i)))
    }

    /// `/v1/health` of validator `i`.
    pub fn health(&self, i: usize) -> Value {
        self.get(i, "/v1/health")
    }

    /// Wait until validator `i` has committed `height`; returns its height.
    pub fn wait_height(&self, i: usize, height: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Some(h) = self
                .try_get(i, "/v1/health")
                .and_then(|v| v["height"].as_u64())
            {
                if h >= height {
                    return h;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "validator {i} did not reach height {height}; log:\n{}",
            self.log(i)
        );
    }

    /// Wait until all of `ids` have committed `height`.
    pub fn wait_all(&self, ids: &[usize], height: u64) {
        for &i in ids {
            self.wait_height(i, height);
        }
    }

    /// `civis registry tx` against validator 0: Ok(stdout) or Err(stdout + stderr).
    pub fn tx(&self, key: &Path, args: &[&str]) -> Result<String, String> {
        let node = self.url(0);
        let mut all = vec![
            "registry",
            "tx",
            "--node",
            &node,
            "--key",
            key.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        let out = civis(&all);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// Governance (`gov`'s key) accredits `kiosk` for `grants` (`docType/namespace/element`)
    /// with `purpose`, valid over `(not_before, not_after)`; the signed statement is written to
    /// `statement_out`.
    pub fn accredit_kiosk(
        &self,
        gov: &Path,
        kiosk: &str,
        grants: &[String],
        purpose: &str,
        (not_before, not_after): (i64, i64),
        statement_out: &Path,
    ) -> Result<String, String> {
        let (from, until) = (not_before.to_string(), not_after.to_string());
        let mut args = vec!["accredit-kiosk", "--kiosk", kiosk];
        for g in grants {
            args.extend(["--grant", g]);
        }
        args.extend([
            "--purpose",
            purpose,
            "--not-before",
            &from,
            "--not-after",
            &until,
            "--statement-out",
            statement_out.to_str().unwrap(),
        ]);
        self.tx(gov, &args)
    }

    /// `civis registry add-validator`: one more (not yet voted in) validator; returns its index.
    pub fn add_validator(&mut self) -> usize {
        let out = civis(&[
            "registry",
            "add-validator",
            "--dir",
            self.dir.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.procs.push(None);
        self.procs.len() - 1
    }

    /// `civis registry sync` from validator 0.
    pub fn sync(&self, genesis: &Path, snapshot: &Path) -> Result<String, String> {
        self.sync_from(0, genesis, snapshot)
    }

    /// `civis registry sync` from validator `i`.
    pub fn sync_from(&self, i: usize, genesis: &Path, snapshot: &Path) -> Result<String, String> {
        let out = civis(&[
            "registry",
            "sync",
            "--node",
            &self.url(i),
            "--genesis",
            genesis.to_str().unwrap(),
            "--snapshot",
            snapshot.to_str().unwrap(),
        ]);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The latest committed block with transactions.
    pub fn block_with_transactions(&self, i: usize) -> Value {
        let head = self.health(i)["height"].as_u64().unwrap();
        (1..=head)
            .rev()
            .map(|h| self.get(i, &format!("/v1/blocks/{h}")))
            .find(|b| !b["transactions"].as_array().unwrap().is_empty())
            .expect("a block with transactions")
    }

    /// The COSE bytes of the first transaction of `block`.
    pub fn tx_bytes(&self, _i: usize, block: &Value) -> Vec<u8> {
        hex::decode(block["transactions"][0]["cose"].as_str().unwrap()).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill(i);
        }
    }
}
