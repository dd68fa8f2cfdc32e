//! Health checks (`[[check]]`): a command run every `interval`, each outcome fed to a
//! [`Health`] that turns runs into a verdict with keepalived's fall/rise hysteresis. The
//! agent demotes while the verdict is "failing". Runners live off the event loop, as
//! hooks do, and report through a channel.

use crate::{child, config::Check};
use std::{path::Path, time::Duration};
use tokio::{sync::mpsc, task::JoinHandle};

/// The verdict over a check's runs: it changes after `fall` failures (or `rise` successes)
/// in a row. The first run decides alone, so a host whose service is down at start is
/// demoted before its first election (a backup waits three advert intervals).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    fall: u32,
    rise: u32,
    healthy: Option<bool>,
    /// Runs in a row that disagree with the verdict.
    streak: u32,
}

impl Health {
    pub fn new(fall: u32, rise: u32) -> Self {
        Self {
            fall,
            rise,
            healthy: None,
            streak: 0,
        }
    }

    /// None until the first run.
    pub fn healthy(&self) -> Option<bool> {
        self.healthy
    }

    /// Whether the host is demoted for this check.
    pub fn failing(&self) -> bool {
        self.healthy == Some(false)
    }

    /// Records a run; whether the verdict changed.
    pub fn record(&mut self, ok: bool) -> bool {
        match self.healthy {
            Some(h) if h == ok => self.streak = 0,
            Some(h) => {
                self.streak += 1;
                if self.streak < if h { self.fall } else { self.rise } {
                    return false;
                }
                self.healthy = Some(ok);
                self.streak = 0;
                return true;
            }
            None => {
                self.healthy = Some(ok);
                return true;
            }
        }
        false
    }
}

/// One run's outcome: `Err` says why it failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The runner's id, so a report from a runner a reload replaced is ignored.
    pub id: u64,
    pub result: Result<(), String>,
}

/// Runs a check until dropped.
pub struct Runner(JoinHandle<()>);

impl Drop for Runner {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Runner {
    pub fn start(id: u64, check: Check, tx: mpsc::UnboundedSender<Report>) -> Self {
        Self(tokio::spawn(async move {
            let interval = Duration::from_secs_f64(check.interval);
            loop {
                let result = run(&check).await;
                if tx.send(Report { id, result }).is_err() {
                    return;
                }
                tokio::time::sleep(interval).await;
            }
        }))
    }
}

/// One run, killed at the timeout with everything it started; its first line of output
/// says why it failed. Unlike a hook, whatever it leaves behind is killed too when it
/// ends: a probe that hangs in a grandchild (`sh -c "curl ..."`) must not leave one
/// behind every interval.
async fn run(check: &Check) -> Result<(), String> {
    let (program, args) = check.command.split_first().ok_or("no command")?;
    let mut cmd = child::command(Path::new(program));
    cmd.args(args).env("CARP_CHECK", &check.name);
    let timeout = Duration::from_secs_f64(check.timeout);
    let out = child::run(cmd, timeout, child::Leftovers::Kill)
        .await
        .map_err(|e| format!("{program} could not start: {e}"))?;
    let Some(status) = out.status else {
        return Err(format!("killed after {timeout:?}"));
    };
    if status.success() {
        return Ok(());
    }
    let said = [&out.stderr, &out.stdout]
        .into_iter()
        .find_map(|o| String::from_utf8_lossy(o).lines().next().map(str::to_owned))
        .map(|l| format!(": {l}"))
        .unwrap_or_default();
    Err(format!("{status}{said}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fall_and_rise_need_runs_in_a_row_and_the_first_run_decides() {
        let mut h = Health::new(2, 3);
        assert_eq!(h.healthy(), None);
        assert!(h.record(true));
        assert!(!h.failing());
        // One failure, then a success: the streak starts over.
        assert!(!h.record(false));
        assert!(!h.record(true));
        assert!(!h.record(false));
        assert!(h.record(false));
        assert!(h.failing());
        assert!(!h.record(true));
        assert!(!h.record(true));
        assert!(!h.record(false));
        assert!(!h.record(true));
        assert!(!h.record(true));
        assert!(h.record(true));
        assert_eq!(h.healthy(), Some(true));

        let mut down_at_start = Health::new(5, 5);
        assert!(down_at_start.record(false));
        assert!(down_at_start.failing());
    }

    fn check(command: &[&str], timeout: f64) -> Check {
        Check {
            name: "t".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            interval: 0.05,
            timeout,
            fall: 1,
            rise: 1,
            demote: 1,
            group: None,
        }
    }

    #[tokio::test]
    async fn runs_report_exit_status_output_timeouts_and_start_failures() {
        assert_eq!(run(&check(&["/bin/sh", "-c", "exit 0"], 1.0)).await, Ok(()));
        assert_eq!(
            run(&check(
                &["/bin/sh", "-c", "echo \"$CARP_CHECK down\" >&2; exit 3"],
                1.0
            ))
            .await,
            Err("exit status: 3: t down".into())
        );
        assert_eq!(
            run(&check(&["/bin/sleep", "5"], 0.1)).await,
            Err("killed after 100ms".into())
        );
        // What the run started dies with it.
        let pid_file = std::env::temp_dir().join(format!("carp-check-{}", std::process::id()));
        let script = format!("sleep 30 & echo $! >{}; wait", pid_file.display());
        assert_eq!(
            run(&check(&["/bin/sh", "-c", &script], 0.3)).await,
            Err("killed after 300ms".into())
        );
        let pid = child::testing::background_pid(&pid_file);
        assert!(
            child::testing::gone(pid).await,
            "the check's background sleep {pid} outlived it"
        );
        // So does what a run that exited left behind: a hung probe never piles up.
        let script = format!("sleep 30 & echo $! >{}; exit 0", pid_file.display());
        assert_eq!(run(&check(&["/bin/sh", "-c", &script], 1.0)).await, Ok(()));
        let pid = child::testing::background_pid(&pid_file);
        assert!(
            child::testing::gone(pid).await,
            "the background sleep {pid} of a check that exited outlived it"
        );
        let missing = run(&check(&["/nonexistent/check"], 1.0)).await.unwrap_err();
        assert!(
            missing.starts_with("/nonexistent/check could not start"),
            "{missing}"
        );

        let (tx, mut rx) = mpsc::unbounded_channel();
        let runner = Runner::start(7, check(&["/bin/true"], 1.0), tx);
        for _ in 0..3 {
            assert_eq!(
                rx.recv().await,
                Some(Report {
                    id: 7,
                    result: Ok(())
                })
            );
        }
        drop(runner);
        // Aborted: the channel closes once the task is gone.
        while rx.recv().await.is_some() {}
    }
}
