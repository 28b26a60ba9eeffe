"""jifang."""
