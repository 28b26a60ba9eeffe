"""The edge-to-server wire contract: message models, codes and their JSON Schema."""

from contract.codes import DeviceKind, EventKind, ReasonCode, Severity
from contract.ids import uuid7
from contract.messages import SCHEMA_VERSION, Event, EventBatch, Message

__all__ = [
    "SCHEMA_VERSION",
    "DeviceKind",
    "Event",
    "EventBatch",
    "EventKind",
    "Message",
    "ReasonCode",
    "Severity",
    "uuid7",
]
