"""Converters that build the open default model pack."""
