//! The execution history: every handler execution appends a start line and (unless its
//! process was killed) an end line, one `write` each to a file opened for appending, so a
//! SIGKILL loses no line that was written. The checker reads them back and finds
//! executions of one job that overlapped in time.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::Write,
    path::Path,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

/// Microseconds since the epoch (every process of the drill runs on this machine).
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Where a worker process writes its executions.
#[derive(Clone, Debug)]
pub(crate) struct HistoryFile(Arc<Mutex<File>>);

impl HistoryFile {
    /// Opens (creates) `path` for appending.
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self(Arc::new(Mutex::new(file))))
    }

    fn line(&self, text: String) {
        let mut file = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let _ = file.write_all(text.as_bytes());
    }

    /// An execution starts; the returned guard writes its end when dropped (also when the
    /// handler's future is dropped: a timeout, a cancel, a lost lease).
    pub(crate) fn start(&self, job: &str, token: &str) -> Execution {
        self.line(format!("S {job} {token} {}\n", now_us()));
        Execution {
            file: self.clone(),
            job: job.to_owned(),
            token: token.to_owned(),
            how: "dropped",
        }
    }
}

/// One running execution.
#[derive(Debug)]
pub(crate) struct Execution {
    file: HistoryFile,
    job: String,
    token: String,
    how: &'static str,
}

impl Execution {
    /// Marks how the handler returned.
    pub(crate) fn ended(&mut self, how: &'static str) {
        self.how = how;
    }
}

impl Drop for Execution {
    fn drop(&mut self) {
        self.file.line(format!(
            "E {} {} {} {}\n",
            self.job,
            self.token,
            now_us(),
            self.how
        ));
    }
}

/// One execution as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    /// The job.
    pub(crate) job: String,
    /// The attempt's lease token.
    pub(crate) token: String,
    /// When it started (µs).
    pub(crate) start: u64,
    /// When it ended (µs): its end line, or the kill time of its process.
    pub(crate) end: u64,
    /// False when its process was killed before it ended.
    pub(crate) finished: bool,
}

/// Reads one history file; executions without an end line end at `killed_at` (the time
/// the drill killed that process), or are still open (`u64::MAX`) when it was not killed.
pub(crate) fn read(path: &Path, killed_at: Option<u64>) -> std::io::Result<Vec<Run>> {
    let text = std::fs::read_to_string(path)?;
    let mut open: HashMap<(String, String), u64> = HashMap::new();
    let mut runs = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["S", job, token, at] => {
                open.insert(((*job).into(), (*token).into()), at.parse().unwrap_or(0));
            }
            ["E", job, token, at, _how] => {
                let key = ((*job).to_owned(), (*token).to_owned());
                if let Some(start) = open.remove(&key) {
                    runs.push(Run {
                        job: key.0,
                        token: key.1,
                        start,
                        end: at.parse().unwrap_or(u64::MAX),
                        finished: true,
                    });
                }
            }
            // A line cut short by a kill.
            _ => {}
        }
    }
    for ((job, token), start) in open {
        runs.push(Run {
            job,
            token,
            start,
            end: killed_at.unwrap_or(u64::MAX),
            finished: false,
        });
    }
    Ok(runs)
}

/// Pairs of executions of one job that overlapped: the second started before the first
/// had ended (or before its process was killed).
pub(crate) fn overlaps(runs: &[Run]) -> Vec<(Run, Run)> {
    let mut by_job: HashMap<&str, Vec<&Run>> = HashMap::new();
    for run in runs {
        by_job.entry(run.job.as_str()).or_default().push(run);
    }
    let mut out = Vec::new();
    for (_, mut runs) in by_job {
        runs.sort_by_key(|r| r.start);
        for (i, a) in runs.iter().enumerate() {
            for b in &runs[i + 1..] {
                if b.start < a.end {
                    out.push(((*a).clone(), (*b).clone()));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_executions_are_found_and_killed_ones_end_at_the_kill() {
        let dir = std::env::temp_dir().join(format!("chaos-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.log");
        std::fs::write(
            &path,
            "S j1 a 100\nE j1 a 200 ok\nS j1 b 150\nS j2 c 300\nE j2 c 400 ok\nS j2 d 400\nE j2 d 500 ok\nS j3 e 10\nE j3",
        )
        .unwrap();
        let runs = read(&path, Some(250)).unwrap();
        assert_eq!(runs.len(), 5);
        let killed = runs.iter().find(|r| r.token == "b").unwrap();
        assert_eq!((killed.end, killed.finished), (250, false));
        let found = overlaps(&runs);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].0.token.as_str(), found[0].1.token.as_str()),
            ("a", "b")
        );
    }
}
