//! Flows: flattening, child policies and what a child's ending does.

use super::*;

fn job(n: u32) -> NewJob {
    NewJob::new("t", &n).unwrap()
}

#[test]
fn a_parent_is_affected_only_while_it_waits() {
    for policy in ChildPolicy::ALL {
        for child in JobStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for parent in JobStatus::ALL {
                for waiting in [0, 1, 5] {
                    let got = on_child_ended(policy, child, parent, waiting);
                    let want = if parent != JobStatus::Queued {
                        ParentAction::Count
                    } else if policy == ChildPolicy::FailParent
                        && matches!(child, JobStatus::Failed | JobStatus::Cancelled)
                    {
                        ParentAction::Fail
                    } else if waiting == 0 {
                        ParentAction::Release
                    } else {
                        ParentAction::Count
                    };
                    assert_eq!(got, want, "{policy:?} {child} {parent} {waiting}");
                }
            }
        }
    }
}

#[test]
fn reopen_over_every_status() {
    for parent in JobStatus::ALL {
        for started in [false, true] {
            let want = match (parent, started) {
                (JobStatus::Queued, _) => Reopen::Hold,
                (JobStatus::Failed, false) => Reopen::Requeue,
                _ => Reopen::Count,
            };
            assert_eq!(on_child_reopened(parent, started), want);
        }
    }
}

#[test]
fn flatten_orders_parents_first_and_checks() {
    let flow = Flow::new(job(0))
        .child(Flow::new(job(1)).child(Flow::new(job(2))))
        .child(Flow::new(job(3)).on_failure(ChildPolicy::Ignore));
    assert_eq!((flow.len(), flow.depth()), (4, 3));
    let flat = flow.flatten().unwrap();
    let parents: Vec<_> = flat.iter().map(|f| f.parent).collect();
    assert_eq!(parents, [None, Some(0), Some(1), Some(0)]);
    let kids: Vec<_> = flat.iter().map(|f| f.children).collect();
    assert_eq!(kids, [2, 1, 0, 0]);
    assert_eq!(flat[3].policy, ChildPolicy::Ignore);
    let payloads: Vec<_> = flat.iter().map(|f| f.job.payload.as_str()).collect();
    assert_eq!(payloads, ["0", "1", "2", "3"]);

    let dup = Flow::new(job(0).unique_key("k")).child(Flow::new(job(1).unique_key("k")));
    assert!(dup.flatten().unwrap_err().to_string().contains("`k`"));
    let mut deep = Flow::new(job(0));
    for _ in 0..MAX_FLOW_DEPTH {
        deep = Flow::new(job(0)).child(deep);
    }
    assert!(deep.flatten().unwrap_err().to_string().contains("nests"));
}

#[test]
fn counts_progress_and_batch_status() {
    let mut c = ChildCounts {
        waiting: 2,
        ..ChildCounts::default()
    };
    assert_eq!((c.progress(), c.batch_status()), (0, JobStatus::Queued));
    c.waiting -= 1;
    *c.of(JobStatus::Completed) += 1;
    assert_eq!(c.progress(), 50);
    c.waiting -= 1;
    *c.of(JobStatus::Partial) += 1;
    assert_eq!((c.progress(), c.batch_status()), (99, JobStatus::Partial));
    assert_eq!(ChildCounts::default().progress(), 0);
    assert!(ChildPolicy::Continue.shows(JobStatus::Failed));
    assert!(!ChildPolicy::Ignore.shows(JobStatus::Cancelled));
    assert!(ChildPolicy::Ignore.shows(JobStatus::Partial));
    assert_eq!(
        ChildPolicy::parse("continue").unwrap(),
        ChildPolicy::Continue
    );
    assert!(ChildPolicy::parse("x").is_err());
}
