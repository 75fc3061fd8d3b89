"""Serving a trained model: prediction (torch or ONNX Runtime), export (ONNX, int8, TorchScript) and the
HTTP service."""
