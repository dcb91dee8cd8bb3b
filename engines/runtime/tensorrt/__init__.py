"""TensorRT: plans built from stored ONNX models, run with pinned buffers on one GPU.

Everything but ``library``'s functions (and what calls them) is plain Python, tested without
TensorRT; ``tensorrt`` and cuda-bindings are imported only inside the functions that use them.
No module here knows a particular network: ``engines.models`` picks the batch sizes and
precision for each.

Modules and their public names:

- ``profile``: the batch profile of a plan and how a batch is cut and padded to fit it.
  Public: ``MAX_BATCH_LIMIT``, ``BatchChunk``, ``BatchProfile``, ``ProfileShapes``,
  ``TrtBuildSettings``, ``fill_padded``, ``plan_chunks``, ``profile_shapes``.
- ``plans``: where a plan lives in the store, its manifest, and the checks that it fits the ONNX
  model, TensorRT and the GPU. Public: ``PLAN_FORMAT``, ``EngineTensor``, ``check_engine_io``,
  ``check_plan_manifest``, ``device_key``, ``device_label``, ``plan_expectations``,
  ``plan_manifest``, ``plan_path_for``.
- ``library``: TensorRT imported on use, its version, a logger forwarding to ``logging``.
  Public: ``KEPT_ERRORS``, ``make_logger``, ``python_log_level``, ``recent_errors``,
  ``require_tensorrt``, ``tensorrt_version``.
- ``build``: compiling a stored ONNX model into a stored plan. Public: ``build_engine``.
- ``engine``: running a plan, and loading (or first building) the plan of a stored ONNX model.
  Public: ``TrtEngine``, ``load_or_build_plan``.
- ``calibrator``: INT8 calibration batches of face chips and the cached table. Public:
  ``CalibrationBatches``, ``CalibrationCache``, ``build_int8_plan``, ``calibration_cache_for``,
  ``make_entropy_calibrator``.
- ``cuda``: CUDA devices, memory and streams through cuda-bindings. Public: ``CudaRuntime``,
  ``CudaStream``, ``DeviceBuffer``, ``GpuDevice``, ``PinnedHostBuffer``, ``cuda_failure_message``.
"""
