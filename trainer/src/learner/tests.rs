//! The learner on its own thread: rounds, staleness, stops, async lag.

use super::*;

fn rollout(node: &str, version: u64, first_id: u32) -> Rollout {
    let (steps, p) = (4usize, 2usize);
    let n = steps * p;
    Rollout {
        node_name: node.into(),
        policy_version: version,
        first_slot: 0,
        steps,
        prosumer_ids: vec![first_id, first_id + 1],
        observations: (0..n * OBS_DIM).map(|i| (i % 7) as f32 * 0.1).collect(),
        actions: vec![0.1; n * 3],
        log_probs: vec![-2.0; n],
        values: vec![0.0; n],
        rewards: vec![-0.2; n],
        dones: (0..n).map(|i| i >= n - p).collect(),
        bootstrap_values: vec![0.0; p],
        costs: vec![0.1; n],
        grid_import_kwh: vec![0.5; n],
    }
}

fn start(settings: LearnerSettings) -> LearnerHandle {
    let (handle, _thread) = spawn(
        PpoConfig { minibatch_size: 4, update_epochs: 2, ..PpoConfig::default() },
        settings,
        Outputs::default(),
        false,
        tch::Device::Cpu,
        TrainerMetrics::unregistered(),
    )
    .unwrap();
    handle
}

/// The version a synchronous node is told to act with next: after an
/// accepted rollout the next one; after a stale one the current one when
/// nothing will close the round (acting on is the only way forward),
/// the next one when another node's rollout is due for it (acting with
/// the current one would make the node's next rollout stale too).
#[tokio::test]
async fn a_stale_node_is_told_which_version_to_act_with() {
    let h = start(LearnerSettings::default());
    let (_a, _b) = (h.subscriber("a"), h.subscriber("b"));
    let at = |node: &str, version: u64, first_id: u32, first_slot: u64| {
        let mut r = rollout(node, version, first_id);
        r.first_slot = first_slot;
        r
    };
    // Round 1 (slots 0..4): neither node is live yet, a's rollout closes it.
    assert_eq!(h.ingest_and_next(at("a", 1, 0, 0)).await, (Ok(Ingest::Accepted { samples: 8 }), 2));
    wait_version(&h, 2).await;
    // b acted with version 1 too: stale, nothing else due → act with 2 now.
    assert_eq!(
        h.ingest_and_next(at("b", 1, 2, 0)).await,
        (Ok(Ingest::Stale { version: 1, current: 2 }), 2)
    );
    // Round 2 (slots 4..8): b is stale again and first; a is due → wait for 3.
    assert_eq!(
        h.ingest_and_next(at("b", 1, 2, 4)).await,
        (Ok(Ingest::Stale { version: 1, current: 2 }), 3)
    );
    assert_eq!(h.status().version, 2, "the round waits for a");
    assert_eq!(h.ingest_and_next(at("a", 2, 0, 4)).await, (Ok(Ingest::Accepted { samples: 8 }), 3));
    wait_version(&h, 3).await;
    // Round 3 (slots 8..12): both in step with version 3.
    assert_eq!(h.ingest_and_next(at("b", 3, 2, 8)).await, (Ok(Ingest::Accepted { samples: 8 }), 4));
    assert_eq!(h.status().version, 3, "the round waits for a");
    assert_eq!(h.ingest_and_next(at("a", 3, 0, 8)).await, (Ok(Ingest::Accepted { samples: 8 }), 4));
    wait_version(&h, 4).await;
}

/// A node that said it began this round's rollout is waited for from its
/// first rollout (without that word, b's first rollout would be stale as
/// in the test above). One that began a later round's rollout — it
/// joined while the market held this round's end — is not, nor is a
/// node without a policy stream, nor a rollout of another version.
#[tokio::test]
async fn nodes_that_began_this_rounds_rollout_are_waited_for_from_their_first() {
    let h = start(LearnerSettings::default());
    let (_a, _b, _c) = (h.subscriber("a"), h.subscriber("b"), h.subscriber("c"));
    let begin = |node: &str, policy_version: u64, first_slot: u64, end_slot: u64| RolloutStart {
        node_name: node.into(),
        policy_version,
        first_slot,
        end_slot,
    };
    assert!(h.begin_rollout(begin("a", 1, 0, 4)).await);
    assert!(h.begin_rollout(begin("b", 1, 0, 4)).await);
    assert!(!h.begin_rollout(begin("nobody", 1, 0, 4)).await, "no policy stream: not awaited");
    assert!(!h.begin_rollout(begin("c", 2, 0, 4)).await, "version 2 is not published: not awaited");
    assert_eq!(
        h.ingest_and_next(rollout("a", 1, 0)).await,
        (Ok(Ingest::Accepted { samples: 8 }), 2)
    );
    assert!(
        !h.begin_rollout(begin("c", 1, 4, 8)).await,
        "the round ends at slot 4: c's rollout is for the next one"
    );
    assert_eq!(h.status().version, 1, "the round waits for b");
    assert_eq!(
        h.ingest_and_next(rollout("b", 1, 2)).await,
        (Ok(Ingest::Accepted { samples: 8 }), 2)
    );
    wait_version(&h, 2).await;
    assert_eq!(h.status().batches_stale, 0);
}

/// A stop during an update ends it at its next gradient step and undoes
/// it: the final checkpoint holds the version before it, later rollouts
/// are refused, and the interruption is counted. (Uninterrupted, this
/// update takes 64,000 gradient steps — tens of seconds — and would
/// publish version 2.)
#[tokio::test]
async fn a_stop_interrupts_an_update_in_progress_and_undoes_it() {
    let dir = std::env::temp_dir().join(format!("peergrid-learner-stop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let metrics = TrainerMetrics::unregistered();
    let (h, thread) = spawn(
        PpoConfig { minibatch_size: 1, update_epochs: 1000, ..PpoConfig::default() },
        LearnerSettings::default(),
        Outputs { checkpoint_dir: Some(dir.clone()), tensorboard_dir: None },
        false,
        tch::Device::Cpu,
        metrics.clone(),
    )
    .unwrap();
    let mut long = rollout("a", 1, 0);
    let (steps, p) = (32usize, 2usize);
    let n = steps * p;
    long.steps = steps;
    long.observations = (0..n * OBS_DIM).map(|i| (i % 7) as f32 * 0.1).collect();
    long.actions = vec![0.1; n * 3];
    long.log_probs = vec![-2.0; n];
    long.values = vec![0.0; n];
    long.rewards = vec![-0.2; n];
    long.dones = (0..n).map(|i| i >= n - p).collect();
    long.costs = vec![0.1; n];
    long.grid_import_kwh = vec![0.5; n];
    long.validate().unwrap();
    // Accepted, then the update starts on the learner thread.
    assert_eq!(h.ingest(long).await, Ok(Ingest::Accepted { samples: n }));
    h.stop().await.unwrap();
    thread.join().unwrap();
    assert_eq!(metrics.updates_interrupted.get(), 1, "the update was interrupted");
    assert_eq!((h.status().version, h.status().updates_done), (1, 0), "nothing was published");
    assert_eq!(
        checkpoint::latest_version(&dir).unwrap(),
        Some(1),
        "the final checkpoint holds version 1"
    );
    assert_eq!(h.ingest(rollout("b", 1, 2)).await, Err(Refusal::Stopped));
    let _ = std::fs::remove_dir_all(&dir);
}

async fn wait_version(h: &LearnerHandle, v: u64) {
    for _ in 0..500 {
        if h.status().version >= v {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("stuck at version {}", h.status().version);
}

#[tokio::test]
async fn sync_mode_waits_for_min_nodes_refuses_duplicates_and_drops_stale() {
    let h = start(LearnerSettings { min_nodes: 2, ..LearnerSettings::default() });
    assert_eq!(h.ingest(rollout("a", 1, 0)).await, Ok(Ingest::Accepted { samples: 8 }));
    assert_eq!(
        h.ingest(rollout("a", 1, 0)).await,
        Err(Refusal::Duplicate { node: "a".into(), version: 1 })
    );
    assert_eq!(h.status().version, 1, "one node of two: no update yet");
    assert_eq!(h.ingest(rollout("b", 1, 2)).await, Ok(Ingest::Accepted { samples: 8 }));
    wait_version(&h, 2).await;
    assert_eq!(h.ingest(rollout("a", 1, 0)).await, Ok(Ingest::Stale { version: 1, current: 2 }));
    assert_eq!(
        h.ingest(rollout("a", 3, 0)).await,
        Err(Refusal::UnknownVersion { version: 3, current: 2 })
    );
    let s = h.status();
    assert_eq!((s.updates_done, s.samples_total, s.batches_stale), (1, 16, 1));
    assert!(s.mean_episode_return.is_finite());
    h.stop().await.unwrap();
}

#[tokio::test]
async fn async_mode_updates_by_sample_count_and_bounds_the_lag() {
    let h = start(LearnerSettings {
        mode: Mode::Async,
        async_batch_samples: 16,
        max_policy_lag: 1,
        ..LearnerSettings::default()
    });
    h.ingest(rollout("a", 1, 0)).await.unwrap();
    assert_eq!(h.status().version, 1);
    h.ingest(rollout("a", 1, 0)).await.unwrap();
    wait_version(&h, 2).await;
    // One version old: within the lag bound, taken (with its own normaliser).
    assert_eq!(h.ingest(rollout("b", 1, 2)).await, Ok(Ingest::Accepted { samples: 8 }));
    h.ingest(rollout("b", 2, 2)).await.unwrap();
    wait_version(&h, 3).await;
    assert!(h.history()[1].policy_lag > 0.0, "the lagged rollout counts in the lag");
    // Two versions old: beyond the bound.
    assert_eq!(h.ingest(rollout("a", 1, 0)).await, Ok(Ingest::Stale { version: 1, current: 3 }));
    h.stop().await.unwrap();
}

/// Every version after a multiple of `snapshot_every` updates is kept, the
/// starting one too, however late they are taken; none without it.
#[tokio::test]
async fn every_due_version_is_kept_for_whoever_takes_it_later() {
    let h = start(LearnerSettings { snapshot_every: 2, ..LearnerSettings::default() });
    for v in 1..=5 {
        h.ingest(rollout("a", v, 0)).await.unwrap();
        wait_version(&h, v + 1).await;
    }
    let kept: Vec<u64> = h.take_snapshots().iter().map(|p| p.version).collect();
    assert_eq!(kept, [1, 3, 5], "after 0, 2 and 4 updates");
    let newest = h.published().borrow().clone();
    assert_eq!(newest.version, 6);
    assert!(h.take_snapshots().is_empty(), "taken once");
    let off = start(LearnerSettings::default());
    off.ingest(rollout("a", 1, 0)).await.unwrap();
    wait_version(&off, 2).await;
    assert!(off.take_snapshots().is_empty());
}
