"""Export: ONNX (fp32, fp16, int8 QDQ), the QDQ lint against TensorRT's rules, TensorRT engines and the Jetson bundle."""
