#!/usr/bin/env bash
# The CUDA checks, run by hand on a GPU machine (the lent device: python3 there holds PyTorch):
#   bash benchmarks/gpu_checks.sh
# The CUDA-marked tests (AMP + channels_last training, GPU histograms, export on CUDA), then the
# resnet50 AMP training speed, then whether TensorRT is importable there.
set -u
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
nvidia-smi -L || true
$PY -c "import torch, onnxruntime; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'ort', onnxruntime.__version__)"
$PY -m pytest -q -p no:cacheprovider -m "cuda or tensorrt" -rs --continue-on-collection-errors tests 2>&1 | tail -20
$PY benchmarks/cuda_train.py --steps 20 2>&1 | tail -5
$PY -c "import tensorrt; print('tensorrt', tensorrt.__version__)" 2>&1 | tail -1
