"""Which network runs on which backend: each module builds (or installs) one network's ONNX
file into the model store and loads it on a runtime from ``engines.runtime``.

Modules and their public names:

- ``settings``: the backend, device and precision settings the networks beside the encoder
  share. Public: ``NETWORK_BACKENDS``, ``NetworkEngineSettings``.
- ``encoder``: the face encoder (dlib's ResNet, converted), its backend table and ``auto``.
  Public: ``BACKENDS``, ``EngineSettings``, ``build_encoder_onnx``, ``encoder_manifest``,
  ``encoder_onnx``, ``load_encoder``, ``load_or_build_encoder_plan``, ``resolve_backend``.
- ``detector``: the BlazeFace face detector. Public: ``DETECTOR_BACKENDS``,
  ``DetectorBackendName``, ``DetectorEngineSettings``, ``build_detector_onnx``,
  ``convert_detector_onnx``, ``detector_manifest``, ``detector_model_id``,
  ``load_detector_engine``.
- ``antispoof``: the MiniFASNet anti-spoofing CNN. Public: ``CROP_SIZE_PX``, ``INPUT_SCALES``,
  ``LIVENESS_BACKENDS``, ``LIVENESS_MODEL_NAME``, ``OUTPUT_NAME``, ``REAL_CLASS``,
  ``LivenessEngineSettings``, ``build_liveness_onnx``, ``convert_liveness_onnx``,
  ``default_minifasnet_dir``, ``liveness_model_id``, ``load_liveness_engine``.
- ``adapter``: a trained linear head appended to the encoder as one ONNX graph. Public:
  ``ADAPTER_INPUT``, ``ADAPTER_OUTPUT``, ``AdapterHead``, ``adapted_model_id``,
  ``adapter_head_onnx``, ``append_adapter``, ``apply_head``, ``build_adapted_encoder``,
  ``read_adapter``.
- ``style``: a style model on TensorRT (a copy with an open batch axis, then its plan); the
  other style backends live with the style nets in ``pipeline.style``. Public:
  ``BATCH_AXIS_NAME``, ``batch_axis_copy``, ``load_style_plan``, ``store_batch_axis_copy``.
"""
