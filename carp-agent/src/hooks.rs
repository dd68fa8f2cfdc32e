//! Up and down scripts, run the way ucarp runs them so its scripts keep working:
//! `script <interface> <vip>` (the VHID's first VIP; ucarp has only one), plus an
//! environment naming everything: CARP_VHID, CARP_STATE, CARP_OLD_STATE, CARP_INTERFACE,
//! CARP_VIPS (space separated), and CARP_NETNS (the agent's network namespace under
//! /run/netns, empty if unnamed), which tells apart agents of one host. Hooks of one VHID run one after another in transition
//! order, off the event loop, each with a timeout; their output goes to the log.

use crate::child;
use crate::election::State;
use std::{path::PathBuf, time::Duration};
use tokio::{process::Command, sync::mpsc};

/// One hook run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub script: PathBuf,
    pub interface: String,
    pub vhid: u8,
    pub vips: Vec<String>,
    pub netns: Option<String>,
    /// `hook_timeout` when the transition happened: a reload applies to the next run.
    pub timeout: Duration,
    pub from: State,
    pub to: State,
}

impl Run {
    fn command(&self) -> Command {
        let mut cmd = child::command(&self.script);
        cmd.arg(&self.interface)
            .arg(self.vips.first().map(String::as_str).unwrap_or_default())
            .env("CARP_VHID", self.vhid.to_string())
            .env("CARP_STATE", self.to.to_string())
            .env("CARP_OLD_STATE", self.from.to_string())
            .env("CARP_INTERFACE", &self.interface)
            .env("CARP_VIPS", self.vips.join(" "))
            .env("CARP_NETNS", self.netns.as_deref().unwrap_or_default());
        cmd
    }
}

/// Outcome of a run, for metrics and the status output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    TimedOut,
}

async fn execute(run: &Run) -> Outcome {
    let timeout = run.timeout;
    let name = run.script.display();
    let out = match child::run(run.command(), timeout, child::Leftovers::Keep).await {
        Ok(out) => out,
        Err(e) => {
            tracing::error!(vhid = run.vhid, "hook {name} could not start: {e}");
            return Outcome::Failed;
        }
    };
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        tracing::info!(vhid = run.vhid, "hook {name}: {line}");
    }
    match out.status {
        None => {
            tracing::error!(
                vhid = run.vhid,
                "hook {name} killed after {timeout:?}, with all it started"
            );
            Outcome::TimedOut
        }
        Some(status) if status.success() => {
            tracing::info!(
                vhid = run.vhid,
                "hook {name} {} -> {} done",
                run.from,
                run.to
            );
            Outcome::Ok
        }
        Some(status) => {
            tracing::error!(vhid = run.vhid, "hook {name} failed: {status}");
            Outcome::Failed
        }
    }
}

/// A queue of hook runs for one VHID, executed in order by a task of its own. The task and
/// its channel start with the first run: most VHIDs have no hooks, and each idle runner
/// kept about 7 KiB (the channel's first block of 32 runs, and the task).
pub struct Queue {
    done: mpsc::UnboundedSender<(u8, Outcome)>,
    tx: Option<mpsc::UnboundedSender<Run>>,
}

impl Queue {
    /// A queue whose runner, once started, tells `done` each outcome.
    pub fn new(done: mpsc::UnboundedSender<(u8, Outcome)>) -> Self {
        Self { done, tx: None }
    }

    pub fn push(&mut self, run: Run) {
        let tx = self.tx.get_or_insert_with(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<Run>();
            let done = self.done.clone();
            tokio::spawn(async move {
                while let Some(run) = rx.recv().await {
                    let outcome = execute(&run).await;
                    let _ = done.send((run.vhid, outcome));
                }
            });
            tx
        });
        // The runner lives as long as the agent; a closed queue means we are exiting.
        let _ = tx.send(run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hooks_get_ucarp_argv_and_the_environment_in_order() {
        let dir = std::env::temp_dir().join(format!("carp-hooks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        let script = dir.join("hook.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$1 $2 $CARP_VHID $CARP_OLD_STATE>$CARP_STATE $CARP_INTERFACE [$CARP_VIPS] ns=$CARP_NETNS\" >> {}\n",
                log.display()
            ),
        )
        .unwrap();
        let slow = dir.join("slow.sh");
        std::fs::write(&slow, "#!/bin/sh\nsleep 5\n").unwrap();
        for s in [&script, &slow] {
            let mut perm = std::fs::metadata(s).unwrap().permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
            std::fs::set_permissions(s, perm).unwrap();
        }

        let (done_tx, mut done) = mpsc::unbounded_channel();
        let mut q = Queue::new(done_tx);
        let run = |script: &PathBuf, from, to| Run {
            script: script.clone(),
            interface: "eth0".into(),
            vhid: 7,
            vips: vec!["192.0.2.50".into(), "2001:db8::50".into()],
            netns: Some("hosta".into()),
            timeout: Duration::from_millis(300),
            from,
            to,
        };
        q.push(run(&script, State::BACKUP, State::MASTER));
        q.push(run(&slow, State::MASTER, State::BACKUP));
        q.push(run(&script, State::MASTER, State::BACKUP));
        q.push(run(&dir.join("missing.sh"), State::BACKUP, State::MASTER));
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(done.recv().await.unwrap());
        }
        let text = std::fs::read_to_string(&log).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            got,
            vec![
                (7, Outcome::Ok),
                (7, Outcome::TimedOut),
                (7, Outcome::Ok),
                (7, Outcome::Failed)
            ]
        );
        assert_eq!(
            text,
            "eth0 192.0.2.50 7 BACKUP>MASTER eth0 [192.0.2.50 2001:db8::50] ns=hosta\n\
             eth0 192.0.2.50 7 MASTER>BACKUP eth0 [192.0.2.50 2001:db8::50] ns=hosta\n"
        );
    }

    /// README (Hooks): `CARP_NETNS` is "empty on the host's" namespace (one
    /// `netns::identify` names None): set, to nothing.
    #[test]
    fn carp_netns_is_empty_in_an_unnamed_namespace() {
        let run = Run {
            script: "/bin/true".into(),
            interface: "eth0".into(),
            vhid: 7,
            vips: vec!["192.0.2.50".into()],
            netns: None,
            timeout: Duration::from_secs(1),
            from: State::BACKUP,
            to: State::MASTER,
        };
        let cmd = run.command();
        let env: Vec<_> = cmd
            .as_std()
            .get_envs()
            .filter(|(k, _)| *k == "CARP_NETNS")
            .collect();
        assert_eq!(env, [("CARP_NETNS".as_ref(), Some("".as_ref()))]);
    }
}
