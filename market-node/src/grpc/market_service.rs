//! `MarketService`: registration, the session stream, status and watch,
//! and the wire conversions of what they carry.

use super::*;

pub(super) struct Market(pub(super) Edge);

#[tonic::async_trait]
impl MarketService for Market {
    type SessionStream = BoxStream<market::MarketMessage>;
    type WatchStream = BoxStream<market::MarketEvent>;

    async fn register(
        &self,
        request: Request<market::RegisterRequest>,
    ) -> Result<Response<market::RegisterResponse>, Status> {
        let edge = &self.0;
        edge.auth(authorize(request.metadata(), Role::Agent, &edge.tokens))?;
        edge.refuse_while_stopping()?;
        let r = request.into_inner();
        let request = OwnedRegister {
            name: r.node_name,
            prosumer_count: r.prosumer_count,
            resume_session_id: r.resume_session_id,
            resume_first_id: r.resume_first_prosumer_id,
            resume_secret: r.resume_secret,
        };
        let reg = edge.clock.register(request).await.map_err(|e| edge.fail(e))?;
        Ok(Response::new(market::RegisterResponse {
            resume_secret: reg.secret,
            lease_grace_ms: reg.lease_grace_ms,
            session_id: reg.session_id,
            first_prosumer_id: reg.first_prosumer_id,
            prosumer_count: reg.prosumer_count,
            dataset: reg.dataset,
            slot_minutes: reg.slot_minutes,
            reward_weights_json: reward_weights_to_json(&reg.reward).map_err(|e| edge.fail(e))?,
            next_slot: reg.next_slot,
        }))
    }

    async fn session(
        &self,
        request: Request<Streaming<market::NodeMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let edge = self.0.clone();
        edge.auth(authorize(request.metadata(), Role::Agent, &edge.tokens))?;
        let mut inbound = request.into_inner();
        let first =
            tokio::time::timeout(edge.node_timeout, inbound.message()).await.map_err(|_| {
                edge.fail(WireError::failed_precondition(
                    "join: no Join message within the node timeout",
                ))
            })??;
        let Some(market::NodeMessage { msg: Some(market::node_message::Msg::Join(join)) }) = first
        else {
            return Err(edge.fail(WireError::failed_precondition(
                "join: the first message of a session must be Join",
            )));
        };
        let prosumers = prosumers_from_wire(&join.prosumers).map_err(|e| edge.fail(e))?;
        edge.refuse_while_stopping()?;
        let (tx, rx) = mpsc::channel(NODE_QUEUE);
        let key = edge
            .clock
            .join(join.session_id, join.resume_secret, prosumers, tx.clone())
            .await
            .map_err(|e| edge.fail(e))?;
        tokio::spawn(async move {
            let mut shutdown = edge.shutdown.clone();
            loop {
                let message = tokio::select! {
                    _ = shutdown.recv() => {
                        if !edge.clock.is_finished() {
                            // This process stops, the run does not (e.g. a
                            // restart): tell the node to reconnect and resume,
                            // rather than end its stream as a finished run does.
                            let reason = "market-node shutting down; reconnect and resume".to_owned();
                            let _ = tx.send(NodeEvent::Rejected(WireError::Unavailable { reason })).await;
                        }
                        break;
                    }
                    m = inbound.message() => m,
                };
                let refused = match message {
                    Ok(Some(market::NodeMessage {
                        msg: Some(market::node_message::Msg::Batch(batch)),
                    })) => {
                        let slot = batch.slot;
                        accept_batch(&edge, key, batch).await.err().map(|e| (slot, e))
                    }
                    Ok(Some(market::NodeMessage {
                        msg: Some(market::node_message::Msg::Hold(hold)),
                    })) => accept_hold(&edge, key, &hold).await.err().map(|e| (hold.slot, e)),
                    Ok(Some(_)) => Some((
                        0,
                        WireError::failed_precondition(
                            "join: only OrderBatch and Hold messages may follow Join",
                        ),
                    )),
                    Ok(None) => break,
                    // An over-limit or undecodable message: end the stream
                    // with the reason, never with a bare OK.
                    Err(status) => {
                        tracing::debug!(%status, "session stream ended");
                        let error = WireError::from_status(
                            &peergrid_runtime::serve::normalise_status(status),
                        );
                        let _ = tx.send(NodeEvent::Rejected(error)).await;
                        break;
                    }
                };
                if let Some((slot, error)) = refused {
                    let reason = refusal_reason(&edge, slot, &error);
                    tracing::info!(slot, reason, error = %error, "batch refused; the session stays open");
                    edge.metrics.refuse(reason);
                    edge.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    edge.metrics.reject(error.code());
                    // The refusal rides the node's queue behind what the clock
                    // already sent; a full queue waits (this task only serves this node).
                    if tx.send(NodeEvent::Refused(Refused { slot, error, reason })).await.is_err() {
                        break;
                    }
                }
            }
            edge.clock.disconnect(key).await;
        });
        let out = ReceiverStream::new(rx).map(node_event_to_wire);
        Ok(Response::new(Box::pin(out)))
    }

    async fn watch(
        &self,
        request: Request<market::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let edge = &self.0;
        edge.auth(authorize_reader(request.metadata(), &edge.tokens))?;
        let mut events = edge.clock.subscribe();
        let mut shutdown = edge.shutdown.clone();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = shutdown.recv() => break,
                    _ = tx.closed() => break,
                    e = events.recv() => e,
                };
                match event {
                    Ok(e) => {
                        if tx.send(Ok(market_event_to_wire(e))).await.is_err() {
                            break;
                        }
                    }
                    // A slow watcher skips summaries; the clock never waits for it.
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(skipped = n, "watcher lagging")
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn status(
        &self,
        request: Request<market::StatusRequest>,
    ) -> Result<Response<market::StatusResponse>, Status> {
        let edge = &self.0;
        edge.auth(authorize_reader(request.metadata(), &edge.tokens))?;
        let status = edge.clock.status().await.map_err(|e| edge.fail(e))?;
        Ok(Response::new(status_to_wire(
            &status,
            edge.refused.load(std::sync::atomic::Ordering::Relaxed),
        )))
    }
}

/// Decodes a batch and hands the domain reports to the clock, whose state
/// checks what only it knows (session, round, ids, equipment) and stores
/// the batch only if all of it is valid.
pub(super) async fn accept_batch(
    edge: &Edge,
    key: crate::state::NodeKey,
    batch: market::OrderBatch,
) -> Result<usize, WireError> {
    let reports = batch_from_wire(&batch, edge.clock.open_bounds(), edge.max_batch)?;
    Ok(edge.clock.submit(key, batch.slot, reports).await?)
}

/// A `Join`'s prosumer descriptions as the state takes them: every
/// envelope decoded and validated here, once (the state checks the
/// session, the secret and the id range, and only asserts the envelopes).
pub(crate) fn prosumers_from_wire(
    prosumers: &[market::ProsumerSummary],
) -> Result<Vec<ProsumerInfo>, WireError> {
    prosumers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let envelope = envelope_from_wire(p, &index("prosumers", i))?;
            Ok(ProsumerInfo { prosumer_id: p.prosumer_id, envelope })
        })
        .collect()
}

/// The edge's checks of a batch, each made here and nowhere else: at most
/// `max_batch` reports (counted before any is decoded), then every report
/// decoded and validated against the tariff of the slot last seen open
/// (`open`). That slot must be the batch's ([`check_open_slot`], the
/// state's rule): a late batch is refused as late rather than judged by
/// another slot's prices. The state checks the slot again, against its
/// round, which may have moved on since.
pub(crate) fn batch_from_wire(
    batch: &market::OrderBatch,
    open: Option<(u64, PriceBounds)>,
    max_batch: usize,
) -> Result<Vec<HouseholdReport>, WireError> {
    if batch.reports.len() > max_batch {
        return Err(WireError::ResourceExhausted {
            reason: format!(
                "reports: {} reports exceed the batch limit of {max_batch}",
                batch.reports.len()
            ),
        });
    }
    check_open_slot(open.map(|(slot, _)| slot), batch.slot, "a batch")?;
    let Some((_, bounds)) = open else {
        unreachable!("check_open_slot refuses a batch when no slot is open")
    };
    batch
        .reports
        .iter()
        .enumerate()
        .map(|(i, w)| report_from_wire_at(w, bounds, &|| index("reports", i)))
        .collect()
}

/// Validates a hold at the edge and asks the clock to hold the open slot.
pub(super) async fn accept_hold(
    edge: &Edge,
    key: crate::state::NodeKey,
    hold: &market::Hold,
) -> Result<(), WireError> {
    let chars = hold.reason.chars().count();
    if !(1..=32).contains(&chars) || hold.reason.chars().any(char::is_control) {
        return Err(WireError::invalid(
            "hold.reason",
            format!("must be 1..=32 printable characters, got {chars}"),
        ));
    }
    edge.clock.hold(key, hold.slot).await?;
    Ok(())
}

/// The metric label of a refusal: a batch for a slot that is not the open
/// one is late (or early); otherwise by what was wrong.
pub(super) fn refusal_reason(edge: &Edge, slot: u64, error: &WireError) -> &'static str {
    use tonic::Code;
    match error.code() {
        _ if edge.clock.open_bounds().is_none_or(|(open, _)| open != slot) => "late",
        Code::ResourceExhausted => "too_large",
        Code::PermissionDenied => "foreign",
        Code::FailedPrecondition if error.to_string().contains("already sent") => "duplicate",
        Code::FailedPrecondition if error.to_string().contains("offline") => "offline",
        _ => "invalid",
    }
}

pub(super) fn node_event_to_wire(event: NodeEvent) -> Result<market::MarketMessage, Status> {
    use market::market_message::Msg;
    let msg = match event {
        NodeEvent::Open(open) => Msg::Open(slot_open_to_wire(&open)),
        NodeEvent::Cleared(c) => Msg::Cleared(slot_cleared_to_wire(&c)),
        NodeEvent::Replaced => {
            let reason = "session: replaced by a newer connection of this node".to_owned();
            return Err(WireError::FailedPrecondition { reason }.into());
        }
        NodeEvent::Refused(r) => Msg::Refused(market::BatchRefused {
            slot: r.slot,
            code: r.error.code() as i32,
            message: r.error.to_string(),
            reason: r.reason.to_owned(),
        }),
        NodeEvent::Rejected(e) => return Err(e.into()),
    };
    Ok(market::MarketMessage { msg: Some(msg) })
}

pub(super) fn market_event_to_wire(event: MarketEvent) -> market::MarketEvent {
    use market::market_event::Event;
    let event = match event {
        MarketEvent::Slot(s) => Event::Slot(summary_to_wire(&s)),
        MarketEvent::Notice(text) => Event::Notice(text),
    };
    market::MarketEvent { event: Some(event) }
}

pub(super) fn summary_to_wire(s: &SlotSummary) -> market::SlotSummary {
    market::SlotSummary {
        slot: s.slot,
        data_slot: s.data_slot,
        clearing_price_micros: s.clearing_price.map(|p| p.0),
        matched_kwh: s.matched_kwh,
        grid_import_kwh: s.grid_import_kwh,
        grid_export_kwh: s.grid_export_kwh,
        load_kwh: s.load_kwh,
        pv_kwh: s.pv_kwh,
        reported: s.reported,
        missing: s.missing,
        clearing_latency_ms: s.clearing_latency_ms,
        absent: s.absent,
        held_ms: s.held_ms,
    }
}

pub(super) fn status_to_wire(s: &StatusSnapshot, batches_refused: u64) -> market::StatusResponse {
    market::StatusResponse {
        slot: s.next_slot,
        // Connected, not merely registered: what an operator scaling the
        // cluster wants to see grow and shrink.
        prosumers: u32::try_from(s.connected_prosumers).unwrap_or(u32::MAX),
        nodes: s.connected_nodes,
        mode: s.mode.name().to_owned(),
        paused: s.paused,
        slot_period_ms: s.slot_period_ms,
        energy_balance_error_kwh: s.energy_balance_error_kwh,
        money_balance_error: s.money_balance_error,
        kpis: Some((&s.kpis).into()),
        missing_reports: s.missing_reports,
        absent_reports: s.absent_reports,
        absent_prosumers: s.absent_prosumers,
        holds: s.holds,
        holds_expired: s.holds_expired,
        batches_refused,
        leases_expired: s.leases_expired,
    }
}
