//! Running host commands (`ip`, `nft`) and writing kernel settings.

use std::process::{Command, Stdio};

use crate::{Error, Result};

/// Runs `program args` and fails with its stderr if it fails.
pub fn run(program: &str, args: &[&str]) -> Result<()> {
    output(program, args).map(|_| ())
}

/// Runs `program args` and returns its stdout, failing with its stderr if it fails.
pub fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Http {
            what: format!("run {program} (is it installed?)"),
            source: Box::new(e),
        })?;
    if !out.status.success() {
        return Err(Error::Exited(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `program args` with `input` on stdin, failing with its stderr if it fails.
pub fn run_with_input(program: &str, args: &[&str], input: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Http {
            what: format!("run {program} (is it installed?)"),
            source: Box::new(e),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).map_err(|e| Error::Http {
            what: format!("write to {program}"),
            source: Box::new(e),
        })?;
    }
    let out = child.wait_with_output().map_err(|e| Error::Http {
        what: format!("wait for {program}"),
        source: Box::new(e),
    })?;
    if !out.status.success() {
        return Err(Error::Exited(format!(
            "{program} {} failed: {}\n{input}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Whether `program` is on PATH.
pub fn have_program(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Writes a sysctl through /proc/sys (`key` with dots or slashes).
pub fn write_sysctl(key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|e| Error::Http {
        what: format!("write {path}"),
        source: Box::new(e),
    })
}

/// Reads a sysctl through /proc/sys.
pub fn read_sysctl(key: &str) -> Option<String> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Sends `signal` to `pid`; false when there is no such process.
pub fn signal(pid: u32, signal: i32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid, signal) == 0 }
}
