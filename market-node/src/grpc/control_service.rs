//! `ControlService`: run control and scenario injection, operator token only.

use super::*;

pub(super) struct Control(pub(super) Edge);

impl Control {
    async fn run(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        command: ControlCommand,
    ) -> Result<Response<control::ControlReply>, Status> {
        let edge = &self.0;
        edge.auth(authorize(metadata, Role::Operator, &edge.tokens))?;
        let ControlOutcome { message, slot } =
            edge.clock.control(command).await.map_err(|e| edge.fail(e))?;
        Ok(Response::new(control::ControlReply { message, slot }))
    }

    fn command<T>(&self, result: Result<T, WireError>) -> Result<T, Status> {
        result.map_err(|e| self.0.fail(e))
    }
}

pub(crate) fn inject_from_wire(r: control::InjectRequest) -> Result<ScenarioEvent, WireError> {
    use control::inject_request::Event;
    Ok(match r.event.ok_or_else(|| WireError::invalid("event", "is required"))? {
        Event::Scale(s) => ScenarioEvent::Scale(ScaleGroup {
            first_prosumer_id: s.first_prosumer_id,
            last_prosumer_id: s.last_prosumer_id,
            pv_scale: s.pv_scale,
            load_scale: s.load_scale,
            slots: s.slots,
        }),
        Event::Tariff(t) => ScenarioEvent::Tariff(TariffOverride {
            retail_per_kwh: t.retail_per_kwh,
            feed_in_per_kwh: t.feed_in_per_kwh,
            slots: t.slots,
        }),
        Event::Feeder(f) => ScenarioEvent::Feeder(FeederLimit {
            import_limit_kw: f.import_limit_kw,
            export_limit_kw: f.export_limit_kw,
        }),
        Event::Offline(o) => ScenarioEvent::Offline(TakeOffline {
            first_prosumer_id: o.first_prosumer_id,
            last_prosumer_id: o.last_prosumer_id,
            slots: o.slots,
        }),
    })
}

pub(crate) fn mode_from_wire(r: &control::SetModeRequest) -> Result<ControlCommand, WireError> {
    let mode = match control::Mode::try_from(r.mode) {
        Ok(control::Mode::Fast) => ClockMode::Fast,
        Ok(control::Mode::RealTime) => ClockMode::RealTime,
        _ => {
            return Err(WireError::invalid(
                "mode",
                format!("must be MODE_FAST or MODE_REAL_TIME, got {}", r.mode),
            ))
        }
    };
    Ok(ControlCommand::SetMode {
        mode,
        slot_period_ms: r.slot_period_ms,
        deadline_ms: r.deadline_ms,
    })
}

#[tonic::async_trait]
impl ControlService for Control {
    async fn start(
        &self,
        request: Request<control::Empty>,
    ) -> Result<Response<control::ControlReply>, Status> {
        self.run(request.metadata(), ControlCommand::Start).await
    }

    async fn pause(
        &self,
        request: Request<control::Empty>,
    ) -> Result<Response<control::ControlReply>, Status> {
        self.run(request.metadata(), ControlCommand::Pause).await
    }

    async fn resume(
        &self,
        request: Request<control::Empty>,
    ) -> Result<Response<control::ControlReply>, Status> {
        self.run(request.metadata(), ControlCommand::Resume).await
    }

    async fn step(
        &self,
        request: Request<control::StepRequest>,
    ) -> Result<Response<control::ControlReply>, Status> {
        let count = request.get_ref().count;
        self.run(request.metadata(), ControlCommand::Step(count)).await
    }

    async fn set_mode(
        &self,
        request: Request<control::SetModeRequest>,
    ) -> Result<Response<control::ControlReply>, Status> {
        self.0.auth(authorize(request.metadata(), Role::Operator, &self.0.tokens))?;
        let command = self.command(mode_from_wire(request.get_ref()))?;
        self.run(request.metadata(), command).await
    }

    async fn load_scenario(
        &self,
        request: Request<control::LoadScenarioRequest>,
    ) -> Result<Response<control::ControlReply>, Status> {
        let json = request.get_ref().scenario_json.clone();
        self.run(request.metadata(), ControlCommand::LoadScenario(json)).await
    }

    async fn inject(
        &self,
        request: Request<control::InjectRequest>,
    ) -> Result<Response<control::ControlReply>, Status> {
        self.0.auth(authorize(request.metadata(), Role::Operator, &self.0.tokens))?;
        let (metadata, _, inner) = request.into_parts();
        let event = self.command(inject_from_wire(inner))?;
        self.run(&metadata, ControlCommand::Inject(event)).await
    }

    async fn get_status(
        &self,
        request: Request<control::Empty>,
    ) -> Result<Response<market::StatusResponse>, Status> {
        let edge = &self.0;
        edge.auth(authorize(request.metadata(), Role::Operator, &edge.tokens))?;
        let status = edge.clock.status().await.map_err(|e| edge.fail(e))?;
        Ok(Response::new(status_to_wire(
            &status,
            edge.refused.load(std::sync::atomic::Ordering::Relaxed),
        )))
    }
}
