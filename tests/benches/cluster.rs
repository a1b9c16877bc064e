//! Distributed throughput: prosumer-steps per second for 1 and 4 agent-nodes
//! with 100, 1,000 and 10,000 prosumers, market and nodes talking real gRPC
//! over loopback (rule-based policy, fast mode). Prints a Markdown table.
//!
//! Run: `cargo bench -p peergrid-e2e --bench cluster`

use std::sync::Arc;
use std::time::Instant;

use peergrid_core::data::citylearn::bundled_citylearn;
use peergrid_e2e::cluster::ClusterBuilder;

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let ds = Arc::new(bundled_citylearn()?);
    println!("| nodes | prosumers | slots | wall s | slots/s | prosumer-steps/s |");
    println!("| ----: | --------: | ----: | -----: | ------: | ---------------: |");
    for &(prosumers, slots) in &[(100u32, 400u64), (1_000, 200), (10_000, 60)] {
        for &nodes in &[1u32, 4] {
            let per_node = vec![prosumers / nodes; nodes as usize];
            let builder = ClusterBuilder { auto_start: false, ..ClusterBuilder::default() }
                .nodes(&per_node)
                .max_slots(slots);
            let (secs, cleared) = rt.block_on(async {
                let cluster = builder.start(ds.clone()).await?;
                let mut ctl = cluster.control_client().await?;
                let started = Instant::now();
                ctl.start(peergrid_proto::pb::control::v1::Empty {}).await?;
                cluster.market().finished().await;
                let secs = started.elapsed().as_secs_f64();
                let (status, _) = cluster.stop().await?;
                anyhow::Ok((secs, status.kpis.map_or(0, |k| k.slots)))
            })?;
            println!(
                "| {nodes} | {prosumers} | {cleared} | {secs:.2} | {:.0} | {:.0} |",
                cleared as f64 / secs,
                (cleared * prosumers as u64) as f64 / secs
            );
        }
    }
    Ok(())
}
