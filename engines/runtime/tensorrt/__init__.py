"""TensorRT: plans built from stored ONNX models, run with pinned buffers on one GPU.
``tensorrt`` and cuda-bindings are imported only inside the functions that use them.

Modules and their public names:

- ``engine``: building, checking and running plans. Public: see the module's ``__all__``.
- ``calibrator``: INT8 calibration batches and cache. Public: ``CalibrationBatches``,
  ``CalibrationCache``, ``build_int8_plan``, ``calibration_cache_for``,
  ``make_entropy_calibrator``.
- ``cuda``: CUDA memory and streams through cuda-bindings. Public: ``CudaRuntime``,
  ``CudaStream``, ``DeviceBuffer``, ``GpuDevice``, ``PinnedHostBuffer``, ``cuda_failure_message``.
"""
