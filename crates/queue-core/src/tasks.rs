//! The tasks a deployment runs, as operators see them: each task with the live workers that
//! have a handler for it and the payload schema its type shares (`queuectl tasks`, the
//! dashboard's workers page).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::WorkerInfo;

/// One task of the deployment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskEntry {
    /// The task name.
    pub task: String,
    /// The live workers with a handler for it, by id.
    pub workers: Vec<String>,
    /// Its payload's JSON schema, when a worker shares one (the newest worker's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
}

impl TaskEntry {
    /// The payload's top-level fields from its schema, a required one bare and an optional
    /// one with `?`, by name (empty without a schema).
    ///
    /// ```
    /// use queue_core::TaskEntry;
    ///
    /// let entry = TaskEntry {
    ///     task: "process_book".into(),
    ///     workers: vec!["w1".into()],
    ///     schema: Some(serde_json::json!({
    ///         "type": "object",
    ///         "properties": {"book_id": {"type": "string"}, "source": {"type": "string"}},
    ///         "required": ["book_id"]
    ///     })),
    /// };
    /// assert_eq!(entry.fields(), ["book_id", "source?"]);
    /// ```
    pub fn fields(&self) -> Vec<String> {
        let Some(schema) = &self.schema else {
            return Vec::new();
        };
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut names: Vec<&String> = schema["properties"]
            .as_object()
            .map(|props| props.keys().collect())
            .unwrap_or_default();
        names.sort();
        names
            .into_iter()
            .map(|name| {
                if required.contains(&name.as_str()) {
                    name.clone()
                } else {
                    format!("{name}?")
                }
            })
            .collect()
    }
}

/// The tasks the live workers among `workers` run, by name; a lost worker's tasks are left
/// out (nothing runs them now).
pub fn task_catalog(workers: &[WorkerInfo]) -> Vec<TaskEntry> {
    let mut alive: Vec<&WorkerInfo> = workers.iter().filter(|w| !w.lost).collect();
    // The newest worker's schema wins: it runs the newest code.
    alive.sort_by_key(|w| std::cmp::Reverse(w.started_at));
    let mut tasks: BTreeMap<&str, TaskEntry> = BTreeMap::new();
    for worker in alive {
        for task in &worker.tasks {
            let entry = tasks.entry(task).or_insert_with(|| TaskEntry {
                task: task.clone(),
                workers: Vec::new(),
                schema: None,
            });
            entry.workers.push(worker.worker_id.clone());
            if entry.schema.is_none() {
                entry.schema = worker.schemas.get(task).cloned();
            }
        }
    }
    tasks
        .into_values()
        .map(|mut entry| {
            entry.workers.sort();
            entry
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::from_millis;

    fn worker(id: &str, started: i64, tasks: &[&str], lost: bool) -> WorkerInfo {
        serde_json::from_value(serde_json::json!({
            "worker_id": id, "host": "h", "pid": 1, "concurrency": 1,
            "started_at": from_millis(started), "last_seen": from_millis(started),
            "jobs": [], "tasks": tasks, "lost": lost,
            "schemas": tasks.iter().map(|t| (t.to_string(), serde_json::json!({"v": started})))
                .collect::<serde_json::Map<_, _>>(),
        }))
        .unwrap()
    }

    #[test]
    fn tasks_merge_live_workers_newest_schema_first() {
        let catalog = task_catalog(&[
            worker("w1", 1, &["a", "b"], false),
            worker("w2", 2, &["b"], false),
            worker("w3", 3, &["c"], true),
        ]);
        let names: Vec<&str> = catalog.iter().map(|t| t.task.as_str()).collect();
        assert_eq!(names, ["a", "b"], "a lost worker's task is not listed");
        assert_eq!(catalog[1].workers, ["w1", "w2"]);
        assert_eq!(catalog[1].schema, Some(serde_json::json!({"v": 2})));
        assert_eq!(catalog[0].fields(), Vec::<String>::new());
    }
}
