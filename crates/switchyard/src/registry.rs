//! The node's table of services and channels, built once at start and shared
//! read-only by every connection, with the [`CoreConfig`] every connection's core
//! shares and the node-wide receive budget.

use std::sync::Arc;

use actix::Recipient;
use switchyard_proto::connection::handshake::ServiceInfo;
use switchyard_proto::wire::control::CONTROL_CHANNEL;
use switchyard_proto::{ChannelConfig, Config as Limits, CoreConfig, RecvBudget};

use crate::error::StartError;
use crate::service::{PeerDown, PeerUp, Service, Sink};

pub(crate) struct ChannelSlot {
    pub(crate) config: ChannelConfig,
    pub(crate) sink: Arc<dyn Sink>,
}

pub(crate) struct ServiceSlot {
    pub(crate) info: ServiceInfo,
    pub(crate) up: Option<Recipient<PeerUp>>,
    pub(crate) down: Option<Recipient<PeerDown>>,
}

pub(crate) struct Registry {
    channels: Vec<Option<ChannelSlot>>,
    pub(crate) services: Vec<ServiceSlot>,
    /// Limits and channel table of every connection's core.
    pub(crate) core: Arc<CoreConfig>,
    /// Window growth all connections of the node share.
    pub(crate) budget: Arc<RecvBudget>,
}

impl Registry {
    pub(crate) fn build(services: Vec<Service>, limits: &Limits) -> Result<Self, StartError> {
        let mut channels: Vec<Option<ChannelSlot>> = (0..=u8::MAX).map(|_| None).collect();
        let mut slots = Vec::new();
        for service in services {
            if slots
                .iter()
                .any(|s: &ServiceSlot| s.info.name == service.info.name)
            {
                return Err(StartError::DuplicateService(service.info.name));
            }
            for ch in service.channels {
                if ch.id == CONTROL_CHANNEL {
                    return Err(StartError::ReservedChannel);
                }
                ch.config.validate().map_err(StartError::Config)?;
                let slot = channels
                    .get_mut(usize::from(ch.id))
                    .ok_or(StartError::ReservedChannel)?;
                if slot.is_some() {
                    return Err(StartError::DuplicateChannel(ch.id));
                }
                *slot = Some(ChannelSlot {
                    config: ch.config,
                    sink: ch.sink,
                });
            }
            slots.push(ServiceSlot {
                info: service.info,
                up: service.up,
                down: service.down,
            });
        }
        let table: Vec<(u8, ChannelConfig)> = channels
            .iter()
            .enumerate()
            .filter_map(|(id, slot)| Some((u8::try_from(id).ok()?, slot.as_ref()?.config)))
            .collect();
        let core = CoreConfig::new(limits.clone(), table).map_err(|mut e| {
            if e.field == "max_reassembly_bytes" {
                e.field = "limits.max_reassembly_bytes";
            }
            StartError::Config(e)
        })?;
        Ok(Registry {
            channels,
            services: slots,
            core: Arc::new(core),
            budget: Arc::new(RecvBudget::new(limits.recv_budget as u64)),
        })
    }

    pub(crate) fn channel(&self, id: u8) -> Option<&ChannelSlot> {
        self.channels.get(usize::from(id)).and_then(Option::as_ref)
    }

    /// The services as announced in our `Version`.
    pub(crate) fn service_infos(&self) -> Vec<ServiceInfo> {
        self.services.iter().map(|s| s.info.clone()).collect()
    }
}
