//! The agent's children, hooks and health checks, started one way: an environment with
//! nothing of the agent's but a few harmless variables and the `CARP_*` settings an
//! operator gives hooks (`Environment=CARP_HAST_RESOURCES=…`), never a variable that holds
//! a password (`pass_env`, ucarp's `-p`); a process group of their own that is killed
//! whole at the timeout; and their output read up to a bound.

use std::{
    collections::BTreeSet,
    path::Path,
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _},
    process::Command,
    task::JoinHandle,
};

/// The agent's variables a child gets; everything else it is given explicitly.
const INHERITED: [&str; 5] = ["PATH", "HOME", "LANG", "LC_ALL", "TZ"];
/// Output kept per stream.
pub const OUTPUT_BYTES: u64 = 64 * 1024;
/// How long output is still read after the child exited: a background process it left
/// may hold the pipe open for ever.
const DRAIN: Duration = Duration::from_millis(100);

/// Names of the agent's variables that hold a password: never passed on.
static SECRETS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Keeps the variable `name` (a `pass_env`) from every child.
pub fn hide(name: &str) {
    SECRETS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_owned());
}

/// `program`, in a clean environment and a process group of its own.
pub fn command(program: &Path) -> Command {
    let secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let passed = std::env::vars_os().filter(|(k, _)| {
        let k = k.to_string_lossy();
        (INHERITED.contains(&k.as_ref()) || k.starts_with("CARP_")) && !secrets.contains(k.as_ref())
    });
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .envs(passed)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    cmd
}

/// What a finished run left.
#[derive(Debug)]
pub struct Finished {
    /// None when it was killed at the timeout.
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// What becomes of the processes a run started and left running when it exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leftovers {
    /// A hook may start a service in the background, as ucarp's scripts do.
    Keep,
    /// A probe's leftovers are hung probes.
    Kill,
}

/// Runs `cmd` for at most `timeout`; a run that times out is killed with its whole
/// process group, and so are `leftovers` to kill after one that exited.
pub async fn run(
    mut cmd: Command,
    timeout: Duration,
    leftovers: Leftovers,
) -> std::io::Result<Finished> {
    let mut child = cmd.spawn()?;
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(nix::unistd::Pid::from_raw);
    let stdout = collect(child.stdout.take());
    let stderr = collect(child.stderr.take());
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => Some(status?),
        Err(_) => None,
    };
    if (status.is_none() || leftovers == Leftovers::Kill)
        && let Some(group) = group
    {
        // ESRCH when nothing is left.
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    }
    if status.is_none() {
        let _ = child.wait().await;
    }
    Ok(Finished {
        status,
        stdout: drained(stdout).await,
        stderr: drained(stderr).await,
    })
}

/// A stream being read on a task of its own, into a buffer that keeps what arrived even
/// when the reading is given up.
struct Reader {
    task: JoinHandle<()>,
    got: Arc<Mutex<Vec<u8>>>,
}

/// Reads a stream, keeping its first [`OUTPUT_BYTES`] and reading the rest away, so a
/// chatty child never blocks on a full pipe.
fn collect(stream: Option<impl AsyncRead + Unpin + Send + 'static>) -> Reader {
    let got = Arc::new(Mutex::new(Vec::new()));
    let buffer = got.clone();
    let task = tokio::spawn(async move {
        let Some(mut s) = stream else {
            return;
        };
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = s.read(&mut chunk).await {
            let mut out = buffer.lock().unwrap_or_else(|e| e.into_inner());
            let room = OUTPUT_BYTES as usize - out.len();
            out.extend_from_slice(&chunk[..n.min(room)]);
        }
    });
    Reader { task, got }
}

/// What a reader got, waiting at most [`DRAIN`] for the end of the stream.
async fn drained(mut reader: Reader) -> Vec<u8> {
    if tokio::time::timeout(DRAIN, &mut reader.task).await.is_err() {
        reader.task.abort();
    }
    std::mem::take(&mut *reader.got.lock().unwrap_or_else(|e| e.into_inner()))
}

/// For tests of what children leave behind.
#[cfg(test)]
pub(crate) mod testing {
    use std::{path::Path, time::Duration};

    /// The pid a script wrote to `file` (`sleep 30 & echo $! > file`); removes the file.
    pub fn background_pid(file: &Path) -> i32 {
        let pid = std::fs::read_to_string(file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::fs::remove_file(file).unwrap();
        pid
    }

    /// Whether `pid` is gone (or a zombie) within a second.
    pub async fn gone(pid: i32) -> bool {
        let running = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| !r.starts_with(" Z")))
        };
        for _ in 0..100 {
            if !running() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::{testing::*, *};

    fn sh(script: &str) -> Command {
        let mut cmd = command(Path::new("/bin/sh"));
        cmd.arg("-c").arg(script);
        cmd
    }

    /// No secret reaches a child: the listed variables and CARP_* settings are inherited,
    /// a hidden one (a `pass_env`) and everything else are not.
    #[tokio::test]
    async fn the_environment_is_clean() {
        // SAFETY: this test alone uses these variables.
        unsafe {
            std::env::set_var("CARP_CHILD_TEST_SECRET", "hunter2");
            std::env::set_var("CARP_CHILD_TEST_SETTING", "for-the-hook");
            std::env::set_var("OTHER_CHILD_TEST", "not-passed");
        }
        hide("CARP_CHILD_TEST_SECRET");
        let out = run(sh("env"), Duration::from_secs(5), Leftovers::Keep)
            .await
            .unwrap();
        let env = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.unwrap().success());
        assert!(!env.contains("hunter2"), "{env}");
        assert!(!env.contains("not-passed"), "{env}");
        assert!(
            env.contains("CARP_CHILD_TEST_SETTING=for-the-hook"),
            "{env}"
        );
        assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
    }

    /// A run that exits, leaving a background process holding its output, is done at
    /// once with what it said, and a hook's background process (a service it started)
    /// keeps running; a run that hangs is killed with everything it started.
    #[tokio::test]
    async fn background_processes_and_timeouts() {
        let pid_file = std::env::temp_dir().join(format!("carp-child-{}", std::process::id()));
        let t = std::time::Instant::now();
        let script = format!(
            "echo hi; sleep 30 & echo $! > {}; exit 3",
            pid_file.display()
        );
        let out = run(sh(&script), Duration::from_secs(5), Leftovers::Keep)
            .await
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(out.status.unwrap().code(), Some(3));
        assert_eq!(out.stdout, b"hi\n");
        let pid = background_pid(&pid_file);
        let kept = !gone(pid).await;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        assert!(kept, "the background process {pid} of a hook was killed");
        let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        let out = run(sh(&script), Duration::from_millis(300), Leftovers::Keep)
            .await
            .unwrap();
        assert!(out.status.is_none());
        let pid = background_pid(&pid_file);
        assert!(gone(pid).await, "{pid} outlived the timeout");
    }

    #[tokio::test]
    async fn output_is_bounded() {
        let out = run(
            sh("head -c 1000000 /dev/zero"),
            Duration::from_secs(5),
            Leftovers::Keep,
        )
        .await
        .unwrap();
        assert_eq!(out.stdout.len() as u64, OUTPUT_BYTES);
    }
}
