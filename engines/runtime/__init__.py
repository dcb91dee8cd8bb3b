"""Generic model runtimes: each loads one stored model file (checked against its manifest) and
runs it on one backend. They know no particular network; ``engines.models`` says which network
runs on which of them.

Modules and their public names:

- ``onnxrt``: ONNX Runtime (CPU, or CUDA with onnxruntime-gpu). Public: ``OrtEngine``,
  ``OrtSettings``, ``onnxruntime_version``.
- ``dlibrt``: dlib, imported on use by the HOG detector, the landmarks, the chip cutter and the
  parity oracle. Public: ``import_dlib``.
- ``torchrt``: PyTorch, for the dlib encoder's weights. Public: ``TorchEngine``,
  ``TorchSettings``, ``build_torch_encoder``, ``import_torch``.
- ``tensorrt``: TensorRT plans built from stored ONNX models, run through cuda-bindings (a
  package; see its ``__init__``).
"""
