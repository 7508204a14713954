//! `skiff ctl`'s readable tables (the default output), one per kind of answer.

use serde_json::Value;

use super::ctl::Verb;

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

fn short(v: &Value) -> String {
    s(v).rsplit('/').next().unwrap_or_default().to_string()
}

/// Columns padded to their widest cell.
fn grid(rows: Vec<Vec<String>>) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let w: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn tasks_table(tasks: &[Value]) -> String {
    let mut rows = vec![vec![
        "TASK",
        "INSTANCE",
        "DEFINITION",
        "LAST",
        "DESIRED",
        "CPU",
        "MEMORY",
        "EXIT",
        "STOPPED REASON",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>()];
    for t in tasks {
        let exits: Vec<String> = t["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| {
                c["exitCode"]
                    .as_i64()
                    .map(|x| format!("{}={x}", s(&c["name"])))
            })
            .collect();
        rows.push(vec![
            short(&t["taskArn"]),
            short(&t["containerInstanceArn"]),
            short(&t["taskDefinitionArn"]),
            s(&t["lastStatus"]),
            s(&t["desiredStatus"]),
            s(&t["cpu"]),
            s(&t["memory"]),
            if exits.is_empty() {
                "-".into()
            } else {
                exits.join(",")
            },
            s(&t["stoppedReason"]),
        ]);
    }
    grid(rows)
}

fn resource(v: &Value, name: &str) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == name)
        .map(|r| s(&r["integerValue"]))
        .unwrap_or_default()
}

fn instances_table(list: &[Value]) -> String {
    let mut rows = vec![vec![
        "INSTANCE",
        "HOST",
        "STATUS",
        "CONNECTED",
        "CPU FREE/ALL",
        "MEMORY FREE/ALL",
        "RUNNING",
        "PENDING",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>()];
    for i in list {
        let (reg, rem) = (&i["registeredResources"], &i["remainingResources"]);
        rows.push(vec![
            short(&i["containerInstanceArn"]),
            s(&i["ec2InstanceId"]),
            s(&i["status"]),
            s(&i["agentConnected"]),
            format!("{}/{}", resource(rem, "CPU"), resource(reg, "CPU")),
            format!("{}/{}", resource(rem, "MEMORY"), resource(reg, "MEMORY")),
            s(&i["runningTasksCount"]),
            s(&i["pendingTasksCount"]),
        ]);
    }
    grid(rows)
}

fn failures(v: &Value) -> String {
    v["failures"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| format!("failure: {} {}\n", s(&f["arn"]), s(&f["reason"])))
        .collect()
}

fn lines(v: &Value) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|x| format!("{}\n", s(x)))
        .collect()
}

pub(super) fn table(verb: &Verb, v: &Value) -> String {
    let arr = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    match verb {
        Verb::ListClusters => lines(&v["clusterArns"]),
        Verb::ListTaskDefinitions { .. } => lines(&v["taskDefinitionArns"]),
        Verb::ListTasks { .. } => lines(&v["taskArns"]),
        Verb::ListContainerInstances { .. } => lines(&v["containerInstanceArns"]),
        Verb::CreateCluster { .. } | Verb::DescribeClusters { .. } | Verb::DeleteCluster { .. } => {
            let list = if v["cluster"].is_object() {
                vec![v["cluster"].clone()]
            } else {
                arr("clusters")
            };
            let mut rows = vec![vec!["CLUSTER", "STATUS", "INSTANCES", "RUNNING", "PENDING"]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()];
            for c in list {
                rows.push(vec![
                    s(&c["clusterName"]),
                    s(&c["status"]),
                    s(&c["registeredContainerInstancesCount"]),
                    s(&c["runningTasksCount"]),
                    s(&c["pendingTasksCount"]),
                ]);
            }
            grid(rows) + &failures(v)
        }
        Verb::RegisterTaskDefinition { .. }
        | Verb::DescribeTaskDefinition { .. }
        | Verb::DeregisterTaskDefinition { .. } => {
            let d = &v["taskDefinition"];
            let mut rows = vec![vec![
                "CONTAINER".to_string(),
                "IMAGE".into(),
                "CPU".into(),
                "MEMORY".into(),
                "ESSENTIAL".into(),
            ]];
            for c in d["containerDefinitions"].as_array().into_iter().flatten() {
                rows.push(vec![
                    s(&c["name"]),
                    s(&c["image"]),
                    s(&c["cpu"]),
                    s(&c["memory"]),
                    s(&c["essential"]),
                ]);
            }
            format!(
                "{} {} (network {}, cpu {}, memory {})\n{}",
                s(&d["taskDefinitionArn"]),
                s(&d["status"]),
                s(&d["networkMode"]),
                s(&d["cpu"]),
                s(&d["memory"]),
                grid(rows)
            )
        }
        Verb::RunTask { .. } | Verb::StartTask { .. } | Verb::DescribeTasks { .. } => {
            tasks_table(&arr("tasks")) + &failures(v)
        }
        Verb::StopTask { .. } => tasks_table(&[v["task"].clone()]),
        Verb::DescribeContainerInstances { .. } | Verb::UpdateContainerInstancesState { .. } => {
            instances_table(&arr("containerInstances")) + &failures(v)
        }
        Verb::DeregisterContainerInstance { .. } => {
            instances_table(&[v["containerInstance"].clone()])
        }
        Verb::CreateJoinToken { .. } => format!("{}\n", s(&v["joinToken"])),
        Verb::GetUtilization { .. } => {
            let mut rows = vec![vec![
                "OF",
                "WINDOW END",
                "CPU AVG",
                "CPU MAX",
                "MEMORY AVG",
                "MEMORY MAX",
            ]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()];
            let mut add = |who: String, ws: &Value| {
                for w in ws.as_array().into_iter().flatten() {
                    let avg = |k: &str| {
                        let n = w[k]["count"].as_f64().unwrap_or(0.0);
                        if n > 0.0 {
                            format!("{:.1}", w[k]["sum"].as_f64().unwrap_or(0.0) / n)
                        } else {
                            "-".into()
                        }
                    };
                    rows.push(vec![
                        who.clone(),
                        s(&w["windowEnd"]),
                        avg("cpu"),
                        s(&w["cpu"]["max"]),
                        avg("memory"),
                        s(&w["memory"]["max"]),
                    ]);
                }
            };
            if v["containerInstance"].is_object() {
                add(
                    short(&v["containerInstance"]["containerInstanceArn"]),
                    &v["containerInstance"]["windows"],
                );
            }
            for t in arr("tasks") {
                add(short(&t["taskArn"]), &t["windows"]);
            }
            grid(rows)
        }
    }
}
