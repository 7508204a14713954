//! The task definition's resource fields → cgroup limits, as ECS maps them.

use crate::cgroup::{self, Limits};
use crate::taskdef::{ContainerDefinition, TaskDefinition};

/// Host-side settings that shape the limits.
#[derive(Debug, Clone, Copy)]
pub struct LimitSettings {
    /// CFS period for task-level CPU quotas.
    pub cpu_period_us: u64,
    /// Most processes per task (ECS_TASK_PIDS_LIMIT); None = unlimited.
    pub task_pids_limit: Option<u64>,
}

/// The task cgroup: task `memory` as a hard limit, task `cpu` as a CFS quota, CPU shares
/// equal to the task's CPU units (or the sum of its containers') so that sibling tasks share
/// a core in proportion to what they asked, and the pids limit.
pub fn task_limits(td: &TaskDefinition, s: &LimitSettings) -> Limits {
    let units = td
        .cpu
        .unwrap_or_else(|| td.containers.iter().map(|c| c.cpu).sum());
    Limits {
        memory_max: td.memory.map(cgroup::mib_to_bytes),
        cpu_shares: Some(cgroup::cpu_units_to_shares(units)),
        cpu_quota_us: td
            .cpu
            .map(|u| cgroup::cpu_units_to_quota(u, s.cpu_period_us)),
        cpu_period_us: s.cpu_period_us,
        pids_max: s.task_pids_limit,
        ..Default::default()
    }
}

/// A container cgroup: `memory` hard, `memoryReservation` soft, `cpu` as shares, swap off
/// unless `linuxParameters.maxSwap` allows some.
pub fn container_limits(c: &ContainerDefinition, s: &LimitSettings) -> Limits {
    Limits {
        memory_max: c.memory.map(cgroup::mib_to_bytes),
        memory_low: c.memory_reservation.map(cgroup::mib_to_bytes),
        cpu_shares: Some(cgroup::cpu_units_to_shares(c.cpu)),
        cpu_period_us: s.cpu_period_us,
        swap_max: Some(c.max_swap.unwrap_or(0) * 1024 * 1024),
        swappiness: c.swappiness,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::taskdef::parse_task_definition;

    const S: LimitSettings = LimitSettings {
        cpu_period_us: 100_000,
        task_pids_limit: Some(512),
    };

    #[test]
    fn task_and_container_mapping() {
        let td = parse_task_definition(
            br#"{"family":"f","cpu":"0.5 vCPU","memory":"1 GB","containerDefinitions":[
                {"name":"a","image":"i","cpu":100,"memory":64,"memoryReservation":32},
                {"name":"b","image":"i","linuxParameters":{"maxSwap":16,"swappiness":5},"memory":8}]}"#,
            None,
        )
        .unwrap();
        let t = task_limits(&td, &S);
        assert_eq!(t.memory_max, Some(1 << 30));
        assert_eq!(t.cpu_quota_us, Some(50_000));
        assert_eq!(t.cpu_shares, Some(512));
        assert_eq!(t.pids_max, Some(512));
        let a = container_limits(&td.containers[0], &S);
        assert_eq!(a.memory_max, Some(64 << 20));
        assert_eq!(a.memory_low, Some(32 << 20));
        assert_eq!(a.cpu_shares, Some(100));
        assert_eq!(a.swap_max, Some(0));
        let b = container_limits(&td.containers[1], &S);
        assert_eq!(b.cpu_shares, Some(2), "cpu 0 → 2 shares");
        assert_eq!(b.swap_max, Some(16 << 20));
        assert_eq!(b.swappiness, Some(5));
    }

    #[test]
    fn task_shares_sum_containers_without_task_cpu() {
        let td = parse_task_definition(
            br#"{"family":"f","containerDefinitions":[
                {"name":"a","image":"i","cpu":700,"memory":64},
                {"name":"b","image":"i","cpu":324,"memory":64}]}"#,
            None,
        )
        .unwrap();
        let t = task_limits(&td, &S);
        assert_eq!(t.cpu_shares, Some(1024));
        assert_eq!(t.cpu_quota_us, None);
        assert_eq!(t.memory_max, None);
    }
}
