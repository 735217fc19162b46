//! A `hongbao-host up` process of its own, beside this binary: for the phases
//! that measure the host's memory, which is the process's only when nothing
//! else (no load generator) runs in it.

use anyhow::{Context, Result, bail};
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct HostChild {
    child: Child,
    pub addr: SocketAddr,
    /// From starting the process to its first "listening on".
    pub ready_after: Duration,
}

impl HostChild {
    /// `hongbao-host` next to the bench binary, if it was built with it.
    pub fn binary() -> Result<Option<PathBuf>> {
        let host = std::env::current_exe()?.with_file_name("hongbao-host");
        Ok(host.is_file().then_some(host))
    }

    /// Starts `host -f manifest up --listen 127.0.0.1:0 args…` with `envs`
    /// and waits until it listens (blocking the calling thread).
    pub fn start(host: &Path, manifest: &Path, args: &[OsString], envs: &[(String, String)]) -> Result<HostChild> {
        let started = Instant::now();
        let mut child = Command::new(host)
            .arg("-f")
            .arg(manifest)
            .args(["up", "--listen", "127.0.0.1:0"])
            .args(args)
            .envs(envs.iter().cloned())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", host.display()))?;
        let mut stdout = BufReader::new(child.stdout.take().context("the host's stdout")?);
        let mut line = String::new();
        let addr = loop {
            line.clear();
            if stdout.read_line(&mut line)? == 0 {
                let _ = child.wait();
                bail!("hongbao-host exited before listening");
            }
            if let Some(addr) = line.trim().strip_prefix("listening on ") {
                break addr.parse()?;
            }
        };
        std::thread::spawn(move || for _ in stdout.lines() {});
        Ok(HostChild { child, addr, ready_after: started.elapsed() })
    }

    /// `VmHWM` (the peak) and `VmRSS` (now) of the process, in bytes.
    pub fn resident(&self) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| -> Result<u64> {
            let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name} in status"))?;
            let kib: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse()?;
            Ok(kib * 1024)
        };
        Ok((field("VmHWM:")?, field("VmRSS:")?))
    }
}

impl Drop for HostChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
