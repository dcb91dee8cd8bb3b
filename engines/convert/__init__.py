"""Converters from the formats weights ship in to ONNX, and the parity oracles that check the
results against the original runtime.

Modules and their public names:

- ``dlib_format``: dlib's binary serialization. Public: ``AliasShape``, ``DlibReader``.
- ``dlib_resnet``: dlib's face-recognition ResNet -> ONNX. Public: ``CHIP_SIZE_PX``,
  ``DESCRIPTOR_SIZE``, ``INPUT_NAME``, ``OUTPUT_NAME``, ``ConvWeights``, ``EncoderNetwork``,
  ``ResidualBlock``, ``convert_dlib_resnet``, ``encoder_to_onnx``, ``read_dlib_resnet``.
- ``tflite_graph``: a TensorFlow Lite flatbuffer as typed records. Public: ``TfliteGraph``,
  ``TfliteOperator``, ``TfliteTensor``, ``read_tflite``.
- ``blazeface``: MediaPipe BlazeFace (.tflite) -> ONNX. Public: ``BLAZEFACE_VARIANTS``,
  ``INPUT_NAME``, ``ONNX_OPSET``, ``SCORES_NAME``, ``SOURCE_PACKAGE``, ``VALUES_NAME``,
  ``BlazeFaceVariant``, ``blazeface_source``, ``convert_blazeface``, ``tflite_to_onnx``.
- ``minifasnet``: MiniFASNet anti-spoofing nets -> one ONNX ensemble. Public: ``CROP_SIZE_PX``,
  ``INPUT_SCALES``, ``MINIFASNET_FILES``, ``ONNX_OPSET``, ``OUTPUT_NAME``, ``REAL_CLASS``,
  ``MiniFasNetFile``, ``build_minifasnet``, ``convert_minifasnet_ensemble``,
  ``load_minifasnet_state``.
- ``parity``: an engine against dlib's own encoder on real face chips (dlib is the oracle).
  Public: ``DlibOracle``, ``ParityReport``, ``astronaut_rgb``, ``compare_with_dlib``,
  ``encode_chips``, ``image_files``, ``read_rgb``.
"""
