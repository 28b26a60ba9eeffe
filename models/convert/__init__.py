"""Converters that build the open default model pack from upstream files."""
