//! Unit strings of the task definition: task-level `cpu` ("256", "0.25 vCPU", 1024) and
//! `memory` ("512", "1 GB", "2GB"), as ECS accepts them.

use serde_json::Value;

/// Parses a task-level `cpu` value into CPU units (1024 = one vCPU).
pub fn parse_cpu(v: &Value) -> Result<u64, String> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("must be a whole number of CPU units, got {n}")),
        Value::String(s) => {
            let t = s.trim();
            let lower = t.to_ascii_lowercase();
            if let Some(num) = lower.strip_suffix("vcpu") {
                let f: f64 = num
                    .trim()
                    .parse()
                    .map_err(|_| format!("invalid vCPU value {s:?}"))?;
                if !(f.is_finite() && f > 0.0) {
                    return Err(format!("invalid vCPU value {s:?}"));
                }
                Ok((f * 1024.0).round() as u64)
            } else {
                t.parse::<u64>().map_err(|_| {
                    format!(
                        "invalid cpu value {s:?} (expected units like \"256\" or \"0.25 vCPU\")"
                    )
                })
            }
        }
        other => Err(format!("must be a string or a number, got {other}")),
    }
}

/// Parses a task-level `memory` value into MiB.
pub fn parse_memory_mib(v: &Value) -> Result<u64, String> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("must be a whole number of MiB, got {n}")),
        Value::String(s) => {
            let lower = s.trim().to_ascii_lowercase();
            let (num, mult) = if let Some(n) = lower.strip_suffix("gb") {
                (n, 1024.0)
            } else if let Some(n) = lower.strip_suffix("mb") {
                (n, 1.0)
            } else if let Some(n) = lower.strip_suffix("mib") {
                (n, 1.0)
            } else if let Some(n) = lower.strip_suffix("gib") {
                (n, 1024.0)
            } else {
                (lower.as_str(), 1.0)
            };
            let f: f64 = num.trim().parse().map_err(|_| {
                format!("invalid memory value {s:?} (expected MiB like \"512\" or \"1 GB\")")
            })?;
            if !(f.is_finite() && f > 0.0) {
                return Err(format!("invalid memory value {s:?}"));
            }
            Ok((f * mult).round() as u64)
        }
        other => Err(format!("must be a string or a number, got {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cpu_forms() {
        assert_eq!(parse_cpu(&json!("256")).unwrap(), 256);
        assert_eq!(parse_cpu(&json!(512)).unwrap(), 512);
        assert_eq!(parse_cpu(&json!("0.25 vCPU")).unwrap(), 256);
        assert_eq!(parse_cpu(&json!("1 vCPU")).unwrap(), 1024);
        assert_eq!(parse_cpu(&json!("2vcpu")).unwrap(), 2048);
        assert!(parse_cpu(&json!("lots")).is_err());
        assert!(parse_cpu(&json!(-1)).is_err());
        assert!(parse_cpu(&json!(true)).is_err());
    }

    #[test]
    fn memory_forms() {
        assert_eq!(parse_memory_mib(&json!("512")).unwrap(), 512);
        assert_eq!(parse_memory_mib(&json!("1 GB")).unwrap(), 1024);
        assert_eq!(parse_memory_mib(&json!("2GB")).unwrap(), 2048);
        assert_eq!(parse_memory_mib(&json!("0.5 GB")).unwrap(), 512);
        assert_eq!(parse_memory_mib(&json!(64)).unwrap(), 64);
        assert!(parse_memory_mib(&json!("1 TB")).is_err());
        assert!(parse_memory_mib(&json!("-5")).is_err());
    }
}
