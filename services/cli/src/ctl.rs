//! `peergrid ctl`: operate a running market over gRPC.
//!
//! `status`, `pause`, `resume`, `step N`, `mode`, `load FILE`, `inject …`,
//! and `watch` (live slot summaries). The operator token comes from
//! `PEERGRID_OPERATOR_TOKEN` or `PEERGRID_OPERATOR_TOKEN_FILE`, read and
//! checked like every peergrid token (`peergrid_runtime::load_token`); with
//! none set, requests go without credentials (for markets started with
//! `--insecure-no-auth`). An `https://` market needs `--tls-ca FILE`
//! (`PEERGRID_TLS_CA`), the PEM CA its certificate chains to; dialling is
//! `peergrid_runtime::dial`, as in the nodes. The only file of the CLI that
//! names generated types.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use peergrid_runtime::{load_token, ClientAuth, RuntimeError, SettingNames, Target, Tokens};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Status;

use peergrid_core::kpi::Kpis;
use peergrid_proto::pb::control::v1 as ctl;
use peergrid_proto::pb::market::v1 as market;

use peergrid_cli::output::{csv_line, csv_opt, Format};
use peergrid_eval::report::table::kpi_table;
use peergrid_runtime::BadInput;

#[derive(Args, Debug)]
pub(crate) struct CtlArgs {
    /// Market-node gRPC address (`https://…` for a TLS market, with --tls-ca).
    #[arg(long, env = "PEERGRID_MARKET", default_value = "http://127.0.0.1:50051")]
    pub market: String,
    /// PEM CA certificate to trust for an https:// market.
    #[arg(long, env = "PEERGRID_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Verify the market's certificate for this name instead of the address's host.
    #[arg(long, env = "PEERGRID_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
    /// Output: text, json (`status`: one document; `watch`: one object per
    /// line, as jsonl), jsonl, or csv (`watch`: a row per slot).
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Short for `--format json`.
    #[arg(long, global = true, conflicts_with = "format")]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Subcommand, Debug)]
pub(crate) enum CtlCommand {
    /// Slot, membership, balance errors and KPIs so far.
    Status,
    /// Start clearing (if the market waits for an operator).
    Start,
    /// Stop clearing after the current slot.
    Pause,
    /// Continue clearing.
    Resume,
    /// Clear exactly N slots, then pause.
    Step { count: u32 },
    /// Switch between fast and real-time mode.
    Mode {
        #[arg(value_enum)]
        mode: ModeArg,
        /// Real-time: one slot every this many ms.
        #[arg(long, default_value_t = 1000)]
        slot_period_ms: u64,
        /// Fast: how long to wait for late nodes, ms.
        #[arg(long, default_value_t = 200)]
        deadline_ms: u64,
    },
    /// Load a scenario file (JSON list of timed events).
    Load { file: PathBuf },
    /// Apply one event now.
    Inject {
        #[command(subcommand)]
        event: InjectEvent,
    },
    /// Stream slot summaries as they clear (Ctrl-C to stop).
    Watch {
        /// Stop after this many events (0 = forever).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum ModeArg {
    Fast,
    RealTime,
}

#[derive(Subcommand, Debug)]
pub(crate) enum InjectEvent {
    /// Scale PV and/or load of prosumers FIRST..=LAST for N slots.
    Scale {
        #[arg(long)]
        first: u32,
        #[arg(long)]
        last: u32,
        #[arg(long, default_value_t = 1.0)]
        pv: f64,
        #[arg(long, default_value_t = 1.0)]
        load: f64,
        #[arg(long)]
        slots: u32,
    },
    /// Override the retail and feed-in price for N slots.
    Tariff {
        #[arg(long)]
        retail: f64,
        #[arg(long)]
        feed_in: f64,
        #[arg(long)]
        slots: u32,
    },
    /// Change the feeder limits (0 = unlimited).
    Feeder {
        #[arg(long, default_value_t = 0.0)]
        import_kw: f64,
        #[arg(long, default_value_t = 0.0)]
        export_kw: f64,
    },
    /// Take prosumers FIRST..=LAST offline for N slots.
    Offline {
        #[arg(long)]
        first: u32,
        #[arg(long)]
        last: u32,
        #[arg(long)]
        slots: u32,
    },
}

type Control =
    ctl::control_service_client::ControlServiceClient<InterceptedService<Channel, ClientAuth>>;
type MarketClient =
    market::market_service_client::MarketServiceClient<InterceptedService<Channel, ClientAuth>>;

/// How `ctl` names its market settings in errors.
const MARKET_SETTINGS: SettingNames =
    SettingNames { url: "--market", ca: "--tls-ca", domain: "--tls-domain" };

/// A bad setting is the user's to fix (exit 2); an unreachable market is not.
fn setting_error(e: RuntimeError) -> anyhow::Error {
    match e {
        RuntimeError::Connect { .. } => anyhow::Error::new(e),
        other => BadInput::new(other.to_string()).into(),
    }
}

/// The operator token, if one is configured.
fn auth() -> Result<ClientAuth> {
    let token = load_token(Tokens::OPERATOR_ENV).map_err(setting_error)?;
    Ok(ClientAuth::new(token.as_ref()))
}

/// The channel to the market; TLS (trusting `--tls-ca`) for `https://`.
/// This build has no system root store, so https without a CA is an input error.
async fn channel(args: &CtlArgs) -> Result<Channel> {
    let addr = &args.market;
    if peergrid_runtime::inproc::local_name(addr).is_some() {
        // A local:// market lives inside another `peergrid run` process.
        return Err(BadInput::new(format!(
            "--market {addr}: local:// markets are reachable only inside the process that runs them; use http(s)://HOST:PORT"
        ))
        .into());
    }
    let target = Target {
        url: addr,
        ca: args.tls_ca.as_deref(),
        domain: args.tls_domain.as_deref(),
        names: MARKET_SETTINGS,
    };
    match target.connect(|e| e.connect_timeout(Duration::from_secs(5))).await {
        Ok(channel) => Ok(channel),
        Err(e @ RuntimeError::Connect { .. }) => {
            Err(anyhow::Error::new(e).context(format!("connecting to the market at {addr}")))
        }
        Err(e) => Err(setting_error(e)),
    }
}

pub(crate) fn run(args: CtlArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(args))
}

async fn run_async(args: CtlArgs) -> Result<()> {
    let format = if args.json { Format::Json } else { args.format };
    // Before dialling: a wrong flag is the user's to fix, whatever the market does.
    if format == Format::Csv && !matches!(args.command, CtlCommand::Watch { .. }) {
        return Err(BadInput::new(
            "--format csv: only `ctl watch` prints rows (use text, json or jsonl)",
        )
        .into());
    }
    let auth = auth()?;
    let ch = channel(&args).await?;
    let mut control: Control = ctl::control_service_client::ControlServiceClient::with_interceptor(
        ch.clone(),
        auth.clone(),
    );
    let reply = match args.command {
        CtlCommand::Status => return status(&mut control, format).await,
        CtlCommand::Watch { count } => {
            let client: MarketClient =
                market::market_service_client::MarketServiceClient::with_interceptor(ch, auth);
            return watch(client, count, format).await;
        }
        CtlCommand::Start => control.start(ctl::Empty {}).await,
        CtlCommand::Pause => control.pause(ctl::Empty {}).await,
        CtlCommand::Resume => control.resume(ctl::Empty {}).await,
        CtlCommand::Step { count } => control.step(ctl::StepRequest { count }).await,
        CtlCommand::Mode { mode, slot_period_ms, deadline_ms } => {
            let mode = match mode {
                ModeArg::Fast => ctl::Mode::Fast,
                ModeArg::RealTime => ctl::Mode::RealTime,
            };
            control
                .set_mode(ctl::SetModeRequest { mode: mode.into(), slot_period_ms, deadline_ms })
                .await
        }
        CtlCommand::Load { file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| BadInput::new(format!("{}: {e}", file.display())))?;
            control.load_scenario(ctl::LoadScenarioRequest { scenario_json: text }).await
        }
        CtlCommand::Inject { event } => {
            control.inject(ctl::InjectRequest { event: Some(inject_event(event)) }).await
        }
    };
    let reply = reply.map_err(status_error)?.into_inner();
    if format != Format::Text {
        println!("{}", serde_json::json!({"message": reply.message, "slot": reply.slot}));
    } else {
        println!("{} (slot {})", reply.message, reply.slot);
    }
    Ok(())
}

fn inject_event(event: InjectEvent) -> ctl::inject_request::Event {
    use ctl::inject_request::Event;
    match event {
        InjectEvent::Scale { first, last, pv, load, slots } => Event::Scale(ctl::ScaleGroup {
            first_prosumer_id: first,
            last_prosumer_id: last,
            pv_scale: pv,
            load_scale: load,
            slots,
        }),
        InjectEvent::Tariff { retail, feed_in, slots } => Event::Tariff(ctl::TariffOverride {
            retail_per_kwh: retail,
            feed_in_per_kwh: feed_in,
            slots,
        }),
        InjectEvent::Feeder { import_kw, export_kw } => Event::Feeder(ctl::FeederLimit {
            import_limit_kw: import_kw,
            export_limit_kw: export_kw,
        }),
        InjectEvent::Offline { first, last, slots } => Event::Offline(ctl::TakeOffline {
            first_prosumer_id: first,
            last_prosumer_id: last,
            slots,
        }),
    }
}

/// A gRPC error as the user should read it; argument errors exit with 2.
fn status_error(s: Status) -> anyhow::Error {
    let text = format!("market answered {:?}: {}", s.code(), s.message());
    match s.code() {
        tonic::Code::InvalidArgument
        | tonic::Code::FailedPrecondition
        | tonic::Code::OutOfRange => BadInput::new(text).into(),
        _ => anyhow::anyhow!(text),
    }
}

/// `ctl status --json`: every field of the market's status, membership
/// and holds included (`prosumers` and `nodes` are the connected ones).
fn status_json(s: &market::StatusResponse, kpis: &Kpis) -> serde_json::Value {
    serde_json::json!({
        "slot": s.slot,
        "prosumers": s.prosumers,
        "nodes": s.nodes,
        "mode": s.mode,
        "paused": s.paused,
        "slot_period_ms": s.slot_period_ms,
        "energy_balance_error_kwh": s.energy_balance_error_kwh,
        "money_balance_error": s.money_balance_error,
        "missing_reports": s.missing_reports,
        "absent_reports": s.absent_reports,
        "absent_prosumers": s.absent_prosumers,
        "holds": s.holds,
        "holds_expired": s.holds_expired,
        "batches_refused": s.batches_refused,
        "leases_expired": s.leases_expired,
        "kpis": kpis,
    })
}

async fn status(control: &mut Control, format: Format) -> Result<()> {
    let s = control.get_status(ctl::Empty {}).await.map_err(status_error)?.into_inner();
    let kpis: Kpis = s.kpis.as_ref().map(Kpis::from).unwrap_or_default();
    if format == Format::Jsonl {
        println!("{}", status_json(&s, &kpis));
    } else if format != Format::Text {
        println!("{}", serde_json::to_string_pretty(&status_json(&s, &kpis))?);
    } else {
        println!(
            "slot {} | {} prosumers on {} nodes | mode {}{} | missing reports {} | balance errors: energy {:.3e} kWh, money {:.3e}",
            s.slot,
            s.prosumers,
            s.nodes,
            s.mode,
            if s.paused { " (paused)" } else { "" },
            s.missing_reports,
            s.energy_balance_error_kwh,
            s.money_balance_error
        );
        print!("\n{}", kpi_table(&[("market so far", &kpis)]));
    }
    Ok(())
}

/// The columns of `watch --format csv`, as the JSON lines name them.
const WATCH_COLUMNS: [&str; 11] = [
    "slot",
    "data_slot",
    "clearing_price",
    "matched_kwh",
    "grid_import_kwh",
    "grid_export_kwh",
    "load_kwh",
    "pv_kwh",
    "reported",
    "missing",
    "clearing_latency_ms",
];

async fn watch(mut client: MarketClient, count: u64, format: Format) -> Result<()> {
    let mut stream =
        client.watch(market::WatchRequest {}).await.map_err(status_error)?.into_inner();
    let json = matches!(format, Format::Json | Format::Jsonl);
    if format == Format::Csv {
        println!("{}", csv_line(&WATCH_COLUMNS));
    }
    let mut seen = 0u64;
    while let Some(event) = stream.message().await.map_err(status_error)? {
        match event.event {
            Some(market::market_event::Event::Slot(s)) => {
                let price = s.clearing_price_micros.map(|p| p as f64 / 1e6);
                if format == Format::Csv {
                    let row = [
                        s.slot.to_string(),
                        s.data_slot.to_string(),
                        csv_opt(price),
                        s.matched_kwh.to_string(),
                        s.grid_import_kwh.to_string(),
                        s.grid_export_kwh.to_string(),
                        s.load_kwh.to_string(),
                        s.pv_kwh.to_string(),
                        s.reported.to_string(),
                        s.missing.to_string(),
                        s.clearing_latency_ms.to_string(),
                    ];
                    println!("{}", csv_line(&row));
                } else if json {
                    let v = serde_json::json!({
                        "slot": s.slot, "data_slot": s.data_slot, "clearing_price": price, "matched_kwh": s.matched_kwh,
                        "grid_import_kwh": s.grid_import_kwh, "grid_export_kwh": s.grid_export_kwh, "load_kwh": s.load_kwh,
                        "pv_kwh": s.pv_kwh, "reported": s.reported, "missing": s.missing, "clearing_latency_ms": s.clearing_latency_ms,
                    });
                    println!("{v}");
                } else {
                    println!(
                        "slot {:>6} | price {:>8} | P2P {:>9.2} kWh | import {:>9.2} | export {:>9.2} | reported {} missing {}",
                        s.slot,
                        price.map_or("-".into(), |p| format!("{p:.4}")),
                        s.matched_kwh,
                        s.grid_import_kwh,
                        s.grid_export_kwh,
                        s.reported,
                        s.missing
                    );
                }
            }
            Some(market::market_event::Event::Notice(n)) => {
                if json {
                    println!("{}", serde_json::json!({ "notice": n }));
                } else if format == Format::Csv {
                    // Not a row: to stderr, so the CSV stays a table.
                    eprintln!("notice: {n}");
                } else {
                    println!("notice: {n}");
                }
            }
            None => {}
        }
        seen += 1;
        if count > 0 && seen >= count {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_json_carries_membership_and_hold_counters() {
        let s = market::StatusResponse {
            slot: 9,
            prosumers: 80,
            nodes: 4,
            missing_reports: 3,
            absent_reports: 40,
            absent_prosumers: 20,
            holds: 5,
            holds_expired: 1,
            batches_refused: 2,
            leases_expired: 1,
            ..market::StatusResponse::default()
        };
        let v = status_json(&s, &Kpis::default());
        let fields = [
            ("slot", 9),
            ("prosumers", 80),
            ("nodes", 4),
            ("missing_reports", 3),
            ("absent_reports", 40),
            ("absent_prosumers", 20),
            ("holds", 5),
            ("holds_expired", 1),
            ("batches_refused", 2),
            ("leases_expired", 1),
        ];
        for (k, want) in fields {
            assert_eq!(v[k].as_u64(), Some(want), "{k} in {v}");
        }
        assert!(v["kpis"].is_object(), "{v}");
    }
}
