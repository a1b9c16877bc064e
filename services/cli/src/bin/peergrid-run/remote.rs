//! `peergrid run --policy remote:URL`: an external policy service (a
//! Python learner served with `peergrid.serve_policy`, say) in place of
//! the PPO trainer.
//!
//! The training phase is the embedded cluster without a trainer: a market
//! that plays `--updates × --rollout-slots` slots of the split's training
//! days, and `--nodes` agent-nodes started with `policy: remote:URL`. Each
//! node asks the service once per slot for the actions of all its
//! prosumers and passes it the outcome of the slot before (rewards, costs,
//! grid import, day ends), so the service learns from the market exactly
//! as it would from a cluster of separate processes; while it computes,
//! the node holds the slot. A slot the service misses (timeout, error,
//! wrong answer) is played rule-based by that node and counted.
//!
//! The evaluation then plays the same service on the `--split` days
//! (`crate::remote_eval`, as `peergrid eval --policy remote:URL`): one call
//! per slot for every prosumer, no feedback; a slot it fails fails the run
//! before any report is written.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use peergrid_agent_node::{AgentConfig, PolicyChoice};
use peergrid_cluster::Cluster;
use peergrid_core::data::split::WeekSplit;
use peergrid_core::data::Dataset;
use peergrid_core::prosumer::CommunityConfig;
use peergrid_core::simulation::SimConfig;
use peergrid_market_node::MarketSettings;

use peergrid_cli::remote_eval::RemotePolicyArgs;
use peergrid_runtime::BadInput;

use crate::train::{progress_bar, TrainArgs};

/// What the training phase plays, besides its flags.
pub(crate) struct PlayRequest<'a> {
    /// Checked with [`TrainArgs::validate`].
    pub args: &'a TrainArgs,
    /// The service's URL (after `remote:`) and how to call it.
    pub url: &'a str,
    pub remote: &'a RemotePolicyArgs,
    pub ds: Arc<Dataset>,
    pub community: &'a CommunityConfig,
    pub sim: &'a SimConfig,
    /// The market plays only this split's training days.
    pub split: WeekSplit,
}

/// What the training phase did.
#[derive(Debug)]
pub(crate) struct Played {
    /// Slots the market cleared.
    pub slots: u64,
    /// Node-slots the service decided, and node-slots played rule-based
    /// because it did not answer in time (or answered wrongly).
    pub calls: u64,
    pub fallbacks: u64,
    pub seconds: f64,
    pub interrupted: bool,
}

/// Plays `--updates × --rollout-slots` training slots with the service
/// deciding every prosumer's action.
pub(crate) fn play(request: PlayRequest<'_>) -> Result<Played> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(play_async(request))
}

async fn play_async(request: PlayRequest<'_>) -> Result<Played> {
    let PlayRequest { args, url, remote, ds, community, sim, split } = request;
    let started = Instant::now();
    let slots = args.updates * args.rollout_slots as u64;
    let market = MarketSettings {
        // Every node holds each slot while the service computes; a long
        // deadline lets a busy machine miss no report either.
        deadline_ms: 60_000,
        train_weeks_only: Some(split),
        max_slots: Some(slots),
        ..MarketSettings::default()
    };
    let agent = AgentConfig {
        community: community.clone(),
        actor_threads: 1,
        policy: PolicyChoice::Remote(url.to_owned()),
        remote_policy_timeout_ms: remote.remote_policy_timeout_ms,
        remote_policy_tls_ca: remote.remote_policy_tls_ca.clone(),
        ..AgentConfig::default()
    };
    let n = community.n_prosumers as u32;
    let shares: Vec<u32> =
        (0..args.nodes).map(|i| n / args.nodes + u32::from(i < n % args.nodes)).collect();
    let mut builder = Cluster::builder(ds)
        .sim(sim.clone())
        .nodes(&shares)
        .transport(args.transport.into())
        .market(market)
        .agent(agent);
    // A service that checks the agent token gets the one it was given.
    let token_env = peergrid_runtime::Tokens::AGENT_ENV;
    if let Some(token) = peergrid_runtime::load_token(token_env)
        .map_err(|e| BadInput::new(format!("{token_env}: {e}")))?
    {
        builder = builder.agent_token(token);
    }
    let mut cluster = builder.start().await?;
    let followed = follow(&mut cluster, args, slots).await;
    let stopped = cluster.shutdown().await;
    let (played, interrupted) = followed?;
    let report = stopped?;
    Ok(Played {
        slots: played,
        calls: report.agents.iter().map(|a| a.remote_policy_calls).sum(),
        fallbacks: report.agents.iter().map(|a| a.remote_policy_fallbacks).sum(),
        seconds: started.elapsed().as_secs_f64(),
        interrupted,
    })
}

/// Shows the slots cleared until the market reached `slots` (then
/// `(slots, false)`) or Ctrl-C (`(cleared, true)`); fails when an
/// agent-node ends.
async fn follow(cluster: &mut Cluster, args: &TrainArgs, slots: u64) -> Result<(u64, bool)> {
    let bar = progress_bar(args, "remote policy", slots, "slots");
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut client = cluster.market_client().await?;
    loop {
        let s = client
            .status(peergrid_proto::pb::market::v1::StatusRequest {})
            .await
            .context("market status")?
            .into_inner();
        bar.set_position(s.slot.min(slots));
        let cost = s.kpis.as_ref().map_or(0.0, |k| k.community_cost);
        bar.set_message(format!("community cost {cost:.2} · {} holds", s.holds));
        if cluster.market().is_finished() && s.slot >= slots {
            bar.finish();
            return Ok((slots, false));
        }
        if let Some((_, why)) = cluster.ended_agent().await {
            bar.abandon();
            return Err(why.context("an agent-node stopped before the training days were played"));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = &mut ctrl_c => {
                bar.println("interrupted: stopping the training days and evaluating the service as it is");
                bar.finish();
                return Ok((s.slot.min(slots), true));
            }
        }
    }
}
