"""``dal export``: a trained model as a portable inference graph (ONNX)."""
