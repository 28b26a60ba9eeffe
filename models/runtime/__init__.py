"""ONNX Runtime wrappers for the face models."""
