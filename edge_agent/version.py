"""The edge agent's version, reported in every heartbeat by both the cab and the station agent."""

AGENT_VERSION = "0.1.0"
