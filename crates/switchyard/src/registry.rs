//! The node's table of services and channels, built once at start and shared
//! read-only by every connection.

use std::sync::Arc;

use actix::Recipient;
use switchyard_proto::config::ConfigError;
use switchyard_proto::control::{CONTROL_CHANNEL, MAX_CONTROL_MESSAGE};
use switchyard_proto::handshake::ServiceInfo;
use switchyard_proto::reassembly::Reassembler;
use switchyard_proto::scheduler::Scheduler;
use switchyard_proto::{ChannelConfig, Config as Limits};

use crate::error::StartError;
use crate::service::{PeerDown, PeerUp, Service, Sink};

/// Priority of channel 0 (handshake and daemon messages): above any user channel's
/// usual values, so control traffic is never stuck behind bulk data.
pub(crate) const CONTROL_PRIORITY: u16 = 1000;

pub(crate) struct ChannelSlot {
    pub(crate) config: ChannelConfig,
    pub(crate) sink: Arc<dyn Sink>,
    /// Index of this channel in per-connection arrays (room notifiers).
    pub(crate) index: usize,
}

pub(crate) struct ServiceSlot {
    pub(crate) info: ServiceInfo,
    pub(crate) up: Recipient<PeerUp>,
    pub(crate) down: Recipient<PeerDown>,
}

pub(crate) struct Registry {
    channels: Vec<Option<ChannelSlot>>,
    pub(crate) services: Vec<ServiceSlot>,
    control: ChannelConfig,
    pub(crate) limits: Limits,
}

impl Registry {
    pub(crate) fn build(services: Vec<Service>, limits: &Limits) -> Result<Self, StartError> {
        let mut channels: Vec<Option<ChannelSlot>> = (0..=u8::MAX).map(|_| None).collect();
        let mut slots = Vec::new();
        let mut index = 0;
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
                if ch.config.max_message_size > limits.max_reassembly_bytes {
                    return Err(StartError::Config(ConfigError::new(
                        "limits.max_reassembly_bytes",
                        format!(
                            "below channel {:#04x}'s max_message_size ({} bytes)",
                            ch.id, ch.config.max_message_size
                        ),
                    )));
                }
                let slot = channels
                    .get_mut(usize::from(ch.id))
                    .ok_or(StartError::ReservedChannel)?;
                if slot.is_some() {
                    return Err(StartError::DuplicateChannel(ch.id));
                }
                *slot = Some(ChannelSlot {
                    config: ch.config,
                    sink: ch.sink,
                    index,
                });
                index += 1;
            }
            slots.push(ServiceSlot {
                info: service.info,
                up: service.up,
                down: service.down,
            });
        }
        let control = ChannelConfig {
            priority: CONTROL_PRIORITY,
            max_message_size: MAX_CONTROL_MESSAGE,
            send_queue_messages: 64,
            send_queue_bytes: 4 * MAX_CONTROL_MESSAGE,
            recv_capacity: 1,
        };
        Ok(Registry {
            channels,
            services: slots,
            control,
            limits: limits.clone(),
        })
    }

    pub(crate) fn channel(&self, id: u8) -> Option<&ChannelSlot> {
        self.channels.get(usize::from(id)).and_then(Option::as_ref)
    }

    /// Number of user channels.
    pub(crate) fn channel_count(&self) -> usize {
        self.channels.iter().flatten().count()
    }

    /// The services as announced in our `Version`.
    pub(crate) fn service_infos(&self) -> Vec<ServiceInfo> {
        self.services.iter().map(|s| s.info.clone()).collect()
    }

    /// A send scheduler with every channel (and channel 0) registered.
    pub(crate) fn scheduler(&self) -> Scheduler {
        let mut s = Scheduler::new(self.limits.max_packet_payload);
        s.add_channel(CONTROL_CHANNEL, &self.control);
        for (id, slot) in self.channels.iter().enumerate() {
            if let (Some(slot), Ok(id)) = (slot, u8::try_from(id)) {
                s.add_channel(id, &slot.config);
            }
        }
        s
    }

    /// A reassembler that accepts every channel of this node (and channel 0).
    pub(crate) fn reassembler(&self) -> Reassembler {
        let mut r = Reassembler::with_budget(self.limits.max_reassembly_bytes);
        r.add_channel(CONTROL_CHANNEL, self.control.max_message_size);
        for (id, slot) in self.channels.iter().enumerate() {
            if let (Some(slot), Ok(id)) = (slot, u8::try_from(id)) {
                r.add_channel(id, slot.config.max_message_size);
            }
        }
        r
    }
}
