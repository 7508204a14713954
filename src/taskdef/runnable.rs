//! What a valid task definition may ask for that `skiff run` does not do yet.

use super::TaskDefinition;

/// One message per feature the definition uses that skiff cannot run yet, each with its field
/// path and "not supported yet". Empty when the task can run. Validation accepts these fields
/// (they are valid ECS); running refuses them rather than ignore them.
pub fn not_yet_runnable(td: &TaskDefinition) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |path: &str, what: &str| out.push(format!("{path}: not supported yet{what}"));
    if td.task_role_arn.is_some() {
        add("taskRoleArn", " (no credentials endpoint for containers)");
    }
    if td.ephemeral_storage_gib.is_some() {
        add("ephemeralStorage", "");
    }
    for (i, c) in td.containers.iter().enumerate() {
        let p = format!("containerDefinitions[{i}]");
        if let Some(lc) = &c.log_configuration {
            let lp = format!("{p}.logConfiguration");
            if lc.log_driver != "json-file" {
                add(
                    &format!("{lp}.logDriver"),
                    &format!(" ({}: containers always log to json-file)", lc.log_driver),
                );
            }
            if !lc.options.is_empty() {
                add(
                    &format!("{lp}.options"),
                    " (json-file rotates at 10 MiB, 3 files)",
                );
            }
            if !lc.secret_options.is_empty() {
                add(&format!("{lp}.secretOptions"), "");
            }
        }
        if !c.resource_requirements.is_empty() {
            add(&format!("{p}.resourceRequirements"), "");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::parse::testing::{parse, task};
    use super::*;

    #[test]
    fn what_run_cannot_do_yet() {
        let td = parse(&task(
            r#""volumes":[{"name":"v"}],"taskRoleArn":"r","ephemeralStorage":{"sizeInGiB":30},
               "placementConstraints":[{"type":"memberOf","expression":"x"}],"networkMode":"bridge","#,
            &[
                r#""name":"a","mountPoints":[{"sourceVolume":"v","containerPath":"/v"}],
                   "healthCheck":{"command":["CMD","true"]},"dockerLabels":{"a":"b"},
                   "logConfiguration":{"logDriver":"json-file","options":{"max-size":"1m"},
                     "secretOptions":[{"name":"n","valueFrom":"v"}]}"#,
                r#""name":"b","volumesFrom":[{"sourceContainer":"a"}],
                   "dependsOn":[{"containerName":"a","condition":"HEALTHY"}],
                   "logConfiguration":{"logDriver":"none"}"#,
            ],
        ));
        assert_eq!(
            not_yet_runnable(&td),
            vec![
                "taskRoleArn: not supported yet (no credentials endpoint for containers)",
                "ephemeralStorage: not supported yet",
                "containerDefinitions[0].logConfiguration.options: not supported yet (json-file rotates at 10 MiB, 3 files)",
                "containerDefinitions[0].logConfiguration.secretOptions: not supported yet",
                "containerDefinitions[1].logConfiguration.logDriver: not supported yet (none: containers always log to json-file)",
            ]
        );
    }

    #[test]
    fn what_run_does_already() {
        let td = parse(&task(
            r#""networkMode":"bridge","executionRoleArn":"r","volumes":[{"name":"v"}],"#,
            &[
                r#""name":"a","portMappings":[{"containerPort":80}],"links":["b"],
                   "volumesFrom":[{"sourceContainer":"b","readOnly":true}],
                   "dependsOn":[{"containerName":"b","condition":"START"}],"dockerLabels":{"a":"b"},
                   "restartPolicy":{"enabled":true},"secrets":[{"name":"S","valueFrom":"s"}],
                   "environmentFiles":[{"value":"/e.env","type":"s3"}],
                   "logConfiguration":{"logDriver":"json-file"}"#,
                r#""name":"b","disableNetworking":true,
                   "mountPoints":[{"sourceVolume":"v","containerPath":"/v"}]"#,
            ],
        ));
        assert_eq!(not_yet_runnable(&td), Vec::<String>::new());
    }
}
