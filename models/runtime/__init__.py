"""Runtime wrappers: one thin typed class per model kind, chosen by the pack manifest."""
