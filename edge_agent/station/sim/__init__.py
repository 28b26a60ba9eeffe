"""The station simulator: scripted scenarios rendered as frames, scale and scan streams."""
