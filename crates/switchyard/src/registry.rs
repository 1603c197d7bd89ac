//! The node's table of services and channels, shared by every connection: which
//! service owns each channel id and where its messages go. Services are attached and
//! detached while the node runs, so the table sits behind a lock, read once per
//! delivery; with it, the [`CoreConfig`] every connection's core shares and the
//! node-wide receive budget.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use actix::Recipient;
use switchyard_proto::connection::services::{check_services, ServiceSpec};
use switchyard_proto::{ChannelConfig, Config as Limits, CoreConfig, RecvBudget};

use crate::error::StartError;
use crate::service::{PeerDown, PeerUp, Service, Sink};

pub(crate) struct ChannelSlot {
    pub(crate) config: ChannelConfig,
    pub(crate) sink: Arc<dyn Sink>,
}

/// One attached service: what connections negotiate, and who hears of its peers.
pub(crate) struct ServiceSlot {
    pub(crate) spec: Arc<ServiceSpec>,
    pub(crate) up: Option<Recipient<PeerUp>>,
    pub(crate) down: Option<Recipient<PeerDown>>,
}

struct Table {
    channels: Vec<Option<ChannelSlot>>,
    services: Vec<Arc<ServiceSlot>>,
}

pub(crate) struct Registry {
    table: RwLock<Table>,
    limits: Limits,
    /// Limits of every connection's core.
    pub(crate) core: Arc<CoreConfig>,
    /// Window growth all connections of the node share.
    pub(crate) budget: Arc<RecvBudget>,
}

fn spec_of(service: &Service) -> ServiceSpec {
    ServiceSpec {
        name: service.info.name.clone(),
        major: service.info.version,
        minor: service.minor,
        channels: service.channels.iter().map(|c| (c.id, c.config)).collect(),
    }
}

impl Registry {
    pub(crate) fn build(services: Vec<Service>, limits: &Limits) -> Result<Self, StartError> {
        let core = CoreConfig::new(limits.clone()).map_err(StartError::Config)?;
        let registry = Registry {
            table: RwLock::new(Table {
                channels: (0..=u8::MAX).map(|_| None).collect(),
                services: Vec::new(),
            }),
            limits: limits.clone(),
            core: Arc::new(core),
            budget: Arc::new(RecvBudget::new(limits.recv_budget as u64)),
        };
        for service in services {
            registry.attach(service)?;
        }
        Ok(registry)
    }

    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a service after checking it with the others (names, channel ids, the
    /// reassembly budget); returns its slot.
    pub(crate) fn attach(&self, service: Service) -> Result<Arc<ServiceSlot>, StartError> {
        let spec = spec_of(&service);
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        if table.services.iter().any(|s| s.spec.name == spec.name) {
            return Err(StartError::DuplicateService(spec.name));
        }
        if let Some(id) = spec.channels.iter().map(|c| c.0).find(|id| {
            table
                .channels
                .get(usize::from(*id))
                .is_some_and(Option::is_some)
        }) {
            return Err(StartError::DuplicateChannel(id));
        }
        let all: Vec<&ServiceSpec> = table
            .services
            .iter()
            .map(|s| &*s.spec)
            .chain([&spec])
            .collect();
        check_services(&self.limits, all).map_err(|mut e| {
            if e.field == "max_reassembly_bytes" {
                e.field = "limits.max_reassembly_bytes";
            }
            if e.problem.contains("channel 0 is reserved") {
                return StartError::ReservedChannel;
            }
            StartError::Config(e)
        })?;
        for ch in service.channels {
            if let Some(slot) = table.channels.get_mut(usize::from(ch.id)) {
                *slot = Some(ChannelSlot {
                    config: ch.config,
                    sink: ch.sink,
                });
            }
        }
        let slot = Arc::new(ServiceSlot {
            spec: Arc::new(spec),
            up: service.up,
            down: service.down,
        });
        table.services.push(slot.clone());
        Ok(slot)
    }

    /// Removes the service called `name`; returns it, if it was attached.
    pub(crate) fn detach(&self, name: &str) -> Option<Arc<ServiceSlot>> {
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let i = table.services.iter().position(|s| s.spec.name == name)?;
        let slot = table.services.remove(i);
        for (id, _) in &slot.spec.channels {
            if let Some(c) = table.channels.get_mut(usize::from(*id)) {
                *c = None;
            }
        }
        Some(slot)
    }

    /// Where messages of `channel` go, and its config.
    pub(crate) fn channel(&self, id: u8) -> Option<(ChannelConfig, Arc<dyn Sink>)> {
        self.read()
            .channels
            .get(usize::from(id))
            .and_then(Option::as_ref)
            .map(|s| (s.config, s.sink.clone()))
    }

    /// The attached service called `name`.
    pub(crate) fn service(&self, name: &str) -> Option<Arc<ServiceSlot>> {
        self.read()
            .services
            .iter()
            .find(|s| s.spec.name == name)
            .cloned()
    }

    /// What a new connection negotiates: every attached service.
    pub(crate) fn specs(&self) -> Vec<Arc<ServiceSpec>> {
        self.read()
            .services
            .iter()
            .map(|s| s.spec.clone())
            .collect()
    }

    /// The services as announced in our `Version`.
    pub(crate) fn service_infos(
        &self,
    ) -> Vec<switchyard_proto::connection::handshake::ServiceInfo> {
        self.read()
            .services
            .iter()
            .map(|s| switchyard_proto::connection::handshake::ServiceInfo {
                name: s.spec.name.clone(),
                version: s.spec.major,
            })
            .collect()
    }
}
