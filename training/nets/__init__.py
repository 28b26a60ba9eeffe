"""Torch network definitions used only for training (the edge runtime never imports them)."""
