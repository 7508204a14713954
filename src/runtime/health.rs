//! Container health checks as Docker (and so the ECS agent) runs them: the check is a process
//! exec'd in the running container every `interval`; one that passes makes the container
//! HEALTHY, `retries` consecutive failures make it UNHEALTHY, failures in the `startPeriod`
//! do not count (a pass ends the period), and a check that outlives its `timeout` is killed
//! and fails. The shim runs the checks; this module holds the rules and the recorded state.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What is kept of a check's output (Docker keeps 4 KiB).
pub const OUTPUT_MAX: usize = 4096;

/// The exit code recorded for a check killed at its timeout (Docker's).
pub const TIMED_OUT_EXIT: i32 = -1;

/// A container's `healthCheck`, as the shim runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheckSpec {
    /// The process to exec: `CMD`'s program and arguments, or `/bin/sh -c` and `CMD-SHELL`'s
    /// command.
    pub args: Vec<String>,
    pub interval_secs: u64,
    pub timeout_secs: u64,
    pub retries: u32,
    pub start_period_secs: u64,
}

impl HealthCheckSpec {
    /// From the task definition's `command` (`["CMD", prog, args...]` or `["CMD-SHELL",
    /// "command"]`, validated) and times. Like Docker, words after `CMD-SHELL`'s first go to
    /// the shell as its `$0`, `$1`...
    pub fn new(
        command: &[String],
        interval_secs: u64,
        timeout_secs: u64,
        retries: u64,
        start_period_secs: u64,
    ) -> HealthCheckSpec {
        let args = match command.first().map(String::as_str) {
            Some("CMD-SHELL") => ["/bin/sh", "-c"]
                .iter()
                .map(|s| s.to_string())
                .chain(command[1..].iter().cloned())
                .collect(),
            _ => command.get(1..).unwrap_or_default().to_vec(),
        };
        HealthCheckSpec {
            args,
            interval_secs,
            timeout_secs,
            retries: retries.min(u32::MAX as u64) as u32,
            start_period_secs,
        }
    }
}

/// ECS's health status of a container (and of a task).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthStatus {
    Healthy,
    Unhealthy,
    Unknown,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "HEALTHY",
            HealthStatus::Unhealthy => "UNHEALTHY",
            HealthStatus::Unknown => "UNKNOWN",
        }
    }
}

/// A container's health as the task's state file records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthState {
    pub status: HealthStatus,
    /// The last check's output (stdout then stderr, at most `OUTPUT_MAX` bytes, lossy UTF-8).
    pub output: String,
    /// The last check's exit code; `TIMED_OUT_EXIT` when it was killed at its timeout.
    pub exit_code: Option<i32>,
    /// When the last check ended (ms since the epoch).
    pub checked_at: Option<u64>,
    /// Consecutive failures that counted (those in the start period do not).
    pub failing_streak: u32,
}

impl HealthState {
    pub fn unknown() -> HealthState {
        HealthState {
            status: HealthStatus::Unknown,
            output: String::new(),
            exit_code: None,
            checked_at: None,
            failing_streak: 0,
        }
    }
}

/// The shim's schedule of one running container's checks.
#[derive(Debug, Clone)]
pub struct Monitor {
    pub spec: HealthCheckSpec,
    started: Instant,
    /// A check passed, which ends the start period early.
    passed_once: bool,
    /// When the next check is due (None while one runs).
    pub next_at: Option<Instant>,
}

impl Monitor {
    /// For a container that started at `started`: the first check comes one interval later.
    pub fn new(spec: HealthCheckSpec, started: Instant) -> Monitor {
        let next = started + Duration::from_secs(spec.interval_secs);
        Monitor {
            spec,
            started,
            passed_once: false,
            next_at: Some(next),
        }
    }

    pub fn due(&self, now: Instant) -> bool {
        self.next_at.is_some_and(|t| t <= now)
    }

    /// A check starts now; its deadline.
    pub fn begin(&mut self, now: Instant) -> Instant {
        self.next_at = None;
        now + Duration::from_secs(self.spec.timeout_secs)
    }

    /// A check ended at `now`: the state after it, and the next check one interval later.
    pub fn record(
        &mut self,
        state: &mut HealthState,
        exit_code: i32,
        output: String,
        checked_at_ms: u64,
        now: Instant,
    ) {
        let passed = exit_code == 0;
        let in_start_period = !self.passed_once
            && now.duration_since(self.started) < Duration::from_secs(self.spec.start_period_secs);
        state.output = output;
        state.exit_code = Some(exit_code);
        state.checked_at = Some(checked_at_ms);
        if passed {
            self.passed_once = true;
            state.failing_streak = 0;
            state.status = HealthStatus::Healthy;
        } else if !in_start_period {
            state.failing_streak += 1;
            if state.failing_streak >= self.spec.retries {
                state.status = HealthStatus::Unhealthy;
            }
        }
        self.next_at = Some(now + Duration::from_secs(self.spec.interval_secs));
    }
}

/// The task's health from its containers' (essential, health if checked): UNHEALTHY if an
/// essential container is, HEALTHY if every essential container with a check is, else
/// UNKNOWN; None when no essential container has a check.
pub fn task_health<'a>(
    containers: impl IntoIterator<Item = (bool, Option<&'a HealthState>)>,
) -> Option<HealthStatus> {
    let mut any = false;
    let mut all_healthy = true;
    for (essential, h) in containers {
        let Some(h) = h.filter(|_| essential) else {
            continue;
        };
        any = true;
        match h.status {
            HealthStatus::Unhealthy => return Some(HealthStatus::Unhealthy),
            HealthStatus::Unknown => all_healthy = false,
            HealthStatus::Healthy => {}
        }
    }
    any.then_some(if all_healthy {
        HealthStatus::Healthy
    } else {
        HealthStatus::Unknown
    })
}

/// A check's captured output as recorded: at most `OUTPUT_MAX` bytes, lossy UTF-8.
pub fn output_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(OUTPUT_MAX)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(retries: u64, start_period: u64) -> HealthCheckSpec {
        HealthCheckSpec::new(&["CMD".into(), "true".into()], 5, 2, retries, start_period)
    }

    #[test]
    fn commands_become_processes() {
        let s = |v: &[&str]| {
            let v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
            HealthCheckSpec::new(&v, 5, 2, 3, 0).args
        };
        assert_eq!(s(&["CMD", "/bin/check", "-q"]), ["/bin/check", "-q"]);
        assert_eq!(
            s(&["CMD-SHELL", "curl -f localhost || exit 1"]),
            ["/bin/sh", "-c", "curl -f localhost || exit 1"]
        );
    }

    #[test]
    fn retries_consecutive_failures_make_it_unhealthy_and_a_pass_heals() {
        let t0 = Instant::now();
        let mut m = Monitor::new(spec(2, 0), t0);
        assert!(!m.due(t0));
        assert!(m.due(t0 + Duration::from_secs(5)));
        let mut st = HealthState::unknown();
        let at = |s| t0 + Duration::from_secs(s);
        m.record(&mut st, 1, "no".into(), 1, at(5));
        assert_eq!((st.status, st.failing_streak), (HealthStatus::Unknown, 1));
        assert_eq!(m.next_at, Some(at(10)));
        m.record(&mut st, 0, "ok".into(), 2, at(10));
        assert_eq!((st.status, st.failing_streak), (HealthStatus::Healthy, 0));
        m.record(&mut st, 1, "no".into(), 3, at(15));
        assert_eq!((st.status, st.failing_streak), (HealthStatus::Healthy, 1));
        m.record(&mut st, TIMED_OUT_EXIT, "late".into(), 4, at(20));
        assert_eq!((st.status, st.failing_streak), (HealthStatus::Unhealthy, 2));
        assert_eq!(
            (st.output.as_str(), st.exit_code, st.checked_at),
            ("late", Some(-1), Some(4))
        );
        m.record(&mut st, 0, "ok".into(), 5, at(25));
        assert_eq!(st.status, HealthStatus::Healthy);
    }

    #[test]
    fn failures_in_the_start_period_do_not_count_until_a_pass_ends_it() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut m = Monitor::new(spec(1, 30), t0);
        let mut st = HealthState::unknown();
        m.record(&mut st, 1, "".into(), 1, at(5));
        m.record(&mut st, 1, "".into(), 1, at(10));
        assert_eq!((st.status, st.failing_streak), (HealthStatus::Unknown, 0));
        assert_eq!(st.exit_code, Some(1));
        m.record(&mut st, 0, "".into(), 1, at(15));
        assert_eq!(st.status, HealthStatus::Healthy);
        // Still within 30 s, but the period ended with the pass.
        m.record(&mut st, 1, "".into(), 1, at(20));
        assert_eq!(st.status, HealthStatus::Unhealthy);
        // Without a pass, the period ends with its time.
        let mut m = Monitor::new(spec(1, 30), t0);
        let mut st = HealthState::unknown();
        m.record(&mut st, 1, "".into(), 1, at(29));
        assert_eq!(st.status, HealthStatus::Unknown);
        m.record(&mut st, 1, "".into(), 1, at(30));
        assert_eq!(st.status, HealthStatus::Unhealthy);
    }

    #[test]
    fn task_health_follows_the_essential_containers() {
        let h = |s| HealthState {
            status: s,
            ..HealthState::unknown()
        };
        let (ok, bad, unk) = (
            h(HealthStatus::Healthy),
            h(HealthStatus::Unhealthy),
            h(HealthStatus::Unknown),
        );
        assert_eq!(task_health([(true, None), (false, Some(&ok))]), None);
        assert_eq!(
            task_health([(true, Some(&ok)), (false, Some(&bad)), (true, None)]),
            Some(HealthStatus::Healthy)
        );
        assert_eq!(
            task_health([(true, Some(&ok)), (true, Some(&unk))]),
            Some(HealthStatus::Unknown)
        );
        assert_eq!(
            task_health([(true, Some(&unk)), (true, Some(&bad))]),
            Some(HealthStatus::Unhealthy)
        );
    }

    #[test]
    fn output_is_capped() {
        let long = vec![b'x'; OUTPUT_MAX + 10];
        assert_eq!(output_text(&long).len(), OUTPUT_MAX);
        assert_eq!(output_text(b"hi\n"), "hi\n");
    }
}
