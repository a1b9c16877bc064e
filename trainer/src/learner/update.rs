//! The learner's update: the PPO step over a round's rollouts, its guard
//! against non-finite results, publishing the new version, the learning
//! curve, TensorBoard scalars and checkpoints.

use super::*;

impl Learner {
    /// Episode statistics of the batch: (mean return, community cost, grid import) per episode.
    fn episodes(&mut self, rollouts: &[Rollout]) -> (f64, f64, f64) {
        let (mut n, mut ret, mut cost, mut import) = (0usize, 0.0, 0.0, 0.0);
        let mut prosumers = BTreeSet::new();
        for r in rollouts {
            let p = r.n_prosumers();
            for (i, id) in r.prosumer_ids.iter().enumerate() {
                prosumers.insert(*id);
                let acc = self.episodes.entry(*id).or_default();
                for t in 0..r.steps {
                    let k = t * p + i;
                    acc.ret += r.rewards[k] as f64;
                    acc.cost += r.costs[k] as f64;
                    acc.import += r.grid_import_kwh[k] as f64;
                    if r.dones[k] {
                        n += 1;
                        ret += acc.ret;
                        cost += acc.cost;
                        import += acc.import;
                        *acc = EpisodeAcc::default();
                    }
                }
            }
        }
        if n == 0 {
            return (f64::NAN, f64::NAN, f64::NAN);
        }
        // Community figures: the mean prosumer-episode times the prosumers.
        let k = prosumers.len() as f64;
        (ret / n as f64, cost / n as f64 * k, import / n as f64 * k)
    }

    pub(super) fn update(&mut self) {
        let mut rollouts = std::mem::take(&mut self.pending);
        rollouts.sort_by_key(|r| (r.prosumer_ids.first().copied(), r.policy_version));
        let samples = self.pending_samples;
        let lag = if samples > 0 { self.lag_sum / samples as f64 } else { 0.0 };
        self.pending_nodes.clear();
        self.pending_end = None;
        self.pending_samples = 0;
        self.lag_sum = 0.0;
        self.first_pending_at = None;
        let next = self.version + 1;
        let span = info_span!("update", version = next, samples);
        let _enter = span.enter();
        let started = Instant::now();
        let Some((stats, weights)) = self.guarded_update(&rollouts, next) else { return };
        let learn_seconds = started.elapsed().as_secs_f64();
        let (mean_return, community_cost, grid_import) = self.episodes(&rollouts);
        self.version = next;
        self.updates_done += 1;
        self.normalisers.insert(next, weights.normaliser.clone());
        let keep_from = next.saturating_sub(self.settings.max_policy_lag);
        self.normalisers.retain(|v, _| *v >= keep_from);
        match to_safetensors(&weights) {
            Ok(blob) => {
                let p = Published { version: next, weights: Arc::new(blob), republished: 0 };
                super::snapshot(
                    &self.snapshots,
                    self.settings.snapshot_every,
                    self.updates_done,
                    &p,
                );
                self.publish.send_replace(p);
            }
            Err(e) => warn!("cannot encode version {next}: {e}"),
        }
        let samples_per_s =
            samples as f64 * self.ppo.config.update_epochs as f64 / learn_seconds.max(1e-9);
        let record = UpdateRecord {
            version: next,
            samples,
            mean_episode_return: mean_return,
            community_cost,
            grid_import_kwh: grid_import,
            learn_seconds,
            policy_lag: lag,
            stats,
        };
        self.log(&record, samples_per_s);
        {
            let mut s = self.status.lock().expect("status lock");
            s.version = next;
            s.updates_done = self.updates_done;
            s.samples_per_s = samples_per_s;
            s.policy_lag = lag;
            s.samples_total += samples as u64;
            if mean_return.is_finite() {
                s.mean_episode_return = mean_return;
            }
        }
        self.history.lock().expect("history lock").push(record);
        if self.settings.checkpoint_every > 0
            && self.updates_done % self.settings.checkpoint_every == 0
        {
            if let Err(e) = self.checkpoint() {
                warn!("checkpoint failed: {e}");
            }
        }
    }

    /// Runs the PPO update and absorbs the batch's observations into the
    /// running statistics, then checks the outcome: if any parameter, Adam
    /// moment or normaliser statistic is not finite, the update is undone
    /// (parameters, optimiser and statistics as before), counted and logged,
    /// and `None` is returned — the published version stays, the learner
    /// goes on. Otherwise the weights of version `next`.
    fn guarded_update(
        &mut self,
        rollouts: &[Rollout],
        next: u64,
    ) -> Option<(UpdateStats, PolicyWeights)> {
        #[cfg(test)]
        if rollouts.iter().any(|r| r.node_name == CRASH_FOR_TEST) {
            panic!("learner crash requested by a test");
        }
        let before = self.ppo.snapshot();
        let stats_before = self.obs_stats.clone();
        let normalisers = &self.normalisers;
        let stats = match self.ppo.update_unless(
            rollouts,
            |v| &normalisers[&v],
            self.updates_done,
            &self.stopping,
        ) {
            Ok(stats) => stats,
            Err(Interrupted { gradient_steps }) => {
                if let Err(e) = self.ppo.restore(&before) {
                    panic!("cannot restore the learner after an interrupted update: {e}");
                }
                self.metrics.updates_interrupted.inc();
                let nodes: BTreeSet<&str> = rollouts.iter().map(|r| r.node_name.as_str()).collect();
                warn!(
                    version = self.version,
                    would_be = next,
                    gradient_steps,
                    ?nodes,
                    "shutting down: update interrupted and undone; version {} stays (the nodes push their rollouts again to the resumed trainer)",
                    self.version
                );
                return None;
            }
        };
        for r in rollouts {
            self.obs_stats.update(&r.observations);
        }
        let problem = if !self.ppo.is_finite() {
            Some("parameters or optimiser state")
        } else if !self.obs_stats.is_finite() {
            Some("observation normaliser statistics")
        } else {
            None
        };
        let net = match problem {
            None => self.ppo.actor_critic().ok(),
            Some(_) => None,
        };
        if let Some(net) = net {
            let normaliser = self.obs_stats.normaliser(self.ppo.config.obs_clip);
            return Some((stats, PolicyWeights { net, normaliser, version: next }));
        }
        self.obs_stats = stats_before;
        if let Err(e) = self.ppo.restore(&before) {
            // Cannot happen (the snapshot has this network's shapes); if it
            // did, the learner must not publish from a half-restored state.
            panic!("cannot restore the learner after a discarded update: {e}");
        }
        self.metrics.updates_discarded.inc();
        self.status.lock().expect("status lock").updates_discarded += 1;
        let nodes: BTreeSet<&str> = rollouts.iter().map(|r| r.node_name.as_str()).collect();
        warn!(
            version = self.version,
            would_be = next,
            ?nodes,
            "update discarded: non-finite {}; version {} stays published",
            problem.unwrap_or("parameters"),
            self.version
        );
        // Synchronous nodes wait for a version after this one: announce
        // this one again, so they push their rollouts for a fresh round
        // (a poisoner's aside) instead of waiting out their timeouts.
        let mut announced = false;
        self.publish.send_if_modified(|p| {
            announced = p.republished < MAX_REPUBLISH;
            if announced {
                p.republished += 1;
            }
            announced
        });
        if announced {
            // The round's nodes are in step again: waited for in the next round.
            for r in rollouts {
                if let Some(t) = self.nodes.get_mut(&r.node_name) {
                    t.last_end = Some(r.first_slot);
                }
            }
        } else {
            warn!(
                version = self.version,
                "{MAX_REPUBLISH} updates in a row discarded: waiting for new experience"
            );
        }
        None
    }

    fn log(&mut self, r: &UpdateRecord, samples_per_s: f64) {
        let s = &r.stats;
        info!(
            version = r.version,
            samples = r.samples,
            mean_episode_return = r.mean_episode_return,
            policy_loss = s.policy_loss,
            value_loss = s.value_loss,
            approx_kl = s.approx_kl,
            learn_ms = (r.learn_seconds * 1e3) as u64,
            "policy updated"
        );
        let m = &self.metrics;
        m.version.set(r.version as i64);
        m.updates.inc();
        m.update_seconds.observe(r.learn_seconds);
        m.samples_per_s.set(samples_per_s);
        m.policy_lag.set(r.policy_lag);
        if r.mean_episode_return.is_finite() {
            m.mean_episode_return.set(r.mean_episode_return);
        }
        let Some(tb) = self.tb.as_mut() else { return };
        let step = self.updates_done as i64;
        let mut scalars = vec![
            ("losses/policy_loss", s.policy_loss),
            ("losses/value_loss", s.value_loss),
            ("losses/entropy", s.entropy),
            ("losses/approx_kl", s.approx_kl),
            ("losses/clipfrac", s.clipfrac),
            ("losses/explained_variance", s.explained_variance),
            ("charts/learning_rate", s.learning_rate),
            ("perf/samples_per_s", samples_per_s),
            ("perf/policy_lag", r.policy_lag),
        ];
        if r.mean_episode_return.is_finite() {
            scalars.push(("charts/episodic_return", r.mean_episode_return));
            scalars.push(("charts/community_cost", r.community_cost));
            scalars.push(("charts/grid_import_kwh", r.grid_import_kwh));
        }
        let result = scalars
            .into_iter()
            .try_for_each(|(tag, v)| tb.add_scalar(tag, v, step))
            .and_then(|()| tb.flush());
        if let Err(e) = result {
            warn!("TensorBoard write failed: {e}");
        }
    }

    fn checkpoint(&self) -> Result<(), TrainerError> {
        let Some(dir) = &self.outputs.checkpoint_dir else { return Ok(()) };
        let c = Checkpoint {
            policy: PolicyWeights {
                net: self.ppo.actor_critic()?,
                normaliser: self.normalisers[&self.version].clone(),
                version: self.version,
            },
            optimiser: self.ppo.optimiser_state(),
            obs_stats: self.obs_stats.clone(),
            updates_done: self.updates_done,
            ppo: self.ppo.config.clone(),
        };
        let path = checkpoint::save(dir, &c)?;
        info!(version = self.version, path = %path.display(), "checkpoint written");
        Ok(())
    }

    pub(super) fn finish(&mut self) -> Result<(), TrainerError> {
        if let Some(tb) = self.tb.as_mut() {
            tb.flush()?;
        }
        self.checkpoint()
    }
}
