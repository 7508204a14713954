//! ECS's container ordering rules, as pure decisions the shim applies: when a container whose
//! `dependsOn` conditions hold may start, when one can never start, and whether an exited
//! container is restarted (`restartPolicy`).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// `dependsOn[].condition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Condition {
    /// The dependency has started.
    Start,
    /// The dependency ran and exited, with any code.
    Complete,
    /// The dependency ran and exited with 0.
    Success,
    /// The dependency's health check passed.
    Healthy,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Start => "START",
            Condition::Complete => "COMPLETE",
            Condition::Success => "SUCCESS",
            Condition::Healthy => "HEALTHY",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    pub container: String,
    pub condition: Condition,
}

/// `restartPolicy` of a container with `enabled: true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub ignored_exit_codes: Vec<i32>,
    /// `restartAttemptPeriod`: a container is restarted only after it ran this long since
    /// its start (or its last restart), so that one that fails at once is not restarted in a
    /// loop.
    pub attempt_period_secs: u64,
}

/// What the rules need to know of one container at a moment.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub started: bool,
    /// It ran and is gone; `exit_code` is its code.
    pub exited: bool,
    /// It never started (a start failure, or it was given up on).
    pub failed: bool,
    pub exit_code: Option<i32>,
    pub healthy: bool,
}

/// What may happen to a pending container now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Start,
    Wait,
    /// It can never start; the reason names the dependency.
    Never(String),
}

/// Decides for a pending container from its dependencies' states. `waited` is how long it
/// has waited; a dependency's `startTimeout` bounds the wait for it (none: no bound).
pub fn readiness(
    deps: &[Dependency],
    observed: impl Fn(&str) -> Option<Observed>,
    start_timeout_of: impl Fn(&str) -> Option<u64>,
    waited: Duration,
) -> Readiness {
    let mut ready = true;
    for d in deps {
        let Some(o) = observed(&d.container) else {
            return Readiness::Never(format!("dependency {} does not exist", d.container));
        };
        let cond = d.condition.as_str();
        let met = match d.condition {
            Condition::Start => o.started,
            Condition::Complete => o.exited,
            Condition::Success => o.exited && o.exit_code == Some(0),
            Condition::Healthy => o.healthy,
        };
        if met {
            continue;
        }
        if o.failed {
            return Readiness::Never(format!(
                "dependency {} did not start, so it cannot reach {cond}",
                d.container
            ));
        }
        let impossible = match d.condition {
            Condition::Start | Condition::Complete => false,
            Condition::Success => o.exited,
            Condition::Healthy => o.exited,
        };
        if impossible {
            return Readiness::Never(match o.exit_code {
                Some(c) => format!(
                    "dependency {} exited with {c} and cannot reach {cond}",
                    d.container
                ),
                None => format!("dependency {} cannot reach {cond}", d.container),
            });
        }
        if let Some(t) = start_timeout_of(&d.container) {
            if waited >= Duration::from_secs(t) {
                return Readiness::Never(format!(
                    "dependency {} did not reach {cond} within its startTimeout ({t} s)",
                    d.container
                ));
            }
        }
        ready = false;
    }
    if ready {
        Readiness::Start
    } else {
        Readiness::Wait
    }
}

/// Whether an exited container is restarted under its policy.
pub fn should_restart(
    policy: Option<&RestartPolicy>,
    exit_code: i32,
    task_stopping: bool,
    running_since: Instant,
    now: Instant,
) -> bool {
    let Some(p) = policy else { return false };
    !task_stopping
        && !p.ignored_exit_codes.contains(&exit_code)
        && now.duration_since(running_since) >= Duration::from_secs(p.attempt_period_secs)
}

/// The first dependency cycle among `deps` (container → its dependencies), if any, as the
/// names along it. Validation refuses cycles; the shim checks again rather than wait forever.
pub fn find_cycle(deps: &[(String, Vec<String>)]) -> Option<Vec<String>> {
    fn visit<'a>(
        n: &'a str,
        deps: &'a [(String, Vec<String>)],
        path: &mut Vec<&'a str>,
        done: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| *p == n) {
            let mut cycle: Vec<String> = path[i..].iter().map(|s| s.to_string()).collect();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(&n) {
            return None;
        }
        path.push(n);
        if let Some((_, ds)) = deps.iter().find(|(c, _)| c == n) {
            for d in ds {
                if let Some(c) = visit(d, deps, path, done) {
                    return Some(c);
                }
            }
        }
        path.pop();
        done.push(n);
        None
    }
    let mut done = Vec::new();
    for (c, _) in deps {
        if let Some(cycle) = visit(c, deps, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(c: &str, cond: Condition) -> Dependency {
        Dependency {
            container: c.into(),
            condition: cond,
        }
    }

    fn obs(started: bool, exited: bool, code: Option<i32>, healthy: bool) -> Observed {
        Observed {
            started,
            exited,
            failed: false,
            exit_code: code,
            healthy,
        }
    }

    #[test]
    fn each_condition_waits_starts_or_gives_up() {
        let none = |_: &str| None;
        let z = Duration::ZERO;
        let r = |cond, o: Observed| readiness(&[dep("a", cond)], |_| Some(o.clone()), none, z);
        assert_eq!(
            r(Condition::Start, obs(false, false, None, false)),
            Readiness::Wait
        );
        assert_eq!(
            r(Condition::Start, obs(true, false, None, false)),
            Readiness::Start
        );
        assert_eq!(
            r(Condition::Complete, obs(true, false, None, false)),
            Readiness::Wait
        );
        assert_eq!(
            r(Condition::Complete, obs(true, true, Some(3), false)),
            Readiness::Start
        );
        assert_eq!(
            r(Condition::Success, obs(true, true, Some(0), false)),
            Readiness::Start
        );
        assert!(matches!(
            r(Condition::Success, obs(true, true, Some(3), false)),
            Readiness::Never(m) if m.contains("exited with 3")
        ));
        assert_eq!(
            r(Condition::Healthy, obs(true, false, None, false)),
            Readiness::Wait
        );
        assert_eq!(
            r(Condition::Healthy, obs(true, false, None, true)),
            Readiness::Start
        );
        assert!(matches!(
            r(Condition::Healthy, obs(true, true, Some(0), false)),
            Readiness::Never(_)
        ));
        let failed = Observed {
            failed: true,
            ..Default::default()
        };
        assert!(
            matches!(r(Condition::Start, failed), Readiness::Never(m) if m.contains("did not start"))
        );
    }

    #[test]
    fn start_timeout_of_the_dependency_bounds_the_wait() {
        let d = [dep("db", Condition::Healthy)];
        let o = |_: &str| Some(obs(true, false, None, false));
        let t = |_: &str| Some(5);
        assert_eq!(readiness(&d, o, t, Duration::from_secs(4)), Readiness::Wait);
        assert!(matches!(
            readiness(&d, o, t, Duration::from_secs(5)),
            Readiness::Never(m) if m.contains("startTimeout (5 s)")
        ));
        // All conditions must hold.
        let two = [dep("a", Condition::Start), dep("b", Condition::Start)];
        let o = |n: &str| Some(obs(n == "a", false, None, false));
        assert_eq!(
            readiness(&two, o, |_| None, Duration::ZERO),
            Readiness::Wait
        );
    }

    #[test]
    fn restart_policy() {
        let p = RestartPolicy {
            ignored_exit_codes: vec![0],
            attempt_period_secs: 60,
        };
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(61);
        assert!(should_restart(Some(&p), 1, false, t0, later));
        assert!(
            !should_restart(Some(&p), 0, false, t0, later),
            "ignored code"
        );
        assert!(
            !should_restart(Some(&p), 1, true, t0, later),
            "task stopping"
        );
        assert!(
            !should_restart(Some(&p), 1, false, t0, t0 + Duration::from_secs(10)),
            "too soon"
        );
        assert!(!should_restart(None, 1, false, t0, later));
    }

    #[test]
    fn cycles_are_found() {
        let d = |c: &str, ds: &[&str]| (c.to_string(), ds.iter().map(|s| s.to_string()).collect());
        assert_eq!(find_cycle(&[d("a", &["b"]), d("b", &[])]), None);
        assert_eq!(
            find_cycle(&[d("a", &["b"]), d("b", &["c"]), d("c", &["a"])]),
            Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
    }
}
