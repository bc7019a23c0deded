//! With the state changelog, the partitions whose events the stage judges:
//! a partition is owned once its tokens' state is restored, and no longer
//! once it moved away. Events of other partitions (read before a revoke,
//! or before the restore finished) are not judged here: the partition's
//! owner reads them again from its committed offset.

use std::collections::HashSet;
use std::sync::Arc;

use schemas::{EventBatch, Secret};

use crate::state::{PartitionId, topic_tag};

#[derive(Default)]
pub(super) struct Owned {
    pub partitions: HashSet<PartitionId>,
    /// The last topic seen and its tag.
    last: Option<(Arc<str>, u16)>,
    /// Events passed over because their partition is not owned here.
    pub passed_over: u64,
}

impl Owned {
    fn owns(&mut self, topic: &Arc<str>, partition: i32) -> bool {
        let tag = match &self.last {
            Some((t, tag)) if Arc::ptr_eq(t, topic) => *tag,
            _ => {
                let tag = topic_tag(topic);
                self.last = Some((Arc::clone(topic), tag));
                tag
            }
        };
        self.partitions.contains(&(tag, partition))
    }

    /// Drops the rows of `batch` (and their secrets) from partitions not
    /// owned here.
    pub fn keep_owned(&mut self, batch: &mut EventBatch, secrets: &mut Vec<(usize, Secret)>) {
        // The common case, every row owned, allocates nothing.
        if batch
            .origins
            .iter()
            .all(|o| self.owns(&o.topic, o.partition))
        {
            return;
        }
        let keep: Vec<bool> = batch
            .origins
            .iter()
            .map(|o| self.owns(&o.topic, o.partition))
            .collect();
        // Old row → new row, for the secrets.
        let mut row = 0;
        let renumber: Vec<Option<usize>> = keep
            .iter()
            .map(|&k| {
                k.then(|| {
                    row += 1;
                    row - 1
                })
            })
            .collect();
        self.passed_over += keep.iter().filter(|&&k| !k).count() as u64;
        let mut i = 0;
        batch.events.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        let mut i = 0;
        batch.origins.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        secrets.retain_mut(|(row, _)| match renumber.get(*row).copied().flatten() {
            Some(new) => {
                *row = new;
                true
            }
            None => false,
        });
    }
}

#[cfg(test)]
mod tests {
    use schemas::{Event, Origin};

    use super::*;

    #[test]
    fn only_owned_partitions_pass_with_their_secrets() {
        let topic: Arc<str> = Arc::from("api-calls");
        let mut batch = EventBatch::default();
        for (i, p) in [0, 1, 0, 2].into_iter().enumerate() {
            batch
                .events
                .push(Event::new(0, format!("t{i}"), "oauth", "GET /"));
            batch.origins.push(Origin {
                topic: Arc::clone(&topic),
                partition: p,
                offset: i as i64,
                kafka_ts_ms: None,
            });
        }
        let mut secrets = vec![(1, Secret::new("s1".into())), (2, Secret::new("s2".into()))];
        let mut owned = Owned::default();
        owned.partitions.insert((topic_tag("api-calls"), 0));
        owned.keep_owned(&mut batch, &mut secrets);
        let ids: Vec<_> = batch.events.iter().map(|e| e.token_id.as_str()).collect();
        assert_eq!(ids, ["t0", "t2"]);
        assert_eq!(batch.origins.len(), 2);
        assert_eq!(secrets.len(), 1);
        assert_eq!(secrets[0].0, 1, "t2's secret follows it to row 1");
        assert_eq!(owned.passed_over, 2);
    }
}
