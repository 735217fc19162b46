//! `hongbao-host build`, like `spin build`: runs every component's build
//! command from spin.toml, in its working directory. First makes sure the
//! `wasm32-wasip2` target is installed (a fresh machine has only the host one).

use crate::manifest::Manifest;
use anyhow::{Context, Result, bail};
use std::process::Command;

pub const TARGET: &str = "wasm32-wasip2";

/// Installs the Wasm target with rustup if it is missing.
pub fn ensure_wasm_target() -> Result<()> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match installed {
        Ok(out) if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == TARGET) => Ok(()),
        Ok(_) => {
            eprintln!("hongbao-host: installing the {TARGET} target (rustup target add {TARGET})");
            let status = Command::new("rustup").args(["target", "add", TARGET]).status()?;
            if !status.success() {
                bail!("rustup target add {TARGET} failed");
            }
            Ok(())
        }
        // No rustup: trust the toolchain to have the target (cargo will say if not).
        Err(_) => Ok(()),
    }
}

/// Runs each distinct build command once, in manifest order.
pub fn build_all(manifest: &Manifest, quiet: bool) -> Result<()> {
    ensure_wasm_target()?;
    let mut done = std::collections::HashSet::new();
    for (id, component) in &manifest.components {
        let Some(build) = &component.build else { continue };
        for command in &build.commands {
            if !done.insert((command.clone(), build.workdir.clone())) {
                continue;
            }
            if !quiet {
                eprintln!("hongbao-host: building {id}: {command}");
            }
            let mut child = Command::new("sh");
            child.arg("-c").arg(command).current_dir(&build.workdir);
            if quiet {
                child.arg0_quiet();
            }
            let status = child.status().with_context(|| format!("running {command:?}"))?;
            if !status.success() {
                bail!("build of {id} failed: {command}");
            }
        }
    }
    Ok(())
}

trait Quiet {
    fn arg0_quiet(&mut self);
}

impl Quiet for Command {
    /// Keeps cargo's progress off the terminal of a test run.
    fn arg0_quiet(&mut self) {
        self.env("CARGO_TERM_QUIET", "true");
    }
}
